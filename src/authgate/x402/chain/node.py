"""An in-process EVM (eth-tester on py-evm) that speaks Ethereum JSON-RPC wire format.

This is the one place that knows eth-tester. :mod:`.embedded` calls :meth:`LocalNode.request` from a worker
thread; ``authgate devchain`` (:mod:`.devchain`) serves :meth:`LocalNode.handle` over HTTP so that several
processes (two authgate servers, the official x402 SDK's facilitator) can share one chain.

At start-up the chain has two funded accounts (the deployer and the facilitator of :mod:`authgate.x402.localchain`)
and the deployer's first transaction deploys TestUSDC, so the token lands at ``localchain.TOKEN_ADDRESS``. Every
transaction is mined into its own block at once (eth-tester auto-mining).

Block time: eth-tester makes blocks only when transactions arrive, so an idle chain's latest block would carry an
old timestamp and ``eth_call`` would judge EIP-3009 validity windows against a stale clock. Before serving a
request the node therefore "ticks": if the clock moved past the latest block, it mines an empty block stamped
with the clock's time, as a real chain producing blocks every second or two would have. Block timestamps must
strictly increase, so a burst of N transactions within one second runs the chain up to N seconds ahead of the
clock; settle in bursts of at most a few dozen, or keep ``maxTimeoutSeconds`` comfortably above that.

Not thread-safe by itself: every public method takes the node's lock.
"""

from __future__ import annotations

import ast
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from eth_account import Account
from eth_utils.address import to_canonical_address, to_checksum_address
from web3 import Web3
from web3.providers.eth_tester import EthereumTesterProvider

from authgate.clock import Clock
from authgate.x402 import localchain
from authgate.x402.chain import contract

log = logging.getLogger(__name__)

#: ETH (wei) in the genesis accounts, and what ``fund_eth`` sends by default: plenty of gas money.
GENESIS_BALANCE = 10**27
DEFAULT_FUNDING = 10**21
#: Fees of the node's own transactions (deploy, mint, funding). Way above the base fee, which only falls here.
_MAX_FEE = 10**10
_PRIORITY_FEE = 10**9

#: Methods served. Others (eth_sendTransaction with eth-tester's keys, evm_* time travel, filters) are refused:
#: the devchain is a chain, not a debugging back door.
METHODS = frozenset(
    {
        "eth_chainId",
        "net_version",
        "web3_clientVersion",
        "eth_syncing",
        "eth_accounts",
        "eth_blockNumber",
        "eth_getBlockByNumber",
        "eth_getBlockByHash",
        "eth_getBalance",
        "eth_getCode",
        "eth_getStorageAt",
        "eth_getTransactionCount",
        "eth_call",
        "eth_estimateGas",
        "eth_gasPrice",
        "eth_maxPriorityFeePerGas",
        "eth_feeHistory",
        "eth_sendRawTransaction",
        "eth_getTransactionByHash",
        "eth_getTransactionReceipt",
        "eth_getLogs",
    }
)
#: Bounds on one HTTP body's work: a JSON-RPC batch of at most this many calls.
MAX_BATCH = 100


class RpcError(Exception):
    """A JSON-RPC error object: ``code``, ``message`` and optional ``data`` (0x hex revert payload)."""

    def __init__(self, code: int, message: str, data: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


def to_wire(value: Any) -> Any:
    """eth-tester's Python values as JSON-RPC wire values: integers as hex quantities, bytes as 0x data."""
    if isinstance(value, bool) or value is None or isinstance(value, str | float):
        return value
    if isinstance(value, int):
        return hex(value)
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): to_wire(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_wire(v) for v in value]
    return str(value)


