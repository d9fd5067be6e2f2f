/* Settlement runs: reconcile channels with the chain, plan claim batches under a policy, send them through the transaction manager, journal every step, sweep. */
#include "tollgate/settle.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "store/store.h"
#include "tollgate/abi.h"
#include "tollgate/address.h"
#include "tollgate/channel.h"
#include "tollgate/error.h"
#include "tollgate/hex.h"
#include "tollgate/keccak.h"
#include "tollgate/txm.h"
#include "tollgate/u256.h"

#define RPC_BATCH 500            /* eth_call per JSON-RPC batch */
#define ITEM_OPS 256             /* ops per store submission (TG_STORE_SUBMIT_MAX_OPS) */
#define LEASE_NAME "settlement"

/* Item states in memory. */
enum { C_NONE = 0, C_WAIT, C_PLANNED, C_PROBLEM };

typedef struct {
  tg_hash id;
  tg_store_channel_config cfg;
  tg_u256 charged, ceiling, mirror_claimed;
  uint8_t *sig;
  size_t sig_len;
  int64_t first_unclaimed_at;
  /* chain */
  int have_state;
  tg_u256 balance, claimed0, claimed; /* claimed0: at the start; claimed: latest read */
  tg_u256 withdraw_amount;
  uint64_t withdraw_at, refund_nonce;
  /* the same at the latest block, for planning: a channel opened or topped up within the
   * confirmation depth must not look empty (the fields above are at the confirmed depth, and
   * only they move the store) */
  int have_latest;
  tg_u256 l_balance, l_claimed;
  uint64_t l_withdraw_at;
  /* plan */
  int state;
  tg_u256 target;
  int64_t through;
  int batch;          /* index into batches, -1 none */
  int step;           /* last journaled step */
  tg_u256 item_amount; /* the resumed run's item */
  int64_t item_through;
  int skip_reason;
  int err;
  char why[128];
} chan;

typedef struct {
  size_t first, count;   /* into the sorted planned index */
  tg_address receiver, authorizer, token;
  uint64_t gas_estimate;
  uint64_t txm_id;
  int submitted;
  int step;               /* journaled step of its items */
  tg_txm_result res;
  int done;
} batch;

typedef struct {
  const tg_settle_opts *o;
  tg_settle_report *rep;
  tg_store *st;
  tg_rpc *rpc;
  tg_txm *txm;               /* our own manager (no shared sender) */
  tg_settle_sender snd;      /* where transactions go: `txm` or the caller's */
  tg_address gw;
  const tg_address *contract;
  tg_hash domain;
  uint8_t sel_state[4], sel_claim[4], sel_sweep[4], sel_unswept[4];
  tg_hash topic_skipped;
  chan *ch;
  size_t n, cap;
  size_t n_sorted;     /* ch[0 .. n_sorted) is sorted by id */
  size_t *planned;     /* indexes into ch, sorted by group */
  size_t n_planned;
  batch *b;
  size_t nb;
  int64_t run_id;
  uint64_t head, read_block, block_gas_limit;
  tg_u256 base_fee;
  int64_t now;
  struct timespec t0;
  char holder[TG_STORE_NAME_MAX + 1];
  int leased;          /* we hold the settlement lease: released when the run returns */
} run;

static const tg_settle_policy *pol(const run *r) { return &r->o->policy; }

void tg_settle_policy_init(tg_settle_policy *p) {
  memset(p, 0, sizeof *p);
  p->confirmations = 1;
  p->max_batch = 1000;
  p->verify_vouchers = 1;
}

void tg_settle_opts_init(tg_settle_opts *o) {
  memset(o, 0, sizeof *o);
  tg_settle_policy_init(&o->policy);
  o->timeout_ms = 600000;
}

void tg_settle_report_cleanup(tg_settle_report *r) {
  if (!r) return;
  free(r->txs);
  free(r->problems);
  memset(r, 0, sizeof *r);
}

const char *tg_settle_skip_name(int reason) {
  switch (reason) {
  case 1: return "above ceiling";
  case 2: return "no balance";
  case 3: return "not increasing";
  case 4: return "invalid signature";
  default: return "unknown";
  }
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t elapsed_ms(const run *r) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)(ts.tv_sec - r->t0.tv_sec) * 1000u +
         (uint64_t)((ts.tv_nsec - r->t0.tv_nsec) / 1000000);
}

static void progress(run *r, tg_settle_phase ph, size_t done, size_t total) {
  if (r->o->progress) r->o->progress(r->o->progress_arg, ph, done, total);
}

static int add_tx(run *r, const tg_settle_tx *t) {
  tg_settle_tx *n = realloc(r->rep->txs, (r->rep->n_txs + 1) * sizeof *n);
  if (!n) return TG_ENOMEM;
  r->rep->txs = n;
  n[r->rep->n_txs++] = *t;
  return 0;
}

/* Why a transaction of the run did not succeed: the error's name and the node's own text. */
static void tx_error(tg_settle_tx *t, const tg_txm_result *res, int done) {
  if (!done)
    snprintf(t->error, sizeof t->error, "not final when the run ended%s%s",
             res->message[0] ? "; the node last said: " : "", res->message);
  else if (res->state == TG_TXM_CONFIRMED && res->status == 0)
    snprintf(t->error, sizeof t->error, "reverted");
  else if (res->state == TG_TXM_FAILED)
    snprintf(t->error, sizeof t->error, "%s%s%s", tg_strerror(res->err ? res->err : TG_ETXM_FAILED),
             res->message[0] ? ": " : "", res->message);
}

static int add_problem(run *r, const chan *c) {
  tg_settle_problem *n = realloc(r->rep->problems, (r->rep->n_problems + 1) * sizeof *n);
  if (!n) return TG_ENOMEM;
  r->rep->problems = n;
  tg_settle_problem *p = &n[r->rep->n_problems++];
  memset(p, 0, sizeof *p);
  p->channel_id = c->id;
  p->skip_reason = c->skip_reason;
  p->err = c->err;
  memcpy(p->why, c->why, sizeof p->why);
  return 0;
}

static void u256_add_sat(tg_u256 *acc, const tg_u256 *v) {
  if (tg_u256_add(acc, acc, v) != 0) memset(acc->b, 0xff, 32);
}

static void u256_mul_u64_sat(tg_u256 *out, const tg_u256 *a, uint64_t b) {
  if (tg_u256_mul_u64(out, a, b) != 0) memset(out->b, 0xff, 32);
}

int tg_settle_near_balance(const tg_u256 *charged, const tg_u256 *claimed, const tg_u256 *balance,
                           unsigned pct) {
  if (pct == 0 || tg_u256_cmp(charged, claimed) <= 0) return 0;
  if (tg_u256_cmp(balance, claimed) <= 0) return 1;
  tg_u256 owed, room, a, b;
  if (tg_u256_sub(&owed, charged, claimed) != 0 || tg_u256_sub(&room, balance, claimed) != 0) return 0;
  u256_mul_u64_sat(&a, &owed, 100);
  u256_mul_u64_sat(&b, &room, pct);
  return tg_u256_cmp(&a, &b) > 0;
}

