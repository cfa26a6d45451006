"""RFC 8693 token exchange at the token endpoint: who may exchange what, for which audience, with what scope,
lifetime and ``act`` chain; the exchanged token checked by the resource-side verifier."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from authgate.clock import FrozenClock
from authgate.config import ConfigError, Settings
from authgate.context import ServerContext
from authgate.oauth.metadata import TOKEN_EXCHANGE_GRANT_TYPE
from authgate.oauth.tokens import Grant, issue_tokens, new_grant_id
from authgate.resource import JWTVerifier, TokenRejected
from tests.conftest import ISSUER
from tests.helpers import REDIRECT, add_client, authorize_params, pkce_pair, redirect_params

GRANT = TOKEN_EXCHANGE_GRANT_TYPE
ACCESS = "urn:ietf:params:oauth:token-type:access_token"
JWT_TYPE = "urn:ietf:params:oauth:token-type:jwt"
R1 = "http://127.0.0.1:9100/api"  # the agent's own API (the user's token is for it)
R2 = "http://127.0.0.1:9200/b"    # service B, reached by agent A
R3 = "http://127.0.0.1:9300/c"    # service C, reached by service B
CONFIDENTIAL = ["authorization_code", "refresh_token", "client_credentials", GRANT]


@dataclass
class Party:
    client_id: str
    secret: str

    @property
    def auth(self) -> tuple[str, str]:
        return self.client_id, self.secret


@dataclass
class World:
    ctx: ServerContext
    http: httpx.AsyncClient
    a: Party  # the agent the user authorised
    b: Party  # service B's resource server, listed as the actor for R2
    c: Party  # service C's resource server, listed as the actor for R3


async def _party(ctx: ServerContext, scope: str = "read write offline_access",
                 grant_types: list[str] | None = None) -> Party:
    client_id, secret = await add_client(ctx.store, auth_method="client_secret_basic", scope=scope,
                                         grant_types=grant_types or CONFIDENTIAL)
    assert secret is not None
    return Party(client_id, secret)


@pytest.fixture
async def world(settings: Settings, ctx: ServerContext, make_client: Callable[..., Any]) -> World:
    a, b, c = await _party(ctx), await _party(ctx), await _party(ctx, scope="read")
    new_ctx, http = await make_client(settings, auto_approve=True, resources=(R1, R2, R3),
                                      token_exchange_actors={R2: [b.client_id], R3: [c.client_id]})
    return World(new_ctx, http, a, b, c)


async def user_token(w: World, party: Party | None = None, scope: str = "read write",
                     resource: str = R1) -> dict[str, Any]:
    """A user's token for ``resource``, through the authorization code flow (auto-approved as dev-user)."""
    party = party or w.a
    verifier, challenge = pkce_pair()
    q = redirect_params(await w.http.get("/authorize", params=authorize_params(
        party.client_id, challenge, scope=f"{scope} offline_access", resource=resource)))
    r = await w.http.post("/token", auth=party.auth, data={
        "grant_type": "authorization_code", "code": q["code"], "redirect_uri": REDIRECT, "code_verifier": verifier,
        "resource": resource})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def exchange(w: World, party: Party | None, subject_token: str, /, **params: str) -> httpx.Response:
    form = {"grant_type": GRANT, "subject_token": subject_token, "subject_token_type": ACCESS, **params}
    form = {k: v for k, v in form.items() if v != "-"}  # "-" drops a parameter
    if party is None:
        return await w.http.post("/token", data=form)
    return await w.http.post("/token", data=form, auth=party.auth)


async def exchanged(w: World, party: Party, subject_token: str, **params: str) -> dict[str, Any]:
    r = await exchange(w, party, subject_token, **params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def claims(w: World, token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, await w.ctx.keys.key_set(None), algorithms=["ES256"]).claims)


def refused(r: httpx.Response, error: str, status: int = 400) -> str:
    assert (r.status_code, r.json()["error"]) == (status, error), r.text
    assert r.headers["cache-control"] == "no-store"
    description: str = r.json().get("error_description", "")
    return description


def verifier(w: World, audience: str, clock: FrozenClock) -> JWTVerifier:
    return JWTVerifier(ISSUER, audience, jwks_uri=ISSUER + "/jwks.json", http_client=w.http, clock=clock)


