"""The facilitator inside ``authgate serve`` (under /x402/), alone as ``authgate facilitator``, its settings,
and ``authgate payments list``."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from authgate.app import create_app
from authgate.config import ConfigError, Settings
from authgate.context import ServerContext
from authgate.store import Store
from authgate.store import payments as ledger
from authgate.x402 import errors as e
from authgate.x402 import localchain
from authgate.x402.wire import FacilitatorRequest, SettleResponse, SupportedResponse, VerifyResponse
from tests.helpers import run_cli
from tests.servers import free_port

from .facilitator_support import new_payer, pay, requirements


async def test_serve_mounts_the_facilitator_under_x402(client: httpx.AsyncClient) -> None:
    supported = SupportedResponse.from_json((await client.get("/x402/supported")).content)
    assert supported.supports("exact", localchain.NETWORK)
    assert supported.signers == {"eip155:*": [localchain.FACILITATOR]}
    req = requirements()
    key, _ = new_payer()  # unfunded: the answer comes from the chain the server built
    response = await client.post("/x402/verify", content=FacilitatorRequest(pay(key, req), req).to_json())
    assert response.status_code == 200
    verdict = VerifyResponse.from_json(response.content)
    assert (verdict.is_valid, verdict.invalid_reason) == (False, e.INSUFFICIENT_BALANCE)
    assert (await client.post("/x402/settle", content=b"{}")).status_code == 400
    settled = await client.post("/x402/settle", content=FacilitatorRequest(pay(key, req), req).to_json())
    assert SettleResponse.from_json(settled.content).error_reason == e.INSUFFICIENT_BALANCE
    metrics = (await client.get("/metrics")).text
    assert (f'authgate_x402_settlements_total{{network="{localchain.NETWORK}",'
            f'outcome="{e.INSUFFICIENT_BALANCE}"}} 1.0') in metrics


async def test_facilitator_can_be_disabled_and_protected(ctx: ServerContext) -> None:
    off = create_app(replace(ctx, settings=replace(ctx.settings, x402_facilitator=False)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=off), base_url="http://127.0.0.1") as http:
        assert (await http.get("/x402/supported")).status_code == 404
    token = "t" * 24
    locked = create_app(replace(ctx, settings=replace(ctx.settings, x402_facilitator_token=token)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=locked), base_url="http://127.0.0.1") as http:
        assert (await http.get("/x402/supported")).status_code == 401
        ok = await http.get("/x402/supported", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200


@pytest.mark.parametrize(("field", "value"), [
    ("x402_facilitator_token", "short"), ("x402_facilitator_token", "has spaces in it, sixteen+"),
    ("x402_settle_timeout", 0), ("x402_settle_timeout", 100_000), ("x402_settle_lease", 1),
    ("x402_settle_lease", 3601),
])
def test_settings_are_validated(tmp_path: Path, field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        Settings(data_dir=tmp_path, **{field: value}).validate()  # type: ignore[arg-type]


async def test_the_lease_setting_reaches_the_facilitator(tmp_path: Path, store: Store) -> None:
    from authgate.x402.facilitator.mount import LazyFacilitator

    lazy = LazyFacilitator(Settings(data_dir=tmp_path, x402_settle_lease=7), store)
    try:
        assert (await lazy.get()).lease_seconds == 7
    finally:
        await lazy.aclose()


def test_payments_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"

    async def seed() -> None:
        store = await Store.open(Settings(database_url=url).sqlalchemy_url)
        for i, status in enumerate(("settled", "failed")):
            new = ledger.NewPayment(
                id=f"p{i}", network=localchain.NETWORK, asset=localchain.TOKEN_ADDRESS.lower(), payer=f"0x{i:040x}",
                nonce=f"0x{i:064x}", payee="0x" + "ee" * 20, amount="10000", scheme="exact",
                resource_url="http://127.0.0.1:8000/weather", digest="0x" + "00" * 32, valid_before=2**40,
                owner="o", lease_until=0)
            assert await store.payments.reserve(new)
            if status == "settled":
                await store.payments.mark_settled(new.id, "0x" + "ab" * 32)
            else:
                await store.payments.mark_failed(new.id, e.INSUFFICIENT_BALANCE, None, None)
        await store.close()

    asyncio.run(seed())
    code, out, _ = run_cli(capsys, "payments", "list", "--database-url", url, "--json")
    assert code == 0
    rows = json.loads(out)
    assert {(r["status"], r["transaction"]) for r in rows} == {("settled", "0x" + "ab" * 32), ("failed", None)}
    code, out, _ = run_cli(capsys, "payments", "list", "--database-url", url, "--status", "settled")
    assert code == 0 and len(out.strip().splitlines()) == 1 and "0x" + "ab" * 32 in out
    code, out, _ = run_cli(capsys, "payments", "list", "--database-url", url, "--payer", f"0x{1:040X}", "--json")
    assert [r["status"] for r in json.loads(out)] == ["failed"]


def test_facilitator_command_serves_at_its_root(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "AUTHGATE_X402_FACILITATOR_TOKEN": "x" * 20}
    proc = subprocess.Popen(
        [sys.executable, "-m", "authgate.cli", "facilitator", "--host", "127.0.0.1", "--port", str(port),
         "--data-dir", str(tmp_path)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                response = httpx.get(base + "/supported", headers={"Authorization": "Bearer " + "x" * 20})
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() < deadline, "facilitator did not start"
                time.sleep(0.2)
        assert response.status_code == 200
        assert SupportedResponse.from_json(response.content).supports("exact", localchain.NETWORK)
        assert httpx.get(base + "/supported").status_code == 401
        req = requirements()
        key, _ = new_payer()
        body = FacilitatorRequest(pay(key, req), req).to_json()
        answer = httpx.post(base + "/settle", content=body, headers={"Authorization": "Bearer " + "x" * 20})
        assert answer.status_code == 200
        assert SettleResponse.from_json(answer.content).error_reason == e.INSUFFICIENT_BALANCE
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()

