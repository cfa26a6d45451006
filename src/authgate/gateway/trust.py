"""The gateway's ``[trust]`` section: which trust database and issuers its kill switch, budgets, mandates and
attestations use (authgate.trust; docs/trust.md), and the :class:`~authgate.trust.checks.TrustChecks` built
from it::

    [trust]
    database_url_env = "AUTHGATE_DATABASE_URL"  # the authorization server's database (or database_url = "…");
                                                # kill list, budgets, spending, mandates, approvals live there
    budgets = true                              # charge payments against budgets (default true with a database)
    approvals = true                            # over a budget with an approver: ask that person (default true)
    require_mandate = false                     # every payment must carry an Authgate-Mandate

    [trust.issuers]                             # trusted issuers of mandates and attestations:
    "https://auth.example.com" = "auth-jwks.json"            # a JWKS file (relative to this file), or
    "https://kyc.example" = { keys = [{ kty = "EC", … }] }   # the JWKS inline

With a database the kill switch is always on: killed clients' tokens, agents' signatures and payers' payments are
refused on the next request. The gateway reads and writes that database but never migrates it (the server
owns its schema); an unreachable database is ``503``, never a pass. Without a database only the offline checks
run: attestations, and mandates' signatures and coverage (no spending caps, no revocation).

Inside ``authgate serve`` the gateway uses the server's own store, approvals service (with its notifications)
and kill switch, and trusts the server's own issuer with its live key ring; ``[trust]`` may still add issuers
and set ``budgets``/``approvals``/``require_mandate`` (a ``database_url`` there is ignored, with a warning).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from authgate.config import ConfigError, check_database_url
from authgate.policy.model import PolicyError

if TYPE_CHECKING:
    from authgate.context import ServerContext
    from authgate.trust.checks import TrustChecks

log = logging.getLogger("authgate.gateway")

TRUST_KEYS: dict[str, Any] = {"database_url": str, "database_url_env": str, "budgets": bool, "approvals": bool,
                              "require_mandate": bool, "issuers": dict}
MAX_JWKS_FILE = 1024 * 1024
MAX_ISSUERS = 64


@dataclass(frozen=True)
class TrustConfig:
    """The parsed ``[trust]`` section; ``issuers`` maps each trusted issuer to its (public) JWKS. ``budgets`` and
    ``approvals`` None: on whenever there is a trust database."""

    database_url: str | None = field(default=None, repr=False)  # may hold a password
    budgets: bool | None = None
    approvals: bool | None = None
    require_mandate: bool = False
    issuers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


def _jwks(where: str, value: Any, base_dir: Path | None) -> Mapping[str, Any]:
    if isinstance(value, str):
        path = Path(value)
        path = path if path.is_absolute() or base_dir is None else base_dir / path
        try:
            raw = path.read_bytes()
        except OSError:
            raise PolicyError(f"{where}: {path} cannot be read") from None
        if len(raw) > MAX_JWKS_FILE:
            raise PolicyError(f"{where}: {path} is larger than {MAX_JWKS_FILE} bytes")
        try:
            value = json.loads(raw)
        except ValueError:
            raise PolicyError(f"{where}: {path} is not JSON") from None
    if not isinstance(value, dict) or not isinstance(value.get("keys"), list) or not value["keys"]:
        raise PolicyError(f"{where}: must be a JWKS (a file name, or a table with a non-empty keys list)")
    from authgate.trust.issuers import TrustedIssuers

    try:
        TrustedIssuers().add("check", value)
    except Exception as exc:  # joserfc raises several types for a malformed key; the message names the file
        raise PolicyError(f"{where}: not a usable JWKS ({str(exc)[:200] or exc.__class__.__name__})") from None
    return value


def parse_trust(raw: Mapping[str, Any], *, source: str, env: Mapping[str, str],
                base_dir: Path | None) -> TrustConfig:
    """Check ``[trust]`` (already type-checked per key) and load its issuers' key sets."""
    where = f"{source}: [trust]"
    if "database_url" in raw and "database_url_env" in raw:
        raise PolicyError(f"{where}: give database_url or database_url_env, not both")
    url: str | None = raw.get("database_url")
    if "database_url_env" in raw:
        url = env.get(raw["database_url_env"]) or None
        if url is None:
            raise PolicyError(f"{where}: database_url_env: ${raw['database_url_env']} is not set")
    if url is not None:
        try:
            check_database_url(url)  # the server's own rule: the same URLs work in both files
        except ConfigError as exc:
            raise PolicyError(f"{where}: {exc}") from None
    issuers_raw = raw.get("issuers", {})
    if len(issuers_raw) > MAX_ISSUERS:
        raise PolicyError(f"{where}: issuers: at most {MAX_ISSUERS} issuers")
    issuers: dict[str, Mapping[str, Any]] = {}
    for issuer, value in issuers_raw.items():
        if not issuer.startswith(("https://", "http://")) or len(issuer) > 500:
            raise PolicyError(f"{source}: [trust.issuers]: {issuer!r}: an issuer is an http(s) URL")
        issuers[issuer] = _jwks(f"{source}: [trust.issuers]: {issuer}", value, base_dir)
    return TrustConfig(database_url=url, budgets=raw.get("budgets"), approvals=raw.get("approvals"),
                       require_mandate=raw.get("require_mandate", False), issuers=issuers)


class _Clock:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock

    def now(self) -> float:
        return self._clock()


