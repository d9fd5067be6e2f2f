/* The HTTP server: worker threads with one event loop each, built-in endpoints, signals, reload. */
#include "http/server.h"

#include <errno.h>
#include <sys/queue.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/thread.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "http/ops.h"
#include "http/proxy.h"
#include "http/route.h"
#include "tollgate/address.h"
#include "tollgate/u256.h"

/*
 * Threads: the caller's thread runs tg_server_run and waits for signals
 * with sigtimedwait (every signal is blocked in every thread, so none lands
 * in a worker); each worker runs its own event_base with its own evhttp on
 * its own SO_REUSEPORT socket per listen address, so the kernel spreads
 * connections over the workers and no lock is taken per request. The main
 * thread talks to workers only through event_active() on two events
 * (configuration swap, stop), which libevent makes thread-safe once
 * evthread_use_pthreads() ran.
 */

#define ADMIN_TOKEN_MAX 256

struct tg_server {
  tg_config *cfg; /* the main thread's reference to the current configuration */
  const tg_http_payhooks *hooks;
  const tg_http_ops *ops;
  void (*on_reload)(void *, tg_config *);
  void *on_reload_arg;
  unsigned n_workers;
  tg_worker *workers;
  int *fds;       /* n_workers * n_listen listening sockets */
  size_t n_fds;
  tg_metrics *metrics;
  int access_fd;
  char admin_token[ADMIN_TOKEN_MAX];
  size_t admin_token_len;
  char fac_token[ADMIN_TOKEN_MAX]; /* empty: the facilitator endpoints are open */
  size_t fac_token_len;
  _Atomic int stop_requested, reload_requested;
  _Atomic unsigned running;
  pthread_t main_thread;
};

void tg_log(const char *fmt, ...) {
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  char line[2200];
  int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ tollgated: %s\n",
                   tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                   ts.tv_nsec / 1000000, msg);
  if (n > 0) {
    ssize_t w = write(2, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
    (void)w;
  }
}

/* ---------------------------------------------------------------- access log */

static int json_str(tg_buf *b, const char *s) {
  int rc = tg_buf_append_byte(b, '"');
  for (; rc == 0 && *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\')
      rc = tg_buf_printf(b, "\\%c", ch);
    else if (ch < 0x20 || ch == 0x7f)
      rc = tg_buf_printf(b, "\\u%04x", ch);
    else
      rc = tg_buf_append_byte(b, ch);
  }
  return rc ? rc : tg_buf_append_byte(b, '"');
}