static int u256_fits128(const tg_u256 *v) {
  for (int i = 0; i < 16; i++)
    if (v->b[i]) return 0;
  return 1;
}

/* ------------------------------------------- the run's own transaction manager */

static int own_submit(void *ctx, const tg_txm_request *req, uint64_t *id) {
  return tg_txm_submit(((run *)ctx)->txm, req, NULL, NULL, id);
}

static int own_get(void *ctx, uint64_t id, tg_txm_result *out) {
  return tg_txm_get(((run *)ctx)->txm, id, out);
}

static int own_wait(void *ctx, unsigned timeout_ms) {
  return tg_txm_run_until_idle(((run *)ctx)->txm, timeout_ms);
}

/* -------------------------------------------------------------- loading */

static int load_cb(void *arg, const tg_store_channel *sc) {
  run *r = arg;
  if (sc->cfg.chain_id != r->o->deployment->chain_id ||
      !tg_address_eq(&sc->cfg.contract, r->contract))
    return 0; /* another deployment's channel */
  if (r->n == r->cap) {
    size_t nc = r->cap ? r->cap * 2 : 256;
    chan *n = realloc(r->ch, nc * sizeof *n);
    if (!n) return TG_ENOMEM;
    r->ch = n;
    r->cap = nc;
  }
  chan *c = &r->ch[r->n];
  memset(c, 0, sizeof *c);
  c->id = sc->id;
  c->cfg = sc->cfg;
  c->charged = sc->charged;
  c->ceiling = sc->ceiling;
  c->mirror_claimed = sc->chain.total_claimed;
  c->first_unclaimed_at = sc->first_unclaimed_at;
  c->batch = -1;
  c->step = -1;
  if (sc->ceiling_sig_len) {
    c->sig = malloc(sc->ceiling_sig_len);
    if (!c->sig) return TG_ENOMEM;
    memcpy(c->sig, sc->ceiling_sig, sc->ceiling_sig_len);
    c->sig_len = sc->ceiling_sig_len;
  }
  r->n++;
  return 0;
}

/* Adds a channel named by an open run's item when it is not loaded yet (it may already be
 * settled in the store's view but still needs its sweep). */
typedef struct {
  run *r;
  int err;
} item_ctx;


static chan *find_chan(run *r, const tg_hash *id) {
  /* ch is sorted by id after load (see sort_by_id) */
  size_t lo = 0, hi = r->n_sorted;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    int c = memcmp(r->ch[mid].id.b, id->b, 32);
    if (!c) return &r->ch[mid];
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  return NULL;
}

static int cmp_chan_id(const void *a, const void *b) {
  return memcmp(((const chan *)a)->id.b, ((const chan *)b)->id.b, 32);
}

static int run_item_cb(void *arg, const tg_store_settle_item *it) {
  item_ctx *x = arg;
  run *r = x->r;
  chan *c = find_chan(r, &it->channel_id);
  if (c) {
    c->step = (int)it->step;
    c->item_amount = it->amount;
    c->item_through = it->through_charge;
    return 0;
  }
  /* Not unsettled any more: load it for its sweep group only (it is appended unsorted and
   * re-sorted by the caller). */
  tg_store_channel sc;
  int rc = tg_store_channel_get(r->st, &it->channel_id, &sc);
  if (rc == TG_ENOTFOUND) return 0;
  if (rc) return rc;
  size_t before = r->n;
  rc = load_cb(r, &sc);
  if (!rc && r->n > before) {
    chan *n = &r->ch[r->n - 1];
    n->step = (int)it->step;
    n->item_amount = it->amount;
    n->item_through = it->through_charge;
  }
  return rc;
}

/* ------------------------------------------------------------- chain reads */

static json_t *call_params(run *r, const uint8_t *data, size_t len, const char *block) {
  tg_eth_msg m = {0};
  m.to = r->contract;
  m.data = data;
  m.data_len = len;
  json_t *p = json_array();
  json_array_append_new(p, tg_eth_msg_json(&m));
  json_array_append_new(p, tg_rpc_json_block(block));
  return p;
}

static int parse_state(chan *c, const json_t *res, int latest) {
  tg_buf b;
  tg_buf_init(&b, 4096);
  int rc = tg_rpc_parse_data(res, &b);
  if (!rc && b.len != 160) rc = TG_EABI_DATA;
  if (!rc) {
    const uint8_t *p = b.data;
    memcpy(c->balance.b, p, 32);
    memcpy(c->claimed.b, p + 32, 32);
    memcpy(c->withdraw_amount.b, p + 64, 32);
    tg_u256 t;
    memcpy(t.b, p + 96, 32);
    if (tg_u256_to_u64(&t, &c->withdraw_at) != 0) rc = TG_EABI_DATA;
    memcpy(t.b, p + 128, 32);
    if (!rc && tg_u256_to_u64(&t, &c->refund_nonce) != 0) c->refund_nonce = UINT64_MAX;
    if (!u256_fits128(&c->balance) || !u256_fits128(&c->claimed)) rc = TG_EABI_DATA;
  }
  if (!rc && latest) {
    /* parse_state wrote the confirmed fields: move them to the latest ones, restore those */
    c->l_balance = c->balance;
    c->l_claimed = c->claimed;
    c->l_withdraw_at = c->withdraw_at;
  }
  tg_buf_cleanup(&b);
  return rc;
}

/* Reads getChannelState for every channel with `only_planned` filter, at r->read_block. */
static int read_states(run *r, int only_planned, tg_settle_phase ph, int latest) {
  char tag[24];
  tg_rpc_block_tag(tag, latest ? r->head : r->read_block);
  size_t total = 0, done = 0;
  for (size_t i = 0; i < r->n; i++)
    if (!only_planned || r->ch[i].state == C_PLANNED) total++;
  size_t i = 0;
  while (i < r->n) {
    tg_rpc_batch *b = tg_rpc_batch_new();
    if (!b) return TG_ENOMEM;
    size_t idx[RPC_BATCH];
    size_t k = 0;
    int rc = 0;
    for (; i < r->n && k < RPC_BATCH; i++) {
      if (only_planned && r->ch[i].state != C_PLANNED) continue;
      uint8_t data[36];
      memcpy(data, r->sel_state, 4);
      memcpy(data + 4, r->ch[i].id.b, 32);
      int bi = tg_rpc_batch_add(b, "eth_call", call_params(r, data, sizeof data, tag));
      if (bi < 0) {
        rc = bi;
        break;
      }
      idx[k++] = i;
    }
    if (!rc && k) rc = tg_rpc_batch_run(r->rpc, b);
    for (size_t j = 0; !rc && j < k; j++) {
      const tg_rpc_reply *rep = tg_rpc_batch_reply(b, j);
      if (!rep) rc = TG_ERPC_REPLY;
      else if (rep->err) rc = rep->err;
      else {
        chan *c = &r->ch[idx[j]];
        chan saved = *c;
        rc = parse_state(c, rep->result, latest);
        if (latest) {
          /* keep the confirmed fields as they were */
          c->balance = saved.balance;
          c->claimed = saved.claimed;
          c->withdraw_amount = saved.withdraw_amount;
          c->withdraw_at = saved.withdraw_at;
          c->refund_nonce = saved.refund_nonce;
        }
      }
      if (!rc) {
        if (latest) r->ch[idx[j]].have_latest = 1;
        else r->ch[idx[j]].have_state = 1;
      }
    }
    tg_rpc_batch_free(b);
    if (rc) return rc;
    done += k;
    progress(r, ph, done, total);
  }
  return 0;
}

