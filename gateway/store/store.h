/* The store interface: durable channel, charge and payment state behind one API, with group commit. */
#ifndef TG_STORE_H
#define TG_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "tollgate/types.h"

/*
 * One tg_store is opened from a URI ("sqlite:/path/to/file.db" or
 * "postgresql://user@host:port/db"). The backend is picked by the URI scheme; the rest of the
 * code sees only this header, so nothing backend-specific leaks through:
 * amounts are tg_u256, addresses and hashes fixed-size types, times are Unix
 * milliseconds (int64_t), and every write is a typed operation (tg_store_op),
 * never an SQL string.
 *
 * Writes: tg_store_submit() queues a batch of operations (one "submission")
 * for the store's single writer thread. The writer takes everything queued,
 * runs it in ONE transaction (each submission inside its own savepoint, so a
 * submission that fails a constraint is rolled back alone), commits once (one
 * fsync for all), then fires each submission's callback. A submission is
 * all-or-nothing. The callback runs ON THE WRITER THREAD: it must be short and
 * must not call back into the store synchronously (tg_store_write); callers
 * marshal to their own loop, e.g. with tg_store_submit_evbase(). When a
 * submit call fails it returns an error and its callback never fires.
 *
 * Reads run on the caller's thread on a pooled read connection and see every
 * write whose callback has fired.
 *
 * The money invariant, enforced by the store itself: for every channel,
 * charged <= ceiling + credit_limit (the ceiling is the highest signed
 * voucher's maxClaimableAmount, the credit limit is the one the charge op
 * passes). Charged totals are running totals in the channel row, updated in
 * the same transaction as the charge row they add, so no sum is ever computed
 * in SQL and the totals always equal the sum of their charge rows.
 */

typedef struct tg_store tg_store;

/* Size caps of the text fields (bytes, not counting the NUL). */
#define TG_STORE_REQUEST_ID_MAX 128
#define TG_STORE_ROUTE_MAX 128
#define TG_STORE_MODEL_MAX 128
#define TG_STORE_PAYID_MIN 16 /* x402 payment-identifier: 16..128 characters */
#define TG_STORE_PAYID_MAX 128
#define TG_STORE_HEADER_MAX 2048 /* a recorded PAYMENT-RESPONSE value */
#define TG_STORE_ERROR_MAX 256
#define TG_STORE_NAME_MAX 64 /* lease names and holders */
/* A gateway instance's name (reservations; its liveness lease is "instance:" + name). */
#define TG_STORE_INSTANCE_MAX 48
/* A voucher signature: 65 bytes r || s || v from an EOA, or any length up to this for an
 * ERC-1271 contract wallet (verified on-chain). Same cap as TG_X402_SIG_MAX. */
#define TG_STORE_SIG_MAX 1024

/* Write queue cap: a submission that would take the queued plus in-flight operations past
 * this many gets TG_EBUSY. */
#define TG_STORE_QUEUE_MAX_OPS 65536
/* At most this many operations per submission. */
#define TG_STORE_SUBMIT_MAX_OPS 256

typedef enum {
  TG_SCHEME_EXACT = 0,
  TG_SCHEME_CHANNEL = 1,
  TG_SCHEME_PASS = 2
} tg_store_scheme;

typedef enum {
  TG_CHANNEL_OPEN = 0,
  TG_CHANNEL_WITHDRAWING = 1,
  TG_CHANNEL_CLOSED = 2
} tg_store_channel_status;

typedef enum {
  TG_EXACT_VERIFIED = 0,
  TG_EXACT_SUBMITTED = 1,
  TG_EXACT_MINED = 2,
  TG_EXACT_CONFIRMED = 3,
  TG_EXACT_FAILED = 4
} tg_store_exact_status;

typedef enum {
  TG_SETTLE_PLANNED = 0,
  TG_SETTLE_SIGNED = 1,
  TG_SETTLE_SENT = 2,
  TG_SETTLE_MINED = 3,
  TG_SETTLE_CONFIRMED = 4,
  TG_SETTLE_SKIPPED = 5, /* the contract skipped the item (see error) */
  TG_SETTLE_DROPPED = 6  /* given up, with the reason in error */
} tg_store_settle_step;

