"""Crash safety, first cut (issue #9 item 3): ``kill -9`` a server process while it is issuing tokens, restart it;
the client retries what it never got an answer for, and no grant is left half-written: every live refresh token
in the database is one the client holds, and every code was honoured at most once."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from authgate.config import to_sqlalchemy_url
from authgate.store import Store
from authgate.store import tables as t
from tests.helpers import REDIRECT, add_client, authorize_params, pkce_pair, redirect_params
from tests.scale.cluster import Cluster, fresh_database, server_env

pytestmark = pytest.mark.postgres

ISSUER = "https://authgate.test"
CODES = 40


async def _codes(http: httpx.AsyncClient, url: str, client_id: str) -> list[dict[str, str]]:
    forms = []
    for _ in range(CODES):
        verifier, challenge = pkce_pair()
        q = redirect_params(await http.get(url + "/authorize", params=authorize_params(client_id, challenge)))
        forms.append({"grant_type": "authorization_code", "code": q["code"], "redirect_uri": REDIRECT,
                      "code_verifier": verifier, "client_id": client_id})
    return forms


async def _scenario(c: Cluster, store: Store) -> None:
    client_id, _ = await add_client(store)
    async with httpx.AsyncClient(timeout=60) as http:
        forms = await _codes(http, c.urls[1], client_id)
        victim = c.procs[0]

        async def redeem(i: int) -> tuple[int, httpx.Response | None]:
            try:
                return i, await http.post(c.urls[0] + "/token", data=forms[i])
            except httpx.TransportError:
                return i, None  # the process died under this request

        tasks = [asyncio.ensure_future(redeem(i)) for i in range(CODES)]
        answered: dict[int, httpx.Response | None] = {}
        for done in asyncio.as_completed(tasks):
            i, response = await done
            answered[i] = response
            if victim.poll() is None:
                victim.send_signal(signal.SIGKILL)  # as soon as the first answer is out, the rest in flight
        victim.wait()
        c.restart(0)

        held: list[str] = []  # refresh tokens the client holds
        retried = lost = 0
        for i in range(CODES):
            first = answered[i]
            if first is not None and first.status_code == 200:
                held.append(first.json()["refresh_token"])
                continue
            assert first is None, first.text  # a first use is answered 200 or not at all
            retried += 1
            again = await http.post(c.urls[retried % 2] + "/token", data=forms[i])
            assert again.status_code in (200, 400), again.text
            if again.status_code == 200:
                held.append(again.json()["refresh_token"])
            else:
                assert again.json()["error"] == "invalid_grant"  # consumed by the dead process: replay, revoked
                lost += 1
        assert retried > 0, "the kill landed after every request was answered; nothing was tested"
        print(f"answered before the kill: {CODES - retried}, retried: {retried}, of which consumed by the dead "
              f"process: {lost}")

        # No half-written grant: the live refresh tokens in the database are exactly the ones the client holds.
        now = int(store.clock.now())
        a = t.artifacts.c
        async with store.engine.connect() as conn:
            live = (await conn.execute(sa.select(sa.func.count()).select_from(t.artifacts).where(
                a.kind == "refresh_token", a.client_id == client_id, a.revoked_at.is_(None),
                a.consumed_at.is_(None), a.expires_at > now))).scalar()
        assert live == len(held)
        # And each held one works, once.
        for token in held:
            r = await http.post(c.urls[0] + "/token", data={"grant_type": "refresh_token", "client_id": client_id,
                                                            "refresh_token": token})
            assert r.status_code == 200, r.text


def test_kill_9_during_token_issuance_leaves_no_half_written_grant(tmp_path: Path) -> None:
    with fresh_database() as database:
        env = server_env(tmp_path, database, issuer=ISSUER, auto_approve="1")
        c = Cluster(env, 2)
        c.start()
        try:
            async def run() -> None:
                store = await Store.open(to_sqlalchemy_url(database), run_migrations=False)
                try:
                    await _scenario(c, store)
                finally:
                    await store.close()

            asyncio.run(run())
        finally:
            outputs = c.stop()
        assert not any("Traceback" in out for out in outputs[1:]), outputs
