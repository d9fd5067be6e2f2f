/* The payer's local proxy: an evhttp server on a loopback address that forwards every request to one target through the paying client, streaming answers back. */
#include <sys/queue.h>
#include <arpa/inet.h>
#include <stdarg.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/thread.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tollgate/client.h"
#include "tollgate/hex.h"
#include "tollgate/u256.h"

#define PENDING_MAX ((size_t)64 << 20) /* bytes queued for a slow client before the call is cut */

typedef struct proxy proxy;

/*
 * One forwarded call. The event loop thread owns it; the worker thread that
 * runs tg_client_fetch touches only the fields marked (mu), under mu, and
 * never touches the job after it set `done`.
 */
typedef struct job {
  proxy *px;
  struct evhttp_request *req;      /* NULL once the client is gone */
  struct evhttp_request *detached; /* a request evhttp left to us to free */
  struct evhttp_connection *evcon;
  struct event *ev;                /* activated by the worker */
  struct event *close_ev;          /* EV_CLOSED on the client socket */
  char method[16];
  char *url;
  char **hdrs;
  size_t n_hdrs;
  char *body;
  size_t body_len;
  char payid[TG_CLIENT_PAYID_MAX + 1];
  pthread_mutex_t mu;
  /* (mu) worker → loop */
  int head_ready;
  long status;
  char *head;
  size_t head_len;
  struct evbuffer *pending;
  int done;
  int rc;
  /* (mu) loop → worker */
  int gone;
  /* loop only */
  int started;
  size_t bytes_out;
  tg_client_response resp;         /* the worker's until done */
} job;

struct proxy {
  tg_client *c;
  tg_client_proxy_opts o;
  char *target;                    /* without a trailing '/' */
  struct event_base *base;
  struct evhttp *http;
  unsigned inflight;
  int stopping;
  pthread_mutex_t log_mu;
};

