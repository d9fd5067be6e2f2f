/* The generic store: URI dispatch, the bounded write queue, the group-commit writer thread and the read pool. */
#include "store/store_int.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "tollgate/u256.h"

#define READ_POOL_MAX 16
#define DEFAULT_BATCH_MAX 4096
#define DEFAULT_BUSY_MS 5000

/* One queued submission: the header, then n ops, then the copied strings, in one allocation. */
typedef struct sub {
  struct sub *next;
  uint64_t queued_ns; /* when it was queued (CLOCK_MONOTONIC), for wait_ns_total */
  tg_store_cb cb;
  void *arg;
  int err;
  size_t n;
  tg_store_op *ops;
  /* delivery */
  int folded;          /* only usage increments, applied by fold_pass_use */
  int done;            /* applied by run_optimistic */
  enum { DELIVER_DIRECT, DELIVER_EVBASE, DELIVER_SYNC } how;
  struct event *ev;    /* DELIVER_EVBASE: activated by the writer, runs on the base */
  struct sub *riders;  /* DELIVER_EVBASE: later submissions of the same commit and base */
  pthread_mutex_t *sync_mu; /* DELIVER_SYNC: the waiter's */
  pthread_cond_t *sync_cv;
  int *sync_done;
} sub;

struct tg_store {
  const tg__store_backend *be;
  char *target;
  tg_store_options opts;
  tg__store_conn *wconn;

  pthread_t writer;
  int writer_started;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  sub *head, *tail;
  size_t queued_ops;
  int closing;
  tg_store_stats stats;
  uint64_t batch_ns; /* writer thread only: statement time of the batch being run */
  uint64_t batch_charges; /* writer thread only: submissions of that batch folded by fold_charges */
  atomic_int fault_where; /* tg__store_fault */
  atomic_int fault_err;

  pthread_mutex_t pool_mu;
  pthread_cond_t pool_cv;
  tg__store_conn *pool[READ_POOL_MAX];
  size_t pool_free;  /* entries 0..pool_free-1 are idle */
  size_t pool_total; /* connections opened */
};

int64_t tg__store_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t thread_cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static const tg__store_backend *const backends[] = {&tg__store_sqlite, &tg__store_postgres,
                                                     &tg__store_postgresql};

const uint64_t tg_store_commit_bucket_us[TG_STORE_HIST_BUCKETS] = {
    250, 500, 1000, 2000, 5000, 10000, 25000, 50000, 100000, UINT64_MAX};

/* Splits "scheme:target" and finds the backend. */
static int resolve(const char *uri, const tg__store_backend **be, const char **target) {
  if (uri == NULL) return TG_ESTORE_URI;
  const char *colon = strchr(uri, ':');
  if (colon == NULL || colon == uri) return TG_ESTORE_URI;
  size_t slen = (size_t)(colon - uri);
  for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++) {
    if (strlen(backends[i]->scheme) == slen && memcmp(backends[i]->scheme, uri, slen) == 0) {
      *be = backends[i];
      *target = colon + 1;
      return *target[0] ? 0 : TG_ESTORE_URI;
    }
  }
  return TG_ESTORE_URI;
}

/* ------------------------------------------------------------------------- */
/* Validation and deep copy of a submission. */

static int str_ok(const char *s, size_t min, size_t max, int nullable) {
  if (s == NULL) return nullable ? 0 : TG_EINVAL;
  size_t len = strnlen(s, max + 1);
  if (len > max) return TG_ETOOBIG;
  if (len < min) return TG_EINVAL;
  return 0;
}

#define I64_OK(v) ((uint64_t)(v) <= (uint64_t)INT64_MAX)

static int validate(const tg_store_op *op) {
  int rc;
  switch (op->kind) {
  case TG_STORE_OP_CHANNEL_PUT:
  case TG_STORE_OP_CHANNEL_SYNC: {
    const tg_store_op_channel *c = &op->u.channel;
    if ((unsigned)c->chain.status > TG_CHANNEL_CLOSED) return TG_EINVAL;
    if (!I64_OK(c->chain.withdraw_requested_at) || !I64_OK(c->chain.refund_nonce) ||
        !I64_OK(c->chain.synced_block) || !I64_OK(c->cfg.chain_id) ||
        !I64_OK(c->cfg.withdraw_delay))
      return TG_ERANGE;
    return 0;
  }
  case TG_STORE_OP_VOUCHER:
    if (op->u.voucher.sig.len > TG_STORE_SIG_MAX) return TG_ETOOBIG;
    if (op->u.voucher.sig.ptr == NULL || op->u.voucher.sig.len == 0) return TG_EINVAL;
    return 0;
  case TG_STORE_OP_CHARGE: {
    const tg_store_op_charge *c = &op->u.charge;
    if ((rc = str_ok(c->request_id, 1, TG_STORE_REQUEST_ID_MAX, 0)) < 0) return rc;
    if ((rc = str_ok(c->route, 0, TG_STORE_ROUTE_MAX, 1)) < 0) return rc;
    if ((rc = str_ok(c->model, 0, TG_STORE_MODEL_MAX, 1)) < 0) return rc;
    if ((rc = str_ok(c->hold_id, 1, TG_STORE_REQUEST_ID_MAX, 1)) < 0) return rc;
    if (c->hold_id && !c->release_reservation) return TG_EINVAL;
    if ((unsigned)c->scheme > TG_SCHEME_PASS) return TG_EINVAL;
    if (c->scheme == TG_SCHEME_CHANNEL && !c->has_channel) return TG_EINVAL;
    if (!I64_OK(c->input_tokens) || !I64_OK(c->output_tokens)) return TG_ERANGE;
    return 0;
  }
  case TG_STORE_OP_CHARGES_SETTLE:
    return 0;
  case TG_STORE_OP_EXACT_PUT:
  case TG_STORE_OP_EXACT_UPDATE: {
    const tg_store_op_exact *e = &op->u.exact;
    if ((unsigned)e->status > TG_EXACT_FAILED) return TG_EINVAL;
    if (!I64_OK(e->valid_after) || !I64_OK(e->valid_before)) return TG_ERANGE;
    return str_ok(e->request_id, 0, TG_STORE_REQUEST_ID_MAX, 1);
  }
  case TG_STORE_OP_PAYID_PUT: {
    const tg_store_op_payid *p = &op->u.payid;
    if ((rc = str_ok(p->id, TG_STORE_PAYID_MIN, TG_STORE_PAYID_MAX, 0)) < 0) return rc;
    if ((rc = str_ok(p->response_header, 0, TG_STORE_HEADER_MAX, 1)) < 0) return rc;
    return str_ok(p->request_id, 0, TG_STORE_REQUEST_ID_MAX, 1);
  }
  case TG_STORE_OP_PASS_USE:
    /* Per-op increments are bounded so that counters cannot be pushed to overflow in one step. */
    if (op->u.pass.calls > ((uint64_t)1 << 40) || op->u.pass.tokens > ((uint64_t)1 << 40) ||
        op->u.pass.calls_back > ((uint64_t)1 << 40))
      return TG_ERANGE;
    return 0;
  case TG_STORE_OP_RUN_BEGIN:
    return 0;
  case TG_STORE_OP_RUN_END:
    return (unsigned)op->u.run.status > TG_RUN_FAILED ? TG_EINVAL : 0;
  case TG_STORE_OP_ITEM_PUT:
    if ((unsigned)op->u.item.step > TG_SETTLE_DROPPED) return TG_EINVAL;
    return str_ok(op->u.item.error, 0, TG_STORE_ERROR_MAX, 1);
  case TG_STORE_OP_LEASE_ACQUIRE:
  case TG_STORE_OP_LEASE_RELEASE:
    if ((rc = str_ok(op->u.lease.name, 1, TG_STORE_NAME_MAX, 0)) < 0) return rc;
    if ((rc = str_ok(op->u.lease.holder, 1, TG_STORE_NAME_MAX, 0)) < 0) return rc;
    if (op->kind == TG_STORE_OP_LEASE_ACQUIRE && op->u.lease.ttl_ms <= 0) return TG_EINVAL;
    return 0;
  case TG_STORE_OP_NONCE_PUT:
  case TG_STORE_OP_NONCE_USE: {
    const char *n = op->u.nonce.nonce;
    size_t len = strnlen(n, sizeof op->u.nonce.nonce);
    if (len < 8 || len > TG_STORE_NONCE_MAX) return TG_EINVAL;
    for (size_t i = 0; i < len; i++)
      if (!((n[i] >= '0' && n[i] <= '9') || (n[i] >= 'a' && n[i] <= 'z') || (n[i] >= 'A' && n[i] <= 'Z')))
        return TG_EINVAL;
    return 0;
  }
  case TG_STORE_OP_SESSION_PUT:
    return op->u.session.expires_at > 0 ? 0 : TG_EINVAL;
  case TG_STORE_OP_SESSION_REVOKE:
    return 0;
  case TG_STORE_OP_RESERVE:
  case TG_STORE_OP_UNRESERVE:
    if ((rc = str_ok(op->u.reserve.request_id, 1, TG_STORE_REQUEST_ID_MAX, 0)) < 0) return rc;
    if (op->kind == TG_STORE_OP_RESERVE) {
      if ((rc = str_ok(op->u.reserve.instance, 1, TG_STORE_INSTANCE_MAX, 0)) < 0) return rc;
      if (op->u.reserve.ttl_ms <= 0) return TG_EINVAL;
    }
    return 0;
  }
  return TG_EINVAL;
}

