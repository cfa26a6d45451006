"""Agent Auth (Dick Hardt's AAuth, draft-hardt-oauth-aauth-protocol-11): agents that sign every request.

Modules: :mod:`wire` (names), :mod:`tokens` (the four JWTs), :mod:`keys` (our Ed25519 keys), :mod:`discovery`
(issuer metadata and JWKS), :mod:`signing` (request verification glue over :mod:`authgate.crypto.httpsig`),
:mod:`provider` (agent provider), :mod:`person` (person server), :mod:`consent` (risk-based consent),
:mod:`resource` (protecting an API). The Rosenberg/White grant is a different protocol: :mod:`authgate.aauth`.
"""
