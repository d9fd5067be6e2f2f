/* Transaction manager: one sending account's nonces, EIP-1559 fees and replacements, receipts to N confirmations, reorgs, and a SQLite journal for restarts. */
#ifndef TOLLGATE_TXM_H
#define TOLLGATE_TXM_H

#include <stddef.h>
#include <stdint.h>

#include "tollgate/rpc.h"
#include "tollgate/secp.h"
#include "tollgate/types.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * One tg_txm per sending account. It assigns nonces locally, so many
 * transactions are in flight at once; signs EIP-1559 transactions with fees
 * from eth_feeHistory (capped by a ceiling); writes every signed transaction
 * to its journal (SQLite, WAL, synchronous=FULL, one commit per batch of
 * submissions) BEFORE it is sent; and then follows each one on a timer that
 * runs on the tg_rpc's event loop:
 *
 *   - a transaction not mined after `resend_ms` is sent again: as it is when
 *     its fees are still enough (a node that forgot its pending pool), or
 *     replaced with fees bumped by at least `bump_pct` (above the node's 10 %
 *     replacement rule) when the lowest unmined nonce is stuck or the fees
 *     fall under what the chain now asks; every signed version is journaled,
 *     and whichever of them is mined counts, so nothing is ever paid twice;
 *   - "already known" counts as sent; "nonce too low" means that nonce was
 *     mined: the receipts of every version are checked, and if none of ours
 *     was mined the transaction is signed again with a fresh nonce;
 *   - once mined, the receipt is re-read until `confirmations` blocks are on
 *     top; a receipt that disappears or moves to another block (a reorg) sends
 *     the transaction again;
 *   - a transaction the node refuses outright (an invalid one) is reported
 *     failed with the node's text (tg_txm_result.message), and its nonce is
 *     filled with a zero-value self-transfer so that the following nonces are
 *     not blocked;
 *   - sends go in JSON-RPC batches of at most 100 transactions and 1 MiB of
 *     request body; a batch the node refuses whole ("Invalid request", -32600:
 *     a body over its limit, a batch limit) is not a verdict on its
 *     transactions: each is sent again alone.
 *
 * After a crash, tg_txm_open reads the journal and resumes every transaction
 * that was signed but not confirmed, sending the same signed bytes again
 * (same nonce, same hash: never a second payment).
 *
 * Callbacks run on the loop; a call that returns an error never fires its
 * callback, one that returns 0 fires it exactly once (TG_ECANCELED when the
 * manager is freed first). Not thread-safe: one loop.
 */
typedef struct tg_txm tg_txm;

/* Transaction states, as stored in the journal. */
enum {
  TG_TXM_SIGNED = 1,    /* journaled, maybe sent */
  TG_TXM_SENT = 2,      /* the node accepted it */
  TG_TXM_MINED = 3,     /* in a block, fewer than `confirmations` deep */
  TG_TXM_CONFIRMED = 4, /* final */
  TG_TXM_FAILED = 5     /* refused; its nonce was filled by a self-transfer */
};

/* Room for the node's error text kept with a transaction (longer texts are cut). */
#define TG_TXM_MESSAGE_MAX 160

typedef struct {
  uint64_t id;             /* journal id */
  int state;               /* TG_TXM_* */
  int err;                 /* 0, or why it failed (TG_ETXM_FAILED, a node error, TG_ECANCELED) */
  uint64_t nonce;
  tg_hash tx_hash;         /* the mined version's hash (else the latest signed) */
  unsigned versions;       /* signed versions (1 + replacements) */
  uint64_t block_number;
  int status;              /* receipt status: 1 success, 0 reverted */
  uint64_t gas_used;
  tg_u256 effective_gas_price;
  char message[TG_TXM_MESSAGE_MAX]; /* the node's text of its last refusal since it last
                                       accepted it ("" when none): why a TG_TXM_FAILED
                                       transaction failed */
} tg_txm_result;

typedef void (*tg_txm_cb)(void *arg, const tg_txm_result *res);

