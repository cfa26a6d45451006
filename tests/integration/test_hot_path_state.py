"""The state the token endpoint keeps hot: group-committed writes and the cached clients.

Group commit must keep each caller's writes all-or-nothing and its errors its own; the client cache must
never serve a client that another process changed or deleted (the next request sees the change).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import create_async_engine

from authgate.config import Settings
from authgate.crypto.hashing import new_token, token_hash
from authgate.dcr.admin import add_static_client
from authgate.store import Store
from authgate.store.engine import make_engine
from authgate.store.repository import AuditEntry, NewArtifact


@pytest.fixture
async def other_store(store: Store, backend: str, tmp_path: Path) -> AsyncIterator[Store]:
    """A second Store on the same database, as another server process would have."""
    if backend == "sqlite":
        engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'authgate.db'}")
    else:
        async with store.engine.connect() as conn:
            path = (await conn.execute(sa.text("SHOW search_path"))).scalar_one()
        engine = create_async_engine(store.engine.url, connect_args={"server_settings": {"search_path": path}})
    other = Store(engine, store.clock)
    yield other
    await other.close()


async def _audit_events(store: Store) -> list[str]:
    return [e["event"] for e in await store.audit_events(1000)]


async def test_concurrent_writes_share_transactions(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    transactions: list[int] = []
    write = store.group._write

    async def counting(submissions: list[Any]) -> None:
        transactions.append(len(submissions))
        await write(submissions)

    monkeypatch.setattr(store.group, "_write", counting)
    await asyncio.gather(*(store.audit("test.batched", n=i) for i in range(50)))
    assert (await _audit_events(store)).count("test.batched") == 50
    assert sum(transactions) == 50 and len(transactions) < 50  # batched, nothing lost


async def test_a_failing_caller_gets_its_error_and_the_others_are_written(store: Store) -> None:
    await store.put_artifacts([NewArtifact("taken", "access_token", {}, 60)])
    results = await asyncio.gather(
        store.put_artifacts([NewArtifact("fresh-a", "access_token", {}, 60)], AuditEntry("test.a")),
        store.put_artifacts([NewArtifact("fresh-b", "access_token", {}, 60), NewArtifact("taken", "access_token",
                                                                                         {}, 60)],
                            AuditEntry("test.b")),
        store.put_artifacts([NewArtifact("fresh-c", "access_token", {}, 60)], AuditEntry("test.c")),
        return_exceptions=True)
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], IntegrityError)
    assert await store.get_artifact("fresh-a") is not None and await store.get_artifact("fresh-c") is not None
    # the failing caller's rows are all-or-nothing: neither its fresh artefact nor its audit row was written
    assert await store.get_artifact("fresh-b") is None
    events = await _audit_events(store)
    assert "test.a" in events and "test.c" in events and "test.b" not in events


async def test_shutdown_writes_what_was_submitted(store: Store) -> None:
    pending = [asyncio.ensure_future(store.audit("test.at_shutdown", n=i)) for i in range(20)]
    await asyncio.sleep(0)
    await store.group.drain()
    assert all(p.done() and p.exception() is None for p in pending)
    assert (await _audit_events(store)).count("test.at_shutdown") == 20


async def _token(http: httpx.AsyncClient, client_id: str, secret: str) -> httpx.Response:
    return await http.post("/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret))


async def test_a_client_deleted_elsewhere_is_refused_on_the_next_request(
        client: httpx.AsyncClient, store: Store, other_store: Store, settings: Settings) -> None:
    info = await add_static_client(store, settings, {"client_name": "cached", "grant_types": ["client_credentials"]})
    assert (await _token(client, info["client_id"], info["client_secret"])).status_code == 200  # now cached
    assert await other_store.delete_client(info["client_id"])
    refused = await _token(client, info["client_id"], info["client_secret"])
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"


async def test_a_secret_rotated_elsewhere_takes_effect_on_the_next_request(
        client: httpx.AsyncClient, store: Store, other_store: Store, settings: Settings) -> None:
    info = await add_static_client(store, settings, {"client_name": "cached", "grant_types": ["client_credentials"]})
    assert (await _token(client, info["client_id"], info["client_secret"])).status_code == 200
    fresh = new_token()
    assert await other_store.update_client(info["client_id"], secret_hash=token_hash(fresh))
    assert (await _token(client, info["client_id"], info["client_secret"])).status_code == 401
    assert (await _token(client, info["client_id"], fresh)).status_code == 200


async def test_a_client_registered_elsewhere_is_found_at_once(
        client: httpx.AsyncClient, other_store: Store, settings: Settings) -> None:
    info = await add_static_client(other_store, settings, {"client_name": "late",
                                                           "grant_types": ["client_credentials"]})
    assert (await _token(client, info["client_id"], info["client_secret"])).status_code == 200


async def test_an_idle_connection_killed_by_the_database_is_replaced_not_failed(
        backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """No ping on every checkout (a round trip each), but a connection that sat idle is pinged first: one the
    database dropped meanwhile (restart, idle timeout) is replaced and the statement runs on a fresh one."""
    if backend != "postgres":
        pytest.skip("a PostgreSQL connection pool behaviour (SQLite has one local connection)")
    import authgate.store.engine as engine_module
    from authgate.config import to_sqlalchemy_url
    from tests.conftest import PG_URL

    engine = engine_module.make_engine(to_sqlalchemy_url(PG_URL), pool_size=1, max_overflow=0)
    admin = create_async_engine(to_sqlalchemy_url(PG_URL))
    try:
        async with engine.connect() as conn:
            pid = (await conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one()
        async with admin.connect() as conn:
            await conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        monkeypatch.setattr(engine_module, "IDLE_PING_SECONDS", 0.0)
        async with engine.connect() as conn:
            assert (await conn.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one() != pid
    finally:
        await engine.dispose()
        await admin.dispose()


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)  # SQLite has one local connection
async def test_the_pool_is_sized_by_the_settings(backend: str, settings: Settings) -> None:
    """``db_pool_size``/``db_max_overflow`` reach the PostgreSQL pool of the server's store (2 + 1 here: the third
    concurrent connection is the one overflow connection, and no more may open)."""
    from dataclasses import replace

    from authgate.app import build_context
    from tests.conftest import PG_URL

    ctx = await build_context(replace(settings, database_url=PG_URL, db_pool_size=2, db_max_overflow=1).validate())
    try:
        pool = ctx.store.engine.pool
        assert pool.size() == 2 and pool._max_overflow == 1  # type: ignore[attr-defined]
        held = [await ctx.store.engine.connect() for _ in range(3)]
        try:
            for conn in held:
                await conn.execute(sa.text("SELECT 1"))
            assert pool.checkedout() == 3 and pool.overflow() == 1  # type: ignore[attr-defined]
        finally:
            for conn in held:
                await conn.close()
    finally:
        await ctx.store.close()