typedef enum {
  TG_RUN_OPEN = 0,
  TG_RUN_DONE = 1,
  TG_RUN_FAILED = 2
} tg_store_run_status;

/* A channel's immutable configuration (x402 batch-settlement ChannelConfig, plus where it lives). */
typedef struct {
  uint64_t chain_id;
  tg_address contract;
  tg_address payer;
  tg_address payer_authorizer;
  tg_address receiver;
  tg_address receiver_authorizer;
  tg_address token;
  uint64_t withdraw_delay; /* seconds */
  tg_hash salt;
} tg_store_channel_config;

/* The channel's on-chain state as last read from the chain. */
typedef struct {
  tg_u256 balance;
  tg_u256 total_claimed;
  uint64_t withdraw_requested_at; /* Unix seconds; 0 when none */
  uint64_t refund_nonce;
  uint64_t synced_block;          /* the block this mirror was read at */
  tg_store_channel_status status;
} tg_store_channel_chain;

typedef struct {
  tg_hash id;
  tg_store_channel_config cfg;
  tg_store_channel_chain chain;
  /* Off-chain truth. */
  tg_u256 charged;        /* chargedCumulativeAmount: sum of this channel's charge rows */
  tg_u256 ceiling;        /* highest signed maxClaimableAmount (signedMaxClaimable) */
  uint8_t ceiling_sig[TG_STORE_SIG_MAX]; /* its signature, ceiling_sig_len bytes */
  size_t ceiling_sig_len; /* 0 when no voucher was recorded */
  tg_u256 credit_limit;   /* the credit limit applied by the latest charge */
  uint64_t charge_count;  /* number of charge rows */
  int64_t first_unclaimed_at; /* ms; 0 when nothing charged is unclaimed */
  int64_t created_at, updated_at;
} tg_store_channel;

/* A charge row as read back. */
typedef struct {
  int64_t id;
  char request_id[TG_STORE_REQUEST_ID_MAX + 1];
  tg_address payer;
  tg_store_scheme scheme;
  char route[TG_STORE_ROUTE_MAX + 1];
  char model[TG_STORE_MODEL_MAX + 1];
  uint64_t input_tokens, output_tokens;
  tg_u256 amount;
  int has_channel;
  tg_hash channel_id;
  tg_u256 cumulative_after; /* the channel's charged total right after this charge */
  int64_t created_at;
  int settled;
} tg_store_charge;

typedef struct {
  tg_address token;
  tg_hash nonce;
  tg_address payer;
  tg_address to;
  tg_u256 amount;
  uint64_t valid_after, valid_before; /* Unix seconds (EIP-3009) */
  int has_tx;
  tg_hash tx_hash;
  tg_store_exact_status status;
  char request_id[TG_STORE_REQUEST_ID_MAX + 1];
  int64_t created_at, updated_at;
} tg_store_exact;

typedef struct {
  char id[TG_STORE_PAYID_MAX + 1];
  tg_address payer;
  tg_hash request_hash;  /* hash of the payment payload: same id + other hash = 409 */
  int status;            /* the HTTP status that was answered */
  char response_header[TG_STORE_HEADER_MAX + 1]; /* PAYMENT-RESPONSE value, "" when none */
  char request_id[TG_STORE_REQUEST_ID_MAX + 1];  /* the charge's request id, "" when none */
  int64_t created_at;
} tg_store_payid;

typedef struct {
  tg_u256 pass_id;       /* the ERC-1155 token id (the plan) */
  tg_address holder;
  int64_t period_start;  /* ms: start of the quota period */
  uint64_t calls;
  uint64_t tokens;
} tg_store_pass_usage;

/* A sign-in session as stored. */
typedef struct {
  tg_hash token_hash;
  tg_address address;
  int64_t created_at, expires_at; /* ms */
} tg_store_session;

typedef struct {
  int64_t id;
  int64_t started_at, finished_at;
  tg_store_run_status status;
} tg_store_settle_run;

