/*
 * Headroom leases (docs/STORE.md, "Headroom leases").
 *
 * A slice is k holds ("units") of one call's maximum price each, taken in the
 * store by one submission of k RESERVE ops: the store checks them under the
 * channel's row lock against min(ceiling, balance) + credit limit together with
 * every instance's charges and holds, exactly as a per-call hold, all or none.
 * A call admitted on a unit needs no store write at admission; its charge ends
 * the unit's hold instead of its own (CHARGE.hold_id), so charged + reserved
 * does not grow at completion. The next slice is submitted with a charge
 * (tg_store_submit_pair: same batch, same round trip) when half of the last one
 * is used.
 *
 * Threads: admission and completion run on the HTTP workers' loops, a slice's
 * callback on the store's writer thread; one mutex guards the pools.
 */
#include "pay/headroom.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "tollgate/error.h"
#include "tollgate/u256.h"

#define HR_SLICE_MIN 4
#define HR_POOL_CAP (2 * TG_HEADROOM_SLICE_MAX)
#define HR_FAST_MS 1000    /* a slice used up faster than this: the next one doubles */
#define HR_BACKOFF_MS 1000 /* after a refused slice or a dropped pool */
#define HR_SLOTS 256

typedef struct {
  char id[TG_HEADROOM_ID_MAX];
  tg_u256 amount;
  int64_t use_until; /* ms: not admitted on after this (its hold lapses at twice the age) */
} hr_unit;

typedef struct hr_pool {
  struct hr_pool *next;
  tg_hash channel;
  hr_unit units[HR_POOL_CAP]; /* free units, oldest first */
  size_t n;
  uint64_t gen;      /* bumped when the pool is dropped: a slice in flight is then given back */
  int pending;       /* a slice submission in flight */
  size_t k;          /* the last slice's size */
  int64_t slice_at;  /* when it landed */
  int64_t backoff_until;
  int have_free;
  tg_u256 free;      /* the channel's free headroom as last observed */
} hr_pool;

struct tg_headroom {
  pthread_mutex_t mu;
  tg_store *st;
  char *instance;
  int64_t ttl_ms;
  char prefix[40]; /* "hr-<16 random hex>-": unit ids are unique across instances and runs */
  uint64_t seq;
  hr_pool *slots[HR_SLOTS];
  tg_headroom_stats stats;
};

typedef struct {
  tg_headroom *h;
  tg_hash channel;
  uint64_t gen;
  size_t k;
  hr_unit units[TG_HEADROOM_SLICE_MAX];
} hr_ticket;

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static hr_pool *pool_find(tg_headroom *h, const tg_hash *ch, int create) {
  hr_pool **slot = &h->slots[ch->b[0] ^ ch->b[31]];
  for (hr_pool *p = *slot; p; p = p->next)
    if (memcmp(p->channel.b, ch->b, 32) == 0) return p;
  if (!create) return NULL;
  hr_pool *p = calloc(1, sizeof *p);
  if (!p) abort();
  p->channel = *ch;
  p->next = *slot;
  *slot = p;
  return p;
}

static void on_given_back(void *arg, int err, const tg_store_op *ops, size_t n) {
  (void)err; /* a unit not given back lapses by itself (its expiry, or the instance's lease) */
  (void)ops;
  (void)n;
  free(arg);
}

/* Gives units back to the channel's headroom (UNRESERVE), without waiting. */
static void give_back(tg_headroom *h, const tg_hash *ch, const hr_unit *u, size_t n) {
  if (n == 0) return;
  tg_store_op *ops = calloc(n, sizeof *ops);
  if (!ops) abort();
  for (size_t i = 0; i < n; i++) {
    ops[i].kind = TG_STORE_OP_UNRESERVE;
    ops[i].u.reserve.channel_id = *ch;
    ops[i].u.reserve.request_id = u[i].id;
  }
  /* The ops are copied by submit; the callback only frees its argument. */
  for (size_t off = 0; off < n; off += TG_STORE_SUBMIT_MAX_OPS) {
    size_t m = n - off < TG_STORE_SUBMIT_MAX_OPS ? n - off : TG_STORE_SUBMIT_MAX_OPS;
    void *arg = malloc(1);
    if (!arg) abort();
    if (tg_store_submit(h->st, ops + off, m, on_given_back, arg) != 0) free(arg);
  }
  free(ops);
}

