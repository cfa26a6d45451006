"""Redis as the processes' shared memory: rate limits counted once for all processes, the replay cache, and what
happens when Redis is down (documented in docs/deployment.md: the replay cache falls back to the database, and so
do the server's rate limits — tests/scale/test_db_ratelimit.py; a RedisCounter without a fallback counts in its
process; the server keeps answering). Key sets shared through Redis: tests/scale/test_shared_jwks.py."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from authgate.agentauth.replay import DatabaseReplayCache
from authgate.clock import FrozenClock
from authgate.config import ConfigError, Settings
from authgate.demo.servers import free_port
from authgate.ratelimit import RateLimiter
from authgate.shared.client import SharedRedis
from authgate.shared.ratelimit import RedisCounter
from authgate.shared.replay import RedisReplayCache
from authgate.store import Store
from tests.helpers import REDIRECT
from tests.scale.cluster import REDIS_URL, Cluster, require_redis, server_env

REGISTRATION = {"client_name": "x", "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}


@pytest.fixture
def live_redis() -> None:
    require_redis()


@pytest.fixture
async def shared() -> AsyncIterator[Callable[..., SharedRedis]]:
    """Factory of independent clients (one per simulated process) under one fresh key prefix."""
    prefix = f"authgate-test-{secrets.token_hex(4)}:"
    made: list[SharedRedis] = []

    def make(url: str = REDIS_URL, **kw: Any) -> SharedRedis:
        r = SharedRedis.from_url(url, prefix=prefix, **kw)
        made.append(r)
        return r

    yield make
    for r in made:
        await r.aclose()


def _dead_redis_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there


def _wait_for_fresh_window(window: int = 60, margin: int = 15) -> None:
    """Fixed-window limits reset on the minute: don't start a count that a reset could split."""
    if time.time() % window > window - margin:
        time.sleep(window - time.time() % window + 0.5)


# -- in-process: two clients stand for two processes --------------------------------------------------------


async def test_two_limiters_on_redis_share_one_bucket(live_redis: None, shared: Callable[..., SharedRedis],
                                                      clock: FrozenClock) -> None:
    a = RateLimiter(3, 60, clock, shared=RedisCounter(shared()), name="register")
    b = RateLimiter(3, 60, clock, shared=RedisCounter(shared()), name="register")
    results = [await a.hit("203.0.113.5"), await b.hit("203.0.113.5"), await a.hit("203.0.113.5")]
    assert results == [None, None, None]
    assert await b.hit("203.0.113.5") is not None  # the 4th over both is refused
    assert await a.hit("203.0.113.6") is None  # another caller has its own bucket
    other = RateLimiter(3, 60, clock, shared=RedisCounter(shared()), name="login")
    assert await other.hit("203.0.113.5") is None  # and another limiter too
    clock.advance(60)
    assert await b.hit("203.0.113.5") is None  # a new window


async def test_rate_limit_falls_back_to_this_process_when_redis_is_down(
        shared: Callable[..., SharedRedis], clock: FrozenClock, caplog: pytest.LogCaptureFixture) -> None:
    redis = shared(_dead_redis_url(), timeout=0.2)
    limiter = RateLimiter(2, 60, clock, shared=RedisCounter(redis), name="register")
    with caplog.at_level(logging.WARNING, logger="authgate.shared"):
        assert [await limiter.hit("a") for _ in range(3)][:2] == [None, None]
    assert await limiter.hit("a") is not None  # still limited: counted here
    warnings = [r for r in caplog.records if r.name == "authgate.shared"]
    assert len(warnings) == 1 and "Redis unavailable" in warnings[0].getMessage()
    assert "127.0.0.1" not in warnings[0].getMessage()  # no URL (it may carry a password)


async def test_replay_cache_on_redis_is_shared_and_atomic(live_redis: None, shared: Callable[..., SharedRedis],
                                                          store: Store) -> None:
    a = RedisReplayCache(shared(), DatabaseReplayCache(store))
    b = RedisReplayCache(shared(), DatabaseReplayCache(store))
    key = secrets.token_bytes(32)
    assert await a.seen_before(key, 121) is False
    assert await b.seen_before(key, 121) is True
    assert await a.seen_before(secrets.token_bytes(32), 121) is False


