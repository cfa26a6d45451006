"""EIP-3009 ``TransferWithAuthorization``: the EIP-712 digest, signing and signer recovery (spec note §4.1).

The digest is encoded by hand (fixed-width words and keccak) rather than through eth-account's generic
``encode_typed_data``: the struct has six static fields, so the encoding is one concatenation, and it is the
hot path of ``/verify``. Tests cross-check it against ``encode_typed_data``. Domain separators depend only on
public token facts and are cached; nothing secret is cached. Signing goes through eth-account; recovery through
coincurve (libsecp256k1), about 100 times faster than pure Python.

Also the EVM ``exact`` payload (``{"authorization": {...}, "signature": "0x…"}``) as a typed object.

Imports only the stdlib, eth-account, eth-utils and coincurve (the agent SDK signs with it).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import coincurve
from eth_account import Account
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

from authgate.x402.errors import X402WireError

DOMAIN_TYPEHASH = keccak(text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)")
TRANSFER_TYPEHASH = keccak(
    text="TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,"
    "bytes32 nonce)"
)
#: secp256k1 group order; signatures with s > n/2 are malleable copies and FiatToken (USDC) rejects them.
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_HALF_N = SECP256K1_N // 2

_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_NONCE = re.compile(r"^0x[0-9a-fA-F]{64}$")
_UINT = re.compile(r"^[0-9]{1,78}$")
_HEX = re.compile(r"^0x(?:[0-9a-fA-F]{2})*$")
#: An EOA signature is 65 bytes; smart-wallet (EIP-1271/6492) signatures are longer but bounded here.
MAX_SIGNATURE_BYTES = 4096


class SignatureError(ValueError):
    """The signature bytes cannot be checked at all (bad length, bad v, off-curve point)."""


def _word_uint(value: int) -> bytes:
    return value.to_bytes(32, "big")


def _word_address(address: str) -> bytes:
    return bytes(12) + bytes.fromhex(address[2:])


@lru_cache(maxsize=256)
def domain_separator(name: str, version: str, chain_id: int, verifying_contract: str) -> bytes:
    """``hashStruct(EIP712Domain)`` with all four fields (the SDK always sends all four)."""
    return keccak(
        DOMAIN_TYPEHASH
        + keccak(text=name)
        + keccak(text=version)
        + _word_uint(chain_id)
        + _word_address(verifying_contract.lower())
    )


@dataclass(frozen=True)
class Authorization:
    """The signed message. Numbers are ints, addresses as received (comparison is case-insensitive)."""

    from_address: str
    to: str
    value: int
    valid_after: int
    valid_before: int
    nonce: bytes

    def struct_hash(self) -> bytes:
        return keccak(
            TRANSFER_TYPEHASH
            + _word_address(self.from_address.lower())
            + _word_address(self.to.lower())
            + _word_uint(self.value)
            + _word_uint(self.valid_after)
            + _word_uint(self.valid_before)
            + self.nonce
        )

    def digest(self, name: str, version: str, chain_id: int, verifying_contract: str) -> bytes:
        """``keccak256(0x1901 ‖ domainSeparator ‖ hashStruct(message))``."""
        return keccak(b"\x19\x01" + domain_separator(name, version, chain_id, verifying_contract) + self.struct_hash())

    def to_dict(self) -> dict[str, str]:
        """Wire form: decimal strings and a 0x-prefixed 32-byte nonce, in the SDK's key order."""
        return {
            "from": self.from_address,
            "to": self.to,
            "value": str(self.value),
            "validAfter": str(self.valid_after),
            "validBefore": str(self.valid_before),
            "nonce": "0x" + self.nonce.hex(),
        }

    def typed_data(self, name: str, version: str, chain_id: int, verifying_contract: str) -> dict[str, Any]:
        """The full EIP-712 document (for wallets and for cross-checks with eth-account)."""
        return {
            "types": {
                "EIP712Domain": [
                    {"name": "name", "type": "string"},
                    {"name": "version", "type": "string"},
                    {"name": "chainId", "type": "uint256"},
                    {"name": "verifyingContract", "type": "address"},
                ],
                "TransferWithAuthorization": [
                    {"name": "from", "type": "address"},
                    {"name": "to", "type": "address"},
                    {"name": "value", "type": "uint256"},
                    {"name": "validAfter", "type": "uint256"},
                    {"name": "validBefore", "type": "uint256"},
                    {"name": "nonce", "type": "bytes32"},
                ],
            },
            "primaryType": "TransferWithAuthorization",
            "domain": {"name": name, "version": version, "chainId": chain_id, "verifyingContract": verifying_contract},
            "message": {
                "from": self.from_address,
                "to": self.to,
                "value": self.value,
                "validAfter": self.valid_after,
                "validBefore": self.valid_before,
                "nonce": self.nonce,
            },
        }


