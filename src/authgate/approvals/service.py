"""The approval service: create, look up, decide, wait."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from authgate.clock import Clock
from authgate.store import ApprovalRow, AuditEntry, Store

log = logging.getLogger("authgate.approvals")

Status = Literal["pending", "approved", "denied", "expired"]
MAX_REASON = 2000
MAX_BINDING_MESSAGE = 256


class ApprovalError(Exception):
    """Base of the service's refusals; ``code`` is stable for callers and pages."""

    code = "approval_error"


class NotFound(ApprovalError):
    code = "not_found"


class NotAllowed(ApprovalError):
    """The person deciding is neither the one the request is for nor an admin."""

    code = "not_allowed"


class AlreadyDecided(ApprovalError):
    code = "already_decided"


class Expired(ApprovalError):
    code = "expired"


@dataclass(frozen=True)
class ApprovalRequest:
    """A request for a person's decision. ``reason`` is the agent's own words: show it verbatim, escaped and
    labelled as unverified."""

    id: str
    kind: str
    subject: str | None
    client_id: str | None
    details: dict[str, Any]
    reason: str | None
    binding_message: str | None
    status: Status
    created_at: int
    expires_at: int
    decided_at: int | None
    decided_by: str | None
    channel: str | None

    @property
    def decided(self) -> bool:
        return self.status in ("approved", "denied")

    @property
    def approved(self) -> bool:
        return self.status == "approved"


class Notifier(Protocol):
    """Delivers a new request to its person (web inbox, webhook, e-mail, SMS, console)."""

    async def notify(self, request: ApprovalRequest) -> None: ...


def _view(row: ApprovalRow, now: int) -> ApprovalRequest:
    status: Status = row.status  # type: ignore[assignment]
    if status == "pending" and row.expires_at <= now:
        status = "expired"
    return ApprovalRequest(
        id=row.id, kind=row.kind, subject=row.subject, client_id=row.client_id, details=row.details,
        reason=row.reason, binding_message=row.binding_message, status=status, created_at=row.created_at,
        expires_at=row.expires_at, decided_at=row.decided_at, decided_by=row.decided_by, channel=row.channel,
    )


class ApprovalService:
    def __init__(self, store: Store, clock: Clock, *, notifier: Notifier | None = None,
                 default_ttl: int = 300, max_ttl: int = 3600,
                 on_decided: Callable[[ApprovalRequest], None] | None = None) -> None:
        self.store = store
        #: Called once per successful decision (metrics); never allowed to break the decision itself.
        self.on_decided = on_decided
        self.clock = clock
        self.notifier = notifier
        self.default_ttl = default_ttl
        self.max_ttl = max_ttl

    def _now(self) -> int:
        return int(self.clock.now())

    async def create(self, *, kind: str, subject: str | None, client_id: str | None, details: dict[str, Any],
                     reason: str | None = None, binding_message: str | None = None, ttl: int | None = None,
                     link_hash: str | None = None, code_hash: str | None = None, notify: bool = True
                     ) -> ApprovalRequest:
        """Record a pending request and hand it to the notifier. Delivery failures are logged, not raised:
        the request stays visible in the web inbox. ``notify=False`` records a request the person is deciding
        right now (the consent page), which no channel needs to announce."""
        now = self._now()
        lifetime = min(max(1, ttl or self.default_ttl), self.max_ttl)
        row = ApprovalRow(
            id=secrets.token_urlsafe(16), kind=kind[:32], subject=subject, client_id=client_id, details=details,
            reason=reason[:MAX_REASON] if reason else None,
            binding_message=binding_message[:MAX_BINDING_MESSAGE] if binding_message else None,
            status="pending", created_at=now, expires_at=now + lifetime, decided_at=None, decided_by=None,
            channel=None, link_hash=link_hash, code_hash=code_hash,
        )
        await self.store.create_approval(row, AuditEntry("approval.requested", client_id, subject,
                                                         {"id": row.id, "kind": row.kind}))
        request = _view(row, now)
        if notify and self.notifier is not None:
            try:
                await self.notifier.notify(request)
            except Exception:
                log.exception("delivering approval request %s failed", row.id)
        return request

    async def get(self, id: str) -> ApprovalRequest | None:
        if not id or len(id) > 64:
            return None
        row = await self.store.get_approval(id)
        return _view(row, self._now()) if row else None

    async def decide(self, id: str, approve: bool, *, by: str, channel: str, is_admin: bool = False
                     ) -> ApprovalRequest:
        """Approve or deny. ``by`` is the deciding user's subject; only the request's subject or an admin may
        decide. Exactly one decision ever succeeds; later ones raise AlreadyDecided (or Expired)."""
        current = await self.get(id)
        if current is None:
            raise NotFound(id)
        if not is_admin and (current.subject is None or not secrets.compare_digest(current.subject, by)):
            raise NotAllowed(id)
        if current.status == "expired":
            raise Expired(id)
        if current.decided:
            raise AlreadyDecided(id)
        status = "approved" if approve else "denied"
        audit = AuditEntry(f"approval.{status}", current.client_id, current.subject,
                           {"id": id, "kind": current.kind, "by": by, "channel": channel})
        if not await self.store.decide_approval(id, status, decided_by=by, channel=channel, audit=audit):
            after = await self.get(id)
            if after is not None and after.status == "expired":
                raise Expired(id)
            raise AlreadyDecided(id)
        decided = await self.get(id)
        assert decided is not None
        if self.on_decided is not None:
            try:
                self.on_decided(decided)
            except Exception:
                log.exception("approval decision observer failed")
        return decided

    async def pending_for(self, subject: str | None, limit: int = 100) -> list[ApprovalRequest]:
        """Pending requests for one person (all pending requests when ``subject`` is None: admins)."""
        now = self._now()
        rows = await self.store.list_approvals(subject=subject, status="pending", limit=limit)
        return [_view(r, now) for r in rows]

    async def wait(self, id: str, timeout: float, poll_interval: float = 0.5) -> ApprovalRequest:  # noqa: ASYNC109
        """Return once the request is decided or expired, or when ``timeout`` passes (still pending).

        Polls the database, so it works across processes without a message bus."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        while True:
            current = await self.get(id)
            if current is None:
                raise NotFound(id)
            if current.status != "pending" or loop.time() >= deadline:
                return current
            await asyncio.sleep(min(poll_interval, max(0.0, deadline - loop.time())))
