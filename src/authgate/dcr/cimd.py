"""Client ID metadata documents (stub: filled in by the CIMD work)."""

from __future__ import annotations

from authgate.clock import Clock
from authgate.config import Settings
from authgate.oauth.clients import MetadataDocumentResolver


def make_resolver(settings: Settings, clock: Clock) -> MetadataDocumentResolver | None:
    return None
