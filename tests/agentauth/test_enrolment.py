"""HTTP enrolment at the agent provider with one of our OAuth access tokens (``agentauth_enroll_scope``): the
person signs in at our authorization server (authorization code + PKCE, login page), the client enrols an agent
with the token and the agent belongs to the token's subject. Tokens without the scope, for another audience, or
not access tokens at all are refused with RFC 6750's status and error."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from authgate.agent.agentauth import AgentKey
from authgate.clock import FrozenClock
from authgate.config import Settings
from authgate.store import Store
from tests.helpers import REDIRECT, add_client, authorize_params, pkce_pair, redirect_params
from tests.interop.test_aauth_protocol import PS, World, make_world

ENROL = PS + "/agentauth/agents"


@pytest.fixture
async def world(settings: Settings, store: Store, clock: FrozenClock) -> AsyncIterator[World]:
    w = await make_world(settings, store, clock, scopes=(*settings.scopes, "agents:enroll"))
    yield w
    await w.http.aclose()


async def sign_in_token(w: World, scope: str, **extra: str) -> dict[str, Any]:
    """alice signs in on our login page and approves; the client redeems the code: a real token response."""
    client_id, _ = await add_client(w.ctx.store, scope="read agents:enroll offline_access")
    verifier, challenge = pkce_pair()
    params = authorize_params(client_id, challenge, scope=scope, resource=extra.pop("resource", ""), **extra)
    page = await w.http.get(PS + "/authorize", params=params)
    assert page.status_code == 200, page.text[:300]
    request_id = page.text.split('name="request_id" value="', 1)[1].split('"', 1)[0]
    approved = await w.http.post(PS + "/authorize", data={"request_id": request_id, "username": "alice",
                                                           "password": "correct horse", "decision": "approve"})
    code = redirect_params(approved)["code"]
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier,
            "client_id": client_id}
    token = await w.http.post(PS + "/token", data=form)
    assert token.status_code == 200, token.text
    body: dict[str, Any] = token.json()
    return {**body, "client_id": client_id}


def claims(jwt: str) -> dict[str, Any]:
    payload = jwt.split(".")[1]
    value: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return value


async def enrol(w: World, token: str, body: dict[str, Any]) -> httpx.Response:
    return await w.http.post(ENROL, json=body, headers={"Authorization": f"Bearer {token}"})


async def test_an_enrol_scoped_access_token_enrols_for_its_subject(world: World) -> None:
    w = world
    tokens = await sign_in_token(w, "agents:enroll")
    access = tokens["access_token"]
    assert tokens["scope"] == "agents:enroll" and claims(access)["sub"] == w.owner
    key = AgentKey.generate()
    r = await enrol(w, access, {"name": "helper", "jwk": key.public_jwk})
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["agent_id"] == "aauth:helper@authgate.test" and out["expires_in"] > 0
    record = await w.ctx.store.agentauth.get_agent(out["agent_id"])
    assert record is not None and record.owner == w.owner and record.jkt == key.jkt
    agent = claims(out["agent_token"])
    assert agent["sub"] == out["agent_id"] and agent["iss"] == PS and agent["cnf"]["jwk"] == key.public_jwk
    # the owner comes from the token, never from the body
    r = await enrol(w, access, {"name": "other", "jwk": AgentKey.generate().public_jwk, "owner": "mallory"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    assert await w.ctx.store.agentauth.get_agent("aauth:other@authgate.test") is None


async def test_a_token_without_the_enrol_scope_is_insufficient_scope(world: World) -> None:
    w = world
    access = (await sign_in_token(w, "read"))["access_token"]
    r = await enrol(w, access, {"name": "helper", "jwk": AgentKey.generate().public_jwk})
    assert r.status_code == 403 and r.json()["error"] == "insufficient_scope"
    assert r.headers["www-authenticate"] == 'Bearer error="insufficient_scope", scope="agents:enroll"'
    assert "signature-error" not in r.headers
    assert await w.ctx.store.agentauth.get_agent("aauth:helper@authgate.test") is None


async def test_tokens_that_are_not_ours_to_honour_are_invalid_token(world: World) -> None:
    w = world
    jwk = AgentKey.generate().public_jwk
    # minted for another API (RFC 8707 resource): that API could replay it here, so it is not accepted
    elsewhere = await sign_in_token(w, "agents:enroll offline_access", resource="https://api.test")
    # a refresh token is not an access token; garbage is garbage
    for token in (elsewhere["access_token"], elsewhere["refresh_token"], "not-a-token"):
        r = await enrol(w, token, {"name": "helper", "jwk": jwk})
        assert r.status_code == 401 and r.json()["error"] == "invalid_token", token
        assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    r = await w.http.post(ENROL, json={"name": "helper", "jwk": jwk})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    # revoked at the authorization server (RFC 7009)
    tokens = await sign_in_token(w, "agents:enroll")
    access = tokens["access_token"]
    revoked = await w.http.post(PS + "/revoke", data={"token": access, "client_id": tokens["client_id"]})
    assert revoked.status_code == 200
    r = await enrol(w, access, {"name": "helper", "jwk": jwk})
    assert r.status_code == 401 and r.json()["error"] == "invalid_token"
    assert await w.ctx.store.agentauth.get_agent("aauth:helper@authgate.test") is None
