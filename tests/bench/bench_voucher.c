/* Benchmark: EIP-712 voucher verification (fast-path digest + recovery) beside raw libsecp256k1 recovery. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <secp256k1.h>
#include <secp256k1_recovery.h>

#include "tollgate/eip712.h"
#include "tollgate/keccak.h"
#include "tollgate/secp.h"
#include "tollgate/u256.h"

#define NSIG 256

/*
 * Thread CPU time, not wall time: on a shared machine other processes steal
 * the CPU unevenly between the figures, which CPU time does not count.
 */
static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static tg_eip712_voucher vouchers[NSIG];
static tg_sig sigs[NSIG];
static tg_hash digests[NSIG];
static tg_hash ds;
static volatile uint8_t sink;

/* Runs `fn` over the prepared signatures for about `secs` CPU seconds; returns operations per CPU second. */
static double rate(void (*fn)(size_t), double secs) {
  size_t ops = 0;
  double t0 = now(), t;
  do {
    for (size_t i = 0; i < NSIG; i++) fn(i);
    ops += NSIG;
    t = now();
  } while (t - t0 < secs);
  return (double)ops / (t - t0);
}

/* Raw libsecp256k1, what an address check costs at the least: recover, serialize, keccak. */
static void raw_recover_address(size_t i) {
  secp256k1_ecdsa_recoverable_signature rs;
  secp256k1_pubkey pk;
  uint8_t ser[65];
  size_t n = sizeof ser;
  if (!secp256k1_ecdsa_recoverable_signature_parse_compact(secp256k1_context_static, &rs, sigs[i].b,
                                                           sigs[i].b[64] - 27) ||
      !secp256k1_ecdsa_recover(secp256k1_context_static, &pk, &rs, digests[i].b) ||
      !secp256k1_ec_pubkey_serialize(secp256k1_context_static, ser, &n, &pk,
                                     SECP256K1_EC_UNCOMPRESSED))
    abort();
  tg_hash h;
  tg_keccak256(&h, ser + 1, 64);
  sink ^= h.b[31];
}

/* Raw libsecp256k1 recovery alone (no serialization, no hash). */
static void raw_recover(size_t i) {
  secp256k1_ecdsa_recoverable_signature rs;
  secp256k1_pubkey pk;
  if (!secp256k1_ecdsa_recoverable_signature_parse_compact(secp256k1_context_static, &rs, sigs[i].b,
                                                           sigs[i].b[64] - 27) ||
      !secp256k1_ecdsa_recover(secp256k1_context_static, &pk, &rs, digests[i].b))
    abort();
  sink ^= pk.data[0];
}

/* The gateway's check: voucher digest on the fast path, then tg_recover_address (low-S, ranges). */
static void voucher_verify(size_t i) {
  tg_address who;
  if (tg_eip712_voucher_recover(&who, &ds, &vouchers[i], &sigs[i]) != 0) abort();
  sink ^= who.b[0];
}

static void voucher_digest(size_t i) {
  tg_hash h;
  if (tg_eip712_voucher_digest(&h, &ds, &vouchers[i]) != 0) abort();
  sink ^= h.b[0];
}

static char json_docs[NSIG][700];
static void json_digest(size_t i) {
  tg_hash h;
  if (tg_eip712_digest_json(&h, json_docs[i], strlen(json_docs[i])) != 0) abort();
  sink ^= h.b[0];
}

int main(int argc, char **argv) {
  double secs = argc > 1 ? atof(argv[1]) : 2.0; /* per figure, split over 5 rounds */
  tg_eip712_domain dom;
  memset(&dom, 0, sizeof dom);
  dom.fields = TG_EIP712_DOMAIN_STANDARD;
  dom.name = TG_STR_LIT("TollgateChannels");
  dom.version = TG_STR_LIT("1");
  tg_u256_from_u64(&dom.chain_id, 8453);
  memset(dom.verifying_contract.b, 0x5a, 20);
  if (tg_eip712_domain_separator(&ds, &dom) != 0) return 1;
  tg_seckey *key = tg_seckey_new();
  if (!key || tg_seckey_generate(key) != 0) return 1;
  for (size_t i = 0; i < NSIG; i++) {
    memset(vouchers[i].channel_id.b, (int)i, 32);
    tg_u256_from_u64(&vouchers[i].max_claimable_amount, 1000000ull * (i + 1));
    if (tg_eip712_voucher_sign(&sigs[i], key, &ds, &vouchers[i]) != 0 ||
        tg_eip712_voucher_digest(&digests[i], &ds, &vouchers[i]) != 0)
      return 1;
    snprintf(json_docs[i], sizeof json_docs[i],
             "{\"types\":{\"EIP712Domain\":[{\"name\":\"name\",\"type\":\"string\"},{\"name\":"
             "\"version\",\"type\":\"string\"},{\"name\":\"chainId\",\"type\":\"uint256\"},"
             "{\"name\":\"verifyingContract\",\"type\":\"address\"}],\"Voucher\":[{\"name\":"
             "\"channelId\",\"type\":\"bytes32\"},{\"name\":\"maxClaimableAmount\",\"type\":"
             "\"uint128\"}]},\"primaryType\":\"Voucher\",\"domain\":{\"name\":\"TollgateChannels\","
             "\"version\":\"1\",\"chainId\":8453,\"verifyingContract\":"
             "\"0x5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a\"},\"message\":{\"channelId\":"
             "\"0x%064x\",\"maxClaimableAmount\":%llu}}",
             (unsigned)i, (unsigned long long)(1000000ull * (i + 1)));
  }
  tg_seckey_free(key);
  /* The JSON documents must hash to the fast path's digests (they differ only where %064x does). */
  tg_hash h;
  if (tg_eip712_digest_json(&h, json_docs[0], strlen(json_docs[0])) != 0) return 1;
  if (memcmp(h.b, digests[0].b, 32) != 0) {
    fprintf(stderr, "bench_voucher: JSON and fast path disagree\n");
    return 1;
  }
  /* Interleaved rounds, best of each, so that remaining noise (caches, frequency) hits all alike. */
  double d_fast = 0, d_json = 0, raw = 0, raw_addr = 0, ver = 0;
  for (int r = 0; r < 5; r++) {
    double x;
    if ((x = rate(voucher_digest, secs / 10)) > d_fast) d_fast = x;
    if ((x = rate(json_digest, secs / 10)) > d_json) d_json = x;
    if ((x = rate(raw_recover, secs / 5)) > raw) raw = x;
    if ((x = rate(raw_recover_address, secs / 5)) > raw_addr) raw_addr = x;
    if ((x = rate(voucher_verify, secs / 5)) > ver) ver = x;
  }
  printf("(operations per CPU second, best of 5 interleaved rounds)\n");
  printf("voucher digest, fast path (no JSON):          %12.0f /s\n", d_fast);
  printf("voucher digest, typed-data JSON path:         %12.0f /s\n", d_json);
  printf("raw libsecp256k1 recover (parse + recover):   %12.0f /s\n", raw);
  printf("raw recover + serialize + keccak (address):   %12.0f /s\n", raw_addr);
  printf("voucher verify (fast digest + recover addr):  %12.0f /s\n", ver);
  printf("ratio voucher verify / raw recover:           %12.2f (goal >= 0.90)\n", ver / raw);
  printf("ratio voucher verify / raw recover+address:   %12.2f\n", ver / raw_addr);
  return 0;
}
