"""``authgate admins``: create an operator, promote and demote a user, list; the role gates the dashboard."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from authgate.store import Store
from tests.helpers import run_cli


def _admin_events(tmp_path: Path) -> list[tuple[str, str | None]]:
    async def read() -> list[tuple[str, str | None]]:
        store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'authgate.db'}")
        try:
            return [(e["event"], e["subject"]) for e in reversed(await store.audit_events(limit=50))
                    if e["event"].startswith("admin.")]
        finally:
            await store.close()

    return asyncio.run(read())


def test_admins_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = ["--data-dir", str(tmp_path)]
    code, _, err = run_cli(capsys, "admins", *d, "add", "root", "--password-stdin", stdin="short\n")
    assert code == 2 and "at least 12" in err
    code, out, _ = run_cli(capsys, "admins", *d, "add", "root", "--password-stdin", stdin="a long passphrase\n")
    assert code == 0 and "added operator root" in out
    assert run_cli(capsys, "users", *d, "add", "alice", "--password-stdin", stdin="correct horse\n")[0] == 0
    code, out, _ = run_cli(capsys, "admins", *d, "list")
    assert out.splitlines()[0].startswith("root\tu_") and len(out.splitlines()) == 1
    assert run_cli(capsys, "admins", *d, "add", "alice")[1] == "alice is now an operator\n"
    assert run_cli(capsys, "admins", *d, "add", "alice")[1] == "alice is already an operator\n"
    assert len(run_cli(capsys, "admins", *d, "list")[1].splitlines()) == 2
    assert run_cli(capsys, "admins", *d, "remove", "alice")[0] == 0
    code, _, err = run_cli(capsys, "admins", *d, "remove", "alice")
    assert code == 1 and "not an operator" in err
    assert run_cli(capsys, "users", *d, "list")[1].count("admin") == 1
    events = [name for name, _ in _admin_events(tmp_path)]
    assert events == ["admin.granted", "admin.granted", "admin.revoked"]


def test_admins_add_refuses_unusable_usernames(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = ["--data-dir", str(tmp_path)]
    for name, message in (("root admin", "a username is printable characters without spaces"),
                          ("r" * 256, "a username has 1 to 255 characters")):
        code, out, err = run_cli(capsys, "admins", *d, "add", name, "--password-stdin", stdin="a long passphrase\n")
        assert (code, out) == (2, "") and err == f"authgate: {message}\n"
    assert run_cli(capsys, "admins", *d, "list")[1] == ""