async def test_replay_cache_falls_back_to_the_database_and_remembers_the_outage(
        live_redis: None, shared: Callable[..., SharedRedis], store: Store) -> None:
    redis = shared(cooldown=3600)
    cache = RedisReplayCache(redis, DatabaseReplayCache(store))
    redis.failed(ConnectionError("down"))  # an outage: the breaker is open
    key = secrets.token_bytes(32)
    assert await cache.seen_before(key, 121) is False  # accepted through the database
    assert await cache.seen_before(key, 121) is True
    redis._open_until = 0.0  # Redis is back; it never saw ``key``
    assert await cache.seen_before(key, 121) is True  # the database still refuses it (2 * ttl after the outage)
    other = RedisReplayCache(shared(), DatabaseReplayCache(store))
    assert await other.seen_before(key, 121) is True  # and Redis now has it too


async def test_replay_cache_with_redis_down_uses_the_database(shared: Callable[..., SharedRedis],
                                                              store: Store) -> None:
    cache = RedisReplayCache(shared(_dead_redis_url(), timeout=0.2), DatabaseReplayCache(store))
    key = secrets.token_bytes(32)
    assert await cache.seen_before(key, 121) is False
    assert await DatabaseReplayCache(store).seen_before(key, 121) is True  # recorded where every process sees it


async def test_server_with_redis_down_keeps_registering_and_limiting(
        settings: Settings, make_client: Callable[..., Any]) -> None:
    ctx, http = await make_client(settings, redis_url=_dead_redis_url(), registration_rate_limit=2)
    assert ctx.redis is not None
    codes = [(await http.post("/register", json=REGISTRATION)).status_code for _ in range(3)]
    assert codes == [201, 201, 429]
    await ctx.redis.aclose()


async def test_with_redis_url_every_limiter_and_the_replay_cache_are_shared(
        live_redis: None, settings: Settings, make_client: Callable[..., Any]) -> None:
    ctx, http = await make_client(settings, redis_url=REDIS_URL, redis_prefix=f"t-{secrets.token_hex(4)}:",
                                  registration_rate_limit=1)
    limiters = [ctx.registration_limiter, ctx.login_limiter, *ctx.aauth_guard.limiters.values()]
    assert all(isinstance(lim.shared, RedisCounter) for lim in limiters)
    assert len({lim.name for lim in limiters}) == len(limiters)  # one bucket family per limiter
    assert isinstance(ctx.replay_cache, RedisReplayCache)
    _wait_for_fresh_window()
    codes = [(await http.post("/register", json=REGISTRATION)).status_code for _ in range(2)]
    assert codes == [201, 429]
    keys = [k async for k in ctx.redis.client.scan_iter(match=ctx.redis.prefix + "*")]
    assert len(keys) == 1 and b"127.0.0.1" not in keys[0]  # the caller's address is hashed
    await ctx.redis.aclose()


def test_scale_settings_are_validated(settings: Settings) -> None:
    from dataclasses import replace

    for bad in ({"workers": 0}, {"db_pool_size": 0}, {"db_max_overflow": -1}, {"redis_url": "http://x"},
                {"shutdown_timeout": -1}, {"redis_prefix": ""}, {"redis_prefix": "a b"}):
        with pytest.raises(ConfigError):
            replace(settings, **bad).validate()
    ok = replace(settings, workers=4, db_pool_size=20, db_max_overflow=0, redis_url="rediss://r:6380/1").validate()
    assert ok.workers == 4


# -- two real processes ---------------------------------------------------------------------------------------


def test_registration_limit_is_shared_by_two_processes(live_redis: None, tmp_path: Path) -> None:
    """Open registration allows 3 per address per minute *in total*: the 4th, on either process, is refused."""
    env = server_env(tmp_path, f"sqlite:///{tmp_path / 'authgate.db'}", redis_url=REDIS_URL,
                     redis_prefix=f"authgate-test-{secrets.token_hex(4)}:", registration_rate_limit="3")
    cluster = Cluster(env, 2)
    cluster.start()
    try:
        _wait_for_fresh_window()
        codes = [httpx.post(cluster.urls[i % 2] + "/register", json=REGISTRATION, timeout=30).status_code
                 for i in range(4)]
        assert codes == [201, 201, 201, 429]
        refused = httpx.post(cluster.urls[0] + "/register", json=REGISTRATION, timeout=30)
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    finally:
        outputs = cluster.stop()
    assert not any("Traceback" in out for out in outputs), outputs
