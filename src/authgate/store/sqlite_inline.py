"""SQLite statements run on the event loop's own thread instead of a worker thread per connection.

aiosqlite hands every call (cursor, execute, fetch, commit) to a thread and wakes the loop when it is done:
four or more thread hops per statement, which cost far more than the statement itself (a point read or an
insert in WAL mode with ``synchronous=NORMAL`` takes a few microseconds; no fsync happens at commit). So
SQLite gets the same SQLAlchemy async dialect with a DBAPI module whose awaitables complete at once.

Why this is safe on one thread: a statement never waits for another coroutine — reads do not block in WAL
mode, and no code path awaits anything but the database inside a write transaction, so a write lock is
always released before the loop runs anyone else. Writers in other processes are waited for by SQLite's busy
handler (``busy_timeout``), which blocks this loop only for as long as their transaction lasts.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from types import SimpleNamespace
from typing import Any

from sqlalchemy.dialects.sqlite.aiosqlite import AsyncAdapt_aiosqlite_connection, AsyncAdapt_aiosqlite_dbapi
from sqlalchemy.util.concurrency import await_


class _Cursor:
    __slots__ = ("_cursor",)

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    async def __aenter__(self) -> _Cursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> _Cursor:
        if parameters is None:
            self._cursor.execute(sql)
        else:
            self._cursor.execute(sql, parameters)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> _Cursor:
        self._cursor.executemany(sql, parameters)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(size if size is not None else self._cursor.arraysize)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()


class Connection:
    """The subset of ``aiosqlite.Connection`` that SQLAlchemy's aiosqlite adapter uses."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection: sqlite3.Connection | None = connection

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._connection is None:
            raise ValueError("no active connection")
        return self._connection

    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    def cursor(self) -> _Cursor:
        return _Cursor(self._conn.cursor())

    async def commit(self) -> None:
        self._conn.commit()

    async def rollback(self) -> None:
        self._conn.rollback()

    async def create_function(self, *args: Any, **kw: Any) -> None:
        self._conn.create_function(*args, **kw)

    async def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def stop(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


async def _connect(database: str, **kw: Any) -> Connection:
    kw.pop("check_same_thread", None)
    return Connection(sqlite3.connect(database, check_same_thread=False, **kw))


def connect(database: str, **kw: Any) -> Any:
    return _connect(database, **kw)


_module = SimpleNamespace(
    connect=connect, Connection=Connection,
    **{name: getattr(sqlite3, name) for name in (
        "DatabaseError", "Error", "IntegrityError", "NotSupportedError", "OperationalError", "ProgrammingError",
        "sqlite_version", "sqlite_version_info")},
)


class _InlineAdaptedConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()

    @property
    def isolation_level(self) -> str | None:
        return self._connection.isolation_level  # type: ignore[no-any-return]

    @isolation_level.setter
    def isolation_level(self, value: str | None) -> None:
        self._connection._conn.isolation_level = value


class _InlineDBAPI(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *arg: Any, **kw: Any) -> _InlineAdaptedConnection:
        return _InlineAdaptedConnection(self, await_(_connect(*arg, **kw)))  # type: ignore[arg-type]


def dbapi() -> Any:
    """The DBAPI object to pass as ``module=`` to ``create_async_engine`` for a ``sqlite+aiosqlite`` URL."""
    return _InlineDBAPI(_module, sqlite3)  # type: ignore[arg-type]
