"""Out-of-band consent at the person server (-11 §3.5 step 6, ``requirement=approval``): the person has an
approval channel (a webhook to their own endpoint, standing in for push/SMS/e-mail), so the agent gets ``202``
with ``requirement=approval`` and no interaction URL or code; the person server reaches the person through the
channel, the person decides there, and the agent collects the auth token bound to its key by polling.
``Prefer: wait`` holds a poll until the decision lands (and no longer than asked)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

import aauth
from authgate.agent.agentauth import AgentAuth, AgentKey
from authgate.approvals.channels import ChannelRouter, GuardedPoster, WebhookChannel, verify_webhook_signature
from authgate.clock import FrozenClock
from authgate.config import Settings
from authgate.store import Store
from tests.agentauth.test_pending import ask
from tests.interop.test_aauth_protocol import PS, RES, World, make_world

SECRET = "w" * 40
HOOK = "https://hooks.alice.test/approvals"


class Phone:
    """The person's webhook receiver: checks each delivery's signature and keeps what arrived."""

    def __init__(self, clock: FrozenClock) -> None:
        self.clock = clock
        self.deliveries: list[dict[str, Any]] = []
        self.rang = asyncio.Event()

    def receive(self, request: httpx.Request) -> httpx.Response:
        assert str(request.url) == HOOK
        body = request.content
        assert verify_webhook_signature(SECRET, body, request.headers["authgate-signature"], now=self.clock.now())
        self.deliveries.append(json.loads(body))
        self.rang.set()
        return httpx.Response(204)

    async def next_request(self, w: World) -> dict[str, Any]:
        notifier = w.ctx.approvals.notifier
        assert isinstance(notifier, ChannelRouter)
        await notifier.drain(5)
        assert self.deliveries, "the person was not notified"
        return self.deliveries.pop(0)


@pytest.fixture
async def world(settings: Settings, store: Store, clock: FrozenClock) -> AsyncIterator[tuple[World, Phone]]:
    w = await make_world(settings, store, clock, approvals_webhook_secret=SECRET)
    assert await store.update_user("alice", webhook_url=HOOK)
    phone = Phone(clock)
    notifier = w.ctx.approvals.notifier
    assert isinstance(notifier, ChannelRouter)
    for channel in notifier.channels:
        if isinstance(channel, WebhookChannel):  # the real channel, delivering to the person's endpoint
            channel.poster = GuardedPoster(transport=httpx.MockTransport(phone.receive))
    yield w, phone
    await w.http.aclose()


async def poll(w: World, location: str, wait: int | None = None) -> httpx.Response:
    headers = aauth.sign_request("GET", location, {}, None, w.key, sig_scheme="jwt", jwt=w.agent_token)
    if wait is not None:
        headers["Prefer"] = f"wait={wait}"
    return await w.http.get(location, headers=headers)


def claims(token: str) -> dict[str, Any]:
    claims_: dict[str, Any] = aauth.tokens.common.parse_jwt(token)[1]
    return claims_


async def test_out_of_band_approval_then_the_agent_collects_its_token(world: tuple[World, Phone]) -> None:
    w, phone = world
    r = await ask(w)  # no "interaction" capability: only the person server can reach the person
    assert r.status_code == 202, r.text
    assert r.headers["aauth-requirement"] == "requirement=approval"  # no url, no code
    assert r.json() == {"status": "pending"} and r.headers["cache-control"] == "no-store"
    location = r.headers["location"]
    assert location.startswith(PS + "/agentauth/pending/") and r.headers["retry-after"] == "0"
    # the person server reached the person out of band, with what is asked and by whom
    hook = await phone.next_request(w)
    assert hook["type"] == "approval.requested" and hook["kind"] == "agentauth_consent"
    assert hook["subject"] == w.owner and hook["client_id"] == w.agent_id
    assert hook["details"]["resource"] == RES and hook["details"]["scopes"] == ["notes:read"]
    assert set(hook["links"]) == {"approve", "deny"} and hook["reason_is_unverified"] is True
    # undecided: still pending, still requirement=approval
    again = await poll(w, location)
    assert again.status_code == 202 and again.headers["aauth-requirement"] == "requirement=approval"
    # the person approves on their channel; the agent's next poll collects the token bound to its key
    await w.ctx.approvals.decide(hook["id"], True, by=w.owner, channel="webhook")
    done = await poll(w, location)
    assert done.status_code == 200, done.text
    token = done.json()["auth_token"]
    c = claims(token)
    assert c["aud"] == RES and c["iss"] == c["ps"] == PS and c["scope"] == "notes:read"
    assert c["cnf"]["jwk"] == aauth.public_key_to_jwk(w.key.public_key())
    headers = aauth.sign_request("GET", RES + "/notes", {}, None, w.key, sig_scheme="jwt", jwt=token)
    assert (await w.http.get(RES + "/notes", headers=headers)).status_code == 200
    assert (await poll(w, location)).status_code == 410  # collected once
    events = [e["event"] for e in await w.ctx.store.audit_events(100)]
    assert "agentauth.consent_asked" in events and "approval.delivered" in events


async def test_prefer_wait_returns_as_soon_as_the_decision_lands(world: tuple[World, Phone]) -> None:
    w, phone = world
    r = await ask(w)
    assert r.status_code == 202 and r.headers["aauth-requirement"] == "requirement=approval"
    location = r.headers["location"]
    hook = await phone.next_request(w)
    loop = asyncio.get_running_loop()
    # nobody decides: the poll is held for the wait asked for, then answers 202 again
    started = loop.time()
    held = await poll(w, location, wait=1)
    assert held.status_code == 202 and 0.9 <= loop.time() - started < 5

    async def person() -> None:
        await asyncio.sleep(0.5)
        await w.ctx.approvals.decide(hook["id"], True, by=w.owner, channel="webhook")

    deciding = asyncio.create_task(person())
    started = loop.time()
    done = await poll(w, location, wait=20)
    elapsed = loop.time() - started
    await deciding
    assert done.status_code == 200, done.text
    assert 0.4 <= elapsed < 5, elapsed  # held until the decision, answered right after it
    assert claims(done.json()["auth_token"])["cnf"]["jwk"] == aauth.public_key_to_jwk(w.key.public_key())


async def test_denied_on_the_channel_is_denied_for_the_agent(world: tuple[World, Phone]) -> None:
    w, phone = world
    r = await ask(w)
    hook = await phone.next_request(w)
    await w.ctx.approvals.decide(hook["id"], False, by=w.owner, channel="webhook")
    denied = await poll(w, r.headers["location"], wait=5)
    assert denied.status_code == 403 and denied.json()["error"] == "denied"
    assert "signature-error" not in denied.headers


async def test_the_sdk_waits_out_an_out_of_band_approval(world: tuple[World, Phone]) -> None:
    w, phone = world

    async def person() -> None:
        await asyncio.wait_for(phone.rang.wait(), 10)
        await w.ctx.approvals.decide(phone.deliveries[0]["id"], True, by=w.owner, channel="webhook")

    deciding = asyncio.create_task(person())
    seen: list[str] = []

    async def hook(request: httpx.Request) -> None:
        seen.append(request.headers.get("prefer", ""))

    http = httpx.AsyncClient(transport=w.http._transport, event_hooks={"request": [hook]})
    auth = AgentAuth(AgentKey(w.key), w.agent_token, http=http, timeout=10, prefer_wait=10)  # no on_interaction
    r = await http.get(RES + "/notes", auth=auth)
    await deciding
    assert r.status_code == 200 and r.json()["typ"] == "aa-auth+jwt"
    assert "wait=10" in seen  # the SDK asked the person server to hold its requests
    await http.aclose()
