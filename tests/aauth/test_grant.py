"""The Agent Authorization Grant at the token endpoint (authgate profile): identification from details collected in
conversation, the PII tier, escalation to the person's approval, and the abuse controls around it. Black-box over
HTTP, on SQLite and PostgreSQL, with a movable clock."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from joserfc import jwt

from authgate.aauth import wire
from authgate.aauth.grant import AAUTH_REQUEST
from authgate.approvals import ApprovalRequest, Expired
from authgate.clock import FrozenClock
from authgate.config import Settings
from authgate.context import ServerContext
from authgate.crypto.hashing import token_hash
from authgate.store import tables
from tests.conftest import ISSUER
from tests.helpers import RESOURCE, add_client, add_user

Creds = tuple[str, str]

# Distinctive values, so a grep of logs and database finds them only if they leaked.
CLAIMS = {"given_name": "Anastasia", "family_name": "Quintero-Lopez", "birthdate": "1980-04-02",
          "address": {"postal_code": "K1A0B1"}}
METHODS = {"given_name": "asr_validated", "family_name": "asr_validated", "birthdate": "dtmf",
           "address": {"postal_code": "platform_tool"}}
PHONE_ON_FILE = "+14155550123"  # an identity attribute of Ana's (blinded)
CONTACT_PHONE = "+14155550999"  # where approvals reach her (users.phone)
PII_VALUES = ["Anastasia", "anastasia", "Quintero", "quintero", "1980-04-02", "19800402", "K1A0B1", "k1a0b1",
              "14155550123", "14155550777"]


class Recorder:
    """A notifier that keeps what it was asked to deliver."""

    def __init__(self) -> None:
        self.delivered: list[ApprovalRequest] = []

    async def notify(self, request: ApprovalRequest) -> None:
        self.delivered.append(request)


@pytest.fixture
async def ana(ctx: ServerContext) -> str:
    subject = await add_user(ctx.store, "ana")
    await ctx.store.update_user("ana", phone=CONTACT_PHONE, email="ana@example.org")
    await ctx.identity.set_attributes(subject, {
        "given_name": "Anastasia", "family_name": "Quintero-Lopez", "birthdate": "1980-04-02",
        "postal_code": "K1A0B1", "phone_number": PHONE_ON_FILE})
    return subject


async def agent_client(ctx: ServerContext, **metadata: Any) -> Creds:
    meta: dict[str, Any] = {wire.CLIENT_SCOPE_CEILING: "read write", wire.CLIENT_ELEVATED_SCOPES: "write",
                            wire.CLIENT_CHANNELS: ["pstn", "sms"]}
    meta.update(metadata)
    client_id, secret = await add_client(ctx.store, auth_method="client_secret_basic", grant_types=[wire.GRANT_TYPE],
                                         redirect_uris=[], response_types=[], **meta)
    assert secret is not None
    return client_id, secret


@pytest.fixture
async def agent(ctx: ServerContext) -> Creds:
    return await agent_client(ctx)


def form(**overrides: Any) -> dict[str, str]:
    values: dict[str, Any] = {
        "grant_type": wire.GRANT_TYPE,
        wire.USER_CLAIMS: CLAIMS,
        wire.CAPTURE_METHOD: METHODS,
        wire.CHANNEL: "pstn",
        wire.CONVERSATION_ID: "conv-" + secrets.token_hex(4),
        wire.SCOPE: "read",
        wire.RESOURCE: RESOURCE,
    }
    values.update(overrides)
    return {k: json.dumps(v) if isinstance(v, dict) else v for k, v in values.items() if v is not None}


async def identify(http: httpx.AsyncClient, creds: Creds, **overrides: Any) -> httpx.Response:
    return await http.post("/token", data=form(**overrides), auth=creds)


async def poll(http: httpx.AsyncClient, creds: Creds, request_code: str) -> httpx.Response:
    return await http.post("/token", data={"grant_type": wire.GRANT_TYPE, wire.REQUEST_CODE: request_code},
                           auth=creds)


def error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["cache-control"] == "no-store"
    body: dict[str, Any] = r.json()
    assert body["error"] == code, r.text
    return body


async def claims_of(ctx: ServerContext, token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, await ctx.keys.key_set(None), algorithms=["ES256"]).claims)


async def pending(http: httpx.AsyncClient, creds: Creds, **overrides: Any) -> dict[str, Any]:
    body = error(await identify(http, creds, **overrides), 400, "authorization_pending")
    assert set(body) >= {"request_code", "interval", "expires_in"}
    return body


async def approval_of(ctx: ServerContext, request_code: str) -> ApprovalRequest:
    artifact = await ctx.store.get_artifact(token_hash(request_code), AAUTH_REQUEST)
    assert artifact is not None
    approval = await ctx.approvals.get(str(artifact.payload["approval_id"]))
    assert approval is not None
    return approval


async def dump(ctx: ServerContext) -> str:
    """Every row of every table, as text; not the rate-limit buckets (on PostgreSQL they are in the database, and
    an attempt counts before it is read, as it does in a process's memory)."""
    out: list[str] = []
    async with ctx.store.engine.connect() as conn:
        for table in tables.metadata.sorted_tables:
            if table is tables.rate_limit_counters:
                continue
            rows = (await conn.execute(sa.select(table))).all()
            out.extend(f"{table.name}: {tuple(r)!r}" for r in rows)
    return "\n".join(out)


async def events(ctx: ServerContext) -> list[str]:
    return [e["event"] for e in await ctx.store.audit_events(1000)]


# -- the PII tier --------------------------------------------------------------------------------------------


async def test_pii_tier_token(client: httpx.AsyncClient, ctx: ServerContext, clock: FrozenClock, ana: str,
                              agent: Creds) -> None:
    r = await identify(client, agent)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    body = r.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}  # no refresh token
    assert body["scope"] == "read" and body["expires_in"] == ctx.settings.aauth_token_ttl == 600
    claims = await claims_of(ctx, body["access_token"])
    assert claims["sub"] == ana and claims["aud"] == RESOURCE and claims["iss"] == ISSUER
    assert claims["act"] == {"sub": agent[0]} and claims["client_id"] == agent[0]
    assert claims["amr"] == ["pii"] and claims["auth_time"] == int(clock.now())
    assert claims["exp"] - claims["iat"] == 600 and claims["scope"] == "read"
    assert {"aauth.identified", "aauth.issued", "token.issued"} <= set(await events(ctx))


