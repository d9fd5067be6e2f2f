/* The SQLite store backend: WAL, synchronous=FULL, cached prepared statements, typed ops as SQL. */
#include "store/store_int.h"

#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "store/migrations_sqlite.h"
#include "tollgate/u256.h"

/* Every statement a connection may prepare, prepared once on first use and cached. */
enum {
  S_BEGIN,
  S_COMMIT,
  S_ROLLBACK,
  S_SP,
  S_SP_RELEASE,
  S_SP_ROLLBACK,
  S_CH_CFG,
  S_CH_INSERT,
  S_CH_SYNC,
  S_CH_EXISTS,
  S_CH_VOUCHER_READ,
  S_CH_VOUCHER_SET,
  S_CH_CHARGE_READ,
  S_CH_CHARGE_SET,
  S_CHARGE_INSERT,
  S_TOTALS_READ,
  S_TOTALS_SET,
  S_SETTLE,
  S_SETTLE_AGE,
  S_EXACT_INSERT,
  S_EXACT_UPDATE,
  S_EXACT_SETTLE_CHARGE,
  S_PAYID_INSERT,
  S_PASS_READ,
  S_PASS_SET,
  S_RUN_INSERT,
  S_RUN_END,
  S_ITEM_PUT,
  S_LEASE_READ,
  S_LEASE_SET,
  S_LEASE_DELETE,
  S_NONCE_INSERT,
  S_NONCE_PURGE,
  S_NONCE_USE,
  S_SESSION_INSERT,
  S_SESSION_PURGE,
  S_SESSION_DELETE,
  S_CH_FOLD_READ,
  S_CH_FOLD_SET,
  /* reads */
  S_CH_GET,
  S_CH_ALL,
  S_CH_BY_PAYER,
  S_CH_UNSETTLED,
  S_CHARGES_BY_CHANNEL,
  S_CHARGES_BY_PAYER,
  S_CHARGE_GET,
  S_EXACT_GET,
  S_EXACT_ALL,
  S_PAYID_GET,
  S_RUN_OPEN,
  S_RUN_ITEMS,
  S_VERSION,
  S_SESSION_GET,
  S_COUNT
};

#define CH_COLS                                                                      \
  "id, chain_id, contract, payer, payer_authorizer, receiver, receiver_authorizer, " \
  "token, withdraw_delay, salt, balance, total_claimed, withdraw_requested_at, "    \
  "refund_nonce, synced_block, status, charged, ceiling, ceiling_sig, credit_limit, "  \
  "charge_count, first_unclaimed_at, created_at, updated_at"
#define CHARGE_COLS                                                                     \
  "id, request_id, payer, scheme, route, model, input_tokens, output_tokens, amount, " \
  "channel_id, cumulative_after, created_at, settled"

static const char *const sql_text[S_COUNT] = {
    [S_BEGIN] = "BEGIN IMMEDIATE",
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
    [S_SP] = "SAVEPOINT sub",
    [S_SP_RELEASE] = "RELEASE sub",
    [S_SP_ROLLBACK] = "ROLLBACK TO sub",
    [S_CH_CFG] = "SELECT chain_id, contract, payer, payer_authorizer, receiver, "
                 "receiver_authorizer, token, withdraw_delay, salt FROM channels WHERE id = ?1",
    [S_CH_INSERT] =
        "INSERT INTO channels (id, chain_id, contract, payer, payer_authorizer, receiver, "
        "receiver_authorizer, token, withdraw_delay, salt, balance, total_claimed, "
        "withdraw_requested_at, refund_nonce, synced_block, status, charged, ceiling, "
        "ceiling_sig, credit_limit, charge_cap, charge_count, first_unclaimed_at, created_at, "
        "updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, "
        "?16, ?17, ?17, NULL, ?17, ?17, 0, 0, ?18, ?18)",
    [S_CH_SYNC] = "UPDATE channels SET balance = ?2, total_claimed = ?3, "
                  "withdraw_requested_at = ?4, refund_nonce = ?5, synced_block = ?6, "
                  "status = CASE WHEN status = 2 THEN 2 ELSE ?7 END, "
                  "first_unclaimed_at = CASE WHEN ?3 >= charged THEN 0 "
                  "ELSE first_unclaimed_at END, updated_at = ?8 "
                  "WHERE id = ?1 AND synced_block <= ?6",
    [S_CH_EXISTS] = "SELECT 1 FROM channels WHERE id = ?1",
    [S_CH_VOUCHER_READ] = "SELECT ceiling, credit_limit, status FROM channels WHERE id = ?1",
    [S_CH_VOUCHER_SET] = "UPDATE channels SET ceiling = ?2, ceiling_sig = ?3, charge_cap = ?4, "
                         "updated_at = ?5 WHERE id = ?1",
    [S_CH_CHARGE_READ] = "SELECT payer, status, charged, ceiling FROM channels WHERE id = ?1",
    [S_CH_CHARGE_SET] = "UPDATE channels SET charged = ?2, credit_limit = ?3, charge_cap = ?4, "
                        "charge_count = charge_count + 1, first_unclaimed_at = CASE WHEN "
                        "first_unclaimed_at = 0 AND ?2 > total_claimed THEN ?6 ELSE "
                        "first_unclaimed_at END, updated_at = ?5 WHERE id = ?1",
    [S_CH_FOLD_READ] = "SELECT payer, status, charged, ceiling, credit_limit FROM channels "
                       "WHERE id = ?1",
    [S_CH_FOLD_SET] = "UPDATE channels SET charged = ?2, credit_limit = ?3, charge_cap = ?4, "
                      "charge_count = charge_count + ?7, first_unclaimed_at = CASE WHEN "
                      "first_unclaimed_at = 0 AND ?2 > total_claimed THEN ?6 ELSE "
                      "first_unclaimed_at END, updated_at = ?5 WHERE id = ?1",
    [S_CHARGE_INSERT] = "INSERT INTO charges (request_id, payer, scheme, route, model, "
                        "input_tokens, output_tokens, amount, channel_id, cumulative_after, "
                        "created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    [S_TOTALS_READ] = "SELECT charged, count FROM payer_totals WHERE payer = ?1 AND scheme = ?2",
    [S_TOTALS_SET] = "INSERT INTO payer_totals (payer, scheme, charged, count) "
                     "VALUES (?1, ?2, ?3, ?4) ON CONFLICT (payer, scheme) DO UPDATE SET "
                     "charged = excluded.charged, count = excluded.count",
    [S_SETTLE] = "UPDATE charges SET settled = 1 WHERE channel_id = ?1 AND id <= ?2 "
                 "AND settled = 0",
    [S_SETTLE_AGE] = "UPDATE channels SET first_unclaimed_at = coalesce((SELECT min(created_at) "
                     "FROM charges WHERE channel_id = ?1 AND settled = 0), 0) WHERE id = ?1",
    [S_EXACT_INSERT] = "INSERT INTO exact_payments (token, nonce, payer, to_addr, amount, "
                       "valid_after, valid_before, tx_hash, status, request_id, created_at, "
                       "updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11)",
    /* a receipt's outcome (confirmed, failed) is not undone by a late `submitted` or `mined`
     * of the same transaction (docs/STORE.md) */
    [S_EXACT_UPDATE] = "UPDATE exact_payments SET status = CASE WHEN ?3 IN (1, 2) AND status IN "
                       "(3, 4) AND tx_hash = ?4 THEN status ELSE ?3 END, "
                       "tx_hash = coalesce(?4, tx_hash), "
                       "updated_at = ?5 WHERE token = ?1 AND nonce = ?2 AND payer = ?6 "
                       "AND (?7 = 0 OR status IN (1, 2))",
    [S_EXACT_SETTLE_CHARGE] = "UPDATE charges SET settled = 1 WHERE request_id = (SELECT "
                              "request_id FROM exact_payments WHERE token = ?1 AND nonce = ?2 "
                              "AND payer = ?3 AND request_id <> '')",
    [S_PAYID_INSERT] = "INSERT INTO payment_ids (id, payer, request_hash, status, "
                       "response_header, request_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5, "
                       "?6, ?7)",
    [S_PASS_READ] = "SELECT calls, tokens FROM pass_usage WHERE pass_id = ?1 AND holder = ?2 "
                    "AND period_start = ?3",
    [S_PASS_SET] = "INSERT INTO pass_usage (pass_id, holder, period_start, calls, tokens, "
                   "updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (pass_id, holder, "
                   "period_start) DO UPDATE SET calls = excluded.calls, tokens = "
                   "excluded.tokens, updated_at = excluded.updated_at",
    [S_NONCE_INSERT] = "INSERT INTO auth_nonces (nonce, expires_at, used_at) VALUES (?1, ?2, ?3)",
    /* expired nonces are kept a day past their expiry (what was refused stays explainable) */
    [S_NONCE_PURGE] = "DELETE FROM auth_nonces WHERE expires_at < ?1 - 86400000",
    [S_NONCE_USE] = "UPDATE auth_nonces SET used_at = ?2 WHERE nonce = ?1 AND used_at = 0 "
                    "AND expires_at > ?2",
    [S_SESSION_INSERT] = "INSERT INTO sessions (token_hash, address, created_at, expires_at) "
                         "VALUES (?1, ?2, ?3, ?4)",
    [S_SESSION_DELETE] = "DELETE FROM sessions WHERE token_hash = ?1",
    [S_SESSION_PURGE] = "DELETE FROM sessions WHERE expires_at < ?1 - 86400000",
    [S_SESSION_GET] = "SELECT address, created_at, expires_at FROM sessions WHERE token_hash = ?1",
    [S_RUN_INSERT] = "INSERT INTO settle_runs (started_at, finished_at, status) "
                     "VALUES (?1, 0, 0)",
    [S_RUN_END] = "UPDATE settle_runs SET status = ?2, finished_at = ?3 WHERE id = ?1",
    [S_ITEM_PUT] = "INSERT INTO settle_items (run_id, channel_id, amount, through_charge, step, "
                   "tx_hash, error, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) "
                   "ON CONFLICT (run_id, channel_id) DO UPDATE SET amount = excluded.amount, "
                   "through_charge = excluded.through_charge, step = excluded.step, "
                   "tx_hash = coalesce(excluded.tx_hash, tx_hash), error = excluded.error, "
                   "updated_at = excluded.updated_at",
    [S_LEASE_READ] = "SELECT name, holder, expires_at FROM leases WHERE name = ?1",
    [S_LEASE_SET] = "INSERT INTO leases (name, holder, expires_at) VALUES (?1, ?2, ?3) "
                    "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
                    "expires_at = excluded.expires_at",
    [S_LEASE_DELETE] = "DELETE FROM leases WHERE name = ?1 AND holder = ?2",
    [S_CH_GET] = "SELECT " CH_COLS " FROM channels WHERE id = ?1",
    [S_CH_ALL] = "SELECT " CH_COLS " FROM channels ORDER BY id",
    [S_CH_BY_PAYER] = "SELECT " CH_COLS " FROM channels WHERE payer = ?1 ORDER BY id",
    [S_CH_UNSETTLED] = "SELECT " CH_COLS " FROM channels WHERE charged > total_claimed "
                       "ORDER BY first_unclaimed_at, id",
    [S_CHARGES_BY_CHANNEL] = "SELECT " CHARGE_COLS " FROM charges WHERE channel_id = ?1 "
                             "AND id > ?2 ORDER BY id LIMIT ?3",
    [S_CHARGES_BY_PAYER] = "SELECT " CHARGE_COLS " FROM charges WHERE payer = ?1 AND id > ?2 "
                           "ORDER BY id LIMIT ?3",
    [S_CHARGE_GET] = "SELECT " CHARGE_COLS " FROM charges WHERE request_id = ?1",
    [S_EXACT_GET] = "SELECT token, nonce, payer, to_addr, amount, valid_after, valid_before, "
                    "tx_hash, status, request_id, created_at, updated_at FROM exact_payments "
                    "WHERE token = ?1 AND nonce = ?2 AND payer = ?3",
    [S_EXACT_ALL] = "SELECT token, nonce, payer, to_addr, amount, valid_after, valid_before, "
                    "tx_hash, status, request_id, created_at, updated_at FROM exact_payments "
                    "ORDER BY created_at, token, payer, nonce",
    [S_PAYID_GET] = "SELECT id, payer, request_hash, status, response_header, request_id, "
                    "created_at FROM payment_ids WHERE id = ?1",
    [S_RUN_OPEN] = "SELECT id, started_at, finished_at, status FROM settle_runs WHERE status = 0 "
                   "ORDER BY id DESC LIMIT 1",
    [S_RUN_ITEMS] = "SELECT run_id, channel_id, amount, through_charge, step, tx_hash, error, "
                    "updated_at FROM settle_items WHERE run_id = ?1 ORDER BY channel_id",
    [S_VERSION] = "SELECT coalesce(max(version), 0) FROM schema_version",
};

