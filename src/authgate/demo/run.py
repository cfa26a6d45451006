"""Runs the demo: servers up, then one scenario per mechanism, then a report. Exit code 0 only if every
step of every scenario worked.

Each scenario is a coroutine that records its steps on a :class:`Report`; later mechanisms (AAuth, Agent
Auth, x402) add scenarios to :data:`SCENARIOS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
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
from authgate.demo.agentauth import RISK as AGENTAUTH_RISK
from authgate.demo.agentauth import scenario_agent_auth
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
    #: The AAuth scenario's orders API (resource URL) and its data, shared with the running app.
    orders_url: str = ""
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Ports of the servers that run only during their scenario (0: pick one then): the x402 facilitator and
    #: the paid weather API ([5]), the Agent Auth journal API ([6]). Chosen up front so the header lists them.
    facilitator_port: int = 0
    weather_port: int = 0
    journal_port: int = 0


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


def _jwt_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, not verified: for printing only (the API verifies it)."""
    import base64
    import json

    try:
        payload = token.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


async def scenario_aauth_phone_agent(demo: Demo) -> None:
    """AAuth (agent authorization grant): a support agent on a phone line identifies the caller from details
    collected in conversation, reads an order with the low tier, and escalates to the customer's approval on
    their registered phone before changing the delivery address. The demo approves in the customer's place."""
    import secrets as _secrets

    from authgate.agent import (
        AgentAuthorizationClient,
        AgentAuthorizationPending,
        IdentityNotVerified,
        discover_agent_authorization,
        fetch_scope_descriptions,
    )
    from authgate.agent.aauth import GRANT_TYPE
    from authgate.crypto.hashing import hash_password
    from authgate.store import User

    r = demo.report
    r.section("[4] AAuth — a support agent on a phone line (agent authorization grant, escalation to the customer)")
    ctx = demo.ctx
    # The demo customer: a sign-in account with a phone on file (where approvals go), and identity attributes
    # that the directory keeps only as keyed hashes. The report never prints the values.
    maria = User(subject="u_" + _secrets.token_urlsafe(8), username="maria", created_at=ctx.now(),
                 password_hash=hash_password(_secrets.token_urlsafe(16)), phone="+14155550142")
    if await ctx.store.get_user_by_name("maria") is None:
        await ctx.store.add_user(maria)
    customer = await ctx.store.get_user_by_name("maria")
    assert customer is not None
    on_file = {"given_name": "María", "family_name": "García", "birthdate": "1986-03-14", "postal_code": "94107",
               "phone_number": "+14155550142"}
    await ctx.identity.set_attributes(customer.subject, on_file)
    r.step(await ctx.identity.attribute_names(customer.subject) == sorted(on_file),
           f"demo customer maria: {len(on_file)} identity attributes stored blinded (keyed hashes only): "
           f"{', '.join(on_file)}; a phone number on file for approvals")
    demo.orders["A-1042"] = {"id": "A-1042", "customer": customer.subject, "status": "shipped",
                             "carrier": "UPS", "eta": "Thursday",
                             "delivery_address": {"street": "12 Old St", "city": "San Francisco",
                                                  "postal_code": "94107"}}
    trace = _Trace(r)
    async with httpx.AsyncClient(event_hooks={"response": [trace.response]}, timeout=20) as http:
        reg = (await http.post(f"{demo.issuer}/register", json={
            "client_name": "demo support agent (phone line)", "grant_types": [GRANT_TYPE],
            "token_endpoint_auth_method": "client_secret_basic", "scope": "orders:read orders:write",
            "agent_authorization_scope_ceiling": "orders:read orders:write",
            "agent_authorization_elevated_scopes": "orders:write", "agent_channels": ["pstn"]})).json()
        if not r.step("client_secret" in reg, "registered itself by DCR for the agent authorization grant: "
                      f"client_id {reg.get('client_id')}, ceiling 'orders:read orders:write', "
                      "elevated 'orders:write'"):
            return
        server = await discover_agent_authorization(http, demo.issuer)
        descriptions = await fetch_scope_descriptions(http, demo.orders_url)
        r.step(bool(descriptions), f"discovered the grant (at least {server.min_claims} matching details) and "
               f"the API's scope descriptions: " + "; ".join(f"{k} = {v!r}" for k, v in descriptions.items()))
        # wait_events: while the customer decides, the agent reads the approval's server-sent status events
        # instead of polling the token endpoint every few seconds.
        agent = AgentAuthorizationClient(http, server.token_endpoint, reg["client_id"], reg["client_secret"],
                                         wait_events=True)

        # The conversation. Values are captured deterministically (speech slots checked against the
        # transcript, keypad digits), never taken from the model's free text; caller ID comes from signalling.
        collected = {"given_name": "Maria", "family_name": "Garcia", "birthdate": "14 March 1986",
                     "address": {"postal_code": "94107"}}
        capture = {"given_name": "asr_validated", "family_name": "asr_validated", "birthdate": "dtmf",
                   "postal_code": "dtmf"}
        call: dict[str, Any] = {"channel": "pstn", "caller_id": "+14155550142", "capture_method": capture,
                "conversation_id": "call-" + _secrets.token_hex(4), "resource": demo.orders_url}
        r.note("caller: Hi, where is my order A-1042?")
        r.note("agent:  I can help with that. Can I have your name, date of birth and ZIP code?")
        r.note("agent collected (values not shown): " + ", ".join(f"{k} [{v}]" for k, v in capture.items())
               + "; caller ID from telephony signalling (the customer's own number)")

        # A hallucinated or guessed identity gets nowhere, and the answer does not say why.
        try:
            await agent.request_token({**collected, "birthdate": "1986-03-15"}, scope="orders:read", **call)
            r.step(False, "a wrong birthdate was accepted")
        except IdentityNotVerified as exc:
            r.step(True, f"first, a slip (one wrong detail) → {exc.status_code} {exc.error}: the same answer as "
                   "for an unknown person")

        tokens = await agent.request_token(collected, scope="orders:read", reason="Tell the caller where their "
                                           "order A-1042 is", **call)
        claims = _jwt_claims(tokens.access_token)
        r.step(claims.get("sub") == customer.subject and claims.get("amr") == ["pii"] and not tokens.refresh_token,
               f"PII-tier token: sub maria ({claims.get('sub')}), act {claims.get('act')}, scope "
               f"'{tokens.scope}', amr {claims.get('amr')}, no refresh token")
        resp = await http.get(f"{demo.orders_url}/A-1042", headers={"Authorization": f"Bearer {tokens.access_token}"})
        order = resp.json() if resp.status_code == 200 else {}
        r.step(resp.status_code == 200, f"GET /orders/A-1042 → {resp.status_code}: {order.get('status')} with "
               f"{order.get('carrier')}, arriving {order.get('eta')}")
        denied = await http.post(f"{demo.orders_url}/A-1042/address", json={"street": "9 New Ave"},
                                 headers={"Authorization": f"Bearer {tokens.access_token}"})
        r.step(denied.status_code == 403, f"the same token cannot change the address: POST → {denied.status_code}")

        r.note("caller: I have moved. Please deliver it to my new address instead.  (address not shown)")

        async def customer_approves() -> None:
            # Stands in for maria, who is asked on her channels on file (SMS to her phone, e-mail, web inbox),
            # never on the line that called.
            for _ in range(400):
                pending = await ctx.approvals.pending_for(customer.subject)
                request = next((p for p in pending if p.client_id == reg["client_id"]), None)
                if request is not None:
                    decided = await ctx.approvals.decide(request.id, True, by=customer.subject, channel="demo")
                    r.step(decided.approved, f"the approval service asked maria ({request.kind}: "
                           f"{', '.join(request.details.get('elevated_scopes', []))}; reason shown as unverified); "
                           "AUTO-DECIDED BY THE DEMO in maria's place: approved (a real customer answers the SMS or "
                           "e-mail link, or the web inbox)")
                    return
                await asyncio.sleep(0.05)
            r.step(False, "no approval request reached maria")

        def waiting(p: AgentAuthorizationPending) -> None:
            r.step(True, f"escalated: 400 authorization_pending with a request_code; poll every {p.interval:.0f} s "
                   f"or wait on the status events, expires in {p.expires_in:.0f} s")
            r.note("agent:  For your security I've sent an approval request to the phone number on your account.")

        decider = asyncio.create_task(customer_approves())
        try:
            elevated = await agent.request_token(
                collected, scope="orders:write", reason="Change the delivery address of order A-1042 to the "
                "caller's new address", on_waiting=waiting, timeout=45, **call)
        finally:
            if not decider.done():  # the request failed before anyone was asked
                decider.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await decider
        claims = _jwt_claims(elevated.access_token)
        r.step(claims.get("amr") == ["pii", "oob"] and "orders:write" in (elevated.scope or "").split(),
               f"status event 'approved', then one poll got the token: scope '{elevated.scope}', "
               f"amr {claims.get('amr')}")
        new_address = {"street": "9 New Ave", "city": "Oakland", "postal_code": "94610"}
        changed = await http.post(f"{demo.orders_url}/A-1042/address", json=new_address,
                                  headers={"Authorization": f"Bearer {elevated.access_token}"})
        r.step(changed.status_code == 200 and changed.json().get("delivery_address") == new_address,
               f"POST /orders/A-1042/address → {changed.status_code}: delivery address changed")


