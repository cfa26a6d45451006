"""Reloading the gateway in process (``GatewayApp.reload``): new requests get the new configuration, a request in
flight finishes on the one it started with (whose clients close only then), an invalid file changes nothing,
and what must outlive a configuration — the replay cache, the resource-token key, the paywall state — does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from joserfc.jwk import OKPKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from authgate.agentauth import wire
from authgate.agentauth.tokens import Signer, base_claims, public_jwk
from authgate.crypto.httpsig import sign_request
from authgate.crypto.jwk import public_jwk as crypto_public_jwk
from authgate.crypto.signature_key import jwt_scheme
from authgate.gateway import build_gateway, gateway_config_from_dict, load_gateway_config
from authgate.policy import PolicyError
from tests.ops.test_operations import sample
from tests.servers import free_port, serve

API = "https://api.test"

FILE = """
[gateway]
upstream = "http://upstream.test"
public_url = "https://api.test"
identity = "plain"

[[routes]]
path = "/events"
stream = true
  [[routes.allow]]
  mechanism = "public"

[[routes]]
path = "/{open}"
  [[routes.allow]]
  mechanism = "public"
"""


class Upstream:
    """``/events`` sends one event, waits for ``release``, sends a second and ends; anything else echoes."""

    def __init__(self, name: str = "v1") -> None:
        self.name = name
        self.release = asyncio.Event()

    async def events(self, _: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            yield f"data: {self.name}-1\n\n".encode()
            await self.release.wait()
            yield f"data: {self.name}-2\n\n".encode()

        return StreamingResponse(body(), media_type="text/event-stream")

    async def echo(self, request: Request) -> Response:
        return JSONResponse({"upstream": self.name, "path": request.url.path})

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/events", self.events), Route("/{p:path}", self.echo, methods=["GET", "POST"])])


class Switch(httpx.AsyncBaseTransport):
    """The network: ``upstream.test`` is whichever upstream app is current (a reload may point elsewhere)."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await httpx.ASGITransport(app=self.upstream.app()).handle_async_request(request)


async def test_a_request_in_flight_finishes_on_its_configuration_and_new_ones_see_the_new(tmp_path: Path) -> None:
    up_port, gw_port = free_port(), free_port()
    path = tmp_path / "gw.toml"
    path.write_text(FILE.format(open="a").replace("http://upstream.test", f"http://127.0.0.1:{up_port}"))
    upstream = Upstream("v1")
    app = build_gateway(load_gateway_config(path))
    old = app._current
    async with serve(upstream.app(), up_port), serve(app, gw_port) as base, \
            httpx.AsyncClient(base_url=base) as http:
        assert (await http.get("/a")).json() == {"upstream": "v1", "path": "/a"}
        assert (await http.get("/b")).status_code == 403
        async with http.stream("GET", "/events") as stream:
            chunks = stream.aiter_raw()
            assert await anext(chunks) == b"data: v1-1\n\n"
            path.write_text(path.read_text().replace('path = "/a"', 'path = "/b"'))
            reloaded = await app.reload()
            assert [r.path for r in reloaded.policy.routes] == ["/events", "/b"] and app.generation == 2
            assert (await http.get("/b")).json() == {"upstream": "v1", "path": "/b"}   # the new policy
            assert (await http.get("/a")).status_code == 403
            assert not old.closed and old.active == 1  # the stream still holds its generation
            upstream.release.set()
            rest = b"".join([chunk async for chunk in chunks])
        assert rest == b"data: v1-2\n\n" and stream.status_code == 200
        for _ in range(100):  # the old generation's clients are closed by a task of their own
            if old.closed:
                break
            await asyncio.sleep(0)
        assert old.closed and old.active == 0 and not app._current.closed
        metrics = app.metrics.exposition().decode()
    assert sample(metrics, "authgate_gateway_config_reloads_total", outcome="applied") == 1
    assert sample(metrics, "authgate_gateway_config_last_reload_successful") == 1


