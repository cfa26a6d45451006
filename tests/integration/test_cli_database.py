"""A database the ``authgate`` commands cannot use — an unsupported or malformed ``--database-url``, a server that
cannot be reached, a ``--data-dir`` that is a file — ends every database-using command with one line,
``authgate: configuration error: …``, and exit status 2 (docs/server.md), never a traceback, and never the
password of the URL. Also: every action and option of the commands says what it does in ``--help``."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import authgate.cli
from authgate.cli import build_parser
from authgate.config import ConfigError, load_settings
from tests.helpers import run_cli

#: Nothing listens on port 1: the connection is refused at once.
UNREACHABLE = "postgresql://nobody:hunter2secret@127.0.0.1:1/authgate"
SUPPORTED = ("use sqlite:///PATH (sqlite+aiosqlite:///PATH) or postgresql://USER:PASSWORD@HOST:5432/DB "
             "(postgresql+asyncpg://...)")

#: Every command that opens the database, with what it needs after the common options.
COMMANDS = [
    ("users", "list"), ("users", "add", "alice", "--password-stdin"), ("users", "remove", "alice"),
    ("clients", "list"), ("keys", "list"), ("keys", "rotate"), ("admins", "list"), ("agents", "list"),
    ("approvals", "list"), ("audit",), ("kill", "--list"), ("budgets", "list"), ("mandates", "list"),
    ("attestations", "issue", "--agent", "a", "--claim", "k=v"), ("payments", "list"), ("serve",),
    ("facilitator",),
]


@pytest.fixture(autouse=True)
def no_serving(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """No AUTHGATE_* from the environment; ``serve``/``facilitator`` that get as far as serving are recorded
    instead of listening (they must not get there: the database comes first)."""
    import uvicorn

    served: list[str] = []

    async def serve(self: Any, *args: Any, **kwargs: Any) -> None:
        served.append("served")

    monkeypatch.setattr(uvicorn.Server, "serve", serve)
    monkeypatch.setattr(authgate.cli, "configure_logging", lambda *a, **k: None)
    for name in list(os.environ):
        if name.startswith("AUTHGATE_"):
            monkeypatch.delenv(name)
    return served


def _refused(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code, out, err = run_cli(capsys, *args, stdin="s3cret-pass\n")
    assert (code, out) == (2, ""), (args, out, err)
    assert err.startswith("authgate: configuration error: ") and err.count("\n") == 1, (args, err)
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(("url", "message"), [
    ("mysql://x/y", f"database_url: mysql:// databases are not supported; {SUPPORTED}"),
    ("notaurl", f"database_url is not a database URL; {SUPPORTED}"),
    ("sqlite://relative.db", "database_url: a SQLite URL is sqlite:///relative/path.db or "
                             "sqlite:////absolute/path.db (three slashes, then the file's path)"),
    ("postgresql://u@db.example:notaport/x", "database_url: the PostgreSQL port is not a number from 1 to 65535"),
])
@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_an_unusable_database_url_is_a_configuration_error(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                           command: tuple[str, ...], url: str, message: str) -> None:
    err = _refused(capsys, *command, "--data-dir", str(tmp_path), "--database-url", url)
    assert err == f"authgate: configuration error: {message}\n"


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_an_unreachable_database_is_named_without_its_password(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                               no_serving: list[str],
                                                               command: tuple[str, ...]) -> None:
    err = _refused(capsys, *command, "--data-dir", str(tmp_path), "--database-url", UNREACHABLE)
    assert no_serving == []
    assert err.startswith("authgate: configuration error: the database at 127.0.0.1:1 cannot be reached: "), err
    assert "hunter2secret" not in err and "nobody" not in err
    assert not (tmp_path / "authgate.db").exists()


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_data_dir_that_is_a_file_is_a_configuration_error(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                            command: tuple[str, ...]) -> None:
    file = tmp_path / "a-file"
    file.write_text("not a directory\n")
    err = _refused(capsys, *command, "--data-dir", str(file))
    assert err == (f"authgate: configuration error: cannot create the SQLite database {file / 'authgate.db'}: "
                   f"{file} is not a directory\n")
    err = _refused(capsys, *command, "--data-dir", str(file / "below"))
    assert err.startswith(f"authgate: configuration error: cannot create the directory {file / 'below'} for the "
                          f"SQLite database {file / 'below' / 'authgate.db'}: ")
    assert file.read_text() == "not a directory\n"


def test_a_file_that_is_not_a_sqlite_database(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a SQLite database, only some text that is long enough to be read\n" * 20)
    err = _refused(capsys, "users", "list", "--database-url", f"sqlite:///{junk}")
    assert err == (f"authgate: configuration error: the SQLite database {junk} cannot be opened: file is not a "
                   "database\n")


def test_the_database_url_from_the_environment_and_the_file_is_checked_too(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mysql:// databases are not supported"):
        load_settings(env={"AUTHGATE_DATABASE_URL": "mysql://x/y"})
    cfg = tmp_path / "authgate.toml"
    cfg.write_text('database_url = "sqlite://relative.db"\n')
    with pytest.raises(ConfigError, match=r"a SQLite URL is sqlite:///relative/path\.db"):
        load_settings(cfg, env={})


@pytest.mark.parametrize("url", [
    "sqlite:///relative.db", "sqlite:////abs/path/authgate.db", "sqlite+aiosqlite:///x.db", "sqlite:///:memory:",
    "postgresql://u:p@db.example:5432/authgate", "postgres://u@db.example/authgate",
    "postgresql+asyncpg://u@db.example/authgate", "postgresql:///authgate?host=/run/postgresql",
])
def test_the_supported_database_urls_pass(url: str) -> None:
    from authgate.config import check_database_url

    assert check_database_url(url) == url
    assert load_settings(env={}, database_url=url).database_url == url


def _subprocess(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHGATE_")}
    return subprocess.run([sys.executable, "-m", "authgate.cli", *args], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("args", "message"), [
    (("--database-url", UNREACHABLE), "the database at 127.0.0.1:1 cannot be reached: "),
    (("--database-url", UNREACHABLE, "--workers", "2"), "the database at 127.0.0.1:1 cannot be reached: "),
    (("--database-url", "mysql://x/y"), "database_url: mysql:// databases are not supported"),
    (("--data-dir", "/etc/passwd"), "cannot create the SQLite database /etc/passwd/authgate.db: /etc/passwd is not a "
                                    "directory"),
])
def test_serve_stops_with_one_line_and_status_2(args: tuple[str, ...], message: str) -> None:
    """The real process (uvicorn, the event loop): nothing listens, nothing is printed but the one line."""
    done = _subprocess("serve", "--port", "24911", *args)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"authgate: configuration error: {message}") and done.stderr.count("\n") == 1, \
        done.stderr
    assert "Traceback" not in done.stderr and "hunter2secret" not in done.stderr
    assert done.stdout == ""


def _subcommands(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, argparse.ArgumentParser,
                                                                             argparse._SubParsersAction[Any]]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{path} {name}", sub, action
                if name != "gateway":  # the gateway's own command line is its own
                    yield from _subcommands(sub, f"{path} {name}")


def test_every_action_and_option_has_help() -> None:
    missing = []
    for path, parser, parent in _subcommands(build_parser(), "authgate"):
        if not any(choice.dest == path.rsplit(" ", 1)[1] and choice.help for choice in parent._choices_actions):
            missing.append(path)
        for action in parser._actions:
            if action.option_strings and action.help is None:
                missing.append(f"{path} {action.option_strings[0]}")
    assert missing == []


@pytest.mark.parametrize("command", [("users", "list"), ("users",), ("clients", "list"), ("keys", "list"),
                                     ("admins", "list"), ("agents", "list"), ("kill",), ("budgets", "list")])
def test_management_commands_do_not_say_they_bind(capsys: pytest.CaptureFixture[str],
                                                  command: tuple[str, ...]) -> None:
    """``--host``/``--port`` of a command that does not listen only make the default issuer; ``serve`` binds."""
    with pytest.raises(SystemExit):
        run_cli(capsys, *command, "--help")
    out = " ".join(capsys.readouterr().out.split())
    assert "address to bind" not in out and "only part of the default issuer http://HOST:PORT" in out
    assert "postgresql://USER:PASSWORD@HOST:5432/DB" in out
    for serving in ("serve", "facilitator"):
        with pytest.raises(SystemExit):
            run_cli(capsys, serving, "--help")
        assert "--host HOST address to bind" in " ".join(capsys.readouterr().out.split())
