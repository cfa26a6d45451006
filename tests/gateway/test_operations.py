"""The standalone gateway's operations surface: health, readiness and metrics on paths of their own (refused
when a policy route covers one), request IDs forwarded upstream and echoed, and one access line per request
with no query string or credential."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from authgate.gateway import build_gateway, gateway_config_from_dict
from authgate.gateway.operations import Readiness
from authgate.ops import logs
from authgate.policy import PolicyError
from tests.ops.test_operations import sample

API = "https://api.test"
TOKEN = "metrics-" + "t" * 24


@dataclass
class Upstream:
    seen: list[dict[str, str]] = field(default_factory=list)
    status: int = 200

    async def any(self, request: Request) -> Response:
        self.seen.append(dict(request.headers))
        return JSONResponse({"path": request.url.path}, status_code=self.status)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/{p:path}", self.any, methods=["GET", "POST"])])


def config(**sections: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "gateway": {"upstream": "http://upstream.test", "public_url": API, "identity": "plain"},
        "routes": [{"path": "/open/*", "allow": [{"mechanism": "public"}]},
                   {"path": "/private", "allow": [{"mechanism": "oauth", "scopes": ["notes:read"]}]}],
        "oauth": {"issuer": "https://as.test"},
        "operations": {"metrics_token_env": "METRICS_TOKEN"},
    }
    for name, value in sections.items():
        if value is None:
            base.pop(name, None)
        else:
            base[name] = value
    return base


class KeysDown(httpx.AsyncBaseTransport):
    """The authorization server: unreachable until ``up``, then serving metadata and one key."""

    def __init__(self) -> None:
        self.up = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not self.up:
            raise httpx.ConnectError("refused", request=request)
        if request.url.path.endswith("oauth-authorization-server"):
            return httpx.Response(200, json={"issuer": "https://as.test", "jwks_uri": "https://as.test/jwks"})
        return httpx.Response(200, json={"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256",
                                                   "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                                                   "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]})


@dataclass
class Gw:
    http: httpx.AsyncClient
    upstream: Upstream
    keys: KeysDown


@pytest.fixture
async def gw() -> AsyncIterator[Gw]:
    upstream = Upstream()
    keys = KeysDown()
    keys.up = True
    cfg = gateway_config_from_dict(config(), source="gw.toml", env={"METRICS_TOKEN": TOKEN})
    app = build_gateway(cfg, upstream_transport=httpx.ASGITransport(app=upstream.app()), http_transport=keys)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=API) as http:
        yield Gw(http, upstream, keys)
    await app.aclose()


async def test_health_ready_and_metrics_on_their_own_paths(gw: Gw) -> None:
    health = await gw.http.get("/_authgate/health")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert health.headers["cache-control"] == "no-store"
    ready = await gw.http.get("/_authgate/ready")
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}
    await gw.http.get("/open/a")
    await gw.http.get("/private")
    assert gw.upstream.seen[-1].get("authorization") is None  # the probe and the public call: no credential
    metrics = await gw.http.get("/_authgate/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert sample(text, "authgate_access_decisions_total", mechanism="public", outcome="allowed") == 1
    assert sample(text, "authgate_access_decisions_total", mechanism="none", outcome="challenged") == 1
    # requests are labelled by the policy route that decided (bounded), never by the raw path
    assert sample(text, "authgate_http_requests_total", route="* /open/*", method="GET", status="200") == 1
    assert sample(text, "authgate_http_requests_total", route="* /private", method="GET", status="401") == 1
    assert sample(text, "authgate_http_requests_total", route="/_authgate/ready", method="GET", status="200") == 1
    assert "/open/a" not in text
    assert (await gw.http.post("/_authgate/health")).status_code == 405
    assert (await gw.http.head("/_authgate/health")).content == b""


async def test_the_gateways_own_documents_have_their_own_route_labels(caplog: pytest.LogCaptureFixture) -> None:
    """The protected resource metadata, /.well-known/aauth.json and the Agent Auth resource documents are the
    gateway's answers: each counted under its path, not under ``<unmatched>`` with requests no route covers."""
    upstream = Upstream()
    cfg = gateway_config_from_dict(config(agentauth={"trusted_person_servers": ["https://as.test"]},
                                          scope_descriptions={"notes:read": "Read your notes"}),
                                   source="gw.toml", env={"METRICS_TOKEN": TOKEN})
    app = build_gateway(cfg, upstream_transport=httpx.ASGITransport(app=upstream.app()))
    documents = ["/.well-known/oauth-protected-resource", "/.well-known/aauth.json",
                 "/.well-known/aauth-resource.json", "/.well-known/aauth-resource-jwks.json"]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=API) as http:
        with caplog.at_level(logging.INFO, logger="authgate.access"):
            for path in documents:
                assert (await http.get(path)).status_code == 200, path
            assert (await http.get("/.well-known/other")).status_code == 403
        text = (await http.get("/_authgate/metrics", headers={"Authorization": f"Bearer {TOKEN}"})).text
    await app.aclose()
    for path in documents:
        assert sample(text, "authgate_http_requests_total", route=path, method="GET", status="200") == 1, path
    assert sample(text, "authgate_http_requests_total", route="<unmatched>", method="GET", status="403") == 1
    assert sample(text, "authgate_http_requests_total", route="<unmatched>", method="GET", status="200") is None
    assert [getattr(r, "route", None) for r in caplog.records if r.name == "authgate.access"] == [
        *documents, "<unmatched>"]


