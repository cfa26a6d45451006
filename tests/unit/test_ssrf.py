"""The SSRF guard (authgate.net.fetch) against real sockets on 127.0.0.1: blocked ranges, pinning, no
redirects, size caps, the total deadline, and the development loopback switch (reference note §8 rows 1-6)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import ssl
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import httpcore
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from authgate.clock import FrozenClock
from authgate.config import Settings
from authgate.net.fetch import (
    DEFAULT_TIMEOUT,
    Fetcher,
    FetchError,
    IPAddress,
    _PinnedBackend,
    address_allowed,
    cache_lifetime,
)
from authgate.net.jwks import JwksCache, fetch_jwks

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class LocalServer:
    """A raw HTTP server on 127.0.0.1 whose handler writes whatever bytes the test wants."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            self.requests.append(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5))
            await asyncio.wait_for(self.handler(reader, writer), 10)
        except (OSError, asyncio.IncompleteReadError, TimeoutError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> LocalServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.wait_for(self._server.wait_closed(), 5)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[LocalServer]]]:
    servers: list[LocalServer] = []

    async def start(handler: Handler, ssl_context: ssl.SSLContext | None = None) -> LocalServer:
        server = await LocalServer(handler).start(ssl_context)
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


def reply(raw: bytes) -> Handler:
    async def handler(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(raw)
        await writer.drain()

    return handler


OK_JSON = reply(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"a": true}')


def fake_dns(mapping: dict[str, list[str]], calls: list[str] | None = None) -> Any:
    async def resolve(host: str, port: int) -> list[IPAddress]:
        if calls is not None:
            calls.append(host)
        return [ipaddress.ip_address(a) for a in mapping[host]]

    return resolve


# --- the address table -----------------------------------------------------------------------------------

BLOCKED = [
    "0.0.0.0", "0.1.2.3", "10.0.0.1", "10.255.255.255", "100.64.0.1", "100.127.255.254", "127.0.0.1",
    "127.1.2.3", "169.254.169.254", "172.16.0.1", "172.31.255.255", "192.0.0.8", "192.0.2.1", "192.168.1.1",
    "198.18.0.1", "198.19.255.255", "198.51.100.7", "203.0.113.9", "224.0.0.1", "239.255.255.250",
    "240.0.0.1", "255.255.255.255",
    "::", "::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::ffff:100.64.0.1",
    "::127.0.0.1", "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b::a00:1", "64:ff9b:1::1",
    "fc00::1", "fd12:3456::1", "fe80::1", "fec0::1", "ff02::1", "100::1", "2001:db8::1", "2001::1",
    "2002:7f00:1::1", "3fff::1", "5f00::1",
]
ALLOWED = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "100.128.0.1", "172.32.0.1", "2606:4700:4700::1111",
           "2a00:1450:4001::1", "::ffff:8.8.8.8", "64:ff9b::808:808"]