async def test_introspection_tells_the_tier(client: httpx.AsyncClient, ctx: ServerContext, clock: FrozenClock,
                                            ana: str, agent: Creds) -> None:
    token = (await identify(client, agent)).json()["access_token"]
    rs_id, rs_secret = await add_client(ctx.store, auth_method="client_secret_basic",
                                        grant_types=["client_credentials"])
    body = (await client.post("/introspect", data={"token": token}, auth=(rs_id, rs_secret or ""))).json()
    assert body["active"] is True and body["sub"] == ana and body["aud"] == RESOURCE
    assert body["act"] == {"sub": agent[0]} and body["amr"] == ["pii"] and body["auth_time"] == int(clock.now())


async def test_token_lifetime_is_the_aauth_setting(ctx: ServerContext, make_client: Callable[..., Any],
                                                   settings: Settings, ana: str, agent: Creds) -> None:
    _, http = await make_client(settings, aauth_token_ttl=300, access_token_ttl=3000)
    body = (await identify(http, agent)).json()
    claims = await claims_of(ctx, body["access_token"])
    assert body["expires_in"] == 300 and claims["exp"] - claims["iat"] == 300


async def test_one_capture_method_for_all_claims(client: httpx.AsyncClient, ana: str, agent: Creds) -> None:
    r = await identify(client, agent, capture_method="platform_tool")
    assert r.status_code == 200, r.text


