"""The operator's dashboard (``/admin``) and a person's own page (``/me``): docs/dashboard.md."""

from __future__ import annotations

from starlette.routing import BaseRoute

from authgate.context import ServerContext


def routes(ctx: ServerContext) -> list[BaseRoute]:
    """Every dashboard route, or none when ``dashboard_enabled`` is off."""
    if not ctx.settings.dashboard_enabled:
        return []
    from authgate.dashboard import me, views

    return [*views.routes(ctx), *me.routes(ctx)]