static void access_log(tg_worker *w, const tg_access *a) {
  if (w->access_fd < 0) return;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  char when[64];
  snprintf(when, sizeof when, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
           tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
  char amount[TG_U256_DEC_MAX] = "";
  if (a->amount) tg_u256_to_dec(a->amount, amount);
  tg_buf b;
  tg_buf_init(&b, 16384);
  int rc;
  if (w->cfg->log_format == TG_LOG_TEXT) {
    rc = tg_buf_printf(&b, "%s %s %s %s %d %.3fms route=%s upstream=%d bytes=%llu%s%s%s%s\n", when,
                       a->request_id, a->method, a->path, a->status, (double)a->latency_us / 1000.0,
                       a->route ? a->route : "-", a->upstream_status,
                       (unsigned long long)a->bytes_out, a->amount ? " amount=" : "", amount,
                       a->error ? " error=" : "", a->error ? a->error : "");
  } else {
    rc = tg_buf_printf(&b, "{\"ts\":\"%s\",\"request_id\":\"%s\",\"method\":\"%s\",\"path\":", when,
                       a->request_id, a->method);
    if (!rc) rc = json_str(&b, a->path);
    if (!rc) rc = tg_buf_append_str(&b, ",\"route\":");
    if (!rc) rc = a->route ? json_str(&b, a->route) : tg_buf_append_str(&b, "null");
    if (!rc)
      rc = tg_buf_printf(&b, ",\"status\":%d,\"upstream_status\":%d,\"latency_ms\":%.3f,\"bytes\":%llu",
                         a->status, a->upstream_status, (double)a->latency_us / 1000.0,
                         (unsigned long long)a->bytes_out);
    if (!rc && a->usage_known)
      rc = tg_buf_printf(&b, ",\"input_tokens\":%llu,\"output_tokens\":%llu",
                         (unsigned long long)a->input_tokens, (unsigned long long)a->output_tokens);
    if (!rc) rc = tg_buf_append_str(&b, ",\"payer\":");
    if (!rc) {
      if (a->payer) {
        char pa[TG_ADDRESS_HEX_LEN];
        tg_address_to_checksum(a->payer, pa);
        rc = tg_buf_printf(&b, "\"%s\"", pa);
      } else {
        rc = tg_buf_append_str(&b, "null");
      }
    }
    if (!rc) rc = tg_buf_append_str(&b, ",\"scheme\":");
    if (!rc) rc = a->scheme ? json_str(&b, a->scheme) : tg_buf_append_str(&b, "null");
    if (!rc) rc = tg_buf_append_str(&b, ",\"amount\":");
    if (!rc) rc = a->amount ? tg_buf_printf(&b, "\"%s\"", amount) : tg_buf_append_str(&b, "null");
    if (!rc && a->error) {
      rc = tg_buf_append_str(&b, ",\"error\":");
      if (!rc) rc = json_str(&b, a->error);
    }
    if (!rc) rc = tg_buf_append_str(&b, "}\n");
  }
  if (rc == 0) {
    ssize_t n = write(w->access_fd, b.data, b.len); /* one write: lines never interleave */
    (void)n;
  }
  tg_buf_cleanup(&b);
}

static void on_drain_timeout(evutil_socket_t fd, short kind, void *arg) {
  (void)fd;
  (void)kind;
  tg_worker *w = arg;
  tg_log("shutdown: worker %u: %ld answer(s) not fully written after 2 s; not waiting for them",
         w->id, w->flushing);
  event_base_loopexit(w->base, NULL);
}

/*
 * At shutdown a worker exits once no call is in flight and every answer was
 * written out; an answer whose connection died never reports completion, so
 * the wait for flushing is bounded.
 */
static void drain_check(tg_worker *w) {
  if (!w->draining || w->inflight > 0) return;
  if (w->flushing <= 0) {
    event_base_loopexit(w->base, NULL);
    return;
  }
  if (!evtimer_pending(w->drain_ev, NULL)) {
    struct timeval tv = {2, 0};
    evtimer_add(w->drain_ev, &tv);
  }
}

static void on_flushed(struct evhttp_request *req, void *arg) {
  (void)req;
  tg_worker *w = arg;
  w->flushing--;
  drain_check(w);
}

void tg_worker_request_lost(tg_worker *w) {
  w->flushing--;
  drain_check(w);
}

void tg_worker_call_done(tg_worker *w, unsigned route_metric, const tg_access *a) {
  tg_metrics_call(w->metrics, w->id, route_metric, a->status, a->latency_us);
  access_log(w, a);
  w->inflight--;
  tg_metrics_inflight(w->metrics, w->id, -1);
  drain_check(w);
}

/*
 * Milliseconds since the epoch (44 bits), this worker's counter (20 bits, wrapping) and its
 * random tag (32 bits, drawn at start): unique across workers, restarts and instances sharing a
 * store (two ids are equal only if their tags are, and then only with 2^20 ids in the same
 * millisecond), and increasing in time, so that the charges' unique index on request_id is
 * appended to at its right edge instead of having a random leaf page rewritten by every charge
 * (a few pages per commit instead of about one per charge: docs/STORE.md).
 */
void tg_worker_request_id(tg_worker *w, char out[TG_REQUEST_ID_LEN + 1]) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  uint64_t ms = ((uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u) & 0xfffffffffffull;
  unsigned n = w->next_id++ & 0xfffffu;
  snprintf(out, TG_REQUEST_ID_LEN + 1, "%011llx%05x%08x", (unsigned long long)ms, n,
           (unsigned)w->id_tag);
}

/* ---------------------------------------------------------------- built-in endpoints */

static void reply_text(struct evhttp_request *req, int status, const char *ctype, const void *data,
                       size_t len) {
  struct evbuffer *b = evbuffer_new();
  if (b == NULL) abort();
  evbuffer_add(b, data, len);
  evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", ctype);
  evhttp_send_reply(req, status, NULL, b);
  evbuffer_free(b);
}

/* 1 when the request carries `Authorization: Bearer <token>`; never with an empty token. */
static int bearer_ok(struct evhttp_request *req, const char *token, size_t len) {
  if (len == 0) return 0;
  const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
  if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0) return 0;
  h += 7;
  size_t n = strlen(h);
  if (n != len) return 0;
  return sodium_memcmp(h, token, n) == 0;
}