async def test_phone_number_from_caller_id_lookup(client: httpx.AsyncClient, ana: str, agent: Creds) -> None:
    claims = {**CLAIMS, "phone_number": PHONE_ON_FILE}
    r = await identify(client, agent, user_claims=claims, caller_id=PHONE_ON_FILE,
                       capture_method={**METHODS, "phone_number": "caller_id_lookup"})
    assert r.status_code == 200, r.text


async def test_no_scope_means_the_pii_tier(client: httpx.AsyncClient, ctx: ServerContext, ana: str,
                                           agent: Creds) -> None:
    r = await identify(client, agent, scope=None)
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == "read"


# -- scopes and the ceiling: scopes outside the ceiling are dropped; nothing left is invalid_scope ------------


async def test_scopes_beyond_the_ceiling_are_dropped(client: httpx.AsyncClient, ctx: ServerContext, ana: str,
                                                     agent: Creds) -> None:
    r = await identify(client, agent, scope="read admin")
    assert r.status_code == 200, r.text
    assert r.json()["scope"] == "read"
    assert (await claims_of(ctx, r.json()["access_token"]))["scope"] == "read"


async def test_only_scopes_beyond_the_ceiling_is_invalid_scope(client: httpx.AsyncClient, ctx: ServerContext,
                                                               ana: str, agent: Creds) -> None:
    before = await dump(ctx)
    error(await identify(client, agent, scope="admin"), 400, "invalid_scope")
    error(await identify(client, agent, scope="offline_access"), 400, "invalid_scope")
    assert await dump(ctx) == before


# -- escalation ----------------------------------------------------------------------------------------------


async def test_escalation_pending_slow_down_then_approved(client: httpx.AsyncClient, ctx: ServerContext,
                                                          clock: FrozenClock, ana: str, agent: Creds) -> None:
    recorder = Recorder()
    ctx.approvals.notifier = recorder
    started = await pending(client, agent, scope="read write", reason="Customer asked to change the address",
                            caller_id=PHONE_ON_FILE, conversation_id="conv-42")
    assert started["interval"] == 5 and started["expires_in"] == ctx.settings.aauth_escalation_ttl == 300
    code = started["request_code"]
    approval = await approval_of(ctx, code)
    assert approval.kind == "aauth_escalation" and approval.subject == ana and approval.client_id == agent[0]
    assert approval.reason == "Customer asked to change the address"
    assert approval.details["scopes"] == ["read", "write"] and approval.details["elevated_scopes"] == ["write"]
    assert approval.details["resource"] == RESOURCE and approval.details["channel"] == "pstn"
    assert approval.details["conversation_id"] == "conv-42"
    # Delivered to Ana (her registered channels), and the calling number appears nowhere in the request.
    assert [d.id for d in recorder.delivered] == [approval.id] and recorder.delivered[0].subject == ana
    assert PHONE_ON_FILE.lstrip("+") not in repr(approval)

    clock.advance(5)
    error(await poll(client, agent, code), 400, "authorization_pending")
    clock.advance(4)
    r = await poll(client, agent, code)
    body = error(r, 400, "slow_down")
    assert r.headers["retry-after"] == "10" and body["interval"] == 10
    clock.advance(10)
    error(await poll(client, agent, code), 400, "authorization_pending")

    decided = await ctx.approvals.decide(approval.id, True, by=ana, channel="web")
    r = await poll(client, agent, code)  # a decided request answers at once
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["scope"] == "read write" and "refresh_token" not in body and body["expires_in"] == 600
    claims = await claims_of(ctx, body["access_token"])
    assert claims["amr"] == ["pii", "oob"] and claims["act"] == {"sub": agent[0]} and claims["sub"] == ana
    assert claims["auth_time"] == decided.decided_at and claims["aud"] == RESOURCE

    error(await poll(client, agent, code), 400, "invalid_grant")  # single use
    assert {"aauth.escalated", "approval.approved", "aauth.issued"} <= set(await events(ctx))


