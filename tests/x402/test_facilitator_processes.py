"""Two ``authgate facilitator`` processes sharing PostgreSQL and one ``authgate devchain`` node: 50 concurrent
/settle calls for one authorization, spread over both, make exactly one on-chain transfer and one receipt."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from authgate.config import to_sqlalchemy_url
from authgate.x402 import localchain
from authgate.x402.wire import FacilitatorRequest, SettleResponse
from tests.conftest import PG_URL
from tests.servers import free_port

from .facilitator_support import PAY_TO, pay, requirements

pytestmark = pytest.mark.postgres
TOKEN = localchain.TOKEN_ADDRESS
PAYER_KEY = localchain.label_key("two-process-payer")


@contextlib.contextmanager
def _process(args: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([sys.executable, "-m", "authgate.cli", *args], env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def _wait_ready(url: str, proc: subprocess.Popen[str], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.monotonic() < deadline, f"{url} did not come up"
            time.sleep(0.2)


def _rpc(url: str, method: str, params: list[object]) -> object:
    answer = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).json()
    return answer["result"]


def _balance(rpc: str, owner: str) -> int:
    data = "0x70a08231" + owner[2:].lower().rjust(64, "0")
    return int(str(_rpc(rpc, "eth_call", [{"to": TOKEN, "data": data}, "latest"])), 16)


@pytest.fixture
def database(backend: str) -> Iterator[str]:
    if backend != "postgres":
        pytest.skip("the two-process variant runs on PostgreSQL")
    name = "x402_" + secrets.token_hex(4)

    async def admin(statement: str) -> None:
        engine = create_async_engine(to_sqlalchemy_url(PG_URL), isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(sa.text(statement))
        finally:
            await engine.dispose()

    asyncio.run(admin(f"CREATE DATABASE {name}"))
    try:
        yield PG_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        asyncio.run(admin(f"DROP DATABASE {name} WITH (FORCE)"))


def test_two_processes_one_transfer(database: str) -> None:
    chain_port = free_port()
    rpc = f"http://127.0.0.1:{chain_port}"
    env = {
        "AUTHGATE_DATABASE_URL": database,
        "AUTHGATE_X402_CHAIN": "jsonrpc",
        "AUTHGATE_X402_RPC_URL": rpc,
        "AUTHGATE_X402_FACILITATOR_KEY": localchain.FACILITATOR_KEY,
        "AUTHGATE_X402_NETWORK": localchain.NETWORK,
        "AUTHGATE_X402_TOKEN_ADDRESS": TOKEN,
        "AUTHGATE_X402_TOKEN_NAME": localchain.TOKEN_NAME,
        "AUTHGATE_X402_TOKEN_VERSION": localchain.TOKEN_VERSION,
        "AUTHGATE_X402_SETTLE_TIMEOUT": "60",
    }
    with _process(["devchain", "--port", str(chain_port), "--fund", "two-process-payer=1"], {}) as node:
        _wait_ready(rpc, node)
        ports = [free_port(), free_port()]
        with _process(["facilitator", "--port", str(ports[0])], env) as a, \
                _process(["facilitator", "--port", str(ports[1])], env) as b:
            urls = [f"http://127.0.0.1:{p}" for p in ports]
            _wait_ready(urls[0] + "/supported", a)
            _wait_ready(urls[1] + "/supported", b)
            req = requirements()
            body = FacilitatorRequest(pay(PAYER_KEY, req), req).to_json()
            payee_before = _balance(rpc, PAY_TO)
            count_before = int(str(_rpc(rpc, "eth_getTransactionCount", [localchain.FACILITATOR, "latest"])), 16)

            async def storm() -> list[httpx.Response]:
                async with httpx.AsyncClient(timeout=120) as http:
                    return await asyncio.gather(*[
                        http.post(urls[i % 2] + "/settle", content=body) for i in range(50)])

            responses = asyncio.run(storm())
            assert {r.status_code for r in responses} == {200}
            results = [SettleResponse.from_json(r.content) for r in responses]
            assert all(r.success for r in results), {(r.error_reason, r.error_message) for r in results}
            assert len({r.transaction for r in results}) == 1
            count_after = int(str(_rpc(rpc, "eth_getTransactionCount", [localchain.FACILITATOR, "latest"])), 16)
            assert count_after == count_before + 1
            assert _balance(rpc, PAY_TO) == payee_before + 10_000