typedef struct {
  int64_t run_id;
  tg_hash channel_id;
  tg_u256 amount;         /* the cumulative amount claimed for this channel */
  int64_t through_charge; /* last charge id the claim covers */
  tg_store_settle_step step;
  int has_tx;
  tg_hash tx_hash;
  char error[TG_STORE_ERROR_MAX + 1];
  int64_t updated_at;
} tg_store_settle_item;

typedef struct {
  char name[TG_STORE_NAME_MAX + 1];
  char holder[TG_STORE_NAME_MAX + 1];
  int64_t expires_at;
} tg_store_lease;

/* Running totals per payer and scheme (kept by charges, never summed by SQL). */
typedef struct {
  tg_address payer;
  tg_store_scheme scheme;
  tg_u256 charged;
  uint64_t count;
} tg_store_totals;

/* ------------------------------------------------------------------------- */
/* Write operations. Strings are NUL-terminated; submit copies them, so the
 * caller's ops and strings may be freed as soon as submit returns. Fields
 * marked "out" are filled by the writer and readable in the callback. */

typedef enum {
  TG_STORE_OP_CHANNEL_PUT = 1, /* insert config + mirror, or update the mirror */
  TG_STORE_OP_CHANNEL_SYNC,    /* update the on-chain mirror (ignored when older) */
  TG_STORE_OP_VOUCHER,         /* raise the ceiling (no-op when not higher) */
  TG_STORE_OP_CHARGE,          /* insert a charge and raise the channel's total */
  TG_STORE_OP_CHARGES_SETTLE,  /* mark a channel's charges up to an id settled */
  TG_STORE_OP_EXACT_PUT,       /* record a verified EIP-3009 authorization */
  TG_STORE_OP_EXACT_UPDATE,    /* its status and transaction hash */
  TG_STORE_OP_PAYID_PUT,       /* record a payment-identifier and its answer */
  TG_STORE_OP_PASS_USE,        /* add calls/tokens to a pass usage counter */
  TG_STORE_OP_RUN_BEGIN,       /* start a settlement run */
  TG_STORE_OP_RUN_END,         /* finish it */
  TG_STORE_OP_ITEM_PUT,        /* insert or advance a settlement item */
  TG_STORE_OP_LEASE_ACQUIRE,   /* take or renew a lease; TG_ESTORE_LEASE if held */
  TG_STORE_OP_LEASE_RELEASE,   /* give it up (no-op if not the holder) */
  TG_STORE_OP_NONCE_PUT,       /* record a sign-in nonce the gateway issued */
  TG_STORE_OP_NONCE_USE,       /* consume it: TG_ESIWE_NONCE when unknown, used or expired */
  TG_STORE_OP_SESSION_PUT,     /* record a session (by the hash of its token) */
  TG_STORE_OP_RESERVE,         /* hold a call's maximum price on a channel (PostgreSQL) */
  TG_STORE_OP_UNRESERVE,       /* give a hold back (the call failed; no-op when gone) */
  TG_STORE_OP_SESSION_REVOKE   /* delete a session (by the hash of its token; no-op when gone) */
} tg_store_op_kind;

typedef struct {
  tg_hash id;
  tg_store_channel_config cfg; /* CHANNEL_PUT only; must match on an existing row */
  tg_store_channel_chain chain;
  int out_applied;             /* out: 0 when the mirror was older than the stored one */
} tg_store_op_channel;

typedef struct {
  tg_hash channel_id;
  tg_u256 max_claimable;
  tg_bytes sig;                /* 1..TG_STORE_SIG_MAX bytes; copied by submit */
  int out_raised;              /* out: 1 when the ceiling rose */
} tg_store_op_voucher;

