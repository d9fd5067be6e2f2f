/* Pending `exact` money per payer: the admission arithmetic, overflow, release on each path,
 * read overlaps, lapse, and 16 threads admitting one payer at once. */
#include <pthread.h>
#include <stdlib.h>

#include "pay/pending.h"
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

static tg_address A(uint8_t tag) {
  tg_address a;
  memset(&a, 0, sizeof a);
  a.b[0] = tag;
  a.b[19] = 7; /* every test payer in one slot: the chain is searched */
  return a;
}

static tg_hash N(uint32_t n) {
  tg_hash h;
  memset(&h, 0, sizeof h);
  memcpy(h.b, &n, sizeof n);
  return h;
}

static uint64_t pending_of(tg_pending *t, const tg_address *a) {
  tg_u256 v;
  tg_pending_get(t, a, &v);
  return V(&v);
}

#define NOW 1000000u
#define VB (NOW + 300u)

static void test_admission(void) {
  tg_pending *t;
  CHECK_OK(tg_pending_new(&t, 0));
  tg_address a = A(1), b = A(2);
  tg_u256 bal = U(2500), price = U(1000);
  tg_hash n1 = N(1), n2 = N(2), n3 = N(3);
  /* three calls of one payer, balance for two and a half: the third is refused */
  CHECK_OK(tg_pending_reserve(t, NULL, &a, &n1, &price, &bal, VB, NOW));
  CHECK_OK(tg_pending_reserve(t, NULL, &a, &n2, &price, &bal, VB, NOW));
  CHECK_ERR(tg_pending_reserve(t, NULL, &a, &n3, &price, &bal, VB, NOW), TG_EPAY_FUNDS);
  CHECK_INT(pending_of(t, &a), 2000);
  /* the same nonce twice is refused and changes nothing */
  CHECK_ERR(tg_pending_reserve(t, NULL, &a, &n1, &price, &bal, VB, NOW), TG_EEXISTS);
  CHECK_INT(pending_of(t, &a), 2000);
  /* another payer is not affected */
  CHECK_OK(tg_pending_reserve(t, NULL, &b, &n1, &price, &bal, VB, NOW));
  CHECK_INT(pending_of(t, &b), 1000);
  /* exactly the balance: admitted (balance - pending == value) */
  tg_u256 rest = U(500);
  CHECK_OK(tg_pending_reserve(t, NULL, &a, &n3, &rest, &bal, VB, NOW));
  CHECK_INT(pending_of(t, &a), 2500);
  tg_u256 one = U(1);
  tg_hash n4 = N(4);
  CHECK_ERR(tg_pending_reserve(t, NULL, &a, &n4, &one, &bal, VB, NOW), TG_EPAY_FUNDS);
  /* the check (a /verify) reserves nothing */
  CHECK_ERR(tg_pending_check(t, NULL, &a, &one, &bal, NOW), TG_EPAY_FUNDS);
  tg_u256 more = U(2501);
  CHECK_OK(tg_pending_check(t, NULL, &a, &one, &more, NOW));
  CHECK_INT(pending_of(t, &a), 2500);
  tg_pending_stats st;
  tg_pending_stats_get(t, &st);
  CHECK_INT(st.reservations, 4);
  CHECK_INT(st.payers, 2);
  CHECK_INT(st.refused, 2);
  tg_pending_free(t);
}

