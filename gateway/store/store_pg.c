/* The PostgreSQL store backend: libpq, prepared statements, row locks taken in one order per batch, synchronous_commit on. */
#include "store/store_int.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "store/migrations_pg.h"
#include "tollgate/u256.h"

/*
 * Several gateways may share one database, so unlike SQLite (one writer per
 * file, BEGIN IMMEDIATE) every read-modify-write here must be safe against
 * writers in other processes. The batch transaction runs at READ COMMITTED
 * and, before any op, locks every channel row and payer-totals row the batch
 * will modify (SELECT ... ORDER BY key FOR NO KEY UPDATE): one sorted order
 * for every writer, so two batches on overlapping channels queue behind each
 * other instead of deadlocking, and each op then reads the latest committed
 * values of rows it holds. Counters that need no C arithmetic (pass usage,
 * leases) are single atomic upserts. A transient failure (deadlock victim,
 * serialization failure) marks the connection so that store.c reruns the
 * batch from BEGIN. See docs/STORE.md.
 */

/* Type OIDs of the columns read back (pg_type.h is a server header). */
#define OID_BOOL 16
#define OID_BYTEA 17
#define OID_INT8 20
#define OID_TEXT 25

/* Key of the advisory lock that serializes migrations across instances ("tgstore"). */
#define MIGRATE_LOCK_KEY "7630745345"

enum {
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
  S_PASS_ADD,
  S_RUN_INSERT,
  S_RUN_END,
  S_ITEM_PUT,
  S_LEASE_ACQUIRE,
  S_LEASE_DELETE,
  S_LOCK_CHANNELS,
  S_TOTALS_ENSURE,
  S_LOCK_TOTALS,
  S_NONCE_INSERT,
  S_NONCE_PURGE,
  S_NONCE_USE,
  S_SESSION_INSERT,
  S_SESSION_PURGE,
  S_SESSION_DELETE,
  S_RES_READ,
  S_RES_RECLAIM,
  S_RES_INSERT,
  S_RES_DELETE,
  S_RES_SET,
  S_FAST_CHANNELS,
  S_FAST_TOTALS,
  S_FAST_HOLDS,
  S_FAST_HOLD_INSERT,
  S_FAST_CH_SET,
  S_FAST_CH_GUARD,
  S_FAST_TOT_GUARD,
  S_FAST_HOLD_END,
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
  S_PASS_READ,
  S_RUN_OPEN,
  S_RUN_ITEMS,
  S_LEASE_READ,
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
/* A comma-separated list of hex keys ($1) as a set of bytea. */
#define HEX_SET "(SELECT decode(x, 'hex') FROM unnest(string_to_array($1::text, ',')) AS x)"

static const char *const sql_text[S_COUNT] = {
    [S_CH_CFG] = "SELECT chain_id, contract, payer, payer_authorizer, receiver, "
                 "receiver_authorizer, token, withdraw_delay, salt FROM channels WHERE id = $1",
    [S_CH_INSERT] =
        "INSERT INTO channels (id, chain_id, contract, payer, payer_authorizer, receiver, "
        "receiver_authorizer, token, withdraw_delay, salt, balance, total_claimed, "
        "withdraw_requested_at, refund_nonce, synced_block, status, charged, ceiling, "
        "ceiling_sig, credit_limit, charge_cap, charge_count, first_unclaimed_at, created_at, "
        "updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, "
        "$16, $17, $17, NULL, $17, $17, 0, 0, $18, $18) ON CONFLICT (id) DO NOTHING "
        "RETURNING 1::bigint",
    [S_CH_SYNC] = "UPDATE channels SET balance = $2, total_claimed = $3, "
                  "withdraw_requested_at = $4, refund_nonce = $5, synced_block = $6, "
                  "status = CASE WHEN status = 2 THEN 2 ELSE $7::bigint END, "
                  "first_unclaimed_at = CASE WHEN $3 >= charged THEN 0 "
                  "ELSE first_unclaimed_at END, updated_at = $8 "
                  "WHERE id = $1 AND synced_block <= $6",
    [S_CH_EXISTS] = "SELECT 1::bigint FROM channels WHERE id = $1",
    [S_CH_VOUCHER_READ] = "SELECT ceiling, credit_limit, status FROM channels WHERE id = $1 "
                          "FOR NO KEY UPDATE",
    [S_CH_VOUCHER_SET] = "UPDATE channels SET ceiling = $2, ceiling_sig = $3, charge_cap = $4, "
                         "updated_at = $5 WHERE id = $1",
    [S_CH_CHARGE_READ] = "SELECT payer, status, charged, ceiling, reserved, balance, "
                         "withdraw_requested_at FROM channels "
                         "WHERE id = $1 FOR NO KEY UPDATE",
    [S_CH_CHARGE_SET] = "UPDATE channels SET charged = $2, credit_limit = $3, charge_cap = $4, "
                        "reserved = $7, "
                        "charge_count = charge_count + 1, first_unclaimed_at = CASE WHEN "
                        "first_unclaimed_at = 0 AND $2 > total_claimed THEN $6 ELSE "
                        "first_unclaimed_at END, updated_at = $5 WHERE id = $1",
    [S_CHARGE_INSERT] = "INSERT INTO charges (request_id, payer, scheme, route, model, "
                        "input_tokens, output_tokens, amount, channel_id, cumulative_after, "
                        "created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) "
                        "RETURNING id",
    [S_TOTALS_READ] = "SELECT charged, count FROM payer_totals WHERE payer = $1 AND scheme = $2",
    [S_TOTALS_SET] = "INSERT INTO payer_totals (payer, scheme, charged, count) "
                     "VALUES ($1, $2, $3, $4) ON CONFLICT (payer, scheme) DO UPDATE SET "
                     "charged = excluded.charged, count = excluded.count",
    [S_SETTLE] = "UPDATE charges SET settled = 1 WHERE channel_id = $1 AND id <= $2 "
                 "AND settled = 0",
    [S_SETTLE_AGE] = "UPDATE channels SET first_unclaimed_at = coalesce((SELECT min(created_at) "
                     "FROM charges WHERE channel_id = $1 AND settled = 0), 0) WHERE id = $1",
    [S_EXACT_INSERT] = "INSERT INTO exact_payments (token, nonce, payer, to_addr, amount, "
                       "valid_after, valid_before, tx_hash, status, request_id, created_at, "
                       "updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)",
    /* a receipt's outcome (confirmed, failed) is not undone by a late `submitted` or `mined`
     * of the same transaction (docs/STORE.md) */
    [S_EXACT_UPDATE] = "UPDATE exact_payments SET status = CASE WHEN $3 IN (1, 2) AND status IN "
                       "(3, 4) AND tx_hash = $4 THEN status ELSE $3 END, "
                       "tx_hash = coalesce($4, tx_hash), "
                       "updated_at = $5 WHERE token = $1 AND nonce = $2 AND payer = $6 "
                       "AND ($7 = 0 OR status IN (1, 2))",
    [S_EXACT_SETTLE_CHARGE] = "UPDATE charges SET settled = 1 WHERE request_id = (SELECT "
                              "request_id FROM exact_payments WHERE token = $1 AND nonce = $2 "
                              "AND payer = $3 AND request_id <> '')",
    [S_PAYID_INSERT] = "INSERT INTO payment_ids (id, payer, request_hash, status, "
                       "response_header, request_id, created_at) VALUES ($1, $2, $3, $4, $5, "
                       "$6, $7)",
    /* One atomic statement: concurrent instances add, never overwrite (bigint overflow is an
     * error, 22003). */
    [S_PASS_ADD] = "INSERT INTO pass_usage AS p (pass_id, holder, period_start, calls, tokens, "
                   "updated_at) VALUES ($1, $2, $3, GREATEST($4::bigint, 0), $5, $6) ON CONFLICT "
                   "(pass_id, holder, period_start) DO UPDATE SET "
                   "calls = GREATEST(p.calls + $4::bigint, 0), "
                   "tokens = p.tokens + excluded.tokens, updated_at = excluded.updated_at "
                   "RETURNING calls, tokens",
    [S_NONCE_INSERT] = "INSERT INTO auth_nonces (nonce, expires_at, used_at) VALUES ($1, $2, $3)",
    [S_NONCE_PURGE] = "DELETE FROM auth_nonces WHERE expires_at < $1::bigint - 86400000",
    /* one statement: of two instances consuming the same nonce, exactly one updates the row */
    [S_NONCE_USE] = "UPDATE auth_nonces SET used_at = $2 WHERE nonce = $1 AND used_at = 0 "
                    "AND expires_at > $2",
    [S_SESSION_INSERT] = "INSERT INTO sessions (token_hash, address, created_at, expires_at) "
                         "VALUES ($1, $2, $3, $4)",
    [S_SESSION_DELETE] = "DELETE FROM sessions WHERE token_hash = $1",
    [S_SESSION_PURGE] = "DELETE FROM sessions WHERE expires_at < $1::bigint - 86400000",
    [S_SESSION_GET] = "SELECT address, created_at, expires_at FROM sessions WHERE token_hash = $1",
    [S_RUN_INSERT] = "INSERT INTO settle_runs (started_at, finished_at, status) "
                     "VALUES ($1, 0, 0) RETURNING id",
    [S_RUN_END] = "UPDATE settle_runs SET status = $2, finished_at = $3 WHERE id = $1",
    [S_ITEM_PUT] = "INSERT INTO settle_items AS i (run_id, channel_id, amount, through_charge, "
                   "step, tx_hash, error, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
                   "ON CONFLICT (run_id, channel_id) DO UPDATE SET amount = excluded.amount, "
                   "through_charge = excluded.through_charge, step = excluded.step, "
                   "tx_hash = coalesce(excluded.tx_hash, i.tx_hash), error = excluded.error, "
                   "updated_at = excluded.updated_at",
    /* Take-over is atomic: the row is locked by the upsert and the WHERE sees its latest
     * version, so of two instances racing for an expired lease exactly one gets a row back. */
    [S_LEASE_ACQUIRE] = "INSERT INTO leases AS l (name, holder, expires_at) VALUES ($1, $2, $3) "
                        "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
                        "expires_at = excluded.expires_at WHERE l.holder = excluded.holder "
                        "OR l.expires_at <= $4 RETURNING expires_at",
    [S_LEASE_DELETE] = "DELETE FROM leases WHERE name = $1 AND holder = $2",
    /* LockRows runs above the sort: rows are locked in id order. */
    [S_LOCK_CHANNELS] = "SELECT id FROM channels WHERE id IN " HEX_SET
                        " ORDER BY id FOR NO KEY UPDATE",
    [S_TOTALS_ENSURE] = "INSERT INTO payer_totals (payer, scheme, charged, count) "
                        "SELECT decode(split_part(x, ':', 1), 'hex'), split_part(x, ':', 2)::bigint, "
                        "decode(repeat('00', 32), 'hex'), 0 FROM unnest(string_to_array($1::text, "
                        "',')) AS x ORDER BY 1, 2 ON CONFLICT DO NOTHING",
    [S_LOCK_TOTALS] = "SELECT t.payer FROM payer_totals t, (SELECT decode(split_part(x, ':', 1), "
                      "'hex') AS p, split_part(x, ':', 2)::bigint AS s FROM unnest("
                      "string_to_array($1::text, ',')) AS x) k WHERE t.payer = k.p AND "
                      "t.scheme = k.s ORDER BY t.payer, t.scheme FOR NO KEY UPDATE OF t",
    [S_RES_READ] = "SELECT status, charged, ceiling, balance, total_claimed, "
                   "withdraw_requested_at, reserved FROM channels WHERE id = $1 "
                   "FOR NO KEY UPDATE",
    /* Lapsed holds: past their expiry, or of an instance whose liveness lease is gone. */
    [S_RES_RECLAIM] = "DELETE FROM reservations r WHERE r.channel_id = $1 AND (r.expires_at <= $2 "
                      "OR NOT EXISTS (SELECT 1 FROM leases l WHERE l.name = 'instance:' || "
                      "r.instance AND l.expires_at > $2)) RETURNING r.amount",
    /* One statement (one round trip): the hold's row and the channel's new total. */
    [S_RES_INSERT] = "WITH h AS (INSERT INTO reservations (request_id, channel_id, instance, "
                     "amount, expires_at, created_at) VALUES ($1, $2, $3, $4, $5, $6)) "
                     "UPDATE channels SET reserved = $7 WHERE id = $2",
    [S_RES_DELETE] = "DELETE FROM reservations WHERE request_id = $1 AND channel_id = $2 "
                     "RETURNING amount",
    [S_RES_SET] = "UPDATE channels SET reserved = $2 WHERE id = $1",
    /* The pipelined batch (conn_batch): the batch's channels locked in id order and read in
     * the same statement; `reclaimable` only for the channels of a RESERVE ($2), whether a
     * hold there has lapsed (the rule of S_RES_RECLAIM, at time $3). */
    [S_FAST_CHANNELS] =
        "SELECT c.id, c.payer, c.status, c.charged, c.ceiling, c.credit_limit, c.charge_cap, "
        "c.balance, c.total_claimed, c.withdraw_requested_at, c.reserved, "
        "c.first_unclaimed_at, c.updated_at, CASE WHEN c.id IN (SELECT decode(x, 'hex') FROM "
        "unnest(string_to_array($2::text, ',')) AS x) THEN EXISTS (SELECT 1 FROM reservations r "
        "WHERE r.channel_id = c.id AND (r.expires_at <= $3::bigint OR NOT EXISTS (SELECT 1 "
        "FROM leases l WHERE l.name = 'instance:' || r.instance AND l.expires_at > "
        "$3::bigint))) ELSE false END FROM channels c WHERE c.id IN " HEX_SET
        " ORDER BY c.id FOR NO KEY UPDATE OF c",
    [S_FAST_TOTALS] = "SELECT t.payer, t.scheme, t.charged, t.count FROM payer_totals t, "
                      "(SELECT decode(split_part(x, ':', 1), 'hex') AS p, split_part(x, ':', "
                      "2)::bigint AS s FROM unnest(string_to_array($1::text, ',')) AS x) k "
                      "WHERE t.payer = k.p AND t.scheme = k.s ORDER BY t.payer, t.scheme "
                      "FOR NO KEY UPDATE OF t",
    [S_FAST_HOLDS] = "SELECT request_id, channel_id, amount FROM reservations "
                     "WHERE request_id = ANY ($1::text[])",
    [S_FAST_HOLD_INSERT] = "INSERT INTO reservations (request_id, channel_id, instance, amount, "
                           "expires_at, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    [S_FAST_CH_SET] = "UPDATE channels SET ceiling = $2, ceiling_sig = coalesce($3, ceiling_sig), "
                      "charge_cap = $4, charged = $5, credit_limit = $6, reserved = $7, "
                      "charge_count = charge_count + $8, first_unclaimed_at = $9, "
                      "updated_at = $10 WHERE id = $1",
    /* Guards of a batch decided on remembered rows: lock the row only if it still holds the
     * remembered values, else divide by zero (22012), which aborts the pipeline, COMMIT
     * included. */
    [S_FAST_CH_GUARD] =
        "SELECT 1 / (SELECT count(*)::int FROM (SELECT 1 FROM channels WHERE id = $1 AND "
        "payer = $2 AND status = $3 AND charged = $4 AND ceiling = $5 AND credit_limit = $6 AND "
        "charge_cap = $7 AND balance = $8 AND total_claimed = $9 AND withdraw_requested_at = $10 "
        "AND reserved = $11 AND first_unclaimed_at = $12 AND updated_at = $13 "
        "FOR NO KEY UPDATE) x)",
    [S_FAST_TOT_GUARD] = "SELECT 1 / (SELECT count(*)::int FROM (SELECT 1 FROM payer_totals "
                         "WHERE payer = $1 AND scheme = $2 AND charged = $3 AND count = $4 "
                         "FOR NO KEY UPDATE) x)",
    [S_FAST_HOLD_END] = "WITH d AS (DELETE FROM reservations WHERE request_id = $1 AND "
                        "channel_id = $2 AND amount = $3 RETURNING 1) "
                        "SELECT 1 / (SELECT count(*)::int FROM d)",
    [S_CH_GET] = "SELECT " CH_COLS " FROM channels WHERE id = $1",
    [S_CH_ALL] = "SELECT " CH_COLS " FROM channels ORDER BY id",
    [S_CH_BY_PAYER] = "SELECT " CH_COLS " FROM channels WHERE payer = $1 ORDER BY id",
    [S_CH_UNSETTLED] = "SELECT " CH_COLS " FROM channels WHERE charged > total_claimed "
                       "ORDER BY first_unclaimed_at, id",
    [S_CHARGES_BY_CHANNEL] = "SELECT " CHARGE_COLS " FROM charges WHERE channel_id = $1 "
                             "AND id > $2 ORDER BY id LIMIT $3",
    [S_CHARGES_BY_PAYER] = "SELECT " CHARGE_COLS " FROM charges WHERE payer = $1 AND id > $2 "
                           "ORDER BY id LIMIT $3",
    [S_CHARGE_GET] = "SELECT " CHARGE_COLS " FROM charges WHERE request_id = $1",
    [S_EXACT_GET] = "SELECT token, nonce, payer, to_addr, amount, valid_after, valid_before, "
                    "tx_hash, status, request_id, created_at, updated_at FROM exact_payments "
                    "WHERE token = $1 AND nonce = $2 AND payer = $3",
    [S_EXACT_ALL] = "SELECT token, nonce, payer, to_addr, amount, valid_after, valid_before, "
                    "tx_hash, status, request_id, created_at, updated_at FROM exact_payments "
                    "ORDER BY created_at, token, payer, nonce",
    [S_PAYID_GET] = "SELECT id, payer, request_hash, status, response_header, request_id, "
                    "created_at FROM payment_ids WHERE id = $1",
    [S_PASS_READ] = "SELECT calls, tokens FROM pass_usage WHERE pass_id = $1 AND holder = $2 "
                    "AND period_start = $3",
    [S_RUN_OPEN] = "SELECT id, started_at, finished_at, status FROM settle_runs "
                   "WHERE status = 0 ORDER BY id DESC LIMIT 1",
    [S_RUN_ITEMS] = "SELECT run_id, channel_id, amount, through_charge, step, tx_hash, error, "
                    "updated_at FROM settle_items WHERE run_id = $1 ORDER BY channel_id",
    [S_LEASE_READ] = "SELECT name, holder, expires_at FROM leases WHERE name = $1",
};

struct tg__store_conn {
  PGconn *pg;
  int writer;
  int lock_timeout_ms;
  int in_sp;  /* inside the submission savepoint */
  int sp_done; /* the previous submission's savepoint awaits its RELEASE */
  int retry;  /* the last failure was transient: rerun the batch */
  uint64_t round_trips; /* exchanges with the server (a pipeline's sync counts once) */
  struct fb_cache *cache; /* the writer's remembered rows (conn_batch); NULL until used */
  int64_t cache_off_until; /* after a guard failed: read the rows until then (ms) */
  uint8_t prepared[S_COUNT];
};

static void fb_cache_free(struct fb_cache *k);

/* ------------------------------------------------------------------------- */
/* Parameters (bytea in binary, everything else as text) and results (binary). */

#define PMAX 20

typedef struct {
  int n;
  const char *v[PMAX];
  int len[PMAX];
  int fmt[PMAX];
  char num[PMAX][24];
} params;

static void p_bin(params *p, const void *b, size_t len) {
  p->v[p->n] = (const char *)b;
  p->len[p->n] = (int)len;
  p->fmt[p->n] = 1;
  p->n++;
}
#define P_FIXED(p, x) p_bin((p), (x)->b, sizeof((x)->b))

static void p_i64(params *p, int64_t x) {
  snprintf(p->num[p->n], sizeof(p->num[p->n]), "%" PRId64, x);
  p->v[p->n] = p->num[p->n];
  p->len[p->n] = 0;
  p->fmt[p->n] = 0;
  p->n++;
}

static void p_text(params *p, const char *t) {
  p->v[p->n] = t ? t : "";
  p->len[p->n] = 0;
  p->fmt[p->n] = 0;
  p->n++;
}

static void p_null(params *p) {
  p->v[p->n] = NULL;
  p->len[p->n] = 0;
  p->fmt[p->n] = 0;
  p->n++;
}

static void p_opt_hash(params *p, int has, const tg_hash *h) {
  if (has) P_FIXED(p, h);
  else p_null(p);
}

static int debug_on(void) {
  static int v = -1;
  if (v < 0) v = getenv("TG_STORE_PG_DEBUG") != NULL;
  return v;
}

/* Maps a failed result (or a dead connection) to a tg_err; flags transient failures. */
static int map_res(tg__store_conn *c, const PGresult *r) {
  const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
  if (debug_on())
    fprintf(stderr, "store_pg: %s %s", state ? state : "-",
            r ? PQresultErrorMessage(r) : PQerrorMessage(c->pg));
  if (PQstatus(c->pg) != CONNECTION_OK || state == NULL) return TG_ESTORE;
  if (strcmp(state, "23505") == 0) return TG_EEXISTS;
  if (strncmp(state, "23", 2) == 0) return TG_ESTORE_CONSTRAINT;
  if (strcmp(state, "40P01") == 0 || strcmp(state, "40001") == 0) {
    c->retry = 1;
    return TG_EBUSY;
  }
  if (strcmp(state, "55P03") == 0 || strcmp(state, "57014") == 0) return TG_EBUSY;
  if (strcmp(state, "22003") == 0) return TG_EOVERFLOW;
  if (strncmp(state, "53", 2) == 0) return TG_ENOMEM;
  return TG_ESTORE;
}

static int session_setup(tg__store_conn *c);
static int q_once(tg__store_conn *c, int id, const char *name, const params *p,
                  PGresult **out);

/*
 * Runs prepared statement `id` (prepared on first use on this connection).
 * On success *out holds the result when out != NULL (caller PQclears).
 */
static int q(tg__store_conn *c, int id, const params *p, PGresult **out) {
  if (out) *out = NULL;
  char name[16];
  snprintf(name, sizeof(name), "tg%d", id);
  if (!c->writer && PQstatus(c->pg) != CONNECTION_OK) {
    /* A pooled read connection whose server restarted: reconnect. (Never the writer here:
     * a reconnect inside a batch would run the rest of it outside its transaction; the
     * writer reconnects in tx_begin.) */
    PQreset(c->pg);
    if (PQstatus(c->pg) != CONNECTION_OK) return TG_ESTORE;
    int rc = session_setup(c);
    if (rc < 0) return rc;
  }
  int rc = q_once(c, id, name, p, out);
  /* A read that found its idle connection dead runs once more on a new one. */
  if (rc < 0 && !c->writer && PQstatus(c->pg) != CONNECTION_OK) {
    PQreset(c->pg);
    if (PQstatus(c->pg) != CONNECTION_OK || session_setup(c) < 0) return rc;
    rc = q_once(c, id, name, p, out);
  }
  return rc;
}

static int q_once(tg__store_conn *c, int id, const char *name, const params *p,
                  PGresult **out) {
  if (!c->prepared[id]) {
    c->round_trips++;
    PGresult *r = PQprepare(c->pg, name, sql_text[id], 0, NULL);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
      int rc = map_res(c, r);
      PQclear(r);
      return rc;
    }
    PQclear(r);
    c->prepared[id] = 1;
  }
  c->round_trips++;
  PGresult *r = PQexecPrepared(c->pg, name, p ? p->n : 0, p ? p->v : NULL, p ? p->len : NULL,
                               p ? p->fmt : NULL, 1);
  ExecStatusType st = PQresultStatus(r);
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
    int rc = map_res(c, r);
    PQclear(r);
    return rc;
  }
  if (out) *out = r;
  else PQclear(r);
  return 0;
}

