"""Hostile bytes through the whole server: random signature headers, Authorization values, content types and
bodies at the signed Agent Auth endpoints and the OAuth endpoints never produce a 5xx.

The parser-level properties are in test_parsers_hypothesis.py; this checks the glue (the endpoint maps every
typed error to a 4xx and nothing else escapes). schemathesis (test_openapi_schemathesis.py) covers the
documented request shapes; these are the headers it does not generate.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from authgate.config import Settings

_HEADER_TEXT = st.text(alphabet=string.printable.replace("\r", "").replace("\n", "").replace("\x0b", "")
                       .replace("\x0c", ""), max_size=120)
_SF = st.one_of(
    _HEADER_TEXT,
    st.sampled_from(['sig=("@method" "@authority" "@path" "signature-key");created=1800000000',
                     'sig=:AAAA:', 'sig=jwt;jwt="a.b.c"', 'sig=hwk;kty="OKP";crv="Ed25519";x="AAAA"',
                     'sig=jwks_uri;id="https://169.254.169.254";dwk="aauth-agent.json";kid="k"',
                     "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:"]),
)
headers = st.fixed_dictionaries({}, optional={
    "Signature": _SF, "Signature-Input": _SF, "Signature-Key": _SF, "Content-Digest": _SF,
    "Authorization": st.one_of(_HEADER_TEXT, st.sampled_from(["Bearer ", "Bearer a.b.c", "Basic Og==",
                                                              "Basic " + "A" * 50, "DPoP x"])),
    "Content-Type": st.sampled_from(["application/json", "application/x-www-form-urlencoded", "text/plain",
                                     "application/json; charset=utf-16", ""]),
})
bodies = st.one_of(st.binary(max_size=120), st.sampled_from([b"{}", b"[]", b"null", b'{"resource":1}',
                                                             b"grant_type=client_credentials", b"\xff\xfe"]))
PATHS = ["/agentauth/agent-token", "/agentauth/person-token", "/agentauth/auth-token", "/agentauth/agents",
         "/token", "/register", "/introspect", "/revoke"]


@pytest.fixture
async def server(settings: Settings, make_client: Callable[..., Any]) -> httpx.AsyncClient:
    _, http = await make_client(settings, agentauth_enabled=True, agentauth_allow_http_loopback=True,
                                 agentauth_admin_key="k" * 40)
    assert isinstance(http, httpx.AsyncClient)
    for path in PATHS:  # control: every path is served (a 404 or 405 would make the property vacuous)
        r = await http.post(path, content=b"")
        assert r.status_code not in (404, 405), (path, r.status_code)
    return http


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.sampled_from(PATHS), headers, bodies)
async def test_hostile_headers_and_bodies_never_get_a_5xx(server: httpx.AsyncClient, path: str,
                                                          hdrs: dict[str, str], body: bytes) -> None:
    r = await server.post(path, headers=hdrs, content=body)
    assert r.status_code < 500, (path, hdrs, body, r.status_code, r.text[:300])
