"""Abuse limits of OpenID CIBA's ``/bc-authorize``: every accepted request reaches the person's channels, and with
open registration anyone can have a CIBA client. Per client per minute (unknown ``login_hint`` values included, so
guessing usernames is throttled), per person per minute from all clients, and open requests per person. Over a
limit: 429, ``access_denied``, ``Retry-After``, and nothing recorded or sent. The per-minute counts are shared by
the server's processes (``rate_limit_backend``: database, Redis). On SQLite and PostgreSQL."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
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
from authgate.shared.ratelimit import RedisCounter
from authgate.store import Store
from authgate.store.engine import make_engine
from authgate.store.ratelimits import DatabaseCounter
from tests.approvals.test_ciba import Client, _approval_id, _bc_authorize, _ciba_client, _start, _state
from tests.conftest import ISSUER
from tests.helpers import add_user
from tests.scale.cluster import REDIS_URL, require_redis

Server = tuple[ServerContext, httpx.AsyncClient]


def _refused(r: httpx.Response, limit: str) -> int:
    """A CIBA abuse-limit refusal; returns its Retry-After."""
    assert r.status_code == 429, r.text
    assert r.json()["error"] == "access_denied", r.text
    assert limit in r.json()["error_description"], r.text
    assert r.headers["cache-control"] == "no-store"
    retry_after = int(r.headers["retry-after"])
    assert 1 <= retry_after <= 3600
    return retry_after


@pytest.fixture
def minute(clock: FrozenClock) -> FrozenClock:
    """The clock at 1.5 s into a fresh one-minute window (the limits count in fixed windows)."""
    clock.advance(60 - clock.now() % 60 + 1.5)
    return clock


@pytest.fixture
async def server(settings: Settings, store: Store,
                 clock: FrozenClock) -> AsyncIterator[Callable[..., Awaitable[Server]]]:
    """``await server(**settings)``: a server over the test store (each call one more, on the same store)."""
    opened: list[Server] = []

    async def make(st: Store | None = None, **overrides: Any) -> Server:
        ctx = await build_context(replace(settings, **overrides).validate(), clock, st or store)
        transport = httpx.ASGITransport(app=create_app(ctx), client=("127.0.0.1", 50000))
        opened.append((ctx, httpx.AsyncClient(transport=transport, base_url=ISSUER)))
        return opened[-1]

    yield make
    for ctx, http in opened:
        await http.aclose()
        if ctx.redis is not None:
            await ctx.redis.aclose()


@pytest.fixture
async def other_store(store: Store, clock: FrozenClock) -> AsyncIterator[Store]:
    """The same database through a second engine, as another server process opens it."""
    if store.engine.dialect.name == "sqlite":
        engine = make_engine(store.engine.url.render_as_string(hide_password=False))
    else:
        async with store.engine.connect() as conn:
            search_path = (await conn.execute(sa.text("SHOW search_path"))).scalar_one()
        engine = create_async_engine(store.engine.url,
                                     connect_args={"server_settings": {"search_path": search_path}})
    other = Store(engine, clock)
    yield other
    await other.close()


def test_defaults_and_validation(settings: Settings) -> None:
    assert (Settings().ciba_rate_per_client, Settings().ciba_rate_per_user,
            Settings().ciba_max_pending_per_user) == (30, 5, 10)
    for name in ("ciba_rate_per_client", "ciba_rate_per_user", "ciba_max_pending_per_user"):
        assert getattr(replace(settings, **{name: 0}).validate(), name) == 0  # 0 = no limit
        with pytest.raises(ConfigError, match=name):
            replace(settings, **{name: -1}).validate()


async def test_per_person_limit_with_the_defaults(server: Callable[..., Awaitable[Server]],
                                                  minute: FrozenClock) -> None:
    """Six requests for one person in a minute, from six clients (anyone can register one): the sixth is
    refused, another person is still reachable, and the next minute the person is too."""
    ctx, http = await server()
    await add_user(ctx.store, "alice")
    await add_user(ctx.store, "bob")
    clients = [await _ciba_client(ctx) for _ in range(6)]
    for c in clients[:5]:
        await _start(http, c)
    before = await _state(ctx)
    wait = _refused(await _bc_authorize(http, clients[5]), "for this user")
    assert wait == 59  # the rest of the window
    assert await _state(ctx) == before  # no approval request, so nothing reached alice's channels
    assert len(await ctx.approvals.pending_for(None)) == 5
    await _start(http, clients[5], login_hint="bob")
    minute.advance(wait)
    await _start(http, clients[5])


async def test_per_client_limit_counts_unknown_login_hints(server: Callable[..., Awaitable[Server]],
                                                          minute: FrozenClock) -> None:
    """Guessing usernames (``unknown_user_id`` tells them apart) spends the client's budget like real requests;
    once it is spent, known and unknown names get the same refusal."""
    ctx, http = await server(ciba_rate_per_client=3)
    await add_user(ctx.store, "alice")
    guesser, other = await _ciba_client(ctx), await _ciba_client(ctx)
    for name in ("admin", "root", "mallory"):
        r = await _bc_authorize(http, guesser, login_hint=name)
        assert r.status_code == 400 and r.json()["error"] == "unknown_user_id", r.text
    before = await _state(ctx)
    for name in ("alice", "nobody"):
        _refused(await _bc_authorize(http, guesser, login_hint=name), "from this client")
    assert await _state(ctx) == before
    await _start(http, other)  # another client has its own budget
    minute.advance(60)
    await _start(http, guesser)


async def test_malformed_requests_count_for_the_client(server: Callable[..., Awaitable[Server]],
                                                       minute: FrozenClock) -> None:
    ctx, http = await server(ciba_rate_per_client=2)
    await add_user(ctx.store, "alice")
    c = await _ciba_client(ctx)
    assert (await _bc_authorize(http, c, scope="openid")).status_code == 400
    await _start(http, c)
    _refused(await _bc_authorize(http, c), "from this client")


async def test_open_requests_per_person_are_capped(server: Callable[..., Awaitable[Server]],
                                                   minute: FrozenClock) -> None:
    ctx, http = await server(ciba_max_pending_per_user=2, ciba_rate_per_user=0)
    alice = await add_user(ctx.store, "alice")
    a, b = await _ciba_client(ctx), await _ciba_client(ctx)
    first = await _start(http, a, requested_expiry="120")
    minute.advance(10)
    await _start(http, b, requested_expiry="600")
    # Other kinds of approval requests don't count against the CIBA cap.
    await ctx.approvals.create(kind="consent", subject=alice, client_id=a[0], details={})
    before = await _state(ctx)
    wait = _refused(await _bc_authorize(http, b), "too many open")
    assert wait == 110  # until the first open request expires
    assert await _state(ctx) == before
    # A decided request is no longer open; nor is an expired one.
    await ctx.approvals.decide(await _approval_id(ctx, first["auth_req_id"]), False, by=alice, channel="web")
    third = await _start(http, a, requested_expiry="60")
    _refused(await _bc_authorize(http, a), "too many open")
    minute.advance(60)
    expired = await ctx.approvals.get(await _approval_id(ctx, third["auth_req_id"]))
    assert expired is not None and expired.status == "expired"
    await _start(http, a)


async def test_zero_turns_the_limits_off(server: Callable[..., Awaitable[Server]], minute: FrozenClock) -> None:
    ctx, http = await server(ciba_rate_per_client=0, ciba_rate_per_user=0, ciba_max_pending_per_user=0)
    await add_user(ctx.store, "alice")
    c = await _ciba_client(ctx)
    for _ in range(40):
        await _start(http, c)


async def _shared_count(a: Server, b: Server) -> None:
    """Two servers count one person's requests together (ciba_rate_per_user = 3), and one client's."""
    (ctx_a, http_a), (_, http_b) = a, b
    await add_user(ctx_a.store, "alice")
    await add_user(ctx_a.store, "bob")
    clients: list[Client] = [await _ciba_client(ctx_a) for _ in range(4)]
    await _start(http_a, clients[0])
    await _start(http_b, clients[1])
    await _start(http_a, clients[2])
    _refused(await _bc_authorize(http_b, clients[3]), "for this user")
    _refused(await _bc_authorize(http_a, clients[3]), "for this user")
    # ciba_rate_per_client = 4: clients[3] has spent 2, on two servers.
    await _start(http_b, clients[3], login_hint="bob")
    await _start(http_a, clients[3], login_hint="bob")
    _refused(await _bc_authorize(http_b, clients[3], login_hint="bob"), "from this client")


async def test_limits_are_shared_by_processes_through_the_database(
        server: Callable[..., Awaitable[Server]], other_store: Store, minute: FrozenClock) -> None:
    limits = {"ciba_rate_per_user": 3, "ciba_rate_per_client": 4, "rate_limit_backend": "database"}
    a, b = await server(**limits), await server(other_store, **limits)
    assert isinstance(a[0].ciba_user_limiter.shared, DatabaseCounter)
    assert isinstance(a[0].ciba_client_limiter.shared, DatabaseCounter)
    await _shared_count(a, b)


async def test_limits_are_shared_by_processes_through_redis(
        server: Callable[..., Awaitable[Server]], other_store: Store, minute: FrozenClock) -> None:
    require_redis()
    limits = {"ciba_rate_per_user": 3, "ciba_rate_per_client": 4, "redis_url": REDIS_URL,
              "redis_prefix": f"authgate-test-{secrets.token_hex(4)}:"}
    a, b = await server(**limits), await server(other_store, **limits)
    assert a[0].rate_limit_backend == "redis" and isinstance(a[0].ciba_user_limiter.shared, RedisCounter)
    await _shared_count(a, b)
