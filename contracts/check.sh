#!/usr/bin/env bash
# check.sh: the contracts' CI entry point (called by `make test`). Builds with forge through
# solc-js, runs every forge test (unit, fuzz, invariant, gas benchmarks, vector generation),
# checks the committed gas snapshot, and checks that the committed EIP-712 vectors and C-side
# artifacts are what this build produces (vectors are also re-verified with viem).
#
# Prints a last line "N passed, M failed": N and M count forge's test results plus the three
# extra checks (gas snapshot, vectors, artifacts). Exits non-zero when anything failed.
#
# Uses the toolchain from ../node_modules (npm ci at the repository root) and a scratch HOME, so
# it needs nothing from ~/.foundry. Environment:
#   GAS_TOLERANCE    percent of gas drift tolerated by the snapshot check (default 0: exact;
#                    the build is deterministic). With a tolerance, invariant entries (which
#                    carry run counts, not gas) are left out of the comparison.
#   CHECK_UPDATE=1   rewrite .gas-snapshot and artifacts/ instead of checking them
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
root="$(cd .. && pwd)"
export PATH="$root/node_modules/.bin:$root/node_modules/@foundry-rs/forge-linux-amd64/bin:$PATH"

if ! command -v forge >/dev/null 2>&1; then
  echo "check.sh: forge not found in $root/node_modules/.bin; run 'npm ci' at the repository root" >&2
  echo "0 passed, 1 failed"
  exit 1
fi
if ! command -v node >/dev/null 2>&1; then
  echo "check.sh: node not found; it runs solc-js (install Node.js)" >&2
  echo "0 passed, 1 failed"
  exit 1
fi

scratch="$(mktemp -d "${TMPDIR:-/tmp}/tollgate-contracts.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
export HOME="$scratch/home"
mkdir -p "$HOME"
export FOUNDRY_DISABLE_NIGHTLY_WARNING=1
export NO_COLOR=1

tolerance="${GAS_TOLERANCE:-0}"
snapshot_check=(forge snapshot --check .gas-snapshot)
if [ "$tolerance" != 0 ]; then
  snapshot_check+=(--tolerance "$tolerance" --no-match-test '^invariant')
fi
passed=0
failed=0
extra_failed=()

# Keep the committed vectors to compare with what the tests regenerate.
if [ -f vectors/eip712.json ]; then
  cp vectors/eip712.json "$scratch/eip712.committed.json"
fi

echo "== forge build"
if ! forge build; then
  echo "check.sh: forge build failed" >&2
  echo "0 passed, 1 failed"
  exit 1
fi

echo "== forge test"
forge test 2>&1 | tee "$scratch/test.log"
test_status=${PIPESTATUS[0]}
summary="$(grep -E '^Ran [0-9]+ test suites? in .*tests? passed' "$scratch/test.log" | tail -n 1)"
if [ -n "$summary" ]; then
  passed=$(echo "$summary" | sed -E 's/.*: ([0-9]+) tests? passed.*/\1/')
  failed=$(echo "$summary" | sed -E 's/.* ([0-9]+) failed.*/\1/')
else
  echo "check.sh: no forge test summary found" >&2
  failed=1
fi
if [ "$test_status" -ne 0 ] && [ "$failed" -eq 0 ]; then
  failed=1
fi

echo "== gas snapshot (.gas-snapshot, tolerance ${tolerance}%)"
if [ "${CHECK_UPDATE:-0}" = 1 ]; then
  if forge snapshot >"$scratch/snapshot.log" 2>&1; then
    echo "rewrote .gas-snapshot"
    passed=$((passed + 1))
  else
    tail -n 20 "$scratch/snapshot.log"
    failed=$((failed + 1))
    extra_failed+=("gas snapshot")
  fi
elif "${snapshot_check[@]}" >"$scratch/snapshot.log" 2>&1; then
  echo "gas snapshot matches"
  passed=$((passed + 1))
else
  grep -vE '^\s*$' "$scratch/snapshot.log" | grep -E 'Diff|diff|gas|FAIL|rror' | tail -n 40
  echo "check.sh: gas snapshot check failed (if the change is intended: CHECK_UPDATE=1 ./check.sh)" >&2
  failed=$((failed + 1))
  extra_failed+=("gas snapshot")
fi

echo "== EIP-712 vectors (vectors/eip712.json)"
vectors_ok=1
if [ ! -f vectors/eip712.json ]; then
  echo "check.sh: vectors/eip712.json was not generated" >&2
  vectors_ok=0
elif [ -f "$scratch/eip712.committed.json" ] && ! cmp -s vectors/eip712.json "$scratch/eip712.committed.json"; then
  echo "check.sh: vectors/eip712.json changed; review and commit the regenerated file" >&2
  vectors_ok=0
fi
if ! node vectors/verify.mjs vectors/eip712.json; then
  vectors_ok=0
fi
if [ "$vectors_ok" = 1 ]; then
  passed=$((passed + 1))
else
  failed=$((failed + 1))
  extra_failed+=("vectors")
fi

echo "== artifacts (artifacts/*.json)"
if [ "${CHECK_UPDATE:-0}" = 1 ]; then
  ./export-artifacts.sh && passed=$((passed + 1)) || { failed=$((failed + 1)); extra_failed+=("artifacts"); }
elif ./export-artifacts.sh "$scratch/artifacts" >/dev/null && diff -r -q artifacts "$scratch/artifacts"; then
  echo "artifacts match this build"
  passed=$((passed + 1))
else
  echo "check.sh: artifacts/ differ from this build; run ./export-artifacts.sh and commit" >&2
  failed=$((failed + 1))
  extra_failed+=("artifacts")
fi

if [ "${#extra_failed[@]}" -gt 0 ]; then
  echo "check.sh: failed checks: ${extra_failed[*]}" >&2
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
