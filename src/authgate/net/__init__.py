"""Outbound HTTP: every server-side fetch goes through ``authgate.net.fetch.Fetcher`` (the SSRF guard)."""

from authgate.net.fetch import Fetcher, FetchError, FetchResponse

__all__ = ["FetchError", "FetchResponse", "Fetcher"]
