"""Client metadata for dynamic registration: validation and normalisation (RFC 7591 §2, OIDC Registration §2).

Sans-I/O: a JSON object in, the metadata to store out, or an RFC 7591 error. The stored record is built from an
allowlist; every other member of the request (``skip_consent``, ``trusted``, ``metadata``, a client-chosen
``client_id`` or ``client_secret``, extensions we do not implement such as ``sector_identifier_uri`` or
``request_uris``) is dropped, never copied (mass assignment, spec note §8 item 8).

Policy (authgate profile):

* ``redirect_uris`` is required whenever ``authorization_code`` is among the grant types, which it is by
  default, so ``{}`` is answered with ``400 invalid_redirect_uri``.
* ``token_endpoint_auth_method`` defaults to ``client_secret_basic`` (RFC 7591 §2); ``grant_types`` to
  ``["authorization_code"]``; ``response_types`` to ``["code"]`` when ``authorization_code`` is requested.
* Scopes are intersected with the server's scopes; unknown ones are dropped, never rejected. An omitted scope,
  or one of which nothing survives, registers ``default_scopes``.
* Over-long human-readable values are rejected rather than truncated, so the response never shows a value the
  client did not send.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry

from authgate.aauth import wire as aauth_wire
from authgate.config import Settings
from authgate.dcr.redirects import check_redirect_uris
from authgate.errors import InvalidClientMetadata, InvalidRedirectURI
from authgate.net.jwks import check_public_jwks
from authgate.oauth.metadata import (
    AAUTH_GRANT_TYPE,
    ASSERTION_ALGS,
    CIBA_GRANT_TYPE,
    CLIENT_AUTH_METHODS,
    GRANT_TYPES,
    TOKEN_EXCHANGE_GRANT_TYPE,
)

DEFAULT_AUTH_METHOD = "client_secret_basic"
SECRET_AUTH_METHODS = frozenset({"client_secret_basic", "client_secret_post"})
RESPONSE_TYPES = ("code",)
APPLICATION_TYPES = ("web", "native")

MAX_NAME_LENGTH = 200
MAX_ID_LENGTH = 200  # software_id, software_version
MAX_URI_LENGTH = 2000
MAX_SCOPE_LENGTH = 1000
MAX_CONTACTS = 10
MAX_CONTACT_LENGTH = 320
MAX_LANGUAGE_VARIANTS = 20  # per field

#: Human-readable fields that may carry ``#lang`` variants (RFC 7591 §2.2), with their kind.
_TEXT_FIELDS = {"client_name": MAX_NAME_LENGTH}
_URI_FIELDS = ("client_uri", "logo_uri", "tos_uri", "policy_uri")
_PLAIN_TEXT_FIELDS = {"software_id": MAX_ID_LENGTH, "software_version": MAX_ID_LENGTH}
_REJECTED_GRANTS = {"implicit": "the implicit grant is not allowed (OAuth 2.1)",
                    "password": "the password grant is not allowed (OAuth 2.1)"}
_LANG_TAG = re.compile(r"^[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*$")
# C0/C1 controls and the Unicode bidirectional overrides and isolates (used to disguise names).
_UNSAFE_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def validate_client_metadata(request: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """Validate a registration (or RFC 7592 update) request and return the metadata to store.

    ``request`` is the JSON object as received, already merged with any verified software statement. The
    result holds only allowlisted members, with defaults filled in; ``software_statement`` is copied through
    unmodified when present (the caller has verified it).
    """
    out: dict[str, Any] = {}

    grant_types = _grant_types(request.get("grant_types"))
    response_types = _response_types(request.get("response_types"), grant_types)
    auth_method = _auth_method(request.get("token_endpoint_auth_method"))

    if "authorization_code" in grant_types:
        out["redirect_uris"] = check_redirect_uris(request.get("redirect_uris"), required=True)
    else:
        redirect_uris = check_redirect_uris(request.get("redirect_uris"), required=False)
        if redirect_uris:
            out["redirect_uris"] = redirect_uris
    for confidential_only in ("client_credentials", CIBA_GRANT_TYPE, AAUTH_GRANT_TYPE, TOKEN_EXCHANGE_GRANT_TYPE):
        if confidential_only in grant_types and auth_method == "none":
            raise InvalidClientMetadata(f"{confidential_only} requires a confidential client (not method none)")

    out["token_endpoint_auth_method"] = auth_method
    out["grant_types"] = grant_types
    out["response_types"] = response_types

    application_type = request.get("application_type")
    if application_type is not None:
        if application_type not in APPLICATION_TYPES:
            raise InvalidClientMetadata("application_type must be web or native")
        if application_type == "web" and any(
            urlsplit(uri).scheme.lower() not in ("https", "http") for uri in out.get("redirect_uris", [])
        ):
            raise InvalidRedirectURI("web clients cannot use private-use URI schemes")
        out["application_type"] = application_type

    out["scope"] = _scope(request.get("scope"), settings)
    out.update(_agent_authorization(request, grant_types, settings))

    for name, limit in _TEXT_FIELDS.items():
        _localized(request, name, out, lambda field, value, limit=limit: _text(field, value, limit))
    for name in _URI_FIELDS:
        _localized(request, name, out, _web_uri)
    for name, limit in _PLAIN_TEXT_FIELDS.items():
        if request.get(name) is not None:
            text = _text(name, request[name], limit)
            if text:
                out[name] = text

    contacts = _contacts(request.get("contacts"))
    if contacts:
        out["contacts"] = contacts

    jwks, jwks_uri = request.get("jwks"), request.get("jwks_uri")
    if jwks is not None and jwks_uri is not None:
        raise InvalidClientMetadata("jwks and jwks_uri are mutually exclusive")
    if jwks is not None:
        out["jwks"] = _jwks(jwks)
    if jwks_uri is not None:
        out["jwks_uri"] = _https_uri("jwks_uri", jwks_uri)
    if auth_method == "private_key_jwt" and "jwks" not in out and "jwks_uri" not in out:
        raise InvalidClientMetadata("private_key_jwt requires jwks or jwks_uri")
    signing_alg = request.get("token_endpoint_auth_signing_alg")
    if signing_alg is not None:
        if signing_alg not in ASSERTION_ALGS:
            raise InvalidClientMetadata("unsupported token_endpoint_auth_signing_alg")
        out["token_endpoint_auth_signing_alg"] = signing_alg

    statement = request.get("software_statement")
    if statement is not None:
        out["software_statement"] = statement
    return out


def uses_secret(metadata: Mapping[str, Any]) -> bool:
    """Whether the registered authentication method needs a client secret."""
    return metadata.get("token_endpoint_auth_method") in SECRET_AUTH_METHODS


def metadata_digest(metadata: Mapping[str, Any]) -> str:
    """A stable digest of normalised metadata, for idempotent registration of public clients."""
    canonical = json.dumps(metadata, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


# -- individual fields -------------------------------------------------------------------------------


def _string_list(name: str, value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidClientMetadata(f"{name} must be an array of strings")
    return _unique(value)


def _unique(values: Iterable[str]) -> list[str]:
    out: list[str] = []
    for v in values:
        if v not in out:
            out.append(v)
    return out


def _grant_types(value: object) -> list[str]:
    if value is None:
        return ["authorization_code"]
    grants = _string_list("grant_types", value)
    if not grants:
        raise InvalidClientMetadata("grant_types must not be empty")
    for grant in grants:
        if grant in _REJECTED_GRANTS:
            raise InvalidClientMetadata(_REJECTED_GRANTS[grant])
        if grant not in GRANT_TYPES:
            raise InvalidClientMetadata("unsupported grant type")
    if "refresh_token" in grants and not {"authorization_code", CIBA_GRANT_TYPE} & set(grants):
        raise InvalidClientMetadata("refresh_token requires the authorization_code or CIBA grant")
    return grants


def _response_types(value: object, grant_types: list[str]) -> list[str]:
    wants_code = "authorization_code" in grant_types
    if value is None:
        return ["code"] if wants_code else []
    # A response type is a space-separated set (RFC 6749 §3.1.1): compare its members, not its spelling.
    types = _unique(" ".join(sorted(set(v.split()))) for v in _string_list("response_types", value))
    for response_type in types:
        if response_type not in RESPONSE_TYPES:
            raise InvalidClientMetadata("only the code response type is supported")
    if ("code" in types) != wants_code:
        raise InvalidClientMetadata("response type code and grant type authorization_code go together")
    return types


def _auth_method(value: object) -> str:
    if value is None:
        return DEFAULT_AUTH_METHOD
    if not isinstance(value, str) or value not in CLIENT_AUTH_METHODS:
        raise InvalidClientMetadata("unsupported token_endpoint_auth_method")
    return value


def _scope(value: object, settings: Settings) -> str:
    if value is None:
        return " ".join(settings.default_scopes)
    if not isinstance(value, str) or len(value) > MAX_SCOPE_LENGTH:
        raise InvalidClientMetadata("scope must be a space-separated string")
    known = set(settings.scopes)
    granted = _unique(s for s in value.split(" ") if s in known)
    return " ".join(granted or settings.default_scopes)


def _agent_authorization(request: Mapping[str, Any], grant_types: list[str], settings: Settings) -> dict[str, Any]:
    """The AAuth grant's client metadata (authgate profile, spec note §6.9). With the grant, a scope ceiling is
    required; elevated scopes lie within the ceiling, the ceiling within the server's scopes (never
    ``offline_access``: the grant issues no refresh tokens). Without the grant these members are refused."""
    names = (aauth_wire.CLIENT_SCOPE_CEILING, aauth_wire.CLIENT_ELEVATED_SCOPES, aauth_wire.CLIENT_CHANNELS)
    if AAUTH_GRANT_TYPE not in grant_types:
        given = [n for n in names if request.get(n) is not None]
        if given:
            raise InvalidClientMetadata(f"{given[0]} needs the agent_authorization grant type")
        return {}
    known = set(settings.scopes) - {"offline_access"}
    ceiling = _scope_set(aauth_wire.CLIENT_SCOPE_CEILING, request.get(aauth_wire.CLIENT_SCOPE_CEILING), known)
    if not ceiling:
        raise InvalidClientMetadata(f"the agent_authorization grant needs {aauth_wire.CLIENT_SCOPE_CEILING}")
    elevated = _scope_set(aauth_wire.CLIENT_ELEVATED_SCOPES, request.get(aauth_wire.CLIENT_ELEVATED_SCOPES),
                          set(ceiling))
    out: dict[str, Any] = {aauth_wire.CLIENT_SCOPE_CEILING: " ".join(ceiling),
                           aauth_wire.CLIENT_ELEVATED_SCOPES: " ".join(elevated)}
    channels = request.get(aauth_wire.CLIENT_CHANNELS)
    if channels is not None:
        listed = _string_list(aauth_wire.CLIENT_CHANNELS, channels)
        if not listed or not set(listed) <= set(aauth_wire.CHANNELS):
            raise InvalidClientMetadata(f"{aauth_wire.CLIENT_CHANNELS} must list some of "
                                        + ", ".join(aauth_wire.CHANNELS))
        out[aauth_wire.CLIENT_CHANNELS] = listed
    return out


def _scope_set(name: str, value: object, allowed: set[str]) -> list[str]:
    """A space-separated scope list whose every member is in ``allowed`` (refused, not dropped: a ceiling that
    silently lost a member would not be the one the owner wrote)."""
    if value is None:
        return []
    if not isinstance(value, str) or len(value) > MAX_SCOPE_LENGTH:
        raise InvalidClientMetadata(f"{name} must be a space-separated string")
    scopes = _unique(s for s in value.split(" ") if s)
    outside = [s for s in scopes if s not in allowed]
    if outside:
        raise InvalidClientMetadata(f"{name} names scopes outside what is allowed here")
    return scopes


def _text(name: str, value: object, limit: int) -> str:
    if not isinstance(value, str):
        raise InvalidClientMetadata(f"{name} must be a string")
    text = _UNSAFE_CHARS.sub("", value).strip()
    if len(text) > limit:
        raise InvalidClientMetadata(f"{name} is longer than {limit} characters")
    return text


def _uri_parts(name: str, value: object) -> tuple[str, str]:
    if not isinstance(value, str) or not value or len(value) > MAX_URI_LENGTH:
        raise InvalidClientMetadata(f"{name} must be a URI of at most {MAX_URI_LENGTH} characters")
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in value) or "\\" in value:
        raise InvalidClientMetadata(f"{name} contains whitespace, control characters or backslashes")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise InvalidClientMetadata(f"{name} is malformed") from exc
    del port
    if not parts.hostname or "@" in parts.netloc:
        raise InvalidClientMetadata(f"{name} must be an absolute URI with a host and no userinfo")
    return parts.scheme.lower(), value


def _web_uri(name: str, value: object) -> str:
    scheme, uri = _uri_parts(name, value)
    if scheme not in ("https", "http"):
        raise InvalidClientMetadata(f"{name} must be an http or https URI")
    return uri


def _https_uri(name: str, value: object) -> str:
    scheme, uri = _uri_parts(name, value)
    if scheme != "https" or "#" in uri:
        raise InvalidClientMetadata(f"{name} must be an https URI without a fragment")
    return uri


def _localized(request: Mapping[str, Any], name: str, out: dict[str, Any], check: Any) -> None:
    """Copy ``name`` and its ``name#lang`` variants (RFC 7591 §2.2); malformed language tags are dropped."""
    variants = 0
    for key, value in request.items():
        if key == name:
            tag = None
        elif key.startswith(name + "#"):
            tag = key[len(name) + 1:]
            if not _LANG_TAG.match(tag):
                continue
            variants += 1
            if variants > MAX_LANGUAGE_VARIANTS:
                raise InvalidClientMetadata(f"too many language variants of {name}")
        else:
            continue
        if value is None:
            continue
        checked = check(key if tag is None else name, value)
        if checked:
            out[key] = checked


def _contacts(value: object) -> list[str]:
    if value is None:
        return []
    contacts = _string_list("contacts", value)
    if len(contacts) > MAX_CONTACTS:
        raise InvalidClientMetadata(f"at most {MAX_CONTACTS} contacts")
    cleaned = [_text("contacts", c, MAX_CONTACT_LENGTH) for c in contacts]
    return _unique(c for c in cleaned if c)


def _jwks(value: object) -> dict[str, Any]:
    """Public keys only (shared rules with remote key sets), each with an algorithm we verify and parseable."""
    try:
        checked = check_public_jwks(value)
    except ValueError as exc:
        raise InvalidClientMetadata(str(exc)) from exc
    keys: list[dict[str, Any]] = checked["keys"]
    for key in keys:
        if "alg" in key and key["alg"] not in ASSERTION_ALGS:
            raise InvalidClientMetadata("unsupported JWK alg")
        try:
            JWKRegistry.import_key(dict(key))
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise InvalidClientMetadata("jwks contains a malformed key") from exc
    return {"keys": [dict(k) for k in keys]}
