/* Sign-in endpoints for access passes: a nonce, a signed EIP-4361 message for a session token, the session. */
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http/ops.h"
#include "http/proxy.h"
#include "http/watch.h"
#include "pay/passes.h"
#include "tollgate/address.h"
#include "tollgate/hex.h"
#include "tollgate/siwe.h"
#include "tollgate/x402.h"

/*
 *   POST /auth/nonce    -> {nonce, expiresAt, domain, uri, chainId, version}
 *   POST /auth/siwe     {message, signature} -> {token, tokenType, expiresAt, address}
 *   GET  /auth/session  (Authorization: Bearer tgs_...) -> {address}
 *   POST /auth/logout   (Authorization: Bearer tgs_...) -> {revoked: true}
 * Refusals are {"error": "<TG_E... name>", "message": "<why>", "request_id"} with the
 * code's status (400 malformed, 401 domain/URI/chain/nonce/time/signature). See
 * docs/PROTOCOL.md "Access passes".
 */

#define SIGNIN_BODY_MAX (TG_SIWE_MESSAGE_MAX * 2 + 4096)

int tg_signin_is_path(const char *path) {
  return strcmp(path, "/auth/nonce") == 0 || strcmp(path, "/auth/siwe") == 0 ||
         strcmp(path, "/auth/session") == 0 || strcmp(path, "/auth/logout") == 0;
}

/* req NULL: the client is gone, the answer is dropped. */
static void reply(struct evhttp_request *req, int status, json_t *j) {
  if (req == NULL) return;
  char *t = j ? json_dumps(j, JSON_COMPACT) : NULL;
  struct evbuffer *b = evbuffer_new();
  if (b == NULL) abort();
  if (t) {
    evbuffer_add(b, t, strlen(t));
    evbuffer_add(b, "\n", 1);
  } else {
    evbuffer_add(b, "{\"error\":\"out of memory\"}\n", 26);
    status = 500;
  }
  struct evkeyvalq *h = evhttp_request_get_output_headers(req);
  evhttp_add_header(h, "Content-Type", "application/json");
  evhttp_add_header(h, "Cache-Control", "no-store");
  evhttp_send_reply(req, status, NULL, b);
  evbuffer_free(b);
  free(t);
}

static int refuse(struct evhttp_request *req, int err, const char *msg, const char *id) {
  int status = tg_err_http_status(err);
  json_t *j = json_pack("{s:s, s:s, s:s}", "error", tg_err_name(err), "message",
                        msg ? msg : tg_strerror(err), "request_id", id);
  if (status == 401 && req)
    evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate", "Bearer");
  reply(req, status, j);
  json_decref(j);
  return status;
}

typedef struct {
  tg_client_watch *cw; /* the request: tg_client_watch_take() when the answer is ready */
  void (*done)(void *arg, int status);
  void *arg;
  char id[TG_REQUEST_ID_LEN + 1];
} waiter;

static waiter *waiter_new(tg_client_watch *cw, const char *id,
                          void (*done)(void *, int), void *arg) {
  waiter *w = calloc(1, sizeof *w);
  if (!w) abort();
  w->cw = cw;
  w->done = done;
  w->arg = arg;
  snprintf(w->id, sizeof w->id, "%s", id);
  return w;
}

static void on_nonce(void *arg, const tg_passes_nonce_result *r) {
  waiter *w = arg;
  struct evhttp_request *req = tg_client_watch_take(w->cw); /* NULL: the client is gone */
  int st;
  if (r->err) {
    st = refuse(req, TG_ESTORE, "the nonce could not be recorded; try again", w->id);
  } else {
    char exp[32];
    tg_rfc3339_format(exp, r->expires_at);
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:I, s:s}", "nonce", r->nonce, "expiresAt", exp,
                          "domain", r->domain, "uri", r->uri, "chainId", (json_int_t)r->chain_id,
                          "version", "1");
    reply(req, st = 200, j);
    json_decref(j);
  }
  w->done(w->arg, st);
  free(w);
}

static void on_signin(void *arg, const tg_passes_signin_result *r) {
  waiter *w = arg;
  struct evhttp_request *req = tg_client_watch_take(w->cw); /* NULL: the client is gone */
  int st;
  if (r->err) {
    st = refuse(req, r->err, NULL, w->id);
  } else {
    char exp[32], addr[TG_ADDRESS_HEX_LEN];
    tg_rfc3339_format(exp, r->expires_at);
    tg_address_to_checksum(&r->address, addr);
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s}", "token", r->token, "tokenType", "Bearer",
                          "expiresAt", exp, "address", addr, "signer",
                          r->contract_wallet ? "erc1271" : "eoa");
    reply(req, st = 200, j);
    json_decref(j);
  }
  w->done(w->arg, st);
  free(w);
}