async def mint(w: World, party: Party, *, scope: tuple[str, ...] = ("read", "write"), audience: str = R1,
               ttl: int | None = None, **extra: Any) -> str:
    """Our access token with claims the grants here never set (``may_act``, a long ``act``)."""
    client = await w.ctx.clients.get(party.client_id)
    assert client is not None
    grant = Grant(party.client_id, "dev-user", scope, audience, new_grant_id())
    body = await issue_tokens(w.ctx, client, grant, refresh=False, extra_claims=extra or None, ttl=ttl)
    token: str = body["access_token"]
    return token


# --- discovery and registration ---------------------------------------------------------------------------


async def test_metadata_lists_the_grant_and_dcr_is_confidential_only(world: World) -> None:
    doc = (await world.http.get("/.well-known/oauth-authorization-server")).json()
    assert GRANT in doc["grant_types_supported"]
    ok = await world.http.post("/register", json={"client_name": "gateway", "grant_types": [GRANT]})
    assert ok.status_code == 201, ok.text
    assert ok.json()["grant_types"] == [GRANT] and ok.json()["client_secret"]
    public = await world.http.post("/register", json={"grant_types": [GRANT], "token_endpoint_auth_method": "none"})
    assert public.status_code == 400 and public.json()["error"] == "invalid_client_metadata"


# --- the happy path: narrower, audience-bound, act, expiry ---------------------------------------------------


async def test_narrower_scope_for_a_downstream_audience(world: World, clock: FrozenClock) -> None:
    subject = await user_token(world)
    body = await exchanged(world, world.a, subject["access_token"], resource=R2, scope="read")
    assert body["issued_token_type"] == ACCESS and body["token_type"] == "Bearer"
    assert body["scope"] == "read" and "refresh_token" not in body
    c = await claims(world, body["access_token"])
    s = await claims(world, subject["access_token"])
    assert c["sub"] == s["sub"] == "dev-user"
    assert c["aud"] == R2 and c["client_id"] == world.a.client_id and c["scope"] == "read"
    assert c["act"] == {"sub": world.a.client_id}
    assert c["exp"] <= s["exp"] and c["jti"] != s["jti"]
    # The downstream resource's own verifier (authgate.resource) accepts it.
    v = verifier(world, R2, clock)
    accepted = await v.verify(body["access_token"])
    assert accepted.subject == "dev-user" and accepted.scopes == {"read"}
    assert accepted.claims["act"] == {"sub": world.a.client_id}


async def test_scope_omitted_keeps_what_the_subject_has(world: World) -> None:
    subject = await user_token(world)
    body = await exchanged(world, world.a, subject["access_token"], audience=R2)  # audience alone is a target too
    assert body["scope"] == "read write"
    assert (await claims(world, body["access_token"]))["aud"] == R2


async def test_wider_scope_refused(world: World) -> None:
    subject = await user_token(world, scope="read")
    for scope in ("read write", "admin", "offline_access", "read unknown:scope"):
        assert "exceeds" in refused(await exchange(world, world.a, subject["access_token"], resource=R2,
                                                   scope=scope), "invalid_scope")
    refused(await exchange(world, world.a, subject["access_token"], resource=R2, scope='bad"scope'),
            "invalid_scope")


async def test_scope_limited_to_what_the_exchanging_client_may_hold(world: World) -> None:
    # C registered only "read": it may not get "write" even though the subject token carries it.
    t1 = await exchanged(world, world.a, (await user_token(world))["access_token"], resource=R3)
    assert "not allowed" in refused(await exchange(world, world.c, t1["access_token"], resource=R3, scope="write"),
                                    "invalid_scope")
    assert (await exchanged(world, world.c, t1["access_token"], resource=R3))["scope"] == "read"


async def test_act_chain_across_two_hops(world: World, clock: FrozenClock) -> None:
    """User -> agent A -> service B -> service C: the token C receives names B as actor, then A."""
    t0 = (await user_token(world))["access_token"]
    t1 = await exchanged(world, world.a, t0, resource=R2, scope="read write")
    # B received t1 at R2 (it is R2's listed actor) and calls C on the user's behalf.
    t2 = await exchanged(world, world.b, t1["access_token"], resource=R3, scope="read")
    c2 = await claims(world, t2["access_token"])
    assert c2["act"] == {"sub": world.b.client_id, "act": {"sub": world.a.client_id}}
    assert c2["sub"] == "dev-user" and c2["client_id"] == world.b.client_id and c2["aud"] == R3
    accepted = await verifier(world, R3, clock).verify(t2["access_token"])
    assert accepted.claims["act"]["act"]["sub"] == world.a.client_id
    # Introspection reports the chain too.
    info = (await world.http.post("/introspect", data={"token": t2["access_token"]}, auth=world.c.auth)).json()
    assert info["active"] is True and info["act"] == c2["act"]
    # B could not have used the user's original token: it was neither issued to B nor for B's resource.
    refused(await exchange(world, world.b, t0, resource=R3), "invalid_request")