/* The string fields of an op, as pointers to the pointers (NULL entries unused). */
static void op_strings(tg_store_op *op, const char **f[4]) {
  f[0] = f[1] = f[2] = f[3] = NULL;
  switch (op->kind) {
  case TG_STORE_OP_CHARGE:
    f[0] = &op->u.charge.request_id;
    f[1] = &op->u.charge.route;
    f[2] = &op->u.charge.model;
    f[3] = &op->u.charge.hold_id;
    break;
  case TG_STORE_OP_EXACT_PUT:
  case TG_STORE_OP_EXACT_UPDATE:
    f[0] = &op->u.exact.request_id;
    break;
  case TG_STORE_OP_PAYID_PUT:
    f[0] = &op->u.payid.id;
    f[1] = &op->u.payid.response_header;
    f[2] = &op->u.payid.request_id;
    break;
  case TG_STORE_OP_ITEM_PUT:
    f[0] = &op->u.item.error;
    break;
  case TG_STORE_OP_LEASE_ACQUIRE:
  case TG_STORE_OP_LEASE_RELEASE:
    f[0] = &op->u.lease.name;
    f[1] = &op->u.lease.holder;
    break;
  case TG_STORE_OP_RESERVE:
  case TG_STORE_OP_UNRESERVE:
    f[0] = &op->u.reserve.request_id;
    f[1] = &op->u.reserve.instance;
    break;
  default:
    break;
  }
}

/* Validates and copies ops (and their strings) into one allocation. */
static int sub_new(sub **out, const tg_store_op *ops, size_t n) {
  *out = NULL;
  if (ops == NULL || n == 0) return TG_EINVAL;
  if (n > TG_STORE_SUBMIT_MAX_OPS) return TG_ETOOBIG;
  size_t strbytes = 0;
  for (size_t i = 0; i < n; i++) {
    int rc = validate(&ops[i]);
    if (rc < 0) return rc;
    tg_store_op tmp = ops[i];
    const char **f[4];
    op_strings(&tmp, f);
    for (int k = 0; k < 4; k++)
      if (f[k] && *f[k]) strbytes += strlen(*f[k]) + 1;
    if (tmp.kind == TG_STORE_OP_VOUCHER) strbytes += tmp.u.voucher.sig.len;
  }
  size_t head = (sizeof(sub) + _Alignof(tg_store_op) - 1) / _Alignof(tg_store_op) *
                _Alignof(tg_store_op);
  uint8_t *mem = calloc(1, head + n * sizeof(tg_store_op) + strbytes);
  if (mem == NULL) return TG_ENOMEM;
  sub *s = (sub *)mem;
  s->ops = (tg_store_op *)(mem + head);
  s->n = n;
  char *sp = (char *)(s->ops + n);
  memcpy(s->ops, ops, n * sizeof(tg_store_op));
  for (size_t i = 0; i < n; i++) {
    const char **f[4];
    s->ops[i].err = 0;
    op_strings(&s->ops[i], f);
    if (s->ops[i].kind == TG_STORE_OP_VOUCHER) {
      tg_bytes *sig = &s->ops[i].u.voucher.sig;
      memcpy(sp, sig->ptr, sig->len);
      sig->ptr = (const uint8_t *)sp;
      sp += sig->len;
    }
    for (int k = 0; k < 4; k++) {
      if (f[k] && *f[k]) {
        size_t len = strlen(*f[k]) + 1;
        memcpy(sp, *f[k], len);
        *f[k] = sp;
        sp += len;
      }
    }
  }
  *out = s;
  return 0;
}

