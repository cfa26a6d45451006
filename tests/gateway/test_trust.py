"""Trust and control through the real gateway (``build_gateway`` from a config file's dict, ``[trust]`` naming the
authorization server's database by URL): the kill switch on OAuth tokens, Agent Auth signatures (agent and
person tokens) and payers; budgets (per payer, per OAuth client, per Agent Auth identity; over → approval);
mandates; route attestations for every mechanism; an unreachable trust database is 503.

One in-process world: our server (AS, agent provider, person server) at PS, the gateway at API in front of a
recording upstream, and a facilitator double over HTTP (real EIP-3009 signature recovery, tests.x402). The
gateway opens its own engine on the server's database by URL — a SQLite file, and a fresh PostgreSQL database
(skipped with the reason when PostgreSQL is unreachable; failed under AUTHGATE_REQUIRE_POSTGRES=1) — as a
separate gateway process would; the kills, budgets and decisions below are made through the server's context,
in "another process".
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from authgate.agent.agentauth import AgentAuth, AgentKey
from authgate.agent.x402 import Budget, X402PaymentAuth
from authgate.app import build_context, create_app
from authgate.clock import FrozenClock
from authgate.config import Settings, to_sqlalchemy_url
from authgate.context import ServerContext
from authgate.gateway import build_gateway, gateway_config_from_dict
from authgate.gateway.runtime import GatewayApp
from authgate.net import Fetcher
from authgate.policy import PolicyError
from authgate.store import Store
from authgate.store.engine import make_engine, migrate
from authgate.trust import mandates
from authgate.trust import wire as tw
from authgate.trust.attestations import issue_attestation
from authgate.trust.mandates import Terms
from authgate.trust.periods import period_key
from authgate.x402 import wire
from tests.conftest import PG_URL
from tests.helpers import add_user
from tests.ops.test_operations import sample
from tests.scale.cluster import _admin
from tests.x402.test_paywall import NETWORK, PAYEE, LedgerFacilitator, payer_wallet, required_of, signed_header

PS = "https://authgate.test"
API = "https://api.test"
ADMIN_KEY = "k" * 40
PRICE = 10_000  # "$0.01" of the local chain's token
OFFER = {"mechanism": "x402", "price": "$0.01", "pay_to": PAYEE, "network": NETWORK}
ADULT = {"claims": {"verified_adult": True}, "issuers": [PS]}
ROUTES = [
    {"path": "/weather", "allow": [{"mechanism": "oauth", "scopes": ["weather:read"]},
                                   {"mechanism": "agentauth", "need": "agent"}]},
    {"path": "/me", "allow": [{"mechanism": "agentauth", "need": "person"}]},
    {"path": "/paid", "allow": [OFFER, {"mechanism": "oauth"}, {"mechanism": "agentauth", "need": "agent"}]},
    {"path": "/adult", "attestation": ADULT, "allow": [{"mechanism": "oauth", "scopes": ["weather:read"]},
                                                      {"mechanism": "agentauth", "need": "agent"}, OFFER]},
    {"path": "/shop", "attestation": ADULT, "allow": [OFFER]},
]


class HostRouter(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self.transports: dict[str, httpx.AsyncBaseTransport] = {}

    def add(self, host: str, app: Any) -> None:
        self.transports[host] = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.transports[request.url.host].handle_async_request(request)


def facilitator_app(fac: LedgerFacilitator) -> Starlette:
    """The facilitator double behind HTTP, as the gateway's FacilitatorClient calls it."""

    async def verify(request: Request) -> Response:
        body = wire.FacilitatorRequest.from_json(await request.body())
        answer = await fac.verify(body.payment_payload, body.payment_requirements)
        return Response(answer.to_json(), media_type="application/json")

    async def settle(request: Request) -> Response:
        body = wire.FacilitatorRequest.from_json(await request.body())
        answer = await fac.settle(body.payment_payload, body.payment_requirements)
        return Response(answer.to_json(), media_type="application/json")

    return Starlette(routes=[Route("/verify", verify, methods=["POST"]), Route("/settle", settle, methods=["POST"])])


