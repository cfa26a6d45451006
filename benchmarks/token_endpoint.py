"""Authorization-server throughput in one process, over the ASGI interface (no sockets, no TLS): client
credentials grants and introspection calls per second, on SQLite (default) or PostgreSQL.

Printed beside them, measured in the same run: the floor (a Starlette endpoint answering a form POST with
static JSON, same transport) and the cost of the ES256 signature each token needs. The ratios say how much
of a grant is framework, crypto and database. Published peer figures (Hydra, Keycloak) are in
shared PERFORMANCE.md; they include HTTP and are not like for like.

Run: ``.venv/bin/python benchmarks/token_endpoint.py [requests] [postgresql://…]``
"""

from __future__ import annotations

import asyncio
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
from starlette.responses import JSONResponse
from starlette.routing import Route

from authgate.app import build_context, create_app
from authgate.config import Settings, to_sqlalchemy_url
from authgate.dcr.admin import add_static_client
from authgate.store import Store

ISSUER = "http://127.0.0.1:9000"



async def rate(label: str, n: int, call: Any) -> float:
    for _ in range(min(50, n)):
        await call()
    start = time.perf_counter()
    for _ in range(n):
        await call()
    per_s = n / (time.perf_counter() - start)
    print(f"  {label:<46} {per_s:>9,.0f} /s  {1e6 / per_s:>8,.0f} µs")
    return per_s


async def main(n: int, db_url: str | None) -> None:
    print(f"hardware: {hardware()}")
    with tempfile.TemporaryDirectory() as tmp:
        url = to_sqlalchemy_url(db_url) if db_url else f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        print(f"database: {url.split('@')[-1]}  requests per figure: {n}\n")
        settings = Settings(issuer=ISSUER, data_dir=Path(tmp), scopes=("read", "offline_access"),
                            default_scopes=("read",)).validate()
        store = await Store.open(url)
        ctx = await build_context(settings, store=store)
        info = await add_static_client(store, settings, {"client_name": "bench", "grant_types": ["client_credentials"],
                                                         "token_endpoint_auth_method": "client_secret_basic"})
        auth = (info["client_id"], info["client_secret"])
        transport = httpx.ASGITransport(app=create_app(ctx))
        async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as http:
            async def grant() -> None:
                r = await http.post("/token", data={"grant_type": "client_credentials"}, auth=auth)
                assert r.status_code == 200, r.text

            token = (await http.post("/token", data={"grant_type": "client_credentials"}, auth=auth)).json()
            form = {"token": token["access_token"]}

            async def introspect() -> None:
                r = await http.post("/introspect", data=form, auth=auth)
                assert r.json()["active"] is True

            async def floor_ok(request: Request) -> JSONResponse:
                await request.form()
                return JSONResponse({"ok": True}, headers={"Cache-Control": "no-store"})

            floor_app = Starlette(routes=[Route("/token", floor_ok, methods=["POST"])])
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=floor_app), base_url=ISSUER) as fl:
                async def floor() -> None:
                    await fl.post("/token", data={"grant_type": "client_credentials"}, auth=auth)

                key = ECKey.generate_key("P-256", private=True)

                async def sign() -> None:
                    jwt.encode({"alg": "ES256"}, {"iss": ISSUER, "sub": "x", "exp": 1}, key)

                g = await rate("client_credentials grant (POST /token)", n, grant)
                i = await rate("introspection (POST /introspect)", n, introspect)
                f = await rate("floor: Starlette form POST -> static JSON", n, floor)
                s = await rate("ES256 sign alone (joserfc)", n, sign)
        print(f"\n  grant = {g / f:.2f}x the floor; signing is {100 * g / s:.0f}% of a grant's time; "
              f"introspection = {i / f:.2f}x the floor")
        await store.close()


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    asyncio.run(main(count, sys.argv[2] if len(sys.argv) > 2 else None))
