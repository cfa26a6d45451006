"""Delivery channels against real local servers (SMTP via aiosmtpd, a Twilio-shaped SMS stand-in and a
webhook receiver under uvicorn, all on loopback), and the one-time links they carry."""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import hashlib
import hmac
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from aiosmtpd.controller import Controller
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from authgate.approvals.channels import (
    SIGNATURE_HEADER,
    ChannelRouter,
    sign_webhook,
    verify_webhook_signature,
)
from authgate.clock import FrozenClock
from authgate.config import ConfigError, Settings
from authgate.context import ServerContext
from authgate.demo.servers import free_port, serve
from authgate.web import PAGE_HEADERS
from tests.helpers import add_user

SECRET = "whsec-test-secret"
SID = "AC0123456789"
TOKEN = "sms-auth-token"


# -- local servers -------------------------------------------------------------------------------------------

class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], EmailMessage]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append((list(envelope.rcpt_tos), message))
        return "250 OK"


@dataclass
class Servers:
    smtp_port: int
    mailbox: _Mailbox
    sms_url: str
    webhook_url: str
    sms: list[dict[str, Any]] = field(default_factory=list)
    hooks: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    hook_status: int = 204
    hook_delay: float = 0.0


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    mailbox = _Mailbox()
    smtp_port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    state: dict[str, Servers] = {}

    async def send_message(request: Request) -> Response:
        form = await request.form()
        state["s"].sms.append({"sid": request.path_params["sid"], "auth": request.headers.get("authorization"),
                               **{k: str(v) for k, v in form.items()}})
        return JSONResponse({"sid": "SM1", "status": "queued"}, status_code=201)

    async def hook(request: Request) -> Response:
        s = state["s"]
        if s.hook_delay:
            await asyncio.sleep(s.hook_delay)
        s.hooks.append((await request.body(), dict(request.headers)))
        return Response(status_code=s.hook_status)

    sms_app = Starlette(routes=[Route("/2010-04-01/Accounts/{sid}/Messages.json", send_message, methods=["POST"])])
    hook_app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    try:
        async with serve(sms_app, free_port()) as sms_url, serve(hook_app, free_port()) as hook_url:
            state["s"] = Servers(smtp_port, mailbox, sms_url, hook_url + "/hook")
            yield state["s"]
    finally:
        controller.stop()


def _overrides(srv: Servers, **extra: Any) -> dict[str, Any]:
    return {"smtp_host": "127.0.0.1", "smtp_port": srv.smtp_port, "smtp_security": "none",
            "smtp_from": "authgate <approvals@example.test>", "sms_base_url": srv.sms_url, "sms_account_sid": SID,
            "sms_auth_token": TOKEN, "sms_from": "+15550001111", "approvals_webhook_secret": SECRET,
            "delivery_allow_loopback": True, "approvals_console": "off", **extra}


async def _user(ctx: ServerContext, *, email_: str | None = "alice@example.test", phone: str | None = "+15557654321",
                webhook: str | None = None) -> str:
    subject = await add_user(ctx.store, "alice")
    await ctx.store.update_user("alice", email=email_, phone=phone, webhook_url=webhook)
    return subject


def _router(ctx: ServerContext) -> ChannelRouter:
    router = ctx.approvals.notifier
    assert isinstance(router, ChannelRouter)
    return router


async def _create(ctx: ServerContext, subject: str, **over: Any) -> str:
    args: dict[str, Any] = {"kind": "oauth_consent", "subject": subject, "client_id": "agent-1",
                            "details": {"scopes": ["notes:read"]}, "reason": "I need <b>your</b> notes"}
    args.update(over)
    request = await ctx.approvals.create(**args)
    await _router(ctx).drain(10)
    return request.id


def _path(url: str) -> str:
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == "http://127.0.0.1:9000"
    return parts.path


def _mail_link(message: EmailMessage) -> tuple[str, str]:
    plain = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert plain is not None and html is not None
    text, markup = plain.get_content(), html.get_content()
    found = re.findall(r"http://127\.0\.0\.1:9000/approvals/link/[A-Za-z0-9_-]+", text)
    assert len(found) == 1, text
    assert f'href="{found[0]}"' in markup
    return found[0], markup


def _sms_code_and_link(body: str) -> tuple[str, str]:
    code = re.search(r"Code (\d{6})\.", body)
    link = re.search(r"http://127\.0\.0\.1:9000/approvals/link/[A-Za-z0-9_-]+", body)
    assert code and link, body
    return code.group(1), link.group(0)


