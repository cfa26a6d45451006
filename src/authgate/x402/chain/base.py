"""The one interface the x402 facilitator uses to talk to an EVM chain holding an EIP-3009 token.

Two implementations: :mod:`authgate.x402.chain.embedded` (an in-process EVM, the offline default) and
:mod:`authgate.x402.chain.jsonrpc` (any JSON-RPC node). The facilitator never imports web3 or eth-tester itself;
it sees only this module, so a test can hand it any object with these methods.

Error contract, because settlement must never charge twice:

- :class:`ChainError` means the node *definitely* did not accept the transaction (it reverted in simulation, or
  the node refused it before it entered a block); ``revert_text`` carries the token's revert string, e.g.
  ``"authorization is used or canceled"``, which the facilitator maps to an x402 reason (spec note §4.3).
- :class:`ChainUnavailable` means we could not tell: the node was unreachable or answered garbage. A settlement
  that saw it has an unknown outcome and must be reconciled with :meth:`Chain.find_authorization_tx`, never
  blindly retried.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


class ChainError(Exception):
    """The node rejected a call or transaction; ``revert_text`` is the revert reason (may be empty)."""

    def __init__(self, revert_text: str) -> None:
        super().__init__(revert_text or "reverted")
        self.revert_text = revert_text


class ChainUnavailable(Exception):
    """The node could not be reached or gave an unusable answer; the outcome of a submission is unknown.

    When raised by :meth:`Chain.submit_transfer` after the transaction was signed, ``tx_hash`` is the hash it
    has if it did reach the node (a hash is fixed by the signed bytes), so the caller can look for its receipt.
    """

    def __init__(self, message: str, *, tx_hash: str | None = None) -> None:
        super().__init__(message)
        self.tx_hash = tx_hash


@dataclass(frozen=True)
class TransferAuthorization:
    """An EIP-3009 ``TransferWithAuthorization`` as signed by the payer, plus the token it is for.

    Addresses are 0x-hex (any case); ``nonce`` is the raw 32 bytes; ``signature`` is 65 bytes ``r‖s‖v`` for an
    EOA (sent through the ``(v, r, s)`` overload) or any other length for a contract wallet (sent through the
    ``bytes signature`` overload).
    """

    token: str
    from_: str
    to: str
    value: int
    valid_after: int
    valid_before: int
    nonce: bytes
    signature: bytes

    def __post_init__(self) -> None:
        if len(self.nonce) != 32:
            raise ValueError("nonce must be 32 bytes")
        for name in ("value", "valid_after", "valid_before"):
            number = getattr(self, name)
            if not 0 <= number < 2**256:
                raise ValueError(f"{name} must be a uint256")


@dataclass(frozen=True)
class Receipt:
    """A mined transaction as the facilitator needs it.

    ``transfer_logged`` is true only when the token contract emitted ``Transfer(from, to, value)`` matching the
    authorization: a status-1 receipt without that log is not a payment (x402 ``transfer_event_mismatch``).
    """

    tx_hash: str
    status: int
    block_number: int
    transfer_logged: bool


@runtime_checkable
class Chain(Protocol):
    """An EVM chain as seen by the facilitator. All methods are coroutines and safe to call concurrently."""

    #: CAIP-2 network id, ``eip155:<chainId>``.
    network: str
    #: Checksummed address of the account that pays gas and submits settlements.
    facilitator_address: str

    async def code_at(self, address: str) -> bytes:
        """Deployed bytecode at ``address`` (empty for an EOA or nothing)."""
        ...

    async def simulate_transfer(self, auth: TransferAuthorization) -> str | None:
        """``eth_call`` of ``transferWithAuthorization`` from the facilitator on the latest block.

        None when it would succeed, else the revert text ("" when the revert carried no reason).
        Raises :class:`ChainUnavailable` when the node cannot be asked.
        """
        ...

    async def authorization_used(self, token: str, authorizer: str, nonce: bytes) -> bool:
        """``authorizationState(authorizer, nonce)``: true once used or canceled."""
        ...

    async def balance_of(self, token: str, owner: str) -> int:
        """ERC-20 ``balanceOf(owner)`` in atomic units."""
        ...

    async def token_domain(self, token: str) -> tuple[str, str]:
        """The token's EIP-712 ``(name(), version())``."""
        ...

    async def submit_transfer(self, auth: TransferAuthorization) -> str:
        """Sign ``transferWithAuthorization`` with the facilitator key and broadcast it; the 0x tx hash.

        Raises :class:`ChainError` when the node rejects it (nothing was broadcast), :class:`ChainUnavailable`
        when it is unknown whether it was.
        """
        ...

    async def wait_receipt(
        self,
        tx_hash: str,
        timeout: float,  # noqa: ASYNC109 (part of the contract: None on timeout)
        expect: TransferAuthorization | None = None,
    ) -> Receipt | None:
        """The receipt once mined; None if not mined within ``timeout`` seconds.

        ``transfer_logged`` is judged against ``expect`` when given, else against the parties of the
        ``transferWithAuthorization`` call read back from the transaction's input.
        """
        ...

    async def find_authorization_tx(self, token: str, authorizer: str, nonce: bytes) -> str | None:
        """Hash of the transaction that emitted ``AuthorizationUsed(authorizer, nonce)``, if any is on chain."""
        ...

    async def aclose(self) -> None:
        """Release connections and threads; the chain is unusable afterwards."""
        ...
