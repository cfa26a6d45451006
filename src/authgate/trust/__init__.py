"""Trust and control (issue #8): budgets, mandates, attestations and the kill switch.

- ``wire``: every wire name (headers, JWT types, claims, error codes) of the authgate trust profiles.
- ``store.TrustStore``: the database API (budgets, spending counters, mandates, kill list) — the dashboard's.
- ``budgets.BudgetGuard``, ``mandates.MandateVerifier``/``issue``, ``attestations.check_attestations``,
  ``killswitch.KillSwitch``: the checks, each raising ``errors.TrustError`` with a stable code.

See docs/trust.md.
"""
