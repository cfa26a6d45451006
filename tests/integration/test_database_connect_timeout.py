"""A PostgreSQL host that accepts TCP but never answers (a hung server, a half-open firewall) is given up on after
the engine's connect timeout, with the one-line DatabaseUnavailable, instead of asyncpg's 60 s default."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest

from authgate.config import DatabaseUnavailable
from authgate.store.engine import check_reachable, make_engine


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A listening socket that completes the TCP handshake (the kernel's backlog) and then never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield server.getsockname()[1]
    server.close()


async def test_a_silent_database_server_is_given_up_on_after_the_connect_timeout(silent_port: int) -> None:
    engine = make_engine(f"postgresql+asyncpg://authgate@127.0.0.1:{silent_port}/authgate", connect_timeout=0.5)
    started = time.monotonic()
    try:
        # Without a timeout of our own asyncpg waits 60 s: wait_for would then fail the test with TimeoutError.
        with pytest.raises(DatabaseUnavailable) as err:
            await asyncio.wait_for(check_reachable(engine), 10)
    finally:
        await engine.dispose()
    assert time.monotonic() - started < 5
    assert str(err.value) == f"the database at 127.0.0.1:{silent_port} cannot be reached: timed out"

