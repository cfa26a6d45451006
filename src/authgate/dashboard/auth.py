"""Operator sign-in for the dashboard, kept apart from people's sign-in (authgate.web.session).

- Its own cookie (``authgate_admin``; ``__Secure-`` prefixed with an https issuer) scoped to ``Path=/admin``, and
  its own artefact kind (``admin_session``): an end-user session cookie is never looked up here, and an admin
  session is never accepted by ``/approvals`` or ``/me``. ``SameSite=Strict``: no admin action follows a link
  from another site.
- The admin role lives in the database (``users.is_admin``) and is checked on *every* request, so demoting an
  operator ends their dashboard access at once, not at session expiry.
- Like people's sessions, the cookie holds 256 random bits and the store keeps only its SHA-256; CSRF tokens are
  HMACs derived from the cookie value (``authgate.web.session.csrf_for``) with a purpose of their own.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from authgate.context import ServerContext
from authgate.crypto.hashing import new_token, token_hash
from authgate.store import User
from authgate.web.session import MAX_COOKIE, csrf_for, csrf_ok

ADMIN_SESSION_KIND = "admin_session"
ADMIN_PATH = "/admin"
PRE_SIGNIN_TTL = 1800
_CSRF_PURPOSE = "admin-csrf"
_SIGNIN_PURPOSE = "admin-signin"


def _secure(ctx: ServerContext) -> bool:
    return ctx.issuer.startswith("https://")


def cookie_name(ctx: ServerContext) -> str:
    # ``__Host-`` would demand Path=/; ``__Secure-`` still forbids setting it over plain http.
    return "__Secure-authgate_admin" if _secure(ctx) else "authgate_admin"


def pre_cookie_name(ctx: ServerContext) -> str:
    return "__Secure-authgate_admin_signin" if _secure(ctx) else "authgate_admin_signin"


@dataclass(frozen=True)
class AdminSession:
    token: str
    user: User

    @property
    def csrf(self) -> str:
        return csrf_for(self.token, _CSRF_PURPOSE)

    def csrf_ok(self, given: str | None) -> bool:
        return csrf_ok(self.token, given, _CSRF_PURPOSE)


def _cookie(request: Request, name: str) -> str:
    value = request.cookies.get(name, "")
    return value if 0 < len(value) <= MAX_COOKIE else ""


async def current_admin(ctx: ServerContext, request: Request) -> AdminSession | None:
    """The signed-in operator, or None (no admin cookie, unknown/expired/ended session, or no longer an admin)."""
    token = _cookie(request, cookie_name(ctx))
    if not token:
        return None
    record = await ctx.store.get_artifact(token_hash(token), ADMIN_SESSION_KIND)
    if record is None or not record.usable(ctx.now()):
        return None
    user = await ctx.store.get_user(str(record.payload.get("sub", "")))
    if user is None or not user.is_admin:
        return None
    return AdminSession(token, user)


def _set(ctx: ServerContext, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, path=ADMIN_PATH, httponly=True, samesite="strict",
                        secure=_secure(ctx))


def _delete(ctx: ServerContext, response: Response, name: str) -> None:
    response.delete_cookie(name, path=ADMIN_PATH, httponly=True, samesite="strict", secure=_secure(ctx))


async def start_admin_session(ctx: ServerContext, request: Request, response: Response, user: User) -> None:
    """A fresh session for an operator (the browser's previous one, if any, is ended: no fixation)."""
    old = _cookie(request, cookie_name(ctx))
    if old:
        await ctx.store.revoke_artifact(token_hash(old))
    token = new_token()
    await ctx.store.put_artifact(token_hash(token), ADMIN_SESSION_KIND, {"sub": user.subject},
                                 ctx.settings.dashboard_session_ttl)
    await ctx.store.audit("admin.session_started", subject=user.subject)
    _set(ctx, response, cookie_name(ctx), token, ctx.settings.dashboard_session_ttl)
    _delete(ctx, response, pre_cookie_name(ctx))


async def end_admin_session(ctx: ServerContext, session: AdminSession, response: Response) -> None:
    await ctx.store.revoke_artifact(token_hash(session.token))
    await ctx.store.audit("admin.session_ended", subject=session.user.subject)
    _delete(ctx, response, cookie_name(ctx))


def signin_csrf(ctx: ServerContext, request: Request) -> tuple[str, str | None]:
    """The sign-in form's token and, when the browser has none yet, the pre-sign-in cookie value to set."""
    value = _cookie(request, pre_cookie_name(ctx))
    fresh = None if value else new_token()
    return csrf_for(value or fresh or "", _SIGNIN_PURPOSE), fresh


def set_signin_cookie(ctx: ServerContext, response: Response, value: str) -> None:
    _set(ctx, response, pre_cookie_name(ctx), value, PRE_SIGNIN_TTL)


def signin_csrf_ok(ctx: ServerContext, request: Request, given: str | None) -> bool:
    return csrf_ok(_cookie(request, pre_cookie_name(ctx)), given, _SIGNIN_PURPOSE)
