"""The two error surfaces of Agent Auth (-11 §4.4, §10).

* :class:`SignatureProblem`: anything wrong with the HTTP signature or the key behind it (agent token included).
  Always ``401`` with a ``Signature-Error`` header (the header is authoritative) and a problem+json body.
* :class:`Problem`: protocol errors, ``application/problem+json`` with ``error`` and ``detail``. A ``403``
  never carries ``Signature-Error``.

``debug`` is for our logs and never rendered; ``detail`` is short, fixed text written here, never an echo of
input.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from authgate.agentauth import wire

PROBLEM_JSON = "application/problem+json"


class Problem(Exception):
    """A protocol error: ``status``, ``error`` code, a short ``detail``; extra headers such as
    ``AAuth-Requirement`` ride along."""

    def __init__(self, status: int, error: str, detail: str = "", *, headers: Mapping[str, str] | None = None,
                 debug: str = "") -> None:
        super().__init__(f"{error}: {detail}" if detail else error)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = dict(headers or {})
        self.debug = debug

    def body(self) -> dict[str, str]:
        out = {"error": self.error}
        if self.detail:
            out["detail"] = self.detail
        return out

    def render(self) -> tuple[int, dict[str, str], bytes]:
        headers = {"Content-Type": PROBLEM_JSON, "Cache-Control": "no-store", **self.headers}
        return self.status, headers, json.dumps(self.body()).encode()


class SignatureProblem(Problem):
    """``401`` + ``Signature-Error: error=<code>``; scheme and algorithm refusals add the accepted sets."""

    def __init__(self, code: str, detail: str = "", *, debug: str = "",
                 headers: Mapping[str, str] | None = None) -> None:
        extra = {wire.H_SIGNATURE_ERROR: f"error={code}", **(headers or {})}
        if code == wire.SIG_UNSUPPORTED_SCHEME:
            extra.setdefault(wire.H_ACCEPT_SCHEME, "jwt")
        if code == wire.SIG_UNSUPPORTED_ALGORITHM:
            extra.setdefault(wire.H_ACCEPT_ALG, ", ".join(wire.ACCEPTED_ALGS))
        super().__init__(401, code, detail, headers=extra, debug=debug)

    def body(self) -> dict[str, str]:
        return {"type": f"urn:ietf:params:sig-error:{self.error}", **super().body()}


class TokenProblem(Exception):
    """A JWT failed a check; ``code`` is the signature-error code the spec assigns (``invalid_jwt``,
    ``expired_jwt``, ``invalid_key``, ``revoked_jwt``, ``issuer_mismatch``, ``unknown_key``, …). Callers map it
    to a :class:`SignatureProblem` (the token carried the request key) or to an endpoint code (a token in a
    body: ``invalid_resource_token``, ``expired_presented_token``…)."""

    def __init__(self, code: str, debug: str = "") -> None:
        super().__init__(f"{code}: {debug}" if debug else code)
        self.code = code
        self.debug = debug
