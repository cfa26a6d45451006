"""The operator's pages under ``/admin``: sign-in, overview with charts, clients and agents, users, consents
(revocable), approvals, payments (with block-explorer links), and the filtered audit log.

Every page needs an admin session (authgate.dashboard.auth); without one it redirects to ``/admin/signin``.
Every state-changing form is a POST with the admin CSRF token (a missing or wrong one is a 403 and changes
nothing) and writes an ``admin.*`` audit event naming the operator (``subject``) and what was changed.
"""

from __future__ import annotations

import calendar
import time
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from authgate.context import ServerContext
from authgate.dashboard import queries
from authgate.dashboard.auth import (
    AdminSession,
    current_admin,
    end_admin_session,
    set_signin_cookie,
    signin_csrf,
    signin_csrf_ok,
    start_admin_session,
)
from authgate.dashboard.charts import WINDOWS, bar_chart
from authgate.errors import OAuthError
from authgate.httputil import read_form
from authgate.store.agentauth import AgentAuthRepository
from authgate.store.payments import STATUSES
from authgate.trust import wire as w
from authgate.trust.killswitch import KillSwitch
from authgate.trust.store import MandateRow, TrustStore
from authgate.web import render
from authgate.web.session import check_password, client_ip

#: CAIP-2 network -> transaction page prefix; a network not listed (the embedded chain) gets no link.
EXPLORERS = {
    "eip155:8453": "https://basescan.org/tx/",
    "eip155:84532": "https://sepolia.basescan.org/tx/",
}
NETWORK_NAMES = {"eip155:8453": "Base", "eip155:84532": "Base Sepolia"}
MAX_FIELD = 300
MAX_PAGE = 10_000


def explorer_url(network: str, tx_hash: str | None) -> str:
    prefix = EXPLORERS.get(network)
    return prefix + tx_hash if prefix and tx_hash else ""


def when(ts: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) if ts else ""


def parse_time(value: str | None) -> int | None:
    """``YYYY-MM-DD`` or ``YYYY-MM-DDTHH:MM`` (UTC, what ``<input type=datetime-local>`` sends) -> epoch; else None."""
    if not value:
        return None
    for fmt in ("%Y-%m-%dT%H:%M", "%Y-%m-%d", "%Y-%m-%d %H:%M"):
        try:
            return calendar.timegm(time.strptime(value[:16], fmt))
        except ValueError:
            continue
    return None


def _page(value: str | None) -> int:
    return int(value) if value and value.isdigit() and 0 < int(value) <= MAX_PAGE else 1


def _field(request: Request, name: str) -> str:
    return request.query_params.get(name, "").strip()[:MAX_FIELD]


def mechanism(client_id: str, metadata: dict[str, Any], dynamic: bool) -> str:
    """How an OAuth client came to be: a metadata document URL (CIMD), dynamic registration, or the operator."""
    if client_id.startswith("https://") or client_id.startswith("http://"):
        how = "OAuth · client metadata document"
    else:
        how = "OAuth · dynamic registration" if dynamic else "OAuth · static"
    return f"{how} · {metadata.get('token_endpoint_auth_method', 'none')}"


def mandate_view(row: MandateRow, now: int) -> dict[str, Any]:
    """A mandate as a page shows it: who, for which agent, which routes and payees, the cap, and its state."""
    terms = row.terms if isinstance(row.terms, dict) else {}
    cap = terms.get(w.MANDATE_CAP) if isinstance(terms.get(w.MANDATE_CAP), dict) else {}
    state = "revoked" if row.revoked_at else ("expired" if row.expires_at <= now else "active")
    return {"jti": row.jti, "subject": row.subject, "agent": row.agent, "state": state,
            "routes": [str(r) for r in terms.get(w.MANDATE_ROUTES, [])][:50],
            "payees": [str(p) for p in terms.get(w.MANDATE_PAYEES, [])][:50],
            "cap": f"{cap.get(w.CAP_AMOUNT, '?')} per {cap.get(w.CAP_PERIOD, '?')}" if cap else "",
            "issued_at": row.issued_at, "expires_at": row.expires_at}


def _no_store_redirect(path: str) -> Response:
    return RedirectResponse(path, status_code=303, headers={"Cache-Control": "no-store"})


