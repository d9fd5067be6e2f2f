/* Tests of the store: every op and constraint, migrations, group commit, 64 producers, evbase delivery, SIGKILL crash safety. */
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
#include <sqlite3.h>

#include "store/migrations_sqlite.h"
#include "store/store.h"
#include "store/store_int.h"
#include "tg_test.h"
#include "tollgate/u256.h"

static char tmpdir[64];
static int db_seq;

/* A fresh database path under the test's temporary folder. */
static void db_path(char *uri, size_t cap, char *path, size_t pcap) {
  snprintf(path, pcap, "%s/t%d.db", tmpdir, ++db_seq);
  snprintf(uri, cap, "sqlite:%s", path);
}

static tg_store *open_fresh(char *path, size_t pcap) {
  char uri[256];
  db_path(uri, sizeof(uri), path, pcap);
  tg_store *st = NULL;
  int rc = tg_store_open(&st, uri, NULL);
  CHECKF(rc == 0, "open %s: %s", uri, tg_err_name(rc));
  return st;
}

static void uri_of(const char *path, char *uri, size_t cap) {
  snprintf(uri, cap, "sqlite:%s", path);
}

#include "store_checks.h"

/* ------------------------------------------------------------------------- */

static void test_uri(void) {
  tg_store *st = (tg_store *)1;
  CHECK_ERR(tg_store_open(&st, "mysql://x", NULL), TG_ESTORE_URI);
  CHECK(st == NULL);
  CHECK_ERR(tg_store_open(&st, "sqlite:", NULL), TG_ESTORE_URI);
  CHECK_ERR(tg_store_open(&st, "sqlite::memory:", NULL), TG_ESTORE_URI);
  CHECK_ERR(tg_store_open(&st, "/no/scheme", NULL), TG_ESTORE_URI);
  CHECK_ERR(tg_store_open(&st, NULL, NULL), TG_ESTORE_URI);
  CHECK_ERR(tg_store_open(&st, "sqlite:/nonexistent-dir/x/y.db", NULL), TG_ESTORE);
  /* sqlite:///abs/path is the same file as sqlite:/abs/path */
  char uri[300], path[256];
  db_path(uri, sizeof(uri), path, sizeof(path));
  snprintf(uri, sizeof(uri), "sqlite://%s", path);
  CHECK_OK(tg_store_open(&st, uri, NULL));
  tg_store_close(st);
  CHECK(access(path, F_OK) == 0);
  tg_store_close(NULL);
}

static void test_migrations(void) {
  char uri[300], path[256];
  db_path(uri, sizeof(uri), path, sizeof(path));
  int applied = -1;
  CHECK_OK(tg_store_migrate(uri, &applied));
  CHECK_INT(applied, SQLITE_SCHEMA_LATEST);
  CHECK(SQLITE_SCHEMA_LATEST >= 5);
  CHECK_OK(tg_store_migrate(uri, &applied));
  CHECK_INT(applied, 0); /* re-running is a no-op */
  tg_store *st;
  CHECK_OK(tg_store_open(&st, uri, NULL));
  int cur, latest;
  CHECK_OK(tg_store_schema_version(st, &cur, &latest));
  CHECK_INT(cur, SQLITE_SCHEMA_LATEST);
  CHECK_INT(latest, SQLITE_SCHEMA_LATEST);
  tg_store_close(st);

  /* One row per migration, each applied once. */
  sqlite3 *db;
  CHECK(sqlite3_open(path, &db) == SQLITE_OK);
  sqlite3_stmt *s;
  CHECK(sqlite3_prepare_v2(db, "SELECT count(*), min(version), max(version) FROM schema_version",
                           -1, &s, NULL) == SQLITE_OK);
  CHECK(sqlite3_step(s) == SQLITE_ROW);
  CHECK_INT(sqlite3_column_int(s, 0), SQLITE_SCHEMA_LATEST);
  CHECK_INT(sqlite3_column_int(s, 1), 1);
  CHECK_INT(sqlite3_column_int(s, 2), SQLITE_SCHEMA_LATEST);
  sqlite3_finalize(s);
  /* WAL mode is persistent in the file. */
  CHECK(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &s, NULL) == SQLITE_OK);
  CHECK(sqlite3_step(s) == SQLITE_ROW);
  CHECK_STR((const char *)sqlite3_column_text(s, 0), "wal");
  sqlite3_finalize(s);
  /* A schema from a newer build is refused, not trampled. */
  CHECK(sqlite3_exec(db, "INSERT INTO schema_version VALUES (99, 0)", NULL, NULL, NULL) ==
        SQLITE_OK);
  sqlite3_close(db);
  CHECK_ERR(tg_store_migrate(uri, &applied), TG_ESTORE_SCHEMA);
  st = (tg_store *)1;
  CHECK_ERR(tg_store_open(&st, uri, NULL), TG_ESTORE_SCHEMA);
  CHECK(st == NULL);

  /* no_migrate: an empty database is refused instead of created. */
  char uri2[300], path2[256];
  db_path(uri2, sizeof(uri2), path2, sizeof(path2));
  tg_store_options o = {.no_migrate = 1};
  CHECK_ERR(tg_store_open(&st, uri2, &o), TG_ESTORE_SCHEMA_OLD);
  CHECK_OK(tg_store_migrate(uri2, &applied));
  CHECK_OK(tg_store_open(&st, uri2, &o));
  tg_store_close(st);
  /* init_empty: a database without a schema is created (what tollgated does on first start),
   * but one at an older version is still refused. */
  char uri4[300], path4[256];
  db_path(uri4, sizeof(uri4), path4, sizeof(path4));
  tg_store_options oe = {.no_migrate = 1, .init_empty = 1};
  CHECK_OK(tg_store_open(&st, uri4, &oe));
  int c4, l4;
  CHECK_OK(tg_store_schema_version(st, &c4, &l4));
  CHECK_INT(c4, l4);
  tg_store_close(st);
  {
    sqlite3 *d4;
    CHECK(sqlite3_open(path4, &d4) == SQLITE_OK);
    CHECK(sqlite3_exec(d4, "DELETE FROM schema_version WHERE version = (SELECT max(version) FROM schema_version)", NULL, NULL, NULL) ==
          SQLITE_OK);
    sqlite3_close(d4);
  }
  CHECK_ERR(tg_store_open(&st, uri4, &oe), TG_ESTORE_SCHEMA_OLD);
}

