/* The upstream side: proxied calls driven by libcurl's multi interface on a worker's event loop. */
#include "http/proxy.h"

#include <curl/curl.h>
#include <sys/queue.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/*
 * One call's life: [admit (priced routes)] -> upstream transfer -> [complete
 * (admitted calls)] -> answer. Answers are either
 *   - streamed: server-sent events, and unpriced answers larger than
 *     STREAM_SWITCH_BYTES: the headers go out when the upstream's arrive
 *     (chunked), each piece of body as curl delivers it, with backpressure;
 *   - buffered (up to max_response_bytes): sent in one piece once the
 *     upstream finished and, on a priced route, once the charge is durable
 *     (from the complete callback, with its PAYMENT-RESPONSE headers).
 * A client that closes its connection aborts the transfer (EV_CLOSED watch
 * on its socket while the request is processed; evhttp itself does not
 * read from a connection whose request is being served).
 */

#define STREAM_SWITCH_BYTES (64 << 10)
#define SSE_LINE_MAX (256 << 10)
#define MODEL_MAX 256

/*
 * Idle easy handles kept per worker (each holds libcurl's receive buffer), and that buffer's
 * size: 8 KiB instead of libcurl's 16 KiB halves the memory of every call in flight (1,000
 * connections: ~8 MiB less) for one more read per 16 KiB of answer.
 */
#define EASY_POOL 64
#define UPSTREAM_BUFFER (8 << 10)

/*
 * Unpriced calls arm the EV_CLOSED watch on the client's socket only once they
 * last this long (or start streaming): a short call is over before a client
 * that hangs up could save anything, and the watch costs two epoll_ctl calls.
 * Priced calls arm it at once (a client gone before the answer is not charged).
 */
#define LAZY_CLOSE_WATCH_MS 20

typedef struct sockinfo sockinfo;

struct tg_proxy {
  tg_worker *w;
  CURLM *multi;
  struct event *timer;
  CURL *pool[EASY_POOL]; /* idle easy handles: reset and reused, cheaper than new ones */
  size_t n_pool;
  /* every upstream socket curl has open, by descriptor: active or parked in curl's pool */
  sockinfo **socks;
  size_t n_socks;
};

static CURL *easy_get(tg_proxy *p) { return p->n_pool ? p->pool[--p->n_pool] : curl_easy_init(); }

static void easy_put(tg_proxy *p, CURL *e) {
  if (e == NULL) return;
  if (p->n_pool == EASY_POOL) {
    curl_easy_cleanup(e);
    return;
  }
  curl_easy_reset(e);
  p->pool[p->n_pool++] = e;
}

/*
 * An upstream socket's event. When a transfer ends, curl forgets the socket
 * (CURL_POLL_REMOVE) but keeps the connection in its pool; the event stays
 * registered ("parked", read interest only), so the next transfer on that
 * connection costs no epoll_ctl. A parked socket that turns readable (the
 * upstream closed it) is unregistered; curl's own check before reuse then
 * closes it. The event is freed in the close-socket callback, while the
 * descriptor is still open.
 */
struct sockinfo {
  struct event *ev;
  tg_proxy *p;
  curl_socket_t fd;
  int parked;        /* no transfer: curl has no interest, events are ours */
  int registered;    /* the event is added */
};

static sockinfo *sock_lookup(tg_proxy *p, curl_socket_t fd) {
  return fd >= 0 && (size_t)fd < p->n_socks ? p->socks[fd] : NULL;
}

static void sock_store(tg_proxy *p, curl_socket_t fd, sockinfo *si) {
  if ((size_t)fd >= p->n_socks) {
    size_t n = p->n_socks ? p->n_socks : 64;
    while (n <= (size_t)fd) n *= 2;
    sockinfo **v = realloc(p->socks, n * sizeof *v);
    if (v == NULL) abort();
    memset(v + p->n_socks, 0, (n - p->n_socks) * sizeof *v);
    p->socks = v;
    p->n_socks = n;
  }
  p->socks[fd] = si;
}

typedef struct call {
  tg_worker *w;
  tg_config *cfg; /* reference held for the call */
  const tg_config_route *route;
  const tg_config_upstream *upstream;
  const tg_config_price *price;
  unsigned metric;
  char request_id[TG_REQUEST_ID_LEN + 1];
  char method[16];
  char *path; /* without query */
  struct timespec t0;

  tg_client_watch cw;              /* cw.req: NULL once the client is gone or answered */

  /* payment */
  tg_pay_call *pay;
  int admitted, pay_pending;
  int charged;
  tg_u256 amount;
  const char *scheme_name;         /* from the receipt (static string), NULL when unknown */
  char *admit_hdr[2][2];           /* headers of the admission (pass plan), added to the answer */
  int has_payer;
  tg_address payer;

  /* upstream */
  CURL *easy;
  struct curl_slist *hdrs;
  struct event *ttfb_ev;           /* the upstream's answer must begin before this fires */
  char *body;                      /* rewritten request body (usage injection) */
  int curl_active;
  int want_stream_usage;
  long status;                     /* upstream status, 0 before it answered */
  struct evkeyvalq resp_headers;
  int headers_done, sse;
  int too_big, client_gone;
  int err_kind;                    /* TG_UPERR_* or -1 */
  CURLcode result;

  /* answer */
  int streaming;                   /* reply_start sent */
  int paused;
  int replied;                     /* final bytes handed to evhttp (or client gone) */
  int status_sent;
  uint64_t bytes_out;
  struct evbuffer *buffered;

  /* usage */
  tg_buf line;
  int line_overflow;
  int usage_known;
  uint64_t in_tokens, out_tokens;
  const char *error;
} call;

