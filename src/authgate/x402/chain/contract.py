"""Our EIP-3009 token (contracts/TestUSDC.sol) as the chains see it: the committed artifact, function selectors,
event topics, calldata encoders and the revert-reason decoder.

Encoding is done with eth-abi and fixed selectors rather than a web3 ``Contract``: the same bytes go to the
embedded node and to a remote one, and the hot path (simulation during ``/verify``) skips web3's ABI lookup.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from eth_abi.abi import decode, encode
from eth_abi.exceptions import DecodingError
from eth_utils.crypto import keccak

from authgate.x402.chain.base import TransferAuthorization


@functools.cache
def artifact(name: str = "TestUSDC") -> dict[str, Any]:
    """The committed compiler output of ``contracts/<name>.sol``: abi, bytecode, compiler version, sha256 of the
    source it came from. ``TestWallet`` is a minimal ERC-1271 wallet for tests."""
    if name not in ("TestUSDC", "TestWallet"):
        raise ValueError("unknown contract")
    text = resources.files("authgate.x402.chain").joinpath("artifacts", f"{name}.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def deploy_data(name: str, version: str) -> bytes:
    """Creation code + ABI-encoded constructor arguments ``(name, version)``."""
    return bytes.fromhex(artifact()["bytecode"][2:]) + encode(["string", "string"], [name, version])


def selector(signature: str) -> bytes:
    return keccak(text=signature)[:4]


TRANSFER_WITH_AUTH_VRS = selector(
    "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)"
)
TRANSFER_WITH_AUTH_BYTES = selector("transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,bytes)")
AUTHORIZATION_STATE = selector("authorizationState(address,bytes32)")
BALANCE_OF = selector("balanceOf(address)")
NAME = selector("name()")
VERSION = selector("version()")
MINT = selector("mint(address,uint256)")

TRANSFER_TOPIC = keccak(text="Transfer(address,address,uint256)")
AUTHORIZATION_USED_TOPIC = keccak(text="AuthorizationUsed(address,bytes32)")
#: ``Error(string)``: how ``require(cond, "text")`` reverts.
ERROR_STRING = selector("Error(string)")

_AUTH_HEAD = ["address", "address", "uint256", "uint256", "uint256", "bytes32"]
_VRS_TYPES = [*_AUTH_HEAD, "uint8", "bytes32", "bytes32"]
_BYTES_TYPES = [*_AUTH_HEAD, "bytes"]


def transfer_with_authorization(auth: TransferAuthorization) -> bytes:
    """Calldata: the ``(v, r, s)`` overload for a 65-byte signature, the ``bytes`` overload otherwise."""
    head = [auth.from_, auth.to, auth.value, auth.valid_after, auth.valid_before, auth.nonce]
    sig = auth.signature
    if len(sig) == 65:
        v = sig[64] + 27 if sig[64] < 27 else sig[64]
        return TRANSFER_WITH_AUTH_VRS + encode(_VRS_TYPES, [*head, v, sig[:32], sig[32:64]])
    return TRANSFER_WITH_AUTH_BYTES + encode(_BYTES_TYPES, [*head, sig])


@dataclass(frozen=True)
class TransferCall:
    """The parties of a ``transferWithAuthorization`` call read back from a transaction's input."""

    from_: str
    to: str
    value: int
    nonce: bytes


def decode_transfer_call(data: bytes) -> TransferCall | None:
    """None when ``data`` is not a call of either ``transferWithAuthorization`` overload."""
    try:
        if data[:4] == TRANSFER_WITH_AUTH_VRS:
            values = decode(_VRS_TYPES, data[4:])
        elif data[:4] == TRANSFER_WITH_AUTH_BYTES:
            values = decode(_BYTES_TYPES, data[4:])
        else:
            return None
    except (DecodingError, ValueError, OverflowError):
        return None
    return TransferCall(from_=values[0], to=values[1], value=values[2], nonce=values[5])


def authorization_state(authorizer: str, nonce: bytes) -> bytes:
    return AUTHORIZATION_STATE + encode(["address", "bytes32"], [authorizer, nonce])


def balance_of(owner: str) -> bytes:
    return BALANCE_OF + encode(["address"], [owner])


def mint(to: str, amount: int) -> bytes:
    return MINT + encode(["address", "uint256"], [to, amount])


def decode_string(data: bytes) -> str:
    (text,) = decode(["string"], data)
    return str(text)


def decode_uint(data: bytes) -> int:
    (number,) = decode(["uint256"], data)
    return int(number)


def decode_bool(data: bytes) -> bool:
    (flag,) = decode(["bool"], data)
    return bool(flag)


def revert_reason(data: bytes) -> str | None:
    """The text of an ``Error(string)`` revert payload; None for anything else (custom errors, panics, empty)."""
    if data[:4] != ERROR_STRING:
        return None
    try:
        return decode_string(data[4:])
    except (DecodingError, ValueError, OverflowError):
        return None


def error_payload(reason: str) -> bytes:
    """The ``Error(string)`` revert payload for ``reason`` (what a node puts in a JSON-RPC error's ``data``)."""
    return ERROR_STRING + encode(["string"], [reason])


def address_topic(address: str) -> bytes:
    return bytes(12) + bytes.fromhex(address[2:])
