"""Rate-limit buckets in Redis: one fixed-window counter per (limiter, caller, window) for all processes.

``INCR`` then ``EXPIRE`` in one ``MULTI`` transaction: the count is atomic across processes, and the key dies
after its window, so Redis memory stays bounded by the callers of the last minute. Caller keys (addresses,
usernames) are hashed, never stored as given.

While Redis is down (the breaker of :class:`~authgate.shared.client.SharedRedis` is open) hits go to the
``fallback`` counter — the server wires the database's (:class:`authgate.store.ratelimits.DatabaseCounter`), so
the limit still holds for all processes together — or, without one, are counted in each process.
"""

from __future__ import annotations

import hashlib

from redis.exceptions import RedisError

from authgate.ratelimit import SharedCounter
from authgate.shared.client import SharedRedis


class RedisCounter:
    """Implements :class:`authgate.ratelimit.SharedCounter`; while Redis is down, ``fallback``'s answer (``None``
    without one: count locally)."""

    def __init__(self, redis: SharedRedis, fallback: SharedCounter | None = None) -> None:
        self.redis = redis
        self.fallback = fallback

    async def incr(self, key: str, window_start: int, window: int) -> int | None:
        if self.redis.available():
            digest = hashlib.sha256(key.encode()).hexdigest()[:32]
            name = f"{self.redis.prefix}rl:{digest}:{window_start}"
            try:
                async with self.redis.client.pipeline(transaction=True) as pipe:
                    pipe.incr(name)
                    pipe.expire(name, window + 1)
                    count, _ = await pipe.execute()
            except (RedisError, OSError) as exc:
                self.redis.failed(exc)
            else:
                return int(count)
        if self.fallback is None:
            return None
        return await self.fallback.incr(key, window_start, window)
