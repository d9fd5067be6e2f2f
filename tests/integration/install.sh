#!/usr/bin/env bash
# `make install` into a scratch DESTDIR: headers, library, pkg-config file, CLI and man pages
# are where they belong, and a program built with `pkg-config --cflags --libs tollgate` runs.
set -u
cd "$(dirname "$0")/../.."
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
pass=0 fail=0
ok() { echo "PASS install/$1"; pass=$((pass + 1)); }
ko() { echo "FAIL install/$1: $2"; fail=$((fail + 1)); }

if make --no-print-directory -s install PREFIX=/usr/local DESTDIR="$d/root" BUILD="${TG_BUILD:-build}" >"$d/log" 2>&1; then
  ok make-install
else
  ko make-install "$(tail -5 "$d/log")"
fi
p=$d/root/usr/local
for f in include/tollgate/tollgate.h include/tollgate/keccak.h lib/libtollgate.a lib/libtollgate.so.0 \
         lib/pkgconfig/tollgate.pc bin/tollgate; do
  [ -e "$p/$f" ] || { ko files "missing $f"; break; }
done
[ -e "$p/bin/tollgate" ] && ok files
n_man=$(find "$p/share/man" -type f 2>/dev/null | wc -l)
if [ "$n_man" -ge 1 ]; then ok man-pages; else ko man-pages "no man page installed"; fi

cat > "$d/t.c" <<'C'
#include <stdio.h>
#include <tollgate/tollgate.h>
int main(void) {
  tg_hash h;
  char s[67];
  tg_keccak256(&h, "hello", 5);
  tg_hex_encode(s, h.b, 32, 1);
  puts(s);
  return 0;
}
C
# The .pc file names the installed prefix; point pkg-config at the scratch root.
flags=$(PKG_CONFIG_SYSROOT_DIR="$d/root" PKG_CONFIG_PATH="$p/lib/pkgconfig" pkg-config --cflags --libs tollgate)
# A sanitizer build of the library needs the sanitizer runtime in the program too.
if cc "$d/t.c" $flags ${SANITIZE:+-fsanitize=$SANITIZE} -o "$d/t" 2>"$d/cc.log" &&
   [ "$(LD_LIBRARY_PATH="$p/lib" "$d/t")" = 0x1c8aff950685c2ed4bc3174f3472287b56d9517b9c948127319a09a7a36deac8 ]; then
  ok pkg-config-program
else
  ko pkg-config-program "$(head -5 "$d/cc.log")"
fi
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
