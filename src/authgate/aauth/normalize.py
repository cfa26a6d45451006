"""Canonical forms of the identity attributes an agent collects in conversation.

Two spellings of the same fact must blind to the same value, and nothing else should. Every value goes through
Unicode NFKC (full-width digits and letters become ASCII, ligatures split) and case folding, then a rule per
attribute:

=================  ==================================================================================
``given_name``,    letters only: spaces, hyphens, apostrophes and other punctuation removed; diacritics
``family_name``    folded (``José`` = ``jose``), since speech-to-text and keyboards disagree about them.
``birthdate``      ``YYYY-MM-DD``. Accepts ISO with ``-``/``/``/``.``/nothing, ``DD.MM.YYYY``, ``D Month
                   YYYY``, ``Month D, YYYY``, ``D-Mon-YYYY``; ``A/B/YYYY`` and ``A-B-YYYY`` only when the
                   order is unambiguous or configured (``date_order`` ``mdy``/``dmy``). Two-digit years refused.
``phone_number``   E.164 (``+14155550100``). Spaces, dashes, dots, slashes, parentheses and a ``(0)`` trunk
                   marker are removed; ``00`` is read as ``+``; a national number (leading trunk ``0``, or a
                   NANP ``1``) only with a configured default country code. Extensions are refused.
``email``          whitespace removed, whole address case-folded, IDN domain in its ``xn--`` form, trailing
                   dot of the domain dropped. The local part is case-folded too (no real mailbox provider
                   treats it as case-sensitive, and people say addresses aloud without case) but otherwise
                   kept as is: dots and ``+tags`` are provider-specific, so removing them would merge
                   distinct mailboxes.
``postal_code``    letters and digits only (``SW1A 1AA`` = ``sw1a1aa``); a US ZIP+4 written with its
                   separator (``94107-1234``) keeps its first five digits.
``acct_last4``     exactly four digits.
tenant keys        any other name matching ``^[a-z][a-z0-9_]{0,31}$``: NFKC, case fold, whitespace,
                   punctuation and control characters removed.
=================  ==================================================================================

Every error is a :class:`ValueError` whose message names the attribute, never the value, so it can be logged or
returned without leaking what the caller submitted.
"""

from __future__ import annotations

import datetime
import re
import unicodedata
from collections.abc import Mapping

#: Attribute names with their own rule; OIDC claim names where OIDC has one.
KNOWN_ATTRIBUTES = ("given_name", "family_name", "birthdate", "phone_number", "email", "postal_code", "acct_last4")
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
#: Longest raw value accepted (before NFKC, which may expand a string) and longest canonical value.
MAX_RAW_LENGTH = 256
MAX_NORMALIZED_LENGTH = 128
#: Most attributes one ``user_claims`` object may carry (flattened).
MAX_CLAIMS = 16

_MONTHS = {
    name: i + 1
    for i, names in enumerate(
        [("january", "jan"), ("february", "feb"), ("march", "mar"), ("april", "apr"), ("may",), ("june", "jun"),
         ("july", "jul"), ("august", "aug"), ("september", "sep", "sept"), ("october", "oct"),
         ("november", "nov"), ("december", "dec")]
    )
    for name in names
}


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ValueError("attribute names are 1-32 characters of a-z, 0-9 and _, starting with a letter")
    return name