async def test_audience_bound(world: World, clock: FrozenClock) -> None:
    t1 = await exchanged(world, world.a, (await user_token(world))["access_token"], resource=R2)
    with pytest.raises(TokenRejected) as info:
        await verifier(world, R1, clock).verify(t1["access_token"])
    assert info.value.reason == "wrong_audience"
    with pytest.raises(TokenRejected):
        await verifier(world, R3, clock).verify(t1["access_token"])
    assert (await verifier(world, R2, clock).verify(t1["access_token"])).audience == R2


async def test_lifetime_capped_by_setting_and_subject(world: World, clock: FrozenClock) -> None:
    subject = await user_token(world)  # 600 s
    s = await claims(world, subject["access_token"])
    body = await exchanged(world, world.a, subject["access_token"], resource=R2)
    c = await claims(world, body["access_token"])
    assert body["expires_in"] == 300 and c["exp"] - c["iat"] == 300  # token_exchange_ttl
    clock.advance(500)  # the subject has 100 s left
    body = await exchanged(world, world.a, subject["access_token"], resource=R2)
    assert body["expires_in"] == 100 and (await claims(world, body["access_token"]))["exp"] == s["exp"]


# --- refusals: the subject token -------------------------------------------------------------------------------


async def test_expired_subject_refused(world: World, clock: FrozenClock) -> None:
    subject = await user_token(world)
    clock.advance(601)
    assert "not a valid access token" in refused(await exchange(world, world.a, subject["access_token"],
                                                                resource=R2), "invalid_request")


async def test_revoked_subject_refused_and_grant_revocation_reaches_exchanged_tokens(world: World) -> None:
    subject = await user_token(world)
    t1 = await exchanged(world, world.a, subject["access_token"], resource=R2)
    assert (await world.http.post("/revoke", data={"token": subject["access_token"]}, auth=world.a.auth)
            ).status_code == 200
    assert "revoked" in refused(await exchange(world, world.a, subject["access_token"], resource=R2),
                                "invalid_request")
    # Revoking the user's grant (its refresh token) also ends tokens exchanged from it, at every hop.
    t2 = await exchanged(world, world.b, t1["access_token"], resource=R3)
    await world.http.post("/revoke", data={"token": subject["refresh_token"]}, auth=world.a.auth)
    for token in (t1["access_token"], t2["access_token"]):
        info = await world.http.post("/introspect", data={"token": token}, auth=world.b.auth)
        assert info.json() == {"active": False}
    refused(await exchange(world, world.b, t1["access_token"], resource=R3), "invalid_request")


async def test_foreign_and_malformed_subject_tokens_refused(world: World) -> None:
    genuine = await claims(world, (await user_token(world))["access_token"])
    header = {"typ": "at+jwt", "alg": "ES256", "kid": (await world.ctx.keys.key_set(None)).keys[0].kid}
    forged = jwt.encode(header, genuine, ECKey.generate_key("P-256"))  # same claims, another key
    other_issuer = {**genuine, "iss": "http://127.0.0.1:9999"}
    for token in (forged, "not-a-token", "a.b.c", secrets.token_urlsafe(40)):
        refused(await exchange(world, world.a, token, resource=R2), "invalid_request")
    # Our key but another issuer, and a token without our jti record, are not ours either.
    signed = await world.ctx.keys.sign(other_issuer)
    refused(await exchange(world, world.a, signed, resource=R2), "invalid_request")
    unrecorded = await world.ctx.keys.sign({**genuine, "jti": "never-issued"})
    assert "revoked" in refused(await exchange(world, world.a, unrecorded, resource=R2), "invalid_request")


async def test_someone_elses_token_refused(world: World) -> None:
    """A client that neither received the token as its resource nor was issued it cannot exchange it."""
    t0 = (await user_token(world))["access_token"]
    outsider = await _party(world.ctx)
    assert "neither issued" in refused(await exchange(world, outsider, t0, resource=R2), "invalid_request")
    # C is listed for R3 only; a token for R2 is not C's to exchange.
    t1 = await exchanged(world, world.a, t0, resource=R2)
    refused(await exchange(world, world.c, t1["access_token"], resource=R3), "invalid_request")


