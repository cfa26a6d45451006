"""Agent Auth state: our Ed25519 keys, enrolled agents, remembered consents, issued-token records.

Reached as ``store.agentauth``. Pending person-server requests live in the shared ``artifacts`` table
(kind ``aa_pending``, id = SHA-256 of the pending handle) and so inherit its atomic ``consume``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from authgate.store import tables as t

if TYPE_CHECKING:
    from authgate.store.repository import Store


@dataclass(frozen=True)
class AgentRecord:
    agent_id: str
    owner: str
    name: str
    jkt: str
    public_jwk: dict[str, Any]
    created_at: int
    updated_at: int
    revoked_at: int | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class KeyRow:
    kid: str
    alg: str
    private_jwk: dict[str, Any]
    created_at: int
    retired_at: int | None


class AgentAuthRepository:
    def __init__(self, store: Store) -> None:
        self.store = store

    @property
    def _engine(self) -> Any:
        return self.store.engine

    def _now(self) -> int:
        return int(self.store.clock.now())

    # -- keys ----------------------------------------------------------------------------------------------

    async def keys(self) -> list[KeyRow]:
        c = t.agentauth_keys.c
        async with self._engine.connect() as conn:
            rows = await conn.execute(sa.select(t.agentauth_keys).order_by(c.created_at.desc()))
        return [KeyRow(**r._mapping) for r in rows]

    async def add_key(self, row: KeyRow, *, only_if_none: bool = False) -> None:
        """Add a key; others are retired (still published). ``only_if_none``: skip when a key exists (two
        processes starting together then both keep the one that won)."""
        async with self._engine.begin() as conn:
            if only_if_none:
                existing = (await conn.execute(sa.select(sa.func.count()).select_from(t.agentauth_keys))).scalar()
                if existing:
                    return
            c = t.agentauth_keys.c
            await conn.execute(sa.update(t.agentauth_keys).where(c.retired_at.is_(None))
                               .values(retired_at=row.created_at))
            await conn.execute(sa.insert(t.agentauth_keys).values(**row.__dict__))

    # -- agents --------------------------------------------------------------------------------------------

    async def add_agent(self, record: AgentRecord) -> bool:
        """False if the identifier is taken."""
        try:
            async with self._engine.begin() as conn:
                await conn.execute(sa.insert(t.agentauth_agents).values(**record.__dict__))
        except sa.exc.IntegrityError:
            return False
        await self.store.audit("agentauth.agent_enrolled", subject=record.owner, agent_id=record.agent_id,
                               jkt=record.jkt)
        return True

    async def get_agent(self, agent_id: str) -> AgentRecord | None:
        if not agent_id or len(agent_id) > 300:
            return None
        async with self._engine.connect() as conn:
            row = (await conn.execute(sa.select(t.agentauth_agents).where(t.agentauth_agents.c.agent_id == agent_id))
                   ).first()
        return AgentRecord(**row._mapping) if row else None

    async def list_agents(self, owner: str | None = None, limit: int = 1000) -> list[AgentRecord]:
        c = t.agentauth_agents.c
        query = sa.select(t.agentauth_agents).order_by(c.created_at).limit(limit)
        if owner is not None:
            query = query.where(c.owner == owner)
        async with self._engine.connect() as conn:
            return [AgentRecord(**r._mapping) for r in await conn.execute(query)]

    async def rekey_agent(self, agent_id: str, *, old_jkt: str | None, jkt: str, public_jwk: dict[str, Any]) -> bool:
        """Bind a new key. With ``old_jkt`` only if that is still the current key (a refresh signed by the old
        key wins once; a second refresh with the same old key finds it replaced)."""
        c = t.agentauth_agents.c
        query = sa.update(t.agentauth_agents).where(c.agent_id == agent_id, c.revoked_at.is_(None))
        if old_jkt is not None:
            query = query.where(c.jkt == old_jkt)
        async with self._engine.begin() as conn:
            result = await conn.execute(query.values(jkt=jkt, public_jwk=public_jwk, updated_at=self._now()))
        return bool(result.rowcount)

    async def revoke_agent(self, agent_id: str) -> bool:
        now = self._now()
        c = t.agentauth_agents.c
        async with self._engine.begin() as conn:
            result = await conn.execute(sa.update(t.agentauth_agents)
                                        .where(c.agent_id == agent_id, c.revoked_at.is_(None)).values(revoked_at=now))
            tc = t.agentauth_tokens.c
            await conn.execute(sa.update(t.agentauth_tokens)
                               .where(tc.agent_id == agent_id, tc.revoked_at.is_(None)).values(revoked_at=now))
        if result.rowcount:
            await self.store.audit("agentauth.agent_revoked", agent_id=agent_id)
        return bool(result.rowcount)

    # -- issued tokens -------------------------------------------------------------------------------------

    async def record_token(self, *, jti: str, typ: str, agent_id: str, subject: str | None, audience: str | None,
                           issued_at: int, expires_at: int) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(sa.insert(t.agentauth_tokens).values(
                jti=jti, typ=typ, agent_id=agent_id, subject=subject, audience=audience, issued_at=issued_at,
                expires_at=expires_at))

    async def token_revoked(self, jti: str) -> bool:
        """True for a token we issued and then revoked (or whose agent was revoked)."""
        c = t.agentauth_tokens.c
        async with self._engine.connect() as conn:
            value = (await conn.execute(sa.select(c.revoked_at).where(c.jti == jti))).first()
        return value is not None and value[0] is not None

    async def revoke_token(self, jti: str) -> bool:
        c = t.agentauth_tokens.c
        async with self._engine.begin() as conn:
            result = await conn.execute(sa.update(t.agentauth_tokens).where(c.jti == jti, c.revoked_at.is_(None))
                                        .values(revoked_at=self._now()))
        return bool(result.rowcount)

    # -- consents ------------------------------------------------------------------------------------------

    async def remembered_scopes(self, subject: str, agent_id: str, resource: str) -> set[str]:
        now = self._now()
        c = t.agentauth_consents.c
        query = sa.select(c.scope).where(c.subject == subject, c.agent_id == agent_id, c.resource == resource,
                                         c.revoked_at.is_(None), c.expires_at > now)
        async with self._engine.connect() as conn:
            return {r[0] for r in await conn.execute(query)}

    async def remember(self, subject: str, agent_id: str, resource: str, scopes: list[str], ttl: int) -> None:
        """Record (or renew) consent per scope; upsert by delete-then-insert in one transaction."""
        now = self._now()
        c = t.agentauth_consents.c
        async with self._engine.begin() as conn:
            for scope in scopes:
                await conn.execute(sa.delete(t.agentauth_consents).where(
                    c.subject == subject, c.agent_id == agent_id, c.resource == resource, c.scope == scope))
                await conn.execute(sa.insert(t.agentauth_consents).values(
                    subject=subject, agent_id=agent_id, resource=resource, scope=scope, granted_at=now,
                    expires_at=now + ttl))

    async def list_consents(self, subject: str) -> list[dict[str, Any]]:
        c = t.agentauth_consents.c
        query = (sa.select(t.agentauth_consents).where(c.subject == subject, c.revoked_at.is_(None))
                 .order_by(c.agent_id, c.resource, c.scope))
        async with self._engine.connect() as conn:
            return [dict(r._mapping) for r in await conn.execute(query)]

    async def revoke_consent(self, subject: str, agent_id: str | None = None, resource: str | None = None,
                             scope: str | None = None) -> int:
        """Revoke remembered consent (narrowed by the arguments given); returns how many were live."""
        c = t.agentauth_consents.c
        query = sa.update(t.agentauth_consents).where(c.subject == subject, c.revoked_at.is_(None))
        if agent_id is not None:
            query = query.where(c.agent_id == agent_id)
        if resource is not None:
            query = query.where(c.resource == resource)
        if scope is not None:
            query = query.where(c.scope == scope)
        async with self._engine.begin() as conn:
            result = await conn.execute(query.values(revoked_at=self._now()))
        if result.rowcount:
            await self.store.audit("agentauth.consent_revoked", subject=subject, agent_id=agent_id,
                                   resource=resource, scope=scope, count=result.rowcount)
        return int(result.rowcount)
