#!/usr/bin/env bash
# `tollgate` wallet commands beside Foundry cast: same stdout and exit status, and keystores each can read from the other.
set -u
cd "$(dirname "$0")/../.."
T=${TG_BUILD:-$PWD/build}/tollgate
C=${CAST:-$PWD/node_modules/.bin/cast}
V=${TG_VECTORS:-$(cd .. && pwd)/shared/vectors}
if [ ! -x "$C" ]; then echo "SKIP wallet_cli: no cast at $C"; exit 0; fi
if [ ! -x "$T" ]; then echo "FAIL wallet_cli: no tollgate at $T"; exit 1; fi
W=$(mktemp -d /tmp/tg_wallet_cli.XXXXXX)
trap 'rm -rf "$W"' EXIT
export HOME=$W/home
unset ETH_RPC_URL TOLLGATE_PASSWORD
mkdir -p "$HOME" "$W/ks" "$W/out"
cd "$W"

fails=0
pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; fails=$((fails + 1)); }

# same NAME ARGS...: stdout and exit status of both tools must agree.
same() {
  local name=$1; shift
  local a b ra rb
  a=$("$C" "$@" 2>/dev/null); ra=$?
  b=$("$T" "$@" 2>/dev/null); rb=$?
  if [ "$a" == "$b" ] && [ "$ra" == "$rb" ]; then pass "$name"
  else fail "$name" "cast[$ra]='$a' tollgate[$rb]='$b'"; fi
}
# refused NAME ARGS...: tollgate exits non-zero with one line on stderr and nothing on stdout.
refused() {
  local name=$1; shift
  local out err rc
  out=$("$T" "$@" 2>"$W/err"); rc=$?
  err=$(cat "$W/err")
  if [ "$rc" != 0 ] && [ -z "$out" ] && [ "$(wc -l <"$W/err")" = 1 ] && [[ $err == "tollgate "* ]]; then pass "$name"
  else fail "$name" "exit $rc, stdout '$out', stderr '$err'"; fi
}

K=0x4af1bceebf7f3634ec3cff8a2c38e51178d5d4ce585c52d6043e5e2cc3418bb0
K46=0x4646464646464646464646464646464646464646464646464646464646464646
KCOW=0xc85ef7d79691fe79573b1a7064c19c1a9819ebdbd1faaab1a8ec92344438aaf4
SIG=0x90a938f7457df6e8f741264c32697fc52f9a8f867c52dd70713d9d2d472f2e415d9c94148991bbe1f4a1818d1dff09165782749c877f5cf1eff4ef126e55714d1c
A=0x29C76e6aD8f28BB1004902578Fb108c507Be341b

