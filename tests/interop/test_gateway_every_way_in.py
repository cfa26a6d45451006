"""Issue #7 "Done means": ``authgate gateway`` in front of a plain upstream (a Starlette app that knows nothing of
authgate and records every header it receives), over real loopback sockets, with the real peers:

* one route (``GET /weather``: OAuth ``weather:read`` *or* Agent Auth ``weather:read`` *or* $0.01 via x402) let
  in by our SDK agent (client credentials), the ``mcp`` SDK's OAuth client (authorization code + PKCE), the
  PyPI ``aauth`` package (signed requests, person token → resource token → auth token) and the official
  ``x402`` client (reading ``PAYMENT-REQUIRED`` from the combined 401 and paying);
* the combined challenge: each peer's own parser finds its part;
* a route whose first alternative is x402 answers 402, and the x402 SDK's httpx transport pays by itself;
* no credential or payment header reaches the upstream; a forged identity header is dropped, and the
  forwarded identity verifies with :func:`authgate.gateway.verify_identity`;
* server-sent events pass through unbuffered (the first event is read before the upstream writes the second).

The ``aauth`` peer accepts only ``https`` server identifiers without a port, so its test runs the same route
configuration in process (hosts ``https://authgate.test`` and ``https://api.test``); every other peer talks to
the servers over loopback sockets.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import pytest
from eth_account import Account
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

import aauth
from authgate.agent import OAuthAgentAuth
from authgate.app import build_context, create_app
from authgate.clock import SystemClock
from authgate.config import Settings
from authgate.gateway import build_gateway, gateway_config_from_dict, verify_identity
from authgate.net import Fetcher
from authgate.store import Store
from authgate.x402 import localchain
from authgate.x402.chain.embedded import EmbeddedChain
from authgate.x402.facilitator.http import create_facilitator_app
from authgate.x402.facilitator.service import Facilitator
from tests.helpers import add_user
from tests.servers import free_port, serve

pytestmark = [pytest.mark.interop, pytest.mark.parametrize("backend", ["sqlite"], indirect=True)]

ADMIN_KEY = "k" * 40
SECRET = secrets.token_bytes(32)
PAYEE = localchain.label_address("gateway-payee")
OFFER = {"mechanism": "x402", "price": "10000", "asset": localchain.TOKEN_ADDRESS, "pay_to": PAYEE,
         "asset_name": localchain.TOKEN_NAME, "asset_version": localchain.TOKEN_VERSION,
         "network": localchain.NETWORK, "description": "Weather"}
#: The one route every peer gets into.
WEATHER = {"path": "/weather", "methods": ["GET"], "allow": [
    {"mechanism": "oauth", "scopes": ["weather:read"]}, {"mechanism": "agentauth", "scopes": ["weather:read"]}, OFFER]}
CREDENTIALS = ("authorization", "signature", "signature-input", "signature-key", "content-digest",
               "payment-signature", "x-payment", "sign-in-with-x", "aauth-requirement", "cookie")


@dataclass
class Upstream:
    """The plain API: knows nothing of authgate, records what reaches it."""

    seen: list[dict[str, Any]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def record(self, request: Request) -> None:
        self.seen.append({"method": request.method, "path": request.url.path,
                          "target": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
                          "headers": list(request.headers.items())})

    async def weather(self, request: Request) -> JSONResponse:
        self.record(request)
        return JSONResponse({"forecast": "sunny", "subject": request.headers.get("x-authgate-subject")})

    async def events(self, request: Request) -> StreamingResponse:
        self.record(request)

        async def stream() -> AsyncIterator[bytes]:
            yield b"data: first\n\n"
            await asyncio.wait_for(self.release.wait(), 20)  # only once the client has read the first event
            yield b"data: second\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/weather", self.weather), Route("/paid/weather", self.weather),
                                 Route("/me", self.weather), Route("/events", self.events)])


@dataclass
class World:
    gateway: str
    issuer: str
    upstream: Upstream
    chain: EmbeddedChain
    ctx: Any
    owner: str


@pytest.fixture
async def world(settings: Settings, store: Store) -> AsyncIterator[World]:
    as_port, gw_port, up_port, fac_port = free_port(), free_port(), free_port(), free_port()
    issuer, gateway = f"http://127.0.0.1:{as_port}", f"http://127.0.0.1:{gw_port}"
    cfg = replace(settings, issuer=issuer, port=as_port, auto_approve=True, resources=(gateway,),
                  scopes=("weather:read", "offline_access"), default_scopes=("weather:read",),
                  agentauth_enabled=True, agentauth_admin_key=ADMIN_KEY, agentauth_poll_interval=0,
                  agentauth_allow_http_loopback=True, agentauth_scope_risk={"weather:read": "low"}).validate()
    ctx = await build_context(cfg, SystemClock(), store, fetcher=Fetcher(allow_loopback=True))
    chain = EmbeddedChain()
    facilitator = Facilitator({localchain.NETWORK: chain}, store, clock=SystemClock(), settle_timeout=20)
    upstream = Upstream()
    config = gateway_config_from_dict({
        "gateway": {"upstream": f"http://127.0.0.1:{up_port}", "public_url": gateway,
                    "identity_secret_env": "GW_SECRET"},
        "oauth": {"issuer": issuer, "resource_name": "Weather"},
        "agentauth": {"trusted_person_servers": [issuer], "allow_http_loopback": True},
        "x402": {"facilitator_url": f"http://127.0.0.1:{fac_port}"},
        "scope_descriptions": {"weather:read": "Read the forecast"},
        "routes": [
            WEATHER,
            {"path": "/paid/weather", "methods": ["GET"], "allow": [
                OFFER, {"mechanism": "oauth", "scopes": ["weather:read"]}]},
            {"path": "/events", "methods": ["GET"], "stream": True, "allow": [
                {"mechanism": "oauth", "scopes": ["weather:read"]}]},
        ]}, env={"GW_SECRET": SECRET.hex()})
    app = build_gateway(config)
    owner = await add_user(store, "alice")
    try:
        async with (serve(create_app(ctx), as_port), serve(upstream.app(), up_port),
                    serve(create_facilitator_app(facilitator), fac_port), serve(app, gw_port)):
            yield World(gateway, issuer, upstream, chain, ctx, owner)
    finally:
        await chain.aclose()


def assert_clean(w: World) -> None:
    """No credential or payment header reached the upstream, and every identity verifies."""
    assert w.upstream.seen
    for request in w.upstream.seen:
        names = {k for k, _ in request["headers"]}
        assert not names & set(CREDENTIALS), (request["path"], names & set(CREDENTIALS))
        assert not any(n.startswith(("payment-", "aauth-")) for n in names)
        verify_identity(request["headers"], method=request["method"], target=request["target"],
                        secret=SECRET.hex().encode())


def identity(w: World) -> dict[str, Any]:
    last = w.upstream.seen[-1]
    return verify_identity(last["headers"], method=last["method"], target=last["target"],
                           secret=SECRET.hex().encode())


async def test_combined_challenge_each_peer_recognises_its_part(world: World) -> None:
    from mcp.client.auth.utils import extract_resource_metadata_from_www_auth
    from x402.http import x402HTTPClient

    from authgate.agent.challenge import parse_challenges
    from x402 import x402Client

    async with httpx.AsyncClient() as http:
        r = await http.get(world.gateway + "/weather")
        paid_first = await http.get(world.gateway + "/paid/weather")
    assert r.status_code == 401 and r.json()["accepted"] == ["oauth", "agentauth", "x402"]
    bearer = [c for c in parse_challenges(r.headers.get_list("www-authenticate")) if c.scheme == "bearer"]
    assert bearer[0].params == {"resource_metadata": world.gateway + "/.well-known/oauth-protected-resource",
                                "scope": "weather:read"}
    assert extract_resource_metadata_from_www_auth(r) == world.gateway + "/.well-known/oauth-protected-resource"
    assert aauth.parse_aauth_requirement(r.headers["aauth-requirement"])["requirement"] == "agent-token"
    required = x402HTTPClient(x402Client()).get_payment_required_response(lambda n: r.headers.get(n), r.content)
    assert required.accepts[0].pay_to == PAYEE and required.accepts[0].amount == "10000"
    assert required.resource is not None and required.resource.url == world.gateway + "/weather"
    # payment first: 402, with the other ways in still advertised
    assert paid_first.status_code == 402 and "payment-required" in paid_first.headers
    assert paid_first.headers["www-authenticate"].startswith("Bearer resource_metadata=")
    assert world.upstream.seen == []


async def test_our_sdk_agent_gets_in_with_client_credentials(world: World) -> None:
    async with httpx.AsyncClient(auth=OAuthAgentAuth(grant="client_credentials")) as http:
        r = await http.get(world.gateway + "/weather", headers={
            "X-Authgate-Subject": "admin", "X-Authgate-Mechanism": "public", "Cookie": "s=1"})
    assert r.status_code == 200, r.text
    who = identity(world)
    assert who["mechanism"] == "oauth" and who["scopes"] == ("weather:read",)
    assert who["subject"] == who["agent"] != "admin"  # the forged header was dropped: the token's sub
    assert r.json()["subject"] == who["subject"]
    assert [v for k, v in world.upstream.seen[-1]["headers"] if k == "x-authgate-subject"] == [who["subject"]]
    assert_clean(world)  # the cookie too: the gateway strips it by default


async def test_the_mcp_sdk_oauth_client_gets_in(world: World) -> None:
    import httpx2
    from mcp.client.auth import OAuthClientProvider
    from mcp.shared.auth import OAuthClientMetadata
    from pydantic import AnyUrl

    from authgate.demo.mcp_client import HeadlessBrowser, MemoryStorage

    browser, storage = HeadlessBrowser(), MemoryStorage()
    auth = OAuthClientProvider(
        server_url=world.gateway + "/weather",
        client_metadata=OAuthClientMetadata(client_name="mcp via gateway",
                                            redirect_uris=[AnyUrl("http://127.0.0.1:3030/callback")]),
        storage=storage, redirect_handler=browser.redirect_handler, callback_handler=browser.callback_handler)
    async with httpx2.AsyncClient(auth=auth, timeout=30) as http:
        r = await http.get(world.gateway + "/weather")
    assert r.status_code == 200, r.text
    assert browser.authorize_requests[0]["resource"] == world.gateway
    who = identity(world)
    assert who["mechanism"] == "oauth" and who["subject"] == "dev-user" and "weather:read" in who["scopes"]
    assert_clean(world)


class HostRouter(httpx.AsyncBaseTransport):
    """In-process transports by host: the aauth peer only accepts https identifiers without a port, so this
    test names its servers ``https://authgate.test`` and ``https://api.test`` (like DNS for the test)."""

    def __init__(self) -> None:
        self.transports: dict[str, httpx.AsyncBaseTransport] = {}

    def add(self, host: str, app: Any) -> None:
        self.transports[host] = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.transports[request.url.host].handle_async_request(request)


