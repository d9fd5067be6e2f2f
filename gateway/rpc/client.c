/* The JSON-RPC client engine: libcurl multi on a libevent loop, endpoint health and failover, retries, batches, blocking calls. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <event2/event.h>

#include "rpc/rpc_int.h"
#include "tollgate/rpc.h"

#define DOWN_MAX_MS 30000u

typedef struct {
  char *url;
  int verified;  /* chain id checked */
  int disabled;  /* on another chain: never used */
  int probing;   /* a chain id probe is in flight */
  unsigned fails;
  uint64_t down_until;
  uint64_t ok, failed;
} endpoint;

enum { ST_IDLE, ST_QUEUED, ST_INFLIGHT, ST_BACKOFF, ST_FAILING };

struct tg_rpc_batch {
  tg_rpc *rpc;
  size_t n, cap;
  char **methods;
  json_t **params;
  tg_rpc_reply *replies;
  int single;       /* one call sent as a bare object */
  int internal;     /* owned by the library: freed after its callback */
  int pinned;       /* endpoint fixed for this request (-1: any) */
  unsigned timeout_ms; /* per attempt; 0: the client's */
  tg_rpc_cb cb1;
  tg_rpc_batch_cb cbb;
  void *arg;
  int state;
  int fail_err;     /* for ST_FAILING: the error to finish with */
  unsigned attempt;
  int last_err;
  int endpoint;
  long long first_id;
  char *body;
  size_t body_len;
  tg_buf resp;
  int resp_too_big;
  CURL *easy;
  struct event *timer;
  struct tg_rpc_batch *all_next, *all_prev, *q_next;
  char errbuf[CURL_ERROR_SIZE];
};

typedef struct {
  curl_socket_t fd;
  struct event *ev;
} sockinfo;

struct tg_rpc {
  tg_rpc_opts opts;
  endpoint ep[TG_RPC_MAX_ENDPOINTS];
  size_t n_ep;
  uint64_t chain_id;
  struct event_base *base;
  int own_base;
  CURLM *multi;
  struct event *curl_timer;
  struct curl_slist *headers;
  CURL *pool[64];
  size_t n_pool;
  struct tg_rpc_batch *all;
  struct tg_rpc_batch *q_head, *q_tail;
  size_t inflight;
  size_t pending;
  long long next_id;
  uint64_t rng;
  int closing;
  int callback_depth;
  char last_msg[512];
};

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t next_rand(tg_rpc *rpc) {
  /* xorshift64*: jitter only, nothing secret. */
  uint64_t x = rpc->rng;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  rpc->rng = x;
  return x * 0x2545F4914F6CDD1DULL;
}

void tg_rpc_opts_init(tg_rpc_opts *o) {
  memset(o, 0, sizeof *o);
  o->timeout_ms = 10000;
  o->connect_timeout_ms = 2000;
  o->retries = 2;
  o->backoff_ms = 50;
  o->down_ms = 500;
  o->max_inflight = 64;
  o->max_reply = (size_t)64 << 20;
}

/* ------------------------------------------------------------- batches */

tg_rpc_batch *tg_rpc_batch_new(void) {
  tg_rpc_batch *b = calloc(1, sizeof *b);
  if (!b) abort();
  b->pinned = -1;
  b->endpoint = -1;
  return b;
}

static void batch_reset_transport(tg_rpc_batch *b) {
  free(b->body);
  b->body = NULL;
  b->body_len = 0;
  tg_buf_cleanup(&b->resp);
  if (b->timer) event_free(b->timer);
  b->timer = NULL;
}

void tg_rpc_batch_free(tg_rpc_batch *b) {
  if (!b) return;
  for (size_t i = 0; i < b->n; i++) {
    free(b->methods[i]);
    json_decref(b->params[i]);
    tg_rpc_reply_cleanup(&b->replies[i]);
  }
  free(b->methods);
  free(b->params);
  free(b->replies);
  batch_reset_transport(b);
  free(b);
}

int tg_rpc_batch_add(tg_rpc_batch *b, const char *method, json_t *params) {
  if (!method || !*method || (params && !json_is_array(params)) || b->rpc) {
    json_decref(params);
    return TG_EINVAL;
  }
  if (b->n >= TG_RPC_BATCH_MAX) {
    json_decref(params);
    return TG_ETOOBIG;
  }
  if (b->n == b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 4;
    b->methods = realloc(b->methods, cap * sizeof *b->methods);
    b->params = realloc(b->params, cap * sizeof *b->params);
    b->replies = realloc(b->replies, cap * sizeof *b->replies);
    if (!b->methods || !b->params || !b->replies) abort();
    b->cap = cap;
  }
  b->methods[b->n] = strdup(method);
  if (!b->methods[b->n]) abort();
  b->params[b->n] = params ? params : json_array();
  if (!b->params[b->n]) abort();
  memset(&b->replies[b->n], 0, sizeof b->replies[b->n]);
  b->replies[b->n].endpoint = -1;
  return (int)b->n++;
}

