"""State shared by several server processes through Redis (optional; ``redis_url``).

What lives here is what would otherwise be per-process memory: rate-limit buckets (:mod:`.ratelimit`) and the
Agent Auth replay cache (:mod:`.replay`). Durable state (clients, grants, approvals, payments) is always in the
database. Redis being down never stops the server: see :class:`authgate.shared.client.SharedRedis`.
"""

from __future__ import annotations

from authgate.shared.client import SharedRedis

__all__ = ["SharedRedis"]
