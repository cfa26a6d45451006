"""RFC 8414 metadata and the JWKS."""

from __future__ import annotations

import httpx

from tests.conftest import ISSUER


async def test_metadata_issuer_is_byte_identical(client: httpx.AsyncClient) -> None:
    for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
        r = await client.get(path)
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/json")
        doc = r.json()
        assert doc["issuer"] == ISSUER
        assert doc["code_challenge_methods_supported"] == ["S256"]
        assert doc["authorization_response_iss_parameter_supported"] is True
        assert doc["client_id_metadata_document_supported"] is True
        assert doc["registration_endpoint"] == ISSUER + "/register"
        assert "offline_access" in doc["scopes_supported"]


async def test_jwks_publishes_public_keys_only(client: httpx.AsyncClient) -> None:
    r = await client.get("/jwks.json")
    keys = r.json()["keys"]
    assert keys and all("d" not in k and k["kid"] for k in keys)
