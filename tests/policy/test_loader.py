"""Policy files: what a valid one becomes, and the exact error a user sees for each kind of mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from authgate.policy import (
    X402,
    AAuth,
    AgentAuth,
    Attestation,
    OAuth,
    Policy,
    PolicyError,
    Public,
    Route,
    load_policy,
)

PAYEE = "0x" + "ab" * 20

GOOD = f"""
unmatched = "deny"

[scope_descriptions]
"weather:read" = "Read the forecast"

[[routes]]
path = "/health"
  [[routes.allow]]
  mechanism = "public"

[[routes]]
methods = ["GET"]
path = "/weather/*"
  [[routes.allow]]
  mechanism = "oauth"
  scopes = ["weather:read"]
  [[routes.allow]]
  mechanism = "agentauth"
  scopes = ["weather:read"]
  [[routes.allow]]
  mechanism = "aauth"
  tier = "oob"
  [[routes.allow]]
  mechanism = "x402"
  price = "$0.01"
  pay_to = "{PAYEE}"
  network = "eip155:84532"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return path


def test_a_valid_file_becomes_the_model(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, GOOD))
    assert policy.unmatched == "deny" and policy.scope_descriptions == {"weather:read": "Read the forecast"}
    health, weather = policy.routes
    assert health.alternatives == (Public(),) and health.methods is None
    assert weather.methods == frozenset({"GET", "HEAD"})
    assert weather.alternatives == (OAuth(("weather:read",)), AgentAuth("auth", ("weather:read",)), AAuth("oob"),
                                    X402("$0.01", pay_to=PAYEE, network="eip155:84532"))
    assert policy.route_for("HEAD", "/weather/today") is weather
    assert policy.route_for("POST", "/weather/today") is None
    assert policy.route_for("GET", "/weatherman") is None
    assert policy.route_for("DELETE", "/health") is health


def test_the_python_model_is_the_same(tmp_path: Path) -> None:
    built = Policy((Route("/health", (Public(),)),
                    Route("/weather/*", (OAuth(("weather:read",)), AgentAuth("auth", ("weather:read",)),
                                         AAuth("oob"), X402("$0.01", PAYEE, "eip155:84532")), frozenset({"GET"}))),
                   scope_descriptions={"weather:read": "Read the forecast"})
    assert built == load_policy(write(tmp_path, GOOD))


ROUTE = '[[routes]]\npath = "/r"\n'


