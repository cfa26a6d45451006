"""Trusted issuers and the offline JWT check shared by mandates and attestations.

Keys are resolved at configuration time into ``issuer -> kid -> key`` (no fetch on the hot path, like
agentgateway's JWT module); a token is accepted only if its ``iss`` is configured *and* its ``kid`` is one of
that issuer's keys, so a key trusted for one issuer never vouches for another.

An issuer can also be *live* (``add_source``): its JWKS comes from a callable, re-read by ``refresh()`` — how a
gateway inside ``authgate serve`` trusts the server's own key ring, whose keys rotate. ``refresh`` re-imports keys
only when the document changed, so calling it before each verification costs a dict comparison.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, JWKRegistry, OKPKey, RSAKey

from authgate.trust.errors import TrustError
from authgate.trust.wire import MAX_JWT

ALGORITHMS = ("ES256", "EdDSA", "RS256", "PS256")
Key = ECKey | OKPKey | RSAKey


def same_agent(a: str, b: str) -> bool:
    """Identifier equality in constant time; payer addresses (0x…) compare case-insensitively (EIP-55 case
    is a checksum, not identity)."""
    if a.startswith(("0x", "0X")) and b.startswith(("0x", "0X")):
        a, b = a.lower(), b.lower()
    return secrets.compare_digest(a.encode(), b.encode())


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


class TrustedIssuers:
    """``{issuer: JWKS}`` → verification keys. Private members of a JWK are dropped, never used."""

    def __init__(self, issuers: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self._keys: dict[str, dict[str, Key]] = {}
        self._sources: dict[str, Callable[[], Awaitable[Mapping[str, Any]]]] = {}
        self._seen: dict[str, Mapping[str, Any]] = {}
        for issuer, jwks in (issuers or {}).items():
            self.add(issuer, jwks)

    def add_source(self, issuer: str, jwks: Callable[[], Awaitable[Mapping[str, Any]]]) -> None:
        """Trust ``issuer`` with the keys ``jwks()`` returns at each ``refresh`` (e.g. ``ctx.keys.jwks``)."""
        self._sources[issuer] = jwks
        self._keys.setdefault(issuer, {})

    async def refresh(self) -> None:
        """Re-read the live issuers' key sets; a no-op without live issuers."""
        for issuer, source in self._sources.items():
            document = await source()
            if self._seen.get(issuer) != document:
                self.add(issuer, document)
                self._seen[issuer] = document

    def add(self, issuer: str, jwks: Mapping[str, Any]) -> None:
        keys: dict[str, Key] = {}
        for member in jwks.get("keys", []):
            if not isinstance(member, Mapping) or not isinstance(member.get("kid"), str):
                raise ValueError(f"issuer {issuer}: every key needs a string kid")
            public = {k: v for k, v in member.items() if k not in ("d", "p", "q", "dp", "dq", "qi")}
            key = JWKRegistry.import_key(public)
            if not isinstance(key, ECKey | OKPKey | RSAKey):
                raise ValueError(f"issuer {issuer}: unsupported key type")
            keys[member["kid"]] = key
        self._keys[issuer] = keys

    def __contains__(self, issuer: object) -> bool:
        return issuer in self._keys

    def issuers(self) -> list[str]:
        return sorted(self._keys)

    def verify(self, token: str, *, typ: str, now: int, errors: Mapping[str, str], leeway: int = 30
               ) -> dict[str, Any]:
        """Verify signature, ``typ``, ``iss``, ``exp``/``nbf``/``iat``; return the claims.

        ``errors`` maps ``invalid``/``untrusted``/``expired`` to the caller's error codes."""
        if not isinstance(token, str) or not token or len(token) > MAX_JWT:
            raise TrustError(errors["invalid"], "not a token of acceptable size")
        parts = token.split(".")
        if len(parts) != 3 or not all(parts):
            raise TrustError(errors["invalid"], "not a compact JWS")
        try:
            header = json.loads(_b64(parts[0]))
            claims = json.loads(_b64(parts[1]))
        except (ValueError, binascii.Error):
            raise TrustError(errors["invalid"], "header or payload is not base64url JSON") from None
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise TrustError(errors["invalid"], "header or payload is not an object")
        if str(header.get("typ", "")).lower() != typ:
            raise TrustError(errors["invalid"], f"typ must be {typ}")
        alg = header.get("alg")
        if alg not in ALGORITHMS or "crit" in header:
            raise TrustError(errors["invalid"], "algorithm not allowed")
        iss = claims.get("iss")
        kid = header.get("kid")
        if not isinstance(iss, str) or iss not in self._keys:
            raise TrustError(errors["untrusted"], "issuer is not trusted")
        key = self._keys[iss].get(kid) if isinstance(kid, str) else None
        if key is None:
            raise TrustError(errors["untrusted"], "signing key is not one of the issuer's trusted keys")
        try:
            jws.deserialize_compact(token, key, algorithms=[str(alg)])
        except (JoseError, ValueError):
            raise TrustError(errors["untrusted"], "signature does not verify with the issuer's key") from None
        exp = claims.get("exp")
        if not isinstance(exp, int) or isinstance(exp, bool):
            raise TrustError(errors["invalid"], "exp is required")
        if exp + leeway <= now:
            raise TrustError(errors["expired"], "expired")
        nbf = claims.get("nbf", claims.get("iat"))
        if nbf is not None and (not isinstance(nbf, int) or nbf - leeway > now):
            raise TrustError(errors["invalid"], "not valid yet")
        return claims
