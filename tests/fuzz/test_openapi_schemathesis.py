"""Schemathesis against a live ``authgate serve``: thousands of generated requests, built from the server's own
``/openapi.json``, must get no 5xx and only responses the document describes (status, content type, headers,
body schema). Found so far: 500s on repeated non-ASCII or newline form parameter names (fixed)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port

MIN_CASES = 2000
CHECKS = ",".join(["not_a_server_error", "status_code_conformance", "content_type_conformance",
                   "response_schema_conformance", "response_headers_conformance"])


def _schemathesis() -> str:
    found = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or shutil.which("schemathesis")
    if found is None:
        pytest.skip("schemathesis is not installed (pip install -e '.[dev]')")
    return found


@pytest.fixture
def live_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    port = free_port()
    env = {**os.environ, "AUTHGATE_REGISTRATION_RATE_LIMIT": "1000000", "AUTHGATE_LOG_LEVEL": "warning"}
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "authgate"), "serve", "--port", str(port),
                             "--data-dir", str(tmp_path / "data")], env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("server did not start: " + (tmp_path / "server.log").read_text(errors="replace"))
        time.sleep(0.1)
    try:
        yield base, tmp_path / "server.log"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_generated_requests_get_no_5xx_and_conform_to_the_document(live_server: tuple[str, Path]) -> None:
    base, server_log = live_server
    result = subprocess.run(
        [_schemathesis(), "run", f"{base}/openapi.json", "--checks", CHECKS, "--max-examples", "100",
         "--seed", os.environ.get("AUTHGATE_FUZZ_SEED", "20261203"), "--no-color"],
        capture_output=True, text=True, timeout=1200)
    output = result.stdout + result.stderr
    summary = re.search(r"(\d+) generated, (\d+) passed", output)
    assert result.returncode == 0, output[-6000:] + "\n--- server log ---\n" + server_log.read_text()[-4000:]
    assert summary is not None, output[-3000:]
    assert int(summary.group(1)) >= MIN_CASES, summary.group(0)
    assert "Traceback" not in server_log.read_text()
