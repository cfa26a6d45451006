"""The verified identity the gateway forwards to its upstream, in ``X-Authgate-*`` headers, and the helper an
upstream uses to trust them. Imports only the stdlib: copy-free use from any Python upstream
(``from authgate.gateway.identity import verify_identity``).

Headers (absent when empty)::

    X-Authgate-Mechanism        oauth | aauth | agentauth | x402 | public
    X-Authgate-Subject          the person/customer (sub)
    X-Authgate-Agent            OAuth client_id, AAuth act.sub, Agent Auth agent id or key-thumbprint URN
    X-Authgate-Scopes           granted scopes, space-separated
    X-Authgate-Tier             AAuth tier: pii | oob
    X-Authgate-Payer            x402 payer address
    X-Authgate-Payment-Network  CAIP-2 network, X-Authgate-Payment-Amount atomic units,
    X-Authgate-Payment-Asset    token contract, X-Authgate-Payment-Tx settlement tx (upfront settlement only)
    X-Authgate-Timestamp        Unix seconds when the gateway forwarded the request
    X-Authgate-Signature        v1=<base64url HMAC-SHA256>   (``identity = "signed"`` only)

Values are UTF-8, percent-encoded outside printable ASCII (and ``%`` itself). **Signed mode** (the default)
uses HMAC-SHA256 with a secret shared by gateway and upstream — chosen over a JWS because the upstream needs
one secret and the stdlib, not our keys and a JOSE library, and because verification costs microseconds. The
MAC covers a version tag, the method, the request target (path and query as forwarded), the timestamp and every
identity field (an empty line for an absent one), so no header can be added, dropped, swapped between requests
or replayed outside ``max_age``. **Plain mode** sends the same headers unsigned: only on a private hop the
client cannot reach. Either way the gateway removes every ``X-Authgate-*`` header a client sent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, unquote

PREFIX = "x-authgate-"
FIELDS: tuple[tuple[str, str], ...] = (
    ("mechanism", "X-Authgate-Mechanism"),
    ("subject", "X-Authgate-Subject"),
    ("agent", "X-Authgate-Agent"),
    ("scopes", "X-Authgate-Scopes"),
    ("tier", "X-Authgate-Tier"),
    ("payer", "X-Authgate-Payer"),
    ("network", "X-Authgate-Payment-Network"),
    ("amount", "X-Authgate-Payment-Amount"),
    ("asset", "X-Authgate-Payment-Asset"),
    ("transaction", "X-Authgate-Payment-Tx"),
)
#: The same fields with their header names lower-cased once (the per-request paths below use these).
_LOWER: tuple[tuple[str, str, str], ...] = tuple((name, header, header.lower()) for name, header in FIELDS)
TIMESTAMP = "X-Authgate-Timestamp"
SIGNATURE = "X-Authgate-Signature"
VERSION = "v1"
MIN_SECRET = 32
_SAFE = " !\"#$&'()*+,/:;<=>?@[\\]^_`{|}~"  # printable ASCII except '%': kept as is
#: Values that :func:`encode_value` leaves unchanged (letters, digits and ``_SAFE``): no need to call it.
_PLAIN = re.compile(r"[A-Za-z0-9\-._~ !\"#$&'()*+,/:;<=>?@\[\\\]^_`{|}]*")


class IdentityError(Exception):
    """The identity headers cannot be trusted (missing, altered, stale, or signed with another secret)."""


def encode_value(value: str) -> str:
    return quote(value, safe=_SAFE)


def _base(method: str, target: str, timestamp: str, values: Mapping[str, str]) -> bytes:
    lines = [f"authgate-identity-{VERSION}", method.upper(), target, timestamp]
    lines += [f"{lower}:{values.get(lower, '')}" for _, _, lower in _LOWER]
    return "\n".join(lines).encode("utf-8")


def _mac(secret: bytes, base: bytes) -> str:
    return VERSION + "=" + base64.urlsafe_b64encode(hmac.new(secret, base, hashlib.sha256).digest()) \
        .rstrip(b"=").decode("ascii")


def identity_headers(identity: Mapping[str, Any], *, method: str, target: str, secret: bytes | None,
                     now: float | None = None) -> list[tuple[str, str]]:
    """The headers for ``identity`` (an :meth:`Identity.as_dict`); signed when ``secret`` is given."""
    encoded: dict[str, str] = {}
    out: list[tuple[str, str]] = []
    for name, header, lower in _LOWER:
        value = identity.get(name)
        if value is None or value == () or value == "":
            continue
        text = " ".join(value) if isinstance(value, (tuple, list)) else str(value)
        encoded[lower] = quoted = text if _PLAIN.fullmatch(text) else encode_value(text)
        out.append((header, quoted))
    timestamp = str(int(time.time() if now is None else now))
    out.append((TIMESTAMP, timestamp))
    if secret is not None:
        out.append((SIGNATURE, _mac(secret, _base(method, target, timestamp, encoded))))
    return out


def verify_identity(headers: Mapping[str, str] | Iterable[tuple[str, str]], *, method: str, target: str,
                    secret: bytes, now: float | None = None, max_age: int = 60) -> dict[str, Any]:
    """Check the gateway's signature over the ``X-Authgate-*`` headers of a request and return the identity
    (``{"mechanism": ..., "subject": ..., "scopes": (...), ...}``, absent fields left out). ``target`` is the
    request's path and query as received (``request.url.path`` + ``?`` + query). Raises
    :class:`IdentityError`.

    Starlette: ``verify_identity(request.headers.items(), method=request.method, target=target, secret=KEY)``.
    """
    if len(secret) < MIN_SECRET:
        raise IdentityError(f"the secret must be at least {MIN_SECRET} bytes")
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    values: dict[str, str] = {}
    for name, value in pairs:
        key = name.lower()
        if key.startswith(PREFIX):
            if key in values:
                raise IdentityError(f"{name} appears more than once")
            values[key] = value
    signature = values.pop(SIGNATURE.lower(), None)
    timestamp = values.pop(TIMESTAMP.lower(), None)
    if signature is None or timestamp is None:
        raise IdentityError("no signed identity (X-Authgate-Signature and X-Authgate-Timestamp are required)")
    known = {header.lower() for _, header in FIELDS}
    if set(values) - known:
        raise IdentityError(f"unexpected identity header {sorted(set(values) - known)[0]}")
    expected = _mac(secret, _base(method, target, timestamp, values))
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
        raise IdentityError("the identity signature does not verify")
    if not timestamp.isdigit():
        raise IdentityError("malformed X-Authgate-Timestamp")
    age = (time.time() if now is None else now) - int(timestamp)
    if not -max_age <= age <= max_age:
        raise IdentityError("the identity is stale")
    out: dict[str, Any] = {}
    for name, header in FIELDS:
        raw = values.get(header.lower())
        if raw is not None:
            text = unquote(raw)
            out[name] = tuple(text.split()) if name == "scopes" else text
    if "mechanism" not in out:
        raise IdentityError("no X-Authgate-Mechanism")
    return out