/* Rows changed by the last command of `r`. */
static int64_t affected(const PGresult *r) {
  const char *t = PQcmdTuples((PGresult *)r);
  int64_t n = 0;
  for (; t && *t >= '0' && *t <= '9'; t++) n = n * 10 + (*t - '0');
  return n;
}

/* Runs a statement and returns its affected row count in *n. */
static int q_count(tg__store_conn *c, int id, const params *p, int64_t *n) {
  PGresult *r;
  int rc = q(c, id, p, &r);
  *n = 0;
  if (rc < 0) return rc;
  *n = affected(r);
  PQclear(r);
  return 0;
}

static int exec_simple(tg__store_conn *c, const char *sql) {
  c->round_trips++;
  PGresult *r = PQexec(c->pg, sql);
  ExecStatusType st = PQresultStatus(r);
  int rc = (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) ? 0 : map_res(c, r);
  PQclear(r);
  return rc;
}

static int r_fixed(const PGresult *r, int row, int col, uint8_t *out, size_t len) {
  if (PQgetisnull(r, row, col) || PQftype(r, col) != OID_BYTEA ||
      (size_t)PQgetlength(r, row, col) != len)
    return TG_ESTORE_CORRUPT;
  memcpy(out, PQgetvalue(r, row, col), len);
  return 0;
}
#define R_FIXED(r, row, col, v) r_fixed((r), (row), (col), (v)->b, sizeof((v)->b))

static int r_fixed_opt(const PGresult *r, int row, int col, uint8_t *out, size_t len, int *has) {
  *has = 0;
  if (PQgetisnull(r, row, col)) return PQftype(r, col) == OID_BYTEA ? 0 : TG_ESTORE_CORRUPT;
  *has = 1;
  return r_fixed(r, row, col, out, len);
}

static int r_i64(const PGresult *r, int row, int col, int64_t *out) {
  if (PQgetisnull(r, row, col) || PQftype(r, col) != OID_INT8 || PQgetlength(r, row, col) != 8)
    return TG_ESTORE_CORRUPT;
  const uint8_t *b = (const uint8_t *)PQgetvalue(r, row, col);
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = v << 8 | b[i];
  *out = (int64_t)v;
  return 0;
}

static int r_u64(const PGresult *r, int row, int col, uint64_t *out) {
  int64_t v;
  int rc = r_i64(r, row, col, &v);
  if (rc < 0) return rc;
  if (v < 0) return TG_ESTORE_CORRUPT;
  *out = (uint64_t)v;
  return 0;
}

static int r_text(const PGresult *r, int row, int col, char *out, size_t cap) {
  if (PQgetisnull(r, row, col) || PQftype(r, col) != OID_TEXT) return TG_ESTORE_CORRUPT;
  size_t n = (size_t)PQgetlength(r, row, col);
  const char *t = PQgetvalue(r, row, col);
  if (n >= cap || memchr(t, 0, n) != NULL) return TG_ESTORE_CORRUPT;
  memcpy(out, t, n);
  out[n] = 0;
  return 0;
}

/* a + b, saturated at 2^256 - 1: a cap that cannot be exceeded anyway. */
static void u256_add_sat(tg_u256 *out, const tg_u256 *a, const tg_u256 *b) {
  if (tg_u256_add(out, a, b) < 0) memset(out->b, 0xff, sizeof(out->b));
}

/* ------------------------------------------------------------------------- */
/* Connections and migrations. */

static void conn_close(tg__store_conn *c) {
  if (c == NULL) return;
  fb_cache_free(c->cache);
  if (c->pg) PQfinish(c->pg);
  free(c);
}

static void quiet_notices(void *arg, const char *msg) {
  (void)arg;
  if (debug_on()) fprintf(stderr, "store_pg notice: %s", msg);
}

/* Per-session settings; run after every (re)connection. */
static int session_setup(tg__store_conn *c) {
  char sql[512];
  PQsetNoticeProcessor(c->pg, quiet_notices, NULL);
  /* READ COMMITTED plus explicit row locks is the design (see the top of the file);
   * synchronous_commit on: COMMIT returns once the WAL is flushed (and replicated,
   * when the server has synchronous standbys). */
  snprintf(sql, sizeof(sql),
           "SET synchronous_commit = on; SET default_transaction_isolation = 'read committed'; "
           "SET lock_timeout = %d; SET idle_in_transaction_session_timeout = 0; "
           "SET application_name = 'tollgate'%s",
           c->lock_timeout_ms, c->writer ? "" : "; SET default_transaction_read_only = on");
  int rc = exec_simple(c, sql);
  if (rc < 0) return rc;
  /* Check that it took: a pooler or a server setting could silently differ. */
  PGresult *r = PQexec(c->pg, "SHOW synchronous_commit");
  rc = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
               strcmp(PQgetvalue(r, 0, 0), "on") == 0
           ? 0
           : TG_ESTORE;
  PQclear(r);
  memset(c->prepared, 0, sizeof(c->prepared));
  return rc;
}

static int conn_open_uri(tg__store_conn **out, const char *scheme, const char *target,
                         const tg_store_options *opts, int writer) {
  *out = NULL;
  /* Only URIs: a bare "dbname=x" keyword string would also be accepted by libpq. */
  if (strncmp(target, "//", 2) != 0) return TG_ESTORE_URI;
  size_t n = strlen(scheme) + 1 + strlen(target) + 1;
  char *uri = malloc(n);
  if (uri == NULL) return TG_ENOMEM;
  snprintf(uri, n, "%s:%s", scheme, target);
  tg__store_conn *c = calloc(1, sizeof(*c));
  if (c == NULL) {
    free(uri);
    return TG_ENOMEM;
  }
  c->writer = writer;
  c->lock_timeout_ms = opts->busy_timeout_ms > 0 ? opts->busy_timeout_ms : 5000;
  char *err = NULL;
  PQconninfoOption *parsed = PQconninfoParse(uri, &err);
  if (parsed == NULL) {
    if (err) PQfreemem(err);
    free(uri);
    free(c);
    return TG_ESTORE_URI;
  }
  PQconninfoFree(parsed);
  c->pg = PQconnectdb(uri);
  free(uri);
  if (c->pg == NULL || PQstatus(c->pg) != CONNECTION_OK) {
    if (debug_on() && c->pg) fprintf(stderr, "store_pg: %s", PQerrorMessage(c->pg));
    conn_close(c);
    return TG_ESTORE;
  }
  int rc = session_setup(c);
  if (rc < 0) {
    conn_close(c);
    return rc;
  }
  *out = c;
  return 0;
}

static int open_postgres(tg__store_conn **out, const char *target, const tg_store_options *opts,
                         int writer) {
  return conn_open_uri(out, "postgres", target, opts, writer);
}

static int open_postgresql(tg__store_conn **out, const char *target,
                           const tg_store_options *opts, int writer) {
  return conn_open_uri(out, "postgresql", target, opts, writer);
}

static int version_read(tg__store_conn *c, int *current) {
  *current = 0;
  PGresult *r = PQexecParams(c->pg, "SELECT to_regclass('schema_version') IS NOT NULL", 0, NULL,
                             NULL, NULL, NULL, 1);
  if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1 || PQftype(r, 0) != OID_BOOL ||
      PQgetlength(r, 0, 0) != 1) {
    int rc = map_res(c, r);
    PQclear(r);
    return rc;
  }
  int exists = PQgetvalue(r, 0, 0)[0] != 0;
  PQclear(r);
  if (!exists) return 0;
  r = PQexecParams(c->pg, "SELECT coalesce(max(version), 0)::bigint FROM schema_version", 0, NULL,
                   NULL, NULL, NULL, 1);
  if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
    int rc = map_res(c, r);
    PQclear(r);
    return rc;
  }
  int64_t v;
  int rc = r_i64(r, 0, 0, &v);
  PQclear(r);
  if (rc < 0) return rc;
  if (v < 0 || v > 1000000) return TG_ESTORE_CORRUPT;
  *current = (int)v;
  return 0;
}

static int conn_version(tg__store_conn *c, int *current, int *latest) {
  *latest = PG_SCHEMA_LATEST;
  return version_read(c, current);
}

/* Applies every pending migration in one transaction; an advisory lock makes instances that
 * start together take turns (the second finds nothing to do). */
static int conn_migrate(tg__store_conn *c, int *applied) {
  *applied = 0;
  int rc = exec_simple(c, "BEGIN");
  if (rc < 0) return rc;
  int cur;
  if ((rc = exec_simple(c, "SELECT pg_advisory_xact_lock(" MIGRATE_LOCK_KEY ")")) < 0 ||
      (rc = exec_simple(c, "CREATE TABLE IF NOT EXISTS schema_version ("
                           " version bigint PRIMARY KEY, applied_at bigint NOT NULL)")) < 0 ||
      (rc = version_read(c, &cur)) < 0)
    goto fail;
  if (cur > PG_SCHEMA_LATEST) {
    rc = TG_ESTORE_SCHEMA;
    goto fail;
  }
  for (int v = cur + 1; v <= PG_SCHEMA_LATEST; v++) {
    if (exec_simple(c, pg_migrations[v - 1]) < 0) {
      rc = TG_ESTORE_SCHEMA;
      goto fail;
    }
    params p = {0};
    p_i64(&p, v);
    p_i64(&p, tg__store_now_ms());
    PGresult *r = PQexecParams(c->pg,
                               "INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)",
                               p.n, NULL, p.v, p.len, p.fmt, 1);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!ok) {
      rc = TG_ESTORE_SCHEMA;
      goto fail;
    }
    (*applied)++;
  }
  if ((rc = exec_simple(c, "COMMIT")) < 0) goto fail;
  return 0;
fail:
  if (PQtransactionStatus(c->pg) != PQTRANS_IDLE) (void)exec_simple(c, "ROLLBACK");
  *applied = 0;
  return rc;
}

/* ------------------------------------------------------------------------- */
/* Transactions. */

/* Reconnects a connection found dead (the server restarted, the link dropped); prepared
 * statements are gone with the old session. */
static int reconnect(tg__store_conn *c) {
  PQreset(c->pg);
  if (PQstatus(c->pg) != CONNECTION_OK) return TG_ESTORE;
  return session_setup(c);
}

static int tx_begin(tg__store_conn *c) {
  /* The statement-by-statement path may change any row: forget the remembered ones. */
  fb_cache_free(c->cache);
  c->cache = NULL;
  c->retry = 0;
  c->in_sp = 0;
  c->sp_done = 0;
  int rc;
  if (PQstatus(c->pg) != CONNECTION_OK && (rc = reconnect(c)) < 0) return rc;
  if (PQtransactionStatus(c->pg) != PQTRANS_IDLE) (void)exec_simple(c, "ROLLBACK");
  rc = exec_simple(c, "BEGIN");
  /* A connection that died while idle is only noticed now: nothing ran yet, so reconnect
   * and begin once more. */
  if (rc < 0 && PQstatus(c->pg) != CONNECTION_OK) {
    if ((rc = reconnect(c)) < 0) return rc;
    rc = exec_simple(c, "BEGIN");
  }
  return rc;
}

