"""The scale tests' figures (crash outcomes, soak rates and memory) in pytest's terminal summary, so a CI log shows
them without ``-s``."""

from __future__ import annotations

import pytest

from tests.scale.cluster import FIGURES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("scale figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
