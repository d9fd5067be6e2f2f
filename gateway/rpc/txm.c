/* The transaction manager: local nonces, EIP-1559 fees and bumps, receipts and reorgs, and its SQLite journal. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <sqlite3.h>

#include "tollgate/tx.h"
#include "tollgate/txm.h"
#include "tollgate/u256.h"

#define MAX_VERSIONS 32
#define RECEIPTS_PER_TICK 20000
#define MISSING_TICKS_BEFORE_RENONCE 3
#define GWEI 1000000000ull
#define JSONRPC_INVALID_REQUEST (-32600) /* JSON-RPC 2.0: the request itself is not valid */

/*
 * The journal. Designed so that the store layer can take it over: one row
 * per transaction the caller asked for (txm_tx) and one per signed version
 * (txm_attempt); everything keyed by chain id and sender, so several
 * accounts and chains can share one database.
 */
static const char SCHEMA[] =
    "CREATE TABLE IF NOT EXISTS txm_tx ("
    " id INTEGER PRIMARY KEY,"
    " chain_id INTEGER NOT NULL,"
    " sender BLOB NOT NULL,"
    " nonce INTEGER NOT NULL,"
    " idem_key TEXT,"
    " state INTEGER NOT NULL,"         /* TG_TXM_* */
    " err INTEGER NOT NULL DEFAULT 0,"
    " cancel INTEGER NOT NULL DEFAULT 0," /* 1: the nonce is being filled by a self-transfer */
    " to_addr BLOB,"                   /* NULL: contract creation */
    " value BLOB NOT NULL,"            /* 32 bytes big-endian */
    " data BLOB NOT NULL,"
    " gas_limit INTEGER NOT NULL,"
    " tx_hash BLOB,"                   /* the mined version once mined */
    " block_number INTEGER,"
    " block_hash BLOB,"
    " status INTEGER,"
    " gas_used INTEGER,"
    " created_ms INTEGER NOT NULL,"
    " updated_ms INTEGER NOT NULL,"
    " UNIQUE (chain_id, sender, idem_key));"
    "CREATE INDEX IF NOT EXISTS txm_tx_open ON txm_tx (chain_id, sender, state);"
    "CREATE TABLE IF NOT EXISTS txm_attempt ("
    " tx_hash BLOB PRIMARY KEY,"
    " tx_id INTEGER NOT NULL REFERENCES txm_tx (id),"
    " nonce INTEGER NOT NULL,"
    " raw BLOB NOT NULL,"
    " max_fee BLOB NOT NULL,"
    " priority_fee BLOB NOT NULL,"
    " created_ms INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS txm_attempt_tx ON txm_attempt (tx_id);"
    /* One live manager per account and journal (the store layer will use advisory locks). */
    "CREATE TABLE IF NOT EXISTS txm_owner ("
    " chain_id INTEGER NOT NULL,"
    " sender BLOB NOT NULL,"
    " pid INTEGER NOT NULL,"
    " started_ms INTEGER NOT NULL,"
    " PRIMARY KEY (chain_id, sender));";

typedef struct txm_tx {
  uint64_t id;
  uint64_t nonce;
  int has_nonce;
  int state;
  int err;
  int cancel;
  char *key;
  uint64_t key_h;    /* key_hash(key) */
  int has_to;
  tg_address to;
  tg_u256 value;
  uint8_t *data;
  size_t data_len;
  uint64_t gas_limit;
  /* the latest signed version */
  tg_u256 max_fee, prio;
  uint8_t *raw;
  size_t raw_len;
  tg_hash hashes[MAX_VERSIONS]; /* every version, oldest first (the oldest dropped past the cap) */
  unsigned n_hashes;
  unsigned versions;
  int journaled;
  int queued;        /* waiting to be signed */
  int sending;       /* sends in flight */
  int need_bump;
  int estimating;
  uint64_t last_send_ms;
  unsigned missing_ticks;
  tg_hash mined_hash;
  uint64_t block_number;
  tg_hash block_hash;
  int status;
  uint64_t gas_used;
  tg_u256 egp;
  char node_msg[TG_TXM_MESSAGE_MAX]; /* the node's text when it refused the transaction */
  int dirty;
  int resumed;
  int fired;          /* its final callback (or on_resumed) ran */
  tg_txm_cb cb;
  void *arg;
  tg_txm_cb on_accepted;
  void *accepted_arg;
  int accepted;
  int has_success;      /* success_topic: its success is learnt from that log of `to` */
  tg_hash success_topic;
  unsigned scan_misses; /* polls whose log read reached the head without finding it */
  uint64_t scan_tick;
} txm_tx;

/* An outstanding RPC call; `m` is cleared when the manager goes away first. */
typedef struct txm_call {
  tg_txm *m;
  struct txm_call *next, *prev;
  /* receipts batch: which transaction and hash each item is */
  txm_tx **item_tx;
  size_t n_items;
  txm_tx *tx;
  uint64_t to_block;   /* eth_getLogs: the last block read */
} txm_call;

typedef struct {
  txm_tx **v;
  size_t n, cap;
} tx_vec;

typedef struct {
  txm_tx **v; /* cap slots (a power of two), NULL when empty */
  size_t cap, n;
} key_index;

struct tg_txm {
  tg_txm_opts o;
  tg_rpc *rpc;
  struct event_base *base;
  tg_address from;
  uint64_t chain_id;
  sqlite3 *db;
  sqlite3_stmt *st_insert_tx, *st_insert_attempt, *st_update_tx, *st_get, *st_key;
  tx_vec txs;     /* not final (and final ones with sends in flight) */
  key_index keys; /* the transactions of txs that have an idempotency key, by key */
  tx_vec signq;   /* to sign on the next flush */
  tx_vec sendq;   /* signed, waiting for a send slot (sendq_head: the next one) */
  size_t sendq_head;
  unsigned send_batches; /* send batches in flight */
  uint64_t next_nonce;
  uint64_t next_id;
  tg_u256 base_next, prio_est;
  uint64_t head, mined_count;
  struct event *tick_ev, *flush_ev;
  int tick_busy;
  unsigned rcpt_batches; /* receipt batches of this tick still out */
  int scan_ok;           /* the node answers eth_getLogs */
  uint64_t scan_next;    /* the next block whose success logs are read */
  uint64_t ticks;
  int rcpt_failed;       /* one of them failed: the tick ends without confirming */
  txm_call *calls;
  tg_txm_stats st;
  int closing;
  int flush_scheduled;
  uint64_t last_flush_us; /* when the last flush began (monotonic), for the group-commit window */
  int owner; /* holds the txm_owner claim */
};

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static uint64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/*
 * The idempotency keys of the transactions in memory: open addressing on key_h, linear
 * probing, deletion by backward shift (no tombstones), at most half full. A submission looked
 * its key up by walking every transaction in memory, up to max_pending (10,000) of them.
 */
static txm_tx **key_slot(const key_index *x, uint64_t h, const char *key) {
  size_t mask = x->cap - 1;
  for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
    txm_tx *t = x->v[i];
    if (!t || (t->key_h == h && strcmp(t->key, key) == 0)) return &x->v[i];
  }
}

static void key_add(key_index *x, txm_tx *t) {
  if (!t->key) return;
  if (2 * (x->n + 1) > x->cap) {
    key_index y = {NULL, x->cap ? 2 * x->cap : 256, 0};
    y.v = calloc(y.cap, sizeof *y.v);
    if (!y.v) abort();
    for (size_t i = 0; i < x->cap; i++)
      if (x->v[i]) {
        *key_slot(&y, x->v[i]->key_h, x->v[i]->key) = x->v[i];
        y.n++;
      }
    free(x->v);
    *x = y;
  }
  txm_tx **slot = key_slot(x, t->key_h, t->key);
  if (*slot == NULL) x->n++;
  *slot = t;
}

static void key_del(key_index *x, txm_tx *t) {
  if (!t->key || x->cap == 0) return;
  txm_tx **slot = key_slot(x, t->key_h, t->key);
  if (*slot != t) return;
  size_t mask = x->cap - 1, i = (size_t)(slot - x->v), j = i;
  x->v[i] = NULL;
  x->n--;
  /* Backward shift: move up every later entry of the run whose home is not in (i, j]. */
  for (;;) {
    j = (j + 1) & mask;
    txm_tx *e = x->v[j];
    if (!e) break;
    size_t home = (size_t)e->key_h & mask;
    if (i <= j ? (home <= i || home > j) : (home <= i && home > j)) {
      x->v[i] = e;
      x->v[j] = NULL;
      i = j;
    }
  }
}

static txm_tx *key_find(const key_index *x, uint64_t h, const char *key) {
  return x->cap ? *key_slot(x, h, key) : NULL;
}

static void vec_push(tx_vec *v, txm_tx *t) {
  if (v->n == v->cap) {
    v->cap = v->cap ? v->cap * 2 : 64;
    v->v = realloc(v->v, v->cap * sizeof *v->v);
    if (!v->v) abort();
  }
  v->v[v->n++] = t;
}

static void tx_free(txm_tx *t) {
  if (!t) return;
  free(t->key);
  free(t->data);
  free(t->raw);
  free(t);
}