static void on_logout(void *arg, int err) {
  waiter *w = arg;
  struct evhttp_request *req = tg_client_watch_take(w->cw); /* NULL: the client is gone */
  int st;
  if (err) {
    st = refuse(req, err == TG_ESESSION_INVALID ? err : TG_ESTORE,
                err == TG_ESESSION_INVALID ? "want Authorization: Bearer tgs_..." : "the session could not be removed; try again",
                w->id);
  } else {
    json_t *j = json_pack("{s:b}", "revoked", 1);
    reply(req, st = 200, j);
    json_decref(j);
  }
  w->done(w->arg, st);
  free(w);
}

/* Returns the status sent, or 0 when the answer (and done) come later. */
static int handle(const tg_http_ops *ops, const tg_config *cfg, struct event_base *base,
                  tg_client_watch *cw, const char *method, const char *path,
                  const char *id, void (*done)(void *, int), void *arg) {
  struct evhttp_request *req = cw->req; /* being served: valid until this returns */
  if (ops == NULL || ops->passes == NULL || cfg->n_plans == 0)
    return refuse(req, TG_EPAY_UNAVAILABLE, "access passes are not configured (no `plan`)", id);
  struct evkeyvalq *in = evhttp_request_get_input_headers(req);
  const char *host = evhttp_find_header(in, "Host");
  if (strcmp(path, "/auth/session") == 0) {
    if (strcmp(method, "GET") != 0) {
      evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET");
      return refuse(req, TG_EINVAL, "GET only", id);
    }
    tg_address who;
    char why[512];
    int rc = tg_passes_identify(ops->passes, cfg, host, evhttp_find_header(in, "Authorization"),
                                evhttp_find_header(in, "X-Tollgate-Auth"), &who, why, sizeof why);
    if (rc == TG_ENOTFOUND) rc = TG_ESESSION_INVALID, why[0] = 0;
    if (rc) return refuse(req, rc, why[0] ? why : NULL, id);
    char addr[TG_ADDRESS_HEX_LEN];
    tg_address_to_checksum(&who, addr);
    json_t *j = json_pack("{s:s}", "address", addr);
    reply(req, 200, j);
    json_decref(j);
    return 200;
  }
  if (strcmp(method, "POST") != 0 && !(strcmp(method, "GET") == 0 && strcmp(path, "/auth/nonce") == 0)) {
    evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "POST");
    return refuse(req, TG_EINVAL, "POST only", id);
  }
  if (strcmp(path, "/auth/logout") == 0) {
    tg_passes_logout(ops->passes, base, evhttp_find_header(in, "Authorization"), on_logout,
                     waiter_new(cw, id, done, arg));
    return 0;
  }
  if (strcmp(path, "/auth/nonce") == 0) {
    tg_passes_nonce(ops->passes, cfg, base, host, on_nonce, waiter_new(cw, id, done, arg));
    return 0;
  }
  /* /auth/siwe: {"message": "...", "signature": "0x..."} */
  struct evbuffer *b = evhttp_request_get_input_buffer(req);
  size_t n = evbuffer_get_length(b);
  if (n == 0 || n > SIGNIN_BODY_MAX)
    return refuse(req, TG_ESIWE_MALFORMED, "want a JSON body {\"message\": ..., \"signature\": ...}", id);
  json_error_t je;
  json_t *root = json_loadb((const char *)evbuffer_pullup(b, -1), n, 0, &je);
  const char *msg = NULL, *sig = NULL;
  size_t msg_len = 0;
  if (json_is_object(root)) {
    json_t *m = json_object_get(root, "message"), *s = json_object_get(root, "signature");
    if (json_is_string(m)) {
      msg = json_string_value(m);
      msg_len = json_string_length(m);
    }
    if (json_is_string(s)) sig = json_string_value(s);
  }
  if (!msg || !sig) {
    json_decref(root);
    return refuse(req, TG_ESIWE_MALFORMED, "want a JSON body {\"message\": ..., \"signature\": ...}", id);
  }
  tg_buf sb;
  tg_buf_init(&sb, TG_X402_SIG_MAX);
  if (tg_hex_decode_buf(&sb, sig, strlen(sig), TG_HEX_PREFIX_REQUIRED) != 0 || sb.len == 0) {
    tg_buf_cleanup(&sb);
    json_decref(root);
    return refuse(req, TG_ESIWE_SIGNATURE, "signature: want 0x-prefixed hex bytes", id);
  }
  tg_passes_signin(ops->passes, cfg, base, host, msg, msg_len, sb.data, sb.len, on_signin,
                   waiter_new(cw, id, done, arg));
  tg_buf_cleanup(&sb);
  json_decref(root);
  return 0;
}

void tg_signin_handle(const tg_http_ops *ops, const tg_config *cfg, struct event_base *base,
                      tg_client_watch *cw, const char *method, const char *path,
                      const char *request_id, void (*done)(void *arg, int status), void *arg) {
  int st = handle(ops, cfg, base, cw, method, path, request_id, done, arg);
  if (st) done(arg, st);
}
