/* The payment layer's interface to the HTTP layer: admit a call, then settle its charge. */
#ifndef TG_PAY_H
#define TG_PAY_H

#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "tollgate/types.h"
#include "tollgate/x402.h"

struct event_base;
struct tg_store;
struct tg_ledger;

/*
 * A call flows http -> pay -> store. The HTTP layer owns the request; for
 * every request on a priced route it asks the payment layer to admit it,
 * proxies it upstream only when admitted, and reports the outcome so that
 * the payment layer charges what was delivered (nothing for a failed call).
 *
 *   tg_pay_admit()     parses PAYMENT-SIGNATURE / Authorization, verifies, and
 *                      reserves the call's maximum price. The answer is
 *                      either "admitted" with a reservation, or a refusal
 *                      carrying the status (402/400/403/409) and the headers
 *                      and JSON body to send (PAYMENT-REQUIRED etc.).
 *   tg_pay_complete()  after the upstream answered (or failed): prices the
 *                      usage, charges it durably (group commit), releases
 *                      the rest, and fills the PAYMENT-RESPONSE header. The
 *                      callback fires exactly once, on the caller's loop,
 *                      once the charge is on disk; only then may the HTTP
 *                      layer send the bytes that depend on it.
 *
 * Both calls are asynchronous because they may wait on the store's group
 * commit or, for `exact`, on the transaction manager; either callback may
 * also fire before the call returns (a refusal, a pass call admitted on a
 * quota lease, which has nothing left to write).
 */

typedef struct tg_pay tg_pay;               /* the payment layer (one per daemon) */
typedef struct tg_pay_call tg_pay_call;     /* one admitted call's reservation */

/* What the HTTP layer knows about a request when it asks for admission. */
typedef struct {
  const char *request_id;    /* unique per request (for logs and charge records) */
  const char *method;        /* "POST" */
  const char *path;          /* "/v1/chat/completions" (no query) */
  const char *route;         /* the matched route's name */
  const char *resource_url;  /* absolute URL of the resource, for PAYMENT-REQUIRED */
  const char *model;         /* "model" from a JSON body, or NULL */
  const char *payment_signature; /* PAYMENT-SIGNATURE header or NULL */
  const char *authorization; /* Authorization header or NULL (pass sessions) */
  const char *payment_identifier; /* x402 payment-identifier extension, or NULL */
  const char *host;          /* Host header (the sign-in domain when none is configured), or NULL */
  const char *agent_auth;    /* X-Tollgate-Auth header (per-request signed auth), or NULL */
} tg_pay_request;

/* A header to add to the answer. Strings are owned by the tg_pay_call / decision. */
typedef struct {
  const char *name;
  const char *value;
} tg_pay_header;

#define TG_PAY_MAX_HEADERS 4

typedef struct {
  int admitted;            /* 1: proxy the call; 0: answer with status/body */
  int status;              /* HTTP status when refused (402, 400, 403, 409, 503) */
  tg_pay_header headers[TG_PAY_MAX_HEADERS];
  size_t n_headers;
  const char *body;        /* JSON body when refused; NUL-terminated */
  size_t body_len;
  tg_pay_call *call;       /* the reservation when admitted */
} tg_pay_decision;

typedef void (*tg_pay_admit_cb)(void *arg, tg_pay_decision *d);

/* What happened upstream, for pricing. */
typedef struct {
  int ok;                  /* 1 when the upstream answered 2xx and the client got it */
  int status;              /* upstream status, 0 when it never answered */
  int streamed;            /* server-sent events */
  uint64_t input_tokens;   /* from `usage` (JSON) or the stream's last events */
  uint64_t output_tokens;
  int usage_known;         /* 0 when the answer carried no usage */
} tg_pay_outcome;

typedef struct {
  int charged;             /* 1 when a charge was recorded */
  tg_u256 amount;          /* what was charged (0 when nothing) */
  tg_pay_header headers[TG_PAY_MAX_HEADERS]; /* PAYMENT-RESPONSE etc. */
  size_t n_headers;
  /*
   * For streamed answers the headers went out before the usage was known:
   * these bytes (an SSE comment with the final charge) are sent before the
   * stream's end. NULL for non-streamed answers.
   */
  const char *stream_trailer;
  int err;                 /* 0, or why the charge could not be recorded */
  /* For the access log and /metrics (tg_metrics_charge): who paid, and how. */
  int scheme;              /* tg_store_scheme: TG_SCHEME_EXACT 0, TG_SCHEME_CHANNEL 1, TG_SCHEME_PASS 2 */
  const char *scheme_name; /* "exact", "channel" or "pass" */
  int has_payer;
  tg_address payer;
} tg_pay_receipt;