int tg_headroom_new(tg_headroom **out, tg_store *st, const char *instance, int64_t ttl_ms) {
  *out = NULL;
  if (!st || !instance || !*instance || ttl_ms < 2000) return TG_EINVAL;
  tg_headroom *h = calloc(1, sizeof *h);
  if (!h) abort();
  pthread_mutex_init(&h->mu, NULL);
  h->st = st;
  h->instance = strdup(instance);
  if (!h->instance) abort();
  h->ttl_ms = ttl_ms;
  uint8_t r[8];
  randombytes_buf(r, sizeof r);
  snprintf(h->prefix, sizeof h->prefix, "hr-%02x%02x%02x%02x%02x%02x%02x%02x-", r[0], r[1], r[2],
           r[3], r[4], r[5], r[6], r[7]);
  *out = h;
  return TG_OK;
}

void tg_headroom_free(tg_headroom *h) {
  if (!h) return;
  for (int i = 0; i < HR_SLOTS; i++) {
    for (hr_pool *p = h->slots[i], *next; p; p = next) {
      next = p->next;
      if (p->n) {
        tg_store_op ops[HR_POOL_CAP];
        memset(ops, 0, sizeof ops);
        for (size_t j = 0; j < p->n; j++) {
          ops[j].kind = TG_STORE_OP_UNRESERVE;
          ops[j].u.reserve.channel_id = p->channel;
          ops[j].u.reserve.request_id = p->units[j].id;
        }
        if (tg_store_write(h->st, ops, p->n) == 0) h->stats.units_given_back += p->n;
      }
      free(p);
    }
  }
  pthread_mutex_destroy(&h->mu);
  free(h->instance);
  free(h);
}

/* Drops the pool's units, copying them to `out` (the caller gives them back unlocked). */
static size_t pool_empty(tg_headroom *h, hr_pool *p, hr_unit *out, int64_t now) {
  size_t n = p->n;
  if (n || p->k || p->pending) h->stats.pools_dropped++; /* a lease, not an empty pool again */
  memcpy(out, p->units, n * sizeof *out);
  p->n = 0;
  p->gen++;
  p->k = 0;
  p->have_free = 0;
  p->backoff_until = now + HR_BACKOFF_MS;
  h->stats.units_given_back += n;
  return n;
}

int tg_headroom_take(tg_headroom *h, const tg_hash *channel, const tg_u256 *max,
                     char id[TG_HEADROOM_ID_MAX], tg_u256 *amount) {
  hr_unit stale[HR_POOL_CAP];
  size_t nstale = 0;
  int got = 0;
  int64_t now = now_ms();
  pthread_mutex_lock(&h->mu);
  hr_pool *p = pool_find(h, channel, 0);
  if (p) {
    /* Units past their use are given back (oldest first: they are at the front). */
    while (nstale < p->n && p->units[nstale].use_until <= now) nstale++;
    if (nstale) {
      memcpy(stale, p->units, nstale * sizeof *stale);
      memmove(p->units, p->units + nstale, (p->n - nstale) * sizeof *p->units);
      p->n -= nstale;
      h->stats.units_given_back += nstale;
    }
    for (size_t i = 0; i < p->n; i++) {
      if (tg_u256_cmp(&p->units[i].amount, max) >= 0) {
        memcpy(id, p->units[i].id, TG_HEADROOM_ID_MAX);
        *amount = p->units[i].amount;
        memmove(p->units + i, p->units + i + 1, (p->n - i - 1) * sizeof *p->units);
        p->n--;
        h->stats.units_taken++;
        got = 1;
        break;
      }
    }
  }
  pthread_mutex_unlock(&h->mu);
  give_back(h, channel, stale, nstale);
  return got;
}

