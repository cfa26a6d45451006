"""The Python examples in docs/*.md, run as they are written.

Each example is the fenced block after a ``<!-- example: NAME -->`` marker. It is executed unchanged; only the
network is faked: every ``httpx.AsyncClient`` created without a transport is routed in process by host name, so
``https://auth.example.com`` is a real authgate server (issuer ``https://auth.example.com``) over the test
store, and the example APIs are mounted under the host names the docs use.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import tomllib
from collections.abc import AsyncIterator, Callable
from dataclasses import fields
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from authgate.app import create_app
from authgate.config import Settings, load_settings
from authgate.context import ServerContext
from authgate.dcr.admin import add_static_client
from authgate.store import Store
from tests.helpers import add_user

DOCS = Path(__file__).resolve().parents[2] / "docs"
DOC_ISSUER = "https://auth.example.com"
API = "https://api.example.com"
MCP_URL = "https://mcp.example.com/mcp"
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
               "MCP-Protocol-Version": "2025-11-25"}
MCP_INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "docs", "version": "1"}}}
MCP_WHOAMI = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "whoami", "arguments": {}}}

_EXAMPLE = re.compile(r"<!-- example: ([\w-]+) -->\n```(\w+)\n(.*?)\n```", re.S)


def examples(doc: str) -> dict[str, tuple[str, str]]:
    """``{name: (language, code)}`` for every marked block of ``docs/<doc>``."""
    text = (DOCS / doc).read_text(encoding="utf-8")
    return {name: (lang, code) for name, lang, code in _EXAMPLE.findall(text)}


def example(doc: str, name: str, *, replace: dict[str, str] | None = None) -> dict[str, Any]:
    """Execute one Python example and return its namespace (``__name__`` is not ``__main__``)."""
    lang, code = examples(doc)[name]
    assert lang == "python", (doc, name, lang)
    for old, new in (replace or {}).items():
        assert old in code, (doc, name, old)
        code = code.replace(old, new)
    ns: dict[str, Any] = {"__name__": f"docs_example_{name.replace('-', '_')}"}
    exec(compile(code, f"docs/{doc}#{name}", "exec"), ns)
    return ns


class HostRouter(httpx.AsyncBaseTransport):
    """Send each request to the ASGI app mounted for its host; unknown hosts get 502."""

    def __init__(self) -> None:
        self.apps: dict[str, httpx.AsyncBaseTransport] = {}
        self.log: list[str] = []

    def mount(self, url: str, app: Any) -> None:
        self.apps[urlsplit(url).netloc] = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        netloc = request.url.netloc.decode()
        self.log.append(f"{request.method} {netloc}{request.url.path}")
        transport = self.apps.get(netloc)
        if transport is None:
            return httpx.Response(502, text=f"no app for {netloc}")
        return await transport.handle_async_request(request)


@pytest.fixture
async def doc_as(settings: Settings, make_client: Callable[..., Any]) -> ServerContext:
    """The authorization server the docs talk to, configured as docs/protecting-an-api.md says."""
    ctx, _ = await make_client(settings, issuer=DOC_ISSUER, scopes=("notes:read", "notes:write", "offline_access"),
                               default_scopes=("notes:read",))
    assert isinstance(ctx, ServerContext)
    return ctx


@pytest.fixture
def router(doc_as: ServerContext, monkeypatch: pytest.MonkeyPatch) -> HostRouter:
    router = HostRouter()
    router.mount(DOC_ISSUER, create_app(doc_as))
    real_init = httpx.AsyncClient.__init__

    def init(self: httpx.AsyncClient, *args: Any, **kwargs: Any) -> None:
        if kwargs.get("transport") is None:
            kwargs["transport"] = router
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(httpx.AsyncClient, "__init__", init)
    return router


@pytest.fixture
def get_token(doc_as: ServerContext, store: Store, router: HostRouter) -> Callable[..., Any]:
    """``await get_token(resource, scope)``: a client-credentials token from the docs' AS."""
    async def get(resource: str, scope: str) -> str:
        client = await add_static_client(store, doc_as.settings, {
            "client_name": "docs test", "grant_types": ["client_credentials"], "scope": scope})
        async with httpx.AsyncClient(base_url=DOC_ISSUER) as http:
            r = await http.post("/token", auth=(client["client_id"], client["client_secret"]),
                                data={"grant_type": "client_credentials", "scope": scope, "resource": resource})
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])

    return get


# --- docs/server.md -----------------------------------------------------------------------------------------


