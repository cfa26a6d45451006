#!/usr/bin/env bash
# The whole test suite: lint, types, then pytest (SQLite and PostgreSQL tiers, interop with real peers).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
bash scripts/conformance-setup.sh || echo "warning: MCP conformance suite not installed; its test will skip" >&2
bash scripts/browser-setup.sh || echo "warning: chromium not installed; the browser tests will skip" >&2
bash scripts/x402-js-setup.sh || echo "warning: @x402/fetch not installed; the x402 JS interop test will skip" >&2
# solc-js into .cache/solc (compiling prints the artifacts; discarded): the contract bytecode test recompiles.
bash scripts/compile-contracts.sh --print >/dev/null ||
  echo "warning: solc-js not installed; the contract recompilation test will skip" >&2
echo "==> ruff" >&2
.venv/bin/ruff check src tests benchmarks
echo "==> mypy" >&2
.venv/bin/mypy
echo "==> pytest" >&2
exec .venv/bin/python -m pytest -q -rs "$@"