async def scenario_x402_paying_agent(demo: Demo) -> None:
    """x402: an agent pays $0.01 for one API call by itself, within its budget; our facilitator settles the
    EIP-3009 authorization on the embedded chain (no network, test USDC minted for the demo)."""
    from authgate.agent.x402 import PAYMENT_KEY, Budget, Wallet, X402PaymentAuth, payment_receipt
    from authgate.clock import SystemClock
    from authgate.demo.apps import weather_api
    from authgate.trust.paywall import PaymentTrustGuard
    from authgate.x402 import localchain, wire
    from authgate.x402.chain.embedded import EmbeddedChain
    from authgate.x402.facilitator import FacilitatorClient
    from authgate.x402.facilitator.http import create_facilitator_app
    from authgate.x402.facilitator.service import Facilitator
    from authgate.x402.paywall import Paywall

    r = demo.report
    r.section("[5] x402 — an agent pays $0.01 for an API call by itself (our facilitator, embedded EVM chain)")
    chain = EmbeddedChain()
    token = localchain.TOKEN_ADDRESS
    payee = localchain.label_address("demo-weather-payee")
    wallet = Wallet(localchain.label_key("demo-agent-wallet"))
    fac_port, api_port = demo.facilitator_port or free_port(), demo.weather_port or free_port()
    api_base = f"http://127.0.0.1:{api_port}"
    try:
        await chain.mint(wallet.address, 5_000_000)
        facilitator = Facilitator({localchain.NETWORK: chain}, demo.ctx.store, clock=SystemClock(), settle_timeout=30)

        async def balances() -> tuple[int, int]:
            return await chain.balance_of(token, wallet.address), await chain.balance_of(token, payee)

        def usdc(atomic: int) -> str:
            return f"{atomic / 10**localchain.TOKEN_DECIMALS:.6f} USDC"

        before = await balances()
        r.note(f"agent wallet {wallet.address}: {usdc(before[0])} (minted test USDC); "
               f"payee {payee}: {usdc(before[1])}")
        async with serve(create_facilitator_app(facilitator), fac_port) as fac_url:
            client = FacilitatorClient(fac_url)
            # The server's trust checks (kill switch) at the paywall; they also write the settled payment
            # (x402.payment_received) into the server's audit log, so it shows in the closing audit trail.
            guard = PaymentTrustGuard(demo.ctx.trust, SystemClock(), killswitch=demo.ctx.killswitch)
            paywall = Paywall(client, base_url=api_base, guard=guard)
            paywall.route("/weather", price="$0.01", pay_to=payee, network=localchain.NETWORK,
                          description="Weather forecast")
            try:
                async with serve(weather_api(paywall), api_port):
                    seen: list[httpx.Response] = []

                    async def trace(response: httpx.Response) -> None:
                        seen.append(response)
                        await _Trace(r).response(response)

                    auth = X402PaymentAuth(wallet, Budget(max_per_request="$0.05", max_per_day="$1",
                                                          allowed_payees={payee}), networks={localchain.NETWORK})
                    async with httpx.AsyncClient(auth=auth, event_hooks={"response": [trace]}, timeout=30) as http:
                        resp = await http.get(api_base + "/weather")
            finally:
                await client.aclose()
        challenge = next((x for x in seen if x.status_code == 402), None)
        if challenge is not None:
            offer = wire.PaymentRequired.from_header(challenge.headers["payment-required"]).accepts[0]
            r.step(True, f"402 Payment Required: {offer.scheme} {offer.amount} atomic units ({usdc(int(offer.amount))})"
                   f" of {offer.asset} on {offer.network} to {offer.pay_to}")
        else:
            r.step(False, "no 402 challenge seen")
        record = resp.extensions.get(PAYMENT_KEY)
        if record is not None:
            a = record.authorization
            r.step(True, f"agent signed an EIP-3009 authorization within its budget ($0.05/request, $1/day): from "
                   f"{a['from']} to {a['to']} value {a['value']} validBefore {a['validBefore']} nonce {a['nonce']}")
        else:
            r.step(False, "the agent signed nothing")
        receipt = payment_receipt(resp)
        r.step(resp.status_code == 200 and receipt is not None and receipt.success,
               f"GET /weather → {resp.status_code}: {resp.json() if resp.status_code == 200 else resp.text[:100]}")
        r.step(receipt is not None and receipt.success and receipt.transaction.startswith("0x"),
               f"settled on chain: tx {receipt.transaction if receipt else '?'} (PAYMENT-RESPONSE)")
        after = await balances()
        r.step(after[0] == before[0] - 10_000 and after[1] == before[1] + 10_000,
               f"balances on chain: payer {usdc(before[0])} → {usdc(after[0])}, payee {usdc(before[1])} → "
               f"{usdc(after[1])}")
    finally:
        await chain.aclose()