void tg_txm_opts_init(tg_txm_opts *o) {
  memset(o, 0, sizeof *o);
  o->journal_path = ":memory:";
  o->confirmations = 1;
  o->gas_margin_pct = 20;
  o->bump_pct = 15;
  o->resend_ms = 15000;
  o->poll_ms = 1000;
  o->max_pending = 10000;
  o->fee_blocks = 10;
  tg_u256_from_u64(&o->min_priority_fee, GWEI);
}

/* ------------------------------------------------------------------ calls */

static txm_call *call_new(tg_txm *m) {
  txm_call *c = calloc(1, sizeof *c);
  if (!c) abort();
  c->m = m;
  c->next = m->calls;
  if (m->calls) m->calls->prev = c;
  m->calls = c;
  return c;
}

/* Unlinks and frees; returns the manager (NULL when it was freed meanwhile). */
static tg_txm *call_end(txm_call *c) {
  tg_txm *m = c->m;
  if (m) {
    if (c->prev)
      c->prev->next = c->next;
    else
      m->calls = c->next;
    if (c->next) c->next->prev = c->prev;
  }
  free(c->item_tx);
  free(c);
  return m;
}

/* ------------------------------------------------------------------ fees */

static void u256_max(tg_u256 *a, const tg_u256 *b) {
  if (tg_u256_cmp(a, b) < 0) *a = *b;
}

/* The fees a new transaction gets now: 2 x next base fee + priority, capped. */
static int needed_fees(const tg_txm *m, tg_u256 *max_fee, tg_u256 *prio) {
  *prio = m->prio_est;
  u256_max(prio, &m->o.min_priority_fee);
  if (tg_u256_mul_u64(max_fee, &m->base_next, 2) || tg_u256_add(max_fee, max_fee, prio))
    return TG_EOVERFLOW;
  if (!tg_u256_is_zero(&m->o.max_fee_ceiling) && tg_u256_cmp(max_fee, &m->o.max_fee_ceiling) > 0) {
    if (tg_u256_cmp(&m->base_next, &m->o.max_fee_ceiling) > 0) return TG_ETXM_FEE_CEILING;
    *max_fee = m->o.max_fee_ceiling;
    if (tg_u256_cmp(prio, max_fee) > 0) *prio = *max_fee;
  }
  return 0;
}

/* x * (100 + pct) / 100 + 1 */
static int bump(tg_u256 *out, const tg_u256 *x, unsigned pct) {
  tg_u256 t;
  if (tg_u256_mul_u64(&t, x, 100u + pct)) return TG_EOVERFLOW;
  if (tg_u256_divmod_u64(&t, NULL, &t, 100)) return TG_EINTERNAL;
  return tg_u256_add_u64(out, &t, 1);
}

/*
 * Fees for a replacement: the old ones bumped, or what the chain asks now if
 * more, capped by the ceiling. 0 when that is a real bump, TG_ETXM_FEE_CEILING
 * when the ceiling leaves no room.
 */
static int bumped_fees(const tg_txm *m, const txm_tx *t, tg_u256 *max_fee, tg_u256 *prio) {
  tg_u256 nmax, nprio;
  if (bump(&nmax, &t->max_fee, m->o.bump_pct) || bump(&nprio, &t->prio, m->o.bump_pct))
    return TG_EOVERFLOW;
  tg_u256 need_max, need_prio;
  if (needed_fees(m, &need_max, &need_prio) == 0) {
    u256_max(&nmax, &need_max);
    u256_max(&nprio, &need_prio);
  }
  const tg_u256 *ceil = &m->o.max_fee_ceiling;
  if (!tg_u256_is_zero(ceil) && tg_u256_cmp(&nmax, ceil) > 0) nmax = *ceil;
  if (tg_u256_cmp(&nprio, &nmax) > 0) nprio = nmax;
  /* A node replaces only when both fees rise by its bump rule. */
  tg_u256 min_max, min_prio;
  if (bump(&min_max, &t->max_fee, 10) || bump(&min_prio, &t->prio, 10)) return TG_EOVERFLOW;
  if (tg_u256_cmp(&nmax, &min_max) < 0 || tg_u256_cmp(&nprio, &min_prio) < 0)
    return TG_ETXM_FEE_CEILING;
  *max_fee = nmax;
  *prio = nprio;
  return 0;
}

/* Reads an eth_feeHistory result into the estimate (next base fee, median priority fee). */
static void take_fee_history(tg_txm *m, const json_t *v) {
  tg_fee_history fh;
  if (tg_rpc_parse_fee_history(v, &fh) != 0) return;
  m->base_next = fh.base_fee[fh.n_blocks];
  tg_u256 best;
  tg_u256_zero(&best);
  /* The highest of the per-block medians over the window: fast inclusion over thrift. */
  for (size_t i = 0; fh.reward && i < fh.n_blocks; i++) u256_max(&best, &fh.reward[i * fh.n_pcts]);
  m->prio_est = best;
  tg_fee_history_cleanup(&fh);
}

/* ------------------------------------------------------------------ journal */

