"""Mandates: issued by the AS, verified offline against trusted issuer keys, coverage, cap, expiry, revocation."""

from __future__ import annotations

import base64
import json

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from authgate.clock import FrozenClock
from authgate.crypto.keys import KeyRing
from authgate.trust import mandates, wire
from authgate.trust.errors import TrustError
from authgate.trust.issuers import TrustedIssuers
from authgate.trust.mandates import MandateVerifier, Terms
from authgate.trust.periods import period_key
from authgate.trust.store import TrustStore

from .conftest import ISSUER

PAYEE = "0x" + "ab" * 20
TERMS = Terms(routes=("GET /api/reports/*", "POST /api/buy"), payees=(PAYEE,), cap_amount=1000, cap_period="day")


async def _mandate(keys: KeyRing, trust: TrustStore, terms: Terms = TERMS, ttl: int = 3600) -> str:
    token, _ = await mandates.issue(keys, trust, issuer=ISSUER, subject="alice", agent="agent-1", terms=terms,
                                    ttl=ttl)
    return token


def _verifier(issuers: TrustedIssuers, trust: TrustStore) -> MandateVerifier:
    return MandateVerifier(issuers, revoked=mandates.store_revocations(trust), trust=trust)


async def _pay(v: MandateVerifier, token: str, clock: FrozenClock, *, method: str = "GET",
               path: str = "/api/reports/q3", payee: str = PAYEE, amount: int = 100, agent: str = "agent-1") -> None:
    await v.authorize_payment(token, agent=agent, method=method, path=path, payee=payee, amount=amount,
                              now=int(clock.now()))


async def test_covered_payment_is_authorized_and_counted(keys: KeyRing, trust: TrustStore,
                                                         issuers: TrustedIssuers, clock: FrozenClock) -> None:
    token = await _mandate(keys, trust)
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header["typ"] == wire.MANDATE_TYP
    v = _verifier(issuers, trust)
    await _pay(v, token, clock, payee=PAYEE.upper().replace("0X", "0x"))
    await _pay(v, token, clock, method="POST", path="/api/buy", amount=900)
    with pytest.raises(TrustError) as exc:  # 1000 per day used up
        await _pay(v, token, clock, amount=1)
    assert exc.value.code == wire.ERR_MANDATE_AMOUNT and "cap of 1000 per day" in exc.value.description


@pytest.mark.parametrize(("kwargs", "code"), [
    ({"path": "/api/admin"}, wire.ERR_MANDATE_ROUTE),
    ({"method": "DELETE", "path": "/api/reports/q3"}, wire.ERR_MANDATE_ROUTE),
    ({"path": "/api/reportsX"}, wire.ERR_MANDATE_ROUTE),
    ({"payee": "0x" + "cd" * 20}, wire.ERR_MANDATE_PAYEE),
    ({"amount": 1001}, wire.ERR_MANDATE_AMOUNT),
    ({"agent": "agent-2"}, wire.ERR_MANDATE_AGENT),
])
async def test_outside_the_mandate_is_refused(keys: KeyRing, trust: TrustStore, issuers: TrustedIssuers,
                                             clock: FrozenClock, kwargs: dict[str, object], code: str) -> None:
    token = await _mandate(keys, trust)
    with pytest.raises(TrustError) as exc:
        await _pay(_verifier(issuers, trust), token, clock, **kwargs)  # type: ignore[arg-type]
    assert exc.value.code == code and exc.value.status == 403
    (row,) = await trust.list_mandates()
    assert await trust.spent(f"mandate:{row.jti}", period_key("day", clock.now())) == 0  # nothing counted


async def test_daily_cap_rolls_over(keys: KeyRing, trust: TrustStore, issuers: TrustedIssuers,
                                    clock: FrozenClock) -> None:
    token = await _mandate(keys, trust, ttl=3 * 86400)
    v = _verifier(issuers, trust)
    await _pay(v, token, clock, amount=1000)
    with pytest.raises(TrustError):
        await _pay(v, token, clock, amount=1)
    clock.advance(86400)
    await _pay(v, token, clock, amount=1000)


