"""The JWT layer: typ checked first, Ed25519 only (EdDSA refused), cnf binding, audience, lifetimes, revocation,
issuer metadata checks. Each refusal carries the code -11 assigns."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from joserfc import jws
from joserfc.jwk import ECKey, OKPKey

from authgate.agentauth import wire
from authgate.agentauth.discovery import FetchFailed, IssuerKeys
from authgate.agentauth.errors import TokenProblem
from authgate.agentauth.tokens import (
    PublicKey,
    Signer,
    b64url,
    b64url_decode,
    base_claims,
    import_public_jwk,
    is_agent_id,
    is_server_identifier,
    public_jwk,
    thumbprint,
    verify_token,
)

ISS = "https://ap.example"
PS = "https://ps.example"
RES = "https://api.example"
NOW = int(time.time())


def _key(kid: str = "k1") -> OKPKey:
    return OKPKey.generate_key("Ed25519", parameters={"kid": kid, "alg": "Ed25519"}, private=True)


ISSUER_KEY = _key()
AGENT_KEY = _key("agent")
OTHER_KEY = _key("other")


async def resolve(iss: str, dwk: str, kid: str | None) -> PublicKey | None:
    return OKPKey.import_key(public_jwk(ISSUER_KEY)) if kid == "k1" else None


def agent_claims(**over: Any) -> dict[str, Any]:
    claims = {**base_claims(ISS, wire.DWK_AGENT, NOW, NOW + 3600), "sub": "aauth:bot@ap.example",
              "cnf": {"jwk": public_jwk(AGENT_KEY)}, "ps": PS}
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


def mint(typ: str, claims: dict[str, Any], key: OKPKey = ISSUER_KEY, alg: str = "Ed25519") -> str:
    return Signer(kid="k1", key=key, alg=alg).sign(typ, claims)


async def check(token: str, **kw: Any) -> dict[str, Any]:
    kw.setdefault("types", (wire.TYP_AGENT,))
    return (await verify_token(token, resolve=resolve, now=NOW, **kw)).claims


async def code_of(token: str, **kw: Any) -> str:
    with pytest.raises(TokenProblem) as info:
        await check(token, **kw)
    return info.value.code


def test_thumbprint_matches_the_spec_vector() -> None:
    jwk = {"crv": "Ed25519", "kty": "OKP", "x": "JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs", "alg": "Ed25519"}
    assert thumbprint(jwk) == "poqkLGiymh_W0uP6PZFw-dvez3QJT5SolqXBCW38r0U"


async def test_a_good_agent_token_verifies_and_header_says_ed25519() -> None:
    token = mint(wire.TYP_AGENT, agent_claims())
    assert (await check(token, signing_jwk=public_jwk(AGENT_KEY)))["sub"] == "aauth:bot@ap.example"
    assert jws.extract_compact(token.encode()).protected == {"typ": "aa-agent+jwt", "alg": "Ed25519", "kid": "k1"}


async def test_typ_confusion_is_invalid_jwt_before_any_key_lookup() -> None:
    looked_up: list[str] = []

    async def spy(iss: str, dwk: str, kid: str | None) -> PublicKey | None:
        looked_up.append(iss)
        return await resolve(iss, dwk, kid)

    person = {**base_claims(PS, wire.DWK_PERSON, NOW, NOW + 600), "aud": RES, "sub": "p1",
              "cnf": {"jwk": public_jwk(AGENT_KEY)}}
    token = mint(wire.TYP_PERSON, person)
    with pytest.raises(TokenProblem) as info:
        await verify_token(token, types=(wire.TYP_AUTH,), resolve=spy, now=NOW)
    assert info.value.code == wire.SIG_INVALID_JWT and looked_up == []


async def test_eddsa_header_refused() -> None:
    """A correctly signed token whose header says ``EdDSA`` (not ``Ed25519``, RFC 9864) is refused."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    header = b64url(json.dumps({"typ": wire.TYP_AGENT, "alg": "EdDSA", "kid": "k1"}).encode())
    payload = b64url(json.dumps(agent_claims()).encode())
    private = Ed25519PrivateKey.from_private_bytes(b64url_decode(str(ISSUER_KEY.as_dict(private=True)["d"])))
    signature = b64url(private.sign(f"{header}.{payload}".encode()))
    assert await code_of(f"{header}.{payload}.{signature}") == wire.SIG_INVALID_JWT
    # the same bytes under alg Ed25519 verify: the refusal is about the name alone
    header = b64url(json.dumps({"typ": wire.TYP_AGENT, "alg": "Ed25519", "kid": "k1"}).encode())
    signature = b64url(private.sign(f"{header}.{payload}".encode()))
    assert await check(f"{header}.{payload}.{signature}")


