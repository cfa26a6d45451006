"""Authorization code + PKCE end to end: the authorization endpoint's checks, the login and consent page,
code redemption, and the attacks the OAuth 2.1 security BCP names (code replay, PKCE downgrade, open
redirects, mix-up)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from authgate.config import Settings
from authgate.context import ServerContext
from authgate.store import tables
from tests.conftest import ISSUER
from tests.helpers import REDIRECT, RESOURCE, add_client, add_user, authorize_params, pkce_pair, redirect_params


@pytest.fixture
async def dev(settings: Settings, make_client: Callable[..., Any]) -> tuple[ServerContext, httpx.AsyncClient]:
    """A server with auto-approve on (development mode) over the same store."""
    result: tuple[ServerContext, httpx.AsyncClient] = await make_client(settings, auto_approve=True)
    return result


async def _code(http: httpx.AsyncClient, client_id: str, **extra: str) -> tuple[str, str, dict[str, str]]:
    verifier, challenge = pkce_pair()
    params = authorize_params(client_id, challenge, **extra)
    r = await http.get("/authorize", params=params)
    q = redirect_params(r)
    return q["code"], verifier, q


async def test_auto_approve_issues_code_with_state_and_iss(dev: Any, ctx: ServerContext) -> None:
    _, http = dev
    client_id, _ = await add_client(ctx.store)
    verifier, challenge = pkce_pair()
    params = authorize_params(client_id, challenge)
    r = await http.get("/authorize", params=params)
    assert r.status_code == 303
    assert r.headers["x-authgate-dev"] == "auto-approve"
    assert r.headers["location"].startswith(REDIRECT + "?")
    q = redirect_params(r)
    assert q["state"] == params["state"] and q["iss"] == ISSUER and q["code"]

    token = await http.post("/token", data={
        "grant_type": "authorization_code", "code": q["code"], "redirect_uri": REDIRECT,
        "code_verifier": verifier, "client_id": client_id, "resource": RESOURCE})
    assert token.status_code == 200, token.text
    assert token.headers["cache-control"] == "no-store"
    body = token.json()
    assert body["token_type"] == "Bearer" and body["refresh_token"] and body["expires_in"] > 0
    assert body["scope"] == "read offline_access"


async def test_server_without_auto_approve_has_no_dev_header(client: httpx.AsyncClient) -> None:
    r = await client.get("/.well-known/oauth-authorization-server")
    assert "x-authgate-dev" not in r.headers


async def test_login_and_consent_page(client: httpx.AsyncClient, ctx: ServerContext) -> None:
    client_id, _ = await add_client(ctx.store, client_name="<script>alert(1)</script>")
    await add_user(ctx.store, "alice", "correct horse")
    verifier, challenge = pkce_pair()
    params = authorize_params(client_id, challenge)
    page = await client.get("/authorize", params=params)
    assert page.status_code == 200
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "<script>alert(1)</script>" not in page.text and "&lt;script&gt;" in page.text
    assert "unverified" in page.text and "127.0.0.1" in page.text
    request_id = page.text.split('name="request_id" value="', 1)[1].split('"', 1)[0]

    wrong = await client.post("/authorize", data={"request_id": request_id, "username": "alice",
                                                   "password": "nope", "decision": "approve"})
    assert wrong.status_code == 401 and "Wrong username or password" in wrong.text

    ok = await client.post("/authorize", data={"request_id": request_id, "username": "alice",
                                                "password": "correct horse", "decision": "approve"})
    q = redirect_params(ok)
    assert q["iss"] == ISSUER and q["state"] == params["state"]
    token = await client.post("/token", data={
        "grant_type": "authorization_code", "code": q["code"], "redirect_uri": REDIRECT,
        "code_verifier": verifier, "client_id": client_id})
    assert token.status_code == 200

    again = await client.post("/authorize", data={"request_id": request_id, "username": "alice",
                                                   "password": "correct horse", "decision": "approve"})
    assert again.status_code == 400 and "location" not in again.headers


async def test_consent_form_needs_the_browser_that_opened_it(client: httpx.AsyncClient, ctx: ServerContext) -> None:
    client_id, _ = await add_client(ctx.store)
    await add_user(ctx.store, "alice", "pw-alice-123")
    _, challenge = pkce_pair()
    page = await client.get("/authorize", params=authorize_params(client_id, challenge))
    request_id = page.text.split('name="request_id" value="', 1)[1].split('"', 1)[0]
    client.cookies.clear()
    r = await client.post("/authorize", data={"request_id": request_id, "username": "alice",
                                              "password": "pw-alice-123", "decision": "approve"})
    assert r.status_code == 400 and "location" not in r.headers


async def test_deny_redirects_access_denied_with_iss(client: httpx.AsyncClient, ctx: ServerContext) -> None:
    client_id, _ = await add_client(ctx.store)
    _, challenge = pkce_pair()
    params = authorize_params(client_id, challenge)
    page = await client.get("/authorize", params=params)
    request_id = page.text.split('name="request_id" value="', 1)[1].split('"', 1)[0]
    r = await client.post("/authorize", data={"request_id": request_id, "decision": "deny"})
    q = redirect_params(r)
    assert q == {"error": "access_denied", "error_description": "the user denied the request",
                 "state": params["state"], "iss": ISSUER}


@pytest.mark.parametrize("redirect_uri", [
    "http://127.0.0.1:3030/other", "https://evil.example/callback", "http://127.0.0.1:3030/callback/",
    "http://127.0.0.1:3030/callback?x=1", "http://127.0.0.1:3030/callback#frag", "http://evil@127.0.0.1:3030/callback",
])
async def test_unregistered_redirect_uri_shows_error_page_and_never_redirects(
        dev: Any, ctx: ServerContext, redirect_uri: str) -> None:
    _, http = dev
    client_id, _ = await add_client(ctx.store)
    _, challenge = pkce_pair()
    r = await http.get("/authorize", params=authorize_params(client_id, challenge, redirect_uri=redirect_uri))
    assert r.status_code == 400 and "location" not in r.headers


async def test_unknown_client_shows_error_page(dev: Any) -> None:
    _, http = dev
    _, challenge = pkce_pair()
    r = await http.get("/authorize", params=authorize_params("nobody", challenge))
    assert r.status_code == 400 and "location" not in r.headers


async def test_loopback_redirect_any_port(dev: Any, ctx: ServerContext) -> None:
    _, http = dev
    client_id, _ = await add_client(ctx.store, redirect_uris=["http://127.0.0.1/callback", "http://[::1]:80/cb"])
    _, challenge = pkce_pair()
    for uri in ("http://127.0.0.1:51234/callback", "http://[::1]:4000/cb"):
        r = await http.get("/authorize", params=authorize_params(client_id, challenge, redirect_uri=uri))
        assert r.headers["location"].startswith(uri + "?")
    r = await http.get("/authorize", params=authorize_params(client_id, challenge,
                                                             redirect_uri="http://localhost:51234/callback"))
    assert r.status_code == 400


@pytest.mark.parametrize(("change", "error"), [
    ({"code_challenge": ""}, "invalid_request"),
    ({"code_challenge_method": "plain"}, "invalid_request"),
    ({"code_challenge_method": ""}, "invalid_request"),
    ({"code_challenge": "short"}, "invalid_request"),
    ({"response_type": "token"}, "unsupported_response_type"),
    ({"scope": "read superuser"}, "invalid_scope"),
    ({"resource": "not a uri"}, "invalid_target"),
    ({"resource": "https://api.example/#x"}, "invalid_target"),
])
async def test_authorization_errors_redirect_with_state_and_iss(dev: Any, ctx: ServerContext,
                                                                change: dict[str, str], error: str) -> None:
    _, http = dev
    client_id, _ = await add_client(ctx.store)
    _, challenge = pkce_pair()
    params = authorize_params(client_id, challenge, **change)
    q = redirect_params(await http.get("/authorize", params=params))
    assert q["error"] == error and q["iss"] == ISSUER and q["state"] == params["state"]
    assert "code" not in q


async def test_repeated_parameter_is_rejected(dev: Any, ctx: ServerContext) -> None:
    _, http = dev
    client_id, _ = await add_client(ctx.store)
    _, challenge = pkce_pair()
    params = [*list(authorize_params(client_id, challenge).items()), ("scope", "write")]
    r = await http.get("/authorize", params=params)
    assert r.status_code == 400 and "location" not in r.headers


async def test_resource_restricted_to_configured_resources(settings: Settings, make_client: Any,
                                                          ctx: ServerContext) -> None:
    _, http = await make_client(settings, auto_approve=True, resources=(RESOURCE,))
    client_id, _ = await add_client(ctx.store)
    _, challenge = pkce_pair()
    q = redirect_params(await http.get("/authorize", params=authorize_params(
        client_id, challenge, resource="http://127.0.0.1:9999/other")))
    assert q["error"] == "invalid_target"
    q = redirect_params(await http.get("/authorize", params=authorize_params(
        client_id, challenge, resource="HTTP://127.0.0.1:9100/api/")))
    assert "code" in q


async def test_pkce_mismatch_and_missing_verifier(dev: Any, ctx: ServerContext) -> None:
    _, http = dev
    client_id, _ = await add_client(ctx.store)
    code, _verifier, _ = await _code(http, client_id)
    other_verifier, _ = pkce_pair()
    r = await http.post("/token", data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                                        "code_verifier": other_verifier, "client_id": client_id})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"

    code, _, _ = await _code(http, client_id)
    r = await http.post("/token", data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                                        "client_id": client_id})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"


async def test_code_replay_revokes_tokens_from_first_use(dev: Any, ctx: ServerContext) -> None:
    _, http = dev
    client_id, secret = await add_client(ctx.store, auth_method="client_secret_basic")
    code, verifier, _ = await _code(http, client_id)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier}
    first = await http.post("/token", data=form, auth=(client_id, secret or ""))
    assert first.status_code == 200
    second = await http.post("/token", data=form, auth=(client_id, secret or ""))
    assert second.status_code == 400 and second.json()["error"] == "invalid_grant"
    introspected = await http.post("/introspect", data={"token": first.json()["access_token"]},
                                   auth=(client_id, secret or ""))
    assert introspected.json() == {"active": False}
    refreshed = await http.post("/token", data={"grant_type": "refresh_token",
                                                "refresh_token": first.json()["refresh_token"]},
                                auth=(client_id, secret or ""))
    assert refreshed.json()["error"] == "invalid_grant"


async def test_code_bound_to_client_redirect_and_expiry(dev: Any, ctx: ServerContext) -> None:
    ctx_dev, http = dev
    client_id, _ = await add_client(ctx.store)
    other_id, _ = await add_client(ctx.store)
    code, verifier, _ = await _code(http, client_id)
    r = await http.post("/token", data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                                        "code_verifier": verifier, "client_id": other_id})
    assert r.json()["error"] == "invalid_grant"

    code, verifier, _ = await _code(http, client_id)
    r = await http.post("/token", data={"grant_type": "authorization_code", "code": code,
                                        "redirect_uri": "http://127.0.0.1:3030/elsewhere",
                                        "code_verifier": verifier, "client_id": client_id})
    assert r.json()["error"] == "invalid_grant"

    code, verifier, _ = await _code(http, client_id)
    ctx_dev.clock.advance(ctx_dev.settings.code_ttl + 1)
    r = await http.post("/token", data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
                                        "code_verifier": verifier, "client_id": client_id})
    assert r.json()["error"] == "invalid_grant"


async def test_secrets_are_stored_only_as_hashes(dev: Any, ctx: ServerContext) -> None:
    _, http = dev
    client_id, _ = await add_client(ctx.store)
    code, verifier, _ = await _code(http, client_id)
    body = (await http.post("/token", data={"grant_type": "authorization_code", "code": code,
                                            "redirect_uri": REDIRECT, "code_verifier": verifier,
                                            "client_id": client_id})).json()
    async with ctx.store.engine.connect() as conn:
        rows = (await conn.execute(sa.select(tables.artifacts))).all()
    dump = repr([tuple(r) for r in rows])
    assert code not in dump and body["refresh_token"] not in dump and body["access_token"] not in dump


async def test_consent_page_lets_the_form_redirect_to_the_client(client: httpx.AsyncClient, ctx: ServerContext
                                                                 ) -> None:
    """Browsers apply CSP form-action to the 303 that follows the consent POST."""
    client_id, _ = await add_client(ctx.store)
    _, challenge = pkce_pair()
    page = await client.get("/authorize", params=authorize_params(client_id, challenge))
    csp = page.headers["content-security-policy"]
    assert "form-action 'self' http://127.0.0.1:3030;" in csp and "frame-ancestors 'none'" in csp


async def _sign_in(client: httpx.AsyncClient, username: str = "alice", password: str = "correct horse") -> None:
    page = await client.get("/signin")
    csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    r = await client.post("/signin", data={"csrf": csrf, "username": username, "password": password})
    assert r.status_code == 303


async def _consents(ctx: ServerContext) -> list[tuple[str, str | None, str | None]]:
    rows = await ctx.store.list_approvals()
    return [(r.status, r.subject, r.decided_by) for r in rows if r.kind == "oauth_consent"]


async def test_signed_in_consent_uses_the_session_and_csrf(client: httpx.AsyncClient, ctx: ServerContext) -> None:
    client_id, _ = await add_client(ctx.store, client_name="<b>agent</b>")
    subject = await add_user(ctx.store, "alice", "correct horse")
    await _sign_in(client)
    verifier, challenge = pkce_pair()
    params = authorize_params(client_id, challenge)
    page = await client.get("/authorize", params=params)
    assert page.status_code == 200 and "Signed in as <strong>alice</strong>" in page.text
    assert 'name="password"' not in page.text and "<b>agent</b>" not in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    request_id = page.text.split('name="request_id" value="', 1)[1].split('"', 1)[0]
    csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]

    for bad in ({}, {"csrf": "wrong"}):
        r = await client.post("/authorize", data={"request_id": request_id, "decision": "approve", **bad})
        assert r.status_code == 403 and "location" not in r.headers
    assert await _consents(ctx) == []

    ok = await client.post("/authorize", data={"request_id": request_id, "decision": "approve", "csrf": csrf})
    q = redirect_params(ok)
    assert q["iss"] == ISSUER and q["state"] == params["state"]
    token = await client.post("/token", data={
        "grant_type": "authorization_code", "code": q["code"], "redirect_uri": REDIRECT,
        "code_verifier": verifier, "client_id": client_id})
    assert token.status_code == 200
    assert await _consents(ctx) == [("approved", subject, subject)]


async def test_signed_in_consent_still_needs_the_browser_that_opened_it(client: httpx.AsyncClient,
                                                                        ctx: ServerContext) -> None:
    client_id, _ = await add_client(ctx.store)
    await add_user(ctx.store, "alice", "correct horse")
    await _sign_in(client)
    _, challenge = pkce_pair()
    page = await client.get("/authorize", params=authorize_params(client_id, challenge))
    request_id = page.text.split('name="request_id" value="', 1)[1].split('"', 1)[0]
    csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    client.cookies.delete("authgate_authz")
    r = await client.post("/authorize", data={"request_id": request_id, "decision": "approve", "csrf": csrf})
    assert r.status_code == 400 and "location" not in r.headers


async def test_password_consent_signs_in_and_is_recorded(client: httpx.AsyncClient, ctx: ServerContext) -> None:
    client_id, _ = await add_client(ctx.store)
    subject = await add_user(ctx.store, "alice", "correct horse")
    _, challenge = pkce_pair()
    page = await client.get("/authorize", params=authorize_params(client_id, challenge))
    request_id = page.text.split('name="request_id" value="', 1)[1].split('"', 1)[0]
    ok = await client.post("/authorize", data={"request_id": request_id, "username": "alice",
                                                "password": "correct horse", "decision": "approve"})
    assert "code" in redirect_params(ok) and "authgate_session=" in ok.headers.get("set-cookie", "")
    assert await _consents(ctx) == [("approved", subject, subject)]
    assert (await client.get("/approvals")).status_code == 200  # now signed in


async def test_deny_is_recorded_as_a_consent_decision(client: httpx.AsyncClient, ctx: ServerContext) -> None:
    client_id, _ = await add_client(ctx.store)
    _, challenge = pkce_pair()
    page = await client.get("/authorize", params=authorize_params(client_id, challenge))
    request_id = page.text.split('name="request_id" value="', 1)[1].split('"', 1)[0]
    r = await client.post("/authorize", data={"request_id": request_id, "decision": "deny"})
    assert redirect_params(r)["error"] == "access_denied"
    assert await _consents(ctx) == [("denied", None, "anonymous")]
