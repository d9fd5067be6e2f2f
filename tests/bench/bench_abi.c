/* Benchmark: ABI calldata for the gateway's hot paths (transferWithAuthorization, batch claims) and strict decoding. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tollgate/abi.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static volatile uint8_t sink;

#define TWA "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)"

int main(void) {
  tg_abi_sig *twa = NULL, *claim = NULL;
  if (tg_abi_sig_parse(&twa, TWA, strlen(TWA)) ||
      tg_abi_sig_parse(&claim, "claim((bytes32,uint128,bytes)[])", 32))
    return 1;
  tg_address from, to;
  memset(from.b, 0x11, 20);
  memset(to.b, 0x22, 20);
  uint8_t nonce[32], r[32], s[32];
  memset(nonce, 0x33, 32);
  memset(r, 0x44, 32);
  memset(s, 0x55, 32);
  const long N = 2000000;

  /* 1. the static fast path: selector + 9 words into caller storage */
  uint8_t sel[4], cd[4 + 9 * 32];
  tg_abi_selector(sel, twa);
  double t0 = now();
  for (long i = 0; i < N; i++) {
    memcpy(cd, sel, 4);
    tg_abi_put_address(cd + 4, &from);
    tg_abi_put_address(cd + 36, &to);
    tg_abi_put_u64(cd + 68, (uint64_t)i);
    tg_abi_put_u64(cd + 100, 0);
    tg_abi_put_u64(cd + 132, 1900000000);
    tg_abi_put_bytes32(cd + 164, nonce);
    tg_abi_put_u64(cd + 196, 27);
    tg_abi_put_bytes32(cd + 228, r);
    tg_abi_put_bytes32(cd + 260, s);
    sink ^= cd[100 + (i & 31)];
  }
  double t1 = now();
  printf("transferWithAuthorization calldata, put_* fast path: %.1f ns/op\n", (t1 - t0) * 1e9 / N);

  /* 2. the generic encoder with a pre-parsed signature and stack values (no allocation) */
  tg_abi_value items[9] = {tg_abi_val_address(&from), tg_abi_val_address(&to), tg_abi_val_u64(1),
                           tg_abi_val_u64(0), tg_abi_val_u64(1900000000),
                           tg_abi_val_fixed(nonce, 32), tg_abi_val_u64(27),
                           tg_abi_val_fixed(r, 32), tg_abi_val_fixed(s, 32)};
  tg_abi_value args = tg_abi_val_list(items, 9);
  t0 = now();
  for (long i = 0; i < N; i++) {
    items[2] = tg_abi_val_u64((uint64_t)i);
    if (tg_abi_encode_to(cd + 4, 9 * 32, twa->inputs, &args)) return 1;
    sink ^= cd[100 + (i & 31)];
  }
  t1 = now();
  printf("transferWithAuthorization args, tg_abi_encode_to: %.1f ns/op\n", (t1 - t0) * 1e9 / N);

  /* 3. a batch claim of 100 vouchers (bytes32 channel, uint128 amount, 65-byte signature) */
  enum { B = 100 };
  static tg_abi_value v[B][3], tup[B];
  static uint8_t sigs[B][65], ch[B][32];
  for (int i = 0; i < B; i++) {
    memset(sigs[i], i, 65);
    memset(ch[i], i + 1, 32);
    v[i][0] = tg_abi_val_fixed(ch[i], 32);
    v[i][1] = tg_abi_val_u64(1000000u + (unsigned)i);
    v[i][2] = tg_abi_val_bytes(sigs[i], 65);
    tup[i] = tg_abi_val_list(v[i], 3);
  }
  tg_abi_value arr = tg_abi_val_list(tup, B), cargs = tg_abi_val_list(&arr, 1);
  tg_buf out;
  tg_buf_init(&out, 0);
  const long M = 20000;
  t0 = now();
  for (long i = 0; i < M; i++) {
    tg_buf_reset(&out);
    if (tg_abi_encode_call(&out, claim, &cargs)) return 1;
    sink ^= out.data[i % out.len];
  }
  t1 = now();
  printf("claim() of %d vouchers (%zu bytes), tg_abi_encode_call: %.2f us/op, %.0f MB/s\n", B,
         out.len, (t1 - t0) * 1e6 / M, (double)out.len * M / (t1 - t0) / 1e6);

  /* 4. strict decoding of the same calldata */
  t0 = now();
  for (long i = 0; i < M; i++) {
    tg_abi_tree *tree;
    if (tg_abi_decode(&tree, claim->inputs, out.data + 4, out.len - 4, TG_ABI_DECODE_CANONICAL))
      return 1;
    sink ^= (uint8_t)tree->root.items[0].count;
    tg_abi_tree_free(tree);
  }
  t1 = now();
  printf("claim() of %d vouchers, strict decode: %.2f us/op, %.0f MB/s\n", B, (t1 - t0) * 1e6 / M,
         (double)out.len * M / (t1 - t0) / 1e6);

  /* 5. signature parsing */
  const long P = 200000;
  t0 = now();
  for (long i = 0; i < P; i++) {
    tg_abi_sig *x;
    if (tg_abi_sig_parse(&x, TWA, strlen(TWA))) return 1;
    sink ^= (uint8_t)x->canonical_len;
    tg_abi_sig_free(x);
  }
  t1 = now();
  printf("signature parse+canonicalize (%s): %.0f ns/op\n", "transferWithAuthorization",
         (t1 - t0) * 1e9 / P);
  tg_buf_cleanup(&out);
  tg_abi_sig_free(twa);
  tg_abi_sig_free(claim);
  return 0;
}
