"""What the gateway's trust checks (``[trust]``: kill switch, budgets; issue #8) add per request, in process.

The same gateway file is built twice, without and with ``[trust]`` on a migrated database (a SQLite file, or
PostgreSQL with ``--postgres URL``), and driven in process (httpx ASGITransport: no sockets, so the figures are
the gateway's own work). Routes: ``/oauth`` (an ES256 JWT; with trust, plus the kill list's version read) and
``/paid`` (an x402 payment against a facilitator double that accepts everything; with trust, plus the kill
check and the atomic budget counters of the payer). Requests alternate between the two gateways in rounds so
that machine noise hits both; medians and p90 in microseconds are printed.

Run: ``.venv/bin/python benchmarks/gateway_trust_cost.py [--requests N] [--rounds R] [--postgres URL]``.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey
from machine import hardware
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from authgate.config import to_sqlalchemy_url
from authgate.gateway import build_gateway, gateway_config_from_dict
from authgate.store.engine import make_engine, migrate
from authgate.x402 import localchain, wire

AS = "https://as.bench"
API = "https://api.bench"
PAYEE = localchain.label_address("bench-payee")
PAYER = localchain.label_address("bench-payer")



class Router(httpx.AsyncBaseTransport):
    def __init__(self, apps: dict[str, Any]) -> None:
        self.transports = {h: httpx.ASGITransport(app=a) for h, a in apps.items()}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.transports[request.url.host].handle_async_request(request)


def doubles(key: ECKey) -> tuple[Starlette, Starlette, Starlette]:
    """The authorization server's documents, a facilitator that accepts every payment, and the upstream."""
    jwks = {"keys": [dict(key.as_dict(private=False))]}

    async def metadata(_: Request) -> JSONResponse:
        return JSONResponse({"issuer": AS, "jwks_uri": AS + "/jwks.json"})

    async def keys(_: Request) -> JSONResponse:
        return JSONResponse(jwks)

    async def verify(request: Request) -> Response:
        wire.FacilitatorRequest.from_json(await request.body())
        return Response(wire.VerifyResponse(is_valid=True, payer=PAYER).to_json(), media_type="application/json")

    async def settle(request: Request) -> Response:
        body = wire.FacilitatorRequest.from_json(await request.body())
        return Response(wire.SettleResponse(success=True, transaction="0x" + "11" * 32,
                                            network=body.payment_requirements.network, payer=PAYER).to_json(),
                        media_type="application/json")

    async def data(_: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return (Starlette(routes=[Route("/.well-known/oauth-authorization-server", metadata),
                              Route("/jwks.json", keys)]),
            Starlette(routes=[Route("/verify", verify, methods=["POST"]), Route("/settle", settle, methods=["POST"])]),
            Starlette(routes=[Route("/{p:path}", data)]))


def config(trust_url: str | None) -> dict[str, Any]:
    offer = {"mechanism": "x402", "price": "$0.01", "pay_to": PAYEE, "network": localchain.NETWORK}
    data: dict[str, Any] = {
        "gateway": {"upstream": "http://upstream.bench", "public_url": API, "identity": "plain"},
        "oauth": {"issuer": AS}, "x402": {"facilitator_url": "https://facilitator.bench"},
        "routes": [{"path": "/oauth", "allow": [{"mechanism": "oauth"}]}, {"path": "/paid", "allow": [offer]}]}
    if trust_url is not None:
        data["trust"] = {"database_url": trust_url, "approvals": False}
    return data


def payment(offer: wire.PaymentRequirements) -> str:
    return wire.PaymentPayload(x402_version=2, accepted=offer, payload={
        "signature": "0x" + "00" * 65, "authorization": {
            "from": PAYER, "to": PAYEE, "value": offer.amount, "validAfter": "0", "validBefore": "9999999999",
            "nonce": "0x" + secrets.token_hex(32)}}).to_header()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="requests per route, gateway and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--postgres", help="a PostgreSQL URL to hold the trust tables (default: a SQLite file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.postgres or f"sqlite:///{Path(tmp) / 'trust.db'}"
        engine = make_engine(to_sqlalchemy_url(url))
        await migrate(engine)
        await engine.dispose()
        key = ECKey.generate_key("P-256", parameters={"kid": "k1"}, private=True)
        as_app, facilitator, upstream = doubles(key)
        router = Router({"as.bench": as_app, "facilitator.bench": facilitator})
        gateways = {name: build_gateway(gateway_config_from_dict(config(trust)),
                                        upstream_transport=httpx.ASGITransport(app=upstream), http_transport=router)
                    for name, trust in (("without trust", None), ("with trust", url))}
        now = int(time.time())
        token = jwt.encode({"alg": "ES256", "typ": "at+jwt", "kid": "k1"},
                           {"iss": AS, "sub": "alice", "aud": API, "client_id": "bench", "scope": "",
                            "iat": now, "exp": now + 3600, "jti": "j"}, key)
        clients = {name: httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=API)
                   for name, app in gateways.items()}
        offer = wire.PaymentRequired.from_header(
            (await clients["without trust"].get("/paid")).headers["payment-required"]).accepts[0]
        timings: dict[tuple[str, str], list[float]] = {}

        async def one(name: str, route: str) -> None:
            headers = {"Authorization": f"Bearer {token}"} if route == "/oauth" else \
                {"PAYMENT-SIGNATURE": payment(offer)}
            start = time.perf_counter()
            r = await clients[name].get(route, headers=headers)
            timings.setdefault((name, route), []).append(time.perf_counter() - start)
            if r.status_code != 200:
                raise SystemExit(f"{name} {route}: HTTP {r.status_code} {r.text[:200]}")

        for name in clients:  # warm up: JWKS fetch, connection pools, the kill list cache
            for route in ("/oauth", "/paid"):
                await one(name, route)
        timings.clear()
        for _ in range(args.rounds):
            for name in clients:
                for route in ("/oauth", "/paid"):
                    for _ in range(args.requests):
                        await one(name, route)
        for client in clients.values():
            await client.aclose()
        for app in gateways.values():
            await app.aclose()
    print(hardware())
    print(f"trust database: {'PostgreSQL' if args.postgres else 'SQLite file'}; {args.rounds} rounds x "
          f"{args.requests} requests per route and gateway, in process")
    for route in ("/oauth", "/paid"):
        base = statistics.median(timings[("without trust", route)])
        for name in ("without trust", "with trust"):
            values = sorted(timings[(name, route)])
            p50, p90 = statistics.median(values), values[int(len(values) * 0.9)]
            print(f"{route:7} {name:14} p50 {p50 * 1e6:8.0f} us  p90 {p90 * 1e6:8.0f} us  ({p50 / base:.2f}x)")
    sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main())
