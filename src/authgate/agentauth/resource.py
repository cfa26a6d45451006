"""Protecting an API with Agent Auth (-11 §3.2-§3.5, §4.4; authgate profile): a pure ASGI middleware.

    app = AgentAuthResource(api, resource_id="https://api.example", signer=Signer(kid, key),
                            trusted_person_servers=["https://ps.example"],
                            rules=[require("/notes/*", "agent"), require("/orders/*", "auth", "orders:write")],
                            scope_descriptions={"orders:write": "Place orders"},
                            scope_risk={"orders:write": "high"})

Per matched rule, in order: no signature at all → ``401 requirement=agent-token``; the signed request is verified
(:func:`authgate.agentauth.signing.verify_signed`: signature headers, covered components, ``created`` window,
``jwt`` scheme, the token in ``Signature-Key`` — ``typ`` first, issuer keys via its metadata, ``aud`` = this
resource for person and auth tokens, person/auth issuers only from ``trusted_person_servers`` — then the
signature with ``cnf.jwk``, then the replay cache for state-changing methods); every failure there is ``401`` +
``Signature-Error``. Then the rule's need: ``agent`` (any valid token), ``person`` (a person or auth token, else
``401 requirement=person-token``), ``auth`` with scopes (an auth token holding them; a person or auth token
without them gets ``401 requirement=auth-token; resource-token="…"`` — an ``aa-resource+jwt`` naming the full
set needed, bound to the signer's key thumbprint and to the presented token's ``jti``; an agent token alone gets
``requirement=person-token``, since a resource token needs a verified person first). Verified claims go to
``scope["state"]["agentauth"]``.

Risk (authgate profile extension, unknown to other implementations, which ignore it): ``scope_risk`` is the
resource owner's level per scope (``low`` / ``high``). It is published in the metadata next to the scope
descriptions and carried, for the scopes a challenge asks for, in the resource token (claim ``scope_risk``): our
person server takes the higher of it and its own level, so a resource can make a scope ask the person every time
but never lower what the person server's operator set.

Serves ``/.well-known/aauth-resource.json`` (``issuer``, ``jwks_uri``, ``scope_descriptions``, ``scope_risk`` when
set, ``access_mode``, ``signature_window``) and its JWKS. Issuer documents are fetched through the SSRF-guarded
:class:`authgate.net.Fetcher` unless ``fetch_json`` replaces it (agent tokens may name any provider;
``trusted_agent_providers`` narrows that). The ``@authority`` is checked against ``canonical_authorities`` (behind a
TLS-terminating proxy list the public host); ``X-Forwarded-*`` is never read. Imports nothing of the server.

Server-to-server routes (``require(path, "server")``): the caller is a server signing as itself
(``Signature-Key: sig=jwks_uri;id=…;dwk=…;kid=…``, -11 §3.6/§3.10) and must be listed in ``trusted_servers``
(``{"https://ps.example": ["aauth-person.json"]}``: identifier → the role documents it may sign through; profile
§17.7). Its keys come through the SSRF-guarded fetcher and the JWKS cache
(:class:`~authgate.agentauth.discovery.ServerKeys`); every failure is ``401`` + ``Signature-Error``
(``invalid_key`` for a server not admitted, ``issuer_missing`` / ``issuer_mismatch``, ``unknown_key`` for an
unknown ``kid`` or an unreachable server). Agent routes refuse ``jwks_uri`` and server routes refuse ``jwt``
(``unsupported_scheme``). The state is ``{"typ": "server", "server", "dwk", "kid", "jkt", "claims": {"iss",
"dwk"}}``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from starlette.types import ASGIApp, Receive, Scope, Send

from authgate.agentauth import wire
from authgate.agentauth.discovery import FetchJSON, IssuerKeys, ServerKeys, fetcher_json
from authgate.agentauth.errors import Problem, TokenProblem
from authgate.agentauth.signing import (
    Caller,
    ServerCaller,
    scope_headers,
    scope_target,
    verify_server_signed,
    verify_signed,
)
from authgate.agentauth.tokens import (
    PublicKey,
    Signer,
    base_claims,
    check_scope_risk,
    parse_amount,
    public_jwk,
    scopes_of,
)
from authgate.crypto.httpsig import SignatureError
from authgate.net.fetch import Fetcher
from authgate.ops.decisions import Tally, outcome_of

if TYPE_CHECKING:
    from authgate.agentauth.replay import ReplayCache
    from authgate.ops.metrics import Metrics

Need = Literal["agent", "person", "auth", "server"]
STATE_KEY = "agentauth"
JWKS_PATH = "/.well-known/aauth-resource-jwks.json"
MAX_BODY = 1024 * 1024


#: ``(scope, body) -> {"value": "12.50", "currency": "EUR"}`` or None: the amount a call commits to.
AmountOf = Callable[[Scope, bytes], Mapping[str, str] | None]


@dataclass(frozen=True)
class Rule:
    path: str
    need: Need
    scopes: tuple[str, ...] = ()
    methods: frozenset[str] | None = None
    #: For calls that spend: the auth token must name exactly this amount (authgate profile claim ``amount``),
    #: so the person server can ask for amounts above its threshold every time.
    amount: AmountOf | None = None

    def matches(self, method: str, path: str) -> bool:
        if self.methods is not None and method not in self.methods and not (method == "HEAD" and "GET" in self.methods):
            return False
        if self.path.endswith("/*"):
            base = self.path[:-2]
            return path == base or path.startswith(base + "/")
        return path == self.path


def require(path: str, need: Need, *scopes: str, methods: Iterable[str] | None = None,
            amount: AmountOf | None = None) -> Rule:
    return Rule(path, need, tuple(scopes), frozenset(m.upper() for m in methods) if methods else None, amount)


class AgentAuthResource:
    def __init__(self, app: ASGIApp, *, resource_id: str, signer: Signer, rules: Sequence[Rule],
                 fetch_json: FetchJSON | None = None, trusted_person_servers: Iterable[str] = (),
                 trusted_agent_providers: Iterable[str] | None = None,
                 scope_descriptions: Mapping[str, str] | None = None, canonical_authorities: Sequence[str] = (),
                 replay: ReplayCache | None = None, clock: Callable[[], float] = time.time, window: int = 60,
                 resource_token_ttl: int = 300, allow_http_loopback: bool = False,
                 is_revoked: Callable[[str, str], Any] | None = None, metrics: Metrics | None = None,
                 trusted_servers: Mapping[str, Iterable[str]] | None = None, fetcher: Fetcher | None = None,
                 scope_risk: Mapping[str, str] | None = None) -> None:
        self.app = app
        #: Where this middleware's decisions are counted (``authgate_access_decisions``); None: nowhere. Calls
        #: of :meth:`check` by another middleware (the policy middleware) are that middleware's to count.
        self.metrics = metrics
        self.resource_id = resource_id
        self.signer = signer
        self.rules = list(rules)
        self.trusted = frozenset(trusted_person_servers)
        self.scope_descriptions = dict(scope_descriptions or {})
        #: The resource owner's risk level per scope (authgate profile): ``low`` / ``high``; ValueError otherwise.
        self.scope_risk = check_scope_risk(scope_risk or {})
        self.canonical = tuple(canonical_authorities) or (resource_id.split("://", 1)[1],)
        self.replay = replay
        self.clock = clock
        self.window = window
        self.resource_token_ttl = min(resource_token_ttl, 300)
        self.allow_http = allow_http_loopback
        self.is_revoked = is_revoked
        #: None: agents of any provider (open federation, -11); else only these agent providers.
        self.agent_providers = frozenset(trusted_agent_providers) if trusted_agent_providers is not None else None
        guarded = fetcher or Fetcher(allow_loopback=allow_http_loopback)
        fetch = fetch_json or fetcher_json(guarded)
        self.keys = IssuerKeys(fetch, clock=clock)
        #: Servers that may call ``"server"`` routes signing as themselves (``jwks_uri`` scheme); their
        #: documents always come through the SSRF-guarded ``fetcher`` (never ``fetch_json``).
        self.servers = ServerKeys(trusted_servers or {}, fetcher=guarded, clock=clock,
                                  allow_http_loopback=allow_http_loopback)
        if any(r.need == "server" for r in self.rules) and not self.servers.trusted:
            raise ValueError("a server route needs trusted_servers")

    # -- documents ----------------------------------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        doc = {"issuer": self.resource_id, "jwks_uri": self.resource_id + JWKS_PATH, "access_mode": "auth-token",
               "scope_descriptions": self.scope_descriptions, "signature_window": self.window,
               # a request with a body must cover it (httpsig refuses an uncovered body)
               "additional_signature_components": ["content-digest"],
               "accept_signature_algs": list(wire.ACCEPTED_ALGS)}
        if self.scope_risk:  # authgate profile: what the person server will find in our resource tokens
            doc[wire.META_SCOPE_RISK] = dict(self.scope_risk)
        return doc

    def jwks(self) -> dict[str, Any]:
        return {"keys": [{**public_jwk(self.signer.key), "kid": self.signer.kid, "use": "sig"}]}

    # -- ASGI ---------------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"].upper()
        if path == wire.WELL_KNOWN + wire.DWK_RESOURCE:
            await _send_json(send, 200, self.metadata(), cache=True)
            return
        if path == JWKS_PATH:
            await _send_json(send, 200, self.jwks(), cache=True)
            return
        rule = next((r for r in self.rules if r.matches(method, path)), None)
        if rule is None:
            await self.app(scope, receive, send)  # not ours to decide
            return
        tally = Tally(self.metrics, scope)
        signed = any(k.lower() in (b"signature", b"signature-input", b"signature-key")
                     for k, _ in scope.get("headers", ()))
        mechanism = "agentauth" if signed else "none"
        body, more = await _read_body(receive)
        if more:
            tally.record(mechanism, "denied")
            await _send_problem(send, Problem(413, wire.E_INVALID_REQUEST, "request body too large"))
            return
        try:
            caller: Caller | ServerCaller = (await self.check_server(scope, method, body) if rule.need == "server"
                                             else await self.check(scope, method, body, rule))
        except SignatureError as exc:
            status, headers, payload = exc.render()
            tally.record(mechanism, outcome_of(status, headers))
            await _send(send, status, headers, payload)
            return
        except Problem as exc:
            status, headers, _ = exc.render()
            tally.record(mechanism, outcome_of(status, headers))
            await _send_problem(send, exc)
            return
        except BaseException:
            tally.record(mechanism, "error")
            raise
        tally.record("agentauth", "allowed")
        if isinstance(caller, ServerCaller):
            who = caller.server
            state = {"typ": caller.typ, "server": who.id, "dwk": who.dwk, "kid": who.kid, "jkt": caller.jkt,
                     "claims": {"iss": who.id, "dwk": who.dwk}}
        else:
            state = {"typ": caller.typ, "claims": caller.claims, "jkt": caller.jkt}
        scope.setdefault("state", {})[STATE_KEY] = state
        replayed = False

        async def replay_body() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay_body, send)

    async def _resolve(self, iss: str, dwk: str, kid: str | None) -> PublicKey | None:
        if dwk in (wire.DWK_PERSON, wire.DWK_ACCESS) and iss not in self.trusted:
            raise TokenProblem(wire.SIG_INVALID_JWT, "person/auth token from an issuer this resource does not trust")
        if dwk == wire.DWK_AGENT and self.agent_providers is not None and iss not in self.agent_providers:
            raise TokenProblem(wire.SIG_INVALID_JWT, "agent token from a provider this resource does not accept")
        return await self.keys.resolve(iss, dwk, kid)

    async def _revoked(self, iss: str, jti: str) -> bool:
        if self.is_revoked is None:
            return False
        return bool(await self.is_revoked(iss, jti))

    async def check_server(self, scope: Scope, method: str, body: bytes) -> ServerCaller:
        """A ``"server"`` route: a request signed by a trusted server as itself (``jwks_uri`` scheme)."""
        host, raw_path, query = scope_target(scope)
        return await verify_server_signed(
            method=method, authority=host, path=raw_path, query=query, headers=scope_headers(scope), body=body,
            now=int(self.clock()), servers=self.servers, replay=self.replay, window=self.window,
            canonical_authorities=self.canonical, scheme="https" if self.resource_id.startswith("https") else "http")

    async def check(self, scope: Scope, method: str, body: bytes, rule: Rule) -> Caller:
        if rule.need == "server":
            raise ValueError("server routes are checked by check_server")
        headers = scope_headers(scope)
        names = {k.lower() for k, _ in headers}
        if not names & {"signature", "signature-input", "signature-key"}:
            raise Problem(401, wire.REQ_AGENT_TOKEN, "a signed request with an agent token is required",
                          headers={wire.H_REQUIREMENT: wire.requirement_header(wire.REQ_AGENT_TOKEN)})
        host, raw_path, query = scope_target(scope)
        caller = await verify_signed(
            method=method, authority=host, path=raw_path, query=query, headers=headers, body=body,
            now=int(self.clock()), resolve=self._resolve, token_types=(wire.TYP_AGENT, wire.TYP_PERSON, wire.TYP_AUTH),
            expected_aud=self.resource_id, is_revoked=self._revoked, replay=self.replay, window=self.window,
            canonical_authorities=self.canonical, scheme="https" if self.resource_id.startswith("https") else "http",
            allow_http_loopback=self.allow_http)
        if rule.need == "agent":
            return caller
        if caller.typ == wire.TYP_AGENT:
            raise Problem(401, wire.REQ_PERSON_TOKEN, "a person token is required",
                          headers={wire.H_REQUIREMENT: wire.requirement_header(wire.REQ_PERSON_TOKEN)})
        if rule.need == "person":
            return caller
        amount: dict[str, str] | None = None
        if rule.amount is not None:
            try:
                found = rule.amount(scope, body)
                amount = {"value": found["value"], "currency": found["currency"]} if found else None
                parse_amount(amount)
            except (ValueError, KeyError, TypeError) as exc:
                raise Problem(400, wire.E_INVALID_REQUEST, "the amount of this call is malformed") from exc
        have = scopes_of(caller.claims) if caller.typ == wire.TYP_AUTH else frozenset()
        satisfied = set(rule.scopes) <= have and (rule.amount is None or caller.claims.get("amount") == amount)
        if satisfied and (rule.amount is None or await self._first_spend(caller)):
            return caller
        token = self.resource_token(caller, rule.scopes, amount)
        raise Problem(401, wire.E_INSUFFICIENT_SCOPE, "an auth token with more scope is required",
                      headers={wire.H_REQUIREMENT: wire.requirement_header(wire.REQ_AUTH_TOKEN, resource_token=token)})

    async def _first_spend(self, caller: Caller) -> bool:
        """An auth token that names an amount pays once: its ``jti`` is recorded in the replay cache until it
        expires, and a second call with it is challenged again (so the person server can ask again)."""
        if self.replay is None:
            return True
        key = hashlib.sha256(f"agentauth-spend\0{caller.claims['iss']}\0{caller.claims['jti']}".encode()).digest()
        ttl = max(1, int(caller.claims["exp"]) - int(self.clock()))
        return not await self.replay.seen_before(key, ttl)

    def resource_token(self, caller: Caller, scopes: Sequence[str], amount: Mapping[str, str] | None = None) -> str:
        """An ``aa-resource+jwt`` for the missing-scope challenge (-11 §7): ``aud`` = the person server that
        vouched for the presented token, bound to it (``presented_jti``, ``sub``) and to the signer's key."""
        claims = caller.claims
        ps = claims["iss"] if caller.typ == wire.TYP_PERSON else claims["ps"]
        now = int(self.clock())
        exp = min(now + self.resource_token_ttl, int(claims["exp"]))
        out = {**base_claims(self.resource_id, wire.DWK_RESOURCE, now, exp), "aud": ps, "ps": ps,
               "sub": claims["sub"], "presented_jti": claims["jti"], "agent_jkt": caller.jkt,
               "scope": " ".join(dict.fromkeys(scopes))}
        for name in ("mission_s256", "tenant"):
            if name in claims:
                out[name] = claims[name]
        if amount is not None:
            out["amount"] = dict(amount)
        risk = {s: self.scope_risk[s] for s in dict.fromkeys(scopes) if s in self.scope_risk}
        if risk:  # authgate profile: signed, so only this resource's owner can raise a scope's risk
            out[wire.CLAIM_SCOPE_RISK] = risk
        return self.signer.sign(wire.TYP_RESOURCE, out)


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return b"", True
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), False


async def _send(send: Send, status: int, headers: Mapping[str, str], body: bytes) -> None:
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def _send_json(send: Send, status: int, data: Mapping[str, Any], *, cache: bool = False) -> None:
    headers = {"Content-Type": "application/json",
               "Cache-Control": "public, max-age=300" if cache else "no-store"}
    await _send(send, status, headers, json.dumps(data).encode())


async def _send_problem(send: Send, problem: Problem) -> None:
    status, headers, body = problem.render()
    await _send(send, status, headers, body)
