"""x402 chain settings: defaults, validation, key references (never echoed), and build_chain."""

from __future__ import annotations

from pathlib import Path

import pytest

from authgate.config import ConfigError, Settings, load_settings
from authgate.x402 import localchain
from authgate.x402.chain import build_chain, resolve_key
from authgate.x402.chain.embedded import EmbeddedChain
from authgate.x402.chain.jsonrpc import JsonRpcChain

KEY = "0x" + "4f" * 32
JSONRPC = {
    "x402_chain": "jsonrpc",
    "x402_rpc_url": "http://127.0.0.1:8545",
    "x402_facilitator_key": KEY,
    "x402_token_address": localchain.TOKEN_ADDRESS,
    "x402_token_name": "USDC",
    "x402_token_version": "2",
    "x402_network": localchain.NETWORK,
}


def test_defaults_are_the_embedded_chain() -> None:
    settings = Settings().validate()
    assert settings.x402_chain == "embedded"
    assert (settings.x402_gas_limit, settings.x402_settle_timeout) == (500_000, 60)
    assert not hasattr(settings, "x402_receipt_timeout")  # one receipt timeout: x402_settle_timeout


async def test_build_chain_embedded() -> None:
    chain = build_chain(load_settings(env={}, x402_gas_limit=400_000))
    try:
        assert isinstance(chain, EmbeddedChain)
        assert chain.network == localchain.NETWORK
        assert await chain.token_domain(chain.token_address) == (localchain.TOKEN_NAME, localchain.TOKEN_VERSION)
    finally:
        await chain.aclose()


async def test_build_chain_jsonrpc_from_env_and_key_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACILITATOR_PK", KEY)
    env = {f"AUTHGATE_{k.upper()}": v for k, v in JSONRPC.items()}
    env["AUTHGATE_X402_FACILITATOR_KEY"] = "env:FACILITATOR_PK"
    settings = load_settings(env=env)
    chain = build_chain(settings)
    try:
        assert isinstance(chain, JsonRpcChain)
        assert chain.network == localchain.NETWORK and chain.token_name == "USDC"
        assert KEY[2:] not in repr(chain) and KEY[2:] not in repr(settings)
    finally:
        await chain.aclose()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"x402_chain": "solana"}, "x402_chain must be embedded or jsonrpc"),
        ({"x402_network": "eip155:84532"}, "x402_network of the embedded chain"),
        ({"x402_network": "base-sepolia"}, "CAIP-2"),
        ({"x402_rpc_url": "http://127.0.0.1:8545"}, "are for x402_chain = jsonrpc"),
        ({"x402_token_name": "USD Coin"}, "token is fixed"),
        ({"x402_gas_limit": 100}, "x402_gas_limit"),
        ({"x402_settle_timeout": 0}, "x402_settle_timeout"),
        ({**JSONRPC, "x402_facilitator_key": ""}, "needs x402_facilitator_key"),
        ({**JSONRPC, "x402_token_version": "", "x402_network": ""}, "needs x402_token_version, x402_network"),
        ({**JSONRPC, "x402_rpc_url": "http://node.example.com"}, "https unless it is on loopback"),
        ({**JSONRPC, "x402_rpc_url": "ftp://127.0.0.1"}, "absolute http(s) URL"),
        ({**JSONRPC, "x402_token_address": "0x1234"}, "x402_token_address"),
        ({**JSONRPC, "x402_facilitator_key": "0x" + "zz" * 32}, "x402_facilitator_key must be"),
    ],
)
def test_invalid_settings_are_refused(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as caught:
        load_settings(env={}, **overrides)
    assert KEY[2:] not in str(caught.value)


def test_jsonrpc_settings_validate() -> None:
    settings = load_settings(env={}, **JSONRPC)
    assert settings.x402_network == localchain.NETWORK
    assert load_settings(env={}, **{**JSONRPC, "x402_rpc_url": "https://sepolia.base.org"}).x402_rpc_url


def test_resolve_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_key(KEY.upper().replace("0X", "0x")) == KEY
    assert resolve_key(KEY[2:]) == KEY
    key_file = tmp_path / "facilitator.key"
    key_file.write_text(KEY + "\n")
    assert resolve_key(f"file:{key_file}") == KEY
    monkeypatch.setenv("PK_REF", KEY)
    assert resolve_key("env:PK_REF") == KEY
    bad_file = tmp_path / "bad.key"
    bad_file.write_text("0x" + "4f" * 31 + "\n")
    for reference in (f"file:{tmp_path / 'missing'}", "env:NOT_SET_ANYWHERE", f"file:{bad_file}", "0x1234"):
        with pytest.raises(ValueError) as caught:
            resolve_key(reference)
        assert "4f4f4f" not in str(caught.value)
