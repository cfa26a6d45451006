"""A person issues and revokes a mandate on the web: sign-in required, CSRF checked (403, nothing changed),
only one's own mandates revocable; the issued JWT verifies and the revoked one is refused."""

from __future__ import annotations

import html
import re

import httpx

from authgate.context import ServerContext
from authgate.trust import mandates, wire
from authgate.trust.errors import TrustError
from authgate.trust.issuers import TrustedIssuers
from authgate.trust.mandates import MandateVerifier
from tests.approvals.test_web import _field, _signed_in
from tests.conftest import ISSUER

PAYEE = "0x" + "ab" * 20
FORM = {"agent": "agent-1", "routes": "GET /api/*\r\n/api/buy", "payees": PAYEE, "cap": "5000", "period": "day",
        "ttl": "3600"}


async def test_issue_and_revoke_a_mandate(ctx: ServerContext, client: httpx.AsyncClient) -> None:
    anonymous = await client.get("/trust/mandates")
    assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/signin")
    http, subject = await _signed_in(ctx, "alice")
    mallory, _ = await _signed_in(ctx, "mallory")
    try:
        page = await http.get("/trust/mandates")
        assert page.status_code == 200 and "You have not issued any mandate" in page.text
        csrf = _field(page.text, "csrf")
        assert (await http.post("/trust/mandates", data={**FORM, "csrf": "wrong"})).status_code == 403
        assert await ctx.trust.list_mandates() == []
        bad = await http.post("/trust/mandates", data={**FORM, "cap": "lots", "csrf": csrf})
        assert bad.status_code == 400 and await ctx.trust.list_mandates() == []

        issued = await http.post("/trust/mandates", data={**FORM, "csrf": csrf})
        assert issued.status_code == 200
        match = re.search(r'id="mandate-token">([^<]+)<', issued.text)
        assert match
        token = html.unescape(match.group(1))
        (row,) = await ctx.trust.list_mandates(subject=subject)
        assert row.agent == "agent-1" and row.terms["routes"] == ["GET /api/*", "/api/buy"]
        verifier = MandateVerifier(TrustedIssuers({ISSUER: await ctx.keys.jwks()}),
                                   revoked=mandates.store_revocations(ctx.trust))
        mandate = await verifier.verify(token, agent="agent-1", now=ctx.now())
        assert mandate.subject == subject and mandate.terms.cap_amount == 5000

        other_csrf = _field((await mallory.get("/trust/mandates")).text, "csrf")
        stolen = await mallory.post(f"/trust/mandates/{row.jti}/revoke", data={"csrf": other_csrf})
        assert stolen.status_code == 404
        assert (await http.post(f"/trust/mandates/{row.jti}/revoke", data={"csrf": "x"})).status_code == 403
        assert (await ctx.trust.get_mandate(row.jti)).revoked_at is None  # type: ignore[union-attr]

        done = await http.post(f"/trust/mandates/{row.jti}/revoke", data={"csrf": csrf})
        assert done.status_code == 303
        assert "revoked" in (await http.get("/trust/mandates")).text
        try:
            await verifier.verify(token, agent="agent-1", now=ctx.now())
            raise AssertionError("revoked mandate accepted")
        except TrustError as exc:
            assert exc.code == wire.ERR_MANDATE_REVOKED
    finally:
        await http.aclose()
        await mallory.aclose()
    events = [e["event"] for e in await ctx.store.audit_events()]
    assert "trust.mandate_issued" in events and "trust.mandate_revoked" in events
