#!/usr/bin/env bash
# bench_proxy.sh: requests/s and p50/p99 latency of a plain reverse-proxy hop on loopback:
# (a) nginx as a reverse proxy (the reference), (b) tollgated without payment, both in front
# of the same stand-in upstream (build/tools/tg_upstream, its fixed 102-byte /fast answer).
#
#   tests/bench/bench_proxy.sh            # 64 connections, 10 s per run
#   CONNS=128 SECS=20 tests/bench/bench_proxy.sh
#
# Needs wrk and nginx (Debian: /usr/bin/wrk, /usr/sbin/nginx) and `make all build/tools/tg_upstream`.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
CONNS=${CONNS:-64}
SECS=${SECS:-10}
THREADS=${THREADS:-2}
NGINX=${NGINX:-/usr/sbin/nginx}
WRK=${WRK:-wrk}
UP_THREADS=${UP_THREADS:-1}

for f in "$BUILD/tollgated" "$BUILD/tools/tg_upstream"; do
  [ -x "$f" ] || { echo "bench_proxy: $f missing: run make all $BUILD/tools/tg_upstream" >&2; exit 1; }
done
command -v "$WRK" >/dev/null || { echo "bench_proxy: wrk not found" >&2; exit 1; }
[ -x "$NGINX" ] || { echo "bench_proxy: nginx not found at $NGINX" >&2; exit 1; }

tmp=$(mktemp -d /tmp/bench_proxy.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
wait_port() {
  for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "bench_proxy: nothing listens on port $1" >&2
  return 1
}

up_port=$(free_port); ngx_port=$(free_port); tg_port=$(free_port)
"$BUILD/tools/tg_upstream" "$up_port" "$UP_THREADS" & pids+=($!); up_pid=$!
wait_port "$up_port"

mkdir -p "$tmp/nginx"
cat > "$tmp/nginx/nginx.conf" <<NGX
daemon off;
worker_processes auto;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $tmp/nginx/body;
  proxy_temp_path $tmp/nginx/proxy;
  fastcgi_temp_path $tmp/nginx/fastcgi;
  uwsgi_temp_path $tmp/nginx/uwsgi;
  scgi_temp_path $tmp/nginx/scgi;
  upstream up { server 127.0.0.1:$up_port; keepalive 128; }
  server {
    listen 127.0.0.1:$ngx_port;
    location / {
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    }
  }
}
NGX
"$NGINX" -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" & pids+=($!); ngx_pid=$!
wait_port "$ngx_port"

cat > "$tmp/tollgated.conf" <<TGC
listen 127.0.0.1:$tg_port
workers 0
access_log off
upstream up http://127.0.0.1:$up_port
route fast GET /fast upstream=up
TGC
"$BUILD/tollgated" -c "$tmp/tollgated.conf" 2>"$tmp/tollgated.log" & pids+=($!); tg_pid=$!
wait_port "$tg_port"

# Same answer through both proxies?
a=$(curl -s "http://127.0.0.1:$ngx_port/fast"); b=$(curl -s "http://127.0.0.1:$tg_port/fast")
[ "$a" = "$b" ] || { echo "bench_proxy: nginx and tollgated answer differently" >&2; exit 1; }

# CPU time (clock ticks) of a process and its children (nginx's workers), all threads included.
cpu_ticks() {
  local t=0 p
  for p in "$1" $(pgrep -P "$1"); do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$t"
}

# Prints "rps p50_ms p99_ms cpu_us_per_request" for one wrk run against url $1 served by pid $2.
run() {
  local out c0 c1
  "$WRK" -t"$THREADS" -c"$CONNS" -d2s "$1" >/dev/null 2>&1 # warm-up
  c0=$(cpu_ticks "$2")
  out=$("$WRK" -t"$THREADS" -c"$CONNS" -d"${SECS}s" --latency "$1")
  c1=$(cpu_ticks "$2")
  local rps p50 p99 n
  rps=$(echo "$out" | awk '/^Requests\/sec:/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  n=$(echo "$out" | awk '/requests in/ {print $1}')
  echo "$rps $(to_ms "$p50") $(to_ms "$p99") $(awk -v c=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" -v n="$n" 'BEGIN {printf "%.1f", c / hz * 1e6 / n}')"
  if echo "$out" | grep -q "Non-2xx"; then echo "bench_proxy: non-2xx answers from $1" >&2; fi
}
to_ms() {
  case "$1" in
    *us) echo "$1" | awk '{sub("us","",$1); printf "%.3f", $1/1000}' ;;
    *ms) echo "$1" | awk '{sub("ms","",$1); printf "%.3f", $1}' ;;
    *s)  echo "$1" | awk '{sub("s","",$1); printf "%.3f", $1*1000}' ;;
    *)   echo "$1" ;;
  esac
}

ROUNDS=${ROUNDS:-2}
echo "bench_proxy: $(nproc) cores, wrk -t$THREADS -c$CONNS -d${SECS}s, GET /fast (102 bytes), upstream tg_upstream x$UP_THREADS, best of $ROUNDS alternating rounds"
# Loopback figures on a small machine drift from run to run (wrk, the upstream and the proxy
# share the cores): the setups alternate and each keeps its best round.
best() { # name rps p50 p99 cpu -> keeps the round with the highest rps in best_<name>
  local cur; eval "cur=\${best_$1:-0 0 0 0}"
  if awk -v a="$2" -v b="${cur%% *}" 'BEGIN {exit !(a > b)}'; then eval "best_$1=\"$2 $3 $4 $5\""; fi
}
for r in $(seq "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then order="ngx tg up"; else order="tg ngx up"; fi
  for w in $order; do
    case $w in
      ngx) port=$ngx_port pid=$ngx_pid ;; tg) port=$tg_port pid=$tg_pid ;; up) port=$up_port pid=$up_pid ;;
    esac
    read -r rps p50 p99 cpu < <(run "http://127.0.0.1:$port/fast" "$pid")
    echo "  round $r $w: $rps req/s, p50 $p50 ms, p99 $p99 ms, $cpu us CPU/request"
    best "$w" "$rps" "$p50" "$p99" "$cpu"
  done
done
read -r d_rps d_p50 d_p99 d_cpu <<<"$best_up"
read -r n_rps n_p50 n_p99 n_cpu <<<"$best_ngx"
read -r t_rps t_p50 t_p99 t_cpu <<<"$best_tg"
printf '%-30s %12s %9s %9s %14s\n' "setup" "requests/s" "p50 ms" "p99 ms" "CPU us/request"
printf '%-30s %12s %9s %9s %14s\n' "upstream direct (no proxy)" "$d_rps" "$d_p50" "$d_p99" "$d_cpu"
printf '%-30s %12s %9s %9s %14s\n' "(a) nginx reverse proxy" "$n_rps" "$n_p50" "$n_p99" "$n_cpu"
printf '%-30s %12s %9s %9s %14s\n' "(b) tollgated, no payment" "$t_rps" "$t_p50" "$t_p99" "$t_cpu"
awk -v t="$t_rps" -v n="$n_rps" -v tp="$t_p99" -v np="$n_p99" -v tc="$t_cpu" -v nc="$n_cpu" 'BEGIN {
  printf "(b)/(a) throughput: %.2fx (goal >= 0.80x); p99 difference: %+.3f ms (goal <= +1 ms); CPU per request: %.2fx nginx\n", t/n, tp-np, tc/nc }'
