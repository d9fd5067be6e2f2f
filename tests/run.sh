#!/usr/bin/env bash
# The test runner: runs every suite (unit and vector tests, fuzz corpus replay,
# integration tests against anvil, forge tests) and ends with one summary line.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
export TG_ROOT=$PWD
export TG_BUILD=$PWD/$BUILD
export TG_VECTORS=${TG_VECTORS:-$(cd .. && pwd)/shared/vectors}
export PATH=$PWD/node_modules/.bin:$PATH
ONLY=${TG_ONLY:-}          # a substring: run only suites whose name has it

pass=0 fail=0 skip=0
failed_names=()
logdir=$BUILD/test-logs
mkdir -p "$logdir"

# Runs one suite; its output has PASS/FAIL/SKIP lines, or a final "N passed, N failed".
run_suite() {
  local name=$1; shift
  if [ -n "$ONLY" ] && [[ $name != *"$ONLY"* ]]; then return; fi
  local log=$logdir/$(echo "$name" | tr '/ ' '__').log
  local t0=$SECONDS
  "$@" >"$log" 2>&1 </dev/null
  local rc=$?
  local p f s
  p=$(grep -c '^PASS ' "$log"); f=$(grep -c '^FAIL ' "$log"); s=$(grep -c '^SKIP ' "$log")
  if [ "$p$f$s" = "000" ]; then
    local sum
    sum=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
    if [ -n "$sum" ]; then
      p=$(echo "$sum" | sed -E 's/^([0-9]+) passed.*/\1/')
      f=$(echo "$sum" | sed -E 's/^[0-9]+ passed, ([0-9]+) failed.*/\1/')
      s=$(echo "$sum" | sed -nE 's/.*, ([0-9]+) skipped.*/\1/p'); s=${s:-0}
    fi
  fi
  if [ "$rc" != 0 ] && [ "$f" = 0 ]; then f=1; fi
  pass=$((pass + p)); fail=$((fail + f)); skip=$((skip + s))
  if [ "$f" != 0 ]; then
    failed_names+=("$name")
    echo "FAIL $name ($p passed, $f failed, exit $rc, $((SECONDS - t0))s) -- log: $log"
    grep -E '^(FAIL|not ok)|[Ff]ail|[Ee]rror' "$log" | head -n 40 | sed 's/^/    /'
  else
    echo "ok   $name ($p passed, $s skipped, $((SECONDS - t0))s)"
  fi
}

# Replays a fuzz driver's corpus (its seeds and every crash found so far).
replay() {
  local drv=$1 corpus=tests/fuzz/corpus/${1#fuzz_}
  "$BUILD/fuzz-replay/$drv" "$corpus"
}

for t in "$BUILD"/tests/test_*; do
  [ -x "$t" ] || continue
  run_suite "unit/$(basename "$t")" "$t"
done
for f in "$BUILD"/fuzz-replay/fuzz_*; do
  [ -x "$f" ] || continue
  run_suite "fuzz-replay/$(basename "$f")" replay "$(basename "$f")"
done
if [ -x contracts/check.sh ]; then
  run_suite "contracts/forge" contracts/check.sh
fi
for s in tests/integration/*.sh; do
  [ -x "$s" ] || continue
  run_suite "integration/$(basename "$s" .sh)" "$s"
done

if [ ${#failed_names[@]} -gt 0 ]; then
  echo "failed suites: ${failed_names[*]}"
fi
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" = 0 ]
