"""Agent Auth (Dick Hardt's AAuth, draft-hardt-oauth-aauth-protocol-11): agents that sign every request.

Modules: :mod:`wire` (names), :mod:`tokens` (the four JWTs), :mod:`keys` (our Ed25519 keys), :mod:`discovery`
(issuer metadata and JWKS), :mod:`signing` (request verification glue over :mod:`authgate.crypto.httpsig`),
:mod:`provider` (agent provider), :mod:`person` (person server), :mod:`consent` (risk-based consent),
:mod:`resource` (protecting an API). The Rosenberg/White grant is a different protocol: :mod:`authgate.aauth`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from authgate.context import ServerContext


def routes(ctx: ServerContext) -> list[BaseRoute]:
    """The agent provider and person server routes on our issuer (empty unless ``agentauth_enabled``)."""
    if not ctx.settings.agentauth_enabled:
        return []
    from authgate.agentauth import person, provider
    from authgate.agentauth.server import AgentAuthServer

    srv = AgentAuthServer(ctx)
    return [*provider.routes(srv), *person.routes(srv)]
