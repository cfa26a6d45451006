"""``authgate devchain``: the embedded chain served as a JSON-RPC node over HTTP.

For setups where several processes must see one chain: two authgate servers sharing PostgreSQL, or the official
x402 SDK's facilitator (``FacilitatorWeb3Signer(rpc_url=...)``) next to ours; with ``--block-time`` it keeps a
mempool and mines a block per period, like a real chain. Answers the methods web3 and the SDK
use (:data:`authgate.x402.chain.node.METHODS`), single calls or batches of up to 100; the body is capped at
:data:`MAX_BODY` bytes. It binds to loopback unless told otherwise: it is test money, but an open node still
burns CPU for anyone who finds it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from decimal import Decimal, InvalidOperation

from eth_utils.address import is_address, to_checksum_address
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from authgate.x402 import localchain
from authgate.x402.chain.node import DEFAULT_FUNDING, LocalNode

log = logging.getLogger(__name__)

MAX_BODY = 256 * 1024


def _error(code: int, message: str, status: int = 200) -> JSONResponse:
    return JSONResponse({"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}},
                        status_code=status)


def create_app(node: LocalNode) -> Starlette:
    """ASGI app: ``POST /`` takes JSON-RPC; ``GET /`` says what this is."""

    async def rpc(request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse({"node": "authgate devchain", "chainId": localchain.CHAIN_ID,
                                 "network": localchain.NETWORK, "token": localchain.TOKEN_ADDRESS})
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_BODY:
            return _error(-32600, f"request body exceeds {MAX_BODY} bytes", 413)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                return _error(-32600, f"request body exceeds {MAX_BODY} bytes", 413)
        try:
            payload = json.loads(body.decode("utf-8"))
        except (UnicodeError, ValueError, RecursionError):
            return _error(-32700, "parse error")
        answer = await asyncio.to_thread(node.handle, payload)
        if answer is None or answer == []:
            return Response(status_code=204)
        return JSONResponse(answer)

    return Starlette(routes=[Route("/", rpc, methods=["GET", "POST"])])


def parse_fund(spec: str) -> tuple[str, str, int]:
    """``label=amount`` or ``0xADDRESS=amount`` (amount in USDC, e.g. ``100`` or ``0.25``) ->
    (what was named, address, atomic units). ValueError with a readable message otherwise."""
    name, sep, amount_text = spec.partition("=")
    name = name.strip()
    if not sep or not name or len(name) > 100:
        raise ValueError(f"--fund wants label=amount, got {spec[:120]!r}")
    try:
        amount = Decimal(amount_text.strip())
    except InvalidOperation:
        raise ValueError(f"--fund amount must be a number of USDC, got {amount_text[:40]!r}") from None
    atomic = amount * 10**localchain.TOKEN_DECIMALS
    if not amount.is_finite() or amount < 0 or atomic != atomic.to_integral_value() or atomic >= 2**128:
        raise ValueError(f"--fund amount must be a non-negative USDC amount with at most 6 decimals: {amount_text!r}")
    if name.startswith("0x"):
        if not is_address(name):
            raise ValueError(f"--fund: {name!r} is not an address")
        address = str(to_checksum_address(name))
    else:
        address = localchain.label_address(name)
    return name, address, int(atomic)


def fund(node: LocalNode, specs: list[str]) -> list[tuple[str, str, int]]:
    """Mint test USDC (and send gas money) to each ``--fund`` account."""
    funded = [parse_fund(spec) for spec in specs]
    for _, address, atomic in funded:
        node.fund_eth(address, DEFAULT_FUNDING)
        if atomic:
            node.mint(address, atomic)
    return funded


async def mint_via_rpc(rpc_url: str, address: str, amount: int, *, wait: float = 30.0) -> str:
    """Mint ``amount`` atomic units of test USDC to ``address`` on a running devchain (for the demo and tests in
    other processes): a ``mint`` transaction signed with the public deployer key. The tx hash, once mined."""
    from authgate.x402.chain import contract
    from authgate.x402.chain.base import ChainError
    from authgate.x402.chain.jsonrpc import JsonRpcChain

    deployer = JsonRpcChain(rpc_url, chain_id=localchain.CHAIN_ID, facilitator_key=localchain.DEPLOYER_KEY,
                            token_address=localchain.TOKEN_ADDRESS, token_name=localchain.TOKEN_NAME,
                            token_version=localchain.TOKEN_VERSION, poll_interval=0.05)
    try:
        tx_hash = await deployer.send_transaction(localchain.TOKEN_ADDRESS, contract.mint(address, amount))
        receipt = await deployer.wait_receipt(tx_hash, wait)
        if receipt is None or receipt.status != 1:
            raise ChainError("mint failed")
        return tx_hash
    finally:
        await deployer.aclose()


#: Bounds of ``--block-time`` in seconds.
MIN_BLOCK_TIME, MAX_BLOCK_TIME = 0.05, 60.0


async def produce_blocks(node: LocalNode, block_time: float) -> None:
    """Mine the mempool every ``block_time`` seconds, for ever (cancel the task to stop)."""
    loop = asyncio.get_running_loop()
    next_block = loop.time() + block_time
    while True:
        await asyncio.sleep(max(0.0, next_block - loop.time()))
        next_block += block_time
        try:
            await asyncio.to_thread(node.mine)
        except Exception:  # a bug in mining must not stop block production silently
            log.exception("devchain: mining a block failed")


async def serve(host: str, port: int, specs: list[str], log_level: str = "warning",
                block_time: float | None = None) -> None:
    """Serve the node; with ``block_time``, transactions wait in a mempool and a block is mined every
    ``block_time`` seconds (like a real chain), else each transaction is mined at once."""
    import functools

    import uvicorn

    node = await asyncio.to_thread(functools.partial(LocalNode, mempool=block_time is not None))
    funded = await asyncio.to_thread(fund, node, specs)
    config = uvicorn.Config(create_app(node), host=host, port=port, log_level=log_level, access_log=False,
                            server_header=False, proxy_headers=False, log_config=None)
    server = uvicorn.Server(config)
    url_host = f"[{host}]" if ":" in host else host
    lines = [
        f"authgate devchain on http://{url_host}:{port}  (chain {localchain.CHAIN_ID}, {localchain.NETWORK})",
        f"  token TestUSDC ({localchain.TOKEN_NAME!r} v{localchain.TOKEN_VERSION}): {localchain.TOKEN_ADDRESS}",
        f"  facilitator (funded, key = localchain.FACILITATOR_KEY): {localchain.FACILITATOR}",
    ]
    lines += [f"  funded {name}: {address}  {Decimal(atomic) / 10**localchain.TOKEN_DECIMALS} USDC"
              for name, address, atomic in funded]
    lines.append(f"  blocks: every {block_time:g} s, transactions wait in a mempool" if block_time is not None
                 else "  blocks: one per transaction, mined at once")
    print("\n".join(lines), flush=True)
    producer = asyncio.create_task(produce_blocks(node, block_time)) if block_time is not None else None
    try:
        await server.serve()
    finally:
        if producer is not None:
            producer.cancel()


