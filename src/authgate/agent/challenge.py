"""Parse ``WWW-Authenticate`` challenges (RFC 9110 §11.6.1; Bearer parameters per RFC 6750 §3 and
RFC 9728 §5.1).

A header field may carry several challenges, and a response several header fields::

    WWW-Authenticate: Basic realm="x", Bearer error="insufficient_scope", scope="a b",
                      resource_metadata="https://api.example/.well-known/oauth-protected-resource/mcp"

Parameter names are case-insensitive (returned lower-cased); values are tokens or quoted strings with
backslash escapes. A parameter given twice keeps its first value. Malformed input never raises: parsing
stops at the first thing that cannot be understood and keeps what came before.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

_TCHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_TOKEN68 = _TCHARS | frozenset("/")  # token68 = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_WS = " \t"


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lower-cased
    params: dict[str, str] = field(default_factory=dict)
    token68: str | None = None


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip(self, chars: str) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in chars:
            self.pos += 1

    def take(self, allowed: frozenset[str]) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in allowed:
            self.pos += 1
        return self.text[start : self.pos]

    def take_until(self, stop: str) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in stop:
            self.pos += 1
        return self.text[start : self.pos]

    def quoted(self) -> str | None:
        """A quoted-string at the cursor (opening quote included), unescaped; None if unterminated."""
        assert self.peek() == '"'
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            self.pos += 1
            if ch == "\\" and self.pos < len(self.text):
                out.append(self.text[self.pos])
                self.pos += 1
            elif ch == '"':
                return "".join(out)
            else:
                out.append(ch)
        return None

    def at_param(self) -> bool:
        """Is the cursor at ``name BWS "=" BWS value`` (and not at a token68 or a new scheme)?"""
        save = self.pos
        try:
            if not self.take(_TCHARS):
                return False
            self.skip(_WS)
            if self.peek() != "=":
                return False
            self.pos += 1
            self.skip(_WS)
            # "name=" followed by end, comma or more "=" is token68 padding, not a parameter.
            return self.peek() not in ("", ",", "=")
        finally:
            self.pos = save


def parse_challenges(headers: Iterable[str]) -> list[Challenge]:
    """All challenges from one or more ``WWW-Authenticate`` header values, in order."""
    out: list[Challenge] = []
    for value in headers:
        out.extend(_parse_one(value))
    return out


def _parse_one(value: str) -> list[Challenge]:
    s = _Scanner(value)
    out: list[Challenge] = []
    while True:
        s.skip(_WS + ",")
        scheme = s.take(_TCHARS)
        if not scheme:
            return out
        params: dict[str, str] = {}
        token68: str | None = None
        s.skip(_WS)
        if s.peek() == ",":  # empty list elements before the first parameter, or the next challenge
            save = s.pos
            s.skip(_WS + ",")
            if not s.at_param():
                s.pos = save
        if s.peek() not in ("", ",") and not s.at_param():
            t68 = s.take(_TOKEN68) + s.take(frozenset("="))
            s.skip(_WS)
            if not t68 or s.peek() not in ("", ","):
                out.append(Challenge(scheme.lower(), params, None))
                return out  # malformed: keep what we have
            token68 = t68
        while s.at_param():
            name = s.take(_TCHARS).lower()
            s.skip(_WS)
            s.pos += 1  # the "="
            s.skip(_WS)
            if s.peek() == '"':
                val = s.quoted()
                if val is None:  # unterminated quoted string
                    out.append(Challenge(scheme.lower(), params, None))
                    return out
            else:
                # A token; be lenient with unquoted URLs (":" is not a tchar).
                val = s.take_until(_WS + ",")
            params.setdefault(name, val)
            s.skip(_WS + ",")  # list separators (and, leniently, none) before the next parameter
        out.append(Challenge(scheme.lower(), params, token68))


def bearer_challenge(headers: Iterable[str]) -> Challenge | None:
    """The first ``Bearer`` challenge, if any."""
    for ch in parse_challenges(headers):
        if ch.scheme == "bearer":
            return ch
    return None
