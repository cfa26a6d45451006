"""Wire names of Agent Auth (draft-hardt-oauth-aauth-protocol-11, with draft-hardt-httpbis-signature-key-08).

Every token type, metadata document, header, requirement value and error code the package sends or reads is
spelled here once. Not to be confused with :mod:`authgate.aauth.wire` (Rosenberg/White's grant): that protocol
serves ``/.well-known/aauth.json`` and uses none of these names.
"""

from __future__ import annotations

#: The published revision this package follows (also the ``agentauth_draft`` default).
DRAFT = "draft-hardt-oauth-aauth-protocol-11"

# -- token types (JWT ``typ``) and the metadata document (``dwk``) each one's keys are found through ---------
TYP_AGENT = "aa-agent+jwt"
TYP_PERSON = "aa-person+jwt"
TYP_RESOURCE = "aa-resource+jwt"
TYP_AUTH = "aa-auth+jwt"

DWK_AGENT = "aauth-agent.json"
DWK_PERSON = "aauth-person.json"
DWK_RESOURCE = "aauth-resource.json"
DWK_ACCESS = "aauth-access.json"

#: Which ``dwk`` values a token of each type may name.
TYPE_DWK: dict[str, tuple[str, ...]] = {
    TYP_AGENT: (DWK_AGENT,),
    TYP_PERSON: (DWK_PERSON,),
    TYP_RESOURCE: (DWK_RESOURCE,),
    TYP_AUTH: (DWK_PERSON, DWK_ACCESS),
}

WELL_KNOWN = "/.well-known/"

#: The one JWS / JWK algorithm we emit (RFC 9864); ``ES256`` is accepted too. ``EdDSA`` is refused.
ALG_ED25519 = "Ed25519"
ALG_ES256 = "ES256"
ACCEPTED_ALGS = (ALG_ED25519, ALG_ES256)

# -- authgate profile extensions (unknown to other implementations, which ignore them) ------------------------
#: Resource metadata member and resource-token claim: the resource owner's risk level per scope,
#: ``{"orders:write": "high"}``. The person server takes the higher of this and its own level for the scope
#: (a resource can raise, never lower, what the person server's operator set); only the signed claim counts.
CLAIM_SCOPE_RISK = "scope_risk"
META_SCOPE_RISK = "scope_risk"
RISK_LOW = "low"
RISK_HIGH = "high"
#: The levels, lowest first.
RISK_LEVELS = (RISK_LOW, RISK_HIGH)

# -- headers ------------------------------------------------------------------------------------------------
H_REQUIREMENT = "AAuth-Requirement"
H_SIGNATURE_ERROR = "Signature-Error"
H_ACCEPT_SCHEME = "Accept-Signature-Scheme"
H_ACCEPT_ALG = "Accept-Signature-Alg"
H_SIGNATURE = "Signature"
H_SIGNATURE_INPUT = "Signature-Input"
H_SIGNATURE_KEY = "Signature-Key"
H_CONTENT_DIGEST = "Content-Digest"
H_PREFER = "Prefer"

# -- AAuth-Requirement values -------------------------------------------------------------------------------
REQ_AGENT_TOKEN = "agent-token"
REQ_PERSON_TOKEN = "person-token"
REQ_AUTH_TOKEN = "auth-token"
REQ_INTERACTION = "interaction"
REQ_APPROVAL = "approval"

# -- covered components -------------------------------------------------------------------------------------
REQUIRED_COMPONENTS = ("@method", "@authority", "@path", "signature-key")
BODY_COMPONENTS = ("content-type", "content-digest")

# -- signature errors (Signature-Error header, always 401) ---------------------------------------------------
SIG_INVALID_SIGNATURE = "invalid_signature"
SIG_INVALID_INPUT = "invalid_input"
SIG_UNSUPPORTED_SCHEME = "unsupported_scheme"
SIG_UNSUPPORTED_ALGORITHM = "unsupported_algorithm"
SIG_INVALID_KEY = "invalid_key"
SIG_UNKNOWN_KEY = "unknown_key"
SIG_INVALID_JWT = "invalid_jwt"
SIG_EXPIRED_JWT = "expired_jwt"
SIG_REVOKED_JWT = "revoked_jwt"
SIG_ISSUER_MISSING = "issuer_missing"
SIG_ISSUER_MISMATCH = "issuer_mismatch"
SIG_CLOCK_SKEW = "clock_skew"

# -- problem+json error codes of the PS and the resource ----------------------------------------------------
E_INVALID_REQUEST = "invalid_request"
E_INVALID_RESOURCE_TOKEN = "invalid_resource_token"
E_EXPIRED_RESOURCE_TOKEN = "expired_resource_token"
E_REVOKED_RESOURCE_TOKEN = "revoked_resource_token"
E_INVALID_PRESENTED_TOKEN = "invalid_presented_token"
E_EXPIRED_PRESENTED_TOKEN = "expired_presented_token"
E_REVOKED_PRESENTED_TOKEN = "revoked_presented_token"
E_USER_UNREACHABLE = "user_unreachable"
E_DENIED = "denied"
E_EXPIRED = "expired"
E_REVOKED = "revoked"
E_INVALID_SCOPE = "invalid_scope"
E_SERVER_ERROR = "server_error"
E_INSUFFICIENT_SCOPE = "insufficient_scope"

# -- paths of the collocated agent provider and person server on our issuer ------------------------------------
PATH_AP_JWKS = "/agentauth/jwks.json"
PATH_AGENTS = "/agentauth/agents"
PATH_AGENT_TOKEN = "/agentauth/agent-token"
PATH_PERSON_TOKEN = "/agentauth/person-token"
PATH_AUTH_TOKEN = "/agentauth/auth-token"
PATH_PENDING = "/agentauth/pending"
PATH_INTERACTION = "/agentauth/interaction"


def requirement_header(requirement: str, **params: str) -> str:
    """An ``AAuth-Requirement`` value (SF Dictionary): ``requirement=<token>`` then String parameters in the order
    given, ``_`` in a name written ``-`` (``resource_token`` → ``resource-token``). Values are our own tokens,
    URLs and codes: never anything with a quote or backslash."""
    out = f"requirement={requirement}"
    for name, value in params.items():
        if '"' in value or "\\" in value or not value.isprintable():
            raise ValueError("parameter value not representable as an SF String")
        out += f'; {name.replace("_", "-")}="{value}"'
    return out
