"""A streaming reverse proxy (ASGI app → any upstream HTTP API over a pooled ``httpx.AsyncClient``).

Behind :class:`~authgate.policy.PolicyMiddleware` it forwards what the policy let in:

* **Request headers**: hop-by-hop fields (RFC 9110 §7.6.1: ``Connection`` and every field it names,
  ``Keep-Alive``, ``Proxy-Connection``, ``TE``, ``Trailer``, ``Transfer-Encoding``, ``Upgrade``,
  ``Proxy-Authorization``) and ``Host`` are dropped; so is **every credential and payment header** —
  ``Authorization``, ``Signature``, ``Signature-Input``, ``Signature-Key``, ``Content-Digest`` when the request
  was signed, ``PAYMENT-*``, ``X-PAYMENT``, ``SIGN-IN-WITH-X``, ``AAuth-*``, ``Authgate-*`` (mandates,
  attestations, approval ids), ``Cookie`` (unless ``strip_cookies=False``, for an upstream with its own cookie
  sessions) — and every ``X-Authgate-*`` header the client sent (no forged identity). The verified identity is
  added in ``X-Authgate-*`` headers (:mod:`authgate.gateway.identity`), with ``Via`` and ``X-Forwarded-For/-Proto/
  -Host``. With ``upstream_token`` (``[token_exchange]``, :mod:`authgate.gateway.exchange`) the only
  ``Authorization`` the upstream sees is a token exchanged for its own audience; a refused exchange is answered
  here and nothing is forwarded.
* **Bodies** stream both ways unbuffered: the request body as it arrives (``max_body`` enforced from
  ``Content-Length`` up front and by counting), the response chunk by chunk as the upstream sends it (no content
  decoding, so ``Content-Encoding`` and length pass unchanged; only chunked framing is re-done on our hop), so
  server-sent events reach the client as the upstream writes them; an answer with a ``Content-Length`` of at most
  64 KiB is read whole first and sent in one message (:mod:`authgate.gateway.upstream`). (x402 routes with
  authorization-flow payments are buffered by the paywall, which must see the status before settling: streaming
  routes use ``flow = "upfront"``, enforced at load.)
* **Failures**: cannot connect or a broken answer → ``502 {"error": "upstream_unavailable"}``; a connect,
  write or first-byte timeout → ``504 {"error": "upstream_timeout"}``; a body over ``max_body`` → ``413``. A
  failure after the response started aborts the connection (the client sees a truncated message, never a
  spliced error).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import httpx
from starlette.types import Receive, Scope, Send

from authgate.errors import OAuthError
from authgate.gateway.identity import PREFIX, identity_headers
from authgate.gateway.upstream import UpstreamError, UpstreamPool, UpstreamTimeout
from authgate.policy.identity import STATE_KEY, Identity

logger = logging.getLogger("authgate.gateway")

IdentityMode = Literal["signed", "plain"]
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
                        "upgrade", "proxy-authorization", "proxy-authenticate"})
CREDENTIALS = frozenset({"authorization", "signature", "signature-input", "signature-key", "x-payment",
                         "sign-in-with-x"})
#: Headers some frameworks honour to change the method: the policy judged the request's own method.
METHOD_OVERRIDES = frozenset({"x-http-method-override", "x-http-method", "x-method-override"})
#: ``authgate-``: the trust profiles' request headers (mandates, attestations, approvals: authgate.trust.wire).
CREDENTIAL_PREFIXES = ("payment-", "aauth-", "authgate-", PREFIX)
_SIGNED = (b"signature", b"signature-input", b"signature-key")
_REPLACED = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded", "via"})


class _BodyTooLarge(Exception):
    pass


TIMEOUTS = (httpx.TimeoutException, UpstreamTimeout)
UPSTREAM_ERRORS = (httpx.HTTPError, UpstreamError)


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: AsyncIterator[bytes] | None  # None when ``whole`` holds all of it
    close: Callable[[], Awaitable[None]]
    whole: bytes | None = None  # the entire body of a small answer, read before answering (one write)


def _connection_tokens(headers: list[tuple[bytes, bytes]]) -> set[str]:
    out: set[str] = set()
    for k, v in headers:
        if k.lower() == b"connection":
            out.update(t.strip().lower() for t in v.decode("latin-1").split(",") if t.strip())
    return out


_DROP = HOP_BY_HOP | CREDENTIALS | METHOD_OVERRIDES | _REPLACED | {"host"}
_DROP_WITH_COOKIE = _DROP | {"cookie"}
_SIGNATURE_NAMES = frozenset(n.decode() for n in _SIGNED)
_HOP_BY_HOP_BYTES = frozenset(h.encode() for h in HOP_BY_HOP)


def forward_request_headers(scope: Scope, *, strip_cookies: bool = True) -> list[tuple[str, str]]:
    """The client's headers minus hop-by-hop, ``Host``, credentials and identity headers; ``Cookie`` too unless
    ``strip_cookies`` is False (a cookie is a credential: an upstream with its own sessions opts out)."""
    pairs = [(k.decode("latin-1").lower(), v) for k, v in scope.get("headers", ())]
    drop = _DROP_WITH_COOKIE if strip_cookies else _DROP
    extra: set[str] = set()
    for name, value in pairs:
        if name == "connection":  # and every field it names (RFC 9110 §7.6.1)
            extra.update(t.strip().lower() for t in value.decode("latin-1").split(",") if t.strip())
        elif name in _SIGNATURE_NAMES:
            extra.add("content-digest")  # covered by the agent's signature: ours, not the upstream's
        elif name == "transfer-encoding":
            extra.add("content-length")  # RFC 9112 §6.3: chunked wins; the body goes on chunked, never re-framed
    if extra:
        drop = drop | extra
    return [(name, v.decode("latin-1")) for name, v in pairs
            if name not in drop and not name.startswith(CREDENTIAL_PREFIXES)]


def forward_response_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    drop = _HOP_BY_HOP_BYTES
    if any(k.lower() == b"connection" for k, _ in headers):
        drop = drop | {t.encode("latin-1") for t in _connection_tokens(headers)}
    out = [(k, v) for k, v in headers if k.lower() not in drop]
    out.append((b"via", b"1.1 authgate"))
    return out


class Proxy:
    """The ASGI app that forwards to ``upstream`` (``http(s)://host[:port][/base]``). ``identity_secret``: the
    HMAC key for ``signed`` identity headers (required then); ``plain`` sends them unsigned."""

    def __init__(self, upstream: str, *, identity: IdentityMode = "signed", identity_secret: bytes | None = None,
                 strip_cookies: bool = True, max_body: int = 10 * 1024 * 1024, connect_timeout: float = 5.0,
                 read_timeout: float = 60.0, write_timeout: float = 60.0, max_connections: int = 100,
                 transport: httpx.AsyncBaseTransport | None = None,
                 clock: Callable[[], float] = time.time,
                 upstream_token: Callable[[Scope], Awaitable[str | None]] | None = None) -> None:
        upstream = upstream.rstrip("/")
        url = httpx.URL(upstream)
        if url.scheme not in ("http", "https") or not url.host or url.query or url.fragment:
            raise ValueError(f"upstream must be an http(s) URL without query or fragment: {upstream!r}")
        if identity not in ("signed", "plain"):
            raise ValueError(f"identity must be 'signed' or 'plain', not {identity!r}")
        if identity == "signed" and (identity_secret is None or len(identity_secret) < 32):
            raise ValueError("signed identity headers need a secret of at least 32 bytes")
        self.upstream = upstream
        self.identity: IdentityMode = identity
        self.secret = identity_secret if identity == "signed" else None
        self.strip_cookies = strip_cookies
        #: The credential the upstream gets (:class:`authgate.gateway.exchange.UpstreamTokens`): a token of its
        #: own per request, or None for none; an OAuthError it raises is the answer, and nothing is forwarded.
        self.upstream_token = upstream_token
        self.max_body = max_body
        self.clock = clock
        self.timeout = {"connect": connect_timeout, "read": read_timeout, "write": write_timeout,
                        "pool": connect_timeout}
        # By default our own HTTP/1.1 pool (:mod:`authgate.gateway.upstream`): a proxy needs none of httpx's
        # client machinery, and httpcore's cost ten times our own per-request work (benchmarks/gateway_overhead.py).
        # ``transport`` (an httpx transport, e.g. ASGITransport in tests) takes the httpx path instead; both relay
        # the same way.
        self.transport = transport
        self.pool: UpstreamPool | None = None
        if transport is None:
            port = url.port or (443 if url.scheme == "https" else 80)
            self.pool = UpstreamPool(url.scheme, url.host, port, max_connections=max_connections,
                                     connect_timeout=connect_timeout, read_timeout=read_timeout,
                                     write_timeout=write_timeout)
            self._host = url.netloc.decode("ascii")
            self._base = url.raw_path.rstrip(b"/")

    async def aclose(self) -> None:
        if self.pool is not None:
            await self.pool.aclose()
        if self.transport is not None:
            await self.transport.aclose()

    async def _open(self, method: str, path: str, headers: list[tuple[str, str]],
                    body: AsyncIterator[bytes] | None) -> _Answer:
        """Send the request upstream; the answer's status, raw headers, raw body stream and closer."""
        if self.pool is not None:
            chunked = body is not None and not any(k == "content-length" for k, _ in headers)
            answer = await self.pool.request(method, self._base + path.encode("latin-1"),
                                             [("host", self._host), *headers], body, chunked=chunked)
            try:
                whole = None if method == "HEAD" else await answer.small_body()
            except BaseException:
                await answer.aclose()
                raise
            return _Answer(answer.status, answer.headers, None if whole is not None else answer.body(),
                           answer.aclose, whole)
        assert self.transport is not None
        response = await self.transport.handle_async_request(httpx.Request(
            method, self.upstream + path, headers=headers, content=body, extensions={"timeout": self.timeout}))
        if response.is_stream_consumed:  # an in-memory transport read it already

            async def once() -> AsyncIterator[bytes]:
                yield response.content

            return _Answer(response.status_code, list(response.headers.raw), once(), response.aclose)
        return _Answer(response.status_code, list(response.headers.raw), response.aiter_raw(), response.aclose)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1003, "reason": "not proxied"})
            return
        method: str = scope["method"]
        target = scope.get("raw_path") or scope["path"].encode()
        query: bytes = scope.get("query_string", b"")
        path = target.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")
        headers = forward_request_headers(scope, strip_cookies=self.strip_cookies)
        identity = scope.get("state", {}).get(STATE_KEY)
        fields = identity.as_dict() if isinstance(identity, Identity) else {"mechanism": "public"}
        headers += identity_headers(fields, method=method, target=path, secret=self.secret, now=self.clock())
        headers += self._forwarded(scope)
        lengths = [v for k, v in headers if k == "content-length"]
        if len(lengths) > 1:  # ambiguous framing: refuse rather than let two servers read two bodies
            await _json(send, 400, {"error": "invalid_request", "error_description": "Malformed Content-Length"})
            return
        declared = lengths[0] if lengths else None
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            await _json(send, 413 if declared.isdigit() else 400,
                        {"error": "invalid_request", "error_description": "Request body too large"
                         if declared.isdigit() else "Malformed Content-Length"})
            return
        has_body = declared not in (None, "0") or any(k == b"transfer-encoding" for k, _ in scope["headers"])
        if self.upstream_token is not None:
            try:
                token = await self.upstream_token(scope)
            except OAuthError as exc:
                status, extra, payload = exc.render()
                await _send(send, status, extra, payload)
                return
            if token is not None:
                headers.append(("authorization", "Bearer " + token))
        try:
            answer = await self._open(method, path, headers, self._body(receive) if has_body else None)
        except _BodyTooLarge:
            await _json(send, 413, {"error": "invalid_request", "error_description": "Request body too large"})
            return
        except TIMEOUTS as exc:
            logger.warning("upstream timeout: %s %s (%s)", method, scope["path"], exc.__class__.__name__)
            await _json(send, 504, {"error": "upstream_timeout",
                                    "error_description": "The upstream API did not answer in time"})
            return
        except UPSTREAM_ERRORS as exc:
            logger.warning("upstream unavailable: %s %s (%s)", method, scope["path"], exc.__class__.__name__)
            await _json(send, 502, {"error": "upstream_unavailable",
                                    "error_description": "The upstream API could not be reached"})
            return
        try:
            await send({"type": "http.response.start", "status": answer.status,
                        "headers": forward_response_headers(answer.headers)})
            if method == "HEAD":
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            elif answer.body is None:  # all of it is here: one message, no stream
                await send({"type": "http.response.body", "body": answer.whole or b"", "more_body": False})
            else:
                async for chunk in answer.body:
                    if chunk:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except UPSTREAM_ERRORS as exc:
            # Mid-body: the status is out; returning without finishing makes the server abort the connection.
            logger.warning("upstream failed mid-response: %s %s (%s)", method, scope["path"],
                           exc.__class__.__name__)
        finally:
            await answer.close()

    async def _body(self, receive: Receive) -> AsyncIterator[bytes]:
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise _BodyTooLarge()
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return

    def _forwarded(self, scope: Scope) -> list[tuple[str, str]]:
        out = [("via", "1.1 authgate")]
        earlier = [v.decode("latin-1") for k, v in scope.get("headers", ()) if k.lower() == b"x-forwarded-for"]
        client = scope.get("client")
        chain = [*earlier, client[0]] if client else earlier
        if chain:
            out.append(("x-forwarded-for", ", ".join(chain)))
        out.append(("x-forwarded-proto", scope.get("scheme", "http")))
        host = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k.lower() == b"host"), None)
        if host:
            out.append(("x-forwarded-host", host))
        return out

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _send(send: Send, status: int, headers: dict[str, str], payload: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()),
        (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


async def _json(send: Send, status: int, body: dict[str, str]) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"cache-control", b"no-store"),
        (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})
