"""Rate limits counted in the database (authgate.store.ratelimits): the shared bucket for several processes or
instances without Redis, and the fallback while Redis is down. Every test runs on SQLite and on PostgreSQL (the
``store`` fixture); a second ``Store`` on its own engine stands for a second process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from authgate.app import build_context, create_app
from authgate.clock import FrozenClock
from authgate.config import ConfigError, Settings
from authgate.context import ServerContext
from authgate.demo.servers import free_port
from authgate.ratelimit import RateLimiter, choose_backend
from authgate.shared.ratelimit import RedisCounter
from authgate.store import Store
from authgate.store import tables as t
from authgate.store.engine import make_engine
from authgate.store.ratelimits import DatabaseCounter
from tests.conftest import ISSUER
from tests.helpers import REDIRECT

REGISTRATION = {"client_name": "x", "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}


@pytest.fixture
async def other_store(store: Store, clock: FrozenClock) -> AsyncIterator[Store]:
    """The same database through a second engine (its own connections), as another process would open it."""
    if store.engine.dialect.name == "sqlite":
        engine = make_engine(store.engine.url.render_as_string(hide_password=False))
    else:
        async with store.engine.connect() as conn:
            search_path = (await conn.execute(sa.text("SHOW search_path"))).scalar_one()
        engine = create_async_engine(store.engine.url, pool_size=10, max_overflow=10,
                                     connect_args={"server_settings": {"search_path": search_path}})
    other = Store(engine, clock)
    yield other
    await other.close()


async def _hits(store: Store) -> dict[str, tuple[int, int]]:
    c = t.rate_limit_counters.c
    async with store.engine.connect() as conn:
        rows = await conn.execute(sa.select(c.key, c.window_start, c.hits))
    return {r.key: (r.window_start, r.hits) for r in rows}


async def test_two_processes_share_one_bucket(store: Store, other_store: Store, clock: FrozenClock) -> None:
    a = RateLimiter(3, 60, clock, shared=DatabaseCounter(store), name="register")
    b = RateLimiter(3, 60, clock, shared=DatabaseCounter(other_store), name="register")
    assert [await a.hit("203.0.113.5"), await b.hit("203.0.113.5"), await a.hit("203.0.113.5")] == [None] * 3
    assert await b.hit("203.0.113.5") is not None  # the 4th over both is refused
    assert await a.hit("203.0.113.6") is None  # another caller has its own bucket
    login = RateLimiter(3, 60, clock, shared=DatabaseCounter(other_store), name="login")
    assert await login.hit("203.0.113.5") is None  # and another limiter too
    rows = await _hits(store)
    assert len(rows) == 3 and sorted(h for _, h in rows.values()) == [1, 1, 4]
    assert all(len(key) == 64 and "203.0.113" not in key for key in rows)  # hashed, never in clear


async def test_window_rollover(store: Store) -> None:
    clock = FrozenClock(1_800_000_010.0)  # 10 s into a window
    limiter = RateLimiter(2, 60, clock, shared=DatabaseCounter(store), name="register")
    assert [await limiter.hit("a"), await limiter.hit("a")] == [None, None]
    assert await limiter.hit("a") == 50  # seconds until the window ends
    clock.advance(49)
    assert await limiter.hit("a") == 1  # still the same window
    clock.advance(1)
    assert await limiter.hit("a") is None  # a new window starts the count again
    assert await limiter.hit("a") is None
    assert await limiter.hit("a") == 60
    (window_start, hits), = (await _hits(store)).values()
    assert window_start == int(clock.now()) and hits == 3  # one row per caller, reset in place

    # A process whose clock is a little behind counts in the current window instead of resetting it.
    behind = RateLimiter(2, 60, FrozenClock(clock.now() - 30), shared=DatabaseCounter(store), name="register")
    assert await behind.hit("a") is not None
    assert list((await _hits(store)).values()) == [(window_start, 4)]

    # Finished windows' rows are purged (by the next hit after purge_every, or by purge()).
    clock.advance(60)
    assert await DatabaseCounter(store).purge(int(clock.now())) == 1
    assert await _hits(store) == {}


async def test_concurrent_hits_let_exactly_the_limit_through(store: Store, other_store: Store,
                                                             clock: FrozenClock) -> None:
    """100 hits at once on one key over two engines (up to 40 connections on PostgreSQL): exactly 25 pass."""
    clock.advance(60 - clock.now() % 60 + 1.5)
    limiters = [RateLimiter(25, 60, clock, shared=DatabaseCounter(s), name="register") for s in (store, other_store)]
    results = await asyncio.gather(*(limiters[i % 2].hit("198.51.100.7") for i in range(100)))
    assert sum(r is None for r in results) == 25
    assert next(iter((await _hits(store)).values()))[1] == 100


async def test_database_unreachable_counts_in_this_process(clock: FrozenClock,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    dead = Store(create_async_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/x"), clock)
    limiter = RateLimiter(2, 60, clock, shared=DatabaseCounter(dead), name="register")
    try:
        with caplog.at_level(logging.WARNING, logger="authgate.store"):
            assert [await limiter.hit("a") for _ in range(3)] == [None, None, 60 - int(clock.now()) % 60]
    finally:
        await dead.close()
    warnings = [r for r in caplog.records if r.name == "authgate.store"]
    assert len(warnings) == 1 and "counting in this process" in warnings[0].getMessage()


# -- servers: the setting, and two contexts on one database ---------------------------------------------------


@pytest.fixture
async def servers(settings: Settings, store: Store, other_store: Store,
                  clock: FrozenClock) -> AsyncIterator[Any]:
    """``await servers(**overrides)``: two servers (own context, own engine) on one database."""
    opened: list[tuple[ServerContext, httpx.AsyncClient]] = []

    async def make(**overrides: Any) -> list[tuple[ServerContext, httpx.AsyncClient]]:
        for st in (store, other_store):
            ctx = await build_context(replace(settings, **overrides).validate(), clock, st)
            transport = httpx.ASGITransport(app=create_app(ctx), client=("127.0.0.1", 50000))
            opened.append((ctx, httpx.AsyncClient(transport=transport, base_url=ISSUER)))
        return opened[-2:]

    yield make
    for ctx, http in opened:
        await http.aclose()
        if ctx.redis is not None:
            await ctx.redis.aclose()


async def test_registration_limit_shared_by_two_servers_without_redis(servers: Any, clock: FrozenClock) -> None:
    clock.advance(60 - clock.now() % 60 + 1.5)
    (ctx_a, a), (_, b) = await servers(rate_limit_backend="database", registration_rate_limit=3)
    limiters = [ctx_a.registration_limiter, ctx_a.login_limiter, *ctx_a.aauth_guard.limiters.values()]
    assert all(isinstance(lim.shared, DatabaseCounter) for lim in limiters)
    assert len({lim.name for lim in limiters}) == len(limiters)
    codes = [(await (a, b)[i % 2].post("/register", json=REGISTRATION)).status_code for i in range(4)]
    assert codes == [201, 201, 201, 429]
    refused = await a.post("/register", json=REGISTRATION)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) == 59


async def test_redis_down_falls_back_to_the_database_not_the_process(
        servers: Any, clock: FrozenClock, caplog: pytest.LogCaptureFixture) -> None:
    clock.advance(60 - clock.now() % 60 + 1.5)
    dead = f"redis://127.0.0.1:{free_port()}/0"
    with caplog.at_level(logging.WARNING, logger="authgate.shared"):
        (ctx_a, a), (_, b) = await servers(redis_url=dead, registration_rate_limit=2)
        assert ctx_a.rate_limit_backend == "redis"
        counter = ctx_a.registration_limiter.shared
        assert isinstance(counter, RedisCounter) and isinstance(counter.fallback, DatabaseCounter)
        codes = [(await a.post("/register", json=REGISTRATION)).status_code,
                 (await b.post("/register", json=REGISTRATION)).status_code,
                 (await a.post("/register", json=REGISTRATION)).status_code]
    assert codes == [201, 201, 429]  # per process it would have been 201, 201, 201
    assert any("Redis unavailable" in r.getMessage() for r in caplog.records if r.name == "authgate.shared")


@pytest.mark.parametrize(("setting", "redis", "workers", "postgres", "expected"), [
    ("auto", False, 1, False, "memory"),
    ("auto", False, 2, False, "database"),
    ("auto", False, 1, True, "database"),
    ("auto", True, 1, False, "redis"),
    ("memory", False, 4, True, "memory"),
    ("database", True, 1, False, "database"),
    ("redis", True, 1, False, "redis"),
    ("redis", False, 1, False, "database"),
])
def test_choose_backend(setting: str, redis: bool, workers: int, postgres: bool, expected: str) -> None:
    assert choose_backend(setting, redis=redis, workers=workers, postgres=postgres) == expected


async def test_auto_backend_by_database_and_workers(settings: Settings, store: Store, clock: FrozenClock) -> None:
    postgres = store.engine.dialect.name == "postgresql"
    one = await build_context(settings, clock, store)
    assert one.rate_limit_backend == ("database" if postgres else "memory")
    assert (one.registration_limiter.shared is None) is not postgres
    two = await build_context(replace(settings, workers=2).validate(), clock, store)
    assert two.rate_limit_backend == "database"
    assert isinstance(two.login_limiter.shared, DatabaseCounter)
    mem = await build_context(replace(settings, workers=2, rate_limit_backend="memory").validate(), clock, store)
    assert mem.registration_limiter.shared is None and mem.login_limiter.shared is None


def test_rate_limit_backend_is_validated(settings: Settings) -> None:
    for bad in ({"rate_limit_backend": "memcached"}, {"rate_limit_backend": "redis"}):
        with pytest.raises(ConfigError, match="rate_limit_backend"):
            replace(settings, **bad).validate()  # type: ignore[arg-type]
    ok = replace(settings, rate_limit_backend="redis", redis_url="redis://r:6379/0").validate()
    assert ok.rate_limit_backend == "redis"
