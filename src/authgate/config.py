"""Server settings: defaults here, overridden by a TOML file, then ``AUTHGATE_*`` environment variables,
then command-line flags. Every default is the safe one; loosening needs an explicit setting."""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

RegistrationMode = Literal["open", "token", "closed"]


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names it."""


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

    #: Development only: approve every authorization request as ``auto_approve_subject`` with no person.
    auto_approve: bool = False
    auto_approve_subject: str = "dev-user"
    #: Development and tests only: let server-side fetches (client metadata documents) reach loopback.
    allow_loopback_fetch: bool = False
    log_level: str = "info"

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
        if self.registration not in ("open", "token", "closed"):
            raise ConfigError("registration must be one of open, token, closed")
        for name in ("access_token_ttl", "refresh_token_ttl", "code_ttl"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        if not set(self.default_scopes) <= set(self.scopes):
            raise ConfigError("default_scopes must be a subset of scopes")
        return self


def is_loopback_host(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
