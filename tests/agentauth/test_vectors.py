"""Runs ``vectors.json``: every case through the checker registered for its ``kind``.

Kinds here: ``signature`` (a signed request through :func:`authgate.crypto.httpsig.verify_request`, and, for
cases with ``sign``, byte-for-byte re-signing by :func:`sign_request`), ``rfc9421_base`` (an RFC 9421 Appendix B
example) and ``thumbprint`` (RFC 7638). Other kinds (the protocol layer's token vectors) plug in without editing
this file: a module ``tests/agentauth/vectorkinds_<name>.py`` that defines ``CHECKERS = {kind: async fn(case,
doc)}`` is picked up. A case whose kind has no checker fails, so no vector is silently skipped.
"""

from __future__ import annotations

import base64
import importlib
import json
import pkgutil
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from authgate.crypto import httpsig
from authgate.crypto.jwk import jwk_thumbprint, load_public_jwk
from authgate.crypto.signature_key import SignatureKey

VECTORS = Path(__file__).with_name("vectors.json")
DOC: dict[str, Any] = json.loads(VECTORS.read_text())
Checker = Callable[[Mapping[str, Any], Mapping[str, Any]], Awaitable[None]]


def private_key(doc: Mapping[str, Any], name: str) -> Ed25519PrivateKey:
    key = load_pem_private_key(doc["keys"][name]["private_pem"].encode(), None)
    assert isinstance(key, Ed25519PrivateKey)
    return key


async def check_signature(case: Mapping[str, Any], doc: Mapping[str, Any]) -> None:
    inp, expect = case["input"], case["expect"]

    async def resolve(sk: SignatureKey) -> Mapping[str, Any]:
        return dict(inp["jwk"])

    async def verify() -> httpsig.VerifiedRequest:
        return await httpsig.verify_request(
            method=inp["method"], authority=inp["authority"], path=inp["path"], query=inp["query"],
            headers=inp["headers"], body=inp["body"].encode(), now=inp["now"], resolve_key=resolve, replay=None,
            **inp["options"])

    if "error" in expect:
        with pytest.raises(httpsig.SignatureError) as err:
            await verify()
        assert err.value.code == expect["error"], err.value
        if "reason" in expect:
            assert err.value.reason == expect["reason"]
        for name, value in expect.get("headers", {}).items():
            assert err.value.headers()[name] == value
        assert set(err.value.headers()) == {"Signature-Error", *expect.get("headers", {})}
        return
    got = await verify()
    for name in ("covered", "encoding_seen", "alg", "ecdsa_der", "authority"):
        if name in expect:
            value = getattr(got, name)
            assert (list(value) if isinstance(value, tuple) else value) == expect[name], name
    if "jkt" in expect:
        assert got.key_thumbprint == expect["jkt"]
    if "sign" in case:
        spec = case["sign"]
        produced = httpsig.sign_request(
            method=inp["method"], url=spec["url"], headers=spec["headers"], body=inp["body"].encode(),
            key=private_key(doc, spec["key"]), signature_key=spec["signature_key"], created=spec["created"])
        for name, value in produced.items():
            assert inp["headers"][name] == value, name


async def check_rfc9421_base(case: Mapping[str, Any], doc: Mapping[str, Any]) -> None:
    inp, expect = case["input"], case["expect"]
    base = httpsig.signature_base(inp["covered"], inp["params"], method=inp["method"], authority=inp["authority"],
                                  path=inp["path"], query=inp["query"], headers=inp["headers"])
    assert base == expect["base"]
    key = private_key(doc, inp["key"])
    assert key.sign(base.encode()) == base64.b64decode(expect["signature"])  # Ed25519 is deterministic
    public = load_public_jwk(doc["keys"][inp["key"]]["jwk"]).key
    assert isinstance(public, Ed25519PublicKey)
    public.verify(base64.b64decode(expect["signature"]), base.encode())


async def check_thumbprint(case: Mapping[str, Any], doc: Mapping[str, Any]) -> None:
    assert jwk_thumbprint(case["input"]["jwk"]) == case["expect"]["jkt"]
    assert load_public_jwk(case["input"]["jwk"]).jkt == case["expect"]["jkt"]


CHECKERS: dict[str, Checker] = {
    "signature": check_signature,
    "rfc9421_base": check_rfc9421_base,
    "thumbprint": check_thumbprint,
}

for _mod in pkgutil.iter_modules([str(Path(__file__).parent)]):
    if _mod.name.startswith("vectorkinds_"):
        CHECKERS.update(importlib.import_module(f"{__package__}.{_mod.name}").CHECKERS)


def test_vector_ids_are_unique() -> None:
    ids = [c["id"] for c in DOC["cases"]]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("case", DOC["cases"], ids=[c["id"] for c in DOC["cases"]])
async def test_vector(case: Mapping[str, Any]) -> None:
    checker = CHECKERS.get(case["kind"])
    assert checker is not None, f"no checker for kind {case['kind']!r}"
    await checker(case, DOC)
