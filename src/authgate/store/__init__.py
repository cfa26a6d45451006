"""Durable state behind one interface, on SQLite or PostgreSQL.

Single use (codes, refresh tokens, one-time initial access tokens) is decided by the database with
conditional updates, never by process memory, so it holds when many server processes share the store.
"""

from __future__ import annotations

from authgate.store.repository import (
    ApprovalRow,
    Artifact,
    AuditEntry,
    ClientRecord,
    NewArtifact,
    SigningKeyRow,
    Store,
    User,
)

__all__ = ["ApprovalRow", "Artifact", "AuditEntry", "ClientRecord", "NewArtifact", "SigningKeyRow", "Store", "User"]
