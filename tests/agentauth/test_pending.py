"""The deferred pattern at the person server: 202 with Location, Retry-After, Cache-Control no-store and the
requirement; polls only by the key that asked; one collection (then 410); denial 403 and expiry 408 without
Signature-Error; the interaction code leads to the approval page and nowhere else."""

from __future__ import annotations

import json
import secrets
from typing import Any

import httpx
from aauth.agent.token_exchange import extract_resource_token

import aauth
from tests.agentauth.test_person_server import post_ps
from tests.interop.test_aauth_protocol import PS, RES, World, signed_get, world  # noqa: F401


async def ask(w: World, capabilities: list[str] | None = None) -> httpx.Response:
    # a distinct body each time: the same signed request twice in one second would be a replay
    presented = await aauth.request_person_token(PS, RES, w.key, w.agent_token, jwks_fetcher=w.fetch_jwks,
                                                 http_client=w.http, justification=secrets.token_hex(4))
    rt = extract_resource_token((await signed_get(w, RES + "/notes", presented)).headers)
    body: dict[str, Any] = {"resource_token": rt, "presented_token": presented}
    if capabilities is not None:
        body["capabilities"] = capabilities
    return await post_ps(w, "/agentauth/auth-token", body)


async def poll(w: World, location: str, key: Any = None) -> httpx.Response:
    return await w.http.get(location, headers=aauth.sign_request("GET", location, {}, None, key or w.key,
                                                                  sig_scheme="jwt", jwt=w.agent_token))


async def test_no_channel_and_no_interaction_is_user_unreachable(world: World) -> None:  # noqa: F811
    r = await ask(world)
    assert r.status_code == 403 and r.json()["error"] == "user_unreachable"
    assert "signature-error" not in r.headers and "accept-signature-scheme" not in r.headers


async def test_pending_answers_and_single_collection(world: World) -> None:  # noqa: F811
    w = world
    r = await ask(w, ["interaction"])
    assert r.status_code == 202 and r.json() == {"status": "pending"}
    assert r.headers["cache-control"] == "no-store" and r.headers["retry-after"] == "0"
    location = r.headers["location"]
    assert location.startswith(PS + "/agentauth/pending/")
    requirement = r.headers["aauth-requirement"]
    assert requirement.startswith(f'requirement=interaction; url="{PS}/agentauth/interaction"; code="')
    code = requirement.rsplit('code="', 1)[1].rstrip('"')
    # another key (even a valid agent of the same person) cannot poll: it looks unknown
    other, _ = aauth.generate_ed25519_keypair()
    enrolled = await w.http.post(PS + "/agentauth/agents", headers={"Authorization": "Bearer " + "k" * 40},
                                 json={"name": "other", "jwk": aauth.public_key_to_jwk(other.public_key()),
                                       "owner": "alice"})
    foreign = await w.http.get(location, headers=aauth.sign_request(
        "GET", location, {}, None, other, sig_scheme="jwt", jwt=enrolled.json()["agent_token"]))
    assert foreign.status_code == 404
    assert (await poll(w, location)).status_code == 202
    # the person: the code (lower case, without the hyphen, I for 1 also work) leads to the approval page
    page = await w.http.get(PS + "/agentauth/interaction", params={"code": code.replace("-", "").lower()})
    assert page.status_code == 303 and page.headers["location"].startswith("/approvals/")
    assert (await w.http.get(PS + "/agentauth/interaction", params={"code": "0000-0000"})).status_code == 404
    await w.ctx.approvals.decide(page.headers["location"].rsplit("/", 1)[1], True, by=w.owner, channel="web")
    done = await poll(w, location)
    assert done.status_code == 200 and done.json()["auth_token"].count(".") == 2
    gone = await poll(w, location)
    assert gone.status_code == 410 and gone.json()["error"] == "invalid_code"


async def test_denied_and_expired(world: World) -> None:  # noqa: F811
    w = world
    r = await ask(w, ["interaction"])
    pending = await w.ctx.approvals.pending_for(w.owner)
    await w.ctx.approvals.decide(pending[0].id, False, by=w.owner, channel="web")
    denied = await poll(w, r.headers["location"])
    assert denied.status_code == 403 and denied.json()["error"] == "denied" and "signature-error" not in denied.headers
    r = await post_ps(w, "/agentauth/auth-token", {"resource_token": extract_resource_token(
        (await signed_get(w, RES + "/notes", await aauth.request_person_token(
            PS, RES, w.key, w.agent_token, jwks_fetcher=w.fetch_jwks, http_client=w.http, justification="2"))
         ).headers), "presented_token": "x"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_presented_token"
    r = await ask(w, ["interaction"])
    w.ctx.clock.advance(w.ctx.settings.agentauth_pending_ttl + 1)
    # the signature of a poll is checked against the server clock: sign with the server's "now"
    location = r.headers["location"]
    from authgate.crypto.httpsig import sign_request
    from authgate.crypto.signature_key import jwt_scheme

    headers = sign_request(method="GET", url=location, headers={}, body=b"", key=w.key,
                           signature_key=jwt_scheme(w.agent_token), created=int(w.ctx.clock.now()))
    expired = await w.http.get(location, headers=headers)
    assert expired.status_code == 408 and expired.json()["error"] == "expired", expired.text


async def test_hostile_bodies(world: World) -> None:  # noqa: F811
    w = world
    big = json.dumps({"resource": RES, "pad": "x" * 40000}).encode()
    r = await w.http.post(PS + "/agentauth/person-token", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    for raw in (b"[1]", b'{"resource": NaN}', b'{"resource": "\\ud800"}', b"\xff"):
        headers = {"Content-Type": "application/json"}
        headers.update(aauth.sign_request("POST", PS + "/agentauth/person-token", headers, raw, w.key,
                                          sig_scheme="jwt", jwt=w.agent_token,
                                          additional_signature_components=["content-type", "content-digest"]))
        r = await w.http.post(PS + "/agentauth/person-token", headers=headers, content=raw)
        assert r.status_code == 400 and r.json()["error"] == "invalid_request", raw
    r = await w.http.post(PS + "/agentauth/person-token", content=b"{}", headers={
        "Signature-Input": "sig=(", "Signature": "sig=:!!:", "Signature-Key": "sig=jwt;jwt=1"})
    assert r.status_code == 401 and "signature-error" in r.headers


async def test_an_agent_cannot_flood_its_person(world: World) -> None:  # noqa: F811
    from authgate.agentauth.person import MAX_PENDING_PER_AGENT

    for _ in range(MAX_PENDING_PER_AGENT):
        assert (await ask(world, ["interaction"])).status_code == 202
    r = await ask(world, ["interaction"])
    assert r.status_code == 429 and r.json()["error"] == "slow_down" and r.headers["retry-after"] == "30"
    assert len(await world.ctx.approvals.pending_for(world.owner)) == MAX_PENDING_PER_AGENT
