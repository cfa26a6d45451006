"""``authgate demo`` is the main job: it must succeed end to end and say what happened."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from authgate.demo.run import run_demo

pytestmark = pytest.mark.interop


async def test_demo_succeeds_and_reports_each_step(tmp_path: object) -> None:
    lines: list[str] = []
    assert await run_demo(lines.append), "\n".join(lines)
    text = "\n".join(lines)
    assert "✗" not in text
    assert "POST" in text and "/register" in text and "→ 201" in text
    assert "auto-approved" in text
    assert "called tool whoami → 'dev-user via client" in text
    assert "AUTO-DECIDED BY THE DEMO" in text and "acting for alice" in text
    aauth = text[text.index("[4] AAuth"):]
    assert "→ 400 invalid_grant: the same answer as for an unknown person" in aauth
    assert "scope 'orders:read', amr ['pii'], no refresh token" in aauth
    assert "GET /orders/A-1042 → 200: shipped" in aauth
    assert "the same token cannot change the address: POST → 403" in aauth
    assert "escalated: 400 authorization_pending with a request_code" in aauth
    assert "AUTO-DECIDED BY THE DEMO in maria's place: approved" in aauth
    assert "/events" in aauth and "scope 'orders:write', amr ['pii', 'oob']" in aauth
    assert "POST /orders/A-1042/address → 200: delivery address changed" in aauth
    for value in ("María", "Maria", "García", "Garcia", "1986-03-14", "14 March 1986", "94107", "+14155550142"):
        assert value not in aauth
    # The header lists every server the demo starts, those of scenarios [5] and [6] included, each port once.
    header = text[:text.index("[1] OAuth")]
    for name, path in (("authorization server", ""), ("notes API", "/notes"), ("MCP server", "/mcp"),
                       ("orders API", "/orders"), ("x402 facilitator", ""), ("weather API (x402)", "/weather"),
                       ("journal API", "/journal")):
        assert re.search(rf"^  {re.escape(name)} .*http://127\.0\.0\.1:\d+{path}\b", header, re.M), name
    ports = re.findall(r"http://127\.0\.0\.1:(\d+)", header)
    assert len(ports) == len(set(ports)) == 7
    x402 = text[text.index("[5] x402"):]
    weather_port = re.search(r"weather API \(x402\) +http://127\.0\.0\.1:(\d+)", header).group(1)  # type: ignore[union-attr]
    assert f"127.0.0.1:{weather_port}/weather" in x402
    assert "→ 402" in x402 and "402 Payment Required: exact 10000 atomic units (0.010000 USDC)" in x402
    assert "agent signed an EIP-3009 authorization within its budget" in x402 and "nonce 0x" in x402
    assert "GET /weather → 200" in x402 and "settled on chain: tx 0x" in x402
    assert "payer 5.000000 USDC → 4.990000 USDC, payee 0.000000 USDC → 0.010000 USDC" in x402
    from authgate.x402 import localchain

    assert localchain.label_key("demo-agent-wallet")[2:] not in text  # the agent's key is never shown
    agentauth = text[text.index("[6] Agent Auth"):]
    journal_port = re.search(r"journal API +http://127\.0\.0\.1:(\d+)", header).group(1)  # type: ignore[union-attr]
    assert f"127.0.0.1:{journal_port}/journal" in agentauth
    assert "agent enrolled with the agent provider by its owner sam: aauth:journal-bot@127.0.0.1:" in agentauth
    assert "→ 401  [AAuth-Requirement: requirement=person-token]" in agentauth
    assert "→ 401  [AAuth-Requirement: requirement=auth-token; resource-token=…]" in agentauth
    assert "AUTO-DECIDED BY THE DEMO in sam's place: approved" in agentauth
    assert "with an aa-auth+jwt for scope 'journal:read', bound to the agent's key" in agentauth
    assert "came from remembered consent: nobody was asked" in agentauth
    assert "journal:write is high-risk, so sam was asked again" in agentauth
    assert "sent again → 401 [Signature-Error: error=invalid_signature]: replay refused" in agentauth
    assert text.rstrip().endswith("demo succeeded")
    # The ending: the whole audit trail, oldest first, then where the dashboard is.
    trail = text[text.index("Audit trail of the whole demo"):]
    numbers = [int(n) for n in re.findall(r"^  #(\d+) ", trail, re.M)]
    assert numbers and numbers == sorted(numbers) and numbers[0] == 1
    count = int(re.search(r"Audit trail of the whole demo \((\d+) events", trail).group(1))  # type: ignore[union-attr]
    assert count == len(numbers)
    for event in ("client.registered", "token.issued", "ciba.issued", "aauth.issued", "x402.payment_received",
                  "agentauth.agent_enrolled", "agentauth.consent_granted"):
        assert re.search(rf"^  #\d+ +\d\d:\d\d:\d\d {re.escape(event)} ", trail, re.M), event
    # The x402 payment of [5], as the facilitator settled it: amount, payer, payee, and the network it used.
    paid = re.search(r"^  #\d+ +\S+ x402\.payment_received .*$", trail, re.M).group(0)  # type: ignore[union-attr]
    assert "amount=10000" in paid and "path=/weather" in paid and "payer=0x" in paid and "payee=0x" in paid
    assert re.search(r"^Dashboard: http://127\.0\.0\.1:\d+/admin ", trail, re.M)
    assert trail.index("Dashboard:") > trail.rindex("  #")


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGINT])
def test_demo_serve_stopped_by_sigterm_or_ctrl_c_removes_its_temporary_directory(tmp_path: Path,
                                                                               how: signal.Signals) -> None:
    """``authgate demo --serve`` keeps its private signing keys in a SQLite database in a temporary directory:
    stopped by SIGTERM (a service manager, ``kill``, ``timeout``), as by Ctrl-C, it removes that directory."""
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "authgate.cli", "demo", "--serve"], env=env, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines: list[str] = []
    serving = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C stops" in line:
                serving.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert serving.wait(180), "".join(lines)
        (made,) = list(tmp_path.glob("authgate-demo-*"))
        assert (made / "authgate.db").exists()
        proc.send_signal(how)
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(10)
    err = proc.stderr.read() if proc.stderr else ""
    assert "Traceback" not in err, err
    assert not list(tmp_path.glob("authgate-demo-*")), "the demo's temporary directory was left behind"
    if how == signal.SIGTERM:
        assert code == 128 + signal.SIGTERM and "stopped by SIGTERM" in err
    else:
        assert code in (0, 130)
