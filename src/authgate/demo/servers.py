"""Running ASGI apps on loopback inside the current event loop: for the demo and for interop tests, whose
peers (the mcp SDK, the conformance suite) talk over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import time
from collections.abc import AsyncIterator
from typing import Any


def free_port() -> int:
    """A loopback port that is free now, chosen below the kernel's ephemeral range (32768+ on Linux), so an
    outgoing connection elsewhere on the machine cannot take it between this check and the server's bind."""
    for _ in range(200):
        port = secrets.randbelow(32768 - 20000) + 20000
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def serve(app: Any, port: int, start_timeout: float = 15.0) -> AsyncIterator[str]:
    """Serve ``app`` on 127.0.0.1:``port`` until the block ends; yields the base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError(f"server on port {port} stopped during start-up")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"server on port {port} did not start")
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)
