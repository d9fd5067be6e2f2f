/* Settlement: batch claims of charged channel totals on TollgateChannels, sweeps, a crash-safe journal, and reconciliation reports. */
#ifndef TOLLGATE_SETTLE_H
#define TOLLGATE_SETTLE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "tollgate/deploy.h"
#include "tollgate/rpc.h"
#include "tollgate/secp.h"
#include "tollgate/txm.h"
#include "tollgate/types.h"

#ifdef __cplusplus
extern "C" {
#endif

struct tg_store;

/*
 * One settlement run (blocking; see docs/SETTLEMENT.md):
 *
 *   1. the transaction manager is opened on its journal and every claim or
 *      sweep signed by an earlier, interrupted run is finished first;
 *   2. every channel whose charged total exceeds its mirrored claimed total is
 *      read back from the chain (getChannelState at the confirmed depth), the
 *      mirror is synced (CHANNEL_SYNC) and the charges covered by the on-chain
 *      total are marked settled (CHARGES_SETTLE): this is what makes a restart
 *      exact, since the contract's claimed totals are cumulative;
 *   3. the policy picks the channels due; each gets a settlement item
 *      (planned) with the cumulative amount min(charged, ceiling, balance)
 *      and the last charge it covers;
 *   4. items are grouped by (receiver, receiverAuthorizer, token) and sent as
 *      claimPacked batches sized with eth_estimateGas under the block gas
 *      limit (halved when one does not fit); each item's step follows its
 *      transaction (signed, sent, mined, confirmed) or ends skipped (the
 *      contract's ClaimSkipped reason) or dropped (with why);
 *   5. after N confirmations the mirror is synced again and charges settled,
 *      then everything claimed for each (receiver, token) is swept;
 *   6. the run is closed. A run killed anywhere is resumed by the next one.
 *
 * The gateway key must be each group's receiver or receiverAuthorizer; other
 * channels are dropped with TG_ESETTLE_NOT_RECEIVER as the reason.
 */

typedef struct {
  tg_u256 min_amount;      /* a channel whose claimable increase is below this waits */
  int64_t max_age_ms;      /* ... unless its oldest unclaimed charge is this old (0: no rule) */
  tg_u256 max_gas_price;   /* 0: none; while the base fee is above it only deadlines go */
  unsigned confirmations;  /* default 1 */
  size_t max_batch;        /* items per claim transaction (default 1000) */
  uint64_t max_batch_gas;  /* 0: 3/4 of the block gas limit */
  size_t max_batch_bytes;  /* claimPacked calldata per transaction; 0: TG_SETTLE_MAX_CLAIM_BYTES */
  int verify_vouchers;     /* check 65-byte vouchers off-chain first (default 1): a bad one is
                              dropped without spending gas on it */
  int no_sweep;            /* leave claimed funds in the contract */
  unsigned near_balance_pct; /* 0: off; else a channel is due (like a deadline, but not above
                                the gas ceiling) once tg_settle_near_balance says so */
  unsigned stall_ms;       /* 0: none; else the run ends with TG_ETIMEOUT when the node has
                              accepted none of its claims this long after they were signed, or
                              an earlier run's transactions are still not final this long after
                              the start (the manager keeps them; the next run resumes) */
} tg_settle_policy;

void tg_settle_policy_init(tg_settle_policy *p);

/*
 * The default cap on a claim transaction's calldata: 127 KiB. geth's and reth's pools refuse
 * a transaction above 128 KiB (its whole encoding); 1 KiB is left for the envelope. 1,000
 * items with EOA vouchers take about 126,200 bytes, so the default batch still fits; longer
 * (ERC-1271) signatures make smaller batches.
 */
#define TG_SETTLE_MAX_CLAIM_BYTES (127u * 1024u)

/*
 * The early-claim rule: 1 when charged > claimed and
 * (charged - claimed) * 100 > pct * (balance - claimed), i.e. the unclaimed charges use more
 * than pct % of what the channel still holds (always 1 when balance <= claimed); 0 when pct is
 * 0 or nothing is owed. The daemon's scheduler uses 90 (docs/SETTLEMENT.md).
 */
int tg_settle_near_balance(const tg_u256 *charged, const tg_u256 *claimed, const tg_u256 *balance,
                           unsigned pct);

typedef enum {
  TG_SETTLE_PHASE_RESUME = 0, /* finishing transactions of an interrupted run */
  TG_SETTLE_PHASE_READ,       /* reading channel states */
  TG_SETTLE_PHASE_PLAN,
  TG_SETTLE_PHASE_ESTIMATE,
  TG_SETTLE_PHASE_CLAIM,      /* waiting for claims to confirm */
  TG_SETTLE_PHASE_SWEEP,
  TG_SETTLE_PHASE_DONE
} tg_settle_phase;

typedef void (*tg_settle_progress_fn)(void *arg, tg_settle_phase phase, size_t done, size_t total);

/*
 * Where a run's claims and sweeps go. Without one (submit == NULL) the run opens a
 * transaction manager of its own on `txm_journal` and drives it. A process that already
 * sends from the gateway key (tollgated's `exact` submitter) passes its own manager through
 * this, so one nonce sequence serves both (docs/SETTLEMENT.md). The calls are made from the
 * thread running tg_settle_run; the implementation hands them to the manager's loop.
 */
typedef struct {
  void *ctx;
  /* tg_txm_submit without callback; *id receives the journal id. */
  int (*submit)(void *ctx, const tg_txm_request *req, uint64_t *id);
  /* tg_txm_get. */
  int (*get)(void *ctx, uint64_t id, tg_txm_result *out);
  /* Waits at most timeout_ms until every transaction submitted through it, and every one
   * the manager resumed from its journal, is final: 0, TG_ETIMEOUT, or TG_ECANCELED when
   * the owner is stopping (the run then ends; the journal resumes it). */
  int (*wait_idle)(void *ctx, unsigned timeout_ms);
} tg_settle_sender;

/* Who runs settlement, in the lease holder's name: a daemon and a manual run with the same
 * key are told apart (a manual run is refused while the daemon's lease is live). */
#define TG_SETTLE_HOLDER_CLI "tollgate-settle"
#define TG_SETTLE_HOLDER_DAEMON "tollgated"

typedef struct {
  struct tg_store *store;
  tg_rpc *rpc;
  const tg_seckey *key;          /* the gateway's key (receiver or receiver authorizer) */
  const tg_deployment *deployment;
  const char *txm_journal;       /* the transaction manager's journal (required unless dry_run
                                    or sender) */
  const tg_settle_sender *sender;/* optional: a shared transaction manager (see above) */
  const char *holder_kind;       /* the lease holder is "<kind>:<gateway address>"
                                    (default TG_SETTLE_HOLDER_CLI) */
  tg_settle_policy policy;
  int dry_run;                   /* plan and estimate only: nothing is written or sent */
  unsigned timeout_ms;           /* the whole run (default 600000) */
  int64_t now_ms;                /* 0: the clock (tests pass their own) */
  tg_settle_progress_fn progress;
  void *progress_arg;
} tg_settle_opts;

void tg_settle_opts_init(tg_settle_opts *o);

#define TG_SETTLE_TX_ERROR_MAX 224

/* One transaction of the run (or of an interrupted one it finished). */
typedef struct {
  int is_sweep;
  size_t items;              /* claims: channels in the batch */
  tg_address receiver;
  tg_address token;
  tg_hash tx_hash;           /* zero in a dry run */
  uint64_t gas_estimate;
  uint64_t gas_used;
  tg_u256 fee;               /* gas_used * effective gas price (dry run: estimate * gas price) */
  int status;                /* 1 success, 0 reverted, -1 not sent / failed */
  int resumed;               /* signed by an interrupted run */
  char error[TG_SETTLE_TX_ERROR_MAX]; /* why it failed: the error and the node's own text
                                         ("" when it did not fail) */
} tg_settle_tx;

/* A channel that was not claimed as planned. */
typedef struct {
  tg_hash channel_id;
  int skip_reason;           /* the contract's SKIP_* code, 0 when dropped before sending */
  int err;                   /* a tg_err for drops (0 when skipped) */
  char why[128];
} tg_settle_problem;

typedef struct {
  int64_t run_id;            /* 0 in a dry run */
  int resumed;               /* an open run was resumed */
  size_t channels_unsettled; /* read from the store */
  size_t channels_planned;
  size_t channels_claimed;   /* whose on-chain total rose during the run (resumes included) */
  size_t channels_waiting;   /* not due under the policy */
  size_t channels_problem;
  tg_u256 amount_planned;    /* sum of the planned increases */
  tg_u256 amount_claimed;    /* sum of the on-chain increases */
  tg_u256 amount_swept;
  uint64_t gas_used;
  uint64_t gas_estimate;
  tg_u256 fee_paid;
  tg_u256 gas_price;         /* the price used for dry-run fees */
  tg_settle_tx *txs;
  size_t n_txs;
  tg_settle_problem *problems;
  size_t n_problems;
  /* TG_ESETTLE_RUNNING: who holds the settlement lease, and until when (ms since the epoch) */
  char lease_holder[65];
  int64_t lease_expires_ms;
} tg_settle_report;

void tg_settle_report_cleanup(tg_settle_report *r);

/*
 * Runs one settlement (see above). Returns 0 when every due channel was
 * claimed or reported as a problem and sweeps are done; an error leaves the
 * run open for the next call to resume. *out is filled in both cases (clean
 * it up). Errors: TG_EINVAL, TG_ESETTLE, TG_ETIMEOUT, TG_ESETTLE_RUNNING (another
 * holder's lease is live: out->lease_holder and lease_expires_ms say whose; nothing was
 * done), TG_EBUSY (the journal is managed by another live process), TG_ECANCELED (the
 * sender is stopping), store, RPC and transaction-manager errors.
 */
TG_WARN_UNUSED_RESULT int tg_settle_run(tg_settle_report *out, const tg_settle_opts *opts);

/* Prints the report as a table (one line per transaction, then the totals). */
void tg_settle_report_print(FILE *f, const tg_settle_report *r, int dry_run);
/* Appends it as one JSON object. */
TG_WARN_UNUSED_RESULT int tg_settle_report_json(tg_buf *out, const tg_settle_report *r,
                                                int dry_run);

/* The name of a ClaimSkipped reason: "above ceiling", "no balance", "not increasing",
 * "invalid signature", "unknown". */
const char *tg_settle_skip_name(int reason);

/* ------------------------------------------------------------ reconciliation */

/* One channel: what the gateway charged against what the chain says was claimed. */
typedef struct {
  tg_hash id;
  tg_address payer, receiver, token;
  tg_u256 charged;          /* the channel's running total */
  tg_u256 charged_rows;     /* the sum of its charge rows (must equal charged) */
  uint64_t charges;         /* charge rows */
  uint64_t charges_unsettled;
  tg_u256 claimed;          /* the store's mirror of the on-chain claimed total */
  int has_onchain;          /* read from the chain (an RPC endpoint was given) */
  tg_u256 onchain_claimed;
  tg_u256 onchain_balance;
  tg_u256 outstanding;      /* charged - claimed (on-chain when read), 0 when negative */
} tg_recon_channel;

/* One payer: the sums over its channels, and its running totals per scheme. */
typedef struct {
  tg_address payer;
  size_t channels;
  tg_u256 charged, claimed, onchain_claimed, outstanding;
  tg_u256 totals_channel;   /* payer_totals for the channel scheme (must equal charged) */
  uint64_t count_channel;
  tg_u256 totals_exact;     /* payer_totals for the exact scheme (must equal exact_rows) */
  uint64_t count_exact;
  tg_u256 exact_rows;       /* the sum of its exact charge rows */
  uint64_t exact_row_count;
  size_t exact_payments;    /* its exact_payments rows, and their amounts by transaction status: */
  tg_u256 exact_confirmed;  /*   confirmed on-chain */
  tg_u256 exact_pending;    /*   verified, submitted or mined, not yet confirmed */
  tg_u256 exact_failed;     /*   failed (the call was not charged) */
  tg_u256 exact_onchain;    /* with an RPC endpoint: the amounts whose transaction succeeded */
} tg_recon_payer;

/* One `exact` payment (an EIP-3009 authorization) and its transaction. */
typedef struct {
  tg_address token, payer, to;
  tg_hash nonce;
  tg_u256 amount;
  int status;               /* 0 verified, 1 submitted, 2 mined, 3 confirmed, 4 failed */
  int has_tx;
  tg_hash tx_hash;
  char request_id[129];
  int64_t created_at;       /* ms since the epoch */
  int onchain;              /* with an RPC endpoint, its receipt: 1 success, 2 reverted,
                               0 no receipt (not mined, or no transaction); -1 not read */
  uint64_t block_number;    /* of the receipt */
} tg_recon_exact;

/* The name of an exact payment's status: "verified", "submitted", "mined", "confirmed", "failed". */
const char *tg_recon_exact_status_name(int status);

typedef struct {
  tg_recon_channel *ch;
  size_t n_ch;
  tg_recon_payer *payers;   /* every payer with a channel or an exact payment, by address */
  size_t n_payers;
  tg_recon_exact *exact;    /* every exact payment, oldest first */
  size_t n_exact;
  int has_onchain;
  size_t mismatches;        /* channels whose rows do not add up, or payers whose totals differ */
} tg_recon;

/*
 * Builds the reconciliation of every channel in the store (of the deployment's chain and
 * contract when `d` is given) and of every exact payment; with `rpc` and `d`, on-chain claimed
 * totals are read (getChannelState at the latest block) and the receipt of every exact
 * payment's transaction. Sums are exact (256-bit, in C).
 */
TG_WARN_UNUSED_RESULT int tg_recon_build(tg_recon *out, struct tg_store *st, tg_rpc *rpc,
                                         const tg_deployment *d);
void tg_recon_cleanup(tg_recon *r);

#ifdef __cplusplus
}
#endif
#endif
