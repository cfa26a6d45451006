"""authgate.resource end to end: a protected Starlette/FastAPI app verifying tokens minted by our AS.

Both hops are in-process: the protected app through ``ASGITransport`` and the verifier's JWKS fetches
through a counting wrapper around the AS app's transport.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from authgate.app import create_app
from authgate.clock import FrozenClock
from authgate.context import ServerContext
from authgate.resource import (
    AccessClaims,
    AuthGateMiddleware,
    JWTVerifier,
    ProtectedResource,
    RequireScopes,
    claims_of,
    install,
    protect,
    public,
)
from tests.conftest import ISSUER

RS = "http://rs.test"
RESOURCE = RS + "/api"
PRM_URL = RS + "/.well-known/oauth-protected-resource/api"
REFETCH = 30.0


class CountingTransport(httpx.AsyncBaseTransport):
    """Delegates to the AS app and records the paths fetched; ``delay`` widens race windows."""

    def __init__(self, inner: httpx.AsyncBaseTransport, delay: float = 0.0) -> None:
        self.inner = inner
        self.delay = delay
        self.paths: list[str] = []
        self.fail = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            return httpx.Response(500)
        return await self.inner.handle_async_request(request)

    def jwks_fetches(self) -> int:
        return self.paths.count("/jwks.json")


@pytest.fixture
def as_transport(ctx: ServerContext) -> CountingTransport:
    return CountingTransport(httpx.ASGITransport(app=create_app(ctx)), delay=0.01)


@pytest.fixture
async def as_http(as_transport: CountingTransport) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=as_transport) as http:
        yield http


@pytest.fixture
def resource() -> ProtectedResource:
    return ProtectedResource(
        resource=RESOURCE, authorization_servers=[ISSUER], scopes_supported=["notes:read", "notes:write",
                                                                              "offline_access"],
        resource_name="Notes API",
    )


@pytest.fixture
def verifier(as_http: httpx.AsyncClient, clock: FrozenClock) -> JWTVerifier:
    return JWTVerifier(ISSUER, RESOURCE, jwks_uri=ISSUER + "/jwks.json", http_client=as_http, clock=clock,
                       leeway=10, refetch_interval=REFETCH)


async def _whoami(request: Request) -> JSONResponse:
    claims = claims_of(request)
    assert claims is not None
    return JSONResponse({"sub": claims.subject, "scopes": sorted(claims.scopes), "client_id": claims.client_id})


async def _health(_: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


def protected_app(verifier: JWTVerifier, resource: ProtectedResource) -> AuthGateMiddleware:
    app = Starlette(routes=[
        Route("/health", _health),
        Route("/api/notes", _whoami, methods=["GET", "POST"]),
        Route("/api/notes/{id}", _whoami, methods=["GET", "DELETE"]),
        Route("/api/admin/purge", _whoami, methods=["POST"]),
        Route("/api/notes-admin", _whoami),
    ])
    return AuthGateMiddleware(app, verifier, resource, rules=[
        public("/health"),
        protect("/api/notes/*", "notes:read", methods={"GET"}),
        protect("/api/notes/*", "notes:read", "notes:write"),
        ("/api/admin/*", None, ["notes:read", "notes:admin"]),
    ])


@pytest.fixture
async def rs(verifier: JWTVerifier, resource: ProtectedResource) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=protected_app(verifier, resource))
    async with httpx.AsyncClient(transport=transport, base_url=RS) as http:
        yield http


@pytest.fixture
def mint(ctx: ServerContext, clock: FrozenClock) -> Callable[..., Any]:
    async def make(typ: str = "at+jwt", **overrides: Any) -> str:
        now = int(clock.now())
        claims: dict[str, Any] = {
            "iss": ISSUER, "sub": "alice", "aud": RESOURCE, "client_id": "client-1", "scope": "notes:read",
            "iat": now, "nbf": now, "exp": now + 300, "jti": secrets.token_urlsafe(8),
        }
        claims.update(overrides)
        return await ctx.keys.sign({k: v for k, v in claims.items() if v is not None}, typ=typ)

    return make


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def assert_invalid_token(r: httpx.Response) -> None:
    assert r.status_code == 401, r.text
    assert r.json() == {"error": "invalid_token", "error_description": "The access token is invalid"}
    challenge = r.headers["www-authenticate"]
    assert challenge.startswith('Bearer error="invalid_token"')
    assert f'resource_metadata="{PRM_URL}"' in challenge


# --- metadata ----------------------------------------------------------------------------------------------


async def test_prm_path_insertion_and_byte_exact_issuer(rs: httpx.AsyncClient) -> None:
    r = await rs.get("/.well-known/oauth-protected-resource/api")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    doc = r.json()
    assert doc == {
        "resource": RESOURCE,
        "authorization_servers": [ISSUER],
        "bearer_methods_supported": ["header"],
        "scopes_supported": ["notes:read", "notes:write"],
        "resource_name": "Notes API",
    }
    assert f'"authorization_servers": ["{ISSUER}"]'.encode() in r.content  # no trailing slash added
    assert (await rs.get("/.well-known/oauth-protected-resource")).status_code == 401  # not the root form
    assert (await rs.post("/.well-known/oauth-protected-resource/api")).status_code == 405


async def test_prm_root_resource(verifier: JWTVerifier, as_http: httpx.AsyncClient, clock: FrozenClock) -> None:
    root = ProtectedResource(resource="HTTP://RS.test/", authorization_servers=[ISSUER + "/"])
    v = JWTVerifier(ISSUER, RS, jwks_uri=ISSUER + "/jwks.json", http_client=as_http, clock=clock)
    app = AuthGateMiddleware(Starlette(), v, root)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=RS) as http:
        r = await http.get("/.well-known/oauth-protected-resource")
        assert r.status_code == 200
        assert r.json()["resource"] == RS
        assert r.json()["authorization_servers"] == [ISSUER + "/"]  # exactly as configured
        r = await http.get("/anything")
        assert r.headers["www-authenticate"] == 'Bearer resource_metadata="http://rs.test/.well-known/oauth-protected-resource"'


# --- challenges ----------------------------------------------------------------------------------------------


async def test_missing_token_challenge_has_no_error(rs: httpx.AsyncClient, as_transport: CountingTransport) -> None:
    r = await rs.get("/api/notes")
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == f'Bearer resource_metadata="{PRM_URL}", scope="notes:read"'
    assert r.json()["error"] == "invalid_token"
    assert r.headers["cache-control"] == "no-store"
    assert as_transport.paths == []  # nothing to verify, nothing fetched
    # a rule without scopes names the resource's baseline scopes, never offline_access
    r = await rs.get("/api/unlisted")
    assert r.headers["www-authenticate"] == f'Bearer resource_metadata="{PRM_URL}", scope="notes:read notes:write"'


async def test_public_and_segment_boundaries(rs: httpx.AsyncClient) -> None:
    assert (await rs.get("/health")).status_code == 200
    r = await rs.get("/api/notes-admin")  # not under /api/notes/*: falls to the unmatched default
    assert r.status_code == 401
    assert 'scope="notes:read notes:write"' in r.headers["www-authenticate"]


@pytest.mark.parametrize("header", ["Bearer", "Bearer a b", "Bearer ä", "Bearer a,b"])
async def test_malformed_authorization_is_400(rs: httpx.AsyncClient, header: str) -> None:
    r = await rs.get("/api/notes", headers={b"Authorization": header.encode()})
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_request"
    assert r.headers["www-authenticate"].startswith('Bearer error="invalid_request"')


async def test_two_authorization_headers_are_400(rs: httpx.AsyncClient, mint: Callable[..., Any]) -> None:
    token = await mint()
    r = await rs.get("/api/notes", headers=[("Authorization", f"Bearer {token}"), ("Authorization", "Bearer x")])
    assert r.status_code == 400


async def test_other_scheme_is_treated_as_no_token(rs: httpx.AsyncClient) -> None:
    r = await rs.get("/api/notes", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert r.status_code == 401
    assert "error=" not in r.headers["www-authenticate"]


async def test_token_in_query_string_is_refused(rs: httpx.AsyncClient, mint: Callable[..., Any]) -> None:
    token = await mint()
    r = await rs.get("/api/notes", params={"access_token": token})
    assert r.status_code == 400
    r = await rs.get("/api/notes", params={"access_token": token}, headers=bearer(token))
    assert r.status_code == 400


# --- valid tokens and scopes ---------------------------------------------------------------------------------


async def test_valid_token_reaches_the_app(rs: httpx.AsyncClient, mint: Callable[..., Any]) -> None:
    r = await rs.get("/api/notes/7", headers=bearer(await mint()))
    assert r.status_code == 200
    assert r.json() == {"sub": "alice", "scopes": ["notes:read"], "client_id": "client-1"}
    r = await rs.get("/api/notes", headers={"Authorization": f"bEaReR {await mint()}"})  # scheme is case-insensitive
    assert r.status_code == 200


async def test_insufficient_scope_is_403_naming_every_needed_scope(
    rs: httpx.AsyncClient, mint: Callable[..., Any]
) -> None:
    token = await mint(scope="notes:read")
    r = await rs.post("/api/admin/purge", headers=bearer(token))
    assert r.status_code == 403
    assert r.json()["error"] == "insufficient_scope"
    assert r.headers["www-authenticate"] == (
        'Bearer error="insufficient_scope", error_description="The access token lacks a required scope", '
        f'resource_metadata="{PRM_URL}", scope="notes:read notes:admin"'
    )
    r = await rs.delete("/api/notes/1", headers=bearer(token))  # method-specific rule
    assert r.status_code == 403
    assert 'scope="notes:read notes:write"' in r.headers["www-authenticate"]
    r = await rs.delete("/api/notes/1", headers=bearer(await mint(scope="notes:write notes:read")))
    assert r.status_code == 200


# --- refused tokens ------------------------------------------------------------------------------------------


async def test_wrong_claims_are_401(
    rs: httpx.AsyncClient, mint: Callable[..., Any], clock: FrozenClock, caplog: pytest.LogCaptureFixture
) -> None:
    now = int(clock.now())
    cases = {
        "wrong_issuer": await mint(iss=ISSUER + "/"),
        "wrong_audience": await mint(aud=RS + "/api2"),
        "expired": await mint(iat=now - 600, nbf=now - 600, exp=now - 11),
        "not_yet_valid": await mint(nbf=now + 60),
        "missing_claim": await mint(client_id=None),
    }
    for reason, token in cases.items():
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="authgate.resource"):
            r = await rs.get("/api/notes", headers=bearer(token))
        assert_invalid_token(r)
        assert reason in caplog.text
        assert reason not in r.text  # the reason is logged, not told


async def test_leeway_and_audience_forms(rs: httpx.AsyncClient, mint: Callable[..., Any], clock: FrozenClock) -> None:
    now = int(clock.now())
    for token in (
        await mint(exp=now - 5),  # within the 10 s leeway
        await mint(nbf=now + 5),
        await mint(aud="HTTP://RS.TEST:80/api/"),  # canonical comparison
        await mint(aud=["http://other.test", RESOURCE]),
    ):
        assert (await rs.get("/api/notes", headers=bearer(token))).status_code == 200
    assert_invalid_token(await rs.get("/api/notes", headers=bearer(await mint(aud=RESOURCE + "/x"))))
    assert_invalid_token(await rs.get("/api/notes", headers=bearer(await mint(aud=["http://other.test"]))))


async def test_id_token_shaped_jwt_is_refused(rs: httpx.AsyncClient, mint: Callable[..., Any]) -> None:
    id_token = await mint(typ="JWT", aud=RESOURCE, nonce="n")  # everything right except typ
    assert_invalid_token(await rs.get("/api/notes", headers=bearer(id_token)))
    ok = await mint(typ="application/at+jwt")
    assert (await rs.get("/api/notes", headers=bearer(ok))).status_code == 200


async def test_alg_none_and_hs256_are_refused(
    rs: httpx.AsyncClient, mint: Callable[..., Any], ctx: ServerContext, as_transport: CountingTransport
) -> None:
    good = await mint()
    header = json.loads(base64.urlsafe_b64decode(good.split(".")[0] + "=="))
    payload = good.split(".")[1]
    none_token = f"{b64({**header, 'alg': 'none'})}.{payload}.c2ln"
    assert_invalid_token(await rs.get("/api/notes", headers=bearer(none_token)))
    # HS256 keyed with the AS public key (the classic algorithm-confusion attack)
    public_jwk = json.dumps((await ctx.keys.jwks())["keys"][0]).encode()
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    hs = jwt.encode({**header, "alg": "HS256"}, claims, OctKey.import_key(public_jwk), algorithms=["HS256"])
    assert_invalid_token(await rs.get("/api/notes", headers=bearer(hs)))
    assert as_transport.jwks_fetches() == 0  # refused on the header alone


async def test_wrong_signature_is_401(rs: httpx.AsyncClient, mint: Callable[..., Any]) -> None:
    good = await mint()
    header = json.loads(base64.urlsafe_b64decode(good.split(".")[0] + "=="))
    claims = json.loads(base64.urlsafe_b64decode(good.split(".")[1] + "=="))
    forged = jwt.encode(header, claims, ECKey.generate_key("P-256", private=True))  # same kid, other key
    assert_invalid_token(await rs.get("/api/notes", headers=bearer(forged)))
    tampered = good.rsplit(".", 1)[0] + "." + b64({"x": 1})  # garbage signature bytes
    assert_invalid_token(await rs.get("/api/notes", headers=bearer(tampered)))


# --- JWKS cache -----------------------------------------------------------------------------------------------


def forge_with_kid(good: str, kid: str) -> str:
    header = json.loads(base64.urlsafe_b64decode(good.split(".")[0] + "=="))
    claims = json.loads(base64.urlsafe_b64decode(good.split(".")[1] + "=="))
    return jwt.encode({**header, "kid": kid}, claims, ECKey.generate_key("P-256", private=True))


async def test_unknown_kid_refetches_once_then_rate_limited(
    rs: httpx.AsyncClient, mint: Callable[..., Any], as_transport: CountingTransport, clock: FrozenClock
) -> None:
    good = await mint()
    assert (await rs.get("/api/notes", headers=bearer(good))).status_code == 200
    assert as_transport.jwks_fetches() == 1
    for _ in range(3):  # cache hits: no fetch
        assert (await rs.get("/api/notes", headers=bearer(good))).status_code == 200
    assert as_transport.jwks_fetches() == 1

    assert_invalid_token(await rs.get("/api/notes", headers=bearer(forge_with_kid(good, "nope-1"))))
    assert as_transport.jwks_fetches() == 2  # one refetch for the unknown kid
    for i in range(5):
        assert_invalid_token(await rs.get("/api/notes", headers=bearer(forge_with_kid(good, f"nope-x{i}"))))
    assert as_transport.jwks_fetches() == 2  # rate limited

    clock.advance(REFETCH + 1)
    assert_invalid_token(await rs.get("/api/notes", headers=bearer(forge_with_kid(good, "nope-2"))))
    assert as_transport.jwks_fetches() == 3


async def test_concurrent_unknown_kids_share_one_fetch(
    rs: httpx.AsyncClient, mint: Callable[..., Any], as_transport: CountingTransport
) -> None:
    good = await mint()
    forged = [forge_with_kid(good, f"k{i}") for i in range(10)]
    results = await asyncio.gather(*(rs.get("/api/notes", headers=bearer(t)) for t in [good, *forged]))
    assert results[0].status_code == 200
    assert all(r.status_code == 401 for r in results[1:])
    assert as_transport.jwks_fetches() == 2  # initial load + one coalesced refetch


async def test_key_rotation_both_keys_verify(
    rs: httpx.AsyncClient, mint: Callable[..., Any], ctx: ServerContext, as_transport: CountingTransport,
    clock: FrozenClock,
) -> None:
    old = await mint()
    assert (await rs.get("/api/notes", headers=bearer(old))).status_code == 200
    new_kid = await ctx.keys.rotate(keep_old_for=3600)
    clock.advance(1)
    new = await mint()
    assert json.loads(base64.urlsafe_b64decode(new.split(".")[0] + "=="))["kid"] == new_kid
    assert (await rs.get("/api/notes", headers=bearer(new))).status_code == 200  # unknown kid -> refetch
    assert (await rs.get("/api/notes", headers=bearer(old))).status_code == 200  # old key still published
    assert as_transport.jwks_fetches() == 2


async def test_jwks_discovered_from_as_metadata(
    as_http: httpx.AsyncClient, as_transport: CountingTransport, clock: FrozenClock, resource: ProtectedResource,
    mint: Callable[..., Any],
) -> None:
    v = JWTVerifier(ISSUER, RESOURCE, http_client=as_http, clock=clock)
    claims = await v.verify(await mint(scope="notes:read notes:write"))
    assert as_transport.paths == ["/.well-known/oauth-authorization-server", "/jwks.json"]
    assert claims.scopes == frozenset({"notes:read", "notes:write"})
    assert claims.audience == RESOURCE
    assert claims.issuer == ISSUER


async def test_jwks_unreachable_is_503_not_401(
    rs: httpx.AsyncClient, mint: Callable[..., Any], as_transport: CountingTransport
) -> None:
    as_transport.fail = True
    r = await rs.get("/api/notes", headers=bearer(await mint()))
    assert r.status_code == 503
    assert r.json()["error"] == "temporarily_unavailable"


# --- a token presented again (AuthGateMiddleware's recall path) -------------------------------------------------


async def test_a_token_presented_again_is_judged_as_the_first_time(
    rs: httpx.AsyncClient, verifier: JWTVerifier, mint: Callable[..., Any], clock: FrozenClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once verified, the same ``Authorization`` header is recalled without awaiting the verifier; every check
    the full path makes must still decide the request: the route's scopes, one header, no token in the query,
    expiry."""
    token = await mint(scope="notes:read")
    assert (await rs.get("/api/notes/7", headers=bearer(token))).status_code == 200
    awaited: list[str] = []
    full_verify = verifier.verify

    async def counting(t: str) -> AccessClaims:
        awaited.append(t)
        return await full_verify(t)

    monkeypatch.setattr(verifier, "verify", counting)
    r = await rs.get("/api/notes/7", headers=bearer(token))
    assert r.status_code == 200 and r.json()["sub"] == "alice"
    assert awaited == []  # recalled: the verifier was not awaited
    r = await rs.post("/api/admin/purge", headers=bearer(token))  # a route needing more scopes
    assert r.status_code == 403 and r.json()["error"] == "insufficient_scope"
    for pair in ([f"Bearer {token}", "Bearer x"], ["Bearer x", f"Bearer {token}"]):
        r = await rs.get("/api/notes/7", headers=[("Authorization", value) for value in pair])
        assert r.status_code == 400, pair
    assert (await rs.get("/api/notes/7", params={"access_token": token}, headers=bearer(token))).status_code == 400
    for header in (f"bEaReR {token}", f"Bearer  {token}", f"Bearer {token} "):  # the full path extracts the same
        assert (await rs.get("/api/notes/7", headers={"Authorization": header})).status_code == 200, header
    assert (await rs.get("/api/notes/7", params={"view": "full"}, headers=bearer(token))).status_code == 200
    clock.advance(300 + 10 + 1)  # past exp and the 10 s leeway
    assert_invalid_token(await rs.get("/api/notes/7", headers=bearer(token)))