/* A database left at schema 2 by an older build: migrations 3 to 5 run, and 5 rekeys exact payments by payer. */
static void test_migrate_exact_key(void) {
  char uri[300], path[256];
  db_path(uri, sizeof(uri), path, sizeof(path));
  sqlite3 *db;
  CHECK(sqlite3_open(path, &db) == SQLITE_OK);
  CHECK(sqlite3_exec(db, "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, "
                         "applied_at INTEGER NOT NULL)", NULL, NULL, NULL) == SQLITE_OK);
  for (int v = 1; v <= 2; v++) {
    CHECK(sqlite3_exec(db, sqlite_migrations[v - 1], NULL, NULL, NULL) == SQLITE_OK);
    char q[96];
    snprintf(q, sizeof(q), "INSERT INTO schema_version VALUES (%d, 0)", v);
    CHECK(sqlite3_exec(db, q, NULL, NULL, NULL) == SQLITE_OK);
  }
  char row[1024];
  exact_v2_row_sql(row, sizeof(row), 0);
  CHECK(sqlite3_exec(db, row, NULL, NULL, NULL) == SQLITE_OK);
  sqlite3_close(db);
  int applied = -1;
  CHECK_OK(tg_store_migrate(uri, &applied));
  CHECK_INT(applied, SQLITE_SCHEMA_LATEST - 2);
  tg_store *st;
  CHECK_OK(tg_store_open(&st, uri, NULL));
  exact_v3_checks(st);
  tg_store_close(st);
}

/* The database itself refuses a channel row with charged > ceiling + credit limit. */
static void test_db_enforces_invariant(void) {
  char path[256];
  tg_store *st = store_with_channel(path, sizeof(path), 100);
  if (!st) return;
  tg_store_op op = charge("r1", 0xa1, 1, 100, 0);
  CHECK_OK(tg_store_write(st, &op, 1));
  tg_store_close(st);
  sqlite3 *db;
  CHECK(sqlite3_open(path, &db) == SQLITE_OK);
  char *err = NULL;
  int rc = sqlite3_exec(db,
                        "UPDATE channels SET charged = x'00000000000000000000000000000000000000"
                        "00000000000000000000000065'",
                        NULL, NULL, &err);
  CHECK_INT(rc, SQLITE_CONSTRAINT);
  sqlite3_free(err);
  /* Amounts must be 32 bytes: a short blob would compare wrongly, so it is refused. */
  rc = sqlite3_exec(db, "UPDATE channels SET charged = x'01'", NULL, NULL, NULL);
  CHECK_INT(rc, SQLITE_CONSTRAINT);
  /* A channel charge row must name its channel. */
  rc = sqlite3_exec(db,
                    "INSERT INTO charges (request_id, payer, scheme, route, model, input_tokens,"
                    " output_tokens, amount, created_at) VALUES ('x', zeroblob(20), 1, '', '',"
                    " 0, 0, zeroblob(32), 0)",
                    NULL, NULL, NULL);
  CHECK_INT(rc, SQLITE_CONSTRAINT);
  sqlite3_close(db);
}


/* A row damaged on disk is reported as corrupt, never trusted. */
static void test_corrupt_row(void) {
  char path[256];
  tg_store *st = store_with_channel(path, sizeof(path), 1000);
  if (!st) return;
  tg_store_op op = charge("r1", 0xa1, 1, 1, 0);
  CHECK_OK(tg_store_write(st, &op, 1));
  tg_store_close(st);
  sqlite3 *db;
  CHECK(sqlite3_open(path, &db) == SQLITE_OK);
  CHECK(sqlite3_exec(db,
                     "PRAGMA ignore_check_constraints = 1; UPDATE charges SET amount = x'0102';"
                     " UPDATE channels SET balance = 'text'",
                     NULL, NULL, NULL) == SQLITE_OK);
  sqlite3_close(db);
  char uri[300];
  snprintf(uri, sizeof(uri), "sqlite:%s", path);
  CHECK_OK(tg_store_open(&st, uri, NULL));
  tg_store_charge c;
  CHECK_ERR(tg_store_charge_get(st, "r1", &c), TG_ESTORE_CORRUPT);
  tg_store_channel ch;
  tg_hash id = hash(1);
  CHECK_ERR(tg_store_channel_get(st, &id, &ch), TG_ESTORE_CORRUPT);
  tg_store_close(st);
}

