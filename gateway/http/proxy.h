/* The upstream side: proxied calls driven by libcurl's multi interface on a worker's event loop. */
#ifndef TG_HTTP_PROXY_H
#define TG_HTTP_PROXY_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "http/metrics.h"
#include "http/server.h"
#include "http/watch.h"

struct event;
struct evhttp;
struct evhttp_bound_socket;
struct evhttp_request;

typedef struct tg_proxy tg_proxy;

/* One worker thread: its loop, its server socket(s), its curl multi. Shared by server.c and proxy.c. */
typedef struct tg_worker {
  unsigned id;
  tg_server *server;
  struct event_base *base;
  struct evhttp *http;
  struct evhttp_bound_socket *bound[TG_CONFIG_MAX_LISTEN];
  size_t n_bound;
  tg_config *cfg;                /* this worker's reference to the current configuration */
  unsigned *route_metric;        /* cfg->routes[i] -> metrics route index */
  const tg_http_payhooks *hooks; /* NULL: payments not configured */
  tg_metrics *metrics;
  tg_proxy *proxy;
  uint32_t id_tag;               /* request ids: this worker's random tag and counter */
  uint32_t next_id;
  long inflight;                 /* calls being processed */
  long flushing;                 /* requests whose answer is not yet fully written */
  int draining;
  struct event *drain_ev;        /* bounds the wait for answers to flush at shutdown */
  int access_fd;                 /* -1: access log off */
  pthread_t thread;
  struct event *swap_ev, *stop_ev;
  pthread_mutex_t lock;          /* guards pending */
  tg_config *pending;            /* a reloaded configuration waiting for this loop */
} tg_worker;

/* What the access log line says about one call. */
typedef struct {
  const char *request_id;
  const char *method;
  const char *path;
  const char *route;           /* NULL: none */
  int status;
  int upstream_status;         /* 0: not proxied */
  uint64_t latency_us;
  uint64_t bytes_out;
  const char *error;           /* NULL or a short reason */
  int usage_known;
  uint64_t input_tokens, output_tokens;
  int charged;
  const tg_u256 *amount;       /* NULL: none */
  const char *scheme;          /* "exact", "channel" or NULL */
  const tg_address *payer;     /* NULL: unknown */
} tg_access;

TG_WARN_UNUSED_RESULT int tg_proxy_new(tg_proxy **out, tg_worker *w);
void tg_proxy_free(tg_proxy *p);
/* Takes over req: admission (priced routes), the upstream call, the answer. */
void tg_proxy_handle(tg_worker *w, struct evhttp_request *req, const tg_config_route *route,
                     unsigned route_metric, const char *request_id);

/* server.c: a call finished (answered or abandoned): logs it and counts it out. */
void tg_worker_call_done(tg_worker *w, unsigned route_metric, const tg_access *a);
/* server.c: a request that will never complete (its client is gone): stop waiting for it. */
void tg_worker_request_lost(tg_worker *w);
/* A request id: 24 lowercase hex digits (docs/gateway-http.md, "Request ids"). */
#define TG_REQUEST_ID_LEN 24
/* server.c: a fresh request id into out[TG_REQUEST_ID_LEN + 1]. */
void tg_worker_request_id(tg_worker *w, char out[TG_REQUEST_ID_LEN + 1]);
/* Sends {"error": msg, "request_id": id} with the status. */
void tg_http_send_error(struct evhttp_request *req, int status, const char *msg,
                        const char *request_id);

#endif
