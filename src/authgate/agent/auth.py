"""``OAuthAgentAuth``: an ``httpx.Auth`` that gets OAuth access on its own.

Per request: attach a cached token for the resource the URL belongs to (refreshing it first when it is
about to expire); on ``401``, or ``403`` with ``error="insufficient_scope"``, discover the protected
resource (RFC 9728) and its authorization server (RFC 8414 / OIDC), find or register a client (stored →
configured → RFC 7591), get a token (``client_credentials``, or authorization code + PKCE through the
interaction callback), and retry the request once. All OAuth traffic is yielded through the caller's
``httpx.AsyncClient`` (the ``httpx.Auth`` generator model), so its transport, proxies and timeouts apply.

Loop guards per request: at most one cheap retry (a token another request just obtained, a stored token,
or a refresh), then at most one full authorization flow for ``401``; at most ``max_step_ups`` step-ups
for ``403 insufficient_scope``, and never the same step-up scope twice. When the guards trip, the
server's last response is returned to the caller unchanged.

Async only: ``sync_auth_flow`` raises ``TypeError`` (the store and the interaction callback are async).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Generator, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from authgate.agent.challenge import Challenge, bearer_challenge, parse_challenges
from authgate.agent.discovery import (
    ResourceMetadata,
    ServerMetadata,
    as_metadata_candidates,
    classify,
    json_object,
    origin,
    parse_resource_metadata,
    parse_server_metadata,
    prm_candidates,
    resource_matches,
)
from authgate.agent.errors import (
    AgentAuthError,
    AuthorizationError,
    DiscoveryError,
    InteractionRequiredError,
    RegistrationError,
    TokenError,
)
from authgate.agent.oauth import (
    SECRET_METHODS,
    ClientMetadata,
    authorization_url,
    new_state,
    parse_callback,
    parse_registration,
    parse_token_response,
    pkce_pair,
    registration_request,
    select_scope,
    token_request,
    union,
)
from authgate.agent.store import ClientRegistration, MemoryTokenStore, TokenSet, TokenStore

logger = logging.getLogger("authgate.agent")

#: ``async (authorization_url) -> callback_url``: show the URL to a person (open a browser, print it,
#: drive a test server) and return the full URL the browser was redirected to.
Interaction = Callable[[str], Awaitable[str]]
Grant = Literal["authorization_code", "client_credentials"]

_CLIENT_CREDENTIALS_METADATA = ClientMetadata(
    grant_types=("client_credentials",), redirect_uris=(), token_endpoint_auth_method="client_secret_basic"
)


@dataclass
class _Session:
    """What we know about one protected resource."""

    resource: str
    resource_metadata: ResourceMetadata
    server: ServerMetadata
    client: ClientRegistration
    tokens: TokenSet | None


@dataclass
class _Exchange:
    """Carries each response back into the step that yielded the request, and the steps' results."""

    response: httpx.Response | None = None
    prm: ResourceMetadata | None = None
    server: ServerMetadata | None = None
    client: ClientRegistration | None = None
    client_stored: bool = False
    tokens: TokenSet | None = None
    scope: str | None = None
    full_flow: bool = False

    async def take(self, request: httpx.Request) -> httpx.Response:
        response = self.response
        self.response = None
        assert response is not None, "step resumed without a response"
        await response.aread()
        if origin(response.request.url) != origin(request.url):
            raise AgentAuthError(f"{request.method} {request.url} was redirected to another origin")
        return response


