"""Remote JWK Sets (``jwks_uri``) of ``private_key_jwt`` clients, fetched through the SSRF guard and cached
by URL (``Cache-Control: max-age`` clamped to 30 s - 24 h, default 5 min). Only public keys are accepted.

The cache is per process. With Redis configured a second level behind it (:class:`SharedJwks`, implemented by
:class:`authgate.shared.jwks.RedisJwksCache`) lets the processes share what one of them fetched, under the same
rules: an entry is used until the expiry its fetch set, and a refresh after an unknown ``kid`` takes another
process's copy if that one is younger than 30 s instead of fetching again."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from authgate.clock import Clock, SystemClock
from authgate.config import Settings
from authgate.net.cache import DocumentCache
from authgate.net.fetch import Fetcher, FetchError, cache_lifetime

MAX_JWKS_BYTES = 64 * 1024
MAX_KEYS = 20
MIN_TTL, DEFAULT_TTL, MAX_TTL = 30, 300, 24 * 3600
#: JWK members that carry private or symmetric key material (RFC 7518 §6).
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k", "priv"})


def check_public_jwks(value: object) -> dict[str, Any]:
    """Return ``value`` if it is a JWK Set of public asymmetric keys; raise ValueError saying what is wrong."""
    if not isinstance(value, dict) or not isinstance(value.get("keys"), list):
        raise ValueError("jwks must be an object with a keys array")
    keys: list[Any] = value["keys"]
    if not keys or len(keys) > MAX_KEYS:
        raise ValueError(f"jwks must hold 1 to {MAX_KEYS} keys")
    for key in keys:
        if not isinstance(key, dict) or not isinstance(key.get("kty"), str):
            raise ValueError("each key must be an object with a kty")
        if key["kty"] not in ("RSA", "EC", "OKP"):
            raise ValueError("only RSA, EC and OKP public keys are accepted")
        if PRIVATE_MEMBERS & key.keys():
            raise ValueError("jwks must not contain private key material")
    return value


@dataclass(frozen=True)
class SharedJwksEntry:
    """A key set as one process fetched it: when (``fetched_at``) and until when it may be used."""

    jwks: dict[str, Any]
    fetched_at: float
    expires_at: float


class SharedJwks(Protocol):
    """Key sets shared by the server's processes (:class:`authgate.shared.jwks.RedisJwksCache`). Both methods are
    best effort: ``get`` answers ``None`` for a miss, an entry it can't trust, or a store that is down."""

    async def get(self, url: str) -> SharedJwksEntry | None: ...

    async def put(self, url: str, entry: SharedJwksEntry) -> None: ...


class JwksCache:
    def __init__(self, fetcher: Fetcher, clock: Clock, *, max_entries: int = 256,
                 shared: SharedJwks | None = None) -> None:
        self._fetcher = fetcher
        self._clock = clock
        self._shared = shared
        self._cache: DocumentCache[dict[str, Any]] = DocumentCache(clock, max_entries=max_entries)

    async def get(self, url: str, *, refresh: bool = False) -> dict[str, Any]:
        """The key set at ``url``. ``refresh`` (e.g. after an unknown ``kid``) refetches unless the cached copy
        is younger than 30 s, so a stream of bad assertions cannot turn into a stream of fetches.
        Raises FetchError for every failure, including an invalid document."""

        async def load() -> tuple[dict[str, Any], int]:
            now = self._clock.now()
            if self._shared is not None:
                entry = await self._shared.get(url)
                if entry is not None and entry.expires_at - now >= 1 and (not refresh
                                                                           or now - entry.fetched_at < MIN_TTL):
                    try:
                        return check_public_jwks(entry.jwks), int(entry.expires_at - now)
                    except ValueError:
                        pass  # not what a fetch would have accepted: fetch it ourselves
            response = await self._fetcher.get(url, max_bytes=MAX_JWKS_BYTES,
                                               accept="application/jwk-set+json, application/json")
            if response.status != 200:
                raise FetchError(f"status {response.status}")
            try:
                jwks = check_public_jwks(json.loads(response.body))
            except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                raise FetchError(f"invalid jwks: {exc}") from None
            ttl = cache_lifetime(response.headers, default=DEFAULT_TTL, minimum=MIN_TTL, maximum=MAX_TTL)
            if self._shared is not None:
                await self._shared.put(url, SharedJwksEntry(jwks, now, now + ttl))
            return jwks, ttl

        jwks = await self._cache.get(url, load, max_age=MIN_TTL if refresh else None)
        assert jwks is not None  # load never returns None; it raises
        return jwks


_default_caches: dict[bool, JwksCache] = {}


async def fetch_jwks(url: str, settings: Settings, *, refresh: bool = False,
                     cache: JwksCache | None = None) -> dict[str, Any]:
    """The JWK Set at a client's ``jwks_uri`` (process-wide cache unless ``cache`` is given: the server passes
    its context's Redis-backed one when ``redis_url`` is set).
    Raises FetchError on any failure; the token endpoint should answer ``invalid_client``."""
    if cache is None:
        allow = settings.allow_loopback_fetch
        cache = _default_caches.get(allow)
        if cache is None:
            cache = _default_caches[allow] = JwksCache(Fetcher(allow_loopback=allow), SystemClock())
    return await cache.get(url, refresh=refresh)
