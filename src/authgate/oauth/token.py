"""The token endpoint (OAuth 2.1 §3.2) and its grants, dispatched by ``grant_type``.

Every grant authenticates the client first, checks that the client registered the grant type, and answers
with ``Cache-Control: no-store``. Single use of codes and refresh tokens is decided by the database
(``Store.consume_artifact``); a second use of either revokes the whole grant (RFC 9700 §4.14.2, §4.5).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from authgate.aauth.grant import agent_authorization_grant
from authgate.context import ServerContext
from authgate.crypto.hashing import token_hash
from authgate.errors import (
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    OAuthError,
    UnauthorizedClient,
    UnsupportedGrantType,
    printable,
)
from authgate.httputil import json_response, oauth_endpoint, read_form
from authgate.oauth.authorize import AUTHORIZATION_CODE
from authgate.oauth.ciba import ciba_grant
from authgate.oauth.client_auth import authenticate_client
from authgate.oauth.clients import Client
from authgate.oauth.metadata import AAUTH_GRANT_TYPE, CIBA_GRANT_TYPE, TOKEN_EXCHANGE_GRANT_TYPE
from authgate.oauth.pkce import verifier_matches
from authgate.oauth.policy import (
    allowed_scopes,
    canonical_resource,
    check_resource,
    grant_scopes,
    parse_scope,
    require_single,
)
from authgate.oauth.token_exchange import token_exchange_grant
from authgate.oauth.tokens import REFRESH_TOKEN, Grant, issue_tokens, new_grant_id
from authgate.store import Artifact

GrantHandler = Callable[[ServerContext, Client, dict[str, str]], Awaitable[dict[str, Any]]]
#: A grant that also needs the HTTP request (the AAuth grant rate-limits by source address).
RequestGrantHandler = Callable[[ServerContext, Client, dict[str, str], Request], Awaitable[dict[str, Any]]]


async def _peek(ctx: ServerContext, client: Client, value: str, kind: str, message: str) -> Artifact:
    """The code or refresh token as stored, if it was issued to this client. Nothing is changed yet: a request
    that fails validation must leave a live code or refresh token usable (and is not a replay)."""
    artifact = await ctx.store.get_artifact(token_hash(value), kind)
    if artifact is None or artifact.client_id != client.client_id:
        raise InvalidGrant(message)
    if not artifact.usable(ctx.now()):
        await _replayed(ctx, client, artifact, message)
    return artifact


async def _replayed(ctx: ServerContext, client: Client, artifact: Artifact, message: str) -> NoReturn:
    """A used code or rotated-out refresh token came back: the value leaked, so revoke everything issued from
    the same grant (OAuth 2.1 §4.1.3, §4.3.1). Expired or revoked ones are just refused."""
    if artifact.consumed_at is not None and artifact.grant_id:
        await ctx.store.revoke_grant(artifact.grant_id)
        await ctx.store.audit(f"{artifact.kind}.replayed", client_id=client.client_id, grant_id=artifact.grant_id)
    raise InvalidGrant(message)


async def _redeem(ctx: ServerContext, client: Client, artifact: Artifact, message: str) -> None:
    """Consume a validated code or refresh token; exactly one concurrent request wins."""
    current, fresh = await ctx.store.consume_artifact(artifact.id, artifact.kind)
    if not fresh:
        await _replayed(ctx, client, current or artifact, message)


async def _still_live(ctx: ServerContext, artifact: Artifact, message: str) -> None:
    """After issuing: if a concurrent replay revoked the grant while our tokens were being written, its
    revocation may have missed them. Revoke again (now they exist) and refuse."""
    current = await ctx.store.get_artifact(artifact.id, artifact.kind)
    if current is None or current.revoked_at is not None:
        if artifact.grant_id:
            await ctx.store.revoke_grant(artifact.grant_id)
        raise InvalidGrant(message)


async def authorization_code_grant(ctx: ServerContext, client: Client, form: dict[str, str]) -> dict[str, Any]:
    code = require_single(form.get("code"), "code")
    verifier = form.get("code_verifier")
    if not verifier:
        raise InvalidRequest("code_verifier is required (PKCE)")
    message = "invalid authorization code"
    artifact = await _peek(ctx, client, code, AUTHORIZATION_CODE, message)
    p = artifact.payload
    redirect_uri = form.get("redirect_uri")
    if (p["redirect_uri_given"] or redirect_uri is not None) and redirect_uri != p["redirect_uri"]:
        raise InvalidGrant("redirect_uri does not match the authorization request")
    if not verifier_matches(verifier, p["code_challenge"]):
        raise InvalidGrant("code_verifier does not match the code_challenge")
    resource = form.get("resource")
    if resource is not None and canonical_resource(check_resource(ctx, resource)) != canonical_resource(p["aud"]):
        raise InvalidGrant("resource differs from the authorization request")
    scopes = tuple(p["scopes"])
    asked = parse_scope(form.get("scope"))
    if asked:
        if not set(asked) <= set(scopes):
            raise InvalidScope("scope exceeds what was authorized")
        scopes = tuple(asked)
    await _redeem(ctx, client, artifact, message)
    grant = Grant(client.client_id, p["sub"], scopes, p["aud"], str(artifact.grant_id), p.get("auth_time"))
    response = await issue_tokens(ctx, client, grant, refresh="refresh_token" in client.grant_types)
    await _still_live(ctx, artifact, message)
    return response


async def refresh_token_grant(ctx: ServerContext, client: Client, form: dict[str, str]) -> dict[str, Any]:
    presented = require_single(form.get("refresh_token"), "refresh_token")
    message = "invalid refresh token"
    artifact = await _peek(ctx, client, presented, REFRESH_TOKEN, message)
    p = artifact.payload
    # The grant never outlives a narrowing of what the client may have (e.g. an RFC 7592 update).
    current = allowed_scopes(ctx, client)
    granted = tuple(s for s in p["scope"] if s in current)
    scopes = granted
    asked = parse_scope(form.get("scope"))
    if asked:
        if not set(asked) <= set(scopes):
            raise InvalidScope("scope exceeds the original grant")
        scopes = tuple(asked)
    audience = p["aud"]
    resource = form.get("resource")
    if resource is not None and canonical_resource(check_resource(ctx, resource)) != canonical_resource(audience):
        raise InvalidGrant("a refresh token cannot widen its audience")
    await _redeem(ctx, client, artifact, message)
    grant = Grant(client.client_id, p["sub"], granted, audience, str(artifact.grant_id), p.get("auth_time"))
    response = await issue_tokens(ctx, client, grant, refresh=True, family_expires_at=p["family_expires_at"])
    if scopes != grant.scopes:
        # Down-scoped access token; the refresh token keeps the original grant's scope.
        narrowed = Grant(grant.client_id, grant.subject, scopes, audience, grant.grant_id, grant.auth_time)
        access_only = await issue_tokens(ctx, client, narrowed, refresh=False)
        response.update({k: access_only[k] for k in ("access_token", "expires_in", "scope")})
    await _still_live(ctx, artifact, message)
    return response


async def client_credentials_grant(ctx: ServerContext, client: Client, form: dict[str, str]) -> dict[str, Any]:
    if client.is_public:
        raise UnauthorizedClient("public clients cannot use client_credentials")
    # No refresh token comes from this grant, so offline_access means nothing here.
    scopes = tuple(s for s in grant_scopes(ctx, client, form.get("scope")) if s != "offline_access")
    audience = check_resource(ctx, form.get("resource"))
    grant = Grant(client.client_id, client.client_id, scopes, audience, new_grant_id())
    return await issue_tokens(ctx, client, grant, refresh=False)


GRANTS: dict[str, GrantHandler] = {
    "authorization_code": authorization_code_grant,
    "refresh_token": refresh_token_grant,
    "client_credentials": client_credentials_grant,
    CIBA_GRANT_TYPE: ciba_grant,
    TOKEN_EXCHANGE_GRANT_TYPE: token_exchange_grant,
}
REQUEST_GRANTS: dict[str, RequestGrantHandler] = {
    AAUTH_GRANT_TYPE: agent_authorization_grant,
}


def routes(ctx: ServerContext, grants: dict[str, GrantHandler] | None = None) -> list[BaseRoute]:
    handlers = dict(GRANTS if grants is None else grants)
    request_handlers = dict(REQUEST_GRANTS if grants is None else {})

    @oauth_endpoint
    async def token_endpoint(request: Request) -> Response:
        try:
            response = await issue(request)
        except OAuthError as exc:
            ctx.metrics.token_errors.labels(exc.error).inc()
            raise
        return response

    async def issue(request: Request) -> Response:
        form = await read_form(request)
        grant_type = form.get("grant_type")
        if not grant_type:
            raise InvalidRequest("grant_type is required")
        handler = handlers.get(grant_type)
        request_handler = request_handlers.get(grant_type)
        if handler is None and request_handler is None:
            raise UnsupportedGrantType(f"grant_type {printable(grant_type, 64)} is not supported")
        client = await authenticate_client(ctx, request, form)
        if grant_type not in client.grant_types:
            raise UnauthorizedClient("client is not registered for this grant type")
        try:
            if request_handler is not None:
                body = await request_handler(ctx, client, form, request)
            else:
                assert handler is not None
                body = await handler(ctx, client, form)
        except InvalidGrant as exc:
            await ctx.store.audit("token.denied", client_id=client.client_id, grant_type=grant_type,
                                  reason=exc.description)
            raise
        ctx.metrics.tokens.labels(grant_type).inc()
        return json_response(body)

    return [Route("/token", token_endpoint, methods=["POST"])]
