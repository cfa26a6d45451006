"""The agent SDK against the real authorization server and a resource protected by ``authgate.resource``,
all in process: one routing transport sends each host to its ASGI app (no sockets)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from authgate.agent import (
    ClientMetadata,
    FileTokenStore,
    IssMismatchError,
    MemoryTokenStore,
    OAuthAgentAuth,
    StateMismatchError,
    TokenSet,
)
from authgate.app import build_context, create_app
from authgate.clock import FrozenClock
from authgate.config import Settings
from authgate.resource import AuthGateMiddleware, JWTVerifier, ProtectedResource, claims_of, protect
from authgate.store import Store
from tests.conftest import ISSUER

RS = "http://rs.test"
RESOURCE = RS + "/api"
REDIRECT = "http://127.0.0.1:8976/callback"


class HostRouter(httpx.AsyncBaseTransport):
    """Dispatch each request to the ASGI app serving its host (``host`` or ``host:port``)."""

    def __init__(self, apps: dict[str, httpx.AsyncBaseTransport]) -> None:
        self.apps = apps
        self.log: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        netloc = request.url.netloc.decode()
        self.log.append(f"{request.method} {netloc}{request.url.path}")
        transport = self.apps.get(netloc)
        if transport is None:
            return httpx.Response(502, text=f"no app for {netloc}")
        return await transport.handle_async_request(request)


async def _whoami(request: Request) -> JSONResponse:
    claims = claims_of(request)
    assert claims is not None
    body = (await request.body()).decode()
    return JSONResponse({"sub": claims.subject, "scopes": sorted(claims.scopes), "client_id": claims.client_id,
                         "body": body})


class World:
    def __init__(self, router: HostRouter, clock: FrozenClock) -> None:
        self.router = router
        self.clock = clock
        self.urls: list[str] = []
        self.tamper: Callable[[str], str] = lambda location: location

    async def browser(self, url: str) -> str:
        """Interaction callback: the AS auto-approves, so follow nothing and hand back the redirect."""
        self.urls.append(url)
        async with httpx.AsyncClient(transport=self.router) as http:  # a separate client: no agent auth
            r = await http.get(url, follow_redirects=False)
        assert r.status_code in (302, 303), r.text
        return self.tamper(r.headers["location"])

    def agent(self, **kwargs: Any) -> httpx.AsyncClient:
        kwargs.setdefault("interaction", self.browser)
        kwargs.setdefault("client_metadata", ClientMetadata(client_name="integration agent", redirect_uris=(REDIRECT,)))
        auth = OAuthAgentAuth(clock=self.clock.now, **kwargs)
        return httpx.AsyncClient(transport=self.router, auth=auth)


@pytest.fixture
async def world(settings: Settings, store: Store, clock: FrozenClock) -> AsyncIterator[World]:
    as_ctx = await build_context(replace(settings, auto_approve=True).validate(), clock, store)
    as_transport = httpx.ASGITransport(app=create_app(as_ctx), client=("127.0.0.1", 50000))
    router = HostRouter({"127.0.0.1:9000": as_transport})
    async with httpx.AsyncClient(transport=router) as verifier_http:
        verifier = JWTVerifier(ISSUER, RESOURCE, jwks_uri=ISSUER + "/jwks.json", http_client=verifier_http,
                               clock=clock)
        resource = ProtectedResource(resource=RESOURCE, authorization_servers=[ISSUER],
                                     scopes_supported=["read", "write"], resource_name="Agent test API")
        app = Starlette(routes=[Route("/api/{path:path}", _whoami, methods=["GET", "POST"])])
        rs_app = AuthGateMiddleware(app, verifier, resource, rules=[
            protect("/api/admin/*", "read", "write"),
            protect("/api/*", "read"),
        ])
        router.apps["rs.test"] = httpx.ASGITransport(app=rs_app)
        yield World(router, clock)


async def test_authorization_code_flow_with_dcr_and_file_store(world: World, tmp_path: Path) -> None:
    store = FileTokenStore(tmp_path / "agent" / "tokens.json")
    async with world.agent(store=store) as http:
        r = await http.post(RESOURCE + "/notes", content=b"hello")
        assert r.status_code == 200, r.text
        assert r.json()["sub"] == "dev-user" and "read" in r.json()["scopes"] and r.json()["body"] == "hello"
        assert world.router.log[:7] == [
            "POST rs.test/api/notes",
            "GET rs.test/.well-known/oauth-protected-resource/api",
            "GET 127.0.0.1:9000/.well-known/oauth-authorization-server",
            "POST 127.0.0.1:9000/register",
            "GET 127.0.0.1:9000/authorize",
            "POST 127.0.0.1:9000/token",
            "POST rs.test/api/notes",
        ]
        world.router.log.clear()
        assert (await http.get(RESOURCE + "/notes")).status_code == 200
        assert world.router.log == ["GET rs.test/api/notes"]
    q = parse_qs(urlsplit(world.urls[0]).query)
    assert q["resource"] == [RESOURCE] and q["code_challenge_method"] == ["S256"]
    assert q["scope"] == ["read offline_access"]
    reg = await store.get_client(ISSUER)
    tokens = await store.get_tokens(ISSUER, RESOURCE)
    assert reg is not None and reg.client_secret and tokens is not None and tokens.refresh_token
    assert (tmp_path / "agent" / "tokens.json").stat().st_mode & 0o777 == 0o600
    # A new process with the same file: no registration, no person, no token request.
    world.router.log.clear()
    async with world.agent(store=store) as http:
        assert (await http.get(RESOURCE + "/notes")).status_code == 200
    assert not any("/register" in e or "/authorize" in e or "/token" in e for e in world.router.log)
    assert len(world.urls) == 1


async def test_refresh_at_the_real_server(world: World, clock: FrozenClock) -> None:
    store = MemoryTokenStore()
    async with world.agent(store=store) as http:
        assert (await http.get(RESOURCE + "/notes")).status_code == 200
        first = await store.get_tokens(ISSUER, RESOURCE)
        assert first is not None and first.expires_at is not None
        clock.advance(first.expires_at - clock.now() - 5)  # inside the refresh skew
        world.router.log.clear()
        assert (await http.get(RESOURCE + "/notes")).status_code == 200
        assert world.router.log == ["POST 127.0.0.1:9000/token", "GET rs.test/api/notes"]
        second = await store.get_tokens(ISSUER, RESOURCE)
        assert second is not None and second.refresh_token != first.refresh_token  # rotated
        # The old refresh token is now refused (reuse detection); a bad one leads to a full flow.
        await store.set_tokens(ISSUER, RESOURCE, None)
    bad = TokenSet("nope", expires_at=clock.now() - 1, refresh_token="bogus", scope="read")
    await store.set_tokens(ISSUER, RESOURCE, bad)
    async with world.agent(store=store) as http:
        assert (await http.get(RESOURCE + "/notes")).status_code == 200
    assert len(world.urls) == 2


async def test_step_up_to_the_union_of_scopes(world: World) -> None:
    async with world.agent(offline_access=False) as http:
        assert (await http.get(RESOURCE + "/notes")).status_code == 200
        r = await http.get(RESOURCE + "/admin/purge")
        assert r.status_code == 200, r.text
        assert r.json()["scopes"] == ["read", "write"]
    assert parse_qs(urlsplit(world.urls[1]).query)["scope"] == ["read write"]


async def test_client_credentials_agent(world: World) -> None:
    async with world.agent(grant="client_credentials", interaction=None, client_metadata=None) as http:
        r = await http.get(RESOURCE + "/notes")
        assert r.status_code == 200, r.text
    assert not world.urls
    assert r.json()["client_id"] == r.json()["sub"]


async def test_tampered_state_and_iss_are_refused(world: World) -> None:
    def swap(name: str, value: str) -> Callable[[str], str]:
        def tamper(location: str) -> str:
            parts = urlsplit(location)
            q = {k: v[0] for k, v in parse_qs(parts.query).items()}
            q[name] = value
            return parts._replace(query=urlencode(q)).geturl()
        return tamper

    world.tamper = swap("state", "forged")
    async with world.agent() as http:
        with pytest.raises(StateMismatchError):
            await http.get(RESOURCE + "/notes")
    world.tamper = swap("iss", ISSUER + "/")
    async with world.agent() as http:
        with pytest.raises(IssMismatchError):
            await http.get(RESOURCE + "/notes")


async def test_metadata_served_by_real_server_is_accepted_as_is(world: World) -> None:
    async with httpx.AsyncClient(transport=world.router) as http:
        doc = (await http.get(ISSUER + "/.well-known/oauth-authorization-server")).json()
        prm = (await http.get(RS + "/.well-known/oauth-protected-resource/api")).json()
    assert prm["authorization_servers"] == [doc["issuer"]]
    assert json.dumps(doc["code_challenge_methods_supported"]) == '["S256"]'
