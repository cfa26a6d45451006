"""Facilitator verification of the ``exact`` scheme on EVM via EIP-3009 (spec note §4.3).

Checks run in the Python SDK's order (x402 2.25.0 ``ExactEvmScheme._verify``) and fail with its reason strings,
so a resource server built on the SDK reads our answers as it reads the SDK's. authgate profile additions:

- ``paymentPayload.accepted.asset`` must equal ``paymentRequirements.asset`` (checked right after the network;
  the SDK only notices through the domain, as a bad signature, and we answer with that same reason plus a
  message that says what is wrong);
- an authorization valid for longer than ``maxTimeoutSeconds`` (plus clock skew) is refused with the
  ``valid_before`` reason, so a payer cannot hand out a long-lived authorization by mistake;
- a network this facilitator does not serve is ``invalid_exact_evm_failed_to_get_network_config``.

EOA signatures are checked with ecrecover (coincurve). Contract signers (EIP-1271, ERC-6492) are not supported:
they get ``invalid_exact_evm_payload_signature`` with a message saying so. The last step simulates
``transferWithAuthorization`` on the chain, which is what catches a used nonce and a low balance; an unmapped
revert is diagnosed with ``authorizationState``/``name``/``version``/``balanceOf`` like the SDK does.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from authgate.x402 import errors as e
from authgate.x402.chain.base import Chain, ChainUnavailable, TransferAuthorization
from authgate.x402.eip3009 import ExactEvmPayload, SignatureError, recover_address
from authgate.x402.networks import evm_chain_id
from authgate.x402.wire import PaymentPayload, PaymentRequirements, VerifyResponse, X402WireError

SCHEME = "exact"
#: The SDK refuses an authorization that expires within 6 s: settlement needs time to land.
VALID_BEFORE_MARGIN = 6
#: Tolerated clock difference between payer and facilitator for the maxTimeoutSeconds bound.
CLOCK_SKEW = 30
#: Positive "asset is a deployed contract" answers are cached this long (the SDK's 15 minutes).
ASSET_CODE_TTL = 15 * 60

_REVERT_REASONS = (
    ("authorization is expired", e.VALID_BEFORE),
    ("not yet valid", e.VALID_AFTER),
    ("authorization is used", e.NONCE_ALREADY_USED),
    ("used or canceled", e.NONCE_ALREADY_USED),
    ("transfer amount exceeds balance", e.INSUFFICIENT_BALANCE),
    ("erc20insufficientbalance", e.INSUFFICIENT_BALANCE),
    ("invalid signature", e.INVALID_SIGNATURE),
)


def map_revert(text: str) -> str | None:
    """The x402 reason for a token revert text, or None when the text says nothing we recognise."""
    lowered = text.lower()
    for needle, reason in _REVERT_REASONS:
        if needle in lowered:
            return reason
    return None


class AssetCodeCache:
    """Remembers, per ``(network, asset)``, that the asset has contract code (positive answers only)."""

    def __init__(self, ttl: float = ASSET_CODE_TTL) -> None:
        self.ttl = ttl
        self._until: dict[tuple[str, str], float] = {}

    async def is_contract(self, chain: Chain, network: str, asset: str) -> bool:
        key = (network, asset.lower())
        now = time.monotonic()
        if self._until.get(key, 0.0) > now:
            return True
        if await chain.code_at(asset):
            if len(self._until) > 1024:
                self._until.clear()
            self._until[key] = now + self.ttl
            return True
        return False


@dataclass(frozen=True)
class Verified:
    """A payload that passed every check up to (and, if asked, including) simulation."""

    payer: str
    transfer: TransferAuthorization
    digest: bytes
    #: The EIP-712 domain name/version the payer signed (for diagnostics after a revert).
    name: str
    version: str


def _invalid(reason: str, payer: str | None, message: str | None = None) -> VerifyResponse:
    return VerifyResponse(is_valid=False, invalid_reason=reason, invalid_message=message, payer=payer)


async def verify_exact(
    payload: PaymentPayload,
    requirements: PaymentRequirements,
    chains: Mapping[str, Chain],
    *,
    now: int,
    asset_cache: AssetCodeCache,
    simulate: bool = True,
    enforce_max_timeout: bool = True,
) -> VerifyResponse | Verified:
    """Run the checks; a :class:`VerifyResponse` (``isValid: false``) on the first failure, else :class:`Verified`.

    Raises :class:`ChainUnavailable` when the chain cannot be asked (the caller answers an unexpected error;
    a payment is never called valid without the chain's word).
    """
    # 1. parse the scheme payload; the payer is echoed in every answer
    raw_from = payload.payload.get("authorization", {})
    payer = raw_from.get("from") if isinstance(raw_from, dict) and isinstance(raw_from.get("from"), str) else None
    try:
        evm = ExactEvmPayload.from_dict(payload.payload)
    except X402WireError as exc:
        return _invalid(e.INVALID_PAYLOAD, payer[:64] if payer else None, str(exc))
    auth = evm.authorization
    payer = auth.from_address
    # 2. scheme
    if payload.accepted.scheme != SCHEME or requirements.scheme != SCHEME:
        return _invalid(e.UNSUPPORTED_SCHEME, payer)
    # 3. network (and, authgate profile, asset)
    if payload.accepted.network != requirements.network:
        return _invalid(e.NETWORK_MISMATCH, payer)
    if payload.accepted.asset.lower() != requirements.asset.lower():
        return _invalid(e.INVALID_SIGNATURE, payer,
                        "paymentPayload.accepted.asset differs from paymentRequirements.asset")
    # 4. chain id, and a chain we serve
    network = requirements.network
    try:
        chain_id = evm_chain_id(network)
    except ValueError as exc:
        return _invalid(e.FAILED_TO_GET_NETWORK_CONFIG, payer, str(exc))
    chain = chains.get(network)
    if chain is None:
        return _invalid(e.FAILED_TO_GET_NETWORK_CONFIG, payer, f"this facilitator does not serve {network}")
    # 5. EIP-712 domain
    name, version = requirements.extra.get("name"), requirements.extra.get("version")
    if not isinstance(name, str) or not isinstance(version, str):
        return _invalid(e.MISSING_EIP712_DOMAIN, payer)
    if not requirements.asset.startswith("0x") or len(requirements.asset) != 42:
        return _invalid(e.INVALID_PAYMENT_REQUIREMENTS, payer, "paymentRequirements.asset is not an EVM address")
    # 6. recipient
    if auth.to.lower() != requirements.pay_to.lower():
        return _invalid(e.RECIPIENT_MISMATCH, payer)
    # 7. exact amount
    if auth.value != int(requirements.amount):
        return _invalid(e.VALUE_MISMATCH, payer)
    # 8. validity window
    if auth.valid_before < now + VALID_BEFORE_MARGIN:
        return _invalid(e.VALID_BEFORE, payer)
    if enforce_max_timeout and auth.valid_before > now + requirements.max_timeout_seconds + CLOCK_SKEW:
        return _invalid(e.VALID_BEFORE, payer, "validBefore is further away than maxTimeoutSeconds allows")
    # 9.
    if auth.valid_after > now:
        return _invalid(e.VALID_AFTER, payer)
    # 10. signature present
    if not evm.signature:
        return _invalid(e.INVALID_SIGNATURE, payer)
    # 11. signature over the digest built from the *requirements*
    digest = auth.digest(name, version, chain_id, requirements.asset)
    try:
        signer = recover_address(digest, evm.signature)
    except SignatureError as exc:
        if len(evm.signature) != 65 and await chain.code_at(payer):
            return _invalid(e.INVALID_SIGNATURE, payer, "contract signers (EIP-1271/ERC-6492) are not supported")
        return _invalid(e.FAILED_TO_VERIFY_SIGNATURE, payer, str(exc))
    if signer != bytes.fromhex(payer[2:]):
        if await chain.code_at(payer):
            return _invalid(e.INVALID_SIGNATURE, payer, "contract signers (EIP-1271/ERC-6492) are not supported")
        return _invalid(e.INVALID_SIGNATURE, payer)
    # 12. the asset is a contract
    if not await asset_cache.is_contract(chain, network, requirements.asset):
        return _invalid(e.ASSET_NOT_DEPLOYED, payer)
    transfer = TransferAuthorization(
        token=requirements.asset, from_=auth.from_address, to=auth.to, value=auth.value,
        valid_after=auth.valid_after, valid_before=auth.valid_before, nonce=auth.nonce, signature=evm.signature,
    )
    # 13. simulation
    if simulate:
        revert = await chain.simulate_transfer(transfer)
        if revert is not None:
            reason = map_revert(revert) or await diagnose(chain, transfer, name, version)
            return _invalid(reason, payer, f"simulation reverted: {revert[:200]}" if revert else "simulation reverted")
    return Verified(payer=payer, transfer=transfer, digest=digest, name=name, version=version)


async def diagnose(chain: Chain, transfer: TransferAuthorization, name: str, version: str) -> str:
    """Why an unexplained revert happened, asked of the token as the SDK does."""
    try:
        used = await chain.authorization_used(transfer.token, transfer.from_, transfer.nonce)
    except ChainUnavailable:
        raise
    except Exception:
        return e.EIP3009_NOT_SUPPORTED
    if used:
        return e.NONCE_ALREADY_USED
    try:
        token_name, token_version = await chain.token_domain(transfer.token)
        if token_name != name:
            return e.TOKEN_NAME_MISMATCH
        if token_version != version:
            return e.TOKEN_VERSION_MISMATCH
        if await chain.balance_of(transfer.token, transfer.from_) < transfer.value:
            return e.INSUFFICIENT_BALANCE
    except ChainUnavailable:
        raise
    except Exception:
        return e.SIMULATION_FAILED
    return e.SIMULATION_FAILED
