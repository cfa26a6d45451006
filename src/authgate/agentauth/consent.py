"""Progressive, risk-based consent at the person server (profile decision; issue #6 item 3).

Each scope has a risk level the resource owner sets (``agentauth_scope_risk``: ``"scope"`` or
``"https://resource scope"`` → ``low``/``high``; unlisted scopes get ``agentauth_default_risk``, ``high`` by
default). An agent starts with nothing and grows its scopes by asking:

* every requested scope is low-risk **and** remembered for (person, agent, resource) → granted at once;
* otherwise the person is asked (out of band, or through an interaction), and on approval only the low-risk
  scopes are remembered — a high-risk scope asks again every time, like a card payment that needs confirming.

A call with an amount (a payment) carries it in the resource token (authgate profile claim ``amount``:
``{"value": "12.50", "currency": "EUR"}``, bound into the auth token the same way): an amount above
``agentauth_amount_threshold`` asks every time, whatever the scopes' risk; below it the scopes decide.

The decision and its reason are audited by the caller.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from authgate.agentauth.tokens import parse_amount
from authgate.config import Settings

__all__ = ["HIGH", "LOW", "Decision", "decide", "parse_amount", "risk_of"]

LOW, HIGH = "low", "high"


def risk_of(settings: Settings, resource: str, scope: str) -> str:
    table = settings.agentauth_scope_risk
    level = table.get(f"{resource} {scope}", table.get(scope, settings.agentauth_default_risk))
    return LOW if level == LOW else HIGH


@dataclass(frozen=True)
class Decision:
    grant_now: bool
    #: why: ``remembered_low_risk``, ``high_risk``, ``not_remembered``
    reason: str
    low: tuple[str, ...]
    high: tuple[str, ...]


def decide(settings: Settings, resource: str, scopes: Iterable[str], remembered: set[str],
           amount: tuple[Decimal, str] | None = None) -> Decision:
    ordered = list(dict.fromkeys(scopes))
    low = tuple(s for s in ordered if risk_of(settings, resource, s) == LOW)
    high = tuple(s for s in ordered if s not in low)
    if amount is not None and amount[0] > settings.agentauth_amount_threshold:
        return Decision(False, "amount_over_threshold", low, high)
    if high:
        return Decision(False, "high_risk", low, high)
    if not set(low) <= remembered:
        return Decision(False, "not_remembered", low, high)
    return Decision(True, "remembered_low_risk", low, high)
