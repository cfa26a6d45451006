"""Client key sets (``jwks_uri``) shared through Redis (authgate.shared.jwks): a process uses what another one
fetched, under the same expiry and refresh rules, and an entry not tagged with the MAC key from the database is
ignored — write access to Redis is not enough to make the server accept a forged client assertion."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from authgate.app import build_context, create_app
from authgate.clock import FrozenClock
from authgate.config import Settings
from authgate.context import ServerContext
from authgate.demo.servers import free_port
from authgate.net.fetch import Fetcher
from authgate.net.jwks import JwksCache
from authgate.shared.client import SharedRedis
from authgate.shared.jwks import MAC_SECRET_NAME, RedisJwksCache
from authgate.store import Store
from tests.conftest import ISSUER
from tests.helpers import add_client
from tests.scale.cluster import REDIS_URL, require_redis

JWKS_URL = "https://client.example/jwks.json"
OTHER_URL = "https://other.example/jwks.json"
EC_KEY = {"kty": "EC", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
          "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}
ATTACKER_KEY = ECKey.generate_key("P-256", parameters={"kid": "evil"}, private=True)


@pytest.fixture
def live_redis() -> None:
    require_redis()


class Site:
    """The clients' key-set host: counts fetches; ``keys`` per URL can change between fetches."""

    def __init__(self) -> None:
        self.keys: dict[str, dict[str, Any]] = {JWKS_URL: {"keys": [EC_KEY]}, OTHER_URL: {"keys": [EC_KEY]}}
        self.hits: list[str] = []
        self.max_age = 120

    def fetcher(self) -> Fetcher:
        def handle(request: httpx.Request) -> httpx.Response:
            self.hits.append(str(request.url))
            body = self.keys.get(str(request.url))
            if body is None:
                return httpx.Response(404)
            return httpx.Response(200, json=body, headers={"Cache-Control": f"max-age={self.max_age}"})

        return Fetcher(transport=httpx.MockTransport(handle))


@pytest.fixture
async def processes(live_redis: None, store: Store,
                    clock: FrozenClock) -> AsyncIterator[Callable[..., tuple[JwksCache, RedisJwksCache]]]:
    """``processes()``: a JWKS cache as one server process has it (own Redis client, own memory), all on one
    Redis prefix and one database; ``secret=`` replaces the database's MAC secret (another deployment)."""
    prefix = f"authgate-test-{secrets.token_hex(4)}:"
    made: list[SharedRedis] = []

    def make(site: Site, *, url: str = REDIS_URL, secret: str | None = None) -> tuple[JwksCache, RedisJwksCache]:
        redis = SharedRedis.from_url(url, prefix=prefix, timeout=0.2)
        made.append(redis)

        async def from_db() -> str:
            if secret is not None:
                return secret
            return await store.server_secret(MAC_SECRET_NAME, lambda: secrets.token_hex(32))

        shared = RedisJwksCache(redis, from_db)
        return JwksCache(site.fetcher(), clock, shared=shared), shared

    yield make
    for r in made:
        await r.aclose()


async def test_a_second_process_uses_the_first_ones_fetch(processes: Any, clock: FrozenClock) -> None:
    site = Site()
    (a, _), (b, _) = processes(site), processes(site)
    assert await a.get(JWKS_URL) == {"keys": [EC_KEY]}
    assert await b.get(JWKS_URL) == {"keys": [EC_KEY]}
    assert site.hits == [JWKS_URL]  # one fetch for both
    clock.advance(119)
    c, _ = processes(site)
    assert await c.get(JWKS_URL) == {"keys": [EC_KEY]}
    assert site.hits == [JWKS_URL]
    clock.advance(2)  # the fetch's max-age (120 s) is over, for every process
    d, _ = processes(site)
    await d.get(JWKS_URL)
    await a.get(JWKS_URL)
    assert site.hits == [JWKS_URL, JWKS_URL]  # d fetched again, a took d's copy


