"""The OAuth consent page in real headless Chromium: a registered public client with PKCE, sign-in on the page or
an existing session, Allow or Deny, and the browser really landing on the client's redirect URI — which also
proves the page's CSP ``form-action`` lets the 303 to the client through."""

from __future__ import annotations

import re
import secrets
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from authgate.oauth import authorize
from authgate.web import PAGE_HEADERS
from tests.browser.conftest import PASSWORD, Server, callback_server, require_playwright, screenshot, sign_in
from tests.helpers import add_client, pkce_pair

require_playwright()
from playwright.async_api import Page, expect  # noqa: E402

CLIENT_NAME = "Calendar <b>helper</b>"


async def _client(server: Server, redirect_uri: str) -> str:
    client_id, _ = await add_client(server.ctx.store, redirect_uris=[redirect_uri], scope="read write",
                                    client_name=CLIENT_NAME)
    return client_id


def _authorize_url(server: Server, client_id: str, redirect_uri: str, challenge: str, state: str) -> str:
    return server.url + "/authorize?" + urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "state": state,
        "code_challenge": challenge, "code_challenge_method": "S256", "scope": "read write"})


def _landed(page: Page, redirect_uri: str) -> dict[str, str]:
    parts = urlsplit(page.url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == redirect_uri, page.url
    return {k: v[0] for k, v in parse_qs(parts.query).items()}


async def _expect_consent_page(page: Page) -> None:
    await expect(page.get_by_role("heading", level=1)).to_have_text("Allow access?")
    await expect(page.get_by_text(CLIENT_NAME, exact=True)).to_be_visible()
    await expect(page.get_by_text("(name provided by the application, unverified)")).to_be_visible()
    for scope in ("read", "write"):
        await expect(page.locator("main li code", has_text=re.compile(f"^{scope}$"))).to_have_count(1)
    await expect(page.locator("main")).to_contain_text("you will be sent to 127.0.0.1")
    await expect(page.locator("main")).to_contain_text("receives the answer on your own computer (localhost)")


async def _token(server: Server, client_id: str, redirect_uri: str, code: str, verifier: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url) as http:
        return await http.post("/token", data={"grant_type": "authorization_code", "code": code,
                                               "redirect_uri": redirect_uri, "client_id": client_id,
                                               "code_verifier": verifier})


async def test_sign_in_on_the_consent_page_allow_lands_on_the_client_with_code_state_iss(
        server: Server, page: Page, console: list[str]) -> None:
    await server.user("alice")
    verifier, challenge = pkce_pair()
    state = "st-" + secrets.token_urlsafe(8)
    async with callback_server() as (redirect_uri, hits):
        client_id = await _client(server, redirect_uri)
        await page.goto(_authorize_url(server, client_id, redirect_uri, challenge, state))
        await _expect_consent_page(page)
        await expect(page.get_by_text("Sign in to decide.")).to_be_visible()
        await screenshot(page, "consent")

        await page.get_by_label("Username").fill("alice")
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Allow").click()
        await page.wait_for_url(re.compile("^" + re.escape(redirect_uri) + r"\?"))
        await expect(page.get_by_role("heading", level=1)).to_have_text("Client received the answer")
        landed = _landed(page, redirect_uri)
        assert hits == [page.url]

    assert set(landed) == {"code", "state", "iss"}, landed
    assert landed["state"] == state and landed["iss"] == server.url
    r = await _token(server, client_id, redirect_uri, landed["code"], verifier)
    assert r.status_code == 200, r.text
    assert r.json()["token_type"].lower() == "bearer" and r.json()["access_token"]
    assert set(r.json()["scope"].split()) == {"read", "write"}
    assert console == [], console

    # Signing in on the consent page also signed the browser in.
    await page.goto(server.url + "/approvals")
    assert urlsplit(page.url).path == "/approvals"
    await expect(page.get_by_text("Signed in as alice")).to_be_visible()


async def test_signed_in_person_allows_with_the_session(server: Server, page: Page, console: list[str]) -> None:
    await server.user("alice")
    await sign_in(page, server)
    verifier, challenge = pkce_pair()
    async with callback_server() as (redirect_uri, hits):
        client_id = await _client(server, redirect_uri)
        await page.goto(_authorize_url(server, client_id, redirect_uri, challenge, "s1"))
        await _expect_consent_page(page)
        await expect(page.get_by_text("Signed in as alice.")).to_be_visible()
        await expect(page.get_by_label("Password")).to_have_count(0)
        await screenshot(page, "consent-signed-in")
        await page.get_by_role("button", name="Allow").click()
        await page.wait_for_url(re.compile("^" + re.escape(redirect_uri) + r"\?"))
        landed = _landed(page, redirect_uri)
        assert len(hits) == 1
    assert landed["state"] == "s1" and landed["iss"] == server.url
    assert (await _token(server, client_id, redirect_uri, landed["code"], verifier)).status_code == 200
    assert console == [], console


async def test_deny_lands_on_the_client_with_access_denied(server: Server, page: Page) -> None:
    await server.user("alice")
    _, challenge = pkce_pair()
    async with callback_server() as (redirect_uri, hits):
        client_id = await _client(server, redirect_uri)
        await page.goto(_authorize_url(server, client_id, redirect_uri, challenge, "s2"))
        await page.get_by_role("button", name="Deny").click()  # no credentials needed to say no
        await page.wait_for_url(re.compile("^" + re.escape(redirect_uri) + r"\?"))
        landed = _landed(page, redirect_uri)
        assert len(hits) == 1
    assert landed["error"] == "access_denied" and landed["state"] == "s2" and landed["iss"] == server.url
    assert "code" not in landed


async def test_without_the_client_origin_in_form_action_chromium_blocks_the_redirect(
        server: Server, page: Page, console: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The control for the tests above: Chromium does enforce ``form-action`` on the redirect after the POST,
    so landing on the client there is evidence the consent page's CSP allows it."""
    strict = PAGE_HEADERS["Content-Security-Policy"].replace("form-action 'self'", "form-action  'self'")
    monkeypatch.setattr(authorize, "PAGE_HEADERS", {**PAGE_HEADERS, "Content-Security-Policy": strict})
    await server.user("alice")
    _, challenge = pkce_pair()
    async with callback_server() as (redirect_uri, hits):
        client_id = await _client(server, redirect_uri)
        await page.goto(_authorize_url(server, client_id, redirect_uri, challenge, "s3"))
        await page.get_by_label("Username").fill("alice")
        await page.get_by_label("Password").fill(PASSWORD)
        async with page.expect_event("console", lambda m: "form-action" in m.text):
            await page.get_by_role("button", name="Allow").click()
        assert hits == []
        assert not page.url.startswith(redirect_uri)
    assert any("Content Security Policy" in m for m in console), console
