"""x402 extensions authgate speaks on both sides (paywall and paying agent): ``payment-identifier``
(idempotent retries, never charged twice) and ``sign-in-with-x`` (a payer re-accesses a resource it paid for)."""