async def test_metrics_need_the_bearer_token_when_one_is_configured(gw: Gw) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                    {"Authorization": f"Basic {TOKEN}"}, {"Authorization": f"Bearer {TOKEN}x"}):
        r = await gw.http.get("/_authgate/metrics", headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == 'Bearer realm="metrics"', headers
        assert "authgate_" not in r.text
    assert (await gw.http.get("/_authgate/metrics", headers={"Authorization": f"bearer {TOKEN}"})).status_code == 200


def test_only_a_hash_of_the_metrics_token_is_kept(tmp_path: Any) -> None:
    cfg = gateway_config_from_dict(config(), source="gw.toml", env={"METRICS_TOKEN": TOKEN})
    assert TOKEN not in repr(cfg) and TOKEN.encode() not in repr(vars(cfg.operations)).encode()
    (tmp_path / "token").write_text(TOKEN + "\n")
    from_file = gateway_config_from_dict(config(operations={"metrics_token_file": "token"}), source="gw.toml",
                                         env={}, base_dir=tmp_path)
    assert from_file.operations.metrics_token_sha256 == cfg.operations.metrics_token_sha256


async def test_readiness_names_what_is_unreachable() -> None:
    class Unreachable(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("refused", request=request)

    keys = KeysDown()
    x402 = {"facilitator_url": "https://fac.test"}
    cfg = gateway_config_from_dict(config(operations={}, x402=x402), source="gw.toml", env={})
    app = build_gateway(cfg, upstream_transport=Unreachable(), http_transport=keys)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=API) as http:
        down = await http.get("/_authgate/ready")
        alive = await http.get("/_authgate/health")
    await app.aclose()
    assert alive.status_code == 200
    assert down.status_code == 503 and down.json() == {"status": "not ready", "problems": [
        "upstream: ConnectError", "authorization server keys: unavailable", "facilitator: FacilitatorUnavailable"]}

    upstream = Upstream(status=503)
    keys.up = True
    cfg = gateway_config_from_dict(config(operations={"upstream_ready_path": "/healthz"}), source="gw.toml",
                                   env={})
    app = build_gateway(cfg, upstream_transport=httpx.ASGITransport(app=upstream.app()), http_transport=keys)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=API) as http:
        sick = await http.get("/_authgate/ready")
        upstream.status = 404  # answering, just not that path: the upstream is up
        fine = await http.get("/_authgate/ready")
    await app.aclose()
    assert sick.status_code == 503 and sick.json()["problems"] == ["upstream: answered 503"]
    assert fine.status_code == 200
    assert upstream.seen and all("x-authgate-mechanism" not in h for h in upstream.seen)