static int read_head(run *r) {
  tg_eth_block blk;
  int rc = tg_eth_get_block(r->rpc, &blk, NULL);
  if (rc) return rc;
  r->head = blk.number;
  r->block_gas_limit = blk.gas_limit;
  if (blk.has_base_fee) r->base_fee = blk.base_fee;
  else tg_u256_zero(&r->base_fee);
  tg_eth_block_cleanup(&blk);
  unsigned conf = pol(r)->confirmations ? pol(r)->confirmations : 1;
  r->read_block = r->head + 1 >= conf ? r->head + 1 - conf : 0;
  return 0;
}

/* -------------------------------------------------------------- store */

/* The last charge id whose cumulative total is within `amount` (0 when none). */
typedef struct {
  const tg_u256 *amount;
  int64_t last;
} through_ctx;

static int through_cb(void *arg, const tg_store_charge *c) {
  through_ctx *t = arg;
  if (tg_u256_cmp(&c->cumulative_after, t->amount) > 0) return 1;
  t->last = c->id;
  return 0;
}

static int through_for(run *r, const chan *c, const tg_u256 *amount, int64_t *out) {
  through_ctx t = {amount, 0};
  int rc = tg_store_charges_by_channel(r->st, &c->id, 0, 0, through_cb, &t);
  if (rc < 0) return rc;
  *out = t.last;
  return 0;
}

/* A bounded list of ops written in submissions of ITEM_OPS. */
typedef struct {
  tg_store_op ops[ITEM_OPS];
  size_t n;
  run *r;
} opq;

static int opq_flush(opq *q) {
  if (!q->n) return 0;
  int rc = tg_store_write(q->r->st, q->ops, q->n);
  q->n = 0;
  return rc;
}

static int opq_room(opq *q, size_t k) {
  if (q->n + k > ITEM_OPS) return opq_flush(q);
  return 0;
}

static void item_op(opq *q, const chan *c, int step, const tg_hash *tx, const char *err) {
  tg_store_op *op = &q->ops[q->n++];
  memset(op, 0, sizeof *op);
  op->kind = TG_STORE_OP_ITEM_PUT;
  op->u.item.run_id = q->r->run_id;
  op->u.item.channel_id = c->id;
  op->u.item.amount = c->target;
  op->u.item.through_charge = c->through;
  op->u.item.step = (tg_store_settle_step)step;
  if (tx) {
    op->u.item.has_tx = 1;
    op->u.item.tx_hash = *tx;
  }
  op->u.item.error = err;
}

/* CHANNEL_SYNC of c's chain state, and CHARGES_SETTLE of what the on-chain total covers. */
static int sync_ops(opq *q, chan *c) {
  run *r = q->r;
  int64_t through = 0;
  int rc = through_for(r, c, &c->claimed, &through);
  if (rc) return rc;
  if ((rc = opq_room(q, 3)) != 0) return rc;
  tg_store_op *op = &q->ops[q->n++];
  memset(op, 0, sizeof *op);
  op->kind = TG_STORE_OP_CHANNEL_SYNC;
  op->u.channel.id = c->id;
  op->u.channel.chain.balance = c->balance;
  op->u.channel.chain.total_claimed = c->claimed;
  op->u.channel.chain.withdraw_requested_at = c->withdraw_at;
  op->u.channel.chain.refund_nonce = c->refund_nonce;
  op->u.channel.chain.synced_block = r->read_block;
  op->u.channel.chain.status = c->withdraw_at ? TG_CHANNEL_WITHDRAWING : TG_CHANNEL_OPEN;
  if (through > 0) {
    op = &q->ops[q->n++];
    memset(op, 0, sizeof *op);
    op->kind = TG_STORE_OP_CHARGES_SETTLE;
    op->u.settle.channel_id = c->id;
    op->u.settle.through_charge = through;
  }
  c->mirror_claimed = c->claimed;
  return 0;
}

/* ------------------------------------------------------------------ plan */

static void problem(chan *c, int err, int skip, const char *why) {
  c->state = C_PROBLEM;
  c->err = err;
  c->skip_reason = skip;
  snprintf(c->why, sizeof c->why, "%s", why);
}

static int plan_one(run *r, chan *c, int gas_dear) {
  const tg_settle_policy *p = pol(r);
  if (!c->have_state || !c->have_latest) return 0;
  if (tg_u256_cmp(&c->charged, &c->l_claimed) <= 0) return 0; /* nothing owed */
  tg_u256 t = c->charged;
  if (tg_u256_cmp(&t, &c->ceiling) > 0) t = c->ceiling;
  if (tg_u256_cmp(&t, &c->l_balance) > 0) t = c->l_balance;
  c->target = t;
  if (tg_u256_cmp(&t, &c->l_claimed) <= 0) {
    if (!c->sig_len) problem(c, TG_ESETTLE, 0, "no voucher recorded");
    else if (tg_u256_cmp(&c->ceiling, &c->l_claimed) <= 0)
      problem(c, TG_ESETTLE, 0, "charged above the signed ceiling (credit not covered by a voucher)");
    else problem(c, TG_ESETTLE, 0, "channel balance does not cover the charges");
    return 0;
  }
  if (!u256_fits128(&t) || !u256_fits128(&c->ceiling)) {
    problem(c, TG_EOVERFLOW, 0, "amount does not fit uint128");
    return 0;
  }
  int deadline = c->l_withdraw_at != 0;
  tg_u256 inc;
  if (tg_u256_sub(&inc, &t, &c->l_claimed) != 0) return TG_EINTERNAL;
  int due = deadline || tg_u256_cmp(&inc, &p->min_amount) >= 0 ||
            tg_settle_near_balance(&c->charged, &c->l_claimed, &c->l_balance, p->near_balance_pct) ||
            (p->max_age_ms > 0 && c->first_unclaimed_at > 0 &&
             r->now - c->first_unclaimed_at >= p->max_age_ms);
  if (!due || (gas_dear && !deadline)) {
    c->state = C_WAIT;
    return 0;
  }
  if (!tg_address_eq(&r->gw, &c->cfg.receiver) &&
      (tg_address_is_zero(&c->cfg.receiver_authorizer) ||
       !tg_address_eq(&r->gw, &c->cfg.receiver_authorizer))) {
    problem(c, TG_ESETTLE_NOT_RECEIVER, 0, "gateway key is neither receiver nor receiver authorizer");
    return 0;
  }
  if (p->verify_vouchers && c->sig_len == 65) {
    tg_x402_sig s;
    memcpy(s.b, c->sig, 65);
    s.len = 65;
    tg_channel_config cc;
    memset(&cc, 0, sizeof cc);
    cc.payer = c->cfg.payer;
    cc.payer_authorizer = c->cfg.payer_authorizer;
    tg_address signer;
    tg_channel_voucher_signer(&signer, &cc);
    int vr = tg_channel_voucher_check(&r->domain, &c->id, &c->ceiling, &s, &signer);
    if (vr) {
      problem(c, vr, 4, "invalid voucher signature (checked before sending)");
      return 0;
    }
  }
  int rc = through_for(r, c, &t, &c->through);
  if (rc) return rc;
  c->state = C_PLANNED;
  return 0;
}

