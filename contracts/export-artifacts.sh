#!/usr/bin/env bash
# export-artifacts.sh: writes the compiled contracts the C side deploys, as
# artifacts/<Name>.json = {"abi", "bytecode", "deployedBytecode"} (0x hex,
# creation and runtime code), from forge's out/ directory. Deterministic: the same build gives
# byte-identical files (no metadata hash in the bytecode, stable key order, trailing newline).
#
# Usage: ./export-artifacts.sh [--build] [OUTDIR]    (default OUTDIR: ./artifacts)
#   --build   run `forge build` first (otherwise out/ must be up to date)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
root="$(cd .. && pwd)"

build=0
if [ "${1:-}" = "--build" ]; then
  build=1
  shift
fi
outdir="${1:-$here/artifacts}"

if [ "$build" = 1 ]; then
  export PATH="$root/node_modules/.bin:$root/node_modules/@foundry-rs/forge-linux-amd64/bin:$PATH"
  if [ -z "${TOLLGATE_KEEP_HOME:-}" ]; then
    HOME="$(mktemp -d)"
    export HOME
  fi
  forge build >/dev/null
fi

mkdir -p "$outdir"
# name:source-file pairs
contracts="TollgateChannels:TollgateChannels.sol TollgatePasses:TollgatePasses.sol TestUSDC:TestUSDC.sol TestMultisigWallet:TestMultisigWallet.sol"
for pair in $contracts; do
  name="${pair%%:*}"
  file="${pair##*:}"
  src="$here/out/$file/$name.json"
  if [ ! -f "$src" ]; then
    echo "export-artifacts: $src is missing; run forge build (or pass --build)" >&2
    exit 1
  fi
  node -e '
    const fs = require("fs");
    const [src, dst, name] = process.argv.slice(1);
    const a = JSON.parse(fs.readFileSync(src, "utf8"));
    const hex = (o) => { const s = typeof o === "string" ? o : o.object; return s.startsWith("0x") ? s : "0x" + s; };
    const out = { abi: a.abi, bytecode: hex(a.bytecode), deployedBytecode: hex(a.deployedBytecode) };
    if (out.bytecode.length <= 2) { console.error(`export-artifacts: ${name} has no bytecode`); process.exit(1); }
    fs.writeFileSync(dst, JSON.stringify(out, null, 2) + "\n");
  ' "$src" "$outdir/$name.json" "$name"
done
echo "export-artifacts: wrote $(echo $contracts | wc -w) artifacts to $outdir"
