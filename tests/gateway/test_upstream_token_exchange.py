"""The gateway in front of an upstream that is itself protected by authgate (``[token_exchange]``): it trades the
caller's token (RFC 8693) for a narrower one whose audience is the upstream and forwards only that.

End to end over loopback sockets: a real authgate authorization server, the upstream behind authgate's own
resource middleware (its audience required: it refuses the caller's token), the gateway in between. Then the
mapping of every kind of refusal, in process, and the file's checks.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from authgate.app import build_context, create_app
from authgate.clock import SystemClock
from authgate.config import Settings
from authgate.gateway import build_gateway, gateway_config_from_dict
from authgate.gateway.exchange import TokenExchangeSettings, UpstreamTokens
from authgate.oauth.metadata import TOKEN_EXCHANGE_GRANT_TYPE
from authgate.policy import OAuth, PolicyError
from authgate.policy.identity import ALTERNATIVE_KEY, STATE_KEY, Identity
from authgate.resource import AuthGateMiddleware, JWTVerifier, ProtectedResource, protect
from authgate.store import Store
from tests.helpers import add_client
from tests.servers import free_port, serve

#: The store is not what these tests are about: one backend (the token endpoint's own tests cover both).
ONE_STORE = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)

GATEWAY_SECRET = "g" * 40


@dataclass
class Upstream:
    """An API protected by authgate's resource middleware for its own audience; records what reaches it."""

    seen: list[dict[str, Any]] = field(default_factory=list)

    async def weather(self, request: Request) -> JSONResponse:
        claims = request.state.authgate
        self.seen.append({"headers": dict(request.headers), "claims": dict(claims.claims)})
        return JSONResponse({"forecast": "sunny"})

    def app(self, issuer: str, resource: str) -> AuthGateMiddleware:
        api = Starlette(routes=[Route("/weather", self.weather), Route("/alerts", self.weather)])
        verifier = JWTVerifier(issuer, resource)
        return AuthGateMiddleware(api, verifier, ProtectedResource(resource=resource, authorization_servers=[issuer]),
                                  rules=[protect("/weather", "weather:read"), protect("/alerts", "weather:write")])


@dataclass
class World:
    issuer: str
    gateway: str
    upstream_url: str
    upstream: Upstream
    agent: tuple[str, str]
    gateway_client: str


@pytest.fixture
async def world(settings: Settings, store: Store) -> AsyncIterator[World]:
    as_port, gw_port, up_port = free_port(), free_port(), free_port()
    issuer, gateway, upstream_url = (f"http://127.0.0.1:{p}" for p in (as_port, gw_port, up_port))
    # The gateway's own confidential client may hold weather:read only; the agent holds read and write.
    gw_client, gw_secret = await add_client(store, auth_method="client_secret_basic", scope="weather:read",
                                            grant_types=[TOKEN_EXCHANGE_GRANT_TYPE])
    agent_id, agent_secret = await add_client(store, auth_method="client_secret_basic",
                                              scope="weather:read weather:write", grant_types=["client_credentials"])
    assert gw_secret is not None and agent_secret is not None
    cfg = replace(settings, issuer=issuer, port=as_port, resources=(gateway, upstream_url),
                  scopes=("weather:read", "weather:write"), default_scopes=("weather:read",),
                  token_exchange_actors={gateway: [gw_client]}).validate()
    ctx = await build_context(cfg, SystemClock(), store)
    upstream = Upstream()
    config = gateway_config_from_dict({
        "gateway": {"upstream": upstream_url, "public_url": gateway, "identity": "plain"},
        "oauth": {"issuer": issuer},
        "token_exchange": {"client_id": gw_client, "client_secret_env": "GW_CLIENT_SECRET",
                           "resource": upstream_url},
        "routes": [
            {"path": "/weather", "allow": [{"mechanism": "oauth", "scopes": ["weather:read"]}]},
            {"path": "/alerts", "allow": [{"mechanism": "oauth", "scopes": ["weather:write"]}]},
        ]}, env={"GW_CLIENT_SECRET": gw_secret})
    async with (serve(create_app(ctx), as_port), serve(upstream.app(issuer, upstream_url), up_port),
                serve(build_gateway(config), gw_port)):
        yield World(issuer, gateway, upstream_url, upstream, (agent_id, agent_secret), gw_client)


async def agent_token(w: World, http: httpx.AsyncClient, scope: str = "weather:read weather:write") -> str:
    r = await http.post(w.issuer + "/token", auth=w.agent, data={
        "grant_type": "client_credentials", "scope": scope, "resource": w.gateway})
    assert r.status_code == 200, r.text
    token: str = r.json()["access_token"]
    return token


