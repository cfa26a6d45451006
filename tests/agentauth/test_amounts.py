"""Amounts (authgate profile): a call that spends carries its amount in the resource token and the auth token;
above ``agentauth_amount_threshold`` the person is asked every time, below it remembered low-risk consent
suffices; a token for one amount does not pay another."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from authgate.agent.agentauth import AgentAuth, AgentKey
from authgate.agentauth.resource import require
from authgate.clock import FrozenClock
from authgate.config import Settings
from authgate.store import Store
from tests.interop.test_aauth_protocol import RES, World, make_world


def amount_of(scope: Any, body: bytes) -> dict[str, str]:
    return {"value": str(json.loads(body)["amount"]), "currency": "EUR"}


@pytest.fixture
async def payments(settings: Settings, store: Store, clock: FrozenClock) -> AsyncIterator[World]:
    w = await make_world(settings, store, clock, rules=[require("/pay", "auth", "pay", amount=amount_of)],
                         agentauth_scope_risk={"pay": "low"}, agentauth_amount_threshold=100)
    yield w
    await w.http.aclose()


def sdk(w: World, asked: list[dict[str, Any]]) -> AgentAuth:
    async def on_interaction(url: str, code: str) -> None:
        page = await w.http.get(url)
        approval = await w.ctx.approvals.get(page.headers["location"].rsplit("/", 1)[1])
        assert approval is not None
        asked.append(approval.details)
        await w.ctx.approvals.decide(approval.id, True, by=w.owner, channel="web")

    return AgentAuth(AgentKey(w.key), w.agent_token, http=w.http, on_interaction=on_interaction, timeout=10)


async def test_amounts_above_the_threshold_ask_every_time(payments: World) -> None:
    w = payments
    asked: list[dict[str, Any]] = []
    auth = sdk(w, asked)
    r = await w.http.post(RES + "/pay", json={"amount": "20.00"}, auth=auth)
    assert r.status_code == 200 and len(asked) == 1  # first time: the scope is not remembered yet
    assert asked[0]["amount"] == "20.00" and asked[0]["currency"] == "EUR" and asked[0]["why_asked"] == "not_remembered"
    r = await w.http.post(RES + "/pay", json={"amount": "30.00"}, auth=auth)
    assert r.status_code == 200 and len(asked) == 1  # another amount: a new token, from remembered consent
    for _ in range(2):
        r = await w.http.post(RES + "/pay", json={"amount": "250.00"}, auth=auth)
        assert r.status_code == 200
    assert len(asked) == 3 and all(a["why_asked"] == "amount_over_threshold" for a in asked[1:])


async def test_a_token_for_one_amount_does_not_pay_another(payments: World) -> None:
    w = payments
    auth = sdk(w, [])
    assert (await w.http.post(RES + "/pay", json={"amount": "5"}, auth=auth)).status_code == 200
    token = auth._state.auth[RES].value
    raw = json.dumps({"amount": "6"}).encode()
    request = w.http.build_request("POST", RES + "/pay", content=raw, headers={"Content-Type": "application/json"})
    auth.sign(request, token)
    r = await w.http.send(request)
    assert r.status_code == 401 and "resource-token=" in r.headers["aauth-requirement"]
    bad = w.http.build_request("POST", RES + "/pay", content=b'{"amount": "1e9"}',
                               headers={"Content-Type": "application/json"})
    auth.sign(bad, token)
    assert (await w.http.send(bad)).status_code == 400


def test_amount_claim_shape() -> None:
    from authgate.agentauth.tokens import parse_amount

    assert parse_amount({"value": "12.50", "currency": "EUR"}) is not None
    for bad in ({"value": 12, "currency": "EUR"}, {"value": "-1", "currency": "EUR"}, {"value": "1"},
                {"value": "1", "currency": "E U R"}, "12", {"value": "1", "currency": "EUR", "x": 1}):
        with pytest.raises(ValueError):
            parse_amount(bad)
