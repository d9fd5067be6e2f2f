/* The daemon's chain side: blocking reads for admission, and a thread running the transaction manager. */
#include <event2/event.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/chain.h"
#include "tollgate/abi.h"
#include "tollgate/hex.h"
#include "tollgate/rpc.h"
#include "tollgate/txm.h"
#include "tollgate/u256.h"

/* One exact submission on its way from a worker to the chain thread and back. */
typedef struct job {
  struct job *next;
  struct event_base *worker; /* where the result is delivered */
  tg_pay_exact_cb cb;
  void *arg;
  tg_address token;
  tg_x402_exact auth;
  int done;                  /* the worker's callback was scheduled */
} job;

struct tg_chain {
  pthread_mutex_t read_mu;
  tg_rpc *reads;             /* blocking reads from worker threads, one at a time */
  tg_rpc *loop_rpc;          /* drives the transaction manager on the chain thread */
  tg_txm *txm;
  struct event_base *base;
  struct event *wake;
  pthread_t thread;
  int running;
  pthread_mutex_t q_mu;
  job *queue;
  tg_address channels;
  int wait_receipt;
  uint8_t sel_state[4], sel_auth_state[4], sel_balance[4], sel_transfer[4];
};

/* ---- blocking reads ----------------------------------------------------------- */

static int call_view(tg_chain *c, tg_buf *out, const tg_address *to, const uint8_t *data, size_t len) {
  tg_eth_msg m;
  memset(&m, 0, sizeof m);
  m.to = to;
  m.data = data;
  m.data_len = len;
  pthread_mutex_lock(&c->read_mu);
  int rc = tg_eth_call(c->reads, out, NULL, &m, "latest");
  pthread_mutex_unlock(&c->read_mu);
  return rc;
}

static int word_u64(const uint8_t *w, uint64_t *out) {
  tg_u256 v;
  memcpy(v.b, w, 32);
  return tg_u256_to_u64(&v, out);
}

/* getChannelState(bytes32) -> (uint128 balance, uint128 totalClaimed, uint128 withdrawAmount,
 * uint40 withdrawInitiatedAt, uint256 refundNonce), a static tuple of five words. */
static int channel_state(void *ctx, const tg_hash *id, tg_u256 *balance, tg_u256 *claimed,
                         uint64_t *withdraw_at) {
  tg_chain *c = ctx;
  uint8_t data[4 + 32];
  memcpy(data, c->sel_state, 4);
  memcpy(data + 4, id->b, 32);
  tg_buf out;
  tg_buf_init(&out, 4096);
  int rc = call_view(c, &out, &c->channels, data, sizeof data);
  if (!rc && out.len < 5 * 32) rc = TG_EABI_DATA;
  if (!rc) {
    memcpy(balance->b, out.data, 32);
    memcpy(claimed->b, out.data + 32, 32);
    rc = word_u64(out.data + 96, withdraw_at);
    if (!rc && tg_u256_is_zero(balance)) rc = TG_ECHANNEL_UNKNOWN;
  }
  tg_buf_cleanup(&out);
  return rc;
}

static int exact_check(void *ctx, const tg_address *token, const tg_address *from,
                       const tg_hash *nonce, tg_u256 *balance, int *used) {
  tg_chain *c = ctx;
  uint8_t data[4 + 64];
  memcpy(data, c->sel_auth_state, 4);
  tg_abi_put_address(data + 4, from);
  memcpy(data + 36, nonce->b, 32);
  tg_buf out;
  tg_buf_init(&out, 4096);
  int rc = call_view(c, &out, token, data, sizeof data);
  if (!rc && out.len < 32) rc = TG_EABI_DATA;
  if (!rc) *used = out.data[31] != 0;
  tg_buf_reset(&out);
  if (!rc) {
    memcpy(data, c->sel_balance, 4);
    tg_abi_put_address(data + 4, from);
    rc = call_view(c, &out, token, data, 36);
    if (!rc && out.len < 32) rc = TG_EABI_DATA;
    if (!rc) memcpy(balance->b, out.data, 32);
  }
  tg_buf_cleanup(&out);
  return rc;
}

