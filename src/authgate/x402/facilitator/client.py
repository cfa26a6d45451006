"""Clients of the facilitator API (spec note §6): one over HTTP for any facilitator URL (ours, or a hosted one),
one in-process for ours (no sockets), with the same three coroutines, so a paywall takes either.

Failure contract: :class:`FacilitatorUnavailable` when no usable answer came back (network error, timeout,
non-200, malformed JSON). A well-formed ``isValid: false`` / ``success: false`` is an answer, not an error.
Reason strings from other facilitators are opaque: callers pass them on, never branch on them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import httpx

from authgate.x402.errors import X402WireError
from authgate.x402.wire import (
    MAX_JSON_BYTES,
    FacilitatorRequest,
    PaymentPayload,
    PaymentRequirements,
    SettleResponse,
    SupportedResponse,
    VerifyResponse,
)

if TYPE_CHECKING:
    from authgate.x402.facilitator.service import Facilitator


class FacilitatorUnavailable(Exception):
    """The facilitator gave no usable answer; the payment's state is unknown to the caller (never "paid")."""


class FacilitatorAPI(Protocol):
    """What a paywall needs from a facilitator."""

    async def verify(self, payload: PaymentPayload, requirements: PaymentRequirements) -> VerifyResponse: ...

    async def settle(self, payload: PaymentPayload, requirements: PaymentRequirements) -> SettleResponse: ...

    async def supported(self) -> SupportedResponse: ...


class InProcessFacilitatorClient:
    """Our facilitator called directly: same answers as over HTTP, minus the sockets."""

    def __init__(self, facilitator: Facilitator) -> None:
        self.facilitator = facilitator

    async def verify(self, payload: PaymentPayload, requirements: PaymentRequirements) -> VerifyResponse:
        return await self.facilitator.verify(payload, requirements)

    async def settle(self, payload: PaymentPayload, requirements: PaymentRequirements) -> SettleResponse:
        return await self.facilitator.settle(payload, requirements)

    async def supported(self) -> SupportedResponse:
        return self.facilitator.supported()


class FacilitatorClient:
    """HTTP client of ``POST /verify``, ``POST /settle``, ``GET /supported`` under ``base_url``.

    ``token`` is sent as ``Authorization: Bearer`` (our facilitator's ``x402_facilitator_token``); it is never
    logged. Redirects are not followed: a facilitator URL that redirects is misconfigured (x402 issue #605), and
    following it would carry the bearer token elsewhere. Pass ``transport`` (e.g. ``httpx.ASGITransport``) to
    reach an app without sockets.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        settle_timeout: float | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._timeout = timeout
        self._settle_timeout = settle_timeout if settle_timeout is not None else max(timeout, 130.0)
        self._client = httpx.AsyncClient(transport=transport, follow_redirects=False, headers=self._headers)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> FacilitatorClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _call(self, method: str, path: str, body: str | None, wait: float) -> bytes:
        try:
            response = await self._client.request(
                method,
                self.base_url + path,
                content=body.encode("utf-8") if body is not None else None,
                headers={"Content-Type": "application/json"} if body is not None else None,
                timeout=wait,
            )
        except httpx.HTTPError as exc:
            raise FacilitatorUnavailable(f"facilitator {path} unreachable: {exc.__class__.__name__}") from None
        if response.status_code != 200:
            raise FacilitatorUnavailable(f"facilitator {path} answered HTTP {response.status_code}")
        if len(response.content) > MAX_JSON_BYTES:
            raise FacilitatorUnavailable(f"facilitator {path} answer too large")
        return response.content

    async def verify(self, payload: PaymentPayload, requirements: PaymentRequirements) -> VerifyResponse:
        body = FacilitatorRequest(payload, requirements, payload.x402_version).to_json()
        raw = await self._call("POST", "/verify", body, self._timeout)
        try:
            return VerifyResponse.from_json(raw)
        except X402WireError as exc:
            raise FacilitatorUnavailable(f"facilitator /verify answer malformed: {exc}") from None

    async def settle(self, payload: PaymentPayload, requirements: PaymentRequirements) -> SettleResponse:
        body = FacilitatorRequest(payload, requirements, payload.x402_version).to_json()
        raw = await self._call("POST", "/settle", body, self._settle_timeout)
        try:
            return SettleResponse.from_json(raw)
        except X402WireError as exc:
            raise FacilitatorUnavailable(f"facilitator /settle answer malformed: {exc}") from None

    async def supported(self) -> SupportedResponse:
        raw = await self._call("GET", "/supported", None, self._timeout)
        try:
            return SupportedResponse.from_json(raw)
        except X402WireError as exc:
            raise FacilitatorUnavailable(f"facilitator /supported answer malformed: {exc}") from None
