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

Reads: ``eth_call`` at ``latest`` (what a facilitator's simulation and view calls use) runs on py-evm directly
(:class:`_Reader`) instead of web3 → EthereumTesterProvider → eth-tester, which rebuilt the VM and a cold state
(every account and storage slot read back through the trie) for each call. The reader keeps one state per head
block, executes each call in a snapshot that is reverted, and builds the very transaction eth-tester would
(sender default, gas = what is left in the pending block, 1 gwei fees, the sender's nonce), so the EVM runs the
same code against the same state: same output, same revert payloads, same JSON-RPC errors. Anything outside that
common shape (fee fields, other block tags, a transaction py-evm refuses) takes the eth-tester path as before.

Mempool mode (``LocalNode(mempool=True)``, ``authgate devchain --block-time S``): transactions wait in a
mempool, as on a real chain, until :meth:`LocalNode.mine` puts all of them into one block; ``eth_getTransaction
Receipt`` answers null until then and ``eth_getTransactionCount`` at ``pending`` counts them. That is what a
crash test needs (a facilitator killed while its transactions wait for a block) and what keeps block time on
the clock under sustained load (one block per period, not one per transaction).

Not thread-safe by itself: every public method takes the node's lock.
"""

from __future__ import annotations

import ast
import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
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


#: Transactions one sender may have waiting in the mempool (a bound on what one client can queue).
MAX_PENDING_PER_SENDER = 4096


@dataclass(frozen=True)
class _Waiting:
    """A transaction in the mempool: its hash, signed bytes, sender, nonce and what it may cost the sender."""

    tx_hash: str
    raw: bytes
    sender: str
    nonce: int
    cost: int
    view: dict[str, Any]


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


_ZERO_ADDRESS = "0x" + "00" * 20
#: eth-tester's fees for an ``eth_call`` that names none (``PyEVMBackend._normalize_transaction``).
_CALL_FEE = 10**9
#: ``eth_call`` fields the fast reader understands; any other field takes the eth-tester path.
_CALL_FIELDS = frozenset({"from", "to", "data", "input", "gas", "value"})


class _Reader:
    """``eth_call`` on py-evm directly, against a state kept warm for one head block (see the module docstring).

    py-evm journals every change a call makes, including EIP-2929's warm/cold access sets, so reverting the
    snapshot leaves the state exactly as the head block left it; the state's caches (decoded accounts, storage,
    trie nodes) survive, which is what makes the next call cheap. A new head (transaction, tick) replaces it."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self._key: tuple[int, bytes] | None = None
        self._state: Any = None
        self._builder: Any = None

    def _warm(self) -> Any:
        chain = self._backend.chain
        pending = chain.header
        key = (pending.block_number, pending.parent_hash)
        if key != self._key:
            # eth-tester's "latest": the canonical block just below the pending one, with its own VM and context.
            latest = chain.get_canonical_block_header_by_number(max(0, pending.block_number - 1))
            vm = chain.get_vm(at_header=latest)
            self._state, self._builder, self._key = vm.state, vm.get_transaction_builder(), key
        return self._state

    def call(self, sender: bytes, to: bytes, data: bytes, value: int, gas: int | None) -> Any:
        """The py-evm computation of the call (its ``is_error``/``output``/``_error``); state unchanged."""
        from eth_tester.backends.pyevm.main import EVMSpoofTransaction

        state = self._warm()
        if gas is None:
            pending = self._backend.chain.header
            gas = pending.gas_limit - pending.gas_used
        unsigned = self._builder.new_unsigned_dynamic_fee_transaction(
            chain_id=self._backend.chain.chain_id, nonce=state.get_nonce(sender), max_priority_fee_per_gas=_CALL_FEE,
            max_fee_per_gas=_CALL_FEE, gas=gas, to=to, value=value, data=data, access_list=())
        transaction = EVMSpoofTransaction(unsigned, from_=sender)
        snapshot = state.snapshot()
        try:
            executor = state.get_transaction_executor()
            executor.validate_transaction(transaction)
            message = executor.build_evm_message(transaction)
            # Not finalize_computation: refunds and the coinbase's fee change no output, and are reverted anyway.
            return executor.build_computation(message, transaction)
        finally:
            state.revert(snapshot)


def _call_failure(computation: Any) -> RpcError:
    """The JSON-RPC error eth-tester's path gives for a failed call: its message, through :func:`_rpc_error`."""
    from eth.exceptions import Revert
    from eth_abi.exceptions import DecodingError
    from eth_tester.exceptions import TransactionFailed

    error = computation._error
    message = str(error)
    if isinstance(error, Revert) and error.args and isinstance(error.args[0], bytes) \
            and error.args[0][:4] == contract.ERROR_STRING:
        with contextlib.suppress(DecodingError, ValueError, OverflowError):  # undecodable: the raw error text
            message = contract.decode_string(error.args[0][4:])
    return _rpc_error(TransactionFailed(message))


class LocalNode:
    """The embedded chain: eth-tester with TestUSDC deployed and the facilitator funded."""

    def __init__(self, *, clock: Clock | Callable[[], float] = time.time, mempool: bool = False) -> None:
        """``clock``: authgate's injectable :class:`~authgate.clock.Clock` or a plain ``time.time``-like function.
        Chain time follows it forwards only: blocks never go back in time, so a clock set in the past (before the
        genesis block, stamped with the real time) makes fresh authorizations look expired.

        ``mempool``: transactions wait until :meth:`mine` (see the module docstring) instead of each being mined
        into its own block at once."""
        from eth_tester import EthereumTester, PyEVMBackend

        started = time.perf_counter()
        self._clock: Callable[[], float] = clock if callable(clock) else clock.now
        self._lock = threading.RLock()
        #: Waiting transactions in arrival order (None: no mempool, every transaction is mined at once).
        self._mempool: list[_Waiting] | None = [] if mempool else None
        #: Hashes of every transaction in a block. eth-tester looks an unknown hash up by scanning every block
        #: (0.4 s at 600 blocks), and a receipt poll for a transaction not mined yet is exactly that: such
        #: hashes are answered null here without asking it.
        self._mined: set[str] = set()
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
        self._reader = _Reader(self._backend)
        #: Calls answered by the fast reader, and by the eth-tester path (tests check which path ran).
        self.fast_calls = 0
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
            if self._mempool is not None:
                answered, result = self._mempool_request(method, params)
                if answered:
                    return result
            if method in ("eth_getTransactionReceipt", "eth_getTransactionByHash") and len(params) == 1 \
                    and _is_hash_text(params[0]):
                if params[0].lower() not in self._mined:
                    return None  # not in any block (nor, with a mempool, waiting: answered above)
                params = [params[0].lower()]  # hex is case-insensitive; eth-tester wants lower case
            if method in ("eth_call", "eth_estimateGas", "eth_sendRawTransaction", "eth_blockNumber",
                          "eth_getBlockByNumber"):
                self._tick()
            if method == "eth_call":
                fast = self._fast_call(params)
                if fast is not None:
                    return fast
            if method in ("eth_call", "eth_estimateGas") and params and isinstance(params[0], dict):
                # eth-tester insists on a sender; nodes default it to the zero address.
                params = [{"from": _ZERO_ADDRESS, **params[0]}, *params[1:]]
            try:
                response = self._send(method, params)
            except Exception as exc:  # eth-tester raises for reverts and for malformed input alike
                raise _rpc_error(exc) from None
            if method == "eth_sendRawTransaction" and isinstance(response.get("result"), str | bytes):
                mined = response["result"]
                self._mined.add((mined if isinstance(mined, str) else "0x" + mined.hex()).lower())
        if "error" in response:
            error = response["error"]
            raise RpcError(int(error.get("code", -32000)), str(error.get("message", "error"))[:500])
        return _conform(method, params, to_wire(response.get("result")))

    def call(self, to: str, data: bytes, *, sender: str | None = None) -> bytes:
        """``eth_call`` at ``latest`` without the JSON-RPC wire format (the embedded chain's own reads): the
        return data, or :class:`RpcError` exactly as :meth:`request` would raise it."""
        with self._lock:
            self._tick()
            computation = self._execute(to_canonical_address(sender or _ZERO_ADDRESS), to_canonical_address(to),
                                        data, 0, None)
            if computation is None:  # py-evm refused the transaction itself: eth-tester's answer and error
                tx = {"from": sender or _ZERO_ADDRESS, "to": to, "data": "0x" + data.hex()}
                return bytes.fromhex(str(self.request("eth_call", [tx, "latest"]))[2:])
        if computation.is_error:
            raise _call_failure(computation)
        return bytes(computation.output)

    def _fast_call(self, params: list[Any]) -> str | None:
        """``eth_call`` by the fast reader when the request has the common shape; None: use eth-tester."""
        if len(params) != 2 or not isinstance(params[0], dict) or params[1] != "latest" \
                or not set(params[0]) <= _CALL_FIELDS:
            return None
        tx = params[0]
        try:
            sender = to_canonical_address(tx.get("from") or _ZERO_ADDRESS)
            to = to_canonical_address(tx["to"])
            raw = tx.get("data", tx.get("input", "0x"))
            if "data" in tx and "input" in tx and tx["data"] != tx["input"]:
                return None
            if not isinstance(raw, str) or not raw.startswith("0x"):
                return None
            data = bytes.fromhex(raw[2:])
            value = int(tx.get("value", "0x0"), 16)
            gas = int(tx["gas"], 16) if "gas" in tx else None
        except (KeyError, TypeError, ValueError):
            return None
        computation = self._execute(sender, to, data, value, gas)
        if computation is None:
            return None
        if computation.is_error:
            raise _call_failure(computation)
        return "0x" + bytes(computation.output).hex()

    def _execute(self, sender: bytes, to: bytes, data: bytes, value: int, gas: int | None) -> Any:
        """The computation, or None when py-evm refused the transaction (let eth-tester word that error)."""
        try:
            computation = self._reader.call(sender, to, data, value, gas)
        except Exception as exc:  # a validation error (funds, gas limit, ...): not an EVM outcome
            log.debug("fast eth_call refused (%s); using eth-tester", type(exc).__name__)
            return None
        self.fast_calls += 1
        return computation

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
            nonce = int(self.request("eth_getTransactionCount", [self._deployer.address, "pending"]), 16)
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
            if self._mempool is not None:
                self.mine()  # the node's own set-up transactions do not wait for the next block
            receipt: dict[str, Any] = self.request("eth_getTransactionReceipt", [tx_hash])
        if receipt["status"] != "0x1" and to is not None:
            raise RuntimeError(f"development transaction to {to} failed")
        return receipt

    def _tick(self) -> None:
        now = int(self._clock())
        pending = self._backend.chain.header.timestamp
        if now > pending:
            self._tester.time_travel(now)

    # -- mempool mode ------------------------------------------------------------------------------------------

    @property
    def waiting(self) -> int:
        """Transactions in the mempool (always 0 without one)."""
        with self._lock:
            return len(self._mempool or [])

    def mine(self) -> int:
        """Mine every waiting transaction, in arrival order, into one new block stamped with the clock's time;
        the number included. A transaction the chain refuses at this point (its sender can no longer pay for the
        gas) is dropped, as a node drops it, and never gets a receipt; one that reverts is included with status
        0. Without a mempool, or with nothing waiting, nothing happens."""
        with self._lock:
            if not self._mempool:
                return 0
            waiting, self._mempool = self._mempool, []
            self._tick()
            included = 0
            for entry in waiting:
                try:
                    self._backend.send_raw_transaction(entry.raw)  # applies it to the pending block
                except Exception as exc:  # py-evm's validation errors: the transaction cannot be included
                    log.info("devchain dropped transaction %s (%s)", entry.tx_hash, type(exc).__name__)
                    continue
                included += 1
                self._mined.add(entry.tx_hash)
            if included:
                self._tester.mine_blocks(1)
            return included

    def _mempool_request(self, method: str, params: list[Any]) -> tuple[bool, Any]:
        """The methods a mempool changes: (True, result) when answered here, (False, None) for the usual path."""
        assert self._mempool is not None
        if method == "eth_sendRawTransaction":
            return True, self._enqueue(params)
        if method == "eth_getTransactionCount" and len(params) == 2 and params[1] == "pending" \
                and isinstance(params[0], str):
            if not _is_address_text(params[0]):
                return False, None  # eth-tester words the error
            sender = params[0].lower()
            latest = self._tester.get_nonce(to_checksum_address(sender))
            return True, hex(latest + sum(1 for w in self._mempool if w.sender == sender))
        if method == "eth_getTransactionByHash" and len(params) == 1 and isinstance(params[0], str):
            wanted = params[0].lower()
            for entry in self._mempool:
                if entry.tx_hash == wanted:
                    return True, dict(entry.view)
        return False, None

    def _enqueue(self, params: list[Any]) -> str:
        """Check a raw transaction as a node's mempool would (decodes, recovers a sender, carries the next nonce,
        its sender can pay for it) and queue it; its hash. The same bytes twice are the same transaction."""
        assert self._mempool is not None
        raw_hex = params[0] if len(params) == 1 else None
        if not isinstance(raw_hex, str) or not raw_hex.startswith("0x") or len(raw_hex) > 2 * 128 * 1024:
            raise RpcError(-32602, "invalid params: expected one 0x-hex signed transaction")
        try:
            raw = bytes.fromhex(raw_hex[2:])
            tx = self._backend.chain.get_vm().get_transaction_builder().decode(raw)
            sender = to_checksum_address(tx.sender)
            tx.validate()
        except Exception:  # rlp, signature recovery and py-evm validation raise many types
            raise RpcError(-32602, "invalid params: not a valid signed transaction") from None
        tx_hash = "0x" + bytes(tx.hash).hex()
        if any(entry.tx_hash == tx_hash for entry in self._mempool):
            return tx_hash  # already known: nodes accept a re-broadcast of the same bytes
        chain_id = getattr(tx, "chain_id", localchain.CHAIN_ID)
        if chain_id != localchain.CHAIN_ID:
            raise RpcError(-32000, f"invalid chain id {chain_id}")
        mine = [entry for entry in self._mempool if entry.sender == sender.lower()]
        if len(mine) >= MAX_PENDING_PER_SENDER:
            raise RpcError(-32000, "txpool is full for this sender")
        expected = self._tester.get_nonce(sender) + len(mine)
        if tx.nonce != expected:
            word = "low" if tx.nonce < expected else "high"
            raise RpcError(-32000, f"nonce too {word}: next nonce {expected}, tx nonce {tx.nonce}")
        max_fee = getattr(tx, "max_fee_per_gas", None) or getattr(tx, "gas_price", 0)
        cost = tx.gas * max_fee + tx.value
        if self._tester.get_balance(sender) < cost + sum(entry.cost for entry in mine):
            raise RpcError(-32000, "insufficient funds for gas * price + value")
        view = {"hash": tx_hash, "from": sender, "to": to_checksum_address(tx.to) if tx.to else None,
                "nonce": hex(tx.nonce), "value": hex(tx.value), "gas": hex(tx.gas),
                "input": "0x" + bytes(tx.data).hex(), "blockHash": None, "blockNumber": None,
                "transactionIndex": None}
        self._mempool.append(_Waiting(tx_hash, raw, sender.lower(), tx.nonce, cost, view))
        return tx_hash


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


def _is_hash_text(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 66 and value.startswith("0x") \
        and all(c in "0123456789abcdefABCDEF" for c in value[2:])


def _is_address_text(value: str) -> bool:
    return len(value) == 42 and value.startswith("0x") and all(c in "0123456789abcdefABCDEF" for c in value[2:])


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
