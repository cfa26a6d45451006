"""The authorization endpoint: authorization code with PKCE (OAuth 2.1 §4.1, RFC 7636), RFC 8707 resource
indicators and RFC 9207 ``iss`` in every response.

Order matters (RFC 9700 §4.11.2): the client and its redirect URI are checked first, and if either is wrong
the user sees an error page and is never redirected. Only once the redirect URI is known to belong to the
client do errors travel back to it, each carrying ``state`` and ``iss``.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from authgate.config import is_loopback_host
from authgate.context import ServerContext
from authgate.crypto.hashing import new_token, token_hash, verify_token_hash
from authgate.errors import (
    AccessDenied,
    InvalidRequest,
    OAuthError,
    TooManyRequests,
    UnauthorizedClient,
    UnsupportedResponseType,
)
from authgate.httputil import query_params, read_form
from authgate.oauth.clients import Client
from authgate.oauth.policy import check_resource, grant_scopes
from authgate.oauth.tokens import new_grant_id
from authgate.web import PAGE_HEADERS, render
from authgate.web.session import Session, check_password, client_ip, current, sign_in

AUTHORIZATION_CODE = "authorization_code"
PENDING_REQUEST = "authz_request"
PENDING_TTL = 600
COOKIE = "authgate_authz"
CONSENT_KIND = "oauth_consent"
_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")


class LoginRequired(OAuthError):
    error = "login_required"


@dataclass(frozen=True)
class AuthorizationRequest:
    client: Client
    redirect_uri: str
    redirect_uri_given: bool
    state: str | None
    scopes: tuple[str, ...]
    audience: str
    code_challenge: str


class _PageError(Exception):
    """An error shown to the user instead of redirecting (unknown client or redirect URI)."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


class _RedirectError(Exception):
    def __init__(self, redirect_uri: str, state: str | None, error: OAuthError) -> None:
        super().__init__(error.error)
        self.redirect_uri = redirect_uri
        self.state = state
        self.error = error


def _append_query(uri: str, params: dict[str, str]) -> str:
    return uri + ("&" if urlsplit(uri).query else "?") + urlencode(params)


async def _validate(ctx: ServerContext, params: dict[str, str]) -> AuthorizationRequest:
    client_id = params.get("client_id")
    if not client_id:
        raise _PageError("invalid_request", "The request has no client_id.")
    client = await ctx.clients.get(client_id)
    if client is None:
        raise _PageError("invalid_client", "The application is not registered with this server.")
    given = params.get("redirect_uri")
    if given is None:
        if len(client.redirect_uris) != 1:
            raise _PageError("invalid_request", "The request must name its redirect_uri.")
        redirect_uri = client.redirect_uris[0]
    elif client.matches_redirect_uri(given):
        redirect_uri = given
    else:
        raise _PageError("invalid_request", "The redirect_uri is not registered for this application.")
    state = params.get("state")
    if state is not None and len(state) > 1024:
        raise _RedirectError(redirect_uri, None, InvalidRequest("state too long"))

    def fail(error: OAuthError) -> _RedirectError:
        return _RedirectError(redirect_uri, state, error)

    if params.get("response_type") != "code":
        raise fail(UnsupportedResponseType("only response_type=code is supported"))
    if AUTHORIZATION_CODE not in client.grant_types:
        raise fail(UnauthorizedClient("client may not use the authorization code grant"))
    if "request" in params or "request_uri" in params:
        raise fail(InvalidRequest("request objects are not supported"))
    challenge = params.get("code_challenge")
    if not challenge:
        raise fail(InvalidRequest("code_challenge is required (PKCE)"))
    if params.get("code_challenge_method") != "S256":
        raise fail(InvalidRequest("code_challenge_method must be S256"))
    if not _CHALLENGE.match(challenge):
        raise fail(InvalidRequest("code_challenge must be a base64url SHA-256 digest"))
    try:
        scopes = grant_scopes(ctx, client, params.get("scope"))
        audience = check_resource(ctx, params.get("resource"))
    except OAuthError as exc:
        raise fail(exc) from exc
    return AuthorizationRequest(client, redirect_uri, given is not None, state, scopes, audience, challenge)


