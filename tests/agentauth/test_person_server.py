"""Negative cases at the person server and the resource, with the exact codes -11 assigns: wrong agent_jkt,
a presented token bound to another key, wrong audience, expired and revoked tokens, an agent that is not ours,
enrolment without credentials."""

from __future__ import annotations

import json
from typing import Any

import httpx
from aauth.agent.token_exchange import extract_resource_token

import aauth
from tests.interop.test_aauth_protocol import PS, RES, World, person_token, signed_get, world  # noqa: F401


async def post_ps(w: World, path: str, body: dict[str, Any], key: Any = None, token: str | None = None
                  ) -> httpx.Response:
    raw = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    headers.update(aauth.sign_request("POST", PS + path, headers, raw, key or w.key, sig_scheme="jwt",
                                      jwt=token or w.agent_token,
                                      additional_signature_components=["content-type", "content-digest"]))
    return await w.http.post(PS + path, headers=headers, content=raw)


async def challenge(w: World, presented: str) -> str:
    rt = extract_resource_token((await signed_get(w, RES + "/notes", presented)).headers)
    assert rt
    return rt


async def test_resource_token_for_another_agent_key_is_invalid_resource_token(world: World) -> None:  # noqa: F811
    w = world
    presented = await person_token(w)
    rt = await challenge(w, presented)
    # a second agent of the same owner presents the first agent's resource token: agent_jkt names another key
    key2, _ = aauth.generate_ed25519_keypair()
    r = await w.http.post(PS + "/agentauth/agents", headers={"Authorization": "Bearer " + "k" * 40},
                          json={"name": "second", "jwk": aauth.public_key_to_jwk(key2.public_key()), "owner": "alice"})
    token2 = r.json()["agent_token"]
    r = await post_ps(w, "/agentauth/auth-token", {"resource_token": rt, "presented_token": presented}, key2, token2)
    assert r.status_code == 400 and r.json()["error"] == "invalid_resource_token"
    assert r.headers["content-type"] == "application/problem+json" and "signature-error" not in r.headers


async def test_presented_token_and_resource_token_must_match(world: World) -> None:  # noqa: F811
    w = world
    first = await person_token(w)
    rt = await challenge(w, first)
    # same agent, same key, another jti (a different body: the same request twice in a second is a replay)
    second: str = await aauth.request_person_token(PS, RES, w.key, w.agent_token, jwks_fetcher=w.fetch_jwks,
                                                   http_client=w.http, justification="again")
    r = await post_ps(w, "/agentauth/auth-token", {"resource_token": rt, "presented_token": second})
    assert r.status_code == 400 and r.json()["error"] == "invalid_resource_token"
    r = await post_ps(w, "/agentauth/auth-token", {"resource_token": rt})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"


async def test_revoked_presented_token(world: World) -> None:  # noqa: F811
    w = world
    presented = await person_token(w)
    rt = await challenge(w, presented)
    jti = aauth.tokens.common.parse_jwt(presented)[1]["jti"]
    assert await w.ctx.store.agentauth.revoke_token(jti)
    r = await post_ps(w, "/agentauth/auth-token", {"resource_token": rt, "presented_token": presented})
    assert r.status_code == 400 and r.json()["error"] == "revoked_presented_token"


async def test_revoked_agent_is_revoked_jwt_everywhere(world: World) -> None:  # noqa: F811
    w = world
    presented = await person_token(w)
    assert await w.ctx.store.agentauth.revoke_agent(w.agent_id)
    r = await post_ps(w, "/agentauth/person-token", {"resource": RES})
    assert r.status_code == 401 and r.headers["signature-error"] == "error=revoked_jwt"
    r = await post_ps(w, "/agentauth/auth-token", {"resource_token": "x", "presented_token": presented})
    assert r.status_code == 401 and r.headers["signature-error"] == "error=revoked_jwt"


async def test_person_token_for_another_audience_is_refused_by_the_resource(world: World) -> None:  # noqa: F811
    w = world
    r = await post_ps(w, "/agentauth/person-token", {"resource": "https://other.test"})
    assert r.status_code == 200
    wrong = r.json()["person_token"]
    r = await signed_get(w, RES + "/me", wrong)
    assert r.status_code == 401 and r.headers["signature-error"] == "error=invalid_jwt"


async def test_person_token_needs_a_server_identifier(world: World) -> None:  # noqa: F811
    w = world
    for bad in ("http://api.test", "https://api.test/x", 5, None):
        r = await post_ps(w, "/agentauth/person-token", {"resource": bad})
        assert r.status_code == 400 and r.json()["error"] == "invalid_request"


async def test_unsigned_and_undigested_ps_calls(world: World) -> None:  # noqa: F811
    w = world
    r = await w.http.post(PS + "/agentauth/person-token", json={"resource": RES})
    assert r.status_code == 401 and r.headers["signature-error"] == "error=invalid_signature"
    raw = json.dumps({"resource": RES}).encode()
    headers = {"Content-Type": "application/json"}
    headers.update(aauth.sign_request("POST", PS + "/agentauth/person-token", headers, raw, w.key,
                                      sig_scheme="jwt", jwt=w.agent_token))
    r = await w.http.post(PS + "/agentauth/person-token", headers=headers, content=raw)
    assert r.status_code == 401 and r.headers["signature-error"].startswith("error=invalid_input")


async def test_enrolment_needs_credentials(world: World) -> None:  # noqa: F811
    w = world
    jwk = aauth.public_key_to_jwk(aauth.generate_ed25519_keypair()[0].public_key())
    r = await w.http.post(PS + "/agentauth/agents", json={"name": "x", "jwk": jwk, "owner": "alice"})
    assert r.status_code == 401
    r = await w.http.post(PS + "/agentauth/agents", json={"name": "x", "jwk": jwk, "owner": "alice"},
                          headers={"Authorization": "Bearer " + "z" * 40})
    assert r.status_code == 401
    r = await w.http.post(PS + "/agentauth/agents", json={"name": "x", "jwk": {**jwk, "alg": "EdDSA"},
                                                          "owner": "alice"},
                          headers={"Authorization": "Bearer " + "k" * 40})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    r = await w.http.post(PS + "/agentauth/agents", content=b"[", headers={"Authorization": "Bearer " + "k" * 40})
    assert r.status_code == 400