struct tg__store_conn {
  sqlite3 *db;
  int writer;
  sqlite3_stmt *stmt[S_COUNT];
};

/* ------------------------------------------------------------------------- */
/* Helpers. */

static int map_rc(int rc) {
  switch (rc & 0xff) {
  case SQLITE_OK:
  case SQLITE_DONE:
  case SQLITE_ROW:
    return 0;
  case SQLITE_CONSTRAINT:
    if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY) return TG_EEXISTS;
    return TG_ESTORE_CONSTRAINT;
  case SQLITE_BUSY:
  case SQLITE_LOCKED:
    return TG_EBUSY;
  case SQLITE_NOMEM:
    return TG_ENOMEM;
  case SQLITE_CORRUPT:
  case SQLITE_NOTADB:
    return TG_ESTORE_CORRUPT;
  default:
    return TG_ESTORE;
  }
}

static int stmt_get(tg__store_conn *c, int id, sqlite3_stmt **out) {
  *out = NULL;
  if (c->stmt[id] == NULL) {
    int rc = sqlite3_prepare_v3(c->db, sql_text[id], -1, SQLITE_PREPARE_PERSISTENT,
                                &c->stmt[id], NULL);
    if (rc != SQLITE_OK) return map_rc(rc);
  }
  *out = c->stmt[id];
  return 0;
}

static void stmt_done(sqlite3_stmt *s) {
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
}

/* Steps a statement that returns no rows, then resets it. */
static int run(sqlite3_stmt *s) {
  int rc = sqlite3_step(s);
  stmt_done(s);
  return rc == SQLITE_DONE ? 0 : map_rc(rc == SQLITE_ROW ? SQLITE_ERROR : rc);
}

/* Steps once: 1 for a row (statement left positioned), 0 for none (reset), or an error (reset). */
static int step_row(sqlite3_stmt *s) {
  int rc = sqlite3_step(s);
  if (rc == SQLITE_ROW) return 1;
  stmt_done(s);
  return rc == SQLITE_DONE ? 0 : map_rc(rc);
}

static int exec_plain(tg__store_conn *c, int id) {
  sqlite3_stmt *s;
  int rc = stmt_get(c, id, &s);
  return rc < 0 ? rc : run(s);
}

#define BIND_FIXED(s, i, v) sqlite3_bind_blob((s), (i), (v)->b, (int)sizeof((v)->b), SQLITE_STATIC)

static int col_fixed(sqlite3_stmt *s, int i, uint8_t *out, size_t len) {
  if (sqlite3_column_type(s, i) != SQLITE_BLOB || (size_t)sqlite3_column_bytes(s, i) != len)
    return TG_ESTORE_CORRUPT;
  memcpy(out, sqlite3_column_blob(s, i), len);
  return 0;
}
#define COL_FIXED(s, i, v) col_fixed((s), (i), (v)->b, sizeof((v)->b))

/* A nullable fixed-size blob: *has = 0 when NULL. */
static int col_fixed_opt(sqlite3_stmt *s, int i, uint8_t *out, size_t len, int *has) {
  *has = 0;
  if (sqlite3_column_type(s, i) == SQLITE_NULL) return 0;
  *has = 1;
  return col_fixed(s, i, out, len);
}

static int col_i64(sqlite3_stmt *s, int i, int64_t *out) {
  if (sqlite3_column_type(s, i) != SQLITE_INTEGER) return TG_ESTORE_CORRUPT;
  *out = sqlite3_column_int64(s, i);
  return 0;
}

static int col_u64(sqlite3_stmt *s, int i, uint64_t *out) {
  int64_t v;
  int rc = col_i64(s, i, &v);
  if (rc < 0) return rc;
  if (v < 0) return TG_ESTORE_CORRUPT;
  *out = (uint64_t)v;
  return 0;
}

static int col_text(sqlite3_stmt *s, int i, char *out, size_t cap) {
  if (sqlite3_column_type(s, i) != SQLITE_TEXT) return TG_ESTORE_CORRUPT;
  const unsigned char *t = sqlite3_column_text(s, i);
  size_t n = (size_t)sqlite3_column_bytes(s, i);
  if (t == NULL || n >= cap || memchr(t, 0, n) != NULL) return TG_ESTORE_CORRUPT;
  memcpy(out, t, n);
  out[n] = 0;
  return 0;
}

static void bind_text(sqlite3_stmt *s, int i, const char *t) {
  sqlite3_bind_text(s, i, t ? t : "", -1, SQLITE_STATIC);
}

/* a + b, saturated at 2^256 - 1: a cap that cannot be exceeded anyway. */
static void u256_add_sat(tg_u256 *out, const tg_u256 *a, const tg_u256 *b) {
  if (tg_u256_add(out, a, b) < 0) memset(out->b, 0xff, sizeof(out->b));
}

/* ------------------------------------------------------------------------- */
/* Connections and migrations. */

static void conn_close(tg__store_conn *c) {
  if (c == NULL) return;
  for (int i = 0; i < S_COUNT; i++) sqlite3_finalize(c->stmt[i]);
  sqlite3_close_v2(c->db);
  free(c);
}

