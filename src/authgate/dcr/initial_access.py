"""Initial access tokens (RFC 7591 §1.2, §3): what ``registration = "token"`` requires at ``POST /register``.

An operator issues one out of band (``issue_initial_access_token``, used by the CLI); the client sends it as
``Authorization: Bearer <token>`` (RFC 6750 §2.1), never in the JSON body. Only the SHA-256 of the token is
stored, as the id of an ``initial_access_token`` artefact carrying its expiry and whether it is single use;
single use is enforced with the store's atomic ``consume_artifact``.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from authgate.crypto.hashing import new_token, token_hash
from authgate.errors import InvalidToken
from authgate.store import Store

KIND = "initial_access_token"


async def issue_initial_access_token(store: Store, ttl: int, single_use: bool) -> str:
    """Create an initial access token valid for ``ttl`` seconds and return it (it is not stored in clear)."""
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    token = new_token()
    await store.put_artifact(token_hash(token), KIND, {"single_use": bool(single_use)}, ttl)
    return token


def bearer_token(request: Request) -> str | None:
    """The RFC 6750 §2.1 bearer token of the request, or None when there is none."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value or " " in value:
        return None
    return value


@dataclass(frozen=True)
class InitialAccess:
    """A presented, currently usable initial access token; ``redeem`` spends it if it is single use."""

    id: str
    single_use: bool

    async def redeem(self, store: Store) -> None:
        if not self.single_use:
            return
        _, won = await store.consume_artifact(self.id, KIND)
        if not won:
            raise InvalidToken("initial access token already used or expired")


async def check_initial_access(request: Request, store: Store, now: int) -> InitialAccess:
    """Find the request's initial access token; 401 with a bearer challenge if it is missing or unusable."""
    token = bearer_token(request)
    if token is None:
        raise InvalidToken("an initial access token is required")
    artifact = await store.get_artifact(token_hash(token), KIND)
    if artifact is None or not artifact.usable(now):
        raise InvalidToken("initial access token is invalid or expired")
    return InitialAccess(artifact.id, bool(artifact.payload.get("single_use")))
