"""Change counters: how a process keeps hot, rarely changing state (clients, the kill list) in memory and still
sees a change made by any other process on its very next request.

Every change to such state bumps a named counter row (``trust_versions``) in the same transaction. A reader
compares the counters with the ones its cache was built from; a different number means reload. The counters
are read fresh for every caller, but callers share reads: a caller joins a read that has not started yet, and
a read starts only after everyone waiting for it arrived. So each caller sees every change committed before
it asked, and a busy process pays one small query per event-loop turn, not one per request.
"""

from __future__ import annotations

import asyncio
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from authgate.store import tables as t

CLIENTS = "clients"
KILLS = "kills"
MANDATES = "mandates"


class ChangeCounters:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._next: asyncio.Future[dict[str, int]] | None = None

    async def bump(self, conn: Any, name: str) -> None:
        """Increment ``name`` inside the caller's write transaction (``conn``, an AsyncConnection)."""
        c = t.trust_versions.c
        res = await conn.execute(sa.update(t.trust_versions).where(c.name == name).values(version=c.version + 1))
        if not res.rowcount:  # migrations seed every row; this only covers a hand-made schema
            await conn.execute(sa.insert(t.trust_versions).values(name=name, version=1))

    async def get(self, name: str) -> int:
        """The value of counter ``name`` (0 if never bumped), read after this call began."""
        pending = self._next
        if pending is None:
            loop = asyncio.get_running_loop()
            pending = self._next = loop.create_future()
            loop.call_soon(self._start, pending)
        return (await asyncio.shield(pending)).get(name, 0)

    def _start(self, pending: asyncio.Future[dict[str, int]]) -> None:
        self._next = None  # whoever comes from now on waits for a read that starts after them
        asyncio.get_running_loop().create_task(self._read(pending))

    async def _read(self, pending: asyncio.Future[dict[str, int]]) -> None:
        try:
            async with self.engine.connect() as conn:
                rows = await conn.execute(sa.select(t.trust_versions.c.name, t.trust_versions.c.version))
                values = {str(r[0]): int(r[1]) for r in rows}
        except BaseException as exc:
            if not pending.done():
                pending.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            if not pending.done():
                pending.set_result(values)