static int admin_authorized(tg_server *s, struct evhttp_request *req) {
  return bearer_ok(req, s->admin_token, s->admin_token_len);
}

static size_t header_bytes(struct evhttp_request *req) {
  size_t n = strlen(evhttp_request_get_uri(req)) + 16;
  struct evkeyval *h;
  TAILQ_FOREACH(h, evhttp_request_get_input_headers(req), next) n += strlen(h->key) + strlen(h->value) + 4;
  return n;
}

/* Rejects dot segments and encoded slashes or dots, which upstreams may resolve differently. */
static int path_ok(const char *path, size_t n) {
  if (n == 0 || path[0] != '/') return 0;
  for (size_t i = 0; i < n; i++) {
    if (path[i] == '%' && i + 2 < n) {
      char a = path[i + 1], b = path[i + 2];
      if (a == '2' && (b == 'e' || b == 'E' || b == 'f' || b == 'F')) return 0;
      if (a == '5' && (b == 'c' || b == 'C')) return 0;
    }
    if (path[i] == '\\') return 0;
    if (path[i] == '/' && i + 1 < n && path[i + 1] == '.') {
      size_t j = i + 2;
      if (j < n && path[j] == '.') j++;
      if (j == n || path[j] == '/') return 0;
    }
  }
  return 1;
}

static const char *method_name(struct evhttp_request *req) {
  static const char *const names[] = {"GET", "POST", "HEAD", "PUT", "DELETE",
                                      "OPTIONS", "TRACE", "CONNECT", "PATCH"};
  enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
  for (unsigned i = 0; i < 9; i++)
    if (cmd == (enum evhttp_cmd_type)(1u << i)) return names[i];
  return "OTHER";
}

static void simple_done(tg_worker *w, const char *method, const char *id, const char *path,
                        const char *route, int status, const char *err, struct timespec *t0) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  tg_access a = {.request_id = id,
                 .method = method,
                 .path = path,
                 .route = route,
                 .status = status,
                 .latency_us = (uint64_t)(t.tv_sec - t0->tv_sec) * 1000000u +
                               (uint64_t)((t.tv_nsec - t0->tv_nsec) / 1000),
                 .error = err};
  w->inflight++;
  tg_metrics_inflight(w->metrics, w->id, 1);
  tg_worker_call_done(w, 0, &a);
}

/* A facilitator request (gateway/http/ops.c) until its answer went out. */
typedef struct {
  tg_worker *w;
  const char *method; /* static */
  char id[TG_REQUEST_ID_LEN + 1];
  char path[16];
  struct timespec t0;
  const char *route; /* static: "facilitator" or "signin" */
  tg_client_watch cw; /* the request; its answer may come from a store or chain callback */
} fac_call;

static void fac_done(void *arg, int status) {
  fac_call *fc = arg;
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  /* The work was done (the store write or the transaction), only the answer was dropped. */
  int gone = fc->cw.gone;
  tg_client_watch_release(&fc->cw);
  tg_access a = {.request_id = fc->id,
                 .method = fc->method,
                 .path = fc->path,
                 .route = fc->route ? fc->route : "facilitator",
                 .status = gone ? 499 : status,
                 .latency_us = (uint64_t)(t.tv_sec - fc->t0.tv_sec) * 1000000u +
                               (uint64_t)((t.tv_nsec - fc->t0.tv_nsec) / 1000),
                 .error = gone ? "client closed the connection" : NULL};
  tg_worker_call_done(fc->w, 0, &a);
  free(fc);
}