async def test_refresh_takes_another_process_recent_fetch(processes: Any, clock: FrozenClock) -> None:
    site = Site()
    (a, _), (b, _) = processes(site), processes(site)
    await a.get(JWKS_URL)
    clock.advance(10)
    await b.get(JWKS_URL, refresh=True)  # an unknown kid 10 s after a's fetch: a's copy is recent enough
    assert len(site.hits) == 1
    clock.advance(30)
    site.keys[JWKS_URL] = {"keys": [EC_KEY, ATTACKER_KEY.as_dict(private=False)]}  # the client added a key
    assert len((await b.get(JWKS_URL, refresh=True))["keys"]) == 2  # 40 s old: fetched again
    clock.advance(5)
    assert len((await a.get(JWKS_URL, refresh=True))["keys"]) == 2  # b's 5 s old copy, no fetch
    assert len(site.hits) == 2


def _forge(payload: dict[str, Any], key: bytes = b"attacker guess") -> bytes:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return b"j1." + hmac.new(key, b"j1." + body, hashlib.sha256).hexdigest().encode() + b"." + body


async def test_forged_entry_is_ignored_refetched_and_logged_once(processes: Any, clock: FrozenClock,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    site = Site()
    cache, shared = processes(site)
    redis = shared.redis.client
    evil = {"keys": [ATTACKER_KEY.as_dict(private=False)]}
    now = clock.now()
    for url in (JWKS_URL, OTHER_URL):
        forged = {"url": url, "fetched_at": now, "expires_at": now + 3600, "jwks": evil}
        await redis.set(shared._name(url), _forge(forged))
    with caplog.at_level(logging.WARNING, logger="authgate.shared"):
        assert await cache.get(JWKS_URL) == {"keys": [EC_KEY]}
        assert await cache.get(OTHER_URL) == {"keys": [EC_KEY]}
    assert site.hits == [JWKS_URL, OTHER_URL]  # both treated as misses
    warnings = [r.getMessage() for r in caplog.records if r.name == "authgate.shared"]
    assert len(warnings) == 1 and "integrity check" in warnings[0]  # logged once
    assert shared.rejected == 2
    # The fetch replaced the forged entries: another process now uses them without fetching.
    other, _ = processes(site)
    assert await other.get(JWKS_URL) == {"keys": [EC_KEY]}
    assert len(site.hits) == 2


async def test_entries_are_bound_to_their_url_and_to_the_database_secret(processes: Any) -> None:
    site = Site()
    cache, shared = processes(site)
    await cache.get(JWKS_URL)
    redis = shared.redis.client
    # A genuine entry moved to another URL's slot is not that URL's key set.
    await redis.set(shared._name(OTHER_URL), await redis.get(shared._name(JWKS_URL)))
    fresh, fresh_shared = processes(site)
    await fresh.get(OTHER_URL)
    assert site.hits == [JWKS_URL, OTHER_URL] and fresh_shared.rejected == 1
    # A deployment with another database secret (same Redis prefix) trusts none of these entries.
    stranger, stranger_shared = processes(site, secret=secrets.token_hex(32))
    await stranger.get(JWKS_URL)
    assert site.hits == [JWKS_URL, OTHER_URL, JWKS_URL] and stranger_shared.rejected == 1
    # A tampered byte anywhere breaks the tag.
    raw = await redis.get(shared._name(OTHER_URL))
    await redis.set(shared._name(OTHER_URL), raw.replace(b"P-256", b"P-384"))
    tampered, tampered_shared = processes(site)
    await tampered.get(OTHER_URL)
    assert tampered_shared.rejected == 1 and len(site.hits) == 4


async def test_redis_down_fetches_as_without_it(processes: Any, caplog: pytest.LogCaptureFixture) -> None:
    site = Site()
    cache, shared = processes(site, url=f"redis://127.0.0.1:{free_port()}/0")
    with caplog.at_level(logging.WARNING, logger="authgate.shared"):
        assert await cache.get(JWKS_URL) == {"keys": [EC_KEY]}
        assert await cache.get(JWKS_URL) == {"keys": [EC_KEY]}  # this process's cache still works
    assert site.hits == [JWKS_URL]
    assert not shared.redis.available()
    assert any("Redis unavailable" in r.getMessage() for r in caplog.records)


# -- two servers (contexts) on one database and one Redis: private_key_jwt end to end -------------------------


def _assertion(key: ECKey, client_id: str, now: int) -> str:
    claims = {"iss": client_id, "sub": client_id, "aud": ISSUER + "/token", "iat": now, "exp": now + 60,
              "jti": secrets.token_urlsafe(8)}
    return jwt.encode({"alg": "ES256", "kid": key.kid}, claims, key)


@pytest.fixture
async def servers(live_redis: None, settings: Settings, store: Store,
                  clock: FrozenClock) -> AsyncIterator[Callable[..., Any]]:
    opened: list[tuple[ServerContext, httpx.AsyncClient]] = []

    async def make(site: Site, **overrides: Any) -> tuple[ServerContext, httpx.AsyncClient]:
        ctx = await build_context(replace(settings, **overrides).validate(), clock, store, fetcher=site.fetcher())
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(ctx), client=("127.0.0.1", 50000)),
                                 base_url=ISSUER)
        opened.append((ctx, http))
        return ctx, http

    yield make
    for ctx, http in opened:
        await http.aclose()
        if ctx.redis is not None:
            await ctx.redis.aclose()