async def test_agent_may_wait_on_the_approval_events(client: httpx.AsyncClient, ctx: ServerContext, ana: str,
                                                      agent: Creds) -> None:
    started = await pending(client, agent, scope="write")
    approval = await approval_of(ctx, started["request_code"])
    url = started["approval_events_endpoint"]
    assert url == f"{ISSUER}/approvals/{approval.id}/events"
    await ctx.approvals.decide(approval.id, True, by=ana, channel="web")
    stream = await client.get(url, auth=agent)
    assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
    assert '"status": "approved"' in stream.text or '"status":"approved"' in stream.text
    other = await agent_client(ctx)
    assert (await client.get(url, auth=other)).status_code in (401, 403, 404)
    assert (await poll(client, agent, started["request_code"])).status_code == 200


async def test_escalation_denied(client: httpx.AsyncClient, ctx: ServerContext, ana: str, agent: Creds) -> None:
    code = (await pending(client, agent, scope="write"))["request_code"]
    await ctx.approvals.decide((await approval_of(ctx, code)).id, False, by=ana, channel="web")
    error(await poll(client, agent, code), 400, "access_denied")
    error(await poll(client, agent, code), 400, "invalid_grant")
    assert "aauth.denied" in await events(ctx) and "aauth.issued" not in await events(ctx)


async def test_escalation_expired(client: httpx.AsyncClient, ctx: ServerContext, clock: FrozenClock, ana: str,
                                  agent: Creds) -> None:
    started = await pending(client, agent, scope="write")
    clock.advance(started["expires_in"])
    error(await poll(client, agent, started["request_code"]), 400, "expired_token")
    # Nor can the person approve it any more.
    with pytest.raises(Expired):
        await ctx.approvals.decide((await approval_of(ctx, started["request_code"])).id, True, by=ana, channel="web")


async def test_request_code_bound_to_its_client(client: httpx.AsyncClient, ctx: ServerContext,
                                                clock: FrozenClock, ana: str, agent: Creds) -> None:
    other = await agent_client(ctx)
    code = (await pending(client, agent, scope="write"))["request_code"]
    clock.advance(5)
    error(await poll(client, other, code), 400, "invalid_grant")
    error(await poll(client, agent, code), 400, "authorization_pending")
    await ctx.approvals.decide((await approval_of(ctx, code)).id, True, by=ana, channel="web")
    error(await poll(client, other, code), 400, "invalid_grant")
    assert (await poll(client, agent, code)).status_code == 200
    error(await poll(client, agent, "x" * 43), 400, "invalid_grant")


async def test_caller_id_not_the_persons_phone_escalates_even_the_pii_tier(
        client: httpx.AsyncClient, ctx: ServerContext, ana: str, agent: Creds) -> None:
    started = await pending(client, agent, scope="read", caller_id="+14155550777")
    approval = await approval_of(ctx, started["request_code"])
    assert approval.details["caller_id_mismatch"] is True and approval.details["elevated_scopes"] == []
    # The person's own number (or none at all) does not escalate.
    assert (await identify(client, agent, scope="read", caller_id=PHONE_ON_FILE)).status_code == 200
    assert (await identify(client, agent, scope="read")).status_code == 200


# -- who may use the grant -----------------------------------------------------------------------------------


async def test_client_not_registered_for_the_grant(client: httpx.AsyncClient, ctx: ServerContext,
                                                   ana: str) -> None:
    client_id, secret = await add_client(ctx.store, auth_method="client_secret_basic",
                                         grant_types=["client_credentials"], redirect_uris=[], response_types=[],
                                         **{wire.CLIENT_SCOPE_CEILING: "read"})
    assert secret is not None
    before = await dump(ctx)
    error(await identify(client, (client_id, secret)), 400, "unauthorized_client")
    assert await dump(ctx) == before


async def test_public_client_refused(client: httpx.AsyncClient, ctx: ServerContext, ana: str) -> None:
    client_id, _ = await add_client(ctx.store, auth_method="none", grant_types=[wire.GRANT_TYPE],
                                    redirect_uris=[], response_types=[], **{wire.CLIENT_SCOPE_CEILING: "read"})
    before = await dump(ctx)
    r = await client.post("/token", data={**form(), "client_id": client_id})
    error(r, 400, "unauthorized_client")
    assert await dump(ctx) == before
    reg = await client.post("/register", json={"grant_types": [wire.GRANT_TYPE], "token_endpoint_auth_method": "none",
                                               wire.CLIENT_SCOPE_CEILING: "read"})
    error(reg, 400, "invalid_client_metadata")


