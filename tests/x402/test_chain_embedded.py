"""What only the embedded chain does: its fixed identity, the block clock that follows the injected clock,
minting reserved to the deployer, and the fast py-evm ``eth_call`` reader (same answers as eth-tester)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from authgate.x402 import localchain
from authgate.x402.chain import contract
from authgate.x402.chain.base import ChainError, TransferAuthorization
from authgate.x402.chain.embedded import EmbeddedChain
from authgate.x402.chain.node import LocalNode, RpcError
from tests.x402.test_chain_suite import authorize


async def test_token_is_where_localchain_says() -> None:
    chain = EmbeddedChain()
    assert chain.node.startup_seconds > 0
    assert chain.token_address == localchain.TOKEN_ADDRESS
    assert len(await chain.code_at(localchain.TOKEN_ADDRESS)) > 1000
    # Nobody but the deployer can mint: the facilitator's mint is mined as a failure and creates nothing.
    tx_hash = await chain.send_transaction(localchain.TOKEN_ADDRESS, contract.mint(localchain.FACILITATOR, 1))
    receipt = await chain.wait_receipt(tx_hash, 5)
    assert receipt is not None and receipt.status == 0 and not receipt.transfer_logged
    assert await chain.balance_of(localchain.TOKEN_ADDRESS, localchain.FACILITATOR) == 0
    await chain.aclose()


async def test_idle_chain_follows_the_clock() -> None:
    """No transaction for a while: simulations still judge validity windows at the clock's time."""
    now = [float(int(time.time()))]
    chain = EmbeddedChain(clock=lambda: now[0])
    payer = Account.create()
    await chain.mint(payer.address, 10_000)
    payee = Account.create().address
    auth = authorize(payer, payee, 100, valid_after=int(now[0]) + 100, valid_before=int(now[0]) + 200)
    assert await chain.simulate_transfer(auth) == "authorization is not yet valid"
    now[0] += 150
    assert await chain.simulate_transfer(auth) is None
    now[0] += 100
    assert await chain.simulate_transfer(auth) == "authorization is expired"
    with pytest.raises(ChainError, match="authorization is expired"):
        await chain.submit_transfer(auth)
    assert await chain.balance_of(localchain.TOKEN_ADDRESS, payee) == 0


async def test_contract_wallet_signs_through_erc1271() -> None:
    """A payer that is a contract: TestUSDC asks its isValidSignature (ERC-1271), in both overloads."""
    from eth_abi.abi import encode

    chain = EmbeddedChain()
    owner = Account.create()
    wallet_code = bytes.fromhex(contract.artifact("TestWallet")["bytecode"][2:]) + encode(["address"], [owner.address])
    wallet = await asyncio.to_thread(chain.node.deploy, wallet_code)
    await chain.mint(wallet, 50_000)
    payee = Account.create().address

    def wallet_authorization(value: int, signer: LocalAccount) -> TransferAuthorization:
        return authorize(signer, payee, value, from_address=wallet)

    good = wallet_authorization(10_000, owner)
    assert await chain.simulate_transfer(good) is None
    await chain.wait_receipt(await chain.submit_transfer(good), 5)
    assert await chain.balance_of(localchain.TOKEN_ADDRESS, payee) == 10_000

    stranger = wallet_authorization(10_000, Account.create())
    assert await chain.simulate_transfer(stranger) == "invalid signature"

    via_bytes = wallet_authorization(5_000, owner)
    head = [via_bytes.from_, via_bytes.to, via_bytes.value, via_bytes.valid_after, via_bytes.valid_before,
            via_bytes.nonce]
    data = contract.TRANSFER_WITH_AUTH_BYTES + encode(
        ["address", "address", "uint256", "uint256", "uint256", "bytes32", "bytes"], [*head, via_bytes.signature])
    receipt = await chain.wait_receipt(await chain.send_transaction(localchain.TOKEN_ADDRESS, data), 5)
    assert receipt is not None and receipt.status == 1 and receipt.transfer_logged
    assert await chain.balance_of(localchain.TOKEN_ADDRESS, payee) == 15_000
    await chain.aclose()


