"""Interop: Authlib's httpx OAuth 2 client (a public, independent RFC 6749 client that can send any grant type)
performs RFC 8693 token exchanges against our token endpoint, authenticating with client_secret_basic and
client_secret_post, and reads our success and error responses. The token it gets is accepted by the downstream
resource's verifier (authgate.resource) with the ``act`` chain in it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx2  # what Authlib's httpx integration runs on (the mcp SDK brings it)
import pytest
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError

from authgate.app import create_app
from authgate.clock import FrozenClock
from authgate.config import Settings
from authgate.context import ServerContext
from authgate.oauth.metadata import TOKEN_EXCHANGE_GRANT_TYPE
from authgate.oauth.tokens import Grant, issue_tokens, new_grant_id
from authgate.resource import JWTVerifier
from tests.conftest import ISSUER
from tests.helpers import add_client

pytestmark = pytest.mark.interop

ACCESS = "urn:ietf:params:oauth:token-type:access_token"
R1 = "http://127.0.0.1:9100/api"
R2 = "http://127.0.0.1:9200/b"


def _peer(ctx: ServerContext, client_id: str, secret: str, method: str) -> AsyncOAuth2Client:
    transport = httpx2.ASGITransport(app=create_app(ctx), client=("127.0.0.1", 50000))
    return AsyncOAuth2Client(client_id, secret, token_endpoint_auth_method=method, transport=transport)


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
async def test_authlib_client_exchanges_a_token(settings: Settings, ctx: ServerContext, clock: FrozenClock,
                                                make_client: Callable[..., Any], method: str) -> None:
    agent_id, agent_secret = await add_client(ctx.store, auth_method=method, scope="read write",
                                              grant_types=["authorization_code", TOKEN_EXCHANGE_GRANT_TYPE])
    assert agent_secret is not None
    server, http = await make_client(settings, resources=(R1, R2))
    agent = await server.clients.get(agent_id)
    assert agent is not None
    subject = (await issue_tokens(server, agent, Grant(agent_id, "alice", ("read", "write"), R1, new_grant_id()),
                                  refresh=False))["access_token"]

    async with _peer(server, agent_id, agent_secret, method) as peer:
        token = await peer.fetch_token(ISSUER + "/token", grant_type=TOKEN_EXCHANGE_GRANT_TYPE,
                                       subject_token=subject, subject_token_type=ACCESS, resource=R2, scope="read")
        assert token["issued_token_type"] == ACCESS and token["token_type"] == "Bearer"
        assert token["scope"] == "read" and "refresh_token" not in token and token["expires_at"]
        verified = await JWTVerifier(ISSUER, R2, jwks_uri=ISSUER + "/jwks.json", http_client=http,
                                     clock=clock).verify(token["access_token"])
        assert verified.subject == "alice" and verified.claims["act"] == {"sub": agent_id}

        with pytest.raises(OAuthError) as info:
            await peer.fetch_token(ISSUER + "/token", grant_type=TOKEN_EXCHANGE_GRANT_TYPE,
                                   subject_token=subject, subject_token_type=ACCESS, resource=R2, scope="admin")
        assert info.value.error == "invalid_scope"
        with pytest.raises(OAuthError) as info:
            await peer.fetch_token(ISSUER + "/token", grant_type=TOKEN_EXCHANGE_GRANT_TYPE,
                                   subject_token="forged", subject_token_type=ACCESS, resource=R2)
        assert info.value.error == "invalid_request"