typedef struct {
  const char *request_id;      /* unique; 1..TG_STORE_REQUEST_ID_MAX */
  tg_address payer;
  tg_store_scheme scheme;
  const char *route;           /* may be NULL */
  const char *model;           /* may be NULL */
  uint64_t input_tokens, output_tokens;
  tg_u256 amount;
  int has_channel;             /* required for TG_SCHEME_CHANNEL */
  tg_hash channel_id;
  tg_u256 credit_limit;        /* the payer's credit limit on this channel */
  int64_t created_at;          /* ms; 0 = now */
  int release_reservation;     /* 1: the call's RESERVE hold (same request id) ends here */
  const char *hold_id;         /* with release_reservation: the hold to end when it is not the
                                  call's own (a headroom unit, docs/STORE.md); NULL: request_id */
  int64_t out_id;              /* out: the charge id */
  tg_u256 out_charged;         /* out: the channel's charged total after it */
  /* out, channel charges on PostgreSQL: the row as the charge left it, and whether
   * release_reservation found its hold (0: it had lapsed or was reclaimed) */
  int out_hold_found;
  tg_u256 out_reserved, out_ceiling, out_balance;
  uint64_t out_withdraw_requested_at;
} tg_store_op_charge;

typedef struct {
  tg_hash channel_id;
  int64_t through_charge;      /* charges with id <= this are now settled */
  int64_t out_count;           /* out: rows newly marked */
} tg_store_op_settle;

typedef struct {
  tg_address token;
  tg_hash nonce;               /* (token, payer, nonce) is unique: replays are refused */
  tg_address payer;
  tg_address to;
  tg_u256 amount;
  uint64_t valid_after, valid_before;
  const char *request_id;      /* may be NULL */
  tg_store_exact_status status;
  int has_tx;
  tg_hash tx_hash;
  int receipt;                 /* EXACT_UPDATE of a receipt's outcome: moves only a row already
                                  `submitted` or `mined` (charged with it); TG_ENOTFOUND
                                  while it is still `verified` (or gone) */
} tg_store_op_exact;

typedef struct {
  const char *id;              /* TG_STORE_PAYID_MIN..MAX characters, unique */
  tg_address payer;
  tg_hash request_hash;
  int status;
  const char *response_header; /* may be NULL */
  const char *request_id;      /* may be NULL */
} tg_store_op_payid;

typedef struct {
  tg_u256 pass_id;
  tg_address holder;
  int64_t period_start;
  uint64_t calls, tokens;      /* added to the counters */
  uint64_t calls_back;         /* then subtracted from calls, down to 0 at most (a quota lease
                                * given back: docs/STORE.md "Pass usage leases") */
  uint64_t out_calls, out_tokens; /* out: the counters after */
} tg_store_op_pass;

#define TG_STORE_NONCE_MAX 64

typedef struct {
  char nonce[TG_STORE_NONCE_MAX + 1]; /* 8..64 letters and digits (EIP-4361) */
  int64_t expires_at;          /* NONCE_PUT: ms */
  int64_t used_at;             /* NONCE_PUT: 0 (issued, to be used once by NONCE_USE), or ms:
                                * recorded as used already (an agent's nonce). An existing
                                * nonce fails the op with TG_EEXISTS. */
} tg_store_op_nonce;

typedef struct {
  tg_hash token_hash;          /* keccak256 of the bearer token: the token itself is never stored */
  tg_address address;          /* who signed in */
  int64_t expires_at;          /* ms */
} tg_store_op_session;

typedef struct {
  int64_t run_id;              /* RUN_END; out for RUN_BEGIN */
  tg_store_run_status status;  /* RUN_END */
} tg_store_op_run;

typedef struct {
  int64_t run_id;
  tg_hash channel_id;
  tg_u256 amount;
  int64_t through_charge;
  tg_store_settle_step step;
  int has_tx;
  tg_hash tx_hash;
  const char *error;           /* may be NULL */
} tg_store_op_item;

typedef struct {
  const char *name;            /* 1..TG_STORE_NAME_MAX */
  const char *holder;          /* 1..TG_STORE_NAME_MAX */
  int64_t ttl_ms;              /* ACQUIRE: lease length from now */
  int64_t out_expires_at;      /* out */
} tg_store_op_lease;

