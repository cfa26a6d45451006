"""The spec note's deterministic test vector (§9), reproduced by our code and by the official x402 2.25.0
client, byte for byte."""

from __future__ import annotations

from unittest import mock

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils.crypto import keccak

from authgate.x402.eip3009 import Authorization, recover_signer, sign_authorization
from authgate.x402.price import parse_price
from authgate.x402.wire import PaymentPayload, PaymentRequired, PaymentRequirements, ResourceInfo

PAYER_KEY = "0x" + keccak(text="x402-test-vector-payer").hex()
PAYER = "0x8d548B243730550eFD52D67A4cA9200EabA26319"
PAY_TO = "0xf2a45225571e3faBD23aAa135965EEe7d8639A14"
NONCE = keccak(text="x402-test-vector-nonce")
NOW = 1767225600
DIGEST = "b5b4c837817702f145f5e4d11fe3890465cb7509e64dae3d7a5d175433b6a8a8"
SIGNATURE = (
    "141da0f26e1bb3d218b435c2d0f60e4b248f6f5d862823554f802868f21b49477f828900733e9ff727057832765fb40f154fb7ccbf0f9be5"
    "cbf7e9e2d7fa6b681c"
)
REQUIRED_JSON = (
    '{"x402Version":2,"error":"Payment required","resource":{"url":"http://127.0.0.1:8000/weather","description":'
    '"Weather data","mimeType":"application/json"},"accepts":[{"scheme":"exact","network":"eip155:84532","asset":'
    '"0x036CbD53842c5426634e7929541eC2318f3dCF7e","amount":"10000","payTo":"0xf2a45225571e3faBD23aAa135965EEe7d8639A14'
    '","maxTimeoutSeconds":60,"extra":{"name":"USDC","version":"2"}}]}'
)
REQUIRED_HEADER = (
    "eyJ4NDAyVmVyc2lvbiI6MiwiZXJyb3IiOiJQYXltZW50IHJlcXVpcmVkIiwicmVzb3VyY2UiOnsidXJsIjoiaHR0cDovLzEyNy4wLjAuMTo4MDAw"
    "L3dlYXRoZXIiLCJkZXNjcmlwdGlvbiI6IldlYXRoZXIgZGF0YSIsIm1pbWVUeXBlIjoiYXBwbGljYXRpb24vanNvbiJ9LCJhY2NlcHRzIjpbeyJz"
    "Y2hlbWUiOiJleGFjdCIsIm5ldHdvcmsiOiJlaXAxNTU6ODQ1MzIiLCJhc3NldCI6IjB4MDM2Q2JENTM4NDJjNTQyNjYzNGU3OTI5NTQxZUMyMzE4"
    "ZjNkQ0Y3ZSIsImFtb3VudCI6IjEwMDAwIiwicGF5VG8iOiIweGYyYTQ1MjI1NTcxZTNmYUJEMjNhQWExMzU5NjVFRWU3ZDg2MzlBMTQiLCJtYXhU"
    "aW1lb3V0U2Vjb25kcyI6NjAsImV4dHJhIjp7Im5hbWUiOiJVU0RDIiwidmVyc2lvbiI6IjIifX1dfQ=="
)
PAYLOAD_JSON = (
    '{"x402Version":2,"payload":{"authorization":{"from":"0x8d548B243730550eFD52D67A4cA9200EabA26319","to":'
    '"0xf2a45225571e3faBD23aAa135965EEe7d8639A14","value":"10000","validAfter":"0","validBefore":"1767225660","nonce":'
    '"0x85e04151ccbb79c728fea7d61ed755456540b44f70bdb433b2602ff786f16896"},"signature":"0x' + SIGNATURE + '"},'
    '"accepted":{"scheme":"exact","network":"eip155:84532","asset":"0x036CbD53842c5426634e7929541eC2318f3dCF7e",'
    '"amount":"10000","payTo":"0xf2a45225571e3faBD23aAa135965EEe7d8639A14","maxTimeoutSeconds":60,"extra":{"name":'
    '"USDC","version":"2"}},"resource":{"url":"http://127.0.0.1:8000/weather","description":"Weather data",'
    '"mimeType":"application/json"}}'
)
SIGNATURE_HEADER = (
    "eyJ4NDAyVmVyc2lvbiI6MiwicGF5bG9hZCI6eyJhdXRob3JpemF0aW9uIjp7ImZyb20iOiIweDhkNTQ4QjI0MzczMDU1MGVGRDUyRDY3QTRjQTky"
    "MDBFYWJBMjYzMTkiLCJ0byI6IjB4ZjJhNDUyMjU1NzFlM2ZhQkQyM2FBYTEzNTk2NUVFZTdkODYzOUExNCIsInZhbHVlIjoiMTAwMDAiLCJ2YWxp"
    "ZEFmdGVyIjoiMCIsInZhbGlkQmVmb3JlIjoiMTc2NzIyNTY2MCIsIm5vbmNlIjoiMHg4NWUwNDE1MWNjYmI3OWM3MjhmZWE3ZDYxZWQ3NTU0NTY1"
    "NDBiNDRmNzBiZGI0MzNiMjYwMmZmNzg2ZjE2ODk2In0sInNpZ25hdHVyZSI6IjB4MTQxZGEwZjI2ZTFiYjNkMjE4YjQzNWMyZDBmNjBlNGIyNDhm"
    "NmY1ZDg2MjgyMzU1NGY4MDI4NjhmMjFiNDk0NzdmODI4OTAwNzMzZTlmZjcyNzA1NzgzMjc2NWZiNDBmMTU0ZmI3Y2NiZjBmOWJlNWNiZjdlOWUy"
    "ZDdmYTZiNjgxYyJ9LCJhY2NlcHRlZCI6eyJzY2hlbWUiOiJleGFjdCIsIm5ldHdvcmsiOiJlaXAxNTU6ODQ1MzIiLCJhc3NldCI6IjB4MDM2Q2JE"
    "NTM4NDJjNTQyNjYzNGU3OTI5NTQxZUMyMzE4ZjNkQ0Y3ZSIsImFtb3VudCI6IjEwMDAwIiwicGF5VG8iOiIweGYyYTQ1MjI1NTcxZTNmYUJEMjNh"
    "QWExMzU5NjVFRWU3ZDg2MzlBMTQiLCJtYXhUaW1lb3V0U2Vjb25kcyI6NjAsImV4dHJhIjp7Im5hbWUiOiJVU0RDIiwidmVyc2lvbiI6IjIifX0s"
    "InJlc291cmNlIjp7InVybCI6Imh0dHA6Ly8xMjcuMC4wLjE6ODAwMC93ZWF0aGVyIiwiZGVzY3JpcHRpb24iOiJXZWF0aGVyIGRhdGEiLCJtaW1l"
    "VHlwZSI6ImFwcGxpY2F0aW9uL2pzb24ifX0="
)


