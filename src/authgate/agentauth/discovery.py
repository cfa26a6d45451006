"""Issuer keys for token verification: ``{iss}/.well-known/{dwk}`` → ``issuer`` check → ``jwks_uri`` → key.

-11 §7/§8: the metadata ``issuer`` must equal ``iss`` byte for byte (``issuer_missing`` / ``issuer_mismatch``);
we also require ``jwks_uri`` on the issuer's own origin (§4.6: a cross-origin ``jwks_uri`` needs explicit
admission, which we do not offer). Only the key with the token's ``kid`` is imported; unusable siblings are
ignored. Documents are cached for ``ttl`` seconds; an unknown ``kid`` refetches at most once per
``min_refetch`` seconds per issuer (§12). The network is a callback (``fetch_json``): the server passes its
SSRF-guarded fetcher, a resource server an ``httpx`` client, tests an in-process transport. Keys of the
issuers listed in ``local`` (our own roles) never touch the network.

:class:`ServerKeys` does the same for servers that sign requests as themselves (``Signature-Key`` scheme
``jwks_uri``): only configured servers, always through the SSRF-guarded :class:`Fetcher` and the shared
:class:`authgate.net.jwks.JwksCache`, failures raised as ``Signature-Error`` codes.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from authgate.agentauth import wire
from authgate.agentauth.errors import TokenProblem
from authgate.agentauth.tokens import KeyResolver, PublicKey, import_public_jwk, is_server_identifier
from authgate.crypto.httpsig import SignatureError
from authgate.crypto.signature_key import SignatureKey
from authgate.net.cache import DocumentCache
from authgate.net.fetch import Fetcher, FetchError, cache_lifetime
from authgate.net.jwks import JwksCache

FetchJSON = Callable[[str], Awaitable[Any]]
MAX_DOCUMENT = 64 * 1024
#: A role document name under ``/.well-known/`` (one path segment).
_DWK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class FetchFailed(Exception):
    """The document could not be fetched or was not JSON."""


def httpx_fetcher(client: httpx.AsyncClient, *, timeout: float = 5.0) -> FetchJSON:
    """``fetch_json`` over an ``httpx`` client: no redirects, bounded size, JSON objects only."""

    async def fetch(url: str) -> Any:
        try:
            response = await client.get(url, timeout=timeout, follow_redirects=False)
        except httpx.HTTPError as exc:
            raise FetchFailed(str(exc)) from exc
        if response.status_code != 200 or len(response.content) > MAX_DOCUMENT:
            raise FetchFailed(f"status {response.status_code}")
        try:
            return response.json()
        except ValueError as exc:
            raise FetchFailed("not JSON") from exc

    return fetch


def fetcher_json(fetcher: Fetcher) -> FetchJSON:
    """``fetch_json`` through the SSRF-guarded :class:`authgate.net.Fetcher` (https only; no private, loopback or
    link-local targets unless it allows loopback; no redirects; bounded size and time). Use it wherever the
    issuer comes from a token an untrusted party sent (agent tokens name any agent provider)."""

    async def fetch(url: str) -> Any:
        try:
            response = await fetcher.get(url, max_bytes=MAX_DOCUMENT)
        except FetchError as exc:
            raise FetchFailed(str(exc)) from exc
        if response.status != 200:
            raise FetchFailed(f"status {response.status}")
        try:
            return json.loads(response.body)
        except ValueError as exc:
            raise FetchFailed("not JSON") from exc

    return fetch


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


@dataclass
class _Entry:
    keys: dict[str, dict[str, Any]]
    fetched_at: float
    parsed: dict[str, PublicKey] = field(default_factory=dict)


class IssuerKeys:
    """A :data:`~authgate.agentauth.tokens.KeyResolver` with caching; call the instance or use ``resolve``."""

    def __init__(self, fetch_json: FetchJSON, *, clock: Callable[[], float],
                 local: Mapping[tuple[str, str], Callable[[str | None], Awaitable[PublicKey | None]]] | None = None,
                 ttl: float = 300.0, min_refetch: float = 60.0) -> None:
        self.fetch_json = fetch_json
        self.clock = clock
        self.local = dict(local or {})
        self.ttl = ttl
        self.min_refetch = min_refetch
        self._cache: dict[tuple[str, str], _Entry] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    async def __call__(self, iss: str, dwk: str, kid: str | None) -> PublicKey | None:
        return await self.resolve(iss, dwk, kid)

    async def resolve(self, iss: str, dwk: str, kid: str | None) -> PublicKey | None:
        own = self.local.get((iss, dwk))
        if own is not None:
            return await own(kid)
        if kid is None:
            raise TokenProblem(wire.SIG_INVALID_JWT, "token has no kid")
        slot = (iss, dwk)
        if self._needs_load(slot, kid):
            async with self._locks.setdefault(slot, asyncio.Lock()):
                if self._needs_load(slot, kid):  # another task may have loaded it meanwhile
                    self._cache[slot] = await self._load(iss, dwk)
        entry = self._cache.get(slot)
        assert entry is not None
        if kid not in entry.keys:
            return None
        if kid not in entry.parsed:
            entry.parsed[kid] = import_public_jwk(entry.keys[kid])
        return entry.parsed[kid]

    def _needs_load(self, slot: tuple[str, str], kid: str) -> bool:
        entry = self._cache.get(slot)
        if entry is None:
            return True
        age = self.clock() - entry.fetched_at
        return age > self.ttl or (kid not in entry.keys and age > self.min_refetch)

    async def _load(self, iss: str, dwk: str) -> _Entry:
        try:
            meta = await self.fetch_json(f"{iss}{wire.WELL_KNOWN}{dwk}")
        except FetchFailed as exc:
            raise TokenProblem(wire.SIG_UNKNOWN_KEY, f"metadata of {iss} unavailable: {exc}") from exc
        if not isinstance(meta, dict) or "issuer" not in meta:
            raise TokenProblem(wire.SIG_ISSUER_MISSING, "metadata without issuer")
        if meta["issuer"] != iss:
            raise TokenProblem(wire.SIG_ISSUER_MISMATCH, "metadata issuer differs from iss")
        jwks_uri = meta.get("jwks_uri")
        if not isinstance(jwks_uri, str) or _origin(jwks_uri) != _origin(iss):
            raise TokenProblem(wire.SIG_UNKNOWN_KEY, "jwks_uri missing or on another origin")
        try:
            jwks = await self.fetch_json(jwks_uri)
        except FetchFailed as exc:
            raise TokenProblem(wire.SIG_UNKNOWN_KEY, f"jwks of {iss} unavailable: {exc}") from exc
        keys: dict[str, dict[str, Any]] = {}
        if isinstance(jwks, dict) and isinstance(jwks.get("keys"), list):
            for item in jwks["keys"][:50]:
                if isinstance(item, dict) and isinstance(item.get("kid"), str):
                    keys.setdefault(item["kid"], item)
        return _Entry(keys=keys, fetched_at=self.clock())


def as_resolver(keys: IssuerKeys) -> KeyResolver:
    return keys.resolve


# -- servers signing as themselves (Signature-Key scheme ``jwks_uri``) ---------------------------------------


@dataclass(frozen=True)
class ServerIdentity:
    """Who signed a server-to-server request: its identifier (``id``), the role document its keys were found
    through (``dwk``, e.g. ``aauth-person.json``) and the key's ``kid``."""

    id: str
    dwk: str
    kid: str


