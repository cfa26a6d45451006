"""Person server (-11 §3.4, §3.5, §3.8; authgate profile): person tokens, auth tokens bound to the agent key,
the deferred 202 / ``Location`` / polling pattern with ``Prefer: wait``, consent through the approvals service.

Whose person? An agent enrolled with our agent provider acts for its owner; agents of other providers have no
person here (``403 user_unreachable``).

``POST /agentauth/auth-token`` (signed by the agent with its agent token; body covered by Content-Digest):
resource token (``aud`` = us, ``agent_jkt`` = the signer's key, signature by the resource's published key) →
presented token (one we issued for that resource, bound to the same key, ``jti`` = ``presented_jti``, same
``sub`` and ``ps``) → consent (:mod:`authgate.agentauth.consent`; each scope's level is the higher of our
``agentauth_scope_risk`` and the resource's signed ``scope_risk`` claim): remembered low-risk scopes → ``200`` with
an ``aa-auth+jwt``; anything else → an ``agentauth_consent`` approval request for the person and ``202`` with
``requirement=approval`` when a channel reaches the person out of band, else ``requirement=interaction``
(``url`` + ``code``: the person opens the URL, signs in and decides there) if the agent declared that
capability, else ``403 user_unreachable``. The agent polls ``GET Location`` (signed by the same key) until
``200`` / ``403 denied`` / ``408 expired`` / ``410`` (already collected).
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from authgate.agentauth import consent, wire
from authgate.agentauth.errors import Problem, TokenProblem
from authgate.agentauth.server import AgentAuthServer, endpoint, read_limited
from authgate.agentauth.signing import Caller, parse_json_object
from authgate.agentauth.tokens import Verified, base_claims, is_server_identifier, parse_scope_risk, verify_token
from authgate.crypto.hashing import token_hash
from authgate.httputil import json_response
from authgate.store.agentauth import AgentRecord

PENDING = "aa_pending"
CODE = "aa_code"
APPROVAL_KIND = "agentauth_consent"
MAX_SCOPES = 32
MAX_PENDING_PER_AGENT = 5
_SCOPE = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]{1,128}$")
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PREFER_WAIT = re.compile(r"(?:^|[;,\s])wait=(\d{1,4})(?:$|[;,\s])")


def interaction_code() -> str:
    """8 Crockford base32 symbols (40 bits) from the CSPRNG, shown as XXXX-XXXX (-11 §11)."""
    raw = "".join(secrets.choice(_CROCKFORD) for _ in range(8))
    return f"{raw[:4]}-{raw[4:]}"


def normalize_code(code: str) -> str:
    folded = code.upper().replace("-", "").replace("I", "1").replace("L", "1").replace("O", "0")
    return folded if len(folded) == 8 and all(c in _CROCKFORD for c in folded) else ""


def prefer_wait(request: Request, cap: int) -> int:
    match = _PREFER_WAIT.search(request.headers.get(wire.H_PREFER, ""))
    return min(int(match.group(1)), cap) if match else 0


def _presented_code(code: str) -> str:
    return {"expired_jwt": wire.E_EXPIRED_PRESENTED_TOKEN,
            "revoked_jwt": wire.E_REVOKED_PRESENTED_TOKEN}.get(code, wire.E_INVALID_PRESENTED_TOKEN)


def _resource_code(code: str) -> str:
    return {"expired_jwt": wire.E_EXPIRED_RESOURCE_TOKEN,
            "revoked_jwt": wire.E_REVOKED_RESOURCE_TOKEN}.get(code, wire.E_INVALID_RESOURCE_TOKEN)


def check_binding(rt: dict[str, Any], presented_typ: str | None, presented: dict[str, Any] | None, *,
                  signer_jkt: str, ps: str) -> None:
    """-11 §3.5 step 5 / §14.1, on verified tokens: the resource token names the signer's key and this PS; the
    presented token is the one the resource token was minted for (``jti`` = ``presented_jti``, same ``sub``, same
    ``ps``; person token: ``iss``; auth token: ``ps``) and carries the same ``mission_s256``/``tenant``.
    Raises :class:`Problem` ``400 invalid_resource_token``."""
    if rt.get("agent_jkt") != signer_jkt:
        raise Problem(400, wire.E_INVALID_RESOURCE_TOKEN, "the resource token names another agent key")
    if rt.get("ps") != ps:
        raise Problem(400, wire.E_INVALID_RESOURCE_TOKEN, "the resource token names another person server")
    if presented is None:
        return
    vouched = presented.get("iss") if presented_typ == wire.TYP_PERSON else presented.get("ps")
    if presented.get("jti") != rt.get("presented_jti") or presented.get("sub") != rt.get("sub") or vouched != ps \
            or any(presented.get(n) != rt.get(n) for n in ("mission_s256", "tenant")):
        raise Problem(400, wire.E_INVALID_RESOURCE_TOKEN, "the resource token does not match the presented token")


async def _own_agent(srv: AgentAuthServer, caller: Caller) -> AgentRecord:
    if caller.claims["iss"] != srv.issuer:
        raise Problem(403, wire.E_USER_UNREACHABLE, "this person server has no person for agents of that provider")
    agent = await srv.ctx.store.agentauth.get_agent(caller.claims["sub"])
    if agent is None or not agent.active:
        raise Problem(403, wire.E_USER_UNREACHABLE, "the agent is not enrolled here")
    if await srv.ctx.killswitch.killed(agents=[agent.agent_id], users=[agent.owner]):
        raise Problem(403, wire.E_DENIED, "the agent is disabled by the kill switch")
    return agent


class PersonServer:
    def __init__(self, srv: AgentAuthServer) -> None:
        self.srv = srv
        self.store = srv.ctx.store

    # -- person tokens ---------------------------------------------------------------------------------------

    async def person_token(self, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
        srv = self.srv
        agent = await _own_agent(srv, caller)
        resource = body.get("resource")
        if not is_server_identifier(resource, allow_http_loopback=srv.allow_http):
            raise Problem(400, wire.E_INVALID_REQUEST, "resource must be a server identifier")
        assert isinstance(resource, str)
        now = srv.now()
        exp = min(now + srv.settings.agentauth_person_token_ttl, int(caller.claims["exp"]))
        claims = {**base_claims(srv.issuer, wire.DWK_PERSON, now, exp), "aud": resource,
                  "sub": await srv.pairwise_sub(agent.owner, resource), "cnf": {"jwk": caller.jwk}}
        token = (await srv.signer()).sign(wire.TYP_PERSON, claims)
        await self.store.agentauth.record_token(jti=claims["jti"], typ=wire.TYP_PERSON, agent_id=agent.agent_id,
                                                subject=agent.owner, audience=resource, issued_at=now, expires_at=exp)
        await self.store.audit("agentauth.person_token", client_id=agent.agent_id, subject=agent.owner,
                               resource=resource)
        return {"person_token": token, "expires_in": exp - now}

    # -- auth tokens -----------------------------------------------------------------------------------------

    async def _check_tokens(self, caller: Caller, agent: AgentRecord, body: dict[str, Any]
                            ) -> tuple[Verified, Verified]:
        srv = self.srv
        rt_raw, presented_raw = body.get("resource_token"), body.get("presented_token")
        if not isinstance(rt_raw, str) or not isinstance(presented_raw, str):
            raise Problem(400, wire.E_INVALID_REQUEST, "resource_token and presented_token are required")
        now = srv.now()
        try:
            rt = await verify_token(rt_raw, types=(wire.TYP_RESOURCE,), resolve=srv.resolve, now=now,
                                    expected_aud=srv.issuer, allow_http_loopback=srv.allow_http)
        except TokenProblem as exc:
            raise Problem(400, _resource_code(exc.code), "the resource token was refused", debug=exc.debug) from exc
        check_binding(rt.claims, None, None, signer_jkt=caller.jkt, ps=srv.issuer)
        try:
            presented = await verify_token(presented_raw, types=(wire.TYP_PERSON, wire.TYP_AUTH), resolve=srv.resolve,
                                           now=now, expected_iss=srv.issuer, expected_aud=rt.claims["iss"],
                                           signing_jwk=caller.jwk, is_revoked=srv.is_revoked,
                                           allow_http_loopback=srv.allow_http)
        except TokenProblem as exc:
            raise Problem(400, _presented_code(exc.code), "the presented token was refused",
                          debug=exc.debug) from exc
        check_binding(rt.claims, presented.typ, presented.claims, signer_jkt=caller.jkt, ps=srv.issuer)
        p = presented.claims
        if p["sub"] != await srv.pairwise_sub(agent.owner, rt.claims["iss"]):
            raise Problem(400, wire.E_INVALID_PRESENTED_TOKEN, "the presented token is for another person")
        return rt, presented

    async def _mint(self, *, agent: AgentRecord, jwk: dict[str, Any], resource: str, sub: str, scopes: list[str],
                    limit: int, amount: dict[str, str] | None = None) -> dict[str, Any]:
        srv = self.srv
        now = srv.now()
        exp = min(now + srv.settings.agentauth_auth_token_ttl, limit)
        if exp <= now:
            raise Problem(400, wire.E_EXPIRED_PRESENTED_TOKEN, "the tokens this rests on have expired")
        claims: dict[str, Any] = {**base_claims(srv.issuer, wire.DWK_PERSON, now, exp), "aud": resource,
                                  "ps": srv.issuer, "sub": sub, "cnf": {"jwk": jwk}}
        if scopes:
            claims["scope"] = " ".join(scopes)
        if amount is not None:
            claims["amount"] = amount  # authgate profile: the auth token is good for this amount only
        token = (await srv.signer()).sign(wire.TYP_AUTH, claims)
        await self.store.agentauth.record_token(jti=claims["jti"], typ=wire.TYP_AUTH, agent_id=agent.agent_id,
                                                subject=agent.owner, audience=resource, issued_at=now, expires_at=exp)
        return {"auth_token": token, "expires_in": exp - now}

    def _reachable(self, owner_user: Any) -> bool:
        select = getattr(self.srv.ctx.approvals.notifier, "select", None)
        return bool(select(APPROVAL_KIND, owner_user)) if select is not None and owner_user is not None else False

    async def auth_token(self, request: Request, caller: Caller, body: dict[str, Any]) -> Response:
        srv = self.srv
        agent = await _own_agent(srv, caller)
        rt, presented = await self._check_tokens(caller, agent, body)
        resource = rt.claims["iss"]
        scopes = rt.claims.get("scope", "").split()
        if len(scopes) > MAX_SCOPES or not all(_SCOPE.match(s) for s in scopes):
            raise Problem(400, wire.E_INVALID_RESOURCE_TOKEN, "the resource token's scope is malformed")
        remembered = await self.store.agentauth.remembered_scopes(agent.owner, agent.agent_id, resource)
        raw_amount = rt.claims.get("amount")
        try:
            amount = consent.parse_amount(raw_amount)
        except ValueError as exc:
            raise Problem(400, wire.E_INVALID_RESOURCE_TOKEN, "the resource token's amount is malformed") from exc
        # authgate profile: the resource owner's levels, from the signed resource token only (never the body)
        try:
            declared = parse_scope_risk(rt.claims.get(wire.CLAIM_SCOPE_RISK), scopes)
        except ValueError as exc:
            raise Problem(400, wire.E_INVALID_RESOURCE_TOKEN, "the resource token's scope_risk is malformed",
                          debug=str(exc)) from exc
        decision = consent.decide(srv.settings, resource, scopes, remembered, amount, declared)
        limit = min(int(caller.claims["exp"]), int(presented.claims["exp"]))
        audit = {"resource": resource, "scopes": scopes, "reason": decision.reason, "high_risk": list(decision.high),
                 "amount": raw_amount, "risk_source": dict(decision.sources),
                 **({"resource_risk": declared} if declared else {})}
        if decision.grant_now:
            await self.store.audit("agentauth.consent_granted", client_id=agent.agent_id, subject=agent.owner,
                                   **audit)
            result = await self._mint(agent=agent, jwk=caller.jwk, resource=resource, sub=rt.claims["sub"],
                                      scopes=scopes, limit=limit, amount=raw_amount)
            return json_response(result)
        capabilities = body.get("capabilities")
        interactive = isinstance(capabilities, list) and wire.REQ_INTERACTION in capabilities
        owner_user = await self.store.get_user(agent.owner)
        out_of_band = self._reachable(owner_user)
        if not out_of_band and not interactive:
            await self.store.audit("agentauth.consent_unreachable", client_id=agent.agent_id, subject=agent.owner,
                                   **audit)
            raise Problem(403, wire.E_USER_UNREACHABLE, "the person cannot be reached and the agent cannot interact")
        # Bound what one agent can put in front of its person: a few open requests at a time.
        waiting = [a for a in await srv.ctx.approvals.pending_for(agent.owner)
                   if a.kind == APPROVAL_KIND and a.client_id == agent.agent_id]
        if len(waiting) >= MAX_PENDING_PER_AGENT:
            raise Problem(429, "slow_down", "this agent already has requests waiting for the person",
                          headers={"Retry-After": "30"})
        justification = body.get("justification")
        reason = justification if isinstance(justification, str) else None
        ttl = min(srv.settings.agentauth_pending_ttl, srv.settings.approvals_max_ttl)
        approval = await srv.ctx.approvals.create(
            kind=APPROVAL_KIND, subject=agent.owner, client_id=agent.agent_id, ttl=ttl, reason=reason,
            details={"agent": agent.agent_id, "agent_name": agent.name, "resource": resource, "scopes": scopes,
                     "high_risk_scopes": list(decision.high), "why_asked": decision.reason,
                     **({"high_risk_set_by_resource": list(decision.raised)} if decision.raised else {}),
                     **({"amount": str(amount[0]), "currency": amount[1]} if amount else {})},
            notify=out_of_band)
        await self.store.audit("agentauth.consent_asked", client_id=agent.agent_id, subject=agent.owner, **audit,
                               approval=approval.id)
        handle = secrets.token_urlsafe(32)
        payload = {"approval": approval.id, "agent_id": agent.agent_id, "jkt": caller.jkt, "jwk": caller.jwk,
                   "resource": resource, "sub": rt.claims["sub"], "scopes": scopes, "low": list(decision.low),
                   "limit": limit, "amount": raw_amount, "risk_source": dict(decision.sources)}
        code = None
        if not out_of_band:
            code = interaction_code()
            payload["code_hash"] = token_hash(normalize_code(code))
            await self.store.put_artifact(token_hash(normalize_code(code)), CODE, {"approval": approval.id}, ttl)
        # Outlives the approval a little, so a poll after the deadline still learns "expired" (408), not 410.
        await self.store.put_artifact(token_hash(handle), PENDING, payload, ttl + 120)
        location = f"{srv.issuer}{wire.PATH_PENDING}/{handle}"
        return await self._pending_answer(request, token_hash(handle), location, code=code)

    async def _pending_answer(self, request: Request, pending_id: str, location: str, *, code: str | None = None
                              ) -> Response:
        """Wait as ``Prefer: wait`` asks (bounded), then the terminal answer or another 202."""
        srv = self.srv
        record = await self.store.get_artifact(pending_id, PENDING)
        if record is None:
            raise Problem(404, wire.E_INVALID_REQUEST, "no such pending request")
        if record.consumed_at is not None:
            raise Problem(410, "invalid_code", "the result was already collected")
        approval_id = record.payload["approval"]
        # An interaction code must reach the agent before anyone can decide: never hold that first answer.
        wait = 0 if code is not None else prefer_wait(request, srv.settings.agentauth_max_wait)
        current = await (srv.ctx.approvals.wait(approval_id, wait, poll_interval=0.2) if wait
                         else srv.ctx.approvals.get(approval_id))
        if current is None:
            raise Problem(404, wire.E_INVALID_REQUEST, "no such pending request")
        if current.status == "pending":
            if code is not None:
                requirement = wire.requirement_header(wire.REQ_INTERACTION, url=srv.issuer + wire.PATH_INTERACTION,
                                                      code=code)
            else:
                requirement = wire.requirement_header(wire.REQ_APPROVAL)
            headers = {"Location": location, "Retry-After": str(srv.settings.agentauth_poll_interval),
                       wire.H_REQUIREMENT: requirement}
            return json_response({"status": "pending"}, 202, headers=headers)
        art, won = await self.store.consume_artifact(pending_id, PENDING)
        if not won or art is None:
            raise Problem(410, "invalid_code", "the result was already collected")
        p = art.payload
        agent = await self.store.agentauth.get_agent(p["agent_id"])
        audit = {"resource": p["resource"], "scopes": p["scopes"], "approval": approval_id,
                 "risk_source": p.get("risk_source", {})}
        if current.status == "expired":
            await self.store.audit("agentauth.consent_expired", client_id=p["agent_id"], **audit)
            raise Problem(408, wire.E_EXPIRED, "the person did not decide in time")
        if current.status == "denied" or agent is None or not agent.active:
            await self.store.audit("agentauth.consent_denied", client_id=p["agent_id"], **audit)
            raise Problem(403, wire.E_DENIED, "the person declined")
        if p["low"]:
            await self.store.agentauth.remember(agent.owner, agent.agent_id, p["resource"], p["low"],
                                                srv.settings.agentauth_consent_ttl)
        await self.store.audit("agentauth.consent_granted", client_id=agent.agent_id, subject=agent.owner, **audit,
                               reason="approved", remembered=p["low"])
        result = await self._mint(agent=agent, jwk=p["jwk"], resource=p["resource"], sub=p["sub"],
                                  scopes=p["scopes"], limit=int(p["limit"]), amount=p.get("amount"))
        return json_response(result)

    async def poll(self, request: Request, caller: Caller, handle: str) -> Response:
        if not handle or len(handle) > 128:
            raise Problem(404, wire.E_INVALID_REQUEST, "no such pending request")
        pending_id = token_hash(handle)
        record = await self.store.get_artifact(pending_id, PENDING)
        # Only the agent key that asked may poll; anything else looks like an unknown handle.
        if record is None or not secrets.compare_digest(str(record.payload.get("jkt", "")), caller.jkt):
            raise Problem(404, wire.E_INVALID_REQUEST, "no such pending request")
        return await self._pending_answer(request, pending_id, f"{self.srv.issuer}{wire.PATH_PENDING}/{handle}")


def routes(srv: AgentAuthServer) -> list[BaseRoute]:
    ps = PersonServer(srv)

    async def metadata(_: Request) -> Response:
        doc = {"issuer": srv.issuer, "jwks_uri": srv.issuer + wire.PATH_AP_JWKS,
               "person_token_endpoint": srv.issuer + wire.PATH_PERSON_TOKEN,
               "auth_token_endpoint": srv.issuer + wire.PATH_AUTH_TOKEN,
               "interaction_endpoint": srv.issuer + wire.PATH_INTERACTION,
               "name": "authgate person server", "accept_signature_algs": list(wire.ACCEPTED_ALGS),
               "draft": srv.settings.agentauth_draft}
        return json_response(doc, no_store=False, headers={"Cache-Control": "public, max-age=300"})

    async def _signed_json(request: Request) -> tuple[Caller, dict[str, Any]]:
        raw = await read_limited(request)
        caller = await srv.verify(request, raw)
        body = parse_json_object(raw)
        if body is None:
            raise Problem(400, wire.E_INVALID_REQUEST, "body must be a JSON object")
        return caller, body

    @endpoint
    async def person_token(request: Request) -> Response:
        caller, body = await _signed_json(request)
        return json_response(await ps.person_token(caller, body))

    @endpoint
    async def auth_token(request: Request) -> Response:
        caller, body = await _signed_json(request)
        return await ps.auth_token(request, caller, body)

    @endpoint
    async def pending(request: Request) -> Response:
        raw = await read_limited(request)
        caller = await srv.verify(request, raw)
        return await ps.poll(request, caller, request.path_params["handle"])

    async def interaction(request: Request) -> Response:
        """The person's browser: the code leads to the approval page, where signing in and deciding happen
        (the code alone never approves)."""
        code = normalize_code(request.query_params.get("code", "")[:32])
        record = await ps.store.get_artifact(token_hash(code), CODE) if code else None
        if record is None or not record.usable(srv.now()):
            return Response("Unknown or expired code.", status_code=404, media_type="text/plain",
                            headers={"Cache-Control": "no-store"})
        return RedirectResponse(f"/approvals/{record.payload['approval']}", status_code=303,
                                headers={"Cache-Control": "no-store"})

    return [
        Route(wire.WELL_KNOWN + wire.DWK_PERSON, metadata, methods=["GET"]),
        Route(wire.PATH_PERSON_TOKEN, person_token, methods=["POST"]),
        Route(wire.PATH_AUTH_TOKEN, auth_token, methods=["POST"]),
        Route(wire.PATH_PENDING + "/{handle}", pending, methods=["GET"]),
        Route(wire.PATH_INTERACTION, interaction, methods=["GET"]),
    ]


__all__ = ["PersonServer", "routes"]
