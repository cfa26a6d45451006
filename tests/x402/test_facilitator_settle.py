"""Settlement on the embedded chain: balances move, every payment is recorded, and one authorization is
submitted at most once (50 concurrent /settle, two facilitators on one database, crashes, lost receipts)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from authgate.clock import FrozenClock
from authgate.store import Store
from authgate.store import payments as ledger
from authgate.x402 import errors as e
from authgate.x402 import localchain
from authgate.x402.chain.base import ChainUnavailable, TransferAuthorization
from authgate.x402.chain.embedded import EmbeddedChain
from authgate.x402.chain.node import LocalNode
from authgate.x402.eip3009 import ExactEvmPayload
from authgate.x402.facilitator.http import create_facilitator_app
from authgate.x402.facilitator.service import Facilitator
from authgate.x402.wire import FacilitatorRequest, PaymentPayload, PaymentRequirements, SettleResponse

from .facilitator_support import PAY_TO, RESOURCE, new_payer, pay, requirements

TOKEN = localchain.TOKEN_ADDRESS


@pytest.fixture
async def chain() -> AsyncIterator[EmbeddedChain]:
    c = EmbeddedChain()
    yield c
    await c.aclose()


@pytest.fixture
async def payer(chain: EmbeddedChain) -> tuple[str, str]:
    key, address = new_payer()
    await chain.mint(address, 1_000_000)
    return key, address


async def _tx_count(chain: EmbeddedChain) -> int:
    return int(await asyncio.to_thread(
        chain.node.request, "eth_getTransactionCount", [chain.facilitator_address, "latest"]), 16)


def _transfer(p: PaymentPayload, req: PaymentRequirements) -> TransferAuthorization:
    evm = ExactEvmPayload.from_dict(p.payload)
    a = evm.authorization
    return TransferAuthorization(token=req.asset, from_=a.from_address, to=a.to, value=a.value,
                                 valid_after=a.valid_after, valid_before=a.valid_before, nonce=a.nonce,
                                 signature=evm.signature)


async def test_settlement_moves_balances_and_is_recorded(chain: EmbeddedChain, store: Store,
                                                         payer: tuple[str, str]) -> None:
    key, address = payer
    facilitator = Facilitator({localchain.NETWORK: chain}, store, settle_timeout=10)
    req = requirements(12_345)
    p = pay(key, req)
    payee_before = await chain.balance_of(TOKEN, PAY_TO)
    result = await facilitator.settle(p, req)
    assert result.success and result.payer == address and result.network == localchain.NETWORK
    assert result.transaction.startswith("0x") and len(result.transaction) == 66
    assert await chain.balance_of(TOKEN, address) == 1_000_000 - 12_345
    assert await chain.balance_of(TOKEN, PAY_TO) == payee_before + 12_345
    [row] = await store.payments.list()
    assert (row.status, row.payer, row.payee, row.amount, row.tx_hash, row.resource_url) == (
        "settled", address.lower(), PAY_TO.lower(), "12345", result.transaction, RESOURCE.url)
    assert row.settled_at is not None
    assert await store.payments.list(status="failed") == []
    assert await store.payments.list(payer=address.upper().replace("0X", "0x")) == [row]


async def test_fifty_concurrent_settles_make_one_transfer(chain: EmbeddedChain, store: Store,
                                                          payer: tuple[str, str]) -> None:
    key, address = payer
    app = create_facilitator_app(Facilitator({localchain.NETWORK: chain}, store, settle_timeout=30))
    req = requirements()
    body = FacilitatorRequest(pay(key, req), req).to_json()
    count_before = await _tx_count(chain)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as http:
        responses = await asyncio.gather(*[http.post("/settle", content=body) for _ in range(50)])
    assert {r.status_code for r in responses} == {200}
    results = [SettleResponse.from_json(r.content) for r in responses]
    assert all(r.success for r in results), {r.error_reason for r in results}
    assert len({r.transaction for r in results}) == 1
    assert len({r.content for r in responses}) == 1  # the same receipt, byte for byte
    assert await _tx_count(chain) == count_before + 1
    assert await chain.balance_of(TOKEN, address) == 1_000_000 - 10_000
    assert len(await store.payments.list()) == 1


async def test_two_facilitators_sharing_the_database(chain: EmbeddedChain, store: Store,
                                                     payer: tuple[str, str]) -> None:
    """Two instances (no shared in-process lock) racing on one authorization: the reservation decides."""
    key, address = payer
    a = Facilitator({localchain.NETWORK: chain}, store, settle_timeout=30)
    b = Facilitator({localchain.NETWORK: chain}, store, settle_timeout=30)
    req = requirements()
    p = pay(key, req)
    count_before = await _tx_count(chain)
    results = await asyncio.gather(*[(a if i % 2 else b).settle(p, req) for i in range(20)])
    assert all(r.success for r in results) and len({r.transaction for r in results}) == 1
    assert await _tx_count(chain) == count_before + 1
    assert await chain.balance_of(TOKEN, address) == 1_000_000 - 10_000


class _Flaky:
    """The embedded chain with scripted faults; everything else delegates."""

    def __init__(self, inner: EmbeddedChain) -> None:
        self.inner = inner
        self.lose_receipts = 0
        self.fail_after_submit = False
        self.unreachable = 0
        self.network = inner.network
        self.facilitator_address = inner.facilitator_address

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def wait_receipt(self, tx_hash: str, timeout: float, expect: Any = None) -> Any:  # noqa: ASYNC109
        if self.lose_receipts:
            self.lose_receipts -= 1
            return None
        return await self.inner.wait_receipt(tx_hash, timeout, expect)

    async def submit_transfer(self, auth: TransferAuthorization) -> str:
        if self.unreachable:
            self.unreachable -= 1
            raise ChainUnavailable("node unreachable")  # before signing: nothing was sent
        tx = await self.inner.submit_transfer(auth)
        if self.fail_after_submit:
            self.fail_after_submit = False
            raise ChainUnavailable("connection reset after the node accepted the transaction", tx_hash=tx)
        return tx


async def test_receipt_timeout_answers_settlement_pending_then_the_same_transaction(
        chain: EmbeddedChain, store: Store, payer: tuple[str, str]) -> None:
    flaky = _Flaky(chain)
    facilitator = Facilitator({localchain.NETWORK: flaky}, store, settle_timeout=5)  # type: ignore[dict-item]
    req = requirements()
    p = pay(payer[0], req)
    flaky.lose_receipts = 1
    first = await facilitator.settle(p, req)
    assert (first.success, first.error_reason) == (False, e.SETTLEMENT_PENDING)
    assert first.transaction.startswith("0x")
    assert [row.status for row in await store.payments.list()] == ["submitted"]
    count = await _tx_count(chain)
    second = await facilitator.settle(p, req)  # the resource server's single retry
    assert (second.success, second.transaction) == (True, first.transaction)
    assert await _tx_count(chain) == count  # nothing submitted again
    assert [row.status for row in await store.payments.list()] == ["settled"]


async def test_unknown_submission_outcome_is_reconciled_not_resubmitted(
        chain: EmbeddedChain, store: Store, clock: FrozenClock, payer: tuple[str, str]) -> None:
    flaky = _Flaky(chain)
    facilitator = Facilitator({localchain.NETWORK: flaky}, store, settle_timeout=2,  # type: ignore[dict-item]
                              poll_interval=0.01)
    req = requirements()
    p = pay(payer[0], req)
    flaky.fail_after_submit = True
    first = await facilitator.settle(p, req)
    assert (first.success, first.error_reason) == (False, e.SETTLEMENT_PENDING)
    assert first.transaction.startswith("0x")
    assert [row.status for row in await store.payments.list()] == ["pending"]
    count = await _tx_count(chain)
    # within the lease another settle waits and answers pending: it does not resubmit
    waiting = await facilitator.settle(p, req)
    assert (waiting.success, waiting.error_reason) == (False, e.SETTLEMENT_PENDING)
    clock.advance(120)  # the owner's lease runs out: the next settle reconciles from the chain
    later = await facilitator.settle(p, req)
    assert (later.success, later.transaction) == (True, first.transaction)
    assert await _tx_count(chain) == count
    assert await chain.balance_of(TOKEN, payer[1]) == 1_000_000 - 10_000


async def test_node_unreachable_before_sending_lets_the_retry_go_at_once(
        chain: EmbeddedChain, store: Store, payer: tuple[str, str]) -> None:
    flaky = _Flaky(chain)
    facilitator = Facilitator({localchain.NETWORK: flaky}, store, settle_timeout=5)  # type: ignore[dict-item]
    req = requirements()
    p = pay(payer[0], req)
    flaky.unreachable = 1
    count = await _tx_count(chain)
    first = await facilitator.settle(p, req)
    assert (first.success, first.error_reason, first.transaction) == (False, e.SETTLEMENT_PENDING, "")
    assert await _tx_count(chain) == count
    second = await facilitator.settle(p, req)  # no lease to wait out: nothing was sent
    assert second.success
    assert await _tx_count(chain) == count + 1


async def test_crash_after_reserve_before_submit_is_taken_over(
        chain: EmbeddedChain, store: Store, clock: FrozenClock, payer: tuple[str, str]) -> None:
    facilitator = Facilitator({localchain.NETWORK: chain}, store, settle_timeout=5, poll_interval=0.01)
    req = requirements(timeout=600)
    p = pay(payer[0], req)
    await _reserve_as_dead_owner(store, p, req, clock)
    count = await _tx_count(chain)
    clock.advance(120)
    result = await facilitator.settle(p, req)
    assert result.success
    assert await _tx_count(chain) == count + 1
    assert await chain.balance_of(TOKEN, payer[1]) == 1_000_000 - 10_000


async def test_crash_after_submit_before_recording_uses_the_chain_transaction(
        chain: EmbeddedChain, store: Store, clock: FrozenClock, payer: tuple[str, str]) -> None:
    facilitator = Facilitator({localchain.NETWORK: chain}, store, settle_timeout=5, poll_interval=0.01)
    req = requirements()
    p = pay(payer[0], req)
    await _reserve_as_dead_owner(store, p, req, clock)
    tx = await chain.submit_transfer(_transfer(p, req))  # the dead owner's transaction did go out
    count = await _tx_count(chain)
    clock.advance(120)
    result = await facilitator.settle(p, req)
    assert (result.success, result.transaction) == (True, tx)
    assert await _tx_count(chain) == count
    assert await chain.balance_of(TOKEN, payer[1]) == 1_000_000 - 10_000
    assert [row.status for row in await store.payments.list()] == ["settled"]


async def test_dropped_transaction_is_failed_once_the_authorization_expired(
        chain: EmbeddedChain, store: Store, clock: FrozenClock, payer: tuple[str, str]) -> None:
    facilitator = Facilitator({localchain.NETWORK: chain}, store, settle_timeout=0.5, poll_interval=0.01)
    req = requirements()
    p = pay(payer[0], req)
    await _reserve_as_dead_owner(store, p, req, clock)
    [row] = await store.payments.list()
    assert await store.payments.mark_submitted(row.id, "deadbeef", "0x" + "12" * 32)  # never mined
    pending = await facilitator.settle(p, req)
    assert (pending.success, pending.error_reason) == (False, e.SETTLEMENT_PENDING)
    clock.advance(60 + 300)
    result = await facilitator.settle(p, req)
    assert (result.success, result.error_reason) == (False, e.VALID_BEFORE)
    assert [r.status for r in await store.payments.list()] == ["failed"]
    assert await chain.balance_of(TOKEN, payer[1]) == 1_000_000


async def _reserve_as_dead_owner(store: Store, p: PaymentPayload, req: PaymentRequirements,
                                 clock: FrozenClock) -> None:
    evm = ExactEvmPayload.from_dict(p.payload)
    a = evm.authorization
    digest = a.digest(req.extra["name"], req.extra["version"], localchain.CHAIN_ID, req.asset)
    assert await store.payments.reserve(ledger.NewPayment(
        id="dead" * 8, network=req.network, asset=req.asset.lower(), payer=a.from_address.lower(),
        nonce="0x" + a.nonce.hex(), payee=a.to.lower(), amount=str(a.value), scheme="exact", resource_url=None,
        digest="0x" + digest.hex(), valid_before=a.valid_before + 1000, owner="deadbeef",
        lease_until=int(clock.now()) + 60,
    ))


async def test_takeover_resubmission_that_loses_to_the_dead_owners_mempool_transaction_is_settled(
        store: Store, clock: FrozenClock) -> None:
    """The owner broadcast its transaction and died before recording the hash; the transaction waits in the
    mempool past the lease, so the retry finds the nonce unused, takes over and submits again. Both are mined,
    the first pays and the resubmission reverts: the payment is settled by the first, never recorded as failed
    while the money moved (it was, before the receipt's revert was reconciled with the chain)."""
    chain = EmbeddedChain(node=LocalNode(mempool=True))
    try:
        key, address = new_payer()
        await chain.mint(address, 1_000_000)
        facilitator = Facilitator({localchain.NETWORK: chain}, store, settle_timeout=30, poll_interval=0.01)
        req = requirements(timeout=600)
        p = pay(key, req)
        await _reserve_as_dead_owner(store, p, req, clock)
        dead_owners_tx = await chain.submit_transfer(_transfer(p, req))  # broadcast, never recorded
        assert await chain.wait_receipt(dead_owners_tx, 0) is None  # still waiting for a block
        clock.advance(120)  # the lease ran out

        async def block_once_both_wait() -> int:
            while chain.node.waiting < 2:  # noqa: ASYNC110 (the node has no event: poll its mempool)
                await asyncio.sleep(0.01)  # until the takeover's resubmission joined the dead owner's one
            return await asyncio.to_thread(chain.node.mine)

        miner = asyncio.ensure_future(block_once_both_wait())
        result = await facilitator.settle(p, req)
        assert await miner == 2
        assert (result.success, result.transaction, result.error_reason) == (True, dead_owners_tx, None)
        [row] = await store.payments.list()
        assert (row.status, row.tx_hash) == ("settled", dead_owners_tx)
        assert await chain.balance_of(TOKEN, address) == 1_000_000 - 10_000
        again = await facilitator.settle(p, req)  # and the agent's next retry hears the same
        assert (again.success, again.transaction) == (True, dead_owners_tx)
    finally:
        await chain.aclose()
