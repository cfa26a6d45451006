"""x402 error vocabulary: the wire-format exception and the reason strings of the Python SDK (x402 2.25.0,
``x402/mechanisms/evm/constants.py``), which our facilitator emits verbatim so that SDK peers and dashboards
built against them read our answers (spec note §5). Reasons from other facilitators are opaque to us.

Imports only the stdlib: the agent SDK uses this module.
"""

from __future__ import annotations


class X402Error(ValueError):
    """Base of the typed errors our x402 parsers raise on bad input (issue #9: a parser raises nothing else).

    A ``ValueError`` subclass, so that callers written against the plain ``ValueError`` these parsers once raised
    keep working; new code catches the narrow class it expects.
    """


class NetworkIdError(X402Error):
    """A network that is not a CAIP-2 id (or a v1 legacy name), not an EVM network where one is needed, or one
    with no default asset configured (:mod:`authgate.x402.networks`)."""


class PriceError(X402Error):
    """A route price that is not a non-negative decimal amount (``"$0.01"``, ``"1.5 USDC"``, ``0.01``) or an
    explicit atomic amount with its asset, or names a ticker the network has no asset for
    (:mod:`authgate.x402.price`)."""


class X402WireError(X402Error):
    """A payment header or body that is not a well-formed x402 object (bad base64, JSON, shape or size).

    ``reason`` is machine-readable (``invalid_payload`` unless a caller narrows it); the message is safe to log
    but may echo a field name, never a value that could be secret (signatures are not secret, keys never reach
    this module).
    """

    def __init__(self, message: str, reason: str = "invalid_payload") -> None:
        super().__init__(message)
        self.reason = reason


# Requirements / scheme.
UNSUPPORTED_SCHEME = "unsupported_scheme"
NETWORK_MISMATCH = "network_mismatch"
FAILED_TO_GET_NETWORK_CONFIG = "invalid_exact_evm_failed_to_get_network_config"
MISSING_EIP712_DOMAIN = "missing_eip712_domain"
INVALID_X402_VERSION = "invalid_x402_version"
INVALID_PAYLOAD = "invalid_payload"
INVALID_PAYMENT_REQUIREMENTS = "invalid_payment_requirements"

# Authorization fields.
RECIPIENT_MISMATCH = "invalid_exact_evm_payload_recipient_mismatch"
VALUE_MISMATCH = "invalid_exact_evm_payload_authorization_value_mismatch"
VALID_BEFORE = "invalid_exact_evm_payload_authorization_valid_before"
VALID_AFTER = "invalid_exact_evm_payload_authorization_valid_after"

# Signature.
INVALID_SIGNATURE = "invalid_exact_evm_payload_signature"
FAILED_TO_VERIFY_SIGNATURE = "invalid_exact_evm_failed_to_verify_signature"

# Chain state.
NONCE_ALREADY_USED = "invalid_exact_evm_nonce_already_used"
INSUFFICIENT_BALANCE = "invalid_exact_evm_insufficient_balance"
ASSET_NOT_DEPLOYED = "asset_not_deployed_contract"

# Diagnostics after an unmapped simulation revert.
TOKEN_NAME_MISMATCH = "invalid_exact_evm_token_name_mismatch"
TOKEN_VERSION_MISMATCH = "invalid_exact_evm_token_version_mismatch"
EIP3009_NOT_SUPPORTED = "invalid_exact_evm_eip3009_not_supported"
SIMULATION_FAILED = "invalid_exact_evm_transaction_simulation_failed"

# Settlement.
TRANSACTION_FAILED = "transaction_failed"
SETTLEMENT_PENDING = "settlement_pending"
TRANSFER_EVENT_MISMATCH = "invalid_exact_evm_transfer_event_mismatch"
UNEXPECTED_VERIFY_ERROR = "unexpected_verify_error"
UNEXPECTED_SETTLE_ERROR = "unexpected_settle_error"
