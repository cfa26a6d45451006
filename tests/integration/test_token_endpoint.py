"""Token endpoint, client authentication, refresh rotation, introspection and revocation, and malformed input."""

from __future__ import annotations

import base64
import logging
import secrets
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from joserfc import jwt
from joserfc.jwk import ECKey

from authgate.config import Settings
from authgate.context import ServerContext
from authgate.store import tables
from tests.conftest import ISSUER
from tests.helpers import REDIRECT, RESOURCE, add_client, authorize_params, pkce_pair, redirect_params


@pytest.fixture
async def dev(settings: Settings, make_client: Callable[..., Any]) -> tuple[ServerContext, httpx.AsyncClient]:
    result: tuple[ServerContext, httpx.AsyncClient] = await make_client(settings, auto_approve=True)
    return result


async def _tokens(http: httpx.AsyncClient, client_id: str, secret: str | None = None) -> dict[str, Any]:
    verifier, challenge = pkce_pair()
    q = redirect_params(await http.get("/authorize", params=authorize_params(client_id, challenge)))
    form = {"grant_type": "authorization_code", "code": q["code"], "redirect_uri": REDIRECT,
            "code_verifier": verifier, "resource": RESOURCE}
    if secret is None:
        form["client_id"] = client_id
    r = await http.post("/token", data=form, auth=(client_id, secret) if secret else None)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def _count_artifacts(ctx: ServerContext) -> int:
    async with ctx.store.engine.connect() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(tables.artifacts))).scalar_one())


async def test_access_token_is_rfc9068_jwt(dev: Any, ctx: ServerContext) -> None:
    _, http = dev
    client_id, _ = await add_client(ctx.store)
    body = await _tokens(http, client_id)
    token = jwt.decode(body["access_token"], await ctx.keys.key_set(None), algorithms=["ES256"])
    assert token.header["typ"] == "at+jwt" and token.header["kid"]
    c = token.claims
    assert c["iss"] == ISSUER and c["aud"] == RESOURCE and c["client_id"] == client_id
    assert c["sub"] == "dev-user" and c["scope"] == "read" and c["exp"] > c["iat"] and c["jti"]


async def test_refresh_rotation_and_reuse_revokes_family(dev: Any, ctx: ServerContext) -> None:
    _, http = dev
    client_id, _ = await add_client(ctx.store)
    first = await _tokens(http, client_id)
    r = await http.post("/token", data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"],
                                        "client_id": client_id, "resource": RESOURCE})
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"]
    # Reuse of the rotated-out token: refused, and the whole family (incl. the new token) is revoked.
    reuse = await http.post("/token", data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"],
                                            "client_id": client_id})
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"
    after = await http.post("/token", data={"grant_type": "refresh_token", "refresh_token": second["refresh_token"],
                                            "client_id": client_id})
    assert after.json()["error"] == "invalid_grant"


async def test_refresh_can_narrow_but_not_widen(dev: Any, ctx: ServerContext) -> None:
    _, http = dev
    client_id, _ = await add_client(ctx.store)
    first = await _tokens(http, client_id)
    wider = await http.post("/token", data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"],
                                            "client_id": client_id, "scope": "read write"})
    assert wider.json()["error"] == "invalid_scope"
    # the failed attempt did not burn the refresh token
    other_aud = await http.post("/token", data={"grant_type": "refresh_token", "client_id": client_id,
                                                "refresh_token": first["refresh_token"],
                                                "resource": "http://127.0.0.1:9999/else"})
    assert other_aud.json()["error"] == "invalid_grant"


async def test_refresh_token_of_other_client_refused(dev: Any, ctx: ServerContext) -> None:
    _, http = dev
    a, _ = await add_client(ctx.store)
    b, _ = await add_client(ctx.store)
    tokens = await _tokens(http, a)
    r = await http.post("/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
                                        "client_id": b})
    assert r.json()["error"] == "invalid_grant"


