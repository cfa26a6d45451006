"""The person's side on the web: sign-in sessions, the inbox, one request's page, deciding with CSRF
protection, and the status JSON and server-sent events a waiting party uses."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx
import pytest

from authgate.approvals import web as approvals_web
from authgate.context import ServerContext
from authgate.web import PAGE_HEADERS
from tests.conftest import ISSUER
from tests.helpers import add_client, add_user

PASSWORD = "correct horse"


def _field(html: str, name: str) -> str:
    match = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert match, f"no {name} field in page"
    return match.group(1)


async def _signin(http: httpx.AsyncClient, username: str, password: str = PASSWORD, next: str = "") -> httpx.Response:
    page = await http.get("/signin", params={"next": next} if next else None)
    assert page.status_code == 200, page.text
    return await http.post("/signin", data={"csrf": _field(page.text, "csrf"), "username": username,
                                            "password": password, "next": next or _field(page.text, "next")})


async def _signed_in(ctx: ServerContext, username: str = "alice", *, admin: bool = False) -> tuple[
        httpx.AsyncClient, str]:
    """A separate browser (cookie jar) signed in as a new user; returns it and the user's subject."""
    from authgate.app import create_app

    subject = await add_user(ctx.store, username, PASSWORD)
    if admin:
        await ctx.store.update_user(username, is_admin=True)
    transport = httpx.ASGITransport(app=create_app(ctx), client=("127.0.0.1", 50001))
    http = httpx.AsyncClient(transport=transport, base_url=ISSUER)
    r = await _signin(http, username)
    assert r.status_code == 303, r.text
    return http, subject


@pytest.fixture
async def browsers() -> Any:
    opened: list[httpx.AsyncClient] = []
    yield opened
    for http in opened:
        await http.aclose()


async def _alice(ctx: ServerContext, browsers: list[httpx.AsyncClient], name: str = "alice",
                 admin: bool = False) -> tuple[httpx.AsyncClient, str]:
    http, subject = await _signed_in(ctx, name, admin=admin)
    browsers.append(http)
    return http, subject


async def _request(ctx: ServerContext, subject: str | None, **over: Any) -> str:
    args: dict[str, Any] = {"kind": "scope_escalation", "subject": subject, "client_id": None,
                            "details": {"scopes": ["notes:write"], "resource": "https://notes.example/api",
                                        "amount": "12.50", "currency": "USD"},
                            "reason": "I need to save your notes", "binding_message": "K7-42"}
    args.update(over)
    return (await ctx.approvals.create(**args)).id


# -- sign-in and sign-out ----------------------------------------------------------------------------------


async def test_signin_sets_session_cookie_and_signout_revokes_it(client: httpx.AsyncClient, ctx: ServerContext
                                                                ) -> None:
    await add_user(ctx.store, "alice", PASSWORD)
    assert (await client.get("/approvals")).status_code == 303
    r = await _signin(client, "alice")
    assert r.status_code == 303 and r.headers["location"] == "/approvals"
    cookie = r.headers["set-cookie"]
    assert "authgate_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
    assert "Path=/" in cookie
    stolen = client.cookies.get("authgate_session")
    assert stolen and stolen not in repr(await ctx.store.audit_events())
    inbox = await client.get("/approvals")
    assert inbox.status_code == 200 and "alice" in inbox.text

    out = await client.post("/signout", data={"csrf": _field(inbox.text, "csrf")})
    assert out.status_code == 303 and out.headers["location"] == "/signin"
    assert (await client.get("/approvals")).status_code == 303
    # The old cookie value is dead on the server, not just deleted in this browser.
    client.cookies.set("authgate_session", stolen)
    assert (await client.get("/approvals")).status_code == 303


async def test_session_survives_a_new_server_over_the_same_store(client: httpx.AsyncClient, ctx: ServerContext,
                                                                 make_client: Any) -> None:
    await add_user(ctx.store, "alice", PASSWORD)
    await _signin(client, "alice")
    _, other = await make_client(ctx.settings)
    other.cookies.set("authgate_session", client.cookies["authgate_session"])
    r = await other.get("/approvals")
    assert r.status_code == 200 and "alice" in r.text


async def test_wrong_password_and_unknown_user_are_refused_alike(client: httpx.AsyncClient, ctx: ServerContext
                                                                ) -> None:
    await add_user(ctx.store, "alice", PASSWORD)
    wrong = await _signin(client, "alice", "nope")
    unknown = await _signin(client, "mallory", "nope")
    for r in (wrong, unknown):
        assert r.status_code == 401 and "Wrong username or password" in r.text
        assert "authgate_session" not in r.headers.get("set-cookie", "")
    assert (await client.get("/approvals")).status_code == 303


