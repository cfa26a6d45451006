"""Rate-limit buckets in Redis: one fixed-window counter per (limiter, caller, window) for all processes.

``INCR`` then ``EXPIRE`` in one ``MULTI`` transaction: the count is atomic across processes, and the key dies
after its window, so Redis memory stays bounded by the callers of the last minute. Caller keys (addresses,
usernames) are hashed, never stored as given.
"""

from __future__ import annotations

import hashlib

from redis.exceptions import RedisError

from authgate.shared.client import SharedRedis


class RedisCounter:
    """Implements :class:`authgate.ratelimit.SharedCounter`; ``None`` (count locally) while Redis is down."""

    def __init__(self, redis: SharedRedis) -> None:
        self.redis = redis

    async def incr(self, key: str, window_start: int, window: int) -> int | None:
        if not self.redis.available():
            return None
        digest = hashlib.sha256(key.encode()).hexdigest()[:32]
        name = f"{self.redis.prefix}rl:{digest}:{window_start}"
        try:
            async with self.redis.client.pipeline(transaction=True) as pipe:
                pipe.incr(name)
                pipe.expire(name, window + 1)
                count, _ = await pipe.execute()
        except (RedisError, OSError) as exc:
            self.redis.failed(exc)
            return None
        return int(count)
