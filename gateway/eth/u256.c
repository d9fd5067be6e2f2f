/* 256-bit unsigned arithmetic on four 64-bit limbs, stored as EVM big-endian words. */
#include <string.h>

#include "tollgate/hex.h"
#include "tollgate/u256.h"

typedef struct {
  uint64_t w[4]; /* little-endian limbs: w[0] is the least significant */
} limbs;

static void to_limbs(limbs *l, const tg_u256 *a) {
  for (int i = 0; i < 4; i++) {
    uint64_t v = 0;
    const uint8_t *p = a->b + 8 * (3 - i);
    for (int j = 0; j < 8; j++) v = v << 8 | p[j];
    l->w[i] = v;
  }
}

static void from_limbs(tg_u256 *a, const limbs *l) {
  for (int i = 0; i < 4; i++) {
    uint64_t v = l->w[i];
    uint8_t *p = a->b + 8 * (3 - i);
    for (int j = 7; j >= 0; j--) {
      p[j] = (uint8_t)v;
      v >>= 8;
    }
  }
}

void tg_u256_zero(tg_u256 *out) {
  memset(out->b, 0, 32);
}

void tg_u256_from_u64(tg_u256 *out, uint64_t v) {
  memset(out->b, 0, 24);
  for (int j = 31; j >= 24; j--) {
    out->b[j] = (uint8_t)v;
    v >>= 8;
  }
}

int tg_u256_to_u64(const tg_u256 *a, uint64_t *out) {
  for (int i = 0; i < 24; i++)
    if (a->b[i]) return TG_EOVERFLOW;
  uint64_t v = 0;
  for (int i = 24; i < 32; i++) v = v << 8 | a->b[i];
  *out = v;
  return TG_OK;
}

int tg_u256_is_zero(const tg_u256 *a) {
  uint8_t acc = 0;
  for (int i = 0; i < 32; i++) acc |= a->b[i];
  return acc == 0;
}

int tg_u256_cmp(const tg_u256 *a, const tg_u256 *b) {
  int c = memcmp(a->b, b->b, 32);
  return (c > 0) - (c < 0);
}

int tg_u256_add(tg_u256 *out, const tg_u256 *a, const tg_u256 *b) {
  limbs x, y;
  to_limbs(&x, a);
  to_limbs(&y, b);
  unsigned __int128 carry = 0;
  for (int i = 0; i < 4; i++) {
    carry += (unsigned __int128)x.w[i] + y.w[i];
    x.w[i] = (uint64_t)carry;
    carry >>= 64;
  }
  from_limbs(out, &x);
  return carry ? TG_EOVERFLOW : TG_OK;
}

int tg_u256_sub(tg_u256 *out, const tg_u256 *a, const tg_u256 *b) {
  limbs x, y;
  to_limbs(&x, a);
  to_limbs(&y, b);
  uint64_t borrow = 0;
  for (int i = 0; i < 4; i++) {
    uint64_t d = x.w[i] - y.w[i];
    uint64_t b1 = x.w[i] < y.w[i];
    uint64_t d2 = d - borrow;
    uint64_t b2 = d < borrow;
    x.w[i] = d2;
    borrow = b1 | b2;
  }
  from_limbs(out, &x);
  return borrow ? TG_EUNDERFLOW : TG_OK;
}

int tg_u256_mul(tg_u256 *out, const tg_u256 *a, const tg_u256 *b) {
  limbs x, y;
  uint64_t r[8] = {0};
  to_limbs(&x, a);
  to_limbs(&y, b);
  for (int i = 0; i < 4; i++) {
    unsigned __int128 carry = 0;
    for (int j = 0; j < 4; j++) {
      carry += (unsigned __int128)x.w[i] * y.w[j] + r[i + j];
      r[i + j] = (uint64_t)carry;
      carry >>= 64;
    }
    r[i + 4] = (uint64_t)carry;
  }
  limbs z = {{r[0], r[1], r[2], r[3]}};
  from_limbs(out, &z);
  return (r[4] | r[5] | r[6] | r[7]) ? TG_EOVERFLOW : TG_OK;
}

int tg_u256_add_u64(tg_u256 *out, const tg_u256 *a, uint64_t b) {
  tg_u256 t;
  tg_u256_from_u64(&t, b);
  return tg_u256_add(out, a, &t);
}

int tg_u256_mul_u64(tg_u256 *out, const tg_u256 *a, uint64_t b) {
  limbs x;
  to_limbs(&x, a);
  unsigned __int128 carry = 0;
  for (int i = 0; i < 4; i++) {
    carry += (unsigned __int128)x.w[i] * b;
    x.w[i] = (uint64_t)carry;
    carry >>= 64;
  }
  from_limbs(out, &x);
  return carry ? TG_EOVERFLOW : TG_OK;
}

