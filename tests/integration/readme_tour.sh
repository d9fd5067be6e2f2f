#!/usr/bin/env bash
# Runs the README's commands as written (the utility examples and the five-minute tour):
# starts the demo in serve mode (what `TG_DEMO_SERVE=1 make demo` runs) in a private TMPDIR,
# then runs every command of the blocks between `<!-- tour:begin -->` and `<!-- tour:end -->`
# in README.md with bash -e, and checks
# what each step must show. Only two substitutions: `build/` becomes $TG_BUILD/ (a sanitizer build
# runs its own binaries) and `build/demo.env` the file this run's demo writes.
# One PASS/FAIL line per check, then "N passed, N failed".
set -u
cd "$(dirname "$0")/../.."
export TG_ROOT=${TG_ROOT:-$PWD}
export TG_BUILD=${TG_BUILD:-$PWD/build}
unset ETH_RPC_URL TG_DEMO_PORT TG_DEMO_KEEP OPENAI_BASE_URL OPENAI_API_KEY

passed=0 failed=0
check() { # check NAME CONDITION-EXIT-STATUS [DETAIL]
  if [ "$2" = 0 ]; then passed=$((passed + 1)); echo "PASS $1"
  else failed=$((failed + 1)); echo "FAIL $1${3:+ -- $3}"; fi
}
base=$(mktemp -d "${TMPDIR:-/tmp}/tg-tour.XXXXXX")
pid=
cleanup() {
  [ -n "$pid" ] && kill -INT "$pid" 2>/dev/null && sleep 2
  [ -n "$pid" ] && kill -KILL -- "-$pid" 2>/dev/null
  for p in $(pgrep -f "$base" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
  rm -rf "$base"
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM HUP

# The tour block, as written in the README.
tour=$base/tour.sh
awk '/<!-- tour:begin -->/{on=1; next} /<!-- tour:end -->/{on=0} on && /^```/{code=!code; next} on && code' README.md >"$tour.raw"
check "README.md has a tour block with commands" "$([ -s "$tour.raw" ] && grep -q 'tollgate pay' "$tour.raw"; echo $?)"
{
  echo 'set -e'
  sed -e "s#build/demo.env#$base/demo.env#g" -e "s#\\bbuild/#$TG_BUILD/#g" "$tour.raw"
} >"$tour"

mkdir -p "$base/tmp"
TMPDIR=$base/tmp TG_DEMO_SERVE=1 TG_DEMO_ENV=$base/demo.env setsid node tests/demo/demo.mjs >"$base/demo.log" 2>&1 </dev/null &
pid=$!
for ((i = 0; i < 1800; i++)); do
  [ -s "$base/demo.env" ] && grep -q '^serving' "$base/demo.log" && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
check "the demo serves and writes its environment file" "$([ -s "$base/demo.env" ]; echo $?)" "$(tail -n 12 "$base/demo.log" | tr '\n' '|')"

out=$base/tour.out err=$base/tour.err
(cd "$TG_ROOT" && timeout 240 bash "$tour" >"$out" 2>"$err" </dev/null)
rc=$?
check "every command of the tour runs as written (exit 0)" "$([ "$rc" = 0 ]; echo $?)" "exit $rc; stderr: $(tail -n 12 "$err" | tr '\n' '|')"
check "tour: tollgate pay prints the body and the charge" \
  "$(grep -q '"object":"list"' "$out" && grep -Eq '^charged [0-9]+ \(exact, transaction 0x[0-9a-f]{64}' "$err"; echo $?)"
check "tour: a chat completion paid by a channel voucher" \
  "$(grep -q '"object":"chat.completion"' "$out" && grep -Eq '^charged [0-9]+ \(channel 0x[0-9a-f]{64}' "$err"; echo $?)"
if grep -q 'tollgate proxy' "$tour.raw"; then
  check "tour: the openai SDK through tollgate proxy, plain and streamed" \
    "$(grep -q 'plain: ' "$out" && grep -Eq '^streamed: .*\([0-9]+ chunks, [0-9]+ tokens\)' "$out"; echo $?)"
fi
check "README: the cast-like utility commands print what cast prints" \
  "$(grep -qx '0x1c8aff950685c2ed4bc3174f3472287b56d9517b9c948127319a09a7a36deac8' "$out" && grep -qx '0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed' "$out" && grep -Eq '^0x02f86a0180843b9aca00' "$out"; echo $?)"
check "tour: tollgate settle claims and sweeps" "$(grep -Eq '^claim +[1-9]' "$out" && grep -Eq '^sweep ' "$out"; echo $?)"
check "tour: tollgate report ends without mismatch" "$(grep -q ' 0 mismatches' "$out"; echo $?)"

kill -INT "$pid" 2>/dev/null
wait "$pid"; rc=$?
pid=
check "the serving demo stops on Ctrl-C (exit 0) and removes its environment file" "$([ "$rc" = 0 ] && [ ! -e "$base/demo.env" ]; echo $?)" "exit $rc"
for ((i = 0; i < 50; i++)); do [ -z "$(pgrep -f "$base" 2>/dev/null)" ] && break; sleep 0.1; done
left=$(pgrep -f "$base" 2>/dev/null | tr '\n' ' ')
check "no process of the demo or the tour is left" "$([ -z "$left" ]; echo $?)" "pids: $left"

if [ "$failed" != 0 ]; then
  echo "# tour script:"; sed 's/^/#   /' "$tour"
  echo "# tour stdout:"; tail -n 40 "$out" | sed 's/^/#   /'
  echo "# tour stderr:"; tail -n 40 "$err" | sed 's/^/#   /'
  echo "# demo:"; tail -n 30 "$base/demo.log" | sed 's/^/#   /'
fi
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
