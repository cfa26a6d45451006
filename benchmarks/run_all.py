"""Every benchmark of issues 3, 6, 7 and 9 in one command: each script runs in turn (same machine, its peer in
the same run) and its figures and ratios are printed, then one summary table of the ratios against their targets.

Run: ``.venv/bin/python benchmarks/run_all.py [--quick] [--postgres URL]``. ``--quick`` is the CI smoke run
(small counts: it proves every benchmark runs and prints its figures; the figures themselves are noisy).
Without ``--postgres`` the PostgreSQL rows (1 vs 2 processes) are skipped.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: (title, script and arguments, quick arguments, [(label, pattern of the ratio, target, higher is better)])
Bench = tuple[str, list[str], list[str], list[tuple[str, str, float, bool]]]


def benches(postgres: str | None) -> list[Bench]:
    found: list[Bench] = [
        ("AS vs node oidc-provider (1 process each, SQLite)", ["as_throughput.py"], ["--quick"],
         [("tokens/s", r"tokens/s\s+([\d.]+)x", 1.5, True),
          ("registrations/s", r"registrations/s\s+([\d.]+)x", 1.5, True)]),
        ("protected route vs unprotected", ["protected_route.py"], ["--quick"],
         [("one token", r"protected, one token\s+([\d.]+)x", 0.8, True),
          ("fresh token each request", r"protected, a fresh token per request\s+([\d.]+)x", 0.8,
           True)]),
        ("gateway vs direct to the upstream (p50 latency)", ["gateway_overhead.py"], ["100", "2"],
         [("public route", r"gateway /public\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+([\d.]+)x", 1.5, False),
          ("OAuth route (ES256 token)", r"gateway /oauth\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+([\d.]+)x", 1.5, False)]),
        ("Agent Auth signed-request verify vs aauth", ["httpsig_verify.py"], ["--quick"],
         [("full verify vs aauth", r"full / aauth RequestVerifier throughput: ([\d.]+)x", 2.0, True),
          ("cost vs raw signature", r"signature cost / raw verify cost: ([\d.]+)x", 1.5, False)]),
        ("x402 /verify vs the official SDK facilitator", ["x402_verify.py"], ["--quick"],
         [("live EVM", r"live EVM:[\s\S]*?ratio authgate / SDK: ([\d.]+)x", 3.0, True),
          ("own work (chain replayed)", r"replayed chain answers:[\s\S]*?ratio authgate / SDK: ([\d.]+)x",
           3.0, True)]),
    ]
    if postgres:
        found.append(("AS on PostgreSQL, 1 vs 2 processes", ["as_throughput.py", "--postgres", postgres,
                                                              "--workers-compare"], ["--quick"],
                      [("tokens/s", r"scale-out[\s\S]*?tokens/s\s+([\d.]+)x", 1.7, True),
                       ("registrations/s", r"scale-out[\s\S]*?registrations/s\s+([\d.]+)x", 1.7, True)]))
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small counts (CI smoke run)")
    ap.add_argument("--postgres", metavar="URL", help="also the PostgreSQL rows (1 vs 2 processes) on this database")
    args = ap.parse_args()
    summary: list[tuple[str, str, float | None, float, bool]] = []
    failed = False
    for title, argv, quick, ratios in benches(args.postgres):
        cmd = [sys.executable, str(HERE / argv[0]), *argv[1:], *(quick if args.quick else [])]
        print(f"\n=== {title}\n$ {' '.join(Path(c).name if i < 2 else c for i, c in enumerate(cmd))}", flush=True)
        started = time.monotonic()
        done = subprocess.run(cmd, capture_output=True, text=True)
        out = done.stdout + done.stderr
        print(out.rstrip())
        print(f"({time.monotonic() - started:.0f} s, exit {done.returncode})")
        failed |= done.returncode != 0
        for label, pattern, target, higher in ratios:
            m = re.search(pattern, out)
            summary.append((title, label, float(m.group(1)) if m else None, target, higher))
    print("\n=== summary (ratios measured in the same run as their peer)")
    for title, label, value, target, higher in summary:
        if value is None:
            verdict, shown = "NOT MEASURED", "   -  "
        else:
            ok = value >= target if higher else value <= target
            verdict, shown = ("meets" if ok else "misses") + f" {'>=' if higher else '<='} {target}x", f"{value:5.2f}x"
        print(f"  {title[:46]:<46} {label[:28]:<28} {shown}  {verdict}")
    if failed:
        sys.exit("a benchmark failed (see above)")


if __name__ == "__main__":
    main()