def normalize(name: str, value: str, *, default_country_code: str = "", date_order: str = "") -> str:
    """The canonical form of ``value`` for attribute ``name``; ValueError (naming only the attribute) when the
    value cannot be one. ``default_country_code`` (digits, e.g. ``"1"`` or ``"44"``) lets national phone numbers
    through; ``date_order`` (``"mdy"`` or ``"dmy"``) settles ``A/B/YYYY`` dates both of whose parts could be
    the month."""
    check_name(name)
    if not isinstance(value, str):
        raise ValueError(f"{name}: must be a string")
    if len(value) > MAX_RAW_LENGTH:
        raise ValueError(f"{name}: too long")
    text = unicodedata.normalize("NFKC", value).casefold().strip()
    text = _ascii_digits(text)
    if name in ("given_name", "family_name"):
        out = _person_name(name, text)
    elif name == "birthdate":
        out = _date(name, text, date_order)
    elif name == "phone_number":
        out = _phone(name, text, default_country_code)
    elif name == "email":
        out = _email(name, text)
    elif name == "postal_code":
        out = _postal_code(name, text)
    elif name == "acct_last4":
        out = _drop(text, "PZC")
        if not re.fullmatch(r"[0-9]{4}", out):
            raise ValueError(f"{name}: must be exactly four digits")
    else:
        out = _drop(text, "PZC")
    if not out:
        raise ValueError(f"{name}: empty")
    if len(out) > MAX_NORMALIZED_LENGTH:
        raise ValueError(f"{name}: too long")
    return out


def flatten_claims(user_claims: object, *, max_claims: int = MAX_CLAIMS) -> dict[str, str]:
    """Turn the OIDC-shaped ``user_claims`` object into flat attribute names.

    ``{"given_name": "Ana", "address": {"postal_code": "94107"}}`` → ``{"given_name": "Ana", "postal_code":
    "94107"}``. Refused (ValueError naming keys, never values): anything but a JSON object of strings; nesting
    other than ``address`` holding only ``postal_code``; names outside ``^[a-z][a-z0-9_]{0,31}$``; a name given
    twice; more than ``max_claims`` attributes; values longer than :data:`MAX_RAW_LENGTH`.
    Values are not normalised here (see :func:`normalize`)."""
    if not isinstance(user_claims, Mapping):
        raise ValueError("user_claims must be a JSON object")
    if len(user_claims) > max_claims:
        raise ValueError(f"user_claims has more than {max_claims} attributes")
    flat: dict[str, str] = {}
    for key, value in user_claims.items():
        if key == "address":
            if not isinstance(value, Mapping) or not value:
                raise ValueError("user_claims.address must be a non-empty JSON object")
            extra = [k for k in value if k != "postal_code"]
            if extra:
                raise ValueError("user_claims.address may only carry postal_code")
            key, value = "postal_code", value["postal_code"]
            if key in user_claims:
                raise ValueError("user_claims gives postal_code twice")
        elif not isinstance(key, str) or not NAME_PATTERN.fullmatch(key):
            raise ValueError("user_claims names are 1-32 characters of a-z, 0-9 and _, starting with a letter")
        if not isinstance(value, str):
            raise ValueError(f"user_claims.{key} must be a string")
        if len(value) > MAX_RAW_LENGTH:
            raise ValueError(f"user_claims.{key} is too long")
        flat[key] = value
    if len(flat) > max_claims:
        raise ValueError(f"user_claims has more than {max_claims} attributes")
    return flat


# -- rules -------------------------------------------------------------------------------------------------


def _ascii_digits(text: str) -> str:
    """Decimal digits of any script (Arabic-Indic, Devanagari, …; NFKC already mapped full-width) to ASCII."""
    if text.isascii():
        return text
    return "".join(str(unicodedata.digit(c)) if unicodedata.category(c) == "Nd" else c for c in text)


def _drop(text: str, categories: str) -> str:
    """``text`` without the characters whose Unicode general category starts with one of ``categories``."""
    return "".join(c for c in text if unicodedata.category(c)[0] not in categories)


def _person_name(name: str, text: str) -> str:
    folded = unicodedata.normalize("NFKD", text)
    folded = "".join(c for c in folded if not unicodedata.combining(c))
    folded = unicodedata.normalize("NFKC", folded).casefold()
    # ß casefolds to ss, ø/ł/đ have no decomposition: map the common ones so "Łukasz" = "Lukasz".
    folded = folded.translate(_LETTER_FOLD)
    out = _drop(folded, "PZCS")
    if out and not out.isalpha():
        raise ValueError(f"{name}: must consist of letters")
    return out


_LETTER_FOLD = str.maketrans({"ø": "o", "ł": "l", "đ": "d", "ð": "d", "þ": "th", "æ": "ae", "œ": "oe",
                              "\u0131": "i"})  # dotless i


