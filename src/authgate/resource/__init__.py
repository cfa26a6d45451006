"""Resource-server side: protect an API by route and scope with access tokens from an authgate AS.

Runs apart from the authorization server (it never imports ``authgate.app``, ``store`` or ``oauth``); it
only needs the AS issuer and its JWKS over HTTP. Modules: :mod:`.verifier` (RFC 9068 JWT access tokens),
:mod:`.jwks` (cached remote JWK Set), :mod:`.metadata` (RFC 9728, RFC 8707 identifiers), :mod:`.bearer`
(RFC 6750 challenges), :mod:`.middleware` (pure ASGI), :mod:`.dependencies` (Starlette/FastAPI) and
:mod:`.mcp` (the ``mcp`` SDK adapter, imported explicitly).
"""

from authgate.resource.bearer import BearerGuard
from authgate.resource.dependencies import RequireScopes, claims_of, install, metadata_route
from authgate.resource.metadata import ProtectedResource, canonical_resource
from authgate.resource.middleware import AuthGateMiddleware, Rule, protect, public
from authgate.resource.verifier import (
    AccessClaims,
    JWTVerifier,
    TokenRejected,
    TokenVerifier,
    VerifierUnavailable,
)

__all__ = [
    "AccessClaims",
    "AuthGateMiddleware",
    "BearerGuard",
    "JWTVerifier",
    "ProtectedResource",
    "RequireScopes",
    "Rule",
    "TokenRejected",
    "TokenVerifier",
    "VerifierUnavailable",
    "canonical_resource",
    "claims_of",
    "install",
    "metadata_route",
    "protect",
    "public",
]