async def test_client_without_a_ceiling_refused(client: httpx.AsyncClient, ctx: ServerContext, ana: str) -> None:
    creds = await agent_client(ctx, **{wire.CLIENT_SCOPE_CEILING: None})
    error(await identify(client, creds), 400, "unauthorized_client")


async def test_registered_channels_only(client: httpx.AsyncClient, ctx: ServerContext, ana: str) -> None:
    creds = await agent_client(ctx, **{wire.CLIENT_CHANNELS: ["sms"]})
    error(await identify(client, creds, channel="pstn"), 400, "invalid_request")
    assert (await identify(client, creds, channel="sms")).status_code == 200


# -- the uniform failure, lock-out, rate limits --------------------------------------------------------------


async def test_uniform_failure_for_unknown_wrong_insufficient_ambiguous_and_locked(
        client: httpx.AsyncClient, ctx: ServerContext, clock: FrozenClock, ana: str, agent: Creds) -> None:
    twin = await add_user(ctx.store, "twin")  # shares the three attributes below with nobody else but...
    await ctx.identity.set_attributes(twin, {"given_name": "Maria", "family_name": "Silva", "birthdate": "1975-01-01"})
    twin2 = await add_user(ctx.store, "twin2")  # ...this one: the same three attributes -> ambiguous
    await ctx.identity.set_attributes(twin2, {"given_name": "Maria", "family_name": "Silva", "birthdate": "1975-01-01"})
    maria = {"given_name": "Maria", "family_name": "Silva", "birthdate": "1975-01-01"}
    maria_methods = dict.fromkeys(maria, "dtmf")

    responses = {
        "unknown": await identify(client, agent, user_claims={**CLAIMS, "given_name": "Nobody", "family_name": "Else",
                                                              "birthdate": "1999-09-09",
                                                              "address": {"postal_code": "H0H0H0"}}),
        "wrong": await identify(client, agent, user_claims={**CLAIMS, "birthdate": "1980-04-03"}),
        "insufficient": await identify(client, agent, capture_method="dtmf",
                                       user_claims={"given_name": "Anastasia", "birthdate": "1980-04-02"}),
        "ambiguous": await identify(client, agent, user_claims=maria, capture_method=maria_methods),
    }
    # Lock Ana out: the threshold of failures (the wrong one above counted already).
    for _ in range(ctx.settings.aauth_lockout_threshold - 1):
        error(await identify(client, agent, user_claims={**CLAIMS, "birthdate": "1980-04-03"}), 400, "invalid_grant")
    responses["locked"] = await identify(client, agent)  # the right details, but locked
    bodies = {name: r.content for name, r in responses.items()}
    assert len(set(bodies.values())) == 1, bodies
    assert json.loads(bodies["locked"]) == {"error": "invalid_grant", "error_description": wire.UNIFORM_FAILURE}
    # Date and the per-request ID differ on every response by design; they say nothing about the outcome.
    headers = {name: {k: v for k, v in r.headers.items() if k not in ("date", "x-request-id")}
               for name, r in responses.items()}
    assert all(h == headers["locked"] for h in headers.values()) and responses["locked"].status_code == 400
    outcomes = [e["detail"]["outcome"] for e in await ctx.store.audit_events(1000)
                if e["event"] == "aauth.identify_failed"]
    assert {"no_match", "insufficient", "ambiguous", "locked"} <= set(outcomes)


