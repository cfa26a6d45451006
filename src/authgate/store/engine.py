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
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from authgate.config import DatabaseUnavailable

_MIGRATIONS = Path(__file__).with_name("migrations")
_MIGRATION_LOCK = 0x61757468  # "auth"


#: Seconds a new PostgreSQL connection may take (TCP, TLS, start-up, login). asyncpg's own default is 60 s: a
#: database host that drops packets kept `authgate serve` silent for a minute before saying it cannot be reached,
#: and a request waiting on a fresh pool connection as long.
CONNECT_TIMEOUT = 10.0


def make_engine(url: str, *, pool_size: int = 10, max_overflow: int = 10,
                connect_timeout: float = CONNECT_TIMEOUT) -> AsyncEngine:
    """An async engine; ``pool_size``/``max_overflow`` size the PostgreSQL pool (per process), ``connect_timeout``
    bounds each new PostgreSQL connection. Nothing connects yet. DatabaseUnavailable when the URL cannot be used:
    unparsable, its driver missing, or the directory of a SQLite file cannot be made."""
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if path and path != ":memory:":
            _make_sqlite_directory(path)
        from authgate.store import sqlite_inline

        engine = _create(url, module=sqlite_inline.dbapi(), connect_args={"timeout": 10},
                         pool_size=1, max_overflow=0, pool_timeout=5)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=10000")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    engine = _create(url, pool_size=pool_size, max_overflow=max_overflow, pool_recycle=1800,
                     connect_args={"timeout": connect_timeout})
    _ping_when_idle(engine)
    return engine


def _create(url: str, **kw: Any) -> AsyncEngine:
    try:
        return create_async_engine(url, **kw)
    except ImportError as exc:  # a dialect whose driver is not installed (MySQLdb for mysql://, ...)
        raise DatabaseUnavailable(f"the driver for {url.split(':', 1)[0][:40]}:// databases "
                                  f"({exc.name or 'its module'}) is not installed; authgate uses sqlite+aiosqlite "
                                  "or postgresql+asyncpg") from None
    except (ArgumentError, ValueError):  # unparsable, an unknown dialect, a port that is not a number
        raise DatabaseUnavailable("the database URL cannot be used (a URL like sqlite:///PATH or "
                                  "postgresql://USER@HOST:5432/DB is)") from None


def _make_sqlite_directory(path: str) -> None:
    parent = Path(path).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise DatabaseUnavailable(f"cannot create the SQLite database {path}: {parent} is not a directory") from None
    except OSError as exc:
        raise DatabaseUnavailable(f"cannot create the directory {exc.filename or parent} for the SQLite database "
                                  f"{path}: {exc.strerror or exc.__class__.__name__}") from None


def describe_database(url: str | sa.URL) -> str:
    """Where ``url`` points, for messages: the SQLite file, or the server's host and port (never a password)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return "the database"
    if parsed.get_backend_name() == "sqlite":
        return f"the SQLite database {parsed.database or ':memory:'}"
    socket = parsed.query.get("host")  # postgresql:///db?host=/run/postgresql: a Unix socket
    host = parsed.host or (socket if isinstance(socket, str) else None) or "localhost"
    return f"the database at {host}:{parsed.port or 5432}"


async def check_reachable(engine: AsyncEngine) -> None:
    """Open one connection (back to the pool at once); DatabaseUnavailable naming the database and why when that
    fails: a server that cannot be reached (refused, unknown host, timed out), one that refuses the login (unknown
    role or database, wrong password), a SQLite file that cannot be opened. Nothing else is caught: a migration's own
    error stays what it is."""
    try:
        async with engine.connect():
            pass
    except (OSError, DBAPIError) as exc:
        where = describe_database(engine.url)
        if isinstance(exc, DBAPIError) and exc.orig is not None:
            reason = str(exc.orig)
        elif isinstance(exc, TimeoutError):
            reason = "timed out"
        else:
            reason = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
        reason = " ".join(reason.split())[:300] or exc.__class__.__name__
        password = engine.url.password
        if password:  # drivers do not echo it; be sure
            reason = reason.replace(str(password), "***")
        if engine.url.get_backend_name() == "sqlite":
            message = f"{where} cannot be opened: {reason}"
        elif isinstance(exc, DBAPIError):
            message = f"{where} refused the connection: {reason}"
        else:
            message = f"{where} cannot be reached: {reason}"
        raise DatabaseUnavailable(message) from None


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
