#!/usr/bin/env bash
# gas-table.sh: runs the gas benchmarks (test/Gas.t.sol) and prints the markdown table recorded
# in docs/PERFORMANCE-contracts.md. Figures per operation: execution gas of the call, calldata
# gas (EIP-2028, or the EIP-7623 floor when higher), transaction total (21,000 + calldata +
# execution - refund), and the total without the 21,000 base divided by the number of channels.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
root="$(cd .. && pwd)"
export PATH="$root/node_modules/.bin:$root/node_modules/@foundry-rs/forge-linux-amd64/bin:$PATH"
HOME="$(mktemp -d)"
export HOME
log="$(mktemp)"
trap 'rm -f "$log"; rm -rf "$HOME"' EXIT
forge test --match-path test/Gas.t.sol -vv >"$log" 2>&1 || { cat "$log"; exit 1; }
echo "| Operation | Channels | Execution gas | Calldata gas | Tx gas (incl. 21,000) | Per channel, excl. 21,000 |"
echo "|---|---:|---:|---:|---:|---:|"
grep -oE 'GAS\|[^|]+\|[0-9]+\|[0-9]+\|[0-9]+\|[0-9]+\|[0-9]+' "$log" | sort -t'|' -k2,2 -s | uniq |
  awk -F'|' '
    function commas(n,   s) { s = sprintf("%d", n); while (s ~ /[0-9][0-9][0-9][0-9]/) sub(/[0-9][0-9][0-9]($|,)/, ",&", s); return s }
    { printf "| %s | %s | %s | %s | %s | %s |\n", $2, commas($3), commas($4), commas($5), commas($6), commas($7) }'
