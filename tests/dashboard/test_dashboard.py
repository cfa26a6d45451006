"""The operator's dashboard and the person's page over HTTP: admin sign-in kept apart from people's sign-in,
CSRF on every state-changing form, revocations that really revoke, audit of every admin action, payment search
with explorer links, the audit log's filters and pages, and the chart series."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from authgate.app import create_app
from authgate.clock import FrozenClock
from authgate.config import Settings
from authgate.context import ServerContext
from authgate.dashboard import queries
from authgate.dashboard.charts import bar_chart
from authgate.dashboard.views import explorer_url, parse_time
from authgate.store.agentauth import AgentAuthRepository
from authgate.trust.killswitch import KillSwitch
from authgate.trust.store import TrustStore
from tests.conftest import ISSUER
from tests.dashboard.seed import EMBEDDED, PASSWORD, SEPOLIA, World, seed


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


@pytest.fixture
async def world(ctx: ServerContext) -> World:
    return await seed(ctx)


@asynccontextmanager
async def browser(ctx: ServerContext) -> AsyncIterator[httpx.AsyncClient]:
    """A separate cookie jar: one person's browser."""
    transport = httpx.ASGITransport(app=create_app(ctx), client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as http:
        yield http


async def admin_sign_in(http: httpx.AsyncClient, username: str = "root", password: str = PASSWORD) -> httpx.Response:
    page = await http.get("/admin/signin")
    return await http.post("/admin/signin", data={"csrf": csrf_of(page.text), "username": username,
                                                  "password": password})


async def user_sign_in(http: httpx.AsyncClient, username: str) -> None:
    page = await http.get("/signin")
    r = await http.post("/signin", data={"csrf": csrf_of(page.text), "username": username, "password": PASSWORD,
                                         "next": "/me"})
    assert r.status_code == 303, r.text


async def test_admin_pages_need_an_admin_session(ctx: ServerContext, world: World) -> None:
    async with browser(ctx) as http:
        for path in ("/admin", "/admin/agents", "/admin/users", "/admin/consents", "/admin/approvals",
                     "/admin/payments", "/admin/audit"):
            r = await http.get(path)
            assert r.status_code == 303 and r.headers["location"] == "/admin/signin", path
        r = await admin_sign_in(http)
        assert r.status_code == 303 and r.headers["location"] == "/admin"
        cookie = r.headers["set-cookie"]
        assert "authgate_admin=" in cookie and "Path=/admin" in cookie and "HttpOnly" in cookie
        assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
        page = await http.get("/admin")
        assert page.status_code == 200 and "Requests (audit events)" in page.text
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    events = await ctx.store.audit_events(limit=5)
    assert any(e["event"] == "admin.session_started" and e["subject"] == world.admin for e in events)


async def test_a_person_is_not_an_operator(ctx: ServerContext, world: World) -> None:
    async with browser(ctx) as http:
        r = await admin_sign_in(http, "alice")
        assert r.status_code == 401 and "not an operator" in r.text
        assert "authgate_admin=" not in r.headers.get("set-cookie", "")
        r = await admin_sign_in(http, "root", "wrong")
        assert r.status_code == 401
    # An end-user session -- even an admin's own people-side session -- never opens the dashboard.
    for name in ("alice", "root"):
        async with browser(ctx) as http:
            await user_sign_in(http, name)
            assert (await http.get("/me")).status_code == 200
            r = await http.get("/admin/consents")
            assert r.status_code == 303 and r.headers["location"] == "/admin/signin"
            # Not even with the people-side session value replayed in the admin cookie.
            value = http.cookies.get("authgate_session")
            assert value
            http.cookies.set("authgate_admin", value, domain="127.0.0.1", path="/admin")
            r = await http.get("/admin")
            assert r.status_code == 303


async def test_admin_session_does_not_reach_people_pages(ctx: ServerContext, world: World) -> None:
    async with browser(ctx) as http:
        await admin_sign_in(http)
        r = await http.get("/me")
        assert r.status_code == 303 and r.headers["location"].startswith("/signin")


async def test_demoted_operator_loses_the_dashboard_at_once(ctx: ServerContext, world: World) -> None:
    async with browser(ctx) as http:
        await admin_sign_in(http)
        assert (await http.get("/admin/users")).status_code == 200
        await ctx.store.update_user("root", is_admin=False)
        assert (await http.get("/admin/users")).status_code == 303


async def test_signin_form_needs_its_csrf_cookie(ctx: ServerContext, world: World) -> None:
    async with browser(ctx) as http:
        r = await http.post("/admin/signin", data={"csrf": "x", "username": "root", "password": PASSWORD})
        assert r.status_code == 403
        assert "authgate_admin=" not in r.headers.get("set-cookie", "")


async def test_admin_revokes_an_oauth_consent(ctx: ServerContext, world: World) -> None:
    async with browser(ctx) as http:
        await admin_sign_in(http)
        page = await http.get("/admin/consents")
        assert world.grant_id in page.text and "alice" in page.text and "Notes helper" not in page.text
        token = csrf_of(page.text)
        # No token, or a wrong one: refused, nothing changed.
        for data in ({"grant_id": world.grant_id}, {"grant_id": world.grant_id, "csrf": token + "x"}):
            r = await http.post("/admin/consents/revoke", data=data)
            assert r.status_code == 403
        assert await queries.grant_of(ctx.store, world.grant_id, ctx.now()) is not None
        r = await http.post("/admin/consents/revoke", data={"grant_id": world.grant_id, "csrf": token})
        assert r.status_code == 303
        assert await queries.grant_of(ctx.store, world.grant_id, ctx.now()) is None
        assert await queries.grant_of(ctx.store, world.bob_grant_id, ctx.now()) is not None
        # The refresh token of the revoked grant no longer works.
        r = await http.post("/token", data={"grant_type": "refresh_token", "refresh_token": world.refresh_token,
                                            "client_id": world.client_id})
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
        again = await http.post("/admin/consents/revoke", data={"grant_id": world.grant_id, "csrf": token})
        assert again.status_code == 404
    event = next(e for e in await ctx.store.audit_events(limit=20) if e["event"] == "admin.consent_revoked")
    assert event["subject"] == world.admin and event["client_id"] == world.client_id
    assert event["detail"]["owner"] == world.alice and event["detail"]["grant_id"] == world.grant_id


async def test_admin_revokes_an_agentauth_consent_and_disables_an_agent(ctx: ServerContext, world: World) -> None:
    repo = AgentAuthRepository(ctx.store)
    switch = KillSwitch(TrustStore(ctx.store))
    async with browser(ctx) as http:
        await admin_sign_in(http)
        token = csrf_of((await http.get("/admin/consents")).text)
        r = await http.post("/admin/consents/revoke", data={
            "csrf": token, "subject": world.alice, "agent_id": world.agent_id,
            "resource": "https://journal.example", "scope": "journal:read"})
        assert r.status_code == 303
        assert await repo.remembered_scopes(world.alice, world.agent_id, "https://journal.example") == set()
        page = await http.get("/admin/agents")
        assert "Agent Auth · HTTP message signatures" in page.text and "OAuth · static · none" in page.text
        kill = {"kind": "agent", "ident": world.agent_id}
        assert (await http.post("/admin/kill", data=kill)).status_code == 403
        assert await switch.killed(agents=[world.agent_id]) is None
        r = await http.post("/admin/kill", data={**kill, "csrf": token})
        assert r.status_code == 303
        # On the kill list every process reads, and the agent's own tokens are revoked.
        assert await switch.killed(agents=[world.agent_id]) == f"agent:{world.agent_id}"
        assert not (await repo.get_agent(world.agent_id)).active  # type: ignore[union-attr]
        assert "disabled (kill switch)" in (await http.get("/admin/agents")).text
        r = await http.post("/admin/kill", data={"kind": "agent", "ident": "aauth:nobody@x", "csrf": token})
        assert r.status_code == 404
        assert (await http.post("/admin/kill", data={**kill, "kind": "planet", "csrf": token})).status_code == 400
        r = await http.post("/admin/kill", data={**kill, "action": "revive", "csrf": token})
        assert r.status_code == 303 and await switch.killed(agents=[world.agent_id]) is None
        r = await http.post("/admin/kill", data={"kind": "client", "ident": world.client_id, "csrf": token})
        assert r.status_code == 303 and await switch.killed(clients=[world.client_id]) is not None
        assert await queries.live_grants(ctx.store, ctx.now()) == []
        r = await http.post("/admin/kill", data={"kind": "user", "ident": world.bob, "csrf": token})
        assert r.status_code == 303 and await switch.killed(users=[world.bob]) is not None
    events = [e for e in await ctx.store.audit_events(limit=30) if e["event"].startswith("admin.")]
    assert {e["event"] for e in events} >= {"admin.consent_revoked", "admin.disabled", "admin.revived"}
    assert all(e["subject"] == world.admin for e in events)


async def test_admin_revokes_every_token_of_a_client(ctx: ServerContext, world: World) -> None:
    async with browser(ctx) as http:
        await admin_sign_in(http)
        token = csrf_of((await http.get("/admin/agents")).text)
        r = await http.post("/admin/clients/revoke-tokens", data={"client_id": world.client_id, "csrf": token})
        assert r.status_code == 303
    assert await queries.live_grants(ctx.store, ctx.now()) == []
    event = (await ctx.store.audit_events(limit=1))[0]
    assert event["event"] == "admin.client_tokens_revoked" and event["detail"]["count"] == 4


async def test_payments_search_and_explorer_links(ctx: ServerContext, world: World) -> None:
    assert explorer_url("eip155:8453", "0xab") == "https://basescan.org/tx/0xab"
    assert explorer_url(SEPOLIA, "0xab") == "https://sepolia.basescan.org/tx/0xab"
    assert explorer_url(EMBEDDED, "0xab") == "" and explorer_url(SEPOLIA, None) == ""
    async with browser(ctx) as http:
        await admin_sign_in(http)
        page = (await http.get("/admin/payments")).text
        assert world.payment_id in page and world.local_payment_id in page
        assert f'href="https://sepolia.basescan.org/tx/{world.paid_tx}"' in page
        assert page.count("basescan.org") == 1  # the embedded chain's payment has no link
        found = (await http.get("/admin/payments", params={"q": world.paid_tx.upper().replace("0X", "0x")})).text
        assert world.payment_id in found and world.local_payment_id not in found
        none = (await http.get("/admin/payments", params={"q": "0x" + "9" * 40, "status": "bogus"})).text
        assert "No payments match." in none


async def test_audit_log_filters_and_pages(ctx: ServerContext, world: World, clock: FrozenClock) -> None:
    for i in range(60):
        await ctx.store.audit("token.denied", client_id="c_other", subject=f"s{i % 2}")
    async with browser(ctx) as http:
        await admin_sign_in(http)
        first = await http.get("/admin/audit", params={"event": "token.denied", "subject": "s1"})
        assert first.status_code == 200
        assert first.text.count('class="denial">token.denied') == 30 and "Older" not in first.text
        paged = await http.get("/admin/audit", params={"event": "token.denied"})
        assert paged.text.count("class=\"denial\">token.denied") == 50 and "page=2" in paged.text
        second = await http.get("/admin/audit", params={"event": "token.denied", "page": "2"})
        assert second.text.count("class=\"denial\">token.denied") == 10
        by_client = await http.get("/admin/audit", params={"client": world.client_id})
        assert "token.issued" in by_client.text and "c_other" not in by_client.text
        prefix = await http.get("/admin/audit", params={"event": "admin."})
        assert "admin.session_started" in prefix.text and "class=\"denial\">token.denied" not in prefix.text
        day = parse_time("2027-01-15")
        assert day == 1_800_000_000 - 1_800_000_000 % 86400
        later = await http.get("/admin/audit", params={"since": "2027-01-16"})
        assert "No events match." in later.text
        bad = await http.get("/admin/audit", params={"since": "yesterday", "page": "-3"})
        assert bad.status_code == 400 and "is not a date" in bad.text


async def test_chart_series_buckets(ctx: ServerContext, clock: FrozenClock, world: World) -> None:
    now = ctx.now()
    clock.advance(3600)
    await ctx.store.audit("authorization.denied")
    await ctx.store.audit("token.issued")
    data = await queries.series(ctx.store, ctx.now(), 3600, 24)
    assert data.starts[-1] <= ctx.now() < data.starts[-1] + 3600
    assert data.requests[-1] == 2 and data.denials[-1] == 1
    seeded = sum(1 for e in await ctx.store.audit_events(limit=1000) if e["at"] == now)
    assert data.requests[-2] == seeded and data.denials[-2] == 0
    assert data.payments[-2] == 2 and sum(data.payments) == 2
    chart = bar_chart("Denials", data.starts, data.denials, "%H:00")
    assert chart.total == 1 and chart.peak == 1 and len(chart.bars) == 24 and chart.bars[-1].height > 0
    assert bar_chart("empty", [0, 3600], [0, 0], "%H").bars[0].height == 0


async def test_person_sees_and_revokes_only_their_own(ctx: ServerContext, world: World) -> None:
    async with browser(ctx) as http:
        r = await http.get("/me")
        assert r.status_code == 303 and r.headers["location"] == "/signin?next=/me"
        await user_sign_in(http, "alice")
        page = await http.get("/me")
        assert "Notes helper" in page.text and "journal bot" in page.text and "journal:read" in page.text
        assert world.bob_grant_id not in page.text
        token = csrf_of(page.text)
        # Bob's grant: the same 404 as for an unknown one; nothing changes.
        r = await http.post("/me/revoke", data={"csrf": token, "what": "grant", "grant_id": world.bob_grant_id})
        assert r.status_code == 404
        assert await queries.grant_of(ctx.store, world.bob_grant_id, ctx.now()) is not None
        r = await http.post("/me/revoke", data={"what": "grant", "grant_id": world.grant_id})
        assert r.status_code == 403
        r = await http.post("/me/revoke", data={"csrf": token, "what": "grant", "grant_id": world.grant_id})
        assert r.status_code == 303
        assert await queries.grant_of(ctx.store, world.grant_id, ctx.now()) is None
        r = await http.post("/me/revoke", data={"csrf": token, "what": "agentauth_consent",
                                                "agent_id": world.agent_id, "resource": "https://journal.example",
                                                "scope": "journal:read"})
        assert r.status_code == 303
        r = await http.post("/me/revoke", data={"csrf": token, "what": "agent", "agent_id": world.agent_id})
        assert r.status_code == 303
        assert (await http.post("/me/revoke", data={"csrf": token, "what": "other"})).status_code == 400
        # Mandates: alice's own is revoked; bob's is the same 404 as an unknown one.
        page = await http.get("/me")
        assert world.mandate_jti in page.text and "50000 per day" in page.text and "20000 per payment" in page.text
        assert world.bob_mandate_jti not in page.text
        r = await http.post("/me/revoke", data={"csrf": token, "what": "mandate", "jti": world.bob_mandate_jti})
        assert r.status_code == 404
        r = await http.post("/me/revoke", data={"csrf": token, "what": "mandate", "jti": world.mandate_jti})
        assert r.status_code == 303
        trust = TrustStore(ctx.store)
        assert (await trust.get_mandate(world.mandate_jti)).revoked_at is not None  # type: ignore[union-attr]
        assert (await trust.get_mandate(world.bob_mandate_jti)).revoked_at is None  # type: ignore[union-attr]
    async with browser(ctx) as http:
        await user_sign_in(http, "bob")
        token = csrf_of((await http.get("/me")).text)
        r = await http.post("/me/revoke", data={"csrf": token, "what": "agent", "agent_id": world.agent_id})
        assert r.status_code == 404
    mine = [e for e in await ctx.store.audit_events(limit=40) if e["event"].startswith("me.")]
    assert {e["event"] for e in mine} == {"me.consent_revoked", "me.agent_revoked", "me.mandate_revoked"}
    assert all(e["subject"] == world.alice for e in mine)


async def test_dashboard_can_be_switched_off(make_client: Callable[..., Any], settings: Settings) -> None:
    _, http = await make_client(settings, dashboard_enabled=False)
    assert (await http.get("/admin/signin")).status_code == 404
    assert (await http.get("/me")).status_code == 404


async def test_admin_sees_and_revokes_mandates(ctx: ServerContext, world: World) -> None:
    trust = TrustStore(ctx.store)
    async with browser(ctx) as http:
        await admin_sign_in(http)
        page = await http.get("/admin/mandates")
        assert world.mandate_jti in page.text and world.bob_mandate_jti in page.text
        assert "GET /weather" in page.text and "50000 per day" in page.text and "20000" in page.text
        token = csrf_of(page.text)
        r = await http.post("/admin/mandates/revoke", data={"jti": world.bob_mandate_jti, "csrf": token})
        assert r.status_code == 303
        assert (await trust.get_mandate(world.bob_mandate_jti)).revoked_at is not None  # type: ignore[union-attr]
        again = await http.post("/admin/mandates/revoke", data={"jti": world.bob_mandate_jti, "csrf": token})
        assert again.status_code == 404
    event = next(e for e in await ctx.store.audit_events(limit=10) if e["event"] == "admin.mandate_revoked")
    assert event["subject"] == world.admin and event["detail"]["owner"] == world.bob


def test_dashboard_settings_are_validated(settings: Settings) -> None:
    from dataclasses import replace

    from authgate.config import ConfigError

    for name, value in (("dashboard_session_ttl", 10), ("dashboard_session_ttl", 90_000),
                        ("dashboard_page_size", 5), ("dashboard_page_size", 501)):
        changes: dict[str, Any] = {name: value}
        with pytest.raises(ConfigError, match=name):
            replace(settings, **changes).validate()


def test_every_dashboard_post_form_carries_a_csrf_token() -> None:
    """The house check (tests/security) reads only the top-level templates; the dashboard's live one level down."""
    from pathlib import Path

    import authgate.web

    templates = Path(authgate.web.__file__).with_name("templates") / "dashboard"
    forms = 0
    for path in sorted(templates.glob("*.html")):
        for form in re.findall(r"<form\b[^>]*>.*?</form>", path.read_text(), flags=re.S | re.I):
            if re.search(r'method="post"', form, flags=re.I):
                forms += 1
                assert re.search(r'<input type="hidden" name="csrf" value="\{\{ csrf \}\}"', form), path.name
    assert forms >= 12
