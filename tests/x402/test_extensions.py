"""payment-identifier and sign-in-with-x on both sides (paywall and paying agent), with the official SDK's
extension code as the oracle for message format and signatures."""

from __future__ import annotations

import base64
import json
import secrets
import time
from typing import Any

import httpx
import pytest
from eth_account import Account
from siwe import SiweMessage
from x402.extensions.sign_in_with_x import encode_siwx_header, parse_siwx_header
from x402.extensions.sign_in_with_x.client import create_siwx_payload
from x402.extensions.sign_in_with_x.verify import verify_siwx_signature

from authgate.agent.x402 import PAYMENT_ID_KEY, Budget, X402PaymentAuth, payment_receipt
from authgate.store import Store
from authgate.x402 import wire
from authgate.x402.extensions import payment_identifier as pid
from authgate.x402.extensions import siwx
from authgate.x402.paywall import Paywall, PaywallMiddleware
from authgate.x402.paywall_store import DatabasePaywallStore, MemoryPaywallStore, PaywallStore, store_key

from .test_paywall import (
    BASE,
    NETWORK,
    PAYEE,
    LedgerFacilitator,
    agent,
    client,
    make_app,
    payer_wallet,
    required_of,
    signed_header,
)

KEY = b"k" * 32


# -- sign-in-with-x: wire ------------------------------------------------------------------------------------


@pytest.mark.parametrize("statement", [None, "Sign in to use what you paid for"])
def test_message_is_byte_identical_to_the_siwe_package(statement: str | None) -> None:
    account = Account.create()
    challenger = siwx.Challenger("https://api.example", KEY, statement=statement)
    info = challenger.declare("https://api.example/weather", [NETWORK], time.time())["info"]
    fields = {**info, "address": account.address, "chainId": NETWORK, "type": "eip191"}
    reference = SiweMessage(domain=info["domain"], address=account.address, statement=statement, uri=info["uri"],
                            version="1", chain_id=int(NETWORK.split(":")[1]), nonce=info["nonce"],
                            issued_at=info["issuedAt"], expiration_time=info["expirationTime"],
                            resources=info["resources"])
    assert siwx.message_text(fields) == reference.prepare_message()


async def test_sdk_verifies_our_sign_in_and_we_verify_the_sdks() -> None:
    account = Account.create()
    challenger = siwx.Challenger("https://api.example", KEY)
    url = "https://api.example/weather"
    now = time.time()
    declaration = challenger.declare(url, [NETWORK], now)

    ours = siwx.sign_header(declaration, account, url)
    assert ours is not None
    result = await verify_siwx_signature(parse_siwx_header(ours))
    assert result.is_valid and result.payer is not None and result.payer.lower() == account.address.lower()

    sdk_payload = await create_siwx_payload({**declaration["info"], "chainId": NETWORK, "type": "eip191"},
                                            account, url)
    signed = challenger.check(encode_siwx_header(sdk_payload), url, now + 1)
    assert signed.address == account.address


def _forge(header: str, **change: Any) -> str:
    data = json.loads(base64.b64decode(header))
    data.update(change)
    return base64.b64encode(json.dumps(data).encode()).decode()


def test_sign_in_checks() -> None:
    account = Account.create()
    challenger = siwx.Challenger("https://api.example", KEY, max_age=300)
    url = "https://api.example/weather"
    now = time.time()
    header = siwx.sign_header(challenger.declare(url, [NETWORK], now), account, url)
    assert header is not None
    assert challenger.check(header, url, now).address == account.address
    cases = {
        "invalid_siwx_uri_mismatch": (header, "https://api.example/other", now),
        "invalid_siwx_expired": (header, url, now + 301),
        "invalid_siwx_signature": (_forge(header, address=Account.create().address), url, now),
        "invalid_siwx_nonce": (_forge(header, nonce="0" * 32), url, now),
        "invalid_siwx_domain_mismatch": (_forge(header, domain="evil.example"), url, now),
        "invalid_siwx_malformed_signature": ("%%%", url, now),
    }
    for reason, (value, where, at) in cases.items():
        with pytest.raises(siwx.SiwxError) as caught:
            challenger.check(value, where, at)
        assert caught.value.reason == reason
    other = siwx.Challenger("https://api.example", b"o" * 32)
    with pytest.raises(siwx.SiwxError):
        other.check(header, url, now)  # another server's key: not our challenge
    with pytest.raises(siwx.SiwxError):  # a client refuses to sign a challenge for another origin
        siwx.sign_header(challenger.declare(url, [NETWORK], now), account, "https://evil.example/weather")


