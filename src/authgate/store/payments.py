"""x402 payment ledger: the facilitator's exactly-once reservations and the record of every payment.

Reached as ``store.payments``. The reservation is an INSERT under the unique ``(network, asset, payer, nonce)``
constraint, so whichever process inserts first owns the settlement and every other caller (same process or
not, SQLite or PostgreSQL) sees the existing row and joins it. State changes are conditional updates
(``WHERE status = … AND owner = …``), so a slow owner and a process reconciling after its lease cannot both
move a row.

Statuses: ``pending`` (reserved; no transaction hash recorded yet), ``submitted`` (hash recorded, receipt
awaited), ``settled``, ``failed`` (definitely not paid; ``error_reason`` says why).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from authgate.store import tables as t

if TYPE_CHECKING:
    from authgate.store.repository import Store

PENDING = "pending"
SUBMITTED = "submitted"
SETTLED = "settled"
FAILED = "failed"
STATUSES = (PENDING, SUBMITTED, SETTLED, FAILED)


@dataclass(frozen=True)
class PaymentRow:
    id: str
    network: str
    asset: str
    payer: str
    nonce: str
    payee: str
    amount: str
    scheme: str
    resource_url: str | None
    digest: str
    valid_before: int
    status: str
    tx_hash: str | None
    error_reason: str | None
    error_message: str | None
    owner: str
    lease_until: int
    created_at: int
    updated_at: int
    settled_at: int | None

    def public(self) -> dict[str, Any]:
        """The fields an operator sees (``payments list --json``); no lease bookkeeping."""
        return {
            "id": self.id, "status": self.status, "network": self.network, "asset": self.asset,
            "payer": self.payer, "payee": self.payee, "amount": self.amount, "scheme": self.scheme,
            "resource": self.resource_url, "transaction": self.tx_hash, "error_reason": self.error_reason,
            "created_at": self.created_at, "updated_at": self.updated_at, "settled_at": self.settled_at,
        }


@dataclass(frozen=True)
class NewPayment:
    id: str
    network: str
    asset: str
    payer: str
    nonce: str
    payee: str
    amount: str
    scheme: str
    resource_url: str | None
    digest: str
    valid_before: int
    owner: str
    lease_until: int


def _row(row: sa.Row[Any]) -> PaymentRow:
    return PaymentRow(**row._mapping)


class PaymentRepository:
    def __init__(self, store: Store) -> None:
        self.store = store

    @property
    def _engine(self) -> Any:
        return self.store.engine

    def _now(self) -> int:
        return int(self.store.clock.now())

    async def reserve(self, new: NewPayment) -> bool:
        """Insert the reservation; False if the authorization is already reserved (by anyone)."""
        now = self._now()
        try:
            async with self._engine.begin() as conn:
                await conn.execute(sa.insert(t.x402_payments).values(
                    **new.__dict__, status=PENDING, created_at=now, updated_at=now,
                ))
        except IntegrityError:
            return False
        return True

    async def find(self, network: str, asset: str, payer: str, nonce: str) -> PaymentRow | None:
        c = t.x402_payments.c
        async with self._engine.connect() as conn:
            row = (await conn.execute(sa.select(t.x402_payments).where(
                c.network == network, c.asset == asset, c.payer == payer, c.nonce == nonce,
            ))).first()
        return _row(row) if row else None

    async def get(self, payment_id: str) -> PaymentRow | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(
                sa.select(t.x402_payments).where(t.x402_payments.c.id == payment_id)
            )).first()
        return _row(row) if row else None

    async def _update(self, payment_id: str, where: list[Any], **values: Any) -> bool:
        c = t.x402_payments.c
        async with self._engine.begin() as conn:
            result = await conn.execute(
                sa.update(t.x402_payments).where(c.id == payment_id, *where).values(updated_at=self._now(), **values)
            )
        return bool(result.rowcount == 1)

    async def mark_submitted(self, payment_id: str, owner: str, tx_hash: str) -> bool:
        c = t.x402_payments.c
        return await self._update(payment_id, [c.status == PENDING, c.owner == owner], status=SUBMITTED,
                                  tx_hash=tx_hash)

    async def mark_settled(self, payment_id: str, tx_hash: str) -> bool:
        """→ settled with the mined hash (idempotent for concurrent observers). Also from ``failed``: a successful
        receipt with the matching transfer log is proof, e.g. of a transaction given up for lost that was mined."""
        c = t.x402_payments.c
        return await self._update(payment_id, [c.status != SETTLED], status=SETTLED,
                                  tx_hash=tx_hash, settled_at=self._now(), error_reason=None, error_message=None)

    async def mark_failed(self, payment_id: str, reason: str, message: str | None, tx_hash: str | None) -> bool:
        c = t.x402_payments.c
        return await self._update(payment_id, [c.status.in_((PENDING, SUBMITTED))], status=FAILED,
                                  error_reason=reason[:128], error_message=(message or "")[:512] or None,
                                  tx_hash=tx_hash)

    async def expire_lease(self, payment_id: str, owner: str) -> bool:
        """The owner gives up a ``pending`` row it never submitted, so the next attempt need not wait out the lease."""
        c = t.x402_payments.c
        return await self._update(payment_id, [c.status == PENDING, c.owner == owner], lease_until=0)

    async def take_over(self, payment_id: str, old_owner: str, new_owner: str, lease_until: int) -> bool:
        """Claim a ``pending`` row whose owner's lease has run out (the owner died or hung before submitting)."""
        c = t.x402_payments.c
        return await self._update(
            payment_id, [c.status == PENDING, c.owner == old_owner, c.lease_until < self._now()],
            owner=new_owner, lease_until=lease_until,
        )

    async def list(self, *, status: str | None = None, payer: str | None = None, limit: int = 100) -> list[PaymentRow]:
        c = t.x402_payments.c
        query = sa.select(t.x402_payments).order_by(c.created_at.desc(), c.id).limit(max(1, min(limit, 10000)))
        if status:
            query = query.where(c.status == status)
        if payer:
            query = query.where(c.payer == payer.lower())
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_row(r) for r in rows]
