"""Adapter for the ``mcp`` Python SDK (2.3): our verifier as its ``TokenVerifier``, and its ``AuthSettings``.

Only this module imports ``mcp`` (the ``authgate[mcp]`` extra)::

    from mcp.server.mcpserver import MCPServer

    verifier = JWTVerifier(issuer, audience="https://mcp.example.com/mcp")
    server = MCPServer("notes", token_verifier=AuthGateTokenVerifier(verifier),
                       auth=auth_settings(resource, required_scopes=["notes:read"]))

The SDK then serves the RFC 9728 document and answers ``401``/``403`` itself. Its challenges carry no
``scope`` parameter; to get the full MCP challenge set, wrap the SDK's app in
:class:`~authgate.resource.middleware.AuthGateMiddleware` instead.

Deploying under a real host name: the SDK's ``streamable_http_app()`` protects against DNS rebinding by
answering any ``Host`` other than localhost with ``421``; pass
``transport_security=TransportSecuritySettings(allowed_hosts=["mcp.example.com"])`` to ``MCPServer``.
"""

from __future__ import annotations

from collections.abc import Sequence

from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings

from authgate.resource.metadata import ProtectedResource, advertisable, check_scopes
from authgate.resource.verifier import TokenRejected, TokenVerifier, VerifierUnavailable


class AuthGateTokenVerifier:
    """Implements ``mcp.server.auth.provider.TokenVerifier`` on top of an authgate verifier."""

    def __init__(self, verifier: TokenVerifier) -> None:
        self.verifier = verifier

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            claims = await self.verifier.verify(token)
        except (TokenRejected, VerifierUnavailable):
            return None  # already logged by the verifier; the SDK answers 401 invalid_token
        return AccessToken(
            token=token,
            client_id=claims.client_id,
            scopes=sorted(claims.scopes),
            expires_at=claims.expires_at,
            resource=claims.audience,
            subject=claims.subject,
            claims=dict(claims.claims),
        )


def auth_settings(resource: ProtectedResource, required_scopes: Sequence[str] = ()) -> AuthSettings:
    """``AuthSettings`` for an ``MCPServer`` acting as a resource server of ``resource.authorization_servers[0]``.

    The issuer is passed as the plain string, so the SDK's metadata repeats it byte for byte.
    """
    scopes = list(advertisable(check_scopes(required_scopes)))
    return AuthSettings.model_validate(
        {
            "issuer_url": resource.authorization_servers[0],
            "resource_server_url": resource.resource,
            "required_scopes": scopes or None,
            "validate_token_resource": True,
        }
    )
