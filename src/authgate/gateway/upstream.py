"""The gateway's HTTP/1.1 client to its one upstream: a keep-alive connection pool on asyncio protocols, with
``httptools`` (llhttp, the parser uvicorn uses) reading the answers.

Why not httpx/httpcore: measured on the proxied path (benchmarks/gateway_overhead.py), an httpcore request
cost the gateway ~360 µs of CPU, ten times the gateway's own policy and header work; most of it is generic
machinery a single-upstream proxy does not need (anyio streams and cancel scopes, sniffio lookups, h11's
pure-Python state machine, per-request pool bookkeeping). This client does only what the proxy needs:

* one request at a time per connection, connections reused LIFO while the upstream keeps them alive (``HTTP/1.1``
  without ``Connection: close``, the whole answer read) and idle for less than :data:`IDLE_EXPIRY`;
* a request body streamed as it arrives — ``Content-Length`` as declared, otherwise chunked — with write flow
  control; the answer streamed back chunk by chunk with read flow control (reading pauses above
  :data:`HIGH_WATER` buffered bytes), ``Content-Length``, chunked or close-delimited, ``1xx`` answers skipped;
* timeouts: connect (also the wait for a free connection when ``max_connections`` are busy), write (each
  flush of the request), read (each wait for the upstream, so server-sent events need only keep-alives);
* one retry on a fresh connection, only when a *reused* connection failed before any byte of the answer and the
  request has no body (RFC 9110 §9.2.2: the upstream may have closed it while idle, and the request is safe to
  replay); never otherwise;
* answers are bounded (:data:`MAX_HEAD` bytes of status line and headers, :data:`MAX_HEADERS` fields) and any
  framing the parser refuses (two ``Content-Length``, bad chunks) is :class:`UpstreamError`; header values
  with CR, LF or NUL are refused before anything is written, so no request can be split.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from typing import cast

import httptools

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
MAX_HEAD = 64 * 1024
MAX_HEADERS = 256
#: Answers up to this size with a Content-Length are read whole before the proxy answers (one write, not two).
SMALL_BODY = 64 * 1024
#: Seconds an idle connection is reused for: below the common 5 s keep-alive of upstream servers.
IDLE_EXPIRY = 4.0


class UpstreamError(Exception):
    """The upstream could not be reached or sent a broken answer (the proxy's 502)."""


class UpstreamTimeout(UpstreamError):
    """Connect, write or read took longer than allowed (the proxy's 504 before the answer started)."""


class _Connection(asyncio.Protocol):
    """One upstream connection and the answer it is reading (one request at a time)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.reused = False
        self._writable: asyncio.Future[None] | None = None
        self._reset(head=False)

    def _reset(self, *, head: bool) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.head_request = head
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_size = 0
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.close_delimited = False
        self.received_any = False
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.paused = False
        self.error: UpstreamError | None = None
        self._waiter: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        if self.complete:  # bytes after a finished answer: the connection is out of step, never reuse it
            self.keep_alive = False
            self._close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamError("the upstream switched protocols"))
        except httptools.HttpParserCallbackError as exc:  # one of ours, raised in a callback
            cause = exc.__context__
            if isinstance(cause, _AfterAnswer):  # the answer is whole, but the connection is out of step
                self.keep_alive = False
                self._close()
            elif not isinstance(cause, _HeadDone):
                self._fail(cause if isinstance(cause, UpstreamError) else UpstreamError("malformed answer"))
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"malformed answer: {exc}"))
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete and self.error is None:
            if self.headers_done and self.close_delimited:
                self.complete = True  # a body delimited by the connection's end has ended
            else:
                self.error = UpstreamError("the upstream closed the connection mid-answer" if self.received_any
                                           else "the upstream closed the connection")
        self._wake()
        self.resume_writing()  # a writer waiting for room finds the connection closed

    def pause_writing(self) -> None:
        if self._writable is None or self._writable.done():
            self._writable = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    # -- httptools callbacks ------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:  # a second answer to one request: never let it touch this one
            raise _AfterAnswer()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_size += len(name) + len(value) + 4
        self.headers.append((name.lower(), value))
        if self.head_size > MAX_HEAD or len(self.headers) > MAX_HEADERS:
            raise UpstreamError("the upstream's answer headers are too large")

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            self.headers = []  # an interim answer (100 Continue, 103 Early Hints): the final one follows
            return
        self.status = status
        self.headers_done = True
        self.keep_alive = self.parser.should_keep_alive()
        framed = any(k in (b"content-length", b"transfer-encoding") for k, _ in self.headers)
        self.close_delimited = not framed and status not in (204, 304) and not self.head_request
        if self.head_request:  # no body follows whatever the headers say; llhttp cannot be told, so stop here
            self.complete = True
            self.keep_alive = False
            raise _HeadDone()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self.headers_done:
            self.complete = True

    # -- the request ----------------------------------------------------------------------------------------

    def _fail(self, error: UpstreamError) -> None:
        if self.error is None:
            self.error = error
        self.keep_alive = False
        self._close()

    def _close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _wait(self, within: float) -> None:
        """Until data, the end of the answer or an error arrives; :class:`UpstreamTimeout` after ``within`` s."""
        waiter = self._waiter = self.loop.create_future()
        timer = self.loop.call_later(within, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    async def write(self, data: bytes, within: float) -> None:
        if self.closed or self.transport is None:
            raise UpstreamError("the upstream closed the connection")
        self.transport.write(data)
        writable = self._writable
        if writable is not None and not writable.done():
            try:
                await asyncio.wait_for(asyncio.shield(writable), within)
            except TimeoutError:
                raise UpstreamTimeout("write timeout") from None
            if self.closed:
                raise UpstreamError("the upstream closed the connection")

    async def read_head(self, within: float) -> None:
        while not self.headers_done and self.error is None:
            await self._wait(within)
        if self.error is not None:
            raise self.error

    async def body(self, within: float) -> AsyncIterator[bytes]:
        while True:
            while self.chunks:
                chunk = self.chunks.popleft()
                self.buffered -= len(chunk)
                if self.paused and self.buffered < LOW_WATER and self.transport is not None and not self.closed:
                    self.paused = False
                    self.transport.resume_reading()
                yield chunk
            if self.complete:
                return
            if self.error is not None:
                raise self.error
            await self._wait(within)


class _HeadDone(Exception):
    """Stops the parser at the end of the headers of an answer to HEAD."""


class _AfterAnswer(Exception):
    """Stops the parser when bytes follow a finished answer in the same read."""


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(UpstreamTimeout("read timeout"))


class Answer:
    """The upstream's answer: status and headers (names lower-cased), and :meth:`body` to stream it; call
    :meth:`aclose` when done (the connection goes back to the pool only if the answer was read to its end)."""

    def __init__(self, pool: UpstreamPool, conn: _Connection) -> None:
        self._pool = pool
        self._conn = conn
        self.status = conn.status
        self.headers = conn.headers
        self._released = False

    async def small_body(self, limit: int = SMALL_BODY) -> bytes | None:
        """The whole body if it is framed by a ``Content-Length`` of at most ``limit`` bytes (read to its end
        first: the upstream usually sends it right behind the headers, and the proxy then answers with one
        write), else None: stream it with :meth:`body`."""
        conn = self._conn
        if not conn.complete:
            lengths = [v for k, v in conn.headers if k == b"content-length"]
            if len(lengths) != 1 or not lengths[0].strip().isdigit() or int(lengths[0]) > limit:
                return None
            while not conn.complete and conn.error is None:
                await conn._wait(self._pool.read_timeout)
            if conn.error is not None:
                raise conn.error
        body = b"".join(conn.chunks)
        conn.chunks.clear()
        conn.buffered = 0
        return body

    def body(self) -> AsyncIterator[bytes]:
        return self._conn.body(self._pool.read_timeout)

    async def aclose(self) -> None:
        if not self._released:
            self._released = True
            self._pool._release(self._conn)


class UpstreamPool:
    """Connections to ``host:port`` (TLS when ``tls``), at most ``max_connections`` at once."""

    def __init__(self, scheme: str, host: str, port: int, *, max_connections: int = 100,
                 connect_timeout: float = 5.0, read_timeout: float = 60.0, write_timeout: float = 60.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.host = host
        self.port = port
        self.tls = scheme == "https"
        self.ssl_context = (ssl_context or ssl.create_default_context()) if self.tls else None
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self.max_connections = max_connections
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(loop.create_connection(
                lambda: _Connection(loop), self.host, self.port, ssl=self.ssl_context,
                server_hostname=self.host if self.tls else None), self.connect_timeout)
        except TimeoutError:
            raise UpstreamTimeout("connect timeout") from None
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamError(f"cannot connect: {exc.__class__.__name__}") from None
        self._open.add(conn)
        return conn

    def _reusable(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and now - conn.idle_since < IDLE_EXPIRY:
                conn.reused = True
                return conn
            self._discard(conn)
        return None

    def _discard(self, conn: _Connection) -> None:
        conn._close()
        self._open.discard(conn)

    def _release(self, conn: _Connection) -> None:
        try:
            if conn.complete and conn.keep_alive and conn.error is None and not conn.closed and not conn.chunks:
                conn.idle_since = time.monotonic()  # still "complete": a byte arriving while idle closes it
                self._idle.append(conn)
            else:
                self._discard(conn)
        finally:
            self._slots.release()

    async def request(self, method: str, target: bytes, headers: Sequence[tuple[str, str]],
                      body: AsyncIterator[bytes] | None, *, chunked: bool) -> Answer:
        """Send one request (``headers`` already filtered by the proxy, ``Host`` first) and read the answer's
        head; the body streams from the returned :class:`Answer`. ``chunked``: frame ``body`` as chunks."""
        lines = [f"{method} {target.decode('latin-1')} HTTP/1.1", *(f"{k}: {v}" for k, v in headers)]
        if chunked:
            lines.append("transfer-encoding: chunked")
        text = "\r\n".join(lines)
        # Every CR and LF must be one of our separators, and no NUL: else a value would split the request.
        if text.count("\r") != len(lines) - 1 or text.count("\n") != len(lines) - 1 or "\0" in text \
                or text.count("\r\n") != len(lines) - 1:
            raise UpstreamError("a request header holds a line break")
        head = (text + "\r\n\r\n").encode("latin-1")
        if self._slots.locked():
            try:
                await asyncio.wait_for(self._slots.acquire(), self.connect_timeout)
            except TimeoutError:
                raise UpstreamTimeout("no upstream connection free in time") from None
        else:
            await self._slots.acquire()
        try:
            return await self._send(method, head, body, chunked)
        except BaseException:
            self._slots.release()
            raise

    async def _send(self, method: str, head: bytes, body: AsyncIterator[bytes] | None, chunked: bool) -> Answer:
        conn = self._reusable()
        for attempt in (1, 2):
            if conn is None:
                conn = await self._connect()
            conn._reset(head=method == "HEAD")
            try:
                if body is None:
                    await conn.write(head, self.write_timeout)
                else:
                    await self._write_body(conn, head, body, chunked)
                await conn.read_head(self.read_timeout)
                return Answer(self, conn)
            except UpstreamTimeout:
                self._discard(conn)
                raise
            except UpstreamError:
                self._discard(conn)
                if attempt == 1 and conn.reused and body is None and not conn.received_any:
                    conn = None  # the upstream closed it while idle: the bodiless request is safe to replay
                    continue
                raise
            except BaseException:
                self._discard(conn)
                raise
        raise AssertionError("unreachable")

    async def _write_body(self, conn: _Connection, head: bytes, body: AsyncIterator[bytes], chunked: bool) -> None:
        pending = head
        async for chunk in body:
            if not chunk:
                continue  # an empty chunk would be the chunked body's last one
            if chunked:
                pending += b"%x\r\n" % len(chunk) + chunk + b"\r\n"
            else:
                pending += chunk
            await conn.write(pending, self.write_timeout)
            pending = b""
        if chunked:
            pending += b"0\r\n\r\n"
        if pending:
            await conn.write(pending, self.write_timeout)

    async def aclose(self) -> None:
        for conn in list(self._open):
            conn._close()
        self._open.clear()
        self._idle.clear()