/* Each path that ends a reservation: release once, release again (nothing), unknown keys. */
static void test_release(void) {
  tg_pending *t;
  CHECK_OK(tg_pending_new(&t, 0));
  tg_address a = A(1), b = A(2);
  tg_u256 bal = U(1000), price = U(1000);
  tg_hash n1 = N(1), n2 = N(2);
  CHECK_OK(tg_pending_reserve(t, NULL, &a, &n1, &price, &bal, VB, NOW));
  CHECK_ERR(tg_pending_reserve(t, NULL, &a, &n2, &price, &bal, VB, NOW), TG_EPAY_FUNDS);
  CHECK_INT(tg_pending_release(t, &a, &n2), 0); /* the refused one was never held */
  CHECK_INT(tg_pending_release(t, &b, &n1), 0); /* another payer's key */
  CHECK_INT(pending_of(t, &a), 1000);
  CHECK_INT(tg_pending_release(t, &a, &n1), 1); /* e.g. the call failed before submission */
  CHECK_INT(tg_pending_release(t, &a, &n1), 0); /* the outcome recorder after it: nothing */
  CHECK_INT(pending_of(t, &a), 0);
  /* a fresh read after the release (balance now without the mined transfer) admits */
  tg_pending_mark m;
  tg_pending_read_begin(t, &a, &m);
  CHECK_OK(tg_pending_reserve(t, &m, &a, &n2, &price, &bal, VB, NOW));
  CHECK_INT(m.active, 0);
  CHECK_INT(tg_pending_release(t, &a, &n2), 1);
  /* nothing left: the payer's entry is gone */
  tg_pending_stats st;
  tg_pending_stats_get(t, &st);
  CHECK_INT(st.payers, 0);
  CHECK_INT(st.reservations, 0);
  /* hold (a resumed authorization) then release */
  CHECK_OK(tg_pending_hold(t, &a, &n1, &price, VB));
  CHECK_ERR(tg_pending_hold(t, &a, &n1, &price, VB), TG_EEXISTS);
  CHECK_ERR(tg_pending_reserve(t, NULL, &a, &n2, &price, &bal, VB, NOW), TG_EPAY_FUNDS);
  CHECK_INT(tg_pending_release(t, &a, &n1), 1);
  CHECK_INT(pending_of(t, &a), 0);
  tg_pending_free(t);
}

/*
 * A read that started before a transfer's release (its answer may predate the mining):
 * the released value still counts. A read started after it does not.
 */
static void test_read_overlap(void) {
  tg_pending *t;
  CHECK_OK(tg_pending_new(&t, 0));
  tg_address a = A(1);
  tg_u256 price = U(1000), bal2 = U(2000);
  tg_hash n1 = N(1), n2 = N(2), n3 = N(3);
  CHECK_OK(tg_pending_reserve(t, NULL, &a, &n1, &price, &bal2, VB, NOW));
  tg_pending_mark early, late, other;
  tg_pending_read_begin(t, &a, &early);
  CHECK_INT(tg_pending_release(t, &a, &n1), 1); /* mined and confirmed meanwhile */
  tg_pending_read_begin(t, &a, &late);
  /* the early read says 2000 (before the transfer): 2000 - 0 pending - 1000 released since */
  tg_u256 three = U(1001);
  CHECK_ERR(tg_pending_reserve(t, &early, &a, &n2, &three, &bal2, VB, NOW), TG_EPAY_FUNDS);
  CHECK_INT(early.active, 0);
  /* the late read says 1000 (after it): nothing released since, 1000 admitted */
  tg_u256 bal1 = U(1000);
  CHECK_OK(tg_pending_reserve(t, &late, &a, &n2, &price, &bal1, VB, NOW));
  /* a read that failed ends its mark: the entry is freed once nothing refers to it */
  tg_pending_read_begin(t, &a, &other);
  tg_pending_read_end(t, &other);
  tg_pending_read_end(t, &other); /* twice: nothing */
  CHECK_INT(tg_pending_release(t, &a, &n2), 1);
  tg_pending_stats st;
  tg_pending_stats_get(t, &st);
  CHECK_INT(st.payers, 0);
  /* a mark ended by a check (the /verify path) */
  tg_pending_read_begin(t, &a, &other);
  CHECK_OK(tg_pending_check(t, &other, &a, &price, &bal1, NOW));
  CHECK_INT(other.active, 0);
  (void)n3;
  tg_pending_stats_get(t, &st);
  CHECK_INT(st.payers, 0);
  tg_pending_free(t);
}

