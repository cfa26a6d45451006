"""Clients registered by an operator (``authgate clients add``): resource servers that introspect tokens,
back-end agents with fixed credentials. They go through the same metadata validation as dynamic clients but
are marked static, so RFC 7592 management cannot touch them."""

from __future__ import annotations

import secrets
from typing import Any

from authgate.config import Settings
from authgate.crypto.hashing import new_token, token_hash
from authgate.dcr.metadata import uses_secret, validate_client_metadata
from authgate.store import ClientRecord, Store


async def add_static_client(store: Store, settings: Settings, request: dict[str, Any]) -> dict[str, Any]:
    """Validate and store a client; return its information, including the secret (shown only here)."""
    metadata = validate_client_metadata(request, settings)
    now = int(store.clock.now())
    client_id = "s_" + secrets.token_urlsafe(18)
    secret = new_token() if uses_secret(metadata) else None
    expires = now + settings.client_secret_ttl if secret and settings.client_secret_ttl else 0
    await store.create_client(ClientRecord(
        client_id=client_id, metadata=metadata, secret_hash=token_hash(secret) if secret else None,
        secret_expires_at=expires, rat_hash=None, dynamic=False, metadata_digest=None, issued_at=now,
        updated_at=now,
    ))
    await store.audit("client.added", client_id=client_id, by="operator")
    info: dict[str, Any] = {"client_id": client_id, "client_id_issued_at": now, **metadata}
    if secret:
        info["client_secret"] = secret
        info["client_secret_expires_at"] = expires
    return info
