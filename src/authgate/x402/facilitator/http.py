"""The facilitator's HTTP face (spec note §6): ``POST /verify``, ``POST /settle``, ``GET /supported``.

Every well-formed request gets HTTP 200, including ``isValid: false`` and ``success: false``: the Python SDK's
client raises on any other status and the reason would be lost (§6.2). A body that is not a bounded JSON
``{x402Version, paymentPayload, paymentRequirements}`` gets 400; an internal fault 500, never a traceback.
An optional static bearer token (``x402_facilitator_token``) is compared in constant time; without one, bind
to loopback (the default).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from authgate.errors import OAuthError
from authgate.httputil import read_body
from authgate.x402.facilitator.service import Facilitator
from authgate.x402.wire import MAX_JSON_BYTES, FacilitatorRequest, X402WireError

log = logging.getLogger("authgate.x402.facilitator")

_JSON = {"Content-Type": "application/json", "Cache-Control": "no-store"}


def _answer(body: str, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body.encode("utf-8"), status_code=status, headers={**_JSON, **(headers or {})})


def _error(status: int, error: str, description: str, headers: dict[str, str] | None = None) -> Response:
    return _answer(json.dumps({"error": error, "error_description": description}), status, headers)


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

    async def parse(request: Request) -> FacilitatorRequest:
        body = await read_body(request, MAX_JSON_BYTES)
        return FacilitatorRequest.from_json(body)

    @endpoint
    async def verify(request: Request) -> Response:
        req = await parse(request)
        result = await facilitator.verify(req.payment_payload, req.payment_requirements)
        return _answer(result.to_json())

    @endpoint
    async def settle(request: Request) -> Response:
        req = await parse(request)
        result = await facilitator.settle(req.payment_payload, req.payment_requirements)
        return _answer(result.to_json())

    @endpoint
    async def supported(request: Request) -> Response:
        return _answer(facilitator.supported().to_json())

    return Starlette(routes=[
        Route("/verify", verify, methods=["POST"]),
        Route("/settle", settle, methods=["POST"]),
        Route("/supported", supported, methods=["GET"]),
    ])
