"""Signed-request verification throughput: raw signature verify vs authgate's RFC 9421 verifier vs ``aauth``'s.

One run measures, for an agent key of each algorithm (Ed25519, ES256), on the same GET request with an agent
token in ``Signature-Key: sig=jwt;jwt="…"``:

- **raw**: one ``cryptography`` verify of the signature over a prepared signature base (the floor);
- **authgate, signature**: :func:`authgate.crypto.httpsig.verify_request` with the signer's JWK already known
  (parse headers, check coverage/window/scheme, build the base, verify) → ratio to raw (target at most 1.5x);
- **authgate, full**: the same plus a lean ``jwt`` resolver that verifies the agent token (Ed25519 JWT, typ, iss,
  exp, ``cnf.jwk``) on every request, as the protocol layer must;
- **aauth RequestVerifier**: PyPI ``aauth`` 0.5.0's resource-side ``verify_request`` (signature and agent token,
  JWKS from an in-memory fetcher) → ratio authgate full / aauth (target at least 2x).

Medians over interleaved 20 ms batches (so every contender sees the same load on a shared machine), one
process, one core, no HTTP, no event-loop switch (the hot path never awaits I/O).
Run: ``.venv/bin/python benchmarks/httpsig_verify.py [seconds-per-pass]``.
"""

from __future__ import annotations

import base64
import json
import statistics
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import cryptography
import machine
from aauth.agent.signer import AgentRequestSigner
from aauth.resource.verifier import RequestVerifier
from aauth_signing.keys.jwk import public_key_to_jwk
from aauth_signing.tokens.agent_token import create_agent_token
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from authgate.crypto import httpsig
from authgate.crypto.jwk import PrivateKey, load_public_jwk, public_jwk
from authgate.crypto.signature_key import SignatureKey, jwt_scheme

AP, AGENT, HOST = "https://ap.example", "aauth:bench@ap.example", "resource.example"


def hardware() -> str:
    return machine.hardware(f"cryptography {cryptography.__version__}")

def rate(fn: Callable[[], Any], seconds: float) -> float:
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(5):
            fn()
        n += 5
    return n / elapsed


def run_sync(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError("awaited I/O on the hot path")


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def bench_alg(name: str, agent_key: PrivateKey, seconds: float) -> tuple[dict[str, float], dict[str, float]]:
    ap_key = Ed25519PrivateKey.generate()
    ap_jwks = {"keys": [public_key_to_jwk(ap_key.public_key(), "ap-1")]}
    ap_vk = load_public_jwk(ap_jwks["keys"][0])
    token = create_agent_token(AP, AGENT, public_jwk(agent_key), ap_key, "ap-1")
    url = f"https://{HOST}/api/items"
    ours_headers = httpsig.sign_request(method="GET", url=url, headers={}, body=b"", key=agent_key,
                                        signature_key=jwt_scheme(token))
    peer_headers = AgentRequestSigner(agent_key, agent_token=token).sign_request("GET", url, {})
    agent_jwk = public_jwk(agent_key)

    async def known_key(sk: SignatureKey) -> Mapping[str, Any]:
        return agent_jwk

    async def verify_agent_token(sk: SignatureKey) -> Mapping[str, Any]:
        jwt = sk.jwt or ""
        head, payload, sig = jwt.split(".")
        header = json.loads(_b64(head))
        if header.get("typ") != "aa-agent+jwt" or header.get("alg") != "Ed25519" or header.get("kid") != "ap-1":
            raise httpsig.SignatureError("invalid_jwt")
        ap_vk.key.verify(_b64(sig), f"{head}.{payload}".encode())  # type: ignore[call-arg]
        claims = json.loads(_b64(payload))
        if claims["iss"] != AP or claims["exp"] <= time.time() or claims.get("dwk") != "aauth-agent.json":
            raise httpsig.SignatureError("invalid_jwt")
        return dict(claims["cnf"]["jwk"])

    def ours(resolver: Callable[[SignatureKey], Coroutine[Any, Any, Mapping[str, Any]]]) -> Callable[[], None]:
        def go() -> None:
            run_sync(httpsig.verify_request(method="GET", authority=HOST, path="/api/items", query=None,
                                            headers=ours_headers, body=b"", now=time.time(), resolve_key=resolver,
                                            replay=None))
        return go

    base = httpsig.signature_base(list(httpsig.MANDATORY_COMPONENTS), {"created": int(time.time())}, method="GET",
                                  authority=HOST, path="/api/items", query=None,
                                  headers={"signature-key": ours_headers["Signature-Key"]}).encode()
    if isinstance(agent_key, Ed25519PrivateKey):
        raw_sig = agent_key.sign(base)
        pub_ed = agent_key.public_key()

        def raw() -> None:
            pub_ed.verify(raw_sig, base)
    else:
        der_sig = agent_key.sign(base, ec.ECDSA(hashes.SHA256()))
        pub_ec = agent_key.public_key()

        def raw() -> None:
            pub_ec.verify(der_sig, base, ec.ECDSA(hashes.SHA256()))

    verifier = RequestVerifier([HOST], lambda *a: ap_jwks, resource_id=f"https://{HOST}")

    def peer() -> None:
        if not verifier.verify_request("GET", url, peer_headers, None, require_identity=True)["valid"]:
            raise RuntimeError("aauth refused its own request")

    ours(known_key)()
    ours(verify_agent_token)()
    peer()
    fns = {"raw verify": raw, "authgate, signature": ours(known_key), "authgate, full": ours(verify_agent_token),
           "aauth RequestVerifier": peer}
    # Interleaved short batches: on a shared, noisy machine every contender sees the same load pattern.
    results: dict[str, list[float]] = {k: [] for k in fns}
    deadline = time.perf_counter() + seconds * 5 * len(fns)
    while time.perf_counter() < deadline:
        for k, fn in fns.items():
            results[k].append(rate(fn, 0.02))
    medians = {k: statistics.median(v) for k, v in results.items()}
    print(f"\n{name} agent key (agent token: Ed25519 JWT, {len(token)} bytes)")
    for k, r in medians.items():
        print(f"  {k:24s} {r:8.0f} /s  {1e6 / r:7.1f} µs/op  (best batch {max(results[k]):.0f} /s)")
    return medians, {k: max(v) for k, v in results.items()}


def main(seconds: float) -> None:
    print(hardware())
    print(f"medians over interleaved 20 ms batches, {seconds * 5:.1f} s per contender, single thread")
    for name, key in (("Ed25519", Ed25519PrivateKey.generate()), ("ES256", ec.generate_private_key(ec.SECP256R1()))):
        m, r_best = bench_alg(name, key, seconds)
        print(f"  ratio authgate signature cost / raw verify cost: {m['raw verify'] / m['authgate, signature']:.2f}x"
              f" (best batches: {r_best['raw verify'] / r_best['authgate, signature']:.2f}x)"
              f"  (target <= 1.5x)")
        print(f"  ratio authgate full / aauth RequestVerifier throughput: "
              f"{m['authgate, full'] / m['aauth RequestVerifier']:.2f}x  (target >= 2x)")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("seconds", nargs="?", type=float, default=1.0, help="seconds per pass (default 1.0)")
    parser.add_argument("--quick", action="store_true", help="0.2 s per pass (CI smoke run)")
    cli = parser.parse_args()
    main(0.2 if cli.quick else cli.seconds)
