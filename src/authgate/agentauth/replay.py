"""Replay cache for signed Agent Auth requests: a signed state-changing request is accepted once.

Agent Auth -11 has no nonce; replay defence is the 60 s ``created`` window plus, for state-changing requests, a
cache of what was already accepted inside that window (spec note §13, profile decision 6).

**Key.** :func:`authgate.crypto.httpsig.replay_key`: SHA-256 over the signer's key thumbprint and the exact
signature base. The base contains the profile's tuple ``(created, @method, @authority, @path)`` and everything
else that was covered (query, body digest, presented token), so distinct requests sent in the same second don't
collide. The signature bytes are deliberately *not* the key: one signed request has many valid encodings
(base64 vs base64url, raw vs DER ECDSA, ECDSA ``s`` vs ``n-s``), each of which would look new.

**Protocol.** ``seen_before(key, ttl)`` is one atomic insert-if-absent: it records ``key`` for ``ttl`` seconds and
says whether a live record was already there. That maps one-to-one on Redis ``SET key 1 NX EX ttl`` (issue #9).

Backends: :class:`DatabaseReplayCache` (SQLite or PostgreSQL through the store: shared by every server process;
one ``INSERT … ON CONFLICT DO UPDATE … WHERE expired`` statement, so two processes racing on the same key get
exactly one "new"), and :class:`MemoryReplayCache` for one process (tests, the agent-side demo).
"""

from __future__ import annotations

from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from authgate.clock import Clock, SystemClock
from authgate.store import Store
from authgate.store import tables as t


class ReplayCache(Protocol):
    async def seen_before(self, key: bytes, ttl: int) -> bool:
        """Record ``key`` for ``ttl`` seconds; True if it was already recorded and not yet expired (atomic)."""
        ...


class MemoryReplayCache:
    """Single-process replay cache (a dict of expiry times). Bounded: when full after purging expired entries it
    refuses new keys (fails closed: better a refused request than an accepted replay)."""

    def __init__(self, clock: Clock | None = None, max_entries: int = 100_000) -> None:
        self.clock = clock or SystemClock()
        self.max_entries = max_entries
        self._expiry: dict[bytes, float] = {}

    def __len__(self) -> int:
        return len(self._expiry)

    def purge(self) -> int:
        now = self.clock.now()
        dead = [k for k, exp in self._expiry.items() if exp <= now]
        for k in dead:
            del self._expiry[k]
        return len(dead)

    async def seen_before(self, key: bytes, ttl: int) -> bool:
        now = self.clock.now()
        exp = self._expiry.get(key)
        if exp is not None and exp > now:
            return True
        if exp is None and len(self._expiry) >= self.max_entries:
            self.purge()
            if len(self._expiry) >= self.max_entries:
                return True
        self._expiry[key] = now + ttl
        return False


class DatabaseReplayCache:
    """Replay cache in the store's ``signature_replay`` table, shared by all processes on the same database.

    Build one per server process: ``DatabaseReplayCache(store)``. Expired rows are deleted at most every
    ``purge_every`` seconds, by whichever request comes along (and by :meth:`purge`, for a maintenance job).
    """

    def __init__(self, store: Store, purge_every: float = 60.0) -> None:
        self.store = store
        self.purge_every = purge_every
        self._last_purge = float("-inf")
        self._dialect = store.engine.dialect.name

    def _insert(self, key: str, now: int, expires_at: int) -> sa.Executable:
        table = t.signature_replay
        values = {"key": key, "expires_at": expires_at}
        if self._dialect == "postgresql":
            ins = postgresql.insert(table).values(**values)
            return ins.on_conflict_do_update(index_elements=[table.c.key], set_={"expires_at": expires_at},
                                             where=table.c.expires_at <= now)
        if self._dialect == "sqlite":
            ins_l = sqlite.insert(table).values(**values)
            return ins_l.on_conflict_do_update(index_elements=[table.c.key], set_={"expires_at": expires_at},
                                               where=table.c.expires_at <= now)
        raise NotImplementedError(f"replay cache on {self._dialect}")

    async def seen_before(self, key: bytes, ttl: int) -> bool:
        now = int(self.store.clock.now())
        if now - self._last_purge >= self.purge_every:
            self._last_purge = now
            await self.purge()
        async with self.store.engine.begin() as conn:
            result = await conn.execute(self._insert(key.hex(), now, now + max(1, ttl)))
        # one row inserted (new) or one expired row taken over (new); zero: a live row was there (replay)
        return result.rowcount == 0

    async def purge(self) -> int:
        """Delete expired rows; returns how many."""
        now = int(self.store.clock.now())
        async with self.store.engine.begin() as conn:
            res = await conn.execute(sa.delete(t.signature_replay).where(t.signature_replay.c.expires_at <= now))
        return int(res.rowcount)
