"""Kill switch across processes: two ``authgate serve`` processes share one PostgreSQL database; a kill made by
the CLI (a third process) is effective on the very next request on both, and so is the revive.

- a client: its token requests are refused and its tokens introspect inactive;
- an Agent Auth agent: its next signed request to the person server is refused (``revoked_jwt``), while another
  agent of the same person goes on;
- a user's delegation: the next signed request of the user's agent is refused, and so is the next use of the
  user's OAuth tokens (introspection says inactive, the refresh token is refused), while other people go on.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

import aauth
from authgate.config import to_sqlalchemy_url
from authgate.crypto.hashing import hash_password
from authgate.store import Store
from authgate.store.repository import User
from tests.helpers import REDIRECT, add_client, add_user, authorize_params, pkce_pair, redirect_params
from tests.scale.cluster import Cluster, fresh_database, server_env

ISSUER = "http://127.0.0.1:9000"  # one issuer for both processes (a proxy's public origin)
ADMIN_KEY = "a" * 40
BOB = "u_kill_bob"  # the subject auto-approved authorization requests are issued for
CLIENT = {"client_name": "killable", "grant_types": ["client_credentials"], "redirect_uris": [],
          "response_types": [], "token_endpoint_auth_method": "client_secret_basic", "scope": "read"}


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "authgate.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], Cluster]]:
    with fresh_database() as database:
        env = server_env(tmp_path_factory.mktemp("kill-cluster"), database, issuer=ISSUER, agentauth_enabled="1",
                         agentauth_admin_key=ADMIN_KEY, agentauth_allow_http_loopback="1", auto_approve="1",
                         auto_approve_subject=BOB)
        c = Cluster(env, 2)
        c.start()
        try:
            yield env, c
        finally:
            outputs = c.stop()
        assert not any("Traceback" in out for out in outputs), outputs


def test_kill_and_revive_take_effect_on_the_next_request_on_both(cluster: tuple[dict[str, str], Cluster]) -> None:
    env, c = cluster
    info = json.loads(_cli(env, "clients", "add", json.dumps(CLIENT)))
    auth = (info["client_id"], info["client_secret"])

    def token(url: str) -> httpx.Response:
        return httpx.post(url + "/token", data={"grant_type": "client_credentials", "scope": "read"},
                          auth=auth, timeout=30)

    def active(url: str, tok: str) -> bool:
        res = httpx.post(url + "/introspect", data={"token": tok}, auth=auth, timeout=30)
        return bool(res.json().get("active"))

    tokens = []
    for url in c.urls:  # both processes issue, and cache the (empty) kill list
        res = token(url)
        assert res.status_code == 200, res.text
        tokens.append(res.json()["access_token"])
    for url in c.urls:
        assert [active(url, tok) for tok in tokens] == [True, True]

    _cli(env, "kill", "client", info["client_id"], "--reason", "compromised")
    for url in c.urls:
        refused = token(url)
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant", refused.text
    for url in c.urls:
        for tok in tokens:
            assert not active(url, tok)

    _cli(env, "revive", "client", info["client_id"])
    for url in c.urls:
        assert token(url).status_code == 200
        assert [active(url, tok) for tok in tokens] == [True, True]
    events = _cli(env, "audit", "--limit", "200")
    assert "trust.killed" in events and "trust.revived" in events


# -- Agent Auth agents and a user's delegation -------------------------------------------------------------------


class Agent:
    """An agent enrolled with our agent provider; signs person-token requests as the agent (-11 §3.4)."""

    def __init__(self, url: str, name: str, owner: str) -> None:
        self.key, _ = aauth.generate_ed25519_keypair()
        r = httpx.post(url + "/agentauth/agents", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30,
                       json={"name": name, "jwk": aauth.public_key_to_jwk(self.key.public_key()), "owner": owner})
        assert r.status_code == 201, r.text
        self.token, self.agent_id = r.json()["agent_token"], r.json()["agent_id"]

    def person_token(self, url: str) -> httpx.Response:
        """``POST /agentauth/person-token`` on process ``url``, signed for the public origin (each request
        unique: a signed POST is replay-checked)."""
        raw = json.dumps({"resource": f"https://r{secrets.token_hex(4)}.example"}).encode()
        headers = {"Content-Type": "application/json"}
        headers.update(aauth.sign_request("POST", ISSUER + "/agentauth/person-token", headers, raw, self.key,
                                          sig_scheme="jwt", jwt=self.token,
                                          additional_signature_components=["content-type", "content-digest"]))
        return httpx.post(url + "/agentauth/person-token", headers=headers, content=raw, timeout=30)


def _refused(r: httpx.Response) -> bool:
    return r.status_code == 401 and r.headers.get("signature-error") == "error=revoked_jwt"


def _bobs_tokens(url: str, client_id: str) -> dict[str, Any]:
    """An authorization code flow on ``url`` (auto-approved as Bob): his access and refresh tokens."""
    verifier, challenge = pkce_pair()
    code = redirect_params(httpx.get(url + "/authorize", params=authorize_params(client_id, challenge),
                                     timeout=30))["code"]
    r = httpx.post(url + "/token", timeout=30, data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier,
        "client_id": client_id})
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_killed_agent_and_user_delegation_are_refused_on_the_next_request_on_the_other_process(
        cluster: tuple[dict[str, str], Cluster]) -> None:
    env, c = cluster
    first, second = c.urls

    async def setup() -> tuple[str, tuple[str, str | None]]:
        store = await Store.open(to_sqlalchemy_url(env["AUTHGATE_DATABASE_URL"]), run_migrations=False)
        try:
            await add_user(store, "alice")
            await store.add_user(User(subject=BOB, username="bob", password_hash=hash_password("x" * 12),
                                      created_at=int(store.clock.now())))
            public = await add_client(store)
            resource_server = await add_client(store, auth_method="client_secret_basic",
                                               grant_types=["client_credentials"], redirect_uris=[])
            return public[0], resource_server
        finally:
            await store.close()

    public_client, (rs_id, rs_secret) = asyncio.run(setup())
    rs = (rs_id, rs_secret or "")
    doomed, kept, bobs = Agent(first, "doomed", "alice"), Agent(first, "kept", "alice"), Agent(first, "bobs", "bob")
    bob = _bobs_tokens(first, public_client)

    def introspect(url: str) -> bool:
        r = httpx.post(url + "/introspect", data={"token": bob["access_token"]}, auth=rs, timeout=30)
        assert r.status_code == 200, r.text
        return bool(r.json()["active"])

    for url in c.urls:  # both processes answer, and cache the kill list as it is
        assert [a.person_token(url).status_code for a in (doomed, kept, bobs)] == [200, 200, 200]
        assert introspect(url)

    _cli(env, "kill", "agent", doomed.agent_id, "--reason", "leaked key")
    refused = doomed.person_token(second)
    assert _refused(refused), (refused.status_code, refused.headers, refused.text)
    assert kept.person_token(second).status_code == 200 and bobs.person_token(second).status_code == 200
    assert _refused(doomed.person_token(first))

    _cli(env, "kill", "user", BOB, "--reason", "delegation withdrawn")
    refused = bobs.person_token(second)
    assert _refused(refused), (refused.status_code, refused.headers, refused.text)
    assert not introspect(second)  # Bob's access token: its next use is refused
    renewed = httpx.post(second + "/token", timeout=30, data={
        "grant_type": "refresh_token", "refresh_token": bob["refresh_token"], "client_id": public_client})
    assert renewed.status_code == 400 and renewed.json()["error"] == "invalid_grant", renewed.text
    assert kept.person_token(second).status_code == 200  # another person's agent goes on
    assert _refused(bobs.person_token(first)) and not introspect(first)
