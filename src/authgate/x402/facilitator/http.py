"""The facilitator's HTTP face (spec note §6): ``POST /verify``, ``POST /settle``, ``GET /supported``.

Every well-formed request gets HTTP 200, including ``isValid: false`` and ``success: false``: the Python SDK's
client raises on any other status and the reason would be lost (§6.2). A body that is not a bounded JSON
``{x402Version, paymentPayload, paymentRequirements}`` gets 400; an internal fault 500, never a traceback.
An optional static bearer token (``x402_facilitator_token``) is compared in constant time; without one, bind
to loopback (the default).

v1 bodies (spec §3.5, authgate profile) are accepted too: ``{"x402Version": 1, "paymentPayload": {x402Version,
scheme, network, payload}, "paymentRequirements": {..., "maxAmountRequired": ...}}`` with legacy network names
(``base-sepolia``) or CAIP-2. They are mapped onto the v2 objects (names → CAIP-2; the payload's own scheme and
network become ``accepted``, so a payload for another scheme or network fails the same checks as in v2), and
the answer names the network as the request did. ``/supported`` lists only the v2 kinds actually served.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from authgate.errors import OAuthError
from authgate.httputil import read_body
from authgate.x402.facilitator.service import Facilitator
from authgate.x402.networks import normalize_network
from authgate.x402.wire import (
    MAX_JSON_BYTES,
    FacilitatorRequest,
    PaymentPayload,
    PaymentPayloadV1,
    PaymentRequirements,
    X402WireError,
    loads,
)

log = logging.getLogger("authgate.x402.facilitator")

_JSON = {"Content-Type": "application/json", "Cache-Control": "no-store"}


def _answer(body: str, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body.encode("utf-8"), status_code=status, headers={**_JSON, **(headers or {})})


def _error(status: int, error: str, description: str, headers: dict[str, str] | None = None) -> Response:
    return _answer(json.dumps({"error": error, "error_description": description}), status, headers)


@dataclass(frozen=True)
class _Parsed:
    """A request body as the facilitator works on it (v2 objects), and the network name to answer with."""

    request: FacilitatorRequest
    #: v1 requests: the network as the request spelled it (a legacy name), echoed in ``/settle`` answers.
    answer_network: str | None = None


def _caip2(network: str) -> str:
    """A legacy v1 name as CAIP-2; anything unknown unchanged (the checks then refuse it as a mismatch)."""
    try:
        return normalize_network(network)
    except ValueError:
        return network


def parse_request(body: bytes) -> _Parsed:
    """A ``/verify`` or ``/settle`` body, v2 or v1; :class:`X402WireError` when it is neither."""
    raw = loads(body)
    if not (isinstance(raw, dict) and raw.get("x402Version") == 1 and not isinstance(raw.get("x402Version"), bool)):
        return _Parsed(FacilitatorRequest.from_dict(raw))
    v1_payload = PaymentPayloadV1.from_dict(raw.get("paymentPayload"))
    v1_requirements = PaymentRequirements.from_dict(raw.get("paymentRequirements"), v1=True)
    requirements = replace(v1_requirements, network=_caip2(v1_requirements.network))
    accepted = replace(requirements, scheme=v1_payload.scheme, network=_caip2(v1_payload.network))
    payload = PaymentPayload(payload=v1_payload.payload, accepted=accepted, x402_version=1)
    return _Parsed(FacilitatorRequest(payload, requirements, 1), v1_requirements.network)


def create_facilitator_app(facilitator: Facilitator, *, token: str | None = None) -> Starlette:
    """An ASGI app serving the facilitator API at its root (mount it under ``/x402`` or run it alone)."""
    token_digest = hashlib.sha256(token.encode()).digest() if token else None

    def authorized(request: Request) -> bool:
        if token_digest is None:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        presented = hashlib.sha256(value.strip().encode()).digest()
        return scheme.lower() == "bearer" and hmac.compare_digest(presented, token_digest)

    def endpoint(fn: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def wrapper(request: Request) -> Response:
            if not authorized(request):
                return _error(401, "invalid_token", "a valid facilitator bearer token is required",
                              {"WWW-Authenticate": 'Bearer realm="x402-facilitator"'})
            try:
                return await fn(request)
            except OAuthError as exc:  # body too large, bad Content-Length
                return _error(exc.status_code, exc.error, exc.description)
            except X402WireError as exc:
                return _error(400, "invalid_request", str(exc))
            except Exception:
                log.exception("x402 facilitator: unhandled error in %s", request.url.path)
                return _error(500, "server_error", "internal error")

        return wrapper

    async def parse(request: Request) -> _Parsed:
        return parse_request(await read_body(request, MAX_JSON_BYTES))

    @endpoint
    async def verify(request: Request) -> Response:
        req = (await parse(request)).request
        result = await facilitator.verify(req.payment_payload, req.payment_requirements)
        return _answer(result.to_json())

    @endpoint
    async def settle(request: Request) -> Response:
        parsed = await parse(request)
        req = parsed.request
        result = await facilitator.settle(req.payment_payload, req.payment_requirements)
        if parsed.answer_network is not None:
            result = replace(result, network=parsed.answer_network)
        return _answer(result.to_json())

    @endpoint
    async def supported(request: Request) -> Response:
        return _answer(facilitator.supported().to_json())

    return Starlette(routes=[
        Route("/verify", verify, methods=["POST"]),
        Route("/settle", settle, methods=["POST"]),
        Route("/supported", supported, methods=["GET"]),
    ])
