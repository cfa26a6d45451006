"""Software statements (RFC 7591 §2.3, §3.1.1): signed client metadata asserted by a trusted publisher.

A statement is a compact JWS whose ``iss`` names a publisher configured in
``Settings.software_statement_issuers`` (``iss`` → pinned JWKS; nothing is fetched). Only asymmetric algorithms
are accepted (``none`` and HMAC never: the trust list holds public keys). ``exp``, ``nbf`` and ``iat`` are
checked with a small skew.

Errors follow RFC 7591 §3.2.2: anything malformed, badly signed, expired or not yet valid is
``invalid_software_statement``; a well-formed statement from an issuer we do not trust is
``unapproved_software_statement``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from authgate.errors import InvalidSoftwareStatement, UnapprovedSoftwareStatement

#: Fully-specified asymmetric algorithms (``EdDSA`` is deprecated by RFC 9864; ``Ed25519`` replaces it).
ALGORITHMS = ("RS256", "PS256", "ES256", "ES384", "Ed25519")
SKEW = 60
MAX_STATEMENT_LENGTH = 16 * 1024
#: JWT claims about the statement itself, not client metadata: never merged into the registration.
_JWT_CLAIMS = frozenset({"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "software_statement"})

_registry = jws.JWSRegistry(algorithms=list(ALGORITHMS))
log = logging.getLogger("authgate")


def verify_software_statement(statement: object, trusted: Mapping[str, Mapping[str, Any]], now: int
                              ) -> dict[str, Any]:
    """Verify ``statement`` and return its metadata claims (JWT bookkeeping claims removed)."""
    if not isinstance(statement, str) or not statement or len(statement) > MAX_STATEMENT_LENGTH:
        raise InvalidSoftwareStatement("software_statement must be a compact JWS")
    try:
        unverified = jws.extract_compact(statement.encode("ascii"))
        header = unverified.headers()
        claims = json.loads(unverified.payload)
    except (JoseError, ValueError, UnicodeError) as exc:
        raise InvalidSoftwareStatement("software_statement is malformed") from exc
    if header.get("alg") not in ALGORITHMS:
        raise InvalidSoftwareStatement("software_statement must be signed with an asymmetric algorithm")
    if not isinstance(claims, dict) or not isinstance(claims.get("iss"), str):
        raise InvalidSoftwareStatement("software_statement must carry an iss claim")
    issuer: str = claims["iss"]
    jwks = trusted.get(issuer)
    if jwks is None:
        raise UnapprovedSoftwareStatement("software statement issuer is not trusted")
    try:
        keys = KeySet.import_key_set(dict(jwks))  # type: ignore[arg-type]
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        log.error("software_statement_issuers[%r] is not a usable JWKS: %s", issuer, exc)
        raise UnapprovedSoftwareStatement("software statement issuer is not trusted") from exc
    try:
        token = jwt.decode(statement, keys, algorithms=list(ALGORITHMS), registry=_registry)
        jwt.JWTClaimsRegistry(now=now, leeway=SKEW, iss={"essential": True, "value": issuer}).validate(
            token.claims
        )
    except (JoseError, ValueError) as exc:
        raise InvalidSoftwareStatement("software_statement signature or validity check failed",
                                       debug=f"{type(exc).__name__}: {exc}") from exc
    return {k: v for k, v in token.claims.items() if k not in _JWT_CLAIMS}