typedef void (*tg_pay_complete_cb)(void *arg, tg_pay_receipt *r);

/* ---- the payment layer ------------------------------------------------- */

/*
 * Reads of on-chain channel state for channels the ledger does not know yet
 * (the first call on a channel opened since start). Supplied by the daemon;
 * may block briefly (a JSON-RPC eth_call on loopback). Returns 0, or
 * TG_ECHANNEL_UNKNOWN when the channel has no balance.
 */
typedef struct {
  void *ctx;
  int (*channel_state)(void *ctx, const tg_hash *channel_id, tg_u256 *balance,
                       tg_u256 *total_claimed, uint64_t *withdraw_requested_at);
  /*
   * ERC-1271: asks `wallet` (a contract, e.g. an organisation's multisig)
   * whether `sig` is its signature of `digest` (isValidSignature returns the
   * magic value). Sets *valid; returns an error only when the node could not
   * answer. NULL: contract-wallet vouchers are refused.
   */
  int (*erc1271)(void *ctx, const tg_address *wallet, const tg_hash *digest, const uint8_t *sig,
                 size_t sig_len, int *valid);
} tg_pay_chain;

/*
 * The `exact` scheme's chain side, supplied by the daemon (transaction
 * manager and JSON-RPC). `check` reads the token's authorizationState(from,
 * nonce) and balanceOf(from) and may block briefly; `submit` signs and sends
 * transferWithAuthorization and calls `cb` exactly once on `base` with the
 * transaction hash (after submission or after the receipt, per exact_wait).
 * `check_async` (optional; admission uses it when set) reads the same without
 * blocking the caller: `cb` runs exactly once on `base`, later, with err 0 and
 * the balance and used flag, or the read's error. It returns non-zero (and
 * never calls cb) when the read cannot be started.
 */
typedef void (*tg_pay_exact_cb)(void *arg, int err, const tg_hash *tx_hash);
typedef void (*tg_pay_exact_check_cb)(void *arg, int err, const tg_u256 *balance, int used);
typedef struct {
  void *ctx;
  int (*check)(void *ctx, const tg_address *token, const tg_address *from, const tg_hash *nonce,
               tg_u256 *balance, int *used);
  int (*submit)(void *ctx, struct event_base *base, const tg_address *token,
                const tg_x402_exact *auth, tg_pay_exact_cb cb, void *arg);
  /*
   * Gasless channel deposits (x402 batch-settlement `deposit` payloads):
   * sends depositWithAuthorization(config, amount, validAfter, validBefore,
   * salt, signature) to the channel contract and calls `cb` exactly once on
   * `base` after the receipt (err 0 only when it succeeded). The same
   * authorization is never sent twice. NULL: deposit payloads are refused.
   */
  int (*deposit)(void *ctx, struct event_base *base, const tg_address *contract,
                 const tg_x402_channel *ch, tg_pay_exact_cb cb, void *arg);
  /*
   * Cooperative refunds: sends refund(config, amount) to the channel contract
   * from the gateway's key (the receiver authorizer) and calls `cb` once on
   * `base` after the receipt. NULL: refunds are not offered.
   */
  int (*refund)(void *ctx, struct event_base *base, const tg_address *contract,
                const tg_channel_config *config, const tg_u256 *amount, tg_pay_exact_cb cb,
                void *arg);
  int (*check_async)(void *ctx, struct event_base *base, const tg_address *token,
                     const tg_address *from, const tg_hash *nonce, tg_pay_exact_check_cb cb,
                     void *arg);
} tg_pay_exact_backend;

