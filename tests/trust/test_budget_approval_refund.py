"""An approved over-budget payment that then fails (verify, settle or the handler) gives its approval back with
its counters: the approval still pays for that payment once, and no more."""

from __future__ import annotations

import pytest

from authgate.approvals import ApprovalService
from authgate.clock import FrozenClock
from authgate.trust import wire
from authgate.trust.budgets import BudgetGuard
from authgate.trust.errors import TrustError
from authgate.trust.periods import period_key
from authgate.trust.store import TrustStore

PAYEE = "0x" + "ab" * 20


async def test_a_failed_approved_payment_gives_the_approval_back(trust: TrustStore, clock: FrozenClock) -> None:
    approvals = ApprovalService(trust.store, clock)
    guard = BudgetGuard(trust, clock, approvals)
    await trust.set_budget("agent-1", per_request=10, approver="alice")
    with pytest.raises(TrustError) as pending:
        await guard.charge("agent-1", PAYEE, 20)
    approval_id = pending.value.approval_id
    assert approval_id is not None
    await approvals.decide(approval_id, True, by="alice", channel="web")
    charged = await guard.charge("agent-1", PAYEE, 20, approval_id=approval_id)
    await guard.refund(charged)  # the facilitator was down, say
    assert await trust.spent("agent-1", period_key("day", clock.now())) == 0
    again = await guard.charge("agent-1", PAYEE, 20, approval_id=approval_id)
    assert again.approval_id == approval_id
    with pytest.raises(TrustError) as used:
        await guard.charge("agent-1", PAYEE, 20, approval_id=approval_id)
    assert used.value.code == wire.ERR_BUDGET_EXCEEDED and "already used" in used.value.description
    assert await trust.spent("agent-1", period_key("day", clock.now())) == 20