same address            wallet address --private-key $K46
same address-positional wallet address 0x0000000000000000000000000000000000000000000000000000000000000001
same address-no0x       wallet address --private-key ${K46#0x}
same public-key         wallet public-key --private-key $K46
same checksum           to-check-sum-address 0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed
same checksum-no0x      to-check-sum-address fb6916095ca1df60bb79ce92ce3ea74c37c5d359
same hash-message       hash-message 'Hello, world!'
same hash-message-0x    hash-message 0x48656c6c6f2c20776f726c6421
same hash-message-empty hash-message ''
same sign-text          wallet sign --private-key $K 'Hello, world!'
same sign-hex-bytes     wallet sign --private-key $K 0x48656c6c6f2c20776f726c6421
same sign-empty         wallet sign --private-key $K ''
same sign-0x-empty      wallet sign --private-key $K 0x
same sign-0X-is-text    wallet sign --private-key $K 0X48656c6c6f2c20776f726c6421
same sign-unicode       wallet sign --private-key $K 'päyment ✓ 支付'
same sign-no-hash       wallet sign --no-hash --private-key $KCOW 0xbe609aee343fb3c4b28e1df9e632fca64fcfaede20f02e86244efddf30957bd2
same sign-odd-hex       wallet sign --private-key $K 0x48656c6c6f2c20776f726c642
same verify             wallet verify --address $A 'Hello, world!' $SIG
same verify-lower-addr  wallet verify --address ${A,,} 'Hello, world!' $SIG
same verify-v01         wallet verify --address $A 'Hello, world!' ${SIG%1c}01
same verify-wrong-msg   wallet verify --address $A 'Hello, world' $SIG
same verify-wrong-addr  wallet verify --address 0x0000000000000000000000000000000000000001 'Hello, world!' $SIG

python3 -c "import json,sys; json.dump(json.load(open(sys.argv[1]))['typedData'], open('mail.json','w'))" \
  "$V/eip-text/eip712-example.json"
same sign-typed   wallet sign --data --from-file --private-key $KCOW mail.json
same verify-typed wallet verify --address 0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826 --data --from-file mail.json \
  0x4355c47d63924e8a72e509b65029052eb6c299d53a04e167c5775fd466751c9d07299936d304c153f6443dfa05f40ff007d72911b6f72307f996231605b915621c

same sign-typed-inline wallet sign --data --private-key $KCOW "$(cat mail.json)"

# Keystores: the vectors, read by both.
python3 - "$V" <<'EOF'
import json, sys
v = sys.argv[1]
d = json.load(open(v + '/ethereum-tests-keystore/basic_tests.json'))
for k in ('test1', 'test2', 'mycrypto'):
    json.dump(d[k]['json'], open('ks/' + k + '.json', 'w'))
EOF
same decrypt-pbkdf2        wallet decrypt-keystore --keystore-dir ks test1.json --unsafe-password testpassword
same decrypt-scrypt        wallet decrypt-keystore --keystore-dir ks mycrypto.json --unsafe-password foobartest121
same decrypt-wrong-pw      wallet decrypt-keystore --keystore-dir ks test1.json --unsafe-password wrong
# test2 breaks RFC 7914 (N=2^18, r=1): cast says "scrypt InvalidParams", we refuse it too.
same decrypt-rfc7914       wallet decrypt-keystore --keystore-dir ks test2.json --unsafe-password testpassword

# Cross-compatibility: cast reads ours, we read cast's.
out=$("$T" wallet import k155 --keystore-dir out --private-key $K46 --unsafe-password pw)
want=$("$C" wallet import c155 --keystore-dir ks --private-key $K46 --unsafe-password pw)
[ "${out/k155/c155}" == "$want" ] && pass import-line || fail import-line "'$out' vs '$want'"
same cross-cast-reads-ours wallet decrypt-keystore --keystore-dir out k155 --unsafe-password pw
same cross-we-read-cast    wallet decrypt-keystore --keystore-dir ks c155 --unsafe-password pw
mode=$(stat -c %a out/k155)
[ "$mode" = 600 ] && pass keystore-mode-0600 || fail keystore-mode-0600 "mode $mode"
refused import-exists wallet import k155 --keystore-dir out --private-key $K46 --unsafe-password pw
"$T" wallet import k155 --keystore-dir out --private-key $K --unsafe-password pw2 --force >/dev/null &&
  [ "$("$C" wallet decrypt-keystore --keystore-dir out k155 --unsafe-password pw2)" == "k155's private key is: $K" ] &&
  pass import-force || fail import-force "overwrite did not take"

# wallet new DIR [NAME]: cast's two lines, a file named by its UUID (or NAME) that cast decrypts.
out=$("$T" wallet new out --password pw)
file=$(echo "$out" | sed -n 's/^Created new encrypted keystore file: //p')
addr=$(echo "$out" | sed -n 's/^Address:    //p')
if [[ $file == "$W/out/"* ]] && [ -f "$file" ] && [[ $(basename "$file") =~ ^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$ ]] &&
   [ "$(echo "$out" | wc -l)" = 2 ]; then pass new-lines; else fail new-lines "$out"; fi
key=$("$C" wallet decrypt-keystore "$file" --unsafe-password pw | sed 's/.* is: //')
[ "$("$C" wallet address --private-key "$key")" == "$addr" ] && pass new-cast-decrypts || fail new-cast-decrypts "$key"
"$T" wallet new out named --password-file <(printf 'pw3\n') >/dev/null
[ "$(TOLLGATE_PASSWORD=pw3 "$T" wallet decrypt-keystore out/named | sed 's/.* is: //')" == \
  "$("$C" wallet decrypt-keystore --keystore-dir out named --unsafe-password pw3 | sed 's/.* is: //')" ] &&
  pass new-named-password-file ||
  fail new-named-password-file "mismatch"
# --keystore signs with the key inside (password from a file with CRLF, as Windows editors write it).
printf 'pw2\r\n' > pwfile
[ "$("$T" wallet sign --keystore out/k155 --password-file pwfile hello)" == "$("$C" wallet sign --private-key $K hello)" ] &&
  pass sign-with-keystore || fail sign-with-keystore "differs"
[ "$("$T" wallet address --keystore out/k155 --password pw2)" == "$A" ] && pass address-with-keystore ||
  fail address-with-keystore "differs"
out=$("$T" wallet new)
[[ $out =~ ^"Successfully created new keypair."$'\n'"Address:     0x"[0-9a-fA-F]{40}$'\n'"Private key: 0x"[0-9a-f]{64}$ ]] &&
  pass new-no-dir || fail new-no-dir "$out"

# Refusals: one line on stderr naming the input, non-zero exit.
refused bad-key            wallet address --private-key 0x00
refused key-is-n           wallet address --private-key 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141
refused bad-checksum       to-check-sum-address 0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD
refused short-address      to-check-sum-address 0x5aaeb6053f3e94c9b9a09f33669435e7ef1bea
# The high-S twin of $SIG (s' = n - s, v flipped): cast accepts it; our EIP-2 low-S policy refuses it.
refused verify-high-s      wallet verify --address $A 'Hello, world!' \
  0x90a938f7457df6e8f741264c32697fc52f9a8f867c52dd70713d9d2d472f2e41a2636beb766e441e0b5e7e72e200f6e8632c684a27c94349cfdd6f7a61e0cff41b
refused verify-short-sig   wallet verify --address $A 'Hello, world!' 0x90a938
refused no-password        wallet decrypt-keystore ks/test1.json
refused no-such-keystore   wallet decrypt-keystore ks/nope.json --password x
refused name-with-slash    wallet import out ../evil --private-key $K --password pw
refused typed-no-file      wallet sign --data --from-file --private-key $K nope.json

echo "$fails failed"
[ "$fails" = 0 ]
