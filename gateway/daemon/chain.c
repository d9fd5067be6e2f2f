/* The daemon's chain side: blocking reads for admission, and a thread running the transaction manager. */
#include <event2/event.h>
#include <event2/thread.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon/chain.h"
#include "http/server.h"
#include "pay/ledger.h"
#include "store/store.h"
#include "tollgate/abi.h"
#include "tollgate/address.h"
#include "tollgate/hex.h"
#include "tollgate/keccak.h"
#include "tollgate/rpc.h"
#include "tollgate/settle.h"
#include "tollgate/txm.h"
#include "tollgate/u256.h"

/* One exact submission on its way from a worker to the chain thread and back. */
typedef struct job {
  struct job *next;
  struct event_base *worker; /* where the result is delivered */
  tg_pay_exact_cb cb;
  void *arg;
  tg_address token;          /* exact: the token; deposit: the channel contract */
  tg_x402_exact auth;
  int is_deposit;            /* a gasless channel deposit rather than an `exact` transfer */
  int is_refund;             /* a cooperative refund: refund(config, amount) */
  tg_x402_channel dep;       /* deposit: the payload; refund: the config */
  tg_u256 refund_amount;
  int done;                  /* the worker's callback was scheduled */
  struct tg_chain *chain;    /* exact: set when handed to the manager (its gas estimate, and
                                where its receipt outcome is recorded) */
} job;

/* The receipt outcome of one `exact` transfer, on its way to the store (exact_outcome_main). */
typedef struct outcome {
  struct outcome *next;
  tg_address token, payer;
  tg_hash nonce, tx;
  tg_store_exact_status status;
  uint64_t give_up_ms;       /* monotonic: a row still not charged then is left as it is */
} outcome;

/* One `exact` admission read (authorizationState + balanceOf) on its way through the chain thread. */
typedef struct rjob {
  struct rjob *next;
  struct tg_chain *c;
  struct event_base *worker;
  tg_pay_exact_check_cb cb;
  void *arg;
  tg_address token, from;
  tg_hash nonce;
  int err, used;
  tg_u256 balance;
} rjob;
/* A settlement run's call into the transaction manager, made on the chain thread; the
 * caller (the scheduler thread) waits on call_cv until `done`. */
enum { SC_SUBMIT = 1, SC_GET, SC_IDLE };
typedef struct scall {
  struct scall *next;
  int kind;
  const tg_txm_request *req; /* SC_SUBMIT */
  uint64_t id;               /* SC_SUBMIT (out), SC_GET (in) */
  tg_txm_result res;         /* SC_GET */
  size_t busy;               /* SC_IDLE: settlement transactions not final yet */
  int rc;
  int done;
} scall;

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
  /* the outcome of each `exact` transfer, told to the payment layer (tg_chain_on_exact_done) */
  pthread_mutex_t done_mu;
  void (*exact_done)(void *arg, const tg_address *from, const tg_hash *nonce);
  void *exact_done_arg;
  job *queue;
  rjob *rqueue;              /* admission reads, under q_mu like queue */
  tg_address channels;
  int wait_receipt;
  uint8_t sel_state[4], sel_auth_state[4], sel_balance[4], sel_transfer[4];
  tg_hash topic_auth_used;   /* AuthorizationUsed(address,bytes32): a transfer's success */
  /* the channel follower (tg_chain_follow) */
  tg_rpc *follow_rpc;
  tg_ledger *ledger;
  tg_store *store;
  unsigned follow_ms;
  pthread_t follow_thread;
  _Atomic int following;     /* read by the chain thread's snapshot */
  int follow_stop;
  pthread_mutex_t follow_mu;
  pthread_cond_t follow_cv;
  tg_hash topics[4];         /* Deposited, WithdrawInitiated, Withdrawn, Refunded */
  tg_chain_withdraw_fn on_withdraw; /* called on the follower thread after the sync */
  void *on_withdraw_arg;
  /* access passes */
  tg_address passes;
  uint8_t sel_entitled[4];
  tg_chain_pass_hooks pass_hooks;
  uint64_t pass_next;        /* the next block whose pass logs are read */
  /* /metrics: per client (reads, follower, manager), written by the client's owner */
  _Atomic uint64_t st_calls[3], st_errors[3];
  _Atomic uint64_t st_in_flight, st_block;
  struct event *stats_ev;    /* the chain thread's 500 ms snapshot */
  int block_pending;         /* an eth_blockNumber of the snapshot is out */
  /* settlement on this thread's manager (tg_chain_settle_sender); under q_mu: */
  scall *calls;
  pthread_cond_t call_cv;
  int closing, settle_cancel;
  /* chain thread only: */
  uint64_t *settle_ids;      /* settlement transactions not seen final yet */
  size_t n_settle, cap_settle;
  size_t resumed, resumed_done; /* transactions resumed from the journal at start / finished */
  /*
   * `exact` transfers (chain thread only): the gas limit every transferWithAuthorization
   * gets, from one eth_estimateGas (0: not known yet; docs/PERFORMANCE.md), and the jobs
   * waiting for that estimate, in arrival order.
   */
  uint64_t exact_gas, exact_gas_ms;
  int gas_estimating;
  job *held, *held_tail;
  /* receipt outcomes of `exact` transfers, written by a thread of their own (tg_chain_record_exact) */
  tg_store *out_store;
  pthread_t out_thread;
  int out_running, out_stop;
  pthread_mutex_t out_mu;
  pthread_cond_t out_cv;
  outcome *out_head, **out_tail;
  outcome *out_later;        /* writer thread only: rows not charged yet, tried again in 1 s */
};

enum { CLIENT_READS, CLIENT_FOLLOW, CLIENT_TXM };

/* Copies a client's counters into the atomics; on the thread that owns the client. */
static void stats_snap(tg_chain *c, tg_rpc *rpc, int which) {
  uint64_t calls = 0, errors = 0;
  for (size_t i = 0; rpc && i < tg_rpc_endpoint_count(rpc); i++) {
    tg_rpc_endpoint_stats s;
    if (tg_rpc_endpoint_stats_get(rpc, i, &s) != 0) continue;
    calls += s.calls_ok + s.calls_failed;
    errors += s.calls_failed;
  }
  atomic_store(&c->st_calls[which], calls);
  atomic_store(&c->st_errors[which], errors);
}

static void stats_block(tg_chain *c, uint64_t block) {
  uint64_t cur = atomic_load(&c->st_block);
  while (block > cur && !atomic_compare_exchange_weak(&c->st_block, &cur, block)) {
  }
}

void tg_chain_stats_get(tg_chain *c, tg_chain_stats *out) {
  memset(out, 0, sizeof *out);
  for (int i = 0; i < 3; i++) {
    out->rpc_calls += atomic_load(&c->st_calls[i]);
    out->rpc_errors += atomic_load(&c->st_errors[i]);
  }
  out->tx_in_flight = atomic_load(&c->st_in_flight);
  out->last_block = atomic_load(&c->st_block);
}

/* ---- blocking reads ----------------------------------------------------------- */

