"""Table definitions: the single source of the schema, shared by the repositories and the migrations.

Everything secret (client secrets, registration access tokens, codes, refresh tokens) is stored as the
SHA-256 of its value; the value itself only ever exists in the response that handed it out.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

clients = sa.Table(
    "clients",
    metadata,
    sa.Column("client_id", sa.String(255), primary_key=True),
    sa.Column("metadata", sa.JSON, nullable=False),
    sa.Column("secret_hash", sa.String(64)),
    sa.Column("secret_expires_at", sa.BigInteger, nullable=False, default=0),
    sa.Column("rat_hash", sa.String(64), unique=True),
    sa.Column("dynamic", sa.Boolean, nullable=False, default=False),
    sa.Column("metadata_digest", sa.String(64), index=True),
    sa.Column("issued_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("subject", sa.String(64), primary_key=True),
    sa.Column("username", sa.String(255), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    # Where this person is reached for approvals (migration 0002).
    sa.Column("email", sa.String(320)),
    sa.Column("phone", sa.String(32)),
    sa.Column("webhook_url", sa.String(2000)),
    sa.Column("is_admin", sa.Boolean, nullable=False, server_default=sa.false()),
)

signing_keys = sa.Table(
    "signing_keys",
    metadata,
    sa.Column("kid", sa.String(64), primary_key=True),
    sa.Column("alg", sa.String(16), nullable=False),
    sa.Column("private_jwk", sa.JSON, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    # A retired key no longer signs but stays in the JWKS until every token it signed has expired.
    sa.Column("retired_at", sa.BigInteger),
    sa.Column("remove_after", sa.BigInteger),
)

# Short- and long-lived grant artefacts in one table, shaped like node-oidc-provider's adapter: codes,
# refresh tokens, access-token records (for introspection and revocation), initial access tokens.
# ``consume`` is a conditional UPDATE so single use holds across processes.
artifacts = sa.Table(
    "artifacts",
    metadata,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("client_id", sa.String(255), index=True),
    sa.Column("grant_id", sa.String(64), index=True),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=False, index=True),
    sa.Column("consumed_at", sa.BigInteger),
    sa.Column("revoked_at", sa.BigInteger),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.BigInteger, nullable=False, index=True),
    sa.Column("event", sa.String(64), nullable=False),
    sa.Column("client_id", sa.String(255)),
    sa.Column("subject", sa.String(255)),
    sa.Column("detail", sa.JSON, nullable=False),
)

# Agent Auth signed requests already accepted (migration 0005): ``key`` is the hex SHA-256 of the signer's key
# thumbprint and the signature base (authgate.crypto.httpsig.replay_key); a row lives for the created window.
# Insert-if-absent under the primary key makes "second use refused" hold across processes.
signature_replay = sa.Table(
    "signature_replay",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("expires_at", sa.BigInteger, nullable=False, index=True),
)

# One row per request for a person's decision, whatever asked for it (OAuth consent, CIBA, AAuth escalation,
# Agent Auth consent, a payment over budget). ``status`` moves from pending exactly once, by a conditional
# UPDATE; ``link_hash`` / ``code_hash`` hold one-time link and short-code digests for out-of-band channels.
approval_requests = sa.Table(
    "approval_requests",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("subject", sa.String(64), index=True),
    sa.Column("client_id", sa.String(255)),
    sa.Column("details", sa.JSON, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("binding_message", sa.String(256)),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=False, index=True),
    sa.Column("decided_at", sa.BigInteger),
    sa.Column("decided_by", sa.String(255)),
    sa.Column("channel", sa.String(32)),
    sa.Column("link_hash", sa.String(64), unique=True),
    sa.Column("code_hash", sa.String(64)),
)

# AAuth identity directory (migration 0003). Only keyed hashes of normalised attribute values are stored: ``blind``
# is HMAC-SHA-256(pepper, name "\0" value), hex; it already depends on the name, so it alone is the lookup key.
identity_attributes = sa.Table(
    "identity_attributes",
    metadata,
    sa.Column("subject", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("blind", sa.String(64), nullable=False, index=True),
)

# Failed identity matches per claimed person (a blinded index, never a raw value) and the lock-out they cause.
identity_lockouts = sa.Table(
    "identity_lockouts",
    metadata,
    sa.Column("user_index", sa.String(64), primary_key=True),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("window_start", sa.BigInteger, nullable=False),
    sa.Column("locked_until", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False, index=True),
)

# Server-generated secrets every process must agree on (the identity pepper), created once by whoever is first.
server_secrets = sa.Table(
    "server_secrets",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

# -- Agent Auth (migration 0006; authgate.agentauth, repository authgate.store.agentauth) --------------------
# Our Ed25519 signing keys for agent, person, resource and auth tokens. Kept apart from ``signing_keys``
# (ES256, OAuth): a different algorithm and different metadata documents publish them.
agentauth_keys = sa.Table(
    "agentauth_keys",
    metadata,
    sa.Column("kid", sa.String(64), primary_key=True),
    sa.Column("alg", sa.String(16), nullable=False),
    sa.Column("private_jwk", sa.JSON, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("retired_at", sa.BigInteger),
)

# Agents enrolled with our agent provider by their owner (a user); ``jkt`` is the thumbprint of the key the
# current agent token binds. A revoked agent gets no new tokens and its issued tokens count as revoked.
agentauth_agents = sa.Table(
    "agentauth_agents",
    metadata,
    sa.Column("agent_id", sa.String(300), primary_key=True),
    sa.Column("owner", sa.String(64), nullable=False, index=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("jkt", sa.String(64), nullable=False),
    sa.Column("public_jwk", sa.JSON, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Column("revoked_at", sa.BigInteger),
)

# Remembered consent of a person for one agent, resource and scope (person server). Only low-risk scopes are
# ever granted from it; revoking sets ``revoked_at`` and the next request asks again.
agentauth_consents = sa.Table(
    "agentauth_consents",
    metadata,
    sa.Column("subject", sa.String(64), primary_key=True),
    sa.Column("agent_id", sa.String(300), primary_key=True),
    sa.Column("resource", sa.String(255), primary_key=True),
    sa.Column("scope", sa.String(128), primary_key=True),
    sa.Column("granted_at", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=False),
    sa.Column("revoked_at", sa.BigInteger),
)

# Every token we issue, by ``jti``: revocation (``revoked_jwt``) and the audit trail. No token values.
agentauth_tokens = sa.Table(
    "agentauth_tokens",
    metadata,
    sa.Column("jti", sa.String(128), primary_key=True),
    sa.Column("typ", sa.String(24), nullable=False),
    sa.Column("agent_id", sa.String(300), nullable=False, index=True),
    sa.Column("subject", sa.String(64), index=True),
    sa.Column("audience", sa.String(255)),
    sa.Column("issued_at", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=False, index=True),
    sa.Column("revoked_at", sa.BigInteger),
)

# x402 payments settled by our facilitator (migration 0004). One row per EIP-3009 authorization: the unique
# ``(network, asset, payer, nonce)`` is the reservation taken *before* a transaction is submitted, so a second
# /settle for the same authorization (any process) joins the first instead of submitting again. Addresses are
# lower-case; ``digest`` is the authorization's EIP-712 digest (a different authorization reusing the nonce is
# refused). ``owner``/``lease_until`` let another process reconcile an attempt whose owner died before it
# recorded a transaction hash. No keys or signatures are stored.
x402_payments = sa.Table(
    "x402_payments",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("network", sa.String(64), nullable=False),
    sa.Column("asset", sa.String(64), nullable=False),
    sa.Column("payer", sa.String(64), nullable=False, index=True),
    sa.Column("nonce", sa.String(66), nullable=False),
    sa.Column("payee", sa.String(64), nullable=False),
    sa.Column("amount", sa.String(80), nullable=False),
    sa.Column("scheme", sa.String(32), nullable=False),
    sa.Column("resource_url", sa.String(2048)),
    sa.Column("digest", sa.String(66), nullable=False),
    sa.Column("valid_before", sa.BigInteger, nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("tx_hash", sa.String(66)),
    sa.Column("error_reason", sa.String(128)),
    sa.Column("error_message", sa.String(512)),
    sa.Column("owner", sa.String(32), nullable=False),
    sa.Column("lease_until", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False, index=True),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
    sa.Column("settled_at", sa.BigInteger),
    sa.UniqueConstraint("network", "asset", "payer", "nonce", name="uq_x402_payments_authorization"),
)

# Trust and control (migration 0007, authgate.trust). Amounts are integers in the asset's atomic units.
# ``trust_budgets``: spend limits per agent key (client id, Agent Auth agent id, or x402 payer address).
trust_budgets = sa.Table(
    "trust_budgets",
    metadata,
    sa.Column("agent", sa.String(300), primary_key=True),
    sa.Column("per_request", sa.BigInteger),
    sa.Column("per_day", sa.BigInteger),
    sa.Column("per_payee_day", sa.BigInteger),
    # The person asked when a payment is over a limit (None = refuse instead of asking).
    sa.Column("approver", sa.String(64)),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

# Spending counters: one row per (key, period, payee); ``payee`` '*' is the total. Charged by a conditional
# UPDATE (``spent + amount <= limit``) so concurrent payments cannot both pass a limit in any process.
trust_spend = sa.Table(
    "trust_spend",
    metadata,
    sa.Column("key", sa.String(320), primary_key=True),
    sa.Column("period", sa.String(32), primary_key=True),
    sa.Column("payee", sa.String(80), primary_key=True),
    sa.Column("spent", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

# Mandates this server issued (the JWT itself is not stored); ``revoked_at`` is the revocation list.
trust_mandates = sa.Table(
    "trust_mandates",
    metadata,
    sa.Column("jti", sa.String(64), primary_key=True),
    sa.Column("subject", sa.String(64), nullable=False, index=True),
    sa.Column("agent", sa.String(300), nullable=False, index=True),
    sa.Column("terms", sa.JSON, nullable=False),
    sa.Column("issued_at", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=False),
    sa.Column("revoked_at", sa.BigInteger),
)

# Kill switch: a row per disabled agent, client or user; reviving deletes it (the audit log keeps history).
trust_kills = sa.Table(
    "trust_kills",
    metadata,
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("ident", sa.String(300), primary_key=True),
    sa.Column("killed_at", sa.BigInteger, nullable=False),
    sa.Column("killed_by", sa.String(255)),
    sa.Column("reason", sa.String(500)),
)

# Version counters (name 'kills', 'mandates'): bumped with every change, read once per request by each
# process to know whether its cached copy is stale.
trust_versions = sa.Table(
    "trust_versions",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("version", sa.BigInteger, nullable=False),
)

# Rate-limit buckets shared by every process on the database (migration 0009; authgate.store.ratelimits), used
# when there is no Redis: one row per (limiter, caller), keyed by the SHA-256 of both (never a caller in clear),
# holding the current fixed window and its count. ``expires_at`` (the window's end) lets dead rows be purged.
rate_limit_counters = sa.Table(
    "rate_limit_counters",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("window_start", sa.BigInteger, nullable=False),
    sa.Column("hits", sa.Integer, nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=False, index=True),
)
