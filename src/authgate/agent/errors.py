"""Exceptions raised by the agent SDK.

::

    AgentAuthError                  base; ``error``/``error_description``/``status_code`` from the server
    ├── DiscoveryError              protected-resource or authorization-server metadata unusable
    │   └── IssuerMismatchError     AS metadata ``issuer`` differs from the expected issuer
    ├── RegistrationError           dynamic client registration refused or unusable
    ├── AuthorizationError          the authorization step failed (error response, bad callback)
    │   ├── UserDeclinedError       the user (or the AS on their behalf) said no: ``access_denied``
    │   ├── StateMismatchError      callback ``state`` differs from the one we sent (CSRF)
    │   └── IssMismatchError        RFC 9207 ``iss`` missing or different (mix-up attack)
    ├── InteractionRequiredError    a person is needed but no interaction callback is configured
    └── TokenError                  the token endpoint refused or answered something unusable
        └── AgentAuthorizationError     the AAuth agent authorization grant failed (authgate.agent.aauth)
            ├── IdentityNotVerified     ``invalid_grant``: the details identify no single customer
            ├── AgentAuthorizationDenied    ``access_denied``: the customer said no
            ├── AgentAuthorizationExpired   ``expired_token``: nobody decided in time
            └── AgentAuthorizationTimeout   the caller's own timeout ran out while waiting

Messages never contain tokens, secrets or authorization codes.
"""

from __future__ import annotations

_MAX_TEXT = 300


def _clean(text: object) -> str | None:
    """Server-provided text, made safe for logs: strings only, printable, bounded."""
    if not isinstance(text, str):
        return None
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in text)
    return cleaned[:_MAX_TEXT]


class AgentAuthError(Exception):
    """Getting OAuth access failed. ``error`` is the server's OAuth error code, when it sent one."""

    def __init__(
        self,
        message: str,
        *,
        error: object = None,
        error_description: object = None,
        status_code: int | None = None,
    ) -> None:
        self.error = _clean(error)
        self.error_description = _clean(error_description)
        self.status_code = status_code
        detail = message
        if self.error:
            detail += f" (error={self.error}"
            if self.error_description:
                detail += f": {self.error_description}"
            detail += ")"
        elif status_code is not None:
            detail += f" (HTTP {status_code})"
        super().__init__(detail)


class DiscoveryError(AgentAuthError):
    """Protected-resource (RFC 9728) or authorization-server (RFC 8414 / OIDC) metadata is unusable."""


class IssuerMismatchError(DiscoveryError):
    """The authorization-server metadata names another issuer than the one it was fetched for."""


class RegistrationError(AgentAuthError):
    """Dynamic client registration (RFC 7591) was refused, or the registered client is unusable."""


class AuthorizationError(AgentAuthError):
    """The authorization request failed: the AS answered with an error, or the callback was invalid."""


class UserDeclinedError(AuthorizationError):
    """The authorization request was denied (``access_denied``)."""


class StateMismatchError(AuthorizationError):
    """The callback's ``state`` is missing or is not the one we sent."""


class IssMismatchError(AuthorizationError):
    """The callback's RFC 9207 ``iss`` is missing (but advertised) or names another issuer."""


class InteractionRequiredError(AgentAuthError):
    """The authorization code flow needs a person, and no interaction callback was configured."""


class TokenError(AgentAuthError):
    """The token endpoint refused the request or answered with an unusable token response."""
