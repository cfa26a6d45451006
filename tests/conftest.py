"""Shared fixtures: a fresh store per test (SQLite file, and PostgreSQL when reachable), the server app on an
in-process transport, and a movable clock.

Store-backed tests run once per backend. PostgreSQL tests skip with a visible reason when the server is not
reachable; with ``AUTHGATE_REQUIRE_POSTGRES=1`` (set by CI) they fail instead, so CI can't pass by skipping.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from authgate.app import build_context, create_app
from authgate.clock import FrozenClock
from authgate.config import Settings, to_sqlalchemy_url
from authgate.context import ServerContext
from authgate.store import Store
from authgate.store.engine import make_engine, migrate

ISSUER = "http://127.0.0.1:9000"
PG_URL = os.environ.get("AUTHGATE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE_PG = os.environ.get("AUTHGATE_REQUIRE_POSTGRES") == "1"

_pg_state: dict[str, str | None] = {}


def _postgres_unavailable() -> str | None:
    """None if PostgreSQL answers, else the reason (checked once per session)."""
    if "reason" not in _pg_state:
        async def probe() -> None:
            engine = create_async_engine(to_sqlalchemy_url(PG_URL))
            try:
                async with engine.connect() as conn:
                    await conn.execute(sa.text("select 1"))
            finally:
                await engine.dispose()

        try:
            asyncio.run(asyncio.wait_for(probe(), 5))
            _pg_state["reason"] = None
        except Exception as exc:
            _pg_state["reason"] = f"PostgreSQL not reachable at {PG_URL}: {exc.__class__.__name__}: {exc}"
    return _pg_state["reason"]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres":
        reason = _postgres_unavailable()
        if reason:
            if REQUIRE_PG:
                pytest.fail(reason)
            pytest.skip(reason)
    return str(request.param)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(time.time())


@pytest.fixture
async def store(backend: str, tmp_path: Path, clock: FrozenClock) -> AsyncIterator[Store]:
    if backend == "sqlite":
        engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'authgate.db'}")
        await migrate(engine)
        st = Store(engine, clock)
        yield st
        await st.close()
        return
    schema = "t_" + secrets.token_hex(6)
    admin = create_async_engine(to_sqlalchemy_url(PG_URL))
    async with admin.begin() as conn:
        await conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    engine = create_async_engine(to_sqlalchemy_url(PG_URL), connect_args={"server_settings": {"search_path": schema}})
    await migrate(engine)
    st = Store(engine, clock)
    try:
        yield st
    finally:
        await st.close()
        async with admin.begin() as conn:
            await conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        await admin.dispose()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings for tests; override per test with ``dataclasses.replace`` via the ``make_settings`` fixture."""
    return Settings(
        issuer=ISSUER,
        data_dir=tmp_path,
        scopes=("read", "write", "admin", "offline_access"),
        default_scopes=("read",),
        registration_rate_limit=1000,
    ).validate()


@pytest.fixture
async def ctx(settings: Settings, store: Store, clock: FrozenClock) -> ServerContext:
    return await build_context(settings, clock, store)


@pytest.fixture
async def client(ctx: ServerContext) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(ctx), client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as http:
        yield http


@pytest.fixture
async def make_client(store: Store, clock: FrozenClock) -> AsyncIterator[Callable[..., Any]]:
    """Build another server (settings overridden) over the same store: ``await make_client(registration=...)``."""
    opened: list[httpx.AsyncClient] = []

    async def factory(settings: Settings, **overrides: Any) -> tuple[ServerContext, httpx.AsyncClient]:
        new_ctx = await build_context(replace(settings, **overrides).validate(), clock, store)
        transport = httpx.ASGITransport(app=create_app(new_ctx), client=("127.0.0.1", 50000))
        http = httpx.AsyncClient(transport=transport, base_url=ISSUER)
        opened.append(http)
        return new_ctx, http

    yield factory
    for http in opened:
        await http.aclose()
