"""``authgate agents``: enrol (generated key written 0600), list, reissue, consents, forget, revoke."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from tests.helpers import run_cli


def test_agents_cli_lifecycle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = ["--data-dir", str(tmp_path), "--issuer", "https://authgate.test"]
    assert run_cli(capsys, "users", *d, "add", "alice", "--password-stdin", stdin="correct horse\n")[0] == 0
    key_file = tmp_path / "agent-key.json"
    code, out, err = run_cli(capsys, "agents", *d, "enroll", "--owner", "alice", "--name", "notes-bot",
                             "--key-out", str(key_file))
    assert code == 0, err
    enrolled = json.loads(out)
    assert enrolled["agent_id"] == "aauth:notes-bot@authgate.test" and enrolled["agent_token"].count(".") == 2
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600 and "d" in json.loads(key_file.read_text())
    assert "\"d\"" not in out  # the private key is never printed
    code, out, _ = run_cli(capsys, "agents", *d, "enroll", "--owner", "alice", "--name", "notes-bot",
                           "--key-out", str(tmp_path / "k2.json"))
    assert code == 1  # the name is taken
    code, out, _ = run_cli(capsys, "agents", *d, "enroll", "--owner", "bob", "--name", "x", "--jwk", "{}")
    assert code == 1
    code, out, _ = run_cli(capsys, "agents", *d, "enroll", "--owner", "alice", "--name", "Bad Name",
                           "--key-out", str(tmp_path / "k3.json"))
    assert code == 1
    code, out, _ = run_cli(capsys, "agents", *d, "list")
    assert code == 0 and out.startswith("aauth:notes-bot@authgate.test\talice\t") and "active" in out
    code, out, _ = run_cli(capsys, "agents", *d, "token", "aauth:notes-bot@authgate.test")
    assert code == 0 and json.loads(out)["agent_token"] != enrolled["agent_token"]
    assert run_cli(capsys, "agents", *d, "consents", "alice")[0] == 0
    code, out, _ = run_cli(capsys, "agents", *d, "forget", "alice")
    assert code == 0 and "forgot 0" in out
    assert run_cli(capsys, "agents", *d, "revoke", "aauth:notes-bot@authgate.test")[0] == 0
    code, out, _ = run_cli(capsys, "agents", *d, "list")
    assert "revoked at" in out
    assert run_cli(capsys, "agents", *d, "token", "aauth:notes-bot@authgate.test")[0] == 1
    assert run_cli(capsys, "agents", *d, "revoke", "aauth:notes-bot@authgate.test")[0] == 1