static void plog(proxy *px, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static void plog(proxy *px, const char *fmt, ...) {
  if (!px->o.log) return;
  va_list ap;
  va_start(ap, fmt);
  pthread_mutex_lock(&px->log_mu);
  vfprintf(px->o.log, fmt, ap);
  fputc('\n', px->o.log);
  fflush(px->o.log);
  pthread_mutex_unlock(&px->log_mu);
  va_end(ap);
}

/* Headers that describe one connection, not the message (RFC 9110 7.6.1), and ours to set. */
static int skip_header(const char *k) {
  static const char *const names[] = {"Connection", "Keep-Alive", "Proxy-Connection",
                                      "Proxy-Authenticate", "Proxy-Authorization", "TE",
                                      "Trailer", "Transfer-Encoding", "Upgrade", "Host",
                                      "Content-Length", "Expect", "Accept-Encoding",
                                      "PAYMENT-SIGNATURE"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (strcasecmp(k, names[i]) == 0) return 1;
  return 0;
}

/* ---- the worker thread ---------------------------------------------------------- */

static int sink_head(void *arg, long status, const char *head, size_t len) {
  job *j = arg;
  char *copy = malloc(len + 1);
  if (!copy) return 1;
  memcpy(copy, head, len);
  copy[len] = 0;
  pthread_mutex_lock(&j->mu);
  int gone = j->gone;
  if (!gone) {
    j->head_ready = 1;
    j->status = status;
    j->head = copy;
    j->head_len = len;
    event_active(j->ev, EV_READ, 0);
  }
  pthread_mutex_unlock(&j->mu);
  if (gone) free(copy);
  return gone;
}

static int sink_body(void *arg, const void *data, size_t len) {
  job *j = arg;
  pthread_mutex_lock(&j->mu);
  int stop = j->gone || evbuffer_get_length(j->pending) + len > PENDING_MAX ||
             evbuffer_add(j->pending, data, len) != 0;
  if (!stop) event_active(j->ev, EV_READ, 0);
  pthread_mutex_unlock(&j->mu);
  return stop;
}

static int sink_cancelled(void *arg) {
  job *j = arg;
  pthread_mutex_lock(&j->mu);
  int gone = j->gone;
  pthread_mutex_unlock(&j->mu);
  return gone;
}

static void *worker(void *arg) {
  job *j = arg;
  tg_client_sink sink = {sink_head, sink_body, sink_cancelled, j};
  tg_client_request rq;
  memset(&rq, 0, sizeof rq);
  rq.method = j->method;
  rq.url = j->url;
  rq.headers = (const char *const *)j->hdrs;
  rq.n_headers = j->n_hdrs;
  rq.body = j->body_len ? j->body : NULL;
  rq.body_len = j->body_len;
  rq.payment_id = j->payid[0] ? j->payid : NULL;
  rq.sink = &sink;
  int rc = tg_client_fetch(j->px->c, &j->resp, &rq);
  pthread_mutex_lock(&j->mu);
  j->rc = rc;
  j->done = 1;
  event_active(j->ev, EV_READ, 0);
  pthread_mutex_unlock(&j->mu);
  return NULL;
}

/* ---- the loop thread ---------------------------------------------------------------- */

static void job_free(job *j) {
  proxy *px = j->px;
  if (j->evcon) evhttp_connection_set_closecb(j->evcon, NULL, NULL);
  if (j->close_ev) event_free(j->close_ev);
  if (j->detached) evhttp_request_free(j->detached);
  event_free(j->ev);
  evbuffer_free(j->pending);
  pthread_mutex_destroy(&j->mu);
  for (size_t i = 0; i < j->n_hdrs; i++) free(j->hdrs[i]);
  free(j->hdrs);
  free(j->url);
  free(j->body);
  free(j->head);
  tg_client_response_cleanup(&j->resp);
  free(j);
  px->inflight--;
  if (px->stopping && px->inflight == 0) event_base_loopbreak(px->base);
}

/* Copies the answer's header lines onto the reply, minus the per-connection ones. */
static void copy_head(struct evhttp_request *req, const char *head, size_t len) {
  struct evkeyvalq *out = evhttp_request_get_output_headers(req);
  const char *p = head, *e = head + len;
  while (p < e) {
    const char *nl = memchr(p, '\n', (size_t)(e - p));
    const char *le = nl ? nl : e;
    const char *colon = memchr(p, ':', (size_t)(le - p));
    if (colon && colon > p) {
      char name[128];
      size_t nn = (size_t)(colon - p);
      const char *v = colon + 1, *ve = le;
      while (v < ve && (*v == ' ' || *v == '\t')) v++;
      while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t')) ve--;
      if (nn < sizeof name && p[0] != ' ' && p[0] != '\t') {
        memcpy(name, p, nn);
        name[nn] = 0;
        char *val = strndup(v, (size_t)(ve - v));
        if (val && !skip_header(name)) evhttp_add_header(out, name, val);
        free(val);
      }
    }
    p = nl ? nl + 1 : e;
  }
}

static void send_error(struct evhttp_request *req, int status, const char *type, const char *msg) {
  /* The shape OpenAI-compatible SDKs read: {"error":{"message","type","code"}}. */
  json_t *j = json_pack("{s:{s:s,s:s,s:s}}", "error", "message", msg, "type", "tollgate_proxy",
                        "code", type);
  char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
  json_decref(j);
  struct evbuffer *b = evbuffer_new();
  if (b && text) evbuffer_add(b, text, strlen(text));
  free(text);
  struct evkeyvalq *out = evhttp_request_get_output_headers(req);
  evhttp_add_header(out, "Content-Type", "application/json");
  evhttp_send_reply(req, status, NULL, b);
  if (b) evbuffer_free(b);
}

static void log_call(job *j) {
  const tg_client_response *r = &j->resp;
  char d[TG_U256_DEC_MAX] = "0", cum[TG_U256_DEC_MAX] = "";
  if (r->paid) tg_u256_to_dec(&r->charged, d);
  if (r->has_channel) tg_u256_to_dec(&r->charged_cumulative, cum);
  const char *path = j->url + strlen(j->px->target);
  if (j->rc)
    plog(j->px, "%s %s -> %ld %s%s%s", j->method, path, r->status, tg_strerror(j->rc),
         r->error[0] ? ": " : "", r->error);
  else if (r->paid)
    plog(j->px, "%s %s -> %ld charged %s (%s%s%s%s)", j->method, path, r->status, d,
         r->has_channel ? "channel" : "exact", r->has_channel ? ", cumulative " : "", cum,
         r->trailer ? ", stream" : "");
  else
    plog(j->px, "%s %s -> %ld", j->method, path, r->status);
}

/* The call is over: finish the reply (or cut a broken stream) and free the job. */
static void finish(job *j) {
  log_call(j);
  struct evhttp_request *req = j->req;
  if (req && j->close_ev) {
    event_free(j->close_ev);
    j->close_ev = NULL;
  }
  if (req && j->started) {
    if (j->rc == TG_ECLIENT_HTTP) {
      /* The answer broke mid-stream: cut, so that the client sees a truncated body. */
      struct evhttp_connection *evcon = evhttp_request_get_connection(req);
      evhttp_connection_set_closecb(evcon, NULL, NULL);
      j->evcon = NULL;
      j->req = NULL;
      evhttp_connection_free(evcon);
    } else {
      evhttp_send_reply_end(req);
    }
  } else if (req) {
    const tg_client_response *r = &j->resp;
    int local = j->rc && j->rc != TG_ECLIENT_REFUSED && j->rc != TG_ECLIENT_OVERCHARGE;
    if (local || r->status <= 0) {
      char msg[400];
      snprintf(msg, sizeof msg, "tollgate proxy: %s%s%s", tg_strerror(j->rc ? j->rc : TG_EINTERNAL),
               r->error[0] ? ": " : "", r->error);
      int st = j->rc == TG_ECLIENT_HTTP ? 502 : tg_err_http_status(j->rc ? j->rc : TG_EINTERNAL);
      send_error(req, st, tg_err_name(j->rc), msg);
    } else {
      copy_head(req, (const char *)r->head.data, r->head.len);
      struct evkeyvalq *out = evhttp_request_get_output_headers(req);
      if (r->paid && !j->rc) {
        char d[TG_U256_DEC_MAX];
        tg_u256_to_dec(&r->charged, d);
        evhttp_add_header(out, "X-Tollgate-Charged", d);
      }
      if (j->rc) evhttp_add_header(out, "X-Tollgate-Error", tg_err_name(j->rc));
      struct evbuffer *b = evbuffer_new();
      if (b && r->body.len) evbuffer_add(b, r->body.data, r->body.len);
      evhttp_send_reply(req, (int)r->status, NULL, b);
      if (b) evbuffer_free(b);
    }
  }
  job_free(j);
}

static void on_job(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  job *j = arg;
  struct evbuffer *chunk = evbuffer_new();
  if (!chunk) abort();
  pthread_mutex_lock(&j->mu);
  int head_now = j->head_ready && !j->started;
  evbuffer_add_buffer(chunk, j->pending);
  int done = j->done;
  pthread_mutex_unlock(&j->mu);
  if (j->req) {
    if (head_now) {
      copy_head(j->req, j->head, j->head_len);
      evhttp_send_reply_start(j->req, (int)j->status, NULL);
      j->started = 1;
    }
    size_t n = evbuffer_get_length(chunk);
    if (n && j->started) {
      evhttp_send_reply_chunk(j->req, chunk);
      j->bytes_out += n;
    }
  }
  evbuffer_free(chunk);
  if (done) finish(j);
}

static void mark_gone(job *j) {
  j->req = NULL;
  j->evcon = NULL;
  pthread_mutex_lock(&j->mu);
  j->gone = 1;
  pthread_mutex_unlock(&j->mu);
  if (j->close_ev) {
    event_free(j->close_ev);
    j->close_ev = NULL;
  }
}

static void on_client_close(struct evhttp_connection *evcon, void *arg) {
  (void)evcon;
  job *j = arg;
  if (j->req && evhttp_request_get_connection(j->req) == NULL) j->detached = j->req;
  mark_gone(j);
}

static void on_client_rdhup(evutil_socket_t fd, short kind, void *arg) {
  (void)fd;
  (void)kind;
  job *j = arg;
  if (j->evcon) evhttp_connection_free(j->evcon); /* runs on_client_close */
}

static int valid_payid(const char *s) {
  size_t n = strlen(s);
  if (n < 16 || n > TG_CLIENT_PAYID_MAX) return 0;
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
          (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '-'))
      return 0;
  return 1;
}

static const char *method_name(enum evhttp_cmd_type cmd) {
  switch (cmd) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_HEAD: return "HEAD";
    case EVHTTP_REQ_PUT: return "PUT";
    case EVHTTP_REQ_DELETE: return "DELETE";
    case EVHTTP_REQ_OPTIONS: return "OPTIONS";
    case EVHTTP_REQ_PATCH: return "PATCH";
    default: return NULL;
  }
}