def routes(ctx: ServerContext) -> list[BaseRoute]:
    agents_repo = AgentAuthRepository(ctx.store)
    trust = TrustStore(ctx.store)
    kill_list = KillSwitch(trust)
    size = ctx.settings.dashboard_page_size

    def page(template: str, session: AdminSession, status_code: int = 200, **values: Any) -> Response:
        return render(f"dashboard/{template}", status_code=status_code, admin=session.user, csrf=session.csrf,
                      when=when, **values)

    def message(session: AdminSession | None, heading: str, text: str, status_code: int,
                back: str = "/admin") -> Response:
        return render("dashboard/message.html", status_code=status_code, admin=session.user if session else None,
                      csrf=session.csrf if session else "", heading=heading, text=text, back=back)

    async def guarded(request: Request) -> AdminSession | Response:
        session = await current_admin(ctx, request)
        if session is None:
            return _no_store_redirect("/admin/signin")
        return session

    async def post_form(request: Request) -> tuple[AdminSession, dict[str, str]] | Response:
        """The operator and the form of a state-changing request, or the response refusing it."""
        session = await current_admin(ctx, request)
        if session is None:
            return message(None, "Sign in first", "Your dashboard session has ended; nothing was changed.", 401,
                           "/admin/signin")
        try:
            form = await read_form(request)
        except OAuthError:
            form = {}
        if not session.csrf_ok(form.get("csrf")):
            return message(session, "This form has expired", "The form was not sent from this dashboard or is "
                           "out of date, so nothing was changed. Reload the page and try again.", 403)
        return session, form

    # -- sign-in -----------------------------------------------------------------------------------------

    def signin_page(request: Request, error: str = "", username: str = "", status_code: int = 200) -> Response:
        token, fresh = signin_csrf(ctx, request)
        response = render("dashboard/signin.html", status_code=status_code, csrf=token, error=error,
                          username=username, admin=None)
        if fresh:
            set_signin_cookie(ctx, response, fresh)
        return response

    async def signin_get(request: Request) -> Response:
        if await current_admin(ctx, request) is not None:
            return _no_store_redirect("/admin")
        return signin_page(request)

    async def signin_post(request: Request) -> Response:
        try:
            form = await read_form(request)
        except OAuthError:
            form = {}
        if not signin_csrf_ok(ctx, request, form.get("csrf")):
            return message(None, "This form has expired", "The sign-in form was not sent from this site or is "
                           "out of date. Reload the page and try again.", 403, "/admin/signin")
        username = form.get("username", "")[:255]
        if await ctx.login_limiter.hit(f"admin\x00{username}\x00{client_ip(request)}") is not None:
            return message(None, "Too many attempts", "Too many sign-in attempts. Wait a minute and try again.",
                           429, "/admin/signin")
        user = await check_password(ctx, username, form.get("password", ""))
        if user is None or not user.is_admin:
            # The same answer for a wrong password and for a person who is not an operator.
            await ctx.store.audit("admin.login_failed")
            return signin_page(request, "Wrong username or password, or not an operator.", username, 401)
        response = _no_store_redirect("/admin")
        await start_admin_session(ctx, request, response, user)
        return response

    async def signout(request: Request) -> Response:
        checked = await post_form(request)
        if isinstance(checked, Response):
            return checked
        session, _ = checked
        response = _no_store_redirect("/admin/signin")
        await end_admin_session(ctx, session, response)
        return response

    # -- overview and charts -----------------------------------------------------------------------------

    async def overview(request: Request) -> Response:
        session = await guarded(request)
        if isinstance(session, Response):
            return session
        window = request.query_params.get("window", "hours")
        if window not in WINDOWS:
            window = "hours"
        step, count, fmt = WINDOWS[window]
        data = await queries.series(ctx.store, ctx.now(), step, count)
        charts = [bar_chart("Requests (audit events)", data.starts, data.requests, fmt),
                  bar_chart("Denials", data.starts, data.denials, fmt),
                  bar_chart("Payments settled", data.starts, data.payments, fmt)]
        counts = {
            "clients": await ctx.store.count_clients(),
            "agents": len(await agents_repo.list_agents()),
            "users": len(await ctx.store.list_users()),
            "pending approvals": len(await ctx.store.list_approvals(status="pending", limit=1000)),
        }
        return page("overview.html", session, charts=charts, window=window, counts=counts)

    # -- clients and agents ------------------------------------------------------------------------------

    async def agents_page(request: Request) -> Response:
        session = await guarded(request)
        if isinstance(session, Response):
            return session
        killed = {(k.kind, k.ident) for k in await trust.kills()}
        clients = [{"id": c.client_id, "name": c.metadata.get("client_name") or "", "mechanism":
                    mechanism(c.client_id, c.metadata, c.dynamic), "since": c.issued_at,
                    "scope": c.metadata.get("scope", ""), "killed": (w.KILL_CLIENT, c.client_id) in killed}
                   for c in await ctx.store.list_clients()]
        owners = {u.subject: u.username for u in await ctx.store.list_users()}
        agents = [{"id": a.agent_id, "name": a.name, "owner": owners.get(a.owner, a.owner), "active": a.active,
                   "since": a.created_at, "mechanism": "Agent Auth · HTTP message signatures",
                   "killed": (w.KILL_AGENT, a.agent_id) in killed}
                  for a in await agents_repo.list_agents()]
        return page("agents.html", session, clients=clients, agents=agents)

    async def kill_switch(request: Request) -> Response:
        """Disable (or re-enable) an agent, a client or a person's delegation everywhere: the trust kill list
        (seen by every process on its next request), plus, on disabling, the tokens we issued to it."""
        checked = await post_form(request)
        if isinstance(checked, Response):
            return checked
        session, form = checked
        kind, ident, action = form.get("kind", ""), form.get("ident", "")[:MAX_FIELD], form.get("action", "kill")
        back = "/admin/users" if kind == w.KILL_USER else "/admin/agents"
        if kind not in w.KILL_KINDS or action not in ("kill", "revive"):
            return message(session, "Nothing to change", "The form did not name an agent, client or user.", 400)
        known = (await agents_repo.get_agent(ident) is not None or await ctx.store.get_client(ident) is not None
                 if kind != w.KILL_USER else await ctx.store.get_user(ident) is not None)
        if not known:
            return message(session, "Not found", "There is no such agent, client or user; nothing was changed.",
                           404, back)
        by = session.user.subject
        if action == "revive":
            changed = await kill_list.revive(kind, ident, by=by)
        else:
            changed = await kill_list.kill(kind, ident, by=by, reason=form.get("reason", "")[:500] or None)
            if kind == w.KILL_AGENT and await agents_repo.get_agent(ident) is not None:
                await agents_repo.revoke_agent(ident)
            elif kind == w.KILL_CLIENT:
                await queries.revoke_client_tokens(ctx.store, ident, ctx.now())
        await ctx.store.audit(f"admin.{'revived' if action == 'revive' else 'disabled'}", subject=by,
                              client_id=ident if kind == w.KILL_CLIENT else None, kind=kind, ident=ident,
                              changed=changed)
        return _no_store_redirect(back)

    # -- mandates and budgets ------------------------------------------------------------------------------

    async def mandates_page(request: Request) -> Response:
        session = await guarded(request)
        if isinstance(session, Response):
            return session
        owners = {u.subject: u.username for u in await ctx.store.list_users()}
        rows = await trust.list_mandates(limit=size * 4)
        return page("mandates.html", session, mandates=[mandate_view(r, ctx.now()) for r in rows], owners=owners,
                    budgets=await trust.list_budgets())

    async def revoke_mandate(request: Request) -> Response:
        checked = await post_form(request)
        if isinstance(checked, Response):
            return checked
        session, form = checked
        jti = form.get("jti", "")[:64]
        row = await trust.get_mandate(jti)
        if row is None or not await trust.revoke_mandate(jti, by=session.user.subject):
            return message(session, "No such mandate", "It is unknown or already revoked; nothing was changed.",
                           404, "/admin/mandates")
        await ctx.store.audit("admin.mandate_revoked", subject=session.user.subject, jti=jti, owner=row.subject,
                              agent=row.agent)
        return _no_store_redirect("/admin/mandates")

    async def disable_client(request: Request) -> Response:
        checked = await post_form(request)
        if isinstance(checked, Response):
            return checked
        session, form = checked
        client_id = form.get("client_id", "")[:MAX_FIELD]
        if await ctx.store.get_client(client_id) is None:
            return message(session, "No such client", "Nothing was changed.", 404, "/admin/agents")
        revoked = await queries.revoke_client_tokens(ctx.store, client_id, ctx.now())
        await ctx.store.audit("admin.client_tokens_revoked", client_id=client_id, subject=session.user.subject,
                              count=revoked)
        return _no_store_redirect("/admin/agents")

    # -- users ---------------------------------------------------------------------------------------------

    async def users_page(request: Request) -> Response:
        session = await guarded(request)
        if isinstance(session, Response):
            return session
        killed = {k.ident for k in await trust.kills() if k.kind == w.KILL_USER}
        return page("users.html", session, users=await ctx.store.list_users(), killed=killed)

    # -- consents --------------------------------------------------------------------------------------------

    async def consents_page(request: Request) -> Response:
        session = await guarded(request)
        if isinstance(session, Response):
            return session
        owners = {u.subject: u.username for u in await ctx.store.list_users()}
        grants = await queries.live_grants(ctx.store, ctx.now())
        remembered = await queries.agentauth_consents(ctx.store, ctx.now())
        return page("consents.html", session, grants=grants, remembered=remembered, owners=owners)

    async def revoke_consent(request: Request) -> Response:
        checked = await post_form(request)
        if isinstance(checked, Response):
            return checked
        session, form = checked
        grant_id = form.get("grant_id", "")[:MAX_FIELD]
        if grant_id:
            grant = await queries.grant_of(ctx.store, grant_id, ctx.now())
            if grant is None:
                return message(session, "No such consent", "It was already revoked or has expired.", 404,
                               "/admin/consents")
            count = await ctx.store.revoke_grant(grant_id)
            await ctx.store.audit("admin.consent_revoked", client_id=grant.client_id, subject=session.user.subject,
                                  owner=grant.subject, grant_id=grant_id, tokens=count)
            return _no_store_redirect("/admin/consents")
        owner, agent_id = form.get("subject", "")[:64], form.get("agent_id", "")[:MAX_FIELD]
        resource, scope = form.get("resource", "")[:MAX_FIELD], form.get("scope", "")[:MAX_FIELD]
        if not (owner and agent_id and resource and scope):
            return message(session, "Nothing to revoke", "The form did not name a consent.", 400, "/admin/consents")
        count = await agents_repo.revoke_consent(owner, agent_id, resource, scope)
        if not count:
            return message(session, "No such consent", "It was already revoked or has expired.", 404,
                           "/admin/consents")
        await ctx.store.audit("admin.consent_revoked", subject=session.user.subject, owner=owner,
                              agent_id=agent_id, resource=resource, scope=scope)
        return _no_store_redirect("/admin/consents")

    # -- approvals and payments ----------------------------------------------------------------------------

    async def approvals_page(request: Request) -> Response:
        session = await guarded(request)
        if isinstance(session, Response):
            return session
        status = _field(request, "status")
        if status not in ("", "pending", "approved", "denied", "expired"):
            status = ""
        rows = await ctx.store.list_approvals(status=status or None, limit=size)
        owners = {u.subject: u.username for u in await ctx.store.list_users()}
        return page("approvals.html", session, rows=rows, status=status, owners=owners)

    async def payments_page(request: Request) -> Response:
        session = await guarded(request)
        if isinstance(session, Response):
            return session
        q, status, number = _field(request, "q"), _field(request, "status"), _page(request.query_params.get("page"))
        if status not in STATUSES:
            status = ""
        rows, more = await queries.find_payments(ctx.store, q=q, status=status, page=number, size=size)
        items = [{"row": r, "explorer": explorer_url(r.network, r.tx_hash),
                  "network": NETWORK_NAMES.get(r.network, r.network)} for r in rows]
        return page("payments.html", session, items=items, q=q, status=status, statuses=STATUSES, number=number,
                    more=more, query=lambda n: urlencode({"q": q, "status": status, "page": n}))

    # -- audit log -----------------------------------------------------------------------------------------

    async def audit_page(request: Request) -> Response:
        session = await guarded(request)
        if isinstance(session, Response):
            return session
        values = {name: _field(request, name) for name in ("event", "subject", "client", "since", "until")}
        since, until = parse_time(values["since"]), parse_time(values["until"])
        errors = [f"'{name}' is not a date (use YYYY-MM-DD or YYYY-MM-DDTHH:MM, UTC)"
                  for name, parsed in (("since", since), ("until", until)) if values[name] and parsed is None]
        flt = queries.AuditFilter(values["event"], values["subject"], values["client"], since, until)
        number = _page(request.query_params.get("page"))
        rows, more = await queries.audit_page(ctx.store, flt, page=number, size=size)
        events = await queries.audit_event_names(ctx.store)
        return page("audit.html", session, status_code=400 if errors else 200, rows=rows, more=more,
                    number=number, values=values, events=events, errors=errors, denial=queries.is_denial,
                    query=lambda n: urlencode({**values, "page": n}))

    return [
        Route("/admin/signin", signin_get, methods=["GET"]),
        Route("/admin/signin", signin_post, methods=["POST"]),
        Route("/admin/signout", signout, methods=["POST"]),
        Route("/admin", overview, methods=["GET"]),
        Route("/admin/agents", agents_page, methods=["GET"]),
        Route("/admin/kill", kill_switch, methods=["POST"]),
        Route("/admin/mandates", mandates_page, methods=["GET"]),
        Route("/admin/mandates/revoke", revoke_mandate, methods=["POST"]),
        Route("/admin/clients/revoke-tokens", disable_client, methods=["POST"]),
        Route("/admin/users", users_page, methods=["GET"]),
        Route("/admin/consents", consents_page, methods=["GET"]),
        Route("/admin/consents/revoke", revoke_consent, methods=["POST"]),
        Route("/admin/approvals", approvals_page, methods=["GET"]),
        Route("/admin/payments", payments_page, methods=["GET"]),
        Route("/admin/audit", audit_page, methods=["GET"]),
    ]