def _requirements() -> PaymentRequirements:
    price = parse_price("$0.01", "eip155:84532")
    return PaymentRequirements(
        scheme="exact", network="eip155:84532", asset=price.asset, amount=price.amount, pay_to=PAY_TO,
        max_timeout_seconds=60, extra=price.extra,
    )


RESOURCE = ResourceInfo(url="http://127.0.0.1:8000/weather", description="Weather data", mime_type="application/json")


def test_payee_and_payer_derive_from_labels() -> None:
    assert Account.from_key(PAYER_KEY).address == PAYER
    assert Account.from_key("0x" + keccak(text="x402-test-vector-payee").hex()).address == PAY_TO


def test_our_code_reproduces_the_vector() -> None:
    req = _requirements()
    auth = Authorization(PAYER, PAY_TO, 10000, 0, NOW + 60, NONCE)
    digest = auth.digest("USDC", "2", 84532, req.asset)
    assert digest.hex() == DIGEST
    signed = sign_authorization(auth, PAYER_KEY, name="USDC", version="2", chain_id=84532, verifying_contract=req.asset)
    assert signed.signature.hex() == SIGNATURE
    assert recover_signer(digest, signed.signature) == PAYER

    required = PaymentRequired(accepts=(req,), resource=RESOURCE, error="Payment required")
    assert required.to_json() == REQUIRED_JSON
    assert required.to_header() == REQUIRED_HEADER
    payload = PaymentPayload(payload=signed.to_dict(), accepted=req, resource=RESOURCE)
    assert payload.to_json() == PAYLOAD_JSON
    assert payload.to_header() == SIGNATURE_HEADER
    # and back
    assert PaymentRequired.from_header(REQUIRED_HEADER) == required
    assert PaymentPayload.from_header(SIGNATURE_HEADER) == payload


def test_digest_matches_eth_account_encode_typed_data() -> None:
    req = _requirements()
    auth = Authorization(PAYER, PAY_TO, 10000, 0, NOW + 60, NONCE)
    doc = auth.typed_data("USDC", "2", 84532, req.asset)
    signable = encode_typed_data(full_message=doc)
    assert keccak(b"\x19" + signable.version + signable.header + signable.body).hex() == DIGEST
    assert Account.sign_message(signable, PAYER_KEY).signature.hex().removeprefix("0x") == SIGNATURE
    # other inputs too: a different domain and message give the same digest both ways
    other = Authorization(PAY_TO, PAYER, 2**200 + 7, 5, 2**40, bytes(range(32)))
    doc2 = other.typed_data("USD Coin", "1", 8453, "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913")
    s2 = encode_typed_data(full_message=doc2)
    assert keccak(b"\x19" + s2.version + s2.header + s2.body) == other.digest(
        "USD Coin", "1", 8453, "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
    )


async def test_official_sdk_client_produces_the_same_headers() -> None:
    from x402.http import x402HTTPClient
    from x402.mechanisms.evm.exact import register_exact_evm_client
    from x402.schemas import PaymentRequired as SdkPaymentRequired

    from x402 import x402Client

    sdk_required = SdkPaymentRequired.model_validate_json(REQUIRED_JSON)
    client = x402Client()
    register_exact_evm_client(client, Account.from_key(PAYER_KEY))
    with mock.patch("x402.mechanisms.evm.exact.client.create_nonce", return_value="0x" + NONCE.hex()), \
            mock.patch("x402.mechanisms.evm.exact.client.time.time", return_value=NOW):
        sdk_payload = await client.create_payment_payload(sdk_required)
    headers = x402HTTPClient(client).encode_payment_signature_header(sdk_payload)
    assert headers == {"PAYMENT-SIGNATURE": SIGNATURE_HEADER}
    # the SDK decodes our header into the same objects
    from x402.http.utils import decode_payment_required_header, decode_payment_signature_header

    assert decode_payment_required_header(REQUIRED_HEADER) == sdk_required
    assert decode_payment_signature_header(SIGNATURE_HEADER) == sdk_payload
