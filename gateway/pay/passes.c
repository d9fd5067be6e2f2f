/* Access passes in the gateway: sign-in sessions, entitlements cached from the pass contract, quotas and overage. */
#include "pay/passes.h"

#include <event2/event.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <sodium.h>

#include "store/store.h"
#include "tollgate/address.h"
#include "tollgate/eip191.h"
#include "tollgate/hex.h"
#include "tollgate/keccak.h"
#include "tollgate/secp.h"
#include "tollgate/siwe.h"
#include "tollgate/u256.h"
#include "tollgate/x402.h"

/* ---- the in-memory map ------------------------------------------------------------------ */

enum { K_SESSION = 1, K_ENTITLED = 2, K_USAGE = 3, K_OWED = 4, K_AGENT = 5 };

#define NBUCKETS 4096
#define MAX_ENTRIES 200000 /* past this, cache entries (not counters in use) are dropped */
#define KEY_MAX 96

typedef struct ent {
  struct ent *next;
  uint8_t key[KEY_MAX];
  size_t klen;
  int kind;
  /* K_SESSION (keyed by a SipHash of the token under a per-process key; the token itself is
   * kept to be compared in constant time) */
  char token[TG_PASSES_TOKEN_LEN];
  tg_address address;
  int64_t expires_at; /* ms (sessions, agent nonces) */
  int64_t checked_at; /* ms: when the session was last read from the store */
  /* K_ENTITLED */
  int ok;
  uint64_t until;
  tg_address holder;
  char holder_hex[TG_ADDRESS_HEX_LEN]; /* checksummed, for X-Tollgate-Pass */
  uint64_t gen;
  /* K_USAGE */
  tg_u256 plan_id;
  int64_t period_start;
  uint64_t calls, tokens, inflight;
  uint64_t room;             /* leased calls (counted in `calls`) not yet admitted here */
  uint64_t lease_pending;    /* calls of a lease being written, 0 when none */
  uint64_t tokens_unwritten; /* tokens of leased calls, written with the next lease */
  uint64_t lease_size;       /* the next lease's calls (adapts to the pass's rate) */
  int64_t lease_at;          /* ms: when the last lease was asked for */
  /* K_OWED */
  tg_u256 owed, reserved;
} ent;

struct tg_passes {
  pthread_mutex_t mu;
  tg_store *store;
  tg_passes_chain chain;
  uint64_t chain_id;
  ent *buckets[NBUCKETS];
  size_t n_entries;
  uint64_t gen;        /* bumped by every log of the pass contract */
  uint64_t chain_time; /* the head block's timestamp, seconds */
  unsigned char session_key[crypto_shorthash_siphashx24_KEYBYTES]; /* of the session cache */
  uint64_t leases_inflight; /* lease writes submitted, not yet called back */
  tg_passes_stats stats;
};

static uint32_t key_hash(const uint8_t *k, size_t n) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; i++) h = (h ^ k[i]) * 16777619u;
  return h;
}

/* Under mu. */
static ent *find(tg_passes *p, const uint8_t *key, size_t klen) {
  for (ent *e = p->buckets[key_hash(key, klen) % NBUCKETS]; e; e = e->next)
    if (e->klen == klen && memcmp(e->key, key, klen) == 0) return e;
  return NULL;
}

/* Session entries hold their bearer token: wiped before the memory goes back. */
static void ent_free(ent *e) {
  if (e->kind == K_SESSION) sodium_memzero(e->token, sizeof e->token);
  free(e);
}

/* Drops what can be read again (sessions, entitlements, idle counters). Under mu. */
static void trim(tg_passes *p, int64_t now_ms) {
  for (size_t b = 0; b < NBUCKETS; b++) {
    ent **pp = &p->buckets[b];
    while (*pp) {
      ent *e = *pp;
      int keep = 0;
      if (e->kind == K_AGENT) keep = e->expires_at > now_ms; /* replay protection must stay */
      if (e->kind == K_USAGE)
        keep = e->inflight > 0 || e->room > 0 || e->lease_pending > 0 || e->tokens_unwritten > 0;
      if (e->kind == K_OWED) keep = !tg_u256_is_zero(&e->reserved);
      if (keep) {
        pp = &e->next;
      } else {
        *pp = e->next;
        ent_free(e);
        p->n_entries--;
      }
    }
  }
}

/* Under mu. */
static ent *insert(tg_passes *p, int kind, const uint8_t *key, size_t klen, int64_t now_ms) {
  if (p->n_entries >= MAX_ENTRIES) trim(p, now_ms);
  ent *e = calloc(1, sizeof *e);
  if (!e) abort();
  memcpy(e->key, key, klen);
  e->klen = klen;
  e->kind = kind;
  uint32_t b = key_hash(key, klen) % NBUCKETS;
  e->next = p->buckets[b];
  p->buckets[b] = e;
  p->n_entries++;
  return e;
}

/* A keyed hash, not the store's keccak: one SipHash per request instead of a Keccak-f. */
static size_t key_session(uint8_t *k, const tg_passes *p, const char *token) {
  k[0] = K_SESSION;
  crypto_shorthash_siphashx24(k + 1, (const unsigned char *)token, TG_PASSES_TOKEN_LEN,
                              p->session_key);
  return 1 + crypto_shorthash_siphashx24_BYTES;
}

static size_t key_entitled(uint8_t *k, const tg_address *user, const tg_u256 *plan) {
  k[0] = K_ENTITLED;
  memcpy(k + 1, user->b, 20);
  memcpy(k + 21, plan->b, 32);
  return 53;
}

static size_t key_usage(uint8_t *k, const tg_u256 *plan, const tg_address *holder, int64_t period) {
  k[0] = K_USAGE;
  memcpy(k + 1, plan->b, 32);
  memcpy(k + 33, holder->b, 20);
  memcpy(k + 53, &period, 8);
  return 61;
}

static size_t key_owed(uint8_t *k, const tg_address *holder) {
  k[0] = K_OWED;
  memcpy(k + 1, holder->b, 20);
  return 21;
}