/* Copies the writer's results back into a caller's ops (tg_store_write). */
static void copy_outs(tg_store_op *dst, const tg_store_op *src) {
  dst->err = src->err;
  dst->now = src->now;
  switch (src->kind) {
  case TG_STORE_OP_CHANNEL_PUT:
  case TG_STORE_OP_CHANNEL_SYNC:
    dst->u.channel.out_applied = src->u.channel.out_applied;
    break;
  case TG_STORE_OP_VOUCHER:
    dst->u.voucher.out_raised = src->u.voucher.out_raised;
    break;
  case TG_STORE_OP_CHARGE:
    dst->u.charge.out_id = src->u.charge.out_id;
    dst->u.charge.out_charged = src->u.charge.out_charged;
    dst->u.charge.out_hold_found = src->u.charge.out_hold_found;
    dst->u.charge.out_reserved = src->u.charge.out_reserved;
    dst->u.charge.out_ceiling = src->u.charge.out_ceiling;
    dst->u.charge.out_balance = src->u.charge.out_balance;
    dst->u.charge.out_withdraw_requested_at = src->u.charge.out_withdraw_requested_at;
    break;
  case TG_STORE_OP_CHARGES_SETTLE:
    dst->u.settle.out_count = src->u.settle.out_count;
    break;
  case TG_STORE_OP_PASS_USE:
    dst->u.pass.out_calls = src->u.pass.out_calls;
    dst->u.pass.out_tokens = src->u.pass.out_tokens;
    break;
  case TG_STORE_OP_RUN_BEGIN:
    dst->u.run.run_id = src->u.run.run_id;
    break;
  case TG_STORE_OP_LEASE_ACQUIRE:
    dst->u.lease.out_expires_at = src->u.lease.out_expires_at;
    break;
  case TG_STORE_OP_RESERVE:
  case TG_STORE_OP_UNRESERVE: {
    const tg_store_op_reserve *a = &src->u.reserve;
    tg_store_op_reserve *b = &dst->u.reserve;
    b->out_charged = a->out_charged;
    b->out_reserved = a->out_reserved;
    b->out_ceiling = a->out_ceiling;
    b->out_balance = a->out_balance;
    b->out_total_claimed = a->out_total_claimed;
    b->out_withdraw_requested_at = a->out_withdraw_requested_at;
    b->out_reclaimed = a->out_reclaimed;
    break;
  }
  default:
    break;
  }
}

/* ------------------------------------------------------------------------- */
/* The writer. */

static void deliver(sub *s) {
  switch (s->how) {
  case DELIVER_DIRECT:
    s->cb(s->arg, s->err, s->ops, s->n);
    free(s);
    break;
  case DELIVER_EVBASE:
    /* Ownership passes to the base: evbase_fire() calls back and frees. */
    event_active(s->ev, EV_READ, 1);
    break;
  case DELIVER_SYNC:
    pthread_mutex_lock(s->sync_mu);
    *s->sync_done = 1;
    pthread_cond_signal(s->sync_cv);
    pthread_mutex_unlock(s->sync_mu);
    break;
  }
}

/*
 * Usage increments (TG_STORE_OP_PASS_USE) folded: every submission of the batch that carries
 * nothing else (an included pass call) is applied as one increment per (pass, holder, period)
 * with the sum of the batch's calls and tokens, all under one savepoint, instead of a savepoint,
 * a read and an upsert per call. Each op still gets the counters after it (the row's value
 * before the batch plus the increments up to it, in queue order), as if applied one by one. If
 * the folded write fails, its savepoint is rolled back and those submissions go through the
 * ordinary path, one savepoint each, so that one bad submission fails alone. Returns the number
 * of ops folded, or -1 when the backend dropped the transaction.
 */
typedef struct {
  tg_store_op *op;
  sub *s;
  size_t seq;
} pass_ref;

static int pass_key_cmp(const tg_store_op_pass *p, const tg_store_op_pass *q) {
  int r = memcmp(&p->pass_id, &q->pass_id, sizeof p->pass_id);
  if (r == 0) r = memcmp(&p->holder, &q->holder, sizeof p->holder);
  if (r == 0) r = (p->period_start > q->period_start) - (p->period_start < q->period_start);
  return r;
}

/* By key, then in queue order. */
static int pass_ref_cmp(const void *a, const void *b) {
  const pass_ref *x = a, *y = b;
  int r = pass_key_cmp(&x->op->u.pass, &y->op->u.pass);
  if (r == 0) r = (x->seq > y->seq) - (x->seq < y->seq);
  return r;
}

static int fold_pass_use(const tg__store_backend *be, tg__store_conn *c, sub *list, int64_t now) {
  size_t n = 0, subs = 0;
  for (sub *s = list; s; s = s->next) {
    s->folded = 1;
    for (size_t i = 0; i < s->n && s->folded; i++)
      if (s->ops[i].kind != TG_STORE_OP_PASS_USE || s->ops[i].u.pass.calls_back) s->folded = 0;
    if (s->folded) {
      n += s->n;
      subs++;
    }
  }
  if (subs < 2) { /* nothing to gain */
    for (sub *s = list; s; s = s->next) s->folded = 0;
    return 0;
  }
  pass_ref *refs = malloc(n * sizeof *refs);
  if (refs == NULL) {
    for (sub *s = list; s; s = s->next) s->folded = 0;
    return 0;
  }
  size_t k = 0;
  for (sub *s = list; s; s = s->next)
    for (size_t i = 0; s->folded && i < s->n; i++) {
      refs[k] = (pass_ref){&s->ops[i], s, k};
      if (s->ops[i].now == 0) s->ops[i].now = now;
      k++;
    }
  qsort(refs, n, sizeof *refs, pass_ref_cmp);
  int rc = be->sp_begin(c);
  for (size_t i = 0, j; rc >= 0 && i < n; i = j) {
    tg_store_op sum = *refs[i].op;
    sum.u.pass.calls = sum.u.pass.tokens = 0;
    for (j = i; j < n && pass_key_cmp(&refs[i].op->u.pass, &refs[j].op->u.pass) == 0; j++) {
      sum.u.pass.calls += refs[j].op->u.pass.calls; /* each at most 2^40 (validate) */
      sum.u.pass.tokens += refs[j].op->u.pass.tokens;
    }
    if ((rc = be->apply(c, &sum)) < 0) break;
    uint64_t calls = sum.u.pass.out_calls - sum.u.pass.calls;
    uint64_t tokens = sum.u.pass.out_tokens - sum.u.pass.tokens;
    for (size_t m = i; m < j; m++) {
      tg_store_op_pass *o = &refs[m].op->u.pass;
      o->out_calls = calls += o->calls;
      o->out_tokens = tokens += o->tokens;
      refs[m].op->err = 0;
    }
  }
  free(refs);
  if (rc >= 0) rc = be->sp_release(c);
  if (rc < 0) {
    if (be->txn_lost(c)) return -1;
    be->sp_rollback(c);
    if (be->txn_lost(c)) return -1;
    for (sub *s = list; s; s = s->next) s->folded = 0; /* one by one, below */
    return 0;
  }
  for (sub *s = list; s; s = s->next)
    if (s->folded) s->err = 0;
  return (int)n;
}

/*
 * Channel charges folded: the pay layer's completion submissions ([VOUCHER, CHARGE] and an
 * optional PAYID_PUT, all on one channel) are checked in C against one read of each channel,
 * in queue order, exactly as the ops would check them one by one (the ceiling a submission's
 * voucher raises counts for its own charge and the later ones; a charge must stay within the
 * ceiling at that point plus its credit limit). Then, under one savepoint: one insert per
 * charge (with its cumulative_after), per channel one ceiling write (the highest voucher) and
 * one charged-total write (count + k), one write of its payer's totals, and the payment ids. A
 * submission that would fail a check (unknown or closed channel, another payer, over the cap,
 * an overflow) is left to the ordinary path, where it fails alone with the op's own error; if
 * a write fails (a duplicate request or payment id), the savepoint is rolled back and every
 * submission takes the ordinary path. Returns the number of submissions folded, or -1 when the
 * backend dropped the transaction.
 */
