/* The channel ledger: admission arithmetic, monotonic loads, and 64 threads on one channel. */
#include <pthread.h>
#include <stdlib.h>

#include "pay/ledger.h"
#include "tg_test.h"
#include "tollgate/u256.h"

static tg_u256 U(uint64_t v) {
  tg_u256 u;
  tg_u256_from_u64(&u, v);
  return u;
}

static uint64_t V(const tg_u256 *u) {
  uint64_t v = 0;
  if (tg_u256_to_u64(u, &v)) return UINT64_MAX;
  return v;
}

static tg_ledger_channel channel(uint8_t tag, uint64_t balance, uint64_t ceiling) {
  tg_ledger_channel c;
  memset(&c, 0, sizeof c);
  c.id.b[0] = tag;
  c.balance = U(balance);
  c.ceiling = U(ceiling);
  c.ceiling_sig.len = 65;
  return c;
}

static void test_admission(void) {
  tg_ledger *l = tg_ledger_new();
  tg_ledger_channel c = channel(1, 1000, 300), snap;
  CHECK_OK(tg_ledger_put(l, &c));
  tg_ledger_hold h1, h2, h3;
  tg_u256 p = U(100), zero = U(0);
  CHECK_OK(tg_ledger_reserve(l, &h1, NULL, &c.id, NULL, NULL, &p, &zero));
  CHECK_OK(tg_ledger_reserve(l, &h2, NULL, &c.id, NULL, NULL, &p, &zero));
  tg_u256 p2 = U(101);
  CHECK_ERR(tg_ledger_reserve(l, &h3, &snap, &c.id, NULL, NULL, &p2, &zero), TG_ECHANNEL_SHORT);
  CHECK_INT(V(&snap.reserved), 200);
  /* A higher voucher lifts the ceiling; the balance still caps it. */
  tg_u256 ceil = U(5000);
  tg_x402_sig sig = {.len = 65};
  sig.b[0] = 0xee;
  CHECK_OK(tg_ledger_reserve(l, &h3, NULL, &c.id, &ceil, &sig, &p2, &zero));
  tg_ledger_hold h4;
  tg_u256 big = U(700);
  CHECK_ERR(tg_ledger_reserve(l, &h4, NULL, &c.id, NULL, NULL, &big, &zero), TG_ECHANNEL_SHORT);
  tg_u256 credit = U(1);
  CHECK_OK(tg_ledger_reserve(l, &h4, NULL, &c.id, NULL, NULL, &big, &credit)); /* 301+700 <= 1000+1 */
  /* Charge less than the max; release a failed call. */
  tg_ledger_charge_plan plan;
  tg_u256 actual = U(40);
  CHECK_OK(tg_ledger_charge(l, &plan, &h1, &actual));
  CHECK_INT(V(&plan.price), 40);
  CHECK_INT(V(&plan.charged), 40);
  CHECK_INT(V(&plan.ceiling), 5000);
  CHECK_INT(plan.ceiling_sig.b[0], 0xee);
  tg_u256 over = U(1000);
  CHECK_OK(tg_ledger_charge(l, &plan, &h2, &over)); /* capped at the reserved max */
  CHECK_INT(V(&plan.price), 100);
  CHECK_INT(V(&plan.charged), 140);
  CHECK_ERR(tg_ledger_charge(l, &plan, &h2, &over), TG_EINVAL); /* a hold is used once */
  tg_ledger_release(l, &h3);
  tg_ledger_release(l, &h3); /* idempotent */
  CHECK_OK(tg_ledger_charge(l, &plan, &h4, &big));
  tg_ledger_uncharge(l, &plan);
  CHECK_OK(tg_ledger_get(l, &c.id, &snap));
  CHECK_INT(V(&snap.charged), 140);
  CHECK_INT(V(&snap.reserved), 0);
  tg_ledger_free(l);
}