async def test_signin_is_rate_limited(client: httpx.AsyncClient, ctx: ServerContext) -> None:
    await add_user(ctx.store, "alice", PASSWORD)
    codes = [(await _signin(client, "alice", "nope")).status_code for _ in range(11)]
    assert codes[:10] == [401] * 10 and codes[10] == 429
    assert "Too many sign-in attempts" in (await _signin(client, "alice", "nope")).text
    assert (await _signin(client, "alice")).status_code == 429  # even the right password, until the window ends
    ctx.clock.advance(61)  # type: ignore[attr-defined]
    assert (await _signin(client, "alice")).status_code == 303


async def test_signin_form_needs_its_csrf_token(client: httpx.AsyncClient, ctx: ServerContext) -> None:
    """Login CSRF: a form posted from elsewhere (no pre-sign-in cookie, or a wrong token) signs nobody in."""
    await add_user(ctx.store, "alice", PASSWORD)
    page = await client.get("/signin")
    token = _field(page.text, "csrf")
    for data in ({"username": "alice", "password": PASSWORD},
                 {"csrf": token + "x", "username": "alice", "password": PASSWORD}):
        r = await client.post("/signin", data=data)
        assert r.status_code == 403 and "authgate_session" not in r.headers.get("set-cookie", "")
    client.cookies.clear()
    r = await client.post("/signin", data={"csrf": token, "username": "alice", "password": PASSWORD})
    assert r.status_code == 403


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/\\evil.example", "http:/x",
                                    "javascript:alert(1)", "/approvals\r\nSet-Cookie: x=1", "evil"])
async def test_next_is_only_a_same_site_path(client: httpx.AsyncClient, ctx: ServerContext, target: str) -> None:
    await add_user(ctx.store, "alice", PASSWORD)
    r = await _signin(client, "alice", next=target)
    assert r.status_code == 303 and r.headers["location"] == "/approvals"


async def test_next_returns_to_the_request_page(client: httpx.AsyncClient, ctx: ServerContext) -> None:
    subject = await add_user(ctx.store, "alice", PASSWORD)
    rid = await _request(ctx, subject)
    r = await client.get(f"/approvals/{rid}")
    assert r.status_code == 303 and r.headers["location"] == f"/signin?next=/approvals/{rid}"
    r = await _signin(client, "alice", next=f"/approvals/{rid}")
    assert r.headers["location"] == f"/approvals/{rid}"


# -- inbox and request page ---------------------------------------------------------------------------------


async def test_inbox_shows_only_own_requests_and_admin_sees_all(ctx: ServerContext, browsers: Any) -> None:
    alice, alice_sub = await _alice(ctx, browsers, "alice")
    bob, bob_sub = await _alice(ctx, browsers, "bob")
    admin, _ = await _alice(ctx, browsers, "root", admin=True)
    mine = await _request(ctx, alice_sub)
    theirs = await _request(ctx, bob_sub)

    page = (await alice.get("/approvals")).text
    assert mine in page and theirs not in page
    page = (await bob.get("/approvals")).text
    assert theirs in page and mine not in page
    page = (await admin.get("/approvals")).text
    assert mine in page and theirs in page and "All pending requests" in page
    # Bob cannot open Alice's request either: same answer as an unknown id.
    assert (await bob.get(f"/approvals/{mine}")).status_code == 404
    assert (await bob.get("/approvals/nope")).status_code == 404
    assert (await admin.get(f"/approvals/{mine}")).status_code == 200


async def test_request_page_shows_who_what_and_why_escaped(ctx: ServerContext, browsers: Any) -> None:
    http, subject = await _alice(ctx, browsers)
    client_id, _ = await add_client(ctx.store, client_name="<img src=x onerror=alert(1)>")
    rid = await _request(ctx, subject, client_id=client_id, reason="<script>steal()</script>\nplease & thanks")
    r = await http.get(f"/approvals/{rid}")
    assert r.status_code == 200
    for name, value in PAGE_HEADERS.items():
        assert r.headers[name] == value
    text = r.text
    assert '<meta name="viewport"' in text
    assert "<script>steal()" not in text and "&lt;script&gt;steal()&lt;/script&gt;" in text
    assert "please &amp; thanks" in text
    assert "<img src=x" not in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    assert "the agent's words, unverified" in text
    assert "notes:write" in text and "https://notes.example/api" in text and "12.50 USD" in text
    assert "K7-42" in text and "alice" in text and "Waiting for your decision" in text
    assert 'name="decision" value="approve"' in text and 'name="decision" value="deny"' in text


