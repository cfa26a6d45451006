"""Runs the demo: servers up, then one scenario per mechanism, then a report. Exit code 0 only if every
step of every scenario worked.

Each scenario is a coroutine that records its steps on a :class:`Report`; later mechanisms (AAuth, Agent
Auth, x402) add scenarios to :data:`SCENARIOS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from authgate.app import build_context, create_app
from authgate.config import Settings
from authgate.context import ServerContext
from authgate.demo.servers import free_port, serve


@dataclass
class Step:
    ok: bool
    text: str


@dataclass
class Report:
    out: Callable[[str], None] = print
    steps: list[Step] = field(default_factory=list)

    def section(self, title: str) -> None:
        self.out(f"\n{title}")

    def note(self, text: str) -> None:
        self.out(f"      {text}")

    def step(self, ok: bool, text: str) -> bool:
        self.steps.append(Step(ok, text))
        self.out(f"  {'✓' if ok else '✗'} {text}")
        return ok

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(s.ok for s in self.steps)


@dataclass
class Demo:
    ctx: ServerContext
    issuer: str
    api_url: str
    mcp_url: str
    report: Report


class _Trace:
    """Prints each HTTP exchange an agent makes (method, path, status, and the challenge if any)."""

    def __init__(self, report: Report) -> None:
        self.report = report

    async def response(self, response: Any) -> None:
        request = response.request
        url = urlsplit(str(request.url))
        line = f"{request.method:<4} {url.netloc}{url.path:<48} → {response.status_code}"
        challenge = response.headers.get("www-authenticate")
        if challenge and response.status_code in (401, 403):
            line += f"  [{challenge}]"
        self.report.note(line)


def _audit_summary(events: list[dict[str, Any]], since: int) -> list[dict[str, Any]]:
    return [e for e in reversed(events) if e["id"] > since]


async def _last_audit_id(ctx: ServerContext) -> int:
    events = await ctx.store.audit_events(limit=1)
    return int(events[0]["id"]) if events else 0


async def scenario_sdk_client_credentials(demo: Demo) -> None:
    """Our agent SDK: discovers the API's authorization server, registers itself, gets a token, reads."""
    from authgate.agent import ClientMetadata, OAuthAgentAuth

    r = demo.report
    r.section("[1] OAuth 2.1 + DCR — an agent with no user (authgate agent SDK, client credentials)")
    since = await _last_audit_id(demo.ctx)
    auth = OAuthAgentAuth(grant="client_credentials", client_metadata=ClientMetadata(
        client_name="demo agent (client credentials)", grant_types=("client_credentials",),
        redirect_uris=(), token_endpoint_auth_method="client_secret_basic"))
    trace = _Trace(r)
    async with httpx.AsyncClient(auth=auth, event_hooks={"response": [trace.response]}, timeout=20) as http:
        resp = await http.get(demo.api_url)
    events = _audit_summary(await demo.ctx.store.audit_events(), since)
    registered = [e for e in events if e["event"] == "client.registered"]
    issued = [e for e in events if e["event"] == "token.issued"]
    r.step(bool(registered), "registered itself by RFC 7591 dynamic client registration"
           + (f": client_id {registered[0]['client_id']}" if registered else ""))
    r.step(bool(issued), "got an access token" + (
        f" for aud={issued[0]['detail'].get('aud')} scope='{issued[0]['detail'].get('scope')}'" if issued else ""))
    ok = resp.status_code == 200
    r.step(ok, f"GET {demo.api_url} → {resp.status_code}" + (
        f", {len(resp.json()['notes'])} notes, caller {resp.json()['caller']}" if ok else f": {resp.text[:200]}"))


