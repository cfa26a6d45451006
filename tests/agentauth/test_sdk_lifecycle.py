"""The agent SDK over time: a 202 nobody decides ends in ``AgentAuthTimeout`` (the SDK's own deadline, or the
person server's ``408 expired``), tokens are renewed once they enter the refresh margin (and not before), and
the key can live in the OS keyring (``KeyringKeyStore``, optional ``keyring`` package)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from typing import Any

import httpx
import pytest

from authgate.agent.agentauth import (
    AgentAuth,
    AgentAuthTimeout,
    AgentKey,
    FileKeyStore,
    KeyringKeyStore,
    KeyStoreError,
    claims_of,
)
from authgate.clock import FrozenClock
from authgate.config import Settings
from authgate.store import Store
from tests.agentauth.test_sdk import counting
from tests.interop.test_aauth_protocol import RES, World, make_world, world  # noqa: F401


def undecided(w: World, http: httpx.AsyncClient, *, timeout: float, on_prompt: Any = None
              ) -> tuple[AgentAuth, list[str]]:
    """An SDK whose person opens the interaction page and never decides; the SDK shares the server's clock."""
    prompts: list[str] = []

    async def on_interaction(url: str, code: str) -> None:
        prompts.append(code)
        assert (await http.get(url)).status_code == 303
        if on_prompt is not None:
            on_prompt()

    auth = AgentAuth(AgentKey(w.key), w.agent_token, http=http, on_interaction=on_interaction, timeout=timeout,
                     prefer_wait=1, clock=w.ctx.clock.now)
    return auth, prompts


async def test_a_202_nobody_decides_times_out(world: World) -> None:  # noqa: F811
    w = world
    http, seen = counting(w)
    auth, prompts = undecided(w, http, timeout=1.5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(AgentAuthTimeout) as info:
        await http.get(RES + "/notes", auth=auth)
    elapsed = loop.time() - started
    assert info.value.error == "timeout" and 1.4 <= elapsed < 6, elapsed
    assert len(prompts) == 1  # the code is shown once
    polls = [s for s in seen if "/agentauth/pending/" in s]
    # the SDK waited (Prefer: wait, Retry-After) instead of hammering the person server
    assert 1 <= len(polls) <= 4, polls
    await http.aclose()


async def test_polls_stay_spaced_when_the_server_does_not_hold_them(settings: Settings, store: Store,
                                                                   clock: FrozenClock) -> None:
    w = await make_world(settings, store, clock, agentauth_max_wait=0)  # Prefer: wait ignored, Retry-After: 0
    http, seen = counting(w)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(AgentAuthTimeout):
        await http.get(RES + "/notes", auth=undecided(w, http, timeout=2.5)[0])
    elapsed = loop.time() - started
    polls = [s for s in seen if "/agentauth/pending/" in s]
    assert 2 <= len(polls) <= 4 and elapsed >= 2.4, (len(polls), elapsed)  # about one a second, not hundreds
    await http.aclose()
    await w.http.aclose()


async def test_a_pending_request_that_expires_is_a_timeout(world: World) -> None:  # noqa: F811
    w = world
    http, _ = counting(w)
    clock = w.ctx.clock
    assert isinstance(clock, FrozenClock)
    ttl = w.ctx.settings.agentauth_pending_ttl
    # the person is shown the code, and then the pending request outlives its deadline at the person server
    auth, _ = undecided(w, http, timeout=30, on_prompt=lambda: clock.advance(ttl + 1))
    with pytest.raises(AgentAuthTimeout) as info:
        await http.get(RES + "/notes", auth=auth)
    assert info.value.error == "expired"
    await http.aclose()


async def test_tokens_are_renewed_inside_the_refresh_margin_and_not_before(world: World) -> None:  # noqa: F811
    w = world
    clock = w.ctx.clock
    assert isinstance(clock, FrozenClock)
    http, seen = counting(w)

    async def approve(url: str, code: str) -> None:
        page = await http.get(url)
        await w.ctx.approvals.decide(page.headers["location"].rsplit("/", 1)[1], True, by=w.owner, channel="web")

    auth = AgentAuth(AgentKey(w.key), w.agent_token, http=http, on_interaction=approve, timeout=10,
                     refresh_margin=300, clock=clock.now)
    assert (await http.get(RES + "/notes", auth=auth)).status_code == 200
    first_agent = claims_of(auth.agent_token.value)
    lifetime = first_agent["exp"] - first_agent["iat"]
    assert lifetime == 3600
    # just outside the margin: the cached auth token is still presented, nothing is renewed
    clock.advance(lifetime - 300 - 2)
    seen.clear()
    assert (await http.get(RES + "/notes", auth=auth)).status_code == 200
    assert seen == ["GET api.test/notes"]
    # inside the margin: the agent token is refreshed at the provider first, and the auth token (whose exp the
    # agent token bounds) is not presented any more; a new one comes from the person server without asking
    # (notes:read is low risk and remembered)
    clock.advance(3)
    seen.clear()
    r = await http.get(RES + "/notes", auth=auth)
    assert r.status_code == 200, r.text
    assert seen[:2] == ["GET authgate.test/.well-known/aauth-agent.json",
                        "POST authgate.test/agentauth/agent-token"], seen
    assert seen.count("POST authgate.test/agentauth/agent-token") == 1
    assert "POST authgate.test/agentauth/auth-token" in seen
    assert not [s for s in seen if "/agentauth/pending/" in s]
    renewed = claims_of(auth.agent_token.value)
    assert renewed["jti"] != first_agent["jti"] and renewed["exp"] == int(clock.now()) + lifetime
    assert renewed["cnf"] == first_agent["cnf"]  # same key: a refresh, not a rotation
    await http.aclose()


# -- key stores (the OS keyring ones: test_sdk_keyring.py) -------------------------------------------


def test_file_store_matches_the_key_file(tmp_path: Any) -> None:
    store = FileKeyStore(tmp_path / "key.json")
    assert store.load() is None
    key = store.load_or_create()
    loaded = store.load()
    assert loaded is not None and loaded.jkt == key.jkt == AgentKey.load(tmp_path / "key.json").jkt


def test_the_sdk_does_not_import_keyring_until_asked() -> None:
    code = textwrap.dedent(
        """
        import sys
        from authgate.agent.agentauth import AgentAuth, KeyringKeyStore
        store = KeyringKeyStore("bot")
        assert "keyring" not in sys.modules, "imported eagerly"
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_keyring_store_without_the_extra_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "keyring", None)  # as if ``authgate[keyring]`` were not installed
    with pytest.raises(KeyStoreError, match=r"authgate\[keyring\]"):
        KeyringKeyStore("bot").load()
