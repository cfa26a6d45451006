"""The kill switch inside the authorization server: token issuance refused, introspection inactive, a revive
restores both; pending approvals of the client are denied."""

from __future__ import annotations

import httpx

from authgate.context import ServerContext
from tests.helpers import add_client


async def _token(http: httpx.AsyncClient, cid: str, secret: str) -> httpx.Response:
    return await http.post("/token", data={"grant_type": "client_credentials", "scope": "read"},
                           auth=(cid, secret))


async def _active(http: httpx.AsyncClient, cid: str, secret: str, token: str) -> bool:
    res = await http.post("/introspect", data={"token": token}, auth=(cid, secret))
    assert res.status_code == 200
    return bool(res.json()["active"])


async def test_kill_client_stops_tokens_and_introspection(ctx: ServerContext, client: httpx.AsyncClient) -> None:
    cid, secret = await add_client(ctx.store, auth_method="client_secret_basic", grant_types=["client_credentials"])
    rs, rs_secret = await add_client(ctx.store, auth_method="client_secret_basic",
                                     grant_types=["client_credentials"])
    assert secret is not None and rs_secret is not None
    first = await _token(client, cid, secret)
    assert first.status_code == 200, first.text
    token = first.json()["access_token"]
    assert await _active(client, rs, rs_secret, token)

    assert await ctx.killswitch.kill("client", cid, by="admin", reason="test")
    refused = await _token(client, cid, secret)
    assert refused.status_code == 400
    assert refused.json() == {"error": "invalid_grant", "error_description": "disabled by the kill switch"}
    assert not await _active(client, rs, rs_secret, token)
    assert (await _token(client, rs, rs_secret)).status_code == 200

    assert await ctx.killswitch.revive("client", cid, by="admin")
    assert await _active(client, rs, rs_secret, token)
    assert (await _token(client, cid, secret)).status_code == 200