typedef struct {
  tg_config *cfg;                /* borrowed (reference taken) */
  struct tg_store *store;        /* borrowed */
  struct tg_ledger *ledger;      /* borrowed */
  tg_pay_chain chain;            /* may have a NULL channel_state: unknown channels refused */
  tg_pay_exact_backend exact;    /* required when the configuration accepts `exact` */
  uint64_t chain_id;
  tg_address asset;              /* the token (EIP-3009 domain: cfg asset name/version) */
  tg_address pay_to;             /* receiver of exact payments and of channels */
  tg_address receiver_authorizer;/* the gateway's own key: claims and refunds */
  tg_address channel_contract;   /* TollgateChannels deployment */
  uint64_t withdraw_delay;       /* the channel withdrawDelay offered, seconds */
  tg_u256 min_deposit;           /* offered as extra.minDeposit (0: none) */
  struct tg_passes *passes;      /* access passes (borrowed); NULL: sessions are not accepted */
  /*
   * Several gateways on one store (PostgreSQL): this instance's name. When set,
   * every channel admission also holds its maximum price in the store
   * (TG_STORE_OP_RESERVE, through the group commit), so that holds from all
   * instances together never pass a channel's ceiling plus credit limit; the
   * charge ends the hold in the same submission. NULL: the in-memory ledger is
   * the only admission (one gateway per store, e.g. SQLite).
   */
  const char *instance;
  int64_t reserve_ttl_ms;        /* a hold lapses after this (0: 15 minutes) */
  /* With `instance`: headroom leases (docs/STORE.md), slices of a channel's headroom held
   * ahead so that a call is admitted with no store round trip. 0: on, with units held
   * 60 s; > 0: on, units held that long (at least 2000); < 0: off (a hold per call). */
  int64_t headroom_ttl_ms;
  /* Optional: after each committed channel charge (on the worker; must not block), with
   * the channel's new charged total and its mirrored claimed total and balance. The
   * daemon's watchtower uses it for the near-balance rule. */
  void (*on_charged)(void *arg, const tg_hash *channel, const tg_u256 *charged,
                     const tg_u256 *claimed, const tg_u256 *balance);
  void *on_charged_arg;
} tg_pay_opts;

/* Creates the payment layer; `err` (TG_CONFIG_ERR_MAX bytes) says what is missing. */
TG_WARN_UNUSED_RESULT int tg_pay_new(tg_pay **out, char *err, const tg_pay_opts *opts);
void tg_pay_free(tg_pay *p);
/*
 * Whether this instance may submit `exact` transactions (default 1). With
 * several gateways on one store only the holder of the gateway lease submits,
 * so that the account's nonces stay contiguous; the others refuse `exact`
 * calls and facilitator settlements with 503 (reason
 * "exact_submitter_elsewhere") and gasless channel deposits not yet on-chain
 * with 503 ("deposit_submitter_elsewhere"). Thread-safe.
 */
void tg_pay_set_exact_owner(tg_pay *p, int owner);

/*
 * `exact` payers' money in flight: admission (and the facilitator's /verify and
 * /settle) admits an authorization only when the node's balance less the
 * payer's admitted transfers not yet known mined or dropped covers its value,
 * checked and reserved at once (pay/pending.h). The transaction manager's
 * outcome of a transfer (confirmed, failed or dropped) ends its pending value:
 * tg_pay_exact_done (any thread; idempotent). tg_pay_exact_pending: the
 * payer's pending sum now.
 */
void tg_pay_exact_done(tg_pay *p, const tg_address *from, const tg_hash *nonce);
void tg_pay_exact_pending(tg_pay *p, const tg_address *from, tg_u256 *out);
/* Swaps in a reloaded configuration (prices, credit limits) for new calls. */
void tg_pay_set_config(tg_pay *p, tg_config *cfg);

/* The two hooks the HTTP layer calls (ctx is the tg_pay); see http/server.h. */
void tg_pay_admit(void *ctx, struct event_base *base, const tg_pay_request *req,
                  const tg_config_price *price, tg_pay_admit_cb cb, void *arg);
void tg_pay_complete(void *ctx, struct event_base *base, tg_pay_call *call,
                     const tg_pay_outcome *outcome, tg_pay_complete_cb cb, void *arg);

