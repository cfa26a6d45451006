"""Writes the token-level cases (kinds ``token``, ``exchange``, ``requirement``) into ``vectors.json``.

Run ``python -m tests.agentauth.make_token_vectors``. Deterministic: Ed25519 signatures, fixed keys (the issuer is
RFC 9421's B.1.4 test key; the agent keys come from fixed seeds), fixed ``jti`` and times. Other kinds in the file
are kept as they are; cases of these kinds are replaced.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, load_pem_private_key
from joserfc.jwk import OKPKey

from authgate.agentauth import wire
from authgate.agentauth.tokens import Signer, b64url, thumbprint
from authgate.crypto.jwk import public_jwk

VECTORS = Path(__file__).with_name("vectors.json")
KINDS = ("token", "exchange", "requirement")
NOW = 1730217600
AP, PS, RES = "https://ap.example", "https://ps.example", "https://api.example"
KID = "rfc9421-ed25519"


def seeded(name: str) -> tuple[Ed25519PrivateKey, dict[str, Any]]:
    key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(f"authgate vector key {name}".encode()).digest())
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
    return key, {"source": f"Ed25519 seed SHA-256('authgate vector key {name}')", "private_pem": pem,
                 "jwk": public_jwk(key)}


def main() -> None:
    doc = json.loads(VECTORS.read_text())
    issuer_private = load_pem_private_key(doc["keys"][KID]["private_pem"].encode(), None)
    assert isinstance(issuer_private, Ed25519PrivateKey)
    raw = issuer_private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    pub = public_jwk(issuer_private)
    signer = Signer(kid=KID, key=OKPKey.import_key({**pub, "d": b64url(raw)}))
    _, agent_entry = seeded("agent")
    _, other_entry = seeded("other")
    doc["keys"]["authgate-agent"] = agent_entry
    doc["keys"]["authgate-other"] = other_entry
    agent_jwk, other_jwk = agent_entry["jwk"], other_entry["jwk"]
    jkt = thumbprint(agent_jwk)

    def claims(iss: str, dwk: str, jti: str, **extra: Any) -> dict[str, Any]:
        return {"iss": iss, "dwk": dwk, "jti": jti, "iat": NOW, "exp": NOW + 3600, **extra}

    agent = claims(AP, wire.DWK_AGENT, "agent-1", sub="aauth:bot@ap.example", cnf={"jwk": agent_jwk}, ps=PS)
    person = claims(PS, wire.DWK_PERSON, "person-1", aud=RES, sub="pairwise-1", cnf={"jwk": agent_jwk})
    resource = {**claims(RES, wire.DWK_RESOURCE, "resource-1", aud=PS, ps=PS, sub="pairwise-1",
                         presented_jti="person-1", agent_jkt=jkt, scope="notes:read"), "exp": NOW + 300}
    auth = claims(PS, wire.DWK_PERSON, "auth-1", aud=RES, ps=PS, sub="pairwise-1", scope="notes:read",
                  cnf={"jwk": agent_jwk})
    tokens = {"agent": signer.sign(wire.TYP_AGENT, agent), "person": signer.sign(wire.TYP_PERSON, person),
              "resource": signer.sign(wire.TYP_RESOURCE, resource), "auth": signer.sign(wire.TYP_AUTH, auth)}
    types = {"agent": wire.TYP_AGENT, "person": wire.TYP_PERSON, "resource": wire.TYP_RESOURCE, "auth": wire.TYP_AUTH}
    bodies = {"agent": agent, "person": person, "resource": resource, "auth": auth}
    cases: list[dict[str, Any]] = []

    def token_case(id: str, description: str, token: str, typ: str, expect: dict[str, Any], **inp: Any) -> None:
        cases.append({"id": id, "kind": "token", "description": description,
                      "input": {"token": token, "types": [typ], "now": NOW + 10, "issuer_key": KID, "kid": KID, **inp},
                      "expect": expect})

    for name in ("agent", "person", "resource", "auth"):
        extra: dict[str, Any] = {"signing_jwk": agent_jwk} if name != "resource" else {}
        if name in ("person", "auth"):
            extra["expected_aud"] = RES
        if name == "resource":
            extra["expected_aud"] = PS
        token_case(f"token-{name}-ok", f"a valid {types[name]}", tokens[name], types[name],
                   {"ok": True, "claims": {k: bodies[name][k] for k in ("iss", "sub", "jti")}}, **extra)
    token_case("token-typ-confusion-person-as-auth", "a person token where an auth token is expected (typ is "
               "checked first; the two differ only by typ)", tokens["person"], wire.TYP_AUTH, {"error": "invalid_jwt"})
    token_case("token-typ-confusion-auth-as-person", "an auth token where a person token is expected",
               tokens["auth"], wire.TYP_PERSON, {"error": "invalid_jwt"})
    header = b64url(json.dumps({"typ": wire.TYP_AGENT, "alg": "EdDSA", "kid": KID}).encode())
    payload = b64url(json.dumps(agent, separators=(",", ":")).encode())
    eddsa = f"{header}.{payload}." + b64url(issuer_private.sign(f"{header}.{payload}".encode()))
    token_case("token-eddsa-alg", "a correctly signed agent token whose header says EdDSA, not Ed25519 "
               "(RFC 9864)", eddsa, wire.TYP_AGENT, {"error": "invalid_jwt"})
    token_case("token-bound-to-another-key", "an agent token whose cnf.jwk is not the key that signed the request",
               tokens["agent"], wire.TYP_AGENT, {"error": "invalid_key"}, signing_jwk=other_jwk)
    token_case("token-wrong-audience", "an auth token for another resource", tokens["auth"], wire.TYP_AUTH,
               {"error": "invalid_jwt"}, expected_aud="https://other.example")
    cases[-1]["input"]["signing_jwk"] = agent_jwk
    token_case("token-expired", "an auth token at its exp (no skew allowed)", tokens["auth"], wire.TYP_AUTH,
               {"error": "expired_jwt"}, expected_aud=RES)
    cases[-1]["input"]["now"] = NOW + 3600
    token_case("token-revoked", "a revoked person token", tokens["person"], wire.TYP_PERSON,
               {"error": "revoked_jwt"}, expected_aud=RES, revoked=["person-1"])
    token_case("token-future-iat", "an agent token issued 5 minutes in the future", tokens["agent"], wire.TYP_AGENT,
               {"error": "clock_skew"})
    cases[-1]["input"]["now"] = NOW - 300
    token_case("token-unknown-kid", "the issuer publishes no key with that kid", tokens["agent"], wire.TYP_AGENT,
               {"error": "unknown_key"}, kid="another-kid")
    token_case("token-person-with-scope", "a person token carrying scope", signer.sign(
        wire.TYP_PERSON, {**person, "scope": "notes:read"}), wire.TYP_PERSON, {"error": "invalid_jwt"})
    token_case("token-auth-lifetime-over-1h", "an auth token with exp - iat = 3601", signer.sign(
        wire.TYP_AUTH, {**auth, "exp": NOW + 3601}), wire.TYP_AUTH, {"error": "invalid_jwt"})
    token_case("token-dwk-mismatch", "an agent token naming aauth-person.json", signer.sign(
        wire.TYP_AGENT, {**agent, "dwk": wire.DWK_PERSON}), wire.TYP_AGENT, {"error": "invalid_jwt"})

    def exchange(id: str, description: str, rt: dict[str, Any], presented: dict[str, Any] | None,
                 expect: dict[str, Any], signer_jkt: str = jkt) -> None:
        cases.append({"id": id, "kind": "exchange", "description": description,
                      "input": {"resource_token": rt, "presented_typ": wire.TYP_PERSON, "presented": presented,
                                "signer_jkt": signer_jkt, "ps": PS}, "expect": expect})

    exchange("exchange-ok", "resource token minted for this person token, this key and this PS", resource, person,
             {"ok": True})
    bad = {"error": "invalid_resource_token", "status": 400}
    exchange("exchange-wrong-agent-jkt", "the request is signed by another key than agent_jkt names", resource,
             person, bad, signer_jkt=thumbprint(other_jwk))
    exchange("exchange-other-ps", "the resource token is for another person server", {**resource, "ps": AP},
             person, bad)
    exchange("exchange-presented-jti-mismatch", "presented_token is not the token the resource token names",
             resource, {**person, "jti": "person-2"}, bad)
    exchange("exchange-sub-mismatch", "presented_token is for another person", resource,
             {**person, "sub": "pairwise-2"}, bad)

    def requirement(id: str, value: str, params: dict[str, str], header: str) -> None:
        parsed = {"requirement": value, **{k.replace("_", "-"): v for k, v in params.items()}}
        cases.append({"id": id, "kind": "requirement", "description": f"AAuth-Requirement: {value}",
                      "input": {"requirement": value, "params": params},
                      "expect": {"header": header, "parsed": parsed}})

    requirement("requirement-agent-token", "agent-token", {}, "requirement=agent-token")
    requirement("requirement-person-token", "person-token", {}, "requirement=person-token")
    requirement("requirement-auth-token", "auth-token", {"resource_token": tokens["resource"]},
                f'requirement=auth-token; resource-token="{tokens["resource"]}"')
    requirement("requirement-interaction", "interaction", {"url": PS + wire.PATH_INTERACTION, "code": "7K3Q-9XWD"},
                f'requirement=interaction; url="{PS}{wire.PATH_INTERACTION}"; code="7K3Q-9XWD"')
    requirement("requirement-approval", "approval", {}, "requirement=approval")

    doc["cases"] = [c for c in doc["cases"] if c["kind"] not in KINDS] + cases
    VECTORS.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {len(cases)} token-level cases; agent key jkt {jkt}")


if __name__ == "__main__":
    main()
