"""The official ``mcp`` 2.3.0 client, unmodified, against authgate's authorization server and an MCP server
built with the ``mcp`` SDK protected by authgate — over real sockets.

Covers what an MCP host does: discovery (RFC 9728 → RFC 8414), dynamic registration or a client ID metadata
document, authorization code + PKCE (auto-approved here), token, tool calls, refresh after expiry, and the
client-side checks our responses must pass (``state``, RFC 9207 ``iss``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qs

import httpx
import httpx2
import pytest
from mcp.client.auth import OAuthClientProvider
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientMetadata
from pydantic import AnyUrl

from authgate.app import build_context, create_app
from authgate.config import Settings
from authgate.demo.apps import mcp_server
from authgate.demo.mcp_client import HeadlessBrowser, MemoryStorage
from authgate.net import Fetcher
from authgate.store import Store
from tests.servers import free_port, serve

pytestmark = [pytest.mark.interop, pytest.mark.parametrize("backend", ["sqlite", "postgres"], indirect=True)]

CIMD_URL = "https://agent.example/oauth/client.json"


@dataclass
class Stack:
    issuer: str
    mcp_url: str
    store: Store
    token_requests: list[dict[str, str]] = field(default_factory=list)

    async def record(self, request: Any) -> None:
        if request.url.path == "/token":
            await request.aread()
            self.token_requests.append({k: v[0] for k, v in parse_qs(request.content.decode()).items()})


@contextlib.asynccontextmanager
async def stack(settings: Settings, store: Store, **overrides: Any) -> AsyncIterator[Stack]:
    as_port, mcp_port = free_port(), free_port()
    issuer = f"http://127.0.0.1:{as_port}"
    mcp_url = f"http://127.0.0.1:{mcp_port}/mcp"
    cfg = replace(settings, issuer=issuer, port=as_port, auto_approve=True, resources=(mcp_url,),
                  scopes=("notes:read", "notes:write", "offline_access"), default_scopes=("notes:read",),
                  **overrides).validate()

    def documents(request: httpx.Request) -> httpx.Response:
        if str(request.url) == CIMD_URL:
            return httpx.Response(200, json={
                "client_id": CIMD_URL, "client_name": "metadata-document agent",
                "redirect_uris": ["http://127.0.0.1:3030/callback"],
                "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
                "token_endpoint_auth_method": "none"}, headers={"Cache-Control": "max-age=60"})
        return httpx.Response(404)

    ctx = await build_context(cfg, store=store, fetcher=Fetcher(transport=httpx.MockTransport(documents)))
    app, verifier = mcp_server(issuer, mcp_url)
    try:
        async with serve(create_app(ctx), as_port), serve(app, mcp_port):
            yield Stack(issuer, mcp_url, store)
    finally:
        await verifier.aclose()


def provider(s: Stack, h: HeadlessBrowser, storage: MemoryStorage, **kwargs: Any) -> OAuthClientProvider:
    return OAuthClientProvider(
        server_url=s.mcp_url,
        client_metadata=OAuthClientMetadata(client_name="mcp interop client",
                                            redirect_uris=[AnyUrl("http://127.0.0.1:3030/callback")]),
        storage=storage, redirect_handler=h.redirect_handler, callback_handler=h.callback_handler, **kwargs)


async def whoami(s: Stack, auth: OAuthClientProvider) -> str:
    async with (
        httpx2.AsyncClient(auth=auth, timeout=30, event_hooks={"request": [s.record]}) as http,
        Client(streamable_http_client(s.mcp_url, http_client=http)) as client,
    ):
        tools = await client.list_tools()
        assert {"list_notes", "whoami"} <= {t.name for t in tools.tools}
        result = await client.call_tool("whoami", {})
        assert not result.is_error
        return str(getattr(result.content[0], "text", ""))


async def test_registration_pkce_token_tool_call_and_refresh(settings: Settings, store: Store) -> None:
    async with stack(settings, store, access_token_ttl=2) as s:
        h, storage = HeadlessBrowser(), MemoryStorage()
        auth = provider(s, h, storage)
        assert (await whoami(s, auth)).startswith("dev-user via client ")

        # what the SDK sent, and what it kept
        assert storage.client is not None and storage.client.client_secret  # RFC default: client_secret_basic
        sent = h.authorize_requests[0]
        assert sent["code_challenge_method"] == "S256" and sent["resource"] == s.mcp_url
        assert set(sent["scope"].split()) == {"notes:read", "offline_access"}
        assert h.landed["iss"] == s.issuer
        assert s.token_requests[0]["grant_type"] == "authorization_code"
        assert storage.tokens is not None and storage.tokens.refresh_token
        first_refresh = storage.tokens.refresh_token

        # the access token expires; the SDK refreshes (rotation) and carries on without a new authorization
        await asyncio.sleep(3)
        assert (await whoami(s, auth)).startswith("dev-user via client ")
        assert [t["grant_type"] for t in s.token_requests] == ["authorization_code", "refresh_token"]
        assert s.token_requests[1]["resource"] == s.mcp_url
        assert len(h.authorize_requests) == 1
        assert storage.tokens.refresh_token and storage.tokens.refresh_token != first_refresh


async def test_client_id_metadata_document(settings: Settings, store: Store) -> None:
    async with stack(settings, store) as s:
        h, storage = HeadlessBrowser(), MemoryStorage()
        auth = provider(s, h, storage, client_metadata_url=CIMD_URL)
        assert (await whoami(s, auth)) == f"dev-user via client {CIMD_URL}"
        assert h.authorize_requests[0]["client_id"] == CIMD_URL
        assert await store.count_clients() == 0  # nothing registered: the document is the registration


@pytest.mark.parametrize("tamper", [{"iss": "http://127.0.0.1:1/evil"}, {"state": "forged-state"}])
async def test_sdk_rejects_tampered_redirect(settings: Settings, store: Store, tamper: dict[str, str]) -> None:
    async with stack(settings, store) as s:
        h, storage = HeadlessBrowser(override=tamper), MemoryStorage()
        with pytest.raises(BaseException) as info:  # the SDK raises inside an anyio task group
            await whoami(s, provider(s, h, storage))
        assert "iss" in repr(info.value).lower() or "state" in repr(info.value).lower()
        assert s.token_requests == []  # no code was redeemed


async def test_metadata_is_what_the_sdk_expects(settings: Settings, store: Store) -> None:
    async with stack(settings, store) as s, httpx.AsyncClient() as http:
        prm = (await http.get(s.mcp_url.replace("/mcp", "/.well-known/oauth-protected-resource/mcp"))).json()
        meta = (await http.get(s.issuer + "/.well-known/oauth-authorization-server")).json()
        assert prm["authorization_servers"] == [meta["issuer"]] == [s.issuer]
        assert json.dumps(meta).count(s.issuer + "/") >= 5  # endpoints derive from the same spelling
