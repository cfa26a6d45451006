"""Starlette and FastAPI integration: a scope-checking dependency and the metadata route.

FastAPI is not imported; a FastAPI app is a Starlette app and FastAPI renders Starlette's
``HTTPException`` with its headers, so the same objects serve both::

    app = FastAPI()
    install(app, verifier, resource)

    @app.get("/notes")
    async def notes(claims: AccessClaims = Depends(RequireScopes("notes:read"))) -> list[str]: ...

Behind :class:`~authgate.resource.middleware.AuthGateMiddleware` the dependency reuses the claims the
middleware verified and only checks scopes; on its own it verifies the token itself.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from authgate.errors import OAuthError
from authgate.resource.bearer import BearerGuard
from authgate.resource.metadata import ProtectedResource, check_scopes
from authgate.resource.middleware import GUARD_STATE_KEY, STATE_KEY, MetadataEndpoint, token_in_query
from authgate.resource.verifier import AccessClaims, TokenVerifier

APP_STATE_KEY = "authgate_guard"


class BearerHTTPException(HTTPException):
    """An RFC 6750 refusal raised from a dependency; ``install`` renders it as ``{"error": …}`` JSON."""

    def __init__(self, error: OAuthError) -> None:
        status, headers, _ = error.render()
        headers.pop("Content-Type", None)
        super().__init__(status_code=status, detail=error.error, headers=headers)
        self.oauth_error = error


def _guard_for(request: Request, explicit: BearerGuard | None) -> BearerGuard:
    if explicit is not None:
        return explicit
    guard = request.scope.get("state", {}).get(GUARD_STATE_KEY) or getattr(request.app.state, APP_STATE_KEY, None)
    if not isinstance(guard, BearerGuard):
        raise RuntimeError("RequireScopes needs a guard: pass guard=, call install(app, ...), or add the middleware")
    return guard


class RequireScopes:
    """``Depends(RequireScopes("a", "b"))``: the request's :class:`AccessClaims`, holding every listed scope."""

    def __init__(self, *scopes: str, guard: BearerGuard | None = None) -> None:
        self.scopes = check_scopes(scopes)
        self.guard = guard

    async def __call__(self, request: Request) -> AccessClaims:
        guard = _guard_for(request, self.guard)
        try:
            claims = request.scope.get("state", {}).get(STATE_KEY)
            if isinstance(claims, AccessClaims):
                guard.check_scopes(claims, self.scopes)
                return claims
            claims = await guard.authenticate(
                request.headers.getlist("authorization"), self.scopes, token_in_query=token_in_query(request.scope)
            )
        except OAuthError as exc:
            raise BearerHTTPException(exc) from exc
        request.scope.setdefault("state", {})[STATE_KEY] = claims
        return claims


def metadata_route(resource: ProtectedResource) -> Route:
    """A route serving the RFC 9728 document at its path-inserted well-known location."""
    return Route(resource.metadata_path, MetadataEndpoint(resource), methods=["GET", "HEAD", "OPTIONS"])


async def _render(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, BearerHTTPException)
    status, headers, body = exc.oauth_error.render()
    return Response(body, status_code=status, headers=headers)


def install(app: Starlette, verifier: TokenVerifier, resource: ProtectedResource) -> BearerGuard:
    """Make ``RequireScopes`` work in ``app``: the guard in ``app.state``, the metadata route, JSON errors."""
    guard = BearerGuard(verifier, resource)
    setattr(app.state, APP_STATE_KEY, guard)
    app.router.routes.append(metadata_route(resource))
    app.add_exception_handler(BearerHTTPException, _render)
    return guard


def claims_of(request: Any) -> AccessClaims | None:
    """The verified claims of a request (Starlette ``Request`` or raw ASGI scope), if any."""
    scope = request.scope if hasattr(request, "scope") else request
    claims = scope.get("state", {}).get(STATE_KEY)
    return claims if isinstance(claims, AccessClaims) else None