/* Counters for /metrics. */
typedef struct {
  uint64_t admitted, refused_402, refused_400, charged_calls, failed_commits;
  tg_u256 charged_channel, charged_exact;
  /* The chain backend's failures as the payment layer saw them (`exact` and the facilitator). */
  uint64_t chain_check_errors;  /* authorizationState/balance reads that failed */
  uint64_t chain_submit_errors; /* transferWithAuthorization submissions that failed */
  uint64_t voucher_cache_hits;  /* voucher headers recognised by their bytes (docs/PROTOCOL.md 3.3) */
  /* headroom leases (docs/STORE.md; zero when off): calls admitted on a unit, slices taken and
   * refused, leases dropped, units held and unused now */
  uint64_t headroom_admitted, headroom_slices, headroom_slices_refused, headroom_dropped;
  uint64_t headroom_units_free;
  /* `exact` transfers in flight (PROTOCOL.md 2.1.1): admitted and not yet known mined or
   * dropped, the payers they belong to, reservations refused for funds (the balance less
   * what is in flight), and reservations that lapsed (validBefore + 600 s, no outcome seen) */
  uint64_t exact_pending_transfers, exact_pending_payers, exact_funds_refused, exact_pending_lapsed;
} tg_pay_stats;
void tg_pay_stats_get(tg_pay *p, tg_pay_stats *out);

/* ---- cooperative refunds (POST /channel/refund) ---- */
/*
 * The payer asks for what it has not spent back: `payment_signature` is a
 * batch-settlement `refund` payload (its channel config and a voucher the
 * payer signed, which authenticates it). The gateway computes the refundable
 * amount (tg_ledger_refund_begin), submits refund(config, amount) itself,
 * re-reads the channel, and calls cb once on `base` with the HTTP status and
 * a JSON body: {"channelId","refunded","transaction","balance","charged"} on
 * 200, {"error": reason} otherwise (400 malformed, 402 refused, 409 nothing
 * to refund or a withdrawal under way, 502 the transaction failed, 503 not
 * offered or a read failed).
 */
typedef void (*tg_pay_refund_cb)(void *arg, int status, const char *json_body);
void tg_pay_refund(tg_pay *p, struct event_base *base, const char *payment_signature,
                   tg_pay_refund_cb cb, void *arg);

/* ---- the x402 facilitator: `exact` for other servers (POST /verify, /settle) ---- */

/*
 * The same checks and submission path as an `exact` call, against another
 * server's terms: `pay_to` and `amount` come from its paymentRequirements.
 * Only the gateway's own asset on its own chain (tg_pay_fac_terms) can be
 * verified: its EIP-712 domain is the one the gateway knows.
 */
typedef struct {
  int valid;            /* verify: isValid; settle: success */
  const char *reason;   /* the x402 reason (static string) when !valid */
  tg_address payer;
  int has_tx;
  tg_hash tx;           /* settle: the transaction */
  int duplicate;        /* settle: answered from an earlier settlement's record */
} tg_pay_fac_result;

void tg_pay_fac_terms(tg_pay *p, uint64_t *chain_id, tg_address *asset);
/* Off-chain checks, the store's record, authorizationState and balance (a blocking read). */
TG_WARN_UNUSED_RESULT int tg_pay_fac_verify(tg_pay *p, const tg_x402_exact *a,
                                            const tg_address *pay_to, const tg_u256 *amount,
                                            tg_pay_fac_result *out);
/*
 * The same checks without blocking the worker: the chain read goes through the
 * chain thread's pipeline (check_async, batched with the calls' admission
 * reads). cb fires exactly once on `base`, possibly before this returns, with
 * rc 0 and the result, or an error (the node or the store did not answer).
 */
typedef void (*tg_pay_fac_verify_cb)(void *arg, int rc, const tg_pay_fac_result *r);
void tg_pay_fac_verify_async(tg_pay *p, struct event_base *base, const tg_x402_exact *a,
                             const tg_address *pay_to, const tg_u256 *amount,
                             tg_pay_fac_verify_cb cb, void *arg);
typedef void (*tg_pay_fac_cb)(void *arg, const tg_pay_fac_result *r);
/*
 * Verifies, records the intent, submits transferWithAuthorization, records
 * its hash, then calls cb exactly once on `base` (possibly before it
 * returns). Settling an authorization already settled answers its recorded
 * transaction (duplicate = 1) and sends nothing.
 */
void tg_pay_fac_settle(tg_pay *p, struct event_base *base, const tg_x402_exact *a,
                       const tg_address *pay_to, const tg_u256 *amount, const char *request_id,
                       tg_pay_fac_cb cb, void *arg);

#endif