class LocalNode:
    """The embedded chain: eth-tester with TestUSDC deployed and the facilitator funded."""

    def __init__(self, *, clock: Clock | Callable[[], float] = time.time) -> None:
        """``clock``: authgate's injectable :class:`~authgate.clock.Clock` or a plain ``time.time``-like function.
        Chain time follows it forwards only: blocks never go back in time, so a clock set in the past (before the
        genesis block, stamped with the real time) makes fresh authorizations look expired."""
        from eth_tester import EthereumTester, PyEVMBackend

        started = time.perf_counter()
        self._clock: Callable[[], float] = clock if callable(clock) else clock.now
        self._lock = threading.RLock()
        genesis = {
            to_canonical_address(address): {"balance": GENESIS_BALANCE, "nonce": 0, "code": b"", "storage": {}}
            # The zero address is the default sender of eth_call: eth-tester checks that it could pay for the gas.
            for address in (localchain.DEPLOYER, localchain.FACILITATOR, "0x" + "00" * 20)
        }
        self._backend = PyEVMBackend(genesis_state=genesis)
        self._tester = EthereumTester(self._backend)
        self._provider = EthereumTesterProvider(self._tester)
        # No web3 middleware of its own: only the provider's formatters (wire names <-> eth-tester names).
        self._w3 = Web3(self._provider, middleware=[])
        self._send = self._provider.request_func(self._w3, self._w3.middleware_onion)
        self._deployer = Account.from_key(localchain.DEPLOYER_KEY)
        receipt = self._own_transaction(None, contract.deploy_data(localchain.TOKEN_NAME, localchain.TOKEN_VERSION),
                                        gas=3_000_000)
        deployed = to_checksum_address(receipt["contractAddress"])
        if deployed != localchain.TOKEN_ADDRESS or receipt["status"] != "0x1":
            raise RuntimeError(f"TestUSDC deployment went wrong: {deployed}, status {receipt['status']}")
        #: Seconds the start-up took (genesis + deployment), for the logs and the docs.
        self.startup_seconds = time.perf_counter() - started
        log.debug("embedded chain ready in %.3f s, token %s", self.startup_seconds, deployed)

    # -- JSON-RPC --------------------------------------------------------------------------------------------

    def request(self, method: str, params: list[Any]) -> Any:
        """One call; the wire-format result, or :class:`RpcError`."""
        if method not in METHODS:
            raise RpcError(-32601, f"method not supported: {method}"[:200])
        if not isinstance(params, list):
            raise RpcError(-32602, "params must be an array")
        if method == "eth_accounts":
            return []
        if method == "eth_syncing":
            return False
        if method == "net_version":  # eth-tester says "1" (mainnet); nodes answer their chain id in decimal
            return str(localchain.CHAIN_ID)
        with self._lock:
            if method in ("eth_call", "eth_estimateGas", "eth_sendRawTransaction", "eth_blockNumber",
                          "eth_getBlockByNumber"):
                self._tick()
            if method in ("eth_call", "eth_estimateGas") and params and isinstance(params[0], dict):
                # eth-tester insists on a sender; nodes default it to the zero address.
                params = [{"from": "0x" + "00" * 20, **params[0]}, *params[1:]]
            try:
                response = self._send(method, params)
            except Exception as exc:  # eth-tester raises for reverts and for malformed input alike
                raise _rpc_error(exc) from None
        if "error" in response:
            error = response["error"]
            raise RpcError(int(error.get("code", -32000)), str(error.get("message", "error"))[:500])
        return _conform(method, params, to_wire(response.get("result")))

    def handle(self, payload: Any) -> Any:
        """A decoded JSON-RPC request object or batch in, the response object(s) out (None for notifications)."""
        if isinstance(payload, list):
            if not payload or len(payload) > MAX_BATCH:
                return _envelope(None, error=RpcError(-32600, f"batch must have 1 to {MAX_BATCH} calls"))
            answers = [self._handle_one(item) for item in payload]
            return [a for a in answers if a is not None]
        return self._handle_one(payload)

    def _handle_one(self, item: Any) -> dict[str, Any] | None:
        if not isinstance(item, dict) or not isinstance(item.get("method"), str):
            return _envelope(None, error=RpcError(-32600, "invalid request"))
        request_id = item.get("id")
        if not (request_id is None or isinstance(request_id, str | int)):
            return _envelope(None, error=RpcError(-32600, "invalid id"))
        try:
            result = self.request(item["method"], item.get("params", []))
        except RpcError as exc:
            answer = _envelope(request_id, error=exc)
        else:
            answer = _envelope(request_id, result=result)
        return answer if "id" in item else None

    # -- helpers for the demo, tests and ``authgate devchain --fund`` ----------------------------------------

    def mint(self, to: str, amount: int) -> str:
        """Mint ``amount`` atomic units of test USDC to ``to``; the transaction hash."""
        receipt = self._own_transaction(localchain.TOKEN_ADDRESS, contract.mint(to_checksum_address(to), amount))
        return str(receipt["transactionHash"])

    def deploy(self, creation_code: bytes) -> str:
        """Deploy a contract from the deployer account (tests, demos); its address."""
        receipt = self._own_transaction(None, creation_code, gas=3_000_000)
        if receipt["status"] != "0x1" or not receipt.get("contractAddress"):
            raise RuntimeError("deployment failed")
        return str(to_checksum_address(receipt["contractAddress"]))

    def fund_eth(self, to: str, wei: int = DEFAULT_FUNDING) -> str:
        """Send ``wei`` of gas money to ``to``; the transaction hash."""
        receipt = self._own_transaction(to_checksum_address(to), b"", value=wei, gas=50_000)
        return str(receipt["transactionHash"])

    def _own_transaction(self, to: str | None, data: bytes, *, value: int = 0, gas: int = 200_000) -> dict[str, Any]:
        with self._lock:
            # Asked each time: the deployer key is public, so a test may send its own transactions through RPC.
            nonce = int(self.request("eth_getTransactionCount", [self._deployer.address, "latest"]), 16)
            tx: dict[str, Any] = {
                "type": 2,
                "chainId": localchain.CHAIN_ID,
                "nonce": nonce,
                "data": data,
                "value": value,
                "gas": gas,
                "maxFeePerGas": _MAX_FEE,
                "maxPriorityFeePerGas": _PRIORITY_FEE,
            }
            if to is not None:
                tx["to"] = to
            raw = self._deployer.sign_transaction(tx).raw_transaction
            tx_hash = self.request("eth_sendRawTransaction", ["0x" + bytes(raw).hex()])
            receipt: dict[str, Any] = self.request("eth_getTransactionReceipt", [tx_hash])
        if receipt["status"] != "0x1" and to is not None:
            raise RuntimeError(f"development transaction to {to} failed")
        return receipt

    def _tick(self) -> None:
        now = int(self._clock())
        pending = self._backend.chain.header.timestamp
        if now > pending:
            self._tester.time_travel(now)