async def test_client_credentials_basic_and_post(client: httpx.AsyncClient, ctx: ServerContext) -> None:
    cid, secret = await add_client(ctx.store, auth_method="client_secret_basic", grant_types=["client_credentials"],
                                   redirect_uris=[])
    assert secret
    r = await client.post("/token", data={"grant_type": "client_credentials", "scope": "read",
                                          "resource": RESOURCE}, auth=(cid, secret))
    assert r.status_code == 200 and "refresh_token" not in r.json()
    claims = jwt.decode(r.json()["access_token"], await ctx.keys.key_set(None)).claims
    assert claims["sub"] == cid and claims["aud"] == RESOURCE

    pid, psecret = await add_client(ctx.store, auth_method="client_secret_post", grant_types=["client_credentials"],
                                    redirect_uris=[])
    r = await client.post("/token", data={"grant_type": "client_credentials", "client_id": pid,
                                          "client_secret": psecret or ""})
    assert r.status_code == 200
    # a post client using basic is refused: the method must be the registered one
    r = await client.post("/token", data={"grant_type": "client_credentials"}, auth=(pid, psecret or ""))
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"


async def test_client_secret_basic_is_form_urlencoded(client: httpx.AsyncClient, ctx: ServerContext) -> None:
    cid, secret = await add_client(ctx.store, auth_method="client_secret_basic", grant_types=["client_credentials"])
    encoded = base64.b64encode(f"{cid}:{secret}".encode()).decode()
    r = await client.post("/token", data={"grant_type": "client_credentials"},
                          headers={"Authorization": f"Basic {encoded}"})
    assert r.status_code == 200


@pytest.mark.parametrize("case", ["wrong_secret", "unknown_client", "malformed_basic", "id_mismatch", "two_methods"])
async def test_client_authentication_failures(client: httpx.AsyncClient, ctx: ServerContext, case: str) -> None:
    cid, secret = await add_client(ctx.store, auth_method="client_secret_basic", grant_types=["client_credentials"])
    assert secret
    form: dict[str, str] = {"grant_type": "client_credentials"}
    headers: dict[str, str] = {}
    auth: tuple[str, str] | None = None
    if case == "wrong_secret":
        auth = (cid, secret[:-1] + ("A" if secret[-1] != "A" else "B"))
    elif case == "unknown_client":
        auth = ("ghost", secret)
    elif case == "malformed_basic":
        headers["Authorization"] = "Basic !!!notbase64"
    elif case == "id_mismatch":
        auth = (cid, secret)
        form["client_id"] = "someone-else"
    else:
        auth = (cid, secret)
        form.update(client_id=cid, client_secret=secret)
    before = await _count_artifacts(ctx)
    r = await client.post("/token", data=form, auth=auth, headers=headers)
    assert r.status_code in (400, 401)
    assert r.json()["error"] in ("invalid_client", "invalid_request")
    assert r.headers["cache-control"] == "no-store"
    if r.status_code == 401 and case in ("wrong_secret", "unknown_client", "malformed_basic"):
        assert r.headers["www-authenticate"].startswith("Basic")
    assert await _count_artifacts(ctx) == before


async def test_public_client_cannot_use_client_credentials(client: httpx.AsyncClient, ctx: ServerContext) -> None:
    cid, _ = await add_client(ctx.store, grant_types=["client_credentials"])
    r = await client.post("/token", data={"grant_type": "client_credentials", "client_id": cid})
    assert r.json()["error"] == "unauthorized_client"


async def test_grant_type_not_registered(client: httpx.AsyncClient, ctx: ServerContext) -> None:
    cid, secret = await add_client(ctx.store, auth_method="client_secret_basic")
    r = await client.post("/token", data={"grant_type": "client_credentials"}, auth=(cid, secret or ""))
    assert r.status_code == 400 and r.json()["error"] == "unauthorized_client"
    r = await client.post("/token", data={"grant_type": "password", "username": "a", "password": "b"},
                          auth=(cid, secret or ""))
    assert r.json()["error"] == "unsupported_grant_type"


async def test_expired_client_secret_refused(client: httpx.AsyncClient, ctx: ServerContext) -> None:
    cid, secret = await add_client(ctx.store, auth_method="client_secret_basic", grant_types=["client_credentials"])
    await ctx.store.update_client(cid, secret_expires_at=ctx.now() - 1)
    r = await client.post("/token", data={"grant_type": "client_credentials"}, auth=(cid, secret or ""))
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"


def _assertion(key: ECKey, client_id: str, now: int, **over: Any) -> str:
    claims = {"iss": client_id, "sub": client_id, "aud": ISSUER + "/token", "iat": now, "exp": now + 60,
              "jti": secrets.token_urlsafe(8), **over}
    return jwt.encode({"alg": "ES256", "kid": key.kid}, claims, key)