/* ------------------------------------------------------------------------- */
/* Group commit. */

/* Many async submissions share commits; a bad one fails alone. */
static void test_group_commit(void) {
  char path[256];
  tg_store *st = store_with_channel(path, sizeof(path), 1000000);
  if (!st) return;
  /* Hold the write lock from another connection so submissions pile up in the queue. */
  sqlite3 *db;
  CHECK(sqlite3_open(path, &db) == SQLITE_OK);
  CHECK(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK);
  counter c = {0};
  tg_store_op first = charge("gc-first", 0xa1, 1, 1, 0);
  CHECK_OK(tg_store_submit(st, &first, 1, count_cb, &c));
  usleep(50000); /* the writer now waits for the lock with that one */
  char ids[200][16];
  for (int i = 0; i < 200; i++) {
    snprintf(ids[i], sizeof(ids[i]), "gc-%d", i);
    /* submission 100 duplicates 99's request id: only it fails */
    tg_store_op op = charge(i == 100 ? ids[99] : ids[i], 0xa1, 1, 2, 0);
    CHECK_OK(tg_store_submit(st, &op, 1, count_cb, &c));
  }
  tg_store_stats before;
  tg_store_get_stats(st, &before);
  CHECK_INT(before.queue_ops, 201); /* queued plus the one being written */
  CHECK(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK);
  sqlite3_close(db);
  wait_done(&c, 201);
  CHECK_INT(atomic_load(&c.ok), 200);
  CHECK_INT(atomic_load(&c.failed), 1);
  CHECK_ERR(c.last_err, TG_EEXISTS);
  tg_store_stats after;
  tg_store_get_stats(st, &after);
  /* 201 submissions in very few commits: the queued 200 share one. */
  CHECK(after.commits - before.commits <= 3);
  CHECK_INT(after.submissions - before.submissions, 201);
  CHECK_INT(after.failed, 1);
  uint64_t hist = 0;
  for (int b = 0; b < TG_STORE_HIST_BUCKETS; b++) hist += after.commit_hist[b];
  CHECK_INT(hist, after.commits);
  CHECK(tg_store_commit_bucket_us[TG_STORE_HIST_BUCKETS - 1] == UINT64_MAX);
  tg_store_channel ch;
  tg_hash id = hash(1);
  CHECK_OK(tg_store_channel_get(st, &id, &ch));
  CHECK_INT(u64(&ch.charged), 1 + 199 * 2);
  CHECK_INT(ch.charge_count, 200);
  tg_store_close(st);
}

/*
 * Included pass calls queued together are folded by the writer into one increment per (pass,
 * holder, period); every op still reports the counters after it, as if applied one by one (for
 * each key the outs are exactly before+1 .. before+n calls, tokens the running sums in queue
 * order); a submission whose increment cannot be applied (a counter at its limit) fails alone.
 */
typedef struct {
  atomic_int done, failed;
  int last_err;
  uint64_t calls[400], tokens[400];
} fold_seen;

typedef struct {
  fold_seen *seen;
  int i;
} fold_arg;

static fold_arg fold_args[400];

static void fold_cb(void *arg, int err, const tg_store_op *ops, size_t n) {
  fold_arg *a = arg;
  if (err) {
    atomic_fetch_add(&a->seen->failed, 1);
    a->seen->last_err = err;
  } else {
    a->seen->calls[a->i] = ops[n - 1].u.pass.out_calls;
    a->seen->tokens[a->i] = ops[n - 1].u.pass.out_tokens;
  }
  atomic_fetch_add(&a->seen->done, 1);
}

static tg_store_op pass_op(unsigned plan, uint8_t holder, uint64_t calls, uint64_t tokens) {
  tg_store_op op;
  memset(&op, 0, sizeof(op));
  op.kind = TG_STORE_OP_PASS_USE;
  op.u.pass.pass_id = u(plan);
  op.u.pass.holder = addr(holder);
  op.u.pass.period_start = 1700000000000LL;
  op.u.pass.calls = calls;
  op.u.pass.tokens = tokens;
  return op;
}

