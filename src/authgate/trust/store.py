"""Trust state in the database: budgets, spending counters, issued mandates, the kill list and its version.

The admin dashboard and the CLI use this API directly; everything that changes state also writes the audit
log (``trust.*`` events) and, for the kill list and mandate revocations, bumps a version counter row that each
process reads to invalidate its cache (authgate.trust.killswitch).

- ``set_budget / get_budget / list_budgets / delete_budget``: limits per agent key.
- ``charge(key, buckets, amount)``: add ``amount`` to every ``(period, payee, limit)`` bucket of ``key`` in one
  transaction, each by a conditional UPDATE, so no concurrent payment (any process) can pass a limit; returns
  the index of the first bucket that would go over (nothing charged) or None (all charged).
- ``record_mandate / get_mandate / list_mandates / revoke_mandate``: mandates this server signed.
- ``kill / revive / kills / is_listed / version``: the kill list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from authgate.policy.identity import THUMBPRINT_URN
from authgate.store import tables as t

if TYPE_CHECKING:
    from authgate.store import Store

#: The largest amount a counter holds (BIGINT); larger amounts are refused as bad input.
MAX_AMOUNT = 2**63 - 1
KILLS = "kills"
MANDATES = "mandates"


class _OverLimit(Exception):
    def __init__(self, index: int) -> None:
        self.index = index


@dataclass(frozen=True)
class BudgetRow:
    agent: str
    per_request: int | None
    per_day: int | None
    per_payee_day: int | None
    approver: str | None
    updated_at: int

    def public(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Bucket:
    """One spending counter to charge: ``limit`` None counts without limiting."""

    period: str
    payee: str
    limit: int | None


@dataclass(frozen=True)
class MandateRow:
    jti: str
    subject: str
    agent: str
    terms: dict[str, Any]
    issued_at: int
    expires_at: int
    revoked_at: int | None

    def public(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class KillRow:
    kind: str
    ident: str
    killed_at: int
    killed_by: str | None
    reason: str | None

    def public(self) -> dict[str, Any]:
        return dict(self.__dict__)


class TrustStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    @property
    def engine(self) -> Any:
        return self.store.engine

    def _now(self) -> int:
        return int(self.store.clock.now())

    # -- budgets -------------------------------------------------------------------------------------------

    async def set_budget(self, agent: str, *, per_request: int | None = None, per_day: int | None = None,
                         per_payee_day: int | None = None, approver: str | None = None, by: str | None = None
                         ) -> BudgetRow:
        """Create or replace the limits of ``agent`` (None = no limit of that kind)."""
        for value in (per_request, per_day, per_payee_day):
            if value is not None and not 0 <= value <= MAX_AMOUNT:
                raise ValueError("a limit must be between 0 and 2**63-1 atomic units")
        row = BudgetRow(agent, per_request, per_day, per_payee_day, approver, self._now())
        async with self.engine.begin() as conn:
            await conn.execute(sa.delete(t.trust_budgets).where(t.trust_budgets.c.agent == agent))
            await conn.execute(sa.insert(t.trust_budgets).values(**row.__dict__))
            await conn.execute(sa.insert(t.audit_log).values(
                at=row.updated_at, event="trust.budget_set", client_id=None, subject=by,
                detail={"agent": agent, "per_request": per_request, "per_day": per_day,
                        "per_payee_day": per_payee_day, "approver": approver}))
        return row

    async def get_budget(self, agent: str) -> BudgetRow | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(t.trust_budgets).where(t.trust_budgets.c.agent == agent))).first()
        return BudgetRow(**row._mapping) if row else None

    async def list_budgets(self, limit: int = 1000) -> list[BudgetRow]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(sa.select(t.trust_budgets).order_by(t.trust_budgets.c.agent).limit(limit))
        return [BudgetRow(**r._mapping) for r in rows]

    async def delete_budget(self, agent: str, by: str | None = None) -> bool:
        async with self.engine.begin() as conn:
            res = await conn.execute(sa.delete(t.trust_budgets).where(t.trust_budgets.c.agent == agent))
            if res.rowcount:
                await conn.execute(sa.insert(t.audit_log).values(
                    at=self._now(), event="trust.budget_deleted", client_id=None, subject=by,
                    detail={"agent": agent}))
        return bool(res.rowcount)

    # -- spending counters ---------------------------------------------------------------------------------

    async def charge(self, key: str, buckets: list[Bucket], amount: int) -> int | None:
        """Charge ``amount`` to every bucket atomically; the index of the first bucket over its limit, or None.

        One transaction, buckets in a fixed order (two payers never deadlock): each row is created if absent
        (``INSERT … ON CONFLICT DO NOTHING``, which waits for a concurrent creator instead of aborting), then
        updated with ``spent + amount <= limit`` in the WHERE clause — PostgreSQL re-checks it on the locked
        row, SQLite has one writer. Over a limit, the whole transaction (new rows included) is rolled back.
        One commit per payment: the commit is most of the cost (PostgreSQL fsyncs it)."""
        if not 0 <= amount <= MAX_AMOUNT:
            raise ValueError("amount out of range")
        now = self._now()
        c = t.trust_spend.c
        insert = pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
        order = sorted(range(len(buckets)), key=lambda i: (buckets[i].period, buckets[i].payee))
        try:
            async with self.engine.begin() as conn:
                for i in order:
                    await conn.execute(insert(t.trust_spend).values(
                        key=key, period=buckets[i].period, payee=buckets[i].payee, spent=0, updated_at=now,
                    ).on_conflict_do_nothing(index_elements=["key", "period", "payee"]))
                for i in order:
                    b = buckets[i]
                    query = sa.update(t.trust_spend).where(c.key == key, c.period == b.period, c.payee == b.payee)
                    if b.limit is not None:
                        query = query.where(c.spent + amount <= b.limit)
                    res = await conn.execute(query.values(spent=c.spent + amount, updated_at=now))
                    if not res.rowcount:
                        raise _OverLimit(i)
        except _OverLimit as over:
            return over.index
        return None

    async def refund(self, key: str, buckets: list[Bucket], amount: int) -> None:
        """Undo a ``charge`` whose payment did not happen (verify or settle failed), in one transaction."""
        c = t.trust_spend.c
        now = self._now()
        async with self.engine.begin() as conn:
            for b in sorted(buckets, key=lambda b: (b.period, b.payee)):
                await conn.execute(sa.update(t.trust_spend).where(
                    c.key == key, c.period == b.period, c.payee == b.payee, c.spent >= amount,
                ).values(spent=c.spent - amount, updated_at=now))

    async def spent(self, key: str, period: str, payee: str = "*") -> int:
        c = t.trust_spend.c
        async with self.engine.connect() as conn:
            value = (await conn.execute(sa.select(c.spent).where(
                c.key == key, c.period == period, c.payee == payee))).scalar_one_or_none()
        return int(value or 0)

    async def claim_once(self, key: str, marker: str) -> bool:
        """Insert-if-absent a marker row (period ``once``): True for the first caller only, in any process.
        Used so one approved over-budget payment is paid once."""
        try:
            async with self.engine.begin() as conn:
                await conn.execute(sa.insert(t.trust_spend).values(
                    key=key, period="once", payee=marker[:80], spent=0, updated_at=self._now()))
        except sa.exc.IntegrityError:
            return False
        return True

    async def release_claim(self, key: str, marker: str) -> None:
        """Undo ``claim_once`` (what it guarded did not happen): the next caller claims it again."""
        c = t.trust_spend.c
        async with self.engine.begin() as conn:
            await conn.execute(sa.delete(t.trust_spend).where(c.key == key, c.period == "once",
                                                              c.payee == marker[:80]))

    # -- mandates ------------------------------------------------------------------------------------------

    async def record_mandate(self, row: MandateRow) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(sa.insert(t.trust_mandates).values(**row.__dict__))
            await conn.execute(sa.insert(t.audit_log).values(
                at=row.issued_at, event="trust.mandate_issued", client_id=None, subject=row.subject,
                detail={"jti": row.jti, "agent": row.agent, "expires_at": row.expires_at}))

    async def get_mandate(self, jti: str) -> MandateRow | None:
        if not jti or len(jti) > 64:
            return None
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(t.trust_mandates).where(t.trust_mandates.c.jti == jti))).first()
        return MandateRow(**row._mapping) if row else None

    async def list_mandates(self, *, subject: str | None = None, agent: str | None = None,
                            limit: int = 1000) -> list[MandateRow]:
        c = t.trust_mandates.c
        query = sa.select(t.trust_mandates).order_by(c.issued_at.desc()).limit(limit)
        if subject is not None:
            query = query.where(c.subject == subject)
        if agent is not None:
            query = query.where(c.agent == agent)
        async with self.engine.connect() as conn:
            return [MandateRow(**r._mapping) for r in await conn.execute(query)]

    async def revoke_mandate(self, jti: str, *, by: str | None = None, subject: str | None = None) -> bool:
        """Revoke once; with ``subject`` only a mandate that person issued. False if unknown or already revoked."""
        c = t.trust_mandates.c
        now = self._now()
        query = sa.update(t.trust_mandates).where(c.jti == jti, c.revoked_at.is_(None))
        if subject is not None:
            query = query.where(c.subject == subject)
        async with self.engine.begin() as conn:
            res = await conn.execute(query.values(revoked_at=now))
            if not res.rowcount:
                return False
            await self._bump(conn, MANDATES)
            await conn.execute(sa.insert(t.audit_log).values(
                at=now, event="trust.mandate_revoked", client_id=None, subject=by, detail={"jti": jti}))
        return True

    async def revoked_mandates(self) -> set[str]:
        c = t.trust_mandates.c
        async with self.engine.connect() as conn:
            return {r[0] for r in await conn.execute(sa.select(c.jti).where(c.revoked_at.is_not(None)))}

    # -- kill switch ---------------------------------------------------------------------------------------

    async def _bump(self, conn: Any, name: str) -> None:
        await self.store.counters.bump(conn, name)

    async def version(self, name: str) -> int:
        return await self.store.counters.get(name)

    async def kill(self, kind: str, ident: str, *, by: str | None = None, reason: str | None = None) -> bool:
        """Put ``(kind, ident)`` on the kill list, deny its pending approvals, audit; False if already listed."""
        now = self._now()
        try:
            async with self.engine.begin() as conn:
                await conn.execute(sa.insert(t.trust_kills).values(
                    kind=kind, ident=ident, killed_at=now, killed_by=by, reason=(reason or None) and reason[:500]))
                a = t.approval_requests.c
                match = a.subject == ident if kind == "user" else a.client_id == ident
                denied = await conn.execute(sa.update(t.approval_requests).where(a.status == "pending", match)
                                            .values(status="denied", decided_at=now, decided_by="killswitch",
                                                    channel="killswitch"))
                await self._bump(conn, KILLS)
                await conn.execute(sa.insert(t.audit_log).values(
                    at=now, event="trust.killed", client_id=ident if kind != "user" else None,
                    subject=by, detail={"kind": kind, "ident": ident, "reason": reason,
                                        "approvals_denied": denied.rowcount}))
        except sa.exc.IntegrityError:
            return False
        return True

    async def revive(self, kind: str, ident: str, *, by: str | None = None) -> bool:
        c = t.trust_kills.c
        now = self._now()
        async with self.engine.begin() as conn:
            res = await conn.execute(sa.delete(t.trust_kills).where(c.kind == kind, c.ident == ident))
            if not res.rowcount:
                return False
            await self._bump(conn, KILLS)
            await conn.execute(sa.insert(t.audit_log).values(
                at=now, event="trust.revived", client_id=ident if kind != "user" else None, subject=by,
                detail={"kind": kind, "ident": ident}))
        return True

    async def agentauth_token_owner(self, jti: str) -> tuple[str, str | None] | None:
        """(agent id, person) of an Agent Auth token this server issued, for the kill switch."""
        c = t.agentauth_tokens.c
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(c.agent_id, c.subject).where(c.jti == jti))).first()
        return (str(row[0]), row[1]) if row else None

    async def agent_owner(self, agent: str) -> str | None:
        """The person (user subject) owning an active Agent Auth agent enrolled here, found by its agent id or,
        for a person or auth token's key thumbprint URN, by its key; None for anything else (OAuth clients and
        payer addresses have no recorded owner)."""
        c = t.agentauth_agents.c
        if agent.startswith(THUMBPRINT_URN):
            match = c.jkt == agent[len(THUMBPRINT_URN):]
        elif agent and len(agent) <= 300:
            match = c.agent_id == agent
        else:
            return None
        async with self.engine.connect() as conn:
            rows = (await conn.execute(sa.select(c.owner).where(match, c.revoked_at.is_(None)).limit(2))).all()
        return str(rows[0][0]) if len(rows) == 1 else None

    async def kills(self) -> list[KillRow]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(sa.select(t.trust_kills).order_by(t.trust_kills.c.killed_at))
        return [KillRow(**r._mapping) for r in rows]
