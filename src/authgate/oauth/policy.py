"""Which scopes and which resource a request may get: shared by the authorization and token endpoints."""

from __future__ import annotations

from urllib.parse import urlsplit

from authgate.context import ServerContext
from authgate.errors import InvalidRequest, InvalidScope, InvalidTarget
from authgate.oauth.clients import Client

MAX_SCOPE_LENGTH = 1024


def parse_scope(value: str | None) -> list[str]:
    if value is None:
        return []
    if len(value) > MAX_SCOPE_LENGTH:
        raise InvalidScope("scope too long")
    scopes: list[str] = []
    for token in value.split(" "):
        if not token:
            continue
        # RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
        if any(not (0x21 <= ord(ch) <= 0x7E) or ch in '"\\' for ch in token):
            raise InvalidScope("malformed scope")
        if token not in scopes:
            scopes.append(token)
    return scopes


def allowed_scopes(ctx: ServerContext, client: Client) -> set[str]:
    """Known scopes the client registered (all known ones if it registered none). ``offline_access`` comes with
    the refresh_token grant: a client that may refresh may ask for it without having listed it."""
    known = set(ctx.settings.scopes)
    registered = client.scopes
    allowed = known & registered if registered else set(known)
    if "offline_access" in known and "refresh_token" in client.grant_types:
        allowed.add("offline_access")
    return allowed


def grant_scopes(ctx: ServerContext, client: Client, requested: str | None) -> tuple[str, ...]:
    """The requested scopes if all are allowed; the client's registered (or default) scopes when omitted."""
    asked = parse_scope(requested)
    allowed = allowed_scopes(ctx, client)
    if not asked:
        registered = [s for s in sorted(client.scopes) if s in allowed]
        defaults = registered or [s for s in ctx.settings.default_scopes if s in allowed]
        return tuple(defaults)
    refused = [s for s in asked if s not in allowed]
    if refused:
        raise InvalidScope("scope not allowed for this client: " + " ".join(refused)[:200])
    return tuple(asked)


def canonical_resource(uri: str) -> str:
    """Lower-case scheme and host, no trailing slash on the path (MCP canonical server URI)."""
    parts = urlsplit(uri)
    path = parts.path[:-1] if parts.path.endswith("/") else parts.path
    netloc = parts.netloc.lower()
    query = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme.lower()}://{netloc}{path}{query}"


def check_resource(ctx: ServerContext, resource: str | None) -> str:
    """Validate an RFC 8707 ``resource`` and return the token audience."""
    if resource is None:
        configured = ctx.settings.resources
        return configured[0] if len(configured) == 1 else ctx.issuer
    if len(resource) > 2000:
        raise InvalidTarget("resource too long")
    if not resource.isascii() or any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in resource):
        raise InvalidTarget("resource must be an ASCII URI without spaces or control characters")
    try:
        parts = urlsplit(resource)
        parts.port  # noqa: B018 - raises ValueError on a junk port
    except ValueError as exc:
        raise InvalidTarget("resource must be an absolute URI") from exc
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc or "#" in resource or "@" in parts.netloc:
        raise InvalidTarget("resource must be an absolute http(s) URI without fragment or userinfo")
    canonical = canonical_resource(resource)
    known = {canonical_resource(r): r for r in ctx.settings.resources}
    if known:
        if canonical not in known:
            raise InvalidTarget("unknown resource")
        return known[canonical]
    return resource


def require_single(value: str | None, name: str) -> str:
    if not value:
        raise InvalidRequest(f"{name} is required")
    return value
