"""The trust checks' refusals and the payments a paywall receives are in the unified audit log when the gateway's
``[trust]`` names the server's database (tests.gateway.test_trust's world: a separate engine on that database, as
another process would have): budget (pending once, then denied), mandate, attestation and kill refusals — for
payments, bearer tokens and Agent Auth signatures — and ``x402.payment_received``; allowed requests write
nothing; the dashboard's charts count them."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from authgate.dashboard import queries
from authgate.store import tables as t
from authgate.trust import audit, mandates
from authgate.trust import wire as tw
from authgate.trust.mandates import Terms
from tests.gateway import test_trust as gateway
from tests.gateway.test_trust import PAYEE, PRICE, PS, World, _error
from tests.x402.test_paywall import payer_wallet

# The gateway tests' world (fixtures): the server, and the gateway on the server's database by URL.
shared = gateway.shared
world = gateway.world


async def _last_id(world: World) -> int:
    async with world.ctx.store.engine.connect() as conn:
        return int((await conn.execute(sa.select(sa.func.coalesce(sa.func.max(t.audit_log.c.id), 0)))).scalar_one())


CHECK_EVENTS = {*audit.EVENT_DENIED.values(), audit.EVENT_PENDING, audit.EVENT_RECEIVED}


async def _events(world: World, after: int) -> list[dict[str, Any]]:
    """The checks' events (not the operator's trust.budget_set, trust.killed…)."""
    return [e for e in await queries.audit_since(world.ctx.store, after) if e["event"] in CHECK_EVENTS]


async def test_refusals_and_payments_at_the_gateway_are_audited(world: World) -> None:
    wallet = payer_wallet(world.fac)
    payer = wallet.address.lower()
    start = await _last_id(world)

    # allowed requests write nothing (a bearer token, an Agent Auth signature) until a payment settles
    token = await world.token()
    assert (await world.get("/weather", token=token)).status_code == 200
    assert (await world.get("/weather", signed=world.agent_token)).status_code == 200
    assert await _events(world, start) == []
    paid = await world.get("/paid", pay=True, wallet=wallet)
    assert paid.status_code == 200
    (received,) = await _events(world, start)
    assert received["event"] == "x402.payment_received" and received["client_id"] == payer
    detail = received["detail"]
    assert detail["tx"].startswith("0x") and len(detail["tx"]) == 66 and detail["network"]
    assert (detail["payer"], detail["payee"], detail["amount"], detail["path"], detail["method"]) == (
        payer, PAYEE.lower(), str(PRICE), "/paid", "GET")

    # budget: over → asked once (the repeat while pending is not written again) → denied
    await world.ctx.trust.set_budget(payer, per_day=PRICE, approver=world.owner)
    mark = await _last_id(world)
    over = await world.get("/paid", pay=True, wallet=wallet)
    approval_id = over.json()["approval_id"]
    repeat = {tw.APPROVAL_HEADER: approval_id}
    assert _error(await world.get("/paid", pay=True, wallet=wallet, headers=repeat)) == tw.ERR_BUDGET_PENDING
    await world.ctx.approvals.decide(approval_id, False, by=world.owner, channel="web")
    assert _error(await world.get("/paid", pay=True, wallet=wallet, headers=repeat)) == tw.ERR_BUDGET_DENIED
    events = await _events(world, mark)
    assert [(e["event"], e["detail"]["code"]) for e in events] == [
        ("trust.budget_pending", tw.ERR_BUDGET_PENDING), ("trust.budget_denied", tw.ERR_BUDGET_DENIED)]
    assert all(e["detail"]["approval_id"] == approval_id and e["client_id"] == payer for e in events)
    await world.ctx.trust.delete_budget(payer)

    # mandate
    outside, _ = await mandates.issue(world.ctx.keys, world.ctx.trust, issuer=PS, subject=world.owner,
                                      agent=wallet.address, terms=Terms(("GET /weather",), (PAYEE,), 2 * PRICE))
    mark = await _last_id(world)
    assert _error(await world.get("/paid", pay=True, wallet=wallet, headers={tw.MANDATE_HEADER: outside})) == \
        tw.ERR_MANDATE_ROUTE
    (refused,) = await _events(world, mark)
    assert refused["event"] == "trust.mandate_denied" and refused["detail"]["code"] == tw.ERR_MANDATE_ROUTE
    assert outside not in str(refused["detail"])  # never the token

    # attestation (a bearer request, no payment), audited once
    mark = await _last_id(world)
    assert _error(await world.get("/adult", token=token)) == tw.ERR_ATTESTATION_MISSING
    (refused,) = await _events(world, mark)
    assert (refused["event"], refused["client_id"], refused["detail"]["path"]) == (
        "trust.attestation_denied", "client-1", "/adult")

    # the kill switch: a payer, an OAuth client's token, an Agent Auth agent
    await world.ctx.killswitch.kill("agent", wallet.address, by="admin")
    await world.ctx.killswitch.kill("client", "client-1", by="admin")
    await world.ctx.killswitch.kill("agent", world.agent_id, by="admin")
    mark = await _last_id(world)
    assert _error(await world.get("/paid", pay=True, wallet=wallet)) == tw.ERR_KILLED
    assert (await world.get("/weather", token=token)).status_code == 401
    assert (await world.get("/weather", signed=world.agent_token)).status_code == 401
    kills = await _events(world, mark)
    assert [(e["event"], e["client_id"], e["detail"]["mechanism"]) for e in kills] == [
        ("trust.kill_denied", payer, "x402"), ("trust.kill_denied", "client-1", "oauth"),
        ("trust.kill_denied", world.agent_id, "agentauth")]
    assert all(e["detail"]["code"] == tw.ERR_KILLED for e in kills)
    assert world.fac.settle_calls == 1

    # the dashboard's charts: denials from these events, the payment received
    data = await queries.series(world.ctx.store, int(world.clock.now()), 3600, 24)
    trust_denials = [e for e in await _events(world, start) if queries.is_denial(e["event"])]
    assert len(trust_denials) == 6  # budget denied, mandate, attestation, three kills (pending is not a denial)
    assert data.denials[-1] >= len(trust_denials) and sum(data.payments) == 1