size_t tg_rpc_batch_size(const tg_rpc_batch *b) {
  return b ? b->n : 0;
}

const tg_rpc_reply *tg_rpc_batch_reply(const tg_rpc_batch *b, size_t i) {
  return b && i < b->n ? &b->replies[i] : NULL;
}

/* ------------------------------------------------------------- endpoints */

static void ep_failed(tg_rpc *rpc, int i) {
  endpoint *e = &rpc->ep[i];
  e->failed++;
  if (e->fails < 32) e->fails++;
  unsigned shift = e->fails - 1 > 16 ? 16 : e->fails - 1;
  uint64_t d = (uint64_t)rpc->opts.down_ms << shift;
  if (d > DOWN_MAX_MS) d = DOWN_MAX_MS;
  e->down_until = now_ms() + d;
}

static void ep_ok(tg_rpc *rpc, int i) {
  endpoint *e = &rpc->ep[i];
  e->ok++;
  e->fails = 0;
  e->down_until = 0;
}

static int submit(tg_rpc *rpc, tg_rpc_batch *b);
static void probe_cb(void *arg, const tg_rpc_reply *r);

/*
 * Starts an eth_chainId probe of an endpoint that has not been verified yet,
 * or that failed and whose down period is over while others are healthy: the
 * probe, not a caller's request, finds out whether it is back.
 */
static void maybe_probe(tg_rpc *rpc, int i) {
  endpoint *e = &rpc->ep[i];
  if (e->probing || e->disabled || rpc->closing) return;
  if (e->verified && e->fails == 0) return;
  if (e->down_until > now_ms()) return;
  tg_rpc_batch *b = tg_rpc_batch_new();
  if (tg_rpc_batch_add(b, "eth_chainId", NULL) < 0) abort();
  b->single = 1;
  b->internal = 1;
  b->pinned = i;
  b->cb1 = probe_cb;
  b->arg = rpc;
  b->timeout_ms = rpc->opts.connect_timeout_ms;
  e->probing = 1;
  if (submit(rpc, b) != 0) {
    e->probing = 0;
    tg_rpc_batch_free(b);
  }
}

static void probe_cb(void *arg, const tg_rpc_reply *r) {
  tg_rpc *rpc = arg;
  if (r->endpoint < 0 || (size_t)r->endpoint >= rpc->n_ep) return;
  endpoint *e = &rpc->ep[r->endpoint];
  e->probing = 0;
  uint64_t id;
  if (r->err == 0 && tg_rpc_parse_u64(r->result, &id) == 0) {
    if (rpc->chain_id && id != rpc->chain_id) {
      e->disabled = 1;
    } else {
      if (!rpc->chain_id) rpc->chain_id = id;
      e->verified = 1;
    }
  } else if (r->err != TG_ECANCELED) {
    /* Already marked down by the transport path when it was a transport failure. */
    if (e->down_until <= now_ms()) ep_failed(rpc, r->endpoint);
  }
}

/*
 * The endpoint for the next attempt: the first usable one in order that is
 * not down, else the usable one that comes back soonest; -1 when none is
 * usable. *ready is 1 when the chosen one is not down.
 */
static int select_ep(tg_rpc *rpc, int *ready) {
  uint64_t now = now_ms();
  int best = -1, healthy = 0;
  *ready = 0;
  for (size_t i = 0; i < rpc->n_ep; i++)
    healthy += rpc->ep[i].verified && !rpc->ep[i].disabled && rpc->ep[i].fails == 0;
  for (size_t i = 0; i < rpc->n_ep; i++) {
    endpoint *e = &rpc->ep[i];
    if (e->disabled) continue;
    if (!e->verified) {
      maybe_probe(rpc, (int)i);
      continue;
    }
    if (e->down_until <= now) {
      if (e->fails && healthy) {
        maybe_probe(rpc, (int)i); /* recovering: back once a probe answers */
        continue;
      }
      *ready = 1;
      return (int)i;
    }
    if (best < 0 || e->down_until < rpc->ep[best].down_until) best = (int)i;
  }
  return best;
}

/* ------------------------------------------------------------- transport */

static size_t on_body(char *data, size_t sz, size_t nm, void *arg) {
  tg_rpc_batch *b = arg;
  size_t n = sz * nm;
  if (tg_buf_append(&b->resp, data, n) != 0) {
    b->resp_too_big = 1;
    return 0;
  }
  return n;
}

static void finish(tg_rpc_batch *b, int err);
static void start(tg_rpc_batch *b);

static void on_timer(evutil_socket_t fd, short what, void *arg) {
  (void)fd, (void)what;
  tg_rpc_batch *b = arg;
  if (b->state == ST_FAILING)
    finish(b, b->fail_err);
  else if (b->state == ST_BACKOFF)
    start(b);
}