async def _issue_code(ctx: ServerContext, req: AuthorizationRequest, subject: str) -> Response:
    code = new_token()
    now = ctx.now()
    await ctx.store.put_artifact(
        token_hash(code), AUTHORIZATION_CODE,
        {
            "redirect_uri": req.redirect_uri,
            "redirect_uri_given": req.redirect_uri_given,
            "code_challenge": req.code_challenge,
            "scopes": list(req.scopes),
            "aud": req.audience,
            "sub": subject,
            "auth_time": now,
        },
        ctx.settings.code_ttl, client_id=req.client.client_id, grant_id=new_grant_id(),
    )
    await ctx.store.audit("authorization.granted", client_id=req.client.client_id, subject=subject,
                          scope=" ".join(req.scopes), aud=req.audience)
    params = {"code": code, "iss": ctx.issuer}
    if req.state is not None:
        params["state"] = req.state
    return RedirectResponse(_append_query(req.redirect_uri, params), status_code=303,
                            headers={"Cache-Control": "no-store"})


def _error_redirect(ctx: ServerContext, exc: _RedirectError) -> Response:
    params = exc.error.body()
    if exc.state is not None:
        params["state"] = exc.state
    params["iss"] = ctx.issuer
    return RedirectResponse(_append_query(exc.redirect_uri, params), status_code=303,
                            headers={"Cache-Control": "no-store"})


def _page_error(exc: _PageError) -> Response:
    return render("error.html", status_code=400, error=exc.error, description=exc.description)


def _consent_page(ctx: ServerContext, req: AuthorizationRequest, request_id: str, session: Session | None,
                  error: str = "", status_code: int = 200) -> Response:
    client = req.client
    redirect = urlsplit(req.redirect_uri)
    redirect_host = redirect.netloc or req.redirect_uri  # with the port: 127.0.0.1:3030 is not 127.0.0.1:8080
    # The form POSTs here and is answered with a 303 to the client; browsers apply form-action to that
    # redirect too, so the client's redirect origin (or private-use scheme) must be allowed.
    target = f"{redirect.scheme}://{redirect.netloc}" if redirect.netloc else f"{redirect.scheme}:"
    csp = PAGE_HEADERS["Content-Security-Policy"].replace("form-action 'self'", f"form-action 'self' {target}")
    return render(
        "authorize.html",
        status_code=status_code,
        headers={"Content-Security-Policy": csp},
        client_name=client.name,
        client_id=client.client_id,
        client_host=urlsplit(client.client_id).hostname if client.source == "metadata_document" else "",
        scopes=req.scopes,
        resource=req.audience,
        redirect_host=redirect_host,
        loopback_redirect=is_loopback_host(redirect.hostname or ""),
        request_id=request_id,
        action=f"{ctx.issuer}/authorize",
        error=error,
        user=session.user if session else None,
        csrf=session.csrf if session else "",
    )


def _pending_payload(req: AuthorizationRequest, cookie_hash: str) -> dict[str, Any]:
    return {
        "client_id": req.client.client_id,
        "redirect_uri": req.redirect_uri,
        "redirect_uri_given": req.redirect_uri_given,
        "state": req.state,
        "scopes": list(req.scopes),
        "aud": req.audience,
        "code_challenge": req.code_challenge,
        "cookie": cookie_hash,
    }


async def _record_consent(ctx: ServerContext, req: AuthorizationRequest, subject: str | None, approve: bool
                          ) -> None:
    """Record the decision as an ``oauth_consent`` approval request (created and decided at once), so consent
    sits in the same audit trail as every other approval. A deny from someone not signed in has no subject;
    the browser holding the bound request may always refuse it, recorded as decided by ``anonymous``."""
    created = await ctx.approvals.create(
        kind=CONSENT_KIND, subject=subject, client_id=req.client.client_id,
        details={"scopes": list(req.scopes), "resource": req.audience, "redirect_uri": req.redirect_uri},
        ttl=60, notify=False)
    await ctx.approvals.decide(created.id, approve, by=subject or "anonymous", channel="web",
                               is_admin=subject is None)


def _forbidden() -> Response:
    return render("error.html", status_code=403, error="invalid_request",
                  description="This form is out of date or was not sent from this site. Nothing was changed; "
                              "start again from the application.")


