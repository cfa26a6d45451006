"""(stub)"""

from __future__ import annotations

from starlette.routing import BaseRoute

from authgate.context import ServerContext


def routes(ctx: ServerContext) -> list[BaseRoute]:
    return []