static void upstream_done(call *c);
static void deliver(call *c, const tg_pay_receipt *r);

/* ---------------------------------------------------------------- helpers */

static uint64_t elapsed_us(const struct timespec *t0) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)(t.tv_sec - t0->tv_sec) * 1000000u + (uint64_t)((t.tv_nsec - t0->tv_nsec) / 1000);
}

static int is_hop_by_hop(const char *name) {
  static const char *const hop[] = {"Connection",          "Keep-Alive", "Proxy-Connection",
                                    "Proxy-Authenticate",  "Proxy-Authorization",
                                    "TE",                  "Trailer",    "Transfer-Encoding",
                                    "Upgrade"};
  for (size_t i = 0; i < sizeof hop / sizeof *hop; i++)
    if (strcasecmp(name, hop[i]) == 0) return 1;
  return 0;
}

/* 1 when `name` is listed in a Connection header value (those are hop-by-hop too). */
static int in_connection_list(const char *conn, const char *name) {
  if (conn == NULL) return 0;
  size_t n = strlen(name);
  const char *p = conn;
  while (*p) {
    while (*p == ' ' || *p == '\t' || *p == ',') p++;
    size_t k = strcspn(p, ", \t");
    if (k == n && strncasecmp(p, name, n) == 0) return 1;
    p += k;
  }
  return 0;
}

void tg_http_send_error(struct evhttp_request *req, int status, const char *msg,
                        const char *request_id) {
  struct evbuffer *b = evbuffer_new();
  if (b == NULL) abort();
  json_t *o = json_pack("{s:s, s:s}", "error", msg, "request_id", request_id ? request_id : "");
  char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
  evbuffer_add_printf(b, "%s\n", text ? text : "{\"error\":\"internal error\"}");
  free(text);
  json_decref(o);
  struct evkeyvalq *h = evhttp_request_get_output_headers(req);
  evhttp_remove_header(h, "Content-Type");
  evhttp_add_header(h, "Content-Type", "application/json");
  if (request_id) evhttp_add_header(h, "X-Request-Id", request_id);
  evhttp_send_reply(req, status, NULL, b);
  evbuffer_free(b);
}

/* ---------------------------------------------------------------- curl <-> libevent */

static void check_multi(tg_proxy *p) {
  CURLMsg *m;
  int left;
  while ((m = curl_multi_info_read(p->multi, &left)) != NULL) {
    if (m->msg != CURLMSG_DONE) continue;
    CURL *easy = m->easy_handle;
    call *c = NULL;
    curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&c);
    c->result = m->data.result;
    curl_multi_remove_handle(p->multi, easy);
    c->curl_active = 0;
    upstream_done(c);
  }
}

static void on_sock_event(evutil_socket_t fd, short kind, void *arg) {
  sockinfo *si = arg;
  tg_proxy *p = si->p;
  if (si->parked) {
    /* An idle pooled connection with something to read: the upstream closed it (or sent
     * garbage). Stop watching; curl finds it dead before any reuse and closes it. */
    event_del(si->ev);
    si->registered = 0;
    return;
  }
  int action = ((kind & EV_READ) ? CURL_CSELECT_IN : 0) | ((kind & EV_WRITE) ? CURL_CSELECT_OUT : 0);
  int running;
  curl_multi_socket_action(p->multi, fd, action, &running);
  check_multi(p);
}

