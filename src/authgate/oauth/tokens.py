"""Issuing access tokens (RFC 9068 JWTs) and refresh tokens, and reading our own tokens back.

Each access token also gets a small record keyed by its ``jti`` so that introspection and revocation can
answer for it; resource servers that verify the JWT locally never need the record. Refresh tokens are opaque,
stored only as hashes, and grouped by ``grant_id`` so a replayed one can revoke its whole family.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError

from authgate.context import ServerContext
from authgate.crypto.hashing import new_token, token_hash
from authgate.crypto.keys import ALG
from authgate.errors import InvalidGrant
from authgate.oauth.clients import Client
from authgate.store import AuditEntry, NewArtifact

ACCESS_TOKEN = "access_token"
REFRESH_TOKEN = "refresh_token"


@dataclass(frozen=True)
class Grant:
    """What the resource owner (or, for client credentials, the client itself) granted."""

    client_id: str
    subject: str
    scopes: tuple[str, ...]
    audience: str
    grant_id: str
    auth_time: int | None = None


def new_grant_id() -> str:
    return secrets.token_urlsafe(18)


#: Claims ``issue_tokens`` always sets itself; ``extra_claims`` may not replace them.
RESERVED_CLAIMS = frozenset({"iss", "sub", "aud", "client_id", "iat", "nbf", "exp", "jti", "scope", "auth_time"})


async def issue_tokens(ctx: ServerContext, client: Client, grant: Grant, *, refresh: bool,
                       family_expires_at: int | None = None, extra_claims: dict[str, Any] | None = None,
                       ttl: int | None = None) -> dict[str, Any]:
    """Mint an access token (and optionally a refresh token in the grant's family); return the token response.

    ``extra_claims`` (e.g. RFC 8693 ``act``, ``amr``) are added to the access token; they may not replace a
    claim set here (``auth_time`` comes from the grant). ``ttl`` overrides ``access_token_ttl``."""
    clash = RESERVED_CLAIMS & set(extra_claims or {})
    if clash:
        raise ValueError(f"extra_claims may not set {', '.join(sorted(clash))}")
    if ttl is not None and ttl <= 0:
        raise ValueError("ttl must be positive")
    actor = (extra_claims or {}).get("act")
    if await ctx.killswitch.killed(clients=[client.client_id], users=[grant.subject], agents=[
            client.client_id, actor.get("sub") if isinstance(actor, dict) else None]):
        raise InvalidGrant("disabled by the kill switch")
    now = ctx.now()
    ttl = ttl or ctx.settings.access_token_ttl
    jti = secrets.token_urlsafe(16)
    access_scopes = [s for s in grant.scopes if s != "offline_access"]
    claims: dict[str, Any] = {
        "iss": ctx.issuer,
        "sub": grant.subject,
        "aud": grant.audience,
        "client_id": client.client_id,
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
        "jti": jti,
    }
    if access_scopes:
        claims["scope"] = " ".join(access_scopes)
    if grant.auth_time is not None:
        claims["auth_time"] = grant.auth_time
    claims.update(extra_claims or {})
    access_token = await ctx.keys.sign(claims)
    records = [NewArtifact(
        jti, ACCESS_TOKEN,
        {"sub": grant.subject, "aud": grant.audience, "scope": claims.get("scope", ""), "exp": now + ttl},
        ttl, client_id=client.client_id, grant_id=grant.grant_id,
    )]
    response: dict[str, Any] = {
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": ttl,
        "scope": " ".join(grant.scopes),
    }
    if refresh:
        family_end = family_expires_at or now + ctx.settings.refresh_token_ttl
        refresh_token = new_token()
        records.append(NewArtifact(
            token_hash(refresh_token), REFRESH_TOKEN,
            {
                "sub": grant.subject,
                "scope": list(grant.scopes),
                "aud": grant.audience,
                "auth_time": grant.auth_time,
                "family_expires_at": family_end,
            },
            max(1, family_end - now), client_id=client.client_id, grant_id=grant.grant_id,
        ))
        response["refresh_token"] = refresh_token
    audit = AuditEntry("token.issued", client.client_id, grant.subject, {
        "grant_id": grant.grant_id, "aud": grant.audience, "scope": response["scope"], "refresh": refresh})
    await ctx.store.put_artifacts(records, audit)
    return response


def unverified_header(token: str) -> dict[str, Any] | None:
    head = token.split(".", 1)[0]
    try:
        value = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (binascii.Error, ValueError):
        return None
    return value if isinstance(value, dict) else None


async def decode_own_access_token(ctx: ServerContext, token: str, *, check_expiry: bool = True
                                  ) -> dict[str, Any] | None:
    """The claims of an access token we signed, or None if it is not one (or expired, when checked)."""
    if token.count(".") != 2 or len(token) > 8192:
        return None
    header = unverified_header(token)
    if header is None or header.get("typ") != "at+jwt" or header.get("alg") != ALG:
        return None
    kid = header.get("kid")
    keys = await ctx.keys.key_set(kid if isinstance(kid, str) else None)
    try:
        claims = dict(jwt.decode(token, keys, algorithms=[ALG]).claims)
    except (JoseError, ValueError):
        return None
    if claims.get("iss") != ctx.issuer:
        return None
    exp = claims.get("exp")
    if check_expiry and (not isinstance(exp, int) or exp <= ctx.now()):
        return None
    return claims