void tg_headroom_put_back(tg_headroom *h, const tg_hash *channel, const char *id,
                          const tg_u256 *amount) {
  hr_unit u;
  memset(&u, 0, sizeof u);
  snprintf(u.id, sizeof u.id, "%s", id);
  u.amount = *amount;
  int back = 0;
  pthread_mutex_lock(&h->mu);
  hr_pool *p = pool_find(h, channel, 0);
  /* Back to the front (the oldest end); it keeps the pool's oldest use-by time, so it never
   * outlives the units taken with it. A full or dropped pool gives it back instead. */
  if (p && p->n > 0 && p->n < HR_POOL_CAP) {
    u.use_until = p->units[0].use_until;
    memmove(p->units + 1, p->units, p->n * sizeof *p->units);
    p->units[0] = u;
    p->n++;
    h->stats.units_taken--;
  } else {
    back = 1;
    h->stats.units_given_back++;
  }
  pthread_mutex_unlock(&h->mu);
  if (back) give_back(h, channel, &u, 1);
}

void tg_headroom_drop(tg_headroom *h, const tg_hash *channel) {
  hr_unit units[HR_POOL_CAP];
  size_t n = 0;
  pthread_mutex_lock(&h->mu);
  hr_pool *p = pool_find(h, channel, 0);
  if (p) n = pool_empty(h, p, units, now_ms());
  pthread_mutex_unlock(&h->mu);
  give_back(h, channel, units, n);
}

void tg_headroom_observe(tg_headroom *h, const tg_hash *channel, const tg_u256 *charged,
                         const tg_u256 *reserved, const tg_u256 *ceiling, const tg_u256 *balance,
                         uint64_t withdraw_requested_at, const tg_u256 *credit, int unit_lost) {
  /* limit = min(ceiling, balance) + credit (saturated); used = charged + reserved */
  tg_u256 limit, used, free;
  limit = tg_u256_cmp(ceiling, balance) < 0 ? *ceiling : *balance;
  if (tg_u256_add(&limit, &limit, credit) < 0) memset(limit.b, 0xff, sizeof limit.b);
  int over = tg_u256_add(&used, charged, reserved) < 0 || tg_u256_cmp(&used, &limit) > 0;
  if (!over && tg_u256_sub(&free, &limit, &used) < 0) over = 1;
  hr_unit units[HR_POOL_CAP];
  size_t n = 0;
  int64_t now = now_ms();
  pthread_mutex_lock(&h->mu);
  hr_pool *p = pool_find(h, channel, !(over || withdraw_requested_at || unit_lost));
  if (p) {
    if (over || withdraw_requested_at || unit_lost) {
      /* A withdrawal, a balance below what is charged and held, or a unit reclaimed under
       * us (this instance was taken for dead): no more admissions on units; per-call holds
       * decide from here. */
      n = pool_empty(h, p, units, now);
    } else {
      p->free = free;
      p->have_free = 1;
    }
  }
  pthread_mutex_unlock(&h->mu);
  give_back(h, channel, units, n);
}

