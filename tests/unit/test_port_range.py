"""Ports are 1..65535 wherever they are given: the settings (file, environment, ``--port`` of ``serve`` and
``facilitator``) and ``authgate gateway``'s own ``--port`` / ``AUTHGATE_GATEWAY_PORT``. Out of range, the event
loop could wrap 70000 to 4464 while the issuer still said :70000; nothing supports port 0 (an ephemeral port the
issuer could not name)."""

from __future__ import annotations

import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

import authgate.cli
from authgate.cli import main
from authgate.config import ConfigError, load_settings

GATEWAY_FILE = """
[gateway]
upstream = "http://127.0.0.1:1"
public_url = "http://127.0.0.1:8080"
identity = "plain"

[[routes]]
path = "/public/*"
  [[routes.allow]]
  mechanism = "public"
"""


@pytest.mark.parametrize("port", [0, -1, 65536, 70000])
def test_settings_refuse_a_port_out_of_range(tmp_path: Path, port: int) -> None:
    message = f"port must be between 1 and 65535, got {port}"
    with pytest.raises(ConfigError, match=message):
        load_settings(env={}, port=port)
    with pytest.raises(ConfigError, match=message):
        load_settings(env={"AUTHGATE_PORT": str(port)})
    cfg = tmp_path / "authgate.toml"
    cfg.write_text(f"port = {port}\n")
    with pytest.raises(ConfigError, match=message):
        load_settings(cfg, env={})
    with pytest.raises(ConfigError, match=f"smtp_port must be between 1 and 65535, got {port}"):
        load_settings(env={}, smtp_port=port)


def test_settings_accept_the_ends_of_the_range() -> None:
    assert load_settings(env={}, port=1).issuer_url == "http://127.0.0.1:1"
    assert load_settings(env={}, port=65535, smtp_port=65535).issuer_url == "http://127.0.0.1:65535"


@pytest.fixture
def no_serving(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace the serving loop (and the logging set-up) of ``serve`` and ``facilitator``: a command that gets that
    far is recorded as started instead of listening."""
    started: list[str] = []

    def run_server(coro: Coroutine[Any, Any, Any]) -> None:
        coro.close()
        started.append("started")

    monkeypatch.setattr(authgate.cli, "run_server", run_server)
    monkeypatch.setattr(authgate.cli, "configure_logging", lambda *a, **k: None)
    for name in list(os.environ):
        if name.startswith("AUTHGATE_"):
            monkeypatch.delenv(name)
    return started


@pytest.mark.parametrize("command", ["serve", "facilitator"])
@pytest.mark.parametrize("port", ["70000", "-1", "0"])
def test_serve_and_facilitator_refuse_a_bad_port_before_starting(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], no_serving: list[str], command: str, port: str) -> None:
    assert main([command, "--data-dir", str(tmp_path), "--port", port]) == 2
    assert capsys.readouterr().err == (f"authgate: configuration error: port must be between 1 and 65535, "
                                       f"got {port}\n")
    assert no_serving == []
    assert main([command, "--data-dir", str(tmp_path), "--port", "8123"]) == 0  # the same command, a good port
    assert no_serving == ["started"]


def test_serve_refuses_a_bad_port_from_the_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       no_serving: list[str]) -> None:
    cfg = tmp_path / "authgate.toml"
    cfg.write_text("port = 70000\n")
    assert main(["serve", "--config", str(cfg), "--data-dir", str(tmp_path)]) == 2
    assert "port must be between 1 and 65535, got 70000" in capsys.readouterr().err
    assert no_serving == []


@pytest.mark.parametrize("port", ["70000", "-1", "0"])
def test_gateway_refuses_a_bad_port(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch, port: str) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(GATEWAY_FILE)
    monkeypatch.delenv("AUTHGATE_GATEWAY_PORT", raising=False)
    assert main(["gateway", "--config", str(path), "--port", port, "--check"]) == 2
    assert capsys.readouterr().err == (f"authgate gateway: --port (or AUTHGATE_GATEWAY_PORT) must be between 1 and "
                                       f"65535, got {port}\n")
    monkeypatch.setenv("AUTHGATE_GATEWAY_PORT", port)
    assert main(["gateway", "--config", str(path), "--check"]) == 2
    assert f"got {port}" in capsys.readouterr().err
    assert main(["gateway", "--config", str(path), "--port", "8080", "--check"]) == 0  # a good flag wins
    assert capsys.readouterr().out.startswith(f"{path}: ok")


def test_a_malformed_gateway_port_variable_is_a_usage_error_of_the_gateway_only(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """It used to be read with int() while every command's parser was built: a traceback for any command."""
    path = tmp_path / "gw.toml"
    path.write_text(GATEWAY_FILE)
    monkeypatch.setenv("AUTHGATE_GATEWAY_PORT", "eighty")
    with pytest.raises(SystemExit) as exit_:
        main(["gateway", "--config", str(path), "--check"])
    assert exit_.value.code == 2
    assert "argument --port: invalid int value: 'eighty'" in capsys.readouterr().err
    assert main(["gateway", "--config", str(path), "--port", "8080", "--check"]) == 0


@pytest.mark.parametrize("port", ["70000", "-1", "0"])
def test_devchain_refuses_a_bad_port_before_starting(capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch, port: str) -> None:
    import authgate.x402.chain.devchain as devchain

    started: list[int] = []

    async def serve(host: str, port: int, *args: object, **kwargs: object) -> None:
        started.append(port)

    monkeypatch.setattr(devchain, "serve", serve)
    assert main(["devchain", "--port", port]) == 2
    assert capsys.readouterr().err == f"authgate devchain: --port must be between 1 and 65535, got {port}\n"
    assert main(["devchain", "--port", "8545"]) == 0 and started == [8545]