static void test_pass_fold(void) {
  char path[256];
  tg_store *st = open_fresh(path, sizeof(path));
  if (!st) return;
  tg_store_op pre = pass_op(1, 0xa1, 5, 50); /* key A starts at 5 calls, 50 tokens */
  CHECK_OK(tg_store_write(st, &pre, 1));
  tg_store_op full = pass_op(3, 0xc3, 1, 0); /* key D: its calls counter at the limit */
  CHECK_OK(tg_store_write(st, &full, 1));
  sqlite3 *db;
  CHECK(sqlite3_open(path, &db) == SQLITE_OK);
  CHECK(sqlite3_exec(db, "UPDATE pass_usage SET calls = 9223372036854775807 WHERE calls = 1", NULL,
                     NULL, NULL) == SQLITE_OK);
  CHECK(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK);
  fold_seen *seen = calloc(1, sizeof *seen);
  if (!seen) abort();
  tg_store_op first = pass_op(9, 0x99, 1, 1);
  fold_args[0] = (fold_arg){seen, 0};
  CHECK_OK(tg_store_submit(st, &first, 1, fold_cb, &fold_args[0]));
  usleep(50000); /* the writer holds [first] and waits for the lock */
  tg_store_stats before;
  tg_store_get_stats(st, &before);
  /* 300 submissions over keys A (plan 1, 0xa1), B (plan 1, 0xb2), C (plan 2, 0xa1), interleaved;
   * in one commit. */
  for (int i = 1; i <= 300; i++) {
    tg_store_op op = pass_op(i % 3 == 2 ? 2 : 1, i % 3 == 1 ? 0xb2 : 0xa1, 1, (uint64_t)i);
    fold_args[i] = (fold_arg){seen, i};
    CHECK_OK(tg_store_submit(st, &op, 1, fold_cb, &fold_args[i]));
  }
  CHECK(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK);
  sqlite3_close(db);
  for (int i = 0; i < 20000 && atomic_load(&seen->done) < 301; i++) usleep(1000);
  CHECK_INT(atomic_load(&seen->done), 301);
  CHECK_INT(atomic_load(&seen->failed), 0);
  tg_store_stats after;
  tg_store_get_stats(st, &after);
  CHECK(after.commits - before.commits <= 3);
  CHECK(after.folded_ops - before.folded_ops >= 200); /* folded, not applied one by one */
  /* Per key: calls after = before + 1, 2, .. n in queue order; tokens the running sums. */
  struct { unsigned plan; uint8_t holder; int mod; uint64_t c0, t0; } keys[3] = {
      {1, 0xa1, 0, 5, 50}, {1, 0xb2, 1, 0, 0}, {2, 0xa1, 2, 0, 0}};
  for (int k = 0; k < 3; k++) {
    uint64_t c = keys[k].c0, t = keys[k].t0;
    int bad = 0;
    for (int i = 1; i <= 300; i++) {
      if (i % 3 != keys[k].mod) continue;
      c += 1;
      t += (uint64_t)i;
      if (seen->calls[i] != c || seen->tokens[i] != t) bad++;
    }
    CHECKF(bad == 0, "key %d: %d ops with other counters than one by one", k, bad);
    tg_store_pass_usage pu;
    tg_u256 pid = u(keys[k].plan);
    tg_address h = addr(keys[k].holder);
    CHECK_OK(tg_store_pass_usage_get(st, &pid, &h, 1700000000000LL, &pu));
    CHECK_INT(pu.calls, c);
    CHECK_INT(pu.tokens, t);
  }
  /* Again with one submission (number 5) for key D, whose counter cannot grow: it fails alone,
   * the fold falls back to one savepoint per submission, the others are applied. */
  memset(seen, 0, sizeof *seen);
  CHECK(sqlite3_open(path, &db) == SQLITE_OK);
  CHECK(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK);
  fold_args[0] = (fold_arg){seen, 0};
  CHECK_OK(tg_store_submit(st, &first, 1, fold_cb, &fold_args[0]));
  usleep(50000);
  for (int i = 1; i <= 10; i++) {
    tg_store_op op = i == 5 ? pass_op(3, 0xc3, 1, 0) : pass_op(1, 0xa1, 1, 0);
    fold_args[i] = (fold_arg){seen, i};
    CHECK_OK(tg_store_submit(st, &op, 1, fold_cb, &fold_args[i]));
  }
  CHECK(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK);
  sqlite3_close(db);
  for (int i = 0; i < 20000 && atomic_load(&seen->done) < 11; i++) usleep(1000);
  CHECK_INT(atomic_load(&seen->done), 11);
  CHECK_INT(atomic_load(&seen->failed), 1);
  CHECK_ERR(seen->last_err, TG_EOVERFLOW);
  tg_store_pass_usage pu;
  tg_u256 pid = u(1);
  tg_address h = addr(0xa1);
  CHECK_OK(tg_store_pass_usage_get(st, &pid, &h, 1700000000000LL, &pu));
  CHECK_INT(pu.calls, 5 + 100 + 9);
  CHECK_INT(seen->calls[10], 5 + 100 + 9);
  pid = u(3);
  h = addr(0xc3);
  CHECK_OK(tg_store_pass_usage_get(st, &pid, &h, 1700000000000LL, &pu));
  CHECK(pu.calls == (uint64_t)INT64_MAX);
  free(seen);
  tg_store_close(st);
}

