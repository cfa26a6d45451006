"""Agent provider (-11 §3.1, bootstrap draft; authgate profile): enrolment by an authenticated owner, agent
tokens, refresh with a new key, ``/.well-known/aauth-agent.json`` and the JWKS.

Enrolment: the owner brings the agent's *public* key (the private key never leaves the agent). Over HTTP,
``POST /agentauth/agents`` with ``Authorization: Bearer <token>``: either one of our access tokens carrying
``agentauth_enroll_scope`` and issued for our issuer or this endpoint (RFC 8707 audience; the owner is the
token's subject) or the configured admin key (the owner is named in the body). The CLI (``authgate agents
enroll``) does the same on the database directly.

Refresh: ``POST /agentauth/agent-token``, signed by the agent's **current** key with its current agent token,
body ``{"jwk": <new public key>, "proof": <compact JWS over {"sub", "jkt", "iat"} signed by the new key>}``:
both keys are proven. The new key replaces the old one once (a conditional update: a second refresh with the
old key finds it gone) and the old key's agent tokens are revoked. Without ``jwk`` the same key gets a fresh
token.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from authgate.agentauth import wire
from authgate.agentauth.errors import Problem, TokenProblem
from authgate.agentauth.server import AgentAuthServer, endpoint, read_limited
from authgate.agentauth.signing import parse_json_object
from authgate.agentauth.tokens import agent_domain, base_claims, import_public_jwk, public_jwk, thumbprint
from authgate.httputil import json_response
from authgate.store.agentauth import AgentRecord

_LOCAL = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
PROOF_TYP = "aa-key-proof+jwt"
PROOF_MAX_AGE = 120


class EnrolmentError(ValueError):
    """A refused enrolment; the message is safe to show."""


async def issue_agent_token(srv: AgentAuthServer, agent: AgentRecord) -> tuple[str, int]:
    now = srv.now()
    ttl = srv.settings.agentauth_agent_token_ttl
    claims = {**base_claims(srv.issuer, wire.DWK_AGENT, now, now + ttl), "sub": agent.agent_id,
              "cnf": {"jwk": agent.public_jwk}, "ps": srv.issuer}
    token = (await srv.signer()).sign(wire.TYP_AGENT, claims)
    await srv.ctx.store.agentauth.record_token(jti=claims["jti"], typ=wire.TYP_AGENT, agent_id=agent.agent_id,
                                               subject=agent.owner, audience=None, issued_at=now, expires_at=now + ttl)
    return token, ttl


async def enroll(srv: AgentAuthServer, *, owner: str, name: Any, jwk: Any) -> tuple[AgentRecord, str, int]:
    """Create ``aauth:<name>@<our host>`` bound to ``jwk`` for ``owner`` (a user subject) and issue its token."""
    if not isinstance(name, str) or not _LOCAL.match(name):
        raise EnrolmentError("name must be 1-63 of a-z 0-9 . _ - (starting with a letter or digit)")
    try:
        key = import_public_jwk(jwk)
    except TokenProblem as exc:
        raise EnrolmentError(f"the public key was refused ({exc.code})") from exc
    if await srv.ctx.store.get_user(owner) is None:
        raise EnrolmentError("unknown owner")
    bound = public_jwk(key)
    now = srv.now()
    record = AgentRecord(agent_id=f"aauth:{name}@{agent_domain(srv.issuer)}", owner=owner, name=name,
                         jkt=thumbprint(bound), public_jwk=bound, created_at=now, updated_at=now, revoked_at=None)
    if not await srv.ctx.store.agentauth.add_agent(record):
        raise EnrolmentError("an agent with that name exists")
    token, ttl = await issue_agent_token(srv, record)
    return record, token, ttl


def _enrolment_audiences(srv: AgentAuthServer) -> frozenset[str]:
    """Whom an enrolment token must be for (RFC 8707): our issuer (a token requested without ``resource`` when no
    ``resources`` are configured) or the enrolment endpoint itself. A token minted for another API carries that
    API's audience and could be replayed here by it, whatever its scope."""
    from authgate.oauth.policy import canonical_resource

    return frozenset(canonical_resource(u) for u in (srv.issuer, srv.issuer + wire.PATH_AGENTS))


def _for_us(srv: AgentAuthServer, aud: Any) -> bool:
    from authgate.oauth.policy import canonical_resource

    values = aud if isinstance(aud, list) else [aud]
    wanted = _enrolment_audiences(srv)
    return any(isinstance(v, str) and canonical_resource(v) in wanted for v in values)


