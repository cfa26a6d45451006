"""``authgate budgets|mandates|attestations``: set/list/remove budgets, issue/list/revoke mandates, issue
attestations — each verifiable with the server's own key — and bad input refused with a clear message and a
non-zero exit, writing nothing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from authgate.clock import SystemClock
from authgate.crypto.keys import KeyRing
from authgate.store import Store
from authgate.trust.attestations import Requirement, check_attestations
from authgate.trust.issuers import TrustedIssuers
from authgate.trust.mandates import MandateVerifier
from authgate.trust.store import TrustStore
from tests.helpers import run_cli

PAYER = "0x" + "Ab" * 20
PAYEE = "0x" + "22" * 20
ISSUER = "http://127.0.0.1:8000"  # the CLI's default issuer


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Any:
    def run(*args: str, stdin: str = "") -> tuple[int, str, str]:
        return run_cli(capsys, *args, "--data-dir", str(tmp_path), stdin=stdin)

    assert run("users", "add", "alice", "--password-stdin", stdin="correct horse\n")[0] == 0
    return run


def _read(tmp_path: Path, work: Any) -> Any:
    async def go() -> Any:
        store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'authgate.db'}")
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(go())


def _events(tmp_path: Path, prefix: str) -> list[tuple[str, str | None, dict[str, Any]]]:
    async def work(store: Store) -> list[tuple[str, str | None, dict[str, Any]]]:
        return [(e["event"], e["subject"], e["detail"]) for e in reversed(await store.audit_events(limit=100))
                if e["event"].startswith(prefix)]

    return list(_read(tmp_path, work))


def test_budgets_set_list_remove(cli: Any, tmp_path: Path) -> None:
    code, out, _ = cli("budgets", "set", PAYER, "--per-request", "50000", "--per-day", "1000000",
                       "--per-payee-day", "500000", "--approver", "alice")
    assert code == 0
    budget = json.loads(out)
    assert budget["agent"] == PAYER.lower()  # payer addresses are keyed lower-case, as payments are
    assert (budget["per_request"], budget["per_day"], budget["per_payee_day"]) == (50000, 1000000, 500000)
    assert budget["approver"].startswith("u_")  # the user's subject, not the name
    code, out, _ = cli("budgets", "set", "client-1", "--per-day", "7")
    assert code == 0 and json.loads(out)["approver"] is None and json.loads(out)["per_request"] is None
    code, out, _ = cli("budgets", "set", "client-1", "--per-request", "3")  # replaces the whole budget
    assert json.loads(out)["per_day"] is None
    code, out, _ = cli("budgets", "list")
    assert code == 0 and [b["agent"] for b in json.loads(out)] == [PAYER.lower(), "client-1"]
    assert cli("budgets", "remove", PAYER)[0] == 0  # any spelling of the address
    code, out, _ = cli("budgets", "list")
    assert [b["agent"] for b in json.loads(out)] == ["client-1"]
    assert [e[0] for e in _events(tmp_path, "trust.budget")] == [
        "trust.budget_set", "trust.budget_set", "trust.budget_set", "trust.budget_deleted"]


@pytest.mark.parametrize(("args", "code", "message"), [
    (("set", "a", "--per-day", "-5"), 2, "refused: a limit must be between 0 and 2**63-1 atomic units"),
    (("set", "a", "--per-request", str(2**63)), 2, "refused: a limit must be between 0 and 2**63-1"),
    (("set", "a" * 301, "--per-day", "5"), 2, "refused: agent: 1 to 300 characters"),
    (("set", "a", "--per-day", "5", "--approver", "nobody"), 1, "no user 'nobody'"),
    (("remove", "never-set"), 1, "no budget for 'never-set'"),
])
def test_budgets_bad_input(cli: Any, tmp_path: Path, args: tuple[str, ...], code: int, message: str) -> None:
    got, out, err = cli("budgets", *args)
    assert (got, out) == (code, "") and message in err
    assert json.loads(cli("budgets", "list")[1]) == []


def test_budgets_argument_errors_exit_2(cli: Any, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli("budgets", "set", "a", "--per-day", "lots")
    assert exited.value.code == 2 and "--per-day: invalid int value: 'lots'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        cli("budgets", "frobnicate")
    assert exited.value.code == 2 and "invalid choice: 'frobnicate'" in capsys.readouterr().err


def test_mandates_issue_list_revoke(cli: Any, tmp_path: Path) -> None:
    code, out, _ = cli("mandates", "issue", "--user", "alice", "--agent", PAYER, "--route", "GET /api/*",
                       "--route", "POST /api/buy", "--payee", PAYEE, "--cap", "1000000", "--period", "week",
                       "--ttl", "3600")
    assert code == 0
    issued = json.loads(out)
    token, jti = issued["mandate"], issued["jti"]

    async def verify(store: Store) -> Any:
        jwks = await KeyRing(store, SystemClock()).jwks()
        verifier = MandateVerifier(TrustedIssuers({ISSUER: jwks}))
        return await verifier.authorize_payment(token, agent=[PAYER], method="GET", path="/api/q3", payee=PAYEE,
                                                amount=1000, asset=None, now=int(SystemClock().now()))

    mandate = _read(tmp_path, verify)
    assert mandate.jti == jti and mandate.terms.cap_period == "week" and mandate.terms.cap_amount == 1_000_000
    assert mandate.terms.routes == ("GET /api/*", "POST /api/buy")

    code, out, _ = cli("mandates", "list", "--user", "alice")
    (listed,) = json.loads(out)
    assert (listed["jti"], listed["agent"], listed["revoked_at"]) == (jti, PAYER, None)
    assert listed["expires_at"] - listed["issued_at"] == 3600
    assert json.loads(cli("mandates", "list")[1])[0]["jti"] == jti
    code, out, _ = cli("mandates", "revoke", jti)
    assert code == 0
    assert json.loads(cli("mandates", "list")[1])[0]["revoked_at"] is not None
    code, _, err = cli("mandates", "revoke", jti)
    assert code == 1 and "already revoked" in err

    async def revoked(store: Store) -> bool:
        return jti in await TrustStore(store).revoked_mandates()

    assert _read(tmp_path, revoked)
    assert [e[0] for e in _events(tmp_path, "trust.mandate")] == ["trust.mandate_issued", "trust.mandate_revoked"]


@pytest.mark.parametrize(("change", "code", "message"), [
    ({"--user": "nobody"}, 1, "no user 'nobody'"),
    ({"--route": "api/*"}, 2, "refused: route 'api/*': expected 'METHOD /path' or '/path'"),
    ({"--route": "FETCH /api"}, 2, "expected 'METHOD /path' or '/path'"),
    ({"--payee": "bob"}, 2, "refused: 'bob' is not a 0x address (40 hex digits)"),
    ({"--asset": "0x123"}, 2, "'0x123' is not a 0x address"),
    ({"--cap": "0"}, 2, "refused: cap amount must be a positive integer of atomic units"),
    ({"--ttl": str(31 * 86400)}, 2, "refused: --ttl: 60 to 2592000 seconds (30 days)"),
    ({"--ttl": "10"}, 2, "--ttl: 60 to"),
    ({"--ttl": "-5"}, 2, "--ttl: 60 to"),  # would be an already expired mandate
    ({"--ttl": "0"}, 2, "--ttl: 60 to"),
    ({"--agent": "a" * 301}, 2, "refused: agent id: 1 to 300 characters"),
])
def test_mandates_bad_input(cli: Any, change: dict[str, str], code: int, message: str) -> None:
    options = {"--user": "alice", "--agent": PAYER, "--route": "GET /api/*", "--payee": PAYEE, "--cap": "100",
               **change}
    got, out, err = cli("mandates", "issue", *[part for pair in options.items() for part in pair])
    assert (got, out) == (code, "") and message in err
    assert json.loads(cli("mandates", "list")[1]) == []  # nothing issued


def test_mandates_other_bad_input(cli: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli("mandates", "list", "--user", "nobody")
    assert code == 1 and "no user 'nobody'" in err
    code, _, err = cli("mandates", "revoke", "no-such-jti")
    assert code == 1 and "no active mandate 'no-such-jti'" in err
    with pytest.raises(SystemExit) as exited:  # required options
        cli("mandates", "issue", "--user", "alice", "--agent", PAYER)
    assert exited.value.code == 2 and "the following arguments are required: --route, --payee, --cap" in \
        capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        cli("mandates", "issue", "--user", "alice", "--agent", PAYER, "--route", "/a", "--payee", PAYEE,
            "--cap", "5", "--period", "fortnight")
    assert exited.value.code == 2 and "invalid choice: 'fortnight'" in capsys.readouterr().err


def test_attestations_issue(cli: Any, tmp_path: Path) -> None:
    code, out, _ = cli("attestations", "issue", "--agent", PAYER, "--claim", "kyc=passed", "--claim",
                       "verified_adult=true", "--claim", "min_age=21", "--claim", "zip=02139", "--ttl", "600")
    assert code == 0
    token = out.strip()

    async def check(store: Store) -> Any:
        issuers = TrustedIssuers({ISSUER: await KeyRing(store, SystemClock()).jwks()})
        now = int(SystemClock().now())
        # JSON types as route policies compare them: a boolean, an integer, strings (leading zero kept)
        requirement = Requirement({"kyc": "passed", "verified_adult": True, "min_age": 21, "zip": "02139"})
        return check_attestations([token], requirement, agent=[PAYER.lower()], issuers=issuers, now=now)

    _read(tmp_path, check)  # raises TrustError if not satisfied


@pytest.mark.parametrize(("args", "message"), [
    ((), "refused: give at least one --claim name=value"),
    (("--claim", "kyc"), "refused: --claim 'kyc': expected name=value"),
    (("--claim", "=passed"), "expected name=value, the name 1 to 64 letters"),
    (("--claim", "bad name=1"), "expected name=value"),
    (("--claim", "a=1", "--claim", "a=2"), "refused: --claim 'a' given twice"),
    (("--claim", "a=1", "--ttl", "5"), "refused: --ttl: 60 to 31536000 seconds (a year)"),
    (("--claim", "a=1", "--ttl", "-1"), "refused: --ttl: 60 to 31536000 seconds (a year)"),
    (("--claim", "a=1", "--ttl", str(366 * 86400)), "refused: --ttl: 60 to 31536000 seconds (a year)"),
])
def test_attestations_bad_input(cli: Any, args: tuple[str, ...], message: str) -> None:
    code, out, err = cli("attestations", "issue", "--agent", PAYER, *args)
    assert (code, out) == (2, "") and message in err


@pytest.mark.parametrize("command", ["budgets", "mandates", "payments"])
def test_common_options_before_the_action(tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    """``authgate budgets --data-dir D list`` works as ``clients --data-dir D list`` does (docs/server.md), and
    means the same as the options after the action."""
    d = ["--data-dir", str(tmp_path)]
    before = run_cli(capsys, command, *d, "list")
    after = run_cli(capsys, command, "list", *d)
    assert before[0] == 0 and before == after
    assert (tmp_path / "authgate.db").exists()
    config = tmp_path / "authgate.toml"
    config.write_text(f'data_dir = "{tmp_path / "other"}"\n')
    assert run_cli(capsys, command, "--config", str(config), "list")[0] == 0
    assert (tmp_path / "other" / "authgate.db").exists()


def test_attestations_common_options_before_the_action(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "attestations", "--data-dir", str(tmp_path), "issue", "--agent", PAYER,
                             "--claim", "kyc=passed")
    assert code == 0 and out.count(".") == 2, err
    assert (tmp_path / "authgate.db").exists()


@pytest.mark.parametrize("command", ["budgets", "mandates", "attestations", "payments", "clients", "kill"])
def test_top_level_help_lists_the_common_options(capsys: pytest.CaptureFixture[str], command: str) -> None:
    with pytest.raises(SystemExit) as exited:
        run_cli(capsys, command, "--help")
    out = capsys.readouterr().out
    assert exited.value.code == 0
    for option in ("--config CONFIG", "--data-dir DATA_DIR", "--database-url DATABASE_URL"):
        assert option in out, (command, option)


def _kill_list(tmp_path: Path) -> list[tuple[str, str]]:
    async def work(store: Store) -> list[tuple[str, str]]:
        return [(k.kind, k.ident) for k in await TrustStore(store).kills()]

    return list(_read(tmp_path, work))


def test_kill_warns_about_ids_not_known_here_and_still_kills(cli: Any, tmp_path: Path) -> None:
    """A pre-emptive kill is allowed (another server's client or agent, a payer address not seen yet; the
    command's help says so), but an id not known here is named on stderr, so a typo does not pass silently."""
    code, out, err = cli("kill", "client", "nonexistent-client")
    assert code == 0 and out == "kill: client nonexistent-client\n"
    assert err == "warning: no client 'nonexistent-client' is registered here; killed anyway (pre-emptive kill)\n"
    code, out, err = cli("kill", "agent", "aauth:ghost@elsewhere.example")
    assert code == 0 and "warning: no agent 'aauth:ghost@elsewhere.example' is enrolled or registered here" in err
    subject = _read(tmp_path, lambda s: s.get_user_by_name("alice")).subject
    code, out, err = cli("kill", "user", "u_nobody")
    assert code == 0 and "warning: no user with subject 'u_nobody' is known here" in err
    assert _kill_list(tmp_path) == [("client", "nonexistent-client"), ("agent", "aauth:ghost@elsewhere.example"),
                                    ("user", "u_nobody")]
    # Known ids, a payer address and a client ID metadata document URL: no warning.
    for kind, ident in (("user", subject), ("agent", PAYER), ("client", "https://app.example/client.json")):
        code, out, err = cli("kill", kind, ident)
        assert (code, err) == (0, ""), (kind, ident, err)
    added = json.loads(cli("clients", "add", '{"client_name": "rs", "grant_types": ["client_credentials"]}')[1])
    for kind in ("client", "agent"):  # an OAuth client is also an agent the kill list knows
        code, out, err = cli("kill", kind, added["client_id"])
        assert (code, err) == (0, ""), (kind, err)


def test_kill_user_refuses_a_username(cli: Any, tmp_path: Path) -> None:
    """The kill list holds user subjects: ``kill user alice`` would never match anything, so it is refused with
    the subject to give."""
    subject = _read(tmp_path, lambda s: s.get_user_by_name("alice")).subject
    code, out, err = cli("kill", "user", "alice")
    assert (code, out) == (2, "")
    assert err == f"refused: 'alice' is a username; the kill switch takes the user's subject: authgate kill user " \
                  f"{subject}\n"
    assert _kill_list(tmp_path) == []


def test_kill_help_documents_pre_emptive_kills(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        run_cli(capsys, "kill", "--help")
    out = " ".join(capsys.readouterr().out.split())
    assert "is still killed, in advance, with a warning on stderr" in out and "a username is refused" in out
