"""The facilitator as part of a server process: built from settings on first use, served under a prefix.

Building the chain is deferred to the first facilitator request (or :meth:`LazyFacilitator.get`): the embedded
chain imports web3/eth-tester/py-evm (about 2 s) and deploys its token, which a server that never sees an x402
request should not pay for at start-up. The build runs in a worker thread so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from authgate.clock import Clock
from authgate.config import Settings
from authgate.store import Store
from authgate.x402.chain import Chain, build_chain
from authgate.x402.facilitator.http import create_facilitator_app
from authgate.x402.facilitator.service import Facilitator

log = logging.getLogger("authgate.x402.facilitator")


class LazyFacilitator:
    """One facilitator per process over the chain ``settings`` describe and the server's store."""

    def __init__(self, settings: Settings, store: Store, clock: Clock | None = None,
                 on_settle: Callable[[str, str], None] | None = None) -> None:
        self.settings = settings
        self.on_settle = on_settle
        self.store = store
        self.clock = clock
        self._lock = asyncio.Lock()
        self._facilitator: Facilitator | None = None
        self._chain: Chain | None = None
        self._app: ASGIApp | None = None

    async def get(self) -> Facilitator:
        if self._facilitator is None:
            async with self._lock:
                if self._facilitator is None:
                    chain = await asyncio.to_thread(build_chain, self.settings, self.clock)
                    self._chain = chain
                    self._facilitator = Facilitator(
                        {chain.network: chain}, self.store, clock=self.clock,
                        settle_timeout=float(self.settings.x402_settle_timeout),
                        lease_seconds=self.settings.x402_settle_lease, on_settle=self.on_settle,
                    )
                    log.info("x402 facilitator ready on %s (signer %s)", chain.network, chain.facilitator_address)
        return self._facilitator

    async def aclose(self) -> None:
        if self._chain is not None:
            await self._chain.aclose()
            self._chain = None
            self._facilitator = None
            self._app = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry: the facilitator API at this app's root."""
        if scope["type"] != "http":
            return
        if self._app is None:
            try:
                facilitator = await self.get()
            except Exception as exc:  # misconfigured or unreachable chain: a clear 503, never a traceback
                log.error("x402 facilitator unavailable: %s", exc.__class__.__name__)
                body = json.dumps({"error": "temporarily_unavailable",
                                   "error_description": "the facilitator's chain is not available"}).encode()
                await send({"type": "http.response.start", "status": 503,
                            "headers": [(b"content-type", b"application/json"), (b"retry-after", b"30")]})
                await send({"type": "http.response.body", "body": body})
                return
            self._app = create_facilitator_app(facilitator, token=self.settings.x402_facilitator_token or None)
        await self._app(scope, receive, send)
