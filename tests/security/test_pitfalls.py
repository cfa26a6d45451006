"""Rows of the pitfalls table (shared/specs/dcr-oauth-mcp.md §8) that no other module tests by name. The other
rows point at their tests in docs/threat-model.md.

The server here is built with a fetcher whose transport records every outbound request (and answers 200
with a harmless document), so "nothing was fetched" is observed, not assumed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest

from authgate.app import build_context, create_app
from authgate.clock import FrozenClock
from authgate.config import Settings
from authgate.net.fetch import Fetcher
from authgate.store import Store
from tests.conftest import ISSUER
from tests.helpers import REDIRECT, add_client, authorize_params, pkce_pair, redirect_params


class Recorder:
    def __init__(self) -> None:
        self.urls: list[str] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.urls.append(str(request.url))
        return httpx.Response(200, json={})


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def http(settings: Settings, store: Store, clock: FrozenClock,
               recorder: Recorder) -> AsyncIterator[httpx.AsyncClient]:
    fetcher = Fetcher(transport=httpx.MockTransport(recorder.handle))
    ctx = await build_context(replace(settings, auto_approve=True).validate(), clock, store, fetcher=fetcher)
    transport = httpx.ASGITransport(app=create_app(ctx), client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as client:
        yield client


@pytest.mark.parametrize("param", ["request_uri", "request"])
async def test_pitfall_2_request_objects_are_refused_without_any_fetch(http: httpx.AsyncClient, store: Store,
                                                                      recorder: Recorder, param: str) -> None:
    client_id, _ = await add_client(store)
    _, challenge = pkce_pair()
    value = "https://169.254.169.254/latest/meta-data" if param == "request_uri" else "e30.e30."
    q = redirect_params(await http.get("/authorize", params=authorize_params(client_id, challenge,
                                                                            **{param: value})))
    assert q["error"] == "invalid_request" and "code" not in q
    assert recorder.urls == []
    meta = (await http.get("/.well-known/oauth-authorization-server")).json()
    assert not meta.get("request_uri_parameter_supported") and not meta.get("request_parameter_supported")


async def test_pitfall_4_logo_uri_is_never_fetched_server_side(http: httpx.AsyncClient, recorder: Recorder) -> None:
    body = {"client_name": "logo agent", "redirect_uris": [REDIRECT], "token_endpoint_auth_method": "none",
            "logo_uri": "https://169.254.169.254/logo.png", "client_uri": "https://10.0.0.1/",
            "policy_uri": "https://127.0.0.1/policy", "tos_uri": "https://100.64.0.1/tos"}
    reg = await http.post("/register", json=body)
    assert reg.status_code == 201, reg.text
    _, challenge = pkce_pair()
    consent = await http.get("/authorize", params=authorize_params(reg.json()["client_id"], challenge))
    assert consent.status_code in (200, 303)
    assert recorder.urls == []
    # Control: this server's outbound fetches do go through the recorder (a client ID metadata document).
    await http.get("/authorize", params=authorize_params("https://app.example/client.json", challenge))
    assert recorder.urls == ["https://app.example/client.json"]


async def test_pitfall_5_no_ciba_client_notification_endpoint_is_ever_accepted(
        http: httpx.AsyncClient, store: Store, recorder: Recorder) -> None:
    """Only CIBA poll mode exists: a ping/push notification endpoint is dropped, so nothing can be POSTed to it."""
    body = {"client_name": "ciba", "grant_types": ["urn:openid:params:grant-type:ciba"],
            "token_endpoint_auth_method": "client_secret_basic", "backchannel_token_delivery_mode": "ping",
            "backchannel_client_notification_endpoint": "https://169.254.169.254/notify"}
    reg = await http.post("/register", json=body)
    if reg.status_code == 201:
        record = await store.get_client(reg.json()["client_id"])
        assert record is not None
        assert "backchannel_client_notification_endpoint" not in record.metadata
        assert record.metadata.get("backchannel_token_delivery_mode") in (None, "poll")
    else:
        assert reg.status_code == 400 and reg.json()["error"] == "invalid_client_metadata"
    meta = (await http.get("/.well-known/oauth-authorization-server")).json()
    assert meta.get("backchannel_token_delivery_modes_supported", ["poll"]) == ["poll"]
    assert recorder.urls == []


@pytest.mark.parametrize("registered", ["https://*.app.example/cb", "https://app.example/*"])
async def test_pitfall_15_no_wildcard_or_suffix_matching(http: httpx.AsyncClient, store: Store,
                                                         registered: str) -> None:
    """A wildcard-looking registration is a literal string: no concrete URI matches it."""
    client_id, _ = await add_client(store, redirect_uris=[registered])
    _, challenge = pkce_pair()
    for concrete in ("https://evil.app.example/cb", "https://app.example/cb", "https://app.example/x"):
        r = await http.get("/authorize", params=authorize_params(client_id, challenge, redirect_uri=concrete))
        assert r.status_code == 400 and "location" not in r.headers, concrete