static int tx_commit(tg__store_conn *c) {
  /* COMMIT of an aborted transaction "succeeds" as a ROLLBACK: never report that as durable. */
  if (PQtransactionStatus(c->pg) != PQTRANS_INTRANS) return TG_ESTORE;
  c->round_trips++;
  PGresult *r = PQexec(c->pg, "COMMIT");
  int rc;
  if (PQresultStatus(r) != PGRES_COMMAND_OK) rc = map_res(c, r);
  else rc = strcmp(PQcmdStatus(r), "COMMIT") == 0 ? 0 : TG_ESTORE;
  PQclear(r);
  return rc;
}

static void tx_rollback(tg__store_conn *c) {
  c->in_sp = 0;
  c->sp_done = 0;
  PGTransactionStatusType t = PQtransactionStatus(c->pg);
  if (t == PQTRANS_INTRANS || t == PQTRANS_INERROR) (void)exec_simple(c, "ROLLBACK");
}

/* One round trip per submission boundary: the previous savepoint's RELEASE travels with the
 * next SAVEPOINT (a COMMIT needs no RELEASE before it). */
static int sp_begin(tg__store_conn *c) {
  int rc = exec_simple(c, c->sp_done ? "RELEASE SAVEPOINT sub; SAVEPOINT sub" : "SAVEPOINT sub");
  c->sp_done = 0;
  if (rc == 0) c->in_sp = 1;
  return rc;
}

static int sp_release(tg__store_conn *c) {
  c->in_sp = 0;
  c->sp_done = 1;
  return 0;
}

static void sp_rollback(tg__store_conn *c) {
  (void)exec_simple(c, "ROLLBACK TO SAVEPOINT sub; RELEASE SAVEPOINT sub");
  c->in_sp = 0;
  c->sp_done = 0;
}

/* The transaction is gone (or unusable as a whole): not in one, or failed outside the
 * submission savepoint. */
static int txn_lost(tg__store_conn *c) {
  PGTransactionStatusType t = PQtransactionStatus(c->pg);
  if (t == PQTRANS_INTRANS) return 0;
  if (t == PQTRANS_INERROR && c->in_sp) return 0;
  return 1;
}

static int txn_retry(tg__store_conn *c) { return c->retry; }

/* ------------------------------------------------------------------------- */
/* Batch locks: every channel and payer-totals row the batch modifies, in key order. */

static int cmp_hash(const void *a, const void *b) { return memcmp(a, b, 32); }

typedef struct {
  uint8_t payer[20];
  uint8_t scheme;
} totals_key;

static int cmp_totals(const void *a, const void *b) {
  const totals_key *x = a, *y = b;
  int d = memcmp(x->payer, y->payer, 20);
  return d ? d : (int)x->scheme - (int)y->scheme;
}

static void hex_put(char *out, const uint8_t *b, size_t n) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = digits[b[i] >> 4];
    out[2 * i + 1] = digits[b[i] & 15];
  }
}

static int lock_batch(tg__store_conn *c, tg_store_op *const *ops, size_t n) {
  tg_hash *ids = malloc((n ? n : 1) * sizeof(tg_hash));
  totals_key *tk = malloc((n ? n : 1) * sizeof(totals_key));
  char *list = NULL;
  size_t ni = 0, nt = 0;
  int rc = 0;
  if (ids == NULL || tk == NULL) {
    rc = TG_ENOMEM;
    goto done;
  }
  for (size_t i = 0; i < n; i++) {
    const tg_store_op *op = ops[i];
    switch (op->kind) {
    case TG_STORE_OP_CHARGE:
      if (op->u.charge.has_channel) ids[ni++] = op->u.charge.channel_id;
      memcpy(tk[nt].payer, op->u.charge.payer.b, 20);
      tk[nt++].scheme = (uint8_t)op->u.charge.scheme;
      break;
    case TG_STORE_OP_VOUCHER:
      ids[ni++] = op->u.voucher.channel_id;
      break;
    case TG_STORE_OP_CHANNEL_PUT:
    case TG_STORE_OP_CHANNEL_SYNC:
      ids[ni++] = op->u.channel.id;
      break;
    case TG_STORE_OP_CHARGES_SETTLE:
      ids[ni++] = op->u.settle.channel_id;
      break;
    case TG_STORE_OP_RESERVE:
    case TG_STORE_OP_UNRESERVE:
      ids[ni++] = op->u.reserve.channel_id;
      break;
    default:
      break;
    }
  }
  qsort(ids, ni, sizeof(tg_hash), cmp_hash);
  qsort(tk, nt, sizeof(totals_key), cmp_totals);
  list = malloc((ni > nt ? ni : nt) * 68 + 1);
  if (list == NULL) {
    rc = TG_ENOMEM;
    goto done;
  }
  if (ni > 0) {
    size_t len = 0;
    for (size_t i = 0; i < ni; i++) {
      if (i > 0 && memcmp(ids[i].b, ids[i - 1].b, 32) == 0) continue;
      if (len) list[len++] = ',';
      hex_put(list + len, ids[i].b, 32);
      len += 64;
    }
    list[len] = 0;
    params p = {0};
    p_text(&p, list);
    if ((rc = q(c, S_LOCK_CHANNELS, &p, NULL)) < 0) goto done;
  }
  if (nt > 0) {
    size_t len = 0;
    for (size_t i = 0; i < nt; i++) {
      if (i > 0 && cmp_totals(&tk[i], &tk[i - 1]) == 0) continue;
      if (len) list[len++] = ',';
      hex_put(list + len, tk[i].payer, 20);
      len += 40;
      list[len++] = ':';
      list[len++] = (char)('0' + tk[i].scheme);
    }
    list[len] = 0;
    params p = {0};
    p_text(&p, list);
    if ((rc = q(c, S_TOTALS_ENSURE, &p, NULL)) < 0) goto done;
    rc = q(c, S_LOCK_TOTALS, &p, NULL);
  }
done:
  free(ids);
  free(tk);
  free(list);
  return rc;
}

/* ------------------------------------------------------------------------- */
/* Write operations. */

static int cfg_equal(const tg_store_channel_config *a, const tg_store_channel_config *b) {
  return a->chain_id == b->chain_id && a->withdraw_delay == b->withdraw_delay &&
         !memcmp(&a->contract, &b->contract, 20) && !memcmp(&a->payer, &b->payer, 20) &&
         !memcmp(&a->payer_authorizer, &b->payer_authorizer, 20) &&
         !memcmp(&a->receiver, &b->receiver, 20) &&
         !memcmp(&a->receiver_authorizer, &b->receiver_authorizer, 20) &&
         !memcmp(&a->token, &b->token, 20) && !memcmp(&a->salt, &b->salt, 32);
}

static int op_channel(tg__store_conn *c, tg_store_op *op) {
  tg_store_op_channel *o = &op->u.channel;
  PGresult *r;
  int rc;
  o->out_applied = 0;
  if (op->kind == TG_STORE_OP_CHANNEL_PUT) {
    static const tg_u256 zero;
    params p = {0};
    P_FIXED(&p, &o->id);
    p_i64(&p, (int64_t)o->cfg.chain_id);
    P_FIXED(&p, &o->cfg.contract);
    P_FIXED(&p, &o->cfg.payer);
    P_FIXED(&p, &o->cfg.payer_authorizer);
    P_FIXED(&p, &o->cfg.receiver);
    P_FIXED(&p, &o->cfg.receiver_authorizer);
    P_FIXED(&p, &o->cfg.token);
    p_i64(&p, (int64_t)o->cfg.withdraw_delay);
    P_FIXED(&p, &o->cfg.salt);
    P_FIXED(&p, &o->chain.balance);
    P_FIXED(&p, &o->chain.total_claimed);
    p_i64(&p, (int64_t)o->chain.withdraw_requested_at);
    p_i64(&p, (int64_t)o->chain.refund_nonce);
    p_i64(&p, (int64_t)o->chain.synced_block);
    p_i64(&p, (int64_t)o->chain.status);
    P_FIXED(&p, &zero);
    p_i64(&p, op->now);
    if ((rc = q(c, S_CH_INSERT, &p, &r)) < 0) return rc;
    int inserted = PQntuples(r) == 1;
    PQclear(r);
    if (inserted) {
      o->out_applied = 1;
      return 0;
    }
    /* Known channel: its configuration is immutable (it is hashed into the id). */
    params pc = {0};
    P_FIXED(&pc, &o->id);
    if ((rc = q(c, S_CH_CFG, &pc, &r)) < 0) return rc;
    if (PQntuples(r) != 1) {
      PQclear(r);
      return TG_ESTORE;
    }
    tg_store_channel_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    if ((rc = r_u64(r, 0, 0, &cfg.chain_id)) < 0 || (rc = R_FIXED(r, 0, 1, &cfg.contract)) < 0 ||
        (rc = R_FIXED(r, 0, 2, &cfg.payer)) < 0 ||
        (rc = R_FIXED(r, 0, 3, &cfg.payer_authorizer)) < 0 ||
        (rc = R_FIXED(r, 0, 4, &cfg.receiver)) < 0 ||
        (rc = R_FIXED(r, 0, 5, &cfg.receiver_authorizer)) < 0 ||
        (rc = R_FIXED(r, 0, 6, &cfg.token)) < 0 || (rc = r_u64(r, 0, 7, &cfg.withdraw_delay)) < 0 ||
        (rc = R_FIXED(r, 0, 8, &cfg.salt)) < 0) {
      PQclear(r);
      return rc;
    }
    PQclear(r);
    if (!cfg_equal(&cfg, &o->cfg)) return TG_ESTORE_CONSTRAINT;
  }
  params p = {0};
  P_FIXED(&p, &o->id);
  P_FIXED(&p, &o->chain.balance);
  P_FIXED(&p, &o->chain.total_claimed);
  p_i64(&p, (int64_t)o->chain.withdraw_requested_at);
  p_i64(&p, (int64_t)o->chain.refund_nonce);
  p_i64(&p, (int64_t)o->chain.synced_block);
  p_i64(&p, (int64_t)o->chain.status);
  p_i64(&p, op->now);
  int64_t n;
  if ((rc = q_count(c, S_CH_SYNC, &p, &n)) < 0) return rc;
  if (n > 0) {
    o->out_applied = 1;
    return 0;
  }
  /* Nothing updated: an older mirror (a no-op), or no such channel. */
  params pe = {0};
  P_FIXED(&pe, &o->id);
  if ((rc = q(c, S_CH_EXISTS, &pe, &r)) < 0) return rc;
  n = PQntuples(r);
  PQclear(r);
  return n == 1 ? 0 : TG_ENOTFOUND;
}

static int op_voucher(tg__store_conn *c, tg_store_op *op) {
  tg_store_op_voucher *o = &op->u.voucher;
  PGresult *r;
  tg_u256 ceiling, credit, cap;
  int64_t status;
  o->out_raised = 0;
  params p = {0};
  P_FIXED(&p, &o->channel_id);
  int rc = q(c, S_CH_VOUCHER_READ, &p, &r);
  if (rc < 0) return rc;
  if (PQntuples(r) != 1) {
    PQclear(r);
    return TG_ENOTFOUND;
  }
  if ((rc = R_FIXED(r, 0, 0, &ceiling)) < 0 || (rc = R_FIXED(r, 0, 1, &credit)) < 0 ||
      (rc = r_i64(r, 0, 2, &status)) < 0) {
    PQclear(r);
    return rc;
  }
  PQclear(r);
  if (status == TG_CHANNEL_CLOSED) return TG_ESTORE_CHANNEL_CLOSED;
  /* Vouchers are cumulative: only a higher ceiling means anything. */
  if (tg_u256_cmp(&o->max_claimable, &ceiling) <= 0) return 0;
  u256_add_sat(&cap, &o->max_claimable, &credit);
  params ps = {0};
  P_FIXED(&ps, &o->channel_id);
  P_FIXED(&ps, &o->max_claimable);
  p_bin(&ps, o->sig.ptr, o->sig.len);
  P_FIXED(&ps, &cap);
  p_i64(&ps, op->now);
  if ((rc = q(c, S_CH_VOUCHER_SET, &ps, NULL)) < 0) return rc;
  o->out_raised = 1;
  return 0;
}

/* The payer's running total (its row was created and locked by lock_batch). */
static int totals_add(tg__store_conn *c, const tg_address *payer, tg_store_scheme scheme,
                      const tg_u256 *amount) {
  PGresult *r;
  tg_u256 total;
  memset(&total, 0, sizeof(total));
  uint64_t count = 0;
  params p = {0};
  P_FIXED(&p, payer);
  p_i64(&p, (int64_t)scheme);
  int rc = q(c, S_TOTALS_READ, &p, &r);
  if (rc < 0) return rc;
  if (PQntuples(r) == 1 &&
      ((rc = R_FIXED(r, 0, 0, &total)) < 0 || (rc = r_u64(r, 0, 1, &count)) < 0)) {
    PQclear(r);
    return rc;
  }
  PQclear(r);
  if (tg_u256_add(&total, &total, amount) < 0) return TG_EOVERFLOW;
  count++;
  P_FIXED(&p, &total);
  p_i64(&p, (int64_t)count);
  return q(c, S_TOTALS_SET, &p, NULL);
}

/* Ends a call's hold: deletes its row; *amount is what it held (0 when it was gone). */
static int hold_end(tg__store_conn *c, const char *request_id, const tg_hash *channel_id,
                    tg_u256 *amount) {
  PGresult *r;
  memset(amount, 0, sizeof(*amount));
  params p = {0};
  p_text(&p, request_id);
  P_FIXED(&p, channel_id);
  int rc = q(c, S_RES_DELETE, &p, &r);
  if (rc < 0) return rc;
  if (PQntuples(r) == 1) rc = R_FIXED(r, 0, 0, amount);
  PQclear(r);
  return rc < 0 ? rc : 0;
}

static void u256_sub_floor(tg_u256 *x, const tg_u256 *y) {
  if (tg_u256_sub(x, x, y) < 0) memset(x, 0, sizeof(*x));
}

/* The hold a charge ends: a headroom unit's, or the call's own (docs/STORE.md). */
static const char *charge_hold_id(const tg_store_op_charge *o) {
  return o->hold_id ? o->hold_id : o->request_id;
}

static void charge_outs_clear(tg_store_op_charge *o) {
  memset(&o->out_charged, 0, sizeof(o->out_charged));
  memset(&o->out_reserved, 0, sizeof(o->out_reserved));
  memset(&o->out_ceiling, 0, sizeof(o->out_ceiling));
  memset(&o->out_balance, 0, sizeof(o->out_balance));
  o->out_withdraw_requested_at = 0;
  o->out_hold_found = 0;
  o->out_id = 0;
}

static int op_charge(tg__store_conn *c, tg_store_op *op) {
  tg_store_op_charge *o = &op->u.charge;
  PGresult *r;
  tg_u256 charged, ceiling, cap, reserved, balance;
  memset(&reserved, 0, sizeof(reserved));
  int rc;
  charge_outs_clear(o);
  if (o->has_channel) {
    tg_address payer;
    int64_t status, wra;
    params p = {0};
    P_FIXED(&p, &o->channel_id);
    /* FOR NO KEY UPDATE: already held since lock_batch; read under the lock. */
    if ((rc = q(c, S_CH_CHARGE_READ, &p, &r)) < 0) return rc;
    if (PQntuples(r) != 1) {
      PQclear(r);
      return TG_ENOTFOUND;
    }
    if ((rc = R_FIXED(r, 0, 0, &payer)) < 0 || (rc = r_i64(r, 0, 1, &status)) < 0 ||
        (rc = R_FIXED(r, 0, 2, &charged)) < 0 || (rc = R_FIXED(r, 0, 3, &ceiling)) < 0 ||
        (rc = R_FIXED(r, 0, 4, &reserved)) < 0 || (rc = R_FIXED(r, 0, 5, &balance)) < 0 ||
        (rc = r_i64(r, 0, 6, &wra)) < 0) {
      PQclear(r);
      return rc;
    }
    PQclear(r);
    if (memcmp(payer.b, o->payer.b, sizeof(payer.b)) != 0) return TG_ESTORE_CONSTRAINT;
    if (o->release_reservation) {
      /* The hold (the call's maximum price) becomes the charge (at most that): charged +
       * reserved does not grow. A hold reclaimed meanwhile is simply gone; the cap below
       * still bounds the charge. */
      tg_u256 held;
      if ((rc = hold_end(c, charge_hold_id(o), &o->channel_id, &held)) < 0) return rc;
      o->out_hold_found = !tg_u256_is_zero(&held);
      u256_sub_floor(&reserved, &held);
    }
    o->out_reserved = reserved;
    o->out_ceiling = ceiling;
    o->out_balance = balance;
    o->out_withdraw_requested_at = (uint64_t)wra;
    if (status == TG_CHANNEL_CLOSED) return TG_ESTORE_CHANNEL_CLOSED;
    /* The money invariant: charged <= ceiling + credit limit. The CHECK on the row agrees. */
    if (tg_u256_add(&charged, &charged, &o->amount) < 0) return TG_ESTORE_LIMIT;
    u256_add_sat(&cap, &ceiling, &o->credit_limit);
    if (tg_u256_cmp(&charged, &cap) > 0) return TG_ESTORE_LIMIT;
  }
  int64_t created = o->created_at ? o->created_at : op->now;
  params p = {0};
  p_text(&p, o->request_id);
  P_FIXED(&p, &o->payer);
  p_i64(&p, (int64_t)o->scheme);
  p_text(&p, o->route);
  p_text(&p, o->model);
  p_i64(&p, (int64_t)o->input_tokens);
  p_i64(&p, (int64_t)o->output_tokens);
  P_FIXED(&p, &o->amount);
  if (o->has_channel) {
    P_FIXED(&p, &o->channel_id);
    P_FIXED(&p, &charged);
  } else {
    p_null(&p);
    p_null(&p);
  }
  p_i64(&p, created);
  if ((rc = q(c, S_CHARGE_INSERT, &p, &r)) < 0) return rc;
  rc = PQntuples(r) == 1 ? r_i64(r, 0, 0, &o->out_id) : TG_ESTORE;
  PQclear(r);
  if (rc < 0) return rc;
  if (o->has_channel) {
    params ps = {0};
    P_FIXED(&ps, &o->channel_id);
    P_FIXED(&ps, &charged);
    P_FIXED(&ps, &o->credit_limit);
    P_FIXED(&ps, &cap);
    p_i64(&ps, op->now);
    p_i64(&ps, created);
    P_FIXED(&ps, &reserved);
    if ((rc = q(c, S_CH_CHARGE_SET, &ps, NULL)) < 0)
      return rc == TG_ESTORE_CONSTRAINT ? TG_ESTORE_LIMIT : rc;
    o->out_charged = charged;
  }
  return totals_add(c, &o->payer, o->scheme, &o->amount);
}