@dataclass
class Upstream:
    seen: list[dict[str, str]] = field(default_factory=list)

    async def echo(self, request: Request) -> JSONResponse:
        self.seen.append(dict(request.headers))
        return JSONResponse({"ok": True, "agent": request.headers.get("x-authgate-agent")})

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{path:path}", self.echo, methods=["GET", "POST"])])


@dataclass
class World:
    http: httpx.AsyncClient
    router: HostRouter
    ctx: ServerContext
    clock: FrozenClock
    fac: LedgerFacilitator
    upstream: Upstream
    gateway: GatewayApp
    owner: str
    key: AgentKey
    agent_token: str
    agent_id: str

    async def token(self, client_id: str = "client-1", scope: str = "weather:read", **extra: Any) -> str:
        now = int(self.clock.now())
        claims = {"iss": PS, "sub": self.owner, "aud": API, "client_id": client_id, "scope": scope, "iat": now,
                  "nbf": now, "exp": now + 300, "jti": secrets.token_urlsafe(8), **extra}
        return await self.ctx.keys.sign(claims)

    async def get(self, path: str, *, token: str | None = None, signed: str | None = None, pay: bool = False,
                  wallet: Any = None, headers: dict[str, str] | None = None) -> httpx.Response:
        """GET through the gateway with any mix of a bearer token, an Agent Auth signature presenting ``signed``
        (a token), and a payment (the offer of a first unpaid request, signed by ``wallet``)."""
        request = self.http.build_request("GET", API + path, headers=headers or {})
        if token is not None:
            request.headers["Authorization"] = f"Bearer {token}"
        if pay:
            offer = required_of(await self.http.get(API + path)).accepts[0]
            request.headers[wire.HEADER_PAYMENT_SIGNATURE] = signed_header(wallet, offer)
        if signed is not None:
            AgentAuth(self.key, self.agent_token, http=self.http, clock=self.clock.now).sign(request, signed)
        return await self.http.send(request)


def _config(tmp_path: Path, *, trust: dict[str, Any] | None = None, routes: list[Any] | None = None) -> dict[str, Any]:
    return {
        "gateway": {"upstream": "http://upstream.test", "public_url": API, "identity": "plain"},
        "oauth": {"issuer": PS}, "agentauth": {"trusted_person_servers": [PS]},
        "x402": {"facilitator_url": "https://facilitator.test"},
        "trust": trust if trust is not None else {"database_url": f"sqlite:///{tmp_path / 'authgate.db'}"},
        "routes": routes or ROUTES,
    }


@pytest.fixture
async def shared(backend: str, tmp_path: Path, clock: FrozenClock) -> AsyncIterator[tuple[Store, str]]:
    """The server's store and the URL the gateway is given for the same database (migrated by the server): a
    SQLite file, or a fresh PostgreSQL database (``backend`` skips or fails when PostgreSQL is unreachable)."""
    name = None
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'shared.db'}"
    else:
        name = "gwtrust_" + secrets.token_hex(6)
        await _admin(f"CREATE DATABASE {name}")
        url = PG_URL.rsplit("/", 1)[0] + "/" + name
    engine = make_engine(to_sqlalchemy_url(url))
    try:
        await migrate(engine)
        store = Store(engine, clock)
        yield store, url
        await store.close()
    finally:
        await engine.dispose()
        if name is not None:
            await _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