typedef struct {
  tg_hash id;
  int err;                    /* the read failed: submissions on it are not folded */
  tg__store_chan_state st;    /* as read */
  tg_u256 ceiling, charged, credit; /* running, in queue order */
  const tg_store_op *ceil_op; /* the voucher that set `ceiling`, NULL: unchanged */
  uint64_t count;             /* charges folded */
  int64_t first_created;
} fold_chan;


static int hash_cmp(const void *a, const void *b) { return memcmp(a, b, sizeof(tg_hash)); }

/* The one channel a submission's money ops name, or NULL when it is not of the folded shape. */
static const tg_hash *fold_channel(const sub *s) {
  const tg_hash *id = NULL;
  int charges = 0;
  for (size_t i = 0; i < s->n; i++) {
    const tg_store_op *op = &s->ops[i];
    const tg_hash *h;
    if (op->kind == TG_STORE_OP_VOUCHER) {
      h = &op->u.voucher.channel_id;
    } else if (op->kind == TG_STORE_OP_CHARGE) {
      const tg_store_op_charge *c = &op->u.charge;
      if (!c->has_channel || c->scheme != TG_SCHEME_CHANNEL || c->release_reservation) return NULL;
      h = &c->channel_id;
      charges++;
    } else if (op->kind == TG_STORE_OP_PAYID_PUT) {
      continue;
    } else {
      return NULL;
    }
    if (id && memcmp(id->b, h->b, sizeof h->b) != 0) return NULL;
    id = h;
  }
  return charges ? id : NULL;
}

static void u256_add_sat(tg_u256 *out, const tg_u256 *a, const tg_u256 *b) {
  if (tg_u256_add(out, a, b) < 0) memset(out->b, 0xff, sizeof out->b);
}

static int fold_charges(const tg__store_backend *be, tg__store_conn *c, sub *list, int64_t now) {
  const tg__store_fold_ops *f = be->fold;
  size_t n = 0, nch = 0;
  /* Only the submissions ahead of the first other one (a channel sync, a settlement...), so
   * that what the others write is seen by the charges queued after them, as in queue order. */
  for (sub *s = list; s && (s->folded || fold_channel(s)); s = s->next)
    if (!s->folded) n++;
  if (f == NULL || n < 2) return 0;
  fold_chan *ch = malloc(n * sizeof *ch);
  sub **subs = malloc(n * sizeof *subs);
  if (!ch || !subs) {
    free(ch);
    free(subs);
    return 0;
  }
  size_t k = 0;
  for (sub *s = list; s; s = s->next) {
    if (s->folded) continue;
    const tg_hash *id = fold_channel(s);
    if (id == NULL) break;
    subs[k++] = s;
    memset(&ch[nch], 0, sizeof ch[nch]);
    ch[nch++].id = *id;
  }
  qsort(ch, nch, sizeof *ch, hash_cmp);
  size_t u = 0;
  for (size_t i = 0; i < nch; i++)
    if (u == 0 || memcmp(ch[u - 1].id.b, ch[i].id.b, 32) != 0) ch[u++] = ch[i];
  nch = u;
  int rc = be->sp_begin(c);
  for (size_t i = 0; rc >= 0 && i < nch; i++) {
    int r = f->chan_state(c, &ch[i].id, &ch[i].st);
    if (r == TG_ENOTFOUND) {
      ch[i].err = r;
    } else if (r < 0) {
      rc = r;
    } else {
      ch[i].ceiling = ch[i].st.ceiling;
      ch[i].charged = ch[i].st.charged;
      ch[i].credit = ch[i].st.credit_limit;
    }
  }
  /* The checks, in queue order, on a copy of the submission's channel. */
  size_t folded = 0;
  for (size_t i = 0; rc >= 0 && i < k; i++) {
    sub *s = subs[i];
    fold_chan *fc = bsearch(fold_channel(s), ch, nch, sizeof *ch, hash_cmp);
    fold_chan t = *fc;
    int ok = !t.err && t.st.status != TG_CHANNEL_CLOSED;
    for (size_t j = 0; ok && j < s->n; j++) {
      tg_store_op *op = &s->ops[j];
      if (op->now == 0) op->now = now;
      if (op->kind == TG_STORE_OP_VOUCHER) {
        op->u.voucher.out_raised = 0;
        if (tg_u256_cmp(&op->u.voucher.max_claimable, &t.ceiling) > 0) {
          t.ceiling = op->u.voucher.max_claimable;
          t.ceil_op = op;
          op->u.voucher.out_raised = 1;
        }
      } else if (op->kind == TG_STORE_OP_CHARGE) {
        tg_store_op_charge *o = &op->u.charge;
        tg_u256 next, cap;
        if (memcmp(o->payer.b, t.st.payer.b, sizeof o->payer.b) != 0 ||
            tg_u256_add(&next, &t.charged, &o->amount) < 0) {
          ok = 0;
          break;
        }
        u256_add_sat(&cap, &t.ceiling, &o->credit_limit);
        if (tg_u256_cmp(&next, &cap) > 0) {
          ok = 0;
          break;
        }
        t.charged = next;
        t.credit = o->credit_limit;
        if (t.count++ == 0) t.first_created = o->created_at ? o->created_at : op->now;
        o->out_charged = next;
      }
    }
    if (!ok) {
      subs[i] = NULL; /* the ordinary path gives it its own error */
      continue;
    }
    *fc = t;
    folded++;
  }
  /* The writes. */
  for (size_t i = 0; rc >= 0 && folded && i < k; i++) {
    sub *s = subs[i];
    for (size_t j = 0; s && rc >= 0 && j < s->n; j++) {
      tg_store_op *op = &s->ops[j];
      if (op->kind == TG_STORE_OP_CHARGE)
        rc = f->charge_row(c, op, &op->u.charge.out_charged);
      else if (op->kind == TG_STORE_OP_PAYID_PUT)
        rc = be->apply(c, op);
    }
  }
  for (size_t i = 0; rc >= 0 && folded && i < nch; i++) {
    fold_chan *fc = &ch[i];
    tg_u256 cap;
    if (fc->ceil_op) {
      u256_add_sat(&cap, &fc->ceiling, &fc->st.credit_limit);
      rc = f->chan_ceiling(c, &fc->id, &fc->ceiling, &fc->ceil_op->u.voucher.sig, &cap, now);
    }
    if (rc >= 0 && fc->count) {
      u256_add_sat(&cap, &fc->ceiling, &fc->credit);
      rc = f->chan_charged(c, &fc->id, &fc->charged, &fc->credit, &cap, fc->count, now,
                           fc->first_created);
    }
  }
  /* The payer's totals: every folded charge of a channel is its payer's, scheme channel, and
   * they add up to what the channel's total rose by. */
  for (size_t i = 0; rc >= 0 && folded && i < nch; i++) {
    tg_u256 sum;
    if (ch[i].count == 0) continue;
    if (tg_u256_sub(&sum, &ch[i].charged, &ch[i].st.charged) < 0) rc = TG_EINTERNAL;
    else rc = f->totals_add(c, &ch[i].st.payer, TG_SCHEME_CHANNEL, &sum, ch[i].count);
  }
  if (rc >= 0) rc = be->sp_release(c);
  int result = (int)folded;
  if (rc < 0) {
    result = 0;
    if (be->txn_lost(c)) {
      result = -1;
    } else {
      be->sp_rollback(c);
      if (be->txn_lost(c)) result = -1;
    }
  } else {
    for (size_t i = 0; i < k; i++)
      if (subs[i]) {
        subs[i]->done = 1;
        subs[i]->err = 0;
        for (size_t j = 0; j < subs[i]->n; j++) subs[i]->ops[j].err = 0;
      }
  }
  free(ch);
  free(subs);
  return result;
}

