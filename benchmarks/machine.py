"""The line every benchmark prints first: the machine, so that each figure travels with what measured it."""

from __future__ import annotations

import os
import platform


def hardware(*versions: str) -> str:
    """OS, CPU model, core count, Python, the load average when the run began, and any library versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = f"load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "load average n/a"
    return " | ".join([platform.platform(), cpu, f"{os.cpu_count()} CPUs", f"Python {platform.python_version()}",
                       load, *versions])
