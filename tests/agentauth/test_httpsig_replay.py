"""Replay cache for signed requests: a signed state-changing request is accepted once, in memory and in the
database (SQLite and PostgreSQL, via the ``store`` fixture), whatever encoding the replayed copy uses."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from authgate.agentauth.replay import DatabaseReplayCache, MemoryReplayCache, ReplayCache
from authgate.clock import FrozenClock
from authgate.crypto import httpsig
from authgate.crypto.jwk import PrivateKey, public_jwk
from authgate.crypto.signature_key import SignatureKey, jwt_scheme
from authgate.store import Store
from authgate.store import tables as t

HOST = "api.example"


def signed(key: PrivateKey, created: int, body: bytes = b'{"amount":5}', path: str = "/v1/pay") -> dict[str, str]:
    hdrs = {"Content-Type": "application/json"}
    hdrs.update(httpsig.sign_request(method="POST", url=f"https://{HOST}{path}", headers=hdrs, body=body, key=key,
                                     signature_key=jwt_scheme("a.b.c"), created=created))
    return hdrs


async def verify(hdrs: Mapping[str, str], key: PrivateKey, now: float, replay: ReplayCache,
                 body: bytes = b'{"amount":5}', path: str = "/v1/pay") -> httpsig.VerifiedRequest:
    jwk = public_jwk(key)

    async def resolve(sk: SignatureKey) -> Mapping[str, Any]:
        return jwk
    return await httpsig.verify_request(method="POST", authority=HOST, path=path, query=None, headers=hdrs,
                                        body=body, now=now, resolve_key=resolve, replay=replay)


async def assert_replay_refused(hdrs: Mapping[str, str], key: PrivateKey, now: float, replay: ReplayCache,
                                **kw: Any) -> None:
    with pytest.raises(httpsig.SignatureError) as err:
        await verify(hdrs, key, now, replay, **kw)
    assert (err.value.code, err.value.reason) == ("invalid_signature", "replay")


async def test_memory_second_use_refused_distinct_requests_pass() -> None:
    clock = FrozenClock(1_800_000_000)
    cache = MemoryReplayCache(clock)
    key = Ed25519PrivateKey.generate()
    now = int(clock.now())
    first = signed(key, now)
    await verify(first, key, now, cache)
    await assert_replay_refused(first, key, now + 1, cache)
    # same second, same key, same path, different body: a different request, not a replay
    await verify(signed(key, now, b'{"amount":6}'), key, now, cache, body=b'{"amount":6}')
    await verify(signed(key, now, path="/v1/other"), key, now, cache, path="/v1/other")
    # the same request signed by another key is another agent's request
    other = Ed25519PrivateKey.generate()
    await verify(signed(other, now), other, now, cache)


async def test_replay_in_another_encoding_is_still_a_replay() -> None:
    """The key is the signature base, not the signature bytes: base64url, DER and ECDSA's (r, n-s) twin of the
    same signed request are the same request."""
    cache = MemoryReplayCache(FrozenClock(1_800_000_000))
    now = 1_800_000_000
    ed = Ed25519PrivateKey.generate()
    first = signed(ed, now)
    await verify(first, ed, now, cache)
    raw = base64.b64decode(first["Signature"][5:-1])
    url = {**first, "Signature": f"sig=:{base64.urlsafe_b64encode(raw).rstrip(b'=').decode()}:"}
    await assert_replay_refused(url, ed, now, cache)

    p256 = ec.generate_private_key(ec.SECP256R1())
    first = signed(p256, now)
    await verify(first, p256, now, cache)
    raw = base64.b64decode(first["Signature"][5:-1])
    r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    der = encode_dss_signature(r, s)
    await assert_replay_refused({**first, "Signature": f"sig=:{base64.b64encode(der).decode()}:"}, p256, now, cache)
    n = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    twin = r.to_bytes(32, "big") + (n - s).to_bytes(32, "big")
    await assert_replay_refused({**first, "Signature": f"sig=:{base64.b64encode(twin).decode()}:"}, p256, now,
                                cache)
    assert decode_dss_signature(der) == (r, s)


async def test_memory_cache_expiry_and_bound() -> None:
    clock = FrozenClock(1000)
    cache = MemoryReplayCache(clock, max_entries=2)
    assert not await cache.seen_before(b"a", 10)
    assert await cache.seen_before(b"a", 10)
    clock.advance(10)
    assert not await cache.seen_before(b"a", 10)  # expired: a new use
    assert not await cache.seen_before(b"b", 10)
    assert await cache.seen_before(b"c", 10)  # full of live entries: fail closed
    clock.advance(11)
    assert not await cache.seen_before(b"c", 10)  # purged, room again
    assert len(cache) == 1


async def test_database_second_use_refused(store: Store, clock: FrozenClock) -> None:
    cache = DatabaseReplayCache(store)
    key = ec.generate_private_key(ec.SECP256R1())
    now = int(clock.now())
    first = signed(key, now)
    await verify(first, key, now, cache)
    await assert_replay_refused(first, key, now + 30, cache)
    # another process sharing the database sees the same record
    await assert_replay_refused(first, key, now + 30, DatabaseReplayCache(store))


async def test_database_seen_before_is_atomic_and_expires(store: Store, clock: FrozenClock) -> None:
    cache = DatabaseReplayCache(store)
    results = await asyncio.gather(*(DatabaseReplayCache(store).seen_before(b"k" * 32, 60) for _ in range(8)))
    assert sorted(results) == [False] + [True] * 7  # exactly one caller saw it first
    assert await cache.seen_before(b"k" * 32, 60)
    clock.advance(61)
    assert not await cache.seen_before(b"k" * 32, 60)  # an expired row is taken over
    assert await cache.seen_before(b"k" * 32, 60)


async def test_database_purge(store: Store, clock: FrozenClock) -> None:
    cache = DatabaseReplayCache(store, purge_every=3600)
    for i in range(5):
        await cache.seen_before(bytes([i]) * 32, 10)
    clock.advance(11)
    await cache.seen_before(b"x" * 32, 10)
    assert await cache.purge() == 5
    async with store.engine.connect() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(t.signature_replay))).scalar_one() == 1
