/* Benchmark: group-commit throughput and latency of the PostgreSQL store (throwaway local server), one and three instances on one database. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "store/store.h"
#include "tg_pg.h"
#include "tollgate/u256.h"

/*
 * The same workload as bench_store.c (each producer records one channel charge
 * and waits until it is durable), against a PostgreSQL server started by the
 * test harness (tg_pg.h: a throwaway cluster in /tmp, fsync and
 * synchronous_commit on, loopback TCP). "3 instances" opens three tg_store
 * handles on the same database, each with its own writer connection and
 * group commit, with the producers spread over them: three gateways' worth of
 * row locking and commits; "channels by instance" routes each channel's calls to one
 * instance, as a sticky load balancer would. Each channel has its own payer (a payer's
 * running totals row is locked like its channels). Seconds per case: TG_BENCH_SECONDS (default 3).
 * Prints SKIP and exits 0 when no server can be started.
 */

#define MAX_PRODUCERS 64
#define CHANNELS 64
#define LAT_CAP (1 << 20)

#define MAX_INSTANCES 3
static tg_store *stores[MAX_INSTANCES];
static int instances = 1;
static int partitioned; /* each instance charges only its own channels (sticky routing) */
static atomic_int stop;
static atomic_long seq;
static double secs = 3.0;

static uint64_t lat_ns[LAT_CAP];
static atomic_long lat_n;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static tg_hash chan_id(int i) {
  tg_hash h;
  memset(h.b, 0, sizeof(h.b));
  h.b[0] = 0xbe;
  h.b[30] = (uint8_t)(i >> 8);
  h.b[31] = (uint8_t)i;
  return h;
}

