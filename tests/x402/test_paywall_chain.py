"""Bad input at the paywall, answered by the REAL facilitator (in-process client) on the embedded chain: every
refusal is a 402 with a fresh ``PAYMENT-REQUIRED`` naming the problem, the handler never runs unpaid, and
``balanceOf`` does not move unless a payment was settled. The facilitator double in test_paywall.py covers
only what a real chain cannot produce on demand (``settlement_pending``, a failing settlement)."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from authgate.agent.x402 import Budget, PaymentUnavailable, Wallet, X402PaymentAuth, payment_receipt
from authgate.clock import SystemClock
from authgate.demo.servers import free_port
from authgate.store import Store
from authgate.x402 import errors as e
from authgate.x402 import localchain, wire
from authgate.x402.chain.embedded import EmbeddedChain
from authgate.x402.facilitator import FacilitatorClient, InProcessFacilitatorClient
from authgate.x402.facilitator.service import Facilitator
from authgate.x402.paywall import Paywall, PaywallMiddleware

from .facilitator_support import new_payer, pay, with_payload

NETWORK = localchain.NETWORK
TOKEN = localchain.TOKEN_ADDRESS
BASE = "https://api.example"
PAYEE = localchain.label_address("x402-paywall-chain-payee")
FUNDS = 1_000_000


class Switch:
    """The real in-process facilitator, or (when ``down``) an HTTP client of a loopback port nobody listens
    on: "unreachable" is a real connection refusal, not a raised stand-in."""

    def __init__(self, facilitator: Facilitator) -> None:
        self.live = InProcessFacilitatorClient(facilitator)
        self.dead = FacilitatorClient(f"http://127.0.0.1:{free_port()}", timeout=5)
        self.down = False
        self.settles = 0

    async def verify(self, payload: wire.PaymentPayload, req: wire.PaymentRequirements) -> wire.VerifyResponse:
        return await (self.dead if self.down else self.live).verify(payload, req)

    async def settle(self, payload: wire.PaymentPayload, req: wire.PaymentRequirements) -> wire.SettleResponse:
        self.settles += 1
        return await (self.dead if self.down else self.live).settle(payload, req)


@dataclass
class Env:
    chain: EmbeddedChain
    switch: Switch
    http: httpx.AsyncClient
    key: str
    payer: str
    served: list[str] = field(default_factory=list)
    seen: list[str | None] = field(default_factory=list)

    async def balances(self) -> tuple[int, int]:
        return await self.chain.balance_of(TOKEN, self.payer), await self.chain.balance_of(TOKEN, PAYEE)

    async def offer(self) -> wire.PaymentRequirements:
        r = await self.http.get("/weather")
        assert r.status_code == 402
        return wire.PaymentRequired.from_header(r.headers["payment-required"]).accepts[0]

    async def paid(self, header: str, path: str = "/weather") -> httpx.Response:
        return await self.http.get(path, headers={"PAYMENT-SIGNATURE": header})


@pytest.fixture
async def env(store: Store) -> AsyncIterator[Env]:
    chain = EmbeddedChain()
    switch = Switch(Facilitator({NETWORK: chain}, store, clock=SystemClock(), settle_timeout=20))
    paywall = Paywall(switch, base_url=BASE)
    paywall.route("/weather", price="$0.01", pay_to=PAYEE, network=NETWORK, description="Weather")
    paywall.route("/boom", price="$0.01", pay_to=PAYEE, network=NETWORK)
    paywall.route("/teapot", price="$0.01", pay_to=PAYEE, network=NETWORK)
    app = FastAPI()
    key, payer = new_payer()
    await chain.mint(payer, FUNDS)
    state = Env(chain, switch, httpx.AsyncClient(), key, payer)

    @app.get("/weather")
    async def weather(request: Request) -> dict[str, str]:
        state.served.append(request.state.x402.payer)
        return {"report": "sunny"}

    @app.get("/boom")
    async def boom() -> None:
        state.served.append("boom")
        raise RuntimeError("handler failed")

    @app.get("/teapot")
    async def teapot() -> JSONResponse:
        state.served.append("teapot")
        return JSONResponse({"error": "no"}, status_code=418)

    await state.http.aclose()
    counted = _Counting(PaywallMiddleware(app, paywall), state)
    state.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=counted), base_url=BASE)
    try:
        yield state
    finally:
        await state.http.aclose()
        await switch.dead.aclose()
        await chain.aclose()


class _Counting:
    """Outermost ASGI layer: records the ``PAYMENT-SIGNATURE`` of every request that reaches the paywall."""

    def __init__(self, app: Any, state: Env) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            raw = headers.get(b"payment-signature")
            self.state.seen.append(raw.decode() if raw is not None else None)
        await self.app(scope, receive, send)


def refused(r: httpx.Response, error: str) -> wire.PaymentRequired:
    """A spec-shaped refusal: 402, body ``{}``, a fresh offer list whose ``error`` is ``error``, nothing paid."""
    assert r.status_code == 402, r.text
    assert r.content == b"{}" and "payment-response" not in r.headers
    required = wire.PaymentRequired.from_header(r.headers["payment-required"])
    assert required.error == error
    assert required.accepts and required.accepts[0].pay_to == PAYEE
    return required


@pytest.mark.parametrize("header", [
    "not base64!", base64.b64encode(b"not json").decode(), base64.b64encode(b"[]").decode(),
    base64.b64encode(b'{"x402Version":2,"payload":{}}').decode(), "A" * 200_000,
])
async def test_malformed_header_is_refused_and_nothing_moves(env: Env, header: str) -> None:
    r = await env.paid(header)
    assert r.status_code == 402
    assert wire.PaymentRequired.from_header(r.headers["payment-required"]).error in (e.INVALID_PAYLOAD,
                                                                                     e.INVALID_X402_VERSION)
    assert env.served == [] and await env.balances() == (FUNDS, 0)


@pytest.mark.parametrize("change", [
    {"network": "eip155:84532"}, {"asset": "0x" + "11" * 20}, {"pay_to": "0x" + "33" * 20},
    {"amount": "9999"}, {"amount": "10001"}, {"max_timeout_seconds": 3600},
    {"extra": {"name": "USD Coin", "version": "2"}},
])
async def test_tampered_accepted_is_not_an_offer(env: Env, change: dict[str, Any]) -> None:
    offer = await env.offer()
    tampered = replace(offer, **change)
    # Signed consistently with the tampered terms: only the offer match can catch it.
    payment = pay(env.key, tampered, asset=offer.asset)
    refused(await env.paid(payment.to_header()), "No matching payment requirements")
    assert env.served == [] and await env.balances() == (FUNDS, 0)


@pytest.mark.parametrize(("bend", "reason"), [
    ({"value": 9_999}, e.VALUE_MISMATCH),                                   # underpayment
    ({"value": 10_001}, e.VALUE_MISMATCH),                                  # overpayment
    ({"to": "0x" + "33" * 20}, e.RECIPIENT_MISMATCH),                       # wrong payTo in the authorization
    ({"chain_id": 84532}, e.INVALID_SIGNATURE),                             # signed for another network
    ({"asset": "0x" + "11" * 20}, e.INVALID_SIGNATURE),                     # signed for another asset
    ({"domain": ("USD Coin", "2")}, e.INVALID_SIGNATURE),                   # another EIP-712 domain
    ({"valid_before": "past"}, e.VALID_BEFORE),                             # expired
    ({"valid_after": "future"}, e.VALID_AFTER),                             # not yet valid
])
async def test_authorization_that_does_not_fit_the_offer_is_refused_by_the_facilitator(
        env: Env, bend: dict[str, Any], reason: str) -> None:
    offer = await env.offer()
    now = int(time.time())  # read at run time, never at collection time
    if bend.get("valid_before") == "past":
        bend = {"valid_before": now - 1}
    if bend.get("valid_after") == "future":
        bend = {"valid_after": now + 600}
    refused(await env.paid(pay(env.key, offer, **bend).to_header()), reason)
    assert env.served == [] and env.switch.settles == 0 and await env.balances() == (FUNDS, 0)


async def test_bad_signatures_are_refused(env: Env) -> None:
    offer = await env.offer()
    other_key, _ = new_payer()
    forged = pay(other_key, offer)  # signed by someone else, claiming our payer
    forged = with_payload(forged, **{"from": env.payer})
    refused(await env.paid(forged.to_header()), e.INVALID_SIGNATURE)
    good = pay(env.key, offer)
    sig = good.payload["signature"]
    flipped = sig[:10] + ("0" if sig[10] != "0" else "1") + sig[11:]  # recovers to some other address
    for signature in (flipped, "0x" + "00" * 65):  # ... or to nothing at all
        r = await env.paid(with_payload(good, signature=signature).to_header())
        assert r.status_code == 402 and r.content == b"{}"
        assert wire.PaymentRequired.from_header(r.headers["payment-required"]).error in (
            e.INVALID_SIGNATURE, e.FAILED_TO_VERIFY_SIGNATURE)
    assert env.served == [] and env.switch.settles == 0 and await env.balances() == (FUNDS, 0)


async def test_reused_nonce_pays_once(env: Env) -> None:
    offer = await env.offer()
    payment = pay(env.key, offer)
    first = await env.paid(payment.to_header())
    assert first.status_code == 200 and first.json() == {"report": "sunny"}
    receipt = wire.SettleResponse.from_header(first.headers["payment-response"])
    assert receipt.success and receipt.payer == env.payer
    refused(await env.paid(payment.to_header()), e.NONCE_ALREADY_USED)
    # the same nonce under a fresh signature of a different (valid) authorization is just as used
    again = pay(env.key, offer, nonce=bytes.fromhex(payment.payload["authorization"]["nonce"][2:]))
    refused(await env.paid(again.to_header()), e.NONCE_ALREADY_USED)
    assert env.served == [env.payer] and await env.balances() == (FUNDS - 10_000, 10_000)


async def test_insufficient_balance_is_refused(env: Env) -> None:
    offer = await env.offer()
    key, poor = new_payer()
    await env.chain.mint(poor, 9_999)
    refused(await env.paid(pay(key, offer).to_header()), e.INSUFFICIENT_BALANCE)
    assert env.served == [] and await env.chain.balance_of(TOKEN, poor) == 9_999
    assert await env.balances() == (FUNDS, 0)


async def test_facilitator_unreachable_is_a_402_and_the_authorization_stays_usable(env: Env) -> None:
    offer = await env.offer()
    header = pay(env.key, offer).to_header()
    env.switch.down = True
    r = await env.paid(header)
    required = refused(r, "facilitator_unavailable")
    assert r.headers["retry-after"] == "5" and r.headers["cache-control"] == "no-store"
    assert required.accepts[0] == offer  # a fresh, complete offer list: the client can pay again later
    assert env.served == [] and env.switch.settles == 0 and await env.balances() == (FUNDS, 0)
    env.switch.down = False  # the facilitator is back: the very same authorization was never used
    ok = await env.paid(header)
    assert ok.status_code == 200 and env.served == [env.payer]
    assert await env.balances() == (FUNDS - 10_000, 10_000)


async def test_our_agent_retries_once_then_raises_a_typed_error(env: Env) -> None:
    env.switch.down = True
    auth = X402PaymentAuth(Wallet(env.key), Budget(max_per_request="$0.05"), networks={NETWORK})
    with pytest.raises(PaymentUnavailable) as raised:
        await env.http.get("/weather", auth=auth)
    assert raised.value.retry_after == 5
    unpaid, *paid = env.seen
    assert unpaid is None and len(paid) == 2 and paid[0] == paid[1]  # one signature, sent twice, no loop
    assert auth.ledger.spent_today() == Decimal("0.01")  # counted once: signed once
    assert env.served == [] and await env.balances() == (FUNDS, 0)


async def test_our_agent_recovers_when_the_facilitator_comes_back_between_attempts(env: Env) -> None:
    flips: list[int] = []
    live_verify = env.switch.verify

    async def flaky(payload: wire.PaymentPayload, req: wire.PaymentRequirements) -> wire.VerifyResponse:
        flips.append(1)
        env.switch.down = len(flips) == 1  # unreachable for the first attempt only
        return await live_verify(payload, req)

    env.switch.verify = flaky  # type: ignore[method-assign]
    auth = X402PaymentAuth(Wallet(env.key), Budget(max_per_request="$0.05"), networks={NETWORK})
    r = await env.http.get("/weather", auth=auth)
    assert r.status_code == 200 and len(flips) == 2
    receipt = payment_receipt(r)
    assert receipt is not None and receipt.success
    assert len({h for h in env.seen if h is not None}) == 1  # the first signature was used, none re-signed
    assert await env.balances() == (FUNDS - 10_000, 10_000)


async def test_handler_error_after_verify_settles_nothing(env: Env) -> None:
    offer = await env.offer()
    tea = await env.paid(pay(env.key, offer).to_header(), "/teapot")
    assert tea.status_code == 418 and "payment-response" not in tea.headers
    with pytest.raises(RuntimeError):
        await env.paid(pay(env.key, offer).to_header(), "/boom")
    assert env.served == ["teapot", "boom"] and env.switch.settles == 0
    assert await env.balances() == (FUNDS, 0)


async def test_paid_request_moves_exactly_the_price(env: Env) -> None:
    auth = X402PaymentAuth(Wallet(env.key), Budget(max_per_request="$0.05"), networks={NETWORK})
    r = await env.http.get("/weather", auth=auth)
    assert r.status_code == 200 and r.json() == {"report": "sunny"}
    receipt = payment_receipt(r)
    assert receipt is not None and receipt.success and receipt.transaction.startswith("0x")
    assert env.served == [env.payer] and await env.balances() == (FUNDS - 10_000, 10_000)
    assert receipt.payer == env.payer