/*
 * Every ordinary submission of the batch (not folded) under one savepoint instead of one
 * each: two statements fewer per submission. Only when no op fails; at the first failure the
 * savepoint is rolled back and the submissions take the ordinary path, one savepoint each, so
 * that a bad one still fails alone (its neighbours then run again from the same state: an op's
 * out fields are only read when its submission succeeded). Returns the number of submissions
 * applied, 0 when they go the ordinary way, -1 when the backend dropped the transaction.
 */
static int run_optimistic(const tg__store_backend *be, tg__store_conn *c, sub *list, int64_t now) {
  size_t n = 0;
  for (sub *s = list; s; s = s->next)
    if (!s->folded && !s->done) n++;
  if (n < 2) return 0; /* nothing to gain */
  int rc = be->sp_begin(c);
  for (sub *s = list; s && rc >= 0; s = s->next) {
    if (s->folded || s->done) continue;
    for (size_t i = 0; i < s->n && rc >= 0; i++) {
      tg_store_op *op = &s->ops[i];
      if (op->now == 0) op->now = now;
      rc = op->err = be->apply(c, op);
    }
  }
  if (rc >= 0) rc = be->sp_release(c);
  if (rc < 0) {
    if (be->txn_lost(c)) return -1;
    be->sp_rollback(c);
    if (be->txn_lost(c)) return -1;
    for (sub *s = list; s; s = s->next)
      for (size_t i = 0; !s->folded && !s->done && i < s->n; i++) s->ops[i].err = 0;
    return 0;
  }
  for (sub *s = list; s; s = s->next)
    if (!s->folded && !s->done) {
      s->done = 1;
      s->err = 0;
    }
  return (int)n;
}

/* Hands the batch's ops to the backend's lock_batch hook (backends shared by several
 * processes lock the rows the batch will modify, in one order, before any op runs). */
static int lock_batch(const tg__store_backend *be, tg__store_conn *c, sub *list) {
  size_t n = 0, k = 0;
  for (sub *s = list; s; s = s->next) n += s->n;
  tg_store_op **ops = malloc(n * sizeof(*ops));
  if (ops == NULL) return TG_ENOMEM;
  for (sub *s = list; s; s = s->next)
    for (size_t i = 0; i < s->n; i++) ops[k++] = &s->ops[i];
  int rc = be->lock_batch(c, ops, n);
  free(ops);
  return rc;
}

/* Offers the batch to the backend's batch hook (one pipelined transaction). Returns a
 * TG__BATCH_ value; on TG__BATCH_GENERIC nothing was reported and the results are reset. */
static int run_batch_hook(tg_store *st, sub *list, int64_t now, uint64_t *commit_ns) {
  size_t n = 0, k = 0;
  for (sub *s = list; s; s = s->next) n++;
  tg__store_sub *v = malloc(n * sizeof(*v));
  if (v == NULL) return TG__BATCH_GENERIC;
  for (sub *s = list; s; s = s->next) v[k++] = (tg__store_sub){s->ops, s->n, 0};
  int r = st->be->batch(st->wconn, v, n, now, commit_ns);
  k = 0;
  for (sub *s = list; s; s = s->next, k++) {
    s->err = r == TG__BATCH_DONE ? v[k].err : 0;
    if (r != TG__BATCH_DONE)
      for (size_t i = 0; i < s->n; i++) s->ops[i].err = 0;
  }
  free(v);
  return r;
}

/* Runs one batch in one transaction; sets each submission's err. Returns 1 when the backend
 * asks for the whole batch to be run again (a transient concurrency failure). */
static int run_batch_once(tg_store *st, sub *list, int fault, uint64_t *commit_ns,
                          uint64_t *folded_ops) {
  const tg__store_backend *be = st->be;
  tg__store_conn *c = st->wconn;
  *commit_ns = 0;
  uint64_t t_begin = mono_ns();
  *folded_ops = 0;
  if (be->batch && fault == TG__FAULT_NONE) {
    int r = run_batch_hook(st, list, tg__store_now_ms(), commit_ns);
    if (r != TG__BATCH_GENERIC) return r == TG__BATCH_RETRY;
    *commit_ns = 0;
  }
  int rc = be->begin(c);
  if (rc == 0 && be->lock_batch) {
    if ((rc = lock_batch(be, c, list)) < 0) be->rollback(c);
  }
  if (rc < 0) {
    if (be->txn_retry && be->txn_retry(c)) return 1;
    for (sub *s = list; s; s = s->next) s->err = rc;
    return 0;
  }
  int64_t now = tg__store_now_ms();
  int folded = fault != TG__FAULT_TXN_LOST ? fold_pass_use(be, c, list, now) : 0;
  int lost = folded < 0;
  *folded_ops = folded > 0 ? (uint64_t)folded : 0;
  if (!lost && be->fold && fault == TG__FAULT_NONE) {
    int fc = fold_charges(be, c, list, now);
    if (fc < 0) lost = 1;
    else st->batch_charges = (uint64_t)fc;
  }
  if (!lost && be->optimistic_batch && fault == TG__FAULT_NONE)
    lost = run_optimistic(be, c, list, now) < 0;
  for (sub *s = list; s; s = s->next) {
    if (lost) {
      s->err = TG_ESTORE;
      continue;
    }
    if (s->folded || s->done) continue;
    if ((rc = be->sp_begin(c)) < 0) {
      s->err = rc;
      if (be->txn_lost(c)) lost = 1;
      continue;
    }
    s->err = 0;
    for (size_t i = 0; i < s->n; i++) {
      tg_store_op *op = &s->ops[i];
      if (op->now == 0) op->now = now;
      op->err = be->apply(c, op);
      if (op->err < 0) {
        s->err = op->err;
        break;
      }
    }
    if (fault == TG__FAULT_TXN_LOST && s == list) be->rollback(c);
    if (s->err == 0) rc = be->sp_release(c);
    if (s->err < 0 || rc < 0) {
      if (s->err == 0) s->err = rc;
      if (be->txn_lost(c)) {
        lost = 1;
      } else {
        be->sp_rollback(c);
        if (be->txn_lost(c)) lost = 1;
      }
    }
  }
  if (be->txn_retry && be->txn_retry(c)) {
    /* A deadlock victim or serialization failure, in an op or a savepoint: run it all again. */
    be->rollback(c);
    return 1;
  }
  if (lost) {
    /* The backend dropped the transaction: nothing in this batch is durable. */
    be->rollback(c);
    for (sub *s = list; s; s = s->next)
      if (s->err == 0) s->err = TG_ESTORE;
    return 0;
  }
  uint64_t t0 = mono_ns();
  st->batch_ns += t0 - t_begin; /* the writer's own field: summed into stats after the batch */
  rc = fault == TG__FAULT_COMMIT ? atomic_load(&st->fault_err) : be->commit(c);
  *commit_ns = mono_ns() - t0;
  if (rc < 0) {
    be->rollback(c);
    if (be->txn_retry && be->txn_retry(c)) return 1;
    for (sub *s = list; s; s = s->next)
      if (s->err == 0) s->err = rc;
  }
  return 0;
}

