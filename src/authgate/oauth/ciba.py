"""OpenID Client-Initiated Backchannel Authentication (CIBA Core 1.0), poll mode, backed by the approval service.

https://openid.net/specs/openid-client-initiated-backchannel-authentication-core-1_0.html

* ``POST /bc-authorize`` (§7): a confidential client that registered the CIBA grant names a person by
  ``login_hint`` (their username) and asks for ``scope`` on a ``resource`` (RFC 8707). We record an approval
  request of kind ``ciba`` for that person and answer ``auth_req_id``, ``expires_in`` and ``interval`` (§7.3).
* ``grant_type=urn:openid:params:grant-type:ciba`` at the token endpoint (§10, §11): ``authorization_pending``
  until the person decides, ``slow_down`` (and the interval grows by 5 s) when polled faster than the interval,
  ``access_denied``, ``expired_token``, or the tokens, once.

Choices of this profile:

* authgate is an OAuth authorization server, not an OpenID Provider: no ID token is issued. ``openid`` in
  ``scope`` is accepted (standard CIBA clients always send it) and ignored; at least one other scope must be
  asked for, and every one of those must be allowed for the client.
* Only ``login_hint`` is supported; ``login_hint_token``, ``id_token_hint``, ``user_code`` and signed
  authentication requests (``request``) are refused with ``invalid_request``. ``acr_values`` is ignored.
* Poll mode only; ``client_notification_token`` is ignored.
* ``auth_req_id`` is a 256-bit random value; the store keeps only its SHA-256 (artefact kind ``ciba_request``),
  whose payload points at the approval request, so the value says nothing about the approval id and the
  approval id is useless as an ``auth_req_id``. Poll timing lives in that payload, so it holds across processes.
* The first poll is due ``interval`` seconds after the authentication request. Timing is enforced only while
  the request is pending; a decided request answers at once. A denial, like an approval, ends the
  ``auth_req_id``: the next use is ``invalid_grant``.

Abuse limits (every accepted request reaches the person's channels: SMS, e-mail, webhook; and with open dynamic
registration anyone can have a CIBA client):

* ``ciba_rate_per_client`` requests per minute per client, counted for every request of a client registered for
  the grant, before the ``login_hint`` is looked up: an unknown hint (``unknown_user_id``, which CIBA §13 defines
  and which therefore tells usernames apart) costs the same as a known one, so guessing usernames is throttled.
* ``ciba_rate_per_user`` requests per minute naming one person, from all clients together.
* ``ciba_max_pending_per_user`` open (pending, unexpired) CIBA requests per person, from all clients together.

The per-minute counts are rate limiters (:class:`authgate.ratelimit.RateLimiter`) shared by every process
(``rate_limit_backend``). The open-request cap is a count in the database before the request is recorded: not
atomic, so concurrent requests may pass it by a few, within the per-user rate. Over any of them the answer is
HTTP 429 with ``Retry-After`` and ``"error": "access_denied"``: CIBA §13 has no rate-limit code (``slow_down``
belongs to the token endpoint) and its ``access_denied`` is the one for a request the OpenID Provider refuses
before any user interaction; §13 pairs it with 403, but 429 says the refusal is temporary and ``Retry-After``
says for how long. Nothing is recorded or sent for a refused request.
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from authgate.context import ServerContext
from authgate.crypto.hashing import new_token, token_hash
from authgate.errors import AccessDenied, InvalidGrant, InvalidRequest, InvalidScope, OAuthError, UnauthorizedClient
from authgate.httputil import json_response, oauth_endpoint, read_form
from authgate.oauth.client_auth import authenticate_client
from authgate.oauth.clients import Client
from authgate.oauth.metadata import CIBA_GRANT_TYPE
from authgate.oauth.policy import check_resource, grant_scopes, parse_scope, require_single
from authgate.oauth.tokens import Grant, issue_tokens, new_grant_id
from authgate.store import Artifact, Store
from authgate.store import tables as t

CIBA_REQUEST = "ciba_request"
APPROVAL_KIND = "ciba"
INTERVAL = 5  # seconds between polls (CIBA §7.3 default)
SLOW_DOWN_STEP = 5  # CIBA §11: the interval grows by at least 5 s on slow_down
MAX_BINDING_MESSAGE = 256
MAX_LOGIN_HINT = 255
MAX_AUTH_REQ_ID = 128
_HINTS = ("login_hint", "login_hint_token", "id_token_hint")
_DIGITS = re.compile(r"^[0-9]{1,9}$")


class UnknownUserId(OAuthError):
    """The ``login_hint`` names nobody this server knows (CIBA §13)."""

    error = "unknown_user_id"


class InvalidBindingMessage(OAuthError):
    """The ``binding_message`` is too long or not plain printable text (CIBA §13)."""

    error = "invalid_binding_message"


class TooManyCibaRequests(OAuthError):
    """Over a CIBA abuse limit: ``access_denied`` (CIBA §13, refused before any user interaction) with HTTP 429
    and ``Retry-After``, since it lifts by itself (see the module docstring)."""

    error = "access_denied"
    status_code = 429

    def __init__(self, retry_after: int, description: str, *, debug: str = "") -> None:
        super().__init__(description, debug=debug, headers={"Retry-After": str(max(1, retry_after))})


class AuthorizationPending(OAuthError):
    """The person has not decided yet; poll again after the interval (CIBA §11)."""

    error = "authorization_pending"


class SlowDown(OAuthError):
    """Polled faster than the interval; the interval is now 5 s longer (CIBA §11)."""

    error = "slow_down"


class ExpiredToken(OAuthError):
    """The ``auth_req_id`` expired before it was redeemed; start a new authentication request (CIBA §11)."""

    error = "expired_token"


# -- the backchannel authentication endpoint --------------------------------------------------------------


def _login_hint(form: dict[str, str]) -> str:
    given = [name for name in _HINTS if name in form]
    if not given:
        raise InvalidRequest("one of login_hint, login_hint_token or id_token_hint is required")
    if len(given) > 1:
        raise InvalidRequest("send exactly one of login_hint, login_hint_token and id_token_hint")
    if given[0] != "login_hint":
        raise InvalidRequest(f"{given[0]} is not supported; identify the user by login_hint (username)")
    hint = form["login_hint"]
    if len(hint) > MAX_LOGIN_HINT:
        raise InvalidRequest("login_hint too long")
    return hint


def _binding_message(value: str | None) -> str | None:
    if value is None:
        return None
    if len(value) > MAX_BINDING_MESSAGE or not value.isprintable() or not value.strip():
        raise InvalidBindingMessage(f"binding_message must be at most {MAX_BINDING_MESSAGE} printable characters")
    return value


def _lifetime(ctx: ServerContext, value: str | None) -> int:
    """``requested_expiry`` in seconds, bounded by the approval service's maximum; its default otherwise."""
    if value is None:
        return ctx.approvals.default_ttl
    if not _DIGITS.match(value) or int(value) < 1:
        raise InvalidRequest("requested_expiry must be a positive integer (seconds)")
    return min(int(value), ctx.approvals.max_ttl)


