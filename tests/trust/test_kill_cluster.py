"""Kill switch across processes: two ``authgate serve`` processes share one PostgreSQL database; a kill made by
the CLI (a third process) is effective on the very next request on both, and so is the revive."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

from tests.scale.cluster import Cluster, fresh_database, server_env

CLIENT = {"client_name": "killable", "grant_types": ["client_credentials"], "redirect_uris": [],
          "response_types": [], "token_endpoint_auth_method": "client_secret_basic", "scope": "read"}


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "authgate.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_kill_and_revive_take_effect_on_the_next_request_on_both(tmp_path: Path) -> None:
    with fresh_database() as database:
        env = server_env(tmp_path, database, issuer="http://127.0.0.1:9000")  # one issuer for both processes
        cluster = Cluster(env, 2)
        cluster.start()
        try:
            info = json.loads(_cli(env, "clients", "add", json.dumps(CLIENT)))
            auth = (info["client_id"], info["client_secret"])

            def token(url: str) -> httpx.Response:
                return httpx.post(url + "/token", data={"grant_type": "client_credentials", "scope": "read"},
                                  auth=auth, timeout=30)

            def active(url: str, tok: str) -> bool:
                res = httpx.post(url + "/introspect", data={"token": tok}, auth=auth, timeout=30)
                return bool(res.json().get("active"))

            tokens = []
            for url in cluster.urls:  # both processes issue, and cache the (empty) kill list
                res = token(url)
                assert res.status_code == 200, res.text
                tokens.append(res.json()["access_token"])
            for url in cluster.urls:
                assert [active(url, tok) for tok in tokens] == [True, True]

            _cli(env, "kill", "client", info["client_id"], "--reason", "compromised")
            for url in cluster.urls:
                refused = token(url)
                assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant", refused.text
            for url in cluster.urls:
                for tok in tokens:
                    assert not active(url, tok)

            _cli(env, "revive", "client", info["client_id"])
            for url in cluster.urls:
                assert token(url).status_code == 200
                assert [active(url, tok) for tok in tokens] == [True, True]
            events = _cli(env, "audit", "--limit", "200")
            assert "trust.killed" in events and "trust.revived" in events
        finally:
            outputs = cluster.stop()
        assert not any("Traceback" in out for out in outputs), outputs
