"""Client authentication at the token, introspection and revocation endpoints (RFC 6749 §2.3, RFC 7523 §2.2).

A client authenticates with exactly the method it registered: ``client_secret_basic``, ``client_secret_post``,
``private_key_jwt`` or ``none`` (public clients, identified by ``client_id`` only). Using two methods at once
is an error; so is a method other than the registered one. Every failure is ``invalid_client`` with nothing
that tells an attacker which part was wrong.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any
from urllib.parse import unquote

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from starlette.requests import Request

from authgate.context import ServerContext
from authgate.crypto.hashing import token_hash, verify_token_hash
from authgate.errors import InvalidClient, InvalidRequest
from authgate.net import FetchError
from authgate.net.jwks import fetch_jwks
from authgate.oauth.clients import Client
from authgate.oauth.metadata import ASSERTION_ALGS

JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_ASSERTION_LIFETIME = 600


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise _unauthorized(True, "malformed Basic credentials") from exc
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise _unauthorized(True, "malformed Basic credentials")
    # RFC 6749 §2.3.1: both parts are form-urlencoded before base64.
    return unquote(client_id.replace("+", " ")), unquote(secret.replace("+", " "))


def _unauthorized(basic: bool, description: str = "client authentication failed") -> InvalidClient:
    headers = {"WWW-Authenticate": 'Basic realm="authgate"'} if basic else None
    return InvalidClient(description, headers=headers)


async def authenticate_client(ctx: ServerContext, request: Request, form: dict[str, str],
                              *, allow_public: bool = True) -> Client:
    """Identify and authenticate the calling client, consuming the credential fields from ``form``."""
    basic = _basic_credentials(request)
    has_post = "client_secret" in form
    has_assertion = "client_assertion" in form or "client_assertion_type" in form
    if sum((basic is not None, has_post, has_assertion)) > 1:
        raise InvalidRequest("use exactly one client authentication method")

    if basic is not None:
        client_id, secret = basic
        if form.get("client_id", client_id) != client_id:
            raise InvalidRequest("client_id does not match the authenticated client")
        client = await ctx.clients.get(client_id)
        _check_secret(ctx, client, secret, "client_secret_basic", basic=True)
        assert client is not None
        return client
    if has_post:
        client = await ctx.clients.get(form.get("client_id", ""))
        _check_secret(ctx, client, form["client_secret"], "client_secret_post", basic=False)
        assert client is not None
        return client
    if has_assertion:
        return await _authenticate_assertion(ctx, form)

    client = await ctx.clients.get(form.get("client_id", ""))
    if client is None or client.auth_method != "none":
        raise _unauthorized(False)
    if not allow_public:
        raise _unauthorized(False, "this endpoint requires a confidential client")
    return client


def _check_secret(ctx: ServerContext, client: Client | None, secret: str, method: str, *, basic: bool) -> None:
    # Hash even when the client is unknown, so timing does not reveal which client_ids exist.
    ok = verify_token_hash(secret, client.secret_hash if client else token_hash(""))
    if client is None or not ok or client.auth_method != method:
        raise _unauthorized(basic)
    if client.secret_expires_at and client.secret_expires_at <= ctx.now():
        raise _unauthorized(basic, "client secret expired")


async def _authenticate_assertion(ctx: ServerContext, form: dict[str, str]) -> Client:
    if form.get("client_assertion_type") != JWT_BEARER_ASSERTION or "client_assertion" not in form:
        raise InvalidClient("unsupported client assertion")
    assertion = form["client_assertion"]
    if len(assertion) > 8192:
        raise InvalidClient("client assertion too large")
    claims = _peek_claims(assertion)
    client_id = str(claims.get("sub") or "")
    if claims.get("iss") != client_id or form.get("client_id", client_id) != client_id:
        raise InvalidClient("assertion iss and sub must be the client_id")
    client = await ctx.clients.get(client_id)
    if client is None or client.auth_method != "private_key_jwt":
        raise InvalidClient("client authentication failed")
    keys = await client_key_set(ctx, client)
    try:
        token = jwt.decode(assertion, keys, algorithms=ASSERTION_ALGS)
    except (JoseError, ValueError) as exc:
        if not client.metadata.get("jwks_uri"):
            raise InvalidClient("client assertion signature invalid") from exc
        # The client may have rotated its keys: look at its jwks_uri once more (rate-limited by the cache).
        try:
            token = jwt.decode(assertion, await client_key_set(ctx, client, refresh=True), algorithms=ASSERTION_ALGS)
        except (JoseError, ValueError) as exc2:
            raise InvalidClient("client assertion signature invalid") from exc2
    c = token.claims
    now = ctx.now()
    audiences = c.get("aud")
    audiences = [audiences] if isinstance(audiences, str) else list(audiences or [])
    valid_aud = {ctx.issuer, f"{ctx.issuer}/token"}
    if not valid_aud & set(audiences):
        raise InvalidClient("client assertion audience must be this server")
    exp, iat = c.get("exp"), c.get("iat", now)
    if not isinstance(exp, int) or exp <= now - 5 or exp - int(iat) > MAX_ASSERTION_LIFETIME:
        raise InvalidClient("client assertion expired or too long-lived")
    jti = c.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > 256:
        raise InvalidClient("client assertion needs a jti")
    replay_id = "jti:" + token_hash(f"{client_id}\x00{jti}")
    if await ctx.store.get_artifact(replay_id) is not None:
        raise InvalidClient("client assertion replayed")
    try:
        await ctx.store.put_artifact(replay_id, "assertion_jti", {}, exp - now + 60, client_id=client_id)
    except Exception as exc:  # unique violation from a concurrent replay
        raise InvalidClient("client assertion replayed") from exc
    return client


def _peek_claims(assertion: str) -> dict[str, Any]:
    """Read the unverified claims only to learn which client's keys to verify with."""
    parts = assertion.split(".")
    if len(parts) != 3:
        raise InvalidClient("malformed client assertion")
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
    except (binascii.Error, ValueError) as exc:
        raise InvalidClient("malformed client assertion") from exc
    if not isinstance(claims, dict):
        raise InvalidClient("malformed client assertion")
    return claims


async def client_key_set(ctx: ServerContext, client: Client, *, refresh: bool = False) -> KeySet:
    """The client's registered public keys (inline ``jwks``; ``jwks_uri`` through the SSRF-guarded fetcher)."""
    jwks = client.metadata.get("jwks")
    if jwks is None and client.metadata.get("jwks_uri"):
        try:
            jwks = await fetch_jwks(str(client.metadata["jwks_uri"]), ctx.settings, refresh=refresh,
                                    cache=ctx.jwks_cache)
        except FetchError as exc:
            raise InvalidClient("client keys could not be retrieved") from exc
    if not isinstance(jwks, dict):
        raise InvalidClient("client has no usable keys")
    try:
        return KeySet.import_key_set(jwks)  # type: ignore[arg-type]
    except Exception as exc:
        raise InvalidClient("client keys unusable") from exc