def _assert_page_headers(response: httpx.Response) -> None:
    for name, value in PAGE_HEADERS.items():
        assert response.headers.get(name) == value, name


# -- e-mail ----------------------------------------------------------------------------------------------

async def test_mail_arrives_and_its_link_leads_to_the_signed_in_page(
        servers: Servers, settings: Settings, make_client: Callable[..., Any]) -> None:
    ctx, http = await make_client(settings, **_overrides(servers))
    subject = await _user(ctx, phone=None)
    rid = await _create(ctx, subject)

    assert len(servers.mailbox.messages) == 1
    rcpts, message = servers.mailbox.messages[0]
    assert rcpts == ["alice@example.test"]
    assert message["To"] == "alice@example.test" and "agent-1" in message["Subject"]
    link, markup = _mail_link(message)
    assert "&lt;b&gt;your&lt;/b&gt;" in markup and "<b>your</b>" not in markup  # the agent's words, escaped
    assert "unverified" in markup

    opened = await http.get(_path(link))
    assert opened.status_code == 303 and opened.headers["location"] == f"/approvals/{rid}"
    _assert_page_headers(opened)
    assert (await ctx.approvals.get(rid)).status == "pending"  # type: ignore[union-attr]  # a link alone never decides
    replay = await http.get(_path(link))
    assert replay.status_code == 410 and "already used" in replay.text
    _assert_page_headers(replay)
    refused = await http.post(_path(link), data={"code": "000000", "decision": "approve"})
    assert refused.status_code == 405 and refused.headers["allow"] == "GET"
    events = [e["event"] for e in await ctx.store.audit_events()]
    assert "approval.delivered" in events


async def test_smtp_credentials_need_tls_off_loopback(settings: Settings) -> None:
    from dataclasses import replace
    with pytest.raises(ConfigError):
        replace(settings, smtp_host="mail.example.test", smtp_security="none", smtp_username="u").validate()
    replace(settings, smtp_host="127.0.0.1", smtp_security="none", smtp_username="u").validate()
    with pytest.raises(ConfigError):
        replace(settings, sms_base_url="http://sms.example.test").validate()
    with pytest.raises(ConfigError):
        replace(settings, approvals_channels={"ciba": ["pigeon"]}).validate()


# -- SMS and link + code ---------------------------------------------------------------------------------

async def test_sms_carries_code_and_link_and_code_flow_approves(
        servers: Servers, settings: Settings, make_client: Callable[..., Any]) -> None:
    ctx, http = await make_client(settings, **_overrides(servers, approvals_link_requires_code=True))
    subject = await _user(ctx)
    rid = await _create(ctx, subject, binding_message="BLUE-42")

    assert len(servers.sms) == 1
    sms = servers.sms[0]
    assert sms["sid"] == SID and sms["To"] == "+15557654321" and sms["From"] == "+15550001111"
    assert sms["auth"] == "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
    code, sms_link = _sms_code_and_link(sms["Body"])
    assert "BLUE-42" in sms["Body"] and len(sms["Body"]) < 320
    # the e-mail carries a different link and no code
    mail_link, _ = _mail_link(servers.mailbox.messages[0][1])
    assert mail_link != sms_link and code not in servers.mailbox.messages[0][1].as_string()

    page = await http.get(_path(mail_link))
    assert page.status_code == 200 and 'name="code"' in page.text and "BLUE-42" in page.text
    assert "&lt;b&gt;your&lt;/b&gt;" in page.text
    _assert_page_headers(page)
    assert (await http.get(_path(mail_link))).status_code == 200  # showing the form does not use the link up

    wrong = str((int(code) + 1) % 1_000_000).zfill(6)
    refused = await http.post(_path(mail_link), data={"code": wrong, "decision": "approve"})
    assert refused.status_code == 400 and "not right" in refused.text
    _assert_page_headers(refused)
    assert (await ctx.approvals.get(rid)).status == "pending"  # type: ignore[union-attr]

    done = await http.post(_path(mail_link), data={"code": code, "decision": "approve"})
    assert done.status_code == 200 and "approved" in done.text
    _assert_page_headers(done)
    decided = await ctx.approvals.get(rid)
    assert decided is not None and decided.status == "approved"
    assert decided.decided_by == subject and decided.channel == "link+code"

    replay = await http.post(_path(mail_link), data={"code": code, "decision": "deny"})
    assert replay.status_code == 410
    other = await http.post(_path(sms_link), data={"code": code, "decision": "deny"})
    assert other.status_code == 410
    assert (await ctx.approvals.get(rid)).status == "approved"  # type: ignore[union-attr]


