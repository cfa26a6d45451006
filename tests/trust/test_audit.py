"""Audit of the trust checks at a plain paywall (``PaymentTrustGuard`` with a trust store): refusals of every
check and settled payments are written, failed payments and the database being unreachable are not, a failing
audit write never changes the answer; and the dashboard counts a payment once when authgate is both the paywall's
trust store and the facilitator that settled it."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from authgate.approvals import ApprovalService
from authgate.clock import FrozenClock
from authgate.crypto.keys import KeyRing
from authgate.dashboard import queries
from authgate.store import Store
from authgate.store.payments import NewPayment, PaymentRepository
from authgate.trust import audit
from authgate.trust import wire as tw
from authgate.trust.attestations import Requirement
from authgate.trust.budgets import BudgetGuard
from authgate.trust.errors import TrustError, unavailable
from authgate.trust.issuers import TrustedIssuers
from authgate.trust.killswitch import KillSwitch
from authgate.trust.paywall import PaymentTrustGuard
from authgate.trust.store import TrustStore
from tests.x402.test_paywall import PAYEE, LedgerFacilitator, client, make_app, payer_wallet, required_of, signed_header

PRICE = 10_000


CHECK_EVENTS = {*audit.EVENT_DENIED.values(), audit.EVENT_PENDING, audit.EVENT_RECEIVED}


async def _events(store: Store) -> list[dict[str, Any]]:
    """The checks' events (not the operator's trust.budget_set, trust.killed…)."""
    return [e for e in await queries.audit_since(store, 0) if e["event"] in CHECK_EVENTS]


class Paywall:
    def __init__(self, trust: TrustStore, guard: PaymentTrustGuard, **facilitator: Any) -> None:
        self.fac = LedgerFacilitator()
        for name, value in facilitator.items():
            setattr(self.fac, name, value)
        self.wallet = payer_wallet(self.fac)
        app, paywall, _ = make_app(self.fac)
        paywall.guard = guard
        self.app = app

    async def pay(self, headers: dict[str, str] | None = None) -> Any:
        async with client(self.app) as http:
            (offer,) = required_of(await http.get("/weather")).accepts
            return await http.get("/weather", headers={"PAYMENT-SIGNATURE": signed_header(self.wallet, offer),
                                                        **(headers or {})})


async def test_every_refusal_and_each_settled_payment_is_audited(trust: TrustStore, clock: FrozenClock,
                                                                 issuers: TrustedIssuers) -> None:
    switch = KillSwitch(trust)
    approvals = ApprovalService(trust.store, clock)
    guard = PaymentTrustGuard(trust, clock, killswitch=switch, budgets=BudgetGuard(trust, clock, approvals),
                              issuers=issuers, attestations={"/weather/adult": Requirement({"verified_adult": True})})
    paywall = Paywall(trust, guard)
    payer = paywall.wallet.address.lower()
    assert (await paywall.pay()).status_code == 200
    await trust.set_budget(payer, per_request=PRICE - 1)
    assert (await paywall.pay()).json()["error"] == tw.ERR_BUDGET_EXCEEDED
    await trust.delete_budget(payer)
    await switch.kill("agent", payer)
    assert (await paywall.pay()).json()["error"] == tw.ERR_KILLED
    events = await _events(trust.store)
    assert [e["event"] for e in events] == ["x402.payment_received", "trust.budget_denied", "trust.kill_denied"]
    received, budget, kill = events
    assert received["detail"]["tx"] and received["detail"]["payee"] == PAYEE.lower() and received["client_id"] == payer
    assert budget["detail"]["code"] == tw.ERR_BUDGET_EXCEEDED and "per-request limit" in budget["detail"]["description"]
    assert kill["detail"]["path"] == "/weather" and kill["detail"]["amount"] == str(PRICE)


async def test_a_payment_that_fails_after_the_checks_is_not_received(trust: TrustStore, clock: FrozenClock) -> None:
    paywall = Paywall(trust, PaymentTrustGuard(trust, clock, budgets=BudgetGuard(trust, clock)),
                      fail_settle="invalid_exact_evm_insufficient_balance")
    assert (await paywall.pay()).status_code == 402
    assert await _events(trust.store) == []


async def test_no_trust_database_no_audit_and_no_decision_no_audit(store: Store, trust: TrustStore,
                                                                   issuers: TrustedIssuers) -> None:
    offline = PaymentTrustGuard(None, store.clock, issuers=issuers, attestations={"/weather": Requirement({"k": 1})})
    paywall = Paywall(trust, offline)
    assert (await paywall.pay()).json()["error"] == tw.ERR_ATTESTATION_MISSING
    await audit.refused(trust, unavailable(), audit.Seen(agent="a"))  # nothing was decided
    assert audit.check_of(tw.ERR_UNAVAILABLE) is None
    error = TrustError(tw.ERR_MANDATE_REVOKED, "revoked")
    await audit.refused(trust, error, audit.Seen(agent="a"))
    await audit.refused(trust, error, audit.Seen(agent="a"))  # once per refusal, however many layers see it
    assert [e["event"] for e in await _events(store)] == ["trust.mandate_denied"]


async def test_a_failing_audit_write_never_changes_the_answer(trust: TrustStore, clock: FrozenClock,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    paywall = Paywall(trust, PaymentTrustGuard(trust, clock, budgets=BudgetGuard(trust, clock)))

    async def broken(rows: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(trust.store.group, "insert", broken)
    with caplog.at_level(logging.WARNING, logger="authgate.trust"):
        assert (await paywall.pay()).status_code == 200
        await trust.set_budget(paywall.wallet.address.lower(), per_day=0)
        assert (await paywall.pay()).json()["error"] == tw.ERR_BUDGET_EXCEEDED
    assert [r.getMessage() for r in caplog.records if r.name == "authgate.trust"] == [
        "trust audit event x402.payment_received not written: OSError",
        "trust audit event trust.budget_denied not written: OSError"]


async def test_charts_count_a_payment_once_when_authgate_also_settled_it(store: Store, clock: FrozenClock,
                                                                          keys: KeyRing) -> None:
    trust = TrustStore(store)
    tx = "0x" + "ab" * 32
    repo = PaymentRepository(store)
    now = int(clock.now())
    await repo.reserve(NewPayment("p1", "eip155:84532", "0x" + "a" * 40, "0x" + "c" * 40, "0x" + "1" * 64,
                                  PAYEE.lower(), str(PRICE), "exact", "https://api.example/weather", "0x" + "2" * 64,
                                  now + 600, "test", now + 60))
    await repo.mark_settled("p1", tx)
    seen = audit.Seen(payer="0x" + "c" * 40, payee=PAYEE.lower(), amount=str(PRICE), network="eip155:84532")

    class Receipt:
        def __init__(self, transaction: str, network: str = "eip155:84532") -> None:
            self.transaction, self.network = transaction, network

    await audit.received(trust, seen, Receipt(tx.upper().replace("0X", "0x")))  # our facilitator settled it too
    data = await queries.series(store, now, 3600, 24)
    assert sum(data.payments) == 1
    await audit.received(trust, seen, Receipt("0x" + "cd" * 32))  # another facilitator's
    await audit.received(trust, seen, Receipt(tx, "eip155:8453"))  # same hash, another network
    data = await queries.series(store, now, 3600, 24)
    assert sum(data.payments) == data.payments[-1] == 3
    assert data.requests[-1] >= 3 and data.denials[-1] == 0
