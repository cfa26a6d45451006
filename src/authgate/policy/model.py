"""Route policies: which ways in open each route of an API (issue #7, item 1).

A :class:`Policy` is an ordered list of :class:`Route` s. A route matches a method set and a path pattern and
lists **alternatives**, any one of which lets a request in; they are tried in order and the first one the
request satisfies wins::

    Policy([
        Route("/health", (Public(),)),
        Route("/weather/*", (OAuth(("weather:read",)), AgentAuth("auth", ("weather:read",)),
                             X402("$0.01", pay_to=PAYEE, network="eip155:8453")), methods={"GET"}),
    ])

The same model is read from TOML by :mod:`authgate.policy.loader`; the ASGI enforcement in
:mod:`authgate.policy.enforce` and the gateway share it. Everything is checked when a value is built (scope
syntax, prices, ``pay_to``, mechanisms), and :class:`Policy` refuses a route an earlier one makes unreachable,
because first-match-wins would silently ignore it.

Path patterns: an exact path, or ``/prefix/*`` covering ``/prefix`` and everything below it on segment
boundaries (the same rule as :func:`authgate.resource.protect`). ``methods`` None means every method; ``GET``
also covers ``HEAD``.

A route may also demand an :class:`Attestation` — signed claims about the agent from a trusted issuer ("employee
of X", "verified adult", "KYC passed"; docs/trust.md) — on top of whichever alternative lets the request in,
checked before access or payment::

    Route("/v1/wine/*", (OAuth(("shop:buy",)), X402("$1", pay_to=PAYEE, network="eip155:8453")),
          attestation=Attestation({"verified_adult": True}, issuers=("https://kyc.example",)))
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from authgate.resource.metadata import check_scopes
from authgate.x402.price import parse_price

Need = Literal["agent", "person", "auth"]
Tier = Literal["pii", "oob"]
Flow = Literal["authorization", "upfront"]

MECHANISMS = ("oauth", "agentauth", "aauth", "x402", "public")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_CAIP2 = re.compile(r"^[-a-z0-9]{3,8}:[-_a-zA-Z0-9]{1,32}$")
_PATH = re.compile(r"^/[A-Za-z0-9\-._~!$&'()+,;=:@%/]*$")
_METHOD = re.compile(r"^[A-Z]{1,20}$")
MAX_ROUTES = 1000
_CLAIM_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
MAX_ATTESTED_CLAIMS = 16
MAX_ATTESTATION_ISSUERS = 16


class PolicyError(ValueError):
    """A policy that cannot be used; the message names where (file, route, field) and what is wrong."""


@dataclass(frozen=True)
class OAuth:
    """An access token (RFC 9068 JWT) from the configured authorization server, audience = this resource,
    carrying every scope in ``scopes``."""

    scopes: tuple[str, ...] = ()
    mechanism: Literal["oauth"] = field(default="oauth", init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "scopes", _scopes(self.scopes))


@dataclass(frozen=True)
class AAuth:
    """An access token from the AAuth agent authorization grant (Rosenberg/White): ``act`` names the agent,
    ``amr`` says the tier reached — ``pii`` (identity matched) or ``oob`` (the customer approved out of band;
    ``oob`` also satisfies ``pii``)."""

    tier: Tier = "pii"
    scopes: tuple[str, ...] = ()
    mechanism: Literal["aauth"] = field(default="aauth", init=False)

    def __post_init__(self) -> None:
        if self.tier not in ("pii", "oob"):
            raise PolicyError(f"tier: must be 'pii' or 'oob', not {self.tier!r}")
        object.__setattr__(self, "scopes", _scopes(self.scopes))


@dataclass(frozen=True)
class AgentAuth:
    """A request signed under Agent Auth (Hardt) with an agent, person or auth token; ``auth`` needs an auth
    token carrying ``scopes`` (a person token without them is answered with a resource token)."""

    need: Need = "auth"
    scopes: tuple[str, ...] = ()
    mechanism: Literal["agentauth"] = field(default="agentauth", init=False)

    def __post_init__(self) -> None:
        if self.need not in ("agent", "person", "auth"):
            raise PolicyError(f"need: must be 'agent', 'person' or 'auth', not {self.need!r}")
        object.__setattr__(self, "scopes", _scopes(self.scopes))
        if self.scopes and self.need != "auth":
            raise PolicyError(f"scopes: only need = 'auth' takes scopes (need is {self.need!r})")


@dataclass(frozen=True)
class X402:
    """An x402 ``exact`` payment of ``price`` to ``pay_to`` on ``network`` (CAIP-2). ``price`` is money
    (``"$0.01"``: the network's default stablecoin) or, with ``asset``, atomic units as a decimal string.
    ``flow = "upfront"`` settles before the request is served (required for streaming routes)."""

    price: str
    pay_to: str
    network: str
    asset: str | None = None
    asset_name: str | None = None
    asset_version: str | None = None
    description: str = ""
    max_timeout_seconds: int = 60
    flow: Flow = "authorization"
    mechanism: Literal["x402"] = field(default="x402", init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.pay_to, str) or not _ADDRESS.match(self.pay_to):
            raise PolicyError(f"pay_to: must be a 0x-prefixed 20-byte EVM address, not {self.pay_to!r}")
        if not isinstance(self.network, str) or not _CAIP2.match(self.network):
            raise PolicyError(f"network: must be a CAIP-2 id such as 'eip155:8453', not {self.network!r}")
        if self.flow not in ("authorization", "upfront"):
            raise PolicyError(f"flow: must be 'authorization' or 'upfront', not {self.flow!r}")
        if isinstance(self.max_timeout_seconds, bool) or not isinstance(self.max_timeout_seconds, int) \
                or not 1 <= self.max_timeout_seconds <= 3600:
            raise PolicyError("max_timeout_seconds: must be an integer between 1 and 3600")
        if not isinstance(self.price, str):
            raise PolicyError(f"price: must be a string such as '$0.01', not {self.price!r}")
        if self.asset is not None and (not isinstance(self.asset, str) or not _ADDRESS.match(self.asset)):
            raise PolicyError(f"asset: must be a 0x-prefixed token contract address, not {self.asset!r}")
        try:
            amount = parse_price(self.price_spec(), self.network)
        except (ValueError, KeyError) as exc:
            raise PolicyError(f"price: {_text(exc)}") from None
        if int(amount.amount) <= 0:
            raise PolicyError(f"price: must be more than zero, not {self.price!r}")

    def price_spec(self) -> str | dict[str, Any]:
        """What :func:`authgate.x402.price.parse_price` (and the paywall) take."""
        if self.asset is None:
            return self.price
        extra = {k: v for k, v in (("name", self.asset_name), ("version", self.asset_version)) if v}
        return {"amount": self.price, "asset": self.asset, "extra": extra}


@dataclass(frozen=True)
class Public:
    """No credential: anyone may call."""

    mechanism: Literal["public"] = field(default="public", init=False)


Alternative = OAuth | AAuth | AgentAuth | X402 | Public
ClaimValue = str | bool | int


@dataclass(frozen=True)
class Attestation:
    """Claims the agent must present, signed by a trusted issuer, whatever alternative lets it in.

    ``claims``: claim name → the value it must equal (a string or an integer), or ``True`` for "present and
    truthy" (``False`` means "equal to false"). ``issuers``: only these issuers may vouch (empty: any issuer the
    enforcement point trusts). Matching is the authgate attestation profile's (authgate.trust.attestations)."""

    claims: Mapping[str, ClaimValue]
    issuers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.claims, Mapping) or not self.claims:
            raise PolicyError("claims: at least one claim is required (name = value)")
        if len(self.claims) > MAX_ATTESTED_CLAIMS:
            raise PolicyError(f"claims: at most {MAX_ATTESTED_CLAIMS} claims")
        for name, value in self.claims.items():
            if not isinstance(name, str) or not _CLAIM_NAME.match(name):
                raise PolicyError(f"claims: {name!r} is not a claim name (1 to 64 letters, digits, '_', '.', ':', "
                                  "'-')")
            if not isinstance(value, (str, bool, int)) or (isinstance(value, str) and not 0 < len(value) <= 256):
                raise PolicyError(f"claims: {name}: the value must be a string of 1 to 256 characters, an integer, "
                                  "true or false")
        object.__setattr__(self, "claims", dict(self.claims))
        if isinstance(self.issuers, str):
            raise PolicyError("issuers: must be a list of issuer URLs, not one string")
        issuers = tuple(self.issuers)
        if len(issuers) > MAX_ATTESTATION_ISSUERS:
            raise PolicyError(f"issuers: at most {MAX_ATTESTATION_ISSUERS} issuers")
        for issuer in issuers:
            if not isinstance(issuer, str) or not issuer.startswith(("https://", "http://")) or len(issuer) > 500:
                raise PolicyError(f"issuers: {issuer!r} is not an issuer URL")
        object.__setattr__(self, "issuers", issuers)

    def _canonical(self) -> tuple[Any, ...]:
        # Typed: True and 1 are different requirements (authgate.trust.attestations compares JSON types).
        return tuple(sorted((k, type(v).__name__, v) for k, v in self.claims.items())), self.issuers

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Attestation) and self._canonical() == other._canonical()

    def __hash__(self) -> int:  # claims is a dict: hash the canonical form, so a Route stays hashable
        return hash(self._canonical())

    def public(self) -> dict[str, Any]:
        """What the combined challenge advertises (``Authgate-Attestation-Required``)."""
        out: dict[str, Any] = {"claims": dict(self.claims)}
        if self.issuers:
            out["issuers"] = list(self.issuers)
        return out


