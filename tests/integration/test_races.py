"""Concurrency: single use of codes and refresh tokens, and replay revocation that a race cannot outrun.

Each test runs on every store backend (the ``store`` fixture): SQLite and, when reachable, PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from authgate.config import Settings
from authgate.context import ServerContext
from authgate.store import Store
from tests.helpers import REDIRECT, add_client, authorize_params, pkce_pair, redirect_params

N = 20


@pytest.fixture
async def dev(settings: Settings, make_client: Callable[..., Any]) -> tuple[ServerContext, httpx.AsyncClient]:
    result: tuple[ServerContext, httpx.AsyncClient] = await make_client(settings, auto_approve=True)
    return result


async def _code(http: httpx.AsyncClient, client_id: str) -> dict[str, str]:
    verifier, challenge = pkce_pair()
    q = redirect_params(await http.get("/authorize", params=authorize_params(client_id, challenge)))
    return {"grant_type": "authorization_code", "code": q["code"], "redirect_uri": REDIRECT,
            "code_verifier": verifier}


async def _active(http: httpx.AsyncClient, rs: tuple[str, str], token: str) -> bool:
    r = await http.post("/introspect", data={"token": token}, auth=rs)
    assert r.status_code == 200, r.text
    return bool(r.json()["active"])


async def _resource_server(store: Store) -> tuple[str, str]:
    rs_id, rs_secret = await add_client(store, auth_method="client_secret_basic",
                                        grant_types=["client_credentials"], redirect_uris=[])
    assert rs_secret
    return rs_id, rs_secret


async def _nothing_survives(http: httpx.AsyncClient, rs: tuple[str, str], client_id: str,
                            responses: list[httpx.Response]) -> None:
    for r in responses:
        if r.status_code != 200:
            continue
        body = r.json()
        assert not await _active(http, rs, body["access_token"])
        assert not await _active(http, rs, body["refresh_token"])
        again = await http.post("/token", data={"grant_type": "refresh_token", "client_id": client_id,
                                                "refresh_token": body["refresh_token"]})
        assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


async def test_concurrent_code_redemptions(dev: Any, ctx: ServerContext) -> None:
    _, http = dev
    client_id, _ = await add_client(ctx.store)
    rs = await _resource_server(ctx.store)
    form = {**await _code(http, client_id), "client_id": client_id}
    responses = await asyncio.gather(*[http.post("/token", data=form) for _ in range(N)])
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) <= 1 and all(s in (200, 400) for s in statuses), statuses
    assert all(r.json()["error"] == "invalid_grant" for r in responses if r.status_code == 400)
    # The code was used more than once: whatever the first use produced is revoked (RFC 9700 §4.5.3).
    await _nothing_survives(http, rs, client_id, responses)


async def test_concurrent_refreshes(dev: Any, ctx: ServerContext) -> None:
    _, http = dev
    client_id, _ = await add_client(ctx.store)
    rs = await _resource_server(ctx.store)
    first = (await http.post("/token", data={**await _code(http, client_id), "client_id": client_id})).json()
    form = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"], "client_id": client_id}
    responses = await asyncio.gather(*[http.post("/token", data=form) for _ in range(N)])
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) <= 1 and all(s in (200, 400) for s in statuses), statuses
    await _nothing_survives(http, rs, client_id, responses)


@pytest.mark.parametrize("grant", ["authorization_code", "refresh_token"])
async def test_replay_during_issuance_still_revokes_new_tokens(dev: Any, ctx: ServerContext,
                                                               monkeypatch: pytest.MonkeyPatch, grant: str) -> None:
    """The losing request's revocation lands while the winner is still writing its tokens: the winner's new
    refresh token must not escape it (it would survive as a live family after a detected replay)."""
    ctx_dev, http = dev
    client_id, _ = await add_client(ctx.store)
    rs = await _resource_server(ctx.store)
    if grant == "authorization_code":
        form = {**await _code(http, client_id), "client_id": client_id}
    else:
        first = (await http.post("/token", data={**await _code(http, client_id), "client_id": client_id})).json()
        form = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"], "client_id": client_id}

    keys = ctx_dev.keys
    original = keys.sign
    replays: list[httpx.Response] = []

    async def sign(claims: dict[str, Any], typ: str = "at+jwt") -> str:
        if not replays:
            # The winner has consumed the artefact and is minting its tokens, not yet stored: replay now.
            replays.append(await http.post("/token", data=form))
        return await original(claims, typ)

    monkeypatch.setattr(keys, "sign", sign)
    winner = await http.post("/token", data=form)
    monkeypatch.setattr(keys, "sign", original)

    assert replays and replays[0].status_code == 400 and replays[0].json()["error"] == "invalid_grant"
    assert winner.status_code in (200, 400), winner.text
    await _nothing_survives(http, rs, client_id, [winner])