#define BATCH_RETRIES 8

static void run_batch(tg_store *st, sub *list, int fault, uint64_t *commit_ns, uint64_t *folded_ops) {
  for (int attempt = 0;; attempt++) {
    if (!run_batch_once(st, list, attempt ? TG__FAULT_NONE : fault, commit_ns, folded_ops)) return;
    pthread_mutex_lock(&st->mu);
    st->stats.retries++;
    pthread_mutex_unlock(&st->mu);
    if (attempt + 1 >= BATCH_RETRIES) break;
    /* Reset the results of the rolled-back attempt and back off a little (1, 2, 4 .. ms). */
    for (sub *s = list; s; s = s->next) {
      s->err = 0;
      s->done = 0;
      for (size_t i = 0; i < s->n; i++) s->ops[i].err = 0;
    }
    struct timespec ts = {0, (long)(1000000L << (attempt < 6 ? attempt : 6))};
    nanosleep(&ts, NULL);
  }
  for (sub *s = list; s; s = s->next)
    if (s->err == 0) s->err = TG_EBUSY;
}

static void *writer_main(void *p) {
  tg_store *st = p;
  for (;;) {
    pthread_mutex_lock(&st->mu);
    while (st->head == NULL && !st->closing) pthread_cond_wait(&st->cv, &st->mu);
    if (st->head == NULL) {
      pthread_mutex_unlock(&st->mu);
      break;
    }
    sub *list = st->head, *last = st->head;
    size_t k = 1, nops = last->n;
    while (last->next && k < st->opts.batch_max) {
      last = last->next;
      nops += last->n;
      k++;
    }
    st->head = last->next;
    if (st->head == NULL) st->tail = NULL;
    last->next = NULL;
    int fault = atomic_exchange(&st->fault_where, TG__FAULT_NONE);
    pthread_mutex_unlock(&st->mu);

    uint64_t commit_ns, folded_ops;
    st->batch_ns = 0;
    st->batch_charges = 0;
    uint64_t cpu0 = thread_cpu_ns();
    run_batch(st, list, fault, &commit_ns, &folded_ops);
    uint64_t cpu_ns = thread_cpu_ns() - cpu0;

    uint64_t failed = 0, wait_ns = 0, t_done = mono_ns();
    for (sub *s = list; s; s = s->next) {
      if (s->err < 0) failed++;
      wait_ns += t_done - s->queued_ns;
    }
    pthread_mutex_lock(&st->mu);
    st->queued_ops -= nops;
    st->stats.commits++;
    st->stats.submissions += k;
    st->stats.ops += nops;
    st->stats.failed += failed;
    for (sub *s = list; s; s = s->next)
      if (s->folded && s->err == 0) {
        st->stats.folded_ops += folded_ops;
        break;
      }
    if (st->be->round_trips) st->stats.round_trips = st->be->round_trips(st->wconn);
    st->stats.commit_ns_total += commit_ns;
    st->stats.batch_ns_total += st->batch_ns;
    st->stats.wait_ns_total += wait_ns;
    st->stats.cpu_ns_total += cpu_ns;
    st->stats.folded_charges += st->batch_charges;
    if (commit_ns > st->stats.commit_ns_max) st->stats.commit_ns_max = commit_ns;
    for (int b = 0; b < TG_STORE_HIST_BUCKETS; b++) {
      if (commit_ns / 1000 <= tg_store_commit_bucket_us[b]) {
        st->stats.commit_hist[b]++;
        break;
      }
    }
    pthread_mutex_unlock(&st->mu);

    /*
     * One wake-up per event base per commit: the first submission of a base carries the
     * others of this commit (riders), whose callbacks run after its own, in queue order.
     */
    sub *carriers[16];
    sub *tails[16];
    size_t nc = 0;
    for (sub *s = list, *next; s; s = next) {
      next = s->next;
      s->next = NULL;
      if (s->how == DELIVER_EVBASE) {
        struct event_base *b = event_get_base(s->ev);
        size_t i = 0;
        while (i < nc && event_get_base(carriers[i]->ev) != b) i++;
        if (i < nc) {
          tails[i]->next = s;
          tails[i] = s;
          if (carriers[i]->riders == NULL) carriers[i]->riders = s;
          continue;
        }
        if (nc < sizeof carriers / sizeof *carriers) {
          carriers[nc] = tails[nc] = s;
          nc++;
          continue;
        }
      }
      deliver(s);
    }
    for (size_t i = 0; i < nc; i++) deliver(carriers[i]);
  }
  return NULL;
}

void tg__store_fault(tg_store *st, int where, int err) {
  atomic_store(&st->fault_err, err);
  atomic_store(&st->fault_where, where);
}

static int enqueue(tg_store *st, sub *s) {
  pthread_mutex_lock(&st->mu);
  if (st->closing) {
    pthread_mutex_unlock(&st->mu);
    return TG_ESTORE_CLOSED;
  }
  if (st->queued_ops + s->n > st->opts.queue_max_ops) {
    pthread_mutex_unlock(&st->mu);
    return TG_EBUSY;
  }
  st->queued_ops += s->n;
  s->queued_ns = mono_ns();
  if (st->tail) st->tail->next = s;
  else st->head = s;
  st->tail = s;
  pthread_cond_signal(&st->cv);
  pthread_mutex_unlock(&st->mu);
  return 0;
}

/* ------------------------------------------------------------------------- */
/* Public API. */

