#!/usr/bin/env bash
# Runs the demo (tests/demo/demo.mjs, what `make demo` runs) non-interactively and checks that it
# succeeds, prints its five steps, and leaves no process behind: once after a full run, once after
# a SIGINT in the middle (Ctrl-C). Every file and process of the demo lives under a private
# TMPDIR, so `pgrep -f "$TMPDIR"` finds exactly the processes the demo started (anvil runs with
# --config-out there, tollgated and tg_upstream from private copies there).
# One PASS/FAIL line per check, then "N passed, N failed".
set -u
cd "$(dirname "$0")/../.."
export TG_ROOT=${TG_ROOT:-$PWD}
export TG_BUILD=${TG_BUILD:-$PWD/build}
unset ETH_RPC_URL TG_DEMO_SERVE TG_DEMO_PORT TG_DEMO_KEEP

passed=0 failed=0
check() { # check NAME CONDITION-EXIT-STATUS [DETAIL]
  if [ "$2" = 0 ]; then passed=$((passed + 1)); echo "PASS $1"
  else failed=$((failed + 1)); echo "FAIL $1${3:+ -- $3}"; fi
}
base=$(mktemp -d "${TMPDIR:-/tmp}/tg-demo-check.XXXXXX")
pid=
leftovers() { pgrep -f "$1" 2>/dev/null | tr '\n' ' '; }
cleanup() {
  [ -n "$pid" ] && kill -KILL -- "-$pid" 2>/dev/null
  # Safety net: whatever a failed check found left over is ours (its command line names our dir).
  for p in $(pgrep -f "$base" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
  rm -rf "$base"
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM HUP

# Starts the demo in its own session with TMPDIR=$1 and its output in $2; sets $pid.
start_demo() {
  mkdir -p "$1"
  TMPDIR=$1 setsid node tests/demo/demo.mjs >"$2" 2>&1 </dev/null &
  pid=$!
}
# Waits (up to $2 s) until nothing under $1 runs any more; prints what is left.
wait_gone() {
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    [ -z "$(leftovers "$1")" ] && return 0
    sleep 0.1
  done
  leftovers "$1"
  return 1
}

# ---- a full run
run1=$base/run1 log1=$base/run1.log
mkdir -p "$run1"
before=$(leftovers "$run1")
check "before the run: no demo process under its scratch dir" "$([ -z "$before" ]; echo $?)" "$before"
t0=$SECONDS
start_demo "$run1" "$log1"
wait "$pid"; rc=$?
pid=
secs=$((SECONDS - t0))
check "the demo exits 0 (${secs}s)" "$([ "$rc" = 0 ]; echo $?)" "exit $rc; last lines: $(tail -n 15 "$log1" | tr '\n' '|')"
check "the demo finishes in under 120 s" "$([ "$secs" -lt 120 ]; echo $?)" "${secs}s"
missing=
for s in '\[1/6\] An unpaid call' '\[2/6\] Paid calls with exact' '\[3/6\] A payment channel' '\[4/6\] An access pass' \
         '\[5/6\] A settlement batch' '\[6/6\] Reconciliation' 'alice again  *403' 'Keep it running' 'demo finished'; do
  grep -q "$s" "$log1" || missing="$missing '$s'"
done
check "the demo prints its six steps, the old pass holder refused, and how to keep it running" "$([ -z "$missing" ]; echo $?)" "missing:$missing"
check "each exact call shows its own transaction hash" \
  "$([ "$(grep -Eo 'transaction 0x[0-9a-f]{64}' "$log1" | sort -u | wc -l)" -ge 4 ]; echo $?)"
check "the settlement table and the reconciliation end without mismatch" \
  "$(grep -q 'claim ' "$log1" && grep -q ' 0 mismatches' "$log1" && grep -q 'every unit charged is on-chain' "$log1"; echo $?)"
check "no color escapes when stdout is not a terminal" "$(! grep -q $'\x1b\[' "$log1"; echo $?)"
left=$(wait_gone "$run1" 5)
check "after the run: no anvil, tollgated or tg_upstream of the demo is left" "$([ -z "$left" ]; echo $?)" "pids: $left"
check "after the run: the scratch directory is removed" "$([ -z "$(ls -A "$run1")" ]; echo $?)" "$(ls -A "$run1")"

# ---- a run interrupted by SIGINT (Ctrl-C) in the middle
run2=$base/run2 log2=$base/run2.log
start_demo "$run2" "$log2"
seen=1
for ((i = 0; i < 600; i++)); do
  if grep -q '\[3/6\]' "$log2" 2>/dev/null; then seen=0; break; fi
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
running=$(leftovers "$run2")
check "interrupt: the demo reached step 3 with its processes running" "$([ "$seen" = 0 ] && [ -n "$running" ]; echo $?)" "$(tail -n 5 "$log2" | tr '\n' '|')"
kill -INT "$pid" 2>/dev/null
wait "$pid"; rc=$?
pid=
check "interrupt: SIGINT makes the demo exit non-zero (130) and say so" "$([ "$rc" = 130 ] && grep -q 'interrupted by SIGINT' "$log2"; echo $?)" "exit $rc"
left=$(wait_gone "$run2" 5)
check "interrupt: no anvil, tollgated or tg_upstream of the demo is left" "$([ -z "$left" ]; echo $?)" "pids: $left"

if [ "$failed" != 0 ]; then
  echo "# full run output:"; sed 's/^/#   /' "$log1" | tail -n 80
fi
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
