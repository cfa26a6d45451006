"""EVM chains behind one interface (:class:`~authgate.x402.chain.base.Chain`): embedded and JSON-RPC."""

from __future__ import annotations

from authgate.x402.chain.base import Chain, ChainError, ChainUnavailable, Receipt, TransferAuthorization

__all__ = ["Chain", "ChainError", "ChainUnavailable", "Receipt", "TransferAuthorization"]
