"""Group commit: the inserts of concurrent requests (token records, audit events, new clients) share one
transaction, so a busy server pays one begin/commit (and on PostgreSQL one WAL flush) per batch instead of
one per request.

Nothing is acknowledged before it is durable: each caller waits until the transaction holding its rows has
committed. A caller's rows are all-or-nothing, as with a transaction of its own: if a batch fails (one caller's
duplicate key, say), every caller's rows are written again in a transaction of their own, so only the caller
whose rows are at fault gets the error. Batches form by themselves: whatever was submitted while the previous
batch was being written goes into the next one; there is no timer and no added wait when the server is idle.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger("authgate.store")

#: One insert: the table and the row's values.
Insert = tuple[sa.Table, dict[str, Any]]

MAX_BATCH = 256


class GroupCommit:
    def __init__(self, engine: AsyncEngine, *, max_batch: int = MAX_BATCH) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self._pending: list[tuple[Sequence[Insert], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def insert(self, rows: Sequence[Insert]) -> None:
        """Insert ``rows`` atomically; returns once they are committed, raises what their own transaction would
        have raised."""
        if not rows:
            return
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._pending.append((rows, done))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._drain())
        await asyncio.shield(done)

    async def drain(self) -> None:
        """Wait until everything submitted so far is written (shutdown)."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
            try:
                await self._write([rows for rows, _ in batch])
            except Exception as exc:
                if len(batch) == 1:
                    self._settle(batch[0][1], exc)
                    continue
                log.debug("group commit of %d failed; writing each on its own", len(batch))
                for rows, done in batch:
                    try:
                        await self._write([rows])
                    except Exception as exc:
                        self._settle(done, exc)
                    else:
                        self._settle(done, None)
                continue
            for _, done in batch:
                self._settle(done, None)

    @staticmethod
    def _settle(done: asyncio.Future[None], exc: BaseException | None) -> None:
        if done.done():
            return
        if exc is None:
            done.set_result(None)
        else:
            done.set_exception(exc)

    async def _write(self, submissions: list[Sequence[Insert]]) -> None:
        # executemany per table and column set, in first-seen order (foreign keys: a client before its audit row)
        grouped: dict[tuple[str, tuple[str, ...]], tuple[sa.Table, list[dict[str, Any]]]] = {}
        for rows in submissions:
            for table, values in rows:
                key = (table.name, tuple(values))
                if key not in grouped:
                    grouped[key] = (table, [])
                grouped[key][1].append(values)
        async with self.engine.begin() as conn:
            for table, values_list in grouped.values():
                await conn.execute(sa.insert(table), values_list)