static void on_timer(evutil_socket_t fd, short kind, void *arg) {
  (void)fd;
  (void)kind;
  tg_proxy *p = arg;
  int running;
  curl_multi_socket_action(p->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  check_multi(p);
}

static int curl_timer_cb(CURLM *multi, long timeout_ms, void *arg) {
  (void)multi;
  tg_proxy *p = arg;
  if (timeout_ms < 0) {
    evtimer_del(p->timer);
  } else {
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    evtimer_add(p->timer, &tv);
  }
  return 0;
}

/* Sets the event's interest; no epoll_ctl when it is registered with that interest already. */
static void sock_want(sockinfo *si, short kind) {
  if (si->registered && event_get_events(si->ev) == kind) return;
  if (si->registered) event_del(si->ev);
  event_assign(si->ev, si->p->w->base, si->fd, kind, on_sock_event, si);
  event_add(si->ev, NULL);
  si->registered = 1;
}

static int curl_socket_cb(CURL *easy, curl_socket_t s, int what, void *arg, void *sockp) {
  (void)easy;
  tg_proxy *p = arg;
  sockinfo *si = sockp ? sockp : sock_lookup(p, s);
  if (what == CURL_POLL_REMOVE) {
    if (si) {
      /* The transfer is over; the connection may go back to curl's pool: park the event
       * with read interest (EOF from the upstream), or stop it if it watched writes. */
      si->parked = 1;
      if (si->registered && event_get_events(si->ev) != (EV_READ | EV_PERSIST)) {
        event_del(si->ev);
        si->registered = 0;
      }
      curl_multi_assign(p->multi, s, NULL);
    }
    return 0;
  }
  short kind = (short)(((what & CURL_POLL_IN) ? EV_READ : 0) | ((what & CURL_POLL_OUT) ? EV_WRITE : 0) |
                       EV_PERSIST);
  if (si == NULL) {
    si = calloc(1, sizeof *si);
    if (si == NULL) abort();
    si->p = p;
    si->fd = s;
    si->ev = event_new(p->w->base, s, kind, on_sock_event, si);
    if (si->ev == NULL) abort();
    sock_store(p, s, si);
  }
  si->parked = 0;
  curl_multi_assign(p->multi, s, si);
  sock_want(si, kind);
  return 0;
}

/* curl closes an upstream socket (any time, pooled or not): the event goes first. */
static int curl_close_cb(void *arg, curl_socket_t s) {
  tg_proxy *p = arg;
  sockinfo *si = sock_lookup(p, s);
  if (si) {
    event_free(si->ev); /* event_del while the descriptor is still open */
    free(si);
    p->socks[s] = NULL;
  }
  return close(s);
}

int tg_proxy_new(tg_proxy **out, tg_worker *w) {
  *out = NULL;
  tg_proxy *p = calloc(1, sizeof *p);
  if (p == NULL) abort();
  p->w = w;
  p->multi = curl_multi_init();
  p->timer = evtimer_new(w->base, on_timer, p);
  if (p->multi == NULL || p->timer == NULL) {
    tg_proxy_free(p);
    return TG_EINTERNAL;
  }
  curl_multi_setopt(p->multi, CURLMOPT_SOCKETFUNCTION, curl_socket_cb);
  curl_multi_setopt(p->multi, CURLMOPT_SOCKETDATA, p);
  curl_multi_setopt(p->multi, CURLMOPT_TIMERFUNCTION, curl_timer_cb);
  curl_multi_setopt(p->multi, CURLMOPT_TIMERDATA, p);
  curl_multi_setopt(p->multi, CURLMOPT_MAXCONNECTS, 1024L);
  *out = p;
  return 0;
}

void tg_proxy_free(tg_proxy *p) {
  if (p == NULL) return;
  for (size_t i = 0; i < p->n_pool; i++) curl_easy_cleanup(p->pool[i]);
  if (p->multi) curl_multi_cleanup(p->multi); /* closes the pool: curl_close_cb */
  for (size_t i = 0; i < p->n_socks; i++) {
    if (p->socks[i] == NULL) continue;
    event_free(p->socks[i]->ev);
    free(p->socks[i]);
  }
  free(p->socks);
  if (p->timer) event_free(p->timer);
  free(p);
}

/* ---------------------------------------------------------------- call lifetime */

static void maybe_finish(call *c) {
  if (c->curl_active || c->pay_pending || !c->replied) return;
  tg_access a = {.request_id = c->request_id,
                 .method = c->method,
                 .path = c->path,
                 .route = c->route->name,
                 .status = c->status_sent,
                 .upstream_status = (int)c->status,
                 .latency_us = elapsed_us(&c->t0),
                 .bytes_out = c->bytes_out,
                 .error = c->error,
                 .usage_known = c->usage_known,
                 .input_tokens = c->in_tokens,
                 .output_tokens = c->out_tokens,
                 .charged = c->charged,
                 .amount = c->charged ? &c->amount : NULL,
                 .scheme = c->scheme_name,
                 .payer = c->has_payer ? &c->payer : NULL};
  if (c->err_kind >= 0) tg_metrics_upstream_error(c->w->metrics, c->w->id, c->metric, c->err_kind);
  tg_worker *w = c->w;
  unsigned metric = c->metric;
  easy_put(w->proxy, c->easy);
  if (c->ttfb_ev) event_free(c->ttfb_ev);
  curl_slist_free_all(c->hdrs);
  free(c->body);
  evhttp_clear_headers(&c->resp_headers);
  if (c->buffered) evbuffer_free(c->buffered);
  tg_buf_cleanup(&c->line);
  tg_client_watch_release(&c->cw);
  tg_worker_call_done(w, metric, &a);
  tg_config_unref(c->cfg);
  free(c->path);
  for (int i = 0; i < 2; i++) {
    free(c->admit_hdr[i][0]);
    free(c->admit_hdr[i][1]);
  }
  free(c);
}

/* The client went away (connection freed by evhttp or by the watch): abort the call. */
static void on_client_gone(void *arg) {
  call *c = arg;
  c->client_gone = 1;
  if (c->status_sent == 0) c->status_sent = 499;
  if (c->error == NULL) c->error = "client closed the connection";
  if (c->curl_active) { /* never called from inside a curl callback: evhttp writes later */
    curl_multi_remove_handle(c->w->proxy->multi, c->easy);
    c->curl_active = 0;
    c->result = CURLE_ABORTED_BY_CALLBACK;
    upstream_done(c);
    return;
  }
  if (!c->curl_active && !c->pay_pending) c->replied = 1;
  maybe_finish(c);
}

/* ---------------------------------------------------------------- usage */

static void usage_from_json(call *c, json_t *root) {
  json_t *u = json_object_get(root, "usage");
  if (!json_is_object(u)) return;
  json_t *in = json_object_get(u, "prompt_tokens");
  if (in == NULL) in = json_object_get(u, "input_tokens");
  json_t *out = json_object_get(u, "completion_tokens");
  if (out == NULL) out = json_object_get(u, "output_tokens");
  if (!json_is_integer(in) || !json_is_integer(out)) return;
  if (json_integer_value(in) < 0 || json_integer_value(out) < 0) return;
  c->in_tokens = (uint64_t)json_integer_value(in);
  c->out_tokens = (uint64_t)json_integer_value(out);
  c->usage_known = 1;
}

/* 1 when `s` holds the JSON key "usage": answers and events without it are not parsed. */
static int mentions_usage(const char *s, size_t n) {
  const char *end = s + n;
  while (end - s >= 7) {
    const char *q = memchr(s, '"', (size_t)(end - s) - 6); /* q + 7 <= end */
    if (q == NULL) return 0;
    if (memcmp(q, "\"usage\"", 7) == 0) return 1;
    s = q + 1;
  }
  return 0;
}

static void sse_line(call *c, const char *s, size_t n) {
  if (n && s[n - 1] == '\r') n--;
  if (n < 5 || memcmp(s, "data:", 5) != 0) return;
  s += 5, n -= 5;
  if (n && *s == ' ') s++, n--;
  /* Only events that mention usage are parsed: the cheap test first. */
  if (n < 8 || !mentions_usage(s, n)) return;
  json_t *root = json_loadb(s, n, 0, NULL);
  if (root) usage_from_json(c, root);
  json_decref(root);
}

static void sse_feed(call *c, const char *data, size_t len) {
  while (len) {
    const char *nl = memchr(data, '\n', len);
    size_t n = nl ? (size_t)(nl - data) : len;
    if (!c->line_overflow && tg_buf_append(&c->line, data, n) != 0) c->line_overflow = 1;
    if (nl) {
      if (!c->line_overflow) sse_line(c, (const char *)c->line.data, c->line.len);
      tg_buf_reset(&c->line);
      c->line_overflow = 0;
      n++;
    }
    data += n;
    len -= n;
  }
}

/* ---------------------------------------------------------------- answer */

static void copy_resp_headers(call *c, const tg_pay_header *extra, size_t n_extra) {
  struct evkeyvalq *out = evhttp_request_get_output_headers(c->cw.req);
  struct evkeyval *h;
  const char *conn = evhttp_find_header(&c->resp_headers, "Connection");
  TAILQ_FOREACH(h, &c->resp_headers, next) {
    if (is_hop_by_hop(h->key) || in_connection_list(conn, h->key)) continue;
    if (strcasecmp(h->key, "Content-Length") == 0) continue;
    evhttp_add_header(out, h->key, h->value);
  }
  for (size_t i = 0; i < n_extra; i++)
    if (extra[i].name && extra[i].value) evhttp_add_header(out, extra[i].name, extra[i].value);
  for (int i = 0; i < 2; i++)
    if (c->admit_hdr[i][0]) evhttp_add_header(out, c->admit_hdr[i][0], c->admit_hdr[i][1]);
  evhttp_add_header(out, "X-Request-Id", c->request_id);
}

static void on_drained(struct evhttp_connection *evcon, void *arg) {
  (void)evcon;
  call *c = arg;
  if (c->paused && c->curl_active) {
    c->paused = 0;
    curl_easy_pause(c->easy, CURLPAUSE_CONT);
  }
}

static size_t client_queued(call *c) {
  if (c->cw.evcon == NULL) return 0;
  struct bufferevent *bev = evhttp_connection_get_bufferevent(c->cw.evcon);
  return bev ? evbuffer_get_length(bufferevent_get_output(bev)) : 0;
}

static void start_stream(call *c) {
  tg_client_watch_arm(&c->cw); /* streams last: notice a client that leaves */
  copy_resp_headers(c, NULL, 0);
  evhttp_send_reply_start(c->cw.req, (int)c->status, NULL);
  c->streaming = 1;
  c->status_sent = (int)c->status;
}

static void send_chunk(call *c, const void *data, size_t len) {
  struct evbuffer *b = evbuffer_new();
  if (b == NULL) abort();
  evbuffer_add(b, data, len);
  evhttp_send_reply_chunk_with_cb(c->cw.req, b, on_drained, c);
  evbuffer_free(b);
  c->bytes_out += len;
}

static void upstream_failure(call *c, int *status, const char **msg) {
  *status = 502;
  *msg = tg_strerror(TG_EUPSTREAM);
  c->err_kind = TG_UPERR_CONNECT;
  if (c->too_big) {
    *msg = tg_strerror(TG_EUPSTREAM_TOO_BIG);
    c->err_kind = TG_UPERR_TOO_BIG;
  } else if (c->result == CURLE_OPERATION_TIMEDOUT) {
    *status = 504;
    *msg = tg_strerror(TG_EUPSTREAM_TIMEOUT);
    c->err_kind = TG_UPERR_TIMEOUT;
  } else if (c->status) {
    c->err_kind = TG_UPERR_CUT;
    *msg = "upstream connection broke mid-answer";
  }
}

static void deliver(call *c, const tg_pay_receipt *r) {
  if (r) {
    c->scheme_name = r->scheme_name;
    c->has_payer = r->has_payer;
    if (r->has_payer) c->payer = r->payer;
  }
  if (r && r->charged) {
    c->charged = 1;
    c->amount = r->amount;
    tg_metrics_charge(c->w->metrics, c->w->id, r->scheme, &r->amount);
  }
  if (c->cw.req == NULL) {
    c->replied = 1;
    maybe_finish(c);
    return;
  }
  int upstream_ok = c->result == CURLE_OK && !c->too_big && c->status > 0;
  tg_client_watch_stop(&c->cw);
  if (c->streaming) {
    if (!upstream_ok) {
      /* The status went out already: cut the connection so the client sees a truncated answer. */
      int st;
      const char *msg;
      upstream_failure(c, &st, &msg);
      c->error = msg;
      struct evhttp_connection *evcon = evhttp_request_get_connection(c->cw.req);
      c->cw.req = NULL;
      c->cw.evcon = NULL;
      tg_worker_request_lost(c->w);
      if (evcon) evhttp_connection_free(evcon);
      c->replied = 1;
      maybe_finish(c);
      return;
    }
    if (r && r->stream_trailer && *r->stream_trailer)
      send_chunk(c, r->stream_trailer, strlen(r->stream_trailer));
    evhttp_send_reply_end(c->cw.req);
    c->cw.req = NULL;
    c->replied = 1;
    maybe_finish(c);
    return;
  }
  if (r && r->err) {
    c->error = "charge could not be recorded";
    c->status_sent = 503;
    tg_http_send_error(c->cw.req, 503, "charge could not be recorded, nothing was charged",
                       c->request_id);
  } else if (!upstream_ok) {
    int st;
    const char *msg;
    upstream_failure(c, &st, &msg);
    c->error = msg;
    c->status_sent = st;
    tg_http_send_error(c->cw.req, st, msg, c->request_id);
  } else {
    if (c->buffered == NULL && (c->buffered = evbuffer_new()) == NULL) abort();
    copy_resp_headers(c, r ? r->headers : NULL, r ? r->n_headers : 0);
    c->status_sent = (int)c->status;
    c->bytes_out += evbuffer_get_length(c->buffered);
    evhttp_send_reply(c->cw.req, (int)c->status, NULL, c->buffered);
  }
  c->cw.req = NULL;
  c->replied = 1;
  maybe_finish(c);
}

static void on_complete(void *arg, tg_pay_receipt *r) {
  call *c = arg;
  c->pay_pending = 0;
  deliver(c, r);
}

static void upstream_done(call *c) {
  if (c->status >= 500 && c->err_kind < 0) c->err_kind = TG_UPERR_5XX;
  if (c->client_gone && c->err_kind < 0) c->err_kind = TG_UPERR_CLIENT_GONE;
  if (c->sse && !c->line_overflow && c->line.len)
    sse_line(c, (const char *)c->line.data, c->line.len); /* a last line without newline */
  int upstream_ok = c->result == CURLE_OK && !c->too_big && c->status >= 200 && c->status < 300;
  if (upstream_ok && c->price && !c->streaming && c->buffered && evbuffer_get_length(c->buffered)) {
    const char *ct = evhttp_find_header(&c->resp_headers, "Content-Type");
    if (ct && strstr(ct, "json")) {
      size_t n = evbuffer_get_length(c->buffered);
      const char *body = (const char *)evbuffer_pullup(c->buffered, -1);
      json_t *root = mentions_usage(body, n) ? json_loadb(body, n, 0, NULL) : NULL;
      if (root) usage_from_json(c, root);
      json_decref(root);
    }
  }
  if (!c->admitted) {
    deliver(c, NULL);
    return;
  }
  tg_pay_outcome o = {.ok = upstream_ok && !c->client_gone,
                      .status = (int)c->status,
                      .streamed = c->streaming,
                      .input_tokens = c->in_tokens,
                      .output_tokens = c->out_tokens,
                      .usage_known = c->usage_known};
  c->pay_pending = 1;
  c->w->hooks->complete(c->w->hooks->ctx, c->w->base, c->pay, &o, on_complete, c);
}

/* ---------------------------------------------------------------- curl callbacks */

static size_t on_header(char *buf, size_t size, size_t n, void *arg) {
  call *c = arg;
  size_t len = size * n;
  if (len >= 5 && memcmp(buf, "HTTP/", 5) == 0) {
    /* A status line: "HTTP/1.1 200 OK". 1xx answers are followed by another. */
    const char *sp = memchr(buf, ' ', len);
    long st = 0;
    if (sp)
      for (sp++; sp < buf + len && *sp >= '0' && *sp <= '9' && st < 1000; sp++) st = st * 10 + (*sp - '0');
    c->status = st;
    evhttp_clear_headers(&c->resp_headers);
    return len;
  }
  if (len <= 2 && (buf[0] == '\r' || buf[0] == '\n')) {
    if (c->status >= 100 && c->status < 200) return len;
    c->headers_done = 1;
    if (c->ttfb_ev) event_del(c->ttfb_ev);
    const char *ct = evhttp_find_header(&c->resp_headers, "Content-Type");
    c->sse = ct && strncasecmp(ct, "text/event-stream", 17) == 0;
    if (c->cw.req == NULL) return 0;
    if (c->sse && c->status >= 200 && c->status < 300) {
      tg_buf_init(&c->line, SSE_LINE_MAX);
      start_stream(c);
    } else {
      c->buffered = evbuffer_new();
      if (c->buffered == NULL) abort();
    }
    return len;
  }
  const char *colon = memchr(buf, ':', len);
  if (colon == NULL || colon == buf) return len; /* folded or malformed: dropped */
  char name[256], value[8192];
  size_t nl = (size_t)(colon - buf);
  if (nl >= sizeof name) return len;
  memcpy(name, buf, nl);
  name[nl] = 0;
  const char *v = colon + 1, *e = buf + len;
  while (v < e && (*v == ' ' || *v == '\t')) v++;
  while (e > v && (e[-1] == '\r' || e[-1] == '\n' || e[-1] == ' ' || e[-1] == '\t')) e--;
  if ((size_t)(e - v) >= sizeof value) return len;
  memcpy(value, v, (size_t)(e - v));
  value[e - v] = 0;
  evhttp_add_header(&c->resp_headers, name, value);
  return len;
}

static size_t on_body(char *data, size_t size, size_t n, void *arg) {
  call *c = arg;
  size_t len = size * n;
  if (c->cw.req == NULL || c->client_gone) return 0; /* abort: nobody to answer */
  if (!c->headers_done) return 0;
  if (c->streaming) {
    size_t limit = c->cfg->stream_buffer_bytes;
    if (client_queued(c) > limit) {
      c->paused = 1;
      return CURL_WRITEFUNC_PAUSE; /* redelivered once on_drained unpauses */
    }
    if (c->sse) sse_feed(c, data, len);
    send_chunk(c, data, len);
    return len;
  }
  size_t have = evbuffer_get_length(c->buffered);
  if (!c->price && have + len > STREAM_SWITCH_BYTES && c->status >= 200) {
    /* Unpriced and large: nothing waits on a charge, so stop buffering. */
    start_stream(c);
    if (have) {
      c->bytes_out += have;
      evhttp_send_reply_chunk_with_cb(c->cw.req, c->buffered, on_drained, c);
    }
    send_chunk(c, data, len);
    return len;
  }
  if (have + len > c->cfg->max_response_bytes) {
    c->too_big = 1;
    return 0;
  }
  evbuffer_add(c->buffered, data, len);
  return len;
}

/* ---------------------------------------------------------------- start */

static int add_header(call *c, const char *name, const char *value) {
  char line[1024];
  size_t nn = strlen(name), vn = strlen(value);
  if (nn + vn + 3 < sizeof line) {
    memcpy(line, name, nn);
    if (vn) {
      memcpy(line + nn, ": ", 2);
      memcpy(line + nn + 2, value, vn + 1);
    } else {
      memcpy(line + nn, ";", 2);
    }
    struct curl_slist *n = curl_slist_append(c->hdrs, line);
    if (n == NULL) return TG_ENOMEM;
    c->hdrs = n;
    return 0;
  }
  tg_buf b;
  tg_buf_init(&b, 16384);
  int rc = *value ? tg_buf_printf(&b, "%s: %s", name, value) : tg_buf_printf(&b, "%s;", name);
  if (rc == 0) {
    struct curl_slist *n = curl_slist_append(c->hdrs, (const char *)b.data);
    if (n == NULL)
      rc = TG_ENOMEM;
    else
      c->hdrs = n;
  }
  tg_buf_cleanup(&b);
  return rc;
}

static int build_headers(call *c, struct evhttp_request *req) {
  struct evkeyvalq *in = evhttp_request_get_input_headers(req);
  const char *conn = evhttp_find_header(in, "Connection");
  const char *xff = NULL;
  struct evkeyval *h;
  int rc;
  TAILQ_FOREACH(h, in, next) {
    if (is_hop_by_hop(h->key) || in_connection_list(conn, h->key)) continue;
    if (strcasecmp(h->key, "Host") == 0 || strcasecmp(h->key, "Content-Length") == 0 ||
        strcasecmp(h->key, "Expect") == 0 || strcasecmp(h->key, "X-Request-Id") == 0)
      continue;
    if (strcasecmp(h->key, "X-Forwarded-For") == 0) {
      xff = h->value;
      continue;
    }
    /* The payment is for the gateway; the upstream never sees it. */
    if (c->price && strcasecmp(h->key, "PAYMENT-SIGNATURE") == 0) continue;
    /* Nor a pass session token or signed authentication (they would let it act as the holder). */
    if (c->price && strcasecmp(h->key, "X-Tollgate-Auth") == 0) continue;
    if (c->price && strcasecmp(h->key, "Authorization") == 0 && strncasecmp(h->value, "Bearer tgs_", 11) == 0)
      continue;
    if (c->body && strcasecmp(h->key, "Content-Type") == 0) {
      if ((rc = add_header(c, "Content-Type", "application/json"))) return rc;
      continue;
    }
    if ((rc = add_header(c, h->key, h->value))) return rc;
  }
  char *peer = NULL;
  ev_uint16_t port = 0;
  if (c->cw.evcon) evhttp_connection_get_peer(c->cw.evcon, &peer, &port);
  char fwd[1024];
  if (xff)
    snprintf(fwd, sizeof fwd, "%s, %s", xff, peer ? peer : "unknown");
  else
    snprintf(fwd, sizeof fwd, "%s", peer ? peer : "unknown");
  if ((rc = add_header(c, "X-Forwarded-For", fwd))) return rc;
  if ((rc = add_header(c, "X-Forwarded-Proto", "http"))) return rc;
  if ((rc = add_header(c, "X-Request-Id", c->request_id))) return rc;
  /* No "Expect: 100-continue" round trip: bodies are already complete. */
  struct curl_slist *n = curl_slist_append(c->hdrs, "Expect:");
  if (n == NULL) return TG_ENOMEM;
  c->hdrs = n;
  return 0;
}

static void on_ttfb_timeout(evutil_socket_t fd, short kind, void *arg) {
  (void)fd;
  (void)kind;
  call *c = arg;
  if (!c->curl_active || c->headers_done) return;
  curl_multi_remove_handle(c->w->proxy->multi, c->easy);
  c->curl_active = 0;
  c->result = CURLE_OPERATION_TIMEDOUT;
  upstream_done(c);
}

static void start_upstream(call *c) {
  struct evhttp_request *req = c->cw.req;
  const char *uri = evhttp_request_get_uri(req);
  if (c->route->strip_prefix) {
    /* The pattern starts with the prefix, so the path does too; keep a leading '/'. */
    size_t sn = strlen(c->route->strip_prefix);
    if (strncmp(uri, c->route->strip_prefix, sn) == 0) uri += sn;
  }
  tg_buf url;
  tg_buf_init(&url, 16384);
  int rc = tg_buf_printf(&url, "%s%s%s", c->upstream->url, *uri == '/' ? "" : "/", uri);
  CURL *e = easy_get(c->w->proxy);
  if (rc || e == NULL) {
    tg_buf_cleanup(&url);
    easy_put(c->w->proxy, e);
    c->result = CURLE_FAILED_INIT;
    upstream_done(c);
    return;
  }
  c->easy = e;
  curl_easy_setopt(e, CURLOPT_URL, (const char *)url.data);
  tg_buf_cleanup(&url);
  curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)c);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, c);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)c->upstream->connect_ms);
  curl_easy_setopt(e, CURLOPT_BUFFERSIZE, (long)UPSTREAM_BUFFER);
  curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, curl_close_cb);
  curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, c->w->proxy);
  if (c->upstream->timeout_ms) {
    /* Until the answer begins; after that idle_timeout watches it (streams may last long). */
    c->ttfb_ev = evtimer_new(c->w->base, on_ttfb_timeout, c);
    if (c->ttfb_ev == NULL) abort();
    struct timeval tv = {c->upstream->timeout_ms / 1000, (c->upstream->timeout_ms % 1000) * 1000};
    evtimer_add(c->ttfb_ev, &tv);
  }
  if (c->upstream->idle_ms) {
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, (long)((c->upstream->idle_ms + 999) / 1000));
  }
  struct evbuffer *in = evhttp_request_get_input_buffer(req);
  size_t blen = c->body ? strlen(c->body) : evbuffer_get_length(in);
  const char *bdata = c->body ? c->body : (const char *)evbuffer_pullup(in, -1);
  enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
  if (cmd == EVHTTP_REQ_HEAD) {
    curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
  } else if (cmd != EVHTTP_REQ_GET || blen) {
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, blen ? bdata : "");
    if (cmd != EVHTTP_REQ_POST) curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, c->method);
  }
  if (build_headers(c, req) != 0) {
    c->result = CURLE_OUT_OF_MEMORY;
    upstream_done(c);
    return;
  }
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->hdrs);
  if (curl_multi_add_handle(c->w->proxy->multi, e) != CURLM_OK) {
    c->result = CURLE_FAILED_INIT;
    upstream_done(c);
    return;
  }
  c->curl_active = 1;
}

