"""Trust checks at the x402 paywall, paid by our agent SDK against the ledger facilitator double (real EIP-3009
signatures): budgets (within → paid; over → approval; approved → paid once; denied → refused), mandates
(covered → paid and counted; outside/forged → refused before /verify), kill switch on the payer, attestations,
and what a failed payment counted is given back."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from authgate.agent.x402 import Budget, X402PaymentAuth
from authgate.approvals import ApprovalService
from authgate.clock import FrozenClock
from authgate.crypto.keys import KeyRing
from authgate.store import Store
from authgate.trust import mandates, wire
from authgate.trust.attestations import Requirement, issue_attestation
from authgate.trust.budgets import BudgetGuard
from authgate.trust.issuers import TrustedIssuers
from authgate.trust.killswitch import KillSwitch
from authgate.trust.mandates import MandateVerifier, Terms
from authgate.trust.paywall import PaymentTrustGuard
from authgate.trust.periods import period_key
from authgate.trust.store import TrustStore
from tests.x402.test_paywall import NETWORK, PAYEE, LedgerFacilitator, agent, client, make_app, payer_wallet

from .conftest import ISSUER

PRICE = 10_000  # "$0.01" in USDC atomic units


def _app(fac: LedgerFacilitator, guard: PaymentTrustGuard) -> FastAPI:
    app, paywall, _ = make_app(fac)
    paywall.guard = guard
    return app


@pytest.fixture
def approvals(store: Store, clock: FrozenClock) -> ApprovalService:
    return ApprovalService(store, clock)


def _err(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 403, (r.status_code, r.text)
    return dict(r.json())


async def test_budget_within_over_approved_denied(trust: TrustStore, clock: FrozenClock,
                                                  approvals: ApprovalService) -> None:
    fac = LedgerFacilitator()
    wallet = payer_wallet(fac)
    payer = wallet.address.lower()
    await trust.set_budget(payer, per_day=2 * PRICE, approver="alice")
    guard = PaymentTrustGuard(trust, clock, budgets=BudgetGuard(trust, clock, approvals))
    # approval_timeout=None: the SDK hands the pending answer back (its waiting is tested in
    # tests/x402/test_agent_server_approval.py); here the test plays the agent's repeats by hand
    sdk = X402PaymentAuth(wallet, Budget(), networks={NETWORK}, approval_timeout=None)
    async with client(_app(fac, guard), sdk) as http:
        assert (await http.get("/weather")).status_code == 200
        assert (await http.get("/weather")).status_code == 200
        verifies = fac.verify_calls
        over = _err(await http.get("/weather"))
        assert over["error"] == wire.ERR_BUDGET_PENDING and fac.verify_calls == verifies
        request = await approvals.get(over["approval_id"])
        assert request is not None and request.subject == "alice" and request.kind == "budget"
        await approvals.decide(over["approval_id"], True, by="alice", channel="web")
        again = {wire.APPROVAL_HEADER: over["approval_id"]}
        assert (await http.get("/weather", headers=again)).status_code == 200
        assert _err(await http.get("/weather", headers=again))["error"] == wire.ERR_BUDGET_EXCEEDED  # used once
        second = _err(await http.get("/weather"))
        await approvals.decide(second["approval_id"], False, by="alice", channel="web")
        denied = _err(await http.get("/weather", headers={wire.APPROVAL_HEADER: second["approval_id"]}))
        assert denied["error"] == wire.ERR_BUDGET_DENIED
    assert fac.settle_calls == 3
    assert await trust.spent(payer, period_key("day", clock.now())) == 3 * PRICE


async def test_failed_payment_is_not_counted(trust: TrustStore, clock: FrozenClock) -> None:
    fac = LedgerFacilitator()
    wallet = payer_wallet(fac, balance=5)  # too poor: /verify refuses
    guard = PaymentTrustGuard(trust, clock, budgets=BudgetGuard(trust, clock))
    async with client(_app(fac, guard)) as http:
        from tests.x402.test_paywall import required_of, signed_header

        (offer,) = required_of(await http.get("/weather")).accepts
        r = await http.get("/weather", headers={"PAYMENT-SIGNATURE": signed_header(wallet, offer)})
    assert r.status_code == 402 and fac.verify_calls == 1
    assert await trust.spent(wallet.address.lower(), period_key("day", clock.now())) == 0


async def test_mandate_at_the_paywall(trust: TrustStore, clock: FrozenClock, keys: KeyRing,
                                      issuers: TrustedIssuers) -> None:
    fac = LedgerFacilitator()
    wallet = payer_wallet(fac)
    verifier = MandateVerifier(issuers, revoked=mandates.store_revocations(trust), trust=trust)
    guard = PaymentTrustGuard(trust, clock, mandates=verifier, require_mandate=True)

    async def mandate(**terms: Any) -> tuple[str, str]:
        t = {"routes": ("GET /weather",), "payees": (PAYEE,), "cap_amount": 2 * PRICE, **terms}
        token, row = await mandates.issue(keys, trust, issuer=ISSUER, subject="alice", agent=wallet.address,
                                          terms=Terms(**t))
        return token, row.jti

    good, jti = await mandate()
    async with client(_app(fac, guard), agent(wallet)) as http:
        assert _err(await http.get("/weather"))["error"] == wire.ERR_MANDATE_INVALID  # required, absent
        assert (await http.get("/weather", headers={wire.MANDATE_HEADER: good})).status_code == 200
        assert await trust.spent(f"mandate:{jti}", period_key("day", clock.now())) == PRICE
        for terms, code in (({"routes": ("GET /other",)}, wire.ERR_MANDATE_ROUTE),
                            ({"payees": ("0x" + "99" * 20,)}, wire.ERR_MANDATE_PAYEE),
                            ({"cap_amount": PRICE - 1}, wire.ERR_MANDATE_AMOUNT)):
            token, _ = await mandate(**terms)
            assert _err(await http.get("/weather", headers={wire.MANDATE_HEADER: token}))["error"] == code
        assert (await http.get("/weather", headers={wire.MANDATE_HEADER: good})).status_code == 200
        capped = _err(await http.get("/weather", headers={wire.MANDATE_HEADER: good}))
        assert capped["error"] == wire.ERR_MANDATE_AMOUNT  # 2 payments per day
        revoked, revoked_jti = await mandate()
        await trust.revoke_mandate(revoked_jti)
        assert _err(await http.get("/weather", headers={wire.MANDATE_HEADER: revoked}))["error"] == \
            wire.ERR_MANDATE_REVOKED
        forged = good[:-8] + ("AAAAAAAA" if not good.endswith("AAAAAAAA") else "BBBBBBBB")
        assert _err(await http.get("/weather", headers={wire.MANDATE_HEADER: forged}))["error"] == \
            wire.ERR_MANDATE_UNTRUSTED
    assert fac.settle_calls == 2 and fac.verify_calls == 2


async def test_killed_payer_and_attestations(trust: TrustStore, clock: FrozenClock, keys: KeyRing,
                                             issuers: TrustedIssuers) -> None:
    fac = LedgerFacilitator()
    wallet = payer_wallet(fac)
    switch = KillSwitch(trust)
    guard = PaymentTrustGuard(trust, clock, killswitch=switch, issuers=issuers,
                              attestations={"/weather": Requirement({"verified_adult": True})})
    attestation = await issue_attestation(keys, issuer=ISSUER, agent=wallet.address,
                                          claims={"verified_adult": True}, ttl=600, now=int(clock.now()))
    other = await issue_attestation(keys, issuer=ISSUER, agent="0x" + "11" * 20, claims={"verified_adult": True},
                                    ttl=600, now=int(clock.now()))
    with_att = {wire.ATTESTATION_HEADER: attestation}
    async with client(_app(fac, guard), agent(wallet)) as http:
        assert _err(await http.get("/weather"))["error"] == wire.ERR_ATTESTATION_MISSING
        assert _err(await http.get("/weather", headers={wire.ATTESTATION_HEADER: other}))["error"] == \
            wire.ERR_ATTESTATION_SUBJECT
        assert (await http.get("/weather", headers=with_att)).status_code == 200
        await switch.kill("agent", wallet.address)
        assert _err(await http.get("/weather", headers=with_att))["error"] == wire.ERR_KILLED
        await switch.revive("agent", wallet.address)
        assert (await http.get("/weather", headers=with_att)).status_code == 200
    assert fac.settle_calls == 2


async def test_the_sdk_attaches_its_mandate_and_the_paywall_counts_the_payment_against_it(
        trust: TrustStore, clock: FrozenClock, keys: KeyRing, issuers: TrustedIssuers) -> None:
    fac = LedgerFacilitator()
    wallet = payer_wallet(fac)
    verifier = MandateVerifier(issuers, revoked=mandates.store_revocations(trust), trust=trust)
    guard = PaymentTrustGuard(trust, clock, mandates=verifier, require_mandate=True)
    terms = Terms(("GET /weather",), (PAYEE,), 3 * PRICE)
    token, row = await mandates.issue(keys, trust, issuer=ISSUER, subject="alice", agent=wallet.address, terms=terms)
    elsewhere, _ = await mandates.issue(keys, trust, issuer=ISSUER, subject="alice", agent=wallet.address,
                                        terms=Terms(("GET /weather",), ("0x" + "99" * 20,), 3 * PRICE))
    sent: list[httpx.Request] = []

    async def record(request: httpx.Request) -> None:
        sent.append(request)

    async with client(_app(fac, guard), X402PaymentAuth(wallet, Budget(), networks={NETWORK}, mandate=token)) as http:
        http.event_hooks["request"].append(record)
        assert (await http.get("/weather")).status_code == 200
    assert sent[-1].headers[wire.MANDATE_HEADER] == token
    assert await trust.spent(f"mandate:{row.jti}", period_key("day", clock.now())) == PRICE
    # A mandate goes only to a payee it names: this one is not sent, and the paywall that requires one refuses.
    async with client(_app(fac, guard), X402PaymentAuth(wallet, Budget(), networks={NETWORK},
                                                        mandate=elsewhere)) as http:
        http.event_hooks["request"].append(record)
        assert _err(await http.get("/weather"))["error"] == wire.ERR_MANDATE_INVALID
    assert wire.MANDATE_HEADER not in sent[-1].headers
    assert fac.settle_calls == 1
    with pytest.raises(ValueError, match="not an authgate mandate"):
        X402PaymentAuth(wallet, Budget(), networks={NETWORK}, mandate="not.a.jwt")


def test_the_proved_identity_comes_from_the_policy_the_resource_middleware_or_agent_auth() -> None:
    from types import MappingProxyType

    from authgate.agentauth import wire as aa_wire
    from authgate.policy.identity import PRESENTED_KEY, Identity
    from authgate.resource.verifier import AccessClaims
    from authgate.trust.paywall import proved_identity

    agent_call = {"typ": aa_wire.TYP_AGENT, "claims": {"sub": "aauth:bot@ps.example"}, "jkt": "j1"}
    person_call = {"typ": aa_wire.TYP_PERSON, "claims": {"sub": "pairwise-7"}, "jkt": "j2"}
    claims = AccessClaims(subject="alice", client_id="c-1", scopes=frozenset(), audience="a", issuer="i",
                          expires_at=0, issued_at=0, token_id="t", claims=MappingProxyType({}))
    assert proved_identity({"state": {"agentauth": agent_call}}) == Identity("agentauth", agent="aauth:bot@ps.example")
    assert proved_identity({"state": {"agentauth": person_call}}) == Identity(
        "agentauth", subject="pairwise-7", agent="urn:ietf:params:oauth:jwk-thumbprint:sha-256:j2")
    assert proved_identity({"state": {"authgate": claims}}) == Identity("oauth", subject="alice", agent="c-1")
    presented = Identity("agentauth", agent="a-9")
    assert proved_identity({"state": {PRESENTED_KEY: presented, "authgate": claims}}) is presented
    assert proved_identity({"state": {"agentauth": {"typ": aa_wire.TYP_AGENT, "claims": "junk"}}}) is None
    assert proved_identity({}) is None


async def test_behind_agent_auth_resource_the_budget_is_the_agents(trust: TrustStore, clock: FrozenClock) -> None:
    """AgentAuthResource in front of the paywall leaves its caller in ``state["agentauth"]``: the budget charged
    is the agent's, not its wallet's (the middleware is stood in for: its checks are tests/agentauth')."""
    from authgate.agentauth import wire as aa_wire

    fac = LedgerFacilitator()
    wallet = payer_wallet(fac)
    await trust.set_budget("aauth:bot@ps.example", per_day=PRICE)
    inner = _app(fac, PaymentTrustGuard(trust, clock, budgets=BudgetGuard(trust, clock)))

    async def as_agent_auth_resource(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope.setdefault("state", {})["agentauth"] = {
                "typ": aa_wire.TYP_AGENT, "claims": {"sub": "aauth:bot@ps.example"}, "jkt": "j1"}
        await inner(scope, receive, send)

    async with client(as_agent_auth_resource, agent(wallet)) as http:
        assert (await http.get("/weather")).status_code == 200
        assert _err(await http.get("/weather"))["error"] == wire.ERR_BUDGET_EXCEEDED
    day = period_key("day", clock.now())
    assert await trust.spent("aauth:bot@ps.example", day) == PRICE
    assert await trust.spent(wallet.address.lower(), day) == 0