static run *g_sort_run; /* qsort has no context argument; runs are not concurrent per thread */

static int cmp_group(const void *a, const void *b) {
  const chan *x = &g_sort_run->ch[*(const size_t *)a], *y = &g_sort_run->ch[*(const size_t *)b];
  int c = memcmp(x->cfg.receiver.b, y->cfg.receiver.b, 20);
  if (!c) c = memcmp(x->cfg.receiver_authorizer.b, y->cfg.receiver_authorizer.b, 20);
  if (!c) c = memcmp(x->cfg.token.b, y->cfg.token.b, 20);
  if (!c) c = memcmp(x->id.b, y->id.b, 32);
  return c;
}

static int same_group(const chan *x, const chan *y) {
  return tg_address_eq(&x->cfg.receiver, &y->cfg.receiver) &&
         tg_address_eq(&x->cfg.receiver_authorizer, &y->cfg.receiver_authorizer) &&
         tg_address_eq(&x->cfg.token, &y->cfg.token);
}

/* ---------------------------------------------------------------- claims */

static int put_word_addr(tg_buf *b, const tg_address *a) {
  uint8_t w[32];
  tg_abi_put_address(w, a);
  return tg_buf_append(b, w, 32);
}

/* claimPacked(group, data) calldata for planned[first .. first+count). */
static int build_claim(run *r, tg_buf *out, size_t first, size_t count) {
  tg_buf_reset(out);
  const chan *g = &r->ch[r->planned[first]];
  tg_buf data;
  tg_buf_init(&data, (size_t)64 << 20);
  int rc = 0;
  for (size_t k = 0; !rc && k < count; k++) {
    const chan *c = &r->ch[r->planned[first + k]];
    uint8_t rec[1 + 20 + 20 + 3 + 32 + 16 + 16 + 2];
    size_t n = 0;
    int has_pa = !tg_address_is_zero(&c->cfg.payer_authorizer);
    int has_salt = 0;
    for (int i = 0; i < 32; i++) has_salt |= c->cfg.salt.b[i];
    int compact = c->sig_len == 65 && (c->sig[64] == 27 || c->sig[64] == 28 || c->sig[64] <= 1);
    /* both amounts big-endian in the bytes the larger one needs (1..16; ceiling >= target) */
    size_t width = 16;
    while (width > 1 && !c->ceiling.b[32 - width] && !c->target.b[32 - width]) width--;
    uint8_t flags = (uint8_t)((width - 1) << 3);
    if (has_pa) flags |= 1;
    if (has_salt) flags |= 2;
    if (!compact) flags |= 4;
    rec[n++] = flags;
    memcpy(rec + n, c->cfg.payer.b, 20);
    n += 20;
    if (has_pa) {
      memcpy(rec + n, c->cfg.payer_authorizer.b, 20);
      n += 20;
    }
    /* 3 bytes: a channel's delay is at most 30 days (2,592,000 s < 2^24) */
    uint64_t wd = c->cfg.withdraw_delay;
    if (wd > 0xffffff) {
      rc = TG_EOVERFLOW;
      break;
    }
    for (int i = 2; i >= 0; i--) rec[n++] = (uint8_t)(wd >> (8 * i));
    if (has_salt) {
      memcpy(rec + n, c->cfg.salt.b, 32);
      n += 32;
    }
    memcpy(rec + n, c->ceiling.b + 32 - width, width);
    n += width;
    memcpy(rec + n, c->target.b + 32 - width, width);
    n += width;
    if (compact) {
      /* EIP-2098: r || (s with the y parity in its top bit) */
      uint8_t cs[64];
      memcpy(cs, c->sig, 64);
      int v = c->sig[64] >= 27 ? c->sig[64] - 27 : c->sig[64];
      if (v) cs[32] |= 0x80;
      rc = tg_buf_append(&data, rec, n);
      if (!rc) rc = tg_buf_append(&data, cs, 64);
    } else {
      if (c->sig_len > 0xffff) {
        rc = TG_ETOOBIG;
        break;
      }
      rec[n++] = (uint8_t)(c->sig_len >> 8);
      rec[n++] = (uint8_t)c->sig_len;
      rc = tg_buf_append(&data, rec, n);
      if (!rc) rc = tg_buf_append(&data, c->sig, c->sig_len);
    }
  }
  if (!rc) rc = tg_buf_append(out, r->sel_claim, 4);
  if (!rc) rc = put_word_addr(out, &g->cfg.receiver);
  if (!rc) rc = put_word_addr(out, &g->cfg.receiver_authorizer);
  if (!rc) rc = put_word_addr(out, &g->cfg.token);
  uint8_t w[32];
  if (!rc) {
    tg_abi_put_u64(w, 4 * 32);
    rc = tg_buf_append(out, w, 32);
  }
  if (!rc) {
    tg_abi_put_u64(w, data.len);
    rc = tg_buf_append(out, w, 32);
  }
  if (!rc) rc = tg_buf_append(out, data.data, data.len);
  if (!rc && data.len % 32) {
    memset(w, 0, 32);
    rc = tg_buf_append(out, w, 32 - data.len % 32);
  }
  tg_buf_cleanup(&data);
  return rc;
}

static int estimate(run *r, const tg_buf *calldata, uint64_t *gas) {
  tg_eth_msg m = {0};
  m.from = &r->gw;
  m.to = r->contract;
  m.data = calldata->data;
  m.data_len = calldata->len;
  return tg_eth_estimate_gas(r->rpc, gas, NULL, &m);
}

static int add_batch(run *r, size_t first, size_t count, uint64_t gas) {
  batch *n = realloc(r->b, (r->nb + 1) * sizeof *n);
  if (!n) return TG_ENOMEM;
  r->b = n;
  batch *b = &n[r->nb];
  memset(b, 0, sizeof *b);
  const chan *g = &r->ch[r->planned[first]];
  b->first = first;
  b->count = count;
  b->receiver = g->cfg.receiver;
  b->authorizer = g->cfg.receiver_authorizer;
  b->token = g->cfg.token;
  b->gas_estimate = gas;
  b->step = TG_SETTLE_PLANNED;
  for (size_t k = 0; k < count; k++) r->ch[r->planned[first + k]].batch = (int)r->nb;
  r->nb++;
  return 0;
}