int tg_store_open(tg_store **out, const char *uri, const tg_store_options *opts) {
  *out = NULL;
  const tg__store_backend *be;
  const char *target;
  int rc = resolve(uri, &be, &target);
  if (rc < 0) return rc;
  tg_store *st = calloc(1, sizeof(*st));
  if (st == NULL) return TG_ENOMEM;
  if (opts) st->opts = *opts;
  if (st->opts.busy_timeout_ms <= 0) st->opts.busy_timeout_ms = DEFAULT_BUSY_MS;
  if (st->opts.queue_max_ops == 0) st->opts.queue_max_ops = TG_STORE_QUEUE_MAX_OPS;
  if (st->opts.batch_max == 0) st->opts.batch_max = DEFAULT_BATCH_MAX;
  st->be = be;
  st->target = strdup(target);
  pthread_mutex_init(&st->mu, NULL);
  pthread_cond_init(&st->cv, NULL);
  pthread_mutex_init(&st->pool_mu, NULL);
  pthread_cond_init(&st->pool_cv, NULL);
  if (st->target == NULL) {
    rc = TG_ENOMEM;
    goto fail;
  }
  if ((rc = be->open(&st->wconn, st->target, &st->opts, 1)) < 0) goto fail;
  if (st->opts.no_migrate) {
    int cur, latest;
    if ((rc = be->version(st->wconn, &cur, &latest)) < 0) goto fail;
    if (cur == 0 && st->opts.init_empty) {
      int applied;
      if ((rc = be->migrate(st->wconn, &applied)) < 0) goto fail;
    } else if (cur != latest) {
      rc = cur < latest ? TG_ESTORE_SCHEMA_OLD : TG_ESTORE_SCHEMA;
      goto fail;
    }
  } else {
    int applied;
    if ((rc = be->migrate(st->wconn, &applied)) < 0) goto fail;
  }
  if (pthread_create(&st->writer, NULL, writer_main, st) != 0) {
    rc = TG_ENOMEM;
    goto fail;
  }
  st->writer_started = 1;
  *out = st;
  return 0;
fail:
  tg_store_close(st);
  return rc;
}

void tg_store_close(tg_store *st) {
  if (st == NULL) return;
  if (st->writer_started) {
    pthread_mutex_lock(&st->mu);
    st->closing = 1;
    pthread_cond_signal(&st->cv);
    pthread_mutex_unlock(&st->mu);
    pthread_join(st->writer, NULL);
  }
  if (st->wconn) st->be->close(st->wconn);
  for (size_t i = 0; i < st->pool_free; i++) st->be->close(st->pool[i]);
  pthread_mutex_destroy(&st->mu);
  pthread_cond_destroy(&st->cv);
  pthread_mutex_destroy(&st->pool_mu);
  pthread_cond_destroy(&st->pool_cv);
  free(st->target);
  free(st);
}

int tg_store_migrate(const char *uri, int *applied) {
  *applied = 0;
  const tg__store_backend *be;
  const char *target;
  int rc = resolve(uri, &be, &target);
  if (rc < 0) return rc;
  tg_store_options o = {.busy_timeout_ms = DEFAULT_BUSY_MS};
  tg__store_conn *c;
  if ((rc = be->open(&c, target, &o, 1)) < 0) return rc;
  rc = be->migrate(c, applied);
  be->close(c);
  return rc;
}

int tg_store_submit(tg_store *st, const tg_store_op *ops, size_t n, tg_store_cb cb, void *arg) {
  if (st == NULL || cb == NULL) return TG_EINVAL;
  sub *s;
  int rc = sub_new(&s, ops, n);
  if (rc < 0) return rc;
  s->how = DELIVER_DIRECT;
  s->cb = cb;
  s->arg = arg;
  if ((rc = enqueue(st, s)) < 0) free(s);
  return rc;
}

static void evbase_fire(evutil_socket_t fd, short what, void *p) {
  (void)fd;
  (void)what;
  sub *s = p;
  s->cb(s->arg, s->err, s->ops, s->n);
  sub *r = s->riders; /* chained by next, the carrier first */
  event_free(s->ev);
  free(s);
  for (sub *next; r; r = next) {
    next = r->next;
    r->cb(r->arg, r->err, r->ops, r->n);
    event_free(r->ev);
    free(r);
  }
}

int tg_store_submit_evbase(tg_store *st, const tg_store_op *ops, size_t n,
                           struct event_base *base, tg_store_cb cb, void *arg) {
  if (st == NULL || cb == NULL || base == NULL) return TG_EINVAL;
  sub *s;
  int rc = sub_new(&s, ops, n);
  if (rc < 0) return rc;
  s->how = DELIVER_EVBASE;
  s->cb = cb;
  s->arg = arg;
  s->ev = event_new(base, -1, 0, evbase_fire, s);
  if (s->ev == NULL) {
    free(s);
    return TG_ENOMEM;
  }
  if ((rc = enqueue(st, s)) < 0) {
    event_free(s->ev);
    free(s);
  }
  return rc;
}

int tg_store_submit_pair(tg_store *st, const tg_store_op *ops, size_t n,
                         struct event_base *base, tg_store_cb cb, void *arg,
                         const tg_store_op *ops2, size_t n2, tg_store_cb cb2, void *arg2) {
  if (st == NULL || cb == NULL || base == NULL || cb2 == NULL) return TG_EINVAL;
  sub *a, *b;
  int rc = sub_new(&a, ops, n);
  if (rc < 0) return rc;
  if ((rc = sub_new(&b, ops2, n2)) < 0) {
    free(a);
    return rc;
  }
  a->how = DELIVER_EVBASE;
  a->cb = cb;
  a->arg = arg;
  b->how = DELIVER_DIRECT;
  b->cb = cb2;
  b->arg = arg2;
  if ((a->ev = event_new(base, -1, 0, evbase_fire, a)) == NULL) {
    free(a);
    free(b);
    return TG_ENOMEM;
  }
  /* Both under one lock: the writer takes them in the same batch (unless batch_max cuts it). */
  pthread_mutex_lock(&st->mu);
  if (st->closing) rc = TG_ESTORE_CLOSED;
  else if (st->queued_ops + n + n2 > st->opts.queue_max_ops) rc = TG_EBUSY;
  if (rc == 0) {
    st->queued_ops += n + n2;
    a->queued_ns = b->queued_ns = mono_ns();
    a->next = b;
    if (st->tail) st->tail->next = a;
    else st->head = a;
    st->tail = b;
    pthread_cond_signal(&st->cv);
  }
  pthread_mutex_unlock(&st->mu);
  if (rc < 0) {
    event_free(a->ev);
    free(a);
    free(b);
  }
  return rc;
}

