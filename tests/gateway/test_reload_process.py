"""SIGHUP reloads a real ``authgate gateway`` process without dropping connections: a server-sent-event stream in
flight through the gateway survives the reload and completes, a new request sees the new policy, an invalid file
leaves the running policy working and says why in the log. Also ``authgate serve`` with a mounted gateway."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.ops.test_operations import sample
from tests.servers import free_port, serve

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGHUP is POSIX")

FILE = """
[gateway]
upstream = "http://127.0.0.1:{up}"
public_url = "http://127.0.0.1:{gw}"
identity = "plain"

[oauth]
issuer = "https://as.invalid"

[[routes]]
path = "/events"
stream = true
  [[routes.allow]]
  mechanism = "public"

[[routes]]
path = "/notes"
  [[routes.allow]]
  mechanism = "{notes}"
{scopes}
"""


def gateway_file(up: int, gw: int, notes: str) -> str:
    scopes = '  scopes = ["notes:read"]' if notes == "oauth" else ""
    return FILE.format(up=up, gw=gw, notes=notes, scopes=scopes)


class Upstream:
    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def events(self, _: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            yield b"data: one\n\n"
            await self.release.wait()
            yield b"data: two\n\n"

        return StreamingResponse(body(), media_type="text/event-stream")

    async def notes(self, request: Request) -> Response:
        return JSONResponse({"notes": [], "request_id": request.headers.get("x-request-id")})

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/events", self.events), Route("/notes", self.notes)])


class Log:
    """The process's JSON log lines (stderr), read as they come."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self.stream = stream
        self.lines: list[dict[str, Any]] = []

    async def until(self, logger: str, starts: str) -> dict[str, Any]:
        while True:
            raw = await asyncio.wait_for(self.stream.readline(), 30)
            assert raw, f"the process ended before logging {starts!r}; it said {self.lines}"
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            self.lines.append(entry)
            if entry.get("logger") == logger and str(entry.get("msg", "")).startswith(starts):
                return entry


async def _wait_serving(http: httpx.AsyncClient, path: str, process: asyncio.subprocess.Process) -> None:
    for _ in range(300):
        try:
            await http.get(path)
            return
        except httpx.TransportError:
            assert process.returncode is None, "the process exited during start-up"
            await asyncio.sleep(0.1)
    raise AssertionError("the process did not start serving")


async def test_sighup_reloads_the_gateway_and_the_stream_in_flight_completes(tmp_path: Path) -> None:
    up, gw = free_port(), free_port()
    path = tmp_path / "gateway.toml"
    path.write_text(gateway_file(up, gw, "oauth"))
    upstream = Upstream()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "authgate.cli", "gateway", "--config", str(path), "--port", str(gw),
        "--log-format", "json", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert process.stderr is not None
    log = Log(process.stderr)
    try:
        async with serve(upstream.app(), up), httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw}") as http:
            await _wait_serving(http, "/_authgate/health", process)
            assert (await http.get("/notes")).status_code == 401  # version 1: a token is needed
            async with http.stream("GET", "/events") as stream:
                chunks = stream.aiter_raw()
                assert await anext(chunks) == b"data: one\n\n"

                path.write_text(gateway_file(up, gw, "public"))
                process.send_signal(signal.SIGHUP)
                await log.until("authgate.gateway", "gateway reloaded")
                opened = await http.get("/notes", headers={"X-Request-ID": "after-reload-1"})
                assert opened.status_code == 200  # version 2: public
                assert opened.json() == {"notes": [], "request_id": "after-reload-1"}
                assert opened.headers["x-request-id"] == "after-reload-1"

                path.write_text(gateway_file(up, gw, "public").replace('mechanism = "public"\n\n',
                                                                        'mechanism = "kerberos"\n\n'))
                process.send_signal(signal.SIGHUP)
                failed = await log.until("authgate.gateway", "gateway reload failed")
                assert "still serving the previous configuration" in failed["msg"]
                assert "unknown mechanism 'kerberos'" in failed["msg"] and str(path) in failed["msg"]
                assert failed["level"] == "error"
                assert (await http.get("/notes")).status_code == 200  # version 2 still in force

                upstream.release.set()
                rest = b"".join([chunk async for chunk in chunks])
            assert stream.status_code == 200 and rest == b"data: two\n\n"  # survived two reloads
            metrics = (await http.get("/_authgate/metrics")).text
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()
        remaining = await process.stderr.read()
    assert sample(metrics, "authgate_gateway_config_reloads_total", outcome="applied") == 1
    assert sample(metrics, "authgate_gateway_config_reloads_total", outcome="rejected") == 1
    assert sample(metrics, "authgate_gateway_config_last_reload_successful") == 0
    access = [e for e in log.lines if e.get("logger") == "authgate.access"]
    assert any(e.get("request_id") == "after-reload-1" and e.get("path") == "/notes" and e.get("status") == 200
               for e in access), access
    assert b"Traceback" not in remaining


SERVE_FILE = """
[gateway]
upstream = "http://127.0.0.1:{up}"
public_url = "http://127.0.0.1:{port}"
identity = "plain"

[oauth]
issuer = "http://127.0.0.1:{port}"

[[routes]]
path = "/notes"
  [[routes.allow]]
  mechanism = "{notes}"
{scopes}
"""


async def test_sighup_reloads_the_gateway_mounted_in_authgate_serve(tmp_path: Path) -> None:
    up, port = free_port(), free_port()
    path = tmp_path / "gateway.toml"

    def write(notes: str) -> None:
        scopes = '  scopes = ["notes:read"]' if notes == "oauth" else ""
        path.write_text(SERVE_FILE.format(up=up, port=port, notes=notes, scopes=scopes))

    write("oauth")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "AUTHGATE_DATA_DIR": str(tmp_path),
           "AUTHGATE_GATEWAY_CONFIG": str(path), "AUTHGATE_LOG_FORMAT": "json"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "authgate.cli", "serve", "--port", str(port), stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE, env=env)
    assert process.stderr is not None
    log = Log(process.stderr)
    try:
        async with serve(Upstream().app(), up), httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            await _wait_serving(http, "/health", process)
            await log.until("authgate", "SIGHUP reloads the gateway file")
            assert (await http.get("/notes")).status_code == 401
            write("public")
            process.send_signal(signal.SIGHUP)
            await log.until("authgate.gateway", "gateway reloaded")
            assert (await http.get("/notes")).status_code == 200
            write("nonsense")
            process.send_signal(signal.SIGHUP)
            await log.until("authgate.gateway", "gateway reload failed")
            assert (await http.get("/notes")).status_code == 200
            assert (await http.get("/.well-known/oauth-authorization-server")).status_code == 200  # server unharmed
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()