static int pragma(sqlite3 *db, const char *sql) {
  return map_rc(sqlite3_exec(db, sql, NULL, NULL, NULL));
}

static int conn_open(tg__store_conn **out, const char *target, const tg_store_options *opts,
                     int writer) {
  *out = NULL;
  /* "sqlite:/abs/path", "sqlite:rel/path" or "sqlite:///abs/path". */
  if (strncmp(target, "//", 2) == 0) target += 2;
  if (target[0] == 0 || strcmp(target, ":memory:") == 0) return TG_ESTORE_URI;
  tg__store_conn *c = calloc(1, sizeof(*c));
  if (c == NULL) return TG_ENOMEM;
  c->writer = writer;
  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (writer ? SQLITE_OPEN_CREATE : 0);
  int rc = sqlite3_open_v2(target, &c->db, flags, NULL);
  if (rc != SQLITE_OK) {
    conn_close(c);
    return writer ? TG_ESTORE : TG_ENOTFOUND;
  }
  sqlite3_extended_result_codes(c->db, 1);
  sqlite3_busy_timeout(c->db, opts->busy_timeout_ms);
  if ((rc = pragma(c->db, "PRAGMA foreign_keys = ON")) < 0) goto fail;
  if (writer) {
    /* WAL: readers never block the writer; FULL: the WAL is fsynced at every commit. */
    char *mode = NULL;
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(c->db, "PRAGMA journal_mode = WAL", -1, &s, NULL) != SQLITE_OK) {
      rc = TG_ESTORE;
      goto fail;
    }
    if (sqlite3_step(s) == SQLITE_ROW && sqlite3_column_text(s, 0))
      mode = strdup((const char *)sqlite3_column_text(s, 0));
    sqlite3_finalize(s);
    int wal = mode && strcmp(mode, "wal") == 0;
    free(mode);
    if (!wal) {
      rc = TG_ESTORE;
      goto fail;
    }
    /* The savepoints' sub-journal in memory: a batch's savepoints record more than SQLite's
     * 64 KiB spill threshold, and a sub-journal on disk is a temporary file created, written
     * and deleted (its inode evicted) at every commit. It only undoes a savepoint inside the
     * open transaction; what is durable is the WAL, fsynced as before (docs/STORE.md). */
    if ((rc = pragma(c->db, "PRAGMA temp_store = MEMORY")) < 0) goto fail;
  } else {
    if ((rc = pragma(c->db, "PRAGMA query_only = ON")) < 0) goto fail;
  }
  if ((rc = pragma(c->db, "PRAGMA synchronous = FULL")) < 0) goto fail;
  *out = c;
  return 0;
fail:
  conn_close(c);
  return rc;
}

static int version_read(tg__store_conn *c, int *current) {
  *current = 0;
  sqlite3_stmt *s;
  int rc = sqlite3_prepare_v2(c->db,
                              "SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                              "name = 'schema_version'",
                              -1, &s, NULL);
  if (rc != SQLITE_OK) return map_rc(rc);
  rc = sqlite3_step(s);
  sqlite3_finalize(s);
  if (rc == SQLITE_DONE) return 0;
  if (rc != SQLITE_ROW) return map_rc(rc);
  if ((rc = stmt_get(c, S_VERSION, &s)) < 0) return rc;
  if ((rc = step_row(s)) <= 0) return rc < 0 ? rc : TG_ESTORE_CORRUPT;
  int64_t v;
  rc = col_i64(s, 0, &v);
  stmt_done(s);
  if (rc < 0) return rc;
  if (v < 0 || v > 1000000) return TG_ESTORE_CORRUPT;
  *current = (int)v;
  return 0;
}

static int conn_version(tg__store_conn *c, int *current, int *latest) {
  *latest = SQLITE_SCHEMA_LATEST;
  return version_read(c, current);
}

/* Applies every pending migration in one transaction. */
static int conn_migrate(tg__store_conn *c, int *applied) {
  *applied = 0;
  int rc = pragma(c->db, "BEGIN IMMEDIATE");
  if (rc < 0) return rc;
  int cur;
  if ((rc = pragma(c->db, "CREATE TABLE IF NOT EXISTS schema_version ("
                          " version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)")) < 0)
    goto fail;
  if ((rc = version_read(c, &cur)) < 0) goto fail;
  if (cur > SQLITE_SCHEMA_LATEST) {
    rc = TG_ESTORE_SCHEMA;
    goto fail;
  }
  for (int v = cur + 1; v <= SQLITE_SCHEMA_LATEST; v++) {
    if (sqlite3_exec(c->db, sqlite_migrations[v - 1], NULL, NULL, NULL) != SQLITE_OK) {
      rc = TG_ESTORE_SCHEMA;
      goto fail;
    }
    sqlite3_stmt *s;
    if (sqlite3_prepare_v2(c->db, "INSERT INTO schema_version (version, applied_at) VALUES (?1, ?2)",
                           -1, &s, NULL) != SQLITE_OK) {
      rc = TG_ESTORE_SCHEMA;
      goto fail;
    }
    sqlite3_bind_int(s, 1, v);
    sqlite3_bind_int64(s, 2, tg__store_now_ms());
    int src = sqlite3_step(s);
    sqlite3_finalize(s);
    if (src != SQLITE_DONE) {
      rc = TG_ESTORE_SCHEMA;
      goto fail;
    }
    (*applied)++;
  }
  if ((rc = pragma(c->db, "COMMIT")) < 0) goto fail;
  return 0;
fail:
  sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
  *applied = 0;
  return rc;
}

/* ------------------------------------------------------------------------- */
/* Transactions. */

static int tx_begin(tg__store_conn *c) { return exec_plain(c, S_BEGIN); }
static int tx_commit(tg__store_conn *c) { return exec_plain(c, S_COMMIT); }
static void tx_rollback(tg__store_conn *c) {
  if (!sqlite3_get_autocommit(c->db)) (void)exec_plain(c, S_ROLLBACK);
}
static int sp_begin(tg__store_conn *c) { return exec_plain(c, S_SP); }
static int sp_release(tg__store_conn *c) { return exec_plain(c, S_SP_RELEASE); }
static void sp_rollback(tg__store_conn *c) {
  /* ROLLBACK TO keeps the savepoint open: release it too. */
  if (exec_plain(c, S_SP_ROLLBACK) == 0) (void)exec_plain(c, S_SP_RELEASE);
}
static int txn_lost(tg__store_conn *c) { return sqlite3_get_autocommit(c->db) != 0; }

/* ------------------------------------------------------------------------- */
/* Write operations. */

