"""Bad input to the ``authgate`` management commands: one line on stderr and a non-zero exit (2 for input the
command cannot use, as argparse does), never a traceback, and nothing written."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from authgate.store import Store
from tests.helpers import run_cli


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Any:
    def run(*args: str, stdin: str = "") -> tuple[int, str, str]:
        return run_cli(capsys, *args, "--data-dir", str(tmp_path), stdin=stdin)

    return run


def _read(tmp_path: Path, work: Any) -> Any:
    async def go() -> Any:
        store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'authgate.db'}")
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(go())


def _usage_error(capsys: pytest.CaptureFixture[str], cli: Any, *args: str) -> str:
    """argparse's refusal: SystemExit(2) and its message on stderr."""
    with pytest.raises(SystemExit) as exited:
        cli(*args)
    assert exited.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(("metadata", "message"), [
    ("not json", "authgate: client metadata is not JSON: Expecting value"),
    ("[]", "authgate: client metadata must be a JSON object"),
    ('"rs"', "authgate: client metadata must be a JSON object"),
    ('{"client_name":"x","grant_types":"client_credentials"}',
     "authgate: invalid_client_metadata: grant_types must be an array of strings"),
    ('{"client_name":"x","redirect_uris":["javascript:1"]}',
     "authgate: invalid_redirect_uri: redirect URI scheme javascript is not allowed"),
    ('{"client_name":"x","redirect_uris":"https://a.example/cb"}', "authgate: invalid_redirect_uri: "),
])
def test_clients_add_refuses_bad_metadata(cli: Any, tmp_path: Path, metadata: str, message: str) -> None:
    code, out, err = cli("clients", "add", metadata)
    assert (code, out) == (2, "") and err.startswith(message) and err.count("\n") == 1, err
    assert _read(tmp_path, lambda s: s.list_clients()) == []


@pytest.mark.parametrize("ttl", ["0", "-5", "59", "31536001", "99999999999999999999"])
def test_clients_initial_access_token_ttl_is_bounded(cli: Any, capsys: pytest.CaptureFixture[str], ttl: str) -> None:
    err = _usage_error(capsys, cli, "clients", "initial-access-token", "--ttl", ttl)
    assert f"argument --ttl: must be from 60 to 31536000, not {ttl}" in err


def test_clients_initial_access_token_ttl_bounds_themselves_work(cli: Any) -> None:
    for ttl in ("60", "31536000"):
        code, out, _ = cli("clients", "initial-access-token", "--ttl", ttl)
        assert code == 0 and len(out.strip()) >= 40


@pytest.mark.parametrize("args", [("audit",), ("approvals", "list"), ("payments", "list")])
@pytest.mark.parametrize("limit", ["-1", "0", "10001"])
def test_list_limits_are_bounded(cli: Any, capsys: pytest.CaptureFixture[str], args: tuple[str, ...],
                                 limit: str) -> None:
    err = _usage_error(capsys, cli, *args, "--limit", limit)
    assert f"argument --limit: must be from 1 to 10000, not {limit}" in err


def test_audit_limit_is_honoured(cli: Any) -> None:
    for name in ("a1", "a2", "a3"):
        assert cli("users", "add", name, "--password-stdin", stdin="s3cret-pass\n")[0] == 0
    code, out, _ = cli("audit", "--limit", "2")
    assert code == 0 and len(out.splitlines()) == 2 and '"subject": "a3"' in out.splitlines()[-1]


@pytest.mark.parametrize(("username", "message"), [
    ("a b", "authgate: a username is printable characters without spaces"),
    ("a\tb", "printable characters without spaces"),
    ("tab\u00a0nbsp", "printable characters without spaces"),
    ("bell\x07", "printable characters without spaces"),
    ("x" * 256, "authgate: a username has 1 to 255 characters"),
    ("x" * 5000, "a username has 1 to 255 characters"),
    ("", "a username has 1 to 255 characters"),
])
def test_users_add_refuses_unusable_usernames(cli: Any, tmp_path: Path, username: str, message: str) -> None:
    code, out, err = cli("users", "add", username, "--password-stdin", stdin="s3cret-pass\n")
    assert (code, out) == (2, "") and message in err
    assert _read(tmp_path, lambda s: s.list_users()) == []


def test_users_add_takes_usable_usernames(cli: Any, tmp_path: Path) -> None:
    for name in ("alice", "maría", "bob@example.com", "x" * 255):
        assert cli("users", "add", name, "--password-stdin", stdin="s3cret-pass\n")[0] == 0, name
    assert len(_read(tmp_path, lambda s: s.list_users())) == 4


def test_users_import_refuses_unusable_new_usernames(cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    path.write_text("username,password\nok-user,s3cret-pass\nbad user,s3cret-pass\n" + "y" * 300 + ",\n")
    code, out, err = cli("users", "import", str(path))
    assert code == 1 and "1 added" in out and "2 row(s) with errors" in out
    assert "line 3: username: a username is printable characters without spaces" in err
    assert "line 4: username: a username has 1 to 255 characters" in err
    assert [u.username for u in _read(tmp_path, lambda s: s.list_users())] == ["ok-user"]


def test_set_attributes_notes_custom_attribute_names(cli: Any) -> None:
    """The directory deliberately takes operator-defined attribute names (docs/aauth.md, "your own keys"), so
    an unknown name is stored; but the command says which names are not standard, so a typo is seen."""
    assert cli("users", "add", "alice", "--password-stdin", stdin="s3cret-pass\n")[0] == 0
    code, out, err = cli("users", "set-attributes", "alice", "foo=bar")
    assert code == 0 and "set 1 identity attribute(s) for alice: foo" in out
    assert "authgate: note: foo is not a standard attribute (given_name, family_name, birthdate, phone_number, " \
           "email, postal_code, acct_last4)" in err and "check the spelling" in err
    code, out, err = cli("users", "set-attributes", "alice", "given_name=Alice", "givenname=Alice", "pin=1234")
    assert code == 0 and "note: givenname, pin are not standard attributes" in err
    code, out, err = cli("users", "set-attributes", "alice", "given_name=Alice", "postal_code=94107")
    assert code == 0 and err == ""
    code, out, err = cli("users", "add", "bob", "--password-stdin", "--attr", "member_no=77", stdin="s3cret-pass\n")
    assert code == 0 and "note: member_no is not a standard attribute" in err


def _without_terminal(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``authgate ARGS`` in a new session (no controlling terminal, so no /dev/tty) with stdin at EOF, as
    from cron, CI or ``ssh host cmd < /dev/null``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHGATE_")}
    return subprocess.run([sys.executable, "-m", "authgate.cli", *args, "--data-dir", str(tmp_path)], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
                          start_new_session=True)


@pytest.mark.parametrize("command", ["users", "admins"])
def test_password_prompt_without_a_terminal_says_to_use_password_stdin(tmp_path: Path, command: str) -> None:
    done = _without_terminal(tmp_path, command, "add", "nosuch")
    assert done.returncode == 2, done.stderr
    assert done.stderr == ("authgate: no terminal to ask for the password on: pipe it in on standard input "
                           "with --password-stdin\n")
    assert _read(tmp_path, lambda s: s.list_users()) == []