def _date(name: str, text: str, date_order: str) -> str:
    text = re.sub(r"\s+", " ", text.replace(",", " ")).strip()
    day = month = year = None
    m = re.fullmatch(r"(\d{4})([-/.]?)(\d{1,2})\2(\d{1,2})", text)
    if m and (m.group(2) or len(text) == 8):
        year, month, day = int(m.group(1)), int(m.group(3)), int(m.group(4))
    elif m := re.fullmatch(r"(\d{1,2})\.(\d{1,2})\.(\d{4})", text):
        day, month, year = int(m.group(1)), int(m.group(2)), int(m.group(3))
    elif m := re.fullmatch(r"(\d{1,2})([/-])(\d{1,2})\2(\d{4})", text):
        a, b, year = int(m.group(1)), int(m.group(3)), int(m.group(4))
        if a > 12 or (date_order == "dmy" and b <= 12) or a == b:
            day, month = a, b
        elif b > 12 or date_order == "mdy":
            month, day = a, b
        else:
            raise ValueError(f"{name}: ambiguous day and month; use YYYY-MM-DD")
    elif m := re.fullmatch(r"(\d{1,2})(?:st|nd|rd|th)?[ -]([a-z]+)\.?[ -](\d{4})", text):
        day, month, year = int(m.group(1)), _MONTHS.get(m.group(2)), int(m.group(3))
    elif m := re.fullmatch(r"([a-z]+)\.? (\d{1,2})(?:st|nd|rd|th)? (\d{4})", text):
        month, day, year = _MONTHS.get(m.group(1)), int(m.group(2)), int(m.group(3))
    if day is None or month is None or year is None:
        raise ValueError(f"{name}: not a recognised date; use YYYY-MM-DD")
    if not 1800 <= year <= 2200:
        raise ValueError(f"{name}: year out of range")
    try:
        return datetime.date(year, month, day).isoformat()
    except ValueError:
        raise ValueError(f"{name}: no such date") from None


def _phone(name: str, text: str, default_country_code: str) -> str:
    text = text.replace("(0)", "") if text.startswith(("+", "00")) else text
    compact = re.sub(r"[\s\-./()\u2010-\u2015]", "", text)
    if compact.startswith("+"):
        digits = compact[1:]
    elif compact.startswith("00"):
        digits = compact[2:]
    else:
        if not compact.isdigit():
            raise ValueError(f"{name}: must be a phone number in E.164 form (+14155550100)")
        country = default_country_code.lstrip("+")
        if not country:
            raise ValueError(f"{name}: must be in international form (+ and country code)")
        national = compact
        # Drop the trunk prefix: NANP "1" before ten digits, elsewhere a leading "0".
        if (country == "1" and len(national) == 11 and national.startswith("1")) or national.startswith("0"):
            national = national[1:]
        digits = country + national
    if not re.fullmatch(r"[1-9][0-9]{6,14}", digits):
        raise ValueError(f"{name}: must be a phone number in E.164 form (+14155550100)")
    return "+" + digits


def _email(name: str, text: str) -> str:
    text = re.sub(r"\s+", "", text)
    local, sep, domain = text.rpartition("@")
    domain = domain.rstrip(".")
    if not sep or not local or not domain or "@" in local or len(local) > 64:
        raise ValueError(f"{name}: not an e-mail address")
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError(f"{name}: not an e-mail address") from None
    if (len(domain) > 253 or "." not in domain
            or not re.fullmatch(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+",
                                domain)
            or any(unicodedata.category(c)[0] in "ZC" for c in local)):
        raise ValueError(f"{name}: not an e-mail address")
    return f"{local}@{domain}"


def _postal_code(name: str, text: str) -> str:
    if m := re.fullmatch(r"(\d{5})[\s-]+\d{4}", text):
        return m.group(1)
    out = _drop(text, "PZCS")
    if not out.isalnum() or not 2 <= len(out) <= 10:
        raise ValueError(f"{name}: not a postal code")
    return out
