"""Protected-route throughput: the same small JSON route served bare and behind ``AuthGateMiddleware``
(RFC 9068 JWT verified locally with the AS's cached JWKS, scope checked), measured in the same run by the same
load generator (``benchmarks/loadgen.py``) over real HTTP. Target (issue 9): protected ≥ 0.8x unprotected.

An ``authgate serve`` on SQLite issues the access tokens. Two token mixes are measured: one token on every
request, and a fresh token on every request (no verified-token cache can help: each is a signature check).

Run: ``.venv/bin/python benchmarks/protected_route.py [--requests N] [--connections C] [--quick]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import as_throughput
from as_throughput import authgate, free_port, hardware, process
from loadgen import Result, drive, request

ROOT = Path(__file__).resolve().parent.parent
API = "https://notes.bench.example"


def serve_api(port: int, issuer: str, protect: bool) -> object:
    exe = str(Path(sys.executable).parent / "uvicorn")
    env = {"BENCH_PROTECT": "1" if protect else "0", "BENCH_ISSUER": issuer, "BENCH_API": API,
           "PYTHONPATH": str(ROOT)}
    return process([exe, "--factory", "benchmarks.apps.notes_api:create", "--host", "127.0.0.1", "--port",
                    str(port), "--log-level", "warning", "--no-access-log"], port, env)


def mint(issuer: str, n: int) -> list[str]:
    client_id, secret = as_throughput._authgate_client
    with httpx.Client(base_url=issuer, auth=(client_id, secret), timeout=30) as http:
        out = []
        for _ in range(n):
            r = http.post("/token", data={"grant_type": "client_credentials", "scope": "read", "resource": API})
            r.raise_for_status()
            out.append(r.json()["access_token"])
    return out


async def measure(label: str, port: int, tokens: list[str], *, total: int, connections: int) -> Result:
    host = f"127.0.0.1:{port}"
    requests = [request("GET", "/notes", host, headers={"Authorization": f"Bearer {t}"}) for t in tokens]
    return await drive(label, "127.0.0.1", port, lambda i: requests[i % len(requests)], total=total,
                       connections=connections, check=lambda b: b.startswith(b'{"notes"'))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=6000, help="requests per figure (default 6000)")
    ap.add_argument("--connections", type=int, default=32, help="concurrent connections (default 32)")
    ap.add_argument("--quick", action="store_true", help="600 requests per figure, 8 connections (CI smoke run)")
    args = ap.parse_args()
    if args.quick:
        args.requests, args.connections = 600, 8
    print(f"hardware: {hardware()}")
    print(f"load: {args.requests} requests per figure over {args.connections} keep-alive connections\n")
    with tempfile.TemporaryDirectory() as tmp:
        as_port = free_port()
        issuer = f"http://127.0.0.1:{as_port}"
        os.environ["AUTHGATE_RESOURCES"] = API
        with authgate(Path(tmp), as_port, None):
            tokens = mint(issuer, min(args.requests, 2000))
            bare_port, guarded_port = free_port(), free_port()
            with serve_api(bare_port, issuer, False), serve_api(guarded_port, issuer, True):
                bare = asyncio.run(measure("unprotected", bare_port, tokens[:1], total=args.requests,
                                           connections=args.connections))
                same = asyncio.run(measure("protected, one token", guarded_port, tokens[:1], total=args.requests,
                                           connections=args.connections))
                fresh = asyncio.run(measure("protected, a fresh token per request", guarded_port, tokens,
                                            total=min(args.requests, len(tokens)), connections=args.connections))
    for r in (bare, same, fresh):
        print(r.line())
    print("\nratios (protected / unprotected, same run; target 0.8x):")
    for r in (same, fresh):
        ratio = r.rate / bare.rate if bare.rate else float("nan")
        print(f"  {r.label:<44} {ratio:>6.2f}x{'  meets target' if ratio >= 0.8 else '  BELOW target 0.8x'}")
    print("  " + json.dumps({"unprotected": round(bare.rate), "protected_one_token": round(same.rate),
                             "protected_fresh_tokens": round(fresh.rate)}))
    if any(r.errors for r in (bare, same, fresh)):
        sys.exit("errors during the run (see above)")


if __name__ == "__main__":
    main()
