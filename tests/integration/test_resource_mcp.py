"""An ``mcp`` 2.3 SDK server (``MCPServer``, streamable HTTP) protected by authgate tokens.

Two set-ups: the SDK's own auth stack fed by :class:`AuthGateTokenVerifier`, and the SDK app without auth
wrapped in :class:`AuthGateMiddleware`. Both run in-process; the verifier fetches the AS JWKS in-process too.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.mcpserver import MCPServer
from starlette.types import ASGIApp

from authgate.app import create_app
from authgate.clock import FrozenClock
from authgate.context import ServerContext
from authgate.resource import AuthGateMiddleware, JWTVerifier, ProtectedResource, protect
from authgate.resource.mcp import AuthGateTokenVerifier, auth_settings
from tests.conftest import ISSUER

MCP_BASE = "http://127.0.0.1:8000"
MCP_URL = MCP_BASE + "/mcp"
PRM_URL = MCP_BASE + "/.well-known/oauth-protected-resource/mcp"
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
           "MCP-Protocol-Version": "2025-11-25"}
CALL = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "whoami", "arguments": {}}}
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}


@pytest.fixture
def resource() -> ProtectedResource:
    return ProtectedResource(resource=MCP_URL, authorization_servers=[ISSUER], scopes_supported=["notes:read"])


@pytest.fixture
async def verifier(ctx: ServerContext, clock: FrozenClock) -> AsyncIterator[JWTVerifier]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(ctx))) as as_http:
        yield JWTVerifier(ISSUER, MCP_URL, http_client=as_http, clock=clock)


def build_server(**kwargs: Any) -> MCPServer:
    server = MCPServer("notes", **kwargs)

    @server.tool()
    def whoami() -> str:
        token = get_access_token()
        return f"{token.subject}/{token.client_id}" if token else "anonymous"

    return server


@pytest.fixture
def mint(ctx: ServerContext, clock: FrozenClock) -> Callable[..., Any]:
    async def make(**overrides: Any) -> str:
        now = int(clock.now())
        claims = {"iss": ISSUER, "sub": "alice", "aud": MCP_URL, "client_id": "agent-1", "scope": "notes:read",
                  "iat": now, "nbf": now, "exp": now + 300, "jti": secrets.token_urlsafe(8), **overrides}
        return await ctx.keys.sign(claims)

    return make


@contextlib.asynccontextmanager
async def serve(server: MCPServer, app: ASGIApp) -> AsyncIterator[httpx.AsyncClient]:
    """Run the SDK's session manager around the test body (its task group must stay in one task)."""
    transport = httpx.ASGITransport(app=app)
    async with server.session_manager.run(), httpx.AsyncClient(transport=transport, base_url=MCP_BASE) as http:
        yield http


def sdk_auth(verifier: JWTVerifier, resource: ProtectedResource) -> contextlib.AbstractAsyncContextManager[
    httpx.AsyncClient
]:
    """The SDK's own auth stack, fed by our verifier."""
    server = build_server(token_verifier=AuthGateTokenVerifier(verifier),
                          auth=auth_settings(resource, required_scopes=["notes:read", "offline_access"]))
    return serve(server, server.streamable_http_app(stateless_http=True, json_response=True))


def wrapped(verifier: JWTVerifier, resource: ProtectedResource) -> contextlib.AbstractAsyncContextManager[
    httpx.AsyncClient
]:
    """The SDK app without auth, behind our middleware."""
    server = build_server()
    app = AuthGateMiddleware(server.streamable_http_app(stateless_http=True, json_response=True), verifier,
                             resource, rules=[protect("/mcp", "notes:read")])
    return serve(server, app)


async def call_tool(http: httpx.AsyncClient, token: str) -> httpx.Response:
    headers = {**HEADERS, "Authorization": f"Bearer {token}"}
    r = await http.post("/mcp", headers=headers, json=INIT)
    if r.status_code != 200:
        return r
    return await http.post("/mcp", headers=headers, json=CALL)


async def test_sdk_server_with_authgate_verifier(
    verifier: JWTVerifier, resource: ProtectedResource, mint: Callable[..., Any]
) -> None:
    async with sdk_auth(verifier, resource) as http:
        await _check_sdk_auth(http, mint)


async def _check_sdk_auth(sdk_auth: httpx.AsyncClient, mint: Callable[..., Any]) -> None:
    r = await sdk_auth.post("/mcp", headers=HEADERS, json=INIT)
    assert r.status_code == 401
    assert f'resource_metadata="{PRM_URL}"' in r.headers["www-authenticate"]

    prm = await sdk_auth.get("/.well-known/oauth-protected-resource/mcp")
    assert prm.status_code == 200
    assert prm.json()["resource"] == MCP_URL
    assert prm.json()["authorization_servers"] == [ISSUER]  # byte-exact, no trailing slash
    assert prm.json()["scopes_supported"] == ["notes:read"]  # offline_access never advertised

    r = await call_tool(sdk_auth, await mint())
    assert r.status_code == 200, r.text
    assert r.json()["result"]["content"][0]["text"] == "alice/agent-1"

    r = await call_tool(sdk_auth, await mint(aud="http://127.0.0.1:8001/mcp"))
    assert r.status_code == 401
    r = await call_tool(sdk_auth, await mint(scope="notes:write"))
    assert r.status_code == 403


async def test_sdk_server_behind_authgate_middleware(
    verifier: JWTVerifier, resource: ProtectedResource, mint: Callable[..., Any]
) -> None:
    async with wrapped(verifier, resource) as http:
        await _check_wrapped(http, mint)


async def _check_wrapped(wrapped: httpx.AsyncClient, mint: Callable[..., Any]) -> None:
    r = await wrapped.post("/mcp", headers=HEADERS, json=INIT)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == f'Bearer resource_metadata="{PRM_URL}", scope="notes:read"'

    r = await call_tool(wrapped, await mint())
    assert r.status_code == 200, r.text
    assert "error" not in r.json()

    r = await call_tool(wrapped, await mint(aud="http://127.0.0.1:8001/mcp"))
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["www-authenticate"]
    r = await call_tool(wrapped, await mint(scope="notes:write"))
    assert r.status_code == 403
    assert 'error="insufficient_scope"' in r.headers["www-authenticate"]
    assert 'scope="notes:read"' in r.headers["www-authenticate"]
