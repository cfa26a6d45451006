"""A settlement whose outcome the paywall could not learn (the facilitator died after the transfer, or kept saying
``settlement_pending``): the agent re-sends the same PAYMENT-SIGNATURE and is answered with the receipt of the
transfer that did land, once; nothing is transferred twice; a replay after that is refused as before.

The facilitator double is idempotent per authorization, as ours is (its ``/settle`` of a settled authorization
returns the first receipt, while ``/verify`` says the nonce is used). The same story against real processes (the
``authgate facilitator`` killed -9, the devchain) is ``tests/scale/test_crash.py``."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from authgate.x402 import eip3009, wire
from authgate.x402.paywall import Paywall, PaywallMiddleware
from authgate.x402.paywall_store import DatabasePaywallStore

from .test_paywall import BASE, NETWORK, PAYEE, LedgerFacilitator, client, payer_wallet, required_of, signed_header

NONCE_USED = "invalid_exact_evm_nonce_already_used"


class CrashingFacilitator(LedgerFacilitator):
    """Idempotent ``/settle``. ``crash_after_transfer``: the next settle moves the money, then its answer is lost;
    ``still_pending``: that many settle answers say ``settlement_pending`` (the money moved at the first)."""

    def __init__(self) -> None:
        super().__init__()
        self.receipts: dict[tuple[str, bytes], wire.SettleResponse] = {}
        self.crash_after_transfer = False
        self.still_pending = 0
        self.settle_delay = 0.0

    async def settle(self, payload: wire.PaymentPayload, req: wire.PaymentRequirements) -> wire.SettleResponse:
        auth = eip3009.ExactEvmPayload.from_dict(payload.payload).authorization
        key = (auth.from_address.lower(), auth.nonce)
        await asyncio.sleep(self.settle_delay)
        if key in self.receipts:
            self.settle_calls += 1
            receipt = self.receipts[key]
        else:
            receipt = await super().settle(payload, req)
            if receipt.success:
                self.receipts[key] = receipt
        if self.crash_after_transfer:
            self.crash_after_transfer = False
            raise httpx.RemoteProtocolError("facilitator died before answering")
        if self.still_pending:
            self.still_pending -= 1
            return wire.SettleResponse(success=False, transaction="", network=req.network,
                                       payer=auth.from_address, error_reason="settlement_pending")
        return receipt

    def transfers(self) -> int:
        return len(self.receipts)


def _app(fac: LedgerFacilitator, paywall: Paywall | None = None, **route: Any) -> tuple[Any, list[str]]:
    from fastapi import FastAPI

    paywall = paywall or Paywall(fac, base_url=BASE)
    for path in ("/weather", "/other"):
        paywall.route(path, price="$0.01", pay_to=PAYEE, network=NETWORK, **route)
    inner = FastAPI()
    served: list[str] = []

    @inner.get("/weather")
    async def weather() -> dict[str, str]:
        served.append("weather")
        return {"report": "sunny"}

    @inner.get("/other")
    async def other() -> dict[str, str]:
        served.append("other")
        return {"report": "other"}

    return PaywallMiddleware(inner, paywall), served


@pytest.mark.parametrize("upfront", [False, True])
async def test_retry_of_a_lost_settlement_gets_the_transfer_and_the_resource_once(upfront: bool) -> None:
    fac = CrashingFacilitator()
    app, served = _app(fac, upfront=upfront)
    wallet = payer_wallet(fac)
    async with client(app) as http:
        offer = required_of(await http.get("/weather")).accepts[0]
        header = {"PAYMENT-SIGNATURE": signed_header(wallet, offer)}
        fac.crash_after_transfer = True
        lost = await http.get("/weather", headers=header)
        other_route = await http.get("/other", headers=header)  # the same signature elsewhere: no
        retried = await http.get("/weather", headers=header)
        replayed = await http.get("/weather", headers=header)
    assert lost.status_code == 402
    failed = wire.SettleResponse.from_header(lost.headers["payment-response"])
    assert not failed.success and failed.error_reason == "unexpected_settle_error"
    assert fac.transfers() == 1 and fac.balances[PAYEE.lower()] == 10_000  # the money moved nonetheless
    assert other_route.status_code == 402 and required_of(other_route).error == NONCE_USED
    assert retried.status_code == 200 and retried.json() == {"report": "sunny"}
    receipt = wire.SettleResponse.from_header(retried.headers["payment-response"])
    assert receipt == next(iter(fac.receipts.values()))
    assert replayed.status_code == 402 and required_of(replayed).error == NONCE_USED
    assert fac.transfers() == 1 and fac.balances[PAYEE.lower()] == 10_000  # once
    # Without upfront the handler ran for the lost attempt too (its answer withheld); with it, only when paid.
    assert served == (["weather"] if upfront else ["weather", "weather"])


async def test_a_settlement_still_pending_stays_collectable() -> None:
    """``settlement_pending`` twice (the paywall's own retry included): unknown, so a later re-send collects it."""
    fac = CrashingFacilitator()
    app, served = _app(fac)
    wallet = payer_wallet(fac)
    async with client(app) as http:
        offer = required_of(await http.get("/weather")).accepts[0]
        header = {"PAYMENT-SIGNATURE": signed_header(wallet, offer)}
        fac.still_pending = 2
        first = await http.get("/weather", headers=header)
        retried = await http.get("/weather", headers=header)
    assert first.status_code == 402
    assert wire.SettleResponse.from_header(first.headers["payment-response"]).error_reason == "settlement_pending"
    assert retried.status_code == 200
    assert wire.SettleResponse.from_header(retried.headers["payment-response"]).success
    assert fac.transfers() == 1 and served == ["weather", "weather"]


async def test_concurrent_retries_collect_once() -> None:
    fac = CrashingFacilitator()
    app, served = _app(fac)
    wallet = payer_wallet(fac)
    async with client(app) as http:
        offer = required_of(await http.get("/weather")).accepts[0]
        header = {"PAYMENT-SIGNATURE": signed_header(wallet, offer)}
        fac.crash_after_transfer = True
        assert (await http.get("/weather", headers=header)).status_code == 402
        fac.settle_delay = 0.05
        answers = await asyncio.gather(*(http.get("/weather", headers=header) for _ in range(5)))
    assert sorted(a.status_code for a in answers) == [200, 402, 402, 402, 402]
    assert all(required_of(a).error == NONCE_USED for a in answers if a.status_code == 402)
    assert fac.transfers() == 1 and served.count("weather") == 2


async def test_a_definite_failure_or_another_payer_is_not_collected() -> None:
    fac = CrashingFacilitator()
    app, _ = _app(fac)
    wallet = payer_wallet(fac)
    async with client(app) as http:
        offer = required_of(await http.get("/weather")).accepts[0]
        # A signature used elsewhere (the nonce is spent, no settlement of ours was ever unknown): refused.
        header = {"PAYMENT-SIGNATURE": signed_header(wallet, offer)}
        assert (await http.get("/weather", headers=header)).status_code == 200
        assert required_of(await http.get("/weather", headers=header)).error == NONCE_USED
        # A definite settlement failure is not remembered: the re-send is an ordinary new attempt.
        fac.fail_settle = "transaction_failed"
        header = {"PAYMENT-SIGNATURE": signed_header(wallet, offer)}
        first = await http.get("/weather", headers=header)
        fac.fail_settle = None
        again = await http.get("/weather", headers=header)
    assert first.status_code == 402 and again.status_code == 200
    assert fac.transfers() == 2


async def test_retry_collects_through_another_paywall_process_sharing_the_database(store: Any) -> None:
    """Two paywall instances over one DatabasePaywallStore (two processes of the resource): the lost attempt on
    one, the retry on the other."""
    fac = CrashingFacilitator()
    app_a, _ = _app(fac, Paywall(fac, base_url=BASE, store=DatabasePaywallStore(store)))
    app_b, served_b = _app(fac, Paywall(fac, base_url=BASE, store=DatabasePaywallStore(store)))
    wallet = payer_wallet(fac)
    async with client(app_a) as a, client(app_b) as b:
        offer = required_of(await a.get("/weather")).accepts[0]
        header = {"PAYMENT-SIGNATURE": signed_header(wallet, offer)}
        fac.crash_after_transfer = True
        assert (await a.get("/weather", headers=header)).status_code == 402
        retried = await b.get("/weather", headers=header)
        replayed = await a.get("/weather", headers=header)
    assert retried.status_code == 200 and served_b == ["weather"]
    assert replayed.status_code == 402 and fac.transfers() == 1


@pytest.mark.parametrize("pending", [0, 4])
async def test_the_paying_agent_resends_by_itself_and_is_paid_once(pending: int) -> None:
    """Our SDK agent meets the lost settlement (``unexpected_settle_error``, or ``settlement_pending`` for a
    while): it re-sends the very same signed payment after a pause, never a new one, and gets the resource and
    the receipt of the one transfer."""
    from authgate.agent.x402 import RECEIPT_KEY, Budget, X402PaymentAuth

    fac = CrashingFacilitator()
    app, served = _app(fac)
    wallet = payer_wallet(fac)
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)
        if pending:
            fac.still_pending = max(0, fac.still_pending - 1)  # the chain settles while the agent waits

    auth = X402PaymentAuth(wallet, Budget(max_per_request="$0.05"), networks={NETWORK}, sleep=sleep)
    fac.crash_after_transfer = not pending
    fac.still_pending = pending
    async with client(app, auth) as http:
        answer = await http.get("/weather")
    assert answer.status_code == 200 and answer.json() == {"report": "sunny"}
    assert answer.extensions[RECEIPT_KEY] == next(iter(fac.receipts.values()))
    assert fac.transfers() == 1 and fac.balances[PAYEE.lower()] == 10_000
    assert pauses and pauses[0] >= 2.0  # a pause before each re-send, growing
    assert pauses == sorted(pauses)
    assert len(served) == 1 + len(pauses)  # one run per attempt; the answer of the unknown ones withheld


async def test_the_paying_agent_gives_up_after_a_few_resends() -> None:
    """Still unknown after its re-sends: the agent returns the server's 402 (its PAYMENT-RESPONSE says why) and
    has signed nothing new."""
    from authgate.agent.x402 import SETTLE_RETRIES, Budget, X402PaymentAuth

    fac = CrashingFacilitator()
    app, _ = _app(fac)
    wallet = payer_wallet(fac)
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    signatures: list[bytes] = []

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        signatures.extend(v for k, v in scope["headers"] if k == b"payment-signature")
        await app(scope, receive, send)

    auth = X402PaymentAuth(wallet, Budget(max_per_request="$0.05"), networks={NETWORK}, sleep=sleep)
    fac.still_pending = 1000
    async with client(recording, auth) as http:
        answer = await http.get("/weather")
    assert answer.status_code == 402
    assert wire.SettleResponse.from_header(answer.headers["payment-response"]).error_reason == "settlement_pending"
    assert len(pauses) == SETTLE_RETRIES and fac.transfers() == 1
    assert len(signatures) == 1 + SETTLE_RETRIES and len(set(signatures)) == 1  # the same signed payment
