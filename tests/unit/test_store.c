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

static tg_address addr(uint8_t v) {
  tg_address a;
  memset(a.b, v, sizeof(a.b));
  return a;
}

static tg_hash hash(uint8_t v) {
  tg_hash h;
  memset(h.b, 0, sizeof(h.b));
  h.b[0] = 0xc0;
  h.b[31] = v;
  return h;
}

static tg_u256 u(uint64_t v) {
  tg_u256 x;
  tg_u256_from_u64(&x, v);
  return x;
}

static uint64_t u64(const tg_u256 *x) {
  uint64_t v = 0;
  if (tg_u256_to_u64(x, &v) < 0) return UINT64_MAX;
  return v;
}

static tg_store_op channel_put(uint8_t id, uint8_t payer, uint64_t balance, uint64_t block) {
  tg_store_op op;
  memset(&op, 0, sizeof(op));
  op.kind = TG_STORE_OP_CHANNEL_PUT;
  op.u.channel.id = hash(id);
  op.u.channel.cfg.chain_id = 31337;
  op.u.channel.cfg.contract = addr(0xcc);
  op.u.channel.cfg.payer = addr(payer);
  op.u.channel.cfg.payer_authorizer = addr(payer);
  op.u.channel.cfg.receiver = addr(0xee);
  op.u.channel.cfg.receiver_authorizer = addr(0xee);
  op.u.channel.cfg.token = addr(0x70);
  op.u.channel.cfg.withdraw_delay = 86400;
  op.u.channel.cfg.salt = hash(0x5a);
  op.u.channel.chain.balance = u(balance);
  op.u.channel.chain.synced_block = block;
  return op;
}

/* Signature bytes for vouchers: 256 distinct 65-byte patterns, alive for the whole run. */
static uint8_t sigs[256][65];

static tg_store_op voucher(uint8_t id, uint64_t max, uint8_t sigbyte) {
  tg_store_op op;
  memset(&op, 0, sizeof(op));
  op.kind = TG_STORE_OP_VOUCHER;
  op.u.voucher.channel_id = hash(id);
  op.u.voucher.max_claimable = u(max);
  memset(sigs[sigbyte], sigbyte, 65);
  op.u.voucher.sig = TG_BYTES(sigs[sigbyte], 65);
  return op;
}

static tg_store_op charge(const char *req, uint8_t payer, int chan, uint64_t amount,
                          uint64_t credit) {
  tg_store_op op;
  memset(&op, 0, sizeof(op));
  op.kind = TG_STORE_OP_CHARGE;
  op.u.charge.request_id = req;
  op.u.charge.payer = addr(payer);
  op.u.charge.scheme = chan >= 0 ? TG_SCHEME_CHANNEL : TG_SCHEME_EXACT;
  op.u.charge.route = "chat";
  op.u.charge.model = "gpt-test";
  op.u.charge.input_tokens = 10;
  op.u.charge.output_tokens = 20;
  op.u.charge.amount = u(amount);
  if (chan >= 0) {
    op.u.charge.has_channel = 1;
    op.u.charge.channel_id = hash((uint8_t)chan);
  }
  op.u.charge.credit_limit = u(credit);
  return op;
}

/* A store with channel 1 (payer 0xa1) holding a voucher for `ceiling`. */
static tg_store *store_with_channel(char *path, size_t pcap, uint64_t ceiling) {
  tg_store *st = open_fresh(path, pcap);
  if (!st) return NULL;
  tg_store_op ops[2] = {channel_put(1, 0xa1, 1000000, 10), voucher(1, ceiling, 0x11)};
  CHECK_OK(tg_store_write(st, ops, 2));
  return st;
}

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
  CHECK_INT(applied, 2);
  CHECK_OK(tg_store_migrate(uri, &applied));
  CHECK_INT(applied, 0); /* re-running is a no-op */
  tg_store *st;
  CHECK_OK(tg_store_open(&st, uri, NULL));
  int cur, latest;
  CHECK_OK(tg_store_schema_version(st, &cur, &latest));
  CHECK_INT(cur, 2);
  CHECK_INT(latest, 2);
  tg_store_close(st);

  /* One row per migration, each applied once. */
  sqlite3 *db;
  CHECK(sqlite3_open(path, &db) == SQLITE_OK);
  sqlite3_stmt *s;
  CHECK(sqlite3_prepare_v2(db, "SELECT count(*), min(version), max(version) FROM schema_version",
                           -1, &s, NULL) == SQLITE_OK);
  CHECK(sqlite3_step(s) == SQLITE_ROW);
  CHECK_INT(sqlite3_column_int(s, 0), 2);
  CHECK_INT(sqlite3_column_int(s, 1), 1);
  CHECK_INT(sqlite3_column_int(s, 2), 2);
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
  CHECK_ERR(tg_store_open(&st, uri2, &o), TG_ESTORE_SCHEMA);
  CHECK_OK(tg_store_migrate(uri2, &applied));
  CHECK_OK(tg_store_open(&st, uri2, &o));
  tg_store_close(st);
}