/*
 * Channel charges queued together are folded by the writer (one read and one write per
 * channel and of its payer's totals, one insert per charge): every submission gets the
 * result it would get one by one (the voucher of a submission counts for its own charge and
 * later ones; a submission over the cap, on an unknown channel or of another payer fails alone
 * with the op's own error, and its voucher is not kept), the rows carry exact running totals,
 * and a duplicate request id sends the batch down the ordinary path, where only it fails.
 */
typedef struct {
  atomic_int done;
  int err[16];
  uint64_t charged[16];
} cfold_seen;

typedef struct {
  cfold_seen *seen;
  int i;
} cfold_arg;

static cfold_arg cfold_args[16];

static void cfold_cb(void *arg, int err, const tg_store_op *ops, size_t n) {
  cfold_arg *a = arg;
  a->seen->err[a->i] = err;
  if (!err) a->seen->charged[a->i] = u64(&ops[n - 1].u.charge.out_charged);
  atomic_fetch_add(&a->seen->done, 1);
}

static int collect_cum(void *arg, const tg_store_charge *c) {
  uint64_t *v = arg;
  size_t k = (size_t)v[0]++;
  if (k < 7) v[1 + k] = u64(&c->cumulative_after);
  return 0;
}

static void test_charge_fold(void) {
  char path[256];
  tg_store *st = store_with_channel(path, sizeof(path), 100); /* channel 1, payer 0xa1 */
  if (!st) return;
  tg_store_op ch2[2] = {channel_put(2, 0xb2, 1000000, 10), voucher(2, 50, 0x21)};
  CHECK_OK(tg_store_write(st, ch2, 2));
  sqlite3 *db;
  CHECK(sqlite3_open(path, &db) == SQLITE_OK);
  CHECK(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK);
  cfold_seen *seen = calloc(1, sizeof *seen);
  if (!seen) abort();
  tg_store_op first = pass_op(9, 0x99, 1, 1);
  cfold_args[0] = (cfold_arg){seen, 0};
  counter c0 = {0};
  CHECK_OK(tg_store_submit(st, &first, 1, count_cb, &c0));
  usleep(50000); /* the writer holds [first] and waits for the lock */
  tg_store_stats before;
  tg_store_get_stats(st, &before);
  tg_store_op subs[10][2];
  size_t nops[10];
  subs[0][0] = voucher(1, 100, 0x11), subs[0][1] = charge("cf-1", 0xa1, 1, 30, 0), nops[0] = 2;
  subs[1][0] = voucher(2, 50, 0x21), subs[1][1] = charge("cf-2", 0xb2, 2, 20, 0), nops[1] = 2;
  subs[2][0] = voucher(1, 100, 0x11), subs[2][1] = charge("cf-3", 0xa1, 1, 5000, 0), nops[2] = 2;
  subs[3][0] = voucher(1, 200, 0x12), subs[3][1] = charge("cf-4", 0xa1, 1, 50, 0), nops[3] = 2;
  subs[4][0] = charge("cf-5", 0xa1, 9, 1, 0), nops[4] = 1;         /* unknown channel */
  subs[5][0] = voucher(2, 40, 0x22), subs[5][1] = charge("cf-6", 0xb2, 2, 5, 0), nops[5] = 2;
  subs[6][0] = charge("cf-7", 0xb2, 1, 1, 0), nops[6] = 1;         /* another payer */
  subs[7][0] = voucher(1, 300, 0x13), subs[7][1] = charge("cf-8", 0xa1, 1, 10, 5), nops[7] = 2;
  subs[8][0] = voucher(1, 1000, 0x14), subs[8][1] = charge("cf-9", 0xa1, 1, 2000, 0), nops[8] = 2;
  subs[9][0] = charge("cf-10", 0xa1, 1, 211, 0), nops[9] = 1; /* 90 + 211 > 300: over the cap */
  for (int i = 0; i < 10; i++) {
    cfold_args[i] = (cfold_arg){seen, i};
    CHECK_OK(tg_store_submit(st, subs[i], nops[i], cfold_cb, &cfold_args[i]));
  }
  CHECK(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK);
  sqlite3_close(db);
  for (int i = 0; i < 20000 && atomic_load(&seen->done) < 10; i++) usleep(1000);
  CHECK_INT(atomic_load(&seen->done), 10);
  static const int want_err[10] = {0, 0, TG_ESTORE_LIMIT, 0, TG_ENOTFOUND, 0,
                                   TG_ESTORE_CONSTRAINT, 0, TG_ESTORE_LIMIT, TG_ESTORE_LIMIT};
  static const uint64_t want_charged[10] = {30, 20, 0, 80, 0, 25, 0, 90, 0, 0};
  for (int i = 0; i < 10; i++) {
    CHECKF(seen->err[i] == want_err[i], "submission %d: %s, not %s", i, tg_strerror(seen->err[i]),
           tg_strerror(want_err[i]));
    if (!want_err[i]) CHECKF(seen->charged[i] == want_charged[i], "submission %d: charged %llu", i,
                             (unsigned long long)seen->charged[i]);
  }
  tg_store_stats after;
  tg_store_get_stats(st, &after);
  CHECK(after.folded_charges - before.folded_charges >= 5);
  CHECK(after.commits - before.commits <= 3);
  tg_store_channel ch;
  tg_hash id = hash(1);
  CHECK_OK(tg_store_channel_get(st, &id, &ch));
  CHECK_INT(u64(&ch.ceiling), 300); /* 1000 came with a refused charge: not kept */
  CHECK(ch.ceiling_sig_len == 65 && memcmp(ch.ceiling_sig, sigs[0x13], 65) == 0);
  CHECK_INT(u64(&ch.charged), 90);
  CHECK_INT(ch.charge_count, 3);
  CHECK_INT(u64(&ch.credit_limit), 5);
  uint64_t cum[8] = {0};
  CHECK_OK(tg_store_charges_by_channel(st, &id, 0, 0, collect_cum, cum));
  CHECK_INT(cum[0], 3);
  CHECK(cum[1] == 30 && cum[2] == 80 && cum[3] == 90);
  id = hash(2);
  CHECK_OK(tg_store_channel_get(st, &id, &ch));
  CHECK_INT(u64(&ch.ceiling), 50);
  CHECK_INT(u64(&ch.charged), 25);
  CHECK_INT(ch.charge_count, 2);
  tg_store_totals t;
  tg_address pa = addr(0xa1), pb = addr(0xb2);
  CHECK_OK(tg_store_totals_get(st, &pa, TG_SCHEME_CHANNEL, &t));
  CHECK(u64(&t.charged) == 90 && t.count == 3);
  CHECK_OK(tg_store_totals_get(st, &pb, TG_SCHEME_CHANNEL, &t));
  CHECK(u64(&t.charged) == 25 && t.count == 2);
  /* A duplicate request id in a folded batch: only the duplicate fails. */
  memset(seen, 0, sizeof *seen);
  CHECK(sqlite3_open(path, &db) == SQLITE_OK);
  CHECK(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK);
  CHECK_OK(tg_store_submit(st, &first, 1, count_cb, &c0));
  usleep(50000);
  const char *rids[4] = {"cf-d1", "cf-d2", "cf-d1", "cf-d3"};
  for (int i = 0; i < 4; i++) {
    tg_store_op op = charge(rids[i], 0xa1, 1, 1, 0);
    cfold_args[i] = (cfold_arg){seen, i};
    CHECK_OK(tg_store_submit(st, &op, 1, cfold_cb, &cfold_args[i]));
  }
  CHECK(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK);
  sqlite3_close(db);
  for (int i = 0; i < 20000 && atomic_load(&seen->done) < 4; i++) usleep(1000);
  CHECK(seen->err[0] == 0 && seen->err[1] == 0 && seen->err[3] == 0);
  CHECK_ERR(seen->err[2], TG_EEXISTS);
  CHECK(seen->charged[0] == 91 && seen->charged[1] == 92 && seen->charged[3] == 93);
  id = hash(1);
  CHECK_OK(tg_store_channel_get(st, &id, &ch));
  CHECK_INT(u64(&ch.charged), 93);
  CHECK_INT(ch.charge_count, 6);
  CHECK_OK(tg_store_totals_get(st, &pa, TG_SCHEME_CHANNEL, &t));
  CHECK(u64(&t.charged) == 93 && t.count == 6);
  wait_done(&c0, 2);
  free(seen);
  tg_store_close(st);
}

