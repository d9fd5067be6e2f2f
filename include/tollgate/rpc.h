/* Ethereum JSON-RPC 2.0 client: several endpoints with failover, async calls on a libevent loop, blocking calls, typed eth_* helpers. */
#ifndef TOLLGATE_RPC_H
#define TOLLGATE_RPC_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "tollgate/types.h"

#ifdef __cplusplus
extern "C" {
#endif

struct event_base;

/*
 * One tg_rpc talks to one chain through one or more endpoints (URLs). Calls
 * go to the first healthy endpoint in the order given; an endpoint that fails
 * at the transport level (connection refused or lost, timeout, an HTTP error
 * status, a reply that is not JSON-RPC) is marked down for a back-off period
 * that doubles with each consecutive failure (capped), and the call is retried
 * at once on the next healthy endpoint, or after a jittered back-off when none
 * is left. A JSON-RPC error object from the node is an answer, never retried.
 *
 * Every endpoint's chain id is checked when the client is created: an endpoint
 * on another chain refuses the whole client (TG_ERPC_CHAIN). An endpoint that
 * does not answer then is kept aside and probed later; it serves calls only
 * once its chain id has been verified.
 *
 * Asynchronous calls run on a libevent loop through libcurl's multi
 * interface, with no thread per call; connections are kept alive and reused.
 * A call that returns an error never fires its callback; a call that returns
 * 0 fires it exactly once (with TG_ECANCELED when the client is freed first).
 * Blocking calls run the same engine on the loop until their answer arrives;
 * they must not be made from inside a callback running on that loop
 * (TG_EBUSY). A tg_rpc is not thread-safe: use one per loop/thread.
 */
typedef struct tg_rpc tg_rpc;

#define TG_RPC_MAX_ENDPOINTS 16
#define TG_RPC_BATCH_MAX 1000

typedef struct {
  const char *const *urls;    /* http(s) URLs; at least one, at most TG_RPC_MAX_ENDPOINTS */
  size_t n_urls;
  uint64_t chain_id;          /* expected; 0 = whatever the endpoints agree on */
  unsigned timeout_ms;        /* per attempt (default 10000) */
  unsigned connect_timeout_ms;/* default 2000 */
  unsigned retries;           /* extra attempts after a transport failure (default 2) */
  unsigned backoff_ms;        /* first back-off between attempts, doubling, jittered (default 50) */
  unsigned down_ms;           /* first down period of a failing endpoint, doubling to 30 s (default 500) */
  unsigned max_inflight;      /* HTTP requests in flight at once; more are queued (default 64) */
  size_t max_reply;           /* cap on one reply body in bytes (default 64 MiB) */
  struct event_base *base;    /* the loop for async calls; NULL = a private one */
} tg_rpc_opts;

/* Fills the defaults above (no URLs, no base). */
void tg_rpc_opts_init(tg_rpc_opts *opts);

/*
 * Creates a client and checks every endpoint's chain id (blocking, in
 * parallel). Errors: TG_EINVAL (no URL, too many), TG_ERPC_CHAIN (an endpoint
 * on another chain, or on another chain than opts->chain_id),
 * TG_ERPC_NO_ENDPOINT (none answered), TG_EBUSY (called from a callback
 * running on opts->base). On failure *out is NULL and, when
 * `why` is not NULL, a one-line reason naming the endpoint is written there.
 */
TG_WARN_UNUSED_RESULT int tg_rpc_new(tg_rpc **out, const tg_rpc_opts *opts, char *why,
                                     size_t why_len);
/* Cancels pending calls (their callbacks fire with TG_ECANCELED) and frees. NULL is a no-op. */
void tg_rpc_free(tg_rpc *rpc);
/* The chain id every usable endpoint reported. */
uint64_t tg_rpc_chain_id(const tg_rpc *rpc);
/* The event loop driving the client (the caller's or the private one). */
struct event_base *tg_rpc_base(tg_rpc *rpc);

/* Health and counters of one endpoint, for /metrics and tests. */
typedef struct {
  const char *url;
  int usable;                 /* chain id verified and not on another chain */
  int down;                   /* currently in its back-off period */
  unsigned consecutive_failures;
  uint64_t calls_ok;          /* HTTP exchanges that gave a JSON-RPC reply */
  uint64_t calls_failed;      /* transport failures */
} tg_rpc_endpoint_stats;

size_t tg_rpc_endpoint_count(const tg_rpc *rpc);
TG_WARN_UNUSED_RESULT int tg_rpc_endpoint_stats_get(const tg_rpc *rpc, size_t i,
                                                    tg_rpc_endpoint_stats *out);
/*
 * The node's message (or the transport's reason) of the last failed
 * blocking call, "" after a success; valid until the next call.
 */
const char *tg_rpc_last_message(const tg_rpc *rpc);
/* Calls queued or in flight. */
size_t tg_rpc_pending(const tg_rpc *rpc);

/*
 * The outcome of one call. `err` is 0 with `result` set (JSON null included),
 * or a node error kept as it came (`code`, `message`, `data`) and classified:
 * TG_ERPC_REVERTED (execution reverted; the revert data is `data`),
 * TG_ERPC_NONCE_LOW, TG_ERPC_ALREADY_KNOWN, TG_ERPC_UNDERPRICED,
 * TG_ERPC_FUNDS, TG_ERPC_LIMIT, or TG_ERPC for any other; or a failure of the
 * exchange (TG_ERPC_TRANSPORT, TG_ETIMEOUT, TG_ERPC_HTTP, TG_ERPC_REPLY,
 * TG_ETOOBIG, TG_ERPC_NO_ENDPOINT, TG_ECANCELED) with code 0.
 * Owned storage: tg_rpc_reply_cleanup frees it.
 */
typedef struct {
  int err;
  long long code;   /* the node's error code (0 when the node sent none) */
  char *message;    /* the node's error message (NULL when none) */
  json_t *data;     /* the node's error data (NULL when none) */
  json_t *result;   /* the result when err == 0 */
  int endpoint;     /* index of the endpoint that answered last, -1 when none */
} tg_rpc_reply;

void tg_rpc_reply_cleanup(tg_rpc_reply *reply);
/* Classifies a node error object's code and message into one of the errors listed above. */
int tg_rpc_classify(long long code, const char *message);

/* Callback of an async call; `reply` is valid during the call only (incref what you keep). */
typedef void (*tg_rpc_cb)(void *arg, const tg_rpc_reply *reply);

/*
 * Calls `method` with `params` (a JSON array; NULL = []). Ownership of params
 * passes to the call in every case (as with jansson's _new functions).
 */
TG_WARN_UNUSED_RESULT int tg_rpc_call_async(tg_rpc *rpc, const char *method, json_t *params,
                                            tg_rpc_cb cb, void *arg);
/* Blocking form: fills *out (zeroed on entry) and returns out->err. */
TG_WARN_UNUSED_RESULT int tg_rpc_call(tg_rpc *rpc, tg_rpc_reply *out, const char *method,
                                      json_t *params);
/* The same with this call's own timeout per attempt (0: the client's). */
TG_WARN_UNUSED_RESULT int tg_rpc_call_async_ex(tg_rpc *rpc, const char *method, json_t *params,
                                               unsigned timeout_ms, tg_rpc_cb cb, void *arg);
TG_WARN_UNUSED_RESULT int tg_rpc_call_ex(tg_rpc *rpc, tg_rpc_reply *out, const char *method,
                                         json_t *params, unsigned timeout_ms);

/*
 * Batches: several calls in one HTTP request. The batch is caller-owned;
 * between tg_rpc_batch_send and its callback it must not be touched.
 * tg_rpc_batch_add returns the item's index or an error (TG_ETOOBIG past
 * TG_RPC_BATCH_MAX); it takes ownership of params in every case.
 */
typedef struct tg_rpc_batch tg_rpc_batch;
tg_rpc_batch *tg_rpc_batch_new(void);
void tg_rpc_batch_free(tg_rpc_batch *b);
TG_WARN_UNUSED_RESULT int tg_rpc_batch_add(tg_rpc_batch *b, const char *method, json_t *params);
size_t tg_rpc_batch_size(const tg_rpc_batch *b);
/* This batch's timeout per attempt (0: the client's). */
void tg_rpc_batch_set_timeout(tg_rpc_batch *b, unsigned timeout_ms);
/* Item i's outcome after the batch ran (NULL when i is out of range). */
const tg_rpc_reply *tg_rpc_batch_reply(const tg_rpc_batch *b, size_t i);
/* Callback of an async batch: err is 0 when the node answered (see each item), else the exchange's failure. */
typedef void (*tg_rpc_batch_cb)(void *arg, tg_rpc_batch *b, int err);
TG_WARN_UNUSED_RESULT int tg_rpc_batch_send(tg_rpc *rpc, tg_rpc_batch *b, tg_rpc_batch_cb cb,
                                            void *arg);
/* Blocking: 0 when the node answered (each item then has its own err), else the failure. */
TG_WARN_UNUSED_RESULT int tg_rpc_batch_run(tg_rpc *rpc, tg_rpc_batch *b);

/* ------------------------------------------------------------------ values */

/*
 * JSON-RPC values from untrusted replies. Quantities are "0x" + hex digits
 * (leading zeros tolerated, "0x" alone refused); data is "0x" + an even
 * number of digits. Errors: TG_EJSON_FIELD (not a string), TG_EHEX,
 * TG_EOVERFLOW, TG_ETOOBIG.
 */
TG_WARN_UNUSED_RESULT int tg_rpc_parse_u64(const json_t *v, uint64_t *out);
TG_WARN_UNUSED_RESULT int tg_rpc_parse_u256(const json_t *v, tg_u256 *out);
TG_WARN_UNUSED_RESULT int tg_rpc_parse_hash(const json_t *v, tg_hash *out);
TG_WARN_UNUSED_RESULT int tg_rpc_parse_address(const json_t *v, tg_address *out);
/* Appends the bytes to out (its cap applies). */
TG_WARN_UNUSED_RESULT int tg_rpc_parse_data(const json_t *v, tg_buf *out);

/* New JSON strings for request parameters (abort on out-of-memory, like the rest). */
json_t *tg_rpc_json_u64(uint64_t v);
json_t *tg_rpc_json_u256(const tg_u256 *v);
json_t *tg_rpc_json_bytes(const uint8_t *p, size_t len);
json_t *tg_rpc_json_address(const tg_address *a);
json_t *tg_rpc_json_hash(const tg_hash *h);
/* A block parameter: "latest" for NULL, else the tag ("pending", "safe", "0x10", ...). */
json_t *tg_rpc_json_block(const char *tag);

/* -------------------------------------------------------- typed eth_* calls */

/* A block tag for a number, "0x..." (buf of at least 19 bytes); returns buf. */
const char *tg_rpc_block_tag(char buf[24], uint64_t number);

TG_WARN_UNUSED_RESULT int tg_eth_chain_id(tg_rpc *rpc, uint64_t *out);
TG_WARN_UNUSED_RESULT int tg_eth_block_number(tg_rpc *rpc, uint64_t *out);
/* `block` NULL = "latest". */
TG_WARN_UNUSED_RESULT int tg_eth_get_balance(tg_rpc *rpc, tg_u256 *out, const tg_address *who,
                                             const char *block);
TG_WARN_UNUSED_RESULT int tg_eth_get_transaction_count(tg_rpc *rpc, uint64_t *out,
                                                       const tg_address *who, const char *block);
/* Appends the code to out. */
TG_WARN_UNUSED_RESULT int tg_eth_get_code(tg_rpc *rpc, tg_buf *out, const tg_address *who,
                                          const char *block);
TG_WARN_UNUSED_RESULT int tg_eth_gas_price(tg_rpc *rpc, tg_u256 *out);
TG_WARN_UNUSED_RESULT int tg_eth_max_priority_fee(tg_rpc *rpc, tg_u256 *out);

/* A message for eth_call and eth_estimateGas; NULL pointers and zero lengths are left out. */
typedef struct {
  const tg_address *from;
  const tg_address *to;      /* NULL: contract creation */
  const uint8_t *data;
  size_t data_len;
  const tg_u256 *value;
  uint64_t gas;              /* 0: not given */
  const tg_u256 *gas_price;
  const tg_u256 *max_fee_per_gas;
  const tg_u256 *max_priority_fee_per_gas;
} tg_eth_msg;

/* The call's request object (for async use with tg_rpc_call_async). */
json_t *tg_eth_msg_json(const tg_eth_msg *msg);

/*
 * eth_call: appends the return data to out. On a revert returns
 * TG_ERPC_REVERTED and, when revert is not NULL, appends the revert data
 * (Error(string), Panic(uint256) or a custom error: decode it with abi.h).
 * Other node errors come back classified (tg_rpc_last_message has the text).
 */
TG_WARN_UNUSED_RESULT int tg_eth_call(tg_rpc *rpc, tg_buf *out, tg_buf *revert,
                                      const tg_eth_msg *msg, const char *block);
/* eth_estimateGas; revert data as in tg_eth_call. */
TG_WARN_UNUSED_RESULT int tg_eth_estimate_gas(tg_rpc *rpc, uint64_t *out, tg_buf *revert,
                                              const tg_eth_msg *msg);

#define TG_FEE_HISTORY_MAX_BLOCKS 1024
#define TG_FEE_HISTORY_MAX_PCTS 16
/*
 * eth_feeHistory: base fees of n_blocks blocks plus the next one, gas used
 * ratios, and the priority fee at each requested percentile. Heap storage:
 * tg_fee_history_cleanup frees it.
 */
typedef struct {
  uint64_t oldest_block;
  size_t n_blocks;        /* blocks described (may be fewer than requested) */
  size_t n_pcts;
  tg_u256 *base_fee;      /* n_blocks + 1 entries: the last is the next block's */
  double *gas_used_ratio; /* n_blocks entries */
  tg_u256 *reward;        /* n_blocks * n_pcts entries, row-major; NULL without percentiles */
} tg_fee_history;
void tg_fee_history_cleanup(tg_fee_history *fh);
TG_WARN_UNUSED_RESULT int tg_eth_fee_history(tg_rpc *rpc, tg_fee_history *out, unsigned n_blocks,
                                             const char *newest, const double *pcts,
                                             size_t n_pcts);
/* Parses an eth_feeHistory result (for async users); out is zeroed first. */
TG_WARN_UNUSED_RESULT int tg_rpc_parse_fee_history(const json_t *v, tg_fee_history *out);

/* eth_sendRawTransaction: the hash the node reports (errors classified, see tg_rpc_reply). */
TG_WARN_UNUSED_RESULT int tg_eth_send_raw_transaction(tg_rpc *rpc, tg_hash *out,
                                                      const uint8_t *raw, size_t len);

/* A log entry; `data` is heap storage owned by the entry. */
typedef struct {
  tg_address address;
  tg_hash topics[4];
  size_t n_topics;
  uint8_t *data;
  size_t data_len;
  uint64_t block_number;
  tg_hash block_hash;
  tg_hash tx_hash;
  uint64_t tx_index;
  uint64_t log_index;
  int removed;
} tg_eth_log;
void tg_eth_log_cleanup(tg_eth_log *log);
TG_WARN_UNUSED_RESULT int tg_rpc_parse_log(const json_t *v, tg_eth_log *out);

/* A transaction receipt; `logs` is heap storage: tg_eth_receipt_cleanup frees it. */
typedef struct {
  tg_hash tx_hash;
  tg_hash block_hash;
  uint64_t block_number;
  uint64_t tx_index;
  tg_address from;
  int has_to;
  tg_address to;
  int has_contract_address;
  tg_address contract_address;
  uint64_t gas_used;
  uint64_t cumulative_gas_used;
  tg_u256 effective_gas_price;
  unsigned type;
  int status;              /* 1 success, 0 reverted */
  tg_eth_log *logs;
  size_t n_logs;
} tg_eth_receipt;
void tg_eth_receipt_cleanup(tg_eth_receipt *r);
TG_WARN_UNUSED_RESULT int tg_rpc_parse_receipt(const json_t *v, tg_eth_receipt *out);
/* eth_getTransactionReceipt: TG_ENOTFOUND while the transaction is not mined (or unknown). */
TG_WARN_UNUSED_RESULT int tg_eth_get_receipt(tg_rpc *rpc, tg_eth_receipt *out, const tg_hash *tx);

/* A block header and its transaction hashes (heap storage: tg_eth_block_cleanup). */
typedef struct {
  uint64_t number;
  tg_hash hash;
  tg_hash parent_hash;
  uint64_t timestamp;
  uint64_t gas_limit;
  uint64_t gas_used;
  int has_base_fee;
  tg_u256 base_fee;
  tg_address miner;
  tg_hash *tx_hashes;
  size_t n_txs;
} tg_eth_block;
void tg_eth_block_cleanup(tg_eth_block *b);
TG_WARN_UNUSED_RESULT int tg_rpc_parse_block(const json_t *v, tg_eth_block *out);
/* eth_getBlockByNumber with hashes only; `block` NULL = "latest"; TG_ENOTFOUND past the head. */
TG_WARN_UNUSED_RESULT int tg_eth_get_block(tg_rpc *rpc, tg_eth_block *out, const char *block);

/*
 * eth_getLogs over [from_block, to_block], paged: at most `page_blocks`
 * blocks per request (default 2000 when 0), halved whenever the node refuses a
 * range as too large (TG_ERPC_LIMIT), down to one block. Each log goes to
 * `cb` in order; a non-zero return from cb stops and is returned.
 */
typedef struct {
  uint64_t from_block;
  uint64_t to_block;
  const tg_address *addresses;
  size_t n_addresses;
  /* topics[i]: NULL = any; else one of n_topic_alts[i] hashes */
  const tg_hash *topics[4];
  size_t n_topic_alts[4];
  uint64_t page_blocks;
} tg_eth_log_filter;
typedef int (*tg_eth_log_cb)(void *arg, const tg_eth_log *log);
TG_WARN_UNUSED_RESULT int tg_eth_get_logs(tg_rpc *rpc, const tg_eth_log_filter *f,
                                          tg_eth_log_cb cb, void *arg);

#ifdef __cplusplus
}
#endif
#endif
