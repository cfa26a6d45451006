"""Load and soak, short (issue #9 item 6): ``benchmarks/soak.py --minutes 1 --quick`` — mixed traffic
(registrations, client_credentials tokens, protected calls through the gateway, x402 payments settled on a
devchain, Agent Auth signed requests) against ``authgate serve --workers 2`` on PostgreSQL, first at the peak,
then for a minute at half of it: no errors, no server process dead or with a traceback, and every server
process's RSS within the script's bound. The 10-minute run is the same command without ``--quick``
(docs/deployment.md). The figures land in ``.cache/soak/quick.json`` and in pytest's terminal summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PG_URL
from tests.scale.cluster import figure, require_postgres

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
FIGURES = ROOT / ".cache" / "soak" / "quick.json"
KINDS = {"register", "token", "protected", "payment", "signed"}


def test_one_minute_at_half_the_peak_has_no_errors_and_flat_memory() -> None:
    require_postgres()
    FIGURES.unlink(missing_ok=True)
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "soak.py"), "--minutes", "1", "--quick",
                          "--postgres", PG_URL, "--json", str(FIGURES)], cwd=ROOT, capture_output=True, text=True,
                         timeout=900)
    output = run.stdout + run.stderr
    FIGURES.with_suffix(".txt").write_text(output)
    assert run.returncode == 0, output[-6000:]
    report = json.loads(FIGURES.read_text())
    assert report["failures"] == []
    for phase in ("peak", "soak"):
        assert set(report[phase]) == KINDS
        for kind, row in report[phase].items():
            assert row["errors"] == 0 and row["ok"] > 0, (phase, kind, row)
    bounded = [m for m in report["memory"] if m["bounded"]]
    assert len(bounded) >= 5  # serve, its two workers, the facilitator, the gateway
    assert all(m["growth_mib"] <= report["max_rss_growth_mib"] for m in bounded), bounded
    figure(f"soak ({report['minutes']:g} min at half the peak, {report['requests_in_soak']} requests, 0 errors; "
           f"{report['hardware']}):")
    for kind in sorted(KINDS):
        peak, soak = report["peak"][kind], report["soak"][kind]
        figure(f"  {kind:<10} peak {peak['rate']:>7.1f}/s   soak {soak['rate']:>7.1f}/s (target "
               f"{soak['target_rate']:.1f})   p50 {soak['p50_ms']:>7.1f} ms   p99 {soak['p99_ms']:>7.1f} ms")
    for m in report["memory"]:
        figure(f"  RSS {m['process']:<28} {m['start_mib']:>7.1f} -> {m['end_mib']:>7.1f} MiB "
               f"({m['growth_mib']:+.1f}){'' if m['bounded'] else ' (not bounded)'}")
