"""One-time links to an approval request, and the short code that may be required with them.

A link alone never approves. ``GET /approvals/link/{token}`` either sends the person to the signed-in
request page (``/approvals/{id}``, the default), or, with ``approvals_link_requires_code``, opens a page where
they enter the 6-digit code that went out on a second channel (SMS by default) and approve or deny; the
decision is then made as the request's own subject with channel ``link+code``.

Why links are stored artefacts and not signed tokens: the notifier only sees a request after it was created
(``ApprovalService.create`` takes ``link_hash``/``code_hash`` but the notifier cannot set them), a link must
be usable exactly once (a signature alone cannot say "used", so a store would be needed anyway), and every
channel gets links of its own (the e-mail's and the SMS's are different tokens). So each link is a random
token (128 or 256 bits) whose SHA-256 is the id of an ``approval_link`` artefact carrying the request id;
the artefact expires with the request, is consumed atomically by the store (single use, across processes)
and all links of a request share ``grant_id = "apl:<request id>"`` so they can be revoked together. No server
secret is involved, so there is nothing to rotate, and an altered token is simply unknown. The code is kept
as an HMAC with a random per-request salt in an ``approval_code`` artefact; wrong guesses are bounded per
request (not per link) by claiming numbered ``approval_attempt`` artefacts, whose primary key makes the
count exact under concurrency; when they run out, every link of the request is revoked.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass
from typing import Any

import sqlalchemy.exc
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from authgate.approvals.service import ApprovalError, ApprovalRequest
from authgate.clock import Clock
from authgate.context import ServerContext
from authgate.crypto.hashing import token_hash
from authgate.errors import OAuthError
from authgate.httputil import read_form
from authgate.store import Artifact, Store
from authgate.web import PAGE_HEADERS, render

log = logging.getLogger("authgate.approvals.links")

LINK_KIND = "approval_link"
CODE_KIND = "approval_code"
ATTEMPT_KIND = "approval_attempt"
LINK_PATH = "/approvals/link/"
CODE_DIGITS = 6
Intent = str  # "open", "approve" or "deny": which button the person meant; the page still asks
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{20,64}$")


def _link_id(token: str) -> str:
    return "apl:" + token_hash(token)


def _family(request_id: str) -> str:
    return "apl:" + request_id


def _code_mac(salt: str, code: str) -> str:
    return hmac.new(bytes.fromhex(salt), code.encode(), hashlib.sha256).hexdigest()


def new_code() -> str:
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


@dataclass(frozen=True)
class Link:
    token: str
    url: str
    intent: Intent
    request_id: str


class ApprovalLinks:
    """Issues, looks up, consumes and revokes one-time links; stores and checks codes."""

    def __init__(self, store: Store, clock: Clock, *, issuer: str, max_attempts: int = 5) -> None:
        self.store = store
        self.clock = clock
        self.issuer = issuer.rstrip("/")
        self.max_attempts = max_attempts

    def _ttl(self, request: ApprovalRequest) -> int:
        return max(1, request.expires_at - int(self.clock.now()))

    async def issue(self, request: ApprovalRequest, *, channel: str, intent: Intent = "open", short: bool = False
                    ) -> Link:
        """A fresh single-use link; ``short`` (for SMS) uses 128 random bits instead of 256."""
        token = secrets.token_urlsafe(16 if short else 32)
        await self.store.put_artifact(_link_id(token), LINK_KIND,
                                      {"rid": request.id, "intent": intent, "channel": channel},
                                      self._ttl(request), client_id=request.client_id, grant_id=_family(request.id))
        return Link(token, self.issuer + LINK_PATH + token, intent, request.id)

    async def set_code(self, request: ApprovalRequest) -> str:
        """Mint and store the request's short code (once per request); return it for delivery."""
        code = new_code()
        salt = secrets.token_hex(16)
        await self.store.put_artifact("apc:" + request.id, CODE_KIND, {"salt": salt, "mac": _code_mac(salt, code)},
                                      self._ttl(request), grant_id=_family(request.id))
        return code

    async def lookup(self, token: str) -> Artifact | None:
        """The link's artefact in whatever state, or None for a malformed or unknown (altered) token."""
        if not _TOKEN.match(token):
            return None
        return await self.store.get_artifact(_link_id(token), LINK_KIND)

    async def consume(self, token: str) -> bool:
        """Use the link up; True for exactly one caller."""
        _, won = await self.store.consume_artifact(_link_id(token), LINK_KIND)
        return won

    async def revoke_all(self, request_id: str) -> None:
        await self.store.revoke_grant(_family(request_id))

    async def claim_attempt(self, request_id: str) -> int | None:
        """Take the next of ``max_attempts`` code attempts for the request; return how many remain after this
        one, or None when none were left. Exact under concurrency: each attempt is a unique row."""
        for n in range(self.max_attempts):
            try:
                await self.store.put_artifact(f"apa:{request_id}:{n}", ATTEMPT_KIND, {}, 24 * 3600)
            except sqlalchemy.exc.IntegrityError:
                continue
            return self.max_attempts - n - 1
        return None

    async def check_code(self, request_id: str, code: str) -> bool:
        """Compare in constant time against the stored MAC; False if the request has no usable code."""
        stored = await self.store.get_artifact("apc:" + request_id, CODE_KIND)
        if stored is None or not stored.usable(int(self.clock.now())):
            return False
        given = re.sub(r"[\s-]", "", code)[:16]
        mac = _code_mac(str(stored.payload["salt"]), given)
        return hmac.compare_digest(mac, str(stored.payload["mac"])) and len(given) == CODE_DIGITS


