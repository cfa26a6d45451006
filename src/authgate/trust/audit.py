"""Audit events of the trust checks at a paywall or gateway, in the unified audit log (``audit_log``) of the
trust database — only when there is one (``[trust]`` names a database, or inside ``authgate serve``).

Only refusals and settled payments are written, never an allowed request, so the checks' hot path gains no
write; each event is one row through the store's group commit (batched with every other request's writes in one
transaction), bounded by a short timeout, and a write that fails is logged, never turned into a different
answer.

==============================  ====================================================================================
``trust.budget_denied``         ``budget_exceeded`` / ``budget_approval_denied`` (``approval_id``)
``trust.budget_pending``        an approval was requested for a payment over budget (``approval_id``); the agent's
                                repeats while it is pending are not written again
``trust.mandate_denied``        ``mandate_*``
``trust.attestation_denied``    ``attestation_*``
``trust.kill_denied``           ``agent_disabled``: a killed payer, client, person or agent (payment, bearer token
                                or Agent Auth signature)
``x402.payment_received``       a payment a paywall settled (``tx``, ``network``, ``asset``, ``amount``, ``payer``,
                                ``payee``)
==============================  ====================================================================================

``client_id`` is the agent key (client id, Agent Auth agent id or key thumbprint URN, else the payer address),
``subject`` the person when the request proved one. Details carry the refusal ``code`` and ``description``,
``method`` and ``path`` where known, the payment's terms; never a token, mandate or attestation.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from authgate.store import tables as t
from authgate.trust import wire as w
from authgate.trust.errors import TrustError

if TYPE_CHECKING:
    from authgate.trust.store import TrustStore

log = logging.getLogger("authgate.trust")

EVENT_DENIED = {"budget": "trust.budget_denied", "mandate": "trust.mandate_denied",
                "attestation": "trust.attestation_denied", "kill": "trust.kill_denied"}
EVENT_PENDING = "trust.budget_pending"
EVENT_RECEIVED = "x402.payment_received"
#: Seconds an audit write may hold up the answer; past that it is still written, just not waited for.
WRITE_TIMEOUT = 2.0


def check_of(code: str) -> str | None:
    """Which check a refusal code belongs to (None: not a decision, e.g. ``temporarily_unavailable``)."""
    if code == w.ERR_KILLED:
        return "kill"
    for check in ("budget", "mandate", "attestation"):
        if code.startswith(check + "_"):
            return check
    return None


@dataclass(frozen=True)
class Seen:
    """What is known of the request a refusal or payment is about (all optional)."""

    agent: str | None = None
    subject: str | None = None
    mechanism: str | None = None
    method: str | None = None
    path: str | None = None
    payer: str | None = None
    payee: str | None = None
    amount: str | None = None
    asset: str | None = None
    network: str | None = None

    def detail(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if v is not None and k not in ("agent", "subject")}
        if "path" in out:
            out["path"] = str(out["path"])[:300]
        return out


def _cut(value: str | None, limit: int = 255) -> str | None:
    return value[:limit] if value else None


async def record(trust: TrustStore | None, event: str, seen: Seen, **detail: Any) -> None:
    """Write one event (nothing without a trust database); failures are logged."""
    if trust is None:
        return
    store = trust.store
    row = (t.audit_log, {"at": int(store.clock.now()), "event": event,
                         "client_id": _cut(seen.agent or seen.payer), "subject": _cut(seen.subject, 255),
                         "detail": {**seen.detail(), **{k: v for k, v in detail.items() if v is not None}}})
    try:
        await asyncio.wait_for(store.group.insert([row]), WRITE_TIMEOUT)
    except Exception as exc:  # the answer is decided already; an audit write never changes it
        log.warning("trust audit event %s not written: %s", event, exc.__class__.__name__)


async def refused(trust: TrustStore | None, error: TrustError, seen: Seen, *, approval_id: str | None = None
                  ) -> None:
    """Audit a refusal once (``error.audited``), unless it is no decision (the database was unreachable).
    ``approval_id``: the approval the request repeated (``Authgate-Approval``), when the error does not name one."""
    if error.audited:
        return
    error.audited = True
    check = check_of(error.code)
    if check is None:
        return
    event = EVENT_PENDING if error.code == w.ERR_BUDGET_PENDING else EVENT_DENIED[check]
    await record(trust, event, seen, code=error.code, description=error.description[:300],
                 approval_id=error.approval_id or approval_id)


async def received(trust: TrustStore | None, seen: Seen, receipt: Any) -> None:
    """Audit a payment a paywall settled (``receipt``: the facilitator's SettleResponse)."""
    tx = str(getattr(receipt, "transaction", "") or "").lower()
    network = str(getattr(receipt, "network", "") or "") or seen.network
    await record(trust, EVENT_RECEIVED, Seen(**{**seen.__dict__, "network": network}), tx=tx or None)