def _scopes(ctx: ServerContext, client: Client, value: str | None) -> tuple[str, ...]:
    asked = [s for s in parse_scope(require_single(value, "scope")) if s != "openid"]
    if not asked:
        raise InvalidScope("no ID tokens here: ask for at least one scope besides openid")
    return grant_scopes(ctx, client, " ".join(asked))


async def _open_requests(ctx: ServerContext, subject: str) -> tuple[int, int]:
    """How many CIBA requests ``subject`` has pending and unexpired, and when the first of them expires."""
    c = t.approval_requests.c
    now = ctx.now()
    query = (sa.select(sa.func.count(), sa.func.min(c.expires_at))
             .where(c.subject == subject, c.kind == APPROVAL_KIND, c.status == "pending", c.expires_at > now))
    async with ctx.store.engine.connect() as conn:
        count, first_expiry = (await conn.execute(query)).one()
    return int(count or 0), int(first_expiry or now)


async def _admit_client(ctx: ServerContext, client: Client) -> None:
    """Count the request against ``ciba_rate_per_client``, whatever its outcome (unknown users included)."""
    wait = await ctx.ciba_client_limiter.hit(client.client_id)
    if wait is not None:
        raise TooManyCibaRequests(wait, f"too many backchannel authentication requests from this client; retry "
                                        f"in {wait} seconds", debug=f"client {client.client_id} over "
                                                                    "ciba_rate_per_client")