async def test_lockout_and_its_expiry(client: httpx.AsyncClient, ctx: ServerContext, clock: FrozenClock, ana: str,
                                      agent: Creds) -> None:
    assert (await identify(client, agent)).status_code == 200
    for _ in range(ctx.settings.aauth_lockout_threshold):
        error(await identify(client, agent, user_claims={**CLAIMS, "family_name": "Wrong"}), 400, "invalid_grant")
    clock.advance(60)  # past the per-minute rate limits, far from the end of the lock
    error(await identify(client, agent), 400, "invalid_grant")
    clock.advance(ctx.settings.aauth_lockout_seconds)
    assert (await identify(client, agent)).status_code == 200


@pytest.mark.parametrize("dimension", ["client", "ip", "caller_id", "conversation", "user"])
async def test_rate_limits(dimension: str, ctx: ServerContext, make_client: Callable[..., Any], settings: Settings,
                           ana: str, agent: Creds) -> None:
    _, http = await make_client(settings, **{f"aauth_rate_{dimension}": 2})
    other = await agent_client(ctx)

    def attempt(i: int) -> dict[str, Any]:
        """Vary every dimension but the one under test (a conversation is counted per client)."""
        return {
            "creds": agent if dimension in ("client", "conversation") else (agent, other)[i % 2],
            "caller_id": PHONE_ON_FILE if dimension == "caller_id" else None,
            "conversation_id": "same" if dimension == "conversation" else f"c-{i}",
        }

    for i in range(2):
        a = attempt(i)
        r = await identify(http, a["creds"], caller_id=a["caller_id"], conversation_id=a["conversation_id"])
        assert r.status_code == 200, (i, r.text)
    a = attempt(2)
    r = await identify(http, a["creds"], caller_id=a["caller_id"], conversation_id=a["conversation_id"])
    error(r, 429, "rate_limited")
    assert int(r.headers["retry-after"]) > 0


async def test_other_dimensions_do_not_limit(ctx: ServerContext, make_client: Callable[..., Any],
                                             settings: Settings, ana: str, agent: Creds) -> None:
    """Control for the test above: with only the conversation limited, fresh conversations are not."""
    _, http = await make_client(settings, aauth_rate_conversation=2)
    for i in range(4):
        assert (await identify(http, agent, conversation_id=f"c-{i}")).status_code == 200


# -- no PII anywhere -----------------------------------------------------------------------------------------