typedef struct {
  tg_rpc *rpc;               /* required; its loop drives the manager; must outlive it */
  const tg_seckey *key;      /* required; the caller keeps it alive while the manager lives */
  const char *journal_path;  /* SQLite file (created if absent); ":memory:" = no journal */
  unsigned confirmations;    /* blocks on top of the mined one, counting it (default 1) */
  unsigned gas_margin_pct;   /* added to eth_estimateGas (default 20) */
  unsigned bump_pct;         /* replacement fee bump (default 15, at least 11) */
  unsigned resend_ms;        /* resend or replace after this long unmined (default 15000) */
  unsigned poll_ms;          /* how often the chain is polled (default 1000) */
  unsigned max_pending;      /* transactions not yet confirmed (default 10000): TG_ETXM_FULL */
  unsigned fee_blocks;       /* eth_feeHistory window (default 10) */
  tg_u256 max_fee_ceiling;   /* 0 = none; max fee capped to it; while the next base fee
                                is above it, new transactions wait unsigned (no nonce used) */
  tg_u256 min_priority_fee;  /* floor on the priority fee (default 1 gwei when zero) */
  tg_txm_cb on_resumed;      /* fires for transactions resumed from the journal (optional) */
  void *on_resumed_arg;
} tg_txm_opts;

void tg_txm_opts_init(tg_txm_opts *opts);

/*
 * Opens the journal, reads the chain's fees and the account's nonce
 * (blocking), and resumes unfinished transactions. TG_ETXM_JOURNAL when the
 * journal cannot be opened or belongs to another schema; TG_EBUSY while
 * another live process manages the same account in the same journal.
 */
TG_WARN_UNUSED_RESULT int tg_txm_open(tg_txm **out, const tg_txm_opts *opts);
/* Stops: pending callbacks fire with TG_ECANCELED; the journal keeps everything for a restart. */
void tg_txm_free(tg_txm *m);

typedef struct {
  int has_to;               /* 0: contract creation */
  tg_address to;
  tg_u256 value;
  const uint8_t *data;      /* copied */
  size_t data_len;
  uint64_t gas_limit;       /* 0: eth_estimateGas plus the margin */
  const char *key;          /* idempotency key (optional): a second submit with it is TG_EEXISTS */
  /*
   * Optional: fires once, when the node first accepts the transaction (state
   * TG_TXM_SENT, tx_hash set; or TG_TXM_MINED when the receipt came before the
   * node's answer), for callers that answer on submission rather than on the
   * receipt. It never fires for a transaction that fails first.
   */
  tg_txm_cb on_accepted;
  void *accepted_arg;
  /*
   * Optional: topic0 of a log that `to` emits exactly when this transaction
   * succeeds (an EIP-3009 token's AuthorizationUsed for transferWithAuthorization).
   * The manager then learns the outcome from one eth_getLogs per poll for all
   * such transactions instead of a receipt each (far cheaper for the node); the
   * result's gas_used and effective_gas_price are then 0. Without that log by
   * the time the read reaches the head, the receipt is read as usual.
   */
  const tg_hash *success_topic;
} tg_txm_request;

/*
 * Queues a transaction: it gets its nonce, is signed and journaled on the
 * next turn of the loop (many submissions share one journal commit), then
 * sent. *id (when not NULL) receives its journal id at once. `cb` (may be
 * NULL) fires when it is confirmed or has failed. Errors: TG_EINVAL,
 * TG_ETXM_FULL, TG_ETXM_CLOSED, TG_EEXISTS (key already used; *id is the
 * earlier transaction).
 */
TG_WARN_UNUSED_RESULT int tg_txm_submit(tg_txm *m, const tg_txm_request *req, tg_txm_cb cb,
                                        void *arg, uint64_t *id);

/* The state of a transaction by journal id (TG_ENOTFOUND when unknown). */
TG_WARN_UNUSED_RESULT int tg_txm_get(tg_txm *m, uint64_t id, tg_txm_result *out);

/* Transactions submitted and not yet confirmed or failed. */
size_t tg_txm_pending(const tg_txm *m);
/* The sender's address. */
const tg_address *tg_txm_address(const tg_txm *m);

typedef struct {
  uint64_t signed_versions;  /* signatures made (first versions and replacements) */
  uint64_t accepted;         /* transactions the node accepted (first acceptance of each) */
  uint64_t replacements;     /* versions with bumped fees */
  uint64_t resends;          /* the same bytes sent again */
  uint64_t reorgs;           /* mined transactions that left the chain */
  uint64_t renonced;         /* transactions given a fresh nonce */
  uint64_t confirmed;
  uint64_t failed;
  uint64_t journal_commits;
  uint64_t unbatched;        /* sends refused as part of an unreadable batch, sent again alone */
} tg_txm_stats;
void tg_txm_stats_get(const tg_txm *m, tg_txm_stats *out);

/*
 * Runs the loop until nothing is pending or timeout_ms passed (TG_ETIMEOUT).
 * For tools and tests; must not be called from a callback on the loop (TG_EBUSY).
 */
TG_WARN_UNUSED_RESULT int tg_txm_run_until_idle(tg_txm *m, unsigned timeout_ms);

#ifdef __cplusplus
}
#endif
#endif