static void on_admit(void *arg, tg_pay_decision *d) {
  call *c = arg;
  c->pay_pending = 0;
  if (d->admitted) {
    c->admitted = 1;
    c->pay = d->call;
    for (size_t i = 0; i < d->n_headers && i < 2; i++)
      if (d->headers[i].name && d->headers[i].value) {
        c->admit_hdr[i][0] = strdup(d->headers[i].name);
        c->admit_hdr[i][1] = strdup(d->headers[i].value);
        if (!c->admit_hdr[i][0] || !c->admit_hdr[i][1]) abort();
      }
  }
  if (c->cw.req == NULL) {
    /* The client left while admission ran: release the reservation. */
    c->result = CURLE_ABORTED_BY_CALLBACK;
    upstream_done(c);
    return;
  }
  if (!d->admitted) {
    tg_client_watch_stop(&c->cw);
    struct evkeyvalq *h = evhttp_request_get_output_headers(c->cw.req);
    for (size_t i = 0; i < d->n_headers && i < TG_PAY_MAX_HEADERS; i++)
      if (d->headers[i].name && d->headers[i].value)
        evhttp_add_header(h, d->headers[i].name, d->headers[i].value);
    evhttp_add_header(h, "Content-Type", "application/json");
    evhttp_add_header(h, "X-Request-Id", c->request_id);
    struct evbuffer *b = evbuffer_new();
    if (b == NULL) abort();
    if (d->body) evbuffer_add(b, d->body, d->body_len ? d->body_len : strlen(d->body));
    c->status_sent = d->status ? d->status : 402;
    c->bytes_out = evbuffer_get_length(b);
    evhttp_send_reply(c->cw.req, c->status_sent, NULL, b);
    evbuffer_free(b);
    c->cw.req = NULL;
    c->replied = 1;
    maybe_finish(c);
    return;
  }
  start_upstream(c);
}

