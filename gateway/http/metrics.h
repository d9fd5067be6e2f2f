/* Prometheus metrics: per-worker shards of counters and histograms, merged when scraped. */
#ifndef TG_HTTP_METRICS_H
#define TG_HTTP_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "tollgate/types.h"

/*
 * Each worker thread writes only its own shard (relaxed atomics, no
 * locks, no shared cache lines); a scrape sums the shards. Routes are
 * interned to small indexes once, at configuration load, so the hot path
 * never looks up strings. Index 0 is the pseudo-route "-" (built-in
 * endpoints, no route matched).
 */

#define TG_METRICS_MAX_ROUTES 256
#define TG_METRICS_BUCKETS 15

enum {
  TG_UPERR_CONNECT = 0, /* could not connect or send */
  TG_UPERR_TIMEOUT,
  TG_UPERR_5XX,
  TG_UPERR_TOO_BIG,
  TG_UPERR_CLIENT_GONE,
  TG_UPERR_CUT,         /* connection broken mid-answer */
  TG_UPERR_KINDS
};

enum { TG_SCHEME_EXACT = 0, TG_SCHEME_CHANNEL, TG_SCHEME_PASS, TG_SCHEME_CREDIT, TG_SCHEMES };

typedef struct tg_metrics tg_metrics;

tg_metrics *tg_metrics_new(unsigned shards);
void tg_metrics_free(tg_metrics *m);
/* The index of a route name (interned; thread-safe). 0 when the table is full. */
unsigned tg_metrics_route(tg_metrics *m, const char *name);

/* A finished call: its status and latency in microseconds. */
void tg_metrics_call(tg_metrics *m, unsigned shard, unsigned route, int status, uint64_t latency_us);
void tg_metrics_upstream_error(tg_metrics *m, unsigned shard, unsigned route, int kind);
/* A recorded charge (amounts above 2^64-1 base units saturate). */
void tg_metrics_charge(tg_metrics *m, unsigned shard, int scheme, const tg_u256 *amount);
void tg_metrics_inflight(tg_metrics *m, unsigned shard, int delta);
void tg_metrics_reload(tg_metrics *m, int ok);

/* Appends the Prometheus text exposition (version 0.0.4) to out. */
TG_WARN_UNUSED_RESULT int tg_metrics_render(tg_metrics *m, tg_buf *out);

#endif
