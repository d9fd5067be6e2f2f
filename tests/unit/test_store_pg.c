/* Tests of the PostgreSQL store on a throwaway server: the shared store scenarios, its own constraints and faults, leases across instances, and 3 processes charging the same channels with one SIGKILLed. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>
#include <libpq-fe.h>

#include "store/migrations_pg.h"
#include "store/store.h"
#include "store/store_int.h"
#include "tg_pg.h"
#include "tg_proc.h"
#include "tg_test.h"
#include "tollgate/u256.h"

static tgt_pg *pg;

/* For the shared scenarios, a store's "path" is its URI: a fresh database each time. */
static tg_store *open_fresh(char *path, size_t pcap) {
  tg_store *st = NULL;
  if (tgt_pg_newdb(pg, path, pcap) != 0) {
    CHECKF(0, "cannot create a database");
    return NULL;
  }
  int rc = tg_store_open(&st, path, NULL);
  CHECKF(rc == 0, "open %s: %s", path, tg_err_name(rc));
  return st;
}

static void uri_of(const char *path, char *uri, size_t cap) { snprintf(uri, cap, "%s", path); }

#include "store_checks.h"

/* Runs SQL on a database; the result (0 or -1) and the SQLSTATE prefix of the error. */
static int sql(const char *uri, const char *text, char *err, size_t cap) {
  return tgt_pg_exec(uri, text, err, cap);
}

/* ------------------------------------------------------------------------- */

static void test_pg_uri(void) {
  char uri[256], alt[300];
  CHECK_OK(tgt_pg_newdb(pg, uri, sizeof(uri)));
  tg_store *st = (tg_store *)1;
  /* Both schemes libpq knows. */
  snprintf(alt, sizeof(alt), "postgres%s", uri + strlen("postgresql"));
  CHECK_OK(tg_store_open(&st, alt, NULL));
  tg_store_close(st);
  CHECK_OK(tg_store_open(&st, uri, NULL));
  tg_store_close(st);
  /* Keyword strings and malformed URIs are refused; an unreachable server is an error. */
  CHECK_ERR(tg_store_open(&st, "postgresql:dbname=x", NULL), TG_ESTORE_URI);
  CHECK(st == NULL);
  CHECK_ERR(tg_store_open(&st, "postgresql://127.0.0.1:5432/x?bogus_option=1", NULL),
            TG_ESTORE_URI);
  int closed = tgt_free_port();
  snprintf(alt, sizeof(alt), "postgresql://postgres@127.0.0.1:%d/x?connect_timeout=2", closed);
  CHECK_ERR(tg_store_open(&st, alt, NULL), TG_ESTORE);
  int applied;
  CHECK_ERR(tg_store_migrate(alt, &applied), TG_ESTORE);
}

typedef struct {
  const char *uri;
  int rc;
  int applied;
} mig_arg;

static void *migrate_thread(void *p) {
  mig_arg *a = p;
  a->rc = tg_store_migrate(a->uri, &a->applied);
  return NULL;
}

/* A database left at schema 2 by an older build: migrations 3 to 5 run, and 5 rekeys exact payments by payer. */
static void test_pg_migrate_exact_key(void) {
  char uri[256], err[512];
  CHECK_OK(tgt_pg_newdb(pg, uri, sizeof(uri)));
  CHECK_OK(sql(uri, "CREATE TABLE schema_version (version bigint PRIMARY KEY, "
                    "applied_at bigint NOT NULL)", err, sizeof(err)));
  for (int v = 1; v <= 2; v++) {
    CHECKF(sql(uri, pg_migrations[v - 1], err, sizeof(err)) == 0, "migration %d: %s", v, err);
    char q[96];
    snprintf(q, sizeof(q), "INSERT INTO schema_version VALUES (%d, 0)", v);
    CHECK_OK(sql(uri, q, err, sizeof(err)));
  }
  char row[1024];
  exact_v2_row_sql(row, sizeof(row), 1);
  CHECKF(sql(uri, row, err, sizeof(err)) == 0, "%s", err);
  int applied = -1;
  CHECK_OK(tg_store_migrate(uri, &applied));
  CHECK_INT(applied, PG_SCHEMA_LATEST - 2);
  tg_store *st;
  CHECK_OK(tg_store_open(&st, uri, NULL));
  exact_v3_checks(st);
  tg_store_close(st);
}

static void test_pg_migrations(void) {
  char uri[256], err[512];
  CHECK_OK(tgt_pg_newdb(pg, uri, sizeof(uri)));
  /* Three instances migrating at once: the advisory lock makes them take turns. */
  mig_arg a[3] = {{uri, -1, -1}, {uri, -1, -1}, {uri, -1, -1}};
  pthread_t th[3];
  for (int i = 0; i < 3; i++) CHECK(pthread_create(&th[i], NULL, migrate_thread, &a[i]) == 0);
  for (int i = 0; i < 3; i++) pthread_join(th[i], NULL);
  int total = 0;
  for (int i = 0; i < 3; i++) {
    CHECK_OK(a[i].rc);
    total += a[i].applied;
  }
  CHECK_INT(total, PG_SCHEMA_LATEST);
  int applied = -1;
  CHECK_OK(tg_store_migrate(uri, &applied));
  CHECK_INT(applied, 0);
  tg_store *st;
  CHECK_OK(tg_store_open(&st, uri, NULL));
  int cur, latest;
  CHECK_OK(tg_store_schema_version(st, &cur, &latest));
  CHECK_INT(cur, PG_SCHEMA_LATEST);
  CHECK_INT(latest, PG_SCHEMA_LATEST);
  tg_store_close(st);
  /* One row per migration. */
  char check[256];
  snprintf(check, sizeof(check),
           "DO $$ BEGIN IF (SELECT count(*) FROM schema_version) <> %d OR (SELECT min(version) "
           "FROM schema_version) <> 1 THEN RAISE EXCEPTION 'bad versions'; END IF; END $$",
           PG_SCHEMA_LATEST);
  CHECK_OK(sql(uri, check, err, sizeof(err)));
  /* A newer schema is refused, not trampled. */
  CHECK_OK(sql(uri, "INSERT INTO schema_version VALUES (99, 0)", err, sizeof(err)));
  CHECK_ERR(tg_store_migrate(uri, &applied), TG_ESTORE_SCHEMA);
  st = (tg_store *)1;
  CHECK_ERR(tg_store_open(&st, uri, NULL), TG_ESTORE_SCHEMA);
  CHECK(st == NULL);
  /* no_migrate: an empty database is refused (as older than the build), unless init_empty. */
  char uri2[256];
  CHECK_OK(tgt_pg_newdb(pg, uri2, sizeof(uri2)));
  tg_store_options o = {.no_migrate = 1};
  CHECK_ERR(tg_store_open(&st, uri2, &o), TG_ESTORE_SCHEMA_OLD);
  CHECK_OK(tg_store_migrate(uri2, &applied));
  CHECK_INT(applied, PG_SCHEMA_LATEST);
  CHECK_OK(tg_store_open(&st, uri2, &o));
  tg_store_close(st);
  /* A failed migration leaves nothing half-done: the table it would create is absent. */
  char uri3[256];
  CHECK_OK(tgt_pg_newdb(pg, uri3, sizeof(uri3)));
  CHECK_OK(sql(uri3, "CREATE TABLE settle_runs (x int)", err, sizeof(err)));
  CHECK_ERR(tg_store_migrate(uri3, &applied), TG_ESTORE_SCHEMA);
  CHECK_INT(applied, 0);
  CHECK_FAILS(sql(uri3, "SELECT 1 FROM channels", err, sizeof(err)));
  CHECK_FAILS(sql(uri3, "SELECT 1 FROM schema_version", err, sizeof(err)));
}

