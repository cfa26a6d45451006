"""Budgets: within limit → paid; over → approval request; approved → paid once; denied → refused; the day
rolls over; no double count under concurrency."""

from __future__ import annotations

import asyncio

import pytest

from authgate.approvals import ApprovalService
from authgate.clock import FrozenClock
from authgate.store import Store
from authgate.trust import wire
from authgate.trust.budgets import BudgetGuard
from authgate.trust.errors import TrustError
from authgate.trust.periods import period_key
from authgate.trust.store import TrustStore

PAYEE = "0x" + "ab" * 20


@pytest.fixture
def approvals(store: Store, clock: FrozenClock) -> ApprovalService:
    return ApprovalService(store, clock)


async def _refused(guard: BudgetGuard, amount: int, **kw: object) -> TrustError:
    with pytest.raises(TrustError) as exc:
        await guard.charge("agent-1", PAYEE, amount, **kw)  # type: ignore[arg-type]
    return exc.value


async def test_within_and_over_without_approver(trust: TrustStore, clock: FrozenClock) -> None:
    guard = BudgetGuard(trust, clock)
    await trust.set_budget("agent-1", per_request=50, per_day=100, per_payee_day=80)
    await guard.charge("agent-1", PAYEE, 50)
    err = await _refused(guard, 51)
    assert err.code == wire.ERR_BUDGET_EXCEEDED and "per-request limit of 50" in err.description
    await guard.charge("agent-1", PAYEE, 30)
    err = await _refused(guard, 1)
    assert err.code == wire.ERR_BUDGET_EXCEEDED and "for this payee" in err.description
    await guard.charge("agent-1", "0x" + "cd" * 20, 20)
    err = await _refused(guard, 1)
    assert "daily limit of 100" in err.description
    assert await trust.spent("agent-1", period_key("day", clock.now())) == 100


async def test_daily_window_rolls_over(trust: TrustStore, clock: FrozenClock) -> None:
    guard = BudgetGuard(trust, clock)
    await trust.set_budget("agent-1", per_day=100)
    await guard.charge("agent-1", PAYEE, 100)
    await _refused(guard, 1)
    clock.advance(86400)
    await guard.charge("agent-1", PAYEE, 100)


async def test_over_asks_the_person_then_approved_pays_once(trust: TrustStore, clock: FrozenClock,
                                                             approvals: ApprovalService) -> None:
    guard = BudgetGuard(trust, clock, approvals)
    await trust.set_budget("agent-1", per_day=100, approver="alice")
    await guard.charge("agent-1", PAYEE, 90)
    err = await _refused(guard, 20, resource="/api/x")
    assert err.code == wire.ERR_BUDGET_PENDING and err.status == 403 and err.approval_id
    request = await approvals.get(err.approval_id)
    assert request is not None and request.subject == "alice" and request.details["amount"] == "20"
    assert (await _refused(guard, 20, approval_id=err.approval_id)).code == wire.ERR_BUDGET_PENDING
    await approvals.decide(err.approval_id, True, by="alice", channel="web")
    assert (await _refused(guard, 21, approval_id=err.approval_id)).code == wire.ERR_BUDGET_EXCEEDED  # other amount
    charged = await guard.charge("agent-1", PAYEE, 20, approval_id=err.approval_id)
    assert charged.approval_id == err.approval_id
    assert (await _refused(guard, 20, approval_id=err.approval_id)).description.endswith("already used for a payment")
    assert await trust.spent("agent-1", period_key("day", clock.now())) == 110


async def test_denied_is_refused(trust: TrustStore, clock: FrozenClock, approvals: ApprovalService) -> None:
    guard = BudgetGuard(trust, clock, approvals)
    await trust.set_budget("agent-1", per_request=10, approver="alice")
    err = await _refused(guard, 20)
    assert err.approval_id is not None
    await approvals.decide(err.approval_id, False, by="alice", channel="web")
    denied = await _refused(guard, 20, approval_id=err.approval_id)
    assert denied.code == wire.ERR_BUDGET_DENIED


async def test_concurrent_payments_do_not_double_count(trust: TrustStore, clock: FrozenClock) -> None:
    guard = BudgetGuard(trust, clock)
    await trust.set_budget("agent-1", per_day=100)

    async def pay() -> bool:
        try:
            await guard.charge("agent-1", PAYEE, 30)
        except TrustError:
            return False
        return True

    assert sum(await asyncio.gather(*(pay() for _ in range(8)))) == 3
    assert await trust.spent("agent-1", period_key("day", clock.now())) == 90


async def test_bad_input(trust: TrustStore, clock: FrozenClock) -> None:
    guard = BudgetGuard(trust, clock)
    for agent, amount in (("", 1), ("a" * 301, 1), ("a", -1), ("a", 2**64)):
        with pytest.raises(TrustError) as exc:
            await guard.charge(agent, PAYEE, amount)
        assert exc.value.status == 400
