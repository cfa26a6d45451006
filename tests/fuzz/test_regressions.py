"""Regression tests for bugs the Hypothesis parser suite found (tests/fuzz/test_parsers_hypothesis.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from authgate.crypto import httpsig
from authgate.crypto.jwk import JWKError, load_public_jwk
from authgate.crypto.signature_key import SignatureKey, jwt_scheme

NOW = 1_800_000_000


@pytest.mark.parametrize("member", ["kty", "crv", "x", "y", "alg"])
def test_jwk_with_non_string_member_is_a_jwk_error_not_a_type_error(member: str) -> None:
    """A JSON array in a JWK member made the key cache lookup raise TypeError (unhashable): a 500."""
    jwk: dict[str, Any] = {"kty": "OKP", "crv": "Ed25519", "x": "A" * 43, "alg": "Ed25519", member: ["list"]}
    with pytest.raises(JWKError):
        load_public_jwk(jwk, allow_eddsa=True)


async def test_signed_request_whose_resolved_jwk_has_an_array_member_is_invalid_key() -> None:
    """The path that reaches it: a key resolved from a fetched document (``jwks_uri`` scheme, agent metadata)."""
    key = Ed25519PrivateKey.generate()
    headers = httpsig.sign_request(method="GET", url="https://api.example/x", headers={}, body=b"", key=key,
                                   created=NOW, signature_key=jwt_scheme("a.b.c"))

    async def resolve(_: SignatureKey) -> Mapping[str, Any]:
        return {"kty": "OKP", "crv": "Ed25519", "x": ["not", "a", "string"]}

    with pytest.raises(httpsig.SignatureError) as err:
        await httpsig.verify_request(method="GET", authority="api.example", path="/x", query=None,
                                     headers=headers, body=b"", now=NOW + 1, resolve_key=resolve, replay=None)
    assert err.value.code == "invalid_key"
