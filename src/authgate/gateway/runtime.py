"""The running gateway: one ASGI app whose configuration can be swapped while it serves.

Each configuration is built into a *generation* (policy middleware, proxy and their HTTP clients). A request
is served from start to end by the generation current when it arrived, so a reload never changes the policy,
the upstream or the identity secret under a request in flight; a replaced generation's clients are closed
once its last request has finished (an SSE stream may keep it for hours).

:meth:`GatewayApp.reload` re-reads (or takes) a configuration, builds it — every check of start-up, the
operations paths included — and only then swaps it in: an invalid file leaves the running configuration
untouched and says why. ``authgate gateway`` calls it on SIGHUP (:meth:`GatewayApp.reload_on_signal`).

What must outlive a generation lives in :class:`Shared`, made once per app: the metrics registry, the Agent
Auth replay cache (a fresh one would accept again a signed request seen just before the reload), the x402
paywall store and sign-in key (payment ids, paid sign-ins, used sign-in nonces), the resource-token key
made at start-up when the file names none (tokens handed out before the reload keep verifying), and the
``[trust]`` databases opened by URL (:class:`~authgate.gateway.trust.TrustDatabases`: a reload naming the same
database keeps its connection pool and kill list; one no generation uses any more is closed with the last
generation that did). Inside ``authgate serve`` the trust store, kill switch and approvals are the server's,
shared by every generation and never closed by the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Receive, Scope, Send

from authgate.ops.http import Observed
from authgate.ops.metrics import Metrics
from authgate.policy.model import PolicyError

if TYPE_CHECKING:
    from joserfc.jwk import OKPKey

    from authgate.agentauth.replay import MemoryReplayCache
    from authgate.gateway.config import GatewayConfig
    from authgate.gateway.trust import TrustDatabases
    from authgate.x402.paywall_store import MemoryPaywallStore

logger = logging.getLogger("authgate.gateway")


class _Clock:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock

    def now(self) -> float:
        return self._clock()


@dataclass
class Shared:
    """State every generation of one gateway uses (see the module docstring)."""

    metrics: Metrics
    clock: Callable[[], float] = time.time
    siwx_key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    _replay: MemoryReplayCache | None = field(default=None, repr=False)
    _paywall_store: MemoryPaywallStore | None = field(default=None, repr=False)
    _resource_key: tuple[str, OKPKey] | None = field(default=None, repr=False)
    _trust_databases: TrustDatabases | None = field(default=None, repr=False)

    def replay_cache(self) -> MemoryReplayCache:
        if self._replay is None:
            from authgate.agentauth.replay import MemoryReplayCache

            self._replay = MemoryReplayCache(_Clock(self.clock))
        return self._replay

    def paywall_store(self) -> MemoryPaywallStore:
        if self._paywall_store is None:
            from authgate.x402.paywall_store import MemoryPaywallStore

            self._paywall_store = MemoryPaywallStore(self.clock)
        return self._paywall_store

    def resource_key(self) -> tuple[str, OKPKey]:
        """The key signing resource tokens when the file names none: made once, kept across reloads."""
        if self._resource_key is None:
            from joserfc.jwk import OKPKey

            kid = "gw-" + secrets.token_hex(4)
            self._resource_key = (kid, OKPKey.generate_key("Ed25519", parameters={"kid": kid, "alg": "Ed25519"},
                                                           private=True))
        return self._resource_key

    def trust_databases(self) -> TrustDatabases:
        """The ``[trust]`` databases, opened by URL and shared by the generations that name them."""
        if self._trust_databases is None:
            from authgate.gateway.trust import TrustDatabases

            self._trust_databases = TrustDatabases(self.clock)
        return self._trust_databases

    async def aclose(self) -> None:
        """Close what is left once every generation is closed (a trust database only a failed build opened)."""
        if self._trust_databases is not None:
            await self._trust_databases.aclose()


@dataclass(eq=False)
class Generation:
    """One built configuration: the app serving it and what closes its clients."""

    config: GatewayConfig
    app: ASGIApp
    closers: list[Callable[[], Any]]
    #: The policy middleware in front of the proxy (``app`` may wrap it in the operations endpoints).
    enforcer: ASGIApp | None = None
    active: int = 0
    retired: bool = False
    closed: bool = False

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        for close in self.closers:
            try:
                await close()
            except Exception as exc:  # one client failing to close must not keep the others open
                logger.warning("closing a gateway client failed: %s", exc.__class__.__name__)


Build = Callable[["GatewayConfig"], Generation]


class GatewayApp:
    """The gateway as one ASGI app (see the module docstring). ``observe``: give every request an ID, count it
    and write its access line (the standalone gateway; ``authgate serve`` does that itself for everything it
    serves). ``shared``: the :class:`Shared` state of its generations, closed after the last of them."""

    def __init__(self, build: Build, config: GatewayConfig, *, metrics: Metrics, observe: bool = True,
                 shared: Shared | None = None) -> None:
        self._build = build
        self._shared = shared
        self._current = build(config)
        self.metrics = metrics
        self.generation = 1
        self._lock = asyncio.Lock()
        self._retired: list[Generation] = []
        self._closing: set[asyncio.Task[Any]] = set()
        self._signals: list[tuple[asyncio.AbstractEventLoop, int]] = []
        self._entry: ASGIApp = Observed(self._dispatch, metrics, dict, log_path=True) if observe else self._dispatch
        metrics.config_reload_ok.set(1)

    @property
    def config(self) -> GatewayConfig:
        """The configuration new requests are served with."""
        return self._current.config

    @property
    def app(self) -> ASGIApp:
        """The current generation's policy middleware (in front of the proxy)."""
        return self._current.enforcer or self._current.app

    # -- reload -----------------------------------------------------------------------------------------------

    async def reload(self, config: GatewayConfig | None = None) -> GatewayConfig:
        """Swap in ``config``, or the file the running configuration came from re-read, for new requests.

        Raises :class:`~authgate.policy.model.PolicyError` (the same message as ``--check``) and keeps the
        running configuration when the new one cannot be read, validated or built. Reloads are serialised."""
        async with self._lock:
            try:
                if config is None:
                    from authgate.gateway.config import load_gateway_config

                    config = await asyncio.to_thread(load_gateway_config, self._current.config.source)
                fresh = self._build(config)
            except (PolicyError, ValueError, OSError) as exc:
                self.metrics.config_reloads.labels("rejected").inc()
                self.metrics.config_reload_ok.set(0)
                message = str(exc) if isinstance(exc, PolicyError) else f"{exc.__class__.__name__}: {exc}"
                raise PolicyError(message) from None
            old, self._current = self._current, fresh
            self.generation += 1
            self.metrics.config_reloads.labels("applied").inc()
            self.metrics.config_reload_ok.set(1)
            old.retired = True
            if old.active == 0:
                await old.aclose()
            else:
                self._retired.append(old)
            return fresh.config

    async def reload_logged(self) -> bool:
        """:meth:`reload`, its outcome logged (what a signal handler runs): True when the new file is in use."""
        try:
            config = await self.reload()
        except PolicyError as exc:
            logger.error("gateway reload failed, still serving the previous configuration: %s", exc)
            return False
        logger.info("gateway reloaded %s: %d routes, upstream %s (generation %d)", config.source,
                    len(config.policy.routes), config.upstream, self.generation)
        return True

    def reload_on_signal(self, signum: int = signal.SIGHUP) -> bool:
        """Reload on ``signum`` from now on (in the running event loop's thread: the main thread). False when
        the loop cannot take signal handlers (another thread, another platform)."""
        if threading.current_thread() is not threading.main_thread():
            return False
        loop = asyncio.get_running_loop()

        def received() -> None:
            logger.info("signal %s: reloading the gateway configuration", signal.Signals(signum).name)
            task = loop.create_task(self.reload_logged())
            self._closing.add(task)  # kept referenced until done
            task.add_done_callback(self._forget)

        try:
            loop.add_signal_handler(signum, received)
        except (NotImplementedError, RuntimeError, ValueError):
            return False
        self._signals.append((loop, signum))
        return True

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self._closing.discard(task)

    # -- ASGI -------------------------------------------------------------------------------------------------

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        generation = self._current
        generation.active += 1
        try:
            await generation.app(scope, receive, send)
        finally:
            generation.active -= 1
            if generation.retired and generation.active == 0 and not generation.closed:
                # Closed from its own task: the request's may be cancelled (client gone) at any await.
                task = asyncio.get_running_loop().create_task(generation.aclose())
                self._closing.add(task)
                task.add_done_callback(self._forget)
                with contextlib.suppress(ValueError):
                    self._retired.remove(generation)

    async def aclose(self) -> None:
        """Close every generation's clients (the lifespan's end) and stop listening for the reload signal."""
        for loop, signum in self._signals:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)
        self._signals.clear()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        for generation in [*self._retired, self._current]:
            await generation.aclose()
        self._retired.clear()
        if self._shared is not None:
            await self._shared.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self._entry(scope, receive, send)
            return
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return
