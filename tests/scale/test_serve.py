"""``authgate serve --workers N`` and graceful shutdown: a request in flight when SIGTERM arrives is finished
(and its effect stored) before the process exits; new connections are no longer accepted meanwhile."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import httpx

from tests.helpers import REDIRECT
from tests.scale.cluster import Cluster, server_env

REGISTRATION = {"client_name": "slow", "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none"}


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def test_workers_serve_on_one_port_and_stop_cleanly(tmp_path: Path) -> None:
    env = server_env(tmp_path, f"sqlite:///{tmp_path / 'authgate.db'}")
    cluster = Cluster(env, 1, extra_args=("--workers", "2"))
    cluster.start()
    try:
        deadline = time.monotonic() + 60
        while len(_children(cluster.procs[0].pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        workers = _children(cluster.procs[0].pid)
        assert len(workers) >= 2, workers  # the workers (uvicorn may add a resource tracker)
        codes = [httpx.post(cluster.urls[0] + "/register", json=REGISTRATION, timeout=30).status_code
                 for _ in range(6)]
        assert codes == [201] * 6
    finally:
        outputs = cluster.stop()
    assert cluster.procs[0].returncode == 0, outputs
    assert not any("Traceback" in out for out in outputs), outputs
    assert "with 2 workers" in outputs[0]


def test_request_in_flight_at_sigterm_is_finished(tmp_path: Path) -> None:
    env = server_env(tmp_path, f"sqlite:///{tmp_path / 'authgate.db'}", shutdown_timeout="30")
    cluster = Cluster(env, 1)
    cluster.start()
    port = cluster.ports[0]
    body = json.dumps(REGISTRATION).encode()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"POST /register HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n"
                         + body[:10])
            cluster.procs[0].send_signal(signal.SIGTERM)
            # Wait until the server has stopped listening: it is shutting down, with our request in flight.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                except OSError:
                    break
                time.sleep(0.1)
            else:
                raise AssertionError("server kept accepting connections after SIGTERM")
            sock.sendall(body[10:])
            response = b""
            while chunk := sock.recv(65536):
                response += chunk
    finally:
        outputs = cluster.stop()
    head, _, payload = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 201"), response[:300]
    client_id = json.loads(payload)["client_id"]
    assert not any("Traceback" in out for out in outputs), outputs
    # It was stored, not just answered: a new server over the same database knows the client.
    again = Cluster(env, 1)
    again.start()
    try:
        token = json.loads(payload)["registration_access_token"]
        read = httpx.get(again.urls[0] + f"/register/{client_id}", headers={"Authorization": f"Bearer {token}"},
                         timeout=30)
        assert read.status_code == 200 and read.json()["client_name"] == "slow"
    finally:
        again.stop()


def test_deployment_doc_settings_load(tmp_path: Path) -> None:
    """docs/deployment.md's settings block is a valid configuration as written."""
    import re

    from authgate.config import load_settings

    doc = (Path(__file__).resolve().parents[2] / "docs" / "deployment.md").read_text()
    match = re.search(r"```toml\n(.*?)```", doc, re.S)
    assert match
    path = tmp_path / "authgate.toml"
    path.write_text(match.group(1))
    settings = load_settings(path, env={})
    assert settings.workers == 2 and settings.redis_url and settings.database_url.startswith("postgresql://")
