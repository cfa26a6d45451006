"""OAuth 2.0 Token Exchange (RFC 8693) at the token endpoint: delegation to a downstream API.

An agent (or a resource server, or the gateway) that holds one of our access tokens trades it for a narrower
token bound to another resource, so it never forwards the user's token (no token passthrough). The new token
keeps the user as ``sub`` and records who acts for them in ``act`` (RFC 8693 §4.1), nesting the previous
``act``, so the chain A -> B -> C names every agent in between.

authgate profile (stricter than the RFC, which leaves policy to the server):

* Confidential clients only, registered for the grant type; public clients are refused (``unauthorized_client``).
* ``subject_token`` must be one of *our* access tokens (``subject_token_type`` ``access_token`` or ``jwt``):
  our signature and issuer, not expired, and its ``jti`` record present and not revoked.
* Who may exchange it: the client it was issued to (``client_id``), or a client listed for the token's
  audience in ``token_exchange_actors`` (the resource server or gateway that received it). If the token carries
  ``may_act`` (§4.4), the exchanging client must also be the one it names.
* ``actor_token`` (optional) must be our access token for the exchanging client itself (its own
  ``client_credentials`` token); the actor is always the authenticated client.
* Exactly one target: ``resource`` and/or ``audience`` (both must name the same resource), an allowed RFC 8707
  resource. Scope may narrow, never widen: every requested scope must be in the subject token and allowed to
  the exchanging client (``invalid_scope`` otherwise); omitted = what the subject token has that the client may
  hold. ``requested_token_type`` may only be ``access_token``.
* The new token expires no later than the subject token (and within ``token_exchange_ttl``), belongs to the
  subject token's grant (revoking that grant revokes it too) and comes with no refresh token.

Errors follow §2.2.2: a subject or actor token that is invalid or unacceptable by policy is ``invalid_request``
(the RFC's MUST, not ``invalid_grant``); an unacceptable target is ``invalid_target``. Each grant and each denial
is audited, without tokens.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from authgate.context import ServerContext
from authgate.errors import InvalidRequest, InvalidScope, InvalidTarget, OAuthError, UnauthorizedClient
from authgate.oauth.clients import Client
from authgate.oauth.metadata import TOKEN_EXCHANGE_GRANT_TYPE
from authgate.oauth.policy import allowed_scopes, canonical_resource, check_resource, parse_scope
from authgate.oauth.tokens import ACCESS_TOKEN, Grant, decode_own_access_token, issue_tokens, new_grant_id
from authgate.store import Artifact

ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
#: Token types we accept for ``subject_token``/``actor_token``: our access tokens are JWTs, so either name fits.
INPUT_TOKEN_TYPES = frozenset({ACCESS_TOKEN_TYPE, JWT_TOKEN_TYPE})
MAX_TOKEN_LENGTH = 8192
MAX_TOKEN_TYPE_LENGTH = 200


async def token_exchange_grant(ctx: ServerContext, client: Client, form: dict[str, str]) -> dict[str, Any]:
    """Handle ``grant_type=urn:ietf:params:oauth:grant-type:token-exchange``; audit the outcome."""
    try:
        return await _exchange(ctx, client, form)
    except OAuthError as exc:
        await ctx.store.audit("token.denied", client_id=client.client_id, grant_type=TOKEN_EXCHANGE_GRANT_TYPE,
                              error=exc.error, reason=exc.description)
        raise


async def _exchange(ctx: ServerContext, client: Client, form: dict[str, str]) -> dict[str, Any]:
    if client.is_public:
        raise UnauthorizedClient("token exchange requires a confidential client")
    requested = form.get("requested_token_type")
    if requested is not None and requested != ACCESS_TOKEN_TYPE:
        raise InvalidRequest("requested_token_type must be urn:ietf:params:oauth:token-type:access_token")
    subject_token = _token_param(form, "subject_token", "subject_token_type")
    actor_token = form.get("actor_token")
    if actor_token is None and "actor_token_type" in form:
        raise InvalidRequest("actor_token_type must not be sent without actor_token")  # RFC 8693 §2.1
    target = _target(ctx, form)

    claims, record = await _live_access_token(ctx, subject_token, "subject_token")
    _check_may_exchange(ctx, client, claims)
    if actor_token is not None:
        actor_claims, _ = await _live_access_token(ctx, _token_param(form, "actor_token", "actor_token_type"),
                                                   "actor_token")
        if actor_claims.get("sub") != client.client_id or actor_claims.get("client_id") != client.client_id:
            raise InvalidRequest("actor_token must be the authenticated client's own token")
    act = _act_chain(ctx, client, claims.get("act"))
    scopes = _scopes(ctx, client, claims, form.get("scope"))

    grant_id = record.grant_id or new_grant_id()
    auth_time = claims.get("auth_time")
    grant = Grant(client.client_id, str(claims["sub"]), scopes, target, grant_id,
                  auth_time if isinstance(auth_time, int) and not isinstance(auth_time, bool) else None)
    extra: dict[str, Any] = {"act": act}
    amr = claims.get("amr")
    if isinstance(amr, list) and all(isinstance(m, str) for m in amr):
        extra["amr"] = amr  # how the user was identified still holds for the delegated token
    ttl = min(ctx.settings.token_exchange_ttl, int(claims["exp"]) - ctx.now())
    response = await issue_tokens(ctx, client, grant, refresh=False, extra_claims=extra, ttl=ttl)
    response["issued_token_type"] = ACCESS_TOKEN_TYPE
    await ctx.store.audit("token.exchanged", client_id=client.client_id, subject=grant.subject,
                          grant_id=grant_id, aud=target, scope=response["scope"],
                          subject_client_id=claims.get("client_id"), actors=_actors(act))
    return response


def _token_param(form: Mapping[str, str], name: str, type_name: str) -> str:
    value = form.get(name)
    if not value:
        raise InvalidRequest(f"{name} is required")
    if len(value) > MAX_TOKEN_LENGTH:
        raise InvalidRequest(f"{name} too large")
    token_type = form.get(type_name)
    if not token_type:
        raise InvalidRequest(f"{type_name} is required")
    if token_type not in INPUT_TOKEN_TYPES:
        raise InvalidRequest(f"{type_name} must be the access_token or jwt token type")
    return value


def _target(ctx: ServerContext, form: Mapping[str, str]) -> str:
    """The one resource the new token is for (``resource`` and ``audience`` may both name it)."""
    resource, audience = form.get("resource"), form.get("audience")
    if resource is None and audience is None:
        raise InvalidRequest("resource or audience is required (the API the new token is for)")
    target = check_resource(ctx, resource if resource is not None else audience)
    if (resource is not None and audience is not None
            and canonical_resource(check_resource(ctx, audience)) != canonical_resource(target)):
        raise InvalidTarget("resource and audience must name the same resource")
    return target


async def _live_access_token(ctx: ServerContext, token: str, name: str) -> tuple[dict[str, Any], Artifact]:
    """The claims and record of a currently valid access token we issued (signature, issuer, expiry, not
    revoked)."""
    claims = await decode_own_access_token(ctx, token)
    if claims is None or not isinstance(claims.get("jti"), str) or not isinstance(claims.get("sub"), str):
        raise InvalidRequest(f"{name} is not a valid access token of this server")
    record = await ctx.store.get_artifact(claims["jti"], ACCESS_TOKEN)
    if record is None or not record.usable(ctx.now()):
        raise InvalidRequest(f"{name} is revoked or expired")
    return claims, record


def _audiences(claims: Mapping[str, Any]) -> list[str]:
    aud = claims.get("aud")
    values = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    return [canonical_resource(a) for a in values if isinstance(a, str)]


def _check_may_exchange(ctx: ServerContext, client: Client, claims: Mapping[str, Any]) -> None:
    """The exchanging client holds the token legitimately: it was issued to it, or it serves its audience."""
    own = hmac.compare_digest(str(claims.get("client_id", "")).encode(), client.client_id.encode())
    if not own:
        actors = {canonical_resource(resource): clients
                  for resource, clients in ctx.settings.token_exchange_actors.items()}
        if not any(client.client_id in actors.get(aud, ()) for aud in _audiences(claims)):
            raise InvalidRequest("subject_token was neither issued to this client nor for a resource it serves")
    may_act = claims.get("may_act")
    if may_act is not None:
        if not isinstance(may_act, dict) or not isinstance(may_act.get("sub"), str):
            raise InvalidRequest("subject_token has a malformed may_act claim")
        if may_act["sub"] != client.client_id or may_act.get("iss", ctx.issuer) != ctx.issuer:
            raise InvalidRequest("subject_token may_act does not name this client")


def _act_chain(ctx: ServerContext, client: Client, previous: object) -> dict[str, Any]:
    """``{"sub": client_id}``, nesting the subject token's own ``act`` (RFC 8693 §4.1), within the length cap."""
    act: dict[str, Any] = {"sub": client.client_id}
    if previous is None:
        return act
    depth, node = 0, previous
    while node is not None:
        if not isinstance(node, dict) or not isinstance(node.get("sub"), str):
            raise InvalidRequest("subject_token has a malformed act claim")
        depth += 1
        if depth >= ctx.settings.token_exchange_max_chain:
            raise InvalidRequest("delegation chain too long")
        node = node.get("act")
    act["act"] = previous
    return act


def _actors(act: Mapping[str, Any]) -> list[str]:
    """The chain as a list, current actor first (for the audit log)."""
    out: list[str] = []
    node: Any = act
    while isinstance(node, dict):
        out.append(str(node.get("sub")))
        node = node.get("act")
    return out


def _scopes(ctx: ServerContext, client: Client, claims: Mapping[str, Any], requested: str | None
            ) -> tuple[str, ...]:
    held = str(claims.get("scope") or "").split()
    allowed = allowed_scopes(ctx, client)
    asked = parse_scope(requested)
    if asked:
        wider = [s for s in asked if s not in held]
        if wider:
            raise InvalidScope("scope exceeds the subject token: " + " ".join(wider)[:200])
        refused = [s for s in asked if s not in allowed]
        if refused:
            raise InvalidScope("scope not allowed for this client: " + " ".join(refused)[:200])
        return tuple(asked)
    granted = tuple(s for s in held if s in allowed and s != "offline_access")
    if not granted:
        raise InvalidScope("no scope of the subject token is allowed for this client")
    return granted
