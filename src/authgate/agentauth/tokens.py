"""The four Agent Auth JWTs (-11 §7): minting and verification, sans I/O except the key lookup callback.

Verification order: size and shape → ``typ`` first (a person token and a PS-issued auth token differ only by
``typ``) → header ``alg`` (``Ed25519``/``ES256`` only, never ``EdDSA``) → ``dwk`` allowed for the type → ``iss``
is a server identifier → keys of ``iss`` looked up by ``kid`` (the caller's resolver, which fetches
``{iss}/.well-known/{dwk}`` and checks its ``issuer``) → signature → times (``exp`` with no skew; a future
``iat`` is ``clock_skew``; lifetime caps of §17.15) → required claims per type → ``aud`` → ``cnf.jwk`` equals the
request's signing key → revocation (the caller's checker). Each failure raises :class:`TokenProblem` with the
code the spec assigns.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey

from authgate.agentauth import wire
from authgate.agentauth.errors import TokenProblem

MAX_TOKEN = 8192
#: Lifetime caps (exp - iat), profile §17.15 and -11 §7: person and auth ≤ 1 h; agent SHOULD ≤ 24 h;
#: resource SHOULD ≤ 5 min (accepted up to 10 min for peers with slower clocks).
MAX_LIFETIME = {wire.TYP_AGENT: 24 * 3600, wire.TYP_PERSON: 3600, wire.TYP_AUTH: 3600, wire.TYP_RESOURCE: 600}
#: How far ahead of our clock an ``iat`` may be before it is ``clock_skew``.
IAT_SKEW = 60
_CURVE = {wire.ALG_ED25519: ("OKP", "Ed25519"), wire.ALG_ES256: ("EC", "P-256")}
_B64URL = re.compile(r"^[A-Za-z0-9_-]+$")
_AGENT_ID = re.compile(r"^aauth:([A-Za-z0-9._+-]{1,255})@([a-z0-9.-]{1,253}(?::[0-9]{1,5})?)$")

PublicKey = OKPKey | ECKey
#: ``(iss, dwk, kid) -> key`` or None when the issuer publishes no such key; raises TokenProblem for an
#: unreachable or inconsistent issuer (``issuer_missing`` / ``issuer_mismatch`` / ``unknown_key``).
KeyResolver = Callable[[str, str, str | None], Awaitable[PublicKey | None]]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint over the required members only (``alg``/``kid`` excluded), base64url."""
    kty = jwk.get("kty")
    if kty == "OKP":
        members = {"crv": jwk["crv"], "kty": "OKP", "x": jwk["x"]}
    elif kty == "EC":
        members = {"crv": jwk["crv"], "kty": "EC", "x": jwk["x"], "y": jwk["y"]}
    else:
        raise TokenProblem(wire.SIG_INVALID_KEY, f"unsupported kty {kty!r}")
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return b64url(hashlib.sha256(canonical).digest())


def import_public_jwk(jwk: Any) -> PublicKey:
    """A public JWK with a fully specified ``alg`` (``Ed25519`` or ``ES256``) agreeing with ``kty``/``crv``.

    ``EdDSA`` or a missing ``alg`` is ``unsupported_algorithm``; a mismatch, private members or bad key
    material is ``invalid_key``."""
    if not isinstance(jwk, dict) or len(json.dumps(jwk, default=str)) > 2048:
        raise TokenProblem(wire.SIG_INVALID_KEY, "jwk is not a small object")
    alg = jwk.get("alg")
    if alg not in _CURVE:
        raise TokenProblem(wire.SIG_UNSUPPORTED_ALGORITHM, f"jwk alg {alg!r}")
    if (jwk.get("kty"), jwk.get("crv")) != _CURVE[alg]:
        raise TokenProblem(wire.SIG_INVALID_KEY, "kty/crv disagree with alg")
    if "d" in jwk:
        raise TokenProblem(wire.SIG_INVALID_KEY, "private key material")
    members = {k: jwk[k] for k in ("kty", "crv", "x", "y") if k in jwk}
    if not all(isinstance(v, str) and _B64URL.match(v) for v in members.values()):
        raise TokenProblem(wire.SIG_INVALID_KEY, "key members are not base64url")
    try:
        key: PublicKey = (OKPKey if alg == wire.ALG_ED25519 else ECKey).import_key(
            {**members, "alg": alg})
    except (JoseError, ValueError, TypeError) as exc:
        raise TokenProblem(wire.SIG_INVALID_KEY, f"bad key material: {exc}") from exc
    return key


