"""A small closed-loop HTTP/1.1 load generator shared by the benchmarks, so that every server in a comparison
is driven by the very same client, connection count and request bytes.

Each of ``connections`` keep-alive connections sends one request, reads the whole answer and sends the next;
latency is measured per request. Requests are prebuilt bytes (one callable makes the i-th request), answers are
parsed only as far as framing needs (status line, ``Content-Length`` or chunked), so the generator costs a
fraction of what the servers under test do. It runs on uvloop when that is installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Result:
    label: str
    ok: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    first_error: str = ""

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        """The p-th percentile latency in milliseconds (nearest rank)."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        rank = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))
        return ordered[rank] * 1000

    @property
    def p50(self) -> float:
        return self.percentile(50)

    @property
    def p99(self) -> float:
        return self.percentile(99)

    def line(self) -> str:
        bad = f"  errors {self.errors} ({self.first_error[:60]})" if self.errors else ""
        return (f"  {self.label:<44} {self.rate:>9,.0f} /s   p50 {self.p50:>7.2f} ms   p99 {self.p99:>7.2f} ms"
                f"{bad}")


def request(method: str, path: str, host: str, *, body: bytes = b"", headers: dict[str, str] | None = None
            ) -> bytes:
    """One HTTP/1.1 request as bytes (keep-alive)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = -1
    chunked = False
    for raw in head.split(b"\r\n")[1:]:
        name, _, value = raw.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
        return status, body
    return status, (await reader.readexactly(length) if length > 0 else b"")


async def _connection(host: str, port: int, make: Callable[[int], bytes], counter: list[int], total: int,
                      expect: tuple[int, ...], result: Result, check: Callable[[bytes], bool] | None) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while True:
            i = counter[0]
            if i >= total:
                return
            counter[0] = i + 1
            payload = make(i)
            start = time.perf_counter()
            writer.write(payload)
            try:
                status, body = await _read_answer(reader)
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                result.errors += 1
                result.first_error = result.first_error or f"connection: {exc!r}"
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                continue
            result.latencies.append(time.perf_counter() - start)
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if status in expect and (check is None or check(body)):
                result.ok += 1
            else:
                result.errors += 1
                result.first_error = result.first_error or f"{status} {body[:120]!r}"
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def drive(label: str, host: str, port: int, make: Callable[[int], bytes], *, total: int,
                connections: int, expect: tuple[int, ...] = (200,), warmup: int = 200,
                check: Callable[[bytes], bool] | None = None) -> Result:
    """Send ``total`` requests over ``connections`` connections after ``warmup`` unmeasured ones."""
    if warmup:
        await drive("warmup", host, port, make, total=warmup, connections=connections, expect=expect, warmup=0)
    result = Result(label)
    counter = [0]
    start = time.perf_counter()
    await asyncio.gather(*(_connection(host, port, make, counter, total, expect, result, check)
                           for _ in range(connections)))
    result.seconds = time.perf_counter() - start
    return result


def run(coro: object) -> object:
    """asyncio.run on uvloop when available (the generator should not be the bottleneck)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)  # type: ignore[arg-type]
    return uvloop.run(coro)  # type: ignore[arg-type]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
