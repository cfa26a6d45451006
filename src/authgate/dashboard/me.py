"""A person's own page (``/me``, end-user session): the applications they consented to (OAuth grants) and the
Agent Auth agents they own or let act for them, what each may do (scopes, consents) and spend (mandates they
signed, budgets), and buttons to revoke. Each revocation is a
CSRF-checked POST, is limited to the signed-in person's own consents and agents (anything else is a 404), and is
audited as ``me.*`` with the person as subject."""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from authgate.context import ServerContext
from authgate.dashboard import queries
from authgate.dashboard.views import mandate_view, when
from authgate.errors import OAuthError
from authgate.httputil import read_form
from authgate.store.agentauth import AgentAuthRepository
from authgate.trust.store import TrustStore
from authgate.web import render
from authgate.web.session import Session, current

MAX_FIELD = 300


def _redirect(path: str) -> Response:
    return RedirectResponse(path, status_code=303, headers={"Cache-Control": "no-store"})


def routes(ctx: ServerContext) -> list[BaseRoute]:
    agents_repo = AgentAuthRepository(ctx.store)
    trust = TrustStore(ctx.store)

    def message(session: Session, heading: str, text: str, status_code: int) -> Response:
        return render("message.html", status_code=status_code, heading=heading, text=text, link="/me",
                      link_text="Back to your agents", user=session.user, csrf=session.csrf)

    async def me(request: Request) -> Response:
        session = await current(ctx, request)
        if session is None:
            return _redirect("/signin?next=/me")
        subject = session.user.subject
        grants = await queries.live_grants(ctx.store, ctx.now(), subject)
        names = {}
        for grant in grants:
            client = await ctx.store.get_client(grant.client_id)
            names[grant.client_id] = (client.metadata.get("client_name") if client else None) or grant.client_id
        agents = await agents_repo.list_agents(owner=subject)
        remembered = await queries.agentauth_consents(ctx.store, ctx.now(), subject)
        mandates = [mandate_view(r, ctx.now()) for r in await trust.list_mandates(subject=subject, limit=200)]
        # What each of this person's agents may spend: the budget of each agent they own or let in.
        budgets = {}
        for ident in {*(a.agent_id for a in agents), *(g.client_id for g in grants), *(m["agent"] for m in mandates)}:
            budget = await trust.get_budget(ident)
            if budget is not None:
                budgets[ident] = budget
        return render("dashboard/me.html", user=session.user, csrf=session.csrf, grants=grants, names=names,
                      agents=agents, remembered=remembered, mandates=mandates, budgets=budgets, when=when)

    async def revoke(request: Request) -> Response:
        session = await current(ctx, request)
        if session is None:
            return _redirect("/signin?next=/me")
        try:
            form = await read_form(request)
        except OAuthError:
            form = {}
        if not session.csrf_ok(form.get("csrf")):
            return message(session, "This form has expired", "The form was not sent from this site or is out of "
                           "date, so nothing was changed. Reload the page and try again.", 403)
        subject = session.user.subject
        what = form.get("what", "")
        if what == "grant":
            grant_id = form.get("grant_id", "")[:MAX_FIELD]
            grant = await queries.grant_of(ctx.store, grant_id, ctx.now())
            if grant is None or not hmac.compare_digest(grant.subject, subject):
                return message(session, "Not found", "There is no such consent of yours; nothing was changed.", 404)
            count = await ctx.store.revoke_grant(grant_id)
            await ctx.store.audit("me.consent_revoked", client_id=grant.client_id, subject=subject,
                                  grant_id=grant_id, tokens=count)
        elif what == "agent":
            agent = await agents_repo.get_agent(form.get("agent_id", "")[:MAX_FIELD])
            if agent is None or not hmac.compare_digest(agent.owner, subject):
                return message(session, "Not found", "There is no such agent of yours; nothing was changed.", 404)
            await agents_repo.revoke_agent(agent.agent_id)
            await ctx.store.audit("me.agent_revoked", subject=subject, agent_id=agent.agent_id)
        elif what == "agentauth_consent":
            agent_id, resource = form.get("agent_id", "")[:MAX_FIELD], form.get("resource", "")[:MAX_FIELD]
            scope = form.get("scope", "")[:MAX_FIELD]
            if not (agent_id and resource and scope) or not await agents_repo.revoke_consent(
                    subject, agent_id, resource, scope):
                return message(session, "Not found", "There is no such consent of yours; nothing was changed.", 404)
            await ctx.store.audit("me.consent_revoked", subject=subject, agent_id=agent_id, resource=resource,
                                  scope=scope)
        elif what == "mandate":
            jti = form.get("jti", "")[:64]
            # Only a mandate this person issued: another's is the same 404 as an unknown one.
            if not await trust.revoke_mandate(jti, by=subject, subject=subject):
                return message(session, "Not found", "There is no such active mandate of yours; nothing was "
                               "changed.", 404)
            await ctx.store.audit("me.mandate_revoked", subject=subject, jti=jti)
        else:
            return message(session, "Nothing to revoke", "The form did not say what to revoke.", 400)
        return _redirect("/me")

    return [Route("/me", me, methods=["GET"]), Route("/me/revoke", revoke, methods=["POST"])]
