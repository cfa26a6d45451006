"""OpenID CIBA Core 1.0, poll mode: ``/bc-authorize`` and the ``urn:openid:params:grant-type:ciba`` grant, decided
through the approval service. Black-box over HTTP, on SQLite and PostgreSQL, with a movable clock.

Authlib (1.9.x) has no CIBA client, so the peer at the end is a plain httpx client that follows the spec: it
discovers the endpoints from the server metadata, authenticates with HTTP Basic, and polls honouring
``interval`` and ``slow_down``, over real sockets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from joserfc import jwt

from authgate.app import build_context, create_app
from authgate.approvals import AlreadyDecided, Expired
from authgate.clock import FrozenClock
from authgate.config import Settings
from authgate.context import ServerContext
from authgate.crypto.hashing import token_hash
from authgate.oauth.ciba import CIBA_REQUEST, INTERVAL
from authgate.oauth.metadata import CIBA_GRANT_TYPE
from authgate.store import tables
from tests.conftest import ISSUER
from tests.helpers import RESOURCE, add_client, add_user
from tests.servers import free_port, serve

Client = tuple[str, str]


async def _ciba_client(ctx: ServerContext, *, refresh: bool = False, **metadata: Any) -> Client:
    grants = [CIBA_GRANT_TYPE, *(["refresh_token"] if refresh else [])]
    client_id, secret = await add_client(ctx.store, auth_method="client_secret_basic", grant_types=grants,
                                         redirect_uris=[], response_types=[], **metadata)
    assert secret is not None
    return client_id, secret


async def _bc_authorize(http: httpx.AsyncClient, client: Client, **params: str) -> httpx.Response:
    form = {"scope": "openid read", "login_hint": "alice", "binding_message": "W-4471", "resource": RESOURCE}
    form.update(params)
    return await http.post("/bc-authorize", data={k: v for k, v in form.items() if v != ""}, auth=client)


async def _start(http: httpx.AsyncClient, client: Client, **params: str) -> dict[str, Any]:
    r = await _bc_authorize(http, client, **params)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body: dict[str, Any] = r.json()
    return body


async def _poll(http: httpx.AsyncClient, client: Client, auth_req_id: str) -> httpx.Response:
    return await http.post("/token", data={"grant_type": CIBA_GRANT_TYPE, "auth_req_id": auth_req_id}, auth=client)


def _error(r: httpx.Response, status: int, error: str) -> None:
    assert r.status_code == status, r.text
    assert r.json()["error"] == error, r.text
    assert r.headers["cache-control"] == "no-store"


async def _approval_id(ctx: ServerContext, auth_req_id: str) -> str:
    artifact = await ctx.store.get_artifact(token_hash(auth_req_id), CIBA_REQUEST)
    assert artifact is not None
    return str(artifact.payload["approval_id"])


async def _state(ctx: ServerContext) -> tuple[int, int, list[Any]]:
    """Rows that a refused request must not create: approval requests, CIBA artefacts, and their payloads."""
    async with ctx.store.engine.connect() as conn:
        approvals = (await conn.execute(sa.select(sa.func.count()).select_from(tables.approval_requests))).scalar()
        rows = (await conn.execute(sa.select(tables.artifacts.c.payload, tables.artifacts.c.consumed_at)
                                   .where(tables.artifacts.c.kind == CIBA_REQUEST))).all()
    return int(approvals or 0), len(rows), sorted((repr(r[0]), r[1]) for r in rows)


@pytest.fixture
async def alice(ctx: ServerContext) -> str:
    return await add_user(ctx.store, "alice")


# -- metadata and registration --------------------------------------------------------------------------------


async def test_metadata_advertises_ciba_poll(client: httpx.AsyncClient) -> None:
    for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
        doc = (await client.get(path)).json()
        assert doc["backchannel_authentication_endpoint"] == f"{ISSUER}/bc-authorize"
        assert doc["backchannel_token_delivery_modes_supported"] == ["poll"]
        assert doc["backchannel_user_code_parameter_supported"] is False
        assert CIBA_GRANT_TYPE in doc["grant_types_supported"]


async def test_registration_accepts_ciba_for_confidential_clients_only(client: httpx.AsyncClient) -> None:
    ok = await client.post("/register", json={"client_name": "agent", "grant_types": [CIBA_GRANT_TYPE, "refresh_token"],
                                              "token_endpoint_auth_method": "client_secret_basic"})
    assert ok.status_code == 201, ok.text
    assert ok.json()["grant_types"] == [CIBA_GRANT_TYPE, "refresh_token"] and ok.json()["client_secret"]
    public = await client.post("/register", json={"grant_types": [CIBA_GRANT_TYPE],
                                                  "token_endpoint_auth_method": "none"})
    _error(public, 400, "invalid_client_metadata")


# -- the flow --------------------------------------------------------------------------------------------------


async def test_pending_then_slow_down_then_approved(client: httpx.AsyncClient, ctx: ServerContext,
                                                    clock: FrozenClock, alice: str) -> None:
    c = await _ciba_client(ctx)
    started = await _start(client, c)
    assert set(started) == {"auth_req_id", "expires_in", "interval"}
    assert started["interval"] == INTERVAL == 5 and started["expires_in"] == ctx.approvals.default_ttl
    auth_req_id = started["auth_req_id"]
    approval = await ctx.approvals.get(await _approval_id(ctx, auth_req_id))
    assert approval is not None and approval.kind == "ciba" and approval.subject == alice
    assert approval.binding_message == "W-4471" and approval.client_id == c[0]
    assert approval.details["scopes"] == ["read"] and approval.details["resource"] == RESOURCE
    assert approval.details["client_name"] == "test client"

    clock.advance(INTERVAL)
    _error(await _poll(client, c, auth_req_id), 400, "authorization_pending")
    clock.advance(INTERVAL - 1)
    _error(await _poll(client, c, auth_req_id), 400, "slow_down")
    # The interval is now 10 s, counted from the last poll.
    clock.advance(INTERVAL + 4)
    _error(await _poll(client, c, auth_req_id), 400, "slow_down")
    clock.advance(2 * INTERVAL + 5)  # now 15 s
    _error(await _poll(client, c, auth_req_id), 400, "authorization_pending")

    await ctx.approvals.decide(approval.id, True, by=alice, channel="web")
    r = await _poll(client, c, auth_req_id)  # a decided request answers at once, whatever the interval
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["token_type"] == "Bearer" and body["scope"] == "read" and "refresh_token" not in body
    claims = jwt.decode(body["access_token"], await ctx.keys.key_set(None), algorithms=["ES256"]).claims
    assert claims["aud"] == RESOURCE and claims["sub"] == alice and claims["scope"] == "read"
    assert claims["client_id"] == c[0] and claims["iss"] == ISSUER

    _error(await _poll(client, c, auth_req_id), 400, "invalid_grant")  # single use
    events = [e["event"] for e in await ctx.store.audit_events()]
    assert {"ciba.requested", "approval.approved", "ciba.issued", "token.issued"} <= set(events)


async def test_first_poll_is_due_after_the_interval(client: httpx.AsyncClient, ctx: ServerContext,
                                                    alice: str) -> None:
    c = await _ciba_client(ctx)
    started = await _start(client, c)
    _error(await _poll(client, c, started["auth_req_id"]), 400, "slow_down")


async def test_refresh_token_only_with_refresh_grant(client: httpx.AsyncClient, ctx: ServerContext,
                                                     alice: str) -> None:
    c = await _ciba_client(ctx, refresh=True)
    started = await _start(client, c, scope="read write offline_access")
    await ctx.approvals.decide(await _approval_id(ctx, started["auth_req_id"]), True, by=alice, channel="web")
    body = (await _poll(client, c, started["auth_req_id"])).json()
    assert body["scope"] == "read write offline_access" and body["refresh_token"]
    r = await client.post("/token", data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"]},
                          auth=c)
    assert r.status_code == 200, r.text
    claims = jwt.decode(r.json()["access_token"], await ctx.keys.key_set(None), algorithms=["ES256"]).claims
    assert claims["sub"] == alice and claims["aud"] == RESOURCE


async def test_denied(client: httpx.AsyncClient, ctx: ServerContext, alice: str) -> None:
    c = await _ciba_client(ctx)
    started = await _start(client, c)
    approval_id = await _approval_id(ctx, started["auth_req_id"])
    await ctx.approvals.decide(approval_id, False, by=alice, channel="web")
    with pytest.raises(AlreadyDecided):
        await ctx.approvals.decide(approval_id, True, by=alice, channel="web")
    _error(await _poll(client, c, started["auth_req_id"]), 400, "access_denied")
    _error(await _poll(client, c, started["auth_req_id"]), 400, "invalid_grant")  # a denial ends it too
    events = [e for e in await ctx.store.audit_events() if e["event"] == "ciba.denied"]
    assert len(events) == 1 and events[0]["client_id"] == c[0] and events[0]["subject"] == alice
    assert not [e for e in await ctx.store.audit_events() if e["event"] == "token.issued"]


async def test_second_decision_refused_and_first_one_counts(client: httpx.AsyncClient, ctx: ServerContext,
                                                            alice: str) -> None:
    c = await _ciba_client(ctx)
    started = await _start(client, c)
    approval_id = await _approval_id(ctx, started["auth_req_id"])
    await ctx.approvals.decide(approval_id, True, by=alice, channel="web")
    with pytest.raises(AlreadyDecided):
        await ctx.approvals.decide(approval_id, False, by=alice, channel="web")
    assert (await _poll(client, c, started["auth_req_id"])).status_code == 200


async def test_expired(client: httpx.AsyncClient, ctx: ServerContext, clock: FrozenClock, alice: str) -> None:
    c = await _ciba_client(ctx)
    started = await _start(client, c, requested_expiry="60")
    assert started["expires_in"] == 60
    clock.advance(61)
    _error(await _poll(client, c, started["auth_req_id"]), 400, "expired_token")
    with pytest.raises(Expired):
        await ctx.approvals.decide(await _approval_id(ctx, started["auth_req_id"]), True, by=alice, channel="web")
    _error(await _poll(client, c, started["auth_req_id"]), 400, "expired_token")


async def test_approved_but_expired_before_redemption(client: httpx.AsyncClient, ctx: ServerContext,
                                                      clock: FrozenClock, alice: str) -> None:
    c = await _ciba_client(ctx)
    started = await _start(client, c, requested_expiry="30")
    await ctx.approvals.decide(await _approval_id(ctx, started["auth_req_id"]), True, by=alice, channel="web")
    clock.advance(30)
    _error(await _poll(client, c, started["auth_req_id"]), 400, "expired_token")


async def test_requested_expiry_is_bounded(client: httpx.AsyncClient, ctx: ServerContext, alice: str) -> None:
    c = await _ciba_client(ctx)
    started = await _start(client, c, requested_expiry="999999999")
    assert started["expires_in"] == ctx.approvals.max_ttl


async def test_another_clients_auth_req_id_refused(client: httpx.AsyncClient, ctx: ServerContext,
                                                   clock: FrozenClock, alice: str) -> None:
    owner, thief = await _ciba_client(ctx), await _ciba_client(ctx)
    started = await _start(client, owner)
    await ctx.approvals.decide(await _approval_id(ctx, started["auth_req_id"]), True, by=alice, channel="web")
    before = await _state(ctx)
    _error(await _poll(client, thief, started["auth_req_id"]), 400, "invalid_grant")
    assert await _state(ctx) == before
    assert (await _poll(client, owner, started["auth_req_id"])).status_code == 200


async def test_another_clients_poll_does_not_touch_timing(client: httpx.AsyncClient, ctx: ServerContext,
                                                          clock: FrozenClock, alice: str) -> None:
    owner, thief = await _ciba_client(ctx), await _ciba_client(ctx)
    started = await _start(client, owner)
    clock.advance(INTERVAL)
    _error(await _poll(client, thief, started["auth_req_id"]), 400, "invalid_grant")
    _error(await _poll(client, owner, started["auth_req_id"]), 400, "authorization_pending")


async def test_auth_req_id_is_not_the_approval_id(client: httpx.AsyncClient, ctx: ServerContext,
                                                  clock: FrozenClock, alice: str) -> None:
    c = await _ciba_client(ctx)
    started = await _start(client, c)
    approval_id = await _approval_id(ctx, started["auth_req_id"])
    assert approval_id not in started["auth_req_id"] and len(started["auth_req_id"]) >= 43
    assert await ctx.store.get_artifact(token_hash(started["auth_req_id"]), CIBA_REQUEST) is not None
    assert await ctx.store.get_artifact(started["auth_req_id"]) is None  # stored by hash only
    clock.advance(INTERVAL)
    _error(await _poll(client, c, approval_id), 400, "invalid_grant")
    _error(await _poll(client, c, "x" * 200), 400, "invalid_grant")


async def test_concurrent_polls_one_on_time(client: httpx.AsyncClient, ctx: ServerContext, clock: FrozenClock,
                                            alice: str) -> None:
    c = await _ciba_client(ctx)
    started = await _start(client, c)
    clock.advance(INTERVAL)
    results = await asyncio.gather(*[_poll(client, c, started["auth_req_id"]) for _ in range(4)])
    errors = sorted(r.json()["error"] for r in results)
    assert errors == ["authorization_pending", "slow_down", "slow_down", "slow_down"]


async def test_concurrent_redemptions_one_wins(client: httpx.AsyncClient, ctx: ServerContext, alice: str) -> None:
    c = await _ciba_client(ctx)
    started = await _start(client, c)
    await ctx.approvals.decide(await _approval_id(ctx, started["auth_req_id"]), True, by=alice, channel="web")
    results = await asyncio.gather(*[_poll(client, c, started["auth_req_id"]) for _ in range(4)])
    assert sorted(r.status_code for r in results) == [200, 400, 400, 400]
    assert {r.json()["error"] for r in results if r.status_code == 400} == {"invalid_grant"}
    issued = [e for e in await ctx.store.audit_events() if e["event"] == "token.issued"]
    assert len(issued) == 1


# -- refused requests ------------------------------------------------------------------------------------------


async def test_public_client_refused(client: httpx.AsyncClient, ctx: ServerContext, alice: str) -> None:
    client_id, _ = await add_client(ctx.store, auth_method="none", grant_types=[CIBA_GRANT_TYPE], redirect_uris=[])
    before = await _state(ctx)
    r = await client.post("/bc-authorize", data={"client_id": client_id, "scope": "read", "login_hint": "alice"})
    _error(r, 401, "invalid_client")
    assert await _state(ctx) == before
    r = await client.post("/token", data={"grant_type": CIBA_GRANT_TYPE, "auth_req_id": "x", "client_id": client_id})
    _error(r, 400, "unauthorized_client")


async def test_client_without_the_grant_refused(client: httpx.AsyncClient, ctx: ServerContext, alice: str) -> None:
    client_id, secret = await add_client(ctx.store, auth_method="client_secret_basic",
                                         grant_types=["client_credentials"], redirect_uris=[])
    assert secret is not None
    before = await _state(ctx)
    _error(await _bc_authorize(client, (client_id, secret)), 400, "unauthorized_client")
    _error(await _poll(client, (client_id, secret), "x"), 400, "unauthorized_client")
    _error(await _bc_authorize(client, (client_id, "wrong")), 401, "invalid_client")
    assert await _state(ctx) == before


@pytest.mark.parametrize(("params", "error"), [
    ({"login_hint": ""}, "invalid_request"),  # no hint at all
    ({"id_token_hint": "eyJ.x.y"}, "invalid_request"),  # two hints
    ({"login_hint_token": "eyJ.x.y"}, "invalid_request"),
    ({"login_hint": "", "login_hint_token": "eyJ.x.y"}, "invalid_request"),  # unsupported hint
    ({"login_hint": "", "id_token_hint": "eyJ.x.y"}, "invalid_request"),
    ({"login_hint": "a" * 256}, "invalid_request"),
    ({"login_hint": "mallory"}, "unknown_user_id"),
    ({"binding_message": "x" * 257}, "invalid_binding_message"),
    ({"binding_message": "line\nbreak"}, "invalid_binding_message"),
    ({"binding_message": "\u202egnp.exe"}, "invalid_binding_message"),
    ({"binding_message": "   "}, "invalid_binding_message"),
    ({"scope": ""}, "invalid_request"),
    ({"scope": "openid"}, "invalid_scope"),
    ({"scope": "openid admin"}, "invalid_scope"),  # not registered for this client
    ({"scope": "read\x01"}, "invalid_scope"),
    ({"user_code": "1234"}, "invalid_request"),
    ({"request": "eyJ.x.y"}, "invalid_request"),
    ({"requested_expiry": "0"}, "invalid_request"),
    ({"requested_expiry": "-5"}, "invalid_request"),
    ({"requested_expiry": "1e3"}, "invalid_request"),
    ({"resource": "not a uri"}, "invalid_target"),
    ({"resource": "https://api.example/#frag"}, "invalid_target"),
])
async def test_malformed_requests_refused_without_state_change(client: httpx.AsyncClient, ctx: ServerContext,
                                                               alice: str, params: dict[str, str],
                                                               error: str) -> None:
    c = await _ciba_client(ctx, scope="read write")
    before = await _state(ctx)
    _error(await _bc_authorize(client, c, **params), 400, error)
    assert await _state(ctx) == before
    assert (await _bc_authorize(client, c)).status_code == 200  # the same client, well-formed: accepted


async def test_malformed_transport_refused(client: httpx.AsyncClient, ctx: ServerContext, alice: str) -> None:
    c = await _ciba_client(ctx)
    before = await _state(ctx)
    _error(await client.post("/bc-authorize", content=b"scope=read&scope=write&login_hint=alice", auth=c,
                             headers={"Content-Type": "application/x-www-form-urlencoded"}), 400, "invalid_request")
    _error(await client.post("/bc-authorize", json={"scope": "read", "login_hint": "alice"}, auth=c),
           400, "invalid_request")
    _error(await client.get("/bc-authorize"), 405, "invalid_request")
    _error(await client.post("/token", data={"grant_type": CIBA_GRANT_TYPE}, auth=c), 400, "invalid_request")
    assert await _state(ctx) == before


async def test_refused_polls_leave_state_alone(client: httpx.AsyncClient, ctx: ServerContext, clock: FrozenClock,
                                               alice: str) -> None:
    """A wrong client or a malformed poll must not burn the auth_req_id or count as a poll."""
    c = await _ciba_client(ctx)
    started = await _start(client, c)
    clock.advance(INTERVAL)
    before = await _state(ctx)
    _error(await _poll(client, (c[0], "wrong"), started["auth_req_id"]), 401, "invalid_client")
    _error(await client.post("/token", data={"grant_type": CIBA_GRANT_TYPE}, auth=c), 400, "invalid_request")
    assert await _state(ctx) == before
    _error(await _poll(client, c, started["auth_req_id"]), 400, "authorization_pending")


# -- a spec-following client over real sockets -----------------------------------------------------------------


async def _ciba_peer(http: httpx.AsyncClient, issuer: str, client: Client, sleep: Callable[[float], Awaitable[None]],
                     on_poll: Callable[[int], Awaitable[None]]) -> tuple[dict[str, Any], list[str]]:
    """What a CIBA poll-mode client does, from the spec alone: discover, authenticate, poll politely."""
    meta = (await http.get(f"{issuer}/.well-known/openid-configuration")).json()
    assert "poll" in meta["backchannel_token_delivery_modes_supported"]
    r = await http.post(meta["backchannel_authentication_endpoint"], auth=client,
                        data={"scope": "openid read", "login_hint": "alice", "binding_message": "Order 7",
                              "resource": RESOURCE})
    r.raise_for_status()
    start = r.json()
    interval = int(start.get("interval", 5))
    seen: list[str] = []
    for n in range(20):
        await sleep(interval)
        await on_poll(n)
        r = await http.post(meta["token_endpoint"], auth=client,
                            data={"grant_type": CIBA_GRANT_TYPE, "auth_req_id": start["auth_req_id"]})
        if r.status_code == 200:
            return r.json(), seen
        error = r.json()["error"]
        seen.append(error)
        if error == "slow_down":
            interval += 5
        elif error != "authorization_pending":
            return r.json(), seen
    raise AssertionError("never finished")


@pytest.mark.interop
async def test_plain_httpx_peer_over_sockets(settings: Settings, ctx: ServerContext, clock: FrozenClock,
                                             alice: str) -> None:
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    server_ctx = await build_context(replace(settings, issuer=issuer, port=port).validate(), clock, ctx.store)
    c = await _ciba_client(server_ctx)

    async def sleep(seconds: float) -> None:
        clock.advance(seconds)
        await asyncio.sleep(0)

    async def person(n: int) -> None:
        if n == 1:  # the person approves after the client's second poll
            pending = await server_ctx.approvals.pending_for(alice)
            assert len(pending) == 1 and pending[0].binding_message == "Order 7"
            await server_ctx.approvals.decide(pending[0].id, True, by=alice, channel="web")

    async def early_poll_too(n: int) -> None:
        if n == 0:
            clock.advance(-1)  # the client's clock runs fast: its first poll comes a second early

    async with serve(create_app(server_ctx), port), httpx.AsyncClient() as http:
        tokens, seen = await _ciba_peer(http, issuer, c, sleep, person)
        assert seen == ["authorization_pending"]
        claims = jwt.decode(tokens["access_token"], await server_ctx.keys.key_set(None), algorithms=["ES256"]).claims
        assert claims["sub"] == alice and claims["aud"] == RESOURCE and claims["iss"] == issuer

        async def approve_later(n: int) -> None:
            await early_poll_too(n)
            if n == 2:
                await person(1)

        tokens, seen = await _ciba_peer(http, issuer, c, sleep, approve_later)
        assert seen == ["slow_down", "authorization_pending"] and tokens["scope"] == "read"
