"""Bearer token usage (RFC 6750) at a resource server: reading the token and answering with challenges.

Sans-I/O: :class:`BearerGuard` takes the ``Authorization`` header value(s) and the scopes an operation
needs, and returns :class:`AccessClaims` or raises an :class:`~authgate.errors.OAuthError` whose ``render()``
is the complete response. The challenges follow MCP authorization (RFC 9728 §5.1):

* no token:          ``401``, ``Bearer resource_metadata="…", scope="…"`` (no ``error``, RFC 6750 §3.1);
* bad token:         ``401``, ``Bearer error="invalid_token", …`` (the reason is only logged);
* too few scopes:    ``403``, ``Bearer error="insufficient_scope", scope="<every scope needed>", …``;
* malformed request: ``400``, ``Bearer error="invalid_request", …``.

Tokens are read from the ``Authorization`` header only (RFC 6750 §2.1); one in the query string is refused.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from authgate.errors import InsufficientScope, InvalidRequest, InvalidToken, OAuthError, bearer_challenge
from authgate.resource.metadata import ProtectedResource, advertisable, check_scopes
from authgate.resource.verifier import AccessClaims, TokenRejected, TokenVerifier, VerifierUnavailable

_B64TOKEN = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")  # RFC 6750 §2.1


class AuthenticationRequired(OAuthError):
    """No bearer token was presented: the challenge carries no ``error`` (RFC 6750 §3.1)."""

    error = "invalid_token"
    status_code = 401


class TemporarilyUnavailable(OAuthError):
    """The token could not be judged (the AS keys are unreachable); not the client's fault."""

    error = "temporarily_unavailable"
    status_code = 503


class BearerGuard:
    """Authenticates requests for one protected resource and words its challenges."""

    def __init__(self, verifier: TokenVerifier, resource: ProtectedResource) -> None:
        if verifier.audience != resource.resource:
            raise ValueError(
                f"verifier audience {verifier.audience!r} is not the protected resource {resource.resource!r}"
            )
        self.verifier = verifier
        self.resource = resource

    async def authenticate(
        self,
        authorization: str | Sequence[str] | None,
        required_scopes: Sequence[str] = (),
        *,
        token_in_query: bool = False,
    ) -> AccessClaims:
        """Verify the request's bearer token and check it carries every scope in ``required_scopes``."""
        token = self.extract(authorization, token_in_query=token_in_query)
        if token is None:
            raise self.missing_token(required_scopes)
        try:
            claims = await self.verifier.verify(token)
        except TokenRejected as exc:
            raise InvalidToken(
                "The access token is invalid", challenge=self._params(required_scopes), debug=str(exc)
            ) from exc
        except VerifierUnavailable as exc:
            raise TemporarilyUnavailable(
                "Token verification is temporarily unavailable", debug=str(exc), headers={"Retry-After": "5"}
            ) from exc
        self.check_scopes(claims, required_scopes)
        return claims

    def check_scopes(self, claims: AccessClaims, required_scopes: Sequence[str]) -> None:
        """Raise ``403 insufficient_scope`` naming every scope the operation needs, not just the missing."""
        if not claims.has_scopes(required_scopes):
            missing = sorted(set(required_scopes) - claims.scopes)
            raise InsufficientScope(
                "The access token lacks a required scope",
                challenge=self._params(required_scopes),
                debug=f"missing {missing} (sub={claims.subject!r}, client_id={claims.client_id!r})",
            )

    def extract(self, authorization: str | Sequence[str] | None, *, token_in_query: bool = False) -> str | None:
        """The bearer token, None when none was presented; ``400`` when the header is malformed."""
        values = [authorization] if isinstance(authorization, str) else list(authorization or ())
        if token_in_query:
            raise self.malformed("Access tokens are only accepted in the Authorization header")
        if not values:
            return None
        if len(values) > 1:
            raise self.malformed("More than one Authorization header")
        scheme, _, credentials = values[0].strip().partition(" ")
        if scheme.lower() != "bearer":
            return None  # another scheme is not a bearer token: answer with the plain challenge
        token = credentials.strip(" ")
        if not token or not _B64TOKEN.match(token):
            raise self.malformed("Malformed bearer token")
        return token

    def missing_token(self, required_scopes: Sequence[str] = ()) -> OAuthError:
        params = {"resource_metadata": self.resource.metadata_url}
        if scope := self._scope_param(required_scopes):
            params["scope"] = scope
        headers = {"WWW-Authenticate": bearer_challenge(params)}
        return AuthenticationRequired("A bearer token is required", headers=headers)

    def malformed(self, description: str) -> OAuthError:
        params = {"error": "invalid_request", "error_description": description,
                  "resource_metadata": self.resource.metadata_url}
        return InvalidRequest(description, headers={"WWW-Authenticate": bearer_challenge(params)})

    def _params(self, required_scopes: Sequence[str]) -> dict[str, str]:
        params = {"resource_metadata": self.resource.metadata_url}
        if scope := self._scope_param(required_scopes):
            params["scope"] = scope
        return params

    def _scope_param(self, required_scopes: Sequence[str]) -> str:
        scopes = advertisable(check_scopes(required_scopes)) or self.resource.scopes_supported
        return " ".join(scopes)
