"""CI's short run of every issue-9 benchmark (``benchmarks/run_all.py --quick``): each script runs against its
peer and prints its figures. Nothing here asserts a speed (figures on a shared CI machine are noise); it asserts
that every benchmark runs without an error and measures every ratio it reports. The output is kept in
``.cache/benchmarks-quick.txt`` and its summary printed in pytest's report.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.scale.cluster import FIGURES, fresh_database

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.postgres
def test_every_benchmark_runs_and_reports_its_ratios(record_property: pytest.RecordProperty) -> None:
    with fresh_database() as database:
        done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run_all.py"), "--quick", "--postgres",
                               database], capture_output=True, text=True, timeout=1500, cwd=ROOT)
    out = done.stdout + done.stderr
    (ROOT / ".cache").mkdir(exist_ok=True)
    (ROOT / ".cache" / "benchmarks-quick.txt").write_text(out)
    summary = out.split("=== summary", 1)[-1]
    record_property("benchmark_summary", summary)
    FIGURES.extend(["benchmarks/run_all.py --quick (ratios vs targets; quick counts on a shared machine):",
                    *summary.splitlines()[1:]])
    assert done.returncode == 0, out[-6000:]
    rows = [line for line in summary.splitlines()[1:] if line.strip()]
    assert len(rows) == 12 and not any("NOT MEASURED" in r for r in rows), summary