def public_jwk(key: PublicKey) -> dict[str, Any]:
    """The public members plus ``alg`` (every key we publish or bind carries ``alg``, -11 §8)."""
    data = dict(key.as_dict(private=False))
    return {k: data[k] for k in ("kty", "crv", "x", "y", "alg") if k in data}


def is_server_identifier(value: Any, *, allow_http_loopback: bool = False) -> bool:
    """``https://host`` only: lowercase, no path/query/fragment/userinfo/trailing slash (-11 §6). With
    ``allow_http_loopback`` (development), ``http://127.0.0.1:port`` and ``http://localhost:port`` too."""
    if not isinstance(value, str) or len(value) > 255:
        return False
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return False
    host = parts.hostname or ""
    if parts.path or parts.query or parts.fragment or "@" in parts.netloc or not host or value != value.lower():
        return False
    if value.endswith(("?", "#")):
        return False
    if parts.scheme == "https":
        return port is None
    loopback = host in ("127.0.0.1", "localhost", "::1")
    return allow_http_loopback and parts.scheme == "http" and loopback


def is_agent_id(value: Any) -> bool:
    """``aauth:local@domain`` (-11 allows upper case in the local part; compared case-sensitively)."""
    return isinstance(value, str) and _AGENT_ID.match(value) is not None


def agent_domain(issuer: str) -> str:
    """The domain part of agent identifiers an agent provider at ``issuer`` gives out (its host[:port])."""
    return urlsplit(issuer).netloc


# -- minting ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Signer:
    """One of our private keys: signs JWTs with its ``kid`` and ``alg`` (Ed25519)."""

    kid: str
    key: OKPKey | ECKey
    alg: str = wire.ALG_ED25519

    def sign(self, typ: str, claims: Mapping[str, Any]) -> str:
        header = {"typ": typ, "alg": self.alg, "kid": self.kid}
        payload = json.dumps(dict(claims), separators=(",", ":"), allow_nan=False).encode()
        return jws.serialize_compact(header, payload, self.key, algorithms=[self.alg])


def new_jti() -> str:
    return str(uuid.uuid4())


def base_claims(iss: str, dwk: str, now: int, exp: int) -> dict[str, Any]:
    return {"iss": iss, "dwk": dwk, "jti": new_jti(), "iat": now, "exp": exp}


# -- verification -------------------------------------------------------------------------------------------


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError("duplicate member")
        out[k] = v
    return out


