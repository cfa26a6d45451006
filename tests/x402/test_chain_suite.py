"""The Chain interface on both back ends: the embedded EVM in-process, and the JSON-RPC chain talking to
``authgate devchain`` in a subprocess. Balances are read from the token contract; authorizations are signed
with eth-account's EIP-712 typed data, as a paying agent would."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from eth_abi.abi import encode
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount

from authgate.demo.servers import free_port
from authgate.x402 import localchain
from authgate.x402.chain import contract
from authgate.x402.chain.base import Chain, ChainError, TransferAuthorization
from authgate.x402.chain.devchain import mint_via_rpc
from authgate.x402.chain.embedded import EmbeddedChain
from authgate.x402.chain.jsonrpc import JsonRpcChain

TOKEN = localchain.TOKEN_ADDRESS
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

_DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
_AUTH_FIELDS = [
    {"name": "from", "type": "address"},
    {"name": "to", "type": "address"},
    {"name": "value", "type": "uint256"},
    {"name": "validAfter", "type": "uint256"},
    {"name": "validBefore", "type": "uint256"},
    {"name": "nonce", "type": "bytes32"},
]


def sign_typed(key: Any, primary: str, fields: list[dict[str, str]], message: dict[str, Any]) -> bytes:
    typed = {
        "types": {"EIP712Domain": _DOMAIN_TYPE, primary: fields},
        "primaryType": primary,
        "domain": {"name": localchain.TOKEN_NAME, "version": localchain.TOKEN_VERSION,
                   "chainId": localchain.CHAIN_ID, "verifyingContract": TOKEN},
        "message": message,
    }
    return bytes(Account.sign_message(encode_typed_data(full_message=typed), key).signature)


def authorize(payer: LocalAccount, to: str, value: int, *, valid_after: int = 0, valid_before: int | None = None,
              nonce: bytes | None = None, primary: str = "TransferWithAuthorization",
              from_address: str | None = None) -> TransferAuthorization:
    """An EIP-3009 authorization signed by ``payer`` the way the x402 clients sign it (``from_address``: the
    authorizer when it is not the signer, i.e. a contract wallet the signer owns)."""
    nonce = nonce or os.urandom(32)
    valid_before = int(time.time()) + 300 if valid_before is None else valid_before
    authorizer = from_address or payer.address
    message = {"from": authorizer, "to": to, "value": value, "validAfter": valid_after,
               "validBefore": valid_before, "nonce": nonce}
    signature = sign_typed(payer.key, primary, _AUTH_FIELDS, message)
    return TransferAuthorization(token=TOKEN, from_=authorizer, to=to, value=value, valid_after=valid_after,
                                 valid_before=valid_before, nonce=nonce, signature=signature)


# -- the devchain subprocess --------------------------------------------------------------------------------


@contextlib.contextmanager
def devchain_process(*extra: str) -> Iterator[str]:
    """``authgate devchain`` on a free loopback port; yields its URL."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "authgate.cli", "devchain", "--port", str(port), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                out = proc.stdout.read().decode() if proc.stdout else ""
                raise RuntimeError(f"devchain exited: {out[-2000:]}")
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("devchain did not start")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()


@pytest.fixture(scope="module")
def devchain_url() -> Iterator[str]:
    with devchain_process() as url:
        yield url


def jsonrpc_chain(url: str, key: str = localchain.FACILITATOR_KEY, chain_id: int = localchain.CHAIN_ID) -> JsonRpcChain:
    return JsonRpcChain(url, chain_id=chain_id, facilitator_key=key, token_address=TOKEN,
                        token_name=localchain.TOKEN_NAME, token_version=localchain.TOKEN_VERSION, poll_interval=0.05)


@pytest.fixture(scope="module")
def devchain_blocks_url() -> Iterator[str]:
    """A devchain with a mempool and a block every 0.1 s: the suite holds when receipts take a block to come."""
    with devchain_process("--block-time", "0.1") as url:
        yield url