@dataclass(frozen=True)
class ExactEvmPayload:
    """``PaymentPayload.payload`` of the ``exact`` scheme on EVM with the EIP-3009 transfer method."""

    authorization: Authorization
    signature: bytes

    def to_dict(self) -> dict[str, Any]:
        return {"authorization": self.authorization.to_dict(), "signature": "0x" + self.signature.hex()}

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> ExactEvmPayload:
        """Strict parse; raises :class:`X402WireError` naming the bad field."""
        auth = obj.get("authorization")
        if not isinstance(auth, dict):
            raise X402WireError("payload.authorization must be a JSON object")

        def text(key: str, pattern: re.Pattern[str]) -> str:
            value = auth.get(key)
            if not isinstance(value, str) or not pattern.match(value):
                raise X402WireError(f"payload.authorization.{key} is missing or malformed")
            return value

        def uint(key: str) -> int:
            value = int(text(key, _UINT))
            if value >= 2**256:
                raise X402WireError(f"payload.authorization.{key} exceeds uint256")
            return value

        signature = obj.get("signature")
        if not isinstance(signature, str) or len(signature) > 2 + 2 * MAX_SIGNATURE_BYTES or not _HEX.match(signature):
            raise X402WireError("payload.signature must be 0x-prefixed hex")
        return cls(
            authorization=Authorization(
                from_address=text("from", _ADDRESS),
                to=text("to", _ADDRESS),
                value=uint("value"),
                valid_after=uint("validAfter"),
                valid_before=uint("validBefore"),
                nonce=bytes.fromhex(text("nonce", _NONCE)[2:]),
            ),
            signature=bytes.fromhex(signature[2:]),
        )


def new_nonce() -> bytes:
    """32 random bytes, as EIP-3009 nonces must be unique per payer and token."""
    return secrets.token_bytes(32)


def sign_digest(digest: bytes, private_key: str | bytes) -> bytes:
    """65-byte ``r‖s‖v`` (v = 27/28) signature of a precomputed digest with eth-account (RFC 6979)."""
    signed = Account.unsafe_sign_hash(digest, private_key)
    return int(signed.r).to_bytes(32, "big") + int(signed.s).to_bytes(32, "big") + bytes([int(signed.v)])


def sign_authorization(
    authorization: Authorization,
    private_key: str | bytes,
    *,
    name: str,
    version: str,
    chain_id: int,
    verifying_contract: str,
) -> ExactEvmPayload:
    """Sign a transfer authorization; the key is used once and never stored."""
    digest = authorization.digest(name, version, chain_id, verifying_contract)
    return ExactEvmPayload(authorization=authorization, signature=sign_digest(digest, private_key))


def recover_signer(digest: bytes, signature: bytes) -> str:
    """Checksummed address that produced a 65-byte ``r‖s‖v`` signature over ``digest``.

    Raises :class:`SignatureError` for bytes that are not a signature at all (length, v, r/s range, high s),
    so the facilitator can tell "not a signature" from "someone else's signature".
    """
    return to_checksum_address(recover_address(digest, signature))


def recover_address(digest: bytes, signature: bytes) -> bytes:
    """The 20 address bytes behind a signature (the hot path: no checksum encoding); see :func:`recover_signer`."""
    if len(signature) != 65:
        raise SignatureError(f"Invalid signature length: {len(signature)}")
    v = signature[64]
    if v in (27, 28):
        v -= 27
    if v not in (0, 1):
        raise SignatureError(f"Invalid v value: {signature[64]}")
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    if not (0 < r < SECP256K1_N and 0 < s <= _HALF_N):
        raise SignatureError("Invalid signature r or s value")
    try:
        public = coincurve.PublicKey.from_signature_and_message(signature[:64] + bytes([v]), digest, hasher=None)
    except Exception as exc:  # libsecp256k1 refuses points not on the curve
        raise SignatureError("Signature does not recover to a public key") from exc
    return keccak(public.format(compressed=False)[1:])[12:]
