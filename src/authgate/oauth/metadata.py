"""Authorization server metadata (RFC 8414), also served at the OpenID discovery path.

The issuer string is produced once (``Settings.issuer_url``) and reused byte for byte here, in tokens, in the
RFC 9207 ``iss`` parameter and in protected-resource metadata: MCP clients compare it exactly.
"""

from __future__ import annotations

from typing import Any

from authgate.aauth import wire as aauth_wire
from authgate.aauth.discovery import server_metadata_members as aauth_metadata_members
from authgate.config import Settings

CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]
CIBA_GRANT_TYPE = "urn:openid:params:grant-type:ciba"
AAUTH_GRANT_TYPE = aauth_wire.GRANT_TYPE
#: RFC 8693 token exchange (authgate.oauth.token_exchange); confidential clients only.
TOKEN_EXCHANGE_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
GRANT_TYPES = ["authorization_code", "refresh_token", "client_credentials", CIBA_GRANT_TYPE, AAUTH_GRANT_TYPE,
               TOKEN_EXCHANGE_GRANT_TYPE]
ASSERTION_ALGS = ["ES256", "RS256", "PS256", "EdDSA", "Ed25519"]


def server_metadata(settings: Settings) -> dict[str, Any]:
    issuer = settings.issuer_url
    doc: dict[str, Any] = {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "jwks_uri": f"{issuer}/jwks.json",
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": GRANT_TYPES,
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": CLIENT_AUTH_METHODS,
        "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "scopes_supported": list(settings.scopes),
        "authorization_response_iss_parameter_supported": True,
        "client_id_metadata_document_supported": True,
        "revocation_endpoint": f"{issuer}/revoke",
        "revocation_endpoint_auth_methods_supported": CLIENT_AUTH_METHODS,
        "introspection_endpoint": f"{issuer}/introspect",
        "introspection_endpoint_auth_methods_supported": [m for m in CLIENT_AUTH_METHODS if m != "none"],
        "subject_types_supported": ["public"],
        "backchannel_authentication_endpoint": f"{issuer}/bc-authorize",
        "backchannel_token_delivery_modes_supported": ["poll"],
        "backchannel_user_code_parameter_supported": False,
        **aauth_metadata_members(settings),
    }
    if settings.registration != "closed":
        doc["registration_endpoint"] = f"{issuer}/register"
    return doc
