"""Human approvals, built once for every mechanism that sometimes needs a person: OAuth consent, CIBA,
AAuth escalation, Agent Auth consent, payments over budget.

A request is created pending, reaches its person on their channels, and is decided exactly once (approved or
denied) by that person or an admin before it expires; the database enforces the single decision, so it holds
across processes. Waiting parties poll or subscribe (server-sent events) for the outcome.
"""

from authgate.approvals.service import (
    AlreadyDecided,
    ApprovalError,
    ApprovalRequest,
    ApprovalService,
    Expired,
    NotAllowed,
    NotFound,
    Notifier,
)

__all__ = [
    "AlreadyDecided",
    "ApprovalError",
    "ApprovalRequest",
    "ApprovalService",
    "Expired",
    "NotAllowed",
    "NotFound",
    "Notifier",
]
