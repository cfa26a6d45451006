"""Pure ASGI middleware protecting an app by route and scope, and serving its RFC 9728 metadata.

Rules are checked in order and the first match decides::

    AuthGateMiddleware(app, verifier, resource, rules=[
        public("/health"),
        protect("/notes/*", "notes:read", methods={"GET"}),
        protect("/notes/*", "notes:write"),            # every other method
    ])

A path ending in ``/*`` covers that path and everything below it, on segment boundaries (``/notes/*``
matches ``/notes`` and ``/notes/1`` but not ``/notes-admin``); any other path is exact. ``methods`` None means
all; a rule for ``GET`` also covers ``HEAD``. Requests no rule matches are handled as ``unmatched`` says:
``"authenticate"`` (the default: a valid token, no particular scope) or ``"public"``. CORS preflights
(``OPTIONS`` with ``Access-Control-Request-Method``) pass untouched, as browsers send them without
credentials. Verified claims are put in ``scope["state"]["authgate"]`` (``request.state.authgate``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from starlette.types import ASGIApp, Receive, Scope, Send

from authgate.errors import OAuthError
from authgate.ops.decisions import Tally, outcome_of
from authgate.resource.bearer import BearerGuard
from authgate.resource.metadata import AAUTH_WELL_KNOWN, ProtectedResource, check_scopes
from authgate.resource.verifier import AccessClaims, TokenVerifier

if TYPE_CHECKING:
    from authgate.ops.metrics import Metrics

STATE_KEY = "authgate"
GUARD_STATE_KEY = "authgate.guard"

Unmatched = Literal["authenticate", "public"]


@dataclass(frozen=True)
class Rule:
    """One route policy: who may call ``methods`` on ``path``."""

    path: str
    scopes: tuple[str, ...] = ()
    methods: frozenset[str] | None = None
    public: bool = False

    def __post_init__(self) -> None:
        if not self.path.startswith("/"):
            raise ValueError(f"rule path must start with '/': {self.path!r}")
        object.__setattr__(self, "scopes", check_scopes(self.scopes))
        if self.methods is not None:
            methods = {m.upper() for m in self.methods}
            if "GET" in methods:
                methods.add("HEAD")
            object.__setattr__(self, "methods", frozenset(methods))
        if self.public and self.scopes:
            raise ValueError("a public rule cannot require scopes")

    @classmethod
    def coerce(cls, rule: Rule | tuple[str, Iterable[str] | None, Iterable[str]]) -> Rule:
        """Accept a :class:`Rule` or a ``(path, methods or None, scopes)`` tuple."""
        if isinstance(rule, Rule):
            return rule
        path, methods, scopes = rule
        return cls(path, tuple(scopes), None if methods is None else frozenset(methods))

    def matches(self, method: str, path: str) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        if self.path.endswith("/*"):
            base = self.path[:-2]
            return path == base or path.startswith(base + "/") or (base == "" and path == "/")
        return path == self.path


def protect(path: str, *scopes: str, methods: Iterable[str] | None = None) -> Rule:
    """A rule requiring a valid token carrying every one of ``scopes``."""
    return Rule(path, scopes, None if methods is None else frozenset(methods))


def public(path: str, *, methods: Iterable[str] | None = None) -> Rule:
    """A rule letting requests through without a token."""
    return Rule(path, (), None if methods is None else frozenset(methods), public=True)


async def send_error(send: Send, error: OAuthError, *, head: bool = False) -> None:
    status, headers, body = error.render()
    await send_json(send, status, body, headers, head=head)


async def send_json(
    send: Send, status: int, body: bytes, headers: dict[str, str], *, head: bool = False
) -> None:
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": b"" if head else body})


class MetadataEndpoint:
    """The RFC 9728 document (or, with ``document``, another public JSON document such as ``aauth.json``) as
    a tiny ASGI app (GET/HEAD, cacheable, readable cross-origin)."""

    def __init__(self, resource: ProtectedResource, max_age: int = 300, *,
                 document: dict[str, Any] | None = None) -> None:
        self.body = json.dumps(resource.document() if document is None else document).encode()
        self.headers = {
            "Content-Type": "application/json",
            "Cache-Control": f"public, max-age={max_age}",
            "Access-Control-Allow-Origin": "*",
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope.get("method", "GET")
        if method not in ("GET", "HEAD", "OPTIONS"):
            body = json.dumps({"error": "invalid_request", "error_description": "Method not allowed"}).encode()
            await send_json(send, 405, body, {"Content-Type": "application/json", "Allow": "GET, HEAD"})
            return
        if method == "OPTIONS":
            await send_json(send, 204, b"", {"Allow": "GET, HEAD", "Access-Control-Allow-Origin": "*",
                                              "Access-Control-Allow-Methods": "GET, HEAD"})
            return
        await send_json(send, 200, self.body, self.headers, head=method == "HEAD")


def _headers(scope: Scope, name: bytes) -> list[str]:
    return [v.decode("latin-1") for k, v in scope.get("headers", ()) if k.lower() == name]


def token_in_query(scope: Scope) -> bool:
    """True if the query string carries ``access_token`` (RFC 6750 §2.3, which we refuse)."""
    query: bytes = scope.get("query_string", b"")
    return any(p.split(b"=", 1)[0] == b"access_token" for p in query.split(b"&")) if query else False


class AuthGateMiddleware:
    """Serves the protected resource metadata (and ``/.well-known/aauth.json`` when the resource describes its
    scopes) and enforces ``rules`` on every HTTP and WebSocket request."""

    def __init__(
        self,
        app: ASGIApp,
        verifier: TokenVerifier,
        resource: ProtectedResource,
        rules: Sequence[Rule | tuple[str, Iterable[str] | None, Iterable[str]]] = (),
        *,
        unmatched: Unmatched = "authenticate",
        metrics: Metrics | None = None,
    ) -> None:
        if unmatched not in ("authenticate", "public"):
            raise ValueError("unmatched must be 'authenticate' or 'public'")
        self.app = app
        #: Where decisions are counted (``authgate_access_decisions``, mechanism ``oauth``); None: nowhere.
        self.metrics = metrics
        self.guard = BearerGuard(verifier, resource)
        #: A verifier that can tell synchronously that a token it verified before still holds (JWTVerifier). A
        #: wrapper adding checks (KillSwitchVerifier) has no ``recall`` and must never pass its inner one's on:
        #: its checks would be skipped.
        self._recall = getattr(verifier, "recall", None)
        self.rules = tuple(Rule.coerce(r) for r in rules)
        self.unmatched: Unmatched = unmatched
        self.metadata = MetadataEndpoint(resource)
        self.metadata_path = resource.metadata_path
        #: ``/.well-known/aauth.json``, served when the resource describes its scopes.
        self.aauth = (MetadataEndpoint(resource, document=resource.aauth_document())
                      if resource.scope_descriptions else None)

    def _recalled(self, scope: Scope, rule: Rule | None) -> AccessClaims | None:
        """The claims of a request that presents, in the one form a well-formed request can (exactly one
        ``Authorization: Bearer <token>`` header, no query string), a token the verifier has verified before and
        that still holds with the route's scopes; else None, and the request takes the full path. Why: for an
        agent sending the same token again this skips the layers around the cache (header parsing, the guard's
        coroutine), which cost a server more than the cache lookup under load. A hit means the header is
        ``Bearer `` + a string that passed :class:`BearerGuard`'s syntax check before, so the full path would
        have extracted the same token; anything unusual (two headers, extra spaces, a query) is a miss."""
        if scope.get("query_string"):
            return None
        header: bytes | None = None
        for name, value in scope["headers"]:
            if name.lower() == b"authorization":
                if header is not None:
                    return None
                header = value
        if header is None or header[:7].lower() != b"bearer ":
            return None
        assert self._recall is not None
        claims: AccessClaims | None = self._recall(header[7:].decode("latin-1"))
        if claims is None or (rule is not None and not claims.has_scopes(rule.scopes)):
            return None
        return claims

    def rule_for(self, method: str, path: str) -> Rule | None:
        for rule in self.rules:
            if rule.matches(method, path):
                return rule
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        method: str = scope.get("method", "GET") if kind == "http" else "GET"
        if kind == "http" and path == self.metadata_path:
            await self.metadata(scope, receive, send)
            return
        if kind == "http" and path == AAUTH_WELL_KNOWN and self.aauth is not None:
            await self.aauth(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state[GUARD_STATE_KEY] = self.guard
        tally = Tally(self.metrics, scope)
        if kind == "http" and method == "OPTIONS" and _headers(scope, b"access-control-request-method"):
            tally.record("public", "allowed")
            await self.app(scope, receive, send)
            return
        rule = self.rule_for(method, path)
        if (rule is not None and rule.public) or (rule is None and self.unmatched == "public"):
            tally.record("public", "allowed")
            await self.app(scope, receive, send)
            return
        if kind == "http" and self._recall is not None:
            recalled = self._recalled(scope, rule)
            if recalled is not None:
                tally.record("oauth", "allowed")
                state[STATE_KEY] = recalled
                await self.app(scope, receive, send)
                return
        authorization = _headers(scope, b"authorization")
        mechanism = "oauth" if authorization or token_in_query(scope) else "none"
        try:
            claims: AccessClaims = await self.guard.authenticate(
                authorization, rule.scopes if rule else (), token_in_query=token_in_query(scope)
            )
        except OAuthError as exc:
            if kind == "websocket":
                tally.record(mechanism, "error" if exc.status_code >= 500 else "denied")
                await send({"type": "websocket.close", "code": 1008, "reason": exc.error})
            else:
                tally.record(mechanism, outcome_of(exc.status_code, exc.headers))
                await send_error(send, exc, head=method == "HEAD")
            return
        except BaseException:
            tally.record(mechanism, "error")
            raise
        tally.record("oauth", "allowed")
        state[STATE_KEY] = claims
        await self.app(scope, receive, send)