/* Cuts the planned items into batches that estimate under the gas cap. */
static int make_batches(run *r) {
  uint64_t cap = pol(r)->max_batch_gas;
  if (!cap) cap = r->block_gas_limit / 4 * 3;
  size_t maxn = pol(r)->max_batch ? pol(r)->max_batch : 1000;
  size_t max_bytes = pol(r)->max_batch_bytes ? pol(r)->max_batch_bytes : TG_SETTLE_MAX_CLAIM_BYTES;
  tg_buf cd;
  tg_buf_init(&cd, (size_t)64 << 20);
  int rc = 0;
  size_t i = 0;
  while (!rc && i < r->n_planned) {
    size_t j = i + 1;
    while (j < r->n_planned && same_group(&r->ch[r->planned[i]], &r->ch[r->planned[j]])) j++;
    /* the group is planned[i .. j) */
    size_t k = i;
    while (!rc && k < j) {
      size_t n = j - k < maxn ? j - k : maxn;
      for (;;) {
        uint64_t gas = 0;
        rc = build_claim(r, &cd, k, n);
        if (rc) break;
        if (cd.len > max_bytes && n > 1) {
          /* too big for a node's pool: cut by size first (no estimate needed) */
          size_t m = (size_t)((double)n * (double)max_bytes / (double)cd.len * 0.98);
          n = m >= n ? n - 1 : (m ? m : 1);
          continue;
        }
        if (cd.len > max_bytes) {
          chan *c = &r->ch[r->planned[k]];
          problem(c, TG_ESETTLE_BATCH, 0, "a single claim exceeds the claim size cap");
          k++;
          break;
        }
        rc = estimate(r, &cd, &gas);
        if (rc) break;
        if (gas <= cap) {
          rc = add_batch(r, k, n, gas);
          k += n;
          break;
        }
        if (n == 1) {
          chan *c = &r->ch[r->planned[k]];
          problem(c, TG_ESETTLE_BATCH, 0, "a single claim exceeds the batch gas cap");
          k++;
          break;
        }
        size_t m = (size_t)((double)n * (double)cap / (double)gas * 0.9);
        n = m >= n ? n / 2 : (m ? m : 1);
      }
      progress(r, TG_SETTLE_PHASE_ESTIMATE, k - 0, r->n_planned);
    }
    i = j;
  }
  tg_buf_cleanup(&cd);
  return rc;
}

static void mark_batch_items(run *r, batch *b, opq *q, int step, const tg_hash *tx, int *rc) {
  for (size_t k = 0; !*rc && k < b->count; k++) {
    chan *c = &r->ch[r->planned[b->first + k]];
    if (c->state != C_PLANNED) continue;
    if ((*rc = opq_room(q, 1)) != 0) return;
    item_op(q, c, step, tx, NULL);
    c->step = step;
  }
}

static int follow_batches(run *r) {
  opq *q = calloc(1, sizeof *q);
  if (!q) return TG_ENOMEM;
  q->r = r;
  int rc = 0;
  unsigned timeout = r->o->timeout_ms ? r->o->timeout_ms : 600000;
  uint64_t t_submit = elapsed_ms(r);
  int accepted = 0; /* the node took at least one of the batches */
  for (;;) {
    int idle = r->snd.wait_idle(r->snd.ctx, 250);
    if (idle && idle != TG_ETIMEOUT) {
      rc = idle;
      break;
    }
    size_t done = 0;
    for (size_t i = 0; !rc && i < r->nb; i++) {
      batch *b = &r->b[i];
      if (!b->submitted) continue;
      tg_txm_result res;
      if ((rc = r->snd.get(r->snd.ctx, b->txm_id, &res)) != 0) break;
      int step = b->step;
      if (res.state == TG_TXM_SENT) step = TG_SETTLE_SENT;
      else if (res.state == TG_TXM_MINED) step = TG_SETTLE_MINED;
      else if (res.state == TG_TXM_CONFIRMED) step = TG_SETTLE_MINED; /* confirmed after reading */
      else if (res.state == TG_TXM_SIGNED) step = TG_SETTLE_SIGNED;
      if (res.state >= TG_TXM_SENT) accepted = 1;
      if (step > b->step) {
        mark_batch_items(r, b, q, step, &res.tx_hash, &rc);
        b->step = step;
      }
      if (res.state == TG_TXM_CONFIRMED || res.state == TG_TXM_FAILED) {
        b->done = 1;
        b->res = res;
        done++;
      }
    }
    if (!rc) rc = opq_flush(q);
    progress(r, TG_SETTLE_PHASE_CLAIM, done, r->nb);
    if (rc || idle == 0) break;
    if (elapsed_ms(r) > timeout) {
      rc = TG_ETIMEOUT;
      break;
    }
    if (!accepted && pol(r)->stall_ms && elapsed_ms(r) - t_submit > pol(r)->stall_ms) {
      rc = TG_ETIMEOUT; /* not even accepted by the node (gas money, node down): say so early */
      break;
    }
  }
  free(q);
  return rc;
}

/* Reads a confirmed batch's receipt: ClaimSkipped reasons onto its items, the fee into t (the
 * transaction manager's journal keeps no gas price for finished transactions). */
static int read_skips(run *r, batch *b, tg_settle_tx *t) {
  tg_eth_receipt rc_;
  int rc = tg_eth_get_receipt(r->rpc, &rc_, &b->res.tx_hash);
  if (rc) return rc;
  t->gas_used = rc_.gas_used;
  u256_mul_u64_sat(&t->fee, &rc_.effective_gas_price, rc_.gas_used);
  for (size_t i = 0; i < rc_.n_logs; i++) {
    const tg_eth_log *l = &rc_.logs[i];
    if (!tg_address_eq(&l->address, r->contract) || l->n_topics < 2 ||
        memcmp(l->topics[0].b, r->topic_skipped.b, 32) != 0 || l->data_len != 96)
      continue;
    chan *c = find_chan(r, &l->topics[1]);
    if (!c || c->batch != (int)(b - r->b)) continue;
    c->skip_reason = l->data[31];
  }
  tg_eth_receipt_cleanup(&rc_);
  return 0;
}

/* ----------------------------------------------------------------- sweep */

static int unswept(run *r, const tg_address *receiver, const tg_address *token, tg_u256 *out) {
  uint8_t data[4 + 64];
  memcpy(data, r->sel_unswept, 4);
  tg_abi_put_address(data + 4, receiver);
  tg_abi_put_address(data + 36, token);
  tg_eth_msg m = {0};
  m.to = r->contract;
  m.data = data;
  m.data_len = sizeof data;
  tg_buf b;
  tg_buf_init(&b, 4096);
  int rc = tg_eth_call(r->rpc, &b, NULL, &m, NULL);
  if (!rc && b.len != 32) rc = TG_EABI_DATA;
  if (!rc) memcpy(out->b, b.data, 32);
  tg_buf_cleanup(&b);
  return rc;
}

typedef struct {
  tg_address receiver, token;
  tg_u256 amount;
  uint64_t txm_id;
  int submitted;
} sweep_t;

