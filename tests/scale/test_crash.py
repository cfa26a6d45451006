"""Crash safety (issue #9 item 3): ``kill -9`` a real process in the middle of its work, restart it, and check
what the clients and the durable state say afterwards.

- **Token issuance** (``authgate serve``): the client retries what it never got an answer for, and no grant is
  left half-written: every live refresh token in the database is one the client holds, and every code was
  honoured at most once.
- **Settlement** (``authgate facilitator`` on PostgreSQL, ``authgate devchain --block-time 1`` as the chain that
  outlives it): dozens of ``/settle`` calls in flight, killed while transactions wait in the mempool for their
  block; after the restart the paying agents retry, and on chain every authorization was used by exactly one
  transaction, every payment record is ``settled`` with that transaction, each retry is answered with the same
  hash as any answer given before the kill, and nothing was charged twice.
- **Settlement through the paywall**: a resource behind our Paywall settles through that facilitator process over
  HTTP; the process is killed while the paid request's transfer waits for its block, so the paywall answers 402
  (outcome unknown) and withholds the resource; after the restart the agent re-sends the same PAYMENT-SIGNATURE
  and gets 200 with the receipt of the transfer that landed; one transfer on chain, and a further copy of the
  signature is refused as a replay.
- **Approval decisions** (``authgate serve``): killed while decisions are being written; every approval is
  either decided once (status, decider, its one audit event, and the CIBA grant it unlocks) or still pending and
  decidable, and the agent polling it never sees an answer change.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from authgate.config import to_sqlalchemy_url
from authgate.crypto.hashing import token_hash
from authgate.demo.servers import free_port, serve
from authgate.oauth.ciba import CIBA_REQUEST
from authgate.oauth.metadata import CIBA_GRANT_TYPE
from authgate.store import Store
from authgate.store import tables as t
from authgate.x402 import errors as e
from authgate.x402 import localchain
from authgate.x402.chain import contract
from authgate.x402.eip3009 import ExactEvmPayload
from authgate.x402.facilitator import FacilitatorClient
from authgate.x402.paywall import Paywall, PaywallMiddleware
from authgate.x402.wire import FacilitatorRequest, PaymentPayload, PaymentRequired, SettleResponse
from tests.helpers import REDIRECT, add_client, add_user, authorize_params, pkce_pair, redirect_params
from tests.scale.cluster import Cluster, figure, fresh_database, server_env
from tests.scale.test_exactly_once import _cookies, _field
from tests.x402.facilitator_support import PAY_TO, pay, requirements
from tests.x402.test_chain_suite import devchain_process

pytestmark = pytest.mark.postgres

ISSUER = "https://authgate.test"
CODES = 40


async def _codes(http: httpx.AsyncClient, url: str, client_id: str) -> list[dict[str, str]]:
    forms = []
    for _ in range(CODES):
        verifier, challenge = pkce_pair()
        q = redirect_params(await http.get(url + "/authorize", params=authorize_params(client_id, challenge)))
        forms.append({"grant_type": "authorization_code", "code": q["code"], "redirect_uri": REDIRECT,
                      "code_verifier": verifier, "client_id": client_id})
    return forms


async def _scenario(c: Cluster, store: Store) -> None:
    client_id, _ = await add_client(store)
    async with httpx.AsyncClient(timeout=60) as http:
        forms = await _codes(http, c.urls[1], client_id)
        victim = c.procs[0]

        async def redeem(i: int) -> tuple[int, httpx.Response | None]:
            try:
                return i, await http.post(c.urls[0] + "/token", data=forms[i])
            except httpx.TransportError:
                return i, None  # the process died under this request

        tasks = [asyncio.ensure_future(redeem(i)) for i in range(CODES)]
        answered: dict[int, httpx.Response | None] = {}
        for done in asyncio.as_completed(tasks):
            i, response = await done
            answered[i] = response
            if victim.poll() is None:
                victim.send_signal(signal.SIGKILL)  # as soon as the first answer is out, the rest in flight
        victim.wait()
        c.restart(0)

        held: list[str] = []  # refresh tokens the client holds
        retried = lost = 0
        for i in range(CODES):
            first = answered[i]
            if first is not None and first.status_code == 200:
                held.append(first.json()["refresh_token"])
                continue
            assert first is None, first.text  # a first use is answered 200 or not at all
            retried += 1
            again = await http.post(c.urls[retried % 2] + "/token", data=forms[i])
            assert again.status_code in (200, 400), again.text
            if again.status_code == 200:
                held.append(again.json()["refresh_token"])
            else:
                assert again.json()["error"] == "invalid_grant"  # consumed by the dead process: replay, revoked
                lost += 1
        assert retried > 0, "the kill landed after every request was answered; nothing was tested"
        figure(f"crash, token issuance: answered before the kill: {CODES - retried}, retried: {retried}, of which "
               f"consumed by the dead process: {lost}")

        # No half-written grant: the live refresh tokens in the database are exactly the ones the client holds.
        now = int(store.clock.now())
        a = t.artifacts.c
        async with store.engine.connect() as conn:
            live = (await conn.execute(sa.select(sa.func.count()).select_from(t.artifacts).where(
                a.kind == "refresh_token", a.client_id == client_id, a.revoked_at.is_(None),
                a.consumed_at.is_(None), a.expires_at > now))).scalar()
        assert live == len(held)
        # And each held one works, once.
        for token in held:
            r = await http.post(c.urls[0] + "/token", data={"grant_type": "refresh_token", "client_id": client_id,
                                                            "refresh_token": token})
            assert r.status_code == 200, r.text


def test_kill_9_during_token_issuance_leaves_no_half_written_grant(tmp_path: Path) -> None:
    with fresh_database() as database:
        env = server_env(tmp_path, database, issuer=ISSUER, auto_approve="1")
        c = Cluster(env, 2)
        c.start()
        try:
            async def run() -> None:
                store = await Store.open(to_sqlalchemy_url(database), run_migrations=False)
                try:
                    await _scenario(c, store)
                finally:
                    await store.close()

            asyncio.run(run())
        finally:
            outputs = c.stop()
        assert not any("Traceback" in out for out in outputs[1:]), outputs


# -- settlement ------------------------------------------------------------------------------------------------

PAYMENTS = 48
AMOUNT = 1_000
PAYER = "crash-payer"
JSON = {"Content-Type": "application/json"}


def _facilitator_env(tmp_path: Path, database: str, rpc: str) -> dict[str, str]:
    """``authgate facilitator`` on the database, settling on the devchain; a short lease so that the retries
    of attempts the dead process reserved but never submitted need not wait a minute."""
    return server_env(tmp_path, database, x402_chain="jsonrpc", x402_rpc_url=rpc,
                      x402_facilitator_key=localchain.FACILITATOR_KEY, x402_network=localchain.NETWORK,
                      x402_token_address=localchain.TOKEN_ADDRESS, x402_token_name=localchain.TOKEN_NAME,
                      x402_token_version=localchain.TOKEN_VERSION, x402_settle_timeout="30", x402_settle_lease="3")


class _Node:
    """What the test asks the chain directly, never through the facilitator."""

    def __init__(self, http: httpx.AsyncClient, url: str) -> None:
        self.http = http
        self.url = url

    async def call(self, method: str, params: list[Any]) -> Any:
        answer = (await self.http.post(self.url, json={"jsonrpc": "2.0", "id": 1, "method": method,
                                                       "params": params})).json()
        assert "error" not in answer, answer
        return answer["result"]

    async def sent(self, block: str = "latest") -> int:
        """Transactions the facilitator account has sent (mined, or also waiting at ``pending``)."""
        return int(await self.call("eth_getTransactionCount", [localchain.FACILITATOR, block]), 16)

    async def waiting(self) -> int:
        return await self.sent("pending") - await self.sent("latest")

    async def balance(self, owner: str) -> int:
        data = "0x" + contract.balance_of(owner).hex()
        return int(await self.call("eth_call", [{"to": localchain.TOKEN_ADDRESS, "data": data}, "latest"]), 16)

    async def users_of(self, payer: str, nonce: str) -> list[str]:
        """Hashes of the transactions whose ``AuthorizationUsed(payer, nonce)`` is on chain."""
        topics = ["0x" + contract.AUTHORIZATION_USED_TOPIC.hex(), "0x" + contract.address_topic(payer).hex(), nonce]
        logs = await self.call("eth_getLogs", [{"address": localchain.TOKEN_ADDRESS, "fromBlock": "0x0",
                                                "toBlock": "latest", "topics": topics}])
        return [str(entry["transactionHash"]).lower() for entry in logs]

    async def status(self, tx_hash: str) -> int:
        receipt = await self.call("eth_getTransactionReceipt", [tx_hash])
        return int(receipt["status"], 16)


async def _until(condition: Any, what: str, seconds: float = 60) -> Any:
    """Poll ``condition()`` (a coroutine function) until it returns something truthy, for at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while not (value := await condition()):
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(0.01)
    return value


