"""Replay across two server processes sharing PostgreSQL: a signed state-changing request accepted by one
``authgate serve`` process is refused by the other (the replay cache is the database, not process memory)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.ext.asyncio import create_async_engine

from authgate.config import to_sqlalchemy_url
from authgate.crypto.httpsig import sign_request
from authgate.crypto.jwk import public_jwk
from authgate.crypto.signature_key import jwt_scheme
from authgate.demo.servers import free_port
from tests.conftest import PG_URL, REQUIRE_PG, _postgres_unavailable

pytestmark = pytest.mark.postgres
ISSUER = "https://authgate.test"
ADMIN_KEY = secrets.token_urlsafe(32)


async def _admin(statement: str) -> None:
    engine = create_async_engine(to_sqlalchemy_url(PG_URL), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text(statement))
    finally:
        await engine.dispose()


@pytest.fixture
def database() -> Iterator[str]:
    reason = _postgres_unavailable()
    if reason:
        if REQUIRE_PG:
            pytest.fail(reason)
        pytest.skip(reason)
    name = "aa_" + secrets.token_hex(6)
    asyncio.run(_admin(f"CREATE DATABASE {name}"))
    try:
        yield PG_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        asyncio.run(_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


def _serve(env: dict[str, str], port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "authgate.cli", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            return proc
        except httpx.TransportError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise
            time.sleep(0.2)


def test_second_use_on_another_process_is_refused(database: str, tmp_path: Path) -> None:
    env = {**os.environ, "AUTHGATE_DATA_DIR": str(tmp_path), "AUTHGATE_DATABASE_URL": database,
           "AUTHGATE_ISSUER": ISSUER, "AUTHGATE_AGENTAUTH_ENABLED": "1", "AUTHGATE_AGENTAUTH_ADMIN_KEY": ADMIN_KEY}
    subprocess.run([sys.executable, "-m", "authgate.cli", "users", "add", "alice", "--password-stdin"], env=env,
                   input="correct horse\n", text=True, check=True, capture_output=True)
    ports = [free_port(), free_port()]
    procs = [_serve(env, ports[0])]
    procs.append(_serve(env, ports[1]))
    try:
        key = Ed25519PrivateKey.generate()
        enrolled = httpx.post(f"http://127.0.0.1:{ports[0]}/agentauth/agents", timeout=10,
                              json={"name": "bot", "jwk": public_jwk(key), "owner": "alice"},
                              headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert enrolled.status_code == 201, enrolled.text
        token = enrolled.json()["agent_token"]

        def signed(body: dict[str, str]) -> tuple[dict[str, str], bytes]:
            raw = json.dumps(body).encode()
            headers = {"Content-Type": "application/json"}
            headers.update(sign_request(method="POST", url=ISSUER + "/agentauth/person-token", headers=headers,
                                        body=raw, key=key, signature_key=jwt_scheme(token)))
            return {**headers, "Host": "authgate.test"}, raw

        headers, raw = signed({"resource": "https://api.test"})
        first = httpx.post(f"http://127.0.0.1:{ports[0]}/agentauth/person-token", headers=headers, content=raw)
        assert first.status_code == 200, first.text
        again = httpx.post(f"http://127.0.0.1:{ports[1]}/agentauth/person-token", headers=headers, content=raw)
        assert again.status_code == 401 and again.headers["signature-error"] == "error=invalid_signature"
        headers, raw = signed({"resource": "https://other.test"})  # a new request is fine on either process
        fresh = httpx.post(f"http://127.0.0.1:{ports[1]}/agentauth/person-token", headers=headers, content=raw)
        assert fresh.status_code == 200, fresh.text
    finally:
        for proc in procs:
            proc.terminate()
        outputs = [proc.communicate(timeout=15)[0] for proc in procs]
    assert not any("Traceback" in out for out in outputs), outputs
