"""What only the embedded chain does: its fixed identity, the block clock that follows the injected clock, and
minting reserved to the deployer."""

from __future__ import annotations

import asyncio
import time

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from authgate.x402 import localchain
from authgate.x402.chain import contract
from authgate.x402.chain.base import ChainError, TransferAuthorization
from authgate.x402.chain.embedded import EmbeddedChain
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
