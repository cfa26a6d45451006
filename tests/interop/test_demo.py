"""``authgate demo`` is the main job: it must succeed end to end and say what happened."""

from __future__ import annotations

import pytest

from authgate.demo.run import run_demo

pytestmark = pytest.mark.interop


async def test_demo_succeeds_and_reports_each_step(tmp_path: object) -> None:
    lines: list[str] = []
    assert await run_demo(lines.append), "\n".join(lines)
    text = "\n".join(lines)
    assert "✗" not in text
    assert "POST" in text and "/register" in text and "→ 201" in text
    assert "auto-approved" in text
    assert "called tool whoami → 'dev-user via client" in text
    assert "AUTO-DECIDED BY THE DEMO" in text and "acting for alice" in text
    assert text.rstrip().endswith("demo succeeded")