def peek(token: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims, unverified: for routing (``typ``, ``iss``) before any key is looked up."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN:
        raise TokenProblem(wire.SIG_INVALID_JWT, "not a token of sane size")
    parts = token.split(".")
    if len(parts) != 3 or not all(_B64URL.match(p) for p in parts):
        raise TokenProblem(wire.SIG_INVALID_JWT, "not a compact JWS")
    try:
        header = json.loads(b64url_decode(parts[0]), object_pairs_hook=_no_duplicates)
        claims = json.loads(b64url_decode(parts[1]), object_pairs_hook=_no_duplicates)
    except (ValueError, UnicodeDecodeError) as exc:
        raise TokenProblem(wire.SIG_INVALID_JWT, "undecodable") from exc
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise TokenProblem(wire.SIG_INVALID_JWT, "header or claims not objects")
    return header, claims


def _str(claims: Mapping[str, Any], name: str, limit: int = 2048) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value or len(value) > limit:
        raise TokenProblem(wire.SIG_INVALID_JWT, f"missing or invalid {name}")
    return value


def _int(claims: Mapping[str, Any], name: str) -> int:
    value = claims.get(name)
    if type(value) is not int:
        raise TokenProblem(wire.SIG_INVALID_JWT, f"missing or non-integer {name}")
    return value


@dataclass(frozen=True)
class Verified:
    typ: str
    claims: dict[str, Any]
    header: dict[str, Any]

    @property
    def cnf_jwk(self) -> dict[str, Any]:
        return dict(self.claims["cnf"]["jwk"])


async def verify_token(
    token: Any, *, types: Iterable[str], resolve: KeyResolver, now: int,
    expected_iss: str | None = None, expected_aud: str | None = None, signing_jwk: Mapping[str, Any] | None = None,
    is_revoked: Callable[[str, str], Awaitable[bool]] | None = None, allow_http_loopback: bool = False,
) -> Verified:
    """Verify ``token`` as one of ``types`` (see the module docstring for the order and the codes)."""
    header, unverified = peek(token)
    typ = header.get("typ")
    allowed = tuple(types)
    if typ not in allowed:
        raise TokenProblem(wire.SIG_INVALID_JWT, f"typ {typ!r} where {allowed} expected")
    assert isinstance(typ, str)
    alg = header.get("alg")
    if alg not in wire.ACCEPTED_ALGS:
        raise TokenProblem(wire.SIG_INVALID_JWT, f"jws alg {alg!r}")
    if set(header) - {"typ", "alg", "kid"}:
        # No jwk/jku/x5u/crit: a token never brings its own verification key.
        raise TokenProblem(wire.SIG_INVALID_JWT, "unexpected header members")
    kid = header.get("kid")
    if kid is not None and (not isinstance(kid, str) or len(kid) > 128):
        raise TokenProblem(wire.SIG_INVALID_JWT, "bad kid")
    dwk = unverified.get("dwk")
    if dwk not in wire.TYPE_DWK[typ]:
        raise TokenProblem(wire.SIG_INVALID_JWT, f"dwk {dwk!r} for {typ}")
    iss = unverified.get("iss")
    if not is_server_identifier(iss, allow_http_loopback=allow_http_loopback):
        raise TokenProblem(wire.SIG_INVALID_JWT, "iss is not a server identifier")
    assert isinstance(iss, str) and isinstance(dwk, str)
    if expected_iss is not None and iss != expected_iss:
        raise TokenProblem(wire.SIG_INVALID_JWT, "unexpected iss")
    key = await resolve(iss, dwk, kid)
    if key is None:
        raise TokenProblem(wire.SIG_UNKNOWN_KEY, "issuer publishes no such key")
    if key.as_dict().get("alg") not in (None, alg):
        raise TokenProblem(wire.SIG_INVALID_JWT, "alg differs from the issuer key's alg")
    try:
        jws.deserialize_compact(token, key, algorithms=[alg])
    except (JoseError, ValueError, TypeError) as exc:
        raise TokenProblem(wire.SIG_INVALID_JWT, "bad signature") from exc
    claims = unverified
    exp, iat = _int(claims, "exp"), _int(claims, "iat")
    if exp <= now:
        raise TokenProblem(wire.SIG_EXPIRED_JWT, "expired")
    if iat > now + IAT_SKEW:
        raise TokenProblem(wire.SIG_CLOCK_SKEW, "issued in the future")
    if exp - iat > MAX_LIFETIME[typ]:
        raise TokenProblem(wire.SIG_INVALID_JWT, "lifetime over the cap")
    _str(claims, "jti", 128)
    _str(claims, "sub", 512)
    if typ == wire.TYP_AGENT:
        if not is_agent_id(claims["sub"]):
            raise TokenProblem(wire.SIG_INVALID_JWT, "sub is not an agent identifier")
        if "ps" in claims and not is_server_identifier(claims["ps"], allow_http_loopback=allow_http_loopback):
            raise TokenProblem(wire.SIG_INVALID_JWT, "bad ps")
    else:
        aud = _str(claims, "aud", 255)
        if expected_aud is not None and aud != expected_aud:
            raise TokenProblem(wire.SIG_INVALID_JWT, "wrong audience")
    if typ == wire.TYP_PERSON and ("scope" in claims or "account" in claims):
        raise TokenProblem(wire.SIG_INVALID_JWT, "person token with scope or account")
    if typ in (wire.TYP_AUTH, wire.TYP_RESOURCE):
        ps = _str(claims, "ps", 255)
        if not is_server_identifier(ps, allow_http_loopback=allow_http_loopback):
            raise TokenProblem(wire.SIG_INVALID_JWT, "bad ps")
        if typ == wire.TYP_AUTH and dwk == wire.DWK_PERSON and ps != iss:
            raise TokenProblem(wire.SIG_INVALID_JWT, "PS-issued auth token with ps != iss")
    if "scope" in claims and (not isinstance(claims["scope"], str) or len(claims["scope"]) > 2048):
        raise TokenProblem(wire.SIG_INVALID_JWT, "bad scope")
    if typ == wire.TYP_RESOURCE:
        if "presented_jti" not in claims and isinstance(claims.get("person_token_jti"), str):
            claims = {**claims, "presented_jti": claims["person_token_jti"]}  # TS SDK alias, read only (§17.1)
        _str(claims, "presented_jti", 128)
        _str(claims, "agent_jkt", 64)
    else:
        cnf = claims.get("cnf")
        if not isinstance(cnf, dict) or not isinstance(cnf.get("jwk"), dict):
            raise TokenProblem(wire.SIG_INVALID_JWT, "missing cnf.jwk")
        import_public_jwk(cnf["jwk"])
        if signing_jwk is not None and thumbprint(cnf["jwk"]) != thumbprint(signing_jwk):
            raise TokenProblem(wire.SIG_INVALID_KEY, "token bound to another key")
    if is_revoked is not None and await is_revoked(iss, claims["jti"]):
        raise TokenProblem(wire.SIG_REVOKED_JWT, "revoked")
    return Verified(typ=typ, claims=dict(claims), header=header)


_AMOUNT = re.compile(r"^[0-9]{1,15}(?:\.[0-9]{1,8})?$")
_CURRENCY = re.compile(r"^[A-Za-z0-9]{1,12}$")


def parse_amount(value: Any) -> tuple[Decimal, str] | None:
    """The authgate-profile ``amount`` claim (``{"value": "12.50", "currency": "EUR"}``) as (value, currency);
    None when absent; ValueError when malformed."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"value", "currency"}:
        raise ValueError("amount must be {value, currency}")
    number, currency = value["value"], value["currency"]
    if not isinstance(number, str) or not _AMOUNT.match(number) or not isinstance(currency, str) \
            or not _CURRENCY.match(currency):
        raise ValueError("amount value must be a decimal string and currency a short code")
    return Decimal(number), currency


#: An RFC 6749 scope-token, as the person server accepts it in a resource token's ``scope``.
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]{1,128}$")
MAX_SCOPE_RISK = 64
_LEVEL = re.compile(r"^[\x21-\x7e]{1,32}$")


def check_scope_risk(value: Mapping[str, Any]) -> dict[str, str]:
    """A resource owner's risk declaration (authgate profile; ``AgentAuthResource(scope_risk=...)``): each scope
    (an RFC 6749 scope-token) → ``"low"`` or ``"high"``. ValueError naming the first bad entry."""
    if not isinstance(value, Mapping):
        raise ValueError("scope_risk must map scopes to low or high")
    if len(value) > MAX_SCOPE_RISK:
        raise ValueError(f"scope_risk: at most {MAX_SCOPE_RISK} scopes")
    out: dict[str, str] = {}
    for scope, level in value.items():
        if not isinstance(scope, str) or not _SCOPE_TOKEN.match(scope):
            raise ValueError(f"scope_risk: {scope!r} is not a scope")
        if level not in wire.RISK_LEVELS:
            raise ValueError(f"scope_risk[{scope!r}] must be {' or '.join(wire.RISK_LEVELS)}, not {level!r}")
        out[scope] = level
    return out


def parse_scope_risk(value: Any, scopes: Iterable[str]) -> dict[str, str]:
    """The authgate-profile ``scope_risk`` claim of a verified resource token as ``{scope: level}`` for the
    requested ``scopes`` (entries for other scopes are ignored); ``{}`` when absent. ValueError when it is not a
    JSON object of short strings. A level is returned as written, an unknown one included: the person server
    ranks it (:func:`authgate.agentauth.consent.combine` counts an unknown level as high)."""
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_SCOPE_RISK:
        raise ValueError("scope_risk must be an object of at most 64 scopes")
    if not all(isinstance(k, str) and isinstance(v, str) and _LEVEL.match(v) for k, v in value.items()):
        raise ValueError("scope_risk must map scopes to level names")
    return {s: value[s] for s in dict.fromkeys(scopes) if s in value}


def scopes_of(claims: Mapping[str, Any]) -> frozenset[str]:
    value = claims.get("scope")
    return frozenset(value.split()) if isinstance(value, str) else frozenset()
