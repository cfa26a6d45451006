"""The :class:`~authgate.x402.chain.base.Chain` interface implemented once, over any JSON-RPC transport.

The embedded chain (an in-process node reached through a worker thread) and the JSON-RPC chain (a remote node
reached through web3's HTTP provider) differ only in how a request travels; everything else, calldata, revert
parsing, the facilitator's nonces, fees, receipts and log searches, lives here and is tested on both.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.address import is_address, to_checksum_address
from eth_utils.crypto import keccak

from authgate.x402.chain import contract
from authgate.x402.chain.base import ChainError, ChainUnavailable, Receipt, TransferAuthorization

log = logging.getLogger(__name__)


class NodeError(Exception):
    """The node answered a request with a JSON-RPC error object."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


class Transport(Protocol):
    async def __call__(self, method: str, params: list[Any]) -> Any:
        """The ``result`` of one JSON-RPC call (wire format); :class:`NodeError` for an error object,
        :class:`ChainUnavailable` when there is no usable answer."""
        ...


#: Signing attempts per submission when another process sharing the key took the nonce first.
_SEND_ATTEMPTS = 5
_NONCE_CLASHES = ("nonce too low", "nonce too high", "replacement transaction")
#: Blocks searched per ``eth_getLogs`` request when reconciling (public nodes cap the range, often at 10k).
LOG_WINDOW = 5_000


def revert_text(error: NodeError) -> str | None:
    """The revert reason carried by a node error, "" for a revert without one, None if it is no revert."""
    data = error.data
    if isinstance(data, dict):  # some nodes nest it: {"data": {"data": "0x..."}} or {"message": ...}
        data = data.get("data")
    if isinstance(data, str) and data.startswith("0x"):
        try:
            reason = contract.revert_reason(bytes.fromhex(data[2:]))
        except ValueError:
            reason = None
        if reason is not None:
            return reason
    message = error.message or ""
    if error.code == 3 or "revert" in message.lower():
        lowered = message.lower()
        for prefix in ("execution reverted: ", "execution reverted:", "execution reverted", "reverted: "):
            if lowered.startswith(prefix):
                return message[len(prefix) :].strip()
        return message if error.code != 3 or "revert" not in lowered else ""
    return None


def _address(value: str, what: str) -> str:
    if not isinstance(value, str) or not is_address(value):
        raise ValueError(f"{what} is not an address")
    return to_checksum_address(value)


def _hex_bytes(value: Any) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise ChainUnavailable("node returned malformed data")
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        raise ChainUnavailable("node returned malformed data") from None


