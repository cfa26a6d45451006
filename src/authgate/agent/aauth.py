"""The agent side of the AAuth Agent Authorization Grant (draft-rosenberg-oauth-aauth), authgate profile.

A voice or chat agent that collected a customer's identifying details in conversation exchanges them for a
low-privilege token acting for that customer; scopes the API owner marked as elevated need the customer's
approval on a channel registered with the authorization server, so the first answer is
``authorization_pending`` and the agent polls until the customer decides::

    client = await AgentAuthorizationClient.discover(http, "https://auth.example.com", client_id, secret)
    tokens = await client.request_token(
        {"given_name": "Ana", "family_name": "Lopez", "birthdate": "1980-04-02"},
        channel="pstn", capture_method={"given_name": "asr_validated", ...}, conversation_id="c-123",
        scope="orders:read", resource="https://api.example.com/orders",
        on_waiting=tell_the_customer,   # called once, if the customer's approval is needed
    )

Errors are typed (:class:`IdentityNotVerified`, :class:`AgentAuthorizationDenied`,
:class:`AgentAuthorizationExpired`, :class:`AgentAuthorizationTimeout`, all :class:`AgentAuthorizationError`).
Nothing here logs, or puts in an exception message, a submitted claim value, the caller ID, the client secret,
the ``request_code`` or a token; text the server sends back is scrubbed of the submitted values too.

The wire names are authgate's profile of the draft (the draft's own body text is not settled); they are the
constants below, kept equal to the server's ``authgate.aauth.wire`` by a test. Needs only ``httpx``.
"""

from __future__ import annotations

import asyncio
import email.utils
import inspect
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from authgate.agent.discovery import (
    as_metadata_candidates,
    classify,
    is_secure_url,
    json_object,
    origin,
    parse_server_metadata,
)
from authgate.agent.errors import DiscoveryError, TokenError
from authgate.agent.oauth import oauth_error, parse_token_response, token_request
from authgate.agent.store import ClientRegistration, TokenSet

log = logging.getLogger("authgate.agent.aauth")

# --- wire names (authgate profile; the server's authgate.aauth.wire holds the same) -------------------------

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:agent_authorization"
P_USER_CLAIMS = "user_claims"
P_CHANNEL = "channel"
P_CALLER_ID = "caller_id"
P_CAPTURE_METHOD = "capture_method"
P_CONVERSATION_ID = "conversation_id"
P_REASON = "reason"
P_REQUEST_CODE = "request_code"
P_APPROVAL_EVENTS_ENDPOINT = "approval_events_endpoint"
META_USER_CLAIMS_SUPPORTED = "agent_authorization_user_claims_supported"
META_MIN_CLAIMS = "agent_authorization_min_claims"
META_DRAFT = "agent_authorization_draft"
META_CHANNELS_SUPPORTED = "agent_authorization_channels_supported"
META_CAPTURE_METHODS_SUPPORTED = "agent_authorization_capture_methods_supported"
META_PREFIX = "agent_authorization_"
AAUTH_WELL_KNOWN = "/.well-known/aauth.json"
SCOPE_DESCRIPTIONS = "scope_descriptions"
#: ``capture_method`` values: deterministic capture only (never the model's free text).
CAPTURE_METHODS = ("dtmf", "asr_validated", "platform_tool", "caller_id_lookup")

DEFAULT_INTERVAL = 5.0
SLOW_DOWN_STEP = 5.0  # RFC 8628 §3.5
MAX_INTERVAL = 60.0  # a server asking for longer waits is capped (the timeout still bounds the whole wait)
MAX_TRANSIENT_FAILURES = 3  # consecutive network errors / 5xx while polling before giving up

Sleep = Callable[[float], Awaitable[None]]
OnWaiting = Callable[["AgentAuthorizationPending"], Awaitable[None] | None]


# --- errors -----------------------------------------------------------------------------------------------


class AgentAuthorizationError(TokenError):
    """The agent authorization grant failed. ``retry_after`` (seconds) is set when the server sent one
    (rate limits: ``429``)."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class IdentityNotVerified(AgentAuthorizationError):
    """``invalid_grant``: the details do not identify exactly one customer (no match, too few or only public
    attributes, ambiguous, or the customer is temporarily locked out). The server answers all of these the same
    way, on purpose; so does this error. Don't tell the caller which detail was wrong: nobody knows."""


