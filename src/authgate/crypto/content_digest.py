"""RFC 9530 ``Content-Digest``: emit ``sha-256``, verify ``sha-256`` and ``sha-512`` against the real body bytes.

The header is an SF Dictionary of Byte Sequences. A verifier must check every member it knows (a wrong ``sha-512``
beside a right ``sha-256`` is a mismatch) and at least one must be known; insecure or unknown algorithms are
ignored, as RFC 9530 §2 allows. Comparison is constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from authgate.crypto import sfv

_ALGS = {"sha-256": hashlib.sha256, "sha-512": hashlib.sha512}


class DigestError(ValueError):
    """The Content-Digest header is malformed, names no supported algorithm, or does not match the body."""


def content_digest(body: bytes, alg: str = "sha-256") -> str:
    """The ``Content-Digest`` header value for ``body``."""
    return f"{alg}=:{base64.b64encode(_ALGS[alg](body).digest()).decode('ascii')}:"


def verify_content_digest(header: str, body: bytes) -> str:
    """Check ``header`` against ``body``; returns the (last) algorithm that matched, raises DigestError."""
    try:
        members = sfv.parse_dictionary(header)
    except sfv.SFVError as exc:
        raise DigestError("malformed Content-Digest") from exc
    matched = ""
    for name, (value, _params) in members.items():
        fn = _ALGS.get(name)
        if fn is None:
            continue
        if not isinstance(value, bytes) or isinstance(value, bool):
            raise DigestError("Content-Digest member is not a byte sequence")
        if not hmac.compare_digest(fn(body).digest(), value):
            raise DigestError(f"Content-Digest {name} does not match the body")
        matched = name
    if not matched:
        raise DigestError("Content-Digest has no sha-256 or sha-512 member")
    return matched