async def test_the_aauth_package_gets_in_with_signatures(settings: Settings, store: Store) -> None:
    from aauth.agent.token_exchange import extract_resource_token

    ps, api = "https://authgate.test", "https://api.test"
    router = HostRouter()
    cfg = replace(settings, issuer=ps, agentauth_enabled=True, agentauth_admin_key=ADMIN_KEY,
                  agentauth_poll_interval=0, agentauth_scope_risk={"weather:read": "low"}).validate()
    ctx = await build_context(cfg, SystemClock(), store, fetcher=Fetcher(transport=router))
    upstream = Upstream()
    config = gateway_config_from_dict({
        "gateway": {"upstream": "http://upstream.test", "public_url": api, "identity_secret_env": "GW_SECRET"},
        "oauth": {"issuer": ps}, "agentauth": {"trusted_person_servers": [ps]},
        "x402": {"facilitator_url": "https://facilitator.test"},  # never reached: nobody pays in this test
        "routes": [WEATHER, {"path": "/me", "allow": [{"mechanism": "agentauth", "need": "person"}]}],
    }, env={"GW_SECRET": SECRET.hex()})
    router.add("authgate.test", create_app(ctx))
    router.add("api.test", build_gateway(config, upstream_transport=httpx.ASGITransport(app=upstream.app()),
                                         http_transport=router))
    owner = await add_user(store, "alice")
    w = World(api, ps, upstream, None, ctx, owner)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=router, timeout=30) as http:
        key, _ = aauth.generate_ed25519_keypair()
        enrolled = await http.post(ps + "/agentauth/agents", headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                                   json={"name": "weather-bot", "jwk": aauth.public_key_to_jwk(key.public_key()),
                                         "owner": "alice"})
        assert enrolled.status_code == 201, enrolled.text
        agent_token = enrolled.json()["agent_token"]
        jwks: dict[tuple[str, str], Any] = {}
        for iss, dwk in [(ps, "aauth-agent.json"), (ps, "aauth-person.json"), (api, "aauth-resource.json")]:
            meta = (await http.get(f"{iss}/.well-known/{dwk}")).json()
            assert meta["issuer"] == iss
            jwks[(iss, dwk)] = (await http.get(meta["jwks_uri"])).json()

        def fetch_jwks(iss: str, dwk: str, kid: str | None = None) -> Any:
            return jwks[(iss, dwk)]

        async def signed_get(token: str, path: str = "/weather") -> httpx.Response:
            url = api + path
            return await http.get(url, headers=aauth.sign_request("GET", url, {}, None, key, sig_scheme="jwt",
                                                                  jwt=token))

        unsigned = await http.get(api + "/weather")
        assert unsigned.status_code == 401
        assert aauth.parse_aauth_requirement(unsigned.headers["aauth-requirement"])["requirement"] == "agent-token"
        agent_only = await signed_get(agent_token)
        assert agent_only.status_code == 401 and agent_only.headers["aauth-requirement"] == \
            "requirement=person-token"
        presented = await aauth.request_person_token(ps, api, key, agent_token, jwks_fetcher=fetch_jwks,
                                                     http_client=http)
        as_person = await signed_get(presented, "/me")  # need = person: a person token is enough
        assert as_person.status_code == 200, as_person.text
        assert identity(w)["mechanism"] == "agentauth" and "scopes" not in identity(w)
        challenge = await signed_get(presented)
        assert challenge.status_code == 401, challenge.text
        assert challenge.headers["aauth-requirement"].startswith("requirement=auth-token; resource-token=")
        assert "payment-required" in challenge.headers  # the combined challenge: the other ways in still shown
        assert challenge.headers["www-authenticate"].startswith("Bearer resource_metadata=")
        resource_token = extract_resource_token(challenge.headers)
        assert resource_token

        async def on_interaction(url: str, code: str) -> None:
            page = await http.get(url)
            approval_id = page.headers["location"].rsplit("/", 1)[1]
            await ctx.approvals.decide(approval_id, True, by=owner, channel="web")

        auth_token = await aauth.exchange_resource_token(
            resource_token, key, agent_token, presented_token=presented, resource_id=api, person_server=ps,
            jwks_fetcher=fetch_jwks, http_client=http, on_interaction=on_interaction, max_polls=5,
            capabilities=["interaction"], justification="to read the forecast")
        ok = await signed_get(auth_token)
    assert ok.status_code == 200, ok.text
    who = identity(w)
    assert who["mechanism"] == "agentauth" and who["scopes"] == ("weather:read",)
    assert who["agent"].startswith("urn:ietf:params:oauth:jwk-thumbprint:sha-256:")
    assert_clean(w)


