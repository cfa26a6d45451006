"""Our lean ES256 compact signer against joserfc's verifier (and the other way round for the header)."""

from __future__ import annotations

import base64
import json

import pytest
from joserfc import jwt
from joserfc.errors import BadSignatureError
from joserfc.jwk import ECKey

from authgate.crypto.keys import sign_compact


def test_tokens_verify_with_joserfc_and_carry_the_header() -> None:
    key = ECKey.generate_key("P-256", parameters={"kid": "k1"}, private=True)
    claims = {"iss": "https://as.example", "sub": "ünïcode", "scope": "read write", "exp": 2_000_000_000}
    token = sign_compact(key, {"alg": "ES256", "typ": "at+jwt", "kid": "k1"}, claims)
    decoded = jwt.decode(token, key, algorithms=["ES256"])
    assert dict(decoded.claims) == claims and decoded.header == {"alg": "ES256", "typ": "at+jwt", "kid": "k1"}
    signature = base64.urlsafe_b64decode(token.rsplit(".", 1)[1] + "==")
    assert len(signature) == 64  # R || S, never DER
    assert "=" not in token


def test_another_key_does_not_verify() -> None:
    key = ECKey.generate_key("P-256", private=True)
    other = ECKey.generate_key("P-256", private=True)
    token = sign_compact(key, {"alg": "ES256", "typ": "JWT"}, {"sub": "a"})
    with pytest.raises(BadSignatureError):
        jwt.decode(token, other, algorithms=["ES256"])
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"alg": "ES256", "typ": "JWT"}
