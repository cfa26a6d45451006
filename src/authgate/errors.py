"""Protocol errors and how they render.

One class per RFC error code; each knows its HTTP status. ``description`` reaches the client, ``debug`` only
the log. Descriptions are checked against RFC 6749 §5.2's character set (printable ASCII without ``"`` and
``\\``) so a careless message can never break a header or a client's parser.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

#: RFC 6749 §5.2 error_description characters. Used with ``fullmatch``: ``$`` would let a trailing newline in.
_DESCRIPTION_OK = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")


class OAuthError(Exception):
    """Base of every error rendered as RFC 6749 error JSON."""

    error = "invalid_request"
    status_code = 400

    def __init__(
        self,
        description: str = "",
        *,
        debug: str = "",
        headers: Mapping[str, str] | None = None,
        status_code: int | None = None,
    ) -> None:
        if not _DESCRIPTION_OK.fullmatch(description):
            raise ValueError("error_description must be printable ASCII without quote or backslash")
        super().__init__(description or self.error)
        self.description = description
        self.debug = debug
        self.headers = dict(headers or {})
        if status_code is not None:
            self.status_code = status_code

    def body(self) -> dict[str, str]:
        body = {"error": self.error}
        if self.description:
            body["error_description"] = self.description
        return body

    def render(self) -> tuple[int, dict[str, str], bytes]:
        headers = {"Content-Type": "application/json", **NO_STORE, **self.headers}
        return self.status_code, headers, json.dumps(self.body()).encode()


class InvalidRequest(OAuthError):
    """The request is missing a parameter, repeats one, or is otherwise malformed (RFC 6749 §5.2)."""

    error = "invalid_request"


class InvalidClient(OAuthError):
    """Client authentication failed (RFC 6749 §5.2): unknown client, wrong secret, unsupported method."""

    error = "invalid_client"
    status_code = 401


class InvalidGrant(OAuthError):
    """The grant (code, refresh token, credentials) is invalid, expired, revoked, or not this client's."""

    error = "invalid_grant"


class UnauthorizedClient(OAuthError):
    """The client may not use this grant type (RFC 6749 §5.2)."""

    error = "unauthorized_client"


class UnsupportedGrantType(OAuthError):
    error = "unsupported_grant_type"


class UnsupportedResponseType(OAuthError):
    error = "unsupported_response_type"


class InvalidScope(OAuthError):
    """The requested scope is unknown, malformed, or exceeds what was granted (RFC 6749 §5.2)."""

    error = "invalid_scope"


class InvalidTarget(OAuthError):
    """The ``resource`` parameter names a resource this server does not issue tokens for (RFC 8707 §2)."""

    error = "invalid_target"


class AccessDenied(OAuthError):
    error = "access_denied"
    status_code = 403


class UnsupportedTokenType(OAuthError):
    """Revocation of this token type is not supported (RFC 7009 §2.2.1)."""

    error = "unsupported_token_type"


class InvalidRedirectURI(OAuthError):
    """A registered redirect URI is not acceptable (RFC 7591 §3.2.2)."""

    error = "invalid_redirect_uri"


class InvalidClientMetadata(OAuthError):
    """A client metadata value is invalid or refused (RFC 7591 §3.2.2)."""

    error = "invalid_client_metadata"


class InvalidSoftwareStatement(OAuthError):
    """The software statement is malformed, badly signed or expired (RFC 7591 §3.2.2)."""

    error = "invalid_software_statement"


class UnapprovedSoftwareStatement(OAuthError):
    """The software statement is well formed but its issuer or content is not trusted (RFC 7591 §3.2.2)."""

    error = "unapproved_software_statement"


class RequestTooLarge(OAuthError):
    error = "invalid_request"
    status_code = 413


class TooManyRequests(OAuthError):
    error = "rate_limited"
    status_code = 429

    def __init__(self, retry_after: int, description: str = "too many requests") -> None:
        super().__init__(description, headers={"Retry-After": str(retry_after)})


class MethodNotAllowed(OAuthError):
    error = "invalid_request"
    status_code = 405


class BearerError(OAuthError):
    """An RFC 6750 error: rendered with a ``WWW-Authenticate: Bearer`` challenge."""

    error = "invalid_token"
    status_code = 401

    def __init__(self, description: str = "", *, challenge: Mapping[str, str] | None = None, debug: str = "") -> None:
        params = {"error": self.error, **({"error_description": description} if description else {})}
        params.update(challenge or {})
        super().__init__(description, debug=debug, headers={"WWW-Authenticate": bearer_challenge(params)})


class InvalidToken(BearerError):
    """The bearer token is missing, expired, revoked, malformed, or for another audience (RFC 6750 §3.1)."""

    error = "invalid_token"
    status_code = 401


class InsufficientScope(BearerError):
    """The token is valid but lacks a scope this request needs (RFC 6750 §3.1)."""

    error = "insufficient_scope"
    status_code = 403


def bearer_challenge(params: Mapping[str, str]) -> str:
    """Render ``Bearer k="v", …``; values are already restricted to header-safe characters."""
    if not params:
        return "Bearer"
    return "Bearer " + ", ".join(f'{k}="{v}"' for k, v in params.items())


def printable(value: str, limit: int = 100) -> str:
    """Make untrusted text safe to quote inside an ``error_description``."""
    return "".join(ch for ch in value[:limit] if _DESCRIPTION_OK.fullmatch(ch))