# -- sign-in-with-x: paywall and agent -----------------------------------------------------------------------


async def test_payer_signs_in_again_instead_of_paying() -> None:
    fac = LedgerFacilitator()
    app, _, seen = make_app(fac, siwx=True)
    wallet = payer_wallet(fac)
    auth = agent(wallet)
    async with client(app, auth) as http:
        first = await http.get("/weather")
        assert first.status_code == 200 and fac.settle_calls == 1
        second = await http.get("/weather")
    assert second.status_code == 200 and second.json() == {"report": "sunny"}
    assert fac.settle_calls == 1 and fac.balances[PAYEE.lower()] == 10_000
    assert seen["payment"].signed_in and seen["payment"].payer == wallet.address


async def test_sign_in_without_payment_or_replayed_is_refused() -> None:
    fac = LedgerFacilitator()
    app, _, seen = make_app(fac, siwx=True)
    payer = payer_wallet(fac)
    stranger = Account.create()
    url = BASE + "/weather"
    async with client(app, agent(payer)) as http:
        assert (await http.get("/weather")).status_code == 200
    async with client(app) as http:
        declaration = required_of(await http.get("/weather")).extensions["sign-in-with-x"]  # type: ignore[index]
        assert declaration["supportedChains"] == [{"chainId": NETWORK, "type": "eip191"}]
        never_paid = await http.get("/weather", headers={"SIGN-IN-WITH-X": siwx.sign_header(
            declaration, stranger, url) or ""})
        assert never_paid.status_code == 402
        # The payer's own sign-in works once; the same signed message again does not.
        auth = X402PaymentAuth(payer, Budget(max_per_request=0), networks={NETWORK})
        auth.ledger.record_paid(url, time.time() + 60)
        sent: list[str] = []

        async def capture(request: httpx.Request) -> None:
            if "sign-in-with-x" in request.headers:
                sent.append(request.headers["sign-in-with-x"])

        http.event_hooks["request"] = [capture]
        ok = await http.get("/weather", auth=auth)
        assert ok.status_code == 200 and len(sent) == 1
        replay = await http.get("/weather", headers={"SIGN-IN-WITH-X": sent[0]})
        assert replay.status_code == 402
    assert fac.settle_calls == 1 and seen["calls"] == 2


# -- payment-identifier ---------------------------------------------------------------------------------------


def test_payment_identifier_wire() -> None:
    declared = {pid.PAYMENT_IDENTIFIER: pid.declare(True)}
    assert declared[pid.PAYMENT_IDENTIFIER]["info"] == {"required": True}
    with_id = pid.append(declared, "pay_0123456789abcdef")
    assert pid.extract(with_id, required=True) == "pay_0123456789abcdef"
    assert pid.append({}, "pay_0123456789abcdef") == {}  # undeclared: nothing sent
    for bad in ("short", "x" * 129, "has space in it!!", 12345678901234567):
        with pytest.raises(pid.PaymentIdentifierError):
            pid.extract({pid.PAYMENT_IDENTIFIER: {"info": {"required": False, "id": bad}}}, required=False)
    with pytest.raises(pid.PaymentIdentifierError):
        pid.extract({}, required=True)
    assert pid.extract({}, required=False) is None
    assert pid.is_valid_id(pid.new_id())


async def _retry_with_same_id(paywall_store: PaywallStore) -> None:
    fac = LedgerFacilitator()
    paywall = Paywall(fac, base_url=BASE, store=paywall_store)
    paywall.route("/order", price="$0.01", pay_to=PAYEE, network=NETWORK, payment_identifier=False)
    from fastapi import FastAPI

    inner = FastAPI()
    orders: list[int] = []

    @inner.get("/order")
    async def order() -> dict[str, int]:
        orders.append(1)
        return {"order": len(orders)}

    app = PaywallMiddleware(inner, paywall)
    wallet = payer_wallet(fac)
    payment_id = pid.new_id()
    async with client(app, agent(wallet)) as http:
        first = await http.get("/order", extensions={PAYMENT_ID_KEY: payment_id})
        # The client did not see the answer (say, a timeout) and retries: it signs anew, with the same id.
        again = await http.get("/order", extensions={PAYMENT_ID_KEY: payment_id})
        other = await http.get("/order")
    assert first.status_code == again.status_code == other.status_code == 200
    assert payment_receipt(first) == payment_receipt(again)
    assert payment_receipt(other) != payment_receipt(first)
    assert fac.settle_calls == 2 and fac.balances[PAYEE.lower()] == 20_000

    thief = payer_wallet(fac)
    async with client(app) as http:
        offer = required_of(await http.get("/order")).accepts[0]
        exts = pid.append({pid.PAYMENT_IDENTIFIER: pid.declare(False)}, payment_id)
        stolen = await http.get("/order", headers={"PAYMENT-SIGNATURE": signed_header(thief, offer, extensions=exts)})
        bad = await http.get("/order", headers={"PAYMENT-SIGNATURE": signed_header(
            thief, offer, extensions={pid.PAYMENT_IDENTIFIER: {"info": {"required": False, "id": "tiny"}}})})
    assert stolen.status_code == 409 and stolen.json()["error"] == "payment_identifier_conflict"
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_payment_identifier"
    assert fac.settle_calls == 2


