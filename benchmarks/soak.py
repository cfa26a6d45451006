"""Load and soak (issue #9 item 6): mixed agent traffic against ``authgate serve --workers 2`` on PostgreSQL,
first at its peak, then for ``--minutes`` at half of it, watching errors and every server process's memory.

Processes on loopback, each a real command (nothing in process):

- ``authgate serve --workers 2`` on a fresh PostgreSQL database: registrations, tokens, Agent Auth;
- ``authgate facilitator`` on the same database, settling on ``authgate devchain --block-time 1`` (a mempool and
  one block a second, so chain time stays on the clock however many payments go through);
- ``authgate gateway`` in front of a plain upstream (this file with ``--upstream``): one route that needs an
  OAuth token from our server (a resource verifying our tokens), one that costs 0.001 TestUSDC (the x402
  paywall, settling through our facilitator).

Traffic kinds, each over its own keep-alive connections (``loadgen``'s HTTP/1.1 framing): ``register`` (open
RFC 7591 registration, 201), ``token`` (client_credentials), ``protected`` (GET through the gateway with the
latest token), ``payment`` (GET through the gateway with a fresh EIP-3009 authorization: verify, serve, settle
on chain) and ``signed`` (an Agent Auth request signed by an enrolled agent: RFC 9421 signature, agent token,
replay cache in PostgreSQL, a person token minted).

Phases: warm-up; **peak**: every kind closed-loop at once for ``--peak-seconds``, the per-kind rate under the
mixed load being that kind's peak; **soak**: each kind paced at half its peak rate for ``--minutes``. Printed:
per-kind rates, p50/p99 and errors for both phases, and the RSS of every server process at the start and end of
the soak. Exit status 1 on any error (a status or body not expected, a broken connection, a server process that
died or logged a traceback), when a server process's RSS grew by more than ``--max-rss-growth`` MiB over the
soak, or (unless ``--quick``) when a kind sustained less than 80 % of its target rate. The chain node and the
upstream stub are reported but not bounded: the devchain keeps every block in memory by design.

Run: ``.venv/bin/python benchmarks/soak.py [--minutes 10] [--postgres URL] [--json PATH] [--quick]``.
``--quick`` (CI: ``tests/scale/test_soak.py`` runs ``--minutes 1 --quick``) shortens warm-up and peak.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import Result, _read_answer, request
from machine import hardware

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_POSTGRES = os.environ.get("AUTHGATE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
PAYER = "soak-payer"
PRICE = 1_000  # atomic units of TestUSDC (0.001)
SCOPE = "soak:read"
#: Connections per kind; payments wait for a block (about 1-1.5 s each), so they need more to reach a peak.
CONNECTIONS = {"register": 4, "token": 4, "protected": 4, "payment": 24, "signed": 4}
#: A server process that grows more than this (MiB) over the soak fails the run.
DEFAULT_MAX_RSS_GROWTH = 32.0
#: Below this share of its target rate a kind "could not sustain half its peak" (full soak only).
MIN_SUSTAINED = 0.8
#: Longest a single request may take before it counts as an error.
REQUEST_TIMEOUT = 60.0
#: A keep-alive connection idle this long is replaced before the next request, as HTTP clients do: servers
#: close idle connections (uvicorn after 5 s), and a request written into one being closed is lost.
IDLE_RECONNECT = 2.0



def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- processes ---------------------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    bounded: bool = True  # its RSS growth counts against --max-rss-growth

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Processes:
    """Every process the soak starts, stopped (SIGTERM, then SIGKILL) in reverse order."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[Proc] = []

    def start(self, name: str, cmd: list[str], env: dict[str, str], *, bounded: bool = True) -> Proc:
        log = self.logs / f"{name}.log"
        handle = log.open("wb")
        popen = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=handle, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        handle.close()
        proc = Proc(name, popen, log, bounded)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.popen.wait(40)
            except subprocess.TimeoutExpired:
                os.killpg(proc.popen.pid, signal.SIGKILL)
                proc.popen.wait()

    def dead(self) -> list[str]:
        return [f"{p.name} exited with {p.popen.returncode}" for p in self.procs if p.popen.poll() is not None]

    def tracebacks(self) -> list[str]:
        found = []
        for p in self.procs:
            try:
                text = p.log.read_text(errors="replace")
            except OSError:
                continue
            if "Traceback" in text:
                found.append(f"{p.name}: a traceback in its log ({p.log})")
        return found


