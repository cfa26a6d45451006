"""The gateway's own HTTP/1.1 client (:mod:`authgate.gateway.upstream`) against scripted upstreams on loopback
sockets: keep-alive reuse and when not to reuse, every way an answer can be framed, interim answers, the one
safe retry, broken and oversized answers, timeouts, request splitting; and the coalescing transport the
gateway's uvicorn writes through (:mod:`authgate.gateway.serving`), with server-sent events still unbuffered.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from authgate.gateway import Proxy
from authgate.gateway.serving import CoalescingTransport
from authgate.gateway.upstream import UpstreamError, UpstreamPool, UpstreamTimeout

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@dataclass
class Scripted:
    """A raw upstream: ``answer(request_number_on_connection, head, reader)`` returns the bytes to send (None:
    close the connection without answering). Records connections and every request head it read."""

    answer: Callable[[int, bytes, asyncio.StreamReader], Awaitable[bytes | None]]
    close_after: bool = False  # close the connection after each answer (close-delimited or cut-off bodies)
    connections: int = 0
    heads: list[bytes] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        n = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                n += 1
                out = await self.answer(n, head, reader)
                if out is None:
                    break
                writer.write(out)
                await writer.drain()
                if self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[..., Awaitable[tuple[Scripted, UpstreamPool]]]]:
    servers: list[asyncio.Server] = []
    pools: list[UpstreamPool] = []

    async def start(answer: Callable[[int, bytes, asyncio.StreamReader], Awaitable[bytes | None]],
                    close_after: bool = False, **pool_options: float) -> tuple[Scripted, UpstreamPool]:
        upstream = Scripted(answer, close_after)
        server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        pool = UpstreamPool("http", "127.0.0.1", port, **pool_options)  # type: ignore[arg-type]
        pools.append(pool)
        return upstream, pool

    yield start
    for pool in pools:
        await pool.aclose()
    for server in servers:
        server.close()
        await server.wait_closed()


async def fetch(pool: UpstreamPool, method: str = "GET", body: list[bytes] | None = None,
                headers: list[tuple[str, str]] | None = None) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    async def chunks() -> AsyncIterator[bytes]:
        for part in body or ():
            yield part

    answer = await pool.request(method, b"/x", [("host", "up"), *(headers or [])],
                                chunks() if body is not None else None, chunked=body is not None)
    try:
        data = b"".join([chunk async for chunk in answer.body()])
    finally:
        await answer.aclose()
    return answer.status, answer.headers, data


async def always(answer: bytes) -> Callable[[int, bytes, asyncio.StreamReader], Awaitable[bytes | None]]:
    async def script(n: int, head: bytes, reader: asyncio.StreamReader) -> bytes | None:
        return answer

    return script


async def test_keep_alive_connections_are_reused_and_close_or_http10_are_not(scripted: Callable[..., Awaitable[
        tuple[Scripted, UpstreamPool]]]) -> None:
    upstream, pool = await scripted(await always(OK))
    assert [await fetch(pool) for _ in range(3)] == [(200, [(b"content-length", b"2")], b"ok")] * 3
    assert upstream.connections == 1 and len(upstream.heads) == 3
    for answer in (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                   b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"):
        upstream, pool = await scripted(await always(answer))
        assert (await fetch(pool))[2] == (await fetch(pool))[2] == b"ok"
        assert upstream.connections == 2


async def test_every_framing_of_an_answer(scripted: Callable[..., Awaitable[tuple[Scripted, UpstreamPool]]]) -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK
    no_content = b"HTTP/1.1 204 No Content\r\n\r\n"
    for answer, body in [(chunked, b"abcde"), (interim, b"ok"), (no_content, b"")]:
        upstream, pool = await scripted(await always(answer))
        first, second = await fetch(pool), await fetch(pool)
        assert first[2] == second[2] == body and upstream.connections == 1, answer
    assert first[0] == 204
    interim_pool = (await scripted(await always(interim)))[1]
    status, headers, _ = await fetch(interim_pool)
    assert status == 200 and headers == [(b"content-length", b"2")]  # the 103's Link is not the answer's

    upstream, pool = await scripted(await always(b"HTTP/1.1 200 OK\r\n\r\nuntil the end"), close_after=True)
    assert await fetch(pool) == (200, [], b"until the end")  # the body ends with the connection
    assert not pool._idle  # which is gone: never reused


async def test_a_head_answer_has_no_body_whatever_its_length(
        scripted: Callable[..., Awaitable[tuple[Scripted, UpstreamPool]]]) -> None:
    upstream, pool = await scripted(await always(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n"))
    assert await fetch(pool, "HEAD") == (200, [(b"content-length", b"50")], b"")
    assert (await fetch(pool, "HEAD"))[0] == 200 and upstream.connections == 2  # not reused after HEAD


async def test_bytes_after_a_finished_answer_end_the_connection(
        scripted: Callable[..., Awaitable[tuple[Scripted, UpstreamPool]]]) -> None:
    """An upstream that sends more than its answer is out of step: the extra bytes never become the next
    request's answer, and the connection is not reused."""
    upstream, pool = await scripted(await always(OK + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nforged"))
    assert (await fetch(pool))[2] == b"ok"
    await asyncio.sleep(0.05)  # let the extra bytes arrive on the idle connection
    assert (await fetch(pool))[2] == b"ok" and upstream.connections == 2


async def test_request_bodies_by_length_and_chunked(scripted: Callable[..., Awaitable[tuple[Scripted,
                                                                                           UpstreamPool]]]) -> None:
    async def echo(n: int, head: bytes, reader: asyncio.StreamReader) -> bytes:
        if b"transfer-encoding: chunked" in head:
            body = b""
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                data = await reader.readexactly(size + 2)
                if size == 0:
                    break
                body += data[:-2]
        else:
            length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
            body = await reader.readexactly(length)
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)

    upstream, pool = await scripted(echo)
    assert (await fetch(pool, "POST", [b"ab", b"", b"cd"]))[2] == b"abcd"
    answer = await pool.request("POST", b"/x", [("host", "up"), ("content-length", "5")], _parts(b"he", b"llo"),
                                chunked=False)
    assert await answer.small_body() == b"hello"
    await answer.aclose()
    assert upstream.connections == 1


async def _parts(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_a_reused_connection_the_upstream_closed_is_retried_only_for_a_request_without_body(
        scripted: Callable[..., Awaitable[tuple[Scripted, UpstreamPool]]]) -> None:
    async def one_per_connection(n: int, head: bytes, reader: asyncio.StreamReader) -> bytes | None:
        return OK if n == 1 else None  # keeps the connection open, then drops it at the next request

    upstream, pool = await scripted(one_per_connection)
    assert (await fetch(pool))[2] == b"ok"
    assert (await fetch(pool))[2] == b"ok"  # the reused connection failed before any byte: replayed once
    assert upstream.connections == 2 and len(upstream.heads) == 3
    with pytest.raises(UpstreamError, match="closed the connection"):
        await fetch(pool, "POST", [b"pay me once"])  # a body is never replayed
    assert len(upstream.heads) == 4


async def test_broken_and_oversized_answers_are_upstream_errors(
        scripted: Callable[..., Awaitable[tuple[Scripted, UpstreamPool]]]) -> None:
    huge = b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 100) for i in range(1000)) + b"\r\n"
    for answer, message in [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok", "malformed answer"),
        (b"NOT HTTP AT ALL\r\n\r\n", "malformed answer"),
        (huge, "headers are too large"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "closed the connection mid-answer"),
    ]:
        _, pool = await scripted(await always(answer), close_after=True, read_timeout=5)
        with pytest.raises(UpstreamError, match=message):
            await fetch(pool)


