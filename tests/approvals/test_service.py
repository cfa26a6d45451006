"""The approval service: single decision (also under concurrency, on both backends), who may decide,
expiry, waiting."""

from __future__ import annotations

import asyncio

import pytest

from authgate.approvals import AlreadyDecided, ApprovalService, Expired, NotAllowed, NotFound
from authgate.clock import FrozenClock
from authgate.context import ServerContext


async def _request(svc: ApprovalService, **over: object) -> str:
    args: dict[str, object] = {"kind": "oauth_consent", "subject": "u_alice", "client_id": "agent-1",
                               "details": {"scopes": ["notes:read"]}, "reason": "I need to read your notes"}
    args.update(over)
    return (await svc.create(**args)).id  # type: ignore[arg-type]


async def test_create_decide_once(ctx: ServerContext) -> None:
    svc = ctx.approvals
    rid = await _request(svc)
    pending = await svc.get(rid)
    assert pending is not None and pending.status == "pending" and pending.reason == "I need to read your notes"
    assert [r.id for r in await svc.pending_for("u_alice")] == [rid]
    assert await svc.pending_for("u_bob") == []
    decided = await svc.decide(rid, True, by="u_alice", channel="web")
    assert decided.status == "approved" and decided.decided_by == "u_alice" and decided.channel == "web"
    with pytest.raises(AlreadyDecided):
        await svc.decide(rid, False, by="u_alice", channel="web")
    assert (await svc.get(rid)).status == "approved"  # type: ignore[union-attr]
    events = [e["event"] for e in await ctx.store.audit_events()]
    assert "approval.requested" in events and "approval.approved" in events


async def test_only_subject_or_admin_decides(ctx: ServerContext) -> None:
    svc = ctx.approvals
    rid = await _request(svc)
    with pytest.raises(NotAllowed):
        await svc.decide(rid, True, by="u_mallory", channel="web")
    assert (await svc.get(rid)).status == "pending"  # type: ignore[union-attr]
    assert (await svc.decide(rid, False, by="u_root", channel="cli", is_admin=True)).status == "denied"
    anonymous = await _request(svc, subject=None)
    with pytest.raises(NotAllowed):
        await svc.decide(anonymous, True, by="", channel="web")
    with pytest.raises(NotFound):
        await svc.decide("nope", True, by="u_alice", channel="web")


async def test_expiry(ctx: ServerContext, clock: FrozenClock) -> None:
    svc = ctx.approvals
    rid = await _request(svc, ttl=60)
    clock.advance(61)
    assert (await svc.get(rid)).status == "expired"  # type: ignore[union-attr]
    assert await svc.pending_for("u_alice") == []
    with pytest.raises(Expired):
        await svc.decide(rid, True, by="u_alice", channel="web")


async def test_concurrent_decisions_exactly_one_wins(ctx: ServerContext) -> None:
    svc = ctx.approvals
    rid = await _request(svc)
    results = await asyncio.gather(
        *[svc.decide(rid, i % 2 == 0, by="u_alice", channel=f"c{i}") for i in range(10)], return_exceptions=True)
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, AlreadyDecided) for r in results if isinstance(r, BaseException))
    final = await svc.get(rid)
    assert final is not None and final.channel == winners[0].channel and final.status == winners[0].status


async def test_wait_returns_on_decision_or_timeout(ctx: ServerContext) -> None:
    svc = ctx.approvals
    rid = await _request(svc)
    still = await svc.wait(rid, timeout=0.05, poll_interval=0.01)
    assert still.status == "pending"

    async def decide_soon() -> None:
        await asyncio.sleep(0.05)
        await svc.decide(rid, True, by="u_alice", channel="web")

    task = asyncio.create_task(decide_soon())
    done = await svc.wait(rid, timeout=5, poll_interval=0.01)
    await task
    assert done.status == "approved"


async def test_notifier_called_unless_told_not_to(ctx: ServerContext) -> None:
    seen: list[str] = []

    class Recorder:
        async def notify(self, request: object) -> None:
            seen.append(getattr(request, "id"))  # noqa: B009

    class Broken:
        async def notify(self, request: object) -> None:
            raise RuntimeError("channel down")

    svc = ApprovalService(ctx.store, ctx.clock, notifier=Recorder())
    announced = await _request(svc)
    await _request(svc, notify=False)
    assert seen == [announced]
    # a failing channel never breaks the requester; the request stays pending in the inbox
    broken = ApprovalService(ctx.store, ctx.clock, notifier=Broken())
    rid = await _request(broken)
    assert (await broken.get(rid)).status == "pending"  # type: ignore[union-attr]
