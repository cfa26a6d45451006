"""Reading a :class:`~authgate.policy.model.Policy` from TOML, with errors that say where.

The file (or the policy part of a gateway file)::

    unmatched = "deny"                       # or "public"

    [scope_descriptions]
    "weather:read" = "Read the weather forecast"

    [[routes]]
    methods = ["GET"]                        # optional: every method
    path = "/weather/*"
    stream = false                           # optional

      [[routes.allow]]                       # tried in this order; the first satisfied lets the request in
      mechanism = "oauth"
      scopes = ["weather:read"]

      [[routes.allow]]
      mechanism = "x402"
      price = "$0.01"
      pay_to = "0x..."
      network = "eip155:8453"

      [routes.attestation]                   # optional: signed claims required whatever the way in
      claims = { verified_adult = true, kyc = "passed" }
      issuers = ["https://kyc.example"]      # optional: default any trusted issuer

Every error is a :class:`~authgate.policy.model.PolicyError` whose message reads
``policy.toml: routes[1] (GET /weather/*): allow[2] (x402): pay_to: required`` — the file, the route (index
and label), the alternative and the field. Unknown fields and unknown mechanisms are errors, never ignored:
a typo in a security policy must not open a route.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from authgate.policy.model import (
    MECHANISMS,
    X402,
    AAuth,
    AgentAuth,
    Alternative,
    Attestation,
    OAuth,
    Policy,
    PolicyError,
    Public,
    Route,
)

MAX_FILE = 1024 * 1024
POLICY_KEYS = frozenset({"routes", "unmatched", "scope_descriptions"})
_ROUTE_KEYS = frozenset({"path", "methods", "allow", "stream", "name", "attestation"})
_ATTESTATION_KEYS = frozenset({"claims", "issuers"})
_FIELDS: dict[str, frozenset[str]] = {
    "oauth": frozenset({"scopes"}),
    "aauth": frozenset({"tier", "scopes"}),
    "agentauth": frozenset({"need", "scopes"}),
    "x402": frozenset({"price", "pay_to", "network", "asset", "asset_name", "asset_version", "description",
                       "max_timeout_seconds", "flow"}),
    "public": frozenset(),
}
_REQUIRED = {"x402": ("price", "pay_to", "network")}


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file (a TOML file holding only the policy)."""
    return policy_from_dict(read_toml(path), source=str(path))


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file (at most 1 MiB), as a :class:`PolicyError` naming the file when that fails."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise PolicyError(f"{path}: cannot be read: {exc.strerror or exc.__class__.__name__}") from None
    if len(raw) > MAX_FILE:
        raise PolicyError(f"{path}: larger than {MAX_FILE} bytes")
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise PolicyError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{path}: not valid TOML: {exc}") from None


def policy_from_dict(data: Mapping[str, Any], *, source: str = "<policy>",
                     other_keys: frozenset[str] = frozenset()) -> Policy:
    """Build a policy from parsed TOML (or any mapping of the same shape). ``other_keys``: top-level keys that
    belong to someone else (the gateway's own sections) and are skipped."""
    unknown = sorted(set(data) - POLICY_KEYS - other_keys)
    if unknown:
        raise PolicyError(f"{source}: unknown field {unknown[0]!r} (expected {', '.join(sorted(POLICY_KEYS))})")
    raw_routes = data.get("routes")
    if not isinstance(raw_routes, list) or not raw_routes:
        raise PolicyError(f"{source}: routes: at least one [[routes]] table is required")
    routes = [_route(source, i, r) for i, r in enumerate(raw_routes)]
    descriptions = data.get("scope_descriptions", {})
    if not isinstance(descriptions, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in descriptions.items()):
        raise PolicyError(f"{source}: scope_descriptions: must map each scope to a non-empty description")
    try:
        return Policy(tuple(routes), unmatched=data.get("unmatched", "deny"), scope_descriptions=descriptions)
    except PolicyError as exc:
        raise PolicyError(f"{source}: {exc}") from None