/* ---- the chain thread ------------------------------------------------------------ */

/* A result on its way to a worker's loop. */
typedef struct {
  tg_pay_exact_cb cb;
  void *arg;
  int err;
  tg_hash tx;
} delivery;

static void deliver_ev(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  delivery *d = arg;
  d->cb(d->arg, d->err, d->err ? NULL : &d->tx);
  free(d);
}

/* Hands the result to the worker's loop, once; the job itself stays with the chain thread. */
static void deliver(job *j, int err, const tg_hash *tx) {
  if (j->done) return;
  j->done = 1;
  delivery *d = calloc(1, sizeof *d);
  if (!d) abort();
  d->cb = j->cb;
  d->arg = j->arg;
  d->err = err;
  if (tx) d->tx = *tx;
  if (event_base_once(j->worker, -1, EV_TIMEOUT, deliver_ev, d, NULL) != 0)
    free(d); /* the worker loop is gone (shutdown): nothing can be answered any more */
}

static void on_accepted(void *arg, const tg_txm_result *r) {
  deliver(arg, 0, &r->tx_hash);
}

/* The final outcome (confirmed or failed): answers when nothing was answered yet. */
static void on_final(void *arg, const tg_txm_result *r) {
  job *j = arg;
  int err = r->err ? r->err : (r->status == 1 ? 0 : TG_ETXM_FAILED);
  deliver(j, err, &r->tx_hash);
  free(j);
}

static void submit_one(tg_chain *c, job *j) {
  /* transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32) */
  uint8_t data[4 + 9 * 32];
  const tg_x402_exact *a = &j->auth;
  memcpy(data, c->sel_transfer, 4);
  uint8_t *w = data + 4;
  tg_abi_put_address(w, &a->from);
  tg_abi_put_address(w + 32, &a->to);
  tg_abi_put_u256(w + 64, &a->value);
  tg_abi_put_u64(w + 96, a->valid_after);
  tg_abi_put_u64(w + 128, a->valid_before);
  memcpy(w + 160, a->nonce.b, 32);
  uint8_t v = a->signature.b[64];
  tg_abi_put_u64(w + 192, v < 27 ? (uint64_t)v + 27 : v);
  memcpy(w + 224, a->signature.b, 32);
  memcpy(w + 256, a->signature.b + 32, 32);
  char key[2 * 20 + 2 * 32 + 16];
  char from[43], nonce[67];
  tg_hex_encode(from, a->from.b, 20, 1);
  tg_hex_encode(nonce, a->nonce.b, 32, 1);
  snprintf(key, sizeof key, "3009:%s:%s", from, nonce);
  tg_txm_request req;
  memset(&req, 0, sizeof req);
  req.has_to = 1;
  req.to = j->token;
  req.data = data;
  req.data_len = sizeof data;
  req.key = key; /* the same authorization is never sent twice */
  if (!c->wait_receipt) {
    req.on_accepted = on_accepted;
    req.accepted_arg = j;
  }
  int rc = tg_txm_submit(c->txm, &req, on_final, j, NULL);
  if (rc) { /* the callbacks never fire for a refused submission */
    deliver(j, rc, NULL);
    free(j);
  }
}

static void on_wake(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  tg_chain *c = arg;
  pthread_mutex_lock(&c->q_mu);
  job *list = c->queue;
  c->queue = NULL;
  pthread_mutex_unlock(&c->q_mu);
  /* The queue is LIFO; submit in arrival order. */
  job *rev = NULL;
  while (list) {
    job *n = list->next;
    list->next = rev;
    rev = list;
    list = n;
  }
  while (rev) {
    job *n = rev->next;
    submit_one(c, rev);
    rev = n;
  }
}

