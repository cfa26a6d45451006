"""Route policies: one declarative model of who may call each route — OAuth scopes, an AAuth tier, Agent Auth,
an x402 price, or public — any of which lets a request in (issue #7).

:mod:`.model` (the dataclasses and their checks), :mod:`.loader` (TOML, errors naming file, route and field),
:mod:`.enforce` (the pure ASGI middleware and the combined challenge), :mod:`.identity` (who got in). The
Starlette/FastAPI integration and ``authgate gateway`` share this one model.
"""

from authgate.policy.enforce import PolicyMiddleware
from authgate.policy.identity import Identity, identity_of
from authgate.policy.loader import load_policy, policy_from_dict
from authgate.policy.model import X402, AAuth, AgentAuth, Attestation, OAuth, Policy, PolicyError, Public, Route

__all__ = [
    "X402",
    "AAuth",
    "AgentAuth",
    "Attestation",
    "Identity",
    "OAuth",
    "Policy",
    "PolicyError",
    "PolicyMiddleware",
    "Public",
    "Route",
    "identity_of",
    "load_policy",
    "policy_from_dict",
]