static void test_channel_put_sync(void) {
  char path[256];
  tg_store *st = open_fresh(path, sizeof(path));
  if (!st) return;
  tg_store_channel ch;
  tg_hash id1 = hash(1);
  CHECK_ERR(tg_store_channel_get(st, &id1, &ch), TG_ENOTFOUND);
  tg_store_op op = channel_put(1, 0xa1, 500, 10);
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_INT(op.u.channel.out_applied, 1);
  CHECK_OK(tg_store_channel_get(st, &id1, &ch));
  CHECK_MEM(ch.id.b, id1.b, 32);
  CHECK_INT(ch.cfg.chain_id, 31337);
  CHECK(ch.cfg.payer.b[0] == 0xa1 && ch.cfg.receiver.b[19] == 0xee && ch.cfg.token.b[3] == 0x70);
  CHECK_INT(ch.cfg.withdraw_delay, 86400);
  CHECK_INT(u64(&ch.chain.balance), 500);
  CHECK_INT(ch.chain.synced_block, 10);
  CHECK_INT(ch.chain.status, TG_CHANNEL_OPEN);
  CHECK(tg_u256_is_zero(&ch.charged) && tg_u256_is_zero(&ch.ceiling) && !ch.ceiling_sig_len);
  CHECK(ch.created_at > 1600000000000LL);

  /* Same config, newer mirror: applied. */
  op = channel_put(1, 0xa1, 800, 12);
  op.u.channel.chain.withdraw_requested_at = 1700000000;
  op.u.channel.chain.refund_nonce = 3;
  op.u.channel.chain.status = TG_CHANNEL_WITHDRAWING;
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_INT(op.u.channel.out_applied, 1);
  CHECK_OK(tg_store_channel_get(st, &id1, &ch));
  CHECK_INT(u64(&ch.chain.balance), 800);
  CHECK_INT(ch.chain.withdraw_requested_at, 1700000000);
  CHECK_INT(ch.chain.refund_nonce, 3);
  CHECK_INT(ch.chain.status, TG_CHANNEL_WITHDRAWING);

  /* An older mirror is ignored (events replayed out of order). */
  op = channel_put(1, 0xa1, 1, 11);
  op.kind = TG_STORE_OP_CHANNEL_SYNC;
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_INT(op.u.channel.out_applied, 0);
  CHECK_OK(tg_store_channel_get(st, &id1, &ch));
  CHECK_INT(u64(&ch.chain.balance), 800);

  /* The configuration is immutable. */
  op = channel_put(1, 0xa2, 800, 13);
  CHECK_ERR(tg_store_write(st, &op, 1), TG_ESTORE_CONSTRAINT);
  CHECK_ERR(op.err, TG_ESTORE_CONSTRAINT);
  /* Sync of an unknown channel. */
  op = channel_put(9, 0xa1, 1, 1);
  op.kind = TG_STORE_OP_CHANNEL_SYNC;
  CHECK_ERR(tg_store_write(st, &op, 1), TG_ENOTFOUND);

  /* Closed stays closed even if a stale-status mirror arrives. */
  op = channel_put(1, 0xa1, 0, 20);
  op.u.channel.chain.status = TG_CHANNEL_CLOSED;
  CHECK_OK(tg_store_write(st, &op, 1));
  op = channel_put(1, 0xa1, 0, 21);
  op.u.channel.chain.status = TG_CHANNEL_OPEN;
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_OK(tg_store_channel_get(st, &id1, &ch));
  CHECK_INT(ch.chain.status, TG_CHANNEL_CLOSED);
  tg_store_close(st);
}

static void test_voucher_monotonic(void) {
  char path[256];
  tg_store *st = open_fresh(path, sizeof(path));
  if (!st) return;
  tg_store_op op = channel_put(1, 0xa1, 1000, 1);
  CHECK_OK(tg_store_write(st, &op, 1));
  tg_hash id = hash(1);
  tg_store_channel ch;

  op = voucher(1, 100, 0x11);
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_INT(op.u.voucher.out_raised, 1);
  op = voucher(1, 50, 0x22); /* lower: no-op */
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_INT(op.u.voucher.out_raised, 0);
  op = voucher(1, 100, 0x33); /* equal: no-op */
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_INT(op.u.voucher.out_raised, 0);
  CHECK_OK(tg_store_channel_get(st, &id, &ch));
  CHECK_INT(u64(&ch.ceiling), 100);
  CHECK(ch.ceiling_sig_len == 65 && ch.ceiling_sig[0] == 0x11 && ch.ceiling_sig[64] == 0x11);

  op = voucher(1, 250, 0x44);
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_INT(op.u.voucher.out_raised, 1);
  CHECK_OK(tg_store_channel_get(st, &id, &ch));
  CHECK_INT(u64(&ch.ceiling), 250);
  CHECK(ch.ceiling_sig[10] == 0x44);

  /* An ERC-1271 wallet's signature may be longer than 65 bytes; the store keeps it whole. */
  uint8_t *long_sig = malloc(TG_STORE_SIG_MAX + 1);
  for (int i = 0; i <= TG_STORE_SIG_MAX; i++) long_sig[i] = (uint8_t)i;
  op = voucher(1, 260, 0);
  op.u.voucher.sig = TG_BYTES(long_sig, 300);
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_OK(tg_store_channel_get(st, &id, &ch));
  CHECK_INT(ch.ceiling_sig_len, 300);
  CHECK_MEM(ch.ceiling_sig, long_sig, 300);
  op = voucher(1, 270, 0);
  op.u.voucher.sig = TG_BYTES(long_sig, TG_STORE_SIG_MAX + 1);
  CHECK_ERR(tg_store_write(st, &op, 1), TG_ETOOBIG);
  op.u.voucher.sig = TG_BYTES(long_sig, 0);
  CHECK_ERR(tg_store_write(st, &op, 1), TG_EINVAL);
  free(long_sig);

  /* A 256-bit ceiling is kept exactly. */
  op = voucher(1, 0, 0x55);
  memset(op.u.voucher.max_claimable.b, 0xff, 32);
  op.u.voucher.max_claimable.b[31] = 0xfe;
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_OK(tg_store_channel_get(st, &id, &ch));
  CHECK_MEM(ch.ceiling.b, op.u.voucher.max_claimable.b, 32);

  op = voucher(7, 1, 0);
  CHECK_ERR(tg_store_write(st, &op, 1), TG_ENOTFOUND);
  tg_store_close(st);
}