async def scenario_mcp_sdk(demo: Demo) -> None:
    """The official ``mcp`` SDK client: PRM → AS metadata → DCR → authorize (auto-approved) → token → tool."""
    import httpx2
    from mcp.client.auth import OAuthClientProvider
    from mcp.client.client import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared.auth import OAuthClientMetadata
    from pydantic import AnyUrl

    from authgate.demo.mcp_client import HeadlessBrowser, MemoryStorage

    r = demo.report
    r.section("[2] OAuth 2.1 + DCR — the official mcp SDK client (authorization code + PKCE, auto-approved)")
    since = await _last_audit_id(demo.ctx)

    # Stands in for the browser. The server auto-approves (development mode), so no person sees a consent page;
    # the X-Authgate-Dev header on every response says so.
    browser = HeadlessBrowser(notify=lambda resp: r.note(
        f"browser: GET /authorize → {resp.status_code} (auto-approved: X-Authgate-Dev="
        f"{resp.headers.get('x-authgate-dev')}), redirected with code, state, iss"))
    storage = MemoryStorage()
    provider = OAuthClientProvider(
        server_url=demo.mcp_url,
        client_metadata=OAuthClientMetadata(client_name="demo mcp client",
                                            redirect_uris=[AnyUrl("http://127.0.0.1:3030/callback")]),
        storage=storage, redirect_handler=browser.redirect_handler, callback_handler=browser.callback_handler)
    trace = _Trace(r)
    async with (
        httpx2.AsyncClient(auth=provider, timeout=30, event_hooks={"response": [trace.response]}) as http,
        Client(streamable_http_client(demo.mcp_url, http_client=http)) as client,
    ):
        tools = await client.list_tools()
        names = sorted(t.name for t in tools.tools)
        r.step("list_notes" in names, f"listed tools: {', '.join(names)}")
        result = await client.call_tool("whoami", {})
        text = getattr(result.content[0], "text", "") if result.content else ""
        r.step(bool(text) and not result.is_error, f"called tool whoami → {text!r}")
    events = _audit_summary(await demo.ctx.store.audit_events(), since)
    r.step(any(e["event"] == "client.registered" for e in events) and storage.client is not None,
           f"registered itself by DCR: client_id {storage.client.client_id if storage.client else '?'}")
    r.step(any(e["event"] == "authorization.granted" for e in events), "authorization code issued with PKCE S256")
    r.step(storage.tokens is not None and bool(storage.tokens.refresh_token),
           "token response carried an access token bound to the MCP server and a refresh token")


async def scenario_ciba_approval(demo: Demo) -> None:
    """A person in the loop: an agent asks, out of band (OpenID CIBA), for a user's permission; the approval
    service holds the request; the demo decides it in the user's place and the agent's poll gets the token."""
    import secrets as _secrets

    from authgate.crypto.hashing import hash_password
    from authgate.store import User

    r = demo.report
    r.section("[3] Human in the loop — an agent asks a person out of band (OpenID CIBA, poll mode)")
    ctx = demo.ctx
    alice = User(subject="u_" + _secrets.token_urlsafe(8), username="alice",
                 password_hash=hash_password(_secrets.token_urlsafe(16)), created_at=ctx.now())
    if await ctx.store.get_user_by_name("alice") is None:
        await ctx.store.add_user(alice)
    user = await ctx.store.get_user_by_name("alice")
    assert user is not None
    ciba = "urn:openid:params:grant-type:ciba"
    trace = _Trace(r)
    async with httpx.AsyncClient(base_url=demo.issuer, event_hooks={"response": [trace.response]}, timeout=20) as http:
        reg = (await http.post("/register", json={
            "client_name": "demo agent (asks a person)", "grant_types": [ciba],
            "token_endpoint_auth_method": "client_secret_basic", "scope": "notes:read"})).json()
        auth = (reg.get("client_id", ""), reg.get("client_secret", ""))
        r.step("client_secret" in reg, f"registered itself by DCR for the CIBA grant: client_id {auth[0]}")
        asked = await http.post("/bc-authorize", auth=auth, data={
            "login_hint": "alice", "scope": "notes:read", "resource": demo.api_url,
            "binding_message": "DEMO-42"})
        body = asked.json()
        if not r.step(asked.status_code == 200 and "auth_req_id" in body,
                      f"asked for alice's approval: expires in {body.get('expires_in')} s, "
                      f"poll every {body.get('interval')} s"):
            return
        pending = await ctx.approvals.pending_for(user.subject)
        request = next((p for p in pending if p.client_id == auth[0]), None)
        r.step(request is not None, "the approval service holds a pending request for alice"
               + (f" (binding message {request.binding_message!r}; web inbox at {demo.issuer}/approvals)"
                  if request else ""))
        if request is None:
            return
        decided = await ctx.approvals.decide(request.id, True, by=user.subject, channel="demo")
        r.step(decided.approved, "AUTO-DECIDED BY THE DEMO in alice's place: approved "
               "(a real person would use the web inbox, an e-mail or SMS link, or a webhook)")
        token: dict[str, Any] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            await asyncio.sleep(float(body.get("interval", 5)))
            polled = await http.post("/token", auth=auth, data={"grant_type": ciba,
                                                                 "auth_req_id": body["auth_req_id"]})
            token = polled.json()
            if polled.status_code == 200 or token.get("error") not in ("authorization_pending", "slow_down"):
                break
        r.step("access_token" in token, f"agent's poll got an access token (scope '{token.get('scope')}')")
        if "access_token" not in token:
            return
    async with httpx.AsyncClient(event_hooks={"response": [trace.response]}, timeout=20) as api:
        resp = await api.get(demo.api_url, headers={"Authorization": f"Bearer {token['access_token']}"})
    caller = resp.json().get("caller", {}) if resp.status_code == 200 else {}
    r.step(resp.status_code == 200 and caller.get("sub") == user.subject,
           f"GET {demo.api_url} → {resp.status_code} acting for alice ({caller.get('sub')})")


