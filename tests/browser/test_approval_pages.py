"""The approval inbox and request pages in real headless Chromium: sign in, see a pending request, approve or
deny it while the agent polls for the outcome; expired requests; a form without its CSRF token; keyboard only."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from tests.browser.conftest import PASSWORD, Server, agent_polling, require_playwright, screenshot, sign_in
from tests.helpers import add_client

require_playwright()
from playwright.async_api import Page, Response, expect  # noqa: E402

REASON = "I need to save the notes from today's meeting.\n<b>Trust me</b> & approve <script>alert(1)</script>"
TITLE = "An agent asks for more access"


async def _request(server: Server, subject: str, client_id: str | None = None, **over: Any) -> str:
    args: dict[str, Any] = {
        "kind": "scope_escalation", "subject": subject, "client_id": client_id,
        "details": {"scopes": ["notes:write"], "resource": "https://notes.example/api", "amount": "12.50",
                    "currency": "USD"},
        "reason": REASON, "binding_message": "K7-42"}
    args.update(over)
    return (await server.ctx.approvals.create(**args)).id


async def _agent(server: Server) -> tuple[str, str]:
    client_id, secret = await add_client(server.ctx.store, auth_method="client_secret_basic",
                                         client_name="Notes <i>Agent</i>")
    assert secret
    return client_id, secret


async def _status(server: Server, rid: str) -> str:
    r = await server.ctx.approvals.get(rid)
    assert r is not None
    return r.status


def _posts(page: Page) -> Any:
    return page.expect_response(lambda r: r.request.method == "POST" and "/approvals/" in r.url)


async def _no_decision_buttons(page: Page) -> None:
    await expect(page.get_by_role("button", name="Approve")).to_have_count(0)
    await expect(page.get_by_role("button", name="Deny")).to_have_count(0)


async def test_sign_in_see_pending_approve_and_the_agents_poll_succeeds(server: Server, page: Page,
                                                                         console: list[str]) -> None:
    subject = await server.user("alice")
    client_id, secret = await _agent(server)
    rid = await _request(server, subject, client_id)

    async with agent_polling(server, rid, client_id, secret) as agent:
        await sign_in(page, server)
        await expect(page.get_by_role("heading", level=1)).to_have_text("Requests waiting for you")
        await expect(page.get_by_text("Signed in as alice")).to_be_visible()
        entry = page.get_by_role("link", name=TITLE)
        await expect(entry).to_have_count(1)
        await expect(page.get_by_role("listitem")).to_contain_text("From Notes <i>Agent</i>")
        await screenshot(page, "inbox")
        await entry.click()
        await page.wait_for_url(f"{server.url}/approvals/{rid}")

        # Who, what and why — the agent's reason verbatim, as text (nothing in it is markup), and labelled.
        await expect(page.get_by_role("heading", level=1)).to_have_text(TITLE)
        await expect(page.get_by_text("Notes <i>Agent</i>", exact=True)).to_be_visible()
        await expect(page.get_by_text("(name provided by the application, unverified)")).to_be_visible()
        await expect(page.get_by_text("(the agent's words, unverified)")).to_be_visible()
        words = page.locator("blockquote.agent-words")
        assert await words.inner_text() == REASON
        assert await words.locator("b, script").count() == 0
        await expect(words).to_have_attribute("aria-labelledby", "reason-label")
        for shown in ("notes:write", "https://notes.example/api", "12.50 USD", "K7-42"):
            await expect(page.locator("main")).to_contain_text(shown)
        await expect(page.locator("#status")).to_have_text("Waiting for your decision")
        await screenshot(page, "approval")

        await asyncio.sleep(0.5)
        assert not agent.done(), "the agent's poll ended before anyone decided"
        async with _posts(page) as posted:
            await page.get_by_role("button", name="Approve").click()
        assert (await posted.value).status == 200
        await expect(page.get_by_role("heading", level=1)).to_have_text("Approved")
        await screenshot(page, "approved")
        seen = await asyncio.wait_for(agent, 15)

    assert seen[0] == "pending" and seen[-1] == "approved", seen
    decided = await server.ctx.approvals.get(rid)
    assert decided is not None and decided.decided_by == subject and decided.channel == "web"
    await page.goto(f"{server.url}/approvals/{rid}")
    await expect(page.locator("#status")).to_have_text("Approved")
    await _no_decision_buttons(page)
    await page.goto(f"{server.url}/approvals")
    await expect(page.get_by_text("Nothing is waiting for a decision.")).to_be_visible()
    assert console == [], console


async def test_deny(server: Server, page: Page, console: list[str]) -> None:
    subject = await server.user("alice")
    client_id, secret = await _agent(server)
    rid = await _request(server, subject, client_id)
    async with agent_polling(server, rid, client_id, secret) as agent:
        await sign_in(page, server, next_path=f"/approvals/{rid}")
        async with _posts(page) as posted:
            await page.get_by_role("button", name="Deny").click()
        assert (await posted.value).status == 200
        await expect(page.get_by_role("heading", level=1)).to_have_text("Denied")
        seen = await asyncio.wait_for(agent, 15)
    assert seen[-1] == "denied", seen
    assert await _status(server, rid) == "denied"
    await page.goto(f"{server.url}/approvals/{rid}")
    await expect(page.locator("#status")).to_have_text("Denied")
    await _no_decision_buttons(page)
    assert console == [], console


async def test_expired_request_shows_as_expired_without_buttons(server: Server, page: Page) -> None:
    subject = await server.user("alice")
    rid = await _request(server, subject, ttl=60)
    await sign_in(page, server, next_path=f"/approvals/{rid}")
    await expect(page.get_by_role("button", name="Approve")).to_be_visible()

    # The page was opened in time, but the request expires before the click: refused, and nothing changes.
    server.clock.advance(61)
    async with _posts(page) as posted:
        await page.get_by_role("button", name="Approve").click()
    assert (await posted.value).status == 409
    await expect(page.get_by_role("heading", level=1)).to_have_text("Already closed")
    await expect(page.locator("main")).to_contain_text("expired before it was decided")
    assert await _status(server, rid) == "expired"

    await page.goto(f"{server.url}/approvals/{rid}")
    await expect(page.locator("#status")).to_have_text("Expired — it can no longer be decided")
    await _no_decision_buttons(page)
    assert await page.locator("form[action^='/approvals/']").count() == 0
    await screenshot(page, "expired")
    await page.goto(f"{server.url}/approvals")
    await expect(page.get_by_role("link", name=TITLE)).to_have_count(0)


async def test_form_without_its_csrf_token_is_refused(server: Server, page: Page) -> None:
    subject = await server.user("alice")
    rid = await _request(server, subject)
    await sign_in(page, server, next_path=f"/approvals/{rid}")
    removed = await page.evaluate("""() => {
        const fields = document.querySelectorAll("form[action^='/approvals/'] input[name=csrf]");
        fields.forEach(f => f.remove());
        return fields.length;
    }""")
    assert removed == 1
    async with _posts(page) as posted:
        await page.get_by_role("button", name="Approve").click()
    refused = await posted.value
    assert refused.status == 403
    await expect(page.get_by_role("heading", level=1)).to_have_text("This form has expired")
    await screenshot(page, "csrf-refused")
    assert await _status(server, rid) == "pending"

    # The same form with its token intact goes through: the 403 was the missing token, nothing else.
    await page.goto(f"{server.url}/approvals/{rid}")
    async with _posts(page) as posted:
        await page.get_by_role("button", name="Approve").click()
    assert (await posted.value).status == 200
    assert await _status(server, rid) == "approved"


async def _tab_to(page: Page, name: str, limit: int = 25) -> None:
    for _ in range(limit):
        await page.keyboard.press("Tab")
        focused = await page.evaluate("document.activeElement && document.activeElement.textContent.trim()")
        if focused == name:
            return
    raise AssertionError(f"{name!r} never received keyboard focus")


async def test_keyboard_only_sign_in_and_approve(server: Server, page: Page) -> None:
    subject = await server.user("alice")
    rid = await _request(server, subject)
    await page.goto(f"{server.url}/approvals/{rid}")
    await page.wait_for_url(re.compile(r"/signin\?next="))
    # The username field has focus on arrival (waited for, so a slow machine can't type into nothing);
    # Tab moves on to the password; Enter submits.
    await expect(page.get_by_label("Username")).to_be_focused()
    await page.keyboard.type("alice")
    await page.keyboard.press("Tab")
    await page.keyboard.type(PASSWORD)
    await page.keyboard.press("Enter")
    await page.wait_for_url(f"{server.url}/approvals/{rid}")

    await _tab_to(page, "Approve")
    outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("none", ""), "the focused button shows no focus outline"
    async with _posts(page) as posted:
        await page.keyboard.press("Enter")
    response: Response = await posted.value
    assert response.status == 200
    await expect(page.get_by_role("heading", level=1)).to_have_text("Approved")
    assert await _status(server, rid) == "approved"
