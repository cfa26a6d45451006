"""A fixed-window rate limiter keyed by caller (source address, client id).

In-process by default; a shared counter plugs in behind the same two methods when the server runs as several
processes: Redis (:class:`authgate.shared.ratelimit.RedisCounter`) or the database
(:class:`authgate.store.ratelimits.DatabaseCounter`). Which one is the ``rate_limit_backend`` setting
(:func:`choose_backend`).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol

from authgate.clock import Clock


class SharedCounter(Protocol):
    """A counter all server processes see (:class:`authgate.shared.ratelimit.RedisCounter`,
    :class:`authgate.store.ratelimits.DatabaseCounter`)."""

    async def incr(self, key: str, window_start: int, window: int) -> int | None:
        """Add one to ``key``'s count in the window starting at ``window_start``; the new count, or ``None`` when
        the backend can't answer (the limiter then counts in this process)."""
        ...


class RateLimiter:
    def __init__(self, limit: int, window: int, clock: Clock, max_keys: int = 100_000, *,
                 shared: SharedCounter | None = None, name: str = "") -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self.shared = shared
        self.name = name

    def share(self, shared: SharedCounter, name: str) -> None:
        """Count through ``shared`` under ``name`` (unique per limiter), so every process sees one bucket."""
        self.shared, self.name = shared, name

    async def hit(self, key: str) -> int | None:
        """Count one request; return ``None`` if allowed, else seconds until the window resets."""
        if self.limit <= 0:
            return None
        now = int(self.clock.now())
        window_start = now - now % self.window
        shared = None
        if self.shared is not None:
            shared = await self.shared.incr(f"{self.name}:{key}", window_start, self.window)
        if shared is not None:
            start, count = window_start, shared
        else:
            start, count = self._buckets.pop(key, (window_start, 0))
            if start != window_start:
                start, count = window_start, 0
            count += 1
            self._buckets[key] = (start, count)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        if count > self.limit:
            return max(1, start + self.window - now)
        return None


def choose_backend(setting: str, *, redis: bool, workers: int, postgres: bool) -> str:
    """The rate-limit backend for ``rate_limit_backend = setting``: ``memory``, ``database`` or ``redis``.

    ``auto`` is Redis when configured (``redis``); otherwise the database when more than one process counts
    (``workers`` > 1, or a PostgreSQL database, which is what several instances share); otherwise memory: one
    SQLite process has nobody to share with and saves the round trip. ``redis`` without Redis configured (a
    context built by hand) degrades to the database."""
    if setting == "auto":
        if redis:
            return "redis"
        return "database" if workers > 1 or postgres else "memory"
    if setting == "redis" and not redis:
        return "database"
    return setting
