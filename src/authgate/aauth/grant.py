"""The Agent Authorization Grant at the token endpoint (draft-rosenberg-oauth-aauth, authgate profile §6).

``grant_type=urn:ietf:params:oauth:grant-type:agent_authorization`` (names: :mod:`authgate.aauth.wire`).

An agent that collected a person's identifying details in conversation exchanges them for a token acting for
that person. Two requests share the grant type:

* **Identify** (``user_claims`` …): client authenticated (confidential, registered for the grant, by the token
  endpoint) → rate limits per client, caller ID, source address and conversation → parameters validated (no
  state is written for a malformed request) → the directory matches the claims (``ctx.identity``) → rate limit
  per claimed person → a locked person or any outcome but one match is the one uniform ``invalid_grant`` (same
  body, same path, the failure counted) → the match counts as a success. Scopes are the requested ones within
  the client's ``agent_authorization_scope_ceiling``; scopes outside it are dropped, not refused (the response
  ``scope`` says what was granted; nothing left is ``invalid_scope``); no ``scope`` means the PII tier.
  Only PII-tier scopes (ceiling minus ``agent_authorization_elevated_scopes``) → a token at once: short-lived
  (``aauth_token_ttl``), no refresh token, ``sub`` the person, ``act`` the agent, ``amr: ["pii"]``,
  ``auth_time`` the match. An elevated scope — or a ``caller_id`` that is not the matched person's phone number
  on file (profile §6.3 rule 4) — → an approval request of kind ``aauth_escalation`` for the person, delivered
  on *their* registered channels (never to ``caller_id``), and ``400 authorization_pending`` with
  ``request_code``, ``interval``, ``expires_in`` and ``approval_events_endpoint`` (server-sent events of the
  approval's status, for the client with HTTP Basic credentials, so the agent may wait instead of polling).
* **Poll** (``request_code``): bound to the client that got it, single use once decided:
  ``authorization_pending``, ``slow_down`` (interval +5 s, ``Retry-After``), ``access_denied``,
  ``expired_token``, or the token with ``amr: ["pii", "oob"]`` and ``auth_time`` the approval.

Nothing here logs or audits a submitted value: the audit keeps claim names, capture methods, channel,
conversation id, whether a caller ID was given, the directory's outcome and its keyed ``user_index``.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from authgate.aauth import wire
from authgate.aauth.normalize import flatten_claims
from authgate.context import ServerContext
from authgate.crypto.hashing import new_token, token_hash
from authgate.errors import (
    AccessDenied,
    InvalidGrant,
    InvalidRequest,
    InvalidScope,
    OAuthError,
    UnauthorizedClient,
    printable,
)
from authgate.oauth.clients import Client
from authgate.oauth.policy import check_resource, parse_scope
from authgate.oauth.tokens import Grant, issue_tokens, new_grant_id
from authgate.store import Artifact, Store

log = logging.getLogger("authgate.aauth")

#: Artefact kind of a pending escalation; its id is the SHA-256 of the ``request_code``.
AAUTH_REQUEST = "aauth_request"
SLOW_DOWN_STEP = 5  # RFC 8628 §3.5
MAX_USER_CLAIMS = 4096  # bytes of the JSON text
MAX_CAPTURE_METHOD = 2048
MAX_CONVERSATION_ID = 128
MAX_REASON = 1000
MAX_REQUEST_CODE = 128
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_CONVERSATION_ID = re.compile(r"^[\x21-\x7e]{1,128}$")  # MAX_CONVERSATION_ID
#: Parameters that belong to the identify request; a poll carries none of them.
_IDENTIFY_PARAMS = (wire.USER_CLAIMS, wire.CAPTURE_METHOD, wire.CHANNEL, wire.CALLER_ID, wire.CONVERSATION_ID)


class AuthorizationPending(OAuthError):
    """Waiting for the person's approval; the first answer carries the handle and the poll timing."""

    error = wire.AUTHORIZATION_PENDING

    def __init__(self, description: str, *, fields: dict[str, Any] | None = None) -> None:
        super().__init__(description)
        self.fields = dict(fields or {})

    def body(self) -> dict[str, Any]:
        return {**super().body(), **self.fields}