async def test_code_attempts_are_bounded_then_links_are_dead(
        servers: Servers, settings: Settings, make_client: Callable[..., Any]) -> None:
    ctx, http = await make_client(settings, **_overrides(servers, approvals_link_requires_code=True,
                                                         approvals_code_attempts=3))
    subject = await _user(ctx, email_=None)
    rid = await _create(ctx, subject)
    code, link = _sms_code_and_link(servers.sms[0]["Body"])
    wrong = str((int(code) + 7) % 1_000_000).zfill(6)

    # concurrent guesses cannot exceed the limit: at most 3 are even compared
    answers = await asyncio.gather(*[http.post(_path(link), data={"code": wrong, "decision": "approve"})
                                     for _ in range(8)])
    statuses = sorted(r.status_code for r in answers)
    assert statuses.count(400) == 2 and statuses.count(429) >= 1, statuses
    assert all(s in (400, 410, 429) for s in statuses)

    late = await http.post(_path(link), data={"code": code, "decision": "approve"})
    assert late.status_code in (410, 429)
    assert (await ctx.approvals.get(rid)).status == "pending"  # type: ignore[union-attr]
    assert (await http.get(_path(link))).status_code == 410


async def test_altered_unknown_and_expired_links_are_refused(
        servers: Servers, settings: Settings, make_client: Callable[..., Any], clock: FrozenClock) -> None:
    ctx, http = await make_client(settings, **_overrides(servers, approvals_link_requires_code=True))
    subject = await _user(ctx)
    rid = await _create(ctx, subject, ttl=120)
    code, link = _sms_code_and_link(servers.sms[0]["Body"])
    path = _path(link)
    altered = path[:-1] + ("A" if path[-1] != "A" else "B")
    assert (await http.get(altered)).status_code == 404
    assert (await http.post(altered, data={"code": code, "decision": "approve"})).status_code == 404
    assert (await http.get("/approvals/link/not*a*token")).status_code == 404
    assert (await http.post(path, data={"code": code, "decision": "maybe"})).status_code == 400

    clock.advance(121)
    expired = await http.post(path, data={"code": code, "decision": "approve"})
    assert expired.status_code == 410 and "expired" in expired.text
    assert (await ctx.approvals.get(rid)).status == "expired"  # type: ignore[union-attr]


# -- webhook -------------------------------------------------------------------------------------------------

async def test_webhook_is_signed_and_verifiable(
        servers: Servers, settings: Settings, make_client: Callable[..., Any], clock: FrozenClock) -> None:
    ctx, http = await make_client(settings, **_overrides(servers))
    subject = await _user(ctx, email_=None, phone=None, webhook=servers.webhook_url)
    rid = await _create(ctx, subject)

    assert len(servers.hooks) == 1
    body, headers = servers.hooks[0]
    header = headers[SIGNATURE_HEADER]
    assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", header)
    now = clock.now()
    assert verify_webhook_signature(SECRET, body, header, now=now)
    # the documented recipe, done by hand: HMAC-SHA256(secret, f"{t}." + raw body)
    t_sent, v1 = re.fullmatch(r"t=(\d+),v1=([0-9a-f]{64})", header).groups()  # type: ignore[union-attr]
    assert abs(int(t_sent) - now) <= 1
    assert hmac.compare_digest(v1, hmac.new(SECRET.encode(), f"{t_sent}.".encode() + body, hashlib.sha256).hexdigest())
    moved = header.replace(f"t={t_sent}", f"t={int(t_sent) + 1}")
    assert not verify_webhook_signature(SECRET, body, moved, now=now)  # the timestamp is signed too
    payload = json.loads(body)
    assert payload["id"] == rid and payload["kind"] == "oauth_consent" and payload["client_id"] == "agent-1"
    assert payload["reason"] == "I need <b>your</b> notes" and payload["reason_is_unverified"] is True
    assert set(payload["links"]) == {"approve", "deny"} and payload["expires_at"] > now

    # altered body, wrong secret, old (replayed) or future timestamp, junk header: all fail
    assert not verify_webhook_signature(SECRET, body.replace(b"agent-1", b"agent-2"), header, now=now)
    assert not verify_webhook_signature("other-secret", body, header, now=now)
    assert not verify_webhook_signature(SECRET, body, header, now=now + 301)
    assert not verify_webhook_signature(SECRET, body, header, now=now - 301)
    assert verify_webhook_signature(SECRET, body, header, now=now + 299)
    assert not verify_webhook_signature(SECRET, body, "t=abc,v1=00", now=now)
    assert not verify_webhook_signature(SECRET, body, None, now=now)
    t = int(now) - 600
    assert not verify_webhook_signature(SECRET, body, sign_webhook(SECRET, body, t), now=now)
    assert verify_webhook_signature(SECRET, body, sign_webhook(SECRET, body, t), now=t + 10)

    # the deny link is one-time and only leads to the signed-in page
    deny = await http.get(_path(payload["links"]["deny"]))
    assert deny.status_code == 303 and deny.headers["location"] == f"/approvals/{rid}"
    assert (await http.get(_path(payload["links"]["deny"]))).status_code == 410
    assert (await ctx.approvals.get(rid)).status == "pending"  # type: ignore[union-attr]