/* Sums near 2^256: never wrap into a small pending, never admit past the balance. */
static void test_overflow(void) {
  tg_pending *t;
  CHECK_OK(tg_pending_new(&t, 0));
  tg_address a = A(1);
  tg_u256 max, half, halfp1, one = U(1);
  memset(&max, 0xff, sizeof max);
  CHECK_OK(tg_u256_divmod_u64(&half, NULL, &max, 2)); /* 2^255 - 1 */
  tg_hash n1 = N(1), n2 = N(2), n3 = N(3);
  /* balance 2^256-1: one reservation of the whole balance, then even 1 more is refused */
  CHECK_OK(tg_pending_reserve(t, NULL, &a, &n1, &max, &max, VB, NOW));
  CHECK_ERR(tg_pending_reserve(t, NULL, &a, &n2, &one, &max, VB, NOW), TG_EPAY_FUNDS);
  CHECK_ERR(tg_pending_check(t, NULL, &a, &one, &max, NOW), TG_EPAY_FUNDS);
  /* held values beyond 2^256 saturate (never wrap), and releasing one gives the exact rest */
  CHECK_OK(tg_pending_hold(t, &a, &n2, &max, VB));
  tg_u256 v;
  tg_pending_get(t, &a, &v);
  CHECK(tg_u256_cmp(&v, &max) == 0);
  CHECK_OK(tg_pending_hold(t, &a, &n3, &one, VB));
  tg_pending_get(t, &a, &v);
  CHECK(tg_u256_cmp(&v, &max) == 0);
  CHECK_INT(tg_pending_release(t, &a, &n1), 1);
  tg_pending_get(t, &a, &v);
  CHECK(tg_u256_cmp(&v, &max) == 0); /* max + 1 still saturates */
  CHECK_INT(tg_pending_release(t, &a, &n2), 1);
  CHECK_INT(pending_of(t, &a), 1);
  CHECK_INT(tg_pending_release(t, &a, &n3), 1);
  CHECK_INT(pending_of(t, &a), 0);
  /* 2^255 pending plus 2^256 - 1 overflows: refused, not wrapped */
  CHECK_OK(tg_u256_add(&halfp1, &half, &one));
  CHECK_OK(tg_pending_reserve(t, NULL, &a, &n1, &halfp1, &max, VB, NOW));
  CHECK_ERR(tg_pending_reserve(t, NULL, &a, &n2, &max, &max, VB, NOW), TG_EPAY_FUNDS);
  CHECK_INT(tg_pending_release(t, &a, &n1), 1);
  tg_pending_free(t);
}

/* A reservation lapses `grace` seconds after validBefore (the transfer can no longer succeed). */
static void test_lapse(void) {
  tg_pending *t;
  CHECK_OK(tg_pending_new(&t, 60));
  tg_address a = A(1);
  tg_u256 price = U(1000), bal = U(1000);
  tg_hash n1 = N(1), n2 = N(2);
  CHECK_OK(tg_pending_reserve(t, NULL, &a, &n1, &price, &bal, VB, NOW));
  CHECK_ERR(tg_pending_reserve(t, NULL, &a, &n2, &price, &bal, VB + 1000, VB + 60), TG_EPAY_FUNDS);
  CHECK_OK(tg_pending_reserve(t, NULL, &a, &n2, &price, &bal, VB + 1000, VB + 61));
  CHECK_INT(tg_pending_release(t, &a, &n1), 0); /* lapsed already */
  tg_pending_stats st;
  tg_pending_stats_get(t, &st);
  CHECK_INT(st.lapsed, 1);
  CHECK_INT(st.reservations, 1);
  /* validBefore near 2^64: no wrap into the past */
  tg_hash n3 = N(3);
  tg_u256 zero = U(0);
  CHECK_OK(tg_pending_reserve(t, NULL, &a, &n3, &zero, &bal, UINT64_MAX - 5, NOW));
  CHECK_ERR(tg_pending_reserve(t, NULL, &a, &n3, &zero, &bal, UINT64_MAX - 5, UINT64_MAX - 1), TG_EEXISTS);
  tg_pending_free(t);
}

