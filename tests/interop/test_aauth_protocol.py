"""Interop with PyPI ``aauth`` 0.5.0 (the public -11 peer): its agent-side functions complete the three-party
flow against our agent provider, person server and resource middleware, over in-process transports.

The agent: an Ed25519 key from ``aauth``, enrolled with our provider over HTTP (admin key). It asks our PS for a
person token (``request_person_token``), calls the resource signed by ``aauth.sign_request``, is challenged
for a missing scope (``401 requirement=auth-token; resource-token``), exchanges the resource token at our PS
(``exchange_resource_token``: 202 + interaction URL/code, handed to its callback, where the person decides;
then polling), and the call succeeds with the key-bound auth token. The peer verifies every token we mint
(signature via the issuers' JWKS, ``typ``, ``dwk``, ``cnf``, ``presented_jti``, lifetime bounds).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest
from aauth.agent.token_exchange import extract_resource_token
from joserfc.jwk import OKPKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import aauth
from authgate.agentauth.discovery import httpx_fetcher
from authgate.agentauth.replay import MemoryReplayCache
from authgate.agentauth.resource import AgentAuthResource, require
from authgate.agentauth.tokens import Signer
from authgate.app import build_context, create_app
from authgate.clock import FrozenClock
from authgate.config import Settings
from authgate.net import Fetcher
from authgate.store import Store
from tests.helpers import add_user

PS = "https://authgate.test"
RES = "https://api.test"
ADMIN_KEY = "k" * 40


class HostRouter(httpx.AsyncBaseTransport):
    """One in-process transport per host, like DNS for the test."""

    def __init__(self, apps: dict[str, Any]) -> None:
        self.transports = {h: httpx.ASGITransport(app=a, client=("127.0.0.1", 50000)) for h, a in apps.items()}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.transports[request.url.host].handle_async_request(request)


@dataclass
class World:
    http: httpx.AsyncClient
    ctx: Any
    owner: str
    key: Any
    agent_token: str
    agent_id: str
    jwks: dict[tuple[str, str], dict[str, Any]]

    def fetch_jwks(self, iss: str, dwk: str, kid: str | None = None) -> dict[str, Any]:
        return self.jwks[(iss, dwk)]


async def notes(request: Request) -> JSONResponse:
    state = request.scope["state"]["agentauth"]
    return JSONResponse({"typ": state["typ"], "sub": state["claims"]["sub"], "scope": state["claims"].get("scope")})


DEFAULT_RULES = [require("/me", "person"), require("/notes", "auth", "notes:read", methods=["GET"]),
                 require("/notes", "auth", "notes:read", "notes:write", methods=["POST"])]


async def make_world(settings: Settings, store: Store, clock: FrozenClock, *, rules: list[Any] | None = None,
                     **overrides: Any) -> World:
    """Our server (agent provider + person server) at PS and a notes API at RES behind AgentAuthResource, on
    one in-process router; alice with an agent enrolled over HTTP; the issuers' JWKS for the peer."""
    s = replace(settings, issuer=PS, agentauth_enabled=True, agentauth_admin_key=ADMIN_KEY, agentauth_poll_interval=0,
                **{"agentauth_scope_risk": {"notes:read": "low", "notes:write": "high"}, **overrides}).validate()
    apps: dict[str, Any] = {}
    router = HostRouter(apps)
    ctx = await build_context(s, clock, store, fetcher=Fetcher(transport=router))
    apps["authgate.test"] = create_app(ctx)
    resource_key = OKPKey.generate_key("Ed25519", parameters={"alg": "Ed25519"}, private=True)
    http = httpx.AsyncClient(transport=router)
    api = Starlette(routes=[Route("/notes", notes, methods=["GET", "POST"]), Route("/me", notes),
                            Route("/pay", notes, methods=["POST"])])
    apps["api.test"] = AgentAuthResource(
        api, resource_id=RES, signer=Signer(kid="res-1", key=resource_key), fetch_json=httpx_fetcher(http),
        trusted_person_servers=[PS], replay=MemoryReplayCache(clock), clock=clock.now,
        scope_descriptions={"notes:read": "Read notes", "notes:write": "Write notes"},
        rules=rules if rules is not None else DEFAULT_RULES)
    router.transports = {h: httpx.ASGITransport(app=a, client=("127.0.0.1", 50000)) for h, a in apps.items()}
    owner = await add_user(store, "alice")
    key, _ = aauth.generate_ed25519_keypair()
    jwk = aauth.public_key_to_jwk(key.public_key())
    r = await http.post(PS + "/agentauth/agents", json={"name": "notes-bot", "jwk": jwk, "owner": "alice"},
                        headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert r.status_code == 201, r.text
    jwks: dict[tuple[str, str], dict[str, Any]] = {}
    for iss, dwk in [(PS, "aauth-agent.json"), (PS, "aauth-person.json"), (RES, "aauth-resource.json")]:
        meta = (await http.get(f"{iss}/.well-known/{dwk}")).json()
        assert meta["issuer"] == iss
        jwks[(iss, dwk)] = (await http.get(meta["jwks_uri"])).json()
    return World(http, ctx, owner, key, r.json()["agent_token"], r.json()["agent_id"], jwks)


@pytest.fixture
async def world(settings: Settings, store: Store, clock: FrozenClock) -> AsyncIterator[World]:
    w = await make_world(settings, store, clock)
    yield w
    await w.http.aclose()


async def signed_get(w: World, url: str, token: str) -> httpx.Response:
    headers = aauth.sign_request("GET", url, {}, None, w.key, sig_scheme="jwt", jwt=token)
    return await w.http.get(url, headers=headers)


async def signed_post(w: World, url: str, token: str, body: bytes) -> httpx.Response:
    """The body is covered by Content-Digest (and its type), as the resource's metadata asks."""
    headers = {"Content-Type": "application/json"}
    headers.update(aauth.sign_request("POST", url, headers, body, w.key, sig_scheme="jwt", jwt=token,
                                      additional_signature_components=["content-type", "content-digest"]))
    return await w.http.post(url, headers=headers, content=body)


async def person_token(w: World) -> str:
    token: str = await aauth.request_person_token(PS, RES, w.key, w.agent_token, jwks_fetcher=w.fetch_jwks,
                                                  http_client=w.http)
    return token


async def exchange(w: World, rt: str, presented: str, decide: bool | None = True) -> str:
    seen: list[tuple[str, str]] = []

    async def on_interaction(url: str, code: str) -> None:
        seen.append((url, code))
        page = await w.http.get(url)  # the person's browser: the code leads to the approval page
        assert page.status_code == 303
        approval_id = page.headers["location"].rsplit("/", 1)[1]
        if decide is not None:
            await w.ctx.approvals.decide(approval_id, decide, by=w.owner, channel="web")

    token: str = await aauth.exchange_resource_token(
        rt, w.key, w.agent_token, presented_token=presented, resource_id=RES, person_server=PS,
        jwks_fetcher=w.fetch_jwks, http_client=w.http, on_interaction=on_interaction, max_polls=5,
        capabilities=["interaction"], justification="to keep your notes")
    return token


async def test_three_party_flow_with_the_aauth_peer(world: World) -> None:
    w = world
    presented = await person_token(w)
    me = await signed_get(w, RES + "/me", presented)
    assert me.status_code == 200 and me.json()["typ"] == "aa-person+jwt"
    challenge = await signed_get(w, RES + "/notes", presented)
    assert challenge.status_code == 401
    assert challenge.headers["aauth-requirement"].startswith("requirement=auth-token; resource-token=")
    assert "signature-error" not in challenge.headers and "www-authenticate" not in challenge.headers
    rt = extract_resource_token(challenge.headers)
    assert rt
    auth_token = await exchange(w, rt, presented)
    ok = await signed_get(w, RES + "/notes", auth_token)
    assert ok.status_code == 200, ok.text
    header, person = aauth.tokens.common.parse_jwt(presented)
    assert ok.json() == {"typ": "aa-auth+jwt", "sub": person["sub"], "scope": "notes:read"}
    header, claims = aauth.tokens.common.parse_jwt(auth_token)
    assert header == {"typ": "aa-auth+jwt", "alg": "Ed25519", "kid": header["kid"]}
    assert claims["cnf"]["jwk"] == aauth.public_key_to_jwk(w.key.public_key())
    assert claims["iss"] == claims["ps"] == PS and claims["aud"] == RES and claims["dwk"] == "aauth-person.json"
    # the token is useless with another key: the peer signs with a fresh key, the resource refuses
    other, _ = aauth.generate_ed25519_keypair()
    headers = aauth.sign_request("GET", RES + "/notes", {}, None, other, sig_scheme="jwt", jwt=auth_token)
    stolen = await w.http.get(RES + "/notes", headers=headers)
    assert stolen.status_code == 401 and stolen.headers["signature-error"] == "error=invalid_signature"


async def test_remembered_low_risk_scope_is_granted_without_asking_again(world: World) -> None:
    w = world
    presented = await person_token(w)
    rt = extract_resource_token((await signed_get(w, RES + "/notes", presented)).headers)
    await exchange(w, rt, presented)
    asked = len(await w.ctx.approvals.pending_for(None)) + len(
        await w.ctx.store.list_approvals(subject=w.owner, status="approved"))
    rt2 = extract_resource_token((await signed_get(w, RES + "/notes", presented)).headers)
    token2 = await exchange(w, rt2, presented, decide=None)  # no one decides: it must not need to
    assert (await signed_get(w, RES + "/notes", token2)).status_code == 200
    assert len(await w.ctx.store.list_approvals(subject=w.owner, status="approved")) + len(
        await w.ctx.approvals.pending_for(None)) == asked
    events = [e["event"] for e in await w.ctx.store.audit_events(100)]
    assert "agentauth.consent_granted" in events


async def test_high_risk_scope_asks_every_time(world: World) -> None:
    w = world
    presented = await person_token(w)
    url = RES + "/notes"
    for i in range(2):
        body = json.dumps({"attempt": i}).encode()  # distinct requests (an identical one would be a replay)
        challenge = await signed_post(w, url, presented, body)
        rt = extract_resource_token(challenge.headers)
        assert rt, (challenge.status_code, challenge.headers, challenge.text)
        await exchange(w, rt, presented)
    approved = await w.ctx.store.list_approvals(subject=w.owner, status="approved")
    assert len(approved) == 2
    with pytest.raises(aauth.errors.TokenError):
        await exchange(w, extract_resource_token((await signed_post(w, url, presented, b"{}")).headers),
                       presented, decide=False)  # the person says no: the peer reports denied


async def test_revoking_consent_makes_the_next_request_ask_again(world: World) -> None:
    w = world
    presented = await person_token(w)
    rt = extract_resource_token((await signed_get(w, RES + "/notes", presented)).headers)
    await exchange(w, rt, presented)
    assert await w.ctx.store.agentauth.revoke_consent(w.owner, w.agent_id) == 1
    rt = extract_resource_token((await signed_get(w, RES + "/notes", presented)).headers)
    with pytest.raises(aauth.errors.TokenError):
        await exchange(w, rt, presented, decide=None)  # asked again; nobody answers within max_polls
    rt = extract_resource_token((await signed_get(w, RES + "/notes", presented)).headers)
    await exchange(w, rt, presented, decide=True)


async def test_replayed_signed_request_is_refused(world: World) -> None:
    w = world
    presented = await person_token(w)
    rt = extract_resource_token((await signed_get(w, RES + "/notes", presented)).headers)
    token = await exchange(w, rt, presented)
    url = RES + "/notes"
    headers = {"Content-Type": "application/json"}
    headers.update(aauth.sign_request("POST", url, headers, b'{"x":1}', w.key, sig_scheme="jwt", jwt=token,
                                      additional_signature_components=["content-type", "content-digest"]))
    first = await w.http.post(url, headers=headers, content=b'{"x":1}')
    assert first.status_code == 401 and "auth-token" in first.headers["aauth-requirement"]  # needs notes:write
    again = await w.http.post(url, headers=headers, content=b'{"x":1}')  # captured and sent again
    assert again.status_code == 401 and again.headers["signature-error"] == "error=invalid_signature"


async def test_unsigned_and_agent_only_calls_get_requirements(world: World) -> None:
    w = world
    r = await w.http.get(RES + "/notes")
    assert r.status_code == 401 and r.headers["aauth-requirement"] == "requirement=agent-token"
    r = await signed_get(w, RES + "/notes", w.agent_token)
    assert r.status_code == 401 and r.headers["aauth-requirement"] == "requirement=person-token"
    assert secrets.compare_digest(r.headers.get("signature-error", ""), "")