static void test_charge_ceiling(void) {
  char path[256];
  tg_store *st = store_with_channel(path, sizeof(path), 100);
  if (!st) return;
  tg_hash id = hash(1);
  tg_store_channel ch;
  tg_store_op op = charge("r1", 0xa1, 1, 60, 0);
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK(op.u.charge.out_id > 0);
  CHECK_INT(u64(&op.u.charge.out_charged), 60);
  op = charge("r2", 0xa1, 1, 41, 0); /* 101 > 100 */
  CHECK_ERR(tg_store_write(st, &op, 1), TG_ESTORE_LIMIT);
  op = charge("r2", 0xa1, 1, 40, 0); /* exactly the ceiling */
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_INT(u64(&op.u.charge.out_charged), 100);
  op = charge("r3", 0xa1, 1, 1, 0);
  CHECK_ERR(tg_store_write(st, &op, 1), TG_ESTORE_LIMIT);
  /* A credit limit lets charges run ahead of the voucher (postpaid). */
  op = charge("r3", 0xa1, 1, 20, 20);
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_INT(u64(&op.u.charge.out_charged), 120);
  op = charge("r4", 0xa1, 1, 1, 20);
  CHECK_ERR(tg_store_write(st, &op, 1), TG_ESTORE_LIMIT);
  CHECK_OK(tg_store_channel_get(st, &id, &ch));
  CHECK_INT(u64(&ch.charged), 120);
  CHECK_INT(u64(&ch.credit_limit), 20);
  CHECK_INT(ch.charge_count, 3);
  CHECK(ch.first_unclaimed_at > 0);
  /* A new voucher raises the room again. */
  op = voucher(1, 200, 0x12);
  CHECK_OK(tg_store_write(st, &op, 1));
  op = charge("r4", 0xa1, 1, 100, 20);
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_INT(u64(&op.u.charge.out_charged), 220);

  /* An amount that would overflow 256 bits is a refusal, not a wrap. */
  op = charge("r5", 0xa1, 1, 0, 0);
  memset(op.u.charge.amount.b, 0xff, 32);
  memset(op.u.charge.credit_limit.b, 0xff, 32);
  CHECK_ERR(tg_store_write(st, &op, 1), TG_ESTORE_LIMIT);
  /* Wrong payer, unknown channel. */
  op = charge("r6", 0xa2, 1, 1, 1000);
  CHECK_ERR(tg_store_write(st, &op, 1), TG_ESTORE_CONSTRAINT);
  op = charge("r6", 0xa1, 9, 1, 1000);
  CHECK_ERR(tg_store_write(st, &op, 1), TG_ENOTFOUND);
  /* A closed channel takes no charge. */
  op = channel_put(1, 0xa1, 0, 99);
  op.u.channel.chain.status = TG_CHANNEL_CLOSED;
  CHECK_OK(tg_store_write(st, &op, 1));
  op = charge("r6", 0xa1, 1, 1, 1000);
  CHECK_ERR(tg_store_write(st, &op, 1), TG_ESTORE_CHANNEL_CLOSED);
  op = voucher(1, 300, 0x13);
  CHECK_ERR(tg_store_write(st, &op, 1), TG_ESTORE_CHANNEL_CLOSED);

  CHECK_OK(tg_store_channel_get(st, &id, &ch));
  CHECK_INT(u64(&ch.charged), 220);
  CHECK_INT(ch.charge_count, 4);
  tg_store_charge c;
  CHECK_OK(tg_store_charge_get(st, "r4", &c));
  CHECK_INT(u64(&c.amount), 100);
  CHECK_INT(u64(&c.cumulative_after), 220);
  CHECK_STR(c.route, "chat");
  CHECK_STR(c.model, "gpt-test");
  CHECK_INT(c.input_tokens, 10);
  CHECK_INT(c.output_tokens, 20);
  CHECK(c.has_channel && c.scheme == TG_SCHEME_CHANNEL && !c.settled);
  CHECK_ERR(tg_store_charge_get(st, "r5", &c), TG_ENOTFOUND);
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

/* A submission is all-or-nothing, and a failing one does not affect its batch neighbours. */
static void test_submission_atomic(void) {
  char path[256];
  tg_store *st = store_with_channel(path, sizeof(path), 1000);
  if (!st) return;
  tg_store_op op = charge("dup", 0xa1, 1, 5, 0);
  CHECK_OK(tg_store_write(st, &op, 1));
  tg_store_op ops[2] = {charge("fresh", 0xa1, 1, 7, 0), charge("dup", 0xa1, 1, 9, 0)};
  CHECK_ERR(tg_store_write(st, ops, 2), TG_EEXISTS);
  CHECK_OK(ops[0].err);
  CHECK_ERR(ops[1].err, TG_EEXISTS);
  tg_store_charge c;
  CHECK_ERR(tg_store_charge_get(st, "fresh", &c), TG_ENOTFOUND);
  tg_store_channel ch;
  tg_hash id = hash(1);
  CHECK_OK(tg_store_channel_get(st, &id, &ch));
  CHECK_INT(u64(&ch.charged), 5); /* the duplicate raised nothing */
  CHECK_INT(ch.charge_count, 1);
  tg_store_totals t;
  tg_address payer = addr(0xa1);
  CHECK_OK(tg_store_totals_get(st, &payer, TG_SCHEME_CHANNEL, &t));
  CHECK_INT(u64(&t.charged), 5);
  CHECK_INT(t.count, 1);
  tg_store_close(st);
}

static void test_validation(void) {
  char path[256];
  tg_store *st = store_with_channel(path, sizeof(path), 1000);
  if (!st) return;
  char big[300];
  memset(big, 'x', sizeof(big) - 1);
  big[sizeof(big) - 1] = 0;
  tg_store_op op = charge(big, 0xa1, 1, 1, 0);
  CHECK_ERR(tg_store_write(st, &op, 1), TG_ETOOBIG);
  op = charge("", 0xa1, 1, 1, 0);
  CHECK_ERR(tg_store_write(st, &op, 1), TG_EINVAL);
  op = charge(NULL, 0xa1, 1, 1, 0);
  CHECK_ERR(tg_store_write(st, &op, 1), TG_EINVAL);
  op = charge("ok", 0xa1, 1, 1, 0);
  op.u.charge.model = big;
  CHECK_ERR(tg_store_write(st, &op, 1), TG_ETOOBIG);
  op = charge("ok", 0xa1, 1, 1, 0);
  op.u.charge.has_channel = 0; /* channel scheme without a channel */
  CHECK_ERR(tg_store_write(st, &op, 1), TG_EINVAL);
  op = charge("ok", 0xa1, 1, 1, 0);
  op.u.charge.scheme = (tg_store_scheme)7;
  CHECK_ERR(tg_store_write(st, &op, 1), TG_EINVAL);
  op = charge("ok", 0xa1, 1, 1, 0);
  op.u.charge.input_tokens = UINT64_MAX;
  CHECK_ERR(tg_store_write(st, &op, 1), TG_ERANGE);
  op.kind = (tg_store_op_kind)999;
  CHECK_ERR(tg_store_write(st, &op, 1), TG_EINVAL);
  CHECK_ERR(tg_store_write(st, &op, 0), TG_EINVAL);
  static tg_store_op many[TG_STORE_SUBMIT_MAX_OPS + 1];
  CHECK_ERR(tg_store_write(st, many, TG_STORE_SUBMIT_MAX_OPS + 1), TG_ETOOBIG);
  tg_store_stats stats;
  tg_store_get_stats(st, &stats);
  CHECK_INT(stats.queue_ops, 0);
  tg_store_close(st);
}

static void test_exact(void) {
  char path[256];
  tg_store *st = open_fresh(path, sizeof(path));
  if (!st) return;
  tg_store_op ops[2];
  memset(ops, 0, sizeof(ops));
  ops[0] = charge("ex-1", 0xb1, -1, 1500, 0);
  ops[1].kind = TG_STORE_OP_EXACT_PUT;
  tg_store_op_exact *e = &ops[1].u.exact;
  e->token = addr(0x70);
  e->nonce = hash(0x42);
  e->payer = addr(0xb1);
  e->to = addr(0xee);
  e->amount = u(1500);
  e->valid_after = 100;
  e->valid_before = 200;
  e->request_id = "ex-1";
  e->status = TG_EXACT_VERIFIED;
  CHECK_OK(tg_store_write(st, ops, 2));

  /* The same authorization again (a replay) is refused, even for another request. */
  tg_store_op replay = ops[1];
  replay.u.exact.request_id = "ex-2";
  CHECK_ERR(tg_store_write(st, &replay, 1), TG_EEXISTS);
  /* Same nonce on another token is another authorization. */
  replay.u.exact.token = addr(0x71);
  CHECK_OK(tg_store_write(st, &replay, 1));

  tg_store_exact got;
  tg_address tok = addr(0x70);
  tg_hash nonce = hash(0x42);
  CHECK_OK(tg_store_exact_get(st, &tok, &nonce, &got));
  CHECK_INT(got.status, TG_EXACT_VERIFIED);
  CHECK_INT(u64(&got.amount), 1500);
  CHECK_INT(got.valid_after, 100);
  CHECK_INT(got.valid_before, 200);
  CHECK_STR(got.request_id, "ex-1");
  CHECK(!got.has_tx);

  tg_store_op upd;
  memset(&upd, 0, sizeof(upd));
  upd.kind = TG_STORE_OP_EXACT_UPDATE;
  upd.u.exact.token = tok;
  upd.u.exact.nonce = nonce;
  upd.u.exact.status = TG_EXACT_SUBMITTED;
  upd.u.exact.has_tx = 1;
  upd.u.exact.tx_hash = hash(0x99);
  CHECK_OK(tg_store_write(st, &upd, 1));
  upd.u.exact.status = TG_EXACT_CONFIRMED;
  upd.u.exact.has_tx = 0; /* keeps the stored hash */
  CHECK_OK(tg_store_write(st, &upd, 1));
  CHECK_OK(tg_store_exact_get(st, &tok, &nonce, &got));
  CHECK_INT(got.status, TG_EXACT_CONFIRMED);
  CHECK(got.has_tx && got.tx_hash.b[31] == 0x99);
  tg_store_charge c;
  CHECK_OK(tg_store_charge_get(st, "ex-1", &c));
  CHECK(c.settled && !c.has_channel && c.scheme == TG_SCHEME_EXACT);
  upd.u.exact.nonce = hash(0x43);
  CHECK_ERR(tg_store_write(st, &upd, 1), TG_ENOTFOUND);
  nonce = hash(0x43);
  CHECK_ERR(tg_store_exact_get(st, &tok, &nonce, &got), TG_ENOTFOUND);
  tg_store_close(st);
}

static void test_payid(void) {
  char path[256];
  tg_store *st = open_fresh(path, sizeof(path));
  if (!st) return;
  tg_store_op op;
  memset(&op, 0, sizeof(op));
  op.kind = TG_STORE_OP_PAYID_PUT;
  op.u.payid.id = "pay_7d5d747be160e280504c099d984bcfe0";
  op.u.payid.payer = addr(0xa1);
  op.u.payid.request_hash = hash(0x31);
  op.u.payid.status = 200;
  op.u.payid.response_header = "eyJzdWNjZXNzIjp0cnVlfQ==";
  op.u.payid.request_id = "req-77";
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_ERR(tg_store_write(st, &op, 1), TG_EEXISTS);
  tg_store_payid p;
  CHECK_OK(tg_store_payid_get(st, "pay_7d5d747be160e280504c099d984bcfe0", &p));
  CHECK_INT(p.status, 200);
  CHECK_STR(p.response_header, "eyJzdWNjZXNzIjp0cnVlfQ==");
  CHECK_STR(p.request_id, "req-77");
  CHECK(p.request_hash.b[31] == 0x31 && p.payer.b[0] == 0xa1);
  CHECK_ERR(tg_store_payid_get(st, "pay_unknown_0000000000", &p), TG_ENOTFOUND);
  op.u.payid.id = "short"; /* the extension's ids are 16..128 characters */
  CHECK_ERR(tg_store_write(st, &op, 1), TG_EINVAL);
  op.u.payid.id = "pay_0000000000000001";
  op.u.payid.response_header = NULL;
  op.u.payid.request_id = NULL;
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_OK(tg_store_payid_get(st, "pay_0000000000000001", &p));
  CHECK_STR(p.response_header, "");
  tg_store_close(st);
}

static void test_pass_usage(void) {
  char path[256];
  tg_store *st = open_fresh(path, sizeof(path));
  if (!st) return;
  tg_store_op op;
  memset(&op, 0, sizeof(op));
  op.kind = TG_STORE_OP_PASS_USE;
  op.u.pass.pass_id = u(7);
  op.u.pass.holder = addr(0xd1);
  op.u.pass.period_start = 1700000000000LL;
  op.u.pass.calls = 1;
  op.u.pass.tokens = 300;
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_INT(op.u.pass.out_calls, 2);
  CHECK_INT(op.u.pass.out_tokens, 600);
  tg_store_pass_usage pu;
  tg_u256 pid = u(7);
  tg_address h = addr(0xd1);
  CHECK_OK(tg_store_pass_usage_get(st, &pid, &h, 1700000000000LL, &pu));
  CHECK_INT(pu.calls, 2);
  CHECK_INT(pu.tokens, 600);
  CHECK_ERR(tg_store_pass_usage_get(st, &pid, &h, 1, &pu), TG_ENOTFOUND);
  op.u.pass.tokens = (uint64_t)1 << 41;
  CHECK_ERR(tg_store_write(st, &op, 1), TG_ERANGE);
  tg_store_close(st);
}

typedef struct {
  int n;
  tg_store_settle_item items[8];
} item_list;

static int collect_item(void *arg, const tg_store_settle_item *it) {
  item_list *l = arg;
  if (l->n < 8) l->items[l->n] = *it;
  l->n++;
  return 0;
}

static void test_settle_journal(void) {
  char path[256];
  tg_store *st = store_with_channel(path, sizeof(path), 1000);
  if (!st) return;
  tg_store_settle_run run;
  CHECK_ERR(tg_store_run_open_get(st, &run), TG_ENOTFOUND);
  tg_store_op op;
  memset(&op, 0, sizeof(op));
  op.kind = TG_STORE_OP_RUN_BEGIN;
  CHECK_OK(tg_store_write(st, &op, 1));
  int64_t rid = op.u.run.run_id;
  CHECK(rid > 0);
  CHECK_OK(tg_store_run_open_get(st, &run));
  CHECK_INT(run.id, rid);
  CHECK_INT(run.status, TG_RUN_OPEN);

  tg_store_op it;
  memset(&it, 0, sizeof(it));
  it.kind = TG_STORE_OP_ITEM_PUT;
  it.u.item.run_id = rid;
  it.u.item.channel_id = hash(1);
  it.u.item.amount = u(500);
  it.u.item.through_charge = 12;
  it.u.item.step = TG_SETTLE_PLANNED;
  CHECK_OK(tg_store_write(st, &it, 1));
  it.u.item.step = TG_SETTLE_SENT;
  it.u.item.has_tx = 1;
  it.u.item.tx_hash = hash(0x77);
  CHECK_OK(tg_store_write(st, &it, 1));
  it.u.item.step = TG_SETTLE_CONFIRMED;
  it.u.item.has_tx = 0;
  CHECK_OK(tg_store_write(st, &it, 1));
  item_list l = {0};
  CHECK_OK(tg_store_run_items(st, rid, collect_item, &l));
  CHECK_INT(l.n, 1);
  CHECK_INT(l.items[0].step, TG_SETTLE_CONFIRMED);
  CHECK(l.items[0].has_tx && l.items[0].tx_hash.b[31] == 0x77);
  CHECK_INT(u64(&l.items[0].amount), 500);
  CHECK_INT(l.items[0].through_charge, 12);

  it.u.item.channel_id = hash(5); /* unknown channel */
  CHECK_ERR(tg_store_write(st, &it, 1), TG_ENOTFOUND);
  it.u.item.channel_id = hash(1);
  it.u.item.run_id = rid + 100; /* unknown run */
  CHECK_ERR(tg_store_write(st, &it, 1), TG_ENOTFOUND);
  it.u.item.run_id = rid;
  it.u.item.step = TG_SETTLE_DROPPED;
  it.u.item.error = "ChannelSkipped: withdrawn";
  CHECK_OK(tg_store_write(st, &it, 1));
  l.n = 0;
  CHECK_OK(tg_store_run_items(st, rid, collect_item, &l));
  CHECK_STR(l.items[0].error, "ChannelSkipped: withdrawn");

  op.kind = TG_STORE_OP_RUN_END;
  op.u.run.run_id = rid;
  op.u.run.status = TG_RUN_DONE;
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_ERR(tg_store_run_open_get(st, &run), TG_ENOTFOUND);
  op.u.run.run_id = rid + 1;
  CHECK_ERR(tg_store_write(st, &op, 1), TG_ENOTFOUND);

  /* Marking a channel's charges settled through an id. */
  tg_store_op ch[3] = {charge("s1", 0xa1, 1, 1, 0), charge("s2", 0xa1, 1, 1, 0),
                       charge("s3", 0xa1, 1, 1, 0)};
  ch[0].u.charge.created_at = 1000;
  ch[1].u.charge.created_at = 2000;
  ch[2].u.charge.created_at = 3000;
  CHECK_OK(tg_store_write(st, ch, 3));
  tg_store_op se;
  memset(&se, 0, sizeof(se));
  se.kind = TG_STORE_OP_CHARGES_SETTLE;
  se.u.settle.channel_id = hash(1);
  se.u.settle.through_charge = ch[1].u.charge.out_id;
  CHECK_OK(tg_store_write(st, &se, 1));
  CHECK_INT(se.u.settle.out_count, 2);
  tg_store_channel chv;
  tg_hash cid = hash(1);
  CHECK_OK(tg_store_channel_get(st, &cid, &chv));
  tg_store_charge c3;
  CHECK_OK(tg_store_charge_get(st, "s3", &c3));
  CHECK_INT(chv.first_unclaimed_at, c3.created_at); /* the oldest unsettled charge */
  CHECK_OK(tg_store_write(st, &se, 1));
  CHECK_INT(se.u.settle.out_count, 0);
  tg_store_charge c;
  CHECK_OK(tg_store_charge_get(st, "s2", &c));
  CHECK(c.settled);
  CHECK_OK(tg_store_charge_get(st, "s3", &c));
  CHECK(!c.settled);
  se.u.settle.through_charge = ch[2].u.charge.out_id;
  CHECK_OK(tg_store_write(st, &se, 1));
  CHECK_OK(tg_store_channel_get(st, &cid, &chv));
  CHECK_INT(chv.first_unclaimed_at, 0);
  tg_store_close(st);
}

static void test_leases(void) {
  char path[256];
  tg_store *st = open_fresh(path, sizeof(path));
  if (!st) return;
  tg_store_op op;
  memset(&op, 0, sizeof(op));
  op.kind = TG_STORE_OP_LEASE_ACQUIRE;
  op.u.lease.name = "settle";
  op.u.lease.holder = "gw-a";
  op.u.lease.ttl_ms = 10000;
  op.now = 1000000;
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_INT(op.u.lease.out_expires_at, 1010000);
  op.u.lease.holder = "gw-b";
  op.now = 1005000;
  CHECK_ERR(tg_store_write(st, &op, 1), TG_ESTORE_LEASE);
  op.u.lease.holder = "gw-a"; /* renewal */
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_INT(op.u.lease.out_expires_at, 1015000);
  op.u.lease.holder = "gw-b"; /* after expiry it moves */
  op.now = 1015001;
  CHECK_OK(tg_store_write(st, &op, 1));
  tg_store_lease l;
  CHECK_OK(tg_store_lease_get(st, "settle", &l));
  CHECK_STR(l.holder, "gw-b");
  CHECK_INT(l.expires_at, 1025001);
  op.kind = TG_STORE_OP_LEASE_RELEASE;
  op.u.lease.holder = "gw-a"; /* not the holder: no-op */
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_OK(tg_store_lease_get(st, "settle", &l));
  op.u.lease.holder = "gw-b";
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_ERR(tg_store_lease_get(st, "settle", &l), TG_ENOTFOUND);
  tg_store_close(st);
}

/* Reconciliation reads: sums of charge rows equal the running totals. */
typedef struct {
  tg_u256 sum;
  uint64_t n;
  int64_t last_id;
} charge_sum;

static int sum_charge(void *arg, const tg_store_charge *c) {
  charge_sum *s = arg;
  if (tg_u256_add(&s->sum, &s->sum, &c->amount) < 0) return TG_EOVERFLOW;
  s->n++;
  s->last_id = c->id;
  return 0;
}

typedef struct {
  int n;
  uint8_t ids[16];
} chan_list;

static int collect_chan(void *arg, const tg_store_channel *ch) {
  chan_list *l = arg;
  if (l->n < 16) l->ids[l->n] = ch->id.b[31];
  l->n++;
  return 0;
}

static void test_reads_and_totals(void) {
  char path[256];
  tg_store *st = open_fresh(path, sizeof(path));
  if (!st) return;
  tg_store_op setup[6] = {channel_put(1, 0xa1, 1000, 1), channel_put(2, 0xa1, 1000, 1),
                          channel_put(3, 0xa2, 1000, 1), voucher(1, 1000, 1),
                          voucher(2, 1000, 2),          voucher(3, 1000, 3)};
  CHECK_OK(tg_store_write(st, setup, 6));
  tg_store_op ops[5] = {charge("a", 0xa1, 1, 10, 0), charge("b", 0xa1, 1, 20, 0),
                        charge("c", 0xa1, 2, 5, 0), charge("d", 0xa1, -1, 7, 0),
                        charge("e", 0xa2, 3, 3, 0)};
  CHECK_OK(tg_store_write(st, ops, 5));

  chan_list cl = {0};
  CHECK_OK(tg_store_channels_unsettled(st, collect_chan, &cl));
  CHECK_INT(cl.n, 3);
  /* channel 2 fully claimed on-chain: no longer unsettled */
  tg_store_op sync = channel_put(2, 0xa1, 995, 5);
  sync.kind = TG_STORE_OP_CHANNEL_SYNC;
  sync.u.channel.chain.total_claimed = u(5);
  CHECK_OK(tg_store_write(st, &sync, 1));
  tg_store_channel ch;
  tg_hash id2 = hash(2);
  CHECK_OK(tg_store_channel_get(st, &id2, &ch));
  CHECK_INT(ch.first_unclaimed_at, 0);
  cl.n = 0;
  CHECK_OK(tg_store_channels_unsettled(st, collect_chan, &cl));
  CHECK_INT(cl.n, 2);
  CHECK(cl.ids[0] != 2 && cl.ids[1] != 2);
  tg_address pa = addr(0xa1);
  cl.n = 0;
  CHECK_OK(tg_store_channels_list(st, &pa, collect_chan, &cl));
  CHECK_INT(cl.n, 2);
  cl.n = 0;
  CHECK_OK(tg_store_channels_list(st, NULL, collect_chan, &cl));
  CHECK_INT(cl.n, 3);

  charge_sum s = {0};
  tg_hash id1 = hash(1);
  CHECK_OK(tg_store_charges_by_channel(st, &id1, 0, 0, sum_charge, &s));
  CHECK_INT(s.n, 2);
  CHECK_INT(u64(&s.sum), 30);
  CHECK_OK(tg_store_channel_get(st, &id1, &ch));
  CHECK(tg_u256_cmp(&ch.charged, &s.sum) == 0);
  /* paging */
  memset(&s, 0, sizeof(s));
  CHECK_OK(tg_store_charges_by_channel(st, &id1, 0, 1, sum_charge, &s));
  CHECK_INT(s.n, 1);
  CHECK_OK(tg_store_charges_by_channel(st, &id1, s.last_id, 1, sum_charge, &s));
  CHECK_INT(s.n, 2);
  CHECK_INT(u64(&s.sum), 30);
  memset(&s, 0, sizeof(s));
  CHECK_OK(tg_store_charges_by_payer(st, &pa, 0, 0, sum_charge, &s));
  CHECK_INT(s.n, 4);
  CHECK_INT(u64(&s.sum), 42);
  tg_store_totals t;
  CHECK_OK(tg_store_totals_get(st, &pa, TG_SCHEME_CHANNEL, &t));
  CHECK_INT(u64(&t.charged), 35);
  CHECK_INT(t.count, 3);
  CHECK_OK(tg_store_totals_get(st, &pa, TG_SCHEME_EXACT, &t));
  CHECK_INT(u64(&t.charged), 7);
  CHECK_OK(tg_store_totals_get(st, &pa, TG_SCHEME_PASS, &t));
  CHECK(tg_u256_is_zero(&t.charged) && t.count == 0);
  tg_store_close(st);
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

typedef struct {
  atomic_int done;
  atomic_int ok;
  atomic_int failed;
  int last_err;
} counter;

static void count_cb(void *arg, int err, const tg_store_op *ops, size_t n) {
  (void)ops;
  (void)n;
  counter *c = arg;
  if (err == 0) atomic_fetch_add(&c->ok, 1);
  else {
    atomic_fetch_add(&c->failed, 1);
    c->last_err = err;
  }
  atomic_fetch_add(&c->done, 1);
}

static void wait_done(counter *c, int n) {
  for (int i = 0; i < 20000 && atomic_load(&c->done) < n; i++) usleep(1000);
}

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

/* Close drains: every accepted submission's callback fires before close returns. */
static void test_close_drains(void) {
  char path[256];
  tg_store *st = store_with_channel(path, sizeof(path), 1000000);
  if (!st) return;
  counter c = {0};
  char ids[500][16];
  for (int i = 0; i < 500; i++) {
    snprintf(ids[i], sizeof(ids[i]), "cd-%d", i);
    tg_store_op op = charge(ids[i], 0xa1, 1, 1, 0);
    CHECK_OK(tg_store_submit(st, &op, 1, count_cb, &c));
  }
  tg_store_close(st);
  CHECK_INT(atomic_load(&c.done), 500);
  CHECK_INT(atomic_load(&c.ok), 500);
}

#define PRODUCERS 64
#define PER_PRODUCER 50

typedef struct {
  tg_store *st;
  int idx;
  counter *c;
  int busy;
} producer;

static void *producer_main(void *p) {
  producer *pr = p;
  for (int i = 0; i < PER_PRODUCER; i++) {
    char id[32];
    snprintf(id, sizeof(id), "p%d-%d", pr->idx, i);
    /* 8 channels shared by 64 producers; payer 0xa0 + channel */
    int chan = 1 + pr->idx % 8;
    tg_store_op op = charge(id, (uint8_t)(0xa0 + chan), chan, (uint64_t)(1 + i % 5), 0);
    int rc;
    if (i % 2 == 0) {
      rc = tg_store_write(pr->st, &op, 1);
      if (rc == 0) atomic_fetch_add(&pr->c->ok, 1);
      atomic_fetch_add(&pr->c->done, 1);
    } else {
      while ((rc = tg_store_submit(pr->st, &op, 1, count_cb, pr->c)) == TG_EBUSY) {
        pr->busy++;
        usleep(100);
      }
    }
    if (rc < 0 && rc != TG_EBUSY) atomic_fetch_add(&pr->c->failed, 1);
  }
  return NULL;
}

static void test_concurrency_64(void) {
  char path[256];
  tg_store *st = open_fresh(path, sizeof(path));
  if (!st) return;
  for (int ch = 1; ch <= 8; ch++) {
    tg_store_op setup[2] = {channel_put((uint8_t)ch, (uint8_t)(0xa0 + ch), 1, 1),
                            voucher((uint8_t)ch, 1000000, 1)};
    CHECK_OK(tg_store_write(st, setup, 2));
  }
  counter c = {0};
  pthread_t th[PRODUCERS];
  producer pr[PRODUCERS];
  for (int i = 0; i < PRODUCERS; i++) {
    pr[i] = (producer){st, i, &c, 0};
    CHECK(pthread_create(&th[i], NULL, producer_main, &pr[i]) == 0);
  }
  for (int i = 0; i < PRODUCERS; i++) pthread_join(th[i], NULL);
  wait_done(&c, PRODUCERS * PER_PRODUCER);
  CHECK_INT(atomic_load(&c.ok), PRODUCERS * PER_PRODUCER);
  CHECK_INT(atomic_load(&c.failed), 0);
  /* Each channel's total equals its expected sum and the sum of its rows. */
  for (int ch = 1; ch <= 8; ch++) {
    uint64_t want = 0;
    for (int p = 0; p < PRODUCERS; p++)
      if (1 + p % 8 == ch)
        for (int i = 0; i < PER_PRODUCER; i++) want += (uint64_t)(1 + i % 5);
    tg_store_channel chv;
    tg_hash id = hash((uint8_t)ch);
    CHECK_OK(tg_store_channel_get(st, &id, &chv));
    CHECK_INT(u64(&chv.charged), want);
    charge_sum s = {0};
    CHECK_OK(tg_store_charges_by_channel(st, &id, 0, 0, sum_charge, &s));
    CHECK(tg_u256_cmp(&s.sum, &chv.charged) == 0);
    CHECK_INT(s.n, chv.charge_count);
  }
  tg_store_stats stats;
  tg_store_get_stats(st, &stats);
  CHECKF(stats.commits < stats.submissions, "commits %llu, submissions %llu",
         (unsigned long long)stats.commits, (unsigned long long)stats.submissions);
  tg_store_close(st);
}

typedef struct {
  tg_store *st;
  atomic_int rc;
  atomic_int submit_rc;
  atomic_int done;
} reentry;

static void reentry_cb(void *arg, int err, const tg_store_op *ops, size_t n) {
  (void)err;
  (void)ops;
  (void)n;
  reentry *r = arg;
  tg_store_op op = charge("inner-sync", 0xa1, 1, 1, 0);
  atomic_store(&r->rc, tg_store_write(r->st, &op, 1));
  /* An async submission from a callback is fine: it goes to the next batch. */
  static counter c;
  op = charge("inner-async", 0xa1, 1, 1, 0);
  atomic_store(&r->submit_rc, tg_store_submit(r->st, &op, 1, count_cb, &c));
  atomic_store(&r->done, 1);
}

/* A synchronous write from a callback (the writer thread) is refused instead of deadlocking. */
static void test_write_from_callback(void) {
  char path[256];
  tg_store *st = store_with_channel(path, sizeof(path), 1000);
  if (!st) return;
  reentry r = {st, 1, 1, 0};
  tg_store_op op = charge("outer", 0xa1, 1, 1, 0);
  CHECK_OK(tg_store_submit(st, &op, 1, reentry_cb, &r));
  for (int i = 0; i < 5000 && !atomic_load(&r.done); i++) usleep(1000);
  CHECK_ERR(atomic_load(&r.rc), TG_EPERM);
  CHECK_OK(atomic_load(&r.submit_rc));
  tg_store_close(st); /* drains the inner submission */
  char uri[300];
  snprintf(uri, sizeof(uri), "sqlite:%s", path);
  CHECK_OK(tg_store_open(&st, uri, NULL));
  tg_store_charge c;
  CHECK_OK(tg_store_charge_get(st, "inner-async", &c));
  CHECK_ERR(tg_store_charge_get(st, "inner-sync", &c), TG_ENOTFOUND);
  tg_store_close(st);
}

/* ------------------------------------------------------------------------- */
/* Delivery on a libevent loop. */

typedef struct {
  pthread_t loop_thread;
  int on_loop;
  int calls;
  int err;
  int64_t charge_id;
  struct event_base *base;
} ev_ctx;

static void ev_cb(void *arg, int err, const tg_store_op *ops, size_t n) {
  ev_ctx *e = arg;
  e->on_loop = pthread_equal(pthread_self(), e->loop_thread);
  e->calls++;
  e->err = err;
  if (n == 1 && ops[0].kind == TG_STORE_OP_CHARGE) e->charge_id = ops[0].u.charge.out_id;
  event_base_loopbreak(e->base);
}

static void test_evbase(void) {
  CHECK(evthread_use_pthreads() == 0);
  char path[256];
  tg_store *st = store_with_channel(path, sizeof(path), 1000);
  if (!st) return;
  struct event_base *base = event_base_new();
  ev_ctx e = {pthread_self(), 0, 0, 0, 0, base};
  /* The op's strings may be freed right after submit: the store copied them. */
  char *rid = strdup("ev-1");
  tg_store_op op = charge(rid, 0xa1, 1, 3, 0);
  CHECK_OK(tg_store_submit_evbase(st, &op, 1, base, ev_cb, &e));
  free(rid);
  struct timeval tv = {10, 0};
  event_base_loopexit(base, &tv);
  event_base_dispatch(base);
  CHECK_INT(e.calls, 1);
  CHECK(e.on_loop);
  CHECK_OK(e.err);
  CHECK(e.charge_id > 0);
  tg_store_charge c;
  CHECK_OK(tg_store_charge_get(st, "ev-1", &c));
  event_base_free(base);
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
  RUN(test_channel_put_sync);
  RUN(test_voucher_monotonic);
  RUN(test_charge_ceiling);
  RUN(test_db_enforces_invariant);
  RUN(test_submission_atomic);
  RUN(test_validation);
  RUN(test_exact);
  RUN(test_payid);
  RUN(test_pass_usage);
  RUN(test_settle_journal);
  RUN(test_leases);
  RUN(test_reads_and_totals);
  RUN(test_corrupt_row);
  RUN(test_group_commit);
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