def _quantity(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.startswith("0x"):
        try:
            return int(value, 16)
        except ValueError:
            pass
    raise ChainUnavailable("node returned a malformed number")


class RpcChain:
    """A chain reached through ``transport``; the facilitator signs with ``facilitator_key``."""

    def __init__(
        self,
        transport: Transport,
        *,
        chain_id: int,
        facilitator_key: str,
        gas_limit: int = 500_000,
        poll_interval: float = 0.5,
        log_lookback_blocks: int = 200_000,
    ) -> None:
        self._rpc = transport
        self.chain_id = chain_id
        self.network = f"eip155:{chain_id}"
        self._account: LocalAccount = Account.from_key(facilitator_key)
        self.facilitator_address = str(self._account.address)
        self.gas_limit = gas_limit
        self.poll_interval = poll_interval
        self.log_lookback_blocks = log_lookback_blocks
        # One lock per process around nonce use: concurrent settlements get consecutive nonces. Across processes
        # the facilitator's database reservation keeps one authorization from being submitted twice; distinct
        # authorizations from two processes sharing one key can still collide, and "nonce too low" is retried.
        self._nonce_lock = asyncio.Lock()
        self._next_nonce: int | None = None

    def __repr__(self) -> str:  # never show the key
        return f"{type(self).__name__}(network={self.network!r}, facilitator={self.facilitator_address!r})"

    # -- reads ---------------------------------------------------------------------------------------------

    async def _call(self, to: str, data: bytes, *, sender: str | None = None) -> bytes:
        tx = {"from": sender or self.facilitator_address, "to": to, "data": "0x" + data.hex()}
        return _hex_bytes(await self._rpc("eth_call", [tx, "latest"]))

    async def _view(self, to: str, data: bytes) -> bytes:
        try:
            return await self._call(to, data)
        except NodeError as exc:
            reason = revert_text(exc)
            if reason is None:
                raise ChainUnavailable(f"eth_call failed: {exc.message}"[:300]) from None
            raise ChainError(reason) from None

    async def code_at(self, address: str) -> bytes:
        try:
            return _hex_bytes(await self._rpc("eth_getCode", [_address(address, "address"), "latest"]))
        except NodeError as exc:
            raise ChainUnavailable(f"eth_getCode failed: {exc.message}"[:300]) from None

    async def simulate_transfer(self, auth: TransferAuthorization) -> str | None:
        token = _address(auth.token, "token")
        try:
            await self._call(token, contract.transfer_with_authorization(auth))
        except NodeError as exc:
            reason = revert_text(exc)
            if reason is None:
                raise ChainUnavailable(f"eth_call failed: {exc.message}"[:300]) from None
            return reason
        return None

    async def authorization_used(self, token: str, authorizer: str, nonce: bytes) -> bool:
        data = contract.authorization_state(_address(authorizer, "authorizer"), nonce)
        return bool(_decode(contract.decode_bool, await self._view(_address(token, "token"), data)))

    async def balance_of(self, token: str, owner: str) -> int:
        data = contract.balance_of(_address(owner, "owner"))
        return int(_decode(contract.decode_uint, await self._view(_address(token, "token"), data)))

    async def token_domain(self, token: str) -> tuple[str, str]:
        token = _address(token, "token")
        name = _decode(contract.decode_string, await self._view(token, contract.NAME))
        version = _decode(contract.decode_string, await self._view(token, contract.VERSION))
        return name, version

    async def block_number(self) -> int:
        return _quantity(await self._request("eth_blockNumber", []))

    async def _request(self, method: str, params: list[Any]) -> Any:
        try:
            return await self._rpc(method, params)
        except NodeError as exc:
            raise ChainUnavailable(f"{method} failed: {exc.message}"[:300]) from None

    # -- writes ----------------------------------------------------------------------------------------------

    async def submit_transfer(self, auth: TransferAuthorization) -> str:
        """Simulate first (a revert raises :class:`ChainError` with its text and costs no gas), then sign and
        broadcast with the next facilitator nonce."""
        reason = await self.simulate_transfer(auth)
        if reason is not None:
            raise ChainError(reason)
        return await self.send_transaction(_address(auth.token, "token"), contract.transfer_with_authorization(auth))

    async def send_transaction(self, to: str, data: bytes, *, value: int = 0) -> str:
        """Sign ``data`` to ``to`` with the facilitator key and broadcast; the 0x tx hash."""
        max_fee, priority = await self._fees()
        async with self._nonce_lock:
            for attempt in range(_SEND_ATTEMPTS):
                if self._next_nonce is None:
                    pending = await self._request("eth_getTransactionCount", [self.facilitator_address, "pending"])
                    self._next_nonce = _quantity(pending)
                nonce = self._next_nonce
                tx: dict[str, Any] = {
                    "type": 2,
                    "chainId": self.chain_id,
                    "nonce": nonce,
                    "to": to,
                    "data": data,
                    "value": value,
                    "gas": self.gas_limit,
                    "maxFeePerGas": max_fee,
                    "maxPriorityFeePerGas": priority,
                }
                raw = bytes(self._account.sign_transaction(tx).raw_transaction)
                tx_hash = "0x" + keccak(raw).hex()
                try:
                    await self._rpc("eth_sendRawTransaction", ["0x" + raw.hex()])
                except ChainUnavailable as exc:
                    self._next_nonce = None  # whether it went out is unknown: ask the node next time
                    raise ChainUnavailable(str(exc), tx_hash=tx_hash) from None
                except NodeError as exc:
                    lowered = exc.message.lower()
                    if "already known" in lowered or "already imported" in lowered:
                        self._next_nonce = nonce + 1
                        return tx_hash
                    self._next_nonce = None
                    clash = any(text in lowered for text in _NONCE_CLASHES)
                    if clash and attempt < _SEND_ATTEMPTS - 1:
                        log.info("facilitator nonce %s was taken (%s); signing again", nonce, exc.message[:80])
                        continue  # another process used this nonce (or ours was stale): refetch, sign again
                    raise ChainError(revert_text(exc) or exc.message[:300]) from None
                self._next_nonce = nonce + 1
                return tx_hash
        raise ChainError("could not find a free nonce")  # pragma: no cover - the loop returns or raises

    async def _fees(self) -> tuple[int, int]:
        """EIP-1559 fees: tip from the node, cap at twice the latest base fee plus the tip."""
        try:
            priority = _quantity(await self._rpc("eth_maxPriorityFeePerGas", []))
        except NodeError:
            priority = 10**9
        block = await self._request("eth_getBlockByNumber", ["latest", False])
        base = _quantity(block.get("baseFeePerGas", "0x0")) if isinstance(block, dict) else 0
        return 2 * base + priority, priority

    async def wait_receipt(
        self,
        tx_hash: str,
        timeout: float,  # noqa: ASYNC109 (part of the contract: None on timeout)
        expect: TransferAuthorization | None = None,
    ) -> Receipt | None:
        deadline = asyncio.get_running_loop().time() + max(0.0, timeout)
        while True:
            try:
                raw = await self._rpc("eth_getTransactionReceipt", [tx_hash])
            except (NodeError, ChainUnavailable) as exc:
                log.info("receipt of %s not readable yet: %s", tx_hash, exc)
                raw = None
            if isinstance(raw, dict) and raw.get("blockNumber"):
                return await self._receipt(tx_hash, raw, expect)
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return None
            await asyncio.sleep(min(self.poll_interval, remaining))

    async def _receipt(self, tx_hash: str, raw: dict[str, Any], expect: TransferAuthorization | None) -> Receipt:
        status = _quantity(raw.get("status", "0x0"))
        token = raw.get("to")
        if expect is not None:
            wanted: contract.TransferCall | None = contract.TransferCall(
                from_=expect.from_, to=expect.to, value=expect.value, nonce=expect.nonce
            )
            token = expect.token
        else:
            tx = await self._request("eth_getTransactionByHash", [tx_hash])
            data = tx.get("input") or tx.get("data") if isinstance(tx, dict) else None
            wanted = contract.decode_transfer_call(_hex_bytes(data)) if isinstance(data, str) else None
        logged = status == 1 and wanted is not None and isinstance(token, str) and _has_transfer_log(raw, token, wanted)
        return Receipt(tx_hash=tx_hash, status=status, block_number=_quantity(raw["blockNumber"]),
                       transfer_logged=logged)

    async def find_authorization_tx(self, token: str, authorizer: str, nonce: bytes) -> str | None:
        """Checks ``authorizationState`` first (one call), then searches ``AuthorizationUsed`` logs backwards in
        windows of :data:`LOG_WINDOW` blocks, at most ``log_lookback_blocks`` deep."""
        token = _address(token, "token")
        authorizer = _address(authorizer, "authorizer")
        if not await self.authorization_used(token, authorizer, nonce):
            return None
        topics = ["0x" + contract.AUTHORIZATION_USED_TOPIC.hex(), "0x" + contract.address_topic(authorizer).hex(),
                  "0x" + nonce.hex()]
        latest = await self.block_number()
        floor = max(0, latest - self.log_lookback_blocks)
        high = latest
        while high >= floor:
            low = max(floor, high - LOG_WINDOW + 1)
            entries = await self._request(
                "eth_getLogs", [{"address": token, "fromBlock": hex(low), "toBlock": hex(high), "topics": topics}]
            )
            for entry in entries if isinstance(entries, list) else []:
                tx_hash = entry.get("transactionHash") if isinstance(entry, dict) else None
                if isinstance(tx_hash, str) and not entry.get("removed"):
                    return tx_hash
            high = low - 1
        return None  # used or canceled, but not by a transfer we can see (canceled, or older than the lookback)

    async def aclose(self) -> None:
        return None


def _decode(decoder: Callable[[bytes], Any], data: bytes) -> Any:
    try:
        return decoder(data)
    except Exception:  # eth-abi raises several types for short or garbled data
        raise ChainError("the contract returned data that does not decode") from None


def _has_transfer_log(raw: dict[str, Any], token: str, wanted: contract.TransferCall) -> bool:
    expected_topics = [
        contract.TRANSFER_TOPIC,
        contract.address_topic(_address(wanted.from_, "from")),
        contract.address_topic(_address(wanted.to, "to")),
    ]
    for entry in raw.get("logs") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("address"), str):
            continue
        if entry["address"].lower() != token.lower():
            continue
        try:
            topics = [bytes.fromhex(t[2:]) for t in entry.get("topics", [])]
            value = int(entry.get("data", "0x"), 16)
        except (ValueError, TypeError):
            continue
        if topics == expected_topics and value == wanted.value:
            return True
    return False

