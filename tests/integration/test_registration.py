"""RFC 7591 registration over HTTP: spec note §3 items 1-11, 13, 14 and §8 items 7, 8, 10-13, 18."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey

from authgate.app import create_app
from authgate.clock import FrozenClock
from authgate.config import Settings
from authgate.context import ServerContext
from authgate.crypto.hashing import token_hash
from authgate.dcr.initial_access import issue_initial_access_token
from authgate.store import Store
from authgate.store import tables as t
from tests.conftest import ISSUER

#: What the mcp 2.3.0 SDK sends (spec note §5.2): no token_endpoint_auth_method.
SDK_BODY: dict[str, Any] = {
    "application_type": "native",
    "client_name": "smoke-agent",
    "grant_types": ["authorization_code", "refresh_token"],
    "redirect_uris": ["http://127.0.0.1:3030/callback"],
    "response_types": ["code"],
    "scope": "mcp offline_access",
}
PUBLIC_BODY: dict[str, Any] = {**SDK_BODY, "token_endpoint_auth_method": "none"}
PUBLISHER = "https://publisher.example"


def assert_no_store(r: httpx.Response) -> None:
    assert r.headers.get("cache-control") == "no-store", r.headers
    assert r.headers.get("pragma") == "no-cache"


def assert_error(r: httpx.Response, status: int, error: str) -> None:
    assert r.status_code == status, r.text
    assert r.json()["error"] == error
    assert_no_store(r)


async def register(http: httpx.AsyncClient, body: Any, **kwargs: Any) -> httpx.Response:
    return await http.post("/register", json=body, **kwargs)


# -- success path -----------------------------------------------------------------------------------


async def test_sdk_registration_gets_basic_auth_and_a_secret(
    client: httpx.AsyncClient, store: Store, clock: FrozenClock
) -> None:
    r = await register(client, SDK_BODY)
    assert r.status_code == 201, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert_no_store(r)
    body = r.json()
    client_id = body["client_id"]
    assert isinstance(client_id, str) and len(client_id) >= 22 and not client_id.startswith("https://")
    assert body["token_endpoint_auth_method"] == "client_secret_basic"
    assert isinstance(body["client_secret"], str) and len(body["client_secret"]) >= 43
    assert body["client_secret_expires_at"] == 0
    assert body["client_id_issued_at"] == int(clock.now())
    assert body["grant_types"] == ["authorization_code", "refresh_token"]
    assert body["response_types"] == ["code"]
    assert body["redirect_uris"] == ["http://127.0.0.1:3030/callback"]
    assert body["application_type"] == "native"
    assert body["client_name"] == "smoke-agent"
    assert body["scope"] == "offline_access"  # "mcp" is unknown here and dropped; offline_access is kept
    assert body["registration_client_uri"] == f"{ISSUER}/register/{client_id}"
    assert body["registration_access_token"]
    record = await store.get_client(client_id)
    assert record is not None and record.dynamic
    # Every stored field is echoed: the response is the stored metadata plus the server-assigned values.
    server_assigned = {"client_id", "client_secret", "client_id_issued_at", "client_secret_expires_at",
                       "registration_access_token", "registration_client_uri"}
    assert {k: v for k, v in body.items() if k not in server_assigned} == record.metadata


async def test_defaults_are_registered_and_echoed(client: httpx.AsyncClient) -> None:
    r = await register(client, {"redirect_uris": ["https://app.example/cb"]})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["grant_types"] == ["authorization_code"]
    assert body["response_types"] == ["code"]
    assert body["token_endpoint_auth_method"] == "client_secret_basic"
    assert body["scope"] == "read"  # settings.default_scopes
    assert "client_secret" in body and body["client_secret_expires_at"] == 0
    assert "application_type" not in body  # lenient: not invented when the client did not send it


async def test_empty_object_needs_redirect_uris(client: httpx.AsyncClient, store: Store) -> None:
    """Policy: redirect_uris is required with the (default) authorization_code grant, so ``{}`` is a 400."""
    r = await register(client, {})
    assert_error(r, 400, "invalid_redirect_uri")
    assert await store.count_clients() == 0


async def test_client_credentials_client_needs_no_redirect(client: httpx.AsyncClient) -> None:
    r = await register(client, {"grant_types": ["client_credentials"], "token_endpoint_auth_method":
                                "client_secret_post"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["response_types"] == [] and "redirect_uris" not in body and body["client_secret"]


async def test_secret_expiry_follows_settings(
    settings: Settings, make_client: Callable[..., Any], clock: FrozenClock
) -> None:
    _, http = await make_client(settings, client_secret_ttl=3600)
    body = (await register(http, SDK_BODY)).json()
    assert body["client_secret_expires_at"] == body["client_id_issued_at"] + 3600 == int(clock.now()) + 3600


async def test_public_client_never_gets_a_secret(client: httpx.AsyncClient, store: Store) -> None:
    r = await register(client, {**PUBLIC_BODY, "client_secret": "chosen-by-client",
                                "client_secret_expires_at": 99})
    assert r.status_code == 201, r.text
    body = r.json()
    assert "client_secret" not in body and "client_secret_expires_at" not in body
    record = await store.get_client(body["client_id"])
    assert record is not None and record.secret_hash is None and record.secret_expires_at == 0
    assert "client_secret" not in record.metadata


async def test_unknown_and_privileged_fields_are_dropped(client: httpx.AsyncClient, store: Store) -> None:
    sent = {
        **SDK_BODY,
        "client_id": "https://evil.example/client",
        "client_secret": "chosen-by-client",
        "client_id_issued_at": 1,
        "registration_access_token": "chosen",
        "skip_consent": True,
        "trusted": True,
        "metadata": {"role": "admin"},
        "access_token_strategy": "opaque",
        "x-unknown": {"a": 1},
    }
    r = await register(client, sent)
    assert r.status_code == 201, r.text
    body = r.json()
    for name in ("skip_consent", "trusted", "metadata", "access_token_strategy", "x-unknown"):
        assert name not in body
    assert body["client_id"] != sent["client_id"]
    assert body["client_secret"] != "chosen-by-client"
    assert body["registration_access_token"] != "chosen"
    assert body["client_id_issued_at"] != 1
    record = await store.get_client(body["client_id"])
    assert record is not None
    assert not {"skip_consent", "trusted", "metadata", "client_id", "client_secret"} & record.metadata.keys()


async def test_human_readable_fields_are_cleaned(client: httpx.AsyncClient) -> None:
    r = await register(client, {
        **SDK_BODY,
        "client_name": "Pay\u202epal\x00",
        "client_name#fr": "Agent",
        "logo_uri": "https://app.example/logo.png",
        "contacts": ["ops@example.com"],
        "software_id": "sw-1",
        "software_version": "1.0",
    })
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["client_name"] == "Paypal"
    assert body["client_name#fr"] == "Agent"
    assert body["logo_uri"] == "https://app.example/logo.png"
    assert body["contacts"] == ["ops@example.com"]
    assert (body["software_id"], body["software_version"]) == ("sw-1", "1.0")


async def test_scope_is_intersected_never_rejected(client: httpx.AsyncClient) -> None:
    cases = {"read write offline_access root": "read write offline_access", "offline_access": "offline_access",
             "bogus": "read"}
    for asked, granted in cases.items():
        r = await register(client, {**SDK_BODY, "scope": asked})
        assert r.status_code == 201, r.text
        assert r.json()["scope"] == granted
    r = await register(client, {key: v for key, v in SDK_BODY.items() if key != "scope"})
    assert r.json()["scope"] == "read"


async def test_private_key_jwt_with_public_jwks(client: httpx.AsyncClient) -> None:
    jwk = ECKey.generate_key("P-256", auto_kid=True).as_dict(private=False)
    r = await register(client, {**SDK_BODY, "token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": [jwk]}})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["token_endpoint_auth_method"] == "private_key_jwt"
    assert body["jwks"] == {"keys": [jwk]}
    assert "client_secret" not in body and "client_secret_expires_at" not in body


async def test_secrets_are_not_stored_in_clear(client: httpx.AsyncClient, store: Store) -> None:
    body = (await register(client, SDK_BODY)).json()
    secret, rat = body["client_secret"], body["registration_access_token"]
    record = await store.get_client(body["client_id"])
    assert record is not None
    assert record.rat_hash == token_hash(rat) != rat
    assert record.secret_hash == token_hash(secret) != secret
    async with store.engine.connect() as conn:
        rows = [dict(row._mapping) for table in (t.clients, t.audit_log, t.artifacts)
                for row in await conn.execute(sa.select(table))]
    dump = json.dumps(rows, default=str)
    assert secret not in dump and rat not in dump
    events = [e["event"] for e in await store.audit_events()]
    assert "client.registered" in events


# -- rejections ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"null", "application/json"),
        (b"[]", "application/json"),
        (b'"text"', "application/json"),
        (b"{not json", "application/json"),
        (json.dumps(SDK_BODY).encode(), "text/plain"),
        (b"redirect_uris=https%3A%2F%2Fapp.example%2Fcb", "application/x-www-form-urlencoded"),
    ],
)
async def test_body_must_be_a_json_object(
    client: httpx.AsyncClient, store: Store, content: bytes, content_type: str
) -> None:
    r = await client.post("/register", content=content, headers={"content-type": content_type})
    assert_error(r, 400, "invalid_client_metadata")
    assert await store.count_clients() == 0


async def test_body_size_is_capped(client: httpx.AsyncClient, store: Store) -> None:
    r = await register(client, {**SDK_BODY, "client_name": "x" * 40_000})
    assert_error(r, 413, "invalid_request")
    assert await store.count_clients() == 0


@pytest.mark.parametrize(
    "uri",
    [
        "https://app.example/cb#frag",
        "https://app.example/cb#",
        "https://user@app.example/cb",
        "http://localhost:80@attacker.example/cb",
        "JavaScript:alert(1)",
        "data:text/html,hi",
        "FILE:///etc/passwd",
        "http://app.example/cb",
        "/relative/cb",
        "https://app.example/" + "a" * 2100,
    ],
)
async def test_bad_redirect_uris(client: httpx.AsyncClient, store: Store, uri: str) -> None:
    r = await register(client, {**SDK_BODY, "redirect_uris": [uri]})
    assert_error(r, 400, "invalid_redirect_uri")
    assert await store.count_clients() == 0


async def test_too_many_redirect_uris(client: httpx.AsyncClient) -> None:
    uris = [f"https://app.example/cb{i}" for i in range(21)]
    assert_error(await register(client, {**SDK_BODY, "redirect_uris": uris}), 400, "invalid_redirect_uri")


@pytest.mark.parametrize(
    "fields",
    [
        {"jwks": {"keys": [{"kty": "EC", "crv": "P-256", "x": "x", "y": "y"}]},
         "jwks_uri": "https://keys.example/jwks"},
        {"token_endpoint_auth_method": "private_key_jwt"},
        {"jwks": "private"},
        {"jwks_uri": "http://keys.example/jwks"},
        {"response_types": ["token"]},
        {"grant_types": ["implicit"], "response_types": ["token"]},
        {"grant_types": ["password"]},
        {"grant_types": ["refresh_token"]},
        {"grant_types": ["client_credentials"], "token_endpoint_auth_method": "none"},
        {"token_endpoint_auth_method": "tls_client_auth"},
        {"logo_uri": "javascript:alert(1)"},
        {"client_uri": "ftp://app.example/"},
        {"client_name": "n" * 500},
        {"contacts": [f"{i}@example.com" for i in range(20)]},
        {"application_type": "service"},
    ],
)
async def test_invalid_metadata(client: httpx.AsyncClient, store: Store, fields: dict[str, Any]) -> None:
    r = await register(client, {**SDK_BODY, **fields})
    assert_error(r, 400, "invalid_client_metadata")
    assert await store.count_clients() == 0


@pytest.mark.parametrize("member", ["d", "p", "q", "dp", "dq", "qi", "k"])
async def test_private_key_material_in_jwks(client: httpx.AsyncClient, store: Store, member: str) -> None:
    jwk = {**ECKey.generate_key("P-256").as_dict(private=False), member: "AAAA"}
    body = {**SDK_BODY, "token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": [jwk]}}
    assert_error(await register(client, body), 400, "invalid_client_metadata")
    assert await store.count_clients() == 0


async def test_only_post_is_allowed(client: httpx.AsyncClient) -> None:
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        r = await client.request(method, "/register")
        assert r.status_code == 405
        assert r.headers["allow"] == "POST"
        assert_no_store(r)


# -- software statements ----------------------------------------------------------------------------


@pytest.fixture
def publisher_key() -> ECKey:
    return ECKey.generate_key("P-256", auto_kid=True)


@pytest.fixture
async def trusting(
    settings: Settings, make_client: Callable[..., Any], publisher_key: ECKey
) -> httpx.AsyncClient:
    trusted = {PUBLISHER: {"keys": [publisher_key.as_dict(private=False)]}}
    _, http = await make_client(settings, software_statement_issuers=trusted)
    return http  # type: ignore[no-any-return]


def statement(key: Any, now: float, **claims: Any) -> str:
    payload = {"iss": PUBLISHER, "iat": int(now), "exp": int(now) + 600, **claims}
    return jwt.encode({"alg": "ES256", "kid": key.kid}, payload, key)


async def test_software_statement_values_take_precedence(
    trusting: httpx.AsyncClient, publisher_key: ECKey, clock: FrozenClock
) -> None:
    signed = statement(publisher_key, clock.now(), software_id="pub-agent", client_name="Verified Agent",
                       redirect_uris=["https://agent.example/cb"], skip_consent=True)
    r = await register(trusting, {**SDK_BODY, "client_name": "Impostor", "software_statement": signed})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["client_name"] == "Verified Agent"
    assert body["software_id"] == "pub-agent"
    assert body["redirect_uris"] == ["https://agent.example/cb"]
    assert body["software_statement"] == signed  # echoed unmodified
    assert "skip_consent" not in body and "iss" not in body and "exp" not in body


async def test_tampered_software_statement(
    trusting: httpx.AsyncClient, publisher_key: ECKey, clock: FrozenClock, store: Store
) -> None:
    header, _, signature = statement(publisher_key, clock.now()).split(".")
    forged_claims = {"iss": PUBLISHER, "client_name": "Forged"}
    forged_payload = jwt.encode({"alg": "ES256"}, forged_claims, publisher_key).split(".")[1]
    r = await register(trusting, {**SDK_BODY, "software_statement": f"{header}.{forged_payload}.{signature}"})
    assert_error(r, 400, "invalid_software_statement")
    assert await store.count_clients() == 0


async def test_malformed_or_expired_software_statement(
    trusting: httpx.AsyncClient, publisher_key: ECKey, clock: FrozenClock
) -> None:
    expired = statement(publisher_key, clock.now() - 7200)
    hmac = jwt.encode({"alg": "HS256"}, {"iss": PUBLISHER}, OctKey.generate_key(256))
    for bad in ("not-a-jwt", expired, hmac, {"iss": PUBLISHER}):
        r = await register(trusting, {**SDK_BODY, "software_statement": bad})
        assert_error(r, 400, "invalid_software_statement")


async def test_statement_from_unknown_issuer_is_unapproved(
    trusting: httpx.AsyncClient, client: httpx.AsyncClient, clock: FrozenClock
) -> None:
    stranger = ECKey.generate_key("P-256", auto_kid=True)
    signed = statement(stranger, clock.now(), iss="https://stranger.example")
    assert_error(await register(trusting, {**SDK_BODY, "software_statement": signed}), 400,
                 "unapproved_software_statement")
    # A server that trusts no publisher at all refuses every statement the same way.
    assert_error(await register(client, {**SDK_BODY, "software_statement": signed}), 400,
                 "unapproved_software_statement")


# -- registration policy ----------------------------------------------------------------------------


async def test_closed_registration(settings: Settings, make_client: Callable[..., Any], store: Store) -> None:
    _, http = await make_client(settings, registration="closed")
    r = await register(http, SDK_BODY)
    assert_error(r, 403, "access_denied")
    assert await store.count_clients() == 0


async def test_open_registration_is_rate_limited_per_address(
    settings: Settings, make_client: Callable[..., Any], clock: FrozenClock, store: Store
) -> None:
    ctx, http = await make_client(settings, registration_rate_limit=3)
    for _ in range(3):
        assert (await register(http, SDK_BODY)).status_code == 201
    r = await register(http, SDK_BODY)
    assert_error(r, 429, "rate_limited")
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert await store.count_clients() == 3
    # Another source address has its own budget, and the window resets.
    other = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(ctx), client=("10.0.0.7", 1)),
                              base_url=ISSUER)
    async with other:
        assert (await register(other, SDK_BODY)).status_code == 201
    clock.advance(61)
    assert (await register(http, SDK_BODY)).status_code == 201


async def test_public_registration_is_idempotent(client: httpx.AsyncClient, store: Store) -> None:
    first = (await register(client, PUBLIC_BODY)).json()
    r = await register(client, dict(reversed(list(PUBLIC_BODY.items()))))
    assert r.status_code == 201
    assert_no_store(r)
    again = r.json()
    assert again["client_id"] == first["client_id"]
    assert "registration_access_token" not in again and "registration_client_uri" not in again
    assert await store.count_clients() == 1
    # The first registrant keeps management of the client.
    rat = {"Authorization": f"Bearer {first['registration_access_token']}"}
    assert (await client.get(first["registration_client_uri"], headers=rat)).status_code == 200
    # Different metadata, or a confidential client, is a new registration.
    other = (await register(client, {**PUBLIC_BODY, "client_name": "other"})).json()
    assert other["client_id"] != first["client_id"]
    a = (await register(client, SDK_BODY)).json()
    b = (await register(client, SDK_BODY)).json()
    assert a["client_id"] != b["client_id"]
    assert await store.count_clients() == 4


async def test_client_cap(settings: Settings, make_client: Callable[..., Any], store: Store) -> None:
    _, http = await make_client(settings, max_clients=1)
    first = (await register(http, PUBLIC_BODY)).json()
    assert_error(await register(http, SDK_BODY), 403, "access_denied")
    assert await store.count_clients() == 1
    # A repeated public registration creates nothing, so it still works at the cap.
    r = await register(http, PUBLIC_BODY)
    assert r.status_code == 201 and r.json()["client_id"] == first["client_id"]


# -- initial access tokens ----------------------------------------------------------------------------


def assert_bearer_401(r: httpx.Response) -> None:
    assert_error(r, 401, "invalid_token")
    assert r.headers["www-authenticate"].startswith("Bearer ")
    assert 'error="invalid_token"' in r.headers["www-authenticate"]


@pytest.fixture
async def token_mode(settings: Settings, make_client: Callable[..., Any]) -> tuple[ServerContext, httpx.AsyncClient]:
    return await make_client(settings, registration="token")  # type: ignore[no-any-return]


async def test_token_mode_requires_a_bearer_iat(
    token_mode: tuple[ServerContext, httpx.AsyncClient], store: Store
) -> None:
    ctx, http = token_mode
    iat = await issue_initial_access_token(store, ttl=600, single_use=False)
    assert_bearer_401(await register(http, SDK_BODY))
    assert_bearer_401(await register(http, {**SDK_BODY, "initial_access_token": iat}))  # body is not a channel
    assert_bearer_401(await register(http, SDK_BODY, headers={"Authorization": "Bearer wrong"}))
    assert_bearer_401(await register(http, SDK_BODY, headers={"Authorization": f"Basic {iat}"}))
    assert await store.count_clients() == 0
    auth = {"Authorization": f"Bearer {iat}"}
    for _ in range(2):  # multi-use
        r = await register(http, SDK_BODY, headers=auth)
        assert r.status_code == 201, r.text
    assert await store.count_clients() == 2
    assert await store.get_artifact(iat, "initial_access_token") is None  # stored hashed
    assert await store.get_artifact(token_hash(iat), "initial_access_token") is not None
    del ctx


async def test_single_use_and_expired_iat(
    token_mode: tuple[ServerContext, httpx.AsyncClient], store: Store, clock: FrozenClock
) -> None:
    _, http = token_mode
    once = await issue_initial_access_token(store, ttl=600, single_use=True)
    auth = {"Authorization": f"Bearer {once}"}
    # A rejected registration does not spend it.
    assert_error(await register(http, {**SDK_BODY, "redirect_uris": ["javascript:x"]}, headers=auth), 400,
                 "invalid_redirect_uri")
    assert (await register(http, SDK_BODY, headers=auth)).status_code == 201
    assert_bearer_401(await register(http, SDK_BODY, headers=auth))
    short = await issue_initial_access_token(store, ttl=60, single_use=False)
    clock.advance(61)
    assert_bearer_401(await register(http, SDK_BODY, headers={"Authorization": f"Bearer {short}"}))
    assert await store.count_clients() == 1


async def test_issue_initial_access_token_rejects_bad_ttl(store: Store) -> None:
    with pytest.raises(ValueError):
        await issue_initial_access_token(store, ttl=0, single_use=True)