static void on_request(struct evhttp_request *req, void *arg) {
  tg_worker *w = arg;
  tg_server *s = w->server;
  tg_config *cfg = w->cfg;
  struct timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  char id[TG_REQUEST_ID_LEN + 1];
  tg_worker_request_id(w, id);
  const char *method = method_name(req);
  w->flushing++;
  evhttp_request_set_on_complete_cb(req, on_flushed, w);
  const char *uri = evhttp_request_get_uri(req);
  size_t plen = strcspn(uri, "?");
  char path[1024];
  if (uri[0] != '/' || plen >= sizeof path || !path_ok(uri, plen)) {
    tg_http_send_error(req, 400, "malformed request target", id);
    simple_done(w, method, id, "-", NULL, 400, "malformed request target", &t0);
    return;
  }
  memcpy(path, uri, plen);
  path[plen] = 0;
  if (header_bytes(req) > cfg->max_header_bytes) {
    evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
    tg_http_send_error(req, 431, tg_strerror(TG_EHEADERS_TOO_BIG), id);
    simple_done(w, method, id, path, NULL, 431, "headers too large", &t0);
    return;
  }
  if (evbuffer_get_length(evhttp_request_get_input_buffer(req)) > cfg->max_body_bytes) {
    evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
    tg_http_send_error(req, 413, tg_strerror(TG_EBODY_TOO_BIG), id);
    simple_done(w, method, id, path, NULL, 413, "body too large", &t0);
    return;
  }
  if (strcmp(path, "/healthz") == 0) {
    if (w->draining)
      reply_text(req, 503, "application/json", "{\"status\":\"draining\"}\n", 21);
    else
      reply_text(req, 200, "application/json", "{\"status\":\"ok\"}\n", 16);
    return;
  }
  if (strcmp(path, "/metrics") == 0) {
    tg_buf b;
    tg_buf_init(&b, 16 << 20);
    if (tg_metrics_render(w->metrics, &b) == 0 && tg_ops_metrics(s->ops, &b) == 0)
      reply_text(req, 200, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len);
    else
      tg_http_send_error(req, 500, "metrics too large", id);
    tg_buf_cleanup(&b);
    return;
  }
  size_t ap = strlen(cfg->admin_prefix);
  if (strncmp(path, cfg->admin_prefix, ap) == 0 || strncmp(path, cfg->admin_prefix, ap - 1) == 0) {
    int st;
    if (!admin_authorized(s, req)) {
      evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate", "Bearer");
      tg_http_send_error(req, st = 401, "admin API needs a bearer token", id);
    } else {
      const char *q = uri[plen] == '?' ? uri + plen + 1 : NULL;
      st = tg_ops_admin(s->ops, req, method, strlen(path) >= ap ? path + ap : "", q, id);
    }
    simple_done(w, method, id, path, "admin", st, NULL, &t0);
    return;
  }
  if (tg_signin_is_path(path) && s->ops && s->ops->passes) {
    /* Sign-in (access passes): in flight until answered, like the facilitator. */
    fac_call *fc = calloc(1, sizeof *fc);
    if (fc == NULL) abort();
    fc->w = w;
    fc->method = method;
    memcpy(fc->id, id, sizeof fc->id);
    size_t pl = strlen(path); /* one of the sign-in paths: short */
    if (pl >= sizeof fc->path) pl = sizeof fc->path - 1;
    memcpy(fc->path, path, pl);
    fc->t0 = t0;
    fc->route = "signin";
    w->inflight++;
    tg_metrics_inflight(w->metrics, w->id, 1);
    tg_client_watch_start(&fc->cw, w, req, 0, NULL, NULL);
    tg_signin_handle(s->ops, cfg, w->base, &fc->cw, method, path, id, fac_done, fc);
    return;
  }
  if (s->ops && s->ops->pay && tg_ops_is_facilitator(path) && s->fac_token_len &&
      strcmp(path, "/supported") != 0 && strcmp(path, "/channel/refund") != 0 &&
      !bearer_ok(req, s->fac_token, s->fac_token_len)) {
    /* (/channel/refund is the payers': its refund payload's voucher authenticates them.) */
    /* `facilitator token_...` set: settling and verifying are for the servers that hold it. */
    evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate", "Bearer");
    tg_http_send_error(req, 401, "facilitator endpoints need a bearer token", id);
    simple_done(w, method, id, path, "facilitator", 401, "facilitator token missing or wrong", &t0);
    return;
  }
  if (s->ops && s->ops->pay && tg_ops_is_facilitator(path)) {
    /* In flight until answered: a shutdown waits for settlements being submitted. */
    fac_call *fc = calloc(1, sizeof *fc);
    if (fc == NULL) abort();
    fc->w = w;
    fc->method = method;
    memcpy(fc->id, id, sizeof fc->id);
    size_t pl = strlen(path); /* one of the facilitator paths: short */
    if (pl >= sizeof fc->path) pl = sizeof fc->path - 1;
    memcpy(fc->path, path, pl);
    fc->t0 = t0;
    w->inflight++;
    tg_metrics_inflight(w->metrics, w->id, 1);
    tg_client_watch_start(&fc->cw, w, req, 0, NULL, NULL);
    tg_ops_facilitator(s->ops, w->base, &fc->cw, method, path, id, fac_done, fc);
    return;
  }
  if (w->draining) {
    evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
    tg_http_send_error(req, 503, tg_strerror(TG_ESHUTTING_DOWN), id);
    simple_done(w, method, id, path, NULL, 503, "shutting down", &t0);
    return;
  }
  const tg_config_route *r = tg_route_match(cfg, method, path);
  if (r == NULL) {
    tg_http_send_error(req, 404, tg_strerror(TG_ENO_ROUTE), id);
    simple_done(w, method, id, path, NULL, 404, "no route", &t0);
    return;
  }
  w->inflight++;
  tg_metrics_inflight(w->metrics, w->id, 1);
  tg_proxy_handle(w, req, r, w->route_metric[r - cfg->routes], id);
}

