"""Abuse controls for identity matching: per-minute rate limits per dimension, and lock-out per claimed person.

**Rate limits** count attempts per ``client``, ``user`` (the blinded ``user_index``), ``caller_id``, ``ip`` and
``conversation``, each against its ``aauth_rate_*`` setting (per minute, 0 = unlimited). The counters sit behind
the :class:`authgate.ratelimit.RateLimiter` interface, whose backend ``rate_limit_backend`` chooses: in-process,
the database or Redis, so that several processes share one count (docs/deployment.md). Keys are hashed before
they are kept, so no caller ID sits in memory or in a table in clear.

**Lock-out** is durable and shared by every process (the ``identity_lockouts`` table): after
``aauth_lockout_threshold`` failed matches for one ``user_index`` within ``aauth_lockout_window`` seconds, the
person is locked for ``aauth_lockout_seconds``. A success forgets the failures but does not lift a lock in force.
The grant answers a locked person with the same ``invalid_grant`` as a non-match, so a lock-out reveals nothing;
recovery is out of band (wait, or an operator).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from authgate.clock import Clock
from authgate.config import Settings
from authgate.errors import TooManyRequests
from authgate.ratelimit import RateLimiter
from authgate.store import Store

#: The dimensions :meth:`AbuseGuard.admit` knows, each limited by ``aauth_rate_<dimension>``.
DIMENSIONS = ("client", "user", "caller_id", "ip", "conversation")
#: Seconds between two purges of stale lock-out rows (done by whichever process records a failure).
PURGE_EVERY = 600


class AbuseGuard:
    def __init__(self, store: Store, settings: Settings, clock: Clock) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.limiters = {d: RateLimiter(int(getattr(settings, f"aauth_rate_{d}")), 60, clock) for d in DIMENSIONS}
        self._purged_at = 0.0

    async def admit(self, dimensions: Mapping[str, str | None]) -> None:
        """Count one attempt in every dimension given (empty or None values are skipped); raise
        :class:`TooManyRequests` (with the longest ``Retry-After``) when any is over its limit. Every dimension is
        counted even when an earlier one is already over, so spreading load across dimensions does not help.
        ValueError for an unknown dimension (a programming error)."""
        unknown = set(dimensions) - set(DIMENSIONS)
        if unknown:
            raise ValueError(f"unknown rate-limit dimension(s): {', '.join(sorted(unknown))}")
        waits: list[int] = []
        for dimension, value in dimensions.items():
            if not value:
                continue
            key = hashlib.sha256(f"{dimension}\0{value}".encode()).hexdigest()
            wait = await self.limiters[dimension].hit(key)
            if wait is not None:
                waits.append(wait)
        if waits:
            raise TooManyRequests(max(waits), "too many identification attempts; try again later")

    async def locked(self, user_index: str | None) -> bool:
        """Whether the claimed person is locked out now."""
        if not user_index:
            return False
        return await self.store.identity_locked_until(user_index) > int(self.clock.now())

    async def failure(self, user_index: str | None) -> None:
        """Count a failed match for the claimed person; locks them once the threshold is reached."""
        if not user_index:
            return
        s = self.settings
        await self.store.record_identity_failure(user_index, window=s.aauth_lockout_window,
                                                 threshold=s.aauth_lockout_threshold,
                                                 lock_seconds=s.aauth_lockout_seconds)
        now = self.clock.now()
        if now - self._purged_at >= PURGE_EVERY:
            # Rows of people who stopped failing long ago and are not locked: the table stays bounded.
            self._purged_at = now
            await self.store.purge_identity_lockouts(older_than=s.aauth_lockout_window + s.aauth_lockout_seconds)

    async def success(self, user_index: str | None) -> None:
        """Forget the failures counted for the person (a lock-out in force stays until it ends)."""
        if user_index:
            await self.store.clear_identity_failures(user_index)
