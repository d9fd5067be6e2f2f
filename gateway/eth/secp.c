/* secp256k1 keys, recoverable ECDSA signing and signer recovery, on libsecp256k1 and libsodium. */
#include "tollgate/secp.h"

#include <pthread.h>
#include <string.h>

#include <secp256k1.h>
#include <secp256k1_recovery.h>
#include <sodium.h>

#include "tollgate/hex.h"
#include "tollgate/keccak.h"

/*
 * One signing context for the process, created and randomized once (blinding
 * against side channels), then only ever passed as const: libsecp256k1 makes
 * const-context calls thread-safe. Recovery and verification need no
 * precomputed tables since 0.2, so they use secp256k1_context_static.
 */
static secp256k1_context *sign_ctx;
static int init_err = TG_ECRYPTO_INIT;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

/* The group order n and n/2, big-endian. */
static const uint8_t order_n[32] = {
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe,
    0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36, 0x41, 0x41};
static const uint8_t half_n[32] = {
    0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0x5d, 0x57, 0x6e, 0x73, 0x57, 0xa4, 0x50, 0x1d, 0xdf, 0xe9, 0x2f, 0x46, 0x68, 0x1b, 0x20, 0xa0};

static void init_once_fn(void) {
  if (sodium_init() < 0) return;
  secp256k1_selftest(); /* aborts if the library is miscompiled */
  secp256k1_context *ctx = secp256k1_context_create(SECP256K1_CONTEXT_NONE);
  if (!ctx) return;
  uint8_t seed[32];
  randombytes_buf(seed, sizeof seed);
  int ok = secp256k1_context_randomize(ctx, seed);
  sodium_memzero(seed, sizeof seed);
  if (!ok) {
    secp256k1_context_destroy(ctx);
    return;
  }
  sign_ctx = ctx;
  init_err = TG_OK;
}

int tg_secp_init(void) {
  if (pthread_once(&init_once, init_once_fn) != 0) return TG_ECRYPTO_INIT;
  return init_err;
}

/* Big-endian compare of two 32-byte values (public data: not constant-time). */
static int cmp32(const uint8_t *a, const uint8_t *b) {
  return memcmp(a, b, 32);
}

static int is_zero32(const uint8_t *a) {
  uint8_t acc = 0;
  for (int i = 0; i < 32; i++) acc |= a[i];
  return acc == 0;
}

tg_seckey *tg_seckey_new(void) {
  if (tg_secp_init() != 0) return NULL;
  tg_seckey *key = sodium_malloc(sizeof *key);
  if (!key) return NULL;
  sodium_memzero(key, sizeof *key);
  return key;
}

void tg_seckey_free(tg_seckey *key) {
  if (!key) return;
  sodium_memzero(key, sizeof *key);
  sodium_free(key);
}

int tg_seckey_set(tg_seckey *key, const uint8_t bytes[32]) {
  if (!key || !bytes) return TG_EINVAL;
  int rc = tg_secp_init();
  if (rc) return rc;
  if (!secp256k1_ec_seckey_verify(secp256k1_context_static, bytes)) {
    sodium_memzero(key->b, 32);
    return TG_ESECKEY;
  }
  memmove(key->b, bytes, 32);
  return TG_OK;
}

int tg_seckey_set_hex(tg_seckey *key, const char *hex, size_t len) {
  if (!key || (!hex && len)) return TG_EINVAL;
  uint8_t tmp[32];
  int rc = tg_hex_decode_exact(tmp, 32, hex, len);
  if (rc == 0) rc = tg_seckey_set(key, tmp);
  else rc = TG_ESECKEY;
  sodium_memzero(tmp, sizeof tmp);
  if (rc) sodium_memzero(key->b, 32);
  return rc;
}