async def test_wrong_dwk_for_type() -> None:
    assert await code_of(mint(wire.TYP_AGENT, agent_claims(dwk=wire.DWK_PERSON))) == wire.SIG_INVALID_JWT


async def test_bound_to_another_key_is_invalid_key() -> None:
    token = mint(wire.TYP_AGENT, agent_claims())
    assert await code_of(token, signing_jwk=public_jwk(OTHER_KEY)) == wire.SIG_INVALID_KEY


async def test_expired_is_expired_jwt_without_skew() -> None:
    token = mint(wire.TYP_AGENT, agent_claims(iat=NOW - 100, exp=NOW))
    assert await code_of(token) == wire.SIG_EXPIRED_JWT


async def test_future_iat_is_clock_skew() -> None:
    assert await code_of(mint(wire.TYP_AGENT, agent_claims(iat=NOW + 300, exp=NOW + 900))) == wire.SIG_CLOCK_SKEW


async def test_person_token_lifetime_cap_and_scope_ban() -> None:
    base = {**base_claims(PS, wire.DWK_PERSON, NOW, NOW + 3601), "aud": RES, "sub": "p1",
            "cnf": {"jwk": public_jwk(AGENT_KEY)}}
    kw: dict[str, Any] = {"types": (wire.TYP_PERSON,)}
    assert await code_of(mint(wire.TYP_PERSON, base), **kw) == wire.SIG_INVALID_JWT
    ok = {**base, "exp": NOW + 3600}
    assert (await check(mint(wire.TYP_PERSON, ok), **kw))["sub"] == "p1"
    assert await code_of(mint(wire.TYP_PERSON, {**ok, "scope": "x"}), **kw) == wire.SIG_INVALID_JWT


async def test_wrong_audience() -> None:
    claims = {**base_claims(PS, wire.DWK_PERSON, NOW, NOW + 600), "aud": RES, "sub": "p1", "ps": PS,
              "scope": "read", "cnf": {"jwk": public_jwk(AGENT_KEY)}}
    token = mint(wire.TYP_AUTH, claims)
    assert await code_of(token, types=(wire.TYP_AUTH,), expected_aud="https://other.example") == wire.SIG_INVALID_JWT
    assert (await check(token, types=(wire.TYP_AUTH,), expected_aud=RES))["scope"] == "read"


async def test_ps_issued_auth_token_needs_ps_equal_iss() -> None:
    claims = {**base_claims(PS, wire.DWK_PERSON, NOW, NOW + 600), "aud": RES, "sub": "p1", "ps": ISS,
              "cnf": {"jwk": public_jwk(AGENT_KEY)}}
    assert await code_of(mint(wire.TYP_AUTH, claims), types=(wire.TYP_AUTH,)) == wire.SIG_INVALID_JWT


async def test_revoked() -> None:
    async def revoked(iss: str, jti: str) -> bool:
        return True

    assert await code_of(mint(wire.TYP_AGENT, agent_claims()), is_revoked=revoked) == wire.SIG_REVOKED_JWT


async def test_signature_by_another_issuer_key_and_unknown_kid() -> None:
    assert await code_of(mint(wire.TYP_AGENT, agent_claims(), key=OTHER_KEY)) == wire.SIG_INVALID_JWT
    forged = Signer(kid="nope", key=ISSUER_KEY).sign(wire.TYP_AGENT, agent_claims())
    assert await code_of(forged) == wire.SIG_UNKNOWN_KEY