async def _admit_user(ctx: ServerContext, subject: str) -> None:
    """Count the request against ``ciba_rate_per_user``, then check ``ciba_max_pending_per_user``."""
    wait = await ctx.ciba_user_limiter.hit(subject)
    if wait is not None:
        raise TooManyCibaRequests(wait, f"too many backchannel authentication requests for this user; retry in "
                                        f"{wait} seconds", debug=f"subject {subject} over ciba_rate_per_user")
    cap = ctx.settings.ciba_max_pending_per_user
    if cap > 0:
        open_requests, first_expiry = await _open_requests(ctx, subject)
        if open_requests >= cap:
            wait = max(1, first_expiry - ctx.now())
            raise TooManyCibaRequests(wait, f"this user has too many open backchannel authentication requests; "
                                            f"retry in {wait} seconds",
                                      debug=f"subject {subject} has {open_requests} open CIBA requests")


async def backchannel_authentication(ctx: ServerContext, client: Client, form: dict[str, str]) -> dict[str, Any]:
    """Validate a CIBA authentication request, record its approval request, and return the §7.3 response."""
    if client.is_public:  # authenticate_client(allow_public=False) already refuses; kept for direct callers
        raise UnauthorizedClient("CIBA requires a confidential client")
    if CIBA_GRANT_TYPE not in client.grant_types:
        raise UnauthorizedClient("client is not registered for the CIBA grant type")
    await _admit_client(ctx, client)
    if "request" in form or "request_uri" in form:
        raise InvalidRequest("signed authentication requests are not supported")
    if "user_code" in form:
        raise InvalidRequest("user_code is not supported (backchannel_user_code_parameter_supported is false)")
    scopes = _scopes(ctx, client, form.get("scope"))
    hint = _login_hint(form)
    binding_message = _binding_message(form.get("binding_message"))
    lifetime = _lifetime(ctx, form.get("requested_expiry"))
    audience = check_resource(ctx, form.get("resource"))
    user = await ctx.store.get_user_by_name(hint)
    if user is None:
        raise UnknownUserId("unknown user")
    await _admit_user(ctx, user.subject)

    details = {"scopes": list(scopes), "resource": audience, "client_name": client.name}
    approval = await ctx.approvals.create(kind=APPROVAL_KIND, subject=user.subject, client_id=client.client_id,
                                          details=details, binding_message=binding_message, ttl=lifetime)
    now = ctx.now()
    expires_in = max(1, approval.expires_at - now)
    auth_req_id = new_token()
    await ctx.store.put_artifact(
        token_hash(auth_req_id), CIBA_REQUEST,
        {"approval_id": approval.id, "sub": user.subject, "scopes": list(scopes), "aud": audience,
         "client_id": client.client_id, "last_poll": now, "interval": INTERVAL},
        expires_in, client_id=client.client_id, grant_id=new_grant_id(),
    )
    await ctx.store.audit("ciba.requested", client_id=client.client_id, subject=user.subject,
                          approval_id=approval.id, scope=" ".join(scopes), aud=audience, expires_in=expires_in)
    return {"auth_req_id": auth_req_id, "expires_in": expires_in, "interval": INTERVAL}


