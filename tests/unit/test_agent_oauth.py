"""Sans-I/O helpers of the agent SDK: discovery URLs, resource matching, scopes, PKCE, callbacks, tokens."""

from __future__ import annotations

import base64
import hashlib
import re

import httpx
import pytest

from authgate.agent import (
    AuthorizationError,
    ClientRegistration,
    IssMismatchError,
    StateMismatchError,
    TokenError,
    TokenSet,
    UserDeclinedError,
)
from authgate.agent.discovery import (
    as_metadata_candidates,
    classify,
    is_secure_url,
    parse_resource_metadata,
    prm_candidates,
    resource_matches,
)
from authgate.agent.errors import AgentAuthError, DiscoveryError
from authgate.agent.oauth import (
    authorization_url,
    parse_callback,
    parse_token_response,
    pkce_pair,
    select_scope,
    token_request,
)


def test_as_metadata_candidates_path_insertion_then_oidc() -> None:
    assert as_metadata_candidates("https://auth.example.com/tenant1") == [
        "https://auth.example.com/.well-known/oauth-authorization-server/tenant1",
        "https://auth.example.com/.well-known/openid-configuration/tenant1",
        "https://auth.example.com/tenant1/.well-known/openid-configuration",
    ]
    assert as_metadata_candidates("https://auth.example.com") == [
        "https://auth.example.com/.well-known/oauth-authorization-server",
        "https://auth.example.com/.well-known/openid-configuration",
    ]


def test_prm_candidates() -> None:
    url = "https://mcp.example.com/public/mcp?x=1"
    assert prm_candidates(url, "https://mcp.example.com/prm") == [
        "https://mcp.example.com/prm",
        "https://mcp.example.com/.well-known/oauth-protected-resource/public/mcp",
        "https://mcp.example.com/.well-known/oauth-protected-resource",
    ]
    assert prm_candidates("https://mcp.example.com/", None) == [
        "https://mcp.example.com/.well-known/oauth-protected-resource"
    ]
    assert prm_candidates("https://m.example/", "javascript:alert(1)") == [
        "https://m.example/.well-known/oauth-protected-resource"
    ]


@pytest.mark.parametrize(
    ("url", "resource", "ok"),
    [
        ("https://a.example/mcp", "https://a.example/mcp", True),
        ("https://a.example/mcp/x", "https://a.example/mcp", True),
        ("https://a.example/mcp", "https://a.example", True),
        ("https://a.example/mcp", "https://a.example/", True),
        ("https://A.EXAMPLE:443/mcp", "https://a.example/mcp", True),
        ("https://a.example/mcpx", "https://a.example/mcp", False),
        ("https://a.example/mcp", "https://a.example/mcp/x", False),
        ("https://a.example/mcp", "http://a.example/mcp", False),
        ("https://a.example:8443/mcp", "https://a.example/mcp", False),
        ("https://b.example/mcp", "https://a.example/mcp", False),
    ],
)
def test_resource_matches(url: str, resource: str, ok: bool) -> None:
    assert resource_matches(url, resource) is ok


def test_prm_validation() -> None:
    good = {"resource": "https://a.example/mcp", "authorization_servers": ["https://as.example"]}
    prm = parse_resource_metadata(good, "https://a.example/mcp", "u")
    assert prm.authorization_server == "https://as.example" and prm.scopes_supported == ()
    for bad in (
        {**good, "authorization_servers": []},
        {**good, "authorization_servers": ["http://as.example"]},  # not https, not loopback
        {**good, "authorization_servers": ["https://as.example?x=1"]},
        {"authorization_servers": ["https://as.example"]},
    ):
        with pytest.raises(DiscoveryError):
            parse_resource_metadata(bad, "https://a.example/mcp", "u")


def test_secure_urls() -> None:
    assert is_secure_url("https://x.example/t")
    assert is_secure_url("http://127.0.0.1:9000/token") and is_secure_url("http://localhost/t")
    assert is_secure_url("http://[::1]:80/t")
    assert not is_secure_url("http://x.example/t") and not is_secure_url("ftp://x/")


def test_classify() -> None:
    assert classify(httpx.Response(200)) == "ok"
    assert [classify(httpx.Response(s)) for s in (301, 404, 405)] == ["next"] * 3
    assert [classify(httpx.Response(s)) for s in (429, 500, 502)] == ["stop"] * 3


