"""Delivery of approval requests to their person: e-mail, SMS, webhook, console.

:class:`ChannelRouter` is the :class:`~authgate.approvals.Notifier` the server gives its
``ApprovalService``. For each new request it looks up the user (``email``, ``phone``, ``webhook_url``),
picks channels (``approvals_channels`` maps a request kind to channel names, ``"*"`` being the fallback;
unlisted kinds go to every channel the user has; ``console`` is added in development), mints fresh one-time
links for each channel (and, when links require a code, one 6-digit code for the request, sent only on the
``approvals_code_channels``), then delivers. Network channels run in the background under a shared
semaphore (``approvals_delivery_concurrency``) and a per-delivery deadline (``approvals_delivery_timeout``);
a failure is logged and audited, never raised into whoever created the request, whose request stays in the
web inbox regardless.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from authgate.approvals.channels.base import Channel, Delivery, DeliveryError
from authgate.approvals.channels.console import ConsoleChannel
from authgate.approvals.channels.email import EmailChannel
from authgate.approvals.channels.http import GuardedPoster
from authgate.approvals.channels.sms import SmsChannel
from authgate.approvals.channels.webhook import (
    SIGNATURE_HEADER,
    WebhookChannel,
    sign_webhook,
    verify_webhook_signature,
)
from authgate.approvals.links import ApprovalLinks
from authgate.approvals.service import ApprovalRequest
from authgate.clock import Clock
from authgate.config import Settings, is_loopback_host
from authgate.net.fetch import FetchError
from authgate.store import Store, User

log = logging.getLogger("authgate.approvals.channels")

#: Deliveries waiting or running at once, beyond which new ones are dropped (logged): a flood of requests
#: cannot grow memory without bound.
MAX_BACKLOG = 1000

__all__ = [
    "SIGNATURE_HEADER",
    "Channel",
    "ChannelRouter",
    "ConsoleChannel",
    "Delivery",
    "DeliveryError",
    "EmailChannel",
    "GuardedPoster",
    "SmsChannel",
    "WebhookChannel",
    "build_notifier",
    "sign_webhook",
    "verify_webhook_signature",
]


@dataclass
class ChannelRouter:
    store: Store
    clock: Clock
    links: ApprovalLinks
    channels: list[Channel]
    #: kind -> channel names; "*" is the fallback; empty = every channel the user has.
    routing: dict[str, list[str]] = field(default_factory=dict)
    require_code: bool = False
    code_channels: tuple[str, ...] = ("sms", "console")
    concurrency: int = 8
    timeout: float = 10.0
    _tasks: set[asyncio.Task[None]] = field(default_factory=set, init=False, repr=False)
    _sem: asyncio.Semaphore | None = field(default=None, init=False, repr=False)

    def select(self, kind: str, user: User | None) -> list[Channel]:
        wanted = self.routing.get(kind, self.routing.get("*"))
        return [c for c in self.channels
                if c.reaches(user) and (wanted is None or c.name in wanted or c.name == "console")]

    async def notify(self, request: ApprovalRequest) -> None:
        """Mint links and start deliveries; never raises."""
        try:
            await self._notify(request)
        except Exception:
            log.exception("preparing delivery of approval request %s failed", request.id)

    async def _notify(self, request: ApprovalRequest) -> None:
        user = await self.store.get_user(request.subject) if request.subject else None
        chosen = self.select(request.kind, user)
        if not chosen:
            log.info("approval request %s: no delivery channel for its user; it waits in the web inbox", request.id)
            return
        code: str | None = None
        if self.require_code:
            if any(c.name in self.code_channels for c in chosen):
                code = await self.links.set_code(request)
            else:
                log.warning("approval request %s: links need a code but no code channel (%s) reaches its user; "
                            "it can be decided in the web inbox", request.id, ", ".join(self.code_channels))
        for channel in chosen:
            urls = {}
            for intent in channel.intents:
                link = await self.links.issue(request, channel=channel.name, intent=intent,
                                              short=channel.short_links)
                urls[intent] = link.url
            delivery = Delivery(request=request, user=user, links=urls,
                                code=code if channel.name in self.code_channels else None,
                                code_required=self.require_code)
            if channel.inline:
                await self._deliver(channel, delivery)
            elif len(self._tasks) >= MAX_BACKLOG:
                log.error("approval request %s: delivery backlog full, %s not sent", request.id, channel.name)
            else:
                task = asyncio.create_task(self._deliver(channel, delivery))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _deliver(self, channel: Channel, delivery: Delivery) -> None:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.concurrency)
        rid = delivery.request.id
        try:
            async with self._sem:
                await asyncio.wait_for(channel.send(delivery), self.timeout)
        except Exception as exc:
            reason = exc.reason if isinstance(exc, FetchError) else str(exc) or type(exc).__name__
            log.warning("approval request %s: %s delivery failed: %s", rid, channel.name, reason)
            await self._audit("approval.delivery_failed", delivery, channel.name)
            return
        await self._audit("approval.delivered", delivery, channel.name)

    async def _audit(self, event: str, delivery: Delivery, channel: str) -> None:
        r = delivery.request
        try:
            await self.store.audit(event, client_id=r.client_id, subject=r.subject,
                                   id=r.id, channel=channel)
        except Exception:
            log.exception("auditing %s for %s failed", event, r.id)

    async def drain(self, within: float | None = None) -> None:
        """Wait for background deliveries (tests, shutdown), at most ``within`` seconds."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=within)


def console_enabled(settings: Settings) -> bool:
    if settings.approvals_console == "auto":
        return is_loopback_host(urlsplit(settings.issuer_url).hostname or "")
    return settings.approvals_console == "on"


def build_notifier(settings: Settings, store: Store, clock: Clock, *,
                   write: Callable[[str], None] = print) -> ChannelRouter:
    """The router with every channel the settings enable."""
    timeout = float(settings.approvals_delivery_timeout)
    poster = GuardedPoster(allow_loopback=settings.delivery_allow_loopback, timeout=timeout)
    channels: list[Channel] = [EmailChannel(settings, timeout), SmsChannel(settings, poster),
                               WebhookChannel(settings.approvals_webhook_secret, poster, clock)]
    if console_enabled(settings):
        channels.append(ConsoleChannel(write))
    links = ApprovalLinks(store, clock, issuer=settings.issuer_url, max_attempts=settings.approvals_code_attempts)
    routing = {k: list(v) for k, v in settings.approvals_channels.items()}
    return ChannelRouter(store, clock, links, channels, routing=routing,
                         require_code=settings.approvals_link_requires_code,
                         code_channels=settings.approvals_code_channels,
                         concurrency=settings.approvals_delivery_concurrency, timeout=timeout)