async def test_concurrent_readiness_probes_share_one_round_of_checks() -> None:
    calls = 0
    release = asyncio.Event()

    async def slow() -> str | None:
        nonlocal calls
        calls += 1
        await release.wait()
        return None

    readiness = Readiness({"upstream": slow}, timeout=30)
    waiting = [asyncio.create_task(readiness.problems()) for _ in range(20)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*waiting) == [[]] * 20
    assert calls == 1
    assert await readiness.problems() == [] and calls == 2  # a later probe checks again


async def test_request_ids_are_forwarded_upstream_and_echoed(gw: Gw) -> None:
    kept = await gw.http.get("/open/a", headers={"X-Request-ID": "lb-42.abc"})
    assert kept.headers["x-request-id"] == "lb-42.abc" and gw.upstream.seen[-1]["x-request-id"] == "lb-42.abc"
    replaced = await gw.http.get("/open/a", headers={"X-Request-ID": "bad id\twith spaces"})
    chosen = replaced.headers["x-request-id"]
    assert chosen != "bad id\twith spaces" and len(chosen) == 16
    assert gw.upstream.seen[-1]["x-request-id"] == chosen  # the upstream logs the ID we logged
    made = await gw.http.get("/open/a")
    assert made.headers["x-request-id"] == gw.upstream.seen[-1]["x-request-id"] != chosen
    refused = await gw.http.get("/private")
    assert len(refused.headers["x-request-id"]) == 16  # answers the gateway gives itself carry one too


async def test_one_access_line_per_request_without_query_or_credentials(gw: Gw,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="authgate.access"):
        await gw.http.get("/open/a?code=SECRET-CODE&access=1",
                          headers={"Authorization": "Bearer SECRET-TOKEN", "X-Request-ID": "r-1"})
        await gw.http.get("/private", headers={"Authorization": "Bearer SECRET-TOKEN", "X-Request-ID": "r-2"})
        await gw.http.get("/open/a%0Aforged 200 1ms", headers={"X-Request-ID": "r-3"})
    records = [r for r in caplog.records if r.name == "authgate.access"]
    assert len(records) == 3
    lines = [json.loads(logs.JsonFormatter().format(_stamped(r, rid)))
             for r, rid in zip(records, ("r-1", "r-2", "r-3"), strict=True)]
    first, second, third = lines
    assert (first["path"], first["route"], first["status"]) == ("/open/a", "* /open/*", 200)
    assert (first["mechanism"], first["outcome"], first["request_id"]) == ("public", "allowed", "r-1")
    assert first["msg"].startswith("GET /open/a 200 ") and first["method"] == "GET"
    assert (second["route"], second["status"], second["mechanism"], second["outcome"]) == \
        ("* /private", 401, "oauth", "challenged")
    # a newline in the path cannot start a forged line: escaped, and the request refused before any route
    assert third["path"] == "/open/a\\nforged 200 1ms" and "\n" not in third["msg"]
    assert (third["route"], third["status"], third["outcome"]) == ("<unmatched>", 400, "denied")
    everything = json.dumps(lines)
    assert "SECRET" not in everything and "code=" not in everything


def _stamped(record: logging.LogRecord, rid: str) -> logging.LogRecord:
    from authgate.ops import requestid

    token = requestid.current.set(rid)
    try:
        logs.RequestIdFilter().filter(record)
    finally:
        requestid.current.reset(token)
    return record