async def test_timeouts_and_a_line_break_in_a_header(scripted: Callable[..., Awaitable[tuple[Scripted,
                                                                                            UpstreamPool]]]) -> None:
    async def silent(n: int, head: bytes, reader: asyncio.StreamReader) -> bytes | None:
        await asyncio.sleep(5)
        return None

    upstream, pool = await scripted(silent, read_timeout=0.2)
    with pytest.raises(UpstreamTimeout, match="read timeout"):
        await fetch(pool)
    upstream, pool = await scripted(await always(OK))
    for evil in [("x-evil", "a\r\nX-Injected: 1"), ("x-evil", "a\nb"), ("x-evil", "a\rb"), ("x-evil", "a\0b"),
                 ("x-evil\r\nx-injected", "1")]:
        with pytest.raises(UpstreamError, match="line break"):
            await fetch(pool, headers=[evil])
    assert upstream.heads == []  # nothing was written
    closed = UpstreamPool("http", "127.0.0.1", 9, connect_timeout=1)  # nothing listens on the discard port
    with pytest.raises(UpstreamError, match="cannot connect"):
        await fetch(closed)


async def test_through_the_proxy_a_broken_answer_is_502_and_a_slow_one_504(
        scripted: Callable[..., Awaitable[tuple[Scripted, UpstreamPool]]]) -> None:
    async def slow(n: int, head: bytes, reader: asyncio.StreamReader) -> bytes | None:
        if b"/slow" in head:
            await asyncio.sleep(2)
        return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok"

    upstream = Scripted(slow)
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    proxy = Proxy(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", identity="plain", read_timeout=0.3)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=proxy), base_url="http://gw") as http:
            broken, timed_out = await http.get("/x"), await http.get("/slow")
    finally:
        await proxy.aclose()
        server.close()
    assert broken.status_code == 502 and broken.json()["error"] == "upstream_unavailable"
    assert timed_out.status_code == 504 and timed_out.json()["error"] == "upstream_timeout"
    assert proxy.pool is not None and proxy.pool._slots._value == proxy.pool.max_connections  # no slot leaked


async def test_a_large_body_streams_through_with_flow_control(
        scripted: Callable[..., Awaitable[tuple[Scripted, UpstreamPool]]]) -> None:
    blob = bytes(range(256)) * 8192  # 2 MiB, more than the read buffer's high-water mark
    _, pool = await scripted(await always(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(blob), blob)))
    answer = await pool.request("GET", b"/x", [("host", "up")], None, chunked=False)
    assert await answer.small_body() is None  # too large to hold: streamed
    received = bytearray()
    async for chunk in answer.body():
        received += chunk
        await asyncio.sleep(0)  # a slow reader: the connection pauses reading instead of buffering it all
    await answer.aclose()
    assert bytes(received) == blob and len(pool._idle) == 1


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


