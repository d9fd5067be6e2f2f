/* Operations endpoints: the admin API, the x402 facilitator endpoints, and the store/pay/chain part of /metrics. */
#ifndef TG_HTTP_OPS_H
#define TG_HTTP_OPS_H

#include "http/server.h"

struct event_base;
struct evhttp_request;
struct tg_client_watch;

/*
 * The admin API, after the bearer token was checked: `sub` is the path after
 * the admin prefix ("channels", "charges", "settlements"), `query` the raw
 * query string or NULL. Answers the request; returns the status sent.
 */
int tg_ops_admin(const tg_http_ops *ops, struct evhttp_request *req, const char *method,
                 const char *sub, const char *query, const char *request_id);

/* 1 when `path` is a facilitator endpoint: /verify, /settle, /supported, or /channel/refund. */
int tg_ops_is_facilitator(const char *path);
/*
 * Answers a facilitator endpoint, then calls done(arg, status) exactly once,
 * on `base`, possibly before it returns: POST /settle answers from the
 * payment layer's callback, once the transaction was submitted (or found).
 * The request is cw->req, watched by the caller (http/proxy.h): an answer
 * that comes from a callback goes to tg_client_watch_take(cw), and is
 * dropped when the client is gone.
 */
void tg_ops_facilitator(const tg_http_ops *ops, struct event_base *base, struct tg_client_watch *cw,
                        const char *method, const char *path, const char *request_id,
                        void (*done)(void *arg, int status), void *arg);

/* Appends the payment layer's, the store's and the chain's metrics (Prometheus text). */
TG_WARN_UNUSED_RESULT int tg_ops_metrics(const tg_http_ops *ops, tg_buf *out);

/* 1 for the sign-in endpoints (gateway/http/signin.c): /auth/nonce, /auth/siwe, /auth/session. */
int tg_signin_is_path(const char *path);
/*
 * Answers a sign-in endpoint (Sign-In with Ethereum for access passes), then
 * calls done(arg, status) exactly once on `base`, possibly before it returns.
 * `cfg` is read before this returns. The request is cw->req, watched by the
 * caller, as for tg_ops_facilitator.
 */
void tg_signin_handle(const tg_http_ops *ops, const tg_config *cfg, struct event_base *base,
                      struct tg_client_watch *cw, const char *method, const char *path,
                      const char *request_id, void (*done)(void *arg, int status), void *arg);

#endif
