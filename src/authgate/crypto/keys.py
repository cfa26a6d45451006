"""The authorization server's signing keys: creation, rotation, the public JWKS, and JWT signing.

Keys live in the store so every server process signs with the same key and publishes the same set. Parsed
keys are cached by ``kid``; the store is re-read only when a key is missing or the cache is older than
``refresh_every`` seconds, so a rotation done by ``authgate keys rotate`` reaches running processes.
"""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from joserfc.jwk import ECKey, KeySet

from authgate.clock import Clock, SystemClock
from authgate.store import SigningKeyRow, Store

ALG = "ES256"


def generate_signing_key(now: int) -> SigningKeyRow:
    kid = secrets.token_urlsafe(12)
    key = ECKey.generate_key("P-256", parameters={"kid": kid, "alg": ALG, "use": "sig"}, private=True)
    return SigningKeyRow(
        kid=kid, alg=ALG, private_jwk=dict(key.as_dict(private=True)), created_at=now, retired_at=None,
        remove_after=None,
    )


_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def sign_compact(key: ECKey, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """An ES256 JWS in compact form (RFC 7515 §7.1; the signature is R || S, RFC 7518 §3.4).

    Written out rather than through joserfc's general-purpose encoder, which costs three times the signature
    itself on the token endpoint; verification stays with joserfc (tests check each other's output)."""
    signing_input = _b64(json.dumps(header, separators=(",", ":")).encode()) + b"." + _b64(
        json.dumps(claims, separators=(",", ":")).encode())
    private = key.private_key
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    r, s = decode_dss_signature(private.sign(signing_input, _ECDSA_SHA256))
    return (signing_input + b"." + _b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))).decode("ascii")


class KeyRing:
    def __init__(self, store: Store, clock: Clock | None = None, refresh_every: float = 60.0) -> None:
        self.store = store
        self.clock = clock or SystemClock()
        self.refresh_every = refresh_every
        self._keys: dict[str, ECKey] = {}
        self._active: str | None = None
        self._loaded_at = float("-inf")

    async def ensure_key(self) -> None:
        """Create the first signing key if the store has none."""
        if not await self.store.list_signing_keys():
            await self.store.add_signing_key(generate_signing_key(int(self.clock.now())))
        await self.reload()

    async def rotate(self, keep_old_for: int) -> str:
        """Start signing with a new key; the old ones stay published for ``keep_old_for`` seconds."""
        now = int(self.clock.now())
        row = generate_signing_key(now)
        await self.store.add_signing_key(row, retire_others_until=now + keep_old_for)
        await self.reload()
        return row.kid

    async def reload(self) -> None:
        rows = await self.store.list_signing_keys()
        self._keys = {r.kid: ECKey.import_key(r.private_jwk) for r in rows}
        active = [r for r in rows if r.retired_at is None]
        self._active = active[0].kid if active else None
        self._loaded_at = self.clock.now()

    async def _fresh(self) -> None:
        if self.clock.now() - self._loaded_at > self.refresh_every:
            await self.reload()

    async def sign(self, claims: dict[str, Any], typ: str = "at+jwt") -> str:
        await self._fresh()
        if self._active is None:
            await self.ensure_key()
        assert self._active is not None
        header = {"alg": ALG, "typ": typ, "kid": self._active}
        return sign_compact(self._keys[self._active], header, claims)

    async def jwks(self) -> dict[str, Any]:
        await self._fresh()
        return {"keys": [dict(k.as_dict(private=False)) for k in self._keys.values()]}

    async def key_set(self, kid: str | None) -> KeySet:
        """Keys for verifying our own tokens; an unknown ``kid`` forces one reload (rotation elsewhere)."""
        await self._fresh()
        if kid is not None and kid not in self._keys:
            await self.reload()
        return KeySet(list(self._keys.values()))
