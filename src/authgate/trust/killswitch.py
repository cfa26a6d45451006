"""The kill switch: disable an agent, a client or a user's delegation everywhere, on the next request.

The list lives in ``trust_kills``; every change bumps the ``kills`` row of ``trust_versions``. A process keeps
the whole (small) list in memory and, on each check, reads only that version number (one indexed
single-row SELECT); a different number reloads the list. So a kill made by any process or by the CLI is seen
by every process sharing the database on its very next request, with no message bus and no TTL window.
Killing also denies the target's pending approvals and is audited (TrustStore.kill).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from authgate.trust import wire as w
from authgate.trust.errors import TrustError
from authgate.trust.store import KILLS, TrustStore


class KillSwitch:
    def __init__(self, trust: TrustStore) -> None:
        self.trust = trust
        self._version = -1
        self._killed: frozenset[tuple[str, str]] = frozenset()
        self._lock = asyncio.Lock()

    async def _current(self) -> frozenset[tuple[str, str]]:
        version = await self.trust.version(KILLS)
        if version != self._version:
            async with self._lock:
                if version != self._version:
                    rows = await self.trust.kills()
                    self._killed = frozenset((r.kind, r.ident) for r in rows)
                    self._version = version
        return self._killed

    async def killed(self, *, agents: Iterable[str | None] = (), clients: Iterable[str | None] = (),
                     users: Iterable[str | None] = ()) -> str | None:
        """The first of the given identities that is disabled, as ``kind:ident`` (None: all alive)."""
        listed = await self._current()
        if not listed:
            return None
        for kind, idents in ((w.KILL_AGENT, agents), (w.KILL_CLIENT, clients), (w.KILL_USER, users)):
            for ident in idents:
                if ident and ((kind, ident) in listed or (ident.startswith("0x") and (kind, ident.lower()) in listed)):
                    return f"{kind}:{ident}"
        return None

    async def agentauth_token_killed(self, jti: str) -> bool:
        """True if an Agent Auth token we issued belongs to a killed agent or person (no query while the kill
        list is empty)."""
        if not await self._current():
            return False
        owner = await self.trust.agentauth_token_owner(jti)
        return owner is not None and await self.killed(agents=[owner[0]], users=[owner[1]]) is not None

    async def check(self, *, agents: Iterable[str | None] = (), clients: Iterable[str | None] = (),
                    users: Iterable[str | None] = ()) -> None:
        """Raise TrustError(agent_disabled) if any identity is on the kill list."""
        hit = await self.killed(agents=agents, clients=clients, users=users)
        if hit is not None:
            raise TrustError(w.ERR_KILLED, f"{hit.split(':', 1)[0]} disabled by the kill switch")

    async def kill(self, kind: str, ident: str, *, by: str | None = None, reason: str | None = None) -> bool:
        if kind not in w.KILL_KINDS or not ident or len(ident) > w.MAX_ID:
            raise ValueError(f"kind must be one of {', '.join(w.KILL_KINDS)} and the id 1 to 300 characters")
        if ident.startswith("0x"):
            ident = ident.lower()  # payer addresses are compared lower-case
        return await self.trust.kill(kind, ident, by=by, reason=reason)

    async def revive(self, kind: str, ident: str, *, by: str | None = None) -> bool:
        if kind not in w.KILL_KINDS:
            raise ValueError(f"kind must be one of {', '.join(w.KILL_KINDS)}")
        return await self.trust.revive(kind, ident.lower() if ident.startswith("0x") else ident, by=by)
