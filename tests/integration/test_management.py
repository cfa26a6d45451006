"""RFC 7592 client configuration endpoint: spec note §3 items 12-13 and §8 items 9, 17."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from authgate.clock import FrozenClock
from authgate.config import Settings
from authgate.context import ServerContext
from authgate.crypto.hashing import new_token, token_hash
from authgate.store import Store
from authgate.store.repository import ClientRecord
from tests.conftest import ISSUER
from tests.integration.test_registration import SDK_BODY, assert_error, assert_no_store

BODY: dict[str, Any] = {**SDK_BODY, "logo_uri": "https://agent.example/logo.png", "scope": "read write"}
SERVER_ASSIGNED = ("client_secret", "client_id_issued_at", "client_secret_expires_at", "registration_access_token",
                   "registration_client_uri")


async def register(http: httpx.AsyncClient, body: dict[str, Any] | None = None) -> dict[str, Any]:
    r = await http.post("/register", json=body or BODY)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def bearer(reg: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {reg['registration_access_token']}"}


def update_body(reg: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """The full metadata for a PUT: everything registered, minus the server-assigned members."""
    body = {k: v for k, v in reg.items() if k not in SERVER_ASSIGNED}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


def assert_bearer_401(r: httpx.Response) -> None:
    assert_error(r, 401, "invalid_token")
    assert 'error="invalid_token"' in r.headers["www-authenticate"]


# -- read ---------------------------------------------------------------------------------------------


async def test_read_returns_the_registration(client: httpx.AsyncClient) -> None:
    reg = await register(client)
    assert reg["registration_client_uri"] == f"{ISSUER}/register/{reg['client_id']}"
    r = await client.get(reg["registration_client_uri"], headers=bearer(reg))
    assert r.status_code == 200, r.text
    assert_no_store(r)
    info = r.json()
    assert "client_secret" not in info  # not re-disclosed
    assert info == {k: v for k, v in reg.items() if k != "client_secret"}


async def test_expired_secret_is_rotated_on_read(
    settings: Settings, make_client: Callable[..., Any], clock: FrozenClock, store: Store
) -> None:
    _, http = await make_client(settings, client_secret_ttl=100)
    reg = await register(http)
    assert "client_secret" not in (await http.get(reg["registration_client_uri"], headers=bearer(reg))).json()
    clock.advance(101)
    info = (await http.get(reg["registration_client_uri"], headers=bearer(reg))).json()
    assert info["client_secret"] != reg["client_secret"]
    assert info["client_secret_expires_at"] == int(clock.now()) + 100
    record = await store.get_client(reg["client_id"])
    assert record is not None and record.secret_hash == token_hash(info["client_secret"])


# -- update -------------------------------------------------------------------------------------------


async def test_update_replaces_metadata_and_rotates_the_rat(client: httpx.AsyncClient, store: Store) -> None:
    reg = await register(client)
    before = await store.get_client(reg["client_id"])
    body = update_body(reg, logo_uri=None, client_name="renamed", client_secret=reg["client_secret"])
    r = await client.put(reg["registration_client_uri"], json=body, headers=bearer(reg))
    assert r.status_code == 200, r.text
    assert_no_store(r)
    info = r.json()
    assert "logo_uri" not in info  # replace semantics: omitted means removed
    assert info["client_name"] == "renamed"
    assert info["client_id"] == reg["client_id"]
    assert info["client_id_issued_at"] == reg["client_id_issued_at"]
    assert info["client_secret_expires_at"] == reg["client_secret_expires_at"]
    assert "client_secret" not in info  # unchanged secret is not re-disclosed
    new_rat = info["registration_access_token"]
    assert new_rat != reg["registration_access_token"]
    after = await store.get_client(reg["client_id"])
    assert before is not None and after is not None
    assert after.secret_hash == before.secret_hash
    assert after.rat_hash == token_hash(new_rat)
    assert "logo_uri" not in after.metadata
    # The old RAT is dead, the new one works.
    assert_bearer_401(await client.get(reg["registration_client_uri"], headers=bearer(reg)))
    r = await client.get(reg["registration_client_uri"], headers={"Authorization": f"Bearer {new_rat}"})
    assert r.status_code == 200 and r.json()["client_name"] == "renamed"


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"client_id": None}, "invalid_request"),
        ({"client_id": "someone-else"}, "invalid_request"),
        ({"registration_access_token": "x"}, "invalid_request"),
        ({"registration_client_uri": "https://x.example/"}, "invalid_request"),
        ({"client_secret_expires_at": 0}, "invalid_request"),
        ({"client_id_issued_at": 0}, "invalid_request"),
        ({"client_secret": "not-the-secret"}, "invalid_request"),
        ({"redirect_uris": ["javascript:alert(1)"]}, "invalid_redirect_uri"),
        ({"redirect_uris": ["http://evil.example/cb"]}, "invalid_redirect_uri"),
        ({"grant_types": ["implicit"], "response_types": ["token"]}, "invalid_client_metadata"),
        ({"token_endpoint_auth_method": "private_key_jwt"}, "invalid_client_metadata"),
        ({"jwks": {"keys": [{"kty": "EC", "crv": "P-256", "x": "A", "y": "A", "d": "A"}]}},
         "invalid_client_metadata"),
        ({"software_statement": "not-a-jwt"}, "invalid_software_statement"),
    ],
)
async def test_rejected_update_changes_nothing(
    client: httpx.AsyncClient, store: Store, changes: dict[str, Any], error: str
) -> None:
    reg = await register(client)
    before = await store.get_client(reg["client_id"])
    r = await client.put(reg["registration_client_uri"], json=update_body(reg, **changes), headers=bearer(reg))
    assert_error(r, 400, error)
    assert await store.get_client(reg["client_id"]) == before
    # The RAT survives a rejected update.
    assert (await client.get(reg["registration_client_uri"], headers=bearer(reg))).status_code == 200


async def test_update_drops_privileged_fields(client: httpx.AsyncClient, store: Store) -> None:
    reg = await register(client)
    body = update_body(reg, skip_consent=True, trusted=True, metadata={"admin": True})
    r = await client.put(reg["registration_client_uri"], json=body, headers=bearer(reg))
    assert r.status_code == 200, r.text
    record = await store.get_client(reg["client_id"])
    assert record is not None
    assert not {"skip_consent", "trusted", "metadata"} & (record.metadata.keys() | r.json().keys())


async def test_update_switching_auth_method(client: httpx.AsyncClient, store: Store) -> None:
    reg = await register(client)
    r = await client.put(reg["registration_client_uri"], headers=bearer(reg),
                         json=update_body(reg, token_endpoint_auth_method="none"))
    assert r.status_code == 200, r.text
    public = r.json()
    assert "client_secret" not in public and "client_secret_expires_at" not in public
    record = await store.get_client(reg["client_id"])
    assert record is not None and record.secret_hash is None and record.metadata_digest is not None
    # Back to a confidential method: a fresh secret is issued and returned once.
    r = await client.put(public["registration_client_uri"], headers=bearer(public),
                         json=update_body(public, token_endpoint_auth_method="client_secret_post"))
    assert r.status_code == 200, r.text
    info = r.json()
    assert info["client_secret"] and info["client_secret"] != reg["client_secret"]
    assert info["client_secret_expires_at"] == 0
    record = await store.get_client(reg["client_id"])
    assert record is not None and record.secret_hash == token_hash(info["client_secret"])
    assert record.metadata_digest is None


async def test_update_body_must_be_a_json_object(client: httpx.AsyncClient) -> None:
    reg = await register(client)
    r = await client.put(reg["registration_client_uri"], content=b"null",
                         headers={**bearer(reg), "content-type": "application/json"})
    assert_error(r, 400, "invalid_client_metadata")


# -- delete -------------------------------------------------------------------------------------------


async def test_delete_removes_the_client_and_revokes_its_grants(
    client: httpx.AsyncClient, ctx: ServerContext, store: Store
) -> None:
    reg = await register(client)
    await store.put_artifact("rt-1", "refresh_token", {}, 3600, client_id=reg["client_id"], grant_id="g1")
    r = await client.delete(reg["registration_client_uri"], headers=bearer(reg))
    assert r.status_code == 204
    assert r.content == b""
    assert_no_store(r)
    assert await store.get_client(reg["client_id"]) is None
    assert await ctx.clients.get(reg["client_id"]) is None  # what authorize and token look clients up with
    artifact = await store.get_artifact("rt-1")
    assert artifact is not None and artifact.revoked_at is not None
    assert_bearer_401(await client.get(reg["registration_client_uri"], headers=bearer(reg)))
    assert "client.deleted" in [e["event"] for e in await store.audit_events()]


# -- authentication -----------------------------------------------------------------------------------


async def test_missing_or_bad_rat(client: httpx.AsyncClient) -> None:
    reg = await register(client)
    uri = reg["registration_client_uri"]
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {reg['client_secret']}"},
                    {"Authorization": f"Bearer {reg['client_secret']}"}):
        for method in ("GET", "PUT", "DELETE"):
            assert_bearer_401(await client.request(method, uri, headers=headers, json=update_body(reg)))
    assert (await client.get(uri, headers=bearer(reg))).status_code == 200


async def test_rat_of_another_client_is_rejected_and_revoked(client: httpx.AsyncClient, store: Store) -> None:
    victim, attacker = await register(client), await register(client)
    r = await client.delete(victim["registration_client_uri"], headers=bearer(attacker))
    assert_bearer_401(r)
    assert await store.get_client(victim["client_id"]) is not None
    # The misused token is revoked: it no longer manages even its own client.
    assert_bearer_401(await client.get(attacker["registration_client_uri"], headers=bearer(attacker)))
    record = await store.get_client(attacker["client_id"])
    assert record is not None and record.rat_hash is None
    assert (await client.get(victim["registration_client_uri"], headers=bearer(victim))).status_code == 200
    assert "client.rat_revoked" in [e["event"] for e in await store.audit_events()]


async def test_rat_used_on_a_missing_client_is_revoked(client: httpx.AsyncClient, store: Store) -> None:
    reg = await register(client)
    assert_bearer_401(await client.get(f"{ISSUER}/register/no-such-client", headers=bearer(reg)))
    assert_bearer_401(await client.get(reg["registration_client_uri"], headers=bearer(reg)))


async def test_static_client_cannot_be_managed(client: httpx.AsyncClient, store: Store, clock: FrozenClock) -> None:
    rat = new_token()
    now = int(clock.now())
    await store.create_client(ClientRecord(
        client_id="static-app", metadata={"redirect_uris": ["https://app.example/cb"]}, secret_hash=None,
        secret_expires_at=0, rat_hash=token_hash(rat), dynamic=False, metadata_digest=None, issued_at=now,
        updated_at=now,
    ))
    for method in ("GET", "PUT", "DELETE"):
        r = await client.request(method, f"{ISSUER}/register/static-app", headers={"Authorization": f"Bearer {rat}"},
                                 json={"client_id": "static-app", "redirect_uris": ["https://app.example/cb"]})
        assert_error(r, 403, "access_denied")
    assert await store.get_client("static-app") is not None


async def test_other_methods_are_not_allowed(client: httpx.AsyncClient) -> None:
    reg = await register(client)
    for method in ("POST", "PATCH"):
        r = await client.request(method, reg["registration_client_uri"], headers=bearer(reg), json={})
        assert r.status_code == 405
        assert r.headers["allow"] == "GET, PUT, DELETE"
        assert_no_store(r)


async def test_management_survives_closing_registration(
    client: httpx.AsyncClient, settings: Settings, make_client: Callable[..., Any]
) -> None:
    reg = await register(client)
    _, closed = await make_client(settings, registration="closed")
    assert (await closed.get(reg["registration_client_uri"], headers=bearer(reg))).status_code == 200
    assert (await closed.delete(reg["registration_client_uri"], headers=bearer(reg))).status_code == 204


async def test_concurrent_updates_with_one_rat_only_one_wins(client: httpx.AsyncClient) -> None:
    """The registration access token rotates on update; the store decides which of two racing PUTs wins."""
    import asyncio

    reg = await client.post("/register", json={"client_name": "race", "redirect_uris": ["https://app.example/cb"],
                                               "token_endpoint_auth_method": "none"})
    info = reg.json()
    headers = {"Authorization": f"Bearer {info['registration_access_token']}"}
    body = {"client_id": info["client_id"], "redirect_uris": ["https://app.example/cb"],
            "token_endpoint_auth_method": "none"}
    results = await asyncio.gather(*[
        client.put(info["registration_client_uri"].removeprefix(ISSUER), headers=headers,
                   json={**body, "client_name": f"writer {i}"}) for i in range(8)])
    assert sorted(r.status_code for r in results).count(200) == 1
    assert all(r.status_code in (200, 401) for r in results)