class SlowDown(OAuthError):
    """Polled faster than the interval: the interval grew by 5 s (RFC 8628), also sent as ``Retry-After``."""

    error = wire.SLOW_DOWN

    def __init__(self, interval: int) -> None:
        super().__init__(f"polling too fast: wait at least {interval} seconds between requests",
                         headers={"Retry-After": str(interval)})
        self.interval = interval

    def body(self) -> dict[str, Any]:
        return {**super().body(), wire.INTERVAL: self.interval}


class ExpiredToken(OAuthError):
    """The ``request_code`` expired before the person decided; start again."""

    error = wire.EXPIRED_TOKEN


def _uniform_failure() -> InvalidGrant:
    """The one answer to every identity failure: no match, ambiguous, too few claims, locked person."""
    return InvalidGrant(wire.UNIFORM_FAILURE)


# -- parameters --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IdentifyRequest:
    claims: dict[str, str]  # flat attribute names -> raw values (never logged)
    methods: dict[str, str]  # attribute name -> capture method
    channel: str
    caller_id: str | None  # never logged
    conversation_id: str
    scopes: tuple[str, ...]
    audience: str
    reason: str | None


def ceiling(ctx: ServerContext, client: Client) -> tuple[list[str], set[str]]:
    """The client's scope ceiling (known scopes only, in registered order) and its elevated scopes."""
    known = set(ctx.settings.scopes) - {"offline_access"}
    top = [s for s in str(client.metadata.get(wire.CLIENT_SCOPE_CEILING) or "").split() if s in known]
    elevated = set(str(client.metadata.get(wire.CLIENT_ELEVATED_SCOPES) or "").split()) & set(top)
    return top, elevated


def _json_object(name: str, value: str, limit: int) -> Any:
    if len(value) > limit:
        raise InvalidRequest(f"{name} is too long")
    try:
        return json.loads(value, parse_constant=lambda _: None)
    except (ValueError, RecursionError) as exc:
        raise InvalidRequest(f"{name} must be a JSON object") from exc


def _claims(ctx: ServerContext, form: dict[str, str]) -> dict[str, str]:
    raw = form.get(wire.USER_CLAIMS)
    if not raw:
        raise InvalidRequest(f"{wire.USER_CLAIMS} is required")
    try:
        claims = flatten_claims(_json_object(wire.USER_CLAIMS, raw, MAX_USER_CLAIMS),
                                max_claims=ctx.settings.aauth_max_claims)
    except ValueError as exc:  # messages name keys, never values
        raise InvalidRequest(printable(str(exc), 200)) from exc
    if not claims:
        raise InvalidRequest(f"{wire.USER_CLAIMS} is empty")
    return claims


def _methods(form: dict[str, str], claims: dict[str, str]) -> dict[str, str]:
    """One capture method per claim: a JSON object shaped like ``user_claims``, or one method for all."""
    raw = form.get(wire.CAPTURE_METHOD)
    if not raw:
        raise InvalidRequest(f"{wire.CAPTURE_METHOD} is required")
    if raw in wire.CAPTURE_METHODS:
        return dict.fromkeys(claims, raw)
    try:
        methods = flatten_claims(_json_object(wire.CAPTURE_METHOD, raw, MAX_CAPTURE_METHOD))
    except ValueError as exc:
        raise InvalidRequest(f"{wire.CAPTURE_METHOD} must name a method, or a JSON object of methods by claim"
                             ) from exc
    if set(methods) != set(claims):
        raise InvalidRequest(f"{wire.CAPTURE_METHOD} must give exactly one method for each claim")
    if not set(methods.values()) <= set(wire.CAPTURE_METHODS):
        raise InvalidRequest(f"{wire.CAPTURE_METHOD} values must be among " + ", ".join(wire.CAPTURE_METHODS))
    return methods


