"""The authgate agent SDK: ``httpx`` auth flows that get access by themselves.

Depends only on the standard library and ``httpx`` (``pip install authgate`` without extras), so agents
do not pull in the server.

    async def open_browser_and_wait(authorization_url: str) -> str:
        ...  # show the URL to a person; return the full redirect URL their browser landed on

    auth = OAuthAgentAuth(
        interaction=open_browser_and_wait,
        client_metadata=ClientMetadata(client_name="my agent", redirect_uris=("http://127.0.0.1:8976/callback",)),
        store=FileTokenStore("~/.config/my-agent/tokens.json"),
    )
    async with httpx.AsyncClient(auth=auth) as http:
        r = await http.get("https://api.example/mcp")  # 401 -> discover, register, authorize, retry

Agents with no person use ``OAuthAgentAuth(grant="client_credentials")``. The auth is async-only (use it
with ``httpx.AsyncClient``); the interaction callback must not send through the same auth instance.

Voice and chat agents that identify a customer from details collected in conversation use
:class:`AgentAuthorizationClient` (the AAuth agent authorization grant: ``authgate.agent.aauth``).
"""

from authgate.agent.aauth import (
    AgentAuthorizationClient,
    AgentAuthorizationDenied,
    AgentAuthorizationError,
    AgentAuthorizationExpired,
    AgentAuthorizationPending,
    AgentAuthorizationServer,
    AgentAuthorizationTimeout,
    IdentityNotVerified,
    discover_agent_authorization,
    fetch_scope_descriptions,
)
from authgate.agent.auth import Interaction, OAuthAgentAuth
from authgate.agent.challenge import Challenge, bearer_challenge, parse_challenges
from authgate.agent.errors import (
    AgentAuthError,
    AuthorizationError,
    DiscoveryError,
    InteractionRequiredError,
    IssMismatchError,
    IssuerMismatchError,
    RegistrationError,
    StateMismatchError,
    TokenError,
    UserDeclinedError,
)
from authgate.agent.oauth import ClientMetadata
from authgate.agent.store import ClientRegistration, FileTokenStore, MemoryTokenStore, TokenSet, TokenStore

__all__ = [
    "AgentAuthError",
    "AgentAuthorizationClient",
    "AgentAuthorizationDenied",
    "AgentAuthorizationError",
    "AgentAuthorizationExpired",
    "AgentAuthorizationPending",
    "AgentAuthorizationServer",
    "AgentAuthorizationTimeout",
    "AuthorizationError",
    "Challenge",
    "ClientMetadata",
    "ClientRegistration",
    "DiscoveryError",
    "FileTokenStore",
    "IdentityNotVerified",
    "Interaction",
    "InteractionRequiredError",
    "IssMismatchError",
    "IssuerMismatchError",
    "MemoryTokenStore",
    "OAuthAgentAuth",
    "RegistrationError",
    "StateMismatchError",
    "TokenError",
    "TokenSet",
    "TokenStore",
    "UserDeclinedError",
    "bearer_challenge",
    "discover_agent_authorization",
    "fetch_scope_descriptions",
    "parse_challenges",
]