class AgentAuthorizationDenied(AgentAuthorizationError):
    """``access_denied``: the customer (or an administrator) refused the elevated request."""


class AgentAuthorizationExpired(AgentAuthorizationError):
    """``expired_token``: nobody decided before the approval request expired."""


class AgentAuthorizationTimeout(AgentAuthorizationError):
    """The customer had not decided when the caller's ``timeout`` ran out (the request may still be pending
    on the server, and expires there by itself)."""


# --- results ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentAuthorizationPending:
    """The request needs the customer's approval: what ``on_waiting`` receives, once."""

    request_code: str = field(repr=False)
    #: Seconds between polls (grows on ``slow_down``).
    interval: float = DEFAULT_INTERVAL
    #: Seconds until the approval request expires on the server, when it said so.
    expires_in: float | None = None
    #: The scope asked for.
    scope: str | None = None
    #: Server-sent events of the approval's status, when the server offers them (``wait_events``).
    events_endpoint: str | None = None

    @property
    def message(self) -> str:
        """What an agent can say while it waits (no personal data in it)."""
        text = "Waiting for the customer's approval on their registered device"
        if self.expires_in is not None:
            text += f" (the request expires in {int(self.expires_in)} seconds)"
        return text + "."


@dataclass(frozen=True)
class AgentAuthorizationServer:
    """The parts of RFC 8414 metadata this grant uses. ``extensions`` holds every ``agent_authorization_*``
    member as published."""

    issuer: str
    token_endpoint: str
    user_claims_supported: tuple[str, ...] = ()
    min_claims: int | None = None
    channels_supported: tuple[str, ...] = ()
    capture_methods_supported: tuple[str, ...] = ()
    #: The draft revision the server follows (``agent_authorization_draft``).
    draft: str | None = None
    extensions: Mapping[str, Any] = field(default_factory=dict)


def parse_agent_authorization_metadata(doc: Mapping[str, Any], expected_issuer: str, url: str
                                       ) -> AgentAuthorizationServer:
    """Validate AS metadata (issuer, https token endpoint) and require the grant in ``grant_types_supported``."""
    server = parse_server_metadata(dict(doc), expected_issuer, url)
    grants = doc.get("grant_types_supported")
    if not isinstance(grants, list) or GRANT_TYPE not in grants:
        raise DiscoveryError(f"authorization server {expected_issuer!r} does not support the agent "
                             "authorization grant")
    def strings(name: str) -> tuple[str, ...]:
        value = doc.get(name)
        return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()

    minimum = doc.get(META_MIN_CLAIMS)
    draft = doc.get(META_DRAFT)
    return AgentAuthorizationServer(
        issuer=server.issuer,
        token_endpoint=server.token_endpoint,
        user_claims_supported=strings(META_USER_CLAIMS_SUPPORTED),
        min_claims=minimum if isinstance(minimum, int) and not isinstance(minimum, bool) else None,
        channels_supported=strings(META_CHANNELS_SUPPORTED),
        capture_methods_supported=strings(META_CAPTURE_METHODS_SUPPORTED),
        draft=draft if isinstance(draft, str) else None,
        extensions={k: v for k, v in doc.items() if isinstance(k, str) and k.startswith(META_PREFIX)},
    )


async def discover_agent_authorization(http: httpx.AsyncClient, issuer: str) -> AgentAuthorizationServer:
    """Fetch the authorization server's metadata (RFC 8414, then OpenID Connect Discovery) and check that it
    offers the agent authorization grant."""
    for candidate in as_metadata_candidates(issuer):
        try:
            response = await http.get(candidate, headers={"Accept": "application/json"})
        except httpx.TransportError as exc:
            raise DiscoveryError(f"authorization server metadata at {candidate} is unreachable: "
                                 f"{exc.__class__.__name__}") from exc
        verdict = classify(response)
        if verdict == "stop":
            raise DiscoveryError(f"authorization server metadata at {candidate} is unavailable",
                                 status_code=response.status_code)
        if verdict == "ok":
            doc = json_object(response)
            if doc is not None:
                return parse_agent_authorization_metadata(doc, issuer, candidate)
    raise DiscoveryError(f"no authorization server metadata found for issuer {issuer!r}")


