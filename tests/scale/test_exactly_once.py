"""Exactly once across processes (issue #9 item 2): 4 ``authgate serve`` processes on one PostgreSQL database,
200 concurrent attempts spread over them, exactly one winner, and consistent state afterwards.

One cluster serves the whole module (each scenario uses its own client, grant, approval, agent or payment), with
one ``authgate devchain`` node for the x402 facilitators; a second cluster with ``redis_url`` repeats the Agent
Auth replay race with the replay cache in Redis.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from authgate.config import to_sqlalchemy_url
from authgate.crypto.httpsig import sign_request
from authgate.crypto.jwk import public_jwk
from authgate.crypto.signature_key import jwt_scheme
from authgate.demo.servers import free_port
from authgate.store import Store
from authgate.store import tables as t
from authgate.x402 import localchain
from authgate.x402.wire import FacilitatorRequest, SettleResponse
from tests.helpers import REDIRECT, add_client, add_user, authorize_params, pkce_pair, redirect_params
from tests.scale.cluster import REDIS_URL, Cluster, fresh_database, require_redis, server_env
from tests.x402.facilitator_support import PAY_TO, pay, requirements

pytestmark = pytest.mark.postgres

ISSUER = "https://authgate.test"
ADMIN_KEY = secrets.token_urlsafe(32)
ATTEMPTS = 200
PROCESSES = 4
PASSWORD = "correct horse"


def _start(tmp_path: Path, database: str, **extra: str) -> Cluster:
    env = server_env(tmp_path, database, issuer=ISSUER, auto_approve="1", agentauth_enabled="1",
                     agentauth_admin_key=ADMIN_KEY, registration_rate_limit="100000", **extra)
    cluster = Cluster(env, PROCESSES)
    cluster.start()
    return cluster


def _clean(outputs: list[str]) -> None:
    assert not any("Traceback" in out for out in outputs), outputs


def _x402_env(rpc: str) -> dict[str, str]:
    """The servers' facilitators settle on one shared ``authgate devchain`` node (each embedded chain would be
    its own)."""
    return {"x402_chain": "jsonrpc", "x402_rpc_url": rpc, "x402_facilitator_key": localchain.FACILITATOR_KEY,
            "x402_network": localchain.NETWORK, "x402_token_address": localchain.TOKEN_ADDRESS,
            "x402_token_name": localchain.TOKEN_NAME, "x402_token_version": localchain.TOKEN_VERSION,
            "x402_settle_timeout": "60"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cluster, str, str]]:
    """(cluster, database URL, devchain RPC URL) for the module; the chain node starts alongside the servers
    (they build their chain on first use)."""
    rpc = f"http://127.0.0.1:{free_port()}"
    with fresh_database() as database:
        node = subprocess.Popen([sys.executable, "-m", "authgate.cli", "devchain", "--port", rpc.rsplit(":", 1)[1],
                                 "--fund", "scale-payer=1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        try:
            c = _start(tmp_path_factory.mktemp("cluster"), database, **_x402_env(rpc))
            try:
                deadline = time.monotonic() + 90
                while True:
                    try:
                        httpx.get(rpc, timeout=2)
                        break
                    except httpx.TransportError:
                        assert node.poll() is None and time.monotonic() < deadline, "devchain did not start"
                        time.sleep(0.2)
                yield c, database, rpc
            finally:
                _clean(c.stop())
        finally:
            node.terminate()
            node.communicate(timeout=30)


@pytest.fixture
async def store(cluster: tuple[Cluster, str, str]) -> AsyncIterator[Store]:
    st = await Store.open(to_sqlalchemy_url(cluster[1]), run_migrations=False)
    yield st
    await st.close()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=ATTEMPTS, max_keepalive_connections=ATTEMPTS)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        yield client


async def _spread(http: httpx.AsyncClient, urls: list[str], method: str, path: str,
                  **kwargs: Any) -> list[httpx.Response]:
    """ATTEMPTS identical requests at once, round-robin over the processes."""
    return await asyncio.gather(*[http.request(method, urls[i % len(urls)] + path, **kwargs)
                                  for i in range(ATTEMPTS)])


def _statuses(responses: list[httpx.Response]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for r in responses:
        counts[r.status_code] = counts.get(r.status_code, 0) + 1
    return counts


async def _code_form(http: httpx.AsyncClient, url: str, client_id: str) -> dict[str, str]:
    verifier, challenge = pkce_pair()
    q = redirect_params(await http.get(url + "/authorize", params=authorize_params(client_id, challenge)))
    return {"grant_type": "authorization_code", "code": q["code"], "redirect_uri": REDIRECT,
            "code_verifier": verifier, "client_id": client_id}


async def _replayed_events(store: Store, event: str) -> int:
    return sum(1 for e in await store.audit_events(limit=10_000) if e["event"] == event)


async def _grant_is_dead(http: httpx.AsyncClient, urls: list[str], store: Store, client_id: str,
                         responses: list[httpx.Response]) -> None:
    """After a detected replay nothing issued from the grant is usable (OAuth 2.1 §4.1.3, §4.3.1, RFC 9700)."""
    rs_id, rs_secret = await add_client(store, auth_method="client_secret_basic",
                                        grant_types=["client_credentials"], redirect_uris=[])
    assert rs_secret
    for r in responses:
        if r.status_code != 200:
            continue
        body = r.json()
        for token in (body["access_token"], body["refresh_token"]):
            intro = await http.post(urls[-1] + "/introspect", data={"token": token}, auth=(rs_id, rs_secret))
            assert intro.status_code == 200 and intro.json() == {"active": False}, intro.text
        again = await http.post(urls[0] + "/token", data={"grant_type": "refresh_token", "client_id": client_id,
                                                          "refresh_token": body["refresh_token"]})
        assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


async def test_authorization_code_is_redeemed_once(cluster: tuple[Cluster, str, str], store: Store,
                                                   http: httpx.AsyncClient) -> None:
    c = cluster[0]
    client_id, _ = await add_client(store)
    form = await _code_form(http, c.urls[0], client_id)
    responses = await _spread(http, c.urls, "POST", "/token", data=form)
    counts = _statuses(responses)
    assert set(counts) <= {200, 400} and counts.get(200, 0) <= 1, counts
    assert all(r.json()["error"] == "invalid_grant" for r in responses if r.status_code == 400)
    # Exactly one request consumed the code; every other one was a detected replay.
    assert await _replayed_events(store, "authorization_code.replayed") == ATTEMPTS - 1
    # The code came back: whatever it produced is revoked, the winner's tokens included.
    await _grant_is_dead(http, c.urls, store, client_id, responses)


async def test_refresh_token_is_rotated_once_and_the_replay_revokes_the_family(
        cluster: tuple[Cluster, str, str], store: Store, http: httpx.AsyncClient) -> None:
    c = cluster[0]
    client_id, _ = await add_client(store)
    first = await http.post(c.urls[1] + "/token", data=await _code_form(http, c.urls[1], client_id))
    assert first.status_code == 200, first.text
    form = {"grant_type": "refresh_token", "refresh_token": first.json()["refresh_token"], "client_id": client_id}
    responses = await _spread(http, c.urls, "POST", "/token", data=form)
    counts = _statuses(responses)
    assert set(counts) <= {200, 400} and counts.get(200, 0) <= 1, counts
    assert await _replayed_events(store, "refresh_token.replayed") == ATTEMPTS - 1
    await _grant_is_dead(http, c.urls, store, client_id, [first, *responses])


def _field(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert match, f"no {name} field in page"
    return match.group(1)


def _cookies(response: httpx.Response, jar: dict[str, str]) -> dict[str, str]:
    """Our issuer is https, so the session cookies are Secure: carry them by hand to the http test ports."""
    for header in response.headers.get_list("set-cookie"):
        name, _, rest = header.partition("=")
        jar[name.strip()] = rest.split(";", 1)[0]
    return {"Cookie": "; ".join(f"{k}={v}" for k, v in jar.items())}


async def test_approval_is_decided_once(cluster: tuple[Cluster, str, str], store: Store,
                                        http: httpx.AsyncClient) -> None:
    c = cluster[0]
    username = "u" + secrets.token_hex(4)
    subject = await add_user(store, username, PASSWORD)
    jar: dict[str, str] = {}
    page = await http.get(c.urls[0] + "/signin")
    signed = await http.post(c.urls[0] + "/signin", headers=_cookies(page, jar),
                             data={"csrf": _field(page.text, "csrf"), "username": username, "password": PASSWORD,
                                   "next": "/approvals"})
    assert signed.status_code == 303, signed.text
    cookie = _cookies(signed, jar)
    from authgate.approvals import ApprovalService

    approvals = ApprovalService(store, store.clock)
    request = await approvals.create(kind="scope_escalation", subject=subject, client_id=None,
                                     details={"scopes": ["notes:write"]}, notify=False)
    shown = await http.get(c.urls[2] + f"/approvals/{request.id}", headers=cookie)
    assert shown.status_code == 200, shown.text
    csrf = _field(shown.text, "csrf")
    # Half approve, half deny, all at once on four processes: one decision is recorded, the rest are told so.
    responses = await asyncio.gather(*[
        http.post(c.urls[i % PROCESSES] + f"/approvals/{request.id}", headers=cookie,
                  data={"csrf": csrf, "decision": "approve" if i % 2 else "deny"}) for i in range(ATTEMPTS)])
    counts = _statuses(responses)
    assert counts.get(200) == 1 and counts.get(409) == ATTEMPTS - 1, counts
    winner = next(i for i, r in enumerate(responses) if r.status_code == 200)
    after = await approvals.get(request.id)
    assert after is not None and after.status == ("approved" if winner % 2 else "denied")
    assert after.decided_by == subject


def _agent(url: str, owner: str) -> tuple[Ed25519PrivateKey, str]:
    key = Ed25519PrivateKey.generate()
    enrolled = httpx.post(url + "/agentauth/agents", timeout=30,
                          json={"name": "bot", "jwk": public_jwk(key), "owner": owner},
                          headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert enrolled.status_code == 201, enrolled.text
    return key, enrolled.json()["agent_token"]


def _signed(key: Ed25519PrivateKey, token: str, body: dict[str, str]) -> tuple[dict[str, str], bytes]:
    raw = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    headers.update(sign_request(method="POST", url=ISSUER + "/agentauth/person-token", headers=headers, body=raw,
                                key=key, signature_key=jwt_scheme(token)))
    return {**headers, "Host": "authgate.test"}, raw


async def _signed_request_accepted_once(c: Cluster, store: Store, http: httpx.AsyncClient) -> None:
    owner = "u" + secrets.token_hex(4)
    await add_user(store, owner, PASSWORD)
    key, token = _agent(c.urls[0], owner)
    headers, raw = _signed(key, token, {"resource": "https://api.test"})
    responses = await _spread(http, c.urls, "POST", "/agentauth/person-token", headers=headers, content=raw)
    counts = _statuses(responses)
    assert counts.get(200) == 1 and counts.get(401) == ATTEMPTS - 1, counts
    assert all(r.headers["signature-error"] == "error=invalid_signature" for r in responses if r.status_code == 401)
    # A new signed request from the same agent is still fine on any process.
    headers, raw = _signed(key, token, {"resource": "https://other.test"})
    fresh = await http.post(c.urls[3] + "/agentauth/person-token", headers=headers, content=raw)
    assert fresh.status_code == 200, fresh.text


async def test_agentauth_signed_request_is_accepted_once_database_replay_cache(
        cluster: tuple[Cluster, str, str], store: Store, http: httpx.AsyncClient) -> None:
    await _signed_request_accepted_once(cluster[0], store, http)


def test_agentauth_signed_request_is_accepted_once_redis_replay_cache(tmp_path: Path) -> None:
    require_redis()
    with fresh_database() as database:
        c = _start(tmp_path, database, redis_url=REDIS_URL)
        try:
            asyncio.run(_redis_race(c, database))
        finally:
            _clean(c.stop())


async def _redis_race(c: Cluster, database: str) -> None:
    st = await Store.open(to_sqlalchemy_url(database), run_migrations=False)
    limits = httpx.Limits(max_connections=ATTEMPTS, max_keepalive_connections=ATTEMPTS)
    try:
        async with httpx.AsyncClient(timeout=60, limits=limits) as http:
            await _signed_request_accepted_once(c, st, http)
        # The records are in Redis, not in the database's replay table.
        async with st.engine.connect() as conn:
            rows = (await conn.execute(sa.select(sa.func.count()).select_from(t.signature_replay))).scalar()
        assert rows == 0
    finally:
        await st.close()


async def test_registration_access_token_rotation_has_one_winner(cluster: tuple[Cluster, str, str],
                                                                 http: httpx.AsyncClient) -> None:
    c = cluster[0]
    metadata = {"client_name": "racer", "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code"], "response_types": ["code"]}
    reg = await http.post(c.urls[0] + "/register", json=metadata)
    assert reg.status_code == 201, reg.text
    body = reg.json()
    rat, path = body["registration_access_token"], "/register/" + body["client_id"]
    update = {**metadata, "client_id": body["client_id"], "client_name": "racer v2"}
    responses = await _spread(http, c.urls, "PUT", path, json=update, headers={"Authorization": f"Bearer {rat}"})
    counts = _statuses(responses)
    assert counts.get(200) == 1 and counts.get(401) == ATTEMPTS - 1, counts
    new_rat = next(r for r in responses if r.status_code == 200).json()["registration_access_token"]
    assert new_rat != rat
    old = await http.get(c.urls[1] + path, headers={"Authorization": f"Bearer {rat}"})
    assert old.status_code == 401
    now = await http.get(c.urls[2] + path, headers={"Authorization": f"Bearer {new_rat}"})
    assert now.status_code == 200 and now.json()["client_name"] == "racer v2"


async def test_x402_authorization_is_settled_once(cluster: tuple[Cluster, str, str],
                                                  http: httpx.AsyncClient) -> None:
    """The facilitators under /x402 settle on one devchain node: 200 concurrent /settle calls for one
    authorization make exactly one transfer, and every caller gets the same receipt."""
    c, _, rpc = cluster

    async def call(method: str, params: list[object]) -> str:
        answer = await http.post(rpc, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        return str(answer.json()["result"])

    async def balance(owner: str) -> int:
        data = "0x70a08231" + owner[2:].lower().rjust(64, "0")
        return int(await call("eth_call", [{"to": localchain.TOKEN_ADDRESS, "data": data}, "latest"]), 16)

    req = requirements()
    body = FacilitatorRequest(pay(localchain.label_key("scale-payer"), req), req).to_json()
    payee_before = await balance(PAY_TO)
    sent_before = int(await call("eth_getTransactionCount", [localchain.FACILITATOR, "latest"]), 16)
    responses = await _spread(http, c.urls, "POST", "/x402/settle", content=body,
                              headers={"Content-Type": "application/json"})
    assert _statuses(responses) == {200: ATTEMPTS}
    results = [SettleResponse.from_json(r.content) for r in responses]
    assert all(r.success for r in results), {(r.error_reason, r.error_message) for r in results}
    assert len({r.transaction for r in results}) == 1  # one receipt, told to every caller
    assert int(await call("eth_getTransactionCount", [localchain.FACILITATOR, "latest"]), 16) == sent_before + 1
    assert await balance(PAY_TO) == payee_before + int(req.amount)
