"""The gateway's configuration file and the ASGI app built from it (``authgate gateway --config FILE``).

One TOML file holds the gateway's own sections and the route policy (:mod:`authgate.policy.loader`)::

    [gateway]
    upstream = "http://127.0.0.1:8080"        # the API behind the gateway
    public_url = "https://api.example.com"    # what agents call: the OAuth resource identifier (token audience),
                                              # the Agent Auth resource id, and the origin of x402 offers
    identity = "signed"                       # "signed" (HMAC-SHA256 X-Authgate-* headers) | "plain" (private hop)
    identity_secret_env = "AUTHGATE_GATEWAY_SECRET"   # or identity_secret_file; >= 32 bytes
    strip_cookies = true                      # default; false forwards Cookie (an upstream with its own sessions)
    max_body = 10485760                       # request body limit, bytes
    connect_timeout = 5.0                     # seconds; also the wait for a pooled connection
    read_timeout = 60.0                       # seconds between two reads from the upstream (SSE: keep-alives)
    max_connections = 100

    [oauth]                                   # for oauth and aauth alternatives
    issuer = "https://auth.example.com"       # tokens' iss; keys from its metadata (or jwks_uri)
    resource_name = "Weather API"

    [agentauth]                               # for agentauth alternatives
    signing_key_file = "resource-key.json"    # private Ed25519 JWK signing resource tokens (default: ephemeral)
    trusted_person_servers = ["https://auth.example.com"]
    trusted_agent_providers = ["https://auth.example.com"]   # optional: default, agents of any provider
    scope_risk = { "orders:write" = "high" }  # optional: asks the person every time (authgate profile)

    [x402]                                    # for x402 alternatives
    facilitator_url = "https://auth.example.com/x402"
    facilitator_token_env = "AUTHGATE_FACILITATOR_TOKEN"

    [token_exchange]                          # only when the upstream is itself protected by authgate: forward
    client_id = "weather-gateway"             # a token exchanged (RFC 8693) for it, as this confidential client
    client_secret_env = "AUTHGATE_GATEWAY_CLIENT_SECRET"   # or client_secret_file
    client_auth = "client_secret_basic"       # or client_secret_post
    resource = "https://forecast.internal"    # the upstream's resource identifier: the new token's audience
    scopes = ["forecast:read"]                # optional; default: the scopes of the alternative the request met
    token_endpoint = "https://auth.example.com/token"   # optional; default: from [oauth].issuer's metadata
    cache_size = 1024                         # exchanged tokens kept for reuse while fresh

    [trust]                                   # kill switch, budgets, mandates, attestations (gateway.trust)
    database_url_env = "AUTHGATE_DATABASE_URL"
    [trust.issuers]
    "https://auth.example.com" = "auth-jwks.json"

    [operations]                              # optional: /health, /ready, /metrics (authgate.gateway.operations)
    metrics_path = "/_authgate/metrics"

Errors are :class:`~authgate.policy.model.PolicyError` naming the file, section and field.
"""

from __future__ import annotations

import difflib
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from starlette.types import ASGIApp

from authgate.gateway.exchange import TokenExchangeSettings
from authgate.gateway.operations import (
    Check,
    Operations,
    OperationsEndpoints,
    Readiness,
    check_paths,
    operations_from_dict,
)
from authgate.gateway.trust import TRUST_KEYS, TrustConfig, build_trust, parse_trust
from authgate.ops.metrics import Metrics
from authgate.policy.loader import POLICY_KEYS, policy_from_dict, read_toml
from authgate.policy.model import Policy, PolicyError
from authgate.resource.metadata import canonical_resource, check_scopes

if TYPE_CHECKING:
    from authgate.agentauth.replay import ReplayCache
    from authgate.context import ServerContext
    from authgate.gateway.runtime import GatewayApp, Generation, Shared
    from authgate.gateway.trust import TrustDatabase
    from authgate.x402.paywall_store import PaywallStore

SECTIONS = frozenset({"gateway", "oauth", "agentauth", "x402", "token_exchange", "trust", "operations"})
#: Every top-level name a gateway file may use: its own sections and the route policy's keys.
TOP_LEVEL = SECTIONS | POLICY_KEYS
_GATEWAY_KEYS = {"upstream": str, "public_url": str, "identity": str, "identity_secret_env": str,
                 "identity_secret_file": str, "strip_cookies": bool, "max_body": int, "connect_timeout": (int, float),
                 "read_timeout": (int, float), "max_connections": int}