def test_a_route_that_covers_an_operations_path_is_refused() -> None:
    catch_all = [{"path": "/*", "allow": [{"mechanism": "public"}]}]
    cfg = gateway_config_from_dict(config(routes=catch_all, operations=None), source="gw.toml", env={})
    with pytest.raises(PolicyError, match=(
            r"^gw.toml: \[operations\]: health_path = '/_authgate/health' is also matched by routes\[0\] \(\* /\*\): "
            r"the gateway would answer it instead of the upstream; choose another path in \[operations\] \(or \"\" "
            r"to turn that endpoint off\)$")):
        build_gateway(cfg)
    ops_route = [{"path": "/status", "methods": ["POST"], "allow": [{"mechanism": "public"}]}]
    cfg = gateway_config_from_dict(config(routes=ops_route, operations={"health_path": "/status"}), source="gw.toml",
                                   env={})
    with pytest.raises(PolicyError, match=r"health_path = '/status' is also matched by routes\[0\] \(POST /status\)"):
        build_gateway(cfg)  # whatever the method: the path is the upstream's


async def test_operations_paths_can_be_moved_or_turned_off() -> None:
    upstream = Upstream()
    catch_all = [{"path": "/*", "allow": [{"mechanism": "public"}]}]
    ops = {"health_path": "", "ready_path": "", "metrics_path": ""}
    cfg = gateway_config_from_dict(config(routes=catch_all, operations=ops, oauth=None), source="gw.toml", env={})
    app = build_gateway(cfg, upstream_transport=httpx.ASGITransport(app=upstream.app()))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=API) as http:
        r = await http.get("/_authgate/health")
    await app.aclose()
    assert r.json() == {"path": "/_authgate/health"}  # the upstream's answer: the gateway keeps no path
    moved = {"health_path": "/gw/live", "ready_path": "/gw/ready", "metrics_path": "/gw/metrics"}
    cfg = gateway_config_from_dict(config(operations=moved, oauth=None, routes=[
        {"path": "/open/*", "allow": [{"mechanism": "public"}]}]), source="gw.toml", env={})
    app = build_gateway(cfg, upstream_transport=httpx.ASGITransport(app=upstream.app()))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=API) as http:
        assert (await http.get("/gw/live")).json() == {"status": "ok"}
        assert (await http.get("/gw/ready")).json() == {"status": "ready"}
        assert "authgate_http_requests_total" in (await http.get("/gw/metrics")).text  # no token: open
        assert (await http.get("/_authgate/health")).status_code == 403  # unmatched: denied, not ours
    await app.aclose()


@pytest.mark.parametrize(("operations", "message"), [
    ({"health": "/h"}, r"\[operations\]: unknown field 'health' \(expected health_path, metrics_path, "
                       r"metrics_token_env, metrics_token_file, ready_path, ready_timeout, upstream_ready_path\)"),
    ({"ready_path": "ready"}, r"\[operations\]: ready_path: must be an absolute path of at most 128 characters"),
    ({"ready_path": "/a/../b"}, r"\[operations\]: ready_path: must be an absolute path"),
    ({"metrics_path": "/m?x=1"}, r"\[operations\]: metrics_path: must be an absolute path"),
    ({"metrics_path": "/m/*"}, r"\[operations\]: metrics_path: must be an absolute path"),
    ({"metrics_path": "/" + "m" * 200}, r"\[operations\]: metrics_path: must be an absolute path"),
    ({"health_path": "/x", "ready_path": "/x"}, r"\[operations\]: health_path, ready_path and metrics_path must "
                                                r"differ"),
    ({"health_path": "/.well-known/health"}, r"\[operations\]: health_path: '/.well-known/health' is under "
                                             r"/.well-known/"),
    ({"ready_timeout": 0}, r"\[operations\]: ready_timeout: must be between 0.1 and 60"),
    ({"ready_timeout": True}, r"\[operations\]: ready_timeout: wrong type bool"),
    ({"metrics_token_env": "UNSET"}, r"\[operations\]: metrics_token_env: \$UNSET is not set"),
    ({"metrics_token_file": "/nonexistent/token"}, r"\[operations\]: metrics_token_file: /nonexistent/token cannot "
                                                   r"be read"),
    ("/metrics", r"\[operations\]: must be a table"),
])
def test_operations_section_errors(operations: Any, message: str) -> None:
    with pytest.raises(PolicyError, match="^gw.toml: " + message):
        gateway_config_from_dict(config(operations=operations), source="gw.toml", env={})