async def test_the_coalescing_transport_writes_once_per_loop_step() -> None:
    fake = FakeTransport()
    transport = CoalescingTransport(fake, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.write(b"body")
    assert fake.writes == [] and transport.get_write_buffer_size() == 23
    await asyncio.sleep(0)
    assert fake.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
    transport.write(b"last words")
    transport.close()  # what is buffered goes out before the close
    assert fake.writes[-1] == b"last words" and fake.closed
    transport.write(b"dropped")
    transport.abort()
    await asyncio.sleep(0)
    assert fake.aborted and fake.writes[-1] == b"last words"
    assert transport.get_extra_info("peername") == "info:peername"


async def test_the_gateway_server_coalesces_and_still_streams_events_unbuffered() -> None:
    """The gateway app served as ``authgate gateway`` serves it: an answer arrives whole, and the first event of
    a stream arrives while the upstream still holds back the second."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    from authgate.gateway.serving import uvicorn_options
    from tests.servers import free_port, serve

    release = asyncio.Event()

    async def events(request: Request) -> Response:
        async def stream() -> AsyncIterator[bytes]:
            yield b"data: first\n\n"
            await asyncio.wait_for(release.wait(), 20)
            yield b"data: second\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    async def small(request: Request) -> Response:
        return JSONResponse({"ok": True})

    up_port, gw_port = free_port(), free_port()
    proxy = Proxy(f"http://127.0.0.1:{up_port}", identity="plain")
    options = {k: v for k, v in uvicorn_options("warning").items() if k != "log_config"}
    server = uvicorn.Server(uvicorn.Config(proxy, host="127.0.0.1", port=gw_port, **options))
    task = asyncio.create_task(server.serve())
    try:
        async with serve(Starlette(routes=[Route("/events", events), Route("/small", small)]), up_port):
            for _ in range(500):  # up to 10 s
                if server.started:
                    break
                await asyncio.sleep(0.02)
            reader, writer = await asyncio.open_connection("127.0.0.1", gw_port)
            writer.write(b"GET /small HTTP/1.1\r\nHost: gw\r\n\r\n")
            first_read = await asyncio.wait_for(reader.read(65536), 10)
            assert first_read.startswith(b"HTTP/1.1 200 ") and first_read.endswith(b'{"ok":true}')  # one segment
            writer.close()
            async with (httpx.AsyncClient(timeout=30) as http,
                        http.stream("GET", f"http://127.0.0.1:{gw_port}/events") as r):
                lines = r.aiter_lines()
                assert await asyncio.wait_for(anext(lines), 10) == "data: first"
                assert not release.is_set()
                release.set()
                assert [line async for line in lines if line] == ["data: second"]
    finally:
        server.should_exit = True
        await task
        await proxy.aclose()


async def test_an_https_upstream(tmp_path: Path) -> None:
    """TLS to the upstream: the certificate is checked against the pool's context and the upstream's name."""
    import datetime
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    upstream = Scripted(await always(OK))
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    trusting = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
    good = UpstreamPool("https", "localhost", port, ssl_context=trusting)
    untrusting = UpstreamPool("https", "localhost", port)  # the system's roots: a self-signed cert fails
    try:
        assert await fetch(good) == await fetch(good) == (200, [(b"content-length", b"2")], b"ok")
        assert upstream.connections == 1
        with pytest.raises(UpstreamError, match="cannot connect"):
            await fetch(untrusting)
    finally:
        await good.aclose()
        await untrusting.aclose()
        server.close()
