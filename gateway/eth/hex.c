/* Hex: strict decoding of untrusted hex strings and lower-case encoding. */
#include <stdlib.h>
#include <string.h>

#include "tollgate/hex.h"

static const signed char hexval[256] = {
    ['0'] = 1,  ['1'] = 2,  ['2'] = 3,  ['3'] = 4,  ['4'] = 5,  ['5'] = 6,
    ['6'] = 7,  ['7'] = 8,  ['8'] = 9,  ['9'] = 10, ['a'] = 11, ['b'] = 12,
    ['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16, ['A'] = 11, ['B'] = 12,
    ['C'] = 13, ['D'] = 14, ['E'] = 15, ['F'] = 16,
};

int tg_hex_digit(int c) {
  if (c < 0 || c > 255) return -1;
  return hexval[c] - 1;
}

static int has_prefix(const char *hex, size_t len) {
  return len >= 2 && hex[0] == '0' && (hex[1] == 'x' || hex[1] == 'X');
}

int tg_hex_decode(uint8_t *out, size_t outcap, size_t *outlen, const char *hex, size_t len,
                  unsigned flags) {
  *outlen = 0;
  if (has_prefix(hex, len)) {
    hex += 2;
    len -= 2;
  } else if (flags & TG_HEX_PREFIX_REQUIRED) {
    return TG_EHEX_PREFIX;
  }
  int odd = (int)(len & 1);
  if (odd && !(flags & TG_HEX_ALLOW_ODD)) return TG_EHEX_ODD;
  size_t n = (len + 1) / 2;
  if (n > outcap) return TG_EBUFSIZE;
  size_t i = 0, o = 0;
  if (odd) {
    int v = tg_hex_digit((unsigned char)hex[0]);
    if (v < 0) return TG_EHEX;
    out[o++] = (uint8_t)v;
    i = 1;
  }
  for (; i < len; i += 2) {
    int hi = tg_hex_digit((unsigned char)hex[i]);
    int lo = tg_hex_digit((unsigned char)hex[i + 1]);
    if ((hi | lo) < 0) {
      memset(out, 0, o);
      return TG_EHEX;
    }
    out[o++] = (uint8_t)(hi << 4 | lo);
  }
  *outlen = o;
  return TG_OK;
}

int tg_hex_decode_buf(tg_buf *out, const char *hex, size_t len, unsigned flags) {
  size_t digits = has_prefix(hex, len) ? len - 2 : len;
  int rc = tg_buf_reserve(out, (digits + 1) / 2);
  if (rc) return rc;
  size_t n;
  rc = tg_hex_decode(out->data + out->len, out->cap - out->len - 1, &n, hex, len, flags);
  if (rc) return rc;
  out->len += n;
  out->data[out->len] = 0;
  return TG_OK;
}

int tg_hex_decode_exact(uint8_t *out, size_t n, const char *hex, size_t len) {
  size_t digits = has_prefix(hex, len) ? len - 2 : len;
  if (digits != 2 * n) return digits & 1 ? TG_EHEX_ODD : TG_ERANGE;
  size_t got;
  return tg_hex_decode(out, n, &got, hex, len, TG_HEX_PREFIX_OPTIONAL);
}

void tg_hex_encode(char *out, const uint8_t *data, size_t len, int prefix) {
  static const char digits[] = "0123456789abcdef";
  if (prefix) {
    *out++ = '0';
    *out++ = 'x';
  }
  for (size_t i = 0; i < len; i++) {
    *out++ = digits[data[i] >> 4];
    *out++ = digits[data[i] & 15];
  }
  *out = 0;
}

int tg_hex_encode_buf(tg_buf *out, const uint8_t *data, size_t len, int prefix) {
  if (len > (SIZE_MAX - 3) / 2) return TG_ETOOBIG;
  int rc = tg_buf_reserve(out, 2 * len + 2);
  if (rc) return rc;
  tg_hex_encode((char *)out->data + out->len, data, len, prefix);
  out->len += 2 * len + (prefix ? 2 : 0);
  return TG_OK;
}

char *tg_hex_dup(const uint8_t *data, size_t len) {
  if (len > (SIZE_MAX - 3) / 2) return NULL;
  char *s = malloc(2 * len + 3);
  if (s) tg_hex_encode(s, data, len, 1);
  return s;
}