def test_scope_selection() -> None:
    assert select_scope("a b", ["c"]) == "a b"
    assert select_scope(None, ["c", "d"]) == "c d"
    assert select_scope(None, []) is None
    assert select_scope("admin", ["c"], previous="read admin write") == "read admin write"
    assert select_scope("admin", [], previous="read") == "read admin"
    assert select_scope("a", [], server_scopes=["a", "offline_access"], offline_access=True) == "a offline_access"
    assert select_scope("a", [], server_scopes=["a"], offline_access=True) == "a"
    assert select_scope(None, [], server_scopes=["offline_access"], offline_access=True) is None


def test_pkce() -> None:
    verifier, challenge = pkce_pair()
    assert re.fullmatch(r"[A-Za-z0-9._~-]{43,128}", verifier)
    assert challenge == base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    assert pkce_pair()[0] != verifier


def test_authorization_url_keeps_existing_query() -> None:
    url = authorization_url("https://as.example/authorize?tenant=t", {"a": "1 2", "b": None})
    assert url == "https://as.example/authorize?tenant=t&a=1+2"


def test_callback_parsing() -> None:
    cb = "http://127.0.0.1/cb?code=c&state=s&iss=https%3A%2F%2Fas.example"
    assert parse_callback(cb, state="s", issuer="https://as.example", iss_required=True) == "c"
    with pytest.raises(StateMismatchError):
        parse_callback(cb, state="t", issuer="https://as.example", iss_required=True)
    with pytest.raises(IssMismatchError):
        parse_callback(cb, state="s", issuer="https://as.example/", iss_required=False)
    with pytest.raises(AuthorizationError, match="repeats"):
        parse_callback(cb + "&code=d", state="s", issuer="https://as.example", iss_required=True)
    with pytest.raises(AuthorizationError, match="no code"):
        parse_callback("http://x/cb?state=s", state="s", issuer="i", iss_required=False)
    with pytest.raises(UserDeclinedError):
        parse_callback("http://x/cb?state=s&error=access_denied", state="s", issuer="i", iss_required=False)
    with pytest.raises(AuthorizationError) as info:
        parse_callback("http://x/cb?state=s&error=invalid_scope", state="s", issuer="i", iss_required=False)
    assert info.value.error == "invalid_scope" and not isinstance(info.value, UserDeclinedError)


def test_token_response_parsing() -> None:
    r = httpx.Response(200, json={"access_token": "a", "token_type": "BEARER", "expires_in": 60})
    t = parse_token_response(r, now=100, requested_scope="s", previous=TokenSet("old", refresh_token="r", scope="p"))
    assert t == TokenSet("a", expires_at=160, refresh_token="r", scope="s")
    r = httpx.Response(200, json={"access_token": "a", "token_type": "Bearer", "expires_in": "30", "scope": "x"})
    t = parse_token_response(r, now=0, requested_scope="s")
    assert t.expires_at == 30 and t.scope == "x" and t.refresh_token is None
    r = httpx.Response(200, json={"access_token": "a", "token_type": "Bearer", "expires_in": True})
    assert parse_token_response(r, now=0, requested_scope=None).expires_at is None
    for bad in ({"access_token": "a"}, {"access_token": "", "token_type": "Bearer"}, ["x"]):
        with pytest.raises(TokenError):
            parse_token_response(httpx.Response(200, json=bad), now=0, requested_scope=None)


def test_token_request_client_auth() -> None:
    form = {"grant_type": "client_credentials", "scope": None}
    req = token_request("https://as/t", ClientRegistration("a b", "c&d", "client_secret_basic"), form)
    assert base64.b64decode(req.headers["authorization"][6:]) == b"a+b:c%26d"
    assert req.content == b"grant_type=client_credentials&client_id=a+b"
    req = token_request("https://as/t", ClientRegistration("id", "sec", "client_secret_post"), form)
    assert "authorization" not in req.headers and req.content.endswith(b"client_id=id&client_secret=sec")
    with pytest.raises(TokenError):
        token_request("https://as/t", ClientRegistration("id", None, "client_secret_basic"), form)
    with pytest.raises(TokenError):
        token_request("https://as/t", ClientRegistration("id", "k", "private_key_jwt"), form)


def test_error_text_is_sanitised() -> None:
    err = AgentAuthError("x", error="bad\r\nInjected: 1", error_description="d" * 1000, status_code=400)
    assert "\n" not in str(err) and len(err.error_description or "") == 300
    assert AgentAuthError("x", error=["not a string"]).error is None
    assert str(AgentAuthError("boom", status_code=503)) == "boom (HTTP 503)"