async def test_may_act_enforced(world: World) -> None:
    allowed = await mint(world, world.a, may_act={"sub": world.a.client_id})
    assert (await exchange(world, world.a, allowed, resource=R2)).status_code == 200
    for may_act in ({"sub": world.b.client_id}, {"sub": world.a.client_id, "iss": "http://127.0.0.1:9999"}):
        token = await mint(world, world.a, may_act=may_act)
        assert "may_act" in refused(await exchange(world, world.a, token, resource=R2), "invalid_request")
    # B is R2's actor but the token's may_act names A only.
    for_b = await mint(world, world.a, audience=R2, may_act={"sub": world.a.client_id})
    refused(await exchange(world, world.b, for_b, resource=R3), "invalid_request")
    for bad in ("someone", {"iss": ISSUER}, [world.a.client_id]):
        token = await mint(world, world.a, may_act=bad)
        assert "malformed may_act" in refused(await exchange(world, world.a, token, resource=R2), "invalid_request")


async def test_chain_length_capped(world: World, make_client: Callable[..., Any], settings: Settings) -> None:
    _, http = await make_client(settings, resources=(R1, R2, R3), token_exchange_max_chain=2,
                                token_exchange_actors={R2: [world.b.client_id], R3: [world.c.client_id]})
    short = World(world.ctx, http, world.a, world.b, world.c)
    t1 = await exchanged(short, world.a, await mint(short, world.a), resource=R2)
    t2 = await exchanged(short, world.b, t1["access_token"], resource=R3)  # two actors: at the cap
    assert "chain too long" in refused(await exchange(short, world.c, t2["access_token"], resource=R3),
                                       "invalid_request")
    malformed = await mint(short, world.a, act={"client": "x"})
    assert "malformed act" in refused(await exchange(short, world.a, malformed, resource=R2), "invalid_request")
    # A deep chain from elsewhere is refused without walking all of it.
    deep: dict[str, Any] = {"sub": "x0"}
    for i in range(1, 200):
        deep = {"sub": f"x{i}", "act": deep}
    refused(await exchange(short, world.a, await mint(short, world.a, act=deep), resource=R2), "invalid_request")


# --- refusals: the client, the target, the request ---------------------------------------------------------


async def test_unauthenticated_or_public_client_refused(world: World) -> None:
    t0 = (await user_token(world))["access_token"]
    r = await exchange(world, None, t0, resource=R2, client_id=world.a.client_id)
    refused(r, "invalid_client", 401)
    r = await world.http.post("/token", auth=(world.a.client_id, "wrong"), data={
        "grant_type": GRANT, "subject_token": t0, "subject_token_type": ACCESS, "resource": R2})
    refused(r, "invalid_client", 401)
    # A public client stored with the grant (DCR would refuse it) is still refused at the token endpoint.
    public_id, _ = await add_client(world.ctx.store, auth_method="none", grant_types=[GRANT], redirect_uris=[])
    r = await world.http.post("/token", data={"grant_type": GRANT, "subject_token": t0, "subject_token_type": ACCESS,
                                              "resource": R2, "client_id": public_id})
    assert "confidential" in refused(r, "unauthorized_client")
    # A confidential client that did not register the grant type.
    plain = await _party(world.ctx, grant_types=["client_credentials"])
    refused(await exchange(world, plain, t0, resource=R2), "unauthorized_client")


async def test_target_must_be_an_allowed_resource(world: World) -> None:
    t0 = (await user_token(world))["access_token"]
    refused(await exchange(world, world.a, t0, resource="http://127.0.0.1:9999/elsewhere"), "invalid_target")
    refused(await exchange(world, world.a, t0, audience="https://evil.example/api"), "invalid_target")
    refused(await exchange(world, world.a, t0, audience="not a uri"), "invalid_target")
    assert "same resource" in refused(await exchange(world, world.a, t0, resource=R2, audience=R3), "invalid_target")
    assert (await exchange(world, world.a, t0, resource=R2, audience=R2 + "/")).status_code == 200
    assert "required" in refused(await exchange(world, world.a, t0), "invalid_request")