/* The database itself refuses an overspent or malformed row (raw SQL, past the C checks). */
static void test_pg_db_enforces_invariant(void) {
  char uri[256], err[512];
  tg_store *st = store_with_channel(uri, sizeof(uri), 100);
  if (!st) return;
  tg_store_op op = charge("r1", 0xa1, 1, 100, 0);
  CHECK_OK(tg_store_write(st, &op, 1));
  tg_store_close(st);
  CHECK_FAILS(sql(uri,
                  "UPDATE channels SET charged = '\\x000000000000000000000000000000000000000000"
                  "0000000000000000000065'",
                  err, sizeof(err)));
  CHECKF(strstr(err, "23514") && strstr(err, "channels_money"), "%s", err);
  CHECK_FAILS(sql(uri, "UPDATE channels SET charged = '\\x01'", err, sizeof(err)));
  CHECKF(strstr(err, "23514") != NULL, "%s", err);
  CHECK_FAILS(sql(uri,
                  "INSERT INTO charges (request_id, payer, scheme, route, model, input_tokens,"
                  " output_tokens, amount, created_at) VALUES ('x', decode(repeat('00', 20),"
                  " 'hex'), 1, '', '', 0, 0, decode(repeat('00', 32), 'hex'), 0)",
                  err, sizeof(err)));
  CHECKF(strstr(err, "23514") != NULL, "%s", err);
  /* bytea order is numeric order for 32-byte big-endian amounts. */
  CHECK_OK(sql(uri,
               "DO $$ BEGIN IF NOT (decode('00' || repeat('ff', 31), 'hex') < decode('01' || "
               "repeat('00', 31), 'hex')) THEN RAISE EXCEPTION 'order'; END IF; END $$",
               err, sizeof(err)));
}

/* A damaged row (a dropped CHECK, a column of the wrong type) is reported, never trusted. */
static void test_pg_corrupt_row(void) {
  char uri[256], err[512];
  tg_store *st = store_with_channel(uri, sizeof(uri), 1000);
  if (!st) return;
  tg_store_op op = charge("r1", 0xa1, 1, 1, 0);
  CHECK_OK(tg_store_write(st, &op, 1));
  tg_store_close(st);
  CHECK_OK(sql(uri,
               "ALTER TABLE charges DROP CONSTRAINT charges_amount_check;"
               " UPDATE charges SET amount = '\\x0102';"
               " ALTER TABLE channels DROP CONSTRAINT channels_balance_check,"
               " ALTER COLUMN balance TYPE text USING 'text'",
               err, sizeof(err)));
  CHECK_OK(tg_store_open(&st, uri, NULL));
  tg_store_charge c;
  CHECK_ERR(tg_store_charge_get(st, "r1", &c), TG_ESTORE_CORRUPT);
  tg_store_channel ch;
  tg_hash id = hash(1);
  CHECK_ERR(tg_store_channel_get(st, &id, &ch), TG_ESTORE_CORRUPT);
  tg_store_close(st);
}

/* Another session holding channel 1's row lock: the writer's next batch waits behind it. */
static PGconn *hold_channel(const char *uri) {
  PGconn *c = PQconnectdb(uri);
  CHECK(PQstatus(c) == CONNECTION_OK);
  PGresult *r = PQexec(c, "BEGIN; SELECT id FROM channels FOR UPDATE");
  CHECK(PQresultStatus(r) == PGRES_TUPLES_OK);
  PQclear(r);
  return c;
}

static void release_channel(PGconn *c) {
  PGresult *r = PQexec(c, "COMMIT");
  CHECK(PQresultStatus(r) == PGRES_COMMAND_OK);
  PQclear(r);
  PQfinish(c);
}

static void test_pg_group_commit(void) {
  char uri[256];
  tg_store *st = store_with_channel(uri, sizeof(uri), 1000000);
  if (!st) return;
  PGconn *lock = hold_channel(uri);
  counter c = {0};
  tg_store_op first = charge("gc-first", 0xa1, 1, 1, 0);
  CHECK_OK(tg_store_submit(st, &first, 1, count_cb, &c));
  usleep(100000); /* the writer now waits for the row lock with that one */
  char ids[200][16];
  for (int i = 0; i < 200; i++) {
    snprintf(ids[i], sizeof(ids[i]), "gc-%d", i);
    tg_store_op op = charge(i == 100 ? ids[99] : ids[i], 0xa1, 1, 2, 0);
    CHECK_OK(tg_store_submit(st, &op, 1, count_cb, &c));
  }
  tg_store_stats before;
  tg_store_get_stats(st, &before);
  CHECK_INT(before.queue_ops, 201);
  CHECK_INT(atomic_load(&c.done), 0);
  release_channel(lock);
  wait_done(&c, 201);
  CHECK_INT(atomic_load(&c.ok), 200);
  CHECK_INT(atomic_load(&c.failed), 1);
  CHECK_ERR(c.last_err, TG_EEXISTS);
  tg_store_stats after;
  tg_store_get_stats(st, &after);
  CHECK(after.commits - before.commits <= 3);
  CHECK_INT(after.submissions - before.submissions, 201);
  tg_store_channel ch;
  tg_hash id = hash(1);
  CHECK_OK(tg_store_channel_get(st, &id, &ch));
  CHECK_INT(u64(&ch.charged), 1 + 199 * 2);
  CHECK_INT(ch.charge_count, 200);
  tg_store_close(st);
}

static void pg_fault_case(int where, int err, int want) {
  char uri[256];
  tg_store *st = store_with_channel(uri, sizeof(uri), 1000000);
  if (!st) return;
  PGconn *lock = hold_channel(uri);
  counter c0 = {0}, c = {0};
  tg_store_op first = charge("f-first", 0xa1, 1, 1, 0);
  CHECK_OK(tg_store_submit(st, &first, 1, count_cb, &c0));
  usleep(100000);
  tg__store_fault(st, where, err);
  char ids[10][16];
  for (int i = 0; i < 10; i++) {
    snprintf(ids[i], sizeof(ids[i]), "f-%d", i);
    tg_store_op op = charge(ids[i], 0xa1, 1, 2, 0);
    CHECK_OK(tg_store_submit(st, &op, 1, count_cb, &c));
  }
  release_channel(lock);
  wait_done(&c0, 1);
  wait_done(&c, 10);
  CHECK_INT(atomic_load(&c0.ok), 1);
  CHECK_INT(atomic_load(&c.failed), 10);
  CHECK_ERR(c.last_err, want);
  tg_store_charge ch;
  for (int i = 0; i < 10; i++) CHECK_ERR(tg_store_charge_get(st, ids[i], &ch), TG_ENOTFOUND);
  tg_store_channel chv;
  tg_hash id = hash(1);
  CHECK_OK(tg_store_channel_get(st, &id, &chv));
  CHECK_INT(u64(&chv.charged), 1);
  CHECK_INT(chv.charge_count, 1);
  tg_store_op again = charge("f-0", 0xa1, 1, 2, 0);
  CHECK_OK(tg_store_write(st, &again, 1));
  CHECK_OK(tg_store_channel_get(st, &id, &chv));
  CHECK_INT(u64(&chv.charged), 3);
  tg_store_close(st);
}

static void test_pg_fault_commit(void) { pg_fault_case(TG__FAULT_COMMIT, TG_EIO, TG_EIO); }
static void test_pg_fault_txn_lost(void) { pg_fault_case(TG__FAULT_TXN_LOST, 0, TG_ESTORE); }

/* A batch that waits for a row lock longer than busy_timeout_ms fails (TG_EBUSY for the
 * waiting submission), commits nothing, and the writer carries on. */
static void test_pg_lock_timeout(void) {
  char uri[256];
  CHECK_OK(tgt_pg_newdb(pg, uri, sizeof(uri)));
  tg_store_options o = {.busy_timeout_ms = 200};
  tg_store *st;
  CHECK_OK(tg_store_open(&st, uri, &o));
  if (!st) return;
  tg_store_op setup[2] = {channel_put(1, 0xa1, 1, 1), voucher(1, 1000, 1)};
  CHECK_OK(tg_store_write(st, setup, 2));
  PGconn *lock = hold_channel(uri);
  tg_store_op op = charge("lt-1", 0xa1, 1, 5, 0);
  CHECK_FAILS(tg_store_write(st, &op, 1));
  release_channel(lock);
  tg_store_charge c;
  CHECK_ERR(tg_store_charge_get(st, "lt-1", &c), TG_ENOTFOUND);
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_OK(tg_store_charge_get(st, "lt-1", &c));
  tg_store_close(st);
}

/* A batch chosen as a deadlock victim is run again from BEGIN and succeeds: another session
 * holds channel 2 and then asks for channel 1, which the batch already locked. */
