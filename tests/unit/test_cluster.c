/* Tests of gateway/daemon/cluster.c on a throwaway PostgreSQL server: the gateway lease between instances, hand-over, take-over from a dead holder, and a holder that loses the database. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

/* The daemon's sources are not in libtollgate: the unit under test is compiled in. */
#include "daemon/cluster.c"

#include "store/store.h"
#include "tg_pg.h"
#include "tg_test.h"

#define TTL 1000 /* ms: renewals every 250 ms, a holder counts itself one for 500 ms after */

static tgt_pg *pg;

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* on_leader's calls for one instance. */
typedef struct {
  atomic_int gains, losses, calls;
} events;

static void on_leader(void *arg, int leader) {
  events *e = arg;
  atomic_fetch_add(&e->calls, 1);
  atomic_fetch_add(leader ? &e->gains : &e->losses, 1);
}

static tg_cluster *start(tg_store *st, const char *instance, const char *lease, events *e,
                         int want) {
  tg_cluster_opts o = {.store = st, .instance = instance, .lease = lease, .ttl_ms = TTL,
                       .on_leader = on_leader, .arg = e};
  tg_cluster *c = NULL;
  char err[256] = "";
  int rc = tg_cluster_start(&c, err, sizeof err, &o);
  CHECKF(rc == want, "start %s: %s (%s)", instance, tg_err_name(rc), err);
  return c;
}

/* Waits until `pred` holds (polled every 5 ms) or `max_ms` passed; returns the time it took,
 * or -1. */
static int64_t wait_for(int (*pred)(void *), void *arg, int64_t max_ms) {
  int64_t t0 = now_ms();
  for (;;) {
    if (pred(arg)) return now_ms() - t0;
    if (now_ms() - t0 > max_ms) return -1;
    usleep(5000);
  }
}

static int is_leader(void *c) { return tg_cluster_leader(c); }
static int not_leader(void *c) { return !tg_cluster_leader(c); }

/* Samples two instances all along a test: never both holders at once. */
typedef struct {
  tg_cluster *a, *b;
  atomic_int stop;
  atomic_long samples, both;
} sampler;

static void *sample_main(void *p) {
  sampler *s = p;
  while (!atomic_load(&s->stop)) {
    int a = tg_cluster_leader(s->a), b = tg_cluster_leader(s->b);
    atomic_fetch_add(&s->samples, 1);
    if (a && b) atomic_fetch_add(&s->both, 1);
    usleep(500);
  }
  return NULL;
}

static tg_store *open_store(const char *uri) {
  tg_store *st = NULL;
  int rc = tg_store_open(&st, uri, NULL);
  CHECKF(rc == 0, "open %s: %s", uri, tg_err_name(rc));
  return st;
}

static void write_lease(tg_store *st, const char *name, const char *holder, int64_t ttl_ms) {
  tg_store_op op;
  memset(&op, 0, sizeof op);
  op.kind = TG_STORE_OP_LEASE_ACQUIRE;
  op.u.lease.name = name;
  op.u.lease.holder = holder;
  op.u.lease.ttl_ms = ttl_ms;
  CHECK_OK(tg_store_write(st, &op, 1));
}

/* One holder of the gateway lease; a second instance name in use is refused; a clean stop
 * hands the lease over at the other instance's next renewal. */
