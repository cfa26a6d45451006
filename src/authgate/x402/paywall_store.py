"""Where the paywall keeps what must outlive one request: payment-identifier records (so a retried request is
answered from its first settlement) and sign-in-with-x records (who paid for what, until when; used sign-in
nonces).

Two implementations of one small contract: :class:`MemoryPaywallStore` for one process (the default, and
tests), :class:`DatabasePaywallStore` on authgate's database (the ``artifacts`` table, no migration needed) for
several processes behind a load balancer: ``add`` is an INSERT that only one caller can win, whatever process it
runs in. Keys are hashed before they are stored (they contain payer addresses and client ids).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from authgate.store import Store

_KIND = "x402_paywall"


def store_key(*parts: str) -> str:
    """A fixed-length key for ``parts`` (unambiguous: JSON-encoded before hashing)."""
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


class PaywallStore(Protocol):
    async def add(self, key: str, value: dict[str, Any], ttl: int) -> bool:
        """Store ``value`` unless an unexpired value exists; True only for the caller who stored it."""

    async def get(self, key: str) -> dict[str, Any] | None:
        """The unexpired value, or None."""

    async def put(self, key: str, value: dict[str, Any], ttl: int) -> None:
        """Store ``value``, replacing any previous one."""

    async def delete(self, key: str) -> None: ...


class MemoryPaywallStore:
    """One process only; entries vanish at restart. Bounded: the oldest entries go first past ``max_entries``."""

    def __init__(self, clock: Callable[[], float] = time.time, max_entries: int = 100_000) -> None:
        self._clock = clock
        self._max = max_entries
        self._items: dict[str, tuple[float, dict[str, Any]]] = {}

    def _live(self, key: str) -> dict[str, Any] | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[0] <= self._clock():
            del self._items[key]
            return None
        return item[1]

    def _store(self, key: str, value: dict[str, Any], ttl: int) -> None:
        self._items.pop(key, None)
        self._items[key] = (self._clock() + ttl, dict(value))
        while len(self._items) > self._max:
            del self._items[next(iter(self._items))]

    async def add(self, key: str, value: dict[str, Any], ttl: int) -> bool:
        if self._live(key) is not None:
            return False
        self._store(key, value, ttl)
        return True

    async def get(self, key: str) -> dict[str, Any] | None:
        value = self._live(key)
        return dict(value) if value is not None else None

    async def put(self, key: str, value: dict[str, Any], ttl: int) -> None:
        self._store(key, value, ttl)

    async def delete(self, key: str) -> None:
        self._items.pop(key, None)


class DatabasePaywallStore:
    """On authgate's :class:`~authgate.store.Store` (SQLite or PostgreSQL), shared by every process."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def add(self, key: str, value: dict[str, Any], ttl: int) -> bool:
        import sqlalchemy as sa
        from sqlalchemy.exc import IntegrityError

        from authgate.store import tables as t

        now = int(self.store._now())
        c = t.artifacts.c
        async with self.store.engine.begin() as conn:
            # An expired row of the same key is dead: clear it so the insert below can win.
            await conn.execute(sa.delete(t.artifacts).where(c.id == key, c.kind == _KIND, c.expires_at <= now))
        try:
            await self.store.put_artifact(key, _KIND, value, ttl)
        except IntegrityError:
            return False
        return True

    async def get(self, key: str) -> dict[str, Any] | None:
        row = await self.store.get_artifact(key, _KIND)
        if row is None or not row.usable(int(self.store._now())):
            return None
        return dict(row.payload)

    async def put(self, key: str, value: dict[str, Any], ttl: int) -> None:
        import sqlalchemy as sa

        from authgate.store import tables as t

        now = int(self.store._now())
        c = t.artifacts.c
        async with self.store.engine.begin() as conn:
            await conn.execute(sa.delete(t.artifacts).where(c.id == key, c.kind == _KIND))
            await conn.execute(sa.insert(t.artifacts).values(
                id=key, kind=_KIND, payload=value, created_at=now, expires_at=now + ttl))

    async def delete(self, key: str) -> None:
        import sqlalchemy as sa

        from authgate.store import tables as t

        async with self.store.engine.begin() as conn:
            await conn.execute(sa.delete(t.artifacts).where(t.artifacts.c.id == key, t.artifacts.c.kind == _KIND))
