"""What only the embedded chain does: its fixed identity, the block clock that follows the injected clock, and
minting reserved to the deployer."""

from __future__ import annotations

import time

import pytest
from eth_account import Account

from authgate.x402 import localchain
from authgate.x402.chain import contract
from authgate.x402.chain.base import ChainError
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
