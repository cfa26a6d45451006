"""The authgate agent SDK: ``httpx`` auth flows that get access by themselves.

Depends only on the standard library and ``httpx`` (``pip install authgate`` without extras), so agents
do not pull in the server.

    async with httpx.AsyncClient(auth=OAuthAgentAuth(interaction=open_browser_and_wait)) as http:
        r = await http.get("https://api.example/mcp")
"""

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
    "AuthorizationError",
    "Challenge",
    "ClientMetadata",
    "ClientRegistration",
    "DiscoveryError",
    "FileTokenStore",
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
    "parse_challenges",
]
