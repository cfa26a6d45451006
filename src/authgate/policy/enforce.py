"""Enforcing a :class:`~authgate.policy.model.Policy`: a pure ASGI middleware shared by Starlette/FastAPI apps
and the gateway.

    app = PolicyMiddleware(api, policy, bearer=BearerGuard(verifier, resource),
                           agentauth=AgentAuthResource(..., rules=[]), facilitator=client,
                           base_url="https://api.example")

Per request: the first route that matches decides (none: ``policy.unmatched``). Its alternatives are tried in
order; an alternative is tried only when the request carries its credential — ``Authorization: Bearer`` for
``oauth``/``aauth``, ``Signature``/``Signature-Input``/``Signature-Key`` for ``agentauth``,
``PAYMENT-SIGNATURE``/``SIGN-IN-WITH-X`` for ``x402`` — and the first satisfied one lets the request in, with
an :class:`~authgate.policy.identity.Identity` in ``scope["state"]["authgate.identity"]``. A bearer token is
verified once and a signature checked once per request, whatever the number of alternatives.

A payment is decisive: once the x402 alternative is reached with a payment, the request is the paywall's
(:class:`~authgate.x402.paywall.PaywallMiddleware`: verify, serve, settle only if the answer is below 400; or
settle first with ``flow = "upfront"``); a refused payment gets the paywall's 402, to which the other
challenges are added.

**The combined challenge.** A request satisfying no alternative gets one answer advertising every alternative
of its route: ``WWW-Authenticate: Bearer resource_metadata=…, scope=…`` (oauth/aauth), ``AAuth-Requirement``
(agentauth; ``requirement=auth-token; resource-token=…`` when a person token lacked scopes) and
``PAYMENT-REQUIRED`` (x402). **Status rule**: when the request presented a credential that failed, the status
and body of the first such failure in alternative order (``401 invalid_token``, ``403 insufficient_scope``,
``401`` + ``Signature-Error``, ...); otherwise ``402`` if the route's *first* alternative is x402, else ``401``.
Peers act on their own status: OAuth and Agent Auth clients on 401 (and 403 for scope step-up), x402 clients
on 402 — so put first the way in most of your callers use. Every challenge header is present either way, so a
client that reads headers whatever the status (our SDK, the x402 SDK's ``x402HTTPClient``) finds its part.

**Trust** (``trust=TrustChecks(...)``, authgate.trust.checks). A route's ``attestation`` is checked once an
alternative let the request in (``403 attestation_*``) and, for a payment, before ``/verify``; every challenge
and refusal of such a route carries ``Authgate-Attestation-Required``. With a kill switch, a killed Agent Auth
caller is ``401 revoked_jwt``. Before a payment, the bearer token or Agent Auth signature the request also
carries (for an alternative of its route) is verified, so budgets, mandates and attestations apply to that
identity (``scope["state"]["authgate.presented"]``); a payment presented with a killed credential is
``403 agent_disabled``, whatever wallet pays.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from authgate.agentauth import wire as aa_wire
from authgate.agentauth.errors import Problem
from authgate.agentauth.resource import JWKS_PATH, AgentAuthResource, require
from authgate.agentauth.signing import Caller
from authgate.agentauth.tokens import scopes_of
from authgate.crypto.httpsig import SignatureError
from authgate.errors import InsufficientScope, InvalidToken, OAuthError, bearer_challenge
from authgate.ops.decisions import ROUTE_KEY, Tally, outcome_of
from authgate.policy.identity import ALTERNATIVE_KEY, PRESENTED_KEY, STATE_KEY, Identity, agentauth_identity
from authgate.policy.model import X402, AAuth, AgentAuth, Alternative, OAuth, Policy, PolicyError, Route
from authgate.resource.bearer import BearerGuard, TemporarilyUnavailable
from authgate.resource.metadata import AAUTH_WELL_KNOWN, advertisable
from authgate.resource.middleware import STATE_KEY as CLAIMS_STATE_KEY
from authgate.resource.middleware import MetadataEndpoint, token_in_query
from authgate.resource.verifier import AccessClaims, TokenRejected, VerifierUnavailable
from authgate.trust import wire as trust_wire
from authgate.trust.attestations import encode_requirement
from authgate.trust.errors import STORE_ERRORS, TrustError, unavailable
from authgate.x402 import wire as x402_wire
from authgate.x402.paywall import EXPOSE, Facilitator, Paywall, PaywallMiddleware, PricedRoute
from authgate.x402.paywall_store import PaywallStore

if TYPE_CHECKING:
    from authgate.ops.metrics import Metrics
    from authgate.trust.checks import TrustChecks

MAX_SIGNED_BODY = 1024 * 1024
TIERS = {"pii": ("pii", "oob"), "oob": ("oob",)}
_SIGNATURE_HEADERS = (b"signature", b"signature-input", b"signature-key")
_PAYMENT_HEADERS = (b"payment-signature", b"sign-in-with-x")
_ODD_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")


class InsufficientUserAuthentication(OAuthError):
    """The token is valid but was not obtained the way the route requires (RFC 9470 §3): here, an AAuth
    tier — a token that is not from the agent grant, or ``pii`` where ``oob`` (customer approval) is needed."""

    error = "insufficient_user_authentication"
    status_code = 401


@dataclass
class _Attempt:
    """One request's evaluation: credentials verified once, failures kept in alternative order."""

    token: str | None = None
    claims: AccessClaims | None = None
    bearer_failure: OAuthError | None = None
    caller: Caller | None = None
    signature_failure: SignatureError | Problem | None = None
    #: A presented credential was refused by the kill switch (a payment with it is refused too).
    killed: bool = False
    failures: list[tuple[Alternative, int, dict[str, str], bytes]] = field(default_factory=list)