static int op_settle(tg__store_conn *c, tg_store_op *op) {
  params p = {0};
  P_FIXED(&p, &op->u.settle.channel_id);
  p_i64(&p, op->u.settle.through_charge);
  int rc = q_count(c, S_SETTLE, &p, &op->u.settle.out_count);
  if (rc < 0) return rc;
  /* The max-age clock restarts at the oldest charge still unsettled (0 when none). */
  params pa = {0};
  P_FIXED(&pa, &op->u.settle.channel_id);
  return q(c, S_SETTLE_AGE, &pa, NULL);
}

static int op_exact(tg__store_conn *c, tg_store_op *op) {
  tg_store_op_exact *o = &op->u.exact;
  int rc;
  params p = {0};
  if (op->kind == TG_STORE_OP_EXACT_PUT) {
    P_FIXED(&p, &o->token);
    P_FIXED(&p, &o->nonce);
    P_FIXED(&p, &o->payer);
    P_FIXED(&p, &o->to);
    P_FIXED(&p, &o->amount);
    p_i64(&p, (int64_t)o->valid_after);
    p_i64(&p, (int64_t)o->valid_before);
    p_opt_hash(&p, o->has_tx, &o->tx_hash);
    p_i64(&p, (int64_t)o->status);
    p_text(&p, o->request_id);
    p_i64(&p, op->now);
    return q(c, S_EXACT_INSERT, &p, NULL);
  }
  P_FIXED(&p, &o->token);
  P_FIXED(&p, &o->nonce);
  p_i64(&p, (int64_t)o->status);
  p_opt_hash(&p, o->has_tx, &o->tx_hash);
  p_i64(&p, op->now);
  P_FIXED(&p, &o->payer);
  p_i64(&p, o->receipt ? 1 : 0);
  int64_t n;
  if ((rc = q_count(c, S_EXACT_UPDATE, &p, &n)) < 0) return rc;
  if (n == 0) return TG_ENOTFOUND;
  if (o->status == TG_EXACT_CONFIRMED) {
    params ps = {0};
    P_FIXED(&ps, &o->token);
    P_FIXED(&ps, &o->nonce);
    P_FIXED(&ps, &o->payer);
    return q(c, S_EXACT_SETTLE_CHARGE, &ps, NULL);
  }
  return 0;
}

static int op_payid(tg__store_conn *c, tg_store_op *op) {
  tg_store_op_payid *o = &op->u.payid;
  params p = {0};
  p_text(&p, o->id);
  P_FIXED(&p, &o->payer);
  P_FIXED(&p, &o->request_hash);
  p_i64(&p, o->status);
  p_text(&p, o->response_header);
  p_text(&p, o->request_id);
  p_i64(&p, op->now);
  return q(c, S_PAYID_INSERT, &p, NULL);
}

static int op_pass(tg__store_conn *c, tg_store_op *op) {
  tg_store_op_pass *o = &op->u.pass;
  PGresult *r;
  params p = {0};
  P_FIXED(&p, &o->pass_id);
  P_FIXED(&p, &o->holder);
  p_i64(&p, o->period_start);
  p_i64(&p, (int64_t)o->calls - (int64_t)o->calls_back); /* both at most 2^40 (validate) */
  p_i64(&p, (int64_t)o->tokens);
  p_i64(&p, op->now);
  int rc = q(c, S_PASS_ADD, &p, &r);
  if (rc < 0) return rc;
  if (PQntuples(r) != 1) rc = TG_ESTORE;
  else if ((rc = r_u64(r, 0, 0, &o->out_calls)) >= 0) rc = r_u64(r, 0, 1, &o->out_tokens);
  PQclear(r);
  return rc;
}

static int op_nonce(tg__store_conn *c, tg_store_op *op) {
  tg_store_op_nonce *o = &op->u.nonce;
  params p = {0};
  int64_t n = 0;
  int rc;
  if (op->kind == TG_STORE_OP_NONCE_PUT) {
    p_i64(&p, op->now);
    if ((rc = q_count(c, S_NONCE_PURGE, &p, &n)) < 0) return rc;
    params p2 = {0};
    p_text(&p2, o->nonce);
    p_i64(&p2, o->expires_at);
    p_i64(&p2, o->used_at);
    return q_count(c, S_NONCE_INSERT, &p2, &n);
  }
  p_text(&p, o->nonce);
  p_i64(&p, op->now);
  if ((rc = q_count(c, S_NONCE_USE, &p, &n)) < 0) return rc;
  return n ? 0 : TG_ESIWE_NONCE;
}

static int op_session(tg__store_conn *c, tg_store_op *op) {
  tg_store_op_session *o = &op->u.session;
  params p = {0};
  int64_t n = 0;
  p_i64(&p, op->now);
  int rc = q_count(c, S_SESSION_PURGE, &p, &n);
  if (rc < 0) return rc;
  params p2 = {0};
  P_FIXED(&p2, &o->token_hash);
  P_FIXED(&p2, &o->address);
  p_i64(&p2, op->now);
  p_i64(&p2, o->expires_at);
  return q_count(c, S_SESSION_INSERT, &p2, &n);
}

static int op_session_revoke(tg__store_conn *c, tg_store_op *op) {
  params p = {0};
  int64_t n = 0;
  P_FIXED(&p, &op->u.session.token_hash);
  return q_count(c, S_SESSION_DELETE, &p, &n);
}

static int op_run(tg__store_conn *c, tg_store_op *op) {
  PGresult *r;
  int rc;
  params p = {0};
  if (op->kind == TG_STORE_OP_RUN_BEGIN) {
    p_i64(&p, op->now);
    if ((rc = q(c, S_RUN_INSERT, &p, &r)) < 0) return rc;
    rc = PQntuples(r) == 1 ? r_i64(r, 0, 0, &op->u.run.run_id) : TG_ESTORE;
    PQclear(r);
    return rc;
  }
  p_i64(&p, op->u.run.run_id);
  p_i64(&p, (int64_t)op->u.run.status);
  p_i64(&p, op->now);
  int64_t n;
  if ((rc = q_count(c, S_RUN_END, &p, &n)) < 0) return rc;
  return n ? 0 : TG_ENOTFOUND;
}

static int op_item(tg__store_conn *c, tg_store_op *op) {
  tg_store_op_item *o = &op->u.item;
  params p = {0};
  p_i64(&p, o->run_id);
  P_FIXED(&p, &o->channel_id);
  P_FIXED(&p, &o->amount);
  p_i64(&p, o->through_charge);
  p_i64(&p, (int64_t)o->step);
  p_opt_hash(&p, o->has_tx, &o->tx_hash);
  p_text(&p, o->error);
  p_i64(&p, op->now);
  int rc = q(c, S_ITEM_PUT, &p, NULL);
  /* A foreign key failure here means an unknown run or channel. */
  return rc == TG_ESTORE_CONSTRAINT ? TG_ENOTFOUND : rc;
}

static int op_lease(tg__store_conn *c, tg_store_op *op) {
  tg_store_op_lease *o = &op->u.lease;
  params p = {0};
  p_text(&p, o->name);
  p_text(&p, o->holder);
  if (op->kind == TG_STORE_OP_LEASE_RELEASE) return q(c, S_LEASE_DELETE, &p, NULL);
  if (o->ttl_ms > INT64_MAX - op->now) return TG_ERANGE;
  o->out_expires_at = op->now + o->ttl_ms;
  p_i64(&p, o->out_expires_at);
  p_i64(&p, op->now);
  PGresult *r;
  int rc = q(c, S_LEASE_ACQUIRE, &p, &r);
  if (rc < 0) return rc;
  int got = PQntuples(r) == 1;
  PQclear(r);
  if (!got) {
    o->out_expires_at = 0;
    return TG_ESTORE_LEASE;
  }
  return 0;
}

/* RESERVE / UNRESERVE: shared admission, under the channel's row lock (see store.h). */
static int op_reserve(tg__store_conn *c, tg_store_op *op) {
  tg_store_op_reserve *o = &op->u.reserve;
  PGresult *r;
  int64_t status;
  tg_u256 reserved;
  o->out_reclaimed = 0;
  params p = {0};
  P_FIXED(&p, &o->channel_id);
  int rc = q(c, S_RES_READ, &p, &r);
  if (rc < 0) return rc;
  if (PQntuples(r) != 1) {
    PQclear(r);
    return TG_ENOTFOUND;
  }
  if ((rc = r_i64(r, 0, 0, &status)) < 0 || (rc = R_FIXED(r, 0, 1, &o->out_charged)) < 0 ||
      (rc = R_FIXED(r, 0, 2, &o->out_ceiling)) < 0 ||
      (rc = R_FIXED(r, 0, 3, &o->out_balance)) < 0 ||
      (rc = R_FIXED(r, 0, 4, &o->out_total_claimed)) < 0 ||
      (rc = r_u64(r, 0, 5, &o->out_withdraw_requested_at)) < 0 ||
      (rc = R_FIXED(r, 0, 6, &reserved)) < 0) {
    PQclear(r);
    return rc;
  }
  PQclear(r);
  o->out_reserved = reserved;
  if (op->kind == TG_STORE_OP_UNRESERVE) {
    tg_u256 held;
    if ((rc = hold_end(c, o->request_id, &o->channel_id, &held)) < 0) return rc;
    if (tg_u256_is_zero(&held)) return 0;
    u256_sub_floor(&reserved, &held);
    params ps = {0};
    P_FIXED(&ps, &o->channel_id);
    P_FIXED(&ps, &reserved);
    if ((rc = q(c, S_RES_SET, &ps, NULL)) < 0) return rc;
    o->out_reserved = reserved;
    return 0;
  }
  if (status == TG_CHANNEL_CLOSED) return TG_ESTORE_CHANNEL_CLOSED;
  if (status == TG_CHANNEL_WITHDRAWING || o->out_withdraw_requested_at != 0)
    return TG_ECHANNEL_WITHDRAWING;
  /* limit = min(ceiling, balance) + credit limit (saturated); need = charged + reserved + amount */
  tg_u256 limit, need;
  const tg_u256 *base = tg_u256_cmp(&o->out_ceiling, &o->out_balance) < 0 ? &o->out_ceiling
                                                                          : &o->out_balance;
  u256_add_sat(&limit, base, &o->credit_limit);
  for (int pass = 0;; pass++) {
    int over = tg_u256_add(&need, &o->out_charged, &reserved) < 0 ||
               tg_u256_add(&need, &need, &o->amount) < 0 || tg_u256_cmp(&need, &limit) > 0;
    if (!over) break;
    if (pass == 1) return TG_ECHANNEL_SHORT;
    /* Before refusing: give back the holds of dead instances and of lapsed calls. */
    params pr = {0};
    P_FIXED(&pr, &o->channel_id);
    p_i64(&pr, op->now);
    if ((rc = q(c, S_RES_RECLAIM, &pr, &r)) < 0) return rc;
    int n = PQntuples(r);
    for (int i = 0; i < n; i++) {
      tg_u256 a;
      if ((rc = R_FIXED(r, i, 0, &a)) < 0) {
        PQclear(r);
        return rc;
      }
      u256_sub_floor(&reserved, &a);
    }
    PQclear(r);
    o->out_reclaimed = n;
    if (n == 0) return TG_ECHANNEL_SHORT;
    o->out_reserved = reserved;
  }
  if (tg_u256_add(&reserved, &reserved, &o->amount) < 0) return TG_ECHANNEL_SHORT;
  if (o->ttl_ms > INT64_MAX - op->now) return TG_ERANGE;
  params pi = {0};
  p_text(&pi, o->request_id);
  P_FIXED(&pi, &o->channel_id);
  p_text(&pi, o->instance);
  P_FIXED(&pi, &o->amount);
  p_i64(&pi, op->now + o->ttl_ms);
  p_i64(&pi, op->now);
  P_FIXED(&pi, &reserved);
  if ((rc = q(c, S_RES_INSERT, &pi, NULL)) < 0) return rc;
  o->out_reserved = reserved;
  return 0;
}

static int conn_apply(tg__store_conn *c, tg_store_op *op) {
  switch (op->kind) {
  case TG_STORE_OP_RESERVE:
  case TG_STORE_OP_UNRESERVE:
    return op_reserve(c, op);
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
  }
  return TG_EINVAL;
}

/* ------------------------------------------------------------------------- */
/* Reads. Rows come from the server: every column is checked (type, size) before use. */

static int decode_channel(const PGresult *r, int i, tg_store_channel *ch) {
  memset(ch, 0, sizeof(*ch));
  int64_t status;
  int rc, has_sig = 0;
  if ((rc = R_FIXED(r, i, 0, &ch->id)) < 0 || (rc = r_u64(r, i, 1, &ch->cfg.chain_id)) < 0 ||
      (rc = R_FIXED(r, i, 2, &ch->cfg.contract)) < 0 ||
      (rc = R_FIXED(r, i, 3, &ch->cfg.payer)) < 0 ||
      (rc = R_FIXED(r, i, 4, &ch->cfg.payer_authorizer)) < 0 ||
      (rc = R_FIXED(r, i, 5, &ch->cfg.receiver)) < 0 ||
      (rc = R_FIXED(r, i, 6, &ch->cfg.receiver_authorizer)) < 0 ||
      (rc = R_FIXED(r, i, 7, &ch->cfg.token)) < 0 ||
      (rc = r_u64(r, i, 8, &ch->cfg.withdraw_delay)) < 0 ||
      (rc = R_FIXED(r, i, 9, &ch->cfg.salt)) < 0 ||
      (rc = R_FIXED(r, i, 10, &ch->chain.balance)) < 0 ||
      (rc = R_FIXED(r, i, 11, &ch->chain.total_claimed)) < 0 ||
      (rc = r_u64(r, i, 12, &ch->chain.withdraw_requested_at)) < 0 ||
      (rc = r_u64(r, i, 13, &ch->chain.refund_nonce)) < 0 ||
      (rc = r_u64(r, i, 14, &ch->chain.synced_block)) < 0 ||
      (rc = r_i64(r, i, 15, &status)) < 0 || (rc = R_FIXED(r, i, 16, &ch->charged)) < 0 ||
      (rc = R_FIXED(r, i, 17, &ch->ceiling)) < 0 ||
      (rc = R_FIXED(r, i, 19, &ch->credit_limit)) < 0 ||
      (rc = r_u64(r, i, 20, &ch->charge_count)) < 0 ||
      (rc = r_i64(r, i, 21, &ch->first_unclaimed_at)) < 0 ||
      (rc = r_i64(r, i, 22, &ch->created_at)) < 0 || (rc = r_i64(r, i, 23, &ch->updated_at)) < 0)
    goto bad;
  /* The voucher signature: NULL (none yet) or 1..TG_STORE_SIG_MAX bytes. */
  if (PQftype(r, 18) != OID_BYTEA) goto corrupt;
  if (!PQgetisnull(r, i, 18)) {
    int n = PQgetlength(r, i, 18);
    if (n < 1 || n > TG_STORE_SIG_MAX) goto corrupt;
    memcpy(ch->ceiling_sig, PQgetvalue(r, i, 18), (size_t)n);
    ch->ceiling_sig_len = (size_t)n;
    has_sig = 1;
  }
  (void)has_sig;
  if (status < 0 || status > TG_CHANNEL_CLOSED) goto corrupt;
  ch->chain.status = (tg_store_channel_status)status;
  return 0;
corrupt:
  rc = TG_ESTORE_CORRUPT;
bad:
  memset(ch, 0, sizeof(*ch));
  return rc;
}

