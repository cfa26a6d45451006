"""Token-level vector kinds for ``vectors.json`` (picked up by ``test_vectors.py``):

* ``token``: a JWT through :func:`authgate.agentauth.tokens.verify_token` with the issuer key named in
  ``input.issuer_key`` (published under ``input.kid``), at ``input.now``; ``expect`` is ``{ok, claims}`` (a subset
  of the verified claims) or ``{error}`` — the Signature-Error code -11 assigns.
* ``exchange``: the person server's binding check (:func:`authgate.agentauth.person.check_binding`) on already
  verified resource- and presented-token claims; ``expect`` is ``{ok}`` or ``{error, status}``.
* ``requirement``: an ``AAuth-Requirement`` value we emit (:func:`authgate.agentauth.wire.requirement_header`),
  byte for byte, and the SDK's parse of it.

Regenerate with ``python -m tests.agentauth.make_token_vectors`` (Ed25519 is deterministic, so values are stable).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from joserfc.jwk import OKPKey

from authgate.agent.agentauth import parse_requirement
from authgate.agentauth import wire
from authgate.agentauth.errors import Problem, TokenProblem
from authgate.agentauth.person import check_binding
from authgate.agentauth.tokens import PublicKey, verify_token


async def check_token(case: Mapping[str, Any], doc: Mapping[str, Any]) -> None:
    inp, expect = case["input"], case["expect"]
    issuer_jwk = {k: v for k, v in doc["keys"][inp["issuer_key"]]["jwk"].items() if k != "kid"}

    async def resolve(iss: str, dwk: str, kid: str | None) -> PublicKey | None:
        return OKPKey.import_key(issuer_jwk) if kid == inp["kid"] else None

    async def revoked(iss: str, jti: str) -> bool:
        return jti in inp.get("revoked", [])

    async def run() -> dict[str, Any]:
        verified = await verify_token(inp["token"], types=inp["types"], resolve=resolve, now=inp["now"],
                                      expected_aud=inp.get("expected_aud"), expected_iss=inp.get("expected_iss"),
                                      signing_jwk=inp.get("signing_jwk"), is_revoked=revoked)
        return verified.claims

    if "error" in expect:
        with pytest.raises(TokenProblem) as err:
            await run()
        assert err.value.code == expect["error"], err.value
        return
    claims = await run()
    for name, value in expect["claims"].items():
        assert claims[name] == value, name


async def check_exchange(case: Mapping[str, Any], doc: Mapping[str, Any]) -> None:
    inp, expect = case["input"], case["expect"]

    def run() -> None:
        check_binding(inp["resource_token"], inp.get("presented_typ"), inp.get("presented"),
                      signer_jkt=inp["signer_jkt"], ps=inp["ps"])

    if "error" in expect:
        with pytest.raises(Problem) as err:
            run()
        assert (err.value.error, err.value.status) == (expect["error"], expect["status"])
        assert wire.H_SIGNATURE_ERROR not in err.value.headers
        return
    run()


async def check_requirement(case: Mapping[str, Any], doc: Mapping[str, Any]) -> None:
    inp, expect = case["input"], case["expect"]
    header = wire.requirement_header(inp["requirement"], **inp.get("params", {}))
    assert header == expect["header"]
    assert parse_requirement(header) == expect["parsed"]


CHECKERS = {"token": check_token, "exchange": check_exchange, "requirement": check_requirement}
