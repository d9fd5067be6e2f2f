/* Money of `exact` payers on its way: see pending.h. */
#include "pay/pending.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate/u256.h"

#define PENDING_SLOTS 256
#define PENDING_GRACE_DEFAULT 600u

typedef struct reservation {
  struct reservation *next;
  tg_hash nonce;
  tg_u256 value;
  uint64_t valid_before;
} reservation;

typedef struct payer {
  struct payer *next;
  tg_address addr;
  tg_u256 pending;     /* sum of the reservations' values */
  tg_u256 released;    /* everything released so far, modulo 2^256 (read overlaps) */
  size_t readers;      /* balance reads in progress (marks not ended) */
  int saturated;       /* the sum passed 2^256 - 1 (tg_pending_hold): pending is all ones */
  reservation *res;
} payer;

struct tg_pending {
  pthread_mutex_t mu;
  uint64_t grace;
  payer *slots[PENDING_SLOTS];
  size_t n_payers, n_res;
  uint64_t refused, lapsed;
};

int tg_pending_new(tg_pending **out, uint64_t grace) {
  *out = NULL;
  tg_pending *t = calloc(1, sizeof *t);
  if (!t) return TG_ENOMEM;
  if (pthread_mutex_init(&t->mu, NULL) != 0) {
    free(t);
    return TG_ENOMEM;
  }
  t->grace = grace ? grace : PENDING_GRACE_DEFAULT;
  *out = t;
  return TG_OK;
}

void tg_pending_free(tg_pending *t) {
  if (!t) return;
  for (size_t i = 0; i < PENDING_SLOTS; i++) {
    payer *p = t->slots[i];
    while (p) {
      payer *pn = p->next;
      reservation *r = p->res;
      while (r) {
        reservation *rn = r->next;
        free(r);
        r = rn;
      }
      free(p);
      p = pn;
    }
  }
  pthread_mutex_destroy(&t->mu);
  free(t);
}

static payer **find_payer(tg_pending *t, const tg_address *a) {
  payer **pp = &t->slots[a->b[19]]; /* addresses are hashes: the last byte spreads them */
  while (*pp && memcmp((*pp)->addr.b, a->b, 20) != 0) pp = &(*pp)->next;
  return pp;
}

static payer *get_payer(tg_pending *t, const tg_address *a) {
  payer **pp = find_payer(t, a);
  if (*pp) return *pp;
  payer *p = calloc(1, sizeof *p);
  if (!p) abort();
  p->addr = *a;
  *pp = p;
  t->n_payers++;
  return p;
}

/* Frees the payer's entry when nothing refers to it any more. */
static void put_payer(tg_pending *t, payer *p) {
  if (p->readers || p->res) return;
  payer **pp = find_payer(t, &p->addr);
  *pp = p->next;
  free(p);
  t->n_payers--;
}

/* The sum of the payer's reservations, saturated at 2^256 - 1. */
static void resum(payer *p) {
  tg_u256_zero(&p->pending);
  p->saturated = 0;
  for (reservation *r = p->res; r; r = r->next) {
    if (tg_u256_add(&p->pending, &p->pending, &r->value)) {
      memset(&p->pending, 0xff, sizeof p->pending);
      p->saturated = 1;
      return;
    }
  }
}

/* Removes one reservation: its value leaves `pending` and joins `released`. */
static void drop(tg_pending *t, payer *p, reservation **rp) {
  reservation *r = *rp;
  *rp = r->next;
  if (p->saturated) resum(p);
  else if (tg_u256_sub(&p->pending, &p->pending, &r->value)) resum(p); /* never: it holds r */
  if (tg_u256_add(&p->released, &p->released, &r->value)) {
    /* modulo 2^256 by design: only differences of it are used */
  }
  free(r);
  t->n_res--;
}

static void sweep(tg_pending *t, payer *p, uint64_t now) {
  for (reservation **rp = &p->res; *rp;) {
    uint64_t until = (*rp)->valid_before + t->grace;
    if (until < (*rp)->valid_before) until = UINT64_MAX;
    if (now > until) {
      drop(t, p, rp);
      t->lapsed++;
    } else {
      rp = &(*rp)->next;
    }
  }
}

static reservation **find_res(payer *p, const tg_hash *nonce) {
  reservation **rp = &p->res;
  while (*rp && memcmp((*rp)->nonce.b, nonce->b, 32) != 0) rp = &(*rp)->next;
  return rp;
}

void tg_pending_read_begin(tg_pending *t, const tg_address *payer_addr, tg_pending_mark *m) {
  pthread_mutex_lock(&t->mu);
  payer *p = get_payer(t, payer_addr);
  p->readers++;
  m->payer = *payer_addr;
  m->released = p->released;
  m->active = 1;
  pthread_mutex_unlock(&t->mu);
}