class PolicyMiddleware:
    """Applies ``policy`` in front of ``app`` (see the module docstring). Mechanisms the policy names must be
    configured: ``bearer`` for oauth/aauth, ``agentauth`` for agentauth (its own ``rules`` are not used),
    ``facilitator`` and ``base_url`` (the public origin, for x402 resource URLs) for x402; routes with an
    ``attestation`` need ``trust`` with issuers that include every issuer they name. ``metrics``: where
    each request's access decision is counted (:mod:`authgate.ops.decisions`; payments by the route's paywall,
    with their settlements). ``siwx_key``: the key of x402 sign-in challenges (default: a fresh one), kept
    across a rebuilt middleware so that a gateway reload does not void sign-ins in progress."""

    def __init__(self, app: ASGIApp, policy: Policy, *, bearer: BearerGuard | None = None,
                 agentauth: AgentAuthResource | None = None, facilitator: Facilitator | None = None,
                 base_url: str | None = None, paywall_store: PaywallStore | None = None,
                 max_signed_body: int = MAX_SIGNED_BODY, trust: TrustChecks | None = None,
                 metrics: Metrics | None = None, siwx_key: bytes | None = None) -> None:
        self.app = app
        self.policy = policy
        self.bearer = bearer
        self.agentauth = agentauth
        self.max_signed_body = max_signed_body
        self.trust = trust
        self.metrics = metrics
        trusted = set(trust.issuers.issuers()) if trust is not None and trust.issuers is not None else None
        for i, route in enumerate(policy.routes):
            if route.attestation is None:
                continue
            if trusted is None:
                raise PolicyError(f"routes[{i}] ({route.label}): attestation: no attestation issuers are trusted "
                                  "(configure trusted issuers: [trust.issuers] in a gateway file)")
            for issuer in route.attestation.issuers:
                if issuer not in trusted:
                    raise PolicyError(f"routes[{i}] ({route.label}): attestation: issuer {issuer!r} is not a "
                                      "trusted issuer ([trust.issuers])")
        need = {"oauth": bearer, "aauth": bearer, "agentauth": agentauth, "x402": facilitator}
        section = {"oauth": "[oauth]", "aauth": "[oauth]", "agentauth": "[agentauth]", "x402": "[x402]"}
        for i, route in enumerate(policy.routes):
            for k, alt in enumerate(route.alternatives):
                if alt.mechanism in need and need[alt.mechanism] is None:
                    raise PolicyError(f"routes[{i}] ({route.label}): allow[{k}] ({alt.mechanism}): the "
                                      f"{alt.mechanism} mechanism is not configured ({section[alt.mechanism]})")
        self.paywalls: dict[int, tuple[Paywall, PricedRoute, ASGIApp]] = {}
        if facilitator is not None and any(r.payment() for r in policy.routes):
            if base_url is None:
                raise PolicyError("x402 routes need base_url (the public origin agents call)")
            siwx_key = siwx_key or secrets.token_bytes(32)
            store = paywall_store
            for route in policy.routes:
                pay = route.payment()
                if pay is None:
                    continue
                guard = trust.payment_guard(route.attestation) if trust is not None else None
                paywall = Paywall(facilitator, base_url=base_url, store=store, siwx_key=siwx_key, guard=guard,
                                  metrics=metrics)
                store = paywall.store  # one store shared by every route
                priced = paywall.route("/*", pay.price_spec(), pay.pay_to, pay.network, description=pay.description,
                                       max_timeout_seconds=pay.max_timeout_seconds, upfront=pay.flow == "upfront")
                self.paywalls[id(route)] = (paywall, priced, PaywallMiddleware(self._paid, paywall))
        self.metadata = MetadataEndpoint(bearer.resource) if bearer is not None else None
        descriptions = dict(policy.scope_descriptions)
        if bearer is not None and bearer.resource.scope_descriptions:
            descriptions = {**bearer.resource.scope_descriptions, **descriptions}
        self.aauth_document = MetadataEndpoint(bearer.resource, document={"scope_descriptions": [
            {"scope": s, "description": d} for s, d in descriptions.items()]}) if bearer and descriptions else None

    # -- ASGI -------------------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if kind == "http" and await self._well_known(path, scope, receive, send):
            return  # public documents, not an access decision
        tally = Tally(self.metrics, scope)
        try:
            await self._judge(scope, receive, send, tally)
        except BaseException:
            if not tally.done:  # raised while deciding (not in the app after it was let in)
                tally.record("none", "error")
            raise

    async def _judge(self, scope: Scope, receive: Receive, send: Send, tally: Tally) -> None:
        kind = scope["type"]
        path: str = scope["path"]
        method: str = scope.get("method", "GET").upper() if kind == "http" else "GET"
        if not normal_path(scope):
            tally.record("none", "denied")
            await _answer(scope, send, 400, {"Content-Type": "application/json", "Cache-Control": "no-store"},
                          b'{"error":"invalid_request","error_description":"Path not in normal form"}')
            return
        state = scope.setdefault("state", {})
        route = self.policy.route_for(method, path)
        preflight = kind == "http" and method == "OPTIONS" and _header(scope, b"access-control-request-method")
        if preflight and (self.policy.unmatched == "public" or self.policy.route_for(
                str(_header(scope, b"access-control-request-method")).upper(), path) is not None):
            tally.record("public", "allowed")
            await self.app(scope, receive, send)  # CORS preflight of a route we serve: browsers send no credentials
            return
        if route is None:
            if self.policy.unmatched == "public":
                state[STATE_KEY] = Identity("public")
                tally.record("public", "allowed")
                await self.app(scope, receive, send)
                return
            tally.record("none", "denied")
            body = json.dumps({"error": "access_denied", "error_description": "No route policy covers this "
                                                                              "request"}).encode()
            await _answer(scope, send, 403, {"Content-Type": "application/json", "Cache-Control": "no-store"}, body)
            return
        state[ROUTE_KEY] = route.label
        if route.alternatives[0].mechanism == "public":
            state[STATE_KEY] = Identity("public")
            tally.record("public", "allowed")
            await self.app(scope, receive, send)
            return
        if kind == "websocket":
            await self._websocket(scope, receive, send, route, method, tally)
            return

        body = b""
        if self.agentauth is not None and _has(scope, _SIGNATURE_HEADERS) and any(
                isinstance(a, AgentAuth) for a in route.alternatives):
            body, too_large = await _read_body(receive, self.max_signed_body)
            if too_large:
                tally.record("agentauth", "denied")
                await _answer(scope, send, 413, {"Content-Type": "application/json"},
                              b'{"error":"invalid_request","error_description":"Signed request body too large"}')
                return
            receive = _replay(body, receive)

        attempt = _Attempt()
        for alt in route.alternatives:
            if isinstance(alt, X402):
                if _has(scope, _PAYMENT_HEADERS):
                    # the paywall records the decision (this middleware, when it answers before the paywall)
                    await self._pay(scope, receive, send, route, attempt, method, path, body, tally)
                    return
                continue
            try:
                identity = await self._try(alt, scope, method, path, body, attempt)
            except TemporarilyUnavailable as exc:
                tally.record(alt.mechanism, "error")
                status, headers, payload = exc.render()
                await _answer(scope, send, status, headers, payload)
                return
            if identity is not None:
                if route.attestation is not None and not await self._attested(scope, send, route, identity, tally):
                    return
                state[STATE_KEY] = identity
                state[ALTERNATIVE_KEY] = alt
                if attempt.claims is not None and identity.mechanism in ("oauth", "aauth"):
                    state[CLAIMS_STATE_KEY] = attempt.claims
                tally.record(identity.mechanism, "allowed")
                await self.app(scope, receive, send)
                return
        status, headers, payload = self.challenge(route, attempt, path)
        tally.record(attempt.failures[0][0].mechanism if attempt.failures else "none", outcome_of(status, headers))
        await _answer(scope, send, status, headers, payload)

    async def _well_known(self, path: str, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer the documents this middleware serves itself; each is labelled with its path (one of these fixed
        paths, never one a client chose) for the metrics and the access log, not counted as ``<unmatched>``."""
        if self.metadata is not None and self.bearer is not None and path == self.bearer.resource.metadata_path:
            document: ASGIApp = self.metadata
        elif self.aauth_document is not None and path == AAUTH_WELL_KNOWN:
            document = self.aauth_document
        elif self.agentauth is not None and path in (aa_wire.WELL_KNOWN + aa_wire.DWK_RESOURCE, JWKS_PATH):
            document = self.agentauth  # serves both documents itself
        else:
            return False
        scope.setdefault("state", {})[ROUTE_KEY] = path
        await document(scope, receive, send)
        return True

    # -- alternatives -----------------------------------------------------------------------------------------

    async def _try(self, alt: Alternative, scope: Scope, method: str, path: str, body: bytes,
                   attempt: _Attempt) -> Identity | None:
        if isinstance(alt, (OAuth, AAuth)):
            return await self._try_bearer(alt, scope, attempt)
        if isinstance(alt, AgentAuth):
            return await self._try_agentauth(alt, scope, method, path, body, attempt)
        return None

    async def _verify_bearer(self, scope: Scope, attempt: _Attempt) -> None:
        """Extract and verify the bearer token once per request (claims or failure kept in ``attempt``)."""
        guard = self.bearer
        assert guard is not None
        if attempt.bearer_failure is None and attempt.claims is None:
            try:
                attempt.token = guard.extract(_headers(scope, b"authorization"), token_in_query=token_in_query(scope))
            except OAuthError as exc:
                attempt.bearer_failure = exc
            if attempt.token is not None:
                try:
                    attempt.claims = await guard.verifier.verify(attempt.token)
                except TokenRejected as exc:
                    attempt.killed = attempt.killed or exc.reason == "killed"
                    attempt.bearer_failure = InvalidToken("The access token is invalid", debug=str(exc))
                except VerifierUnavailable as exc:
                    raise TemporarilyUnavailable("Token verification is temporarily unavailable", debug=str(exc),
                                                 headers={"Retry-After": "5"}) from exc

    async def _try_bearer(self, alt: OAuth | AAuth, scope: Scope, attempt: _Attempt) -> Identity | None:
        await self._verify_bearer(scope, attempt)
        if attempt.bearer_failure is not None:
            self._fail(attempt, alt, attempt.bearer_failure, alt.scopes)
            return None
        claims = attempt.claims
        if claims is None:
            return None  # no bearer token presented
        if isinstance(alt, AAuth):
            amr = claims.claims.get("amr")
            act = claims.claims.get("act")
            agent = act.get("sub") if isinstance(act, dict) else None
            if not isinstance(amr, list) or not isinstance(agent, str) or not any(
                    m in amr for m in TIERS[alt.tier]):
                self._fail(attempt, alt, InsufficientUserAuthentication(
                    "The token does not come from the agent authorization grant at the tier this route needs"),
                    alt.scopes)
                return None
            if not claims.has_scopes(alt.scopes):
                self._fail(attempt, alt, InsufficientScope("The access token lacks a required scope"), alt.scopes)
                return None
            return Identity("aauth", subject=claims.subject, agent=agent, scopes=tuple(sorted(claims.scopes)),
                            tier="oob" if "oob" in amr else "pii")
        if not claims.has_scopes(alt.scopes):
            self._fail(attempt, alt, InsufficientScope("The access token lacks a required scope"), alt.scopes)
            return None
        return Identity("oauth", subject=claims.subject, agent=claims.client_id, scopes=tuple(sorted(claims.scopes)))

    def _fail(self, attempt: _Attempt, alt: Alternative, exc: OAuthError, scopes: tuple[str, ...]) -> None:
        assert self.bearer is not None
        params = {"error": exc.error, "resource_metadata": self.bearer.resource.metadata_url}
        if scope_param := " ".join(advertisable(scopes) or self.bearer.resource.scopes_supported):
            params["scope"] = scope_param
        if exc.error == "invalid_request" and "WWW-Authenticate" in exc.headers:
            header = exc.headers["WWW-Authenticate"]
        else:
            header = bearer_challenge(params)
        status, headers, body = exc.render()
        attempt.failures.append((alt, status, {**headers, "WWW-Authenticate": header}, body))

    async def _try_agentauth(self, alt: AgentAuth, scope: Scope, method: str, path: str, body: bytes,
                             attempt: _Attempt) -> Identity | None:
        resource = self.agentauth
        assert resource is not None
        if not _has(scope, _SIGNATURE_HEADERS):
            return None
        await self._verify_signature(scope, method, path, body, attempt)
        if attempt.signature_failure is not None:
            status, headers, payload = attempt.signature_failure.render()
            attempt.failures.append((alt, status, headers, payload))
            return None
        caller = attempt.caller
        assert caller is not None
        typ = caller.typ
        have = scopes_of(caller.claims) if typ == aa_wire.TYP_AUTH else frozenset()
        identity = agentauth_identity(typ, caller.claims, caller.jkt, tuple(sorted(have)))
        if alt.need == "agent":
            return identity
        if typ == aa_wire.TYP_AGENT:
            problem = Problem(401, aa_wire.REQ_PERSON_TOKEN, "a person token is required", headers={
                aa_wire.H_REQUIREMENT: aa_wire.requirement_header(aa_wire.REQ_PERSON_TOKEN)})
        elif alt.need == "person" or set(alt.scopes) <= have:
            return identity
        else:
            token = resource.resource_token(caller, alt.scopes)
            problem = Problem(401, aa_wire.E_INSUFFICIENT_SCOPE, "an auth token with more scope is required",
                              headers={aa_wire.H_REQUIREMENT: aa_wire.requirement_header(
                                  aa_wire.REQ_AUTH_TOKEN, resource_token=token)})
        status, headers, payload = problem.render()
        attempt.failures.append((alt, status, headers, payload))
        return None

    async def _verify_signature(self, scope: Scope, method: str, path: str, body: bytes, attempt: _Attempt) -> None:
        """Check the Agent Auth signature, token and replay once per request, then the kill switch."""
        resource = self.agentauth
        assert resource is not None
        if attempt.caller is not None or attempt.signature_failure is not None:
            return
        try:  # the need is judged per alternative by the caller
            caller = await resource.check(scope, method, body, require(path, "agent"))
        except (SignatureError, Problem) as exc:
            attempt.signature_failure = exc
            return
        if self.trust is not None and self.trust.killswitch is not None:
            jti = caller.claims.get("jti")
            try:
                killed = await self.trust.killed(agentauth_identity(caller.typ, caller.claims, caller.jkt),
                                                 token_id=jti if isinstance(jti, str) else None)
            except STORE_ERRORS as exc:
                raise TemporarilyUnavailable("The kill switch cannot be read right now", debug=repr(exc),
                                             headers={"Retry-After": "5"}) from None
            if killed:
                attempt.killed = True
                attempt.signature_failure = SignatureError("revoked_jwt", "the agent is disabled", reason="killed")
                return
        attempt.caller = caller

    async def _attested(self, scope: Scope, send: Send, route: Route, identity: Identity, tally: Tally) -> bool:
        """Check the route's attestation for an identity an alternative let in; answer (and count) the refusal
        if not."""
        assert self.trust is not None and route.attestation is not None
        try:
            await self.trust.attest(scope, route.attestation, [identity.agent])
        except TrustError as exc:
            refusal = exc
        except STORE_ERRORS:
            refusal = unavailable()
        else:
            return True
        tally.record(identity.mechanism, outcome_of(refusal.status, refusal.headers))
        expose = ", ".join(refusal.headers)
        await _answer(scope, send, refusal.status, {"Content-Type": "application/json", "Cache-Control": "no-store",
                                                    **refusal.headers, "Access-Control-Expose-Headers": expose},
                      json.dumps(refusal.body()).encode())
        return False

    async def _websocket(self, scope: Scope, receive: Receive, send: Send, route: Route, method: str,
                         tally: Tally) -> None:
        """WebSockets carry bearer tokens only (no signed bodies, no payments)."""
        attempt = _Attempt()
        down = None
        for alt in route.alternatives:
            if isinstance(alt, (OAuth, AAuth)):
                try:
                    identity = await self._try_bearer(alt, scope, attempt)
                except TemporarilyUnavailable:
                    identity, down = None, alt.mechanism
                if identity is not None:
                    if route.attestation is not None:
                        assert self.trust is not None
                        try:
                            await self.trust.attest(scope, route.attestation, [identity.agent])
                        except TrustError:
                            tally.record(identity.mechanism, "denied")
                            break
                        except STORE_ERRORS:
                            tally.record(identity.mechanism, "error")
                            break
                    scope.setdefault("state", {})[STATE_KEY] = identity
                    tally.record(identity.mechanism, "allowed")
                    await self.app(scope, receive, send)
                    return
        if tally.done:  # an alternative let it in, the route's attestation did not: counted above
            pass
        elif down is not None:
            tally.record(down, "error")
        else:  # a closed socket is no challenge a client can answer
            tally.record(attempt.failures[0][0].mechanism if attempt.failures else "none", "denied")
        await send({"type": "websocket.close", "code": 1008, "reason": "unauthorized"})

    # -- payment ----------------------------------------------------------------------------------------------

    async def _pay(self, scope: Scope, receive: Receive, send: Send, route: Route, attempt: _Attempt, method: str,
                   path: str, body: bytes, tally: Tally) -> None:
        """Hand the request to the route's paywall; a 402 it answers before serving gets the other challenges.
        With trust checks, first learn who else the request says it is (its bearer token or signature); a
        refusal answered here is counted here (the paywall counts its own)."""
        if self.trust is not None:
            try:
                presented = await self._presented(route, scope, method, path, body, attempt)
            except TemporarilyUnavailable as exc:
                tally.record("x402", "error")
                status, headers, payload = exc.render()
                await _answer(scope, send, status, headers, payload)
                return
            if attempt.killed:
                refusal = TrustError(trust_wire.ERR_KILLED, "the credential presented with this payment is disabled "
                                     "by the kill switch")
                tally.record("x402", "denied")
                await _answer(scope, send, refusal.status, {"Content-Type": "application/json",
                                                            "Cache-Control": "no-store"},
                              json.dumps(refusal.body()).encode())
                return
            if presented is not None:
                scope.setdefault("state", {})[PRESENTED_KEY] = presented
        _, _, middleware = self.paywalls[id(route)]
        served = {"started": False}
        scope.setdefault("state", {})["authgate.served"] = served
        extra = {k: v for k, v in self._challenge_headers(route, attempt, scope["path"], with_payment=False).items()
                 if k != "Access-Control-Expose-Headers"}

        async def send_with_challenges(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 402 and not served["started"]:
                headers = list(message.get("headers", ()))
                headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()]
                message = {**message, "headers": headers}
            await send(message)

        await middleware(scope, receive, send_with_challenges)

    async def _presented(self, route: Route, scope: Scope, method: str, path: str, body: bytes,
                         attempt: _Attempt) -> Identity | None:
        """The identity a paying request proved besides paying: the first credential it carries for one of the
        route's other alternatives that verifies (bearer: the client; Agent Auth: the agent and person)."""
        for alt in route.alternatives:
            if isinstance(alt, (OAuth, AAuth)) and self.bearer is not None and (
                    _has(scope, (b"authorization",)) or token_in_query(scope)):
                await self._verify_bearer(scope, attempt)
                if attempt.claims is not None:
                    c = attempt.claims
                    return Identity("oauth", subject=c.subject, agent=c.client_id, scopes=tuple(sorted(c.scopes)))
            elif isinstance(alt, AgentAuth) and self.agentauth is not None and _has(scope, _SIGNATURE_HEADERS):
                await self._verify_signature(scope, method, path, body, attempt)
                if attempt.caller is not None:
                    return agentauth_identity(attempt.caller.typ, attempt.caller.claims, attempt.caller.jkt)
        return None

    async def _paid(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Inside the paywall: the payment is verified (or settled, upfront); record who paid and serve."""
        state = scope.setdefault("state", {})
        state["authgate.served"]["started"] = True
        payment = state.get("x402")
        requirements = getattr(payment, "requirements", None)
        receipt = getattr(payment, "receipt", None)
        state[STATE_KEY] = Identity(
            "x402", payer=getattr(payment, "payer", None),
            network=requirements.network if requirements else None,
            amount=requirements.amount if requirements else None,
            asset=requirements.asset if requirements else None,
            transaction=receipt.transaction if receipt is not None and receipt.transaction else None)
        await self.app(scope, receive, send)

    # -- the combined challenge -------------------------------------------------------------------------------

    def challenge(self, route: Route, attempt: _Attempt, path: str) -> tuple[int, dict[str, str], bytes]:
        """The one answer for a request no alternative let in (status rule in the module docstring)."""
        headers = self._challenge_headers(route, attempt, path, with_payment=True)
        if attempt.failures:
            _, status, failure_headers, body = attempt.failures[0]
            merged = {**failure_headers, **{k: v for k, v in headers.items() if k not in failure_headers}}
            return status, merged, body
        first = route.alternatives[0]
        status = 402 if isinstance(first, X402) else 401
        kinds = list(dict.fromkeys(a.mechanism for a in route.alternatives))
        document = {"error": "payment_required" if status == 402 else "unauthorized",
                    "error_description": "This route needs one of: " + ", ".join(kinds), "accepted": kinds}
        return status, {"Content-Type": "application/json", "Cache-Control": "no-store", **headers}, \
            json.dumps(document).encode()

    def _challenge_headers(self, route: Route, attempt: _Attempt, path: str, *,
                           with_payment: bool) -> dict[str, str]:
        headers: dict[str, str] = {}
        for _alt, _, failure_headers, _ in attempt.failures:  # the failure's own challenge wins
            for name in ("WWW-Authenticate", aa_wire.H_REQUIREMENT, aa_wire.H_SIGNATURE_ERROR):
                if name in failure_headers:
                    headers.setdefault(name, failure_headers[name])
        for alt in route.alternatives:
            if isinstance(alt, (OAuth, AAuth)) and "WWW-Authenticate" not in headers:
                assert self.bearer is not None
                headers["WWW-Authenticate"] = self.bearer.missing_token(alt.scopes).headers["WWW-Authenticate"]
            elif isinstance(alt, AgentAuth) and aa_wire.H_REQUIREMENT not in headers:
                headers[aa_wire.H_REQUIREMENT] = aa_wire.requirement_header(aa_wire.REQ_AGENT_TOKEN)
            elif isinstance(alt, X402) and with_payment:
                paywall, priced, _ = self.paywalls[id(route)]
                required = paywall.payment_required(priced, paywall.resource_url(priced, path), "Payment required")
                headers[x402_wire.HEADER_PAYMENT_REQUIRED] = required.to_header()
                headers["Access-Control-Expose-Headers"] = EXPOSE + ", WWW-Authenticate, AAuth-Requirement"
        if route.attestation is not None:
            headers[trust_wire.ATTESTATION_REQUIRED_HEADER] = encode_requirement(route.attestation.public())
            if "Access-Control-Expose-Headers" in headers:
                headers["Access-Control-Expose-Headers"] += ", " + trust_wire.ATTESTATION_REQUIRED_HEADER
        return headers


def normal_path(scope: Scope) -> bool:
    """False for a path another server could read differently from us, so that a route the policy judged is the
    route the upstream serves: dot segments (``/public/../admin``), empty segments (``//admin``), backslashes,
    encoded ``/``, ``\\`` or NUL in the raw path (``/public/..%2Fadmin``), control characters."""
    path: str = scope["path"]
    raw: bytes = scope.get("raw_path") or b""
    if not path.startswith("/") or _ODD_CHARS.search(path):
        return False
    segments = path.split("/")[1:]
    if any(seg in (".", "..") for seg in segments) or "" in segments[:-1]:
        return False
    lowered = raw.lower()
    return not any(bad in lowered for bad in (b"%2f", b"%5c", b"%00"))


def _headers(scope: Scope, name: bytes) -> list[str]:
    return [v.decode("latin-1") for k, v in scope.get("headers", ()) if k.lower() == name]


def _header(scope: Scope, name: bytes) -> str | None:
    values = _headers(scope, name)
    return values[0] if values else None


def _has(scope: Scope, names: tuple[bytes, ...]) -> bool:
    return any(k.lower() in names for k, _ in scope.get("headers", ()))


async def _read_body(receive: Receive, limit: int) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", True
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), False


def _replay(body: bytes, receive: Receive) -> Callable[[], Awaitable[Message]]:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _answer(scope: Scope, send: Send, status: int, headers: dict[str, str], body: bytes) -> None:
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()
           if k.lower() != "content-length"]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": b"" if scope.get("method") == "HEAD" else body})

