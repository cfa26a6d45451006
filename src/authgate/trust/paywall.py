"""The trust checks at the x402 paywall (``Paywall(..., guard=PaymentTrustGuard(...))``).

Called for every new payment after the offer matched and before ``/verify``, with the payer known:

1. kill switch: the payer address, and the identity the request also proved (below) → 403 ``agent_disabled``;
2. attestations, when this path requires them (``attestations``: path prefix → Requirement, checked against
   ``Authgate-Attestation`` headers) → 403 ``attestation_*``;
3. mandate: an ``Authgate-Mandate`` header (or ``require_mandate``) is verified offline and must cover method,
   path, payee, asset and amount; its period counter is charged → 403 ``mandate_*``;
4. budget of the agent — its proved identity when there is one, else the payer address: charged atomically;
   over a limit → 403 ``budget_approval_pending`` with ``approval_id`` (repeat with ``Authgate-Approval: <id>``)
   or ``budget_exceeded``; a denied approval → 403 ``budget_approval_denied``.

The identity a paying request also proved, in the order looked at: ``scope["state"]["authgate.presented"]`` (a
bearer token or Agent Auth signature PolicyMiddleware / the gateway verified before the payment), the access
claims of AuthGateMiddleware (``state["authgate"]``: client_id and subject), the caller of AgentAuthResource
(``state["agentauth"]``: the agent id of an agent token, or the person and key thumbprint of a person/auth
token). An identity that was not proved (no credential, or one that failed) is not used: the payer address is.

It returns a release callback (a :class:`Counted`); the paywall calls it when verify or settle then fails, so
what was counted is given back (a payment is counted only if it happened), and calls its ``settled(receipt)``
once the payment settled.

With a trust database (``trust``), refusals and settled payments are audited (authgate.trust.audit:
``trust.*_denied``, ``trust.budget_pending``, ``x402.payment_received``); allowed payments write nothing more
before they settle.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from authgate.clock import Clock
from authgate.policy.identity import PRESENTED_KEY, Identity, agentauth_identity
from authgate.resource.verifier import AccessClaims
from authgate.trust import audit
from authgate.trust import wire as w
from authgate.trust.attestations import Requirement, check_attestations, split_header
from authgate.trust.budgets import BudgetGuard, Charged
from authgate.trust.errors import TrustError
from authgate.trust.issuers import TrustedIssuers
from authgate.trust.killswitch import KillSwitch
from authgate.trust.mandates import MandateVerifier
from authgate.trust.periods import period_key
from authgate.trust.store import Bucket, TrustStore

Release = Callable[[], Awaitable[None]]


def _headers(scope: Mapping[str, Any], name: str) -> list[str]:
    raw = name.lower().encode()
    return [v.decode("latin-1") for k, v in scope.get("headers", ()) if k.lower() == raw]


def proved_identity(scope: Mapping[str, Any]) -> Identity | None:
    """The identity a paying request proved besides its payment (see the module docstring), or None."""
    state = scope.get("state") or {}
    presented = state.get(PRESENTED_KEY)
    if isinstance(presented, Identity):
        return presented
    claims = state.get("authgate")
    if isinstance(claims, AccessClaims):
        return Identity("oauth", subject=claims.subject, agent=claims.client_id)
    caller = state.get("agentauth")
    if isinstance(caller, Mapping) and isinstance(caller.get("claims"), Mapping) and \
            isinstance(caller.get("jkt"), str) and isinstance(caller["claims"].get("sub"), str):
        return agentauth_identity(str(caller.get("typ")), caller["claims"], caller["jkt"])
    return None


def payment_seen(scope: Mapping[str, Any], requirements: Any, payer: str) -> audit.Seen:
    """What the audit log says of a payment: who (proved identity, payer) and what (route, terms)."""
    who = proved_identity(scope)
    return audit.Seen(agent=who.agent if who is not None else None, subject=who.subject if who is not None else None,
                      mechanism=who.mechanism if who is not None else "x402", method=str(scope.get("method", "GET")),
                      path=str(scope.get("path", "/")), payer=payer.lower(), payee=str(requirements.pay_to).lower(),
                      amount=str(requirements.amount)[:40], asset=str(requirements.asset)[:80],
                      network=str(requirements.network)[:64])


class Counted:
    """What the guard returns for a payment it let through. Awaiting it gives back what was counted (the payment
    did not happen); :meth:`settled` records the payment received (when there is a trust database)."""

    def __init__(self, undo: list[Release], trust: TrustStore | None, seen: audit.Seen) -> None:
        self.undo = undo
        self.trust = trust
        self.seen = seen

    async def __call__(self) -> None:
        for release in self.undo:
            await release()

    async def settled(self, receipt: Any) -> None:
        """The paywall settled this payment (``receipt``: the SettleResponse)."""
        await audit.received(self.trust, self.seen, receipt)


class PaymentTrustGuard:
    def __init__(self, trust: TrustStore | None, clock: Clock, *, killswitch: KillSwitch | None = None,
                 budgets: BudgetGuard | None = None, mandates: MandateVerifier | None = None,
                 require_mandate: bool = False, attestations: Mapping[str, Requirement] | None = None,
                 issuers: TrustedIssuers | None = None) -> None:
        if (require_mandate and mandates is None) or (attestations and issuers is None):
            raise ValueError("require_mandate needs a MandateVerifier; attestations need trusted issuers")
        self.trust = trust
        self.clock = clock
        self.killswitch = killswitch
        self.budgets = budgets
        self.mandates = mandates
        self.require_mandate = require_mandate
        self.attestations = dict(attestations or {})
        self.issuers = issuers

    def _requirement(self, path: str) -> Requirement | None:
        best = None
        for prefix, req in self.attestations.items():
            if (path == prefix or path.startswith(prefix.rstrip("/") + "/")) and (best is None
                                                                                  or len(prefix) > len(best[0])):
                best = (prefix, req)
        return best[1] if best else None

    async def __call__(self, scope: Mapping[str, Any], requirements: Any, payer: str) -> Release | None:
        try:
            return await self._check(scope, requirements, payer)
        except TrustError as exc:
            approval = _headers(scope, w.APPROVAL_HEADER)
            if exc.code == w.ERR_BUDGET_PENDING and approval:
                exc.audited = True  # the agent's repeat while its approval is pending: asked (and written) once
            await audit.refused(self.trust, exc, payment_seen(scope, requirements, payer),
                                approval_id=approval[0].strip()[:64] if approval else None)
            raise

    async def _check(self, scope: Mapping[str, Any], requirements: Any, payer: str) -> Release | None:
        now = int(self.clock.now())
        method, path = str(scope.get("method", "GET")), str(scope.get("path", "/"))
        payer = payer.lower()
        who = proved_identity(scope)
        agent = who.agent if who is not None else None
        subject = who.subject if who is not None else None
        client_id = agent if who is not None and who.mechanism in ("oauth", "aauth") else None
        agents = [a for a in (agent, payer) if a]
        if self.killswitch is not None:
            await self.killswitch.check(agents=agents, clients=[client_id], users=[subject])
        requirement = self._requirement(path)
        if requirement is not None and self.issuers is not None:
            await self.issuers.refresh()
            check_attestations(split_header(_headers(scope, w.ATTESTATION_HEADER)), requirement, agent=agents,
                               issuers=self.issuers, now=now)
        amount_text = str(requirements.amount)
        if not amount_text.isdigit() or len(amount_text) > 18:
            raise TrustError(w.ERR_BUDGET_EXCEEDED, "amount out of range", status=400)
        amount, payee = int(amount_text), str(requirements.pay_to).lower()

        undo: list[Release] = []
        mandate_header = _headers(scope, w.MANDATE_HEADER)
        if len(mandate_header) > 1:
            raise TrustError(w.ERR_MANDATE_INVALID, "one Authgate-Mandate header at most", status=400)
        if mandate_header and self.mandates is not None:
            mandate = await self.mandates.authorize_payment(
                mandate_header[0].strip(), agent=agents, method=method, path=path, payee=payee, amount=amount,
                asset=str(requirements.asset), now=now)
            if self.mandates.trust is not None:
                key = f"mandate:{mandate.jti}"
                bucket = Bucket(period_key(mandate.terms.cap_period, now), "*", None)
                store = self.mandates.trust
                undo.append(lambda: store.refund(key, [bucket], amount))
        elif self.require_mandate:
            raise TrustError(w.ERR_MANDATE_INVALID, f"this resource requires an {w.MANDATE_HEADER} header")

        if self.budgets is not None:
            approval = _headers(scope, w.APPROVAL_HEADER)
            try:
                charged: Charged = await self.budgets.charge(agent or payer, payee, amount,
                                                             approval_id=approval[0].strip() if approval else None,
                                                             resource=path[:500])
            except TrustError:
                for release in undo:
                    await release()
                raise
            budgets = self.budgets
            undo.append(lambda: budgets.refund(charged))

        if not undo and self.trust is None:
            return None
        return Counted(undo, self.trust, payment_seen(scope, requirements, payer))