async def fetch_scope_descriptions(http: httpx.AsyncClient, resource: str) -> dict[str, str]:
    """The resource server's natural-language scope descriptions (``/.well-known/aauth.json`` on the
    resource's origin), as ``{scope: description}``; empty when it publishes none."""
    parts = urlsplit(resource)
    url = urlunsplit((parts.scheme, parts.netloc, AAUTH_WELL_KNOWN, "", ""))
    try:
        response = await http.get(url, headers={"Accept": "application/json"})
    except httpx.TransportError:
        return {}
    doc = json_object(response) if response.status_code == 200 else None
    entries = doc.get(SCOPE_DESCRIPTIONS) if doc else None
    out: dict[str, str] = {}
    if isinstance(entries, list):
        for entry in entries:
            if isinstance(entry, dict) and isinstance(entry.get("scope"), str) \
                    and isinstance(entry.get("description"), str):
                out[entry["scope"]] = entry["description"]
    elif isinstance(entries, dict):
        out = {k: v for k, v in entries.items() if isinstance(k, str) and isinstance(v, str)}
    return out


# --- the client -------------------------------------------------------------------------------------------


class AgentAuthorizationClient:
    """A confidential agent client of the agent authorization grant (HTTP Basic client authentication).

    :param http: the client to send with (its auth, if any, is not used for these requests).
    :param token_endpoint: the authorization server's token endpoint.
    :param wait_events: when the server names an ``approval_events_endpoint``, wait on its server-sent events
        for the decision and then poll once, instead of polling every ``interval`` (any failure of the stream
        falls back to polling).
    :param sleep: ``asyncio.sleep`` (tests pass a fake); :param clock: monotonic seconds (likewise).
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        token_endpoint: str,
        client_id: str,
        client_secret: str,
        *,
        auth_method: str = "client_secret_basic",
        wait_events: bool = False,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not client_secret:
            raise ValueError("the agent authorization grant is for confidential clients: a client secret is needed")
        self.http = http
        self.token_endpoint = token_endpoint
        self._client = ClientRegistration(client_id=client_id, client_secret=client_secret,
                                          token_endpoint_auth_method=auth_method)
        self.wait_events = wait_events
        self._sleep = sleep
        self._clock = clock

    @property
    def client_id(self) -> str:
        return self._client.client_id

    def __repr__(self) -> str:
        return f"AgentAuthorizationClient(token_endpoint={self.token_endpoint!r}, client_id={self.client_id!r})"

    @classmethod
    async def discover(cls, http: httpx.AsyncClient, issuer: str, client_id: str, client_secret: str,
                       **kwargs: Any) -> AgentAuthorizationClient:
        """A client for ``issuer``'s token endpoint, found through its metadata (which must offer the grant)."""
        server = await discover_agent_authorization(http, issuer)
        return cls(http, server.token_endpoint, client_id, client_secret, **kwargs)

    async def request_token(
        self,
        user_claims: Mapping[str, Any],
        *,
        channel: str,
        capture_method: Mapping[str, str] | str,
        conversation_id: str,
        scope: str | None = None,
        resource: str | None = None,
        caller_id: str | None = None,
        reason: str | None = None,
        on_waiting: OnWaiting | None = None,
        timeout: float = 300,  # noqa: ASYNC109  (the wait is a sequence of polls, not one await)
    ) -> TokenSet:
        """Exchange identifying details for a token acting for the customer they identify.

        ``user_claims`` uses OIDC claim names (``given_name``, ``birthdate``, ``phone_number``,
        ``address: {postal_code}``...); ``capture_method`` says how each was captured (one entry per claim,
        each one of :data:`CAPTURE_METHODS`; or one method for all). ``caller_id`` comes from telephony
        signalling, never from the model.

        When the scope needs the customer's approval, ``on_waiting`` is called once with an
        :class:`AgentAuthorizationPending` and the token endpoint is polled every ``interval`` seconds (longer
        after ``slow_down`` or a ``Retry-After``) until the customer decides, or until no further poll fits in
        ``timeout`` seconds from the call (:class:`AgentAuthorizationTimeout`).
        """
        if not isinstance(user_claims, Mapping) or not user_claims:
            raise ValueError("user_claims must be a non-empty mapping of claim names to values")
        if not channel or not conversation_id or not capture_method:
            raise ValueError("channel, capture_method and conversation_id are required")
        deadline = self._clock() + max(0.0, timeout)
        sensitive = _sensitive_values(user_claims, caller_id, self._client.client_secret)
        methods = capture_method if isinstance(capture_method, str) else json.dumps(
            dict(capture_method), separators=(",", ":"), ensure_ascii=False)
        form: dict[str, str | None] = {
            "grant_type": GRANT_TYPE,
            P_USER_CLAIMS: json.dumps(dict(user_claims), separators=(",", ":"), ensure_ascii=False),
            P_CHANNEL: channel,
            P_CAPTURE_METHOD: methods,
            P_CONVERSATION_ID: conversation_id,
            P_CALLER_ID: caller_id,
            "scope": scope,
            "resource": resource,
            P_REASON: reason,
        }
        try:
            response = await self.http.send(token_request(self.token_endpoint, self._client, form))
        except httpx.TransportError as exc:
            raise AgentAuthorizationError(f"token endpoint unreachable: {exc.__class__.__name__}") from exc
        if response.status_code in (200, 201):
            log.debug("agent authorization: token issued without escalation")
            return self._tokens(response, scope, sensitive)
        error, description = oauth_error(response)
        if response.status_code == 400 and error == "authorization_pending":
            pending = _pending(response, scope)
            if pending is None:
                raise AgentAuthorizationError("escalation response carries no request_code",
                                              error=error, status_code=400)
            sensitive.add(pending.request_code)
            log.info("agent authorization: the customer's approval is needed; polling every %.0f s",
                     pending.interval)
            if on_waiting is not None:
                result = on_waiting(pending)
                if inspect.isawaitable(result):
                    await result
            return await self._poll(pending, deadline, scope, sensitive)
        raise _error(response, error, description, sensitive, polling=False)

    async def _poll(self, pending: AgentAuthorizationPending, deadline: float, scope: str | None,
                    sensitive: set[str]) -> TokenSet:
        interval = pending.interval
        wait = interval
        failures = 0
        if self.wait_events and pending.events_endpoint and await self._wait_events(pending.events_endpoint, deadline):
            wait = 0.0  # decided: the server answers at once, without poll timing
        form: dict[str, str | None] = {"grant_type": GRANT_TYPE, P_REQUEST_CODE: pending.request_code}
        while True:
            if self._clock() + wait > deadline:
                log.info("agent authorization: gave up waiting for the customer's approval")
                raise AgentAuthorizationTimeout("the customer did not decide in time")
            await self._sleep(wait)
            try:
                response = await self.http.send(token_request(self.token_endpoint, self._client, form))
            except httpx.TransportError as exc:
                failures += 1
                if failures >= MAX_TRANSIENT_FAILURES:
                    raise AgentAuthorizationError(f"token endpoint unreachable: {exc.__class__.__name__}") from exc
                wait = interval
                continue
            if response.status_code in (200, 201):
                log.info("agent authorization: approved")
                return self._tokens(response, scope, sensitive)
            if response.status_code >= 500:
                failures += 1
                if failures >= MAX_TRANSIENT_FAILURES:
                    raise AgentAuthorizationError("token endpoint failing", status_code=response.status_code)
                wait = interval
                continue
            failures = 0
            error, description = oauth_error(response)
            retry_after = _retry_after(response)
            if response.status_code == 429:
                wait = max(interval, retry_after or 0.0)
                continue
            if error == "authorization_pending":
                announced = _number(_body(response), "interval", "poll_interval")
                if announced is not None:
                    interval = max(interval, min(announced, MAX_INTERVAL))
                wait = interval
                continue
            if error == "slow_down":
                interval = min(max(interval + SLOW_DOWN_STEP, retry_after or 0.0), MAX_INTERVAL)
                log.info("agent authorization: slow_down; polling every %.0f s", interval)
                wait = interval
                continue
            raise _error(response, error, description, sensitive, polling=True)

    async def _wait_events(self, url: str, deadline: float) -> bool:
        """Read the approval's ``status`` events until it is no longer pending: True then; False when the stream
        cannot be used (another origin, an error, or it ended first)."""
        if not is_secure_url(url) or origin(url) != origin(self.token_endpoint):
            return False
        request = token_request(self.token_endpoint, self._client, {})  # only for its client authentication
        headers = {"Accept": "text/event-stream"}
        if "authorization" in request.headers:
            headers["Authorization"] = request.headers["authorization"]
        event, data = "message", ""
        try:
            async with asyncio.timeout(max(0.0, deadline - self._clock())), \
                    self.http.stream("GET", url, headers=headers) as response:
                if response.status_code != 200:
                    return False
                async for line in response.aiter_lines():
                    if line.startswith(":"):
                        continue
                    if line:
                        name, _, value = line.partition(":")
                        value = value.removeprefix(" ")
                        if name == "event":
                            event = value
                        elif name == "data":
                            data = value if not data else data + "\n" + value
                        continue
                    if event == "status":
                        try:
                            status = json.loads(data).get("status")
                        except (ValueError, AttributeError):
                            status = None
                        if isinstance(status, str) and status != "pending":
                            log.info("agent authorization: the approval request is %s", status)
                            return True
                    event, data = "message", ""
        except (TimeoutError, httpx.HTTPError):
            return False
        return False

    def _tokens(self, response: httpx.Response, scope: str | None, sensitive: set[str]) -> TokenSet:
        try:
            return parse_token_response(response, now=time.time(), requested_scope=scope)
        except TokenError as exc:
            raise AgentAuthorizationError("unusable token response", error=exc.error,
                                          error_description=_scrub(exc.error_description, sensitive),
                                          status_code=response.status_code) from None