def _parse(ctx: ServerContext, client: Client, form: dict[str, str]) -> IdentifyRequest:
    """Validate an identify request without touching any state."""
    top, _ = ceiling(ctx, client)
    if not top:
        raise UnauthorizedClient(f"client has no {wire.CLIENT_SCOPE_CEILING}")

    channel = form.get(wire.CHANNEL)
    if channel not in wire.CHANNELS:
        raise InvalidRequest(f"{wire.CHANNEL} is required: one of " + ", ".join(wire.CHANNELS))
    registered = client.metadata.get(wire.CLIENT_CHANNELS)
    if isinstance(registered, list) and channel not in registered:
        raise InvalidRequest(f"{wire.CHANNEL} {channel} is not registered for this client")

    caller_id = form.get(wire.CALLER_ID)
    if caller_id is not None and not _E164.match(caller_id):
        raise InvalidRequest(f"{wire.CALLER_ID} must be an E.164 number (+ and 7 to 15 digits)")

    conversation_id = form.get(wire.CONVERSATION_ID)
    if conversation_id is None or not _CONVERSATION_ID.match(conversation_id):
        raise InvalidRequest(f"{wire.CONVERSATION_ID} is required: 1-{MAX_CONVERSATION_ID} printable ASCII "
                             "characters without spaces")

    reason = form.get(wire.REASON)
    if reason is not None and (len(reason) > MAX_REASON or not reason.isprintable()):
        raise InvalidRequest(f"{wire.REASON} must be at most {MAX_REASON} printable characters")

    asked = parse_scope(form.get(wire.SCOPE))
    _, elevated = ceiling(ctx, client)
    scopes = [s for s in asked if s in top] if asked else [s for s in top if s not in elevated]
    if not scopes:
        raise InvalidScope("none of the requested scopes is available to this client")
    audience = check_resource(ctx, form.get(wire.RESOURCE))

    claims = _claims(ctx, form)
    methods = _methods(form, claims)
    lookups = [n for n, m in methods.items() if m == "caller_id_lookup"]
    if lookups:
        if lookups != ["phone_number"] or caller_id is None:
            raise InvalidRequest("caller_id_lookup captures phone_number only, and needs caller_id")
        try:
            same = ctx.identity.normalize("phone_number", claims["phone_number"]) == caller_id
        except ValueError:
            same = False
        if not same:
            raise InvalidRequest("a phone_number captured by caller_id_lookup must be the caller_id")
    return IdentifyRequest(claims, methods, channel, caller_id, conversation_id, tuple(scopes), audience, reason)


# -- identify ----------------------------------------------------------------------------------------------


def _peer(request: Request) -> str:
    return request.client.host if request.client else ""


async def _caller_mismatch(ctx: ServerContext, subject: str, caller_id: str | None) -> bool:
    """True when ``caller_id`` is not the matched person's phone number on file (profile §6.3 rule 4). A person
    with no phone number on file cannot be compared: not a mismatch (documented limit)."""
    if caller_id is None:
        return False
    stored = (await ctx.store.identity_attributes(subject)).get("phone_number")
    if stored is None:
        return False
    try:
        presented = ctx.identity.blind("phone_number", caller_id)
    except ValueError:
        return True
    return not hmac.compare_digest(stored, presented)


