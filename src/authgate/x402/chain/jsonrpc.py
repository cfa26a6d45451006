"""The JSON-RPC chain: any Ethereum node over HTTP (``authgate devchain`` in tests, Base Sepolia or Base in
production), through web3's :class:`~web3.AsyncHTTPProvider`.

The token address and its EIP-712 domain come from configuration; the facilitator key signs locally (the node
never sees it) and is never logged or shown in ``repr``. Before first use the node's ``eth_chainId`` is checked
against the configured network, so a URL pointing at the wrong chain fails loudly instead of settling there.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from web3 import AsyncHTTPProvider
from web3.types import RPCEndpoint

from authgate.x402.chain.base import ChainUnavailable
from authgate.x402.chain.rpcchain import NodeError, RpcChain

log = logging.getLogger(__name__)

#: Seconds one HTTP request to the node may take.
REQUEST_TIMEOUT = 15.0


class JsonRpcChain(RpcChain):
    def __init__(
        self,
        rpc_url: str,
        *,
        chain_id: int,
        facilitator_key: str,
        token_address: str,
        token_name: str,
        token_version: str,
        gas_limit: int = 500_000,
        poll_interval: float = 0.5,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        import aiohttp

        self._provider = AsyncHTTPProvider(
            rpc_url, request_kwargs={"timeout": aiohttp.ClientTimeout(total=request_timeout)},
            # Retries belong to the caller: a blind retry of eth_sendRawTransaction is harmless (same bytes, same
            # hash), but one policy in one place is easier to reason about.
            exception_retry_configuration=None,
        )
        super().__init__(self._request, chain_id=chain_id, facilitator_key=facilitator_key, gas_limit=gas_limit,
                         poll_interval=poll_interval)
        self.rpc_url = rpc_url
        self.token_address = token_address
        self.token_name = token_name
        self.token_version = token_version
        self._checked = False
        self._check_lock = asyncio.Lock()

    async def _raw(self, method: str, params: list[Any]) -> Any:
        try:
            response = await self._provider.make_request(RPCEndpoint(method), params)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # aiohttp, timeouts, HTTP status, undecodable JSON: no usable answer
            raise ChainUnavailable(f"JSON-RPC node unreachable or unusable ({type(exc).__name__})") from None
        if not isinstance(response, dict):
            raise ChainUnavailable("JSON-RPC node sent a malformed response")
        error = response.get("error")
        if error is not None:
            if not isinstance(error, dict):
                raise ChainUnavailable("JSON-RPC node sent a malformed error")
            code = error.get("code")
            raise NodeError(code if isinstance(code, int) else -32000, str(error.get("message", ""))[:500],
                            error.get("data"))
        if "result" not in response:
            raise ChainUnavailable("JSON-RPC node sent no result")
        return response["result"]

    async def _request(self, method: str, params: list[Any]) -> Any:
        if not self._checked:
            await self.check()
        return await self._raw(method, params)

    async def check(self) -> None:
        """Ask the node for its chain id once; :class:`ChainUnavailable` if it is another chain."""
        async with self._check_lock:
            if self._checked:
                return
            try:
                answer = await self._raw("eth_chainId", [])
            except NodeError as exc:
                raise ChainUnavailable(f"eth_chainId failed: {exc.message}"[:300]) from None
            try:
                chain_id = int(answer, 16) if isinstance(answer, str) else int(answer)
            except (TypeError, ValueError):
                raise ChainUnavailable("node sent a malformed chain id") from None
            if chain_id != self.chain_id:
                log.error("x402 JSON-RPC node is chain %s, configured network is %s", chain_id, self.network)
                raise ChainUnavailable(f"node is chain {chain_id}, expected {self.network}")
            self._checked = True

    async def aclose(self) -> None:
        await self._provider.disconnect()