async def test_private_key_jwt(client: httpx.AsyncClient, ctx: ServerContext) -> None:
    key = ECKey.generate_key("P-256", parameters={"kid": "k1"}, private=True)
    cid, _ = await add_client(ctx.store, auth_method="private_key_jwt", grant_types=["client_credentials"],
                              jwks={"keys": [key.as_dict(private=False)]})
    now = ctx.now()
    assertion = _assertion(key, cid, now)
    form = {"grant_type": "client_credentials", "client_assertion": assertion,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}
    assert (await client.post("/token", data=form)).status_code == 200
    replay = await client.post("/token", data=form)
    assert replay.status_code == 401 and replay.json()["error"] == "invalid_client"

    other = ECKey.generate_key("P-256", parameters={"kid": "k1"}, private=True)
    for bad in (_assertion(other, cid, now), _assertion(key, cid, now, aud="https://elsewhere"),
                _assertion(key, cid, now, exp=now - 60), _assertion(key, cid, now, exp=now + 3600),
                _assertion(key, cid, now, iss="someone")):
        r = await client.post("/token", data={**form, "client_assertion": bad})
        assert r.status_code == 401, bad


async def test_introspection(dev: Any, ctx: ServerContext) -> None:
    ctx_dev, http = dev
    rs_id, rs_secret = await add_client(ctx.store, auth_method="client_secret_basic",
                                        grant_types=["client_credentials"])
    client_id, _ = await add_client(ctx.store)
    tokens = await _tokens(http, client_id)
    auth = (rs_id, rs_secret or "")
    r = await http.post("/introspect", data={"token": tokens["access_token"]}, auth=auth)
    body = r.json()
    assert body["active"] is True and body["aud"] == RESOURCE and body["client_id"] == client_id
    assert body["scope"] == "read" and body["iss"] == ISSUER
    r = await http.post("/introspect", data={"token": tokens["refresh_token"]}, auth=auth)
    assert r.json()["active"] is True and r.json()["token_type"] == "refresh_token"
    assert (await http.post("/introspect", data={"token": "garbage"}, auth=auth)).json() == {"active": False}

    # public clients may not introspect; unauthenticated callers neither
    r = await http.post("/introspect", data={"token": tokens["access_token"], "client_id": client_id})
    assert r.status_code == 401
    r = await http.post("/introspect", data={"token": tokens["access_token"]})
    assert r.status_code == 401

    ctx_dev.clock.advance(ctx_dev.settings.access_token_ttl + 1)
    r = await http.post("/introspect", data={"token": tokens["access_token"]}, auth=auth)
    assert r.json() == {"active": False}


async def test_revocation(dev: Any, ctx: ServerContext) -> None:
    _, http = dev
    rs_id, rs_secret = await add_client(ctx.store, auth_method="client_secret_basic",
                                        grant_types=["client_credentials"])
    client_id, _ = await add_client(ctx.store)
    other_id, _ = await add_client(ctx.store)
    tokens = await _tokens(http, client_id)
    # another client may not revoke it
    r = await http.post("/revoke", data={"token": tokens["access_token"], "client_id": other_id})
    assert r.status_code == 400
    r = await http.post("/introspect", data={"token": tokens["access_token"]}, auth=(rs_id, rs_secret or ""))
    assert r.json()["active"] is True
    # unknown tokens: 200
    r = await http.post("/revoke", data={"token": "unknown-token", "client_id": client_id})
    assert r.status_code == 200
    # an unknown hint is ignored (RFC 7009 §2.1), not refused
    r = await http.post("/revoke", data={"token": "x", "client_id": client_id, "token_type_hint": "id_token"})
    assert r.status_code == 200
    # revoking the refresh token ends the grant, access token included
    r = await http.post("/revoke", data={"token": tokens["refresh_token"], "client_id": client_id,
                                         "token_type_hint": "refresh_token"})
    assert r.status_code == 200
    r = await http.post("/introspect", data={"token": tokens["access_token"]}, auth=(rs_id, rs_secret or ""))
    assert r.json() == {"active": False}
    r = await http.post("/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
                                        "client_id": client_id})
    assert r.json()["error"] == "invalid_grant"


async def test_revoke_access_token_only(dev: Any, ctx: ServerContext) -> None:
    _, http = dev
    rs_id, rs_secret = await add_client(ctx.store, auth_method="client_secret_basic",
                                        grant_types=["client_credentials"])
    client_id, _ = await add_client(ctx.store)
    tokens = await _tokens(http, client_id)
    assert (await http.post("/revoke", data={"token": tokens["access_token"], "client_id": client_id})).status_code \
        == 200
    r = await http.post("/introspect", data={"token": tokens["access_token"]}, auth=(rs_id, rs_secret or ""))
    assert r.json() == {"active": False}