def _conform(method: str, params: list[Any], result: Any) -> Any:
    """Fix the few places where eth-tester's answer differs from what a geth-style node sends."""
    if method == "eth_getTransactionReceipt" and isinstance(result, dict):
        result.pop("state_root", None)  # pre-Byzantium field; receipts with ``status`` carry no root
        result["logs"] = [_conform_log(entry) for entry in result.get("logs", [])]
    elif method == "eth_getLogs" and isinstance(result, list):
        result = [_conform_log(entry) for entry in result]
    elif method == "eth_getTransactionByHash" and isinstance(result, dict) and "y_parity" in result:
        result["yParity"] = result.pop("y_parity")
    elif method == "eth_feeHistory" and isinstance(result, dict) and not result.get("reward"):
        percentiles = params[2] if len(params) > 2 and isinstance(params[2], list) else []
        if percentiles:
            blocks = len(result.get("gasUsedRatio", []))
            result["reward"] = [[hex(_PRIORITY_FEE)] * len(percentiles) for _ in range(blocks)]
    return result


def _conform_log(entry: Any) -> Any:
    if isinstance(entry, dict) and "type" in entry:
        entry = {k: v for k, v in entry.items() if k != "type"}
        entry["removed"] = False
    return entry


def _envelope(request_id: Any, *, result: Any = None, error: RpcError | None = None) -> dict[str, Any]:
    if error is not None:
        return {"jsonrpc": "2.0", "id": request_id, "error": error.to_json()}
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


_REVERT_PREFIX = "execution reverted: "
_NONCE_MISMATCH = re.compile(r"Invalid transaction nonce: Expected (\d+), but got (\d+)")


def _rpc_error(exc: Exception) -> RpcError:
    """Map eth-tester's exceptions to JSON-RPC errors the way geth does: a revert is code 3 with the
    ``Error(string)`` payload in ``data``; anything else is invalid params (message bounded, no traceback)."""
    from eth_tester.exceptions import TransactionFailed

    text = str(exc.args[0]) if exc.args else type(exc).__name__
    if isinstance(exc, TransactionFailed):
        reason = text[len(_REVERT_PREFIX) :] if text.startswith(_REVERT_PREFIX) else text
        if reason[:2] in ("b'", 'b"'):
            # web3's provider formats a revert without an Error(string) as the repr of its raw payload.
            try:
                payload = ast.literal_eval(reason)
            except (ValueError, SyntaxError):
                payload = b""
            payload = payload if isinstance(payload, bytes) else b""
            return RpcError(3, "execution reverted", "0x" + payload.hex())
        return RpcError(3, (_REVERT_PREFIX + reason)[:500], "0x" + contract.error_payload(reason[:400]).hex())
    nonce = _NONCE_MISMATCH.search(text)
    if nonce:  # say it as geth does, so clients' "nonce too low" handling works against this node too
        expected, got = int(nonce.group(1)), int(nonce.group(2))
        word = "low" if got < expected else "high"
        return RpcError(-32000, f"nonce too {word}: next nonce {expected}, tx nonce {got}")
    if "does not have enough balance" in text:
        return RpcError(-32000, "insufficient funds for gas * price + value")
    return RpcError(-32602, f"invalid params: {text}"[:300])