static int exact_submit(void *ctx, struct event_base *worker, const tg_address *token,
                        const tg_x402_exact *auth, tg_pay_exact_cb cb, void *arg) {
  tg_chain *c = ctx;
  job *j = calloc(1, sizeof *j);
  if (!j) abort();
  j->worker = worker;
  j->cb = cb;
  j->arg = arg;
  j->token = *token;
  j->auth = *auth;
  pthread_mutex_lock(&c->q_mu);
  j->next = c->queue;
  c->queue = j;
  pthread_mutex_unlock(&c->q_mu);
  event_active(c->wake, EV_READ, 0);
  return TG_OK;
}

static void *chain_main(void *arg) {
  tg_chain *c = arg;
  event_base_loop(c->base, EVLOOP_NO_EXIT_ON_EMPTY);
  return NULL;
}

/* ---- lifecycle ----------------------------------------------------------------------- */

int tg_chain_new(tg_chain **out, char *err, size_t err_len, const tg_chain_opts *o) {
  *out = NULL;
  tg_chain *c = calloc(1, sizeof *c);
  if (!c) abort();
  pthread_mutex_init(&c->read_mu, NULL);
  pthread_mutex_init(&c->q_mu, NULL);
  c->channels = o->channels;
  c->wait_receipt = o->wait_receipt;
  int rc = tg_abi_selector_str(c->sel_state, "getChannelState(bytes32)", 24);
  if (!rc) rc = tg_abi_selector_str(c->sel_auth_state, "authorizationState(address,bytes32)", 35);
  if (!rc) rc = tg_abi_selector_str(c->sel_balance, "balanceOf(address)", 18);
  if (!rc)
    rc = tg_abi_selector_str(c->sel_transfer,
                             "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)",
                             96);
  tg_rpc_opts ro;
  tg_rpc_opts_init(&ro);
  ro.urls = o->rpc_urls;
  ro.n_urls = o->n_rpc_urls;
  ro.chain_id = o->chain_id;
  if (!rc) rc = tg_rpc_new(&c->reads, &ro, err, err_len);
  c->base = event_base_new();
  if (!c->base) abort();
  ro.base = c->base;
  if (!rc) rc = tg_rpc_new(&c->loop_rpc, &ro, err, err_len);
  if (!rc && o->key) {
    tg_txm_opts to;
    tg_txm_opts_init(&to);
    to.rpc = c->loop_rpc;
    to.key = o->key;
    to.journal_path = o->journal_path;
    if (o->confirmations) to.confirmations = o->confirmations;
    rc = tg_txm_open(&c->txm, &to);
    if (rc) snprintf(err, err_len, "transaction manager (journal %s): %s", o->journal_path, tg_strerror(rc));
  }
  if (rc) {
    tg_chain_free(c);
    return rc;
  }
  c->wake = event_new(c->base, -1, 0, on_wake, c);
  if (pthread_create(&c->thread, NULL, chain_main, c) != 0) abort();
  c->running = 1;
  *out = c;
  return TG_OK;
}

void tg_chain_free(tg_chain *c) {
  if (!c) return;
  if (c->running) {
    event_base_loopbreak(c->base);
    pthread_join(c->thread, NULL);
  }
  tg_txm_free(c->txm);
  if (c->wake) event_free(c->wake);
  tg_rpc_free(c->loop_rpc);
  tg_rpc_free(c->reads);
  if (c->base) event_base_free(c->base);
  while (c->queue) {
    job *n = c->queue->next;
    free(c->queue);
    c->queue = n;
  }
  pthread_mutex_destroy(&c->read_mu);
  pthread_mutex_destroy(&c->q_mu);
  free(c);
}

tg_pay_chain tg_chain_pay_reader(tg_chain *c) {
  return (tg_pay_chain){c, channel_state};
}

tg_pay_exact_backend tg_chain_exact_backend(tg_chain *c) {
  return (tg_pay_exact_backend){c, exact_check, exact_submit};
}
