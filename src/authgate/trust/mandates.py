"""Mandates (authgate profile): a person's signed permission for one agent to pay — which routes, which
payees, how much per period, until when.

Issued by this server (``issue``) as a JWT signed with the AS key (``typ: authgate-mandate+jwt``), recorded in
``trust_mandates`` so its person can revoke it. Verified OFFLINE by any paywall/gateway configured with the
issuer's JWKS (``MandateVerifier``); revocation is checked only where the issuer's database is reachable
(``revoked`` callback) — elsewhere a revoked mandate stays usable until it expires, which is why lifetimes are
short (``MAX_TTL``). Spending is counted per mandate and period in ``trust_spend`` (key ``mandate:<jti>``).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from authgate.crypto.keys import KeyRing
from authgate.trust import wire as w
from authgate.trust.errors import TrustError
from authgate.trust.issuers import TrustedIssuers, same_agent
from authgate.trust.periods import period_key
from authgate.trust.store import MAX_AMOUNT, Bucket, MandateRow, TrustStore

MAX_TTL = 30 * 86400
DEFAULT_TTL = 86400
_ERRORS = {"invalid": w.ERR_MANDATE_INVALID, "untrusted": w.ERR_MANDATE_UNTRUSTED, "expired": w.ERR_MANDATE_EXPIRED}
_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "*"}


@dataclass(frozen=True)
class Terms:
    """What a mandate allows. ``routes``: ``"METHOD /path"`` or ``"/path"`` (any method); a path ending in
    ``/*`` covers everything below it. ``payees``: addresses (compared lower-case). ``cap_amount``: atomic units
    per ``cap_period``."""

    routes: tuple[str, ...]
    payees: tuple[str, ...]
    cap_amount: int
    cap_period: str = "day"
    asset: str | None = None

    def __post_init__(self) -> None:
        if not self.routes or len(self.routes) > w.MAX_LIST or not self.payees or len(self.payees) > w.MAX_LIST:
            raise ValueError(f"routes and payees: 1 to {w.MAX_LIST} entries each")
        for route in self.routes:
            _split_route(route)
        for payee in self.payees:
            if not isinstance(payee, str) or not payee or len(payee) > 80:
                raise ValueError("a payee is a non-empty string of at most 80 characters")
        if isinstance(self.cap_amount, bool) or not isinstance(self.cap_amount, int) or \
                not 0 < self.cap_amount <= MAX_AMOUNT:
            raise ValueError("cap amount must be a positive integer of atomic units")
        if self.cap_period not in w.PERIODS:
            raise ValueError(f"cap period must be one of {', '.join(w.PERIODS)}")
        if self.asset is not None and (not isinstance(self.asset, str) or len(self.asset) > 80):
            raise ValueError("asset must be a string of at most 80 characters")

    def claim(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            w.MANDATE_ROUTES: list(self.routes), w.MANDATE_PAYEES: list(self.payees),
            w.MANDATE_CAP: {w.CAP_AMOUNT: str(self.cap_amount), w.CAP_PERIOD: self.cap_period},
        }
        if self.asset is not None:
            out[w.MANDATE_ASSET] = self.asset
        return out

    @classmethod
    def from_claim(cls, value: Any) -> Terms:
        """Parse the ``mandate`` claim; ValueError on anything malformed."""
        if not isinstance(value, dict):
            raise ValueError("mandate claim is not an object")
        routes, payees, cap = value.get(w.MANDATE_ROUTES), value.get(w.MANDATE_PAYEES), value.get(w.MANDATE_CAP)
        if not isinstance(routes, list) or not isinstance(payees, list) or not isinstance(cap, dict):
            raise ValueError("routes, payees and cap are required")
        if not all(isinstance(r, str) for r in routes) or not all(isinstance(p, str) for p in payees):
            raise ValueError("routes and payees are strings")
        amount, period = cap.get(w.CAP_AMOUNT), cap.get(w.CAP_PERIOD)
        if not isinstance(amount, str) or not amount.isdigit() or len(amount) > 19 or not isinstance(period, str):
            raise ValueError("cap needs a decimal amount string and a period")
        asset = value.get(w.MANDATE_ASSET)
        return cls(tuple(routes), tuple(payees), int(amount), period, asset)

    def covers_route(self, method: str, path: str) -> bool:
        return any(_route_matches(r, method.upper(), path) for r in self.routes)

    def covers_payee(self, payee: str) -> bool:
        return payee.lower() in {p.lower() for p in self.payees}


def _split_route(route: str) -> tuple[str, str]:
    if not isinstance(route, str) or len(route) > 500:
        raise ValueError("a route is a string of at most 500 characters")
    method, _, path = route.partition(" ") if " " in route else ("*", "", route)
    if method.upper() not in _METHODS or not path.startswith("/"):
        raise ValueError(f"route {route!r}: expected 'METHOD /path' or '/path'")
    return method.upper(), path


def _route_matches(route: str, method: str, path: str) -> bool:
    want_method, want_path = _split_route(route)
    if want_method != "*" and want_method != method and not (want_method == "GET" and method == "HEAD"):
        return False
    if want_path.endswith("/*"):
        base = want_path[:-2]
        return path == base or path.startswith(base + "/")
    return path == want_path


@dataclass(frozen=True)
class Mandate:
    jti: str
    issuer: str
    subject: str
    agent: str
    expires_at: int
    terms: Terms


async def issue(keys: KeyRing, trust: TrustStore, *, issuer: str, subject: str, agent: str, terms: Terms,
                ttl: int = DEFAULT_TTL) -> tuple[str, MandateRow]:
    """Sign a mandate for ``agent`` on behalf of ``subject`` and record it (revocable); returns (JWT, row)."""
    if not agent or len(agent) > w.MAX_ID:
        raise ValueError("agent id: 1 to 300 characters")
    now = int(trust.store.clock.now())
    lifetime = min(max(60, ttl), MAX_TTL)
    jti = secrets.token_urlsafe(16)
    claims = {"iss": issuer, "sub": subject, w.CLAIM_AGENT: agent, "jti": jti, "iat": now, "exp": now + lifetime,
              w.CLAIM_MANDATE: terms.claim()}
    token = await keys.sign(claims, typ=w.MANDATE_TYP)
    row = MandateRow(jti=jti, subject=subject, agent=agent, terms=terms.claim(), issued_at=now,
                     expires_at=now + lifetime, revoked_at=None)
    await trust.record_mandate(row)
    return token, row


class MandateVerifier:
    """Offline verification against trusted issuers, then coverage, then (optionally) the spending cap.

    ``revoked(jti)``: the revocation list where the issuer's database is reachable (None = offline: only expiry
    ends a mandate). ``trust``: where spending against the cap is counted (None = coverage checks only)."""

    def __init__(self, issuers: TrustedIssuers, *, revoked: Callable[[str], Awaitable[bool]] | None = None,
                 trust: TrustStore | None = None) -> None:
        self.issuers = issuers
        self.revoked = revoked
        self.trust = trust

    async def verify(self, token: str, *, agent: str | Sequence[str] | None, now: int) -> Mandate:
        """Signature, issuer, expiry, shape, agent binding and revocation; no route/payment checks."""
        await self.issuers.refresh()
        claims = self.issuers.verify(token, typ=w.MANDATE_TYP, now=now, errors=_ERRORS)
        jti, sub, bound = claims.get("jti"), claims.get("sub"), claims.get(w.CLAIM_AGENT)
        if not all(isinstance(v, str) and v for v in (jti, sub, bound)):
            raise TrustError(w.ERR_MANDATE_INVALID, "jti, sub and agent are required")
        try:
            terms = Terms.from_claim(claims.get(w.CLAIM_MANDATE))
        except ValueError as exc:
            raise TrustError(w.ERR_MANDATE_INVALID, str(exc)) from None
        agents = [agent] if isinstance(agent, str) else list(agent or [])
        if not any(isinstance(a, str) and same_agent(a, str(bound)) for a in agents):
            raise TrustError(w.ERR_MANDATE_AGENT, "the mandate was issued to another agent")
        if self.revoked is not None and await self.revoked(str(jti)):
            raise TrustError(w.ERR_MANDATE_REVOKED, "the mandate was revoked by its person")
        return Mandate(jti=str(jti), issuer=str(claims["iss"]), subject=str(sub), agent=str(bound),
                       expires_at=int(claims["exp"]), terms=terms)

    async def authorize_payment(self, token: str, *, agent: str | Sequence[str] | None, method: str, path: str,
                                payee: str, amount: int, asset: str | None = None, now: int) -> Mandate:
        """Everything a paywall needs before verify/settle: verify, check route, payee, asset, per-payment cap,
        then charge the period counter (atomic; refused with nothing counted when over the cap)."""
        mandate = await self.verify(token, agent=agent, now=now)
        terms = mandate.terms
        if not terms.covers_route(method, path):
            raise TrustError(w.ERR_MANDATE_ROUTE, f"the mandate does not cover {method.upper()} {path[:200]}")
        if not terms.covers_payee(payee):
            raise TrustError(w.ERR_MANDATE_PAYEE, "the mandate does not cover this payee")
        if terms.asset is not None and (asset is None or asset.lower() != terms.asset.lower()):
            raise TrustError(w.ERR_MANDATE_ASSET, "the mandate does not cover this asset")
        if amount > terms.cap_amount:
            raise TrustError(w.ERR_MANDATE_AMOUNT, f"amount {amount} is above the mandate's cap of "
                             f"{terms.cap_amount} per {terms.cap_period}")
        if self.trust is not None:
            bucket = Bucket(period_key(terms.cap_period, now), "*", terms.cap_amount)
            if await self.trust.charge(f"mandate:{mandate.jti}", [bucket], amount) is not None:
                raise TrustError(w.ERR_MANDATE_AMOUNT, f"the mandate's cap of {terms.cap_amount} per "
                                 f"{terms.cap_period} would be exceeded")
        return mandate


def store_revocations(trust: TrustStore) -> Callable[[str], Awaitable[bool]]:
    """The revocation check for a process that reaches the issuer's database."""

    async def revoked(jti: str) -> bool:
        row = await trust.get_mandate(jti)
        return row is not None and row.revoked_at is not None

    return revoked