async def _settlement_scenario(c: Cluster, rpc: str, store: Store) -> None:
    req = requirements(AMOUNT, timeout=600)
    payer = localchain.label_address(PAYER)
    payments = [pay(localchain.label_key(PAYER), req) for _ in range(PAYMENTS)]
    bodies = [FacilitatorRequest(p, req).to_json() for p in payments]
    nonces = ["0x" + ExactEvmPayload.from_dict(p.payload).authorization.nonce.hex() for p in payments]
    limits = httpx.Limits(max_connections=2 * PAYMENTS, max_keepalive_connections=2 * PAYMENTS)
    async with httpx.AsyncClient(timeout=90, limits=limits) as http:
        node = _Node(http, rpc)
        payee_before, payer_before, sent_before = await node.balance(PAY_TO), await node.balance(payer), \
            await node.sent()
        answered: dict[int, SettleResponse | None] = {}

        async def settle(i: int) -> SettleResponse | None:
            try:
                r = await http.post(c.urls[0] + "/settle", content=bodies[i], headers=JSON)
            except httpx.TransportError:
                return None  # the process died under this request
            assert r.status_code == 200, r.text
            return SettleResponse.from_json(r.content)

        async def first_try(i: int) -> None:
            answered[i] = await settle(i)

        # Half the agents pay; once one block came and one of them was answered, the other half pays, and the
        # facilitator dies as soon as transactions wait in the mempool for the next block.
        tasks = [asyncio.ensure_future(first_try(i)) for i in range(PAYMENTS // 2)]

        async def one_answered() -> bool:
            return any(a is not None and a.success for a in answered.values())

        await _until(one_answered, "a settlement answered before the kill")
        tasks += [asyncio.ensure_future(first_try(i)) for i in range(PAYMENTS // 2, PAYMENTS)]

        relax_at = time.monotonic() + 15  # on a slow machine submissions may trickle in one or two a block

        async def several_waiting() -> int:
            count = await node.waiting()
            return count if count >= (3 if time.monotonic() < relax_at else 1) else 0

        waiting_at_kill = await _until(several_waiting, "transactions waiting in the mempool")
        c.procs[0].send_signal(signal.SIGKILL)
        c.procs[0].wait()
        await asyncio.gather(*tasks)
        at_kill = Counter(row.status for row in await store.payments.list(limit=10_000))
        c.restart(0)

        # The paying agents retry everything they hold (a retry of a settled payment must be harmless too).
        final: dict[int, SettleResponse] = {}
        todo, rounds = list(range(PAYMENTS)), 0
        while todo and rounds < 3:
            rounds += 1
            for i, r in zip(todo, await asyncio.gather(*(settle(i) for i in todo)), strict=True):
                assert r is not None
                assert r.success or r.error_reason == e.SETTLEMENT_PENDING, (i, r)
                if r.success:
                    final[i] = r
            todo = [i for i in todo if i not in final]
        assert not todo, f"{len(todo)} payments still pending after {rounds} retries"

        unanswered = sum(1 for a in answered.values() if a is None)
        answered_ok = 0
        for i in range(PAYMENTS):
            first, tx = answered[i], final[i].transaction.lower()
            if first is not None:  # a first answer is a success or "pending", never a failure
                assert first.success or first.error_reason == e.SETTLEMENT_PENDING, (i, first)
                if first.success:
                    answered_ok += 1
                    assert first.transaction.lower() == tx  # idempotent: the same receipt as before the kill
            # Exactly one transaction used this authorization on chain, and it is the one reported.
            assert await node.users_of(payer, nonces[i]) == [tx], i
            assert await node.status(tx) == 1
        assert unanswered > 0 and answered_ok > 0, "the kill landed outside the settlements; nothing was tested"
        assert await node.balance(PAY_TO) == payee_before + PAYMENTS * AMOUNT  # nothing charged twice
        assert await node.balance(payer) == payer_before - PAYMENTS * AMOUNT
        rows = await store.payments.list(limit=10_000)
        assert len(rows) == PAYMENTS
        assert {row.nonce: (row.status, (row.tx_hash or "").lower()) for row in rows} == {
            nonces[i]: ("settled", final[i].transaction.lower()) for i in range(PAYMENTS)}
        sent = await node.sent() - sent_before
        # And once more: the same answers, nothing new sent.
        again = await asyncio.gather(*(settle(i) for i in range(PAYMENTS)))
        assert [a.transaction.lower() if a else None for a in again] == [
            final[i].transaction.lower() for i in range(PAYMENTS)]
        assert await node.waiting() == 0 and await node.sent() - sent_before == sent
        figure(f"crash, settlement: {PAYMENTS} settlements; answered before the kill: {answered_ok}, cut off: "
               f"{unanswered}; ledger at the kill: {dict(at_kill)}; transactions waiting in the mempool at the "
               f"kill: {waiting_at_kill}; retry rounds: {rounds}; facilitator transactions: {sent} "
               f"({sent - PAYMENTS} resubmissions that reverted)")


def test_kill_9_during_settlement_reconciles_every_payment_with_the_chain(tmp_path: Path) -> None:
    with fresh_database() as database, devchain_process("--block-time", "1", "--fund", f"{PAYER}=100") as rpc:
        c = Cluster(_facilitator_env(tmp_path, database, rpc), 1, command="facilitator", health="/supported")
        c.start()
        try:
            async def run() -> None:
                store = await Store.open(to_sqlalchemy_url(database), run_migrations=False)
                try:
                    await _settlement_scenario(c, rpc, store)
                finally:
                    await store.close()

            asyncio.run(run())
        finally:
            outputs = c.stop()
        assert not any("Traceback" in out for out in outputs), outputs


# -- settlement, retried through the paywall ---------------------------------------------------------------------

PAYWALL_PAYER = "crash-paywall-payer"
PAYWALL_BLOCK_TIME = 1.0


async def _paywall_scenario(c: Cluster, rpc: str, store: Store) -> None:
    """A resource behind our Paywall, its facilitator the ``authgate facilitator`` process over HTTP; that process
    is killed -9 while the paid request's transfer waits for its block, and restarted; the agent re-sends the
    very same PAYMENT-SIGNATURE."""
    port = free_port()
    facilitator = FacilitatorClient(c.urls[0], timeout=30)
    paywall = Paywall(facilitator, base_url=f"http://127.0.0.1:{port}")
    paywall.route("/report", price="$0.001", pay_to=PAY_TO, network=localchain.NETWORK)
    app = FastAPI()
    served: list[str] = []

    @app.get("/report")
    async def report() -> dict[str, int]:
        served.append("report")
        return {"report": len(served)}

    key, payer = localchain.label_key(PAYWALL_PAYER), localchain.label_address(PAYWALL_PAYER)
    try:
        async with serve(PaywallMiddleware(app, paywall), port) as base, httpx.AsyncClient(timeout=90) as http:
            node = _Node(http, rpc)
            offer = PaymentRequired.from_header((await http.get(base + "/report")).headers["payment-required"]
                                                ).accepts[0]
            headers = [{"PAYMENT-SIGNATURE": pay(key, offer).to_header()} for _ in range(2)]
            nonces = ["0x" + ExactEvmPayload.from_dict(PaymentPayload.from_header(h["PAYMENT-SIGNATURE"]).payload)
                      .authorization.nonce.hex() for h in headers]
            payee_before, sent_before = await node.balance(PAY_TO), await node.sent()

            async def submitted(count: int) -> bool:
                return await node.sent("pending") >= sent_before + count

            async def mined(count: int) -> bool:
                return await node.sent() >= sent_before + count

            # A first payment, answered as usual. Its block tells the devchain's clock (a block every
            # PAYWALL_BLOCK_TIME seconds, on a fixed schedule): the second payment goes out just after the next
            # tick, so its transfer waits a whole block, and the kill lands while it does.
            warm_up = asyncio.ensure_future(http.get(base + "/report", headers=headers[0]))
            await _until(lambda: submitted(1), "the first transfer in the mempool")
            await _until(lambda: mined(1), "its block")
            tick = time.monotonic()
            ok = await warm_up
            assert ok.status_code == 200, ok.text
            since = time.monotonic() - tick
            await asyncio.sleep(PAYWALL_BLOCK_TIME * (since // PAYWALL_BLOCK_TIME + 1) - since + 0.02)
            first_try = asyncio.ensure_future(http.get(base + "/report", headers=headers[1]))
            await _until(lambda: submitted(2), "the second transfer in the mempool")
            c.procs[0].send_signal(signal.SIGKILL)
            c.procs[0].wait()
            assert await node.waiting() == 1, "the block came before the kill; nothing was tested"
            cut_off = await first_try
            # The facilitator died under the settlement: the handler's answer was held back, not served.
            assert cut_off.status_code == 402, cut_off.text
            failed = SettleResponse.from_header(cut_off.headers["payment-response"])
            assert not failed.success and failed.error_reason == e.UNEXPECTED_SETTLE_ERROR, failed
            await _until(lambda: mined(2), "the orphaned transfer's block")  # on chain, nobody told
            c.restart(0)

            retried = await http.get(base + "/report", headers=headers[1])  # the same PAYMENT-SIGNATURE
            assert retried.status_code == 200, retried.text
            receipt = SettleResponse.from_header(retried.headers["payment-response"])
            assert receipt.success and receipt.payer == payer, receipt
            tx = receipt.transaction.lower()
            assert await node.users_of(payer, nonces[1]) == [tx] and await node.status(tx) == 1
            # Delivered now: the same signature once more is a replay, refused.
            replay = await http.get(base + "/report", headers=headers[1])
            assert replay.status_code == 402, replay.text
            assert PaymentRequired.from_header(replay.headers["payment-required"]).error == e.NONCE_ALREADY_USED

            # Exactly one transfer per payment: two payments, two facilitator transactions, the payee paid twice.
            assert await node.sent() == sent_before + 2 and await node.waiting() == 0
            assert await node.balance(PAY_TO) == payee_before + 2 * int(offer.amount)
            first_tx = SettleResponse.from_header(ok.headers["payment-response"]).transaction.lower()
            rows = {row.nonce: (row.status, (row.tx_hash or "").lower()) for row in await store.payments.list()}
            assert rows == {nonces[0]: ("settled", first_tx), nonces[1]: ("settled", tx)}
            assert served == ["report"] * 3  # warm-up, the cut-off attempt (held back), the retry
    finally:
        await facilitator.aclose()
    figure("crash, settlement through the paywall: facilitator killed with the transfer in the mempool; the "
           "agent's re-sent PAYMENT-SIGNATURE answered 200 with the mined transfer, one transfer on chain")


def test_kill_9_during_paywall_settlement_the_agents_retry_gets_the_receipt(tmp_path: Path) -> None:
    with fresh_database() as database, devchain_process("--block-time", str(PAYWALL_BLOCK_TIME),
                                                        "--fund", f"{PAYWALL_PAYER}=1") as rpc:
        c = Cluster(_facilitator_env(tmp_path, database, rpc), 1, command="facilitator", health="/supported")
        c.start()
        try:
            async def run() -> None:
                store = await Store.open(to_sqlalchemy_url(database), run_migrations=False)
                try:
                    await _paywall_scenario(c, rpc, store)
                finally:
                    await store.close()

            asyncio.run(run())
        finally:
            outputs = c.stop()
        assert not any("Traceback" in out for out in outputs), outputs


# -- approval decisions ----------------------------------------------------------------------------------------

APPROVALS = 60
PASSWORD = "correct horse"


async def _signed_in(http: httpx.AsyncClient, url: str, username: str) -> dict[str, str]:
    """The person's browser session on ``url``: the Cookie header to send."""
    jar: dict[str, str] = {}
    page = await http.get(url + "/signin")
    signed = await http.post(url + "/signin", headers=_cookies(page, jar),
                             data={"csrf": _field(page.text, "csrf"), "username": username, "password": PASSWORD,
                                   "next": "/approvals"})
    assert signed.status_code == 303, signed.text
    return _cookies(signed, jar)


async def _decision_events(store: Store) -> Counter[tuple[str, str]]:
    """(approval id, event) for every ``approval.approved`` / ``approval.denied`` in the audit log."""
    a = t.audit_log.c
    async with store.engine.connect() as conn:
        rows = (await conn.execute(sa.select(a.event, a.detail).where(
            a.event.in_(("approval.approved", "approval.denied"))))).all()
    return Counter((str(detail["id"]), event) for event, detail in rows)


async def _approval_scenario(c: Cluster, store: Store) -> None:
    username = "u" + secrets.token_hex(4)
    subject = await add_user(store, username, PASSWORD)
    client = await add_client(store, auth_method="client_secret_basic", grant_types=[CIBA_GRANT_TYPE],
                              redirect_uris=[], response_types=[])
    auth = (client[0], client[1] or "")
    limits = httpx.Limits(max_connections=2 * APPROVALS, max_keepalive_connections=2 * APPROVALS)
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        # The agent asks, APPROVALS times (CIBA), on the process that stays up.
        requests: list[tuple[str, str]] = []  # (auth_req_id, approval id)
        for i in range(APPROVALS):
            r = await http.post(c.urls[1] + "/bc-authorize", auth=auth, data={
                "scope": "read", "login_hint": username, "binding_message": f"crash {i}"})
            assert r.status_code == 200, r.text
            auth_req_id = r.json()["auth_req_id"]
            artifact = await store.get_artifact(token_hash(auth_req_id), CIBA_REQUEST)
            assert artifact is not None
            requests.append((auth_req_id, str(artifact.payload["approval_id"])))
        cookie = await _signed_in(http, c.urls[0], username)
        shown = await http.get(c.urls[0] + f"/approvals/{requests[0][1]}", headers=cookie)
        assert shown.status_code == 200, shown.text
        csrf = _field(shown.text, "csrf")
        wanted = {approval: "approved" if i % 2 else "denied" for i, (_, approval) in enumerate(requests)}

        # The agent watches every request on the other process while the person decides on the victim.
        seen: dict[str, list[str]] = {approval: [] for _, approval in requests}
        watching = True

        async def watch() -> None:
            while watching:
                for _, approval in requests:
                    r = await http.get(c.urls[1] + f"/approvals/{approval}/status", auth=auth)
                    assert r.status_code == 200, r.text
                    status = r.json()["status"]
                    if not seen[approval] or seen[approval][-1] != status:
                        seen[approval].append(status)

        watcher = asyncio.ensure_future(watch())
        victim = c.procs[0]

        async def decide(approval: str) -> tuple[str, httpx.Response | None]:
            try:
                return approval, await http.post(
                    c.urls[0] + f"/approvals/{approval}", headers=cookie,
                    data={"csrf": csrf, "decision": "approve" if wanted[approval] == "approved" else "deny"})
            except httpx.TransportError:
                return approval, None  # the process died under this request

        tasks = [asyncio.ensure_future(decide(approval)) for approval in wanted]

        async def a_third_written() -> bool:
            c_ = t.approval_requests.c
            async with store.engine.connect() as conn:
                written = (await conn.execute(sa.select(sa.func.count()).select_from(t.approval_requests).where(
                    c_.id.in_(list(wanted)), c_.status != "pending"))).scalar()
            return int(written or 0) >= APPROVALS // 3

        await _until(a_third_written, "decisions being written")
        victim.send_signal(signal.SIGKILL)  # a third of the decisions are in the database, the rest in flight
        victim.wait()
        answered = dict(await asyncio.gather(*tasks))
        c.restart(0)
        watching = False
        await watcher

        # Each approval: decided once as asked (status, decider, one audit event), or pending and decidable.
        events = await _decision_events(store)
        cut_off = decided_unanswered = decided_later = 0
        for index, (approval, want) in enumerate(wanted.items()):
            first = answered[approval]
            row = await store.get_approval(approval)
            assert row is not None
            if first is not None:
                assert first.status_code == 200, first.text  # a decision is answered done, or not at all
                assert row.status == want
            else:
                cut_off += 1
                assert row.status in (want, "pending"), (approval, row.status)
            if row.status == "pending":
                assert (row.decided_at, row.decided_by, row.channel) == (None, None, None)
                assert events[(approval, "approval.approved")] + events[(approval, "approval.denied")] == 0
                again = await http.post(c.urls[1] + f"/approvals/{approval}", headers=cookie,
                                        data={"csrf": csrf, "decision": "approve" if want == "approved" else "deny"})
                assert again.status_code == 200, again.text
                decided_later += 1
            else:
                decided_unanswered += first is None
                assert row.decided_at is not None and (row.decided_by, row.channel) == (subject, "web")
                assert events[(approval, f"approval.{want}")] == 1
                assert events[(approval, "approval.denied" if want == "approved" else "approval.approved")] == 0
            # Deciding again is refused, on either process: the decision is final.
            late = await http.post(c.urls[index % 2] + f"/approvals/{approval}", headers=cookie,
                                   data={"csrf": csrf, "decision": "approve"})
            assert late.status_code == 409, late.text
        assert cut_off > 0, "the kill landed after every decision was answered; nothing was tested"
        events = await _decision_events(store)
        assert sum(events.values()) == APPROVALS  # one decision event per approval, none twice

        # The agent saw each request go from pending to its decision at most once, never back.
        for approval, statuses in seen.items():
            assert statuses in ([], ["pending"], [wanted[approval]], ["pending", wanted[approval]]), statuses

        # The grant each approval unlocks: the agent's poll gets tokens for an approval, access_denied for a
        # denial, once; the tokens are live.
        rs = await add_client(store, auth_method="client_secret_basic", grant_types=["client_credentials"],
                              redirect_uris=[])
        for i, (auth_req_id, approval) in enumerate(requests):
            form = {"grant_type": CIBA_GRANT_TYPE, "auth_req_id": auth_req_id}
            polled = await http.post(c.urls[i % 2] + "/token", data=form, auth=auth)
            if wanted[approval] == "approved":
                assert polled.status_code == 200, polled.text
                token = polled.json()["access_token"]
                intro = await http.post(c.urls[(i + 1) % 2] + "/introspect", data={"token": token},
                                        auth=(rs[0], rs[1] or ""))
                claims = intro.json()
                assert claims["active"] is True and claims["sub"] == subject and claims["scope"] == "read", claims
            else:
                assert polled.status_code == 400 and polled.json()["error"] == "access_denied", polled.text
            replay = await http.post(c.urls[(i + 1) % 2] + "/token", data=form, auth=auth)
            assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant", replay.text
        figure(f"crash, approval decisions: {APPROVALS} approvals; answered before the kill: "
               f"{APPROVALS - cut_off}, cut off: {cut_off} (of which decided by the dead process: "
               f"{decided_unanswered}, still pending and decided after the restart: {decided_later})")


def test_kill_9_during_approval_decisions_leaves_each_decided_once_or_pending(tmp_path: Path) -> None:
    with fresh_database() as database:
        # One client asks one person APPROVALS times at once: well over the CIBA abuse limits, lifted here.
        env = server_env(tmp_path, database, issuer=ISSUER, ciba_rate_per_client="0", ciba_rate_per_user="0",
                         ciba_max_pending_per_user="0")
        c = Cluster(env, 2)
        c.start()
        try:
            async def run() -> None:
                store = await Store.open(to_sqlalchemy_url(database), run_migrations=False)
                try:
                    await _approval_scenario(c, store)
                finally:
                    await store.close()

            asyncio.run(run())
        finally:
            outputs = c.stop()
        assert not any("Traceback" in out for out in outputs), outputs