static int op_channel(tg__store_conn *c, tg_store_op *op) {
  tg_store_op_channel *o = &op->u.channel;
  sqlite3_stmt *s;
  int rc;
  o->out_applied = 0;
  if (op->kind == TG_STORE_OP_CHANNEL_PUT) {
    if ((rc = stmt_get(c, S_CH_CFG, &s)) < 0) return rc;
    BIND_FIXED(s, 1, &o->id);
    if ((rc = step_row(s)) < 0) return rc;
    if (rc == 1) {
      /* Known channel: its configuration is immutable (it is hashed into the id). */
      tg_store_channel_config cfg;
      memset(&cfg, 0, sizeof(cfg));
      int64_t chain_id, delay;
      if ((rc = col_i64(s, 0, &chain_id)) < 0 || (rc = COL_FIXED(s, 1, &cfg.contract)) < 0 ||
          (rc = COL_FIXED(s, 2, &cfg.payer)) < 0 ||
          (rc = COL_FIXED(s, 3, &cfg.payer_authorizer)) < 0 ||
          (rc = COL_FIXED(s, 4, &cfg.receiver)) < 0 ||
          (rc = COL_FIXED(s, 5, &cfg.receiver_authorizer)) < 0 ||
          (rc = COL_FIXED(s, 6, &cfg.token)) < 0 || (rc = col_i64(s, 7, &delay)) < 0 ||
          (rc = COL_FIXED(s, 8, &cfg.salt)) < 0) {
        stmt_done(s);
        return rc;
      }
      stmt_done(s);
      cfg.chain_id = (uint64_t)chain_id;
      cfg.withdraw_delay = (uint64_t)delay;
      if (memcmp(&cfg, &o->cfg, sizeof(cfg)) != 0) {
        /* compare field by field: the struct may have padding */
        const tg_store_channel_config *a = &cfg, *b = &o->cfg;
        if (a->chain_id != b->chain_id || a->withdraw_delay != b->withdraw_delay ||
            memcmp(&a->contract, &b->contract, 20) || memcmp(&a->payer, &b->payer, 20) ||
            memcmp(&a->payer_authorizer, &b->payer_authorizer, 20) ||
            memcmp(&a->receiver, &b->receiver, 20) ||
            memcmp(&a->receiver_authorizer, &b->receiver_authorizer, 20) ||
            memcmp(&a->token, &b->token, 20) || memcmp(&a->salt, &b->salt, 32))
          return TG_ESTORE_CONSTRAINT;
      }
    } else {
      static const tg_u256 zero;
      if ((rc = stmt_get(c, S_CH_INSERT, &s)) < 0) return rc;
      BIND_FIXED(s, 1, &o->id);
      sqlite3_bind_int64(s, 2, (int64_t)o->cfg.chain_id);
      BIND_FIXED(s, 3, &o->cfg.contract);
      BIND_FIXED(s, 4, &o->cfg.payer);
      BIND_FIXED(s, 5, &o->cfg.payer_authorizer);
      BIND_FIXED(s, 6, &o->cfg.receiver);
      BIND_FIXED(s, 7, &o->cfg.receiver_authorizer);
      BIND_FIXED(s, 8, &o->cfg.token);
      sqlite3_bind_int64(s, 9, (int64_t)o->cfg.withdraw_delay);
      BIND_FIXED(s, 10, &o->cfg.salt);
      BIND_FIXED(s, 11, &o->chain.balance);
      BIND_FIXED(s, 12, &o->chain.total_claimed);
      sqlite3_bind_int64(s, 13, (int64_t)o->chain.withdraw_requested_at);
      sqlite3_bind_int64(s, 14, (int64_t)o->chain.refund_nonce);
      sqlite3_bind_int64(s, 15, (int64_t)o->chain.synced_block);
      sqlite3_bind_int(s, 16, (int)o->chain.status);
      BIND_FIXED(s, 17, &zero);
      sqlite3_bind_int64(s, 18, op->now);
      if ((rc = run(s)) < 0) return rc;
      o->out_applied = 1;
      return 0;
    }
  }
  if ((rc = stmt_get(c, S_CH_SYNC, &s)) < 0) return rc;
  BIND_FIXED(s, 1, &o->id);
  BIND_FIXED(s, 2, &o->chain.balance);
  BIND_FIXED(s, 3, &o->chain.total_claimed);
  sqlite3_bind_int64(s, 4, (int64_t)o->chain.withdraw_requested_at);
  sqlite3_bind_int64(s, 5, (int64_t)o->chain.refund_nonce);
  sqlite3_bind_int64(s, 6, (int64_t)o->chain.synced_block);
  sqlite3_bind_int(s, 7, (int)o->chain.status);
  sqlite3_bind_int64(s, 8, op->now);
  if ((rc = run(s)) < 0) return rc;
  if (sqlite3_changes(c->db) > 0) {
    o->out_applied = 1;
    return 0;
  }
  /* Nothing updated: an older mirror (a no-op), or no such channel. */
  if ((rc = stmt_get(c, S_CH_EXISTS, &s)) < 0) return rc;
  BIND_FIXED(s, 1, &o->id);
  if ((rc = step_row(s)) < 0) return rc;
  stmt_done(s);
  return rc == 1 ? 0 : TG_ENOTFOUND;
}

static int op_voucher(tg__store_conn *c, tg_store_op *op) {
  tg_store_op_voucher *o = &op->u.voucher;
  sqlite3_stmt *s;
  tg_u256 ceiling, credit, cap;
  int64_t status;
  o->out_raised = 0;
  int rc = stmt_get(c, S_CH_VOUCHER_READ, &s);
  if (rc < 0) return rc;
  BIND_FIXED(s, 1, &o->channel_id);
  if ((rc = step_row(s)) <= 0) return rc < 0 ? rc : TG_ENOTFOUND;
  if ((rc = COL_FIXED(s, 0, &ceiling)) < 0 || (rc = COL_FIXED(s, 1, &credit)) < 0 ||
      (rc = col_i64(s, 2, &status)) < 0) {
    stmt_done(s);
    return rc;
  }
  stmt_done(s);
  if (status == TG_CHANNEL_CLOSED) return TG_ESTORE_CHANNEL_CLOSED;
  /* Vouchers are cumulative: only a higher ceiling means anything. */
  if (tg_u256_cmp(&o->max_claimable, &ceiling) <= 0) return 0;
  u256_add_sat(&cap, &o->max_claimable, &credit);
  if ((rc = stmt_get(c, S_CH_VOUCHER_SET, &s)) < 0) return rc;
  BIND_FIXED(s, 1, &o->channel_id);
  BIND_FIXED(s, 2, &o->max_claimable);
  sqlite3_bind_blob(s, 3, o->sig.ptr, (int)o->sig.len, SQLITE_STATIC);
  BIND_FIXED(s, 4, &cap);
  sqlite3_bind_int64(s, 5, op->now);
  if ((rc = run(s)) < 0) return rc;
  o->out_raised = 1;
  return 0;
}

static int totals_add_n(tg__store_conn *c, const tg_address *payer, tg_store_scheme scheme,
                        const tg_u256 *amount, uint64_t n) {
  sqlite3_stmt *s;
  tg_u256 total;
  memset(&total, 0, sizeof(total));
  uint64_t count = 0;
  int rc = stmt_get(c, S_TOTALS_READ, &s);
  if (rc < 0) return rc;
  BIND_FIXED(s, 1, payer);
  sqlite3_bind_int(s, 2, (int)scheme);
  if ((rc = step_row(s)) < 0) return rc;
  if (rc == 1) {
    if ((rc = COL_FIXED(s, 0, &total)) < 0 || (rc = col_u64(s, 1, &count)) < 0) {
      stmt_done(s);
      return rc;
    }
    stmt_done(s);
  }
  if (tg_u256_add(&total, &total, amount) < 0) return TG_EOVERFLOW;
  count += n;
  if ((rc = stmt_get(c, S_TOTALS_SET, &s)) < 0) return rc;
  BIND_FIXED(s, 1, payer);
  sqlite3_bind_int(s, 2, (int)scheme);
  BIND_FIXED(s, 3, &total);
  sqlite3_bind_int64(s, 4, (int64_t)count);
  return run(s);
}

static int totals_add(tg__store_conn *c, const tg_address *payer, tg_store_scheme scheme,
                      const tg_u256 *amount) {
  return totals_add_n(c, payer, scheme, amount, 1);
}

/* The charges row of a charge op; `cumulative` is the channel's total after it (channel
 * charges only). */
static int charge_insert(tg__store_conn *c, tg_store_op *op, const tg_u256 *cumulative) {
  tg_store_op_charge *o = &op->u.charge;
  sqlite3_stmt *s;
  int rc;
  if ((rc = stmt_get(c, S_CHARGE_INSERT, &s)) < 0) return rc;
  bind_text(s, 1, o->request_id);
  BIND_FIXED(s, 2, &o->payer);
  sqlite3_bind_int(s, 3, (int)o->scheme);
  bind_text(s, 4, o->route);
  bind_text(s, 5, o->model);
  sqlite3_bind_int64(s, 6, (int64_t)o->input_tokens);
  sqlite3_bind_int64(s, 7, (int64_t)o->output_tokens);
  BIND_FIXED(s, 8, &o->amount);
  if (o->has_channel) {
    BIND_FIXED(s, 9, &o->channel_id);
    BIND_FIXED(s, 10, cumulative);
  }
  sqlite3_bind_int64(s, 11, o->created_at ? o->created_at : op->now);
  if ((rc = run(s)) < 0) return rc;
  o->out_id = sqlite3_last_insert_rowid(c->db);
  return 0;
}

static int op_charge(tg__store_conn *c, tg_store_op *op) {
  tg_store_op_charge *o = &op->u.charge;
  sqlite3_stmt *s;
  tg_u256 charged, ceiling, cap;
  int rc;
  memset(&o->out_charged, 0, sizeof(o->out_charged));
  o->out_id = 0;
  if (o->has_channel) {
    tg_address payer;
    int64_t status;
    if ((rc = stmt_get(c, S_CH_CHARGE_READ, &s)) < 0) return rc;
    BIND_FIXED(s, 1, &o->channel_id);
    if ((rc = step_row(s)) <= 0) return rc < 0 ? rc : TG_ENOTFOUND;
    if ((rc = COL_FIXED(s, 0, &payer)) < 0 || (rc = col_i64(s, 1, &status)) < 0 ||
        (rc = COL_FIXED(s, 2, &charged)) < 0 || (rc = COL_FIXED(s, 3, &ceiling)) < 0) {
      stmt_done(s);
      return rc;
    }
    stmt_done(s);
    if (memcmp(payer.b, o->payer.b, sizeof(payer.b)) != 0) return TG_ESTORE_CONSTRAINT;
    if (status == TG_CHANNEL_CLOSED) return TG_ESTORE_CHANNEL_CLOSED;
    /* The money invariant: charged <= ceiling + credit limit. The CHECK on the row agrees. */
    if (tg_u256_add(&charged, &charged, &o->amount) < 0) return TG_ESTORE_LIMIT;
    u256_add_sat(&cap, &ceiling, &o->credit_limit);
    if (tg_u256_cmp(&charged, &cap) > 0) return TG_ESTORE_LIMIT;
  }
  if ((rc = charge_insert(c, op, &charged)) < 0) return rc;
  int64_t created = o->created_at ? o->created_at : op->now;
  if (o->has_channel) {
    if ((rc = stmt_get(c, S_CH_CHARGE_SET, &s)) < 0) return rc;
    BIND_FIXED(s, 1, &o->channel_id);
    BIND_FIXED(s, 2, &charged);
    BIND_FIXED(s, 3, &o->credit_limit);
    BIND_FIXED(s, 4, &cap);
    sqlite3_bind_int64(s, 5, op->now);
    sqlite3_bind_int64(s, 6, created);
    if ((rc = run(s)) < 0) return rc == TG_ESTORE_CONSTRAINT ? TG_ESTORE_LIMIT : rc;
    o->out_charged = charged;
  }
  return totals_add(c, &o->payer, o->scheme, &o->amount);
}