async def test_an_invalid_file_keeps_the_running_configuration(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(FILE.format(open="a"))
    app = build_gateway(load_gateway_config(path), upstream_transport=Switch(Upstream()))
    running = app._current
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=API) as http:
        for broken, message in (
                (FILE.format(open="a") + "\n[[routes]]\npath = \"/c\"\n", r"routes\[2\] \(\* /c\): allow: at least "
                                                                         r"one \[\[routes.allow\]\] alternative"),
                ("[gateway\n", r"not valid TOML"),
                (FILE.format(open="a") + "\n[[routes]]\npath = \"/_authgate/ready\"\n  [[routes.allow]]\n"
                 "  mechanism = \"public\"\n", r"\[operations\]: ready_path = '/_authgate/ready' is also matched")):
            path.write_text(broken)
            with pytest.raises(PolicyError, match=f"^{path}: {message}"):
                await app.reload()
            assert app._current is running and not running.closed
            assert (await http.get("/a")).json()["path"] == "/a"
        path.unlink()
        assert await app.reload_logged() is False  # what SIGHUP runs: logged, never raised
        metrics = app.metrics.exposition().decode()
        assert sample(metrics, "authgate_gateway_config_reloads_total", outcome="rejected") == 4
        assert sample(metrics, "authgate_gateway_config_last_reload_successful") == 0
        path.write_text(FILE.format(open="a"))
        assert await app.reload_logged() is True
        assert sample(app.metrics.exposition().decode(), "authgate_gateway_config_last_reload_successful") == 1
    await app.aclose()
    assert running.closed


async def test_reload_takes_a_config_object_too() -> None:
    upstream = Upstream()
    base: dict[str, Any] = {"gateway": {"upstream": "http://upstream.test", "public_url": API, "identity": "plain"},
                            "routes": [{"path": "/a", "allow": [{"mechanism": "public"}]}]}
    app = build_gateway(gateway_config_from_dict(base), upstream_transport=Switch(upstream))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=API) as http:
        assert (await http.get("/a")).status_code == 200
        base["routes"] = [{"path": "/z", "allow": [{"mechanism": "public"}]}]
        await app.reload(gateway_config_from_dict(base))
        assert (await http.get("/a")).status_code == 403 and (await http.get("/z")).status_code == 200
        with pytest.raises(PolicyError, match="cannot be read"):
            await app.reload()  # built from a dict: there is no file to re-read
        assert (await http.get("/z")).status_code == 200
    await app.aclose()


def signed_post(ap_key: OKPKey) -> dict[str, str]:
    """A POST (state-changing: the replay cache applies) signed by a fresh agent of ``ap.test``."""
    agent = Ed25519PrivateKey.generate()
    now = int(time.time())
    claims = {**base_claims("https://ap.test", wire.DWK_AGENT, now, now + 600), "sub": "aauth:bot@x.test",
              "cnf": {"jwk": crypto_public_jwk(agent)}}
    token = Signer(kid="ap1", key=ap_key).sign(wire.TYP_AGENT, claims)
    return sign_request(method="POST", url=API + "/hello", headers={}, body=b"", key=agent,
                        signature_key=jwt_scheme(token))


AGENTAUTH = """
[gateway]
upstream = "http://upstream.test"
public_url = "https://api.test"
identity = "plain"

[agentauth]
trusted_agent_providers = ["https://ap.test"]

[[routes]]
path = "/hello"
  [[routes.allow]]
  mechanism = "agentauth"
  need = "agent"
"""


async def test_replay_cache_and_resource_key_outlive_a_reload(tmp_path: Path) -> None:
    ap_key = OKPKey.generate_key("Ed25519", parameters={"alg": "Ed25519"}, private=True)
    documents = {"/.well-known/aauth-agent.json": {"issuer": "https://ap.test", "jwks_uri": "https://ap.test/jwks"},
                 "/jwks": {"keys": [{**public_jwk(ap_key), "kid": "ap1"}]}}
    provider = httpx.MockTransport(lambda r: httpx.Response(200, json=documents[r.url.path]))
    path = tmp_path / "gw.toml"
    path.write_text(AGENTAUTH)
    app = build_gateway(load_gateway_config(path), upstream_transport=Switch(Upstream()), http_transport=provider)
    kid = app.app.agentauth.signer.kid  # type: ignore[attr-defined]
    signed = signed_post(ap_key)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=API) as http:
        assert (await http.post("/hello", headers=signed)).status_code == 200
        await app.reload()
        replayed = await http.post("/hello", headers=signed)
        fresh = await http.post("/hello", headers=signed_post(ap_key))
    await app.aclose()
    assert replayed.status_code == 401 and "already used" in replayed.text  # the cache outlived the reload
    assert fresh.status_code == 200
    assert app.app.agentauth.signer.kid == kid  # type: ignore[attr-defined]
