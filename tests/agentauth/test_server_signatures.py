"""Server-to-server requests (``Signature-Key: sig=jwks_uri;id;dwk;kid``, -11 §3.6/§3.10, profile §17.7) at the
resource middleware: a trusted server's signature is accepted, and every way it can go wrong is ``401`` +
the ``Signature-Error`` code the drafts assign (never a 500): a server not admitted, metadata naming another
issuer or none, an unknown ``kid`` (after one refetch), an unreachable server (remembered briefly, so no fetch
storm), a cross-origin ``jwks_uri``, the wrong scheme on either kind of route, an uncovered body."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from joserfc.jwk import OKPKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from authgate.agentauth import wire
from authgate.agentauth.discovery import ServerKeys
from authgate.agentauth.replay import MemoryReplayCache
from authgate.agentauth.resource import AgentAuthResource, require
from authgate.agentauth.tokens import Signer, base_claims
from authgate.clock import FrozenClock
from authgate.crypto.httpsig import sign_request
from authgate.crypto.jwk import public_jwk
from authgate.crypto.signature_key import jwks_uri_scheme, jwt_scheme
from authgate.net import Fetcher

RES = "https://api.test"
PS = "https://ps.test"
META = f"{PS}/.well-known/aauth-person.json"
JWKS = f"{PS}/jwks.json"


@dataclass
class FakePS:
    """The person server's documents, served in-process; ``fail`` makes every fetch answer 503."""

    keys: dict[str, Ed25519PrivateKey] = field(default_factory=lambda: {"ps-1": Ed25519PrivateKey.generate()})
    meta: dict[str, Any] = field(default_factory=lambda: {"issuer": PS, "jwks_uri": JWKS})
    fail: bool = False
    fetched: list[str] = field(default_factory=list)

    def handler(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        self.fetched.append(url)
        if self.fail:
            return httpx.Response(503)
        if url == META:
            return httpx.Response(200, json=self.meta)
        if url == JWKS:
            return httpx.Response(200, json={"keys": [public_jwk(k, kid=kid) for kid, k in self.keys.items()]})
        return httpx.Response(404)


async def whoami(request: Request) -> JSONResponse:
    return JSONResponse(request.scope["state"]["agentauth"])


def make(ps: FakePS, clock: FrozenClock, *, transport: httpx.AsyncBaseTransport | None = None,
         trusted: dict[str, list[str]] | None = None) -> httpx.AsyncClient:
    key = OKPKey.generate_key("Ed25519", parameters={"alg": "Ed25519"}, private=True)
    api = Starlette(routes=[Route("/revocations", whoami, methods=["POST"]), Route("/hello", whoami)])
    app = AgentAuthResource(
        api, resource_id=RES, signer=Signer(kid="r1", key=key), clock=clock.now, replay=MemoryReplayCache(clock),
        rules=[require("/revocations", "server"), require("/hello", "agent")],
        trusted_servers=trusted if trusted is not None else {PS: [wire.DWK_PERSON]},
        fetcher=Fetcher(transport=transport or httpx.MockTransport(ps.handler)))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=RES)


def server_post(ps: FakePS, clock: FrozenClock, *, kid: str = "ps-1", server: str = PS,
                dwk: str = wire.DWK_PERSON, key: Ed25519PrivateKey | None = None,
                content_type: bool = True) -> tuple[dict[str, str], bytes]:
    """A revocation-shaped POST (-11 ``{jti, exp}``) signed by the server as itself."""
    body = json.dumps({"jti": "t-1", "exp": int(clock.now()) + 600}).encode()
    headers = {"Content-Type": "application/json"} if content_type else {}
    signer = key or ps.keys.get(kid) or Ed25519PrivateKey.generate()
    headers.update(sign_request(method="POST", url=RES + "/revocations", headers=headers, body=body, key=signer,
                                signature_key=jwks_uri_scheme(server, dwk, kid), created=int(clock.now())))
    return headers, body


def sig_error(r: httpx.Response) -> str:
    assert r.status_code == 401, (r.status_code, r.text)
    assert r.headers["content-type"] == "application/problem+json"
    return r.headers["signature-error"]


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(time.time())


