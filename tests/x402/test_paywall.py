"""The paywall against a ledger-backed facilitator double (real EIP-3009 signature recovery, balances and used
nonces in memory, the SDK's reason strings), paid by our agent or by hand-made headers. Kept for what the double
adds: counting facilitator calls (a refused header never reaches it), and outcomes a real chain cannot produce on
demand (``settlement_pending``, a failing settlement). Bad input against the REAL facilitator on the embedded
chain is in test_paywall_chain.py; interop with the official SDK in tests/interop/test_x402_*.py."""

from __future__ import annotations

import base64
import json
import secrets
import time
from typing import Any

import httpx
import pytest
from eth_account import Account
from fastapi import Depends, FastAPI, Request
from fastapi.responses import StreamingResponse

from authgate.agent.x402 import Budget, Wallet, X402PaymentAuth, payment_receipt
from authgate.x402 import eip3009, localchain, networks, wire
from authgate.x402.paywall import Payment, Paywall, PaywallMiddleware

NETWORK = localchain.NETWORK
ASSET = localchain.TOKEN_ADDRESS
BASE = "https://api.example"
PAYEE = Account.from_key("0x" + "22" * 32).address


class LedgerFacilitator:
    """A facilitator double with the checks of spec §4.3 on an in-memory token ledger."""

    def __init__(self) -> None:
        self.balances: dict[str, int] = {}
        self.used: set[tuple[str, bytes]] = set()
        self.verify_calls = 0
        self.settle_calls = 0
        self.down = False
        self.pending_once = False
        self.fail_settle: str | None = None

    def _check(self, payload: wire.PaymentPayload, req: wire.PaymentRequirements) -> tuple[str | None, str]:
        exact = eip3009.ExactEvmPayload.from_dict(payload.payload)
        auth = exact.authorization
        payer = auth.from_address
        now = int(time.time())
        if payload.accepted.scheme != "exact":
            return "unsupported_scheme", payer
        if payload.accepted.network != req.network:
            return "network_mismatch", payer
        if auth.to.lower() != req.pay_to.lower():
            return "invalid_exact_evm_payload_recipient_mismatch", payer
        if auth.value != int(req.amount):
            return "invalid_exact_evm_payload_authorization_value_mismatch", payer
        if auth.valid_before < now + 6:
            return "invalid_exact_evm_payload_authorization_valid_before", payer
        if auth.valid_after > now:
            return "invalid_exact_evm_payload_authorization_valid_after", payer
        digest = auth.digest(req.extra["name"], req.extra["version"], networks.evm_chain_id(req.network), req.asset)
        try:
            signer = eip3009.recover_signer(digest, exact.signature)
        except eip3009.SignatureError:
            return "invalid_exact_evm_failed_to_verify_signature", payer
        if signer.lower() != payer.lower():
            return "invalid_exact_evm_payload_signature", payer
        if (payer.lower(), auth.nonce) in self.used:
            return "invalid_exact_evm_nonce_already_used", payer
        if self.balances.get(payer.lower(), 0) < auth.value:
            return "invalid_exact_evm_insufficient_balance", payer
        return None, payer

    async def verify(self, payload: wire.PaymentPayload, req: wire.PaymentRequirements) -> wire.VerifyResponse:
        self.verify_calls += 1
        if self.down:
            raise httpx.ConnectError("facilitator down")
        reason, payer = self._check(payload, req)
        return wire.VerifyResponse(is_valid=reason is None, invalid_reason=reason, payer=payer)

    async def settle(self, payload: wire.PaymentPayload, req: wire.PaymentRequirements) -> wire.SettleResponse:
        self.settle_calls += 1
        if self.down:
            raise httpx.ConnectError("facilitator down")
        if self.pending_once:
            self.pending_once = False
            return wire.SettleResponse(success=False, transaction="0x" + "ab" * 32, network=req.network,
                                       error_reason="settlement_pending")
        reason, payer = self._check(payload, req)
        reason = reason or self.fail_settle
        if reason:
            return wire.SettleResponse(success=False, transaction="", network=req.network, payer=payer,
                                       error_reason=reason)
        auth = eip3009.ExactEvmPayload.from_dict(payload.payload).authorization
        self.used.add((payer.lower(), auth.nonce))
        self.balances[payer.lower()] -= auth.value
        self.balances[auth.to.lower()] = self.balances.get(auth.to.lower(), 0) + auth.value
        return wire.SettleResponse(success=True, transaction="0x" + secrets.token_hex(32), network=req.network,
                                   payer=payer)


def make_app(facilitator: LedgerFacilitator, **route: Any) -> tuple[FastAPI, Paywall, dict[str, Any]]:
    seen: dict[str, Any] = {"calls": 0}
    paywall = Paywall(facilitator, base_url=BASE)
    paywall.route("/weather", price="$0.01", pay_to=PAYEE, network=NETWORK, description="Weather",
                  **route)
    app = FastAPI()

    @app.get("/weather")
    async def weather(request: Request) -> dict[str, Any]:
        seen["calls"] += 1
        seen["payment"] = request.state.x402
        return {"report": "sunny"}

    @app.get("/free")
    async def free() -> dict[str, str]:
        return {"free": "yes"}

    return PaywallMiddleware(app, paywall), paywall, seen  # type: ignore[return-value]


