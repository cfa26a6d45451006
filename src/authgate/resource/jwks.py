"""The authorization server's public keys, fetched over HTTP and cached by ``kid`` (RFC 7517, RFC 8414).

Keys are parsed once per fetch, never per request (PERFORMANCE.md rule 2). The set is fetched on first use;
after that the network is touched only when

* a token names a ``kid`` we do not hold: one refetch, at most once per ``refetch_interval`` seconds
  (an attacker sending random ``kid`` values cannot make us hammer the AS), or
* the cached set is older than ``max_age`` seconds, so a key the AS withdrew stops verifying.

Concurrent callers share one in-flight fetch. A failed refresh keeps the keys we already have. Without a
``jwks_uri`` the URI is discovered from the AS metadata (RFC 8414 §3), whose ``issuer`` must equal ours.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from joserfc.jwk import ECKey, OKPKey, RSAKey

from authgate.clock import Clock, SystemClock

log = logging.getLogger("authgate.resource")

PublicKey = ECKey | RSAKey | OKPKey

MAX_DOCUMENT_BYTES = 64 * 1024
MAX_KEYS = 32

_KEY_TYPES: dict[str, type[ECKey] | type[RSAKey] | type[OKPKey]] = {"EC": ECKey, "RSA": RSAKey, "OKP": OKPKey}
# Members that only a private JWK carries (RFC 7518 §6.2.2, §6.3.2; RFC 8037 §2).
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


class KeySourceError(Exception):
    """The JWKS (or the metadata pointing at it) could not be fetched or understood."""


def metadata_url(issuer: str) -> str:
    """RFC 8414 §3.1: the well-known segment goes between the host and the issuer's path."""
    parts = urlsplit(issuer)
    path = "/.well-known/oauth-authorization-server" + parts.path.rstrip("/")
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def parse_jwks(doc: Any) -> tuple[dict[str, PublicKey], list[PublicKey]]:
    """Import the usable public signing keys of a JWK Set: (keys by kid, keys without kid).

    Symmetric keys and keys marked for encryption are dropped; private members are never imported.
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise KeySourceError("JWKS document has no 'keys' array")
    by_kid: dict[str, PublicKey] = {}
    anonymous: list[PublicKey] = []
    for raw in doc["keys"][:MAX_KEYS]:
        if not isinstance(raw, dict):
            continue
        cls = _KEY_TYPES.get(str(raw.get("kty")))
        if cls is None or raw.get("use", "sig") != "sig":
            continue
        ops = raw.get("key_ops")
        if isinstance(ops, list) and "verify" not in ops:
            continue
        public = {k: v for k, v in raw.items() if k not in _PRIVATE_MEMBERS}
        try:
            key = cls.import_key(public)
        except Exception as exc:  # a malformed entry must not hide the good ones
            log.warning("ignoring unusable JWK %r: %s", raw.get("kid"), exc)
            continue
        kid = raw.get("kid")
        if isinstance(kid, str) and kid:
            by_kid.setdefault(kid, key)
        else:
            anonymous.append(key)
    return by_kid, anonymous


class RemoteJWKS:
    """A cached, rate-limited view of an authorization server's JWK Set."""

    def __init__(
        self,
        issuer: str,
        *,
        jwks_uri: str | None = None,
        http_client: httpx.AsyncClient | None = None,
        clock: Clock | None = None,
        refetch_interval: float = 30.0,
        max_age: float = 3600.0,
        timeout: float = 5.0,
    ) -> None:
        self.issuer = issuer
        self.jwks_uri = jwks_uri
        self.clock = clock or SystemClock()
        self.refetch_interval = refetch_interval
        self.max_age = max_age
        self.timeout = timeout
        self._http = http_client
        self._owns_http = http_client is None
        self._by_kid: dict[str, PublicKey] = {}
        self._anonymous: list[PublicKey] = []
        self._loaded_at: float | None = None
        self._last_miss_fetch = float("-inf")
        self._last_attempt = float("-inf")
        self._inflight: asyncio.Task[None] | None = None
        self.fetches = 0  # successful or not; for tests and metrics

    async def aclose(self) -> None:
        if self._owns_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    async def get(self, kid: str | None) -> PublicKey | None:
        """The key for ``kid`` (or the only anonymous key when ``kid`` is None), fetching as allowed."""
        now = self.clock.now()
        if self._loaded_at is None:
            if now - self._last_attempt < min(self.refetch_interval, 5.0):
                raise KeySourceError("JWKS not available yet (last fetch failed)")
            await self._refresh(required=True)
        elif now - self._loaded_at > self.max_age and now - self._last_attempt >= self.refetch_interval:
            await self._refresh(required=False)
        key = self._lookup(kid)
        if key is None and kid is not None and self.clock.now() - self._last_miss_fetch >= self.refetch_interval:
            self._last_miss_fetch = self.clock.now()
            log.info("unknown kid %r: refetching JWKS", kid)
            await self._refresh(required=False)
            key = self._lookup(kid)
        return key

    def current(self, kid: str | None) -> PublicKey | None:
        """What :meth:`get` would return for ``kid`` without fetching anything, or None when it would fetch first
        (nothing loaded yet, or the set is due for its ``max_age`` refresh) or knows no such key. Lets a caller
        holding a verified token skip the await on the common path; any None sends it to :meth:`get`."""
        if self._loaded_at is None:
            return None
        now = self.clock.now()
        if now - self._loaded_at > self.max_age and now - self._last_attempt >= self.refetch_interval:
            return None
        return self._lookup(kid)

    def _lookup(self, kid: str | None) -> PublicKey | None:
        if kid is not None:
            return self._by_kid.get(kid)
        candidates = self._anonymous or list(self._by_kid.values())
        return candidates[0] if len(candidates) == 1 else None

    async def _refresh(self, *, required: bool) -> None:
        """Fetch once for every concurrent caller; ``required`` raises when we end up with no keys."""
        task = self._inflight
        if task is None or task.done():
            task = self._inflight = asyncio.ensure_future(self._fetch())
            task.add_done_callback(self._fetch_done)
        try:
            await asyncio.shield(task)
        except KeySourceError as exc:
            log.warning("JWKS refresh from %s failed: %s", self.jwks_uri or self.issuer, exc)
            if required and not self._by_kid and not self._anonymous:
                raise

    def _fetch_done(self, task: asyncio.Task[None]) -> None:
        if self._inflight is task:
            self._inflight = None
        if not task.cancelled():
            task.exception()  # retrieved here so an unawaited failure is not reported as lost

    async def _fetch(self) -> None:
        self.fetches += 1
        self._last_attempt = self.clock.now()
        if self.jwks_uri is None:
            meta = await self._get_json(metadata_url(self.issuer))
            if not isinstance(meta, dict) or meta.get("issuer") != self.issuer:
                raise KeySourceError("authorization server metadata names another issuer")
            uri = meta.get("jwks_uri")
            if not isinstance(uri, str) or urlsplit(uri).scheme not in ("http", "https"):
                raise KeySourceError("authorization server metadata has no usable jwks_uri")
            self.jwks_uri = uri
        by_kid, anonymous = parse_jwks(await self._get_json(self.jwks_uri))
        if not by_kid and not anonymous:
            raise KeySourceError("JWKS holds no usable signing key")
        self._by_kid, self._anonymous = by_kid, anonymous
        self._loaded_at = self.clock.now()

    async def _get_json(self, url: str) -> Any:
        if self._http is None:
            self._http = httpx.AsyncClient(follow_redirects=False)
        try:
            async with self._http.stream(
                "GET", url, headers={"Accept": "application/json"}, timeout=self.timeout, follow_redirects=False
            ) as response:
                if response.status_code != 200:
                    raise KeySourceError(f"GET {url}: HTTP {response.status_code}")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_DOCUMENT_BYTES:
                        raise KeySourceError(f"GET {url}: document larger than {MAX_DOCUMENT_BYTES} bytes")
        except httpx.HTTPError as exc:
            raise KeySourceError(f"GET {url}: {exc.__class__.__name__}") from exc
        try:
            return json.loads(bytes(body))
        except ValueError as exc:
            raise KeySourceError(f"GET {url}: not JSON") from exc

    def snapshot(self) -> Mapping[str, PublicKey]:
        """The keys currently held, by kid (read-only view for diagnostics)."""
        return dict(self._by_kid)
