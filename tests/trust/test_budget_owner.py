"""A budget with no approver asks the agent's owner where authgate knows one — an Agent Auth agent enrolled here,
named by its agent id or (person/auth tokens) its key thumbprint — and refuses otherwise (OAuth clients, payer
addresses, revoked agents, ``owner_approves=False``); an explicit approver wins."""

from __future__ import annotations

import pytest

from authgate.approvals import ApprovalService
from authgate.clock import FrozenClock
from authgate.policy.identity import THUMBPRINT_URN
from authgate.store import Store
from authgate.store.agentauth import AgentRecord
from authgate.trust import wire
from authgate.trust.budgets import BudgetGuard
from authgate.trust.errors import TrustError
from authgate.trust.store import TrustStore
from tests.helpers import add_user

PAYEE = "0x" + "ab" * 20
AGENT = "aauth:shopper@authgate.test"
JKT = "k" * 43


@pytest.fixture
async def owner(store: Store) -> str:
    subject = await add_user(store, "sam")
    now = int(store.clock.now())
    assert await store.agentauth.add_agent(AgentRecord(AGENT, subject, "shopper", JKT, {"kty": "OKP"}, now, now, None))
    return subject


async def _over(guard: BudgetGuard, agent: str) -> TrustError:
    await guard.trust.set_budget(agent, per_request=10)
    with pytest.raises(TrustError) as refused:
        await guard.charge(agent, PAYEE, 20)
    return refused.value


@pytest.mark.parametrize("agent", [AGENT, THUMBPRINT_URN + JKT])
async def test_the_agents_owner_is_asked_when_no_approver_is_set(trust: TrustStore, clock: FrozenClock,
                                                                 owner: str, agent: str) -> None:
    approvals = ApprovalService(trust.store, clock)
    guard = BudgetGuard(trust, clock, approvals)
    pending = await _over(guard, agent)
    assert pending.code == wire.ERR_BUDGET_PENDING and pending.approval_id
    request = await approvals.get(pending.approval_id)
    assert request is not None and request.subject == owner and request.client_id == agent
    await approvals.decide(pending.approval_id, True, by=owner, channel="web")  # the owner can decide it
    charged = await guard.charge(agent, PAYEE, 20, approval_id=pending.approval_id)
    assert charged.approval_id == pending.approval_id


async def test_an_explicit_approver_wins(trust: TrustStore, clock: FrozenClock, owner: str) -> None:
    approvals = ApprovalService(trust.store, clock)
    guard = BudgetGuard(trust, clock, approvals)
    await trust.set_budget(AGENT, per_request=10, approver="u_operator")
    with pytest.raises(TrustError) as refused:
        await guard.charge(AGENT, PAYEE, 20)
    assert refused.value.approval_id is not None
    request = await approvals.get(refused.value.approval_id)
    assert request is not None and request.subject == "u_operator"


@pytest.mark.parametrize("agent", ["client-1", "0x" + "cd" * 20, "aauth:unknown@authgate.test",
                                   THUMBPRINT_URN + "other"])
async def test_no_known_owner_is_a_refusal(trust: TrustStore, clock: FrozenClock, owner: str, agent: str) -> None:
    guard = BudgetGuard(trust, clock, ApprovalService(trust.store, clock))
    assert (await _over(guard, agent)).code == wire.ERR_BUDGET_EXCEEDED


async def test_a_revoked_agent_or_owner_approves_off_is_a_refusal(trust: TrustStore, clock: FrozenClock,
                                                                  owner: str) -> None:
    approvals = ApprovalService(trust.store, clock)
    off = BudgetGuard(trust, clock, approvals, owner_approves=False)
    assert (await _over(off, AGENT)).code == wire.ERR_BUDGET_EXCEEDED
    assert (await _over(BudgetGuard(trust, clock), AGENT)).code == wire.ERR_BUDGET_EXCEEDED  # no approvals at all
    assert await trust.store.agentauth.revoke_agent(AGENT)
    assert (await _over(BudgetGuard(trust, clock, approvals), AGENT)).code == wire.ERR_BUDGET_EXCEEDED
