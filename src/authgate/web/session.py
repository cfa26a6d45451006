"""Sign-in sessions for people (the approval inbox, the consent page) and CSRF tokens for their forms.

Design: the cookie carries an opaque 256-bit random value; the server keeps a session record as an artefact
(kind ``web_session``) whose id is the SHA-256 of that value, like every other secret we hand out.

- *Why not a signed cookie?* A value with 256 bits of entropy that is only ever looked up by its hash cannot
  be forged, so an HMAC over it would add nothing but a key to generate, store, share between processes and
  rotate. A self-contained signed cookie (subject + expiry + nonce) would still need a server-side record to
  revoke it on sign-out, so it saves no database read either.
- *Restarts and many processes*: the record lives in the store (SQLite or PostgreSQL), not in memory, so a
  session survives a restart and is valid on every process sharing the database.
- *Sign-out* revokes the record at once (``revoke_artifact``); a stolen cookie is useless afterwards. Expiry
  is absolute (``SESSION_TTL``), and expired records are purged with the other artefacts.
- *Fixation*: a new value is minted at every sign-in; the old session, if any, is revoked.
- *Cookie*: ``HttpOnly``, ``SameSite=Lax``, ``Path=/``; with an ``https`` issuer also ``Secure`` and the
  ``__Host-`` name prefix (no ``Domain``, so sibling hosts cannot set or read it).
- *CSRF*: every state-changing form carries ``csrf = HMAC-SHA256(key=session value, "csrf")``. It is derived,
  so nothing more is stored; it changes with each session; an attacker who cannot read the cookie cannot
  compute it. It is compared in constant time. The sign-in form itself (no session yet) is protected the same
  way with a short-lived pre-sign-in cookie (double submit), which stops login CSRF.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from authgate.context import ServerContext
from authgate.crypto.hashing import DUMMY_PASSWORD_HASH, new_token, token_hash, verify_password
from authgate.store import User

SESSION_KIND = "web_session"
SESSION_TTL = 8 * 3600
PRE_SIGNIN_TTL = 1800
MAX_COOKIE = 128
DEFAULT_NEXT = "/approvals"
_NEXT_OK = re.compile(r"^/(?![/\\])[A-Za-z0-9\-._~!$&'()*+,;=:@/%?]*$")


def _secure(ctx: ServerContext) -> bool:
    return ctx.issuer.startswith("https://")


def cookie_name(ctx: ServerContext) -> str:
    return "__Host-authgate_session" if _secure(ctx) else "authgate_session"


def pre_cookie_name(ctx: ServerContext) -> str:
    return "__Host-authgate_signin" if _secure(ctx) else "authgate_signin"


def csrf_for(secret: str, purpose: str = "csrf") -> str:
    """The form token derived from a cookie value; empty for an empty secret (never matches)."""
    if not secret:
        return ""
    mac = hmac.new(secret.encode(), purpose.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def csrf_ok(secret: str, given: str | None, purpose: str = "csrf") -> bool:
    expected = csrf_for(secret, purpose)
    return bool(expected) and hmac.compare_digest(expected.encode(), (given or "").encode("utf-8", "replace"))


@dataclass(frozen=True)
class Session:
    token: str
    user: User

    @property
    def csrf(self) -> str:
        return csrf_for(self.token)

    def csrf_ok(self, given: str | None) -> bool:
        return csrf_ok(self.token, given)


def _cookie_value(request: Request, name: str) -> str:
    value = request.cookies.get(name, "")
    return value if 0 < len(value) <= MAX_COOKIE else ""


async def current(ctx: ServerContext, request: Request) -> Session | None:
    """The signed-in person, or None (no cookie, unknown, expired, signed out, or the user was removed)."""
    token = _cookie_value(request, cookie_name(ctx))
    if not token:
        return None
    record = await ctx.store.get_artifact(token_hash(token), SESSION_KIND)
    if record is None or not record.usable(ctx.now()):
        return None
    user = await ctx.store.get_user(str(record.payload.get("sub", "")))
    return Session(token, user) if user is not None else None


async def check_password(ctx: ServerContext, username: str, password: str) -> User | None:
    """The user if the password is right; the same scrypt work is done for unknown users."""
    user = await ctx.store.get_user_by_name(username) if username else None
    ok = verify_password(password, user.password_hash if user else DUMMY_PASSWORD_HASH)
    return user if user is not None and ok else None


async def sign_in(ctx: ServerContext, request: Request, response: Response, user: User) -> Session:
    """Start a fresh session for ``user`` (revoking the browser's previous one) and set its cookie."""
    old = _cookie_value(request, cookie_name(ctx))
    if old:
        await ctx.store.revoke_artifact(token_hash(old))
    token = new_token()
    await ctx.store.put_artifact(token_hash(token), SESSION_KIND, {"sub": user.subject}, SESSION_TTL)
    await ctx.store.audit("session.started", subject=user.subject)
    response.set_cookie(cookie_name(ctx), token, max_age=SESSION_TTL, path="/", httponly=True, samesite="lax",
                        secure=_secure(ctx))
    response.delete_cookie(pre_cookie_name(ctx), path="/", httponly=True, samesite="lax", secure=_secure(ctx))
    return Session(token, user)


async def sign_out(ctx: ServerContext, session: Session, response: Response) -> None:
    await ctx.store.revoke_artifact(token_hash(session.token))
    await ctx.store.audit("session.ended", subject=session.user.subject)
    response.delete_cookie(cookie_name(ctx), path="/", httponly=True, samesite="lax", secure=_secure(ctx))


def pre_signin_token(ctx: ServerContext, request: Request) -> tuple[str, str | None]:
    """The CSRF token for a sign-in form, and the pre-sign-in cookie value to set (None: the browser has one)."""
    value = _cookie_value(request, pre_cookie_name(ctx))
    fresh = None if value else new_token()
    return csrf_for(value or fresh or "", "signin"), fresh


def set_pre_signin_cookie(ctx: ServerContext, response: Response, value: str) -> None:
    response.set_cookie(pre_cookie_name(ctx), value, max_age=PRE_SIGNIN_TTL, path="/", httponly=True,
                        samesite="lax", secure=_secure(ctx))


def pre_signin_ok(ctx: ServerContext, request: Request, given: str | None) -> bool:
    return csrf_ok(_cookie_value(request, pre_cookie_name(ctx)), given, "signin")


def safe_next(value: str | None) -> str:
    """A same-site relative path to go to after sign-in; anything else (absolute or scheme-relative URLs,
    backslashes, control characters, over-long values) becomes the inbox."""
    if not value or len(value) > 512 or not _NEXT_OK.match(value):
        return DEFAULT_NEXT
    return value


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"
