"""RFC 7591 registration (``POST /register``) and RFC 7592 management (``/register/{client_id}``).

Registration policy comes from ``Settings.registration``:

* ``open``: anyone may register, limited per source address by ``ctx.registration_limiter`` (``429`` with
  ``Retry-After``). Public (``none``) clients are registered idempotently: a request whose normalised metadata
  equals an existing dynamic public client's gets that client back (``201``) instead of a new record, because
  hosted connectors register from shared addresses. The repeat response carries no
  ``registration_access_token`` or ``registration_client_uri``: management stays with the first registrant.
* ``token``: an initial access token is required as ``Authorization: Bearer`` (``401`` with an RFC 6750
  challenge otherwise); see ``authgate.dcr.initial_access``.
* ``closed``: ``POST /register`` answers ``403 access_denied`` (a clear answer rather than a ``404``; the
  endpoint is also left out of the server metadata). RFC 7592 management of clients registered earlier keeps
  working: it is authenticated by each client's own registration access token.

``settings.max_clients`` caps the number of stored clients (``403 access_denied`` once reached). Client
secrets and registration access tokens are returned once and stored only as SHA-256 digests; every response
carries ``Cache-Control: no-store``.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import replace
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from authgate.context import ServerContext
from authgate.crypto.hashing import new_token, token_hash, verify_token_hash
from authgate.dcr.initial_access import InitialAccess, bearer_token, check_initial_access
from authgate.dcr.metadata import metadata_digest, uses_secret, validate_client_metadata
from authgate.dcr.software_statement import verify_software_statement
from authgate.errors import (
    NO_STORE,
    AccessDenied,
    InvalidClientMetadata,
    InvalidRequest,
    InvalidToken,
    MethodNotAllowed,
    TooManyRequests,
)
from authgate.httputil import json_response, oauth_endpoint, read_json_object
from authgate.store.repository import AuditEntry, ClientRecord

MAX_REGISTRATION_BYTES = 32 * 1024
CLIENT_ID_BYTES = 18  # 144 bits, 24 URL-safe characters: opaque, never an https:// URL
_ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
#: Members an RFC 7592 update must not carry (RFC 7592 §2.2).
_SERVER_ASSIGNED = ("registration_access_token", "registration_client_uri", "client_secret_expires_at",
                    "client_id_issued_at")


def routes(ctx: ServerContext) -> list[BaseRoute]:
    endpoints = RegistrationEndpoints(ctx)
    # Every method reaches the handlers, which answer the unsupported ones with 405 and no-store headers.
    return [
        Route("/register", oauth_endpoint(endpoints.register), methods=_ALL_METHODS),
        Route("/register/{client_id}", oauth_endpoint(endpoints.manage), methods=_ALL_METHODS),
    ]


#: How long a process trusts its count of stored clients (the max_clients cap) before counting again.
COUNT_TTL = 5.0


class RegistrationEndpoints:
    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self._count: tuple[int, float] = (0, float("-inf"))

    async def _client_count(self) -> int:
        """Stored clients, counted at most every COUNT_TTL seconds (a full count per registration would grow
        with the table) and kept up to date with this process's own registrations in between. max_clients is
        a cap against storage abuse, so registrations by other processes in those seconds may overshoot it
        slightly; it is never exceeded by more than they registered in COUNT_TTL."""
        count, at = self._count
        now = time.monotonic()
        if now - at >= COUNT_TTL:
            count = await self.ctx.store.count_clients()
            self._count = (count, now)
        return count

    # -- RFC 7591 ------------------------------------------------------------------------------------

    async def register(self, request: Request) -> Response:
        if request.method != "POST":
            raise MethodNotAllowed("use POST", headers={"Allow": "POST"})
        ctx = self.ctx
        mode = ctx.settings.registration
        access: InitialAccess | None = None
        if mode == "closed":
            raise AccessDenied("dynamic client registration is disabled")
        if mode == "open":
            retry_after = await ctx.registration_limiter.hit(request.client.host if request.client else "")
            if retry_after is not None:
                raise TooManyRequests(retry_after, "too many registrations from this address")
        else:
            access = await check_initial_access(request, ctx.store, ctx.now())

        body = await read_json_object(request, MAX_REGISTRATION_BYTES, InvalidClientMetadata)
        metadata = self._metadata(body)
        public = metadata["token_endpoint_auth_method"] == "none"
        digest = metadata_digest(metadata) if public else None

        if digest is not None:
            existing = await ctx.store.find_client_by_digest(digest)
            if existing is not None and existing.dynamic and existing.metadata == metadata:
                if access is not None:
                    await access.redeem(ctx.store)
                await ctx.store.audit("client.registration_repeated", client_id=existing.client_id)
                return json_response(self._information(existing), 201)

        if await self._client_count() >= ctx.settings.max_clients:
            ctx.log.warning("client registration refused: max_clients (%d) reached", ctx.settings.max_clients)
            raise AccessDenied("the server accepts no more client registrations")
        if access is not None:
            await access.redeem(ctx.store)

        now = ctx.now()
        secret = new_token() if uses_secret(metadata) else None
        rat = new_token()
        record = ClientRecord(
            client_id=secrets.token_urlsafe(CLIENT_ID_BYTES),
            metadata=metadata,
            secret_hash=token_hash(secret) if secret else None,
            secret_expires_at=self._secret_expiry(now) if secret else 0,
            rat_hash=token_hash(rat),
            dynamic=True,
            metadata_digest=digest,
            issued_at=now,
            updated_at=now,
        )
        await ctx.store.create_client(record, AuditEntry("client.registered", record.client_id, None,
                                                         {**_audit_detail(metadata), "registration": mode}))
        self._count = (self._count[0] + 1, self._count[1])
        ctx.log.info("registered client %s (%s)", record.client_id, metadata["token_endpoint_auth_method"])
        return json_response(self._information(record, secret=secret, rat=rat), 201)

    # -- RFC 7592 ------------------------------------------------------------------------------------

    async def manage(self, request: Request) -> Response:
        if request.method not in ("GET", "PUT", "DELETE"):
            raise MethodNotAllowed("use GET, PUT or DELETE", headers={"Allow": "GET, PUT, DELETE"})
        record, rat = await self._authenticate(request, request.path_params["client_id"])
        if request.method == "GET":
            return await self._read(record, rat)
        if request.method == "PUT":
            return await self._update(request, record)
        await self.ctx.store.delete_client(record.client_id)
        await self.ctx.store.audit("client.deleted", client_id=record.client_id)
        return Response(status_code=204, headers=NO_STORE)

    async def _authenticate(self, request: Request, client_id: str) -> tuple[ClientRecord, str]:
        """The client whose registration access token the request carries; it must be the one in the path."""
        rat = bearer_token(request)
        if rat is None:
            raise InvalidToken("a registration access token is required")
        rat_hash = token_hash(rat)
        record = await self.ctx.store.get_client_by_rat(rat_hash)
        if record is None or not verify_token_hash(rat, record.rat_hash):
            raise InvalidToken("registration access token is invalid")
        if not secrets.compare_digest(record.client_id.encode(), client_id.encode()):
            # A token presented for another (or a missing) client is revoked (RFC 7592 §2.1, §2.2, §2.3).
            await self.ctx.store.clear_rat(rat_hash)
            await self.ctx.store.audit("client.rat_revoked", client_id=record.client_id,
                                       reason="presented for another client")
            raise InvalidToken("registration access token is invalid")
        if not record.dynamic:
            raise AccessDenied("this client is not managed through dynamic registration")
        return record, rat

    async def _read(self, record: ClientRecord, rat: str) -> Response:
        """GET: the current registration. An expired secret is rotated here, so the client can recover."""
        now = self.ctx.now()
        secret = None
        if uses_secret(record.metadata) and 0 < record.secret_expires_at <= now:
            secret = new_token()
            values: dict[str, Any] = {"secret_hash": token_hash(secret),
                                      "secret_expires_at": self._secret_expiry(now)}
            await self.ctx.store.update_client(record.client_id, **values)
            record = replace(record, **values)
            await self.ctx.store.audit("client.secret_rotated", client_id=record.client_id, reason="expired")
        return json_response(self._information(record, secret=secret, rat=rat))

    async def _update(self, request: Request, record: ClientRecord) -> Response:
        """PUT: full replacement of the metadata, validated exactly like a registration; the RAT rotates."""
        body = await read_json_object(request, MAX_REGISTRATION_BYTES, InvalidClientMetadata)
        sent_id = body.get("client_id")
        if not isinstance(sent_id, str) or not secrets.compare_digest(sent_id.encode(), record.client_id.encode()):
            raise InvalidRequest("client_id must be present and match the client")
        for name in _SERVER_ASSIGNED:
            if name in body:
                raise InvalidRequest(f"{name} must not be sent in an update")
        if "client_secret" in body:
            sent = body["client_secret"]
            if not isinstance(sent, str) or not verify_token_hash(sent, record.secret_hash):
                raise InvalidRequest("client_secret does not match the current secret")
        metadata = self._metadata(body)

        now = self.ctx.now()
        secret = None
        values: dict[str, Any] = {"metadata": metadata}
        if not uses_secret(metadata):
            values.update(secret_hash=None, secret_expires_at=0)
        elif record.secret_hash is None:
            secret = new_token()
            values.update(secret_hash=token_hash(secret), secret_expires_at=self._secret_expiry(now))
        public = metadata["token_endpoint_auth_method"] == "none"
        values["metadata_digest"] = metadata_digest(metadata) if public else None
        rat = new_token()
        values["rat_hash"] = token_hash(rat)
        if not await self.ctx.store.update_client(record.client_id, expected_rat_hash=record.rat_hash, **values):
            raise InvalidToken("registration access token is invalid")
        record = replace(record, **values)
        await self.ctx.store.audit("client.updated", client_id=record.client_id, **_audit_detail(metadata),
                                   secret_issued=secret is not None)
        return json_response(self._information(record, secret=secret, rat=rat))

    # -- helpers -------------------------------------------------------------------------------------

    def _metadata(self, body: dict[str, Any]) -> dict[str, Any]:
        """Merge a verified software statement over the request (its values win), then validate."""
        request = dict(body)
        statement = request.get("software_statement")
        if statement is not None:
            claims = verify_software_statement(statement, self.ctx.settings.software_statement_issuers,
                                               self.ctx.now())
            request.update(claims)
            request["software_statement"] = statement
        return validate_client_metadata(request, self.ctx.settings)

    def _secret_expiry(self, now: int) -> int:
        ttl = self.ctx.settings.client_secret_ttl
        return now + ttl if ttl > 0 else 0

    def _information(self, record: ClientRecord, *, secret: str | None = None, rat: str | None = None
                     ) -> dict[str, Any]:
        """The client information response (RFC 7591 §3.2.1, RFC 7592 §3)."""
        info: dict[str, Any] = {"client_id": record.client_id}
        if secret is not None:
            info["client_secret"] = secret
        info["client_id_issued_at"] = record.issued_at
        if uses_secret(record.metadata):
            info["client_secret_expires_at"] = record.secret_expires_at
        info.update(record.metadata)
        if rat is not None:
            info["registration_access_token"] = rat
            info["registration_client_uri"] = f"{self.ctx.issuer}/register/{quote(record.client_id, safe='')}"
        return info


def _audit_detail(metadata: dict[str, Any]) -> dict[str, Any]:
    """What the audit log keeps about a registration: no secrets, no contacts."""
    detail: dict[str, Any] = {
        "auth_method": metadata["token_endpoint_auth_method"],
        "grant_types": metadata["grant_types"],
        "redirect_uris": metadata.get("redirect_uris", []),
    }
    for name in ("client_name", "software_id", "software_version"):
        if name in metadata:
            detail[name] = metadata[name]
    if "software_statement" in metadata:
        detail["software_statement"] = True
    return detail