static int op_settle(tg__store_conn *c, tg_store_op *op) {
  sqlite3_stmt *s;
  int rc = stmt_get(c, S_SETTLE, &s);
  if (rc < 0) return rc;
  BIND_FIXED(s, 1, &op->u.settle.channel_id);
  sqlite3_bind_int64(s, 2, op->u.settle.through_charge);
  if ((rc = run(s)) < 0) return rc;
  op->u.settle.out_count = sqlite3_changes(c->db);
  /* The max-age clock restarts at the oldest charge still unsettled (0 when none). */
  if ((rc = stmt_get(c, S_SETTLE_AGE, &s)) < 0) return rc;
  BIND_FIXED(s, 1, &op->u.settle.channel_id);
  return run(s);
}

static void bind_opt_hash(sqlite3_stmt *s, int i, int has, const tg_hash *h) {
  if (has) BIND_FIXED(s, i, h);
  else sqlite3_bind_null(s, i);
}

static int op_exact(tg__store_conn *c, tg_store_op *op) {
  tg_store_op_exact *o = &op->u.exact;
  sqlite3_stmt *s;
  int rc;
  if (op->kind == TG_STORE_OP_EXACT_PUT) {
    if ((rc = stmt_get(c, S_EXACT_INSERT, &s)) < 0) return rc;
    BIND_FIXED(s, 1, &o->token);
    BIND_FIXED(s, 2, &o->nonce);
    BIND_FIXED(s, 3, &o->payer);
    BIND_FIXED(s, 4, &o->to);
    BIND_FIXED(s, 5, &o->amount);
    sqlite3_bind_int64(s, 6, (int64_t)o->valid_after);
    sqlite3_bind_int64(s, 7, (int64_t)o->valid_before);
    bind_opt_hash(s, 8, o->has_tx, &o->tx_hash);
    sqlite3_bind_int(s, 9, (int)o->status);
    bind_text(s, 10, o->request_id);
    sqlite3_bind_int64(s, 11, op->now);
    return run(s);
  }
  if ((rc = stmt_get(c, S_EXACT_UPDATE, &s)) < 0) return rc;
  BIND_FIXED(s, 1, &o->token);
  BIND_FIXED(s, 2, &o->nonce);
  sqlite3_bind_int(s, 3, (int)o->status);
  bind_opt_hash(s, 4, o->has_tx, &o->tx_hash);
  sqlite3_bind_int64(s, 5, op->now);
  BIND_FIXED(s, 6, &o->payer);
  sqlite3_bind_int(s, 7, o->receipt ? 1 : 0);
  if ((rc = run(s)) < 0) return rc;
  if (sqlite3_changes(c->db) == 0) return TG_ENOTFOUND;
  if (o->status == TG_EXACT_CONFIRMED) {
    if ((rc = stmt_get(c, S_EXACT_SETTLE_CHARGE, &s)) < 0) return rc;
    BIND_FIXED(s, 1, &o->token);
    BIND_FIXED(s, 2, &o->nonce);
    BIND_FIXED(s, 3, &o->payer);
    return run(s);
  }
  return 0;
}

static int op_payid(tg__store_conn *c, tg_store_op *op) {
  tg_store_op_payid *o = &op->u.payid;
  sqlite3_stmt *s;
  int rc = stmt_get(c, S_PAYID_INSERT, &s);
  if (rc < 0) return rc;
  bind_text(s, 1, o->id);
  BIND_FIXED(s, 2, &o->payer);
  BIND_FIXED(s, 3, &o->request_hash);
  sqlite3_bind_int(s, 4, o->status);
  bind_text(s, 5, o->response_header);
  bind_text(s, 6, o->request_id);
  sqlite3_bind_int64(s, 7, op->now);
  return run(s);
}

static int op_pass(tg__store_conn *c, tg_store_op *op) {
  tg_store_op_pass *o = &op->u.pass;
  sqlite3_stmt *s;
  uint64_t calls = 0, tokens = 0;
  int rc = stmt_get(c, S_PASS_READ, &s);
  if (rc < 0) return rc;
  BIND_FIXED(s, 1, &o->pass_id);
  BIND_FIXED(s, 2, &o->holder);
  sqlite3_bind_int64(s, 3, o->period_start);
  if ((rc = step_row(s)) < 0) return rc;
  if (rc == 1) {
    if ((rc = col_u64(s, 0, &calls)) < 0 || (rc = col_u64(s, 1, &tokens)) < 0) {
      stmt_done(s);
      return rc;
    }
    stmt_done(s);
  }
  if (calls + o->calls > (uint64_t)INT64_MAX || tokens + o->tokens > (uint64_t)INT64_MAX)
    return TG_EOVERFLOW;
  calls += o->calls;
  tokens += o->tokens;
  calls = calls > o->calls_back ? calls - o->calls_back : 0;
  if ((rc = stmt_get(c, S_PASS_SET, &s)) < 0) return rc;
  BIND_FIXED(s, 1, &o->pass_id);
  BIND_FIXED(s, 2, &o->holder);
  sqlite3_bind_int64(s, 3, o->period_start);
  sqlite3_bind_int64(s, 4, (int64_t)calls);
  sqlite3_bind_int64(s, 5, (int64_t)tokens);
  sqlite3_bind_int64(s, 6, op->now);
  if ((rc = run(s)) < 0) return rc;
  o->out_calls = calls;
  o->out_tokens = tokens;
  return 0;
}

static int op_run(tg__store_conn *c, tg_store_op *op) {
  sqlite3_stmt *s;
  int rc;
  if (op->kind == TG_STORE_OP_RUN_BEGIN) {
    if ((rc = stmt_get(c, S_RUN_INSERT, &s)) < 0) return rc;
    sqlite3_bind_int64(s, 1, op->now);
    if ((rc = run(s)) < 0) return rc;
    op->u.run.run_id = sqlite3_last_insert_rowid(c->db);
    return 0;
  }
  if ((rc = stmt_get(c, S_RUN_END, &s)) < 0) return rc;
  sqlite3_bind_int64(s, 1, op->u.run.run_id);
  sqlite3_bind_int(s, 2, (int)op->u.run.status);
  sqlite3_bind_int64(s, 3, op->now);
  if ((rc = run(s)) < 0) return rc;
  return sqlite3_changes(c->db) ? 0 : TG_ENOTFOUND;
}

static int op_item(tg__store_conn *c, tg_store_op *op) {
  tg_store_op_item *o = &op->u.item;
  sqlite3_stmt *s;
  int rc = stmt_get(c, S_ITEM_PUT, &s);
  if (rc < 0) return rc;
  sqlite3_bind_int64(s, 1, o->run_id);
  BIND_FIXED(s, 2, &o->channel_id);
  BIND_FIXED(s, 3, &o->amount);
  sqlite3_bind_int64(s, 4, o->through_charge);
  sqlite3_bind_int(s, 5, (int)o->step);
  bind_opt_hash(s, 6, o->has_tx, &o->tx_hash);
  bind_text(s, 7, o->error);
  sqlite3_bind_int64(s, 8, op->now);
  rc = run(s);
  /* A foreign key failure here means an unknown run or channel. */
  return rc == TG_ESTORE_CONSTRAINT ? TG_ENOTFOUND : rc;
}

static int op_lease(tg__store_conn *c, tg_store_op *op) {
  tg_store_op_lease *o = &op->u.lease;
  sqlite3_stmt *s;
  int rc;
  if (op->kind == TG_STORE_OP_LEASE_RELEASE) {
    if ((rc = stmt_get(c, S_LEASE_DELETE, &s)) < 0) return rc;
    bind_text(s, 1, o->name);
    bind_text(s, 2, o->holder);
    return run(s);
  }
  if ((rc = stmt_get(c, S_LEASE_READ, &s)) < 0) return rc;
  bind_text(s, 1, o->name);
  if ((rc = step_row(s)) < 0) return rc;
  if (rc == 1) {
    char holder[TG_STORE_NAME_MAX + 1];
    int64_t expires;
    if ((rc = col_text(s, 1, holder, sizeof(holder))) < 0 || (rc = col_i64(s, 2, &expires)) < 0) {
      stmt_done(s);
      return rc;
    }
    stmt_done(s);
    if (strcmp(holder, o->holder) != 0 && expires > op->now) return TG_ESTORE_LEASE;
  }
  if (o->ttl_ms > INT64_MAX - op->now) return TG_ERANGE;
  o->out_expires_at = op->now + o->ttl_ms;
  if ((rc = stmt_get(c, S_LEASE_SET, &s)) < 0) return rc;
  bind_text(s, 1, o->name);
  bind_text(s, 2, o->holder);
  sqlite3_bind_int64(s, 3, o->out_expires_at);
  return run(s);
}

