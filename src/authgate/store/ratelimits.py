"""Rate-limit buckets in the database: one fixed-window counter per (limiter, caller) for every process that
shares the database, for deployments of several processes or instances without Redis.

Implements :class:`authgate.ratelimit.SharedCounter`. One row per key (the SHA-256 of limiter name and caller:
no address or username is stored in clear) holds the current window's start and count. A hit is one statement,
``INSERT … ON CONFLICT (key) DO UPDATE … RETURNING hits``: a new key starts at 1; in the same window the count
goes up by one; a hit in a later window starts the count again at 1. PostgreSQL locks the conflicting row, so
concurrent hits on one key are counted one after another (no lost update: of N concurrent requests exactly
``limit`` get through); SQLite serialises writers anyway. A hit stamped with an *earlier* window than the row's
(another process's clock a little behind) counts in the row's window rather than resetting it.

Rows of finished windows are dead (the next hit resets them); each process deletes them on a hit at most every
``purge_every`` seconds (of the limiters' clock), so the table holds about the callers of the last window.

The counters are meant for the low-rate limits (registration, sign-in, AAuth identity attempts): each hit costs
a database round trip. If the database can't answer, the hit returns ``None`` and the limiter counts in its
own process (one warning per failure streak), as it does when Redis is down.
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from authgate.store import tables as t

if TYPE_CHECKING:
    from authgate.store.repository import Store

log = logging.getLogger("authgate.store")


class DatabaseCounter:
    """Build one per server process: ``DatabaseCounter(store)``."""

    def __init__(self, store: Store, *, purge_every: float = 300.0) -> None:
        self.store = store
        self.purge_every = purge_every
        self._last_purge = float("-inf")
        self._dialect = store.engine.dialect.name
        self._failing = False

    def _hit(self, key: str, window_start: int, window: int) -> sa.Executable:
        table = t.rate_limit_counters
        c = table.c
        values = {"key": key, "window_start": window_start, "hits": 1, "expires_at": window_start + window}
        if self._dialect == "postgresql":
            ins: postgresql.Insert | sqlite.Insert = postgresql.insert(table).values(**values)
        elif self._dialect == "sqlite":
            ins = sqlite.insert(table).values(**values)
        else:
            raise NotImplementedError(f"rate-limit counters on {self._dialect}")
        # The row's window is current (or ahead of the caller's clock): count in it; otherwise start anew.
        current = c.window_start >= ins.excluded.window_start
        return ins.on_conflict_do_update(index_elements=[c.key], set_={
            "hits": sa.case((current, c.hits + 1), else_=1),
            "window_start": sa.case((current, c.window_start), else_=ins.excluded.window_start),
            "expires_at": sa.case((current, c.expires_at), else_=ins.excluded.expires_at),
        }).returning(c.hits)

    async def incr(self, key: str, window_start: int, window: int) -> int | None:
        digest = hashlib.sha256(key.encode()).hexdigest()
        try:
            if window_start - self._last_purge >= self.purge_every:
                self._last_purge = window_start
                await self.purge(window_start)
            async with self.store.engine.begin() as conn:
                count = (await conn.execute(self._hit(digest, window_start, window))).scalar_one()
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            if not self._failing:
                log.warning("rate-limit counter in the database failed (%s); counting in this process",
                            exc.__class__.__name__)
            self._failing = True
            return None
        self._failing = False
        return int(count)

    async def purge(self, now: int | None = None) -> int:
        """Delete the rows of windows over at ``now`` (default: the store's clock); returns how many."""
        at = int(self.store.clock.now()) if now is None else now
        table = t.rate_limit_counters
        async with self.store.engine.begin() as conn:
            res = await conn.execute(sa.delete(table).where(table.c.expires_at <= at))
        return int(res.rowcount)