/* Fails the request from the loop, never from inside the call that submitted it. */
static void fail_later(tg_rpc_batch *b, int err) {
  b->state = ST_FAILING;
  b->fail_err = err;
  struct timeval tv = {0, 0};
  evtimer_add(b->timer, &tv);
}

static void launch(tg_rpc_batch *b, int ep) {
  tg_rpc *rpc = b->rpc;
  CURL *c = rpc->n_pool ? rpc->pool[--rpc->n_pool] : curl_easy_init();
  if (!c) abort();
  b->easy = c;
  b->endpoint = ep;
  b->resp_too_big = 0;
  tg_buf_reset(&b->resp);
  b->errbuf[0] = 0;
  curl_easy_setopt(c, CURLOPT_URL, rpc->ep[ep].url);
  curl_easy_setopt(c, CURLOPT_POST, 1L);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, b->body);
  curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)b->body_len);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, rpc->headers);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, b);
  curl_easy_setopt(c, CURLOPT_PRIVATE, b);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, b->errbuf);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS,
                   (long)(b->timeout_ms ? b->timeout_ms : rpc->opts.timeout_ms));
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)rpc->opts.connect_timeout_ms);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
  if (curl_multi_add_handle(rpc->multi, c) != CURLM_OK) abort();
  b->state = ST_INFLIGHT;
  rpc->inflight++;
}

static void start(tg_rpc_batch *b) {
  tg_rpc *rpc = b->rpc;
  int ready = 1;
  int ep = b->pinned >= 0 ? b->pinned : select_ep(rpc, &ready);
  if (ep < 0) {
    fail_later(b, b->last_err ? b->last_err : TG_ERPC_NO_ENDPOINT);
    return;
  }
  if (rpc->inflight >= rpc->opts.max_inflight) {
    b->state = ST_QUEUED;
    b->q_next = NULL;
    if (rpc->q_tail)
      rpc->q_tail->q_next = b;
    else
      rpc->q_head = b;
    rpc->q_tail = b;
    return;
  }
  launch(b, ep);
}

static void pump(tg_rpc *rpc) {
  while (rpc->q_head && rpc->inflight < rpc->opts.max_inflight) {
    tg_rpc_batch *b = rpc->q_head;
    rpc->q_head = b->q_next;
    if (!rpc->q_head) rpc->q_tail = NULL;
    b->q_next = NULL;
    b->state = ST_IDLE;
    start(b);
  }
}

static void unqueue(tg_rpc *rpc, tg_rpc_batch *b) {
  tg_rpc_batch **pp = &rpc->q_head, *prev = NULL;
  while (*pp && *pp != b) prev = *pp, pp = &(*pp)->q_next;
  if (!*pp) return;
  *pp = b->q_next;
  if (rpc->q_tail == b) rpc->q_tail = prev;
  b->q_next = NULL;
}

static void release_easy(tg_rpc_batch *b) {
  tg_rpc *rpc = b->rpc;
  if (!b->easy) return;
  curl_multi_remove_handle(rpc->multi, b->easy);
  if (rpc->n_pool < sizeof rpc->pool / sizeof rpc->pool[0]) {
    curl_easy_reset(b->easy);
    rpc->pool[rpc->n_pool++] = b->easy;
  } else {
    curl_easy_cleanup(b->easy);
  }
  b->easy = NULL;
  rpc->inflight--;
}

static void finish(tg_rpc_batch *b, int err) {
  tg_rpc *rpc = b->rpc;
  if (err) {
    for (size_t i = 0; i < b->n; i++) {
      tg_rpc_reply_cleanup(&b->replies[i]);
      b->replies[i].err = err;
    }
  }
  for (size_t i = 0; i < b->n; i++) b->replies[i].endpoint = b->endpoint;
  if (b->timer) evtimer_del(b->timer);
  /* Unlink before the callback: it may submit new calls or free a user batch. */
  if (b->all_prev)
    b->all_prev->all_next = b->all_next;
  else
    rpc->all = b->all_next;
  if (b->all_next) b->all_next->all_prev = b->all_prev;
  b->all_next = b->all_prev = NULL;
  rpc->pending--;
  b->state = ST_IDLE;
  b->rpc = NULL;
  batch_reset_transport(b);
  /* A user's batch may be freed (or sent again) by its callback: read nothing after it. */
  int internal = b->internal;
  rpc->callback_depth++;
  if (b->single)
    b->cb1(b->arg, &b->replies[0]);
  else
    b->cbb(b->arg, b, err);
  rpc->callback_depth--;
  if (internal) tg_rpc_batch_free(b);
}

