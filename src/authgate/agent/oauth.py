"""OAuth 2.1 client messages, sans I/O: PKCE (RFC 7636), authorization requests and responses (with
RFC 9207 ``iss`` and RFC 8707 ``resource``), client authentication and token requests and responses
(RFC 6749 §2.3, §4.1, §5, §6), dynamic client registration (RFC 7591) and scope selection.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote_plus, urlencode, urlsplit, urlunsplit

import httpx

from authgate.agent.errors import (
    AuthorizationError,
    IssMismatchError,
    RegistrationError,
    StateMismatchError,
    TokenError,
    UserDeclinedError,
)
from authgate.agent.store import ClientRegistration, TokenSet

FORM = "application/x-www-form-urlencoded"
SECRET_METHODS = ("client_secret_basic", "client_secret_post")
USABLE_METHODS = (*SECRET_METHODS, "none")


@dataclass(frozen=True)
class ClientMetadata:
    """What the agent asks for when it registers itself (RFC 7591 §2, OIDC ``application_type``)."""

    client_name: str = "authgate agent"
    redirect_uris: tuple[str, ...] = ("http://127.0.0.1:8976/callback",)
    grant_types: tuple[str, ...] = ("authorization_code", "refresh_token")
    application_type: str = "native"
    #: ``None`` leaves the choice to the server (RFC 7591 default: ``client_secret_basic``).
    token_endpoint_auth_method: str | None = None
    #: Other RFC 7591 fields sent as they are (``client_uri``, ``software_id``, ``contacts``...).
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self, scope: str | None) -> dict[str, Any]:
        body: dict[str, Any] = dict(self.extra)
        body.update(
            client_name=self.client_name,
            application_type=self.application_type,
            grant_types=list(self.grant_types),
        )
        if "authorization_code" in self.grant_types:
            body["redirect_uris"] = list(self.redirect_uris)
            body["response_types"] = ["code"]
        if self.token_endpoint_auth_method:
            body["token_endpoint_auth_method"] = self.token_endpoint_auth_method
        if scope:
            body["scope"] = scope
        return body


# --- errors from the wire -------------------------------------------------------------------------------


def oauth_error(response: httpx.Response) -> tuple[object, object]:
    """``(error, error_description)`` from an RFC 6749 §5.2 JSON error body, if there is one."""
    try:
        data = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return None, None
    if not isinstance(data, dict):
        return None, None
    return data.get("error"), data.get("error_description")


# --- PKCE and state --------------------------------------------------------------------------------------


def pkce_pair() -> tuple[str, str]:
    """(verifier, S256 challenge); the verifier is 128 characters of the unreserved set."""
    verifier = secrets.token_urlsafe(96)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def new_state() -> str:
    return secrets.token_urlsafe(32)


# --- scopes ----------------------------------------------------------------------------------------------


def union(*scopes: str | Iterable[str] | None) -> list[str]:
    """Ordered union of space-separated scope strings or lists; duplicates dropped."""
    out: dict[str, None] = {}
    for item in scopes:
        if item is None:
            continue
        for s in item.split() if isinstance(item, str) else item:
            out.setdefault(s, None)
    return list(out)


def select_scope(
    challenged: str | None,
    resource_scopes: Iterable[str],
    previous: str | None = None,
    server_scopes: Iterable[str] = (),
    offline_access: bool = False,
) -> str | None:
    """Scope to request: the challenge's → else every scope the resource lists → else none; union with
    ``previous`` (step-up); ``offline_access`` added when asked for and the server knows it."""
    base = union(challenged) or union(resource_scopes)
    chosen = union(previous, base) if previous else base
    if chosen and offline_access and "offline_access" in set(server_scopes):
        chosen = union(chosen, ["offline_access"])
    return " ".join(chosen) or None


# --- authorization request and response ------------------------------------------------------------------


def authorization_url(endpoint: str, params: Mapping[str, str | None]) -> str:
    """``endpoint`` with ``params`` added to (never replacing) its query."""
    parts = urlsplit(endpoint)
    query = urlencode({k: v for k, v in params.items() if v is not None})
    merged = f"{parts.query}&{query}" if parts.query else query
    return urlunsplit((parts.scheme, parts.netloc, parts.path, merged, ""))


def parse_callback(callback_url: str, *, state: str, issuer: str, iss_required: bool) -> str:
    """Check the redirect the browser landed on and return the authorization code.

    Order: ``state`` first (constant time), then RFC 9207 ``iss``, then any error, then the code.
    """
    query = parse_qs(urlsplit(callback_url).query, keep_blank_values=True)
    if any(len(v) > 1 for v in query.values()):
        raise AuthorizationError("authorization response repeats a parameter")
    got = {k: v[0] for k, v in query.items()}
    got_state = got.get("state")
    if got_state is None or not hmac.compare_digest(got_state.encode(), state.encode()):
        raise StateMismatchError("authorization response state does not match the request")
    iss = got.get("iss")
    if iss is None and iss_required:
        raise IssMismatchError("authorization response has no 'iss' although the server advertises it")
    if iss is not None and iss != issuer:
        raise IssMismatchError(f"authorization response comes from issuer {iss!r}, expected {issuer!r}")
    error = got.get("error")
    if error is not None:
        cls = UserDeclinedError if error == "access_denied" else AuthorizationError
        raise cls("authorization request refused", error=error, error_description=got.get("error_description"))
    code = got.get("code")
    if not code:
        raise AuthorizationError("authorization response carries no code")
    return code


# --- token requests --------------------------------------------------------------------------------------


def token_request(endpoint: str, client: ClientRegistration, form: Mapping[str, str | None]) -> httpx.Request:
    """A token-endpoint POST authenticated per the client's ``token_endpoint_auth_method``."""
    body = {k: v for k, v in form.items() if v is not None}
    headers = {"Accept": "application/json", "Content-Type": FORM}
    method = client.token_endpoint_auth_method
    body["client_id"] = client.client_id  # also with Basic: the server checks they match
    if method == "client_secret_basic":
        if not client.client_secret:
            raise TokenError("client_secret_basic needs a client secret")
        # RFC 6749 §2.3.1: form-urlencode id and secret before joining them.
        pair = f"{quote_plus(client.client_id)}:{quote_plus(client.client_secret)}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    elif method == "client_secret_post":
        if not client.client_secret:
            raise TokenError("client_secret_post needs a client secret")
        body["client_secret"] = client.client_secret
    elif method != "none":
        raise TokenError(f"unsupported token_endpoint_auth_method {method!r}")
    return httpx.Request("POST", endpoint, content=urlencode(body).encode(), headers=headers)