async def funded(chain: EmbeddedChain) -> tuple[str, str]:
    key = "0x" + secrets.token_hex(32)
    address = str(Account.from_key(key).address)
    await chain.mint(address, 1_000_000)
    return key, address


async def test_the_x402_sdk_pays_from_the_combined_401_and_settles_after_the_upstream(world: World) -> None:
    from x402.http import x402HTTPClient
    from x402.mechanisms.evm.exact import register_exact_evm_client

    from x402 import x402Client

    key, payer = await funded(world.chain)
    sdk = x402Client()
    register_exact_evm_client(sdk, Account.from_key(key))
    sdk.set_spend_controls(False)
    client = x402HTTPClient(sdk)
    async with httpx.AsyncClient(timeout=30) as http:
        unpaid = await http.get(world.gateway + "/weather")
        required = client.get_payment_required_response(lambda n: unpaid.headers.get(n), unpaid.content)
        payload = await client.create_payment_payload(required)
        paid = await http.get(world.gateway + "/weather", headers=client.encode_payment_signature_header(payload))
    assert paid.status_code == 200, paid.text
    settle = client.get_payment_settle_response(lambda n: paid.headers.get(n))
    assert settle.success and settle.payer == payer
    who = identity(world)
    assert who == {"mechanism": "x402", "payer": payer, "network": localchain.NETWORK, "amount": "10000",
                   "asset": localchain.TOKEN_ADDRESS}  # authorization flow: settled after, so no tx yet
    assert await world.chain.balance_of(localchain.TOKEN_ADDRESS, PAYEE) == 10_000
    assert_clean(world)


