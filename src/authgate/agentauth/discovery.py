"""Issuer keys for token verification: ``{iss}/.well-known/{dwk}`` → ``issuer`` check → ``jwks_uri`` → key.

-11 §7/§8: the metadata ``issuer`` must equal ``iss`` byte for byte (``issuer_missing`` / ``issuer_mismatch``);
we also require ``jwks_uri`` on the issuer's own origin (§4.6: a cross-origin ``jwks_uri`` needs explicit
admission, which we do not offer). Only the key with the token's ``kid`` is imported; unusable siblings are
ignored. Documents are cached for ``ttl`` seconds; an unknown ``kid`` refetches at most once per
``min_refetch`` seconds per issuer (§12). The network is a callback (``fetch_json``): the server passes its
SSRF-guarded fetcher, a resource server an ``httpx`` client, tests an in-process transport. Keys of the
issuers listed in ``local`` (our own roles) never touch the network.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from authgate.agentauth import wire
from authgate.agentauth.errors import TokenProblem
from authgate.agentauth.tokens import KeyResolver, PublicKey, import_public_jwk
from authgate.net.fetch import Fetcher, FetchError

FetchJSON = Callable[[str], Awaitable[Any]]
MAX_DOCUMENT = 64 * 1024


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
