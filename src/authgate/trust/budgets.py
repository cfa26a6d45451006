"""Budgets for payments an agent makes to us: per request, per UTC day, per payee per UTC day.

The agent key is its OAuth client_id or Agent Auth agent id, or its x402 payer address when nothing else
identifies it. ``BudgetGuard.charge`` is the hook a paywall/gateway calls before verify/settle: it charges the
day counters atomically (trust_spend; no double count under concurrency, in any process) or, above a limit and
when the budget names an ``approver``, creates an approval request for that person and refuses with
``budget_approval_pending`` + the approval id. A budget without an approver asks the agent's owner when there
is one (an Agent Auth agent enrolled here, by agent id or key thumbprint; ``owner_approves``); OAuth clients and
payer addresses have no recorded owner and are refused. The agent repeats the payment with
``Authgate-Approval: <id>``:
approved → paid once (counted, not limited; a payment that then fails gives the approval back); denied →
``budget_approval_denied``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from authgate.clock import Clock
from authgate.trust import wire as w
from authgate.trust.errors import TrustError
from authgate.trust.periods import period_key
from authgate.trust.store import MAX_AMOUNT, Bucket, TrustStore

if TYPE_CHECKING:
    from authgate.approvals import ApprovalService


@dataclass(frozen=True)
class Charged:
    """A payment the budget let through; ``approval_id`` when a person approved it over the limit."""

    agent: str
    payee: str
    amount: int
    approval_id: str | None = None
    #: The counters charged (for ``BudgetGuard.refund`` when the payment then fails).
    buckets: tuple[Bucket, ...] = ()


class BudgetGuard:
    def __init__(self, trust: TrustStore, clock: Clock, approvals: ApprovalService | None = None,
                 approval_ttl: int = 900, owner_approves: bool = True) -> None:
        self.trust = trust
        self.clock = clock
        self.approvals = approvals
        self.approval_ttl = approval_ttl
        #: A budget with no approver asks the agent's owner, where one is recorded (False: refuse instead).
        self.owner_approves = owner_approves

    async def charge(self, agent: str, payee: str, amount: int, *, approval_id: str | None = None,
                     resource: str | None = None) -> Charged:
        """Charge or refuse (TrustError). Agents without a budget are counted but never limited."""
        if not agent or len(agent) > w.MAX_ID or not payee or len(payee) > 80:
            raise TrustError(w.ERR_BUDGET_EXCEEDED, "agent or payee identifier out of bounds", status=400)
        if isinstance(amount, bool) or not 0 <= amount <= MAX_AMOUNT:
            raise TrustError(w.ERR_BUDGET_EXCEEDED, "amount out of range", status=400)
        payee = payee.lower()
        now = self.clock.now()
        day = period_key("day", now)
        if approval_id is not None:
            return await self._approved(agent, payee, amount, approval_id, day)
        budget = await self.trust.get_budget(agent)
        counted = (Bucket(day, "*", None), Bucket(day, payee, None))
        if budget is None:
            await self.trust.charge(agent, list(counted), amount)
            return Charged(agent, payee, amount, buckets=counted)
        over: str | None = None
        if budget.per_request is not None and amount > budget.per_request:
            over = f"per-request limit of {budget.per_request}"
        else:
            buckets = [Bucket(day, "*", budget.per_day), Bucket(day, payee, budget.per_payee_day)]
            index = await self.trust.charge(agent, buckets, amount)
            if index is not None:
                over = (f"daily limit of {budget.per_day}" if index == 0
                        else f"daily limit of {budget.per_payee_day} for this payee")
        if over is None:
            return Charged(agent, payee, amount, buckets=counted)
        approver = budget.approver
        if approver is None and self.approvals is not None and self.owner_approves:
            approver = await self.trust.agent_owner(agent)  # over a limit only: not on the way of a payment
        if approver is None or self.approvals is None:
            raise TrustError(w.ERR_BUDGET_EXCEEDED, f"payment of {amount} is over the agent's {over}")
        request = await self.approvals.create(
            kind=w.APPROVAL_KIND_BUDGET, subject=approver, client_id=agent, ttl=self.approval_ttl,
            details={"agent": agent, "payee": payee, "amount": str(amount), "over": over, "resource": resource},
            binding_message=f"Pay {amount} to {payee[:60]}")
        raise TrustError(w.ERR_BUDGET_PENDING, f"payment of {amount} is over the agent's {over}; approval "
                         "requested from its person — retry with the approval id once decided", status=403,
                         approval_id=request.id)

    async def _approved(self, agent: str, payee: str, amount: int, approval_id: str, day: str) -> Charged:
        if self.approvals is None:
            raise TrustError(w.ERR_BUDGET_EXCEEDED, "approvals are not configured")
        request = await self.approvals.get(approval_id)
        if request is None or request.kind != w.APPROVAL_KIND_BUDGET:
            raise TrustError(w.ERR_BUDGET_EXCEEDED, "unknown approval")
        d = request.details
        if not (secrets.compare_digest(str(d.get("agent")), agent) and str(d.get("payee")) == payee
                and str(d.get("amount")) == str(amount)):
            raise TrustError(w.ERR_BUDGET_EXCEEDED, "the approval was for another payment")
        if request.status == "pending":
            raise TrustError(w.ERR_BUDGET_PENDING, "the approval is still pending", status=403,
                             approval_id=approval_id)
        if request.status != "approved":
            raise TrustError(w.ERR_BUDGET_DENIED, f"the person did not approve this payment ({request.status})")
        if not await self.trust.claim_once(f"approval:{agent}", approval_id):
            raise TrustError(w.ERR_BUDGET_EXCEEDED, "this approval was already used for a payment")
        counted = (Bucket(day, "*", None), Bucket(day, payee, None))
        await self.trust.charge(agent, list(counted), amount)
        return Charged(agent, payee, amount, approval_id, counted)

    async def refund(self, charged: Charged) -> None:
        """Give back what ``charge`` counted (the payment failed after it: verify, settle or the handler), and
        the approval it used: that payment did not happen, so the approval still pays for it once (the agent's
        repeat after ``facilitator_unavailable``, say)."""
        await self.trust.refund(charged.agent, list(charged.buckets), charged.amount)
        if charged.approval_id is not None:
            await self.trust.release_claim(f"approval:{charged.agent}", charged.approval_id)
