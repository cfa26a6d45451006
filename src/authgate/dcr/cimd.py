"""Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document; MCP 2025-11-25+): a ``client_id``
that is an ``https`` URL names a JSON document describing the client. Reference note §4.5 and §8 row 19.

The URL is checked before any network I/O; the document is fetched through the SSRF guard (no redirects,
about 5 KB, only ``200``), validated, reduced to an allowlist of fields and cached (``max-age`` clamped to
30 s - 24 h, default 5 min; LRU; concurrent fetches coalesced; failures never cached). Any failure makes the
client unknown (``None``); the reason goes to the info log.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any
from urllib.parse import unquote, urlsplit

from authgate.clock import Clock
from authgate.config import Settings
from authgate.dcr.redirects import check_redirect_uris
from authgate.errors import OAuthError
from authgate.net.cache import DocumentCache
from authgate.net.fetch import Fetcher, FetchError, cache_lifetime
from authgate.net.jwks import check_public_jwks
from authgate.oauth.clients import Client

log = logging.getLogger("authgate.cimd")

MAX_DOCUMENT_BYTES = 5 * 1024
MAX_URL_LENGTH = 2048
MIN_TTL, DEFAULT_TTL, MAX_TTL = 30, 300, 24 * 3600
MAX_CACHED = 1000
MAX_STRING = 500

SUPPORTED_GRANT_TYPES = ("authorization_code", "refresh_token")
SUPPORTED_RESPONSE_TYPES = ("code",)
AUTH_METHODS = ("none", "private_key_jwt")
SYMMETRIC_AUTH = ("client_secret_basic", "client_secret_post", "client_secret_jwt")
URI_FIELDS = ("client_uri", "logo_uri", "tos_uri", "policy_uri")
STRING_FIELDS = ("software_id", "software_version")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class InvalidDocument(ValueError):
    """The URL or document is not an acceptable client ID metadata document; the message is for logs."""


def check_client_id_url(url: str) -> str:
    """The CIMD URL rules: https, a host, a non-empty path without dot segments (even percent-encoded), no
    userinfo, query or fragment. Applied before anything touches the network."""
    if len(url) > MAX_URL_LENGTH or not url.startswith("https://"):
        raise InvalidDocument("client_id is not an https URL")
    if any(ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in url) or "\\" in url:
        raise InvalidDocument("client_id contains whitespace, control characters or backslashes")
    if "#" in url or "?" in url:
        raise InvalidDocument("client_id must not have a query or fragment")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a junk port
    except ValueError:
        raise InvalidDocument("client_id is not a valid URL") from None
    if "@" in parts.netloc or not parts.hostname:
        raise InvalidDocument("client_id must have a host and no userinfo")
    segments = parts.path.split("/")[1:]
    if not any(segments):
        raise InvalidDocument("client_id must have a path")
    for segment in segments:
        decoded = unquote(segment)
        if decoded in (".", "..") or "/" in decoded or "\\" in decoded:
            raise InvalidDocument("client_id path has dot segments or encoded separators")
    return url


def _https_uri(name: str, value: object) -> str:
    if not isinstance(value, str) or len(value) > 2000:
        raise InvalidDocument(f"{name} must be a URL string")
    try:
        parts = urlsplit(value)
    except ValueError:
        raise InvalidDocument(f"{name} is not a valid URL") from None
    if parts.scheme != "https" or not parts.hostname or "@" in parts.netloc or "#" in value:
        raise InvalidDocument(f"{name} must be an https URL without userinfo or fragment")
    return value


def _text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidDocument(f"{name} must be a string")
    value = _CONTROL.sub("", value).strip()
    if not value or len(value) > MAX_STRING:
        raise InvalidDocument(f"{name} must be 1 to {MAX_STRING} characters")
    return value


def _filtered(name: str, value: object, default: tuple[str, ...], supported: tuple[str, ...]) -> list[str]:
    if value is None:
        return list(default)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidDocument(f"{name} must be an array of strings")
    kept = [v for v in supported if v in value]
    if not kept:
        raise InvalidDocument(f"{name} has no supported value")
    return kept


def validate_document(url: str, doc: object, settings: Settings) -> dict[str, Any]:
    """The stored metadata for a document at ``url``: checked, defaults applied, unknown fields dropped."""
    if not isinstance(doc, dict):
        raise InvalidDocument("document is not a JSON object")
    if doc.get("client_id") != url:
        raise InvalidDocument("client_id in the document does not equal the URL")
    if "client_secret" in doc or "client_secret_expires_at" in doc:
        raise InvalidDocument("document contains a client secret")
    method = doc.get("token_endpoint_auth_method", "none")
    if method in SYMMETRIC_AUTH:
        raise InvalidDocument(f"symmetric token_endpoint_auth_method {method} is not allowed")
    if method not in AUTH_METHODS:
        raise InvalidDocument("unsupported token_endpoint_auth_method")
    out: dict[str, Any] = {"client_id": url, "token_endpoint_auth_method": method}

    if "client_name" not in doc:
        raise InvalidDocument("client_name is required")
    for key, value in doc.items():
        if key == "client_name" or key.startswith("client_name#"):
            out[key] = _text(key, value)
        elif key.split("#", 1)[0] in URI_FIELDS:
            out[key] = _https_uri(key, value)
    try:
        out["redirect_uris"] = check_redirect_uris(doc.get("redirect_uris"), required=True)
    except OAuthError as exc:
        raise InvalidDocument(exc.description) from None

    if "jwks" in doc and "jwks_uri" in doc:
        raise InvalidDocument("jwks and jwks_uri are mutually exclusive")
    if "jwks" in doc:
        try:
            out["jwks"] = check_public_jwks(doc["jwks"])
        except ValueError as exc:
            raise InvalidDocument(str(exc)) from None
    if "jwks_uri" in doc:
        out["jwks_uri"] = _https_uri("jwks_uri", doc["jwks_uri"])
    if method == "private_key_jwt" and "jwks" not in out and "jwks_uri" not in out:
        raise InvalidDocument("private_key_jwt needs jwks or jwks_uri")

    out["grant_types"] = _filtered("grant_types", doc.get("grant_types"), ("authorization_code",),
                                   SUPPORTED_GRANT_TYPES)
    if "authorization_code" not in out["grant_types"]:
        raise InvalidDocument("grant_types must include authorization_code")
    out["response_types"] = _filtered("response_types", doc.get("response_types"), ("code",),
                                      SUPPORTED_RESPONSE_TYPES)

    if "scope" in doc:
        if not isinstance(doc["scope"], str):
            raise InvalidDocument("scope must be a string")
        known = [s for s in dict.fromkeys(doc["scope"].split()) if s in settings.scopes]
        if known:
            out["scope"] = " ".join(known)
    if "application_type" in doc:
        if doc["application_type"] not in ("web", "native"):
            raise InvalidDocument("application_type must be web or native")
        out["application_type"] = doc["application_type"]
    if "contacts" in doc:
        contacts = doc["contacts"]
        if not isinstance(contacts, list) or len(contacts) > 10:
            raise InvalidDocument("contacts must be an array of at most 10 strings")
        out["contacts"] = [_text("contacts", c) for c in contacts]
    for key in STRING_FIELDS:
        if key in doc:
            out[key] = _text(key, doc[key])
    return out


class MetadataDocuments:
    """The resolver ``ClientResolver`` calls for https ``client_id`` values it has not registered."""

    def __init__(self, settings: Settings, fetcher: Fetcher, clock: Clock, *, max_entries: int = MAX_CACHED) -> None:
        self._settings = settings
        self._fetcher = fetcher
        self.cache: DocumentCache[Client] = DocumentCache(clock, max_entries=max_entries)

    async def __call__(self, client_id: str) -> Client | None:
        try:
            check_client_id_url(client_id)
        except InvalidDocument as exc:
            log.info("client metadata document %r refused: %s", client_id[:200], exc)
            return None
        return await self.cache.get(client_id, lambda: self._load(client_id))

    async def _load(self, url: str) -> tuple[Client, int] | None:
        try:
            response = await self._fetcher.get(url, max_bytes=MAX_DOCUMENT_BYTES)
            if response.status != 200:
                raise InvalidDocument(f"fetch answered {response.status}")
            try:
                doc = json.loads(response.body)
            except ValueError:
                raise InvalidDocument("document is not valid JSON") from None
            metadata = validate_document(url, doc, self._settings)
        except FetchError as exc:
            log.info("client metadata document %s not fetched: %s", url, exc.reason)
            return None
        except InvalidDocument as exc:
            log.info("client metadata document %s rejected: %s", url, exc)
            return None
        ttl = cache_lifetime(response.headers, default=DEFAULT_TTL, minimum=MIN_TTL, maximum=MAX_TTL)
        return Client(client_id=url, metadata=metadata, source="metadata_document"), ttl


def make_resolver(settings: Settings, clock: Clock, *, fetcher: Fetcher | None = None) -> MetadataDocuments:
    """The CIMD resolver for ``ClientResolver``. ``fetcher`` defaults to the SSRF-guarded network fetcher
    (loopback reachable only with ``allow_loopback_fetch``); tests and the dev demo pass one built on
    ``Fetcher(transport=httpx.MockTransport(...))`` to serve documents in-process."""
    return MetadataDocuments(settings, fetcher or Fetcher(allow_loopback=settings.allow_loopback_fetch), clock)
