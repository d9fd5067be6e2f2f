#!/usr/bin/env bash
# bench_client.sh: paid calls/s from the payer's side: the library (`tollgate pay --count`) and
# wrk through `tollgate proxy`, against anvil + tollgated + tg_upstream on loopback.
#   tests/bench/bench_client.sh                 # CALLS=1000 PARALLEL=16 CONNS=16 SECS=10
# Needs wrk and `make all build/tools/tg_upstream`.
set -u
cd "$(dirname "$0")/../.."
export TG_ROOT=$PWD
export TG_BUILD=${TG_BUILD:-$PWD/${BUILD:-build}}
unset ETH_RPC_URL
command -v wrk >/dev/null || { echo "bench_client: wrk not found" >&2; exit 1; }
setsid node tests/bench/bench_client.mjs &
pid=$!
trap 'kill -KILL -- "-$pid" 2>/dev/null' EXIT INT TERM
wait "$pid"
