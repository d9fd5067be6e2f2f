/* secp256k1 keys and recoverable ECDSA signatures over 32-byte digests (libsecp256k1). */
#ifndef TOLLGATE_SECP_H
#define TOLLGATE_SECP_H

#include <stddef.h>
#include <stdint.h>

#include "tollgate/types.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Initialises libsodium and the process-wide libsecp256k1 context once
 * (thread-safe; every function below calls it). TG_ECRYPTO_INIT on failure.
 */
TG_WARN_UNUSED_RESULT int tg_secp_init(void);

/*
 * A private key. Allocate it with tg_seckey_new (libsodium guarded memory,
 * locked, wiped on free); never copy it into ordinary memory.
 */
typedef struct {
  uint8_t b[32];
} tg_seckey;

/* Guarded storage for one key, zeroed; NULL on failure. tg_seckey_free(NULL) is a no-op. */
tg_seckey *tg_seckey_new(void);
void tg_seckey_free(tg_seckey *key);

/* Loads 32 bytes, checking 0 < key < n (TG_ESECKEY). */
TG_WARN_UNUSED_RESULT int tg_seckey_set(tg_seckey *key, const uint8_t bytes[32]);
/* Loads "0x" + 64 hex digits (prefix optional); wipes its temporaries. */
TG_WARN_UNUSED_RESULT int tg_seckey_set_hex(tg_seckey *key, const char *hex, size_t len);
/* A fresh random key from libsodium's CSPRNG. */
TG_WARN_UNUSED_RESULT int tg_seckey_generate(tg_seckey *key);

/* The uncompressed public key without its 0x04 prefix (x || y). */
TG_WARN_UNUSED_RESULT int tg_seckey_pubkey(uint8_t pub[64], const tg_seckey *key);
/* The account address: the last 20 bytes of keccak256(x || y). */
TG_WARN_UNUSED_RESULT int tg_seckey_address(tg_address *out, const tg_seckey *key);
void tg_pubkey_to_address(tg_address *out, const uint8_t pub[64]);

/*
 * Signs a digest: RFC 6979 nonce, low-S (as libsecp256k1 always produces),
 * result r || s || v with v = 27 + recovery id. Thread-safe.
 */
TG_WARN_UNUSED_RESULT int tg_sign_digest(tg_sig *out, const tg_seckey *key, const tg_hash *digest);

/*
 * Recovers the signer of a digest. v may be 27/28 or 0/1; r and s must be in
 * [1, n-1] and s must be low (s <= n/2, TG_ESIG_HIGH_S otherwise).
 * Errors: TG_ESIG, TG_ESIG_HIGH_S, TG_ESIG_RECID, TG_ESIG_RECOVER.
 */
TG_WARN_UNUSED_RESULT int tg_recover_address(tg_address *out, const tg_hash *digest,
                                             const tg_sig *sig);
TG_WARN_UNUSED_RESULT int tg_recover_pubkey(uint8_t pub[64], const tg_hash *digest,
                                            const tg_sig *sig);

/* 0 when `expected` signed the digest; TG_ESIG_MISMATCH when someone else did; else as above. */
TG_WARN_UNUSED_RESULT int tg_verify_digest(const tg_address *expected, const tg_hash *digest,
                                           const tg_sig *sig);

/*
 * Reads a signature from bytes: 65 bytes r || s || v (v in 0, 1, 27, 28,
 * normalised to 27/28) or 64 bytes EIP-2098 compact (r || yParity<<255 | s).
 */
TG_WARN_UNUSED_RESULT int tg_sig_from_bytes(tg_sig *out, const uint8_t *p, size_t len);

/*
 * Splits a signature into r, s and the recovery id (0/1), checking ranges
 * and low-S. Used by transaction signing and the gateway's checks.
 */
TG_WARN_UNUSED_RESULT int tg_sig_split(const tg_sig *sig, tg_u256 *r, tg_u256 *s, int *recid);
/* The inverse: builds r || s || (27 + recid); checks ranges and low-S. */
TG_WARN_UNUSED_RESULT int tg_sig_join(tg_sig *out, const tg_u256 *r, const tg_u256 *s, int recid);

#ifdef __cplusplus
}
#endif
#endif