static int decode_charge(const PGresult *r, int i, tg_store_charge *ch) {
  memset(ch, 0, sizeof(*ch));
  int64_t scheme, settled;
  int rc, has_cum;
  if ((rc = r_i64(r, i, 0, &ch->id)) < 0 ||
      (rc = r_text(r, i, 1, ch->request_id, sizeof(ch->request_id))) < 0 ||
      (rc = R_FIXED(r, i, 2, &ch->payer)) < 0 || (rc = r_i64(r, i, 3, &scheme)) < 0 ||
      (rc = r_text(r, i, 4, ch->route, sizeof(ch->route))) < 0 ||
      (rc = r_text(r, i, 5, ch->model, sizeof(ch->model))) < 0 ||
      (rc = r_u64(r, i, 6, &ch->input_tokens)) < 0 ||
      (rc = r_u64(r, i, 7, &ch->output_tokens)) < 0 || (rc = R_FIXED(r, i, 8, &ch->amount)) < 0 ||
      (rc = r_fixed_opt(r, i, 9, ch->channel_id.b, 32, &ch->has_channel)) < 0 ||
      (rc = r_fixed_opt(r, i, 10, ch->cumulative_after.b, 32, &has_cum)) < 0 ||
      (rc = r_i64(r, i, 11, &ch->created_at)) < 0 || (rc = r_i64(r, i, 12, &settled)) < 0)
    goto bad;
  if (scheme < 0 || scheme > TG_SCHEME_PASS || has_cum != ch->has_channel) {
    rc = TG_ESTORE_CORRUPT;
    goto bad;
  }
  ch->scheme = (tg_store_scheme)scheme;
  ch->settled = settled != 0;
  return 0;
bad:
  memset(ch, 0, sizeof(*ch));
  return rc;
}

static int conn_channel_get(tg__store_conn *c, const tg_hash *id, tg_store_channel *out) {
  PGresult *r;
  params p = {0};
  P_FIXED(&p, id);
  int rc = q(c, S_CH_GET, &p, &r);
  if (rc < 0) return rc;
  rc = PQntuples(r) == 1 ? decode_channel(r, 0, out) : TG_ENOTFOUND;
  PQclear(r);
  return rc;
}

static int conn_channels_iter(tg__store_conn *c, int mode, const tg_address *payer,
                              tg_store_channel_fn fn, void *arg) {
  PGresult *r;
  params p = {0};
  int id = mode == 1 ? S_CH_UNSETTLED : payer ? S_CH_BY_PAYER : S_CH_ALL;
  if (id == S_CH_BY_PAYER) P_FIXED(&p, payer);
  int rc = q(c, id, &p, &r);
  if (rc < 0) return rc;
  tg_store_channel *ch = malloc(sizeof(*ch));
  if (ch == NULL) {
    PQclear(r);
    return TG_ENOMEM;
  }
  int n = PQntuples(r);
  for (int i = 0; i < n && rc == 0; i++)
    if ((rc = decode_channel(r, i, ch)) == 0) rc = fn(arg, ch);
  free(ch);
  PQclear(r);
  return rc;
}

/* Pages through the rows (at most PAGE per round trip) so that a long history is never
 * held in memory at once. */
#define PAGE 1000

static int conn_charges_iter(tg__store_conn *c, const tg_hash *channel_id,
                             const tg_address *payer, int64_t after_id, size_t limit,
                             tg_store_charge_fn fn, void *arg) {
  tg_store_charge ch;
  size_t done = 0;
  for (;;) {
    size_t want = PAGE;
    if (limit && limit - done < want) want = limit - done;
    if (want == 0) return 0;
    params p = {0};
    if (channel_id) P_FIXED(&p, channel_id);
    else P_FIXED(&p, payer);
    p_i64(&p, after_id);
    p_i64(&p, (int64_t)want);
    PGresult *r;
    int rc = q(c, channel_id ? S_CHARGES_BY_CHANNEL : S_CHARGES_BY_PAYER, &p, &r);
    if (rc < 0) return rc;
    int n = PQntuples(r);
    for (int i = 0; i < n; i++) {
      if ((rc = decode_charge(r, i, &ch)) < 0 || (rc = fn(arg, &ch)) != 0) {
        PQclear(r);
        return rc;
      }
      after_id = ch.id;
    }
    PQclear(r);
    done += (size_t)n;
    if ((size_t)n < want) return 0;
  }
}

static int conn_charge_get(tg__store_conn *c, const char *request_id, tg_store_charge *out) {
  PGresult *r;
  params p = {0};
  p_text(&p, request_id);
  int rc = q(c, S_CHARGE_GET, &p, &r);
  if (rc < 0) return rc;
  rc = PQntuples(r) == 1 ? decode_charge(r, 0, out) : TG_ENOTFOUND;
  PQclear(r);
  return rc;
}

static int conn_totals_get(tg__store_conn *c, const tg_address *payer, tg_store_scheme scheme,
                           tg_store_totals *out) {
  PGresult *r;
  out->payer = *payer;
  out->scheme = scheme;
  params p = {0};
  P_FIXED(&p, payer);
  p_i64(&p, (int64_t)scheme);
  int rc = q(c, S_TOTALS_READ, &p, &r);
  if (rc < 0) return rc;
  if (PQntuples(r) == 1 &&
      ((rc = R_FIXED(r, 0, 0, &out->charged)) < 0 || (rc = r_u64(r, 0, 1, &out->count)) < 0))
    memset(out, 0, sizeof(*out));
  PQclear(r);
  return rc;
}

static int decode_exact(PGresult *r, int i, tg_store_exact *out) {
  int64_t status;
  int rc;
  memset(out, 0, sizeof(*out));
  if ((rc = R_FIXED(r, i, 0, &out->token)) < 0 || (rc = R_FIXED(r, i, 1, &out->nonce)) < 0 ||
      (rc = R_FIXED(r, i, 2, &out->payer)) < 0 || (rc = R_FIXED(r, i, 3, &out->to)) < 0 ||
      (rc = R_FIXED(r, i, 4, &out->amount)) < 0 || (rc = r_u64(r, i, 5, &out->valid_after)) < 0 ||
      (rc = r_u64(r, i, 6, &out->valid_before)) < 0 ||
      (rc = r_fixed_opt(r, i, 7, out->tx_hash.b, 32, &out->has_tx)) < 0 ||
      (rc = r_i64(r, i, 8, &status)) < 0 ||
      (rc = r_text(r, i, 9, out->request_id, sizeof(out->request_id))) < 0 ||
      (rc = r_i64(r, i, 10, &out->created_at)) < 0 || (rc = r_i64(r, i, 11, &out->updated_at)) < 0)
    goto done;
  if (status < 0 || status > TG_EXACT_FAILED) rc = TG_ESTORE_CORRUPT;
  out->status = (tg_store_exact_status)status;
done:
  if (rc < 0) memset(out, 0, sizeof(*out));
  return rc;
}

static int conn_exact_iter(tg__store_conn *c, tg_store_exact_fn fn, void *arg) {
  PGresult *r;
  params p = {0};
  int rc = q(c, S_EXACT_ALL, &p, &r);
  if (rc < 0) return rc;
  tg_store_exact e;
  int n = PQntuples(r);
  for (int i = 0; i < n && rc == 0; i++)
    if ((rc = decode_exact(r, i, &e)) == 0) rc = fn(arg, &e);
  PQclear(r);
  return rc;
}

static int conn_exact_get(tg__store_conn *c, const tg_address *token, const tg_address *payer,
                          const tg_hash *nonce, tg_store_exact *out) {
  PGresult *r;
  int64_t status;
  params p = {0};
  P_FIXED(&p, token);
  P_FIXED(&p, nonce);
  P_FIXED(&p, payer);
  int rc = q(c, S_EXACT_GET, &p, &r);
  if (rc < 0) return rc;
  if (PQntuples(r) != 1) {
    PQclear(r);
    return TG_ENOTFOUND;
  }
  if ((rc = R_FIXED(r, 0, 0, &out->token)) < 0 || (rc = R_FIXED(r, 0, 1, &out->nonce)) < 0 ||
      (rc = R_FIXED(r, 0, 2, &out->payer)) < 0 || (rc = R_FIXED(r, 0, 3, &out->to)) < 0 ||
      (rc = R_FIXED(r, 0, 4, &out->amount)) < 0 || (rc = r_u64(r, 0, 5, &out->valid_after)) < 0 ||
      (rc = r_u64(r, 0, 6, &out->valid_before)) < 0 ||
      (rc = r_fixed_opt(r, 0, 7, out->tx_hash.b, 32, &out->has_tx)) < 0 ||
      (rc = r_i64(r, 0, 8, &status)) < 0 ||
      (rc = r_text(r, 0, 9, out->request_id, sizeof(out->request_id))) < 0 ||
      (rc = r_i64(r, 0, 10, &out->created_at)) < 0 || (rc = r_i64(r, 0, 11, &out->updated_at)) < 0)
    goto done;
  if (status < 0 || status > TG_EXACT_FAILED) rc = TG_ESTORE_CORRUPT;
  out->status = (tg_store_exact_status)status;
done:
  PQclear(r);
  if (rc < 0) memset(out, 0, sizeof(*out));
  return rc;
}

static int conn_payid_get(tg__store_conn *c, const char *id, tg_store_payid *out) {
  PGresult *r;
  int64_t status;
  params p = {0};
  p_text(&p, id);
  int rc = q(c, S_PAYID_GET, &p, &r);
  if (rc < 0) return rc;
  if (PQntuples(r) != 1) {
    PQclear(r);
    return TG_ENOTFOUND;
  }
  if ((rc = r_text(r, 0, 0, out->id, sizeof(out->id))) < 0 ||
      (rc = R_FIXED(r, 0, 1, &out->payer)) < 0 || (rc = R_FIXED(r, 0, 2, &out->request_hash)) < 0 ||
      (rc = r_i64(r, 0, 3, &status)) < 0 ||
      (rc = r_text(r, 0, 4, out->response_header, sizeof(out->response_header))) < 0 ||
      (rc = r_text(r, 0, 5, out->request_id, sizeof(out->request_id))) < 0 ||
      (rc = r_i64(r, 0, 6, &out->created_at)) < 0)
    goto done;
  if (status < 0 || status > 999) rc = TG_ESTORE_CORRUPT;
  out->status = (int)status;
done:
  PQclear(r);
  if (rc < 0) memset(out, 0, sizeof(*out));
  return rc;
}

static int conn_pass_get(tg__store_conn *c, const tg_u256 *pass_id, const tg_address *holder,
                         int64_t period_start, tg_store_pass_usage *out) {
  PGresult *r;
  out->pass_id = *pass_id;
  out->holder = *holder;
  out->period_start = period_start;
  params p = {0};
  P_FIXED(&p, pass_id);
  P_FIXED(&p, holder);
  p_i64(&p, period_start);
  int rc = q(c, S_PASS_READ, &p, &r);
  if (rc < 0) return rc;
  if (PQntuples(r) != 1) rc = TG_ENOTFOUND;
  else if ((rc = r_u64(r, 0, 0, &out->calls)) >= 0) rc = r_u64(r, 0, 1, &out->tokens);
  PQclear(r);
  if (rc < 0) memset(out, 0, sizeof(*out));
  return rc;
}

static int conn_session_get(tg__store_conn *c, const tg_hash *token_hash, tg_store_session *out) {
  PGresult *r;
  out->token_hash = *token_hash;
  params p = {0};
  P_FIXED(&p, token_hash);
  int rc = q(c, S_SESSION_GET, &p, &r);
  if (rc < 0) return rc;
  if (PQntuples(r) != 1) rc = TG_ENOTFOUND;
  else if ((rc = r_fixed(r, 0, 0, out->address.b, 20)) >= 0 &&
           (rc = r_i64(r, 0, 1, &out->created_at)) >= 0)
    rc = r_i64(r, 0, 2, &out->expires_at);
  PQclear(r);
  if (rc < 0) memset(out, 0, sizeof(*out));
  return rc;
}

static int conn_run_open_get(tg__store_conn *c, tg_store_settle_run *out) {
  PGresult *r;
  int64_t status;
  int rc = q(c, S_RUN_OPEN, NULL, &r);
  if (rc < 0) return rc;
  if (PQntuples(r) != 1) rc = TG_ENOTFOUND;
  else if ((rc = r_i64(r, 0, 0, &out->id)) >= 0 && (rc = r_i64(r, 0, 1, &out->started_at)) >= 0 &&
           (rc = r_i64(r, 0, 2, &out->finished_at)) >= 0 && (rc = r_i64(r, 0, 3, &status)) >= 0)
    out->status = (tg_store_run_status)status;
  PQclear(r);
  if (rc < 0) memset(out, 0, sizeof(*out));
  return rc;
}

static int conn_run_items(tg__store_conn *c, int64_t run_id, tg_store_item_fn fn, void *arg) {
  PGresult *r;
  params p = {0};
  p_i64(&p, run_id);
  int rc = q(c, S_RUN_ITEMS, &p, &r);
  if (rc < 0) return rc;
  tg_store_settle_item it;
  int n = PQntuples(r);
  for (int i = 0; i < n && rc == 0; i++) {
    int64_t step;
    memset(&it, 0, sizeof(it));
    if ((rc = r_i64(r, i, 0, &it.run_id)) < 0 || (rc = R_FIXED(r, i, 1, &it.channel_id)) < 0 ||
        (rc = R_FIXED(r, i, 2, &it.amount)) < 0 || (rc = r_i64(r, i, 3, &it.through_charge)) < 0 ||
        (rc = r_i64(r, i, 4, &step)) < 0 ||
        (rc = r_fixed_opt(r, i, 5, it.tx_hash.b, 32, &it.has_tx)) < 0 ||
        (rc = r_text(r, i, 6, it.error, sizeof(it.error))) < 0 ||
        (rc = r_i64(r, i, 7, &it.updated_at)) < 0)
      break;
    if (step < 0 || step > TG_SETTLE_DROPPED) {
      rc = TG_ESTORE_CORRUPT;
      break;
    }
    it.step = (tg_store_settle_step)step;
    rc = fn(arg, &it);
  }
  PQclear(r);
  return rc;
}

static int conn_lease_get(tg__store_conn *c, const char *name, tg_store_lease *out) {
  PGresult *r;
  params p = {0};
  p_text(&p, name);
  int rc = q(c, S_LEASE_READ, &p, &r);
  if (rc < 0) return rc;
  if (PQntuples(r) != 1) rc = TG_ENOTFOUND;
  else if ((rc = r_text(r, 0, 0, out->name, sizeof(out->name))) < 0 ||
           (rc = r_text(r, 0, 1, out->holder, sizeof(out->holder))) < 0 ||
           (rc = r_i64(r, 0, 2, &out->expires_at)) < 0)
    memset(out, 0, sizeof(*out));
  PQclear(r);
  return rc;
}

/* ------------------------------------------------------------------------- */
/* The pipelined batch: a whole group commit in one or two round trips. */

/*
 * The generic path (store.c) runs a batch statement by statement: BEGIN, lock_batch, then
 * for each submission SAVEPOINT, each op's reads and writes, RELEASE, and COMMIT; a paid
 * channel call costs about 13 round trips there. conn_batch does the same work with libpq's
 * pipeline mode (libpq >= 14):
 *
 *   round trip 1 (when the batch touches channels, payer totals or holds):
 *     BEGIN; lock and read the batch's channels (id order); create, lock and read its payer
 *     totals (key order); read the holds it ends                           -- one sync
 *   in C: every op decided on those rows, which the transaction now holds locked, by the
 *     same rules as op_voucher / op_charge / op_reserve; a submission that fails is undone in
 *     memory and none of its statements is sent
 *   round trip 2: [BEGIN;] the submissions' inserts and deletes in op order; one UPDATE per
 *     changed channel and payer total; COMMIT                              -- one sync
 *
 * The locks are the generic path's (same rows, same order, same transaction), so batches of
 * several instances still serialize per channel and never deadlock among themselves. On the
 * server an error aborts the rest of the pipeline, COMMIT included, so a batch is never half
 * written: a constraint violation (a duplicate request id, payment id or authorization) rolls
 * back and hands the batch to the generic path, whose savepoints fail that submission alone;
 * a deadlock or serialization failure asks store.c for a rerun; anything else fails the batch
 * as the generic path would. Batches with other ops (settlement, pass usage, channel sync,
 * ...) take the generic path. TG_STORE_PG_PIPELINE=0 turns this off (benchmarks compare).
 */

static uint64_t pg_mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#define FB_BEGIN (-1)
#define FB_COMMIT (-2)

typedef struct {
  tg_hash id;
  int found, dirty, reclaimable;
  tg_address payer;
  int64_t status;
  tg_u256 charged, ceiling, credit_limit, charge_cap, balance, total_claimed, reserved;
  uint64_t withdraw_requested_at;
  int64_t first_unclaimed_at, updated_at;
  uint64_t charges;    /* charges this batch adds */
  const tg_bytes *sig; /* the raised ceiling's signature (in its op); NULL: unchanged */
} fb_channel;

