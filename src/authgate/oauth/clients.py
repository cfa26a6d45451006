"""Clients as the endpoints see them, wherever they came from (registration or a metadata document)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from authgate.config import is_loopback_host
from authgate.store import Store
from authgate.store.counters import CLIENTS

ClientSource = Literal["registered", "metadata_document"]


@dataclass(frozen=True)
class Client:
    client_id: str
    metadata: dict[str, Any]
    secret_hash: str | None = None
    secret_expires_at: int = 0
    dynamic: bool = False
    source: ClientSource = "registered"

    @property
    def redirect_uris(self) -> list[str]:
        return list(self.metadata.get("redirect_uris") or [])

    @property
    def grant_types(self) -> list[str]:
        return list(self.metadata.get("grant_types") or ["authorization_code"])

    @property
    def auth_method(self) -> str:
        return str(self.metadata.get("token_endpoint_auth_method") or "client_secret_basic")

    @property
    def is_public(self) -> bool:
        return self.auth_method == "none"

    @property
    def scopes(self) -> set[str]:
        return set(str(self.metadata.get("scope") or "").split())

    @property
    def name(self) -> str:
        return str(self.metadata.get("client_name") or self.client_id)

    def matches_redirect_uri(self, uri: str) -> bool:
        return any(redirect_uri_matches(registered, uri) for registered in self.redirect_uris)


def redirect_uri_matches(registered: str, requested: str) -> bool:
    """Exact string match, except that a loopback ``http`` redirect may use any port (RFC 8252 §7.3)."""
    if registered == requested:
        return True
    if not (registered.startswith("http://") and requested.startswith("http://")):
        return False  # urlsplit lower-cases the scheme; "HTTP://" must not match "http://" (exact matching)
    reg, req = urlsplit(registered), urlsplit(requested)
    if not reg.hostname or not is_loopback_host(reg.hostname) or "@" in reg.netloc or "@" in req.netloc:
        return False
    try:
        reg_port, req_port = reg.port, req.port  # raises on junk ports
    except ValueError:
        return False
    del reg_port, req_port

    def strip_port(netloc: str) -> str:
        if netloc.startswith("["):
            return netloc.split("]", 1)[0] + "]"
        return netloc.split(":", 1)[0]

    return (
        strip_port(reg.netloc) == strip_port(req.netloc)
        and reg.path == req.path
        and reg.query == req.query
        and reg.fragment == req.fragment == ""
    )


MetadataDocumentResolver = Callable[[str], Awaitable["Client | None"]]


class ClientResolver:
    """Finds the client for a ``client_id``: registered clients first, then (for https URLs) a client ID
    metadata document, when a resolver for those is configured.

    Registered clients are cached in memory (every token request needs its client). The cache is dropped
    whenever the ``clients`` change counter moves, which every update, secret rotation and deletion does in its
    own transaction, in any process; so a change is seen on the next request everywhere. Unknown ids are not
    cached: a client registered a moment ago by another process is found at once."""

    def __init__(self, store: Store, metadata_documents: MetadataDocumentResolver | None = None, *,
                 cache_size: int = 10_000) -> None:
        self.store = store
        self.metadata_documents = metadata_documents
        self.cache_size = cache_size
        self._cache: OrderedDict[str, Client] = OrderedDict()
        self._version = -1

    async def get(self, client_id: str) -> Client | None:
        if not client_id or len(client_id) > 2048:
            return None
        version = await self.store.counters.get(CLIENTS)
        if version != self._version:
            self._cache.clear()
            self._version = version
        cached = self._cache.get(client_id)
        if cached is not None:
            self._cache.move_to_end(client_id)
            return cached
        record = await self.store.get_client(client_id)
        if record is not None:
            client = Client(
                client_id=record.client_id,
                metadata=record.metadata,
                secret_hash=record.secret_hash,
                secret_expires_at=record.secret_expires_at,
                dynamic=record.dynamic,
            )
            if self._version == version:  # nothing changed while we read
                self._cache[client_id] = client
                if len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
            return client
        if self.metadata_documents is not None and client_id.startswith("https://"):
            return await self.metadata_documents(client_id)
        return None