async def test_retry_with_same_payment_id_is_never_charged_twice_memory() -> None:
    await _retry_with_same_id(MemoryPaywallStore())


async def test_retry_with_same_payment_id_is_never_charged_twice_database(store: Store) -> None:
    await _retry_with_same_id(DatabasePaywallStore(store))


async def test_database_store_add_is_won_once(store: Store) -> None:
    shared = DatabasePaywallStore(store)
    key = store_key("pid", "x", secrets.token_hex(8))
    assert await shared.add(key, {"state": "pending"}, 60)
    assert not await shared.add(key, {"state": "pending"}, 60)
    await shared.put(key, {"state": "settled"}, 60)
    assert await shared.get(key) == {"state": "settled"}
    await shared.delete(key)
    assert await shared.get(key) is None and await shared.add(key, {}, 60)


async def test_required_payment_id_and_in_flight_duplicate() -> None:
    fac = LedgerFacilitator()
    memory = MemoryPaywallStore()
    paywall = Paywall(fac, base_url=BASE, store=memory)
    paywall.route("/order", price="$0.01", pay_to=PAYEE, network=NETWORK, payment_identifier=True)
    from fastapi import FastAPI

    inner = FastAPI()

    @inner.get("/order")
    async def order() -> dict[str, str]:
        return {"ok": "yes"}

    app = PaywallMiddleware(inner, paywall)
    wallet = payer_wallet(fac)
    async with client(app) as http:
        required = required_of(await http.get("/order"))
        assert required.extensions == {pid.PAYMENT_IDENTIFIER: pid.declare(True)}
        offer = required.accepts[0]
        missing = await http.get("/order", headers={"PAYMENT-SIGNATURE": signed_header(wallet, offer)})
        payment_id = pid.new_id()
        await memory.add(store_key("pid", BASE + "/order", payment_id), {"state": "pending", "payer": "x"}, 60)
        busy = await http.get("/order", headers={"PAYMENT-SIGNATURE": signed_header(
            wallet, offer, extensions=pid.append(dict(required.extensions or {}), payment_id))})
    assert missing.status_code == 400 and busy.status_code == 409 and busy.headers["retry-after"] == "1"
    assert fac.verify_calls == 0 and fac.settle_calls == 0


async def test_failed_payment_releases_its_id() -> None:
    fac = LedgerFacilitator()
    paywall = Paywall(fac, base_url=BASE)
    paywall.route("/order", price="$0.01", pay_to=PAYEE, network=NETWORK, payment_identifier=False)
    from fastapi import FastAPI

    inner = FastAPI()

    @inner.get("/order")
    async def order() -> dict[str, str]:
        return {"ok": "yes"}

    app = PaywallMiddleware(inner, paywall)
    wallet = payer_wallet(fac)
    payment_id = pid.new_id()
    fac.fail_settle = "transaction_failed"
    async with client(app, agent(wallet)) as http:
        failed = await http.get("/order", extensions={PAYMENT_ID_KEY: payment_id})
        fac.fail_settle = None
        retried = await http.get("/order", extensions={PAYMENT_ID_KEY: payment_id})
    assert failed.status_code == 402 and retried.status_code == 200
    receipt = payment_receipt(retried)
    assert receipt is not None and receipt.success and fac.balances[PAYEE.lower()] == 10_000
    assert isinstance(wire.SettleResponse.from_header(retried.headers["payment-response"]), wire.SettleResponse)
    assert retried.status_code == httpx.codes.OK
