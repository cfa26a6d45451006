"""The resource middleware on its own: metadata and JWKS, requirement answers, the SSRF guard on issuer
discovery (agent tokens may name any provider), the agent-provider allowlist, canonical authorities."""

from __future__ import annotations

import time
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from joserfc.jwk import OKPKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from authgate.agentauth import wire
from authgate.agentauth.resource import AgentAuthResource, require
from authgate.agentauth.tokens import Signer, base_claims, public_jwk
from authgate.crypto.httpsig import sign_request
from authgate.crypto.jwk import public_jwk as crypto_public_jwk
from authgate.crypto.signature_key import jwt_scheme

RES = "https://api.test"


async def hello(request: Request) -> JSONResponse:
    return JSONResponse({"agent": request.scope["state"]["agentauth"]["claims"]["sub"]})


def make(**kw: Any) -> tuple[httpx.AsyncClient, AgentAuthResource]:
    key = OKPKey.generate_key("Ed25519", parameters={"alg": "Ed25519"}, private=True)
    app = AgentAuthResource(Starlette(routes=[Route("/hello", hello)]), resource_id=RES,
                            signer=Signer(kid="r1", key=key), rules=[require("/hello", "agent")],
                            scope_descriptions={"a": "A"}, **kw)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=RES), app


def agent_request(iss: str, ap_key: OKPKey, kid: str = "ap1", url: str = RES + "/hello") -> dict[str, str]:
    agent = Ed25519PrivateKey.generate()
    now = int(time.time())
    claims = {**base_claims(iss, wire.DWK_AGENT, now, now + 600), "sub": "aauth:bot@x.test",
              "cnf": {"jwk": crypto_public_jwk(agent)}}
    token = Signer(kid=kid, key=ap_key).sign(wire.TYP_AGENT, claims)
    return sign_request(method="GET", url=url, headers={}, body=b"", key=agent, signature_key=jwt_scheme(token))


async def test_metadata_and_jwks() -> None:
    http, _ = make()
    meta = (await http.get("/.well-known/aauth-resource.json")).json()
    assert meta["issuer"] == RES and meta["jwks_uri"] == RES + "/.well-known/aauth-resource-jwks.json"
    assert meta["scope_descriptions"] == {"a": "A"} and meta["signature_window"] == 60
    keys = (await http.get(meta["jwks_uri"])).json()["keys"]
    assert keys[0]["alg"] == "Ed25519" and keys[0]["kid"] == "r1" and "d" not in keys[0]


async def test_issuer_discovery_is_ssrf_guarded_by_default() -> None:
    http, _ = make()  # no fetch_json: the guarded fetcher
    ap_key = OKPKey.generate_key("Ed25519", parameters={"alg": "Ed25519"}, private=True)
    for iss in ("https://127.0.0.1", "https://169.254.169.254", "https://localhost"):
        r = await http.get("/hello", headers=agent_request(iss, ap_key))
        assert r.status_code == 401 and r.headers["signature-error"] == "error=unknown_key", iss


async def test_agent_provider_allowlist_and_open_federation() -> None:
    ap_key = OKPKey.generate_key("Ed25519", parameters={"alg": "Ed25519"}, private=True)
    docs = {"https://ap.test/.well-known/aauth-agent.json": {"issuer": "https://ap.test",
                                                             "jwks_uri": "https://ap.test/jwks"},
            "https://ap.test/jwks": {"keys": [{**public_jwk(ap_key), "kid": "ap1"}]}}

    async def fetch(url: str) -> Any:
        return docs[url]

    http, _ = make(fetch_json=fetch)
    r = await http.get("/hello", headers=agent_request("https://ap.test", ap_key))
    assert r.status_code == 200 and r.json() == {"agent": "aauth:bot@x.test"}
    http, _ = make(fetch_json=fetch, trusted_agent_providers=["https://other-ap.test"])
    r = await http.get("/hello", headers=agent_request("https://ap.test", ap_key))
    assert r.status_code == 401 and r.headers["signature-error"] == "error=invalid_jwt"
    # signed for another authority (a proxy's public name is listed in canonical_authorities, this one is not)
    http, _ = make(fetch_json=fetch)
    r = await http.get("/hello", headers=agent_request("https://ap.test", ap_key, url="https://evil.test/hello"))
    assert r.status_code == 401 and r.headers["signature-error"] == "error=invalid_signature"
    http, _ = make(fetch_json=fetch, canonical_authorities=["public.test"])
    r = await http.get("/hello", headers=agent_request("https://ap.test", ap_key, url="https://public.test/hello"))
    assert r.status_code == 200


async def test_unsigned_gets_agent_token_requirement() -> None:
    http, _ = make()
    r = await http.get("/hello")
    assert r.status_code == 401 and r.headers[wire.H_REQUIREMENT] == "requirement=agent-token"
    assert "www-authenticate" not in r.headers