# --- helpers ----------------------------------------------------------------------------------------------


def _body(response: httpx.Response) -> dict[str, Any]:
    try:
        data = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _number(data: Mapping[str, Any], *names: str) -> float | None:
    for name in names:
        value = data.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            return float(value)
        if isinstance(value, str) and value.isdigit():
            return float(value)
    return None


def _pending(response: httpx.Response, scope: str | None) -> AgentAuthorizationPending | None:
    data = _body(response)
    code = data.get(P_REQUEST_CODE)
    if not isinstance(code, str) or not code:
        return None
    interval = _number(data, "interval", "poll_interval")  # the profile accepts patwhite-00's name too
    interval = DEFAULT_INTERVAL if interval is None or interval <= 0 else min(interval, MAX_INTERVAL)
    events = data.get(P_APPROVAL_EVENTS_ENDPOINT)
    return AgentAuthorizationPending(request_code=code, interval=interval, expires_in=_number(data, "expires_in"),
                                     scope=scope, events_endpoint=events if isinstance(events, str) else None)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _leaves(value: Any) -> Iterator[str]:
    if isinstance(value, Mapping):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _leaves(item)
    elif value is not None and not isinstance(value, bool):
        yield str(value)


def _sensitive_values(claims: Mapping[str, Any], caller_id: str | None, secret: str | None) -> set[str]:
    values = set(_leaves(claims))
    values.update(v for v in (caller_id, secret) if v)
    # Also the forms a server might echo after normalising (digits of a phone number or date).
    values.update(d for v in list(values) if len(d := re.sub(r"\D", "", v)) >= 4)
    return {v for v in values if len(v.strip()) >= 3}