static size_t key_agent(uint8_t *k, const tg_address *who, tg_str nonce) {
  k[0] = K_AGENT;
  memcpy(k + 1, who->b, 20);
  size_t n = nonce.len > KEY_MAX - 21 ? KEY_MAX - 21 : nonce.len;
  memcpy(k + 21, nonce.ptr, n);
  return 21 + n;
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- lifecycle -------------------------------------------------------------------------- */

int tg_passes_new(tg_passes **out, const tg_passes_opts *o) {
  *out = NULL;
  if (!o->store || !o->chain.entitled) return TG_EINVAL;
  tg_passes *p = calloc(1, sizeof *p);
  if (!p) abort();
  pthread_mutex_init(&p->mu, NULL);
  p->store = o->store;
  p->chain = o->chain;
  p->chain_id = o->chain_id;
  p->gen = 1;
  randombytes_buf(p->session_key, sizeof p->session_key);
  *out = p;
  return TG_OK;
}

void tg_passes_free(tg_passes *p) {
  if (!p) return;
  for (;;) { /* a lease's callback still to come would find p freed */
    pthread_mutex_lock(&p->mu);
    uint64_t n = p->leases_inflight;
    pthread_mutex_unlock(&p->mu);
    if (n == 0) break;
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
  for (size_t b = 0; b < NBUCKETS; b++) {
    ent *e = p->buckets[b];
    while (e) {
      ent *n = e->next;
      ent_free(e);
      e = n;
    }
  }
  pthread_mutex_destroy(&p->mu);
  free(p);
}

void tg_passes_invalidate(tg_passes *p) {
  pthread_mutex_lock(&p->mu);
  p->gen++;
  p->stats.invalidations++;
  pthread_mutex_unlock(&p->mu);
}

void tg_passes_chain_time(tg_passes *p, uint64_t unix_s) {
  pthread_mutex_lock(&p->mu);
  if (unix_s > p->chain_time) p->chain_time = unix_s;
  pthread_mutex_unlock(&p->mu);
}

void tg_passes_stats_get(tg_passes *p, tg_passes_stats *out) {
  pthread_mutex_lock(&p->mu);
  *out = p->stats;
  out->chain_time = p->chain_time;
  uint64_t seen = 0, sessions = 0, unused = 0;
  for (size_t b = 0; b < NBUCKETS; b++)
    for (ent *e = p->buckets[b]; e; e = e->next) {
      if (e->kind == K_ENTITLED && e->ok) seen++;
      if (e->kind == K_SESSION) sessions++;
      if (e->kind == K_USAGE) unused += e->room;
    }
  out->leased_unused = unused;
  out->passes_seen = seen;
  out->sessions_cached = sessions;
  pthread_mutex_unlock(&p->mu);
}

void tg_passes_usage_each(tg_passes *p, tg_passes_usage_fn fn, void *arg) {
  pthread_mutex_lock(&p->mu);
  for (size_t b = 0; b < NBUCKETS; b++)
    for (ent *e = p->buckets[b]; e; e = e->next)
      if (e->kind == K_USAGE && fn(arg, &e->plan_id, &e->holder, e->period_start,
                                   e->calls - e->room, e->tokens + e->tokens_unwritten, e->inflight))
        goto out;
out:
  pthread_mutex_unlock(&p->mu);
}

/* ---- what the signer must bind to ------------------------------------------------------- */

/* The expected SIWE domain and the URI prefix (ending in '/'), from the configuration or Host. */
static void expected(const tg_config *cfg, const char *host, char *domain, size_t dn, char *uri,
                     size_t un) {
  const char *h = host && *host ? host : "localhost";
  if (cfg->passes_domain) {
    snprintf(domain, dn, "%s", cfg->passes_domain);
  } else if (cfg->public_url) {
    const char *a = strstr(cfg->public_url, "://");
    a = a ? a + 3 : cfg->public_url;
    size_t n = strcspn(a, "/");
    snprintf(domain, dn, "%.*s", (int)n, a);
  } else {
    snprintf(domain, dn, "%s", h);
  }
  const char *base = cfg->passes_uri ? cfg->passes_uri : cfg->public_url;
  if (base) {
    size_t n = strlen(base);
    snprintf(uri, un, "%s%s", base, n && base[n - 1] == '/' ? "" : "/");
  } else {
    snprintf(uri, un, "http://%s/", h);
  }
}

/* ---- nonces ------------------------------------------------------------------------------- */

typedef struct {
  tg_passes *p;
  tg_passes_nonce_cb cb;
  void *arg;
  tg_passes_nonce_result r;
} nonce_op;

static void on_nonce(void *arg, int err, const tg_store_op *ops, size_t n) {
  (void)ops;
  (void)n;
  nonce_op *o = arg;
  o->r.err = err;
  if (!err) {
    pthread_mutex_lock(&o->p->mu);
    o->p->stats.nonces_issued++;
    pthread_mutex_unlock(&o->p->mu);
  }
  o->cb(o->arg, &o->r);
  free(o);
}

void tg_passes_nonce(tg_passes *p, const tg_config *cfg, struct event_base *base, const char *host,
                     tg_passes_nonce_cb cb, void *arg) {
  static const char alnum[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  nonce_op *o = calloc(1, sizeof *o);
  if (!o) abort();
  o->p = p;
  o->cb = cb;
  o->arg = arg;
  for (int i = 0; i < TG_PASSES_NONCE_LEN; i++) o->r.nonce[i] = alnum[randombytes_uniform(62)];
  o->r.expires_at = now_ms() + (int64_t)cfg->nonce_ttl_s * 1000;
  o->r.chain_id = p->chain_id;
  expected(cfg, host, o->r.domain, sizeof o->r.domain, o->r.uri, sizeof o->r.uri);
  tg_store_op op;
  memset(&op, 0, sizeof op);
  op.kind = TG_STORE_OP_NONCE_PUT;
  memcpy(op.u.nonce.nonce, o->r.nonce, TG_PASSES_NONCE_LEN);
  op.u.nonce.expires_at = o->r.expires_at;
  int rc = tg_store_submit_evbase(p->store, &op, 1, base, on_nonce, o);
  if (rc) {
    o->r.err = rc;
    cb(arg, &o->r);
    free(o);
  }
}

/* ---- signatures ------------------------------------------------------------------------------ */

/* EOA by ecrecover, else ERC-1271 on the address. 0, TG_ESIWE_SIGNATURE, or a chain error. */
static int check_signature(tg_passes *p, const tg_siwe_message *m, const char *text, size_t len,
                           const uint8_t *sig, size_t sig_len, int *contract) {
  *contract = 0;
  tg_sig s;
  if ((sig_len == 65 || sig_len == 64) && tg_sig_from_bytes(&s, sig, sig_len) == 0) {
    tg_address who;
    if (tg_eip191_recover(&who, (const uint8_t *)text, len, &s) == 0 &&
        tg_address_eq(&who, &m->address))
      return TG_OK;
  }
  if (!p->chain.erc1271 || sig_len == 0 || sig_len > TG_X402_SIG_MAX) return TG_ESIWE_SIGNATURE;
  tg_hash digest;
  tg_eip191_hash(&digest, (const uint8_t *)text, len);
  int valid = 0;
  int rc = p->chain.erc1271(p->chain.ctx, &m->address, &digest, sig, sig_len, &valid);
  if (rc) return rc;
  if (!valid) return TG_ESIWE_SIGNATURE;
  *contract = 1;
  return TG_OK;
}

/* ---- sign-in ------------------------------------------------------------------------------- */

typedef struct {
  tg_passes *p;
  tg_passes_signin_cb cb;
  void *arg;
  tg_passes_signin_result r;
  tg_hash token_hash;
} signin_op;

static void signin_fail(tg_passes *p, tg_passes_signin_cb cb, void *arg, int err) {
  tg_passes_signin_result r;
  memset(&r, 0, sizeof r);
  r.err = err;
  pthread_mutex_lock(&p->mu);
  p->stats.signins_refused++;
  pthread_mutex_unlock(&p->mu);
  cb(arg, &r);
}

static void on_signin(void *arg, int err, const tg_store_op *ops, size_t n) {
  (void)ops;
  (void)n;
  signin_op *o = arg;
  tg_passes *p = o->p;
  o->r.err = err;
  pthread_mutex_lock(&p->mu);
  if (err) {
    p->stats.signins_refused++;
  } else {
    p->stats.signins++;
    uint8_t k[KEY_MAX];
    size_t kl = key_session(k, p, o->r.token);
    ent *e = find(p, k, kl);
    if (!e) e = insert(p, K_SESSION, k, kl, now_ms());
    memcpy(e->token, o->r.token, TG_PASSES_TOKEN_LEN);
    e->address = o->r.address;
    e->expires_at = o->r.expires_at;
    e->checked_at = now_ms();
  }
  pthread_mutex_unlock(&p->mu);
  if (err) memset(o->r.token, 0, sizeof o->r.token);
  o->cb(o->arg, &o->r);
  sodium_memzero(o->r.token, sizeof o->r.token);
  free(o);
}

void tg_passes_signin(tg_passes *p, const tg_config *cfg, struct event_base *base,
                      const char *host, const char *message, size_t len, const uint8_t *sig,
                      size_t sig_len, tg_passes_signin_cb cb, void *arg) {
  tg_siwe_message m;
  int rc = tg_siwe_parse(&m, message, len);
  if (rc) {
    signin_fail(p, cb, arg, rc == TG_ETOOBIG ? TG_ESIWE_MALFORMED : rc);
    return;
  }
  char domain[256], uri[512];
  expected(cfg, host, domain, sizeof domain, uri, sizeof uri);
  int64_t now = now_ms();
  tg_siwe_expect e = {.domain = domain,
                      .uri_prefix = uri,
                      .chain_id = p->chain_id,
                      .now = now,
                      .max_age = (int64_t)cfg->nonce_ttl_s * 1000};
  if ((rc = tg_siwe_check(&m, &e))) {
    signin_fail(p, cb, arg, rc);
    return;
  }
  if (m.nonce.len > TG_STORE_NONCE_MAX) {
    signin_fail(p, cb, arg, TG_ESIWE_NONCE);
    return;
  }
  int contract = 0;
  if ((rc = check_signature(p, &m, message, len, sig, sig_len, &contract))) {
    signin_fail(p, cb, arg, rc);
    return;
  }
  signin_op *o = calloc(1, sizeof *o);
  if (!o) abort();
  o->p = p;
  o->cb = cb;
  o->arg = arg;
  o->r.address = m.address;
  o->r.contract_wallet = contract;
  int64_t exp = now + (int64_t)cfg->session_ttl_s * 1000;
  if (m.has_expiration && m.expiration < exp) exp = m.expiration; /* never longer than signed */
  o->r.expires_at = exp;
  uint8_t raw[32];
  randombytes_buf(raw, sizeof raw);
  memcpy(o->r.token, TG_PASSES_TOKEN_PREFIX, 4);
  sodium_bin2base64(o->r.token + 4, sizeof o->r.token - 4, raw, sizeof raw,
                    sodium_base64_VARIANT_URLSAFE_NO_PADDING);
  sodium_memzero(raw, sizeof raw);
  tg_keccak256(&o->token_hash, o->r.token, strlen(o->r.token));
  tg_store_op ops[2];
  memset(ops, 0, sizeof ops);
  ops[0].kind = TG_STORE_OP_NONCE_USE;
  memcpy(ops[0].u.nonce.nonce, m.nonce.ptr, m.nonce.len);
  ops[1].kind = TG_STORE_OP_SESSION_PUT;
  ops[1].u.session.token_hash = o->token_hash;
  ops[1].u.session.address = m.address;
  ops[1].u.session.expires_at = exp;
  rc = tg_store_submit_evbase(p->store, ops, 2, base, on_signin, o);
  if (rc) {
    sodium_memzero(o->r.token, sizeof o->r.token);
    free(o);
    signin_fail(p, cb, arg, rc);
  }
}

/* ---- logout ----------------------------------------------------------------------------------- */

typedef struct {
  tg_passes *p;
  tg_hash h;
  uint8_t key[KEY_MAX];
  size_t klen;
  tg_passes_logout_cb cb;
  void *arg;
} logout_op;

static void on_logout(void *arg, int err, const tg_store_op *ops, size_t n) {
  (void)ops;
  (void)n;
  logout_op *o = arg;
  if (!err) {
    pthread_mutex_lock(&o->p->mu);
    ent *e = find(o->p, o->key, o->klen);
    if (e) e->expires_at = 0; /* refused here at once; elsewhere within the recheck interval */
    pthread_mutex_unlock(&o->p->mu);
  }
  o->cb(o->arg, err);
  free(o);
}

void tg_passes_logout(tg_passes *p, struct event_base *base, const char *authorization,
                      tg_passes_logout_cb cb, void *arg) {
  const char *t = authorization && strncasecmp(authorization, "Bearer ", 7) == 0 ? authorization + 7 : NULL;
  while (t && *t == ' ') t++;
  if (!t || strncmp(t, TG_PASSES_TOKEN_PREFIX, 4) != 0 || strlen(t) != TG_PASSES_TOKEN_LEN) {
    cb(arg, TG_ESESSION_INVALID);
    return;
  }
  logout_op *o = calloc(1, sizeof *o);
  if (!o) abort();
  o->p = p;
  o->cb = cb;
  o->arg = arg;
  tg_keccak256(&o->h, t, TG_PASSES_TOKEN_LEN);
  o->klen = key_session(o->key, p, t);
  tg_store_op op;
  memset(&op, 0, sizeof op);
  op.kind = TG_STORE_OP_SESSION_REVOKE;
  op.u.session.token_hash = o->h;
  int rc = tg_store_submit_evbase(p->store, &op, 1, base, on_logout, o);
  if (rc) {
    free(o);
    cb(arg, rc);
  }
}

/* ---- who is asking -------------------------------------------------------------------------- */

static int session_read(tg_passes *p, const char *token, const uint8_t *k, size_t kl,
                        tg_address *who);

static int session_lookup(tg_passes *p, const char *token, tg_address *who) {
  size_t n = strlen(token);
  if (n != TG_PASSES_TOKEN_LEN) return TG_ESESSION_INVALID;
  uint8_t k[KEY_MAX];
  size_t kl = key_session(k, p, token);
  int64_t now = now_ms();
  pthread_mutex_lock(&p->mu);
  ent *e = find(p, k, kl);
  if (e && sodium_memcmp(e->token, token, TG_PASSES_TOKEN_LEN) != 0) {
    pthread_mutex_unlock(&p->mu); /* a SipHash collision (2^-128): not cached, not cacheable */
    return session_read(p, token, NULL, 0, who);
  }
  if (e && (e->expires_at <= now || now - e->checked_at < TG_PASSES_SESSION_RECHECK_MS)) {
    int ok = e->expires_at > now;
    *who = e->address;
    pthread_mutex_unlock(&p->mu);
    return ok ? TG_OK : TG_ESESSION_INVALID;
  }
  pthread_mutex_unlock(&p->mu);
  return session_read(p, token, k, kl, who);
}

/* Reads the session of `token` from the store; caches it under k (unless k is NULL). */
static int session_read(tg_passes *p, const char *token, const uint8_t *k, size_t kl,
                        tg_address *who) {
  tg_hash h;
  tg_keccak256(&h, token, TG_PASSES_TOKEN_LEN);
  int64_t now = now_ms();
  ent *e;
  tg_store_session s;
  int rc = tg_store_session_get(p->store, &h, &s);
  if (rc == TG_ENOTFOUND) { /* never made, or revoked (possibly on another instance) */
    pthread_mutex_lock(&p->mu);
    if (k && (e = find(p, k, kl))) e->expires_at = 0;
    pthread_mutex_unlock(&p->mu);
    return TG_ESESSION_INVALID;
  }
  if (rc) return rc;
  *who = s.address;
  if (!k) return s.expires_at > now ? TG_OK : TG_ESESSION_INVALID;
  pthread_mutex_lock(&p->mu);
  if (!(e = find(p, k, kl))) {
    e = insert(p, K_SESSION, k, kl, now);
    memcpy(e->token, token, TG_PASSES_TOKEN_LEN);
  }
  if (sodium_memcmp(e->token, token, TG_PASSES_TOKEN_LEN) != 0) {
    pthread_mutex_unlock(&p->mu);
    return s.expires_at > now ? TG_OK : TG_ESESSION_INVALID;
  }
  e->address = s.address;
  e->expires_at = s.expires_at;
  e->checked_at = now;
  pthread_mutex_unlock(&p->mu);
  *who = s.address;
  return s.expires_at > now ? TG_OK : TG_ESESSION_INVALID;
}

/*
 * X-Tollgate-Auth: <base64 of an EIP-4361 message> <0x-hex signature>. The
 * message must carry an Expiration Time at most 5 minutes after its Issued
 * At; its nonce is accepted once per signer until then.
 */
static int agent_lookup(tg_passes *p, const tg_config *cfg, const char *host, const char *v,
                        tg_address *who, char *reason, size_t rn, char *agent_key,
                        int64_t *agent_expires) {
  tg_buf msg, sig;
  tg_buf_init(&msg, TG_SIWE_MESSAGE_MAX);
  tg_buf_init(&sig, TG_X402_SIG_MAX);
  size_t vl = strlen(v);
  int rc = vl > 4 * TG_SIWE_MESSAGE_MAX ? TG_EPASS_AUTH : tg_siwe_header_decode(&msg, &sig, v, vl);
  tg_siwe_message m;
  if (rc) {
    snprintf(reason, rn, "X-Tollgate-Auth: want \"<base64 of the message> <0x signature>\"");
    rc = TG_EPASS_AUTH;
    goto done;
  }
  if ((rc = tg_siwe_parse(&m, (const char *)msg.data, msg.len))) {
    snprintf(reason, rn, "X-Tollgate-Auth: %s", tg_strerror(TG_ESIWE_MALFORMED));
    rc = TG_ESIWE_MALFORMED;
    goto done;
  }
  char domain[256], uri[512];
  expected(cfg, host, domain, sizeof domain, uri, sizeof uri);
  int64_t now = now_ms();
  tg_siwe_expect e = {.domain = domain, .uri_prefix = uri, .chain_id = p->chain_id, .now = now,
                      .max_age = 300000};
  if ((rc = tg_siwe_check(&m, &e))) {
    snprintf(reason, rn, "X-Tollgate-Auth: %s", tg_strerror(rc));
    goto done;
  }
  if (!m.has_expiration || m.expiration - m.issued_at > 300000) {
    snprintf(reason, rn, "X-Tollgate-Auth: the message needs an Expiration Time within 5 minutes of Issued At");
    rc = TG_EPASS_AUTH;
    goto done;
  }
  int contract;
  if ((rc = check_signature(p, &m, (const char *)msg.data, msg.len, sig.data, sig.len, &contract))) {
    snprintf(reason, rn, "X-Tollgate-Auth: %s", tg_strerror(rc));
    goto done;
  }
  uint8_t k[KEY_MAX];
  size_t kl = key_agent(k, &m.address, m.nonce);
  pthread_mutex_lock(&p->mu);
  ent *en = find(p, k, kl);
  if (en && en->expires_at > now) {
    rc = TG_ESIWE_NONCE;
  } else {
    if (!en) en = insert(p, K_AGENT, k, kl, now);
    en->expires_at = m.expiration;
  }
  pthread_mutex_unlock(&p->mu);
  if (rc) {
    snprintf(reason, rn, "X-Tollgate-Auth: this signed message was used already (a fresh nonce per request)");
    goto done;
  }
  *who = m.address;
  if (agent_key) {
    /* The store's key: keccak(signer || nonce) in hex, 64 characters, never a gateway-issued
     * sign-in nonce (those are 24), recorded as used. */
    tg_keccak_ctx kc;
    tg_hash kh;
    tg_keccak256_init(&kc);
    tg_keccak256_update(&kc, m.address.b, 20);
    tg_keccak256_update(&kc, m.nonce.ptr, m.nonce.len);
    tg_keccak256_final(&kc, &kh);
    static const char hx[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
      agent_key[2 * i] = hx[kh.b[i] >> 4];
      agent_key[2 * i + 1] = hx[kh.b[i] & 15];
    }
    agent_key[64] = 0;
    *agent_expires = m.expiration;
  }
done:
  tg_buf_cleanup(&msg);
  tg_buf_cleanup(&sig);
  return rc;
}

int tg_passes_identify(tg_passes *p, const tg_config *cfg, const char *host,
                       const char *authorization, const char *agent_auth, tg_address *who,
                       char *reason, size_t reason_len) {
  char key[65];
  int64_t exp;
  return tg_passes_identify_agent(p, cfg, host, authorization, agent_auth, who, reason,
                                  reason_len, key, &exp);
}

int tg_passes_identify_agent(tg_passes *p, const tg_config *cfg, const char *host,
                             const char *authorization, const char *agent_auth, tg_address *who,
                             char *reason, size_t reason_len, char agent_key[65],
                             int64_t *agent_expires) {
  memset(who, 0, sizeof *who);
  reason[0] = 0;
  agent_key[0] = 0;
  *agent_expires = 0;
  if (agent_auth && *agent_auth) {
    if (!cfg->agent_auth) {
      snprintf(reason, reason_len, "per-request signed authentication is turned off here");
      return TG_EPASS_AUTH;
    }
    return agent_lookup(p, cfg, host, agent_auth, who, reason, reason_len, agent_key,
                        agent_expires);
  }
  if (!authorization || strncasecmp(authorization, "Bearer ", 7) != 0) return TG_ENOTFOUND;
  const char *t = authorization + 7;
  while (*t == ' ') t++;
  if (strncmp(t, TG_PASSES_TOKEN_PREFIX, 4) != 0) return TG_ENOTFOUND; /* someone else's key */
  int rc = session_lookup(p, t, who);
  if (rc) snprintf(reason, reason_len, "%s: sign in again (POST /auth/siwe)", tg_strerror(rc));
  return rc;
}

/* ---- entitlement ------------------------------------------------------------------------------ */

/* entitled(user, plan) from the cache, or one eth_call (cached with the generation it began in). */
static int entitlement(tg_passes *p, const tg_address *user, const tg_u256 *plan, uint64_t now_s,
                       int *ok, uint64_t *until, tg_address *holder,
                       char holder_hex[TG_ADDRESS_HEX_LEN]) {
  uint8_t k[KEY_MAX];
  size_t kl = key_entitled(k, user, plan);
  pthread_mutex_lock(&p->mu);
  ent *e = find(p, k, kl);
  uint64_t gen = p->gen;
  if (e && e->gen == gen && (!e->ok || e->until > now_s)) {
    *ok = e->ok;
    *until = e->until;
    *holder = e->holder;
    memcpy(holder_hex, e->holder_hex, TG_ADDRESS_HEX_LEN);
    p->stats.entitlement_hits++;
    pthread_mutex_unlock(&p->mu);
    return TG_OK;
  }
  p->stats.entitlement_reads++;
  pthread_mutex_unlock(&p->mu);
  int rc = p->chain.entitled(p->chain.ctx, user, plan, ok, until, holder);
  if (rc) return rc;
  tg_address_to_checksum(holder, holder_hex);
  pthread_mutex_lock(&p->mu);
  if (!(e = find(p, k, kl))) e = insert(p, K_ENTITLED, k, kl, now_ms());
  e->ok = *ok;
  e->until = *until;
  e->holder = *holder;
  memcpy(e->holder_hex, holder_hex, TG_ADDRESS_HEX_LEN);
  e->gen = gen; /* a log seen meanwhile made it stale already */
  pthread_mutex_unlock(&p->mu);
  return TG_OK;
}

/* The usage counters of (plan, holder, period), loaded from the store once. */
static int usage_load(tg_passes *p, const tg_u256 *plan, const tg_address *holder, int64_t period) {
  uint8_t k[KEY_MAX];
  size_t kl = key_usage(k, plan, holder, period);
  pthread_mutex_lock(&p->mu);
  ent *e = find(p, k, kl);
  pthread_mutex_unlock(&p->mu);
  if (e) return TG_OK;
  tg_store_pass_usage u;
  int rc = tg_store_pass_usage_get(p->store, plan, holder, period, &u);
  if (rc == TG_ENOTFOUND) {
    u.calls = u.tokens = 0;
    rc = 0;
  }
  if (rc) return rc;
  pthread_mutex_lock(&p->mu);
  if (!(e = find(p, k, kl))) {
    e = insert(p, K_USAGE, k, kl, now_ms());
    e->plan_id = *plan;
    e->holder = *holder;
    e->period_start = period;
    e->calls = u.calls;
    e->tokens = u.tokens;
  }
  pthread_mutex_unlock(&p->mu);
  return TG_OK;
}

static int owed_load(tg_passes *p, const tg_address *holder) {
  uint8_t k[KEY_MAX];
  size_t kl = key_owed(k, holder);
  pthread_mutex_lock(&p->mu);
  ent *e = find(p, k, kl);
  pthread_mutex_unlock(&p->mu);
  if (e) return TG_OK;
  tg_store_totals t;
  int rc = tg_store_totals_get(p->store, holder, TG_SCHEME_PASS, &t);
  if (rc == TG_ENOTFOUND) {
    tg_u256_zero(&t.charged);
    rc = 0;
  }
  if (rc) return rc;
  pthread_mutex_lock(&p->mu);
  if (!(e = find(p, k, kl))) {
    e = insert(p, K_OWED, k, kl, now_ms());
    e->holder = *holder;
    e->owed = t.charged;
  }
  pthread_mutex_unlock(&p->mu);
  return TG_OK;
}

/* ---- quota leases ------------------------------------------------------------------------- */

/* A plan's largest lease: 0 when its usage is written call by call (token quotas, small quotas). */
static uint64_t lease_cap(const tg_config_plan *pl) {
  if (pl->unit != TG_QUOTA_CALLS) return 0;
  uint64_t b = pl->quota / TG_PASSES_LEASE_SHARE;
  if (b > TG_PASSES_LEASE_MAX) b = TG_PASSES_LEASE_MAX;
  return b >= 2 ? b : 0;
}

/* Under mu: a leased call still fits the quota (a reload may have lowered it below the lease). */
static int lease_fits(const ent *u, const tg_config_plan *pl) {
  return u->calls - u->room + u->inflight < pl->quota;
}

typedef struct {
  tg_passes *p;
  uint8_t key[KEY_MAX];
  size_t klen;
  tg_store_op op;
} lease_op;

/* Writer thread: the lease is durable (or failed); its calls become room to admit. */
static void on_lease(void *arg, int err, const tg_store_op *ops, size_t n) {
  lease_op *l = arg;
  tg_passes *p = l->p;
  pthread_mutex_lock(&p->mu);
  ent *u = find(p, l->key, l->klen);
  if (u) {
    u->lease_pending = 0;
    if (err || n != 1) {
      u->tokens_unwritten += l->op.u.pass.tokens; /* written with the next one */
    } else {
      u->room += l->op.u.pass.calls;
      if (ops[0].u.pass.out_calls > u->calls) u->calls = ops[0].u.pass.out_calls;
      if (ops[0].u.pass.out_tokens > u->tokens) u->tokens = ops[0].u.pass.out_tokens;
    }
  }
  if (err) p->stats.lease_failures++;
  else p->stats.leases++;
  p->leases_inflight--;
  pthread_mutex_unlock(&p->mu);
  free(l);
}

/*
 * Under mu: the next lease of `u` when half of the current one is used (none past the
 * quota); NULL when none is due. The caller submits it (lease_submit) after unlocking.
 */
static lease_op *lease_take(tg_passes *p, ent *u, const tg_config_plan *pl, const uint8_t *k,
                            size_t kl) {
  uint64_t cap = lease_cap(pl);
  if (!cap) return NULL;
  if (!u->lease_size || u->lease_size > cap)
    u->lease_size = cap < TG_PASSES_LEASE_FIRST ? cap : TG_PASSES_LEASE_FIRST;
  if (u->lease_pending || u->room > u->lease_size / 2) return NULL;
  uint64_t used = u->calls + u->inflight;
  if (used >= pl->quota) return NULL;
  /* Busy passes get larger blocks (fewer writes), quiet ones smaller (less lost to a crash). */
  int64_t now = now_ms();
  if (u->lease_at && now - u->lease_at < TG_PASSES_LEASE_FAST_MS)
    u->lease_size = u->lease_size * 2 < cap ? u->lease_size * 2 : cap;
  else if (now - u->lease_at > TG_PASSES_LEASE_SLOW_MS && u->lease_size / 2 >= TG_PASSES_LEASE_FIRST)
    u->lease_size /= 2;
  u->lease_at = now;
  uint64_t block = u->lease_size;
  uint64_t n = pl->quota - used < block ? pl->quota - used : block;
  lease_op *l = calloc(1, sizeof *l);
  if (!l) abort();
  l->p = p;
  memcpy(l->key, k, kl);
  l->klen = kl;
  l->op.kind = TG_STORE_OP_PASS_USE;
  l->op.u.pass.pass_id = u->plan_id;
  l->op.u.pass.holder = u->holder;
  l->op.u.pass.period_start = u->period_start;
  l->op.u.pass.calls = n;
  l->op.u.pass.tokens = u->tokens_unwritten > ((uint64_t)1 << 40) ? (uint64_t)1 << 40 : u->tokens_unwritten;
  u->tokens_unwritten -= l->op.u.pass.tokens;
  u->lease_pending = n;
  p->leases_inflight++;
  return l;
}

static void lease_submit(tg_passes *p, lease_op *l) {
  if (!l) return;
  if (tg_store_submit(p->store, &l->op, 1, on_lease, l) == 0) return;
  on_lease(l, TG_ESTORE, NULL, 0); /* the queue is full: the next admission tries again */
}

void tg_passes_return_leases(tg_passes *p) {
  for (;;) { /* leases being written first: their room counts too */
    pthread_mutex_lock(&p->mu);
    uint64_t n = p->leases_inflight;
    pthread_mutex_unlock(&p->mu);
    if (n == 0) break;
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
  for (;;) {
    tg_store_op op;
    memset(&op, 0, sizeof op);
    ent *found = NULL;
    pthread_mutex_lock(&p->mu);
    for (size_t b = 0; b < NBUCKETS && !found; b++)
      for (ent *e = p->buckets[b]; e && !found; e = e->next)
        if (e->kind == K_USAGE && (e->room || e->tokens_unwritten) && !e->lease_pending) found = e;
    if (found) {
      op.kind = TG_STORE_OP_PASS_USE;
      op.u.pass.pass_id = found->plan_id;
      op.u.pass.holder = found->holder;
      op.u.pass.period_start = found->period_start;
      op.u.pass.calls_back = found->room > ((uint64_t)1 << 40) ? (uint64_t)1 << 40 : found->room;
      op.u.pass.tokens = found->tokens_unwritten > ((uint64_t)1 << 40) ? (uint64_t)1 << 40 : found->tokens_unwritten;
      found->calls -= op.u.pass.calls_back < found->calls ? op.u.pass.calls_back : found->calls;
      found->room -= op.u.pass.calls_back;
      found->tokens_unwritten -= op.u.pass.tokens;
    }
    pthread_mutex_unlock(&p->mu);
    if (!found) break;
    if (tg_store_write(p->store, &op, 1) != 0) break; /* the store is failing: kept as used */
  }
}

static void fmt_time(char out[32], uint64_t unix_s) { tg_rfc3339_format(out, (int64_t)unix_s * 1000); }

int tg_passes_admit(tg_passes *p, const tg_config *cfg, const char *route, const char *model,
                    const tg_address *who, const tg_u256 *max_price, tg_passes_grant *g,
                    char *reason, size_t rn) {
  memset(g, 0, sizeof *g);
  reason[0] = 0;
  const tg_config_plan *plans[32];
  size_t n = tg_config_plans_for(cfg, route, model, plans, 32);
  if (n == 0) return TG_ENOTFOUND;
  int64_t now = now_ms();
  size_t first = 0;
  pthread_mutex_lock(&p->mu);
  uint64_t now_s = (uint64_t)(now / 1000);
  if (p->chain_time > now_s) now_s = p->chain_time; /* the chain's clock may run ahead (tests) */
  /*
   * The common case in one critical section: the entitlement cached and current, the usage
   * counters loaded, a lease with room. Anything else (a read, a load, no room, a token
   * quota, overage) goes the long way below, from the plan where this stopped.
   */
  for (; first < n; first++) {
    const tg_config_plan *pl = plans[first];
    uint8_t k[KEY_MAX];
    ent *e = find(p, k, key_entitled(k, who, &pl->id));
    if (!e || e->gen != p->gen || (e->ok && e->until <= now_s)) break;
    if (!e->ok) {
      p->stats.entitlement_hits++;
      continue;
    }
    if (pl->unit != TG_QUOTA_CALLS) break;
    int64_t period_ms = (int64_t)pl->period_s * 1000;
    int64_t period = now / period_ms * period_ms;
    size_t kl = key_usage(k, &pl->id, &e->holder, period);
    ent *u = find(p, k, kl);
    if (!u || !u->room || !lease_fits(u, pl)) break;
    p->stats.entitlement_hits++;
    p->stats.admitted_included++;
    g->used_before = u->calls - u->room + u->inflight;
    u->room--;
    g->leased = 1;
    lease_op *lease = lease_take(p, u, pl, k, kl);
    g->plan = pl;
    g->plan_id = pl->id;
    g->user = *who;
    g->holder = e->holder;
    memcpy(g->holder_hex, e->holder_hex, TG_ADDRESS_HEX_LEN);
    g->until = e->until;
    g->period_start = period;
    pthread_mutex_unlock(&p->mu);
    lease_submit(p, lease);
    return TG_OK;
  }
  pthread_mutex_unlock(&p->mu);
  int rc;
  const tg_config_plan *spent = NULL;
  for (size_t i = first; i < n; i++) {
    const tg_config_plan *pl = plans[i];
    int ok = 0;
    uint64_t until = 0;
    tg_address holder;
    char holder_hex[TG_ADDRESS_HEX_LEN];
    if ((rc = entitlement(p, who, &pl->id, now_s, &ok, &until, &holder, holder_hex))) {
      snprintf(reason, rn, "reading the pass contract failed: %s", tg_strerror(rc));
      return rc;
    }
    if (!ok) continue;
    int64_t period_ms = (int64_t)pl->period_s * 1000;
    int64_t period = now / period_ms * period_ms;
    if ((rc = usage_load(p, &pl->id, &holder, period))) return rc;
    uint8_t k[KEY_MAX];
    size_t kl = key_usage(k, &pl->id, &holder, period);
    lease_op *lease = NULL;
    pthread_mutex_lock(&p->mu);
    ent *u = find(p, k, kl);
    int fits = 0;
    if (u) {
      if (pl->unit == TG_QUOTA_CALLS) {
        g->used_before = u->calls - u->room + u->inflight;
        if (u->room && lease_fits(u, pl)) { /* one of a durable lease's calls: nothing to write */
          u->room--;
          g->leased = fits = 1;
        } else {
          fits = u->calls + u->inflight < pl->quota;
          if (fits) u->inflight++;
        }
        lease = lease_take(p, u, pl, k, kl);
      } else {
        fits = u->tokens < pl->quota;
        g->used_before = u->tokens;
        if (fits) u->inflight++;
      }
    }
    if (fits) p->stats.admitted_included++;
    pthread_mutex_unlock(&p->mu);
    lease_submit(p, lease);
    g->plan = pl;
    g->plan_id = pl->id;
    g->user = *who;
    g->holder = holder;
    memcpy(g->holder_hex, holder_hex, TG_ADDRESS_HEX_LEN);
    g->until = until;
    g->period_start = period;
    if (fits) {
      g->calls_held = !g->leased;
      return TG_OK;
    }
    /* Quota spent: the overage credit, if this plan has one. */
    if (!tg_u256_is_zero(&pl->overage)) {
      if ((rc = owed_load(p, &holder))) return rc;
      kl = key_owed(k, &holder);
      pthread_mutex_lock(&p->mu);
      ent *o = find(p, k, kl);
      tg_u256 total;
      int room = 0;
      if (o && tg_u256_add(&total, &o->owed, &o->reserved) == 0 &&
          tg_u256_add(&total, &total, max_price) == 0)
        room = tg_u256_cmp(&total, &pl->overage) <= 0;
      if (room) {
        int ov = tg_u256_add(&o->reserved, &o->reserved, max_price); /* below total: no overflow */
        (void)ov;
        g->overage = 1;
        g->reserved = *max_price;
        g->owed_before = o->owed;
        /* counted as usage too (for reports), so the call holds an in-flight slot */
        kl = key_usage(k, &pl->id, &holder, period);
        if ((u = find(p, k, kl))) u->inflight++;
        g->calls_held = u != NULL;
        p->stats.admitted_overage++;
      }
      pthread_mutex_unlock(&p->mu);
      if (room) return TG_OK;
    }
    if (!spent) spent = pl;
  }
  pthread_mutex_lock(&p->mu);
  if (spent) p->stats.refused_quota++;
  else p->stats.refused_not_entitled++;
  pthread_mutex_unlock(&p->mu);
  memset(g, 0, sizeof *g);
  if (spent) {
    char end[32];
    int64_t period_ms = (int64_t)spent->period_s * 1000;
    fmt_time(end, (uint64_t)((now / period_ms + 1) * period_ms / 1000));
    snprintf(reason, rn,
             "the %s quota of plan \"%s\" (%llu %s) is spent until %s%s; pay per call instead",
             spent->unit == TG_QUOTA_CALLS ? "call" : "token", spent->name,
             (unsigned long long)spent->quota, spent->unit == TG_QUOTA_CALLS ? "calls" : "tokens",
             end, tg_u256_is_zero(&spent->overage) ? "" : " and its overage credit is used up");
    return TG_EPASS_QUOTA;
  }
  char who_s[TG_ADDRESS_HEX_LEN];
  tg_address_to_checksum(who, who_s);
  char id[TG_U256_DEC_MAX];
  tg_u256_to_dec(&plans[0]->id, id);
  snprintf(reason, rn,
           "%s holds no live pass of plan \"%s\" (id %s) and is no live delegate of one: "
           "not held, transferred away, expired, or the delegation ended",
           who_s, plans[0]->name, id);
  return TG_EPASS_NOT_ENTITLED;
}

void tg_passes_release(tg_passes *p, const tg_passes_grant *g) {
  uint8_t k[KEY_MAX];
  pthread_mutex_lock(&p->mu);
  if (g->calls_held || g->leased) {
    ent *u = find(p, k, key_usage(k, &g->plan_id, &g->holder, g->period_start));
    if (u && g->leased) u->room++; /* back to its lease: still durable, still within the quota */
    else if (u && u->inflight) u->inflight--;
  }
  if (g->overage) {
    ent *o = find(p, k, key_owed(k, &g->holder));
    if (o && tg_u256_sub(&o->reserved, &o->reserved, &g->reserved) != 0) tg_u256_zero(&o->reserved);
  }
  pthread_mutex_unlock(&p->mu);
}

void tg_passes_done_leased(tg_passes *p, const tg_passes_grant *g, uint64_t tokens) {
  if (tokens == 0) return;
  uint8_t k[KEY_MAX];
  pthread_mutex_lock(&p->mu);
  ent *u = find(p, k, key_usage(k, &g->plan_id, &g->holder, g->period_start));
  if (u && u->tokens_unwritten + tokens >= u->tokens_unwritten) u->tokens_unwritten += tokens;
  pthread_mutex_unlock(&p->mu);
}

void tg_passes_done(tg_passes *p, const tg_passes_grant *g, uint64_t calls_after,
                    uint64_t tokens_after, const tg_u256 *charged) {
  uint8_t k[KEY_MAX];
  pthread_mutex_lock(&p->mu);
  ent *u = find(p, k, key_usage(k, &g->plan_id, &g->holder, g->period_start));
  if (u) {
    if (g->calls_held && u->inflight) u->inflight--;
    if (calls_after > u->calls) u->calls = calls_after;
    if (tokens_after > u->tokens) u->tokens = tokens_after;
  }
  if (g->overage) {
    ent *o = find(p, k, key_owed(k, &g->holder));
    if (o) {
      if (tg_u256_sub(&o->reserved, &o->reserved, &g->reserved) != 0) tg_u256_zero(&o->reserved);
      if (charged && tg_u256_add(&o->owed, &o->owed, charged) != 0) memset(o->owed.b, 0xff, 32);
    }
  }
  pthread_mutex_unlock(&p->mu);
}

void tg_passes_owed(tg_passes *p, const tg_address *holder, tg_u256 *out) {
  uint8_t k[KEY_MAX];
  tg_u256_zero(out);
  pthread_mutex_lock(&p->mu);
  ent *o = find(p, k, key_owed(k, holder));
  if (o) *out = o->owed;
  pthread_mutex_unlock(&p->mu);
}
