"""A fixed-window rate limiter keyed by caller (source address, client id).

In-process by default; a shared backend (Redis) plugs in behind the same two methods when the server runs as
several processes.
"""

from __future__ import annotations

from collections import OrderedDict

from authgate.clock import Clock


class RateLimiter:
    def __init__(self, limit: int, window: int, clock: Clock, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[int, int]] = OrderedDict()

    async def hit(self, key: str) -> int | None:
        """Count one request; return ``None`` if allowed, else seconds until the window resets."""
        if self.limit <= 0:
            return None
        now = int(self.clock.now())
        window_start = now - now % self.window
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
