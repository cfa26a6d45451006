"""``authgate gateway``: a streaming reverse proxy that applies route policies (:mod:`authgate.policy`) in front
of any HTTP API, strips every credential, and forwards the verified identity in ``X-Authgate-*`` headers.

:mod:`.config` (the file and :func:`build_gateway`), :mod:`.proxy` (forwarding), :mod:`.upstream` (its HTTP/1.1
connection pool to the upstream), :mod:`.exchange` (RFC 8693 tokens for an upstream protected by authgate),
:mod:`.serving` (how uvicorn runs it), :mod:`.identity` (the identity headers and :func:`verify_identity`, the
helper upstreams use; stdlib only).
"""

from authgate.gateway.config import GatewayConfig, build_gateway, gateway_config_from_dict, load_gateway_config
from authgate.gateway.identity import IdentityError, identity_headers, verify_identity
from authgate.gateway.proxy import Proxy

__all__ = [
    "GatewayConfig",
    "IdentityError",
    "Proxy",
    "build_gateway",
    "gateway_config_from_dict",
    "identity_headers",
    "load_gateway_config",
    "verify_identity",
]