async def world(settings: Settings, shared: tuple[Store, str], clock: FrozenClock,
                tmp_path: Path) -> AsyncIterator[World]:
    store, url = shared
    router = HostRouter()
    cfg = replace(settings, issuer=PS, agentauth_enabled=True, agentauth_admin_key=ADMIN_KEY,
                  agentauth_poll_interval=0).validate()
    ctx = await build_context(cfg, clock, store, fetcher=Fetcher(transport=router))
    jwks = json.dumps(await ctx.keys.jwks())
    (tmp_path / "authgate-jwks.json").write_text(jwks)
    config = gateway_config_from_dict(_config(tmp_path, trust={
        "database_url_env": "AUTHGATE_TEST_TRUST_DB", "issuers": {PS: "authgate-jwks.json"}}),
        source="gw.toml", base_dir=tmp_path, env={"AUTHGATE_TEST_TRUST_DB": url})
    upstream, fac = Upstream(), LedgerFacilitator()
    gateway = build_gateway(config, upstream_transport=httpx.ASGITransport(app=upstream.app()),
                            http_transport=router, clock=clock.now)
    router.add("authgate.test", create_app(ctx))
    router.add("api.test", gateway)
    router.add("facilitator.test", facilitator_app(fac))
    owner = await add_user(store, "alice")
    key = AgentKey.generate()
    async with httpx.AsyncClient(transport=router, timeout=30) as http:
        enrolled = await http.post(PS + "/agentauth/agents", headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                                   json={"name": "shopper", "jwk": key.public_jwk, "owner": "alice"})
        assert enrolled.status_code == 201, enrolled.text
        body = enrolled.json()
        yield World(http, router, ctx, clock, fac, upstream, gateway, owner, key, body["agent_token"], body["agent_id"])
    await gateway.aclose()


def _error(r: httpx.Response, status: int = 403) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    return str(r.json()["error"])


# -- the kill switch ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "ident"), [("client", "client-1"), ("user", None), ("agent", "voice-7")])
async def test_a_killed_clients_unexpired_jwt_is_refused_on_the_next_request(world: World, kind: str,
                                                                            ident: str | None) -> None:
    token = await world.token(act={"sub": "voice-7"})
    assert (await world.get("/weather", token=token)).status_code == 200
    target = ident or world.owner
    assert await world.ctx.killswitch.kill(kind, target, by="admin")
    refused = await world.get("/weather", token=token)
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_token"
    assert await world.ctx.killswitch.revive(kind, target, by="admin")
    assert (await world.get("/weather", token=token)).status_code == 200


async def test_a_killed_agent_auth_agent_and_person_are_refused(world: World) -> None:
    assert (await world.get("/weather", signed=world.agent_token)).status_code == 200
    await world.ctx.killswitch.kill("agent", world.agent_id, by="admin")
    refused = await world.get("/weather", signed=world.agent_token)
    assert refused.status_code == 401 and refused.headers["signature-error"] == "error=revoked_jwt"
    await world.ctx.killswitch.revive("agent", world.agent_id, by="admin")
    # A person token issued here: its person's delegation is killed through the token's record (its sub is a
    # pairwise id the gateway could not tie to alice otherwise).
    person = await AgentAuth(world.key, world.agent_token, http=world.http, clock=world.clock.now).person_token(API)
    assert (await world.get("/me", signed=person.value)).status_code == 200
    await world.ctx.killswitch.kill("user", world.owner, by="admin")
    refused = await world.get("/me", signed=person.value)
    assert refused.status_code == 401 and refused.headers["signature-error"] == "error=revoked_jwt"


async def test_a_killed_payers_payment_is_refused_before_verify(world: World) -> None:
    wallet = payer_wallet(world.fac)
    assert (await world.get("/paid", pay=True, wallet=wallet)).status_code == 200
    await world.ctx.killswitch.kill("agent", wallet.address, by="admin")
    verifies = world.fac.verify_calls
    assert _error(await world.get("/paid", pay=True, wallet=wallet)) == tw.ERR_KILLED
    assert world.fac.verify_calls == verifies and world.fac.settle_calls == 1
    await world.ctx.killswitch.revive("agent", wallet.address, by="admin")
    assert (await world.get("/paid", pay=True, wallet=wallet)).status_code == 200


