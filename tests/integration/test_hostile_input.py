"""Hostile input over HTTP: every answer is a 4xx with OAuth JSON (or the error page at /authorize), never a
5xx, and a rejected request changes no state."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from authgate.cli import configure_logging
from authgate.config import Settings
from authgate.context import ServerContext
from tests.helpers import REDIRECT, add_client, authorize_params, pkce_pair, redirect_params


@pytest.fixture
async def dev(settings: Settings, make_client: Callable[..., Any]) -> tuple[ServerContext, httpx.AsyncClient]:
    result: tuple[ServerContext, httpx.AsyncClient] = await make_client(settings, auto_approve=True)
    return result


async def _code_form(http: httpx.AsyncClient, client_id: str) -> dict[str, str]:
    verifier, challenge = pkce_pair()
    q = redirect_params(await http.get("/authorize", params=authorize_params(client_id, challenge)))
    return {"grant_type": "authorization_code", "code": q["code"], "redirect_uri": REDIRECT,
            "code_verifier": verifier, "client_id": client_id}


async def _tokens(http: httpx.AsyncClient, client_id: str) -> dict[str, Any]:
    r = await http.post("/token", data=await _code_form(http, client_id))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _json_error(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["cache-control"] == "no-store"
    error: str = r.json()["error"]
    return error


# -- the token endpoint: a refused request leaves the code or refresh token usable ---------------------------


@pytest.mark.parametrize("bad", [
    {"scope": "read write"},                            # wider than granted
    {"resource": "http://127.0.0.1:9999/else"},         # another audience
    {"scope": "read\x01"},                              # malformed scope
])
async def test_refused_refresh_does_not_burn_the_token(dev: Any, ctx: ServerContext, bad: dict[str, str]) -> None:
    _, http = dev
    client_id, _ = await add_client(ctx.store)
    tokens = await _tokens(http, client_id)
    form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": client_id}
    assert _json_error(await http.post("/token", data={**form, **bad}), 400) in ("invalid_scope", "invalid_grant")
    # Not a replay: the refresh token is still the live one, and the grant was not revoked.
    r = await http.post("/token", data=form)
    assert r.status_code == 200, r.text


async def test_refresh_attempt_by_another_client_does_not_revoke_the_grant(dev: Any, ctx: ServerContext) -> None:
    _, http = dev
    owner, _ = await add_client(ctx.store)
    thief, _ = await add_client(ctx.store)
    tokens = await _tokens(http, owner)
    form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    assert _json_error(await http.post("/token", data={**form, "client_id": thief}), 400) == "invalid_grant"
    r = await http.post("/token", data={**form, "client_id": owner})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("bad", [
    {"code_verifier": "x" * 43},                         # PKCE mismatch
    {"redirect_uri": "http://127.0.0.1:3030/other"},     # redirect_uri mismatch
    {"resource": "http://127.0.0.1:9999/else"},          # another audience
    {"scope": "admin"},                                  # wider than authorized
])
async def test_refused_code_redemption_does_not_burn_the_code(dev: Any, ctx: ServerContext,
                                                              bad: dict[str, str]) -> None:
    _, http = dev
    client_id, _ = await add_client(ctx.store)
    form = await _code_form(http, client_id)
    assert _json_error(await http.post("/token", data={**form, **bad}), 400) in ("invalid_grant", "invalid_scope")
    r = await http.post("/token", data=form)
    assert r.status_code == 200, r.text


async def test_code_presented_by_another_client_stays_with_its_owner(dev: Any, ctx: ServerContext) -> None:
    _, http = dev
    owner, _ = await add_client(ctx.store)
    thief, _ = await add_client(ctx.store)
    form = await _code_form(http, owner)
    assert _json_error(await http.post("/token", data={**form, "client_id": thief}), 400) == "invalid_grant"
    r = await http.post("/token", data=form)
    assert r.status_code == 200, r.text


# -- JSON bodies: nesting, lone surrogates, non-standard numbers --------------------------------------------


@pytest.mark.parametrize("body", [
    b'{"redirect_uris": ["http://127.0.0.1/cb"], "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    b'{"redirect_uris": ["http://127.0.0.1/cb"], "token_endpoint_auth_method": "none", "client_name": "\\ud800"}',
    b'{"redirect_uris": ["https://app.example/\\udfff"], "token_endpoint_auth_method": "none"}',
    b'{"redirect_uris": ["http://127.0.0.1/cb"], "token_endpoint_auth_method": "none", "x": NaN}',
    b'{"redirect_uris": ["http://127.0.0.1/cb"], "token_endpoint_auth_method": "none", "x": -Infinity}',
])
async def test_hostile_json_is_refused_without_storing(client: httpx.AsyncClient, ctx: ServerContext,
                                                        body: bytes) -> None:
    before = await ctx.store.count_clients()
    r = await client.post("/register", content=body, headers={"content-type": "application/json"})
    assert _json_error(r, 400) == "invalid_client_metadata"
    assert await ctx.store.count_clients() == before


@pytest.mark.parametrize("depth", [65, 5000])
async def test_deep_json_is_refused_whatever_the_recursion_limit(client: httpx.AsyncClient, ctx: ServerContext,
                                                                 depth: int) -> None:
    """The bound is ours, not the interpreter's: py-evm (imported with the x402 chain) raises the recursion limit
    to 12,288, after which a body nested 5,000 deep parsed and registered a client."""
    import sys

    before_limit = sys.getrecursionlimit()
    sys.setrecursionlimit(12_288)
    try:
        before = await ctx.store.count_clients()
        body = b'{"redirect_uris": ["http://127.0.0.1/cb"], "x": ' + b"[" * depth + b"]" * depth + b"}"
        r = await client.post("/register", content=body, headers={"content-type": "application/json"})
        assert _json_error(r, 400) == "invalid_client_metadata"
        assert "nested too deeply" in r.json()["error_description"]
        assert await ctx.store.count_clients() == before
    finally:
        sys.setrecursionlimit(before_limit)


def test_json_nesting_counts_brackets_outside_strings_only() -> None:
    from authgate.httputil import json_nesting_exceeds

    assert not json_nesting_exceeds('{"a": "' + "[" * 500 + '"}', 64)  # inside a string
    assert not json_nesting_exceeds('{"a": "\\\"' + "{" * 100 + '"}', 64)  # escaped quote, then a string
    assert json_nesting_exceeds("[" * 65 + "]" * 65, 64)
    assert not json_nesting_exceeds("[" * 64 + "]" * 64, 64)
    assert not json_nesting_exceeds("[]" * 1000, 64)  # many, but shallow


async def test_lone_surrogate_in_update_is_refused(client: httpx.AsyncClient) -> None:
    reg = (await client.post("/register", json={"redirect_uris": [REDIRECT], "client_name": "app"})).json()
    client_id = reg["client_id"]
    body = f'{{"client_id": "{client_id}", "redirect_uris": ["{REDIRECT}"], "client_name": "\\udc80"}}'.encode()
    r = await client.put(f"/register/{reg['client_id']}", content=body,
                         headers={"content-type": "application/json",
                                  "authorization": f"Bearer {reg['registration_access_token']}"})
    assert _json_error(r, 400) == "invalid_client_metadata"


# -- the authorization endpoint ------------------------------------------------------------------------------


async def test_too_many_query_parameters_is_an_error_page_not_a_500(client: httpx.AsyncClient) -> None:
    r = await client.get("/authorize?" + "&".join(f"p{i}=1" for i in range(100)))
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("text/html")
    assert "location" not in r.headers


async def test_redirect_uri_scheme_must_match_exactly(client: httpx.AsyncClient, ctx: ServerContext) -> None:
    client_id, _ = await add_client(ctx.store)
    _, challenge = pkce_pair()
    r = await client.get("/authorize", params=authorize_params(client_id, challenge,
                                                               redirect_uri="HTTP://127.0.0.1:3030/callback"))
    assert r.status_code == 400 and "location" not in r.headers


@pytest.mark.parametrize("resource", ["http://127.0.0.1:99999/api", "https://example.com:0x50/api",
                                      "http://[::1/api", "https://\u0430pi.example/mcp",
                                      "https://api.example/\u202emcp", "https://api.example/a b"])
async def test_malformed_resource_is_invalid_target(dev: Any, ctx: ServerContext, resource: str) -> None:
    _, http = dev
    client_id, _ = await add_client(ctx.store)
    _, challenge = pkce_pair()
    q = redirect_params(await http.get("/authorize", params=authorize_params(client_id, challenge,
                                                                             resource=resource)))
    assert q["error"] == "invalid_target" and q["iss"] == ctx.issuer


# -- registration: redirect URIs that display as something else --------------------------------------------


@pytest.mark.parametrize("uri", [
    "https://a\u3002evil.example/cb",       # ideographic full stop: the browser goes to a.evil.example
    "https://evil\uff0eexample/cb",         # fullwidth full stop
    "https://\u0430pple.example/cb",        # Cyrillic a
    "https://app.example/\u202ecb",         # right-to-left override
    "com.example.app:/\u0441b",
])
async def test_non_ascii_redirect_uris_are_refused(client: httpx.AsyncClient, uri: str) -> None:
    r = await client.post("/register", json={"redirect_uris": [uri], "token_endpoint_auth_method": "none"})
    assert _json_error(r, 400) == "invalid_redirect_uri"


# -- methods ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/token", "/introspect", "/revoke"])
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "OPTIONS"])
async def test_wrong_method_is_oauth_json(client: httpx.AsyncClient, path: str, method: str) -> None:
    r = await client.request(method, path)
    assert _json_error(r, 405) == "invalid_request"
    assert r.headers["allow"] == "POST"


# -- logs ---------------------------------------------------------------------------------------------------


async def test_debug_logging_never_shows_the_signing_key_or_tokens(dev: Any, ctx: ServerContext,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """``AUTHGATE_LOG_LEVEL=debug`` must not turn on the database drivers' statement logs: they print every
    bound parameter, including the private signing key when one is created."""
    _, http = dev
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    root = logging.getLogger()
    handler = Collect(logging.DEBUG)
    monkeypatch.setattr(root, "handlers", [handler])
    monkeypatch.setattr(root, "level", root.level)
    noisy = [logging.getLogger(name) for name in ("aiosqlite", "asyncpg", "sqlalchemy", "httpcore", "httpx")]
    for logger in noisy:
        monkeypatch.setattr(logger, "level", logger.level)
    configure_logging("debug")
    assert logging.getLogger("authgate").isEnabledFor(logging.DEBUG)

    new_key = await ctx.keys.rotate(3600)
    client_id, _ = await add_client(ctx.store)
    tokens = await _tokens(http, client_id)
    text = "\n".join(r.getMessage() for r in records)
    private = next(row.private_jwk for row in await ctx.store.list_signing_keys() if row.kid == new_key)
    assert private["d"] not in text
    assert tokens["access_token"] not in text and tokens["refresh_token"] not in text


@pytest.mark.parametrize("path", ["/token", "/revoke", "/introspect", "/bc-authorize", "/authorize", "/signin"])
async def test_repeated_non_ascii_parameter_is_a_400_not_a_500(client: httpx.AsyncClient, path: str) -> None:
    """Found by schemathesis: the "parameter … is repeated" message quoted the raw (non-ASCII) name."""
    body = b"%C3%A9%22x=1&%C3%A9%22x=2"
    response = await client.post(path, content=body,
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 400
    if response.headers["content-type"].startswith("application/json"):
        assert response.json()["error"] == "invalid_request"
        assert "is repeated" in response.json()["error_description"]


async def test_newline_in_a_repeated_parameter_name_is_a_400(client: httpx.AsyncClient) -> None:
    """Found by schemathesis: ``printable`` let a newline through (``$`` matches before a final newline)."""
    response = await client.post("/revoke", content=b"%0A=1&%0A=2",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 400
    assert "\n" not in response.json()["error_description"]
