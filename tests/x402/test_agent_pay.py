"""The paying agent: offer choice, budget, ledger, keys, v1 servers, one signing per request."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account

from authgate.agent.x402 import (
    PAYMENT_KEY,
    Budget,
    BudgetExceeded,
    FileLedger,
    NoPayableOffer,
    PaymentError,
    Wallet,
    X402PaymentAuth,
    payment_receipt,
)
from authgate.x402 import eip3009, localchain, networks, wire

from .test_paywall import NETWORK, PAYEE, LedgerFacilitator, agent, client, make_app, payer_wallet

ASSET = localchain.TOKEN_ADDRESS


def offer(amount: str = "10000", **change: Any) -> wire.PaymentRequirements:
    base = {"scheme": "exact", "network": NETWORK, "asset": ASSET, "amount": amount, "pay_to": PAYEE,
            "max_timeout_seconds": 60, "extra": {"name": "USDC", "version": "2"}}
    return wire.PaymentRequirements(**{**base, **change})


def server(*offers: wire.PaymentRequirements, v1: bool = False) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    """A 402 server that answers 200 to any request carrying a payment header."""
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if "payment-signature" in request.headers or "x-payment" in request.headers:
            receipt = wire.SettleResponse(success=True, transaction="0x" + "cd" * 32, network=NETWORK)
            name = "X-PAYMENT-RESPONSE" if v1 else "PAYMENT-RESPONSE"
            return httpx.Response(200, json={"ok": True}, headers={name: receipt.to_header()})
        required = wire.PaymentRequired(accepts=offers, resource=wire.ResourceInfo(url=str(request.url)),
                                        error="Payment required", x402_version=1 if v1 else 2)
        if v1:
            return httpx.Response(402, json=required.to_dict())
        return httpx.Response(402, json={}, headers={"PAYMENT-REQUIRED": required.to_header()})

    return httpx.MockTransport(handle), seen


def paying(transport: httpx.AsyncBaseTransport, auth: X402PaymentAuth) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=transport, auth=auth)


def wallet() -> Wallet:
    return Wallet(Account.create().key)


async def test_picks_the_payable_offer_authorization_flow_first() -> None:
    offers = (offer(network="eip155:8453", asset="0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"),
              offer(scheme="upto"),
              offer(extra={"name": "USDC", "version": "2", "paymentFlow": "escrow"}),
              offer("20000", extra={"name": "USDC", "version": "2", "paymentFlow": "upfront"}),
              offer("30000"))
    transport, seen = server(*offers)
    w = wallet()
    async with paying(transport, X402PaymentAuth(w, Budget(), networks={NETWORK})) as http:
        r = await http.get("https://api.example/x")
    assert r.status_code == 200 and len(seen) == 2
    sent = wire.PaymentPayload.from_header(seen[1].headers["payment-signature"])
    assert sent.accepted == offers[4]  # echoed verbatim
    exact = eip3009.ExactEvmPayload.from_dict(sent.payload)
    digest = exact.authorization.digest("USDC", "2", networks.evm_chain_id(NETWORK), ASSET)
    assert eip3009.recover_signer(digest, exact.signature) == w.address
    assert exact.authorization.value == 30000 and exact.authorization.to == PAYEE
    record = r.extensions[PAYMENT_KEY]
    assert record.authorization == exact.authorization.to_dict() and str(record.price_usd) == "0.03"
    receipt = payment_receipt(r)
    assert receipt is not None and receipt.transaction == "0x" + "cd" * 32


@pytest.mark.parametrize(("budget", "reason"), [
    ({"max_per_request": "$0.005"}, "max_per_request"),
    ({"allowed_payees": {"0x" + "99" * 20}}, "payee_not_allowed"),
    ({"allowed_assets": {f"{NETWORK}:0x{'77' * 20}"}}, "asset_not_allowed"),
    ({"max_per_day": "$0.005"}, "max_per_day"),
])
async def test_budget_refuses_with_a_typed_error_and_signs_nothing(budget: dict[str, Any], reason: str) -> None:
    transport, seen = server(offer())
    async with paying(transport, X402PaymentAuth(wallet(), Budget(**budget), networks={NETWORK})) as http:
        with pytest.raises(BudgetExceeded) as caught:
            await http.get("https://api.example/x")
    assert caught.value.reason == reason and isinstance(caught.value, PaymentError)
    assert len(seen) == 1


async def test_unknown_network_or_asset_is_not_payable() -> None:
    transport, seen = server(offer(network="eip155:1"), offer(network="solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp"))
    assert not seen
    async with paying(transport, X402PaymentAuth(wallet(), Budget(), networks={NETWORK})) as http:
        with pytest.raises(NoPayableOffer):
            await http.get("https://api.example/x")
    transport, seen = server(offer(asset="0x" + "12" * 20))
    assert not seen  # not a known stablecoin, no decimals given
    async with paying(transport, X402PaymentAuth(wallet(), Budget(), networks={NETWORK})) as http:
        with pytest.raises(BudgetExceeded):
            await http.get("https://api.example/x")


async def test_daily_limit_persists_in_the_ledger_file(tmp_path: Path) -> None:
    path = tmp_path / "spend.json"
    transport, _ = server(offer("400000"))
    w = wallet()
    for _ in range(2):
        auth = X402PaymentAuth(w, Budget(max_per_request="$1", max_per_day="$1"), networks={NETWORK},
                               ledger=FileLedger(path))
        async with paying(transport, auth) as http:
            assert (await http.get("https://api.example/x")).status_code == 200
    auth = X402PaymentAuth(w, Budget(max_per_request="$1", max_per_day="$1"), networks={NETWORK},
                           ledger=FileLedger(path))
    async with paying(transport, auth) as http:
        with pytest.raises(BudgetExceeded):
            await http.get("https://api.example/x")
    assert list(json.loads(path.read_text())["days"].values()) == ["0.8"]
    assert path.stat().st_mode & 0o077 == 0
    path.write_text("{broken")
    auth = X402PaymentAuth(w, Budget(), networks={NETWORK}, ledger=FileLedger(path))
    async with paying(transport, auth) as http:
        with pytest.raises(PaymentError):
            await http.get("https://api.example/x")


async def test_v1_server_is_answered_with_x_payment() -> None:
    legacy = offer(network="base-sepolia", asset="0x036CbD53842c5426634e7929541eC2318f3dCF7e")
    transport, seen = server(legacy, v1=True)
    w = wallet()
    async with paying(transport, X402PaymentAuth(w, Budget(), networks={"eip155:84532"})) as http:
        r = await http.get("https://old.example/x")
    assert r.status_code == 200 and "payment-signature" not in seen[1].headers
    sent = wire.PaymentPayloadV1.from_header(seen[1].headers["x-payment"])
    assert (sent.scheme, sent.network) == ("exact", "base-sepolia")
    exact = eip3009.ExactEvmPayload.from_dict(sent.payload)
    digest = exact.authorization.digest("USDC", "2", 84532, legacy.asset)
    assert eip3009.recover_signer(digest, exact.signature) == w.address
    receipt = payment_receipt(r)
    assert receipt is not None and receipt.success


async def test_signs_once_per_request_and_returns_a_second_402() -> None:
    calls: list[httpx.Request] = []

    def always_402(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        required = wire.PaymentRequired(accepts=(offer(),), resource=wire.ResourceInfo(url=str(request.url)))
        return httpx.Response(402, headers={"PAYMENT-REQUIRED": required.to_header()})

    async with paying(httpx.MockTransport(always_402), X402PaymentAuth(wallet(), Budget(), networks={NETWORK})) as h:
        r = await h.get("https://api.example/x")
    assert r.status_code == 402 and len(calls) == 2


def test_keys_from_env_file_keystore_never_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    account = Account.create()
    key_hex = account.key.hex()
    monkeypatch.setenv("AGENT_KEY", key_hex)
    (tmp_path / "key").write_text(key_hex + "\n")
    (tmp_path / "keystore.json").write_text(json.dumps(Account.encrypt(account.key, "pw", iterations=2)))
    caplog.set_level(logging.DEBUG)
    wallets = [Wallet.from_env("AGENT_KEY"), Wallet.from_file(tmp_path / "key"),
               Wallet.from_keystore(tmp_path / "keystore.json", "pw")]
    assert {w.address for w in wallets} == {account.address}
    auth = X402PaymentAuth(wallets[0], Budget(), networks={NETWORK})
    for text in (repr(wallets[0]), str(wallets[1]), repr(auth), caplog.text):
        assert key_hex.removeprefix("0x") not in text
    with pytest.raises(ValueError) as caught:
        Wallet("0x1234nothex")
    assert "1234" not in str(caught.value)


async def test_agent_pays_our_paywall_end_to_end() -> None:
    fac = LedgerFacilitator()
    app, _, _ = make_app(fac)
    w = payer_wallet(fac)
    async with client(app, agent(w, max_per_request="$0.01")) as http:
        r = await http.get("/weather")
    assert r.status_code == 200 and fac.balances[PAYEE.lower()] == 10_000


def test_agent_x402_imports_without_server_dependencies() -> None:
    # pydantic is not in the list: eth-account (through eth-utils) needs it.
    server_only = ["starlette", "sqlalchemy", "joserfc", "cryptography", "jinja2", "alembic", "uvicorn", "fastapi",
                   "web3", "eth_tester", "x402", "siwe"]
    code = textwrap.dedent(f"""
        import sys
        for name in {server_only!r}:
            sys.modules[name] = None
        from authgate.agent.x402 import X402PaymentAuth, Wallet, Budget
        from authgate.agent.approval import CibaApprover
        approver = CibaApprover("https://as.example", "c", "s", login_hint="alice", scope="payments:approve")
        X402PaymentAuth(Wallet("0x" + "11" * 32), Budget(approver=approver), networks={{"eip155:8453"}})
        loaded = [m for m in sys.modules if m.split(".")[0] in {server_only!r} and sys.modules[m] is not None]
        assert not loaded, loaded
        ours = sorted(m for m in sys.modules if m.startswith("authgate."))
        allowed = ("authgate.agent", "authgate.x402.wire", "authgate.x402.errors", "authgate.x402.networks",
                   "authgate.x402.price", "authgate.x402.eip3009", "authgate.x402.localchain",
                   "authgate.x402.extensions")
        assert all(m.startswith(allowed) or m == "authgate.x402" for m in ours), ours
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
