"""Wire names of the authgate trust profiles: mandates, attestations, budgets, the kill switch.

The x402 community only *proposes* mandates and attestations (x402.md §11.3), so these are authgate profiles:
every name a peer could see lives here, and docs/trust.md documents them. Both artefacts are compact JWS
(JWT) signed by an issuer whose JWKS the verifier is configured with, so they verify offline.

Mandate (``typ: authgate-mandate+jwt``), carried by the agent in the ``Authgate-Mandate`` request header::

    {"iss": issuer, "sub": person, "agent": agent id, "jti": id, "iat": …, "exp": …,
     "mandate": {"routes": ["GET /api/*", …], "payees": ["0xabc…"], "asset": "0x…" (optional),
                 "cap": {"amount": "1000000", "period": "day" | "week" | "month" | "total"}}}

Attestation (``typ: authgate-attestation+jwt``), one or more in ``Authgate-Attestation`` headers (repeat the
header or separate with commas)::

    {"iss": issuer, "sub": agent id, "iat": …, "exp": …, "jti": …,
     "claims": {"employee_of": "example.com", "verified_adult": true, "kyc": "passed"}}

A route policy that requires an attestation says so in every challenge and refusal of that route, in the
response header ``Authgate-Attestation-Required``: base64url (no padding) of the JSON object
``{"claims": {"verified_adult": true, "kyc": "passed"}, "issuers": ["https://kyc.example"]}`` (``issuers``
absent: any issuer the resource trusts). ``true`` means "present and truthy"; any other value must be equal.
"""

from __future__ import annotations

MANDATE_TYP = "authgate-mandate+jwt"
ATTESTATION_TYP = "authgate-attestation+jwt"

#: Request headers the agent puts its mandate and attestations in.
MANDATE_HEADER = "Authgate-Mandate"
ATTESTATION_HEADER = "Authgate-Attestation"
#: Request header the agent repeats a decided budget approval in (the id from the refusal).
APPROVAL_HEADER = "Authgate-Approval"
#: Response header of a route that requires attestations (format above).
ATTESTATION_REQUIRED_HEADER = "Authgate-Attestation-Required"

#: Claim names.
CLAIM_AGENT = "agent"
CLAIM_MANDATE = "mandate"
CLAIM_CLAIMS = "claims"
MANDATE_ROUTES = "routes"
MANDATE_PAYEES = "payees"
MANDATE_ASSET = "asset"
MANDATE_CAP = "cap"
CAP_AMOUNT = "amount"
CAP_PERIOD = "period"
PERIODS = ("day", "week", "month", "total")

#: Error codes (the ``error`` member of refusals); stable for callers and documented in docs/trust.md.
ERR_MANDATE_INVALID = "mandate_invalid"
ERR_MANDATE_UNTRUSTED = "mandate_untrusted_issuer"
ERR_MANDATE_EXPIRED = "mandate_expired"
ERR_MANDATE_REVOKED = "mandate_revoked"
ERR_MANDATE_AGENT = "mandate_wrong_agent"
ERR_MANDATE_ROUTE = "mandate_route_not_covered"
ERR_MANDATE_PAYEE = "mandate_payee_not_covered"
ERR_MANDATE_ASSET = "mandate_asset_not_covered"
ERR_MANDATE_AMOUNT = "mandate_amount_exceeded"
ERR_ATTESTATION_MISSING = "attestation_required"
ERR_ATTESTATION_INVALID = "attestation_invalid"
ERR_ATTESTATION_UNTRUSTED = "attestation_untrusted_issuer"
ERR_ATTESTATION_EXPIRED = "attestation_expired"
ERR_ATTESTATION_SUBJECT = "attestation_wrong_subject"
ERR_ATTESTATION_CLAIM = "attestation_claim_missing"
ERR_BUDGET_EXCEEDED = "budget_exceeded"
ERR_BUDGET_PENDING = "budget_approval_pending"
ERR_BUDGET_DENIED = "budget_approval_denied"
ERR_KILLED = "agent_disabled"
#: The trust database could not be reached: nothing was decided (503, ``Retry-After``).
ERR_UNAVAILABLE = "temporarily_unavailable"

#: Approval request kind for a payment over budget (approvals service).
APPROVAL_KIND_BUDGET = "budget"

#: Kill switch subjects.
KILL_AGENT = "agent"
KILL_CLIENT = "client"
KILL_USER = "user"
KILL_KINDS = (KILL_AGENT, KILL_CLIENT, KILL_USER)

#: Size bounds on what we parse.
MAX_JWT = 8192
MAX_LIST = 64
MAX_ID = 300
