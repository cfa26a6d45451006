"""The one refusal type of the trust checks: a stable ``code`` (authgate.trust.wire ERR_*), a human
``description`` and the HTTP status a resource should answer with."""

from __future__ import annotations

from typing import Any


class TrustError(Exception):
    def __init__(self, code: str, description: str, *, status: int = 403, approval_id: str | None = None) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description
        self.status = status
        #: Set on ``budget_approval_pending``: the approval the agent waits for and repeats in Authgate-Approval.
        self.approval_id = approval_id

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.code, "error_description": self.description}
        if self.approval_id is not None:
            out["approval_id"] = self.approval_id
        return out
