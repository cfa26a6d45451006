"""Discovery, sans I/O: candidate URLs and validation of protected-resource metadata (RFC 9728) and
authorization-server metadata (RFC 8414, OpenID Connect Discovery), in the order MCP clients use.

The caller fetches each candidate in turn; :func:`classify` says whether a response ends the search.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from authgate.agent.errors import DiscoveryError, IssuerMismatchError

PRM_WELL_KNOWN = "/.well-known/oauth-protected-resource"
AS_WELL_KNOWN = "/.well-known/oauth-authorization-server"
OIDC_WELL_KNOWN = "/.well-known/openid-configuration"
MAX_METADATA_BYTES = 256 * 1024

_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: str | httpx.URL) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the scheme and host lower-cased and the default port filled in."""
    parts = urlsplit(str(url))
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    return scheme, (parts.hostname or "").lower(), port or _DEFAULT_PORTS.get(scheme)


def _origin_text(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_secure_url(url: str) -> bool:
    """``https``, or ``http`` on a loopback host (development); nothing else carries credentials."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return bool(parts.hostname)
    return parts.scheme == "http" and is_loopback(parts.hostname or "")


def resource_matches(request_url: str | httpx.URL, resource: str) -> bool:
    """Does ``resource`` cover ``request_url``: same origin and a path prefix on a segment boundary?"""
    if origin(request_url) != origin(resource) or origin(resource)[0] not in _DEFAULT_PORTS:
        return False
    prefix = urlsplit(resource).path.rstrip("/")
    path = urlsplit(str(request_url)).path or "/"
    return not prefix or path == prefix or path.startswith(prefix + "/")


def prm_candidates(request_url: str | httpx.URL, header_url: str | None) -> list[str]:
    """Where to look for protected-resource metadata, best first (MCP 2025-11-25 discovery order)."""
    url = str(request_url)
    base = _origin_text(url)
    path = urlsplit(url).path.rstrip("/")
    out: list[str] = []
    if header_url and urlsplit(header_url).scheme in ("https", "http") and urlsplit(header_url).hostname:
        out.append(header_url)
    if path:
        out.append(base + PRM_WELL_KNOWN + path)
    out.append(base + PRM_WELL_KNOWN)
    return list(dict.fromkeys(out))


def as_metadata_candidates(issuer: str) -> list[str]:
    """RFC 8414 path insertion, then the two OpenID Connect Discovery forms."""
    base = _origin_text(issuer)
    path = urlsplit(issuer).path.rstrip("/")
    if not path:
        return [base + AS_WELL_KNOWN, base + OIDC_WELL_KNOWN]
    return [base + AS_WELL_KNOWN + path, base + OIDC_WELL_KNOWN + path, base + path + OIDC_WELL_KNOWN]


Verdict = Literal["ok", "next", "stop"]


def classify(response: httpx.Response) -> Verdict:
    """``ok`` for 200; ``stop`` for 429 and 5xx (the server is there but unwell: don't guess further);
    ``next`` for anything else (3xx, 4xx)."""
    if response.status_code == 200:
        return "ok"
    if response.status_code == 429 or response.status_code >= 500:
        return "stop"
    return "next"


def json_object(response: httpx.Response) -> dict[str, Any] | None:
    if len(response.content) > MAX_METADATA_BYTES:
        return None
    try:
        data = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


@dataclass(frozen=True)
class ResourceMetadata:
    """The parts of RFC 9728 metadata the agent uses."""

    resource: str
    authorization_server: str
    scopes_supported: tuple[str, ...]
    url: str  # where it was found


def parse_resource_metadata(doc: dict[str, Any], request_url: str | httpx.URL, url: str) -> ResourceMetadata:
    resource = doc.get("resource")
    if not isinstance(resource, str) or not resource:
        raise DiscoveryError(f"protected resource metadata at {url} has no 'resource'")
    if not resource_matches(request_url, resource):
        raise DiscoveryError(
            f"protected resource metadata at {url} is for {resource!r}, which does not cover the requested URL"
        )
    servers = doc.get("authorization_servers")
    if not isinstance(servers, list) or not servers or not isinstance(servers[0], str):
        raise DiscoveryError(f"protected resource metadata at {url} names no authorization server")
    issuer = servers[0]
    parts = urlsplit(issuer)
    if not is_secure_url(issuer) or parts.query or parts.fragment:
        raise DiscoveryError(f"authorization server {issuer!r} is not an https issuer identifier")
    scopes = doc.get("scopes_supported")
    scope_list = tuple(s for s in scopes if isinstance(s, str) and s) if isinstance(scopes, list) else ()
    return ResourceMetadata(resource, issuer, scope_list, url)


@dataclass(frozen=True)
class ServerMetadata:
    """Authorization-server metadata, validated against the expected issuer."""

    issuer: str
    token_endpoint: str
    authorization_endpoint: str | None
    registration_endpoint: str | None
    code_challenge_methods: tuple[str, ...]
    scopes_supported: tuple[str, ...]
    iss_parameter_supported: bool

    @property
    def supports_s256(self) -> bool:
        return "S256" in self.code_challenge_methods


def parse_server_metadata(doc: dict[str, Any], expected_issuer: str, url: str) -> ServerMetadata:
    issuer = doc.get("issuer")
    if issuer != expected_issuer:  # RFC 8414 §3.3: simple string comparison, no normalisation
        raise IssuerMismatchError(
            f"authorization server metadata at {url} names issuer {issuer!r}, expected {expected_issuer!r}"
        )

    def endpoint(name: str, required: bool) -> str | None:
        value = doc.get(name)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not is_secure_url(value):
            raise DiscoveryError(f"authorization server metadata: {name} missing or not an https URL")
        return value

    token_endpoint = endpoint("token_endpoint", True)
    assert token_endpoint is not None

    def strings(name: str) -> tuple[str, ...]:
        value = doc.get(name)
        return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()

    return ServerMetadata(
        issuer=expected_issuer,
        token_endpoint=token_endpoint,
        authorization_endpoint=endpoint("authorization_endpoint", False),
        registration_endpoint=endpoint("registration_endpoint", False),
        code_challenge_methods=strings("code_challenge_methods_supported"),
        scopes_supported=strings("scopes_supported"),
        iss_parameter_supported=doc.get("authorization_response_iss_parameter_supported") is True,
    )
