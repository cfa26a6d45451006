"""Test helpers: clients and users created straight in the store, PKCE pairs, redirect parsing."""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from authgate.crypto.hashing import hash_password, new_token, token_hash
from authgate.store import ClientRecord, Store, User

REDIRECT = "http://127.0.0.1:3030/callback"
RESOURCE = "http://127.0.0.1:9100/api"


async def add_client(store: Store, *, auth_method: str = "none", grant_types: list[str] | None = None,
                     scope: str | None = "read write offline_access", redirect_uris: list[str] | None = None,
                     **metadata: Any) -> tuple[str, str | None]:
    """Register a client directly in the store; returns (client_id, secret or None)."""
    client_id = "c_" + secrets.token_urlsafe(8)
    secret = new_token() if auth_method in ("client_secret_basic", "client_secret_post") else None
    meta: dict[str, Any] = {
        "client_name": "test client",
        "redirect_uris": redirect_uris if redirect_uris is not None else [REDIRECT],
        "grant_types": grant_types or ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": auth_method,
        **metadata,
    }
    if scope is not None:
        meta["scope"] = scope
    now = int(store.clock.now())
    await store.create_client(ClientRecord(
        client_id=client_id, metadata=meta, secret_hash=token_hash(secret) if secret else None,
        secret_expires_at=0, rat_hash=None, dynamic=False, metadata_digest=None, issued_at=now, updated_at=now,
    ))
    return client_id, secret


async def add_user(store: Store, username: str = "alice", password: str = "correct horse") -> str:
    subject = "u_" + secrets.token_urlsafe(8)
    await store.add_user(User(subject=subject, username=username, password_hash=hash_password(password),
                              created_at=int(store.clock.now())))
    return subject


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def redirect_params(response: httpx.Response) -> dict[str, str]:
    assert response.status_code in (302, 303), (response.status_code, response.text[:300])
    query = parse_qs(urlsplit(response.headers["location"]).query)
    return {k: v[0] for k, v in query.items()}


def authorize_params(client_id: str, challenge: str, **extra: str) -> dict[str, str]:
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "state": "st-" + secrets.token_urlsafe(8),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "resource": RESOURCE,
        "scope": "read offline_access",
    }
    params.update(extra)
    return {k: v for k, v in params.items() if v != ""}


def run_cli(capsys: Any, *args: str, stdin: str = "") -> tuple[int, str, str]:
    """Run ``authgate ARGS`` in-process with ``stdin``; returns (exit code, stdout, stderr)."""
    import io
    import sys

    from authgate.cli import main

    old = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        code = main(list(args))
    finally:
        sys.stdin = old
    out, err = capsys.readouterr()
    return code, out, err
