"""Asking the agent's person before it pays over its own budget: :class:`CibaApprover`, an approval hook for
``Budget(approver=...)`` (authgate.agent.x402) that asks through an authorization server's CIBA backchannel
(OpenID CIBA Core 1.0, poll mode). With authgate the person finds the payment in their approvals inbox (and on
its push channels: webhook, e-mail, ...) and approves or denies it there::

    approver = CibaApprover("https://auth.example.com", client_id, client_secret, login_hint="alice",
                            scope="payments:approve")
    budget = Budget(max_per_request="$0.10", max_per_day="$2", approver=approver)

Per question: discover ``backchannel_authentication_endpoint`` and ``token_endpoint`` from the issuer's RFC 8414
metadata (once; its ``issuer`` must be the one configured), send the authentication request (HTTP Basic client
authentication; ``binding_message`` = the payment in one printable line of at most 256 characters, the same
text the person sees; ``requested_expiry`` = ``timeout``), then poll the token endpoint every ``interval``
seconds (5 s more after each ``slow_down``). Tokens → approved (they are thrown away unused: the decision is the
answer, so ask for a scope that grants nothing else); ``access_denied`` or ``expired_token`` → denied; no decision
within ``timeout`` → denied. Any other failure raises :class:`ApprovalError`, which the budget turns into a
refusal: an approval that cannot be obtained never pays.

The client must be a confidential client registered for ``urn:openid:params:grant-type:ciba`` and allowed
``scope``. Depends on httpx only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from authgate.agent.x402 import ApprovalQuestion

CIBA_GRANT_TYPE = "urn:openid:params:grant-type:ciba"
METADATA_PATH = "/.well-known/oauth-authorization-server"
SLOW_DOWN_STEP = 5
MAX_ANSWER = 64 * 1024


class ApprovalError(Exception):
    """The approval could not be asked for or read (the server refused the request, or answered nonsense)."""


class CibaApprover:
    def __init__(self, issuer: str, client_id: str, client_secret: str, *, login_hint: str, scope: str,
                 resource: str | None = None, timeout: float = 300.0, http: httpx.AsyncClient | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not scope.strip() or scope.strip() == "openid":
            raise ValueError("scope: name a scope besides openid (CIBA issues tokens for it)")
        self.issuer = issuer.rstrip("/")
        self._auth = httpx.BasicAuth(client_id, client_secret)
        self.login_hint = login_hint
        self.scope = scope
        self.resource = resource
        self.timeout = timeout
        self.http = http or httpx.AsyncClient(timeout=30.0, follow_redirects=False)
        self.sleep = sleep
        self.clock = clock
        self._endpoints: tuple[str, str] | None = None

    def __repr__(self) -> str:  # never the secret
        return f"CibaApprover(issuer={self.issuer!r}, login_hint={self.login_hint!r})"

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any]:
        if len(response.content) > MAX_ANSWER:
            raise ApprovalError(f"{response.url}: answer too large")
        try:
            body = response.json()
        except ValueError:
            raise ApprovalError(f"{response.url}: HTTP {response.status_code}, not JSON") from None
        if not isinstance(body, dict):
            raise ApprovalError(f"{response.url}: HTTP {response.status_code}, not a JSON object")
        return body

    async def endpoints(self) -> tuple[str, str]:
        """(backchannel authentication endpoint, token endpoint) from the issuer's metadata."""
        if self._endpoints is None:
            meta = self._json(await self.http.get(self.issuer + METADATA_PATH))
            bc, token = meta.get("backchannel_authentication_endpoint"), meta.get("token_endpoint")
            if meta.get("issuer") != self.issuer or not isinstance(bc, str) or not isinstance(token, str):
                raise ApprovalError(f"{self.issuer}: no CIBA backchannel in the server's metadata")
            self._endpoints = (bc, token)
        return self._endpoints

    async def __call__(self, question: ApprovalQuestion) -> bool:
        bc, token_endpoint = await self.endpoints()
        form = {"scope": self.scope, "login_hint": self.login_hint, "binding_message": question.summary(256),
                "requested_expiry": str(max(1, int(self.timeout)))}
        if self.resource is not None:
            form["resource"] = self.resource
        started = self._json(await self.http.post(bc, data=form, auth=self._auth))
        auth_req_id, interval = started.get("auth_req_id"), started.get("interval", 5)
        if not isinstance(auth_req_id, str) or not auth_req_id:
            raise ApprovalError(f"backchannel authentication refused: {str(started.get('error'))[:100]}")
        if isinstance(interval, bool) or not isinstance(interval, int) or not 0 < interval <= 600:
            interval = 5
        deadline = self.clock() + self.timeout
        while True:
            if self.clock() + interval > deadline:
                return False
            await self.sleep(interval)
            answer = await self.http.post(token_endpoint, auth=self._auth,
                                          data={"grant_type": CIBA_GRANT_TYPE, "auth_req_id": auth_req_id})
            body = self._json(answer)
            if answer.status_code == 200 and isinstance(body.get("access_token"), str):
                return True
            error = body.get("error")
            if error == "authorization_pending":
                continue
            if error == "slow_down":
                interval += SLOW_DOWN_STEP
                continue
            if error in ("access_denied", "expired_token"):
                return False
            raise ApprovalError(f"token endpoint: HTTP {answer.status_code} {str(error)[:100]}")
