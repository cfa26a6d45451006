"""Fixed facts about the embedded development chain, shared by the chain, the facilitator, the paywall and the
demo so that all of them agree on one network and one token address without asking the chain.

Every key here is public and derived from a label: these accounts hold test money on a chain that exists only
inside an authgate process (or its ``authgate devchain`` JSON-RPC front). Never fund them anywhere else.
"""

from __future__ import annotations

import rlp
from eth_account import Account
from eth_utils.address import to_canonical_address, to_checksum_address
from eth_utils.crypto import keccak

#: eth-tester's py-evm chain hard-codes this chain id; CAIP-2 network of the embedded chain.
CHAIN_ID = 131277322940537
NETWORK = f"eip155:{CHAIN_ID}"

#: EIP-712 domain of our EIP-3009 token (contracts/TestUSDC.sol); the same name/version as USDC on Base Sepolia.
TOKEN_NAME = "USDC"
TOKEN_VERSION = "2"
TOKEN_DECIMALS = 6


def label_key(label: str) -> str:
    """A deterministic private key (hex) for a named development account."""
    return "0x" + keccak(text=f"authgate-local-chain:{label}").hex()


def label_address(label: str) -> str:
    return str(Account.from_key(label_key(label)).address)


def create_address(sender: str, nonce: int) -> str:
    """Address of the contract that ``sender``'s transaction number ``nonce`` creates (yellow paper, CREATE)."""
    return to_checksum_address(keccak(rlp.encode([to_canonical_address(sender), nonce]))[12:])


DEPLOYER_KEY = label_key("deployer")
DEPLOYER = label_address("deployer")
#: The token is the deployer's first transaction on a fresh chain, so its address is known in advance.
TOKEN_ADDRESS = create_address(DEPLOYER, 0)
FACILITATOR_KEY = label_key("facilitator")
FACILITATOR = label_address("facilitator")
