"""SMS channel through a Twilio-shaped API: ``POST {sms_base_url}/2010-04-01/Accounts/{sid}/Messages.json``
with form fields ``To``, ``From``, ``Body`` and HTTP Basic ``sid:token``, through the SSRF guard.

The text is short: who asks, the short code when links require one, and a short (128-bit) one-time link.
"""

from __future__ import annotations

import base64
from urllib.parse import quote, urlencode

from authgate.approvals.channels.base import Delivery, DeliveryError, one_line
from authgate.approvals.channels.http import GuardedPoster
from authgate.config import Settings
from authgate.store import User


def sms_text(delivery: Delivery) -> str:
    r = delivery.request
    client = one_line(r.client_id, 40) or "An app"
    parts = [f"authgate: {client} asks for your approval ({one_line(r.kind, 24)})."]
    if r.binding_message:
        parts.append(f"Check: {one_line(r.binding_message, 60)}.")
    if delivery.code:
        parts.append(f"Code {delivery.code}.")
    parts.append(delivery.link)
    return " ".join(parts)


class SmsChannel:
    name = "sms"
    intents: tuple[str, ...] = ("open",)
    short_links = True
    inline = False

    def __init__(self, settings: Settings, poster: GuardedPoster) -> None:
        self.s = settings
        self.poster = poster
        sid = settings.sms_account_sid
        self.url = f"{settings.sms_base_url.rstrip('/')}/2010-04-01/Accounts/{quote(sid, safe='')}/Messages.json"
        creds = base64.b64encode(f"{sid}:{settings.sms_auth_token}".encode()).decode()
        self._auth = f"Basic {creds}"

    def reaches(self, user: User | None) -> bool:
        return bool(self.s.sms_base_url) and user is not None and bool(user.phone)

    async def send(self, delivery: Delivery) -> None:
        assert delivery.user is not None and delivery.user.phone
        form = {"To": delivery.user.phone, "From": self.s.sms_from, "Body": sms_text(delivery)}
        response = await self.poster.post(self.url, content=urlencode(form).encode(), headers={
            "Content-Type": "application/x-www-form-urlencoded", "Authorization": self._auth,
            "Accept": "application/json"})
        if not 200 <= response.status < 300:
            raise DeliveryError(f"SMS API answered {response.status}")