async def test_a_recalled_token_fails_once_its_key_is_withdrawn(
    as_http: httpx.AsyncClient, resource: ProtectedResource, mint: Callable[..., Any], ctx: ServerContext,
    clock: FrozenClock,
) -> None:
    """The JWKS is refreshed after ``jwks_max_age``: a token whose key the AS no longer publishes then fails,
    although its verification was remembered."""
    verifier = JWTVerifier(ISSUER, RESOURCE, jwks_uri=ISSUER + "/jwks.json", http_client=as_http, clock=clock,
                           leeway=10, refetch_interval=REFETCH, jwks_max_age=60)
    transport = httpx.ASGITransport(app=protected_app(verifier, resource))
    async with httpx.AsyncClient(transport=transport, base_url=RS) as rs:
        token = await mint(exp=int(clock.now()) + 3600)
        assert (await rs.get("/api/notes/7", headers=bearer(token))).status_code == 200
        clock.advance(30)
        assert (await rs.get("/api/notes/7", headers=bearer(token))).status_code == 200  # recalled, key current
        await ctx.keys.rotate(keep_old_for=0)
        clock.advance(40)  # 70 s after the fetch: past jwks_max_age
        assert_invalid_token(await rs.get("/api/notes/7", headers=bearer(token)))


# --- FastAPI ----------------------------------------------------------------------------------------------------


