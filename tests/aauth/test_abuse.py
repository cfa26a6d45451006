"""Abuse controls: rate limits per dimension, and the durable lock-out after repeated failures."""

from __future__ import annotations

from dataclasses import replace

import pytest
import sqlalchemy as sa

from authgate.aauth.abuse import DIMENSIONS, AbuseGuard
from authgate.app import build_context
from authgate.clock import FrozenClock
from authgate.context import ServerContext
from authgate.errors import TooManyRequests
from authgate.store import Store
from authgate.store import tables as t

LIMITS = {"aauth_rate_client": 6, "aauth_rate_user": 2, "aauth_rate_caller_id": 3, "aauth_rate_ip": 4,
          "aauth_rate_conversation": 5}


@pytest.mark.parametrize("dimension", DIMENSIONS)
async def test_rate_limit_per_dimension(ctx: ServerContext, clock: FrozenClock, dimension: str) -> None:
    clock.advance(60 - clock.now() % 60)  # start of a window
    guard = AbuseGuard(ctx.store, replace(ctx.settings, **LIMITS), clock)
    limit = LIMITS[f"aauth_rate_{dimension}"]
    for _ in range(limit):
        await guard.admit({dimension: "a"})
    with pytest.raises(TooManyRequests) as info:
        await guard.admit({dimension: "a"})
    assert info.value.status_code == 429 and int(info.value.headers["Retry-After"]) == 60
    await guard.admit({dimension: "b"})  # another value of the same dimension is counted apart
    other = next(d for d in DIMENSIONS if d != dimension)
    await guard.admit({other: "a"})  # so is the same value in another dimension
    clock.advance(60)
    await guard.admit({dimension: "a"})  # a new window


async def test_any_dimension_over_its_limit_refuses_and_all_are_counted(ctx: ServerContext,
                                                                        clock: FrozenClock) -> None:
    guard = AbuseGuard(ctx.store, replace(ctx.settings, **LIMITS), clock)
    clock.advance(60 - clock.now() % 60)
    await guard.admit({"user": "u1", "ip": "1.2.3.4"})
    await guard.admit({"user": "u1", "ip": "1.2.3.4"})
    with pytest.raises(TooManyRequests):
        await guard.admit({"user": "u1", "ip": "1.2.3.4", "client": "c", "caller_id": "", "conversation": None})
    # the refused attempt still counted for ip (3 of 4): one more allowed, then refused
    await guard.admit({"ip": "1.2.3.4"})
    with pytest.raises(TooManyRequests):
        await guard.admit({"ip": "1.2.3.4"})
    with pytest.raises(ValueError):
        await guard.admit({"username": "x"})


async def test_rate_limits_come_from_settings_and_zero_is_unlimited(ctx: ServerContext, clock: FrozenClock) -> None:
    guard = AbuseGuard(ctx.store, replace(ctx.settings, aauth_rate_ip=0), clock)
    for _ in range(200):
        await guard.admit({"ip": "1.2.3.4"})
    default = ctx.aauth_guard
    with pytest.raises(TooManyRequests):
        for _ in range(ctx.settings.aauth_rate_conversation + 1):
            await default.admit({"conversation": "c-1"})


async def test_lockout_after_k_failures_and_its_expiry(ctx: ServerContext, clock: FrozenClock) -> None:
    s = ctx.settings
    guard = ctx.aauth_guard
    for _ in range(s.aauth_lockout_threshold - 1):
        await guard.failure("idx-1")
        assert not await guard.locked("idx-1")
    await guard.failure("idx-1")
    assert await guard.locked("idx-1")
    assert not await guard.locked("idx-2")
    await guard.success("idx-1")  # a success does not lift a lock in force
    assert await guard.locked("idx-1")
    clock.advance(s.aauth_lockout_seconds - 1)
    assert await guard.locked("idx-1")
    clock.advance(1)
    assert not await guard.locked("idx-1")
    # counting starts again from zero after the lock
    await guard.failure("idx-1")
    assert not await guard.locked("idx-1")


async def test_failures_outside_the_window_do_not_add_up(ctx: ServerContext, clock: FrozenClock) -> None:
    s = ctx.settings
    for _ in range(s.aauth_lockout_threshold - 1):
        await ctx.aauth_guard.failure("idx")
    clock.advance(s.aauth_lockout_window + 1)
    await ctx.aauth_guard.failure("idx")
    assert not await ctx.aauth_guard.locked("idx")


async def test_success_resets_the_count(ctx: ServerContext) -> None:
    s = ctx.settings
    for _ in range(s.aauth_lockout_threshold - 1):
        await ctx.aauth_guard.failure("idx")
    await ctx.aauth_guard.success("idx")
    await ctx.aauth_guard.failure("idx")
    assert not await ctx.aauth_guard.locked("idx")
    assert not await ctx.aauth_guard.locked(None) and not await ctx.aauth_guard.locked("")


async def test_lockout_is_shared_by_every_process_on_the_store(ctx: ServerContext, store: Store,
                                                               clock: FrozenClock) -> None:
    other = await build_context(replace(ctx.settings, aauth_lockout_threshold=3), clock, store)
    mine = await build_context(replace(ctx.settings, aauth_lockout_threshold=3), clock, store)
    await mine.aauth_guard.failure("idx")
    await other.aauth_guard.failure("idx")
    await mine.aauth_guard.failure("idx")
    assert await other.aauth_guard.locked("idx") and await ctx.aauth_guard.locked("idx")


async def test_concurrent_failures_all_count(ctx: ServerContext, store: Store, clock: FrozenClock) -> None:
    import asyncio

    guard = AbuseGuard(store, replace(ctx.settings, aauth_lockout_threshold=8), clock)
    await asyncio.gather(*(guard.failure("idx") for _ in range(7)))
    assert not await guard.locked("idx")
    await guard.failure("idx")
    assert await guard.locked("idx")


async def test_lockout_rows_are_purged_when_stale(ctx: ServerContext, store: Store, clock: FrozenClock) -> None:
    await ctx.aauth_guard.failure("a")
    for _ in range(ctx.settings.aauth_lockout_threshold):
        await ctx.aauth_guard.failure("b")
    clock.advance(ctx.settings.aauth_lockout_seconds - 10)
    assert await store.purge_identity_lockouts(older_than=60) == 1  # "a"; "b" is still locked
    assert await ctx.aauth_guard.locked("b")



async def test_failures_purge_stale_rows_now_and_then(ctx: ServerContext, store: Store, clock: FrozenClock) -> None:
    s = ctx.settings

    async def rows() -> list[str]:
        async with store.engine.connect() as conn:
            return list((await conn.execute(sa.select(t.identity_lockouts.c.user_index))).scalars().all())

    guard = AbuseGuard(store, s, clock)
    await guard.failure("old")
    clock.advance(s.aauth_lockout_window + s.aauth_lockout_seconds + 1)
    await guard.failure("new")
    assert await rows() == ["new"]
    clock.advance(s.aauth_lockout_window + s.aauth_lockout_seconds + 1)
    await guard.failure("newer")  # more than PURGE_EVERY later: purged again
    assert sorted(await rows()) == ["newer"]