def routes(ctx: ServerContext) -> list[BaseRoute]:
    login_limiter = ctx.login_limiter

    async def start(request: Request, params: dict[str, str]) -> Response:
        try:
            req = await _validate(ctx, params)
        except _PageError as exc:
            return _page_error(exc)
        except _RedirectError as exc:
            return _error_redirect(ctx, exc)
        if ctx.settings.auto_approve:
            ctx.log.warning("auto-approving authorization for client %s (development mode)", req.client.client_id)
            return await _issue_code(ctx, req, ctx.settings.auto_approve_subject)
        if params.get("prompt") == "none":
            return _error_redirect(ctx, _RedirectError(req.redirect_uri, req.state,
                                                       LoginRequired("the user must sign in")))
        request_id = secrets.token_urlsafe(24)
        cookie = new_token()
        await ctx.store.put_artifact(token_hash(request_id), PENDING_REQUEST, _pending_payload(req, token_hash(cookie)),
                                     PENDING_TTL, client_id=req.client.client_id)
        response = _consent_page(ctx, req, request_id, await current(ctx, request))
        response.set_cookie(COOKIE, cookie, max_age=PENDING_TTL, path="/authorize", httponly=True, samesite="lax",
                            secure=ctx.issuer.startswith("https://"))
        return response

    async def authorize_get(request: Request) -> Response:
        try:
            params = query_params(request)
        except OAuthError as exc:
            return render("error.html", status_code=400, error=exc.error, description=exc.description)
        return await start(request, params)

    async def authorize_post(request: Request) -> Response:
        try:
            form = await read_form(request)
        except OAuthError as exc:
            return render("error.html", status_code=exc.status_code, error=exc.error, description=exc.description)
        if "request_id" not in form:
            return await start(request, form)  # an authorization request sent as a form POST
        return await decide(request, form)

    async def decide(request: Request, form: dict[str, str]) -> Response:
        pending_id = token_hash(form["request_id"])
        pending = await ctx.store.get_artifact(pending_id, PENDING_REQUEST)
        if pending is None or not pending.usable(ctx.now()):
            return render("error.html", status_code=400, error="invalid_request",
                          description="This authorization request has expired or was already answered. "
                                      "Start again from the application.")
        p = pending.payload
        if not verify_token_hash(request.cookies.get(COOKIE, ""), p["cookie"]):
            return render("error.html", status_code=400, error="invalid_request",
                          description="This form was not opened in this browser.")
        client = await ctx.clients.get(str(p["client_id"]))
        if client is None:
            return render("error.html", status_code=400, error="invalid_client",
                          description="The application is no longer registered.")
        req = AuthorizationRequest(client, p["redirect_uri"], p["redirect_uri_given"], p["state"],
                                   tuple(p["scopes"]), p["aud"], p["code_challenge"])
        session = await current(ctx, request)
        with_password = "username" in form or "password" in form
        if session is not None and not with_password and not session.csrf_ok(form.get("csrf")):
            return _forbidden()
        if form.get("decision") != "approve":
            if (await ctx.store.consume_artifact(pending_id, PENDING_REQUEST))[1]:
                await ctx.store.audit("authorization.denied", client_id=client.client_id)
                await _record_consent(ctx, req, session.user.subject if session and not with_password else None,
                                      False)
            return _error_redirect(ctx, _RedirectError(req.redirect_uri, req.state,
                                                       AccessDenied("the user denied the request")))
        user = session.user if session is not None and not with_password else None
        if user is None:
            username = form.get("username", "")[:255]
            if await login_limiter.hit(f"{username}\x00{client_ip(request)}") is not None:
                return render("error.html", status_code=429, error="too_many_attempts",
                              description="Too many sign-in attempts. Wait a minute and try again.")
            user = await check_password(ctx, username, form.get("password", ""))
            if user is None:
                await ctx.store.audit("login.failed", client_id=client.client_id)
                return _consent_page(ctx, req, form["request_id"], None, error="Wrong username or password.",
                                     status_code=401)
        _, fresh = await ctx.store.consume_artifact(pending_id, PENDING_REQUEST)
        if not fresh:
            return render("error.html", status_code=400, error="invalid_request",
                          description="This authorization request was already answered.")
        await _record_consent(ctx, req, user.subject, True)
        response = await _issue_code(ctx, req, user.subject)
        response.delete_cookie(COOKIE, path="/authorize")
        if with_password:
            await sign_in(ctx, request, response, user)
        return response

    async def endpoint(request: Request) -> Response:
        try:
            if request.method == "GET":
                return await authorize_get(request)
            return await authorize_post(request)
        except TooManyRequests as exc:
            return render("error.html", status_code=429, error=exc.error, description=exc.description)
        except Exception:
            ctx.log.exception("unhandled error at the authorization endpoint")
            return render("error.html", status_code=500, error="server_error",
                          description="Something went wrong on our side.")

    return [Route("/authorize", endpoint, methods=["GET", "POST"])]
