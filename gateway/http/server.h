/* The HTTP server: worker threads with one event loop each, built-in endpoints, signals, reload. */
#ifndef TG_HTTP_SERVER_H
#define TG_HTTP_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "pay/pay.h"

struct event_base;

/*
 * How the HTTP layer calls the payment layer: a table of function pointers
 * so that the daemon plugs the real payment layer in and tests a double.
 * Both are called on a worker's loop thread (`base` is that loop); each
 * calls its callback exactly once, on that same loop, possibly before it
 * returns. For a route with no price neither is called.
 *
 *   admit     for every request on a priced route, before anything goes
 *             upstream. `price` is the route's price (valid until
 *             complete's callback). The decision is read during the
 *             callback only (copy what outlives it).
 *   complete  exactly once for every admitted call (d->admitted with a
 *             d->call), after the upstream finished, failed or the client
 *             went away (then o->ok is 0 and nothing may be charged). The
 *             receipt is read during the callback only. Non-streamed
 *             answers are sent only from this callback, with its headers;
 *             for streams its stream_trailer is written before the end.
 */
typedef struct tg_http_payhooks {
  void *ctx;
  void (*admit)(void *ctx, struct event_base *base, const tg_pay_request *req,
                const tg_config_price *price, tg_pay_admit_cb cb, void *arg);
  void (*complete)(void *ctx, struct event_base *base, tg_pay_call *call,
                   const tg_pay_outcome *outcome, tg_pay_complete_cb cb, void *arg);
} tg_http_payhooks;

typedef struct tg_server tg_server;

struct tg_store;

/* The daemon's settlement figures for /metrics (docs/SETTLEMENT.md, "Alerts"). */
typedef struct {
  uint64_t runs_ok, runs_failed;     /* settlement runs since start */
  uint64_t consecutive_failures;     /* failed runs in a row (0 after a good one) */
  uint64_t alerts;                   /* ALERT lines logged */
  uint64_t watched;                  /* channels the watchtower follows (withdrawing or near) */
  uint64_t at_risk;                  /* withdrawing channels owed and past their margin */
  int64_t last_ok_unix;              /* end of the last good run (0: none) */
} tg_http_settle_stats;

/*
 * What the operations endpoints read (gateway/http/ops.c): the admin API
 * (the store), the x402 facilitator endpoints (the payment layer) and the
 * chain's figures on /metrics. Every member may be NULL/0: the endpoints
 * that need it answer 503 and its metrics are left out.
 */
typedef struct {
  tg_pay *pay;                 /* POST /verify, POST /settle, GET /supported */
  struct tg_passes *passes;    /* POST /auth/nonce, POST /auth/siwe (access passes) */
  struct tg_store *store;      /* admin API, store commit metrics */
  int has_signer;
  tg_address signer;           /* the gateway's account (GET /supported "signers") */
  void *ctx;                   /* for the two callbacks (any thread, must not block) */
  uint64_t (*txm_pending)(void *ctx); /* transactions sent and not yet confirmed */
  uint64_t (*rpc_errors)(void *ctx);  /* failed JSON-RPC calls since start */
  uint64_t (*rpc_calls)(void *ctx);   /* JSON-RPC calls since start */
  uint64_t (*last_block)(void *ctx);  /* the newest block number seen, 0 before the first */
  /* The settlement scheduler and watchtower (may be NULL): fills its figures. */
  void (*settle_stats)(void *ctx, tg_http_settle_stats *out);
  void *settle_ctx;
} tg_http_ops;

typedef struct {
  tg_config *cfg;                 /* borrowed: the server takes its own reference */
  const tg_http_payhooks *hooks;  /* NULL: priced routes answer 503 "payments not configured" */
  const tg_http_ops *ops;         /* NULL: no admin data, facilitator or chain metrics */
  /* Called on the main thread after a successful reload, before workers see it. */
  void (*on_reload)(void *arg, tg_config *cfg);
  void *on_reload_arg;
} tg_server_opts;

/*
 * Binds every listen address once per worker (SO_REUSEPORT) so that bind
 * errors are reported here; err (TG_CONFIG_ERR_MAX bytes) says which.
 */
TG_WARN_UNUSED_RESULT int tg_server_new(tg_server **out, char *err, const tg_server_opts *opts);
/*
 * Runs the workers and the signal loop on the calling thread until
 * shutdown: SIGTERM/SIGINT stop accepting, let calls in flight finish (up
 * to shutdown_timeout), then return 0; a second signal exits at once
 * (status 1). SIGHUP re-reads the configuration file; a bad file is logged
 * and the old configuration stays.
 */
TG_WARN_UNUSED_RESULT int tg_server_run(tg_server *s);
void tg_server_free(tg_server *s);
/* Asks a running server to stop as SIGTERM would (thread-safe). */
void tg_server_stop(tg_server *s);
/* Re-reads the configuration as SIGHUP would (thread-safe). */
void tg_server_reload(tg_server *s);
/* The number of worker threads (resolved from the configuration). */
unsigned tg_server_workers(const tg_server *s);

/* Writes one line to stderr, prefixed with the time and "tollgated: ". */
void tg_log(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;

#endif