int tg_u256_divmod_u64(tg_u256 *q, uint64_t *rem, const tg_u256 *a, uint64_t d) {
  if (d == 0) return TG_EDIVZERO;
  limbs x;
  to_limbs(&x, a);
  unsigned __int128 r = 0;
  for (int i = 3; i >= 0; i--) {
    r = r << 64 | x.w[i];
    x.w[i] = (uint64_t)(r / d);
    r %= d;
  }
  if (q) from_limbs(q, &x);
  if (rem) *rem = (uint64_t)r;
  return TG_OK;
}

void tg_u256_neg(tg_u256 *out, const tg_u256 *a) {
  tg_u256 z;
  tg_u256_zero(&z);
  if (tg_u256_sub(out, &z, a) != TG_OK) {
    /* 0 - a underflows for every a > 0: the wrapped result is the negation */
  }
}

int tg_u256_parse_dec(tg_u256 *out, const char *s, size_t len) {
  tg_u256_zero(out);
  if (len == 0) return TG_ENUMBER;
  tg_u256 acc;
  tg_u256_zero(&acc);
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9') return TG_ENUMBER;
    if (tg_u256_mul_u64(&acc, &acc, 10) || tg_u256_add_u64(&acc, &acc, (uint64_t)(s[i] - '0')))
      return TG_EOVERFLOW;
  }
  *out = acc;
  return TG_OK;
}

int tg_u256_parse_hex(tg_u256 *out, const char *s, size_t len) {
  tg_u256_zero(out);
  if (len >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) s += 2, len -= 2;
  if (len == 0) return TG_EHEX;
  while (len > 64 && *s == '0') s++, len--; /* redundant leading zeros are harmless */
  if (len > 64) return TG_EOVERFLOW;
  tg_u256 acc;
  tg_u256_zero(&acc);
  for (size_t i = 0; i < len; i++) {
    int v = tg_hex_digit((unsigned char)s[i]);
    if (v < 0) return TG_EHEX;
    size_t pos = 63 - (len - 1 - i); /* nibble index from the most significant */
    acc.b[pos / 2] |= (uint8_t)(pos & 1 ? v : v << 4);
  }
  *out = acc;
  return TG_OK;
}

int tg_u256_parse(tg_u256 *out, const char *s, size_t len) {
  if (len >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) return tg_u256_parse_hex(out, s, len);
  return tg_u256_parse_dec(out, s, len);
}

size_t tg_u256_to_dec(const tg_u256 *a, char out[TG_U256_DEC_MAX]) {
  char tmp[TG_U256_DEC_MAX];
  size_t n = 0;
  static const uint8_t zero24[24];
  if (memcmp(a->b, zero24, sizeof zero24) == 0) { /* below 2^64, as most amounts: no division of 256 bits */
    uint64_t v = 0;
    for (int i = 24; i < 32; i++) v = v << 8 | a->b[i];
    do {
      tmp[n++] = (char)('0' + v % 10);
      v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
    out[n] = 0;
    return n;
  }
  tg_u256 x = *a;
  /* 19 decimal digits per division keeps this to five 128-by-64 passes. */
  do {
    uint64_t rem;
    if (tg_u256_divmod_u64(&x, &rem, &x, 10000000000000000000ULL) != TG_OK) break;
    int zero = tg_u256_is_zero(&x);
    for (int k = 0; k < 19 && (rem || !zero || k == 0); k++) {
      tmp[n++] = (char)('0' + rem % 10);
      rem /= 10;
      if (zero && rem == 0) break;
    }
  } while (!tg_u256_is_zero(&x));
  for (size_t i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
  out[n] = 0;
  return n;
}

size_t tg_u256_to_hex(const tg_u256 *a, char out[TG_U256_HEX_MAX]) {
  static const char digits[] = "0123456789abcdef";
  size_t n = 0;
  out[n++] = '0';
  out[n++] = 'x';
  int started = 0;
  for (int i = 0; i < 64; i++) {
    int v = (a->b[i / 2] >> (i & 1 ? 0 : 4)) & 15;
    if (!started && v == 0 && i != 63) continue;
    started = 1;
    out[n++] = digits[v];
  }
  out[n] = 0;
  return n;
}

int tg_u256_from_be(tg_u256 *out, const uint8_t *p, size_t len) {
  while (len > 32 && *p == 0) p++, len--;
  if (len > 32) return TG_EOVERFLOW;
  memset(out->b, 0, 32 - len);
  if (len) memcpy(out->b + 32 - len, p, len);
  return TG_OK;
}

const uint8_t *tg_u256_min_be(const tg_u256 *a, size_t *len) {
  size_t i = 0;
  while (i < 32 && a->b[i] == 0) i++;
  *len = 32 - i;
  return a->b + i;
}
