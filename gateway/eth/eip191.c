/* EIP-191 personal messages: the "\x19Ethereum Signed Message:\n<len>" hash, signing and recovery. */
#include "tollgate/eip191.h"

#include <string.h>

#include "tollgate/keccak.h"

static const char prefix[] = "\x19" "Ethereum Signed Message:\n";

void tg_eip191_hash(tg_hash *out, const uint8_t *msg, size_t len) {
  /* Decimal length without printf: at most 20 digits for a size_t. */
  char digits[24];
  size_t n = 0;
  size_t v = len;
  do {
    digits[sizeof digits - 1 - n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  tg_keccak_ctx ctx;
  tg_keccak256_init(&ctx);
  tg_keccak256_update(&ctx, prefix, sizeof prefix - 1);
  tg_keccak256_update(&ctx, digits + sizeof digits - n, n);
  if (len) tg_keccak256_update(&ctx, msg, len);
  tg_keccak256_final(&ctx, out);
}

int tg_eip191_sign(tg_sig *out, const tg_seckey *key, const uint8_t *msg, size_t len) {
  if (!out) return TG_EINVAL;
  memset(out, 0, sizeof *out);
  if (!msg) return TG_EINVAL; /* missing data; an empty message is "" with len 0 */
  tg_hash h;
  tg_eip191_hash(&h, msg, len);
  return tg_sign_digest(out, key, &h);
}

int tg_eip191_recover(tg_address *out, const uint8_t *msg, size_t len, const tg_sig *sig) {
  if (!out) return TG_EINVAL;
  memset(out, 0, sizeof *out);
  if (!msg) return TG_EINVAL; /* missing data; an empty message is "" with len 0 */
  tg_hash h;
  tg_eip191_hash(&h, msg, len);
  return tg_recover_address(out, &h, sig);
}

int tg_eip191_verify(const tg_address *expected, const uint8_t *msg, size_t len,
                     const tg_sig *sig) {
  if (!msg) return TG_EINVAL;
  tg_hash h;
  tg_eip191_hash(&h, msg, len);
  return tg_verify_digest(expected, &h, sig);
}