static int call_view(tg_chain *c, tg_buf *out, const tg_address *to, const uint8_t *data, size_t len) {
  tg_eth_msg m;
  memset(&m, 0, sizeof m);
  m.to = to;
  m.data = data;
  m.data_len = len;
  pthread_mutex_lock(&c->read_mu);
  int rc = tg_eth_call(c->reads, out, NULL, &m, "latest");
  stats_snap(c, c->reads, CLIENT_READS);
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

/* ERC-1271 isValidSignature(bytes32,bytes): the wallet answers 0x1626ba7e when it signed. A
 * revert, an account without code or any other answer means "not its signature". */
static int erc1271(void *ctx, const tg_address *wallet, const tg_hash *digest, const uint8_t *sig,
                   size_t sig_len, int *valid) {
  static const uint8_t magic[4] = {0x16, 0x26, 0xba, 0x7e};
  tg_chain *c = ctx;
  *valid = 0;
  if (sig_len > TG_X402_SIG_MAX) return TG_ETOOBIG;
  size_t padded = (sig_len + 31) / 32 * 32;
  size_t len = 4 + 32 + 32 + 32 + padded;
  uint8_t *data = calloc(1, len);
  if (!data) abort();
  memcpy(data, magic, 4);
  memcpy(data + 4, digest->b, 32);
  tg_abi_put_u64(data + 36, 64);
  tg_abi_put_u64(data + 68, sig_len);
  memcpy(data + 100, sig, sig_len);
  tg_buf out;
  tg_buf_init(&out, 4096);
  int rc = call_view(c, &out, wallet, data, len);
  free(data);
  if (rc == TG_ERPC_REVERTED) rc = TG_OK; /* refused: not a valid signature */
  else if (rc == TG_OK) *valid = out.len >= 32 && memcmp(out.data, magic, 4) == 0;
  tg_buf_cleanup(&out);
  return rc;
}

int tg_chain_erc1271(void *ctx, const tg_address *wallet, const tg_hash *digest, const uint8_t *sig,
                     size_t sig_len, int *valid) {
  return erc1271(ctx, wallet, digest, sig, sig_len, valid);
}

/* entitled(address,uint256) -> (bool ok, uint64 until, address holder): three static words. */
int tg_chain_pass_entitled(void *ctx, const tg_address *user, const tg_u256 *plan_id, int *ok,
                           uint64_t *until, tg_address *holder) {
  tg_chain *c = ctx;
  *ok = 0;
  *until = 0;
  memset(holder, 0, sizeof *holder);
  if (tg_address_is_zero(&c->passes)) return TG_EPAY_UNAVAILABLE;
  uint8_t data[4 + 64];
  memcpy(data, c->sel_entitled, 4);
  tg_abi_put_address(data + 4, user);
  tg_abi_put_u256(data + 36, plan_id);
  tg_buf out;
  tg_buf_init(&out, 4096);
  int rc = call_view(c, &out, &c->passes, data, sizeof data);
  if (!rc && out.len < 96) rc = TG_EABI_DATA;
  if (!rc) {
    *ok = out.data[31] != 0;
    rc = word_u64(out.data + 32, until);
    memcpy(holder->b, out.data + 64 + 12, 20);
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

static void outcome_push(tg_chain *c, const job *j, const tg_txm_result *r, int answered);

/* An `exact` transfer's outcome is known (mined `confirmations` deep, or failed for good). */
static void exact_done(tg_chain *c, const tg_x402_exact *a) {
  pthread_mutex_lock(&c->done_mu);
  if (c->exact_done) c->exact_done(c->exact_done_arg, &a->from, &a->nonce);
  pthread_mutex_unlock(&c->done_mu);
}

/* The final outcome (confirmed or failed): answers when nothing was answered yet. */
static void on_final(void *arg, const tg_txm_result *r) {
  job *j = arg;
  int err = r->err ? r->err : (r->status == 1 ? 0 : TG_ETXM_FAILED);
  int answered = j->done; /* on acceptance: the payment layer recorded it `submitted` */
  /* Before the answer: the payer's pending value ends while the call still holds the
   * authorization's key, so a retry of it cannot have reserved it again. */
  if (!j->is_deposit && !j->is_refund && j->chain) exact_done(j->chain, &j->auth);
  deliver(j, err, &r->tx_hash);
  if (!j->is_deposit && !j->is_refund && j->chain) outcome_push(j->chain, j, r, answered);
  free(j);
}

/* depositWithAuthorization(config, amount, validAfter, validBefore, salt, signature) calldata. */
static int deposit_calldata(tg_buf *out, const tg_x402_channel *d) {
  static const char sig_text[] =
      "depositWithAuthorization((address,address,address,address,address,uint40,bytes32),uint128,"
      "uint256,uint256,uint256,bytes)";
  tg_abi_sig *sig = NULL;
  int rc = tg_abi_sig_parse(&sig, sig_text, sizeof sig_text - 1);
  if (rc) return rc;
  const tg_channel_config *k = &d->config;
  tg_abi_value cfg[7] = {tg_abi_val_address(&k->payer),
                         tg_abi_val_address(&k->payer_authorizer),
                         tg_abi_val_address(&k->receiver),
                         tg_abi_val_address(&k->receiver_authorizer),
                         tg_abi_val_address(&k->token),
                         tg_abi_val_u64(k->withdraw_delay),
                         tg_abi_val_fixed(k->salt.b, 32)};
  tg_abi_value a[6] = {tg_abi_val_list(cfg, 7),
                       tg_abi_val_word(&d->deposit_amount),
                       tg_abi_val_u64(d->deposit_valid_after),
                       tg_abi_val_u64(d->deposit_valid_before),
                       tg_abi_val_fixed(d->deposit_nonce.b, 32),
                       tg_abi_val_bytes(d->deposit_signature.b, d->deposit_signature.len)};
  tg_abi_value args = tg_abi_val_list(a, 6);
  rc = tg_abi_encode_call(out, sig, &args);
  tg_abi_sig_free(sig);
  return rc;
}

static void submit_deposit(tg_chain *c, job *j) {
  tg_buf data;
  tg_buf_init(&data, 4096);
  int rc = deposit_calldata(&data, &j->dep);
  if (rc) {
    tg_buf_cleanup(&data);
    deliver(j, rc, NULL);
    free(j);
    return;
  }
  char key[2 * 20 + 2 * 32 + 16];
  char from[43], salt[67];
  tg_hex_encode(from, j->dep.config.payer.b, 20, 1);
  tg_hex_encode(salt, j->dep.deposit_nonce.b, 32, 1);
  snprintf(key, sizeof key, "dep:%s:%s", from, salt);
  tg_txm_request req;
  memset(&req, 0, sizeof req);
  req.has_to = 1;
  req.to = j->token;
  req.data = data.data;
  req.data_len = data.len;
  req.key = key; /* the same deposit authorization is never sent twice */
  uint64_t id = 0;
  /* Answered on the receipt only: the channel has the funds once it is mined. */
  rc = tg_txm_submit(c->txm, &req, on_final, j, &id);
  tg_buf_cleanup(&data);
  if (rc == TG_EEXISTS) {
    tg_txm_result r;
    rc = tg_txm_get(c->txm, id, &r);
    if (rc == 0 && r.state == TG_TXM_FAILED) rc = r.err ? r.err : TG_ETXM_FAILED;
    if (rc == 0 && r.state < TG_TXM_MINED) rc = TG_EBUSY; /* the first call is still waiting */
    if (rc == 0 && r.status != 1) rc = TG_ETXM_FAILED;
    deliver(j, rc, rc ? NULL : &r.tx_hash);
    free(j);
    return;
  }
  if (rc) {
    deliver(j, rc, NULL);
    free(j);
  }
}

static void submit_refund(tg_chain *c, job *j) {
  static const char sig_text[] =
      "refund((address,address,address,address,address,uint40,bytes32),uint128)";
  tg_abi_sig *sig = NULL;
  tg_buf data;
  tg_buf_init(&data, 4096);
  int rc = tg_abi_sig_parse(&sig, sig_text, sizeof sig_text - 1);
  if (!rc) {
    const tg_channel_config *k = &j->dep.config;
    tg_abi_value cfg[7] = {tg_abi_val_address(&k->payer),
                           tg_abi_val_address(&k->payer_authorizer),
                           tg_abi_val_address(&k->receiver),
                           tg_abi_val_address(&k->receiver_authorizer),
                           tg_abi_val_address(&k->token),
                           tg_abi_val_u64(k->withdraw_delay),
                           tg_abi_val_fixed(k->salt.b, 32)};
    tg_abi_value a[2] = {tg_abi_val_list(cfg, 7), tg_abi_val_word(&j->refund_amount)};
    tg_abi_value args = tg_abi_val_list(a, 2);
    rc = tg_abi_encode_call(&data, sig, &args);
  }
  tg_abi_sig_free(sig);
  if (rc) {
    tg_buf_cleanup(&data);
    deliver(j, rc, NULL);
    free(j);
    return;
  }
  tg_txm_request req;
  memset(&req, 0, sizeof req);
  req.has_to = 1;
  req.to = j->token;
  req.data = data.data;
  req.data_len = data.len;
  uint64_t id = 0;
  rc = tg_txm_submit(c->txm, &req, on_final, j, &id);
  tg_buf_cleanup(&data);
  if (rc) {
    deliver(j, rc, NULL);
    free(j);
  }
}

/* transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32) */
#define EXACT_CALLDATA_LEN (4 + 9 * 32)
static void exact_calldata(const tg_chain *c, uint8_t data[EXACT_CALLDATA_LEN], const tg_x402_exact *a) {
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
}

/*
 * An `exact` transfer's final outcome: answers when nothing was answered yet. A transfer
 * that reverted, or ran out of gas, makes the next one estimate its gas again.
 */
static void on_exact_final(void *arg, const tg_txm_result *r) {
  job *j = arg;
  if (r->err == 0 && r->status != 1 && j->chain) j->chain->exact_gas = 0;
  on_final(arg, r);
}

/* Hands one `exact` job to the manager with `gas` (0: the manager estimates it). */
static void submit_exact(tg_chain *c, job *j, uint64_t gas) {
  uint8_t data[EXACT_CALLDATA_LEN];
  const tg_x402_exact *a = &j->auth;
  exact_calldata(c, data, a);
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
  req.gas_limit = gas;
  req.key = key; /* the same authorization is never sent twice */
  req.success_topic = &c->topic_auth_used; /* outcomes from the token's logs, not receipts */
  if (!c->wait_receipt) {
    req.on_accepted = on_accepted;
    req.accepted_arg = j;
  }
  j->chain = c;
  uint64_t id = 0;
  int rc = tg_txm_submit(c->txm, &req, on_exact_final, j, &id);
  if (rc == TG_EEXISTS) {
    /* Submitted before (by a run that crashed before the payment layer recorded it): the
     * journal has the transaction, which the manager resumed; answer with it. */
    tg_txm_result r;
    rc = tg_txm_get(c->txm, id, &r);
    if (rc == 0 && r.state == TG_TXM_FAILED) rc = r.err ? r.err : TG_ETXM_FAILED;
    if (rc == 0 && r.state >= TG_TXM_MINED && r.status != 1) rc = TG_ETXM_FAILED;
    /* Final already: nothing is in flight. Otherwise no callback follows for this job: its
     * pending value lapses after the authorization's validBefore (pay/pending.h). */
    if (rc == 0 && r.state >= TG_TXM_CONFIRMED) exact_done(c, a);
    deliver(j, rc, rc ? NULL : &r.tx_hash);
    free(j);
    return;
  }
  if (rc) { /* the callbacks never fire for a refused submission */
    deliver(j, rc, NULL);
    free(j);
  }
}

/*
 * The gas limit of a transferWithAuthorization hardly varies: the authorization's nonce
 * slot is always new, the payer's balance is always non-zero before, and only the
 * receiver's balance may go from zero to non-zero (17,100 gas more than otherwise). So one
 * eth_estimateGas serves every transfer: the estimate plus 20 % plus 20,000 gas. It is
 * made again after a transfer of ours reverted and every 10 minutes. Unused gas costs
 * nothing (EIP-1559 charges the gas used); without this every transfer cost the node an
 * estimate (a binary search over EVM runs) before its eth_sendRawTransaction.
 */
#define EXACT_GAS_HEADROOM 20000u
#define EXACT_GAS_MAX_AGE_MS (10u * 60u * 1000u)

static uint64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void exact_pump(tg_chain *c);

static void on_exact_gas(void *arg, const tg_rpc_reply *r) {
  tg_chain *c = arg;
  c->gas_estimating = 0;
  uint64_t est = 0;
  if (r->err == 0 && tg_rpc_parse_u64(r->result, &est) == 0 && est > 21000 && est < 10000000) {
    c->exact_gas = est + est / 5 + EXACT_GAS_HEADROOM;
    c->exact_gas_ms = mono_ms();
  } else if (c->held) {
    /* That authorization does not run (or the node did not answer): the manager estimates
     * it on its own and reports why it fails; the next one is estimated again. */
    job *j = c->held;
    c->held = j->next;
    if (!c->held) c->held_tail = NULL;
    submit_exact(c, j, 0);
  }
  exact_pump(c);
}

/* Every `exact` job held: all submitted in this turn (one journal commit, one send batch). */
static void exact_pump(tg_chain *c) {
  if (!c->held || c->gas_estimating || !c->txm) return;
  if (c->exact_gas && mono_ms() - c->exact_gas_ms > EXACT_GAS_MAX_AGE_MS) c->exact_gas = 0;
  if (!c->exact_gas) {
    uint8_t data[EXACT_CALLDATA_LEN];
    exact_calldata(c, data, &c->held->auth);
    tg_eth_msg m;
    memset(&m, 0, sizeof m);
    m.from = tg_txm_address(c->txm);
    m.to = &c->held->token;
    m.data = data;
    m.data_len = sizeof data;
    json_t *p = json_array();
    if (!p) abort();
    json_array_append_new(p, tg_eth_msg_json(&m));
    if (tg_rpc_call_async(c->loop_rpc, "eth_estimateGas", p, on_exact_gas, c) == 0) {
      c->gas_estimating = 1;
      return;
    }
    /* not even queued: each transfer estimated by the manager */
  }
  job *list = c->held;
  c->held = c->held_tail = NULL;
  while (list) {
    job *n = list->next;
    submit_exact(c, list, c->exact_gas);
    list = n;
  }
}

static void submit_one(tg_chain *c, job *j) {
  if (j->is_deposit) {
    submit_deposit(c, j);
    return;
  }
  if (j->is_refund) {
    submit_refund(c, j);
    return;
  }
  j->next = NULL;
  if (c->held_tail) c->held_tail->next = j;
  else c->held = j;
  c->held_tail = j;
}

/* ---- admission reads without blocking a worker -------------------------------------------- */

static void rjob_deliver_ev(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  rjob *r = arg;
  r->cb(r->arg, r->err, r->err ? NULL : &r->balance, r->used);
  free(r);
}

static void rjob_deliver(rjob *r) {
  if (event_base_once(r->worker, -1, EV_TIMEOUT, rjob_deliver_ev, r, NULL) != 0)
    free(r); /* the worker loop is gone (shutdown): nothing can be answered any more */
}

/* The first 32-byte word of an eth_call result in a batch item. */
static int batch_word(tg_rpc_batch *b, size_t i, uint8_t out[32]) {
  const tg_rpc_reply *r = tg_rpc_batch_reply(b, i);
  if (r == NULL) return TG_ERPC_REPLY;
  if (r->err) return r->err;
  tg_buf buf;
  tg_buf_init(&buf, 4096);
  int rc = tg_rpc_parse_data(r->result, &buf);
  if (rc == 0 && buf.len < 32) rc = TG_EABI_DATA;
  if (rc == 0) memcpy(out, buf.data, 32);
  else if (rc != TG_EABI_DATA) rc = TG_ERPC_REPLY;
  tg_buf_cleanup(&buf);
  return rc;
}

static json_t *call_params(const tg_address *to, const uint8_t *data, size_t len) {
  tg_eth_msg m;
  memset(&m, 0, sizeof m);
  m.to = to;
  m.data = data;
  m.data_len = len;
  json_t *p = json_array();
  if (!p) abort();
  json_array_append_new(p, tg_eth_msg_json(&m));
  json_array_append_new(p, tg_rpc_json_block(NULL));
  return p;
}

/*
 * The admission reads of one turn: every waiting call's authorizationState, and one
 * balanceOf per distinct payer (every call of that payer gets the same answer), in one
 * JSON-RPC batch, one HTTP exchange. At most READS_PER_BATCH calls per batch.
 */
#define READS_PER_BATCH 400

typedef struct {
  rjob **v;
  size_t n;
  size_t *bal; /* per call: the batch index of its payer's balanceOf */
} rbatch;

static void on_reads_batch(void *arg, tg_rpc_batch *b, int err) {
  rbatch *rb = arg;
  for (size_t i = 0; i < rb->n; i++) {
    rjob *r = rb->v[i];
    uint8_t w[32];
    r->err = err;
    if (!r->err) r->err = batch_word(b, i, w);
    if (!r->err) r->used = w[31] != 0;
    if (!r->err) r->err = batch_word(b, rb->bal[i], r->balance.b);
    rjob_deliver(r);
  }
  tg_rpc_batch_free(b);
  free(rb->v);
  free(rb->bal);
  free(rb);
}

/* On the chain thread: the calls v[0..n) in one batch (authorizationState items first). */
static void reads_send(tg_chain *c, rjob **v, size_t n) {
  rbatch *rb = calloc(1, sizeof *rb);
  if (!rb) abort();
  rb->v = v;
  rb->n = n;
  rb->bal = calloc(n, sizeof *rb->bal);
  if (!rb->bal) abort();
  tg_rpc_batch *b = tg_rpc_batch_new();
  if (!b) abort();
  int rc = 0;
  for (size_t i = 0; i < n && rc >= 0; i++) {
    uint8_t state[4 + 64];
    memcpy(state, c->sel_auth_state, 4);
    tg_abi_put_address(state + 4, &v[i]->from);
    memcpy(state + 36, v[i]->nonce.b, 32);
    rc = tg_rpc_batch_add(b, "eth_call", call_params(&v[i]->token, state, sizeof state));
  }
  for (size_t i = 0; i < n && rc >= 0; i++) {
    size_t k = 0; /* an earlier call of the same payer and token already reads the balance */
    while (k < i && (memcmp(v[k]->from.b, v[i]->from.b, 20) || memcmp(v[k]->token.b, v[i]->token.b, 20)))
      k++;
    if (k < i) {
      rb->bal[i] = rb->bal[k];
      continue;
    }
    uint8_t bal[4 + 32];
    memcpy(bal, c->sel_balance, 4);
    tg_abi_put_address(bal + 4, &v[i]->from);
    rc = tg_rpc_batch_add(b, "eth_call", call_params(&v[i]->token, bal, sizeof bal));
    if (rc >= 0) rb->bal[i] = (size_t)rc;
  }
  if (rc >= 0) rc = tg_rpc_batch_send(c->loop_rpc, b, on_reads_batch, rb);
  if (rc != 0) { /* never sent: the callback will not run */
    tg_rpc_batch_free(b);
    for (size_t i = 0; i < n; i++) {
      v[i]->err = rc < 0 ? rc : TG_EIO;
      rjob_deliver(v[i]);
    }
    free(rb->v);
    free(rb->bal);
    free(rb);
  }
}

/* The reads waiting (a LIFO list): in arrival order, READS_PER_BATCH per batch. */
static void reads_start(tg_chain *c, rjob *list) {
  size_t n = 0;
  for (rjob *r = list; r; r = r->next) n++;
  rjob **all = calloc(n ? n : 1, sizeof *all);
  if (!all) abort();
  size_t i = n;
  for (rjob *r = list; r; r = r->next) all[--i] = r;
  for (size_t off = 0; off < n; off += READS_PER_BATCH) {
    size_t k = n - off < READS_PER_BATCH ? n - off : READS_PER_BATCH;
    rjob **v = malloc(k * sizeof *v);
    if (!v) abort();
    memcpy(v, all + off, k * sizeof *v);
    reads_send(c, v, k);
  }
  free(all);
}

static int exact_check_async(void *ctx, struct event_base *base, const tg_address *token,
                             const tg_address *from, const tg_hash *nonce, tg_pay_exact_check_cb cb,
                             void *arg) {
  tg_chain *c = ctx;
  rjob *r = calloc(1, sizeof *r);
  if (!r) abort();
  r->c = c;
  r->worker = base;
  r->cb = cb;
  r->arg = arg;
  r->token = *token;
  r->from = *from;
  r->nonce = *nonce;
  pthread_mutex_lock(&c->q_mu);
  r->next = c->rqueue;
  c->rqueue = r;
  pthread_mutex_unlock(&c->q_mu);
  event_active(c->wake, EV_READ, 0);
  return TG_OK;
}

static int final_state(int st) { return st == TG_TXM_CONFIRMED || st == TG_TXM_FAILED; }

static void settle_call(tg_chain *c, scall *s) {
  switch (s->kind) {
  case SC_SUBMIT:
    s->rc = tg_txm_submit(c->txm, s->req, NULL, NULL, &s->id);
    if (s->rc == 0) {
      if (c->n_settle == c->cap_settle) {
        size_t cap = c->cap_settle ? c->cap_settle * 2 : 16;
        uint64_t *v = realloc(c->settle_ids, cap * sizeof *v);
        if (!v) abort();
        c->settle_ids = v;
        c->cap_settle = cap;
      }
      c->settle_ids[c->n_settle++] = s->id;
    }
    break;
  case SC_GET:
    s->rc = tg_txm_get(c->txm, s->id, &s->res);
    break;
  default: {
    size_t k = 0;
    for (size_t i = 0; i < c->n_settle; i++) {
      tg_txm_result r;
      if (tg_txm_get(c->txm, c->settle_ids[i], &r) == 0 && final_state(r.state)) continue;
      c->settle_ids[k++] = c->settle_ids[i];
    }
    c->n_settle = k;
    s->busy = k + (c->resumed > c->resumed_done ? c->resumed - c->resumed_done : 0);
    s->rc = 0;
  }
  }
}

static void on_resumed_final(void *arg, const tg_txm_result *r) {
  (void)r;
  ((tg_chain *)arg)->resumed_done++;
}

static void on_wake(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  tg_chain *c = arg;
  pthread_mutex_lock(&c->q_mu);
  job *list = c->queue;
  c->queue = NULL;
  rjob *reads = c->rqueue;
  c->rqueue = NULL;
  scall *calls = c->calls;
  c->calls = NULL;
  pthread_mutex_unlock(&c->q_mu);
  if (reads) reads_start(c, reads);
  if (calls) {
    for (scall *s = calls; s; s = s->next) settle_call(c, s);
    pthread_mutex_lock(&c->q_mu);
    while (calls) {
      scall *n = calls->next;
      calls->done = 1;
      calls = n;
    }
    pthread_cond_broadcast(&c->call_cv);
    pthread_mutex_unlock(&c->q_mu);
  }
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
  exact_pump(c);
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

static int deposit_submit(void *ctx, struct event_base *worker, const tg_address *contract,
                          const tg_x402_channel *ch, tg_pay_exact_cb cb, void *arg) {
  tg_chain *c = ctx;
  if (!c->txm) return TG_ETXM_CLOSED;
  job *j = calloc(1, sizeof *j);
  if (!j) abort();
  j->worker = worker;
  j->cb = cb;
  j->arg = arg;
  j->token = *contract;
  j->is_deposit = 1;
  j->dep = *ch;
  pthread_mutex_lock(&c->q_mu);
  j->next = c->queue;
  c->queue = j;
  pthread_mutex_unlock(&c->q_mu);
  event_active(c->wake, EV_READ, 0);
  return TG_OK;
}

static int refund_submit(void *ctx, struct event_base *worker, const tg_address *contract,
                         const tg_channel_config *config, const tg_u256 *amount, tg_pay_exact_cb cb,
                         void *arg) {
  tg_chain *c = ctx;
  if (!c->txm) return TG_ETXM_CLOSED;
  job *j = calloc(1, sizeof *j);
  if (!j) abort();
  j->worker = worker;
  j->cb = cb;
  j->arg = arg;
  j->token = *contract;
  j->is_refund = 1;
  j->dep.config = *config;
  j->refund_amount = *amount;
  pthread_mutex_lock(&c->q_mu);
  j->next = c->queue;
  c->queue = j;
  pthread_mutex_unlock(&c->q_mu);
  event_active(c->wake, EV_READ, 0);
  return TG_OK;
}

/* ------------------------------------------------ receipt outcomes of `exact` transfers */

/*
 * The payment layer records an `exact` payment `submitted` when the node accepts its
 * transfer (or, with `exact_wait receipt`, once it is mined); the final outcome comes
 * later, on the chain thread, when the manager has the receipt `confirmations` deep.
 * It is queued here and written by a thread of its own, many per store commit, so the
 * chain thread never waits for the store. Recorded:
 *   - mined and succeeded: `confirmed` (the store then marks the payment's charge settled);
 *   - mined and reverted, or failed for good after the node had accepted it, when the
 *     payment layer had already answered the call (it recorded `submitted`): `failed`.
 *     Otherwise the payment layer was answered with the error and records `failed` itself.
 * An outcome moves only a row the payment layer already recorded `submitted` (in the same
 * commit as its charge: `receipt` in the store op). A row still `verified` is the payment
 * layer's to finish (with `exact_wait receipt` its commit follows the answer; after a crash
 * a retry of the call resumes it and must find it `verified`, not `confirmed`): the outcome
 * is tried again every second for OUTCOME_PATIENCE_MS. The store's update also never
 * moves a row from `confirmed` or `failed` back to `submitted` for the same transaction.
 */
static void outcome_push(tg_chain *c, const job *j, const tg_txm_result *r, int answered) {
  tg_store_exact_status st;
  if (r->state == TG_TXM_CONFIRMED && r->status == 1)
    st = TG_EXACT_CONFIRMED;
  else if ((r->state == TG_TXM_CONFIRMED || r->state == TG_TXM_FAILED) && answered)
    st = TG_EXACT_FAILED;
  else
    return; /* answered with the error, or cancelled at shutdown (the journal resumes it) */
  pthread_mutex_lock(&c->out_mu);
  if (c->out_running && !c->out_stop) {
    outcome *o = calloc(1, sizeof *o);
    if (!o) abort();
    o->token = j->token;
    o->payer = j->auth.from;
    o->nonce = j->auth.nonce;
    o->tx = r->tx_hash;
    o->status = st;
    *c->out_tail = o;
    c->out_tail = &o->next;
    pthread_cond_signal(&c->out_cv);
  }
  pthread_mutex_unlock(&c->out_mu);
}

#define OUTCOMES_PER_COMMIT 256
#define OUTCOME_PATIENCE_MS 60000u

static void outcome_op(tg_store_op *op, const outcome *o) {
  memset(op, 0, sizeof *op);
  op->kind = TG_STORE_OP_EXACT_UPDATE;
  op->u.exact.token = o->token;
  op->u.exact.payer = o->payer;
  op->u.exact.nonce = o->nonce;
  op->u.exact.status = o->status;
  op->u.exact.has_tx = 1;
  op->u.exact.tx_hash = o->tx;
  op->u.exact.receipt = 1;
}

/* Writes a list of outcomes: OUTCOMES_PER_COMMIT per commit, one by one when a commit
 * fails, so that one row does not hold back the others. Rows not charged yet go to
 * out_later (`last`: a final attempt, at shutdown); the rest is freed. */
static void outcome_write(tg_chain *c, outcome *list, int last) {
  tg_store_op ops[OUTCOMES_PER_COMMIT];
  outcome *chunk[OUTCOMES_PER_COMMIT];
  while (list) {
    size_t n = 0;
    while (list && n < OUTCOMES_PER_COMMIT) {
      chunk[n] = list;
      outcome_op(&ops[n], list);
      list = list->next;
      n++;
    }
    int rc = tg_store_write(c->out_store, ops, n);
    for (size_t i = 0; rc && i < n; i++) {
      outcome_op(&ops[i], chunk[i]);
      int rc1 = tg_store_write(c->out_store, &ops[i], 1);
      if (!chunk[i]->give_up_ms) chunk[i]->give_up_ms = mono_ms() + OUTCOME_PATIENCE_MS;
      if (rc1 == TG_ENOTFOUND && !last && mono_ms() < chunk[i]->give_up_ms) {
        chunk[i]->next = c->out_later;
        c->out_later = chunk[i];
        chunk[i] = NULL;
      } else if (rc1) {
        char tx[67];
        tg_hex_encode(tx, chunk[i]->tx.b, 32, 1);
        tg_log("exact: the outcome (%s) of transaction %s not recorded: %s",
               tg_store_exact_status_name(chunk[i]->status), tx,
               rc1 == TG_ENOTFOUND ? "its payment is not recorded as submitted (charged)"
                                   : tg_strerror(rc1));
      }
    }
    for (size_t i = 0; i < n; i++) free(chunk[i]);
  }
}

static void *outcome_main(void *arg) {
  tg_chain *c = arg;
  uint64_t later_ms = 0; /* when the deferred ones were last tried */
  pthread_mutex_lock(&c->out_mu);
  for (;;) {
    if (c->out_later && !c->out_stop) {
      struct timespec until;
      clock_gettime(CLOCK_REALTIME, &until);
      until.tv_sec += 1;
      while (!c->out_head && !c->out_stop &&
             pthread_cond_timedwait(&c->out_cv, &c->out_mu, &until) == 0) {
      }
    } else {
      while (!c->out_head && !c->out_stop) pthread_cond_wait(&c->out_cv, &c->out_mu);
    }
    outcome *list = c->out_head;
    c->out_head = NULL;
    c->out_tail = &c->out_head;
    int stop = c->out_stop;
    pthread_mutex_unlock(&c->out_mu);
    /* the deferred ones go again once a second, with the new ones (at shutdown: a last time) */
    if (c->out_later && (stop || mono_ms() - later_ms >= 1000)) {
      later_ms = mono_ms();
      while (c->out_later) {
        outcome *o = c->out_later;
        c->out_later = o->next;
        o->next = list;
        list = o;
      }
    }
    if (list) outcome_write(c, list, stop);
    pthread_mutex_lock(&c->out_mu);
    if (stop && !c->out_head) break; /* everything queued is written */
  }
  pthread_mutex_unlock(&c->out_mu);
  return NULL;
}

int tg_chain_record_exact(tg_chain *c, struct tg_store *store) {
  if (!c || !store || c->out_running) return TG_EINVAL;
  c->out_store = store;
  c->out_stop = 0;
  c->out_head = NULL;
  c->out_tail = &c->out_head;
  if (pthread_create(&c->out_thread, NULL, outcome_main, c) != 0) return TG_ENOMEM;
  pthread_mutex_lock(&c->out_mu);
  c->out_running = 1;
  pthread_mutex_unlock(&c->out_mu);
  return TG_OK;
}

/* Writes what is queued, then stops the writer (after the manager: its last outcomes count). */
static void outcome_stop(tg_chain *c) {
  pthread_mutex_lock(&c->out_mu);
  int running = c->out_running;
  c->out_stop = 1;
  pthread_cond_signal(&c->out_cv);
  pthread_mutex_unlock(&c->out_mu);
  if (running) pthread_join(c->out_thread, NULL);
  c->out_running = 0;
}

static void on_block_number(void *arg, const tg_rpc_reply *r) {
  tg_chain *c = arg;
  c->block_pending = 0;
  uint64_t n;
  if (r->err == 0 && tg_rpc_parse_u64(r->result, &n) == 0) stats_block(c, n);
}

/* Every 500 ms on the chain thread: the manager's figures, and the head when no follower reads it. */
static void on_stats(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  tg_chain *c = arg;
  stats_snap(c, c->loop_rpc, CLIENT_TXM);
  atomic_store(&c->st_in_flight, c->txm ? (uint64_t)tg_txm_pending(c->txm) : 0);
  if (!c->following && !c->block_pending &&
      tg_rpc_call_async(c->loop_rpc, "eth_blockNumber", NULL, on_block_number, c) == 0)
    c->block_pending = 1;
}

static void *chain_main(void *arg) {
  tg_chain *c = arg;
  event_base_loop(c->base, EVLOOP_NO_EXIT_ON_EMPTY);
  return NULL;
}

/* ---- the channel follower ------------------------------------------------------------- */

/*
 * Keeps the ledger's mirror of channels current, so that a payer who starts a
 * timed withdrawal, tops up or is refunded is seen within a poll: every stored
 * channel is re-read at start (what happened while the daemon was down), then
 * every follow_ms the contract's logs since the last block name the channels
 * whose balance or withdrawal changed (Deposited, WithdrawInitiated, Withdrawn,
 * Refunded); each known one is re-read with getChannelState and mirrored into
 * the ledger and the store. Blocking calls on a client of its own, on a thread
 * of its own: admissions and the transaction manager never wait on it.
 */

/* Re-reads one channel at `block` and mirrors it; channels the ledger does not hold are skipped. */
static void follow_sync(tg_chain *c, const tg_hash *id, uint64_t block) {
  tg_ledger_channel lc;
  if (tg_ledger_get(c->ledger, id, &lc) != 0) return;
  uint8_t data[4 + 32];
  memcpy(data, c->sel_state, 4);
  memcpy(data + 4, id->b, 32);
  tg_eth_msg m;
  memset(&m, 0, sizeof m);
  m.to = &c->channels;
  m.data = data;
  m.data_len = sizeof data;
  tg_buf out;
  tg_buf_init(&out, 4096);
  char tag[24];
  snprintf(tag, sizeof tag, "0x%llx", (unsigned long long)block);
  int rc = tg_eth_call(c->follow_rpc, &out, NULL, &m, tag);
  if (!rc && out.len < 5 * 32) rc = TG_EABI_DATA;
  tg_u256 balance, claimed;
  uint64_t withdraw_at = 0, refund_nonce = 0;
  if (!rc) {
    memcpy(balance.b, out.data, 32);
    memcpy(claimed.b, out.data + 32, 32);
    rc = word_u64(out.data + 96, &withdraw_at);
    if (!rc && word_u64(out.data + 128, &refund_nonce) != 0) refund_nonce = UINT64_MAX;
  }
  tg_buf_cleanup(&out);
  if (rc) {
    tg_log("channel follower: reading channel state: %s", tg_strerror(rc));
    return;
  }
  if (tg_ledger_mirror(c->ledger, id, &balance, &claimed, withdraw_at) != 0) return;
  tg_store_op op;
  memset(&op, 0, sizeof op);
  op.kind = TG_STORE_OP_CHANNEL_SYNC;
  op.u.channel.id = *id;
  op.u.channel.chain.balance = balance;
  op.u.channel.chain.total_claimed = claimed;
  op.u.channel.chain.withdraw_requested_at = withdraw_at;
  op.u.channel.chain.refund_nonce = refund_nonce == UINT64_MAX ? 0 : refund_nonce;
  op.u.channel.chain.synced_block = block;
  op.u.channel.chain.status = withdraw_at ? TG_CHANNEL_WITHDRAWING : TG_CHANNEL_OPEN;
  rc = tg_store_write(c->store, &op, 1);
  if (rc) tg_log("channel follower: storing channel state: %s", tg_strerror(rc));
}

typedef struct {
  tg_hash *ids;
  size_t n, cap;
} id_list;

static int collect_id(void *arg, const tg_store_channel *ch) {
  id_list *l = arg;
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 64;
    tg_hash *v = realloc(l->ids, cap * sizeof *v);
    if (!v) abort();
    l->ids = v;
    l->cap = cap;
  }
  l->ids[l->n++] = ch->id;
  return 0;
}

/* The logs of [from, to] naming channels; syncs each channel once. */
static int follow_logs(tg_chain *c, uint64_t from, uint64_t to) {
  char addr[43], fb[24], tb[24], t[4][67];
  tg_hex_encode(addr, c->channels.b, 20, 1);
  snprintf(fb, sizeof fb, "0x%llx", (unsigned long long)from);
  snprintf(tb, sizeof tb, "0x%llx", (unsigned long long)to);
  for (int i = 0; i < 4; i++) tg_hex_encode(t[i], c->topics[i].b, 32, 1);
  json_t *params = json_pack("[{s:s, s:s, s:s, s:[[s,s,s,s]]}]", "address", addr, "fromBlock", fb,
                             "toBlock", tb, "topics", t[0], t[1], t[2], t[3]);
  if (!params) abort();
  tg_rpc_reply r;
  int rc = tg_rpc_call(c->follow_rpc, &r, "eth_getLogs", params);
  if (rc == 0 && !json_is_array(r.result)) rc = TG_ERPC_REPLY;
  id_list seen = {0}, withdrawing = {0};
  for (size_t i = 0; rc == 0 && i < json_array_size(r.result); i++) {
    tg_eth_log log;
    if (tg_rpc_parse_log(json_array_get(r.result, i), &log) != 0) continue;
    if (log.n_topics >= 2 && !log.removed && !memcmp(log.topics[0].b, c->topics[1].b, 32)) {
      tg_store_channel fake;
      fake.id = log.topics[1];
      (void)collect_id(&withdrawing, &fake);
    }
    if (log.n_topics >= 2 && !log.removed) {
      int dup = 0;
      for (size_t k = 0; k < seen.n && !dup; k++) dup = !memcmp(seen.ids[k].b, log.topics[1].b, 32);
      if (!dup) {
        tg_store_channel fake;
        fake.id = log.topics[1];
        (void)collect_id(&seen, &fake);
      }
    }
    tg_eth_log_cleanup(&log);
  }
  tg_rpc_reply_cleanup(&r);
  for (size_t k = 0; k < seen.n; k++) follow_sync(c, &seen.ids[k], to);
  /* after the sync: the store already says `withdrawing` when the watchtower looks */
  for (size_t k = 0; c->on_withdraw && k < withdrawing.n; k++)
    c->on_withdraw(c->on_withdraw_arg, &withdrawing.ids[k]);
  free(seen.ids);
  free(withdrawing.ids);
  return rc;
}

/*
 * The pass contract's logs of [from, to]: any log at all (a transfer,
 * delegation, revocation, purchase, renewal or grant) makes cached
 * entitlements stale, so the pass layer reads them again; then the head's
 * time, so that expiries follow the chain's clock.
 */
static int follow_passes(tg_chain *c, uint64_t from, uint64_t to) {
  char addr[43], fb[24], tb[24];
  tg_hex_encode(addr, c->passes.b, 20, 1);
  snprintf(fb, sizeof fb, "0x%llx", (unsigned long long)from);
  snprintf(tb, sizeof tb, "0x%llx", (unsigned long long)to);
  json_t *params = json_pack("[{s:s, s:s, s:s}]", "address", addr, "fromBlock", fb, "toBlock", tb);
  if (!params) abort();
  tg_rpc_reply r;
  int rc = tg_rpc_call(c->follow_rpc, &r, "eth_getLogs", params);
  if (rc == 0 && !json_is_array(r.result)) rc = TG_ERPC_REPLY;
  int any = rc == 0 && json_array_size(r.result) > 0;
  tg_rpc_reply_cleanup(&r);
  if (any && c->pass_hooks.changed) c->pass_hooks.changed(c->pass_hooks.arg);
  tg_eth_block b;
  if (c->pass_hooks.head_time && tg_eth_get_block(c->follow_rpc, &b, NULL) == 0) {
    c->pass_hooks.head_time(c->pass_hooks.arg, b.timestamp);
    tg_eth_block_cleanup(&b);
  }
  return rc;
}

void tg_chain_on_passes(tg_chain *c, const tg_chain_pass_hooks *h) { c->pass_hooks = *h; }

void tg_chain_on_exact_done(tg_chain *c, void (*fn)(void *arg, const tg_address *from, const tg_hash *nonce),
                            void *arg) {
  pthread_mutex_lock(&c->done_mu);
  c->exact_done = fn;
  c->exact_done_arg = arg;
  pthread_mutex_unlock(&c->done_mu);
}

static void *follow_main(void *arg) {
  tg_chain *c = arg;
  uint64_t next = 0;
  int started = 0;
  pthread_mutex_lock(&c->follow_mu);
  while (!c->follow_stop) {
    pthread_mutex_unlock(&c->follow_mu);
    uint64_t head;
    int hrc = tg_eth_block_number(c->follow_rpc, &head);
    if (hrc == 0) stats_block(c, head);
    if (hrc == 0) {
      if (!started) {
        /* Everything stored, as of now; the logs are followed from the next block. */
        id_list all = {0};
        if (tg_store_channels_list(c->store, NULL, collect_id, &all) == 0) {
          for (size_t k = 0; k < all.n; k++) follow_sync(c, &all.ids[k], head);
          started = 1;
          next = head + 1;
          c->pass_next = head + 1;
          /* whatever happened while the daemon was down: nothing is cached yet */
        }
        free(all.ids);
      } else {
        if (head >= next) {
          uint64_t to = head - next > 1999 ? next + 1999 : head; /* node log-range limits */
          if (follow_logs(c, next, to) == 0) next = to + 1;
        }
        if (!tg_address_is_zero(&c->passes) && c->pass_hooks.changed && head >= c->pass_next) {
          uint64_t to = head - c->pass_next > 1999 ? c->pass_next + 1999 : head;
          if (follow_passes(c, c->pass_next, to) == 0) c->pass_next = to + 1;
        }
      }
    }
    stats_snap(c, c->follow_rpc, CLIENT_FOLLOW);
    pthread_mutex_lock(&c->follow_mu);
    if (c->follow_stop) break;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += c->follow_ms / 1000;
    ts.tv_nsec += (long)(c->follow_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&c->follow_cv, &c->follow_mu, &ts);
  }
  pthread_mutex_unlock(&c->follow_mu);
  return NULL;
}

void tg_chain_on_withdraw(tg_chain *c, tg_chain_withdraw_fn fn, void *arg) {
  c->on_withdraw = fn;
  c->on_withdraw_arg = arg;
}

int tg_chain_follow(tg_chain *c, tg_ledger *ledger, tg_store *store, unsigned interval_ms) {
  if (c->following) return TG_EINVAL;
  c->ledger = ledger;
  c->store = store;
  c->follow_ms = interval_ms ? interval_ms : 1000;
  if (pthread_create(&c->follow_thread, NULL, follow_main, c) != 0) abort();
  c->following = 1;
  return TG_OK;
}

/* ---- settlement on the chain thread's manager ------------------------------------------- */

/*
 * tg_settle_run blocks (reads, estimates, the journal of its items) on the scheduler's
 * thread; only what touches the transaction manager comes here, so that claims, sweeps and
 * `exact` transfers take their nonces from one sequence. Each call waits for one turn of
 * the chain loop.
 */
static int settle_dispatch(tg_chain *c, scall *s) {
  pthread_mutex_lock(&c->q_mu);
  if (c->closing || c->settle_cancel || !c->txm) {
    pthread_mutex_unlock(&c->q_mu);
    return TG_ECANCELED;
  }
  s->next = c->calls;
  c->calls = s;
  pthread_mutex_unlock(&c->q_mu);
  event_active(c->wake, EV_READ, 0);
  pthread_mutex_lock(&c->q_mu);
  while (!s->done) pthread_cond_wait(&c->call_cv, &c->q_mu);
  pthread_mutex_unlock(&c->q_mu);
  return s->rc;
}

static int sender_submit(void *ctx, const tg_txm_request *req, uint64_t *id) {
  scall s;
  memset(&s, 0, sizeof s);
  s.kind = SC_SUBMIT;
  s.req = req;
  int rc = settle_dispatch(ctx, &s);
  if (id) *id = s.id;
  return rc;
}

static int sender_get(void *ctx, uint64_t id, tg_txm_result *out) {
  scall s;
  memset(&s, 0, sizeof s);
  s.kind = SC_GET;
  s.id = id;
  int rc = settle_dispatch(ctx, &s);
  *out = s.res;
  return rc;
}

static int sender_wait(void *ctx, unsigned timeout_ms) {
  struct timespec t0, now;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (;;) {
    scall s;
    memset(&s, 0, sizeof s);
    s.kind = SC_IDLE;
    int rc = settle_dispatch(ctx, &s);
    if (rc || s.busy == 0) return rc;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t ms = (int64_t)(now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000;
    if (ms >= (int64_t)timeout_ms) return TG_ETIMEOUT;
    struct timespec d = {0, 50 * 1000000L}; /* the manager polls the node far less often */
    nanosleep(&d, NULL);
  }
}

tg_settle_sender tg_chain_settle_sender(tg_chain *c) {
  return (tg_settle_sender){c, sender_submit, sender_get, sender_wait};
}

void tg_chain_settle_cancel(tg_chain *c) {
  if (!c) return;
  pthread_mutex_lock(&c->q_mu);
  c->settle_cancel = 1;
  pthread_mutex_unlock(&c->q_mu);
}

/* ---- lifecycle ----------------------------------------------------------------------- */

int tg_chain_new(tg_chain **out, char *err, size_t err_len, const tg_chain_opts *o) {
  *out = NULL;
  tg_chain *c = calloc(1, sizeof *c);
  if (!c) abort();
  pthread_mutex_init(&c->read_mu, NULL);
  pthread_mutex_init(&c->q_mu, NULL);
  pthread_mutex_init(&c->done_mu, NULL);
  pthread_mutex_init(&c->follow_mu, NULL);
  pthread_cond_init(&c->follow_cv, NULL);
  pthread_cond_init(&c->call_cv, NULL);
  pthread_mutex_init(&c->out_mu, NULL);
  pthread_cond_init(&c->out_cv, NULL);
  c->out_tail = &c->out_head;
  static const char *const events[4] = {
      "Deposited(bytes32,address,uint128,uint128)",
      "WithdrawInitiated(bytes32,address,uint128,uint40)",
      "Withdrawn(bytes32,address,uint128,uint128)",
      "Refunded(bytes32,address,uint128,uint256,uint128,uint128)",
  };
  for (int i = 0; i < 4; i++) tg_keccak256(&c->topics[i], events[i], strlen(events[i]));
  static const char auth_used[] = "AuthorizationUsed(address,bytes32)";
  tg_keccak256(&c->topic_auth_used, auth_used, sizeof auth_used - 1);
  c->channels = o->channels;
  c->passes = o->passes;
  c->wait_receipt = o->wait_receipt;
  int rc = tg_abi_selector_str(c->sel_state, "getChannelState(bytes32)", 24);
  if (!rc) rc = tg_abi_selector_str(c->sel_auth_state, "authorizationState(address,bytes32)", 35);
  if (!rc) rc = tg_abi_selector_str(c->sel_balance, "balanceOf(address)", 18);
  if (!rc) rc = tg_abi_selector_str(c->sel_entitled, "entitled(address,uint256)", 25);
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
  if (!rc) rc = tg_rpc_new(&c->follow_rpc, &ro, err, err_len);
  /*
   * Workers wake this loop with event_active() and the chain thread answers on their loops:
   * libevent's locking and cross-thread notification must be on before any base exists
   * (without it the loop sees a submission only at its next timer, up to poll_ms later).
   */
  if (evthread_use_pthreads() != 0) abort();
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
    to.on_resumed = on_resumed_final;
    to.on_resumed_arg = c;
    rc = tg_txm_open(&c->txm, &to);
    if (rc == TG_EBUSY)
      snprintf(err, err_len, "transaction journal %s is in use by another live process (another "
               "tollgated, or a `tollgate settle` run, with this store and key): stop it first",
               o->journal_path);
    else if (rc)
      snprintf(err, err_len, "transaction manager (journal %s): %s", o->journal_path, tg_strerror(rc));
    else
    {
      c->resumed = tg_txm_pending(c->txm); /* all pending at open were resumed */
      c->resumed_done = 0;
    }
  }
  if (rc) {
    tg_chain_free(c);
    return rc;
  }
  c->wake = event_new(c->base, -1, 0, on_wake, c);
  c->stats_ev = event_new(c->base, -1, EV_PERSIST, on_stats, c);
  if (!c->wake || !c->stats_ev) abort();
  struct timeval half = {0, 500000};
  event_add(c->stats_ev, &half);
  if (pthread_create(&c->thread, NULL, chain_main, c) != 0) abort();
  c->running = 1;
  *out = c;
  return TG_OK;
}

void tg_chain_follow_stop(tg_chain *c) {
  if (!c || !c->following) return;
  pthread_mutex_lock(&c->follow_mu);
  c->follow_stop = 1;
  pthread_cond_signal(&c->follow_cv);
  pthread_mutex_unlock(&c->follow_mu);
  pthread_join(c->follow_thread, NULL);
  c->following = 0;
}

void tg_chain_free(tg_chain *c) {
  if (!c) return;
  tg_chain_follow_stop(c);
  tg_rpc_free(c->follow_rpc);
  /* settlement calls still waiting (none when the scheduler was stopped first) */
  pthread_mutex_lock(&c->q_mu);
  c->closing = 1;
  for (scall *s = c->calls; s; s = s->next) {
    s->rc = TG_ECANCELED;
    s->done = 1;
  }
  c->calls = NULL;
  pthread_cond_broadcast(&c->call_cv);
  pthread_mutex_unlock(&c->q_mu);
  if (c->running) {
    event_base_loopbreak(c->base);
    pthread_join(c->thread, NULL);
  }
  tg_txm_free(c->txm);
  outcome_stop(c);
  if (c->wake) event_free(c->wake);
  if (c->stats_ev) event_free(c->stats_ev);
  tg_rpc_free(c->loop_rpc);
  tg_rpc_free(c->reads);
  if (c->base) event_base_free(c->base);
  while (c->queue) {
    job *n = c->queue->next;
    free(c->queue);
    c->queue = n;
  }
  while (c->held) { /* never handed to the manager: nothing was sent */
    job *n = c->held->next;
    free(c->held);
    c->held = n;
  }
  while (c->rqueue) {
    rjob *n = c->rqueue->next;
    free(c->rqueue);
    c->rqueue = n;
  }
  pthread_mutex_destroy(&c->read_mu);
  pthread_mutex_destroy(&c->q_mu);
  pthread_mutex_destroy(&c->done_mu);
  pthread_mutex_destroy(&c->follow_mu);
  pthread_cond_destroy(&c->follow_cv);
  pthread_cond_destroy(&c->call_cv);
  pthread_mutex_destroy(&c->out_mu);
  pthread_cond_destroy(&c->out_cv);
  free(c->settle_ids);
  free(c);
}

tg_pay_chain tg_chain_pay_reader(tg_chain *c) {
  return (tg_pay_chain){c, channel_state, erc1271};
}

tg_pay_exact_backend tg_chain_exact_backend(tg_chain *c) {
  return (tg_pay_exact_backend){.ctx = c,
                                .check = exact_check,
                                .submit = exact_submit,
                                .deposit = deposit_submit,
                                .refund = refund_submit,
                                .check_async = exact_check_async};
}
