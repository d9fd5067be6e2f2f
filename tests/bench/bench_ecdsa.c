/* Benchmark: ECDSA sign/s and recover/s through tollgate beside raw libsecp256k1 calls on the same digests. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <secp256k1.h>
#include <secp256k1_recovery.h>

#include "tollgate/keccak.h"
#include "tollgate/secp.h"

#define NDIG 256

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static tg_hash digests[NDIG];
static tg_sig sigs[NDIG];
static volatile uint8_t sink;

typedef int (*op_fn)(size_t i);

/* Runs op over the digests for about `secs` seconds; returns operations per second. */
static double rate_once(op_fn op, double secs) {
  uint64_t n = 0;
  double t0 = now(), t;
  do {
    for (size_t i = 0; i < NDIG; i++, n++)
      if (op(i) != 0) {
        fprintf(stderr, "bench_ecdsa: operation failed\n");
        exit(1);
      }
    t = now();
  } while (t - t0 < secs);
  return (double)n / (t - t0);
}

/* The best of five runs, interleaving nothing: on a shared machine the best run is the least disturbed. */
static double rate(op_fn op, double secs) {
  double best = 0;
  for (int i = 0; i < 5; i++) {
    double r = rate_once(op, secs / 5);
    if (r > best) best = r;
  }
  return best;
}

static tg_seckey *key;
static secp256k1_context *raw_ctx;

static int tg_sign_op(size_t i) {
  tg_sig s;
  int rc = tg_sign_digest(&s, key, &digests[i]);
  sink ^= s.b[0];
  return rc;
}

static int raw_sign_op(size_t i) {
  secp256k1_ecdsa_recoverable_signature rs;
  uint8_t out[64];
  int recid;
  if (!secp256k1_ecdsa_sign_recoverable(raw_ctx, &rs, digests[i].b, key->b, NULL, NULL)) return -1;
  secp256k1_ecdsa_recoverable_signature_serialize_compact(raw_ctx, out, &recid, &rs);
  sink ^= out[0];
  return 0;
}

static int tg_recover_pub_op(size_t i) {
  uint8_t pub[64];
  int rc = tg_recover_pubkey(pub, &digests[i], &sigs[i]);
  sink ^= pub[0];
  return rc;
}

static int tg_recover_addr_op(size_t i) {
  tg_address a;
  int rc = tg_recover_address(&a, &digests[i], &sigs[i]);
  sink ^= a.b[0];
  return rc;
}

/* The same work tg_recover_pubkey does, minus its range and low-S checks. */
static int raw_recover_op(size_t i) {
  secp256k1_ecdsa_recoverable_signature rs;
  secp256k1_pubkey pk;
  uint8_t ser[65];
  size_t n = sizeof ser;
  if (!secp256k1_ecdsa_recoverable_signature_parse_compact(secp256k1_context_static, &rs,
                                                           sigs[i].b, sigs[i].b[64] - 27) ||
      !secp256k1_ecdsa_recover(secp256k1_context_static, &pk, &rs, digests[i].b))
    return -1;
  secp256k1_ec_pubkey_serialize(secp256k1_context_static, ser, &n, &pk, SECP256K1_EC_UNCOMPRESSED);
  sink ^= ser[1];
  return 0;
}

int main(int argc, char **argv) {
  double secs = argc > 1 ? strtod(argv[1], NULL) : 1.0;
  key = tg_seckey_new();
  if (!key || tg_seckey_generate(key) != 0) return 1;
  raw_ctx = secp256k1_context_create(SECP256K1_CONTEXT_NONE);
  for (size_t i = 0; i < NDIG; i++) {
    uint64_t v = i;
    tg_keccak256(&digests[i], &v, sizeof v);
    if (tg_sign_digest(&sigs[i], key, &digests[i]) != 0) return 1;
  }
  double ts = rate(tg_sign_op, secs), rs = rate(raw_sign_op, secs);
  double tp = rate(tg_recover_pub_op, secs), ta = rate(tg_recover_addr_op, secs);
  double rr = rate(raw_recover_op, secs);
  printf("%-34s %12s %12s %7s\n", "operation (256 digests)", "tollgate/s", "raw/s", "ratio");
  printf("%-34s %12.0f %12.0f %7.3f\n", "sign (RFC 6979, recoverable)", ts, rs, ts / rs);
  printf("%-34s %12.0f %12.0f %7.3f\n", "recover public key", tp, rr, tp / rr);
  printf("%-34s %12.0f %12.0f %7.3f\n", "recover address (+ keccak)", ta, rr, ta / rr);
  secp256k1_context_destroy(raw_ctx);
  tg_seckey_free(key);
  return 0;
}