def parse_token_response(
    response: httpx.Response, *, now: float, requested_scope: str | None, previous: TokenSet | None = None
) -> TokenSet:
    if response.status_code not in (200, 201):
        error, description = oauth_error(response)
        raise TokenError(
            "token request refused", error=error, error_description=description, status_code=response.status_code
        )
    try:
        data = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        raise TokenError("token response is not a JSON object", status_code=response.status_code)
    access = data.get("access_token")
    if not isinstance(access, str) or not access:
        raise TokenError("token response has no access_token")
    token_type = data.get("token_type")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise TokenError(f"token_type {token_type!r} is not Bearer")
    expires_in = data.get("expires_in")
    expires_at: float | None = None
    if isinstance(expires_in, int | float) and not isinstance(expires_in, bool):
        expires_at = now + float(expires_in)
    elif isinstance(expires_in, str) and expires_in.isdigit():
        expires_at = now + int(expires_in)
    refresh = data.get("refresh_token")
    if not isinstance(refresh, str) or not refresh:
        refresh = previous.refresh_token if previous else None  # the server did not rotate it
    scope = data.get("scope")
    if not isinstance(scope, str):
        scope = requested_scope if requested_scope is not None else (previous.scope if previous else None)
    return TokenSet(access_token=access, token_type="Bearer", expires_at=expires_at, refresh_token=refresh, scope=scope)


# --- dynamic client registration -------------------------------------------------------------------------


def registration_request(endpoint: str, metadata: ClientMetadata, scope: str | None) -> httpx.Request:
    return httpx.Request(
        "POST",
        endpoint,
        content=json.dumps(metadata.to_json(scope)).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )


def parse_registration(response: httpx.Response, *, issuer: str, metadata: ClientMetadata) -> ClientRegistration:
    """Accept 200 or 201 and check the registered client is one we can use."""
    if response.status_code not in (200, 201):
        error, description = oauth_error(response)
        raise RegistrationError(
            "client registration refused",
            error=error,
            error_description=description,
            status_code=response.status_code,
        )
    try:
        data = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("client_id"), str) or not data["client_id"]:
        raise RegistrationError("registration response has no client_id", status_code=response.status_code)
    method = data.get("token_endpoint_auth_method") or metadata.token_endpoint_auth_method or "client_secret_basic"
    if method not in USABLE_METHODS:
        raise RegistrationError(f"server registered the client with {method!r}, which this agent cannot use")
    secret = data.get("client_secret")
    if method in SECRET_METHODS and (not isinstance(secret, str) or not secret):
        raise RegistrationError(f"server registered the client with {method!r} but returned no client_secret")
    expires = data.get("client_secret_expires_at")

    def strings(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = data.get(name)
        return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else default

    return ClientRegistration(
        client_id=data["client_id"],
        client_secret=secret if method in SECRET_METHODS else None,
        token_endpoint_auth_method=method,
        issuer=issuer,
        client_secret_expires_at=expires if isinstance(expires, int) and not isinstance(expires, bool) else None,
        redirect_uris=strings("redirect_uris", metadata.redirect_uris),
        grant_types=strings("grant_types", metadata.grant_types),
    )
