#!/usr/bin/env bash
# Paid calls/s: tollgated on SQLite beside PostgreSQL (one and three instances); see
# bench_paid_pg.mjs. Needs wrk, anvil (node_modules/.bin), PostgreSQL's server binaries and
# `make all build/tools/tg_upstream`. The node process runs in its own process group, killed on
# exit, so nothing it started outlives the benchmark.
#
#   tests/bench/bench_paid_pg.sh                 # 64 connections, 10 s per case
#   CONNS=32 SECS=5 tests/bench/bench_paid_pg.sh
set -u
cd "$(dirname "$0")/../.."
export TG_ROOT=${TG_ROOT:-$PWD}
export TG_BUILD=${TG_BUILD:-$PWD/${BUILD:-build}}
export PATH=$PWD/node_modules/.bin:$PATH
unset ETH_RPC_URL
command -v wrk >/dev/null || { echo "bench_paid_pg: wrk not found" >&2; exit 1; }
pid=
cleanup() { [ -n "$pid" ] && kill -KILL -- "-$pid" 2>/dev/null; }
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM HUP
setsid node tests/bench/bench_paid_pg.mjs &
pid=$!
wait "$pid"
rc=$?
kill -KILL -- "-$pid" 2>/dev/null
pid=
exit "$rc"
