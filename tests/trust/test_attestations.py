"""Attestations: valid → in; untrusted issuer, forged, expired, wrong subject, missing claim → refused."""

from __future__ import annotations

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from authgate.clock import FrozenClock
from authgate.crypto.keys import KeyRing
from authgate.trust import wire
from authgate.trust.attestations import Requirement, check_attestations, issue_attestation, split_header
from authgate.trust.errors import TrustError
from authgate.trust.issuers import TrustedIssuers

from .conftest import ISSUER

KYC = Requirement({"kyc": "passed", "verified_adult": True})


async def _att(keys: KeyRing, clock: FrozenClock, claims: dict[str, object], agent: str = "agent-1",
               ttl: int = 600) -> str:
    return await issue_attestation(keys, issuer=ISSUER, agent=agent, claims=claims, ttl=ttl, now=int(clock.now()))


def _refused(tokens: list[str], issuers: TrustedIssuers, clock: FrozenClock, req: Requirement = KYC,
             agent: str = "agent-1") -> str:
    with pytest.raises(TrustError) as exc:
        check_attestations(tokens, req, agent=agent, issuers=issuers, now=int(clock.now()))
    assert exc.value.status == 403
    return exc.value.code


async def test_valid_attestations_let_in(keys: KeyRing, issuers: TrustedIssuers, clock: FrozenClock) -> None:
    a = await _att(keys, clock, {"kyc": "passed"})
    b = await _att(keys, clock, {"verified_adult": True, "employee_of": "example.com"})
    tokens = split_header([f"{a}, {b}"])
    merged = check_attestations(tokens, KYC, agent=["0xpayer", "agent-1"], issuers=issuers, now=int(clock.now()))
    assert merged["employee_of"] == "example.com"
    check_attestations([b], Requirement({"employee_of": "example.com"}, frozenset({ISSUER})), agent="agent-1",
                       issuers=issuers, now=int(clock.now()))


async def test_refusals(keys: KeyRing, issuers: TrustedIssuers, clock: FrozenClock) -> None:
    good = await _att(keys, clock, {"kyc": "passed", "verified_adult": True})
    assert _refused([], issuers, clock) == wire.ERR_ATTESTATION_MISSING
    assert _refused([await _att(keys, clock, {"kyc": "failed", "verified_adult": True})], issuers,
                    clock) == wire.ERR_ATTESTATION_CLAIM
    assert _refused([await _att(keys, clock, {"kyc": "passed"})], issuers, clock) == wire.ERR_ATTESTATION_CLAIM
    assert _refused([await _att(keys, clock, {"kyc": "passed", "verified_adult": False})], issuers,
                    clock) == wire.ERR_ATTESTATION_CLAIM
    assert _refused([good], issuers, clock, agent="agent-2") == wire.ERR_ATTESTATION_SUBJECT
    assert _refused([good], issuers, clock, agent="AGENT-1") == wire.ERR_ATTESTATION_SUBJECT  # ids are exact
    assert _refused([good], issuers, clock, req=Requirement(KYC.claims, frozenset({"https://hr.example"}))
                    ) == wire.ERR_ATTESTATION_UNTRUSTED
    assert _refused([good], TrustedIssuers({}), clock) == wire.ERR_ATTESTATION_UNTRUSTED
    other = ECKey.generate_key("P-256", parameters={"kid": "k"}, private=True)
    now = int(clock.now())
    body = {"iss": ISSUER, "sub": "agent-1", "exp": now + 60, "claims": {"kyc": "passed", "verified_adult": True}}
    forged = jwt.encode({"alg": "ES256", "typ": wire.ATTESTATION_TYP, "kid": "k"}, body, other)
    assert _refused([forged], issuers, clock) == wire.ERR_ATTESTATION_UNTRUSTED
    assert _refused(["garbage"], issuers, clock) == wire.ERR_ATTESTATION_INVALID
    assert _refused([good, "a.b.c"], issuers, clock) == wire.ERR_ATTESTATION_INVALID  # a bad one is not skipped
    clock.advance(600 + 31)
    assert _refused([good], issuers, clock) == wire.ERR_ATTESTATION_EXPIRED


async def test_a_mandate_is_not_an_attestation(keys: KeyRing, issuers: TrustedIssuers, clock: FrozenClock) -> None:
    now = int(clock.now())
    token = await keys.sign({"iss": ISSUER, "sub": "agent-1", "exp": now + 60,
                             "claims": {"kyc": "passed", "verified_adult": True}}, typ=wire.MANDATE_TYP)
    assert _refused([token], issuers, clock) == wire.ERR_ATTESTATION_INVALID


def test_header_bounds() -> None:
    with pytest.raises(TrustError):
        split_header([",".join(["a.b.c"] * 9)])


async def test_claims_compare_with_their_json_type(keys: KeyRing, issuers: TrustedIssuers, clock: FrozenClock) -> None:
    """In Python True == 1; an attested boolean is not a number, nor a number a boolean."""
    level_one = Requirement({"level": 1})
    assert _refused([await _att(keys, clock, {"level": True})], issuers, clock, req=level_one) == \
        wire.ERR_ATTESTATION_CLAIM
    assert _refused([await _att(keys, clock, {"level": "1"})], issuers, clock, req=level_one) == \
        wire.ERR_ATTESTATION_CLAIM
    assert _refused([await _att(keys, clock, {"minor": 0})], issuers, clock, req=Requirement({"minor": False})) == \
        wire.ERR_ATTESTATION_CLAIM
    check_attestations([await _att(keys, clock, {"level": 1, "minor": False})],
                       Requirement({"level": 1, "minor": False}), agent="agent-1", issuers=issuers,
                       now=int(clock.now()))