/* A batch whose COMMIT fails, or whose transaction the backend drops, reports every
 * submission failed and leaves nothing behind; the next batch works. */
static void fault_case(int where, int err, int want) {
  char path[256];
  tg_store *st = store_with_channel(path, sizeof(path), 1000000);
  if (!st) return;
  sqlite3 *db;
  CHECK(sqlite3_open(path, &db) == SQLITE_OK);
  CHECK(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK);
  counter c0 = {0}, c = {0};
  tg_store_op first = charge("f-first", 0xa1, 1, 1, 0);
  CHECK_OK(tg_store_submit(st, &first, 1, count_cb, &c0));
  usleep(50000); /* the writer holds [first] and waits for the lock */
  tg__store_fault(st, where, err);
  char ids[10][16];
  for (int i = 0; i < 10; i++) {
    snprintf(ids[i], sizeof(ids[i]), "f-%d", i);
    tg_store_op op = charge(ids[i], 0xa1, 1, 2, 0);
    CHECK_OK(tg_store_submit(st, &op, 1, count_cb, &c));
  }
  CHECK(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK);
  sqlite3_close(db);
  wait_done(&c0, 1);
  wait_done(&c, 10);
  CHECK_INT(atomic_load(&c0.ok), 1);
  CHECK_INT(atomic_load(&c.ok), 0);
  CHECK_INT(atomic_load(&c.failed), 10);
  CHECK_ERR(c.last_err, want);
  tg_store_charge ch;
  for (int i = 0; i < 10; i++) CHECK_ERR(tg_store_charge_get(st, ids[i], &ch), TG_ENOTFOUND);
  tg_store_channel chv;
  tg_hash id = hash(1);
  CHECK_OK(tg_store_channel_get(st, &id, &chv));
  CHECK_INT(u64(&chv.charged), 1);
  CHECK_INT(chv.charge_count, 1);
  /* The writer carries on. */
  tg_store_op again = charge("f-0", 0xa1, 1, 2, 0);
  CHECK_OK(tg_store_write(st, &again, 1));
  CHECK_OK(tg_store_channel_get(st, &id, &chv));
  CHECK_INT(u64(&chv.charged), 3);
  tg_store_close(st);
}

