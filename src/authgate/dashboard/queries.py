"""Read-only queries behind the dashboard: the filtered, paginated audit log, live OAuth grants, and the
per-hour/per-day series the charts draw. Plain SQLAlchemy Core on the shared tables, portable between SQLite and
PostgreSQL; every query is bounded (page size, time window, row caps)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from authgate.store import Store
from authgate.store import tables as t

#: Audit events counted as denials on the charts: refusals, failed checks and replays (the trust checks' refusals
#: at a paywall or gateway are ``trust.*_denied``: authgate.trust.audit).
DENIAL_SUFFIXES = (".denied", "_denied", ".failed", "_failed", ".replayed")
#: The audit event of a payment a paywall settled (authgate.trust.audit.EVENT_RECEIVED).
PAYMENT_RECEIVED = "x402.payment_received"
#: The most rows a chart reads; older buckets beyond it are simply not drawn.
CHART_ROW_CAP = 200_000
#: OAuth token records read to list live grants.
GRANT_ROW_CAP = 5000


def is_denial(event: str) -> bool:
    return event.endswith(DENIAL_SUFFIXES)


@dataclass(frozen=True)
class AuditFilter:
    event: str = ""
    subject: str = ""
    client_id: str = ""
    since: int | None = None
    until: int | None = None

    def where(self) -> list[Any]:
        c = t.audit_log.c
        clauses: list[Any] = []
        if self.event:
            # "token." matches every token event; a full name matches only itself.
            clauses.append(c.event.startswith(self.event, autoescape=True) if self.event.endswith(".")
                           else c.event == self.event)
        if self.subject:
            clauses.append(c.subject == self.subject)
        if self.client_id:
            clauses.append(c.client_id == self.client_id)
        if self.since is not None:
            clauses.append(c.at >= self.since)
        if self.until is not None:
            clauses.append(c.at < self.until)
        return clauses


async def audit_page(store: Store, flt: AuditFilter, *, page: int, size: int) -> tuple[list[dict[str, Any]], bool]:
    """One page of matching events, newest first, and whether there is a next page."""
    c = t.audit_log.c
    query = (sa.select(t.audit_log).where(*flt.where()).order_by(c.id.desc())
             .offset((page - 1) * size).limit(size + 1))
    async with store.engine.connect() as conn:
        rows = [dict(r._mapping) for r in await conn.execute(query)]
    return rows[:size], len(rows) > size


async def audit_event_names(store: Store) -> list[str]:
    async with store.engine.connect() as conn:
        rows = await conn.execute(sa.select(t.audit_log.c.event).distinct().order_by(t.audit_log.c.event).limit(500))
    return [r[0] for r in rows]


async def audit_since(store: Store, after_id: int, limit: int = 1000) -> list[dict[str, Any]]:
    """Events after ``after_id``, oldest first (the demo's closing trail)."""
    c = t.audit_log.c
    async with store.engine.connect() as conn:
        rows = await conn.execute(sa.select(t.audit_log).where(c.id > after_id).order_by(c.id).limit(limit))
    return [dict(r._mapping) for r in rows]


@dataclass(frozen=True)
class OAuthGrant:
    """A person's live consent to an OAuth client: one grant (a token family), its scopes and resource."""

    grant_id: str
    client_id: str
    subject: str
    scopes: tuple[str, ...]
    audience: str
    issued_at: int
    expires_at: int


async def live_grants(store: Store, now: int, subject: str | None = None) -> list[OAuthGrant]:
    """Grants with a usable token (access or refresh), newest first; ``subject`` narrows to one person."""
    c = t.artifacts.c
    query = (sa.select(c.grant_id, c.client_id, c.kind, c.payload, c.created_at, c.expires_at)
             .where(c.kind.in_(("access_token", "refresh_token")), c.revoked_at.is_(None),
                    c.consumed_at.is_(None), c.expires_at > now, c.grant_id.is_not(None))
             .order_by(c.created_at.desc()).limit(GRANT_ROW_CAP))
    if subject is not None:
        # In SQL (json_extract on SQLite, ->> on PostgreSQL), so one person's grants are never cut off by the
        # row cap; the payload is checked again below.
        query = query.where(c.payload["sub"].as_string() == subject)
    async with store.engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    grants: dict[str, OAuthGrant] = {}
    for row in rows:
        payload = row.payload if isinstance(row.payload, dict) else {}
        sub = str(payload.get("sub", ""))
        if subject is not None and sub != subject:
            continue
        scope = payload.get("scope", "")
        scopes = tuple(scope.split() if isinstance(scope, str) else [str(s) for s in scope or []])
        seen = grants.get(row.grant_id)
        if seen is None:
            grants[row.grant_id] = OAuthGrant(row.grant_id, row.client_id or "", sub, scopes,
                                              str(payload.get("aud", "")), row.created_at, row.expires_at)
        elif len(scopes) > len(seen.scopes) or row.expires_at > seen.expires_at:
            grants[row.grant_id] = OAuthGrant(seen.grant_id, seen.client_id, seen.subject,
                                              max(scopes, seen.scopes, key=len), seen.audience or
                                              str(payload.get("aud", "")), seen.issued_at,
                                              max(row.expires_at, seen.expires_at))
    return list(grants.values())


async def grant_of(store: Store, grant_id: str, now: int) -> OAuthGrant | None:
    for grant in await live_grants(store, now):
        if grant.grant_id == grant_id:
            return grant
    return None


# -- charts ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Series:
    """Counts per bucket, oldest first; ``starts[i]`` is the epoch second bucket ``i`` begins."""

    starts: list[int]
    requests: list[int]
    denials: list[int]
    payments: list[int]


def buckets(now: int, step: int, count: int) -> list[int]:
    """The starts of ``count`` aligned buckets of ``step`` seconds, the last one containing ``now``."""
    last = now - now % step
    return [last - step * (count - 1 - i) for i in range(count)]


async def series(store: Store, now: int, step: int, count: int) -> Series:
    """Requests (audit events), denials and payments per bucket. Payments are those our facilitator settled
    (``x402_payments``) and those a paywall with a trust database received (``x402.payment_received`` events),
    each transaction (network, hash) counted once — at its earliest time — when authgate was both."""
    starts = buckets(now, step, count)
    first = starts[0]
    requests, denials, payments = [0] * count, [0] * count, [0] * count
    a, p = t.audit_log.c, t.x402_payments.c
    async with store.engine.connect() as conn:
        events = await conn.execute(sa.select(a.at, a.event).where(a.at >= first).limit(CHART_ROW_CAP))
        for at, event in events:
            i = (at - first) // step
            if 0 <= i < count:
                requests[i] += 1
                if is_denial(event):
                    denials[i] += 1
        settled: dict[tuple[str, str], int] = {}
        untraced: list[int] = []

        def paid_at(at: int, network: Any, tx: Any) -> None:
            if isinstance(tx, str) and tx and isinstance(network, str):
                key = (network, tx.lower())
                settled[key] = min(at, settled.get(key, at))
            else:
                untraced.append(at)

        rows = await conn.execute(sa.select(p.created_at, p.network, p.tx_hash)
                                  .where(p.created_at >= first, p.status == "settled").limit(CHART_ROW_CAP))
        for at, network, tx in rows:
            paid_at(at, network, tx)
        received = await conn.execute(sa.select(a.at, a.detail).where(a.at >= first, a.event == PAYMENT_RECEIVED)
                                      .limit(CHART_ROW_CAP))
        for at, detail in received:
            detail = detail if isinstance(detail, dict) else {}
            paid_at(at, detail.get("network"), detail.get("tx"))
        for at in [*settled.values(), *untraced]:
            i = (at - first) // step
            if 0 <= i < count:
                payments[i] += 1
    return Series(starts, requests, denials, payments)


# -- payments, Agent Auth consents, client tokens ----------------------------------------------------------

async def find_payments(store: Store, *, q: str = "", status: str = "", page: int, size: int
                        ) -> tuple[list[Any], bool]:
    """Payments newest first; ``q`` matches a payment id, transaction hash, payer or payee exactly
    (case-insensitively: addresses and hashes are stored lower-case)."""
    from authgate.store.payments import PaymentRow

    c = t.x402_payments.c
    query = sa.select(t.x402_payments).order_by(c.created_at.desc(), c.id)
    if q:
        needle = q.strip().lower()
        query = query.where(sa.or_(c.id == q.strip(), c.tx_hash == needle, c.payer == needle, c.payee == needle))
    if status:
        query = query.where(c.status == status)
    async with store.engine.connect() as conn:
        rows = (await conn.execute(query.offset((page - 1) * size).limit(size + 1))).all()
    found = [PaymentRow(**r._mapping) for r in rows]
    return found[:size], len(found) > size


async def agentauth_consents(store: Store, now: int, subject: str | None = None, limit: int = 1000
                             ) -> list[dict[str, Any]]:
    """Live remembered Agent Auth consents (all people, or one)."""
    c = t.agentauth_consents.c
    query = (sa.select(t.agentauth_consents).where(c.revoked_at.is_(None), c.expires_at > now)
             .order_by(c.subject, c.agent_id, c.resource, c.scope).limit(limit))
    if subject is not None:
        query = query.where(c.subject == subject)
    async with store.engine.connect() as conn:
        return [dict(r._mapping) for r in await conn.execute(query)]


async def revoke_client_tokens(store: Store, client_id: str, now: int) -> int:
    """Revoke every live code, access and refresh token of a client (the OAuth side of disabling it)."""
    c = t.artifacts.c
    async with store.engine.begin() as conn:
        result = await conn.execute(sa.update(t.artifacts)
                                    .where(c.client_id == client_id, c.revoked_at.is_(None), c.expires_at > now)
                                    .values(revoked_at=now))
    return int(result.rowcount)
