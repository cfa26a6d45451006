"""What the server's endpoints share: settings, store, keys, clock, logger, limits.

Built once by ``authgate.app`` and passed to each endpoint; there is no global state.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from authgate.clock import Clock
from authgate.config import Settings
from authgate.crypto.keys import KeyRing
from authgate.ops.metrics import Metrics
from authgate.ratelimit import RateLimiter, SharedCounter, choose_backend
from authgate.shared.client import SharedRedis
from authgate.store import Store
from authgate.trust.killswitch import KillSwitch
from authgate.trust.store import TrustStore

if TYPE_CHECKING:
    from authgate.aauth.abuse import AbuseGuard
    from authgate.aauth.directory import IdentityDirectory
    from authgate.agentauth.replay import ReplayCache
    from authgate.approvals import ApprovalService
    from authgate.net import Fetcher
    from authgate.net.jwks import JwksCache
    from authgate.oauth.clients import ClientResolver


@dataclass
class ServerContext:
    settings: Settings
    store: Store
    keys: KeyRing
    clock: Clock
    clients: ClientResolver
    registration_limiter: RateLimiter
    approvals: ApprovalService
    #: AAuth: blinded identity attributes and matching; rate limits and lock-out of identity attempts.
    identity: IdentityDirectory
    aauth_guard: AbuseGuard
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("authgate"))
    #: Replacement for the SSRF-guarded network fetcher (tests, the demo); Agent Auth fetches issuer keys with it.
    fetcher: Fetcher | None = None
    #: This process's Prometheus metrics (``/metrics``).
    metrics: Metrics = field(default_factory=Metrics)
    #: Cross-process state in Redis when ``redis_url`` is set (authgate.shared): the Agent Auth replay cache
    #: (None = the database's), the counter behind every rate limiter and the client key-set cache; closed with
    #: the app.
    replay_cache: ReplayCache | None = None
    redis: SharedRedis | None = None
    #: Cache of clients' ``jwks_uri`` key sets: with Redis, this process's cache in front of the shared,
    #: HMAC-tagged one (authgate.shared.jwks); None = the process-wide cache of authgate.net.jwks.
    jwks_cache: JwksCache | None = None
    #: What the rate limiters count with (``rate_limit_backend`` resolved): memory, database or redis.
    rate_limit_backend: str = field(init=False)
    #: Password attempts per username and address, shared by every sign-in form (sign-in page, consent page).
    login_limiter: RateLimiter = field(init=False)
    #: OpenID CIBA ``/bc-authorize``: requests per client (``ciba_rate_per_client``) and per person named
    #: (``ciba_rate_per_user``), per minute, shared by every process like the others (authgate.oauth.ciba).
    ciba_client_limiter: RateLimiter = field(init=False)
    ciba_user_limiter: RateLimiter = field(init=False)
    #: Budgets, mandates and the kill list (authgate.trust); the kill switch caches the list per process and
    #: re-reads it whenever the database's version counter moved.
    trust: TrustStore = field(init=False)
    killswitch: KillSwitch = field(init=False)

    def __post_init__(self) -> None:
        self.login_limiter = RateLimiter(10, 60, self.clock)
        self.ciba_client_limiter = RateLimiter(self.settings.ciba_rate_per_client, 60, self.clock)
        self.ciba_user_limiter = RateLimiter(self.settings.ciba_rate_per_user, 60, self.clock)
        self.trust = TrustStore(self.store)
        self.killswitch = KillSwitch(self.trust)
        counter = self._rate_limit_counter()
        if counter is not None:
            self.login_limiter.share(counter, "login")
            self.registration_limiter.share(counter, "register")
            self.ciba_client_limiter.share(counter, "ciba:client")
            self.ciba_user_limiter.share(counter, "ciba:user")
            for dimension, limiter in getattr(self.aauth_guard, "limiters", {}).items():
                limiter.share(counter, f"aauth:{dimension}")
        if self.redis is not None and self.jwks_cache is None:
            self.jwks_cache = self._shared_jwks_cache(self.redis)

    def _rate_limit_counter(self) -> SharedCounter | None:
        """The counter behind the low-rate security limiters; None = each process counts on its own."""
        self.rate_limit_backend = choose_backend(self.settings.rate_limit_backend, redis=self.redis is not None,
                                                 workers=self.settings.workers,
                                                 postgres=self.store.engine.dialect.name == "postgresql")
        if self.rate_limit_backend == "memory":
            return None
        from authgate.store.ratelimits import DatabaseCounter

        database = DatabaseCounter(self.store)
        if self.rate_limit_backend == "database" or self.redis is None:
            return database
        from authgate.shared.ratelimit import RedisCounter

        return RedisCounter(self.redis, fallback=database)  # Redis down: still one bucket, in the database

    def _shared_jwks_cache(self, redis: SharedRedis) -> JwksCache:
        from authgate.net import Fetcher
        from authgate.net.jwks import JwksCache
        from authgate.shared.jwks import MAC_SECRET_NAME, RedisJwksCache

        async def secret() -> str:
            return await self.store.server_secret(MAC_SECRET_NAME, lambda: secrets.token_hex(32))

        fetcher = self.fetcher or Fetcher(allow_loopback=self.settings.allow_loopback_fetch)
        return JwksCache(fetcher, self.clock, shared=RedisJwksCache(redis, secret))

    @property
    def issuer(self) -> str:
        return self.settings.issuer_url

    def now(self) -> int:
        return int(self.clock.now())