_OAUTH_KEYS = {"issuer": str, "jwks_uri": str, "resource_name": str, "resource_documentation": str}
_AGENTAUTH_KEYS = {"signing_key_file": str, "trusted_person_servers": list, "trusted_agent_providers": list,
                   "allow_http_loopback": bool, "signature_window": int, "scope_risk": dict}
#: Tokens whose signature the gateway remembers having verified (LRU; see JWTVerifier.verified_cache).
VERIFIED_CACHE = 4096
_X402_KEYS = {"facilitator_url": str, "facilitator_token_env": str, "timeout": (int, float)}
_EXCHANGE_KEYS = {"client_id": str, "client_secret_env": str, "client_secret_file": str, "client_auth": str,
                  "resource": str, "scopes": list, "token_endpoint": str, "cache_size": int}


@dataclass(frozen=True)
class GatewayConfig:
    upstream: str
    public_url: str
    policy: Policy
    identity: str = "signed"
    identity_secret: bytes | None = field(default=None, repr=False)
    strip_cookies: bool = True
    max_body: int = 10 * 1024 * 1024
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    max_connections: int = 100
    oauth: Mapping[str, Any] | None = None
    agentauth: Mapping[str, Any] | None = None
    x402: Mapping[str, Any] | None = None
    token_exchange: TokenExchangeSettings | None = None
    source: str = "<gateway>"
    trust: TrustConfig | None = None
    operations: Operations = field(default_factory=Operations)


def _section(data: Mapping[str, Any], name: str, keys: Mapping[str, Any], source: str) -> dict[str, Any] | None:
    raw = data.get(name)
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise PolicyError(f"{source}: [{name}]: must be a table")
    for key, value in raw.items():
        if key not in keys:
            raise PolicyError(f"{source}: [{name}]: unknown field {key!r} (expected {', '.join(sorted(keys))})")
        kind = keys[key]
        if (isinstance(value, bool) and kind is not bool) or not isinstance(value, kind):
            raise PolicyError(f"{source}: [{name}]: {key}: wrong type {type(value).__name__}")
    return dict(raw)