# -- the token grant ----------------------------------------------------------------------------------------


async def _record_poll(store: Store, artifact: Artifact, now: int) -> int | None:
    """Note a poll in the ``ciba_request`` payload. Returns None when it came on time, else the new (longer)
    interval. A compare-and-swap in the store: of two concurrent polls one is on time, the other is too fast,
    in any number of processes."""

    def polled(state: dict[str, Any]) -> dict[str, Any]:
        interval = int(state["interval"])
        if now - int(state["last_poll"]) < interval:
            interval += SLOW_DOWN_STEP
        return {**state, "last_poll": now, "interval": interval}

    swapped = await store.swap_artifact_payload(artifact.id, CIBA_REQUEST, polled)
    if swapped is None:
        raise InvalidGrant("auth_req_id already used")  # redeemed or revoked since the caller looked
    before, won = swapped
    after = polled(before)
    too_fast = after["interval"] != int(before["interval"])
    if not won:
        return int(after["interval"])  # a concurrent poll got there first: this one is too fast
    return int(after["interval"]) if too_fast else None


async def ciba_grant(ctx: ServerContext, client: Client, form: dict[str, str]) -> dict[str, Any]:
    """``grant_type=urn:openid:params:grant-type:ciba`` (CIBA §10.1, §11)."""
    if client.is_public:
        raise UnauthorizedClient("CIBA requires a confidential client")
    presented = require_single(form.get("auth_req_id"), "auth_req_id")
    message = "invalid auth_req_id"
    if len(presented) > MAX_AUTH_REQ_ID:
        raise InvalidGrant(message)
    artifact = await ctx.store.get_artifact(token_hash(presented), CIBA_REQUEST)
    if artifact is None or artifact.client_id != client.client_id:
        raise InvalidGrant(message)
    if artifact.consumed_at is not None or artifact.revoked_at is not None:
        raise InvalidGrant("auth_req_id already used")
    now = ctx.now()
    if artifact.expires_at <= now:
        raise ExpiredToken("auth_req_id expired")
    p = artifact.payload
    approval = await ctx.approvals.get(str(p["approval_id"]))
    if approval is None or approval.kind != APPROVAL_KIND or approval.subject != p["sub"]:
        raise InvalidGrant(message)
    if approval.status == "expired":
        raise ExpiredToken("auth_req_id expired")
    if approval.status == "pending":
        slower = await _record_poll(ctx.store, artifact, now)
        if slower is not None:
            raise SlowDown(f"polling too fast: wait at least {slower} seconds between requests")
        raise AuthorizationPending("the user has not decided yet")

    _, fresh = await ctx.store.consume_artifact(artifact.id, CIBA_REQUEST)
    if not fresh:
        raise InvalidGrant("auth_req_id already used")
    if approval.status == "denied":
        await ctx.store.audit("ciba.denied", client_id=client.client_id, subject=approval.subject,
                              approval_id=approval.id)
        raise AccessDenied("the user denied the request", status_code=400)
    grant = Grant(client.client_id, str(p["sub"]), tuple(p["scopes"]), str(p["aud"]), str(artifact.grant_id),
                  approval.decided_at)
    response = await issue_tokens(ctx, client, grant, refresh="refresh_token" in client.grant_types)
    await ctx.store.audit("ciba.issued", client_id=client.client_id, subject=approval.subject,
                          approval_id=approval.id, grant_id=grant.grant_id)
    return response


def routes(ctx: ServerContext) -> list[BaseRoute]:
    @oauth_endpoint
    async def bc_authorize(request: Request) -> Response:
        form = await read_form(request)
        client = await authenticate_client(ctx, request, form, allow_public=False)
        return json_response(await backchannel_authentication(ctx, client, form))

    return [Route("/bc-authorize", bc_authorize, methods=["POST"])]