@pytest.mark.parametrize(("text", "message"), [
    ('unmatched = "allow"\n' + ROUTE + '[[routes.allow]]\nmechanism = "public"\n',
     "policy.toml: unmatched: must be 'deny' or 'public', not 'allow'"),
    ('rutes = []\n', "policy.toml: unknown field 'rutes' (expected routes, scope_descriptions, unmatched)"),
    ('', "policy.toml: routes: at least one [[routes]] table is required"),
    (ROUTE, "policy.toml: routes[0] (* /r): allow: at least one [[routes.allow]] alternative is required"),
    ('[[routes]]\n[[routes.allow]]\nmechanism = "public"\n', "policy.toml: routes[0] (* ?): path: required"),
    ('[[routes]]\npath = "weather"\n[[routes.allow]]\nmechanism = "public"\n',
     "policy.toml: routes[0] (* weather): path: must be an absolute path, optionally ending in '/*', not 'weather'"),
    ('[[routes]]\npath = "/r"\nmethods = ["G T"]\n[[routes.allow]]\nmechanism = "public"\n',
     "policy.toml: routes[0] (G T /r): methods: not an HTTP method: 'G T'"),
    ('[[routes]]\npath = "/r"\nscopes = ["a"]\n[[routes.allow]]\nmechanism = "public"\n',
     "policy.toml: routes[0] (* /r): unknown field 'scopes' (expected allow, attestation, methods, name, path, "
     "stream)"),
    (ROUTE + '[[routes.allow]]\nmechanism = "kerberos"\n',
     "policy.toml: routes[0] (* /r): allow[0]: mechanism: unknown mechanism 'kerberos' (expected one of oauth, "
     "agentauth, aauth, x402, public)"),
    (ROUTE + '[[routes.allow]]\nscopes = ["a"]\n',
     "policy.toml: routes[0] (* /r): allow[0]: mechanism: required (one of oauth, agentauth, aauth, x402, public)"),
    (ROUTE + '[[routes.allow]]\nmechanism = "oauth"\nscopes = ["weather read"]\n',
     "policy.toml: routes[0] (* /r): allow[0] (oauth): scopes: invalid scope token: 'weather read'"),
    (ROUTE + '[[routes.allow]]\nmechanism = "oauth"\nscopes = "weather:read"\n',
     "policy.toml: routes[0] (* /r): allow[0] (oauth): scopes: must be a list of scope strings"),
    (ROUTE + '[[routes.allow]]\nmechanism = "oauth"\nscope = ["a"]\n',
     "policy.toml: routes[0] (* /r): allow[0] (oauth): unknown field 'scope' for oauth (expected scopes)"),
    (ROUTE + '[[routes.allow]]\nmechanism = "aauth"\ntier = "gold"\n',
     "policy.toml: routes[0] (* /r): allow[0] (aauth): tier: must be 'pii' or 'oob', not 'gold'"),
    (ROUTE + '[[routes.allow]]\nmechanism = "agentauth"\nneed = "agent"\nscopes = ["a"]\n',
     "policy.toml: routes[0] (* /r): allow[0] (agentauth): scopes: only need = 'auth' takes scopes (need is "
     "'agent')"),
    (ROUTE + '[[routes.allow]]\nmechanism = "x402"\nprice = "$0.01"\nnetwork = "eip155:84532"\n',
     "policy.toml: routes[0] (* /r): allow[0] (x402): pay_to: required"),
    (ROUTE + '[[routes.allow]]\nmechanism = "x402"\nprice = "$0.01"\npay_to = "0x12"\nnetwork = "eip155:84532"\n',
     "policy.toml: routes[0] (* /r): allow[0] (x402): pay_to: must be a 0x-prefixed 20-byte EVM address, not '0x12'"),
    (ROUTE + f'[[routes.allow]]\nmechanism = "x402"\nprice = "ten cents"\npay_to = "{PAYEE}"\n'
             'network = "eip155:84532"\n',
     "policy.toml: routes[0] (* /r): allow[0] (x402): price: invalid money format: 'ten cents'"),
    (ROUTE + f'[[routes.allow]]\nmechanism = "x402"\nprice = "$0"\npay_to = "{PAYEE}"\nnetwork = "eip155:84532"\n',
     "policy.toml: routes[0] (* /r): allow[0] (x402): price: must be more than zero, not '$0'"),
    (ROUTE + f'[[routes.allow]]\nmechanism = "x402"\nprice = 0.01\npay_to = "{PAYEE}"\nnetwork = "eip155:84532"\n',
     "policy.toml: routes[0] (* /r): allow[0] (x402): price: must be a string such as '$0.01', not 0.01"),
    (ROUTE + f'[[routes.allow]]\nmechanism = "x402"\nprice = "$1"\npay_to = "{PAYEE}"\nnetwork = "base"\n',
     "policy.toml: routes[0] (* /r): allow[0] (x402): network: must be a CAIP-2 id such as 'eip155:8453', "
     "not 'base'"),
    (ROUTE + '[[routes.allow]]\nmechanism = "public"\n[[routes.allow]]\nmechanism = "oauth"\n',
     "policy.toml: routes[0] (* /r): allow: 'public' lets everyone in and cannot be combined with other "
     "alternatives"),
    ('[[routes]]\npath = "/r"\nstream = true\n'
     f'[[routes.allow]]\nmechanism = "x402"\nprice = "$1"\npay_to = "{PAYEE}"\nnetwork = "eip155:84532"\n',
     "policy.toml: routes[0] (* /r): allow: a streaming route must settle payments before serving: set "
     "flow = \"upfront\" on its x402 alternative"),
    ('[[routes]]\npath = "/a/*"\n[[routes.allow]]\nmechanism = "oauth"\n'
     '[[routes]]\npath = "/a/b"\nmethods = ["GET"]\n[[routes.allow]]\nmechanism = "public"\n',
     "policy.toml: routes[1] (GET /a/b): unreachable: routes[0] (* /a/*) comes first and matches every request "
     "it would (put the more specific route first)"),
    ('[[routes]]\npath = "/a"\nmethods = ["GET", "POST"]\n[[routes.allow]]\nmechanism = "oauth"\n'
     '[[routes]]\npath = "/a"\nmethods = ["POST"]\n[[routes.allow]]\nmechanism = "public"\n',
     "policy.toml: routes[1] (POST /a): unreachable: routes[0] (GET,POST /a) comes first and matches every "
     "request it would (put the more specific route first)"),
    ('[[routes]\n', "policy.toml: not valid TOML: "),
    *[(ROUTE + '[[routes.allow]]\nmechanism = "oauth"\n' + attestation, "policy.toml: routes[0] (* /r): attestation: "
       + message) for attestation, message in [
        ('[routes.attestation]\nclaim = { kyc = "passed" }\n', "unknown field 'claim' (expected claims, issuers)"),
        ('[routes.attestation]\nissuers = ["https://kyc.example"]\n', "claims: required, a table of claim = value"),
        ('[routes.attestation]\nclaims = {}\n', "claims: at least one claim is required (name = value)"),
        ('[routes.attestation]\nclaims = { "employee of" = "x" }\n',
         "claims: 'employee of' is not a claim name (1 to 64 letters, digits, '_', '.', ':', '-')"),
        ('[routes.attestation]\nclaims = { age = 18.5 }\n',
         "claims: age: the value must be a string of 1 to 256 characters, an integer, true or false"),
        ('[routes.attestation]\nclaims = { kyc = "" }\n',
         "claims: kyc: the value must be a string of 1 to 256 characters, an integer, true or false"),
        ('[routes.attestation]\nclaims = { kyc = "passed" }\nissuers = "https://kyc.example"\n',
         "issuers: must be a list of issuer URLs"),
        ('[routes.attestation]\nclaims = { kyc = "passed" }\nissuers = ["kyc.example"]\n',
         "issuers: 'kyc.example' is not an issuer URL"),
    ]],
    (ROUTE + 'attestation = "kyc"\n[[routes.allow]]\nmechanism = "oauth"\n',
     "policy.toml: routes[0] (* /r): attestation: must be a table ([routes.attestation]) with claims and optional "
     "issuers"),
    (ROUTE + '[[routes.allow]]\nmechanism = "public"\n[routes.attestation]\nclaims = { kyc = "passed" }\n',
     "policy.toml: routes[0] (* /r): attestation: a public route lets everyone in: it cannot require an "
     "attestation"),
])
def test_mistakes_are_reported_with_file_route_and_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(PolicyError) as err:
        load_policy(write(tmp_path, text))
    assert str(err.value).replace(str(tmp_path) + "/", "").startswith(message)
    if not message.endswith(": "):
        assert str(err.value).replace(str(tmp_path) + "/", "") == message


