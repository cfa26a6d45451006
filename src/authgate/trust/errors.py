"""The one refusal type of the trust checks: a stable ``code`` (authgate.trust.wire ERR_*), a human
``description`` and the HTTP status a resource should answer with."""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from authgate.trust.wire import ERR_UNAVAILABLE

#: What a trust store that cannot be reached raises (asyncpg/aiosqlite errors arrive wrapped by SQLAlchemy;
#: refused connections and timeouts as OSError): never a decision, always ``unavailable()``.
STORE_ERRORS: tuple[type[Exception], ...] = (SQLAlchemyError, OSError)


class TrustError(Exception):
    def __init__(self, code: str, description: str, *, status: int = 403, approval_id: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description
        self.status = status
        #: Set on ``budget_approval_pending``: the approval the agent waits for and repeats in Authgate-Approval.
        self.approval_id = approval_id
        #: Response headers that tell the agent what would do (``Authgate-Attestation-Required``, ``Retry-After``).
        self.headers = dict(headers or {})
        #: Set once the refusal is in the audit log (authgate.trust.audit), so an outer check does not write it again.
        self.audited = False

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.code, "error_description": self.description}
        if self.approval_id is not None:
            out["approval_id"] = self.approval_id
        return out


def unavailable() -> TrustError:
    """The refusal for a check that could not read its database: 503, nothing decided."""
    return TrustError(ERR_UNAVAILABLE, "the trust checks cannot reach their database; try again shortly",
                      status=503, headers={"Retry-After": "5"})
