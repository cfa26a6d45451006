"""The paying agent's own budget with an approval hook: over a limit, its person is asked — approved → paid (and
counted), denied or failed → refused; allow-lists are never overridden; a sync client cannot ask. And
``CibaApprover``, the hook that asks through authgate's CIBA backchannel, against the real server: approved →
the agent pays at a paywall, denied → refused, no decision in time → refused.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest

from authgate.agent.approval import ApprovalError, CibaApprover
from authgate.agent.x402 import ApprovalQuestion, Budget, BudgetExceeded, Ledger, X402PaymentAuth
from authgate.app import create_app
from authgate.clock import FrozenClock
from authgate.context import ServerContext
from authgate.oauth.metadata import CIBA_GRANT_TYPE
from authgate.x402 import wire
from tests.conftest import ISSUER
from tests.helpers import add_client, add_user

from .test_agent_pay import offer, paying, server, wallet
from .test_paywall import NETWORK, PAYEE, LedgerFacilitator, client, make_app, payer_wallet


class Person:
    """An approval hook that records the questions and answers as told."""

    def __init__(self, answer: bool | Exception) -> None:
        self.answer = answer
        self.asked: list[ApprovalQuestion] = []

    async def __call__(self, question: ApprovalQuestion) -> bool:
        self.asked.append(question)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


async def test_over_the_per_request_limit_the_person_is_asked_and_an_approval_pays() -> None:
    transport, seen = server(offer("300000"), offer("200000"))  # $0.30 and $0.20, both over $0.10
    person = Person(True)
    ledger = Ledger()
    auth = X402PaymentAuth(wallet(), Budget(max_per_request="$0.10", max_per_day="$1", approver=person),
                           networks={NETWORK}, ledger=ledger)
    async with paying(transport, auth) as http:
        r = await http.get("https://api.example/report")
    assert r.status_code == 200 and len(seen) == 2 and "payment-signature" in seen[1].headers
    (question,) = person.asked
    assert (question.price_usd, question.pay_to, question.limit) == (Decimal("0.2"), PAYEE, "max_per_request")
    assert question.resource == "https://api.example/report" and "per-request limit" in question.reason
    assert question.summary().startswith(f"Pay $0.2 to {PAYEE} for https://api.example/report (")
    assert ledger.spent_today() == Decimal("0.2")  # the cheapest over-limit offer was asked about and paid


@pytest.mark.parametrize(("answer", "reason"), [(False, "approval_denied"),
                                                (ApprovalError("server down"), "approval_failed")])
async def test_a_denied_or_failed_approval_is_a_refusal(answer: bool | Exception, reason: str) -> None:
    transport, seen = server(offer("300000"))
    person = Person(answer)
    ledger = Ledger()
    auth = X402PaymentAuth(wallet(), Budget(max_per_request="$0.10", approver=person), networks={NETWORK},
                           ledger=ledger)
    async with paying(transport, auth) as http:
        with pytest.raises(BudgetExceeded) as refused:
            await http.get("https://api.example/report")
    assert refused.value.reason == reason and len(person.asked) == 1
    assert len(seen) == 1 and ledger.spent_today() == 0  # nothing signed, nothing counted


async def test_over_the_daily_limit_the_person_is_asked_too() -> None:
    transport, seen = server(offer("60000"))  # $0.06, under the per-request limit
    person = Person(True)
    ledger = Ledger()
    auth = X402PaymentAuth(wallet(), Budget(max_per_request="$0.10", max_per_day="$0.10", approver=person),
                           networks={NETWORK}, ledger=ledger)
    async with paying(transport, auth) as http:
        assert (await http.get("https://api.example/a")).status_code == 200
        assert not person.asked
        assert (await http.get("https://api.example/b")).status_code == 200
    assert [q.limit for q in person.asked] == ["max_per_day"]
    assert ledger.spent_today() == Decimal("0.12") and len(seen) == 4  # an approved payment is counted


async def test_allow_lists_are_never_overridden() -> None:
    transport, _ = server(offer(pay_to="0x" + "99" * 20))
    person = Person(True)
    budget = Budget(allowed_payees={PAYEE}, approver=person)
    async with paying(transport, X402PaymentAuth(wallet(), budget, networks={NETWORK})) as http:
        with pytest.raises(BudgetExceeded) as refused:
            await http.get("https://api.example/x")
    assert refused.value.reason == "payee_not_allowed" and not person.asked


def test_a_sync_client_cannot_ask_so_over_the_limit_is_refused() -> None:
    person = Person(True)

    def expensive(request: httpx.Request) -> httpx.Response:
        required = wire.PaymentRequired(accepts=(offer("300000"),))
        return httpx.Response(402, headers={"PAYMENT-REQUIRED": required.to_header()})

    auth = X402PaymentAuth(wallet(), Budget(max_per_request="$0.10", approver=person), networks={NETWORK})
    with httpx.Client(transport=httpx.MockTransport(expensive), auth=auth) as sync, \
            pytest.raises(BudgetExceeded) as refused:
        sync.get("https://api.example/x")
    assert refused.value.reason == "max_per_request" and "httpx.AsyncClient" in str(refused.value)
    assert not person.asked


# -- CibaApprover against the server ----------------------------------------------------------------------------


class World:
    def __init__(self, ctx: ServerContext, clock: FrozenClock, http: httpx.AsyncClient, client_id: str,
                 secret: str, owner: str) -> None:
        self.ctx, self.clock, self.http = ctx, clock, http
        self.client_id, self.secret, self.owner = client_id, secret, owner
        self.decision: bool | None = None
        self.decided: list[str] = []

    async def sleep(self, seconds: float) -> None:
        """Time passes for the server; meanwhile the person decides (when told to) on the pending request."""
        self.clock.advance(seconds)
        pending = [a for a in await self.ctx.approvals.pending_for(self.owner) if a.kind == "ciba"]
        if self.decision is not None and pending:
            await self.ctx.approvals.decide(pending[0].id, self.decision, by=self.owner, channel="web")
            self.decided.append(pending[0].binding_message or "")

    def approver(self, timeout: float = 300) -> CibaApprover:
        return CibaApprover(ISSUER, self.client_id, self.secret, login_hint="alice", scope="read",
                            timeout=timeout, http=self.http, sleep=self.sleep, clock=self.clock.now)


@pytest.fixture
async def world(ctx: ServerContext, clock: FrozenClock) -> AsyncIterator[World]:
    client_id, secret = await add_client(ctx.store, auth_method="client_secret_basic", grant_types=[CIBA_GRANT_TYPE],
                                         redirect_uris=[], response_types=[])
    assert secret is not None
    owner = await add_user(ctx.store, "alice")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(ctx)), base_url=ISSUER) as http:
        yield World(ctx, clock, http, client_id, secret, owner)


QUESTION = ApprovalQuestion(Decimal("0.5"), PAYEE, NETWORK, "0x" + "ee" * 20, "https://api.example/weather",
                            "max_per_day", "paying $0.5 would pass today's limit of $1")


@pytest.mark.parametrize("decision", [True, False])
async def test_ciba_approver_asks_the_person_through_authgate(world: World, decision: bool) -> None:
    world.decision = decision
    assert await world.approver()(QUESTION) is decision
    assert world.decided == [QUESTION.summary()]  # the person saw the payment in words


async def test_ciba_approver_without_a_decision_in_time_is_a_denial(world: World) -> None:
    assert await world.approver(timeout=12)(QUESTION) is False


async def test_ciba_approver_errors_are_approval_errors(world: World) -> None:
    wrong = CibaApprover(ISSUER, world.client_id, "wrong-secret", login_hint="alice", scope="read", http=world.http,
                         sleep=world.sleep, clock=world.clock.now)
    with pytest.raises(ApprovalError, match="backchannel authentication refused: invalid_client"):
        await wrong(QUESTION)
    with pytest.raises(ValueError, match="besides openid"):
        CibaApprover(ISSUER, "c", "s", login_hint="alice", scope="openid")


@pytest.mark.parametrize("decision", [True, False])
async def test_the_agent_pays_over_its_budget_only_when_its_person_approves(world: World, decision: bool) -> None:
    fac = LedgerFacilitator()
    app, _, seen = make_app(fac)  # $0.01 a call
    world.decision = decision
    budget = Budget(max_per_request="$0.005", approver=world.approver())
    auth = X402PaymentAuth(payer_wallet(fac), budget, networks={NETWORK})
    async with client(app, auth) as http:
        if decision:
            assert (await http.get("/weather")).status_code == 200
        else:
            with pytest.raises(BudgetExceeded) as refused:
                await http.get("/weather")
            assert refused.value.reason == "approval_denied"
    assert len(world.decided) == 1 and "https://api.example/weather" in world.decided[0]
    assert fac.settle_calls == seen["calls"] == (1 if decision else 0)


def test_the_sdk_uses_the_trust_profiles_header_names() -> None:
    from authgate.agent import x402 as sdk
    from authgate.trust import wire as trust_wire

    assert (sdk.MANDATE_HEADER, sdk.ATTESTATION_HEADER, sdk.ATTESTATION_REQUIRED_HEADER) == (
        trust_wire.MANDATE_HEADER, trust_wire.ATTESTATION_HEADER, trust_wire.ATTESTATION_REQUIRED_HEADER)
