"""The Redis connection every process-shared piece uses, with a circuit breaker for outages.

Redis is an accelerator here, never the system of record, so an outage must not become a server outage: after
a failed command the breaker stays open for ``cooldown`` seconds, during which callers use their fallback (the
database, or per-process counting) without paying a connect timeout per request. One warning per outage is
logged, never the URL (it may carry a password).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("authgate.shared")

class SharedRedis:
    """A ``redis.asyncio`` client plus outage bookkeeping. Build one per process with :meth:`from_url`."""

    def __init__(self, client: Redis, *, cooldown: float = 5.0, prefix: str = "authgate:") -> None:
        self.client = client
        #: Start of every key (``redis_prefix``), so a shared Redis can be inspected and flushed per deployment.
        self.prefix = prefix
        self.cooldown = cooldown
        self._open_until = 0.0  # monotonic time until which Redis is not tried
        self._last_failure = float("-inf")

    @classmethod
    def from_url(cls, url: str, *, timeout: float = 0.5, cooldown: float = 5.0,
                 prefix: str = "authgate:") -> SharedRedis:
        """Short socket timeouts: a request waits at most ``timeout`` on a sick Redis, once per cooldown."""
        from redis.asyncio import Redis

        client = Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                health_check_interval=30)
        return cls(client, cooldown=cooldown, prefix=prefix)

    def available(self) -> bool:
        return time.monotonic() >= self._open_until

    def failed(self, exc: BaseException) -> None:
        """Record a failed command: open the breaker, warn once per outage."""
        now = time.monotonic()
        if now >= self._open_until:
            log.warning("Redis unavailable (%s); using the fallback for %.0fs", exc.__class__.__name__, self.cooldown)
        self._open_until = now + self.cooldown
        self._last_failure = now

    def failed_within(self, seconds: float) -> bool:
        """Whether a command failed in the last ``seconds`` (the replay cache writes both stores meanwhile)."""
        return time.monotonic() - self._last_failure < seconds

    async def ping(self) -> None:
        """Raise unless Redis answers (readiness checks, startup)."""
        await self.client.ping()

    async def aclose(self) -> None:
        await self.client.aclose()
