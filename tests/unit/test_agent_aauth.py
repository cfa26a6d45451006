"""The agent side of the AAuth agent authorization grant (``authgate.agent.aauth``) against a scripted token
endpoint (``httpx.MockTransport``), with a fake clock so the polling never sleeps for real."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from authgate.agent import (
    AgentAuthError,
    AgentAuthorizationClient,
    AgentAuthorizationDenied,
    AgentAuthorizationError,
    AgentAuthorizationExpired,
    AgentAuthorizationPending,
    AgentAuthorizationTimeout,
    DiscoveryError,
    IdentityNotVerified,
    IssuerMismatchError,
    TokenError,
    discover_agent_authorization,
    fetch_scope_descriptions,
)
from authgate.agent.aauth import GRANT_TYPE

AS = "https://auth.example"
TOKEN = AS + "/token"
RS = "https://api.example/orders"
CLIENT_ID, SECRET = "agent-1", "s3cr3t-client-secret-value"
CLAIMS = {"given_name": "Ana", "family_name": "Lopez-Quintero", "birthdate": "1980-04-02",
          "address": {"postal_code": "94107"}}
CAPTURE = {"given_name": "asr_validated", "family_name": "asr_validated", "birthdate": "dtmf",
           "postal_code": "dtmf"}
CALLER = "+14155550100"
REQUEST_CODE = "rc-Zk3v9Qw-request-code"
ACCESS = "eyJhbGciOi.access-token-value.sig"
PII = ["Ana", "Lopez-Quintero", "1980-04-02", "94107", CALLER, "4155550100", SECRET, REQUEST_CODE, ACCESS]


def ok(scope: str = "orders:read") -> httpx.Response:
    return httpx.Response(200, json={"access_token": ACCESS, "token_type": "Bearer", "expires_in": 600,
                                     "scope": scope})


def err(error: str, status: int = 400, headers: dict[str, str] | None = None, **extra: Any) -> httpx.Response:
    return httpx.Response(status, json={"error": error, **extra}, headers=headers)


def pending(**extra: Any) -> httpx.Response:
    body = {"request_code": REQUEST_CODE, "interval": 5, "expires_in": 600, **extra}
    return err("authorization_pending", **body)


class Fake:
    """A token endpoint answering from a script, a clock that moves only when the client sleeps."""

    def __init__(self, *responses: httpx.Response | Callable[[httpx.Request], httpx.Response]) -> None:
        self.script = list(responses)
        self.requests: list[httpx.Request] = []
        self.event_requests: list[httpx.Request] = []
        self.events = httpx.Response(200, headers={"Content-Type": "text/event-stream"}, content=(
            b'retry: 2000\n\nevent: status\nid: 1\ndata: {"id":"ap1","status":"pending"}\n\n: keep-alive\n\n'
            b'event: status\nid: 2\ndata: {"id":"ap1","status":"approved","decided_at":1}\n\n'))
        self.now = 0.0
        self.sleeps: list[float] = []
        self.metadata: dict[str, Any] = {
            "issuer": AS, "token_endpoint": TOKEN, "grant_types_supported": ["client_credentials", GRANT_TYPE],
            "agent_authorization_user_claims_supported": ["given_name", "family_name", "birthdate"],
            "agent_authorization_min_claims": 3, "agent_authorization_draft": "rosenberg-01",
        }
        self.aauth_json: httpx.Response = httpx.Response(200, json={"scope_descriptions": [
            {"scope": "orders:read", "description": "See your orders and their status"}]})

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/oauth-authorization-server":
            return httpx.Response(200, json=self.metadata)
        if request.url.path == "/.well-known/aauth.json":
            return self.aauth_json
        if request.url.path.startswith("/approvals/"):
            self.event_requests.append(request)
            return self.events
        assert str(request.url) == TOKEN, request.url
        self.requests.append(request)
        nxt = self.script.pop(0)
        return nxt(request) if callable(nxt) else nxt

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def forms(self) -> list[dict[str, str]]:
        out = []
        for r in self.requests:
            out.append({k: v[0] for k, v in parse_qs(r.content.decode()).items()})
        return out

    def client(self, http: httpx.AsyncClient, **kwargs: Any) -> AgentAuthorizationClient:
        return AgentAuthorizationClient(http, TOKEN, CLIENT_ID, SECRET, sleep=self.sleep, clock=lambda: self.now,
                                        **kwargs)


async def ask(fake: Fake, wait_events: bool = False, **kwargs: Any) -> Any:
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handle)) as http:
        params: dict[str, Any] = {"channel": "pstn", "capture_method": CAPTURE, "conversation_id": "conv-1",
                                  "scope": "orders:read", "resource": RS, "caller_id": CALLER}
        params.update(kwargs)
        return await fake.client(http, wait_events=wait_events).request_token(CLAIMS, **params)


async def test_pii_tier_token_in_one_request() -> None:
    fake = Fake(ok())
    waited: list[AgentAuthorizationPending] = []
    tokens = await ask(fake, reason="Read the order status", on_waiting=waited.append)
    assert tokens.access_token == ACCESS and tokens.scope == "orders:read" and tokens.refresh_token is None
    assert not waited and not fake.sleeps
    (form,) = fake.forms()
    assert form == {
        "grant_type": GRANT_TYPE, "user_claims": form["user_claims"], "channel": "pstn",
        "capture_method": form["capture_method"], "conversation_id": "conv-1", "caller_id": CALLER,
        "scope": "orders:read", "resource": RS, "reason": "Read the order status", "client_id": CLIENT_ID,
    }
    assert json.loads(form["user_claims"]) == CLAIMS
    assert json.loads(form["capture_method"]) == CAPTURE
    basic = fake.requests[0].headers["authorization"]
    assert base64.b64decode(basic.removeprefix("Basic ")).decode() == f"{CLIENT_ID}:{SECRET}"
    assert "client_secret" not in form


async def test_optional_parameters_are_left_out_and_one_capture_method_for_all() -> None:
    fake = Fake(ok())
    await ask(fake, resource=None, caller_id=None, scope=None, capture_method="dtmf")
    (form,) = fake.forms()
    assert {"resource", "caller_id", "scope", "reason"}.isdisjoint(form)
    assert form["capture_method"] == "dtmf"


async def test_pending_then_approved_polls_with_request_code_at_the_interval() -> None:
    fake = Fake(pending(), err("authorization_pending"), ok("orders:read orders:write"))
    waited: list[AgentAuthorizationPending] = []

    async def on_waiting(p: AgentAuthorizationPending) -> None:
        waited.append(p)

    tokens = await ask(fake, scope="orders:read orders:write", on_waiting=on_waiting)
    assert tokens.scope == "orders:read orders:write"
    assert len(waited) == 1
    p = waited[0]
    assert (p.request_code, p.interval, p.expires_in, p.scope) == (REQUEST_CODE, 5, 600, "orders:read orders:write")
    assert REQUEST_CODE not in repr(p)
    assert p.message == "Waiting for the customer's approval on their registered device (the request expires in " \
                        "600 seconds)."
    assert fake.sleeps == [5, 5]
    first, *polls = fake.forms()
    assert "user_claims" in first
    for form in polls:  # polls carry the handle only: no claims again
        assert form == {"grant_type": GRANT_TYPE, "request_code": REQUEST_CODE, "client_id": CLIENT_ID}
    assert all(r.headers["authorization"].startswith("Basic ") for r in fake.requests)


async def test_sync_callback_and_poll_interval_alias() -> None:
    fake = Fake(err("authorization_pending", request_code=REQUEST_CODE, poll_interval=7), ok())
    seen: list[float] = []
    await ask(fake, on_waiting=lambda p: seen.append(p.interval))
    assert seen == [7] and fake.sleeps == [7]


async def test_denied() -> None:
    fake = Fake(pending(), err("authorization_pending"), err("access_denied"))
    with pytest.raises(AgentAuthorizationDenied) as info:
        await ask(fake)
    assert info.value.error == "access_denied" and info.value.status_code == 400
    assert isinstance(info.value, AgentAuthorizationError | TokenError | AgentAuthError)


async def test_expired() -> None:
    fake = Fake(pending(), err("expired_token"))
    with pytest.raises(AgentAuthorizationExpired) as info:
        await ask(fake)
    assert info.value.error == "expired_token"


async def test_slow_down_adds_five_seconds_or_honours_retry_after() -> None:
    fake = Fake(pending(), err("slow_down"), err("slow_down", headers={"Retry-After": "20"}),
                err("authorization_pending"), ok())
    await ask(fake)
    assert fake.sleeps == [5, 10, 20, 20]


async def test_rate_limited_poll_waits_retry_after_without_growing_the_interval() -> None:
    fake = Fake(pending(), err("slow_down", status=429, headers={"Retry-After": "12"}), err("authorization_pending"),
                ok())
    await ask(fake)
    assert fake.sleeps == [5, 12, 5]


async def test_transient_failures_while_polling_are_retried_a_few_times() -> None:
    fake = Fake(pending(), httpx.Response(503), ok())
    assert (await ask(fake)).access_token == ACCESS

    def boom(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("down", request=request)

    fake = Fake(pending(), boom, httpx.Response(502), boom)
    with pytest.raises(AgentAuthorizationError) as info:
        await ask(fake)
    assert "unreachable" in str(info.value) and len(fake.requests) == 4


async def test_timeout_when_no_further_poll_fits() -> None:
    fake = Fake(pending(), *[err("authorization_pending")] * 10)
    with pytest.raises(AgentAuthorizationTimeout):
        await ask(fake, timeout=12)
    assert fake.sleeps == [5, 5] and len(fake.requests) == 3


@pytest.mark.parametrize("description", [
    "The details could not be verified",
    "no user matches Lopez-Quintero born 1980-04-02",  # a server that echoes what it got
    None,
])
async def test_invalid_grant_is_identity_not_verified_and_says_nothing_personal(description: str | None) -> None:
    extra = {"error_description": description} if description else {}
    fake = Fake(err("invalid_grant", **extra))
    with pytest.raises(IdentityNotVerified) as info:
        await ask(fake)
    exc = info.value
    assert exc.error == "invalid_grant" and exc.status_code == 400
    assert str(exc).startswith("the details given do not identify a customer (error=invalid_grant")
    for value in PII:
        assert value.lower() not in str(exc).lower() and value.lower() not in repr(exc).lower()
        assert value.lower() not in (exc.error_description or "").lower()


async def test_invalid_grant_while_polling_is_not_an_identity_failure() -> None:
    fake = Fake(pending(), err("invalid_grant"))
    with pytest.raises(AgentAuthorizationError) as info:
        await ask(fake)
    assert not isinstance(info.value, IdentityNotVerified)
    assert info.value.error == "invalid_grant"


async def test_other_refusals_and_rate_limits() -> None:
    fake = Fake(err("invalid_scope", error_description="orders:admin is beyond the client's ceiling"))
    with pytest.raises(AgentAuthorizationError) as info:
        await ask(fake)
    assert type(info.value) is AgentAuthorizationError and info.value.error == "invalid_scope"

    fake = Fake(err("slow_down", status=429, headers={"Retry-After": "30"}))
    with pytest.raises(AgentAuthorizationError) as info:
        await ask(fake)
    assert info.value.status_code == 429 and info.value.retry_after == 30

    fake = Fake(err("authorization_pending", interval=5))  # escalation without a handle
    with pytest.raises(AgentAuthorizationError, match="no request_code"):
        await ask(fake)

    fake = Fake(httpx.Response(200, json={"token_type": "Bearer"}))
    with pytest.raises(AgentAuthorizationError, match="unusable token response"):
        await ask(fake)


async def test_no_personal_data_tokens_or_secrets_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await ask(Fake(pending(), err("slow_down"), ok()))
    await ask(Fake(ok()))
    for outcome in (err("invalid_grant", error_description="Ana Lopez-Quintero not found"),):
        with pytest.raises(IdentityNotVerified):
            await ask(Fake(outcome))
    with pytest.raises(AgentAuthorizationDenied):
        await ask(Fake(pending(), err("access_denied", error_description=f"code {REQUEST_CODE} denied")))
    text = caplog.text.lower()
    assert "authorization" in text  # something was logged
    for value in PII:
        assert value.lower() not in text, value


async def test_input_checks() -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(Fake().handle)) as http:
        with pytest.raises(ValueError, match="confidential"):
            AgentAuthorizationClient(http, TOKEN, CLIENT_ID, "")
        client = AgentAuthorizationClient(http, TOKEN, CLIENT_ID, SECRET)
        assert SECRET not in repr(client) and CLIENT_ID in repr(client)
        with pytest.raises(ValueError, match="user_claims"):
            await client.request_token({}, channel="pstn", capture_method="dtmf", conversation_id="c")
        with pytest.raises(ValueError, match="required"):
            await client.request_token(CLAIMS, channel="", capture_method="dtmf", conversation_id="c")


async def test_discovery() -> None:
    fake = Fake(ok())
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handle)) as http:
        server = await discover_agent_authorization(http, AS)
        assert server.token_endpoint == TOKEN and server.min_claims == 3
        assert server.user_claims_supported == ("given_name", "family_name", "birthdate")
        assert server.draft == "rosenberg-01" and server.extensions["agent_authorization_draft"] == "rosenberg-01"
        client = await AgentAuthorizationClient.discover(http, AS, CLIENT_ID, SECRET)
        assert client.token_endpoint == TOKEN

        fake.metadata["grant_types_supported"] = ["client_credentials"]
        with pytest.raises(DiscoveryError, match="does not support"):
            await discover_agent_authorization(http, AS)
        fake.metadata["issuer"] = "https://evil.example"
        with pytest.raises(IssuerMismatchError):
            await discover_agent_authorization(http, AS)


async def test_scope_descriptions() -> None:
    fake = Fake()
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handle)) as http:
        assert await fetch_scope_descriptions(http, RS) == {"orders:read": "See your orders and their status"}
        fake.aauth_json = httpx.Response(200, json={"scope_descriptions": {"orders:write": "Change an order"}})
        assert await fetch_scope_descriptions(http, RS) == {"orders:write": "Change an order"}
        fake.aauth_json = httpx.Response(404)
        assert await fetch_scope_descriptions(http, RS) == {}


EVENTS = AS + "/approvals/ap1/events"


async def test_waits_on_server_sent_events_then_polls_once() -> None:
    fake = Fake(pending(approval_events_endpoint=EVENTS), ok("orders:write"))
    waited: list[AgentAuthorizationPending] = []
    tokens = await ask(fake, wait_events=True, scope="orders:write", on_waiting=waited.append)
    assert tokens.scope == "orders:write"
    assert waited[0].events_endpoint == EVENTS
    assert fake.sleeps == [0.0] and len(fake.requests) == 2  # no timed polls: one poll after the decision
    (events,) = fake.event_requests
    assert events.headers["accept"] == "text/event-stream"
    assert events.headers["authorization"] == fake.requests[0].headers["authorization"]


async def test_events_not_used_unless_asked_for_same_origin_and_working() -> None:
    fake = Fake(pending(approval_events_endpoint=EVENTS), err("authorization_pending"), ok())
    await ask(fake)  # wait_events off (the default): plain polling
    assert not fake.event_requests and fake.sleeps == [5, 5]

    fake = Fake(pending(approval_events_endpoint="https://elsewhere.example/approvals/ap1/events"), ok())
    await ask(fake, wait_events=True)  # another origin: never sent the credentials
    assert not fake.event_requests and fake.sleeps == [5]

    still_pending = b'event: status\ndata: {"status":"pending"}\n\n'
    for broken in (httpx.Response(404), httpx.Response(200, content=still_pending)):
        fake = Fake(pending(approval_events_endpoint=EVENTS), ok())
        fake.events = broken
        await ask(fake, wait_events=True)  # refused, or ended still pending: back to polling
        assert len(fake.event_requests) == 1 and fake.sleeps == [5]