@pytest.mark.parametrize("path", ["/token", "/introspect", "/revoke"])
@pytest.mark.parametrize("case", ["json", "no_content_type", "repeated", "oversize", "bad_utf8", "empty"])
async def test_malformed_requests_get_4xx_json(client: httpx.AsyncClient, ctx: ServerContext, path: str,
                                               case: str) -> None:
    cid, secret = await add_client(ctx.store, auth_method="client_secret_basic", grant_types=["client_credentials"])
    headers = {"Authorization": "Basic " + base64.b64encode(f"{cid}:{secret}".encode()).decode()}
    form_type = {"Content-Type": "application/x-www-form-urlencoded"}
    content: bytes
    if case == "json":
        content, headers = b'{"grant_type": "client_credentials", "token": "x"}', {
            **headers, "Content-Type": "application/json"}
    elif case == "no_content_type":
        content = b"grant_type=client_credentials&token=x"
    elif case == "repeated":
        content, headers = b"grant_type=client_credentials&grant_type=client_credentials&token=x&token=y", {
            **headers, **form_type}
    elif case == "oversize":
        content, headers = b"grant_type=client_credentials&token=" + b"a" * 100_000, {**headers, **form_type}
    elif case == "bad_utf8":
        content, headers = b"grant_type=\xff\xfe&token=\xff", {**headers, **form_type}
    else:
        content, headers = b"", {**headers, **form_type}
    before = await _count_artifacts(ctx)
    r = await client.post(path, content=content, headers=headers)
    assert 400 <= r.status_code < 500, (case, r.status_code, r.text)
    assert r.json()["error"]
    assert r.headers["cache-control"] == "no-store"
    assert await _count_artifacts(ctx) == before


async def test_tokens_and_secrets_never_logged(dev: Any, ctx: ServerContext, caplog: pytest.LogCaptureFixture
                                               ) -> None:
    _, http = dev
    caplog.set_level(logging.DEBUG)
    client_id, secret = await add_client(ctx.store, auth_method="client_secret_basic")
    tokens = await _tokens(http, client_id, secret)
    await http.post("/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
                    auth=(client_id, secret or ""))
    await http.post("/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
                    auth=(client_id, "wrong"))
    text = caplog.text
    assert secret and secret not in text
    assert tokens["refresh_token"] not in text and tokens["access_token"] not in text
    events = await ctx.store.audit_events()
    assert secret not in repr(events) and tokens["refresh_token"] not in repr(events)
    assert {"token.issued", "authorization.granted"} <= {e["event"] for e in events}


async def test_offline_access_follows_the_refresh_grant(dev: Any, ctx: ServerContext) -> None:
    """A client registered without offline_access may still ask for it when it may refresh; client
    credentials never report it, since no refresh token comes from that grant."""
    _, http = dev
    client_id, _ = await add_client(ctx.store, scope="read")
    body = await _tokens(http, client_id)  # asks for "read offline_access"
    assert body["scope"] == "read offline_access" and body["refresh_token"]

    cid, secret = await add_client(ctx.store, auth_method="client_secret_basic",
                                   grant_types=["client_credentials"], scope="read offline_access")
    r = await http.post("/token", data={"grant_type": "client_credentials"}, auth=(cid, secret or ""))
    assert r.json()["scope"] == "read"


async def test_refresh_narrows_to_the_clients_current_scopes(dev: Any, ctx: ServerContext) -> None:
    _, http = dev
    client_id, _ = await add_client(ctx.store, scope="read write offline_access")
    verifier, challenge = pkce_pair()
    q = redirect_params(await http.get("/authorize", params=authorize_params(
        client_id, challenge, scope="read write offline_access")))
    first = (await http.post("/token", data={"grant_type": "authorization_code", "code": q["code"],
                                             "redirect_uri": REDIRECT, "code_verifier": verifier,
                                             "client_id": client_id})).json()
    assert first["scope"] == "read write offline_access"
    record = await ctx.store.get_client(client_id)
    assert record is not None
    await ctx.store.update_client(client_id, metadata={**record.metadata, "scope": "read offline_access"})
    r = await http.post("/token", data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"],
                                        "client_id": client_id})
    assert r.status_code == 200 and r.json()["scope"] == "read offline_access"