/* A transport-level failure of one attempt: fail over, back off, or give up. */
static void attempt_failed(tg_rpc_batch *b, int err) {
  tg_rpc *rpc = b->rpc;
  b->last_err = err;
  b->attempt++;
  unsigned max_attempts = 1 + rpc->opts.retries + (unsigned)(rpc->n_ep - 1);
  if (b->pinned >= 0 || b->attempt >= max_attempts || err == TG_ETOOBIG) {
    finish(b, err);
    return;
  }
  int ready;
  int ep = select_ep(rpc, &ready);
  if (ep >= 0 && ready) {
    start(b);
    return;
  }
  uint64_t d = (uint64_t)rpc->opts.backoff_ms << (b->attempt > 10 ? 10 : b->attempt - 1);
  d = d / 2 + next_rand(rpc) % (d + 1); /* 0.5x .. 1.5x */
  b->state = ST_BACKOFF;
  struct timeval tv = {(time_t)(d / 1000), (suseconds_t)((d % 1000) * 1000)};
  evtimer_add(b->timer, &tv);
}

static void transfer_done(tg_rpc *rpc, tg_rpc_batch *b, CURLcode cc) {
  long status = 0;
  curl_easy_getinfo(b->easy, CURLINFO_RESPONSE_CODE, &status);
  release_easy(b);
  int ep = b->endpoint;
  int err;
  if (cc == CURLE_OK) {
    err = tg__rpc_parse_reply(b->replies, b->n, b->first_id, !b->single, (const char *)b->resp.data,
                              b->resp.len);
    if (err == 0) {
      ep_ok(rpc, ep);
      finish(b, 0);
      return;
    }
    if (status < 200 || status > 299) err = TG_ERPC_HTTP;
  } else if (cc == CURLE_OPERATION_TIMEDOUT) {
    err = TG_ETIMEOUT;
  } else if (b->resp_too_big) {
    err = TG_ETOOBIG;
  } else {
    err = TG_ERPC_TRANSPORT;
  }
  snprintf(rpc->last_msg, sizeof rpc->last_msg, "%s: %s", rpc->ep[ep].url,
           b->errbuf[0] ? b->errbuf
                        : (err == TG_ERPC_HTTP ? "HTTP error status" : tg_strerror(err)));
  ep_failed(rpc, ep);
  attempt_failed(b, err);
}

static void drain(tg_rpc *rpc) {
  CURLMsg *m;
  int left;
  while ((m = curl_multi_info_read(rpc->multi, &left)) != NULL) {
    if (m->msg != CURLMSG_DONE) continue;
    tg_rpc_batch *b = NULL;
    curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&b);
    CURLcode cc = m->data.result;
    if (b) transfer_done(rpc, b, cc);
  }
  pump(rpc);
}

static void on_socket_event(evutil_socket_t fd, short what, void *arg) {
  tg_rpc *rpc = arg;
  int action = (what & EV_READ ? CURL_CSELECT_IN : 0) | (what & EV_WRITE ? CURL_CSELECT_OUT : 0);
  int running;
  curl_multi_socket_action(rpc->multi, fd, action, &running);
  drain(rpc);
}

static void on_curl_timer(evutil_socket_t fd, short what, void *arg) {
  (void)fd, (void)what;
  tg_rpc *rpc = arg;
  int running;
  curl_multi_socket_action(rpc->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  drain(rpc);
}

static int socket_cb(CURL *e, curl_socket_t s, int what, void *userp, void *socketp) {
  (void)e;
  tg_rpc *rpc = userp;
  sockinfo *si = socketp;
  if (what == CURL_POLL_REMOVE) {
    if (si) {
      event_free(si->ev);
      free(si);
      curl_multi_assign(rpc->multi, s, NULL);
    }
    return 0;
  }
  short kind = (short)((what & CURL_POLL_IN ? EV_READ : 0) | (what & CURL_POLL_OUT ? EV_WRITE : 0) |
                       EV_PERSIST);
  if (!si) {
    si = calloc(1, sizeof *si);
    if (!si) abort();
    si->fd = s;
    curl_multi_assign(rpc->multi, s, si);
  } else {
    event_free(si->ev);
  }
  si->ev = event_new(rpc->base, s, kind, on_socket_event, rpc);
  if (!si->ev) abort();
  event_add(si->ev, NULL);
  return 0;
}

static int timer_cb(CURLM *m, long timeout_ms, void *userp) {
  (void)m;
  tg_rpc *rpc = userp;
  if (timeout_ms < 0) {
    evtimer_del(rpc->curl_timer);
  } else {
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    evtimer_add(rpc->curl_timer, &tv);
  }
  return 0;
}

/* ------------------------------------------------------------- request body */

/* A growing text buffer for the request body; aborts when memory runs out, as jansson's
 * failures did here before. */
typedef struct {
  char *p;
  size_t n, cap;
} body_buf;

static void bb_reserve(body_buf *o, size_t more) {
  if (o->cap - o->n > more) return;
  size_t cap = o->cap ? o->cap : 256;
  while (cap - o->n <= more) {
    if (cap > ((size_t)1 << 40)) abort();
    cap *= 2;
  }
  char *p = realloc(o->p, cap);
  if (!p) abort();
  o->p = p;
  o->cap = cap;
}

static void bb_put(body_buf *o, const char *s, size_t n) {
  bb_reserve(o, n);
  memcpy(o->p + o->n, s, n);
  o->n += n;
}

/* A JSON string as jansson writes it with JSON_COMPACT: UTF-8 as is (jansson's strings are
 * valid UTF-8), '"', '\\' and the control characters escaped. */
static void bb_string(body_buf *o, const char *s, size_t n) {
  static const char hexd[] = "0123456789ABCDEF";
  bb_reserve(o, n + 2);
  o->p[o->n++] = '"';
  size_t run = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch >= 0x20 && ch != '"' && ch != '\\') continue;
    bb_put(o, s + run, i - run);
    run = i + 1;
    char e[6] = {'\\', 0, 0, 0, 0, 0};
    size_t el = 2;
    switch (ch) {
    case '"': e[1] = '"'; break;
    case '\\': e[1] = '\\'; break;
    case '\b': e[1] = 'b'; break;
    case '\f': e[1] = 'f'; break;
    case '\n': e[1] = 'n'; break;
    case '\r': e[1] = 'r'; break;
    case '\t': e[1] = 't'; break;
    default:
      e[1] = 'u', e[2] = '0', e[3] = '0', e[4] = hexd[ch >> 4], e[5] = hexd[ch & 15];
      el = 6;
    }
    bb_put(o, e, el);
  }
  bb_put(o, s + run, n - run);
  bb_put(o, "\"", 1);
}