@pytest.fixture(params=["embedded", "jsonrpc", "jsonrpc-mempool"])
async def chain(request: pytest.FixtureRequest) -> AsyncIterator[Chain]:
    if request.param == "embedded":
        built: Chain = EmbeddedChain()
    elif request.param == "jsonrpc":
        built = jsonrpc_chain(request.getfixturevalue("devchain_url"))
    else:
        built = jsonrpc_chain(request.getfixturevalue("devchain_blocks_url"))
    try:
        yield built
    finally:
        await built.aclose()


async def mint(chain: Chain, address: str, amount: int) -> None:
    """Test money: the embedded chain's helper, or a mint transaction from the (public) deployer key over RPC."""
    if isinstance(chain, EmbeddedChain):
        await chain.mint(address, amount)
        return
    assert isinstance(chain, JsonRpcChain)
    await mint_via_rpc(chain.rpc_url, address, amount)


async def funded_payer(chain: Chain, amount: int = 1_000_000) -> LocalAccount:
    payer: LocalAccount = Account.create()
    await mint(chain, payer.address, amount)
    return payer


async def settle(chain: Chain, auth: TransferAuthorization) -> str:
    tx_hash = await chain.submit_transfer(auth)
    receipt = await chain.wait_receipt(tx_hash, 30)
    assert receipt is not None and receipt.status == 1 and receipt.transfer_logged
    return tx_hash


# -- tests ----------------------------------------------------------------------------------------------------


async def test_identity_of_the_chain(chain: Chain) -> None:
    assert chain.network == localchain.NETWORK
    assert chain.facilitator_address == localchain.FACILITATOR
    assert await chain.token_domain(TOKEN) == ("USDC", "2")
    assert len(await chain.code_at(TOKEN)) > 1000
    assert await chain.code_at(Account.create().address) == b""


async def test_transfer_with_authorization_moves_balances(chain: Chain) -> None:
    payer = await funded_payer(chain, 1_000_000)
    payee = Account.create().address
    auth = authorize(payer, payee, 10_000)
    assert await chain.simulate_transfer(auth) is None
    assert not await chain.authorization_used(TOKEN, payer.address, auth.nonce)
    assert await chain.find_authorization_tx(TOKEN, payer.address, auth.nonce) is None

    tx_hash = await chain.submit_transfer(auth)
    assert tx_hash.startswith("0x") and len(tx_hash) == 66
    receipt = await chain.wait_receipt(tx_hash, 30)
    assert receipt is not None
    assert (receipt.tx_hash, receipt.status, receipt.transfer_logged) == (tx_hash, 1, True)
    assert receipt.block_number > 0
    assert await chain.balance_of(TOKEN, payer.address) == 990_000
    assert await chain.balance_of(TOKEN, payee) == 10_000
    assert await chain.authorization_used(TOKEN, payer.address, auth.nonce)
    assert await chain.find_authorization_tx(TOKEN, payer.address, auth.nonce) == tx_hash
    # The receipt judged against another authorization (other amount) is not this payment.
    other = authorize(payer, payee, 10_001, nonce=auth.nonce)
    mismatched = await chain.wait_receipt(tx_hash, 1, expect=other)
    assert mismatched is not None and not mismatched.transfer_logged