async def test_expired_mandate_is_refused(keys: KeyRing, trust: TrustStore, issuers: TrustedIssuers,
                                          clock: FrozenClock) -> None:
    token = await _mandate(keys, trust, ttl=120)
    clock.advance(121 + 30)
    with pytest.raises(TrustError) as exc:
        await _pay(_verifier(issuers, trust), token, clock)
    assert exc.value.code == wire.ERR_MANDATE_EXPIRED


async def test_revoked_mandate_is_refused_where_the_list_is_reachable(
        keys: KeyRing, trust: TrustStore, issuers: TrustedIssuers, clock: FrozenClock) -> None:
    token, row = await mandates.issue(keys, trust, issuer=ISSUER, subject="alice", agent="agent-1", terms=TERMS)
    assert await trust.revoke_mandate(row.jti, by="alice", subject="alice")
    with pytest.raises(TrustError) as exc:
        await _pay(_verifier(issuers, trust), token, clock)
    assert exc.value.code == wire.ERR_MANDATE_REVOKED
    # Offline (no revocation list): documented limitation, the mandate lives until it expires.
    await _pay(MandateVerifier(issuers), token, clock)


async def test_forged_mandate_is_refused(keys: KeyRing, trust: TrustStore, issuers: TrustedIssuers,
                                         clock: FrozenClock) -> None:
    real = await _mandate(keys, trust)
    claims = json.loads(base64.urlsafe_b64decode(real.split(".")[1] + "=="))
    kid = json.loads(base64.urlsafe_b64decode(real.split(".")[0] + "=="))["kid"]
    claims["mandate"]["cap"]["amount"] = "99999999"
    attacker = ECKey.generate_key("P-256", parameters={"kid": kid}, private=True)
    forged = jwt.encode({"alg": "ES256", "typ": wire.MANDATE_TYP, "kid": kid}, claims, attacker)
    other = ECKey.generate_key("P-256", parameters={"kid": "evil"}, private=True)
    other_issuer = jwt.encode({"alg": "ES256", "typ": wire.MANDATE_TYP, "kid": "evil"},
                              dict(claims, iss="https://evil.example"), other)
    tampered = real.split(".")[0] + "." + base64.urlsafe_b64encode(
        json.dumps(claims).encode()).rstrip(b"=").decode() + "." + real.split(".")[2]
    v = _verifier(issuers, trust)
    for token in (forged, other_issuer, tampered):
        with pytest.raises(TrustError) as exc:
            await _pay(v, token, clock)
        assert exc.value.code == wire.ERR_MANDATE_UNTRUSTED
    for junk in ("", "a.b", "x" * 9000, "a.b.c", real.replace(".", "..", 1)):
        with pytest.raises(TrustError) as exc:
            await _pay(v, junk, clock)
        assert exc.value.code in (wire.ERR_MANDATE_INVALID, wire.ERR_MANDATE_UNTRUSTED)


async def test_an_access_token_is_not_a_mandate(keys: KeyRing, trust: TrustStore, issuers: TrustedIssuers,
                                                clock: FrozenClock) -> None:
    now = int(clock.now())
    token = await keys.sign({"iss": ISSUER, "sub": "alice", "agent": "agent-1", "jti": "x", "exp": now + 60,
                             "mandate": TERMS.claim()})  # typ at+jwt
    with pytest.raises(TrustError) as exc:
        await _pay(_verifier(issuers, trust), token, clock)
    assert exc.value.code == wire.ERR_MANDATE_INVALID


def test_terms_validation() -> None:
    for bad in ({"routes": ()}, {"routes": ("api",)}, {"routes": ("FETCH /x",)}, {"payees": ()},
                {"cap_amount": 0}, {"cap_amount": 2**64}, {"cap_period": "hour"}):
        args = {"routes": ("/x",), "payees": ("p",), "cap_amount": 1, **bad}
        with pytest.raises(ValueError):
            Terms(**args)  # type: ignore[arg-type]
    claims: list[object] = [None, [], {"routes": "/x"}, {"routes": ["/x"], "payees": ["p"], "cap": {"amount": 5}},
                  {"routes": ["/x"], "payees": ["p"], "cap": {"amount": "-5", "period": "day"}}]
    for claim in claims:
        with pytest.raises(ValueError):
            Terms.from_claim(claim)
    assert Terms.from_claim(TERMS.claim()) == TERMS
