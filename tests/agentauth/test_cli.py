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


def _enrolled(capsys: pytest.CaptureFixture[str], d: list[str]) -> list[str]:
    return [line.split("\t")[0] for line in run_cli(capsys, "agents", *d, "list")[1].splitlines()]


def test_enroll_key_out_never_overwrites_and_writes_only_once_enrolled(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    d = ["--data-dir", str(tmp_path), "--issuer", "https://authgate.test"]
    assert run_cli(capsys, "users", *d, "add", "alice", "--password-stdin", stdin="correct horse\n")[0] == 0
    key_file = tmp_path / "k.json"
    code, out, err = run_cli(capsys, "agents", *d, "enroll", "--owner", "alice", "--name", "bot12",
                             "--key-out", str(key_file))
    assert code == 0, err
    kept = key_file.read_bytes()
    jkt = run_cli(capsys, "agents", *d, "list")[1].split("\t")[2]
    from authgate.agent.agentauth import AgentKey

    assert AgentKey.load(key_file).jkt == jkt  # the file holds the enrolled key

    # Run again with the same file: refused before anything happens; bot12's private key is still there.
    code, out, err = run_cli(capsys, "agents", *d, "enroll", "--owner", "alice", "--name", "bot12",
                             "--key-out", str(key_file))
    assert (code, out) == (2, "") and err.startswith(f"authgate: --key-out {key_file} exists; refusing to overwrite")
    assert key_file.read_bytes() == kept
    code, out, err = run_cli(capsys, "agents", *d, "enroll", "--owner", "alice", "--name", "other",
                             "--key-out", str(key_file))
    assert code == 2 and key_file.read_bytes() == kept and _enrolled(capsys, d) == ["aauth:bot12@authgate.test"]

    # A refused enrolment writes no key file (nor leaves an empty one).
    fresh = tmp_path / "k2.json"
    code, out, err = run_cli(capsys, "agents", *d, "enroll", "--owner", "alice", "--name", "bot12",
                             "--key-out", str(fresh))
    assert code == 1 and "an agent with that name exists" in err and not fresh.exists()

    # A symbolic link is not followed, even a dangling one: the target is never created.
    link = tmp_path / "link.json"
    link.symlink_to(tmp_path / "target.json")
    code, _, err = run_cli(capsys, "agents", *d, "enroll", "--owner", "alice", "--name", "linked",
                           "--key-out", str(link))
    assert code == 2 and "exists; refusing" in err and not (tmp_path / "target.json").exists()

    # A place the file cannot be created: refused before enrolling, nothing enrolled.
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    code, _, err = run_cli(capsys, "agents", *d, "enroll", "--owner", "alice", "--name", "nowhere",
                           "--key-out", str(blocker / "k.json"))
    assert code == 2 and err.startswith(f"authgate: cannot create --key-out {blocker / 'k.json'}")
    assert _enrolled(capsys, d) == ["aauth:bot12@authgate.test"]

    # New directories are made; the file is 0600 from the start.
    nested = tmp_path / "keys" / "sub" / "k3.json"
    assert run_cli(capsys, "agents", *d, "enroll", "--owner", "alice", "--name", "nested",
                   "--key-out", str(nested))[0] == 0
    assert stat.S_IMODE(os.stat(nested).st_mode) == 0o600 and "d" in json.loads(nested.read_text())


@pytest.mark.parametrize(("args", "message"), [
    (("--jwk", "not json"), "authgate: --jwk is not a JSON public key: Expecting value"),
    (("--jwk", "[]"), "authgate: the agent's key must be a JSON object (a public JWK)"),
    (("--jwk-file", "/nonexistent/jwk.json"), "authgate: cannot read --jwk-file /nonexistent/jwk.json: No such file"),
    (("--jwk-file", "{tmp}"), "authgate: cannot read --jwk-file {tmp}: Is a directory"),
    (("--jwk-file", "{tmp}/bad.json"), "authgate: --jwk-file {tmp}/bad.json is not a JSON public key"),
    (("--jwk-file", "{tmp}/latin1.json"), "authgate: --jwk-file {tmp}/latin1.json is not a JSON public key"),
    ((), "authgate: give one of --jwk, --jwk-file or --key-out"),
    (("--jwk", "{}", "--key-out", "{tmp}/k.json"), "authgate: give one of --jwk, --jwk-file or --key-out"),
])
def test_enroll_bad_key_input_is_a_clear_refusal(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 args: tuple[str, ...], message: str) -> None:
    d = ["--data-dir", str(tmp_path)]
    assert run_cli(capsys, "users", *d, "add", "alice", "--password-stdin", stdin="correct horse\n")[0] == 0
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "latin1.json").write_bytes(b'{"kty": "OKP", "x": "\xe9"}')
    args = tuple(a.replace("{tmp}", str(tmp_path)) for a in args)
    code, out, err = run_cli(capsys, "agents", *d, "enroll", "--owner", "alice", "--name", "b", *args)
    assert (code, out) == (2, "") and err.startswith(message.replace("{tmp}", str(tmp_path))), err
    assert err.count("\n") == 1 and not (tmp_path / "k.json").exists()
    assert _enrolled(capsys, d) == []


def test_enroll_key_out_that_cannot_be_written_revokes_the_agent(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """If the key cannot be written after the enrolment (disk full), the agent is revoked again: nobody holds its
    private key, so an active identifier for it would only be a liability."""
    import errno

    from authgate.agentauth import cli as agents_cli

    def disk_full(fd: int, data: bytes) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(agents_cli, "_write_all", disk_full)
    d = ["--data-dir", str(tmp_path), "--issuer", "https://authgate.test"]
    assert run_cli(capsys, "users", *d, "add", "alice", "--password-stdin", stdin="correct horse\n")[0] == 0
    key_file = tmp_path / "k.json"
    code, out, err = run_cli(capsys, "agents", *d, "enroll", "--owner", "alice", "--name", "full",
                             "--key-out", str(key_file))
    assert (code, out) == (1, "") and "No space left on device" in err and "was revoked again" in err
    assert not key_file.exists()
    assert "revoked at" in run_cli(capsys, "agents", *d, "list")[1]
