"""DNS rebinding to loopback against every server-side fetch (RFC 9700 §4.x SSRF note; dcr-oauth-mcp.md §8
rows 1, 5, 6, 19): client ID metadata documents, ``jwks_uri`` and webhooks.

The resolver stub answers a public address the first time it is asked and ``127.0.0.1`` every time after:
the classic rebinding set-up, where a guard that resolves to *check* and lets the HTTP client resolve again to
*connect* ends up on loopback. The network below the guard is a fake httpcore backend that records where it
was asked to connect and answers canned HTTP/1.1 (TLS is a no-op), so no packet leaves the process.

What must hold, per consumer: one fetch resolves exactly once and connects to the vetted public IP (never by
name, never to loopback); the next fetch, now answered with loopback, is refused before any connect.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from typing import Any

import httpcore
import pytest

from authgate.approvals.channels.http import GuardedPoster
from authgate.clock import FrozenClock
from authgate.config import Settings
from authgate.dcr.cimd import MetadataDocuments
from authgate.net.fetch import Fetcher, FetchError, IPAddress
from authgate.net.jwks import JwksCache

PUBLIC = "93.184.216.34"
JWK = {"kty": "EC", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
       "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0", "kid": "k1"}


class RebindingDNS:
    """Public address first, loopback ever after."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[IPAddress]:
        self.calls.append(host)
        return [ipaddress.ip_address(PUBLIC if len(self.calls) == 1 else "127.0.0.1")]


class FakeStream(httpcore.AsyncNetworkStream):
    def __init__(self, peer: tuple[str, int], pages: dict[str, bytes]) -> None:
        self.peer = peer
        self.pages = pages
        self.sent = b""
        self.answered = False

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        self.sent += buffer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        if self.answered or b"\r\n\r\n" not in self.sent:
            return b""
        self.answered = True
        path = self.sent.split(b" ", 2)[1].decode()
        body = self.pages.get(path, b"")
        status = b"200 OK" if path in self.pages else b"404 Not Found"
        return (b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)

    async def aclose(self) -> None:
        return None

    async def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:  # noqa: ASYNC109
        return self

    def get_extra_info(self, info: str) -> Any:
        return self.peer if info == "server_addr" else None


class FakeNetwork(httpcore.AsyncNetworkBackend):
    """Stands in for ``httpcore.AnyIOBackend`` under the guard: records every connect target."""

    connected: list[str] = []
    pages: dict[str, bytes] = {}

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,  # noqa: ASYNC109
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        FakeNetwork.connected.append(host)
        return FakeStream((host, port), FakeNetwork.pages)


@pytest.fixture
def network(monkeypatch: pytest.MonkeyPatch) -> type[FakeNetwork]:
    FakeNetwork.connected = []
    FakeNetwork.pages = {}
    monkeypatch.setattr(httpcore, "AnyIOBackend", FakeNetwork)
    return FakeNetwork


def assert_pinned(network: type[FakeNetwork], dns: RebindingDNS) -> None:
    assert network.connected == [PUBLIC], network.connected  # never the name, never loopback
    assert len(dns.calls) == 1


async def test_cimd_fetch_is_pinned_against_dns_rebinding(network: type[FakeNetwork], settings: Settings,
                                                          clock: FrozenClock) -> None:
    first, second = "https://app.example/oauth/client.json", "https://app.example/oauth/again.json"
    for url in (first, second):
        network.pages[url.removeprefix("https://app.example")] = json.dumps(
            {"client_id": url, "client_name": "Agent", "redirect_uris": ["https://app.example/cb"]}).encode()
    dns = RebindingDNS()
    documents = MetadataDocuments(settings, Fetcher(resolve=dns), clock)

    client = await documents(first)
    assert client is not None and client.client_id == first
    assert_pinned(network, dns)

    assert await documents(second) is None  # DNS now says 127.0.0.1: refused before connecting
    assert network.connected == [PUBLIC] and len(dns.calls) == 2


async def test_jwks_uri_fetch_is_pinned_against_dns_rebinding(network: type[FakeNetwork],
                                                              clock: FrozenClock) -> None:
    network.pages["/jwks.json"] = network.pages["/rotated.json"] = json.dumps({"keys": [JWK]}).encode()
    dns = RebindingDNS()
    cache = JwksCache(Fetcher(resolve=dns), clock)

    assert (await cache.get("https://keys.example/jwks.json"))["keys"][0]["kid"] == "k1"
    assert_pinned(network, dns)

    with pytest.raises(FetchError) as err:
        await cache.get("https://keys.example/rotated.json")
    assert err.value.reason == "blocked address" and str(err.value) == "fetch failed"
    assert network.connected == [PUBLIC]


async def test_webhook_post_is_pinned_against_dns_rebinding(network: type[FakeNetwork]) -> None:
    """``WebhookChannel`` (and the SMS channel) post through ``GuardedPoster``."""
    network.pages["/hook"] = b"{}"
    dns = RebindingDNS()
    poster = GuardedPoster(resolve=dns)

    response = await poster.post("https://hooks.example/hook", content=b"{}", headers={})
    assert response.status == 200
    assert_pinned(network, dns)

    with pytest.raises(FetchError):
        await poster.post("https://hooks.example/hook", content=b"{}", headers={})
    assert network.connected == [PUBLIC]


async def test_rebinding_to_loopback_is_refused_even_on_the_first_answer(network: type[FakeNetwork]) -> None:
    """A name that resolves to loopback (or metadata 169.254.169.254) straight away never gets a connect."""
    for address in ("127.0.0.1", "169.254.169.254", "::1", "::ffff:127.0.0.1", "100.64.0.1"):
        async def resolve(host: str, port: int, address: str = address) -> list[IPAddress]:
            return [ipaddress.ip_address(address)]

        with pytest.raises(FetchError):
            await Fetcher(resolve=resolve).get("https://internal.example/doc")
    assert network.connected == []