async def test_a_payment_presented_with_a_killed_credential_is_refused(world: World) -> None:
    wallet = payer_wallet(world.fac)  # the wallet itself is not killed
    token = await world.token()
    await world.ctx.killswitch.kill("client", "client-1", by="admin")
    await world.ctx.killswitch.kill("agent", world.agent_id, by="admin")
    assert _error(await world.get("/paid", token=token, pay=True, wallet=wallet)) == tw.ERR_KILLED
    assert _error(await world.get("/paid", signed=world.agent_token, pay=True, wallet=wallet)) == tw.ERR_KILLED
    assert world.fac.verify_calls == 0
    assert (await world.get("/paid", pay=True, wallet=wallet)).status_code == 200  # the payer alone is alive
    # counted as access decisions: the refusals as x402 denied (the payment's), before the paywall saw them
    metrics = world.gateway.metrics.exposition().decode()
    assert sample(metrics, "authgate_access_decisions_total", mechanism="x402", outcome="denied") == 2
    assert sample(metrics, "authgate_access_decisions_total", mechanism="x402", outcome="allowed") == 1


async def test_a_missing_attestation_is_counted_as_a_denied_decision(world: World) -> None:
    token = await world.token()
    assert _error(await world.get("/adult", token=token)) == tw.ERR_ATTESTATION_MISSING
    metrics = world.gateway.metrics.exposition().decode()
    assert sample(metrics, "authgate_access_decisions_total", mechanism="oauth", outcome="denied") == 1
    assert sample(metrics, "authgate_access_decisions_total", mechanism="oauth", outcome="allowed") is None


# -- budgets ----------------------------------------------------------------------------------------------------


async def test_over_budget_becomes_an_approval_request_through_the_gateway(world: World) -> None:
    wallet = payer_wallet(world.fac)
    payer = wallet.address.lower()
    await world.ctx.trust.set_budget(payer, per_day=PRICE, approver=world.owner)
    assert (await world.get("/paid", pay=True, wallet=wallet)).status_code == 200
    over = await world.get("/paid", pay=True, wallet=wallet)
    assert _error(over) == tw.ERR_BUDGET_PENDING and world.fac.verify_calls == 1
    approval = await world.ctx.approvals.get(over.json()["approval_id"])
    assert approval is not None and approval.subject == world.owner and approval.kind == tw.APPROVAL_KIND_BUDGET
    await world.ctx.approvals.decide(approval.id, True, by=world.owner, channel="web")
    repeat = {tw.APPROVAL_HEADER: approval.id}
    assert (await world.get("/paid", pay=True, wallet=wallet, headers=repeat)).status_code == 200
    assert tw.APPROVAL_HEADER.lower() not in world.upstream.seen[-1]  # trust headers stay at the gateway
    second = (await world.get("/paid", pay=True, wallet=wallet)).json()["approval_id"]
    await world.ctx.approvals.decide(second, False, by=world.owner, channel="web")
    denied = await world.get("/paid", pay=True, wallet=wallet, headers={tw.APPROVAL_HEADER: second})
    assert _error(denied) == tw.ERR_BUDGET_DENIED
    assert world.fac.settle_calls == 2
    assert await world.ctx.trust.spent(payer, period_key("day", world.clock.now())) == 2 * PRICE


async def test_budgets_are_kept_per_agent_auth_identity_and_per_oauth_client(world: World) -> None:
    wallet = payer_wallet(world.fac)
    await world.ctx.trust.set_budget(world.agent_id, per_day=PRICE)
    await world.ctx.trust.set_budget("client-1", per_request=PRICE - 1)
    paid = await world.get("/paid", signed=world.agent_token, pay=True, wallet=wallet)
    assert paid.status_code == 200, paid.text
    over = await world.get("/paid", signed=world.agent_token, pay=True, wallet=wallet)
    assert _error(over) == tw.ERR_BUDGET_PENDING  # no approver set: the Agent Auth agent's owner is asked
    approval = await world.ctx.approvals.get(over.json()["approval_id"])
    assert approval is not None and approval.subject == world.owner and approval.client_id == world.agent_id
    day = period_key("day", world.clock.now())
    assert await world.ctx.trust.spent(world.agent_id, day) == PRICE
    assert await world.ctx.trust.spent(wallet.address.lower(), day) == 0  # charged to the agent, not the wallet
    token = await world.token()  # an OAuth client has no recorded owner: refused
    assert _error(await world.get("/paid", token=token, pay=True, wallet=wallet)) == tw.ERR_BUDGET_EXCEEDED
    assert (await world.get("/paid", pay=True, wallet=wallet)).status_code == 200  # the wallet has no budget
    assert world.fac.settle_calls == 2


