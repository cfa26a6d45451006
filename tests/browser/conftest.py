"""Browser tests: the authorization server on a real loopback port, driven by Debian's headless Chromium through
Playwright (the Python package from the ``dev`` extra; its own browser download is never used).

The tests skip with a visible reason when Chromium or Playwright is missing; with ``AUTHGATE_REQUIRE_BROWSER=1``
(set by CI, whose ``scripts/browser-setup.sh`` installs Chromium) they fail instead.

Screenshots land in ``.cache/screenshots/`` for a person to look at.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from authgate.app import build_context, create_app
from authgate.clock import FrozenClock
from authgate.config import Settings
from authgate.context import ServerContext
from authgate.store import Store
from tests.helpers import add_user
from tests.servers import free_port, serve

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext, Page

CHROMIUM = os.environ.get("AUTHGATE_CHROMIUM", "/usr/bin/chromium")
REQUIRE_BROWSER = os.environ.get("AUTHGATE_REQUIRE_BROWSER") == "1"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / ".cache" / "screenshots"
PHONE = {"width": 375, "height": 740}
PASSWORD = "correct horse"
TIMEOUT_MS = 15_000


def _playwright_missing() -> bool:
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return True
    return False


def _browser_unavailable() -> str | None:
    if _playwright_missing():
        return "Playwright (Python package, dev extra) is not installed"
    if not os.access(CHROMIUM, os.X_OK):
        return f"Chromium not found at {CHROMIUM} (run scripts/browser-setup.sh)"
    return None


def require_playwright() -> None:
    """Call before importing Playwright in a test module: skips the module (or, when required, fails it)."""
    if _playwright_missing():
        reason = "Playwright (Python package, dev extra) is not installed"
        if REQUIRE_BROWSER:
            pytest.fail(reason + " and AUTHGATE_REQUIRE_BROWSER=1", pytrace=False)
        pytest.skip(reason, allow_module_level=True)


@pytest.fixture
def backend() -> str:
    """Pages, not storage, are under test here: one backend (SQLite) keeps the browser runs short."""
    return "sqlite"


@pytest.fixture
def needs_browser() -> None:
    reason = _browser_unavailable()
    if reason:
        if REQUIRE_BROWSER:
            pytest.fail(reason + " and AUTHGATE_REQUIRE_BROWSER=1")
        pytest.skip(reason)


@dataclass
class Server:
    url: str
    ctx: ServerContext
    clock: FrozenClock

    async def user(self, username: str = "alice") -> str:
        return await add_user(self.ctx.store, username, PASSWORD)


@pytest.fixture
async def server(needs_browser: None, settings: Settings, store: Store, clock: FrozenClock
                 ) -> AsyncIterator[Server]:
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    ctx = await build_context(replace(settings, issuer=issuer, port=port).validate(), clock, store)
    async with serve(create_app(ctx), port):
        yield Server(issuer, ctx, clock)


@pytest.fixture
async def browser(needs_browser: None, tmp_path: Path) -> AsyncIterator[BrowserContext]:
    """A fresh Chromium (its own user-data-dir) with one browser context; closed after the test."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        context = await p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1000, "height": 800}, locale="en-US")
        context.set_default_timeout(TIMEOUT_MS)
        try:
            yield context
        finally:
            await context.close()


@pytest.fixture
async def page(browser: BrowserContext) -> Page:
    return browser.pages[0] if browser.pages else await browser.new_page()


@pytest.fixture
def console(page: Page) -> list[str]:
    """Console errors, which include every Content-Security-Policy violation Chromium reports."""
    seen: list[str] = []
    page.on("console", lambda m: seen.append(m.text) if m.type == "error" else None)
    return seen


async def sign_in(page: Page, server: Server, username: str = "alice", next_path: str = "/approvals") -> None:
    """Open a protected page, get sent to the sign-in form, fill it in by its labels, land back on the page."""
    await page.goto(server.url + next_path)
    assert re.search(r"/signin\?next=", page.url), page.url
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(server.url + next_path)


async def screenshot(page: Page, name: str) -> Path:
    """Save a full-page screenshot at the current viewport and a narrow phone-sized one; returns the first."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    wide = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(wide), full_page=True)
    size = page.viewport_size
    await page.set_viewport_size(PHONE)
    try:
        # Readable on a phone: nothing forces sideways scrolling.
        overflow = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{name}: page is {overflow}px wider than a {PHONE['width']}px phone screen"
        await page.screenshot(path=str(SCREENSHOTS / f"{name}-phone.png"), full_page=True)
    finally:
        if size:
            await page.set_viewport_size(size)
    return wide


@contextlib.asynccontextmanager
async def callback_server() -> AsyncIterator[tuple[str, list[str]]]:
    """A client's redirect URI on its own loopback port: a tiny page that records each URL it is sent to."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, Response
    from starlette.routing import Route

    hits: list[str] = []

    async def callback(request: Request) -> HTMLResponse:
        hits.append(str(request.url))
        return HTMLResponse("<!doctype html><title>Client callback</title><h1>Client received the answer</h1>")

    icon_asked = asyncio.Event()

    async def no_icon(request: Request) -> Response:
        icon_asked.set()
        return Response(status_code=204)

    port = free_port()
    app = Starlette(routes=[Route("/callback", callback), Route("/favicon.ico", no_icon)])
    async with serve(app, port) as base:
        yield base + "/callback", hits
        if hits:  # Chromium asks the landed page's origin for its icon after the load: let that finish first
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(icon_asked.wait(), 2)


@contextlib.asynccontextmanager
async def agent_polling(server: Server, rid: str, client_id: str, secret: str, interval: float = 0.2
                        ) -> AsyncIterator[asyncio.Task[list[str]]]:
    """The waiting agent: polls ``/approvals/{id}/status`` as its client (HTTP Basic) in the background until the
    request is decided. Yields the task; its result is every status the agent saw, in order."""
    seen: list[str] = []

    async def poll() -> list[str]:
        async with httpx.AsyncClient(base_url=server.url, auth=(client_id, secret), timeout=10) as http:
            while True:
                r = await http.get(f"/approvals/{rid}/status")
                assert r.status_code == 200, r.text
                seen.append(r.json()["status"])
                if seen[-1] != "pending":
                    return seen
                await asyncio.sleep(interval)

    task = asyncio.create_task(asyncio.wait_for(poll(), 60))
    try:
        yield task
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
