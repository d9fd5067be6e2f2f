/* Money of `exact` payers on its way: see pending.h. */
#include "pay/pending.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate/u256.h"

#define PAYER_SLOTS 256
#define RES_SLOTS 4096 /* reservations, by nonce: thousands in flight for one payer stay O(1) */
#define PENDING_GRACE_DEFAULT 600u

typedef struct payer {
  struct payer *next;
  tg_address addr;
  tg_u256 pending;     /* sum of the reservations' values */
  tg_u256 released;    /* everything released so far, modulo 2^256 (read overlaps) */
  size_t readers;      /* balance reads in progress (marks not ended) */
  size_t n_res;        /* its reservations */
  int saturated;       /* the sum passed 2^256 - 1 (tg_pending_hold): pending is all ones */
} payer;

typedef struct reservation {
  struct reservation *next;
  payer *p;
  tg_hash nonce;
  tg_u256 value;
  uint64_t lapse;      /* validBefore + grace (saturated) */
} reservation;

struct tg_pending {
  pthread_mutex_t mu;
  uint64_t grace;
  payer *payers[PAYER_SLOTS];
  reservation *res[RES_SLOTS];
  size_t n_payers, n_res;
  uint64_t next_lapse; /* the earliest `lapse` of any reservation (UINT64_MAX: none) */
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
  t->next_lapse = UINT64_MAX;
  *out = t;
  return TG_OK;
}

void tg_pending_free(tg_pending *t) {
  if (!t) return;
  for (size_t i = 0; i < RES_SLOTS; i++) {
    reservation *r = t->res[i];
    while (r) {
      reservation *rn = r->next;
      free(r);
      r = rn;
    }
  }
  for (size_t i = 0; i < PAYER_SLOTS; i++) {
    payer *p = t->payers[i];
    while (p) {
      payer *pn = p->next;
      free(p);
      p = pn;
    }
  }
  pthread_mutex_destroy(&t->mu);
  free(t);
}

static payer **find_payer(tg_pending *t, const tg_address *a) {
  payer **pp = &t->payers[a->b[19]]; /* addresses are hashes: the last byte spreads them */
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
  if (p->readers || p->n_res) return;
  payer **pp = find_payer(t, &p->addr);
  *pp = p->next;
  free(p);
  t->n_payers--;
}

static size_t res_slot(const tg_hash *nonce) {
  return ((size_t)nonce->b[0] << 8 | nonce->b[1]) % RES_SLOTS; /* nonces are random */
}

static reservation **find_res(tg_pending *t, const payer *p, const tg_hash *nonce) {
  reservation **rp = &t->res[res_slot(nonce)];
  while (*rp && ((*rp)->p != p || memcmp((*rp)->nonce.b, nonce->b, 32) != 0)) rp = &(*rp)->next;
  return rp;
}

/* The sum of the payer's reservations, saturated at 2^256 - 1 (a scan: only after a
 * saturated sum lost a reservation). */
static void resum(tg_pending *t, payer *p) {
  tg_u256_zero(&p->pending);
  p->saturated = 0;
  for (size_t i = 0; i < RES_SLOTS; i++) {
    for (reservation *r = t->res[i]; r; r = r->next) {
      if (r->p == p && tg_u256_add(&p->pending, &p->pending, &r->value)) {
        memset(&p->pending, 0xff, sizeof p->pending);
        p->saturated = 1;
        return;
      }
    }
  }
}

/* Removes one reservation: its value leaves `pending` and joins `released`. */
static void drop(tg_pending *t, reservation **rp) {
  reservation *r = *rp;
  payer *p = r->p;
  *rp = r->next;
  p->n_res--;
  t->n_res--;
  if (p->saturated) resum(t, p);
  else if (tg_u256_sub(&p->pending, &p->pending, &r->value)) resum(t, p); /* never: it holds r */
  if (tg_u256_add(&p->released, &p->released, &r->value)) {
    /* modulo 2^256 by design: only differences of it are used */
  }
  free(r);
}

static void add(tg_pending *t, payer *p, const tg_hash *nonce, const tg_u256 *value,
                uint64_t valid_before) {
  reservation *r = calloc(1, sizeof *r);
  if (!r) abort();
  r->p = p;
  r->nonce = *nonce;
  r->value = *value;
  r->lapse = valid_before + t->grace < valid_before ? UINT64_MAX : valid_before + t->grace;
  reservation **head = &t->res[res_slot(nonce)];
  r->next = *head;
  *head = r;
  if (r->lapse < t->next_lapse) t->next_lapse = r->lapse;
  p->n_res++;
  t->n_res++;
  if (!p->saturated && tg_u256_add(&p->pending, &p->pending, value)) {
    memset(&p->pending, 0xff, sizeof p->pending); /* tg_pending_hold only: never wraps */
    p->saturated = 1;
  }
}

/* Drops every reservation past its lapse; a scan only when one is due. */
static void sweep(tg_pending *t, uint64_t now) {
  if (now <= t->next_lapse) return;
  uint64_t next = UINT64_MAX;
  for (size_t i = 0; i < RES_SLOTS; i++) {
    for (reservation **rp = &t->res[i]; *rp;) {
      if (now > (*rp)->lapse) {
        payer *p = (*rp)->p;
        drop(t, rp);
        t->lapsed++;
        put_payer(t, p);
      } else {
        if ((*rp)->lapse < next) next = (*rp)->lapse;
        rp = &(*rp)->next;
      }
    }
  }
  t->next_lapse = next;
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
  sweep(t, now);
  payer *p = end_mark(t, m, payer_addr, &overlap);
  if (*find_res(t, p, nonce)) {
    rc = TG_EEXISTS;
  } else if (!funded(p, &overlap, value, balance)) {
    rc = TG_EPAY_FUNDS;
    t->refused++;
  } else {
    add(t, p, nonce, value, valid_before); /* funded() proved the sum fits */
  }
  put_payer(t, p);
  pthread_mutex_unlock(&t->mu);
  return rc;
}

int tg_pending_check(tg_pending *t, tg_pending_mark *m, const tg_address *payer_addr,
                     const tg_u256 *value, const tg_u256 *balance, uint64_t now) {
  tg_u256 overlap;
  pthread_mutex_lock(&t->mu);
  sweep(t, now);
  payer *p = end_mark(t, m, payer_addr, &overlap);
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
  if (*find_res(t, p, nonce)) {
    rc = TG_EEXISTS;
  } else {
    /* no balance check: the sum saturates rather than wraps (the payer is refused meanwhile) */
    add(t, p, nonce, value, valid_before);
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
    reservation **rp = find_res(t, p, nonce);
    if (*rp) {
      drop(t, rp);
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