Scenario = Callable[[Demo], Awaitable[None]]
SCENARIOS: list[Scenario] = [scenario_sdk_client_credentials, scenario_mcp_sdk, scenario_ciba_approval,
                             scenario_aauth_phone_agent, scenario_x402_paying_agent, scenario_agent_auth]


async def run_demo(out: Callable[[str], None] = print, data_dir: Path | None = None, keep_serving: bool = False
                   ) -> bool:
    from authgate.demo.apps import mcp_server, notes_api, orders_api

    ports: list[int] = []
    while len(ports) < 7:
        port = free_port()
        if port not in ports:
            ports.append(port)
    as_port, api_port, mcp_port, orders_port, fac_port, weather_port, journal_port = ports
    issuer = f"http://127.0.0.1:{as_port}"
    api_url = f"http://127.0.0.1:{api_port}/notes"
    mcp_url = f"http://127.0.0.1:{mcp_port}/mcp"
    orders_url = f"http://127.0.0.1:{orders_port}/orders"
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="authgate-demo-")))
        settings = Settings(
            port=as_port, issuer=issuer, data_dir=data_dir, auto_approve=True,
            scopes=("notes:read", "notes:write", "orders:read", "orders:write", "offline_access"),
            default_scopes=("notes:read",), resources=(api_url, mcp_url, orders_url),
            # Agent Auth (scenario 6): loopback identifiers, an admin key for enrolment, the journal's risk table.
            agentauth_enabled=True, agentauth_allow_http_loopback=True, allow_loopback_fetch=True,
            agentauth_admin_key=secrets.token_urlsafe(32), agentauth_scope_risk=dict(AGENTAUTH_RISK),
            agentauth_poll_interval=0,
        ).validate()
        report = Report(out)
        out("authgate demo — agents get access with no human in the loop (development mode: auto-approve)")
        out(f"  authorization server  {issuer}  (SQLite: {settings.data_dir / 'authgate.db'})")
        out(f"  notes API             {api_url}   (notes:read / notes:write)")
        out(f"  MCP server (mcp SDK)  {mcp_url}   (notes:read)")
        out(f"  orders API            {orders_url}  (orders:read / orders:write)")
        out(f"  x402 facilitator      http://127.0.0.1:{fac_port}   (/verify, /settle; embedded test chain; "
            "during [5] only)")
        out(f"  weather API (x402)    http://127.0.0.1:{weather_port}/weather   ($0.01 a call; during [5] only)")
        out(f"  journal API           http://127.0.0.1:{journal_port}/journal   (Agent Auth: journal:read / "
            "journal:write; during [6] only)")
        ctx = await build_context(settings)
        api_app, api_verifier = notes_api(issuer, api_url)
        mcp_app, mcp_verifier = mcp_server(issuer, mcp_url)
        orders: dict[str, dict[str, Any]] = {}
        orders_app, orders_verifier = orders_api(issuer, orders_url, orders)
        try:
            async with (serve(create_app(ctx), as_port), serve(api_app, api_port), serve(mcp_app, mcp_port),
                        serve(orders_app, orders_port)):
                demo = Demo(ctx, issuer, api_url, mcp_url, report, orders_url, orders, facilitator_port=fac_port,
                            weather_port=weather_port, journal_port=journal_port)
                for scenario in SCENARIOS:
                    try:
                        await asyncio.wait_for(scenario(demo), 60)
                    except Exception as exc:  # a failed scenario is reported, the others still run
                        report.step(False, f"{scenario.__name__} failed: {exc.__class__.__name__}: {exc}")
                await dashboard_ending(demo, keep_serving)
        finally:
            await api_verifier.aclose()
            await mcp_verifier.aclose()
            await orders_verifier.aclose()
            await ctx.store.close()
    passed = sum(s.ok for s in report.steps)
    out(f"\n{passed} passed, {len(report.steps) - passed} failed")
    out("demo " + ("succeeded" if report.ok else "FAILED"))
    return report.ok


