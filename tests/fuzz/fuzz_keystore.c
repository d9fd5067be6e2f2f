/* libFuzzer driver: keystore v3 JSON parsing and the whole decryption path, under tiny KDF caps. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate/keystore.h"
#include "tollgate/secp.h"

/*
 * Input: [password bytes] NUL [keystore JSON]; without a NUL in the first 64
 * bytes the whole input is the JSON and the password is empty. The caps keep
 * every KDF call to microseconds (scrypt N*r*p <= 64, PBKDF2 <= 16 rounds).
 */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static tg_seckey *key;
  if (!key && !(key = tg_seckey_new())) abort();
  const char *pw = "";
  size_t pwlen = 0;
  const uint8_t *nul = memchr(data, 0, size < 64 ? size : 64);
  if (nul) {
    pw = (const char *)data;
    pwlen = (size_t)(nul - data);
    size -= pwlen + 1;
    data = nul + 1;
  }
  tg_keystore_limits lim;
  tg_keystore_limits_default(&lim);
  lim.scrypt_max_mem = 128 * 8 * 16;
  lim.scrypt_max_work = 64;
  lim.pbkdf2_max_iter = 16;
  lim.scrypt_allow_rfc7914_violation = (int)(size & 1);
  int rc = tg_keystore_decrypt(key, (const char *)data, size, pw, pwlen, &lim);
  if (rc == 0) {
    /* Whatever decrypts is a valid key with an address. */
    tg_address a;
    if (tg_seckey_address(&a, key) != 0) abort();
  } else {
    static const uint8_t zero[32];
    if (rc > 0 || memcmp(key->b, zero, 32) != 0) abort(); /* wiped on failure */
  }
  return 0;
}
