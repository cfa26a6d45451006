"""Data the dashboard tests (and browser tests) look at: an admin, people, an OAuth grant, an Agent Auth agent
with remembered consent, and x402 payments on Base Sepolia and on the embedded chain. Made through the same
store APIs the server uses, so the pages read real rows."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from authgate.context import ServerContext
from authgate.oauth.tokens import Grant, issue_tokens, new_grant_id
from authgate.store.agentauth import AgentAuthRepository, AgentRecord
from authgate.store.payments import NewPayment, PaymentRepository
from authgate.trust.mandates import Terms, issue
from authgate.trust.store import TrustStore
from tests.helpers import add_client, add_user

PASSWORD = "correct horse"
SEPOLIA = "eip155:84532"
EMBEDDED = "eip155:31337"


@dataclass
class World:
    admin: str
    alice: str
    bob: str
    client_id: str
    grant_id: str
    refresh_token: str
    bob_grant_id: str
    agent_id: str
    paid_tx: str
    payment_id: str
    local_payment_id: str
    mandate_jti: str
    bob_mandate_jti: str


async def grant(ctx: ServerContext, client_id: str, subject: str, scopes: tuple[str, ...] = ("read",
                                                                                          "offline_access")
                ) -> tuple[str, str]:
    client = await ctx.clients.get(client_id)
    assert client is not None
    gid = new_grant_id()
    tokens = await issue_tokens(ctx, client, Grant(client_id, subject, scopes, "https://api.example", gid),
                                refresh=True)
    return gid, tokens["refresh_token"]


async def payment(ctx: ServerContext, network: str, payer: str, tx: str | None, amount: str = "10000") -> str:
    repo = PaymentRepository(ctx.store)
    pid = secrets.token_hex(8)
    now = ctx.now()
    await repo.reserve(NewPayment(pid, network, "0x" + "a" * 40, payer, "0x" + secrets.token_hex(32),
                                  "0x" + "b" * 40, amount, "exact", "https://api.example/weather",
                                  "0x" + secrets.token_hex(32), now + 600, "test", now + 60))
    if tx:
        await repo.mark_settled(pid, tx)
    return pid


async def seed(ctx: ServerContext) -> World:
    store = ctx.store
    admin = await add_user(store, "root", PASSWORD)
    await store.update_user("root", is_admin=True)
    alice = await add_user(store, "alice", PASSWORD)
    bob = await add_user(store, "bob", PASSWORD)
    client_id, _ = await add_client(store, client_name="Notes helper")
    grant_id, refresh = await grant(ctx, client_id, alice)
    bob_grant_id, _ = await grant(ctx, client_id, bob)
    agents = AgentAuthRepository(store)
    agent_id = "aauth:journal-bot@127.0.0.1"
    now = ctx.now()
    await agents.add_agent(AgentRecord(agent_id, alice, "journal bot", "j" * 43, {"kty": "OKP"}, now, now, None))
    await agents.remember(alice, agent_id, "https://journal.example", ["journal:read"], 3600)
    paid_tx = "0x" + secrets.token_hex(32)
    payment_id = await payment(ctx, SEPOLIA, "0x" + "c" * 40, paid_tx)
    local_payment_id = await payment(ctx, EMBEDDED, "0x" + "d" * 40, "0x" + secrets.token_hex(32))
    trust = TrustStore(store)
    terms = Terms(routes=("GET /weather",), payees=("0x" + "b" * 40,), cap_amount=50_000)
    _, mandate = await issue(ctx.keys, trust, issuer=ctx.issuer, subject=alice, agent=agent_id, terms=terms)
    _, bob_mandate = await issue(ctx.keys, trust, issuer=ctx.issuer, subject=bob, agent=client_id, terms=terms)
    await trust.set_budget(agent_id, per_request=20_000, per_day=100_000, approver=alice)
    return World(admin, alice, bob, client_id, grant_id, refresh, bob_grant_id, agent_id, paid_tx, payment_id,
                 local_payment_id, mandate.jti, bob_mandate.jti)