async def test_a_trusted_server_signature_is_accepted_once(clock: FrozenClock) -> None:
    ps = FakePS()
    http = make(ps, clock)
    headers, body = server_post(ps, clock)
    r = await http.post("/revocations", headers=headers, content=body)
    assert r.status_code == 200, r.text
    state = r.json()
    assert state["typ"] == "server" and state["server"] == PS and state["dwk"] == wire.DWK_PERSON
    assert state["kid"] == "ps-1" and state["claims"] == {"iss": PS, "dwk": wire.DWK_PERSON}
    assert ps.fetched == [META, JWKS]
    # the same signed request again is a replay; a fresh one is fine and needs no fetch (both documents cached)
    again = await http.post("/revocations", headers=headers, content=body)
    assert sig_error(again) == "error=invalid_signature"
    clock.advance(1)
    headers, body = server_post(ps, clock)
    assert (await http.post("/revocations", headers=headers, content=body)).status_code == 200
    assert ps.fetched == [META, JWKS]


async def test_unknown_kid_refetches_once_then_finds_a_rotated_key(clock: FrozenClock) -> None:
    ps = FakePS()
    http = make(ps, clock)
    headers, body = server_post(ps, clock)
    assert (await http.post("/revocations", headers=headers, content=body)).status_code == 200
    # a kid the server does not publish: unknown_key; the set was fetched moments ago, so no refetch yet
    headers, body = server_post(ps, clock, kid="nope")
    assert sig_error(await http.post("/revocations", headers=headers, content=body)) == "error=unknown_key"
    assert ps.fetched == [META, JWKS]
    # the server rotates in a new key; after the refetch interval an unknown kid refetches the set once
    ps.keys["ps-2"] = Ed25519PrivateKey.generate()
    clock.advance(31)
    headers, body = server_post(ps, clock, kid="ps-2")
    assert (await http.post("/revocations", headers=headers, content=body)).status_code == 200
    assert ps.fetched == [META, JWKS, JWKS]
    # a known kid but a signature by another key: invalid_signature
    clock.advance(1)
    headers, body = server_post(ps, clock, kid="ps-2", key=Ed25519PrivateKey.generate())
    assert sig_error(await http.post("/revocations", headers=headers, content=body)) == "error=invalid_signature"


@pytest.mark.parametrize(("meta", "code"), [
    ({"issuer": "https://evil.test", "jwks_uri": JWKS}, "issuer_mismatch"),
    ({"issuer": PS + "/", "jwks_uri": JWKS}, "issuer_mismatch"),
    ({"jwks_uri": JWKS}, "issuer_missing"),
    ({"issuer": PS, "jwks_uri": "https://cdn.test/jwks.json"}, "unknown_key"),
    ({"issuer": PS}, "unknown_key"),
])
async def test_metadata_must_name_the_signer(clock: FrozenClock, meta: dict[str, Any], code: str) -> None:
    ps = FakePS(meta=meta)
    http = make(ps, clock)
    headers, body = server_post(ps, clock)
    assert sig_error(await http.post("/revocations", headers=headers, content=body)) == f"error={code}"


async def test_servers_not_admitted_are_refused_without_a_fetch(clock: FrozenClock) -> None:
    ps = FakePS()
    http = make(ps, clock)
    for server, dwk in [("https://other.test", wire.DWK_PERSON), (PS, wire.DWK_AGENT), (PS, "../jwks.json")]:
        headers, body = server_post(ps, clock, server=server, dwk=dwk)
        assert sig_error(await http.post("/revocations", headers=headers, content=body)) == "error=invalid_key"
        clock.advance(1)
    # id, dwk and kid are all required
    body = b"{}"
    headers = {"Content-Type": "application/json"}
    headers.update(sign_request(method="POST", url=RES + "/revocations", headers=headers, body=body,
                                key=ps.keys["ps-1"], signature_key=f'jwks_uri;id="{PS}";kid="ps-1"',
                                created=int(clock.now())))
    assert sig_error(await http.post("/revocations", headers=headers, content=body)) == "error=invalid_key"
    assert ps.fetched == []


async def test_fetch_failure_is_unknown_key_and_is_remembered_briefly(clock: FrozenClock) -> None:
    ps = FakePS(fail=True)
    http = make(ps, clock)
    headers, body = server_post(ps, clock)
    assert sig_error(await http.post("/revocations", headers=headers, content=body)) == "error=unknown_key"
    assert ps.fetched == [META]
    clock.advance(1)
    headers, body = server_post(ps, clock)
    assert sig_error(await http.post("/revocations", headers=headers, content=body)) == "error=unknown_key"
    assert ps.fetched == [META]  # not fetched again within 30 s
    ps.fail = False
    clock.advance(30)
    headers, body = server_post(ps, clock)
    assert (await http.post("/revocations", headers=headers, content=body)).status_code == 200
    assert ps.fetched == [META, META, JWKS]