def _route(source: str, index: int, raw: Any) -> Route:
    where = f"{source}: routes[{index}]"
    if not isinstance(raw, dict):
        raise PolicyError(f"{where}: must be a table")
    path, methods = raw.get("path"), raw.get("methods")
    label = f"{','.join(methods) if isinstance(methods, list) and all(isinstance(m, str) for m in methods) else '*'}" \
            f" {path if isinstance(path, str) else '?'}"
    where = f"{where} ({raw.get('name') or label})"
    unknown = sorted(set(raw) - _ROUTE_KEYS)
    if unknown:
        raise PolicyError(f"{where}: unknown field {unknown[0]!r} (expected {', '.join(sorted(_ROUTE_KEYS))})")
    if path is None:
        raise PolicyError(f"{where}: path: required")
    if methods is not None and (not isinstance(methods, list) or not all(isinstance(m, str) for m in methods)):
        raise PolicyError(f"{where}: methods: must be a list of HTTP methods")
    stream, name = raw.get("stream", False), raw.get("name", "")
    if not isinstance(stream, bool):
        raise PolicyError(f"{where}: stream: must be true or false")
    if not isinstance(name, str):
        raise PolicyError(f"{where}: name: must be a string")
    allow = raw.get("allow")
    if not isinstance(allow, list) or not allow:
        raise PolicyError(f"{where}: allow: at least one [[routes.allow]] alternative is required")
    alternatives = [_alternative(where, i, a) for i, a in enumerate(allow)]
    attestation = _attestation(where, raw["attestation"]) if "attestation" in raw else None
    try:
        return Route(path, tuple(alternatives), None if methods is None else frozenset(methods), stream, name,
                     attestation)
    except PolicyError as exc:
        raise PolicyError(f"{where}: {exc}") from None


def _attestation(route: str, raw: Any) -> Attestation:
    where = f"{route}: attestation"
    if not isinstance(raw, dict):
        raise PolicyError(f"{where}: must be a table ([routes.attestation]) with claims and optional issuers")
    unknown = sorted(set(raw) - _ATTESTATION_KEYS)
    if unknown:
        raise PolicyError(f"{where}: unknown field {unknown[0]!r} (expected claims, issuers)")
    claims, issuers = raw.get("claims"), raw.get("issuers", [])
    if not isinstance(claims, dict):
        raise PolicyError(f"{where}: claims: required, a table of claim = value")
    if not isinstance(issuers, list):
        raise PolicyError(f"{where}: issuers: must be a list of issuer URLs")
    try:
        return Attestation(claims, tuple(issuers))
    except PolicyError as exc:
        raise PolicyError(f"{where}: {exc}") from None


def _alternative(route: str, index: int, raw: Any) -> Alternative:
    where = f"{route}: allow[{index}]"
    if not isinstance(raw, dict):
        raise PolicyError(f"{where}: must be a table")
    mechanism = raw.get("mechanism")
    if mechanism is None:
        raise PolicyError(f"{where}: mechanism: required (one of {', '.join(MECHANISMS)})")
    if mechanism not in _FIELDS:
        raise PolicyError(f"{where}: mechanism: unknown mechanism {mechanism!r} (expected one of "
                          f"{', '.join(MECHANISMS)})")
    where = f"{where} ({mechanism})"
    fields = {k: v for k, v in raw.items() if k != "mechanism"}
    unknown = sorted(set(fields) - _FIELDS[mechanism])
    if unknown:
        allowed = ", ".join(sorted(_FIELDS[mechanism])) or "none"
        raise PolicyError(f"{where}: unknown field {unknown[0]!r} for {mechanism} (expected {allowed})")
    for name in _REQUIRED.get(mechanism, ()):
        if name not in fields:
            raise PolicyError(f"{where}: {name}: required")
    if "scopes" in fields and not (isinstance(fields["scopes"], list)):
        raise PolicyError(f"{where}: scopes: must be a list of scope strings")
    try:
        if mechanism == "oauth":
            return OAuth(tuple(fields.get("scopes", ())))
        if mechanism == "aauth":
            return AAuth(fields.get("tier", "pii"), tuple(fields.get("scopes", ())))
        if mechanism == "agentauth":
            return AgentAuth(fields.get("need", "auth"), tuple(fields.get("scopes", ())))
        if mechanism == "x402":
            return X402(**fields)
        return Public()
    except PolicyError as exc:
        raise PolicyError(f"{where}: {exc}") from None
    except TypeError as exc:  # a wrongly typed value reached a constructor
        raise PolicyError(f"{where}: {exc}") from None
