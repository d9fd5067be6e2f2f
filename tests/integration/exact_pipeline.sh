#!/usr/bin/env bash
# Many `exact` calls in flight through one tollgated against anvil; see exact_pipeline.mjs. The
# node process runs in its own process group, which is
# killed when this script exits or is interrupted, so no child outlives the test.
set -u
cd "$(dirname "$0")/../.."
export TG_ROOT=${TG_ROOT:-$PWD}
export TG_BUILD=${TG_BUILD:-$PWD/build}
unset ETH_RPC_URL
pid=
cleanup() { [ -n "$pid" ] && kill -KILL -- "-$pid" 2>/dev/null; }
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM HUP
setsid node tests/integration/exact_pipeline.mjs &
pid=$!
wait "$pid"
rc=$?
pid_done=$pid
kill -KILL -- "-$pid_done" 2>/dev/null
pid=
exit "$rc"
