"""Kill switch in one process: the list, the version-counter cache (a kill by another Store is seen on the next
check), pending approvals denied, audit."""

from __future__ import annotations

import pytest

from authgate.approvals import ApprovalService
from authgate.clock import FrozenClock
from authgate.store import Store
from authgate.trust import wire
from authgate.trust.errors import TrustError
from authgate.trust.killswitch import KillSwitch
from authgate.trust.store import TrustStore


async def test_kill_is_seen_by_another_cache_on_the_next_check(trust: TrustStore) -> None:
    mine, theirs = KillSwitch(trust), KillSwitch(TrustStore(trust.store))
    assert await theirs.killed(agents=["a1"]) is None
    await mine.kill("agent", "a1", by="admin")
    with pytest.raises(TrustError) as exc:
        await theirs.check(agents=["a1"])
    assert exc.value.code == wire.ERR_KILLED
    await mine.kill("client", "c1")
    await mine.kill("user", "u1")
    await mine.kill("agent", "0xABCdef")
    assert await theirs.killed(clients=["c1"]) == "client:c1"
    assert await theirs.killed(users=[None, "u1"]) == "user:u1"
    assert await theirs.killed(users=["U1"]) is None  # only payer addresses ignore case
    assert await theirs.killed(agents=["0xabcDEF"]) == "agent:0xabcDEF"
    assert await theirs.killed(agents=["c1"], users=["a1"]) is None  # kinds do not mix
    assert await mine.revive("agent", "a1")
    assert await theirs.killed(agents=["a1"]) is None
    with pytest.raises(ValueError):
        await mine.kill("robot", "x")


async def test_kill_denies_pending_approvals(store: Store, trust: TrustStore, clock: FrozenClock) -> None:
    approvals = ApprovalService(store, clock)
    for_client = await approvals.create(kind="budget", subject="alice", client_id="c1", details={})
    for_user = await approvals.create(kind="consent", subject="bob", client_id="c2", details={})
    untouched = await approvals.create(kind="consent", subject="carol", client_id="c3", details={})
    switch = KillSwitch(trust)
    await switch.kill("client", "c1")
    await switch.kill("user", "bob")
    assert [(await approvals.get(r.id)).status for r in (for_client, for_user, untouched)  # type: ignore[union-attr]
            ] == ["denied", "denied", "pending"]
    killed = [e for e in await store.audit_events() if e["event"] == "trust.killed"]
    assert {e["detail"]["approvals_denied"] for e in killed} == {1}
