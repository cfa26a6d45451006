"""The paying agent and a *server's* budget approval, end to end against the real paywall with authgate's trust
guard: a payment over the agent's budget at the server answers ``403 budget_approval_pending``; the agent repeats
it with ``Authgate-Approval`` until the person decides through the approvals service — approved → paid once,
denied or expired → ``ApprovalDenied``, no decision in time → ``ApprovalTimeout``; an authorization that would
expire while waiting is replaced only after it expired. A sync client waits too."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest

from authgate.agent.x402 import (
    APPROVAL_HEADER,
    ERR_BUDGET_DENIED,
    ERR_BUDGET_PENDING,
    MAX_APPROVAL_POLLS,
    ApprovalDenied,
    ApprovalTimeout,
    Budget,
    BudgetExceeded,
    Ledger,
    X402PaymentAuth,
    payment_receipt,
)
from authgate.approvals import ApprovalService
from authgate.clock import FrozenClock
from authgate.store import Store
from authgate.trust import wire as trust_wire
from authgate.trust.budgets import BudgetGuard
from authgate.trust.paywall import PaymentTrustGuard
from authgate.trust.periods import period_key
from authgate.trust.store import TrustStore
from authgate.x402 import eip3009, wire
from tests.helpers import add_user

from .test_agent_pay import offer, wallet
from .test_paywall import NETWORK, LedgerFacilitator, client, make_app, payer_wallet

PRICE = 10_000  # the paywall's "$0.01" in atomic units


class Person:
    """The agent's ``sleep``: time passes for everyone (the frozen clock), and the person decides on the
    pending budget request once ``decide_at`` is reached."""

    def __init__(self, approvals: ApprovalService, clock: FrozenClock, subject: str,
                 decision: bool | None, decide_at: float = 0.0) -> None:
        self.approvals, self.clock, self.subject = approvals, clock, subject
        self.decision, self.decide_at = decision, decide_at
        self.waits: list[float] = []
        self.decided: list[str] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.advance(seconds)
        if self.decision is None or self.clock.now() < self.decide_at:
            return
        for request in await self.approvals.pending_for(self.subject):
            if request.kind == trust_wire.APPROVAL_KIND_BUDGET:
                await self.approvals.decide(request.id, self.decision, by=self.subject, channel="web")
                self.decided.append(request.id)


def recording(app: Any, seen: list[dict[str, str]]) -> Callable[..., Awaitable[None]]:
    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append({k.decode().lower(): v.decode() for k, v in scope["headers"]})
        await app(scope, receive, send)

    return wrapped


class World:
    def __init__(self, store: Store, clock: FrozenClock) -> None:
        self.store, self.clock = store, clock
        self.trust = TrustStore(store)
        self.approvals = ApprovalService(store, clock)
        self.fac = LedgerFacilitator()
        self.wallet = payer_wallet(self.fac)
        self.payer = self.wallet.address.lower()
        self.seen: list[dict[str, str]] = []
        self.served: dict[str, Any] = {}
        self.owner = ""

    async def setup(self, approval_ttl: int = 900) -> None:
        self.owner = await add_user(self.store, "alice")
        await self.trust.set_budget(self.payer, per_request=PRICE - 1, approver=self.owner)
        guard = PaymentTrustGuard(self.trust, self.clock,
                                  budgets=BudgetGuard(self.trust, self.clock, self.approvals, approval_ttl))
        app, paywall, self.served = make_app(self.fac)
        paywall.guard = guard
        self.app = recording(app, self.seen)

    def agent(self, person: Person | None, **kw: Any) -> X402PaymentAuth:
        return X402PaymentAuth(self.wallet, Budget(), networks={NETWORK}, clock=self.clock.now, sleep=person,
                               ledger=Ledger(self.clock.now), **kw)

    def _sent(self) -> list[eip3009.Authorization]:
        out = []
        for headers in self.seen:
            if "payment-signature" in headers:
                payload = wire.PaymentPayload.from_header(headers["payment-signature"])
                out.append(eip3009.ExactEvmPayload.from_dict(payload.payload).authorization)
        return out

    def paid_with(self) -> list[str]:
        """The nonces of the authorizations the server was sent, in order."""
        return [a.nonce.hex() for a in self._sent()]

    def valid_before(self) -> list[int]:
        return [a.valid_before for a in self._sent()]


@pytest.fixture
async def world(store: Store, clock: FrozenClock) -> World:
    w = World(store, clock)
    await w.setup()
    return w


async def test_over_budget_the_agent_waits_for_the_person_and_pays_once_approved(world: World) -> None:
    person = Person(world.approvals, world.clock, world.owner, True, decide_at=world.clock.now() + 5)
    auth = world.agent(person, approval_poll=2)
    async with client(world.app, auth) as http:
        r = await http.get("/weather")
    assert r.status_code == 200 and r.json() == {"report": "sunny"}
    receipt = payment_receipt(r)
    assert receipt is not None and receipt.success
    assert person.waits == [2, 4] and len(person.decided) == 1  # decided at +6 s, paid on that repeat
    # unpaid, paid → pending, a pending repeat, then the approved repeat; all with one authorization
    assert len(world.seen) == 4 and len(set(world.paid_with())) == 1
    assert [h.get(APPROVAL_HEADER.lower()) for h in world.seen] == [None, None] + [person.decided[0]] * 2
    assert world.fac.verify_calls == world.fac.settle_calls == world.served["calls"] == 1
    assert await world.trust.spent(world.payer, period_key("day", world.clock.now())) == PRICE
    assert auth.ledger.spent_today() == Decimal("0.01")  # counted once by the agent too
    request = await world.approvals.get(person.decided[0])
    assert request is not None and request.status == "approved" and request.details["amount"] == str(PRICE)


async def test_a_denied_approval_is_a_clear_exception_and_nothing_is_paid(world: World) -> None:
    person = Person(world.approvals, world.clock, world.owner, False)
    async with client(world.app, world.agent(person)) as http:
        with pytest.raises(ApprovalDenied) as refused:
            await http.get("/weather")
    assert isinstance(refused.value, BudgetExceeded) and refused.value.reason == "approval_denied"
    assert refused.value.approval_id == person.decided[0]
    assert "did not approve" in str(refused.value) and "(denied)" in str(refused.value)
    assert world.fac.verify_calls == world.fac.settle_calls == world.served["calls"] == 0


async def test_an_expired_approval_is_denied(store: Store, clock: FrozenClock) -> None:
    world = World(store, clock)
    await world.setup(approval_ttl=30)
    person = Person(world.approvals, world.clock, world.owner, None)  # never decides
    async with client(world.app, world.agent(person, approval_poll=10)) as http:
        with pytest.raises(ApprovalDenied) as refused:
            await http.get("/weather")
    assert "(expired)" in str(refused.value) and sum(person.waits) >= 30
    assert world.fac.verify_calls == 0


async def test_no_decision_within_the_timeout(world: World) -> None:
    person = Person(world.approvals, world.clock, world.owner, None)
    async with client(world.app, world.agent(person, approval_timeout=7, approval_poll=3)) as http:
        with pytest.raises(ApprovalTimeout) as late:
            await http.get("/weather")
    assert late.value.reason == "approval_timeout" and late.value.approval_id
    assert person.waits == [3, 4] and "within 7 s" in str(late.value)
    assert world.fac.verify_calls == 0
    pending = await world.approvals.get(late.value.approval_id)
    assert pending is not None and pending.status == "pending"  # the person may still decide


async def test_a_long_wait_stays_within_httpx_redirect_limit(world: World) -> None:
    person = Person(world.approvals, world.clock, world.owner, None)
    async with client(world.app, world.agent(person, approval_timeout=600, approval_poll=1)) as http:
        with pytest.raises(ApprovalTimeout):
            await http.get("/weather")  # not httpx.TooManyRedirects: every repeat counts as one
    repeats = [h for h in world.seen if APPROVAL_HEADER.lower() in h]
    assert 8 <= len(repeats) <= MAX_APPROVAL_POLLS and 600 - 65 <= sum(person.waits) <= 600.001
    assert person.waits[:5] == [1, 2, 4, 8, 16]


async def test_an_authorization_expiring_while_waiting_is_replaced_only_after_it_expired(world: World) -> None:
    start = world.clock.now()
    person = Person(world.approvals, world.clock, world.owner, True, decide_at=start + 60)
    auth = world.agent(person, approval_poll=25)
    async with client(world.app, auth) as http:
        r = await http.get("/weather")
    assert r.status_code == 200
    nonces = world.paid_with()
    first, second = nonces[0], nonces[-1]
    assert first != second and nonces == [first, first, second]
    # waited 25 s (still ~35 s of validity: repeated), 30 s (~5 s left: too little), then until it had expired
    # (+5 s for clocks) before signing the second one
    valid = world.valid_before()
    assert person.waits[:2] == [25, 30] and 9 < person.waits[2] <= 10
    assert valid[-1] - 60 >= valid[0] + 5 and world.clock.now() >= valid[0] + 5
    assert world.fac.settle_calls == 1 and auth.ledger.spent_today() == Decimal("0.01")
    record = r.extensions["x402_payment"]
    assert record.authorization["nonce"].removeprefix("0x") == second


class DownOnce(LedgerFacilitator):
    """Unreachable for the next ``/verify`` once ``trip`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.trip = False

    async def verify(self, payload: wire.PaymentPayload, req: wire.PaymentRequirements) -> wire.VerifyResponse:
        if self.trip:
            self.trip = False
            self.verify_calls += 1
            raise httpx.ConnectError("facilitator down")
        return await super().verify(payload, req)


async def test_an_approved_payment_the_facilitator_missed_is_repeated_with_the_same_approval(
        store: Store, clock: FrozenClock) -> None:
    world = World(store, clock)
    world.fac = DownOnce()
    world.wallet = payer_wallet(world.fac)
    world.payer = world.wallet.address.lower()
    await world.setup()
    person = Person(world.approvals, world.clock, world.owner, True)
    world.fac.trip = True  # pending repeats never reach /verify: the approved repeat is the first that does
    async with client(world.app, world.agent(person)) as http:
        r = await http.get("/weather")
    assert r.status_code == 200 and world.fac.verify_calls == 2 and world.fac.settle_calls == 1
    assert len(set(world.paid_with())) == 1  # the same signed request, sent once more
    assert await world.trust.spent(world.payer, period_key("day", world.clock.now())) == PRICE


async def test_without_approval_timeout_the_answer_is_returned(world: World) -> None:
    async with client(world.app, world.agent(None, approval_timeout=None)) as http:
        r = await http.get("/weather")
    assert r.status_code == 403 and r.json()["error"] == ERR_BUDGET_PENDING and r.json()["approval_id"]


def test_a_sync_client_waits_too() -> None:
    answers = iter([(403, {"error": ERR_BUDGET_PENDING, "approval_id": "ap_1"}),
                    (403, {"error": ERR_BUDGET_PENDING, "approval_id": "ap_1"}),
                    (200, {"ok": True})])
    seen: list[str | None] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get(APPROVAL_HEADER))  # the request object is reused: read it now
        if "payment-signature" not in request.headers:
            required = wire.PaymentRequired(accepts=(offer(),))
            return httpx.Response(402, headers={"PAYMENT-REQUIRED": required.to_header()})
        status, body = next(answers)
        return httpx.Response(status, json=body)

    auth = X402PaymentAuth(wallet(), Budget(), networks={NETWORK}, approval_poll=0.01)
    with httpx.Client(transport=httpx.MockTransport(handle), auth=auth) as sync:
        r = sync.get("https://api.example/x")
    assert r.status_code == 200 and seen == [None, None, "ap_1", "ap_1"]


@pytest.mark.parametrize("body", [{"error": ERR_BUDGET_PENDING},                              # no id
                                  {"error": ERR_BUDGET_PENDING, "approval_id": "bad id\r\nX: 1"},
                                  {"error": "budget_exceeded"}])
def test_other_refusals_are_returned_as_they_are(body: dict[str, Any]) -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if "payment-signature" not in request.headers:
            required = wire.PaymentRequired(accepts=(offer(),))
            return httpx.Response(402, headers={"PAYMENT-REQUIRED": required.to_header()})
        return httpx.Response(403, json=body)

    auth = X402PaymentAuth(wallet(), Budget(), networks={NETWORK}, approval_poll=0.01)
    with httpx.Client(transport=httpx.MockTransport(handle), auth=auth) as sync:
        assert sync.get("https://api.example/x").status_code == 403
    assert len(seen) == 2


def test_the_sdk_uses_the_trust_profiles_approval_names() -> None:
    assert (APPROVAL_HEADER, ERR_BUDGET_PENDING, ERR_BUDGET_DENIED) == (
        trust_wire.APPROVAL_HEADER, trust_wire.ERR_BUDGET_PENDING, trust_wire.ERR_BUDGET_DENIED)


def test_bad_settings_are_refused() -> None:
    for kw in ({"approval_timeout": -1}, {"approval_poll": 0}):
        with pytest.raises(ValueError):
            X402PaymentAuth(wallet(), Budget(), networks={NETWORK}, **kw)  # type: ignore[arg-type]