@dataclass(frozen=True)
class Route:
    """Who may call ``methods`` on ``path``: any one of ``alternatives``, tried in order. ``stream`` marks a
    route whose responses are streamed (SSE, long bodies): its payments must settle upfront. ``attestation``:
    signed claims required on top of the alternative that lets the request in."""

    path: str
    alternatives: tuple[Alternative, ...]
    methods: frozenset[str] | None = None
    stream: bool = False
    name: str = ""
    attestation: Attestation | None = None

    def __post_init__(self) -> None:
        base = self.path[:-2] if isinstance(self.path, str) and self.path.endswith("/*") else self.path
        if not isinstance(base, str) or not (base == "" or _PATH.match(base)) or "//" in base \
                or "/../" in base + "/" or "/./" in base + "/":
            raise PolicyError(f"path: must be an absolute path, optionally ending in '/*', not {self.path!r}")
        if self.methods is not None:
            methods = set()
            for m in self.methods:
                if not isinstance(m, str) or not _METHOD.match(m.upper()):
                    raise PolicyError(f"methods: not an HTTP method: {m!r}")
                methods.add(m.upper())
            if not methods:
                raise PolicyError("methods: must not be empty (leave it out to mean every method)")
            if "GET" in methods:
                methods.add("HEAD")
            object.__setattr__(self, "methods", frozenset(methods))
        alternatives = tuple(self.alternatives)
        object.__setattr__(self, "alternatives", alternatives)
        if not alternatives:
            raise PolicyError("allow: a route needs at least one alternative (use mechanism = \"public\" for "
                              "an open route)")
        kinds = [a.mechanism for a in alternatives]
        if "public" in kinds and len(kinds) > 1:
            raise PolicyError("allow: 'public' lets everyone in and cannot be combined with other alternatives")
        if "public" in kinds and self.attestation is not None:
            raise PolicyError("attestation: a public route lets everyone in: it cannot require an attestation")
        if self.attestation is not None and not isinstance(self.attestation, Attestation):
            raise PolicyError("attestation: must be an Attestation")
        if kinds.count("x402") > 1:
            raise PolicyError("allow: at most one x402 alternative per route")
        for alt in alternatives:
            if isinstance(alt, X402) and self.stream and alt.flow != "upfront":
                raise PolicyError("allow: a streaming route must settle payments before serving: set "
                                  "flow = \"upfront\" on its x402 alternative")

    @property
    def label(self) -> str:
        methods = ",".join(sorted(self.methods - {"HEAD"} or self.methods)) if self.methods else "*"
        return self.name or f"{methods} {self.path}"

    def matches(self, method: str, path: str) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        return _covers(self.path, path)

    def payment(self) -> X402 | None:
        return next((a for a in self.alternatives if isinstance(a, X402)), None)

    def covers(self, other: Route) -> bool:
        """True when every request ``other`` matches is matched by this route (``other`` is unreachable
        after it)."""
        if self.methods is not None and (other.methods is None or not other.methods <= self.methods):
            return False
        if other.path.endswith("/*"):
            return self.path.endswith("/*") and _covers(self.path, other.path[:-2] or "/")
        return _covers(self.path, other.path)