Scenario = Callable[[Demo], Awaitable[None]]
SCENARIOS: list[Scenario] = [scenario_sdk_client_credentials, scenario_mcp_sdk, scenario_ciba_approval]


async def run_demo(out: Callable[[str], None] = print, data_dir: Path | None = None) -> bool:
    from authgate.demo.apps import mcp_server, notes_api

    as_port, api_port, mcp_port = free_port(), free_port(), free_port()
    issuer = f"http://127.0.0.1:{as_port}"
    api_url = f"http://127.0.0.1:{api_port}/notes"
    mcp_url = f"http://127.0.0.1:{mcp_port}/mcp"
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="authgate-demo-")))
        settings = Settings(
            port=as_port, issuer=issuer, data_dir=data_dir, auto_approve=True,
            scopes=("notes:read", "notes:write", "offline_access"), default_scopes=("notes:read",),
            resources=(api_url, mcp_url),
        ).validate()
        report = Report(out)
        out("authgate demo — agents get access with no human in the loop (development mode: auto-approve)")
        out(f"  authorization server  {issuer}  (SQLite: {settings.data_dir / 'authgate.db'})")
        out(f"  notes API             {api_url}   (notes:read / notes:write)")
        out(f"  MCP server (mcp SDK)  {mcp_url}   (notes:read)")
        ctx = await build_context(settings)
        api_app, api_verifier = notes_api(issuer, api_url)
        mcp_app, mcp_verifier = mcp_server(issuer, mcp_url)
        try:
            async with serve(create_app(ctx), as_port), serve(api_app, api_port), serve(mcp_app, mcp_port):
                demo = Demo(ctx, issuer, api_url, mcp_url, report)
                for scenario in SCENARIOS:
                    try:
                        await asyncio.wait_for(scenario(demo), 60)
                    except Exception as exc:  # a failed scenario is reported, the others still run
                        report.step(False, f"{scenario.__name__} failed: {exc.__class__.__name__}: {exc}")
        finally:
            await api_verifier.aclose()
            await mcp_verifier.aclose()
            await ctx.store.close()
    passed = sum(s.ok for s in report.steps)
    out(f"\n{passed} passed, {len(report.steps) - passed} failed")
    out("demo " + ("succeeded" if report.ok else "FAILED"))
    return report.ok


def main(verbose: bool = False) -> int:
    logging.basicConfig(level=logging.INFO if verbose else logging.ERROR,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        import httpx2  # noqa: F401
        import mcp  # noqa: F401
    except ImportError:
        print("authgate demo needs the mcp extra: pip install 'authgate[server,mcp]'", file=sys.stderr)
        return 2
    return 0 if asyncio.run(run_demo()) else 1
