"""Local validation of JWT access tokens (RFC 9068 §4), as a resource server does it.

Order of checks, cheapest first, so junk never costs a key lookup or a signature:

1. size and shape (three base64url parts), header JSON;
2. header: ``typ`` is ``at+jwt`` (RFC 9068 §2.1; an ID token must not pass), ``alg`` in an asymmetric
   allowlist (never ``none`` or ``HS*``), no ``crit``;
3. key by ``kid`` from the cached JWKS (:mod:`authgate.resource.jwks`), signature;
4. claims: ``iss`` exact, ``aud`` names this resource (canonical comparison), ``exp``/``nbf``/``iat`` with a
   small leeway, ``sub``/``client_id``/``jti`` present.

Every refusal raises :class:`TokenRejected` with a machine-readable ``reason`` that is logged; clients only
ever see a generic ``invalid_token``.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import logging
import re
from base64 import urlsafe_b64decode
from collections import OrderedDict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

from authgate.clock import Clock, SystemClock
from authgate.resource.jwks import KeySourceError, PublicKey, RemoteJWKS
from authgate.resource.metadata import canonical_resource

log = logging.getLogger("authgate.resource")

ACCESS_TOKEN_TYPES = frozenset({"at+jwt", "application/at+jwt"})
# Asymmetric JWS algorithms we verify. "EdDSA" is deprecated by RFC 9864 in favour of "Ed25519".
SUPPORTED_ALGORITHMS = frozenset(
    {"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "Ed25519"}
)
DEFAULT_ALGORITHMS = ("ES256", "RS256", "PS256", "Ed25519")
MAX_TOKEN_BYTES = 8 * 1024
REQUIRED_STRING_CLAIMS = ("iss", "sub", "client_id", "jti")


class TokenRejected(Exception):
    """A token failed validation. ``reason`` is for logs and metrics, never for the client."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class VerifierUnavailable(Exception):
    """The verifier cannot judge any token right now (no keys could be loaded): a server problem."""


@dataclass(frozen=True)
class AccessClaims:
    """What a verified access token says, typed."""

    subject: str
    client_id: str
    scopes: frozenset[str]
    audience: str
    issuer: str
    expires_at: int
    issued_at: int
    token_id: str
    claims: Mapping[str, Any] = field(repr=False)

    def has_scopes(self, required: Collection[str]) -> bool:
        return self.scopes.issuperset(required)


class TokenVerifier(Protocol):
    """Anything that turns a bearer token into :class:`AccessClaims` (JWT today, introspection later)."""

    @property
    def audience(self) -> str: ...

    async def verify(self, token: str) -> AccessClaims:
        """Raise :class:`TokenRejected` or :class:`VerifierUnavailable` if the token is not acceptable."""


_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def _b64decode(part: str) -> bytes:
    """base64url without padding (RFC 7515 §2): any other character, padding included, is refused rather than
    skipped, so a token has exactly one spelling."""
    if not _B64URL.fullmatch(part):
        raise ValueError("not base64url without padding")
    return urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _number(claims: Mapping[str, Any], name: str, *, required: bool) -> int | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise TokenRejected("missing_claim", name)
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenRejected("malformed_claim", name)
    return int(value)


_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


def _verify_es256(key: ECKey, parts: list[str]) -> bytes:
    """The payload of an ES256 compact JWS whose signature ``key`` made (RFC 7515 §5.2, RFC 7518 §3.4), checked
    with ``cryptography`` directly: the header was parsed and checked by the caller already, and the general
    JWS parser would decode it again (it doubles the cost of a check)."""
    public = key.public_key
    if not isinstance(public, ec.EllipticCurvePublicKey) or not isinstance(public.curve, ec.SECP256R1):
        raise TokenRejected("alg_key_mismatch", "ES256 needs a P-256 key")
    try:
        signature = _b64decode(parts[2])
        payload = _b64decode(parts[1])
    except (ValueError, binascii.Error) as exc:
        raise TokenRejected("bad_signature", "not base64url") from exc
    if len(signature) != 64:
        raise TokenRejected("bad_signature", "ES256 signature is not R || S")
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        public.verify(der, f"{parts[0]}.{parts[1]}".encode("ascii"), _ECDSA_SHA256)
    except (InvalidSignature, UnicodeEncodeError) as exc:
        raise TokenRejected("bad_signature", "InvalidSignature") from exc
    return payload


