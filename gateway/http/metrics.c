/* Prometheus metrics: per-worker shards of counters and histograms, merged when scraped. */
#include "http/metrics.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate/u256.h"

typedef _Atomic uint64_t counter;

static const double bucket_le[TG_METRICS_BUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01,
                                                     0.025,  0.05,  0.1,    0.25,  0.5,
                                                     1,      2.5,   10,     30,    120};
static const char *const class_names[5] = {"1xx", "2xx", "3xx", "4xx", "5xx"};
static const char *const uperr_names[TG_UPERR_KINDS] = {"connect",  "timeout",     "status_5xx",
                                                        "too_big", "client_gone", "cut"};
static const char *const scheme_names[TG_SCHEMES] = {"exact", "channel", "pass", "credit"};

typedef struct {
  counter calls[5];
  counter payment_required;
  counter buckets[TG_METRICS_BUCKETS]; /* not cumulative: summed at render */
  counter latency_sum_us;
  counter latency_count;
  counter uperr[TG_UPERR_KINDS];
} route_stats;

typedef struct {
  route_stats routes[TG_METRICS_MAX_ROUTES];
  counter charges[TG_SCHEMES];
  counter charged[TG_SCHEMES];
  _Atomic int64_t inflight;
  char pad[64];
} shard;

struct tg_metrics {
  unsigned n_shards;
  shard *shards;
  pthread_mutex_t lock; /* guards names */
  char *names[TG_METRICS_MAX_ROUTES];
  _Atomic unsigned n_names;
  counter reloads_ok, reloads_failed;
};

static void inc(counter *c, uint64_t v) { atomic_fetch_add_explicit(c, v, memory_order_relaxed); }
static uint64_t get(counter *c) { return atomic_load_explicit(c, memory_order_relaxed); }

tg_metrics *tg_metrics_new(unsigned shards) {
  if (shards == 0) shards = 1;
  tg_metrics *m = calloc(1, sizeof *m);
  if (m == NULL) abort();
  m->n_shards = shards;
  m->shards = calloc(shards, sizeof *m->shards);
  if (m->shards == NULL) abort();
  pthread_mutex_init(&m->lock, NULL);
  m->names[0] = strdup("-");
  if (m->names[0] == NULL) abort();
  atomic_store(&m->n_names, 1);
  return m;
}

void tg_metrics_free(tg_metrics *m) {
  if (m == NULL) return;
  for (unsigned i = 0; i < TG_METRICS_MAX_ROUTES; i++) free(m->names[i]);
  pthread_mutex_destroy(&m->lock);
  free(m->shards);
  free(m);
}

unsigned tg_metrics_route(tg_metrics *m, const char *name) {
  pthread_mutex_lock(&m->lock);
  unsigned n = atomic_load(&m->n_names), idx = 0;
  for (unsigned i = 0; i < n; i++)
    if (strcmp(m->names[i], name) == 0) {
      idx = i;
      goto out;
    }
  if (n < TG_METRICS_MAX_ROUTES) {
    m->names[n] = strdup(name);
    if (m->names[n] == NULL) abort();
    idx = n;
    atomic_store(&m->n_names, n + 1);
  }
out:
  pthread_mutex_unlock(&m->lock);
  return idx;
}

static shard *sh(tg_metrics *m, unsigned s) { return &m->shards[s % m->n_shards]; }

void tg_metrics_call(tg_metrics *m, unsigned s, unsigned route, int status, uint64_t latency_us) {
  route_stats *r = &sh(m, s)->routes[route % TG_METRICS_MAX_ROUTES];
  int cls = status / 100 - 1;
  if (cls < 0 || cls > 4) cls = 4;
  inc(&r->calls[cls], 1);
  if (status == 402) inc(&r->payment_required, 1);
  double sec = (double)latency_us / 1e6;
  unsigned b = 0;
  while (b < TG_METRICS_BUCKETS && sec > bucket_le[b]) b++;
  if (b < TG_METRICS_BUCKETS) inc(&r->buckets[b], 1);
  inc(&r->latency_sum_us, latency_us);
  inc(&r->latency_count, 1);
}

void tg_metrics_upstream_error(tg_metrics *m, unsigned s, unsigned route, int kind) {
  if (kind < 0 || kind >= TG_UPERR_KINDS) return;
  inc(&sh(m, s)->routes[route % TG_METRICS_MAX_ROUTES].uperr[kind], 1);
}

void tg_metrics_charge(tg_metrics *m, unsigned s, int scheme, const tg_u256 *amount) {
  if (scheme < 0 || scheme >= TG_SCHEMES) return;
  uint64_t v;
  if (tg_u256_to_u64(amount, &v) != 0) v = UINT64_MAX;
  inc(&sh(m, s)->charges[scheme], 1);
  inc(&sh(m, s)->charged[scheme], v);
}

void tg_metrics_inflight(tg_metrics *m, unsigned s, int delta) {
  atomic_fetch_add_explicit(&sh(m, s)->inflight, delta, memory_order_relaxed);
}

void tg_metrics_reload(tg_metrics *m, int ok) { inc(ok ? &m->reloads_ok : &m->reloads_failed, 1); }

