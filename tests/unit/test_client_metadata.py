"""Client metadata validation (authgate.dcr.metadata) and software statements, without HTTP."""

from __future__ import annotations

import time
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, RSAKey

from authgate.config import Settings
from authgate.dcr.metadata import metadata_digest, uses_secret, validate_client_metadata
from authgate.dcr.software_statement import verify_software_statement
from authgate.errors import (
    InvalidClientMetadata,
    InvalidRedirectURI,
    InvalidSoftwareStatement,
    OAuthError,
    UnapprovedSoftwareStatement,
)

SETTINGS = Settings(issuer="https://as.example", scopes=("read", "write", "offline_access"), default_scopes=("read",))
CB = ["http://127.0.0.1:3030/callback"]


def validate(**fields: Any) -> dict[str, Any]:
    return validate_client_metadata({"redirect_uris": CB, **fields}, SETTINGS)


def test_defaults_follow_rfc_7591() -> None:
    meta = validate()
    assert meta == {
        "redirect_uris": CB,
        "token_endpoint_auth_method": "client_secret_basic",
        "grant_types": ["authorization_code"],
        "response_types": ["code"],
        "scope": "read",
    }
    assert uses_secret(meta)


def test_redirect_uris_required_for_authorization_code() -> None:
    with pytest.raises(InvalidRedirectURI):
        validate_client_metadata({}, SETTINGS)
    meta = validate_client_metadata({"grant_types": ["client_credentials"]}, SETTINGS)
    assert meta["response_types"] == [] and "redirect_uris" not in meta


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"grant_types": ["implicit"], "response_types": ["token"]}, InvalidClientMetadata),
        ({"grant_types": ["password"]}, InvalidClientMetadata),
        ({"grant_types": ["refresh_token"], "response_types": ["code"]}, InvalidClientMetadata),
        ({"grant_types": ["refresh_token"], "response_types": []}, InvalidClientMetadata),
        ({"response_types": ["token"]}, InvalidClientMetadata),
        ({"response_types": ["code id_token"]}, InvalidClientMetadata),
        ({"response_types": []}, InvalidClientMetadata),
        ({"grant_types": []}, InvalidClientMetadata),
        ({"grant_types": "authorization_code"}, InvalidClientMetadata),
        ({"grant_types": ["urn:ietf:params:oauth:grant-type:jwt-bearer"]}, InvalidClientMetadata),
        ({"grant_types": ["client_credentials"], "response_types": ["code"]}, InvalidClientMetadata),
        ({"grant_types": ["client_credentials"], "token_endpoint_auth_method": "none"}, InvalidClientMetadata),
        ({"token_endpoint_auth_method": "client_secret_jwt"}, InvalidClientMetadata),
        ({"token_endpoint_auth_method": ["none"]}, InvalidClientMetadata),
        ({"application_type": "desktop"}, InvalidClientMetadata),
        ({"application_type": "web", "redirect_uris": ["com.example.app:/cb"]}, InvalidRedirectURI),
        ({"scope": ["read"]}, InvalidClientMetadata),
        ({"client_name": 7}, InvalidClientMetadata),
        ({"client_name": "x" * 201}, InvalidClientMetadata),
        ({"client_name#fr": "x" * 201}, InvalidClientMetadata),
        ({"logo_uri": "javascript:alert(1)"}, InvalidClientMetadata),
        ({"logo_uri#de": "data:image/png;base64,AAAA"}, InvalidClientMetadata),
        ({"tos_uri": "https://user@evil.example/tos"}, InvalidClientMetadata),
        ({"policy_uri": "/relative"}, InvalidClientMetadata),
        ({"client_uri": "https://a.example/" + "x" * 2000}, InvalidClientMetadata),
        ({"contacts": "ops@example.com"}, InvalidClientMetadata),
        ({"contacts": [f"c{i}@example.com" for i in range(11)]}, InvalidClientMetadata),
        ({"software_id": {"x": 1}}, InvalidClientMetadata),
        ({"jwks_uri": "http://keys.example/jwks"}, InvalidClientMetadata),
        ({"token_endpoint_auth_signing_alg": "HS256"}, InvalidClientMetadata),
    ],
)
def test_rejections(fields: dict[str, Any], error: type[OAuthError]) -> None:
    with pytest.raises(error):
        validate(**fields)


def test_response_types_compared_as_sets_and_deduplicated() -> None:
    assert validate(response_types=["code", "code"])["response_types"] == ["code"]
    # "code id_token" and "id_token code" are the same response type: same (refused) outcome, same message.
    messages = set()
    for spelling in ("code id_token", "id_token  code"):
        with pytest.raises(InvalidClientMetadata) as info:
            validate(response_types=[spelling])
        messages.add(info.value.description)
    assert len(messages) == 1


def test_scope_intersection_keeps_offline_access() -> None:
    assert validate(scope="mcp offline_access")["scope"] == "offline_access"
    assert validate(scope="write bogus read write")["scope"] == "write read"
    assert validate(scope="bogus")["scope"] == "read"
    assert validate(scope="")["scope"] == "read"


