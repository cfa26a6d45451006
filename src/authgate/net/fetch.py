"""The one SSRF-guarded HTTP fetcher every server-side request goes through (client ID metadata documents,
``jwks_uri``, software-statement issuer keys, webhooks). See the reference note §8 rows 1-6.

How the guard works: the URL must be ``https`` (plain ``http`` only to loopback, and only when loopback is
allowed, for development). The host name is resolved once, inside the connect step of a custom httpx
transport; if *any* resolved address is special-use (RFC 6890 and the IANA registries: RFC 1918, loopback,
link-local, CGNAT, benchmarking, documentation, multicast, reserved, IPv6 ULA and link-local, and the
v4-mapped and NAT64 forms of those) the fetch is refused. Otherwise the socket is opened to the vetted IP
itself, so a second DNS answer (rebinding) is never consulted; the connected peer is checked again. TLS
still verifies the certificate against the host *name* (SNI and ``Host`` come from the URL).

Redirects are never followed, the whole fetch has one deadline, the body is capped by ``Content-Length``
and while streaming, and compressed bodies are refused (a cap on encoded bytes must equal the decoded
size). Every failure is one ``FetchError`` whose message says nothing about reachability; ``reason`` is
for the operator's log only.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import anyio
import httpcore
import httpx

DEFAULT_TIMEOUT = 3.0
DEFAULT_MAX_BYTES = 64 * 1024
MAX_ADDRESSES = 8

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: Turns a host name and port into addresses; injectable so tests can stand in for DNS.
Resolve = Callable[[str, int], Awaitable[list[IPAddress]]]

_BLOCKED_V4 = tuple(
    ipaddress.IPv4Network(net)
    for net in (
        "0.0.0.0/8",  # "this network"
        "10.0.0.0/8",  # RFC 1918
        "100.64.0.0/10",  # CGNAT, RFC 6598
        "127.0.0.0/8",  # loopback (allowed separately in development)
        "169.254.0.0/16",  # link-local, cloud metadata
        "172.16.0.0/12",  # RFC 1918
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # TEST-NET-1
        "192.88.99.0/24",  # 6to4 relay anycast (deprecated)
        "192.168.0.0/16",  # RFC 1918
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # TEST-NET-2
        "203.0.113.0/24",  # TEST-NET-3
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, broadcast
    )
)
#: IPv6 is an allowlist: global unicast only, minus the special blocks carved out of it.
_GLOBAL_V6 = ipaddress.IPv6Network("2000::/3")
_BLOCKED_V6 = tuple(
    ipaddress.IPv6Network(net)
    for net in (
        "2001::/23",  # IETF protocol assignments (Teredo, ORCHID, benchmarking, ...)
        "2001:db8::/32",  # documentation
        "2002::/16",  # 6to4: embeds arbitrary IPv4
        "3fff::/20",  # documentation (RFC 9637)
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class FetchError(Exception):
    """A server-side fetch failed or was refused. ``str()`` is always the same; ``reason`` is for logs."""

    def __init__(self, reason: str) -> None:
        super().__init__("fetch failed")
        self.reason = reason


@dataclass(frozen=True)
class FetchResponse:
    status: int
    headers: httpx.Headers
    body: bytes


def address_allowed(ip: IPAddress, *, allow_loopback: bool = False) -> bool:
    """True if a server-side fetch may connect to ``ip``. ``allow_loopback`` adds loopback and nothing else."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return address_allowed(ip.ipv4_mapped, allow_loopback=allow_loopback)
        if ip in _NAT64:  # translated by a gateway: judge the embedded IPv4 address, never as loopback
            return address_allowed(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip == ipaddress.IPv6Address("::1"):
            return allow_loopback
        return ip in _GLOBAL_V6 and not any(ip in net for net in _BLOCKED_V6)
    if ip.is_loopback:
        return allow_loopback
    return not any(ip in net for net in _BLOCKED_V4) and ip.is_global


async def system_resolve(host: str, port: int) -> list[IPAddress]:
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    out: list[IPAddress] = []
    for *_, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if ip not in out:
            out.append(ip)
    return out


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """Resolves once, vets every address, connects to a vetted IP, then checks the connected peer."""

    def __init__(self, resolve: Resolve, *, allow_loopback: bool, loopback_only: bool,
                 inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._resolve = resolve
        self._allow_loopback = allow_loopback
        self._loopback_only = loopback_only
        self._inner = inner or httpcore.AnyIOBackend()

    def _allowed(self, ip: IPAddress) -> bool:
        if self._loopback_only:
            mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
            return (mapped or ip).is_loopback and self._allow_loopback
        return address_allowed(ip, allow_loopback=self._allow_loopback)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = (await self._resolve(host.strip("[]"), port))[:MAX_ADDRESSES]
        except (OSError, ValueError, UnicodeError) as exc:
            raise FetchError(f"resolve: {type(exc).__name__}") from None
        if not addresses:
            raise FetchError("resolve: no address")
        if not all(self._allowed(ip) for ip in addresses):
            raise FetchError("blocked address")
        for ip in addresses:
            try:
                stream = await self._inner.connect_tcp(str(ip), port, timeout=timeout, socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout, OSError):
                continue
            peer = stream.get_extra_info("server_addr")
            try:
                peer_ip = ipaddress.ip_address(str(peer[0]).split("%", 1)[0])
            except (TypeError, IndexError, ValueError):
                peer_ip = None
            if peer_ip is None or peer_ip != ip or not self._allowed(peer_ip):
                await stream.aclose()
                raise FetchError("blocked peer")
            return stream
        raise FetchError("connect failed")

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore interface
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise FetchError("unix sockets are not fetched")

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


class _Body(httpx.AsyncByteStream):
    def __init__(self, stream: Iterable[bytes] | AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        stream = self._stream
        assert isinstance(stream, AsyncIterable)
        async for chunk in stream:
            yield chunk

    async def aclose(self) -> None:
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            await close()


class _PinnedTransport(httpx.AsyncBaseTransport):
    """An httpx transport over an httpcore pool whose only way onto the network is ``_PinnedBackend``."""

    def __init__(self, backend: _PinnedBackend, ssl_context: ssl.SSLContext) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context, network_backend=backend, max_connections=1, http1=True, http2=False
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        response = await self._pool.handle_async_request(core_request)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Body(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


class Fetcher:
    """GETs a URL through the guard. ``transport`` replaces the network entirely (tests and the dev demo
    serve documents in-process with ``httpx.MockTransport``); the URL checks, size cap, deadline and
    no-redirect rule still apply."""

    def __init__(
        self,
        *,
        allow_loopback: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
        resolve: Resolve = system_resolve,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.allow_loopback = allow_loopback
        self.timeout = timeout
        self._transport = transport
        self._resolve = resolve
        self._ssl_context = ssl_context

    def _check_url(self, url: str) -> bool:
        """Return whether the URL is plain http (loopback only); raise FetchError if it is not fetchable."""
        if any(ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in url) or "\\" in url:
            raise FetchError("malformed url")
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError on a junk port
        except ValueError:
            raise FetchError("malformed url") from None
        if not parts.hostname or "@" in parts.netloc:
            raise FetchError("url has no host or has userinfo")
        if parts.scheme == "https":
            return False
        if parts.scheme == "http" and self.allow_loopback:
            return True  # the backend then refuses anything that is not loopback
        raise FetchError("scheme not allowed")

    def _make_transport(self, loopback_only: bool) -> httpx.AsyncBaseTransport:
        if self._transport is not None:
            return self._transport
        backend = _PinnedBackend(self._resolve, allow_loopback=self.allow_loopback, loopback_only=loopback_only)
        return _PinnedTransport(backend, self._ssl_context or httpx.create_ssl_context())

    async def get(
        self, url: str, *, max_bytes: int = DEFAULT_MAX_BYTES, accept: str = "application/json"
    ) -> FetchResponse:
        return await self.request("GET", url, headers={"Accept": accept}, max_bytes=max_bytes)

    async def post(self, url: str, *, content: bytes, headers: dict[str, str],
                   max_bytes: int = 4096) -> FetchResponse:
        """POST ``content`` (webhooks, the SMS API); the response body is read up to ``max_bytes``."""
        return await self.request("POST", url, headers=headers, content=content, max_bytes=max_bytes)

    async def request(self, method: str, url: str, *, headers: dict[str, str], content: bytes | None = None,
                      max_bytes: int = DEFAULT_MAX_BYTES) -> FetchResponse:
        """One request through the guard; any failure is a :class:`FetchError` that reveals nothing."""
        loopback_only = self._check_url(url)
        sent = {"Accept-Encoding": "identity", "User-Agent": "authgate", **headers}
        try:
            with anyio.fail_after(self.timeout):
                async with httpx.AsyncClient(
                    transport=self._make_transport(loopback_only),
                    follow_redirects=False,
                    trust_env=False,
                    timeout=self.timeout,
                ) as http, http.stream(method, url, headers=sent, content=content) as response:
                    return await _read(response, max_bytes)
        except FetchError:
            raise
        except TimeoutError:
            raise FetchError("timeout") from None
        except Exception as exc:  # anything else (TLS, protocol, connection) looks the same to the caller
            raise FetchError(f"transport: {type(exc).__name__}") from None


async def _read(response: httpx.Response, max_bytes: int) -> FetchResponse:
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise FetchError("compressed body")
    length = response.headers.get("Content-Length")
    if length is not None and (not length.strip().isdigit() or int(length) > max_bytes):
        raise FetchError("body too large")
    body = bytearray()
    async for chunk in _raw_chunks(response):
        body += chunk
        if len(body) > max_bytes:
            raise FetchError("body too large")
    return FetchResponse(status=response.status_code, headers=response.headers, body=bytes(body))


async def _raw_chunks(response: httpx.Response) -> AsyncIterator[bytes]:
    if response.is_stream_consumed:  # in-process transports (MockTransport) hand over a body already read
        yield response.content
        return
    async for chunk in response.aiter_raw():
        yield chunk


def cache_lifetime(headers: httpx.Headers, *, default: int, minimum: int, maximum: int) -> int:
    """Seconds to keep a fetched document: ``Cache-Control: max-age`` clamped to [minimum, maximum];
    ``no-store``/``no-cache`` count as zero (so the minimum); ``default`` when no max-age is given."""
    seconds = default
    for directive in headers.get("Cache-Control", "").lower().split(","):
        name, _, value = directive.strip().partition("=")
        if name in ("no-store", "no-cache"):
            seconds = 0
            break
        if name == "max-age":
            value = value.strip().strip('"')
            seconds = int(value) if value.isdigit() else 0
    return max(minimum, min(maximum, seconds))