async def _enrolment_owner(srv: AgentAuthServer, request: Request, body: dict[str, Any]) -> str:
    """The owner of the agent being enrolled, from the ``Authorization`` header: RFC 6750 answers (``401`` +
    ``WWW-Authenticate: Bearer`` without credentials, ``error="invalid_token"`` for a token we do not honour,
    ``403`` + ``error="insufficient_scope"`` naming the enrolment scope)."""
    auth = request.headers.get("authorization", "")
    scheme, _, credential = auth.partition(" ")
    if scheme.lower() != "bearer" or not credential or len(credential) > 8192:
        raise Problem(401, "invalid_token", "a bearer token is required", headers={"WWW-Authenticate": "Bearer"})
    invalid = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
    enroll_scope = srv.settings.agentauth_enroll_scope
    insufficient = {"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{enroll_scope}"'}
    admin_key = srv.settings.agentauth_admin_key
    if admin_key and hmac.compare_digest(credential.encode(), admin_key.encode()):
        owner_name = body.get("owner")
        user = await srv.ctx.store.get_user_by_name(owner_name) if isinstance(owner_name, str) else None
        if user is None:
            raise Problem(400, wire.E_INVALID_REQUEST, "owner must name an existing user")
        return user.subject
    from authgate.oauth.introspection import introspect

    info = await introspect(srv.ctx, credential)
    scopes = str(info.get("scope", "")).split()
    if not info.get("active") or info.get("token_type") != "Bearer" or not isinstance(info.get("sub"), str):
        raise Problem(401, "invalid_token", "the token is not valid", headers=invalid)
    if not _for_us(srv, info.get("aud")):
        raise Problem(401, "invalid_token", "the token is for another audience", headers=invalid,
                      debug=f"aud {info.get('aud')!r}")
    if enroll_scope not in scopes:
        raise Problem(403, "insufficient_scope", "the token lacks the enrolment scope", headers=insufficient)
    if "owner" in body:
        raise Problem(400, wire.E_INVALID_REQUEST, "owner is implied by the token")
    sub = str(info["sub"])
    if await srv.ctx.store.get_user(sub) is None:
        raise Problem(403, "insufficient_scope", "the token's subject is not a person", headers=insufficient)
    return sub


def _verify_proof(proof: Any, jwk: dict[str, Any], agent_id: str, old_jkt: str, now: int) -> None:
    if not isinstance(proof, str) or len(proof) > 4096:
        raise Problem(400, wire.E_INVALID_REQUEST, "proof is required")
    try:
        key = import_public_jwk(jwk)
        obj = jws.deserialize_compact(proof, key, algorithms=[str(jwk["alg"])])
        claims = json.loads(obj.payload)
    except (TokenProblem, JoseError, ValueError, TypeError) as exc:
        raise Problem(400, wire.E_INVALID_REQUEST, "proof does not verify with jwk") from exc
    if obj.headers().get("typ") != PROOF_TYP or not isinstance(claims, dict):
        raise Problem(400, wire.E_INVALID_REQUEST, "proof has the wrong type")
    iat = claims.get("iat")
    if claims.get("sub") != agent_id or claims.get("jkt") != old_jkt or type(iat) is not int \
            or abs(now - iat) > PROOF_MAX_AGE:
        raise Problem(400, wire.E_INVALID_REQUEST, "proof names another agent, key or time")


def routes(srv: AgentAuthServer) -> list[BaseRoute]:
    async def metadata(_: Request) -> Response:
        doc = {"issuer": srv.issuer, "jwks_uri": srv.issuer + wire.PATH_AP_JWKS, "name": "authgate agent provider",
               # authgate profile: refresh (optionally with a new key), signed by the current key
               "agent_token_endpoint": srv.issuer + wire.PATH_AGENT_TOKEN,
               "accept_signature_algs": list(wire.ACCEPTED_ALGS), "draft": srv.settings.agentauth_draft}
        return json_response(doc, no_store=False, headers={"Cache-Control": "public, max-age=300"})

    async def jwks(_: Request) -> Response:
        return json_response(await srv.keys.jwks(), no_store=False, headers={"Cache-Control": "public, max-age=60"})

    @endpoint
    async def enrol_endpoint(request: Request) -> Response:
        body = parse_json_object(await read_limited(request))
        if body is None:
            raise Problem(400, wire.E_INVALID_REQUEST, "body must be a JSON object")
        owner = await _enrolment_owner(srv, request, body)
        try:
            record, token, ttl = await enroll(srv, owner=owner, name=body.get("name"), jwk=body.get("jwk"))
        except EnrolmentError as exc:
            raise Problem(400, wire.E_INVALID_REQUEST, str(exc)) from exc
        return json_response({"agent_id": record.agent_id, "agent_token": token, "expires_in": ttl}, 201)

    @endpoint
    async def refresh_endpoint(request: Request) -> Response:
        raw = await read_limited(request)
        caller = await srv.verify(request, raw)
        store = srv.ctx.store.agentauth
        if caller.claims["iss"] != srv.issuer:
            raise Problem(403, wire.E_INVALID_REQUEST, "not an agent of this provider")
        agent = await store.get_agent(caller.claims["sub"])
        if agent is None or not agent.active or agent.jkt != caller.jkt:
            raise Problem(403, wire.E_REVOKED, "the agent or this key is no longer enrolled")
        body = parse_json_object(raw) if raw else {}
        if body is None:
            raise Problem(400, wire.E_INVALID_REQUEST, "body must be a JSON object")
        if "jwk" in body:
            try:
                bound = public_jwk(import_public_jwk(body["jwk"]))
            except TokenProblem as exc:
                raise Problem(400, wire.E_INVALID_REQUEST, f"jwk refused ({exc.code})") from exc
            _verify_proof(body.get("proof"), bound, agent.agent_id, caller.jkt, srv.now())
            if not await store.rekey_agent(agent.agent_id, old_jkt=caller.jkt, jkt=thumbprint(bound),
                                           public_jwk=bound):
                raise Problem(409, wire.E_INVALID_REQUEST, "the key was already replaced")
            await store.revoke_token(caller.claims["jti"])
            await srv.ctx.store.audit("agentauth.agent_rekeyed", subject=agent.owner, agent_id=agent.agent_id,
                                      old_jkt=caller.jkt, jkt=thumbprint(bound))
            agent = await store.get_agent(agent.agent_id)
            assert agent is not None
        token, ttl = await issue_agent_token(srv, agent)
        return json_response({"agent_id": agent.agent_id, "agent_token": token, "expires_in": ttl})

    return [
        Route(wire.WELL_KNOWN + wire.DWK_AGENT, metadata, methods=["GET"]),
        Route(wire.PATH_AP_JWKS, jwks, methods=["GET"]),
        Route(wire.PATH_AGENTS, enrol_endpoint, methods=["POST"]),
        Route(wire.PATH_AGENT_TOKEN, refresh_endpoint, methods=["POST"]),
    ]


def new_agent_name(prefix: str = "agent") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"