typedef struct {
  totals_key k;
  int dirty;
  tg_u256 charged;
  uint64_t count;
} fb_totals;

typedef struct {
  const char *request_id;
  tg_hash channel_id;
  tg_u256 amount;
  int present;
  int read; /* ended by an op of the batch: its row must be known (read, or remembered) */
} fb_hold;

/*
 * What a writer remembers between batches: the channel and payer-totals rows, and the holds,
 * exactly as its last committed batches left them. A batch whose rows are all remembered is
 * decided on them and sent in ONE round trip, its first statements guards that lock each row
 * only if it still holds the remembered values (S_FAST_CH_GUARD...): another instance's write,
 * the chain follower's sync, a settlement, anything, makes a guard divide by zero, which aborts
 * the pipeline and its COMMIT; the batch then runs again reading its rows (two round trips),
 * and for FB_CACHE_OFF_MS every batch reads (rows contended by other instances). Linear
 * probing in fixed tables; a full table is emptied.
 */
#define FB_CACHE_CH 4096
#define FB_CACHE_TOT 4096
#define FB_CACHE_HOLDS 16384
#define FB_CACHE_OFF_MS 2000

typedef struct {
  int used, present;
  char *request_id; /* owned */
  tg_hash channel_id;
  tg_u256 amount;
} fb_chold;

struct fb_cache {
  fb_channel ch[FB_CACHE_CH]; /* .found: slot used */
  fb_totals tot[FB_CACHE_TOT]; /* .dirty: slot used */
  fb_chold holds[FB_CACHE_HOLDS];
  size_t nch, ntot, nholds;
};

static void fb_cache_free(struct fb_cache *k) {
  if (k == NULL) return;
  for (size_t i = 0; i < FB_CACHE_HOLDS; i++) free(k->holds[i].request_id);
  free(k);
}

static uint32_t fb_hash_str(const char *s, const tg_hash *id) {
  uint32_t h = 2166136261u;
  for (; *s; s++) h = (h ^ (uint8_t)*s) * 16777619u;
  for (int i = 0; i < 4; i++) h = (h ^ id->b[i]) * 16777619u;
  return h;
}

static uint32_t fb_hash_bytes(const uint8_t *b, size_t n) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 16777619u;
  return h;
}

/* The slot of a row: its own, or (insert) a free one; NULL when absent (or the table is full). */
static fb_channel *fb_cache_ch(struct fb_cache *k, const tg_hash *id, int insert) {
  for (uint32_t i = fb_hash_bytes(id->b, 8), n = 0; n < FB_CACHE_CH; i++, n++) {
    fb_channel *e = &k->ch[i & (FB_CACHE_CH - 1)];
    if (!e->found) {
      if (!insert || k->nch >= FB_CACHE_CH / 2) return NULL;
      k->nch++;
      return e;
    }
    if (memcmp(e->id.b, id->b, 32) == 0) return e;
  }
  return NULL;
}

static fb_totals *fb_cache_tot(struct fb_cache *k, const totals_key *key, int insert) {
  for (uint32_t i = fb_hash_bytes(key->payer, 20) + key->scheme, n = 0; n < FB_CACHE_TOT;
       i++, n++) {
    fb_totals *e = &k->tot[i & (FB_CACHE_TOT - 1)];
    if (!e->dirty) {
      if (!insert || k->ntot >= FB_CACHE_TOT / 2) return NULL;
      k->ntot++;
      return e;
    }
    if (cmp_totals(&e->k, key) == 0) return e;
  }
  return NULL;
}

static fb_chold *fb_cache_hold(struct fb_cache *k, const char *rid, const tg_hash *cid,
                               int insert) {
  for (uint32_t i = fb_hash_str(rid, cid), n = 0; n < FB_CACHE_HOLDS; i++, n++) {
    fb_chold *e = &k->holds[i & (FB_CACHE_HOLDS - 1)];
    if (!e->used) {
      if (!insert || k->nholds >= FB_CACHE_HOLDS / 2) return NULL;
      if ((e->request_id = strdup(rid)) == NULL) return NULL;
      e->used = 1;
      e->channel_id = *cid;
      k->nholds++;
      return e;
    }
    if (strcmp(e->request_id, rid) == 0 && memcmp(e->channel_id.b, cid->b, 32) == 0) return e;
  }
  return NULL;
}

enum { FB_UNDO_CH, FB_UNDO_TOT, FB_UNDO_HOLD };

typedef struct {
  int kind;
  void *at;
  union {
    fb_channel ch;
    fb_totals t;
    fb_hold h;
  } old;
} fb_undo;

enum { R_IGNORE, R_CHANNELS, R_TOTALS, R_HOLDS, R_CHARGE_ID, R_LEASE, R_COMMIT, R_GUARD };

typedef struct {
  int id;   /* statement, FB_BEGIN or FB_COMMIT */
  int kind; /* R_: what to do with its result */
  tg_store_op *op;
  params p; /* may point into own and into the op */
  tg_u256 own;
} fb_stmt;

typedef struct {
  tg__store_conn *c;
  fb_channel *ch;
  size_t nch;
  fb_totals *tot;
  size_t ntot;
  fb_hold *holds;
  size_t nholds;
  fb_stmt *st;
  size_t nst, cap_st;
  fb_undo *undo;
  size_t nundo, cap_undo;
  int err;        /* the pipeline's first failure, as a tg_err */
  int constraint; /* ... and it was a constraint violation (SQLSTATE class 23) */
  int handler;    /* ... and it came from decoding a result, not from the server */
  size_t err_at;  /* ... the statement that failed */
  int first_failed; /* the round trip's first statement failed: nothing after it ran */
  int cached;     /* decided on remembered rows, sent with guards (one round trip) */
  fb_channel *guard_ch; /* the remembered rows as the guards compare them (copies) */
  fb_totals *guard_tot;
} fbatch;

static int pipeline_on(void) {
  static int v = -1;
  if (v < 0) {
    const char *e = getenv("TG_STORE_PG_PIPELINE");
    v = !(e && strcmp(e, "0") == 0);
  }
  return v;
}

static int fb_cmp_hold(const void *a, const void *b) {
  const fb_hold *x = a, *y = b;
  int d = strcmp(x->request_id, y->request_id);
  return d ? d : memcmp(x->channel_id.b, y->channel_id.b, 32);
}

static fb_channel *fb_channel_find(fbatch *b, const tg_hash *id) {
  fb_channel *ch = bsearch(id, b->ch, b->nch, sizeof(*b->ch), cmp_hash);
  return ch && ch->found ? ch : NULL;
}

static fb_totals *fb_totals_find(fbatch *b, const tg_address *payer, tg_store_scheme scheme) {
  totals_key k;
  memcpy(k.payer, payer->b, 20);
  k.scheme = (uint8_t)scheme;
  return bsearch(&k, b->tot, b->ntot, sizeof(*b->tot), cmp_totals);
}

static fb_hold *fb_hold_find(fbatch *b, const char *request_id, const tg_hash *channel_id) {
  fb_hold k;
  k.request_id = request_id;
  k.channel_id = *channel_id;
  return bsearch(&k, b->holds, b->nholds, sizeof(*b->holds), fb_cmp_hold);
}

/* Saves a row's state before a submission changes it (restored if the submission fails). */
static void fb_save(fbatch *b, int kind, void *at) {
  assert(b->nundo < b->cap_undo);
  fb_undo *u = &b->undo[b->nundo++];
  u->kind = kind;
  u->at = at;
  if (kind == FB_UNDO_CH) u->old.ch = *(fb_channel *)at;
  else if (kind == FB_UNDO_TOT) u->old.t = *(fb_totals *)at;
  else u->old.h = *(fb_hold *)at;
}

static void fb_restore(fbatch *b, size_t mark) {
  while (b->nundo > mark) {
    fb_undo *u = &b->undo[--b->nundo];
    if (u->kind == FB_UNDO_CH) *(fb_channel *)u->at = u->old.ch;
    else if (u->kind == FB_UNDO_TOT) *(fb_totals *)u->at = u->old.t;
    else *(fb_hold *)u->at = u->old.h;
  }
}

static fb_stmt *fb_stmt_new(fbatch *b, int id, int kind, tg_store_op *op) {
  assert(b->nst < b->cap_st);
  fb_stmt *s = &b->st[b->nst++];
  memset(s, 0, sizeof(*s));
  s->id = id;
  s->kind = kind;
  s->op = op;
  return s;
}

/* Decides one op on the batch's rows; queues its statements. Same rules, same errors, same
 * results as the generic op_* functions. */
static int fb_voucher(fbatch *b, tg_store_op *op) {
  tg_store_op_voucher *o = &op->u.voucher;
  o->out_raised = 0;
  fb_channel *ch = fb_channel_find(b, &o->channel_id);
  if (ch == NULL) return TG_ENOTFOUND;
  if (ch->status == TG_CHANNEL_CLOSED) return TG_ESTORE_CHANNEL_CLOSED;
  if (tg_u256_cmp(&o->max_claimable, &ch->ceiling) <= 0) return 0;
  fb_save(b, FB_UNDO_CH, ch);
  ch->ceiling = o->max_claimable;
  ch->sig = &o->sig;
  u256_add_sat(&ch->charge_cap, &o->max_claimable, &ch->credit_limit);
  ch->updated_at = op->now;
  ch->dirty = 1;
  o->out_raised = 1;
  return 0;
}

static void fb_hold_delete(fbatch *b, fb_hold *h, tg_store_op *op) {
  fb_save(b, FB_UNDO_HOLD, h);
  h->present = 0;
  /* A remembered hold is deleted only if it is still there, with that amount (a guard). */
  fb_stmt *s = fb_stmt_new(b, b->cached ? S_FAST_HOLD_END : S_RES_DELETE,
                           b->cached ? R_GUARD : R_IGNORE, op);
  p_text(&s->p, h->request_id);
  P_FIXED(&s->p, &h->channel_id);
  if (b->cached) {
    s->own = h->amount; /* as remembered: h may be reused by a later op */
    P_FIXED(&s->p, &s->own);
  }
}

static int fb_charge(fbatch *b, tg_store_op *op) {
  tg_store_op_charge *o = &op->u.charge;
  tg_u256 charged, cap;
  charge_outs_clear(o);
  fb_channel *ch = NULL;
  if (o->has_channel) {
    if ((ch = fb_channel_find(b, &o->channel_id)) == NULL) return TG_ENOTFOUND;
    if (memcmp(ch->payer.b, o->payer.b, sizeof(ch->payer.b)) != 0) return TG_ESTORE_CONSTRAINT;
    fb_save(b, FB_UNDO_CH, ch);
    if (o->release_reservation) {
      fb_hold *h = fb_hold_find(b, charge_hold_id(o), &o->channel_id);
      if (h && h->present) {
        u256_sub_floor(&ch->reserved, &h->amount);
        fb_hold_delete(b, h, op);
        o->out_hold_found = 1;
      }
    }
    o->out_reserved = ch->reserved;
    o->out_ceiling = ch->ceiling;
    o->out_balance = ch->balance;
    o->out_withdraw_requested_at = ch->withdraw_requested_at;
    if (ch->status == TG_CHANNEL_CLOSED) return TG_ESTORE_CHANNEL_CLOSED;
    if (tg_u256_add(&charged, &ch->charged, &o->amount) < 0) return TG_ESTORE_LIMIT;
    u256_add_sat(&cap, &ch->ceiling, &o->credit_limit);
    if (tg_u256_cmp(&charged, &cap) > 0) return TG_ESTORE_LIMIT;
  }
  int64_t created = o->created_at ? o->created_at : op->now;
  fb_stmt *s = fb_stmt_new(b, S_CHARGE_INSERT, R_CHARGE_ID, op);
  p_text(&s->p, o->request_id);
  P_FIXED(&s->p, &o->payer);
  p_i64(&s->p, (int64_t)o->scheme);
  p_text(&s->p, o->route);
  p_text(&s->p, o->model);
  p_i64(&s->p, (int64_t)o->input_tokens);
  p_i64(&s->p, (int64_t)o->output_tokens);
  P_FIXED(&s->p, &o->amount);
  if (ch) {
    s->own = charged;
    P_FIXED(&s->p, &o->channel_id);
    P_FIXED(&s->p, &s->own);
  } else {
    p_null(&s->p);
    p_null(&s->p);
  }
  p_i64(&s->p, created);
  if (ch) {
    ch->charged = charged;
    ch->credit_limit = o->credit_limit;
    ch->charge_cap = cap;
    ch->charges++;
    if (ch->first_unclaimed_at == 0 && tg_u256_cmp(&charged, &ch->total_claimed) > 0)
      ch->first_unclaimed_at = created;
    ch->updated_at = op->now;
    ch->dirty = 1;
    o->out_charged = charged;
  }
  fb_totals *t = fb_totals_find(b, &o->payer, o->scheme);
  assert(t != NULL);
  fb_save(b, FB_UNDO_TOT, t);
  if (tg_u256_add(&t->charged, &t->charged, &o->amount) < 0) return TG_EOVERFLOW;
  t->count++;
  t->dirty = 1;
  return 0;
}

/* GENERIC: the op needs what only the generic path does (reclaiming lapsed holds). */
#define FB_GENERIC 1

static int fb_reserve(fbatch *b, tg_store_op *op) {
  tg_store_op_reserve *o = &op->u.reserve;
  o->out_reclaimed = 0;
  fb_channel *ch = fb_channel_find(b, &o->channel_id);
  if (ch == NULL) return TG_ENOTFOUND;
  o->out_charged = ch->charged;
  o->out_ceiling = ch->ceiling;
  o->out_balance = ch->balance;
  o->out_total_claimed = ch->total_claimed;
  o->out_withdraw_requested_at = ch->withdraw_requested_at;
  o->out_reserved = ch->reserved;
  if (op->kind == TG_STORE_OP_UNRESERVE) {
    fb_hold *h = fb_hold_find(b, o->request_id, &o->channel_id);
    if (h == NULL || !h->present) return 0;
    int held = !tg_u256_is_zero(&h->amount);
    if (held) {
      fb_save(b, FB_UNDO_CH, ch);
      u256_sub_floor(&ch->reserved, &h->amount);
      ch->dirty = 1;
      o->out_reserved = ch->reserved;
    }
    fb_hold_delete(b, h, op);
    return 0;
  }
  if (ch->status == TG_CHANNEL_CLOSED) return TG_ESTORE_CHANNEL_CLOSED;
  if (ch->status == TG_CHANNEL_WITHDRAWING || ch->withdraw_requested_at != 0)
    return TG_ECHANNEL_WITHDRAWING;
  tg_u256 limit, need, reserved = ch->reserved;
  const tg_u256 *base = tg_u256_cmp(&ch->ceiling, &ch->balance) < 0 ? &ch->ceiling : &ch->balance;
  u256_add_sat(&limit, base, &o->credit_limit);
  if (tg_u256_add(&need, &ch->charged, &reserved) < 0 ||
      tg_u256_add(&need, &need, &o->amount) < 0 || tg_u256_cmp(&need, &limit) > 0)
    return ch->reclaimable ? FB_GENERIC : TG_ECHANNEL_SHORT;
  if (tg_u256_add(&reserved, &reserved, &o->amount) < 0) return TG_ECHANNEL_SHORT;
  if (o->ttl_ms > INT64_MAX - op->now) return TG_ERANGE;
  fb_hold *h = fb_hold_find(b, o->request_id, &o->channel_id);
  assert(h != NULL);
  fb_save(b, FB_UNDO_HOLD, h);
  fb_save(b, FB_UNDO_CH, ch);
  h->present = 1; /* one already there: the insert fails on the server (generic path) */
  h->amount = o->amount;
  fb_stmt *s = fb_stmt_new(b, S_FAST_HOLD_INSERT, R_IGNORE, op);
  p_text(&s->p, o->request_id);
  P_FIXED(&s->p, &o->channel_id);
  p_text(&s->p, o->instance);
  P_FIXED(&s->p, &o->amount);
  p_i64(&s->p, op->now + o->ttl_ms);
  p_i64(&s->p, op->now);
  ch->reserved = reserved;
  ch->dirty = 1;
  o->out_reserved = reserved;
  return 0;
}

