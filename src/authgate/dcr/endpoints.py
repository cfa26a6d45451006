"""RFC 7591 registration and RFC 7592 management endpoints (stub: filled in by the DCR work)."""

from __future__ import annotations

from starlette.routing import BaseRoute

from authgate.context import ServerContext


def routes(ctx: ServerContext) -> list[BaseRoute]:
    return []