/* Thousands in flight for one payer (a busy agent): exact sums, each found and released once. */
static void test_many(void) {
  tg_pending *t;
  CHECK_OK(tg_pending_new(&t, 0));
  tg_address a = A(3), b = A(4);
  tg_u256 price = U(7), bal = U(7 * 20000);
  for (uint32_t i = 0; i < 20000; i++) {
    tg_hash n = N(i * 2654435761u); /* spread like random nonces */
    CHECK_OK(tg_pending_reserve(t, NULL, i % 2 ? &a : &b, &n, &price, &bal, VB + i, NOW));
  }
  CHECK_INT(pending_of(t, &a), 7 * 10000);
  CHECK_INT(pending_of(t, &b), 7 * 10000);
  tg_hash n0 = N(0);
  CHECK_INT(tg_pending_release(t, &a, &n0), 0); /* b's nonce, not a's */
  for (uint32_t i = 0; i < 20000; i++) {
    tg_hash n = N(i * 2654435761u);
    CHECK_INT(tg_pending_release(t, i % 2 ? &a : &b, &n), 1);
  }
  tg_pending_stats st;
  tg_pending_stats_get(t, &st);
  CHECK_INT(st.reservations, 0);
  CHECK_INT(st.payers, 0);
  /* lapse of many at once, the later ones kept */
  for (uint32_t i = 0; i < 100; i++) {
    tg_hash n = N(i);
    CHECK_OK(tg_pending_reserve(t, NULL, &a, &n, &price, &bal, i < 50 ? VB : VB + 10000, NOW));
  }
  tg_hash late = N(1000);
  CHECK_OK(tg_pending_reserve(t, NULL, &b, &late, &price, &bal, VB, VB + 601));
  CHECK_INT(pending_of(t, &a), 7 * 50);
  tg_pending_stats_get(t, &st);
  CHECK_INT(st.lapsed, 50);
  tg_pending_free(t);
}

/* 16 threads, 64 authorizations each, one payer funded for 100: exactly 100 admitted. */
#define THREADS 16
#define PER_THREAD 64
static tg_pending *shared;
static int admitted[THREADS];

static void *admit_many(void *arg) {
  int k = (int)(intptr_t)arg;
  tg_address a = A(9);
  tg_u256 price = U(10), bal = U(1000);
  for (int i = 0; i < PER_THREAD; i++) {
    tg_pending_mark m;
    tg_pending_read_begin(shared, &a, &m);
    tg_hash n = N((uint32_t)(k * PER_THREAD + i));
    if (tg_pending_reserve(shared, &m, &a, &n, &price, &bal, VB, NOW) == 0) admitted[k]++;
  }
  return NULL;
}

static void test_threads(void) {
  CHECK_OK(tg_pending_new(&shared, 0));
  pthread_t th[THREADS];
  for (int k = 0; k < THREADS; k++) pthread_create(&th[k], NULL, admit_many, (void *)(intptr_t)k);
  for (int k = 0; k < THREADS; k++) pthread_join(th[k], NULL);
  int total = 0;
  for (int k = 0; k < THREADS; k++) total += admitted[k];
  CHECK_INT(total, 100);
  tg_address a = A(9);
  CHECK_INT(pending_of(shared, &a), 1000);
  tg_pending_stats st;
  tg_pending_stats_get(shared, &st);
  CHECK_INT(st.reservations, 100);
  CHECK_INT(st.refused, THREADS * PER_THREAD - 100);
  tg_pending_free(shared);
}

int main(void) {
  RUN(test_admission);
  RUN(test_release);
  RUN(test_read_overlap);
  RUN(test_overflow);
  RUN(test_lapse);
  RUN(test_many);
  RUN(test_threads);
  return tgt_done();
}