static int op_nonce(tg__store_conn *c, tg_store_op *op) {
  tg_store_op_nonce *o = &op->u.nonce;
  sqlite3_stmt *s;
  int rc;
  if (op->kind == TG_STORE_OP_NONCE_PUT) {
    if ((rc = stmt_get(c, S_NONCE_PURGE, &s)) < 0) return rc;
    sqlite3_bind_int64(s, 1, op->now);
    if ((rc = run(s)) < 0) return rc;
    if ((rc = stmt_get(c, S_NONCE_INSERT, &s)) < 0) return rc;
    bind_text(s, 1, o->nonce);
    sqlite3_bind_int64(s, 2, o->expires_at);
    sqlite3_bind_int64(s, 3, o->used_at);
    return run(s);
  }
  if ((rc = stmt_get(c, S_NONCE_USE, &s)) < 0) return rc;
  bind_text(s, 1, o->nonce);
  sqlite3_bind_int64(s, 2, op->now);
  if ((rc = run(s)) < 0) return rc;
  return sqlite3_changes(c->db) ? 0 : TG_ESIWE_NONCE;
}

static int op_session(tg__store_conn *c, tg_store_op *op) {
  tg_store_op_session *o = &op->u.session;
  sqlite3_stmt *s;
  int rc;
  if ((rc = stmt_get(c, S_SESSION_PURGE, &s)) < 0) return rc;
  sqlite3_bind_int64(s, 1, op->now);
  if ((rc = run(s)) < 0) return rc;
  if ((rc = stmt_get(c, S_SESSION_INSERT, &s)) < 0) return rc;
  BIND_FIXED(s, 1, &o->token_hash);
  BIND_FIXED(s, 2, &o->address);
  sqlite3_bind_int64(s, 3, op->now);
  sqlite3_bind_int64(s, 4, o->expires_at);
  return run(s);
}

static int op_session_revoke(tg__store_conn *c, tg_store_op *op) {
  sqlite3_stmt *s;
  int rc = stmt_get(c, S_SESSION_DELETE, &s);
  if (rc < 0) return rc;
  BIND_FIXED(s, 1, &op->u.session.token_hash);
  return run(s);
}

static int conn_apply(tg__store_conn *c, tg_store_op *op) {
  switch (op->kind) {
  case TG_STORE_OP_CHANNEL_PUT:
  case TG_STORE_OP_CHANNEL_SYNC:
    return op_channel(c, op);
  case TG_STORE_OP_VOUCHER:
    return op_voucher(c, op);
  case TG_STORE_OP_CHARGE:
    return op_charge(c, op);
  case TG_STORE_OP_CHARGES_SETTLE:
    return op_settle(c, op);
  case TG_STORE_OP_EXACT_PUT:
  case TG_STORE_OP_EXACT_UPDATE:
    return op_exact(c, op);
  case TG_STORE_OP_PAYID_PUT:
    return op_payid(c, op);
  case TG_STORE_OP_PASS_USE:
    return op_pass(c, op);
  case TG_STORE_OP_RUN_BEGIN:
  case TG_STORE_OP_RUN_END:
    return op_run(c, op);
  case TG_STORE_OP_ITEM_PUT:
    return op_item(c, op);
  case TG_STORE_OP_LEASE_ACQUIRE:
  case TG_STORE_OP_LEASE_RELEASE:
    return op_lease(c, op);
  case TG_STORE_OP_NONCE_PUT:
  case TG_STORE_OP_NONCE_USE:
    return op_nonce(c, op);
  case TG_STORE_OP_SESSION_PUT:
    return op_session(c, op);
  case TG_STORE_OP_SESSION_REVOKE:
    return op_session_revoke(c, op);
  case TG_STORE_OP_RESERVE:
  case TG_STORE_OP_UNRESERVE:
    /* One SQLite file has one gateway: its ledger's in-memory reservations are the truth. */
    return TG_EUNSUPPORTED;
  }
  return TG_EINVAL;
}

/* ------------------------------------------------------------------------- */
/* Reads. Rows come from disk: every column is checked (type, size) before use. */

/* The voucher signature: NULL (none yet) or 1..TG_STORE_SIG_MAX bytes. */
static int col_sig(sqlite3_stmt *s, int i, tg_store_channel *ch) {
  ch->ceiling_sig_len = 0;
  if (sqlite3_column_type(s, i) == SQLITE_NULL) return 0;
  if (sqlite3_column_type(s, i) != SQLITE_BLOB) return TG_ESTORE_CORRUPT;
  int n = sqlite3_column_bytes(s, i);
  if (n < 1 || n > TG_STORE_SIG_MAX) return TG_ESTORE_CORRUPT;
  memcpy(ch->ceiling_sig, sqlite3_column_blob(s, i), (size_t)n);
  ch->ceiling_sig_len = (size_t)n;
  return 0;
}

static int decode_channel(sqlite3_stmt *s, tg_store_channel *ch) {
  memset(ch, 0, sizeof(*ch));
  int64_t status;
  int rc;
  if ((rc = COL_FIXED(s, 0, &ch->id)) < 0 || (rc = col_u64(s, 1, &ch->cfg.chain_id)) < 0 ||
      (rc = COL_FIXED(s, 2, &ch->cfg.contract)) < 0 || (rc = COL_FIXED(s, 3, &ch->cfg.payer)) < 0 ||
      (rc = COL_FIXED(s, 4, &ch->cfg.payer_authorizer)) < 0 ||
      (rc = COL_FIXED(s, 5, &ch->cfg.receiver)) < 0 ||
      (rc = COL_FIXED(s, 6, &ch->cfg.receiver_authorizer)) < 0 ||
      (rc = COL_FIXED(s, 7, &ch->cfg.token)) < 0 ||
      (rc = col_u64(s, 8, &ch->cfg.withdraw_delay)) < 0 ||
      (rc = COL_FIXED(s, 9, &ch->cfg.salt)) < 0 ||
      (rc = COL_FIXED(s, 10, &ch->chain.balance)) < 0 ||
      (rc = COL_FIXED(s, 11, &ch->chain.total_claimed)) < 0 ||
      (rc = col_u64(s, 12, &ch->chain.withdraw_requested_at)) < 0 ||
      (rc = col_u64(s, 13, &ch->chain.refund_nonce)) < 0 ||
      (rc = col_u64(s, 14, &ch->chain.synced_block)) < 0 || (rc = col_i64(s, 15, &status)) < 0 ||
      (rc = COL_FIXED(s, 16, &ch->charged)) < 0 || (rc = COL_FIXED(s, 17, &ch->ceiling)) < 0 ||
      (rc = col_sig(s, 18, ch)) < 0 ||
      (rc = COL_FIXED(s, 19, &ch->credit_limit)) < 0 ||
      (rc = col_u64(s, 20, &ch->charge_count)) < 0 ||
      (rc = col_i64(s, 21, &ch->first_unclaimed_at)) < 0 ||
      (rc = col_i64(s, 22, &ch->created_at)) < 0 || (rc = col_i64(s, 23, &ch->updated_at)) < 0)
    return rc;
  if (status < 0 || status > TG_CHANNEL_CLOSED) return TG_ESTORE_CORRUPT;
  ch->chain.status = (tg_store_channel_status)status;
  return 0;
}

static int decode_charge(sqlite3_stmt *s, tg_store_charge *ch) {
  memset(ch, 0, sizeof(*ch));
  int64_t scheme, settled;
  int rc, has_cum;
  if ((rc = col_i64(s, 0, &ch->id)) < 0 ||
      (rc = col_text(s, 1, ch->request_id, sizeof(ch->request_id))) < 0 ||
      (rc = COL_FIXED(s, 2, &ch->payer)) < 0 || (rc = col_i64(s, 3, &scheme)) < 0 ||
      (rc = col_text(s, 4, ch->route, sizeof(ch->route))) < 0 ||
      (rc = col_text(s, 5, ch->model, sizeof(ch->model))) < 0 ||
      (rc = col_u64(s, 6, &ch->input_tokens)) < 0 || (rc = col_u64(s, 7, &ch->output_tokens)) < 0 ||
      (rc = COL_FIXED(s, 8, &ch->amount)) < 0 ||
      (rc = col_fixed_opt(s, 9, ch->channel_id.b, 32, &ch->has_channel)) < 0 ||
      (rc = col_fixed_opt(s, 10, ch->cumulative_after.b, 32, &has_cum)) < 0 ||
      (rc = col_i64(s, 11, &ch->created_at)) < 0 || (rc = col_i64(s, 12, &settled)) < 0)
    return rc;
  if (scheme < 0 || scheme > TG_SCHEME_PASS || has_cum != ch->has_channel) return TG_ESTORE_CORRUPT;
  ch->scheme = (tg_store_scheme)scheme;
  ch->settled = settled != 0;
  return 0;
}