static int sweeps(run *r) {
  /* distinct (receiver, token) of every loaded channel */
  sweep_t *sw = NULL;
  size_t ns = 0;
  int rc = 0;
  for (size_t i = 0; !rc && i < r->n; i++) {
    const chan *c = &r->ch[i];
    size_t k = 0;
    for (; k < ns; k++)
      if (tg_address_eq(&sw[k].receiver, &c->cfg.receiver) &&
          tg_address_eq(&sw[k].token, &c->cfg.token))
        break;
    if (k < ns) continue;
    sweep_t *n = realloc(sw, (ns + 1) * sizeof *n);
    if (!n) {
      rc = TG_ENOMEM;
      break;
    }
    sw = n;
    memset(&sw[ns], 0, sizeof sw[ns]);
    sw[ns].receiver = c->cfg.receiver;
    sw[ns].token = c->cfg.token;
    ns++;
  }
  for (size_t k = 0; !rc && k < ns; k++) {
    rc = unswept(r, &sw[k].receiver, &sw[k].token, &sw[k].amount);
    if (rc || tg_u256_is_zero(&sw[k].amount)) continue;
    uint8_t data[4 + 64];
    memcpy(data, r->sel_sweep, 4);
    tg_abi_put_address(data + 4, &sw[k].receiver);
    tg_abi_put_address(data + 36, &sw[k].token);
    tg_txm_request req = {0};
    req.has_to = 1;
    req.to = *r->contract;
    req.data = data;
    req.data_len = sizeof data;
    rc = r->snd.submit(r->snd.ctx, &req, &sw[k].txm_id);
    if (!rc) sw[k].submitted = 1;
  }
  unsigned timeout = r->o->timeout_ms ? r->o->timeout_ms : 600000;
  while (!rc) {
    int idle = r->snd.wait_idle(r->snd.ctx, 250);
    if (idle == 0) break;
    if (idle != TG_ETIMEOUT) rc = idle;
    else if (elapsed_ms(r) > timeout) rc = TG_ETIMEOUT;
  }
  for (size_t k = 0; !rc && k < ns; k++) {
    if (!sw[k].submitted) continue;
    tg_txm_result res;
    if ((rc = r->snd.get(r->snd.ctx, sw[k].txm_id, &res)) != 0) break;
    tg_settle_tx t = {0};
    t.is_sweep = 1;
    t.receiver = sw[k].receiver;
    t.token = sw[k].token;
    t.tx_hash = res.tx_hash;
    t.gas_used = res.gas_used;
    t.status = res.state == TG_TXM_CONFIRMED ? res.status : -1;
    if (t.status != 1) tx_error(&t, &res, res.state == TG_TXM_CONFIRMED || res.state == TG_TXM_FAILED);
    if (res.block_number) {
      tg_eth_receipt rcpt;
      if ((rc = tg_eth_get_receipt(r->rpc, &rcpt, &res.tx_hash)) != 0) break;
      t.gas_used = rcpt.gas_used;
      u256_mul_u64_sat(&t.fee, &rcpt.effective_gas_price, rcpt.gas_used);
      tg_eth_receipt_cleanup(&rcpt);
    }
    if ((rc = add_tx(r, &t)) != 0) break;
    r->rep->gas_used += res.gas_used;
    u256_add_sat(&r->rep->fee_paid, &t.fee);
    if (t.status == 1) u256_add_sat(&r->rep->amount_swept, &sw[k].amount);
    else rc = TG_ESETTLE_REVERTED;
  }
  free(sw);
  return rc;
}

/* --------------------------------------------------------------- the run */

static void on_resumed(void *arg, const tg_txm_result *res) {
  run *r = arg;
  tg_settle_tx t = {0};
  t.resumed = 1;
  t.tx_hash = res->tx_hash;
  t.gas_used = res->gas_used;
  u256_mul_u64_sat(&t.fee, &res->effective_gas_price, res->gas_used);
  t.status = res->state == TG_TXM_CONFIRMED ? res->status : -1;
  if (t.status != 1) tx_error(&t, res, 1);
  if (add_tx(r, &t) == 0) {
    r->rep->gas_used += res->gas_used;
    u256_add_sat(&r->rep->fee_paid, &t.fee);
  }
}

static int init_consts(run *r) {
  int rc = tg_abi_selector_str(r->sel_state, "getChannelState(bytes32)", strlen("getChannelState(bytes32)"));
  if (!rc) rc = tg_abi_selector_str(r->sel_claim, "claimPacked((address,address,address),bytes)", strlen("claimPacked((address,address,address),bytes)"));
  if (!rc) rc = tg_abi_selector_str(r->sel_sweep, "sweep(address,address)", strlen("sweep(address,address)"));
  if (!rc) rc = tg_abi_selector_str(r->sel_unswept, "unswept(address,address)", strlen("unswept(address,address)"));
  if (!rc)
    rc = tg_abi_event_topic(&r->topic_skipped, "ClaimSkipped(bytes32,uint8,uint128,uint128)", strlen("ClaimSkipped(bytes32,uint8,uint128,uint128)"));
  if (!rc) rc = tg_channel_domain(&r->domain, r->o->deployment->chain_id, r->contract);
  return rc;
}

static int gather(run *r) {
  int rc = tg_store_channels_unsettled(r->st, load_cb, r);
  if (rc < 0) return rc;
  r->rep->channels_unsettled = r->n;
  if (r->n) qsort(r->ch, r->n, sizeof *r->ch, cmp_chan_id);
  r->n_sorted = r->n;
  return 0;
}

