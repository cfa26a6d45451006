"""``payment-identifier`` against the official x402 2.25.0 Python SDK (``x402.extensions.payment_identifier``),
both directions, byte for byte:

- wire: the SDK declares, we read the 402 and append our id, the SDK decodes our PAYMENT-SIGNATURE and extracts
  it; we declare, the SDK appends, we extract; each header re-encodes to the very bytes the other side sent;
- semantics: on a table of well- and ill-formed entries our ``append``/``extract`` agree with the SDK's
  ``append_payment_identifier_to_extensions``/``extract_and_validate_payment_identifier`` (two documented
  differences, asserted below);
- HTTP: the SDK client (its ``on_before_payment_creation`` hook, as the SDK's own example does) pays our paywall
  and retries with the same id: one transfer, the same receipt; our agent pays the SDK's FastAPI paywall, whose
  hook reads our id with the SDK's extractor.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from eth_account import Account
from fastapi import FastAPI, Request
from x402.extensions import payment_identifier as sdk
from x402.http.utils import (
    decode_payment_required_header,
    decode_payment_signature_header,
    encode_payment_required_header,
    encode_payment_signature_header,
)
from x402.schemas import PaymentPayload as SdkPaymentPayload
from x402.schemas import PaymentRequired as SdkPaymentRequired
from x402.schemas import PaymentRequirements as SdkPaymentRequirements
from x402.schemas import ResourceInfo as SdkResourceInfo

from authgate.agent.x402 import PAYMENT_ID_KEY, Budget, Wallet, X402PaymentAuth, payment_receipt
from authgate.clock import SystemClock
from authgate.demo.servers import free_port, serve
from authgate.store import Store
from authgate.x402 import localchain, wire
from authgate.x402.chain.embedded import EmbeddedChain
from authgate.x402.extensions import payment_identifier as pid
from authgate.x402.facilitator import InProcessFacilitatorClient
from authgate.x402.facilitator.http import create_facilitator_app
from authgate.x402.facilitator.service import Facilitator
from authgate.x402.paywall import Paywall, PaywallMiddleware
from tests.interop.test_x402_sdk import funded

pytestmark = pytest.mark.interop

NETWORK = localchain.NETWORK
TOKEN = localchain.TOKEN_ADDRESS
PAYEE = localchain.label_address("x402-pid-payee")
PAYMENT_ID = "pay_" + "0123456789abcdef" * 2
OFFER = {"scheme": "exact", "network": NETWORK, "asset": TOKEN, "amount": "10000", "payTo": PAYEE,
         "maxTimeoutSeconds": 60, "extra": {"name": localchain.TOKEN_NAME, "version": localchain.TOKEN_VERSION}}


@pytest.fixture
async def chain() -> AsyncIterator[EmbeddedChain]:
    c = EmbeddedChain()
    yield c
    await c.aclose()


@pytest.fixture
def facilitator(chain: EmbeddedChain, store: Store) -> Facilitator:
    return Facilitator({NETWORK: chain}, store, clock=SystemClock(), settle_timeout=20)


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


@pytest.mark.parametrize("required", [False, True])
def test_declarations_are_byte_identical(required: bool) -> None:
    assert _compact(pid.declare(required)) == _compact(sdk.declare_payment_identifier_extension(required))
    assert _compact(pid.SCHEMA) == _compact(sdk.payment_identifier_schema)
    assert (pid.PAYMENT_IDENTIFIER, pid.MIN_LENGTH, pid.MAX_LENGTH) == (
        sdk.PAYMENT_IDENTIFIER, sdk.PAYMENT_ID_MIN_LENGTH, sdk.PAYMENT_ID_MAX_LENGTH)
    assert sdk.is_valid_payment_id(pid.new_id()) and pid.is_valid_id(sdk.generate_payment_id())


def test_sdk_declares_we_append_and_the_sdk_extracts_our_id() -> None:
    required = SdkPaymentRequired(
        x402_version=2, accepts=[SdkPaymentRequirements.model_validate(OFFER)],
        resource=SdkResourceInfo(url="https://api.example/order", description="Order"),
        extensions={sdk.PAYMENT_IDENTIFIER: sdk.declare_payment_identifier_extension(True)})
    sent_402 = encode_payment_required_header(required)
    ours = wire.PaymentRequired.from_header(sent_402)
    assert ours.to_header() == sent_402  # we read and re-write the SDK's 402 byte for byte
    assert ours.extensions is not None
    extensions = pid.append(ours.extensions, PAYMENT_ID)
    # What we send is what the SDK's own client helper makes of the same declaration.
    assert _compact(extensions) == _compact(sdk.append_payment_identifier_to_extensions(
        copy.deepcopy(required.extensions or {}), PAYMENT_ID))
    header = wire.PaymentPayload(payload={"signature": "0x00"}, accepted=ours.accepts[0], resource=ours.resource,
                                 extensions=extensions).to_header()
    decoded = decode_payment_signature_header(header)
    assert isinstance(decoded, SdkPaymentPayload)
    assert encode_payment_signature_header(decoded) == header  # and the SDK re-writes ours byte for byte
    payment_id, validation = sdk.extract_and_validate_payment_identifier(decoded)
    assert validation.valid and payment_id == PAYMENT_ID
    assert sdk.validate_payment_identifier_requirement(decoded, server_required=True).valid


def test_we_declare_the_sdk_appends_and_we_extract_its_id() -> None:
    ours = wire.PaymentRequired(accepts=(wire.PaymentRequirements.from_dict(OFFER),),
                                resource=wire.ResourceInfo(url="https://api.example/order"),
                                extensions={pid.PAYMENT_IDENTIFIER: pid.declare(True)})
    decoded = decode_payment_required_header(ours.to_header())
    assert isinstance(decoded, SdkPaymentRequired) and decoded.extensions is not None
    assert encode_payment_required_header(decoded) == ours.to_header()
    sdk_id = sdk.generate_payment_id()
    payload = SdkPaymentPayload(x402_version=2, payload={"signature": "0x00"}, accepted=decoded.accepts[0],
                                resource=decoded.resource,
                                extensions=sdk.append_payment_identifier_to_extensions(dict(decoded.extensions),
                                                                                      sdk_id))
    header = encode_payment_signature_header(payload)
    read = wire.PaymentPayload.from_header(header)
    assert read.to_header() == header
    assert pid.extract(read.extensions, required=True) == sdk_id
    assert read.extensions == pid.append({pid.PAYMENT_IDENTIFIER: pid.declare(True)}, sdk_id)


# -- the same verdicts on odd input ----------------------------------------------------------------------------

_ENTRIES: list[Any] = [
    None, {}, [], 0, False, "x", {"info": None}, {"info": {}}, {"info": "x"}, {"info": {"required": True}},
    {"info": {"required": "yes", "id": PAYMENT_ID}}, {"info": {"id": PAYMENT_ID}}, {"info": {"required": 1}},
    {"info": {"required": False, "id": PAYMENT_ID}}, {"info": {"required": True, "id": PAYMENT_ID}, "x": 1},
    {"info": {"required": False, "id": 5}}, {"info": {"required": False, "id": "short"}},
    {"info": {"required": False, "id": ""}}, {"info": {"required": False, "id": None}},
    {"info": {"required": False, "id": "x" * 129}}, {"info": {"required": False, "id": "x" * 128}},
    {"info": {"required": False, "id": "has a space in it"}}, {"info": {"required": False, "id": "é" * 16}},
]
_SDK_ACCEPTS_WE_REFUSE = {"trailing newline": {"info": {"required": False, "id": PAYMENT_ID + "\n"}}}


def _sdk_verdict(entry: Any) -> tuple[bool, str | None]:
    extensions = {} if entry is None else {sdk.PAYMENT_IDENTIFIER: entry}
    payload = SdkPaymentPayload(x402_version=2, payload={}, accepted=SdkPaymentRequirements.model_validate(OFFER),
                                extensions=extensions or None)
    found, validation = sdk.extract_and_validate_payment_identifier(payload)
    return validation.valid, found


def _our_verdict(entry: Any) -> tuple[bool, str | None]:
    try:
        return True, pid.extract({} if entry is None else {pid.PAYMENT_IDENTIFIER: entry}, required=False)
    except pid.PaymentIdentifierError:
        return False, None


@pytest.mark.parametrize("entry", _ENTRIES, ids=[json.dumps(e)[:40] for e in _ENTRIES])
def test_extract_agrees_with_the_sdk(entry: Any) -> None:
    assert _our_verdict(entry) == _sdk_verdict(entry)


@pytest.mark.parametrize("entry", _ENTRIES, ids=[json.dumps(e)[:40] for e in _ENTRIES])
def test_append_agrees_with_the_sdk(entry: Any) -> None:
    declared = {"other": {"info": {}}} if entry is None else {pid.PAYMENT_IDENTIFIER: entry, "other": 1}
    theirs = sdk.append_payment_identifier_to_extensions(copy.deepcopy(declared), PAYMENT_ID)
    assert _compact(pid.append(copy.deepcopy(declared), PAYMENT_ID)) == _compact(theirs)
    # An invalid id is refused by both, but only when it would be sent.
    would_send = sdk.is_payment_identifier_extension(declared.get(pid.PAYMENT_IDENTIFIER))
    assert pid.is_declaration(declared.get(pid.PAYMENT_IDENTIFIER)) == would_send
    if would_send:
        with pytest.raises(ValueError):
            sdk.append_payment_identifier_to_extensions(copy.deepcopy(declared), "short")
        with pytest.raises(pid.PaymentIdentifierError):
            pid.append(copy.deepcopy(declared), "short")
    else:
        assert pid.append(copy.deepcopy(declared), "short") == declared


def test_documented_differences_from_the_python_sdk() -> None:
    # The SDK's re.match("^...+$") accepts a trailing newline; the schema's ECMA-262 pattern (and the TypeScript
    # SDK) do not, nor do we.
    for entry in _SDK_ACCEPTS_WE_REFUSE.values():
        assert _sdk_verdict(entry) == (True, PAYMENT_ID + "\n")
        assert _our_verdict(entry) == (False, None)
    # The SDK validates ``info`` against the schema the client echoes back; we against our own.
    odd_schema = {"info": {"required": False, "id": PAYMENT_ID}, "schema": {"type": "object", "required": ["zz"]}}
    assert _sdk_verdict(odd_schema) == (False, None)
    assert _our_verdict(odd_schema) == (True, PAYMENT_ID)


# -- over HTTP -------------------------------------------------------------------------------------------------


async def test_sdk_client_retries_with_its_id_and_our_paywall_charges_once(
        chain: EmbeddedChain, facilitator: Facilitator) -> None:
    from x402.http.clients import x402HttpxClient
    from x402.mechanisms.evm.exact import register_exact_evm_client

    from x402 import x402Client

    key, payer = await funded(chain)
    port = free_port()
    paywall = Paywall(InProcessFacilitatorClient(facilitator), base_url=f"http://127.0.0.1:{port}")
    paywall.route("/order", price="$0.01", pay_to=PAYEE, network=NETWORK, payment_identifier=True)
    app = FastAPI()
    orders: list[str | None] = []

    @app.get("/order")
    async def order(request: Request) -> dict[str, int]:
        orders.append(request.state.x402.payment_id)
        return {"order": len(orders)}

    sdk_client = x402Client()
    register_exact_evm_client(sdk_client, Account.from_key(key))
    sdk_client.set_spend_controls(False)
    sdk_id = sdk.generate_payment_id()

    async def add_id(context: Any) -> None:  # the SDK's documented way (its payment-identifier client example)
        extensions = context.payment_required.extensions
        if extensions is not None:
            sdk.append_payment_identifier_to_extensions(extensions, sdk_id)

    sdk_client.on_before_payment_creation(add_id)
    sent: list[str] = []
    paywalled = PaywallMiddleware(app, paywall)

    async def recorded(scope: Any, receive: Any, send: Any) -> None:  # what the SDK client sent
        raw = dict(scope.get("headers", ())).get(b"payment-signature")
        if raw is not None:
            sent.append(raw.decode())
        await paywalled(scope, receive, send)

    async with serve(recorded, port) as base, x402HttpxClient(sdk_client, timeout=30) as http:
        first = await http.get(base + "/order")
        again = await http.get(base + "/order")
    assert first.status_code == again.status_code == 200, (first.text, again.text)
    assert len(sent) == 2 and sent[0] != sent[1]  # two signed authorizations, one payment id
    assert {pid.extract(wire.PaymentPayload.from_header(h).extensions, required=True) for h in sent} == {sdk_id}
    assert first.headers["payment-response"] == again.headers["payment-response"]  # the first receipt, again
    receipt = wire.SettleResponse.from_header(first.headers["payment-response"])
    assert receipt.success and receipt.payer == payer
    assert orders == [sdk_id, sdk_id]  # served twice, with the id the SDK chose; charged once
    assert await chain.balance_of(TOKEN, payer) == 990_000
    assert await chain.balance_of(TOKEN, PAYEE) == 10_000


def _sdk_paywall_with_payment_identifier(facilitator_url: str, seen: list[tuple[str | None, bool]]) -> Any:
    """The SDK's FastAPI paywall declaring ``payment-identifier`` (required); its after-verify hook reads the
    id with the SDK's extractor. Built in a worker thread (it calls ``/supported`` with a blocking client)."""
    from x402.http import FacilitatorConfig, HTTPFacilitatorClient
    from x402.http.middleware.fastapi import payment_middleware
    from x402.mechanisms.evm.exact import register_exact_evm_server

    from x402 import x402ResourceServer

    server = x402ResourceServer(HTTPFacilitatorClient(FacilitatorConfig(url=facilitator_url, timeout=30)))
    register_exact_evm_server(server, NETWORK)

    async def after_verify(context: Any) -> None:
        found, validation = sdk.extract_and_validate_payment_identifier(context.payment_payload)
        seen.append((found, validation.valid))

    server.on_after_verify(after_verify)
    price = {"amount": "10000", "asset": TOKEN, "extra": OFFER["extra"]}
    routes = {"GET /order": {"accepts": {"scheme": "exact", "payTo": PAYEE, "price": price, "network": NETWORK,
                                         "maxTimeoutSeconds": 60},
                             "description": "Order", "resource": "http://sdk.example/order",
                             "extensions": {sdk.PAYMENT_IDENTIFIER: sdk.declare_payment_identifier_extension(True)}}}
    middleware = payment_middleware(routes, server)
    app = FastAPI()

    @app.middleware("http")
    async def x402(request: Any, call_next: Any) -> Any:
        return await middleware(request, call_next)

    @app.get("/order")
    async def order() -> dict[str, str]:
        return {"order": "placed"}

    return app