static void on_request(struct evhttp_request *req, void *arg) {
  proxy *px = arg;
  const char *uri = evhttp_request_get_uri(req);
  const char *method = method_name(evhttp_request_get_command(req));
  if (px->stopping) {
    send_error(req, 503, "shutting_down", "tollgate proxy: shutting down");
    return;
  }
  if (!method) {
    send_error(req, 405, "method", "tollgate proxy: method not supported");
    return;
  }
  if (!uri || uri[0] != '/') {
    send_error(req, 400, "uri", "tollgate proxy: only origin-form request targets (/path) are forwarded");
    return;
  }
  if (px->inflight >= px->o.max_calls) {
    send_error(req, 503, "busy", "tollgate proxy: too many calls in flight, retry");
    return;
  }
  struct evbuffer *in = evhttp_request_get_input_buffer(req);
  size_t blen = evbuffer_get_length(in);
  if (blen > px->o.max_body) {
    send_error(req, 413, "body_too_big", "tollgate proxy: request body exceeds its size limit");
    return;
  }
  job *j = calloc(1, sizeof *j);
  if (!j) abort();
  j->px = px;
  j->req = req;
  snprintf(j->method, sizeof j->method, "%s", method);
  size_t ul = strlen(px->target) + strlen(uri) + 1;
  j->url = malloc(ul);
  j->pending = evbuffer_new();
  j->ev = event_new(px->base, -1, 0, on_job, j);
  struct evkeyvalq *ih = evhttp_request_get_input_headers(req);
  size_t nh = 0;
  struct evkeyval *h;
  TAILQ_FOREACH(h, ih, next) nh++;
  j->hdrs = calloc(nh + 2, sizeof *j->hdrs);
  j->body = malloc(blen ? blen : 1);
  if (!j->url || !j->pending || !j->ev || !j->hdrs || !j->body) abort();
  snprintf(j->url, ul, "%s%s", px->target, uri);
  if (blen) evbuffer_copyout(in, j->body, blen);
  j->body_len = blen;
  TAILQ_FOREACH(h, ih, next) {
    if (skip_header(h->key)) continue;
    if (j->n_hdrs == TG_CLIENT_MAX_HEADERS - 1) break;
    if ((strcasecmp(h->key, "Idempotency-Key") == 0 || strcasecmp(h->key, "X-Payment-Id") == 0) &&
        valid_payid(h->value))
      snprintf(j->payid, sizeof j->payid, "%s", h->value);
    size_t n = strlen(h->key) + strlen(h->value) + 3;
    char *line = malloc(n);
    if (!line) abort();
    snprintf(line, n, "%s: %s", h->key, h->value);
    j->hdrs[j->n_hdrs++] = line;
  }
  /* curl would add its own; the whole body is already here. */
  j->hdrs[j->n_hdrs++] = strdup("Expect:");
  if (!j->hdrs[j->n_hdrs - 1]) abort();
  pthread_mutex_init(&j->mu, NULL);
  j->evcon = evhttp_request_get_connection(req);
  if (j->evcon) {
    evhttp_connection_set_closecb(j->evcon, on_client_close, j);
    struct bufferevent *bev = evhttp_connection_get_bufferevent(j->evcon);
    evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
    if (fd >= 0 && (event_base_get_features(px->base) & EV_FEATURE_EARLY_CLOSE)) {
      j->close_ev = event_new(px->base, fd, EV_CLOSED, on_client_rdhup, j);
      if (j->close_ev) event_add(j->close_ev, NULL);
    }
  }
  px->inflight++;
  pthread_attr_t at;
  pthread_attr_init(&at);
  pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&at, (size_t)1 << 20);
  pthread_t th;
  int e = pthread_create(&th, &at, worker, j);
  pthread_attr_destroy(&at);
  if (e != 0) {
    j->done = 1;
    j->rc = TG_EBUSY;
    finish(j);
  }
}

