"""The agent SDK's AgentAuthorizationClient against the real authorization server, in process (ASGITransport):
discovery, the PII tier, escalation approved or denied by a concurrent task through ``ctx.approvals.decide``,
expiry, the uniform identity failure, and no submitted value in any log line. The server's clock is frozen; the
SDK's sleeps move it, so polling is on time without waiting for real."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from authgate.aauth import wire
from authgate.agent import (
    AgentAuthorizationClient,
    AgentAuthorizationDenied,
    AgentAuthorizationExpired,
    AgentAuthorizationPending,
    AgentAuthorizationTimeout,
    IdentityNotVerified,
    discover_agent_authorization,
    fetch_scope_descriptions,
)
from authgate.agent import aauth as sdk
from authgate.app import build_context, create_app
from authgate.approvals import ApprovalRequest
from authgate.clock import FrozenClock
from authgate.config import Settings
from authgate.context import ServerContext
from authgate.resource import AuthGateMiddleware, JWTVerifier, ProtectedResource, protect
from authgate.store import Store
from tests.conftest import ISSUER
from tests.helpers import RESOURCE, add_client, add_user

CLAIMS = {"given_name": "Bérénice", "family_name": "Okonkwo-Lindqvist", "birthdate": "1979-11-23",
          "address": {"postal_code": "EH1 2NG"}}
CAPTURE = {"given_name": "asr_validated", "family_name": "asr_validated", "birthdate": "dtmf",
           "postal_code": "platform_tool"}
PHONE_ON_FILE = "+447700900123"
PII = ["Bérénice", "Berenice", "berenice", "Okonkwo", "okonkwo", "1979-11-23", "19791123", "EH1 2NG", "eh12ng",
       "447700900123"]
Creds = tuple[str, str]


@pytest.fixture
async def customer(ctx: ServerContext) -> str:
    subject = await add_user(ctx.store, "berenice")
    await ctx.store.update_user("berenice", phone=PHONE_ON_FILE)
    await ctx.identity.set_attributes(subject, {
        "given_name": "Bérénice", "family_name": "Okonkwo-Lindqvist", "birthdate": "1979-11-23",
        "postal_code": "EH1 2NG", "phone_number": PHONE_ON_FILE})
    return subject


@pytest.fixture
async def creds(ctx: ServerContext) -> Creds:
    client_id, secret = await add_client(
        ctx.store, auth_method="client_secret_basic", grant_types=[wire.GRANT_TYPE], redirect_uris=[],
        response_types=[], **{wire.CLIENT_SCOPE_CEILING: "read write", wire.CLIENT_ELEVATED_SCOPES: "write",
                              wire.CLIENT_CHANNELS: ["pstn"]})
    assert secret is not None
    return client_id, secret


class Moving:
    """The SDK's sleep and clock, tied to the server's frozen clock: sleeping moves it and lets other tasks run."""

    def __init__(self, clock: FrozenClock) -> None:
        self.clock = clock
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.clock.advance(seconds)
        await asyncio.sleep(0.01)

    def now(self) -> float:
        return self.clock.now()


def agent(http: httpx.AsyncClient, creds: Creds, moving: Moving) -> AgentAuthorizationClient:
    return AgentAuthorizationClient(http, ISSUER + "/token", *creds, sleep=moving.sleep, clock=moving.now)


async def ask(client: AgentAuthorizationClient, claims: dict[str, Any] | None = None, **kwargs: Any) -> Any:
    params: dict[str, Any] = {"channel": "pstn", "capture_method": CAPTURE, "conversation_id": "call-e2e",
                              "scope": "read", "resource": RESOURCE, "caller_id": PHONE_ON_FILE}
    params.update(kwargs)
    return await client.request_token(claims or CLAIMS, **params)


async def token_claims(ctx: ServerContext, token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, await ctx.keys.key_set(None), algorithms=["ES256"]).claims)


def decide_when_asked(ctx: ServerContext, subject: str, approve: bool
                      ) -> tuple[Callable[[AgentAuthorizationPending], Awaitable[None]], asyncio.Task[ApprovalRequest]]:
    """``on_waiting`` for the SDK, and a task standing in for the customer: once the agent says it waits, it finds
    the pending request in the approval service and decides it."""
    asked = asyncio.Event()

    async def on_waiting(pending: AgentAuthorizationPending) -> None:
        asked.set()

    async def customer() -> ApprovalRequest:
        await asked.wait()
        (request,) = await ctx.approvals.pending_for(subject)
        return await ctx.approvals.decide(request.id, approve, by=subject, channel="test")

    return on_waiting, asyncio.create_task(customer())


def test_sdk_wire_names_are_the_servers() -> None:
    """The SDK cannot import the server (it must stay light), so it repeats the names; they must agree."""
    assert sdk.GRANT_TYPE == wire.GRANT_TYPE
    assert (sdk.P_USER_CLAIMS, sdk.P_CHANNEL, sdk.P_CALLER_ID, sdk.P_CAPTURE_METHOD, sdk.P_CONVERSATION_ID,
            sdk.P_REASON, sdk.P_REQUEST_CODE) == (wire.USER_CLAIMS, wire.CHANNEL, wire.CALLER_ID,
                                                  wire.CAPTURE_METHOD, wire.CONVERSATION_ID, wire.REASON,
                                                  wire.REQUEST_CODE)
    assert (sdk.META_USER_CLAIMS_SUPPORTED, sdk.META_MIN_CLAIMS, sdk.META_DRAFT, sdk.META_CHANNELS_SUPPORTED,
            sdk.META_CAPTURE_METHODS_SUPPORTED) == (wire.META_USER_CLAIMS_SUPPORTED, wire.META_MIN_CLAIMS,
                                                    wire.META_DRAFT, wire.META_CHANNELS_SUPPORTED,
                                                    wire.META_CAPTURE_METHODS_SUPPORTED)
    assert (sdk.AAUTH_WELL_KNOWN, sdk.SCOPE_DESCRIPTIONS) == (wire.AAUTH_WELL_KNOWN, wire.SCOPE_DESCRIPTIONS)
    assert sdk.CAPTURE_METHODS == wire.CAPTURE_METHODS
    assert sdk.SLOW_DOWN_STEP == 5


async def test_discovery_and_pii_tier(client: httpx.AsyncClient, ctx: ServerContext, clock: FrozenClock,
                                      customer: str, creds: Creds) -> None:
    server = await discover_agent_authorization(client, ISSUER)
    assert server.token_endpoint == ISSUER + "/token"
    assert server.min_claims == ctx.settings.aauth_min_claims and server.draft == ctx.settings.aauth_draft
    assert "birthdate" in server.user_claims_supported and "pstn" in server.channels_supported
    assert set(server.capture_methods_supported) == set(wire.CAPTURE_METHODS)

    moving = Moving(clock)
    waited: list[AgentAuthorizationPending] = []
    tokens = await ask(AgentAuthorizationClient(client, server.token_endpoint, *creds, sleep=moving.sleep,
                                                clock=moving.now), on_waiting=waited.append)
    assert not waited and not moving.sleeps
    assert tokens.scope == "read" and tokens.refresh_token is None
    claims = await token_claims(ctx, tokens.access_token)
    assert claims["sub"] == customer and claims["aud"] == RESOURCE and claims["amr"] == ["pii"]
    assert claims["act"] == {"sub": creds[0]}


async def test_elevated_scope_approved_by_the_customer(client: httpx.AsyncClient, ctx: ServerContext,
                                                       clock: FrozenClock, customer: str, creds: Creds) -> None:
    moving = Moving(clock)
    on_waiting, decided = decide_when_asked(ctx, customer, approve=True)
    tokens = await ask(agent(client, creds, moving), scope="read write", reason="Change the delivery address",
                       on_waiting=on_waiting)
    approval = await decided
    assert approval.approved and approval.kind == wire.APPROVAL_KIND and approval.reason == \
        "Change the delivery address"
    assert tokens.scope == "read write" and tokens.refresh_token is None
    claims = await token_claims(ctx, tokens.access_token)
    assert claims["sub"] == customer and claims["amr"] == ["pii", "oob"] and claims["act"] == {"sub": creds[0]}
    assert moving.sleeps and all(s == ctx.settings.aauth_interval for s in moving.sleeps)  # never too fast


async def test_elevated_scope_waiting_on_server_sent_events(client: httpx.AsyncClient, ctx: ServerContext,
                                                            clock: FrozenClock, customer: str, creds: Creds) -> None:
    """``wait_events``: the SDK reads the approval's status events (client credentials) until the customer decides,
    then polls once, with no timed polling."""
    moving = Moving(clock)
    on_waiting, decided = decide_when_asked(ctx, customer, approve=True)
    sdk_client = AgentAuthorizationClient(client, ISSUER + "/token", *creds, wait_events=True, sleep=moving.sleep,
                                          clock=moving.now)
    tokens = await ask(sdk_client, scope="write", on_waiting=on_waiting)
    assert (await decided).approved
    assert moving.sleeps == [0.0]
    assert (await token_claims(ctx, tokens.access_token))["amr"] == ["pii", "oob"]


async def test_elevated_scope_denied(client: httpx.AsyncClient, ctx: ServerContext, clock: FrozenClock,
                                     customer: str, creds: Creds) -> None:
    on_waiting, decided = decide_when_asked(ctx, customer, approve=False)
    with pytest.raises(AgentAuthorizationDenied) as info:
        await ask(agent(client, creds, Moving(clock)), scope="write", on_waiting=on_waiting)
    assert not (await decided).approved
    assert info.value.error == "access_denied"


async def test_nobody_decides_expired_or_timeout(ctx: ServerContext, make_client: Callable[..., Any],
                                                 settings: Settings, clock: FrozenClock, customer: str,
                                                 creds: Creds) -> None:
    _, http = await make_client(settings, aauth_escalation_ttl=30)
    moving = Moving(clock)
    with pytest.raises(AgentAuthorizationExpired):
        await ask(agent(http, creds, moving), scope="write", timeout=300)
    assert sum(moving.sleeps) >= 30

    with pytest.raises(AgentAuthorizationTimeout):
        await ask(agent(http, creds, Moving(clock)), scope="write", conversation_id="call-2", timeout=12)


async def test_uniform_identity_failure(client: httpx.AsyncClient, ctx: ServerContext, clock: FrozenClock,
                                        customer: str, creds: Creds) -> None:
    client_ = agent(client, creds, Moving(clock))
    messages = []
    for claims in ({**CLAIMS, "birthdate": "1979-11-24"},  # one wrong detail
                   {"given_name": "Nobody", "family_name": "Known", "birthdate": "1990-01-01",
                    "address": {"postal_code": "00000"}}):  # nobody at all
        with pytest.raises(IdentityNotVerified) as info:
            await ask(client_, claims, conversation_id=f"call-{len(messages)}")
        assert info.value.error == "invalid_grant" and info.value.status_code == 400
        messages.append((str(info.value), info.value.error_description))
    assert messages[0] == messages[1]


async def test_no_submitted_value_in_any_log_line(client: httpx.AsyncClient, ctx: ServerContext,
                                                  clock: FrozenClock, customer: str, creds: Creds,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client_ = agent(client, creds, Moving(clock))
    await ask(client_)
    on_waiting, decided = decide_when_asked(ctx, customer, approve=True)
    await ask(client_, scope="write", on_waiting=on_waiting, conversation_id="call-b")
    await decided
    with pytest.raises(IdentityNotVerified):
        await ask(client_, {**CLAIMS, "birthdate": "1979-11-24"}, conversation_id="call-c")
    text = caplog.text
    assert "aauth" in text  # both sides logged something
    for value in [*PII, creds[1]]:
        assert value not in text, value


async def test_scope_descriptions_from_the_resource_side() -> None:
    resource = ProtectedResource(resource="https://api.example.com/orders", authorization_servers=[ISSUER],
                                 scopes_supported=["orders:read"],
                                 scope_descriptions={"orders:read": "See your orders and where they are"})
    verifier = JWTVerifier(ISSUER, resource.resource)
    app = AuthGateMiddleware(Starlette(), verifier, resource, rules=[protect("/orders/*", "orders:read")])
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
            assert await fetch_scope_descriptions(http, resource.resource) == {
                "orders:read": "See your orders and where they are"}
    finally:
        await verifier.aclose()


# -- docs/aauth.md ---------------------------------------------------------------------------------------------

DOC_ISSUER = "https://auth.example.com"
DOC_API = "https://api.example.com"
_EXAMPLE = re.compile(r"<!-- example: ([\w-]+) -->\n```(\w+)\n(.*?)\n```", re.S)
DOC_TEXT = (Path(__file__).resolve().parents[2] / "docs" / "aauth.md").read_text(encoding="utf-8")


class HostRouter(httpx.AsyncBaseTransport):
    """Sends each request to the in-process app serving its host."""

    def __init__(self, apps: dict[str, Any]) -> None:
        self.transports = {host: httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
                           for host, app in apps.items()}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.transports[request.url.host].handle_async_request(request)


async def test_docs_agent_example_runs_as_written(settings: Settings, store: Store, clock: FrozenClock) -> None:
    """The agent-side example of docs/aauth.md, unchanged, against a server at https://auth.example.com: the
    customer approves from a concurrent task, and the API receives an elevated token for her."""
    (lang, code), = [(lang, code) for name, lang, code in _EXAMPLE.findall(DOC_TEXT) if name == "aauth-agent"]
    assert lang == "python"
    ctx = await build_context(replace(settings, issuer=DOC_ISSUER, scopes=("orders:read", "orders:write"),
                                      default_scopes=("orders:read",), aauth_interval=1).validate(), clock, store)
    subject = await add_user(store, "maria")
    await ctx.identity.set_attributes(subject, {"given_name": "María", "family_name": "García",
                                                "birthdate": "1986-03-14", "postal_code": "94107"})
    client_id, secret = await add_client(
        store, auth_method="client_secret_basic", grant_types=[wire.GRANT_TYPE], redirect_uris=[],
        response_types=[], **{wire.CLIENT_SCOPE_CEILING: "orders:read orders:write",
                              wire.CLIENT_ELEVATED_SCOPES: "orders:write", wire.CLIENT_CHANNELS: ["pstn"]})
    received: list[dict[str, Any]] = []

    async def change_address(request: Request) -> JSONResponse:
        token = request.headers["authorization"].removeprefix("Bearer ")
        received.append({"claims": await token_claims(ctx, token), "body": await request.json()})
        return JSONResponse({}, status_code=200)

    api = Starlette(routes=[Route("/orders/{order_id}/address", change_address, methods=["POST"])])
    said: list[str] = []

    async def say(words: str) -> None:
        said.append(words)

    async def customer() -> None:
        for _ in range(1000):
            pending = await ctx.approvals.pending_for(subject)
            if pending:
                await ctx.approvals.decide(pending[0].id, True, by=subject, channel="test")
                return
            await asyncio.sleep(0.01)

    ns: dict[str, Any] = {"__name__": "docs_example_aauth_agent", "CLIENT_ID": client_id, "CLIENT_SECRET": secret,
                          "say": say, "NEW_ADDRESS": {"street": "9 New Ave"}}
    exec(compile(code, "docs/aauth.md#aauth-agent", "exec"), ns)
    decider = asyncio.create_task(customer())
    router = HostRouter({"auth.example.com": create_app(ctx), "api.example.com": api})
    async with httpx.AsyncClient(transport=router) as http:
        await ns["change_address"](http, {"given_name": "Maria", "family_name": "Garcia", "birthdate": "14 March 1986",
                                          "zip": "94107"}, {"caller_id": "+14155550142", "id": "call-doc"})
    await decider
    assert said == ["I've sent an approval request to the phone number on your account."]
    (call,) = received
    assert call["body"] == {"street": "9 New Ave"}
    assert call["claims"]["sub"] == subject and call["claims"]["amr"] == ["pii", "oob"]
    assert call["claims"]["aud"] == DOC_API + "/orders" and call["claims"]["scope"] == "orders:write"
