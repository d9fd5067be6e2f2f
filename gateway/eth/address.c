/* Ethereum addresses: parsing with EIP-55 checksum enforcement, and lower-case and checksummed formatting. */
#include "tollgate/address.h"

#include <string.h>

#include "tollgate/hex.h"
#include "tollgate/keccak.h"

static const char lower_digits[] = "0123456789abcdef";

/* 40 lower-case digits (no prefix, no NUL) of the address. */
static void lower_hex40(char out[40], const tg_address *a) {
  for (int i = 0; i < 20; i++) {
    out[2 * i] = lower_digits[a->b[i] >> 4];
    out[2 * i + 1] = lower_digits[a->b[i] & 15];
  }
}

/* EIP-55: a letter is upper case when the matching nibble of keccak256(lower hex) is >= 8. */
static void checksum_hex40(char out[40], const tg_address *a) {
  lower_hex40(out, a);
  tg_hash h;
  tg_keccak256(&h, out, 40);
  for (int i = 0; i < 40; i++) {
    int nib = (i & 1) ? (h.b[i / 2] & 15) : (h.b[i / 2] >> 4);
    if (out[i] >= 'a' && nib >= 8) out[i] = (char)(out[i] - 'a' + 'A');
  }
}

int tg_address_parse(tg_address *out, const char *s, size_t len) {
  if (!out) return TG_EINVAL;
  memset(out, 0, sizeof *out);
  if (!s) return TG_EADDRESS;
  if (len >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) s += 2, len -= 2;
  if (len != 40) return TG_EADDRESS;
  int upper = 0, lower = 0;
  for (size_t i = 0; i < 40; i++) {
    int d = tg_hex_digit((unsigned char)s[i]);
    if (d < 0) return TG_EADDRESS;
    if (s[i] >= 'a' && s[i] <= 'f') lower = 1;
    if (s[i] >= 'A' && s[i] <= 'F') upper = 1;
    if (i & 1) out->b[i / 2] |= (uint8_t)d;
    else out->b[i / 2] = (uint8_t)(d << 4);
  }
  if (upper && lower) {
    /* The checksum is a function of the 40 characters alone: the last few mixed-case strings
     * that passed are kept per thread (a payment header names the same asset, payTo and
     * channel addresses on every call), sparing a keccak each. Failures are not kept. */
    static _Thread_local char seen[8][40];
    static _Thread_local unsigned seen_n, seen_next;
    for (unsigned i = 0; i < seen_n; i++)
      if (memcmp(seen[i], s, 40) == 0) return TG_OK;
    char want[40];
    checksum_hex40(want, out);
    if (memcmp(want, s, 40) != 0) {
      memset(out, 0, sizeof *out);
      return TG_ECHECKSUM;
    }
    memcpy(seen[seen_next], s, 40);
    seen_next = (seen_next + 1) % 8;
    if (seen_n < 8) seen_n++;
  }
  return TG_OK;
}

void tg_address_to_checksum(const tg_address *a, char out[TG_ADDRESS_HEX_LEN]) {
  out[0] = '0';
  out[1] = 'x';
  checksum_hex40(out + 2, a);
  out[42] = 0;
}

void tg_address_to_hex(const tg_address *a, char out[TG_ADDRESS_HEX_LEN]) {
  out[0] = '0';
  out[1] = 'x';
  lower_hex40(out + 2, a);
  out[42] = 0;
}

int tg_address_is_zero(const tg_address *a) {
  uint8_t acc = 0;
  for (int i = 0; i < 20; i++) acc |= a->b[i];
  return acc == 0;
}

int tg_address_eq(const tg_address *a, const tg_address *b) {
  return memcmp(a->b, b->b, 20) == 0;
}
