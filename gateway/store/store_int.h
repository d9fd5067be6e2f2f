/* The store's backend interface: what store.c (queue, writer, pool) asks of store_sqlite.c and siblings. */
#ifndef TG_STORE_INT_H
#define TG_STORE_INT_H

#include "store/store.h"

/*
 * A backend is a table of functions over its own connection type, like
 * redis's ae_epoll.c / ae_kqueue.c behind ae.c. store.c owns the threads: it
 * opens one writer connection (used only by the writer thread, and by
 * migrations before that thread starts) and a small pool of read
 * connections, each used by one thread at a time. A connection caches its
 * prepared statements.
 *
 * Write protocol, on the writer connection only:
 *   begin -> { sp_begin -> apply... -> sp_release | sp_rollback } ... -> commit
 * apply() runs one op and fills its out fields; its error is the op's result.
 * After an error, txn_lost() says whether the backend dropped the whole
 * transaction (then the batch fails as a whole and nothing is reported
 * durable).
 */
typedef struct tg__store_conn tg__store_conn;

/* One submission as the batch hook sees it: its ops (results filled in place) and its result. */
typedef struct {
  tg_store_op *ops;
  size_t n;
  int err;
} tg__store_sub;

enum { TG__BATCH_DONE = 0, TG__BATCH_RETRY = 1, TG__BATCH_GENERIC = 2 };

/* A channel row as the folded charge path needs it (store.c, fold_charges). */
typedef struct {
  tg_address payer;
  int status;
  tg_u256 charged, ceiling, credit_limit;
} tg__store_chan_state;

/*
 * Optional pieces of a folded batch of channel charges: one read and one or two writes per
 * channel (and of its payer's totals), and one insert per charge. NULL in a backend that
 * applies every op on its own (see store.c, fold_charges, for the rules).
 */
typedef struct {
  /* TG_ENOTFOUND when the channel is unknown */
  int (*chan_state)(tg__store_conn *c, const tg_hash *id, tg__store_chan_state *out);
  /* the charge row alone, with its cumulative_after; sets out_id */
  int (*charge_row)(tg__store_conn *c, tg_store_op *op, const tg_u256 *cumulative_after);
  int (*chan_ceiling)(tg__store_conn *c, const tg_hash *id, const tg_u256 *ceiling,
                      const tg_bytes *sig, const tg_u256 *cap, int64_t now);
  int (*chan_charged)(tg__store_conn *c, const tg_hash *id, const tg_u256 *charged,
                      const tg_u256 *credit_limit, const tg_u256 *cap, uint64_t count, int64_t now,
                      int64_t first_created);
  int (*totals_add)(tg__store_conn *c, const tg_address *payer, tg_store_scheme scheme,
                    const tg_u256 *sum, uint64_t count);
} tg__store_fold_ops;