/*
 * Shared admission across gateway instances (PostgreSQL; SQLite answers
 * TG_EUNSUPPORTED): a reservation row per call in flight and the channel's
 * running `reserved` total, both changed under the channel's row lock.
 * RESERVE admits when charged + reserved + amount <= min(ceiling, balance) +
 * credit_limit (else TG_ECHANNEL_SHORT; TG_ECHANNEL_WITHDRAWING,
 * TG_ESTORE_CHANNEL_CLOSED, TG_ENOTFOUND); before refusing it reclaims the
 * channel's lapsed holds: past expires_at, or of an instance whose liveness
 * lease ("instance:" + name) is gone or expired. A CHARGE with
 * release_reservation ends the hold; UNRESERVE gives it back.
 */
typedef struct {
  tg_hash channel_id;
  const char *request_id;      /* the call's request id (1..TG_STORE_REQUEST_ID_MAX), unique */
  const char *instance;        /* RESERVE: 1..TG_STORE_INSTANCE_MAX */
  tg_u256 amount;              /* RESERVE: the call's maximum price */
  tg_u256 credit_limit;        /* RESERVE */
  int64_t ttl_ms;              /* RESERVE: the hold lapses after this even if its instance lives */
  /* out (also on a TG_ECHANNEL_SHORT refusal): the channel as the op saw it */
  tg_u256 out_charged, out_reserved, out_ceiling, out_balance, out_total_claimed;
  uint64_t out_withdraw_requested_at;
  int64_t out_reclaimed;       /* lapsed holds reclaimed by this op */
} tg_store_op_reserve;

typedef struct {
  tg_store_op_kind kind;
  int64_t now;                 /* ms; 0 = the writer's clock (set before the op runs) */
  int err;                     /* out: this op's result (0 or a tg_err) */
  union {
    tg_store_op_channel channel; /* CHANNEL_PUT, CHANNEL_SYNC */
    tg_store_op_voucher voucher;
    tg_store_op_charge charge;
    tg_store_op_settle settle;
    tg_store_op_exact exact;     /* EXACT_PUT, EXACT_UPDATE (token, payer, nonce, status, tx) */
    tg_store_op_payid payid;
    tg_store_op_pass pass;
    tg_store_op_run run;         /* RUN_BEGIN, RUN_END */
    tg_store_op_item item;
    tg_store_op_lease lease;     /* LEASE_ACQUIRE, LEASE_RELEASE */
    tg_store_op_nonce nonce;     /* NONCE_PUT, NONCE_USE */
    tg_store_op_session session; /* SESSION_PUT, SESSION_REVOKE (token_hash only) */
    tg_store_op_reserve reserve; /* RESERVE, UNRESERVE */
  } u;
} tg_store_op;

/*
 * Fires once per accepted submission, on the writer thread (or on the
 * event_base for tg_store_submit_evbase). `err` is 0 when every op succeeded
 * and is durable; otherwise the first failing op's error, and nothing of the
 * submission was written. `ops` is the store's copy with the out fields filled
 * (op->err tells which op failed); it is valid only during the callback.
 */
typedef void (*tg_store_cb)(void *arg, int err, const tg_store_op *ops, size_t n);

/* ------------------------------------------------------------------------- */
/* Lifecycle. */

typedef struct {
  int busy_timeout_ms;      /* 0 = 5000 */
  size_t queue_max_ops;     /* 0 = TG_STORE_QUEUE_MAX_OPS */
  size_t batch_max;         /* submissions per transaction; 0 = 4096 */
  int no_migrate;           /* 1: refuse to open a database whose schema is not current
                               (older: TG_ESTORE_SCHEMA_OLD, newer: TG_ESTORE_SCHEMA) */
  int init_empty;           /* with no_migrate: a database without any schema yet is created */
} tg_store_options;

/*
 * Opens the store at `uri` and starts its writer thread. Applies pending
 * migrations unless opts->no_migrate (then an old schema is TG_ESTORE_SCHEMA).
 * `opts` may be NULL. Errors: TG_ESTORE_URI, TG_ESTORE, TG_ESTORE_SCHEMA.
 */
TG_WARN_UNUSED_RESULT int tg_store_open(tg_store **out, const char *uri,
                                        const tg_store_options *opts);
/*
 * Drains the queue (every accepted submission's callback fires), stops the
 * writer, closes. NULL-safe. Not from a store callback. Callbacks bound for an
 * event_base that have not run yet still run later, on that base.
 */