async def _identify(ctx: ServerContext, client: Client, form: dict[str, str], peer: str) -> dict[str, Any]:
    guard = ctx.aauth_guard
    conversation = form.get(wire.CONVERSATION_ID)
    await guard.admit({
        "client": client.client_id,
        "caller_id": form.get(wire.CALLER_ID),
        "ip": peer,
        "conversation": f"{client.client_id}\0{conversation}" if conversation else None,
    })
    req = _parse(ctx, client, form)
    try:
        match = await ctx.identity.match(req.claims)
    except ValueError as exc:  # malformed (the parse above should have caught it)
        raise InvalidRequest("user_claims cannot be used") from exc
    await guard.admit({"user": match.user_index})
    attempt: dict[str, Any] = {
        "claims": sorted(req.claims), "capture_methods": sorted(set(req.methods.values())),
        "channel": req.channel, "conversation_id": req.conversation_id, "caller_id_given": req.caller_id is not None,
        "user_index": match.user_index, "scope": " ".join(req.scopes), "aud": req.audience,
    }
    locked = await guard.locked(match.user_index)
    if locked or match.outcome != "matched" or match.subject is None:
        await guard.failure(match.user_index)
        await ctx.store.audit("aauth.identify_failed", client_id=client.client_id,
                              outcome="locked" if locked else match.outcome, **attempt)
        log.info("aauth: identification failed for client %s (%s)", client.client_id,
                 "locked" if locked else match.outcome)
        raise _uniform_failure()
    await guard.success(match.user_index)
    subject = match.subject
    now = ctx.now()
    _, elevated_scopes = ceiling(ctx, client)
    elevated = sorted(set(req.scopes) & elevated_scopes)
    mismatch = await _caller_mismatch(ctx, subject, req.caller_id)
    await ctx.store.audit("aauth.identified", client_id=client.client_id, subject=subject, outcome="matched",
                          matched=sorted(match.matched), elevated=elevated, caller_id_mismatch=mismatch, **attempt)
    if not elevated and not mismatch:
        grant = Grant(client.client_id, subject, req.scopes, req.audience, new_grant_id(), now)
        return await _issue(ctx, client, grant, [wire.AMR_PII])
    return await _escalate(ctx, client, req, subject, elevated, mismatch)


async def _issue(ctx: ServerContext, client: Client, grant: Grant, amr: list[str]) -> dict[str, Any]:
    response = await issue_tokens(ctx, client, grant, refresh=False, ttl=ctx.settings.aauth_token_ttl,
                                  extra_claims={wire.ACT: {"sub": client.client_id}, wire.AMR: amr})
    await ctx.store.audit("aauth.issued", client_id=client.client_id, subject=grant.subject, amr=amr,
                          grant_id=grant.grant_id, scope=" ".join(grant.scopes), aud=grant.audience)
    return response


async def _escalate(ctx: ServerContext, client: Client, req: IdentifyRequest, subject: str, elevated: list[str],
                    mismatch: bool) -> dict[str, Any]:
    details = {"scopes": list(req.scopes), "resource": req.audience, "elevated_scopes": elevated,
               "channel": req.channel, "conversation_id": req.conversation_id, "client_name": client.name,
               "caller_id_mismatch": mismatch}
    approval = await ctx.approvals.create(kind=wire.APPROVAL_KIND, subject=subject, client_id=client.client_id,
                                          details=details, reason=req.reason, ttl=ctx.settings.aauth_escalation_ttl)
    now = ctx.now()
    expires_in = max(1, approval.expires_at - now)
    interval = ctx.settings.aauth_interval
    request_code = new_token()
    await ctx.store.put_artifact(
        token_hash(request_code), AAUTH_REQUEST,
        {"approval_id": approval.id, "sub": subject, "scopes": list(req.scopes), "aud": req.audience,
         "client_id": client.client_id, "last_poll": now, "interval": interval},
        expires_in, client_id=client.client_id, grant_id=new_grant_id(),
    )
    await ctx.store.audit("aauth.escalated", client_id=client.client_id, subject=subject, approval_id=approval.id,
                          elevated=elevated, caller_id_mismatch=mismatch, expires_in=expires_in)
    raise AuthorizationPending("waiting for the user's approval", fields={
        wire.REQUEST_CODE: request_code, wire.INTERVAL: interval, wire.EXPIRES_IN: expires_in,
        wire.APPROVAL_EVENTS_ENDPOINT: f"{ctx.issuer}/approvals/{approval.id}/events"})


