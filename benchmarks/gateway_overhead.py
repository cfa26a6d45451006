"""Gateway overhead per request: the same small JSON response fetched directly from the upstream and through
``authgate gateway``, in the same run, as a ratio of medians (issue #7 target: at most 1.5 times at p50).

Three processes on loopback: the upstream (uvicorn + Starlette, a ~60-byte JSON answer; it also plays the
authorization server's metadata and JWKS), the gateway (the real ``authgate gateway`` command, signed identity
headers), and this client (one keep-alive ``httpx`` connection per target, sequential requests, direct and
proxied interleaved in rounds so that machine noise hits both). Routes through the gateway: ``/public`` (pure
proxy cost) and ``/oauth`` (plus ES256 JWT verification and the scope check).

Run: ``.venv/bin/python benchmarks/gateway_overhead.py [requests-per-round] [rounds]`` (``--help``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import machine

from authgate.demo.servers import free_port


def hardware() -> str:
    return machine.hardware(f"httpx {httpx.__version__}")

def upstream(port: int, issuer: str, jwks: str) -> None:
    """The upstream process: a plain API that knows nothing of authgate (and the AS documents)."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def data(_: object) -> JSONResponse:
        return JSONResponse({"city": "Lisbon", "forecast": "sunny", "temperature_c": 21})

    async def metadata(_: object) -> JSONResponse:
        return JSONResponse({"issuer": issuer, "jwks_uri": issuer + "/jwks.json"})

    async def keys(_: object) -> Response:
        return Response(jwks, media_type="application/json")

    app = Starlette(routes=[Route("/public", data), Route("/oauth", data), Route("/direct", data),
                            Route("/.well-known/oauth-authorization-server", metadata), Route("/jwks.json", keys)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def relay(port: int, upstream_port: int) -> None:
    """``--floor``: a bare TCP relay (uvloop, no HTTP parsing, no policy): what one more process hop costs on this
    machine with no work at all, the floor under any proxy's overhead."""
    import uvloop

    class Side(asyncio.Protocol):
        def __init__(self) -> None:
            self.transport: asyncio.Transport | None = None
            self.other: Side | None = None
            self.pending: list[bytes] = []

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport  # type: ignore[assignment]

        def data_received(self, data: bytes) -> None:
            if self.other is not None and self.other.transport is not None:
                self.other.transport.write(data)
            else:
                self.pending.append(data)

        def connection_lost(self, exc: Exception | None) -> None:
            if self.other is not None and self.other.transport is not None:
                self.other.transport.close()

    class Client(Side):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            asyncio.get_running_loop().create_task(self.connect())

        async def connect(self) -> None:
            _, up = await asyncio.get_running_loop().create_connection(Side, "127.0.0.1", upstream_port)
            up.other, self.other = self, up
            for data in self.pending:
                up.transport.write(data)  # type: ignore[union-attr]

    async def serve() -> None:
        server = await asyncio.get_running_loop().create_server(Client, "127.0.0.1", port)
        await server.serve_forever()

    uvloop.run(serve())


async def wait_up(url: str) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(300):
            try:
                await http.get(url)
                return
            except httpx.TransportError:
                await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not start")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux ``/proc``), 0.0 elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def timed(http: httpx.AsyncClient, url: str, n: int, headers: dict[str, str]) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        r = await http.get(url, headers=headers)
        out.append(time.perf_counter() - start)
        if r.status_code != 200:
            raise RuntimeError(f"{url}: {r.status_code} {r.text}")
    return out


class _InstantAnswer:
    body = b'{"city":"Lisbon","forecast":"sunny","temperature_c":21}'
    status = 200
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]

    async def small_body(self) -> bytes:
        return self.body

    async def aclose(self) -> None:
        return None


class _InstantPool:
    """Stands in for the upstream connection pool: isolates the gateway's own code from sockets and servers."""

    async def request(self, *args: object, **kwargs: object) -> _InstantAnswer:
        return _InstantAnswer()

    async def aclose(self) -> None:
        return None


async def code_cost(token: str, jwks: str, issuer: str, audience: str, n: int = 5000,
                    remember: bool = True) -> dict[str, float]:
    """CPU per request of PolicyMiddleware + Proxy alone (no sockets, no HTTP server), per route kind; with
    ``remember`` the verifier keeps verified tokens as the gateway's does, else every call checks the signature."""
    from authgate.gateway import Proxy
    from authgate.gateway.config import VERIFIED_CACHE
    from authgate.policy import OAuth, Policy, PolicyMiddleware, Public, Route
    from authgate.resource import BearerGuard, JWTVerifier, ProtectedResource

    keys = httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(200, content=jwks.encode())))
    resource = ProtectedResource(resource=audience, authorization_servers=[issuer])
    verifier = JWTVerifier(issuer, audience, jwks_uri=issuer + "/jwks.json", http_client=keys,
                           verified_cache=VERIFIED_CACHE if remember else 0)
    guard = BearerGuard(verifier, resource)
    proxy = Proxy(issuer, identity_secret=secrets.token_bytes(32))
    proxy.pool = _InstantPool()  # type: ignore[assignment]
    app = PolicyMiddleware(proxy, Policy((Route("/public", (Public(),)), Route("/oauth", (OAuth(("bench:read",)),)))),
                           bearer=guard)
    out: dict[str, float] = {}

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: object) -> None:
        return None

    for path, extra in (("/public", []), ("/oauth", [(b"authorization", f"Bearer {token}".encode())])):
        scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "query_string": b"",
                 "scheme": "http", "client": ("127.0.0.1", 50000),
                 "headers": [(b"host", b"gw"), (b"accept", b"*/*"), (b"user-agent", b"python-httpx"),
                             (b"accept-encoding", b"gzip, deflate"), *extra]}
        for _ in range(200):
            await app(dict(scope), receive, send)
        start = time.process_time()
        for _ in range(n):
            await app(dict(scope), receive, send)
        out[path] = (time.process_time() - start) / n
    await keys.aclose()
    return out


