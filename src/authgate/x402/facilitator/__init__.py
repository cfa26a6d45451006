"""The x402 facilitator (``/verify``, ``/settle``, ``/supported``) and clients of any facilitator."""

from __future__ import annotations

from authgate.x402.facilitator.client import (
    FacilitatorAPI,
    FacilitatorClient,
    FacilitatorUnavailable,
    InProcessFacilitatorClient,
)

__all__ = ["FacilitatorAPI", "FacilitatorClient", "FacilitatorUnavailable", "InProcessFacilitatorClient"]
