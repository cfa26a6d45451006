"""Token introspection (RFC 7662) and revocation (RFC 7009).

Introspection is for authenticated confidential clients (resource servers) only, so tokens cannot be probed
anonymously; anything not currently valid is just ``{"active": false}``. Revocation answers 200 for unknown
tokens (RFC 7009 §2.2) but refuses to touch a token issued to another client.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from authgate.context import ServerContext
from authgate.crypto.hashing import token_hash
from authgate.errors import InvalidRequest
from authgate.httputil import json_response, oauth_endpoint, read_form
from authgate.oauth.client_auth import authenticate_client
from authgate.oauth.policy import require_single
from authgate.oauth.tokens import ACCESS_TOKEN, REFRESH_TOKEN, decode_own_access_token

MAX_TOKEN_LENGTH = 8192


async def introspect(ctx: ServerContext, token: str) -> dict[str, Any]:
    claims = await decode_own_access_token(ctx, token)
    if claims is not None:
        record = await ctx.store.get_artifact(str(claims.get("jti", "")), ACCESS_TOKEN)
        if record is None or record.revoked_at is not None:
            return {"active": False}
        act = claims.get("act")
        if await ctx.killswitch.killed(clients=[claims.get("client_id")], users=[claims.get("sub")], agents=[
                claims.get("client_id"), act.get("sub") if isinstance(act, dict) else None]):
            return {"active": False}
        out: dict[str, Any] = {"active": True, "token_type": "Bearer"}
        # act, amr, auth_time: who acts for the user and how the user was identified (the AAuth grant's tiers).
        for name in ("scope", "client_id", "sub", "aud", "iss", "exp", "iat", "nbf", "jti", "act", "amr", "auth_time"):
            if name in claims:
                out[name] = claims[name]
        return out
    refresh = await ctx.store.get_artifact(token_hash(token), REFRESH_TOKEN)
    if refresh is not None and refresh.usable(ctx.now()):
        p = refresh.payload
        if await ctx.killswitch.killed(clients=[refresh.client_id], users=[p.get("sub")],
                                       agents=[refresh.client_id]):
            return {"active": False}
        return {
            "active": True,
            "token_type": "refresh_token",
            "client_id": refresh.client_id,
            "sub": p["sub"],
            "scope": " ".join(p["scope"]),
            "aud": p["aud"],
            "iss": ctx.issuer,
            "exp": refresh.expires_at,
            "iat": refresh.created_at,
        }
    return {"active": False}


def routes(ctx: ServerContext) -> list[BaseRoute]:
    @oauth_endpoint
    async def introspection_endpoint(request: Request) -> Response:
        form = await read_form(request)
        client = await authenticate_client(ctx, request, form, allow_public=False)
        token = require_single(form.get("token"), "token")
        if len(token) > MAX_TOKEN_LENGTH:
            return json_response({"active": False})
        # Not audited: introspection grants nothing, and resource servers call it on every request.
        del client
        return json_response(await introspect(ctx, token))

    @oauth_endpoint
    async def revocation_endpoint(request: Request) -> Response:
        form = await read_form(request)
        client = await authenticate_client(ctx, request, form)
        token = require_single(form.get("token"), "token")
        # token_type_hint is only a hint (RFC 7009 §2.1): we look the token up as every type we issue anyway,
        # so an unknown hint is ignored rather than refused.
        if len(token) > MAX_TOKEN_LENGTH:
            return json_response({})
        claims = await decode_own_access_token(ctx, token, check_expiry=False)
        if claims is not None:
            if claims.get("client_id") != client.client_id:
                raise InvalidRequest("token was not issued to this client")
            await ctx.store.revoke_artifact(str(claims.get("jti", "")))
            await ctx.store.audit("token.revoked", client_id=client.client_id, kind=ACCESS_TOKEN)
            return json_response({})
        refresh = await ctx.store.get_artifact(token_hash(token), REFRESH_TOKEN)
        if refresh is not None:
            if refresh.client_id != client.client_id:
                raise InvalidRequest("token was not issued to this client")
            # Revoking a refresh token ends its grant, including access tokens issued from it (RFC 7009 §2.1).
            if refresh.grant_id:
                await ctx.store.revoke_grant(refresh.grant_id)
            else:
                await ctx.store.revoke_artifact(refresh.id)
            await ctx.store.audit("token.revoked", client_id=client.client_id, kind=REFRESH_TOKEN)
        return json_response({})

    return [
        Route("/introspect", introspection_endpoint, methods=["POST"]),
        Route("/revoke", revocation_endpoint, methods=["POST"]),
    ]