void tg_store_close(tg_store *st);

/* Applies pending migrations (what `tollgated --migrate` runs); *applied counts them. */
TG_WARN_UNUSED_RESULT int tg_store_migrate(const char *uri, int *applied);
/* The schema version in the database and the newest this build knows. */
TG_WARN_UNUSED_RESULT int tg_store_schema_version(tg_store *st, int *current, int *latest);

/* ------------------------------------------------------------------------- */
/* Writes. */

/*
 * Queues `n` ops (1..TG_STORE_SUBMIT_MAX_OPS) as one all-or-nothing
 * submission. Validates sizes first (TG_EINVAL, TG_ETOOBIG). TG_EBUSY when the
 * queue is full (backpressure: answer 503 or retry later), TG_ESTORE_CLOSED
 * after close began. On error the callback never fires.
 */
TG_WARN_UNUSED_RESULT int tg_store_submit(tg_store *st, const tg_store_op *ops, size_t n,
                                          tg_store_cb cb, void *arg);

struct event_base;
/*
 * The same, but the callback fires on `base`'s loop thread. The base must be
 * thread-safe: evthread_use_pthreads() called before event_base_new().
 */
TG_WARN_UNUSED_RESULT int tg_store_submit_evbase(tg_store *st, const tg_store_op *ops, size_t n,
                                                 struct event_base *base, tg_store_cb cb,
                                                 void *arg);

/*
 * Two submissions queued together, so that the writer takes them in one batch (one group
 * commit, one round trip on PostgreSQL's remembered rows): the first delivered on `base`
 * like tg_store_submit_evbase, the second on the writer thread like tg_store_submit. Each
 * commits or fails on its own. Used to take a headroom slice with a charge (docs/STORE.md).
 */
int tg_store_submit_pair(tg_store *st, const tg_store_op *ops, size_t n,
                         struct event_base *base, tg_store_cb cb, void *arg,
                         const tg_store_op *ops2, size_t n2, tg_store_cb cb2, void *arg2);

/*
 * Synchronous: submits and waits for the commit; `ops` out fields are filled.
 * From a store callback (the writer thread) it refuses with TG_EPERM instead
 * of deadlocking. Returns the submission's result.
 */
TG_WARN_UNUSED_RESULT int tg_store_write(tg_store *st, tg_store_op *ops, size_t n);

/* Commit-latency histogram buckets, for /metrics: upper bounds in microseconds, the last one
 * UINT64_MAX (+Inf). Counts are per bucket, not cumulative. */
#define TG_STORE_HIST_BUCKETS 10
extern const uint64_t tg_store_commit_bucket_us[TG_STORE_HIST_BUCKETS];

/* Writer statistics, for /metrics and the benchmark. */
typedef struct {
  uint64_t commits;         /* transactions committed */
  uint64_t submissions;     /* submissions completed */
  uint64_t ops;             /* operations completed */
  uint64_t failed;          /* submissions rolled back */
  uint64_t commit_ns_total; /* time in COMMIT (the fsync), summed */
  uint64_t commit_ns_max;
  uint64_t queue_ops;       /* operations queued or being written right now */
  uint64_t commit_hist[TG_STORE_HIST_BUCKETS]; /* COMMIT durations per bucket */
  uint64_t retries;         /* batches run again after a deadlock or serialization failure */
  uint64_t folded_ops;      /* usage increments applied folded (one write per pass per commit) */
  uint64_t round_trips;     /* the writer's round trips to the database server (0: in-process) */
  uint64_t batch_ns_total;  /* time in the batches' statements, BEGIN to before COMMIT, summed */
  uint64_t wait_ns_total;   /* per submission, queued to callback due, summed (latency) */
  uint64_t cpu_ns_total;    /* the writer thread's CPU time in batches (statements and COMMIT) */
  uint64_t folded_charges;  /* channel charge submissions applied folded (fold_charges) */
} tg_store_stats;

void tg_store_get_stats(tg_store *st, tg_store_stats *out);

