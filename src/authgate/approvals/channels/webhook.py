"""Webhook channel: a signed JSON POST to the user's ``webhook_url``.

Signature (the same scheme as Stripe's): header ``authgate-signature: t=<unix seconds>,v1=<hex>`` where
``v1 = HMAC-SHA256(key=approvals_webhook_secret, msg=f"{t}." + raw_body)``. A receiver must:

1. take the raw request body bytes, before any JSON parsing;
2. parse ``t`` and every ``v1`` from the header (more than one ``v1`` may appear while secrets rotate);
3. reject the delivery if ``|now - t|`` exceeds its tolerance (five minutes here): an old, replayed
   delivery fails even though its signature is genuine;
4. compute the HMAC over ``f"{t}."`` + body and compare it with each ``v1`` in constant time;
5. optionally remember ``(id, t)`` for the tolerance window to drop exact replays inside it.

:func:`verify_webhook_signature` does steps 2-4. The body carries one-time ``approve``/``deny`` links; a link
alone never decides (see :mod:`authgate.approvals.links`), and each works once, so a replayed webhook cannot
cause a second decision.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

from authgate.approvals.channels.base import Delivery, DeliveryError
from authgate.approvals.channels.http import GuardedPoster
from authgate.clock import Clock
from authgate.store import User

SIGNATURE_HEADER = "authgate-signature"
DEFAULT_TOLERANCE = 300


def _mac(secret: str | bytes, timestamp: int, body: bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign_webhook(secret: str | bytes, body: bytes, timestamp: int) -> str:
    """The ``authgate-signature`` header value for ``body`` sent at ``timestamp``."""
    return f"t={timestamp},v1={_mac(secret, timestamp, body)}"


def verify_webhook_signature(secret: str | bytes, body: bytes, header: str | None, *,
                             tolerance: int = DEFAULT_TOLERANCE, now: float | None = None) -> bool:
    """Receiver side: True only if ``header`` signs exactly ``body`` with ``secret`` and its timestamp is
    within ``tolerance`` seconds of ``now`` (default: the system time)."""
    if not header or len(header) > 1024:
        return False
    timestamp: int | None = None
    candidates: list[str] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and value.isdigit() and len(value) <= 12 and timestamp is None:
            timestamp = int(value)
        elif key == "v1" and value:
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        return False
    expected = _mac(secret, timestamp, body)
    return any(hmac.compare_digest(expected, c.lower()) for c in candidates)


def webhook_body(delivery: Delivery) -> dict[str, Any]:
    r = delivery.request
    return {
        "type": "approval.requested",
        "id": r.id,
        "kind": r.kind,
        "client_id": r.client_id,
        "subject": r.subject,
        "details": r.details,
        "reason": r.reason,
        "reason_is_unverified": True,  # the agent's own words
        "binding_message": r.binding_message,
        "created_at": r.created_at,
        "expires_at": r.expires_at,
        "links": delivery.links,
        "code_required": delivery.code_required,
    }


class WebhookChannel:
    name = "webhook"
    intents: tuple[str, ...] = ("approve", "deny")
    short_links = False
    inline = False

    def __init__(self, secret: str, poster: GuardedPoster, clock: Clock) -> None:
        self.secret = secret
        self.poster = poster
        self.clock = clock

    def reaches(self, user: User | None) -> bool:
        return bool(self.secret and user is not None and user.webhook_url)

    async def send(self, delivery: Delivery) -> None:
        assert delivery.user is not None and delivery.user.webhook_url
        body = json.dumps(webhook_body(delivery), separators=(",", ":"), ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json",
                   SIGNATURE_HEADER: sign_webhook(self.secret, body, int(self.clock.now()))}
        response = await self.poster.post(delivery.user.webhook_url, content=body, headers=headers)
        if not 200 <= response.status < 300:
            raise DeliveryError(f"webhook answered {response.status}")
