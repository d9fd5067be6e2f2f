/* The channel ledger: sharded in-memory channel accounting with reservations. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "pay/ledger.h"
#include "tollgate/u256.h"

#define SHARDS 256

/*
 * A channel as the ledger keeps it: the fields of tg_ledger_channel without its fixed
 * TG_X402_SIG_MAX-byte signature buffer. The ceiling's signature is a heap copy of exactly
 * its bytes (65 for an EOA), so 10,000 channels cost ~5 MiB rather than ~15 MiB.
 */
typedef struct entry {
  tg_hash id;
  tg_channel_config config;
  tg_u256 balance;
  tg_u256 total_claimed;
  uint64_t withdraw_requested_at;
  tg_u256 ceiling;
  tg_u256 charged;
  tg_u256 reserved;
  tg_ledger_status status;
  size_t sig_len;
  uint8_t *sig; /* owned; sig_len bytes (NULL when 0) */
} entry;

/* Replaces the entry's ceiling signature by a copy of `sig` (len <= TG_X402_SIG_MAX by type). */
static void set_sig(entry *e, const tg_x402_sig *sig) {
  size_t n = sig->len <= TG_X402_SIG_MAX ? sig->len : TG_X402_SIG_MAX;
  if (n != e->sig_len) {
    free(e->sig);
    e->sig = NULL;
    if (n && !(e->sig = malloc(n))) abort();
  }
  if (n) memcpy(e->sig, sig->b, n);
  e->sig_len = n;
}

static void sig_out(tg_x402_sig *out, const entry *e) {
  out->len = e->sig_len;
  if (e->sig_len) memcpy(out->b, e->sig, e->sig_len);
}

/* The snapshot of an entry, in the public shape. */
static void to_channel(tg_ledger_channel *out, const entry *e) {
  memset(out, 0, sizeof *out);
  out->id = e->id;
  out->config = e->config;
  out->balance = e->balance;
  out->total_claimed = e->total_claimed;
  out->withdraw_requested_at = e->withdraw_requested_at;
  out->ceiling = e->ceiling;
  sig_out(&out->ceiling_sig, e);
  out->charged = e->charged;
  out->reserved = e->reserved;
  out->status = e->status;
}

typedef struct {
  pthread_mutex_t mu;
  entry **slots; /* open addressing, linear probing; NULL = empty (no deletions) */
  size_t cap;    /* power of two */
  size_t n;
} shard;

struct tg_ledger {
  unsigned char key[crypto_shorthash_KEYBYTES]; /* SipHash key: ids are payer-chosen */
  shard shards[SHARDS];
};

static uint64_t hash_id(const tg_ledger *l, const tg_hash *id) {
  uint64_t h;
  crypto_shorthash((unsigned char *)&h, id->b, 32, l->key);
  return h;
}

tg_ledger *tg_ledger_new(void) {
  if (sodium_init() < 0) return NULL;
  tg_ledger *l = calloc(1, sizeof *l);
  if (!l) abort();
  crypto_shorthash_keygen(l->key);
  for (int i = 0; i < SHARDS; i++) pthread_mutex_init(&l->shards[i].mu, NULL);
  return l;
}

void tg_ledger_free(tg_ledger *l) {
  if (!l) return;
  for (int i = 0; i < SHARDS; i++) {
    shard *s = &l->shards[i];
    for (size_t j = 0; j < s->cap; j++) {
      if (s->slots[j]) free(s->slots[j]->sig);
      free(s->slots[j]);
    }
    free(s->slots);
    pthread_mutex_destroy(&s->mu);
  }
  free(l);
}

/* Finds the slot of `id` in a locked shard: the entry's slot, or the empty slot to use. */
static entry **find_slot(shard *s, uint64_t h, const tg_hash *id) {
  size_t mask = s->cap - 1;
  for (size_t i = (size_t)(h >> 8) & mask;; i = (i + 1) & mask) {
    entry *e = s->slots[i];
    if (e == NULL || memcmp(e->id.b, id->b, 32) == 0) return &s->slots[i];
  }
}

static void grow(tg_ledger *l, shard *s) {
  size_t ncap = s->cap ? s->cap * 2 : 16;
  entry **old = s->slots;
  size_t ocap = s->cap;
  s->slots = calloc(ncap, sizeof *s->slots);
  if (!s->slots) abort();
  s->cap = ncap;
  for (size_t i = 0; i < ocap; i++) {
    if (old[i]) *find_slot(s, hash_id(l, &old[i]->id), &old[i]->id) = old[i];
  }
  free(old);
}