def test_text_is_cleaned_and_i18n_variants_kept() -> None:
    meta = validate(**{
        "client_name": "Good\u202e App\x00\n",
        "client_name#ja-Jpan-JP": "アプリ",
        "client_name#not a tag": "dropped",
        "logo_uri#en": "https://app.example/logo-en.png",
        "contacts": ["ops@example.com", "ops@example.com", "\x07"],
        "software_version": " 1.2 ",
    })
    assert meta["client_name"] == "Good App"
    assert meta["client_name#ja-Jpan-JP"] == "アプリ"
    assert "client_name#not a tag" not in meta
    assert meta["logo_uri#en"] == "https://app.example/logo-en.png"
    assert meta["contacts"] == ["ops@example.com"]
    assert meta["software_version"] == "1.2"


def test_privileged_and_unknown_fields_are_dropped() -> None:
    meta = validate(skip_consent=True, trusted=True, metadata={"role": "admin"}, client_id="mine",
                    client_secret="mine", sector_identifier_uri="https://x.example/s", foo="bar")
    assert not {"skip_consent", "trusted", "metadata", "client_id", "client_secret", "sector_identifier_uri",
                "foo"} & meta.keys()


def _public_jwk() -> dict[str, Any]:
    return ECKey.generate_key("P-256", auto_kid=True).as_dict(private=False)


def test_jwks_rules() -> None:
    meta = validate(token_endpoint_auth_method="private_key_jwt", jwks={"keys": [_public_jwk()]})
    assert meta["jwks"]["keys"][0]["kty"] == "EC" and not uses_secret(meta)
    with pytest.raises(InvalidClientMetadata):
        validate(token_endpoint_auth_method="private_key_jwt")
    with pytest.raises(InvalidClientMetadata):
        validate(jwks={"keys": [_public_jwk()]}, jwks_uri="https://keys.example/jwks")
    private = ECKey.generate_key("P-256").as_dict(private=True)
    with pytest.raises(InvalidClientMetadata):
        validate(jwks={"keys": [private]})
    with pytest.raises(InvalidClientMetadata):
        validate(jwks={"keys": [OctKey.generate_key(256).as_dict(private=False)]})
    with pytest.raises(InvalidClientMetadata):
        validate(jwks={"keys": [{"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}]})
    with pytest.raises(InvalidClientMetadata):
        validate(jwks=[_public_jwk()])
    assert validate(jwks_uri="https://keys.example/jwks")["jwks_uri"] == "https://keys.example/jwks"


def test_digest_is_canonical() -> None:
    a = validate(client_name="x", token_endpoint_auth_method="none")
    b = dict(reversed(list(a.items())))
    assert metadata_digest(a) == metadata_digest(b)
    assert metadata_digest(a) != metadata_digest({**a, "client_name": "y"})


# -- software statements ----------------------------------------------------------------------------

ISS = "https://publisher.example"
NOW = int(time.time())


@pytest.fixture(scope="module")
def publisher_key() -> ECKey:
    return ECKey.generate_key("P-256", auto_kid=True)


def _trusted(key: ECKey) -> dict[str, dict[str, Any]]:
    return {ISS: {"keys": [key.as_dict(private=False)]}}


def _sign(key: Any, claims: dict[str, Any], alg: str = "ES256") -> str:
    return jwt.encode({"alg": alg, "kid": key.kid}, claims, key)


def test_statement_claims_returned_without_jwt_bookkeeping(publisher_key: ECKey) -> None:
    claims = {"iss": ISS, "iat": NOW, "exp": NOW + 600, "jti": "1", "software_id": "sw", "client_name": "Pub"}
    out = verify_software_statement(_sign(publisher_key, claims), _trusted(publisher_key), NOW)
    assert out == {"software_id": "sw", "client_name": "Pub"}


@pytest.mark.parametrize(
    "mutate",
    [
        lambda k: _sign(k, {"iss": ISS, "exp": NOW - 3600}),  # expired
        lambda k: _sign(k, {"iss": ISS, "nbf": NOW + 3600}),  # not yet valid
        lambda k: _sign(k, {"iss": ISS, "iat": NOW + 3600}),  # issued in the future
        lambda k: _sign(k, {"software_id": "no-iss"}),
        lambda k: _sign(k, {"iss": ISS})[:-4] + "AAAA",  # bad signature
        lambda k: _sign(ECKey.generate_key("P-256", auto_kid=True), {"iss": ISS}),  # wrong key
        lambda k: "not.a.jws",
        lambda k: 12,
        lambda k: jwt.encode({"alg": "HS256"}, {"iss": ISS}, OctKey.generate_key(256)),
        lambda k: "eyJhbGciOiJub25lIn0.eyJpc3MiOiJodHRwczovL3B1Ymxpc2hlci5leGFtcGxlIn0.",  # alg none
    ],
)
def test_invalid_statements(publisher_key: ECKey, mutate: Any) -> None:
    with pytest.raises(InvalidSoftwareStatement):
        verify_software_statement(mutate(publisher_key), _trusted(publisher_key), NOW)


def test_unknown_issuer_is_unapproved(publisher_key: ECKey) -> None:
    statement = _sign(publisher_key, {"iss": "https://stranger.example"})
    with pytest.raises(UnapprovedSoftwareStatement):
        verify_software_statement(statement, _trusted(publisher_key), NOW)


def test_rsa_statement_verifies() -> None:
    key = RSAKey.generate_key(2048, auto_kid=True)
    statement = jwt.encode({"alg": "PS256", "kid": key.kid}, {"iss": ISS, "software_id": "r"}, key,
                           algorithms=["PS256"])
    trusted = {ISS: {"keys": [key.as_dict(private=False)]}}
    assert verify_software_statement(statement, trusted, NOW) == {"software_id": "r"}