def _audit_line(event: dict[str, Any]) -> str:
    """One audit event on one line: number, time, name, who, which client, and its details (never secrets: the
    audit log holds none)."""
    import json

    parts = [f"#{event['id']:<4}", time.strftime("%H:%M:%S", time.gmtime(event["at"])), f"{event['event']:<30}"]
    if event.get("subject"):
        parts.append(f"subject={event['subject']}")
    if event.get("client_id"):
        parts.append(f"client={event['client_id']}")
    detail = event.get("detail") or {}
    for key in sorted(detail)[:8]:
        value = detail[key]
        if value is not None:
            text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
            parts.append(f"{key}={text if len(text) <= 60 else text[:57] + '...'}")
    return " ".join(parts)


async def dashboard_ending(demo: Demo, keep_serving: bool) -> None:
    """The demo's last word: the whole audit trail, oldest first, and where the operator's dashboard is. With
    ``keep_serving`` an operator account (random password, this temporary database only) is made and the
    servers stay up until Ctrl-C, so the dashboard can be opened."""
    from authgate.crypto.hashing import hash_password
    from authgate.dashboard.queries import audit_since
    from authgate.store import User

    ctx, out = demo.ctx, demo.report.out
    events = await audit_since(ctx.store, 0, limit=5000)
    demo.report.section(f"Audit trail of the whole demo ({len(events)} events, oldest first, UTC)")
    for event in events:
        out("  " + _audit_line(event))
    out(f"\nDashboard: {demo.issuer}/admin   (a person's own page: {demo.issuer}/me)")
    if not keep_serving:
        out("  the demo's servers stop now; `authgate demo --serve` keeps them up and makes an operator account")
        return
    password = secrets.token_urlsafe(12)
    await ctx.store.add_user(User(subject="u_" + secrets.token_urlsafe(8), username="operator",
                                  password_hash=hash_password(password), created_at=ctx.now(), is_admin=True))
    out(f"  sign in as operator / {password}  (this demo's temporary database only). Ctrl-C stops.")
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.Event().wait()


