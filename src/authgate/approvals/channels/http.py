"""POST through the SSRF guard for webhooks and the SMS API: the guarded :class:`authgate.net.Fetcher` (same
URL rules, connect-time address vetting, pinned IP, one deadline, no redirects, capped body)."""

from __future__ import annotations

from authgate.net.fetch import Fetcher

MAX_RESPONSE_BYTES = 4096


class GuardedPoster(Fetcher):
    """Kept as a name for the channels; :meth:`Fetcher.post` does the work."""
