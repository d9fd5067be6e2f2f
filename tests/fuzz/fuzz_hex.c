/* libFuzzer driver: hex decoding of arbitrary bytes, with every flag combination. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate/hex.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint8_t out[512];
  for (unsigned flags = 0; flags < 4; flags++) {
    size_t n;
    if (tg_hex_decode(out, sizeof out, &n, (const char *)data, size, flags) == 0) {
      /* Whatever decodes must encode back to the same digits (modulo case and prefix). */
      char *again = malloc(2 * n + 3);
      tg_hex_encode(again, out, n, 0);
      const char *p = (const char *)data;
      size_t len = size;
      if (len >= 2 && p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) p += 2, len -= 2;
      size_t off = (len & 1) ? 1 : 0; /* odd input: a leading 0 was implied */
      if (strlen(again) != len + off) abort();
      for (size_t i = 0; i < len; i++)
        if (tg_hex_digit((unsigned char)p[i]) != tg_hex_digit((unsigned char)again[i + off])) abort();
      free(again);
    }
  }
  tg_buf b;
  tg_buf_init(&b, 1024);
  if (tg_hex_decode_buf(&b, (const char *)data, size, TG_HEX_ALLOW_ODD) == 0 && b.len > 1024) abort();
  tg_buf_cleanup(&b);
  return 0;
}
