"""What an MCP host supplies to the official ``mcp`` SDK client when no person is at a browser: token storage
and a stand-in browser that follows the authorization URL of an auto-approving server (development only)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
from mcp.client.auth import TokenStorage
from mcp.client.auth.oauth2 import AuthorizationCodeResult  # type: ignore[attr-defined]
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken


class MemoryStorage(TokenStorage):
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


@dataclass
class HeadlessBrowser:
    """Follows the authorization URL without following the final redirect, and hands the SDK the code,
    ``state`` and ``iss`` it carried. ``override`` lets tests tamper with what comes back."""

    override: dict[str, str] = field(default_factory=dict)
    landed: dict[str, str] = field(default_factory=dict)
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    #: Called with each authorization response (the demo prints it).
    notify: Callable[[Any], None] | None = None

    async def redirect_handler(self, url: str) -> None:
        self.authorize_requests.append({k: v[0] for k, v in parse_qs(urlsplit(url).query).items()})
        async with httpx2.AsyncClient() as browser:
            response = await browser.get(url, follow_redirects=False)
        if self.notify is not None:
            self.notify(response)
        if response.status_code not in (302, 303):
            raise RuntimeError(f"authorization endpoint answered {response.status_code}, not a redirect")
        location = response.headers["location"]
        self.landed = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}

    async def callback_handler(self) -> Any:
        q = {**self.landed, **self.override}
        return AuthorizationCodeResult(code=q.get("code", ""), state=q.get("state"), iss=q.get("iss"))