class _CallableClock:
    """A :class:`~authgate.clock.Clock` over a plain ``() -> float`` (the resource middleware's clock)."""

    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now

    def now(self) -> float:
        return self._now()


def _sig(code: str, detail: str, reason: str) -> SignatureError:
    return SignatureError(code, detail, reason=reason)


class ServerKeys:
    """Verification keys of the servers allowed to sign as themselves (``Signature-Key: sig=jwks_uri;id=…;dwk=…;
    kid=…``; -11 §3.6 PS→AS calls and §3.10 revocation; signature-key-08 "JWKS URI Discovery").

    ``trusted`` maps each admitted server identifier to the role documents it may name (profile §17.7: only
    configured PS/AS/AP roles; the draft says verifiers SHOULD check ``id`` against authorised origins, since
    anyone can republish a key under their own ``id``). Resolution: ``id``/``dwk`` admitted (else
    ``invalid_key``) → ``{id}/.well-known/{dwk}`` through the SSRF-guarded :class:`Fetcher`, cached by
    ``Cache-Control`` → ``issuer`` equals ``id`` byte for byte (``issuer_missing`` / ``issuer_mismatch``) →
    ``jwks_uri`` on the same origin → the JWKS through :class:`authgate.net.jwks.JwksCache` → the key with
    ``kid``, refetching the set once (at most every 30 s) when the ``kid`` is unknown (``unknown_key``). A
    failed fetch is ``unknown_key`` and is remembered for ``failure_ttl`` seconds, so a flood of requests
    naming a broken server cannot become a flood of fetches."""

    def __init__(self, trusted: Mapping[str, Iterable[str]], *, fetcher: Fetcher, clock: Callable[[], float],
                 jwks: JwksCache | None = None, allow_http_loopback: bool = False,
                 failure_ttl: float = 30.0) -> None:
        for server, dwks in trusted.items():
            if not is_server_identifier(server, allow_http_loopback=allow_http_loopback):
                raise ValueError(f"trusted server {server!r} is not a server identifier (https://host)")
            if isinstance(dwks, str) or not all(isinstance(d, str) and _DWK.match(d) for d in dwks):
                raise ValueError(f"trusted server {server!r}: role documents must be a list of names")
        self.trusted = {server: frozenset(dwks) for server, dwks in trusted.items()}
        self.fetcher = fetcher
        self.clock = clock
        self.allow_http = allow_http_loopback
        self.failure_ttl = failure_ttl
        wrapped = _CallableClock(clock)
        self.jwks = jwks or JwksCache(fetcher, wrapped)
        self._metadata: DocumentCache[dict[str, Any]] = DocumentCache(wrapped, max_entries=256)
        self._failed: dict[str, float] = {}

    async def resolve(self, key: SignatureKey) -> tuple[ServerIdentity, dict[str, Any]]:
        """The signer and its public JWK for the selected ``jwks_uri`` member; raises :class:`SignatureError`."""
        server, dwk, kid = key.param("id"), key.param("dwk"), key.param("kid")
        if not server or not dwk or not kid or len(kid) > 128:
            raise _sig(wire.SIG_INVALID_KEY, "jwks_uri needs id, dwk and kid", "jwks_uri_params")
        if dwk not in self.trusted.get(server, ()):
            raise _sig(wire.SIG_INVALID_KEY, "this signer is not accepted here", "untrusted_server")
        slot = f"{server}{wire.WELL_KNOWN}{dwk}"
        failed_at = self._failed.get(slot)
        if failed_at is not None and self.clock() - failed_at < self.failure_ttl:
            raise _sig(wire.SIG_UNKNOWN_KEY, "the signer's keys are unavailable", "fetch_failed_recently")
        try:
            meta = await self._metadata.get(slot, lambda: self._load_metadata(slot))
            assert meta is not None  # the loader raises instead of returning None
            if not isinstance(meta.get("issuer"), str):
                raise _sig(wire.SIG_ISSUER_MISSING, "the signer's metadata has no issuer", "issuer_missing")
            if meta["issuer"] != server:
                raise _sig(wire.SIG_ISSUER_MISMATCH, "the signer's metadata names another issuer", "issuer_mismatch")
            jwks_uri = meta.get("jwks_uri")
            if not isinstance(jwks_uri, str) or _origin(jwks_uri) != _origin(server):
                raise _sig(wire.SIG_UNKNOWN_KEY, "the signer's jwks_uri is missing or on another origin",
                           "jwks_uri_origin")
            jwk = _by_kid(await self.jwks.get(jwks_uri), kid)
            if jwk is None:  # rotated since we cached the set: refetch once (JwksCache limits it to every 30 s)
                jwk = _by_kid(await self.jwks.get(jwks_uri, refresh=True), kid)
        except FetchError as exc:
            self._failed[slot] = self.clock()
            raise _sig(wire.SIG_UNKNOWN_KEY, "the signer's keys are unavailable", f"fetch_failed: {exc.reason}"
                       ) from exc
        self._failed.pop(slot, None)
        if jwk is None:
            raise _sig(wire.SIG_UNKNOWN_KEY, "the signer publishes no key with that kid", "unknown_kid")
        return ServerIdentity(id=server, dwk=dwk, kid=kid), jwk

    async def _load_metadata(self, url: str) -> tuple[dict[str, Any], int]:
        response = await self.fetcher.get(url, max_bytes=MAX_DOCUMENT)
        if response.status != 200:
            raise FetchError(f"status {response.status}")
        try:
            meta = json.loads(response.body)
        except ValueError:
            raise FetchError("metadata is not JSON") from None
        if not isinstance(meta, dict):
            raise FetchError("metadata is not a JSON object")
        return meta, cache_lifetime(response.headers, default=300, minimum=30, maximum=24 * 3600)


def _by_kid(jwks: Mapping[str, Any], kid: str) -> dict[str, Any] | None:
    """The key with ``kid`` (siblings of unknown types are ignored, -11 §4.6)."""
    for item in jwks.get("keys", ()):
        if isinstance(item, dict) and item.get("kid") == kid:
            return dict(item)
    return None
