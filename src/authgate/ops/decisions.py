"""Access decisions: what a resource-side middleware decided about one request, counted and timed.

Every middleware that lets a request in or turns it away — :class:`~authgate.policy.PolicyMiddleware`, the
x402 paywall, the Agent Auth resource, the bearer middleware — records exactly one decision per request it
governs, as a ``mechanism`` and an ``outcome``:

* ``mechanism``: the way in that decided — ``oauth``, ``aauth``, ``agentauth``, ``x402`` when a credential of
  that kind was presented (and let the request in or failed), ``public`` for a request let in without one,
  ``none`` for a request that presented no credential the route accepts.
* ``outcome``: ``allowed`` (handed to the app), ``challenged`` (a 401/402, or a 403 carrying a challenge such as
  ``insufficient_scope``: the client can act on it by getting, signing or paying), ``denied`` (refused with no
  way in for this request: no route covers it, a malformed path or request, a body too large, a payment
  conflict, a trust refusal) or ``error`` (authgate could not decide: the token keys or the facilitator were
  unreachable, or something raised).

The decision is also left in ``scope["state"]["authgate.decision"]`` so that the access log line can name it,
whether or not metrics are collected. Label values come from these fixed sets only.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from starlette.types import Scope

if TYPE_CHECKING:
    from authgate.ops.metrics import Metrics

#: ``scope["state"]`` key of the ``(mechanism, outcome)`` of the request's decision.
DECISION_KEY = "authgate.decision"
#: ``scope["state"]`` key of the label of the policy route that decided (metrics and access log label).
ROUTE_KEY = "authgate.route"

#: Response headers that make a refusal a challenge the client can answer.
_CHALLENGES = frozenset({"www-authenticate", "payment-required", "aauth-requirement", "signature-error"})


def outcome_of(status: int, headers: Mapping[str, str] | Iterable[str] = ()) -> str:
    """The outcome of a refusal answered with ``status`` and ``headers`` (names are enough)."""
    if status >= 500:
        return "error"
    if status in (401, 402):
        return "challenged"
    if status == 403 and any(name.lower() in _CHALLENGES for name in headers):
        return "challenged"
    return "denied"


class Tally:
    """One request's decision, started when the middleware began judging it."""

    __slots__ = ("_metrics", "_scope", "_started")

    def __init__(self, metrics: Metrics | None, scope: Scope) -> None:
        self._metrics = metrics
        self._scope = scope
        self._started = time.perf_counter()
        scope.setdefault("state", {}).pop(DECISION_KEY, None)

    @property
    def done(self) -> bool:
        """True once a decision was recorded for the request (by this middleware or one it handed it to)."""
        return DECISION_KEY in self._scope.get("state", {})

    def record(self, mechanism: str, outcome: str) -> None:
        self._scope.setdefault("state", {})[DECISION_KEY] = (mechanism, outcome)
        if self._metrics is not None:
            self._metrics.access_decision(mechanism, outcome, time.perf_counter() - self._started)
