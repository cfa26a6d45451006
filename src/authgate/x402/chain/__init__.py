"""EVM chains behind one interface (:class:`~authgate.x402.chain.base.Chain`): embedded and JSON-RPC.

:func:`build_chain` turns settings into a chain; the chain modules themselves import web3 / eth-tester only
when built, so importing this package stays cheap.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from authgate.clock import Clock, SystemClock
from authgate.x402.chain.base import Chain, ChainError, ChainUnavailable, Receipt, TransferAuthorization

if TYPE_CHECKING:
    from authgate.config import Settings

__all__ = ["Chain", "ChainError", "ChainUnavailable", "Receipt", "TransferAuthorization", "build_chain",
           "resolve_key"]


def resolve_key(reference: str) -> str:
    """The private key a setting names: ``0x…`` hex as is, ``file:PATH`` (first line), ``env:NAME``.

    Errors name the reference kind, never the key."""
    if reference.startswith("file:"):
        try:
            text = Path(reference[5:]).expanduser().read_text("utf-8").strip().splitlines()
        except OSError as exc:
            raise ValueError(f"cannot read the facilitator key file: {exc.strerror}") from None
        value = text[0].strip() if text else ""
    elif reference.startswith("env:"):
        value = os.environ.get(reference[4:], "").strip()
        if not value:
            raise ValueError(f"environment variable {reference[4:]} (facilitator key) is empty or unset")
    else:
        value = reference.strip()
    body = value[2:] if value.startswith("0x") else value
    if len(body) != 64 or any(c not in "0123456789abcdefABCDEF" for c in body):
        raise ValueError("the facilitator key must be 32 bytes of hex")
    return "0x" + body.lower()


def build_chain(settings: Settings, clock: Clock | None = None) -> Chain:
    """The chain ``settings`` describe (validated settings: ``Settings.validate`` checked the combination).

    ``clock`` drives the embedded chain's block time (tests); a JSON-RPC node keeps its own time."""
    if settings.x402_chain == "embedded":
        from authgate.x402.chain.embedded import EmbeddedChain

        return EmbeddedChain(gas_limit=settings.x402_gas_limit, clock=clock or SystemClock())
    from authgate.x402.chain.jsonrpc import JsonRpcChain

    return JsonRpcChain(
        settings.x402_rpc_url,
        chain_id=int(settings.x402_network.split(":", 1)[1]),
        facilitator_key=resolve_key(settings.x402_facilitator_key),
        token_address=settings.x402_token_address,
        token_name=settings.x402_token_name,
        token_version=settings.x402_token_version,
        gas_limit=settings.x402_gas_limit,
    )