/* The ceiling's signature is kept at its own length and follows each higher ceiling exactly. */
static void test_ceiling_signature(void) {
  tg_ledger *l = tg_ledger_new();
  tg_ledger_channel c = channel(9, 1000, 10), snap;
  for (int i = 0; i < 65; i++) c.ceiling_sig.b[i] = (uint8_t)(i + 1);
  CHECK_OK(tg_ledger_put(l, &c));
  CHECK_OK(tg_ledger_get(l, &c.id, &snap));
  CHECK_INT(snap.ceiling_sig.len, 65);
  CHECK_MEM(snap.ceiling_sig.b, c.ceiling_sig.b, 65);
  /* an ERC-1271 wallet's longer signature, then an EOA's again, then a lower ceiling (ignored) */
  static const size_t lens[] = {700, 65, 1024};
  static const uint64_t ceils[] = {20, 30, 25};
  tg_x402_sig sig, last = c.ceiling_sig;
  tg_u256 p = U(1), zero = U(0);
  for (int k = 0; k < 3; k++) {
    memset(&sig, 0, sizeof sig);
    sig.len = lens[k];
    for (size_t i = 0; i < sig.len; i++) sig.b[i] = (uint8_t)(i * 7 + (size_t)k);
    tg_u256 ceil = U(ceils[k]);
    tg_ledger_hold h;
    CHECK_OK(tg_ledger_reserve(l, &h, NULL, &c.id, &ceil, &sig, &p, &zero));
    if (k < 2) last = sig;
    tg_ledger_charge_plan plan;
    CHECK_OK(tg_ledger_charge(l, &plan, &h, &p));
    CHECK_INT(V(&plan.ceiling), k < 2 ? ceils[k] : 30);
    CHECK_INT(plan.ceiling_sig.len, last.len);
    CHECK_MEM(plan.ceiling_sig.b, last.b, last.len);
  }
  tg_ledger_free(l);
}

static void test_withdrawing_and_unknown(void) {
  tg_ledger *l = tg_ledger_new();
  tg_ledger_channel c = channel(2, 1000, 1000);
  CHECK_OK(tg_ledger_put(l, &c));
  tg_ledger_hold h;
  tg_u256 p = U(1), zero = U(0);
  tg_hash other = {{9}};
  CHECK_ERR(tg_ledger_reserve(l, &h, NULL, &other, NULL, NULL, &p, &zero), TG_ECHANNEL_UNKNOWN);
  tg_u256 bal = U(1000), claimed = U(0);
  CHECK_OK(tg_ledger_mirror(l, &c.id, &bal, &claimed, 1700000000));
  CHECK_ERR(tg_ledger_reserve(l, &h, NULL, &c.id, NULL, NULL, &p, &zero), TG_ECHANNEL_WITHDRAWING);
  CHECK_ERR(tg_ledger_mirror(l, &other, &bal, &claimed, 0), TG_ENOTFOUND);
  /* A stale reload cannot lower charged or the ceiling. */
  c.charged = U(500);
  CHECK_OK(tg_ledger_put(l, &c));
  c.charged = U(100);
  c.ceiling = U(10);
  CHECK_OK(tg_ledger_put(l, &c));
  tg_ledger_channel got;
  CHECK_OK(tg_ledger_get(l, &c.id, &got));
  CHECK_INT(V(&got.charged), 500);
  CHECK_INT(V(&got.ceiling), 1000);
  tg_ledger_free(l);
}