static int settle(run *r) {
  const tg_settle_opts *o = r->o;
  tg_settle_report *rep = r->rep;
  int rc;
  int dry = o->dry_run;
  int failed_batches = 0;
  if ((rc = tg_seckey_address(&r->gw, o->key)) != 0) return rc;
  r->contract = &o->deployment->c[TG_CONTRACT_CHANNELS].address;
  if (tg_rpc_chain_id(r->rpc) != o->deployment->chain_id) return TG_EDEPLOY_CHAIN;
  if ((rc = init_consts(r)) != 0) return rc;
  char holder[TG_STORE_NAME_MAX + 1];
  char gwhex[TG_ADDRESS_HEX_LEN];
  tg_address_to_hex(&r->gw, gwhex);
  snprintf(holder, sizeof holder, "%s:%s", o->holder_kind ? o->holder_kind : TG_SETTLE_HOLDER_CLI,
           gwhex);
  memcpy(r->holder, holder, sizeof r->holder);

  if (!dry) {
    tg_store_op lop = {0};
    lop.kind = TG_STORE_OP_LEASE_ACQUIRE;
    lop.u.lease.name = LEASE_NAME;
    lop.u.lease.holder = holder;
    lop.u.lease.ttl_ms = (int64_t)(o->timeout_ms ? o->timeout_ms : 600000) + 60000;
    rc = tg_store_write(r->st, &lop, 1);
    if (rc == TG_ESTORE_LEASE) {
      /* someone else's live lease: say whose, and do nothing */
      tg_store_lease l;
      if (tg_store_lease_get(r->st, LEASE_NAME, &l) == 0) {
        snprintf(rep->lease_holder, sizeof rep->lease_holder, "%s", l.holder);
        rep->lease_expires_ms = l.expires_at;
      }
      return TG_ESETTLE_RUNNING;
    }
    if (rc) return rc;
    r->leased = 1;
    /* 1. finish what an interrupted run signed */
    if (o->sender) {
      r->snd = *o->sender;
    } else {
      tg_txm_opts mo;
      tg_txm_opts_init(&mo);
      mo.rpc = r->rpc;
      mo.key = o->key;
      mo.journal_path = o->txm_journal;
      mo.confirmations = pol(r)->confirmations ? pol(r)->confirmations : 1;
      mo.poll_ms = 250;
      /* resend_ms: the manager default (15 s); shorter replaced big batches that were only
       * waiting for room in a block (see docs/SETTLEMENT.md) */
      mo.on_resumed = on_resumed;
      mo.on_resumed_arg = r;
      if ((rc = tg_txm_open(&r->txm, &mo)) != 0) return rc;
      r->snd = (tg_settle_sender){r, own_submit, own_get, own_wait};
      progress(r, TG_SETTLE_PHASE_RESUME, 0, tg_txm_pending(r->txm));
    }
    for (;;) {
      int idle = r->snd.wait_idle(r->snd.ctx, 250);
      if (idle == 0) break;
      if (idle != TG_ETIMEOUT) return idle;
      if (elapsed_ms(r) > (o->timeout_ms ? o->timeout_ms : 600000)) return TG_ETIMEOUT;
      if (pol(r)->stall_ms && elapsed_ms(r) > pol(r)->stall_ms) return TG_ETIMEOUT;
    }
  }
  /* 2. the unsettled channels, and the open run (its channels still need their sweep) */
  if ((rc = gather(r)) != 0) return rc;
  if (!dry) {
    tg_store_settle_run sr;
    rc = tg_store_run_open_get(r->st, &sr);
    if (rc == 0) {
      r->run_id = sr.id;
      rep->resumed = 1;
      item_ctx x = {r, 0};
      size_t before = r->n;
      rc = tg_store_run_items(r->st, r->run_id, run_item_cb, &x);
      if (rc < 0) return rc;
      if (r->n != before) qsort(r->ch, r->n, sizeof *r->ch, cmp_chan_id);
      r->n_sorted = r->n;
    } else if (rc == TG_ENOTFOUND) {
      tg_store_op op = {0};
      op.kind = TG_STORE_OP_RUN_BEGIN;
      if ((rc = tg_store_write(r->st, &op, 1)) != 0) return rc;
      r->run_id = op.u.run.run_id;
    } else {
      return rc;
    }
    rep->run_id = r->run_id;
  }
  if ((rc = read_head(r)) != 0) return rc;
  if ((rc = read_states(r, 0, TG_SETTLE_PHASE_READ, 0)) != 0) return rc;
  if ((rc = read_states(r, 0, TG_SETTLE_PHASE_READ, 1)) != 0) return rc;
  for (size_t i = 0; i < r->n; i++) r->ch[i].claimed0 = r->ch[i].mirror_claimed;

  opq *q = calloc(1, sizeof *q);
  if (!q) return TG_ENOMEM;
  q->r = r;
  /* reconcile: the chain is the truth for what was claimed */
  for (size_t i = 0; !rc && !dry && i < r->n; i++) {
    chan *c = &r->ch[i];
    if (!c->have_state) continue;
    if (tg_u256_cmp(&c->claimed, &c->mirror_claimed) != 0 || c->withdraw_at)
      rc = sync_ops(q, c);
    if (!rc && c->step >= TG_SETTLE_PLANNED && c->step < TG_SETTLE_CONFIRMED &&
        tg_u256_cmp(&c->claimed, &c->item_amount) >= 0) {
      /* an item of the resumed run whose claim landed before the interruption */
      c->target = c->item_amount;
      c->through = c->item_through;
      if (!(rc = opq_room(q, 1))) item_op(q, c, TG_SETTLE_CONFIRMED, NULL, NULL);
      c->step = TG_SETTLE_CONFIRMED;
    }
  }
  if (!rc) rc = opq_flush(q);

  /* 3. plan */
  int gas_dear = !tg_u256_is_zero(&pol(r)->max_gas_price) &&
                 tg_u256_cmp(&r->base_fee, &pol(r)->max_gas_price) > 0;
  r->planned = rc ? NULL : calloc(r->n ? r->n : 1, sizeof *r->planned);
  if (!rc && !r->planned) rc = TG_ENOMEM;
  for (size_t i = 0; !rc && i < r->n; i++) {
    chan *c = &r->ch[i];
    rc = plan_one(r, c, gas_dear);
    if (rc) break;
    if (c->state == C_PLANNED) {
      r->planned[r->n_planned++] = i;
      tg_u256 inc;
      if (tg_u256_sub(&inc, &c->target, &c->l_claimed) == 0) u256_add_sat(&rep->amount_planned, &inc);
    } else if (c->state == C_WAIT) {
      rep->channels_waiting++;
    }
    progress(r, TG_SETTLE_PHASE_PLAN, i + 1, r->n);
  }
  rep->channels_planned = r->n_planned;
  if (!rc && r->n_planned) {
    g_sort_run = r;
    qsort(r->planned, r->n_planned, sizeof *r->planned, cmp_group);
    g_sort_run = NULL;
  }
  /* journal the plan (and the drops) before anything is sent */
  for (size_t i = 0; !rc && !dry && i < r->n; i++) {
    chan *c = &r->ch[i];
    if (c->state == C_PLANNED) {
      if (!(rc = opq_room(q, 1))) item_op(q, c, TG_SETTLE_PLANNED, NULL, NULL);
      c->step = TG_SETTLE_PLANNED;
    } else if (c->state == C_PROBLEM) {
      if (!(rc = opq_room(q, 1))) item_op(q, c, TG_SETTLE_DROPPED, NULL, c->why);
    }
  }
  if (!rc) rc = opq_flush(q);

  /* 4. batches */
  if (!rc && r->n_planned) rc = make_batches(r);
  tg_u256 gas_price;
  tg_u256_zero(&gas_price);
  if (!rc) rc = tg_eth_gas_price(r->rpc, &gas_price);
  rep->gas_price = gas_price;
  for (size_t i = 0; !rc && i < r->nb; i++) rep->gas_estimate += r->b[i].gas_estimate;
  if (!rc && dry) {
    for (size_t i = 0; !rc && i < r->nb; i++) {
      tg_settle_tx t = {0};
      t.items = r->b[i].count;
      t.receiver = r->b[i].receiver;
      t.token = r->b[i].token;
      t.gas_estimate = r->b[i].gas_estimate;
      u256_mul_u64_sat(&t.fee, &gas_price, t.gas_estimate);
      t.status = -1;
      rc = add_tx(r, &t);
    }
  }
  tg_buf cd;
  tg_buf_init(&cd, (size_t)64 << 20);
  for (size_t i = 0; !rc && !dry && i < r->nb; i++) {
    batch *b = &r->b[i];
    if ((rc = build_claim(r, &cd, b->first, b->count)) != 0) break;
    tg_txm_request req = {0};
    req.has_to = 1;
    req.to = *r->contract;
    req.data = cd.data;
    req.data_len = cd.len;
    uint64_t gl = b->gas_estimate + b->gas_estimate / 5;
    if (r->block_gas_limit && gl > r->block_gas_limit) gl = r->block_gas_limit;
    req.gas_limit = gl;
    rc = r->snd.submit(r->snd.ctx, &req, &b->txm_id);
    if (!rc) b->submitted = 1;
  }
  tg_buf_cleanup(&cd);
  if (!rc && !dry && r->nb) rc = follow_batches(r);

  /* 5. results: receipts, the chain state, the journal */
  for (size_t i = 0; !rc && !dry && i < r->nb; i++) {
    batch *b = &r->b[i];
    tg_settle_tx t = {0};
    t.items = b->count;
    t.receiver = b->receiver;
    t.token = b->token;
    t.gas_estimate = b->gas_estimate;
    t.tx_hash = b->res.tx_hash;
    t.gas_used = b->res.gas_used;
    u256_mul_u64_sat(&t.fee, &b->res.effective_gas_price, b->res.gas_used);
    t.status = b->done && b->res.state == TG_TXM_CONFIRMED ? b->res.status : -1;
    if (t.status != 1) tx_error(&t, &b->res, b->done);
    if (b->done && b->res.block_number && (rc = read_skips(r, b, &t)) != 0) break;
    rep->gas_used += t.gas_used;
    u256_add_sat(&rep->fee_paid, &t.fee);
    if ((rc = add_tx(r, &t)) != 0) break;
  }
  if (!rc && !dry && r->nb) {
    if ((rc = read_head(r)) == 0) rc = read_states(r, 1, TG_SETTLE_PHASE_CLAIM, 0);
  }
  for (size_t k = 0; !rc && !dry && k < r->n_planned; k++) {
    chan *c = &r->ch[r->planned[k]];
    const batch *b = c->batch >= 0 ? &r->b[c->batch] : NULL;
    if (c->state != C_PLANNED) continue;
    if ((rc = sync_ops(q, c)) != 0) break;
    if ((rc = opq_room(q, 1)) != 0) break;
    const tg_hash *tx = b && b->submitted ? &b->res.tx_hash : NULL;
    if (tg_u256_cmp(&c->claimed, &c->target) >= 0) {
      item_op(q, c, TG_SETTLE_CONFIRMED, tx, NULL);
    } else if (c->skip_reason) {
      char why[128];
      snprintf(why, sizeof why, "ClaimSkipped reason %d (%s)", c->skip_reason,
               tg_settle_skip_name(c->skip_reason));
      problem(c, TG_ESETTLE_SKIPPED, c->skip_reason, why);
      item_op(q, c, TG_SETTLE_SKIPPED, tx, c->why);
    } else {
      char why[128];
      int reverted = b && b->done && b->res.block_number && b->res.status == 0;
      /* the node's own text says more than the error's name ("Invalid request", "oversized
       * data", "exceeds block gas limit"); the transaction line has both */
      const char *said = b && b->res.message[0] ? b->res.message
                         : b && b->res.err      ? tg_strerror(b->res.err)
                                                : NULL;
      snprintf(why, sizeof why, "claim transaction %s%s%.96s", reverted ? "reverted" : "failed",
               said ? ": " : "", said ? said : "");
      problem(c, reverted ? TG_ESETTLE_REVERTED : TG_ETXM_FAILED, 0, why);
      failed_batches = 1;
      item_op(q, c, TG_SETTLE_DROPPED, tx, c->why);
    }
  }
  if (!rc) rc = opq_flush(q);
  free(q);

  /* totals and problems */
  for (size_t i = 0; !rc && i < r->n; i++) {
    chan *c = &r->ch[i];
    if (c->state == C_PROBLEM) {
      rep->channels_problem++;
      if ((rc = add_problem(r, c)) != 0) break;
    }
    if (!dry && c->have_state && tg_u256_cmp(&c->claimed, &c->claimed0) > 0) {
      tg_u256 inc;
      if (tg_u256_sub(&inc, &c->claimed, &c->claimed0) == 0) u256_add_sat(&rep->amount_claimed, &inc);
      rep->channels_claimed++;
    }
  }
  /* 6. sweep, and close the run */
  if (!rc && !dry && !pol(r)->no_sweep) {
    progress(r, TG_SETTLE_PHASE_SWEEP, 0, 1);
    rc = sweeps(r);
  }
  if (!rc && !dry) {
    tg_store_op ops[2];
    memset(ops, 0, sizeof ops);
    ops[0].kind = TG_STORE_OP_RUN_END;
    ops[0].u.run.run_id = r->run_id;
    ops[0].u.run.status = failed_batches ? TG_RUN_FAILED : TG_RUN_DONE;
    ops[1].kind = TG_STORE_OP_LEASE_RELEASE;
    ops[1].u.lease.name = LEASE_NAME;
    ops[1].u.lease.holder = holder;
    rc = tg_store_write(r->st, ops, 2);
    /* a claim transaction that failed is an error of the run (its items are journaled as
     * dropped and planned again by the next run) */
    if (!rc && failed_batches) rc = TG_ESETTLE;
  }
  progress(r, TG_SETTLE_PHASE_DONE, 1, 1);
  return rc;
}

