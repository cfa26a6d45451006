"""Token exchange (RFC 8693) for an upstream that is itself protected by authgate: the gateway trades the
caller's access token for a narrower one whose audience is the upstream, and forwards only that (no token
passthrough: the caller's token, for the gateway's own audience, never leaves the gateway).

Per request let in by a bearer token (``oauth`` or ``aauth`` alternatives), :meth:`UpstreamTokens.token_for`
returns the token to send as ``Authorization: Bearer``: the caller's token as ``subject_token``, the gateway
authenticating as its own confidential client, ``resource`` = the upstream's resource identifier, ``scope`` =
the file's ``scopes`` or else the scopes of the alternative the request satisfied (least privilege: what the
route needed, not everything the caller holds). A fresh result is reused until shortly before it expires
(:class:`authgate.agent.exchange.TokenExchanger`, keyed by a hash of the caller's token). Requests let in
otherwise (Agent Auth, x402, public) carry no token upstream: only the identity headers.

When the authorization server will not exchange, the caller gets an RFC 6750 answer and nothing is forwarded:

* ``invalid_request``/``invalid_grant`` (RFC 8693 §2.2.2: the subject token is invalid, revoked or not
  exchangeable) → ``401 invalid_token``: get a new token;
* ``invalid_scope`` → ``403 insufficient_scope``;
* anything about the gateway's own registration (``invalid_client``, ``unauthorized_client``,
  ``invalid_target``, ...) → ``502 upstream_token_unavailable``, logged for the operator: not the caller's fault;
* the authorization server unreachable, failing (5xx, 429) or answering nonsense → ``503`` with ``Retry-After``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from starlette.types import Scope

from authgate.agent.discovery import as_metadata_candidates, classify, json_object, parse_server_metadata
from authgate.agent.errors import AgentAuthError, TokenError
from authgate.agent.exchange import TokenExchanger
from authgate.agent.store import ClientRegistration
from authgate.errors import InsufficientScope, InvalidToken, OAuthError, printable
from authgate.policy.identity import ALTERNATIVE_KEY, STATE_KEY, Identity
from authgate.resource.bearer import TemporarilyUnavailable

logger = logging.getLogger("authgate.gateway")

#: Mechanisms whose credential is one of the authorization server's access tokens, hence exchangeable.
BEARER_MECHANISMS = frozenset({"oauth", "aauth"})
#: The authorization server's errors that say the caller's token cannot be delegated (RFC 8693 §2.2.2).
_TOKEN_ERRORS = frozenset({"invalid_request", "invalid_grant"})


@dataclass(frozen=True)
class TokenExchangeSettings:
    """The ``[token_exchange]`` section of a gateway file (checked by :mod:`authgate.gateway.config`)."""

    client_id: str
    client_secret: str = field(repr=False)
    resource: str
    client_auth: str = "client_secret_basic"
    scopes: tuple[str, ...] | None = None
    token_endpoint: str | None = None
    cache_size: int = 1024


class UpstreamTokenUnavailable(OAuthError):
    """The gateway cannot get a token for the upstream for reasons of its own (registration, configuration)."""

    error = "upstream_token_unavailable"
    status_code = 502


class UpstreamTokens:
    """Exchanges each caller's token for one the upstream accepts. ``http`` reaches the authorization server
    ``issuer``; ``challenge`` are the ``WWW-Authenticate`` parameters of the gateway's own resource
    (``resource_metadata``), so a refused exchange is worded like any other bearer error of the gateway."""

    def __init__(self, http: httpx.AsyncClient, issuer: str, settings: TokenExchangeSettings, *,
                 challenge: dict[str, str] | None = None, clock: Callable[[], float] = time.time) -> None:
        self.http = http
        self.issuer = issuer
        self.settings = settings
        self.challenge = dict(challenge or {})
        self.clock = clock
        self.client = ClientRegistration(settings.client_id, settings.client_secret, settings.client_auth,
                                         issuer=issuer)
        self._exchanger: TokenExchanger | None = None
        if settings.token_endpoint is not None:
            self._exchanger = self._make(settings.token_endpoint)

    def _make(self, token_endpoint: str) -> TokenExchanger:
        return TokenExchanger(self.http, token_endpoint, self.client, max_entries=self.settings.cache_size,
                              now=self.clock)

    async def _discover(self) -> TokenExchanger:
        """The token endpoint from the issuer's metadata (RFC 8414), looked up once."""
        if self._exchanger is not None:
            return self._exchanger
        for url in as_metadata_candidates(self.issuer):
            try:
                response = await self.http.get(url, headers={"Accept": "application/json"})
            except httpx.HTTPError as exc:
                raise _unavailable(f"authorization server metadata unreachable: {exc.__class__.__name__}") from exc
            verdict = classify(response)
            if verdict == "stop":
                raise _unavailable(f"authorization server metadata: HTTP {response.status_code}")
            document = json_object(response) if verdict == "ok" else None
            if document is None:
                continue
            try:
                metadata = parse_server_metadata(document, self.issuer, url)
            except AgentAuthError as exc:
                raise _unavailable(str(exc)) from exc
            self._exchanger = self._make(metadata.token_endpoint)
            return self._exchanger
        raise _unavailable("authorization server metadata not found")

    async def token_for(self, scope: Scope) -> str | None:
        """The token to forward for this request (None: the request was not let in by a bearer token); an
        :class:`~authgate.errors.OAuthError` to answer instead of forwarding."""
        state = scope.get("state") or {}
        identity = state.get(STATE_KEY)
        if not isinstance(identity, Identity) or identity.mechanism not in BEARER_MECHANISMS:
            return None
        subject_token = _bearer(scope)
        if subject_token is None:  # the policy let it in by this very header: cannot happen
            raise InvalidToken("The access token is missing", challenge=self.challenge)
        scopes = self.settings.scopes
        if scopes is None:
            scopes = tuple(getattr(state.get(ALTERNATIVE_KEY), "scopes", ()))
        exchanger = await self._discover()
        try:
            token = await exchanger.token_for(subject_token, resource=self.settings.resource,
                                              scope=" ".join(scopes) or None)
        except TokenError as exc:
            raise self._refused(exc) from exc
        return token.access_token

    def _refused(self, exc: TokenError) -> OAuthError:
        said = f"{exc.error}: {exc.error_description or ''}" if exc.error else str(exc)
        if exc.status_code is None or exc.status_code >= 500 or exc.status_code == 429 or not exc.error:
            return _unavailable(said)
        if exc.error in _TOKEN_ERRORS:
            return InvalidToken("The access token cannot be exchanged for the upstream API",
                                challenge=self.challenge, debug=said)
        if exc.error == "invalid_scope":
            params = dict(self.challenge)
            if self.settings.scopes:
                params["scope"] = " ".join(self.settings.scopes)
            return InsufficientScope("The access token cannot be delegated with the scope the upstream API needs",
                                     challenge=params, debug=said)
        logger.warning("token exchange for the upstream refused by the authorization server: %s",
                       printable(said, 300))
        return UpstreamTokenUnavailable("The gateway could not obtain a token for the upstream API", debug=said)


def _unavailable(reason: str) -> OAuthError:
    logger.warning("token exchange for the upstream unavailable: %s", printable(reason, 300))
    return TemporarilyUnavailable("The authorization server cannot exchange tokens right now",
                                  headers={"Retry-After": "5"}, debug=reason)


def _bearer(scope: Scope) -> str | None:
    values = [v for k, v in scope.get("headers", ()) if k.lower() == b"authorization"]
    if len(values) != 1:
        return None
    kind, _, token = values[0].decode("latin-1").strip().partition(" ")
    return token.strip() or None if kind.lower() == "bearer" else None