static int conn_channel_get(tg__store_conn *c, const tg_hash *id, tg_store_channel *out) {
  sqlite3_stmt *s;
  int rc = stmt_get(c, S_CH_GET, &s);
  if (rc < 0) return rc;
  BIND_FIXED(s, 1, id);
  if ((rc = step_row(s)) <= 0) return rc < 0 ? rc : TG_ENOTFOUND;
  rc = decode_channel(s, out);
  stmt_done(s);
  if (rc < 0) memset(out, 0, sizeof(*out));
  return rc;
}

static int conn_channels_iter(tg__store_conn *c, int mode, const tg_address *payer,
                              tg_store_channel_fn fn, void *arg) {
  sqlite3_stmt *s;
  int id = mode == 1 ? S_CH_UNSETTLED : payer ? S_CH_BY_PAYER : S_CH_ALL;
  int rc = stmt_get(c, id, &s);
  if (rc < 0) return rc;
  if (id == S_CH_BY_PAYER) BIND_FIXED(s, 1, payer);
  tg_store_channel ch;
  while ((rc = step_row(s)) == 1) {
    if ((rc = decode_channel(s, &ch)) < 0 || (rc = fn(arg, &ch)) != 0) {
      stmt_done(s);
      return rc;
    }
  }
  return rc;
}

static int conn_charges_iter(tg__store_conn *c, const tg_hash *channel_id,
                             const tg_address *payer, int64_t after_id, size_t limit,
                             tg_store_charge_fn fn, void *arg) {
  sqlite3_stmt *s;
  int rc = stmt_get(c, channel_id ? S_CHARGES_BY_CHANNEL : S_CHARGES_BY_PAYER, &s);
  if (rc < 0) return rc;
  if (channel_id) BIND_FIXED(s, 1, channel_id);
  else BIND_FIXED(s, 1, payer);
  sqlite3_bind_int64(s, 2, after_id);
  sqlite3_bind_int64(s, 3, limit == 0 || limit > (size_t)INT64_MAX ? -1 : (int64_t)limit);
  tg_store_charge ch;
  while ((rc = step_row(s)) == 1) {
    if ((rc = decode_charge(s, &ch)) < 0 || (rc = fn(arg, &ch)) != 0) {
      stmt_done(s);
      return rc;
    }
  }
  return rc;
}

static int conn_charge_get(tg__store_conn *c, const char *request_id, tg_store_charge *out) {
  sqlite3_stmt *s;
  int rc = stmt_get(c, S_CHARGE_GET, &s);
  if (rc < 0) return rc;
  bind_text(s, 1, request_id);
  if ((rc = step_row(s)) <= 0) return rc < 0 ? rc : TG_ENOTFOUND;
  rc = decode_charge(s, out);
  stmt_done(s);
  if (rc < 0) memset(out, 0, sizeof(*out));
  return rc;
}

static int conn_totals_get(tg__store_conn *c, const tg_address *payer, tg_store_scheme scheme,
                           tg_store_totals *out) {
  sqlite3_stmt *s;
  out->payer = *payer;
  out->scheme = scheme;
  int rc = stmt_get(c, S_TOTALS_READ, &s);
  if (rc < 0) return rc;
  BIND_FIXED(s, 1, payer);
  sqlite3_bind_int(s, 2, (int)scheme);
  if ((rc = step_row(s)) <= 0) return rc;
  if ((rc = COL_FIXED(s, 0, &out->charged)) < 0 || (rc = col_u64(s, 1, &out->count)) < 0)
    memset(out, 0, sizeof(*out));
  stmt_done(s);
  return rc;
}

static int decode_exact(sqlite3_stmt *s, tg_store_exact *out) {
  int64_t status;
  int rc;
  memset(out, 0, sizeof(*out));
  if ((rc = COL_FIXED(s, 0, &out->token)) < 0 || (rc = COL_FIXED(s, 1, &out->nonce)) < 0 ||
      (rc = COL_FIXED(s, 2, &out->payer)) < 0 || (rc = COL_FIXED(s, 3, &out->to)) < 0 ||
      (rc = COL_FIXED(s, 4, &out->amount)) < 0 || (rc = col_u64(s, 5, &out->valid_after)) < 0 ||
      (rc = col_u64(s, 6, &out->valid_before)) < 0 ||
      (rc = col_fixed_opt(s, 7, out->tx_hash.b, 32, &out->has_tx)) < 0 ||
      (rc = col_i64(s, 8, &status)) < 0 ||
      (rc = col_text(s, 9, out->request_id, sizeof(out->request_id))) < 0 ||
      (rc = col_i64(s, 10, &out->created_at)) < 0 || (rc = col_i64(s, 11, &out->updated_at)) < 0)
    goto done;
  if (status < 0 || status > TG_EXACT_FAILED) rc = TG_ESTORE_CORRUPT;
  out->status = (tg_store_exact_status)status;
done:
  if (rc < 0) memset(out, 0, sizeof(*out));
  return rc;
}

static int conn_exact_iter(tg__store_conn *c, tg_store_exact_fn fn, void *arg) {
  sqlite3_stmt *s;
  int rc = stmt_get(c, S_EXACT_ALL, &s);
  if (rc < 0) return rc;
  tg_store_exact e;
  while ((rc = step_row(s)) == 1) {
    if ((rc = decode_exact(s, &e)) < 0 || (rc = fn(arg, &e)) != 0) {
      stmt_done(s);
      return rc;
    }
  }
  return rc;
}

static int conn_exact_get(tg__store_conn *c, const tg_address *token, const tg_address *payer,
                          const tg_hash *nonce, tg_store_exact *out) {
  sqlite3_stmt *s;
  int64_t status;
  int rc = stmt_get(c, S_EXACT_GET, &s);
  if (rc < 0) return rc;
  BIND_FIXED(s, 1, token);
  BIND_FIXED(s, 2, nonce);
  BIND_FIXED(s, 3, payer);
  if ((rc = step_row(s)) <= 0) return rc < 0 ? rc : TG_ENOTFOUND;
  if ((rc = COL_FIXED(s, 0, &out->token)) < 0 || (rc = COL_FIXED(s, 1, &out->nonce)) < 0 ||
      (rc = COL_FIXED(s, 2, &out->payer)) < 0 || (rc = COL_FIXED(s, 3, &out->to)) < 0 ||
      (rc = COL_FIXED(s, 4, &out->amount)) < 0 || (rc = col_u64(s, 5, &out->valid_after)) < 0 ||
      (rc = col_u64(s, 6, &out->valid_before)) < 0 ||
      (rc = col_fixed_opt(s, 7, out->tx_hash.b, 32, &out->has_tx)) < 0 ||
      (rc = col_i64(s, 8, &status)) < 0 ||
      (rc = col_text(s, 9, out->request_id, sizeof(out->request_id))) < 0 ||
      (rc = col_i64(s, 10, &out->created_at)) < 0 || (rc = col_i64(s, 11, &out->updated_at)) < 0)
    goto done;
  if (status < 0 || status > TG_EXACT_FAILED) rc = TG_ESTORE_CORRUPT;
  out->status = (tg_store_exact_status)status;
done:
  stmt_done(s);
  if (rc < 0) memset(out, 0, sizeof(*out));
  return rc;
}

static int conn_payid_get(tg__store_conn *c, const char *id, tg_store_payid *out) {
  sqlite3_stmt *s;
  int64_t status;
  int rc = stmt_get(c, S_PAYID_GET, &s);
  if (rc < 0) return rc;
  bind_text(s, 1, id);
  if ((rc = step_row(s)) <= 0) return rc < 0 ? rc : TG_ENOTFOUND;
  if ((rc = col_text(s, 0, out->id, sizeof(out->id))) < 0 ||
      (rc = COL_FIXED(s, 1, &out->payer)) < 0 || (rc = COL_FIXED(s, 2, &out->request_hash)) < 0 ||
      (rc = col_i64(s, 3, &status)) < 0 ||
      (rc = col_text(s, 4, out->response_header, sizeof(out->response_header))) < 0 ||
      (rc = col_text(s, 5, out->request_id, sizeof(out->request_id))) < 0 ||
      (rc = col_i64(s, 6, &out->created_at)) < 0)
    goto done;
  if (status < 0 || status > 999) rc = TG_ESTORE_CORRUPT;
  out->status = (int)status;
done:
  stmt_done(s);
  if (rc < 0) memset(out, 0, sizeof(*out));
  return rc;
}

