"""OAuth 2.0 Protected Resource Metadata (RFC 9728) and resource identifiers (RFC 8707).

A resource server names itself with one URI: the RFC 8707 ``resource`` the client asked the authorization
server for, the ``aud`` of the tokens it accepts, and the ``resource`` member of its metadata document. The
document lives at the RFC 9728 §3.1 well-known URI built by path insertion::

    resource https://api.example.com/mcp  ->  https://api.example.com/.well-known/oauth-protected-resource/mcp
    resource https://api.example.com      ->  https://api.example.com/.well-known/oauth-protected-resource

Identifiers are compared in canonical form (MCP authorization, "canonical server URI"): scheme and host
lowercased, default port dropped, no fragment, no trailing slash. ``authorization_servers`` entries are
published byte for byte as given, because clients compare them to the AS ``issuer`` exactly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from authgate.aauth import wire as aauth_wire

WELL_KNOWN = "/.well-known/oauth-protected-resource"
#: Natural-language scope descriptions for agents (AAuth, draft-rosenberg-oauth-aauth), at the host root.
AAUTH_WELL_KNOWN = aauth_wire.AAUTH_WELL_KNOWN
MAX_SCOPE_DESCRIPTION = 1000

# MCP 2026-07-28: a resource server SHOULD NOT advertise offline_access (it is the AS's business).
NEVER_ADVERTISED = frozenset({"offline_access"})

_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")  # RFC 6749 §3.3 scope-token
_DEFAULT_PORTS = {"http": 80, "https": 443}


def canonical_resource(uri: str) -> str:
    """The canonical form of a resource URI, for comparison; raises ``ValueError`` if it is not one.

    >>> canonical_resource("HTTPS://API.Example.com:443/mcp/")
    'https://api.example.com/mcp'
    """
    parts = urlsplit(uri.strip())
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"not an absolute http(s) URI: {uri!r}")
    if parts.username is not None or parts.password is not None:
        raise ValueError("a resource URI must not carry userinfo")
    host = parts.hostname.lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    port = parts.port  # raises ValueError on a malformed port
    netloc = host if port is None or port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    path = parts.path.rstrip("/")
    return urlunsplit((scheme, netloc, path, parts.query, ""))


def same_resource(a: str, b: str) -> bool:
    """True if two resource URIs name the same resource; a malformed URI matches nothing."""
    try:
        return canonical_resource(a) == canonical_resource(b)
    except ValueError:
        return False


def check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """Validate scope tokens (RFC 6749 §3.3); duplicates removed, order kept."""
    out: list[str] = []
    for s in scopes:
        if not isinstance(s, str) or not _SCOPE_TOKEN.match(s):
            raise ValueError(f"invalid scope token: {s!r}")
        if s not in out:
            out.append(s)
    return tuple(out)


def advertisable(scopes: Iterable[str]) -> tuple[str, ...]:
    """Scopes that may appear in metadata or a challenge: everything but ``offline_access``."""
    return tuple(s for s in scopes if s not in NEVER_ADVERTISED)


@dataclass(frozen=True)
class ProtectedResource:
    """Who this resource server is, and the RFC 9728 document that says so.

    ``resource`` is stored in canonical form; ``authorization_servers`` exactly as given.
    """

    resource: str
    authorization_servers: Sequence[str]
    scopes_supported: Sequence[str] = ()
    resource_name: str | None = None
    resource_documentation: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: Scope -> what it lets an agent do, in words a person understands (read out by voice agents, shown on
    #: approval pages). Published at ``/.well-known/aauth.json`` when not empty.
    scope_descriptions: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "resource", canonical_resource(self.resource))
        if isinstance(self.authorization_servers, str):
            raise TypeError("authorization_servers is a list of issuer strings")
        servers = tuple(self.authorization_servers)
        if not servers:
            raise ValueError("at least one authorization server is required")
        for issuer in servers:
            canonical_resource(issuer)  # must be an absolute http(s) URI; published unchanged
        object.__setattr__(self, "authorization_servers", servers)
        object.__setattr__(self, "scopes_supported", advertisable(check_scopes(self.scopes_supported)))
        for url in (self.resource_documentation,):
            if url is not None:
                canonical_resource(url)
        described: dict[str, str] = {}
        for scope in advertisable(check_scopes(self.scope_descriptions)):
            text = self.scope_descriptions[scope]
            if not isinstance(text, str) or not text.strip() or len(text) > MAX_SCOPE_DESCRIPTION:
                raise ValueError(f"the description of {scope!r} must be 1-{MAX_SCOPE_DESCRIPTION} characters")
            described[scope] = text.strip()
        object.__setattr__(self, "scope_descriptions", described)

    def aauth_document(self) -> dict[str, Any]:
        """The ``/.well-known/aauth.json`` document: ``{"scope_descriptions": [{"scope", "description"}]}``."""
        return {aauth_wire.SCOPE_DESCRIPTIONS: [{"scope": scope, "description": text}
                                                for scope, text in self.scope_descriptions.items()]}

    @property
    def metadata_path(self) -> str:
        """Path of the metadata document on this host (RFC 9728 §3.1 path insertion)."""
        return WELL_KNOWN + urlsplit(self.resource).path

    @property
    def metadata_url(self) -> str:
        """Absolute URL of the metadata document: the ``resource_metadata`` challenge parameter."""
        parts = urlsplit(self.resource)
        return urlunsplit((parts.scheme, parts.netloc, self.metadata_path, "", ""))

    def document(self) -> dict[str, Any]:
        """The RFC 9728 §2 metadata document."""
        doc: dict[str, Any] = {
            "resource": self.resource,
            "authorization_servers": list(self.authorization_servers),
            "bearer_methods_supported": ["header"],
        }
        if self.scopes_supported:
            doc["scopes_supported"] = list(self.scopes_supported)
        if self.resource_name:
            doc["resource_name"] = self.resource_name
        if self.resource_documentation:
            doc["resource_documentation"] = self.resource_documentation
        for key, value in self.extra.items():
            doc.setdefault(key, value)
        return doc