/* Locks the shard of `id` and returns its entry, or NULL (shard still locked). */
static entry *lookup_locked(tg_ledger *l, const tg_hash *id, shard **sp) {
  uint64_t h = hash_id(l, id);
  shard *s = &l->shards[h & (SHARDS - 1)];
  pthread_mutex_lock(&s->mu);
  *sp = s;
  if (s->cap == 0) return NULL;
  return *find_slot(s, h, id);
}

static void max_into(tg_u256 *dst, const tg_u256 *v) {
  if (tg_u256_cmp(v, dst) > 0) *dst = *v;
}

static tg_ledger_status status_of(const entry *c) {
  if (c->status == TG_LEDGER_CLOSED) return TG_LEDGER_CLOSED;
  return c->withdraw_requested_at ? TG_LEDGER_WITHDRAWING : TG_LEDGER_OPEN;
}

int tg_ledger_put(tg_ledger *l, const tg_ledger_channel *c) {
  uint64_t h = hash_id(l, &c->id);
  shard *s = &l->shards[h & (SHARDS - 1)];
  pthread_mutex_lock(&s->mu);
  if (s->cap == 0 || (s->n + 1) * 4 > s->cap * 3) grow(l, s);
  entry **slot = find_slot(s, h, &c->id);
  if (*slot == NULL) {
    entry *e = calloc(1, sizeof *e);
    if (!e) abort();
    e->id = c->id;
    e->config = c->config;
    e->balance = c->balance;
    e->total_claimed = c->total_claimed;
    e->withdraw_requested_at = c->withdraw_requested_at;
    e->ceiling = c->ceiling;
    set_sig(e, &c->ceiling_sig);
    e->charged = c->charged;
    e->status = c->status;
    *slot = e;
    s->n++;
  } else {
    entry *d = *slot;
    d->config = c->config;
    d->balance = c->balance;
    d->total_claimed = c->total_claimed;
    d->withdraw_requested_at = c->withdraw_requested_at;
    if (tg_u256_cmp(&c->ceiling, &d->ceiling) > 0) {
      d->ceiling = c->ceiling;
      set_sig(d, &c->ceiling_sig);
    }
    max_into(&d->charged, &c->charged);
    if (c->status == TG_LEDGER_CLOSED) d->status = TG_LEDGER_CLOSED;
  }
  (*slot)->status = status_of(*slot);
  pthread_mutex_unlock(&s->mu);
  return TG_OK;
}

int tg_ledger_mirror(tg_ledger *l, const tg_hash *id, const tg_u256 *balance,
                     const tg_u256 *total_claimed, uint64_t withdraw_requested_at) {
  shard *s;
  entry *e = lookup_locked(l, id, &s);
  int rc = TG_ENOTFOUND;
  if (e) {
    e->balance = *balance;
    max_into(&e->total_claimed, total_claimed);
    e->withdraw_requested_at = withdraw_requested_at;
    e->status = status_of(e);
    rc = TG_OK;
  }
  pthread_mutex_unlock(&s->mu);
  return rc;
}

int tg_ledger_refund_begin(tg_ledger *l, const tg_hash *id, tg_u256 *amount, uint64_t now) {
  shard *s;
  entry *e = lookup_locked(l, id, &s);
  int rc = TG_ENOTFOUND;
  tg_u256_zero(amount);
  if (e) {
    tg_u256 kept;
    if (e->status != TG_LEDGER_OPEN) {
      rc = TG_ECHANNEL_WITHDRAWING;
    } else if (tg_u256_add(&kept, &e->charged, &e->reserved)) {
      rc = TG_ERANGE;
    } else {
      if (tg_u256_cmp(&kept, &e->total_claimed) < 0) kept = e->total_claimed;
      if (tg_u256_sub(amount, &e->balance, &kept) || tg_u256_is_zero(amount)) {
        tg_u256_zero(amount);
        rc = TG_ECHANNEL_SHORT;
      } else {
        e->withdraw_requested_at = now ? now : 1;
        e->status = status_of(e);
        rc = TG_OK;
      }
    }
  }
  pthread_mutex_unlock(&s->mu);
  return rc;
}

int tg_ledger_get(tg_ledger *l, const tg_hash *id, tg_ledger_channel *out) {
  shard *s;
  entry *e = lookup_locked(l, id, &s);
  if (e) to_channel(out, e);
  pthread_mutex_unlock(&s->mu);
  return e ? TG_OK : TG_ENOTFOUND;
}