async def test_approve_then_second_decision_refused(ctx: ServerContext, browsers: Any) -> None:
    http, subject = await _alice(ctx, browsers)
    rid = await _request(ctx, subject)
    page = await http.get(f"/approvals/{rid}")
    csrf = _field(page.text, "csrf")
    r = await http.post(f"/approvals/{rid}", data={"csrf": csrf, "decision": "approve"})
    assert r.status_code == 200 and "Approved" in r.text
    decided = await ctx.approvals.get(rid)
    assert decided is not None and decided.status == "approved" and decided.decided_by == subject
    assert decided.channel == "web"
    again = await http.post(f"/approvals/{rid}", data={"csrf": csrf, "decision": "deny"})
    assert again.status_code == 409 and "already decided" in again.text
    assert (await ctx.approvals.get(rid)).status == "approved"  # type: ignore[union-attr]
    page = await http.get(f"/approvals/{rid}")
    assert "Approved" in page.text and 'name="decision"' not in page.text
    assert rid not in (await http.get("/approvals")).text


async def test_deny(ctx: ServerContext, browsers: Any) -> None:
    http, subject = await _alice(ctx, browsers)
    rid = await _request(ctx, subject)
    csrf = _field((await http.get(f"/approvals/{rid}")).text, "csrf")
    r = await http.post(f"/approvals/{rid}", data={"csrf": csrf, "decision": "deny"})
    assert r.status_code == 200 and "Denied" in r.text
    assert (await ctx.approvals.get(rid)).status == "denied"  # type: ignore[union-attr]


async def test_admin_decides_for_someone_else_but_a_stranger_cannot(ctx: ServerContext, browsers: Any) -> None:
    _, alice_sub = await _alice(ctx, browsers)
    bob, _ = await _alice(ctx, browsers, "bob")
    admin, admin_sub = await _alice(ctx, browsers, "root", admin=True)
    rid = await _request(ctx, alice_sub)
    bob_csrf = _field((await bob.get("/approvals")).text, "csrf")
    r = await bob.post(f"/approvals/{rid}", data={"csrf": bob_csrf, "decision": "approve"})
    assert r.status_code == 404
    assert (await ctx.approvals.get(rid)).status == "pending"  # type: ignore[union-attr]
    admin_csrf = _field((await admin.get(f"/approvals/{rid}")).text, "csrf")
    r = await admin.post(f"/approvals/{rid}", data={"csrf": admin_csrf, "decision": "deny"})
    assert r.status_code == 200
    decided = await ctx.approvals.get(rid)
    assert decided is not None and decided.status == "denied" and decided.decided_by == admin_sub


async def test_expired_request_shows_expired_and_cannot_be_decided(ctx: ServerContext, browsers: Any) -> None:
    http, subject = await _alice(ctx, browsers)
    rid = await _request(ctx, subject, ttl=60)
    csrf = _field((await http.get(f"/approvals/{rid}")).text, "csrf")
    ctx.clock.advance(61)  # type: ignore[attr-defined]
    page = await http.get(f"/approvals/{rid}")
    assert page.status_code == 200 and "Expired" in page.text and 'name="decision"' not in page.text
    assert rid not in (await http.get("/approvals")).text
    r = await http.post(f"/approvals/{rid}", data={"csrf": csrf, "decision": "approve"})
    assert r.status_code == 409 and "expired" in r.text
    assert (await ctx.approvals.get(rid)).status == "expired"  # type: ignore[union-attr]


@pytest.mark.parametrize("csrf", [None, "", "wrong", "other-session"])
async def test_decision_without_the_right_csrf_token_is_refused(ctx: ServerContext, browsers: Any,
                                                                csrf: str | None) -> None:
    http, subject = await _alice(ctx, browsers)
    rid = await _request(ctx, subject)
    if csrf == "other-session":
        other, _ = await _alice(ctx, browsers, "bob")
        csrf = _field((await other.get("/approvals")).text, "csrf")
    data = {"decision": "approve"} if csrf is None else {"csrf": csrf, "decision": "approve"}
    r = await http.post(f"/approvals/{rid}", data=data)
    assert r.status_code == 403
    for name, value in PAGE_HEADERS.items():
        assert r.headers[name] == value
    assert (await ctx.approvals.get(rid)).status == "pending"  # type: ignore[union-attr]


async def test_signout_needs_csrf(ctx: ServerContext, browsers: Any) -> None:
    http, _ = await _alice(ctx, browsers)
    assert (await http.post("/signout", data={})).status_code == 403
    assert (await http.get("/approvals")).status_code == 200


async def test_decision_needs_a_session(client: httpx.AsyncClient, ctx: ServerContext) -> None:
    subject = await add_user(ctx.store, "alice", PASSWORD)
    rid = await _request(ctx, subject)
    r = await client.post(f"/approvals/{rid}", data={"decision": "approve"})
    assert r.status_code == 303 and r.headers["location"].startswith("/signin?next=")
    assert (await ctx.approvals.get(rid)).status == "pending"  # type: ignore[union-attr]


# -- waiting for the outcome ----------------------------------------------------------------------------------