# -- poll --------------------------------------------------------------------------------------------------


async def _record_poll(store: Store, artifact: Artifact, now: int) -> int | None:
    """Note a poll (compare-and-swap in the store, so it holds across processes). None when it came on time,
    else the new, longer interval."""

    def polled(state: dict[str, Any]) -> dict[str, Any]:
        interval = int(state["interval"])
        if now - int(state["last_poll"]) < interval:
            interval += SLOW_DOWN_STEP
        return {**state, "last_poll": now, "interval": interval}

    swapped = await store.swap_artifact_payload(artifact.id, AAUTH_REQUEST, polled)
    if swapped is None:
        raise InvalidGrant("request_code already used")
    before, won = swapped
    after = polled(before)
    if not won:
        return int(after["interval"])
    return int(after["interval"]) if after["interval"] != int(before["interval"]) else None


async def _poll(ctx: ServerContext, client: Client, form: dict[str, str]) -> dict[str, Any]:
    extra = [name for name in _IDENTIFY_PARAMS if name in form]
    if extra:
        raise InvalidRequest(f"a poll with {wire.REQUEST_CODE} carries no {extra[0]}")
    presented = form[wire.REQUEST_CODE]
    message = f"invalid {wire.REQUEST_CODE}"
    if len(presented) > MAX_REQUEST_CODE:
        raise InvalidGrant(message)
    artifact = await ctx.store.get_artifact(token_hash(presented), AAUTH_REQUEST)
    if artifact is None or artifact.client_id is None or not hmac.compare_digest(artifact.client_id,
                                                                                 client.client_id):
        raise InvalidGrant(message)
    if artifact.consumed_at is not None or artifact.revoked_at is not None:
        raise InvalidGrant(f"{wire.REQUEST_CODE} already used")
    now = ctx.now()
    if artifact.expires_at <= now:
        raise ExpiredToken(f"{wire.REQUEST_CODE} expired")
    p = artifact.payload
    approval = await ctx.approvals.get(str(p["approval_id"]))
    if approval is None or approval.kind != wire.APPROVAL_KIND or approval.subject != p["sub"]:
        raise InvalidGrant(message)
    if approval.status == "expired":
        raise ExpiredToken(f"{wire.REQUEST_CODE} expired")
    if approval.status == "pending":
        slower = await _record_poll(ctx.store, artifact, now)
        if slower is not None:
            raise SlowDown(slower)
        raise AuthorizationPending("the user has not decided yet")

    _, fresh = await ctx.store.consume_artifact(artifact.id, AAUTH_REQUEST)
    if not fresh:
        raise InvalidGrant(f"{wire.REQUEST_CODE} already used")
    if approval.status == "denied":
        await ctx.store.audit("aauth.denied", client_id=client.client_id, subject=approval.subject,
                              approval_id=approval.id)
        raise AccessDenied("the user denied the request", status_code=400)
    grant = Grant(client.client_id, str(p["sub"]), tuple(p["scopes"]), str(p["aud"]), str(artifact.grant_id),
                  approval.decided_at)
    return await _issue(ctx, client, grant, [wire.AMR_PII, wire.AMR_OOB])


# -- the grant ---------------------------------------------------------------------------------------------


async def agent_authorization_grant(ctx: ServerContext, client: Client, form: dict[str, str],
                                    request: Request) -> dict[str, Any]:
    """``grant_type=urn:ietf:params:oauth:grant-type:agent_authorization``: identify, or poll an escalation."""
    if client.is_public:
        raise UnauthorizedClient("the agent authorization grant requires a confidential client")
    if wire.REQUEST_CODE in form:
        return await _poll(ctx, client, form)
    return await _identify(ctx, client, form, _peer(request))