/* A refund returns balance - max(charged + reserved, claimed) and closes admission until a mirror. */
static void test_refund_begin(void) {
  tg_ledger *l = tg_ledger_new();
  tg_ledger_channel c = channel(3, 1000, 1000);
  c.charged = U(300);
  c.total_claimed = U(100);
  CHECK_OK(tg_ledger_put(l, &c));
  tg_ledger_hold h;
  tg_u256 p = U(50), zero = U(0), amt;
  CHECK_OK(tg_ledger_reserve(l, &h, NULL, &c.id, NULL, NULL, &p, &zero));
  CHECK_OK(tg_ledger_refund_begin(l, &c.id, &amt, 1700000000));
  CHECK_INT(V(&amt), 650); /* 1000 - (300 charged + 50 in flight) */
  tg_ledger_hold h2;
  CHECK_ERR(tg_ledger_reserve(l, &h2, NULL, &c.id, NULL, NULL, &p, &zero), TG_ECHANNEL_WITHDRAWING);
  CHECK_ERR(tg_ledger_refund_begin(l, &c.id, &amt, 1700000000), TG_ECHANNEL_WITHDRAWING);
  tg_ledger_release(l, &h);
  /* The refund landed: the mirror reopens the channel with what is left. */
  tg_u256 bal = U(300), claimed = U(100);
  CHECK_OK(tg_ledger_mirror(l, &c.id, &bal, &claimed, 0));
  CHECK_ERR(tg_ledger_refund_begin(l, &c.id, &amt, 1700000001), TG_ECHANNEL_SHORT);
  CHECK_INT(V(&amt), 0);
  /* Claimed beyond charged (a restored store): the claimed total is kept too. */
  tg_ledger_channel d = channel(4, 1000, 1000);
  d.charged = U(100);
  d.total_claimed = U(400);
  CHECK_OK(tg_ledger_put(l, &d));
  CHECK_OK(tg_ledger_refund_begin(l, &d.id, &amt, 1700000000));
  CHECK_INT(V(&amt), 600);
  tg_hash other = {{9}};
  CHECK_ERR(tg_ledger_refund_begin(l, &other, &amt, 1), TG_ENOTFOUND);
  tg_ledger_free(l);
}

/* 64 threads hammer one channel; the invariant holds and the total is exact. */
enum { THREADS = 64, ITERS = 2000 };
static tg_ledger *shared;
static tg_hash shared_id;
static uint64_t charged_by[THREADS];
static int violations;

static void *worker(void *arg) {
  int t = (int)(intptr_t)arg;
  unsigned seed = (unsigned)t * 2654435761u;
  for (int i = 0; i < ITERS; i++) {
    seed = seed * 1103515245u + 12345u;
    tg_u256 max = U(1 + seed % 50), zero = U(0);
    tg_ledger_hold h;
    if (tg_ledger_reserve(shared, &h, NULL, &shared_id, NULL, NULL, &max, &zero) != 0) continue;
    if (seed % 7 == 0) {
      tg_ledger_release(shared, &h);
      continue;
    }
    tg_u256 price = U(seed % 60);
    tg_ledger_charge_plan plan;
    if (tg_ledger_charge(shared, &plan, &h, &price) != 0) __atomic_add_fetch(&violations, 1, __ATOMIC_RELAXED);
    charged_by[t] += V(&plan.price);
    if (V(&plan.charged) > 100000) __atomic_add_fetch(&violations, 1, __ATOMIC_RELAXED);
  }
  return NULL;
}

static void test_concurrency(void) {
  shared = tg_ledger_new();
  tg_ledger_channel c = channel(3, 100000, 100000);
  shared_id = c.id;
  CHECK_OK(tg_ledger_put(shared, &c));
  for (int i = 0; i < 1000; i++) { /* other channels in the same table */
    tg_ledger_channel o = channel(4, 1, 1);
    o.id.b[1] = (uint8_t)i;
    o.id.b[2] = (uint8_t)(i >> 8);
    CHECK_OK(tg_ledger_put(shared, &o));
  }
  CHECK_INT(tg_ledger_count(shared), 1001);
  pthread_t th[THREADS];
  for (int i = 0; i < THREADS; i++) pthread_create(&th[i], NULL, worker, (void *)(intptr_t)i);
  for (int i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
  uint64_t sum = 0;
  for (int i = 0; i < THREADS; i++) sum += charged_by[i];
  tg_ledger_channel got;
  CHECK_OK(tg_ledger_get(shared, &shared_id, &got));
  CHECK_INT(V(&got.charged), sum);
  CHECK_INT(V(&got.reserved), 0);
  CHECK(sum <= 100000);
  CHECK(sum > 90000); /* the channel was actually used up to its ceiling */
  CHECK_INT(violations, 0);
  tg_ledger_free(shared);
}

int main(void) {
  RUN(test_admission);
  RUN(test_ceiling_signature);
  RUN(test_withdrawing_and_unknown);
  RUN(test_refund_begin);
  RUN(test_concurrency);
  return tgt_done();
}
