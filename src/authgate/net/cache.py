"""A small cache for fetched documents: expiry from an injectable clock, LRU-bounded, concurrent loads of the
same key coalesced into one. Failures are never cached: a loader that raises or returns ``None`` leaves
nothing behind, and the next caller tries again."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from authgate.clock import Clock

T = TypeVar("T")
#: Loads a value and says how many seconds it may be kept; ``None`` means "failed, do not cache".
Loader = Callable[[], Awaitable[tuple[T, int] | None]]


@dataclass(frozen=True)
class _Entry(Generic[T]):
    value: T
    fetched_at: float
    expires_at: float


class DocumentCache(Generic[T]):
    def __init__(self, clock: Clock, *, max_entries: int = 1000) -> None:
        self._clock = clock
        self._max_entries = max_entries
        self._entries: OrderedDict[str, _Entry[T]] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[T | None]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def peek(self, key: str) -> T | None:
        """The cached value if fresh, without loading or touching LRU order."""
        entry = self._entries.get(key)
        return entry.value if entry is not None and entry.expires_at > self._clock.now() else None

    def discard(self, key: str) -> None:
        self._entries.pop(key, None)

    async def get(self, key: str, load: Loader[T], *, max_age: float | None = None) -> T | None:
        """The cached value, or the result of ``load`` (shared with concurrent callers for ``key``).
        ``max_age``: reload a fresh entry anyway if it was fetched more than this many seconds ago."""
        now = self._clock.now()
        entry = self._entries.get(key)
        if entry is not None and entry.expires_at > now and (max_age is None or now - entry.fetched_at < max_age):
            self._entries.move_to_end(key)
            return entry.value
        future = self._inflight.get(key)
        if future is None:
            future = asyncio.ensure_future(self._load(key, load))
            self._inflight[key] = future
            future.add_done_callback(lambda done: self._finished(key, done))
        # shield: one caller giving up must not cancel the load the others are waiting for
        return await asyncio.shield(future)

    def _finished(self, key: str, done: asyncio.Future[T | None]) -> None:
        if self._inflight.get(key) is done:
            del self._inflight[key]
        if not done.cancelled():
            done.exception()  # mark retrieved even if every waiter went away

    async def _load(self, key: str, load: Loader[T]) -> T | None:
        result = await load()
        if result is None:
            self._entries.pop(key, None)
            return None
        value, ttl = result
        now = self._clock.now()
        self._entries[key] = _Entry(value, now, now + ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
        return value