async def test_reused_nonce_reverts_and_moves_nothing(chain: Chain) -> None:
    payer = await funded_payer(chain, 100_000)
    payee = Account.create().address
    auth = authorize(payer, payee, 10_000)
    await settle(chain, auth)
    assert await chain.simulate_transfer(auth) == "authorization is used or canceled"
    with pytest.raises(ChainError) as caught:
        await chain.submit_transfer(auth)
    assert caught.value.revert_text == "authorization is used or canceled"
    # Same nonce, another payee and amount, freshly signed: still the same used nonce.
    again = authorize(payer, Account.create().address, 5, nonce=auth.nonce)
    assert await chain.simulate_transfer(again) == "authorization is used or canceled"
    assert await chain.balance_of(TOKEN, payee) == 10_000
    assert await chain.balance_of(TOKEN, payer.address) == 90_000


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("expired", "authorization is expired"),
        ("not_yet_valid", "authorization is not yet valid"),
        ("insufficient", "transfer amount exceeds balance"),
        ("tampered_value", "invalid signature"),
        ("wrong_signer", "invalid signature"),
        ("high_s", "invalid signature"),
        ("bad_v", "invalid signature"),
        ("receive_typehash", "invalid signature"),
    ],
)
async def test_reverts_carry_the_texts_the_sdk_maps(chain: Chain, case: str, expected: str) -> None:
    payer = await funded_payer(chain, 50_000)
    payee = Account.create().address
    now = int(time.time())
    if case == "expired":
        auth = authorize(payer, payee, 1, valid_before=now - 5)
    elif case == "not_yet_valid":
        auth = authorize(payer, payee, 1, valid_after=now + 3600, valid_before=now + 7200)
    elif case == "insufficient":
        auth = authorize(payer, payee, 50_001)
    elif case == "tampered_value":
        signed = authorize(payer, payee, 1)
        auth = TransferAuthorization(**{**signed.__dict__, "value": 2})
    elif case == "wrong_signer":
        signed = authorize(Account.create(), payee, 1)
        auth = TransferAuthorization(**{**signed.__dict__, "from_": payer.address})
    elif case == "high_s":
        # The same signature made malleable (s -> n - s, v flipped) still recovers the payer with plain
        # ecrecover; EIP-2's low-s rule must refuse it.
        signed = authorize(payer, payee, 1)
        r, s, v = signed.signature[:32], int.from_bytes(signed.signature[32:64], "big"), signed.signature[64]
        flipped = r + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v])
        auth = TransferAuthorization(**{**signed.__dict__, "signature": flipped})
    elif case == "bad_v":
        signed = authorize(payer, payee, 1)
        auth = TransferAuthorization(**{**signed.__dict__, "signature": signed.signature[:64] + bytes([29])})
    else:  # a ReceiveWithAuthorization signature is no TransferWithAuthorization signature
        auth = authorize(payer, payee, 1, primary="ReceiveWithAuthorization")
    assert await chain.simulate_transfer(auth) == expected
    with pytest.raises(ChainError) as caught:
        await chain.submit_transfer(auth)
    assert caught.value.revert_text == expected
    assert await chain.balance_of(TOKEN, payer.address) == 50_000
    assert not await chain.authorization_used(TOKEN, payer.address, auth.nonce)


async def test_bytes_signature_overload(chain: Chain) -> None:
    """``transferWithAuthorization(..., bytes signature)`` moves money like the (v, r, s) overload."""
    assert isinstance(chain, EmbeddedChain | JsonRpcChain)
    payer = await funded_payer(chain, 20_000)
    payee = Account.create().address
    auth = authorize(payer, payee, 7_000)
    head = [auth.from_, auth.to, auth.value, auth.valid_after, auth.valid_before, auth.nonce]
    data = contract.TRANSFER_WITH_AUTH_BYTES + encode(
        ["address", "address", "uint256", "uint256", "uint256", "bytes32", "bytes"], [*head, auth.signature])
    tx_hash = await chain.send_transaction(TOKEN, data)
    receipt = await chain.wait_receipt(tx_hash, 30)
    assert receipt is not None and receipt.status == 1 and receipt.transfer_logged  # decoded from the input
    assert await chain.balance_of(TOKEN, payee) == 7_000
    assert await chain.find_authorization_tx(TOKEN, payer.address, auth.nonce) == tx_hash
    # The (v, r, s) overload now sees the nonce as used.
    assert await chain.simulate_transfer(auth) == "authorization is used or canceled"