static int bb_dump_cb(const char *s, size_t n, void *arg) {
  bb_put(arg, s, n);
  return 0;
}

/* A value as json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) writes it (the same bytes): the
 * strings, arrays and objects of the params written here, anything else by jansson. */
static void bb_json(body_buf *o, const json_t *v) {
  switch (json_typeof(v)) {
  case JSON_STRING:
    bb_string(o, json_string_value(v), json_string_length(v));
    return;
  case JSON_ARRAY: {
    size_t n = json_array_size(v);
    bb_put(o, "[", 1);
    for (size_t i = 0; i < n; i++) {
      if (i) bb_put(o, ",", 1);
      bb_json(o, json_array_get(v, i));
    }
    bb_put(o, "]", 1);
    return;
  }
  case JSON_OBJECT: {
    const char *k;
    json_t *x;
    int first = 1;
    bb_put(o, "{", 1);
    json_object_foreach((json_t *)v, k, x) {
      if (!first) bb_put(o, ",", 1);
      first = 0;
      bb_string(o, k, strlen(k));
      bb_put(o, ":", 1);
      bb_json(o, x);
    }
    bb_put(o, "}", 1);
    return;
  }
  case JSON_INTEGER: {
    char t[32];
    int n = snprintf(t, sizeof t, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    bb_put(o, t, (size_t)n);
    return;
  }
  case JSON_TRUE: bb_put(o, "true", 4); return;
  case JSON_FALSE: bb_put(o, "false", 5); return;
  case JSON_NULL: bb_put(o, "null", 4); return;
  default:
    if (json_dump_callback(v, bb_dump_cb, o, JSON_COMPACT | JSON_ENCODE_ANY) != 0) abort();
  }
}

/*
 * The request body, written directly: the same bytes as json_dumps(JSON_COMPACT) of the
 * packed objects (a batch of a hundred signed transactions was a hundred objects built, dumped
 * and freed: docs/PERFORMANCE.md, row (e)).
 */
char *tg__rpc_body(long long first_id, char *const *methods, json_t *const *params, size_t n,
                   int single, size_t *len) {
  body_buf o = {0};
  bb_reserve(&o, n * 96);
  if (!single) bb_put(&o, "[", 1);
  for (size_t i = 0; i < n; i++) {
    char t[64];
    int k = snprintf(t, sizeof t, "%s{\"jsonrpc\":\"2.0\",\"id\":%lld,\"method\":", i ? "," : "",
                     first_id + (long long)i);
    bb_put(&o, t, (size_t)k);
    bb_string(&o, methods[i], strlen(methods[i]));
    bb_put(&o, ",\"params\":", 10);
    bb_json(&o, params[i]);
    bb_put(&o, "}", 1);
  }
  if (!single) bb_put(&o, "]", 1);
  bb_put(&o, "", 1); /* the terminating NUL, not counted */
  *len = o.n - 1;
  return o.p;
}

/* Serialises the request body once; ids are first_id.. for the items. */
static void build_body(tg_rpc_batch *b) {
  b->body = tg__rpc_body(b->first_id, b->methods, b->params, b->n, b->single, &b->body_len);
}

static int submit(tg_rpc *rpc, tg_rpc_batch *b) {
  if (rpc->closing) return TG_ECANCELED;
  if (b->rpc || b->n == 0) return TG_EINVAL;
  b->rpc = rpc;
  b->first_id = rpc->next_id;
  rpc->next_id += (long long)b->n;
  if (rpc->next_id > ((long long)1 << 52)) rpc->next_id = 1;
  for (size_t i = 0; i < b->n; i++) {
    tg_rpc_reply_cleanup(&b->replies[i]);
  }
  build_body(b);
  tg_buf_init(&b->resp, rpc->opts.max_reply);
  b->timer = evtimer_new(rpc->base, on_timer, b);
  if (!b->timer) abort();
  b->attempt = 0;
  b->last_err = 0;
  b->endpoint = -1;
  b->all_prev = NULL;
  b->all_next = rpc->all;
  if (rpc->all) rpc->all->all_prev = b;
  rpc->all = b;
  rpc->pending++;
  b->state = ST_IDLE;
  start(b);
  return 0;
}

/* ------------------------------------------------------------- public calls */

void tg_rpc_batch_set_timeout(tg_rpc_batch *b, unsigned timeout_ms) {
  b->timeout_ms = timeout_ms;
}

int tg_rpc_call_async(tg_rpc *rpc, const char *method, json_t *params, tg_rpc_cb cb, void *arg) {
  return tg_rpc_call_async_ex(rpc, method, params, 0, cb, arg);
}

int tg_rpc_call_async_ex(tg_rpc *rpc, const char *method, json_t *params, unsigned timeout_ms,
                         tg_rpc_cb cb, void *arg) {
  if (!rpc || !cb) {
    json_decref(params);
    return TG_EINVAL;
  }
  tg_rpc_batch *b = tg_rpc_batch_new();
  int rc = tg_rpc_batch_add(b, method, params);
  if (rc < 0) {
    tg_rpc_batch_free(b);
    return rc;
  }
  b->single = 1;
  b->internal = 1;
  b->cb1 = cb;
  b->arg = arg;
  b->timeout_ms = timeout_ms;
  rc = submit(rpc, b);
  if (rc) tg_rpc_batch_free(b);
  return rc;
}

int tg_rpc_batch_send(tg_rpc *rpc, tg_rpc_batch *b, tg_rpc_batch_cb cb, void *arg) {
  if (!rpc || !b || !cb) return TG_EINVAL;
  b->single = 0;
  b->internal = 0;
  b->cbb = cb;
  b->arg = arg;
  return submit(rpc, b);
}

/* Runs the loop until *done; TG_EBUSY when called from inside a callback on that loop. */
static int can_block(tg_rpc *rpc) {
  if (rpc->callback_depth > 0) return TG_EBUSY;
  /*
   * Inside some other callback of the caller's loop: libevent refuses a
   * nested loop (-1 at once, after running nothing), so a non-blocking turn
   * tells. (event_base_get_running_event cannot: it crashes outside a loop.)
   */
  if (!rpc->own_base && event_base_loop(rpc->base, EVLOOP_NONBLOCK) < 0) return TG_EBUSY;
  return 0;
}

static void run_until(tg_rpc *rpc, const int *done) {
  while (!*done) {
    int r = event_base_loop(rpc->base, EVLOOP_ONCE);
    if (r < 0) abort(); /* a broken loop would leave *done pointing at a dead frame */
  }
}

typedef struct {
  tg_rpc_reply *out;
  int done;
} block_state;

static void block_cb(void *arg, const tg_rpc_reply *r) {
  block_state *st = arg;
  /* Move the reply: the library cleans its copy after this callback. */
  *st->out = *r;
  tg_rpc_reply *mut = (tg_rpc_reply *)r;
  mut->message = NULL;
  mut->data = NULL;
  mut->result = NULL;
  st->done = 1;
}

static void note_outcome(tg_rpc *rpc, const tg_rpc_reply *r) {
  if (r->err == 0)
    rpc->last_msg[0] = 0;
  else if (r->message)
    snprintf(rpc->last_msg, sizeof rpc->last_msg, "%s", r->message);
  else if (r->err != TG_ERPC_TRANSPORT && r->err != TG_ETIMEOUT && r->err != TG_ERPC_HTTP &&
           r->err != TG_ERPC_REPLY)
    snprintf(rpc->last_msg, sizeof rpc->last_msg, "%s", tg_strerror(r->err));
}

int tg_rpc_call(tg_rpc *rpc, tg_rpc_reply *out, const char *method, json_t *params) {
  return tg_rpc_call_ex(rpc, out, method, params, 0);
}

int tg_rpc_call_ex(tg_rpc *rpc, tg_rpc_reply *out, const char *method, json_t *params,
                   unsigned timeout_ms) {
  memset(out, 0, sizeof *out);
  out->endpoint = -1;
  int rc = rpc ? can_block(rpc) : TG_EINVAL;
  if (rc) {
    json_decref(params);
    return out->err = rc;
  }
  block_state st = {out, 0};
  rc = tg_rpc_call_async_ex(rpc, method, params, timeout_ms, block_cb, &st);
  if (rc) return out->err = rc;
  run_until(rpc, &st.done);
  note_outcome(rpc, out);
  return out->err;
}

typedef struct {
  int err;
  int done;
} batch_block_state;

static void batch_block_cb(void *arg, tg_rpc_batch *b, int err) {
  (void)b;
  batch_block_state *st = arg;
  st->err = err;
  st->done = 1;
}

int tg_rpc_batch_run(tg_rpc *rpc, tg_rpc_batch *b) {
  int rc = rpc ? can_block(rpc) : TG_EINVAL;
  if (rc) return rc;
  batch_block_state st = {0, 0};
  rc = tg_rpc_batch_send(rpc, b, batch_block_cb, &st);
  if (rc) return rc;
  run_until(rpc, &st.done);
  return st.err;
}

/* ------------------------------------------------------------- lifecycle */

static int global_init(void) {
  static int done;
  if (done) return 0;
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return TG_EINTERNAL;
  done = 1;
  return 0;
}

typedef struct {
  tg_rpc *rpc;
  int remaining;
  int answered[TG_RPC_MAX_ENDPOINTS];
  uint64_t ids[TG_RPC_MAX_ENDPOINTS];
} check_state;

typedef struct {
  check_state *cs;
  int ep;
} check_item;

static void check_cb(void *arg, const tg_rpc_reply *r) {
  check_item *it = arg;
  check_state *cs = it->cs;
  tg_rpc *rpc = cs->rpc;
  uint64_t id;
  if (r->err == 0 && tg_rpc_parse_u64(r->result, &id) == 0) {
    cs->answered[it->ep] = 1;
    cs->ids[it->ep] = id;
  } else if (r->err == 0 || r->message) {
    snprintf(rpc->last_msg, sizeof rpc->last_msg, "%s: eth_chainId: %s", rpc->ep[it->ep].url,
             r->message ? r->message : "malformed chain id");
  }
  cs->remaining--;
}

/*
 * Settles the chain id from the probes: the expected one when given, else
 * the first answering endpoint's (in the configured order). 0 or TG_ERPC_CHAIN.
 */
static int check_chain(tg_rpc *rpc, const check_state *cs) {
  for (size_t i = 0; i < rpc->n_ep && !rpc->chain_id; i++)
    if (cs->answered[i]) rpc->chain_id = cs->ids[i];
  int rc = 0;
  for (size_t i = 0; i < rpc->n_ep; i++) {
    if (!cs->answered[i]) continue;
    if (cs->ids[i] == rpc->chain_id) {
      rpc->ep[i].verified = 1;
    } else {
      rpc->ep[i].disabled = 1;
      if (!rc)
        snprintf(rpc->last_msg, sizeof rpc->last_msg, "%s is on chain %llu, not %llu",
                 rpc->ep[i].url, (unsigned long long)cs->ids[i],
                 (unsigned long long)rpc->chain_id);
      rc = TG_ERPC_CHAIN;
    }
  }
  return rc;
}

int tg_rpc_new(tg_rpc **out, const tg_rpc_opts *opts, char *why, size_t why_len) {
  *out = NULL;
  if (why && why_len) *why = 0;
  if (!opts || !opts->urls || opts->n_urls == 0 || opts->n_urls > TG_RPC_MAX_ENDPOINTS)
    return TG_EINVAL;
  for (size_t i = 0; i < opts->n_urls; i++)
    if (!opts->urls[i] || !*opts->urls[i]) return TG_EINVAL;
  int rc = global_init();
  if (rc) return rc;
  tg_rpc *rpc = calloc(1, sizeof *rpc);
  if (!rpc) abort();
  rpc->opts = *opts;
  tg_rpc_opts d;
  tg_rpc_opts_init(&d);
  if (!rpc->opts.timeout_ms) rpc->opts.timeout_ms = d.timeout_ms;
  if (!rpc->opts.connect_timeout_ms) rpc->opts.connect_timeout_ms = d.connect_timeout_ms;
  if (!rpc->opts.backoff_ms) rpc->opts.backoff_ms = d.backoff_ms;
  if (!rpc->opts.down_ms) rpc->opts.down_ms = d.down_ms;
  if (!rpc->opts.max_inflight) rpc->opts.max_inflight = d.max_inflight;
  if (!rpc->opts.max_reply) rpc->opts.max_reply = d.max_reply;
  rpc->opts.urls = NULL;
  rpc->n_ep = opts->n_urls;
  for (size_t i = 0; i < rpc->n_ep; i++) {
    rpc->ep[i].url = strdup(opts->urls[i]);
    if (!rpc->ep[i].url) abort();
  }
  rpc->chain_id = opts->chain_id;
  rpc->next_id = 1;
  rpc->rng = (uint64_t)now_ms() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)rpc;
  if (!rpc->rng) rpc->rng = 1;
  if (opts->base) {
    rpc->base = opts->base;
  } else {
    rpc->base = event_base_new();
    if (!rpc->base) abort();
    rpc->own_base = 1;
  }
  rpc->multi = curl_multi_init();
  if (!rpc->multi) abort();
  curl_multi_setopt(rpc->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
  curl_multi_setopt(rpc->multi, CURLMOPT_SOCKETDATA, rpc);
  curl_multi_setopt(rpc->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
  curl_multi_setopt(rpc->multi, CURLMOPT_TIMERDATA, rpc);
  curl_multi_setopt(rpc->multi, CURLMOPT_MAXCONNECTS, (long)rpc->opts.max_inflight + 4);
  rpc->curl_timer = evtimer_new(rpc->base, on_curl_timer, rpc);
  if (!rpc->curl_timer) abort();
  rpc->headers = curl_slist_append(NULL, "Content-Type: application/json");
  rpc->headers = curl_slist_append(rpc->headers, "Expect:");
  if (!rpc->headers) abort();

  /* The check below runs the loop: refuse from inside a callback of the caller's loop. */
  if (!rpc->own_base && event_base_loop(rpc->base, EVLOOP_NONBLOCK) < 0) {
    if (why && why_len) snprintf(why, why_len, "tg_rpc_new called from inside its event loop");
    tg_rpc_free(rpc);
    return TG_EBUSY;
  }
  /* Chain id of every endpoint, in parallel. */
  check_state cs;
  memset(&cs, 0, sizeof cs);
  cs.rpc = rpc;
  check_item items[TG_RPC_MAX_ENDPOINTS];
  for (size_t i = 0; i < rpc->n_ep; i++) {
    items[i].cs = &cs;
    items[i].ep = (int)i;
    tg_rpc_batch *b = tg_rpc_batch_new();
    if (tg_rpc_batch_add(b, "eth_chainId", NULL) < 0) abort();
    b->single = 1;
    b->internal = 1;
    b->pinned = (int)i;
    b->cb1 = check_cb;
    b->arg = &items[i];
    rc = submit(rpc, b);
    if (rc) abort();
    cs.remaining++;
  }
  while (cs.remaining > 0)
    if (event_base_loop(rpc->base, EVLOOP_ONCE) < 0) abort();
  rc = check_chain(rpc, &cs);
  size_t usable = 0;
  for (size_t i = 0; i < rpc->n_ep; i++) usable += rpc->ep[i].verified;
  if (!rc && usable == 0) rc = TG_ERPC_NO_ENDPOINT;
  if (rc) {
    if (why && why_len) snprintf(why, why_len, "%s", rpc->last_msg);
    tg_rpc_free(rpc);
    return rc;
  }
  *out = rpc;
  return 0;
}

void tg_rpc_free(tg_rpc *rpc) {
  if (!rpc) return;
  rpc->closing = 1;
  while (rpc->all) {
    tg_rpc_batch *b = rpc->all;
    if (b->state == ST_INFLIGHT) release_easy(b);
    if (b->state == ST_QUEUED) unqueue(rpc, b);
    finish(b, TG_ECANCELED);
  }
  for (size_t i = 0; i < rpc->n_pool; i++) curl_easy_cleanup(rpc->pool[i]);
  curl_multi_cleanup(rpc->multi); /* fires CURL_POLL_REMOVE for every socket */
  event_free(rpc->curl_timer);
  curl_slist_free_all(rpc->headers);
  for (size_t i = 0; i < rpc->n_ep; i++) free(rpc->ep[i].url);
  if (rpc->own_base) event_base_free(rpc->base);
  free(rpc);
}

uint64_t tg_rpc_chain_id(const tg_rpc *rpc) {
  return rpc->chain_id;
}

struct event_base *tg_rpc_base(tg_rpc *rpc) {
  return rpc->base;
}

const char *tg_rpc_last_message(const tg_rpc *rpc) {
  return rpc ? rpc->last_msg : "";
}

size_t tg_rpc_endpoint_count(const tg_rpc *rpc) {
  return rpc->n_ep;
}

int tg_rpc_endpoint_stats_get(const tg_rpc *rpc, size_t i, tg_rpc_endpoint_stats *out) {
  memset(out, 0, sizeof *out);
  if (i >= rpc->n_ep) return TG_ERANGE;
  const endpoint *e = &rpc->ep[i];
  out->url = e->url;
  out->usable = e->verified && !e->disabled;
  out->down = e->down_until > now_ms();
  out->consecutive_failures = e->fails;
  out->calls_ok = e->ok;
  out->calls_failed = e->failed;
  return 0;
}

size_t tg_rpc_pending(const tg_rpc *rpc) {
  return rpc->pending;
}
