"""Opening the database and bringing its schema up to date.

SQLite (the default, one file) and PostgreSQL run the same statements; the differences that matter are kept
here: SQLite gets WAL and a busy timeout so concurrent writers wait instead of failing, PostgreSQL takes an
advisory lock so that several processes starting at once migrate exactly once.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

_MIGRATIONS = Path(__file__).with_name("migrations")
_MIGRATION_LOCK = 0x61757468  # "auth"


def make_engine(url: str, *, pool_size: int = 10, max_overflow: int = 10) -> AsyncEngine:
    """An async engine; ``pool_size``/``max_overflow`` size the PostgreSQL pool (per process)."""
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        from authgate.store import sqlite_inline

        engine = create_async_engine(url, module=sqlite_inline.dbapi(), connect_args={"timeout": 10},
                                       pool_size=1, max_overflow=0, pool_timeout=5)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=10000")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    engine = create_async_engine(url, pool_size=pool_size, max_overflow=max_overflow, pool_recycle=1800)
    _ping_when_idle(engine)
    return engine


#: A pooled PostgreSQL connection idle longer than this is pinged before use.
IDLE_PING_SECONDS = 10.0


def _ping_when_idle(engine: AsyncEngine) -> None:
    """Check a connection before use only when it sat idle for a while (when a database restart or a dropped
    TCP connection could have gone unnoticed). SQLAlchemy's pool_pre_ping pings on every checkout, a round trip
    per statement group that halved token throughput; a busy pool's connections are never idle that long. A
    failed ping makes the pool replace the connection (and retry the checkout) instead of failing the request."""
    pool = engine.sync_engine.pool
    dialect = engine.sync_engine.dialect

    @event.listens_for(pool, "checkin")
    def _checked_in(_dbapi_conn: Any, record: Any) -> None:
        record.info["authgate_idle_since"] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def _checked_out(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("authgate_idle_since")
        if since is None or time.monotonic() - since < IDLE_PING_SECONDS:
            return
        try:
            dialect.do_ping(dbapi_conn)
        except Exception as exc:
            raise DisconnectionError("idle connection failed its ping") from exc


def _upgrade(connection: sa.Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, "head")


async def migrate(engine: AsyncEngine) -> None:
    """Apply every pending migration (idempotent)."""
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)
