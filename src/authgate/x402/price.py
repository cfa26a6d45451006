"""Prices → atomic token amounts, with the Python SDK's rules (``ExactEvmScheme.parse_price``, spec note §3.4).

``"$0.01"``, ``"0.01"``, ``0.01``, ``"1.50 USD"`` and ``"1.5 USDC"`` (ticker looked up among the network's
default assets) become the default asset's atomic units; an :class:`AssetAmount` (or a mapping with ``amount``
and ``asset``) passes through. Conversion pads or **truncates toward zero**, never rounds (``"$0.0000019"`` →
``"1"``), exactly as the SDK does, so our paywall and an SDK paywall quote the same integer. Scientific notation
and negative amounts are rejected, and so are digits other than ASCII ``0-9`` (``\\d`` would let ``"$٣"`` through
and put non-ASCII digits into an ``amount`` on the wire).

Bad input raises only :class:`~authgate.x402.errors.PriceError` (a ``ValueError``), or
:class:`~authgate.x402.errors.NetworkIdError` when the network is not one we have a default asset for.

Imports only the stdlib (and the network table).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from authgate.x402.errors import NetworkIdError, PriceError
from authgate.x402.networks import default_asset

# Matched with ``fullmatch`` (``$`` alone accepts a trailing newline) and re.ASCII (``\d`` alone any Unicode digit).
_MONEY = re.compile(r"\$?\s*(\d{1,30}(?:\.\d{1,30})?)(?:\s+([A-Za-z][A-Za-z0-9.]{0,15}))?", re.ASCII)
_DECIMAL = re.compile(r"\d+(?:\.\d*)?", re.ASCII)
_ATOMIC = re.compile(r"\d+", re.ASCII)
#: Larger whole numbers are no price (and ``str()`` of an int past 4,300 digits raises a bare ValueError).
_MAX_INT_BITS = 256


@dataclass(frozen=True)
class AssetAmount:
    """An amount in atomic units of one asset, plus the ``extra`` (EIP-712 domain) an offer needs."""

    amount: str
    asset: str
    extra: dict[str, Any] = field(default_factory=dict)


Price = str | int | float | AssetAmount | Mapping[str, Any]


def parse_money(money: str | int | float) -> tuple[str, str | None]:
    """``(decimal string, ticker or None)``; ``"USD"`` and ``"$"`` mean the default stablecoin."""
    if isinstance(money, bool):
        raise PriceError("invalid money format")
    if isinstance(money, int) and money.bit_length() > _MAX_INT_BITS:
        raise PriceError("invalid money format: amount too large")
    if isinstance(money, int | float):
        if not math.isfinite(money) or money < 0:
            raise PriceError(f"invalid money format: {money}")
        text = repr(money) if isinstance(money, float) else str(money)
        if "e" in text or "E" in text:
            text = _float_to_plain(money)
        return text, None
    if not isinstance(money, str):
        raise PriceError(f"a price is a string or a number, not {type(money).__name__}")
    match = _MONEY.fullmatch(money.strip())
    if not match:
        raise PriceError(f"invalid money format: {money[:40]!r}")
    symbol = match.group(2)
    if not symbol or symbol.upper() == "USD":
        return match.group(1), None
    return match.group(1), symbol.upper()


def _float_to_plain(value: float) -> str:
    """Plain decimal digits of a float that ``repr`` writes in exponent form (``1e-07`` → ``0.0000001``)."""
    significand, _, exponent = repr(value).lower().partition("e")
    exp = int(exponent)
    whole, _, frac = significand.partition(".")
    digits = whole + frac
    point = len(whole) + exp
    if point <= 0:
        return "0." + "0" * (-point) + digits
    if point >= len(digits):
        return digits + "0" * (point - len(digits))
    return digits[:point] + "." + digits[point:]


def to_atomic(decimal_amount: str, decimals: int) -> str:
    """Decimal string → integer string with ``decimals`` places, padding or truncating toward zero."""
    if not isinstance(decimal_amount, str):
        raise PriceError(f"an amount is a decimal string, not {type(decimal_amount).__name__}")
    if "e" in decimal_amount.lower():
        raise PriceError("use decimal notation, not scientific notation")
    if not _DECIMAL.fullmatch(decimal_amount):
        raise PriceError(f"invalid amount: {decimal_amount[:40]!r}")
    whole, _, frac = decimal_amount.partition(".")
    return (whole + (frac + "0" * decimals)[:decimals]).lstrip("0") or "0"


def parse_price(price: Price, network: str) -> AssetAmount:
    """The atomic amount, asset and EIP-712 ``extra`` of a route price on ``network``.

    :class:`PriceError` for a bad price (including a ticker ``network`` has no asset for),
    :class:`NetworkIdError` for a network with no default asset when the price needs one."""
    if isinstance(price, AssetAmount):
        if not price.asset:
            raise PriceError(f"asset address required for an explicit amount on {str(network)[:64]}")
        return price
    if isinstance(price, Mapping):
        amount, asset = price.get("amount"), price.get("asset")
        if not isinstance(asset, str) or not asset:
            raise PriceError(f"asset address required for an explicit amount on {str(network)[:64]}")
        if not isinstance(amount, str) or not _ATOMIC.fullmatch(amount):
            raise PriceError("explicit amount must be a decimal integer string of atomic units")
        extra = price.get("extra") or {}
        if not isinstance(extra, Mapping):
            raise PriceError("extra must be a mapping")
        return AssetAmount(amount=amount, asset=asset, extra=dict(extra))
    decimal_amount, symbol = parse_money(price)
    info = default_asset(network)  # NetworkIdError: no asset at all on this network
    if symbol is not None and info.symbol.upper() != symbol:
        try:
            info = default_asset(network, symbol)
        except NetworkIdError:
            raise PriceError(f"no {symbol[:16]} asset configured for network {network[:64]}") from None
    return AssetAmount(
        amount=to_atomic(decimal_amount, info.decimals),
        asset=info.asset,
        extra={"name": info.name, "version": info.version},
    )
