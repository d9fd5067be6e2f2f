#!/usr/bin/env bash
# Integration test of the payer's on-chain commands (gasless channels, top-up, withdrawal, passes) against anvil, the contracts and
# tollgated; see client_onchain.mjs. The node process runs in its own process group, killed on exit.
set -u
cd "$(dirname "$0")/../.."
export TG_ROOT=${TG_ROOT:-$PWD}
export TG_BUILD=${TG_BUILD:-$PWD/build}
unset ETH_RPC_URL
pid=
cleanup() { [ -n "$pid" ] && kill -KILL -- "-$pid" 2>/dev/null; }
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM HUP
setsid node tests/integration/client_onchain.mjs &
pid=$!
wait "$pid"
rc=$?
pid_done=$pid
kill -KILL -- "-$pid_done" 2>/dev/null
pid=
exit "$rc"
