"""Demo scenario: Agent Auth (draft-hardt-oauth-aauth-protocol-11).

An agent enrolled with our agent provider calls a journal API that accepts Agent Auth; it is challenged for a
person token, then for a missing scope; our person server asks the person out of band (the demo decides in
their place, and says so); the call succeeds with a token bound to the agent's key. A low-risk scope is then
granted from remembered consent without asking; a high-risk write asks again. Finally a captured signed
request is sent a second time and refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from typing import TYPE_CHECKING, Any

import httpx
from joserfc.jwk import OKPKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from authgate.demo.servers import free_port, serve

if TYPE_CHECKING:
    from authgate.demo.run import Demo

#: The person server's risk table for the demo journal API (also in the demo's settings).
RISK = {"journal:read": "low", "journal:write": "high"}


def journal_api(entries: list[dict[str, Any]]) -> Starlette:
    async def journal(request: Request) -> JSONResponse:
        who = request.scope["state"]["agentauth"]["claims"]["sub"]
        if request.method == "POST":
            entry = {"by": who[:8] + "…", "text": str((await request.json()).get("text", ""))[:200]}
            entries.append(entry)
            return JSONResponse(entry, status_code=201)
        return JSONResponse({"entries": entries})

    return Starlette(routes=[Route("/journal", journal, methods=["GET", "POST"])])


async def scenario_agent_auth(demo: Demo) -> None:
    from authgate.agent.agentauth import AgentAuth, AgentKey
    from authgate.agentauth.discovery import httpx_fetcher
    from authgate.agentauth.replay import DatabaseReplayCache
    from authgate.agentauth.resource import AgentAuthResource, require
    from authgate.agentauth.tokens import Signer
    from authgate.crypto.hashing import hash_password
    from authgate.store import User

    r = demo.report
    r.section("[6] Agent Auth — a signing agent, a missing-scope challenge, consent from its person "
              "(draft-hardt-oauth-aauth-protocol-11)")
    ctx = demo.ctx
    if await ctx.store.get_user_by_name("sam") is None:
        await ctx.store.add_user(User(subject="u_" + secrets.token_urlsafe(8), username="sam", created_at=ctx.now(),
                                      password_hash=hash_password(secrets.token_urlsafe(16))))
    sam = await ctx.store.get_user_by_name("sam")
    assert sam is not None
    port = demo.journal_port or free_port()
    resource = f"http://127.0.0.1:{port}"
    entries: list[dict[str, Any]] = []
    resource_key = OKPKey.generate_key("Ed25519", parameters={"alg": "Ed25519"}, private=True)
    async with httpx.AsyncClient(timeout=20) as plain:
        app = AgentAuthResource(
            journal_api(entries), resource_id=resource, signer=Signer(kid="journal-1", key=resource_key),
            fetch_json=httpx_fetcher(plain), trusted_person_servers=[demo.issuer],
            replay=DatabaseReplayCache(ctx.store), allow_http_loopback=True,
            scope_descriptions={"journal:read": "Read your journal", "journal:write": "Write in your journal"},
            rules=[require("/journal", "auth", "journal:read", methods=["GET"]),
                   require("/journal", "auth", "journal:read", "journal:write", methods=["POST"])])
        async with serve(app, port):
            key = AgentKey.generate()
            enrol = await plain.post(f"{demo.issuer}/agentauth/agents",
                                     json={"name": "journal-bot", "jwk": key.public_jwk, "owner": "sam"},
                                     headers={"Authorization": f"Bearer {ctx.settings.agentauth_admin_key}"})
            if not r.step(enrol.status_code == 201, f"agent enrolled with the agent provider by its owner sam: "
                          f"{enrol.json().get('agent_id')} (Ed25519 key, thumbprint {key.jkt[:12]}…; the private "
                          "key never left the agent)"):
                return
            decided: list[str] = []

            async def person_decides() -> None:
                """The person would get this on their phone; the demo decides in their place."""
                while True:
                    for request in await ctx.approvals.pending_for(sam.subject):
                        if request.kind == "agentauth_consent" and request.id not in decided:
                            decided.append(request.id)
                            details = request.details
                            await ctx.approvals.decide(request.id, True, by=sam.subject, channel="demo")
                            r.note(f"person server asked sam out of band: agent {details['agent']} wants "
                                   f"{' '.join(details['scopes'])} at {details['resource']} "
                                   f"(asked because: {details['why_asked']})")
                            r.note("AUTO-DECIDED BY THE DEMO in sam's place: approved")
                    await asyncio.sleep(0.1)

            def trace(response: httpx.Response) -> None:
                req = response.request
                extra = ""
                if response.headers.get("aauth-requirement"):
                    requirement = response.headers["aauth-requirement"]
                    extra = f"  [AAuth-Requirement: {requirement.split(';')[0]}" + (
                        "; resource-token=…]" if "resource-token" in requirement else "]")
                if response.headers.get("signature-error"):
                    extra += f"  [Signature-Error: {response.headers['signature-error']}]"
                r.note(f"{req.method:<4} {req.url.host}:{req.url.port}{req.url.path:<30} → {response.status_code}"
                       f"{extra}")

            captured: list[httpx.Request] = []

            async def on_response(response: httpx.Response) -> None:
                trace(response)

            async def on_request(request: httpx.Request) -> None:
                captured.append(request)

            decider = asyncio.create_task(person_decides())
            try:
                async with httpx.AsyncClient(timeout=30, event_hooks={"response": [on_response],
                                                                      "request": [on_request]}) as http:
                    auth = AgentAuth(key, enrol.json()["agent_token"], http=http, justification="keep sam's journal",
                                     timeout=30, prefer_wait=10)
                    first = await http.get(resource + "/journal", auth=auth)
                    token = auth._state.auth.get(resource)
                    claims = _claims(token.value) if token else {}
                    r.step(first.status_code == 200 and claims.get("scope") == "journal:read"
                           and claims.get("cnf", {}).get("jwk", {}).get("x") == key.public_jwk["x"],
                           f"GET /journal → {first.status_code} with an aa-auth+jwt for scope "
                           f"{claims.get('scope')!r}, bound to the agent's key (cnf.jwk), sub is pairwise")
                    asked = len(decided)
                    auth._state.auth.clear()  # drop the cached token: the next call asks the PS again
                    again = await http.get(resource + "/journal", auth=auth)
                    r.step(again.status_code == 200 and len(decided) == asked,
                           "a new auth token for the low-risk journal:read came from remembered consent: "
                           "nobody was asked")
                    wrote = await http.post(resource + "/journal", json={"text": "hello from the agent"}, auth=auth)
                    r.step(wrote.status_code == 201 and len(decided) == asked + 1,
                           f"POST /journal → {wrote.status_code}: journal:write is high-risk, so sam was asked "
                           "again (and the demo approved)")
            finally:
                decider.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await decider
            last = next(req for req in reversed(captured) if req.method == "POST" and req.url.port == port)
            replay = await plain.send(httpx.Request(last.method, last.url, headers=last.headers,
                                                    content=last.content))
            r.step(replay.status_code == 401 and replay.headers.get("signature-error") == "error=invalid_signature"
                   and len(entries) == 1,
                   f"the captured signed POST sent again → {replay.status_code} "
                   f"[Signature-Error: {replay.headers.get('signature-error')}]: replay refused, nothing written twice")
            events = [e["event"] for e in await ctx.store.audit_events(50) if e["event"].startswith("agentauth.")]
            r.step("agentauth.consent_granted" in events and "agentauth.consent_asked" in events,
                   f"audited: {', '.join(sorted(set(events)))}")


def _claims(token: str) -> dict[str, Any]:
    import base64

    payload = token.split(".")[1]
    value = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return value if isinstance(value, dict) else {}
