"""v1 ``/verify`` and ``/settle`` bodies at our facilitator (spec §3.5, authgate profile): mapped onto the v2
checks, settled exactly once whichever version asks, answered with the network as the request named it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from authgate.store import Store
from authgate.x402 import errors as e
from authgate.x402 import localchain
from authgate.x402.chain.embedded import EmbeddedChain
from authgate.x402.facilitator.http import create_facilitator_app, parse_request
from authgate.x402.facilitator.service import Facilitator
from authgate.x402.wire import FacilitatorRequest, PaymentPayload, PaymentRequirements, SettleResponse, VerifyResponse

from .facilitator_support import PAY_TO, RESOURCE, new_payer, pay, requirements

TOKEN = localchain.TOKEN_ADDRESS


def v1_body(p: PaymentPayload, req: PaymentRequirements, *, scheme: str = "exact",
            network: str | None = None, req_network: str | None = None) -> bytes:
    """What a v1 resource server sends its facilitator for a v1 ``X-PAYMENT``."""
    requirements_v1 = req.to_v1_dict(RESOURCE)
    if req_network is not None:
        requirements_v1["network"] = req_network
    body: dict[str, Any] = {
        "x402Version": 1,
        "paymentPayload": {"x402Version": 1, "scheme": scheme, "network": network or req.network,
                           "payload": p.payload},
        "paymentRequirements": requirements_v1,
    }
    return json.dumps(body).encode()


@pytest.fixture
async def env(store: Store) -> AsyncIterator[tuple[EmbeddedChain, httpx.AsyncClient]]:
    chain = EmbeddedChain()
    app = create_facilitator_app(Facilitator({localchain.NETWORK: chain}, store, settle_timeout=30))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://fac.test") as http:
        yield chain, http
    await chain.aclose()


def test_legacy_names_become_caip2_and_the_payload_decides_accepted() -> None:
    key, _ = new_payer()
    req = requirements()
    parsed = parse_request(v1_body(pay(key, req), req, network="base-sepolia", req_network="base-sepolia"))
    assert parsed.answer_network == "base-sepolia"
    r = parsed.request
    assert r.x402_version == 1 and r.payment_requirements.network == "eip155:84532"
    assert r.payment_requirements.amount == req.amount and r.payment_requirements.pay_to == req.pay_to
    assert r.payment_payload.accepted.network == "eip155:84532" and r.payment_payload.x402_version == 1
    # A v2 body is untouched, and a body that is neither is a wire error (400 at the HTTP layer).
    assert parse_request(FacilitatorRequest(pay(key, req), req).to_json().encode()).answer_network is None
    with pytest.raises(e.X402WireError):
        parse_request(b'{"x402Version":1,"paymentPayload":{"x402Version":1},"paymentRequirements":{}}')


async def test_v1_verify_and_settle_move_money_once(env: tuple[EmbeddedChain, httpx.AsyncClient]) -> None:
    chain, http = env
    key, payer = new_payer()
    await chain.mint(payer, 100_000)
    req = requirements()
    p = pay(key, req)
    verdict = VerifyResponse.from_json((await http.post("/verify", content=v1_body(p, req))).content)
    assert verdict.is_valid and verdict.payer == payer
    first = await http.post("/settle", content=v1_body(p, req))
    assert first.status_code == 200
    receipt = SettleResponse.from_json(first.content)
    assert receipt.success and receipt.network == localchain.NETWORK and receipt.transaction.startswith("0x")
    # The same authorization again, as v1 or as v2: the first result, never a second transfer.
    again_v1 = SettleResponse.from_json((await http.post("/settle", content=v1_body(p, req))).content)
    again_v2 = SettleResponse.from_json((await http.post(
        "/settle", content=FacilitatorRequest(p, req).to_json())).content)
    assert again_v1.transaction == again_v2.transaction == receipt.transaction
    assert await chain.balance_of(TOKEN, payer) == 90_000
    assert await chain.balance_of(TOKEN, PAY_TO) == 10_000


@pytest.mark.parametrize(("bend", "reason"), [
    ({"scheme": "upto"}, e.UNSUPPORTED_SCHEME),
    ({"network": "base-sepolia"}, e.NETWORK_MISMATCH),
])
async def test_v1_payload_for_another_scheme_or_network_is_refused(
        env: tuple[EmbeddedChain, httpx.AsyncClient], bend: dict[str, str], reason: str) -> None:
    chain, http = env
    key, payer = new_payer()
    await chain.mint(payer, 100_000)
    req = requirements()
    body = v1_body(pay(key, req), req, **bend)
    verify = await http.post("/verify", content=body)
    assert verify.status_code == 200
    assert VerifyResponse.from_json(verify.content).invalid_reason == reason
    settled = SettleResponse.from_json((await http.post("/settle", content=body)).content)
    assert not settled.success and settled.error_reason == reason
    assert await chain.balance_of(TOKEN, payer) == 100_000


async def test_v1_legacy_network_we_do_not_serve_is_a_verdict_not_an_error(
        env: tuple[EmbeddedChain, httpx.AsyncClient]) -> None:
    _, http = env
    key, _ = new_payer()
    req = requirements()
    body = v1_body(pay(key, req), req, network="base-sepolia", req_network="base-sepolia")
    verify = await http.post("/verify", content=body)
    assert verify.status_code == 200 and not VerifyResponse.from_json(verify.content).is_valid
    settled = await http.post("/settle", content=body)
    assert settled.status_code == 200
    answer = SettleResponse.from_json(settled.content)
    assert not answer.success and answer.network == "base-sepolia"  # named as the request named it
    assert (await http.post("/verify", content=b'{"x402Version":1}')).status_code == 400
