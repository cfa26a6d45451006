"""Builds the server's ASGI application from settings. Wiring only: no protocol logic lives here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from authgate import dashboard, openapi
from authgate.aauth.abuse import AbuseGuard
from authgate.aauth.directory import IdentityDirectory
from authgate.agentauth import routes as agentauth_routes
from authgate.approvals import ApprovalRequest, ApprovalService
from authgate.approvals import links as approval_links
from authgate.approvals import web as approvals_web
from authgate.approvals.channels import build_notifier
from authgate.clock import Clock, SystemClock
from authgate.config import ConfigError, Settings
from authgate.context import ServerContext
from authgate.crypto.keys import KeyRing
from authgate.dcr import cimd
from authgate.dcr import endpoints as dcr_endpoints
from authgate.errors import MethodNotAllowed
from authgate.httputil import error_response, json_response
from authgate.net import Fetcher
from authgate.oauth import authorize, ciba, introspection, token
from authgate.oauth.clients import ClientResolver
from authgate.oauth.metadata import server_metadata
from authgate.ops import http as ops_http
from authgate.ops.metrics import Metrics
from authgate.ratelimit import RateLimiter
from authgate.shared.client import SharedRedis
from authgate.store import Store
from authgate.trust import web as trust_web

if TYPE_CHECKING:
    from authgate.agentauth.replay import ReplayCache

log = logging.getLogger("authgate")

DEV_HEADER = "X-Authgate-Dev"


async def build_context(settings: Settings, clock: Clock | None = None, store: Store | None = None,
                        fetcher: Fetcher | None = None) -> ServerContext:
    """Open the store (migrating it), make sure a signing key exists, and assemble the shared context.

    ``fetcher`` replaces the SSRF-guarded network fetcher for client metadata documents (tests, the demo)."""
    clock = clock or SystemClock()
    store = store or await Store.open(settings.sqlalchemy_url, clock, pool_size=settings.db_pool_size,
                                      max_overflow=settings.db_max_overflow)
    keys = KeyRing(store, clock)
    await keys.ensure_key()
    resolver = ClientResolver(store, cimd.make_resolver(settings, clock, fetcher=fetcher))
    limiter = RateLimiter(settings.registration_rate_limit, 60, clock)
    metrics = Metrics()

    def approval_decided(request: ApprovalRequest) -> None:
        if request.decided_at is not None:
            metrics.approval_latency.labels(request.status).observe(max(0, request.decided_at - request.created_at))

    approvals = ApprovalService(store, clock, notifier=build_notifier(settings, store, clock),
                                default_ttl=settings.approvals_ttl, max_ttl=settings.approvals_max_ttl,
                                on_decided=approval_decided)
    identity = await IdentityDirectory.open(store, settings)
    redis, replay = _shared_state(settings, store)
    return ServerContext(settings=settings, store=store, keys=keys, clock=clock, clients=resolver,
                         registration_limiter=limiter, approvals=approvals, identity=identity,
                         aauth_guard=AbuseGuard(store, settings, clock), metrics=metrics,
                         fetcher=fetcher, redis=redis, replay_cache=replay)


def _shared_state(settings: Settings, store: Store) -> tuple[SharedRedis | None, ReplayCache | None]:
    """With ``redis_url``: the Redis client and the Redis replay cache (database fallback). Not connected yet:
    a Redis that is down at start is an outage like any other (see authgate.shared.client)."""
    if not settings.redis_url:
        return None, None
    from authgate.agentauth.replay import DatabaseReplayCache
    from authgate.shared.replay import RedisReplayCache

    redis = SharedRedis.from_url(settings.redis_url, prefix=settings.redis_prefix)
    return redis, RedisReplayCache(redis, DatabaseReplayCache(store))


def _discovery_routes(ctx: ServerContext) -> list[BaseRoute]:
    async def metadata(_: Request) -> Response:
        return json_response(server_metadata(ctx.settings), no_store=False,
                             headers={"Cache-Control": "public, max-age=300"})

    async def jwks(_: Request) -> Response:
        return json_response(await ctx.keys.jwks(), no_store=False, headers={"Cache-Control": "public, max-age=60"})

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def openapi_json(_: Request) -> Response:
        return json_response(openapi.document(ctx.settings), no_store=False,
                             headers={"Cache-Control": "public, max-age=300"})

    return [
        Route("/.well-known/oauth-authorization-server", metadata, methods=["GET"]),
        Route("/.well-known/openid-configuration", metadata, methods=["GET"]),
        Route("/jwks.json", jwks, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
    ]


async def _method_not_allowed(_: Request, exc: Exception) -> Response:
    """A wrong method at a protocol endpoint (``GET /token``) answers with OAuth JSON and no-store, not text."""
    allow = exc.headers.get("Allow", "") if isinstance(exc, HTTPException) and exc.headers else ""
    return error_response(MethodNotAllowed(f"use {allow}" if allow else "method not allowed",
                                           headers={"Allow": allow} if allow else None))


class DevModeHeader:
    """Marks every response of an auto-approving server, so nobody mistakes it for a real one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((DEV_HEADER.lower().encode(), b"auto-approve"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_marked)


async def _purge_expired(ctx: ServerContext, every: float = 600.0) -> None:
    """Delete codes, tokens and replay records an hour after they expired, so the table stays bounded."""
    while True:
        try:
            removed = await ctx.store.purge_expired()
            if removed:
                log.info("purged %d expired grant artefacts", removed)
        except Exception:
            log.exception("purging expired artefacts failed; will retry")
        await asyncio.sleep(every)


def create_app(ctx: ServerContext, *, close_store: bool = False) -> ASGIApp:
    routes: list[BaseRoute] = [
        *_discovery_routes(ctx),
        *approval_links.routes(ctx),
        *authorize.routes(ctx),
        *token.routes(ctx),
        *ciba.routes(ctx),
        *introspection.routes(ctx),
        *dcr_endpoints.routes(ctx),
        *approvals_web.routes(ctx),
        *trust_web.routes(ctx),
        *ops_http.routes(ctx),
        *agentauth_routes(ctx),
        *dashboard.routes(ctx),
    ]
    # x402 facilitator under /x402/ (authgate.x402.facilitator); its chain is built on first use.
    facilitator = None
    if ctx.settings.x402_facilitator:
        from authgate.x402.facilitator.mount import LazyFacilitator

        facilitator = LazyFacilitator(ctx.settings, ctx.store, ctx.clock,
                                      on_settle=lambda net, outcome: ctx.metrics.settlements.labels(net, outcome).inc())
        routes.append(Mount("/x402", app=facilitator))
    # The route-policy gateway (docs/gateway.md) answers every path no server route does.
    gateway = None
    if ctx.settings.gateway_config:
        from authgate.gateway.config import build_gateway, load_gateway_config
        from authgate.policy.model import PolicyError

        try:
            gateway = build_gateway(load_gateway_config(ctx.settings.gateway_config), server=ctx,
                                    metrics=ctx.metrics, standalone=False)
        except PolicyError as exc:
            raise ConfigError(str(exc)) from None

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        if ctx.settings.auto_approve:
            log.warning("AUTO-APPROVE IS ON: authorization requests are approved as %r with no person. "
                        "Development only.", ctx.settings.auto_approve_subject)
        janitor = asyncio.create_task(_purge_expired(ctx))
        if gateway is not None and gateway.reload_on_signal():
            log.info("SIGHUP reloads the gateway file %s", ctx.settings.gateway_config)
        try:
            yield
        finally:
            janitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await janitor
            # Let approval deliveries already under way finish (bounded) before the store closes.
            drain = getattr(ctx.approvals.notifier, "drain", None)
            if drain is not None:
                await drain(10.0)
            if facilitator is not None:
                await facilitator.aclose()
            if gateway is not None:
                await gateway.aclose()
            if ctx.redis is not None:
                await ctx.redis.aclose()
            if close_store:
                await ctx.store.close()

    starlette = Starlette(routes=routes, lifespan=lifespan, exception_handlers={405: _method_not_allowed})
    if gateway is not None:
        starlette.router.default = gateway
    app: ASGIApp = ops_http.Observed(starlette, ctx.metrics, lambda: ops_http.route_templates(starlette.routes))
    if ctx.settings.auto_approve:
        app = DevModeHeader(app)
    return app


def factory() -> ASGIApp:
    """``uvicorn authgate.app:factory --factory``: what each ``authgate serve --workers N`` process runs.

    Settings come from ``AUTHGATE_CONFIG`` and ``AUTHGATE_*`` (the CLI puts its flags there); the context is built
    at lifespan start, inside the worker's own event loop, so no connection is shared across processes."""
    from authgate.cli import configure_logging
    from authgate.config import load_settings

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    return _WorkerApp(settings)


class _WorkerApp:
    """Builds the real app on ``lifespan.startup`` and hands it the rest of the lifespan and every request."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" and self.app is None:
            startup = await receive()
            try:
                self.app = create_app(await build_context(self.settings), close_store=True)
            except Exception as exc:
                log.exception("worker start-up failed")
                await send({"type": "lifespan.startup.failed", "message": exc.__class__.__name__})
                return
            replayed = False

            async def receive_again() -> Message:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return startup
                return await receive()

            await self.app(scope, receive_again, send)
            return
        if self.app is None:  # a request before start-up finished: uvicorn never does this
            raise RuntimeError("authgate worker not started")
        await self.app(scope, receive, send)
