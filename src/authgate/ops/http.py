"""The ASGI layer of operations: a middleware that gives each request an ID, measures it and writes one access
line, plus the ``/metrics`` and ``/ready`` endpoints of ``authgate serve``."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from authgate.ops import requestid
from authgate.ops.decisions import DECISION_KEY, ROUTE_KEY
from authgate.ops.metrics import CONTENT_TYPE, Metrics

if TYPE_CHECKING:
    from authgate.context import ServerContext

access_log = logging.getLogger("authgate.access")

#: Label for requests no route matched (scanners, typos): one bucket, not one label value per path.
UNMATCHED = "<unmatched>"


def route_templates(routes: Iterable[BaseRoute], prefix: str = "") -> dict[int, str]:
    """Map each endpoint (by identity) to its path template, so metrics say ``/register/{client_id}``, never a
    raw path with a client ID in it."""
    found: dict[int, str] = {}
    for route in routes:
        if isinstance(route, Route):
            found.setdefault(id(route.endpoint), prefix + route.path)
        elif isinstance(route, Mount):
            found.setdefault(id(route.app), prefix + route.path + "/…")
            found.update({k: v for k, v in route_templates(route.routes, prefix + route.path).items()
                          if k not in found})
    return found


class Observed:
    """Request ID, latency and status metrics, and an access log line for every HTTP request.

    The access line carries method, route, status, duration, request ID and, when a policy decided, its mechanism
    and outcome — never the query string, headers or body, where codes, tokens and payment signatures travel.
    The route is the endpoint's template, else the label of the policy route that decided (the gateway), else
    ``<unmatched>``. ``log_path`` (the gateway, whose upstream's templates we do not know) adds the request
    path, escaped and cut to 256 characters, to the line but never to a metric label.

    The chosen request ID also replaces any ``X-Request-ID`` in the request the app sees, so what the gateway
    forwards upstream is the ID it logged and answered with, never a client's malformed one."""

    def __init__(self, app: ASGIApp, metrics: Metrics, templates: Callable[[], dict[int, str]], *,
                 log_path: bool = False) -> None:
        self.app = app
        self.metrics = metrics
        self._templates = templates
        self._cache: dict[int, str] | None = None
        self.log_path = log_path
        # prometheus_client's labels() lookup costs more than the increment: keep the children per label set
        # (bounded: routes are templates, methods and statuses a small set)
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def _route(self, scope: Scope) -> str:
        if self._cache is None:
            self._cache = self._templates()
        endpoint = scope.get("endpoint")
        if endpoint is not None and id(endpoint) in self._cache:
            return self._cache[id(endpoint)]
        route = scope.get("route")
        if isinstance(route, Route):
            # an app mounted as a whole and built later (the x402 facilitator under /x402): its own router matched a
            # template; the mount's prefix is what root_path gained below the application's own root path
            root, app_root = str(scope.get("root_path", "")), str(scope.get("app_root_path", ""))
            return (root[len(app_root):] if root.startswith(app_root) else root) + route.path
        label = scope.get("state", {}).get(ROUTE_KEY)
        return label if isinstance(label, str) else UNMATCHED

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = next((v for k, v in scope.get("headers", ()) if k == b"x-request-id"), None)
        rid = requestid.choose(incoming)
        scope["headers"] = [*(h for h in scope.get("headers", ()) if h[0] != b"x-request-id"),
                            (b"x-request-id", rid.encode())]
        scope.setdefault("state", {})
        token = requestid.current.set(rid)
        started = time.perf_counter()
        status = 500

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            elapsed = time.perf_counter() - started
            route = self._route(scope)
            method = scope.get("method", "GET")
            if method not in _METHODS:
                method = "OTHER"
            children = self._children.get((route, method, status))
            if children is None:
                children = (self.metrics.http_requests.labels(route, method, str(status)),
                            self.metrics.http_latency.labels(route, method))
                if len(self._children) < 4096:
                    self._children[(route, method, status)] = children
            children[0].inc()
            children[1].observe(elapsed)
            extra: dict[str, Any] = {"method": method, "route": route, "status": status,
                                     "duration_ms": round(elapsed * 1000, 2)}
            decision = scope.get("state", {}).get(DECISION_KEY)
            if isinstance(decision, tuple) and len(decision) == 2:
                extra["mechanism"], extra["outcome"] = decision
            shown = route
            if self.log_path:
                shown = extra["path"] = loggable_path(scope.get("path", ""))
            access_log.info("%s %s %d %.1fms", method, shown, status, elapsed * 1000, extra=extra)
            requestid.current.reset(token)


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def loggable_path(path: str, limit: int = 256) -> str:
    """``path`` safe for one log line: control and non-ASCII characters escaped (a ``%0A`` in a URL cannot start
    a forged line), cut to ``limit`` characters."""
    text = path.encode("unicode_escape").decode("ascii")
    return text if len(text) <= limit else text[:limit] + "…"


def routes(ctx: ServerContext) -> list[BaseRoute]:
    async def metrics(request: Request) -> Response:
        expected = ctx.settings.metrics_token
        if expected:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {expected}".encode()):
                return JSONResponse({"error": "invalid_token", "error_description": "metrics need the bearer token"},
                                    status_code=401, headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
        return Response(ctx.metrics.exposition(), media_type=CONTENT_TYPE, headers={"Cache-Control": "no-store"})

    async def ready(_: Request) -> Response:
        """Ready = the database answers and a signing key exists: the server can issue and check tokens."""
        problems: list[str] = []
        try:
            await ctx.store.ping()
        except Exception as exc:
            problems.append(f"database: {type(exc).__name__}")
        else:
            try:
                if not (await ctx.keys.jwks()).get("keys"):
                    problems.append("no signing key")
            except Exception as exc:
                problems.append(f"signing keys: {type(exc).__name__}")
        body: dict[str, Any] = {"status": "ready" if not problems else "not ready"}
        if problems:
            body["problems"] = problems
        return JSONResponse(body, status_code=200 if not problems else 503, headers={"Cache-Control": "no-store"})

    found: list[BaseRoute] = [Route("/ready", ready, methods=["GET"])]
    if ctx.settings.metrics_enabled:
        found.append(Route("/metrics", metrics, methods=["GET"]))
    return found