static int conn_pass_get(tg__store_conn *c, const tg_u256 *pass_id, const tg_address *holder,
                         int64_t period_start, tg_store_pass_usage *out) {
  sqlite3_stmt *s;
  int rc = stmt_get(c, S_PASS_READ, &s);
  if (rc < 0) return rc;
  out->pass_id = *pass_id;
  out->holder = *holder;
  out->period_start = period_start;
  BIND_FIXED(s, 1, pass_id);
  BIND_FIXED(s, 2, holder);
  sqlite3_bind_int64(s, 3, period_start);
  if ((rc = step_row(s)) <= 0) return rc < 0 ? rc : TG_ENOTFOUND;
  if ((rc = col_u64(s, 0, &out->calls)) < 0 || (rc = col_u64(s, 1, &out->tokens)) < 0)
    memset(out, 0, sizeof(*out));
  stmt_done(s);
  return rc;
}

static int conn_session_get(tg__store_conn *c, const tg_hash *token_hash, tg_store_session *out) {
  sqlite3_stmt *s;
  int rc = stmt_get(c, S_SESSION_GET, &s);
  if (rc < 0) return rc;
  out->token_hash = *token_hash;
  BIND_FIXED(s, 1, token_hash);
  if ((rc = step_row(s)) <= 0) return rc < 0 ? rc : TG_ENOTFOUND;
  if ((rc = col_fixed(s, 0, out->address.b, 20)) < 0 || (rc = col_i64(s, 1, &out->created_at)) < 0 ||
      (rc = col_i64(s, 2, &out->expires_at)) < 0)
    memset(out, 0, sizeof(*out));
  stmt_done(s);
  return rc;
}

static int conn_run_open_get(tg__store_conn *c, tg_store_settle_run *out) {
  sqlite3_stmt *s;
  int64_t status;
  int rc = stmt_get(c, S_RUN_OPEN, &s);
  if (rc < 0) return rc;
  if ((rc = step_row(s)) <= 0) return rc < 0 ? rc : TG_ENOTFOUND;
  if ((rc = col_i64(s, 0, &out->id)) >= 0 && (rc = col_i64(s, 1, &out->started_at)) >= 0 &&
      (rc = col_i64(s, 2, &out->finished_at)) >= 0 && (rc = col_i64(s, 3, &status)) >= 0)
    out->status = (tg_store_run_status)status;
  stmt_done(s);
  if (rc < 0) memset(out, 0, sizeof(*out));
  return rc;
}

static int conn_run_items(tg__store_conn *c, int64_t run_id, tg_store_item_fn fn, void *arg) {
  sqlite3_stmt *s;
  int rc = stmt_get(c, S_RUN_ITEMS, &s);
  if (rc < 0) return rc;
  sqlite3_bind_int64(s, 1, run_id);
  tg_store_settle_item it;
  while ((rc = step_row(s)) == 1) {
    int64_t step;
    memset(&it, 0, sizeof(it));
    if ((rc = col_i64(s, 0, &it.run_id)) < 0 || (rc = COL_FIXED(s, 1, &it.channel_id)) < 0 ||
        (rc = COL_FIXED(s, 2, &it.amount)) < 0 || (rc = col_i64(s, 3, &it.through_charge)) < 0 ||
        (rc = col_i64(s, 4, &step)) < 0 ||
        (rc = col_fixed_opt(s, 5, it.tx_hash.b, 32, &it.has_tx)) < 0 ||
        (rc = col_text(s, 6, it.error, sizeof(it.error))) < 0 ||
        (rc = col_i64(s, 7, &it.updated_at)) < 0) {
      stmt_done(s);
      return rc;
    }
    if (step < 0 || step > TG_SETTLE_DROPPED) {
      stmt_done(s);
      return TG_ESTORE_CORRUPT;
    }
    it.step = (tg_store_settle_step)step;
    if ((rc = fn(arg, &it)) != 0) {
      stmt_done(s);
      return rc;
    }
  }
  return rc;
}

static int conn_lease_get(tg__store_conn *c, const char *name, tg_store_lease *out) {
  sqlite3_stmt *s;
  int rc = stmt_get(c, S_LEASE_READ, &s);
  if (rc < 0) return rc;
  bind_text(s, 1, name);
  if ((rc = step_row(s)) <= 0) return rc < 0 ? rc : TG_ENOTFOUND;
  if ((rc = col_text(s, 0, out->name, sizeof(out->name))) < 0 ||
      (rc = col_text(s, 1, out->holder, sizeof(out->holder))) < 0 ||
      (rc = col_i64(s, 2, &out->expires_at)) < 0)
    memset(out, 0, sizeof(*out));
  stmt_done(s);
  return rc;
}

/* ------------------------------------------------------------------------- */
/* Folded channel charges (store.c, fold_charges). */

static int fold_chan_state(tg__store_conn *c, const tg_hash *id, tg__store_chan_state *out) {
  sqlite3_stmt *s;
  int64_t status;
  int rc = stmt_get(c, S_CH_FOLD_READ, &s);
  if (rc < 0) return rc;
  BIND_FIXED(s, 1, id);
  if ((rc = step_row(s)) <= 0) return rc < 0 ? rc : TG_ENOTFOUND;
  if ((rc = COL_FIXED(s, 0, &out->payer)) < 0 || (rc = col_i64(s, 1, &status)) < 0 ||
      (rc = COL_FIXED(s, 2, &out->charged)) < 0 || (rc = COL_FIXED(s, 3, &out->ceiling)) < 0 ||
      (rc = COL_FIXED(s, 4, &out->credit_limit)) < 0) {
    stmt_done(s);
    return rc;
  }
  stmt_done(s);
  if (status < 0 || status > TG_CHANNEL_CLOSED) return TG_ESTORE_CORRUPT;
  out->status = (int)status;
  return 0;
}

static int fold_charge_row(tg__store_conn *c, tg_store_op *op, const tg_u256 *cumulative) {
  return charge_insert(c, op, cumulative);
}

static int fold_chan_ceiling(tg__store_conn *c, const tg_hash *id, const tg_u256 *ceiling,
                             const tg_bytes *sig, const tg_u256 *cap, int64_t now) {
  sqlite3_stmt *s;
  int rc = stmt_get(c, S_CH_VOUCHER_SET, &s);
  if (rc < 0) return rc;
  BIND_FIXED(s, 1, id);
  BIND_FIXED(s, 2, ceiling);
  sqlite3_bind_blob(s, 3, sig->ptr, (int)sig->len, SQLITE_STATIC);
  BIND_FIXED(s, 4, cap);
  sqlite3_bind_int64(s, 5, now);
  return run(s);
}

static int fold_chan_charged(tg__store_conn *c, const tg_hash *id, const tg_u256 *charged,
                             const tg_u256 *credit_limit, const tg_u256 *cap, uint64_t count,
                             int64_t now, int64_t first_created) {
  sqlite3_stmt *s;
  int rc = stmt_get(c, S_CH_FOLD_SET, &s);
  if (rc < 0) return rc;
  BIND_FIXED(s, 1, id);
  BIND_FIXED(s, 2, charged);
  BIND_FIXED(s, 3, credit_limit);
  BIND_FIXED(s, 4, cap);
  sqlite3_bind_int64(s, 5, now);
  sqlite3_bind_int64(s, 6, first_created);
  sqlite3_bind_int64(s, 7, (int64_t)count);
  if ((rc = run(s)) < 0) return rc == TG_ESTORE_CONSTRAINT ? TG_ESTORE_LIMIT : rc;
  return 0;
}

static int fold_totals_add(tg__store_conn *c, const tg_address *payer, tg_store_scheme scheme,
                           const tg_u256 *sum, uint64_t count) {
  return totals_add_n(c, payer, scheme, sum, count);
}

static const tg__store_fold_ops sqlite_fold = {
    .chan_state = fold_chan_state,
    .charge_row = fold_charge_row,
    .chan_ceiling = fold_chan_ceiling,
    .chan_charged = fold_chan_charged,
    .totals_add = fold_totals_add,
};

const tg__store_backend tg__store_sqlite = {
    .scheme = "sqlite",
    .open = conn_open,
    .close = conn_close,
    .migrate = conn_migrate,
    .version = conn_version,
    .begin = tx_begin,
    .commit = tx_commit,
    .rollback = tx_rollback,
    .sp_begin = sp_begin,
    .sp_release = sp_release,
    .sp_rollback = sp_rollback,
    .txn_lost = txn_lost,
    .apply = conn_apply,
    .optimistic_batch = 1,
    .fold = &sqlite_fold,
    .channel_get = conn_channel_get,
    .channels_iter = conn_channels_iter,
    .charges_iter = conn_charges_iter,
    .charge_get = conn_charge_get,
    .totals_get = conn_totals_get,
    .exact_get = conn_exact_get,
    .exact_iter = conn_exact_iter,
    .payid_get = conn_payid_get,
    .pass_get = conn_pass_get,
    .session_get = conn_session_get,
    .run_open_get = conn_run_open_get,
    .run_items = conn_run_items,
    .lease_get = conn_lease_get,
};
