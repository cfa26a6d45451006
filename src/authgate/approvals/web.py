"""The person's side of approvals on the web: sign-in, the inbox, one request's page and its decision, and
the two ways a waiting party learns the outcome (``/status`` JSON and ``/events`` server-sent events).

Pages are server-rendered, work without JavaScript, and carry ``web.PAGE_HEADERS``. Every state-changing form
has a CSRF token (see ``authgate.web.session``); a missing or wrong one is a 403 and changes nothing.

Who may see what:
- pages and decisions: the person the request is for, or an admin (``users.is_admin``); anyone else gets the
  same 404 as for an unknown id, so ids cannot be probed;
- ``/status`` and ``/events``: additionally the client that asked (HTTP Basic client authentication, as at
  ``/introspect``; public clients cannot prove who they are and are refused).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from authgate.approvals.service import (
    AlreadyDecided,
    ApprovalError,
    ApprovalRequest,
    Expired,
    NotAllowed,
    NotFound,
)
from authgate.context import ServerContext
from authgate.errors import InvalidClient, OAuthError
from authgate.httputil import error_response, json_response, read_form
from authgate.oauth.client_auth import authenticate_client
from authgate.web import render
from authgate.web.session import (
    Session,
    check_password,
    client_ip,
    current,
    pre_signin_ok,
    pre_signin_token,
    safe_next,
    set_pre_signin_cookie,
    sign_in,
    sign_out,
)

#: Server-sent events: how often the store is polled, how often a comment keeps proxies from timing out, and
#: the longest a stream stays open (the client reconnects, or polls ``/status``).
EVENTS_POLL = 0.5
EVENTS_HEARTBEAT = 15.0
EVENTS_MAX_SECONDS = 300.0

KIND_TITLES = {
    "oauth_consent": "Allow an application access",
    "ciba": "Sign-in request from an application",
    "scope_escalation": "An agent asks for more access",
    "aauth_escalation": "An agent you are talking to asks for more access",
    "payment": "An agent asks to pay",
}
STATUS_TEXT = {
    "pending": "Waiting for your decision",
    "approved": "Approved",
    "denied": "Denied",
    "expired": "Expired — it can no longer be decided",
}
_SHOWN_KEYS = ("scopes", "scope", "resource", "aud", "amount", "currency")


def _when(ts: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


def _message(heading: str, text: str, status_code: int, session: Session | None = None, link: str = "/approvals",
             link_text: str = "Back to all requests") -> Response:
    return render("message.html", status_code=status_code, heading=heading, text=text, link=link,
                  link_text=link_text, user=session.user if session else None, csrf=session.csrf if session else "")


def _forbidden(session: Session | None = None) -> Response:
    return _message("This form has expired", "The form was not sent from this site or is out of date, so "
                    "nothing was changed. Go back, reload the page and try again.", 403, session)


def _not_found(session: Session | None) -> Response:
    return _message("No such request", "There is no request with this link for you.", 404, session)


def _signin_redirect(path: str) -> Response:
    return RedirectResponse(f"/signin?next={quote(safe_next(path), safe='/')}", status_code=303,
                            headers={"Cache-Control": "no-store"})


def _may_see(request: ApprovalRequest, session: Session) -> bool:
    if session.user.is_admin:
        return True
    return request.subject is not None and hmac.compare_digest(request.subject, session.user.subject)


async def _client_name(ctx: ServerContext, client_id: str | None) -> str:
    if not client_id:
        return "an unnamed application"
    client = await ctx.clients.get(client_id)
    return client.name if client is not None else client_id


async def _person(ctx: ServerContext, subject: str | None) -> str:
    if subject is None:
        return "nobody in particular"
    user = await ctx.store.get_user(subject)
    return user.username if user is not None else subject


_DETAIL_LABELS = {
    "elevated_scopes": "Needs your approval for",
    "channel": "The agent is talking to you by",
    "conversation_id": "Conversation",
    "client_name": "Application",
    "caller_id_mismatch": "Caller check",
    "binding_message": "Code",
}
_CHANNEL_TEXT = {"pstn": "phone call", "sms": "text message"}


def _detail_line(key: str, value: Any) -> tuple[str, str]:
    """A request detail as a person reads it; unknown keys fall back to their name and JSON value."""
    label = _DETAIL_LABELS.get(key, key.replace("_", " "))
    if key == "caller_id_mismatch":
        text = ("WARNING: the call did not come from the phone number on your account" if value
                else "the call came from the phone number on your account")
    elif key == "channel" and isinstance(value, str):
        text = _CHANNEL_TEXT.get(value, value)
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        text = " ".join(value)
    else:
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return label, text


def _detail_view(details: dict[str, Any]) -> dict[str, Any]:
    scopes = details.get("scopes", details.get("scope"))
    if isinstance(scopes, str):
        scopes = scopes.split()
    scopes = [str(s) for s in scopes] if isinstance(scopes, list) else []
    resource = details.get("resource", details.get("aud"))
    amount = details.get("amount")
    amount_text = f"{amount} {details.get('currency', '')}".strip() if amount is not None else ""
    extra = [_detail_line(str(k), v) for k, v in sorted(details.items()) if k not in _SHOWN_KEYS][:20]
    return {"scopes": scopes, "resource": str(resource) if resource else "", "amount": amount_text, "extra": extra}


def _status_body(request: ApprovalRequest) -> dict[str, Any]:
    return {"id": request.id, "status": request.status, "decided_at": request.decided_at}


def _sse(event: str, data: dict[str, Any], seq: int) -> bytes:
    return f"event: {event}\nid: {seq}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def routes(ctx: ServerContext) -> list[BaseRoute]:
    # -- sign-in ---------------------------------------------------------------------------------------

    def signin_page(request: Request, next_path: str, error: str = "", username: str = "",
                    status_code: int = 200) -> Response:
        token, fresh = pre_signin_token(ctx, request)
        page = render("signin.html", status_code=status_code, next=next_path, error=error, username=username,
                      csrf=token)
        if fresh:
            set_pre_signin_cookie(ctx, page, fresh)
        return page

    async def signin_get(request: Request) -> Response:
        next_path = safe_next(request.query_params.get("next"))
        if await current(ctx, request) is not None:
            return RedirectResponse(next_path, status_code=303, headers={"Cache-Control": "no-store"})
        return signin_page(request, next_path)

    async def signin_post(request: Request) -> Response:
        try:
            form = await read_form(request)
        except OAuthError as exc:
            return _message("Request refused", exc.description or exc.error, exc.status_code, link="/signin",
                            link_text="Sign in")
        next_path = safe_next(form.get("next"))
        if not pre_signin_ok(ctx, request, form.get("csrf")):
            return _message("This form has expired", "The sign-in form was not sent from this site or is out of "
                            "date, so nothing was changed. Reload the page and try again.", 403, link="/signin",
                            link_text="Sign in")
        username = form.get("username", "")[:255]
        if await ctx.login_limiter.hit(f"{username}\x00{client_ip(request)}") is not None:
            return _message("Too many attempts", "Too many sign-in attempts. Wait a minute and try again.", 429,
                            link="/signin", link_text="Sign in")
        user = await check_password(ctx, username, form.get("password", ""))
        if user is None:
            await ctx.store.audit("login.failed")
            return signin_page(request, next_path, error="Wrong username or password.", username=username,
                               status_code=401)
        response = RedirectResponse(next_path, status_code=303, headers={"Cache-Control": "no-store"})
        await sign_in(ctx, request, response, user)
        return response

    async def signout(request: Request) -> Response:
        session = await current(ctx, request)
        if session is None:
            return RedirectResponse("/signin", status_code=303, headers={"Cache-Control": "no-store"})
        try:
            form = await read_form(request)
        except OAuthError:
            return _forbidden(session)
        if not session.csrf_ok(form.get("csrf")):
            return _forbidden(session)
        response = RedirectResponse("/signin", status_code=303, headers={"Cache-Control": "no-store"})
        await sign_out(ctx, session, response)
        return response

    # -- inbox and request pages -------------------------------------------------------------------------

    async def inbox(request: Request) -> Response:
        session = await current(ctx, request)
        if session is None:
            return _signin_redirect("/approvals")
        everyone = session.user.is_admin
        pending = await ctx.approvals.pending_for(None if everyone else session.user.subject)
        items = [{
            "id": r.id,
            "title": KIND_TITLES.get(r.kind, "A request for your approval"),
            "client": await _client_name(ctx, r.client_id),
            "client_id": r.client_id,
            "for_whom": await _person(ctx, r.subject),
            "expires": _when(r.expires_at),
        } for r in pending]
        return render("approvals.html", items=items, all=everyone, user=session.user, csrf=session.csrf)

    def request_page(session: Session, r: ApprovalRequest, client_name: str, for_whom: str,
                     status_code: int = 200) -> Response:
        return render(
            "approval.html", status_code=status_code, user=session.user, csrf=session.csrf, id=r.id,
            title=KIND_TITLES.get(r.kind, "A request for your approval"), client_name=client_name,
            client_id=r.client_id, for_whom=for_whom, reason=r.reason, binding_message=r.binding_message,
            status=r.status, status_text=STATUS_TEXT.get(r.status, r.status), expires=_when(r.expires_at),
            created=_when(r.created_at), **_detail_view(r.details))

    async def show(request: Request) -> Response:
        id = request.path_params["id"]
        session = await current(ctx, request)
        if session is None:
            return _signin_redirect(f"/approvals/{id}")
        r = await ctx.approvals.get(id)
        if r is None or not _may_see(r, session):
            return _not_found(session)
        return request_page(session, r, await _client_name(ctx, r.client_id), await _person(ctx, r.subject))

    async def decide(request: Request) -> Response:
        id = request.path_params["id"]
        session = await current(ctx, request)
        if session is None:
            return _signin_redirect(f"/approvals/{id}")
        try:
            form = await read_form(request)
        except OAuthError:
            return _forbidden(session)
        if not session.csrf_ok(form.get("csrf")):
            return _forbidden(session)
        decision = form.get("decision")
        if decision not in ("approve", "deny"):
            return _message("Choose approve or deny", "The form did not say whether to approve or deny, so "
                            "nothing was changed.", 400, session, link=f"/approvals/{id}", link_text="Back")
        try:
            r = await ctx.approvals.decide(id, decision == "approve", by=session.user.subject, channel="web",
                                           is_admin=session.user.is_admin)
        except (NotFound, NotAllowed):
            return _not_found(session)
        except (AlreadyDecided, Expired) as exc:
            after = await ctx.approvals.get(id)
            text = ("This request expired before it was decided; nothing was changed." if isinstance(exc, Expired)
                    else f"This request was already decided ({after.status if after else 'unknown'}); "
                         "your answer was not recorded.")
            return _message("Already closed", text, 409, session, link=f"/approvals/{id}",
                            link_text="See the request")
        heading = "Approved" if r.approved else "Denied"
        text = ("You approved the request. The application is told within seconds." if r.approved
                else "You denied the request. The application is told within seconds.")
        return _message(heading, text, 200, session)

    # -- waiting for the outcome ------------------------------------------------------------------------

    async def visible_request(request: Request) -> ApprovalRequest | Response:
        """The request if the caller (signed-in person or authenticated client) may watch it."""
        id = request.path_params["id"]
        watcher_session: Session | None = None
        client_id: str | None = None
        if "authorization" in request.headers:
            try:
                client = await authenticate_client(ctx, request, {}, allow_public=False)
            except OAuthError as exc:
                return error_response(exc)
            client_id = client.client_id
        else:
            watcher_session = await current(ctx, request)
            if watcher_session is None:
                return error_response(InvalidClient("sign in or authenticate the client",
                                                    headers={"WWW-Authenticate": 'Basic realm="authgate"'},
                                                    status_code=401))
        r = await ctx.approvals.get(id)
        allowed = r is not None and (
            _may_see(r, watcher_session) if watcher_session is not None
            else r.client_id is not None and client_id is not None and hmac.compare_digest(r.client_id, client_id))
        if r is None or not allowed:
            return json_response({"error": "not_found", "error_description": "no such approval request"}, 404)
        return r

    async def status(request: Request) -> Response:
        found = await visible_request(request)
        if isinstance(found, Response):
            return found
        return json_response(_status_body(found))

    async def events(request: Request) -> Response:
        found = await visible_request(request)
        if isinstance(found, Response):
            return found
        return StreamingResponse(_stream(found.id), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def _stream(id: str) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        started = last_beat = loop.time()
        last: str | None = None
        seq = 0
        yield b"retry: 2000\n\n"
        while True:
            try:
                r = await ctx.approvals.get(id)
            except ApprovalError:
                return
            if r is None:
                return
            if r.status != last:
                seq += 1
                last = r.status
                yield _sse("status", _status_body(r), seq)
            now = loop.time()
            if r.status != "pending" or now - started >= EVENTS_MAX_SECONDS:
                return
            if now - last_beat >= EVENTS_HEARTBEAT:
                last_beat = now
                yield b": keep-alive\n\n"
            await asyncio.sleep(EVENTS_POLL)

    return [
        Route("/signin", signin_get, methods=["GET"]),
        Route("/signin", signin_post, methods=["POST"]),
        Route("/signout", signout, methods=["POST"]),
        Route("/approvals", inbox, methods=["GET"]),
        Route("/approvals/{id}", show, methods=["GET"]),
        Route("/approvals/{id}", decide, methods=["POST"]),
        Route("/approvals/{id}/status", status, methods=["GET"]),
        Route("/approvals/{id}/events", events, methods=["GET"]),
    ]