static void test_fault_commit(void) { fault_case(TG__FAULT_COMMIT, TG_EIO, TG_EIO); }
static void test_fault_txn_lost(void) { fault_case(TG__FAULT_TXN_LOST, 0, TG_ESTORE); }

/* Past the queue cap, submit says TG_EBUSY and fires nothing. */
static void test_backpressure(void) {
  char uri[300], path[256];
  db_path(uri, sizeof(uri), path, sizeof(path));
  tg_store_options o = {.queue_max_ops = 8, .busy_timeout_ms = 10000};
  tg_store *st;
  CHECK_OK(tg_store_open(&st, uri, &o));
  if (!st) return;
  tg_store_op setup[2] = {channel_put(1, 0xa1, 1, 1), voucher(1, 1000, 1)};
  CHECK_OK(tg_store_write(st, setup, 2));
  sqlite3 *db;
  CHECK(sqlite3_open(path, &db) == SQLITE_OK);
  CHECK(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK);
  counter c = {0};
  char ids[20][16];
  int accepted = 0, busy = 0;
  for (int i = 0; i < 20; i++) {
    snprintf(ids[i], sizeof(ids[i]), "bp-%d", i);
    tg_store_op op = charge(ids[i], 0xa1, 1, 1, 0);
    int rc = tg_store_submit(st, &op, 1, count_cb, &c);
    if (rc == 0) accepted++;
    else if (rc == TG_EBUSY) busy++;
    if (i == 0) usleep(50000); /* let the writer take the first and block */
  }
  CHECK_INT(accepted, 8); /* the cap counts queued and in-flight ops */
  CHECK_INT(busy, 12);
  CHECK(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK);
  sqlite3_close(db);
  wait_done(&c, accepted);
  usleep(20000);
  CHECK_INT(atomic_load(&c.done), accepted);
  CHECK_INT(atomic_load(&c.ok), accepted);
  tg_store_close(st);
}

/* ------------------------------------------------------------------------- */
/* Crash safety: SIGKILL a writer at random moments; every acknowledged charge survives. */

typedef struct {
  int fd;
} ack_ctx;

static void ack_cb(void *arg, int err, const tg_store_op *ops, size_t n) {
  ack_ctx *a = arg;
  if (err != 0) return;
  for (size_t i = 0; i < n; i++) {
    if (ops[i].kind != TG_STORE_OP_CHARGE) continue;
    char line[160];
    int len = snprintf(line, sizeof(line), "%s\n", ops[i].u.charge.request_id);
    if (write(a->fd, line, (size_t)len) != len) _exit(3);
  }
}

static void crash_child(const char *uri, int fd, int round) {
  tg_store *st;
  if (tg_store_open(&st, uri, NULL) != 0) _exit(2);
  ack_ctx a = {fd};
  for (long i = 0;; i++) {
    char id[3][48];
    tg_store_op ops[3];
    size_t n = 1 + (size_t)(i % 3); /* submissions of 1, 2 or 3 charges */
    for (size_t k = 0; k < n; k++) {
      snprintf(id[k], sizeof(id[k]), "k%d-%ld-%zu", round, i, k);
      int chan = (int)((i + (long)k) % 5); /* 0 = exact (no channel), 1..4 channels */
      ops[k] = charge(id[k], (uint8_t)(chan ? 0xa0 + chan : 0xb0), chan ? chan : -1,
                      (uint64_t)(1 + (i % 7)), 0);
    }
    int rc;
    while ((rc = tg_store_submit(st, ops, n, ack_cb, &a)) == TG_EBUSY) usleep(200);
    if (rc < 0) _exit(4);
  }
}

typedef struct {
  char **ids;
  size_t n, cap;
} idset;

static void idset_add(idset *s, const char *id, size_t len) {
  if (s->n == s->cap) {
    s->cap = s->cap ? s->cap * 2 : 1024;
    s->ids = realloc(s->ids, s->cap * sizeof(char *));
  }
  s->ids[s->n++] = strndup(id, len);
}