def _covers(pattern: str, path: str) -> bool:
    if pattern.endswith("/*"):
        base = pattern[:-2]
        return base == "" or path == base or path.startswith(base + "/")
    return path == pattern


@dataclass(frozen=True)
class Policy:
    """Routes in order; the first that matches a request decides. ``unmatched``: what to do with a request no
    route matches — ``deny`` (403, the default: a gateway never exposes what the policy does not name) or
    ``public``."""

    routes: tuple[Route, ...]
    unmatched: Literal["deny", "public"] = "deny"
    #: Scope -> words a person understands, published in ``/.well-known/aauth.json`` and Agent Auth metadata.
    scope_descriptions: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        routes = tuple(self.routes)
        object.__setattr__(self, "routes", routes)
        if self.unmatched not in ("deny", "public"):
            raise PolicyError(f"unmatched: must be 'deny' or 'public', not {self.unmatched!r}")
        if len(routes) > MAX_ROUTES:
            raise PolicyError(f"routes: at most {MAX_ROUTES} routes")
        for j, later in enumerate(routes):
            for i in range(j):
                if routes[i].covers(later):
                    raise PolicyError(
                        f"routes[{j}] ({later.label}): unreachable: routes[{i}] ({routes[i].label}) comes first "
                        "and matches every request it would (put the more specific route first)")

    def route_for(self, method: str, path: str) -> Route | None:
        for route in self.routes:
            if route.matches(method, path):
                return route
        return None

    def mechanisms(self) -> frozenset[str]:
        return frozenset(a.mechanism for r in self.routes for a in r.alternatives)

    def attestation_issuers(self) -> frozenset[str]:
        """Every issuer a route's attestation names (each must be trusted where the policy is enforced)."""
        return frozenset(i for r in self.routes if r.attestation is not None for i in r.attestation.issuers)

    def all_scopes(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for route in self.routes:
            for alt in route.alternatives:
                for s in getattr(alt, "scopes", ()):
                    seen[s] = None
        return tuple(seen)


def _scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    if isinstance(scopes, str):
        raise PolicyError("scopes: must be a list of scope strings, not one string")
    try:
        return check_scopes(scopes)
    except ValueError as exc:
        raise PolicyError(f"scopes: {_text(exc)}") from None


def _text(exc: BaseException) -> str:
    text = str(exc)
    return text[1:-1] if isinstance(exc, KeyError) and text.startswith(("'", '"')) else text
