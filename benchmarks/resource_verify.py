"""Access-token verification throughput at the resource server: authgate's JWTVerifier vs a bare PyJWT decode.

Both verify the same ES256 RFC 9068 token with the key already parsed; ours also checks typ, kid lookup,
alg allowlist, iss/aud (canonical)/exp/nbf/iat and required claims, and builds AccessClaims. One process,
one core, no HTTP. Run: ``.venv/bin/python benchmarks/resource_verify.py [seconds-per-pass]``.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import joserfc
import jwt as pyjwt
import machine
from joserfc import jwt
from joserfc.jwk import ECKey

from authgate.resource import JWTVerifier

ISS = "https://as.example"
AUD = "https://rs.example/mcp"


def hardware() -> str:
    return machine.hardware(f"joserfc {joserfc.__version__}", f"PyJWT {pyjwt.__version__}")

def rate(fn: Callable[[], Any], seconds: float) -> float:
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(100):
            fn()
        n += 100
    return n / elapsed


async def main(seconds: float) -> None:
    key = ECKey.generate_key("P-256", parameters={"kid": "k1", "alg": "ES256", "use": "sig"}, private=True)
    now = int(time.time())
    claims = {"iss": ISS, "sub": "user-1", "aud": AUD, "client_id": "agent-1", "scope": "notes:read notes:write",
              "iat": now, "nbf": now, "exp": now + 3600, "jti": "jti-1"}
    token = jwt.encode({"alg": "ES256", "typ": "at+jwt", "kid": "k1"}, claims, key)
    jwks = {"keys": [dict(key.as_dict(private=False))]}

    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda _: httpx.Response(200, json=jwks))) as http:
        verifier = JWTVerifier(ISS, AUD, jwks_uri=ISS + "/jwks.json", http_client=http)
        await verifier.verify(token)  # warm the key cache
        def ours() -> None:
            # drive the coroutine without a task switch: the hot path never awaits I/O once keys are cached
            coro = verifier.verify(token)
            try:
                coro.send(None)
            except StopIteration:
                return
            raise RuntimeError("verify awaited I/O on the hot path")

        pub = key.get_op_key("verify")

        def plain_pyjwt() -> None:
            pyjwt.decode(token, pub, algorithms=["ES256"], audience=AUD, issuer=ISS,
                         options={"require": ["exp", "iat", "sub", "jti"]})

        results: dict[str, list[float]] = {"authgate JWTVerifier": [], "PyJWT decode": []}
        for _ in range(5):
            results["authgate JWTVerifier"].append(rate(ours, seconds))
            results["PyJWT decode"].append(rate(plain_pyjwt, seconds))

    print(hardware())
    print(f"ES256 at+jwt, {len(token)} bytes; median of 5 passes of {seconds:.1f} s, single thread")
    for name, rates in results.items():
        print(f"  {name:22s} {statistics.median(rates):8.0f} verifications/s "
              f"(min {min(rates):.0f}, max {max(rates):.0f}; {1e6 / statistics.median(rates):.0f} µs/op)")


if __name__ == "__main__":
    asyncio.run(main(float(sys.argv[1]) if len(sys.argv) > 1 else 1.0))
