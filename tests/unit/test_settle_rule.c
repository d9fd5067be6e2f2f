/* Tests of the early-claim rule (tg_settle_near_balance) used by the daemon's watchtower. */
#include "tg_test.h"
#include "tollgate/settle.h"
#include "tollgate/u256.h"

static int near(uint64_t charged, uint64_t claimed, uint64_t balance, unsigned pct) {
  tg_u256 c, k, b;
  tg_u256_from_u64(&c, charged);
  tg_u256_from_u64(&k, claimed);
  tg_u256_from_u64(&b, balance);
  return tg_settle_near_balance(&c, &k, &b, pct);
}

static void test_near_balance_rule(void) {
  /* the integration test's channel: 10,500 deposited, calls of 1,000 */
  CHECK(near(9000, 0, 10500, 90) == 0);   /* 85.7 % */
  CHECK(near(10000, 0, 10500, 90) == 1);  /* 95.2 % */
  /* exactly 90 % is not above it */
  CHECK(near(900, 0, 1000, 90) == 0);
  CHECK(near(901, 0, 1000, 90) == 1);
  /* measured against what is left after earlier claims */
  CHECK(near(1500, 1000, 2000, 90) == 0); /* 500 of 1000 left */
  CHECK(near(1950, 1000, 2000, 90) == 1); /* 950 of 1000 left */
  /* nothing owed, rule off, balance already used up */
  CHECK(near(1000, 1000, 2000, 90) == 0);
  CHECK(near(500, 1000, 2000, 90) == 0);
  CHECK(near(10000, 0, 10500, 0) == 0);
  CHECK(near(1001, 1000, 1000, 90) == 1);
  CHECK(near(1001, 1000, 900, 90) == 1);
  /* 256-bit amounts do not overflow the comparison (saturating products) */
  tg_u256 big, zero, half;
  memset(big.b, 0xff, 32);
  tg_u256_zero(&zero);
  memset(half.b, 0, 32);
  half.b[0] = 0x7f;
  CHECK(tg_settle_near_balance(&big, &zero, &big, 90) == 0);
  CHECK(tg_settle_near_balance(&half, &zero, &big, 90) == 0);
}

int main(void) {
  RUN(test_near_balance_rule);
  return tgt_done();
}
