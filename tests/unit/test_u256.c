/* u256: parsing, formatting and overflow-checked arithmetic at the edges. */
#include "tg_test.h"
#include "tollgate/u256.h"

#define MAXDEC "115792089237316195423570985008687907853269984665640564039457584007913129639935"

static tg_u256 P(const char *s) {
  tg_u256 v;
  int rc = tg_u256_parse(&v, s, strlen(s));
  CHECKF(rc == 0, "parse %s: %s", s, tg_err_name(rc));
  return v;
}

static void test_format(void) {
  char dec[TG_U256_DEC_MAX], hex[TG_U256_HEX_MAX];
  tg_u256 v = P(MAXDEC);
  tg_u256_to_dec(&v, dec);
  CHECK_STR(dec, MAXDEC);
  tg_u256_to_hex(&v, hex);
  CHECK_STR(hex, "0xffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff");
  v = P("0");
  tg_u256_to_dec(&v, dec);
  CHECK_STR(dec, "0");
  tg_u256_to_hex(&v, hex);
  CHECK_STR(hex, "0x0");
  const char *cases[] = {"1", "9", "10", "10000000000000000000", "9999999999999999999",
                         "10000000000000000000000000000000000000", "18446744073709551616", "18446744073709551615",
                         "100", "12345678901234567890", "340282366920938463463374607431768211456",
                         "1000000000000000000000000000000000000000000000000000000000"};
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    v = P(cases[i]);
    tg_u256_to_dec(&v, dec);
    CHECK_STR(dec, cases[i]);
  }
  v = P("0x0A");
  CHECK_INT(v.b[31], 10);
  v = P("0x4a817c800");
  tg_u256_to_hex(&v, hex);
  CHECK_STR(hex, "0x4a817c800");
  tg_u256_to_dec(&v, dec);
  CHECK_STR(dec, "20000000000");
}

static void test_parse_errors(void) {
  tg_u256 v;
  CHECK_ERR(tg_u256_parse(&v, "", 0), TG_ENUMBER);
  CHECK_ERR(tg_u256_parse(&v, "-1", 2), TG_ENUMBER);
  CHECK_ERR(tg_u256_parse(&v, " 1", 2), TG_ENUMBER);
  CHECK_ERR(tg_u256_parse(&v, "0x", 2), TG_EHEX);
  CHECK_ERR(tg_u256_parse(&v, "0xg", 3), TG_EHEX);
  CHECK_ERR(tg_u256_parse(&v, MAXDEC "0", strlen(MAXDEC) + 1), TG_EOVERFLOW);
  CHECK_ERR(tg_u256_parse_dec(&v, "115792089237316195423570985008687907853269984665640564039457584007913129639936", 78), TG_EOVERFLOW);
  CHECK_ERR(tg_u256_parse(&v, "0x1ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff", 67), TG_EOVERFLOW);
}

static void test_arith(void) {
  tg_u256 max = P(MAXDEC), one = P("1"), r;
  CHECK_ERR(tg_u256_add(&r, &max, &one), TG_EOVERFLOW);
  CHECK(tg_u256_is_zero(&r));
  tg_u256 zero = P("0");
  CHECK_ERR(tg_u256_sub(&r, &zero, &one), TG_EUNDERFLOW);
  CHECK(tg_u256_cmp(&r, &max) == 0);
  tg_u256 a = P("340282366920938463463374607431768211456"); /* 2^128 */
  CHECK_ERR(tg_u256_mul(&r, &a, &a), TG_EOVERFLOW);
  tg_u256 b = P("340282366920938463463374607431768211455");
  CHECK_OK(tg_u256_mul(&r, &a, &b));
  tg_u256 want = P("115792089237316195423570985008687907852929702298719625575994209400481361428480");
  CHECK(tg_u256_cmp(&r, &want) == 0);
  uint64_t rem;
  CHECK_OK(tg_u256_divmod_u64(&r, &rem, &max, 1000));
  CHECK_INT(rem, 935);
  CHECK_ERR(tg_u256_divmod_u64(&r, &rem, &max, 0), TG_EDIVZERO);
  uint64_t u;
  CHECK_ERR(tg_u256_to_u64(&a, &u), TG_EOVERFLOW);
  tg_u256 m1;
  tg_u256_neg(&m1, &one);
  CHECK(tg_u256_cmp(&m1, &max) == 0);
  size_t n;
  const uint8_t *p = tg_u256_min_be(&one, &n);
  CHECK(n == 1 && p[0] == 1);
  p = tg_u256_min_be(&zero, &n);
  CHECK_INT(n, 0);
}

int main(void) {
  RUN(test_format);
  RUN(test_parse_errors);
  RUN(test_arith);
  return tgt_done();
}
