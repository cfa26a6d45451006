"""x402 ``/verify`` throughput: authgate's facilitator vs the official SDK's, same payloads, same chain.

One run builds the embedded chain (an in-process EVM with our EIP-3009 TestUSDC), funds payers, signs N
payments, then verifies each payment with

- **authgate**: :meth:`authgate.x402.facilitator.service.Facilitator.verify` (the code behind ``POST /verify``);
- **x402 SDK**: ``x402Facilitator`` + ``register_exact_evm_facilitator`` with the SDK's own
  ``FacilitatorWeb3Signer``, whose web3 provider is pointed at the same in-process node (no sockets).

Both run the full check list including the on-chain simulation of ``transferWithAuthorization``, and both must
call every payment valid (checked). Timed in interleaved batches so both see the same machine load; medians of
the per-batch rates. No HTTP: the facilitator work only. ``coincurve`` is required (the SDK's eth-keys backend
and our recovery both use it; pure-Python secp256k1 is ~100 times slower).

Two passes:

1. **live EVM**: every chain read executes in py-evm. The simulation alone costs ~20-25 ms of interpreted EVM
   per payment for either facilitator, so this pass mostly measures py-evm and the ratio stays small.
2. **replayed chain**: the same node's answers, recorded in pass 1, are replayed instantly (keyed by method and
   parameters), so what is left is the facilitator's own work per verify: parsing, checks, EIP-712 hashing,
   signature recovery, ABI encoding, RPC formatting. This is the cost a facilitator adds on top of a (remote)
   node, and the figure the >= 3x target is about.

Reads: the embedded node answers ``eth_call`` with its py-evm reader (a state kept warm per block) for both
facilitators; ours calls it with bytes, the SDK's web3 over JSON-RPC. ``--eth-tester-reads`` sends every read of
both through the older web3 → EthereumTesterProvider → eth-tester path instead, to measure what the reader buys.

Run: ``.venv/bin/python benchmarks/x402_verify.py [payments] [rounds] [--eth-tester-reads]``.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from typing import Any

import coincurve  # noqa: F401  (required: fail loudly when it is missing)
from eth_keys.backends import CoinCurveECCBackend, get_backend
from web3.providers.base import JSONBaseProvider
from web3.types import RPCEndpoint, RPCResponse

from authgate.clock import SystemClock
from authgate.store import Store
from authgate.x402 import localchain
from authgate.x402.chain.embedded import EmbeddedChain
from authgate.x402.chain.node import LocalNode, RpcError
from authgate.x402.facilitator.service import Facilitator
from authgate.x402.wire import PaymentPayload, PaymentRequirements

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from tests.x402.facilitator_support import new_payer, pay, requirements


class InProcessProvider(JSONBaseProvider):
    """A web3 provider answering from the embedded node directly, so the SDK signer needs no socket."""

    def __init__(self, node: LocalNode) -> None:
        super().__init__()
        self.node = node

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        try:
            return {"jsonrpc": "2.0", "id": 1, "result": self.node.request(str(method), list(params))}
        except RpcError as exc:
            return {"jsonrpc": "2.0", "id": 1, "error": {"code": exc.code, "message": exc.message, "data": exc.data}}

    def is_connected(self, show_traceback: bool = False) -> bool:
        return True


class ReplayNode:
    """The node's answers, recorded once and then replayed without executing anything."""

    def __init__(self, node: LocalNode, *, eth_tester_reads: bool = False) -> None:
        self.node = node
        self.answers: dict[str, Any] = {}
        self.replaying = False
        self.eth_tester_reads = eth_tester_reads
        if eth_tester_reads:
            node._fast_call = lambda params: None  # type: ignore[method-assign]

    def __getattr__(self, name: str) -> Any:  # mint and friends go to the real node
        return getattr(self.node, name)

    def call(self, to: str, data: bytes, *, sender: str | None = None) -> bytes:
        """authgate's embedded chain reads through here (bytes, no JSON-RPC); recorded and replayed alike."""
        key = "call" + json.dumps([to, data.hex(), sender])
        if self.replaying:
            answer = self.answers[key]
        else:
            try:
                if self.eth_tester_reads:
                    tx = {"from": sender or "0x" + "00" * 20, "to": to, "data": "0x" + data.hex()}
                    answer = bytes.fromhex(str(self.node.request("eth_call", [tx, "latest"]))[2:])
                else:
                    answer = self.node.call(to, data, sender=sender)
                self.answers[key] = answer
            except RpcError as exc:
                answer = self.answers[key] = exc
        if isinstance(answer, RpcError):
            raise answer
        return bytes(answer)

    def request(self, method: str, params: list[Any]) -> Any:
        key = method + json.dumps(params, sort_keys=True)
        if self.replaying:
            answer = self.answers[key]
        else:
            try:
                answer = self.answers[key] = self.node.request(method, params)
            except RpcError as exc:
                answer = self.answers[key] = exc
        if isinstance(answer, RpcError):
            raise answer
        return answer