static int fb_other(fbatch *b, tg_store_op *op) {
  fb_stmt *s;
  switch (op->kind) {
  case TG_STORE_OP_PAYID_PUT: {
    tg_store_op_payid *o = &op->u.payid;
    s = fb_stmt_new(b, S_PAYID_INSERT, R_IGNORE, op);
    p_text(&s->p, o->id);
    P_FIXED(&s->p, &o->payer);
    P_FIXED(&s->p, &o->request_hash);
    p_i64(&s->p, o->status);
    p_text(&s->p, o->response_header);
    p_text(&s->p, o->request_id);
    p_i64(&s->p, op->now);
    return 0;
  }
  case TG_STORE_OP_EXACT_PUT: {
    tg_store_op_exact *o = &op->u.exact;
    s = fb_stmt_new(b, S_EXACT_INSERT, R_IGNORE, op);
    P_FIXED(&s->p, &o->token);
    P_FIXED(&s->p, &o->nonce);
    P_FIXED(&s->p, &o->payer);
    P_FIXED(&s->p, &o->to);
    P_FIXED(&s->p, &o->amount);
    p_i64(&s->p, (int64_t)o->valid_after);
    p_i64(&s->p, (int64_t)o->valid_before);
    p_opt_hash(&s->p, o->has_tx, &o->tx_hash);
    p_i64(&s->p, (int64_t)o->status);
    p_text(&s->p, o->request_id);
    p_i64(&s->p, op->now);
    return 0;
  }
  case TG_STORE_OP_LEASE_ACQUIRE:
  case TG_STORE_OP_LEASE_RELEASE: {
    tg_store_op_lease *o = &op->u.lease;
    if (op->kind == TG_STORE_OP_LEASE_RELEASE) {
      s = fb_stmt_new(b, S_LEASE_DELETE, R_IGNORE, op);
      p_text(&s->p, o->name);
      p_text(&s->p, o->holder);
      return 0;
    }
    if (o->ttl_ms > INT64_MAX - op->now) return TG_ERANGE;
    o->out_expires_at = op->now + o->ttl_ms;
    s = fb_stmt_new(b, S_LEASE_ACQUIRE, R_LEASE, op);
    p_text(&s->p, o->name);
    p_text(&s->p, o->holder);
    p_i64(&s->p, o->out_expires_at);
    p_i64(&s->p, op->now);
    return 0;
  }
  default:
    return TG_EINVAL; /* fb_eligible let it through: a bug */
  }
}

/* The ops the pipelined batch decides in C. A lease acquisition is decided by the server (a
 * row or none), so it must be its submission's only op: nothing else to undo. */
static int fb_eligible(const tg__store_sub *subs, size_t n) {
  for (size_t i = 0; i < n; i++) {
    for (size_t j = 0; j < subs[i].n; j++) {
      switch (subs[i].ops[j].kind) {
      case TG_STORE_OP_VOUCHER:
      case TG_STORE_OP_CHARGE:
      case TG_STORE_OP_RESERVE:
      case TG_STORE_OP_UNRESERVE:
      case TG_STORE_OP_PAYID_PUT:
      case TG_STORE_OP_EXACT_PUT:
        break;
      case TG_STORE_OP_LEASE_ACQUIRE:
      case TG_STORE_OP_LEASE_RELEASE:
        if (subs[i].n != 1) return 0;
        break;
      default:
        return 0;
      }
    }
  }
  return 1;
}

/* ---- sending and reading ---- */

static int fb_send(fbatch *b, fb_stmt *s) {
  PGconn *pg = b->c->pg;
  int ok;
  if (s->id == FB_BEGIN || s->id == FB_COMMIT) {
    ok = PQsendQueryParams(pg, s->id == FB_BEGIN ? "BEGIN" : "COMMIT", 0, NULL, NULL, NULL,
                           NULL, 1);
  } else {
    char name[16];
    snprintf(name, sizeof(name), "tg%d", s->id);
    ok = PQsendQueryPrepared(pg, name, s->p.n, s->p.v, s->p.len, s->p.fmt, 1);
  }
  return ok ? 0 : TG_ESTORE;
}

static int fb_on_channels(fbatch *b, const PGresult *r) {
  int n = PQntuples(r), rc = 0;
  for (int i = 0; i < n && rc == 0; i++) {
    tg_hash id;
    if ((rc = R_FIXED(r, i, 0, &id)) < 0) break;
    fb_channel *ch = bsearch(&id, b->ch, b->nch, sizeof(*b->ch), cmp_hash);
    if (ch == NULL || ch->found) return TG_ESTORE_CORRUPT;
    if ((rc = R_FIXED(r, i, 1, &ch->payer)) < 0 || (rc = r_i64(r, i, 2, &ch->status)) < 0 ||
        (rc = R_FIXED(r, i, 3, &ch->charged)) < 0 || (rc = R_FIXED(r, i, 4, &ch->ceiling)) < 0 ||
        (rc = R_FIXED(r, i, 5, &ch->credit_limit)) < 0 ||
        (rc = R_FIXED(r, i, 6, &ch->charge_cap)) < 0 ||
        (rc = R_FIXED(r, i, 7, &ch->balance)) < 0 ||
        (rc = R_FIXED(r, i, 8, &ch->total_claimed)) < 0 ||
        (rc = r_u64(r, i, 9, &ch->withdraw_requested_at)) < 0 ||
        (rc = R_FIXED(r, i, 10, &ch->reserved)) < 0 ||
        (rc = r_i64(r, i, 11, &ch->first_unclaimed_at)) < 0 ||
        (rc = r_i64(r, i, 12, &ch->updated_at)) < 0)
      break;
    if (PQftype(r, 13) != OID_BOOL || PQgetisnull(r, i, 13) || PQgetlength(r, i, 13) != 1)
      return TG_ESTORE_CORRUPT;
    ch->reclaimable = PQgetvalue(r, i, 13)[0] != 0;
    if (ch->status < 0 || ch->status > TG_CHANNEL_CLOSED) return TG_ESTORE_CORRUPT;
    ch->found = 1;
  }
  return rc;
}

static int fb_on_totals(fbatch *b, const PGresult *r) {
  int n = PQntuples(r), rc = 0;
  for (int i = 0; i < n && rc == 0; i++) {
    tg_address payer;
    int64_t scheme;
    if ((rc = R_FIXED(r, i, 0, &payer)) < 0 || (rc = r_i64(r, i, 1, &scheme)) < 0) break;
    if (scheme < 0 || scheme > TG_SCHEME_PASS) return TG_ESTORE_CORRUPT;
    fb_totals *t = fb_totals_find(b, &payer, (tg_store_scheme)scheme);
    if (t == NULL) return TG_ESTORE_CORRUPT;
    if ((rc = R_FIXED(r, i, 2, &t->charged)) < 0 || (rc = r_u64(r, i, 3, &t->count)) < 0) break;
  }
  /* Every key was created by the statement before (ON CONFLICT DO NOTHING): all must be here. */
  return rc < 0 ? rc : (size_t)n == b->ntot ? 0 : TG_ESTORE;
}

static int fb_on_holds(fbatch *b, const PGresult *r) {
  int n = PQntuples(r), rc = 0;
  char rid[TG_STORE_REQUEST_ID_MAX + 1];
  for (int i = 0; i < n && rc == 0; i++) {
    tg_hash cid;
    if ((rc = r_text(r, i, 0, rid, sizeof(rid))) < 0 || (rc = R_FIXED(r, i, 1, &cid)) < 0) break;
    fb_hold *h = fb_hold_find(b, rid, &cid);
    if (h == NULL) continue; /* the request's hold is on another channel: not this op's */
    if ((rc = R_FIXED(r, i, 2, &h->amount)) < 0) break;
    h->present = 1;
  }
  return rc;
}

static int fb_handle(fbatch *b, fb_stmt *s, const PGresult *r) {
  switch (s->kind) {
  case R_CHANNELS:
    return fb_on_channels(b, r);
  case R_TOTALS:
    return fb_on_totals(b, r);
  case R_HOLDS:
    return fb_on_holds(b, r);
  case R_CHARGE_ID:
    return PQntuples(r) == 1 ? r_i64(r, 0, 0, &s->op->u.charge.out_id) : TG_ESTORE;
  case R_LEASE:
    if (PQntuples(r) != 1) {
      s->op->u.lease.out_expires_at = 0;
      s->op->err = TG_ESTORE_LEASE;
    }
    return 0;
  case R_COMMIT:
    return strcmp(PQcmdStatus((PGresult *)r), "COMMIT") == 0 ? 0 : TG_ESTORE;
  default:
    return 0;
  }
}

/* Sends statements [from, nst) and a sync, then reads every result: one round trip. Sets
 * b->err (and b->constraint / b->handler) on the first failure. Returns 0, or TG_ESTORE when
 * the connection broke (the results could not all be read). */
static int fb_round_trip(fbatch *b, size_t from) {
  tg__store_conn *c = b->c;
  b->err = b->constraint = b->handler = b->first_failed = 0;
  for (size_t i = from; i < b->nst; i++)
    if (fb_send(b, &b->st[i]) < 0) return TG_ESTORE;
  if (!PQpipelineSync(c->pg)) return TG_ESTORE;
  c->round_trips++;
  for (size_t i = from; i < b->nst; i++) {
    PGresult *r = PQgetResult(c->pg);
    if (r == NULL) return TG_ESTORE;
    ExecStatusType t = PQresultStatus(r);
    if (t == PGRES_COMMAND_OK || t == PGRES_TUPLES_OK) {
      if (b->err == 0 && (b->err = fb_handle(b, &b->st[i], r)) < 0) b->handler = 1;
    } else if (t != PGRES_PIPELINE_ABORTED && b->err == 0) {
      const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
      b->first_failed = i == from;
      b->constraint = state && strncmp(state, "23", 2) == 0;
      b->err_at = i;
      b->err = map_res(c, r);
    }
    PQclear(r);
    if (PQstatus(c->pg) != CONNECTION_OK) return TG_ESTORE;
    /* Each statement's results end with a NULL. */
    if ((r = PQgetResult(c->pg)) != NULL) {
      PQclear(r);
      return TG_ESTORE;
    }
  }
  PGresult *r = PQgetResult(c->pg);
  int ok = r && PQresultStatus(r) == PGRES_PIPELINE_SYNC;
  PQclear(r);
  return ok ? 0 : TG_ESTORE;
}

static void fb_free(fbatch *b) {
  free(b->guard_ch);
  free(b->guard_tot);
  free(b->ch);
  free(b->tot);
  free(b->holds);
  free(b->st);
  free(b->undo);
}

/* Builds the keys of the batch (sorted, unique) and the round-trip-1 statements. */
static int fb_prepare_keys(fbatch *b, tg__store_sub *subs, size_t nsubs, size_t nops,
                           int64_t now, char **lists, int reads) {
  size_t nch = 0, ntot = 0, nholds = 0, nres = 0, hold_reads = 0, hold_bytes = 3;
  b->ch = calloc(nops ? nops : 1, sizeof(*b->ch));
  b->tot = calloc(nops ? nops : 1, sizeof(*b->tot));
  b->holds = calloc(nops ? nops : 1, sizeof(*b->holds));
  tg_hash *res_ids = calloc(nops ? nops : 1, sizeof(tg_hash));
  if (!b->ch || !b->tot || !b->holds || !res_ids) {
    free(res_ids);
    return TG_ENOMEM;
  }
  for (size_t i = 0; i < nsubs; i++) {
    for (size_t j = 0; j < subs[i].n; j++) {
      tg_store_op *op = &subs[i].ops[j];
      switch (op->kind) {
      case TG_STORE_OP_VOUCHER:
        b->ch[nch++].id = op->u.voucher.channel_id;
        break;
      case TG_STORE_OP_CHARGE:
        if (op->u.charge.has_channel) {
          b->ch[nch++].id = op->u.charge.channel_id;
          if (op->u.charge.release_reservation) {
            b->holds[nholds].request_id = charge_hold_id(&op->u.charge);
            b->holds[nholds].read = 1;
            b->holds[nholds++].channel_id = op->u.charge.channel_id;
            hold_reads++;
            hold_bytes += 2 * strlen(charge_hold_id(&op->u.charge)) + 3;
          }
        }
        memcpy(b->tot[ntot].k.payer, op->u.charge.payer.b, 20);
        b->tot[ntot++].k.scheme = (uint8_t)op->u.charge.scheme;
        break;
      case TG_STORE_OP_RESERVE:
      case TG_STORE_OP_UNRESERVE:
        b->ch[nch++].id = op->u.reserve.channel_id;
        b->holds[nholds].request_id = op->u.reserve.request_id;
        b->holds[nholds].read = op->kind == TG_STORE_OP_UNRESERVE;
        b->holds[nholds++].channel_id = op->u.reserve.channel_id;
        if (op->kind == TG_STORE_OP_RESERVE) {
          res_ids[nres++] = op->u.reserve.channel_id;
        } else {
          hold_reads++;
          hold_bytes += 2 * strlen(op->u.reserve.request_id) + 3;
        }
        break;
      default:
        break;
      }
    }
  }
  qsort(b->ch, nch, sizeof(*b->ch), cmp_hash);
  qsort(b->tot, ntot, sizeof(*b->tot), cmp_totals);
  qsort(b->holds, nholds, sizeof(*b->holds), fb_cmp_hold);
  qsort(res_ids, nres, sizeof(tg_hash), cmp_hash);
  size_t k = 0;
  for (size_t i = 0; i < nch; i++)
    if (k == 0 || memcmp(b->ch[i].id.b, b->ch[k - 1].id.b, 32) != 0) b->ch[k++] = b->ch[i];
  b->nch = k;
  k = 0;
  for (size_t i = 0; i < ntot; i++)
    if (k == 0 || cmp_totals(&b->tot[i], &b->tot[k - 1]) != 0) b->tot[k++] = b->tot[i];
  b->ntot = k;
  k = 0;
  for (size_t i = 0; i < nholds; i++) {
    if (k > 0 && fb_cmp_hold(&b->holds[i], &b->holds[k - 1]) == 0) {
      b->holds[k - 1].read |= b->holds[i].read;
      continue;
    }
    b->holds[k++] = b->holds[i];
  }
  b->nholds = k;

  /* lists[0]: channel ids; lists[1]: channels of a RESERVE; lists[2]: totals keys; lists[3]:
   * request ids whose holds end here (a text[] literal). */
  lists[0] = malloc(b->nch * 65 + 1);
  lists[1] = malloc(nres * 65 + 1);
  lists[2] = malloc(b->ntot * 44 + 1);
  lists[3] = malloc(hold_bytes + 1);
  if (!lists[0] || !lists[1] || !lists[2] || !lists[3]) {
    free(res_ids);
    return TG_ENOMEM;
  }
  size_t len = 0;
  for (size_t i = 0; i < b->nch; i++) {
    if (len) lists[0][len++] = ',';
    hex_put(lists[0] + len, b->ch[i].id.b, 32);
    len += 64;
  }
  lists[0][len] = 0;
  len = 0;
  for (size_t i = 0; i < nres; i++) {
    if (i > 0 && memcmp(res_ids[i].b, res_ids[i - 1].b, 32) == 0) continue;
    if (len) lists[1][len++] = ',';
    hex_put(lists[1] + len, res_ids[i].b, 32);
    len += 64;
  }
  lists[1][len] = 0;
  free(res_ids);
  len = 0;
  for (size_t i = 0; i < b->ntot; i++) {
    if (len) lists[2][len++] = ',';
    hex_put(lists[2] + len, b->tot[i].k.payer, 20);
    len += 40;
    lists[2][len++] = ':';
    lists[2][len++] = (char)('0' + b->tot[i].k.scheme);
  }
  lists[2][len] = 0;
  len = 0;
  lists[3][0] = 0;
  for (size_t i = 0; i < nsubs; i++) {
    for (size_t j = 0; j < subs[i].n; j++) {
      const tg_store_op *op = &subs[i].ops[j];
      const char *rid = NULL;
      if (op->kind == TG_STORE_OP_CHARGE && op->u.charge.has_channel &&
          op->u.charge.release_reservation)
        rid = charge_hold_id(&op->u.charge);
      else if (op->kind == TG_STORE_OP_UNRESERVE)
        rid = op->u.reserve.request_id;
      if (rid == NULL) continue;
      char sep = len ? ',' : '{';
      lists[3][len++] = sep;
      lists[3][len++] = '"';
      for (const char *p = rid; *p; p++) {
        if (*p == '"' || *p == '\\') lists[3][len++] = '\\';
        lists[3][len++] = *p;
      }
      lists[3][len++] = '"';
    }
  }
  if (len) {
    lists[3][len++] = '}';
    lists[3][len] = 0;
  }

  /* Round trip 1's statements (only what the batch needs). */
  b->cap_st = 2 * nops + 2 * (b->nch + b->ntot) + 8;
  b->st = calloc(b->cap_st, sizeof(*b->st));
  b->cap_undo = 0;
  for (size_t i = 0; i < nsubs; i++)
    if (3 * subs[i].n > b->cap_undo) b->cap_undo = 3 * subs[i].n;
  b->undo = calloc(b->cap_undo ? b->cap_undo : 1, sizeof(*b->undo));
  if (!b->st || !b->undo) return TG_ENOMEM;
  if (!reads || (b->nch == 0 && b->ntot == 0 && hold_reads == 0)) return 0;
  fb_stmt_new(b, FB_BEGIN, R_IGNORE, NULL);
  fb_stmt *s;
  if (b->nch) {
    s = fb_stmt_new(b, S_FAST_CHANNELS, R_CHANNELS, NULL);
    p_text(&s->p, lists[0]);
    p_text(&s->p, lists[1]);
    p_i64(&s->p, now);
  }
  if (b->ntot) {
    s = fb_stmt_new(b, S_TOTALS_ENSURE, R_IGNORE, NULL);
    p_text(&s->p, lists[2]);
    s = fb_stmt_new(b, S_FAST_TOTALS, R_TOTALS, NULL);
    p_text(&s->p, lists[2]);
  }
  if (hold_reads) {
    s = fb_stmt_new(b, S_FAST_HOLDS, R_HOLDS, NULL);
    p_text(&s->p, lists[3]);
  }
  return 0;
}

