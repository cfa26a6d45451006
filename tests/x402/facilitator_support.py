"""Shared pieces of the facilitator tests: a funded payer on the embedded chain and signed payments."""

from __future__ import annotations

import secrets
import time
from dataclasses import replace
from typing import Any

from eth_account import Account

from authgate.x402 import localchain
from authgate.x402.eip3009 import Authorization, sign_authorization
from authgate.x402.wire import PaymentPayload, PaymentRequirements, ResourceInfo

PAY_TO = localchain.label_address("x402-test-payee")
RESOURCE = ResourceInfo(url="http://127.0.0.1:8000/weather", description="Weather", mime_type="application/json")


def requirements(amount: int = 10_000, *, pay_to: str = PAY_TO, timeout: int = 60) -> PaymentRequirements:
    return PaymentRequirements(
        scheme="exact", network=localchain.NETWORK, asset=localchain.TOKEN_ADDRESS, amount=str(amount),
        pay_to=pay_to, max_timeout_seconds=timeout,
        extra={"name": localchain.TOKEN_NAME, "version": localchain.TOKEN_VERSION},
    )


def new_payer() -> tuple[str, str]:
    key = "0x" + secrets.token_hex(32)
    return key, str(Account.from_key(key).address)


def pay(key: str, req: PaymentRequirements, *, value: int | None = None, to: str | None = None,
        valid_after: int = 0, valid_before: int | None = None, nonce: bytes | None = None,
        now: float | None = None, domain: tuple[str, str] | None = None, chain_id: int = localchain.CHAIN_ID,
        asset: str | None = None, accepted: PaymentRequirements | None = None) -> PaymentPayload:
    """A payment payload signed by ``key`` for ``req``; keyword arguments bend single fields."""
    now = time.time() if now is None else now
    auth = Authorization(
        from_address=str(Account.from_key(key).address), to=to or req.pay_to,
        value=int(req.amount) if value is None else value, valid_after=valid_after,
        valid_before=int(now) + req.max_timeout_seconds if valid_before is None else valid_before,
        nonce=nonce or secrets.token_bytes(32),
    )
    name, version = domain or (req.extra["name"], req.extra["version"])
    signed = sign_authorization(auth, key, name=name, version=version, chain_id=chain_id,
                                verifying_contract=asset or req.asset)
    return PaymentPayload(payload=signed.to_dict(), accepted=accepted or req, resource=RESOURCE)


def with_payload(p: PaymentPayload, **changes: Any) -> PaymentPayload:
    """A copy of ``p`` whose scheme payload has ``changes`` applied (``signature`` or authorization fields)."""
    body = {"authorization": dict(p.payload["authorization"]), "signature": p.payload["signature"]}
    for k, v in changes.items():
        if k == "signature":
            body["signature"] = v
        else:
            body["authorization"][k] = v
    return replace(p, payload=body)
