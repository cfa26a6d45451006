"""OAuthAgentAuth end to end against in-memory fakes of a protected resource and an authorization server
(``httpx.MockTransport``), including the negative paths."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote_plus, urlencode, urlsplit

import httpx
import pytest

from authgate.agent import (
    AgentAuthError,
    ClientMetadata,
    ClientRegistration,
    DiscoveryError,
    InteractionRequiredError,
    IssMismatchError,
    IssuerMismatchError,
    MemoryTokenStore,
    OAuthAgentAuth,
    RegistrationError,
    StateMismatchError,
    TokenError,
    TokenSet,
    UserDeclinedError,
)

RS = "https://api.example"
AS = "https://auth.example"
RESOURCE = RS + "/mcp"
PRM_URL = RS + "/.well-known/oauth-protected-resource/mcp"
REDIRECT = "http://127.0.0.1:8976/callback"


class Fake:
    """A protected resource at ``RS`` and an authorization server at ``AS``, with knobs."""

    def __init__(self) -> None:
        self.now = 1_000_000.0
        self.log: list[httpx.Request] = []
        self.path_scopes = {"/mcp": "read", "/mcp/admin": "read admin"}
        self.prm: dict[str, Any] = {"resource": RESOURCE, "authorization_servers": [AS], "scopes_supported": ["read"]}
        self.prm_status = 200
        self.header_prm: str | None = PRM_URL
        self.metadata: dict[str, Any] = {
            "issuer": AS,
            "authorization_endpoint": AS + "/authorize",
            "token_endpoint": AS + "/token",
            "registration_endpoint": AS + "/register",
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": ["read", "write", "admin", "offline_access"],
            "authorization_response_iss_parameter_supported": True,
        }
        self.clients: dict[str, dict[str, Any]] = {}
        self.register_override: httpx.Response | None = None
        self.register_auth_method = "client_secret_basic"
        self.codes: dict[str, dict[str, Any]] = {}
        self.access: dict[str, tuple[str, float]] = {}  # token -> (scope, expires_at)
        self.refresh: dict[str, dict[str, Any]] = {}
        self.expires_in = 3600
        self.rotate = True
        self.issue_refresh = True
        self.grant_scope: Callable[[str], str] = lambda s: s
        self.token_override: httpx.Response | None = None
        self.rs_always_401 = False
        self.interactions: list[str] = []
        self.tamper: Callable[[dict[str, str]], dict[str, str]] = lambda p: p

    # ---- transport --------------------------------------------------------------------------------------

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        # Snapshot: the SDK retries with the same Request object, adding a header.
        self.log.append(
            httpx.Request(request.method, request.url, headers=request.headers.copy(), content=request.content)
        )
        url = request.url
        base = f"{url.scheme}://{url.host}"
        if base == RS:
            if url.path.startswith("/.well-known/oauth-protected-resource"):
                if url.path != "/.well-known/oauth-protected-resource/mcp":
                    return httpx.Response(404)
                return httpx.Response(self.prm_status, json=self.prm)
            return self.resource(request)
        if base == AS:
            if url.path == "/.well-known/oauth-authorization-server":
                return httpx.Response(200, json=self.metadata)
            if url.path == "/register":
                return self.register(request)
            if url.path == "/token":
                return self.token(request)
        return httpx.Response(404)

    def paths(self) -> list[str]:
        return [f"{r.method} {r.url.host}{r.url.path}" for r in self.log]

    # ---- resource server --------------------------------------------------------------------------------

    def resource(self, request: httpx.Request) -> httpx.Response:
        needed = self.path_scopes.get(request.url.path)
        if needed is None:
            return httpx.Response(200, json={"public": True})
        meta = f'resource_metadata="{self.header_prm}", ' if self.header_prm else ""
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return httpx.Response(401, headers={"WWW-Authenticate": f'Bearer {meta}scope="{needed}"'})
        entry = self.access.get(auth[7:])
        if self.rs_always_401 or entry is None or entry[1] <= self.now:
            return httpx.Response(
                401, headers={"WWW-Authenticate": f'Bearer error="invalid_token", {meta}scope="{needed}"'}
            )
        if not set(needed.split()) <= set(entry[0].split()):
            return httpx.Response(
                403,
                headers={
                    "WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{needed}", {meta}'.rstrip(", ")
                },
            )
        return httpx.Response(200, json={"ok": True, "body": request.content.decode()})

    # ---- authorization server ---------------------------------------------------------------------------

    def register(self, request: httpx.Request) -> httpx.Response:
        if self.register_override is not None:
            return self.register_override
        body = json.loads(request.content)
        client_id = "c-" + secrets.token_hex(4)
        method = body.get("token_endpoint_auth_method") or self.register_auth_method
        record = {**body, "client_id": client_id, "token_endpoint_auth_method": method}
        if method != "none":
            record["client_secret"] = "s3cret:" + secrets.token_hex(4)
            record["client_secret_expires_at"] = 0
        self.clients[client_id] = record
        return httpx.Response(201, json=record)

    def authenticate(self, request: httpx.Request, form: dict[str, str]) -> dict[str, Any] | None:
        auth = request.headers.get("authorization")
        if auth and auth.startswith("Basic "):
            cid, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
            cid, secret = unquote_plus(cid), unquote_plus(secret)
            method = "client_secret_basic"
        elif "client_secret" in form:
            cid, secret, method = form.get("client_id", ""), form["client_secret"], "client_secret_post"
        else:
            cid, secret, method = form.get("client_id", ""), None, "none"
        client = self.clients.get(cid)
        if client is None or client["token_endpoint_auth_method"] != method:
            return None
        if method != "none" and client.get("client_secret") != secret:
            return None
        if form.get("client_id", cid) != cid:
            return None
        return client

    def error(self, code: str, status: int = 400) -> httpx.Response:
        return httpx.Response(status, json={"error": code, "error_description": f"fake says {code}"})

    def issue(self, client_id: str, scope: str, resource: str, old_refresh: str | None = None) -> httpx.Response:
        at = "at-" + secrets.token_hex(8)
        self.access[at] = (scope, self.now + self.expires_in)
        body: dict[str, Any] = {
            "access_token": at,
            "token_type": "bearer",
            "expires_in": self.expires_in,
            "scope": scope,
        }
        if self.issue_refresh and (old_refresh is None or self.rotate):
            rt = "rt-" + secrets.token_hex(8)
            self.refresh[rt] = {"client_id": client_id, "scope": scope, "resource": resource}
            body["refresh_token"] = rt
            if old_refresh:
                self.refresh.pop(old_refresh, None)
        return httpx.Response(200, json=body, headers={"Cache-Control": "no-store"})

    def token(self, request: httpx.Request) -> httpx.Response:
        if self.token_override is not None:
            return self.token_override
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        client = self.authenticate(request, form)
        if client is None:
            return self.error("invalid_client", 401)
        grant = form.get("grant_type")
        if grant == "authorization_code":
            code = self.codes.pop(form.get("code", ""), None)
            if code is None or code["client_id"] != client["client_id"]:
                return self.error("invalid_grant")
            digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
            if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != code["challenge"]:
                return self.error("invalid_grant")
            if form.get("redirect_uri") != code["redirect_uri"] or form.get("resource") != code["resource"]:
                return self.error("invalid_grant")
            return self.issue(client["client_id"], code["scope"], code["resource"])
        if grant == "refresh_token":
            entry = self.refresh.get(form.get("refresh_token", ""))
            if entry is None or entry["client_id"] != client["client_id"] or form.get("resource") != entry["resource"]:
                return self.error("invalid_grant")
            return self.issue(client["client_id"], entry["scope"], entry["resource"], form["refresh_token"])
        if grant == "client_credentials":
            return self.issue(client["client_id"], self.grant_scope(form.get("scope", "")), form.get("resource", ""))
        return self.error("unsupported_grant_type")

    async def browser(self, url: str) -> str:
        """The interaction callback: a person who approves everything."""
        self.interactions.append(url)
        q = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        assert url.startswith(AS + "/authorize?")
        client = self.clients.get(q["client_id"])
        assert client is not None and q["redirect_uri"] in client["redirect_uris"]
        assert q["code_challenge_method"] == "S256" and q["response_type"] == "code"
        code = "code-" + secrets.token_hex(8)
        self.codes[code] = {
            "client_id": q["client_id"],
            "challenge": q["code_challenge"],
            "redirect_uri": q["redirect_uri"],
            "resource": q.get("resource"),
            "scope": self.grant_scope(q.get("scope", "")),
        }
        params = self.tamper({"code": code, "state": q["state"], "iss": AS})
        return q["redirect_uri"] + "?" + urlencode(params)


@pytest.fixture
def fake() -> Fake:
    return Fake()


def make(fake: Fake, **kwargs: Any) -> tuple[OAuthAgentAuth, httpx.AsyncClient]:
    kwargs.setdefault("interaction", fake.browser)
    kwargs.setdefault("client_metadata", ClientMetadata(client_name="test agent", redirect_uris=(REDIRECT,)))
    auth = OAuthAgentAuth(clock=lambda: fake.now, **kwargs)
    return auth, httpx.AsyncClient(transport=fake.transport(), auth=auth)


# ---- the happy path -----------------------------------------------------------------------------------------


async def test_authorization_code_flow_end_to_end(fake: Fake) -> None:
    _, http = make(fake)
    async with http:
        r = await http.get(RESOURCE)
    assert r.status_code == 200 and r.json()["ok"]
    assert fake.paths() == [
        "GET api.example/mcp",
        "GET api.example/.well-known/oauth-protected-resource/mcp",
        "GET auth.example/.well-known/oauth-authorization-server",
        "POST auth.example/register",
        "POST auth.example/token",
        "GET api.example/mcp",
    ]
    reg = json.loads(fake.log[3].content)
    assert reg["application_type"] == "native" and reg["client_name"] == "test agent"
    assert reg["redirect_uris"] == [REDIRECT] and reg["grant_types"] == ["authorization_code", "refresh_token"]
    assert reg["response_types"] == ["code"]
    assert set(reg["scope"].split()) == {"read", "offline_access"}
    (url,) = fake.interactions
    q = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert q["resource"] == RESOURCE and q["scope"] == "read offline_access" and q["prompt"] == "consent"
    assert len(q["state"]) >= 32
    form = {k: v[0] for k, v in parse_qs(fake.log[4].content.decode()).items()}
    assert form["grant_type"] == "authorization_code" and form["resource"] == RESOURCE
    assert 43 <= len(form["code_verifier"]) <= 128 and form["redirect_uri"] == REDIRECT
    assert "client_secret" not in form and fake.log[4].headers["authorization"].startswith("Basic ")
    assert fake.log[-1].headers["authorization"].startswith("Bearer at-")


async def test_cached_token_is_reused_and_only_sent_to_its_resource(fake: Fake) -> None:
    _, http = make(fake)
    async with http:
        await http.get(RESOURCE)
        n = len(fake.log)
        r = await http.get(RS + "/mcp")
        assert r.status_code == 200
        await http.get("https://other.example/mcp")
        await http.get(RS + "/mcpx")
    assert len(fake.interactions) == 1
    assert all("auth.example" not in p for p in fake.paths()[n:])
    other = [r for r in fake.log if r.url.host == "other.example" or r.url.path == "/mcpx"]
    assert other and all("authorization" not in r.headers for r in other)


async def test_request_body_is_replayed(fake: Fake) -> None:
    _, http = make(fake)
    async with http:
        r = await http.post(RESOURCE, content=b'{"jsonrpc": "2.0"}')
    assert r.json()["body"] == '{"jsonrpc": "2.0"}'
    first, last = fake.log[0], fake.log[-1]
    assert first.content == last.content == b'{"jsonrpc": "2.0"}'


async def test_registration_is_stored_and_reused(fake: Fake) -> None:
    store = MemoryTokenStore()
    _, http = make(fake, store=store)
    async with http:
        await http.get(RESOURCE)
    reg = await store.get_client(AS)
    assert reg is not None and reg.issuer == AS and reg.client_secret
    assert "s3cret" not in repr(reg)
    tokens = await store.get_tokens(AS, RESOURCE)
    assert tokens is not None and "at-" not in repr(tokens)
    # A new agent with the same store: no new registration and no new interaction (stored token).
    fake.log.clear()
    _, http2 = make(fake, store=store)
    async with http2:
        r = await http2.get(RESOURCE)
    assert r.status_code == 200
    assert "POST auth.example/register" not in fake.paths() and len(fake.interactions) == 1


async def test_preconfigured_client_secret_basic_is_form_encoded(fake: Fake) -> None:
    fake.clients["my id"] = {
        "client_id": "my id",
        "client_secret": "p@ss:wörd+/",
        "token_endpoint_auth_method": "client_secret_basic",
        "redirect_uris": [REDIRECT],
    }
    client = ClientRegistration("my id", "p@ss:wörd+/", "client_secret_basic", issuer=AS)
    _, http = make(fake, client=client)
    async with http:
        r = await http.get(RESOURCE)
    assert r.status_code == 200
    assert "POST auth.example/register" not in fake.paths()
    token_req = next(r for r in fake.log if r.url.path == "/token")
    raw = base64.b64decode(token_req.headers["authorization"][6:]).decode()
    assert raw == "my+id:p%40ss%3Aw%C3%B6rd%2B%2F"


async def test_preconfigured_client_for_another_issuer_is_ignored(fake: Fake) -> None:
    client = ClientRegistration("x", "y", "client_secret_basic", issuer="https://elsewhere.example")
    _, http = make(fake, client=client)
    async with http:
        assert (await http.get(RESOURCE)).status_code == 200
    assert "POST auth.example/register" in fake.paths()


async def test_client_secret_post(fake: Fake) -> None:
    meta = ClientMetadata(redirect_uris=(REDIRECT,), token_endpoint_auth_method="client_secret_post")
    _, http = make(fake, client_metadata=meta)
    async with http:
        assert (await http.get(RESOURCE)).status_code == 200
    token_req = next(r for r in fake.log if r.url.path == "/token")
    assert "authorization" not in token_req.headers
    assert "client_secret" in parse_qs(token_req.content.decode())


async def test_public_client_none(fake: Fake) -> None:
    fake.register_auth_method = "none"
    _, http = make(fake)
    async with http:
        assert (await http.get(RESOURCE)).status_code == 200
    token_req = next(r for r in fake.log if r.url.path == "/token")
    assert "authorization" not in token_req.headers
    form = parse_qs(token_req.content.decode())
    assert "client_secret" not in form and form["client_id"]


async def test_client_credentials_needs_no_person(fake: Fake) -> None:
    _, http = make(fake, grant="client_credentials", interaction=None, client_metadata=None)
    async with http:
        r = await http.get(RESOURCE)
    assert r.status_code == 200 and not fake.interactions
    reg = json.loads(next(r for r in fake.log if r.url.path == "/register").content)
    assert reg["grant_types"] == ["client_credentials"] and "redirect_uris" not in reg
    form = {k: v[0] for k, v in parse_qs(next(r for r in fake.log if r.url.path == "/token").content.decode()).items()}
    assert form["grant_type"] == "client_credentials" and form["resource"] == RESOURCE and form["scope"] == "read"


async def test_scope_falls_back_to_prm_scopes_then_omitted(fake: Fake) -> None:
    fake.path_scopes["/mcp"] = ""  # challenge without scope -> PRM scopes_supported
    fake.prm["scopes_supported"] = ["read", "write"]

    def resource(request: httpx.Request) -> httpx.Response:
        if "authorization" not in request.headers:
            return httpx.Response(401, headers={"WWW-Authenticate": "Bearer"})
        return httpx.Response(200)

    fake.resource = resource  # type: ignore[method-assign]
    _, http = make(fake, offline_access=False)
    async with http:
        assert (await http.get(RESOURCE)).status_code == 200
    q = parse_qs(urlsplit(fake.interactions[0]).query)
    assert q["scope"] == ["read write"]
    # No scopes anywhere: the parameter is omitted.
    fake2 = Fake()
    fake2.resource = resource  # type: ignore[method-assign]
    del fake2.prm["scopes_supported"]
    _, http = make(fake2, offline_access=False)
    async with http:
        assert (await http.get(RESOURCE)).status_code == 200
    assert "scope" not in parse_qs(urlsplit(fake2.interactions[0]).query)


async def test_well_known_prm_when_header_has_none(fake: Fake) -> None:
    fake.header_prm = None
    _, http = make(fake)
    async with http:
        assert (await http.get(RESOURCE)).status_code == 200
    assert fake.paths()[1] == "GET api.example/.well-known/oauth-protected-resource/mcp"


async def test_prm_header_404_falls_back_to_well_known(fake: Fake) -> None:
    fake.header_prm = RS + "/.well-known/oauth-protected-resource/elsewhere"
    _, http = make(fake)
    async with http:
        assert (await http.get(RESOURCE)).status_code == 200
    assert fake.paths()[1:3] == [
        "GET api.example/.well-known/oauth-protected-resource/elsewhere",
        "GET api.example/.well-known/oauth-protected-resource/mcp",
    ]


# ---- refresh ------------------------------------------------------------------------------------------------


async def test_proactive_refresh_within_skew_sends_resource_and_rotates(fake: Fake) -> None:
    store = MemoryTokenStore()
    _, http = make(fake, store=store)
    async with http:
        await http.get(RESOURCE)
        before = await store.get_tokens(AS, RESOURCE)
        fake.now += fake.expires_in - 10  # inside the 30 s skew
        fake.log.clear()
        r = await http.get(RESOURCE)
    assert r.status_code == 200
    assert fake.paths() == ["POST auth.example/token", "GET api.example/mcp"]
    form = {k: v[0] for k, v in parse_qs(fake.log[0].content.decode()).items()}
    assert form["grant_type"] == "refresh_token" and form["resource"] == RESOURCE
    after = await store.get_tokens(AS, RESOURCE)
    assert before and after and after.refresh_token != before.refresh_token
    assert len(fake.interactions) == 1


async def test_refresh_token_carried_forward_when_not_rotated(fake: Fake) -> None:
    fake.rotate = False
    store = MemoryTokenStore()
    _, http = make(fake, store=store)
    async with http:
        await http.get(RESOURCE)
        first = await store.get_tokens(AS, RESOURCE)
        fake.now += fake.expires_in + 1
        assert (await http.get(RESOURCE)).status_code == 200
        second = await store.get_tokens(AS, RESOURCE)
    assert first and second and second.refresh_token == first.refresh_token
    assert second.access_token != first.access_token


async def test_refresh_failure_drops_tokens_and_redoes_full_flow(fake: Fake) -> None:
    _, http = make(fake)
    async with http:
        await http.get(RESOURCE)
        fake.refresh.clear()  # the AS forgot every refresh token
        fake.now += fake.expires_in + 1
        r = await http.get(RESOURCE)
    assert r.status_code == 200
    assert len(fake.interactions) == 2


async def test_rejected_token_is_refreshed_before_a_full_flow(fake: Fake) -> None:
    _, http = make(fake)
    async with http:
        await http.get(RESOURCE)
        fake.access.clear()  # the RS no longer knows the token (revoked)
        fake.log.clear()
        r = await http.get(RESOURCE)
    assert r.status_code == 200 and len(fake.interactions) == 1
    assert "POST auth.example/token" in fake.paths()


async def test_expired_token_without_refresh_is_not_sent(fake: Fake) -> None:
    fake.issue_refresh = False
    _, http = make(fake)
    async with http:
        await http.get(RESOURCE)
        fake.now += fake.expires_in + 1
        fake.log.clear()
        assert (await http.get(RESOURCE)).status_code == 200
    assert "authorization" not in fake.log[0].headers
    assert len(fake.interactions) == 2


# ---- step-up and loop guards ----------------------------------------------------------------------------


async def test_step_up_requests_the_union_of_scopes(fake: Fake) -> None:
    _, http = make(fake, offline_access=False)
    async with http:
        await http.get(RESOURCE)
        r = await http.get(RESOURCE + "/admin")
    assert r.status_code == 200
    assert len(fake.interactions) == 2
    q = parse_qs(urlsplit(fake.interactions[1]).query)
    assert q["scope"] == ["read admin"]


async def test_step_up_is_bounded(fake: Fake) -> None:
    fake.grant_scope = lambda s: "read"  # the AS never grants more
    _, http = make(fake, offline_access=False, max_step_ups=3)
    async with http:
        await http.get(RESOURCE)
        r = await http.get(RESOURCE + "/admin")
    assert r.status_code == 403
    # One step-up asking for "read admin"; asking for the same scope again would loop, so it stops.
    assert len(fake.interactions) == 2


async def test_step_up_limit(fake: Fake) -> None:
    counter = iter(range(100))

    def resource(request: httpx.Request) -> httpx.Response:
        if "authorization" not in request.headers:
            return httpx.Response(401, headers={"WWW-Authenticate": f'Bearer resource_metadata="{PRM_URL}"'})
        n = next(counter)
        return httpx.Response(403, headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="s{n}"'})

    fake.resource = resource  # type: ignore[method-assign]
    _, http = make(fake, offline_access=False, max_step_ups=2)
    async with http:
        r = await http.get(RESOURCE)
    assert r.status_code == 403
    assert len(fake.interactions) == 3  # initial + 2 step-ups


async def test_persistent_401_runs_one_full_flow_only(fake: Fake) -> None:
    fake.rs_always_401 = True
    _, http = make(fake)
    async with http:
        r = await http.get(RESOURCE)
        assert r.status_code == 401
        assert len(fake.interactions) == 1
        fake.log.clear()
        r = await http.get(RESOURCE)
    assert r.status_code == 401
    # Second request: refresh once (cheap), then one full flow, then give up.
    assert len(fake.interactions) == 2
    assert sum(p == "GET api.example/mcp" for p in fake.paths()) == 3


async def test_other_auth_schemes_are_left_alone(fake: Fake) -> None:
    fake.resource = lambda request: httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="x"'})  # type: ignore[method-assign]
    _, http = make(fake)
    async with http:
        r = await http.get(RESOURCE)
    assert r.status_code == 401 and len(fake.log) == 1


async def test_concurrent_requests_share_one_flow(fake: Fake) -> None:
    _, http = make(fake)
    async with http:
        results = await asyncio.gather(*(http.get(RESOURCE) for _ in range(5)))
    assert all(r.status_code == 200 for r in results)
    assert len(fake.interactions) == 1
    assert sum(p == "POST auth.example/register" for p in fake.paths()) == 1


# ---- negative cases -----------------------------------------------------------------------------------------


async def expect(fake: Fake, exc: type[AgentAuthError], **kwargs: Any) -> AgentAuthError:
    _, http = make(fake, **kwargs)
    async with http:
        with pytest.raises(exc) as info:
            await http.get(RESOURCE)
    return info.value


async def test_issuer_mismatch(fake: Fake) -> None:
    fake.metadata["issuer"] = AS + "/"
    await expect(fake, IssuerMismatchError)


async def test_missing_s256_refused(fake: Fake) -> None:
    del fake.metadata["code_challenge_methods_supported"]
    err = await expect(fake, DiscoveryError)
    assert "S256" in str(err) and not fake.interactions


async def test_plain_only_pkce_refused(fake: Fake) -> None:
    fake.metadata["code_challenge_methods_supported"] = ["plain"]
    await expect(fake, DiscoveryError)


async def test_insecure_token_endpoint_refused(fake: Fake) -> None:
    fake.metadata["token_endpoint"] = "http://auth.example/token"
    await expect(fake, DiscoveryError)


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_prm_server_errors_stop_discovery(fake: Fake, status: int) -> None:
    fake.prm_status = status
    err = await expect(fake, DiscoveryError)
    assert err.status_code == status
    assert fake.paths()[-1] == "GET api.example/.well-known/oauth-protected-resource/mcp"
    assert len(fake.log) == 2  # no fallback to the root form


async def test_prm_resource_must_cover_the_url(fake: Fake) -> None:
    fake.prm["resource"] = "https://evil.example/mcp"
    await expect(fake, DiscoveryError)
    fake2 = Fake()
    fake2.prm["resource"] = RS + "/other"
    await expect(fake2, DiscoveryError)


async def test_no_prm_anywhere(fake: Fake) -> None:
    fake.header_prm = None
    fake.prm_status = 404
    await expect(fake, DiscoveryError)
    assert fake.paths()[1:] == [
        "GET api.example/.well-known/oauth-protected-resource/mcp",
        "GET api.example/.well-known/oauth-protected-resource",
    ]


async def test_state_mismatch(fake: Fake) -> None:
    fake.tamper = lambda p: {**p, "state": "forged"}
    await expect(fake, StateMismatchError)
    assert not any(r.url.path == "/token" for r in fake.log)


async def test_missing_state(fake: Fake) -> None:
    fake.tamper = lambda p: {k: v for k, v in p.items() if k != "state"}
    await expect(fake, StateMismatchError)


async def test_iss_mismatch(fake: Fake) -> None:
    fake.tamper = lambda p: {**p, "iss": "https://evil.example"}
    await expect(fake, IssMismatchError)


async def test_iss_missing_but_advertised(fake: Fake) -> None:
    fake.tamper = lambda p: {k: v for k, v in p.items() if k != "iss"}
    await expect(fake, IssMismatchError)


async def test_iss_checked_even_when_not_advertised(fake: Fake) -> None:
    fake.metadata["authorization_response_iss_parameter_supported"] = False
    fake.tamper = lambda p: {**p, "iss": AS + "/"}
    await expect(fake, IssMismatchError)
    fake2 = Fake()
    fake2.metadata.pop("authorization_response_iss_parameter_supported")
    fake2.tamper = lambda p: {k: v for k, v in p.items() if k != "iss"}
    _, http = make(fake2)
    async with http:
        assert (await http.get(RESOURCE)).status_code == 200


async def test_user_declined(fake: Fake) -> None:
    fake.tamper = lambda p: {"error": "access_denied", "error_description": "no", "state": p["state"], "iss": AS}
    err = await expect(fake, UserDeclinedError)
    assert err.error == "access_denied" and err.error_description == "no"


async def test_no_interaction_configured(fake: Fake) -> None:
    await expect(fake, InteractionRequiredError, interaction=None)


async def test_registration_refused_carries_the_error(fake: Fake) -> None:
    fake.register_override = httpx.Response(
        400, json={"error": "invalid_redirect_uri", "error_description": "loopback only"}
    )
    err = await expect(fake, RegistrationError)
    assert err.error == "invalid_redirect_uri" and err.status_code == 400
    assert "loopback only" in str(err)


@pytest.mark.parametrize(
    "body",
    [
        {"client_id": "x", "token_endpoint_auth_method": "private_key_jwt"},
        {"client_id": "x", "token_endpoint_auth_method": "client_secret_basic"},
        {"client_id": "x"},  # RFC 7591 default is client_secret_basic: needs a secret
        {"token_endpoint_auth_method": "none"},
    ],
)
async def test_unusable_registration(fake: Fake, body: dict[str, Any]) -> None:
    fake.register_override = httpx.Response(201, json=body)
    await expect(fake, RegistrationError)


async def test_registration_accepts_200(fake: Fake) -> None:
    fake.register_override = httpx.Response(200, json={"client_id": "pub", "token_endpoint_auth_method": "none"})
    fake.clients["pub"] = {"client_id": "pub", "token_endpoint_auth_method": "none", "redirect_uris": [REDIRECT]}
    _, http = make(fake)
    async with http:
        assert (await http.get(RESOURCE)).status_code == 200


async def test_no_registration_endpoint(fake: Fake) -> None:
    del fake.metadata["registration_endpoint"]
    await expect(fake, RegistrationError)


@pytest.mark.parametrize(
    ("response", "code"),
    [
        (httpx.Response(400, json={"error": "invalid_grant", "error_description": "used"}), "invalid_grant"),
        (httpx.Response(200, json={"access_token": "a", "token_type": "DPoP"}), None),
        (httpx.Response(200, json={"token_type": "Bearer"}), None),
        (httpx.Response(200, text="<html>"), None),
    ],
)
async def test_token_refused_or_unusable(fake: Fake, response: httpx.Response, code: str | None) -> None:
    fake.token_override = response
    err = await expect(fake, TokenError)
    assert err.error == code


async def test_invalid_client_drops_stored_registration(fake: Fake) -> None:
    store = MemoryTokenStore()
    await store.set_client(
        AS, ClientRegistration("gone", "s", "client_secret_basic", issuer=AS, redirect_uris=(REDIRECT,))
    )
    fake.clients["gone"] = {
        "client_id": "gone",
        "client_secret": "s",
        "token_endpoint_auth_method": "client_secret_basic",
        "redirect_uris": [REDIRECT],
    }
    fake.token_override = httpx.Response(401, json={"error": "invalid_client"})
    err = await expect(fake, TokenError, store=store)
    assert err.error == "invalid_client"
    assert await store.get_client(AS) is None


async def test_stored_registration_with_expired_secret_is_replaced(fake: Fake) -> None:
    store = MemoryTokenStore()
    await store.set_client(
        AS, ClientRegistration("old", "s", "client_secret_basic", issuer=AS, client_secret_expires_at=10)
    )
    _, http = make(fake, store=store)
    async with http:
        assert (await http.get(RESOURCE)).status_code == 200
    reg = await store.get_client(AS)
    assert reg is not None and reg.client_id != "old"


async def test_secrets_never_in_errors_or_logs(fake: Fake, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="authgate.agent")
    fake.token_override = httpx.Response(400, json={"error": "invalid_grant", "error_description": "x\nforged log"})
    err = await expect(fake, TokenError)
    assert "\n" not in str(err)
    secrets_seen = [c["client_secret"] for c in fake.clients.values()]
    for text in [str(err), caplog.text]:
        assert not any(s in text for s in secrets_seen)
        assert "code-" not in text


def test_sync_use_is_refused(fake: Fake) -> None:
    auth = OAuthAgentAuth(interaction=fake.browser)
    with httpx.Client(transport=fake.transport(), auth=auth) as http, pytest.raises(TypeError, match="async"):
        http.get(RESOURCE)


def test_constructor_checks() -> None:
    with pytest.raises(ValueError):
        OAuthAgentAuth(grant="password")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        OAuthAgentAuth(client_metadata=ClientMetadata(redirect_uris=()))


async def test_cross_origin_redirect_of_metadata_is_not_followed(fake: Fake) -> None:
    original = fake.handle

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/oauth-authorization-server":
            fake.log.append(request)
            return httpx.Response(302, headers={"Location": "https://evil.example/meta"})
        return original(request)

    auth = OAuthAgentAuth(interaction=fake.browser, clock=lambda: fake.now)
    async with httpx.AsyncClient(transport=httpx.MockTransport(handle), auth=auth, follow_redirects=True) as http:
        with pytest.raises(DiscoveryError):
            await http.get(RESOURCE)


async def test_stored_token_from_earlier_run_is_used_without_flow(fake: Fake) -> None:
    store = MemoryTokenStore()
    fake.access["at-stored"] = ("read", fake.now + 100)
    await store.set_client(
        AS, ClientRegistration("c", "s", "client_secret_basic", issuer=AS, redirect_uris=(REDIRECT,))
    )
    await store.set_tokens(AS, RESOURCE, TokenSet("at-stored", expires_at=fake.now + 100, scope="read"))
    _, http = make(fake, store=store)
    async with http:
        r = await http.get(RESOURCE)
    assert r.status_code == 200 and not fake.interactions
    assert fake.log[-1].headers["authorization"] == "Bearer at-stored"
