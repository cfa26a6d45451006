"""The trust store: migration 0007, budgets, atomic counters, mandates, the kill list and its version."""

from __future__ import annotations

import asyncio

from authgate.store import Store
from authgate.trust.store import KILLS, MANDATES, Bucket, MandateRow, TrustStore


async def test_budget_round_trip_and_audit(trust: TrustStore, store: Store) -> None:
    await trust.set_budget("agent-1", per_request=10, per_day=100, approver="alice", by="admin")
    row = await trust.get_budget("agent-1")
    assert row is not None and (row.per_request, row.per_day, row.per_payee_day, row.approver) == (10, 100, None,
                                                                                                       "alice")
    await trust.set_budget("agent-1", per_day=5)
    row = await trust.get_budget("agent-1")
    assert row is not None and (row.per_request, row.per_day) == (None, 5)
    assert [b.agent for b in await trust.list_budgets()] == ["agent-1"]
    assert await trust.delete_budget("agent-1", by="admin") and not await trust.delete_budget("agent-1")
    events = [e["event"] for e in await store.audit_events()]
    assert events.count("trust.budget_set") == 2 and "trust.budget_deleted" in events


async def test_charge_is_all_or_nothing(trust: TrustStore) -> None:
    buckets = [Bucket("d:x", "*", 100), Bucket("d:x", "payee", 30)]
    assert await trust.charge("a", buckets, 20) is None
    assert await trust.charge("a", buckets, 20) == 1  # payee bucket would pass 30
    assert await trust.spent("a", "d:x") == 20 and await trust.spent("a", "d:x", "payee") == 20
    assert await trust.charge("a", [Bucket("d:x", "*", 25), Bucket("d:x", "other", None)], 10) == 0
    assert await trust.spent("a", "d:x", "other") == 0


async def test_concurrent_charges_never_pass_the_limit(trust: TrustStore) -> None:
    results = await asyncio.gather(*(trust.charge("a", [Bucket("d:x", "*", 50)], 10) for _ in range(12)))
    assert sum(r is None for r in results) == 5
    assert await trust.spent("a", "d:x") == 50


async def test_claim_once(trust: TrustStore) -> None:
    results = await asyncio.gather(*(trust.claim_once("k", "m") for _ in range(5)))
    assert sorted(results) == [False] * 4 + [True]


async def test_mandate_revocation_bumps_version(trust: TrustStore, store: Store) -> None:
    row = MandateRow("j1", "alice", "agent-1", {"routes": ["/a"]}, 1, 2, None)
    await trust.record_mandate(row)
    before = await trust.version(MANDATES)
    assert not await trust.revoke_mandate("j1", subject="mallory")
    assert await trust.revoke_mandate("j1", by="alice", subject="alice")
    assert not await trust.revoke_mandate("j1")
    assert await trust.version(MANDATES) == before + 1
    assert await trust.revoked_mandates() == {"j1"}
    assert [m.jti for m in await trust.list_mandates(subject="alice")] == ["j1"]


async def test_kill_list(trust: TrustStore, store: Store) -> None:
    v0 = await trust.version(KILLS)
    assert await trust.kill("agent", "a1", by="admin", reason="leaked key")
    assert not await trust.kill("agent", "a1")
    assert [(k.kind, k.ident) for k in await trust.kills()] == [("agent", "a1")]
    assert await trust.revive("agent", "a1", by="admin") and not await trust.revive("agent", "a1")
    assert await trust.version(KILLS) == v0 + 2
    events = [e["event"] for e in await store.audit_events()]
    assert "trust.killed" in events and "trust.revived" in events
