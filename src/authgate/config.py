"""Server settings: defaults here, overridden by a TOML file, then ``AUTHGATE_*`` environment variables,
then command-line flags. Every default is the safe one; loosening needs an explicit setting."""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from authgate.aauth.wire import DEFAULT_DRAFT

RegistrationMode = Literal["open", "token", "closed"]
RateLimitBackend = Literal["auto", "memory", "database", "redis"]


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names it."""


class DatabaseUnavailable(ConfigError):
    """The database the settings name cannot be opened or reached (no driver, a directory that cannot be made, a
    refused connection, an unknown role or database). The message names the database (host and port, or the
    SQLite path), never a password; the ``authgate`` command prints it as a configuration error (exit 2)."""


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "authgate"


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    #: The issuer identifier; one spelling, no trailing slash. Derived from host/port when empty.
    issuer: str = ""
    data_dir: Path = field(default_factory=default_data_dir)
    #: SQLAlchemy-style or plain URL: ``sqlite:///path``, ``postgresql://user@host/db``. Empty = SQLite file
    #: ``authgate.db`` under ``data_dir``.
    database_url: str = ""
    #: Connection pool per server process (PostgreSQL): kept-open connections, and extra ones under a burst.
    #: With ``workers`` processes the database sees up to ``workers * (db_pool_size + db_max_overflow)``.
    db_pool_size: int = 10
    db_max_overflow: int = 10
    #: ``redis://host:6379/0``: rate-limit buckets, the Agent Auth replay cache and fetched client key sets
    #: (``jwks_uri``, HMAC-tagged) shared by every process via Redis (authgate.shared). Empty = off: replay
    #: records in the database, rate limits as ``rate_limit_backend`` says, key sets cached per process.
    redis_url: str = ""
    #: Start of every Redis key authgate writes: deployments (or tests) sharing one Redis keep apart by it.
    redis_prefix: str = "authgate:"
    #: Where the registration, sign-in, CIBA and AAuth rate limits count: ``memory`` (each process on its own),
    #: ``database`` (one bucket per caller for every process on the database), ``redis`` (needs ``redis_url``;
    #: the database while Redis is down), or ``auto``: Redis when ``redis_url`` is set, else the database when
    #: ``workers`` > 1 or the database is PostgreSQL, else memory.
    rate_limit_backend: RateLimitBackend = "auto"
    #: ``authgate serve`` processes (uvicorn workers) on one port; each has its own pool and caches.
    workers: int = 1
    #: Seconds a stopping server lets in-flight requests (settlements, token issuance) finish before closing.
    shutdown_timeout: int = 30

    #: ``open``: anyone may register (rate-limited); ``token``: an initial access token is required;
    #: ``closed``: dynamic registration is off.
    registration: RegistrationMode = "open"
    registration_rate_limit: int = 20  # registrations per source address per minute
    max_clients: int = 10_000
    #: Scopes the server knows. Dynamically registered clients get the intersection of what they ask for.
    scopes: tuple[str, ...] = ("read", "write", "offline_access")
    default_scopes: tuple[str, ...] = ("read",)
    #: Resource indicators (RFC 8707) tokens may be issued for. Empty = any absolute http(s) URI.
    resources: tuple[str, ...] = ()
    #: ``iss`` -> JWKS (dict) of software-statement publishers we trust.
    software_statement_issuers: dict[str, dict[str, Any]] = field(default_factory=dict)

    access_token_ttl: int = 600
    refresh_token_ttl: int = 30 * 24 * 3600
    code_ttl: int = 60
    client_secret_ttl: int = 0  # 0 = secrets never expire (what MCP clients can live with)

    # -- RFC 8693 token exchange (authgate.oauth.token_exchange) ------------------------------------------
    #: Longest life of an exchanged token (seconds); it never outlives the subject token either.
    token_exchange_ttl: int = 300
    #: Resource URI -> client_ids that serve it (its resource server or gateway). Such a client may exchange
    #: tokens whose ``aud`` is that resource; any client may exchange tokens issued to itself.
    token_exchange_actors: dict[str, Any] = field(default_factory=dict)
    #: Most actors an exchanged token's ``act`` chain may hold (each exchange adds one).
    token_exchange_max_chain: int = 4

    #: Development only: approve every authorization request as ``auto_approve_subject`` with no person.
    auto_approve: bool = False
    auto_approve_subject: str = "dev-user"
    #: Development and tests only: let server-side fetches (client metadata documents) reach loopback.
    allow_loopback_fetch: bool = False
    log_level: str = "info"
    #: ``text`` for people, ``json`` (one object per line, with the request ID) for log pipelines.
    log_format: str = "text"
    #: Serve Prometheus metrics at ``/metrics``; with ``metrics_token`` set, only to ``Bearer <token>``.
    metrics_enabled: bool = True
    metrics_token: str = ""

    # -- OpenID CIBA ``/bc-authorize`` (authgate.oauth.ciba) ----------------------------------------------------
    #: Backchannel authentication requests per minute per client: every request of a CIBA client, an unknown
    #: ``login_hint`` included (so guessing usernames is throttled). 0 = unlimited.
    ciba_rate_per_client: int = 30
    #: Requests per minute naming one person, from all clients together: each one reaches the person's channels
    #: (SMS, e-mail, webhook). 0 = unlimited.
    ciba_rate_per_user: int = 5
    #: Most CIBA requests one person may have open (pending, not expired) at once, from all clients. 0 = no cap.
    ciba_max_pending_per_user: int = 10

    # -- approval delivery channels and one-time links (authgate.approvals.channels, .links) -------------
    #: How long a person has to decide an approval request by default, and the most a requester may ask for.
    approvals_ttl: int = 300
    approvals_max_ttl: int = 3600
    #: Request kind -> channel names (``email``, ``sms``, ``webhook``, ``console``); key ``"*"`` is the
    #: fallback. A kind not listed (and no ``"*"``) goes to every channel the user has.
    approvals_channels: dict[str, Any] = field(default_factory=dict)
    #: ``auto``: the console channel prints links when the issuer is on loopback (development); ``on``/``off``.
    approvals_console: str = "auto"
    #: A one-time link alone never approves. Off: it leads to the signed-in request page. On: it opens a page
    #: where the person enters the 6-digit code sent on one of ``approvals_code_channels``.
    approvals_link_requires_code: bool = False
    approvals_code_channels: tuple[str, ...] = ("sms", "console")
    approvals_code_attempts: int = 5
    approvals_delivery_concurrency: int = 8
    approvals_delivery_timeout: int = 10
    #: HMAC-SHA256 key for the ``authgate-signature`` header; the webhook channel is off while it is empty.
    approvals_webhook_secret: str = ""
    #: Development and tests only: let webhooks and the SMS API be plain http to loopback.
    delivery_allow_loopback: bool = False
    #: E-mail: off while ``smtp_host`` is empty. ``smtp_security``: ``starttls``, ``tls`` (implicit) or ``none``.
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_security: str = "starttls"
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_from: str = ""
    #: SMS through a Twilio-shaped API: off while ``sms_base_url`` is empty.
    sms_base_url: str = ""
    sms_account_sid: str = ""
    sms_auth_token: str = ""
    sms_from: str = ""

    # -- AAuth identity directory and abuse controls (authgate.aauth.directory, .abuse) -----------------
    #: Secret key of the blinded identity attributes (HMAC-SHA-256), at least 32 characters. Empty: one is
    #: generated on first start and kept in the database (every process and restart then agrees). Set it (from
    #: a secret store, ``AUTHGATE_AAUTH_PEPPER``) to keep it out of database backups; changing it orphans every
    #: stored attribute until ``authgate users import``/``set-attributes`` recompute them.
    aauth_pepper: str = field(default="", repr=False)
    #: A match needs this many submitted attributes equal to the person's, at least one of them not public.
    aauth_min_claims: int = 3
    #: Attributes anyone may know about a person (they count towards the minimum but never suffice alone).
    aauth_public_claims: tuple[str, ...] = ("given_name", "family_name", "email", "phone_number")
    aauth_max_claims: int = 12
    #: Digits of the country code national phone numbers are read in (``1``, ``44``); empty: E.164 only.
    aauth_default_country_code: str = ""
    #: ``mdy`` or ``dmy`` settles dates like ``04/02/1980``; empty: such ambiguous dates are refused.
    aauth_date_order: str = ""
    #: Identity attempts per minute per dimension (in-process counters; 0 = unlimited).
    aauth_rate_client: int = 60
    aauth_rate_user: int = 10
    aauth_rate_caller_id: int = 10
    aauth_rate_ip: int = 30
    aauth_rate_conversation: int = 5
    #: After ``aauth_lockout_threshold`` failed matches for one claimed person within ``aauth_lockout_window``
    #: seconds, matching for that person is refused for ``aauth_lockout_seconds`` (durable, shared).
    aauth_lockout_threshold: int = 5
    aauth_lockout_window: int = 900
    aauth_lockout_seconds: int = 900

    # -- AAuth agent authorization grant (authgate.aauth.grant, .wire) -----------------------------------
    #: The draft revision the grant follows, advertised as ``agent_authorization_draft`` in server metadata.
    aauth_draft: str = DEFAULT_DRAFT
    #: Lifetime of the grant's access tokens (seconds; the profile asks for 5-15 minutes). Never refreshable.
    aauth_token_ttl: int = 600
    #: How long the user has to approve an escalation, and so how long its ``request_code`` lives.
    aauth_escalation_ttl: int = 300
    #: Seconds an agent waits between polls of a pending escalation (``slow_down`` adds 5 each time).
    aauth_interval: int = 5

    # -- Agent Auth (authgate.agentauth; Hardt's draft-hardt-oauth-aauth-protocol, not the aauth_* grant) -----
    #: Serve the agent provider and person server (``/.well-known/aauth-agent.json``, ``aauth-person.json``).
    agentauth_enabled: bool = False
    #: The draft revision followed; shown in metadata (``draft``) and logs.
    agentauth_draft: str = "draft-hardt-oauth-aauth-protocol-11"
    #: Secret that authorises ``POST /agentauth/agents`` (enrolment for a named owner); empty = only bearer
    #: tokens with ``agentauth_enroll_scope`` (owner = the token's subject) may enrol over HTTP.
    agentauth_admin_key: str = field(default="", repr=False)
    agentauth_enroll_scope: str = "agents:enroll"
    #: Token lifetimes (seconds): agent ≤ 24 h; person and auth ≤ 1 h (-11 §12); capped by the tokens they rest on.
    agentauth_agent_token_ttl: int = 3600
    agentauth_person_token_ttl: int = 3600
    agentauth_auth_token_ttl: int = 3600
    #: How long remembered consent to a low-risk scope lasts (per person, agent, resource, scope).
    agentauth_consent_ttl: int = 30 * 24 * 3600
    #: Risk of each scope, set by the resource owner: ``"scope"`` or ``"https://resource scope"`` -> ``low`` or
    #: ``high``. Low-risk scopes are granted from remembered consent; high-risk ones ask the person every time.
    agentauth_scope_risk: dict[str, Any] = field(default_factory=dict)
    #: Risk of scopes not listed in ``agentauth_scope_risk``.
    agentauth_default_risk: str = "high"
    #: A call whose resource token carries an amount above this (whole units of its currency) asks the person
    #: every time; 0: every amount asks.
    agentauth_amount_threshold: int = 0
    #: Lifetime of a pending auth-token request (the person's time to decide), ``Retry-After`` of its polls, and
    #: the longest ``Prefer: wait`` honoured.
    agentauth_pending_ttl: int = 600
    agentauth_poll_interval: int = 2
    agentauth_max_wait: int = 45
    #: Development only: accept ``http://127.0.0.1:port`` / ``localhost`` server identifiers (the demo).
    agentauth_allow_http_loopback: bool = False

    # -- x402 chain the facilitator settles on (authgate.x402.chain) ------------------------------------------
    #: ``embedded``: an in-process EVM with our TestUSDC (offline, test money); ``jsonrpc``: a node at
    #: ``x402_rpc_url`` (``authgate devchain``, Base Sepolia, Base).
    x402_chain: str = "embedded"
    #: http(s) URL of the JSON-RPC node (jsonrpc only); plain http only to loopback.
    x402_rpc_url: str = ""
    #: The facilitator's private key, which pays gas for settlements: ``0x``-hex, ``file:PATH`` (first line of
    #: the file) or ``env:NAME``. Required for jsonrpc; never logged. Embedded: empty (a fixed test key).
    x402_facilitator_key: str = field(default="", repr=False)
    #: EIP-3009 token contract and its EIP-712 domain (``name()``, ``version()``). Required for jsonrpc; empty for
    #: embedded, which always uses TestUSDC at its fixed address with name "USDC", version "2".
    x402_token_address: str = ""
    x402_token_name: str = ""
    x402_token_version: str = ""
    #: CAIP-2 network ``eip155:<chainId>``; checked against the node's ``eth_chainId``. Required for jsonrpc;
    #: embedded: empty or ``eip155:131277322940537``.
    x402_network: str = ""
    #: Gas limit of a settlement transaction. (How long a settlement waits for its receipt is
    #: ``x402_settle_timeout`` below, the one setting for it.)
    x402_gas_limit: int = 500_000

    # -- x402 facilitator (authgate.x402.facilitator) ---------------------------------------------------------
    #: Mount the facilitator in ``authgate serve`` under ``/x402/`` (``/x402/verify``, ``/x402/settle``,
    #: ``/x402/supported``). The chain is built on the first facilitator request, not at start-up.
    x402_facilitator: bool = True
    #: Optional static bearer token the facilitator requires (constant-time comparison; never logged). Without
    #: one, keep the facilitator on loopback (the default bind) or behind a proxy that authenticates callers.
    x402_facilitator_token: str = field(default="", repr=False)
    #: Seconds one ``/settle`` call waits for the receipt, or for an earlier attempt at the same authorization,
    #: before answering ``settlement_pending`` (the outcome is then reconciled from the chain, never retried
    #: blindly); keep it below the callers' HTTP timeout (Python SDK: 90 s). The only receipt timeout: the
    #: unreleased ``x402_receipt_timeout`` it overlapped with was removed.
    x402_settle_timeout: int = 60
    #: Seconds a facilitator that reserved a settlement has to record its transaction hash before another
    #: process (or itself, restarted) may reconcile the attempt with the chain and take it over: after a
    #: facilitator died between reserving and submitting, retries answer ``settlement_pending`` this long.
    #: Keep it well above the node's submission latency; a takeover never charges twice either way.
    x402_settle_lease: int = 60

    # -- route-policy gateway (authgate.gateway; docs/gateway.md) --------------------------------------------
    #: A gateway file (``authgate gateway``'s format) to serve inside ``authgate serve``: every request that no
    #: server route answers goes through its route policies to its upstream. Empty: no gateway.
    gateway_config: str = ""

    # -- operator dashboard and the person's page (authgate.dashboard; docs/dashboard.md) ------------------
    #: Serve ``/admin`` (operators: users with the admin role, ``authgate admins add``) and ``/me`` (people).
    dashboard_enabled: bool = True
    #: Seconds an operator's dashboard session lasts (absolute); shorter than people's sessions by default.
    dashboard_session_ttl: int = 4 * 3600
    #: Rows per page of the dashboard's lists (audit log, payments).
    dashboard_page_size: int = 50

    @property
    def issuer_url(self) -> str:
        if self.issuer:
            return self.issuer
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def sqlalchemy_url(self) -> str:
        return to_sqlalchemy_url(self.database_url or f"sqlite:///{self.data_dir / 'authgate.db'}")

    def validate(self) -> Settings:
        """Check the combination of settings; raise ConfigError with a clear message."""
        # No port 0: nothing here supports an ephemeral port (the issuer, derived from the port, would be
        # announced with :0). Out of range, the event loop may wrap 70000 to 4464 while the issuer keeps :70000.
        for name in ("port", "smtp_port"):
            if not 1 <= getattr(self, name) <= 65535:
                raise ConfigError(f"{name} must be between 1 and 65535, got {getattr(self, name)}")
        if self.auto_approve and not is_loopback_host(self.host):
            raise ConfigError("--auto-approve is for development only and requires a loopback --host")
        issuer = self.issuer_url
        parts = urlsplit(issuer)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ConfigError(f"issuer must be an absolute http(s) URL, got {issuer!r}")
        if parts.query or parts.fragment or issuer.endswith("/"):
            raise ConfigError(f"issuer must have no query, fragment or trailing slash: {issuer!r}")
        if parts.scheme == "http" and not is_loopback_host(parts.hostname):
            raise ConfigError("issuer must use https unless it is on loopback")
        if self.log_level.lower() not in ("critical", "error", "warning", "info", "debug"):
            # "trace" would make the HTTP server log whole request bodies, credentials included.
            raise ConfigError("log_level must be one of critical, error, warning, info, debug")
        if self.log_format not in ("text", "json"):
            raise ConfigError("log_format must be text or json")
        if self.registration not in ("open", "token", "closed"):
            raise ConfigError("registration must be one of open, token, closed")
        for name in ("access_token_ttl", "refresh_token_ttl", "code_ttl"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        if not set(self.default_scopes) <= set(self.scopes):
            raise ConfigError("default_scopes must be a subset of scopes")
        _validate_token_exchange(self)
        if self.database_url:
            check_database_url(self.database_url)
        _validate_scale(self)
        for name in ("ciba_rate_per_client", "ciba_rate_per_user", "ciba_max_pending_per_user"):
            if not 0 <= getattr(self, name) <= 1_000_000:
                raise ConfigError(f"{name} must be between 0 (no limit) and 1000000")
        if self.gateway_config and not Path(self.gateway_config).is_file():
            raise ConfigError(f"gateway_config: {self.gateway_config} is not a file")
        _validate_delivery(self)
        _validate_aauth_identity(self)
        _validate_aauth_grant(self)
        _validate_agentauth(self)
        _validate_x402_chain(self)
        _validate_x402_facilitator(self)
        return self


def _validate_scale(s: Settings) -> None:
    if not 1 <= s.db_pool_size <= 1000 or not 0 <= s.db_max_overflow <= 1000:
        raise ConfigError("db_pool_size must be 1..1000 and db_max_overflow 0..1000")
    if not 1 <= s.workers <= 256:
        raise ConfigError("workers must be between 1 and 256")
    if not 0 <= s.shutdown_timeout <= 3600:
        raise ConfigError("shutdown_timeout must be between 0 and 3600 seconds")
    if s.redis_url and urlsplit(s.redis_url).scheme not in ("redis", "rediss", "unix"):
        raise ConfigError("redis_url must be a redis://, rediss:// or unix:// URL")
    if not 1 <= len(s.redis_prefix) <= 64 or not s.redis_prefix.isprintable() or " " in s.redis_prefix:
        raise ConfigError("redis_prefix must be 1..64 printable characters without spaces")
    if s.rate_limit_backend not in ("auto", "memory", "database", "redis"):
        raise ConfigError("rate_limit_backend must be auto, memory, database or redis")
    if s.rate_limit_backend == "redis" and not s.redis_url:
        raise ConfigError("rate_limit_backend = \"redis\" needs redis_url")


def _validate_token_exchange(s: Settings) -> None:
    """The token-exchange block of :meth:`Settings.validate`."""
    if not 0 < s.token_exchange_ttl <= 3600:
        raise ConfigError("token_exchange_ttl must be between 1 and 3600 seconds")
    if not 1 <= s.token_exchange_max_chain <= 16:
        raise ConfigError("token_exchange_max_chain must be between 1 and 16")
    for resource, clients in s.token_exchange_actors.items():
        parts = urlsplit(resource) if isinstance(resource, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment:
            raise ConfigError(f"token_exchange_actors: {resource!r} must be an absolute http(s) resource URI")
        if (not isinstance(clients, list | tuple) or not clients
                or not all(isinstance(c, str) and 0 < len(c) <= 2048 for c in clients)):
            raise ConfigError(f"token_exchange_actors[{resource!r}] must be a non-empty list of client_ids")


_CHANNELS = ("email", "sms", "webhook", "console")


def _validate_delivery(s: Settings) -> None:
    """The approval-delivery block of :meth:`Settings.validate`."""
    for kind, names in s.approvals_channels.items():
        if not isinstance(names, list | tuple) or not all(n in _CHANNELS for n in names):
            raise ConfigError(f"approvals_channels[{kind!r}] must be a list of {', '.join(_CHANNELS)}")
    if not set(s.approvals_code_channels) <= set(_CHANNELS):
        raise ConfigError(f"approvals_code_channels must name channels among {', '.join(_CHANNELS)}")
    if s.approvals_console not in ("auto", "on", "off"):
        raise ConfigError("approvals_console must be one of auto, on, off")
    if not 300 <= s.dashboard_session_ttl <= 86400:
        raise ConfigError("dashboard_session_ttl must be between 300 and 86400 seconds")
    if not 10 <= s.dashboard_page_size <= 500:
        raise ConfigError("dashboard_page_size must be between 10 and 500")
    if not 0 < s.approvals_ttl <= s.approvals_max_ttl:
        raise ConfigError("approvals_ttl must be positive and at most approvals_max_ttl")
    for name in ("approvals_code_attempts", "approvals_delivery_concurrency", "approvals_delivery_timeout"):
        if getattr(s, name) <= 0:
            raise ConfigError(f"{name} must be positive")
    if s.smtp_security not in ("starttls", "tls", "none"):
        raise ConfigError("smtp_security must be one of starttls, tls, none")
    if s.smtp_host and s.smtp_security == "none" and s.smtp_username and not is_loopback_host(s.smtp_host):
        raise ConfigError("SMTP credentials are only sent over TLS (smtp_security none is for loopback)")
    if s.sms_base_url:
        parts = urlsplit(s.sms_base_url)
        if not parts.hostname or parts.scheme not in ("https", "http"):
            raise ConfigError("sms_base_url must be an absolute https URL")
        if parts.scheme == "http" and not (s.delivery_allow_loopback and is_loopback_host(parts.hostname)):
            raise ConfigError("sms_base_url must use https (plain http only to loopback with delivery_allow_loopback)")


def _validate_aauth_identity(s: Settings) -> None:
    """The AAuth identity block of :meth:`Settings.validate`."""
    if s.aauth_pepper and len(s.aauth_pepper) < 32:
        raise ConfigError("aauth_pepper must have at least 32 characters")
    if not 1 <= s.aauth_min_claims <= s.aauth_max_claims:
        raise ConfigError("aauth_min_claims must be at least 1 and at most aauth_max_claims")
    if s.aauth_default_country_code and not (s.aauth_default_country_code.lstrip("+").isdigit()
                                             and len(s.aauth_default_country_code.lstrip("+")) <= 3):
        raise ConfigError("aauth_default_country_code must be 1-3 digits, like 1 or 44")
    if s.aauth_date_order not in ("", "mdy", "dmy"):
        raise ConfigError("aauth_date_order must be mdy, dmy or empty")
    for name in ("aauth_rate_client", "aauth_rate_user", "aauth_rate_caller_id", "aauth_rate_ip",
                 "aauth_rate_conversation"):
        if getattr(s, name) < 0:
            raise ConfigError(f"{name} must not be negative")
    for name in ("aauth_lockout_threshold", "aauth_lockout_window", "aauth_lockout_seconds"):
        if getattr(s, name) <= 0:
            raise ConfigError(f"{name} must be positive")


def _validate_aauth_grant(s: Settings) -> None:
    """The AAuth grant block of :meth:`Settings.validate`."""
    if not s.aauth_draft or not s.aauth_draft.isprintable() or len(s.aauth_draft) > 100:
        raise ConfigError("aauth_draft must name a draft revision, like draft-rosenberg-oauth-aauth-01")
    if not 0 < s.aauth_token_ttl <= 3600:
        raise ConfigError("aauth_token_ttl must be between 1 and 3600 seconds")
    if not 0 < s.aauth_escalation_ttl <= s.approvals_max_ttl:
        raise ConfigError("aauth_escalation_ttl must be positive and at most approvals_max_ttl")
    if not 0 < s.aauth_interval < s.aauth_escalation_ttl:
        raise ConfigError("aauth_interval must be positive and shorter than aauth_escalation_ttl")


def _validate_agentauth(s: Settings) -> None:
    """The Agent Auth block of :meth:`Settings.validate`."""
    if not s.agentauth_draft or not s.agentauth_draft.isprintable() or len(s.agentauth_draft) > 100:
        raise ConfigError("agentauth_draft must name a draft revision, like draft-hardt-oauth-aauth-protocol-11")
    if s.agentauth_admin_key and len(s.agentauth_admin_key) < 32:
        raise ConfigError("agentauth_admin_key must have at least 32 characters")
    if not s.agentauth_enroll_scope or " " in s.agentauth_enroll_scope:
        raise ConfigError("agentauth_enroll_scope must be one scope")
    if not 60 <= s.agentauth_agent_token_ttl <= 86400:
        raise ConfigError("agentauth_agent_token_ttl must be between 60 and 86400 seconds")
    for name in ("agentauth_person_token_ttl", "agentauth_auth_token_ttl"):
        if not 60 <= getattr(s, name) <= 3600:
            raise ConfigError(f"{name} must be between 60 and 3600 seconds")
    if s.agentauth_consent_ttl <= 0 or s.agentauth_pending_ttl <= 0:
        raise ConfigError("agentauth_consent_ttl and agentauth_pending_ttl must be positive")
    if not 0 <= s.agentauth_poll_interval < s.agentauth_pending_ttl:
        raise ConfigError("agentauth_poll_interval must be 0 or more and shorter than agentauth_pending_ttl")
    if not 0 <= s.agentauth_max_wait <= 120:
        raise ConfigError("agentauth_max_wait must be between 0 and 120 seconds")
    if s.agentauth_amount_threshold < 0:
        raise ConfigError("agentauth_amount_threshold must not be negative")
    if s.agentauth_default_risk not in ("low", "high"):
        raise ConfigError("agentauth_default_risk must be low or high")
    for key, level in s.agentauth_scope_risk.items():
        if level not in ("low", "high") or not isinstance(key, str) or not 0 < len(key) <= 400:
            raise ConfigError(f"agentauth_scope_risk[{key!r}] must be low or high")
    if s.agentauth_enabled:
        parts = urlsplit(s.issuer_url)
        if parts.path:
            raise ConfigError("agentauth_enabled needs an issuer that is an origin (no path): Agent Auth "
                              "identifiers are https://host")
        if parts.scheme == "http" and not s.agentauth_allow_http_loopback:
            raise ConfigError("agentauth_enabled needs an https issuer (agentauth_allow_http_loopback is for "
                              "development on loopback)")


_HEX_KEY = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")
_CAIP2_EIP155 = re.compile(r"^eip155:[1-9][0-9]{0,19}$")
_HEX_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")


def _validate_x402_facilitator(s: Settings) -> None:
    """The x402 facilitator block of :meth:`Settings.validate`."""
    token = s.x402_facilitator_token
    if token and (len(token) < 16 or len(token) > 512 or not all("!" <= c <= "~" for c in token)):
        raise ConfigError("x402_facilitator_token must be 16 to 512 printable ASCII characters without spaces")
    if not 1 <= s.x402_settle_timeout <= 3600:
        raise ConfigError("x402_settle_timeout must be between 1 and 3600 seconds")
    if not 2 <= s.x402_settle_lease <= 3600:
        raise ConfigError("x402_settle_lease must be between 2 and 3600 seconds")


def _validate_x402_chain(s: Settings) -> None:
    """The x402 chain block of :meth:`Settings.validate`. The key is checked for shape only (a ``file:`` or
    ``env:`` reference is read when the chain is built) and never echoed in a message."""
    if s.x402_chain not in ("embedded", "jsonrpc"):
        raise ConfigError("x402_chain must be embedded or jsonrpc")
    key = s.x402_facilitator_key
    if key and not ((key.startswith(("file:", "env:")) and len(key) > 5) or _HEX_KEY.match(key)):
        raise ConfigError("x402_facilitator_key must be 32 bytes of hex, file:PATH or env:NAME")
    if s.x402_network and not _CAIP2_EIP155.match(s.x402_network):
        raise ConfigError("x402_network must be a CAIP-2 EVM network like eip155:84532")
    if s.x402_token_address and not _HEX_ADDRESS.match(s.x402_token_address):
        raise ConfigError("x402_token_address must be a 0x-prefixed 20-byte hex address")
    if not 21_000 <= s.x402_gas_limit <= 30_000_000:
        raise ConfigError("x402_gas_limit must be between 21000 and 30000000")
    if s.x402_chain == "embedded":
        from authgate.x402 import localchain  # only here: it imports eth-account

        if s.x402_network and s.x402_network != localchain.NETWORK:
            raise ConfigError(f"x402_network of the embedded chain is {localchain.NETWORK}")
        if s.x402_rpc_url or key:
            raise ConfigError("x402_rpc_url and x402_facilitator_key are for x402_chain = jsonrpc")
        if ((s.x402_token_address and s.x402_token_address.lower() != localchain.TOKEN_ADDRESS.lower())
                or s.x402_token_name not in ("", localchain.TOKEN_NAME)
                or s.x402_token_version not in ("", localchain.TOKEN_VERSION)):
            raise ConfigError("the embedded chain's token is fixed (TestUSDC); leave x402_token_* empty")
        return
    missing = [name for name in ("x402_rpc_url", "x402_facilitator_key", "x402_token_address", "x402_token_name",
                                 "x402_token_version", "x402_network") if not getattr(s, name)]
    if missing:
        raise ConfigError(f"x402_chain = jsonrpc needs {', '.join(missing)}")
    parts = urlsplit(s.x402_rpc_url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError("x402_rpc_url must be an absolute http(s) URL")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ConfigError("x402_rpc_url must use https unless it is on loopback")
    for name in ("x402_token_name", "x402_token_version"):
        if len(getattr(s, name)) > 100 or not getattr(s, name).isprintable():
            raise ConfigError(f"{name} must be printable and at most 100 characters")


def is_loopback_host(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


#: The database URLs authgate can open (and the async driver each maps to).
SUPPORTED_DATABASES = ("sqlite:///PATH (sqlite+aiosqlite:///PATH) or "
                       "postgresql://USER:PASSWORD@HOST:5432/DB (postgresql+asyncpg://...)")
_SQLITE_SCHEMES = ("sqlite", "sqlite+aiosqlite")
_POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+asyncpg")


def check_database_url(url: str) -> str:
    """``url`` if it names a database authgate can open, else ConfigError saying which URLs are supported. The
    message never repeats the URL (it may hold a password), only its scheme."""
    scheme, sep, rest = url.partition("://")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        raise ConfigError(f"database_url is not a database URL; use {SUPPORTED_DATABASES}")
    if scheme in _SQLITE_SCHEMES:
        # sqlite://relative.db would name a "host"; sqlite:// alone an in-memory database gone with the process.
        if not rest.startswith("/") or not rest.lstrip("/").split("?", 1)[0]:
            raise ConfigError(f"database_url: a SQLite URL is {scheme}:///relative/path.db or "
                              f"{scheme}:////absolute/path.db (three slashes, then the file's path)")
        return url
    if scheme not in _POSTGRES_SCHEMES:
        raise ConfigError(f"database_url: {scheme[:40]}:// databases are not supported; use {SUPPORTED_DATABASES}")
    try:
        urlsplit(url).port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        raise ConfigError("database_url: the PostgreSQL port is not a number from 1 to 65535") from None
    return url


def to_sqlalchemy_url(url: str) -> str:
    """Map the plain URLs operators write to the async drivers we ship."""
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url[len("sqlite:///") :]
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+asyncpg://" + url.split("://", 1)[1]
    return url


_ENV_PREFIX = "AUTHGATE_"


def _coerce(name: str, current: Any, raw: Any) -> Any:
    """Turn a TOML or environment value into the type of the default."""
    if isinstance(current, bool):
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{name}: expected a boolean, got {raw!r}")
    if isinstance(current, int):
        try:
            return int(raw)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{name}: expected an integer, got {raw!r}") from exc
    if isinstance(current, tuple):
        if isinstance(raw, str):
            return tuple(p for p in raw.replace(",", " ").split() if p)
        if isinstance(raw, list | tuple) and all(isinstance(x, str) for x in raw):
            return tuple(raw)
        raise ConfigError(f"{name}: expected a list of strings")
    if isinstance(current, Path):
        return Path(str(raw)).expanduser()
    if isinstance(current, dict):
        if not isinstance(raw, dict):
            raise ConfigError(f"{name}: expected a table")
        return raw
    return str(raw)


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build settings from defaults < TOML file < environment < explicit overrides (None = not given)."""
    env = dict(os.environ if env is None else env)
    settings = Settings()
    values: dict[str, Any] = {}
    path = config_file or env.get(_ENV_PREFIX + "CONFIG")
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
        values.update(data.get("authgate", data))
    names = {f.name for f in fields(Settings)}
    for key, raw in env.items():
        if key.startswith(_ENV_PREFIX) and key != _ENV_PREFIX + "CONFIG":
            name = key[len(_ENV_PREFIX) :].lower()
            if name in names:
                values[name] = raw
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    coerced = {k: _coerce(k, getattr(settings, k), v) for k, v in values.items()}
    return replace(settings, **coerced).validate()
