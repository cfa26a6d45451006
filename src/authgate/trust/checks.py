"""The trust checks a route policy applies beyond credentials: ``PolicyMiddleware(..., trust=TrustChecks(...))``,
and what the gateway's ``[trust]`` section builds.

- ``killswitch``: an Agent Auth caller whose agent, person, or token (one this server issued) is on the kill list
  is refused like a revoked token (``401 Signature-Error: error=revoked_jwt``); a paying request whose payer or
  proved identity is killed gets ``403 agent_disabled`` before ``/verify``. Bearer tokens are judged by their
  verifier: wrap it in :class:`~authgate.trust.resource.KillSwitchVerifier` (the gateway does).
- ``issuers``: the trusted issuers of attestations, for routes with an ``attestation`` requirement
  (:class:`~authgate.policy.model.Attestation`), checked after the alternative let the request in and, for
  payments, before ``/verify``;
- ``payments``: the :class:`~authgate.trust.paywall.PaymentTrustGuard` (mandates, budgets) run on every payment
  after the checks above (it needs no kill switch of its own: this one covers payments).

A check that cannot reach the trust database decides nothing: ``503 temporarily_unavailable`` with
``Retry-After`` — never a 500, never a pass.

With a trust database (the kill switch's, or the payment guard's), every refusal decided here — a killed Agent
Auth caller, a missing or invalid attestation, a refused payment — and every payment the route's paywall settles
is written to its audit log (authgate.trust.audit); allowed requests write nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from authgate.clock import Clock, SystemClock
from authgate.policy.identity import Identity
from authgate.policy.model import Attestation
from authgate.trust import audit
from authgate.trust import wire as w
from authgate.trust.attestations import Requirement, check_attestations, encode_requirement, split_header
from authgate.trust.errors import STORE_ERRORS, TrustError, unavailable
from authgate.trust.issuers import TrustedIssuers
from authgate.trust.killswitch import KillSwitch
from authgate.trust.paywall import Counted, PaymentTrustGuard, Release, payment_seen, proved_identity
from authgate.trust.store import TrustStore

Guard = Callable[[Mapping[str, Any], Any, str], Awaitable[Release | None]]


def _headers(scope: Mapping[str, Any], name: bytes) -> list[str]:
    return [v.decode("latin-1") for k, v in scope.get("headers", ()) if k.lower() == name]


@dataclass(frozen=True)
class TrustChecks:
    killswitch: KillSwitch | None = None
    issuers: TrustedIssuers | None = None
    payments: PaymentTrustGuard | None = None
    clock: Clock = field(default_factory=SystemClock)

    @property
    def trust(self) -> TrustStore | None:
        """The trust database the checks use (None: offline checks only); refusals are audited there."""
        if self.killswitch is not None:
            return self.killswitch.trust
        return self.payments.trust if self.payments is not None else None

    async def killed(self, identity: Identity, *, token_id: str | None = None) -> bool:
        """Whether ``identity`` (its agent, person, or the Agent Auth token ``token_id`` issued here) is killed
        (audited when it is)."""
        if self.killswitch is None:
            return False
        bearer = identity.mechanism in ("oauth", "aauth")
        hit = await self.killswitch.killed(agents=[identity.agent], users=[identity.subject],
                                           clients=[identity.agent] if bearer else [])
        if hit is None and token_id is not None and await self.killswitch.agentauth_token_killed(token_id):
            hit = "token"
        if hit is None:
            return False
        await audit.refused(self.trust, TrustError(w.ERR_KILLED, f"{hit.split(':', 1)[0]} disabled by the kill "
                                                                 "switch"),
                            audit.Seen(agent=identity.agent, subject=identity.subject, mechanism=identity.mechanism))
        return True

    async def attest(self, scope: Mapping[str, Any], attestation: Attestation, agents: Sequence[str | None]) -> None:
        """Raise TrustError (carrying ``Authgate-Attestation-Required``) unless the request's
        ``Authgate-Attestation`` tokens satisfy ``attestation`` for one of ``agents``."""
        header = {w.ATTESTATION_REQUIRED_HEADER: encode_requirement(attestation.public())}
        if self.issuers is None:  # PolicyMiddleware refuses such a policy at start-up; kept for direct callers
            raise TrustError(w.ERR_ATTESTATION_UNTRUSTED, "no attestation issuers are trusted here", headers=header)
        await self.issuers.refresh()
        requirement = Requirement(attestation.claims, frozenset(attestation.issuers) or None)
        try:
            tokens = split_header(_headers(scope, w.ATTESTATION_HEADER.lower().encode()))
            check_attestations(tokens, requirement, agent=[a for a in agents if a], issuers=self.issuers,
                               now=int(self.clock.now()))
        except TrustError as exc:
            exc.headers.update(header)
            await audit.refused(self.trust, exc, audit.Seen(
                agent=next((a for a in agents if a), None), method=str(scope.get("method", "GET")),
                path=str(scope.get("path", "/"))))
            raise

    def payment_guard(self, attestation: Attestation | None) -> Guard | None:
        """The paywall guard of one route: kill switch (payer and proved identity), the route's attestation,
        then ``payments``. None when there is nothing to check."""
        if attestation is None and self.payments is None and self.killswitch is None:
            return None

        async def guard(scope: Mapping[str, Any], requirements: Any, payer: str) -> Release | None:
            who = proved_identity(scope)
            agents = [who.agent if who is not None else None, payer.lower()]
            try:
                if self.killswitch is not None:
                    bearer = who is not None and who.mechanism in ("oauth", "aauth")
                    await self.killswitch.check(agents=agents, users=[who.subject if who is not None else None],
                                                clients=[agents[0]] if bearer else [])
                if attestation is not None:
                    await self.attest(scope, attestation, agents)
                if self.payments is not None:
                    return await self.payments(scope, requirements, payer)
            except STORE_ERRORS:
                raise unavailable() from None
            except TrustError as exc:  # the kill switch's (the others audit their own)
                await audit.refused(self.trust, exc, payment_seen(scope, requirements, payer))
                raise
            trust = self.trust
            # Nothing counted, but a settled payment is still audited where there is a trust database.
            return Counted([], trust, payment_seen(scope, requirements, payer)) if trust is not None else None

        return guard
