"""Access decisions are counted by mechanism and outcome, with a latency per mechanism, in every middleware that
decides on its own: the policy middleware (and the paywall behind it, with its settlements), the bearer
middleware, the x402 paywall and the Agent Auth resource. Real requests move the counters; nothing is counted
twice."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from joserfc.jwk import OKPKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route as StarletteRoute

from authgate.gateway import Proxy
from authgate.ops.decisions import DECISION_KEY, outcome_of
from authgate.ops.metrics import Metrics
from authgate.policy import OAuth, Policy, PolicyMiddleware, Route
from authgate.resource import BearerGuard, ProtectedResource
from authgate.resource.middleware import AuthGateMiddleware, protect, public
from authgate.x402 import wire
from authgate.x402.paywall import Paywall, PaywallMiddleware
from tests.agentauth.test_resource import agent_request
from tests.agentauth.test_resource import make as make_agentauth
from tests.gateway.test_gateway import (
    API,
    POLICY,
    SECRET,
    TOKENS,
    RecordingFacilitator,
    TableVerifier,
    Upstream,
    offered,
    payment,
)
from tests.ops.test_operations import sample


def decisions(metrics: Metrics) -> dict[tuple[str, str], float]:
    """Every non-zero ``authgate_access_decisions_total`` sample, by (mechanism, outcome)."""
    text = metrics.exposition().decode()
    found: dict[tuple[str, str], float] = {}
    for mech in ("oauth", "aauth", "agentauth", "x402", "public", "none"):
        for outcome in ("allowed", "challenged", "denied", "error"):
            value = sample(text, "authgate_access_decisions_total", mechanism=mech, outcome=outcome)
            if value:
                found[(mech, outcome)] = value
    return found


def timed(metrics: Metrics, mechanism: str) -> float | None:
    return sample(metrics.exposition().decode(), "authgate_access_decision_seconds_count", mechanism=mechanism)


@dataclass
class Counted:
    http: httpx.AsyncClient
    metrics: Metrics
    upstream: Upstream
    facilitator: RecordingFacilitator


@pytest.fixture
async def counted() -> AsyncIterator[Counted]:
    upstream = Upstream()
    proxy = Proxy("http://upstream.test", identity_secret=SECRET, transport=httpx.ASGITransport(app=upstream.app()))
    resource = ProtectedResource(resource=API, authorization_servers=["https://as.test"])
    facilitator = RecordingFacilitator()
    metrics = Metrics()
    app = PolicyMiddleware(proxy, POLICY, bearer=BearerGuard(TableVerifier(TOKENS), resource),
                           facilitator=facilitator, base_url=API, metrics=metrics)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=API) as http:
        yield Counted(http, metrics, upstream, facilitator)
    await proxy.aclose()


async def test_the_policy_middleware_counts_every_decision_once(counted: Counted) -> None:
    http = counted.http
    assert decisions(counted.metrics) == {}
    assert (await http.get("/health")).status_code == 200
    assert (await http.get("/weather", headers={"Authorization": "Bearer reader"})).status_code == 200
    assert (await http.get("/orders/low", headers={"Authorization": "Bearer pii"})).status_code == 200
    assert (await http.get("/weather")).status_code == 401                                       # nothing presented
    assert (await http.get("/weather", headers={"Authorization": "Bearer forged"})).status_code == 401
    assert (await http.get("/weather", headers={"Authorization": "Bearer nobody"})).status_code == 403  # step-up
    assert (await http.get("/weather", headers={"Authorization": "Bearer a b"})).status_code == 400
    assert (await http.get("/weather", headers={"Authorization": "Bearer down"})).status_code == 503
    assert (await http.get("/orders/high", headers={"Authorization": "Bearer pii"})).status_code == 401
    assert (await http.get("/admin")).status_code == 403                                          # no route
    assert (await http.get("/health/..%2Fadmin")).status_code == 400                               # odd path
    assert (await http.get("/.well-known/oauth-protected-resource")).status_code == 200           # not a decision
    assert decisions(counted.metrics) == {
        ("public", "allowed"): 1, ("oauth", "allowed"): 1, ("aauth", "allowed"): 1, ("none", "challenged"): 1,
        ("oauth", "challenged"): 2, ("oauth", "denied"): 1, ("oauth", "error"): 1, ("aauth", "challenged"): 1,
        ("none", "denied"): 2}
    assert timed(counted.metrics, "oauth") == 5 and timed(counted.metrics, "public") == 1
    assert timed(counted.metrics, "none") == 3


async def test_payments_are_counted_by_the_paywall_with_their_settlements(counted: Counted) -> None:
    http = counted.http
    requirements = offered(await http.get("/weather"))
    ok = await http.get("/weather", headers={"PAYMENT-SIGNATURE": payment(requirements)})
    assert ok.status_code == 200
    counted.upstream.status = 500
    failed = await http.get("/weather", headers={"PAYMENT-SIGNATURE": payment(requirements)})
    assert failed.status_code == 500
    counted.upstream.status = 200
    counted.facilitator.valid = False
    refused = await http.get("/weather", headers={"PAYMENT-SIGNATURE": payment(requirements)})
    assert refused.status_code == 402
    assert decisions(counted.metrics) == {("none", "challenged"): 1, ("x402", "allowed"): 2,
                                          ("x402", "challenged"): 1}
    assert timed(counted.metrics, "x402") == 3
    text = counted.metrics.exposition().decode()
    assert sample(text, "authgate_paywall_settlements_total", network=requirements.network, outcome="settled") == 1
    assert sample(text, "authgate_paywall_settlements_total", network=requirements.network, outcome="skipped") == 1


@dataclass
class FlakyFacilitator(RecordingFacilitator):
    """Verifies, then fails settlement with ``reason`` (or raises on verify with ``down``)."""

    reason: str = "invalid_exact_evm_insufficient_balance"
    down: bool = False

    async def verify(self, payload: wire.PaymentPayload, requirements: wire.PaymentRequirements) -> wire.VerifyResponse:
        if self.down:
            raise ConnectionError("facilitator down")
        return await super().verify(payload, requirements)

    async def settle(self, payload: wire.PaymentPayload, requirements: wire.PaymentRequirements) -> wire.SettleResponse:
        return wire.SettleResponse(success=False, transaction="", network=requirements.network,
                                   error_reason=self.reason)


async def test_upfront_settlement_failures_and_an_unreachable_facilitator() -> None:
    upstream = Upstream()
    proxy = Proxy("http://upstream.test", identity="plain", transport=httpx.ASGITransport(app=upstream.app()))
    facilitator = FlakyFacilitator()
    metrics = Metrics()
    app = PolicyMiddleware(proxy, POLICY, facilitator=facilitator, base_url=API, metrics=metrics,
                           bearer=BearerGuard(TableVerifier(TOKENS), ProtectedResource(
                               resource=API, authorization_servers=["https://as.test"])))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=API) as http:
        requirements = offered(await http.get("/stream"))
        broke = await http.get("/stream", headers={"PAYMENT-SIGNATURE": payment(requirements)})
        facilitator.reason = "a reason this facilitator made up"
        odd = await http.get("/stream", headers={"PAYMENT-SIGNATURE": payment(requirements)})
        facilitator.reason = "unexpected_settle_error"
        theirs = await http.get("/stream", headers={"PAYMENT-SIGNATURE": payment(requirements)})
        facilitator.down = True
        down = await http.get("/stream", headers={"PAYMENT-SIGNATURE": payment(requirements)})
    await proxy.aclose()
    assert [r.status_code for r in (broke, odd, theirs, down)] == [402, 402, 402, 402]
    assert upstream.seen == []
    assert decisions(metrics) == {("none", "challenged"): 1, ("x402", "denied"): 2, ("x402", "error"): 2}
    text = metrics.exposition().decode()
    for outcome in ("invalid_exact_evm_insufficient_balance", "other", "unexpected_settle_error"):
        assert sample(text, "authgate_paywall_settlements_total", network=requirements.network,
                      outcome=outcome) == 1, outcome
    assert "made up" not in text  # a facilitator's free text never becomes a label


async def test_the_paywall_on_its_own_counts_its_routes_only() -> None:
    async def hello(_: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    facilitator = RecordingFacilitator()
    metrics = Metrics()
    paywall = Paywall(facilitator, base_url=API, metrics=metrics)
    paywall.route("/paid", {"amount": "10000", "asset": "0x" + "ef" * 20, "extra": {"name": "Test", "version": "1"}},
                  "0x" + "ab" * 20, "eip155:84532")
    app = PaywallMiddleware(Starlette(routes=[StarletteRoute("/{p:path}", hello)]), paywall)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=API) as http:
        assert (await http.get("/free")).status_code == 200  # not priced: not the paywall's decision
        unpaid = await http.get("/paid")
        paid = await http.get("/paid", headers={"PAYMENT-SIGNATURE": payment(offered(unpaid))})
    assert unpaid.status_code == 402 and paid.status_code == 200
    assert decisions(metrics) == {("none", "challenged"): 1, ("x402", "allowed"): 1}
    assert sample(metrics.exposition().decode(), "authgate_paywall_settlements_total", network="eip155:84532",
                  outcome="settled") == 1


async def test_the_bearer_middleware_counts_its_decisions() -> None:
    async def hello(_: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    metrics = Metrics()
    resource = ProtectedResource(resource=API, authorization_servers=["https://as.test"])
    app = AuthGateMiddleware(Starlette(routes=[StarletteRoute("/{p:path}", hello)]), TableVerifier(TOKENS),
                             resource, [public("/health"), protect("/weather", "weather:read")], metrics=metrics)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=API) as http:
        statuses = [(await http.get(path, headers=headers)).status_code for path, headers in (
            ("/health", {}), ("/weather", {"Authorization": "Bearer reader"}), ("/weather", {}),
            ("/weather", {"Authorization": "Bearer nobody"}), ("/weather", {"Authorization": "Bearer down"}),
            ("/weather?access_token=reader", {}), ("/.well-known/oauth-protected-resource", {}))]
    assert statuses == [200, 200, 401, 403, 503, 400, 200]
    assert decisions(metrics) == {("public", "allowed"): 1, ("oauth", "allowed"): 1, ("none", "challenged"): 1,
                                  ("oauth", "challenged"): 1, ("oauth", "error"): 1, ("oauth", "denied"): 1}
    assert timed(metrics, "oauth") == 4


async def test_the_agent_auth_resource_counts_its_decisions() -> None:
    ap_key = OKPKey.generate_key("Ed25519", parameters={"alg": "Ed25519"}, private=True)
    docs = {"https://ap.test/.well-known/aauth-agent.json": {"issuer": "https://ap.test",
                                                             "jwks_uri": "https://ap.test/jwks"},
            "https://ap.test/jwks": {"keys": [{**_public(ap_key), "kid": "ap1"}]}}

    async def fetch(url: str) -> Any:
        return docs[url]

    metrics = Metrics()
    http, _ = make_agentauth(fetch_json=fetch, metrics=metrics)
    async with http:
        ok = await http.get("/hello", headers=agent_request("https://ap.test", ap_key))
        unsigned = await http.get("/hello")
        forged = await http.get("/hello", headers=agent_request("https://ap.test", ap_key,
                                                                 url="https://evil.test/hello"))
        other = await http.get("/elsewhere")  # no rule: not this middleware's decision
    assert (ok.status_code, unsigned.status_code, forged.status_code, other.status_code) == (200, 401, 401, 404)
    assert decisions(metrics) == {("agentauth", "allowed"): 1, ("none", "challenged"): 1,
                                  ("agentauth", "challenged"): 1}
    assert timed(metrics, "agentauth") == 2


def _public(key: OKPKey) -> dict[str, Any]:
    from authgate.agentauth.tokens import public_jwk

    return public_jwk(key)


async def test_a_failure_while_deciding_is_an_error_and_the_decision_is_left_for_the_access_log() -> None:
    class Broken(TableVerifier):
        async def verify(self, token: str) -> Any:
            raise RuntimeError("bug")

    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["state"][DECISION_KEY])
        await JSONResponse({"ok": True})(scope, receive, send)

    metrics = Metrics()
    policy = Policy((Route("/a", (OAuth(()),)),))
    resource = ProtectedResource(resource=API, authorization_servers=["https://as.test"])
    broken = PolicyMiddleware(app, policy, bearer=BearerGuard(Broken({}), resource), metrics=metrics)
    with pytest.raises(RuntimeError):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=broken), base_url=API) as http:
            await http.get("/a", headers={"Authorization": "Bearer x"})
    assert decisions(metrics) == {("none", "error"): 1}
    fine = PolicyMiddleware(app, policy, bearer=BearerGuard(TableVerifier({"t": {"sub": "a", "scope": "s"}}),
                                                             resource))  # no metrics: the state still says
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fine), base_url=API) as http:
        assert (await http.get("/a", headers={"Authorization": "Bearer t"})).status_code == 200
    assert seen == [("oauth", "allowed")]


def test_outcome_of_a_refusal() -> None:
    assert outcome_of(401) == outcome_of(402) == "challenged"
    assert outcome_of(403, {"WWW-Authenticate": 'Bearer error="insufficient_scope"'}) == "challenged"
    assert outcome_of(403, {"Content-Type": "application/json"}) == "denied"
    assert outcome_of(400) == outcome_of(409) == outcome_of(413) == "denied"
    assert outcome_of(503) == outcome_of(500) == "error"