def load_gateway_config(path: str | Path, env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Read and check a gateway file; secrets come from the environment or files it names, never from it."""
    source = str(path)
    return gateway_config_from_dict(read_toml(path), source=source, env=os.environ if env is None else env,
                                    base_dir=Path(path).parent)


def gateway_config_from_dict(data: Mapping[str, Any], *, source: str = "<gateway>",
                             env: Mapping[str, str] | None = None, base_dir: Path | None = None) -> GatewayConfig:
    env = os.environ if env is None else env
    _check_top_level(data, source)
    gw = _section(data, "gateway", _GATEWAY_KEYS, source)
    if gw is None:
        raise PolicyError(f"{source}: [gateway]: required (upstream and public_url)")
    for key in ("upstream", "public_url"):
        value = gw.get(key)
        if not isinstance(value, str) or not value.startswith(("http://", "https://")):
            raise PolicyError(f"{source}: [gateway]: {key}: required, an absolute http(s) URL")
    identity = gw.get("identity", "signed")
    if identity not in ("signed", "plain"):
        raise PolicyError(f"{source}: [gateway]: identity: must be 'signed' or 'plain', not {identity!r}")
    secret: bytes | None = None
    if identity == "signed":
        if "identity_secret_env" in gw:
            text = env.get(gw["identity_secret_env"])
            if not text:
                raise PolicyError(f"{source}: [gateway]: identity_secret_env: ${gw['identity_secret_env']} is not "
                                  "set")
            secret = text.encode()
        elif "identity_secret_file" in gw:
            p = Path(gw["identity_secret_file"])
            p = p if p.is_absolute() or base_dir is None else base_dir / p
            try:
                secret = p.read_bytes().strip()
            except OSError:
                raise PolicyError(f"{source}: [gateway]: identity_secret_file: {p} cannot be read") from None
        else:
            raise PolicyError(f"{source}: [gateway]: identity = \"signed\" needs identity_secret_env or "
                              "identity_secret_file")
        if len(secret) < 32:
            raise PolicyError(f"{source}: [gateway]: the identity secret must be at least 32 bytes")
    for key, low, high in (("max_body", 0, 1 << 40), ("connect_timeout", 0.1, 600), ("read_timeout", 0.1, 3600),
                           ("max_connections", 1, 10000)):
        if key in gw and not low <= gw[key] <= high:
            raise PolicyError(f"{source}: [gateway]: {key}: must be between {low} and {high}")
    oauth = _section(data, "oauth", _OAUTH_KEYS, source)
    agentauth = _section(data, "agentauth", _AGENTAUTH_KEYS, source)
    x402 = _section(data, "x402", _X402_KEYS, source)
    if oauth is not None and not str(oauth.get("issuer", "")).startswith(("http://", "https://")):
        raise PolicyError(f"{source}: [oauth]: issuer: required, an absolute http(s) URL")
    if x402 is not None:
        if not str(x402.get("facilitator_url", "")).startswith(("http://", "https://")):
            raise PolicyError(f"{source}: [x402]: facilitator_url: required, an absolute http(s) URL")
        token_env = x402.get("facilitator_token_env")
        x402["token"] = env.get(token_env) if token_env else None
    if agentauth is not None and "scope_risk" in agentauth:
        from authgate.agentauth.tokens import check_scope_risk

        try:
            agentauth["scope_risk"] = check_scope_risk(agentauth["scope_risk"])
        except ValueError as exc:
            raise PolicyError(f"{source}: [agentauth]: {exc}") from None
    if agentauth is not None and "signing_key_file" in agentauth and base_dir is not None:
        p = Path(agentauth["signing_key_file"])
        agentauth["signing_key_file"] = str(p if p.is_absolute() else base_dir / p)
    exchange = _token_exchange(data, source, env, base_dir, oauth is not None, gw["public_url"])
    trust_raw = _section(data, "trust", TRUST_KEYS, source)
    trust = parse_trust(trust_raw, source=source, env=env, base_dir=base_dir) if trust_raw is not None else None
    policy = policy_from_dict(data, source=source, other_keys=SECTIONS)
    mechanisms = policy.mechanisms()
    for mech, section, present in (("oauth", "oauth", oauth), ("aauth", "oauth", oauth),
                                   ("agentauth", "agentauth", agentauth), ("x402", "x402", x402)):
        if mech in mechanisms and present is None:
            raise PolicyError(f"{source}: routes use {mech} but there is no [{section}] section")
    return GatewayConfig(
        upstream=gw["upstream"], public_url=gw["public_url"].rstrip("/"), policy=policy, identity=identity,
        identity_secret=secret, strip_cookies=gw.get("strip_cookies", True),
        max_body=gw.get("max_body", 10 * 1024 * 1024), connect_timeout=float(gw.get("connect_timeout", 5.0)),
        read_timeout=float(gw.get("read_timeout", 60.0)), max_connections=gw.get("max_connections", 100),
        oauth=oauth, agentauth=agentauth, x402=x402, token_exchange=exchange, source=source, trust=trust,
        operations=operations_from_dict(data, source=source, env=env, base_dir=base_dir))


def _check_top_level(data: Mapping[str, Any], source: str) -> None:
    """Refuse a name the file may not use at the top level before anything else: a misspelled ``[gatway]`` is
    named as such, not reported as a missing ``[gateway]``, and a misspelled section never goes unnoticed."""
    unknown = sorted(k for k in data if k not in TOP_LEVEL)
    if not unknown:
        return
    name = unknown[0]
    value = data[name]
    table = isinstance(value, dict) or (isinstance(value, list) and bool(value)
                                        and all(isinstance(v, dict) for v in value))
    close = difflib.get_close_matches(name.lower(), sorted(TOP_LEVEL), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise PolicyError(f"{source}: unknown {'section' if table else 'field'} {name!r} ({hint}expected "
                      f"{', '.join(sorted(TOP_LEVEL))})")


def _secret(section: str, raw: Mapping[str, Any], name: str, source: str, env: Mapping[str, str],
            base_dir: Path | None) -> str:
    """A secret named by ``{name}_env`` or ``{name}_file`` (exactly one), never written in the file itself."""
    where = f"{source}: [{section}]"
    if (f"{name}_env" in raw) == (f"{name}_file" in raw):
        raise PolicyError(f"{where}: exactly one of {name}_env and {name}_file is required")
    if f"{name}_env" in raw:
        value = env.get(raw[f"{name}_env"], "")
        if not value:
            raise PolicyError(f"{where}: {name}_env: ${raw[f'{name}_env']} is not set")
        return value
    p = Path(raw[f"{name}_file"])
    p = p if p.is_absolute() or base_dir is None else base_dir / p
    try:
        value = p.read_text().strip()
    except (OSError, UnicodeDecodeError):
        raise PolicyError(f"{where}: {name}_file: {p} cannot be read") from None
    if not value:
        raise PolicyError(f"{where}: {name}_file: {p} is empty")
    return value


def _token_exchange(data: Mapping[str, Any], source: str, env: Mapping[str, str], base_dir: Path | None,
                    has_oauth: bool, public_url: str) -> TokenExchangeSettings | None:
    raw = _section(data, "token_exchange", _EXCHANGE_KEYS, source)
    if raw is None:
        return None
    where = f"{source}: [token_exchange]"
    if not has_oauth:
        raise PolicyError(f"{where}: needs the [oauth] section (its issuer exchanges the tokens)")
    client_id = raw.get("client_id", "")
    if not client_id or len(client_id) > 255 or not client_id.isprintable():
        raise PolicyError(f"{where}: client_id: required, the gateway's own client at the authorization server")
    auth = raw.get("client_auth", "client_secret_basic")
    if auth not in ("client_secret_basic", "client_secret_post"):
        raise PolicyError(f"{where}: client_auth: must be 'client_secret_basic' or 'client_secret_post', not "
                          f"{auth!r}")
    secret = _secret("token_exchange", raw, "client_secret", source, env, base_dir)
    resource = raw.get("resource")
    if not isinstance(resource, str) or not resource.startswith(("http://", "https://")) or "#" in resource:
        raise PolicyError(f"{where}: resource: required, the upstream's resource identifier (an absolute http(s) "
                          "URL without fragment)")
    if canonical_resource(resource) == canonical_resource(public_url):
        raise PolicyError(f"{where}: resource: must differ from [gateway].public_url (the upstream's own "
                          "audience, so that the caller's token is not valid there)")
    scopes: tuple[str, ...] | None = None
    if "scopes" in raw:
        try:
            scopes = check_scopes(raw["scopes"]) if all(isinstance(s, str) for s in raw["scopes"]) else None
        except ValueError as exc:
            raise PolicyError(f"{where}: scopes: {exc}") from None
        if not scopes:
            raise PolicyError(f"{where}: scopes: a non-empty list of scope strings (leave it out to ask for the "
                              "scopes of the alternative each request met)")
    endpoint = raw.get("token_endpoint")
    if endpoint is not None and not endpoint.startswith(("http://", "https://")):
        raise PolicyError(f"{where}: token_endpoint: must be an absolute http(s) URL")
    cache_size = raw.get("cache_size", 1024)
    if not 1 <= cache_size <= 1_000_000:
        raise PolicyError(f"{where}: cache_size: must be between 1 and 1000000")
    return TokenExchangeSettings(client_id=client_id, client_secret=secret, resource=resource, client_auth=auth,
                                 scopes=scopes, token_endpoint=endpoint, cache_size=cache_size)


def build_gateway(config: GatewayConfig, *, upstream_transport: httpx.AsyncBaseTransport | None = None,
                  http_transport: httpx.AsyncBaseTransport | None = None,
                  clock: Callable[[], float] = time.time, server: ServerContext | None = None,
                  metrics: Metrics | None = None, standalone: bool = True) -> GatewayApp:
    """The gateway app (:class:`~authgate.gateway.runtime.GatewayApp`: reloadable). ``upstream_transport``/
    ``http_transport`` (tests): how the upstream, and the AS, person servers and facilitator, are reached
    (default: the network). ``server``: the authgate server this gateway runs inside (its trust store, approvals
    and issuer keys; :mod:`authgate.gateway.trust`). ``metrics``: where requests, access decisions and
    settlements are counted (default: a registry of the gateway's own). ``standalone`` (default): the gateway is
    the whole server, with its operations endpoints, request IDs and access log; ``authgate serve`` mounts it
    with ``standalone=False`` and does those itself."""
    from authgate.gateway.runtime import GatewayApp, Shared

    shared = Shared(metrics if metrics is not None else Metrics(), clock)

    def build(cfg: GatewayConfig) -> Generation:
        return _assemble(cfg, shared, upstream_transport=upstream_transport, http_transport=http_transport,
                         clock=clock, standalone=standalone, server=server)

    return GatewayApp(build, config, metrics=shared.metrics, observe=standalone, shared=shared)


def _assemble(config: GatewayConfig, shared: Shared, *, upstream_transport: httpx.AsyncBaseTransport | None,
              http_transport: httpx.AsyncBaseTransport | None, clock: Callable[[], float],
              standalone: bool, server: ServerContext | None = None) -> Generation:
    """One generation of the gateway built from ``config``: every check of start-up, then the policy middleware
    in front of the proxy (behind the operations endpoints when ``standalone``). Its trust checks are its own
    (issuers, budgets, mandates as the file says); the trust database under them is shared with the other
    generations naming it, and retained by this one only once it is built."""
    from authgate.gateway.proxy import Proxy
    from authgate.gateway.runtime import Generation
    from authgate.policy.enforce import PolicyMiddleware

    if standalone:
        check_paths(config.operations, config.policy, config.source)
    checks: dict[str, Check] = {}

    proxy = Proxy(config.upstream, identity="signed" if config.identity == "signed" else "plain",
                  identity_secret=config.identity_secret, strip_cookies=config.strip_cookies,
                  max_body=config.max_body, connect_timeout=config.connect_timeout,
                  read_timeout=config.read_timeout, max_connections=config.max_connections,
                  transport=upstream_transport, clock=clock)
    closers: list[Callable[[], Any]] = [proxy.aclose]
    http = httpx.AsyncClient(transport=http_transport, follow_redirects=False, trust_env=False, timeout=10.0)
    closers.append(http.aclose)
    policy = config.policy
    bearer = agentauth = facilitator = None
    trust, database = build_trust(config.trust, clock, source=config.source, server=server,
                                  databases=shared.trust_databases())
    checks["upstream"] = _upstream_check(config, upstream_transport, closers)
    if config.oauth is not None:
        from authgate.resource.bearer import BearerGuard
        from authgate.resource.metadata import ProtectedResource
        from authgate.resource.verifier import JWTVerifier, TokenVerifier

        resource = ProtectedResource(
            resource=config.public_url, authorization_servers=[config.oauth["issuer"]],
            scopes_supported=policy.all_scopes(), resource_name=config.oauth.get("resource_name"),
            resource_documentation=config.oauth.get("resource_documentation"),
            scope_descriptions=dict(policy.scope_descriptions))
        # Agents call again and again with one token: verify its signature once (the JWKS key must still be the
        # one that verified it; expiry is checked every time; the kill switch below is asked on every request).
        jwt_verifier = JWTVerifier(config.oauth["issuer"], resource.resource, jwks_uri=config.oauth.get("jwks_uri"),
                                   http_client=http, verified_cache=VERIFIED_CACHE)
        verifier: TokenVerifier = jwt_verifier
        if trust is not None and trust.killswitch is not None:
            from authgate.trust.resource import KillSwitchVerifier

            verifier = KillSwitchVerifier(verifier, trust.killswitch)
        bearer = BearerGuard(verifier, resource)
        checks["authorization server keys"] = _keys_check(jwt_verifier)  # the key cache is the JWT verifier's
        if config.token_exchange is not None:
            from authgate.gateway.exchange import UpstreamTokens

            proxy.upstream_token = UpstreamTokens(http, config.oauth["issuer"], config.token_exchange, clock=clock,
                                                  challenge={"resource_metadata": resource.metadata_url}).token_for
    if config.agentauth is not None:
        from joserfc.errors import JoseError
        from joserfc.jwk import OKPKey

        from authgate.agentauth.discovery import httpx_fetcher
        from authgate.agentauth.resource import AgentAuthResource
        from authgate.agentauth.tokens import Signer

        key_file = config.agentauth.get("signing_key_file")
        if key_file:
            where = f"{config.source}: [agentauth]: signing_key_file: {key_file}"
            try:
                text = Path(key_file).read_text()
            except FileNotFoundError:
                raise PolicyError(f"{where} not found") from None
            except OSError as exc:
                raise PolicyError(f"{where} cannot be read ({exc.strerror or exc.__class__.__name__})") from None
            try:
                jwk = json.loads(text)
                key = OKPKey.import_key(jwk)
                if not key.is_private or jwk.get("crv") != "Ed25519":
                    raise ValueError("not a private Ed25519 key")
            except (ValueError, TypeError, AttributeError, JoseError) as exc:
                raise PolicyError(f"{where} is not a private Ed25519 JWK ({exc.__class__.__name__})") from None
            kid = str(jwk.get("kid") or key.thumbprint())
        else:
            kid, key = shared.resource_key()

        agentauth = AgentAuthResource(
            proxy, resource_id=config.public_url, signer=Signer(kid=kid, key=key), rules=[],
            # Agent tokens may name any provider: their documents come through the SSRF-guarded fetcher
            # (loopback only with allow_http_loopback); an injected transport (tests) replaces it.
            fetch_json=httpx_fetcher(http) if http_transport is not None else None,
            trusted_agent_providers=config.agentauth.get("trusted_agent_providers"),
            trusted_person_servers=config.agentauth.get("trusted_person_servers", ()),
            scope_descriptions=dict(policy.scope_descriptions), scope_risk=config.agentauth.get("scope_risk"),
            replay=_replay_cache(shared, server, database),
            clock=clock, window=config.agentauth.get("signature_window", 60),
            allow_http_loopback=config.agentauth.get("allow_http_loopback", False))
    if config.x402 is not None:
        from authgate.x402.facilitator.client import FacilitatorClient

        client = FacilitatorClient(config.x402["facilitator_url"], token=config.x402.get("token"),
                                   timeout=float(config.x402.get("timeout", 30.0)), transport=http_transport)
        closers.append(client.aclose)
        facilitator = client
        checks["facilitator"] = _facilitator_check(client)
    enforced = PolicyMiddleware(
        proxy, policy, bearer=bearer, agentauth=agentauth, facilitator=facilitator, base_url=config.public_url,
        metrics=shared.metrics,
        paywall_store=_paywall_store(shared, server, database) if facilitator is not None else None,
        siwx_key=shared.siwx_key, trust=trust)
    if database is not None:  # built: from now on this generation uses the trust database (released on close)
        checks["trust database"] = _database_check(database.store)
        closers.append(database.retain())
    served: ASGIApp = enforced
    if standalone:
        readiness = Readiness(checks, config.operations.ready_timeout)
        served = OperationsEndpoints(served, config.operations, shared.metrics, readiness)
    return Generation(config, served, closers, enforcer=enforced)


def _replay_cache(shared: Shared, server: ServerContext | None, database: TrustDatabase | None) -> ReplayCache:
    """Where signed Agent Auth requests are remembered. Several gateway processes (``serve --workers``, or N
    instances) must share it, or a signed request replayed to another process is accepted again: the server's
    own cache inside ``authgate serve`` (Redis or its database), else the ``[trust]`` database, else memory
    (one process: kept across reloads by ``shared``)."""
    from authgate.agentauth.replay import DatabaseReplayCache

    if server is not None:
        return server.replay_cache or DatabaseReplayCache(server.store)
    if database is not None:
        return DatabaseReplayCache(database.store)
    return shared.replay_cache()


def _paywall_store(shared: Shared, server: ServerContext | None, database: TrustDatabase | None) -> PaywallStore:
    """Payment ids, paid sign-ins and settlements of unknown outcome, shared like the replay cache above."""
    from authgate.x402.paywall_store import DatabasePaywallStore

    if server is not None:
        return DatabasePaywallStore(server.store)
    if database is not None:
        return DatabasePaywallStore(database.store)
    return shared.paywall_store()


def _upstream_check(config: GatewayConfig, transport: httpx.AsyncBaseTransport | None,
                    closers: list[Callable[[], Any]]) -> Check:
    """Ready when the upstream answers ``upstream_ready_path`` below 500 (its own client: the proxy's pool
    stays the requests')."""
    probe = httpx.AsyncClient(transport=transport, trust_env=False, follow_redirects=False,
                              timeout=config.operations.ready_timeout)
    closers.append(probe.aclose)
    url = config.upstream.rstrip("/") + config.operations.upstream_ready_path

    async def check() -> str | None:
        response = await probe.get(url)
        return f"answered {response.status_code}" if response.status_code >= 500 else None

    return check


def _keys_check(verifier: Any) -> Check:
    """Ready when the authorization server's signing keys are held or can be fetched (fetches are rate-limited
    by the key cache, so a probe cannot hammer the AS)."""
    from authgate.resource.jwks import KeySourceError

    async def check() -> str | None:
        try:
            await verifier.keys.get(None)
        except KeySourceError:
            return "unavailable"
        return None

    return check


def _database_check(store: Any) -> Check:
    """Ready when the ``[trust]`` database answers (without it every trust check is a 503)."""
    async def check() -> str | None:
        await store.ping()
        return None

    return check


def _facilitator_check(client: Any) -> Check:
    async def check() -> str | None:
        await client.supported()
        return None

    return check