/* Route names are config names ([A-Za-z0-9._-]): no label escaping needed. */
int tg_metrics_render(tg_metrics *m, tg_buf *out) {
  int rc = 0;
  unsigned n = atomic_load(&m->n_names);
#define P(...)                                   \
  do {                                           \
    if ((rc = tg_buf_printf(out, __VA_ARGS__))) return rc; \
  } while (0)
  P("# HELP tollgate_http_requests_total Calls answered, by route and status class.\n"
    "# TYPE tollgate_http_requests_total counter\n");
  for (unsigned r = 0; r < n; r++)
    for (int c = 0; c < 5; c++) {
      uint64_t v = 0;
      for (unsigned s = 0; s < m->n_shards; s++) v += get(&m->shards[s].routes[r].calls[c]);
      if (v) P("tollgate_http_requests_total{route=\"%s\",class=\"%s\"} %llu\n", m->names[r],
               class_names[c], (unsigned long long)v);
    }
  P("# HELP tollgate_payment_required_total 402 answers, by route.\n"
    "# TYPE tollgate_payment_required_total counter\n");
  for (unsigned r = 0; r < n; r++) {
    uint64_t v = 0;
    for (unsigned s = 0; s < m->n_shards; s++) v += get(&m->shards[s].routes[r].payment_required);
    P("tollgate_payment_required_total{route=\"%s\"} %llu\n", m->names[r], (unsigned long long)v);
  }
  P("# HELP tollgate_http_request_duration_seconds Time from request to the last byte queued.\n"
    "# TYPE tollgate_http_request_duration_seconds histogram\n");
  for (unsigned r = 0; r < n; r++) {
    uint64_t cum = 0, sum = 0, cnt = 0;
    for (unsigned s = 0; s < m->n_shards; s++) {
      sum += get(&m->shards[s].routes[r].latency_sum_us);
      cnt += get(&m->shards[s].routes[r].latency_count);
    }
    if (cnt == 0) continue;
    for (int b = 0; b < TG_METRICS_BUCKETS; b++) {
      for (unsigned s = 0; s < m->n_shards; s++) cum += get(&m->shards[s].routes[r].buckets[b]);
      P("tollgate_http_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %llu\n", m->names[r],
        bucket_le[b], (unsigned long long)cum);
    }
    P("tollgate_http_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n",
      m->names[r], (unsigned long long)cnt);
    P("tollgate_http_request_duration_seconds_sum{route=\"%s\"} %.6f\n", m->names[r],
      (double)sum / 1e6);
    P("tollgate_http_request_duration_seconds_count{route=\"%s\"} %llu\n", m->names[r],
      (unsigned long long)cnt);
  }
  P("# HELP tollgate_upstream_errors_total Failed upstream calls, by route and kind.\n"
    "# TYPE tollgate_upstream_errors_total counter\n");
  for (unsigned r = 0; r < n; r++)
    for (int k = 0; k < TG_UPERR_KINDS; k++) {
      uint64_t v = 0;
      for (unsigned s = 0; s < m->n_shards; s++) v += get(&m->shards[s].routes[r].uperr[k]);
      if (v) P("tollgate_upstream_errors_total{route=\"%s\",kind=\"%s\"} %llu\n", m->names[r],
               uperr_names[k], (unsigned long long)v);
    }
  P("# HELP tollgate_charges_total Charges recorded, by scheme.\n"
    "# TYPE tollgate_charges_total counter\n");
  for (int k = 0; k < TG_SCHEMES; k++) {
    uint64_t v = 0;
    for (unsigned s = 0; s < m->n_shards; s++) v += get(&m->shards[s].charges[k]);
    P("tollgate_charges_total{scheme=\"%s\"} %llu\n", scheme_names[k], (unsigned long long)v);
  }
  P("# HELP tollgate_charged_base_units_total Amounts charged in the asset's base units, by scheme.\n"
    "# TYPE tollgate_charged_base_units_total counter\n");
  for (int k = 0; k < TG_SCHEMES; k++) {
    uint64_t v = 0;
    for (unsigned s = 0; s < m->n_shards; s++) v += get(&m->shards[s].charged[k]);
    P("tollgate_charged_base_units_total{scheme=\"%s\"} %llu\n", scheme_names[k],
      (unsigned long long)v);
  }
  int64_t inflight = 0;
  for (unsigned s = 0; s < m->n_shards; s++)
    inflight += atomic_load_explicit(&m->shards[s].inflight, memory_order_relaxed);
  P("# HELP tollgate_http_inflight Calls being processed.\n"
    "# TYPE tollgate_http_inflight gauge\ntollgate_http_inflight %lld\n",
    (long long)inflight);
  P("# HELP tollgate_config_reloads_total Configuration reloads, by result.\n"
    "# TYPE tollgate_config_reloads_total counter\n"
    "tollgate_config_reloads_total{result=\"ok\"} %llu\n"
    "tollgate_config_reloads_total{result=\"failed\"} %llu\n",
    (unsigned long long)get(&m->reloads_ok), (unsigned long long)get(&m->reloads_failed));
#undef P
  return 0;
}