static void test_pg_deadlock_retry(void) {
  char uri[256];
  tg_store *st = open_fresh(uri, sizeof(uri));
  if (!st) return;
  tg_store_op setup[4] = {channel_put(1, 0xa1, 1, 1), voucher(1, 1000, 1),
                          channel_put(2, 0xa2, 1, 1), voucher(2, 1000, 2)};
  CHECK_OK(tg_store_write(st, setup, 4));
  PGconn *x = PQconnectdb(uri);
  CHECK(PQstatus(x) == CONNECTION_OK);
  /* This session waits 10 s before checking for deadlocks; the store's session, 200 ms (the
   * harness's server setting): the store's batch is the one the server aborts. */
  PGresult *r = PQexec(x, "BEGIN; SET LOCAL deadlock_timeout = '10s'; SELECT id FROM channels "
                          "WHERE id = decode('c0' || repeat('00', 30) || '02', 'hex') FOR UPDATE");
  CHECK(PQresultStatus(r) == PGRES_TUPLES_OK);
  PQclear(r);
  tg_store_stats before;
  tg_store_get_stats(st, &before);
  counter c = {0};
  tg_store_op ops[2] = {charge("dl-1", 0xa1, 1, 3, 0), charge("dl-2", 0xa2, 2, 4, 0)};
  CHECK_OK(tg_store_submit(st, ops, 2, count_cb, &c));
  usleep(100000); /* the batch holds channel 1 and waits for channel 2 */
  CHECK(PQsendQuery(x, "SELECT id FROM channels WHERE id = decode('c0' || repeat('00', 30) || "
                       "'01', 'hex') FOR UPDATE") == 1);
  r = PQgetResult(x); /* granted once the server aborted the store's batch */
  CHECK(PQresultStatus(r) == PGRES_TUPLES_OK);
  PQclear(r);
  while ((r = PQgetResult(x)) != NULL) PQclear(r);
  r = PQexec(x, "COMMIT");
  PQclear(r);
  PQfinish(x);
  wait_done(&c, 1);
  CHECK_INT(atomic_load(&c.ok), 1);
  tg_store_stats after;
  tg_store_get_stats(st, &after);
  CHECK(after.retries - before.retries >= 1);
  tg_store_channel ch;
  tg_hash id1 = hash(1), id2 = hash(2);
  CHECK_OK(tg_store_channel_get(st, &id1, &ch));
  CHECK_INT(u64(&ch.charged), 3);
  CHECK_INT(ch.charge_count, 1);
  CHECK_OK(tg_store_channel_get(st, &id2, &ch));
  CHECK_INT(u64(&ch.charged), 4);
  tg_store_close(st);
}

/* The server restarts under an open store (sessions cut): the writer and the pooled readers
 * reconnect by themselves, and what was acknowledged before is still there. */
static void test_pg_server_restart(void) {
  char uri[256];
  tg_store *st = store_with_channel(uri, sizeof(uri), 1000);
  if (!st) return;
  tg_store_op op = charge("before", 0xa1, 1, 7, 0);
  CHECK_OK(tg_store_write(st, &op, 1));
  tg_store_charge c;
  CHECK_OK(tg_store_charge_get(st, "before", &c));
  CHECK_OK(tgt_pg_restart(pg));
  op = charge("after", 0xa1, 1, 5, 0);
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_INT(u64(&op.u.charge.out_charged), 12);
  CHECK_OK(tg_store_charge_get(st, "before", &c));
  CHECK_OK(tg_store_charge_get(st, "after", &c));
  tg_store_channel ch;
  tg_hash id = hash(1);
  CHECK_OK(tg_store_channel_get(st, &id, &ch));
  CHECK_INT(u64(&ch.charged), 12);
  CHECK_INT(ch.charge_count, 2);
  tg_store_close(st);
}

/* The settlement lease across instances: one holder at a time, take-over after expiry, and of
 * many instances racing for a free lease exactly one wins. */
typedef struct {
  tg_store *st;
  char holder[16];
  atomic_int *go;
  int rc;
} lease_arg;

static void *lease_thread(void *p) {
  lease_arg *a = p;
  while (!atomic_load(a->go)) {
  }
  tg_store_op op;
  memset(&op, 0, sizeof(op));
  op.kind = TG_STORE_OP_LEASE_ACQUIRE;
  op.u.lease.name = "race";
  op.u.lease.holder = a->holder;
  op.u.lease.ttl_ms = 60000;
  a->rc = tg_store_write(a->st, &op, 1);
  return NULL;
}

static void test_pg_lease_takeover(void) {
  char uri[256];
  CHECK_OK(tgt_pg_newdb(pg, uri, sizeof(uri)));
  tg_store *a, *b;
  CHECK_OK(tg_store_open(&a, uri, NULL));
  CHECK_OK(tg_store_open(&b, uri, NULL));
  if (!a || !b) return;
  tg_store_op op;
  memset(&op, 0, sizeof(op));
  op.kind = TG_STORE_OP_LEASE_ACQUIRE;
  op.u.lease.name = "settle";
  op.u.lease.holder = "gw-a";
  op.u.lease.ttl_ms = 300;
  CHECK_OK(tg_store_write(a, &op, 1));
  op.u.lease.holder = "gw-b";
  op.now = 0; /* tg_store_write reports the time it used: back to the writer's clock */
  CHECK_ERR(tg_store_write(b, &op, 1), TG_ESTORE_LEASE);
  tg_store_lease l;
  CHECK_OK(tg_store_lease_get(b, "settle", &l));
  CHECK_STR(l.holder, "gw-a");
  usleep(400000); /* gw-a stops renewing (it died): the lease expires and gw-b takes over */
  op.now = 0;
  CHECK_OK(tg_store_write(b, &op, 1));
  op.u.lease.holder = "gw-a";
  op.now = 0;
  CHECK_ERR(tg_store_write(a, &op, 1), TG_ESTORE_LEASE);
  CHECK_OK(tg_store_lease_get(a, "settle", &l));
  CHECK_STR(l.holder, "gw-b");
  tg_store_close(b);

  /* 12 contenders on 3 instances, released together. */
  tg_store *s[3] = {a, NULL, NULL};
  CHECK_OK(tg_store_open(&s[1], uri, NULL));
  CHECK_OK(tg_store_open(&s[2], uri, NULL));
  if (!s[1] || !s[2]) return;
  atomic_int go = 0;
  lease_arg args[12];
  pthread_t th[12];
  for (int i = 0; i < 12; i++) {
    args[i].st = s[i % 3];
    snprintf(args[i].holder, sizeof(args[i].holder), "c%d", i);
    args[i].go = &go;
    args[i].rc = 1;
    CHECK(pthread_create(&th[i], NULL, lease_thread, &args[i]) == 0);
  }
  atomic_store(&go, 1);
  int won = 0, lost = 0;
  for (int i = 0; i < 12; i++) {
    pthread_join(th[i], NULL);
    if (args[i].rc == 0) won++;
    else if (args[i].rc == TG_ESTORE_LEASE) lost++;
  }
  CHECK_INT(won, 1);
  CHECK_INT(lost, 11);
  for (int i = 0; i < 3; i++) tg_store_close(s[i]);
}

/* ------------------------------------------------------------------------- */
/* Several processes, one database: 3 instances x ~21 threads charge 8 shared channels past
 * their cap; one instance is SIGKILLed mid-way. */

#define MP_PROCS 3
#define MP_THREADS 64 /* in total */
#define MP_PER_THREAD 80
#define MP_CHANNELS 8
#define MP_CEILING 800
#define MP_CREDIT 200

typedef struct {
  tg_store *st;
  int proc, thread;
  int fd;
} mp_worker;

static void *mp_worker_main(void *p) {
  mp_worker *w = p;
  for (int i = 0; i < MP_PER_THREAD; i++) {
    char id[48];
    snprintf(id, sizeof(id), "mp%d-%d-%d", w->proc, w->thread, i);
    int chan = 1 + (w->thread + i) % MP_CHANNELS;
    uint64_t amount = (uint64_t)(1 + (w->thread + i) % 5);
    tg_store_op op = charge(id, (uint8_t)(0xa0 + chan), chan, amount, MP_CREDIT);
    int rc = tg_store_write(w->st, &op, 1);
    char line[96];
    /* One write per line, shorter than PIPE_BUF: lines from threads never interleave. */
    int len = rc == 0 ? snprintf(line, sizeof(line), "A %s %d %llu\n", id, chan,
                                 (unsigned long long)amount)
                      : snprintf(line, sizeof(line), "R %s %d\n", id, rc);
    if (write(w->fd, line, (size_t)len) != len) _exit(3);
  }
  return NULL;
}