async def test_malformed_requests(world: World) -> None:
    t0 = (await user_token(world))["access_token"]
    cases: list[tuple[dict[str, str], str]] = [
        ({"subject_token": "-"}, "subject_token is required"),
        ({"subject_token_type": "-"}, "subject_token_type is required"),
        ({"subject_token_type": "urn:ietf:params:oauth:token-type:id_token"}, "subject_token_type must"),
        ({"subject_token": "x" * 8193}, "too large"),
        ({"requested_token_type": "urn:ietf:params:oauth:token-type:refresh_token"}, "requested_token_type"),
        ({"requested_token_type": JWT_TYPE}, "requested_token_type"),
        ({"actor_token_type": ACCESS}, "without actor_token"),
        ({"actor_token": t0}, "actor_token_type is required"),
        ({"actor_token": t0, "actor_token_type": "urn:x"}, "actor_token_type must"),
    ]
    for params, message in cases:
        assert message in refused(await exchange(world, world.a, t0, resource=R2, **params), "invalid_request")
    repeated = await world.http.post("/token", auth=world.a.auth, content=(
        f"grant_type={GRANT}&subject_token={t0}&subject_token_type={ACCESS}&resource={R2}&resource={R3}"),
        headers={"content-type": "application/x-www-form-urlencoded"})
    refused(repeated, "invalid_request")
    # The token type "jwt" names our tokens too, and asking for an access token explicitly is fine.
    ok = await exchange(world, world.a, t0, resource=R2, subject_token_type=JWT_TYPE, requested_token_type=ACCESS)
    assert ok.status_code == 200, ok.text


async def test_actor_token_must_be_the_clients_own(world: World) -> None:
    t0 = (await user_token(world))["access_token"]
    own = await world.http.post("/token", auth=world.a.auth, data={"grant_type": "client_credentials",
                                                                    "resource": R1})
    assert own.status_code == 200, own.text
    ok = await exchange(world, world.a, t0, resource=R2, actor_token=own.json()["access_token"],
                        actor_token_type=ACCESS)
    assert ok.status_code == 200, ok.text
    assert (await claims(world, ok.json()["access_token"]))["act"] == {"sub": world.a.client_id}
    # B's own token, or the user's token, do not identify A.
    theirs = await world.http.post("/token", auth=world.b.auth, data={"grant_type": "client_credentials",
                                                                       "resource": R1})
    for actor in (theirs.json()["access_token"], t0, "junk"):
        refused(await exchange(world, world.a, t0, resource=R2, actor_token=actor, actor_token_type=ACCESS),
                "invalid_request")


# --- audit ------------------------------------------------------------------------------------------------------


async def test_grants_and_denials_are_audited_without_tokens(world: World) -> None:
    t0 = (await user_token(world))["access_token"]
    t1 = await exchanged(world, world.a, t0, resource=R2)
    t2 = await exchanged(world, world.b, t1["access_token"], resource=R3)
    await exchange(world, world.a, t0, resource=R2, scope="admin")
    events = await world.ctx.store.audit_events(limit=50)
    granted = [e for e in events if e["event"] == "token.exchanged"]
    assert granted[0]["client_id"] == world.b.client_id and granted[0]["subject"] == "dev-user"
    assert granted[0]["detail"]["actors"] == [world.b.client_id, world.a.client_id]
    assert granted[0]["detail"]["aud"] == R3 and granted[0]["detail"]["subject_client_id"] == world.a.client_id
    denied = [e for e in events if e["event"] == "token.denied"]
    assert denied[0]["detail"]["grant_type"] == GRANT and denied[0]["detail"]["error"] == "invalid_scope"
    text = repr(events)
    for token in (t0, t1["access_token"], t2["access_token"]):
        assert token not in text and token.split(".")[2] not in text


def test_settings_validation(settings: Settings) -> None:
    from dataclasses import replace

    bad: dict[str, Any]
    for bad in ({"token_exchange_ttl": 0}, {"token_exchange_ttl": 3601}, {"token_exchange_max_chain": 0},
                {"token_exchange_max_chain": 17}, {"token_exchange_actors": {"not-a-uri": ["x"]}},
                {"token_exchange_actors": {R2: []}}, {"token_exchange_actors": {R2: "x"}},
                {"token_exchange_actors": {R2: [""]}}):
        with pytest.raises(ConfigError, match="token_exchange"):
            replace(settings, **bad).validate()
    assert replace(settings, token_exchange_actors={R2: ["gw"]}).validate().token_exchange_actors == {R2: ["gw"]}


# --- the agent SDK helper (authgate.agent.exchange) ------------------------------------------------------------