static void test_cluster_handover(void) {
  char uri[256];
  CHECK_OK(tgt_pg_newdb(pg, uri, sizeof uri));
  tg_store *s1 = open_store(uri), *s2 = open_store(uri);
  if (!s1 || !s2) goto out;
  events ea = {0}, eb = {0}, ex = {0};
  tg_cluster *a = start(s1, "gw-a", "leader:t1", &ea, TG_OK);
  CHECK(a != NULL);
  /* The first instance takes the lease at once; on_leader tells it before start returns. */
  CHECK_INT(tg_cluster_leader(a), 1);
  CHECK_INT(atomic_load(&ea.gains), 1);
  tg_cluster *b = start(s2, "gw-b", "leader:t1", &eb, TG_OK);
  CHECK(b != NULL);
  CHECK_INT(tg_cluster_leader(b), 0);
  CHECK_INT(atomic_load(&eb.losses), 1); /* the initial state, reported too */
  /* Another process with an instance name in use is refused (its holds would be mistaken
   * for the live instance's, and it would renew that instance's gateway lease as its own),
   * after waiting one ttl for the name's lease to lapse (a predecessor killed just before). */
  int64_t t0 = now_ms();
  tg_cluster *dup = start(s2, "gw-a", "leader:t1", &ex, TG_ESTORE_LEASE);
  CHECK(dup == NULL);
  CHECK(now_ms() - t0 >= TTL);
  CHECK_INT(atomic_load(&ex.calls), 0);
  CHECK_INT(tg_cluster_leader(a), 1);
  if (!a || !b) goto out;

  sampler sm = {.a = a, .b = b};
  pthread_t th;
  pthread_create(&th, NULL, sample_main, &sm);
  /* Several renewals: the holder stays the holder, the other stays out. */
  usleep(3 * TTL * 1000 / 2);
  CHECK_INT(tg_cluster_leader(a), 1);
  CHECK_INT(tg_cluster_leader(b), 0);
  CHECK_INT(atomic_load(&ea.calls), 1);
  CHECK_INT(atomic_load(&eb.calls), 1);
  atomic_store(&sm.stop, 1);
  pthread_join(th, NULL);
  CHECK(atomic_load(&sm.samples) > 100);
  CHECK_INT(atomic_load(&sm.both), 0);

  /* A clean stop releases the lease: b takes it at its next renewal (every ttl/4), not after
   * a whole ttl. */
  tg_cluster_stop(a);
  a = NULL;
  int64_t took = wait_for(is_leader, b, 5 * TTL);
  CHECKF(took >= 0 && took <= TTL / 4 + 500, "hand-over took %lld ms (stop at +0, renewals every %d ms)",
         (long long)took, TTL / 4);
  CHECK_INT(atomic_load(&eb.gains), 1);
  tg_store_lease l;
  CHECK_OK(tg_store_lease_get(s1, "leader:t1", &l));
  CHECK(strncmp(l.holder, "gw-b#", 5) == 0); /* the instance's name and its process's token */
  /* a's liveness lease went with it; b's is current */
  CHECK_ERR(tg_store_lease_get(s1, "instance:gw-a", &l), TG_ENOTFOUND);
  CHECK_OK(tg_store_lease_get(s1, "instance:gw-b", &l));
  tg_cluster_stop(b);
  CHECK_ERR(tg_store_lease_get(s1, "leader:t1", &l), TG_ENOTFOUND);
out:
  tg_store_close(s1);
  tg_store_close(s2);
}

/* The lease of an instance that died (it no longer renews: here a row written for "ghost",
 * which never comes back): another instance waits for it to expire, not less, and takes it
 * over at its first renewal after that. */
static void test_cluster_dead_holder(void) {
  char uri[256];
  CHECK_OK(tgt_pg_newdb(pg, uri, sizeof uri));
  tg_store *st = open_store(uri);
  if (!st) return;
  int64_t ghost_ttl = 2 * TTL;
  int64_t t0 = now_ms();
  write_lease(st, "instance:ghost", "ghost#0badf00d", ghost_ttl);
  write_lease(st, "leader:t2", "ghost#0badf00d", ghost_ttl);
  events ec = {0};
  tg_cluster *c = start(st, "gw-c", "leader:t2", &ec, TG_OK);
  if (!c) goto out;
  CHECK_INT(tg_cluster_leader(c), 0);
  int64_t took = wait_for(is_leader, c, 4 * ghost_ttl);
  CHECK(took >= 0);
  int64_t at = now_ms() - t0; /* since just before the ghost's last renewal */
  /* not before the ghost's lease expired (the wall clock of the store and this monotonic one
   * may differ by a few ms), and at the first renewal after that (plus a loaded machine) */
  CHECKF(at >= ghost_ttl - 20, "took over %lld ms after the dead holder's renewal (ttl %lld)",
         (long long)at, (long long)ghost_ttl);
  CHECKF(at <= ghost_ttl + TTL / 4 + 700, "took over %lld ms after the dead holder's renewal (ttl %lld)",
         (long long)at, (long long)ghost_ttl);
  CHECK_INT(atomic_load(&ec.gains), 1);
  tg_store_lease l;
  CHECK_OK(tg_store_lease_get(st, "leader:t2", &l));
  CHECK(strncmp(l.holder, "gw-c#", 5) == 0);
  /* the dead instance's name is free again once its liveness lapsed */
  events ed = {0};
  tg_cluster *d = start(st, "ghost", "leader:t2", &ed, TG_OK);
  CHECK(d != NULL);
  CHECK_INT(tg_cluster_leader(d), 0);
  tg_cluster_stop(d);
  tg_cluster_stop(c);
out:
  tg_store_close(st);
}

