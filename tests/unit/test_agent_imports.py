"""The agent SDK must import with only the standard library and httpx (DESIGN.md: ``authgate[agent]``
stays light)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import authgate.agent

SERVER_ONLY = ["starlette", "sqlalchemy", "joserfc", "cryptography", "jinja2", "alembic", "uvicorn", "pydantic"]


def test_import_without_server_dependencies() -> None:
    code = textwrap.dedent(
        f"""
        import sys
        for name in {SERVER_ONLY!r}:
            sys.modules[name] = None  # poisoned: importing it raises ImportError
        import authgate.agent
        from authgate.agent import OAuthAgentAuth, FileTokenStore, AgentAuthorizationClient
        OAuthAgentAuth()
        loaded = sorted({{m.split(".")[0] for m in sys.modules}} & set({SERVER_ONLY!r}))
        assert not [m for m in loaded if sys.modules.get(m) is not None], loaded
        assert not [m for m in sys.modules if m.startswith("authgate.") and not m.startswith("authgate.agent")
                    and m != "authgate"], sorted(sys.modules)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_public_api_is_pinned() -> None:
    assert sorted(authgate.agent.__all__) == [
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
