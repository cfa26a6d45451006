"""The ``authgate`` command as an operator uses it: users, keys, clients, and ``serve`` itself."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt

from authgate.crypto.keys import KeyRing
from authgate.store import Store
from tests.helpers import run_cli
from tests.servers import free_port

run = run_cli


def test_users_add_list_remove(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = ["--data-dir", str(tmp_path)]
    assert run(capsys, "users", *d, "add", "alice", "--password-stdin", stdin="s3cret-pass\n")[0] == 0
    code, _, err = run(capsys, "users", *d, "add", "alice", "--password-stdin", stdin="s3cret-pass\n")
    assert code == 1 and "already exists" in err
    assert run(capsys, "users", *d, "add", "bob", "--password-stdin", stdin="short\n")[0] == 2
    code, out, _ = run(capsys, "users", *d, "list")
    assert code == 0 and out.startswith("alice\t") and "bob" not in out and "s3cret" not in out
    assert run(capsys, "users", *d, "remove", "alice")[0] == 0
    assert run(capsys, "users", *d, "remove", "alice")[0] == 1


def test_keys_rotate_keeps_old_key_published(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async def sign_with_current() -> tuple[str, Store]:
        store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'authgate.db'}")
        ring = KeyRing(store)
        await ring.ensure_key()
        return await ring.sign({"iss": "x", "exp": int(time.time()) + 60}), store

    token, store = asyncio.run(sign_with_current())
    asyncio.run(store.close())
    code, _, err = run(capsys, "keys", "rotate", "--keep-old-for", "10", "--data-dir", str(tmp_path))
    assert code == 2 and "at least" in err
    code, out, _ = run(capsys, "keys", "--data-dir", str(tmp_path), "rotate", "--keep-old-for", "900")
    assert code == 0 and "now signing with" in out
    code, out, _ = run(capsys, "keys", "--data-dir", str(tmp_path), "list")
    assert out.count("\n") == 2 and "active" in out and "retired" in out

    async def verify() -> None:
        store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'authgate.db'}")
        ring = KeyRing(store)
        jwks = await ring.jwks()
        assert len(jwks["keys"]) == 2
        jwt.decode(token, await ring.key_set(None))  # the old key still verifies
        new = await ring.sign({"iss": "x"})
        assert jwt.decode(new, await ring.key_set(None)).header["kid"] != jwt.decode(
            token, await ring.key_set(None)).header["kid"]
        await store.close()

    asyncio.run(verify())


def test_clients_add_list_remove_and_iat(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = ["--data-dir", str(tmp_path)]
    code, out, _ = run(capsys, "clients", *d, "add",
                       '{"client_name": "rs", "grant_types": ["client_credentials"], "trusted": true}')
    assert code == 0 and '"client_secret"' in out and "trusted" not in out
    code, out, _ = run(capsys, "clients", *d, "list")
    assert "rs" in out and "static" in out
    client_id = out.split("\t", 1)[0]
    assert run(capsys, "clients", *d, "remove", client_id)[0] == 0
    code, out, _ = run(capsys, "clients", "initial-access-token", "--ttl", "60", "--single-use", *d)
    assert code == 0 and len(out.strip()) >= 40
    token = out.strip()
    code, out, _ = run(capsys, "audit", *d)
    assert code == 0 and '"event": "client.added"' in out and '"event": "client.deleted"' in out
    assert token not in out


def test_auto_approve_refused_off_loopback(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "serve", "--host", "0.0.0.0", "--auto-approve")
    assert code == 2 and "loopback" in err


def test_serve_starts_and_serves_metadata(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "AUTHGATE_DATA_DIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "authgate.cli", "serve", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/.well-known/oauth-authorization-server", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
        assert r.json()["issuer"] == f"http://127.0.0.1:{port}"
        assert "x-authgate-dev" not in r.headers
        assert (tmp_path / "authgate.db").exists()
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    assert "Traceback" not in out


def _store_call(tmp_path: Path, fn: Any) -> Any:
    async def go() -> Any:
        store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'authgate.db'}")
        try:
            return await fn(store)
        finally:
            await store.close()

    return asyncio.run(go())


def test_users_set_channels_validates_and_lists(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = ["--data-dir", str(tmp_path)]
    assert run(capsys, "users", *d, "add", "alice", "--password-stdin", stdin="s3cret-pass\n")[0] == 0
    code, out, _ = run(capsys, "users", "set-channels", "alice", "--email", "alice@example.com", "--phone",
                       "+14155550123", "--webhook-url", "https://hooks.example/a", "--admin", *d)
    assert code == 0 and "email" in out
    code, out, _ = run(capsys, "users", *d, "list")
    assert "email=alice@example.com" in out and "phone=+14155550123" in out
    assert "webhook=https://hooks.example/a" in out and out.rstrip().endswith("admin")
    user = _store_call(tmp_path, lambda s: s.get_user_by_name("alice"))
    assert user.is_admin and user.email == "alice@example.com"

    for bad in (["--email", "not-an-address"], ["--email", "a@b"], ["--email", "a b@example.com"],
                ["--phone", "4155550123"], ["--phone", "+0123"], ["--phone", "+1415555012345678"],
                ["--webhook-url", "http://hooks.example/a"], ["--webhook-url", "https://u:p@hooks.example/"],
                ["--webhook-url", "ftp://hooks.example/"], ["--webhook-url", "https:///nohost"]):
        code, _, err = run(capsys, "users", *d, "set-channels", "alice", *bad)
        assert code == 2 and err, bad
    assert _store_call(tmp_path, lambda s: s.get_user_by_name("alice")) == user  # nothing changed

    assert run(capsys, "users", *d, "set-channels", "alice", "--webhook-url", "http://127.0.0.1:8080/hook")[0] == 0
    assert run(capsys, "users", *d, "set-channels", "alice", "--email", "", "--no-admin")[0] == 0
    user = _store_call(tmp_path, lambda s: s.get_user_by_name("alice"))
    assert user.email is None and not user.is_admin and user.webhook_url == "http://127.0.0.1:8080/hook"
    assert user.phone == "+14155550123"
    assert run(capsys, "users", *d, "set-channels", "bob", "--email", "b@example.com")[0] == 1
    assert run(capsys, "users", *d, "set-channels", "alice")[0] == 2


def test_approvals_list_approve_deny(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from authgate.approvals import ApprovalService
    from authgate.clock import FrozenClock, SystemClock

    d = ["--data-dir", str(tmp_path)]
    assert run(capsys, "users", *d, "add", "alice", "--password-stdin", stdin="s3cret-pass\n")[0] == 0
    subject = _store_call(tmp_path, lambda s: s.get_user_by_name("alice")).subject

    async def create(store: Store) -> list[str]:
        # The third request was made 10 s ago with a 1 s lifetime: expired, without sleeping.
        ids = []
        for clock, ttl in ((SystemClock(), 300), (SystemClock(), 300), (FrozenClock(time.time() - 10), 1)):
            svc = ApprovalService(store, clock)
            ids.append((await svc.create(kind="scope_escalation", subject=subject, client_id="agent-1",
                                         details={}, ttl=ttl)).id)
        return ids

    first, second, short = _store_call(tmp_path, create)
    code, out, _ = run(capsys, "approvals", "list", *d)
    assert code == 0 and first in out and second in out and short not in out
    assert "alice" in out and "pending" in out

    code, out, _ = run(capsys, "approvals", *d, "approve", first)
    assert code == 0 and out.startswith("approved")
    code, out, _ = run(capsys, "approvals", "deny", second, *d)
    assert code == 0 and out.startswith("denied")
    code, _, err = run(capsys, "approvals", *d, "deny", first)
    assert code == 1 and "already decided" in err
    code, _, err = run(capsys, "approvals", *d, "approve", short)
    assert code == 1 and "expired" in err
    code, _, err = run(capsys, "approvals", *d, "approve", "nope")
    assert code == 1 and "no such request" in err

    code, out, _ = run(capsys, "approvals", *d, "list")
    assert out == ""
    code, out, _ = run(capsys, "approvals", *d, "list", "--all")
    lines = {line.split("\t")[0]: line.split("\t")[2] for line in out.splitlines()}
    assert lines == {first: "approved", second: "denied", short: "expired"}
    decided = _store_call(tmp_path, lambda s: s.get_approval(first))
    assert decided.decided_by == "operator" and decided.channel == "cli"