async def test_sdk_exchanges_and_reuses_fresh_tokens(world: World, clock: FrozenClock) -> None:
    from authgate.agent.errors import TokenError
    from authgate.agent.exchange import TokenExchanger
    from authgate.agent.store import ClientRegistration

    t0 = (await user_token(world))["access_token"]
    registration = ClientRegistration(world.a.client_id, world.a.secret, "client_secret_basic")
    exchanger = TokenExchanger(world.http, ISSUER + "/token", registration, now=clock.now, max_entries=2)
    first = await exchanger.token_for(t0, resource=R2, scope="read")
    assert first.issued_token_type == ACCESS and first.token_type == "Bearer" and first.scope == "read"
    assert first.expires_at == clock.now() + 300 and first.access_token not in repr(first)
    assert (await verifier(world, R2, clock).verify(first.access_token)).claims["act"] == {"sub": world.a.client_id}
    assert await exchanger.token_for(t0, resource=R2, scope="read") is first  # cached, no second exchange
    other = await exchanger.token_for(t0, resource=R3, scope="read")
    assert other is not first and (await claims(world, other.access_token))["aud"] == R3
    clock.advance(295)  # within the renewal margin: exchanged again
    renewed = await exchanger.token_for(t0, resource=R2, scope="read")
    assert renewed is not first and renewed.access_token != first.access_token
    exchanged_events = [e for e in await world.ctx.store.audit_events() if e["event"] == "token.exchanged"]
    assert len(exchanged_events) == 3
    with pytest.raises(TokenError) as info:
        await exchanger.token_for(t0, resource=R2, scope="admin")
    assert info.value.error == "invalid_scope" and info.value.status_code == 400
    assert t0 not in str(info.value)


def test_sdk_response_parsing_and_request_shape() -> None:
    from authgate.agent.errors import TokenError
    from authgate.agent.exchange import exchange_request, parse_exchange_response
    from authgate.agent.store import ClientRegistration

    ok = {"access_token": "at", "issued_token_type": ACCESS, "token_type": "Bearer", "expires_in": 60}
    token = parse_exchange_response(httpx.Response(200, json=ok), now=1000.0)
    assert (token.expires_at, token.scope) == (1060.0, None)
    for missing in ("access_token", "issued_token_type", "token_type"):
        with pytest.raises(TokenError, match=missing):
            parse_exchange_response(httpx.Response(200, json={k: v for k, v in ok.items() if k != missing}), now=0)
    with pytest.raises(TokenError):
        parse_exchange_response(httpx.Response(200, content=b"[]"), now=0)
    registration = ClientRegistration("gw", "s", "client_secret_post")
    request = exchange_request("https://as.example/token", registration, "tok", audience=R2)
    form = dict(httpx.QueryParams(request.content.decode()))
    assert form == {"grant_type": GRANT, "subject_token": "tok", "subject_token_type": ACCESS,
                    "requested_token_type": ACCESS, "audience": R2, "client_id": "gw", "client_secret": "s"}
    with pytest.raises(TokenError):
        exchange_request("https://as.example/token", registration, "tok", actor_token="a")
    with pytest.raises(TokenError):
        exchange_request("https://as.example/token", registration, "")


def test_sdk_helper_needs_only_httpx() -> None:
    import subprocess
    import sys

    code = ("import sys\n"
            "for name in ['starlette', 'sqlalchemy', 'joserfc', 'cryptography', 'jinja2', 'pydantic']:\n"
            "    sys.modules[name] = None\n"
            "from authgate.agent.exchange import TokenExchanger\n"
            "assert not [m for m in sys.modules if m.startswith('authgate.') and not m.startswith('authgate.agent')]\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


async def test_hostile_values_never_500(world: World) -> None:
    t0 = (await user_token(world))["access_token"]
    head, body, sig = t0.split(".")
    junk = ["é.é.é", "..", ".", "a.b.c", "eyJ9.e30.x", "W10.e30.x", f"{head}.{body}.", f"{head}..{sig}",
            f"{head}.{body}.{sig}x", f"{head}.e30.{sig}", "\x00", "%00", " " * 50, "a" * 8192, t0 + " "]
    for value in junk:
        for name in ("subject_token", "actor_token", "resource", "audience", "scope", "requested_token_type",
                     "subject_token_type"):
            params = {name: value}
            if name == "actor_token":
                params["actor_token_type"] = ACCESS
            r = await exchange(world, world.a, t0, resource=R2, **params) if name != "resource" else \
                await exchange(world, world.a, t0, **params)
            if name == "scope" and not value.strip():
                assert r.status_code == 200  # an empty scope list is an omitted scope (RFC 6749 §3.3)
                continue
            assert 400 <= r.status_code < 500, (name, value[:20], r.status_code, r.text[:200])
            assert r.json()["error"] in ("invalid_request", "invalid_scope", "invalid_target"), r.text
