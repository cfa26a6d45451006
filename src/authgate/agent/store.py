"""Where the agent keeps its client registrations and tokens.

Registrations are keyed by issuer (credentials are bound to the authorization server that issued them);
tokens by issuer and resource (RFC 8707: one audience per token). Implement :class:`TokenStore` to keep
them elsewhere (a keyring, a database); two implementations ship: :class:`MemoryTokenStore` and
:class:`FileTokenStore` (a JSON file readable only by its owner).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class ClientRegistration:
    """A client identity at one authorization server (pre-registered or from RFC 7591 registration)."""

    client_id: str
    client_secret: str | None = field(default=None, repr=False)
    #: ``client_secret_basic``, ``client_secret_post`` or ``none``.
    token_endpoint_auth_method: str = "none"
    #: The issuer these credentials belong to; ``None`` (pre-registered only) = any issuer.
    issuer: str | None = None
    #: RFC 7591: seconds since the epoch, ``0`` = never; ``None`` = unknown.
    client_secret_expires_at: int | None = None
    redirect_uris: tuple[str, ...] = ()
    grant_types: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["redirect_uris"] = list(self.redirect_uris)
        data["grant_types"] = list(self.grant_types)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClientRegistration:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for name in ("redirect_uris", "grant_types"):
            values[name] = tuple(values.get(name) or ())
        return cls(**values)


@dataclass(frozen=True)
class TokenSet:
    """Tokens for one (issuer, resource) pair. ``expires_at`` is seconds since the epoch, or unknown."""

    access_token: str = field(repr=False)
    token_type: str = "Bearer"
    expires_at: float | None = None
    refresh_token: str | None = field(default=None, repr=False)
    scope: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TokenSet:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@runtime_checkable
class TokenStore(Protocol):
    """Async storage for registrations (per issuer) and tokens (per issuer and resource).

    Passing ``None`` to a setter deletes the entry.
    """

    async def get_client(self, issuer: str) -> ClientRegistration | None: ...

    async def set_client(self, issuer: str, client: ClientRegistration | None) -> None: ...

    async def get_tokens(self, issuer: str, resource: str) -> TokenSet | None: ...

    async def set_tokens(self, issuer: str, resource: str, tokens: TokenSet | None) -> None: ...


class MemoryTokenStore:
    """Keeps everything in process memory; forgotten on exit."""

    def __init__(self) -> None:
        self._clients: dict[str, ClientRegistration] = {}
        self._tokens: dict[tuple[str, str], TokenSet] = {}

    async def get_client(self, issuer: str) -> ClientRegistration | None:
        return self._clients.get(issuer)

    async def set_client(self, issuer: str, client: ClientRegistration | None) -> None:
        if client is None:
            self._clients.pop(issuer, None)
        else:
            self._clients[issuer] = client

    async def get_tokens(self, issuer: str, resource: str) -> TokenSet | None:
        return self._tokens.get((issuer, resource))

    async def set_tokens(self, issuer: str, resource: str, tokens: TokenSet | None) -> None:
        if tokens is None:
            self._tokens.pop((issuer, resource), None)
        else:
            self._tokens[(issuer, resource)] = tokens


class FileTokenStore:
    """A JSON file with mode 0600 (its directory is created with 0700), rewritten atomically.

    Layout: ``{"clients": {issuer: {...}}, "tokens": {issuer: {resource: {...}}}}``. File I/O runs in a
    worker thread so the event loop never blocks on the disk.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()
        self._lock = asyncio.Lock()

    def _read(self) -> dict[str, Any]:
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {"clients": {}, "tokens": {}}
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError(f"{self.path}: not a token store file")
        data.setdefault("clients", {})
        data.setdefault("tokens", {})
        return data

    def _write(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tokens-", dir=self.path.parent)  # created with mode 0600
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh, indent=2, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    async def _load(self) -> dict[str, Any]:
        return await asyncio.to_thread(self._read)

    async def get_client(self, issuer: str) -> ClientRegistration | None:
        async with self._lock:
            entry = (await self._load())["clients"].get(issuer)
        return ClientRegistration.from_json(entry) if isinstance(entry, dict) else None

    async def set_client(self, issuer: str, client: ClientRegistration | None) -> None:
        async with self._lock:
            data = await self._load()
            if client is None:
                data["clients"].pop(issuer, None)
            else:
                data["clients"][issuer] = client.to_json()
            await asyncio.to_thread(self._write, data)

    async def get_tokens(self, issuer: str, resource: str) -> TokenSet | None:
        async with self._lock:
            entry = (await self._load())["tokens"].get(issuer, {}).get(resource)
        return TokenSet.from_json(entry) if isinstance(entry, dict) else None

    async def set_tokens(self, issuer: str, resource: str, tokens: TokenSet | None) -> None:
        async with self._lock:
            data = await self._load()
            per_issuer = data["tokens"].setdefault(issuer, {})
            if tokens is None:
                per_issuer.pop(resource, None)
                if not per_issuer:
                    data["tokens"].pop(issuer, None)
            else:
                per_issuer[resource] = tokens.to_json()
            await asyncio.to_thread(self._write, data)