@pytest.mark.parametrize("address", BLOCKED)
def test_special_use_addresses_are_blocked(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert not address_allowed(ip)
    loopback = address in ("127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1")
    assert address_allowed(ip, allow_loopback=True) is loopback


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_allowed(address: str) -> None:
    assert address_allowed(ipaddress.ip_address(address))


# --- pinning and the peer check (fake inner backend: no packets leave) ------------------------------------


class FakeStream(httpcore.AsyncNetworkStream):
    def __init__(self, peer: tuple[str, int]) -> None:
        self.peer = peer
        self.closed = False

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        return b""

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        return None

    async def aclose(self) -> None:
        self.closed = True

    def get_extra_info(self, info: str) -> Any:
        return self.peer if info == "server_addr" else None


class FakeInner(httpcore.AsyncNetworkBackend):
    def __init__(self, peer: str | None = None) -> None:
        self.connected: list[str] = []
        self.peer = peer
        self.streams: list[FakeStream] = []

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,  # noqa: ASYNC109
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        self.connected.append(host)
        self.streams.append(FakeStream((self.peer or host, port)))
        return self.streams[-1]


async def test_connects_to_the_vetted_ip_not_the_name() -> None:
    inner = FakeInner()
    backend = _PinnedBackend(fake_dns({"docs.example": ["93.184.216.34"]}), allow_loopback=False,
                             loopback_only=False, inner=inner)
    stream = await backend.connect_tcp("docs.example", 443)
    assert inner.connected == ["93.184.216.34"]
    assert stream.get_extra_info("server_addr") == ("93.184.216.34", 443)


async def test_refuses_when_any_resolved_address_is_special_use() -> None:
    inner = FakeInner()
    backend = _PinnedBackend(fake_dns({"mixed.example": ["93.184.216.34", "10.0.0.7"]}), allow_loopback=True,
                             loopback_only=False, inner=inner)
    with pytest.raises(FetchError) as info:
        await backend.connect_tcp("mixed.example", 443)
    assert info.value.reason == "blocked address"
    assert inner.connected == []


async def test_connected_peer_is_checked_again() -> None:
    inner = FakeInner(peer="169.254.169.254")
    backend = _PinnedBackend(fake_dns({"docs.example": ["93.184.216.34"]}), allow_loopback=False,
                             loopback_only=False, inner=inner)
    with pytest.raises(FetchError) as info:
        await backend.connect_tcp("docs.example", 443)
    assert info.value.reason == "blocked peer"
    assert inner.streams[0].closed


# --- real sockets ------------------------------------------------------------------------------------------


async def test_loopback_is_refused_by_default(serve: Callable[..., Awaitable[LocalServer]]) -> None:
    server = await serve(OK_JSON)
    for url in (f"http://127.0.0.1:{server.port}/doc", f"https://127.0.0.1:{server.port}/doc",
                f"https://localhost:{server.port}/doc", f"https://[::ffff:127.0.0.1]:{server.port}/doc"):
        with pytest.raises(FetchError) as info:
            await Fetcher().get(url)
        assert str(info.value) == "fetch failed"
    assert server.connections == 0


async def test_loopback_allowed_when_configured(serve: Callable[..., Awaitable[LocalServer]]) -> None:
    server = await serve(OK_JSON)
    response = await Fetcher(allow_loopback=True).get(f"http://127.0.0.1:{server.port}/doc")
    assert response.status == 200
    assert response.body == b'{"a": true}'
    assert response.headers["content-type"] == "application/json"
    assert server.requests[0].startswith(b"GET /doc HTTP/1.1\r\n")
    assert b"accept-encoding: identity" in server.requests[0].lower()


async def test_loopback_switch_allows_nothing_else_private() -> None:
    calls: list[str] = []
    fetcher = Fetcher(allow_loopback=True, timeout=1,
                      resolve=fake_dns({"internal.example": ["10.1.2.3"], "meta.example": ["169.254.169.254"]},
                                       calls))
    for url in ("https://internal.example/doc", "http://internal.example/doc", "https://meta.example/x"):
        with pytest.raises(FetchError) as info:
            await fetcher.get(url)
        assert info.value.reason == "blocked address"
    assert calls == ["internal.example", "internal.example", "meta.example"]


async def test_plain_http_only_to_loopback() -> None:
    calls: list[str] = []
    dns = fake_dns({"public.example": ["93.184.216.34"]}, calls)
    with pytest.raises(FetchError) as info:
        await Fetcher(resolve=dns).get("http://public.example/doc")
    assert info.value.reason == "scheme not allowed"
    assert calls == []
    with pytest.raises(FetchError) as info:  # loopback switch on: http still only reaches loopback
        await Fetcher(allow_loopback=True, resolve=dns, timeout=1).get("http://public.example/doc")
    assert info.value.reason == "blocked address"


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "https://user:pw@example.com/x",
                                 "https://example.com@127.0.0.1/x", "https:///x", "https://exa mple.com/",
                                 "https://example.com:99999/", "gopher://example.com/"])
async def test_malformed_or_foreign_urls_never_resolve(url: str) -> None:
    calls: list[str] = []
    with pytest.raises(FetchError):
        await Fetcher(allow_loopback=True, resolve=fake_dns({}, calls)).get(url)
    assert calls == []


async def test_redirects_are_not_followed(serve: Callable[..., Awaitable[LocalServer]]) -> None:
    target = await serve(OK_JSON)
    location = f"http://127.0.0.1:{target.port}/elsewhere".encode()
    server = await serve(reply(b"HTTP/1.1 302 Found\r\nLocation: " + location + b"\r\nContent-Length: 0\r\n\r\n"))
    response = await Fetcher(allow_loopback=True).get(f"http://127.0.0.1:{server.port}/doc")
    assert response.status == 302
    assert response.headers["location"] == location.decode()
    assert len(server.requests) == 1
    assert target.connections == 0


async def test_oversize_by_content_length(serve: Callable[..., Awaitable[LocalServer]]) -> None:
    body = b"x" * 2000
    server = await serve(reply(b"HTTP/1.1 200 OK\r\nContent-Length: 2000\r\n\r\n" + body))
    url = f"http://127.0.0.1:{server.port}/doc"
    with pytest.raises(FetchError) as info:
        await Fetcher(allow_loopback=True).get(url, max_bytes=1999)
    assert info.value.reason == "body too large"
    assert (await Fetcher(allow_loopback=True).get(url, max_bytes=2000)).body == body


