"""Client ID metadata documents (reference note §4.5, §8 row 19): URL rules, document validation and the cache,
served in-process through ``httpx.MockTransport`` behind the real ``Fetcher``."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import pytest

from authgate.clock import FrozenClock
from authgate.config import Settings
from authgate.dcr.cimd import MAX_DOCUMENT_BYTES, MetadataDocuments, make_resolver
from authgate.net.fetch import Fetcher
from authgate.oauth.clients import ClientResolver
from authgate.store import Store

URL = "https://app.example/oauth/client.json"
PUBLIC_JWK = {"kty": "EC", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
              "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0", "kid": "k1"}


def document(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "client_id": URL,
        "client_name": "Example Agent",
        "redirect_uris": ["http://127.0.0.1:3030/callback", "https://app.example/cb"],
    }
    for key, value in changes.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


@dataclass
class Site:
    """What the mock network serves: URL -> (status, headers, body). Counts requests per URL."""

    pages: dict[str, tuple[int, dict[str, str], bytes]] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)
    gate: asyncio.Event | None = None
    delay: float = 0.0

    def put(self, url: str, doc: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> None:
        body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        self.pages[url] = (status, {"Content-Type": "application/json", **(headers or {})}, body)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        self.hits[url] = self.hits.get(url, 0) + 1
        if self.gate is not None:
            await asyncio.wait_for(self.gate.wait(), 5)
        if self.delay:
            await asyncio.sleep(self.delay)
        status, headers, body = self.pages.get(url, (404, {}, b"not found"))
        return httpx.Response(status, headers=headers, content=body)


@pytest.fixture
def site() -> Site:
    return Site()


@pytest.fixture
def make(settings: Settings, clock: FrozenClock, site: Site) -> Callable[..., MetadataDocuments]:
    def build(timeout: float = 3.0, **kwargs: Any) -> MetadataDocuments:
        fetcher = Fetcher(transport=httpx.MockTransport(site.handle), timeout=timeout)
        resolver = make_resolver(settings, clock, fetcher=fetcher)
        if kwargs:
            resolver = MetadataDocuments(settings, fetcher, clock, **kwargs)
        return resolver

    return build


@pytest.fixture
def resolve(make: Callable[..., MetadataDocuments]) -> MetadataDocuments:
    return make()


# --- a valid document ---------------------------------------------------------------------------------------


async def test_valid_document_becomes_a_public_client(site: Site, resolve: MetadataDocuments) -> None:
    site.put(URL, document(scope="read admin unknown", skip_consent=True, client_secret_hash="x",
                           logo_uri="https://app.example/logo.png", **{"client_name#ja": "エージェント"}))
    client = await resolve(URL)
    assert client is not None
    assert client.client_id == URL
    assert client.source == "metadata_document"
    assert client.is_public and client.auth_method == "none"
    assert client.secret_hash is None
    assert client.redirect_uris == ["http://127.0.0.1:3030/callback", "https://app.example/cb"]
    assert client.matches_redirect_uri("http://127.0.0.1:5555/callback")
    assert client.grant_types == ["authorization_code"]
    assert client.metadata["response_types"] == ["code"]
    assert client.scopes == {"read", "admin"}
    assert client.name == "Example Agent"
    assert client.metadata["client_name#ja"] == "エージェント"
    assert client.metadata["logo_uri"] == "https://app.example/logo.png"
    assert "skip_consent" not in client.metadata and "client_secret_hash" not in client.metadata


async def test_port_is_allowed(site: Site, resolve: MetadataDocuments) -> None:
    url = "https://app.example:8443/client"
    site.put(url, document(client_id=url))
    assert (await resolve(url)) is not None


# --- URL rules: refused before any fetch -------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "http://app.example/client.json",
    "https://app.example",
    "https://app.example/",
    "https://app.example/a/../client.json",
    "https://app.example/./client.json",
    "https://app.example/a/%2e%2e/client.json",
    "https://app.example/a/%2E%2e/client.json",
    "https://app.example/%2e/client.json",
    "https://app.example/a/..",
    "https://app.example/a%2f..%2fb",
    "https://app.example/client.json#",
    "https://app.example/client.json#frag",
    "https://user@app.example/client.json",
    "https://user:pw@app.example/client.json",
    "https://app.example/client.json?v=1",
    "https://app.example/client.json?",
    "https://app.example/a\\b",
    "https://app.example/a b",
    "https://app.example:99999/client",
    "https://app.example/" + "a" * 2100,
])
async def test_bad_client_id_urls_are_refused_without_fetching(site: Site, resolve: MetadataDocuments,
                                                             url: str) -> None:
    site.put(url, document(client_id=url))
    assert await resolve(url) is None
    assert site.hits == {}


# --- fetch outcomes -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [201, 204, 301, 302, 304, 404, 500])
async def test_only_200_succeeds(site: Site, resolve: MetadataDocuments, status: int) -> None:
    elsewhere = "https://app.example/elsewhere.json"
    site.put(elsewhere, document())
    site.put(URL, document(), status=status, headers={"Location": elsewhere})
    assert await resolve(URL) is None
    assert site.hits == {URL: 1}  # the redirect target was never fetched


async def test_document_size_cap(site: Site, resolve: MetadataDocuments) -> None:
    padded = json.dumps(document()).encode()
    site.put(URL, padded + b" " * (MAX_DOCUMENT_BYTES - len(padded)))  # exactly the cap
    assert await resolve(URL) is not None
    site.put(URL, padded + b" " * (MAX_DOCUMENT_BYTES - len(padded) + 1))
    resolve.cache.discard(URL)
    assert await resolve(URL) is None


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'"string"', b"null", b"\xff\xfe{}"])
async def test_body_must_be_a_json_object(site: Site, resolve: MetadataDocuments, body: bytes) -> None:
    site.put(URL, body)
    assert await resolve(URL) is None


async def test_slow_server_is_an_unknown_client(site: Site, make: Callable[..., MetadataDocuments]) -> None:
    site.put(URL, document())
    site.delay = 2
    resolve = make(timeout=0.2)
    started = asyncio.get_running_loop().time()
    assert await resolve(URL) is None
    assert asyncio.get_running_loop().time() - started < 1.5


# --- validation ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("changes", [
    {"client_id": URL + "/"},
    {"client_id": "https://app.example:443/oauth/client.json"},
    {"client_id": "HTTPS://app.example/oauth/client.json"},
    {"client_id": "https://APP.example/oauth/client.json"},
    {"client_id": None},
    {"client_name": None},
    {"client_name": ""},
    {"client_name": 42},
    {"redirect_uris": None},
    {"redirect_uris": []},
    {"redirect_uris": "https://app.example/cb"},
    {"redirect_uris": ["javascript:alert(1)"]},
    {"redirect_uris": ["http://evil.example/cb"]},
    {"redirect_uris": ["https://app.example/cb#"]},
], ids=repr)
async def test_identity_and_redirects(site: Site, resolve: MetadataDocuments, changes: dict[str, Any]) -> None:
    site.put(URL, document(**changes))
    assert await resolve(URL) is None


@pytest.mark.parametrize("changes", [
    {"token_endpoint_auth_method": "client_secret_basic"},
    {"token_endpoint_auth_method": "client_secret_post"},
    {"token_endpoint_auth_method": "client_secret_jwt"},
    {"token_endpoint_auth_method": "tls_client_auth"},
    {"token_endpoint_auth_method": "made_up"},
    {"client_secret": "s3cr3t-value"},
    {"client_secret_expires_at": 0},
    {"token_endpoint_auth_method": "none", "client_secret": "s3cr3t-value"},
], ids=repr)
async def test_symmetric_secrets_are_refused(site: Site, resolve: MetadataDocuments,
                                             changes: dict[str, Any]) -> None:
    site.put(URL, document(**changes))
    assert await resolve(URL) is None


async def test_reason_is_logged_at_info_without_secrets(site: Site, resolve: MetadataDocuments,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    site.put(URL, document(client_secret="s3cr3t-value"))
    with caplog.at_level(logging.INFO, logger="authgate.cimd"):
        assert await resolve(URL) is None
    messages = [r.getMessage() for r in caplog.records if r.name == "authgate.cimd"]
    assert len(messages) == 1 and "client secret" in messages[0] and URL in messages[0]
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == "authgate.cimd")
    assert "s3cr3t-value" not in caplog.text


@pytest.mark.parametrize("changes,ok", [
    ({"token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": [PUBLIC_JWK]}}, True),
    ({"token_endpoint_auth_method": "private_key_jwt", "jwks_uri": "https://app.example/jwks.json"}, True),
    ({"token_endpoint_auth_method": "private_key_jwt"}, False),
    ({"token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": [{**PUBLIC_JWK, "d": "secret"}]}}, False),
    ({"token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}}, False),
    ({"token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": []}}, False),
    ({"token_endpoint_auth_method": "private_key_jwt", "jwks": [PUBLIC_JWK]}, False),
    ({"token_endpoint_auth_method": "private_key_jwt", "jwks_uri": "http://app.example/jwks.json"}, False),
    ({"token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": [PUBLIC_JWK]},
      "jwks_uri": "https://app.example/jwks.json"}, False),
    ({"jwks": {"keys": [{**PUBLIC_JWK, "d": "secret"}]}}, False),  # private material refused even with none
], ids=repr)
async def test_private_key_jwt_needs_public_keys(site: Site, resolve: MetadataDocuments,
                                                 changes: dict[str, Any], ok: bool) -> None:
    site.put(URL, document(**changes))
    client = await resolve(URL)
    assert (client is not None) is ok
    if client is not None:
        assert client.auth_method == "private_key_jwt" and not client.is_public


@pytest.mark.parametrize("name", ["logo_uri", "client_uri", "tos_uri", "policy_uri", "logo_uri#ja"])
@pytest.mark.parametrize("value,ok", [
    ("https://app.example/x", True), ("http://app.example/x", False), ("javascript:alert(1)", False),
    ("data:image/png;base64,AAAA", False), ("https://u@app.example/x", False), (42, False),
])
async def test_uri_properties_must_be_https(site: Site, resolve: MetadataDocuments, name: str, value: Any,
                                            ok: bool) -> None:
    site.put(URL, document(**{name: value}))
    assert (await resolve(URL) is not None) is ok


@pytest.mark.parametrize("changes,grants,responses", [
    ({}, ["authorization_code"], ["code"]),
    ({"grant_types": ["authorization_code", "refresh_token"]}, ["authorization_code", "refresh_token"], ["code"]),
    ({"grant_types": ["refresh_token", "implicit", "authorization_code", "client_credentials", "password"]},
     ["authorization_code", "refresh_token"], ["code"]),
    ({"response_types": ["token", "code"]}, ["authorization_code"], ["code"]),
    ({"grant_types": ["implicit"]}, None, None),
    ({"grant_types": ["refresh_token"]}, None, None),
    ({"grant_types": []}, None, None),
    ({"grant_types": "authorization_code"}, None, None),
    ({"response_types": ["token"]}, None, None),
    ({"response_types": ["id_token token"]}, None, None),
], ids=repr)
async def test_grant_and_response_types_are_filtered(site: Site, resolve: MetadataDocuments, changes: dict[str, Any],
                                                     grants: list[str] | None, responses: list[str] | None) -> None:
    site.put(URL, document(**changes))
    client = await resolve(URL)
    if grants is None:
        assert client is None
    else:
        assert client is not None
        assert client.grant_types == grants
        assert client.metadata["response_types"] == responses


# --- cache ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("header,kept", [
    (None, 300), ("max-age=60", 60), ("max-age=5", 30), ("no-store", 30), ("max-age=999999", 86400),
])
async def test_cache_honours_max_age_within_bounds(site: Site, resolve: MetadataDocuments, clock: FrozenClock,
                                                   header: str | None, kept: int) -> None:
    site.put(URL, document(), headers={"Cache-Control": header} if header else None)
    first = await resolve(URL)
    clock.advance(kept - 1)
    assert await resolve(URL) is first
    assert site.hits[URL] == 1
    clock.advance(2)
    again = await resolve(URL)
    assert again is not None and again is not first
    assert site.hits[URL] == 2


async def test_failures_are_never_cached(site: Site, resolve: MetadataDocuments) -> None:
    site.put(URL, document(), status=500)
    assert await resolve(URL) is None
    site.put(URL, document(client_secret="x"))
    assert await resolve(URL) is None
    site.put(URL, document())
    assert await resolve(URL) is not None
    assert site.hits[URL] == 3
    assert await resolve(URL) is not None
    assert site.hits[URL] == 3


async def test_concurrent_fetches_are_coalesced(site: Site, resolve: MetadataDocuments) -> None:
    site.put(URL, document())
    site.gate = asyncio.Event()
    tasks = [asyncio.create_task(resolve(URL)) for _ in range(10)]
    await asyncio.sleep(0.05)
    site.gate.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert site.hits == {URL: 1}
    assert results[0] is not None and all(r is results[0] for r in results)


async def test_failed_inflight_fetch_is_cleared(site: Site, resolve: MetadataDocuments) -> None:
    site.put(URL, document(), status=503)
    site.gate = asyncio.Event()
    tasks = [asyncio.create_task(resolve(URL)) for _ in range(3)]
    await asyncio.sleep(0.05)
    site.gate.set()
    assert await asyncio.wait_for(asyncio.gather(*tasks), 5) == [None, None, None]
    assert site.hits == {URL: 1}
    site.put(URL, document())
    assert await resolve(URL) is not None
    assert site.hits == {URL: 2}


async def test_one_caller_cancelling_does_not_cancel_the_shared_fetch(site: Site, resolve: MetadataDocuments) -> None:
    site.put(URL, document())
    site.gate = asyncio.Event()
    impatient = asyncio.create_task(resolve(URL))
    patient = asyncio.create_task(resolve(URL))
    await asyncio.sleep(0.05)
    impatient.cancel()
    site.gate.set()
    assert await asyncio.wait_for(patient, 5) is not None
    assert impatient.cancelled()
    assert site.hits == {URL: 1}


async def test_cache_is_lru_bounded(site: Site, make: Callable[..., MetadataDocuments]) -> None:
    resolve = make(max_entries=2)
    urls = [f"https://app.example/c{i}.json" for i in range(3)]
    for url in urls:
        site.put(url, document(client_id=url))
    for url in urls[:2]:
        assert await resolve(url) is not None
    assert await resolve(urls[0]) is not None  # touch c0: c1 is now least recently used
    assert await resolve(urls[2]) is not None  # evicts c1
    assert len(resolve.cache) == 2
    for url in urls:
        assert await resolve(url) is not None
    assert [site.hits[u] for u in urls] == [1, 2, 2]  # c1 refetched; fetching it evicted c2, refetched too


# --- wiring ---------------------------------------------------------------------------------------------------


async def test_client_resolver_returns_the_document_client(site: Site, resolve: MetadataDocuments,
                                                           store: Store) -> None:
    site.put(URL, document())
    clients = ClientResolver(store, resolve)
    client = await clients.get(URL)
    assert client is not None and client.source == "metadata_document" and client.client_id == URL
    assert await clients.get("app.example/oauth/client.json") is None
    assert await clients.get("https://app.example/missing.json") is None
    assert site.hits == {URL: 1, "https://app.example/missing.json": 1}


async def test_default_resolver_goes_through_the_ssrf_guard(settings: Settings, clock: FrozenClock) -> None:
    hits: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hits.append(1)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        for allow in (False, True):
            resolve = make_resolver(replace(settings, allow_loopback_fetch=allow), clock)
            url = f"https://127.0.0.1:{port}/client.json"
            assert await asyncio.wait_for(resolve(url), 5) is None
            # off: refused before connecting; on: connects but the TLS handshake fails
            assert len(hits) == (1 if allow else 0)
    finally:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)