/*
 * Reads "model" from a JSON body and, for streamed chat completions on
 * token-priced routes, asks for the final usage chunk
 * (stream_options.include_usage) so that the stream can be charged by what
 * it delivered. Non-JSON bodies are left alone.
 */
static void inspect_body(call *c, struct evhttp_request *req, char *model, size_t model_cap) {
  struct evbuffer *in = evhttp_request_get_input_buffer(req);
  size_t n = evbuffer_get_length(in);
  model[0] = 0;
  if (n == 0) return;
  const char *p = (const char *)evbuffer_pullup(in, -1);
  size_t i = 0;
  while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r' || p[i] == '\n')) i++;
  if (i == n || p[i] != '{') return;
  json_t *root = json_loadb(p, n, 0, NULL);
  if (!json_is_object(root)) {
    json_decref(root);
    return;
  }
  const char *m = json_string_value(json_object_get(root, "model"));
  if (m && strlen(m) < model_cap) memcpy(model, m, strlen(m) + 1);
  size_t plen = strlen(c->path);
  static const char suffix[] = "/chat/completions";
  int chat = plen >= sizeof suffix - 1 && strcmp(c->path + plen - (sizeof suffix - 1), suffix) == 0;
  if (c->route->inject_usage && c->price->kind == TG_PRICE_TOKEN && chat &&
      json_is_true(json_object_get(root, "stream"))) {
    json_t *so = json_object_get(root, "stream_options");
    if (so == NULL) {
      so = json_object();
      json_object_set_new(root, "stream_options", so);
    }
    if (json_is_object(so) && !json_is_true(json_object_get(so, "include_usage"))) {
      json_object_set_new(so, "include_usage", json_true());
      c->body = json_dumps(root, JSON_COMPACT);
      c->want_stream_usage = 1;
    }
  }
  json_decref(root);
}

