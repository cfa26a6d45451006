"""RFC 9421 HTTP Message Signatures, as profiled by Agent Auth (draft-hardt-oauth-aauth-protocol-11 §4).

Every Agent Auth request is signed. This module is the narrow, fast path for exactly that profile:

- **Signing** (:func:`sign_request`) is strict: covered components ``"@method" "@authority" "@path"
  "signature-key"`` (+ ``"content-type" "content-digest"`` when there is a body, + ``"authorization"`` when sent),
  only ``created`` (no ``alg``, ``keyid`` or ``nonce``), normalised ``@authority``, standard padded base64 in
  ``Signature``, raw ``r||s`` for ECDSA, ``Content-Digest: sha-256``.
- **Verification** (:func:`verify_request`) follows the profile's order (headers → covered components →
  ``created`` window → scheme → key → algorithm → signature) and raises :class:`SignatureError` whose ``code`` is
  the exact ``Signature-Error`` value; then the digest of the real body and the replay cache. It accepts the
  lenient forms the PyPI ``aauth`` peer emits (unpadded base64url ``Signature``, DER ECDSA, raw ``@authority``)
  behind flags that default on, and records which form arrived.

Only ``@method``, ``@authority``, ``@path``, ``@query``, ``@scheme`` and plain header fields are
understood (no component parameters): everything else is ``invalid_input``. Keys come from the caller's async
``resolve_key`` (the protocol layer knows what a ``jwt`` means) and are parsed once and cached by their public
members. Imports only the standard library and ``cryptography`` so the agent SDK can sign without the server.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from authgate.crypto import sfv
from authgate.crypto.content_digest import DigestError, content_digest, verify_content_digest
from authgate.crypto.jwk import (
    ED25519,
    ES256,
    SUPPORTED_ALGS,
    JWKError,
    PrivateKey,
    VerificationKey,
    load_public_jwk,
)
from authgate.crypto.signature_key import SignatureKey

if TYPE_CHECKING:
    from authgate.agentauth.replay import ReplayCache

__all__ = [
    "CLOCK_SKEW",
    "EXPIRED_JWT",
    "INVALID_INPUT",
    "INVALID_JWT",
    "INVALID_KEY",
    "INVALID_REQUEST",
    "INVALID_SIGNATURE",
    "ISSUER_MISMATCH",
    "ISSUER_MISSING",
    "MANDATORY_COMPONENTS",
    "REVOKED_JWT",
    "UNKNOWN_KEY",
    "UNSUPPORTED_ALGORITHM",
    "UNSUPPORTED_SCHEME",
    "KeyResolver",
    "SignatureError",
    "VerifiedRequest",
    "normalize_authority",
    "replay_key",
    "sign_request",
    "signature_base",
    "verify_request",
]

# Signature-Error codes (draft-hardt-httpbis-signature-key-08 registry + AAuth -11 additions).
INVALID_SIGNATURE = "invalid_signature"
INVALID_INPUT = "invalid_input"
INVALID_REQUEST = "invalid_request"
INVALID_KEY = "invalid_key"
UNKNOWN_KEY = "unknown_key"
INVALID_JWT = "invalid_jwt"
EXPIRED_JWT = "expired_jwt"
REVOKED_JWT = "revoked_jwt"
ISSUER_MISSING = "issuer_missing"
ISSUER_MISMATCH = "issuer_mismatch"
UNSUPPORTED_ALGORITHM = "unsupported_algorithm"
UNSUPPORTED_SCHEME = "unsupported_scheme"
CLOCK_SKEW = "clock_skew"

MANDATORY_COMPONENTS = ("@method", "@authority", "@path", "signature-key")
_DERIVED = frozenset({"@method", "@authority", "@path", "@query", "@scheme"})
_DEFAULT_PORT = {"https": ":443", "http": ":80"}
_MAX_COMPONENTS = 32
_MAX_AUTHORITY_CANDIDATES = 8
# Fast paths for the shapes signers actually send (one label, canonical spacing, plain strings and integers):
# the matched text is then byte-for-byte its own RFC 8941 serialisation, so @signature-params needs no rebuild.
# Anything else goes through the general parser. Parsed Signature-Key headers are cached: an agent sends the
# same token (the same header) on every request for up to an hour.
_KEY_RE = r"[a-z*][a-z0-9_\-.*]*"
_STR_RE = r'"[ !#-\[\]-~]*"'
_INT_RE = r"-?(?:0|[1-9][0-9]{0,14})"
_FAST_INPUT = re.compile(
    rf"({_KEY_RE})=(\(((?:{_STR_RE}(?: {_STR_RE})*)?)\)((?:;{_KEY_RE}=(?:{_INT_RE}|{_STR_RE}))*))")
_FAST_PARAM = re.compile(rf';({_KEY_RE})=({_INT_RE}|{_STR_RE})')
_FAST_SIG = re.compile(rf"({_KEY_RE})=:([A-Za-z0-9+/_\-]*={{0,2}}):")
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())
_KEY_CACHE: dict[str, dict[str, sfv.Member]] = {}
_KEY_CACHE_MAX = 1024
# RFC 9421 §6.2 algorithm names a signer might still put in the (forbidden but tolerated) `alg` parameter.
_RFC9421_ALG = {"ed25519": ED25519, "ecdsa-p256-sha256": ES256, ED25519: ED25519, ES256: ES256}


class SignatureError(Exception):
    """A signature failure: always ``401`` with ``Signature-Error: error=<code>``.

    ``code`` is the exact registry value; ``detail`` is a short, safe explanation for the client; ``reason`` is a
    stable machine-readable cause for logs and tests (``missing_headers``, ``stale``, ``replay``,
    ``digest_mismatch``, …) that several causes sharing one code can be told apart by. The protocol layer raises
    it from ``resolve_key`` too (``invalid_jwt``, ``expired_jwt``, ``revoked_jwt``, ``unknown_key``, …).
    """

    status_code = 401

    def __init__(self, code: str, detail: str = "", *, reason: str = "", required_input: Sequence[str] = (),
                 accept_schemes: Sequence[str] = (), accept_algs: Sequence[str] = ()) -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail
        self.reason = reason or code
        self.required_input = tuple(required_input)
        self.accept_schemes = tuple(accept_schemes)
        self.accept_algs = tuple(accept_algs)

    def headers(self) -> dict[str, str]:
        """``Signature-Error`` (+ ``required_input``) and, where the spec says, ``Accept-Signature-Scheme`` /
        ``Accept-Signature-Alg``. Never put these on a 403."""
        members: dict[str, tuple[sfv.BareItem | sfv.InnerList, dict[str, sfv.BareItem]]] = {
            "error": (sfv.Token(self.code), {})}
        if self.required_input:
            members["required_input"] = ([(c, {}) for c in self.required_input], {})
        out = {"Signature-Error": sfv.serialize_dictionary(members)}
        if self.accept_schemes:
            out["Accept-Signature-Scheme"] = sfv.serialize_token_list(self.accept_schemes)
        if self.accept_algs:
            out["Accept-Signature-Alg"] = sfv.serialize_token_list(self.accept_algs)
        return out

    def problem(self) -> dict[str, Any]:
        """The ``application/problem+json`` body (advisory; the header is authoritative)."""
        body: dict[str, Any] = {"type": f"urn:ietf:params:sig-error:{self.code}", "status": 401, "error": self.code}
        if self.detail:
            body["detail"] = self.detail
        return body

    def render(self) -> tuple[int, dict[str, str], bytes]:
        import json

        headers = {"Content-Type": "application/problem+json", "Cache-Control": "no-store", **self.headers()}
        return 401, headers, json.dumps(self.problem()).encode()


@dataclass(frozen=True)
class VerifiedRequest:
    """What a verified signature establishes: which key (``key_thumbprint`` = RFC 7638 ``jkt``) signed what."""

    label: str
    key_thumbprint: str
    created: int
    covered: tuple[str, ...]
    signature_key: SignatureKey
    encoding_seen: str  # "base64" (strict RFC 8941) or "base64url" (unpadded/url alphabet, accepted leniently)
    alg: str
    authority: str  # the @authority value the signature verified with
    expires: int | None = None
    ecdsa_der: bool = False  # an ES256 signature arrived DER-encoded (accepted leniently)
    key: VerificationKey | None = field(default=None, repr=False, compare=False)


KeyResolver = Callable[[SignatureKey], Awaitable[Mapping[str, Any] | VerificationKey]]


def normalize_authority(authority: str, scheme: str = "https") -> str:
    """RFC 9421 §2.2.3 ``@authority``: lowercase host, default port dropped."""
    a = authority.strip().lower()
    default = _DEFAULT_PORT.get(scheme.lower())
    if default and a.endswith(default):
        a = a[: -len(default)]
    return a


def _lower_headers(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    """Lowercased names; repeated fields combined with ``", "`` (RFC 9421 §2.1); values trimmed."""
    out: dict[str, str] = {}
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    for k, v in pairs:
        name = k.lower()
        v = v.strip(" \t")
        out[name] = f"{out[name]}, {v}" if name in out else v
    return out


def _component(name: str, method: str, path: str, query: str | None, scheme: str,
               headers: Mapping[str, str]) -> str | None:
    """Value of every component except ``@authority`` (the caller supplies that); None when absent."""
    if name == "@method":
        return method
    if name == "@path":
        return path or "/"
    if name == "@query":
        return "?" + (query or "")
    if name == "@scheme":
        return scheme
    return headers.get(name)


def replay_key(jkt: str, signature_base: str) -> bytes:
    """The replay-cache key: SHA-256 over the signer's key thumbprint and the exact signature base.

    The base holds ``created``, ``@method``, ``@authority`` and ``@path`` (the tuple the profile names, §13) plus
    everything else covered (query, body digest, token), so two different requests in the same second don't
    collide, while a captured request can't be replayed under any disguise: re-encoding the ``Signature`` (DER vs
    raw, base64url vs base64, ECDSA's ``s``/``n-s`` malleability) or relabelling leaves the base unchanged —
    which is why the signature bytes themselves are *not* the key.
    """
    return hashlib.sha256(jkt.encode() + b"\n" + signature_base.encode()).digest()


def signature_base(covered: Sequence[str], params: Mapping[str, sfv.BareItem], *, method: str, authority: str,
                   path: str, query: str | None, headers: Mapping[str, str], scheme: str = "https") -> str:
    """The RFC 9421 §2.5 signature base for ``covered`` components (``headers`` keyed by lowercase name; the
    ``signature-key`` entry is the whole header value) and signature ``params``. Raises ValueError when a
    covered field is absent."""
    lines = []
    for c in covered:
        value = authority if c == "@authority" else _component(c, method, path, query, scheme, headers)
        if value is None:
            raise ValueError(f"cannot cover {c!r}: not present in the request")
        lines.append(f'"{c}": {value}\n')
    return "".join(lines) + f'"@signature-params": {sfv.serialize_inner_list([(c, {}) for c in covered], params)}'


# -- signing ---------------------------------------------------------------------------------------------


def sign_request(*, method: str, url: str, headers: Mapping[str, str], body: bytes, key: PrivateKey,
                 signature_key: str, created: int | None = None, label: str = "sig",
                 extra_components: Sequence[str] = (), expires: int | None = None,
                 signature_encoding: str = "base64") -> dict[str, str]:
    """Sign a request; returns the headers to add: ``Signature-Input``, ``Signature``, ``Signature-Key`` and,
    when ``body`` is not empty, ``Content-Digest``.

    ``headers`` are the ones the request will carry (``Content-Type`` and ``Authorization`` are covered when
    present). ``signature_key`` is the member value from a :mod:`authgate.crypto.signature_key` builder (e.g.
    ``jwt_scheme(token)``); a full header value starting with ``<label>=`` is accepted too. ``key`` is an Ed25519
    or P-256 private key; the algorithm follows from it.

    ``signature_encoding="base64url"`` is a compatibility switch for verifiers that reject the RFC 8941 byte
    sequence (the PyPI ``aauth`` 0.5.0 ``RequestVerifier`` only parses unpadded base64url); keep the strict
    default everywhere else.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    authority = host if port is None or _DEFAULT_PORT.get(scheme) == f":{port}" else f"{host}:{port}"
    h = _lower_headers(headers)
    head = signature_key.split(";", 1)[0]
    if "=" in head:
        if not signature_key.startswith(f"{label}="):
            raise ValueError("signature_key carries a different label")
        sk_header = signature_key
    else:
        sk_header = f"{label}={signature_key}"
    h["signature-key"] = sk_header
    out = {"Signature-Key": sk_header}
    covered = list(MANDATORY_COMPONENTS)
    if body:
        digest = content_digest(body)
        out["Content-Digest"] = h["content-digest"] = digest
        if "content-type" in h:
            covered.append("content-type")
        covered.append("content-digest")
    if "authorization" in h:
        covered.append("authorization")
    for c in extra_components:
        c = c.lower()
        if c not in covered:
            covered.append(c)
    params: dict[str, sfv.BareItem] = {"created": int(time.time()) if created is None else created}
    if expires is not None:
        params["expires"] = expires
    base = signature_base(covered, params, method=method.upper(), authority=authority, path=parts.path,
                          query=parts.query, headers=h, scheme=scheme)
    sig_params = base.rsplit('"@signature-params": ', 1)[1]
    if isinstance(key, Ed25519PrivateKey):
        signature = key.sign(base.encode())
    elif isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        r, s = decode_dss_signature(key.sign(base.encode(), ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    else:
        raise ValueError("only Ed25519 and P-256 keys can sign")
    out["Signature-Input"] = f"{label}={sig_params}"
    if signature_encoding == "base64url":
        out["Signature"] = f"{label}=:{base64.urlsafe_b64encode(signature).rstrip(b'=').decode('ascii')}:"
    elif signature_encoding == "base64":
        out["Signature"] = f"{label}={sfv.serialize_bare_item(signature)}"
    else:
        raise ValueError("signature_encoding is base64 or base64url")
    return out


# -- verification ----------------------------------------------------------------------------------------


def _verify(vk: VerificationKey, signature: bytes, message: bytes, accept_der: bool) -> tuple[bool, bool]:
    """(valid, was_der)."""
    try:
        if vk.alg == ED25519:
            if len(signature) != 64 or not isinstance(vk.key, Ed25519PublicKey):
                return False, False
            vk.key.verify(signature, message)
            return True, False
        if not isinstance(vk.key, ec.EllipticCurvePublicKey):
            return False, False
        if len(signature) == 64:
            der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
            was_der = False
        elif accept_der and signature[:1] == b"\x30":
            der, was_der = signature, True
        else:
            return False, False
        vk.key.verify(der, message, _ECDSA_SHA256)
        return True, was_der
    except InvalidSignature:
        return False, False


async def verify_request(
    *,
    method: str,
    authority: str,
    path: str,
    query: str | None,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    body: bytes,
    now: float,
    resolve_key: KeyResolver,
    window: int = 60,
    replay: ReplayCache | None = None,
    canonical_authorities: Sequence[str] = (),
    scheme: str = "https",
    schemes: Sequence[str] = ("jwt",),
    required_components: Sequence[str] = (),
    body_requires_digest: bool = True,
    accept_base64url: bool = True,
    accept_der: bool = True,
    accept_raw_authority: bool = True,
    allow_eddsa: bool = False,
) -> VerifiedRequest:
    """Verify an Agent Auth signed request, in the profile's order; raises :class:`SignatureError`.

    ``authority`` is the request's Host as received (normalised here); ``path`` the raw path; ``query`` the raw
    query without ``?`` (None when absent). With ``canonical_authorities`` (deployments behind a proxy) the
    signature must verify with the request authority if it is listed, else with one of the listed ones —
    ``X-Forwarded-*`` is never read. ``schemes`` are the Signature-Key schemes this endpoint accepts
    (``jwt``; add ``jwks_uri`` for server-to-server). ``required_components`` adds to the mandatory set (e.g.
    ``("content-type", "content-digest")`` on PS/AS endpoints, or a resource's ``additional_signature_components``);
    with ``body_requires_digest`` a non-empty body must be covered by ``content-digest``. ``replay`` (pass it for
    state-changing requests) refuses a second use of the same signed request within the window.

    ``resolve_key(signature_key)`` returns the signer's public JWK (or a :class:`VerificationKey`); it raises
    :class:`SignatureError` itself for token problems (``invalid_jwt``, ``expired_jwt``, ``unknown_key``, …).
    """
    h = _lower_headers(headers)
    si, sg, sk = h.get("signature-input"), h.get("signature"), h.get("signature-key")
    # 1. headers present and well formed
    if not (si and sg and sk):
        raise SignatureError(INVALID_SIGNATURE, "Signature-Input, Signature and Signature-Key are required",
                             reason="missing_headers")
    sig_params: str | None = None
    try:
        fast = _FAST_INPUT.fullmatch(si)
        if fast:  # the one-label canonical shape every signer sends: its text is already the serialisation
            label_in, sig_params, comps, ptext = fast.groups()
            inputs: dict[str, sfv.Member] = {label_in: (
                [(c, {}) for c in comps[1:-1].split('" "')] if comps else [],
                {k: (v[1:-1] if v[0] == '"' else int(v)) for k, v in _FAST_PARAM.findall(ptext)})}
        else:
            inputs = sfv.parse_dictionary(si)
        fast = _FAST_SIG.fullmatch(sg)
        if fast:
            sigs: dict[str, sfv.Member] = {
                fast.group(1): (sfv.decode_byte_sequence(fast.group(2), accept_base64url), {})}
        else:
            sigs = sfv.parse_dictionary(sg, lenient_bytes=accept_base64url)
    except sfv.SFVError as exc:
        raise SignatureError(INVALID_SIGNATURE, "malformed Signature-Input or Signature",
                             reason="malformed_signature") from exc
    key_members = _KEY_CACHE.get(sk)
    if key_members is None:
        try:
            key_members = sfv.parse_dictionary(sk)
        except sfv.SFVError as exc:
            raise SignatureError(INVALID_KEY, "malformed Signature-Key", reason="malformed_signature_key") from exc
        if len(_KEY_CACHE) >= _KEY_CACHE_MAX:
            _KEY_CACHE.pop(next(iter(_KEY_CACHE)))
        _KEY_CACHE[sk] = key_members
    label = next((k for k in key_members if k in inputs and k in sigs), None)
    if label is None:
        raise SignatureError(INVALID_SIGNATURE, "no label common to Signature-Input, Signature and Signature-Key",
                             reason="label_mismatch")
    items, params = inputs[label]
    signature = sigs[label][0]
    if not isinstance(items, list) or not isinstance(signature, bytes):
        raise SignatureError(INVALID_SIGNATURE, "malformed signature member", reason="malformed_signature")

    # 2. covered components
    covered: list[str] = []
    for value, cparams in items:
        if not isinstance(value, str) or isinstance(value, sfv.Token) or len(covered) >= _MAX_COMPONENTS:
            raise SignatureError(INVALID_SIGNATURE, "covered components must be strings", reason="malformed_signature")
        if cparams or (value.startswith("@") and value not in _DERIVED) or value != value.lower():
            raise SignatureError(INVALID_INPUT, "unsupported covered component", reason="unsupported_component")
        if value in covered:
            raise SignatureError(INVALID_SIGNATURE, "duplicate covered component", reason="malformed_signature")
        covered.append(value)
    required: Sequence[str] = MANDATORY_COMPONENTS
    if required_components or "authorization" in h or (body and body_requires_digest):
        required = list(MANDATORY_COMPONENTS)
        for extra in (*required_components, *(("authorization",) if "authorization" in h else ()),
                      *(("content-digest",) if body and body_requires_digest else ())):
            if extra not in required:
                required.append(extra)
    for r in required:
        if r not in covered:
            raise SignatureError(INVALID_INPUT, "required components are not covered", reason="not_covered",
                                 required_input=required)
    created = params.get("created")
    if type(created) is not int:
        raise SignatureError(INVALID_INPUT, "the created parameter is required", reason="no_created")
    expires = params.get("expires")
    if expires is not None and type(expires) is not int:
        raise SignatureError(INVALID_INPUT, "expires must be an integer", reason="malformed_signature")

    # 3. freshness
    if created > now + window:
        raise SignatureError(CLOCK_SKEW, "created is ahead of the server clock", reason="future")
    if created < now - window:
        raise SignatureError(INVALID_SIGNATURE, "created is outside the signature window", reason="stale")
    if expires is not None and (expires <= now or expires < created):
        raise SignatureError(INVALID_SIGNATURE, "the signature has expired", reason="expired")

    # 4. scheme
    scheme_token, sk_params = key_members[label]
    if not isinstance(scheme_token, sfv.Token):
        raise SignatureError(INVALID_KEY, "Signature-Key member must be a scheme token",
                             reason="malformed_signature_key")
    if scheme_token not in schemes:
        raise SignatureError(UNSUPPORTED_SCHEME, "Signature-Key scheme not accepted here",
                             reason="unsupported_scheme", accept_schemes=schemes)
    skey = SignatureKey(label=label, scheme=str(scheme_token), params=MappingProxyType(sk_params), raw=sk)

    # 5. key, 6. algorithm
    resolved = await resolve_key(skey)
    if isinstance(resolved, VerificationKey):
        vk = resolved
        if vk.alg not in SUPPORTED_ALGS:
            raise SignatureError(UNSUPPORTED_ALGORITHM, "algorithm not accepted", reason="unsupported_algorithm",
                                 accept_algs=SUPPORTED_ALGS)
    else:
        try:
            vk = load_public_jwk(resolved, allow_eddsa=allow_eddsa)
        except JWKError as exc:
            if exc.unsupported:
                raise SignatureError(UNSUPPORTED_ALGORITHM, str(exc), reason="unsupported_algorithm",
                                     accept_algs=SUPPORTED_ALGS) from exc
            raise SignatureError(INVALID_KEY, "the signing key is not a valid public JWK",
                                 reason="invalid_key") from exc
    alg_param = params.get("alg")
    if alg_param is not None and (not isinstance(alg_param, str) or _RFC9421_ALG.get(alg_param) != vk.alg):
        raise SignatureError(UNSUPPORTED_ALGORITHM, "alg parameter disagrees with the key",
                             reason="alg_mismatch", accept_algs=SUPPORTED_ALGS)
    keyid = params.get("keyid")
    if keyid is not None and keyid not in (vk.kid, vk.jkt):
        raise SignatureError(INVALID_KEY, "keyid names another key", reason="keyid_mismatch")

    # 7. signature over the base, for each acceptable @authority
    norm = normalize_authority(authority, scheme)
    if canonical_authorities:
        canon = [normalize_authority(a, scheme) for a in canonical_authorities[:_MAX_AUTHORITY_CANDIDATES]]
        candidates = [norm] if norm in canon else canon
    else:
        candidates = [norm]
    raw_authority = authority.strip()
    if accept_raw_authority and raw_authority != norm and norm in candidates:
        candidates.append(raw_authority)  # the aauth peer signs the URL's netloc as written (Host:443)
    if sig_params is None:
        sig_params = sfv.serialize_inner_list(items, params)
    before: list[str] = []
    after: list[str] = []
    seen_authority = False
    for c in covered:
        if c == "@authority":
            seen_authority = True
            continue
        cvalue = _component(c, method, path, query, scheme, h)
        if cvalue is None:
            raise SignatureError(INVALID_SIGNATURE, f"covered field {c} is absent", reason="absent_component")
        (after if seen_authority else before).append(f'"{c}": {cvalue}\n')
    head, tail = "".join(before), "".join(after) + f'"@signature-params": {sig_params}'
    base = ""
    ok = was_der = False
    used_authority = norm
    for cand in candidates:
        base = f'{head}"@authority": {cand}\n{tail}'
        ok, was_der = _verify(vk, signature, base.encode(), accept_der)
        if ok:
            used_authority = cand
            break
    if not ok:
        raise SignatureError(INVALID_SIGNATURE, "signature verification failed", reason="bad_signature")

    # the body is what was signed
    if "content-digest" in covered:
        try:
            verify_content_digest(h["content-digest"], body)
        except DigestError as exc:
            raise SignatureError(INVALID_SIGNATURE, "Content-Digest does not match the body",
                                 reason="digest_mismatch") from exc

    # single use within the window
    if replay is not None and await replay.seen_before(replay_key(vk.jkt, base), 2 * window + 1):
        raise SignatureError(INVALID_SIGNATURE, "this signed request was already used", reason="replay")

    return VerifiedRequest(
        label=label, key_thumbprint=vk.jkt, created=created, covered=tuple(covered), signature_key=skey,
        encoding_seen="base64url" if isinstance(signature, sfv.Base64UrlBytes) else "base64", alg=vk.alg,
        authority=used_authority, expires=expires, ecdsa_der=was_der, key=vk)