# -- mandates ---------------------------------------------------------------------------------------------------


async def test_mandates_through_the_gateway(world: World) -> None:
    wallet = payer_wallet(world.fac)

    async def mandate(**terms: Any) -> tuple[str, str]:
        t = {"routes": ("GET /paid",), "payees": (PAYEE,), "cap_amount": 2 * PRICE, **terms}
        token, row = await mandates.issue(world.ctx.keys, world.ctx.trust, issuer=PS, subject=world.owner,
                                          agent=wallet.address, terms=Terms(**t))
        return token, row.jti

    good, jti = await mandate()
    paid = await world.get("/paid", pay=True, wallet=wallet, headers={tw.MANDATE_HEADER: good})
    assert paid.status_code == 200, paid.text
    assert tw.MANDATE_HEADER.lower() not in world.upstream.seen[-1]
    assert await world.ctx.trust.spent(f"mandate:{jti}", period_key("day", world.clock.now())) == PRICE
    outside, _ = await mandate(routes=("GET /weather",))
    verifies = world.fac.verify_calls
    assert _error(await world.get("/paid", pay=True, wallet=wallet, headers={tw.MANDATE_HEADER: outside})) == \
        tw.ERR_MANDATE_ROUTE
    other_payee, _ = await mandate(payees=("0x" + "99" * 20,))
    assert _error(await world.get("/paid", pay=True, wallet=wallet, headers={tw.MANDATE_HEADER: other_payee})) == \
        tw.ERR_MANDATE_PAYEE
    await world.ctx.trust.revoke_mandate(jti, by=world.owner)
    assert _error(await world.get("/paid", pay=True, wallet=wallet, headers={tw.MANDATE_HEADER: good})) == \
        tw.ERR_MANDATE_REVOKED
    assert world.fac.verify_calls == verifies


# -- attestations -----------------------------------------------------------------------------------------------


def _required(r: httpx.Response) -> dict[str, Any]:
    value = r.headers[tw.ATTESTATION_REQUIRED_HEADER]
    return dict(json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))))


async def _attestation(world: World, agent: str, *, claims: dict[str, Any] | None = None, now: int | None = None,
                       issuer: str = PS) -> str:
    return await issue_attestation(world.ctx.keys, issuer=issuer, agent=agent,
                                   claims={"verified_adult": True} if claims is None else claims, ttl=600,
                                   now=int(world.clock.now()) if now is None else now)