async def test_build_chain_follows_the_house_clock() -> None:
    """build_chain takes authgate's injectable Clock; moving it moves the embedded chain's time."""
    from authgate.clock import FrozenClock
    from authgate.config import Settings
    from authgate.x402.chain import build_chain

    clock = FrozenClock(start=float(int(time.time()) + 10))
    chain = build_chain(Settings().validate(), clock=clock)
    assert isinstance(chain, EmbeddedChain)
    payer = Account.create()
    await chain.mint(payer.address, 1_000)
    auth = authorize(payer, Account.create().address, 1, valid_before=int(clock.now()) + 60)
    assert await chain.simulate_transfer(auth) is None
    clock.advance(61)
    assert await chain.simulate_transfer(auth) == "authorization is expired"
    await chain.aclose()


def _slow_and_fast(node: LocalNode, params: list[Any]) -> tuple[Any, Any]:
    """The same ``eth_call`` through eth-tester (the fast reader disabled) and through the fast reader."""
    answers = []
    for fast in (False, True):
        if not fast:
            node._fast_call = lambda params: None  # type: ignore[method-assign]
        try:
            answers.append(("result", node.request("eth_call", params)))
        except RpcError as exc:
            answers.append(("error", exc.code, exc.message, exc.data))
        finally:
            if not fast:
                del node._fast_call  # back to the class's method
    return answers[0], answers[1]


def test_fast_eth_call_answers_exactly_what_eth_tester_answers() -> None:
    """The py-evm reader is a speed-up only: same return data, same revert texts and payloads, same errors;
    the state it ran against is left as it was."""
    node = LocalNode()
    payer, poor = Account.create(), Account.create()
    node.mint(payer.address, 50_000)
    payee = Account.create().address
    now = int(time.time())

    def call(data: bytes, to: str = localchain.TOKEN_ADDRESS) -> list[Any]:
        return [{"from": localchain.FACILITATOR, "to": to, "data": "0x" + data.hex()}, "latest"]

    def transfer(account: LocalAccount, **kw: Any) -> bytes:
        return contract.transfer_with_authorization(authorize(account, payee, 10_000, **kw))

    good = transfer(payer, valid_before=now + 600)
    cases = {
        "valid transfer": call(good),
        "insufficient balance": call(transfer(poor, valid_before=now + 600)),
        "expired": call(transfer(payer, valid_before=now - 5)),
        "not yet valid": call(transfer(payer, valid_after=now + 500, valid_before=now + 600)),
        "bad signature": call(good[:-40] + b"\x01" * 40),
        "unknown selector": call(b"\x12\x34\x56\x78"),
        "balanceOf": call(contract.balance_of(payer.address)),
        "name": call(contract.NAME),
        "no code there": call(b"\x00", to=payee),
        "zero-address sender": [{"to": localchain.TOKEN_ADDRESS, "data": "0x" + contract.NAME.hex()}, "latest"],
    }
    before = node.fast_calls
    for name, params in cases.items():
        slow, fast = _slow_and_fast(node, params)
        assert fast == slow, name
    assert node.fast_calls - before == len(cases)  # every case really took the fast path
    assert _slow_and_fast(node, call(good))[1] == ("result", "0x")  # the valid transfer was never applied
    assert int(node.request("eth_call", call(contract.balance_of(payer.address))), 16) == 50_000


def test_fast_eth_call_sees_each_new_block_and_leaves_odd_shapes_to_eth_tester() -> None:
    node = LocalNode()
    holder = Account.create().address
    read = [{"to": localchain.TOKEN_ADDRESS, "data": "0x" + contract.balance_of(holder).hex()}, "latest"]
    assert int(node.request("eth_call", read), 16) == 0
    node.mint(holder, 7)  # a new head: the reader's warm state must not answer from the old one
    assert int(node.request("eth_call", read), 16) == 7
    assert node.call(localchain.TOKEN_ADDRESS, contract.balance_of(holder)) == (7).to_bytes(32, "big")
    before = node.fast_calls
    with_fees = [{**read[0], "gasPrice": hex(10**10)}, "latest"]
    at_block = [read[0], "0x1"]
    assert _slow_and_fast(node, [read[0]])[0][0] == "error"  # no block tag: eth-tester's error, not a guess
    assert int(node.request("eth_call", with_fees), 16) == 7
    assert int(node.request("eth_call", at_block), 16) == 0  # block 1: before the mint
    assert node.fast_calls == before  # both went through eth-tester