KEYS: dict[str, str] = {}


def payer_wallet(facilitator: LedgerFacilitator, balance: int = 1_000_000) -> Wallet:
    key = "0x" + secrets.token_hex(32)
    wallet = Wallet(key)
    facilitator.balances[wallet.address.lower()] = balance
    KEYS[wallet.address] = key  # tests only: to forge headers by hand
    return wallet


def client(app: Any, auth: httpx.Auth | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE, auth=auth)


def agent(wallet: Wallet, **budget: Any) -> X402PaymentAuth:
    return X402PaymentAuth(wallet, Budget(**budget), networks={NETWORK})


def required_of(response: httpx.Response) -> wire.PaymentRequired:
    return wire.PaymentRequired.from_header(response.headers["payment-required"])


def signed_header(wallet: Wallet, offer: wire.PaymentRequirements, *, accepted: wire.PaymentRequirements | None = None,
                  value: int | None = None, valid_after: int = 0, valid_before: int | None = None,
                  nonce: bytes | None = None, key: str | None = None, extensions: dict[str, Any] | None = None,
                  resource: wire.ResourceInfo | None = None) -> str:
    auth = eip3009.Authorization(wallet.address, offer.pay_to, int(offer.amount) if value is None else value,
                                 valid_after, valid_before or int(time.time()) + 60, nonce or eip3009.new_nonce())
    exact = eip3009.sign_authorization(auth, key or KEYS[wallet.address], name=offer.extra["name"],
                                       version=offer.extra["version"], chain_id=networks.evm_chain_id(offer.network),
                                       verifying_contract=offer.asset)
    return wire.PaymentPayload(payload=exact.to_dict(), accepted=accepted or offer, resource=resource,
                               extensions=extensions).to_header()


async def test_unpaid_request_gets_402_with_offers_from_configuration() -> None:
    fac = LedgerFacilitator()
    app, _, seen = make_app(fac)
    async with client(app) as http:
        r = await http.get("/weather", headers={"Host": "evil.example", "X-Forwarded-Proto": "http"})
        assert (await http.get("/free")).json() == {"free": "yes"}
    assert r.status_code == 402 and r.content == b"{}"
    assert r.headers["cache-control"] == "no-store"
    assert "PAYMENT-REQUIRED" in r.headers["access-control-expose-headers"]
    required = required_of(r)
    assert required.error == "Payment required"
    assert required.resource is not None and required.resource.url == "https://api.example/weather"
    (offer,) = required.accepts
    assert (offer.scheme, offer.network, offer.asset, offer.amount, offer.pay_to, offer.max_timeout_seconds) == (
        "exact", NETWORK, ASSET, "10000", PAYEE, 60)
    assert offer.extra == {"name": "USDC", "version": "2"}
    assert seen["calls"] == 0 and fac.verify_calls == 0


async def test_agent_pays_and_the_handler_sees_the_payment() -> None:
    fac = LedgerFacilitator()
    app, _, seen = make_app(fac)
    wallet = payer_wallet(fac)
    async with client(app, agent(wallet)) as http:
        r = await http.get("/weather")
    assert r.status_code == 200 and r.json() == {"report": "sunny"}
    receipt = payment_receipt(r)
    assert receipt is not None and receipt.success and receipt.payer == wallet.address
    assert wire.SettleResponse.from_header(r.headers["payment-response"]) == receipt
    assert r.headers["cache-control"] == "private"
    assert fac.settle_calls == 1 and fac.balances[PAYEE.lower()] == 10_000
    assert fac.balances[wallet.address.lower()] == 990_000
    payment: Payment = seen["payment"]
    assert payment.payer == wallet.address and payment.requirements is not None
    assert payment.requirements.amount == "10000"


@pytest.mark.parametrize("header", ["not base64!", base64.b64encode(b"not json").decode(),
                                    base64.b64encode(b'{"x402Version":1,"scheme":"exact"}').decode(),
                                    base64.b64encode(b'{"x402Version":2,"payload":{}}').decode(), "A" * 200_000])
async def test_malformed_payment_header_gets_402_and_nothing_runs(header: str) -> None:
    fac = LedgerFacilitator()
    app, _, seen = make_app(fac)
    async with client(app) as http:
        r = await http.get("/weather", headers={"PAYMENT-SIGNATURE": header})
    assert r.status_code == 402 and r.content == b"{}"
    assert required_of(r).error in ("invalid_payload", "invalid_x402_version")
    assert seen["calls"] == 0 and fac.verify_calls == 0 and fac.settle_calls == 0


