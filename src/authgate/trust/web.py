"""A person's mandates on the web: list, issue (signed by this server's key) and revoke.

``GET /trust/mandates`` (signed-in person), ``POST /trust/mandates`` (issue; the JWT is shown once, never
stored), ``POST /trust/mandates/{jti}/revoke`` (only the person's own). Sessions and CSRF tokens are those of
authgate.web.session; a missing or wrong CSRF token is a 403 and changes nothing. The admin dashboard builds on
TrustStore directly.
"""

from __future__ import annotations

import time
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from authgate.context import ServerContext
from authgate.errors import OAuthError
from authgate.httputil import read_form
from authgate.trust import mandates
from authgate.trust import wire as w
from authgate.trust.store import MandateRow
from authgate.web import render
from authgate.web.session import Session, current, safe_next

PATH = "/trust/mandates"


def _when(ts: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


def _lines(value: str | None) -> tuple[str, ...]:
    return tuple(line.strip() for line in (value or "").splitlines() if line.strip())


def _message(heading: str, text: str, status: int, session: Session | None) -> Response:
    return render("message.html", status_code=status, heading=heading, text=text, link=PATH,
                  link_text="Back to your mandates", user=session.user if session else None,
                  csrf=session.csrf if session else "")


def routes(ctx: ServerContext) -> list[BaseRoute]:
    async def page(session: Session, token: str | None = None, status: int = 200) -> Response:
        rows: list[MandateRow] = await ctx.trust.list_mandates(subject=session.user.subject, limit=200)
        items = []
        for m in rows:
            cap = m.terms.get(w.MANDATE_CAP, {})
            items.append({"jti": m.jti, "agent": m.agent, "expires": _when(m.expires_at),
                          "revoked": m.revoked_at is not None,
                          "cap": f"{cap.get(w.CAP_AMOUNT)} per {cap.get(w.CAP_PERIOD)}",
                          "routes": ", ".join(m.terms.get(w.MANDATE_ROUTES, [])),
                          "payees": ", ".join(m.terms.get(w.MANDATE_PAYEES, []))})
        return render("trust/mandates.html", status_code=status, items=items, token=token, user=session.user,
                      csrf=session.csrf, periods=w.PERIODS)

    async def signed_in(request: Request) -> Session | Response:
        session = await current(ctx, request)
        if session is None:
            return RedirectResponse(f"/signin?next={quote(safe_next(PATH), safe='/')}", status_code=303,
                                    headers={"Cache-Control": "no-store"})
        return session

    async def list_page(request: Request) -> Response:
        session = await signed_in(request)
        return session if isinstance(session, Response) else await page(session)

    async def issue(request: Request) -> Response:
        session = await signed_in(request)
        if isinstance(session, Response):
            return session
        try:
            form = await read_form(request)
        except OAuthError as exc:
            return _message("Request refused", exc.description or exc.error, exc.status_code, session)
        if not session.csrf_ok(form.get("csrf")):
            return _message("This form has expired", "Nothing was changed. Reload the page and try again.", 403,
                            session)
        try:
            cap, ttl = form.get("cap", "").strip(), form.get("ttl", "86400").strip()
            if not cap.isdigit() or not ttl.isdigit() or len(cap) > 19 or len(ttl) > 9:
                raise ValueError("cap and validity must be whole numbers")
            terms = mandates.Terms(_lines(form.get("routes")), _lines(form.get("payees")), int(cap),
                                   form.get("period", "day"))
            agent = (form.get("agent") or "").strip()
            token, _ = await mandates.issue(ctx.keys, ctx.trust, issuer=ctx.issuer, subject=session.user.subject,
                                            agent=agent, terms=terms, ttl=int(ttl))
        except ValueError as exc:
            return _message("Mandate not issued", str(exc), 400, session)
        return await page(session, token=token)

    async def revoke(request: Request) -> Response:
        session = await signed_in(request)
        if isinstance(session, Response):
            return session
        try:
            form = await read_form(request)
        except OAuthError as exc:
            return _message("Request refused", exc.description or exc.error, exc.status_code, session)
        if not session.csrf_ok(form.get("csrf")):
            return _message("This form has expired", "Nothing was changed. Reload the page and try again.", 403,
                            session)
        jti = request.path_params["jti"]
        if not await ctx.trust.revoke_mandate(jti, by=session.user.subject, subject=session.user.subject):
            return _message("No such mandate", "There is no active mandate of yours with this id.", 404, session)
        return RedirectResponse(PATH, status_code=303, headers={"Cache-Control": "no-store"})

    return [
        Route(PATH, list_page, methods=["GET"]),
        Route(PATH, issue, methods=["POST"]),
        Route(PATH + "/{jti}/revoke", revoke, methods=["POST"]),
    ]
