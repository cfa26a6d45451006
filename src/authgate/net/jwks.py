"""Remote JWK Sets (``jwks_uri``) of ``private_key_jwt`` clients, fetched through the SSRF guard and cached
by URL (``Cache-Control: max-age`` clamped to 30 s - 24 h, default 5 min). Only public keys are accepted."""

from __future__ import annotations

import json
from typing import Any

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


class JwksCache:
    def __init__(self, fetcher: Fetcher, clock: Clock, *, max_entries: int = 256) -> None:
        self._fetcher = fetcher
        self._cache: DocumentCache[dict[str, Any]] = DocumentCache(clock, max_entries=max_entries)

    async def get(self, url: str, *, refresh: bool = False) -> dict[str, Any]:
        """The key set at ``url``. ``refresh`` (e.g. after an unknown ``kid``) refetches unless the cached copy
        is younger than 30 s, so a stream of bad assertions cannot turn into a stream of fetches.
        Raises FetchError for every failure, including an invalid document."""

        async def load() -> tuple[dict[str, Any], int]:
            response = await self._fetcher.get(url, max_bytes=MAX_JWKS_BYTES,
                                               accept="application/jwk-set+json, application/json")
            if response.status != 200:
                raise FetchError(f"status {response.status}")
            try:
                jwks = check_public_jwks(json.loads(response.body))
            except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                raise FetchError(f"invalid jwks: {exc}") from None
            ttl = cache_lifetime(response.headers, default=DEFAULT_TTL, minimum=MIN_TTL, maximum=MAX_TTL)
            return jwks, ttl

        jwks = await self._cache.get(url, load, max_age=MIN_TTL if refresh else None)
        assert jwks is not None  # load never returns None; it raises
        return jwks


_default_caches: dict[bool, JwksCache] = {}


async def fetch_jwks(url: str, settings: Settings, *, refresh: bool = False,
                     cache: JwksCache | None = None) -> dict[str, Any]:
    """The JWK Set at a client's ``jwks_uri`` (process-wide cache unless ``cache`` is given).
    Raises FetchError on any failure; the token endpoint should answer ``invalid_client``."""
    if cache is None:
        allow = settings.allow_loopback_fetch
        cache = _default_caches.get(allow)
        if cache is None:
            cache = _default_caches[allow] = JwksCache(Fetcher(allow_loopback=allow), SystemClock())
    return await cache.get(url, refresh=refresh)