async def test_lying_content_length_is_refused_before_reading(serve: Callable[..., Awaitable[LocalServer]]) -> None:
    server = await serve(reply(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n{}"))
    started = time.monotonic()
    with pytest.raises(FetchError) as info:
        await Fetcher(allow_loopback=True).get(f"http://127.0.0.1:{server.port}/doc", max_bytes=5000)
    assert info.value.reason == "body too large"
    assert time.monotonic() - started < DEFAULT_TIMEOUT  # refused at the header, not by the deadline


@pytest.mark.parametrize("framing", ["close", "chunked"])
async def test_oversize_while_streaming(serve: Callable[..., Awaitable[LocalServer]], framing: str) -> None:
    async def handler(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if framing == "chunked":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(50):
                writer.write(b"400\r\n" + b"y" * 0x400 + b"\r\n")
                await writer.drain()
            writer.write(b"0\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
            for _ in range(50):
                writer.write(b"y" * 1024)
                await writer.drain()
        await writer.drain()

    server = await serve(handler)
    url = f"http://127.0.0.1:{server.port}/doc"
    with pytest.raises(FetchError) as info:
        await Fetcher(allow_loopback=True).get(url, max_bytes=5 * 1024)
    assert info.value.reason == "body too large"
    assert len((await Fetcher(allow_loopback=True).get(url, max_bytes=50 * 1024)).body) == 50 * 1024


async def test_compressed_bodies_are_refused(serve: Callable[..., Awaitable[LocalServer]]) -> None:
    server = await serve(reply(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 2\r\n\r\n{}"))
    with pytest.raises(FetchError) as info:
        await Fetcher(allow_loopback=True).get(f"http://127.0.0.1:{server.port}/doc")
    assert info.value.reason == "compressed body"


async def test_silent_server_times_out(serve: Callable[..., Awaitable[LocalServer]]) -> None:
    async def silent(_: asyncio.StreamReader, __: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    server = await serve(silent)
    started = time.monotonic()
    with pytest.raises(FetchError) as info:
        await Fetcher(allow_loopback=True, timeout=0.3).get(f"http://127.0.0.1:{server.port}/doc")
    assert str(info.value) == "fetch failed"
    assert time.monotonic() - started < 2


async def test_deadline_covers_the_whole_fetch_not_each_read(serve: Callable[..., Awaitable[LocalServer]]) -> None:
    async def drip(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        for _ in range(100):
            writer.write(b"z")
            await writer.drain()
            await asyncio.sleep(0.05)  # each read is fast; the whole body takes 5 s

    server = await serve(drip)
    started = time.monotonic()
    with pytest.raises(FetchError) as info:
        await Fetcher(allow_loopback=True, timeout=0.5).get(f"http://127.0.0.1:{server.port}/doc")
    assert info.value.reason == "timeout"
    assert time.monotonic() - started < 2


async def test_closed_port_looks_like_any_other_failure(serve: Callable[..., Awaitable[LocalServer]]) -> None:
    server = await serve(OK_JSON)
    port = server.port
    await server.stop()
    with pytest.raises(FetchError) as info:
        await Fetcher(allow_loopback=True).get(f"http://127.0.0.1:{port}/doc")
    assert str(info.value) == "fetch failed"
    assert info.value.args == ("fetch failed",)


# --- TLS: the socket goes to the pinned IP, the certificate is checked against the name ------------------


def _tls_pair(name: str) -> tuple[ssl.SSLContext, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    with tempfile.TemporaryDirectory() as tmp:
        cert_path, key_path = os.path.join(tmp, "c.pem"), os.path.join(tmp, "k.pem")
        with open(cert_path, "wb") as fh:
            fh.write(cert_pem)
        with open(key_path, "wb") as fh:
            fh.write(key_pem)
        server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_ctx.load_cert_chain(cert_path, key_path)
    return server_ctx, cert_pem


@pytest.mark.parametrize("cert_name,ok", [("docs.example", True), ("other.example", False)])
async def test_tls_uses_the_name_for_sni_host_and_certificate(
    serve: Callable[..., Awaitable[LocalServer]], cert_name: str, ok: bool
) -> None:
    server_ctx, cert_pem = _tls_pair(cert_name)
    seen_sni: list[str | None] = []
    server_ctx.sni_callback = lambda _sock, name, _ctx: seen_sni.append(name)  # type: ignore[assignment,func-returns-value]
    server = await serve(OK_JSON, server_ctx)
    calls: list[str] = []
    fetcher = Fetcher(allow_loopback=True, resolve=fake_dns({"docs.example": ["127.0.0.1"]}, calls),
                      ssl_context=ssl.create_default_context(cadata=cert_pem.decode()))
    url = f"https://docs.example:{server.port}/doc"
    if ok:
        response = await fetcher.get(url)
        assert response.status == 200
        assert f"host: docs.example:{server.port}".encode() in server.requests[0].lower()
    else:
        with pytest.raises(FetchError):
            await fetcher.get(url)
    assert seen_sni == ["docs.example"]
    assert calls == ["docs.example"]  # resolved exactly once: the connection used that answer


# --- cache lifetime ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header,expected",
    [(None, 300), ("max-age=60", 60), ("public, max-age=600", 600), ("max-age=5", 30), ("max-age=0", 30),
     ("max-age=999999", 86400), ("no-store", 30), ("no-cache, max-age=600", 30), ("max-age=junk", 30),
     ('max-age="120"', 120)],
)
def test_cache_lifetime_is_bounded(header: str | None, expected: int) -> None:
    headers = httpx.Headers({"Cache-Control": header} if header else {})
    assert cache_lifetime(headers, default=300, minimum=30, maximum=86400) == expected


# --- jwks_uri: the same guard, cached by URL -------------------------------------------------------------

JWKS_URL = "https://client.example/jwks.json"
EC_KEY = {"kty": "EC", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
          "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}


def jwks_site(pages: dict[str, httpx.Response], hits: list[str]) -> Fetcher:
    def handle(request: httpx.Request) -> httpx.Response:
        hits.append(str(request.url))
        return pages.get(str(request.url), httpx.Response(404))

    return Fetcher(transport=httpx.MockTransport(handle))


async def test_jwks_fetched_once_and_cached_by_max_age() -> None:
    hits: list[str] = []
    pages = {JWKS_URL: httpx.Response(200, json={"keys": [EC_KEY]}, headers={"Cache-Control": "max-age=120"})}
    clock = FrozenClock()
    cache = JwksCache(jwks_site(pages, hits), clock)
    settings = Settings()
    assert await fetch_jwks(JWKS_URL, settings, cache=cache) == {"keys": [EC_KEY]}
    clock.advance(119)
    assert await fetch_jwks(JWKS_URL, settings, cache=cache) == {"keys": [EC_KEY]}
    assert len(hits) == 1
    clock.advance(2)
    await fetch_jwks(JWKS_URL, settings, cache=cache)
    assert len(hits) == 2


async def test_jwks_refresh_is_rate_limited() -> None:
    hits: list[str] = []
    clock = FrozenClock()
    cache = JwksCache(jwks_site({JWKS_URL: httpx.Response(200, json={"keys": [EC_KEY]})}, hits), clock)
    await cache.get(JWKS_URL)
    clock.advance(10)
    await cache.get(JWKS_URL, refresh=True)  # unknown kid 10 s after the fetch: no new request
    assert len(hits) == 1
    clock.advance(21)
    await cache.get(JWKS_URL, refresh=True)
    assert len(hits) == 2


@pytest.mark.parametrize("response", [
    httpx.Response(200, json={"keys": [{**EC_KEY, "d": "private"}]}),
    httpx.Response(200, json={"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}),
    httpx.Response(200, json={"keys": []}),
    httpx.Response(200, json=[EC_KEY]),
    httpx.Response(200, content=b"not json"),
    httpx.Response(200, json={"keys": [EC_KEY] * 21}),
    httpx.Response(302, headers={"Location": "https://client.example/other"}),
    httpx.Response(500),
], ids=repr)
async def test_bad_jwks_fail_and_are_not_cached(response: httpx.Response) -> None:
    hits: list[str] = []
    cache = JwksCache(jwks_site({JWKS_URL: response}, hits), FrozenClock())
    for _ in range(2):
        with pytest.raises(FetchError) as info:
            await cache.get(JWKS_URL)
        assert str(info.value) == "fetch failed"
    assert hits == [JWKS_URL, JWKS_URL]


async def test_default_jwks_fetcher_is_guarded() -> None:
    with pytest.raises(FetchError):
        await fetch_jwks("http://client.example/jwks.json", Settings())
    with pytest.raises(FetchError):
        await fetch_jwks("https://127.0.0.1:1/jwks.json", Settings())