def _scrub(text: str | None, sensitive: set[str]) -> str | None:
    """Server-provided text with every submitted value cut out (case-insensitive)."""
    if not text:
        return text
    for value in sorted(sensitive, key=len, reverse=True):
        text = re.sub(re.escape(value), "[redacted]", text, flags=re.IGNORECASE)
    return text


def _error(response: httpx.Response, error: object, description: object, sensitive: set[str], *,
           polling: bool) -> AgentAuthorizationError:
    cls: type[AgentAuthorizationError] = AgentAuthorizationError
    message = "agent authorization refused"
    if error == "invalid_grant" and not polling:
        cls, message = IdentityNotVerified, "the details given do not identify a customer"
    elif error == "invalid_grant":
        message = "the approval request is no longer valid"
    elif error == "access_denied":
        cls, message = AgentAuthorizationDenied, "the customer denied the request"
    elif error == "expired_token":
        cls, message = AgentAuthorizationExpired, "the approval request expired"
    elif response.status_code == 429:
        message = "rate limited by the authorization server"
    log.info("agent authorization: %s", message)
    text = _scrub(description, sensitive) if isinstance(description, str) else None
    code = _scrub(error, sensitive) if isinstance(error, str) else None
    return cls(message, error=code, error_description=text, status_code=response.status_code,
               retry_after=_retry_after(response))
