"""A fixed-window rate limiter keyed by caller (source address, client id).

In-process by default; a shared backend (Redis) plugs in behind the same two methods when the server runs as
several processes.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol

from authgate.clock import Clock


class SharedCounter(Protocol):
    """A counter all server processes see (:class:`authgate.shared.ratelimit.RedisCounter`)."""

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