async def test_our_agent_sends_its_id_to_the_sdk_paywall(chain: EmbeddedChain,
                                                         facilitator: Facilitator) -> None:
    key, payer = await funded(chain)
    seen: list[tuple[str | None, bool]] = []
    async with serve(create_facilitator_app(facilitator), free_port()) as facilitator_url:
        app = await asyncio.to_thread(_sdk_paywall_with_payment_identifier, facilitator_url, seen)
        auth = X402PaymentAuth(Wallet(key), Budget(max_per_request="$0.05"), networks={NETWORK})
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sdk.example",
                                     timeout=30) as http:
            unpaid = await http.get("/order")
            paid = await http.get("/order", auth=auth, extensions={PAYMENT_ID_KEY: PAYMENT_ID})
    assert unpaid.status_code == 402
    declared = wire.PaymentRequired.from_header(unpaid.headers["payment-required"]).extensions
    assert declared == {pid.PAYMENT_IDENTIFIER: pid.declare(True)}  # the SDK's declaration, read by us
    assert paid.status_code == 200, paid.text
    sent = wire.PaymentPayload.from_header(paid.request.headers["payment-signature"])
    assert sent.extensions == pid.append(declared, PAYMENT_ID)
    assert seen == [(PAYMENT_ID, True)]  # the SDK found our id, valid, and its echo check let the payment on
    receipt = payment_receipt(paid)
    assert receipt is not None and receipt.success and receipt.payer == payer
    assert await chain.balance_of(TOKEN, PAYEE) == 10_000