async def test_unreachable_server_and_the_ssrf_guard(clock: FrozenClock) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    ps = FakePS()
    http = make(ps, clock, transport=httpx.MockTransport(refuse))
    headers, body = server_post(ps, clock)
    assert sig_error(await http.post("/revocations", headers=headers, content=body)) == "error=unknown_key"
    # the default fetcher: a trusted server on a loopback address is still never fetched
    loopback = "https://127.0.0.1"
    key = OKPKey.generate_key("Ed25519", parameters={"alg": "Ed25519"}, private=True)
    app = AgentAuthResource(Starlette(routes=[Route("/revocations", whoami, methods=["POST"])]), resource_id=RES,
                            signer=Signer(kid="r1", key=key), clock=clock.now,
                            rules=[require("/revocations", "server")], trusted_servers={loopback: [wire.DWK_PERSON]})
    guarded = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=RES)
    headers, body = server_post(ps, clock, server=loopback)
    assert sig_error(await guarded.post("/revocations", headers=headers, content=body)) == "error=unknown_key"


async def test_each_kind_of_route_takes_only_its_scheme(clock: FrozenClock) -> None:
    ps = FakePS()
    http = make(ps, clock)
    # an agent token on the server route
    agent = Ed25519PrivateKey.generate()
    now = int(clock.now())
    token = Signer(kid="ap1", key=OKPKey.generate_key("Ed25519", parameters={"alg": "Ed25519"}, private=True)).sign(
        wire.TYP_AGENT, {**base_claims("https://ap.test", wire.DWK_AGENT, now, now + 600), "sub": "aauth:b@ap.test",
                         "cnf": {"jwk": public_jwk(agent)}})
    body = b"{}"
    headers = {"Content-Type": "application/json"}
    headers.update(sign_request(method="POST", url=RES + "/revocations", headers=headers, body=body, key=agent,
                                signature_key=jwt_scheme(token), created=now))
    r = await http.post("/revocations", headers=headers, content=body)
    assert sig_error(r) == "error=unsupported_scheme" and r.headers["accept-signature-scheme"] == "jwks_uri"
    # a server signature on an agent route
    headers = sign_request(method="GET", url=RES + "/hello", headers={}, body=b"", key=ps.keys["ps-1"],
                           signature_key=jwks_uri_scheme(PS, wire.DWK_PERSON, "ps-1"), created=now)
    r = await http.get("/hello", headers=headers)
    assert sig_error(r) == "error=unsupported_scheme" and r.headers["accept-signature-scheme"] == "jwt"
    # unsigned on the server route: no agent-token requirement, just the missing signature
    r = await http.post("/revocations", content=b"{}", headers={"Content-Type": "application/json"})
    assert sig_error(r) == "error=invalid_signature" and "aauth-requirement" not in r.headers
    assert ps.fetched == []


async def test_the_body_and_its_type_must_be_covered(clock: FrozenClock) -> None:
    ps = FakePS()
    http = make(ps, clock)
    headers, body = server_post(ps, clock, content_type=False)
    headers["Content-Type"] = "application/json"  # sent, but not covered
    r = await http.post("/revocations", headers=headers, content=body)
    assert sig_error(r).startswith("error=invalid_input")


def test_configuration_is_checked() -> None:
    fetcher = Fetcher(transport=httpx.MockTransport(FakePS().handler))
    bad: list[Callable[[], object]] = [
        lambda: ServerKeys({"https://ps.test/": ["aauth-person.json"]}, fetcher=fetcher, clock=time.time),
        lambda: ServerKeys({PS: "aauth-person.json"}, fetcher=fetcher, clock=time.time),
        lambda: ServerKeys({PS: ["../x"]}, fetcher=fetcher, clock=time.time),
    ]
    for build in bad:
        with pytest.raises(ValueError):
            build()
    key = OKPKey.generate_key("Ed25519", parameters={"alg": "Ed25519"}, private=True)
    with pytest.raises(ValueError, match="trusted_servers"):
        AgentAuthResource(Starlette(), resource_id=RES, signer=Signer(kid="r1", key=key),
                          rules=[require("/revocations", "server")])