/* Leaves pipeline mode after a round trip; rolls back when asked. A connection that broke,
 * or whose results could not all be read, is replaced (its transaction dies with it). */
static void fb_end(tg__store_conn *c, int rollback) {
  if (PQstatus(c->pg) != CONNECTION_OK ||
      (PQpipelineStatus(c->pg) != PQ_PIPELINE_OFF && !PQexitPipelineMode(c->pg))) {
    (void)reconnect(c);
    return;
  }
  if (rollback) tx_rollback(c);
}

/* Copies the batch's rows from the writer's memory; 0 when one is not remembered. */
static int fb_from_cache(fbatch *b) {
  struct fb_cache *k = b->c->cache;
  for (size_t i = 0; i < b->nch; i++) {
    fb_channel *e = fb_cache_ch(k, &b->ch[i].id, 0);
    if (e == NULL) return 0;
    b->ch[i] = *e;
    b->ch[i].reclaimable = 1; /* unknown: a hold refused here is decided with the rows read */
  }
  for (size_t i = 0; i < b->ntot; i++) {
    fb_totals *e = fb_cache_tot(k, &b->tot[i].k, 0);
    if (e == NULL) return 0;
    b->tot[i].charged = e->charged;
    b->tot[i].count = e->count;
  }
  for (size_t i = 0; i < b->nholds; i++) {
    if (!b->holds[i].read) continue;
    fb_chold *e = fb_cache_hold(k, b->holds[i].request_id, &b->holds[i].channel_id, 0);
    if (e == NULL || !e->present) return 0;
    b->holds[i].present = 1;
    b->holds[i].amount = e->amount;
  }
  return 1;
}

/* After a commit: the batch's rows, as it left them, are what the writer remembers. */
static void fb_to_cache(fbatch *b) {
  struct fb_cache *k = b->c->cache;
  if (k == NULL) return;
  for (int pass = 0; pass < 2; pass++) {
    int full = 0;
    for (size_t i = 0; i < b->nch && !full; i++) {
      if (!b->ch[i].found) continue; /* no such channel: nothing to remember */
      fb_channel *e = fb_cache_ch(k, &b->ch[i].id, 1);
      if (e == NULL) {
        full = 1;
        break;
      }
      *e = b->ch[i];
      e->found = 1;
      e->dirty = e->reclaimable = 0;
      e->charges = 0;
      e->sig = NULL;
    }
    for (size_t i = 0; i < b->ntot && !full; i++) {
      fb_totals *e = fb_cache_tot(k, &b->tot[i].k, 1);
      if (e == NULL) {
        full = 1;
        break;
      }
      e->k = b->tot[i].k;
      e->charged = b->tot[i].charged;
      e->count = b->tot[i].count;
      e->dirty = 1;
    }
    for (size_t i = 0; i < b->nholds && !full; i++) {
      fb_hold *h = &b->holds[i];
      fb_chold *e = fb_cache_hold(k, h->request_id, &h->channel_id, h->present);
      if (e == NULL) {
        full = h->present;
        continue;
      }
      e->present = h->present;
      e->amount = h->amount;
    }
    if (!full) return;
    /* A table is full: start again from this batch's rows alone. */
    for (size_t i = 0; i < FB_CACHE_HOLDS; i++) free(k->holds[i].request_id);
    memset(k, 0, sizeof(*k));
  }
}

#define FB_AGAIN 3

/* One try of a batch: on remembered rows (cached: one round trip, or FB_AGAIN when a row is
 * not remembered or a guard failed, with nothing done) or on rows read (two round trips). */
static int fb_attempt(tg__store_conn *c, tg__store_sub *subs, size_t nsubs, int64_t now,
                      uint64_t *commit_ns, int cached) {
  *commit_ns = 0;
  size_t nops = 0;
  for (size_t i = 0; i < nsubs; i++) {
    nops += subs[i].n;
    subs[i].err = 0;
    for (size_t j = 0; j < subs[i].n; j++) {
      subs[i].ops[j].err = 0;
      if (subs[i].ops[j].now == 0) subs[i].ops[j].now = now;
    }
  }
  fbatch b;
  memset(&b, 0, sizeof(b));
  b.c = c;
  char *lists[4] = {NULL, NULL, NULL, NULL};
  int ret = TG__BATCH_GENERIC, rc;
  if (fb_prepare_keys(&b, subs, nsubs, nops, now, lists, !cached) < 0) goto out;
  if (cached) {
    if (!fb_from_cache(&b)) {
      ret = FB_AGAIN;
      goto out;
    }
    b.cached = 1;
  }
  if (!PQenterPipelineMode(c->pg)) goto out;

  /* Round trip 1: BEGIN and the rows, locked. */
  int begun = b.nst > 0;
  if (begun) {
    if ((rc = fb_round_trip(&b, 0)) < 0 || b.err < 0) {
      int dead = rc < 0 || PQstatus(c->pg) != CONNECTION_OK;
      fb_end(c, 1);
      if (dead) {
        /* Nothing ran, or nothing that matters: the generic path begins afresh (and
         * reconnects a connection found dead meanwhile). */
        ret = TG__BATCH_GENERIC;
      } else if (c->retry) {
        ret = TG__BATCH_RETRY;
      } else if (b.handler) {
        ret = TG__BATCH_GENERIC; /* a bad row: let the generic path fail only its ops */
      } else {
        for (size_t i = 0; i < nsubs; i++) subs[i].err = b.err; /* e.g. a lock timeout */
        ret = TG__BATCH_DONE;
      }
      goto out;
    }
  }

  /* Every op, decided in C on the locked (or remembered and guarded) rows. */
  size_t from = b.nst;
  if (!begun) fb_stmt_new(&b, FB_BEGIN, R_IGNORE, NULL);
  if (cached) {
    /* The guards first, in lock_batch's order: channels by id, then totals by key. Their
     * parameters point into copies: the ops below change the rows. */
    b.guard_ch = malloc((b.nch ? b.nch : 1) * sizeof(*b.guard_ch));
    b.guard_tot = malloc((b.ntot ? b.ntot : 1) * sizeof(*b.guard_tot));
    if (b.guard_ch == NULL || b.guard_tot == NULL) {
      fb_end(c, 0);
      ret = FB_AGAIN;
      goto out;
    }
    memcpy(b.guard_ch, b.ch, b.nch * sizeof(*b.ch));
    memcpy(b.guard_tot, b.tot, b.ntot * sizeof(*b.tot));
    for (size_t i = 0; i < b.nch; i++) {
      fb_channel *ch = &b.guard_ch[i];
      fb_stmt *s = fb_stmt_new(&b, S_FAST_CH_GUARD, R_GUARD, NULL);
      P_FIXED(&s->p, &ch->id);
      P_FIXED(&s->p, &ch->payer);
      p_i64(&s->p, ch->status);
      P_FIXED(&s->p, &ch->charged);
      P_FIXED(&s->p, &ch->ceiling);
      P_FIXED(&s->p, &ch->credit_limit);
      P_FIXED(&s->p, &ch->charge_cap);
      P_FIXED(&s->p, &ch->balance);
      P_FIXED(&s->p, &ch->total_claimed);
      p_i64(&s->p, (int64_t)ch->withdraw_requested_at);
      P_FIXED(&s->p, &ch->reserved);
      p_i64(&s->p, ch->first_unclaimed_at);
      p_i64(&s->p, ch->updated_at);
    }
    for (size_t i = 0; i < b.ntot; i++) {
      fb_totals *t = &b.guard_tot[i];
      fb_stmt *s = fb_stmt_new(&b, S_FAST_TOT_GUARD, R_GUARD, NULL);
      p_bin(&s->p, t->k.payer, 20);
      p_i64(&s->p, (int64_t)t->k.scheme);
      P_FIXED(&s->p, &t->charged);
      p_i64(&s->p, (int64_t)t->count);
    }
  }
  for (size_t i = 0; i < nsubs; i++) {
    size_t smark = b.nst;
    b.nundo = 0;
    for (size_t j = 0; j < subs[i].n && subs[i].err == 0; j++) {
      tg_store_op *op = &subs[i].ops[j];
      switch (op->kind) {
      case TG_STORE_OP_VOUCHER:
        rc = fb_voucher(&b, op);
        break;
      case TG_STORE_OP_CHARGE:
        rc = fb_charge(&b, op);
        break;
      case TG_STORE_OP_RESERVE:
      case TG_STORE_OP_UNRESERVE:
        rc = fb_reserve(&b, op);
        break;
      default:
        rc = fb_other(&b, op);
        break;
      }
      if (rc == FB_GENERIC) {
        fb_end(c, !cached); /* cached: nothing was sent yet */
        ret = cached ? FB_AGAIN : TG__BATCH_GENERIC;
        goto out;
      }
      op->err = rc;
      if (rc < 0) subs[i].err = rc;
    }
    if (subs[i].err < 0) {
      fb_restore(&b, 0);
      b.nst = smark;
    }
  }
  for (size_t i = 0; i < b.nch; i++) {
    fb_channel *ch = &b.ch[i];
    if (!ch->dirty) continue;
    fb_stmt *s = fb_stmt_new(&b, S_FAST_CH_SET, R_IGNORE, NULL);
    P_FIXED(&s->p, &ch->id);
    P_FIXED(&s->p, &ch->ceiling);
    if (ch->sig) p_bin(&s->p, ch->sig->ptr, ch->sig->len);
    else p_null(&s->p);
    P_FIXED(&s->p, &ch->charge_cap);
    P_FIXED(&s->p, &ch->charged);
    P_FIXED(&s->p, &ch->credit_limit);
    P_FIXED(&s->p, &ch->reserved);
    p_i64(&s->p, (int64_t)ch->charges);
    p_i64(&s->p, ch->first_unclaimed_at);
    p_i64(&s->p, ch->updated_at);
  }
  for (size_t i = 0; i < b.ntot; i++) {
    fb_totals *t = &b.tot[i];
    if (!t->dirty) continue;
    if (t->count > (uint64_t)INT64_MAX) {
      fb_end(c, 1);
      goto out; /* the generic path reports what it finds */
    }
    fb_stmt *s = fb_stmt_new(&b, S_TOTALS_SET, R_IGNORE, NULL);
    p_bin(&s->p, t->k.payer, 20);
    p_i64(&s->p, (int64_t)t->k.scheme);
    P_FIXED(&s->p, &t->charged);
    p_i64(&s->p, (int64_t)t->count);
  }
  fb_stmt_new(&b, FB_COMMIT, R_COMMIT, NULL);

  /* Round trip 2: the writes and COMMIT. */
  uint64_t t0 = pg_mono_ns();
  rc = fb_round_trip(&b, from);
  *commit_ns = pg_mono_ns() - t0;
  if (rc == 0 && b.err == 0) {
    fb_end(c, 0);
    for (size_t i = 0; i < nsubs; i++) /* a lease not obtained fails its submission alone */
      if (subs[i].err == 0 && subs[i].n == 1 && subs[i].ops[0].err < 0)
        subs[i].err = subs[i].ops[0].err;
    fb_to_cache(&b);
    ret = TG__BATCH_DONE;
    goto out;
  }
  int dead = rc < 0 || PQstatus(c->pg) != CONNECTION_OK;
  fb_end(c, 1);
  if (dead && cached && b.first_failed) {
    /* The connection was dead before BEGIN ran (an error answered it: nothing after it ran,
     * COMMIT included): run the batch again, on a new connection. */
    ret = FB_AGAIN;
  } else if (!dead && cached && !b.handler && b.st[b.err_at].kind == R_GUARD) {
    /* A remembered row changed (another instance, the chain follower, a settlement): read
     * the rows, and keep reading them for a while. */
    c->cache_off_until = now + FB_CACHE_OFF_MS;
    fb_cache_free(c->cache);
    c->cache = NULL;
    ret = FB_AGAIN;
  } else if (!dead && c->retry) {
    ret = TG__BATCH_RETRY;
  } else if (!dead && b.constraint) {
    ret = TG__BATCH_GENERIC; /* rolled back: the generic path finds the culprit */
  } else {
    /* A lost connection (a COMMIT in doubt), a lock timeout, a bad result: nothing is
     * reported durable. */
    int err = dead ? TG_ESTORE : b.err;
    for (size_t i = 0; i < nsubs; i++)
      if (subs[i].err == 0) subs[i].err = err;
    ret = TG__BATCH_DONE;
  }
out:
  if (ret == TG__BATCH_GENERIC || ret == FB_AGAIN)
    for (size_t i = 0; i < nsubs; i++) subs[i].err = 0;
  for (int i = 0; i < 4; i++) free(lists[i]);
  fb_free(&b);
  return ret;
}


/* Prepares the pipelined batch's statements on this session (once; again after a reconnect),
 * outside the pipeline. */
static int fb_prepare_stmts(tg__store_conn *c) {
  static const int stmts[] = {S_FAST_CHANNELS, S_TOTALS_ENSURE,  S_FAST_TOTALS,   S_FAST_HOLDS,
                              S_RES_DELETE,    S_FAST_HOLD_INSERT, S_CHARGE_INSERT, S_FAST_CH_SET,
                              S_TOTALS_SET,    S_PAYID_INSERT,   S_EXACT_INSERT,  S_LEASE_ACQUIRE,
                              S_LEASE_DELETE,  S_FAST_CH_GUARD,  S_FAST_TOT_GUARD, S_FAST_HOLD_END};
  /* Statements are prepared once per session, outside the pipeline. */
  for (size_t i = 0; i < sizeof(stmts) / sizeof(stmts[0]); i++) {
    int id = stmts[i];
    if (c->prepared[id]) continue;
    char name[16];
    snprintf(name, sizeof(name), "tg%d", id);
    c->round_trips++;
    PGresult *r = PQprepare(c->pg, name, sql_text[id], 0, NULL);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok) (void)map_res(c, r);
    PQclear(r);
    if (!ok) return TG_ESTORE;
    c->prepared[id] = 1;
  }
  return 0;
}

static int conn_batch(tg__store_conn *c, tg__store_sub *subs, size_t nsubs, int64_t now,
                      uint64_t *commit_ns) {
  *commit_ns = 0;
  if (!pipeline_on() || !fb_eligible(subs, nsubs)) return TG__BATCH_GENERIC;
  c->retry = 0;
  c->in_sp = c->sp_done = 0;
  /* A connection the server closed while it was idle (a restart) says so in what is waiting
   * on its socket: read that first (no round trip), so that a batch sent in one round trip is
   * never sent on a dead connection, where its failure would be a COMMIT in doubt. */
  if (PQstatus(c->pg) == CONNECTION_OK) (void)PQconsumeInput(c->pg);
  if (PQstatus(c->pg) != CONNECTION_OK && reconnect(c) < 0) return TG__BATCH_GENERIC;
  if (PQtransactionStatus(c->pg) != PQTRANS_IDLE) return TG__BATCH_GENERIC;
  if (fb_prepare_stmts(c) < 0) return TG__BATCH_GENERIC;
  /* Remembered rows: one round trip when they are all still true; else the rows are read. */
  int cached = now >= c->cache_off_until;
  if (cached && c->cache == NULL && (c->cache = calloc(1, sizeof(*c->cache))) == NULL) cached = 0;
  int r = fb_attempt(c, subs, nsubs, now, commit_ns, cached);
  if (r == FB_AGAIN) {
    if (fb_prepare_stmts(c) < 0) return TG__BATCH_GENERIC; /* a new session, maybe */
    r = fb_attempt(c, subs, nsubs, now, commit_ns, 0);
  }
  if (r != TG__BATCH_DONE) {
    fb_cache_free(c->cache);
    c->cache = NULL;
  }
  return r == FB_AGAIN ? TG__BATCH_GENERIC : r; /* (a read attempt never asks again) */
}

static uint64_t conn_round_trips(tg__store_conn *c) { return c->round_trips; }

#define PG_BACKEND(name_, scheme_, open_)  \
  const tg__store_backend name_ = {        \
      .scheme = scheme_,                   \
      .open = open_,                       \
      .close = conn_close,                 \
      .migrate = conn_migrate,             \
      .version = conn_version,             \
      .begin = tx_begin,                   \
      .commit = tx_commit,                 \
      .rollback = tx_rollback,             \
      .sp_begin = sp_begin,                \
      .sp_release = sp_release,            \
      .sp_rollback = sp_rollback,          \
      .txn_lost = txn_lost,                \
      .apply = conn_apply,                 \
      .lock_batch = lock_batch,            \
      .txn_retry = txn_retry,              \
      .batch = conn_batch,                 \
      .round_trips = conn_round_trips,     \
      .channel_get = conn_channel_get,     \
      .channels_iter = conn_channels_iter, \
      .charges_iter = conn_charges_iter,   \
      .charge_get = conn_charge_get,       \
      .totals_get = conn_totals_get,       \
      .exact_get = conn_exact_get,         \
      .exact_iter = conn_exact_iter,       \
      .payid_get = conn_payid_get,         \
      .pass_get = conn_pass_get,           \
      .session_get = conn_session_get,     \
      .run_open_get = conn_run_open_get,   \
      .run_items = conn_run_items,         \
      .lease_get = conn_lease_get,         \
  }

PG_BACKEND(tg__store_postgres, "postgres", open_postgres);
PG_BACKEND(tg__store_postgresql, "postgresql", open_postgresql);
