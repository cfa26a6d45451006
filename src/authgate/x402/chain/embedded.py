"""The embedded chain: an in-process EVM (:class:`~authgate.x402.chain.node.LocalNode`) behind the
:class:`~authgate.x402.chain.base.Chain` interface. The default, because it works offline.

py-evm is synchronous and CPU-bound, so every request runs in a worker thread (the node's own lock serialises
them) and the event loop stays free. Reads (``eth_call``: simulations, balances, authorization state) go to the
node's py-evm reader as bytes (:meth:`LocalNode.call`), skipping the JSON-RPC wire format; everything else
speaks JSON-RPC to the node like any other client. Transactions are mined at once, so a receipt is there as soon as
``submit_transfer`` returns. Start-up (genesis + TestUSDC deployment) takes about 0.07 s on the 2-core box,
after about 2 s of importing web3, eth-tester and py-evm once per process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from authgate.clock import Clock
from authgate.x402 import localchain
from authgate.x402.chain.base import ChainUnavailable
from authgate.x402.chain.node import DEFAULT_FUNDING, LocalNode, RpcError
from authgate.x402.chain.rpcchain import NodeError, RpcChain


class EmbeddedChain(RpcChain):
    """TestUSDC at ``localchain.TOKEN_ADDRESS`` on ``localchain.NETWORK``; the facilitator account pays gas."""

    def __init__(
        self,
        *,
        gas_limit: int = 500_000,
        clock: Clock | Callable[[], float] = time.time,
        node: LocalNode | None = None,
    ) -> None:
        self.node = node or LocalNode(clock=clock)
        super().__init__(
            self._request,
            chain_id=localchain.CHAIN_ID,
            facilitator_key=localchain.FACILITATOR_KEY,
            gas_limit=gas_limit,
            poll_interval=0.01,
        )
        self.token_address = localchain.TOKEN_ADDRESS
        self.token_name = localchain.TOKEN_NAME
        self.token_version = localchain.TOKEN_VERSION

    async def _request(self, method: str, params: list[Any]) -> Any:
        try:
            return await asyncio.to_thread(self.node.request, method, params)
        except RpcError as exc:
            raise NodeError(exc.code, exc.message, exc.data) from None
        except Exception as exc:  # a bug in the node must not look like a revert
            raise ChainUnavailable(f"embedded node failed: {type(exc).__name__}") from exc

    async def _call(self, to: str, data: bytes, *, sender: str | None = None) -> bytes:
        """``eth_call`` straight into the node's py-evm reader: same answers and errors as over JSON-RPC, without
        encoding the call and its result as hex strings and back."""
        try:
            return await asyncio.to_thread(self.node.call, to, data, sender=sender or self.facilitator_address)
        except RpcError as exc:
            raise NodeError(exc.code, exc.message, exc.data) from None
        except Exception as exc:
            raise ChainUnavailable(f"embedded node failed: {type(exc).__name__}") from exc

    async def mint(self, address: str, amount: int) -> str:
        """Mint ``amount`` atomic units (6 decimals) of test USDC to ``address``; the tx hash."""
        return await asyncio.to_thread(self.node.mint, address, amount)

    async def fund_eth(self, address: str, wei: int = DEFAULT_FUNDING) -> str:
        """Send gas money to ``address`` (e.g. a payer who wants to cancel an authorization); the tx hash."""
        return await asyncio.to_thread(self.node.fund_eth, address, wei)
