"""Attestations (authgate profile): signed claims about an agent from a trusted issuer ("employee of X",
"verified adult", "KYC passed"), presented as JWTs (``typ: authgate-attestation+jwt``) in
``Authgate-Attestation`` headers and checked offline before access or payment.

``check_attestations`` is the function a route policy calls: the requirement is ``{claim: expected}`` where
``expected`` is a value the claim must equal, or ``True`` for "present and truthy"; optionally only some
issuers may satisfy it. The attestation's ``sub`` must be the presenting agent (subject binding), so an
attestation copied from another agent is worthless.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from authgate.crypto.keys import KeyRing
from authgate.trust import wire as w
from authgate.trust.errors import TrustError
from authgate.trust.issuers import TrustedIssuers, same_agent

_ERRORS = {"invalid": w.ERR_ATTESTATION_INVALID, "untrusted": w.ERR_ATTESTATION_UNTRUSTED,
           "expired": w.ERR_ATTESTATION_EXPIRED}
MAX_ATTESTATIONS = 8


@dataclass(frozen=True)
class Requirement:
    """What a route demands: every claim in ``claims`` satisfied, by an issuer in ``issuers`` (None: any
    trusted issuer)."""

    claims: Mapping[str, Any]
    issuers: frozenset[str] | None = None


def _satisfies(value: Any, expected: Any) -> bool:
    """``True``: present and truthy; anything else: equal *and of the same JSON type* (in Python ``True == 1``,
    but an attested ``true`` is not the number 1, nor ``1`` the boolean)."""
    if expected is True:
        return value is not None and value is not False and value != ""
    if isinstance(expected, bool) or isinstance(value, bool):
        return value is expected
    return type(value) is type(expected) and bool(value == expected)


def encode_requirement(requirement: Mapping[str, Any]) -> str:
    """The ``Authgate-Attestation-Required`` value for a requirement's public form (``{"claims": …,
    "issuers": […]}``): base64url, unpadded, of its compact JSON."""
    raw = json.dumps(dict(requirement), separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def split_header(values: Iterable[str]) -> list[str]:
    """Tokens from one or more ``Authgate-Attestation`` header values (comma separated)."""
    out = [part.strip() for value in values for part in value.split(",") if part.strip()]
    if len(out) > MAX_ATTESTATIONS:
        raise TrustError(w.ERR_ATTESTATION_INVALID, f"at most {MAX_ATTESTATIONS} attestations per request")
    return out


def check_attestations(tokens: Sequence[str], requirement: Requirement, *, agent: str | Sequence[str] | None,
                       issuers: TrustedIssuers, now: int) -> dict[str, Any]:
    """Raise TrustError unless the presented attestations satisfy ``requirement``; return the merged claims.

    Every presented token must verify (a bad one is refused, not skipped, so errors are visible). The most
    specific reason is reported: no attestation → attestation_required; a claim no valid attestation has →
    attestation_claim_missing."""
    if not tokens:
        raise TrustError(w.ERR_ATTESTATION_MISSING, "this route requires an attestation ("
                         + ", ".join(sorted(requirement.claims)) + ")")
    agents = [agent] if isinstance(agent, str) else list(agent or [])
    merged: dict[str, Any] = {}
    for token in tokens[:MAX_ATTESTATIONS]:
        claims = issuers.verify(token, typ=w.ATTESTATION_TYP, now=now, errors=_ERRORS)
        if requirement.issuers is not None and claims["iss"] not in requirement.issuers:
            raise TrustError(w.ERR_ATTESTATION_UNTRUSTED, "issuer is not accepted for this route")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not any(
                isinstance(a, str) and same_agent(a, sub) for a in agents):
            raise TrustError(w.ERR_ATTESTATION_SUBJECT, "the attestation is about another subject")
        body = claims.get(w.CLAIM_CLAIMS)
        if not isinstance(body, dict):
            raise TrustError(w.ERR_ATTESTATION_INVALID, "claims object is required")
        merged.update(body)
    for name, expected in requirement.claims.items():
        if not _satisfies(merged.get(name), expected):
            raise TrustError(w.ERR_ATTESTATION_CLAIM, f"attested claim {name!r} is missing or does not match")
    return merged


async def issue_attestation(keys: KeyRing, *, issuer: str, agent: str, claims: Mapping[str, Any], ttl: int,
                            now: int) -> str:
    """Sign an attestation with this server's key (for operators who vouch for their own agents, and tests)."""
    body = {"iss": issuer, "sub": agent, "iat": now, "exp": now + max(60, ttl), "jti": secrets.token_urlsafe(12),
            w.CLAIM_CLAIMS: dict(claims)}
    return await keys.sign(body, typ=w.ATTESTATION_TYP)