def test_server_toml_example_is_valid_and_complete(tmp_path: Path) -> None:
    lang, code = examples("server.md")["config"]
    assert lang == "toml"
    path = tmp_path / "authgate.toml"
    path.write_text(code, encoding="utf-8")
    settings = load_settings(path, env={})
    documented = set(tomllib.loads(code)["authgate"])
    assert documented == {f.name for f in fields(Settings)}, "every setting appears in the example"
    assert settings.issuer_url == "https://auth.example.com"


def test_server_precedence_as_documented(tmp_path: Path) -> None:
    path = tmp_path / "authgate.toml"
    path.write_text('[authgate]\nport = 9000\nregistration = "token"\n', encoding="utf-8")
    settings = load_settings(path, env={"AUTHGATE_PORT": "9001", "AUTHGATE_SCOPES": "read b,c"}, port=9002)
    assert (settings.port, settings.registration, settings.scopes) == (9002, "token", ("read", "b", "c"))


# --- docs/protecting-an-api.md ------------------------------------------------------------------------------


async def _check_notes_api(app: Any, get_token: Callable[..., Any]) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=API) as http:
        r = await http.get("/notes")
        assert r.status_code == 401
        prm_url = API + "/.well-known/oauth-protected-resource"
        assert r.headers["www-authenticate"] == f'Bearer resource_metadata="{prm_url}", scope="notes:read"'
        prm = (await http.get("/.well-known/oauth-protected-resource")).json()
        assert prm["resource"] == API and prm["authorization_servers"] == [DOC_ISSUER]
        assert prm["scopes_supported"] == ["notes:read", "notes:write"]
        assert (await http.get("/health")).status_code == 200

        read = {"Authorization": "Bearer " + await get_token(API, "notes:read")}
        r = await http.get("/notes", headers=read)
        assert r.status_code == 200, r.text
        assert r.json()["sub"]
        r = await http.post("/notes", headers=read, json={"text": "x"})
        assert r.status_code == 403
        assert 'error="insufficient_scope"' in r.headers["www-authenticate"]
        assert 'scope="notes:write"' in r.headers["www-authenticate"]
        write = {"Authorization": "Bearer " + await get_token(API, "notes:write")}
        assert (await http.post("/notes", headers=write, json={"text": "x"})).status_code == 201
        other = {"Authorization": "Bearer " + await get_token("https://other.example.com", "notes:read")}
        r = await http.get("/notes", headers=other)
        assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
        r = await http.get("/notes?access_token=abc")
        assert r.status_code == 400


async def test_middleware_example(router: HostRouter, get_token: Callable[..., Any]) -> None:
    ns = example("protecting-an-api.md", "middleware")
    await _check_notes_api(ns["app"], get_token)


async def test_fastapi_example(router: HostRouter, get_token: Callable[..., Any]) -> None:
    ns = example("protecting-an-api.md", "fastapi")
    await _check_notes_api(ns["app"], get_token)


@contextlib.asynccontextmanager
async def _mcp(ns: dict[str, Any]) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=ns["app"])
    async with ns["server"].session_manager.run(), httpx.AsyncClient(transport=transport,
                                                                       base_url="https://mcp.example.com") as http:
        yield http


@pytest.mark.parametrize("name", ["mcp-sdk-auth", "mcp-middleware"])
async def test_mcp_examples(name: str, router: HostRouter, get_token: Callable[..., Any]) -> None:
    ns = example("protecting-an-api.md", name)
    async with _mcp(ns) as http:
        r = await http.post("/mcp", headers=MCP_HEADERS, json=MCP_INIT)
        assert r.status_code == 401
        prm_url = "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
        assert f'resource_metadata="{prm_url}"' in r.headers["www-authenticate"]
        prm = (await http.get("/.well-known/oauth-protected-resource/mcp")).json()
        assert prm["resource"] == MCP_URL and prm["authorization_servers"] == [DOC_ISSUER]

        token = await get_token(MCP_URL, "notes:read")
        headers = {**MCP_HEADERS, "Authorization": f"Bearer {token}"}
        assert (await http.post("/mcp", headers=headers, json=MCP_INIT)).status_code == 200
        r = await http.post("/mcp", headers=headers, json=MCP_WHOAMI)
        assert r.status_code == 200, r.text
        assert " via " in r.json()["result"]["content"][0]["text"]

        wrong = await get_token(API, "notes:read")
        r = await http.post("/mcp", headers={**MCP_HEADERS, "Authorization": f"Bearer {wrong}"}, json=MCP_INIT)
        assert r.status_code == 401


