"""The CAIP-2 and price parsers raise only their typed errors (issue #9 item 4), which stay ``ValueError``s for
the callers written before them; and the inputs the old bare-``ValueError`` parsers let through by accident
(a trailing newline, non-ASCII digits, an int too long for ``str()``, a non-string) are refused with them."""

from __future__ import annotations

from typing import Any

import pytest

from authgate.x402 import errors, localchain, networks
from authgate.x402.price import AssetAmount, parse_money, parse_price, to_atomic


def test_typed_errors_are_x402_errors_and_value_errors() -> None:
    for cls in (errors.NetworkIdError, errors.PriceError, errors.X402WireError):
        assert issubclass(cls, errors.X402Error) and issubclass(cls, ValueError)
    assert not issubclass(errors.NetworkIdError, errors.PriceError)


@pytest.mark.parametrize("bad", ["solana", "eip155:", "EIP155:1", "eip155:1\n", "eip155:1 ", "", None, 8453,
                                 ["eip155:1"], {"eip155": 1}])
def test_caip2_parser_raises_network_id_error(bad: Any) -> None:
    with pytest.raises(errors.NetworkIdError):
        networks.parse_caip2(bad)
    with pytest.raises(errors.NetworkIdError):
        networks.normalize_network(bad)
    with pytest.raises(errors.NetworkIdError):
        networks.evm_chain_id(bad)
    assert networks.find_asset(bad, localchain.TOKEN_ADDRESS) is None


@pytest.mark.parametrize("bad", ["solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp", "eip155:0x1", "eip155:01",
                                 "eip155:" + "9" * 21])
def test_non_evm_network_raises_network_id_error(bad: str) -> None:
    with pytest.raises(errors.NetworkIdError, match="not an EVM network"):
        networks.evm_chain_id(bad)


def test_default_asset_raises_network_id_error() -> None:
    with pytest.raises(errors.NetworkIdError):
        networks.default_asset("eip155:999999")
    with pytest.raises(errors.NetworkIdError):
        networks.default_asset("eip155:8453", "EURC")
    with pytest.raises(errors.NetworkIdError):
        networks.default_asset("eip155:8453", 5)  # type: ignore[arg-type]
    assert networks.default_asset("base", "usdc").decimals == 6


@pytest.mark.parametrize("bad", ["1e-2", "$1E3", "-1", "$-0.5", "abc", "1.50USDC", "", float("nan"), float("inf"),
                                 -0.5, True, None, [1], b"1", "$0.01\n0", "$\u0663", "\u0661.5 USDC",
                                 "$\uff11", "\u00b2", pytest.param(10**5000, id="int-of-5001-digits")])
def test_bad_prices_raise_price_error(bad: Any) -> None:
    with pytest.raises(errors.PriceError):
        parse_price(bad, "eip155:8453")


def test_unknown_ticker_is_a_price_error_and_unknown_network_a_network_id_error() -> None:
    with pytest.raises(errors.PriceError, match="USDT"):
        parse_price("1 USDT", "eip155:8453")
    with pytest.raises(errors.NetworkIdError):
        parse_price("$1", "solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp")
    with pytest.raises(errors.NetworkIdError):
        parse_price("$1", "eip155:8453\n")


@pytest.mark.parametrize("bad", [{"amount": "0.5", "asset": "0xdef"}, {"amount": "\u00b2", "asset": "0xdef"},
                                 {"amount": "\u0663", "asset": "0xdef"}, {"amount": 7, "asset": "0xdef"},
                                 {"amount": "7"}, {"amount": "7", "asset": "0xdef", "extra": [1]},
                                 AssetAmount("7", "")])
def test_bad_explicit_amounts_raise_price_error(bad: Any) -> None:
    with pytest.raises(errors.PriceError):
        parse_price(bad, "eip155:1")


def test_digits_are_ascii_and_no_trailing_newline_gets_through() -> None:
    assert parse_money(" $1.5 usdc ") == ("1.5", "USDC")
    assert parse_price("$0.01", localchain.NETWORK).amount == "10000"
    for bad in ("1\n", "\u0663", "1.\u0663", "1e5", 1, None):
        with pytest.raises(errors.PriceError):
            to_atomic(bad, 6)  # type: ignore[arg-type]
    assert to_atomic("1.", 6) == "1000000"
