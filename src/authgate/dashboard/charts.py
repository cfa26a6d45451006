"""Charts as server-rendered inline SVG: geometry computed here, markup in the template (autoescaped), no
script and no external asset, so the pages keep the strict Content-Security-Policy (``default-src 'none'``)."""

from __future__ import annotations

import time
from dataclasses import dataclass

WIDTH = 600
HEIGHT = 140
PAD_BOTTOM = 18
PAD_TOP = 14

#: Window name -> (bucket seconds, bucket count, label format).
WINDOWS = {"hours": (3600, 24, "%H:00"), "days": (86400, 30, "%m-%d")}


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    value: int
    label: str


@dataclass(frozen=True)
class Chart:
    title: str
    total: int
    peak: int
    bars: list[Bar]
    ticks: list[tuple[float, str]]
    width: int = WIDTH
    height: int = HEIGHT


def bar_chart(title: str, starts: list[int], values: list[int], label_format: str) -> Chart:
    """Bars scaled to the largest value (at least 1, so an empty window draws flat, not divided by zero)."""
    n = max(1, len(values))
    peak = max(values, default=0)
    scale = (HEIGHT - PAD_BOTTOM - PAD_TOP) / max(1, peak)
    slot = WIDTH / n
    bars = []
    for i, (start, value) in enumerate(zip(starts, values, strict=True)):
        h = value * scale
        label = time.strftime(label_format, time.gmtime(start))
        bars.append(Bar(round(i * slot + 1, 1), round(HEIGHT - PAD_BOTTOM - h, 1), round(max(1.0, slot - 2), 1),
                        round(h, 1), value, label))
    every = max(1, n // 6)
    ticks = [(round(i * slot + slot / 2, 1), bars[i].label) for i in range(0, len(bars), every)]
    return Chart(title, sum(values), peak, bars, ticks)