int tg_settle_run(tg_settle_report *out, const tg_settle_opts *o) {
  memset(out, 0, sizeof *out);
  if (!o || !o->store || !o->rpc || !o->key || !o->deployment ||
      (!o->dry_run && !o->txm_journal && !o->sender) ||
      (o->sender && (!o->sender->submit || !o->sender->get || !o->sender->wait_idle)))
    return TG_EINVAL;
  run r;
  memset(&r, 0, sizeof r);
  r.o = o;
  r.rep = out;
  r.st = o->store;
  r.rpc = o->rpc;
  r.now = o->now_ms ? o->now_ms : now_ms();
  clock_gettime(CLOCK_MONOTONIC, &r.t0);
  int rc = settle(&r);
  if (rc && r.leased) {
    /* a run that stops early is not running any more: let the next one (daemon or manual)
     * start at once; the journal and the open run make it resume exactly */
    tg_store_op op = {0};
    op.kind = TG_STORE_OP_LEASE_RELEASE;
    op.u.lease.name = LEASE_NAME;
    op.u.lease.holder = r.holder;
    if (tg_store_write(r.st, &op, 1) != 0) {
      /* the lease then expires on its own */
    }
  }
  tg_txm_free(r.txm);
  for (size_t i = 0; i < r.n; i++) free(r.ch[i].sig);
  free(r.ch);
  free(r.planned);
  free(r.b);
  return rc;
}
