"""Fetched client key sets (``jwks_uri``) shared through Redis, so that N processes fetch a URL once per cache
lifetime instead of N times — without making write access to Redis enough to forge client assertions.

Each entry is tagged with HMAC-SHA256 over its exact bytes (the URL, when it was fetched, until when it may be
used, the key set). The MAC key is derived from a server secret that lives only in the database
(``server_secrets`` row ``jwks_cache_mac``, created by the first process that needs it): a process reads it once
and keeps it in memory; it never goes to Redis. An entry whose tag does not verify — written by someone with
Redis access but not the database, copied from another URL's slot, damaged, or of another format — is treated
as a miss: the process fetches the key set itself (which overwrites the entry) and logs a warning, once per
process. Someone who can write to Redis can therefore delete entries (more fetches) or put back an older entry
this server wrote for the same URL, which is used no longer than the expiry its fetch set: the bound a
process's own cache has anyway. Reading Redis reveals nothing but public keys.

Redis being down is a miss too (the breaker of :class:`~authgate.shared.client.SharedRedis`); writes are best
effort. The per-process cache (:class:`authgate.net.jwks.JwksCache`) stays in front of this one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError

from authgate.net.jwks import MAX_JWKS_BYTES, SharedJwksEntry
from authgate.shared.client import SharedRedis

log = logging.getLogger("authgate.shared")

#: The ``server_secrets`` row the MAC key is derived from.
MAC_SECRET_NAME = "jwks_cache_mac"
_VERSION = b"j1"
#: Longest stored entry read back (the key set's own cap, plus JSON escaping and the envelope).
MAX_ENTRY_BYTES = 2 * MAX_JWKS_BYTES + 1024


class RedisJwksCache:
    """Implements :class:`authgate.net.jwks.SharedJwks`. ``secret`` returns the server secret (read from the
    database on first use; see :meth:`authgate.store.Store.server_secret`)."""

    def __init__(self, redis: SharedRedis, secret: Callable[[], Awaitable[str]]) -> None:
        self.redis = redis
        self._secret = secret
        self._mac_key: bytes | None = None
        #: Entries ignored because their tag did not verify (the first one is logged).
        self.rejected = 0

    async def _key(self) -> bytes:
        if self._mac_key is None:
            secret = await self._secret()
            self._mac_key = hmac.new(secret.encode(), b"authgate jwks cache mac v1", hashlib.sha256).digest()
        return self._mac_key

    def _name(self, url: str) -> str:
        return f"{self.redis.prefix}jwks:{hashlib.sha256(url.encode()).hexdigest()[:32]}"

    @staticmethod
    def _tag(key: bytes, payload: bytes) -> bytes:
        return hmac.new(key, _VERSION + b"." + payload, hashlib.sha256).hexdigest().encode()

    async def get(self, url: str) -> SharedJwksEntry | None:
        if not self.redis.available():
            return None
        key = await self._key()
        try:
            raw = await self.redis.client.get(self._name(url))
        except (RedisError, OSError) as exc:
            self.redis.failed(exc)
            return None
        if raw is None:
            return None
        entry = self._open(key, url, raw)
        if entry is None:
            self.rejected += 1
            if self.rejected == 1:
                log.warning("a cached key set in Redis failed its integrity check (url %s); ignored and fetched "
                            "again. Something other than this deployment writes to its Redis keys.", url)
        return entry

    def _open(self, key: bytes, url: str, raw: Any) -> SharedJwksEntry | None:
        """The entry if ``raw`` is one this deployment wrote for ``url``, else None."""
        if not isinstance(raw, bytes) or len(raw) > MAX_ENTRY_BYTES:
            return None
        version, _, rest = raw.partition(b".")
        tag, _, payload = rest.partition(b".")
        if version != _VERSION or not hmac.compare_digest(tag, self._tag(key, payload)):
            return None
        try:
            data = json.loads(payload)
            if data["url"] != url or not isinstance(data["jwks"], dict):
                return None
            return SharedJwksEntry(data["jwks"], float(data["fetched_at"]), float(data["expires_at"]))
        except (ValueError, KeyError, TypeError):
            return None

    async def put(self, url: str, entry: SharedJwksEntry) -> None:
        if not self.redis.available():
            return
        key = await self._key()
        payload = json.dumps({"url": url, "fetched_at": entry.fetched_at, "expires_at": entry.expires_at,
                              "jwks": entry.jwks}, separators=(",", ":")).encode()
        value = _VERSION + b"." + self._tag(key, payload) + b"." + payload
        ttl = max(1, math.ceil(entry.expires_at - entry.fetched_at))
        try:
            await self.redis.client.set(self._name(url), value, ex=ttl)
        except (RedisError, OSError) as exc:
            self.redis.failed(exc)