class JWTVerifier:
    """Verifies RFC 9068 access tokens issued by ``issuer`` for the resource ``audience``."""

    def __init__(
        self,
        issuer: str,
        audience: str,
        jwks_uri: str | None = None,
        http_client: httpx.AsyncClient | None = None,
        clock: Clock | None = None,
        leeway: float = 30.0,
        *,
        algorithms: Collection[str] = DEFAULT_ALGORITHMS,
        refetch_interval: float = 30.0,
        jwks_max_age: float = 3600.0,
        verified_cache: int = 1024,
    ) -> None:
        bad = set(algorithms) - SUPPORTED_ALGORITHMS
        if bad or not algorithms:
            raise ValueError(f"unsupported or symmetric algorithms: {sorted(bad) or 'none given'}")
        if not 0 <= leeway <= 300:
            raise ValueError("leeway must be between 0 and 300 seconds")
        self.issuer = issuer
        self._audience = canonical_resource(audience)
        self.algorithms = frozenset(algorithms)
        self.clock = clock or SystemClock()
        self.leeway = leeway
        self.keys = RemoteJWKS(
            issuer, jwks_uri=jwks_uri, http_client=http_client, clock=self.clock,
            refetch_interval=refetch_interval, max_age=jwks_max_age,
        )
        if verified_cache < 0:
            raise ValueError("verified_cache must not be negative")
        #: ``verified_cache`` > 0: that many tokens that passed, keyed by a SHA-256 of the token (never the token),
        #: each with the key object that verified it. A hit skips parsing and the signature check (the costly
        #: part, ~0.2 ms for ES256) but not the time checks, and counts only while that very key is still the
        #: JWKS's key for its kid (a refresh that drops or replaces it makes every entry it verified miss).
        self.verified_cache = verified_cache
        #: Each entry: the key, its kid, the claims, and the window [from, until) in which the time checks pass
        #: (``max(nbf, iat) - leeway`` to ``exp + leeway``), so a recall compares two numbers.
        self._verified: OrderedDict[bytes, tuple[PublicKey, str | None, AccessClaims, float, float]] = OrderedDict()

    @property
    def audience(self) -> str:
        """This resource's identifier, canonical."""
        return self._audience

    async def aclose(self) -> None:
        await self.keys.aclose()

    def recall(self, token: str) -> AccessClaims | None:
        """The claims of ``token`` if it verified before and still would now, decided without awaiting: its entry
        in the verified cache, its key still the JWKS's current key for its kid with no refresh due, and
        ``exp``/``nbf``/``iat`` still good. None means "call :meth:`verify`" (which also words every refusal).
        The middleware's path for a token presented again."""
        if not self.verified_cache or len(token) > MAX_TOKEN_BYTES:
            return None
        return self._recall(hashlib.sha256(token.encode()).digest())

    def _recall(self, digest: bytes) -> AccessClaims | None:
        hit = self._verified.get(digest)
        if hit is None:
            return None
        key, kid, claims, valid_from, valid_until = hit
        if self.keys.current(kid) is not key or not valid_from <= self.clock.now() < valid_until:
            return None
        self._verified.move_to_end(digest)
        return claims

    async def verify(self, token: str) -> AccessClaims:
        digest = None
        try:
            if self.verified_cache and len(token) <= MAX_TOKEN_BYTES:
                digest = hashlib.sha256(token.encode()).digest()  # once: the recall and the slower paths share it
                recalled = self._recall(digest)
                if recalled is not None:
                    return recalled
                hit = self._verified.get(digest)
                if hit is not None:
                    key, kid, claims, _, _ = hit
                    try:
                        current = await self.keys.get(kid)
                    except KeySourceError as exc:
                        raise VerifierUnavailable(str(exc)) from exc
                    if current is key:
                        self._check_times(claims.claims)
                        self._verified.move_to_end(digest)
                        return claims
                    del self._verified[digest]  # the key changed: verify afresh
            return await self._verify(token, digest)
        except TokenRejected as exc:
            if digest is not None:
                self._verified.pop(digest, None)
            log.info("access token rejected: %s", exc)
            raise

    def _remember(self, digest: bytes, key: PublicKey, kid: str | None, claims: AccessClaims) -> None:
        # the claims passed _check_times a moment ago: exp and iat are numbers, nbf a number or absent
        exp, iat = claims.claims["exp"], claims.claims["iat"]
        nbf = claims.claims.get("nbf")
        valid_from = max(int(iat), int(iat) if nbf is None else int(nbf)) - self.leeway
        self._verified[digest] = (key, kid, claims, valid_from, int(exp) + self.leeway)
        while len(self._verified) > self.verified_cache:
            self._verified.popitem(last=False)

    async def _verify(self, token: str, digest: bytes | None = None) -> AccessClaims:
        if len(token) > MAX_TOKEN_BYTES:
            raise TokenRejected("too_large")
        parts = token.split(".")
        if len(parts) != 3 or not all(parts):
            raise TokenRejected("malformed", "not a JWS compact serialization")
        try:
            header = json.loads(_b64decode(parts[0]))
        except (ValueError, binascii.Error) as exc:
            raise TokenRejected("malformed", "header is not base64url JSON") from exc
        if not isinstance(header, dict):
            raise TokenRejected("malformed", "header is not an object")

        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in ACCESS_TOKEN_TYPES:
            raise TokenRejected("wrong_type", f"typ={typ!r}")
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise TokenRejected("alg_not_allowed", f"alg={alg!r}")
        if "crit" in header:
            raise TokenRejected("unsupported_crit")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise TokenRejected("malformed", "kid is not a string")

        try:
            key = await self.keys.get(kid)
        except KeySourceError as exc:
            raise VerifierUnavailable(str(exc)) from exc
        if key is None:
            raise TokenRejected("unknown_key", f"kid={kid!r}")
        key_alg = key.get("alg")
        if key_alg is not None and key_alg != alg:
            raise TokenRejected("alg_key_mismatch", f"token alg={alg!r}, key alg={key_alg!r}")
        if alg == "ES256" and isinstance(key, ECKey):
            payload = _verify_es256(key, parts)
        else:
            try:
                payload = jws.deserialize_compact(token, key, algorithms=[str(alg)]).payload
            except (JoseError, ValueError) as exc:
                raise TokenRejected("bad_signature", exc.__class__.__name__) from exc

        try:
            claims = json.loads(payload)
        except ValueError as exc:
            raise TokenRejected("malformed", "payload is not JSON") from exc
        if not isinstance(claims, dict):
            raise TokenRejected("malformed", "payload is not an object")
        checked = self._check_claims(claims)
        if digest is not None:
            self._remember(digest, key, kid, checked)
        return checked

    def _check_claims(self, claims: dict[str, Any]) -> AccessClaims:
        for name in REQUIRED_STRING_CLAIMS:
            value = claims.get(name)
            if value is None:
                raise TokenRejected("missing_claim", name)
            if not isinstance(value, str) or not value:
                raise TokenRejected("malformed_claim", name)
        if claims["iss"] != self.issuer:
            raise TokenRejected("wrong_issuer", repr(claims["iss"]))

        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud
        if not isinstance(audiences, list) or not audiences:
            raise TokenRejected("missing_claim" if aud is None else "malformed_claim", "aud")
        if not any(isinstance(a, str) and self._matches(a) for a in audiences):
            raise TokenRejected("wrong_audience", repr(aud))

        exp, iat = self._check_times(claims)

        scope = claims.get("scope", "")
        if not isinstance(scope, str):
            raise TokenRejected("malformed_claim", "scope")
        return AccessClaims(
            subject=claims["sub"],
            client_id=claims["client_id"],
            scopes=frozenset(scope.split()),
            audience=self._audience,
            issuer=claims["iss"],
            expires_at=exp,
            issued_at=iat,
            token_id=claims["jti"],
            claims=MappingProxyType(claims),
        )

    def _check_times(self, claims: Mapping[str, Any]) -> tuple[int, int]:
        """``exp``, ``nbf`` and ``iat`` against now, with the leeway: the checks a cached result repeats."""
        now = self.clock.now()
        exp = _number(claims, "exp", required=True)
        iat = _number(claims, "iat", required=True)
        nbf = _number(claims, "nbf", required=False)
        assert exp is not None and iat is not None
        if now >= exp + self.leeway:
            raise TokenRejected("expired", f"exp={exp}")
        if nbf is not None and now + self.leeway < nbf:
            raise TokenRejected("not_yet_valid", f"nbf={nbf}")
        if now + self.leeway < iat:
            raise TokenRejected("issued_in_future", f"iat={iat}")
        return exp, iat

    def _matches(self, aud: str) -> bool:
        if aud == self._audience:
            return True
        try:
            return canonical_resource(aud) == self._audience
        except ValueError:
            return False