int tg_store_write(tg_store *st, tg_store_op *ops, size_t n) {
  if (st == NULL) return TG_EINVAL;
  /* From a store callback this would wait for itself forever. */
  if (st->writer_started && pthread_equal(pthread_self(), st->writer)) return TG_EPERM;
  sub *s;
  int rc = sub_new(&s, ops, n);
  if (rc < 0) return rc;
  pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
  pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
  int done = 0;
  s->how = DELIVER_SYNC;
  s->sync_mu = &mu;
  s->sync_cv = &cv;
  s->sync_done = &done;
  if ((rc = enqueue(st, s)) < 0) {
    free(s);
    return rc;
  }
  pthread_mutex_lock(&mu);
  while (!done) pthread_cond_wait(&cv, &mu);
  pthread_mutex_unlock(&mu);
  for (size_t i = 0; i < n; i++) copy_outs(&ops[i], &s->ops[i]);
  rc = s->err;
  free(s);
  pthread_cond_destroy(&cv);
  pthread_mutex_destroy(&mu);
  return rc;
}

void tg_store_get_stats(tg_store *st, tg_store_stats *out) {
  pthread_mutex_lock(&st->mu);
  *out = st->stats;
  out->queue_ops = st->queued_ops;
  pthread_mutex_unlock(&st->mu);
}

/* ------------------------------------------------------------------------- */
/* Reads: borrow a pooled read connection for the duration of one call. */

static int pool_get(tg_store *st, tg__store_conn **c) {
  pthread_mutex_lock(&st->pool_mu);
  for (;;) {
    if (st->pool_free > 0) {
      *c = st->pool[--st->pool_free];
      pthread_mutex_unlock(&st->pool_mu);
      return 0;
    }
    if (st->pool_total < READ_POOL_MAX) break;
    pthread_cond_wait(&st->pool_cv, &st->pool_mu);
  }
  st->pool_total++;
  pthread_mutex_unlock(&st->pool_mu);
  int rc = st->be->open(c, st->target, &st->opts, 0);
  if (rc < 0) {
    pthread_mutex_lock(&st->pool_mu);
    st->pool_total--;
    pthread_cond_signal(&st->pool_cv);
    pthread_mutex_unlock(&st->pool_mu);
  }
  return rc;
}

static void pool_put(tg_store *st, tg__store_conn *c) {
  pthread_mutex_lock(&st->pool_mu);
  st->pool[st->pool_free++] = c;
  pthread_cond_signal(&st->pool_cv);
  pthread_mutex_unlock(&st->pool_mu);
}

#define WITH_READ(st, call)              \
  do {                                   \
    tg__store_conn *c_;                  \
    int rc_ = pool_get((st), &c_);       \
    if (rc_ < 0) return rc_;             \
    rc_ = (st)->be->call;                \
    pool_put((st), c_);                  \
    return rc_;                          \
  } while (0)

int tg_store_channel_get(tg_store *st, const tg_hash *id, tg_store_channel *out) {
  memset(out, 0, sizeof(*out));
  WITH_READ(st, channel_get(c_, id, out));
}

int tg_store_channels_unsettled(tg_store *st, tg_store_channel_fn fn, void *arg) {
  WITH_READ(st, channels_iter(c_, 1, NULL, fn, arg));
}

int tg_store_channels_list(tg_store *st, const tg_address *payer, tg_store_channel_fn fn,
                           void *arg) {
  WITH_READ(st, channels_iter(c_, 0, payer, fn, arg));
}

int tg_store_charges_by_channel(tg_store *st, const tg_hash *channel_id, int64_t after_id,
                                size_t limit, tg_store_charge_fn fn, void *arg) {
  WITH_READ(st, charges_iter(c_, channel_id, NULL, after_id, limit, fn, arg));
}

int tg_store_charges_by_payer(tg_store *st, const tg_address *payer, int64_t after_id,
                              size_t limit, tg_store_charge_fn fn, void *arg) {
  WITH_READ(st, charges_iter(c_, NULL, payer, after_id, limit, fn, arg));
}

int tg_store_charge_get(tg_store *st, const char *request_id, tg_store_charge *out) {
  memset(out, 0, sizeof(*out));
  if (request_id == NULL) return TG_EINVAL;
  WITH_READ(st, charge_get(c_, request_id, out));
}

int tg_store_totals_get(tg_store *st, const tg_address *payer, tg_store_scheme scheme,
                        tg_store_totals *out) {
  memset(out, 0, sizeof(*out));
  WITH_READ(st, totals_get(c_, payer, scheme, out));
}

int tg_store_exact_list(tg_store *st, tg_store_exact_fn fn, void *arg) {
  WITH_READ(st, exact_iter(c_, fn, arg));
}

int tg_store_exact_get(tg_store *st, const tg_address *token, const tg_address *payer,
                       const tg_hash *nonce, tg_store_exact *out) {
  memset(out, 0, sizeof(*out));
  WITH_READ(st, exact_get(c_, token, payer, nonce, out));
}

int tg_store_payid_get(tg_store *st, const char *id, tg_store_payid *out) {
  memset(out, 0, sizeof(*out));
  if (id == NULL) return TG_EINVAL;
  WITH_READ(st, payid_get(c_, id, out));
}

int tg_store_session_get(tg_store *st, const tg_hash *token_hash, tg_store_session *out) {
  memset(out, 0, sizeof *out);
  WITH_READ(st, session_get(c_, token_hash, out));
}

int tg_store_pass_usage_get(tg_store *st, const tg_u256 *pass_id, const tg_address *holder,
                            int64_t period_start, tg_store_pass_usage *out) {
  memset(out, 0, sizeof(*out));
  WITH_READ(st, pass_get(c_, pass_id, holder, period_start, out));
}

int tg_store_run_open_get(tg_store *st, tg_store_settle_run *out) {
  memset(out, 0, sizeof(*out));
  WITH_READ(st, run_open_get(c_, out));
}

int tg_store_run_items(tg_store *st, int64_t run_id, tg_store_item_fn fn, void *arg) {
  WITH_READ(st, run_items(c_, run_id, fn, arg));
}

int tg_store_lease_get(tg_store *st, const char *name, tg_store_lease *out) {
  memset(out, 0, sizeof(*out));
  if (name == NULL) return TG_EINVAL;
  WITH_READ(st, lease_get(c_, name, out));
}

int tg_store_schema_version(tg_store *st, int *current, int *latest) {
  *current = *latest = 0;
  /* The writer connection belongs to the writer thread; ask a read connection. */
  WITH_READ(st, version(c_, current, latest));
}

const char *tg_store_scheme_name(tg_store_scheme s) {
  static const char *const names[] = {"exact", "channel", "pass"};
  return (unsigned)s < 3 ? names[s] : "unknown";
}

const char *tg_store_exact_status_name(tg_store_exact_status s) {
  static const char *const names[] = {"verified", "submitted", "mined", "confirmed", "failed"};
  return (unsigned)s < 5 ? names[s] : "unknown";
}

const char *tg_store_settle_step_name(tg_store_settle_step s) {
  static const char *const names[] = {"planned", "signed",  "sent",   "mined",
                                      "confirmed", "skipped", "dropped"};
  return (unsigned)s < 7 ? names[s] : "unknown";
}