@pytest.mark.parametrize("mechanism", ["oauth", "agentauth", "x402"])
async def test_route_attestations_for_every_mechanism(world: World, mechanism: str) -> None:
    wallet = payer_wallet(world.fac)
    token = await world.token()
    agent = {"oauth": "client-1", "agentauth": world.agent_id, "x402": wallet.address}[mechanism]

    async def call(attestation: str | None) -> httpx.Response:
        headers = {tw.ATTESTATION_HEADER: attestation} if attestation else {}
        if mechanism == "oauth":
            return await world.get("/adult", token=token, headers=headers)
        if mechanism == "agentauth":
            return await world.get("/adult", signed=world.agent_token, headers=headers)
        return await world.get("/adult", pay=True, wallet=wallet, headers=headers)

    unauthenticated = await world.http.get(API + "/adult")
    assert unauthenticated.status_code == 401 and _required(unauthenticated) == ADULT  # in the combined challenge
    missing = await call(None)
    assert _error(missing) == tw.ERR_ATTESTATION_MISSING and _required(missing) == ADULT
    assert "verified_adult" in missing.json()["error_description"]
    good = await _attestation(world, agent)
    other_key = ECKey.generate_key("P-256", parameters={"kid": "evil"}, private=True)
    now = int(world.clock.now())
    untrusted = jwt.encode({"alg": "ES256", "typ": tw.ATTESTATION_TYP, "kid": "evil"},
                           {"iss": "https://kyc.evil", "sub": agent, "exp": now + 60,
                            "claims": {"verified_adult": True}}, other_key)
    forged = jwt.encode({"alg": "ES256", "typ": tw.ATTESTATION_TYP, "kid": json.loads(
        base64.urlsafe_b64decode(good.split(".")[0] + "==="))["kid"]},
        {"iss": PS, "sub": agent, "exp": now + 60, "claims": {"verified_adult": True}}, other_key)
    for presented, code in [
        (untrusted, tw.ERR_ATTESTATION_UNTRUSTED),
        (forged, tw.ERR_ATTESTATION_UNTRUSTED),
        (await _attestation(world, agent, now=now - 7200), tw.ERR_ATTESTATION_EXPIRED),
        (await _attestation(world, "someone-else"), tw.ERR_ATTESTATION_SUBJECT),
        (await _attestation(world, agent, claims={"verified_adult": False}), tw.ERR_ATTESTATION_CLAIM),
    ]:
        refused = await call(presented)
        assert _error(refused) == code, code
        assert _required(refused) == ADULT
    assert world.fac.verify_calls == 0 and not world.upstream.seen  # refused before access or payment
    allowed = await call(good)
    assert allowed.status_code == 200, allowed.text
    assert tw.ATTESTATION_HEADER.lower() not in world.upstream.seen[-1]
    assert world.fac.settle_calls == (1 if mechanism == "x402" else 0)


async def test_the_sdk_presents_its_attestations_only_where_a_route_asks_for_them(world: World) -> None:
    wallet = payer_wallet(world.fac)
    attestation = await _attestation(world, wallet.address)
    sent: list[httpx.Request] = []

    async def record(request: httpx.Request) -> None:
        sent.append(request)

    auth = X402PaymentAuth(wallet, Budget(), networks={NETWORK}, attestations=[attestation])
    async with httpx.AsyncClient(transport=world.router, auth=auth, event_hooks={"request": [record]}) as http:
        shop = await http.get(API + "/shop")
        assert shop.status_code == 200, shop.text
        assert sent[-1].headers[tw.ATTESTATION_HEADER] == attestation
        assert (await http.get(API + "/paid")).status_code == 200
        assert tw.ATTESTATION_HEADER not in sent[-1].headers
    assert world.fac.settle_calls == 2


# -- failure and configuration ----------------------------------------------------------------------------------


async def test_an_unreachable_trust_database_is_503_never_a_pass(world: World, tmp_path: Path) -> None:
    config = gateway_config_from_dict(_config(tmp_path, trust={"database_url": f"sqlite:///{tmp_path / 'x.db'}"},
                                              routes=ROUTES[:3]))  # an empty file: no schema
    gateway = build_gateway(config, upstream_transport=httpx.ASGITransport(app=world.upstream.app()),
                            http_transport=world.router, clock=world.clock.now)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway), base_url=API) as http:
        bearer = await http.get("/weather", headers={"Authorization": f"Bearer {await world.token()}"})
        offer = required_of(await http.get("/paid")).accepts[0]
        paid = await http.get("/paid", headers={wire.HEADER_PAYMENT_SIGNATURE: signed_header(
            payer_wallet(world.fac), offer)})
    await gateway.aclose()
    assert bearer.status_code == 503 and bearer.headers["retry-after"] == "5"
    assert paid.status_code == 503 and paid.json()["error"] == tw.ERR_UNAVAILABLE
    assert paid.headers["retry-after"] == "5" and world.fac.verify_calls == 0 and not world.upstream.seen


