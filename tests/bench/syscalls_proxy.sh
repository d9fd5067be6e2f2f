#!/usr/bin/env bash
# syscalls_proxy.sh: system calls per proxied request, tollgated beside nginx, counted by
# strace -c over a wrk run on loopback (GET /fast through each proxy to build/tools/tg_upstream).
# Counts, unlike requests/s, do not depend on what else runs on the machine; strace slows the
# traced process down, so only the per-request counts are meaningful here, never the rates.
#
#   tests/bench/syscalls_proxy.sh            # 64 connections, 5 s per proxy
#   CONNS=16 SECS=10 tests/bench/syscalls_proxy.sh
#
# Needs strace, wrk and nginx (Debian: /usr/bin/strace, /usr/bin/wrk, /usr/sbin/nginx).
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
CONNS=${CONNS:-64}
SECS=${SECS:-5}
NGINX=${NGINX:-/usr/sbin/nginx}
WRK=${WRK:-wrk}
WORKERS=${WORKERS:-2}

for f in "$BUILD/tollgated" "$BUILD/tools/tg_upstream"; do
  [ -x "$f" ] || { echo "syscalls_proxy: $f missing: run make all $BUILD/tools/tg_upstream" >&2; exit 1; }
done
# strace is optional for `make bench`: without it this script says so and skips.
command -v strace >/dev/null || { echo "syscalls_proxy: strace not found, skipped"; exit 0; }
command -v "$WRK" >/dev/null || { echo "syscalls_proxy: $WRK not found" >&2; exit 1; }

tmp=$(mktemp -d /tmp/syscalls_proxy.XXXXXX)
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
  for _ in $(seq 200); do
    (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "syscalls_proxy: nothing listens on port $1" >&2
  return 1
}

up_port=$(free_port)
"$BUILD/tools/tg_upstream" "$up_port" 1 & pids+=($!)
wait_port "$up_port"

# Runs wrk against port $1, prints the number of requests completed.
load() {
  local out
  out=$("$WRK" -t2 -c"$CONNS" -d"${SECS}s" "http://127.0.0.1:$1/fast")
  echo "$out" | grep -q "Non-2xx" && echo "syscalls_proxy: non-2xx answers on port $1" >&2
  echo "$out" | awk '/requests in/ {print $1}'
}

# Prints "name calls_per_request" for the top system calls of an strace -c summary ($1), over $2 requests.
per_request() {
  awk -v n="$2" '
    /^-+/ { sep++; next }
    $NF == "rt_sigtimedwait" { next } # the main thread waiting for signals: time-based, not per request
    sep == 1 && NF >= 5 { name = $NF; calls = ($5 ~ /^[0-9]+$/) ? $4 : $4; total += calls; c[name] = calls }
    END {
      printf "  total %.2f per request\n", total / n
      for (k in c) if (c[k] / n >= 0.05) printf "  %-16s %.2f\n", k, c[k] / n
    }' "$1" | sort -k2 -nr
}

# ---- tollgated
tg_port=$(free_port)
cat > "$tmp/tollgated.conf" <<TGC
listen 127.0.0.1:$tg_port
workers $WORKERS
access_log off
upstream up http://127.0.0.1:$up_port
route fast GET /fast upstream=up
TGC
strace -f -c -qq -o "$tmp/tg.strace" "$BUILD/tollgated" -c "$tmp/tollgated.conf" 2>"$tmp/tollgated.log" &
tg_pid=$!
pids+=($tg_pid)
wait_port "$tg_port"
n_tg=$(load "$tg_port")
kill -TERM $(pgrep -P "$tg_pid") 2>/dev/null || kill -TERM "$tg_pid" # tollgated, strace's child
wait "$tg_pid" 2>/dev/null || true

# ---- nginx (same proxy shape as bench_proxy.sh)
n_ngx=
if [ -x "$NGINX" ]; then
  ngx_port=$(free_port)
  mkdir -p "$tmp/nginx"
  cat > "$tmp/nginx/nginx.conf" <<NGX
daemon off;
worker_processes $WORKERS;
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
  strace -f -c -qq -o "$tmp/ngx.strace" "$NGINX" -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" &
  ngx_pid=$!
  pids+=($ngx_pid)
  wait_port "$ngx_port"
  n_ngx=$(load "$ngx_port")
  kill -QUIT "$(cat "$tmp/nginx/nginx.pid")" 2>/dev/null || kill -TERM "$ngx_pid"
  wait "$ngx_pid" 2>/dev/null || true
fi

echo "syscalls_proxy: wrk -c$CONNS -d${SECS}s GET /fast, $WORKERS workers each, counted by strace -f -c (start-up and connection set-up included, spread over all requests)"
echo "tollgated: $n_tg requests"
per_request "$tmp/tg.strace" "$n_tg"
if [ -n "$n_ngx" ]; then
  echo "nginx: $n_ngx requests"
  per_request "$tmp/ngx.strace" "$n_ngx"
fi
