"""Discovery of the Agent Authorization Grant, authgate profile (spec note §6.8, §6.11).

* Authorization server metadata (RFC 8414): the grant URN in ``grant_types_supported`` (added by
  :mod:`authgate.oauth.metadata`) and the profile's members built here: the accepted claim names, the minimum
  number of matching claims, the draft revision (setting ``aauth_draft``), the channels and capture methods.
* Resource server scope descriptions (``/.well-known/aauth.json``, draft text): served by the resource side
  (:class:`authgate.resource.metadata.ProtectedResource` ``scope_descriptions``), which shares only the wire
  names of :mod:`authgate.aauth.wire`; :func:`scope_descriptions_document` is the one layout both sides use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from authgate.aauth import wire
from authgate.aauth.normalize import KNOWN_ATTRIBUTES
from authgate.config import Settings


def user_claims_supported() -> list[str]:
    """Claim names ``user_claims`` may carry, as OIDC names them (``postal_code`` sits in ``address``)."""
    return ["address.postal_code" if name == "postal_code" else name for name in KNOWN_ATTRIBUTES]


def server_metadata_members(settings: Settings) -> dict[str, Any]:
    """The profile's RFC 8414 members (besides ``grant_types_supported``)."""
    return {
        wire.META_USER_CLAIMS_SUPPORTED: user_claims_supported(),
        wire.META_MIN_CLAIMS: settings.aauth_min_claims,
        wire.META_DRAFT: settings.aauth_draft,
        wire.META_CHANNELS_SUPPORTED: list(wire.CHANNELS),
        wire.META_CAPTURE_METHODS_SUPPORTED: list(wire.CAPTURE_METHODS),
    }


def scope_descriptions_document(descriptions: Mapping[str, str]) -> dict[str, Any]:
    """``{"scope_descriptions": [{"scope": …, "description": …}, …]}`` in the given order."""
    return {wire.SCOPE_DESCRIPTIONS: [{"scope": s, "description": d} for s, d in descriptions.items()]}