static void test_crash_sigkill(void) {
  unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
  srand(seed);
  char uri[300], path[256];
  db_path(uri, sizeof(uri), path, sizeof(path));
  tg_store *st;
  CHECK_OK(tg_store_open(&st, uri, NULL));
  if (!st) return;
  for (int ch = 1; ch <= 4; ch++) {
    tg_store_op setup[2] = {channel_put((uint8_t)ch, (uint8_t)(0xa0 + ch), 1, 1),
                            voucher((uint8_t)ch, 0, 1)};
    memset(setup[1].u.voucher.max_claimable.b, 0x7f, 32);
    CHECK_OK(tg_store_write(st, setup, 2));
  }
  tg_store_close(st);

  size_t total_acked = 0;
  for (int round = 0; round < 10; round++) {
    int pfd[2];
    CHECK(pipe(pfd) == 0);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
      close(pfd[0]);
      crash_child(uri, pfd[1], round);
      _exit(0);
    }
    close(pfd[1]);
    /* The kill comes a random 0..400 ms after the first acknowledgement (so that it lands in
     * the middle of traffic however slowly the child starts), or after 60 s regardless. */
    int kill_ms = rand() % 400;
    idset acked = {0};
    char buf[8192], part[160];
    size_t plen = 0;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int killed = 0, started = 0;
    for (;;) {
      clock_gettime(CLOCK_MONOTONIC, &t);
      long el = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
      if (!started && acked.n > 0) {
        started = 1;
        t0 = t;
        el = 0;
      }
      if (!killed && ((started && el >= kill_ms) || el >= 60000)) {
        kill(pid, SIGKILL);
        killed = 1;
      }
      struct pollfd p = {pfd[0], POLLIN, 0};
      int pr = poll(&p, 1, killed ? 1000 : 5);
      if (pr <= 0) {
        if (killed) break;
        continue;
      }
      ssize_t got = read(pfd[0], buf, sizeof(buf));
      if (got <= 0) break; /* EOF: the child is gone and everything it wrote is read */
      for (ssize_t i = 0; i < got; i++) {
        if (buf[i] == '\n') {
          idset_add(&acked, part, plen);
          plen = 0;
        } else if (plen < sizeof(part) - 1) {
          part[plen++] = buf[i];
        }
      }
    }
    close(pfd[0]);
    int status;
    waitpid(pid, &status, 0);
    CHECKF(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "round %d: child status %d",
           round, status);
    CHECKF(acked.n > 0, "round %d: nothing acknowledged before the kill", round);
    total_acked += acked.n;

    CHECK_OK(tg_store_open(&st, uri, NULL));
    if (!st) return;
    size_t missing = 0;
    for (size_t i = 0; i < acked.n; i++) {
      tg_store_charge c;
      if (tg_store_charge_get(st, acked.ids[i], &c) != 0) missing++;
      free(acked.ids[i]);
    }
    free(acked.ids);
    CHECKF(missing == 0, "round %d (kill at %d ms, seed %u): %zu of %zu acknowledged charges lost",
           round, kill_ms, seed, missing, acked.n);
    /* Totals equal their rows; each row counted once. */
    for (int ch = 1; ch <= 4; ch++) {
      tg_store_channel chv;
      tg_hash id = hash((uint8_t)ch);
      CHECK_OK(tg_store_channel_get(st, &id, &chv));
      charge_sum s = {0};
      CHECK_OK(tg_store_charges_by_channel(st, &id, 0, 0, sum_charge, &s));
      CHECKF(tg_u256_cmp(&s.sum, &chv.charged) == 0, "round %d channel %d: rows != total", round,
             ch);
      CHECK_INT(s.n, chv.charge_count);
      tg_store_totals tt;
      tg_address pa = addr((uint8_t)(0xa0 + ch));
      CHECK_OK(tg_store_totals_get(st, &pa, TG_SCHEME_CHANNEL, &tt));
      CHECK(tg_u256_cmp(&tt.charged, &s.sum) == 0);
      CHECK_INT(tt.count, s.n);
    }
    tg_address pe = addr(0xb0);
    charge_sum s = {0};
    tg_store_totals tt;
    CHECK_OK(tg_store_charges_by_payer(st, &pe, 0, 0, sum_charge, &s));
    CHECK_OK(tg_store_totals_get(st, &pe, TG_SCHEME_EXACT, &tt));
    CHECK(tg_u256_cmp(&tt.charged, &s.sum) == 0);
    CHECK_INT(tt.count, s.n);
    tg_store_close(st);
  }
  printf("    crash test: %zu acknowledged charges over 10 SIGKILLs, none lost (seed %u)\n",
         total_acked, seed);
}

int main(void) {
  snprintf(tmpdir, sizeof(tmpdir), "/tmp/tg-store-XXXXXX");
  if (mkdtemp(tmpdir) == NULL) {
    perror("mkdtemp");
    return 1;
  }
  RUN(test_uri);
  RUN(test_migrations);
  RUN(test_migrate_exact_key);
  RUN(test_channel_put_sync);
  RUN(test_voucher_monotonic);
  RUN(test_charge_ceiling);
  RUN(test_db_enforces_invariant);
  RUN(test_submission_atomic);
  RUN(test_validation);
  RUN(test_exact);
  RUN(test_payid);
  RUN(test_pass_usage);
  RUN(test_auth_nonces_sessions);
  RUN(test_settle_journal);
  RUN(test_leases);
  RUN(test_reads_and_totals);
  RUN(test_corrupt_row);
  RUN(test_group_commit);
  RUN(test_pass_fold);
  RUN(test_charge_fold);
  RUN(test_fault_commit);
  RUN(test_fault_txn_lost);
  RUN(test_backpressure);
  RUN(test_close_drains);
  RUN(test_write_from_callback);
  RUN(test_concurrency_64);
  RUN(test_crash_sigkill);
  RUN(test_evbase);
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
  return tgt_done();
}
