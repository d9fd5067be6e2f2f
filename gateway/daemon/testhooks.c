/* A payment-layer double for tests: admits on a fixed PAYMENT-SIGNATURE and logs every outcome. */
#include "daemon/testhooks.h"

#include <event2/event.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tollgate/u256.h"

typedef struct {
  int fd;
} ctx_t;

struct tg_pay_call {
  char request_id[64];
  char route[128];
};

typedef struct {
  tg_pay_admit_cb admit_cb;
  tg_pay_complete_cb complete_cb;
  void *arg;
  int admitted;
  tg_pay_call *call;
  tg_pay_outcome o;
} pending;

static void fire_admit(evutil_socket_t fd, short kind, void *arg) {
  (void)fd;
  (void)kind;
  pending *p = arg;
  tg_pay_decision d = {0};
  static const char body[] = "{\"x402Version\":2,\"error\":\"payment required (test double)\"}";
  if (p->admitted) {
    d.admitted = 1;
    d.call = p->call;
  } else {
    d.status = 402;
    d.headers[0].name = "PAYMENT-REQUIRED";
    d.headers[0].value = "test";
    d.n_headers = 1;
    d.body = body;
    d.body_len = sizeof body - 1;
  }
  p->admit_cb(p->arg, &d);
  free(p);
}

static void admit(void *vctx, struct event_base *base, const tg_pay_request *req,
                  const tg_config_price *price, tg_pay_admit_cb cb, void *arg) {
  (void)vctx;
  (void)price;
  pending *p = calloc(1, sizeof *p);
  if (p == NULL) abort();
  p->admit_cb = cb;
  p->arg = arg;
  p->admitted = req->payment_signature && strcmp(req->payment_signature, "ok") == 0;
  if (p->admitted) {
    p->call = calloc(1, sizeof *p->call);
    if (p->call == NULL) abort();
    snprintf(p->call->request_id, sizeof p->call->request_id, "%s", req->request_id);
    snprintf(p->call->route, sizeof p->call->route, "%s", req->route);
  }
  struct timeval zero = {0, 0};
  if (event_base_once(base, -1, EV_TIMEOUT, fire_admit, p, &zero) != 0) abort();
}

static ctx_t *g_ctx;

static void fire_complete(evutil_socket_t fd, short kind, void *arg) {
  (void)fd;
  (void)kind;
  pending *p = arg;
  json_t *line = json_pack("{s:s, s:s, s:b, s:i, s:b, s:b, s:I, s:I}", "request_id",
                           p->call->request_id, "route", p->call->route, "ok", p->o.ok, "status",
                           p->o.status, "streamed", p->o.streamed, "usage_known", p->o.usage_known,
                           "input_tokens", (json_int_t)p->o.input_tokens, "output_tokens",
                           (json_int_t)p->o.output_tokens);
  char *text = json_dumps(line, JSON_COMPACT);
  if (text && g_ctx && g_ctx->fd >= 0) {
    size_t n = strlen(text);
    text[n] = '\n';
    ssize_t w = write(g_ctx->fd, text, n + 1); /* O_APPEND: one line per write */
    (void)w;
  }
  free(text);
  json_decref(line);
  tg_pay_receipt r = {0};
  char trailer[128], amount_s[TG_U256_DEC_MAX];
  if (p->o.ok) {
    r.charged = 1;
    tg_u256_from_u64(&r.amount, p->o.usage_known ? p->o.input_tokens + p->o.output_tokens : 1);
    tg_u256_to_dec(&r.amount, amount_s);
    r.headers[0].name = "PAYMENT-RESPONSE";
    r.headers[0].value = "test-receipt";
    r.n_headers = 1;
    snprintf(trailer, sizeof trailer, ": tollgate charged=%s\n\n", amount_s);
    r.stream_trailer = trailer;
  }
  p->complete_cb(p->arg, &r);
  free(p->call);
  free(p);
}

static void complete(void *vctx, struct event_base *base, tg_pay_call *call,
                     const tg_pay_outcome *o, tg_pay_complete_cb cb, void *arg) {
  (void)vctx;
  pending *p = calloc(1, sizeof *p);
  if (p == NULL) abort();
  p->complete_cb = cb;
  p->arg = arg;
  p->call = call;
  p->o = *o;
  struct timeval zero = {0, 0};
  if (event_base_once(base, -1, EV_TIMEOUT, fire_complete, p, &zero) != 0) abort();
}

int tg_testhooks_init(tg_http_payhooks *hooks, const char *log_path) {
  memset(hooks, 0, sizeof *hooks);
  ctx_t *c = calloc(1, sizeof *c);
  if (c == NULL) abort();
  c->fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (c->fd < 0) {
    free(c);
    return TG_EIO;
  }
  g_ctx = c;
  hooks->ctx = c;
  hooks->admit = admit;
  hooks->complete = complete;
  return 0;
}

void tg_testhooks_cleanup(tg_http_payhooks *hooks) {
  ctx_t *c = hooks->ctx;
  if (c == NULL) return;
  close(c->fd);
  free(c);
  g_ctx = NULL;
  hooks->ctx = NULL;
}
