/* The daemon's chain side: on-chain reads for admission and the `exact` submitter thread. */
#ifndef TG_DAEMON_CHAIN_H
#define TG_DAEMON_CHAIN_H

#include "pay/pay.h"
#include "tollgate/secp.h"
#include "tollgate/settle.h"
#include "tollgate/types.h"

/*
 * Two JSON-RPC clients: one for short blocking reads that workers make under
 * a mutex (channel state of a channel seen for the first time, EIP-3009
 * authorization state and balance), and one driving the transaction manager
 * on a thread of its own. Workers hand `exact` submissions to that thread
 * through a queue; results come back on the worker's loop with
 * event_base_once (libevent is built thread-safe by the server).
 */
typedef struct tg_chain tg_chain;

typedef struct {
  const char *const *rpc_urls;
  size_t n_rpc_urls;
  uint64_t chain_id;
  const tg_seckey *key;        /* the gateway's account: sends transferWithAuthorization */
  const char *journal_path;    /* the transaction manager's journal */
  tg_address channels;         /* TollgateChannels */
  tg_address passes;           /* TollgatePasses (zero: none) */
  int wait_receipt;            /* exact: answer after the receipt, not on submission */
  unsigned confirmations;
} tg_chain_opts;

TG_WARN_UNUSED_RESULT int tg_chain_new(tg_chain **out, char *err, size_t err_len,
                                       const tg_chain_opts *o);
/* Stops the thread; pending submissions are journaled and resume at the next start. */
void tg_chain_free(tg_chain *c);

struct tg_ledger;
struct tg_store;
/*
 * Starts the channel follower: every stored channel is re-read now, then the
 * contract's logs are followed every interval_ms (0: 1000) and the channels
 * they name (deposits, withdrawals, refunds) are re-read and mirrored into the
 * ledger and the store. Both must outlive the chain (tg_chain_free stops it).
 */
TG_WARN_UNUSED_RESULT int tg_chain_follow(tg_chain *c, struct tg_ledger *ledger,
                                          struct tg_store *store, unsigned interval_ms);

/*
 * Called on the follower thread for every WithdrawInitiated log (the channel
 * id), after the channel was re-read and mirrored. Set before tg_chain_follow.
 */
typedef void (*tg_chain_withdraw_fn)(void *arg, const tg_hash *channel);
void tg_chain_on_withdraw(tg_chain *c, tg_chain_withdraw_fn fn, void *arg);

/*
 * Access passes: on the follower thread, `changed` is called once per poll in
 * which the pass contract logged anything (transfers, delegations,
 * purchases, renewals, grants), and `head_time` with the newest block's
 * timestamp. Set before tg_chain_follow; the follower then also follows the
 * pass contract.
 */
typedef struct {
  void *arg;
  void (*changed)(void *arg);
  void (*head_time)(void *arg, uint64_t unix_s);
} tg_chain_pass_hooks;
void tg_chain_on_passes(tg_chain *c, const tg_chain_pass_hooks *h);
/*
 * `exact` transfers: `fn` is called on the chain thread when a transfer's outcome is known
 * (confirmed, reverted, or failed for good), before the worker hears of it; NULL stops it.
 * The payment layer ends the payer's pending value there (tg_pay_exact_done). Thread-safe:
 * once tg_chain_on_exact_done(c, NULL, NULL) returns, `fn` is not running and not called.
 */
void tg_chain_on_exact_done(tg_chain *c, void (*fn)(void *arg, const tg_address *from, const tg_hash *nonce),
                            void *arg);
/* TollgatePasses.entitled(user, planId), a blocking read (tg_passes_chain.entitled). */
int tg_chain_pass_entitled(void *ctx, const tg_address *user, const tg_u256 *plan_id, int *ok,
                           uint64_t *until, tg_address *holder);
/* ERC-1271 isValidSignature, a blocking read (ctx is the tg_chain). */
int tg_chain_erc1271(void *ctx, const tg_address *wallet, const tg_hash *digest, const uint8_t *sig,
                     size_t sig_len, int *valid);

/*
 * Figures for /metrics, readable from any thread: each client's counters are
 * copied into atomics by the thread that owns the client (after each blocking
 * read, after each follower poll, and every 500 ms on the chain thread).
 */
typedef struct {
  uint64_t rpc_calls;          /* JSON-RPC exchanges, every client (reads, follower, manager) */
  uint64_t rpc_errors;         /* of those, failed exchanges (transport, timeout, HTTP status) */
  uint64_t tx_in_flight;       /* transactions sent and not yet confirmed or failed */
  uint64_t last_block;         /* the newest block number seen (0 before the first) */
} tg_chain_stats;
void tg_chain_stats_get(tg_chain *c, tg_chain_stats *out);

/*
 * Records the receipt outcome of every `exact` transfer in the store: `confirmed` once mined
 * and `confirmations` deep with success, `failed` when it reverted or was refused after the
 * call had been answered (docs/SETTLEMENT.md, "Reconciliation"). A thread of its own writes
 * them, many per commit; tg_chain_free writes what is queued, then stops it. The store must
 * outlive the chain. Call once, before the first submission.
 */
TG_WARN_UNUSED_RESULT int tg_chain_record_exact(tg_chain *c, struct tg_store *store);

/* Stops the follower (no more tg_chain_on_withdraw calls); tg_chain_free does it too. */
void tg_chain_follow_stop(tg_chain *c);

/*
 * Settlement runs (on another thread) send their claims and sweeps through this chain's
 * transaction manager, so they share the gateway key's nonce sequence with `exact`
 * transfers. wait_idle also waits for every transaction resumed from the journal at start.
 * tg_chain_settle_cancel makes every later call return TG_ECANCELED (a run in progress
 * then ends, and the journal resumes it): call it before stopping the scheduler.
 */
tg_settle_sender tg_chain_settle_sender(tg_chain *c);
void tg_chain_settle_cancel(tg_chain *c);

/* The payment layer's interfaces, backed by this chain. */
tg_pay_chain tg_chain_pay_reader(tg_chain *c);
tg_pay_exact_backend tg_chain_exact_backend(tg_chain *c);

#endif
