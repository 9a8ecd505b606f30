#!/usr/bin/env bash
# Compiles meshctl/contracts/*.sol into the committed meshctl/contracts/*.json (ABI and creation
# bytecode) with solc-js from the npm registry, pinned like the sources' pragma. Run after an edit.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
npm install --silent --prefix "$work" solc@0.8.28
for source in meshctl/contracts/*.sol; do
  NODE_PATH="$work/node_modules" node - "$source" "${source%.sol}.json" <<'JS'
const fs = require("fs");
const path = require("path");
const solc = require("solc");
const [source, target] = process.argv.slice(2);
const name = path.basename(source, ".sol");
const input = {
  language: "Solidity",
  sources: { [name]: { content: fs.readFileSync(source, "utf8") } },
  // paris: no PUSH0, so every development node and py-evm fork runs it.
  settings: { optimizer: { enabled: true, runs: 200 }, evmVersion: "paris",
              outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } } },
};
const output = JSON.parse(solc.compile(JSON.stringify(input)));
for (const error of output.errors || []) {
  if (error.severity === "error") { console.error(error.formattedMessage); process.exit(1); }
}
const compiled = output.contracts[name][name];
const artifact = { abi: compiled.abi, bytecode: "0x" + compiled.evm.bytecode.object };
fs.writeFileSync(target, JSON.stringify(artifact, null, 1) + "\n");
JS
done
