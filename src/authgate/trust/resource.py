"""The kill switch on the resource side: a TokenVerifier wrapper for ``AuthGateMiddleware`` (and the gateway).

JWT access tokens verify offline, so without this a killed client's token keeps working until it expires.
``KillSwitchVerifier(inner, switch)`` verifies with ``inner`` and then consults the kill list (the client, the
subject, and an acting agent in ``act.sub``); a hit is an ordinary ``invalid_token`` rejection (reason
``killed``), and a kill list that cannot be read is ``VerifierUnavailable`` (503), never a pass. The switch
needs the issuer's database: ``KillSwitch(TrustStore(await Store.open(url, run_migrations=False)))`` in a
separate resource server, ``ctx.killswitch`` inside authgate's own process. A refused token is audited in that
database (``trust.kill_denied``, authgate.trust.audit).
"""

from __future__ import annotations

from authgate.resource.verifier import AccessClaims, TokenRejected, TokenVerifier, VerifierUnavailable
from authgate.trust import audit
from authgate.trust import wire as w
from authgate.trust.errors import STORE_ERRORS, TrustError
from authgate.trust.killswitch import KillSwitch


class KillSwitchVerifier:
    def __init__(self, inner: TokenVerifier, switch: KillSwitch) -> None:
        self.inner = inner
        self.switch = switch

    @property
    def audience(self) -> str:
        return self.inner.audience

    async def verify(self, token: str) -> AccessClaims:
        claims = await self.inner.verify(token)
        act = claims.claims.get("act")
        actor = act.get("sub") if isinstance(act, dict) else None
        try:
            hit = await self.switch.killed(clients=[claims.client_id], users=[claims.subject],
                                           agents=[claims.client_id, actor if isinstance(actor, str) else None])
        except STORE_ERRORS as exc:
            raise VerifierUnavailable(f"kill list unreadable: {exc.__class__.__name__}") from None
        if hit is not None:
            kind = hit.split(":", 1)[0]
            await audit.refused(self.switch.trust, TrustError(w.ERR_KILLED, f"{kind} disabled by the kill switch"),
                                audit.Seen(agent=claims.client_id, subject=claims.subject, mechanism="oauth"))
            raise TokenRejected("killed", kind)
        return claims