int tg_seckey_generate(tg_seckey *key) {
  if (!key) return TG_EINVAL;
  int rc = tg_secp_init();
  if (rc) return rc;
  /* A random 256-bit value is >= n with probability ~2^-128; retry anyway. */
  for (int tries = 0; tries < 64; tries++) {
    randombytes_buf(key->b, 32);
    if (secp256k1_ec_seckey_verify(secp256k1_context_static, key->b)) return TG_OK;
  }
  sodium_memzero(key->b, 32);
  return TG_ERANDOM;
}

int tg_seckey_pubkey(uint8_t pub[64], const tg_seckey *key) {
  if (!pub) return TG_EINVAL;
  memset(pub, 0, 64);
  if (!key) return TG_EINVAL;
  int rc = tg_secp_init();
  if (rc) return rc;
  secp256k1_pubkey pk;
  if (!secp256k1_ec_pubkey_create(sign_ctx, &pk, key->b)) return TG_ESECKEY;
  uint8_t ser[65];
  size_t n = sizeof ser;
  if (!secp256k1_ec_pubkey_serialize(secp256k1_context_static, ser, &n, &pk,
                                     SECP256K1_EC_UNCOMPRESSED) ||
      n != 65)
    return TG_EINTERNAL;
  memcpy(pub, ser + 1, 64);
  return TG_OK;
}

void tg_pubkey_to_address(tg_address *out, const uint8_t pub[64]) {
  tg_hash h;
  tg_keccak256(&h, pub, 64);
  memcpy(out->b, h.b + 12, 20);
}

int tg_seckey_address(tg_address *out, const tg_seckey *key) {
  if (!out) return TG_EINVAL;
  memset(out, 0, sizeof *out);
  uint8_t pub[64];
  int rc = tg_seckey_pubkey(pub, key);
  if (rc) return rc;
  tg_pubkey_to_address(out, pub);
  return TG_OK;
}

int tg_sign_digest(tg_sig *out, const tg_seckey *key, const tg_hash *digest) {
  if (!out) return TG_EINVAL;
  memset(out, 0, sizeof *out);
  if (!key || !digest) return TG_EINVAL;
  int rc = tg_secp_init();
  if (rc) return rc;
  secp256k1_ecdsa_recoverable_signature rs;
  /* NULL nonce function: RFC 6979 deterministic nonces (what cast and ethers produce). */
  if (!secp256k1_ecdsa_sign_recoverable(sign_ctx, &rs, digest->b, key->b, NULL, NULL))
    return TG_ESECKEY;
  int recid = 0;
  if (!secp256k1_ecdsa_recoverable_signature_serialize_compact(secp256k1_context_static, out->b,
                                                               &recid, &rs) ||
      recid < 0 || recid > 1) {
    /* recid 2/3 (r >= p - n) has probability ~2^-127; Ethereum's v cannot express it. */
    memset(out, 0, sizeof *out);
    return TG_EINTERNAL;
  }
  out->b[64] = (uint8_t)(27 + recid);
  return TG_OK;
}

/* Range and low-S checks on r and s (each 32 bytes big-endian). */
static int check_rs(const uint8_t r[32], const uint8_t s[32]) {
  if (is_zero32(r) || is_zero32(s)) return TG_ESIG;
  if (cmp32(r, order_n) >= 0 || cmp32(s, order_n) >= 0) return TG_ESIG;
  if (cmp32(s, half_n) > 0) return TG_ESIG_HIGH_S;
  return TG_OK;
}

static int recid_of_v(uint8_t v, int *recid) {
  if (v == 0 || v == 1) *recid = v;
  else if (v == 27 || v == 28) *recid = v - 27;
  else return TG_ESIG_RECID;
  return TG_OK;
}

