"""E-mail channel over real SMTP (stdlib ``smtplib`` in a worker thread; its socket timeout bounds it).

``smtp_security``: ``starttls`` (default; refuses a server that does not offer it, so no silent downgrade),
``tls`` (implicit TLS, port 465) or ``none`` (plain, for a local relay; credentials are then only allowed to
a loopback host, see ``Settings.validate``). Each message has a plain-text and an HTML part with the link.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid
from pathlib import Path
from urllib.parse import urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape

from authgate.approvals.channels.base import Delivery, one_line
from authgate.config import Settings
from authgate.store import User

_TEMPLATES = Path(__file__).resolve().parents[2] / "web" / "templates"
_env = Environment(loader=FileSystemLoader(_TEMPLATES), autoescape=select_autoescape(default=True))


def _details(delivery: Delivery) -> list[tuple[str, str]]:
    out = []
    for key, value in list(delivery.request.details.items())[:20]:
        text = " ".join(str(v) for v in value) if isinstance(value, list) else str(value)
        out.append((one_line(str(key), 64), one_line(text, 300)))
    return out


def _valid_address(address: str | None) -> bool:
    if not address or address.count("@") != 1 or " " in address:
        return False
    return one_line(address, 320) == address


class EmailChannel:
    name = "email"
    intents: tuple[str, ...] = ("open",)
    short_links = False
    inline = False

    def __init__(self, settings: Settings, timeout: float) -> None:
        self.s = settings
        self.timeout = timeout
        host = urlsplit(settings.issuer_url).hostname or "localhost"
        self.domain = host
        self.sender = settings.smtp_from or formataddr(("authgate", f"noreply@{host}"))

    def reaches(self, user: User | None) -> bool:
        return bool(self.s.smtp_host) and user is not None and _valid_address(user.email)

    def compose(self, delivery: Delivery) -> EmailMessage:
        assert delivery.user is not None and delivery.user.email
        r = delivery.request
        client = one_line(r.client_id, 60) or "An application"
        expires = datetime.fromtimestamp(r.expires_at, UTC).strftime("%Y-%m-%d %H:%M")
        msg = EmailMessage()
        msg["Subject"] = f"Approval needed: {client} ({one_line(r.kind, 32)})"
        msg["From"] = self.sender
        msg["To"] = delivery.user.email
        msg["Date"] = formatdate(localtime=False)
        msg["Message-ID"] = make_msgid(domain=self.domain)
        msg["Auto-Submitted"] = "auto-generated"
        lines = [f"{client} (client ID, unverified) asks for your approval.", f"Request type: {r.kind}"]
        lines += [f"  {k}: {v}" for k, v in _details(delivery)]
        if r.binding_message:
            lines.append(f"Check that this matches what your device shows: {one_line(r.binding_message, 256)}")
        if r.reason:
            lines += ["", "The agent says (its own words, unverified):", f"  {one_line(r.reason, 2000)}"]
        lines += ["", "Review the request (the link works once):", delivery.link, ""]
        if delivery.code_required:
            lines.append("You will be asked for the code we sent you on another channel.")
        lines.append(f"The request expires at {expires} UTC. If you did not expect it, ignore this message.")
        msg.set_content("\n".join(lines) + "\n")
        html = _env.get_template("link_email.html").render(
            request=r, details=_details(delivery),
            url=delivery.link, code_required=delivery.code_required, expires=expires)
        msg.add_alternative(html, subtype="html")
        return msg

    async def send(self, delivery: Delivery) -> None:
        message = self.compose(delivery)
        await asyncio.to_thread(self._send_sync, message)

    def _send_sync(self, message: EmailMessage) -> None:
        s = self.s
        context = ssl.create_default_context()
        smtp: smtplib.SMTP
        if s.smtp_security == "tls":
            smtp = smtplib.SMTP_SSL(s.smtp_host, s.smtp_port, timeout=self.timeout, context=context)
        else:
            smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=self.timeout)
        with smtp:
            if s.smtp_security == "starttls":
                smtp.starttls(context=context)
            if s.smtp_username:
                smtp.login(s.smtp_username, s.smtp_password)
            smtp.send_message(message)