static int db_exec(tg_txm *m, const char *sql) {
  return sqlite3_exec(m->db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : TG_ETXM_JOURNAL;
}

static int db_begin(tg_txm *m) {
  return db_exec(m, "BEGIN IMMEDIATE");
}

static int db_commit(tg_txm *m) {
  int rc = db_exec(m, "COMMIT");
  if (rc) {
    db_exec(m, "ROLLBACK");
    return rc;
  }
  m->st.journal_commits++;
  return 0;
}

static int db_step_done(sqlite3_stmt *s) {
  int r = sqlite3_step(s);
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
  return r == SQLITE_DONE ? 0 : TG_ETXM_JOURNAL;
}

static int journal_insert_tx(tg_txm *m, const txm_tx *t) {
  sqlite3_stmt *s = m->st_insert_tx;
  uint64_t w = wall_ms();
  sqlite3_bind_int64(s, 1, (sqlite3_int64)t->id);
  sqlite3_bind_int64(s, 2, (sqlite3_int64)m->chain_id);
  sqlite3_bind_blob(s, 3, m->from.b, 20, SQLITE_STATIC);
  sqlite3_bind_int64(s, 4, (sqlite3_int64)t->nonce);
  if (t->key) sqlite3_bind_text(s, 5, t->key, -1, SQLITE_STATIC);
  sqlite3_bind_int(s, 6, t->state);
  if (t->has_to) sqlite3_bind_blob(s, 7, t->to.b, 20, SQLITE_STATIC);
  sqlite3_bind_blob(s, 8, t->value.b, 32, SQLITE_STATIC);
  sqlite3_bind_blob(s, 9, t->data ? (const void *)t->data : "", (int)t->data_len, SQLITE_STATIC);
  sqlite3_bind_int64(s, 10, (sqlite3_int64)t->gas_limit);
  sqlite3_bind_int64(s, 11, (sqlite3_int64)w);
  sqlite3_bind_int64(s, 12, (sqlite3_int64)w);
  return db_step_done(s);
}

static int journal_insert_attempt(tg_txm *m, const txm_tx *t, const tg_hash *h) {
  sqlite3_stmt *s = m->st_insert_attempt;
  sqlite3_bind_blob(s, 1, h->b, 32, SQLITE_STATIC);
  sqlite3_bind_int64(s, 2, (sqlite3_int64)t->id);
  sqlite3_bind_int64(s, 3, (sqlite3_int64)t->nonce);
  sqlite3_bind_blob(s, 4, t->raw, (int)t->raw_len, SQLITE_STATIC);
  sqlite3_bind_blob(s, 5, t->max_fee.b, 32, SQLITE_STATIC);
  sqlite3_bind_blob(s, 6, t->prio.b, 32, SQLITE_STATIC);
  sqlite3_bind_int64(s, 7, (sqlite3_int64)wall_ms());
  return db_step_done(s);
}

static int journal_update(tg_txm *m, const txm_tx *t) {
  sqlite3_stmt *s = m->st_update_tx;
  sqlite3_bind_int(s, 1, t->state);
  sqlite3_bind_int(s, 2, t->err);
  sqlite3_bind_int(s, 3, t->cancel);
  sqlite3_bind_int64(s, 4, (sqlite3_int64)t->nonce);
  if (t->state == TG_TXM_MINED || t->state == TG_TXM_CONFIRMED ||
      (t->state == TG_TXM_FAILED && t->block_number)) {
    sqlite3_bind_blob(s, 5, t->mined_hash.b, 32, SQLITE_STATIC);
    sqlite3_bind_int64(s, 6, (sqlite3_int64)t->block_number);
    sqlite3_bind_blob(s, 7, t->block_hash.b, 32, SQLITE_STATIC);
    sqlite3_bind_int(s, 8, t->status);
    sqlite3_bind_int64(s, 9, (sqlite3_int64)t->gas_used);
  }
  sqlite3_bind_int64(s, 10, (sqlite3_int64)wall_ms());
  sqlite3_bind_int64(s, 11, (sqlite3_int64)t->id);
  return db_step_done(s);
}

/* ------------------------------------------------------------------ results */

static void fill_result(const txm_tx *t, tg_txm_result *r) {
  memset(r, 0, sizeof *r);
  r->id = t->id;
  r->state = t->state;
  r->err = t->err;
  r->nonce = t->nonce;
  r->versions = t->versions;
  if (t->state == TG_TXM_MINED || t->state == TG_TXM_CONFIRMED || t->block_number)
    r->tx_hash = t->mined_hash;
  else if (t->n_hashes)
    r->tx_hash = t->hashes[t->n_hashes - 1];
  r->block_number = t->block_number;
  r->status = t->status;
  r->gas_used = t->gas_used;
  r->effective_gas_price = t->egp;
  memcpy(r->message, t->node_msg, sizeof r->message);
}

static void fire(tg_txm *m, txm_tx *t) {
  tg_txm_result r;
  fill_result(t, &r);
  tg_txm_cb cb = t->cb;
  void *arg = t->arg;
  if (t->resumed && !cb) {
    cb = m->o.on_resumed;
    arg = m->o.on_resumed_arg;
  }
  t->cb = NULL;
  if (cb) cb(arg, &r);
}

static int is_final(int state) {
  return state == TG_TXM_CONFIRMED || state == TG_TXM_FAILED;
}

/* Persists dirty rows in one commit, then reports and drops the final ones. */
static void settle(tg_txm *m) {
  int any = 0;
  for (size_t i = 0; i < m->txs.n; i++) any |= m->txs.v[i]->dirty && m->txs.v[i]->journaled;
  if (any) {
    if (db_begin(m) == 0) {
      int rc = 0;
      for (size_t i = 0; i < m->txs.n && !rc; i++) {
        txm_tx *t = m->txs.v[i];
        if (t->dirty && t->journaled) rc = journal_update(m, t);
      }
      if (rc)
        db_exec(m, "ROLLBACK");
      else if (db_commit(m) == 0)
        for (size_t i = 0; i < m->txs.n; i++)
          if (m->txs.v[i]->journaled) m->txs.v[i]->dirty = 0;
    }
  }
  size_t k = 0;
  for (size_t i = 0; i < m->txs.n; i++) {
    txm_tx *t = m->txs.v[i];
    /* a resumed transaction has no callback of its own: on_resumed reports it */
    if (is_final(t->state) && !t->dirty && !t->fired && (t->cb || (t->resumed && m->o.on_resumed))) {
      t->fired = 1;
      fire(m, t);
    }
    if (is_final(t->state) && !t->dirty && t->sending == 0 && !t->queued && !t->estimating) {
      if (t->state == TG_TXM_CONFIRMED) m->st.confirmed++;
      else m->st.failed++;
      key_del(&m->keys, t);
      tx_free(t);
      continue;
    }
    m->txs.v[k++] = t;
  }
  m->txs.n = k;
}

/* ------------------------------------------------------------------ signing and sending */

/*
 * The journal's group-commit window: a flush begun less than FLUSH_WINDOW_US after the previous
 * one waits for the rest of the window, so that submissions arriving in quick succession share
 * one commit (its WAL pages and its fsync) instead of one or two each (docs/RPC.md, the
 * journal); a submission after a quiet moment is flushed at once.
 */
#define FLUSH_WINDOW_US 1000u

static void schedule_flush(tg_txm *m) {
  if (m->flush_scheduled || m->closing) return;
  m->flush_scheduled = 1;
  uint64_t now = now_us(), wait = 0;
  if (m->last_flush_us && now - m->last_flush_us < FLUSH_WINDOW_US)
    wait = m->last_flush_us + FLUSH_WINDOW_US - now;
  struct timeval tv = {0, (suseconds_t)wait};
  evtimer_add(m->flush_ev, &tv);
}

static void enqueue_sign(tg_txm *m, txm_tx *t) {
  if (t->queued) return;
  t->queued = 1;
  vec_push(&m->signq, t);
  schedule_flush(m);
}

/* Signs the transaction's next version into t->raw (fees already chosen). */
static int sign_version(tg_txm *m, txm_tx *t, tg_hash *h) {
  tg_tx tx;
  tg_tx_init(&tx, TG_TX_EIP1559);
  tx.chain_id = m->chain_id;
  tx.nonce = t->nonce;
  tx.max_fee_per_gas = t->max_fee;
  tx.max_priority_fee_per_gas = t->prio;
  if (t->cancel) {
    tx.gas_limit = 21000;
    tx.has_to = 1;
    tx.to = m->from;
  } else {
    tx.gas_limit = t->gas_limit;
    tx.has_to = t->has_to;
    tx.to = t->to;
    tx.value = t->value;
    tx.data = TG_BYTES(t->data, t->data_len);
  }
  int rc = tg_tx_sign(&tx, m->o.key);
  tg_buf raw;
  tg_buf_init(&raw, (size_t)1 << 20);
  if (!rc) rc = tg_tx_encode(&raw, &tx);
  if (!rc) rc = tg_tx_hash(h, &tx);
  if (rc) {
    tg_buf_cleanup(&raw);
    return rc;
  }
  free(t->raw);
  t->raw = tg_buf_steal(&raw, &t->raw_len);
  if (t->n_hashes == MAX_VERSIONS) {
    memmove(&t->hashes[0], &t->hashes[1], (MAX_VERSIONS - 1) * sizeof t->hashes[0]);
    t->n_hashes--;
  }
  t->hashes[t->n_hashes++] = *h;
  t->versions++;
  m->st.signed_versions++;
  return 0;
}

static void send_cb(void *arg, const tg_rpc_reply *r);
static void schedule_tick(tg_txm *m, unsigned ms);

static void send_raw(tg_txm *m, txm_tx *t) {
  if (!t->raw || m->closing) return;
  json_t *p = json_array();
  if (!p || json_array_append_new(p, tg_rpc_json_bytes(t->raw, t->raw_len))) abort();
  txm_call *c = call_new(m);
  c->tx = t;
  t->last_send_ms = now_ms();
  if (tg_rpc_call_async(m->rpc, "eth_sendRawTransaction", p, send_cb, c) != 0) {
    call_end(c);
    t->last_send_ms = 0;
    return;
  }
  t->sending++;
}

static void start_cancel(tg_txm *m, txm_tx *t, int err) {
  t->err = err;
  t->cancel = 1;
  t->dirty = 1;
  t->need_bump = 1;
  enqueue_sign(m, t);
}

/* The node has the transaction (it said so, or it mined it before we heard back). */
static void mark_accepted(tg_txm *m, txm_tx *t) {
  if (t->accepted) return;
  t->accepted = 1;
  m->st.accepted++;
  if (t->on_accepted) {
    tg_txm_cb cb = t->on_accepted;
    t->on_accepted = NULL;
    tg_txm_result res;
    fill_result(t, &res);
    cb(t->accepted_arg, &res);
  }
}

/* Keeps the node's text of a refusal, for the caller's report (tg_txm_result.message). */
static void keep_message(txm_tx *t, const tg_rpc_reply *r) {
  if (t->cancel && t->node_msg[0]) return; /* the filler's troubles do not hide the reason */
  if (r->message && *r->message)
    snprintf(t->node_msg, sizeof t->node_msg, "%s (code %lld)", r->message, r->code);
  else
    snprintf(t->node_msg, sizeof t->node_msg, "code %lld, no message", r->code);
}

/*
 * What the node said to one eth_sendRawTransaction; `batched`: it went in a
 * JSON-RPC batch with others.
 */
static void send_result(tg_txm *m, txm_tx *t, const tg_rpc_reply *r, int batched) {
  t->sending--;
  if (is_final(t->state) || t->state == TG_TXM_MINED) return;
  switch (r->err) {
  case 0:
  case TG_ERPC_ALREADY_KNOWN:
    if (!t->cancel) t->node_msg[0] = 0; /* an earlier refusal (a batch, funds) is moot now;
                                           a filler's acceptance keeps the refusal's text */
    if (t->state == TG_TXM_SIGNED) {
      t->state = TG_TXM_SENT;
      t->dirty = 1;
      mark_accepted(m, t);
    }
    break;
  case TG_ERPC_NONCE_LOW:
    /* That nonce is mined: the receipts tell whether by one of our versions. */
    break;
  case TG_ERPC_UNDERPRICED:
    t->need_bump = 1;
    t->last_send_ms = 1; /* due at the next tick */
    break;
  case TG_ERPC_FUNDS:
  case TG_ERPC_LIMIT:
    keep_message(t, r);
    break; /* tried again after resend_ms */
  case TG_ERPC:
  case TG_ERPC_REVERTED:
    keep_message(t, r);
    if (batched && r->code == JSONRPC_INVALID_REQUEST) {
      /*
       * The request, not the transaction, was refused: a node answers a batch
       * it will not read (anvil past its 2 MiB body limit, geth past its batch
       * limits) with one "Invalid request" for all of it. Sent again alone at
       * the next tick; refused alone, it is refused for good.
       */
      t->last_send_ms = 0;
      m->st.unbatched++;
      break;
    }
    /* Refused for good: report it and fill its nonce (unless this already was the filler). */
    if (!t->cancel)
      start_cancel(m, t, r->err);
    else {
      t->state = TG_TXM_FAILED;
      t->dirty = 1;
    }
    break;
  default:
    t->last_send_ms = 0; /* transport trouble: again at the next tick */
  }
}

static void send_cb(void *arg, const tg_rpc_reply *r) {
  txm_call *c = arg;
  txm_tx *t = c->tx;
  tg_txm *m = call_end(c);
  if (m) send_result(m, t, r, 0);
}

static void pump_sends(tg_txm *m);

static void send_batch_cb(void *arg, tg_rpc_batch *b, int err) {
  (void)err; /* a failed exchange gives every item that error */
  txm_call *c = arg;
  txm_tx **items = c->item_tx;
  size_t n = c->n_items;
  c->item_tx = NULL;
  tg_txm *m = call_end(c);
  if (m) {
    m->send_batches--;
    for (size_t i = 0; i < n; i++) send_result(m, items[i], tg_rpc_batch_reply(b, i), n > 1);
  }
  free(items);
  tg_rpc_batch_free(b);
  if (m) pump_sends(m);
}

/*
 * Sends go out in JSON-RPC batches, SEND_WINDOW batches at a time: a node
 * takes transactions fastest one batch after another (anvil slows down
 * several-fold when many batches compete), and fewer HTTP exchanges than
 * one call each. A queued transaction counts as sending, so it stays alive.
 * A batch holds at most SEND_BATCH transactions and SEND_BATCH_BYTES of
 * request body (hex doubles the raw size): nodes cap a request's body
 * (anvil 2 MiB, geth 5 MiB) and refuse a larger one whole, so ten
 * 120 KB claims in one batch would all be refused. A transaction bigger than
 * the cap goes alone.
 */
#define SEND_BATCH 100
#define SEND_BATCH_BYTES ((size_t)1 << 20)
#define SEND_ITEM_OVERHEAD 96 /* {"jsonrpc":"2.0","id":N,"method":"eth_sendRawTransaction","params":["0x"]}, */
#define SEND_WINDOW 1

static void pump_sends(tg_txm *m) {
  while (!m->closing && m->send_batches < SEND_WINDOW && m->sendq_head < m->sendq.n) {
    size_t avail = m->sendq.n - m->sendq_head;
    size_t k = avail < SEND_BATCH ? avail : SEND_BATCH;
    txm_tx **v = &m->sendq.v[m->sendq_head];
    size_t bytes = 0;
    for (size_t j = 0; j < k; j++) {
      size_t one = 2 * v[j]->raw_len + SEND_ITEM_OVERHEAD;
      if (j > 0 && bytes + one > SEND_BATCH_BYTES) {
        k = j;
        break;
      }
      bytes += one;
    }
    m->sendq_head += k;
    tg_rpc_batch *b = tg_rpc_batch_new();
    txm_call *c = call_new(m);
    c->item_tx = calloc(k, sizeof *c->item_tx);
    if (!c->item_tx) abort();
    uint64_t now = now_ms();
    for (size_t j = 0; j < k; j++) {
      txm_tx *t = v[j];
      json_t *p = json_array();
      if (!p || json_array_append_new(p, tg_rpc_json_bytes(t->raw, t->raw_len))) abort();
      if (tg_rpc_batch_add(b, "eth_sendRawTransaction", p) < 0) abort();
      c->item_tx[c->n_items++] = t;
      t->last_send_ms = now;
    }
    if (tg_rpc_batch_send(m->rpc, b, send_batch_cb, c) != 0) {
      for (size_t j = 0; j < k; j++) {
        v[j]->last_send_ms = 0;
        v[j]->sending--;
      }
      call_end(c);
      tg_rpc_batch_free(b);
      break;
    }
    m->send_batches++;
  }
  if (m->sendq_head == m->sendq.n) m->sendq.n = m->sendq_head = 0;
}

static void send_many(tg_txm *m, txm_tx **v, size_t n) {
  for (size_t i = 0; i < n; i++) {
    v[i]->sending++;
    v[i]->last_send_ms = now_ms();
    vec_push(&m->sendq, v[i]);
  }
  pump_sends(m);
}

static void on_flush(evutil_socket_t fd, short what, void *arg) {
  (void)fd, (void)what;
  tg_txm *m = arg;
  m->flush_scheduled = 0;
  if (m->signq.n == 0 || m->closing) return;
  m->last_flush_us = now_us();
  if (db_begin(m) != 0) {
    schedule_flush(m);
    return;
  }
  size_t n = m->signq.n;
  txm_tx **q = m->signq.v;
  txm_tx **ok = calloc(n, sizeof *ok), **wait = calloc(n, sizeof *wait);
  if (!ok || !wait) abort();
  size_t n_ok = 0, n_wait = 0;
  int rc = 0;
  for (size_t i = 0; i < n && !rc; i++) {
    txm_tx *t = q[i];
    tg_u256 max_fee, prio;
    int frc = TG_ETXM_FEE_CEILING;
    if (t->versions && (t->need_bump || t->cancel)) frc = bumped_fees(m, t, &max_fee, &prio);
    if (frc) frc = needed_fees(m, &max_fee, &prio);
    if (frc) {
      wait[n_wait++] = t; /* the fees are above the ceiling: wait in the queue */
      continue;
    }
    if (!t->has_nonce) {
      t->nonce = m->next_nonce++;
      t->has_nonce = 1;
    }
    t->max_fee = max_fee;
    t->prio = prio;
    tg_hash h;
    rc = sign_version(m, t, &h);
    if (!rc && !t->journaled) rc = journal_insert_tx(m, t);
    if (!rc) rc = journal_insert_attempt(m, t, &h);
    if (!rc && t->journaled) rc = journal_update(m, t);
    ok[n_ok++] = t;
  }
  if (rc || db_commit(m) != 0) {
    /* Nothing of this batch is sent: it is signed again at the next flush. */
    if (rc) db_exec(m, "ROLLBACK");
    free(ok);
    free(wait);
    schedule_tick(m, m->o.poll_ms);
    return;
  }
  memcpy(q, wait, n_wait * sizeof *q);
  m->signq.n = n_wait;
  free(wait);
  for (size_t i = 0; i < n_ok; i++) {
    txm_tx *t = ok[i];
    t->queued = 0;
    t->journaled = 1;
    t->dirty = 0;
    t->need_bump = 0;
    t->missing_ticks = 0;
    if (t->versions > 1) m->st.replacements++;
  }
  send_many(m, ok, n_ok);
  free(ok);
}

/* ------------------------------------------------------------------ the tick */

static void schedule_tick(tg_txm *m, unsigned ms) {
  if (m->closing) return;
  struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
  evtimer_add(m->tick_ev, &tv);
}

static void tick_done(tg_txm *m) {
  settle(m);
  if (m->signq.n) schedule_flush(m);
  m->tick_busy = 0;
  schedule_tick(m, m->o.poll_ms);
}

/* Resends or replaces what is not mined in time. */
static void resend_pass(tg_txm *m) {
  uint64_t now = now_ms();
  uint64_t lowest = UINT64_MAX;
  for (size_t i = 0; i < m->txs.n; i++) {
    txm_tx *t = m->txs.v[i];
    if ((t->state == TG_TXM_SIGNED || t->state == TG_TXM_SENT) && t->has_nonce && t->nonce < lowest)
      lowest = t->nonce;
  }
  tg_u256 need_max, need_prio;
  int have_need = needed_fees(m, &need_max, &need_prio) == 0;
  tg_u256 base_plus;
  int have_base = have_need && tg_u256_add(&base_plus, &m->base_next, &need_prio) == 0;
  for (size_t i = 0; i < m->txs.n; i++) {
    txm_tx *t = m->txs.v[i];
    if (t->state != TG_TXM_SIGNED && t->state != TG_TXM_SENT) continue;
    if (t->queued || t->sending || !t->journaled || !t->raw) continue;
    if (t->nonce < m->mined_count) continue; /* mined by something: receipts decide */
    if (t->last_send_ms == 0) {
      send_raw(m, t);
      m->st.resends++;
      continue;
    }
    if (now - t->last_send_ms < m->o.resend_ms && !t->need_bump) continue;
    int underpriced = have_base && tg_u256_cmp(&t->max_fee, &base_plus) < 0;
    if (t->need_bump || underpriced || t->nonce == lowest) {
      tg_u256 a, b;
      if (bumped_fees(m, t, &a, &b) == 0) {
        t->need_bump = 1;
        enqueue_sign(m, t);
        continue;
      }
    }
    send_raw(m, t);
    m->st.resends++;
  }
}

/* What one receipt lookup said about t: its receipt (rc), or none (NULL). */
static void apply_receipt(tg_txm *m, txm_tx *t, const tg_eth_receipt *rc) {
  if (t->state == TG_TXM_MINED) {
    if (!rc) {
      /* Gone from the chain: send it again. */
      t->state = TG_TXM_SENT;
      t->block_number = 0;
      t->last_send_ms = 0;
      t->dirty = 1;
      m->st.reorgs++;
    } else if (memcmp(rc->block_hash.b, t->block_hash.b, 32) != 0) {
      m->st.reorgs++;
      t->block_hash = rc->block_hash;
      t->block_number = rc->block_number;
      t->dirty = 1;
    }
    return;
  }
  if (!rc) {
    if (++t->missing_ticks >= MISSING_TICKS_BEFORE_RENONCE) {
      /* The nonce went to a transaction that is not ours: sign again with a fresh one. */
      t->has_nonce = 0;
      t->missing_ticks = 0;
      t->need_bump = 0;
      t->dirty = 1;
      m->st.renonced++;
      enqueue_sign(m, t);
    }
    return;
  }
  t->mined_hash = rc->tx_hash;
  t->block_number = rc->block_number;
  t->block_hash = rc->block_hash;
  t->status = rc->status;
  t->gas_used = rc->gas_used;
  t->egp = rc->effective_gas_price;
  t->state = TG_TXM_MINED;
  t->scan_misses = 0;
  t->dirty = 1;
  mark_accepted(m, t);
}

static void receipts_done(tg_txm *m);

static void receipts_cb(void *arg, tg_rpc_batch *b, int err) {
  txm_call *c = arg;
  txm_tx **items = c->item_tx;
  size_t n = c->n_items;
  c->item_tx = NULL;
  tg_txm *m = call_end(c);
  if (!m) {
    free(items);
    tg_rpc_batch_free(b);
    return;
  }
  m->rcpt_batches--;
  if (err) {
    free(items);
    tg_rpc_batch_free(b);
    m->rcpt_failed = 1;
    if (m->rcpt_batches == 0) receipts_done(m);
    return;
  }
  /* First pass: which transactions have a receipt for one of their versions. */
  for (size_t i = 0; i < n;) {
    txm_tx *t = items[i];
    size_t j = i;
    int found = 0, any_error = 0;
    tg_eth_receipt rc;
    for (; j < n && items[j] == t; j++) {
      const tg_rpc_reply *r = tg_rpc_batch_reply(b, j);
      if (r->err) {
        any_error = 1;
        continue;
      }
      if (found || json_is_null(r->result)) continue;
      if (tg_rpc_parse_receipt(r->result, &rc) == 0) found = 1;
    }
    i = j;
    if (any_error && !found) continue;
    apply_receipt(m, t, found ? &rc : NULL);
    if (found) tg_eth_receipt_cleanup(&rc);
  }
  free(items);
  tg_rpc_batch_free(b);
  if (m->rcpt_batches == 0) receipts_done(m);
}

/* After the last receipt batch of a tick: confirmations, resends, the journal. */
static void receipts_done(tg_txm *m) {
  if (m->rcpt_failed) {
    m->rcpt_failed = 0;
    tick_done(m);
    return;
  }
  /* Confirmations. */
  for (size_t i = 0; i < m->txs.n; i++) {
    txm_tx *t = m->txs.v[i];
    if (t->state != TG_TXM_MINED) continue;
    if (m->head + 1 >= t->block_number + m->o.confirmations) {
      t->state = t->cancel ? TG_TXM_FAILED : TG_TXM_CONFIRMED;
      if (t->cancel && !t->err) t->err = TG_ETXM_FAILED;
      t->dirty = 1;
    }
  }
  resend_pass(m);
  tick_done(m);
}

/*
 * The receipts of every transaction that may be mined (its nonce is below the account's
 * mined count) or is mined and not yet confirmed, in batches of at most RECEIPTS_PER_BATCH
 * items (a transaction's versions never split across two), RECEIPTS_PER_TICK in all: at
 * thousands of `exact` transfers per second one batch per tick would leave most of them
 * unconfirmed and fill max_pending.
 */
#define RECEIPTS_PER_BATCH 1000

/*
 * Outcomes from logs: a request may name the log its transaction emits exactly when it
 * succeeds (`success_topic`, emitted by `to`; an EIP-3009 token's AuthorizationUsed for
 * transferWithAuthorization). The transactions of such requests that may be mined are then
 * looked for in one eth_getLogs over the blocks not read yet, instead of one
 * eth_getTransactionReceipt each: a node serves a log for a few microseconds and a receipt
 * for a hundred or more (anvil: 5 against 175-300 µs, docs/PERFORMANCE.md). Found: mined
 * and successful, at the log's block (gas used not known: 0). Not found when the read
 * reached the head, twice: looked up by hash as before (a revert has no log), as are
 * transactions resumed from the journal and everything when the node refuses the read.
 */
#define LOG_MISSES_BEFORE_LOOKUP 2
#define LOG_BLOCKS_MAX 1000
#define LOG_PAIRS_MAX 16

static int may_be_mined(const tg_txm *m, const txm_tx *t) {
  return (t->state == TG_TXM_SIGNED || t->state == TG_TXM_SENT) && t->has_nonce && !t->queued &&
         t->nonce < m->mined_count;
}

static int by_log(const tg_txm *m, const txm_tx *t) {
  return m->scan_ok && t->has_success && t->has_to && !t->cancel && !t->resumed &&
         t->scan_misses < LOG_MISSES_BEFORE_LOOKUP;
}

typedef struct {
  tg_hash h;
  txm_tx *t;
} hash_ref;

static int hash_ref_cmp(const void *a, const void *b) {
  return memcmp(((const hash_ref *)a)->h.b, ((const hash_ref *)b)->h.b, 32);
}

/* Counts a miss, once per poll, for what may be mined and was not found up to the head. */
static void count_misses(tg_txm *m) {
  for (size_t i = 0; i < m->txs.n; i++) {
    txm_tx *t = m->txs.v[i];
    if (may_be_mined(m, t) && by_log(m, t) && t->scan_tick != m->ticks) {
      t->scan_tick = m->ticks;
      t->scan_misses++;
    }
  }
}

static void logs_cb(void *arg, const tg_rpc_reply *r) {
  txm_call *c = arg;
  uint64_t to = c->to_block;
  tg_txm *m = call_end(c);
  if (!m) return;
  m->rcpt_batches--;
  if (r->err || !json_is_array(r->result)) {
    if (r->err == TG_ERPC || r->code == -32601) m->scan_ok = 0; /* refused: receipts only */
    count_misses(m); /* a read that keeps failing (a node's range limits) falls back to receipts */
  } else {
    hash_ref *refs = NULL;
    size_t n_refs = 0, cap = 0;
    for (size_t i = 0; i < m->txs.n; i++) {
      txm_tx *t = m->txs.v[i];
      if (!may_be_mined(m, t) || !by_log(m, t)) continue;
      for (unsigned k = 0; k < t->n_hashes; k++) {
        if (n_refs == cap) {
          cap = cap ? cap * 2 : 256;
          refs = realloc(refs, cap * sizeof *refs);
          if (!refs) abort();
        }
        refs[n_refs].h = t->hashes[k];
        refs[n_refs++].t = t;
      }
    }
    if (n_refs) qsort(refs, n_refs, sizeof *refs, hash_ref_cmp);
    for (size_t k = 0; n_refs && k < json_array_size(r->result); k++) {
      tg_eth_log log;
      if (tg_rpc_parse_log(json_array_get(r->result, k), &log) != 0) continue;
      hash_ref key;
      key.h = log.tx_hash;
      hash_ref *hit = log.removed ? NULL : bsearch(&key, refs, n_refs, sizeof *refs, hash_ref_cmp);
      txm_tx *t = hit ? hit->t : NULL;
      if (t && t->state != TG_TXM_MINED && log.n_topics > 0 &&
          memcmp(log.topics[0].b, t->success_topic.b, 32) == 0 &&
          memcmp(log.address.b, t->to.b, 20) == 0) {
        tg_eth_receipt rc;
        memset(&rc, 0, sizeof rc);
        rc.tx_hash = log.tx_hash;
        rc.block_hash = log.block_hash;
        rc.block_number = log.block_number;
        rc.status = 1;
        apply_receipt(m, t, &rc);
      }
      tg_eth_log_cleanup(&log);
    }
    free(refs);
    m->scan_next = to + 1;
    if (m->scan_next > m->head) count_misses(m);
  }
  if (m->rcpt_batches == 0) receipts_done(m);
}

/* One eth_getLogs for the blocks not read yet when something may be found there; 1 when sent. */
static int scan_logs(tg_txm *m) {
  if (!m->scan_ok) return 0;
  if (m->scan_next > m->head) {
    count_misses(m);
    return 0;
  }
  json_t *addrs = json_array(), *topics = json_array();
  if (!addrs || !topics) abort();
  /* The distinct (contract, topic) pairs: a handful (one token); past LOG_PAIRS_MAX the others
   * are missed and read by receipt. */
  const txm_tx *pairs[LOG_PAIRS_MAX];
  size_t n_pairs = 0;
  for (size_t i = 0; i < m->txs.n; i++) {
    txm_tx *t = m->txs.v[i];
    if (!may_be_mined(m, t) || !by_log(m, t)) continue;
    size_t k = 0;
    while (k < n_pairs && (memcmp(pairs[k]->to.b, t->to.b, 20) ||
                           memcmp(pairs[k]->success_topic.b, t->success_topic.b, 32)))
      k++;
    if (k < n_pairs || n_pairs == LOG_PAIRS_MAX) continue;
    pairs[n_pairs++] = t;
    json_array_append_new(addrs, tg_rpc_json_address(&t->to));
    json_array_append_new(topics, tg_rpc_json_hash(&t->success_topic));
  }
  if (json_array_size(addrs) == 0) { /* nothing of that kind to find: skip to the head */
    json_decref(addrs);
    json_decref(topics);
    m->scan_next = m->head + 1;
    return 0;
  }
  uint64_t to = m->head - m->scan_next >= LOG_BLOCKS_MAX ? m->scan_next + LOG_BLOCKS_MAX - 1 : m->head;
  json_t *f = json_object(), *t0 = json_array(), *p = json_array();
  if (!f || !t0 || !p) abort();
  json_array_append_new(t0, topics); /* topic0 is any of them */
  json_object_set_new(f, "address", addrs);
  json_object_set_new(f, "topics", t0);
  json_object_set_new(f, "fromBlock", tg_rpc_json_u64(m->scan_next));
  json_object_set_new(f, "toBlock", tg_rpc_json_u64(to));
  json_array_append_new(p, f);
  txm_call *c = call_new(m);
  c->to_block = to;
  if (tg_rpc_call_async(m->rpc, "eth_getLogs", p, logs_cb, c) != 0) {
    call_end(c);
    return 0;
  }
  return 1;
}

static void check_receipts(tg_txm *m) {
  tg_rpc_batch *b = NULL;
  txm_call *c = NULL;
  size_t cap = 0, total = 0;
  m->rcpt_batches = 0;
  m->rcpt_failed = 0;
  m->ticks++;
  m->rcpt_batches += (unsigned)scan_logs(m);
  for (size_t i = 0; i < m->txs.n && total < RECEIPTS_PER_TICK; i++) {
    txm_tx *t = m->txs.v[i];
    int want = 0;
    if (t->state == TG_TXM_MINED) want = 1;
    if (may_be_mined(m, t) && !by_log(m, t)) want = 1;
    if (!want) continue;
    size_t count = t->state == TG_TXM_MINED ? 1 : t->n_hashes;
    if (b && tg_rpc_batch_size(b) + count > RECEIPTS_PER_BATCH) {
      if (tg_rpc_batch_send(m->rpc, b, receipts_cb, c) != 0) {
        call_end(c);
        tg_rpc_batch_free(b);
      } else {
        m->rcpt_batches++;
      }
      b = NULL;
    }
    if (!b) {
      b = tg_rpc_batch_new();
      c = call_new(m);
      cap = 0;
    }
    for (size_t k = 0; k < count; k++) {
      const tg_hash *h = t->state == TG_TXM_MINED ? &t->mined_hash : &t->hashes[k];
      json_t *p = json_array();
      if (!p || json_array_append_new(p, tg_rpc_json_hash(h))) abort();
      if (tg_rpc_batch_add(b, "eth_getTransactionReceipt", p) < 0) break;
      if (c->n_items == cap) {
        cap = cap ? cap * 2 : 64;
        c->item_tx = realloc(c->item_tx, cap * sizeof *c->item_tx);
        if (!c->item_tx) abort();
      }
      c->item_tx[c->n_items++] = t;
      total++;
    }
  }
  if (b && c->n_items > 0 && tg_rpc_batch_send(m->rpc, b, receipts_cb, c) == 0) {
    m->rcpt_batches++;
  } else if (b) {
    call_end(c);
    tg_rpc_batch_free(b);
  }
  if (m->rcpt_batches == 0) {
    resend_pass(m);
    tick_done(m);
  }
}

static void state_cb(void *arg, tg_rpc_batch *b, int err) {
  txm_call *c = arg;
  tg_txm *m = call_end(c);
  if (!m) {
    tg_rpc_batch_free(b);
    return;
  }
  uint64_t head, count;
  const tg_rpc_reply *r0 = tg_rpc_batch_reply(b, 0), *r1 = tg_rpc_batch_reply(b, 1),
                     *r2 = tg_rpc_batch_reply(b, 2);
  if (err || r0->err || r1->err || tg_rpc_parse_u64(r0->result, &head) ||
      tg_rpc_parse_u64(r1->result, &count)) {
    tg_rpc_batch_free(b);
    tick_done(m);
    return;
  }
  m->head = head;
  m->mined_count = count;
  if (r2->err == 0) take_fee_history(m, r2->result);
  tg_rpc_batch_free(b);
  check_receipts(m);
}

static void on_tick(evutil_socket_t fd, short what, void *arg) {
  (void)fd, (void)what;
  tg_txm *m = arg;
  if (m->tick_busy || m->closing) return;
  m->tick_busy = 1;
  tg_rpc_batch *b = tg_rpc_batch_new();
  json_t *p1 = json_array(), *p2 = json_array(), *pct = json_array();
  if (!p1 || !p2 || !pct) abort();
  json_array_append_new(p1, tg_rpc_json_address(&m->from));
  json_array_append_new(p1, json_string("latest"));
  json_array_append_new(p2, tg_rpc_json_u64(m->o.fee_blocks));
  json_array_append_new(p2, json_string("latest"));
  json_array_append_new(pct, json_real(50));
  json_array_append_new(p2, pct);
  if (tg_rpc_batch_add(b, "eth_blockNumber", NULL) < 0 ||
      tg_rpc_batch_add(b, "eth_getTransactionCount", p1) < 0 ||
      tg_rpc_batch_add(b, "eth_feeHistory", p2) < 0)
    abort();
  txm_call *c = call_new(m);
  if (tg_rpc_batch_send(m->rpc, b, state_cb, c) != 0) {
    call_end(c);
    tg_rpc_batch_free(b);
    m->tick_busy = 0;
    schedule_tick(m, m->o.poll_ms);
  }
}

/* ------------------------------------------------------------------ estimation */

static void estimate_cb(void *arg, const tg_rpc_reply *r) {
  txm_call *c = arg;
  txm_tx *t = c->tx;
  tg_txm *m = call_end(c);
  if (!m) return;
  t->estimating = 0;
  uint64_t gas;
  if (r->err == 0 && tg_rpc_parse_u64(r->result, &gas) == 0) {
    uint64_t margin = gas / 100 * m->o.gas_margin_pct + (gas % 100) * m->o.gas_margin_pct / 100;
    t->gas_limit = gas + margin;
    enqueue_sign(m, t);
    return;
  }
  /* Nothing was signed: it fails without using a nonce (reported at the next tick). */
  t->state = TG_TXM_FAILED;
  t->err = r->err ? r->err : TG_ERPC_REPLY;
  t->dirty = 0;
}

static void start_estimate(tg_txm *m, txm_tx *t) {
  tg_eth_msg msg = {.from = &m->from,
                    .to = t->has_to ? &t->to : NULL,
                    .data = t->data,
                    .data_len = t->data_len,
                    .value = &t->value};
  json_t *p = json_array();
  if (!p || json_array_append_new(p, tg_eth_msg_json(&msg))) abort();
  txm_call *c = call_new(m);
  c->tx = t;
  t->estimating = 1;
  if (tg_rpc_call_async(m->rpc, "eth_estimateGas", p, estimate_cb, c) != 0) {
    call_end(c);
    t->estimating = 0;
    t->state = TG_TXM_FAILED;
    t->err = TG_ERPC_NO_ENDPOINT;
  }
}

/* ------------------------------------------------------------------ public */

size_t tg_txm_pending(const tg_txm *m) {
  size_t n = 0;
  for (size_t i = 0; i < m->txs.n; i++) n += !is_final(m->txs.v[i]->state);
  return n;
}

const tg_address *tg_txm_address(const tg_txm *m) {
  return &m->from;
}

void tg_txm_stats_get(const tg_txm *m, tg_txm_stats *out) {
  *out = m->st;
}

/* FNV-1a of an idempotency key: compared before the strings. */
static uint64_t key_hash(const char *k) {
  uint64_t h = 1469598103934665603ull;
  for (; *k; k++) h = (h ^ (uint8_t)*k) * 1099511628211ull;
  return h;
}

static int key_used(tg_txm *m, const char *key, uint64_t *id) {
  const txm_tx *t = key_find(&m->keys, key_hash(key), key);
  if (t) {
    *id = t->id;
    return 1;
  }
  sqlite3_stmt *s = m->st_key;
  sqlite3_bind_int64(s, 1, (sqlite3_int64)m->chain_id);
  sqlite3_bind_blob(s, 2, m->from.b, 20, SQLITE_STATIC);
  sqlite3_bind_text(s, 3, key, -1, SQLITE_STATIC);
  int found = sqlite3_step(s) == SQLITE_ROW;
  if (found) *id = (uint64_t)sqlite3_column_int64(s, 0);
  sqlite3_reset(s);
  sqlite3_clear_bindings(s);
  return found;
}

int tg_txm_submit(tg_txm *m, const tg_txm_request *req, tg_txm_cb cb, void *arg, uint64_t *id) {
  if (id) *id = 0;
  if (!m || !req || (req->data_len && !req->data)) return TG_EINVAL;
  if (m->closing) return TG_ETXM_CLOSED;
  if (req->data_len > ((size_t)1 << 20)) return TG_ETOOBIG;
  /* (txs.n counts final ones not dropped yet: the exact count only near the cap) */
  if (m->txs.n >= m->o.max_pending && tg_txm_pending(m) >= m->o.max_pending) return TG_ETXM_FULL;
  if (req->gas_limit) {
    /* Refuse now what could never be signed or mined, before it takes a nonce. */
    tg_tx probe;
    tg_tx_init(&probe, TG_TX_EIP1559);
    probe.has_to = req->has_to;
    probe.data = TG_BYTES(req->data, req->data_len);
    probe.gas_limit = req->gas_limit;
    uint64_t intrinsic;
    int prc = tg_tx_intrinsic_gas(&probe, &intrinsic);
    if (prc) return prc;
    if (req->gas_limit < intrinsic) return TG_ETX_INTRINSIC_GAS;
    if (!req->has_to && req->data_len > TG_TX_INITCODE_MAX) return TG_ETX_INITCODE;
  }
  if (req->key) {
    uint64_t prev;
    if (key_used(m, req->key, &prev)) {
      if (id) *id = prev;
      return TG_EEXISTS;
    }
  }
  txm_tx *t = calloc(1, sizeof *t);
  if (!t) abort();
  t->id = m->next_id++;
  t->state = TG_TXM_SIGNED;
  t->has_to = req->has_to;
  t->to = req->to;
  t->value = req->value;
  t->gas_limit = req->gas_limit;
  if (req->data_len) {
    t->data = malloc(req->data_len);
    if (!t->data) abort();
    memcpy(t->data, req->data, req->data_len);
    t->data_len = req->data_len;
  }
  if (req->key) {
    t->key = strdup(req->key);
    if (!t->key) abort();
    t->key_h = key_hash(t->key);
  }
  t->cb = cb;
  t->arg = arg;
  t->on_accepted = req->on_accepted;
  t->accepted_arg = req->accepted_arg;
  if (req->success_topic && req->has_to) {
    t->has_success = 1;
    t->success_topic = *req->success_topic;
  }
  vec_push(&m->txs, t);
  key_add(&m->keys, t);
  if (t->gas_limit == 0)
    start_estimate(m, t);
  else
    enqueue_sign(m, t);
  if (id) *id = t->id;
  return 0;
}

int tg_txm_get(tg_txm *m, uint64_t id, tg_txm_result *out) {
  memset(out, 0, sizeof *out);
  for (size_t i = 0; i < m->txs.n; i++)
    if (m->txs.v[i]->id == id) {
      fill_result(m->txs.v[i], out);
      return 0;
    }
  sqlite3_stmt *s = m->st_get;
  sqlite3_bind_int64(s, 1, (sqlite3_int64)id);
  int rc = TG_ENOTFOUND;
  if (sqlite3_step(s) == SQLITE_ROW) {
    out->id = id;
    out->state = sqlite3_column_int(s, 0);
    out->err = sqlite3_column_int(s, 1);
    out->nonce = (uint64_t)sqlite3_column_int64(s, 2);
    if (sqlite3_column_bytes(s, 3) == 32) memcpy(out->tx_hash.b, sqlite3_column_blob(s, 3), 32);
    out->block_number = (uint64_t)sqlite3_column_int64(s, 4);
    out->status = sqlite3_column_int(s, 5);
    out->gas_used = (uint64_t)sqlite3_column_int64(s, 6);
    out->versions = (unsigned)sqlite3_column_int(s, 7);
    rc = 0;
  }
  sqlite3_reset(s);
  return rc;
}

int tg_txm_run_until_idle(tg_txm *m, unsigned timeout_ms) {
  if (event_base_loop(m->base, EVLOOP_NONBLOCK) < 0) return TG_EBUSY; /* inside a loop callback */
  uint64_t end = now_ms() + timeout_ms;
  while (tg_txm_pending(m) > 0) {
    if (now_ms() >= end) return TG_ETIMEOUT;
    if (event_base_loop(m->base, EVLOOP_ONCE) < 0) return TG_EINTERNAL;
  }
  return 0;
}

/*
 * Claims the account in this journal: TG_EBUSY while another live process
 * holds it (a crashed owner's claim is taken over).
 */
static int claim_owner(tg_txm *m) {
  if (strcmp(m->o.journal_path, ":memory:") == 0) return 0;
  if (db_begin(m)) return TG_ETXM_JOURNAL;
  sqlite3_stmt *s;
  int rc = 0;
  if (sqlite3_prepare_v2(m->db, "SELECT pid FROM txm_owner WHERE chain_id=? AND sender=?", -1, &s,
                         NULL) != SQLITE_OK) {
    db_exec(m, "ROLLBACK");
    return TG_ETXM_JOURNAL;
  }
  sqlite3_bind_int64(s, 1, (sqlite3_int64)m->chain_id);
  sqlite3_bind_blob(s, 2, m->from.b, 20, SQLITE_STATIC);
  if (sqlite3_step(s) == SQLITE_ROW) {
    pid_t pid = (pid_t)sqlite3_column_int64(s, 0);
    if (pid > 0 && pid != getpid() && (kill(pid, 0) == 0 || errno == EPERM)) rc = TG_EBUSY;
  }
  sqlite3_finalize(s);
  if (!rc) {
    char sql[256];
    snprintf(sql, sizeof sql,
             "INSERT OR REPLACE INTO txm_owner (chain_id, sender, pid, started_ms)"
             " VALUES (%lld, ?, %lld, %lld)",
             (long long)m->chain_id, (long long)getpid(), (long long)wall_ms());
    if (sqlite3_prepare_v2(m->db, sql, -1, &s, NULL) != SQLITE_OK) {
      rc = TG_ETXM_JOURNAL;
    } else {
      sqlite3_bind_blob(s, 1, m->from.b, 20, SQLITE_STATIC);
      rc = db_step_done(s);
      sqlite3_finalize(s);
    }
  }
  if (rc) {
    db_exec(m, "ROLLBACK");
    return rc;
  }
  return db_commit(m);
}

/* Gives the claim up (a clean stop). */
static void release_owner(tg_txm *m) {
  if (!m->db || !m->owner) return;
  sqlite3_stmt *s;
  if (sqlite3_prepare_v2(m->db, "DELETE FROM txm_owner WHERE chain_id=? AND sender=? AND pid=?",
                         -1, &s, NULL) != SQLITE_OK)
    return;
  sqlite3_bind_int64(s, 1, (sqlite3_int64)m->chain_id);
  sqlite3_bind_blob(s, 2, m->from.b, 20, SQLITE_STATIC);
  sqlite3_bind_int64(s, 3, (sqlite3_int64)getpid());
  (void)db_step_done(s);
  sqlite3_finalize(s);
}

/* Loads the unfinished transactions of this account from the journal. */
static int load_journal(tg_txm *m) {
  sqlite3_stmt *s, *a;
  if (sqlite3_prepare_v2(m->db,
                         "SELECT id, nonce, state, err, cancel, idem_key, to_addr, value, data,"
                         " gas_limit, tx_hash, block_number, block_hash, status, gas_used"
                         " FROM txm_tx WHERE chain_id=? AND sender=? AND state<4 ORDER BY nonce, id",
                         -1, &s, NULL) != SQLITE_OK)
    return TG_ETXM_JOURNAL;
  if (sqlite3_prepare_v2(m->db,
                         "SELECT tx_hash, raw, max_fee, priority_fee FROM txm_attempt"
                         " WHERE tx_id=? ORDER BY rowid",
                         -1, &a, NULL) != SQLITE_OK) {
    sqlite3_finalize(s);
    return TG_ETXM_JOURNAL;
  }
  sqlite3_bind_int64(s, 1, (sqlite3_int64)m->chain_id);
  sqlite3_bind_blob(s, 2, m->from.b, 20, SQLITE_STATIC);
  int rc = 0, r;
  while ((r = sqlite3_step(s)) == SQLITE_ROW) {
    txm_tx *t = calloc(1, sizeof *t);
    if (!t) abort();
    t->id = (uint64_t)sqlite3_column_int64(s, 0);
    t->nonce = (uint64_t)sqlite3_column_int64(s, 1);
    t->has_nonce = 1;
    t->state = sqlite3_column_int(s, 2);
    t->err = sqlite3_column_int(s, 3);
    t->cancel = sqlite3_column_int(s, 4);
    if (sqlite3_column_type(s, 5) == SQLITE_TEXT) {
      t->key = strdup((const char *)sqlite3_column_text(s, 5));
      if (!t->key) abort();
      t->key_h = key_hash(t->key);
    }
    if (sqlite3_column_bytes(s, 6) == 20) {
      t->has_to = 1;
      memcpy(t->to.b, sqlite3_column_blob(s, 6), 20);
    }
    if (sqlite3_column_bytes(s, 7) == 32) memcpy(t->value.b, sqlite3_column_blob(s, 7), 32);
    int dl = sqlite3_column_bytes(s, 8);
    if (dl > 0) {
      t->data = malloc((size_t)dl);
      if (!t->data) abort();
      memcpy(t->data, sqlite3_column_blob(s, 8), (size_t)dl);
      t->data_len = (size_t)dl;
    }
    t->gas_limit = (uint64_t)sqlite3_column_int64(s, 9);
    if (t->state == TG_TXM_MINED) {
      if (sqlite3_column_bytes(s, 10) == 32) memcpy(t->mined_hash.b, sqlite3_column_blob(s, 10), 32);
      t->block_number = (uint64_t)sqlite3_column_int64(s, 11);
      if (sqlite3_column_bytes(s, 12) == 32) memcpy(t->block_hash.b, sqlite3_column_blob(s, 12), 32);
      t->status = sqlite3_column_int(s, 13);
      t->gas_used = (uint64_t)sqlite3_column_int64(s, 14);
    }
    sqlite3_bind_int64(a, 1, (sqlite3_int64)t->id);
    while (sqlite3_step(a) == SQLITE_ROW) {
      if (sqlite3_column_bytes(a, 0) != 32 || sqlite3_column_bytes(a, 2) != 32 ||
          sqlite3_column_bytes(a, 3) != 32 || sqlite3_column_bytes(a, 1) <= 0) {
        rc = TG_ETXM_JOURNAL;
        break;
      }
      if (t->n_hashes == MAX_VERSIONS) {
        memmove(&t->hashes[0], &t->hashes[1], (MAX_VERSIONS - 1) * sizeof t->hashes[0]);
        t->n_hashes--;
      }
      memcpy(t->hashes[t->n_hashes++].b, sqlite3_column_blob(a, 0), 32);
      t->versions++;
      free(t->raw);
      t->raw_len = (size_t)sqlite3_column_bytes(a, 1);
      t->raw = malloc(t->raw_len);
      if (!t->raw) abort();
      memcpy(t->raw, sqlite3_column_blob(a, 1), t->raw_len);
      memcpy(t->max_fee.b, sqlite3_column_blob(a, 2), 32);
      memcpy(t->prio.b, sqlite3_column_blob(a, 3), 32);
    }
    sqlite3_reset(a);
    if (rc || t->versions == 0) {
      tx_free(t);
      rc = TG_ETXM_JOURNAL;
      break;
    }
    t->journaled = 1;
    t->resumed = 1;
    t->last_send_ms = 0; /* the same bytes go out again at the first tick */
    vec_push(&m->txs, t);
    key_add(&m->keys, t);
    if (t->nonce + 1 > m->next_nonce) m->next_nonce = t->nonce + 1;
  }
  if (!rc && r != SQLITE_DONE) rc = TG_ETXM_JOURNAL;
  sqlite3_finalize(s);
  sqlite3_finalize(a);
  if (rc) return rc;
  /* Ids continue after the highest ever used; nonces after every one ever signed. */
  if (sqlite3_prepare_v2(m->db, "SELECT COALESCE(MAX(id), 0) FROM txm_tx", -1, &s, NULL) != SQLITE_OK)
    return TG_ETXM_JOURNAL;
  if (sqlite3_step(s) == SQLITE_ROW) m->next_id = (uint64_t)sqlite3_column_int64(s, 0) + 1;
  sqlite3_finalize(s);
  return 0;
}

static int open_db(tg_txm *m) {
  if (sqlite3_open_v2(m->o.journal_path, &m->db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                      NULL) != SQLITE_OK)
    return TG_ETXM_JOURNAL;
  sqlite3_busy_timeout(m->db, 5000);
  if (db_exec(m, "PRAGMA journal_mode=WAL") || db_exec(m, "PRAGMA synchronous=FULL") ||
      db_exec(m, SCHEMA))
    return TG_ETXM_JOURNAL;
  const char *ins_tx =
      "INSERT INTO txm_tx (id, chain_id, sender, nonce, idem_key, state, to_addr, value, data,"
      " gas_limit, created_ms, updated_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)";
  const char *ins_at =
      "INSERT OR IGNORE INTO txm_attempt (tx_hash, tx_id, nonce, raw, max_fee, priority_fee,"
      " created_ms) VALUES (?,?,?,?,?,?,?)";
  const char *upd =
      "UPDATE txm_tx SET state=?1, err=?2, cancel=?3, nonce=?4, tx_hash=COALESCE(?5, tx_hash),"
      " block_number=?6, block_hash=?7, status=?8, gas_used=?9, updated_ms=?10 WHERE id=?11";
  const char *get =
      "SELECT state, err, nonce, tx_hash, block_number, status, gas_used,"
      " (SELECT COUNT(*) FROM txm_attempt WHERE tx_id = txm_tx.id) FROM txm_tx WHERE id=?";
  if (sqlite3_prepare_v2(m->db, ins_tx, -1, &m->st_insert_tx, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(m->db, ins_at, -1, &m->st_insert_attempt, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(m->db, upd, -1, &m->st_update_tx, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(m->db, get, -1, &m->st_get, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(m->db, "SELECT id FROM txm_tx WHERE chain_id=? AND sender=? AND idem_key=?",
                         -1, &m->st_key, NULL) != SQLITE_OK)
    return TG_ETXM_JOURNAL;
  return 0;
}

int tg_txm_open(tg_txm **out, const tg_txm_opts *opts) {
  *out = NULL;
  if (!opts || !opts->rpc || !opts->key) return TG_EINVAL;
  tg_txm *m = calloc(1, sizeof *m);
  if (!m) abort();
  m->o = *opts;
  tg_txm_opts d;
  tg_txm_opts_init(&d);
  if (!m->o.journal_path) m->o.journal_path = d.journal_path;
  if (!m->o.confirmations) m->o.confirmations = 1;
  if (m->o.bump_pct < 11) m->o.bump_pct = d.bump_pct;
  if (!m->o.resend_ms) m->o.resend_ms = d.resend_ms;
  if (!m->o.poll_ms) m->o.poll_ms = d.poll_ms;
  if (!m->o.max_pending) m->o.max_pending = d.max_pending;
  if (!m->o.fee_blocks || m->o.fee_blocks > TG_FEE_HISTORY_MAX_BLOCKS) m->o.fee_blocks = d.fee_blocks;
  if (tg_u256_is_zero(&m->o.min_priority_fee)) m->o.min_priority_fee = d.min_priority_fee;
  m->rpc = opts->rpc;
  m->base = tg_rpc_base(m->rpc);
  m->chain_id = tg_rpc_chain_id(m->rpc);
  m->next_id = 1;
  int rc = tg_seckey_address(&m->from, opts->key);
  if (!rc) rc = open_db(m);
  if (!rc) rc = claim_owner(m);
  if (!rc) m->owner = 1;
  if (!rc) rc = load_journal(m);
  /* Blocking start: the account's nonce and the chain's fees. */
  uint64_t pending = 0;
  if (!rc) rc = tg_eth_get_transaction_count(m->rpc, &pending, &m->from, "pending");
  if (!rc && pending > m->next_nonce) m->next_nonce = pending;
  if (!rc) rc = tg_eth_get_transaction_count(m->rpc, &m->mined_count, &m->from, "latest");
  if (!rc) rc = tg_eth_block_number(m->rpc, &m->head);
  m->scan_ok = 1;
  m->scan_next = m->head + 1; /* what was mined before is looked up by hash (resumed) */
  if (!rc) {
    tg_fee_history fh;
    double pct = 50;
    rc = tg_eth_fee_history(m->rpc, &fh, m->o.fee_blocks, NULL, &pct, 1);
    if (!rc) {
      m->base_next = fh.base_fee[fh.n_blocks];
      tg_u256_zero(&m->prio_est);
      for (size_t i = 0; fh.reward && i < fh.n_blocks; i++) u256_max(&m->prio_est, &fh.reward[i]);
      tg_fee_history_cleanup(&fh);
    }
  }
  if (rc) {
    tg_txm_free(m);
    return rc;
  }
  m->tick_ev = evtimer_new(m->base, on_tick, m);
  m->flush_ev = evtimer_new(m->base, on_flush, m);
  if (!m->tick_ev || !m->flush_ev) abort();
  schedule_tick(m, m->txs.n ? 0 : m->o.poll_ms);
  *out = m;
  return 0;
}

void tg_txm_free(tg_txm *m) {
  if (!m) return;
  m->closing = 1;
  for (txm_call *c = m->calls; c; c = c->next) c->m = NULL;
  m->calls = NULL;
  if (m->tick_ev) event_free(m->tick_ev);
  if (m->flush_ev) event_free(m->flush_ev);
  for (size_t i = 0; i < m->txs.n; i++) {
    txm_tx *t = m->txs.v[i];
    if (t->cb) {
      tg_txm_result r;
      fill_result(t, &r);
      r.err = TG_ECANCELED;
      t->cb(t->arg, &r);
    }
    /* A send still in flight refers to t: its callback sees m == NULL and never touches t. */
    tx_free(t);
  }
  free(m->txs.v);
  free(m->keys.v);
  free(m->signq.v);
  free(m->sendq.v);
  sqlite3_finalize(m->st_insert_tx);
  sqlite3_finalize(m->st_insert_attempt);
  sqlite3_finalize(m->st_update_tx);
  sqlite3_finalize(m->st_get);
  sqlite3_finalize(m->st_key);
  release_owner(m);
  if (m->db) sqlite3_close(m->db);
  free(m);
}