# -- pages -------------------------------------------------------------------------------------------------

_STATUS_TEXT = {
    "approved": "This request was already approved.",
    "denied": "This request was already denied.",
    "expired": "This request has expired.",
}


def _refused(message: str, status: int = 410) -> Response:
    return render("link_result.html", status_code=status, title="This link cannot be used", message=message,
                  ok=False)


def _details(request: ApprovalRequest) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, value in list(request.details.items())[:20]:
        text = " ".join(str(v) for v in value) if isinstance(value, list) else str(value)
        out.append((str(key)[:64], text[:500]))
    return out


def routes(ctx: ServerContext) -> list[BaseRoute]:
    s = ctx.settings
    links = ApprovalLinks(ctx.store, ctx.clock, issuer=ctx.issuer, max_attempts=s.approvals_code_attempts)

    async def usable_link(token: str) -> tuple[Artifact, ApprovalRequest] | Response:
        art = await links.lookup(token)
        if art is None:
            return _refused("This link is not valid. Check that you opened the whole link.", 404)
        request = await ctx.approvals.get(str(art.payload.get("rid", "")))
        if request is None:
            return _refused("This link is not valid.", 404)
        if request.status != "pending":
            return _refused(_STATUS_TEXT.get(request.status, "This request is closed."))
        if not art.usable(ctx.now()):
            return _refused("This link was already used or has been withdrawn. "
                            "Sign in to authgate to see your pending requests.")
        return art, request

    def code_page(token: str, request: ApprovalRequest, *, error: str | None = None, status: int = 200,
                  intent: str = "open") -> Response:
        return render("link_code.html", status_code=status, request=request, details=_details(request),
                      action=LINK_PATH + token, error=error, intent=intent, digits=CODE_DIGITS)

    async def open_link(request: Request) -> Response:
        token = request.path_params["token"]
        found = await usable_link(token)
        if isinstance(found, Response):
            return found
        art, approval = found
        if s.approvals_link_requires_code:  # showing the form changes nothing: mail scanners may fetch it
            return code_page(token, approval, intent=str(art.payload.get("intent", "open")))
        if not await links.consume(token):
            return _refused("This link was already used. Sign in to authgate to see your pending requests.")
        return RedirectResponse(f"/approvals/{approval.id}", status_code=303, headers=PAGE_HEADERS)

    async def submit(request: Request) -> Response:
        token = request.path_params["token"]
        if not s.approvals_link_requires_code:
            refused = _refused("Decisions are made on the request page after signing in.", 405)
            refused.headers["Allow"] = "GET"  # RFC 9110 §15.5.6: a 405 names the methods that work
            return refused
        try:
            form = await read_form(request)
        except OAuthError:
            return _refused("The form could not be read.", 400)
        decision = form.get("decision")
        if decision not in ("approve", "deny"):
            return _refused("Choose approve or deny.", 400)
        found = await usable_link(token)
        if isinstance(found, Response):
            return found
        _, approval = found
        remaining = await links.claim_attempt(approval.id)
        if remaining is None:
            await links.revoke_all(approval.id)
            return _refused("Too many wrong codes: this request's links no longer work. "
                            "Sign in to authgate to decide it.", 429)
        if not await links.check_code(approval.id, form.get("code", "")):
            log.info("wrong approval code for %s (%d attempts left)", approval.id, remaining)
            if remaining == 0:
                await links.revoke_all(approval.id)
                return _refused("Wrong code, and no attempts are left: this request's links no longer work. "
                                "Sign in to authgate to decide it.", 429)
            return code_page(token, approval, status=400, intent=decision,
                             error=f"That code is not right. {remaining} attempt(s) left.")
        if not await links.consume(token):
            return _refused("This link was already used.")
        await links.revoke_all(approval.id)
        try:
            decided = await ctx.approvals.decide(approval.id, decision == "approve", by=approval.subject or "",
                                                 channel="link+code")
        except ApprovalError as exc:
            return _refused({"not_allowed": "This request cannot be decided from a link.",
                             "expired": _STATUS_TEXT["expired"]}.get(exc.code, "This request was already decided."))
        verb = "approved" if decided.approved else "denied"
        return render("link_result.html", title=f"Request {verb}", ok=True,
                      message=f"You {verb} the request. You can close this page.")

    return [Route(LINK_PATH + "{token}", open_link, methods=["GET"]),
            Route(LINK_PATH + "{token}", submit, methods=["POST"])]


def link_summary(request: ApprovalRequest) -> dict[str, Any]:
    """What every channel says about a request (untrusted values are marked by the caller's wording)."""
    return {"id": request.id, "kind": request.kind, "client_id": request.client_id, "details": request.details,
            "reason": request.reason, "binding_message": request.binding_message,
            "expires_at": request.expires_at}
