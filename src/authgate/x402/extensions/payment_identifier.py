"""The x402 ``payment-identifier`` extension: a client-chosen idempotency id for one logical payment.

Wire (x402 ``specs/extensions/payment_identifier.md``, Python SDK ``x402.extensions.payment_identifier``):
the server declares ``extensions["payment-identifier"] = {"info": {"required": bool}, "schema": {...}}`` in
``PAYMENT-REQUIRED``; the client echoes the declaration in ``PaymentPayload.extensions`` with ``info.id`` added
(16-128 characters of ``[A-Za-z0-9_-]``). A paywall that sees the same id again answers from the first
settlement instead of charging a second time (authgate.x402.paywall does this, backed by the database).

What counts as a declaration, an id and a malformed entry follows the Python SDK (x402 2.25.0,
``tests/interop/test_x402_payment_identifier.py`` holds the two side by side): the client appends only to a
declaration whose ``info.required`` is a boolean; the server reads an entry that is present as valid only when
``info`` is an object with a boolean ``required`` and, if any, a well-formed string ``id`` (a falsy entry counts as
absent). Two deliberate differences: an id is matched whole (the SDK's ``re.match(...$)`` lets a trailing newline
through; the schema's ECMA-262 pattern and the TypeScript SDK do not), and ``info`` is checked against our own
schema, not against the ``schema`` the client echoes back.

Pure: imported by the paying agent too, so only the standard library here.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

PAYMENT_IDENTIFIER = "payment-identifier"
MIN_LENGTH = 16
MAX_LENGTH = 128
_ID = re.compile(r"[A-Za-z0-9_-]+")  # fullmatch: "$" would accept a trailing newline

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
    return isinstance(value, str) and MIN_LENGTH <= len(value) <= MAX_LENGTH and bool(_ID.fullmatch(value))


def new_id(prefix: str = "pay_") -> str:
    """A fresh identifier for one logical request (128 random bits)."""
    return prefix + secrets.token_hex(16)


def is_declaration(entry: object) -> bool:
    """An entry the client may append its id to: an object whose ``info`` is an object with a boolean
    ``required`` (the SDK's ``is_payment_identifier_extension``)."""
    info = entry.get("info") if isinstance(entry, dict) else None
    return isinstance(info, dict) and isinstance(info.get("required"), bool)


def declare(required: bool = False) -> dict[str, Any]:
    """The server's declaration, to put under ``extensions["payment-identifier"]``."""
    return {"info": {"required": required}, "schema": SCHEMA}


def extract(extensions: object, *, required: bool) -> str | None:
    """The client's id from ``PaymentPayload.extensions``; None when absent and not required.

    Raises :class:`PaymentIdentifierError` for a malformed entry or id (where the SDK's
    ``extract_and_validate_payment_identifier`` says invalid), or a missing id when ``required``."""
    entry = extensions.get(PAYMENT_IDENTIFIER) if isinstance(extensions, dict) else None
    value = None
    if entry:  # present: it must be well-formed, required or not
        if not is_declaration(entry):
            raise PaymentIdentifierError("payment-identifier must be an object whose info has a boolean required")
        assert isinstance(entry, dict)
        value = entry["info"].get("id")
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

    Only when the server declared the extension (:func:`is_declaration`; anything else is returned unchanged, as
    the SDK's ``append_payment_identifier_to_extensions`` does); :class:`PaymentIdentifierError` for an invalid
    id that would be sent."""
    entry = extensions.get(PAYMENT_IDENTIFIER)
    if not is_declaration(entry):
        return dict(extensions)
    if not is_valid_id(payment_id):
        raise PaymentIdentifierError("invalid payment-identifier id")
    assert isinstance(entry, dict)
    return {**extensions, PAYMENT_IDENTIFIER: {**entry, "info": {**entry["info"], "id": payment_id}}}