async def test_second_server_verifies_with_the_first_ones_fetched_keys(servers: Any, store: Store) -> None:
    key = ECKey.generate_key("P-256", parameters={"kid": "k1"}, private=True)
    site = Site()
    site.keys[JWKS_URL] = {"keys": [key.as_dict(private=False)]}
    shared = {"redis_url": REDIS_URL, "redis_prefix": f"authgate-test-{secrets.token_hex(4)}:"}
    (ctx_a, a), (ctx_b, b) = await servers(site, **shared), await servers(site, **shared)
    assert ctx_a.jwks_cache is not None and ctx_a.jwks_cache is not ctx_b.jwks_cache
    cid, _ = await add_client(store, auth_method="private_key_jwt", grant_types=["client_credentials"],
                              jwks_uri=JWKS_URL)

    def form() -> dict[str, str]:
        return {"grant_type": "client_credentials", "client_assertion": _assertion(key, cid, ctx_a.now()),
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}

    assert (await a.post("/token", data=form())).status_code == 200
    assert (await b.post("/token", data=form())).status_code == 200
    assert site.hits == [JWKS_URL]  # b verified with the key set a fetched

    # An attacker who can write to Redis replaces the entry with their own key, tagged with a guessed MAC key:
    # a third server ignores it, fetches the real set and refuses the attacker's assertion.
    assert ctx_a.redis is not None
    shared_jwks = ctx_a.jwks_cache._shared
    assert isinstance(shared_jwks, RedisJwksCache)
    now = ctx_a.now()
    forged = {"url": JWKS_URL, "fetched_at": now, "expires_at": now + 3600,
              "jwks": {"keys": [ATTACKER_KEY.as_dict(private=False)]}}
    await ctx_a.redis.client.set(shared_jwks._name(JWKS_URL), _forge(forged))
    _, c = await servers(site, **shared)
    evil = await c.post("/token", data={**form(), "client_assertion": _assertion(ATTACKER_KEY, cid, now)})
    assert evil.status_code == 401 and evil.json()["error"] == "invalid_client"
    assert site.hits == [JWKS_URL, JWKS_URL]
    assert (await c.post("/token", data=form())).status_code == 200


async def test_without_redis_the_process_cache_is_used(settings: Settings, store: Store,
                                                       clock: FrozenClock) -> None:
    ctx = await build_context(settings, clock, store)
    assert ctx.redis is None and ctx.jwks_cache is None