async def test_a_reload_keeps_the_trust_database_and_the_kill_switch(world: World, tmp_path: Path) -> None:
    """A reload naming the same database keeps its engine and kill switch (the next generation refuses a killed
    client at once); a rejected reload opens nothing that stays in use; a reload naming another database closes
    the old one with the last generation that used it, and the gateway's end closes the rest."""
    gateway = world.gateway
    databases = gateway._shared.trust_databases() if gateway._shared is not None else None
    assert databases is not None
    [database] = databases._open.values()
    first = gateway._current
    token = await world.token()
    assert (await world.get("/weather", token=token)).status_code == 200
    ready = await world.http.get(API + "/_authgate/ready")
    assert not [p for p in ready.json().get("problems", []) if p.startswith("trust database")], ready.text

    await gateway.reload(replace(gateway.config, policy=replace(gateway.config.policy,
                                                                routes=gateway.config.policy.routes[:3])))
    assert first.closed and list(databases._open.values()) == [database] and database.users == 1
    assert gateway._current.enforcer.trust.killswitch is database.killswitch  # type: ignore[union-attr]
    await world.ctx.killswitch.kill("client", "client-1", by="admin")
    assert _error(await world.get("/weather", token=token), 401) == "invalid_token"
    await world.ctx.killswitch.revive("client", "client-1", by="admin")
    assert (await world.get("/weather", token=token)).status_code == 200

    other = f"sqlite:///{tmp_path / 'other.db'}"
    untrusted = [{"path": "/adult", "attestation": {"claims": {"kyc": True}, "issuers": ["https://hr.example"]},
                  "allow": [{"mechanism": "oauth"}]}]
    with pytest.raises(PolicyError, match="no attestation issuers are trusted"):
        await gateway.reload(gateway_config_from_dict(_config(tmp_path, trust={"database_url": other},
                                                              routes=untrusted)))
    assert database.users == 1 and databases._open[other].users == 0  # opened by the failed build, never used

    closed: list[str] = []
    close = database.store.close

    async def closing() -> None:
        closed.append(database.url)
        await close()

    database.store.close = closing  # type: ignore[method-assign]
    await gateway.reload(gateway_config_from_dict(_config(tmp_path, trust={"database_url": other},
                                                          routes=ROUTES[:3])))
    assert closed == [database.url] and database.users == 0 and database.url not in databases._open
    assert databases._open[other].users == 1
    await gateway.aclose()
    assert databases._open == {}


def _fails(config: dict[str, Any], message: str, tmp_path: Path, env: dict[str, str] | None = None) -> None:
    with pytest.raises(PolicyError) as err:
        build_gateway(gateway_config_from_dict(config, source="gw.toml", env=env or {}, base_dir=tmp_path))
    assert str(err.value) == message