/*
 * The holder loses the database (here its renewals wait behind another session's lock on the
 * lease row): it stops counting itself the holder ttl/2 after its last renewal, by the clock,
 * while the renewal still hangs; the other instance cannot take over meanwhile; when the
 * database answers again exactly one instance holds the lease, and never were both holders.
 */
static void test_cluster_holder_stalls(void) {
  char uri[256];
  CHECK_OK(tgt_pg_newdb(pg, uri, sizeof uri));
  tg_store *s1 = open_store(uri), *s2 = open_store(uri);
  PGconn *x = NULL;
  if (!s1 || !s2) goto out;
  events ea = {0}, eb = {0};
  tg_cluster *a = start(s1, "gw-a", "leader:t3", &ea, TG_OK);
  tg_cluster *b = start(s2, "gw-b", "leader:t3", &eb, TG_OK);
  if (!a || !b) {
    tg_cluster_stop(a);
    tg_cluster_stop(b);
    goto out;
  }
  sampler sm = {.a = a, .b = b};
  pthread_t th;
  pthread_create(&th, NULL, sample_main, &sm);
  CHECK_INT(tg_cluster_leader(a), 1);
  x = PQconnectdb(uri);
  CHECK(PQstatus(x) == CONNECTION_OK);
  PGresult *r = PQexec(x, "BEGIN; SELECT * FROM leases WHERE name = 'leader:t3' FOR UPDATE");
  CHECK(PQresultStatus(r) == PGRES_TUPLES_OK);
  PQclear(r);
  int64_t t0 = now_ms();
  int64_t took = wait_for(not_leader, a, 3 * TTL);
  /* at most ttl/2 after the last renewal, which was at most ttl/4 before the lock */
  CHECKF(took >= 0 && took <= TTL / 2 + 300, "the stalled holder gave up after %lld ms",
         (long long)took);
  CHECK_INT(atomic_load(&ea.losses), 0); /* the clock decided, the cluster thread still waits */
  /* past the lease's expiry: nobody acts */
  usleep((useconds_t)(2 * TTL * 1000));
  CHECK_INT(tg_cluster_leader(a), 0);
  CHECK_INT(tg_cluster_leader(b), 0);
  r = PQexec(x, "COMMIT");
  PQclear(r);
  PQfinish(x);
  x = NULL;
  (void)t0;
  /* the database answers again: one of them holds the lease (a renews it, or b's upsert got
   * there first after it expired) */
  int64_t back = wait_for(is_leader, a, 3 * TTL);
  if (back < 0) back = wait_for(is_leader, b, 3 * TTL);
  CHECK(back >= 0);
  usleep((useconds_t)(TTL * 1000));
  CHECK_INT(tg_cluster_leader(a) + tg_cluster_leader(b), 1);
  tg_store_lease l;
  CHECK_OK(tg_store_lease_get(s1, "leader:t3", &l));
  CHECK(strncmp(l.holder, tg_cluster_leader(a) ? "gw-a#" : "gw-b#", 5) == 0);
  atomic_store(&sm.stop, 1);
  pthread_join(th, NULL);
  CHECK(atomic_load(&sm.samples) > 100);
  CHECK_INT(atomic_load(&sm.both), 0);
  tg_cluster_stop(a);
  tg_cluster_stop(b);
out:
  if (x) PQfinish(x);
  tg_store_close(s1);
  tg_store_close(s2);
}

static char skip_why[512];
static void test_cluster_server(void) { tgt_skip(skip_why); }

int main(void) {
  pg = tgt_pg_start(skip_why, sizeof(skip_why));
  if (pg == NULL) {
    RUN(test_cluster_server);
    return tgt_done();
  }
  RUN(test_cluster_handover);
  RUN(test_cluster_dead_holder);
  RUN(test_cluster_holder_stalls);
  tgt_pg_stop(pg);
  return tgt_done();
}