async def test_cancel_and_receive_with_authorization(chain: Chain) -> None:
    assert isinstance(chain, EmbeddedChain | JsonRpcChain)
    payer = await funded_payer(chain, 30_000)
    # cancelAuthorization: the payer voids a nonce; no transfer can use it, and no transfer tx is "found".
    nonce = os.urandom(32)
    sig = sign_typed(payer.key, "CancelAuthorization",
                     [{"name": "authorizer", "type": "address"}, {"name": "nonce", "type": "bytes32"}],
                     {"authorizer": payer.address, "nonce": nonce})
    cancel = contract.selector("cancelAuthorization(address,bytes32,uint8,bytes32,bytes32)") + encode(
        ["address", "bytes32", "uint8", "bytes32", "bytes32"], [payer.address, nonce, sig[64], sig[:32], sig[32:64]])
    receipt = await chain.wait_receipt(await chain.send_transaction(TOKEN, cancel), 30)
    assert receipt is not None and receipt.status == 1 and not receipt.transfer_logged
    assert await chain.authorization_used(TOKEN, payer.address, nonce)
    assert await chain.simulate_transfer(authorize(payer, Account.create().address, 1, nonce=nonce)) == (
        "authorization is used or canceled")
    assert await chain.find_authorization_tx(TOKEN, payer.address, nonce) is None

    # receiveWithAuthorization: only the payee may submit it (here the facilitator is the payee).
    auth = authorize(payer, chain.facilitator_address, 4_000, primary="ReceiveWithAuthorization")
    head = [auth.from_, auth.to, auth.value, auth.valid_after, auth.valid_before, auth.nonce]
    receive = contract.selector(
        "receiveWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)"
    ) + encode(["address", "address", "uint256", "uint256", "uint256", "bytes32", "uint8", "bytes32", "bytes32"],
               [*head, auth.signature[64], auth.signature[:32], auth.signature[32:64]])
    before = await chain.balance_of(TOKEN, chain.facilitator_address)
    receipt = await chain.wait_receipt(await chain.send_transaction(TOKEN, receive), 30)
    assert receipt is not None and receipt.status == 1
    assert await chain.balance_of(TOKEN, chain.facilitator_address) == before + 4_000
    # The same kind of authorization for someone else cannot be pushed by the facilitator.
    other = authorize(payer, Account.create().address, 1, primary="ReceiveWithAuthorization")
    head = [other.from_, other.to, other.value, other.valid_after, other.valid_before, other.nonce]
    data = contract.selector(
        "receiveWithAuthorization(address,address,uint256,uint256,uint256,bytes32,bytes)"
    ) + encode(["address", "address", "uint256", "uint256", "uint256", "bytes32", "bytes"], [*head, other.signature])
    # send_transaction does not simulate (submit_transfer does): the revert is mined, status 0, nothing moves.
    failed = await chain.wait_receipt(await chain.send_transaction(TOKEN, data), 30)
    assert failed is not None and failed.status == 0 and not failed.transfer_logged
    assert not await chain.authorization_used(TOKEN, payer.address, other.nonce)
    assert await chain.balance_of(TOKEN, payer.address) == 30_000 - 4_000


async def test_concurrent_submissions_get_distinct_nonces(chain: Chain) -> None:
    payer = await funded_payer(chain, 100_000)
    payees = [Account.create().address for _ in range(6)]
    auths = [authorize(payer, payee, 1_000 + i) for i, payee in enumerate(payees)]
    hashes = await asyncio.gather(*(chain.submit_transfer(a) for a in auths))
    assert len(set(hashes)) == len(auths)
    receipts = await asyncio.gather(*(chain.wait_receipt(h, 30, expect=a) for h, a in zip(hashes, auths, strict=True)))
    assert all(r is not None and r.status == 1 and r.transfer_logged for r in receipts)
    for i, payee in enumerate(payees):
        assert await chain.balance_of(TOKEN, payee) == 1_000 + i


async def test_unknown_transaction_has_no_receipt(chain: Chain) -> None:
    assert await chain.wait_receipt("0x" + "ab" * 32, 0.05) is None


async def test_malformed_addresses_are_refused_before_the_node(chain: Chain) -> None:
    with pytest.raises(ValueError, match="not an address"):
        await chain.balance_of("0x1234", Account.create().address)
    with pytest.raises(ValueError, match="not an address"):
        await chain.code_at("not-an-address")
