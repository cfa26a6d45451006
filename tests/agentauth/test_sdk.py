"""The agent SDK (``authgate.agent.agentauth``) against our person server and resource middleware: signing,
answering person-token and auth-token challenges, interaction hand-off, cached scoped tokens, denial, key
rotation through the provider, key files."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import httpx
import pytest

from authgate.agent.agentauth import AgentAuth, AgentAuthDenied, AgentAuthProtocolError, AgentKey, parse_requirement
from tests.interop.test_aauth_protocol import PS, RES, World, world  # noqa: F401


def counting(w: World) -> tuple[httpx.AsyncClient, list[str]]:
    seen: list[str] = []

    async def hook(request: httpx.Request) -> None:
        seen.append(f"{request.method} {request.url.host}{request.url.path}")

    return httpx.AsyncClient(transport=w.http._transport, event_hooks={"request": [hook]}), seen


def sdk(w: World, http: httpx.AsyncClient, approve: bool | None = True) -> AgentAuth:
    async def on_interaction(url: str, code: str) -> None:
        page = await http.get(url)
        approval_id = page.headers["location"].rsplit("/", 1)[1]
        if approve is not None:
            await w.ctx.approvals.decide(approval_id, approve, by=w.owner, channel="web")

    return AgentAuth(AgentKey(w.key), w.agent_token, http=http, on_interaction=on_interaction,
                     justification="keeping your notes", timeout=10)


async def test_the_sdk_gets_in_by_itself_and_reuses_its_token(world: World) -> None:  # noqa: F811
    w = world
    http, seen = counting(w)
    auth = sdk(w, http)
    r = await http.get(RES + "/notes", auth=auth)
    assert r.status_code == 200, r.text
    assert r.json()["typ"] == "aa-auth+jwt" and r.json()["scope"] == "notes:read"
    assert [s for s in seen if "api.test" in s] == ["GET api.test/notes"] * 3  # agent, person, auth token
    assert any("/agentauth/pending/" in s for s in seen)
    seen.clear()
    r = await http.get(RES + "/notes", auth=auth)
    assert r.status_code == 200 and seen == ["GET api.test/notes"]
    # a high-risk scope: asked again, approved, the POST goes through with a body covered by Content-Digest
    r = await http.post(RES + "/notes", json={"text": "hi"}, auth=auth)
    assert r.status_code == 200 and r.json()["scope"] == "notes:read notes:write"
    await http.aclose()


async def test_denial_reaches_the_caller(world: World) -> None:  # noqa: F811
    w = world
    http, _ = counting(w)
    with pytest.raises(AgentAuthDenied):
        await http.get(RES + "/notes", auth=sdk(w, http, approve=False))
    await http.aclose()


async def test_a_captured_sdk_request_cannot_be_replayed(world: World) -> None:  # noqa: F811
    w = world
    http, _ = counting(w)
    auth = sdk(w, http)
    captured: list[httpx.Request] = []

    async def keep(request: httpx.Request) -> None:
        captured.append(request)

    http.event_hooks["request"].append(keep)
    r = await http.post(RES + "/notes", json={"n": 1}, auth=auth)
    assert r.status_code == 200
    last = captured[-1]
    again = await w.http.send(httpx.Request(last.method, last.url, headers=last.headers, content=last.content))
    assert again.status_code == 401 and again.headers["signature-error"] == "error=invalid_signature"
    await http.aclose()


async def test_key_rotation_through_the_provider(world: World) -> None:  # noqa: F811
    w = world
    http, _ = counting(w)
    auth = sdk(w, http)
    old_jkt = auth.key.jkt
    new = AgentKey.generate()
    await auth.refresh_agent_token(new_key=new)
    assert auth.key is new and auth.key.jkt != old_jkt
    record = await w.ctx.store.agentauth.get_agent(w.agent_id)
    assert record is not None and record.jkt == new.jkt
    r = await http.get(RES + "/notes", auth=auth)
    assert r.status_code == 200
    # the old key's agent token is revoked: the person server refuses it (the resource here has no revocation
    # feed, so it answers with the person-token requirement and the SDK goes to the person server)
    old = AgentAuth(AgentKey(w.key), w.agent_token, http=http)
    with pytest.raises(AgentAuthProtocolError) as info:
        await http.get(RES + "/me", auth=old)
    assert info.value.error == "revoked_jwt"
    await http.aclose()


async def test_concurrent_requests_share_the_flow_outcome(world: World) -> None:  # noqa: F811
    w = world
    http, _ = counting(w)
    auth = sdk(w, http)
    assert (await http.get(RES + "/notes", auth=auth)).status_code == 200
    results = await asyncio.gather(*(http.get(RES + "/notes", auth=auth) for _ in range(3)))
    assert [r.status_code for r in results] == [200, 200, 200]
    await http.aclose()


def test_key_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "agent" / "key.json"
    key = AgentKey.load_or_create(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert AgentKey.load(path).jkt == key.jkt
    os.chmod(path, 0o644)
    with pytest.raises(PermissionError):
        AgentKey.load(path)


def test_requirement_parsing() -> None:
    assert parse_requirement('requirement=auth-token; resource-token="a.b.c"') == {
        "requirement": "auth-token", "resource-token": "a.b.c"}
    parsed = parse_requirement('requirement=interaction; url="https://ps.test/i"; code="AB12-CD34"')
    assert parsed["code"] == "AB12-CD34" and parsed["url"] == "https://ps.test/i"
