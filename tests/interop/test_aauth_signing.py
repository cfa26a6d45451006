"""Interop with the public Python peer: PyPI ``aauth`` 0.5.0 / ``aauth-signing`` 0.2.0, both directions.

Its signer → our verifier: it emits unpadded base64url ``Signature``, DER ECDSA and the raw URL netloc as
``@authority``; our verifier accepts each (lenient flags, on by default) and records what arrived, and refuses
each when the flag is off. Our signer → its ``RequestVerifier``: accepted when we sign in its base64url form; our
strict RFC 8941 output is refused by its parser (the finding in the spec note §15.3.1), which a test pins so we
notice when the peer is fixed. Agent tokens are minted by the peer's ``create_agent_token`` under an agent
provider key; our side verifies that JWT itself before trusting its ``cnf.jwk``.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping
from typing import Any

import pytest
from aauth.agent.signer import AgentRequestSigner
from aauth.resource.verifier import RequestVerifier
from aauth_signing.keys.jwk import public_key_to_jwk
from aauth_signing.tokens.agent_token import create_agent_token
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from authgate.crypto import httpsig
from authgate.crypto.jwk import PrivateKey, load_public_jwk, public_jwk
from authgate.crypto.signature_key import SignatureKey, jwt_scheme

AP = "https://ap.example"
AGENT = "aauth:bot@ap.example"
RESOURCE = "resource.example"

AP_KEY = Ed25519PrivateKey.generate()
AP_JWKS = {"keys": [public_key_to_jwk(AP_KEY.public_key(), "ap-1")]}


def fetch_jwks(iss: str, dwk: str | None = None, kid: str | None = None) -> dict[str, Any]:
    assert iss == AP
    return AP_JWKS


def agent_token(key: PrivateKey) -> str:
    return str(create_agent_token(AP, AGENT, public_jwk(key), AP_KEY, "ap-1"))


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


async def resolve_agent_token(sk: SignatureKey) -> Mapping[str, Any]:
    """A minimal ``jwt`` resolver for these tests: check the agent token's signature and typ, return cnf.jwk."""
    token = sk.jwt
    assert token is not None
    head, payload, sig = token.split(".")
    header = json.loads(_b64(head))
    assert header["typ"] == "aa-agent+jwt" and header["kid"] == "ap-1"
    ap_pub = AP_KEY.public_key()
    assert isinstance(ap_pub, Ed25519PublicKey)
    ap_pub.verify(_b64(sig), f"{head}.{payload}".encode())
    claims = json.loads(_b64(payload))
    assert claims["iss"] == AP and claims["exp"] > time.time()
    return dict(claims["cnf"]["jwk"])


def peer_sign(key: PrivateKey, method: str, url: str, body: bytes | None = None,
              headers: dict[str, str] | None = None, role: str = "resource") -> dict[str, str]:
    hdrs = dict(headers or {})
    signer = AgentRequestSigner(key, agent_token=agent_token(key))
    hdrs.update(signer.sign_request(method, url, hdrs, body, recipient_role=role))
    return hdrs


async def ours_verify(hdrs: Mapping[str, str], *, method: str = "GET", authority: str = RESOURCE,
                      path: str = "/api/items", query: str | None = None, body: bytes = b"",
                      **kw: Any) -> httpsig.VerifiedRequest:
    return await httpsig.verify_request(method=method, authority=authority, path=path, query=query, headers=hdrs,
                                        body=body, now=time.time(), resolve_key=resolve_agent_token, replay=None,
                                        **kw)


# -- its signer → our verifier ----------------------------------------------------------------------------


async def test_peer_ed25519_get_with_query_verifies_and_records_base64url() -> None:
    key = Ed25519PrivateKey.generate()
    hdrs = peer_sign(key, "GET", f"https://{RESOURCE}/api/items?page=2")
    assert "=" not in hdrs["Signature"].split("=:", 1)[1]  # the peer's unpadded base64url
    got = await ours_verify(hdrs, query="page=2")
    assert got.encoding_seen == "base64url"
    assert got.alg == "Ed25519"
    assert "@query" in got.covered  # the peer auto-covers the query, with the leading "?"
    assert got.key_thumbprint == load_public_jwk(public_jwk(key)).jkt
    assert got.signature_key.scheme == "jwt"


async def test_peer_base64url_refused_when_lenient_decoding_is_off() -> None:
    hdrs = peer_sign(Ed25519PrivateKey.generate(), "GET", f"https://{RESOURCE}/api/items")
    with pytest.raises(httpsig.SignatureError) as err:
        await ours_verify(hdrs, accept_base64url=False)
    assert err.value.code == "invalid_signature"