def test_trust_configuration_mistakes(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('{"keys": [{"kty": "EC", "kid": "k"}]}')
    db = {"database_url": "sqlite:///" + str(tmp_path / "a.db")}
    for trust, message in [
        ({"databse_url": "x"}, "gw.toml: [trust]: unknown field 'databse_url' (expected approvals, budgets, "
                               "database_url, database_url_env, issuers, require_mandate)"),
        ({"database_url": "x", "database_url_env": "Y"}, "gw.toml: [trust]: give database_url or database_url_env, "
                                                         "not both"),
        ({"database_url_env": "NOPE"}, "gw.toml: [trust]: database_url_env: $NOPE is not set"),
        ({"database_url": "mysql://db"}, "gw.toml: [trust]: database_url: mysql:// databases are not supported; use "
                                         "sqlite:///PATH (sqlite+aiosqlite:///PATH) or postgresql://USER:PASSWORD@HOST"
                                         ":5432/DB (postgresql+asyncpg://...)"),
        # the server's rule, not a prefix test: "sqlite_bad:" and "postgresx:" once passed, "sqlite://a.db" too
        ({"database_url": "postgresx://db/x"}, "gw.toml: [trust]: database_url: postgresx:// databases are not "
                                               "supported; use sqlite:///PATH (sqlite+aiosqlite:///PATH) or "
                                               "postgresql://USER:PASSWORD@HOST:5432/DB (postgresql+asyncpg://...)"),
        ({"database_url": "sqlite://a.db"}, "gw.toml: [trust]: database_url: a SQLite URL is sqlite:///relative/"
                                            "path.db or sqlite:////absolute/path.db (three slashes, then the file's "
                                            "path)"),
        ({"budgets": "yes"}, "gw.toml: [trust]: budgets: wrong type str"),
        ({"budgets": True}, "gw.toml: [trust]: budgets: needs the trust database (database_url or "
                            "database_url_env)"),
        ({"require_mandate": True, **db}, "gw.toml: [trust]: require_mandate: no mandate issuers are trusted "
                                          "([trust.issuers])"),
        ({"issuers": {"kyc.example": "bad.json"}}, "gw.toml: [trust.issuers]: 'kyc.example': an issuer is an "
                                                   "http(s) URL"),
        ({"issuers": {PS: "missing.json"}}, f"gw.toml: [trust.issuers]: {PS}: {tmp_path / 'missing.json'} cannot "
                                            "be read"),
        ({"issuers": {PS: {"keys": []}}}, f"gw.toml: [trust.issuers]: {PS}: must be a JWKS (a file name, or a "
                                          "table with a non-empty keys list)"),
    ]:
        _fails(_config(tmp_path, trust=trust), message, tmp_path)
    with pytest.raises(PolicyError, match=r"\[trust.issuers\]: https://authgate.test: not a usable JWKS"):
        build_gateway(gateway_config_from_dict(_config(tmp_path, trust={"issuers": {PS: "bad.json"}}),
                                               source="gw.toml", base_dir=tmp_path))
    adult = [{"path": "/adult", "attestation": ADULT, "allow": [{"mechanism": "oauth"}]}]
    _fails({**_config(tmp_path, routes=adult), "trust": db}, "routes[0] (* /adult): attestation: no attestation "
           "issuers are trusted (configure trusted issuers: [trust.issuers] in a gateway file)", tmp_path)
    key = ECKey.generate_key("P-256", parameters={"kid": "k1"}, private=False)
    other = {"https://hr.example": {"keys": [dict(key.as_dict(private=False))]}}
    _fails({**_config(tmp_path, routes=adult), "trust": {"issuers": other}}, "routes[0] (* /adult): attestation: "
           f"issuer '{PS}' is not a trusted issuer ([trust.issuers])", tmp_path)
    no_trust = _config(tmp_path, routes=adult)
    del no_trust["trust"]
    _fails(no_trust, "routes[0] (* /adult): attestation: no attestation issuers are trusted (configure trusted "
           "issuers: [trust.issuers] in a gateway file)", tmp_path)


# -- state shared by several gateway processes --------------------------------------------------------------------


async def test_a_signed_request_replayed_to_another_gateway_process_is_refused(world: World, tmp_path: Path) -> None:
    """Two gateways on one ``[trust]`` database stand for two processes: the Agent Auth replay cache is that
    database, so a captured signed POST accepted by one is refused by the other (a per-process cache let it in)."""
    env = {"AUTHGATE_TEST_TRUST_DB": str(world.gateway.config.trust.database_url)}  # type: ignore[union-attr]
    config = gateway_config_from_dict(_config(tmp_path, trust={
        "database_url_env": "AUTHGATE_TEST_TRUST_DB", "issuers": {PS: "authgate-jwks.json"}}),
        source="gw.toml", base_dir=tmp_path, env=env)
    other = build_gateway(config, upstream_transport=httpx.ASGITransport(app=world.upstream.app()),
                          http_transport=world.router, clock=world.clock.now)
    try:
        request = world.http.build_request("POST", API + "/weather", content=b'{"city": "Oslo"}',
                                           headers={"Content-Type": "application/json"})
        AgentAuth(world.key, world.agent_token, http=world.http, clock=world.clock.now).sign(request,
                                                                                             world.agent_token)
        assert (await world.http.send(request)).status_code == 200
        seen = len(world.upstream.seen)
        world.router.add("api.test", other)
        replayed = await world.http.send(request)
        assert replayed.status_code == 401, replayed.text
        assert "signature-error" in replayed.headers
        assert len(world.upstream.seen) == seen  # nothing forwarded
    finally:
        world.router.add("api.test", world.gateway)
        await other.aclose()
