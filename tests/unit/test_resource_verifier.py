"""JWTVerifier and RemoteJWKS against a mock JWKS endpoint: each refusal has its own logged reason."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, RSAKey

from authgate.clock import FrozenClock
from authgate.resource import JWTVerifier, TokenRejected, VerifierUnavailable

ISS = "https://as.example"
AUD = "https://rs.example/mcp"
JWKS_URI = ISS + "/jwks.json"


class FakeAS:
    def __init__(self) -> None:
        self.key = ECKey.generate_key("P-256", parameters={"kid": "k1", "alg": "ES256", "use": "sig"}, private=True)
        self.extra: list[dict[str, Any]] = []
        self.requests: list[str] = []
        self.status = 200
        self.metadata_issuer = ISS

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request.url.path)
        if self.status != 200:
            return httpx.Response(self.status)
        if request.url.path == "/.well-known/oauth-authorization-server":
            return httpx.Response(200, json={"issuer": self.metadata_issuer, "jwks_uri": JWKS_URI})
        keys = [dict(self.key.as_dict(private=False)), *self.extra]
        return httpx.Response(200, json={"keys": keys})

    def sign(self, claims: dict[str, Any], key: Any = None, **header: Any) -> str:
        key = key or self.key
        hdr = {"alg": "ES256", "typ": "at+jwt", "kid": key.kid, **header}
        return jwt.encode({k: v for k, v in hdr.items() if v is not None}, claims, key,
                          algorithms=[hdr["alg"]])


@pytest.fixture
def fake() -> FakeAS:
    return FakeAS()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(time.time())


@pytest.fixture
async def http(fake: FakeAS) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(fake.handler)) as client:
        yield client


@pytest.fixture
def verifier(http: httpx.AsyncClient, clock: FrozenClock) -> JWTVerifier:
    return JWTVerifier(ISS, AUD, jwks_uri=JWKS_URI, http_client=http, clock=clock, leeway=5)


def claims(clock: FrozenClock, **overrides: Any) -> dict[str, Any]:
    now = int(clock.now())
    base = {"iss": ISS, "sub": "u1", "aud": AUD, "client_id": "c1", "scope": "a b", "iat": now, "exp": now + 60,
            "jti": "j1"}
    return {k: v for k, v in {**base, **overrides}.items() if v is not None}


def b64url(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def reason(verifier: JWTVerifier, token: str) -> str:
    with pytest.raises(TokenRejected) as info:
        await verifier.verify(token)
    return info.value.reason


async def test_valid_token(verifier: JWTVerifier, fake: FakeAS, clock: FrozenClock) -> None:
    c = await verifier.verify(fake.sign(claims(clock)))
    assert (c.subject, c.client_id, c.scopes, c.token_id) == ("u1", "c1", frozenset({"a", "b"}), "j1")
    assert c.expires_at == int(clock.now()) + 60
    assert c.claims["iss"] == ISS
    with pytest.raises(TypeError):
        c.claims["sub"] = "x"  # type: ignore[index]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"iss": ISS + "/"}, "wrong_issuer"),
        ({"aud": "https://rs.example/other"}, "wrong_audience"),
        ({"aud": []}, "malformed_claim"),
        ({"aud": None}, "missing_claim"),
        ({"exp": None}, "missing_claim"),
        ({"exp": "tomorrow"}, "malformed_claim"),
        ({"exp": True}, "malformed_claim"),
        ({"sub": None}, "missing_claim"),
        ({"jti": None}, "missing_claim"),
        ({"client_id": 7}, "malformed_claim"),
        ({"iat": None}, "missing_claim"),
        ({"scope": ["a"]}, "malformed_claim"),
    ],
)
async def test_claim_checks(
    verifier: JWTVerifier, fake: FakeAS, clock: FrozenClock, overrides: dict[str, Any], expected: str
) -> None:
    assert await reason(verifier, fake.sign(claims(clock, **overrides))) == expected


async def test_time_checks(verifier: JWTVerifier, fake: FakeAS, clock: FrozenClock) -> None:
    now = int(clock.now())
    assert await reason(verifier, fake.sign(claims(clock, exp=now - 5))) == "expired"
    await verifier.verify(fake.sign(claims(clock, exp=now - 4)))  # inside leeway
    assert await reason(verifier, fake.sign(claims(clock, nbf=now + 6))) == "not_yet_valid"
    assert await reason(verifier, fake.sign(claims(clock, iat=now + 60))) == "issued_in_future"


async def test_header_checks(verifier: JWTVerifier, fake: FakeAS, clock: FrozenClock) -> None:
    c = claims(clock)
    assert await reason(verifier, fake.sign(c, typ="JWT")) == "wrong_type"
    assert await reason(verifier, fake.sign(c, typ=None)) == "wrong_type"
    await verifier.verify(fake.sign(c, typ="AT+JWT"))  # media types compare case-insensitively
    head, body, sig = fake.sign(c).split(".")
    crit_head = b64url({**json.loads(base64.urlsafe_b64decode(head + "==")), "crit": ["x-ext"], "x-ext": 1})
    assert await reason(verifier, f"{crit_head}.{body}.{sig}") == "unsupported_crit"
    hs = fake.sign(c, key=OctKey.import_key(b"k" * 32, {"kid": "k1"}), alg="HS256")
    assert await reason(verifier, hs) == "alg_not_allowed"
    head, body, _ = fake.sign(c).split(".")
    assert await reason(verifier, f"{head}.{body}.") == "malformed"
    assert await reason(verifier, "a.b") == "malformed"
    assert await reason(verifier, "!!!.e30.e30") == "malformed"
    assert await reason(verifier, "x" * 9000) == "too_large"


async def test_key_checks(verifier: JWTVerifier, fake: FakeAS, clock: FrozenClock) -> None:
    c = claims(clock)
    other = ECKey.generate_key("P-256", parameters={"kid": "k1"}, private=True)
    assert await reason(verifier, fake.sign(c, key=other)) == "bad_signature"
    rsa = RSAKey.generate_key(2048, parameters={"kid": "r1", "alg": "RS256"}, private=True)
    fake.extra.append(dict(rsa.as_dict(private=False)))
    await verifier.verify(fake.sign(c, key=rsa, alg="RS256"))
    # a token that claims ES256 but names the RSA key: the key's own alg forbids it
    mixed = ECKey.generate_key("P-256", parameters={"kid": "r1"}, private=True)
    assert await reason(verifier, fake.sign(c, key=mixed)) == "alg_key_mismatch"


async def test_jwks_ignores_symmetric_private_and_encryption_keys(
    verifier: JWTVerifier, fake: FakeAS, clock: FrozenClock
) -> None:
    oct_key = OctKey.import_key(b"s" * 32, {"kid": "hmac"})
    enc = ECKey.generate_key("P-256", parameters={"kid": "enc", "use": "enc"}, private=True)
    priv = ECKey.generate_key("P-256", parameters={"kid": "priv"}, private=True)
    fake.extra += [dict(oct_key.as_dict()), dict(enc.as_dict(private=False)), dict(priv.as_dict(private=True)),
                   {"kty": "EC", "kid": "junk"}, "not-a-key"]  # type: ignore[list-item]
    await verifier.verify(fake.sign(claims(clock)))
    held = verifier.keys.snapshot()
    assert set(held) == {"k1", "priv"}
    assert not held["priv"].is_private  # private members dropped on import


async def test_token_without_kid_uses_the_only_key(verifier: JWTVerifier, fake: FakeAS, clock: FrozenClock) -> None:
    await verifier.verify(fake.sign(claims(clock), kid=None))
    fake.extra.append(dict(ECKey.generate_key("P-256", parameters={"kid": "k2"}).as_dict(private=False)))
    clock.advance(4000)  # past max_age: the set is refreshed and now holds two keys
    assert await reason(verifier, fake.sign(claims(clock), kid=None)) == "unknown_key"


async def test_refetch_rate_limit_and_max_age(verifier: JWTVerifier, fake: FakeAS, clock: FrozenClock) -> None:
    token = fake.sign(claims(clock, exp=int(clock.now()) + 10_000))
    await verifier.verify(token)
    assert fake.requests == ["/jwks.json"]
    stranger = ECKey.generate_key("P-256", parameters={"kid": "zz"}, private=True)
    for _ in range(3):
        assert await reason(verifier, fake.sign(claims(clock), key=stranger)) == "unknown_key"
    assert len(fake.requests) == 2
    clock.advance(31)
    assert await reason(verifier, fake.sign(claims(clock), key=stranger)) == "unknown_key"
    assert len(fake.requests) == 3
    clock.advance(3601)
    await verifier.verify(token)  # cache past max_age: refreshed once
    await verifier.verify(token)
    assert len(fake.requests) == 4


async def test_failed_refresh_keeps_known_keys(verifier: JWTVerifier, fake: FakeAS, clock: FrozenClock) -> None:
    token = fake.sign(claims(clock, exp=int(clock.now()) + 10_000))
    await verifier.verify(token)
    fake.status = 503
    clock.advance(4000)
    await verifier.verify(token)  # stale but still usable
    await verifier.verify(token)  # and the failure is not retried on every request
    assert len(fake.requests) == 2


async def test_no_keys_at_all_is_unavailable(verifier: JWTVerifier, fake: FakeAS, clock: FrozenClock) -> None:
    fake.status = 500
    token = fake.sign(claims(clock))
    with pytest.raises(VerifierUnavailable):
        await verifier.verify(token)
    with pytest.raises(VerifierUnavailable):
        await verifier.verify(token)
    assert len(fake.requests) == 1  # retry is rate limited
    fake.status = 200
    clock.advance(6)
    await verifier.verify(token)


async def test_discovery_checks_issuer(http: httpx.AsyncClient, fake: FakeAS, clock: FrozenClock) -> None:
    fake.metadata_issuer = ISS + "/"
    v = JWTVerifier(ISS, AUD, http_client=http, clock=clock)
    with pytest.raises(VerifierUnavailable):
        await v.verify(fake.sign(claims(clock)))
    fake.metadata_issuer = ISS
    clock.advance(10)
    await v.verify(fake.sign(claims(clock)))
    assert fake.requests[-2:] == ["/.well-known/oauth-authorization-server", "/jwks.json"]


async def test_concurrent_first_use_fetches_once(verifier: JWTVerifier, fake: FakeAS, clock: FrozenClock) -> None:
    token = fake.sign(claims(clock))
    await asyncio.gather(*(verifier.verify(token) for _ in range(20)))
    assert fake.requests == ["/jwks.json"]


@pytest.mark.parametrize("algs", [["HS256"], ["none"], [], ["ES256", "HS512"]])
def test_symmetric_or_none_algorithms_cannot_be_configured(algs: list[str]) -> None:
    with pytest.raises(ValueError):
        JWTVerifier(ISS, AUD, algorithms=algs)


async def test_a_verified_token_is_remembered_but_its_times_and_key_are_checked_every_time(
        fake: FakeAS, http: httpx.AsyncClient, clock: FrozenClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """``verified_cache``: the signature of a token that passed is not checked again, but expiry is, and a JWKS
    refresh that drops the key that verified it makes the token fail as it would have without the cache."""
    from joserfc import jws

    import authgate.resource.verifier as module

    checked: list[str] = []
    real = jws.deserialize_compact

    def counting(token: str, *args: Any, **kwargs: Any) -> Any:
        checked.append(token)
        return real(token, *args, **kwargs)

    monkeypatch.setattr(module.jws, "deserialize_compact", counting)
    real_es256 = module._verify_es256

    def counting_es256(key: Any, parts: list[str]) -> bytes:
        checked.append(".".join(parts))
        return real_es256(key, parts)

    monkeypatch.setattr(module, "_verify_es256", counting_es256)
    cached = JWTVerifier(ISS, AUD, jwks_uri=JWKS_URI, http_client=http, clock=clock, leeway=5, verified_cache=2,
                         refetch_interval=0)
    token = fake.sign(claims(clock))
    first, again = await cached.verify(token), await cached.verify(token)
    assert again is first and len(checked) == 1
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with pytest.raises(TokenRejected, match="bad_signature"):
        await cached.verify(tampered)  # any other string is verified in full
    assert len(checked) == 2
    clock.advance(120)
    with pytest.raises(TokenRejected, match="expired"):
        await cached.verify(token)  # remembered, yet expired
    clock.advance(-120)
    fresh = fake.sign(claims(clock, jti="j2"))
    await cached.verify(fresh)
    old_key = fake.key
    fake.key = ECKey.generate_key("P-256", parameters={"kid": "k1", "alg": "ES256", "use": "sig"}, private=True)
    cached.keys._loaded_at = clock.now() - 7200  # past max_age: the next lookup refreshes the JWKS
    with pytest.raises(TokenRejected, match="bad_signature"):
        await cached.verify(fresh)  # kid k1 is now another key: the remembered result no longer counts
    assert old_key is not fake.key and len(checked) == 4
    # bounded: only the most recent verified_cache entries are kept
    for jti in ("j3", "j4", "j5"):
        await cached.verify(fake.sign(claims(clock, jti=jti)))
    assert len(cached._verified) == 2
    with pytest.raises(ValueError, match="verified_cache"):
        JWTVerifier(ISS, AUD, verified_cache=-1)


async def test_es256_signature_encodings_other_than_r_s_base64url_are_refused(
        verifier: JWTVerifier, fake: FakeAS, clock: FrozenClock) -> None:
    """The ES256 path checks the signature itself: only the one RFC 7518 §3.4 form (R || S, 64 bytes,
    base64url without padding) passes; a DER signature, padding, or characters outside base64url are refused,
    and a P-256 signature by another key fails."""
    import base64

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    token = fake.sign(claims(clock))
    assert (await verifier.verify(token)).subject == "u1"
    head, body, sig = token.split(".")
    private = fake.key.private_key
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    der = private.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
    der_token = f"{head}.{body}." + base64.urlsafe_b64encode(der).decode().rstrip("=")
    other = ECKey.generate_key("P-256", parameters={"kid": "k1"}, private=True)
    for bad in (der_token, token + "=", f"{head}.{body}.{sig[:-2]}+/", f"{head}.{body}.{sig[:10]} {sig[10:]}",
                fake.sign(claims(clock), key=other)):
        with pytest.raises(TokenRejected, match="bad_signature"):
            await verifier.verify(bad)
