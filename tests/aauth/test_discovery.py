"""Discovery of the Agent Authorization Grant: AS metadata members, client registration metadata, the resource
server's ``/.well-known/aauth.json``, and the wire names shared with the agent SDK."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from authgate.aauth import wire
from authgate.config import ConfigError, Settings, load_settings
from authgate.dcr.metadata import validate_client_metadata
from authgate.errors import InvalidClientMetadata
from authgate.resource import AuthGateMiddleware, ProtectedResource, protect
from authgate.resource.verifier import AccessClaims
from tests.conftest import ISSUER

RS = "http://rs.test"
DESCRIPTIONS = {"orders:read": "See the status of your orders", "orders:write": "Change an order's delivery address"}

# -- authorization server metadata -------------------------------------------------------------------------


async def test_metadata_advertises_the_grant(client: httpx.AsyncClient, settings: Settings) -> None:
    for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
        doc = (await client.get(path)).json()
        assert wire.GRANT_TYPE in doc["grant_types_supported"]
        assert doc["agent_authorization_draft"] == "draft-rosenberg-oauth-aauth-01" == wire.DEFAULT_DRAFT
        assert doc["agent_authorization_min_claims"] == settings.aauth_min_claims == 3
        assert set(doc["agent_authorization_user_claims_supported"]) >= {
            "given_name", "family_name", "birthdate", "phone_number", "email", "address.postal_code"}
        assert doc["agent_authorization_channels_supported"] == ["pstn", "sms"]
        assert doc["agent_authorization_capture_methods_supported"] == list(wire.CAPTURE_METHODS)


async def test_metadata_follows_the_settings(make_client: Callable[..., Any], settings: Settings) -> None:
    _, http = await make_client(settings, aauth_draft="draft-rosenberg-oauth-aauth-02", aauth_min_claims=4)
    doc = (await http.get("/.well-known/oauth-authorization-server")).json()
    assert doc["agent_authorization_draft"] == "draft-rosenberg-oauth-aauth-02"
    assert doc["agent_authorization_min_claims"] == 4


def test_draft_is_a_setting_from_the_environment() -> None:
    s = load_settings(env={"AUTHGATE_AAUTH_DRAFT": "draft-rosenberg-oauth-aauth-02"}, issuer=ISSUER)
    assert s.aauth_draft == "draft-rosenberg-oauth-aauth-02"
    assert load_settings(env={}, issuer=ISSUER).aauth_draft == wire.DEFAULT_DRAFT
    with pytest.raises(ConfigError):
        load_settings(env={"AUTHGATE_AAUTH_DRAFT": "bad\x00draft"}, issuer=ISSUER)


def test_sdk_speaks_the_same_wire_names() -> None:
    from authgate.agent import aauth as sdk

    assert sdk.GRANT_TYPE == wire.GRANT_TYPE
    assert (sdk.P_USER_CLAIMS, sdk.P_CHANNEL, sdk.P_CALLER_ID, sdk.P_CAPTURE_METHOD, sdk.P_CONVERSATION_ID,
            sdk.P_REASON, sdk.P_REQUEST_CODE) == (wire.USER_CLAIMS, wire.CHANNEL, wire.CALLER_ID,
                                                  wire.CAPTURE_METHOD, wire.CONVERSATION_ID, wire.REASON,
                                                  wire.REQUEST_CODE)
    assert (sdk.META_USER_CLAIMS_SUPPORTED, sdk.META_MIN_CLAIMS) == (wire.META_USER_CLAIMS_SUPPORTED,
                                                                    wire.META_MIN_CLAIMS)
    assert sdk.AAUTH_WELL_KNOWN == wire.AAUTH_WELL_KNOWN


# -- client registration metadata --------------------------------------------------------------------------


def _register(settings: Settings, **members: Any) -> dict[str, Any]:
    request = {"grant_types": [wire.GRANT_TYPE], "token_endpoint_auth_method": "client_secret_basic", **members}
    return validate_client_metadata(request, settings)


def test_registration_keeps_ceiling_elevated_and_channels(settings: Settings) -> None:
    out = _register(settings, agent_authorization_scope_ceiling="read write read",
                    agent_authorization_elevated_scopes="write", agent_channels=["sms", "pstn", "sms"])
    assert out["agent_authorization_scope_ceiling"] == "read write"
    assert out["agent_authorization_elevated_scopes"] == "write"
    assert out["agent_channels"] == ["sms", "pstn"]
    assert out["grant_types"] == [wire.GRANT_TYPE] and "redirect_uris" not in out
    bare = _register(settings, agent_authorization_scope_ceiling="read")
    assert bare["agent_authorization_elevated_scopes"] == "" and "agent_channels" not in bare


@pytest.mark.parametrize("members", [
    {},  # no ceiling
    {"agent_authorization_scope_ceiling": ""},
    {"agent_authorization_scope_ceiling": "read nonsense"},  # unknown scope
    {"agent_authorization_scope_ceiling": "read offline_access"},  # the grant never refreshes
    {"agent_authorization_scope_ceiling": ["read"]},
    {"agent_authorization_scope_ceiling": "read", "agent_authorization_elevated_scopes": "write"},  # not in ceiling
    {"agent_authorization_scope_ceiling": "read", "agent_channels": ["email"]},
    {"agent_authorization_scope_ceiling": "read", "agent_channels": []},
    {"agent_authorization_scope_ceiling": "read", "agent_channels": "pstn"},
    {"agent_authorization_scope_ceiling": "read", "token_endpoint_auth_method": "none"},  # public client
], ids=["none", "empty", "unknown", "offline", "array", "elevated-outside", "channel", "no-channel",
        "channels-string", "public"])
def test_registration_refuses_bad_agent_metadata(settings: Settings, members: dict[str, Any]) -> None:
    with pytest.raises(InvalidClientMetadata):
        _register(settings, **members)


def test_agent_members_need_the_grant(settings: Settings) -> None:
    request = {"grant_types": ["client_credentials"], "agent_authorization_scope_ceiling": "read"}
    with pytest.raises(InvalidClientMetadata):
        validate_client_metadata(request, settings)
    assert "agent_authorization_scope_ceiling" not in validate_client_metadata(
        {"grant_types": ["client_credentials"]}, settings)


async def test_dynamic_registration_end_to_end(client: httpx.AsyncClient) -> None:
    r = await client.post("/register", json={
        "client_name": "voice agent", "grant_types": [wire.GRANT_TYPE],
        "token_endpoint_auth_method": "client_secret_basic",
        "agent_authorization_scope_ceiling": "read write", "agent_authorization_elevated_scopes": "write",
        "agent_channels": ["pstn"]})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["agent_authorization_scope_ceiling"] == "read write" and body["agent_channels"] == ["pstn"]
    assert body["client_secret"]


# -- /.well-known/aauth.json on the resource side ----------------------------------------------------------


class NoTokens:
    audience = RS + "/api"

    async def verify(self, token: str) -> AccessClaims:
        raise AssertionError("no token is verified in these tests")


def _rs(descriptions: dict[str, str]) -> httpx.AsyncClient:
    async def hello(_: Request) -> JSONResponse:
        return JSONResponse({"hello": "world"})

    resource = ProtectedResource(RS + "/api", [ISSUER], scopes_supported=list(descriptions),
                                 scope_descriptions=descriptions)
    app = AuthGateMiddleware(Starlette(routes=[Route("/api/orders", hello)]), NoTokens(), resource,
                             [protect("/api/*", "orders:read")])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=RS)


async def test_aauth_json_served_from_the_scope_descriptions() -> None:
    async with _rs(DESCRIPTIONS) as http:
        r = await http.get("/.well-known/aauth.json")
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        assert r.json() == {"scope_descriptions": [
            {"scope": "orders:read", "description": "See the status of your orders"},
            {"scope": "orders:write", "description": "Change an order's delivery address"}]}
        assert r.headers["access-control-allow-origin"] == "*" and "max-age" in r.headers["cache-control"]
        head = await http.head("/.well-known/aauth.json")
        assert head.status_code == 200 and head.content == b""
        assert (await http.post("/.well-known/aauth.json")).status_code == 405
        # The protected routes are still protected.
        assert (await http.get("/api/orders")).status_code == 401


async def test_no_descriptions_no_aauth_json() -> None:
    async with _rs({}) as http:
        r = await http.get("/.well-known/aauth.json")
        assert r.status_code == 401  # not served: an ordinary (unmatched, authenticated) path


@pytest.mark.parametrize("descriptions", [{"bad scope": "x"}, {"orders:read": ""}, {"orders:read": "x" * 1001},
                                          {"orders:read": 3}])
def test_scope_descriptions_validated(descriptions: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"scope|description"):
        ProtectedResource(RS + "/api", [ISSUER], scope_descriptions=descriptions)


def test_offline_access_is_never_described() -> None:
    resource = ProtectedResource(RS + "/api", [ISSUER], scope_descriptions={"offline_access": "stay signed in",
                                                                            "orders:read": " Read orders "})
    assert resource.aauth_document() == {"scope_descriptions": [{"scope": "orders:read", "description": "Read orders"}]}


def test_settings_block_defaults(settings: Settings) -> None:
    assert (settings.aauth_token_ttl, settings.aauth_escalation_ttl, settings.aauth_interval) == (600, 300, 5)
    with pytest.raises(ConfigError):
        replace(settings, aauth_escalation_ttl=settings.approvals_max_ttl + 1).validate()
