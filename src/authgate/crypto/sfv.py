"""A narrow RFC 8941 Structured Field Values parser and serialiser: just what the signature headers need.

RFC 9421 (``Signature-Input``, ``Signature``), RFC 9530 (``Content-Digest``) and
draft-hardt-httpbis-signature-key (``Signature-Key``, ``Signature-Error``, ``Accept-Signature-*``) are all SF
Dictionaries or Lists. They sit on every signed request, so parsing is index-based and leans on ``str.find`` and
compiled regular expressions instead of walking long values (a JWT in ``Signature-Key``) character by character.

Values map to Python as: Integer/Decimal → ``int``/``float``, String → ``str``, Token → :class:`Token` (a ``str``
subclass), Byte Sequence → ``bytes``, Boolean → ``bool``; an Inner List is a ``list`` of ``(value, params)``.

One leniency, opt-in per call (``lenient_bytes=True``): a Byte Sequence written in unpadded base64url (what the
PyPI ``aauth-signing`` package emits for ``Signature``) parses as :class:`Base64UrlBytes`, so the caller can
record that the non-standard form arrived. Mixed alphabets are never accepted.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping

MAX_FIELD = 16384  # longest structured field we parse (a Signature-Key carrying a JWT fits easily)


class Token(str):
    """An RFC 8941 Token (unquoted), kept apart from String so serialisation round-trips."""

    __slots__ = ()


class Base64UrlBytes(bytes):
    """Byte Sequence that arrived as base64url (or unpadded): accepted leniently, and marked as such."""

    __slots__ = ()


BareItem = int | float | str | bytes | bool
Params = dict[str, BareItem]
InnerList = list[tuple[BareItem, Params]]
Member = tuple[BareItem | InnerList, Params]


class SFVError(ValueError):
    """The field is not a valid structured field (of the kind asked for)."""


_KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_TOKEN = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*")
_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_B64URL = re.compile(r"[A-Za-z0-9_\-]*={0,2}")


class _Parser:
    __slots__ = ("i", "lenient", "n", "s")

    def __init__(self, s: str, lenient: bool) -> None:
        if len(s) > MAX_FIELD:
            raise SFVError("field too long")
        if not s.isascii():
            raise SFVError("non-ASCII field")
        self.s = s.strip(" \t")
        self.i = 0
        self.n = len(self.s)
        self.lenient = lenient

    def _sp(self) -> None:
        s, i, n = self.s, self.i, self.n
        while i < n and s[i] == " ":
            i += 1
        self.i = i

    def _ows(self) -> None:
        s, i, n = self.s, self.i, self.n
        while i < n and s[i] in " \t":
            i += 1
        self.i = i

    def key(self) -> str:
        m = _KEY.match(self.s, self.i)
        if not m:
            raise SFVError(f"expected a key at {self.i}")
        self.i = m.end()
        return m.group()

    def bare_item(self) -> BareItem:
        s, i = self.s, self.i
        if i >= self.n:
            raise SFVError("unexpected end of field")
        c = s[i]
        if c == '"':
            return self.string()
        if c == ":":
            return self.byte_sequence()
        if c == "?":
            if s.startswith("?1", i):
                self.i = i + 2
                return True
            if s.startswith("?0", i):
                self.i = i + 2
                return False
            raise SFVError("bad boolean")
        if c == "-" or c.isdigit():
            m = _NUMBER.match(s, i)
            if not m:
                raise SFVError("bad number")
            text = m.group()
            self.i = m.end()
            if "." in text:
                whole, frac = text.lstrip("-").split(".")
                if len(whole) > 12 or len(frac) > 3:
                    raise SFVError("decimal out of range")
                return float(text)
            if len(text.lstrip("-")) > 15:
                raise SFVError("integer out of range")
            return int(text)
        m = _TOKEN.match(s, i)
        if not m:
            raise SFVError(f"unexpected character at {i}")
        self.i = m.end()
        return Token(m.group())

    def string(self) -> str:
        start = self.i + 1
        end = self.s.find('"', start)
        if end < 0:
            raise SFVError("unterminated string")
        seg = self.s[start:end]
        if "\\" not in seg:
            if not seg.isprintable():
                raise SFVError("control character in string")
            self.i = end + 1
            return seg
        out: list[str] = []
        i, s, n = start, self.s, self.n
        while i < n:
            c = s[i]
            if c == "\\":
                if i + 1 >= n or s[i + 1] not in '"\\':
                    raise SFVError("bad escape in string")
                out.append(s[i + 1])
                i += 2
            elif c == '"':
                self.i = i + 1
                return "".join(out)
            elif " " <= c <= "~":
                out.append(c)
                i += 1
            else:
                raise SFVError("control character in string")
        raise SFVError("unterminated string")

    def byte_sequence(self) -> bytes:
        start = self.i + 1
        end = self.s.find(":", start)
        if end < 0:
            raise SFVError("unterminated byte sequence")
        seg = self.s[start:end]
        self.i = end + 1
        return decode_byte_sequence(seg, self.lenient)

    def params(self) -> Params:
        out: Params = {}
        s = self.s
        while self.i < self.n and s[self.i] == ";":
            self.i += 1
            self._sp()
            k = self.key()
            if self.i < self.n and s[self.i] == "=":
                self.i += 1
                out[k] = self.bare_item()
            else:
                out[k] = True
        return out

    def inner_list(self) -> InnerList:
        self.i += 1  # "("
        items: InnerList = []
        s = self.s
        while self.i < self.n:
            self._sp()
            if self.i < self.n and s[self.i] == ")":
                self.i += 1
                return items
            item = self.bare_item()
            items.append((item, self.params()))
            if self.i < self.n and s[self.i] not in " )":
                raise SFVError("inner list items must be separated by spaces")
        raise SFVError("unterminated inner list")

    def member_value(self) -> Member:
        if self.i < self.n and self.s[self.i] == "(":
            inner = self.inner_list()
            return inner, self.params()
        item = self.bare_item()
        return item, self.params()

    def dictionary(self) -> dict[str, Member]:
        out: dict[str, Member] = {}
        s = self.s
        while self.i < self.n:
            k = self.key()
            if self.i < self.n and s[self.i] == "=":
                self.i += 1
                out[k] = self.member_value()
            else:
                out[k] = (True, self.params())
            self._ows()
            if self.i >= self.n:
                return out
            if s[self.i] != ",":
                raise SFVError(f"expected ',' at {self.i}")
            self.i += 1
            self._ows()
            if self.i >= self.n:
                raise SFVError("trailing comma")
        return out

    def list_(self) -> list[Member]:
        out: list[Member] = []
        s = self.s
        while self.i < self.n:
            out.append(self.member_value())
            self._ows()
            if self.i >= self.n:
                return out
            if s[self.i] != ",":
                raise SFVError(f"expected ',' at {self.i}")
            self.i += 1
            self._ows()
            if self.i >= self.n:
                raise SFVError("trailing comma")
        return out


def decode_byte_sequence(seg: str, lenient: bool = False) -> bytes:
    """Decode the text between the colons of a Byte Sequence; :class:`Base64UrlBytes` for the lenient forms."""
    if _B64.fullmatch(seg):
        try:
            raw = base64.b64decode(seg + "=" * (-len(seg) % 4), validate=True)
        except binascii.Error as exc:
            raise SFVError("bad base64") from exc
        if not lenient or len(seg) % 4 == 0:
            return raw
        return Base64UrlBytes(raw)  # unpadded: RFC 8941 tolerates it, but we record it
    if lenient and _B64URL.fullmatch(seg):
        bare = seg.rstrip("=")
        try:
            return Base64UrlBytes(base64.urlsafe_b64decode(bare + "=" * (-len(bare) % 4)))
        except binascii.Error as exc:
            raise SFVError("bad base64url") from exc
    raise SFVError("byte sequence is not base64")


def parse_dictionary(field: str, *, lenient_bytes: bool = False) -> dict[str, Member]:
    """Parse an SF Dictionary; a repeated key keeps its last value (RFC 8941 §4.2.2)."""
    return _Parser(field, lenient_bytes).dictionary()


def parse_list(field: str) -> list[Member]:
    return _Parser(field, False).list_()


# -- serialisation ---------------------------------------------------------------------------------------


def serialize_bare_item(value: BareItem) -> str:
    if isinstance(value, bool):
        return "?1" if value else "?0"
    if isinstance(value, int):
        if abs(value) >= 10**15:
            raise SFVError("integer out of range")
        return str(value)
    if isinstance(value, float):
        text = f"{value:.3f}".rstrip("0")
        return text + "0" if text.endswith(".") else text
    if isinstance(value, bytes):
        return ":" + base64.b64encode(value).decode("ascii") + ":"
    if isinstance(value, Token):
        if not _TOKEN.fullmatch(value):
            raise SFVError("not a token")
        return str(value)
    if not (value.isascii() and value.isprintable()):
        raise SFVError("string must be printable ASCII")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def serialize_params(params: Mapping[str, BareItem]) -> str:
    out = []
    for k, v in params.items():
        if not _KEY.fullmatch(k):
            raise SFVError("bad key")
        out.append(f";{k}" if v is True else f";{k}={serialize_bare_item(v)}")
    return "".join(out)


def serialize_inner_list(items: Iterable[tuple[BareItem, Mapping[str, BareItem]]],
                         params: Mapping[str, BareItem]) -> str:
    inner = " ".join(serialize_bare_item(v) + serialize_params(p) for v, p in items)
    return f"({inner}){serialize_params(params)}"


def serialize_member(value: BareItem | InnerList, params: Mapping[str, BareItem]) -> str:
    if isinstance(value, list):
        return serialize_inner_list(value, params)
    return serialize_bare_item(value) + serialize_params(params)


def serialize_dictionary(members: Mapping[str, tuple[BareItem | InnerList, Mapping[str, BareItem]]]) -> str:
    out = []
    for k, (v, p) in members.items():
        if not _KEY.fullmatch(k):
            raise SFVError("bad key")
        out.append(f"{k}{serialize_params(p)}" if v is True else f"{k}={serialize_member(v, p)}")
    return ", ".join(out)


def serialize_token_list(tokens: Iterable[str]) -> str:
    return ", ".join(serialize_bare_item(Token(t)) for t in tokens)
