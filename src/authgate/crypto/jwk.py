"""Public JWKs for HTTP message signatures: import with algorithm checks, RFC 7638 thumbprints, a parse cache.

Agent Auth names the signature algorithm by the key's JWK ``alg`` (RFC 9421 §3.3.7, the JOSE path), so a key is
only usable together with a fully specified algorithm (RFC 9864): ``Ed25519`` (OKP/Ed25519) or ``ES256``
(EC/P-256). ``EdDSA`` is refused unless the caller opts into the legacy name; ``kty``/``crv`` must agree with
``alg``. Imported keys are cached by their public members, because importing a P-256 point costs about as much as
verifying a signature (PERFORMANCE.md rule 2).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ED25519 = "Ed25519"
ES256 = "ES256"
EDDSA = "EdDSA"  # the legacy, curve-ambiguous name; only with allow_eddsa
SUPPORTED_ALGS = (ED25519, ES256)

PublicKey = Ed25519PublicKey | ec.EllipticCurvePublicKey
PrivateKey = Ed25519PrivateKey | ec.EllipticCurvePrivateKey


class JWKError(ValueError):
    """The JWK is malformed, or its algorithm is unsupported (``unsupported`` tells which)."""

    def __init__(self, message: str, *, unsupported: bool = False) -> None:
        super().__init__(message)
        self.unsupported = unsupported


def b64u_decode(value: Any) -> bytes:
    if not isinstance(value, str) or "=" in value or len(value) > 4096:
        raise JWKError("bad base64url value")
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError) as exc:
        raise JWKError("bad base64url value") from exc


def b64u_encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint (base64url) over the required members only (no ``alg``, no ``kid``)."""
    kty = jwk.get("kty")
    if kty == "OKP":
        members = {"crv": jwk["crv"], "kty": "OKP", "x": jwk["x"]}
    elif kty == "EC":
        members = {"crv": jwk["crv"], "kty": "EC", "x": jwk["x"], "y": jwk["y"]}
    elif kty == "RSA":
        members = {"e": jwk["e"], "kty": "RSA", "n": jwk["n"]}
    else:
        raise JWKError("unknown kty")
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return b64u_encode(hashlib.sha256(canonical).digest())


def public_jwk(key: PrivateKey | PublicKey, *, kid: str | None = None) -> dict[str, str]:
    """The public JWK of ``key`` with its fully specified ``alg`` (what we publish and put in ``cnf.jwk``)."""
    pub = key.public_key() if isinstance(key, (Ed25519PrivateKey, ec.EllipticCurvePrivateKey)) else key
    if isinstance(pub, Ed25519PublicKey):
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64u_encode(pub.public_bytes(Encoding.Raw, PublicFormat.Raw)),
               "alg": ED25519}
    elif isinstance(pub, ec.EllipticCurvePublicKey) and isinstance(pub.curve, ec.SECP256R1):
        nums = pub.public_numbers()
        jwk = {"kty": "EC", "crv": "P-256", "x": b64u_encode(nums.x.to_bytes(32, "big")),
               "y": b64u_encode(nums.y.to_bytes(32, "big")), "alg": ES256}
    else:
        raise JWKError("only Ed25519 and P-256 keys are supported", unsupported=True)
    if kid is not None:
        jwk["kid"] = kid
    return jwk


def key_alg(key: PrivateKey | PublicKey) -> str:
    """The JOSE algorithm a key signs with: ``Ed25519`` or ``ES256``."""
    return public_jwk(key)["alg"]


@dataclass(frozen=True)
class VerificationKey:
    """A parsed public key ready to verify: its algorithm, RFC 7638 thumbprint and the JWK it came from."""

    alg: str
    key: PublicKey = field(repr=False)
    jkt: str
    jwk: Mapping[str, Any] = field(repr=False)

    @property
    def kid(self) -> str | None:
        kid = self.jwk.get("kid")
        return kid if isinstance(kid, str) else None


_CACHE: dict[tuple[Any, ...], VerificationKey] = {}
_CACHE_MAX = 4096


def _alg_for(kty: Any, crv: Any, alg: Any, allow_eddsa: bool) -> str:
    if kty == "OKP" and crv == "Ed25519":
        natural = ED25519
    elif kty == "EC" and crv == "P-256":
        natural = ES256
    else:
        raise JWKError(f"unsupported key type {kty}/{crv}", unsupported=True)
    if alg is None:
        return natural  # lenient: a key without alg gets the only algorithm its type allows
    if alg == EDDSA and natural == ED25519:
        if allow_eddsa:
            return ED25519
        raise JWKError("alg EdDSA is not fully specified; use Ed25519", unsupported=True)
    if alg != natural:
        raise JWKError(f"alg {alg!r} does not fit a {kty}/{crv} key", unsupported=True)
    return natural


def load_public_jwk(jwk: Mapping[str, Any], *, allow_eddsa: bool = False) -> VerificationKey:
    """Import a public JWK (cached), checking ``kty``/``crv``/``alg`` agree.

    Raises :class:`JWKError`; ``unsupported`` is set when the key is well formed but its algorithm is not one
    we accept (maps to ``unsupported_algorithm``), else it is malformed (``invalid_key``).
    """
    if not isinstance(jwk, Mapping):
        raise JWKError("JWK must be an object")
    if "d" in jwk:
        raise JWKError("a private key was sent as a public JWK")
    kty, crv, x, y, alg = jwk.get("kty"), jwk.get("crv"), jwk.get("x"), jwk.get("y"), jwk.get("alg")
    if not all(v is None or isinstance(v, str) for v in (kty, crv, x, y, alg)):
        # A JSON array or object member would be unhashable as a cache key: a TypeError, i.e. a 500.
        raise JWKError("JWK members kty, crv, x, y and alg must be strings")
    cache_key = (kty, crv, x, y, alg, allow_eddsa)
    hit = _CACHE.get(cache_key)
    if hit is not None:
        return hit
    algorithm = _alg_for(kty, crv, alg, allow_eddsa)
    key: PublicKey
    try:
        if algorithm == ED25519:
            raw = b64u_decode(x)
            if len(raw) != 32:
                raise JWKError("Ed25519 x must be 32 bytes")
            key = Ed25519PublicKey.from_public_bytes(raw)
        else:
            bx, by = b64u_decode(x), b64u_decode(y)
            if len(bx) != 32 or len(by) != 32:
                raise JWKError("P-256 coordinates must be 32 bytes")
            key = ec.EllipticCurvePublicNumbers(
                int.from_bytes(bx, "big"), int.from_bytes(by, "big"), ec.SECP256R1()).public_key()
    except JWKError:
        raise
    except (ValueError, TypeError) as exc:
        raise JWKError("invalid public key") from exc
    vk = VerificationKey(alg=algorithm, key=key, jkt=jwk_thumbprint(jwk), jwk=dict(jwk))
    if len(_CACHE) >= _CACHE_MAX:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[cache_key] = vk
    return vk