class TrustDatabase:
    """One trust database the gateway opened by URL: its engine, and the trust store, kill switch (with its cached
    kill list) and approvals service on it. Shared by every generation of a reloadable gateway that names the
    same URL (:class:`TrustDatabases`); closed once none of them uses it any more."""

    def __init__(self, owner: TrustDatabases, url: str, clock: _Clock) -> None:
        from authgate.approvals import ApprovalService
        from authgate.config import to_sqlalchemy_url
        from authgate.store import Store
        from authgate.store.engine import make_engine
        from authgate.trust.killswitch import KillSwitch
        from authgate.trust.store import TrustStore

        pool = int(os.environ.get("AUTHGATE_GATEWAY_DB_POOL", "5"))
        self._owner = owner
        self.url = url
        # Nothing connects before the first request: an engine a failed build made and dropped holds no connection.
        self.store = Store(make_engine(to_sqlalchemy_url(url), pool_size=pool, max_overflow=pool), clock)
        self.trust = TrustStore(self.store)
        self.killswitch = KillSwitch(self.trust)
        self.approvals = ApprovalService(self.store, clock)
        self.users = 0

    def retain(self) -> Callable[[], Awaitable[None]]:
        """Count one more user (a generation built on it) and return what releases it: the last release closes
        the database. Idempotent."""
        self.users += 1
        released = False

        async def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            self.users -= 1
            if self.users == 0:
                await self._owner.discard(self)

        return release


class TrustDatabases:
    """The trust databases one gateway has open, by URL, across its configuration generations: a reload that names
    the same database keeps its connection pool and kill list instead of opening a second one; a database no
    generation uses any more (the URL changed and the last request on the old generation ended) is closed."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = _Clock(clock)
        self._open: dict[str, TrustDatabase] = {}

    def open(self, url: str) -> TrustDatabase:
        """The database at ``url``, opened on first use (its users are counted by :meth:`TrustDatabase.retain`)."""
        database = self._open.get(url)
        if database is None:
            database = self._open[url] = TrustDatabase(self, url, self._clock)
        return database

    async def discard(self, database: TrustDatabase) -> None:
        if self._open.get(database.url) is database:
            del self._open[database.url]
        await database.store.close()

    async def aclose(self) -> None:
        """Close every database still open (the gateway's end)."""
        databases, self._open = list(self._open.values()), {}
        for database in databases:
            try:
                await database.store.close()
            except Exception as exc:  # one failing must not keep the others open
                log.warning("closing a trust database failed: %s", exc.__class__.__name__)


def build_trust(config: TrustConfig | None, clock: Callable[[], float], *, source: str,
                server: ServerContext | None = None, databases: TrustDatabases | None = None,
                ) -> tuple[TrustChecks | None, TrustDatabase | None]:
    """The gateway's trust checks (None without ``[trust]`` outside a server) and the trust database they use when
    the gateway opened one (from ``databases``, shared across reloads): the caller retains it once the rest of its
    build succeeded (:meth:`TrustDatabase.retain`) and releases it when done. Inside a server, the server's own
    store, kill switch and approvals are used (and never closed here)."""
    if config is None and server is None:
        return None, None
    from authgate.approvals import ApprovalService
    from authgate.trust.budgets import BudgetGuard
    from authgate.trust.checks import TrustChecks
    from authgate.trust.issuers import TrustedIssuers
    from authgate.trust.killswitch import KillSwitch
    from authgate.trust.mandates import MandateVerifier, store_revocations
    from authgate.trust.paywall import PaymentTrustGuard
    from authgate.trust.store import TrustStore

    config = config or TrustConfig()
    issuers = TrustedIssuers(config.issuers)
    trust: TrustStore | None = None
    killswitch: KillSwitch | None = None
    approvals: ApprovalService | None = None
    database: TrustDatabase | None = None
    tclock = _Clock(clock)
    if server is not None:
        if config.database_url is not None:
            log.warning("%s: [trust]: database_url is ignored inside authgate serve: the server's database is used",
                        source)
        issuers.add_source(server.issuer, server.keys.jwks)
    elif config.database_url is None:
        for key in ("budgets", "approvals"):
            if getattr(config, key) is True:
                raise PolicyError(f"{source}: [trust]: {key}: needs the trust database (database_url or "
                                  "database_url_env)")
    if config.require_mandate and not issuers.issuers():
        raise PolicyError(f"{source}: [trust]: require_mandate: no mandate issuers are trusted ([trust.issuers])")
    if server is not None:
        trust, killswitch, approvals = server.trust, server.killswitch, server.approvals
    elif config.database_url is not None:
        database = (databases or TrustDatabases(clock)).open(config.database_url)
        trust, killswitch, approvals = database.trust, database.killswitch, database.approvals
    budgets = BudgetGuard(trust, tclock, approvals if config.approvals is not False else None) \
        if trust is not None and config.budgets is not False else None
    mandates = MandateVerifier(issuers, revoked=store_revocations(trust) if trust is not None else None,
                               trust=trust) if issuers.issuers() else None
    payments = PaymentTrustGuard(trust, tclock, budgets=budgets, mandates=mandates,
                                 require_mandate=config.require_mandate) if budgets or mandates else None
    return TrustChecks(killswitch=killswitch, issuers=issuers if issuers.issuers() else None, payments=payments,
                       clock=tclock), database
