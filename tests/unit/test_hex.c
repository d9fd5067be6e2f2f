/* Hex decoding is strict about digits, prefixes, lengths and buffer sizes. */
#include <stdlib.h>

#include "tg_test.h"
#include "tollgate/hex.h"

static void test_roundtrip(void) {
  uint8_t all[256];
  for (int i = 0; i < 256; i++) all[i] = (uint8_t)i;
  char hex[2 * 256 + 3];
  tg_hex_encode(hex, all, 256, 1);
  CHECK(strncmp(hex, "0x000102", 8) == 0);
  uint8_t back[256];
  size_t n;
  CHECK_OK(tg_hex_decode(back, sizeof back, &n, hex, strlen(hex), TG_HEX_PREFIX_REQUIRED));
  CHECK_INT(n, 256);
  CHECK_MEM(back, all, 256);
}

static void test_rejects(void) {
  uint8_t out[8];
  size_t n;
  CHECK_ERR(tg_hex_decode(out, 8, &n, "0xabc", 5, 0), TG_EHEX_ODD);
  CHECK_ERR(tg_hex_decode(out, 8, &n, "0xzz", 4, 0), TG_EHEX);
  CHECK_ERR(tg_hex_decode(out, 8, &n, "ab", 2, TG_HEX_PREFIX_REQUIRED), TG_EHEX_PREFIX);
  CHECK_ERR(tg_hex_decode(out, 2, &n, "0x001122", 8, 0), TG_EBUFSIZE);
  CHECK_ERR(tg_hex_decode(out, 8, &n, "0x0 ", 4, 0), TG_EHEX);
  CHECK_ERR(tg_hex_decode(out, 8, &n, "0x\0" "0", 4, 0), TG_EHEX);
  CHECK_OK(tg_hex_decode(out, 8, &n, "0xabc", 5, TG_HEX_ALLOW_ODD));
  CHECK_INT(n, 2);
  CHECK(out[0] == 0x0a && out[1] == 0xbc);
  CHECK_OK(tg_hex_decode(out, 8, &n, "0X", 2, 0));
  CHECK_INT(n, 0);
  CHECK_ERR(tg_hex_decode_exact(out, 4, "0x001122", 8), TG_ERANGE);
  CHECK_OK(tg_hex_decode_exact(out, 3, "0x001122", 8));
}

static void test_buf(void) {
  tg_buf b;
  tg_buf_init(&b, 4);
  CHECK_OK(tg_hex_decode_buf(&b, "0x01020304", 10, 0));
  CHECK_INT(b.len, 4);
  CHECK_ERR(tg_hex_decode_buf(&b, "0x05", 4, 0), TG_ETOOBIG);
  CHECK_INT(b.len, 4);
  tg_buf_cleanup(&b);
  tg_buf_cleanup(&b); /* cleanup twice is safe */
  char *s = tg_hex_dup((const uint8_t *)"\xde\xad", 2);
  CHECK_STR(s, "0xdead");
  free(s);
}

int main(void) {
  RUN(test_roundtrip);
  RUN(test_rejects);
  RUN(test_buf);
  return tgt_done();
}