void tg_proxy_handle(tg_worker *w, struct evhttp_request *req, const tg_config_route *route,
                     unsigned metric, const char *request_id) {
  call *c = calloc(1, sizeof *c);
  if (c == NULL) abort();
  clock_gettime(CLOCK_MONOTONIC, &c->t0);
  c->w = w;
  c->cfg = tg_config_ref(w->cfg);
  c->route = route;
  c->upstream = &c->cfg->upstreams[route->upstream];
  c->price = route->price >= 0 ? &c->cfg->prices[route->price] : NULL;
  c->metric = metric;
  c->err_kind = -1;
  memcpy(c->request_id, request_id, sizeof c->request_id);
  TAILQ_INIT(&c->resp_headers);
  const char *uri = evhttp_request_get_uri(req);
  size_t plen = strcspn(uri, "?");
  c->path = malloc(plen + 1);
  if (c->path == NULL) abort();
  memcpy(c->path, uri, plen);
  c->path[plen] = 0;
  static const char *const names[] = {"GET", "POST", "HEAD", "PUT", "DELETE",
                                      "OPTIONS", "TRACE", "CONNECT", "PATCH"};
  enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
  snprintf(c->method, sizeof c->method, "OTHER");
  for (unsigned i = 0; i < 9; i++)
    if (cmd == (enum evhttp_cmd_type)(1u << i)) snprintf(c->method, sizeof c->method, "%s", names[i]);
  tg_client_watch_start(&c->cw, w, req, c->price == NULL ? LAZY_CLOSE_WATCH_MS : 0, on_client_gone, c);

  if (c->price == NULL) {
    start_upstream(c);
    return;
  }
  if (w->hooks == NULL) {
    tg_client_watch_stop(&c->cw);
    c->status_sent = 503;
    c->error = "payments not configured";
    tg_http_send_error(req, 503, "payments not configured", c->request_id);
    c->cw.req = NULL;
    c->replied = 1;
    maybe_finish(c);
    return;
  }
  char model[MODEL_MAX];
  inspect_body(c, req, model, sizeof model);
  struct evkeyvalq *in = evhttp_request_get_input_headers(req);
  char resource[2048];
  const char *host = evhttp_find_header(in, "Host");
  if (w->cfg->public_url)
    snprintf(resource, sizeof resource, "%s%s", w->cfg->public_url, c->path);
  else
    snprintf(resource, sizeof resource, "http://%s%s", host ? host : "localhost", c->path);
  tg_pay_request pr = {.request_id = c->request_id,
                       .method = c->method,
                       .path = c->path,
                       .route = route->name,
                       .resource_url = resource,
                       .model = model[0] ? model : NULL,
                       .payment_signature = evhttp_find_header(in, "PAYMENT-SIGNATURE"),
                       .authorization = evhttp_find_header(in, "Authorization"),
                       .host = host,
                       .agent_auth = evhttp_find_header(in, "X-Tollgate-Auth"),
                       .payment_identifier = NULL};
  c->pay_pending = 1;
  w->hooks->admit(w->hooks->ctx, w->base, &pr, c->price, on_admit, c);
}