static void mp_child(const char *uri, int proc, int nthreads, int first_thread, int fd) {
  tg_store *st;
  if (tg_store_open(&st, uri, NULL) != 0) _exit(2);
  pthread_t th[MP_THREADS];
  mp_worker w[MP_THREADS];
  for (int i = 0; i < nthreads; i++) {
    w[i] = (mp_worker){st, proc, first_thread + i, fd};
    if (pthread_create(&th[i], NULL, mp_worker_main, &w[i]) != 0) _exit(4);
  }
  for (int i = 0; i < nthreads; i++) pthread_join(th[i], NULL);
  tg_store_close(st);
  _exit(0);
}

typedef struct {
  char id[48];
  int chan;
  uint64_t amount;
} mp_ack;

typedef struct {
  mp_ack *acks;
  size_t n, cap;
  size_t refused;
  size_t other_errors;
  char part[128];
  size_t plen;
} mp_log;

static void mp_line(mp_log *lg, const char *line) {
  if (line[0] == 'A') {
    char id[48];
    int chan;
    unsigned long long amount;
    const char *p = line + 2, *sp = strchr(p, ' ');
    if (sp == NULL || (size_t)(sp - p) >= sizeof(id)) return;
    memcpy(id, p, (size_t)(sp - p));
    id[sp - p] = 0;
    char *end;
    chan = (int)strtol(sp + 1, &end, 10);
    amount = strtoull(end, NULL, 10);
    if (lg->n == lg->cap) {
      lg->cap = lg->cap ? lg->cap * 2 : 1024;
      lg->acks = realloc(lg->acks, lg->cap * sizeof(mp_ack));
    }
    mp_ack *a = &lg->acks[lg->n++];
    snprintf(a->id, sizeof(a->id), "%s", id);
    a->chan = chan;
    a->amount = amount;
  } else if (line[0] == 'R') {
    const char *sp = strrchr(line, ' ');
    int rc = sp ? (int)strtol(sp + 1, NULL, 10) : 0;
    if (rc == TG_ESTORE_LIMIT) lg->refused++;
    else lg->other_errors++;
  }
}

static void mp_feed(mp_log *lg, const char *buf, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (buf[i] == '\n') {
      lg->part[lg->plen] = 0;
      mp_line(lg, lg->part);
      lg->plen = 0;
    } else if (lg->plen < sizeof(lg->part) - 1) {
      lg->part[lg->plen++] = buf[i];
    }
  }
}

typedef struct {
  tg_u256 sum;
  tg_u256 running;
  uint64_t n;
  int in_order; /* each row's cumulative_after == the running sum through it */
} cum_check;

static int cum_row(void *arg, const tg_store_charge *c) {
  cum_check *k = arg;
  if (tg_u256_add(&k->running, &k->running, &c->amount) < 0) return TG_EOVERFLOW;
  if (tg_u256_cmp(&k->running, &c->cumulative_after) != 0) k->in_order = 0;
  k->sum = k->running;
  k->n++;
  return 0;
}

