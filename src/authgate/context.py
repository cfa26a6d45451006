"""What the server's endpoints share: settings, store, keys, clock, logger, limits.

Built once by ``authgate.app`` and passed to each endpoint; there is no global state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from authgate.clock import Clock
from authgate.config import Settings
from authgate.crypto.keys import KeyRing
from authgate.ops.metrics import Metrics
from authgate.ratelimit import RateLimiter
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
    #: (None = the database's) and the counter behind every rate limiter; closed with the app.
    replay_cache: ReplayCache | None = None
    redis: SharedRedis | None = None
    #: Password attempts per username and address, shared by every sign-in form (sign-in page, consent page).
    login_limiter: RateLimiter = field(init=False)
    #: Budgets, mandates and the kill list (authgate.trust); the kill switch caches the list per process and
    #: re-reads it whenever the database's version counter moved.
    trust: TrustStore = field(init=False)
    killswitch: KillSwitch = field(init=False)

    def __post_init__(self) -> None:
        self.login_limiter = RateLimiter(10, 60, self.clock)
        self.trust = TrustStore(self.store)
        self.killswitch = KillSwitch(self.trust)
        if self.redis is not None:
            from authgate.shared.ratelimit import RedisCounter

            counter = RedisCounter(self.redis)
            self.login_limiter.share(counter, "login")
            self.registration_limiter.share(counter, "register")
            for dimension, limiter in getattr(self.aauth_guard, "limiters", {}).items():
                limiter.share(counter, f"aauth:{dimension}")

    @property
    def issuer(self) -> str:
        return self.settings.issuer_url

    def now(self) -> int:
        return int(self.clock.now())