def payload(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


@ONE_STORE
async def test_the_upstream_gets_only_a_narrower_token_for_its_own_audience_acted_on_by_the_gateway(
        world: World) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        token = await agent_token(world, http)
        # the upstream itself refuses the caller's token: it is for the gateway's audience
        direct = await http.get(world.upstream_url + "/weather", headers={"Authorization": f"Bearer {token}"})
        assert direct.status_code == 401 and 'error="invalid_token"' in direct.headers["www-authenticate"]
        first = await http.get(world.gateway + "/weather", headers={
            "Authorization": f"Bearer {token}", "Cookie": "session=1", "X-Authgate-Subject": "admin"})
        again = await http.get(world.gateway + "/weather", headers={"Authorization": f"Bearer {token}"})
    assert first.status_code == 200 and again.status_code == 200, first.text
    assert len(world.upstream.seen) == 2
    seen = world.upstream.seen[0]
    forwarded = seen["headers"]["authorization"].removeprefix("Bearer ")
    assert forwarded != token
    claims = seen["claims"]
    original = payload(token)
    assert claims["aud"] == world.upstream_url and original["aud"] == world.gateway
    assert claims["scope"] == "weather:read" and original["scope"] == "weather:read weather:write"
    assert claims["act"] == {"sub": world.gateway_client}
    assert claims["sub"] == original["sub"] == world.agent[0]
    # nothing else credential-like: no cookie, and the client's forged identity header was replaced
    assert "cookie" not in seen["headers"] and seen["headers"]["x-authgate-subject"] == world.agent[0]
    # the exchanged token was reused for the second request while fresh
    assert world.upstream.seen[1]["headers"]["authorization"] == seen["headers"]["authorization"]


@ONE_STORE
async def test_a_token_the_authorization_server_will_not_exchange_is_refused_and_nothing_is_forwarded(
        world: World) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        revoked = await agent_token(world, http)
        r = await http.post(world.issuer + "/revoke", auth=world.agent, data={"token": revoked})
        assert r.status_code == 200, r.text
        # the gateway's own verifier still accepts the JWT (it is signed and unexpired): the exchange refuses it
        refused = await http.get(world.gateway + "/weather", headers={"Authorization": f"Bearer {revoked}"})
        # the route needs weather:write, which the gateway's client may not hold: the scope cannot be delegated
        scope = await http.get(world.gateway + "/alerts",
                               headers={"Authorization": f"Bearer {await agent_token(world, http)}"})
    assert refused.status_code == 401, refused.text
    assert refused.json()["error"] == "invalid_token"
    challenge = refused.headers["www-authenticate"]
    assert 'error="invalid_token"' in challenge
    assert f'resource_metadata="{world.gateway}/.well-known/oauth-protected-resource"' in challenge
    assert scope.status_code == 403 and scope.json()["error"] == "insufficient_scope", scope.text
    assert world.upstream.seen == []


# --- every kind of refusal, in process ---------------------------------------------------------------------

ISSUER = "https://as.test"
SETTINGS = TokenExchangeSettings(client_id="gw", client_secret="s3cret", resource="https://upstream.test",
                                 token_endpoint=ISSUER + "/token")


def request_scope(mechanism: str = "oauth", authorization: bytes = b"Bearer caller-token") -> dict[str, Any]:
    return {"type": "http", "headers": [(b"authorization", authorization)],
            "state": {STATE_KEY: Identity(mechanism, subject="alice"), ALTERNATIVE_KEY: OAuth(("weather:read",))}}


def answering(status: int, body: dict[str, Any] | bytes, seen: list[httpx.Request] | None = None
              ) -> httpx.AsyncClient:
    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.Response(status, content=content, headers={"content-type": "application/json"})

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def test_the_exchange_request_asks_for_the_route_scopes_as_the_gateway_client() -> None:
    seen: list[httpx.Request] = []
    ok = {"access_token": "down-1", "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
          "token_type": "Bearer", "expires_in": 300, "scope": "weather:read"}
    async with answering(200, ok, seen) as http:
        tokens = UpstreamTokens(http, ISSUER, SETTINGS)
        assert await tokens.token_for(request_scope()) == "down-1"
        assert await tokens.token_for(request_scope()) == "down-1"
        assert await tokens.token_for(request_scope("agentauth")) is None  # no bearer token to exchange
        assert await tokens.token_for(request_scope("public")) is None
    assert len(seen) == 1  # reused while fresh
    form = dict(httpx.QueryParams(seen[0].content.decode()))
    assert form["grant_type"] == TOKEN_EXCHANGE_GRANT_TYPE and form["subject_token"] == "caller-token"
    assert form["resource"] == "https://upstream.test" and form["scope"] == "weather:read"
    assert seen[0].headers["authorization"] == "Basic " + base64.b64encode(b"gw:s3cret").decode()


@pytest.mark.parametrize(("status", "body", "answer", "error"), [
    (400, {"error": "invalid_request", "error_description": "subject_token is revoked or expired"}, 401,
     "invalid_token"),
    (400, {"error": "invalid_grant"}, 401, "invalid_token"),
    (400, {"error": "invalid_scope", "error_description": "scope not allowed for this client"}, 403,
     "insufficient_scope"),
    (401, {"error": "invalid_client"}, 502, "upstream_token_unavailable"),
    (400, {"error": "unauthorized_client"}, 502, "upstream_token_unavailable"),
    (400, {"error": "invalid_target"}, 502, "upstream_token_unavailable"),
    (500, b"oops", 503, "temporarily_unavailable"),
    (429, {"error": "rate_limited"}, 503, "temporarily_unavailable"),
    (200, b"not json", 503, "temporarily_unavailable"),
])
async def test_each_refusal_maps_to_a_clear_answer(status: int, body: dict[str, Any] | bytes, answer: int,
                                                   error: str) -> None:
    from authgate.errors import OAuthError

    async with answering(status, body) as http:
        with pytest.raises(OAuthError) as raised:
            await UpstreamTokens(http, ISSUER, SETTINGS, challenge={"resource_metadata": "https://gw.test/m"}
                                 ).token_for(request_scope())
    code, headers, rendered = raised.value.render()
    assert (code, json.loads(rendered)["error"]) == (answer, error)
    assert b"caller-token" not in rendered and "caller-token" not in json.dumps(headers)
    if answer == 401:
        assert headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
        assert 'resource_metadata="https://gw.test/m"' in headers["WWW-Authenticate"]
    if answer == 503:
        assert headers["Retry-After"] == "5"


async def test_the_token_endpoint_is_discovered_from_the_issuer_once() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        if request.url.path == "/.well-known/oauth-authorization-server":
            return httpx.Response(200, json={"issuer": ISSUER, "token_endpoint": ISSUER + "/oauth/token"})
        return httpx.Response(200, json={"access_token": "t", "issued_token_type": "x", "token_type": "Bearer",
                                         "expires_in": 300})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        tokens = UpstreamTokens(http, ISSUER, replace(SETTINGS, token_endpoint=None))
        assert await tokens.token_for(request_scope()) == "t"
        other = request_scope(authorization=b"Bearer another-token")
        assert await tokens.token_for(other) == "t"
    assert calls == [ISSUER + "/.well-known/oauth-authorization-server", ISSUER + "/oauth/token",
                     ISSUER + "/oauth/token"]


def test_token_exchange_file_errors(tmp_path: Any) -> None:
    base: dict[str, Any] = {
        "gateway": {"upstream": "http://127.0.0.1:9000", "public_url": "https://api.test", "identity": "plain"},
        "oauth": {"issuer": ISSUER},
        "routes": [{"path": "/a", "allow": [{"mechanism": "oauth", "scopes": ["a:read"]}]}]}
    good = {"client_id": "gw", "client_secret_env": "S", "resource": "https://upstream.test"}
    env = {"S": "hunter2-value"}

    def load(section: dict[str, Any]) -> TokenExchangeSettings:
        config = gateway_config_from_dict({**base, "token_exchange": section}, source="gw.toml", env=env,
                                          base_dir=tmp_path)
        assert config.token_exchange is not None and "hunter2" not in repr(config)
        return config.token_exchange

    assert load(good) == TokenExchangeSettings(client_id="gw", client_secret="hunter2-value",
                                               resource="https://upstream.test")
    (tmp_path / "secret.txt").write_text("hunter2-from-a-file\n")
    from_file = load({"client_id": "gw", "client_secret_file": "secret.txt", "resource": "https://upstream.test",
                      "scopes": ["a:read"], "client_auth": "client_secret_post"})
    assert (from_file.client_secret, from_file.scopes, from_file.client_auth) == \
        ("hunter2-from-a-file", ("a:read",), "client_secret_post")
    no_oauth = {k: v for k, v in base.items() if k != "oauth"}
    for section, data, message in [
        (good, no_oauth, r"needs the \[oauth\] section"),
        ({**good, "client_id": ""}, {}, r"client_id: required"),
        ({k: v for k, v in good.items() if k != "client_secret_env"}, {},
         r"exactly one of client_secret_env and client_secret_file is required"),
        ({**good, "client_secret_env": "NOPE"}, {}, r"client_secret_env: \$NOPE is not set"),
        ({**good, "client_secret_file": "secret.txt"}, {},
         r"exactly one of client_secret_env and client_secret_file is required"),
        ({**good, "client_secret_env": 1}, {}, r"client_secret_env: wrong type int"),
        ({**good, "client_auth": "private_key_jwt"}, {}, r"client_auth: must be 'client_secret_basic' or"),
        ({**good, "resource": "upstream"}, {}, r"resource: required, the upstream's resource"),
        ({**good, "resource": "https://api.test/"}, {}, r"resource: must differ from \[gateway\].public_url"),
        ({**good, "scopes": ["a read"]}, {}, r"scopes: invalid scope token"),
        ({**good, "scopes": []}, {}, r"scopes: a non-empty list of scope strings"),
        ({**good, "token_endpoint": "/token"}, {}, r"token_endpoint: must be an absolute http\(s\) URL"),
        ({**good, "cache_size": 0}, {}, r"cache_size: must be between 1 and 1000000"),
        ({**good, "client_secret": "inline"}, {}, r"unknown field 'client_secret'"),
    ]:
        with pytest.raises(PolicyError, match=r"^gw.toml: \[token_exchange\]: " + message):
            gateway_config_from_dict({**(data or base), "token_exchange": section}, source="gw.toml", env=env,
                                     base_dir=tmp_path)


def test_the_guide_section_loads() -> None:
    """docs/gateway.md's ``[token_exchange]`` example, added to a minimal file, loads as the guide says."""
    import tomllib
    from pathlib import Path

    guide = (Path(__file__).resolve().parents[2] / "docs" / "gateway.md").read_text(encoding="utf-8")
    section = guide.split("<!-- gateway-token-exchange -->\n```toml\n", 1)[1].split("\n```", 1)[0]
    data = {"gateway": {"upstream": "http://127.0.0.1:9000", "public_url": "https://api.weather.example",
                        "identity": "plain"},
            "oauth": {"issuer": "https://auth.weather.example"},
            "routes": [{"path": "/v1/forecast/*", "allow": [{"mechanism": "oauth", "scopes": ["weather:read"]}]}],
            **tomllib.loads(section)}
    config = gateway_config_from_dict(data, env={"AUTHGATE_GATEWAY_CLIENT_SECRET": "x" * 20})
    assert config.token_exchange == TokenExchangeSettings(client_id="weather-gateway", client_secret="x" * 20,
                                                          resource="https://forecast.internal")


async def test_a_burst_of_requests_with_one_new_token_exchanges_it_once() -> None:
    """Concurrent calls for the same token and target share one exchange (and its refusal); a call whose leader
    was cancelled (its client went away) exchanges by itself instead of failing."""
    import asyncio

    from authgate.agent.errors import TokenError
    from authgate.agent.exchange import TokenExchanger
    from authgate.agent.store import ClientRegistration

    calls: list[str] = []
    gate = asyncio.Event()
    refuse = False

    async def handler(request: httpx.Request) -> httpx.Response:
        calls.append(dict(httpx.QueryParams(request.content.decode()))["subject_token"])
        await gate.wait()
        if refuse:
            return httpx.Response(400, json={"error": "invalid_request"})
        return httpx.Response(200, json={"access_token": f"down-{len(calls)}", "issued_token_type": "x",
                                         "token_type": "Bearer", "expires_in": 300})

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        exchanger = TokenExchanger(http, ISSUER + "/token", ClientRegistration("gw", "s", "client_secret_basic"))
        burst = [asyncio.create_task(exchanger.token_for("t1", resource="https://up.test")) for _ in range(5)]
        await asyncio.sleep(0.01)
        gate.set()
        assert {t.access_token for t in await asyncio.gather(*burst)} == {"down-1"} and calls == ["t1"]
        gate.clear()
        refuse = True
        refused = [asyncio.create_task(exchanger.token_for("t2", resource="https://up.test")) for _ in range(3)]
        await asyncio.sleep(0.01)
        gate.set()
        results = await asyncio.gather(*refused, return_exceptions=True)
        assert all(isinstance(r, TokenError) and r.error == "invalid_request" for r in results)
        assert calls == ["t1", "t2"]
        gate.clear()
        refuse = False
        leader = asyncio.create_task(exchanger.token_for("t3", resource="https://up.test"))
        await asyncio.sleep(0.01)
        follower = asyncio.create_task(exchanger.token_for("t3", resource="https://up.test"))
        await asyncio.sleep(0.01)
        leader.cancel()
        await asyncio.sleep(0.01)
        gate.set()
        assert (await follower).access_token == "down-4" and calls == ["t1", "t2", "t3", "t3"]
