"""Several real ``authgate serve`` processes on one fresh PostgreSQL database (and Redis, when asked).

PostgreSQL tests skip with a visible reason when the server is unreachable, and fail instead under
``AUTHGATE_REQUIRE_POSTGRES=1`` (CI). Redis tests do the same with ``AUTHGATE_REQUIRE_REDIS=1``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from authgate.config import to_sqlalchemy_url
from authgate.demo.servers import free_port
from tests.conftest import PG_URL, REQUIRE_PG, _postgres_unavailable

REDIS_URL = os.environ.get("AUTHGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
REQUIRE_REDIS = os.environ.get("AUTHGATE_REQUIRE_REDIS") == "1"
#: Figures the scale tests measured, printed in pytest's terminal summary (tests/scale/conftest.py): visible in
#: CI logs without ``-s``.
FIGURES: list[str] = []


def figure(line: str) -> None:
    """Print a measured figure and keep it for the end-of-run summary."""
    print(line)
    FIGURES.append(line)


async def _admin(statement: str) -> None:
    engine = create_async_engine(to_sqlalchemy_url(PG_URL), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text(statement))
    finally:
        await engine.dispose()


def require_postgres() -> None:
    reason = _postgres_unavailable()
    if reason:
        if REQUIRE_PG:
            pytest.fail(reason)
        pytest.skip(reason)


def require_redis() -> None:
    from redis import Redis

    client = Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except Exception as exc:
        reason = f"Redis not reachable at {REDIS_URL}: {exc.__class__.__name__}: {exc}"
        if REQUIRE_REDIS:
            pytest.fail(reason)
        pytest.skip(reason)
    finally:
        client.close()


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for one cluster; dropped afterwards."""
    require_postgres()
    name = "scale_" + secrets.token_hex(6)
    asyncio.run(_admin(f"CREATE DATABASE {name}"))
    try:
        yield PG_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        asyncio.run(_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


class Cluster:
    """``n`` server processes started together; ``urls[i]`` is process i's base URL.

    ``command`` is the ``authgate`` subcommand (``serve``, or ``facilitator``); ``health`` the path that
    answers 200 once a process is ready."""

    def __init__(self, env: dict[str, str], n: int, extra_args: tuple[str, ...] = (), *, command: str = "serve",
                 health: str = "/health") -> None:
        self.env = env
        self.ports = [free_port() for _ in range(n)]
        self.urls = [f"http://127.0.0.1:{p}" for p in self.ports]
        self.procs: list[subprocess.Popen[str]] = []
        self.outputs: list[str] = []
        self.extra_args = extra_args
        self.command = command
        self.health = health

    def start(self, timeout: float = 60) -> None:
        # The first process migrates the empty database alone; the rest then start in parallel.
        self.procs.append(self._spawn(self.ports[0]))
        self._wait(0, timeout)
        self.procs.extend(self._spawn(p) for p in self.ports[1:])
        for i in range(1, len(self.ports)):
            self._wait(i, timeout)

    def _spawn(self, port: int) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "authgate.cli", self.command, "--port", str(port),
                                 *self.extra_args], env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    def _wait(self, i: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(self.urls[i] + self.health, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.procs[i].poll() is not None:
                self.stop()
                raise AssertionError(f"server {i} did not start: {self.outputs[i] if self.outputs else ''}")
            time.sleep(0.2)

    def restart(self, i: int, timeout: float = 60) -> None:
        """Start process ``i`` again on its port (after it died or was killed)."""
        self.procs[i].communicate(timeout=30)
        self.procs[i] = self._spawn(self.ports[i])
        self._wait(i, timeout)

    def stop(self) -> list[str]:
        """SIGTERM every process and collect its output (graceful shutdown)."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        self.outputs = [proc.communicate(timeout=60)[0] for proc in self.procs]
        return self.outputs


def server_env(tmp_path: Path, database: str, **settings: str) -> dict[str, str]:
    env = {**os.environ, "AUTHGATE_DATA_DIR": str(tmp_path), "AUTHGATE_DATABASE_URL": database,
           "AUTHGATE_LOG_LEVEL": "warning", "AUTHGATE_DB_POOL_SIZE": "5", "AUTHGATE_DB_MAX_OVERFLOW": "10"}
    env.update({"AUTHGATE_" + k.upper(): v for k, v in settings.items()})
    return env