/* ---------------------------------------------------------------- worker control */

static void set_routes(tg_worker *w) {
  free(w->route_metric);
  w->route_metric = calloc(w->cfg->n_routes + 1, sizeof *w->route_metric);
  if (w->route_metric == NULL) abort();
  for (size_t i = 0; i < w->cfg->n_routes; i++)
    w->route_metric[i] = tg_metrics_route(w->metrics, w->cfg->routes[i].name);
}

static void on_swap(evutil_socket_t fd, short kind, void *arg) {
  (void)fd;
  (void)kind;
  tg_worker *w = arg;
  pthread_mutex_lock(&w->lock);
  tg_config *next = w->pending;
  w->pending = NULL;
  pthread_mutex_unlock(&w->lock);
  if (next == NULL) return;
  tg_config *old = w->cfg;
  w->cfg = next; /* calls in flight keep their own reference to the old one */
  set_routes(w);
  tg_config_unref(old);
}

static void on_stop(evutil_socket_t fd, short kind, void *arg) {
  (void)fd;
  (void)kind;
  tg_worker *w = arg;
  if (w->draining) return;
  w->draining = 1;
  for (size_t i = 0; i < w->n_bound; i++) evhttp_del_accept_socket(w->http, w->bound[i]);
  w->n_bound = 0;
  drain_check(w);
}

static void *worker_main(void *arg) {
  tg_worker *w = arg;
  event_base_loop(w->base, EVLOOP_NO_EXIT_ON_EMPTY);
  atomic_fetch_sub(&w->server->running, 1);
  return NULL;
}

/* ---------------------------------------------------------------- setup */

static int listen_socket(int *out, char *err, const tg_config_listen *l, int probe) {
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
  struct addrinfo *ai = NULL;
  char port[8];
  snprintf(port, sizeof port, "%u", (unsigned)l->port);
  int g = getaddrinfo(l->host, port, &hints, &ai);
  if (g != 0) {
    snprintf(err, TG_CONFIG_ERR_MAX, "listen %s:%u: %s", l->host, (unsigned)l->port, gai_strerror(g));
    return TG_ELISTEN;
  }
  int fd, one = 1;
  if (probe) {
    /*
     * SO_REUSEPORT would let this daemon share a port with another one already listening
     * there (same user), silently splitting its traffic: a plain bind first proves the port free.
     */
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0) {
      setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      if (ai->ai_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    }
    if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
      snprintf(err, TG_CONFIG_ERR_MAX, "listen %s:%u: %s", l->host, (unsigned)l->port,
               strerror(errno));
      if (fd >= 0) close(fd);
      freeaddrinfo(ai);
      return TG_ELISTEN;
    }
    close(fd);
  }
  fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd >= 0) {
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (ai->ai_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  }
  if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 4096) != 0) {
    snprintf(err, TG_CONFIG_ERR_MAX, "listen %s:%u: %s", l->host, (unsigned)l->port, strerror(errno));
    if (fd >= 0) close(fd);
    freeaddrinfo(ai);
    return TG_ELISTEN;
  }
  freeaddrinfo(ai);
  *out = fd;
  return 0;
}

