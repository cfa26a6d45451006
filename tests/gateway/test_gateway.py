"""The gateway in process: header handling (RFC 9110 hop-by-hop, credentials, forged identity), identity
signatures, failures (502/504/413), the status rule of the combined challenge, AAuth tiers, and x402
settlement only after the upstream answered below 400 (upfront for streaming routes).

OAuth tokens here come from a table-driven verifier (JWT verification itself is covered by tests/unit and the
interop tests); payments from a recording facilitator (the chain is covered by tests/x402 and the interop test).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as StarletteRoute

from authgate.gateway import IdentityError, Proxy, gateway_config_from_dict, identity_headers, verify_identity
from authgate.policy import X402, AAuth, OAuth, Policy, PolicyError, PolicyMiddleware, Public, Route
from authgate.resource import BearerGuard, ProtectedResource
from authgate.resource.verifier import AccessClaims, TokenRejected, VerifierUnavailable
from authgate.x402 import wire

API = "https://api.test"
SECRET = b"s" * 32
PAYEE = "0x" + "ab" * 20
PAYER = "0x" + "cd" * 20
ASSET = "0x" + "ef" * 20
NETWORK = "eip155:84532"


class TableVerifier:
    """Tokens -> claims; ``"down"`` means the AS keys are unreachable."""

    audience = API

    def __init__(self, tokens: dict[str, dict[str, Any]]) -> None:
        self.tokens = tokens

    async def verify(self, token: str) -> AccessClaims:
        if token == "down":
            raise VerifierUnavailable("no keys")
        if token not in self.tokens:
            raise TokenRejected("bad_signature")
        c = {"iss": "https://as.test", "aud": API, "client_id": "bot", "jti": token, **self.tokens[token]}
        now = int(time.time())
        return AccessClaims(subject=c["sub"], client_id=c["client_id"], scopes=frozenset(c["scope"].split()),
                            audience=API, issuer=c["iss"], expires_at=now + 60, issued_at=now, token_id=token,
                            claims=MappingProxyType(c))


@dataclass
class RecordingFacilitator:
    valid: bool = True
    verified: list[str] = field(default_factory=list)
    settled: list[str] = field(default_factory=list)

    async def verify(self, payload: wire.PaymentPayload, requirements: wire.PaymentRequirements) -> wire.VerifyResponse:
        self.verified.append(requirements.amount)
        return wire.VerifyResponse(is_valid=self.valid, payer=PAYER,
                                   invalid_reason=None if self.valid else "invalid_exact_evm_payload_signature")

    async def settle(self, payload: wire.PaymentPayload, requirements: wire.PaymentRequirements) -> wire.SettleResponse:
        self.settled.append(requirements.amount)
        return wire.SettleResponse(success=True, transaction="0x" + "11" * 32, network=requirements.network,
                                   payer=PAYER)


@dataclass
class Upstream:
    seen: list[Request] = field(default_factory=list)
    status: int = 200

    async def echo(self, request: Request) -> Response:
        self.seen.append(request)
        await request.body()
        return JSONResponse({"ok": True}, status_code=self.status,
                            headers={"Keep-Alive": "timeout=5", "Connection": "x-secret", "X-Secret": "1",
                                     "X-Kept": "yes"})

    def app(self) -> Starlette:
        return Starlette(routes=[StarletteRoute("/{path:path}", self.echo, methods=["GET", "POST", "HEAD"])])


TOKENS = {"reader": {"sub": "alice", "scope": "weather:read"},
          "nobody": {"sub": "bob", "scope": "other"},
          "pii": {"sub": "cust-1", "scope": "orders:read", "amr": ["pii"], "act": {"sub": "voice-agent"}},
          "oob": {"sub": "cust-1", "scope": "orders:read", "amr": ["pii", "oob"], "act": {"sub": "voice-agent"}},
          "plain": {"sub": "cust-1", "scope": "orders:read"}}


def offer(flow: str = "authorization") -> X402:
    return X402("10000", PAYEE, NETWORK, asset=ASSET, asset_name="Test", asset_version="1", flow=flow)  # type: ignore[arg-type]


POLICY = Policy((
    Route("/health", (Public(),)),
    Route("/weather", (OAuth(("weather:read",)), offer())),
    Route("/paid", (offer(), OAuth(("weather:read",)))),
    Route("/stream", (offer("upfront"),), stream=True),
    Route("/orders/low", (AAuth("pii", ("orders:read",)),)),
    Route("/orders/high", (AAuth("oob", ("orders:read",)),)),
))


@dataclass
class Gateway:
    http: httpx.AsyncClient
    upstream: Upstream
    facilitator: RecordingFacilitator
    proxy: Proxy


@pytest.fixture
async def gw() -> AsyncIterator[Gateway]:
    upstream = Upstream()
    proxy = Proxy("http://upstream.test", identity_secret=SECRET, transport=httpx.ASGITransport(app=upstream.app()))
    resource = ProtectedResource(resource=API, authorization_servers=["https://as.test"])
    facilitator = RecordingFacilitator()
    app = PolicyMiddleware(proxy, POLICY, bearer=BearerGuard(TableVerifier(TOKENS), resource),
                           facilitator=facilitator, base_url=API)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("10.0.0.9", 4000)),
                                 base_url=API) as http:
        yield Gateway(http, upstream, facilitator, proxy)
    await proxy.aclose()


def payment(requirements: wire.PaymentRequirements) -> str:
    return wire.PaymentPayload(x402_version=2, accepted=requirements, payload={
        "signature": "0x" + "00" * 65, "authorization": {"from": PAYER, "to": PAYEE, "value": requirements.amount,
                                                         "validAfter": "0", "validBefore": "9999999999",
                                                         "nonce": "0x" + "22" * 32}}).to_header()


def offered(response: httpx.Response) -> wire.PaymentRequirements:
    return wire.PaymentRequired.from_header(response.headers["payment-required"]).accepts[0]


async def test_credentials_hop_by_hop_and_forged_identity_never_reach_the_upstream(gw: Gateway) -> None:
    r = await gw.http.get("/weather?x=1", headers={
        "Authorization": "Bearer reader", "Connection": "keep-alive, x-hop", "X-Hop": "1", "Keep-Alive": "5",
        "TE": "trailers", "Upgrade": "h2c", "Proxy-Authorization": "Basic eA==", "Signature": "sig=:AA==:",
        "Signature-Input": "sig=()", "Signature-Key": "sig=jwt", "Content-Digest": "sha-256=:AA==:",
        "PAYMENT-SIGNATURE": "e30=", "X-PAYMENT": "e30=", "AAuth-Mission": "m", "X-Authgate-Subject": "root",
        "x-authgate-signature": "v1=forged", "X-Forwarded-Proto": "https", "X-Forwarded-For": "1.2.3.4",
        "Cookie": "a=b", "Accept": "application/json"})
    assert r.status_code == 200, r.text
    seen = gw.upstream.seen[-1].headers
    names = set(seen.keys())
    for name in ("authorization", "connection", "x-hop", "keep-alive", "te", "upgrade", "proxy-authorization",
                 "signature", "signature-input", "signature-key", "content-digest", "payment-signature",
                 "x-payment", "aauth-mission"):
        assert name not in names, name
    assert seen.getlist("x-authgate-subject") == ["alice"]
    assert seen["accept"] == "application/json" and "cookie" not in seen  # a cookie is a credential too
    assert seen["via"] == "1.1 authgate" and seen["host"] == "upstream.test"
    assert seen["x-forwarded-for"] == "1.2.3.4, 10.0.0.9" and seen.getlist("x-forwarded-proto") == ["https"]
    assert seen["x-forwarded-host"] == "api.test"
    who = verify_identity(seen.items(), method="GET", target="/weather?x=1", secret=SECRET)
    assert who == {"mechanism": "oauth", "subject": "alice", "agent": "bot", "scopes": ("weather:read",)}
    # the upstream's own hop-by-hop headers stay on its hop
    assert "x-secret" not in r.headers and "keep-alive" not in r.headers and r.headers["x-kept"] == "yes"
    assert r.headers["via"] == "1.1 authgate"


async def test_cookies_are_stripped_by_default_and_forwarded_only_on_opt_out() -> None:
    upstream = Upstream()
    stripping = Proxy("http://upstream.test", identity="plain", transport=httpx.ASGITransport(app=upstream.app()))
    forwarding = Proxy("http://upstream.test", identity="plain", strip_cookies=False,
                       transport=httpx.ASGITransport(app=upstream.app()))
    for proxy in (stripping, forwarding):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=proxy), base_url=API) as http:
            await http.get("/x", headers={"Cookie": "session=1"})
        await proxy.aclose()
    stripped, forwarded = upstream.seen[0].headers, upstream.seen[1].headers
    assert "cookie" not in stripped and forwarded["cookie"] == "session=1"
    assert stripped["x-authgate-mechanism"] == "public" and "x-authgate-signature" not in stripped  # plain mode


def test_the_gateway_file_strips_cookies_unless_it_opts_out() -> None:
    base: dict[str, Any] = {"gateway": {"upstream": "http://127.0.0.1:8080", "public_url": API, "identity": "plain"},
                            "routes": [{"path": "/a", "allow": [{"mechanism": "public"}]}]}
    assert gateway_config_from_dict(base).strip_cookies is True
    opted_out = gateway_config_from_dict({**base, "gateway": {**base["gateway"], "strip_cookies": False}})
    assert opted_out.strip_cookies is False
    with pytest.raises(PolicyError, match=r"\[gateway\]: strip_cookies: wrong type str"):
        gateway_config_from_dict({**base, "gateway": {**base["gateway"], "strip_cookies": "no"}})


def test_identity_signature_binds_every_field_the_request_and_the_time() -> None:
    fields = {"mechanism": "oauth", "subject": "zoë ünïcode", "scopes": ("a", "b")}
    headers = identity_headers(fields, method="GET", target="/a?b=1", secret=SECRET, now=1000)
    assert verify_identity(headers, method="GET", target="/a?b=1", secret=SECRET, now=1010) == \
        {"mechanism": "oauth", "subject": "zoë ünïcode", "scopes": ("a", "b")}
    assert all(v.isascii() for _, v in headers)
    for tampered, kwargs, message in [
        ([(k, "mallory" if k == "X-Authgate-Subject" else v) for k, v in headers], {}, "does not verify"),
        ([*headers, ("X-Authgate-Tier", "oob")], {}, "does not verify"),
        ([(k, v) for k, v in headers if k != "X-Authgate-Scopes"], {}, "does not verify"),
        (headers, {"method": "POST"}, "does not verify"),
        (headers, {"target": "/a?b=2"}, "does not verify"),
        (headers, {"secret": b"t" * 32}, "does not verify"),
        (headers, {"now": 1100}, "stale"),
        ([(k, v) for k, v in headers if k != "X-Authgate-Signature"], {}, "no signed identity"),
        ([*headers, ("X-Authgate-Role", "admin")], {}, "unexpected identity header x-authgate-role"),
    ]:
        args: dict[str, Any] = {"method": "GET", "target": "/a?b=1", "secret": SECRET, "now": 1010, **kwargs}
        with pytest.raises(IdentityError, match=message):
            verify_identity(tampered, **args)


async def test_upstream_failures_are_502_and_504_json() -> None:
    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    for transport, status, error in [
        (httpx.MockTransport(timeout), 504, "upstream_timeout"),
        (None, 502, "upstream_unavailable"),  # nothing listens on port 9 of loopback
    ]:
        proxy = Proxy("http://127.0.0.1:9", identity="plain", transport=transport)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=proxy), base_url=API) as http:
            r = await http.get("/x")
        await proxy.aclose()
        assert r.status_code == status and r.json()["error"] == error


async def test_request_body_limit() -> None:
    upstream = Upstream()
    proxy = Proxy("http://upstream.test", identity="plain", max_body=10,
                  transport=httpx.ASGITransport(app=upstream.app()))

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"abcd"

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=proxy), base_url=API) as http:
        declared = await http.post("/declared", content=b"x" * 11)
        streamed = await http.post("/streamed", content=chunks())
        fits = await http.post("/fits", content=b"x" * 10)
    await proxy.aclose()
    assert declared.status_code == 413 and streamed.status_code == 413 and fits.status_code == 200
    # a declared length over the limit never leaves the gateway; a streamed body is cut off when it crosses it
    assert "/declared" not in [r.url.path for r in upstream.seen]


async def test_status_rule_of_the_combined_challenge(gw: Gateway) -> None:
    oauth_first = await gw.http.get("/weather")
    assert oauth_first.status_code == 401
    assert oauth_first.headers["www-authenticate"] == (
        f'Bearer resource_metadata="{API}/.well-known/oauth-protected-resource", scope="weather:read"')
    assert offered(oauth_first).amount == "10000"
    pay_first = await gw.http.get("/paid")
    assert pay_first.status_code == 402 and pay_first.json()["accepted"] == ["x402", "oauth"]
    assert pay_first.headers["www-authenticate"].startswith("Bearer resource_metadata=")
    # a presented credential that fails decides the status, and the other ways in are still advertised
    scope = await gw.http.get("/paid", headers={"Authorization": "Bearer nobody"})
    assert scope.status_code == 403 and 'error="insufficient_scope"' in scope.headers["www-authenticate"]
    assert "payment-required" in scope.headers
    bad = await gw.http.get("/weather", headers={"Authorization": "Bearer forged"})
    assert bad.status_code == 401 and 'error="invalid_token"' in bad.headers["www-authenticate"]
    malformed = await gw.http.get("/weather", headers={"Authorization": "Bearer a b"})
    assert malformed.status_code == 400
    down = await gw.http.get("/weather", headers={"Authorization": "Bearer down"})
    assert down.status_code == 503 and down.headers["retry-after"] == "5"
    head = await gw.http.head("/weather")
    assert head.status_code == 401 and head.content == b""
    assert gw.upstream.seen == []


async def test_unmatched_routes_and_public_routes(gw: Gateway) -> None:
    assert (await gw.http.get("/health")).status_code == 200
    denied = await gw.http.get("/admin")
    assert denied.status_code == 403 and denied.json()["error"] == "access_denied"
    metadata = (await gw.http.get("/.well-known/oauth-protected-resource")).json()
    assert metadata["resource"] == API and metadata["authorization_servers"] == ["https://as.test"]


async def test_aauth_tiers(gw: Gateway) -> None:
    assert (await gw.http.get("/orders/low", headers={"Authorization": "Bearer pii"})).status_code == 200
    who = verify_identity(gw.upstream.seen[-1].headers.items(), method="GET", target="/orders/low", secret=SECRET)
    assert who == {"mechanism": "aauth", "subject": "cust-1", "agent": "voice-agent", "scopes": ("orders:read",),
                   "tier": "pii"}
    assert (await gw.http.get("/orders/high", headers={"Authorization": "Bearer oob"})).status_code == 200
    low = await gw.http.get("/orders/high", headers={"Authorization": "Bearer pii"})
    assert low.status_code == 401
    assert 'error="insufficient_user_authentication"' in low.headers["www-authenticate"]
    not_aauth = await gw.http.get("/orders/low", headers={"Authorization": "Bearer plain"})
    assert not_aauth.status_code == 401 and "insufficient_user_authentication" in not_aauth.text


async def test_payment_settles_only_after_the_upstream_answered_below_400(gw: Gateway) -> None:
    requirements = offered(await gw.http.get("/weather"))
    gw.upstream.status = 500
    failed = await gw.http.get("/weather", headers={"PAYMENT-SIGNATURE": payment(requirements)})
    assert failed.status_code == 500 and "payment-response" not in failed.headers
    assert gw.facilitator.verified == ["10000"] and gw.facilitator.settled == []
    gw.upstream.status = 200
    ok = await gw.http.get("/weather", headers={"PAYMENT-SIGNATURE": payment(requirements)})
    assert ok.status_code == 200 and gw.facilitator.settled == ["10000"]
    assert wire.SettleResponse.from_header(ok.headers["payment-response"]).success
    who = verify_identity(gw.upstream.seen[-1].headers.items(), method="GET", target="/weather", secret=SECRET)
    assert who == {"mechanism": "x402", "payer": PAYER, "network": NETWORK, "amount": "10000", "asset": ASSET}
    assert "payment-signature" not in gw.upstream.seen[-1].headers


async def test_a_refused_payment_gets_the_402_with_the_other_challenges(gw: Gateway) -> None:
    requirements = offered(await gw.http.get("/weather"))
    gw.facilitator.valid = False
    r = await gw.http.get("/weather", headers={"PAYMENT-SIGNATURE": payment(requirements)})
    assert r.status_code == 402
    assert wire.PaymentRequired.from_header(r.headers["payment-required"]).error == \
        "invalid_exact_evm_payload_signature"
    assert r.headers["www-authenticate"].startswith("Bearer resource_metadata=")
    assert gw.upstream.seen == [] and gw.facilitator.settled == []


async def test_streaming_routes_settle_upfront_and_forward_the_transaction(gw: Gateway) -> None:
    requirements = offered(await gw.http.get("/stream"))
    assert requirements.extra.get("paymentFlow") == "upfront"
    r = await gw.http.get("/stream", headers={"PAYMENT-SIGNATURE": payment(requirements)})
    assert r.status_code == 200 and gw.facilitator.settled == ["10000"]
    who = verify_identity(gw.upstream.seen[-1].headers.items(), method="GET", target="/stream", secret=SECRET)
    assert who["transaction"] == "0x" + "11" * 32


def test_gateway_file_errors() -> None:
    base: dict[str, Any] = {"gateway": {"upstream": "http://127.0.0.1:8080", "public_url": API,
                                        "identity_secret_env": "S"},
                            "routes": [{"path": "/a", "allow": [{"mechanism": "oauth"}]}]}
    env = {"S": "x" * 32}
    with pytest.raises(PolicyError, match=r"^gw.toml: routes use oauth but there is no \[oauth\] section$"):
        gateway_config_from_dict(base, source="gw.toml", env=env)
    with pytest.raises(PolicyError, match=r"^gw.toml: \[gateway\]: the identity secret must be at least 32 bytes$"):
        gateway_config_from_dict(base, source="gw.toml", env={"S": "short"})
    with pytest.raises(PolicyError, match=r"^gw.toml: \[gateway\]: identity_secret_env: \$S is not set$"):
        gateway_config_from_dict(base, source="gw.toml", env={})
    with pytest.raises(PolicyError, match=r"^gw.toml: \[oauth\]: unknown field 'isuer' \(expected issuer, "):
        gateway_config_from_dict({**base, "oauth": {"isuer": "x"}}, source="gw.toml", env=env)
    with pytest.raises(PolicyError, match=r"^gw.toml: \[gateway\]: upstream: required, an absolute http\(s\) URL$"):
        gateway_config_from_dict({**base, "gateway": {"public_url": API}}, source="gw.toml", env=env)
    config = gateway_config_from_dict({**base, "oauth": {"issuer": "https://as.test"}}, source="gw.toml", env=env)
    assert config.identity_secret == b"x" * 32 and "x" * 32 not in repr(config)


TOP_LEVEL = ("agentauth, gateway, oauth, operations, routes, scope_descriptions, token_exchange, trust, unmatched, "
             "x402")


@pytest.mark.parametrize(("change", "message"), [
    # a misspelled section: every top-level name the gateway accepts is listed (once only the policy's three)
    ({"oauht": {"issuer": "https://as.test"}}, f"unknown section 'oauht' (did you mean 'oauth'? expected {TOP_LEVEL})"),
    # named before the [gateway] it replaces is found missing (once only "[gateway]: required")
    ({"gateway": None, "gatway": {"upstream": "http://127.0.0.1:8080", "public_url": API}},
     f"unknown section 'gatway' (did you mean 'gateway'? expected {TOP_LEVEL})"),
    ({"routes": None, "route": [{"path": "/a", "allow": [{"mechanism": "public"}]}]},
     f"unknown section 'route' (did you mean 'routes'? expected {TOP_LEVEL})"),
    ({"upstream": "http://127.0.0.1:8080"}, f"unknown field 'upstream' (expected {TOP_LEVEL})"),
    ({"unmached": "deny"}, f"unknown field 'unmached' (did you mean 'unmatched'? expected {TOP_LEVEL})"),
])
def test_unknown_top_level_names_are_named_with_every_accepted_one(change: dict[str, Any], message: str) -> None:
    data: dict[str, Any] = {"gateway": {"upstream": "http://127.0.0.1:8080", "public_url": API, "identity": "plain"},
                            "routes": [{"path": "/a", "allow": [{"mechanism": "public"}]}]}
    for name, value in change.items():
        if value is None:
            del data[name]
        else:
            data[name] = value
    with pytest.raises(PolicyError) as caught:
        gateway_config_from_dict(data, source="gw.toml", env={})
    assert str(caught.value) == f"gw.toml: {message}"


@pytest.mark.parametrize("raw", [b"/health/../weather", b"/health/./x", b"//weather", b"/health%2F..%2Fweather",
                                 b"/health/%2e%2e/weather", b"/health\\..\\weather", b"/health%5C..", b"/health%00"])
async def test_paths_another_server_could_read_differently_are_refused(gw: Gateway, raw: bytes) -> None:
    """``/health`` is public and ``/weather`` is not: no spelling of a path may be judged as one and served as
    the other upstream."""
    from urllib.parse import unquote_to_bytes

    policy_app = PolicyMiddleware(gw.proxy, Policy((Route("/health/*", (Public(),)), Route("/*", (Public(),)))))
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": unquote_to_bytes(raw).decode("latin-1"), "raw_path": raw,
             "query_string": b"", "headers": [(b"host", b"api.test")], "scheme": "https"}
    await policy_app(scope, receive, send)
    assert sent[0]["status"] == 400 and b"normal form" in sent[1]["body"]
    assert gw.upstream.seen == []


async def test_method_override_headers_are_not_forwarded(gw: Gateway) -> None:
    r = await gw.http.get("/health", headers={"X-HTTP-Method-Override": "DELETE", "X-HTTP-Method": "DELETE",
                                              "X-Method-Override": "DELETE"})
    assert r.status_code == 200
    names = set(gw.upstream.seen[-1].headers.keys())
    assert not names & {"x-http-method-override", "x-http-method", "x-method-override"}


async def test_the_default_pool_over_real_sockets_bodies_head_and_timeout() -> None:
    """The production path (httpcore pool, no injected transport): request bodies by length and chunked, HEAD,
    query strings, a slow upstream (504) — against uvicorn on loopback."""
    import asyncio

    from tests.servers import free_port, serve

    async def echo(request: Request) -> Response:
        if request.url.path == "/slow":
            await asyncio.sleep(2)
        body = await request.body()
        return JSONResponse({"body": body.decode(), "query": request.url.query,
                             "te": request.headers.get("transfer-encoding"),
                             "length": request.headers.get("content-length")})

    port = free_port()
    upstream = Starlette(routes=[StarletteRoute("/{p:path}", echo, methods=["GET", "POST", "HEAD"])])
    proxy = Proxy(f"http://127.0.0.1:{port}", identity="plain", read_timeout=0.5)

    async def chunks() -> AsyncIterator[bytes]:
        for part in (b"ab", b"cd"):
            yield part

    async with serve(upstream, port), httpx.AsyncClient(transport=httpx.ASGITransport(app=proxy),
                                                         base_url=API) as http:
        sized = await http.post("/echo?a=1&b=%20", content=b"hello")
        chunked = await http.post("/echo", content=chunks())
        head = await http.head("/echo")
        slow = await http.get("/slow")
    await proxy.aclose()
    assert sized.json() == {"body": "hello", "query": "a=1&b=%20", "te": None, "length": "5"}
    assert chunked.json() == {"body": "abcd", "query": "", "te": "chunked", "length": None}
    assert head.status_code == 200 and head.content == b""
    assert slow.status_code == 504 and slow.json()["error"] == "upstream_timeout"


async def test_first_satisfied_alternative_wins_so_a_token_holder_is_not_charged(gw: Gateway) -> None:
    requirements = offered(await gw.http.get("/weather"))
    both = {"Authorization": "Bearer reader", "PAYMENT-SIGNATURE": payment(requirements)}
    r = await gw.http.get("/weather", headers=both)  # oauth comes first on /weather
    assert r.status_code == 200 and "payment-response" not in r.headers
    assert gw.facilitator.verified == [] and gw.facilitator.settled == []
    paid = await gw.http.get("/paid", headers=both)  # x402 comes first on /paid: the payment decides
    assert paid.status_code == 200 and gw.facilitator.settled == ["10000"]
    who = verify_identity(gw.upstream.seen[-1].headers.items(), method="GET", target="/paid", secret=SECRET)
    assert who["mechanism"] == "x402"


def test_the_agent_auth_signing_key_file(tmp_path: Any) -> None:
    import json

    from joserfc.jwk import OKPKey

    from authgate.gateway import build_gateway

    key = OKPKey.generate_key("Ed25519", parameters={"kid": "res-1"}, private=True)
    base: dict[str, Any] = {"gateway": {"upstream": "http://127.0.0.1:1", "public_url": API, "identity": "plain"},
                            "agentauth": {"signing_key_file": "key.json"},
                            "routes": [{"path": "/a", "allow": [{"mechanism": "agentauth", "need": "agent"}]}]}
    (tmp_path / "key.json").write_text(json.dumps(key.as_dict(private=True)))
    app = build_gateway(gateway_config_from_dict(base, source="gw.toml", base_dir=tmp_path))
    assert app.app.agentauth.signer.kid == "res-1"  # type: ignore[attr-defined]
    (tmp_path / "key.json").write_text(json.dumps(key.as_dict(private=False)))
    with pytest.raises(PolicyError, match=r"^gw.toml: \[agentauth\]: signing_key_file: .*key.json is not a private "
                                          r"Ed25519 JWK \(ValueError\)$"):
        build_gateway(gateway_config_from_dict(base, source="gw.toml", base_dir=tmp_path))


@pytest.mark.parametrize(("content", "message"), [
    (None, "not found"),  # once "is not a private Ed25519 JWK (FileNotFoundError)"
    ("{}", "is not a private Ed25519 JWK (KeyParameterError)"),  # once a traceback: joserfc's own error
])
def test_a_missing_or_malformed_signing_key_file_says_which(tmp_path: Any, content: str | None,
                                                             message: str) -> None:
    from authgate.gateway import build_gateway

    base: dict[str, Any] = {"gateway": {"upstream": "http://127.0.0.1:1", "public_url": API, "identity": "plain"},
                            "agentauth": {"signing_key_file": "resource-key.json"},
                            "routes": [{"path": "/a", "allow": [{"mechanism": "agentauth", "need": "agent"}]}]}
    if content is not None:
        (tmp_path / "resource-key.json").write_text(content)
    with pytest.raises(PolicyError) as caught:
        build_gateway(gateway_config_from_dict(base, source="gw.toml", base_dir=tmp_path))
    assert str(caught.value) == f"gw.toml: [agentauth]: signing_key_file: {tmp_path / 'resource-key.json'} {message}"


async def test_request_framing_is_never_ambiguous_upstream() -> None:
    upstream = Upstream()
    proxy = Proxy("http://upstream.test", identity="plain", transport=httpx.ASGITransport(app=upstream.app()))
    sent: list[dict[str, Any]] = []

    async def run(headers: list[tuple[bytes, bytes]], body: bytes) -> int:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        sent.clear()
        await proxy({"type": "http", "method": "POST", "path": "/x", "raw_path": b"/x", "query_string": b"",
                     "headers": [(b"host", b"api.test"), *headers], "scheme": "https"}, receive, send)
        return int(sent[0]["status"])

    assert await run([(b"content-length", b"3"), (b"content-length", b"30")], b"abc") == 400
    assert await run([(b"transfer-encoding", b"chunked"), (b"content-length", b"100")], b"abc") == 200
    await proxy.aclose()
    seen = upstream.seen[-1].headers
    assert "content-length" not in seen or seen["content-length"] == "3"
