#!/usr/bin/env bash
# Three tollgated instances on one throwaway PostgreSQL server, against anvil; see multi_pg.mjs.
# The node process runs in its own process group, which is killed when this script exits or is
# interrupted, so no child (anvil, postgres, the gateways) outlives the test.
set -u
cd "$(dirname "$0")/../.."
export TG_ROOT=${TG_ROOT:-$PWD}
export TG_BUILD=${TG_BUILD:-$PWD/build}
unset ETH_RPC_URL
pid=
cleanup() { [ -n "$pid" ] && kill -KILL -- "-$pid" 2>/dev/null; }
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM HUP
setsid node tests/integration/multi_pg.mjs &
pid=$!
wait "$pid"
rc=$?
pid_done=$pid
kill -KILL -- "-$pid_done" 2>/dev/null
pid=
exit "$rc"