/* ------------------------------------------------------------------------- */
/* Reads (any thread). Each returns 0, TG_ENOTFOUND, or an error. */

TG_WARN_UNUSED_RESULT int tg_store_channel_get(tg_store *st, const tg_hash *id,
                                               tg_store_channel *out);
/* Iteration stops early when `fn` returns non-zero (that value is returned). */
typedef int (*tg_store_channel_fn)(void *arg, const tg_store_channel *ch);
typedef int (*tg_store_charge_fn)(void *arg, const tg_store_charge *c);
typedef int (*tg_store_item_fn)(void *arg, const tg_store_settle_item *it);

/* Channels whose charged total exceeds what was claimed on-chain, oldest unclaimed first. */
TG_WARN_UNUSED_RESULT int tg_store_channels_unsettled(tg_store *st, tg_store_channel_fn fn,
                                                      void *arg);
/* Every channel of a payer (all channels when payer is NULL), by id. */
TG_WARN_UNUSED_RESULT int tg_store_channels_list(tg_store *st, const tg_address *payer,
                                                 tg_store_channel_fn fn, void *arg);
/* Charges of a channel, by id, those with id > after_id, at most `limit` (0 = no limit). */
TG_WARN_UNUSED_RESULT int tg_store_charges_by_channel(tg_store *st, const tg_hash *channel_id,
                                                      int64_t after_id, size_t limit,
                                                      tg_store_charge_fn fn, void *arg);
TG_WARN_UNUSED_RESULT int tg_store_charges_by_payer(tg_store *st, const tg_address *payer,
                                                    int64_t after_id, size_t limit,
                                                    tg_store_charge_fn fn, void *arg);
TG_WARN_UNUSED_RESULT int tg_store_charge_get(tg_store *st, const char *request_id,
                                              tg_store_charge *out);
/* The running totals of a payer for one scheme (zero totals when none). */
TG_WARN_UNUSED_RESULT int tg_store_totals_get(tg_store *st, const tg_address *payer,
                                              tg_store_scheme scheme, tg_store_totals *out);
/* EIP-3009 nonces are per authorizer: a row is named by (token, payer, nonce). */
TG_WARN_UNUSED_RESULT int tg_store_exact_get(tg_store *st, const tg_address *token,
                                             const tg_address *payer, const tg_hash *nonce,
                                             tg_store_exact *out);
/* Every `exact` payment (oldest first, then by token, payer and nonce), with its transaction
 * status; a non-zero return of fn stops and is returned. */
typedef int (*tg_store_exact_fn)(void *arg, const tg_store_exact *e);
TG_WARN_UNUSED_RESULT int tg_store_exact_list(tg_store *st, tg_store_exact_fn fn, void *arg);
TG_WARN_UNUSED_RESULT int tg_store_payid_get(tg_store *st, const char *id, tg_store_payid *out);
TG_WARN_UNUSED_RESULT int tg_store_pass_usage_get(tg_store *st, const tg_u256 *pass_id,
                                                  const tg_address *holder, int64_t period_start,
                                                  tg_store_pass_usage *out);
/* A session by its token's hash (expired ones too: the caller compares expires_at). */
TG_WARN_UNUSED_RESULT int tg_store_session_get(tg_store *st, const tg_hash *token_hash,
                                               tg_store_session *out);
/* The newest run that is still open (TG_ENOTFOUND when none): a restarted run resumes it. */
TG_WARN_UNUSED_RESULT int tg_store_run_open_get(tg_store *st, tg_store_settle_run *out);
TG_WARN_UNUSED_RESULT int tg_store_run_items(tg_store *st, int64_t run_id, tg_store_item_fn fn,
                                             void *arg);
TG_WARN_UNUSED_RESULT int tg_store_lease_get(tg_store *st, const char *name, tg_store_lease *out);

/* Names for logs: "exact", "channel", "pass"; "verified", ...; "planned", ... */
const char *tg_store_scheme_name(tg_store_scheme s);
const char *tg_store_exact_status_name(tg_store_exact_status s);
const char *tg_store_settle_step_name(tg_store_settle_step s);

#endif
