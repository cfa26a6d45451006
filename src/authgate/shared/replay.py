"""The Agent Auth replay cache in Redis (:class:`authgate.agentauth.replay.ReplayCache`), database as fallback.

``SET key 1 NX EX ttl`` is the protocol's atomic insert-if-absent: exactly one process sees "new". While Redis is
down the database cache answers (still shared by all processes, so still exactly once among requests it sees),
and for ``2 * ttl`` after the last failure both are written and either one's "seen" refuses, so a request
accepted by the database during the outage cannot be replayed through Redis once it is back. The remaining gap —
a request accepted through Redis shortly before an outage, replayed during it inside its ``created`` window — is
documented in docs/deployment.md.
"""

from __future__ import annotations

from redis.exceptions import RedisError

from authgate.agentauth.replay import ReplayCache
from authgate.shared.client import SharedRedis


class RedisReplayCache:
    def __init__(self, redis: SharedRedis, fallback: ReplayCache) -> None:
        self.redis = redis
        self.fallback = fallback

    async def _redis_seen(self, key: bytes, ttl: int) -> bool | None:
        """True/False from Redis, None if it could not answer."""
        if not self.redis.available():
            return None
        try:
            name = f"{self.redis.prefix}replay:{key.hex()}"
            created = await self.redis.client.set(name, b"1", nx=True, ex=max(1, ttl))
        except (RedisError, OSError) as exc:
            self.redis.failed(exc)
            return None
        return not created

    async def seen_before(self, key: bytes, ttl: int) -> bool:
        seen = await self._redis_seen(key, ttl)
        if seen is None:
            return await self.fallback.seen_before(key, ttl)
        if self.redis.failed_within(2 * ttl):
            # Recently degraded: the database may hold what was accepted during the outage.
            return await self.fallback.seen_before(key, ttl) or seen
        return seen