async def test_fastapi_dependency(verifier: JWTVerifier, resource: ProtectedResource, mint: Callable[..., Any]) -> None:
    app = FastAPI()
    install(app, verifier, resource)

    @app.get("/api/notes")
    async def read(claims: AccessClaims = Depends(RequireScopes("notes:read"))) -> dict[str, Any]:  # noqa: B008
        return {"sub": claims.subject}

    @app.post("/api/notes")
    async def write(claims: AccessClaims = Depends(RequireScopes("notes:read", "notes:write"))) -> dict[str, Any]:  # noqa: B008
        return {"sub": claims.subject}

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=RS) as http:
        assert (await http.get("/.well-known/oauth-protected-resource/api")).json()["resource"] == RESOURCE
        r = await http.get("/api/notes")
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == f'Bearer resource_metadata="{PRM_URL}", scope="notes:read"'
        assert r.json()["error"] == "invalid_token"
        token = await mint()
        r = await http.get("/api/notes", headers=bearer(token))
        assert r.status_code == 200
        assert r.json() == {"sub": "alice"}
        r = await http.post("/api/notes", headers=bearer(token))
        assert r.status_code == 403
        assert 'scope="notes:read notes:write"' in r.headers["www-authenticate"]
        assert r.json()["error"] == "insufficient_scope"
        assert_invalid_token(await http.get("/api/notes", headers=bearer(await mint(aud="http://other.test"))))
