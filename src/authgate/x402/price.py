"""Prices → atomic token amounts, with the Python SDK's rules (``ExactEvmScheme.parse_price``, spec note §3.4).

``"$0.01"``, ``"0.01"``, ``0.01``, ``"1.50 USD"`` and ``"1.5 USDC"`` (ticker looked up among the network's
default assets) become the default asset's atomic units; an :class:`AssetAmount` (or a mapping with ``amount``
and ``asset``) passes through. Conversion pads or **truncates toward zero**, never rounds (``"$0.0000019"`` →
``"1"``), exactly as the SDK does, so our paywall and an SDK paywall quote the same integer. Scientific notation
and negative amounts are rejected.

Imports only the stdlib (and the network table).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from authgate.x402.networks import default_asset

_MONEY = re.compile(r"^\$?\s*(\d{1,30}(?:\.\d{1,30})?)(?:\s+([A-Za-z][A-Za-z0-9.]{0,15}))?$")
_DECIMAL = re.compile(r"^\d+(?:\.\d*)?$")


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
        raise ValueError("invalid money format")
    if isinstance(money, int | float):
        if not math.isfinite(money) or money < 0:
            raise ValueError(f"invalid money format: {money}")
        text = repr(money) if isinstance(money, float) else str(money)
        if "e" in text or "E" in text:
            text = _float_to_plain(money)
        return text, None
    match = _MONEY.match(money.strip())
    if not match:
        raise ValueError(f"invalid money format: {money[:40]!r}")
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
    if "e" in decimal_amount.lower():
        raise ValueError("use decimal notation, not scientific notation")
    if not _DECIMAL.match(decimal_amount):
        raise ValueError(f"invalid amount: {decimal_amount[:40]!r}")
    whole, _, frac = decimal_amount.partition(".")
    return (whole + (frac + "0" * decimals)[:decimals]).lstrip("0") or "0"


def parse_price(price: Price, network: str) -> AssetAmount:
    """The atomic amount, asset and EIP-712 ``extra`` of a route price on ``network``."""
    if isinstance(price, AssetAmount):
        if not price.asset:
            raise ValueError(f"asset address required for an explicit amount on {network}")
        return price
    if isinstance(price, Mapping):
        amount, asset = price.get("amount"), price.get("asset")
        if not isinstance(asset, str) or not asset:
            raise ValueError(f"asset address required for an explicit amount on {network}")
        if not isinstance(amount, str) or not amount.isdigit():
            raise ValueError("explicit amount must be a decimal integer string of atomic units")
        extra = price.get("extra") or {}
        if not isinstance(extra, Mapping):
            raise ValueError("extra must be a mapping")
        return AssetAmount(amount=amount, asset=asset, extra=dict(extra))
    decimal_amount, symbol = parse_money(price)
    info = default_asset(network, symbol)
    return AssetAmount(
        amount=to_atomic(decimal_amount, info.decimals),
        asset=info.asset,
        extra={"name": info.name, "version": info.version},
    )