static void *producer(void *p) {
  int idx = (int)(intptr_t)p;
  char rid[48];
  while (!atomic_load(&stop)) {
    long n = atomic_fetch_add(&seq, 1);
    snprintf(rid, sizeof(rid), "bench-%ld", n);
    tg_store_op op;
    memset(&op, 0, sizeof(op));
    op.kind = TG_STORE_OP_CHARGE;
    op.u.charge.request_id = rid;
    memset(op.u.charge.payer.b, 0xa0, 20);
    op.u.charge.scheme = TG_SCHEME_CHANNEL;
    op.u.charge.route = "chat";
    op.u.charge.model = "bench-model";
    op.u.charge.input_tokens = 100;
    op.u.charge.output_tokens = 200;
    tg_u256_from_u64(&op.u.charge.amount, 1000);
    op.u.charge.has_channel = 1;
    /* Shared: any producer may hit any channel. Partitioned: channel % 3 == instance. */
    int chan = partitioned ? idx % 3 + 3 * ((idx / 3) % (CHANNELS / 3)) : idx % CHANNELS;
    op.u.charge.channel_id = chan_id(chan);
    op.u.charge.payer.b[19] = (uint8_t)chan; /* one payer per channel */
    uint64_t t0 = now_ns();
    int rc = tg_store_write(stores[idx % instances], &op, 1);
    uint64_t dt = now_ns() - t0;
    if (rc < 0) {
      fprintf(stderr, "charge failed: %s\n", tg_strerror(rc));
      exit(1);
    }
    long k = atomic_fetch_add(&lat_n, 1);
    if (k < LAT_CAP) lat_ns[k] = dt;
  }
  return NULL;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static void run_case(int producers) {
  tg_store_stats s0 = {0}, s1 = {0}, t;
  for (int i = 0; i < instances; i++) {
    tg_store_get_stats(stores[i], &t);
    s0.commits += t.commits;
    s0.ops += t.ops;
    s0.commit_ns_total += t.commit_ns_total;
    s0.round_trips += t.round_trips;
  }
  atomic_store(&stop, 0);
  atomic_store(&lat_n, 0);
  pthread_t th[MAX_PRODUCERS];
  uint64_t t0 = now_ns();
  for (int i = 0; i < producers; i++)
    pthread_create(&th[i], NULL, producer, (void *)(intptr_t)i);
  usleep((useconds_t)(secs * 1e6));
  atomic_store(&stop, 1);
  for (int i = 0; i < producers; i++) pthread_join(th[i], NULL);
  double el = (double)(now_ns() - t0) / 1e9;
  for (int i = 0; i < instances; i++) {
    tg_store_get_stats(stores[i], &t);
    s1.commits += t.commits;
    s1.ops += t.ops;
    s1.commit_ns_total += t.commit_ns_total;
    s1.round_trips += t.round_trips;
  }
  uint64_t commits = s1.commits - s0.commits, ops = s1.ops - s0.ops;
  long n = atomic_load(&lat_n);
  if (n > LAT_CAP) n = LAT_CAP;
  qsort(lat_ns, (size_t)n, sizeof(lat_ns[0]), cmp_u64);
  double p50 = n ? (double)lat_ns[n / 2] / 1e3 : 0, p99 = n ? (double)lat_ns[n * 99 / 100] / 1e3 : 0;
  double commit_avg = commits ? (double)(s1.commit_ns_total - s0.commit_ns_total) / commits / 1e3 : 0;
  printf("%d x %2d producers%s: %9.0f ops/s %8.0f commits/s %6.1f ops/commit | %5.2f round trips/op | "
         "commit avg %7.1f us | charge latency p50 %7.1f us p99 %8.1f us\n",
         instances, producers, partitioned ? " (channels by instance)" : "", (double)ops / el, (double)commits / el,
         commits ? (double)ops / (double)commits : 0,
         ops ? (double)(s1.round_trips - s0.round_trips) / (double)ops : 0, commit_avg, p50, p99);
  fflush(stdout);
}

int main(void) {
  const char *sv = getenv("TG_BENCH_SECONDS");
  if (sv && strtod(sv, NULL) > 0) secs = strtod(sv, NULL);
  char why[512], uri[256];
  tgt_pg *pg = tgt_pg_start(why, sizeof(why));
  if (pg == NULL) {
    printf("SKIP bench_store_pg: %s\n", why);
    return 0;
  }
  if (tgt_pg_newdb(pg, uri, sizeof(uri)) != 0) {
    tgt_pg_stop(pg);
    return 1;
  }
  int rc;
  for (int k = 0; k < MAX_INSTANCES; k++) {
    if ((rc = tg_store_open(&stores[k], uri, NULL)) < 0) {
      fprintf(stderr, "bench_store_pg: cannot open %s: %s\n", uri, tg_strerror(rc));
      tgt_pg_stop(pg);
      return 1;
    }
  }
  tg_store *st = stores[0];
  /* One channel per 64th producer, with a ceiling no benchmark reaches. */
  for (int i = 0; i < CHANNELS; i++) {
    tg_store_op ops[2];
    memset(ops, 0, sizeof(ops));
    ops[0].kind = TG_STORE_OP_CHANNEL_PUT;
    ops[0].u.channel.id = chan_id(i);
    ops[0].u.channel.cfg.chain_id = 31337;
    memset(ops[0].u.channel.cfg.payer.b, 0xa0, 20);
    ops[0].u.channel.cfg.payer.b[19] = (uint8_t)i;
    ops[1].kind = TG_STORE_OP_VOUCHER;
    ops[1].u.voucher.channel_id = chan_id(i);
    memset(ops[1].u.voucher.max_claimable.b, 0x7f, 32);
    static const uint8_t sig[65] = {1};
    ops[1].u.voucher.sig = TG_BYTES(sig, sizeof(sig));
    if ((rc = tg_store_write(st, ops, 2)) < 0) {
      fprintf(stderr, "bench_store_pg: setup: %s\n", tg_strerror(rc));
      tgt_pg_stop(pg);
      return 1;
    }
  }
  printf("store group commit, PostgreSQL (local, fsync, synchronous_commit=on), %.0f s per case\n",
         secs);
  static const int cases[] = {1, 4, 16, 64};
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) run_case(cases[i]);
  instances = 3;
  static const int cases3[] = {3, 16, 64};
  for (size_t i = 0; i < sizeof(cases3) / sizeof(cases3[0]); i++) run_case(cases3[i]);
  partitioned = 1;
  for (size_t i = 0; i < sizeof(cases3) / sizeof(cases3[0]); i++) run_case(cases3[i]);
  for (int k = 0; k < MAX_INSTANCES; k++) tg_store_close(stores[k]);
  tgt_pg_stop(pg);
  return 0;
}