class OAuthAgentAuth(httpx.Auth):
    """Answer OAuth challenges from protected resources by getting (and caching) access tokens.

    :param interaction: async callback for the authorization code flow (see :data:`Interaction`).
    :param client_metadata: what to send when registering dynamically (RFC 7591).
    :param client: a pre-registered client; its ``issuer`` (if set) limits it to one server.
    :param grant: ``authorization_code`` (with a person) or ``client_credentials`` (no person).
    :param store: where registrations and tokens live; in memory by default.
    :param refresh_skew: refresh tokens this many seconds before they expire.
    :param max_step_ups: step-ups (``403 insufficient_scope``) allowed per request.
    :param offline_access: add ``offline_access`` to requested scopes when the server lists it.
    :param clock: seconds since the epoch (tests pass a fake).
    """

    def __init__(
        self,
        *,
        interaction: Interaction | None = None,
        client_metadata: ClientMetadata | None = None,
        client: ClientRegistration | None = None,
        grant: Grant = "authorization_code",
        store: TokenStore | None = None,
        refresh_skew: float = 30.0,
        max_step_ups: int = 2,
        offline_access: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if grant not in ("authorization_code", "client_credentials"):
            raise ValueError(f"unsupported grant {grant!r}")
        self.grant: Grant = grant
        self.interaction = interaction
        default_metadata = _CLIENT_CREDENTIALS_METADATA if grant == "client_credentials" else ClientMetadata()
        self.client_metadata = client_metadata or default_metadata
        if grant == "authorization_code" and not self.client_metadata.redirect_uris:
            raise ValueError("the authorization code grant needs at least one redirect URI")
        self.client = client
        self.store: TokenStore = store if store is not None else MemoryTokenStore()
        self.refresh_skew = refresh_skew
        self.max_step_ups = max_step_ups
        self.offline_access = offline_access and "refresh_token" in self.client_metadata.grant_types
        self.clock = clock
        self._sessions: dict[str, _Session] = {}
        self._lock = asyncio.Lock()

    # --- httpx.Auth ------------------------------------------------------------------------------------

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        raise TypeError("OAuthAgentAuth is async-only: use it with httpx.AsyncClient")
        yield request  # pragma: no cover  (makes this a generator, as httpx expects)

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        await request.aread()  # buffer the body so the request can be replayed
        sent: TokenSet | None = None
        session = self._session_for(request.url)
        if session is not None:
            if session.tokens is not None and self._expiring(session.tokens, self.refresh_skew):
                ex = _Exchange()
                async with self._lock:  # re-checked inside: another request may have refreshed already
                    async for req in self._keep_fresh(session, ex):
                        ex.response = yield req
            sent = session.tokens
        _authorize(request, sent)
        response = yield request

        cheap_retry_used = full_flow_used = False
        step_ups = 0
        tried_step_ups: set[frozenset[str]] = set()
        while True:
            kind = _needs_auth(response)
            if kind is None:
                return
            challenge = bearer_challenge(response.headers.get_list("www-authenticate"))
            if kind == "step_up" and step_ups >= self.max_step_ups:
                logger.info("step-up limit reached for %s", request.url.copy_with(query=None))
                return
            if kind == "auth" and full_flow_used:
                return
            if kind == "step_up":
                # Decide before any OAuth traffic: once we yield other requests, httpx hands the caller
                # the last response we saw, so giving up later would return the wrong response.
                wanted = frozenset(
                    union(sent.scope if sent else None, challenge.params.get("scope") if challenge else None)
                )
                if wanted in tried_step_ups:
                    logger.info("step-up to the same scope again refused for %s", request.url.copy_with(query=None))
                    return
                tried_step_ups.add(wanted)
            ex = _Exchange()
            async with self._lock:
                async for req in self._obtain(request.url, challenge, sent, kind, not cheap_retry_used, ex):
                    ex.response = yield req
            if kind == "step_up":
                step_ups += 1
            elif ex.full_flow:
                full_flow_used = True
            else:
                cheap_retry_used = True
            sent = ex.tokens
            _authorize(request, sent)
            response = yield request

    # --- sessions and refresh --------------------------------------------------------------------------

    def _session_for(self, url: httpx.URL) -> _Session | None:
        best: _Session | None = None
        for session in self._sessions.values():
            if (
                session.tokens is not None
                and resource_matches(url, session.resource)
                and (best is None or len(session.resource) > len(best.resource))
            ):
                best = session
        return best

    def _expiring(self, tokens: TokenSet, skew: float) -> bool:
        return tokens.expires_at is not None and tokens.expires_at - skew <= self.clock()

    async def _keep_fresh(self, session: _Session, ex: _Exchange) -> AsyncIterator[httpx.Request]:
        """Before sending: refresh a token about to expire; drop one that has expired."""
        tokens = session.tokens
        if tokens is None or not self._expiring(tokens, self.refresh_skew):
            return
        if tokens.refresh_token:
            async for req in self._refresh(session, tokens, ex):
                yield req
        elif self._expiring(tokens, 0):
            await self._save_tokens(session, None)

    async def _refresh(self, session: _Session, tokens: TokenSet, ex: _Exchange) -> AsyncIterator[httpx.Request]:
        """``grant_type=refresh_token`` with the resource; on refusal drop the tokens (a full flow follows)."""
        assert tokens.refresh_token is not None
        req = token_request(
            session.server.token_endpoint,
            session.client,
            {"grant_type": "refresh_token", "refresh_token": tokens.refresh_token, "resource": session.resource},
        )
        yield req
        response = await ex.take(req)
        try:
            new = parse_token_response(response, now=self.clock(), requested_scope=None, previous=tokens)
        except TokenError as exc:
            logger.info("refresh refused for %s: %s; starting over", session.resource, exc)
            await self._save_tokens(session, None)
            ex.tokens = None
            return
        await self._save_tokens(session, new)
        ex.tokens = new

    async def _save_tokens(self, session: _Session, tokens: TokenSet | None) -> None:
        session.tokens = tokens
        await self.store.set_tokens(session.server.issuer, session.resource, tokens)

    # --- the authorization flow ------------------------------------------------------------------------

    async def _obtain(
        self,
        url: httpx.URL,
        challenge: Challenge | None,
        sent: TokenSet | None,
        kind: Literal["auth", "step_up"],
        cheap: bool,
        ex: _Exchange,
    ) -> AsyncIterator[httpx.Request]:
        """Get a token after a challenge (``ex.tokens``), or raise."""
        header_url = challenge.params.get("resource_metadata") if challenge else None
        challenged_scope = (challenge.params.get("scope") or None) if challenge else None

        async for req in self._discover_resource(url, header_url, ex):
            yield req
        assert ex.prm is not None
        prm = ex.prm
        async for req in self._discover_server(prm.authorization_server, ex):
            yield req
        assert ex.server is not None
        server = ex.server

        session = self._sessions.get(prm.resource)
        if session is not None and session.server.issuer != server.issuer:
            session = None  # the resource moved to another authorization server
        previous = session.tokens if session else None
        if previous is None and kind == "auth":
            previous = await self.store.get_tokens(server.issuer, prm.resource)

        if cheap and previous is not None and previous != sent and _covers(previous, challenged_scope):
            # Another request (or an earlier run) already has a token we have not tried.
            if session is None:
                client = await self._known_client(server.issuer)
                if client is not None:
                    session = _Session(prm.resource, prm, server, client, previous)
                    self._sessions[prm.resource] = session
            if session is not None:
                session.tokens = previous
                if not self._expiring(previous, 0):
                    ex.tokens = previous
                    return
                if previous.refresh_token:
                    async for req in self._refresh(session, previous, ex):
                        yield req
                    if ex.tokens is not None:
                        return
        if cheap and kind == "auth" and sent is not None and sent.refresh_token and session is not None:
            async for req in self._refresh(session, sent, ex):
                yield req
            if ex.tokens is not None:
                return

        # Full flow.
        ex.full_flow = True
        prior_scope = session.tokens.scope if kind == "step_up" and session and session.tokens else None
        if kind == "step_up" and prior_scope is None and sent is not None:
            prior_scope = sent.scope
        scope = select_scope(
            challenged_scope,
            prm.scopes_supported,
            previous=prior_scope,
            server_scopes=server.scopes_supported,
            offline_access=self.offline_access and self.grant == "authorization_code",
        )
        ex.scope = scope
        async for req in self._client_for(server, " ".join(union(scope, prm.scopes_supported)) or None, ex):
            yield req
        assert ex.client is not None
        client = ex.client
        session = _Session(prm.resource, prm, server, client, None)
        try:
            if self.grant == "client_credentials":
                async for req in self._client_credentials(session, scope, ex):
                    yield req
            else:
                async for req in self._authorization_code(session, scope, ex):
                    yield req
        except TokenError as exc:
            if exc.error == "invalid_client" and ex.client_stored:
                logger.info("stored registration at %s rejected; it will be replaced", server.issuer)
                await self.store.set_client(server.issuer, None)
            raise
        assert ex.tokens is not None
        self._sessions[prm.resource] = session
        await self._save_tokens(session, ex.tokens)

    async def _discover_resource(
        self, url: httpx.URL, header_url: str | None, ex: _Exchange
    ) -> AsyncIterator[httpx.Request]:
        """RFC 9728 metadata: the challenge's ``resource_metadata``, then the path-inserted and root
        well-known URLs. The first 200 wins; 429 or 5xx stops the search."""

        def accept(doc: dict[str, Any], candidate: str) -> None:
            ex.prm = parse_resource_metadata(doc, url, candidate)

        async for req in _first_document(prm_candidates(url, header_url), ex, "protected resource metadata",
                                         accept, f"no protected resource metadata found for "
                                                 f"{url.copy_with(query=None)}"):
            yield req

    async def _discover_server(self, issuer: str, ex: _Exchange) -> AsyncIterator[httpx.Request]:
        """RFC 8414 then OpenID Connect Discovery; ``issuer`` must match exactly."""

        def accept(doc: dict[str, Any], candidate: str) -> None:
            ex.server = parse_server_metadata(doc, issuer, candidate)

        async for req in _first_document(as_metadata_candidates(issuer), ex, "authorization server metadata",
                                         accept, f"no authorization server metadata found for issuer {issuer!r}"):
            yield req

    async def _known_client(self, issuer: str) -> ClientRegistration | None:
        stored = await self.store.get_client(issuer)
        if stored is not None and stored.issuer == issuer and self._usable(stored):
            return stored
        if self.client is not None and self.client.issuer in (None, issuer):
            return self.client
        return None

    def _usable(self, client: ClientRegistration) -> bool:
        expires = client.client_secret_expires_at
        if client.client_secret and expires and expires <= self.clock():
            return False
        if self.grant == "authorization_code" and client.redirect_uris:
            return self.client_metadata.redirect_uris[0] in client.redirect_uris
        if self.grant == "client_credentials" and client.grant_types:
            return "client_credentials" in client.grant_types
        return True

    async def _client_for(
        self, server: ServerMetadata, scope: str | None, ex: _Exchange
    ) -> AsyncIterator[httpx.Request]:
        """Stored registration for this issuer → configured client → dynamic registration."""
        stored = await self.store.get_client(server.issuer)
        if stored is not None and stored.issuer == server.issuer and self._usable(stored):
            ex.client, ex.client_stored = stored, True
            return
        if self.client is not None and self.client.issuer in (None, server.issuer):
            ex.client = self.client
            return
        if server.registration_endpoint is None:
            raise RegistrationError(f"no client registered at {server.issuer} and it offers no registration endpoint")
        req = registration_request(server.registration_endpoint, self.client_metadata, scope)
        yield req
        response = await ex.take(req)
        client = parse_registration(response, issuer=server.issuer, metadata=self.client_metadata)
        logger.info("registered client %s at %s", client.client_id, server.issuer)
        await self.store.set_client(server.issuer, client)
        ex.client, ex.client_stored = client, True

    async def _client_credentials(
        self, session: _Session, scope: str | None, ex: _Exchange
    ) -> AsyncIterator[httpx.Request]:
        if session.client.token_endpoint_auth_method not in SECRET_METHODS:
            raise TokenError("client_credentials needs a confidential client (a client secret)")
        req = token_request(
            session.server.token_endpoint,
            session.client,
            {"grant_type": "client_credentials", "resource": session.resource, "scope": scope},
        )
        yield req
        response = await ex.take(req)
        ex.tokens = parse_token_response(response, now=self.clock(), requested_scope=scope)

    async def _authorization_code(
        self, session: _Session, scope: str | None, ex: _Exchange
    ) -> AsyncIterator[httpx.Request]:
        server = session.server
        if self.interaction is None:
            raise InteractionRequiredError(
                f"access to {session.resource} needs a person's approval, but no interaction callback is set"
            )
        if server.authorization_endpoint is None:
            raise DiscoveryError(f"{server.issuer} has no authorization_endpoint")
        if not server.supports_s256:
            raise DiscoveryError(f"{server.issuer} does not advertise PKCE S256 (code_challenge_methods_supported)")
        verifier, code_challenge = pkce_pair()
        state = new_state()
        redirect_uri = self.client_metadata.redirect_uris[0]
        url = authorization_url(
            server.authorization_endpoint,
            {
                "response_type": "code",
                "client_id": session.client.client_id,
                "redirect_uri": redirect_uri,
                "state": state,
                "code_challenge": code_challenge,
                "code_challenge_method": "S256",
                "resource": session.resource,
                "scope": scope,
                "prompt": "consent" if scope and "offline_access" in scope.split() else None,
            },
        )
        callback_url = await self.interaction(url)
        if not isinstance(callback_url, str):
            raise AuthorizationError("the interaction callback must return the callback URL as a string")
        code = parse_callback(
            callback_url, state=state, issuer=server.issuer, iss_required=server.iss_parameter_supported
        )
        req = token_request(
            server.token_endpoint,
            session.client,
            {
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect_uri,
                "code_verifier": verifier,
                "resource": session.resource,
            },
        )
        yield req
        response = await ex.take(req)
        ex.tokens = parse_token_response(response, now=self.clock(), requested_scope=scope)


async def _take_lenient(ex: _Exchange, request: httpx.Request) -> httpx.Response | None:
    """Like ``ex.take`` but a cross-origin redirect just means "not here"."""
    try:
        return await ex.take(request)
    except AgentAuthError:
        return None


def _authorize(request: httpx.Request, tokens: TokenSet | None) -> None:
    if tokens is None:
        request.headers.pop("Authorization", None)
    else:
        request.headers["Authorization"] = f"Bearer {tokens.access_token}"


def _needs_auth(response: httpx.Response) -> Literal["auth", "step_up"] | None:
    if response.status_code == 401:
        challenges = parse_challenges(response.headers.get_list("www-authenticate"))
        if challenges and not any(c.scheme == "bearer" for c in challenges):
            return None  # another scheme (Basic, DPoP...): not ours to answer
        return "auth"
    if response.status_code == 403:
        challenge = bearer_challenge(response.headers.get_list("www-authenticate"))
        if challenge is not None and challenge.params.get("error") == "insufficient_scope":
            return "step_up"
    return None


def _covers(tokens: TokenSet, scope: str | None) -> bool:
    if not scope:
        return True
    if tokens.scope is None:
        return False
    return set(scope.split()) <= set(tokens.scope.split())


async def _first_document(candidates: Iterable[str], ex: _Exchange, what: str,
                          accept: Callable[[dict[str, Any], str], None], missing: str
                          ) -> AsyncIterator[httpx.Request]:
    """GET each candidate URL in turn: a 200 with a JSON object is handed to ``accept`` and ends the search;
    other 3xx/4xx try the next; 429 and 5xx stop (the server is there but unwell, so guessing on is wrong)."""
    for candidate in candidates:
        req = httpx.Request("GET", candidate, headers={"Accept": "application/json"})
        yield req
        response = await _take_lenient(ex, req)
        verdict = classify(response) if response is not None else "next"
        if verdict == "stop":
            assert response is not None
            raise DiscoveryError(f"{what} at {candidate} is unavailable", status_code=response.status_code)
        if verdict == "ok":
            assert response is not None
            doc = json_object(response)
            if doc is not None:
                accept(doc, candidate)
                return
    raise DiscoveryError(missing)