@pytest.mark.parametrize("change", [
    {"network": "eip155:84532"}, {"asset": "0x" + "11" * 20}, {"pay_to": "0x" + "33" * 20},
    {"amount": "9999"}, {"amount": "10001"}, {"pay_to": PAYEE.lower()}, {"max_timeout_seconds": 3600},
    {"extra": {"name": "USD Coin", "version": "2"}}, {"scheme": "upto"},
])
async def test_accepted_must_equal_an_offer_exactly(change: dict[str, Any]) -> None:
    fac = LedgerFacilitator()
    app, _, seen = make_app(fac)
    wallet = payer_wallet(fac)
    async with client(app) as http:
        offer = required_of(await http.get("/weather")).accepts[0]
        tampered = wire.PaymentRequirements(**{**offer.__dict__, **change})
        r = await http.get("/weather", headers={"PAYMENT-SIGNATURE": signed_header(wallet, tampered)})
    assert r.status_code == 402 and required_of(r).error == "No matching payment requirements"
    assert seen["calls"] == 0 and fac.verify_calls == 0 and fac.settle_calls == 0


async def test_settle_failure_is_402_with_payment_response() -> None:
    fac = LedgerFacilitator()
    app, _, seen = make_app(fac)
    wallet = payer_wallet(fac)
    fac.fail_settle = "transaction_failed"
    async with client(app, agent(wallet)) as http:
        r = await http.get("/weather")
    assert r.status_code == 402 and r.content == b"{}" and "payment-required" not in r.headers
    receipt = wire.SettleResponse.from_header(r.headers["payment-response"])
    assert not receipt.success and receipt.error_reason == "transaction_failed" and receipt.transaction == ""
    assert seen["calls"] == 1  # the handler ran, but its answer was not delivered unpaid


async def test_settlement_pending_is_retried_once() -> None:
    fac = LedgerFacilitator()
    app, _, _ = make_app(fac)
    wallet = payer_wallet(fac)
    fac.pending_once = True
    async with client(app, agent(wallet)) as http:
        r = await http.get("/weather")
    assert r.status_code == 200 and fac.settle_calls == 2 and fac.balances[PAYEE.lower()] == 10_000


async def test_upfront_flow_settles_before_the_handler() -> None:
    fac = LedgerFacilitator()
    app, _, seen = make_app(fac, upfront=True)
    wallet = payer_wallet(fac)
    async with client(app, agent(wallet)) as http:
        r = await http.get("/weather")
    assert r.status_code == 200
    payment: Payment = seen["payment"]
    assert payment.receipt is not None and payment.receipt.success
    assert payment_receipt(r) == payment.receipt
    offer = payment.requirements
    assert offer is not None and offer.extra["paymentFlow"] == "upfront"


async def test_fastapi_dependency_prices_one_route() -> None:
    fac = LedgerFacilitator()
    paywall = Paywall(fac, base_url=BASE)
    inner = FastAPI()

    @inner.get("/report/{name}")
    async def report(name: str, paid: Payment = Depends(paywall.require(  # noqa: B008
            price="$0.02", pay_to=PAYEE, network=NETWORK))) -> dict[str, str]:
        return {"name": name, "payer": paid.payer}

    app = PaywallMiddleware(inner, paywall)
    wallet = payer_wallet(fac)
    async with client(app) as http:
        unpaid = await http.get("/report/a")
    async with client(app, agent(wallet)) as http:
        paid = await http.get("/report/a")
    assert unpaid.status_code == 402 and required_of(unpaid).accepts[0].amount == "20000"
    assert required_of(unpaid).resource.url == "https://api.example/report/a"  # type: ignore[union-attr]
    assert paid.status_code == 200 and paid.json() == {"name": "a", "payer": wallet.address}
    assert fac.balances[PAYEE.lower()] == 20_000 and payment_receipt(paid) is not None


async def test_streamed_response_is_buffered_and_bounded() -> None:
    fac = LedgerFacilitator()
    paywall = Paywall(fac, base_url=BASE, max_buffer=1000)
    paywall.route("/small", price="$0.01", pay_to=PAYEE, network=NETWORK)
    paywall.route("/big", price="$0.01", pay_to=PAYEE, network=NETWORK)
    inner = FastAPI()

    async def chunks(n: int) -> Any:
        for _ in range(n):
            yield b"x" * 100

    @inner.get("/small")
    async def small() -> StreamingResponse:
        return StreamingResponse(chunks(5))

    @inner.get("/big")
    async def big() -> StreamingResponse:
        return StreamingResponse(chunks(50))

    app = PaywallMiddleware(inner, paywall)
    wallet = payer_wallet(fac)
    async with client(app, agent(wallet)) as http:
        ok = await http.get("/small")
        too_big = await http.get("/big")
    assert ok.status_code == 200 and ok.content == b"x" * 500 and "payment-response" in ok.headers
    assert too_big.status_code == 500 and too_big.json() == {"error": "response_too_large"}
    assert fac.settle_calls == 1


async def test_payment_header_json_is_compact_sdk_shape() -> None:
    fac = LedgerFacilitator()
    app, _, _ = make_app(fac)
    async with client(app) as http:
        r = await http.get("/weather")
    raw = json.loads(base64.b64decode(r.headers["payment-required"]))
    assert list(raw) == ["x402Version", "error", "resource", "accepts"]
    assert raw["accepts"][0]["payTo"] == PAYEE