async def test_resource_token_reads_person_token_jti_alias() -> None:
    claims = {**base_claims(RES, wire.DWK_RESOURCE, NOW, NOW + 300), "aud": PS, "sub": "p1", "ps": PS,
              "person_token_jti": "j1", "agent_jkt": thumbprint(public_jwk(AGENT_KEY)), "scope": "a b"}
    out = await check(mint(wire.TYP_RESOURCE, claims), types=(wire.TYP_RESOURCE,))
    assert out["presented_jti"] == "j1"


def test_jwk_rules() -> None:
    good = public_jwk(AGENT_KEY)
    assert import_public_jwk(good)
    for bad, code in [({**good, "alg": "EdDSA"}, wire.SIG_UNSUPPORTED_ALGORITHM),
                      ({k: v for k, v in good.items() if k != "alg"}, wire.SIG_UNSUPPORTED_ALGORITHM),
                      ({**good, "alg": "ES256"}, wire.SIG_INVALID_KEY),
                      ({**good, "d": good["x"]}, wire.SIG_INVALID_KEY),
                      ({**good, "x": "!!"}, wire.SIG_INVALID_KEY)]:
        with pytest.raises(TokenProblem) as info:
            import_public_jwk(bad)
        assert info.value.code == code
    ec = ECKey.generate_key("P-256", parameters={"alg": "ES256"}, private=True)
    assert import_public_jwk(public_jwk(ec))


def test_identifiers() -> None:
    assert is_server_identifier("https://ps.example")
    for bad in ("https://PS.example", "https://ps.example/", "https://ps.example:8443", "http://ps.example",
                "https://ps.example/x", "https://u@ps.example", "https://ps.example?x", None, 3):
        assert not is_server_identifier(bad)
    assert is_server_identifier("http://127.0.0.1:8000", allow_http_loopback=True)
    assert not is_server_identifier("http://127.0.0.1:8000")
    assert is_agent_id("aauth:Bot.1@ap.example") and not is_agent_id("aauth:@ap.example")
    assert not is_agent_id("bot@ap.example")


async def test_issuer_metadata_must_name_the_issuer_and_same_origin_jwks() -> None:
    docs: dict[str, Any] = {}

    async def fetch(url: str) -> Any:
        if url not in docs:
            raise FetchFailed("404")
        return docs[url]

    keys = IssuerKeys(fetch, clock=time.time)
    docs[f"{ISS}/.well-known/aauth-agent.json"] = {"jwks_uri": f"{ISS}/jwks"}
    with pytest.raises(TokenProblem) as info:
        await keys.resolve(ISS, wire.DWK_AGENT, "k1")
    assert info.value.code == wire.SIG_ISSUER_MISSING
    docs[f"{ISS}/.well-known/aauth-agent.json"] = {"issuer": "https://evil.example", "jwks_uri": f"{ISS}/jwks"}
    keys = IssuerKeys(fetch, clock=time.time)
    with pytest.raises(TokenProblem) as info:
        await keys.resolve(ISS, wire.DWK_AGENT, "k1")
    assert info.value.code == wire.SIG_ISSUER_MISMATCH
    docs[f"{ISS}/.well-known/aauth-agent.json"] = {"issuer": ISS, "jwks_uri": "https://evil.example/jwks"}
    keys = IssuerKeys(fetch, clock=time.time)
    with pytest.raises(TokenProblem) as info:
        await keys.resolve(ISS, wire.DWK_AGENT, "k1")
    assert info.value.code == wire.SIG_UNKNOWN_KEY
    docs[f"{ISS}/.well-known/aauth-agent.json"] = {"issuer": ISS, "jwks_uri": f"{ISS}/jwks"}
    docs[f"{ISS}/jwks"] = {"keys": [{**public_jwk(ISSUER_KEY), "kid": "k1"}]}
    keys = IssuerKeys(fetch, clock=time.time)
    assert await keys.resolve(ISS, wire.DWK_AGENT, "k1") is not None
    assert await keys.resolve(ISS, wire.DWK_AGENT, "k2") is None
