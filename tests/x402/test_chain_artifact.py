"""The committed TestUSDC artifact is the compiled contracts/TestUSDC.sol: its recorded source hash matches, and
(when solc-js is available, or required by AUTHGATE_REQUIRE_SOLC=1) recompiling gives the same bytecode."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from authgate.x402.chain import contract

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "compile-contracts.sh"
SOLC_CACHE = ROOT / ".cache" / "solc" / "node_modules" / "solc" / "package.json"


@pytest.mark.parametrize("name", ["TestUSDC", "TestWallet"])
def test_artifact_matches_the_source_hash(name: str) -> None:
    art = contract.artifact(name)
    source = ROOT / "contracts" / f"{name}.sol"
    assert art["sourceSha256"] == hashlib.sha256(source.read_bytes()).hexdigest(), (
        f"contracts/{name}.sol changed: run scripts/compile-contracts.sh and commit the artifact")
    assert art["compiler"]["name"] == "solc-js" and art["compiler"]["version"].startswith("0.8.30+")
    assert art["bytecode"].startswith("0x") and len(art["bytecode"]) > 1000


def test_abi_has_the_eip3009_surface() -> None:
    abi = contract.artifact()["abi"]
    functions = {(e["name"], tuple(i["type"] for i in e["inputs"])) for e in abi if e["type"] == "function"}
    head = ("address", "address", "uint256", "uint256", "uint256", "bytes32")
    for name in ("transferWithAuthorization", "receiveWithAuthorization"):
        assert (name, (*head, "uint8", "bytes32", "bytes32")) in functions
        assert (name, (*head, "bytes")) in functions
    assert ("cancelAuthorization", ("address", "bytes32", "uint8", "bytes32", "bytes32")) in functions
    assert ("authorizationState", ("address", "bytes32")) in functions
    for view in ("name", "version", "decimals", "DOMAIN_SEPARATOR", "totalSupply"):
        assert (view, ()) in functions
    assert ("mint", ("address", "uint256")) in functions
    events = {(e["name"], tuple((i["type"], i["indexed"]) for i in e["inputs"])) for e in abi if e["type"] == "event"}
    assert ("AuthorizationUsed", (("address", True), ("bytes32", True))) in events
    assert ("AuthorizationCanceled", (("address", True), ("bytes32", True))) in events
    assert ("Transfer", (("address", True), ("address", True), ("uint256", False))) in events
    # The selectors the chains encode by hand are the ABI's.
    from eth_utils.crypto import keccak

    vrs = "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)"
    assert keccak(text=vrs)[:4] == contract.TRANSFER_WITH_AUTH_VRS


def test_recompiling_gives_the_committed_bytecode() -> None:
    required = os.environ.get("AUTHGATE_REQUIRE_SOLC") == "1"
    if not required and not SOLC_CACHE.exists():
        pytest.skip("solc-js not installed in .cache/solc (run scripts/compile-contracts.sh once, or set "
                    "AUTHGATE_REQUIRE_SOLC=1 to install and require it)")
    done = subprocess.run(["bash", str(SCRIPT), "--print"], capture_output=True, timeout=300, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    fresh = json.loads(done.stdout)
    assert sorted(fresh) == ["TestUSDC", "TestWallet"]
    for name, compiled in fresh.items():
        committed = contract.artifact(name)
        for key in ("sourceSha256", "compiler", "settings", "abi", "bytecode", "deployedBytecode"):
            assert compiled[key] == committed[key], (name, key)