def test_as_settings_snippet_loads(tmp_path: Path) -> None:
    lang, code = examples("protecting-an-api.md")["as-settings"]
    assert lang == "toml"
    path = tmp_path / "authgate.toml"
    path.write_text(code, encoding="utf-8")
    settings = load_settings(path, env={})
    assert "notes:write" in settings.scopes and settings.resources[1] == MCP_URL


# --- docs/agent-sdk.md --------------------------------------------------------------------------------------


@pytest.fixture
def notes_api(router: HostRouter) -> dict[str, Any]:
    """The middleware example of docs/protecting-an-api.md, served at https://api.example.com."""
    ns = example("protecting-an-api.md", "middleware")
    router.mount(API, ns["app"])
    return ns


async def test_client_credentials_example(notes_api: dict[str, Any], router: HostRouter,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    ns = example("agent-sdk.md", "client-credentials")
    await ns["main"]()
    assert "first note" in capsys.readouterr().out
    assert router.log == [
        "GET api.example.com/notes",
        "GET api.example.com/.well-known/oauth-protected-resource",
        "GET auth.example.com/.well-known/oauth-authorization-server",
        "POST auth.example.com/register",
        "POST auth.example.com/token",
        "GET api.example.com/notes",
        # the API's verifier, fetching the AS keys once while handling the retried request
        "GET auth.example.com/.well-known/oauth-authorization-server",
        "GET auth.example.com/jwks.json",
    ]
    router.log.clear()
    await ns["main"]()
    assert router.log == ["GET api.example.com/notes"]


async def test_static_client_credentials_example(notes_api: dict[str, Any], router: HostRouter, store: Store,
                                                 doc_as: ServerContext, monkeypatch: pytest.MonkeyPatch) -> None:
    client = await add_static_client(store, doc_as.settings, {
        "client_name": "report bot", "grant_types": ["client_credentials"], "scope": "notes:read"})
    monkeypatch.setenv("AGENT_CLIENT_ID", client["client_id"])
    monkeypatch.setenv("AGENT_CLIENT_SECRET", client["client_secret"])
    ns = example("agent-sdk.md", "client-credentials-static")
    async with httpx.AsyncClient(auth=ns["auth"]) as http:
        r = await http.get(API + "/notes")
    assert r.status_code == 200, r.text
    assert r.json()["client_id"] == client["client_id"]
    assert not any("/register" in line for line in router.log)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_authorization_code_example(notes_api: dict[str, Any], router: HostRouter, store: Store,
                                          monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A person signs in on the real consent page; the example's loopback listener catches the redirect."""
    await add_user(store, "alice", "correct horse")
    monkeypatch.setenv("HOME", str(tmp_path))
    opened: list[str] = []
    tasks: list[asyncio.Task[None]] = []

    async def person(url: str) -> None:
        async with httpx.AsyncClient() as browser:  # routed to the AS in process; keeps the form's cookie
            page = await browser.get(url)
            assert page.status_code == 200, page.text
            match = re.search(r'name="request_id" value="([^"]+)"', page.text)
            assert match is not None
            r = await browser.post(DOC_ISSUER + "/authorize", data={
                "request_id": match.group(1), "username": "alice", "password": "correct horse",
                "decision": "approve"})
            assert r.status_code == 303, r.text
        async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport()) as loopback:  # a real socket
            assert (await loopback.get(r.headers["location"])).status_code == 200

    def open_browser(url: str) -> bool:
        opened.append(url)
        tasks.append(asyncio.get_running_loop().create_task(person(url)))
        return True

    monkeypatch.setattr("webbrowser.open", open_browser)
    port = str(_free_port())  # the example's fixed port may be taken on a busy test machine
    ns = example("agent-sdk.md", "authorization-code", replace={"8976": port})
    await ns["main"]()
    out = capsys.readouterr().out
    assert out.startswith("201 "), out
    query = parse_qs(urlsplit(opened[0]).query)
    assert query["code_challenge_method"] == ["S256"] and query["resource"] == [API]
    assert query["scope"] == ["notes:write offline_access"]
    assert (tmp_path / ".config" / "notes-agent" / "tokens.json").stat().st_mode & 0o777 == 0o600

    # A second run with the same file: no registration, no person.
    router.log.clear()
    ns = example("agent-sdk.md", "authorization-code", replace={"8976": port})
    await ns["main"]()
    assert len(opened) == 1
    assert router.log[-1] == "POST api.example.com/notes"
    assert not any(p in line for line in router.log for p in ("/register", "/authorize", "/token"))
    await asyncio.gather(*tasks)