def wait_http(url: str, proc: Proc, timeout: float = 90) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError(f"{proc.name} did not answer at {url} within {timeout} s:\n{proc.tail()}")


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def process_tree(procs: list[Proc]) -> list[tuple[str, int, bool]]:
    """(label, pid, bounded) for every process started and each descendant (``serve``'s workers)."""
    kids = _children()
    out: list[tuple[str, int, bool]] = []
    for proc in procs:
        out.append((proc.name, proc.popen.pid, proc.bounded))
        todo, n = list(kids.get(proc.popen.pid, [])), 0
        while todo:
            pid = todo.pop(0)
            todo.extend(kids.get(pid, []))
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "resource_tracker" in cmdline:
                out.append((f"{proc.name} resource tracker", pid, False))
                continue
            n += 1
            out.append((f"{proc.name} worker {n}", pid, proc.bounded))
    return out


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


# -- PostgreSQL ----------------------------------------------------------------------------------------------


async def _admin(url: str, statement: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from authgate.config import to_sqlalchemy_url

    engine = create_async_engine(to_sqlalchemy_url(url), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


@contextmanager
def fresh_database(base: str) -> Iterator[str]:
    name = "soak_" + secrets.token_hex(6)
    asyncio.run(_admin(base, f"CREATE DATABASE {name}"))
    try:
        yield base.rsplit("/", 1)[0] + "/" + name
    finally:
        asyncio.run(_admin(base, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


# -- the upstream stub ----------------------------------------------------------------------------------------


def upstream(port: int) -> None:
    """The API behind the gateway: a small JSON answer on every route, knowing nothing of authgate."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def data(request: Request) -> JSONResponse:
        return JSONResponse({"forecast": "sunny", "via": request.headers.get("x-authgate-mechanism")})

    app = Starlette(routes=[Route("/oauth", data), Route("/paid", data)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# -- the traffic ----------------------------------------------------------------------------------------------


@dataclass
class Kind:
    name: str
    port: int
    make: Callable[[], bytes]
    expect: int
    check: Callable[[bytes], bool] | None = None
    connections: int = 4


@dataclass
class Phase:
    """What one kind did in one phase (a loadgen Result plus the pacing it was held to)."""

    result: Result
    target: float | None = None
    max_late: float = 0.0

    def row(self) -> dict[str, Any]:
        r = self.result
        return {"requests": r.ok + r.errors, "ok": r.ok, "errors": r.errors, "rate": round(r.rate, 2),
                "target_rate": round(self.target, 2) if self.target else None, "p50_ms": round(r.p50, 2),
                "p99_ms": round(r.p99, 2), "max_start_delay_s": round(self.max_late, 3),
                "first_error": r.first_error[:300]}


async def drive_kind(kind: Kind, seconds: float, rate: float | None = None) -> Phase:
    """``kind.connections`` keep-alive connections for ``seconds``: closed loop, or paced (request n starts no
    earlier than ``n / rate`` seconds in) when ``rate`` is given."""
    loop = asyncio.get_running_loop()
    phase = Phase(Result(kind.name), rate)
    result = phase.result
    start = loop.time()
    end = start + seconds
    counter = [0]

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", kind.port)
        last_used = loop.time()
        try:
            while True:
                n = counter[0]
                counter[0] = n + 1
                if rate:
                    due = start + n / rate
                    if due >= end or loop.time() >= end:  # behind schedule at the end: the shortfall is reported
                        return
                    if due > loop.time():
                        await asyncio.sleep(due - loop.time())
                    phase.max_late = max(phase.max_late, loop.time() - due)
                elif loop.time() >= end:
                    return
                if loop.time() - last_used > IDLE_RECONNECT:  # the server may be closing it (uvicorn: 5 s)
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", kind.port)
                payload = kind.make()
                began = time.perf_counter()
                writer.write(payload)
                try:
                    status, body = await asyncio.wait_for(_read_answer(reader), REQUEST_TIMEOUT)
                except (asyncio.IncompleteReadError, ConnectionError, TimeoutError, ValueError) as exc:
                    result.errors += 1
                    result.first_error = result.first_error or f"connection: {exc!r}"
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", kind.port)
                    continue
                last_used = loop.time()
                result.latencies.append(time.perf_counter() - began)
                result.statuses[status] = result.statuses.get(status, 0) + 1
                if status == kind.expect and (kind.check is None or kind.check(body)):
                    result.ok += 1
                else:
                    result.errors += 1
                    result.first_error = result.first_error or f"{status} {body[:200]!r}"
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(kind.connections)))
    result.seconds = loop.time() - start
    return phase


async def drive_all(kinds: list[Kind], seconds: float, rates: dict[str, float] | None = None) -> dict[str, Phase]:
    phases = await asyncio.gather(*(drive_kind(k, seconds, rates[k.name] if rates else None) for k in kinds))
    return {k.name: p for k, p in zip(kinds, phases, strict=True)}


@dataclass
class World:
    """Everything the request builders need: endpoints, credentials, the live token, the payment offer."""

    as_port: int
    gw_port: int
    client: tuple[str, str]
    agent_key: Any
    agent_token: str
    offer: Any
    resource: Any
    token: list[str] = field(default_factory=lambda: [""])


def build_kinds(w: World) -> list[Kind]:
    from authgate.crypto.httpsig import sign_request
    from authgate.crypto.signature_key import jwt_scheme
    from authgate.x402 import localchain
    from authgate.x402.eip3009 import Authorization, sign_authorization
    from authgate.x402.wire import PaymentPayload

    as_host, gw_host = f"127.0.0.1:{w.as_port}", f"127.0.0.1:{w.gw_port}"
    issuer = f"http://{as_host}"
    basic = "Basic " + base64.b64encode(f"{w.client[0]}:{w.client[1]}".encode()).decode()
    registration = request("POST", "/register", as_host, headers={"Content-Type": "application/json"}, body=json.dumps(
        {"client_name": "soak agent", "grant_types": ["client_credentials"], "response_types": [],
         "redirect_uris": [], "token_endpoint_auth_method": "client_secret_basic", "scope": SCOPE}).encode())
    token_request = request("POST", "/token", as_host, body=f"grant_type=client_credentials&scope={SCOPE}".encode(),
                            headers={"Content-Type": "application/x-www-form-urlencoded", "Authorization": basic})
    seen = [0]

    def got_token(body: bytes) -> bool:
        if not body.startswith(b'{"access_token"'):
            return False
        seen[0] += 1
        if seen[0] % 50 == 1:  # keep the protected stream on a fresh token (access tokens live 10 minutes)
            w.token[0] = json.loads(body)["access_token"]
        return True

    def protected() -> bytes:
        return request("GET", "/oauth", gw_host, headers={"Authorization": f"Bearer {w.token[0]}"})

    payer_key = localchain.label_key(PAYER)
    payer = localchain.label_address(PAYER)
    offer = w.offer

    def payment() -> bytes:
        auth = Authorization(from_address=payer, to=offer.pay_to, value=int(offer.amount), valid_after=0,
                             valid_before=int(time.time()) + offer.max_timeout_seconds, nonce=secrets.token_bytes(32))
        signed = sign_authorization(auth, payer_key, name=offer.extra["name"], version=offer.extra["version"],
                                    chain_id=localchain.CHAIN_ID, verifying_contract=offer.asset)
        header = PaymentPayload(payload=signed.to_dict(), accepted=offer, resource=w.resource).to_header()
        return request("GET", "/paid", gw_host, headers={"PAYMENT-SIGNATURE": header})

    signature_key = jwt_scheme(w.agent_token)

    def signed() -> bytes:
        # Ed25519 signatures are deterministic and ``created`` has one-second resolution: two requests alike in
        # the same second would be one signed request twice, which the replay cache refuses. Real requests
        # differ; so do these (an id the server ignores).
        body = json.dumps({"resource": "https://api.soak.test", "request_id": secrets.token_hex(8)}).encode()
        headers = {"Content-Type": "application/json"}
        headers.update(sign_request(method="POST", url=issuer + "/agentauth/person-token", headers=headers,
                                    body=body, key=w.agent_key, signature_key=signature_key))
        return request("POST", "/agentauth/person-token", as_host, headers=headers, body=body)

    return [
        Kind("register", w.as_port, lambda: registration, 201, lambda b: b'"client_secret"' in b),
        Kind("token", w.as_port, lambda: token_request, 200, got_token),
        Kind("protected", w.gw_port, protected, 200, lambda b: b'"via":"oauth"' in b),
        Kind("payment", w.gw_port, payment, 200, lambda b: b'"via":"x402"' in b),
        Kind("signed", w.as_port, signed, 200, lambda b: b'"person_token"' in b),
    ]


# -- set-up -------------------------------------------------------------------------------------------------


def gateway_file(path: Path, *, upstream_url: str, public_url: str, issuer: str, facilitator: str) -> None:
    from authgate.x402 import localchain

    path.write_text(f"""
[gateway]
upstream = "{upstream_url}"
public_url = "{public_url}"
identity_secret_env = "SOAK_GATEWAY_SECRET"

[oauth]
issuer = "{issuer}"

[x402]
facilitator_url = "{facilitator}"

[[routes]]
methods = ["GET"]
path = "/oauth"
  [[routes.allow]]
  mechanism = "oauth"
  scopes = ["{SCOPE}"]

[[routes]]
methods = ["GET"]
path = "/paid"
  [[routes.allow]]
  mechanism = "x402"
  price = "{PRICE}"
  asset = "{localchain.TOKEN_ADDRESS}"
  asset_name = "{localchain.TOKEN_NAME}"
  asset_version = "{localchain.TOKEN_VERSION}"
  network = "{localchain.NETWORK}"
  pay_to = "{localchain.label_address("soak-payee")}"
  max_timeout_seconds = 300
  description = "One soak forecast"
""")


def start_world(ps: Processes, database: str, tmp: Path) -> tuple[World, dict[str, Any]]:
    """Start every process and enrol the test parties; the World and a description of the set-up."""
    import httpx
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from authgate.crypto.jwk import public_jwk
    from authgate.x402 import localchain
    from authgate.x402.wire import PaymentRequired

    exe = str(Path(sys.executable).parent / "authgate")
    as_port, fac_port, gw_port, up_port, chain_port = (free_port() for _ in range(5))
    issuer, gateway = f"http://127.0.0.1:{as_port}", f"http://127.0.0.1:{gw_port}"
    admin_key = secrets.token_urlsafe(32)
    common = {"AUTHGATE_DATABASE_URL": database, "AUTHGATE_LOG_LEVEL": "warning", "AUTHGATE_HOST": "127.0.0.1",
              "AUTHGATE_DB_POOL_SIZE": "5", "AUTHGATE_DB_MAX_OVERFLOW": "5"}
    server_env = {**common, "AUTHGATE_DATA_DIR": str(tmp / "serve"), "AUTHGATE_PORT": str(as_port),
                  "AUTHGATE_ISSUER": issuer, "AUTHGATE_SCOPES": SCOPE, "AUTHGATE_DEFAULT_SCOPES": SCOPE,
                  "AUTHGATE_RESOURCES": gateway, "AUTHGATE_REGISTRATION_RATE_LIMIT": "100000000",
                  "AUTHGATE_MAX_CLIENTS": "100000000", "AUTHGATE_AGENTAUTH_ENABLED": "1",
                  "AUTHGATE_AGENTAUTH_ALLOW_HTTP_LOOPBACK": "1", "AUTHGATE_AGENTAUTH_ADMIN_KEY": admin_key,
                  "AUTHGATE_X402_FACILITATOR": "0"}
    rpc = f"http://127.0.0.1:{chain_port}"
    chain = ps.start("devchain", [exe, "devchain", "--port", str(chain_port), "--block-time", "1",
                                  "--fund", f"{PAYER}=1000000"], {}, bounded=False)
    # Migrate and create the owner of the Agent Auth agent before the workers start.
    owner = "soak-owner"
    subprocess.run([exe, "users", "add", owner, "--password-stdin"], input=b"soak password 1234\n", check=True,
                   env={**os.environ, **server_env}, capture_output=True)
    serve = ps.start("serve", [exe, "serve", "--workers", "2"], server_env)
    wait_http(rpc, chain)
    fac_env = {**common, "AUTHGATE_DATA_DIR": str(tmp / "facilitator"), "AUTHGATE_PORT": str(fac_port),
               "AUTHGATE_X402_CHAIN": "jsonrpc", "AUTHGATE_X402_RPC_URL": rpc,
               "AUTHGATE_X402_FACILITATOR_KEY": localchain.FACILITATOR_KEY,
               "AUTHGATE_X402_NETWORK": localchain.NETWORK, "AUTHGATE_X402_TOKEN_ADDRESS": localchain.TOKEN_ADDRESS,
               "AUTHGATE_X402_TOKEN_NAME": localchain.TOKEN_NAME,
               "AUTHGATE_X402_TOKEN_VERSION": localchain.TOKEN_VERSION, "AUTHGATE_X402_SETTLE_TIMEOUT": "30"}
    facilitator = ps.start("facilitator", [exe, "facilitator"], fac_env)
    up = ps.start("upstream", [sys.executable, __file__, "--upstream", str(up_port)], {}, bounded=False)
    config = tmp / "gateway.toml"
    gateway_file(config, upstream_url=f"http://127.0.0.1:{up_port}", public_url=gateway, issuer=issuer,
                 facilitator=f"http://127.0.0.1:{fac_port}")
    gw = ps.start("gateway", [exe, "gateway", "--config", str(config), "--port", str(gw_port),
                              "--log-level", "warning"], {"SOAK_GATEWAY_SECRET": secrets.token_hex(32)})
    wait_http(issuer + "/health", serve)
    wait_http(f"http://127.0.0.1:{fac_port}/supported", facilitator)
    wait_http(f"http://127.0.0.1:{up_port}/oauth", up)
    wait_http(gateway + "/oauth", gw)

    with httpx.Client(timeout=30) as http:
        reg = http.post(issuer + "/register", json={
            "client_name": "soak client", "grant_types": ["client_credentials"], "response_types": [],
            "redirect_uris": [], "token_endpoint_auth_method": "client_secret_basic", "scope": SCOPE})
        reg.raise_for_status()
        client = (reg.json()["client_id"], reg.json()["client_secret"])
        token = http.post(issuer + "/token", data={"grant_type": "client_credentials", "scope": SCOPE}, auth=client)
        token.raise_for_status()
        key = Ed25519PrivateKey.generate()
        enrolled = http.post(issuer + "/agentauth/agents", json={"name": "soak-bot", "jwk": public_jwk(key),
                                                                 "owner": owner},
                             headers={"Authorization": f"Bearer {admin_key}"})
        if enrolled.status_code != 201:
            raise RuntimeError(f"enrolling the agent failed: {enrolled.status_code} {enrolled.text}")
        challenge = http.get(gateway + "/paid")
        if challenge.status_code != 402:
            raise RuntimeError(f"the paywall did not ask for a payment: {challenge.status_code} {challenge.text}")
        required = PaymentRequired.from_header(challenge.headers["payment-required"])
    world = World(as_port, gw_port, client, key, enrolled.json()["agent_token"], required.accepts[0],
                  required.resource, [token.json()["access_token"]])
    setup = {"serve": f"{issuer} (2 workers, PostgreSQL)", "facilitator": f"http://127.0.0.1:{fac_port}",
             "gateway": gateway, "devchain": f"{rpc} (block time 1 s)",
             "agent_token_ttl": enrolled.json()["expires_in"]}
    return world, setup


# -- report -------------------------------------------------------------------------------------------------


def table(title: str, phases: dict[str, Phase]) -> list[str]:
    lines = [title, f"  {'kind':<10} {'requests':>9} {'rate/s':>9} {'target/s':>9} {'p50 ms':>9} {'p99 ms':>9} "
                    f"{'errors':>7}"]
    for name, phase in phases.items():
        r = phase.result
        target = f"{phase.target:9.1f}" if phase.target else f"{'-':>9}"
        lines.append(f"  {name:<10} {r.ok + r.errors:>9} {r.rate:>9.1f} {target} {r.p50:>9.1f} {r.p99:>9.1f} "
                     f"{r.errors:>7}" + (f"  first: {r.first_error[:100]}" if r.errors else ""))
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the soak at half the peak (default 10)")
    ap.add_argument("--peak-seconds", type=float, default=None, help="length of the peak phase (default 30, "
                                                                     "--quick 8)")
    ap.add_argument("--postgres", default=DEFAULT_POSTGRES,
                    help="a PostgreSQL URL whose server gets a fresh database for the run (dropped afterwards)")
    ap.add_argument("--max-rss-growth", type=float, default=DEFAULT_MAX_RSS_GROWTH, metavar="MIB",
                    help=f"fail when a server process grows more than this over the soak (default "
                         f"{DEFAULT_MAX_RSS_GROWTH:g} MiB)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    ap.add_argument("--quick", action="store_true", help="short warm-up and peak (CI); rates are reported, not "
                                                         "enforced")
    args = ap.parse_args()
    if not 0 < args.minutes <= 24 * 60:
        ap.error("--minutes must be between 0 and 1440")
    warmup = 2.0 if args.quick else 5.0
    peak_seconds = args.peak_seconds or (8.0 if args.quick else 30.0)
    soak_seconds = args.minutes * 60
    failures: list[str] = []
    report: dict[str, Any] = {"hardware": hardware(), "minutes": args.minutes, "quick": args.quick,
                              "max_rss_growth_mib": args.max_rss_growth}
    print(f"hardware: {report['hardware']}", flush=True)
    with tempfile.TemporaryDirectory(prefix="authgate-soak-") as tmp_name, ExitStack() as stack:
        tmp = Path(tmp_name)
        database = stack.enter_context(fresh_database(args.postgres))
        ps = Processes(tmp)
        stack.callback(ps.stop)
        world, setup = start_world(ps, database, tmp)
        report["setup"] = setup
        if setup["agent_token_ttl"] < warmup + peak_seconds + soak_seconds + 60:
            failures.append("the agent token would expire during the run: raise agentauth_agent_token_ttl")
        kinds = build_kinds(world)
        for kind in kinds:
            kind.connections = CONNECTIONS[kind.name]
        print(f"set-up: {json.dumps(setup)}", flush=True)
        print(f"warm-up {warmup:g} s, peak {peak_seconds:g} s (closed loop, connections "
              f"{json.dumps(CONNECTIONS)}), soak {soak_seconds:g} s at half of each kind's peak", flush=True)
        asyncio.run(drive_all(kinds, warmup))
        peak = asyncio.run(drive_all(kinds, peak_seconds))
        for line in table("peak (mixed, closed loop):", peak):
            print(line, flush=True)
        rates = {name: max(0.5, phase.result.rate / 2) for name, phase in peak.items()}
        tree = process_tree(ps.procs)
        before = {pid: rss_mib(pid) for _, pid, _ in tree}
        soak = asyncio.run(drive_all(kinds, soak_seconds, rates))
        after = {pid: rss_mib(pid) for _, pid, _ in tree}
        for line in table(f"soak ({soak_seconds:g} s at half the peak):", soak):
            print(line, flush=True)
        handled = sum(p.result.ok + p.result.errors for p in soak.values())
        print("memory (RSS, MiB) over the soak:", flush=True)
        memory = []
        for label, pid, bounded in tree:
            start, end = before[pid], after[pid]
            growth = end - start
            memory.append({"process": label, "pid": pid, "start_mib": round(start, 1), "end_mib": round(end, 1),
                           "growth_mib": round(growth, 1), "bounded": bounded})
            note = "" if bounded else "  (not bounded)"
            share = growth / start * 100 if start else 0.0
            print(f"  {label:<30} {start:8.1f} -> {end:8.1f}  {growth:+7.1f} ({share:+.1f} %){note}", flush=True)
            if bounded and not growth <= args.max_rss_growth:  # NaN (a process gone) fails too
                failures.append(f"{label}: RSS grew {growth:.1f} MiB (bound {args.max_rss_growth:g} MiB)")
        for name, phase in {**{f"peak {k}": v for k, v in peak.items()},
                            **{f"soak {k}": v for k, v in soak.items()}}.items():
            if phase.result.errors:
                failures.append(f"{name}: {phase.result.errors} errors (first: {phase.result.first_error[:200]})")
        for name, phase in soak.items():
            if phase.target and phase.result.rate < MIN_SUSTAINED * phase.target:
                text = (f"soak {name}: sustained {phase.result.rate:.1f}/s of a {phase.target:.1f}/s target "
                        f"({phase.result.rate / phase.target * 100:.0f} %)")
                if args.quick:
                    print(f"note: {text}", flush=True)
                else:
                    failures.append(text)
        failures += ps.dead() + ps.tracebacks()
        for proc in ps.procs:
            if any(proc.name in f for f in failures):
                print(f"--- {proc.name} log tail ---\n{proc.tail()}", flush=True)
        report.update({"peak": {k: v.row() for k, v in peak.items()}, "soak": {k: v.row() for k, v in soak.items()},
                       "memory": memory, "requests_in_soak": handled, "failures": failures})
    print(f"requests in the soak: {handled}; errors: {sum(p.result.errors for p in soak.values())}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures), flush=True)
        return 1
    print("ok: no errors, memory within the bound", flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--upstream":
        upstream(int(sys.argv[2]))
    else:
        sys.exit(main())
