"""How ``authgate gateway`` runs under uvicorn: the httptools HTTP/1.1 parser, uvloop where installed, no access
log, no ``Date``/``Server`` headers of its own (the upstream's pass through), and writes coalesced per loop tick.

Why coalesce: on the proxied path a small answer is two ASGI messages (``http.response.start``, then the body),
and uvicorn writes each to the socket at once — two ``send()`` calls and two TCP segments for one answer. On
loopback a ``send()`` costs tens of microseconds of CPU (it runs the receiver's network stack too), the
largest single item in the gateway's per-request profile (benchmarks/gateway_overhead.py). The transport below
gathers everything written during one event-loop step and sends it with one call at the end of that step; a
streamed body (server-sent events) still leaves as soon as the step that produced it ends, so nothing waits
for more data.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CoalescingTransport:
    """Wraps a transport: :meth:`write` buffers until the end of the current loop step (one ``call_soon``), then
    writes once; ``close`` sends what is buffered first, ``abort`` drops it. Everything else is the wrapped
    transport's."""

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(bytes(data))

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if not self._pending:
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(len(p) for p in self._pending)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol writing through a :class:`CoalescingTransport`."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        wrapped = CoalescingTransport(cast(asyncio.Transport, transport), asyncio.get_running_loop())
        super().connection_made(cast(asyncio.Transport, wrapped))


def uvicorn_options(log_level: str) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run``/``uvicorn.Config`` serving the gateway app."""
    return {"log_level": log_level, "proxy_headers": False, "server_header": False, "date_header": False,
            "lifespan": "on", "log_config": None, "access_log": False, "loop": "auto",
            "http": CoalescingHttpToolsProtocol}