async def main(per_round: int, rounds: int, floor: bool = False) -> None:
    from joserfc import jwt
    from joserfc.jwk import ECKey

    up_port, gw_port, relay_port = free_port(), free_port(), free_port()
    issuer = f"http://127.0.0.1:{up_port}"
    gateway = f"http://127.0.0.1:{gw_port}"
    key = ECKey.generate_key("P-256", parameters={"kid": "k1", "alg": "ES256", "use": "sig"}, private=True)
    now = int(time.time())
    token = jwt.encode({"alg": "ES256", "typ": "at+jwt", "kid": "k1"},
                       {"iss": issuer, "sub": "user-1", "aud": gateway, "client_id": "agent-1", "scope": "bench:read",
                        "iat": now, "nbf": now, "exp": now + 3600, "jti": "j1"}, key)
    jwks = json.dumps({"keys": [dict(key.as_dict(private=False))]})
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "gateway.toml"
        config.write_text(f"""
[gateway]
upstream = "{issuer}"
public_url = "{gateway}"
identity_secret_env = "BENCH_SECRET"

[oauth]
issuer = "{issuer}"

[[routes]]
path = "/public"
  [[routes.allow]]
  mechanism = "public"

[[routes]]
path = "/oauth"
  [[routes.allow]]
  mechanism = "oauth"
  scopes = ["bench:read"]
""")
        env = {**os.environ, "BENCH_SECRET": secrets.token_hex(32)}
        up = await asyncio.create_subprocess_exec(sys.executable, __file__, "--upstream", str(up_port), issuer, jwks)
        gw = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "authgate.cli", "gateway", "--config", str(config), "--port", str(gw_port),
            "--log-level", "warning", env=env, stdout=asyncio.subprocess.DEVNULL)
        relayed = await asyncio.create_subprocess_exec(sys.executable, __file__, "--relay", str(relay_port),
                                                       str(up_port)) if floor else None
        try:
            await wait_up(issuer + "/direct")
            await wait_up(gateway + "/public")
            bearer = {"Authorization": f"Bearer {token}"}
            targets = {"direct": (issuer + "/direct", {}), "gateway /public": (gateway + "/public", {}),
                       "gateway /oauth": (gateway + "/oauth", bearer)}
            if relayed is not None:
                await wait_up(f"http://127.0.0.1:{relay_port}/direct")
                targets["tcp relay (floor)"] = (f"http://127.0.0.1:{relay_port}/direct", {})
            samples: dict[str, list[float]] = {name: [] for name in targets}
            clients = {name: httpx.AsyncClient() for name in targets}
            try:
                for name, (url, headers) in targets.items():  # warm-up: connections, JWKS, code paths
                    await timed(clients[name], url, 200, headers)
                cpu_before = cpu_seconds(up.pid), cpu_seconds(gw.pid)
                for _ in range(rounds):
                    for name, (url, headers) in targets.items():
                        samples[name] += await timed(clients[name], url, per_round, headers)
                cpu_after = cpu_seconds(up.pid), cpu_seconds(gw.pid)
            finally:
                for c in clients.values():
                    await c.aclose()
        finally:
            for p in (gw, up, relayed):
                if p is not None:
                    p.terminate()
                    await p.wait()
    print(hardware())
    print(f"{per_round * rounds} sequential requests per target, keep-alive, interleaved in {rounds} rounds")
    direct = statistics.median(samples["direct"])
    print(f"{'target':18} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'p50 ratio':>10}")
    for name, values in samples.items():
        q = statistics.quantiles(values, n=100)
        p50 = statistics.median(values)
        print(f"{name:18} {p50 * 1e3:8.3f} {q[89] * 1e3:8.3f} {q[98] * 1e3:8.3f} {p50 / direct:9.2f}x")
    n = per_round * rounds
    up_cpu = (cpu_after[0] - cpu_before[0]) / (len(targets) * n)  # the upstream answered every request
    gw_cpu = (cpu_after[1] - cpu_before[1]) / (2 * n)
    print(f"CPU per request (server processes): upstream {up_cpu * 1e6:.0f} us, gateway {gw_cpu * 1e6:.0f} us "
          f"(mean of /public and /oauth); proxied/direct CPU = {(up_cpu + gw_cpu) / up_cpu:.2f}x")
    own = await code_cost(token, jwks, issuer, gateway)
    first = await code_cost(token, jwks, issuer, gateway, n=500, remember=False)
    print(f"gateway code alone (policy + proxy, no sockets): /public {own['/public'] * 1e6:.0f} us, "
          f"/oauth {own['/oauth'] * 1e6:.0f} us CPU per request ({first['/oauth'] * 1e6:.0f} us the first time a "
          "token is seen: its ES256 signature)")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (latency ratios need "
          "a quiet machine: each extra process hop waits for a CPU)")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Gateway overhead: p50 latency through authgate gateway vs direct to the upstream, same run "
                    "(issue #7 target: <= 1.5x).")
    parser.add_argument("per_round", nargs="?", type=int, default=500, help="requests per target per round (500)")
    parser.add_argument("rounds", nargs="?", type=int, default=10, help="rounds, targets interleaved (10)")
    parser.add_argument("--floor", action="store_true",
                        help="also time a bare TCP relay: what one more process hop costs with no work at all")
    parser.add_argument("--upstream", nargs=3, metavar=("PORT", "ISSUER", "JWKS"), help=argparse.SUPPRESS)
    parser.add_argument("--relay", nargs=2, type=int, metavar=("PORT", "UPSTREAM_PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.per_round < 10 or args.rounds < 1:
        parser.error("per_round must be at least 10 and rounds at least 1")
    return args


if __name__ == "__main__":
    arguments = parse_args(sys.argv[1:])
    if arguments.upstream:
        upstream(int(arguments.upstream[0]), arguments.upstream[1], arguments.upstream[2])
    elif arguments.relay:
        relay(*arguments.relay)
    else:
        asyncio.run(main(arguments.per_round, arguments.rounds, arguments.floor))