async def test_no_submitted_pii_in_logs_or_database(client: httpx.AsyncClient, ctx: ServerContext,
                                                    clock: FrozenClock, ana: str, agent: Creds,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    assert (await identify(client, agent, caller_id=PHONE_ON_FILE)).status_code == 200
    error(await identify(client, agent, user_claims={**CLAIMS, "birthdate": "1980-04-03"}), 400, "invalid_grant")
    started = await pending(client, agent, scope="read write", caller_id="+14155550777")
    await ctx.approvals.decide((await approval_of(ctx, started["request_code"])).id, True, by=ana, channel="web")
    assert (await poll(client, agent, started["request_code"])).status_code == 200
    error(await identify(client, agent, capture_method={**METHODS, "birthdate": "llm"}), 400, "invalid_request")
    error(await identify(client, agent, caller_id="+1415555O123"), 400, "invalid_request")

    database = await dump(ctx)
    assert "aauth.identify_failed" in database and "aauth.escalated" in database  # the dump is real
    logged = caplog.text + "\n".join(str(r.args) for r in caplog.records)
    assert "aauth" in logged  # and so is the log
    for value in [*PII_VALUES, "+1415555O123", "1980-04-03"]:
        assert value not in database, value
        assert value not in logged, value


# -- malformed requests: spec-shaped 4xx, nothing stored or counted ------------------------------------------


MALFORMED: list[tuple[str, dict[str, Any], str]] = [
    ("no user_claims", {wire.USER_CLAIMS: None}, "invalid_request"),
    ("user_claims not JSON", {wire.USER_CLAIMS: "{given_name: Ana"}, "invalid_request"),
    ("user_claims an array", {wire.USER_CLAIMS: '["Anastasia"]'}, "invalid_request"),
    ("user_claims empty", {wire.USER_CLAIMS: "{}"}, "invalid_request"),
    ("user_claims number value", {wire.USER_CLAIMS: {**CLAIMS, "birthdate": 1980}}, "invalid_request"),
    ("user_claims too long", {wire.USER_CLAIMS: {**CLAIMS, "given_name": "A" * 5000}}, "invalid_request"),
    ("no channel", {wire.CHANNEL: None}, "invalid_request"),
    ("unknown channel", {wire.CHANNEL: "email"}, "invalid_request"),
    ("caller_id not E.164", {wire.CALLER_ID: "415-555-0123"}, "invalid_request"),
    ("no capture_method", {wire.CAPTURE_METHOD: None}, "invalid_request"),
    ("free LLM text", {wire.CAPTURE_METHOD: "llm"}, "invalid_request"),
    ("a claim without method", {wire.CAPTURE_METHOD: {"given_name": "dtmf"}}, "invalid_request"),
    ("an unknown method", {wire.CAPTURE_METHOD: {**METHODS, "birthdate": "llm_transcript"}}, "invalid_request"),
    ("caller_id_lookup for a birthdate", {wire.CALLER_ID: PHONE_ON_FILE,
                                          wire.CAPTURE_METHOD: {**METHODS, "birthdate": "caller_id_lookup"}},
     "invalid_request"),
    ("caller_id_lookup without caller_id", {wire.USER_CLAIMS: {**CLAIMS, "phone_number": PHONE_ON_FILE},
                                            wire.CAPTURE_METHOD: {**METHODS, "phone_number": "caller_id_lookup"}},
     "invalid_request"),
    ("caller_id_lookup of another number", {wire.USER_CLAIMS: {**CLAIMS, "phone_number": PHONE_ON_FILE},
                                            wire.CALLER_ID: "+14155550777",
                                            wire.CAPTURE_METHOD: {**METHODS, "phone_number": "caller_id_lookup"}},
     "invalid_request"),
    ("no conversation_id", {wire.CONVERSATION_ID: None}, "invalid_request"),
    ("conversation_id with a space", {wire.CONVERSATION_ID: "conv 1"}, "invalid_request"),
    ("conversation_id too long", {wire.CONVERSATION_ID: "c" * 129}, "invalid_request"),
    ("reason with controls", {wire.REASON: "change\x07address"}, "invalid_request"),
    ("malformed scope", {wire.SCOPE: 'read "write'}, "invalid_scope"),
    ("bad resource", {wire.RESOURCE: "ftp://example.com/x"}, "invalid_target"),
    ("request_code with user_claims", {wire.REQUEST_CODE: "abc"}, "invalid_request"),
]


@pytest.mark.parametrize(("case", "overrides", "code"), MALFORMED, ids=[m[0] for m in MALFORMED])
async def test_malformed_request_changes_nothing(case: str, overrides: dict[str, Any], code: str,
                                                 client: httpx.AsyncClient, ctx: ServerContext, ana: str,
                                                 agent: Creds) -> None:
    before = await dump(ctx)
    r = await identify(client, agent, **overrides)
    body = error(r, 400, code)
    assert r.headers["content-type"] == "application/json" and set(body) <= {"error", "error_description"}
    assert await dump(ctx) == before
    # Nothing was counted against Ana either: the right details still work.
    assert (await identify(client, agent)).status_code == 200


async def test_poll_without_grant_registration_or_with_junk(client: httpx.AsyncClient, ctx: ServerContext,
                                                            ana: str, agent: Creds) -> None:
    error(await poll(client, agent, "nonsense"), 400, "invalid_grant")
    error(await poll(client, agent, "x" * 500), 400, "invalid_grant")


async def test_settings_validate_the_grant_block(settings: Settings) -> None:
    from authgate.config import ConfigError

    for bad in ({"aauth_token_ttl": 0}, {"aauth_escalation_ttl": 0}, {"aauth_interval": 0},
                {"aauth_escalation_ttl": 10, "aauth_interval": 10}, {"aauth_draft": ""}):
        with pytest.raises(ConfigError):
            replace(settings, **bad).validate()
