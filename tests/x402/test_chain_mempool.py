"""The local node's mempool mode (``LocalNode(mempool=True)``, ``authgate devchain --block-time``): transactions
wait for a block as on a real chain, a block takes all of them, chain time stays on the clock under load, and
the mempool refuses what a node's would (wrong nonce, no funds, garbage)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from eth_account import Account

from authgate.cli import main
from authgate.x402 import localchain
from authgate.x402.chain.embedded import EmbeddedChain
from authgate.x402.chain.node import LocalNode, RpcError
from tests.x402.test_chain_suite import TOKEN, authorize, funded_payer

FACILITATOR = Account.from_key(localchain.FACILITATOR_KEY)


class _Clock:
    """A settable clock for the node (chain time follows it forwards)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def chain() -> AsyncIterator[EmbeddedChain]:
    built = EmbeddedChain(node=LocalNode(mempool=True))
    yield built
    await built.aclose()


def _raw(nonce: int, *, value: int = 1, gas: int = 21_000, chain_id: int = localchain.CHAIN_ID,
         key: str = localchain.FACILITATOR_KEY) -> str:
    tx = {"type": 2, "chainId": chain_id, "nonce": nonce, "to": "0x" + "11" * 20, "value": value, "gas": gas,
          "maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9, "data": b""}
    return "0x" + bytes(Account.from_key(key).sign_transaction(tx).raw_transaction).hex()


def _count(node: LocalNode, address: str, block: str) -> int:
    return int(node.request("eth_getTransactionCount", [address, block]), 16)


async def test_transactions_wait_for_a_block_and_share_it(chain: EmbeddedChain) -> None:
    node = chain.node
    payer = await funded_payer(chain)  # the node's own set-up transactions are mined at once
    assert await chain.balance_of(TOKEN, payer.address) == 1_000_000
    payees = [Account.create().address for _ in range(5)]
    auths = [authorize(payer, payee, 100 + i) for i, payee in enumerate(payees)]
    hashes = await asyncio.gather(*(chain.submit_transfer(a) for a in auths))
    assert len(set(hashes)) == 5 and node.waiting == 5
    # Waiting: no receipt, nothing moved, but the pending nonce counts them and the transaction is known.
    assert all([await chain.wait_receipt(h, 0) is None for h in hashes])
    assert await chain.balance_of(TOKEN, payees[0]) == 0
    latest = _count(node, FACILITATOR.address, "latest")
    assert _count(node, FACILITATOR.address, "pending") == latest + 5
    seen = node.request("eth_getTransactionByHash", [hashes[0]])
    assert seen["hash"] == hashes[0] and seen["blockNumber"] is None and seen["from"] == FACILITATOR.address
    assert node.mine() == 5 and node.waiting == 0
    receipts = [await chain.wait_receipt(h, 0, expect=a) for h, a in zip(hashes, auths, strict=True)]
    assert all(r is not None and r.status == 1 and r.transfer_logged for r in receipts)
    assert len({r.block_number for r in receipts if r is not None}) == 1  # one block for all of them
    assert [await chain.balance_of(TOKEN, p) for p in payees] == [100 + i for i in range(5)]
    assert _count(node, FACILITATOR.address, "latest") == latest + 5
    assert node.mine() == 0  # nothing waiting: no block


async def test_a_second_submission_of_one_authorization_is_mined_reverted(chain: EmbeddedChain) -> None:
    """While the first transaction waits, the chain's state still says the nonce is unused, so a second
    submission passes simulation; once mined, the first pays and the second reverts: what a facilitator that
    resubmits after a crash must reconcile (the log names the first)."""
    payer = await funded_payer(chain)
    auth = authorize(payer, Account.create().address, 500)
    first = await chain.submit_transfer(auth)
    second = await chain.submit_transfer(auth)
    assert first != second and chain.node.waiting == 2
    chain.node.mine()
    one, two = await chain.wait_receipt(first, 0, expect=auth), await chain.wait_receipt(second, 0, expect=auth)
    assert one is not None and one.status == 1 and two is not None and two.status == 0
    assert await chain.find_authorization_tx(TOKEN, payer.address, auth.nonce) == first
    assert await chain.balance_of(TOKEN, payer.address) == 1_000_000 - 500


def test_chain_time_stays_on_the_clock_under_load() -> None:
    """One block per transaction runs the chain a second ahead per extra transaction; one block per period does
    not."""
    clock = _Clock(2_000_000_000)
    for mempool, ahead in ((False, 29), (True, 0)):
        node = LocalNode(clock=clock, mempool=mempool)
        clock.now += 10  # later than the set-up blocks
        start = _count(node, FACILITATOR.address, "pending")
        for i in range(30):
            node.request("eth_sendRawTransaction", [_raw(start + i)])
        node.mine()
        latest = node.request("eth_getBlockByNumber", ["latest", False])
        assert int(latest["timestamp"], 16) - int(clock.now) == ahead, mempool


def test_the_mempool_refuses_what_a_node_would() -> None:
    node = LocalNode(mempool=True)
    nonce = _count(node, FACILITATOR.address, "pending")
    first = node.request("eth_sendRawTransaction", [_raw(nonce)])
    assert node.request("eth_sendRawTransaction", [_raw(nonce)]) == first  # the same bytes: already known
    assert node.waiting == 1

    def refused(raw: object) -> RpcError:
        with pytest.raises(RpcError) as caught:
            node.request("eth_sendRawTransaction", [raw])
        return caught.value

    assert refused(_raw(nonce, value=2)).message.startswith("nonce too low")  # a replacement: refused
    assert refused(_raw(nonce + 5)).message.startswith("nonce too high")  # a gap: refused, not queued
    assert refused(_raw(nonce + 1, chain_id=1)).code in (-32000, -32602)
    broke = "0x" + "ab" * 32
    assert refused(_raw(0, key=broke)).message == "insufficient funds for gas * price + value"
    assert refused("0xdeadbeef").code == -32602
    assert refused("not hex").code == -32602
    assert refused(12).code == -32602
    assert node.waiting == 1
    assert node.mine() == 1


def test_cli_refuses_a_block_time_out_of_bounds(capsys: pytest.CaptureFixture[str]) -> None:
    for bad in ("0", "-1", "61"):
        assert main(["devchain", "--block-time", bad]) == 2
        assert "--block-time must be between" in capsys.readouterr().err


def test_a_hash_in_no_block_is_answered_without_scanning_the_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    """eth-tester finds an unknown hash by reading every block (0.4 s at 600 blocks), and every receipt poll for
    a waiting transaction asks for one: the node answers those itself."""
    node = LocalNode(mempool=True)
    mined = node.fund_eth("0x" + "33" * 20, 5)  # the node's own transactions are mined at once
    waiting = node.request("eth_sendRawTransaction", [_raw(_count(node, FACILITATOR.address, "pending"))])
    real = node._send

    def no_lookups(method: str, params: list[object]) -> object:
        assert method not in ("eth_getTransactionReceipt", "eth_getTransactionByHash"), method
        return real(method, params)

    monkeypatch.setattr(node, "_send", no_lookups)
    assert node.request("eth_getTransactionReceipt", ["0x" + "22" * 32]) is None
    assert node.request("eth_getTransactionByHash", ["0x" + "22" * 32]) is None
    assert node.request("eth_getTransactionReceipt", [waiting]) is None
    assert node.request("eth_getTransactionByHash", [waiting])["blockNumber"] is None
    monkeypatch.setattr(node, "_send", real)
    assert node.request("eth_getTransactionReceipt", [mined])["status"] == "0x1"
    node.mine()
    assert node.request("eth_getTransactionReceipt", [waiting])["status"] == "0x1"
    assert node.request("eth_getTransactionReceipt", [waiting.upper().replace("0X", "0x")])["status"] == "0x1"
