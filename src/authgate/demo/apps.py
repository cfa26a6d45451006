"""The demo's protected resources: a small notes API, an MCP server built with the ``mcp`` SDK, and a
customer-support orders API (the AAuth scenario).

Both verify authgate's JWT access tokens locally (JWKS fetched from the authorization server and cached),
and both answer a missing or insufficient token with the RFC 9728 / RFC 6750 challenge agents follow.
"""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from authgate.resource import AuthGateMiddleware, JWTVerifier, ProtectedResource, claims_of, protect

NOTES = [
    {"id": 1, "text": "Agents register themselves with RFC 7591."},
    {"id": 2, "text": "PKCE S256 protects every authorization code."},
    {"id": 3, "text": "Tokens are bound to one audience (RFC 8707)."},
]


def notes_api(issuer: str, resource_url: str) -> tuple[ASGIApp, JWTVerifier]:
    """``GET /notes`` needs ``notes:read``; ``POST /notes`` needs ``notes:write``."""

    async def list_notes(request: Request) -> JSONResponse:
        claims = claims_of(request)
        caller = {"sub": claims.subject, "client_id": claims.client_id} if claims else None
        return JSONResponse({"notes": NOTES, "caller": caller})

    async def add_note(request: Request) -> JSONResponse:
        body = await request.json()
        note = {"id": len(NOTES) + 1, "text": str(body.get("text", ""))[:500]}
        NOTES.append(note)
        return JSONResponse(note, status_code=201)

    app = Starlette(routes=[Route("/notes", list_notes, methods=["GET"]), Route("/notes", add_note, methods=["POST"])])
    resource = ProtectedResource(resource=resource_url, authorization_servers=[issuer],
                                 scopes_supported=["notes:read", "notes:write"], resource_name="Demo notes API")
    verifier = JWTVerifier(issuer, resource.resource)
    protected = AuthGateMiddleware(app, verifier, resource, rules=[
        protect("/notes", "notes:read", methods={"GET"}),
        protect("/notes", "notes:write", methods={"POST"}),
    ])
    return protected, verifier


def orders_api(issuer: str, resource_url: str, orders: dict[str, dict[str, Any]]) -> tuple[ASGIApp, JWTVerifier]:
    """``GET /orders/{id}`` needs ``orders:read``; ``POST /orders/{id}/address`` needs ``orders:write``. An order
    is visible only to its customer (the token's ``sub``): anyone else gets 404, as if it did not exist."""

    def own_order(request: Request) -> dict[str, Any] | None:
        claims = claims_of(request)
        order = orders.get(request.path_params["order_id"])
        return order if order is not None and claims is not None and order["customer"] == claims.subject else None

    async def get_order(request: Request) -> JSONResponse:
        order = own_order(request)
        if order is None:
            return JSONResponse({"error": "not_found"}, status_code=404)
        return JSONResponse({k: v for k, v in order.items() if k != "customer"})

    async def change_address(request: Request) -> JSONResponse:
        order = own_order(request)
        if order is None:
            return JSONResponse({"error": "not_found"}, status_code=404)
        body = await request.json()
        address = {k: str(body.get(k, ""))[:200] for k in ("street", "city", "postal_code")}
        if not all(address.values()):
            return JSONResponse({"error": "invalid_address"}, status_code=400)
        order["delivery_address"] = address
        return JSONResponse({k: v for k, v in order.items() if k != "customer"})

    app = Starlette(routes=[
        Route("/orders/{order_id}", get_order, methods=["GET"]),
        Route("/orders/{order_id}/address", change_address, methods=["POST"]),
    ])
    resource = ProtectedResource(resource=resource_url, authorization_servers=[issuer],
                                 scopes_supported=["orders:read", "orders:write"], resource_name="Demo orders API",
                                 scope_descriptions={
                                     "orders:read": "See your orders, their status and delivery dates",
                                     "orders:write": "Change an order's delivery address",
                                 })
    verifier = JWTVerifier(issuer, resource.resource)
    protected = AuthGateMiddleware(app, verifier, resource, rules=[
        protect("/orders/*", "orders:read", methods={"GET"}),
        protect("/orders/*", "orders:write", methods={"POST"}),
    ])
    return protected, verifier


def mcp_server(issuer: str, resource_url: str) -> tuple[ASGIApp, JWTVerifier]:
    """An MCP server (``mcp`` SDK, streamable HTTP) whose ``/mcp`` endpoint needs ``notes:read``."""
    server = MCPServer("authgate-demo-notes")

    @server.tool()
    def list_notes() -> list[str]:
        """The notes everyone can read."""
        return [str(n["text"]) for n in NOTES]

    @server.tool()
    def whoami(ctx: Context) -> str:
        """Who the access token says is calling (claims verified by authgate's middleware)."""
        request = ctx.request_context.request
        claims = claims_of(request) if isinstance(request, Request) else None
        return f"{claims.subject} via client {claims.client_id}" if claims else "anonymous"

    resource = ProtectedResource(resource=resource_url, authorization_servers=[issuer],
                                 scopes_supported=["notes:read"], resource_name="Demo notes MCP server")
    verifier = JWTVerifier(issuer, resource.resource)
    inner = server.streamable_http_app(stateless_http=True, json_response=True)
    return AuthGateMiddleware(inner, verifier, resource, rules=[protect("/mcp", "notes:read")]), verifier


def weather_api(paywall: Any) -> ASGIApp:
    """``GET /weather`` costs $0.01 (x402): ``paywall`` is an :class:`authgate.x402.paywall.Paywall`."""
    from authgate.x402.paywall import PaywallMiddleware

    async def weather(request: Request) -> JSONResponse:
        payment = request.state.x402
        return JSONResponse({"city": "Lisbon", "forecast": "sunny, 24°C", "paid_by": payment.payer})

    return PaywallMiddleware(Starlette(routes=[Route("/weather", weather)]), paywall)
