"""CAIP-2 network identifiers and the default stablecoin of each EVM network we know (spec note §3.3).

The table mirrors the Python SDK's ``default_assets.py`` for the networks authgate cares about (Base, Base
Sepolia, Ethereum) plus the embedded development chain (``localchain``); the EIP-712 ``name``/``version`` of each
token is what a payer signs, so a wrong entry here means every signature fails. v1 legacy names map to chain ids
so that an agent can read a v1 402 body.

Every parser here raises only :class:`~authgate.x402.errors.NetworkIdError` (a ``ValueError``) on bad input,
whatever the input's type.

Imports only the stdlib and :mod:`authgate.x402.localchain` constants (eth-account/eth-utils).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from authgate.x402 import localchain
from authgate.x402.errors import NetworkIdError

#: Matched with ``fullmatch``: ``$`` alone would let a trailing newline through (``"eip155:1\n"``).
_CAIP2 = re.compile(r"([-a-z0-9]{3,8}):([-_a-zA-Z0-9]{1,32})", re.ASCII)


@dataclass(frozen=True)
class AssetInfo:
    """A token on one network: its address, EIP-712 domain and decimals."""

    asset: str
    name: str
    version: str
    decimals: int
    symbol: str


_USDC6 = 6
DEFAULT_ASSETS: dict[str, tuple[AssetInfo, ...]] = {
    "eip155:8453": (AssetInfo("0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", "USD Coin", "2", _USDC6, "USDC"),),
    "eip155:84532": (AssetInfo("0x036CbD53842c5426634e7929541eC2318f3dCF7e", "USDC", "2", _USDC6, "USDC"),),
    "eip155:1": (AssetInfo("0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48", "USD Coin", "2", _USDC6, "USDC"),),
    localchain.NETWORK: (
        AssetInfo(
            localchain.TOKEN_ADDRESS,
            localchain.TOKEN_NAME,
            localchain.TOKEN_VERSION,
            localchain.TOKEN_DECIMALS,
            "USDC",
        ),
    ),
}

#: v1 legacy network names → EVM chain ids (x402 2.25.0 ``V1_NETWORK_CHAIN_IDS``).
V1_NETWORK_CHAIN_IDS: dict[str, int] = {
    "base": 8453,
    "base-sepolia": 84532,
    "ethereum": 1,
    "polygon": 137,
    "polygon-amoy": 80002,
    "avalanche": 43114,
    "avalanche-fuji": 43113,
    "abstract": 2741,
    "abstract-testnet": 11124,
    "iotex": 4689,
    "sei": 1329,
    "sei-testnet": 1328,
    "peaq": 3338,
    "story": 1513,
    "educhain": 656476,
    "skale-base-sepolia": 1444673419,
    "megaeth": 4326,
    "monad": 143,
    "monad-testnet": 10143,
    "stable": 988,
    "stable-testnet": 2201,
    "celo": 42220,
    "flare": 14,
}


def _text(network: object) -> str:
    if not isinstance(network, str):
        raise NetworkIdError(f"a network id is a string, not {type(network).__name__}")
    return network


def parse_caip2(network: str) -> tuple[str, str]:
    """Split ``namespace:reference``; :class:`NetworkIdError` if the string is not CAIP-2."""
    match = _CAIP2.fullmatch(_text(network))
    if not match:
        raise NetworkIdError(f"not a CAIP-2 network id: {network[:64]!r}")
    return match.group(1), match.group(2)


def evm_chain_id(network: str) -> int:
    """Chain id of an ``eip155:<N>`` network (or a v1 legacy name); :class:`NetworkIdError` otherwise."""
    if _text(network) in V1_NETWORK_CHAIN_IDS:
        return V1_NETWORK_CHAIN_IDS[network]
    namespace, reference = parse_caip2(network)
    if namespace != "eip155" or not reference.isdigit() or len(reference) > 20 or reference.startswith("0"):
        raise NetworkIdError(f"not an EVM network: {network[:64]!r}")
    return int(reference)


def normalize_network(network: str) -> str:
    """The CAIP-2 id of a network given as CAIP-2 or as a v1 legacy name (``base-sepolia`` → ``eip155:84532``);
    :class:`NetworkIdError` for anything else."""
    if _text(network) in V1_NETWORK_CHAIN_IDS:
        return f"eip155:{V1_NETWORK_CHAIN_IDS[network]}"
    parse_caip2(network)
    return network


def v1_name(network: str) -> str | None:
    """The v1 legacy name of a CAIP-2 EVM network, if it has one."""
    for name, chain_id in V1_NETWORK_CHAIN_IDS.items():
        if network == f"eip155:{chain_id}":
            return name
    return None


def default_asset(network: str, symbol: str | None = None) -> AssetInfo:
    """The network's default stablecoin (or the one with ``symbol``); :class:`NetworkIdError` if none is
    configured."""
    assets = DEFAULT_ASSETS.get(normalize_network(network))
    if not assets:
        raise NetworkIdError(f"no default asset configured for network {network[:64]}")
    if not symbol:
        return assets[0]
    if not isinstance(symbol, str):
        raise NetworkIdError(f"an asset symbol is a string, not {type(symbol).__name__}")
    for entry in assets:
        if entry.symbol.upper() == symbol.upper():
            return entry
    raise NetworkIdError(f"no {symbol[:16]} default asset configured for network {network[:64]}")


def find_asset(network: str, asset: str) -> AssetInfo | None:
    """The known token at ``asset`` (case-insensitive address) on ``network``, or None."""
    try:
        key = normalize_network(network)
    except NetworkIdError:
        return None
    if not isinstance(asset, str):
        return None
    for entry in DEFAULT_ASSETS.get(key, ()):
        if entry.asset.lower() == asset.lower():
            return entry
    return None