def main(verbose: bool = False, keep_serving: bool = False) -> int:
    logging.basicConfig(level=logging.INFO if verbose else logging.ERROR,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        import httpx2  # noqa: F401
        import mcp  # noqa: F401
    except ImportError:
        print("authgate demo needs the mcp extra: pip install 'authgate[server,mcp]'", file=sys.stderr)
        return 2
    return asyncio.run(_run_until_stopped(keep_serving))


async def _run_until_stopped(keep_serving: bool) -> int:
    """Run the demo; SIGTERM or SIGHUP stop it the way Ctrl-C does: the demo is cancelled, so its servers stop
    and the temporary directory (the SQLite database with the private signing keys) is removed. Their default
    action would end the process at once and leave it behind. uvicorn's servers catch SIGTERM while they run
    and raise it again once stopped, so this handler is reached last, after they have all shut down."""
    import signal

    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None
    stopped_by: list[int] = []

    def stop(signum: int, frame: Any) -> None:
        if not stopped_by:
            stopped_by.append(signum)
            loop.call_soon_threadsafe(main_task.cancel)

    signals = [s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None]
    previous = {sig: signal.signal(sig, stop) for sig in signals}
    try:
        ok = await run_demo(keep_serving=keep_serving)
    except asyncio.CancelledError:
        if not stopped_by:
            raise
        ok = False
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stopped_by:
        print(f"authgate demo: stopped by {signal.Signals(stopped_by[0]).name}; its temporary directory was removed",
              file=sys.stderr)
        return 128 + stopped_by[0]
    return 0 if ok else 1