/* available = min(ceiling, balance) + credit; the payer can never owe past it. */
static int available(tg_u256 *out, const entry *c, const tg_u256 *credit) {
  *out = tg_u256_cmp(&c->ceiling, &c->balance) < 0 ? c->ceiling : c->balance;
  return credit ? tg_u256_add(out, out, credit) : TG_OK;
}

int tg_ledger_reserve(tg_ledger *l, tg_ledger_hold *hold, tg_ledger_channel *snapshot,
                      const tg_hash *id, const tg_u256 *ceiling, const tg_x402_sig *sig,
                      const tg_u256 *max_price, const tg_u256 *credit_limit) {
  memset(hold, 0, sizeof *hold);
  shard *s;
  entry *e = lookup_locked(l, id, &s);
  int rc = TG_OK;
  if (e == NULL) {
    rc = TG_ECHANNEL_UNKNOWN;
    goto out;
  }
  entry *c = e;
  if (ceiling && tg_u256_cmp(ceiling, &c->ceiling) > 0 && sig) {
    c->ceiling = *ceiling;
    set_sig(c, sig);
  }
  if (c->status != TG_LEDGER_OPEN) {
    rc = TG_ECHANNEL_WITHDRAWING;
    goto out;
  }
  tg_u256 need, avail;
  if (tg_u256_add(&need, &c->charged, &c->reserved) || tg_u256_add(&need, &need, max_price) ||
      available(&avail, c, credit_limit) || tg_u256_cmp(&need, &avail) > 0) {
    rc = TG_ECHANNEL_SHORT;
    goto out;
  }
  if (tg_u256_add(&c->reserved, &c->reserved, max_price)) {
    rc = TG_ECHANNEL_SHORT; /* unreachable: need covered it */
    goto out;
  }
  hold->channel_id = *id;
  hold->max_price = *max_price;
  hold->active = 1;
out:
  if (rc && snapshot) {
    if (e) to_channel(snapshot, e);
    else memset(snapshot, 0, sizeof *snapshot);
  }
  pthread_mutex_unlock(&s->mu);
  return rc;
}

/* Subtracts a hold's maximum from `reserved` (it was added by reserve). */
static void drop_hold(entry *c, const tg_ledger_hold *hold) {
  if (tg_u256_sub(&c->reserved, &c->reserved, &hold->max_price)) tg_u256_zero(&c->reserved);
}

int tg_ledger_charge(tg_ledger *l, tg_ledger_charge_plan *plan, tg_ledger_hold *hold,
                     const tg_u256 *price) {
  memset(plan, 0, sizeof *plan);
  if (!hold->active) return TG_EINVAL;
  shard *s;
  entry *e = lookup_locked(l, &hold->channel_id, &s);
  if (e == NULL) { /* channels are never removed while held */
    pthread_mutex_unlock(&s->mu);
    return TG_EINTERNAL;
  }
  entry *c = e;
  drop_hold(c, hold);
  plan->price = tg_u256_cmp(price, &hold->max_price) < 0 ? *price : hold->max_price;
  /* Cannot overflow: charged + max_price fitted under `available` at admission. */
  if (tg_u256_add(&c->charged, &c->charged, &plan->price)) abort();
  plan->channel_id = hold->channel_id;
  plan->charged = c->charged;
  plan->ceiling = c->ceiling;
  sig_out(&plan->ceiling_sig, c);
  plan->balance = c->balance;
  plan->total_claimed = c->total_claimed;
  plan->withdraw_requested_at = c->withdraw_requested_at;
  hold->active = 0;
  pthread_mutex_unlock(&s->mu);
  return TG_OK;
}

void tg_ledger_uncharge(tg_ledger *l, const tg_ledger_charge_plan *plan) {
  shard *s;
  entry *e = lookup_locked(l, &plan->channel_id, &s);
  if (e && tg_u256_sub(&e->charged, &e->charged, &plan->price)) tg_u256_zero(&e->charged);
  pthread_mutex_unlock(&s->mu);
}

void tg_ledger_release(tg_ledger *l, tg_ledger_hold *hold) {
  if (!hold->active) return;
  shard *s;
  entry *e = lookup_locked(l, &hold->channel_id, &s);
  if (e) drop_hold(e, hold);
  hold->active = 0;
  pthread_mutex_unlock(&s->mu);
}

size_t tg_ledger_count(tg_ledger *l) {
  size_t n = 0;
  for (int i = 0; i < SHARDS; i++) {
    pthread_mutex_lock(&l->shards[i].mu);
    n += l->shards[i].n;
    pthread_mutex_unlock(&l->shards[i].mu);
  }
  return n;
}
