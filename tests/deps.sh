#!/usr/bin/env bash
# The dependency step: installs the Debian -dev packages and the pinned npm toolchain
# that tollgate needs, and does nothing when they are already there.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PKGS=(build-essential pkg-config ca-certificates
          libsecp256k1-dev libsodium-dev libjansson-dev libcurl4-openssl-dev libevent-dev
          libsqlite3-dev libpq-dev libssl-dev zlib1g-dev sqlite3
          clang llvm libclang-rt-14-dev valgrind wrk nginx
          postgresql)

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi
}

missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)

if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  # Package scripts must not start services (PostgreSQL, nginx) on the machine:
  # the test harness starts its own throwaway instances on loopback.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
    as_root chmod 755 "$policy"
    created_policy=1
  fi
  as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ "$created_policy" = 1 ]; then as_root rm -f "$policy"; fi
fi

# The Ethereum toolchain (anvil, forge, cast, solc-js, OpenZeppelin, x402 clients),
# pinned by package-lock.json; re-installed only when the lock file changes.
stamp=node_modules/.tollgate-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "deps: npm ci (pinned Ethereum toolchain)"
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
  echo "$want" > "$stamp"
fi