def sdk_facilitator(node: Any) -> Any:
    from x402.mechanisms.evm import FacilitatorWeb3Signer
    from x402.mechanisms.evm.exact import register_exact_evm_facilitator

    from x402 import x402Facilitator

    signer = FacilitatorWeb3Signer(private_key=localchain.FACILITATOR_KEY, rpc_url="http://127.0.0.1:9")
    signer._w3.provider = InProcessProvider(node)  # same chain, no network
    fac = x402Facilitator()
    register_exact_evm_facilitator(fac, signer, networks=localchain.NETWORK)
    return fac


async def main(n: int, rounds: int, eth_tester_reads: bool = False) -> None:
    assert isinstance(get_backend(), CoinCurveECCBackend), "coincurve backend required"
    chain = EmbeddedChain()
    replay = ReplayNode(chain.node, eth_tester_reads=eth_tester_reads)
    chain.node = replay  # type: ignore[assignment]  # both facilitators read the chain through the recorder
    print(f"x402 /verify throughput, in-process (no HTTP), embedded chain; {n} payments, {rounds} rounds; reads: "
          + ("eth-tester (--eth-tester-reads)" if eth_tester_reads else "py-evm reader"))
    print(f"python {platform.python_version()} on {platform.machine()} ({os.cpu_count()} cpus), "
          f"{platform.platform()}")
    with tempfile.TemporaryDirectory() as tmp:
        store = await Store.open(f"sqlite+aiosqlite:///{tmp}/bench.db", SystemClock())
        ours = Facilitator({localchain.NETWORK: chain}, store)
        sdk = sdk_facilitator(replay)
        from x402.schemas import PaymentPayload as SdkPayload
        from x402.schemas import PaymentRequirements as SdkRequirements

        req = requirements(timeout=3600)
        payments: list[tuple[PaymentPayload, PaymentRequirements, Any, Any]] = []
        for _ in range(n):
            key, address = new_payer()
            await chain.mint(address, 1_000_000)
            p = pay(key, req)
            payments.append((p, req, SdkPayload.model_validate_json(p.to_json()),
                             SdkRequirements.model_validate_json(req.to_json())))

        async def run_ours(batch: list[tuple[Any, ...]]) -> None:
            for p, r, _, _ in batch:
                if not (await ours.verify(p, r)).is_valid:
                    raise AssertionError("authgate said invalid")

        async def run_sdk(batch: list[tuple[Any, ...]]) -> None:
            for _, _, sp, sr in batch:
                verdict = await sdk.verify(sp, sr)
                if not verdict.is_valid:
                    raise AssertionError(f"SDK said invalid: {verdict.invalid_reason}")

        for label, replaying in (("live EVM", False), ("replayed chain answers", True)):
            replay.replaying = replaying
            rates: dict[str, list[float]] = {"authgate": [], "sdk": []}
            batch_size = max(1, n // 4)
            for _ in range(rounds):
                for start in range(0, n, batch_size):
                    batch = payments[start:start + batch_size]
                    for name, fn in (("authgate", run_ours), ("sdk", run_sdk)):
                        t0 = time.perf_counter()
                        await fn(batch)
                        rates[name].append(len(batch) / (time.perf_counter() - t0))
            ours_rate, sdk_rate = statistics.median(rates["authgate"]), statistics.median(rates["sdk"])
            print(f"{label}:")
            for name, rate in (("authgate Facilitator.verify", ours_rate),
                               ("x402 SDK x402Facilitator.verify", sdk_rate)):
                print(f"  {name:34s} {rate:8.0f} verifies/s  ({1e3 / rate:6.2f} ms each)")
            print(f"  ratio authgate / SDK: {ours_rate / sdk_rate:.2f}x")
        await store.close()
    await chain.aclose()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("count", nargs="?", type=int, default=200, help="payments per pass (default 200)")
    parser.add_argument("passes", nargs="?", type=int, default=3, help="passes (default 3)")
    parser.add_argument("--eth-tester-reads", action="store_true", help="measure the old eth-tester read path")
    parser.add_argument("--quick", action="store_true", help="40 payments, 1 pass (CI smoke run)")
    cli = parser.parse_args()
    count, passes = (40, 1) if cli.quick else (cli.count, cli.passes)
    asyncio.run(main(count, passes, eth_tester_reads=cli.eth_tester_reads))
