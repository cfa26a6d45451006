"""``PolicyMiddleware`` inside an app (FastAPI here): who got in reaches the handler, the well-known documents are
served, a failed Agent Auth signature keeps the other challenges, configuration mistakes are refused."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from authgate.agentauth.resource import AgentAuthResource
from authgate.agentauth.tokens import Signer
from authgate.ops.metrics import Metrics
from authgate.policy import (
    AgentAuth,
    Attestation,
    OAuth,
    Policy,
    PolicyError,
    PolicyMiddleware,
    Public,
    Route,
    identity_of,
)
from authgate.resource import BearerGuard, ProtectedResource, claims_of
from authgate.trust import wire as trust_wire
from authgate.trust.checks import TrustChecks
from authgate.trust.issuers import TrustedIssuers
from tests.gateway.test_gateway import API, TOKENS, TableVerifier
from tests.ops.test_operations import sample


async def no_fetch(url: str) -> Any:
    raise AssertionError(f"unexpected fetch of {url}")


def agentauth() -> AgentAuthResource:
    key = OKPKey.generate_key("Ed25519", parameters={"kid": "r1", "alg": "Ed25519"}, private=True)

    async def nothing(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the policy middleware must not call the Agent Auth resource's own app")

    return AgentAuthResource(nothing, resource_id=API, signer=Signer(kid="r1", key=key), rules=[],
                             fetch_json=no_fetch, clock=time.time)


POLICY = Policy((Route("/open", (Public(),)),
                 Route("/notes", (OAuth(("weather:read",)), AgentAuth("auth", ("notes:read",))), frozenset({"GET"}))),
                unmatched="public", scope_descriptions={"notes:read": "Read your notes"})


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    api = FastAPI()

    @api.get("/notes")
    async def notes(request: Request) -> dict[str, Any]:
        who, claims = identity_of(request), claims_of(request)
        assert who is not None and claims is not None
        return {"who": who.as_dict() | {"scopes": list(who.scopes)}, "sub": claims.subject}

    @api.get("/open")
    @api.get("/elsewhere")
    async def open_(request: Request) -> dict[str, Any]:
        who = identity_of(request)
        return {"mechanism": who.mechanism if who else None}

    resource = ProtectedResource(resource=API, authorization_servers=["https://as.test"])
    app = PolicyMiddleware(api, POLICY, bearer=BearerGuard(TableVerifier(TOKENS), resource), agentauth=agentauth())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=API) as client:
        yield client


async def test_the_handler_sees_who_got_in(http: httpx.AsyncClient) -> None:
    r = await http.get("/notes", headers={"Authorization": "Bearer reader"})
    assert r.status_code == 200
    assert r.json() == {"who": {"mechanism": "oauth", "subject": "alice", "agent": "bot", "scopes": ["weather:read"]},
                        "sub": "alice"}
    assert (await http.get("/open")).json() == {"mechanism": "public"}
    assert (await http.get("/elsewhere")).json() == {"mechanism": "public"}  # unmatched = "public"


async def test_documents_are_served(http: httpx.AsyncClient) -> None:
    assert (await http.get("/.well-known/oauth-protected-resource")).json()["resource"] == API
    assert (await http.get("/.well-known/aauth.json")).json() == {
        "scope_descriptions": [{"scope": "notes:read", "description": "Read your notes"}]}
    meta = (await http.get("/.well-known/aauth-resource.json")).json()
    assert meta["issuer"] == API
    jwks = (await http.get("/.well-known/aauth-resource-jwks.json")).json()
    assert jwks["keys"][0]["kid"] == "r1" and "d" not in jwks["keys"][0]


async def test_a_bad_signature_keeps_the_bearer_challenge(http: httpx.AsyncClient) -> None:
    r = await http.get("/notes", headers={"Signature-Input": 'sig=("@method");created=1', "Signature": "sig=:AA==:",
                                          "Signature-Key": "sig=jwt;jwt=\"x\""})
    assert r.status_code == 401 and r.headers["signature-error"].startswith("error=")
    assert r.headers["www-authenticate"].startswith('Bearer resource_metadata="https://api.test/')
    assert r.headers["aauth-requirement"] == "requirement=agent-token"
    none = await http.get("/notes")
    assert none.status_code == 401 and none.json()["accepted"] == ["oauth", "agentauth"]


def test_mechanisms_the_policy_names_must_be_configured() -> None:
    with pytest.raises(PolicyError, match=r"^routes\[1\] \(GET /notes\): allow\[0\] \(oauth\): the oauth mechanism is "
                                          r"not configured \(\[oauth\]\)$"):
        PolicyMiddleware(FastAPI(), POLICY)


async def test_cors_preflights_pass_only_for_routes_the_policy_serves() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["path"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    resource = ProtectedResource(resource=API, authorization_servers=["https://as.test"])
    deny = Policy(POLICY.routes)  # unmatched = "deny"
    middleware = PolicyMiddleware(app, deny, bearer=BearerGuard(TableVerifier(TOKENS), resource),
                                  agentauth=agentauth())
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "GET"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=middleware), base_url=API) as http:
        served = await http.options("/notes", headers=preflight)
        unknown = await http.options("/admin", headers=preflight)
        wrong_method = await http.options("/notes", headers={**preflight, "Access-Control-Request-Method": "DELETE"})
    assert served.status_code == 204 and seen == ["/notes"]
    assert unknown.status_code == 403 and wrong_method.status_code == 403


def test_websocket_routes_require_their_attestation_too() -> None:
    """WebSockets carry bearer tokens only; a route's attestation still applies (closed 1008 without it), and each
    decision is counted: refused by the attestation is the token's mechanism denied."""
    key = ECKey.generate_key("P-256", parameters={"kid": "hr1"}, private=True)
    issuers = TrustedIssuers({"https://hr.test": {"keys": [dict(key.as_dict(private=False))]}})
    now = int(time.time())

    def attestation(sub: str) -> str:
        return jwt.encode({"alg": "ES256", "typ": trust_wire.ATTESTATION_TYP, "kid": "hr1"},
                          {"iss": "https://hr.test", "sub": sub, "exp": now + 60,
                           "claims": {"employee_of": "example.com"}}, key)

    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text("hi")
        await ws.close()

    policy = Policy((Route("/ws", (OAuth(("weather:read",)),),
                           attestation=Attestation({"employee_of": "example.com"})),))
    resource = ProtectedResource(resource=API, authorization_servers=["https://as.test"])
    metrics = Metrics()
    app = PolicyMiddleware(Starlette(routes=[WebSocketRoute("/ws", echo)]), policy,
                           bearer=BearerGuard(TableVerifier(TOKENS), resource), trust=TrustChecks(issuers=issuers),
                           metrics=metrics)
    bearer = {"Authorization": "Bearer reader"}  # client_id "bot"
    with TestClient(app) as client:
        for headers in (bearer, {**bearer, trust_wire.ATTESTATION_HEADER: attestation("someone-else")}):
            with pytest.raises(WebSocketDisconnect) as closed, client.websocket_connect("/ws", headers=headers):
                pass
            assert closed.value.code == 1008
        with client.websocket_connect("/ws", headers={**bearer, trust_wire.ATTESTATION_HEADER: attestation("bot")}
                                      ) as ws:
            assert ws.receive_text() == "hi"
    text = metrics.exposition().decode()
    assert sample(text, "authgate_access_decisions_total", mechanism="oauth", outcome="denied") == 2
    assert sample(text, "authgate_access_decisions_total", mechanism="oauth", outcome="allowed") == 1
