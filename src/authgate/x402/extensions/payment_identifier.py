"""The x402 ``payment-identifier`` extension: a client-chosen idempotency id for one logical payment.

Wire (x402 ``specs/extensions/payment_identifier.md``, Python SDK ``x402.extensions.payment_identifier``):
the server declares ``extensions["payment-identifier"] = {"info": {"required": bool}, "schema": {...}}`` in
``PAYMENT-REQUIRED``; the client echoes the declaration in ``PaymentPayload.extensions`` with ``info.id`` added
(16-128 characters of ``[A-Za-z0-9_-]``). A paywall that sees the same id again answers from the first
settlement instead of charging a second time (authgate.x402.paywall does this, backed by the database).

Pure: imported by the paying agent too, so only the standard library here.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

PAYMENT_IDENTIFIER = "payment-identifier"
MIN_LENGTH = 16
MAX_LENGTH = 128
_ID = re.compile(r"^[A-Za-z0-9_-]+$")

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "required": {"type": "boolean"},
        "id": {"type": "string", "minLength": MIN_LENGTH, "maxLength": MAX_LENGTH, "pattern": "^[a-zA-Z0-9_-]+$"},
    },
    "required": ["required"],
}


class PaymentIdentifierError(ValueError):
    """The payload carries a ``payment-identifier`` that is malformed, or lacks one the server requires."""


def is_valid_id(value: object) -> bool:
    return isinstance(value, str) and MIN_LENGTH <= len(value) <= MAX_LENGTH and bool(_ID.match(value))


def new_id(prefix: str = "pay_") -> str:
    """A fresh identifier for one logical request (128 random bits)."""
    return prefix + secrets.token_hex(16)


def declare(required: bool = False) -> dict[str, Any]:
    """The server's declaration, to put under ``extensions["payment-identifier"]``."""
    return {"info": {"required": required}, "schema": SCHEMA}


def extract(extensions: object, *, required: bool) -> str | None:
    """The client's id from ``PaymentPayload.extensions``; None when absent and not required.

    Raises :class:`PaymentIdentifierError` for a malformed id, or a missing one when ``required``."""
    entry = extensions.get(PAYMENT_IDENTIFIER) if isinstance(extensions, dict) else None
    info = entry.get("info") if isinstance(entry, dict) else None
    value = info.get("id") if isinstance(info, dict) else None
    if value is None:
        if required:
            raise PaymentIdentifierError("this resource requires a payment-identifier id")
        return None
    if not is_valid_id(value):
        raise PaymentIdentifierError(
            f"payment-identifier id must be {MIN_LENGTH}-{MAX_LENGTH} characters of A-Z a-z 0-9 _ -")
    assert isinstance(value, str)
    return value


def append(extensions: dict[str, Any], payment_id: str) -> dict[str, Any]:
    """Client side: a copy of ``extensions`` with ``payment_id`` added to the server's declaration.

    Only when the server declared the extension (an undeclared extension is not sent)."""
    if not is_valid_id(payment_id):
        raise PaymentIdentifierError("invalid payment-identifier id")
    entry = extensions.get(PAYMENT_IDENTIFIER)
    if not isinstance(entry, dict):
        return dict(extensions)
    raw_info = entry.get("info")
    info: dict[str, Any] = raw_info if isinstance(raw_info, dict) else {}
    return {**extensions, PAYMENT_IDENTIFIER: {**entry, "info": {**info, "id": payment_id}}}