async def test_payment_first_route_the_x402_transport_pays_by_itself(world: World) -> None:
    from x402.http.clients import x402HttpxClient
    from x402.mechanisms.evm.exact import register_exact_evm_client

    from x402 import x402Client

    key, payer = await funded(world.chain)
    sdk = x402Client()
    register_exact_evm_client(sdk, Account.from_key(key))
    sdk.set_spend_controls(False)
    async with x402HttpxClient(sdk, timeout=30) as http:
        r = await http.get(world.gateway + "/paid/weather")
    assert r.status_code == 200, r.text
    assert identity(world)["payer"] == payer
    assert await world.chain.balance_of(localchain.TOKEN_ADDRESS, payer) == 990_000
    assert_clean(world)


async def test_sse_passes_through_unbuffered(world: World) -> None:
    async with (httpx.AsyncClient(auth=OAuthAgentAuth(grant="client_credentials"), timeout=30) as http,
                http.stream("GET", world.gateway + "/events") as r):
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = r.aiter_lines()
        first = await asyncio.wait_for(anext(lines), 10)
        assert first == "data: first"
        assert not world.upstream.release.is_set()  # the upstream has not finished: it waits for us
        world.upstream.release.set()
        rest = [line async for line in lines if line]
    assert rest == ["data: second"]
    assert_clean(world)
