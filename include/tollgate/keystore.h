/* Ethereum keystore v3 (Web3 Secret Storage, as geth and Foundry write it): decrypt, encrypt, files. */
#ifndef TOLLGATE_KEYSTORE_H
#define TOLLGATE_KEYSTORE_H

#include <stddef.h>
#include <stdint.h>

#include "tollgate/secp.h"
#include "tollgate/types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Keystore files are small; anything larger is refused (TG_ETOOBIG). */
#define TG_KEYSTORE_MAX_JSON 65536
/* "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx" + NUL */
#define TG_KEYSTORE_UUID_LEN 37

/* Foundry's `cast wallet new/import` parameters (scrypt n=8192, r=8, p=1: 8 MiB, ~30 ms). */
#define TG_KEYSTORE_SCRYPT_N 8192u
#define TG_KEYSTORE_SCRYPT_R 8u
#define TG_KEYSTORE_SCRYPT_P 1u

/*
 * Caps on the work an untrusted keystore may ask for (TG_EKEYSTORE_KDF past
 * them). The defaults admit every real-world keystore: geth's "standard"
 * scrypt (n=2^18, r=8, p=1: 256 MiB) and pbkdf2 c=262144.
 */
typedef struct {
  uint64_t scrypt_max_mem;   /* 128 * r * N bytes; default 512 MiB */
  uint64_t scrypt_max_work;  /* N * r * p; default 2^23 (4x geth's standard) */
  uint32_t pbkdf2_max_iter;  /* default 2^24 */
  /*
   * RFC 7914 requires N < 2^(16 r). Foundry cast, ethers/viem and OpenSSL
   * enforce it, so by default we do too (cast byte-compatible behaviour);
   * go-ethereum does not, and its old wiki vector (N=2^18, r=1) needs this
   * set to 1. Default 0.
   */
  int scrypt_allow_rfc7914_violation;
} tg_keystore_limits;

/* The defaults above. */
void tg_keystore_limits_default(tg_keystore_limits *out);

/* Encryption parameters (scrypt only: that is what cast and geth write). */
typedef struct {
  uint64_t n; /* power of two, >= 2 */
  uint32_t r;
  uint32_t p;
} tg_keystore_params;

/*
 * Decrypts a keystore v3 JSON document with a password (bytes, any length,
 * not NUL-terminated). Accepts kdf "scrypt" and "pbkdf2" (prf hmac-sha256),
 * cipher "aes-128-ctr", "crypto" or "Crypto". Plaintexts shorter than 32
 * bytes (keys whose leading zero bytes an old encoder dropped: geth's 30/31
 * byte vectors) are left-padded, as geth and cast do. When the file has an
 * "address", it must match the key (TG_EKEYSTORE_ADDRESS).
 * limits NULL = defaults. The key is wiped on failure.
 * Errors: TG_EKEYSTORE, TG_EKEYSTORE_VERSION, TG_EKEYSTORE_CIPHER,
 * TG_EKEYSTORE_KDF, TG_EKEYSTORE_MAC (wrong password), TG_ESECKEY, TG_ETOOBIG, TG_EJSON.
 */
TG_WARN_UNUSED_RESULT int tg_keystore_decrypt(tg_seckey *key, const char *json, size_t json_len,
                                              const char *password, size_t password_len,
                                              const tg_keystore_limits *limits);

/* Reads a file (at most TG_KEYSTORE_MAX_JSON bytes) and decrypts it. TG_EIO, TG_ENOTFOUND. */
TG_WARN_UNUSED_RESULT int tg_keystore_decrypt_file(tg_seckey *key, const char *path,
                                                   const char *password, size_t password_len,
                                                   const tg_keystore_limits *limits);

/*
 * Encrypts a key into keystore v3 JSON appended to `out` (one line, no
 * newline, cast's field order plus geth's "address"): scrypt with a fresh
 * 32-byte salt, AES-128-CTR with a fresh IV, a random UUID v4 id (copied to
 * `id` when non-NULL). params NULL = n 8192, r 8, p 1. The parameters must
 * pass the default limits. The derived key is wiped.
 */
TG_WARN_UNUSED_RESULT int tg_keystore_encrypt(tg_buf *out, char id[TG_KEYSTORE_UUID_LEN],
                                              const tg_seckey *key, const char *password,
                                              size_t password_len,
                                              const tg_keystore_params *params);

/*
 * Writes `len` bytes to `path` atomically with mode 0600: a temporary file in
 * the same directory, fsync, then link (no overwrite: TG_EEXISTS when the
 * path exists) or rename (overwrite != 0). TG_EIO on other failures.
 */
TG_WARN_UNUSED_RESULT int tg_keystore_write_file(const char *path, const void *data, size_t len,
                                                 int overwrite);

/* A random UUID v4 in lower-case text. */
TG_WARN_UNUSED_RESULT int tg_uuid_v4(char out[TG_KEYSTORE_UUID_LEN]);

#ifdef __cplusplus
}
#endif
#endif
