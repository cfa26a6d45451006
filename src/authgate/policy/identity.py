"""Who a request was let in as: the one record every mechanism produces, whatever the way in.

:class:`Identity` is what the policy middleware puts in ``scope["state"]["authgate.identity"]`` and what the
gateway forwards to its upstream in ``X-Authgate-*`` headers. Imports only the stdlib (and the Agent Auth wire
constants).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from authgate.agentauth.wire import TYP_AGENT

STATE_KEY = "authgate.identity"
#: The identity a *paying* request also proved — a bearer token or an Agent Auth signature the policy checked
#: before handing the request to the paywall. The trust checks (authgate.trust.paywall) key budgets by it and
#: bind mandates and attestations to it; the payment itself is still what lets the request in.
PRESENTED_KEY = "authgate.presented"
THUMBPRINT_URN = "urn:ietf:params:oauth:jwk-thumbprint:sha-256:"
#: The route alternative the request satisfied (:mod:`authgate.policy.model`), beside the identity: the gateway
#: asks for that alternative's scopes when it exchanges the caller's token for an upstream one.
ALTERNATIVE_KEY = "authgate.alternative"


@dataclass(frozen=True)
class Identity:
    """``mechanism``: ``oauth``, ``aauth``, ``agentauth``, ``x402`` or ``public``. ``subject``: the person or
    customer the request acts for (``sub``); ``agent``: the client or agent acting (OAuth ``client_id``, AAuth
    ``act.sub``, the Agent Auth agent id or key thumbprint URN); ``tier``: the AAuth tier reached (``pii`` or
    ``oob``). Payments: the payer's address, the offer paid, and ``transaction`` once settled (known before the
    request is served only for upfront settlement)."""

    mechanism: str
    subject: str | None = None
    agent: str | None = None
    scopes: tuple[str, ...] = ()
    tier: str | None = None
    payer: str | None = None
    network: str | None = None
    amount: str | None = None
    asset: str | None = None
    transaction: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, ())}


def identity_of(scope: Any) -> Identity | None:
    """The identity the policy middleware established for this request (``scope`` or a Starlette request)."""
    state = getattr(scope, "scope", scope).get("state", {})
    found = state.get(STATE_KEY)
    return found if isinstance(found, Identity) else None


def agentauth_identity(typ: str, claims: Mapping[str, Any], jkt: str, scopes: tuple[str, ...] = ()) -> Identity:
    """Who an Agent Auth signed request is: an agent token names the agent (``sub``); a person or auth token
    names the person (``sub``) and the agent only by its key (a JWK thumbprint URN)."""
    if typ == TYP_AGENT:
        return Identity("agentauth", agent=str(claims["sub"]), scopes=scopes)
    return Identity("agentauth", subject=str(claims["sub"]), agent=THUMBPRINT_URN + jkt, scopes=scopes)
