"""The operator's dashboard and a person's own page in real headless Chromium: the operator signs in, finds a
payment (with its explorer link), revokes a consent and disables an agent through the kill switch; a person
revokes a mandate; a person's session does not open the dashboard. Screenshots in ``.cache/screenshots/``."""

from __future__ import annotations

import re

from authgate.dashboard import queries
from authgate.trust.killswitch import KillSwitch
from authgate.trust.store import TrustStore
from tests.browser.conftest import PASSWORD, Server, require_playwright, screenshot, sign_in
from tests.dashboard.seed import seed

require_playwright()
from playwright.async_api import Page, expect  # noqa: E402


async def admin_sign_in(page: Page, server: Server) -> None:
    await page.goto(server.url + "/admin/consents")
    assert page.url == server.url + "/admin/signin", page.url
    await expect(page.get_by_role("heading", level=1)).to_have_text("Operator sign-in")
    await page.get_by_label("Username").fill("root")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(server.url + "/admin")


async def test_operator_finds_a_payment_revokes_a_consent_and_disables_an_agent(
        server: Server, page: Page, console: list[str]) -> None:
    world = await seed(server.ctx)
    await admin_sign_in(page, server)
    await expect(page.get_by_role("img", name=re.compile(r"Payments settled: 2 in total"))).to_be_visible()
    await screenshot(page, "dashboard-overview")

    # Find a payment by its transaction hash; Base Sepolia links to its explorer.
    await page.get_by_role("link", name="Payments").click()
    await page.get_by_label("Payment id, transaction, payer or payee").fill(world.paid_tx)
    await page.get_by_role("button", name="Find").click()
    await page.wait_for_url(re.compile(r"/admin/payments\?q="))
    await expect(page.get_by_text(world.payment_id)).to_be_visible()
    await expect(page.get_by_text(world.local_payment_id)).to_have_count(0)
    link = page.get_by_role("link", name=world.paid_tx)
    await expect(link).to_have_attribute("href", f"https://sepolia.basescan.org/tx/{world.paid_tx}")
    await screenshot(page, "dashboard-payment-found")

    # Revoke alice's consent to the notes client; bob's stays.
    await page.get_by_role("link", name="Consents").click()
    await page.get_by_role("button", name=f"Revoke consent of alice to {world.client_id}").click()
    await page.wait_for_url(server.url + "/admin/consents")
    await expect(page.get_by_role("button", name=f"Revoke consent of alice to {world.client_id}")).to_have_count(0)
    await expect(page.get_by_role("button", name=f"Revoke consent of bob to {world.client_id}")).to_have_count(1)
    assert await queries.grant_of(server.ctx.store, world.grant_id, server.ctx.now()) is None
    await screenshot(page, "dashboard-consent-revoked")

    # Disable the agent: on the kill list every process checks, and its tokens are revoked.
    await page.get_by_role("link", name="Clients & agents").click()
    await page.get_by_role("button", name="Disable journal bot").click()
    await page.wait_for_url(server.url + "/admin/agents")
    await expect(page.get_by_text("disabled (kill switch)")).to_be_visible()
    await expect(page.get_by_role("button", name="Re-enable journal bot")).to_be_visible()
    switch = KillSwitch(TrustStore(server.ctx.store))
    assert await switch.killed(agents=[world.agent_id]) == f"agent:{world.agent_id}"
    await screenshot(page, "dashboard-agent-disabled")

    await page.get_by_role("link", name="Audit log").click()
    await page.get_by_label("Event").select_option("admin.disabled")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.locator("td.denial, td").filter(has_text="admin.disabled")).to_have_count(1)
    await screenshot(page, "dashboard-audit")
    assert console == []


async def test_person_revokes_a_mandate_on_their_page(server: Server, page: Page, console: list[str]) -> None:
    world = await seed(server.ctx)
    await sign_in(page, server, "alice", "/me")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Your agents and what they may do")
    await expect(page.get_by_text("50000 per day")).to_be_visible()
    await expect(page.get_by_text("20000 per payment")).to_be_visible()
    await screenshot(page, "me-before")
    await page.get_by_role("button", name=f"Revoke mandate for {world.agent_id}").click()
    await page.wait_for_url(server.url + "/me")
    await expect(page.get_by_role("button", name=f"Revoke mandate for {world.agent_id}")).to_have_count(0)
    await expect(page.get_by_text("revoked", exact=True)).to_be_visible()
    row = await TrustStore(server.ctx.store).get_mandate(world.mandate_jti)
    assert row is not None and row.revoked_at is not None
    await screenshot(page, "me-mandate-revoked")
    assert console == []


async def test_a_person_session_does_not_open_the_dashboard(server: Server, page: Page) -> None:
    await seed(server.ctx)
    # root is an operator, but signed in on the people's side only.
    await sign_in(page, server, "root", "/me")
    await page.goto(server.url + "/admin")
    assert page.url == server.url + "/admin/signin"
    await expect(page.get_by_role("heading", level=1)).to_have_text("Operator sign-in")
