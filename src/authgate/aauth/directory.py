"""The identity directory: each user's identity attributes, kept only as keyed hashes, and the matching rule.

**Blinding.** An attribute is stored as ``HMAC-SHA-256(pepper, name "\\0" normalize(name, value))`` in hex, so
the database holds no raw PII (the contact channels approvals need live in ``users``, not here) and a stolen
database alone cannot be searched by value: that needs the pepper too. The pepper comes from the
``aauth_pepper`` setting when given (keep it in a secret store, out of database backups), else it is generated
on first start and kept in the ``server_secrets`` table, so every process and restart agrees. It is never
logged. Low-entropy attributes (a birthdate, four digits) can be brute-forced by whoever holds database *and*
pepper; the pepper setting is there so those need not sit together.

**Matching** (:meth:`IdentityDirectory.match`). A user matches when at least ``aauth_min_claims`` of the
submitted attributes equal theirs, at least one of those is not in ``aauth_public_claims``, and no submitted
attribute contradicts one they have stored. Exactly one such user is a match; several are ``ambiguous``; none
is ``no_match``; a request that could never match (too few attributes, or only public ones) is
``insufficient`` without touching the database. A value that cannot be normalised counts as a wrong value.

**Uniform work.** Every submitted value is normalised and HMAC'd whether usable or not, the database is asked
the same one query whatever the values, every candidate is compared on every submitted attribute with
:func:`hmac.compare_digest` (against a dummy candidate when there is none), and the outcome is decided only after
all comparisons. The remaining difference, rows returned for a real person, is a few bytes of one query.

**user_index** identifies the claimed person for rate limits and lock-out, even when nothing matched. When one
stored person shares at least ``aauth_min_claims - 1`` attributes with the request, one of them non-public (a
near miss: someone knows all but one attribute and is guessing the last), it is that person's index, so
rotating the other identifiers does not buy fresh attempts; public attributes alone (a name) never reach a
person's index, so they cannot lock anyone out. Otherwise it is the keyed hash of the strongest identifier
submitted: phone number, else e-mail, else name with birthdate, else all submitted attributes together.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from authgate.aauth.normalize import check_name, normalize
from authgate.config import Settings
from authgate.store import AuditEntry, Store

log = logging.getLogger("authgate.aauth")

Outcome = Literal["matched", "no_match", "ambiguous", "insufficient"]

_PEPPER_SECRET = "aauth_pepper"
_PEPPER_CHECK = "aauth_pepper_check"
#: Never the result of normalize(): stands in for a value that cannot be normalised (matches nothing stored).
_UNUSABLE = "\0unusable"
#: Most candidate users considered per match (those sharing the most attributes with the request first).
_MAX_CANDIDATES = 16


@dataclass(frozen=True)
class Match:
    #: The matched user's subject; None unless ``outcome == "matched"``.
    subject: str | None
    outcome: Outcome
    #: Attribute names that matched (only for ``matched``; empty otherwise, so a failure says nothing).
    matched: frozenset[str]
    #: Blinded index of the claimed person for rate limiting and lock-out (see the module docstring).
    user_index: str | None


class IdentityDirectory:
    """Blinded identity attributes per user, and matching of submitted attributes against them."""

    def __init__(self, store: Store, settings: Settings, pepper: str) -> None:
        if len(pepper) < 32:
            raise ValueError("the identity pepper must have at least 32 characters")
        self.store = store
        self.settings = settings
        self._key = pepper.encode()

    def __repr__(self) -> str:
        return "IdentityDirectory()"

    @classmethod
    async def open(cls, store: Store, settings: Settings) -> IdentityDirectory:
        """The directory with its pepper: the ``aauth_pepper`` setting, else the one kept in the store (created
        by whichever process starts first)."""
        pepper = settings.aauth_pepper or await store.server_secret(_PEPPER_SECRET, lambda: secrets.token_hex(32))
        directory = cls(store, settings, pepper)
        check = directory._mac("pepper-check", "")
        if await store.server_secret(_PEPPER_CHECK, lambda: check) != check:
            log.warning("the identity pepper differs from the one stored attributes were blinded with: nobody "
                        "will match until attributes are set again (authgate users import / set-attributes)")
        return directory

    # -- values --------------------------------------------------------------------------------------------

    def normalize(self, name: str, value: str) -> str:
        """:func:`authgate.aauth.normalize.normalize` with this server's country code and date order."""
        return normalize(name, value, default_country_code=self.settings.aauth_default_country_code,
                         date_order=self.settings.aauth_date_order)

    def blind(self, name: str, value: str) -> str:
        """The stored form of one attribute: HMAC-SHA-256(pepper, name "\\0" normalised value), hex.
        ValueError (naming the attribute only) when the value cannot be normalised."""
        return self._mac(name, self.normalize(name, value))

    def _mac(self, name: str, normalized: str) -> str:
        return hmac.new(self._key, f"{name}\0{normalized}".encode(), hashlib.sha256).hexdigest()

    def _index(self, label: str, parts: list[tuple[str, str]]) -> str:
        text = "\0".join(f"{n}={v}" for n, v in parts)
        return hmac.new(self._key, f"user_index\0{label}\0{text}".encode(), hashlib.sha256).hexdigest()

    # -- users ---------------------------------------------------------------------------------------------

    async def set_attributes(self, subject: str, attributes: Mapping[str, str]) -> None:
        """Replace the user's attributes with ``attributes`` (name -> raw value); only HMACs are stored.
        ValueError (naming the attribute, never the value) for a bad name or value, or an unknown user."""
        blinds = {check_name(name): self.blind(name, value) for name, value in attributes.items()}
        if await self.store.get_user(subject) is None:
            raise ValueError("no such user")
        await self.store.replace_identity_attributes(
            subject, blinds, AuditEntry("user.attributes_set", subject=subject, detail={"names": sorted(blinds)}))

    async def attribute_names(self, subject: str) -> list[str]:
        return sorted(await self.store.identity_attributes(subject))

    # -- matching ------------------------------------------------------------------------------------------

    async def match(self, claims: Mapping[str, str]) -> Match:
        """Match flat attributes (see :func:`authgate.aauth.normalize.flatten_claims`) against the directory.

        ValueError only for a malformed request (a bad attribute name, too many attributes); a value that does
        not normalise is a wrong value. Callers check ``abuse.locked(user_index)`` before trusting ``matched``
        and report the outcome with ``failure``/``success``."""
        s = self.settings
        if len(claims) > s.aauth_max_claims:
            raise ValueError(f"more than {s.aauth_max_claims} attributes")
        normalized: dict[str, str] = {}
        submitted: dict[str, str] = {}
        for name, value in claims.items():
            check_name(name)
            try:
                normalized[name] = self.normalize(name, value)
            except ValueError:
                normalized[name] = _UNUSABLE
            submitted[name] = self._mac(name, normalized[name])
        fallback_index = self._identifier_index(normalized)
        public = set(s.aauth_public_claims)
        if len(submitted) < s.aauth_min_claims or not set(submitted) - public:
            return Match(None, "insufficient", frozenset(), fallback_index)

        near_miss = max(1, s.aauth_min_claims - 1)
        candidates = await self.store.identity_candidates(
            list(submitted.values()), list(submitted), at_least=near_miss, limit=_MAX_CANDIDATES)
        if not candidates:
            candidates = {"": {}}  # nobody: compare as often as for a real candidate, against nothing
        qualifying: list[tuple[str, frozenset[str]]] = []
        near: list[tuple[int, str]] = []
        for subject, stored in candidates.items():
            matched: set[str] = set()
            contradicted = False
            for name, blind in submitted.items():
                held = stored.get(name)
                equal = hmac.compare_digest(held if held is not None else _NEVER, blind)
                if equal:
                    matched.add(name)
                elif held is not None:
                    contradicted = True
            if subject and len(matched) >= near_miss and matched - public:
                near.append((len(matched), subject))
            if subject and not contradicted and len(matched) >= s.aauth_min_claims and matched - public:
                qualifying.append((subject, frozenset(matched)))

        near.sort(reverse=True)
        index = fallback_index
        if near and (len(near) == 1 or near[0][0] > near[1][0]):
            index = self._index("subject", [("sub", near[0][1])])
        if len(qualifying) == 1:
            subject, matched_names = qualifying[0]
            return Match(subject, "matched", matched_names, self._index("subject", [("sub", subject)]))
        if len(qualifying) > 1:
            return Match(None, "ambiguous", frozenset(), index)
        return Match(None, "no_match", frozenset(), index)

    def _identifier_index(self, normalized: Mapping[str, str]) -> str | None:
        """The blinded index of the strongest identifier submitted (usable values only, when any)."""
        usable = {n: v for n, v in normalized.items() if v != _UNUSABLE}
        for name in ("phone_number", "email"):
            if name in usable:
                return self._index(name, [(name, usable[name])])
        person = ("family_name", "given_name", "birthdate")
        if all(n in usable for n in person):
            return self._index("person", [(n, usable[n]) for n in person])
        pool = usable or normalized
        if not pool:
            return None
        return self._index("all", sorted(pool.items()))


#: Compared against when a candidate has no value for a submitted attribute, so the comparison still happens.
_NEVER = "0" * 64
