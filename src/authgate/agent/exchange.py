"""Token exchange (RFC 8693) for agents and gateways: trade the token you were given for one a downstream API
accepts, instead of forwarding it (no token passthrough).

Sans-I/O core (:func:`exchange_request`, :func:`parse_exchange_response`) plus an ``httpx`` wrapper and a small
cache, so a gateway that calls the same upstream for the same caller many times exchanges once per token::

    exchanger = TokenExchanger(http, "https://auth.example.com/token",
                               ClientRegistration("api-gateway", "s3cret", "client_secret_basic"))
    downstream = await exchanger.token_for(incoming_token, resource="https://billing.example.com/api",
                                           scope="invoices:read")
    await http.get("https://billing.example.com/api/invoices",
                   headers={"Authorization": f"Bearer {downstream.access_token}"})

The exchanging client must be confidential and registered for the grant type; what it may exchange is the
server's policy (authgate: tokens issued to it, or for a resource it serves; see docs/server.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from authgate.agent.errors import TokenError
from authgate.agent.oauth import oauth_error, token_request
from authgate.agent.store import ClientRegistration

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
#: Cached tokens are renewed this many seconds before they expire, so one never expires in flight.
EXPIRY_MARGIN = 10.0
_Key = tuple[str, str | None, str | None, str | None]


@dataclass(frozen=True)
class ExchangedToken:
    """A token from an exchange. ``expires_at`` is in seconds since the epoch (None when not told)."""

    access_token: str = field(repr=False)
    issued_token_type: str
    token_type: str
    expires_at: float | None
    scope: str | None

    def fresh(self, now: float, margin: float = EXPIRY_MARGIN) -> bool:
        return self.expires_at is None or self.expires_at - margin > now


def exchange_request(
    token_endpoint: str,
    client: ClientRegistration,
    subject_token: str,
    *,
    resource: str | None = None,
    audience: str | None = None,
    scope: str | None = None,
    subject_token_type: str = ACCESS_TOKEN_TYPE,
    actor_token: str | None = None,
    actor_token_type: str | None = None,
    requested_token_type: str | None = ACCESS_TOKEN_TYPE,
) -> httpx.Request:
    """The token-endpoint POST of RFC 8693 §2.1, authenticated as ``client``."""
    if not subject_token:
        raise TokenError("subject_token is required")
    if (actor_token is None) != (actor_token_type is None):
        raise TokenError("actor_token and actor_token_type go together")  # RFC 8693 §2.1
    return token_request(token_endpoint, client, {
        "grant_type": GRANT_TYPE,
        "subject_token": subject_token,
        "subject_token_type": subject_token_type,
        "actor_token": actor_token,
        "actor_token_type": actor_token_type,
        "requested_token_type": requested_token_type,
        "resource": resource,
        "audience": audience,
        "scope": scope,
    })


def parse_exchange_response(response: httpx.Response, *, now: float) -> ExchangedToken:
    """The RFC 8693 §2.2.1 response, or :class:`TokenError` with the server's error code."""
    if response.status_code != 200:
        error, description = oauth_error(response)
        raise TokenError("token exchange refused", error=error, error_description=description,
                         status_code=response.status_code)
    try:
        data = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        raise TokenError("token exchange response is not a JSON object")
    access = data.get("access_token")
    issued = data.get("issued_token_type")
    token_type = data.get("token_type")
    if not isinstance(access, str) or not access:
        raise TokenError("token exchange response has no access_token")
    if not isinstance(issued, str) or not issued:
        raise TokenError("token exchange response has no issued_token_type")  # REQUIRED (§2.2.1)
    if not isinstance(token_type, str) or not token_type:
        raise TokenError("token exchange response has no token_type")
    expires_in = data.get("expires_in")
    expires_at = None
    if isinstance(expires_in, int | float) and not isinstance(expires_in, bool) and expires_in >= 0:
        expires_at = now + float(expires_in)
    scope = data.get("scope")
    return ExchangedToken(access, issued, token_type, expires_at, scope if isinstance(scope, str) else None)


async def exchange_token(
    http: httpx.AsyncClient,
    token_endpoint: str,
    client: ClientRegistration,
    subject_token: str,
    *,
    resource: str | None = None,
    audience: str | None = None,
    scope: str | None = None,
    subject_token_type: str = ACCESS_TOKEN_TYPE,
    actor_token: str | None = None,
    actor_token_type: str | None = None,
    now: Callable[[], float] = time.time,
) -> ExchangedToken:
    """Send one exchange (parameters as in :func:`exchange_request`) and parse the answer."""
    request = exchange_request(token_endpoint, client, subject_token, resource=resource, audience=audience,
                               scope=scope, subject_token_type=subject_token_type, actor_token=actor_token,
                               actor_token_type=actor_token_type)
    try:
        response = await http.send(request)
    except httpx.HTTPError as exc:
        raise TokenError(f"token endpoint unreachable: {exc.__class__.__name__}") from exc
    return parse_exchange_response(response, now=now())


class TokenExchanger:
    """Exchanges tokens for one client, reusing a still-fresh result for the same token, target and scope, and
    sharing one exchange among concurrent calls for them (a gateway sees bursts of requests with a new token).

    The cache is keyed by a SHA-256 of the subject token (tokens are never kept as keys), bounded to
    ``max_entries`` (least recently used go first) and lives in process memory only."""

    def __init__(self, http: httpx.AsyncClient, token_endpoint: str, client: ClientRegistration, *,
                 max_entries: int = 1024, now: Callable[[], float] = time.time) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self.http = http
        self.token_endpoint = token_endpoint
        self.client = client
        self.max_entries = max_entries
        self.now = now
        self._cache: OrderedDict[_Key, ExchangedToken] = OrderedDict()
        self._inflight: dict[_Key, asyncio.Future[ExchangedToken]] = {}

    async def token_for(self, subject_token: str, *, resource: str | None = None, audience: str | None = None,
                        scope: str | None = None) -> ExchangedToken:
        """A fresh token for this subject token and target: the cached one, the one an identical call already
        under way is getting (one exchange for a burst of concurrent calls), or a new exchange."""
        key = (hashlib.sha256(subject_token.encode()).hexdigest(), resource, audience, scope)
        cached = self._cache.get(key)
        if cached is not None and cached.fresh(self.now()):
            self._cache.move_to_end(key)
            return cached
        while (pending := self._inflight.get(key)) is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not pending.cancelled() or (task is not None and task.cancelling()):
                    raise  # we are the ones cancelled
                # the call we waited for was cancelled (its caller went away): exchange ourselves
        pending = self._inflight[key] = asyncio.get_running_loop().create_future()
        try:
            token = await exchange_token(self.http, self.token_endpoint, self.client, subject_token, now=self.now,
                                         resource=resource, audience=audience, scope=scope)
        except BaseException as exc:
            if isinstance(exc, Exception):
                pending.set_exception(exc)
                pending.exception()  # retrieved: a refusal nobody else waited for is not "never retrieved"
            else:
                pending.cancel()
            raise
        finally:
            del self._inflight[key]
        pending.set_result(token)
        self._cache[key] = token
        self._cache.move_to_end(key)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
        return token

    def forget(self) -> None:
        """Drop every cached token (e.g. after the client's credentials changed)."""
        self._cache.clear()