typedef struct {
  const char *scheme; /* URI scheme, without the colon */
  int (*open)(tg__store_conn **out, const char *target, const tg_store_options *opts, int writer);
  void (*close)(tg__store_conn *c);
  int (*migrate)(tg__store_conn *c, int *applied);
  int (*version)(tg__store_conn *c, int *current, int *latest);

  int (*begin)(tg__store_conn *c);
  int (*commit)(tg__store_conn *c);
  void (*rollback)(tg__store_conn *c);
  int (*sp_begin)(tg__store_conn *c);
  int (*sp_release)(tg__store_conn *c);
  void (*sp_rollback)(tg__store_conn *c);
  int (*txn_lost)(tg__store_conn *c);
  int (*apply)(tg__store_conn *c, tg_store_op *op);
  /*
   * Optional (NULL for a backend whose writer is alone, like SQLite's
   * BEGIN IMMEDIATE): called right after begin with every op of the batch, to
   * take the row locks the batch will need in one deterministic order, so that
   * writers in other processes sharing the database serialize per row and do
   * not deadlock. An error fails the whole batch.
   */
  int (*lock_batch)(tg__store_conn *c, tg_store_op *const *ops, size_t n);
  /*
   * Optional: 1 when the transaction just failed for a transient concurrency
   * reason (deadlock victim, serialization failure) so that running the whole
   * batch again, from begin, is correct. Cleared by begin.
   */
  int (*txn_retry)(tg__store_conn *c);
  /*
   * Optional: runs a whole batch in as few round trips as the backend can (PostgreSQL:
   * libpq pipeline mode, see store_pg.c), from BEGIN to COMMIT, setting each submission's
   * err and its ops' results. Returns TG__BATCH_DONE (committed, or failed as a whole
   * with every err set), TG__BATCH_RETRY (a transient failure, rolled back: run it again)
   * or TG__BATCH_GENERIC (not handled, or rolled back before anything was reported: run
   * the generic statement-by-statement path). *commit_ns is the time of the committing
   * round trip.
   */
  int (*batch)(tg__store_conn *c, tg__store_sub *subs, size_t n, int64_t now,
               uint64_t *commit_ns);
  /* Optional: round trips to the database made by this connection so far. */
  uint64_t (*round_trips)(tg__store_conn *c);
  /*
   * 1 when savepoints cost statements of their own and an op that fails leaves the
   * transaction usable (SQLite): the writer then first runs all ordinary submissions of a
   * batch under ONE savepoint and only when an op fails goes back to one savepoint per
   * submission (store.c, run_optimistic).
   */
  int optimistic_batch;
  const tg__store_fold_ops *fold; /* optional: folded channel charges */

  int (*channel_get)(tg__store_conn *c, const tg_hash *id, tg_store_channel *out);
  /* mode 0: all (or one payer's when payer != NULL); mode 1: unsettled */
  int (*channels_iter)(tg__store_conn *c, int mode, const tg_address *payer,
                       tg_store_channel_fn fn, void *arg);
  /* exactly one of channel_id / payer is non-NULL */
  int (*charges_iter)(tg__store_conn *c, const tg_hash *channel_id, const tg_address *payer,
                      int64_t after_id, size_t limit, tg_store_charge_fn fn, void *arg);
  int (*charge_get)(tg__store_conn *c, const char *request_id, tg_store_charge *out);
  int (*totals_get)(tg__store_conn *c, const tg_address *payer, tg_store_scheme scheme,
                    tg_store_totals *out);
  int (*exact_get)(tg__store_conn *c, const tg_address *token, const tg_address *payer,
                   const tg_hash *nonce, tg_store_exact *out);
  /* every exact payment, oldest first */
  int (*exact_iter)(tg__store_conn *c, tg_store_exact_fn fn, void *arg);
  int (*payid_get)(tg__store_conn *c, const char *id, tg_store_payid *out);
  int (*pass_get)(tg__store_conn *c, const tg_u256 *pass_id, const tg_address *holder,
                  int64_t period_start, tg_store_pass_usage *out);
  int (*run_open_get)(tg__store_conn *c, tg_store_settle_run *out);
  int (*run_items)(tg__store_conn *c, int64_t run_id, tg_store_item_fn fn, void *arg);
  int (*lease_get)(tg__store_conn *c, const char *name, tg_store_lease *out);
  int (*session_get)(tg__store_conn *c, const tg_hash *token_hash, tg_store_session *out);
} tg__store_backend;

extern const tg__store_backend tg__store_sqlite;
/* PostgreSQL, under both URI schemes libpq accepts: postgres://... and postgresql://... */
extern const tg__store_backend tg__store_postgres;
extern const tg__store_backend tg__store_postgresql;

/*
 * Fault injection for tests (curl's habit of failing each step in turn): the
 * next batch the writer takes from the queue fails at `where`. TG__FAULT_COMMIT: COMMIT
 * returns `err` (the batch is rolled back). TG__FAULT_TXN_LOST: the backend
 * drops the transaction after the batch's first submission, as SQLite does
 * on some I/O errors.
 */
enum { TG__FAULT_NONE = 0, TG__FAULT_COMMIT = 1, TG__FAULT_TXN_LOST = 2 };
void tg__store_fault(tg_store *st, int where, int err);

/* Wall clock in Unix milliseconds. */
int64_t tg__store_now_ms(void);

#endif
