"""``authgate gateway``: ``--check`` on good and bad files, and the real command serving in front of an upstream."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from authgate.cli import main
from tests.servers import free_port, serve

FILE = """
[gateway]
upstream = "{upstream}"
public_url = "http://127.0.0.1:{port}"
identity = "plain"

[oauth]
issuer = "https://as.example"

[[routes]]
path = "/public/*"
  [[routes.allow]]
  mechanism = "public"

[[routes]]
path = "/private"
  [[routes.allow]]
  mechanism = "oauth"
  scopes = ["{scope}"]
"""


def test_check_accepts_a_good_file_and_names_the_error_in_a_bad_one(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "gw.toml"
    good.write_text(FILE.format(upstream="http://127.0.0.1:1", port=8080, scope="notes:read"))
    assert main(["gateway", "--config", str(good), "--check"]) == 0
    assert capsys.readouterr().out == f"{good}: ok (2 routes; oauth, public; upstream http://127.0.0.1:1)\n"
    bad = tmp_path / "bad.toml"
    bad.write_text(FILE.format(upstream="http://127.0.0.1:1", port=8080, scope="notes read"))
    assert main(["gateway", "--config", str(bad), "--check"]) == 2
    assert capsys.readouterr().err == (f"authgate gateway: {bad}: routes[1] (* /private): allow[0] (oauth): scopes: "
                                       "invalid scope token: 'notes read'\n")


async def test_the_command_proxies_to_the_upstream(tmp_path: Path) -> None:
    async def hello(request: Request) -> JSONResponse:
        return JSONResponse({"path": request.url.path, "mechanism": request.headers.get("x-authgate-mechanism"),
                             "authorization": request.headers.get("authorization")})

    up_port, gw_port = free_port(), free_port()
    path = tmp_path / "gw.toml"
    path.write_text(FILE.format(upstream=f"http://127.0.0.1:{up_port}", port=gw_port, scope="notes:read"))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "authgate.cli", "gateway", "--config", str(path), "--port", str(gw_port),
        "--log-level", "warning", stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        async with serve(Starlette(routes=[Route("/{p:path}", hello)]), up_port):
            assert process.stdout is not None
            banner = await asyncio.wait_for(process.stdout.readline(), 30)
            assert banner.decode().startswith(f"authgate gateway on http://127.0.0.1:{gw_port}")
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw_port}") as http:
                for _ in range(100):
                    try:
                        r = await http.get("/public/a", headers={"Authorization": "Bearer x"})
                        break
                    except httpx.ConnectError:
                        await asyncio.sleep(0.1)
                private = await http.get("/private")
    finally:
        process.terminate()
        await process.wait()
    assert r.status_code == 200 and r.json() == {"path": "/public/a", "mechanism": "public", "authorization": None}
    assert private.status_code == 401 and private.headers["www-authenticate"].startswith("Bearer resource_metadata=")


def guide_file(key_dir: Path) -> str:
    """The complete file of docs/gateway.md, and the resource key it names written to ``key_dir``."""
    import json

    from joserfc.jwk import OKPKey

    guide = (Path(__file__).resolve().parents[2] / "docs" / "gateway.md").read_text(encoding="utf-8")
    key = OKPKey.generate_key("Ed25519", private=True)
    (key_dir / "resource-key.json").write_text(json.dumps(key.as_dict(private=True)))
    return guide.split("<!-- gateway-file -->\n```toml\n", 1)[1].split("\n```", 1)[0]


def guide_env() -> dict[str, str]:
    """The variables the guide's quick start tells the reader to ``export``, each made by running its own command
    line from the guide in bash (``python`` being this interpreter): exactly those, nothing else."""
    import re
    import subprocess
    import tempfile

    guide = (Path(__file__).resolve().parents[2] / "docs" / "gateway.md").read_text(encoding="utf-8")
    quick_start = guide.split("## Quick start\n", 1)[1].split("\n## ", 1)[0]
    script = quick_start.split("```bash\n", 1)[1].split("\n```", 1)[0]
    exports = [line for line in script.splitlines() if line.startswith("export ")]
    names = re.findall(r"^export ([A-Z0-9_]+)=", "\n".join(exports), re.MULTILINE)
    shown = "; ".join(f'printf "%s\\0" "${name}"' for name in names)
    with tempfile.TemporaryDirectory() as bin_dir:
        (Path(bin_dir) / "python").symlink_to(sys.executable)
        out = subprocess.run(["bash", "-c", "set -eu; " + "; ".join(exports) + "; " + shown], capture_output=True,
                             text=True, timeout=60, check=True, env={"PATH": f"{bin_dir}:{os.environ['PATH']}"})
    values = out.stdout.split("\0")[:-1]
    assert len(names) == len(exports) == len(values) and all(values), (exports, out.stdout, out.stderr)
    return dict(zip(names, values, strict=True))


def test_the_guide_exports_the_secrets_its_file_names() -> None:
    env = guide_env()
    assert set(env) == {"AUTHGATE_GATEWAY_SECRET", "AUTHGATE_METRICS_TOKEN"}
    assert len(set(env.values())) == 2 and all(len(v) == 64 for v in env.values())


def test_the_guides_quick_start_check_passes_with_the_variables_it_sets(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """`authgate gateway --config gateway.toml --check` as the quick start runs it: the guide's file, and in the
    environment only what the quick start exports (it once left out AUTHGATE_METRICS_TOKEN, and the check
    stopped with "metrics_token_env: $AUTHGATE_METRICS_TOKEN is not set")."""
    path = tmp_path / "gateway.toml"
    path.write_text(guide_file(tmp_path))
    for name in list(os.environ):
        if name.startswith("AUTHGATE_"):
            monkeypatch.delenv(name)
    for name, value in guide_env().items():
        monkeypatch.setenv(name, value)
    assert main(["gateway", "--config", str(path), "--check"]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.startswith(f"{path}: ok (6 routes; ")


async def test_the_file_in_the_gateway_guide_is_valid_and_builds(tmp_path: Path) -> None:
    import tomllib

    from authgate.gateway import build_gateway, gateway_config_from_dict

    text = guide_file(tmp_path)
    config = gateway_config_from_dict(tomllib.loads(text), source="guide", env=guide_env(), base_dir=tmp_path)
    assert [r.label for r in config.policy.routes] == [
        "* /health", "GET /v1/forecast/*", "GET /v1/live", "DELETE,POST /v1/alerts/*", "GET /v1/account/*",
        "* /v1/account/*"]
    assert config.policy.mechanisms() == frozenset({"public", "oauth", "agentauth", "x402", "aauth"})
    assert config.operations.upstream_ready_path == "/health" and config.operations.metrics_token_sha256
    app = build_gateway(config)
    await app.aclose()


def test_the_overhead_benchmark_answers_help_and_refuses_bad_arguments() -> None:
    """``benchmarks/gateway_overhead.py --help`` prints its usage (it once crashed parsing ``--help`` as a
    number), and a wrong argument is a usage error, not a traceback."""
    import subprocess

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "gateway_overhead.py"
    ok = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "usage: gateway_overhead.py" in ok.stdout and "per_round" in ok.stdout
    bad = subprocess.run([sys.executable, str(script), "many"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "invalid int value: 'many'" in bad.stderr and "Traceback" not in bad.stderr


LEVELS = "critical, error, warning, info, debug"


@pytest.mark.parametrize(("argv", "env", "message"), [
    (["--log-level", "loud"], {}, f"--log-level (or AUTHGATE_LOG_LEVEL) must be one of {LEVELS}, got 'loud'"),
    ([], {"AUTHGATE_LOG_LEVEL": "loud"}, f"--log-level (or AUTHGATE_LOG_LEVEL) must be one of {LEVELS}, got 'loud'"),
    # uvicorn's "trace" logs whole request bodies, credentials included: `authgate serve` refuses it too
    (["--log-level", "trace"], {}, f"--log-level (or AUTHGATE_LOG_LEVEL) must be one of {LEVELS}, got 'trace'"),
    ([], {"AUTHGATE_LOG_FORMAT": "xml"}, "--log-format (or AUTHGATE_LOG_FORMAT) must be text or json, got 'xml'"),
    (["--shutdown-timeout", "-5"], {}, "--shutdown-timeout must be a finite number of seconds, 0 or more, got -5"),
    (["--shutdown-timeout", "nan"], {}, "--shutdown-timeout must be a finite number of seconds, 0 or more, got nan"),
    (["--shutdown-timeout", "inf"], {}, "--shutdown-timeout must be a finite number of seconds, 0 or more, got inf"),
], ids=["level", "level-env", "level-trace", "format-env", "timeout-negative", "timeout-nan", "timeout-inf"])
def test_bad_log_level_log_format_and_shutdown_timeout_are_usage_errors(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, argv: list[str],
        env: dict[str, str], message: str) -> None:
    """One line and status 2, as `authgate serve` refuses them (a bad level once crashed inside uvicorn with
    KeyError: 'loud'; AUTHGATE_LOG_FORMAT=xml once fell back to text; a negative timeout was taken as 0)."""
    path = tmp_path / "gw.toml"
    path.write_text(FILE.format(upstream="http://127.0.0.1:1", port=8080, scope="notes:read"))
    for name in ("AUTHGATE_LOG_LEVEL", "AUTHGATE_LOG_FORMAT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert main(["gateway", "--config", str(path), "--port", "24903", *argv, "--check"]) == 2
    assert capsys.readouterr() == ("", f"authgate gateway: {message}\n")


def test_a_bad_log_level_is_refused_before_the_server_starts_and_good_ones_in_any_case_are_taken(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(FILE.format(upstream="http://127.0.0.1:1", port=8080, scope="notes:read"))
    monkeypatch.delenv("AUTHGATE_LOG_FORMAT", raising=False)
    assert main(["gateway", "--config", str(path), "--port", "24903", "--log-level", "loud"]) == 2
    assert capsys.readouterr() == ("", f"authgate gateway: --log-level (or AUTHGATE_LOG_LEVEL) must be one of "
                                       f"{LEVELS}, got 'loud'\n")
    monkeypatch.setenv("AUTHGATE_LOG_LEVEL", "WARNING")  # any case, as `authgate serve` takes it
    monkeypatch.setenv("AUTHGATE_LOG_FORMAT", "xml")  # the command line's value is the one used
    assert main(["gateway", "--config", str(path), "--log-format", "json", "--shutdown-timeout", "0",
                 "--check"]) == 0, capsys.readouterr().err


def test_a_misspelled_section_is_named_by_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``[gatway]`` once said "[gateway]: required" without naming the section that was there instead."""
    path = tmp_path / "gw.toml"
    path.write_text(FILE.format(upstream="http://127.0.0.1:1", port=8080, scope="notes:read").replace(
        "[gateway]", "[gatway]"))
    assert main(["gateway", "--config", str(path), "--check"]) == 2
    assert capsys.readouterr().err == (
        f"authgate gateway: {path}: unknown section 'gatway' (did you mean 'gateway'? expected agentauth, gateway, "
        "oauth, operations, routes, scope_descriptions, token_exchange, trust, unmatched, x402)\n")
