"""``gateway_config`` in ``authgate serve``: server routes stay the server's; every other path goes through the
gateway's policy to its upstream; a bad gateway file is a configuration error naming the file and field."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from authgate.app import build_context, create_app
from authgate.clock import FrozenClock
from authgate.config import ConfigError, Settings
from authgate.store import Store
from authgate.trust import wire as tw
from authgate.trust.attestations import issue_attestation
from tests.ops.test_operations import sample
from tests.servers import free_port, serve

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)

FILE = """
[gateway]
upstream = "http://127.0.0.1:{port}"
public_url = "{issuer}"
identity = "plain"

[oauth]
issuer = "{issuer}"

[[routes]]
path = "/api/public"
  [[routes.allow]]
  mechanism = "public"

[[routes]]
path = "/api/*"
  [[routes.allow]]
  mechanism = "oauth"
  scopes = ["{scope}"]
"""


async def test_serve_mounts_the_gateway_behind_its_own_routes(settings: Settings, store: Store, clock: FrozenClock,
                                                             tmp_path: Path) -> None:
    async def api(request: Request) -> JSONResponse:
        return JSONResponse({"path": request.url.path, "mechanism": request.headers.get("x-authgate-mechanism")})

    port = free_port()
    path = tmp_path / "gateway.toml"
    path.write_text(FILE.format(port=port, issuer=settings.issuer_url, scope="read"))
    ctx = await build_context(replace(settings, gateway_config=str(path)).validate(), clock, store)
    app = create_app(ctx)
    async with serve(Starlette(routes=[Route("/{p:path}", api)]), port), \
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=settings.issuer_url) as http:
        health = await http.get("/health")
        public = await http.get("/api/public")
        private = await http.get("/api/notes")
        metadata = await http.get("/.well-known/oauth-protected-resource")
        wrong_method = await http.post("/jwks.json")
        metrics = (await http.get("/metrics")).text
    assert health.json() == {"status": "ok"}
    assert public.json() == {"path": "/api/public", "mechanism": "public"}
    assert private.status_code == 401 and private.headers["www-authenticate"].startswith("Bearer resource_metadata=")
    assert metadata.json()["authorization_servers"] == [settings.issuer_url]
    assert wrong_method.status_code == 405  # a server route with the wrong method is still the server's answer
    # the gateway's decisions land in the server's own metrics
    assert sample(metrics, "authgate_access_decisions_total", mechanism="public", outcome="allowed") == 1
    assert sample(metrics, "authgate_access_decisions_total", mechanism="none", outcome="challenged") == 1
    # the gateway's own document is counted under its path, not with the requests no route covers
    assert sample(metrics, "authgate_http_requests_total", route="/.well-known/oauth-protected-resource",
                  method="GET", status="200") == 1


async def test_a_bad_gateway_file_is_a_configuration_error(settings: Settings, store: Store, clock: FrozenClock,
                                                          tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"gateway_config: .*missing.toml is not a file"):
        replace(settings, gateway_config=str(tmp_path / "missing.toml")).validate()
    path = tmp_path / "gateway.toml"
    path.write_text(FILE.format(port=1, issuer=settings.issuer_url, scope="re ad"))
    ctx = await build_context(replace(settings, gateway_config=str(path)).validate(), clock, store)
    with pytest.raises(ConfigError, match=r"gateway.toml: routes\[1\] \(\* /api/\*\): allow\[0\] \(oauth\): scopes: "
                                          r"invalid scope token: 're ad'"):
        create_app(ctx)


TRUSTED = """
[gateway]
upstream = "http://127.0.0.1:{port}"
public_url = "{issuer}"
identity = "plain"

[oauth]
issuer = "{issuer}"

[[routes]]
path = "/api/adult"
  [routes.attestation]
  claims = {{ verified_adult = true }}
  issuers = ["{issuer}"]
  [[routes.allow]]
  mechanism = "oauth"

[[routes]]
path = "/api/*"
  [[routes.allow]]
  mechanism = "oauth"
"""


async def test_a_mounted_gateway_uses_the_servers_kill_switch_and_trusts_its_keys(
        settings: Settings, store: Store, clock: FrozenClock, tmp_path: Path) -> None:
    """No [trust] section: inside the server the kill switch applies anyway, and the server's own issuer is a
    trusted attestation issuer with its live key ring (a key rotated after start-up still verifies)."""
    async def api(request: Request) -> JSONResponse:
        return JSONResponse({"agent": request.headers.get("x-authgate-agent")})

    port, as_port = free_port(), free_port()
    issuer = f"http://127.0.0.1:{as_port}"  # served on a socket: the gateway fetches its issuer's keys over HTTP
    path = tmp_path / "gateway.toml"
    path.write_text(TRUSTED.format(port=port, issuer=issuer))
    ctx = await build_context(replace(settings, issuer=issuer, gateway_config=str(path)).validate(), clock, store)
    app = create_app(ctx)
    now = int(clock.now())
    token = await ctx.keys.sign({"iss": issuer, "sub": "alice", "aud": issuer, "client_id": "c-1",
                                 "iat": now, "exp": now + 300, "jti": "t1"})
    bearer = {"Authorization": f"Bearer {token}"}
    await ctx.keys.rotate(keep_old_for=600)
    attestation = await issue_attestation(ctx.keys, issuer=ctx.issuer, agent="c-1", claims={"verified_adult": True},
                                          ttl=600, now=now)
    async with serve(Starlette(routes=[Route("/{p:path}", api)]), port), serve(app, as_port), \
            httpx.AsyncClient(base_url=issuer, trust_env=False) as http:
        assert (await http.get("/api/notes", headers=bearer)).json() == {"agent": "c-1"}
        missing = await http.get("/api/adult", headers=bearer)
        adult = await http.get("/api/adult", headers={**bearer, tw.ATTESTATION_HEADER: attestation})
        await ctx.killswitch.kill("client", "c-1", by="admin")
        killed = await http.get("/api/notes", headers=bearer)
    assert missing.status_code == 403 and missing.json()["error"] == tw.ERR_ATTESTATION_MISSING
    assert adult.status_code == 200, adult.text
    assert killed.status_code == 401 and killed.json()["error"] == "invalid_token"
