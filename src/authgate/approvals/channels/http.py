"""POST through the SSRF guard: a sibling of :class:`authgate.net.Fetcher` (same URL rules, connect-time
address vetting, pinned IP, one deadline, no redirects, capped body) for webhooks and the SMS API."""

from __future__ import annotations

import anyio
import httpx

from authgate.net.fetch import Fetcher, FetchError, FetchResponse, _read

MAX_RESPONSE_BYTES = 4096


class GuardedPoster(Fetcher):
    async def post(self, url: str, *, content: bytes, headers: dict[str, str],
                   max_bytes: int = MAX_RESPONSE_BYTES) -> FetchResponse:
        """POST ``content``; raise :class:`FetchError` for a refused target or any transport failure. The
        response body is read up to ``max_bytes`` (the status is what callers care about)."""
        loopback_only = self._check_url(url)
        sent = {"Accept-Encoding": "identity", "User-Agent": "authgate", **headers}
        try:
            with anyio.fail_after(self.timeout):
                async with httpx.AsyncClient(
                    transport=self._make_transport(loopback_only),
                    follow_redirects=False,
                    trust_env=False,
                    timeout=self.timeout,
                ) as http, http.stream("POST", url, content=content, headers=sent) as response:
                    return await _read(response, max_bytes)
        except FetchError:
            raise
        except TimeoutError:
            raise FetchError("timeout") from None
        except Exception as exc:
            raise FetchError(f"transport: {type(exc).__name__}") from None