static void test_pg_multiprocess_sigkill(void) {
  char uri[256];
  tg_store *st = open_fresh(uri, sizeof(uri));
  if (!st) return;
  for (int ch = 1; ch <= MP_CHANNELS; ch++) {
    tg_store_op setup[2] = {channel_put((uint8_t)ch, (uint8_t)(0xa0 + ch), 1000000, 1),
                            voucher((uint8_t)ch, MP_CEILING, (uint8_t)ch)};
    CHECK_OK(tg_store_write(st, setup, 2));
  }
  tg_store_close(st);

  unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
  srand(seed);
  int kill_after = 100 + rand() % 400; /* acknowledgements from the victim before the kill */
  int fds[MP_PROCS];
  pid_t pids[MP_PROCS];
  int first = 0;
  fflush(stdout);
  for (int p = 0; p < MP_PROCS; p++) {
    int nthreads = MP_THREADS / MP_PROCS + (p < MP_THREADS % MP_PROCS ? 1 : 0);
    int pfd[2];
    CHECK(pipe(pfd) == 0);
    pid_t pid = fork();
    if (pid == 0) {
      close(pfd[0]);
      for (int q = 0; q < p; q++) close(fds[q]);
      mp_child(uri, p, nthreads, first, pfd[1]);
    }
    close(pfd[1]);
    fds[p] = pfd[0];
    pids[p] = pid;
    first += nthreads;
  }
  const int victim = MP_PROCS - 1;
  mp_log logs[MP_PROCS];
  memset(logs, 0, sizeof(logs));
  int open_fds = MP_PROCS, killed = 0;
  struct timespec t0, t;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  while (open_fds > 0) {
    clock_gettime(CLOCK_MONOTONIC, &t);
    long el = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
    if (!killed && ((int)logs[victim].n >= kill_after || el > 60000)) {
      kill(pids[victim], SIGKILL);
      killed = 1;
    }
    if (el > 110000) break; /* a hung child: fail below rather than hang the suite */
    struct pollfd pf[MP_PROCS];
    int map[MP_PROCS], np = 0;
    for (int p = 0; p < MP_PROCS; p++)
      if (fds[p] >= 0) {
        pf[np] = (struct pollfd){fds[p], POLLIN, 0};
        map[np++] = p;
      }
    if (poll(pf, (nfds_t)np, 100) <= 0) continue;
    for (int i = 0; i < np; i++) {
      if (!(pf[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char buf[8192];
      ssize_t got = read(pf[i].fd, buf, sizeof(buf));
      if (got <= 0) {
        close(fds[map[i]]);
        fds[map[i]] = -1;
        open_fds--;
        continue;
      }
      mp_feed(&logs[map[i]], buf, (size_t)got);
    }
  }
  for (int p = 0; p < MP_PROCS; p++) {
    if (fds[p] >= 0) {
      kill(pids[p], SIGKILL);
      close(fds[p]);
    }
    int status;
    waitpid(pids[p], &status, 0);
    if (p == victim)
      CHECKF(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "victim status %d", status);
    else
      CHECKF(WIFEXITED(status) && WEXITSTATUS(status) == 0, "instance %d status %d", p, status);
  }

  CHECK_OK(tg_store_open(&st, uri, NULL));
  if (!st) return;
  /* Every acknowledged charge is in the database with its amount, on its channel. */
  uint64_t acked_sum[MP_CHANNELS + 1] = {0};
  size_t missing = 0, wrong = 0, total_acked = 0, refused = 0, errors = 0;
  for (int p = 0; p < MP_PROCS; p++) {
    total_acked += logs[p].n;
    refused += logs[p].refused;
    errors += logs[p].other_errors;
    for (size_t i = 0; i < logs[p].n; i++) {
      mp_ack *a = &logs[p].acks[i];
      tg_store_charge c;
      if (tg_store_charge_get(st, a->id, &c) != 0) {
        missing++;
        continue;
      }
      if (u64(&c.amount) != a->amount || c.channel_id.b[31] != a->chan) wrong++;
      if (a->chan >= 1 && a->chan <= MP_CHANNELS) acked_sum[a->chan] += a->amount;
    }
  }
  CHECKF(missing == 0, "%zu of %zu acknowledged charges lost (seed %u)", missing, total_acked,
         seed);
  CHECK_INT(wrong, 0);
  CHECKF(errors == 0, "%zu charges failed with errors other than the limit", errors);
  CHECKF(refused > 0, "the load never reached a channel's cap");
  /* The survivors finished every charge they attempted. */
  for (int p = 0; p < MP_PROCS; p++) {
    if (p == victim) continue;
    int nthreads = MP_THREADS / MP_PROCS + (p < MP_THREADS % MP_PROCS ? 1 : 0);
    CHECK_INT(logs[p].n + logs[p].refused, (size_t)nthreads * MP_PER_THREAD);
  }
  /* Per channel: charged == the sum of its rows == the sum of acknowledged charges (plus, at
   * most, one in-flight charge per thread of the killed instance, committed but not yet
   * acknowledged when it died), never above ceiling + credit; cumulative_after runs in id
   * order, i.e. the charges of one channel were serialized across the instances. */
  uint64_t unacked_total = 0;
  int victim_threads = MP_THREADS / MP_PROCS;
  for (int ch = 1; ch <= MP_CHANNELS; ch++) {
    tg_store_channel chv;
    tg_hash id = hash((uint8_t)ch);
    CHECK_OK(tg_store_channel_get(st, &id, &chv));
    cum_check k = {.in_order = 1};
    CHECK_OK(tg_store_charges_by_channel(st, &id, 0, 0, cum_row, &k));
    CHECK(tg_u256_cmp(&k.sum, &chv.charged) == 0);
    CHECK_INT(k.n, chv.charge_count);
    CHECKF(k.in_order, "channel %d: cumulative_after out of order", ch);
    uint64_t charged = u64(&chv.charged);
    CHECKF(charged <= MP_CEILING + MP_CREDIT, "channel %d overspent: %llu", ch,
           (unsigned long long)charged);
    CHECKF(charged >= acked_sum[ch], "channel %d: charged %llu < acknowledged %llu", ch,
           (unsigned long long)charged, (unsigned long long)acked_sum[ch]);
    unacked_total += charged - acked_sum[ch];
    tg_store_totals tt;
    tg_address pa = addr((uint8_t)(0xa0 + ch));
    CHECK_OK(tg_store_totals_get(st, &pa, TG_SCHEME_CHANNEL, &tt));
    CHECK(tg_u256_cmp(&tt.charged, &chv.charged) == 0);
    CHECK_INT(tt.count, chv.charge_count);
  }
  CHECKF(unacked_total <= (uint64_t)victim_threads * 5, "%llu charged but never acknowledged",
         (unsigned long long)unacked_total);
  tg_store_close(st);
  printf("    multiprocess: %zu acknowledged, %zu refused at the cap, %llu in flight at the "
         "kill (after %d acks of the victim, seed %u)\n",
         total_acked, refused, (unsigned long long)unacked_total, kill_after, seed);
  for (int p = 0; p < MP_PROCS; p++) free(logs[p].acks);
}


/* ------------------------------------------------------------------------- */
/* Shared admission: holds from two instances on one channel never pass min(ceiling, balance)
 * + credit; a charge turns its hold into the charge; a dead instance's holds are reclaimed. */

static tg_store_op reserve_op(const char *req, const char *inst, uint64_t amount, uint64_t credit) {
  tg_store_op op;
  memset(&op, 0, sizeof(op));
  op.kind = TG_STORE_OP_RESERVE;
  op.u.reserve.channel_id = hash(1);
  op.u.reserve.request_id = req;
  op.u.reserve.instance = inst;
  op.u.reserve.amount = u(amount);
  op.u.reserve.credit_limit = u(credit);
  op.u.reserve.ttl_ms = 600000;
  return op;
}

static tg_store_op alive_op(const char *inst, int64_t ttl_ms) {
  static char names[4][80];
  static int k;
  char *name = names[k++ & 3];
  snprintf(name, 80, "instance:%s", inst);
  tg_store_op op;
  memset(&op, 0, sizeof(op));
  op.kind = TG_STORE_OP_LEASE_ACQUIRE;
  op.u.lease.name = name;
  op.u.lease.holder = inst;
  op.u.lease.ttl_ms = ttl_ms;
  return op;
}

static void test_pg_shared_reservations(void) {
  char uri[256];
  tg_store *a = store_with_channel(uri, sizeof(uri), 1000); /* balance 1,000,000, ceiling 1000 */
  tg_store *b = NULL;
  if (!a) return;
  CHECK_OK(tg_store_open(&b, uri, NULL));
  if (!b) goto out;
  tg_store_op op = alive_op("gw-a", 60000);
  CHECK_OK(tg_store_write(a, &op, 1));
  op = alive_op("gw-b", 60000);
  CHECK_OK(tg_store_write(b, &op, 1));
  /* a holds 600; b cannot hold 500 more (600 + 500 > 1000 + 0), but 400 fits */
  op = reserve_op("r-a1", "gw-a", 600, 0);
  CHECK_OK(tg_store_write(a, &op, 1));
  CHECK_INT(u64(&op.u.reserve.out_reserved), 600);
  op = reserve_op("r-b1", "gw-b", 500, 0);
  CHECK_ERR(tg_store_write(b, &op, 1), TG_ECHANNEL_SHORT);
  CHECK_INT(u64(&op.u.reserve.out_reserved), 600);
  CHECK_INT(u64(&op.u.reserve.out_ceiling), 1000);
  CHECK_INT(op.u.reserve.out_reclaimed, 0); /* a is alive: nothing to reclaim */
  op = reserve_op("r-b1", "gw-b", 500, 100); /* a credit limit of 100 makes room */
  CHECK_OK(tg_store_write(b, &op, 1));
  CHECK_INT(u64(&op.u.reserve.out_reserved), 1100);
  /* a's call costs 250 of its 600: charged 250, reserved 500 (b's) */
  tg_store_op ch = charge("r-a1", 0xa1, 1, 250, 0);
  ch.u.charge.release_reservation = 1;
  CHECK_OK(tg_store_write(a, &ch, 1));
  CHECK_INT(u64(&ch.u.charge.out_charged), 250);
  op = reserve_op("r-a2", "gw-a", 250, 0); /* 250 + 500 + 250 = 1000: fits exactly */
  CHECK_OK(tg_store_write(a, &op, 1));
  CHECK_INT(u64(&op.u.reserve.out_charged), 250);
  CHECK_INT(u64(&op.u.reserve.out_reserved), 750);
  op = reserve_op("r-a3", "gw-a", 1, 0);
  CHECK_ERR(tg_store_write(a, &op, 1), TG_ECHANNEL_SHORT);
  /* a's second call fails upstream: its hold is given back (twice is a no-op) */
  op = reserve_op("r-a2", "gw-a", 0, 0);
  op.kind = TG_STORE_OP_UNRESERVE;
  CHECK_OK(tg_store_write(a, &op, 1));
  CHECK_INT(u64(&op.u.reserve.out_reserved), 500);
  CHECK_OK(tg_store_write(a, &op, 1));
  CHECK_INT(u64(&op.u.reserve.out_reserved), 500);
  /* a duplicate request id cannot hold twice */
  op = reserve_op("r-b1", "gw-a", 1, 0);
  CHECK_ERR(tg_store_write(a, &op, 1), TG_EEXISTS);
  /* b dies: its liveness lease lapses, and a's next refusal reclaims b's 500 */
  op = alive_op("gw-b", 1);
  CHECK_OK(tg_store_write(b, &op, 1));
  tg_store_close(b);
  b = NULL;
  usleep(20000);
  op = reserve_op("r-a4", "gw-a", 700, 0); /* 250 + 500 + 700 > 1000: reclaim, then 950 */
  CHECK_OK(tg_store_write(a, &op, 1));
  CHECK_INT(op.u.reserve.out_reclaimed, 1);
  CHECK_INT(u64(&op.u.reserve.out_reserved), 700);
  /* b's late charge (its hold is gone) is still bounded by ceiling + credit only */
  ch = charge("r-b1", 0xa1, 1, 100, 0);
  ch.u.charge.release_reservation = 1;
  CHECK_OK(tg_store_write(a, &ch, 1));
  CHECK_INT(u64(&ch.u.charge.out_charged), 350);
  op = reserve_op("r-a5", "gw-a", 1, 0); /* 350 + 700 + 1 > 1000 */
  CHECK_ERR(tg_store_write(a, &op, 1), TG_ECHANNEL_SHORT);
  /* a lapsed call (past its ttl) is reclaimed even though its instance lives */
  op = reserve_op("r-a6", "gw-a", 0, 0);
  op.kind = TG_STORE_OP_UNRESERVE;
  op.u.reserve.request_id = "r-a4";
  CHECK_OK(tg_store_write(a, &op, 1));
  CHECK_INT(u64(&op.u.reserve.out_reserved), 0);
  op = reserve_op("r-a7", "gw-a", 600, 0);
  op.u.reserve.ttl_ms = 1;
  CHECK_OK(tg_store_write(a, &op, 1));
  usleep(20000);
  op = reserve_op("r-a8", "gw-a", 600, 0);
  CHECK_OK(tg_store_write(a, &op, 1));
  CHECK_INT(op.u.reserve.out_reclaimed, 1);
  CHECK_INT(u64(&op.u.reserve.out_reserved), 600);
  /* the database agrees: reserved equals the sum of the live holds */
  char err[256];
  CHECK_OK(sql(uri, "DO $$ BEGIN IF (SELECT count(*) FROM reservations) <> 1 OR (SELECT "
                    "get_byte(reserved, 30) * 256 + get_byte(reserved, 31) FROM channels) <> 600 "
                    "THEN RAISE EXCEPTION 'bad holds'; END IF; END $$",
               err, sizeof(err)));
  /* withdrawing channels admit nothing */
  tg_store_op sync = channel_put(1, 0xa1, 1000000, 11);
  sync.kind = TG_STORE_OP_CHANNEL_SYNC;
  sync.u.channel.chain.withdraw_requested_at = 1700000000;
  sync.u.channel.chain.status = TG_CHANNEL_WITHDRAWING;
  CHECK_OK(tg_store_write(a, &sync, 1));
  op = reserve_op("r-a9", "gw-a", 1, 0);
  CHECK_ERR(tg_store_write(a, &op, 1), TG_ECHANNEL_WITHDRAWING);
out:
  tg_store_close(b);
  tg_store_close(a);
}

/* ------------------------------------------------------------------------- */
/* The pipelined batch (store_pg.c conn_batch): round trips, and the same results as the
 * statement-by-statement path. */

typedef struct {
  atomic_int done;
  int err;
  tg_store_op out[2];
} one_result;

static void one_cb(void *arg, int err, const tg_store_op *ops, size_t n) {
  one_result *r = arg;
  r->err = err;
  for (size_t i = 0; i < n && i < 2; i++) r->out[i] = ops[i];
  atomic_store(&r->done, 1);
}

static void wait_one(one_result *r) {
  for (int i = 0; i < 20000 && !atomic_load(&r->done); i++) usleep(1000);
  CHECK(atomic_load(&r->done));
}

static uint64_t rts(tg_store *st) {
  tg_store_stats s;
  tg_store_get_stats(st, &s);
  return s.round_trips;
}

static void test_pg_round_trips(void) {
  char uri[256];
  tg_store *st = store_with_channel(uri, sizeof(uri), 100); /* balance 1,000,000, ceiling 100 */
  if (!st) return;
  tg_store_op op = alive_op("gw-rt", 60000);
  CHECK_OK(tg_store_write(st, &op, 1));
  /* A paid call as the pay layer writes it: [VOUCHER, RESERVE] at admission, [VOUCHER,
   * CHARGE] at completion. Rows the writer does not remember yet: one round trip to lock and
   * read them, one to write and COMMIT (the first batch also prepares the statements); then,
   * on the rows it remembers, ONE round trip each (guards, writes, COMMIT). */
  for (int round = 0; round < 3; round++) {
    char rid[32];
    snprintf(rid, sizeof(rid), "rt-call-%d", round);
    uint64_t r0 = rts(st);
    tg_store_op adm[2] = {voucher(1, 100 + 10 * (uint64_t)round, 0x21), reserve_op(rid, "gw-rt", 10, 0)};
    CHECK_OK(tg_store_write(st, adm, 2));
    CHECK_INT(u64(&adm[1].u.reserve.out_reserved), 10);
    uint64_t r1 = rts(st);
    tg_store_op done[2] = {voucher(1, 100 + 10 * (uint64_t)round, 0x21), charge(rid, 0xa1, 1, 7, 0)};
    done[1].u.charge.release_reservation = 1;
    CHECK_OK(tg_store_write(st, done, 2));
    CHECK_INT(u64(&done[1].u.charge.out_charged), 7 * (uint64_t)(round + 1));
    CHECK(done[1].u.charge.out_id > 0);
    uint64_t r2 = rts(st);
    if (round > 0) {
      CHECKF(r1 - r0 == 1, "admission: %llu round trips", (unsigned long long)(r1 - r0));
      CHECKF(r2 - r1 == 1, "completion: %llu round trips", (unsigned long long)(r2 - r1));
    }
  }
  /* Another instance charges the channel: the remembered row is stale, the guard refuses it,
   * and the batch runs again on the rows read (1, a ROLLBACK, then 2 round trips) with the
   * right total; for a while after that the writer reads its rows (2 round trips). */
  tg_store *other = NULL;
  CHECK_OK(tg_store_open(&other, uri, NULL));
  if (other) {
    tg_store_op oc = charge("rt-other", 0xa1, 1, 3, 0);
    CHECK_OK(tg_store_write(other, &oc, 1));
    CHECK_INT(u64(&oc.u.charge.out_charged), 24);
    tg_store_close(other);
  }
  uint64_t q0 = rts(st);
  tg_store_op c1 = charge("rt-after-other", 0xa1, 1, 2, 0);
  CHECK_OK(tg_store_write(st, &c1, 1));
  CHECK_INT(u64(&c1.u.charge.out_charged), 26);
  uint64_t q1 = rts(st);
  CHECKF(q1 - q0 == 4, "stale row: %llu round trips", (unsigned long long)(q1 - q0));
  tg_store_op c2 = charge("rt-after-other-2", 0xa1, 1, 1, 0);
  CHECK_OK(tg_store_write(st, &c2, 1));
  CHECK_INT(u64(&c2.u.charge.out_charged), 27);
  CHECKF(rts(st) - q1 == 2, "after a stale row: %llu round trips", (unsigned long long)(rts(st) - q1));
  /* The chain follower's sync (the statement-by-statement path) changes the balance: the
   * remembered rows are dropped, and a hold past the new balance is refused. */
  usleep(2100 * 1000); /* past the reading period */
  tg_store_op sync = channel_put(1, 0xa1, 40, 12); /* balance 40: charged 27 + 13 = 40 */
  sync.kind = TG_STORE_OP_CHANNEL_SYNC;
  CHECK_OK(tg_store_write(st, &sync, 1));
  tg_store_op big = reserve_op("rt-big", "gw-rt", 14, 0);
  CHECK_ERR(tg_store_write(st, &big, 1), TG_ECHANNEL_SHORT);
  CHECK_INT(u64(&big.u.reserve.out_balance), 40);
  tg_store_op fits = reserve_op("rt-fits", "gw-rt", 13, 0);
  CHECK_OK(tg_store_write(st, &fits, 1));
  fits.kind = TG_STORE_OP_UNRESERVE;
  uint64_t u0 = rts(st);
  CHECK_OK(tg_store_write(st, &fits, 1));
  CHECK_INT(u64(&fits.u.reserve.out_reserved), 0);
  CHECKF(rts(st) - u0 == 1, "unreserve: %llu round trips", (unsigned long long)(rts(st) - u0));
  sync = channel_put(1, 0xa1, 1000000, 13);
  sync.kind = TG_STORE_OP_CHANNEL_SYNC;
  CHECK_OK(tg_store_write(st, &sync, 1));
  char err[256];
  /* the holds are gone and the channel's running totals agree with its rows */
  CHECK_OK(sql(uri, "DO $$ BEGIN IF (SELECT count(*) FROM reservations) <> 0 OR (SELECT "
                    "get_byte(reserved, 31) FROM channels) <> 0 OR (SELECT charge_count FROM "
                    "channels) <> 6 THEN RAISE EXCEPTION 'bad'; END IF; END $$",
               err, sizeof(err)));

  /* One batch (queued behind another session's row lock) mixing accepted and refused
   * submissions: refusals are decided in C and undo their own ops only (B's raised ceiling
   * must not let C through), and the batch still costs two round trips. */
  PGconn *lock = hold_channel(uri);
  one_result gate = {0}, res[6];
  memset(res, 0, sizeof(res));
  tg_store_op g = charge("rt-gate", 0xa1, 1, 1, 0); /* charged 27 + 1 = 28; ceiling 120 */
  CHECK_OK(tg_store_submit(st, &g, 1, one_cb, &gate));
  usleep(100000);
  uint64_t r0 = rts(st);
  tg_store_stats s0;
  tg_store_get_stats(st, &s0);
  tg_store_op a = charge("rt-a", 0xa1, 1, 60, 0);                         /* 88: fits */
  tg_store_op b[2] = {voucher(1, 150, 0x31), charge("rt-b", 0xa1, 1, 100, 0)}; /* 188 > 150 */
  tg_store_op cc = charge("rt-c", 0xa1, 1, 50, 0);                         /* 138 > 120 (<= 150) */
  tg_store_op d[2] = {voucher(1, 200, 0x41), charge("rt-d", 0xa1, 1, 50, 0)}; /* 138 <= 200 */
  tg_store_op e = charge("rt-e", 0xa1, -1, 5, 0);                         /* exact: no channel */
  tg_store_op f = reserve_op("rt-f", "gw-rt", 69, 0);                      /* 138 + 69 > 200 */
  CHECK_OK(tg_store_submit(st, &a, 1, one_cb, &res[0]));
  CHECK_OK(tg_store_submit(st, b, 2, one_cb, &res[1]));
  CHECK_OK(tg_store_submit(st, &cc, 1, one_cb, &res[2]));
  CHECK_OK(tg_store_submit(st, d, 2, one_cb, &res[3]));
  CHECK_OK(tg_store_submit(st, &e, 1, one_cb, &res[4]));
  CHECK_OK(tg_store_submit(st, &f, 1, one_cb, &res[5]));
  release_channel(lock);
  wait_one(&gate);
  for (int i = 0; i < 6; i++) wait_one(&res[i]);
  CHECK_OK(gate.err);
  CHECK_OK(res[0].err);
  CHECK_INT(u64(&res[0].out[0].u.charge.out_charged), 88);
  CHECK_ERR(res[1].err, TG_ESTORE_LIMIT);
  CHECK_ERR(res[2].err, TG_ESTORE_LIMIT);
  CHECK_OK(res[3].err);
  CHECK_INT(res[3].out[0].u.voucher.out_raised, 1);
  CHECK_INT(u64(&res[3].out[1].u.charge.out_charged), 138);
  CHECK_OK(res[4].err);
  CHECK_ERR(res[5].err, TG_ECHANNEL_SHORT);
  CHECK_INT(u64(&res[5].out[0].u.reserve.out_charged), 138);
  CHECK_INT(u64(&res[5].out[0].u.reserve.out_ceiling), 200);
  tg_store_stats s1;
  tg_store_get_stats(st, &s1);
  CHECKF(rts(st) - r0 <= 2 * (s1.commits - s0.commits) + 2, "%llu round trips for %llu commits",
         (unsigned long long)(rts(st) - r0), (unsigned long long)(s1.commits - s0.commits));
  tg_store_channel chv;
  tg_hash id = hash(1);
  CHECK_OK(tg_store_channel_get(st, &id, &chv));
  CHECK_INT(u64(&chv.charged), 138);
  CHECK_INT(u64(&chv.ceiling), 200);
  CHECK_INT(chv.ceiling_sig_len, 65);
  CHECK_INT(chv.ceiling_sig[0], 0x41);
  CHECK_INT(chv.charge_count, 9);
  tg_store_totals t;
  CHECK_OK(tg_store_totals_get(st, &chv.cfg.payer, TG_SCHEME_CHANNEL, &t));
  CHECK_INT(u64(&t.charged), 138);
  CHECK_INT(t.count, 9);
  CHECK_OK(tg_store_totals_get(st, &chv.cfg.payer, TG_SCHEME_EXACT, &t));
  CHECK_INT(u64(&t.charged), 5);
  CHECK_INT(t.count, 1);
  tg_store_charge row;
  CHECK_ERR(tg_store_charge_get(st, "rt-b", &row), TG_ENOTFOUND);
  CHECK_ERR(tg_store_charge_get(st, "rt-c", &row), TG_ENOTFOUND);
  CHECK_OK(tg_store_charge_get(st, "rt-d", &row));
  CHECK_INT(u64(&row.cumulative_after), 138);
  CHECK_OK(tg_store_charge_get(st, "rt-a", &row));
  CHECK_INT(u64(&row.cumulative_after), 88);

  /* Headroom leases (docs/STORE.md): a slice of units is one submission; a charge on a unit
   * ends the unit's hold (hold_id), and a charge with the next slice queued beside it
   * (tg_store_submit_pair) is still ONE round trip on remembered rows. */
  tg_store_op warm = reserve_op("rt-unit-0", "gw-rt", 5, 0);
  CHECK_OK(tg_store_write(st, &warm, 1)); /* the writer reads its rows again, then remembers */
  tg_store_op slice[4];
  char uid[4][16];
  for (int i = 0; i < 4; i++) {
    snprintf(uid[i], sizeof uid[i], "rt-unit-%d", i + 1);
    slice[i] = reserve_op(uid[i], "gw-rt", 5, 0);
  }
  uint64_t h0 = rts(st);
  CHECK_OK(tg_store_write(st, slice, 4));
  CHECK_INT(u64(&slice[3].u.reserve.out_reserved), 25);
  CHECKF(rts(st) - h0 == 1, "slice: %llu round trips", (unsigned long long)(rts(st) - h0));
  tg_store_op uc = charge("rt-on-unit-1", 0xa1, 1, 4, 0);
  uc.u.charge.release_reservation = 1;
  uc.u.charge.hold_id = "rt-unit-1";
  h0 = rts(st);
  CHECK_OK(tg_store_write(st, &uc, 1));
  CHECKF(rts(st) - h0 == 1, "charge on a unit: %llu round trips", (unsigned long long)(rts(st) - h0));
  CHECK_INT(uc.u.charge.out_hold_found, 1);
  CHECK_INT(u64(&uc.u.charge.out_charged), 142);
  CHECK_INT(u64(&uc.u.charge.out_reserved), 20);
  CHECK_INT(u64(&uc.u.charge.out_ceiling), 200);
  /* a charge on the next unit with a slice of two more, paired */
  struct event_base *eb = event_base_new();
  one_result pr = {0}, sr = {0};
  tg_store_op pc = charge("rt-on-unit-2", 0xa1, 1, 5, 0);
  pc.u.charge.release_reservation = 1;
  pc.u.charge.hold_id = "rt-unit-2";
  tg_store_op more[2] = {reserve_op("rt-unit-5", "gw-rt", 5, 0), reserve_op("rt-unit-6", "gw-rt", 5, 0)};
  h0 = rts(st);
  CHECK_OK(tg_store_submit_pair(st, &pc, 1, eb, one_cb, &pr, more, 2, one_cb, &sr));
  for (int i = 0; i < 5000 && !atomic_load(&pr.done); i++) {
    event_base_loop(eb, EVLOOP_NONBLOCK);
    usleep(1000);
  }
  wait_one(&sr);
  CHECK_OK(pr.err);
  CHECK_OK(sr.err);
  CHECKF(rts(st) - h0 == 1, "charge + slice: %llu round trips", (unsigned long long)(rts(st) - h0));
  CHECK_INT(u64(&pr.out[0].u.charge.out_charged), 147);
  CHECK_INT(u64(&sr.out[1].u.reserve.out_reserved), 25); /* units 0, 3, 4, 5, 6 */
  /* a charge naming a hold that is not there: charged, bounded by the cap, found = 0 */
  tg_store_op gone = charge("rt-on-gone", 0xa1, 1, 1, 0);
  gone.u.charge.release_reservation = 1;
  gone.u.charge.hold_id = "rt-unit-2";
  CHECK_OK(tg_store_write(st, &gone, 1));
  CHECK_INT(gone.u.charge.out_hold_found, 0);
  CHECK_INT(u64(&gone.u.charge.out_reserved), 25);
  /* hold_id without release_reservation is refused before anything is queued */
  gone.u.charge.release_reservation = 0;
  CHECK_ERR(tg_store_write(st, &gone, 1), TG_EINVAL);
  event_base_free(eb);
  tg_store_close(st);
}

/* ------------------------------------------------------------------------- */
/* Headroom leases: two instances racing on one channel up to its ceiling, each taking slices
 * of units and charging on them (falling back to per-call holds near the ceiling), never
 * pass ceiling + credit; every charge on a unit succeeds; nothing is left held. */

typedef struct {
  tg_store *st;
  const char *inst;
  int idx;
  uint64_t acked, unit_charges, unit_refused, percall_charges;
} hr_racer;

static void *hr_race_main(void *p) {
  hr_racer *r = p;
  int refused = 0;
  for (int round = 0; round < 400 && refused < 3; round++) {
    enum { K = 7 };
    char ids[K][64];
    tg_store_op sl[K];
    for (int i = 0; i < K; i++) {
      snprintf(ids[i], sizeof ids[i], "hr-%s-%d-%d", r->inst, round, i);
      sl[i] = reserve_op(ids[i], r->inst, 10, 20);
    }
    if (tg_store_write(r->st, sl, K) == 0) {
      refused = 0;
      for (int i = 0; i < K; i++) {
        char rid[80];
        snprintf(rid, sizeof rid, "c-%.60s", ids[i]);
        tg_store_op c = charge(rid, 0xa1, 1, 10, 20);
        c.u.charge.release_reservation = 1;
        c.u.charge.hold_id = ids[i];
        if (i == K - 1 && round % 3 == 0) { /* a call that failed upstream: unit given back */
          tg_store_op un = reserve_op(ids[i], r->inst, 0, 0);
          un.kind = TG_STORE_OP_UNRESERVE;
          if (tg_store_write(r->st, &un, 1) != 0) r->unit_refused++;
          continue;
        }
        int rc = tg_store_write(r->st, &c, 1);
        if (rc == 0 && c.u.charge.out_hold_found) {
          r->acked += 10;
          r->unit_charges++;
        } else {
          r->unit_refused++;
        }
      }
      continue;
    }
    /* near the ceiling: a hold per call */
    char rid[48];
    snprintf(rid, sizeof rid, "pc-%s-%d", r->inst, round);
    tg_store_op h = reserve_op(rid, r->inst, 10, 20);
    if (tg_store_write(r->st, &h, 1) != 0) {
      refused++;
      continue;
    }
    tg_store_op c = charge(rid, 0xa1, 1, 10, 20);
    c.u.charge.release_reservation = 1;
    if (tg_store_write(r->st, &c, 1) == 0) {
      r->acked += 10;
      r->percall_charges++;
    } else {
      r->unit_refused++;
    }
  }
  return NULL;
}

static void test_pg_headroom_race(void) {
  char uri[256];
  tg_store *a = store_with_channel(uri, sizeof(uri), 1000); /* ceiling 1000, credit 20 */
  tg_store *b = NULL;
  if (!a) return;
  CHECK_OK(tg_store_open(&b, uri, NULL));
  if (!b) goto out;
  tg_store_op op = alive_op("gw-a", 60000);
  CHECK_OK(tg_store_write(a, &op, 1));
  op = alive_op("gw-b", 60000);
  CHECK_OK(tg_store_write(b, &op, 1));
  hr_racer ra = {a, "gw-a", 0, 0, 0, 0, 0}, rb = {b, "gw-b", 1, 0, 0, 0, 0};
  pthread_t ta, tb;
  pthread_create(&ta, NULL, hr_race_main, &ra);
  pthread_create(&tb, NULL, hr_race_main, &rb);
  pthread_join(ta, NULL);
  pthread_join(tb, NULL);
  CHECK_INT(ra.unit_refused + rb.unit_refused, 0); /* a unit is money held: its charge fits */
  CHECK(ra.unit_charges > 0 && rb.unit_charges > 0);
  tg_store_channel chv;
  tg_hash id = hash(1);
  CHECK_OK(tg_store_channel_get(a, &id, &chv));
  /* exactly the cap: 1000 + 20 credit, in units of 10; both instances' charges acknowledged */
  CHECK_INT(u64(&chv.charged), 1020);
  CHECK_INT(ra.acked + rb.acked, 1020);
  char err[256];
  CHECK_OK(sql(uri, "DO $$ BEGIN IF (SELECT count(*) FROM reservations) <> 0 OR (SELECT "
                    "get_byte(reserved, 31) FROM channels) <> 0 THEN RAISE EXCEPTION 'held'; "
                    "END IF; END $$",
               err, sizeof(err)));
  printf("    race: a %llu on units + %llu per call, b %llu + %llu\n",
         (unsigned long long)ra.unit_charges, (unsigned long long)ra.percall_charges,
         (unsigned long long)rb.unit_charges, (unsigned long long)rb.percall_charges);
out:
  tg_store_close(b);
  tg_store_close(a);
}

/* A killed instance's lease: its units count against the channel while its liveness lease
 * lives, and are reclaimed once it lapsed; a late charge on a reclaimed unit is still
 * bounded by the cap and says its hold was gone. */
static void test_pg_headroom_dead_instance(void) {
  char uri[256];
  tg_store *a = store_with_channel(uri, sizeof(uri), 1000);
  tg_store *b = NULL;
  if (!a) return;
  CHECK_OK(tg_store_open(&b, uri, NULL));
  if (!b) goto out;
  tg_store_op op = alive_op("gw-dead", 400);
  CHECK_OK(tg_store_write(a, &op, 1));
  op = alive_op("gw-live", 60000);
  CHECK_OK(tg_store_write(b, &op, 1));
  tg_store_op sl[8];
  char ids[8][16];
  for (int i = 0; i < 8; i++) {
    snprintf(ids[i], sizeof ids[i], "dead-u%d", i);
    sl[i] = reserve_op(ids[i], "gw-dead", 100, 0);
  }
  CHECK_OK(tg_store_write(a, sl, 8));
  tg_store_op h = reserve_op("live-1", "gw-live", 300, 0);
  CHECK_ERR(tg_store_write(b, &h, 1), TG_ECHANNEL_SHORT); /* 800 held by a live instance */
  CHECK_INT(h.u.reserve.out_reclaimed, 0);
  tg_store_close(a); /* "killed": no graceful give-back, its liveness lease lapses */
  a = NULL;
  usleep(500 * 1000);
  h = reserve_op("live-1", "gw-live", 300, 0);
  CHECK_OK(tg_store_write(b, &h, 1));
  CHECK_INT(h.u.reserve.out_reclaimed, 8); /* the dead instance's 8 units */
  CHECK_INT(u64(&h.u.reserve.out_reserved), 300);
  char err[256];
  CHECK_OK(sql(uri, "DO $$ BEGIN IF (SELECT count(*) FROM reservations WHERE instance = "
                    "'gw-dead') <> 0 THEN RAISE EXCEPTION 'dead units left'; END IF; END $$",
               err, sizeof(err)));
  /* a charge on a reclaimed unit (an instance that was only stalled) */
  tg_store_op c = charge("late-on-dead-u0", 0xa1, 1, 100, 0);
  c.u.charge.release_reservation = 1;
  c.u.charge.hold_id = "dead-u0";
  CHECK_OK(tg_store_write(b, &c, 1));
  CHECK_INT(c.u.charge.out_hold_found, 0);
  CHECK_INT(u64(&c.u.charge.out_charged), 100);
  CHECK_INT(u64(&c.u.charge.out_reserved), 300);
out:
  tg_store_close(b);
  tg_store_close(a);
}

static char skip_why[512];
static void test_pg_server(void) { tgt_skip(skip_why); }

int main(void) {
  pg = tgt_pg_start(skip_why, sizeof(skip_why));
  if (pg == NULL) {
    RUN(test_pg_server);
    return tgt_done();
  }
  RUN(test_pg_uri);
  RUN(test_pg_migrations);
  RUN(test_pg_migrate_exact_key);
  RUN(test_channel_put_sync);
  RUN(test_voucher_monotonic);
  RUN(test_charge_ceiling);
  RUN(test_pg_db_enforces_invariant);
  RUN(test_submission_atomic);
  RUN(test_validation);
  RUN(test_exact);
  RUN(test_payid);
  RUN(test_pass_usage);
  RUN(test_auth_nonces_sessions);
  RUN(test_settle_journal);
  RUN(test_leases);
  RUN(test_reads_and_totals);
  RUN(test_pg_corrupt_row);
  RUN(test_pg_group_commit);
  RUN(test_pg_fault_commit);
  RUN(test_pg_fault_txn_lost);
  RUN(test_pg_lock_timeout);
  RUN(test_pg_deadlock_retry);
  RUN(test_close_drains);
  RUN(test_write_from_callback);
  RUN(test_concurrency_64);
  RUN(test_evbase);
  RUN(test_pg_lease_takeover);
  RUN(test_pg_shared_reservations);
  RUN(test_pg_round_trips);
  RUN(test_pg_headroom_race);
  RUN(test_pg_headroom_dead_instance);
  RUN(test_pg_server_restart);
  RUN(test_pg_multiprocess_sigkill);
  int rc = tgt_done();
  tgt_pg_stop(pg);
  return rc;
}