/* Under the mutex: ends the mark; the payer's entry (created when absent) is returned. */
static payer *end_mark(tg_pending *t, tg_pending_mark *m, const tg_address *payer_addr,
                       tg_u256 *overlap) {
  tg_u256_zero(overlap);
  if (m && m->active) {
    payer *mp = *find_payer(t, &m->payer);
    if (mp) {
      if (tg_u256_sub(overlap, &mp->released, &m->released)) {
        /* modulo 2^256: the total wrapped since the mark, the difference is still exact */
      }
      mp->readers--;
      if (memcmp(m->payer.b, payer_addr->b, 20) != 0) {
        tg_u256_zero(overlap); /* another payer's mark: its releases do not count here */
        put_payer(t, mp);
      }
    }
    m->active = 0;
  }
  return get_payer(t, payer_addr);
}

void tg_pending_read_end(tg_pending *t, tg_pending_mark *m) {
  if (!m || !m->active) return;
  pthread_mutex_lock(&t->mu);
  payer *p = *find_payer(t, &m->payer);
  if (p) {
    p->readers--;
    put_payer(t, p);
  }
  m->active = 0;
  pthread_mutex_unlock(&t->mu);
}

/* Under the mutex: balance - pending - overlap >= value? */
static int funded(const payer *p, const tg_u256 *overlap, const tg_u256 *value,
                  const tg_u256 *balance) {
  tg_u256 owed;
  if (tg_u256_add(&owed, &p->pending, overlap)) return 0;
  if (tg_u256_add(&owed, &owed, value)) return 0;
  return tg_u256_cmp(balance, &owed) >= 0;
}

int tg_pending_reserve(tg_pending *t, tg_pending_mark *m, const tg_address *payer_addr,
                       const tg_hash *nonce, const tg_u256 *value, const tg_u256 *balance,
                       uint64_t valid_before, uint64_t now) {
  int rc = TG_OK;
  tg_u256 overlap;
  pthread_mutex_lock(&t->mu);
  payer *p = end_mark(t, m, payer_addr, &overlap);
  sweep(t, p, now);
  if (*find_res(p, nonce)) {
    rc = TG_EEXISTS;
  } else if (!funded(p, &overlap, value, balance)) {
    rc = TG_EPAY_FUNDS;
    t->refused++;
  } else {
    reservation *r = calloc(1, sizeof *r);
    if (!r) abort();
    r->nonce = *nonce;
    r->value = *value;
    r->valid_before = valid_before;
    r->next = p->res;
    p->res = r;
    if (tg_u256_add(&p->pending, &p->pending, value)) resum(p); /* never: funded() proved it fits */
    t->n_res++;
  }
  put_payer(t, p);
  pthread_mutex_unlock(&t->mu);
  return rc;
}

int tg_pending_check(tg_pending *t, tg_pending_mark *m, const tg_address *payer_addr,
                     const tg_u256 *value, const tg_u256 *balance, uint64_t now) {
  tg_u256 overlap;
  pthread_mutex_lock(&t->mu);
  payer *p = end_mark(t, m, payer_addr, &overlap);
  sweep(t, p, now);
  int rc = funded(p, &overlap, value, balance) ? TG_OK : TG_EPAY_FUNDS;
  put_payer(t, p);
  pthread_mutex_unlock(&t->mu);
  return rc;
}

int tg_pending_hold(tg_pending *t, const tg_address *payer_addr, const tg_hash *nonce,
                    const tg_u256 *value, uint64_t valid_before) {
  int rc = TG_OK;
  pthread_mutex_lock(&t->mu);
  payer *p = get_payer(t, payer_addr);
  if (*find_res(p, nonce)) {
    rc = TG_EEXISTS;
  } else {
    reservation *r = calloc(1, sizeof *r);
    if (!r) abort();
    r->nonce = *nonce;
    r->value = *value;
    r->valid_before = valid_before;
    r->next = p->res;
    p->res = r;
    /* no balance check: saturate rather than wrap (the payer is then refused until it ends) */
    if (!p->saturated && tg_u256_add(&p->pending, &p->pending, value)) {
      memset(&p->pending, 0xff, sizeof p->pending);
      p->saturated = 1;
    }
    t->n_res++;
  }
  put_payer(t, p);
  pthread_mutex_unlock(&t->mu);
  return rc;
}

int tg_pending_release(tg_pending *t, const tg_address *payer_addr, const tg_hash *nonce) {
  int found = 0;
  pthread_mutex_lock(&t->mu);
  payer *p = *find_payer(t, payer_addr);
  if (p) {
    reservation **rp = find_res(p, nonce);
    if (*rp) {
      drop(t, p, rp);
      found = 1;
    }
    put_payer(t, p);
  }
  pthread_mutex_unlock(&t->mu);
  return found;
}

void tg_pending_get(tg_pending *t, const tg_address *payer_addr, tg_u256 *out) {
  tg_u256_zero(out);
  pthread_mutex_lock(&t->mu);
  payer *p = *find_payer(t, payer_addr);
  if (p) *out = p->pending;
  pthread_mutex_unlock(&t->mu);
}

void tg_pending_stats_get(tg_pending *t, tg_pending_stats *out) {
  pthread_mutex_lock(&t->mu);
  out->payers = t->n_payers;
  out->reservations = t->n_res;
  out->refused = t->refused;
  out->lapsed = t->lapsed;
  pthread_mutex_unlock(&t->mu);
}
