"""Prometheus metrics of one server process.

Each server context owns its own registry (not prometheus_client's global one) so that several apps in one
process — tests, the demo — never share or double-register counters. Label values come from fixed sets (route
templates, grant types, mechanism names), never from request data, so cardinality stays bounded whatever
clients send.
"""

from __future__ import annotations

from functools import cached_property

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

#: Mechanisms an agent can come in by (``none``: no credential presented) and what was decided
#: (:mod:`authgate.ops.decisions`); ``access_decision`` refuses anything else so labels stay bounded.
MECHANISMS = frozenset({"oauth", "aauth", "agentauth", "x402", "public", "none"})
OUTCOMES = frozenset({"allowed", "challenged", "denied", "error"})

_DECISION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                     5.0, 10.0)
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_HUMAN_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """The counters and histograms authgate exports at ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter("authgate_http_requests", "HTTP requests by route template and status.",
                                     ["route", "method", "status"], registry=r)
        self.http_latency = Histogram("authgate_http_request_duration_seconds",
                                      "Time from request start to the last response byte.",
                                      ["route", "method"], buckets=_LATENCY_BUCKETS, registry=r)
        self.access = Counter("authgate_access_decisions", "Access decisions by mechanism and outcome.",
                              ["mechanism", "outcome"], registry=r)
        self.decision_latency = Histogram(
            "authgate_access_decision_seconds", "Time to decide a request (verify a token, check a signature, verify "
            "or settle upfront a payment), by the mechanism that decided.", ["mechanism"],
            buckets=_DECISION_BUCKETS, registry=r)
        self.tokens = Counter("authgate_tokens_issued", "Access tokens issued, by grant type.",
                              ["grant_type"], registry=r)
        self.token_errors = Counter("authgate_token_errors", "Token requests refused, by OAuth error code.",
                                    ["error"], registry=r)
        self.settlements = Counter("authgate_x402_settlements", "x402 settlements by network and outcome.",
                                   ["network", "outcome"], registry=r)
        self.paywall_settlements = Counter(
            "authgate_paywall_settlements", "Settlements a paywall or the gateway asked its facilitator for, by "
            "network and outcome (settled, a failure reason, or skipped: the answer was 400 or more, nothing charged).",
            ["network", "outcome"], registry=r)
        self.config_reloads = Counter("authgate_gateway_config_reloads", "Gateway configuration reloads: applied, or "
                                      "rejected (the previous configuration stayed).", ["outcome"], registry=r)
        self.approval_latency = Histogram("authgate_approval_decision_seconds",
                                          "Time a person took to decide an approval request.",
                                          ["status"], buckets=_HUMAN_BUCKETS, registry=r)

    @cached_property
    def config_reload_ok(self) -> Gauge:
        """1 while the gateway serves the configuration last asked for, 0 after a rejected reload (registered by
        the gateway, so a server without one does not export it)."""
        return Gauge("authgate_gateway_config_last_reload_successful",
                     "1 if the last gateway configuration load or reload succeeded, else 0.", registry=self.registry)

    def access_decision(self, mechanism: str, outcome: str, seconds: float | None = None) -> None:
        if mechanism not in MECHANISMS or outcome not in OUTCOMES:
            raise ValueError(f"unknown access decision label {mechanism!r}/{outcome!r}")
        self.access.labels(mechanism, outcome).inc()
        if seconds is not None:
            self.decision_latency.labels(mechanism).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
