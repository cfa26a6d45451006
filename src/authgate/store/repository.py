"""The storage contract and its SQL implementation (SQLAlchemy Core, async)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from authgate.clock import Clock, SystemClock
from authgate.store import tables as t
from authgate.store.agentauth import AgentAuthRepository
from authgate.store.counters import CLIENTS, ChangeCounters
from authgate.store.engine import check_reachable, make_engine, migrate
from authgate.store.group_commit import GroupCommit, Insert
from authgate.store.payments import PaymentRepository


@dataclass(frozen=True)
class ClientRecord:
    client_id: str
    metadata: dict[str, Any]
    secret_hash: str | None
    secret_expires_at: int
    rat_hash: str | None
    dynamic: bool
    metadata_digest: str | None
    issued_at: int
    updated_at: int


@dataclass(frozen=True)
class Artifact:
    id: str
    kind: str
    client_id: str | None
    grant_id: str | None
    payload: dict[str, Any]
    created_at: int
    expires_at: int
    consumed_at: int | None
    revoked_at: int | None

    def usable(self, now: int) -> bool:
        return self.consumed_at is None and self.revoked_at is None and self.expires_at > now


@dataclass(frozen=True)
class NewArtifact:
    """An artefact to write; see :meth:`Store.put_artifacts`."""

    id: str
    kind: str
    payload: dict[str, Any]
    ttl: int
    client_id: str | None = None
    grant_id: str | None = None


@dataclass(frozen=True)
class AuditEntry:
    event: str
    client_id: str | None = None
    subject: str | None = None
    detail: dict[str, Any] | None = None


@dataclass(frozen=True)
class User:
    subject: str
    username: str
    password_hash: str
    created_at: int
    email: str | None = None
    phone: str | None = None
    webhook_url: str | None = None
    is_admin: bool = False


@dataclass(frozen=True)
class ApprovalRow:
    id: str
    kind: str
    subject: str | None
    client_id: str | None
    details: dict[str, Any]
    reason: str | None
    binding_message: str | None
    status: str
    created_at: int
    expires_at: int
    decided_at: int | None
    decided_by: str | None
    channel: str | None
    link_hash: str | None
    code_hash: str | None


@dataclass(frozen=True)
class SigningKeyRow:
    kid: str
    alg: str
    private_jwk: dict[str, Any]
    created_at: int
    retired_at: int | None
    remove_after: int | None


def _client(row: sa.Row[Any]) -> ClientRecord:
    return ClientRecord(**row._mapping)


def _artifact(row: sa.Row[Any]) -> Artifact:
    return Artifact(**row._mapping)


class Store:
    """All persistent state. One instance per process; safe to share between tasks."""

    def __init__(self, engine: AsyncEngine, clock: Clock | None = None) -> None:
        self.engine = engine
        self.clock = clock or SystemClock()
        #: Agent Auth keys, agents, consents and issued tokens (authgate.store.agentauth).
        self.agentauth = AgentAuthRepository(self)
        #: x402 payment reservations and records (authgate.store.payments).
        self.payments = PaymentRepository(self)
        #: Change counters behind every process's in-memory caches (authgate.store.counters).
        self.counters = ChangeCounters(engine)
        #: Concurrent requests' inserts share a transaction (authgate.store.group_commit).
        self.group = GroupCommit(engine)

    @classmethod
    async def open(cls, url: str, clock: Clock | None = None, *, run_migrations: bool = True,
                   pool_size: int = 10, max_overflow: int = 10) -> Store:
        engine = make_engine(url, pool_size=pool_size, max_overflow=max_overflow)
        if run_migrations:
            try:
                await check_reachable(engine)  # DatabaseUnavailable (a ConfigError) naming it, not a traceback
                await migrate(engine)
            except Exception:
                await engine.dispose()
                raise
        return cls(engine, clock)

    async def close(self) -> None:
        await self.group.drain()
        await self.engine.dispose()

    async def ping(self) -> None:
        """Raise unless the database answers a trivial query (readiness checks)."""
        async with self.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    def _now(self) -> int:
        return int(self.clock.now())

    # -- clients -------------------------------------------------------------------------------------

    async def create_client(self, record: ClientRecord, audit: AuditEntry | None = None) -> None:
        """Store a new client (and its audit record, in the same transaction)."""
        rows: list[Insert] = [(t.clients, dict(record.__dict__))]
        if audit is not None:
            rows.append(self._audit_row(audit))
        await self.group.insert(rows)

    async def get_client(self, client_id: str) -> ClientRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(t.clients).where(t.clients.c.client_id == client_id))).first()
        return _client(row) if row else None

    async def find_client_by_digest(self, digest: str) -> ClientRecord | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(sa.select(t.clients).where(t.clients.c.metadata_digest == digest).limit(1))
            ).first()
        return _client(row) if row else None

    async def get_client_by_rat(self, rat_hash: str) -> ClientRecord | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(t.clients).where(t.clients.c.rat_hash == rat_hash))).first()
        return _client(row) if row else None

    async def update_client(self, client_id: str, *, expected_rat_hash: str | None = None, **values: Any) -> bool:
        """Update a client; with ``expected_rat_hash`` only while that registration access token is current,
        so two concurrent RFC 7592 updates with one token cannot both succeed (the token rotates)."""
        values.setdefault("updated_at", self._now())
        query = sa.update(t.clients).where(t.clients.c.client_id == client_id)
        if expected_rat_hash is not None:
            query = query.where(t.clients.c.rat_hash == expected_rat_hash)
        async with self.engine.begin() as conn:
            res = await conn.execute(query.values(**values))
            if res.rowcount:
                await self.counters.bump(conn, CLIENTS)
        return bool(res.rowcount)

    async def clear_rat(self, rat_hash: str) -> None:
        async with self.engine.begin() as conn:
            res = await conn.execute(
                sa.update(t.clients).where(t.clients.c.rat_hash == rat_hash).values(rat_hash=None))
            if res.rowcount:
                await self.counters.bump(conn, CLIENTS)

    async def delete_client(self, client_id: str) -> bool:
        """Remove the client and revoke everything issued to it, in one transaction."""
        now = self._now()
        async with self.engine.begin() as conn:
            await conn.execute(
                sa.update(t.artifacts)
                .where(t.artifacts.c.client_id == client_id, t.artifacts.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            res = await conn.execute(sa.delete(t.clients).where(t.clients.c.client_id == client_id))
            if res.rowcount:
                await self.counters.bump(conn, CLIENTS)
        return bool(res.rowcount)

    async def count_clients(self) -> int:
        async with self.engine.connect() as conn:
            return int((await conn.execute(sa.select(sa.func.count()).select_from(t.clients))).scalar_one())

    async def list_clients(self, limit: int = 1000) -> list[ClientRecord]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(sa.select(t.clients).order_by(t.clients.c.issued_at).limit(limit))
        return [_client(r) for r in rows]

    # -- artefacts (codes, refresh tokens, access-token records, initial access tokens) ---------------

    async def put_artifact(
        self,
        id: str,
        kind: str,
        payload: dict[str, Any],
        ttl: int,
        *,
        client_id: str | None = None,
        grant_id: str | None = None,
    ) -> None:
        now = self._now()
        async with self.engine.begin() as conn:
            await conn.execute(
                sa.insert(t.artifacts).values(
                    id=id,
                    kind=kind,
                    client_id=client_id,
                    grant_id=grant_id,
                    payload=payload,
                    created_at=now,
                    expires_at=now + ttl,
                )
            )

    async def put_artifacts(self, items: list[NewArtifact], audit: AuditEntry | None = None) -> None:
        """Write several artefacts and their audit record in one transaction: a token response is stored
        whole or not at all (group-committed with other requests' writes)."""
        now = self._now()
        rows: list[Insert] = [
            (t.artifacts, {"id": a.id, "kind": a.kind, "client_id": a.client_id, "grant_id": a.grant_id,
                           "payload": a.payload, "created_at": now, "expires_at": now + a.ttl, "consumed_at": None,
                           "revoked_at": None})
            for a in items
        ]
        if audit is not None:
            rows.append(self._audit_row(audit, now))
        await self.group.insert(rows)

    def _audit_row(self, audit: AuditEntry, now: int | None = None) -> Insert:
        return (t.audit_log, {"at": self._now() if now is None else now, "event": audit.event,
                              "client_id": audit.client_id, "subject": audit.subject, "detail": audit.detail or {}})

    async def get_artifact(self, id: str, kind: str | None = None) -> Artifact | None:
        """The artefact whatever its state (expired, consumed, revoked); callers decide."""
        query = sa.select(t.artifacts).where(t.artifacts.c.id == id)
        if kind is not None:
            query = query.where(t.artifacts.c.kind == kind)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _artifact(row) if row else None

    async def consume_artifact(self, id: str, kind: str) -> tuple[Artifact | None, bool]:
        """Atomically mark a usable artefact consumed.

        Returns ``(artifact, True)`` to exactly one caller; later callers get ``(artifact, False)`` so they
        can react to replay (e.g. revoke the grant), and ``(None, False)`` when it never existed.
        """
        now = self._now()
        c = t.artifacts.c
        async with self.engine.begin() as conn:
            res = await conn.execute(
                sa.update(t.artifacts)
                .where(
                    c.id == id,
                    c.kind == kind,
                    c.consumed_at.is_(None),
                    c.revoked_at.is_(None),
                    c.expires_at > now,
                )
                .values(consumed_at=now)
            )
            row = (await conn.execute(sa.select(t.artifacts).where(c.id == id, c.kind == kind))).first()
        return (_artifact(row) if row else None), bool(res.rowcount)

    async def swap_artifact_payload(
        self, id: str, kind: str, change: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> tuple[dict[str, Any], bool] | None:
        """Compare-and-swap on a usable artefact's payload: read it, apply ``change``, write only if nobody
        wrote in between. Returns ``(payload_before, won)``, or None when the artefact is gone, consumed or
        revoked. Of concurrent callers (any number of processes) exactly one wins per stored version."""
        c = t.artifacts.c
        raw = sa.cast(c.payload, sa.Text)
        where = (c.id == id, c.kind == kind, c.consumed_at.is_(None), c.revoked_at.is_(None))
        async with self.engine.connect() as conn:
            before = (await conn.execute(sa.select(raw).where(*where))).scalar_one_or_none()
        if before is None:
            return None
        state = json.loads(before)
        async with self.engine.begin() as conn:
            res = await conn.execute(sa.update(t.artifacts).where(*where, raw == before).values(payload=change(state)))
        return state, bool(res.rowcount)

    async def revoke_artifact(self, id: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                sa.update(t.artifacts)
                .where(t.artifacts.c.id == id, t.artifacts.c.revoked_at.is_(None))
                .values(revoked_at=self._now())
            )

    async def revoke_grant(self, grant_id: str) -> int:
        """Revoke every artefact of a grant (a refresh-token family and its access tokens)."""
        async with self.engine.begin() as conn:
            res = await conn.execute(
                sa.update(t.artifacts)
                .where(t.artifacts.c.grant_id == grant_id, t.artifacts.c.revoked_at.is_(None))
                .values(revoked_at=self._now())
            )
        return int(res.rowcount)

    async def purge_expired(self, grace: int = 3600) -> int:
        async with self.engine.begin() as conn:
            res = await conn.execute(sa.delete(t.artifacts).where(t.artifacts.c.expires_at < self._now() - grace))
        return int(res.rowcount)

    # -- users ---------------------------------------------------------------------------------------

    async def add_user(self, user: User) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(sa.insert(t.users).values(**user.__dict__))

    async def get_user_by_name(self, username: str) -> User | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(t.users).where(t.users.c.username == username))).first()
        return User(**row._mapping) if row else None

    async def get_user(self, subject: str) -> User | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(t.users).where(t.users.c.subject == subject))).first()
        return User(**row._mapping) if row else None

    async def update_user(self, username: str, **values: Any) -> bool:
        async with self.engine.begin() as conn:
            res = await conn.execute(sa.update(t.users).where(t.users.c.username == username).values(**values))
        return bool(res.rowcount)

    async def list_users(self) -> list[User]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(sa.select(t.users).order_by(t.users.c.username))
        return [User(**r._mapping) for r in rows]

    async def remove_user(self, username: str) -> bool:
        async with self.engine.begin() as conn:
            subject = sa.select(t.users.c.subject).where(t.users.c.username == username).scalar_subquery()
            await conn.execute(sa.delete(t.identity_attributes).where(t.identity_attributes.c.subject == subject))
            res = await conn.execute(sa.delete(t.users).where(t.users.c.username == username))
        return bool(res.rowcount)

    # -- identity directory (AAuth): blinded attributes, lock-outs, server secrets -----------------------

    async def replace_identity_attributes(self, subject: str, blinds: dict[str, str],
                                          audit: AuditEntry | None = None) -> None:
        """Replace the user's whole set of blinded attributes (name -> HMAC hex) in one transaction."""
        c = t.identity_attributes.c
        async with self.engine.begin() as conn:
            await conn.execute(sa.delete(t.identity_attributes).where(c.subject == subject))
            if blinds:
                await conn.execute(sa.insert(t.identity_attributes),
                                   [{"subject": subject, "name": n, "blind": b} for n, b in sorted(blinds.items())])
            if audit is not None:
                await conn.execute(sa.insert(t.audit_log).values(
                    at=self._now(), event=audit.event, client_id=audit.client_id, subject=audit.subject,
                    detail=audit.detail or {}))

    async def identity_attributes(self, subject: str) -> dict[str, str]:
        c = t.identity_attributes.c
        async with self.engine.connect() as conn:
            rows = await conn.execute(sa.select(c.name, c.blind).where(c.subject == subject))
        return {r.name: r.blind for r in rows}

    async def identity_candidates(self, blinds: list[str], names: list[str], *, at_least: int = 1,
                                  limit: int = 16) -> dict[str, dict[str, str]]:
        """The users holding at least ``at_least`` of ``blinds`` (at most ``limit``, those holding the most first),
        with their stored blinds for ``names`` (subject -> name -> blind); one query whatever the outcome."""
        c = t.identity_attributes.c
        holders = (sa.select(c.subject).where(c.blind.in_(blinds)).group_by(c.subject)
                   .having(sa.func.count() >= at_least)
                   .order_by(sa.func.count().desc(), c.subject).limit(limit).scalar_subquery())
        query = sa.select(c.subject, c.name, c.blind).where(c.subject.in_(holders), c.name.in_(names))
        out: dict[str, dict[str, str]] = {}
        async with self.engine.connect() as conn:
            for r in await conn.execute(query):
                out.setdefault(r.subject, {})[r.name] = r.blind
        return out

    async def server_secret(self, name: str, make: Callable[[], str]) -> str:
        """The named server secret, created with ``make()`` by the first caller; every process gets the same."""
        c = t.server_secrets.c
        query = sa.select(c.value).where(c.name == name)
        async with self.engine.connect() as conn:
            value = (await conn.execute(query)).scalar_one_or_none()
        if value is not None:
            return str(value)
        try:
            async with self.engine.begin() as conn:
                await conn.execute(sa.insert(t.server_secrets).values(name=name, value=make(), created_at=self._now()))
        except sa.exc.IntegrityError:
            pass  # another process created it first; theirs wins
        async with self.engine.connect() as conn:
            return str((await conn.execute(query)).scalar_one())

    async def record_identity_failure(self, user_index: str, *, window: int, threshold: int,
                                      lock_seconds: int) -> bool:
        """Count one failed match for ``user_index`` (failures older than ``window`` s start a new count);
        on reaching ``threshold`` lock it for ``lock_seconds`` and start counting again. Atomic across
        processes (conditional UPDATEs). Returns whether it is now locked."""
        now = self._now()
        c = t.identity_lockouts.c
        fresh = c.window_start > now - window
        bump = (sa.update(t.identity_lockouts).where(c.user_index == user_index).values(
            failures=sa.case((fresh, c.failures + 1), else_=1),
            window_start=sa.case((fresh, c.window_start), else_=now),
            updated_at=now))
        for _ in range(3):
            try:
                async with self.engine.begin() as conn:
                    if not (await conn.execute(bump)).rowcount:
                        await conn.execute(sa.insert(t.identity_lockouts).values(
                            user_index=user_index, failures=1, window_start=now, locked_until=0, updated_at=now))
                    await conn.execute(
                        sa.update(t.identity_lockouts)
                        .where(c.user_index == user_index, c.failures >= threshold)
                        .values(failures=0, window_start=now, locked_until=now + lock_seconds))
                    until = (await conn.execute(
                        sa.select(c.locked_until).where(c.user_index == user_index))).scalar_one()
                return int(until) > now
            except sa.exc.IntegrityError:
                continue  # a concurrent first failure inserted the row; count on it
        raise RuntimeError("could not record an identity failure")

    async def identity_locked_until(self, user_index: str) -> int:
        c = t.identity_lockouts.c
        async with self.engine.connect() as conn:
            until = (await conn.execute(sa.select(c.locked_until).where(c.user_index == user_index))).scalar()
        return int(until or 0)

    async def clear_identity_failures(self, user_index: str) -> None:
        """Forget the failures counted for ``user_index``; a lock-out in force stays until it ends."""
        c = t.identity_lockouts.c
        async with self.engine.begin() as conn:
            await conn.execute(sa.delete(t.identity_lockouts).where(
                c.user_index == user_index, c.locked_until <= self._now()))

    async def purge_identity_lockouts(self, older_than: int) -> int:
        """Delete lock-out rows untouched for ``older_than`` seconds and no longer locking."""
        now = self._now()
        c = t.identity_lockouts.c
        async with self.engine.begin() as conn:
            res = await conn.execute(sa.delete(t.identity_lockouts).where(
                c.updated_at < now - older_than, c.locked_until <= now))
        return int(res.rowcount)

    # -- approval requests ---------------------------------------------------------------------------

    async def create_approval(self, row: ApprovalRow, audit: AuditEntry | None = None) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(sa.insert(t.approval_requests).values(**row.__dict__))
            if audit is not None:
                await conn.execute(sa.insert(t.audit_log).values(
                    at=self._now(), event=audit.event, client_id=audit.client_id, subject=audit.subject,
                    detail=audit.detail or {}))

    async def get_approval(self, id: str) -> ApprovalRow | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(t.approval_requests).where(t.approval_requests.c.id == id))).first()
        return ApprovalRow(**row._mapping) if row else None

    async def get_approval_by_link(self, link_hash: str) -> ApprovalRow | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(
                sa.select(t.approval_requests).where(t.approval_requests.c.link_hash == link_hash))).first()
        return ApprovalRow(**row._mapping) if row else None

    async def decide_approval(self, id: str, status: str, *, decided_by: str, channel: str,
                              audit: AuditEntry | None = None) -> bool:
        """Move a pending, unexpired request to ``status``; True for exactly one caller, across processes."""
        now = self._now()
        c = t.approval_requests.c
        async with self.engine.begin() as conn:
            res = await conn.execute(
                sa.update(t.approval_requests)
                .where(c.id == id, c.status == "pending", c.expires_at > now)
                .values(status=status, decided_at=now, decided_by=decided_by, channel=channel)
            )
            won = bool(res.rowcount)
            if won and audit is not None:
                await conn.execute(sa.insert(t.audit_log).values(
                    at=now, event=audit.event, client_id=audit.client_id, subject=audit.subject,
                    detail=audit.detail or {}))
        return won

    async def list_approvals(self, *, subject: str | None = None, status: str | None = None,
                             limit: int = 100) -> list[ApprovalRow]:
        c = t.approval_requests.c
        query = sa.select(t.approval_requests).order_by(c.created_at.desc()).limit(limit)
        if subject is not None:
            query = query.where(c.subject == subject)
        if status == "pending":
            query = query.where(c.status == "pending", c.expires_at > self._now())
        elif status == "expired":
            query = query.where(c.status == "pending", c.expires_at <= self._now())
        elif status is not None:
            query = query.where(c.status == status)
        async with self.engine.connect() as conn:
            rows = await conn.execute(query)
        return [ApprovalRow(**r._mapping) for r in rows]

    # -- signing keys --------------------------------------------------------------------------------

    async def add_signing_key(self, row: SigningKeyRow, retire_others_until: int | None = None) -> None:
        """Insert a key; with ``retire_others_until``, retire every active key in the same transaction."""
        now = self._now()
        async with self.engine.begin() as conn:
            if retire_others_until is not None:
                await conn.execute(
                    sa.update(t.signing_keys)
                    .where(t.signing_keys.c.retired_at.is_(None))
                    .values(retired_at=now, remove_after=retire_others_until)
                )
            await conn.execute(sa.insert(t.signing_keys).values(**row.__dict__))

    async def list_signing_keys(self) -> list[SigningKeyRow]:
        now = self._now()
        c = t.signing_keys.c
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                sa.select(t.signing_keys)
                .where(sa.or_(c.remove_after.is_(None), c.remove_after > now))
                .order_by(c.created_at.desc())
            )
        return [SigningKeyRow(**r._mapping) for r in rows]

    # -- audit ---------------------------------------------------------------------------------------

    async def audit(self, event: str, *, client_id: str | None = None, subject: str | None = None,
                    **detail: Any) -> None:
        """Record a grant, denial or administrative change. Never pass secrets or raw PII here."""
        await self.group.insert([self._audit_row(AuditEntry(event, client_id, subject, detail))])

    async def audit_events(self, limit: int = 100) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(sa.select(t.audit_log).order_by(t.audit_log.c.id.desc()).limit(limit))
        return [dict(r._mapping) for r in rows]
