"""Spending periods in UTC: the counter key of the period an instant falls in."""

from __future__ import annotations

import time


def period_key(period: str, now: float) -> str:
    """``day`` → ``d:2026-12-03``; ``week`` → ``w:2026-W49`` (ISO); ``month`` → ``m:2026-12``; ``total``."""
    tm = time.gmtime(now)
    if period == "day":
        return time.strftime("d:%Y-%m-%d", tm)
    if period == "week":
        return time.strftime("w:%G-W%V", tm)
    if period == "month":
        return time.strftime("m:%Y-%m", tm)
    if period == "total":
        return "total"
    raise ValueError(f"unknown period {period!r}")