async def test_webhook_goes_through_the_ssrf_guard(
        servers: Servers, settings: Settings, make_client: Callable[..., Any]) -> None:
    ctx, _ = await make_client(settings, **_overrides(servers, delivery_allow_loopback=False,
                                                      sms_base_url=""))
    subject = await _user(ctx, email_=None, phone=None, webhook=servers.webhook_url)
    rid = await _create(ctx, subject)
    assert servers.hooks == []
    failed = [e for e in await ctx.store.audit_events() if e["event"] == "approval.delivery_failed"]
    assert [e["detail"]["channel"] for e in failed] == ["webhook"] and failed[0]["detail"]["id"] == rid


# -- routing and failures -----------------------------------------------------------------------------------

async def test_failing_channels_do_not_break_request_creation(
        servers: Servers, settings: Settings, make_client: Callable[..., Any]) -> None:
    dead_smtp = free_port()  # nothing listens there
    servers.hook_status = 500
    ctx, _ = await make_client(settings, **_overrides(servers, smtp_port=dead_smtp))
    subject = await _user(ctx, webhook=servers.webhook_url)
    request = await ctx.approvals.create(kind="oauth_consent", subject=subject, client_id="agent-1",
                                         details={}, reason=None)
    assert request.status == "pending"
    await _router(ctx).drain(10)
    assert (await ctx.approvals.get(request.id)).status == "pending"  # type: ignore[union-attr]
    assert len(servers.sms) == 1 and len(servers.hooks) == 1  # the working channel still delivered
    events = await ctx.store.audit_events()
    failed = sorted(e["detail"]["channel"] for e in events if e["event"] == "approval.delivery_failed")
    delivered = sorted(e["detail"]["channel"] for e in events if e["event"] == "approval.delivered")
    assert failed == ["email", "webhook"] and delivered == ["sms"]


async def test_slow_channel_times_out(servers: Servers, settings: Settings, make_client: Callable[..., Any]) -> None:
    servers.hook_delay = 3.0
    ctx, _ = await make_client(settings, **_overrides(servers, approvals_delivery_timeout=1))
    subject = await _user(ctx, email_=None, phone=None, webhook=servers.webhook_url)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await ctx.approvals.create(kind="oauth_consent", subject=subject, client_id="agent-1", details={})
    assert loop.time() - started < 1.0  # delivery runs in the background
    await _router(ctx).drain(10)
    assert loop.time() - started < 2.9
    events = [e for e in await ctx.store.audit_events() if e["event"] == "approval.delivery_failed"]
    assert [e["detail"]["channel"] for e in events] == ["webhook"]


async def test_channels_follow_the_kind_and_console_prints_in_dev(
        servers: Servers, settings: Settings, make_client: Callable[..., Any],
        capsys: pytest.CaptureFixture[str]) -> None:
    ctx, _ = await make_client(settings, **_overrides(servers, approvals_console="auto",
                                                      approvals_channels={"ciba": ["sms"]}))
    subject = await _user(ctx)
    ciba = await _create(ctx, subject, kind="ciba")
    assert len(servers.sms) == 1 and servers.mailbox.messages == []
    consent = await _create(ctx, subject)
    assert len(servers.sms) == 2 and len(servers.mailbox.messages) == 1
    printed = capsys.readouterr().out
    assert re.search(rf"approval {re.escape(ciba)} \(ciba\).*http://127\.0\.0\.1:9000/approvals/link/", printed)
    assert f"approval {consent} (oauth_consent)" in printed


async def test_console_is_off_unless_development(settings: Settings, make_client: Callable[..., Any],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    ctx, _ = await make_client(settings, approvals_console="off")
    subject = await _user(ctx, email_=None, phone=None)
    await _create(ctx, subject)
    assert "approvals/link/" not in capsys.readouterr().out
