"""Verifying a signed Agent Auth request end to end: RFC 9421 (:mod:`authgate.crypto.httpsig`) + the token in
``Signature-Key`` (:mod:`authgate.agentauth.tokens`).

For the ``jwt`` scheme the signing key *is* the token's ``cnf.jwk``, so the token is verified inside the
signature verifier's key-resolution step (-11 §4.4 step 5): token problems come out as ``401`` +
``Signature-Error`` with the token code (``invalid_jwt``, ``expired_jwt``, ``revoked_jwt``, ``unknown_key``,
``issuer_mismatch``…), then the HTTP signature is checked with ``cnf.jwk`` (step 7).

Servers signing as themselves (PS→AS, revocation: -11 §3.6, §3.10) use the ``jwks_uri`` scheme instead:
:func:`verify_server_signed` accepts only that scheme, only from the servers a
:class:`~authgate.agentauth.discovery.ServerKeys` admits, and requires the body to be covered.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from authgate.agentauth import wire
from authgate.agentauth.errors import TokenProblem
from authgate.agentauth.tokens import KeyResolver, Verified, thumbprint, verify_token
from authgate.crypto.httpsig import SignatureError, VerifiedRequest, verify_request
from authgate.crypto.signature_key import JWKS_URI, SignatureKey

if TYPE_CHECKING:
    from authgate.agentauth.discovery import ServerIdentity, ServerKeys
    from authgate.agentauth.replay import ReplayCache

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class Caller:
    """A verified signed request: the token presented in ``Signature-Key``, its claims, the signing key."""

    token: str
    verified: Verified
    jwk: dict[str, Any]
    jkt: str
    request: VerifiedRequest

    @property
    def typ(self) -> str:
        return self.verified.typ

    @property
    def claims(self) -> dict[str, Any]:
        return self.verified.claims


def _sig_error(problem: TokenProblem) -> SignatureError:
    return SignatureError(problem.code, "the token in Signature-Key was refused", reason=problem.debug or problem.code)


async def verify_signed(
    *, method: str, authority: str, path: str, query: str | None, headers: Iterable[tuple[str, str]], body: bytes,
    now: int, resolve: KeyResolver, token_types: Sequence[str], expected_aud: str | None = None,
    is_revoked: Callable[[str, str], Awaitable[bool]] | None = None, replay: ReplayCache | None = None,
    window: int = 60, canonical_authorities: Sequence[str] = (), scheme: str = "https",
    required_components: Sequence[str] = (), allow_http_loopback: bool = False,
) -> Caller:
    """Raises :class:`SignatureError` (always 401 + ``Signature-Error``) for anything wrong with the signature or
    the token carrying its key. ``replay`` is consulted for state-changing methods only."""
    seen: dict[str, Any] = {}

    async def resolve_key(key: SignatureKey) -> dict[str, Any]:
        token = key.jwt
        if not token:
            raise SignatureError(wire.SIG_INVALID_KEY, "the jwt scheme needs a jwt parameter", reason="no_jwt")
        try:
            verified = await verify_token(token, types=token_types, resolve=resolve, now=now,
                                          expected_aud=expected_aud, is_revoked=is_revoked,
                                          allow_http_loopback=allow_http_loopback)
        except TokenProblem as exc:
            raise _sig_error(exc) from exc
        seen["token"], seen["verified"] = token, verified
        return verified.cnf_jwk

    result = await verify_request(
        method=method, authority=authority, path=path, query=query, headers=headers, body=body, now=now,
        resolve_key=resolve_key, window=window, replay=replay if method.upper() in STATE_CHANGING else None,
        canonical_authorities=canonical_authorities, scheme=scheme, schemes=("jwt",),
        required_components=required_components)
    verified = seen["verified"]
    jwk = verified.cnf_jwk
    return Caller(token=seen["token"], verified=verified, jwk=jwk, jkt=thumbprint(jwk), request=result)


@dataclass(frozen=True)
class ServerCaller:
    """A verified server-to-server request (``jwks_uri`` scheme): which server signed, with which key."""

    server: ServerIdentity
    jwk: dict[str, Any]
    jkt: str
    request: VerifiedRequest

    typ: ClassVar[str] = "server"


async def verify_server_signed(
    *, method: str, authority: str, path: str, query: str | None, headers: Iterable[tuple[str, str]], body: bytes,
    now: int, servers: ServerKeys, replay: ReplayCache | None = None, window: int = 60,
    canonical_authorities: Sequence[str] = (), scheme: str = "https",
) -> ServerCaller:
    """Verify a request a server signed as itself. Any other scheme is ``unsupported_scheme`` (with
    ``Accept-Signature-Scheme: jwks_uri``); a body must be covered with its type (-11: the PS "covers the
    body"). Raises :class:`SignatureError`; ``replay`` is consulted for state-changing methods only."""
    seen: dict[str, Any] = {}

    async def resolve_key(key: SignatureKey) -> dict[str, Any]:
        seen["server"], seen["jwk"] = await servers.resolve(key)
        return dict(seen["jwk"])

    result = await verify_request(
        method=method, authority=authority, path=path, query=query, headers=headers, body=body, now=now,
        resolve_key=resolve_key, window=window, replay=replay if method.upper() in STATE_CHANGING else None,
        canonical_authorities=canonical_authorities, scheme=scheme, schemes=(JWKS_URI,),
        required_components=wire.BODY_COMPONENTS if body else ())
    return ServerCaller(server=seen["server"], jwk=seen["jwk"], jkt=result.key_thumbprint, request=result)


def scope_headers(scope: MutableMapping[str, Any]) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope.get("headers", [])]


def scope_target(scope: MutableMapping[str, Any]) -> tuple[str, str, str | None]:
    """(Host as received, raw path, raw query or None) of an ASGI HTTP scope."""
    host = next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"host"), "")
    raw_path = scope.get("raw_path") or scope.get("path", "/").encode()
    query = scope.get("query_string", b"")
    return host, raw_path.decode("latin-1"), query.decode("latin-1") if query else None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json_object(body: bytes) -> dict[str, Any] | None:
    """The body as a JSON object, or None (not UTF-8 JSON, or not an object)."""
    try:
        # UTF-8 JSON only; NaN/Infinity and lone surrogates are refused here (they could not be stored or echoed).
        value = json.loads(body.decode("utf-8"), parse_constant=_no_constant)
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except (UnicodeError, ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None
