#!/usr/bin/env bash
# bench_passes.sh: calls/s with an access-pass session token against calls/s with no payment,
# through the same tollgated (see bench_passes.mjs). Needs wrk, anvil (npm ci) and
# `make all build/tools/tg_upstream`.
#
#   tests/bench/bench_passes.sh                 # 64 connections, 10 s per run, 2 rounds
#   CONNS=128 SECS=20 ROUNDS=4 tests/bench/bench_passes.sh
set -u
cd "$(dirname "$0")/../.."
export TG_ROOT=${TG_ROOT:-$PWD}
export TG_BUILD=${TG_BUILD:-$PWD/${BUILD:-build}}
unset ETH_RPC_URL
command -v "${WRK:-wrk}" >/dev/null || { echo "bench_passes: wrk not found" >&2; exit 1; }
pid=
cleanup() { [ -n "$pid" ] && kill -KILL -- "-$pid" 2>/dev/null; }
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM HUP
setsid node tests/bench/bench_passes.mjs &
pid=$!
wait "$pid"
rc=$?
kill -KILL -- "-$pid" 2>/dev/null
pid=
exit "$rc"
