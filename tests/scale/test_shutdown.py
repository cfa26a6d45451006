"""Graceful shutdown finishes an in-flight settlement (issue #9 item 1): SIGTERM reaches ``authgate serve`` (and
``authgate facilitator``) while a ``/settle`` waits for its block on ``authgate devchain --block-time``; the
server stops accepting connections, still answers the settle 200 with its transaction once the block comes, the
ledger says ``settled`` with that transaction, and the process exits cleanly."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from authgate.config import to_sqlalchemy_url
from authgate.store import Store
from authgate.x402 import localchain
from authgate.x402.eip3009 import ExactEvmPayload
from authgate.x402.wire import FacilitatorRequest, PaymentPayload, SettleResponse
from tests.scale.cluster import Cluster, figure
from tests.scale.test_crash import _facilitator_env, _Node, _until
from tests.x402.facilitator_support import pay, requirements
from tests.x402.test_chain_suite import devchain_process

PAYER = "shutdown-payer"
AMOUNT = 1_000
#: Long enough for a settle to be submitted and SIGTERM sent inside one block (the request starts right after
#: a block was mined), short for CI.
BLOCK_TIME = 1.0


@pytest.fixture(scope="module")
def slow_chain() -> Iterator[str]:
    """One devchain with slow blocks for both variants (each has its own database and payment)."""
    with devchain_process("--block-time", str(BLOCK_TIME), "--fund", f"{PAYER}=1") as rpc:
        yield rpc


async def _listening(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True


async def _scenario(c: Cluster, rpc: str, settle_path: str, command: str) -> dict[str, str]:
    """Settle a first payment to learn when a block is mined, a second right after it; SIGTERM while the second
    waits in the mempool. The nonce → transaction of both."""
    req = requirements(AMOUNT, timeout=600)
    first, second = (pay(localchain.label_key(PAYER), req) for _ in range(2))
    nonces = ["0x" + ExactEvmPayload.from_dict(p.payload).authorization.nonce.hex() for p in (first, second)]
    async with httpx.AsyncClient(timeout=60) as http:
        node = _Node(http, rpc)

        def settle(payment: PaymentPayload) -> asyncio.Future[httpx.Response]:
            return asyncio.ensure_future(http.post(c.urls[0] + settle_path, content=FacilitatorRequest(
                payment, req).to_json(), headers={"Content-Type": "application/json"}))

        async def submitted(count: int) -> bool:
            return await node.sent("pending") >= count

        async def mined(count: int) -> bool:
            return await node.sent() >= count

        # Blocks come on the devchain's own clock: the first payment's block tells us when one was just mined.
        base = await node.sent()
        warm_up = settle(first)
        await _until(lambda: submitted(base + 1), "the first settlement in the mempool", seconds=30)
        await _until(lambda: mined(base + 1), "its block")
        started = time.monotonic()
        in_flight = settle(second)
        await _until(lambda: submitted(base + 2), "the second settlement in the mempool", seconds=30)
        took = time.monotonic() - started
        c.procs[0].send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        assert await node.waiting() == 1, f"its block came before SIGTERM ({took:.2f} s); nothing was tested"
        assert not in_flight.done(), "answered before SIGTERM; nothing was tested"

        async def closed() -> bool:
            return not await _listening(c.ports[0])

        await _until(closed, "the server to stop accepting connections", seconds=10)
        assert not in_flight.done()  # shutting down, the settlement still in flight
        answers = [await warm_up, await in_flight]
        after_signal = time.monotonic() - signalled
        hashes: dict[str, str] = {}
        for nonce, answer in zip(nonces, answers, strict=True):
            assert answer.status_code == 200, answer.text
            receipt = SettleResponse.from_json(answer.content)
            assert receipt.success and receipt.payer, receipt
            tx = receipt.transaction.lower()
            assert await node.status(tx) == 1 and await node.users_of(receipt.payer, nonce) == [tx]
            hashes[nonce] = tx
        assert after_signal < 2 * BLOCK_TIME + 5, after_signal
    figure(f"graceful shutdown ({command}): settlement submitted {took:.2f} s after a block, SIGTERM then, "
           f"answered 200 with its transaction {after_signal:.2f} s later (block time {BLOCK_TIME:g} s)")
    return hashes


@pytest.mark.parametrize(("command", "health", "settle_path"), [
    ("serve", "/x402/supported", "/x402/settle"),
    ("facilitator", "/supported", "/settle"),
])
def test_sigterm_finishes_a_settlement_waiting_for_its_block(tmp_path: Path, slow_chain: str, command: str,
                                                             health: str, settle_path: str) -> None:
    database = f"sqlite:///{tmp_path / 'authgate.db'}"
    env = _facilitator_env(tmp_path, database, slow_chain) | {"AUTHGATE_SHUTDOWN_TIMEOUT": "30"}
    c = Cluster(env, 1, command=command, health=health)  # the health check builds the chain, too
    c.start()
    try:
        hashes = asyncio.run(_scenario(c, slow_chain, settle_path, command))
        c.procs[0].wait(timeout=30)  # it exits by itself: no second signal
    finally:
        outputs = c.stop()
    # uvicorn re-raises the SIGTERM it deferred once the shutdown (lifespan included) is complete.
    assert c.procs[0].returncode in (0, -signal.SIGTERM), outputs
    assert not any("Traceback" in out for out in outputs), outputs

    async def ledger() -> None:
        store = await Store.open(to_sqlalchemy_url(database), run_migrations=False)
        try:
            rows = await store.payments.list()
        finally:
            await store.close()
        assert {row.nonce: (row.status, (row.tx_hash or "").lower()) for row in rows} == {
            nonce: ("settled", tx) for nonce, tx in hashes.items()}

    asyncio.run(ledger())