int tg_recover_pubkey(uint8_t pub[64], const tg_hash *digest, const tg_sig *sig) {
  if (!pub) return TG_EINVAL;
  memset(pub, 0, 64);
  if (!digest || !sig) return TG_EINVAL;
  int rc = tg_secp_init();
  if (rc) return rc;
  int recid;
  if ((rc = recid_of_v(sig->b[64], &recid)) != 0) return rc;
  /* The low-S policy is checked before any curve arithmetic. */
  if ((rc = check_rs(sig->b, sig->b + 32)) != 0) return rc;
  secp256k1_ecdsa_recoverable_signature rs;
  if (!secp256k1_ecdsa_recoverable_signature_parse_compact(secp256k1_context_static, &rs, sig->b,
                                                           recid))
    return TG_ESIG;
  secp256k1_pubkey pk;
  if (!secp256k1_ecdsa_recover(secp256k1_context_static, &pk, &rs, digest->b))
    return TG_ESIG_RECOVER;
  uint8_t ser[65];
  size_t n = sizeof ser;
  if (!secp256k1_ec_pubkey_serialize(secp256k1_context_static, ser, &n, &pk,
                                     SECP256K1_EC_UNCOMPRESSED) ||
      n != 65)
    return TG_EINTERNAL;
  memcpy(pub, ser + 1, 64);
  return TG_OK;
}

int tg_recover_address(tg_address *out, const tg_hash *digest, const tg_sig *sig) {
  if (!out) return TG_EINVAL;
  memset(out, 0, sizeof *out);
  uint8_t pub[64];
  int rc = tg_recover_pubkey(pub, digest, sig);
  if (rc) return rc;
  tg_pubkey_to_address(out, pub);
  return TG_OK;
}

int tg_verify_digest(const tg_address *expected, const tg_hash *digest, const tg_sig *sig) {
  if (!expected) return TG_EINVAL;
  tg_address got;
  int rc = tg_recover_address(&got, digest, sig);
  if (rc) return rc;
  return memcmp(got.b, expected->b, 20) == 0 ? TG_OK : TG_ESIG_MISMATCH;
}

int tg_sig_from_bytes(tg_sig *out, const uint8_t *p, size_t len) {
  if (!out) return TG_EINVAL;
  memset(out, 0, sizeof *out);
  if (!p && len) return TG_EINVAL;
  if (len == 65) {
    int recid;
    int rc = recid_of_v(p[64], &recid);
    if (rc) return rc;
    memcpy(out->b, p, 64);
    out->b[64] = (uint8_t)(27 + recid);
    return TG_OK;
  }
  if (len == 64) {
    /* EIP-2098: the top bit of the second word is yParity; the rest is s. */
    memcpy(out->b, p, 64);
    int parity = out->b[32] >> 7;
    out->b[32] &= 0x7f;
    out->b[64] = (uint8_t)(27 + parity);
    return TG_OK;
  }
  return TG_ESIG;
}

int tg_sig_split(const tg_sig *sig, tg_u256 *r, tg_u256 *s, int *recid) {
  if (r) memset(r, 0, sizeof *r);
  if (s) memset(s, 0, sizeof *s);
  if (recid) *recid = 0;
  if (!sig || !r || !s || !recid) return TG_EINVAL;
  int id;
  int rc = recid_of_v(sig->b[64], &id);
  if (rc) return rc;
  if ((rc = check_rs(sig->b, sig->b + 32)) != 0) return rc;
  memcpy(r->b, sig->b, 32);
  memcpy(s->b, sig->b + 32, 32);
  *recid = id;
  return TG_OK;
}

int tg_sig_join(tg_sig *out, const tg_u256 *r, const tg_u256 *s, int recid) {
  if (!out) return TG_EINVAL;
  memset(out, 0, sizeof *out);
  if (!r || !s) return TG_EINVAL;
  if (recid != 0 && recid != 1) return TG_ESIG_RECID;
  int rc = check_rs(r->b, s->b);
  if (rc) return rc;
  memcpy(out->b, r->b, 32);
  memcpy(out->b + 32, s->b, 32);
  out->b[64] = (uint8_t)(27 + recid);
  return TG_OK;
}
