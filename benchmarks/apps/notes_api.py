"""The API in benchmarks/protected_route.py: one small JSON route, served bare or behind AuthGateMiddleware.

``uvicorn --factory benchmarks.apps.notes_api:create`` with BENCH_PROTECT=1 (or 0), BENCH_ISSUER, BENCH_API.
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp

NOTES = [{"id": 1, "text": "first note"}, {"id": 2, "text": "second note"}]


async def list_notes(request: Request) -> JSONResponse:
    return JSONResponse({"notes": NOTES})


def create() -> ASGIApp:
    api = Starlette(routes=[Route("/notes", list_notes, methods=["GET"])])
    if os.environ.get("BENCH_PROTECT") != "1":
        return api
    from authgate.resource import AuthGateMiddleware, JWTVerifier, ProtectedResource, protect

    issuer, audience = os.environ["BENCH_ISSUER"], os.environ["BENCH_API"]
    resource = ProtectedResource(resource=audience, authorization_servers=[issuer], scopes_supported=["read"])
    return AuthGateMiddleware(api, JWTVerifier(issuer, audience=audience), resource,
                              rules=[protect("/notes", "read")])
