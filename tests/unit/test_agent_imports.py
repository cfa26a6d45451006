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


def test_agentauth_sdk_needs_only_httpx_and_cryptography() -> None:
    """``authgate.agent.agentauth`` (Agent Auth) adds ``cryptography`` and the standalone RFC 9421 signer
    (``authgate.crypto.httpsig`` and its helpers: standard library + ``cryptography``), nothing of the server."""
    allowed = {"authgate.crypto", "authgate.crypto.httpsig", "authgate.crypto.sfv", "authgate.crypto.jwk",
               "authgate.crypto.content_digest", "authgate.crypto.signature_key"}
    poisoned = [m for m in SERVER_ONLY if m != "cryptography"]
    code = textwrap.dedent(
        f"""
        import sys
        for name in {poisoned!r}:
            sys.modules[name] = None
        from authgate.agent.agentauth import AgentAuth, AgentKey
        AgentKey.generate()
        extra = [m for m in sys.modules if m.startswith("authgate.") and not m.startswith("authgate.agent")
                 and m not in {sorted(allowed)!r}]
        assert not extra, sorted(extra)
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
