"""The ``Signature-Key`` header (draft-hardt-httpbis-signature-key-08): parse the selected member, build members.

The header is an SF Dictionary keyed by signature label; each member is a scheme Token with parameters, e.g.
``sig=jwt;jwt="eyJ…"``. Only the member whose label the signature uses is looked at; unknown schemes on it are
the verifier's ``unsupported_scheme``. The builders here return the *member value* (``jwt;jwt="…"``): the signer
prefixes the label, so one builder serves any label.

Schemes: ``jwt`` (agents, required by Agent Auth), ``jwks_uri`` (servers signing as themselves: ``id``, ``dwk``,
``kid``), ``hwk`` (inline public key; ``alg`` required by -08), ``jkt-jwt`` (agent-provider refresh).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from authgate.crypto import sfv

JWT, JWKS_URI, HWK, JKT_JWT = "jwt", "jwks_uri", "hwk", "jkt-jwt"
_HWK_MEMBERS = ("kty", "crv", "x", "y", "n", "e", "alg")


class SignatureKeyError(ValueError):
    """The Signature-Key header is malformed or has no member for the label."""


@dataclass(frozen=True)
class SignatureKey:
    """The selected ``Signature-Key`` member: its label, scheme and parameters, and the whole raw header."""

    label: str
    scheme: str
    params: Mapping[str, Any]
    raw: str = field(repr=False)

    def param(self, name: str) -> str | None:
        """A String/Token parameter, or None when absent or of another type."""
        value = self.params.get(name)
        return value if isinstance(value, str) else None

    @property
    def jwt(self) -> str | None:
        """The JWT of the ``jwt`` / ``jkt-jwt`` schemes."""
        return self.param("jwt")

    def hwk_jwk(self) -> dict[str, str]:
        """The inline public JWK of the ``hwk`` scheme (string members only)."""
        return {k: v for k in _HWK_MEMBERS if (v := self.param(k)) is not None}


def parse_signature_key(header: str, label: str | None = None) -> SignatureKey:
    """Parse ``header`` and return the member for ``label`` (the first member when ``label`` is None)."""
    try:
        members = sfv.parse_dictionary(header)
    except sfv.SFVError as exc:
        raise SignatureKeyError(f"malformed Signature-Key: {exc}") from exc
    if not members:
        raise SignatureKeyError("empty Signature-Key")
    if label is None:
        label = next(iter(members))
    member = members.get(label)
    if member is None:
        raise SignatureKeyError(f"Signature-Key has no member {label!r}")
    scheme, params = member
    if not isinstance(scheme, sfv.Token):
        raise SignatureKeyError("Signature-Key member must be a scheme token")
    return SignatureKey(label=label, scheme=str(scheme), params=params, raw=header.strip(" \t"))


def labels(header: str) -> list[str]:
    """The labels a Signature-Key header carries, in order."""
    try:
        return list(sfv.parse_dictionary(header))
    except sfv.SFVError as exc:
        raise SignatureKeyError(f"malformed Signature-Key: {exc}") from exc


def _member(scheme: str, params: Mapping[str, sfv.BareItem]) -> str:
    return sfv.serialize_bare_item(sfv.Token(scheme)) + sfv.serialize_params(params)


def jwt_scheme(token: str) -> str:
    """``jwt;jwt="<token>"``: the agent presents an agent, person or auth token whose ``cnf.jwk`` is its key."""
    return _member(JWT, {"jwt": token})


def jkt_jwt_scheme(token: str) -> str:
    """``jkt-jwt;jwt="<token>"``: the agent-provider refresh pattern (enclave key vouches for an ephemeral key)."""
    return _member(JKT_JWT, {"jwt": token})


def jwks_uri_scheme(id: str, dwk: str, kid: str) -> str:
    """``jwks_uri;id="…";dwk="…";kid="…"``: a server signing as itself (key from ``{id}/.well-known/{dwk}``)."""
    return _member(JWKS_URI, {"id": id, "dwk": dwk, "kid": kid})


def hwk_scheme(jwk: Mapping[str, str]) -> str:
    """``hwk;kty=…;crv=…;x=…;alg=…``: an inline public key (pseudonymous); ``alg`` is required by -08."""
    if "alg" not in jwk:
        raise SignatureKeyError("hwk requires alg")
    return _member(HWK, {k: jwk[k] for k in _HWK_MEMBERS if k in jwk})
