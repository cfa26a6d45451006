"""Our Ed25519 signing keys for Agent Auth tokens, kept in the store so every process signs alike.

Not the OAuth :class:`authgate.crypto.keys.KeyRing`: that ring is ES256 by construction (``ECKey`` import,
``ALG`` constant) and publishes at ``/jwks.json`` for OAuth resource servers; Agent Auth needs ``Ed25519``
(``alg`` written as ``Ed25519``, RFC 9864) published through the role metadata documents. Parsed keys are
cached; the store is re-read when a ``kid`` is unknown or every ``refresh_every`` seconds (rotation by
another process).
"""

from __future__ import annotations

import secrets
from typing import Any

from joserfc.jwk import OKPKey

from authgate.agentauth import wire
from authgate.agentauth.tokens import PublicKey, Signer, public_jwk
from authgate.clock import Clock
from authgate.store import Store
from authgate.store.agentauth import KeyRow


def generate_key_row(now: int) -> KeyRow:
    kid = secrets.token_urlsafe(12)
    key = OKPKey.generate_key("Ed25519", parameters={"kid": kid, "alg": wire.ALG_ED25519}, private=True)
    return KeyRow(kid=kid, alg=wire.ALG_ED25519, private_jwk=dict(key.as_dict(private=True)), created_at=now,
                  retired_at=None)


class AgentAuthKeys:
    def __init__(self, store: Store, clock: Clock, refresh_every: float = 60.0) -> None:
        self.store = store
        self.clock = clock
        self.refresh_every = refresh_every
        self._keys: dict[str, OKPKey] = {}
        self._active: str | None = None
        self._loaded_at = float("-inf")

    async def ensure(self) -> None:
        if not self._keys:
            await self.reload()
        if self._active is None:
            await self.store.agentauth.add_key(generate_key_row(int(self.clock.now())), only_if_none=True)
            await self.reload()

    async def rotate(self) -> str:
        row = generate_key_row(int(self.clock.now()))
        await self.store.agentauth.add_key(row)
        await self.reload()
        return row.kid

    async def reload(self) -> None:
        rows = await self.store.agentauth.keys()
        self._keys = {r.kid: OKPKey.import_key(r.private_jwk) for r in rows}
        active = [r for r in rows if r.retired_at is None]
        self._active = active[0].kid if active else None
        self._loaded_at = self.clock.now()

    async def signer(self) -> Signer:
        if self.clock.now() - self._loaded_at > self.refresh_every or self._active is None:
            await self.ensure()
            if self.clock.now() - self._loaded_at > self.refresh_every:
                await self.reload()
        assert self._active is not None
        return Signer(kid=self._active, key=self._keys[self._active])

    async def jwks(self) -> dict[str, Any]:
        await self.signer()
        return {"keys": [{**public_jwk(k), "kid": kid, "use": "sig"} for kid, k in self._keys.items()]}

    async def public_key(self, kid: str | None) -> PublicKey | None:
        """One of our own public keys (verifying tokens we issued without a network round trip)."""
        await self.signer()
        if kid is not None and kid not in self._keys:
            await self.reload()
        if kid is None:
            return None
        key = self._keys.get(kid)
        return OKPKey.import_key(public_jwk(key)) if key is not None else None
