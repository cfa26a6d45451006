"""Risk set by the resource owner (authgate profile ``scope_risk``): declared on the resource, published in its
metadata, carried in the signed resource token; the person server takes the higher of it and its own
``agentauth_scope_risk``, so a resource can make a scope ask every time but never lower the operator's level,
and the audited decision says where each level came from. Only the signed claim counts: a forged or unsigned
resource token is refused as before."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest
from aauth.agent.token_exchange import extract_resource_token
from joserfc.jwk import OKPKey
from starlette.applications import Starlette
from starlette.routing import Route

import aauth
from authgate.agent.agentauth import AgentAuth, AgentKey
from authgate.agentauth import consent, wire
from authgate.agentauth.discovery import httpx_fetcher
from authgate.agentauth.replay import MemoryReplayCache
from authgate.agentauth.resource import AgentAuthResource, require
from authgate.agentauth.tokens import Signer, check_scope_risk, parse_scope_risk
from authgate.app import build_context, create_app
from authgate.clock import FrozenClock
from authgate.config import Settings
from authgate.net import Fetcher
from authgate.policy.model import PolicyError
from authgate.store import Store
from tests.agentauth.test_person_server import post_ps
from tests.helpers import add_user
from tests.interop.test_aauth_protocol import (
    ADMIN_KEY,
    PS,
    RES,
    HostRouter,
    World,
    exchange,
    notes,
    person_token,
    signed_get,
)

RULES = [require("/notes", "auth", "notes:read", methods=["GET"]),
         require("/notes", "auth", "notes:read", "notes:write", methods=["POST"]),
         require("/me", "auth", "notes:share")]  # notes:share: not listed at the person server (default high)


@dataclass
class RiskWorld:
    w: World
    resource: AgentAuthResource
    resource_key: OKPKey


async def make_risk_world(settings: Settings, store: Store, clock: FrozenClock, scope_risk: dict[str, str]
                          ) -> RiskWorld:
    """Like the interop world (our person server at PS, a notes API at RES; the operator says notes:read low,
    notes:write high), with the resource owner's ``scope_risk`` on the resource."""
    s = replace(settings, issuer=PS, agentauth_enabled=True, agentauth_admin_key=ADMIN_KEY, agentauth_poll_interval=0,
                agentauth_scope_risk={"notes:read": "low", "notes:write": "high"}).validate()
    apps: dict[str, Any] = {}
    router = HostRouter(apps)
    ctx = await build_context(s, clock, store, fetcher=Fetcher(transport=router))
    apps["authgate.test"] = create_app(ctx)
    resource_key = OKPKey.generate_key("Ed25519", parameters={"alg": "Ed25519"}, private=True)
    http = httpx.AsyncClient(transport=router)
    api = Starlette(routes=[Route("/notes", notes, methods=["GET", "POST"]), Route("/me", notes)])
    resource = AgentAuthResource(
        api, resource_id=RES, signer=Signer(kid="res-1", key=resource_key), fetch_json=httpx_fetcher(http),
        trusted_person_servers=[PS], replay=MemoryReplayCache(clock), clock=clock.now,
        scope_descriptions={"notes:read": "Read notes", "notes:write": "Write notes"}, scope_risk=scope_risk,
        rules=RULES)
    apps["api.test"] = resource
    router.transports = {h: httpx.ASGITransport(app=a, client=("127.0.0.1", 50000)) for h, a in apps.items()}
    owner = await add_user(store, "alice")
    key, _ = aauth.generate_ed25519_keypair()
    jwk = aauth.public_key_to_jwk(key.public_key())
    r = await http.post(PS + "/agentauth/agents", json={"name": "notes-bot", "jwk": jwk, "owner": "alice"},
                        headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert r.status_code == 201, r.text
    jwks: dict[tuple[str, str], dict[str, Any]] = {}
    for iss, dwk in [(PS, "aauth-agent.json"), (PS, "aauth-person.json"), (RES, "aauth-resource.json")]:
        meta = (await http.get(f"{iss}/.well-known/{dwk}")).json()
        jwks[(iss, dwk)] = (await http.get(meta["jwks_uri"])).json()
    world = World(http, ctx, owner, key, r.json()["agent_token"], r.json()["agent_id"], jwks)
    return RiskWorld(world, resource, resource_key)


@pytest.fixture
async def raised(settings: Settings, store: Store, clock: FrozenClock) -> AsyncIterator[RiskWorld]:
    """The resource owner says notes:read (low at the person server) is high-risk."""
    rw = await make_risk_world(settings, store, clock, {"notes:read": "high"})
    yield rw
    await rw.w.http.aclose()


@pytest.fixture
async def lowered(settings: Settings, store: Store, clock: FrozenClock) -> AsyncIterator[RiskWorld]:
    """The resource owner says everything is low-risk, notes:write (high at the person server) included."""
    rw = await make_risk_world(settings, store, clock, {"notes:read": "low", "notes:write": "low",
                                                        "notes:share": "low"})
    yield rw
    await rw.w.http.aclose()


def sdk(w: World, asked: list[dict[str, Any]]) -> AgentAuth:
    """Our agent SDK; every interaction is the person approving, and what they were shown is kept."""
    async def on_interaction(url: str, code: str) -> None:
        page = await w.http.get(url)
        approval = await w.ctx.approvals.get(page.headers["location"].rsplit("/", 1)[1])
        assert approval is not None
        asked.append(approval.details)
        await w.ctx.approvals.decide(approval.id, True, by=w.owner, channel="web")

    return AgentAuth(AgentKey(w.key), w.agent_token, http=w.http, on_interaction=on_interaction, timeout=10)


def claims_of(token: str) -> dict[str, Any]:
    return dict(aauth.tokens.common.parse_jwt(token)[1])


async def events(w: World, name: str) -> list[dict[str, Any]]:
    return [e["detail"] for e in await w.ctx.store.audit_events(200) if e["event"] == name]


async def challenge_for(w: World, presented: str, url: str = RES + "/notes") -> str:
    rt = extract_resource_token((await signed_get(w, url, presented)).headers)
    assert rt
    return rt


# -- the resource raises ---------------------------------------------------------------------------------------


async def test_a_scope_the_resource_declares_high_asks_every_time(raised: RiskWorld) -> None:
    w = raised.w
    asked: list[dict[str, Any]] = []
    auth = sdk(w, asked)
    for _ in range(3):
        r = await w.http.get(RES + "/notes", auth=auth)
        assert r.status_code == 200, r.text
        auth._state.auth.clear()  # the next call needs a new auth token, as after expiry
    # the person server alone would have asked once (notes:read is low there) and then used remembered consent
    assert len(asked) == 3
    assert all(a["why_asked"] == "high_risk" and a["high_risk_set_by_resource"] == ["notes:read"] for a in asked)
    assert await w.ctx.store.agentauth.remembered_scopes(w.owner, w.agent_id, RES) == set()
    decisions = await events(w, "agentauth.consent_asked")
    assert len(decisions) == 3
    assert all(d["risk_source"] == {"notes:read": "resource"} and d["resource_risk"] == {"notes:read": "high"}
               and d["high_risk"] == ["notes:read"] for d in decisions)


async def test_raising_a_scope_overrides_earlier_remembered_consent(raised: RiskWorld) -> None:
    """Approved (and remembered) while the resource said nothing; once its owner declares the scope high, the
    remembered consent no longer suffices."""
    w = raised.w
    raised.resource.scope_risk = {}
    presented = await person_token(w)
    await exchange(w, await challenge_for(w, presented), presented)  # the aauth peer: asked once, remembered
    assert await w.ctx.store.agentauth.remembered_scopes(w.owner, w.agent_id, RES) == {"notes:read"}
    await exchange(w, await challenge_for(w, presented), presented, decide=None)  # remembered: nobody asked
    assert len(await w.ctx.store.list_approvals(subject=w.owner, status="approved")) == 1
    granted = await events(w, "agentauth.consent_granted")
    assert granted[0]["reason"] == "remembered_low_risk"
    assert granted[0]["risk_source"] == {"notes:read": "person_server"}
    assert "resource_risk" not in granted[0]
    assert granted[1]["reason"] == "approved" and granted[1]["risk_source"] == {"notes:read": "person_server"}

    raised.resource.scope_risk = check_scope_risk({"notes:read": "high"})
    rt = await challenge_for(w, presented)
    assert claims_of(rt)["scope_risk"] == {"notes:read": "high"}
    with pytest.raises(aauth.errors.TokenError):
        await exchange(w, rt, presented, decide=None)  # asked this time; nobody answers within max_polls
    await exchange(w, await challenge_for(w, presented), presented, decide=True)  # the peer ignores the claim
    assert len(await w.ctx.store.list_approvals(subject=w.owner, status="approved")) == 2
    asked = await events(w, "agentauth.consent_asked")
    assert asked[0]["reason"] == "high_risk" and asked[0]["risk_source"] == {"notes:read": "resource"}


# -- the resource cannot lower ---------------------------------------------------------------------------------


async def test_a_resource_declaring_low_cannot_lower_a_person_server_high_scope(lowered: RiskWorld) -> None:
    w = lowered.w
    asked: list[dict[str, Any]] = []
    auth = sdk(w, asked)
    for i in range(2):
        r = await w.http.post(RES + "/notes", json={"attempt": i}, auth=auth)
        assert r.status_code == 200, r.text
        auth._state.auth.clear()
    assert len(asked) == 2  # notes:write is high at the person server: asked every time
    assert all(a["high_risk_scopes"] == ["notes:write"] and "high_risk_set_by_resource" not in a for a in asked)
    # notes:read is low for both: remembered; notes:write never is
    assert await w.ctx.store.agentauth.remembered_scopes(w.owner, w.agent_id, RES) == {"notes:read"}
    for d in await events(w, "agentauth.consent_asked"):
        assert d["risk_source"] == {"notes:read": "person_server", "notes:write": "person_server"}
        assert d["resource_risk"] == {"notes:read": "low", "notes:write": "low"}


async def test_a_resource_declaring_low_cannot_lower_the_default(lowered: RiskWorld) -> None:
    w = lowered.w
    asked: list[dict[str, Any]] = []
    auth = sdk(w, asked)
    for _ in range(2):
        assert (await w.http.get(RES + "/me", auth=auth)).status_code == 200
        auth._state.auth.clear()
    assert len(asked) == 2 and all(a["high_risk_scopes"] == ["notes:share"] for a in asked)
    assert all(d["risk_source"] == {"notes:share": "default"} for d in await events(w, "agentauth.consent_asked"))


# -- metadata and the resource's own checks --------------------------------------------------------------------


async def test_the_metadata_document_lists_the_levels(raised: RiskWorld) -> None:
    meta = (await raised.w.http.get(RES + "/.well-known/aauth-resource.json")).json()
    assert meta["scope_risk"] == {"notes:read": "high"}
    assert meta["scope_descriptions"] == {"notes:read": "Read notes", "notes:write": "Write notes"}
    raised.resource.scope_risk = {}
    meta = (await raised.w.http.get(RES + "/.well-known/aauth-resource.json")).json()
    assert "scope_risk" not in meta  # nothing declared: the document is as before


def test_the_resource_refuses_unknown_levels() -> None:
    key = OKPKey.generate_key("Ed25519", parameters={"alg": "Ed25519"}, private=True)
    for bad in ({"a": "medium"}, {"a": "HIGH"}, {"a": 1}, {"two words": "high"}, {"": "low"}, {"a": None}):
        with pytest.raises(ValueError, match="scope_risk"):
            AgentAuthResource(Starlette(), resource_id=RES, signer=Signer(kid="r", key=key), rules=[],
                              scope_risk=bad)  # type: ignore[arg-type]
    assert check_scope_risk({"a": "low", "b": "high"}) == {"a": "low", "b": "high"}


async def test_the_resource_token_carries_only_the_requested_scopes_levels(lowered: RiskWorld) -> None:
    w = lowered.w
    presented = await person_token(w)
    claims = claims_of(await challenge_for(w, presented))
    assert claims["scope"] == "notes:read" and claims["scope_risk"] == {"notes:read": "low"}
    lowered.resource.scope_risk = {"notes:write": "high"}
    assert "scope_risk" not in claims_of(await challenge_for(w, presented))


# -- only the signed claim counts ------------------------------------------------------------------------------


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


async def test_a_forged_or_unsigned_claim_is_refused(raised: RiskWorld) -> None:
    w = raised.w
    presented = await person_token(w)
    genuine = await challenge_for(w, presented)
    claims = claims_of(genuine)
    assert claims["scope_risk"] == {"notes:read": "high"}  # signed by the resource's key
    forged = {**claims, "scope_risk": {"notes:read": "low"}}
    attacker = OKPKey.generate_key("Ed25519", parameters={"alg": "Ed25519"}, private=True)
    tokens = [Signer(kid="res-1", key=attacker).sign(wire.TYP_RESOURCE, forged),  # not the resource's key
              f"{_b64({'typ': wire.TYP_RESOURCE, 'alg': 'none'})}.{_b64(forged)}.",  # unsigned
              genuine.rsplit(".", 1)[0].rsplit(".", 1)[0] + "." + _b64(forged) + "." + genuine.rsplit(".", 1)[1]]
    for i, token in enumerate(tokens):
        r = await post_ps(w, "/agentauth/auth-token", {"resource_token": token, "presented_token": presented,
                                                       "capabilities": ["interaction"], "justification": str(i)})
        assert r.status_code == 400 and r.json()["error"] == "invalid_resource_token", (i, r.text)
    assert await events(w, "agentauth.consent_asked") == [] and await events(w, "agentauth.consent_granted") == []
    # the genuine token is accepted, and asks
    r = await post_ps(w, "/agentauth/auth-token", {"resource_token": genuine, "presented_token": presented,
                                                   "capabilities": ["interaction"]})
    assert r.status_code == 202, r.text
    assert (await events(w, "agentauth.consent_asked"))[0]["risk_source"] == {"notes:read": "resource"}


async def test_the_request_body_cannot_carry_levels(raised: RiskWorld) -> None:
    """Levels come from the resource token only: an agent naming its own in the request changes nothing."""
    w = raised.w
    raised.resource.scope_risk = {}
    presented = await person_token(w)
    await exchange(w, await challenge_for(w, presented), presented)  # remembered (low at the person server)
    body = {"resource_token": await challenge_for(w, presented), "presented_token": presented,
            "scope_risk": {"notes:read": "high"}, "capabilities": ["interaction"]}
    r = await post_ps(w, "/agentauth/auth-token", body)
    assert r.status_code == 200 and "auth_token" in r.json()


async def test_malformed_and_unknown_levels_in_a_signed_token(raised: RiskWorld) -> None:
    """Signed by the resource but odd: a claim that is not an object of strings is invalid_resource_token; a level
    we do not know counts as high (asking is the safe side)."""
    w = raised.w
    presented = await person_token(w)
    claims = claims_of(await challenge_for(w, presented))
    signer = Signer(kid="res-1", key=raised.resource_key)
    for i, bad in enumerate(["high", ["notes:read"], {"notes:read": 2}, {"notes:read": "x" * 33}]):
        token = signer.sign(wire.TYP_RESOURCE, {**claims, "scope_risk": bad})
        r = await post_ps(w, "/agentauth/auth-token", {"resource_token": token, "presented_token": presented,
                                                       "justification": str(i)})
        assert r.status_code == 400 and r.json()["error"] == "invalid_resource_token", (bad, r.text)
    token = signer.sign(wire.TYP_RESOURCE, {**claims, "scope_risk": {"notes:read": "critical", "other": "low"}})
    r = await post_ps(w, "/agentauth/auth-token", {"resource_token": token, "presented_token": presented,
                                                   "capabilities": ["interaction"]})
    assert r.status_code == 202, r.text
    asked = await events(w, "agentauth.consent_asked")
    assert asked[0]["risk_source"] == {"notes:read": "resource"}
    assert asked[0]["resource_risk"] == {"notes:read": "critical"}  # other scopes' entries are not kept


# -- the combination rule on its own ---------------------------------------------------------------------------


def test_the_higher_level_wins(settings: Settings) -> None:
    s = replace(settings, agentauth_scope_risk={"a": "low", "b": "high", f"{RES} c": "low"})
    assert consent.combine(consent.operator_risk(s, RES, "a"), "high") == ("high", "resource")
    assert consent.combine(consent.operator_risk(s, RES, "a"), "low") == ("low", "person_server")
    assert consent.combine(consent.operator_risk(s, RES, "a"), None) == ("low", "person_server")
    assert consent.combine(consent.operator_risk(s, RES, "a"), "medium") == ("high", "resource")
    assert consent.combine(consent.operator_risk(s, RES, "b"), "low") == ("high", "person_server")
    assert consent.combine(consent.operator_risk(s, RES, "c"), "low") == ("low", "person_server")
    assert consent.combine(consent.operator_risk(s, RES, "z"), "low") == ("high", "default")
    low_default = replace(s, agentauth_default_risk="low")
    assert consent.combine(consent.operator_risk(low_default, RES, "z"), "high") == ("high", "resource")
    d = consent.decide(s, RES, ["a", "c"], {"a", "c"}, declared={"c": "high"})
    assert not d.grant_now and d.reason == "high_risk" and d.high == ("c",) and d.raised == ("c",)
    assert dict(d.sources) == {"a": "person_server", "c": "resource"}
    assert consent.decide(s, RES, ["a", "c"], {"a", "c"}, declared={"a": "low"}).grant_now
    assert parse_scope_risk(None, ["a"]) == {}
    assert parse_scope_risk({"a": "high", "b": "low"}, ["a"]) == {"a": "high"}


# -- the gateway passes it through -----------------------------------------------------------------------------


def test_the_gateway_agentauth_section_passes_scope_risk_through() -> None:
    from authgate.gateway import build_gateway
    from authgate.gateway.config import gateway_config_from_dict

    route = {"path": "/a", "allow": [{"mechanism": "agentauth", "scopes": ["notes:write"]}]}
    base: dict[str, Any] = {"gateway": {"upstream": "http://127.0.0.1:1", "public_url": RES, "identity": "plain"},
                            "agentauth": {"scope_risk": {"notes:write": "high"}}, "routes": [route]}
    app = build_gateway(gateway_config_from_dict(base, source="gw.toml"))
    assert app.app.agentauth.metadata()["scope_risk"] == {"notes:write": "high"}  # type: ignore[attr-defined]
    base["agentauth"]["scope_risk"] = {"notes:write": "medium"}
    with pytest.raises(PolicyError, match=r"^gw.toml: \[agentauth\]: scope_risk\['notes:write'\] must be low or high"):
        gateway_config_from_dict(base, source="gw.toml")
    base["agentauth"]["scope_risk"] = "high"
    with pytest.raises(PolicyError, match=r"^gw.toml: \[agentauth\]: scope_risk: wrong type str$"):
        gateway_config_from_dict(base, source="gw.toml")