static int read_secret(char *out, size_t cap, size_t *len, int kind, const char *src) {
  *len = 0;
  if (kind == TG_SECRET_ENV) {
    const char *v = getenv(src);
    if (v == NULL) return TG_ENOTFOUND;
    size_t n = strlen(v);
    if (n >= cap) return TG_ETOOBIG;
    memcpy(out, v, n);
    *len = n;
    return 0;
  }
  FILE *f = fopen(src, "rb");
  if (f == NULL) return TG_EIO;
  size_t n = fread(out, 1, cap, f);
  fclose(f);
  if (n == cap) return TG_ETOOBIG;
  while (n && (out[n - 1] == '\n' || out[n - 1] == '\r')) n--;
  *len = n;
  return 0;
}

static void setup_http(tg_worker *w) {
  tg_config *c = w->cfg;
  evhttp_set_gencb(w->http, on_request, w);
  /* evhttp's own cap stays above ours so that our check answers 431; past it evhttp answers 413. */
  evhttp_set_max_headers_size(w->http, (ev_ssize_t)(c->max_header_bytes * 4 + 65536));
  /* Likewise for bodies: ours answers a JSON 413; evhttp's (HTML) only past twice the limit. */
  evhttp_set_max_body_size(w->http, (ev_ssize_t)(c->max_body_bytes * 2 + 65536));
  struct timeval tv = {c->client_timeout_ms / 1000, (c->client_timeout_ms % 1000) * 1000};
  evhttp_set_timeout_tv(w->http, &tv);
  evhttp_set_default_content_type(w->http, NULL);
  evhttp_set_allowed_methods(w->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                          EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                          EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
}

static void use_pthreads(void) {
  if (evthread_use_pthreads() != 0) abort();
}

/*
 * A worker's loop. With epoll, changes of interest are batched per loop
 * iteration (EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST): evhttp enabling read and
 * write for an answer, or dropping one watch and adding another on the same
 * socket, cost one epoll_ctl instead of two. libevent documents one hazard,
 * descriptors cloned with dup(); neither evhttp nor libcurl clone sockets, and
 * a descriptor closed and reused within an iteration is handled (a failed MOD
 * is retried as ADD).
 */
static struct event_base *worker_base(void) {
  struct event_config *ec = event_config_new();
  if (ec == NULL) abort();
  event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
  struct event_base *b = event_base_new_with_config(ec);
  event_config_free(ec);
  return b ? b : event_base_new();
}

int tg_server_new(tg_server **out, char *err, const tg_server_opts *opts) {
  *out = NULL;
  err[0] = 0;
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, use_pthreads);
  tg_server *s = calloc(1, sizeof *s);
  if (s == NULL) abort();
  tg_config *cfg = s->cfg = tg_config_ref(opts->cfg);
  s->hooks = opts->hooks;
  s->ops = opts->ops;
  s->on_reload = opts->on_reload;
  s->on_reload_arg = opts->on_reload_arg;
  s->access_fd = -1;
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  s->n_workers = cfg->workers ? cfg->workers : (unsigned)(cores > 0 ? cores : 1);
  int rc = 0;
  if (cfg->admin_token_kind) {
    rc = read_secret(s->admin_token, sizeof s->admin_token, &s->admin_token_len,
                     cfg->admin_token_kind, cfg->admin_token_src);
    if (rc || s->admin_token_len < 16) {
      snprintf(err, TG_CONFIG_ERR_MAX, "%s: admin token from %s %s: %s", cfg->path,
               cfg->admin_token_kind == TG_SECRET_ENV ? "variable" : "file", cfg->admin_token_src,
               rc ? tg_strerror(rc) : "shorter than 16 characters");
      tg_server_free(s);
      return rc ? rc : TG_ECONFIG_VALUE;
    }
  }
  if (cfg->facilitator_token_kind) {
    rc = read_secret(s->fac_token, sizeof s->fac_token, &s->fac_token_len,
                     cfg->facilitator_token_kind, cfg->facilitator_token_src);
    if (rc || s->fac_token_len < 16) {
      snprintf(err, TG_CONFIG_ERR_MAX, "%s: facilitator token from %s %s: %s", cfg->path,
               cfg->facilitator_token_kind == TG_SECRET_ENV ? "variable" : "file",
               cfg->facilitator_token_src, rc ? tg_strerror(rc) : "shorter than 16 characters");
      tg_server_free(s);
      return rc ? rc : TG_ECONFIG_VALUE;
    }
  }
  if (cfg->access_log) {
    if (strcmp(cfg->access_log, "-") == 0) {
      s->access_fd = dup(2);
    } else {
      s->access_fd = open(cfg->access_log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
      if (s->access_fd < 0) {
        snprintf(err, TG_CONFIG_ERR_MAX, "access_log %s: %s", cfg->access_log, strerror(errno));
        tg_server_free(s);
        return TG_EIO;
      }
    }
  }
  s->metrics = tg_metrics_new(s->n_workers);
  s->n_fds = (size_t)s->n_workers * cfg->n_listen;
  s->fds = malloc(s->n_fds * sizeof *s->fds);
  if (s->fds == NULL) abort();
  for (size_t i = 0; i < s->n_fds; i++) s->fds[i] = -1;
  for (size_t i = 0; i < s->n_fds; i++) {
    if ((rc = listen_socket(&s->fds[i], err, &cfg->listen[i % cfg->n_listen], i < cfg->n_listen))) {
      tg_server_free(s);
      return rc;
    }
  }
  s->workers = calloc(s->n_workers, sizeof *s->workers);
  if (s->workers == NULL) abort();
  for (unsigned i = 0; i < s->n_workers; i++) {
    tg_worker *w = &s->workers[i];
    w->id = i;
    w->server = s;
    w->hooks = s->hooks;
    w->metrics = s->metrics;
    w->access_fd = s->access_fd;
    w->cfg = tg_config_ref(cfg);
    pthread_mutex_init(&w->lock, NULL);
    randombytes_buf(&w->id_tag, sizeof w->id_tag);
    w->base = worker_base();
    w->http = w->base ? evhttp_new(w->base) : NULL;
    if (w->http == NULL || tg_proxy_new(&w->proxy, w) != 0) {
      snprintf(err, TG_CONFIG_ERR_MAX, "cannot create the event loop of worker %u", i);
      tg_server_free(s);
      return TG_EINTERNAL;
    }
    w->swap_ev = event_new(w->base, -1, 0, on_swap, w);
    w->stop_ev = event_new(w->base, -1, 0, on_stop, w);
    w->drain_ev = evtimer_new(w->base, on_drain_timeout, w);
    setup_http(w);
    set_routes(w);
    for (size_t k = 0; k < cfg->n_listen; k++) {
      size_t idx = (size_t)i * cfg->n_listen + k;
      w->bound[w->n_bound] = evhttp_accept_socket_with_handle(w->http, s->fds[idx]);
      if (w->bound[w->n_bound] == NULL) {
        snprintf(err, TG_CONFIG_ERR_MAX, "cannot accept on socket for worker %u", i);
        tg_server_free(s);
        return TG_ELISTEN;
      }
      s->fds[idx] = -1; /* now owned by evhttp */
      w->n_bound++;
    }
  }
  *out = s;
  return 0;
}

unsigned tg_server_workers(const tg_server *s) { return s->n_workers; }

void tg_server_stop(tg_server *s) { atomic_store(&s->stop_requested, 1); }
void tg_server_reload(tg_server *s) { atomic_store(&s->reload_requested, 1); }

static void do_reload(tg_server *s) {
  tg_config *next;
  char err[TG_CONFIG_ERR_MAX];
  int rc = tg_config_load(&next, err, s->cfg->path);
  if (rc) {
    tg_log("reload failed, keeping the running configuration: %s", err);
    tg_metrics_reload(s->metrics, 0);
    return;
  }
  int same_listen = next->n_listen == s->cfg->n_listen && next->workers == s->cfg->workers;
  for (size_t i = 0; same_listen && i < next->n_listen; i++)
    same_listen = strcmp(next->listen[i].host, s->cfg->listen[i].host) == 0 &&
                  next->listen[i].port == s->cfg->listen[i].port;
  if (!same_listen) tg_log("reload: listen and workers changes take effect at the next restart");
  if (s->on_reload) s->on_reload(s->on_reload_arg, next);
  for (unsigned i = 0; i < s->n_workers; i++) {
    tg_worker *w = &s->workers[i];
    pthread_mutex_lock(&w->lock);
    tg_config_unref(w->pending);
    w->pending = tg_config_ref(next);
    pthread_mutex_unlock(&w->lock);
    event_active(w->swap_ev, 0, 0);
  }
  tg_config_unref(s->cfg);
  s->cfg = next;
  tg_metrics_reload(s->metrics, 1);
  tg_log("reloaded %s: %zu routes, %zu upstreams, %zu prices", next->path, next->n_routes,
         next->n_upstreams, next->n_prices);
}

int tg_server_run(tg_server *s) {
  sigset_t set, old;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, &old);
  signal(SIGPIPE, SIG_IGN);
  s->main_thread = pthread_self();
  atomic_store(&s->running, s->n_workers);
  unsigned started = 0;
  for (; started < s->n_workers; started++)
    if (pthread_create(&s->workers[started].thread, NULL, worker_main, &s->workers[started]) != 0)
      break;
  if (started < s->n_workers) {
    tg_log("cannot start worker threads");
    atomic_fetch_sub(&s->running, s->n_workers - started);
    atomic_store(&s->stop_requested, 1);
  }
  tg_log("listening on %s:%u with %u workers", s->cfg->listen[0].host,
         (unsigned)s->cfg->listen[0].port, s->n_workers);
  int stopping = 0, rc = 0;
  struct timespec deadline = {0, 0};
  for (;;) {
    struct timespec tick = {0, 50 * 1000000};
    siginfo_t info;
    int sig = sigtimedwait(&set, &info, &tick);
    if (sig == SIGHUP || atomic_exchange(&s->reload_requested, 0)) do_reload(s);
    if (sig == SIGTERM || sig == SIGINT || atomic_exchange(&s->stop_requested, 0)) {
      if (stopping && (sig == SIGTERM || sig == SIGINT)) {
        tg_log("second signal: exiting without waiting for calls in flight");
        rc = TG_ECANCELED;
        break;
      }
      if (!stopping) {
        stopping = 1;
        tg_log("shutting down: no new connections, waiting for calls in flight (up to %ums)",
               s->cfg->shutdown_timeout_ms);
        clock_gettime(CLOCK_MONOTONIC, &deadline);
        deadline.tv_sec += s->cfg->shutdown_timeout_ms / 1000;
        deadline.tv_nsec += (long)(s->cfg->shutdown_timeout_ms % 1000) * 1000000;
        for (unsigned i = 0; i < started; i++) event_active(s->workers[i].stop_ev, 0, 0);
      }
    }
    if (atomic_load(&s->running) == 0) break;
    if (stopping) {
      struct timespec now;
      clock_gettime(CLOCK_MONOTONIC, &now);
      if (now.tv_sec > deadline.tv_sec ||
          (now.tv_sec == deadline.tv_sec && now.tv_nsec >= deadline.tv_nsec)) {
        tg_log("shutdown timeout: abandoning the calls still in flight");
        rc = TG_ETIMEOUT;
        break;
      }
    }
  }
  if (rc == 0) {
    for (unsigned i = 0; i < started; i++) pthread_join(s->workers[i].thread, NULL);
    tg_log("stopped");
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  return rc;
}

void tg_server_free(tg_server *s) {
  if (s == NULL) return;
  for (unsigned i = 0; s->workers && i < s->n_workers; i++) {
    tg_worker *w = &s->workers[i];
    if (w->http) evhttp_free(w->http);
    tg_proxy_free(w->proxy);
    if (w->swap_ev) event_free(w->swap_ev);
    if (w->stop_ev) event_free(w->stop_ev);
    if (w->drain_ev) event_free(w->drain_ev);
    if (w->base) event_base_free(w->base);
    tg_config_unref(w->cfg);
    tg_config_unref(w->pending);
    free(w->route_metric);
    pthread_mutex_destroy(&w->lock);
  }
  free(s->workers);
  for (size_t i = 0; s->fds && i < s->n_fds; i++)
    if (s->fds[i] >= 0) close(s->fds[i]);
  free(s->fds);
  if (s->access_fd >= 0) close(s->access_fd);
  tg_metrics_free(s->metrics);
  sodium_memzero(s->admin_token, sizeof s->admin_token);
  sodium_memzero(s->fac_token, sizeof s->fac_token);
  tg_config_unref(s->cfg);
  free(s);
}
