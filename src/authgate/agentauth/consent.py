"""Progressive, risk-based consent at the person server (profile decision; issue #6 item 3).

Each scope has a risk level, ``low`` or ``high``, from two places:

* the person server's operator (``agentauth_scope_risk``: ``"scope"`` or ``"https://resource scope"`` →
  ``low``/``high``; unlisted scopes get ``agentauth_default_risk``, ``high`` by default);
* the resource owner (authgate profile: ``AgentAuthResource(scope_risk=...)``, published in the resource
  metadata and carried in the signed resource token as the ``scope_risk`` claim).

The higher of the two counts: a resource can raise, never lower, what the operator set. A level the claim names
that we do not know counts as high (asking is the safe side); the claim is read only from the verified resource
token, never from the agent's request or the metadata document. An agent starts with nothing and grows its
scopes by asking:

* every requested scope is low-risk **and** remembered for (person, agent, resource) → granted at once;
* otherwise the person is asked (out of band, or through an interaction), and on approval only the low-risk
  scopes are remembered — a high-risk scope asks again every time, like a card payment that needs confirming.

A call with an amount (a payment) carries it in the resource token (authgate profile claim ``amount``:
``{"value": "12.50", "currency": "EUR"}``, bound into the auth token the same way): an amount above
``agentauth_amount_threshold`` asks every time, whatever the scopes' risk; below it the scopes decide.

The decision, its reason and where each scope's level came from (:attr:`Decision.sources`) are audited by the
caller.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from authgate.agentauth import wire
from authgate.agentauth.tokens import parse_amount
from authgate.config import Settings

__all__ = ["DEFAULT", "HIGH", "LOW", "PERSON_SERVER", "RESOURCE", "Decision", "combine", "decide", "operator_risk",
           "parse_amount", "risk_of"]

LOW, HIGH = wire.RISK_LOW, wire.RISK_HIGH
#: Where a scope's level came from: the operator's ``agentauth_scope_risk``, its ``agentauth_default_risk``, or
#: the resource's signed ``scope_risk`` claim (only when it raised the level).
PERSON_SERVER, DEFAULT, RESOURCE = "person_server", "default", "resource"


def operator_risk(settings: Settings, resource: str, scope: str) -> tuple[str, str]:
    """The person server operator's level for ``scope`` at ``resource`` and its source."""
    table = settings.agentauth_scope_risk
    for key in (f"{resource} {scope}", scope):
        if key in table:
            return (LOW if table[key] == LOW else HIGH), PERSON_SERVER
    return (LOW if settings.agentauth_default_risk == LOW else HIGH), DEFAULT


def combine(operator: tuple[str, str], declared: str | None) -> tuple[str, str]:
    """The higher of the operator's level and the resource's declared one (None: the resource declared none).
    ``low`` never lowers anything; ``high`` or a level we do not know raises a low scope to high."""
    level, source = operator
    if declared is not None and level == LOW and declared != LOW:
        return HIGH, RESOURCE
    return level, source


def risk_of(settings: Settings, resource: str, scope: str, declared: str | None = None) -> str:
    return combine(operator_risk(settings, resource, scope), declared)[0]


@dataclass(frozen=True)
class Decision:
    grant_now: bool
    #: why: ``remembered_low_risk``, ``high_risk``, ``not_remembered``, ``amount_over_threshold``
    reason: str
    low: tuple[str, ...]
    high: tuple[str, ...]
    #: scope → where its level came from (:data:`PERSON_SERVER`, :data:`DEFAULT`, :data:`RESOURCE`)
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def raised(self) -> tuple[str, ...]:
        """The scopes the resource's declaration made high-risk."""
        return tuple(s for s in self.high if self.sources.get(s) == RESOURCE)


def decide(settings: Settings, resource: str, scopes: Iterable[str], remembered: set[str],
           amount: tuple[Decimal, str] | None = None, declared: Mapping[str, str] | None = None) -> Decision:
    """``declared``: the resource's levels from its verified resource token (``scope_risk`` claim)."""
    ordered = list(dict.fromkeys(scopes))
    declared = declared or {}
    assessed = {s: combine(operator_risk(settings, resource, s), declared.get(s)) for s in ordered}
    sources = {s: source for s, (_, source) in assessed.items()}
    low = tuple(s for s in ordered if assessed[s][0] == LOW)
    high = tuple(s for s in ordered if s not in low)
    if amount is not None and amount[0] > settings.agentauth_amount_threshold:
        return Decision(False, "amount_over_threshold", low, high, sources)
    if high:
        return Decision(False, "high_risk", low, high, sources)
    if not set(low) <= remembered:
        return Decision(False, "not_remembered", low, high, sources)
    return Decision(True, "remembered_low_risk", low, high, sources)
