"""Interop with the official x402 2.25.0 Python SDK, on loopback and the embedded chain (balances read from the
token contract):

- the SDK client (``x402HttpxClient`` + ``register_exact_evm_client``) pays our paywall, settled by our
  facilitator;
- the SDK's FastAPI ``payment_middleware`` accepts payments through our facilitator over HTTP, paid by our agent.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from eth_account import Account
from fastapi import FastAPI, Request

from authgate.agent.x402 import Budget, Wallet, X402PaymentAuth, payment_receipt
from authgate.clock import SystemClock
from authgate.demo.servers import free_port, serve
from authgate.store import Store
from authgate.x402 import localchain, wire
from authgate.x402.chain.embedded import EmbeddedChain
from authgate.x402.facilitator import InProcessFacilitatorClient
from authgate.x402.facilitator.http import create_facilitator_app
from authgate.x402.facilitator.service import Facilitator
from authgate.x402.paywall import Paywall, PaywallMiddleware

pytestmark = pytest.mark.interop

NETWORK = localchain.NETWORK
TOKEN = localchain.TOKEN_ADDRESS
PAYEE = localchain.label_address("x402-interop-payee")


@pytest.fixture
async def chain() -> AsyncIterator[EmbeddedChain]:
    c = EmbeddedChain()
    yield c
    await c.aclose()


@pytest.fixture
def facilitator(chain: EmbeddedChain, store: Store) -> Facilitator:
    return Facilitator({NETWORK: chain}, store, clock=SystemClock(), settle_timeout=20)


async def funded(chain: EmbeddedChain, amount: int = 1_000_000) -> tuple[str, str]:
    key = "0x" + secrets.token_hex(32)
    address = str(Account.from_key(key).address)
    await chain.mint(address, amount)
    return key, address


async def test_sdk_client_pays_our_paywall(chain: EmbeddedChain, facilitator: Facilitator) -> None:
    from x402.http import x402HTTPClient
    from x402.http.clients import x402HttpxClient
    from x402.mechanisms.evm.exact import register_exact_evm_client

    from x402 import x402Client

    key, payer = await funded(chain)
    port = free_port()
    paywall = Paywall(InProcessFacilitatorClient(facilitator), base_url=f"http://127.0.0.1:{port}")
    paywall.route("/weather", price="$0.01", pay_to=PAYEE, network=NETWORK, description="Weather")
    app = FastAPI()
    served: list[str] = []

    @app.get("/weather")
    async def weather(request: Request) -> dict[str, str]:
        served.append(request.state.x402.payer)
        return {"report": "sunny"}

    sdk = x402Client()
    register_exact_evm_client(sdk, Account.from_key(key))
    sdk.set_spend_controls(False)  # our test token is not one of the SDK's default stablecoins
    async with serve(PaywallMiddleware(app, paywall), port) as base:
        async with httpx.AsyncClient() as plain:
            unpaid = await plain.get(base + "/weather")
        async with x402HttpxClient(sdk, timeout=30) as http:
            paid = await http.get(base + "/weather")
    assert unpaid.status_code == 402
    assert paid.status_code == 200 and paid.json() == {"report": "sunny"}
    settle = x402HTTPClient(sdk).get_payment_settle_response(lambda name: paid.headers.get(name))
    assert settle.success and settle.payer == payer and settle.transaction.startswith("0x")
    assert served == [payer]
    assert await chain.balance_of(TOKEN, payer) == 990_000
    assert await chain.balance_of(TOKEN, PAYEE) == 10_000


async def test_sdk_client_pays_once_when_our_facilitator_is_unreachable(chain: EmbeddedChain) -> None:
    """Our paywall answers a fresh 402 ``facilitator_unavailable``: the SDK client signs once, sends once, and
    hands that 402 back (it never pays twice for one request); nothing is served, nothing moves."""
    from x402.http.clients import x402HttpxClient
    from x402.mechanisms.evm.exact import register_exact_evm_client

    from authgate.x402.facilitator import FacilitatorClient
    from x402 import x402Client

    key, payer = await funded(chain)
    port = free_port()
    dead = FacilitatorClient(f"http://127.0.0.1:{free_port()}", timeout=5)  # nobody listens there
    paywall = Paywall(dead, base_url=f"http://127.0.0.1:{port}")
    paywall.route("/weather", price="$0.01", pay_to=PAYEE, network=NETWORK, description="Weather")
    app = FastAPI()
    served: list[str] = []
    signatures: list[str | None] = []

    paywalled = PaywallMiddleware(app, paywall)

    async def recorded(scope: Any, receive: Any, send: Any) -> None:  # outside the paywall: sees every request
        if scope["type"] == "http":
            raw = dict(scope["headers"]).get(b"payment-signature")
            signatures.append(raw.decode() if raw is not None else None)
        await paywalled(scope, receive, send)

    @app.get("/weather")
    async def weather() -> dict[str, str]:
        served.append("weather")
        return {"report": "sunny"}

    sdk = x402Client()
    register_exact_evm_client(sdk, Account.from_key(key))
    sdk.set_spend_controls(False)
    try:
        async with serve(recorded, port) as base, x402HttpxClient(sdk, timeout=30) as http:
            r = await http.get(base + "/weather")
    finally:
        await dead.aclose()
    assert r.status_code == 402 and r.headers["retry-after"] == "5"
    assert wire.PaymentRequired.from_header(r.headers["payment-required"]).error == "facilitator_unavailable"
    assert len(signatures) == 2 and signatures[0] is None and signatures[1] is not None
    assert served == [] and await chain.balance_of(TOKEN, payer) == 1_000_000
    assert await chain.balance_of(TOKEN, PAYEE) == 0


def _sdk_paywall_app(facilitator_url: str) -> Any:
    """The official SDK's FastAPI paywall; built in a worker thread because it calls ``/supported`` with a
    blocking client at construction, and our facilitator runs on this event loop."""
    from x402.http import FacilitatorConfig, HTTPFacilitatorClient
    from x402.http.middleware.fastapi import payment_middleware
    from x402.mechanisms.evm.exact import register_exact_evm_server

    from x402 import x402ResourceServer

    server = x402ResourceServer(HTTPFacilitatorClient(FacilitatorConfig(url=facilitator_url, timeout=30)))
    register_exact_evm_server(server, NETWORK)
    price = {"amount": "10000", "asset": TOKEN, "extra": {"name": localchain.TOKEN_NAME,
                                                          "version": localchain.TOKEN_VERSION}}
    routes = {"GET /weather": {"accepts": {"scheme": "exact", "payTo": PAYEE, "price": price, "network": NETWORK,
                                           "maxTimeoutSeconds": 60},
                               "description": "Weather", "mimeType": "application/json",
                               "resource": "http://sdk.example/weather"}}
    middleware = payment_middleware(routes, server)
    app = FastAPI()

    @app.middleware("http")
    async def x402(request: Any, call_next: Any) -> Any:
        return await middleware(request, call_next)

    @app.get("/weather")
    async def weather() -> dict[str, str]:
        return {"report": "sunny"}

    return app


async def test_our_agent_pays_the_sdk_paywall_through_our_facilitator(chain: EmbeddedChain,
                                                                       facilitator: Facilitator) -> None:
    key, payer = await funded(chain)
    port = free_port()
    async with serve(create_facilitator_app(facilitator), port) as facilitator_url:
        app = await asyncio.to_thread(_sdk_paywall_app, facilitator_url)
        auth = X402PaymentAuth(Wallet(key), Budget(max_per_request="$0.05"), networks={NETWORK})
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sdk.example", timeout=30) as http:
            unpaid = await http.get("/weather", auth=httpx.USE_CLIENT_DEFAULT)
            paid = await http.get("/weather", auth=auth)
            # The same signed authorization again: the SDK paywall asks our facilitator, which refuses it.
            replay = await http.get("/weather", headers={"PAYMENT-SIGNATURE": paid.request.headers[
                "payment-signature"]})
    assert unpaid.status_code == 402
    assert paid.status_code == 200 and paid.json() == {"report": "sunny"}
    receipt = payment_receipt(paid)
    assert receipt is not None and receipt.success and receipt.payer == payer
    assert replay.status_code == 402
    assert wire.PaymentRequired.from_header(replay.headers["payment-required"]).error == (
        "invalid_exact_evm_nonce_already_used")
    assert await chain.balance_of(TOKEN, payer) == 990_000
    assert await chain.balance_of(TOKEN, PAYEE) == 10_000