size_t tg_headroom_slice_ops(tg_headroom *h, const tg_hash *channel, const tg_u256 *unit,
                             const tg_u256 *credit, tg_store_op *ops, void **ticket) {
  *ticket = NULL;
  if (tg_u256_is_zero(unit)) return 0;
  int64_t now = now_ms();
  size_t k = 0;
  hr_ticket *t = NULL;
  pthread_mutex_lock(&h->mu);
  hr_pool *p = pool_find(h, channel, 0);
  if (!p || p->pending || !p->have_free || now < p->backoff_until || p->n * 2 > p->k) goto out;
  /* Size: the last slice, doubled when it was used up within HR_FAST_MS; at least
   * HR_SLICE_MIN, at most TG_HEADROOM_SLICE_MAX and a quarter of the free headroom. */
  k = p->k < HR_SLICE_MIN ? HR_SLICE_MIN : p->k;
  if (p->k && now - p->slice_at < HR_FAST_MS) k *= 2;
  if (k > TG_HEADROOM_SLICE_MAX) k = TG_HEADROOM_SLICE_MAX;
  if (p->n + k > HR_POOL_CAP) k = HR_POOL_CAP - p->n;
  for (; k >= 2; k--) { /* 4 * k * unit <= free */
    tg_u256 need;
    if (tg_u256_mul_u64(&need, unit, 4 * (uint64_t)k) == 0 && tg_u256_cmp(&need, &p->free) <= 0)
      break;
  }
  if (k < 2) {
    k = 0; /* near the ceiling: per-call holds */
    goto out;
  }
  t = calloc(1, sizeof *t);
  if (!t) abort();
  t->h = h;
  t->channel = *channel;
  t->gen = p->gen;
  t->k = k;
  p->pending = 1;
  /* The units of a slice are usable for half their hold's lifetime. */
  int64_t ttl = h->ttl_ms;
  for (size_t i = 0; i < k; i++) {
    snprintf(t->units[i].id, TG_HEADROOM_ID_MAX, "%s%llu", h->prefix,
             (unsigned long long)++h->seq);
    t->units[i].amount = *unit;
    memset(&ops[i], 0, sizeof ops[i]);
    ops[i].kind = TG_STORE_OP_RESERVE;
    ops[i].u.reserve.channel_id = *channel;
    ops[i].u.reserve.request_id = t->units[i].id;
    ops[i].u.reserve.instance = h->instance;
    ops[i].u.reserve.amount = *unit;
    ops[i].u.reserve.credit_limit = *credit;
    ops[i].u.reserve.ttl_ms = ttl;
  }
out:
  pthread_mutex_unlock(&h->mu);
  *ticket = t;
  return t ? k : 0;
}

void tg_headroom_slice_done(void *ticket, int err, const tg_store_op *ops, size_t n) {
  hr_ticket *t = ticket;
  tg_headroom *h = t->h;
  int64_t now = now_ms();
  int back = 0;
  pthread_mutex_lock(&h->mu);
  hr_pool *p = pool_find(h, &t->channel, 0);
  if (p) p->pending = 0;
  if (err == 0) {
    h->stats.slices++;
    if (p && p->gen == t->gen && p->n + t->k <= HR_POOL_CAP) {
      /* Usable for half the hold's lifetime, counted from now (the hold's expiry was set
       * when the writer applied it, a moment ago). */
      for (size_t i = 0; i < t->k; i++) {
        t->units[i].use_until = now + h->ttl_ms / 2;
        p->units[p->n++] = t->units[i];
      }
      p->k = t->k;
      p->slice_at = now;
    } else {
      back = 1; /* dropped meanwhile: not to be used */
      h->stats.units_given_back += t->k;
    }
  } else {
    h->stats.slices_refused++;
    if (p) {
      p->backoff_until = now + HR_BACKOFF_MS;
      /* The refusal says what the channel has left (a RESERVE's outputs). */
      if (ops && n && err == TG_ECHANNEL_SHORT) p->have_free = 0;
    }
  }
  pthread_mutex_unlock(&h->mu);
  if (back) give_back(h, &t->channel, t->units, t->k);
  free(t);
}

void tg_headroom_stats_get(tg_headroom *h, tg_headroom_stats *out) {
  pthread_mutex_lock(&h->mu);
  *out = h->stats;
  out->units_free = 0;
  for (int i = 0; i < HR_SLOTS; i++)
    for (hr_pool *p = h->slots[i]; p; p = p->next) out->units_free += p->n;
  pthread_mutex_unlock(&h->mu);
}
