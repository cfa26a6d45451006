"""The kill switch on the resource side: AuthGateMiddleware with KillSwitchVerifier refuses a killed client's,
user's or acting agent's still-valid JWT on the next request (invalid_token), and accepts it again after a
revive."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from authgate.app import create_app
from authgate.clock import FrozenClock
from authgate.context import ServerContext
from authgate.resource import AuthGateMiddleware, ProtectedResource, claims_of
from authgate.resource.verifier import JWTVerifier
from authgate.trust.killswitch import KillSwitch
from authgate.trust.resource import KillSwitchVerifier
from authgate.trust.store import TrustStore
from tests.conftest import ISSUER

RS = "http://127.0.0.1:9100"
RESOURCE = RS + "/api"


async def _whoami(request: Request) -> JSONResponse:
    claims = claims_of(request)
    assert claims is not None
    return JSONResponse({"sub": claims.subject})


@pytest.fixture
async def rs(ctx: ServerContext, clock: FrozenClock) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(ctx))) as as_http:
        inner = JWTVerifier(ISSUER, RESOURCE, jwks_uri=ISSUER + "/jwks.json", http_client=as_http, clock=clock)
        # A separate KillSwitch over the same database: what a resource server in another process holds.
        verifier = KillSwitchVerifier(inner, KillSwitch(TrustStore(ctx.store)))
        app = AuthGateMiddleware(Starlette(routes=[Route("/api/me", _whoami)]), verifier,
                                 ProtectedResource(resource=RESOURCE, authorization_servers=[ISSUER]))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=RS) as http:
            yield http


async def _token(ctx: ServerContext, clock: FrozenClock, **extra: Any) -> dict[str, str]:
    now = int(clock.now())
    claims = {"iss": ISSUER, "sub": "alice", "aud": RESOURCE, "client_id": "client-1", "iat": now, "nbf": now,
              "exp": now + 300, "jti": secrets.token_urlsafe(8), **extra}
    return {"Authorization": "Bearer " + await ctx.keys.sign(claims)}


@pytest.mark.parametrize(("kind", "ident"), [("client", "client-1"), ("user", "alice"), ("agent", "agent-7")])
async def test_killed_identity_is_refused_on_the_next_request(ctx: ServerContext, clock: FrozenClock,
                                                             rs: httpx.AsyncClient, kind: str, ident: str) -> None:
    headers = await _token(ctx, clock, act={"sub": "agent-7"})
    assert (await rs.get("/api/me", headers=headers)).status_code == 200
    await ctx.killswitch.kill(kind, ident, by="admin")
    refused = await rs.get("/api/me", headers=headers)
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_token"
    await ctx.killswitch.revive(kind, ident, by="admin")
    assert (await rs.get("/api/me", headers=headers)).status_code == 200
