"""``authgate devchain`` as a peer of web3 and of the official x402 SDK: the SDK's ``FacilitatorWeb3Signer``
reads our node, and the SDK's own facilitator verifies and settles a payment signed by the SDK's client on our
TestUSDC through it. Also the node's input bounds and the CLI's ``--fund`` parsing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest
from eth_account import Account

from authgate.x402 import localchain
from authgate.x402.chain import contract
from authgate.x402.chain.devchain import MAX_BODY, parse_fund
from authgate.x402.chain.node import MAX_BATCH
from tests.x402.test_chain_suite import authorize, devchain_process, jsonrpc_chain, mint

pytestmark = pytest.mark.interop

SDK_FACILITATOR = "sdk-facilitator"
SDK_PAYER = "sdk-payer"


@pytest.fixture(scope="module")
def node_url() -> Iterator[str]:
    with devchain_process("--fund", f"{SDK_PAYER}=2.5", "--fund", f"{SDK_FACILITATOR}=0") as url:
        yield url


def rpc(url: str, method: str, params: list[object] | None = None) -> dict[str, object]:
    answer = httpx.post(url, json={"jsonrpc": "2.0", "id": 7, "method": method, "params": params or []}, timeout=10)
    assert answer.status_code == 200
    body: dict[str, object] = answer.json()
    assert body["id"] == 7
    return body


def test_sdk_signer_reads_our_node(node_url: str) -> None:
    from x402.mechanisms.evm import FacilitatorWeb3Signer

    signer = FacilitatorWeb3Signer(private_key=localchain.label_key(SDK_FACILITATOR), rpc_url=node_url)
    assert signer.get_chain_id() == localchain.CHAIN_ID
    assert len(signer.get_code(localchain.TOKEN_ADDRESS)) > 1000
    assert signer.get_code(localchain.label_address(SDK_PAYER)) == b""
    assert signer.get_balance(localchain.label_address(SDK_PAYER), localchain.TOKEN_ADDRESS) == 2_500_000


async def test_sdk_facilitator_settles_on_our_token_through_our_node(node_url: str) -> None:
    """The official client signs, the official facilitator verifies (eth_call simulation) and settles
    (legacy-gas transaction, receipt, Transfer log check) against TestUSDC served by devchain."""
    from x402.mechanisms.evm import FacilitatorWeb3Signer
    from x402.mechanisms.evm.exact import register_exact_evm_client, register_exact_evm_facilitator
    from x402.schemas import PaymentRequired, PaymentRequirements, ResourceInfo

    from x402 import x402Client, x402Facilitator

    payer = Account.from_key(localchain.label_key(SDK_PAYER))
    payee = Account.create().address
    requirements = PaymentRequirements(
        scheme="exact", network=localchain.NETWORK, asset=localchain.TOKEN_ADDRESS, amount="10000", pay_to=payee,
        max_timeout_seconds=120, extra={"name": localchain.TOKEN_NAME, "version": localchain.TOKEN_VERSION})
    offer = PaymentRequired(x402_version=2, resource=ResourceInfo(url="http://127.0.0.1:1/paid"),
                            accepts=[requirements])
    client = x402Client()
    register_exact_evm_client(client, payer)
    client.set_spend_controls(False)  # TestUSDC is not one of the SDK's default assets
    payload = await client.create_payment_payload(offer)

    signer = FacilitatorWeb3Signer(private_key=localchain.label_key(SDK_FACILITATOR), rpc_url=node_url,
                                   confirmation_timeout_seconds=30)
    facilitator = x402Facilitator()
    register_exact_evm_facilitator(facilitator, signer, networks=localchain.NETWORK)
    verified = await facilitator.verify(payload, requirements)
    assert verified.is_valid, verified
    settled = await facilitator.settle(payload, requirements)
    assert settled.success, settled
    assert settled.transaction.startswith("0x")

    # Our JSON-RPC chain sees the same chain: balances moved, and the tx is found by its authorization.
    ours = jsonrpc_chain(node_url)
    try:
        token = localchain.TOKEN_ADDRESS
        assert await ours.balance_of(token, payee) == 10_000
        assert await ours.balance_of(token, payer.address) == 2_500_000 - 10_000
        nonce = bytes.fromhex(payload.payload["authorization"]["nonce"][2:])
        found = await ours.find_authorization_tx(token, payer.address, nonce)
        assert found is not None and found.lower() == settled.transaction.lower()
        receipt = await ours.wait_receipt(found, 5)
        assert receipt is not None and receipt.status == 1 and receipt.transfer_logged
    finally:
        await ours.aclose()

    # The SDK's own replay check goes through our node's eth_call and our contract's revert text.
    again = await facilitator.verify(payload, requirements)
    assert not again.is_valid and again.invalid_reason == "invalid_exact_evm_nonce_already_used"


def test_node_answers_like_a_node(node_url: str) -> None:
    assert rpc(node_url, "eth_chainId")["result"] == hex(localchain.CHAIN_ID)
    assert rpc(node_url, "net_version")["result"] == str(localchain.CHAIN_ID)
    for method in ("eth_blockNumber", "eth_gasPrice", "eth_maxPriorityFeePerGas"):
        assert str(rpc(node_url, method)["result"]).startswith("0x")
    block = rpc(node_url, "eth_getBlockByNumber", ["latest", False])["result"]
    assert isinstance(block, dict) and "baseFeePerGas" in block and "timestamp" in block
    history = rpc(node_url, "eth_feeHistory", ["0x2", "latest", [50]])["result"]
    assert isinstance(history, dict) and len(history["reward"]) == len(history["gasUsedRatio"])
    # A revert: code 3 with the Error(string) payload, as geth sends it.
    call = {"to": localchain.TOKEN_ADDRESS,
            "data": "0x" + contract.mint(localchain.FACILITATOR, 1).hex(), "from": localchain.FACILITATOR}
    error = rpc(node_url, "eth_call", [call, "latest"])["error"]
    assert isinstance(error, dict) and error["code"] == 3
    assert error["message"] == "execution reverted: caller is not the minter"
    assert contract.revert_reason(bytes.fromhex(str(error["data"])[2:])) == "caller is not the minter"


def test_node_bounds_and_errors(node_url: str) -> None:
    refused = rpc(node_url, "eth_sendTransaction", [{}])["error"]
    assert isinstance(refused, dict) and refused["code"] == -32601
    assert rpc(node_url, "evm_increaseTime", [100])["error"]
    bad = rpc(node_url, "eth_getBalance", ["0xnot", "latest"])["error"]
    assert isinstance(bad, dict) and bad["code"] == -32602
    assert httpx.post(node_url, content=b"{not json", timeout=10).json()["error"]["code"] == -32700
    assert httpx.post(node_url, content=b"x" * (MAX_BODY + 1), timeout=10).status_code == 413
    batch = [{"jsonrpc": "2.0", "id": i, "method": "eth_chainId"} for i in range(MAX_BATCH + 1)]
    assert httpx.post(node_url, json=batch, timeout=10).json()["error"]["code"] == -32600
    answers = httpx.post(node_url, json=batch[:3], timeout=10).json()
    assert [a["id"] for a in answers] == [0, 1, 2]
    assert httpx.post(node_url, content=json.dumps([]), timeout=10).json()["error"]["code"] == -32600
    assert httpx.post(node_url, json={"jsonrpc": "2.0", "id": {"x": 1}, "method": "eth_chainId"},
                      timeout=10).json()["error"]["code"] == -32600
    # Notifications (no id) get no answer.
    assert httpx.post(node_url, json={"jsonrpc": "2.0", "method": "eth_chainId"}, timeout=10).status_code == 204
    # The node is still fine.
    assert rpc(node_url, "eth_chainId")["result"] == hex(localchain.CHAIN_ID)


def test_parse_fund() -> None:
    assert parse_fund("alice=12.5") == ("alice", localchain.label_address("alice"), 12_500_000)
    address = Account.create().address
    assert parse_fund(f"{address.lower()}=0.000001") == (address.lower(), address, 1)
    for bad in ("alice", "=1", "alice=abc", "alice=-1", "alice=0.0000001", "alice=nan", "0x12=1", "alice=1e40"):
        with pytest.raises(ValueError):
            parse_fund(bad)


def test_cli_refuses_bad_fund(capsys: pytest.CaptureFixture[str]) -> None:
    from authgate.cli import main

    assert main(["devchain", "--fund", "alice=lots"]) == 2
    assert "--fund amount" in capsys.readouterr().err


async def test_jsonrpc_chain_on_wrong_network_or_dead_node_is_unavailable(node_url: str) -> None:
    from authgate.demo.servers import free_port
    from authgate.x402.chain.base import ChainUnavailable

    wrong = jsonrpc_chain(node_url, chain_id=84532)
    try:
        with pytest.raises(ChainUnavailable, match="expected eip155:84532"):
            await wrong.balance_of(localchain.TOKEN_ADDRESS, localchain.FACILITATOR)
    finally:
        await wrong.aclose()
    dead = jsonrpc_chain(f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(ChainUnavailable):
            await dead.code_at(localchain.TOKEN_ADDRESS)
    finally:
        await dead.aclose()


async def test_two_processes_sharing_one_key_both_settle(node_url: str) -> None:
    """Two chain objects with one facilitator key (as two authgate servers would be) each hand out nonces
    from their own lock; the node's "nonce too low" makes the loser re-sign with a fresh nonce."""
    first, second = jsonrpc_chain(node_url), jsonrpc_chain(node_url)
    try:
        payer = Account.create()
        await mint(first, payer.address, 100_000)
        payees = [Account.create().address for _ in range(8)]
        auths = [authorize(payer, payee, 100 + i) for i, payee in enumerate(payees)]
        hashes = await asyncio.gather(*((first if i % 2 else second).submit_transfer(a) for i, a in enumerate(auths)))
        assert len(set(hashes)) == len(auths)
        for i, (tx_hash, auth) in enumerate(zip(hashes, auths, strict=True)):
            receipt = await first.wait_receipt(tx_hash, 30, expect=auth)
            assert receipt is not None and receipt.status == 1 and receipt.transfer_logged
            assert await second.balance_of(localchain.TOKEN_ADDRESS, payees[i]) == 100 + i
    finally:
        await first.aclose()
        await second.aclose()
