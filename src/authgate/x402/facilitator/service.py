"""Our x402 facilitator: ``verify``, ``settle`` and ``supported`` for the ``exact`` scheme on the chains we run.

Settlement is exactly-once per EIP-3009 authorization ``(network, asset, payer, nonce)``:

1. An authorization already in the ledger is never verified or submitted again: the caller joins it (waits for
   its outcome, bounded by ``settle_timeout``) and gets the same answer, the same transaction hash.
2. Otherwise it is verified (no simulation, like the SDK's settle), then **reserved** in the database (unique
   constraint) before anything is sent to the chain. Losing the race means joining the winner.
3. The owner submits (the chain simulates first, so a doomed transaction costs no gas), records the hash and
   waits for the receipt.
4. An attempt whose outcome is unknown (the node could not be reached, the owner died before recording a hash,
   the receipt did not come in time) is **reconciled from the chain**: the transaction that used the nonce is
   looked up (``find_authorization_tx``) and its receipt decides; if none exists, the nonce is unused and the
   authorization still valid, the attempt is taken over and submitted again. A resubmission can never charge
   twice: the token consumes the nonce once, and a "used" revert sends us back to the lookup, whether it comes
   from the simulation or from the receipt (the dead owner's transaction was still in the mempool and was mined
   first: the payment is settled by that one, not failed).

``settlement_pending`` (with the hash when known) answers a settle whose outcome is not known yet; the resource
server retries once with the same payload and gets the recorded outcome.

Within one process, settles of the same authorization are also serialised by an asyncio lock, so concurrent
duplicates wait on the first instead of polling the database.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Mapping
from typing import Any

from authgate.clock import Clock
from authgate.store import Store
from authgate.store import payments as ledger
from authgate.x402 import errors as e
from authgate.x402.chain.base import Chain, ChainError, ChainUnavailable, Receipt
from authgate.x402.eip3009 import ExactEvmPayload
from authgate.x402.exact import SCHEME, AssetCodeCache, Verified, diagnose, map_revert, verify_exact
from authgate.x402.networks import evm_chain_id
from authgate.x402.wire import (
    X402_VERSION,
    PaymentPayload,
    PaymentRequirements,
    SettleResponse,
    SupportedKind,
    SupportedResponse,
    VerifyResponse,
    X402WireError,
)

log = logging.getLogger("authgate.x402.facilitator")

#: How long a reservation's owner may take from reserving to recording a transaction hash before another
#: process may reconcile the attempt (simulation + submission take well under a second on a healthy node).
LEASE_SECONDS = 60
#: A transaction still in a node's mempool may be mined a little after our clock passed ``validBefore`` (block
#: times lag); only this long after expiry is a recorded but unmined transaction declared failed.
EXPIRY_GRACE = 120


class Facilitator:
    """The facilitator over one or more chains (one per CAIP-2 network) and the payment ledger in ``store``."""

    def __init__(
        self,
        chains: Mapping[str, Chain],
        store: Store,
        *,
        clock: Clock | None = None,
        settle_timeout: float = 120.0,
        lease_seconds: int = LEASE_SECONDS,
        enforce_max_timeout: bool = True,
        poll_interval: float = 0.05,
        on_settle: Callable[[str, str], None] | None = None,
    ) -> None:
        self.chains = dict(chains)
        #: Called with (network, outcome) after every settle: "settled" or the error reason (metrics).
        self.on_settle = on_settle
        self.store = store
        self.clock = clock or store.clock
        self.settle_timeout = settle_timeout
        self.lease_seconds = lease_seconds
        self.enforce_max_timeout = enforce_max_timeout
        self.poll_interval = poll_interval
        self.asset_cache = AssetCodeCache()
        self._locks: dict[tuple[str, str, str, str], tuple[asyncio.Lock, int]] = {}

    def _now(self) -> int:
        return int(self.clock.now())

    # ------------------------------------------------------------------------------------------ supported

    def supported(self) -> SupportedResponse:
        """Exactly the kinds served (v2 ``exact`` on each chain) and the addresses that submit settlements."""
        kinds = tuple(SupportedKind(X402_VERSION, SCHEME, network) for network in sorted(self.chains))
        signers = sorted({c.facilitator_address for c in self.chains.values()})
        return SupportedResponse(kinds=kinds, extensions=(), signers={"eip155:*": signers} if signers else {})

    # ------------------------------------------------------------------------------------------ verify

    async def _verify(self, payload: PaymentPayload, requirements: PaymentRequirements,
                      *, simulate: bool) -> VerifyResponse | Verified:
        return await verify_exact(
            payload, requirements, self.chains, now=self._now(), asset_cache=self.asset_cache,
            simulate=simulate, enforce_max_timeout=self.enforce_max_timeout,
        )

    async def verify(self, payload: PaymentPayload, requirements: PaymentRequirements) -> VerifyResponse:
        try:
            result = await self._verify(payload, requirements, simulate=True)
        except ChainUnavailable as exc:
            log.warning("x402 verify: chain unavailable (%s)", exc)
            return VerifyResponse(False, e.UNEXPECTED_VERIFY_ERROR, "the chain could not be reached",
                                  _payer_of(payload))
        if isinstance(result, VerifyResponse):
            return result
        return VerifyResponse(is_valid=True, payer=result.payer)

    # ------------------------------------------------------------------------------------------ settle

    async def settle(self, payload: PaymentPayload, requirements: PaymentRequirements) -> SettleResponse:
        network = requirements.network
        payer = _payer_of(payload)
        try:
            evm = ExactEvmPayload.from_dict(payload.payload)
        except X402WireError as exc:
            return _failed(network, payer, e.INVALID_PAYLOAD, str(exc))
        auth = evm.authorization
        key = (network, requirements.asset.lower(), auth.from_address.lower(), "0x" + auth.nonce.hex())
        lock = self._acquire(key)
        try:
            async with lock:
                result = await self._settle(payload, requirements, evm, key)
        except ChainUnavailable as exc:
            log.warning("x402 settle: chain unavailable (%s)", exc)
            result = _failed(network, auth.from_address, e.SETTLEMENT_PENDING, "the chain could not be reached")
        finally:
            self._release(key)
        if self.on_settle is not None:
            label = network if network in self.chains else "other"  # bounded label values
            self.on_settle(label, "settled" if result.success else result.error_reason or "failed")
        return result

    def _acquire(self, key: tuple[str, str, str, str]) -> asyncio.Lock:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        return lock

    def _release(self, key: tuple[str, str, str, str]) -> None:
        lock, users = self._locks[key]
        if users <= 1:
            del self._locks[key]
        else:
            self._locks[key] = (lock, users - 1)

    async def _settle(self, payload: PaymentPayload, requirements: PaymentRequirements, evm: ExactEvmPayload,
                      key: tuple[str, str, str, str]) -> SettleResponse:
        network, payer = requirements.network, evm.authorization.from_address
        row = await self.store.payments.find(*key)
        if row is not None:
            return await self._join(row, payload, requirements, evm)
        verified = await self._verify(payload, requirements, simulate=False)
        if isinstance(verified, VerifyResponse):
            return _failed(network, payer, verified.invalid_reason or e.UNEXPECTED_SETTLE_ERROR,
                           verified.invalid_message)
        owner = secrets.token_hex(8)
        payment_id = secrets.token_hex(16)
        resource = payload.resource.url[:2048] if payload.resource else None
        reserved = await self.store.payments.reserve(ledger.NewPayment(
            id=payment_id, network=network, asset=key[1], payer=key[2], nonce=key[3],
            payee=evm.authorization.to.lower(), amount=str(evm.authorization.value), scheme=SCHEME,
            resource_url=resource, digest="0x" + verified.digest.hex(), valid_before=evm.authorization.valid_before,
            owner=owner, lease_until=self._now() + self.lease_seconds,
        ))
        if not reserved:
            row = await self.store.payments.find(*key)
            if row is None:  # reserved and gone: rows are never deleted, so this is a broken database
                return _failed(network, payer, e.UNEXPECTED_SETTLE_ERROR, "reservation vanished")
            return await self._join(row, payload, requirements, evm)
        return await self._submit(payment_id, owner, network, verified)

    async def _submit(self, payment_id: str, owner: str, network: str, verified: Verified) -> SettleResponse:
        """The owner's path: submit (the chain simulates first, so a doomed transfer costs no gas), record the
        hash, wait for the receipt."""
        chain = self.chains[network]
        transfer, payer = verified.transfer, verified.payer
        try:
            tx_hash = await chain.submit_transfer(transfer)
        except ChainError as exc:
            text = exc.revert_text[:200]
            reason = map_revert(exc.revert_text) or await diagnose(chain, transfer, verified.name, verified.version)
            if reason == e.NONCE_ALREADY_USED:
                return await self._reconcile_used(payment_id, network, verified)
            if reason == e.SIMULATION_FAILED:
                reason = e.TRANSACTION_FAILED
            await self.store.payments.mark_failed(payment_id, reason, text or None, None)
            return _failed(network, payer, reason, text or None)
        except ChainUnavailable as exc:
            if exc.tx_hash is None:  # nothing was signed, so nothing was sent: the next attempt may go at once
                await self.store.payments.expire_lease(payment_id, owner)
                raise
            # Unknown whether it reached the node: keep the lease; reconciliation from the chain decides later.
            log.warning("x402 settle: submission outcome unknown for payment %s (%s)", payment_id, exc.tx_hash)
            return _failed(network, payer, e.SETTLEMENT_PENDING, "submission outcome unknown; retry to reconcile",
                           exc.tx_hash)
        await self.store.payments.mark_submitted(payment_id, owner, tx_hash)
        return await self._await_receipt(payment_id, network, payer, tx_hash, verified, self.settle_timeout)

    async def _await_receipt(self, payment_id: str, network: str, payer: str, tx_hash: str,
                             verified: Verified | None, wait: float) -> SettleResponse:
        chain = self.chains[network]
        try:
            receipt = await chain.wait_receipt(tx_hash, wait, verified.transfer if verified else None)
        except ChainUnavailable:
            receipt = None
        return await self._finish(payment_id, network, payer, tx_hash, receipt)

    async def _finish(self, payment_id: str, network: str, payer: str, tx_hash: str,
                      receipt: Receipt | None) -> SettleResponse:
        if receipt is None:
            return _failed(network, payer, e.SETTLEMENT_PENDING, "receipt not available yet", tx_hash)
        if receipt.status != 1:
            winner = await self._settled_by_another(payment_id, network, payer, tx_hash)
            if winner is not None:
                return winner
            await self.store.payments.mark_failed(payment_id, e.TRANSACTION_FAILED, "transaction reverted", tx_hash)
            return _failed(network, payer, e.TRANSACTION_FAILED, "transaction reverted", tx_hash)
        if not receipt.transfer_logged:
            await self.store.payments.mark_failed(payment_id, e.TRANSFER_EVENT_MISMATCH, None, tx_hash)
            return _failed(network, payer, e.TRANSFER_EVENT_MISMATCH, None, tx_hash)
        await self.store.payments.mark_settled(payment_id, tx_hash)
        return SettleResponse(success=True, transaction=tx_hash, network=network, payer=payer)

    async def _settled_by_another(self, payment_id: str, network: str, payer: str,
                                  tx_hash: str) -> SettleResponse | None:
        """A reverted transaction may have lost to another one carrying the same authorization: an owner died
        after broadcasting but before recording its hash, its transaction was still waiting for a block when the
        lease ran out, and the takeover's resubmission was mined after it. The first one paid; if the nonce was
        used by a different, successful transaction, that one's receipt decides. None: nothing else used it."""
        row = await self.store.payments.get(payment_id)
        if row is None:
            return None
        chain = self.chains[network]
        try:
            nonce = bytes.fromhex(row.nonce[2:])
        except ValueError:
            return None
        other = await chain.find_authorization_tx(row.asset, row.payer, nonce)
        if other is None or other.lower() == tx_hash.lower():
            return None
        receipt = await chain.wait_receipt(other, 0.0)
        if receipt is None or receipt.status != 1:
            return None
        log.info("x402 settle: payment %s was settled by an earlier transaction %s; %s reverted", payment_id,
                 other, tx_hash)
        return await self._finish(payment_id, network, payer, other, receipt)

    async def _reconcile_used(self, payment_id: str, network: str, verified: Verified) -> SettleResponse:
        """The chain says the nonce is used: find the transaction that used it and let its receipt decide."""
        chain = self.chains[network]
        transfer = verified.transfer
        tx_hash = await chain.find_authorization_tx(transfer.token, transfer.from_, transfer.nonce)
        if tx_hash:
            return await self._await_receipt(payment_id, network, verified.payer, tx_hash, verified,
                                             self.settle_timeout)
        await self.store.payments.mark_failed(payment_id, e.NONCE_ALREADY_USED, "authorization used or canceled",
                                              None)
        return _failed(network, verified.payer, e.NONCE_ALREADY_USED, "authorization used or canceled")

    async def _join(self, row: ledger.PaymentRow, payload: PaymentPayload, requirements: PaymentRequirements,
                    evm: ExactEvmPayload) -> SettleResponse:
        """A settle for an authorization already in the ledger: answer from (or wait for) that attempt."""
        network, payer = row.network, evm.authorization.from_address
        digest = _digest_of(requirements, evm)
        if digest is None or "0x" + digest.hex() != row.digest:
            return _failed(network, payer, e.NONCE_ALREADY_USED,
                           "another authorization with this nonce was already submitted")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settle_timeout
        current: ledger.PaymentRow | None = row
        while current is not None:
            remaining = deadline - loop.time()
            if current.status == ledger.SETTLED:
                return SettleResponse(success=True, transaction=current.tx_hash or "", network=network, payer=payer)
            if current.status == ledger.FAILED:
                return _failed(network, payer, current.error_reason or e.TRANSACTION_FAILED, current.error_message,
                               current.tx_hash or "")
            if current.status == ledger.SUBMITTED and current.tx_hash:
                answer = await self._await_receipt(current.id, network, payer, current.tx_hash, None,
                                                   max(0.0, remaining))
                if answer.error_reason == e.SETTLEMENT_PENDING:
                    return await self._reconcile_submitted(current, requirements, evm) or answer
                return answer
            if current.lease_until < self._now():
                result = await self._reconcile_stale(current, payload, requirements, evm)
                if result is not None:
                    return result
            elif remaining <= 0:
                return _failed(network, payer, e.SETTLEMENT_PENDING, "an earlier attempt is still in progress")
            else:
                await asyncio.sleep(min(self.poll_interval, remaining))
            current = await self.store.payments.get(row.id)
        return _failed(network, payer, e.UNEXPECTED_SETTLE_ERROR, "payment record vanished")

    async def _reconcile_submitted(self, row: ledger.PaymentRow, requirements: PaymentRequirements,
                                   evm: ExactEvmPayload) -> SettleResponse | None:
        """A recorded transaction without a receipt: if another transaction used the nonce, its receipt
        decides; if none did and the authorization has expired, nothing can move any more: failed."""
        chain = self.chains[row.network]
        auth = evm.authorization
        tx_hash = await chain.find_authorization_tx(requirements.asset, auth.from_address, auth.nonce)
        if tx_hash and tx_hash != row.tx_hash:
            return await self._await_receipt(row.id, row.network, auth.from_address, tx_hash, None, 0.0)
        if not tx_hash and auth.valid_before + EXPIRY_GRACE <= self._now() and not await chain.authorization_used(
                requirements.asset, auth.from_address, auth.nonce):
            await self.store.payments.mark_failed(row.id, e.VALID_BEFORE, "expired before the transaction was mined",
                                                  row.tx_hash)
            return _failed(row.network, auth.from_address, e.VALID_BEFORE, "expired before it was mined", "")
        return None

    async def _reconcile_stale(self, row: ledger.PaymentRow, payload: PaymentPayload,
                               requirements: PaymentRequirements, evm: ExactEvmPayload) -> SettleResponse | None:
        """A ``pending`` row whose owner's lease ran out: ask the chain what happened; None = look again.

        The lookup needs no signature (the row's digest already matched); only a resubmission does, so the
        caller's payload is verified again just before taking the attempt over.
        """
        chain = self.chains[row.network]
        auth = evm.authorization
        tx_hash = await chain.find_authorization_tx(requirements.asset, auth.from_address, auth.nonce)
        if tx_hash:
            receipt_wait = await self._await_receipt(row.id, row.network, auth.from_address, tx_hash, None,
                                                     self.settle_timeout)
            return receipt_wait
        if await chain.authorization_used(requirements.asset, auth.from_address, auth.nonce):
            await self.store.payments.mark_failed(row.id, e.NONCE_ALREADY_USED, "authorization canceled", None)
            return None
        if auth.valid_before <= self._now():
            await self.store.payments.mark_failed(row.id, e.VALID_BEFORE, "expired before it was settled", None)
            return None
        verified = await self._verify(payload, requirements, simulate=False)
        if isinstance(verified, VerifyResponse):
            return _failed(row.network, auth.from_address, verified.invalid_reason or e.UNEXPECTED_SETTLE_ERROR,
                           verified.invalid_message)
        owner = secrets.token_hex(8)
        if not await self.store.payments.take_over(row.id, row.owner, owner, self._now() + self.lease_seconds):
            return None  # someone else reconciled first
        log.info("x402 settle: took over stale payment %s after reconciling with the chain", row.id)
        return await self._submit(row.id, owner, row.network, verified)


def _payer_of(payload: PaymentPayload) -> str | None:
    auth: Any = payload.payload.get("authorization")
    if isinstance(auth, dict) and isinstance(auth.get("from"), str):
        return str(auth["from"])[:64]
    return None


def _digest_of(requirements: PaymentRequirements, evm: ExactEvmPayload) -> bytes | None:
    name, version = requirements.extra.get("name"), requirements.extra.get("version")
    if not isinstance(name, str) or not isinstance(version, str):
        return None
    try:
        chain_id = evm_chain_id(requirements.network)
    except ValueError:
        return None
    if not requirements.asset.startswith("0x") or len(requirements.asset) != 42:
        return None
    return evm.authorization.digest(name, version, chain_id, requirements.asset)


def _failed(network: str, payer: str | None, reason: str, message: str | None = None,
            transaction: str = "") -> SettleResponse:
    return SettleResponse(success=False, transaction=transaction, network=network, payer=payer,
                          error_reason=reason, error_message=message)