def test_specific_before_general_and_method_splits_are_fine() -> None:
    policy = Policy((Route("/a/b", (Public(),)), Route("/a/*", (OAuth(("r",)),), frozenset({"GET"})),
                     Route("/a/*", (OAuth(("w",)),))))
    assert policy.route_for("GET", "/a/b").alternatives == (Public(),)  # type: ignore[union-attr]
    assert policy.route_for("GET", "/a/c").alternatives == (OAuth(("r",)),)  # type: ignore[union-attr]
    assert policy.route_for("PUT", "/a/c").alternatives == (OAuth(("w",)),)  # type: ignore[union-attr]


def test_unreadable_and_oversized_files(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"missing.toml: cannot be read"):
        load_policy(tmp_path / "missing.toml")
    big = tmp_path / "big.toml"
    big.write_text("#" * (1024 * 1024 + 1))
    with pytest.raises(PolicyError, match=r"big.toml: larger than 1048576 bytes"):
        load_policy(big)


def test_an_attestation_requirement_is_read_into_the_route(tmp_path: Path) -> None:
    text = ROUTE + '[[routes.allow]]\nmechanism = "oauth"\n[routes.attestation]\n' \
        'claims = { verified_adult = true, kyc = "passed", level = 2 }\nissuers = ["https://kyc.example"]\n'
    (route,) = load_policy(write(tmp_path, text)).routes
    assert route.attestation == Attestation({"verified_adult": True, "kyc": "passed", "level": 2},
                                            ("https://kyc.example",))
    assert load_policy(write(tmp_path, text)).attestation_issuers() == {"https://kyc.example"}


def test_routes_with_attestations_stay_hashable() -> None:
    route = Route("/r", (OAuth(),), attestation=Attestation({"kyc": "passed", "level": 1}))
    assert hash(route) == hash(Route("/r", (OAuth(),), attestation=Attestation({"level": 1, "kyc": "passed"})))
    assert Attestation({"level": 1}) != Attestation({"level": True})  # different requirements