async def test_status_json_access_control(ctx: ServerContext, browsers: Any, client: httpx.AsyncClient) -> None:
    alice, subject = await _alice(ctx, browsers)
    bob, _ = await _alice(ctx, browsers, "bob")
    owner_id, owner_secret = await add_client(ctx.store, auth_method="client_secret_basic")
    other_id, other_secret = await add_client(ctx.store, auth_method="client_secret_basic")
    public_id, _ = await add_client(ctx.store)
    rid = await _request(ctx, subject, client_id=owner_id)

    r = await client.get(f"/approvals/{rid}/status")
    assert r.status_code == 401 and r.headers["cache-control"] == "no-store"
    r = await client.get(f"/approvals/{rid}/status", auth=(owner_id, owner_secret or ""))
    assert r.status_code == 200 and r.json() == {"id": rid, "status": "pending", "decided_at": None}
    assert r.headers["cache-control"] == "no-store"
    assert (await client.get(f"/approvals/{rid}/status", auth=(owner_id, "wrong"))).status_code == 401
    assert (await client.get(f"/approvals/{rid}/status", auth=(other_id, other_secret or ""))).status_code == 404
    assert (await client.get(f"/approvals/{rid}/status", auth=(public_id, ""))).status_code == 401
    r = await client.get("/approvals/unknown/status", auth=(owner_id, owner_secret or ""))
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    assert (await alice.get(f"/approvals/{rid}/status")).json()["status"] == "pending"
    assert (await bob.get(f"/approvals/{rid}/status")).status_code == 404

    await ctx.approvals.decide(rid, True, by=subject, channel="web")
    body = (await client.get(f"/approvals/{rid}/status", auth=(owner_id, owner_secret or ""))).json()
    assert body["status"] == "approved" and isinstance(body["decided_at"], int)


def _events(text: str) -> list[dict[str, Any]]:
    out = []
    for block in text.split("\n\n"):
        lines = block.split("\n")
        if "event: status" in lines:
            out.append(json.loads(next(x for x in lines if x.startswith("data: "))[6:]))
    return out


async def test_events_stream_delivers_the_decision(ctx: ServerContext, browsers: Any, client: httpx.AsyncClient,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(approvals_web, "EVENTS_POLL", 0.05)
    http, subject = await _alice(ctx, browsers)
    client_id, secret = await add_client(ctx.store, auth_method="client_secret_basic")
    rid = await _request(ctx, subject, client_id=client_id)

    async def decide_soon() -> None:
        await asyncio.sleep(0.3)
        csrf = _field((await http.get(f"/approvals/{rid}")).text, "csrf")
        assert (await http.post(f"/approvals/{rid}", data={"csrf": csrf, "decision": "approve"})).status_code == 200

    stream, _ = await asyncio.wait_for(asyncio.gather(
        client.get(f"/approvals/{rid}/events", auth=(client_id, secret or "")), decide_soon()), 10)
    assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
    assert [e["status"] for e in _events(stream.text)] == ["pending", "approved"]
    assert all(e["id"] == rid for e in _events(stream.text))


async def test_events_end_on_expiry_and_send_heartbeats(ctx: ServerContext, browsers: Any,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(approvals_web, "EVENTS_POLL", 0.02)
    monkeypatch.setattr(approvals_web, "EVENTS_HEARTBEAT", 0.05)
    http, subject = await _alice(ctx, browsers)
    rid = await _request(ctx, subject, ttl=30)

    async def expire_soon() -> None:
        await asyncio.sleep(0.3)
        ctx.clock.advance(31)  # type: ignore[attr-defined]

    stream, _ = await asyncio.wait_for(asyncio.gather(http.get(f"/approvals/{rid}/events"), expire_soon()), 10)
    assert [e["status"] for e in _events(stream.text)] == ["pending", "expired"]
    assert ": keep-alive" in stream.text


async def test_events_stream_is_bounded(ctx: ServerContext, browsers: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(approvals_web, "EVENTS_POLL", 0.02)
    monkeypatch.setattr(approvals_web, "EVENTS_MAX_SECONDS", 0.2)
    http, subject = await _alice(ctx, browsers)
    rid = await _request(ctx, subject)
    stream = await asyncio.wait_for(http.get(f"/approvals/{rid}/events"), 10)
    assert [e["status"] for e in _events(stream.text)] == ["pending"]
    assert (await http.get("/approvals/unknown/events")).status_code == 404


async def test_escalation_details_read_as_sentences(ctx: ServerContext) -> None:
    from authgate.approvals.web import _detail_view

    view = _detail_view({"scopes": ["orders:write"], "elevated_scopes": ["orders:write"], "channel": "pstn",
                         "caller_id_mismatch": True, "conversation_id": "c-1"})
    lines = dict(view["extra"])
    assert lines["The agent is talking to you by"] == "phone call"
    assert lines["Needs your approval for"] == "orders:write"
    assert lines["Caller check"].startswith("WARNING")
