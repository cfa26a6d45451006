"""x402 wire objects: key order and omit-null as the Python SDK, bounded parsing with one error type, header
codecs, v1 bodies, prices, networks; and the agent-side modules import without server dependencies."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import textwrap

import pytest

from authgate.x402 import localchain
from authgate.x402.eip3009 import Authorization, ExactEvmPayload, SignatureError, recover_signer, sign_digest
from authgate.x402.errors import X402WireError
from authgate.x402.networks import default_asset, evm_chain_id, find_asset, normalize_network, parse_caip2, v1_name
from authgate.x402.price import AssetAmount, parse_price, to_atomic
from authgate.x402.wire import (
    MAX_JSON_BYTES,
    FacilitatorRequest,
    PaymentPayload,
    PaymentPayloadV1,
    PaymentRequired,
    PaymentRequirements,
    ResourceInfo,
    SettleResponse,
    SupportedKind,
    SupportedResponse,
    VerifyResponse,
    b64decode_json,
)

REQ = PaymentRequirements("exact", "eip155:84532", "0x036CbD53842c5426634e7929541eC2318f3dCF7e", "10000",
                          "0xf2a45225571e3faBD23aAa135965EEe7d8639A14", 60, {"name": "USDC", "version": "2"})


def test_settle_response_header_uses_python_json_dumps_separators() -> None:
    resp = SettleResponse(success=True, transaction="0x" + "ab" * 32, network="eip155:84532",
                          payer="0x8d548B243730550eFD52D67A4cA9200EabA26319")
    decoded = base64.b64decode(resp.to_header()).decode()
    assert decoded == ('{"success": true, "payer": "0x8d548B243730550eFD52D67A4cA9200EabA26319", "transaction": "0x'
                       + "ab" * 32 + '", "network": "eip155:84532"}')
    assert SettleResponse.from_header(resp.to_header()) == resp
    failed = SettleResponse(success=False, transaction="", network="n:1", error_reason="x", error_message="é")
    assert json.loads(base64.b64decode(failed.to_header())) == {
        "success": False, "errorReason": "x", "errorMessage": "é", "transaction": "", "network": "n:1"}
    assert b"\\u00e9" in base64.b64decode(failed.to_header())  # ASCII escaping, like json.dumps


def test_key_order_and_omit_null_match_the_sdk() -> None:
    from x402.schemas import SettleResponse as SdkSettle
    from x402.schemas import SupportedResponse as SdkSupported
    from x402.schemas import VerifyResponse as SdkVerify

    v = VerifyResponse(is_valid=False, invalid_reason="r", invalid_message="m", payer="0xabc")
    assert v.to_json() == SdkVerify.model_validate_json(v.to_json()).model_dump_json(by_alias=True, exclude_none=True)
    assert VerifyResponse(True, payer="0x1").to_json() == '{"isValid":true,"payer":"0x1"}'
    s = SettleResponse(success=True, transaction="0x1", network="eip155:1", payer="0x2", amount="5")
    assert s.to_json() == SdkSettle.model_validate_json(s.to_json()).model_dump_json(by_alias=True, exclude_none=True)
    sup = SupportedResponse(kinds=(SupportedKind(2, "exact", "eip155:84532"),), signers={"eip155:*": ["0x1"]})
    assert sup.to_json() == SdkSupported.model_validate_json(sup.to_json()).model_dump_json(
        by_alias=True, exclude_none=True)
    assert "null" not in PaymentRequired(accepts=(REQ,)).to_json()


def test_non_ascii_kept_raw_in_compact_json() -> None:
    res = ResourceInfo(url="http://x/€", description="Wetter für heute")
    pr = PaymentRequired(accepts=(REQ,), resource=res)
    assert "für" in pr.to_json()
    assert PaymentRequired.from_header(pr.to_header()) == pr


@pytest.mark.parametrize("value", [
    "", "   ", "!!!!", "eyJ4", "e30-", "e3 0=", "AAAA" * 30000,
    base64.b64encode(b"not json").decode(),
    base64.b64encode(b"[1,2]").decode(),
    base64.b64encode(b"\xff\xfe").decode(),
    base64.b64encode(b"[" * 5000 + b"]" * 5000).decode(),
])
def test_bad_headers_raise_one_error_type(value: str) -> None:
    with pytest.raises(X402WireError):
        PaymentPayload.from_header(value)


def test_header_without_padding_is_accepted() -> None:
    assert b64decode_json(base64.b64encode(b'{"a":1}').decode().rstrip("=")) == {"a": 1}


def _payload_dict() -> dict[str, object]:
    return {"x402Version": 2, "payload": {"x": 1}, "accepted": REQ.to_dict()}


@pytest.mark.parametrize("mutate", [
    lambda d: d.pop("accepted"),
    lambda d: d.update(x402Version=3),
    lambda d: d.update(x402Version=True),
    lambda d: d.update(payload=[]),
    lambda d: d["accepted"].update(amount="1.5"),
    lambda d: d["accepted"].update(amount="-1"),
    lambda d: d["accepted"].update(amount=10000),
    lambda d: d["accepted"].update(amount="1" * 79),
    lambda d: d["accepted"].update(maxTimeoutSeconds="60"),
    lambda d: d["accepted"].update(maxTimeoutSeconds=0),
    lambda d: d["accepted"].update(maxTimeoutSeconds=-5),
    lambda d: d["accepted"].update(extra="x"),
    lambda d: d["accepted"].update(payTo="0x" + "a" * 300),
    lambda d: d["accepted"].pop("network"),
    lambda d: d.update(resource={"description": "no url"}),
])
def test_bad_payloads_raise(mutate: object) -> None:
    d = json.loads(json.dumps(_payload_dict()))
    mutate(d)  # type: ignore[operator]
    with pytest.raises(X402WireError):
        PaymentPayload.from_dict(d)


def test_size_bound() -> None:
    big = json.dumps({"x402Version": 2, "payload": {"p": "a" * MAX_JSON_BYTES}, "accepted": REQ.to_dict()})
    with pytest.raises(X402WireError):
        PaymentPayload.from_json(big)
    with pytest.raises(X402WireError):
        PaymentRequired.from_dict({"x402Version": 2, "accepts": [REQ.to_dict()] * 33})
    with pytest.raises(X402WireError):
        PaymentRequired.from_dict({"x402Version": 2, "accepts": []})


def test_v1_body_reads_max_amount_required() -> None:
    body = {"x402Version": 1, "error": "X-PAYMENT header is required", "accepts": [{
        "scheme": "exact", "network": "base-sepolia", "maxAmountRequired": "10000",
        "resource": "http://127.0.0.1:8000/weather", "description": "Weather", "mimeType": "application/json",
        "payTo": REQ.pay_to, "maxTimeoutSeconds": 60, "asset": REQ.asset, "extra": {"name": "USDC", "version": "2"},
    }]}
    pr = PaymentRequired.from_json(json.dumps(body))
    assert pr.x402_version == 1
    assert pr.accepts[0].amount == "10000" and pr.accepts[0].network == "base-sepolia"
    assert pr.resource == ResourceInfo("http://127.0.0.1:8000/weather", "Weather", "application/json")
    assert json.loads(pr.to_json()) == body  # round trip to the v1 shape
    v1 = PaymentPayloadV1("exact", "base-sepolia", {"signature": "0x"})
    assert PaymentPayloadV1.from_header(v1.to_header()) == v1
    assert json.loads(base64.b64decode(v1.to_header())) == {
        "x402Version": 1, "scheme": "exact", "network": "base-sepolia", "payload": {"signature": "0x"}}


def test_facilitator_request_and_supported_round_trip() -> None:
    req = FacilitatorRequest(PaymentPayload({"a": 1}, REQ), REQ)
    assert FacilitatorRequest.from_json(req.to_json()) == req
    sup = SupportedResponse((SupportedKind(2, "exact", "eip155:1"),), ("bazaar",), {"eip155:*": ["0x1"]})
    assert SupportedResponse.from_json(sup.to_json()) == sup
    assert sup.supports("exact", "eip155:1") and not sup.supports("exact", "eip155:2")


# ----------------------------------------------------------------------------------------------- price


@pytest.mark.parametrize(("price", "network", "amount"), [
    ("$0.01", "eip155:84532", "10000"),
    ("0.01", "eip155:8453", "10000"),
    (0.01, "eip155:8453", "10000"),
    ("1.50 USD", "eip155:1", "1500000"),
    ("1.5 USDC", "eip155:84532", "1500000"),
    ("$0.0000019", "eip155:84532", "1"),
    ("$0.0000001", "eip155:84532", "0"),
    ("$12", "eip155:84532", "12000000"),
    (3, "eip155:84532", "3000000"),
    (1e-7, "eip155:84532", "0"),
    ("$0.01", "base-sepolia", "10000"),
])
def test_price_parsing_truncates_like_the_sdk(price: str, network: str, amount: str) -> None:
    from x402.mechanisms.evm.exact import ExactEvmServerScheme

    ours = parse_price(price, network)
    assert ours.amount == amount
    sdk = ExactEvmServerScheme().parse_price(price, network)
    assert (ours.amount, ours.asset, ours.extra) == (sdk.amount, sdk.asset, sdk.extra)


@pytest.mark.parametrize("price", ["1e-2", "$1E3", "-1", "$-0.5", "abc", "1.50USDC", "1 USDT", "", float("nan"),
                                   float("inf"), -0.5, True])
def test_bad_prices_are_rejected(price: object) -> None:
    with pytest.raises(ValueError):
        parse_price(price, "eip155:8453")  # type: ignore[arg-type]


def test_explicit_amount_and_local_chain() -> None:
    aa = AssetAmount("5", "0xabc", {"name": "T", "version": "1"})
    assert parse_price(aa, "eip155:1") is aa
    assert parse_price({"amount": "7", "asset": "0xdef"}, "eip155:1") == AssetAmount("7", "0xdef", {})
    with pytest.raises(ValueError):
        parse_price({"amount": "0.5", "asset": "0xdef"}, "eip155:1")
    local = parse_price("$0.01", localchain.NETWORK)
    assert local == AssetAmount("10000", localchain.TOKEN_ADDRESS, {"name": "USDC", "version": "2"})
    with pytest.raises(ValueError):
        to_atomic("1e5", 6)


# ----------------------------------------------------------------------------------------------- networks


def test_networks() -> None:
    assert parse_caip2("eip155:8453") == ("eip155", "8453")
    assert evm_chain_id("eip155:84532") == 84532
    assert evm_chain_id("base") == 8453
    assert normalize_network("base-sepolia") == "eip155:84532"
    assert v1_name("eip155:84532") == "base-sepolia"
    assert default_asset("eip155:8453").name == "USD Coin"
    assert default_asset("eip155:84532").name == "USDC"
    assert find_asset("eip155:8453", "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913") is not None
    assert find_asset("eip155:8453", "0x0") is None
    for bad in ("solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp", "eip155:", "eip155:0x1", "eip155:01", "x", "eip155:1:2"):
        with pytest.raises(ValueError):
            evm_chain_id(bad)


def test_default_assets_agree_with_the_sdk_table() -> None:
    from x402.mechanisms.evm.default_assets import get_default_asset

    for net in ("eip155:8453", "eip155:84532", "eip155:1"):
        sdk = get_default_asset(net)
        ours = default_asset(net)
        assert (ours.asset, ours.name, ours.version, ours.decimals) == (
            sdk["asset"], sdk["name"], sdk["version"], sdk["decimals"])


# ----------------------------------------------------------------------------------------------- eip3009


def test_evm_payload_parse_and_bad_signatures() -> None:
    auth = Authorization("0x" + "11" * 20, "0x" + "22" * 20, 1, 0, 10, bytes(32))
    good = ExactEvmPayload(auth, bytes(65)).to_dict()
    assert ExactEvmPayload.from_dict(good).authorization == auth
    for key, value in [("from", "0x12"), ("value", "1.0"), ("value", str(2**256)), ("nonce", "0x00"),
                       ("validBefore", -1)]:
        bad = json.loads(json.dumps(good))
        bad["authorization"][key] = value
        with pytest.raises(X402WireError):
            ExactEvmPayload.from_dict(bad)
    with pytest.raises(X402WireError):
        ExactEvmPayload.from_dict({**good, "signature": "0xzz"})
    digest = bytes(range(32))
    key = "0x" + "01" * 32
    sig = sign_digest(digest, key)
    from eth_account import Account

    assert recover_signer(digest, sig) == Account.from_key(key).address
    assert recover_signer(digest, sig[:64] + bytes([sig[64] - 27])) == Account.from_key(key).address  # v 0/1
    with pytest.raises(SignatureError, match="Invalid v value: 7"):
        recover_signer(digest, sig[:64] + b"\x07")
    with pytest.raises(SignatureError):
        recover_signer(digest, sig[:64])
    # the malleable high-s twin of a valid signature is refused (FiatToken rejects it on chain)
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    s = int.from_bytes(sig[32:64], "big")
    twin = sig[:32] + (n - s).to_bytes(32, "big") + bytes([55 - sig[64]])
    with pytest.raises(SignatureError):
        recover_signer(digest, twin)


def test_agent_side_modules_import_without_server_dependencies() -> None:
    code = textwrap.dedent("""
        import sys
        for name in ["starlette", "sqlalchemy", "fastapi", "web3", "eth_tester", "x402", "httpx", "alembic"]:
            sys.modules[name] = None
        import authgate.x402.wire, authgate.x402.price, authgate.x402.networks, authgate.x402.eip3009
        roots = {m.split(".")[0] for m in sys.modules if sys.modules[m] is not None}
        allowed = {"authgate", "eth_account", "eth_utils", "eth_keys", "eth_typing", "eth_hash", "eth_abi",
                   "eth_rlp", "eth_keyfile", "hexbytes", "rlp", "coincurve", "Crypto", "cytoolz", "toolz",
                   "ckzg", "bitarray", "parsimonious", "sha3", "_pysha3", "cffi", "_cffi_backend", "annotated_types",
                   "typing_extensions", "regex", "_regex", "pydantic", "pydantic_core", "typing_inspection",
                   "cython_runtime", "pycparser"}
        third = sorted(r for r in roots - allowed if r not in sys.stdlib_module_names and not r.startswith("_"))
        assert not third, third
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