async def test_peer_post_to_person_server_covers_body_and_digest() -> None:
    key = Ed25519PrivateKey.generate()
    body = b'{"resource_token":"x","presented_token":"y"}'
    hdrs = peer_sign(key, "POST", f"https://{RESOURCE}/token", body, {"Content-Type": "application/json"}, "ps")
    got = await ours_verify(hdrs, method="POST", path="/token", body=body,
                            required_components=("content-type", "content-digest"))
    assert {"content-type", "content-digest"} <= set(got.covered)
    with pytest.raises(httpsig.SignatureError) as err:
        await ours_verify(hdrs, method="POST", path="/token", body=body.replace(b"x", b"z"))
    assert (err.value.code, err.value.reason) == ("invalid_signature", "digest_mismatch")


async def test_peer_es256_der_signature_accepted_and_recorded() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    hdrs = peer_sign(key, "GET", f"https://{RESOURCE}/api/items")
    got = await ours_verify(hdrs)
    assert got.alg == "ES256" and got.ecdsa_der
    with pytest.raises(httpsig.SignatureError) as err:
        await ours_verify(hdrs, accept_der=False)
    assert err.value.code == "invalid_signature"


async def test_peer_raw_authority_accepted_only_when_it_names_us() -> None:
    hdrs = peer_sign(Ed25519PrivateKey.generate(), "GET", "https://Resource.Example:443/api/items")
    got = await ours_verify(hdrs, authority="Resource.Example:443")
    assert got.authority == "Resource.Example:443"
    with pytest.raises(httpsig.SignatureError):
        await ours_verify(hdrs, authority="Resource.Example:443", accept_raw_authority=False)
    with pytest.raises(httpsig.SignatureError):  # the Host we got is another site: no fallback rescues it
        await ours_verify(hdrs, authority="other.example")


# -- our signer → its RequestVerifier ---------------------------------------------------------------------


def peer_verifier() -> RequestVerifier:
    return RequestVerifier([RESOURCE], fetch_jwks, resource_id=f"https://{RESOURCE}")


def ours_sign(key: PrivateKey, method: str, url: str, body: bytes = b"", headers: dict[str, str] | None = None,
              encoding: str = "base64url") -> dict[str, str]:
    hdrs = dict(headers or {})
    hdrs.update(httpsig.sign_request(method=method, url=url, headers=hdrs, body=body, key=key,
                                     signature_key=jwt_scheme(agent_token(key)), signature_encoding=encoding))
    return hdrs


@pytest.mark.parametrize("make_key", [Ed25519PrivateKey.generate, lambda: ec.generate_private_key(ec.SECP256R1())],
                         ids=["Ed25519", "ES256"])
def test_our_signature_verifies_with_peer_request_verifier(make_key: Any) -> None:
    key = make_key()
    hdrs = ours_sign(key, "GET", f"https://{RESOURCE}/api/items")
    result = peer_verifier().verify_request("GET", f"https://{RESOURCE}/api/items", hdrs, None,
                                            require_identity=True)
    assert result["valid"], result
    assert result["token_type"] == "aa-agent+jwt" and result["agent_id"] == AGENT


def test_our_post_with_digest_verifies_with_peer() -> None:
    body = b'{"scope":"data.read"}'
    hdrs = ours_sign(Ed25519PrivateKey.generate(), "POST", f"https://{RESOURCE}/authorize", body,
                     {"Content-Type": "application/json"})
    assert hdrs["Content-Digest"].startswith("sha-256=:")
    url = f"https://{RESOURCE}/authorize"
    assert peer_verifier().verify_request("POST", url, hdrs, body, require_identity=True)["valid"]
    assert not peer_verifier().verify_request("POST", url, hdrs, body + b" ", require_identity=True)["valid"]


def test_peer_refuses_our_strict_rfc8941_signature() -> None:
    """Spec note §15.3.1: the peer's parser only takes unpadded base64url. Pinned: fix our default only if the
    peer changes, never loosen our emission silently."""
    hdrs = ours_sign(Ed25519PrivateKey.generate(), "GET", f"https://{RESOURCE}/api/items", encoding="base64")
    assert hdrs["Signature"].endswith("==:")
    result = peer_verifier().verify_request("GET", f"https://{RESOURCE}/api/items", hdrs, None, require_identity=True)
    assert not result["valid"]


async def test_round_trip_our_signer_to_our_verifier_strict() -> None:
    key = Ed25519PrivateKey.generate()
    hdrs = ours_sign(key, "GET", f"https://{RESOURCE}/api/items", encoding="base64")
    got = await ours_verify(hdrs, accept_base64url=False, accept_der=False, accept_raw_authority=False)
    assert got.encoding_seen == "base64"
