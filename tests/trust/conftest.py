"""Fixtures for the trust tests: the trust store over the per-backend store, a key ring, trusted issuers."""

from __future__ import annotations

import pytest

from authgate.clock import FrozenClock
from authgate.crypto.keys import KeyRing
from authgate.store import Store
from authgate.trust.issuers import TrustedIssuers
from authgate.trust.store import TrustStore

ISSUER = "http://127.0.0.1:9000"


@pytest.fixture
def trust(store: Store) -> TrustStore:
    return TrustStore(store)


@pytest.fixture
async def keys(store: Store, clock: FrozenClock) -> KeyRing:
    ring = KeyRing(store, clock)
    await ring.ensure_key()
    return ring


@pytest.fixture
async def issuers(keys: KeyRing) -> TrustedIssuers:
    return TrustedIssuers({ISSUER: await keys.jwks()})