static void on_signal(evutil_socket_t sig, short what, void *arg) {
  (void)what;
  proxy *px = arg;
  if (px->stopping) {
    plog(px, "tollgate proxy: second signal, leaving %u calls", px->inflight);
    event_base_loopbreak(px->base);
    return;
  }
  px->stopping = 1;
  plog(px, "tollgate proxy: signal %d, stopping after %u calls in flight", (int)sig, px->inflight);
  if (px->inflight == 0) event_base_loopbreak(px->base);
}

/* host:port with a loopback host (127.0.0.0/8, ::1, localhost). */
static int parse_listen(const char *s, char *host, size_t hcap, unsigned *port) {
  const char *colon = strrchr(s, ':');
  if (!colon || colon == s) return TG_EINVAL;
  size_t hl = (size_t)(colon - s);
  if (s[0] == '[' && hl >= 2 && s[hl - 1] == ']') {
    s++;
    hl -= 2;
  }
  if (hl >= hcap) return TG_EINVAL;
  memcpy(host, s, hl);
  host[hl] = 0;
  char *end = NULL;
  unsigned long p = strtoul(colon + 1, &end, 10);
  if (!colon[1] || *end || p > 65535) return TG_EINVAL;
  *port = (unsigned)p;
  if (strcmp(host, "localhost") == 0) snprintf(host, hcap, "127.0.0.1");
  struct in_addr a4;
  struct in6_addr a6;
  if (inet_pton(AF_INET, host, &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127 ? 0 : TG_EPERM;
  if (inet_pton(AF_INET6, host, &a6) == 1) return IN6_IS_ADDR_LOOPBACK(&a6) ? 0 : TG_EPERM;
  return TG_EINVAL;
}

int tg_client_proxy_run(tg_client *c, const tg_client_proxy_opts *o) {
  if (!c || !o || !o->listen || !o->target) return TG_EINVAL;
  if (strncmp(o->target, "http://", 7) != 0 && strncmp(o->target, "https://", 8) != 0)
    return TG_EINVAL;
  char host[64];
  unsigned port;
  int rc = parse_listen(o->listen, host, sizeof host, &port);
  if (rc) return rc;
  if (evthread_use_pthreads() != 0) return TG_EINTERNAL;
  proxy px;
  memset(&px, 0, sizeof px);
  px.c = c;
  px.o = *o;
  if (!px.o.max_body) px.o.max_body = (size_t)16 << 20;
  if (!px.o.max_calls) px.o.max_calls = 256;
  px.target = strdup(o->target);
  if (!px.target) return TG_ENOMEM;
  size_t tl = strlen(px.target);
  while (tl > 8 && px.target[tl - 1] == '/') px.target[--tl] = 0;
  pthread_mutex_init(&px.log_mu, NULL);
  struct event *sigs[2] = {NULL, NULL};
  px.base = event_base_new();
  px.http = px.base ? evhttp_new(px.base) : NULL;
  if (!px.http) {
    rc = TG_ENOMEM;
    goto out;
  }
  evhttp_set_max_body_size(px.http, (ev_ssize_t)px.o.max_body);
  evhttp_set_allowed_methods(px.http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                          EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                          EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
  evhttp_set_gencb(px.http, on_request, &px);
  struct evhttp_bound_socket *bs = evhttp_bind_socket_with_handle(px.http, host, (ev_uint16_t)port);
  if (!bs) {
    rc = TG_ELISTEN;
    goto out;
  }
  if (port == 0) {
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&ss, &sl) == 0)
      port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                            : ((struct sockaddr_in *)&ss)->sin_port);
  }
  sigs[0] = evsignal_new(px.base, SIGINT, on_signal, &px);
  sigs[1] = evsignal_new(px.base, SIGTERM, on_signal, &px);
  if (!sigs[0] || !sigs[1] || event_add(sigs[0], NULL) || event_add(sigs[1], NULL)) {
    rc = TG_ENOMEM;
    goto out;
  }
  plog(&px, "tollgate proxy: listening on http://%s%s%s:%u, paying for %s", strchr(host, ':') ? "[" : "",
       host, strchr(host, ':') ? "]" : "", port, px.target);
  if (o->on_ready) o->on_ready(o->arg, port);
  event_base_dispatch(px.base);
  rc = px.inflight ? TG_ECANCELED : 0;
out:
  for (int i = 0; i < 2; i++)
    if (sigs[i]) event_free(sigs[i]);
  if (px.http && !px.inflight) evhttp_free(px.http);
  if (px.base && !px.inflight) event_base_free(px.base);
  pthread_mutex_destroy(&px.log_mu);
  free(px.target);
  return rc;
}
