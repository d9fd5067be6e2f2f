/* The payment layer: x402 admission and charging of calls, over the channel ledger and the store. */
#include <event2/event.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <sodium.h>

#include "pay/headroom.h"
#include "pay/ledger.h"
#include "pay/passes.h"
#include "pay/pay.h"
#include "pay/pending.h"
#include "store/store.h"
#include "tollgate/address.h"
#include "tollgate/channel.h"
#include "tollgate/eip712.h"
#include "tollgate/hex.h"
#include "tollgate/keccak.h"
#include "tollgate/siwe.h"
#include "tollgate/u256.h"
#include "tollgate/x402.h"

/*
 * Admission (tg_pay_admit) runs on a worker's loop: it decodes the
 * PAYMENT-SIGNATURE, checks it against the terms this route offers, checks
 * the voucher signature, and reserves the call's maximum price in the
 * ledger. Completion (tg_pay_complete) prices the usage, charges it in the
 * ledger and commits [voucher, charge, payment id] in one store submission;
 * the answer goes out from the store's callback, so nothing acknowledged is
 * lost. See docs/ARCHITECTURE.md "Money decisions".
 */

#define VCACHE_SLOTS 128 /* direct-mapped slots of the verified-voucher cache */

struct tg_pay {
  pthread_mutex_t mu; /* guards cfg (swapped on reload) and stats */
  tg_config *cfg;
  tg_store *store;
  tg_ledger *ledger;
  tg_pay_chain chain;
  uint64_t chain_id;
  tg_address asset, pay_to, receiver_authorizer, channel_contract;
  uint64_t withdraw_delay;
  tg_u256 min_deposit;
  tg_hash channel_domain;
  tg_pay_exact_backend exact;
  tg_passes *passes;    /* NULL: no access passes */
  void (*on_charged)(void *arg, const tg_hash *channel, const tg_u256 *charged,
                     const tg_u256 *claimed, const tg_u256 *balance);
  void *on_charged_arg;
  tg_hash token_domain; /* the asset's EIP-712 domain, for EIP-3009 */
  /* EIP-3009 authorizations admitted and not yet recorded: (from, nonce) keys. */
  pthread_mutex_t inflight_mu;
  struct inflight *inflight[256];
  /* per payer, the values of admitted `exact` transfers not yet known mined or dropped */
  tg_pending *pending;
  tg_pay_stats stats;
  /* several gateways on one store: shared holds (NULL instance: the ledger alone) */
  char *instance;
  int64_t reserve_ttl_ms;
  tg_headroom *headroom; /* NULL: a hold per call (or no instance) */
  atomic_int exact_owner;
  /* vouchers verified before, by their exact header bytes (see vcache_get) */
  pthread_mutex_t vcache_mu;
  uint8_t vcache_key[crypto_shorthash_KEYBYTES];
  struct vcache_entry *vcache[VCACHE_SLOTS];
  uint64_t vcache_hits; /* under vcache_mu */
};

/*
 * A PAYMENT-SIGNATURE whose voucher was decoded and verified (channel id derived from its
 * configuration, ECDSA signature by the configuration's signer) is remembered by its exact
 * bytes: a payer that signed a ceiling ahead sends the same header on every call, and the
 * decode, the channel id and the signature recovery are pure functions of those bytes (and of
 * the channel domain, fixed for a tg_pay). A hit still goes through every other admission
 * check (terms, receiver, token, ledger reservation). Only plain vouchers with a 65-byte
 * signature are kept (never ERC-1271, whose answer depends on the chain).
 */
#define VCACHE_HEADER_MAX 4096
struct vcache_entry {
  size_t len;
  tg_x402_payment pm;
  char header[]; /* len bytes */
};

/* An EIP-3009 authorization between admission and its charge (or release). */
struct inflight {
  struct inflight *next;
  tg_address from;
  tg_hash nonce;
};

struct tg_pay_call {
  tg_pay *pay;
  tg_config *cfg; /* the configuration the call was admitted under */
  tg_x402_scheme scheme;
  tg_ledger_hold hold;
  tg_address payer;
  tg_u256 credit_limit;
  const tg_config_price *price;
  const tg_config_model_price *model_price;
  char request_id[TG_STORE_REQUEST_ID_MAX + 1];
  char route[TG_STORE_ROUTE_MAX + 1];
  char model[TG_STORE_MODEL_MAX + 1];
  char payment_id[TG_STORE_PAYID_MAX + 1];
  tg_hash request_hash;
  /* completion */
  struct event_base *base;
  tg_pay_complete_cb cb;
  void *arg;
  tg_ledger_charge_plan plan;
  int streamed;
  uint64_t input_tokens, output_tokens;
  tg_buf header;  /* PAYMENT-RESPONSE */
  tg_buf trailer; /* SSE comment for streamed answers */
  /* exact */
  tg_x402_exact auth;
  int auth_held;  /* the (from, nonce) key is in the in-flight set */
  int reserved;   /* the authorization's value is pending (p->pending) on this call's account */
  tg_pending_mark mark; /* the admission read of the payer's balance */
  tg_hash tx_hash;
  int deposit_tx; /* channel: tx_hash is the gasless deposit this call carried */
  /* payment-identifier: its key is in the in-flight set until the call is recorded or released */
  int payid_held;
  tg_hash payid_key;
  /* channel admission with a shared hold: what the refusal needs once the store answered */
  int shared_held;          /* the store holds this call's maximum price */
  char unit_id[TG_HEADROOM_ID_MAX]; /* non-empty: held by a headroom unit, not its own hold */
  tg_u256 unit_amount;
  char *resource_url;
  tg_u256 max;
  tg_pay_admit_cb admit_cb;
  void *admit_arg;
  /*
   * exact: what the store knew of this authorization at admission. The intent
   * (status VERIFIED) is recorded before the transaction is submitted; a record
   * still VERIFIED means a run crashed between the two, and the call resumes it.
   */
  int exact_prev;       /* EXACT_NONE, TG_EXACT_FAILED or TG_EXACT_VERIFIED */
  char exact_rid[TG_STORE_REQUEST_ID_MAX + 1]; /* the record's request id (the charge's) */
  int exact_err;
  /* access pass: admitted on a pass (its quota, or its overage credit) */
  int pass;
  tg_passes_grant grant;
  tg_u256 pass_max;    /* the reservation (overage) */
};

#define EXACT_NONE (-1)

/* ---- small helpers --------------------------------------------------------- */

static void copy_cstr(char *dst, size_t cap, const char *src) {
  size_t n = src ? strlen(src) : 0;
  if (n >= cap) n = cap - 1;
  if (n) memcpy(dst, src, n);
  dst[n] = 0;
}

static tg_config *config_get(tg_pay *p) {
  pthread_mutex_lock(&p->mu);
  tg_config *c = tg_config_ref(p->cfg);
  pthread_mutex_unlock(&p->mu);
  return c;
}

static void stat_add(tg_pay *p, uint64_t *counter) {
  pthread_mutex_lock(&p->mu);
  (*counter)++;
  pthread_mutex_unlock(&p->mu);
}

static void credit_of(const tg_config *cfg, const tg_address *payer, tg_u256 *out) {
  tg_u256_zero(out);
  for (size_t i = 0; i < cfg->n_credits; i++) {
    if (memcmp(cfg->credits[i].payer.b, payer->b, 20) == 0) {
      *out = cfg->credits[i].limit;
      return;
    }
  }
}

/* The most a call can cost: the per-call price, or the model's reservation. */
static int max_price_of(const tg_config_price *price, const char *model, tg_u256 *out,
                        const tg_config_model_price **mp) {
  *mp = NULL;
  if (price->kind == TG_PRICE_CALL) {
    *out = price->per_call;
    return TG_OK;
  }
  *mp = tg_config_model_price_find(price, model ? model : "");
  if (*mp == NULL) return TG_ENOTFOUND;
  *out = (*mp)->max_per_call;
  return TG_OK;
}

/* ceil((in * input + out * output) / 10^6): token prices are per million tokens. */
static int token_price(tg_u256 *out, const tg_config_model_price *mp, uint64_t in, uint64_t outt) {
  tg_u256 a, b;
  if (tg_u256_mul_u64(&a, &mp->input_per_mtok, in) || tg_u256_mul_u64(&b, &mp->output_per_mtok, outt) ||
      tg_u256_add(&a, &a, &b) || tg_u256_add_u64(&a, &a, 999999))
    return TG_EOVERFLOW;
  return tg_u256_divmod_u64(out, NULL, &a, 1000000);
}

/* ---- the 402 answer -------------------------------------------------------- */

typedef struct {
  tg_pay_decision d;
  tg_buf header;  /* PAYMENT-REQUIRED */
  tg_buf body;
  char channel_state[1024];
  char voucher_state[2300];
} refusal;

static void fill_requirements(tg_pay *p, const tg_config *cfg, tg_x402_requirements *r,
                              tg_x402_scheme scheme, const tg_u256 *amount) {
  memset(r, 0, sizeof *r);
  r->scheme = scheme;
  r->chain_id = p->chain_id;
  r->amount = *amount;
  r->asset = p->asset;
  r->pay_to = p->pay_to;
  r->max_timeout_seconds = cfg->exact_validity_s ? cfg->exact_validity_s : 60;
  copy_cstr(r->token_name, sizeof r->token_name, cfg->asset_name);
  copy_cstr(r->token_version, sizeof r->token_version, cfg->asset_version);
  if (scheme == TG_X402_CHANNEL) {
    r->receiver_authorizer = p->receiver_authorizer;
    r->withdraw_delay = p->withdraw_delay;
    r->channel_contract = p->channel_contract;
    r->min_deposit = p->min_deposit;
  }
}

/* Channel snapshot JSON for a corrective 402 (batch-settlement channelState/voucherState). */
static void snapshot_json(refusal *f, const tg_ledger_channel *c) {
  char id[67], bal[TG_U256_DEC_MAX], cl[TG_U256_DEC_MAX], ch[TG_U256_DEC_MAX], ce[TG_U256_DEC_MAX];
  tg_hex_encode(id, c->id.b, 32, 1);
  tg_u256_to_dec(&c->balance, bal);
  tg_u256_to_dec(&c->total_claimed, cl);
  tg_u256_to_dec(&c->charged, ch);
  tg_u256_to_dec(&c->ceiling, ce);
  snprintf(f->channel_state, sizeof f->channel_state,
           "{\"channelId\":\"%s\",\"balance\":\"%s\",\"totalClaimed\":\"%s\","
           "\"withdrawRequestedAt\":%llu,\"chargedCumulativeAmount\":\"%s\"}",
           id, bal, cl, (unsigned long long)c->withdraw_requested_at, ch);
  char sig[2 * TG_X402_SIG_MAX + 3];
  tg_hex_encode(sig, c->ceiling_sig.b, c->ceiling_sig.len, 1);
  snprintf(f->voucher_state, sizeof f->voucher_state,
           "{\"signedMaxClaimable\":\"%s\",\"signature\":\"%s\"}", ce, sig);
}

/*
 * Answers a refusal: `status` 402 (with PAYMENT-REQUIRED listing every
 * accepted scheme) or 400/409/503 with a JSON error. `snap` adds the channel
 * state of a corrective 402.
 */
static void refuse(tg_pay *p, const tg_config *cfg, const tg_pay_request *req, int status,
                   const char *reason, const tg_u256 *amount, const tg_ledger_channel *snap,
                   tg_pay_admit_cb cb, void *arg) {
  refusal f;
  memset(&f.d, 0, sizeof f.d);
  tg_buf_init(&f.header, 0);
  tg_buf_init(&f.body, 0);
  f.d.admitted = 0;
  f.d.status = status;
  tg_x402_required r;
  memset(&r, 0, sizeof r);
  r.error = reason;
  r.resource_url = req->resource_url;
  r.mime_type = "application/json";
  r.advertise_payment_id = 1;
  if (amount) {
    if (cfg->scheme_channel) {
      fill_requirements(p, cfg, &r.accepts[r.n_accepts], TG_X402_CHANNEL, amount);
      if (snap) {
        snapshot_json(&f, snap);
        r.channel_state_json[r.n_accepts] = f.channel_state;
        r.voucher_state_json[r.n_accepts] = f.voucher_state;
      }
      r.n_accepts++;
    }
    if (cfg->scheme_exact) fill_requirements(p, cfg, &r.accepts[r.n_accepts++], TG_X402_EXACT, amount);
  }
  if (amount && tg_x402_required_encode(&f.header, &f.body, &r) == 0) {
    f.d.headers[f.d.n_headers++] = (tg_pay_header){"PAYMENT-REQUIRED", (const char *)f.header.data};
  } else {
    tg_buf_reset(&f.body);
    json_t *j = json_pack("{s:i, s:s}", "x402Version", TG_X402_VERSION, "error", reason);
    char *t = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!t || tg_buf_append_str(&f.body, t) != 0) tg_buf_reset(&f.body);
    free(t);
  }
  /* The HTTP layer sets Content-Type: application/json on every refusal. */
  f.d.body = f.body.data ? (const char *)f.body.data : "{}";
  f.d.body_len = f.body.data ? f.body.len : 2;
  stat_add(p, status == 402 ? &p->stats.refused_402 : &p->stats.refused_400);
  cb(arg, &f.d);
  tg_buf_cleanup(&f.header);
  tg_buf_cleanup(&f.body);
}

/* ---- in-flight EIP-3009 authorizations --------------------------------------- */

static unsigned inflight_slot(const tg_hash *nonce) {
  return nonce->b[0]; /* nonces are random: the first byte spreads them */
}

/* Takes (from, nonce) for one call; 0 when another call already holds it. */
static int inflight_take(tg_pay *p, const tg_address *from, const tg_hash *nonce) {
  unsigned i = inflight_slot(nonce);
  pthread_mutex_lock(&p->inflight_mu);
  for (struct inflight *e = p->inflight[i]; e; e = e->next) {
    if (!memcmp(e->nonce.b, nonce->b, 32) && !memcmp(e->from.b, from->b, 20)) {
      pthread_mutex_unlock(&p->inflight_mu);
      return 0;
    }
  }
  struct inflight *e = malloc(sizeof *e);
  if (!e) abort();
  e->from = *from;
  e->nonce = *nonce;
  e->next = p->inflight[i];
  p->inflight[i] = e;
  pthread_mutex_unlock(&p->inflight_mu);
  return 1;
}

static void inflight_drop(tg_pay *p, const tg_address *from, const tg_hash *nonce) {
  unsigned i = inflight_slot(nonce);
  pthread_mutex_lock(&p->inflight_mu);
  for (struct inflight **pp = &p->inflight[i]; *pp; pp = &(*pp)->next) {
    struct inflight *e = *pp;
    if (!memcmp(e->nonce.b, nonce->b, 32) && !memcmp(e->from.b, from->b, 20)) {
      *pp = e->next;
      free(e);
      break;
    }
  }
  pthread_mutex_unlock(&p->inflight_mu);
}

/*
 * payment-identifier ids share the in-flight set under their own key: the
 * zero address (which never signs) and keccak256("payment-identifier:" || id).
 */
static void payid_key(tg_hash *out, const char *id) {
  char buf[32 + TG_STORE_PAYID_MAX + 1];
  int n = snprintf(buf, sizeof buf, "payment-identifier:%s", id);
  tg_keccak256(out, buf, n > 0 ? (size_t)n : 0);
}

static const tg_address zero_address;

/* Frees a call refused during admission (its reservation was never made). */
static void call_abort(tg_pay *p, tg_pay_call *call) {
  if (call->reserved) tg_pending_release(p->pending, &call->auth.from, &call->auth.nonce);
  tg_pending_read_end(p->pending, &call->mark);
  if (call->payid_held) inflight_drop(p, &zero_address, &call->payid_key);
  tg_config_unref(call->cfg);
  free(call->resource_url);
  free(call);
}

/* The recorded answer of a payment-identifier seen before: its status and PAYMENT-RESPONSE. */
static void answer_recorded(tg_pay *p, const tg_store_payid *rec, tg_pay_admit_cb cb, void *arg) {
  tg_pay_decision d;
  memset(&d, 0, sizeof d);
  d.admitted = 0;
  d.status = rec->status >= 200 && rec->status < 600 ? rec->status : 200;
  if (rec->response_header[0])
    d.headers[d.n_headers++] = (tg_pay_header){"PAYMENT-RESPONSE", rec->response_header};
  json_t *j = json_pack("{s:i, s:s, s:s, s:b}", "x402Version", TG_X402_VERSION, "paymentIdentifier",
                        rec->id, "requestId", rec->request_id, "duplicate", 1);
  char *t = j ? json_dumps(j, JSON_COMPACT) : NULL;
  json_decref(j);
  d.body = t ? t : "{}";
  d.body_len = strlen(d.body);
  (void)p;
  cb(arg, &d);
  free(t);
}

/*
 * payment-identifier (x402 extension): an id already recorded is answered from
 * its record when the payload is the same, and with 409 when it differs; an id
 * whose call is still in flight gets 409 too. Returns 1 when it answered, 0
 * when the call goes on (then the id is held in *call until it is recorded).
 */
static int check_payid(tg_pay *p, const tg_config *cfg, const tg_pay_request *req,
                       tg_pay_call *call, tg_pay_admit_cb cb, void *arg) {
  tg_store_payid *rec = malloc(sizeof *rec);
  if (!rec) abort();
  int rc = tg_store_payid_get(p->store, call->payment_id, rec);
  if (rc == 0) {
    if (sodium_memcmp(rec->request_hash.b, call->request_hash.b, 32) == 0)
      answer_recorded(p, rec, cb, arg);
    else
      refuse(p, cfg, req, 409, "payment_identifier_conflict", NULL, NULL, cb, arg);
    free(rec);
    return 1;
  }
  free(rec);
  if (rc != TG_ENOTFOUND) {
    refuse(p, cfg, req, 503, "unexpected_verify_error", NULL, NULL, cb, arg);
    return 1;
  }
  payid_key(&call->payid_key, call->payment_id);
  if (!inflight_take(p, &zero_address, &call->payid_key)) {
    refuse(p, cfg, req, 409, "payment_identifier_in_progress", NULL, NULL, cb, arg);
    return 1;
  }
  call->payid_held = 1;
  return 0;
}

/* ---- verified vouchers, by header bytes --------------------------------------- */

static size_t vcache_slot(tg_pay *p, const char *hdr, size_t len) {
  uint8_t h[crypto_shorthash_BYTES];
  crypto_shorthash(h, (const unsigned char *)hdr, len, p->vcache_key);
  uint64_t v;
  memcpy(&v, h, sizeof v);
  return (size_t)(v % VCACHE_SLOTS);
}

/* 1 and the decoded payment when these exact bytes were verified before, else 0. */
static int vcache_get(tg_pay *p, const char *hdr, size_t len, tg_x402_payment *out) {
  if (len > VCACHE_HEADER_MAX) return 0;
  size_t i = vcache_slot(p, hdr, len);
  int hit = 0;
  pthread_mutex_lock(&p->vcache_mu);
  struct vcache_entry *e = p->vcache[i];
  if (e && e->len == len && memcmp(e->header, hdr, len) == 0) {
    *out = e->pm;
    hit = 1;
    p->vcache_hits++;
  }
  pthread_mutex_unlock(&p->vcache_mu);
  return hit;
}

/* Remembers a voucher header whose decode and signature were just verified. */
static void vcache_put(tg_pay *p, const char *hdr, size_t len, const tg_x402_payment *pm) {
  if (len > VCACHE_HEADER_MAX || pm->accepted.scheme != TG_X402_CHANNEL ||
      pm->u.channel.type != TG_X402_CHANNEL_VOUCHER || pm->u.channel.voucher_signature.len != 65)
    return;
  struct vcache_entry *e = malloc(sizeof *e + len);
  if (!e) abort();
  e->len = len;
  e->pm = *pm;
  memcpy(e->header, hdr, len);
  size_t i = vcache_slot(p, hdr, len);
  pthread_mutex_lock(&p->vcache_mu);
  struct vcache_entry *old = p->vcache[i];
  p->vcache[i] = e;
  pthread_mutex_unlock(&p->vcache_mu);
  free(old);
}

/* ---- channel admission ---------------------------------------------------- */

/* Loads a channel the ledger does not know: from the store, else from the chain. */
static int load_channel(tg_pay *p, const tg_x402_channel *ch) {
  tg_ledger_channel lc;
  memset(&lc, 0, sizeof lc);
  lc.id = ch->channel_id;
  lc.config = ch->config;
  tg_store_channel *sc = malloc(sizeof *sc);
  if (!sc) abort();
  int rc = tg_store_channel_get(p->store, &ch->channel_id, sc);
  if (rc == 0) {
    lc.balance = sc->chain.balance;
    lc.total_claimed = sc->chain.total_claimed;
    lc.withdraw_requested_at = sc->chain.withdraw_requested_at;
    lc.charged = sc->charged;
    lc.ceiling = sc->ceiling;
    lc.ceiling_sig.len = sc->ceiling_sig_len;
    memcpy(lc.ceiling_sig.b, sc->ceiling_sig, sc->ceiling_sig_len);
    free(sc);
    return tg_ledger_put(p->ledger, &lc);
  }
  free(sc);
  if (rc != TG_ENOTFOUND) return rc;
  if (p->chain.channel_state == NULL) return TG_ECHANNEL_UNKNOWN;
  rc = p->chain.channel_state(p->chain.ctx, &ch->channel_id, &lc.balance, &lc.total_claimed,
                              &lc.withdraw_requested_at);
  if (rc) return rc;
  if (tg_u256_is_zero(&lc.balance)) return TG_ECHANNEL_UNKNOWN;
  /* The claimed total is the floor of what was charged (x402 batch-settlement's baseline). */
  lc.charged = lc.total_claimed;
  /* Record the configuration for settlement; ordered before any charge on this channel. */
  tg_store_op op;
  memset(&op, 0, sizeof op);
  op.kind = TG_STORE_OP_CHANNEL_PUT;
  op.u.channel.id = ch->channel_id;
  op.u.channel.cfg.chain_id = p->chain_id;
  op.u.channel.cfg.contract = p->channel_contract;
  op.u.channel.cfg.payer = ch->config.payer;
  op.u.channel.cfg.payer_authorizer = ch->config.payer_authorizer;
  op.u.channel.cfg.receiver = ch->config.receiver;
  op.u.channel.cfg.receiver_authorizer = ch->config.receiver_authorizer;
  op.u.channel.cfg.token = ch->config.token;
  op.u.channel.cfg.withdraw_delay = ch->config.withdraw_delay;
  op.u.channel.cfg.salt = ch->config.salt;
  op.u.channel.chain.balance = lc.balance;
  op.u.channel.chain.total_claimed = lc.total_claimed;
  op.u.channel.chain.withdraw_requested_at = lc.withdraw_requested_at;
  op.u.channel.chain.status = lc.withdraw_requested_at ? TG_CHANNEL_WITHDRAWING : TG_CHANNEL_OPEN;
  rc = tg_store_write(p->store, &op, 1);
  if (rc && rc != TG_EEXISTS) return rc;
  return tg_ledger_put(p->ledger, &lc);
}

static int same_address(const tg_address *a, const tg_address *b) {
  return memcmp(a->b, b->b, 20) == 0;
}

/* Why the echoed terms differ from ours, or NULL when they match. */
static const char *terms_mismatch(tg_pay *p, const tg_x402_requirements *a, const tg_u256 *amount) {
  if (a->chain_id != p->chain_id) return "invalid_network";
  if (!same_address(&a->asset, &p->asset)) return "invalid_payment_requirements";
  if (!same_address(&a->pay_to, &p->pay_to)) return "invalid_payment_requirements";
  if (tg_u256_cmp(&a->amount, amount) < 0) return "invalid_payment_requirements";
  return NULL;
}

/*
 * The voucher's signature: ECDSA by the payer authorizer when one is set
 * (x402 batch-settlement: an EOA, checked locally); otherwise by the payer,
 * which may be a contract wallet (ERC-1271, asked on-chain). A contract
 * wallet's voucher that the ledger already holds (same ceiling, same bytes)
 * was verified before and is not asked again, so a ceiling signed ahead
 * costs one eth_call, not one per call.
 */
static int check_voucher(tg_pay *p, const tg_x402_channel *ch, const tg_hash *id, int *by_ecdsa) {
  tg_address signer;
  tg_channel_voucher_signer(&signer, &ch->config);
  int rc = tg_channel_voucher_check(&p->channel_domain, id, &ch->max_claimable,
                                    &ch->voucher_signature, &signer);
  *by_ecdsa = rc == 0;
  if (rc == 0 || !tg_address_is_zero(&ch->config.payer_authorizer)) return rc;
  if (p->chain.erc1271 == NULL) return rc ? rc : TG_ESIG;
  tg_ledger_channel known;
  if (tg_ledger_get(p->ledger, id, &known) == 0 && tg_u256_cmp(&known.ceiling, &ch->max_claimable) == 0 &&
      known.ceiling_sig.len == ch->voucher_signature.len &&
      memcmp(known.ceiling_sig.b, ch->voucher_signature.b, known.ceiling_sig.len) == 0)
    return TG_OK;
  tg_eip712_voucher v;
  v.channel_id = *id;
  v.max_claimable_amount = ch->max_claimable;
  tg_hash digest;
  if ((rc = tg_eip712_voucher_digest(&digest, &p->channel_domain, &v))) return rc;
  int valid = 0;
  rc = p->chain.erc1271(p->chain.ctx, &ch->config.payer, &digest, ch->voucher_signature.b,
                        ch->voucher_signature.len, &valid);
  if (rc) return rc == TG_ETIMEOUT ? rc : TG_ERPC;
  return valid ? TG_OK : TG_ESIG_MISMATCH;
}

static void shared_reserve(tg_pay *p, const tg_pay_request *req, tg_pay_call *call,
                           const tg_x402_channel *ch, const tg_u256 *max, struct event_base *base,
                           tg_pay_admit_cb cb, void *arg);

/* Seconds an authorization must stay valid after admission, for its submission. */
#define EXACT_VALIDITY_MARGIN 6

/* Reserves the call's maximum under the voucher: the last step of channel admission. */
static void admit_reserve(tg_pay *p, tg_config *cfg, const tg_pay_request *req,
                          const tg_x402_channel *ch, const tg_hash *idp, const tg_u256 *max,
                          tg_pay_call *call, tg_pay_admit_cb cb, void *arg) {
  const char *why;
  tg_hash id = *idp;
  credit_of(cfg, &ch->config.payer, &call->credit_limit);
  tg_ledger_channel snap;
  int rc = tg_ledger_reserve(p->ledger, &call->hold, &snap, &id, &ch->max_claimable,
                             &ch->voucher_signature, max, &call->credit_limit);
  if (rc == TG_ECHANNEL_UNKNOWN) {
    rc = load_channel(p, ch);
    if (rc == 0)
      rc = tg_ledger_reserve(p->ledger, &call->hold, &snap, &id, &ch->max_claimable,
                             &ch->voucher_signature, max, &call->credit_limit);
  }
  if (rc == TG_ECHANNEL_SHORT) {
    refuse(p, cfg, req, 402, "invalid_batch_settlement_evm_cumulative_amount_mismatch", max, &snap,
           cb, arg);
    goto fail;
  }
  if (rc == TG_ECHANNEL_WITHDRAWING) {
    why = "invalid_batch_settlement_evm_channel_withdrawing";
    goto refuse402;
  }
  if (rc == TG_ECHANNEL_UNKNOWN) {
    why = "invalid_batch_settlement_evm_channel_not_found";
    goto refuse402;
  }
  if (rc) {
    refuse(p, cfg, req, 503, "invalid_batch_settlement_evm_channel_state_read_failed", NULL, NULL, cb,
           arg);
    goto fail;
  }
  call->payer = ch->config.payer;
  if (p->instance &&
      !(p->headroom && tg_headroom_take(p->headroom, &id, &call->hold.max_price, call->unit_id,
                                        &call->unit_amount))) {
    shared_reserve(p, req, call, ch, max, call->base, cb, arg);
    return;
  }
  if (p->instance) call->shared_held = 1; /* on a unit of this instance's headroom lease */
  tg_pay_decision d;
  memset(&d, 0, sizeof d);
  d.admitted = 1;
  d.call = call;
  stat_add(p, &p->stats.admitted);
  cb(arg, &d);
  return;
refuse402:
  refuse(p, cfg, req, 402, why, max, NULL, cb, arg);
fail:
  call_abort(p, call);
}

/* ---- gasless deposits (batch-settlement `deposit` payloads) --------------------------- */

/* The EIP-3009 nonce of a deposit: keccak256(abi.encode(channelId, salt)) (TollgateChannels). */
static void deposit_nonce(tg_hash *out, const tg_hash *id, const tg_hash *salt) {
  uint8_t b[64];
  memcpy(b, id->b, 32);
  memcpy(b + 32, salt->b, 32);
  tg_keccak256(out, b, sizeof b);
}

/*
 * The off-chain and read checks of a deposit authorization: amount within
 * [minDeposit, 2^128), window, the payer's ECDSA signature of
 * ReceiveWithAuthorization(payer -> channel contract), then the token's
 * authorizationState and the payer's balance. *used: the authorization was
 * spent already (the deposit is on-chain: a retry). NULL when it passes.
 */
static const char *deposit_check(tg_pay *p, const tg_x402_channel *ch, const tg_hash *id, int *used,
                                 int *status) {
  *used = 0;
  *status = 402;
  if (!ch->has_deposit || tg_u256_is_zero(&ch->deposit_amount))
    return "invalid_batch_settlement_evm_deposit_payload";
  if (tg_u256_cmp(&ch->deposit_amount, &p->min_deposit) < 0)
    return "invalid_batch_settlement_evm_deposit_below_minimum";
  uint64_t now = (uint64_t)time(NULL);
  if (ch->deposit_valid_after > now) return "invalid_batch_settlement_evm_deposit_valid_after";
  if (ch->deposit_valid_before <= now + EXACT_VALIDITY_MARGIN)
    return "invalid_batch_settlement_evm_deposit_valid_before";
  if (ch->deposit_signature.len != 65) return "invalid_batch_settlement_evm_deposit_signature";
  tg_eip3009_authorization ea;
  ea.from = ch->config.payer;
  ea.to = p->channel_contract;
  ea.value = ch->deposit_amount;
  tg_u256_from_u64(&ea.valid_after, ch->deposit_valid_after);
  tg_u256_from_u64(&ea.valid_before, ch->deposit_valid_before);
  deposit_nonce(&ea.nonce, id, &ch->deposit_nonce);
  tg_sig sig;
  memcpy(sig.b, ch->deposit_signature.b, 65);
  tg_address signer;
  if (tg_eip3009_receive_recover(&signer, &p->token_domain, &ea, &sig) != 0 ||
      !same_address(&signer, &ch->config.payer))
    return "invalid_batch_settlement_evm_deposit_signature";
  tg_u256 balance;
  int rc = p->exact.check(p->exact.ctx, &p->asset, &ea.from, &ea.nonce, &balance, used);
  if (rc) {
    stat_add(p, &p->stats.chain_check_errors);
    *status = 503;
    return "unexpected_verify_error";
  }
  if (!*used && tg_u256_cmp(&balance, &ea.value) < 0) return "insufficient_funds";
  return NULL;
}

/* Re-reads a channel's on-chain state into the ledger (after a deposit landed). */
static int refresh_channel(tg_pay *p, const tg_x402_channel *ch, const tg_hash *id) {
  if (p->chain.channel_state == NULL) return TG_ECHANNEL_UNKNOWN;
  tg_u256 bal, claimed;
  uint64_t wr;
  int rc = p->chain.channel_state(p->chain.ctx, id, &bal, &claimed, &wr);
  if (rc) return rc;
  rc = tg_ledger_mirror(p->ledger, id, &bal, &claimed, wr);
  if (rc == TG_ENOTFOUND) {
    rc = load_channel(p, ch);
    if (!rc) rc = tg_ledger_mirror(p->ledger, id, &bal, &claimed, wr);
  }
  return rc;
}

/* A call waiting for its deposit transaction. */
typedef struct {
  tg_pay *p;
  tg_config *cfg;
  tg_pay_call *call;
  tg_x402_channel ch;
  tg_hash id;
  tg_u256 max;
  char resource_url[512];
  tg_pay_admit_cb cb;
  void *arg;
} deposit_wait;

static void on_deposited(void *arg, int err, const tg_hash *tx) {
  deposit_wait *w = arg;
  tg_pay *p = w->p;
  tg_pay_request req;
  memset(&req, 0, sizeof req);
  req.resource_url = w->resource_url;
  req.request_id = w->call->request_id;
  if (err) {
    stat_add(p, &p->stats.chain_submit_errors);
    refuse(p, w->cfg, &req, 402, "invalid_batch_settlement_evm_deposit_failed", &w->max, NULL, w->cb,
           w->arg);
    call_abort(p, w->call);
  } else {
    if (tx) w->call->tx_hash = *tx;
    w->call->deposit_tx = tx != NULL;
    int rc = refresh_channel(p, &w->ch, &w->id);
    if (rc && rc != TG_ECHANNEL_UNKNOWN) {
      refuse(p, w->cfg, &req, 503, "invalid_batch_settlement_evm_channel_state_read_failed", NULL,
             NULL, w->cb, w->arg);
      call_abort(p, w->call);
    } else {
      admit_reserve(p, w->cfg, &req, &w->ch, &w->id, &w->max, w->call, w->cb, w->arg);
    }
  }
  tg_config_unref(w->cfg);
  sodium_memzero(w, sizeof *w);
  free(w);
}

/* ---- cooperative refunds ------------------------------------------------------------ */

typedef struct {
  tg_pay *p;
  tg_x402_channel ch;
  tg_hash id;
  tg_u256 amount;
  tg_pay_refund_cb cb;
  void *arg;
} refund_wait;

static void refund_answer(tg_pay_refund_cb cb, void *arg, int status, json_t *j) {
  char *t = json_dumps(j, JSON_COMPACT);
  json_decref(j);
  cb(arg, status, t ? t : "{}");
  free(t);
}

static void refund_error(tg_pay_refund_cb cb, void *arg, int status, const char *reason) {
  refund_answer(cb, arg, status, json_pack("{s:s}", "error", reason));
}

static json_t *j_dec(const tg_u256 *v) {
  char d[TG_U256_DEC_MAX];
  tg_u256_to_dec(v, d);
  return json_string(d);
}

static json_t *j_hex32(const tg_hash *h) {
  char x[67];
  tg_hex_encode(x, h->b, 32, 1);
  return json_string(x);
}

static void on_refunded(void *arg, int err, const tg_hash *tx) {
  refund_wait *w = arg;
  /* Success or not, the contract is the truth: re-read it (this also reopens the channel). */
  int rc = refresh_channel(w->p, &w->ch, &w->id);
  if (err) {
    refund_error(w->cb, w->arg, 502, "refund_transaction_failed");
  } else {
    tg_ledger_channel lc;
    memset(&lc, 0, sizeof lc);
    if (rc == 0) rc = tg_ledger_get(w->p->ledger, &w->id, &lc);
    json_t *j = json_pack("{s:o, s:o, s:o}", "channelId", j_hex32(&w->id), "refunded", j_dec(&w->amount),
                          "transaction", tx ? j_hex32(tx) : json_string(""));
    if (rc == 0) {
      json_object_set_new(j, "balance", j_dec(&lc.balance));
      json_object_set_new(j, "charged", j_dec(&lc.charged));
    }
    refund_answer(w->cb, w->arg, 200, j);
  }
  free(w);
}

void tg_pay_refund(tg_pay *p, struct event_base *base, const char *payment_signature,
                   tg_pay_refund_cb cb, void *arg) {
  if (!p->exact.refund || !payment_signature) {
    refund_error(cb, arg, p->exact.refund ? 400 : 503,
                 p->exact.refund ? "PAYMENT-SIGNATURE header with a refund payload is required"
                                 : "refunds are not offered by this gateway");
    return;
  }
  tg_x402_payment *pm = malloc(sizeof *pm);
  if (!pm) abort();
  const char *reason = NULL;
  int rc = tg_x402_payment_decode(pm, &reason, payment_signature, strlen(payment_signature));
  const tg_x402_channel *ch = &pm->u.channel;
  tg_hash id;
  if (rc) {
    refund_error(cb, arg, 400, reason ? reason : "invalid_payload");
    goto done;
  }
  if (pm->accepted.scheme != TG_X402_CHANNEL || ch->type != TG_X402_CHANNEL_REFUND) {
    refund_error(cb, arg, 400, "invalid_batch_settlement_evm_payload_type");
    goto done;
  }
  if (!atomic_load(&p->exact_owner)) {
    /* The refund is a transaction from the gateway key: only the instance holding the gateway
     * lease sends it (docs/STORE.md). Refused before anything is read or reserved, so the
     * payer may retry at once, on any instance (a load balancer may route to the holder). */
    refund_error(cb, arg, 503, "refund_submitter_elsewhere");
    goto done;
  }
  if (!same_address(&ch->config.receiver, &p->pay_to) ||
      !same_address(&ch->config.receiver_authorizer, &p->receiver_authorizer) ||
      !same_address(&ch->config.token, &p->asset) || ch->config.withdraw_delay != p->withdraw_delay) {
    refund_error(cb, arg, 402, "invalid_batch_settlement_evm_receiver_mismatch");
    goto done;
  }
  if (tg_channel_id(&id, &p->channel_domain, &ch->config) || memcmp(id.b, ch->channel_id.b, 32)) {
    refund_error(cb, arg, 400, "invalid_batch_settlement_evm_channel_id_mismatch");
    goto done;
  }
  /* The voucher authenticates the payer (only its key, or its authorizer, signs for the channel). */
  int by_ecdsa;
  rc = check_voucher(p, ch, &id, &by_ecdsa);
  if (rc) {
    refund_error(cb, arg, rc == TG_ERPC || rc == TG_ETIMEOUT ? 503 : 402,
                 rc == TG_ERPC || rc == TG_ETIMEOUT ? "invalid_batch_settlement_evm_rpc_read_failed"
                                                    : "invalid_batch_settlement_evm_voucher_signature");
    goto done;
  }
  tg_ledger_channel known;
  if (tg_ledger_get(p->ledger, &id, &known) == TG_ENOTFOUND && (rc = load_channel(p, ch)) != 0) {
    refund_error(cb, arg, rc == TG_ECHANNEL_UNKNOWN ? 402 : 503,
                 rc == TG_ECHANNEL_UNKNOWN ? "invalid_batch_settlement_evm_channel_not_found"
                                           : "invalid_batch_settlement_evm_channel_state_read_failed");
    goto done;
  }
  /* The freshest balance first, so that a recent deposit or claim is counted. */
  if ((rc = refresh_channel(p, ch, &id)) != 0) {
    refund_error(cb, arg, 503, "invalid_batch_settlement_evm_channel_state_read_failed");
    goto done;
  }
  tg_u256 amount;
  rc = tg_ledger_refund_begin(p->ledger, &id, &amount, (uint64_t)time(NULL));
  if (rc) {
    refund_error(cb, arg, rc == TG_ECHANNEL_SHORT || rc == TG_ECHANNEL_WITHDRAWING ? 409 : 500,
                 rc == TG_ECHANNEL_SHORT ? "nothing_to_refund"
                 : rc == TG_ECHANNEL_WITHDRAWING ? "invalid_batch_settlement_evm_channel_withdrawing"
                                                 : "unexpected_refund_error");
    goto done;
  }
  refund_wait *w = calloc(1, sizeof *w);
  if (!w) abort();
  w->p = p;
  w->ch = *ch;
  w->id = id;
  w->amount = amount;
  w->cb = cb;
  w->arg = arg;
  rc = p->exact.refund(p->exact.ctx, base, &p->channel_contract, &ch->config, &amount, on_refunded, w);
  if (rc) on_refunded(w, rc, NULL);
done:
  sodium_memzero(pm, sizeof *pm);
  free(pm);
}

static void admit_channel(tg_pay *p, tg_config *cfg, struct event_base *base,
                          const tg_pay_request *req, const tg_x402_payment *pm, const tg_u256 *max,
                          int verified, tg_pay_call *call, tg_pay_admit_cb cb, void *arg) {
  const tg_x402_channel *ch = &pm->u.channel;
  call->base = base; /* the loop a shared hold's answer comes back on */
  const char *why = terms_mismatch(p, &pm->accepted, max);
  if (why) goto refuse402;
  if (ch->type == TG_X402_CHANNEL_REFUND ||
      (ch->type == TG_X402_CHANNEL_DEPOSIT && (!p->exact.deposit || !p->exact.check))) {
    /* Cooperative refunds are asked for at /channel/refund, not through a payment. */
    why = "invalid_batch_settlement_evm_payload_type";
    goto refuse402;
  }
  if (!same_address(&ch->config.receiver, &p->pay_to)) {
    why = "invalid_batch_settlement_evm_receiver_mismatch";
    goto refuse402;
  }
  if (!same_address(&ch->config.receiver_authorizer, &p->receiver_authorizer)) {
    why = "invalid_batch_settlement_evm_receiver_authorizer_mismatch";
    goto refuse402;
  }
  if (!same_address(&ch->config.token, &p->asset)) {
    why = "invalid_batch_settlement_evm_token_mismatch";
    goto refuse402;
  }
  if (ch->config.withdraw_delay != p->withdraw_delay) {
    why = "invalid_batch_settlement_evm_withdraw_delay_mismatch";
    goto refuse402;
  }
  tg_hash id = ch->channel_id;
  int rc = 0;
  if (!verified) { /* else: these exact header bytes passed both checks before (vcache) */
    if (tg_channel_id(&id, &p->channel_domain, &ch->config) || memcmp(id.b, ch->channel_id.b, 32)) {
      refuse(p, cfg, req, 400, "invalid_batch_settlement_evm_channel_id_mismatch", NULL, NULL, cb, arg);
      goto fail;
    }
    int by_ecdsa;
    rc = check_voucher(p, ch, &id, &by_ecdsa);
    if (rc == 0 && by_ecdsa && ch->type == TG_X402_CHANNEL_VOUCHER)
      vcache_put(p, req->payment_signature, strlen(req->payment_signature), pm);
  }
  if (rc == TG_ERPC || rc == TG_ETIMEOUT) {
    refuse(p, cfg, req, 503, "invalid_batch_settlement_evm_rpc_read_failed", NULL, NULL, cb, arg);
    goto fail;
  }
  if (rc) {
    why = "invalid_batch_settlement_evm_voucher_signature";
    goto refuse402;
  }
  if (ch->type == TG_X402_CHANNEL_DEPOSIT) {
    int used = 0, status = 402;
    if ((why = deposit_check(p, ch, &id, &used, &status)) != NULL) {
      if (status != 402) {
        refuse(p, cfg, req, status, why, NULL, NULL, cb, arg);
        goto fail;
      }
      goto refuse402;
    }
    if (used) {
      /* The authorization was spent: this deposit is on-chain (a retried call). */
      rc = refresh_channel(p, ch, &id);
      if (rc && rc != TG_ECHANNEL_UNKNOWN) {
        refuse(p, cfg, req, 503, "invalid_batch_settlement_evm_channel_state_read_failed", NULL, NULL,
               cb, arg);
        goto fail;
      }
    } else if (!atomic_load(&p->exact_owner)) {
      /* The deposit is a transaction from the gateway key: only the instance holding the
       * gateway lease submits (contiguous nonces, docs/STORE.md); nothing was taken. */
      refuse(p, cfg, req, 503, "deposit_submitter_elsewhere", NULL, NULL, cb, arg);
      goto fail;
    } else {
      deposit_wait *w = calloc(1, sizeof *w);
      if (!w) abort();
      w->p = p;
      w->cfg = tg_config_ref(cfg);
      w->call = call;
      w->ch = *ch;
      w->id = id;
      w->max = *max;
      copy_cstr(w->resource_url, sizeof w->resource_url, req->resource_url);
      w->cb = cb;
      w->arg = arg;
      rc = p->exact.deposit(p->exact.ctx, base, &p->channel_contract, ch, on_deposited, w);
      if (rc) on_deposited(w, rc, NULL);
      return;
    }
  }
  admit_reserve(p, cfg, req, ch, &id, max, call, cb, arg);
  return;
refuse402:
  refuse(p, cfg, req, 402, why, max, NULL, cb, arg);
fail:
  call_abort(p, call);
}

/*
 * Several gateways on one store: the hold the ledger just took in memory is
 * taken in the store as well, under the channel's row lock, so that holds and
 * charges of every instance together stay within min(ceiling, balance) +
 * credit limit (docs/STORE.md, "Shared admission"). The voucher goes first in
 * the same submission: the store must know the ceiling the hold is checked
 * against. The submission rides the group commit with the other calls'.
 */
static void ledger_raise_charged(tg_pay *p, const tg_hash *id, const tg_u256 *charged) {
  tg_ledger_channel lc;
  if (tg_ledger_get(p->ledger, id, &lc) != 0 || tg_u256_cmp(charged, &lc.charged) <= 0) return;
  lc.charged = *charged;
  if (tg_ledger_put(p->ledger, &lc) != 0) return; /* only raises: nothing to undo */
}

static void on_reserved(void *arg, int err, const tg_store_op *ops, size_t n) {
  tg_pay_call *c = arg;
  tg_pay *p = c->pay;
  const tg_store_op_reserve *r = &ops[n - 1].u.reserve;
  if (err == 0) {
    c->shared_held = 1;
    ledger_raise_charged(p, &c->hold.channel_id, &r->out_charged);
    if (p->headroom)
      tg_headroom_observe(p->headroom, &c->hold.channel_id, &r->out_charged, &r->out_reserved,
                          &r->out_ceiling, &r->out_balance, r->out_withdraw_requested_at,
                          &c->credit_limit, 0);
    tg_pay_decision d;
    memset(&d, 0, sizeof d);
    d.admitted = 1;
    d.call = c;
    stat_add(p, &p->stats.admitted);
    c->admit_cb(c->admit_arg, &d);
    return;
  }
  tg_ledger_release(p->ledger, &c->hold);
  tg_pay_request req;
  memset(&req, 0, sizeof req);
  req.resource_url = c->resource_url;
  req.request_id = c->request_id;
  if (err == TG_ECHANNEL_SHORT) {
    ledger_raise_charged(p, &c->hold.channel_id, &r->out_charged);
    tg_ledger_channel snap;
    if (tg_ledger_get(p->ledger, &c->hold.channel_id, &snap) != 0) memset(&snap, 0, sizeof snap);
    snap.id = c->hold.channel_id;
    snap.charged = r->out_charged;
    snap.balance = r->out_balance;
    snap.total_claimed = r->out_total_claimed;
    snap.withdraw_requested_at = r->out_withdraw_requested_at;
    refuse(p, c->cfg, &req, 402, "invalid_batch_settlement_evm_cumulative_amount_mismatch", &c->max,
           &snap, c->admit_cb, c->admit_arg);
  } else if (err == TG_ECHANNEL_WITHDRAWING) {
    refuse(p, c->cfg, &req, 402, "invalid_batch_settlement_evm_channel_withdrawing", &c->max, NULL,
           c->admit_cb, c->admit_arg);
  } else if (err == TG_ENOTFOUND || err == TG_ESTORE_CHANNEL_CLOSED) {
    refuse(p, c->cfg, &req, 402, "invalid_batch_settlement_evm_channel_not_found", &c->max, NULL,
           c->admit_cb, c->admit_arg);
  } else {
    refuse(p, c->cfg, &req, 503, "invalid_batch_settlement_evm_channel_state_read_failed", NULL,
           NULL, c->admit_cb, c->admit_arg);
  }
  call_abort(p, c);
}

static void shared_reserve(tg_pay *p, const tg_pay_request *req, tg_pay_call *call,
                           const tg_x402_channel *ch, const tg_u256 *max, struct event_base *base,
                           tg_pay_admit_cb cb, void *arg) {
  call->admit_cb = cb;
  call->admit_arg = arg;
  call->max = *max;
  call->resource_url = strdup(req->resource_url ? req->resource_url : "");
  if (!call->resource_url) abort();
  tg_store_op ops[2];
  memset(ops, 0, sizeof ops);
  ops[0].kind = TG_STORE_OP_VOUCHER;
  ops[0].u.voucher.channel_id = call->hold.channel_id;
  ops[0].u.voucher.max_claimable = ch->max_claimable;
  ops[0].u.voucher.sig = TG_BYTES(ch->voucher_signature.b, ch->voucher_signature.len);
  ops[1].kind = TG_STORE_OP_RESERVE;
  ops[1].u.reserve.channel_id = call->hold.channel_id;
  ops[1].u.reserve.request_id = call->request_id;
  ops[1].u.reserve.instance = p->instance;
  ops[1].u.reserve.amount = call->hold.max_price;
  ops[1].u.reserve.credit_limit = call->credit_limit;
  ops[1].u.reserve.ttl_ms = p->reserve_ttl_ms;
  int rc = tg_store_submit_evbase(p->store, ops, 2, base, on_reserved, call);
  if (rc) {
    tg_ledger_release(p->ledger, &call->hold);
    refuse(p, call->cfg, req, 503, rc == TG_EBUSY ? "store_busy"
                                                  : "invalid_batch_settlement_evm_channel_state_read_failed",
           NULL, NULL, cb, arg);
    call_abort(p, call);
  }
}

/* Gives a call's shared hold back (its charge failed or there was none); nothing waits. */
static void on_unreserved(void *arg, int err, const tg_store_op *ops, size_t n) {
  (void)ops;
  (void)n;
  (void)err; /* a hold not given back lapses by itself (reservation ttl, or its instance's lease) */
  free(arg);
}

static void shared_unreserve(tg_pay *p, tg_pay_call *c) {
  if (!c->shared_held) return;
  c->shared_held = 0;
  if (c->unit_id[0]) { /* a unit: unused, it goes back to its pool */
    tg_headroom_put_back(p->headroom, &c->hold.channel_id, c->unit_id, &c->unit_amount);
    c->unit_id[0] = 0;
    return;
  }
  tg_store_op op;
  memset(&op, 0, sizeof op);
  op.kind = TG_STORE_OP_UNRESERVE;
  op.u.reserve.channel_id = c->hold.channel_id;
  op.u.reserve.request_id = c->request_id;
  char *rid = strdup(c->request_id);
  if (!rid) abort();
  if (tg_store_submit(p->store, &op, 1, on_unreserved, rid) != 0) free(rid);
}

/* Seconds an authorization must stay valid after admission, for its submission. */
#define EXACT_VALIDITY_MARGIN 6

/*
 * The off-chain checks of an EIP-3009 authorization against the terms (payee,
 * exact amount): value, recipient, time window (when check_time), signature.
 * Returns NULL when it passes, else the x402 reason.
 */
static const char *exact_offchain(tg_pay *p, const tg_x402_exact *a, const tg_address *pay_to,
                                  const tg_u256 *amount, int check_time) {
  if (tg_u256_cmp(&a->value, amount) != 0) return "invalid_exact_evm_payload_authorization_value_mismatch";
  if (!same_address(&a->to, pay_to)) return "invalid_exact_evm_payload_recipient_mismatch";
  uint64_t now = (uint64_t)time(NULL);
  if (check_time && a->valid_after > now) return "invalid_exact_evm_payload_authorization_valid_after";
  if (check_time && a->valid_before <= now + EXACT_VALIDITY_MARGIN)
    return "invalid_exact_evm_payload_authorization_valid_before";
  if (a->signature.len != 65)
    return "invalid_exact_evm_payload_signature"; /* contract-wallet payers: not supported */
  tg_eip3009_authorization ea;
  ea.from = a->from;
  ea.to = a->to;
  ea.value = a->value;
  tg_u256_from_u64(&ea.valid_after, a->valid_after);
  tg_u256_from_u64(&ea.valid_before, a->valid_before);
  ea.nonce = a->nonce;
  tg_sig sig;
  memcpy(sig.b, a->signature.b, 65);
  tg_address signer;
  if (tg_eip3009_transfer_recover(&signer, &p->token_domain, &ea, &sig) != 0 ||
      !same_address(&signer, &a->from))
    return "invalid_exact_evm_payload_signature";
  return NULL;
}

void tg_pay_set_exact_owner(tg_pay *p, int owner) { atomic_store(&p->exact_owner, owner ? 1 : 0); }

void tg_pay_exact_done(tg_pay *p, const tg_address *from, const tg_hash *nonce) {
  if (p) tg_pending_release(p->pending, from, nonce);
}

void tg_pay_exact_pending(tg_pay *p, const tg_address *from, tg_u256 *out) {
  tg_pending_get(p->pending, from, out);
}

/* The chain's answer for an `exact` admission: used? funded? Then admitted or refused. */
static void admit_exact_chain(tg_pay *p, tg_config *cfg, const tg_pay_request *req,
                              const tg_u256 *max, tg_pay_call *call, int rc,
                              const tg_u256 *balance, int used, tg_pay_admit_cb cb, void *arg) {
  const tg_x402_exact *a = &call->auth;
  const char *why;
  int status = 402;
  if (rc) {
    stat_add(p, &p->stats.chain_check_errors);
    tg_pending_read_end(p->pending, &call->mark);
    inflight_drop(p, &a->from, &a->nonce);
    refuse(p, cfg, req, 503, "unexpected_verify_error", NULL, NULL, cb, arg);
    call_abort(p, call);
    return;
  }
  if (used) {
    tg_pending_read_end(p->pending, &call->mark);
    inflight_drop(p, &a->from, &a->nonce);
    why = "invalid_exact_evm_nonce_already_used";
    status = 409;
    goto refuse;
  }
  /* The node's balance less this payer's transfers still in flight, checked and reserved at
   * once (other workers admit the same payer meanwhile). */
  rc = tg_pending_reserve(p->pending, &call->mark, &a->from, &a->nonce, &a->value, balance,
                          a->valid_before, (uint64_t)time(NULL));
  if (rc) {
    inflight_drop(p, &a->from, &a->nonce);
    if (rc == TG_EPAY_FUNDS) {
      why = "insufficient_funds";
    } else { /* held already: cannot happen while the in-flight key is ours */
      why = "invalid_exact_evm_nonce_already_used";
      status = 409;
    }
    goto refuse;
  }
  call->reserved = 1;
  call->payer = a->from;
  tg_pay_decision d;
  memset(&d, 0, sizeof d);
  d.admitted = 1;
  d.call = call;
  stat_add(p, &p->stats.admitted);
  cb(arg, &d);
  return;
refuse:
  refuse(p, cfg, req, status, why, status == 402 ? max : NULL, NULL, cb, arg);
  call_abort(p, call);
}

/* An `exact` admission waiting for its chain read (check_async). */
typedef struct {
  tg_pay *p;
  tg_pay_call *call;  /* holds the configuration reference and the authorization */
  tg_u256 max;
  char *resource_url; /* the request's, copied: refusals name it */
  tg_pay_admit_cb cb;
  void *arg;
} exact_wait;

static void on_exact_checked(void *arg, int err, const tg_u256 *balance, int used) {
  exact_wait *ew = arg;
  tg_pay_request req;
  memset(&req, 0, sizeof req);
  req.resource_url = ew->resource_url;
  tg_u256 zero;
  memset(&zero, 0, sizeof zero);
  admit_exact_chain(ew->p, ew->call->cfg, &req, &ew->max, ew->call, err, balance ? balance : &zero,
                    used, ew->cb, ew->arg);
  free(ew->resource_url);
  free(ew);
}

static void admit_exact(tg_pay *p, struct event_base *base, tg_config *cfg,
                        const tg_pay_request *req, const tg_x402_payment *pm, const tg_u256 *max,
                        tg_pay_call *call, tg_pay_admit_cb cb, void *arg) {
  const tg_x402_exact *a = &pm->u.exact;
  const char *why = terms_mismatch(p, &pm->accepted, max);
  int status = 402;
  if (why) goto refuse;
  if (!atomic_load(&p->exact_owner)) {
    /* Another instance holds the gateway lease and submits for the account (contiguous
     * nonces); nothing was taken, the client may retry (another instance, or later). */
    refuse(p, cfg, req, 503, "exact_submitter_elsewhere", NULL, NULL, cb, arg);
    goto fail;
  }
  if ((why = exact_offchain(p, a, &p->pay_to, max, 1))) goto refuse;
  /* Replays: the in-flight set covers calls admitted and not yet recorded, the store every
   * authorization recorded (looked up once the key is held, so that a call finishing
   * meanwhile is seen). */
  if (!inflight_take(p, &a->from, &a->nonce)) {
    why = "invalid_exact_evm_nonce_already_used";
    status = 409;
    goto refuse;
  }
  call->auth_held = 1;
  tg_store_exact prev;
  int rc = tg_store_exact_get(p->store, &p->asset, &a->from, &a->nonce, &prev);
  call->exact_prev = EXACT_NONE;
  if (rc == 0) {
    /* The store keys authorizations by (token, payer, nonce) as EIP-3009 does: the row
     * found is this payer's (the payer comparison is a second guard). */
    /* A `failed` row with a transaction is one whose call was served and charged and whose
     * transfer then reverted (the daemon's receipt writer): its charge holds the request id,
     * so it is not reopened. A `failed` row without one was never submitted. */
    if ((prev.status != TG_EXACT_FAILED && prev.status != TG_EXACT_VERIFIED) ||
        (prev.status == TG_EXACT_FAILED && prev.has_tx) || !same_address(&prev.payer, &a->from)) {
      inflight_drop(p, &a->from, &a->nonce);
      why = "invalid_exact_evm_nonce_already_used";
      status = 409;
      goto refuse;
    }
    call->exact_prev = (int)prev.status;
    copy_cstr(call->exact_rid, sizeof call->exact_rid, prev.request_id);
  } else if (rc != TG_ENOTFOUND) {
    inflight_drop(p, &a->from, &a->nonce);
    refuse(p, cfg, req, 503, "unexpected_verify_error", NULL, NULL, cb, arg);
    goto fail;
  }
  if (call->exact_prev == TG_EXACT_VERIFIED) {
    /* Served and maybe submitted by a run that crashed before recording the charge: the
     * payment is ours already (the chain may show it used); serve the call and finish it. */
    call->auth = *a;
    call->payer = a->from;
    /* Its transfer may be on its way: its value counts as pending (no balance check). */
    call->reserved = tg_pending_hold(p->pending, &a->from, &a->nonce, &a->value, a->valid_before) == 0;
    tg_pay_decision d;
    memset(&d, 0, sizeof d);
    d.admitted = 1;
    d.call = call;
    stat_add(p, &p->stats.admitted);
    cb(arg, &d);
    return;
  }
  call->auth = *a;
  tg_pending_read_begin(p->pending, &a->from, &call->mark);
  if (p->exact.check_async) {
    /* The worker's loop goes on serving other calls while the node answers. */
    exact_wait *ew = calloc(1, sizeof *ew);
    if (!ew) abort();
    ew->p = p;
    ew->call = call;
    ew->max = *max;
    ew->resource_url = strdup(req->resource_url ? req->resource_url : "");
    if (!ew->resource_url) abort();
    ew->cb = cb;
    ew->arg = arg;
    if (p->exact.check_async(p->exact.ctx, base, &p->asset, &a->from, &a->nonce,
                             on_exact_checked, ew) == 0)
      return;
    free(ew->resource_url);
    free(ew);
    admit_exact_chain(p, cfg, req, max, call, TG_EIO, NULL, 0, cb, arg);
    return;
  }
  tg_u256 balance;
  int used = 0;
  rc = p->exact.check(p->exact.ctx, &p->asset, &a->from, &a->nonce, &balance, &used);
  admit_exact_chain(p, cfg, req, max, call, rc, &balance, used, cb, arg);
  return;
refuse:
  refuse(p, cfg, req, status, why, status == 402 ? max : NULL, NULL, cb, arg);
fail:
  call_abort(p, call);
}

/* ---- access passes ------------------------------------------------------------ */

static void finish(tg_pay_call *c, int charged, int err);
static void on_release_ev(evutil_socket_t fd, short what, void *arg);

/*
 * A call by a session or a signed request: the pass layer decides (entitled
 * plan, quota, overage credit). No plan covering the route, or the quota spent
 * without overage room: the ordinary 402 with every payment option, so the
 * caller can pay per call instead. Not entitled: 403 with the reason.
 */
static void admit_pass(tg_pay *p, tg_config *cfg, const tg_pay_request *req,
                       const tg_config_price *price, const tg_u256 *max,
                       const tg_config_model_price *mp, const tg_address *who, tg_pay_admit_cb cb,
                       void *arg) {
  tg_passes_grant g;
  char why[512];
  int rc = tg_passes_admit(p->passes, cfg, req->route, req->model, who, max, &g, why, sizeof why);
  if (rc == TG_ENOTFOUND) {
    refuse(p, cfg, req, 402, "no pass plan covers this route: PAYMENT-SIGNATURE header is required",
           max, NULL, cb, arg);
    return;
  }
  if (rc) {
    refuse(p, cfg, req, rc == TG_EPASS_QUOTA ? 402 : tg_err_http_status(rc), why[0] ? why : tg_strerror(rc),
           rc == TG_EPASS_QUOTA ? max : NULL, NULL, cb, arg);
    return;
  }
  tg_pay_call *call = calloc(1, sizeof *call);
  if (!call) abort();
  call->pay = p;
  call->exact_prev = EXACT_NONE;
  call->cfg = tg_config_ref(cfg);
  call->pass = 1;
  call->grant = g;
  call->pass_max = *max;
  call->price = price;
  call->model_price = mp;
  call->payer = g.holder;
  copy_cstr(call->request_id, sizeof call->request_id, req->request_id);
  copy_cstr(call->route, sizeof call->route, req->route);
  copy_cstr(call->model, sizeof call->model, req->model);
  tg_buf_init(&call->header, TG_STORE_HEADER_MAX);
  tg_buf_init(&call->trailer, 4096);
  /* X-Tollgate-Pass: which plan admitted the call and until when (docs/PROTOCOL.md). */
  char id[TG_U256_DEC_MAX], until[32], hdr[512], ov[256];
  tg_u256_to_dec(&g.plan_id, id);
  tg_rfc3339_format(until, (int64_t)g.until * 1000);
  snprintf(hdr, sizeof hdr, "plan=%s; id=%s; holder=%s; expires=%s; %s", g.plan->name, id, g.holder_hex,
           until, g.overage ? "overage=postpaid" : "quota=included");
  tg_pay_decision d;
  memset(&d, 0, sizeof d);
  d.admitted = 1;
  d.call = call;
  d.headers[d.n_headers++] = (tg_pay_header){"X-Tollgate-Pass", hdr};
  if (g.overage) {
    char owed[TG_U256_DEC_MAX], lim[TG_U256_DEC_MAX];
    tg_u256_to_dec(&g.owed_before, owed);
    tg_u256_to_dec(&g.plan->overage, lim);
    snprintf(ov, sizeof ov, "owed=%s; limit=%s", owed, lim);
    d.headers[d.n_headers++] = (tg_pay_header){"X-Tollgate-Overage", ov};
  }
  stat_add(p, &p->stats.admitted);
  cb(arg, &d);
}

static void on_pass_commit(void *arg, int err, const tg_store_op *ops, size_t n) {
  tg_pay_call *c = arg;
  tg_pay *p = c->pay;
  if (err) {
    tg_passes_release(p->passes, &c->grant);
    stat_add(p, &p->stats.failed_commits);
    finish(c, 0, err);
    return;
  }
  uint64_t calls = 0, tokens = 0;
  for (size_t i = 0; i < n; i++)
    if (ops[i].kind == TG_STORE_OP_PASS_USE) {
      calls = ops[i].u.pass.out_calls;
      tokens = ops[i].u.pass.out_tokens;
    }
  tg_passes_done(p->passes, &c->grant, calls, tokens, c->grant.overage ? &c->plan.price : NULL);
  if (c->grant.overage) {
    tg_u256 owed;
    tg_passes_owed(p->passes, &c->grant.holder, &owed);
    char o[TG_U256_DEC_MAX], a[TG_U256_DEC_MAX];
    tg_u256_to_dec(&owed, o);
    tg_u256_to_dec(&c->plan.price, a);
    if (tg_buf_printf(&c->header, "%s; charged=%s", o, a) != 0) tg_buf_reset(&c->header);
    if (tg_buf_printf(&c->trailer, ": tollgate-owed {\"owed\":\"%s\",\"charged\":\"%s\"}\n\n", o, a) != 0)
      tg_buf_reset(&c->trailer);
    pthread_mutex_lock(&p->mu);
    p->stats.charged_calls++;
    pthread_mutex_unlock(&p->mu);
  }
  finish(c, c->grant.overage, 0);
}

/*
 * A pass call's usage (1 call, its tokens) is added to the pass's counter of
 * this period, and an overage call's price recorded as a postpaid charge, in
 * one submission, before the answer is released, as for any charge. A call
 * admitted on a quota lease was counted durably before it was admitted: it
 * writes nothing and is answered at once (its tokens go with the next lease).
 */
static void complete_pass(tg_pay *p, tg_pay_call *c, const tg_pay_outcome *o) {
  if (c->grant.leased && o->ok) {
    tg_passes_done_leased(p->passes, &c->grant, o->usage_known ? o->input_tokens + o->output_tokens : 0);
    finish(c, 0, 0);
    return;
  }
  if (!o->ok) {
    tg_passes_release(p->passes, &c->grant);
    if (event_base_once(c->base, -1, EV_TIMEOUT, on_release_ev, c, NULL) != 0) finish(c, 0, 0);
    return;
  }
  tg_u256 price = c->pass_max;
  if (c->model_price && o->usage_known &&
      token_price(&price, c->model_price, o->input_tokens, o->output_tokens) != 0)
    price = c->pass_max;
  if (c->price->kind == TG_PRICE_CALL) price = c->price->per_call;
  if (tg_u256_cmp(&price, &c->pass_max) > 0) price = c->pass_max;
  c->plan.price = price;
  tg_store_op ops[2];
  memset(ops, 0, sizeof ops);
  size_t n = 0;
  ops[n].kind = TG_STORE_OP_PASS_USE;
  ops[n].u.pass.pass_id = c->grant.plan_id;
  ops[n].u.pass.holder = c->grant.holder;
  ops[n].u.pass.period_start = c->grant.period_start;
  ops[n].u.pass.calls = 1;
  ops[n].u.pass.tokens = o->usage_known ? o->input_tokens + o->output_tokens : 0;
  if (ops[n].u.pass.tokens > ((uint64_t)1 << 40)) ops[n].u.pass.tokens = (uint64_t)1 << 40;
  n++;
  if (c->grant.overage) {
    ops[n].kind = TG_STORE_OP_CHARGE;
    ops[n].u.charge.request_id = c->request_id;
    ops[n].u.charge.payer = c->grant.holder;
    ops[n].u.charge.scheme = TG_SCHEME_PASS;
    ops[n].u.charge.route = c->route;
    ops[n].u.charge.model = c->model[0] ? c->model : NULL;
    ops[n].u.charge.input_tokens = o->usage_known ? o->input_tokens : 0;
    ops[n].u.charge.output_tokens = o->usage_known ? o->output_tokens : 0;
    ops[n].u.charge.amount = price;
    n++;
  }
  int rc = tg_store_submit_evbase(p->store, ops, n, c->base, on_pass_commit, c);
  if (rc) {
    tg_passes_release(p->passes, &c->grant);
    stat_add(p, &p->stats.failed_commits);
    finish(c, 0, rc);
  }
}

/*
 * An agent's signed request (X-Tollgate-Auth): its nonce is recorded in the store (as used)
 * before the call is admitted, so that the message is accepted once across restarts and
 * across instances sharing a store; the in-memory check in the pass layer only spares the
 * write for replays this instance saw.
 */
typedef struct {
  tg_pay *p;
  tg_config *cfg;
  const tg_config_price *price;
  const tg_config_model_price *mp;
  tg_u256 max;
  tg_address who;
  tg_pay_admit_cb cb;
  void *arg;
  char request_id[TG_STORE_REQUEST_ID_MAX + 1];
  char route[TG_STORE_ROUTE_MAX + 1];
  char model[TG_STORE_MODEL_MAX + 1];
  char *resource_url;
} agent_wait;

static void on_agent_recorded(void *arg, int err, const tg_store_op *ops, size_t n) {
  (void)ops;
  (void)n;
  agent_wait *aw = arg;
  tg_pay_request req;
  memset(&req, 0, sizeof req);
  req.request_id = aw->request_id;
  req.route = aw->route;
  req.model = aw->model[0] ? aw->model : NULL;
  req.resource_url = aw->resource_url;
  if (err == TG_EEXISTS)
    refuse(aw->p, aw->cfg, &req, tg_err_http_status(TG_ESIWE_NONCE),
           "X-Tollgate-Auth: this signed message was used already (a fresh nonce per request)",
           NULL, NULL, aw->cb, aw->arg);
  else if (err)
    refuse(aw->p, aw->cfg, &req, 503, "X-Tollgate-Auth: the nonce could not be recorded, try again",
           NULL, NULL, aw->cb, aw->arg);
  else
    admit_pass(aw->p, aw->cfg, &req, aw->price, &aw->max, aw->mp, &aw->who, aw->cb, aw->arg);
  tg_config_unref(aw->cfg);
  free(aw->resource_url);
  free(aw);
}

static void admit_agent(tg_pay *p, tg_config *cfg, struct event_base *base,
                        const tg_pay_request *req, const tg_config_price *price,
                        const tg_u256 *max, const tg_config_model_price *mp, const tg_address *who,
                        const char *key, int64_t expires, tg_pay_admit_cb cb, void *arg) {
  agent_wait *aw = calloc(1, sizeof *aw);
  if (!aw) abort();
  aw->p = p;
  aw->cfg = tg_config_ref(cfg);
  aw->price = price;
  aw->mp = mp;
  aw->max = *max;
  aw->who = *who;
  aw->cb = cb;
  aw->arg = arg;
  copy_cstr(aw->request_id, sizeof aw->request_id, req->request_id);
  copy_cstr(aw->route, sizeof aw->route, req->route);
  copy_cstr(aw->model, sizeof aw->model, req->model);
  aw->resource_url = strdup(req->resource_url ? req->resource_url : "");
  if (!aw->resource_url) abort();
  tg_store_op op;
  memset(&op, 0, sizeof op);
  op.kind = TG_STORE_OP_NONCE_PUT;
  copy_cstr(op.u.nonce.nonce, sizeof op.u.nonce.nonce, key);
  op.u.nonce.expires_at = expires;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  op.u.nonce.used_at = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
  int rc = tg_store_submit_evbase(p->store, &op, 1, base, on_agent_recorded, aw);
  if (rc) on_agent_recorded(aw, rc == TG_EEXISTS ? TG_EIO : rc, NULL, 0);
}

void tg_pay_admit(void *ctx, struct event_base *base, const tg_pay_request *req,
                  const tg_config_price *price, tg_pay_admit_cb cb, void *arg) {
  tg_pay *p = ctx;
  tg_config *cfg = config_get(p);
  tg_u256 max;
  const tg_config_model_price *mp;
  if (max_price_of(price, req->model, &max, &mp)) {
    refuse(p, cfg, req, 400, "no price for this model", NULL, NULL, cb, arg);
    tg_config_unref(cfg);
    return;
  }
  if ((req->payment_signature == NULL || req->payment_signature[0] == 0) && p->passes && cfg->n_plans) {
    tg_address who;
    char why[512], agent_key[65];
    int64_t agent_exp;
    int rc = tg_passes_identify_agent(p->passes, cfg, req->host, req->authorization,
                                      req->agent_auth, &who, why, sizeof why, agent_key, &agent_exp);
    if (rc != TG_ENOTFOUND) {
      if (rc)
        refuse(p, cfg, req, tg_err_http_status(rc), why[0] ? why : tg_strerror(rc), NULL, NULL, cb, arg);
      else if (agent_key[0])
        admit_agent(p, cfg, base, req, price, &max, mp, &who, agent_key, agent_exp, cb, arg);
      else
        admit_pass(p, cfg, req, price, &max, mp, &who, cb, arg);
      tg_config_unref(cfg);
      return;
    }
  }
  if (req->payment_signature == NULL || req->payment_signature[0] == 0) {
    refuse(p, cfg, req, 402, "PAYMENT-SIGNATURE header is required", &max, NULL, cb, arg);
    tg_config_unref(cfg);
    return;
  }
  tg_x402_payment pm_mem; /* 3.3 KiB: on the stack, not a malloc per call */
  tg_x402_payment *pm = &pm_mem;
  const char *reason = NULL;
  size_t hlen = strlen(req->payment_signature);
  int verified = cfg->scheme_channel && vcache_get(p, req->payment_signature, hlen, pm);
  int rc = verified ? 0 : tg_x402_payment_decode(pm, &reason, req->payment_signature, hlen);
  if (rc) {
    refuse(p, cfg, req, rc == TG_ETOOBIG ? 431 : 400, reason ? reason : "invalid_payload", NULL, NULL,
           cb, arg);
    goto done;
  }
  if ((pm->accepted.scheme == TG_X402_CHANNEL && !cfg->scheme_channel) ||
      (pm->accepted.scheme == TG_X402_EXACT && !cfg->scheme_exact)) {
    refuse(p, cfg, req, 402, "invalid_scheme", &max, NULL, cb, arg);
    goto done;
  }
  tg_pay_call *call = calloc(1, sizeof *call);
  if (!call) abort();
  call->pay = p;
  call->exact_prev = EXACT_NONE;
  call->cfg = tg_config_ref(cfg);
  call->scheme = pm->accepted.scheme;
  call->price = price;
  call->model_price = mp;
  copy_cstr(call->request_id, sizeof call->request_id, req->request_id);
  copy_cstr(call->route, sizeof call->route, req->route);
  copy_cstr(call->model, sizeof call->model, req->model);
  copy_cstr(call->payment_id, sizeof call->payment_id, pm->payment_id);
  if (call->payment_id[0]) /* compared and recorded only with a payment-identifier */
    tg_keccak256(&call->request_hash, req->payment_signature, hlen);
  tg_buf_init(&call->header, TG_STORE_HEADER_MAX);
  tg_buf_init(&call->trailer, 4096);
  if (call->payment_id[0] && check_payid(p, cfg, req, call, cb, arg)) {
    call_abort(p, call);
    goto done;
  }
  if (pm->accepted.scheme == TG_X402_CHANNEL) {
    admit_channel(p, cfg, base, req, pm, &max, verified, call, cb, arg);
  } else {
    admit_exact(p, base, cfg, req, pm, &max, call, cb, arg);
  }
done:
  sodium_memzero(pm, sizeof *pm);
  tg_config_unref(cfg);
}

/* ---- completion ----------------------------------------------------------- */

static void call_free(tg_pay_call *c) {
  free(c->resource_url);
  /* the pending value before the key: a retry of the same authorization reserves afresh */
  if (c->reserved) tg_pending_release(c->pay->pending, &c->auth.from, &c->auth.nonce);
  tg_pending_read_end(c->pay->pending, &c->mark);
  if (c->auth_held) inflight_drop(c->pay, &c->auth.from, &c->auth.nonce);
  if (c->payid_held) inflight_drop(c->pay, &zero_address, &c->payid_key);
  tg_buf_cleanup(&c->header);
  tg_buf_cleanup(&c->trailer);
  tg_config_unref(c->cfg);
  free(c);
}

static void finish(tg_pay_call *c, int charged, int err) {
  tg_pay_receipt r;
  memset(&r, 0, sizeof r);
  r.charged = charged;
  r.err = err;
  r.scheme = c->scheme == TG_X402_EXACT ? TG_SCHEME_EXACT : TG_SCHEME_CHANNEL;
  r.scheme_name = c->scheme == TG_X402_EXACT ? "exact" : "channel";
  r.has_payer = 1;
  r.payer = c->scheme == TG_X402_EXACT ? c->auth.from : c->payer;
  if (c->pass) {
    r.scheme = TG_SCHEME_PASS;
    r.scheme_name = "pass";
    r.payer = c->grant.holder;
    if (charged) r.amount = c->plan.price;
    if (!err && c->header.len) /* X-Tollgate-Owed (overage) */
      r.headers[r.n_headers++] = (tg_pay_header){"X-Tollgate-Owed", (const char *)c->header.data};
    if (!err && c->streamed && c->trailer.len) r.stream_trailer = (const char *)c->trailer.data;
    c->cb(c->arg, &r);
    call_free(c);
    return;
  }
  if (charged) {
    r.amount = c->plan.price;
    if (c->header.len)
      r.headers[r.n_headers++] = (tg_pay_header){"PAYMENT-RESPONSE", (const char *)c->header.data};
    if (c->streamed && c->trailer.len) r.stream_trailer = (const char *)c->trailer.data;
  }
  c->cb(c->arg, &r);
  call_free(c);
}

static int build_response(tg_pay_call *c);

static void on_commit(void *arg, int err, const tg_store_op *ops, size_t n) {
  tg_pay_call *c = arg;
  tg_pay *p = c->pay;
  if (err) {
    tg_ledger_uncharge(p->ledger, &c->plan);
    /* A failed charge on a unit (a closed channel, a refusal): no more units for it. */
    if (c->unit_id[0]) tg_headroom_drop(p->headroom, &c->plan.channel_id);
    shared_unreserve(p, c); /* nothing of the submission was written: the hold is still there */
    stat_add(p, &p->stats.failed_commits);
    finish(c, 0, err);
    return;
  }
  if (c->shared_held) {
    /* Other instances charge the channel too: the answer carries the store's total. */
    for (size_t i = 0; i < n; i++)
      if (ops[i].kind == TG_STORE_OP_CHARGE) {
        const tg_store_op_charge *oc = &ops[i].u.charge;
        if (p->headroom)
          tg_headroom_observe(p->headroom, &c->plan.channel_id, &oc->out_charged,
                              &oc->out_reserved, &oc->out_ceiling, &oc->out_balance,
                              oc->out_withdraw_requested_at, &c->credit_limit,
                              c->unit_id[0] && !oc->out_hold_found);
        c->plan.charged = ops[i].u.charge.out_charged;
        ledger_raise_charged(p, &c->plan.channel_id, &c->plan.charged);
        tg_buf_reset(&c->header);
        tg_buf_reset(&c->trailer);
        if (build_response(c) != 0) tg_buf_reset(&c->header);
      }
    c->shared_held = 0;
  }
  pthread_mutex_lock(&p->mu);
  p->stats.charged_calls++;
  if (tg_u256_add(&p->stats.charged_channel, &p->stats.charged_channel, &c->plan.price))
    tg_u256_zero(&p->stats.charged_channel); /* a counter past 2^256: start again */
  pthread_mutex_unlock(&p->mu);
  if (p->on_charged)
    p->on_charged(p->on_charged_arg, &c->plan.channel_id, &c->plan.charged, &c->plan.total_claimed,
                  &c->plan.balance);
  finish(c, 1, 0);
}

/* A release (nothing charged) still answers asynchronously, as the hook contract says. */
static void on_release_ev(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  finish(arg, 0, 0);
}

static int build_response(tg_pay_call *c) {
  tg_x402_settle_response r;
  memset(&r, 0, sizeof r);
  r.success = 1;
  r.chain_id = c->pay->chain_id;
  r.has_payer = 1;
  r.payer = c->payer;
  r.has_charged = 1;
  r.charged = c->plan.price;
  r.has_channel = 1;
  r.channel_id = c->plan.channel_id;
  if (c->deposit_tx) { /* the gasless deposit this call carried */
    r.has_transaction = 1;
    r.transaction = c->tx_hash;
  }
  r.channel_balance = c->plan.balance;
  r.channel_total_claimed = c->plan.total_claimed;
  r.channel_charged_cumulative = c->plan.charged;
  r.withdraw_requested_at = c->plan.withdraw_requested_at;
  int rc = tg_x402_settle_response_encode(&c->header, &r);
  if (rc || !c->streamed) return rc;
  /* Streams: the final charge as an SSE comment, which SSE clients ignore. */
  char amt[TG_U256_DEC_MAX], cum[TG_U256_DEC_MAX];
  tg_u256_to_dec(&c->plan.price, amt);
  tg_u256_to_dec(&c->plan.charged, cum);
  return tg_buf_printf(&c->trailer, ": x402-charge {\"chargedAmount\":\"%s\",\"chargedCumulativeAmount\":\"%s\"}\n\n",
                       amt, cum);
}

/* ---- exact completion: submit, then record, then answer ------------------------ */

static void on_exact_commit(void *arg, int err, const tg_store_op *ops, size_t n) {
  (void)ops;
  (void)n;
  tg_pay_call *c = arg;
  tg_pay *p = c->pay;
  if (err) {
    /* The transfer is on its way but its record failed: answer with an error so the payer
     * knows; reconciliation finds the transaction by its hash. */
    stat_add(p, &p->stats.failed_commits);
    finish(c, 0, err);
    return;
  }
  pthread_mutex_lock(&p->mu);
  p->stats.charged_calls++;
  if (tg_u256_add(&p->stats.charged_exact, &p->stats.charged_exact, &c->plan.price))
    tg_u256_zero(&p->stats.charged_exact);
  pthread_mutex_unlock(&p->mu);
  finish(c, 1, 0);
}

/* A submission that failed: the record says so (a retry may use the authorization again). */
static void on_exact_failed_commit(void *arg, int err, const tg_store_op *ops, size_t n) {
  (void)ops;
  (void)n;
  tg_pay_call *c = arg;
  if (err) stat_add(c->pay, &c->pay->stats.failed_commits);
  finish(c, 0, c->exact_err);
}

static void exact_record_failed(tg_pay_call *c, int why) {
  tg_pay *p = c->pay;
  c->exact_err = why;
  tg_store_op op;
  memset(&op, 0, sizeof op);
  op.kind = TG_STORE_OP_EXACT_UPDATE;
  op.u.exact.token = p->asset;
  op.u.exact.nonce = c->auth.nonce;
  op.u.exact.payer = c->auth.from;
  op.u.exact.status = TG_EXACT_FAILED;
  if (tg_store_submit_evbase(p->store, &op, 1, c->base, on_exact_failed_commit, c) != 0)
    finish(c, 0, why);
}

static void on_exact_submitted(void *arg, int err, const tg_hash *tx) {
  tg_pay_call *c = arg;
  tg_pay *p = c->pay;
  if (err) {
    stat_add(p, &p->stats.chain_submit_errors);
    /* nothing moved (refused, dropped or reverted): the value is no longer pending */
    tg_pending_release(p->pending, &c->auth.from, &c->auth.nonce);
    c->reserved = 0;
    exact_record_failed(c, err); /* the payer keeps the authorization */
    return;
  }
  c->tx_hash = *tx;
  c->plan.price = c->auth.value;
  tg_x402_settle_response r;
  memset(&r, 0, sizeof r);
  r.success = 1;
  r.chain_id = p->chain_id;
  r.has_payer = 1;
  r.payer = c->auth.from;
  r.has_transaction = 1;
  r.transaction = *tx;
  r.has_charged = 1;
  r.charged = c->auth.value;
  int hrc = tg_x402_settle_response_encode(&c->header, &r);
  tg_store_op ops[3];
  memset(ops, 0, sizeof ops);
  size_t n = 0;
  ops[n].kind = TG_STORE_OP_EXACT_UPDATE;
  ops[n].u.exact.token = p->asset;
  ops[n].u.exact.nonce = c->auth.nonce;
  ops[n].u.exact.payer = c->auth.from;
  ops[n].u.exact.status = TG_EXACT_SUBMITTED;
  ops[n].u.exact.has_tx = 1;
  ops[n].u.exact.tx_hash = *tx;
  n++;
  /* The charge carries the record's request id: settlement finds it through the record. */
  ops[n].kind = TG_STORE_OP_CHARGE;
  ops[n].u.charge.request_id = c->exact_rid;
  ops[n].u.charge.payer = c->auth.from;
  ops[n].u.charge.scheme = TG_SCHEME_EXACT;
  ops[n].u.charge.route = c->route;
  ops[n].u.charge.model = c->model[0] ? c->model : NULL;
  ops[n].u.charge.input_tokens = c->input_tokens;
  ops[n].u.charge.output_tokens = c->output_tokens;
  ops[n].u.charge.amount = c->auth.value;
  n++;
  if (c->payment_id[0]) {
    ops[n].kind = TG_STORE_OP_PAYID_PUT;
    ops[n].u.payid.id = c->payment_id;
    ops[n].u.payid.payer = c->auth.from;
    ops[n].u.payid.request_hash = c->request_hash;
    ops[n].u.payid.status = 200;
    ops[n].u.payid.response_header = hrc == 0 ? (const char *)c->header.data : NULL;
    ops[n].u.payid.request_id = c->exact_rid;
    n++;
  }
  int rc = tg_store_submit_evbase(p->store, ops, n, c->base, on_exact_commit, c);
  if (rc) {
    stat_add(p, &p->stats.failed_commits);
    finish(c, 0, rc);
  }
}

static void exact_submit(tg_pay_call *c) {
  tg_pay *p = c->pay;
  int rc = p->exact.submit(p->exact.ctx, c->base, &p->asset, &c->auth, on_exact_submitted, c);
  if (rc) {
    stat_add(p, &p->stats.chain_submit_errors);
    exact_record_failed(c, rc); /* call_free ends the pending value */
    return;
  }
  /* On its way: the pending value now ends with the transfer's outcome (tg_pay_exact_done,
   * from the transaction manager) or with a failed submission (on_exact_submitted). */
  c->reserved = 0;
}

static void on_exact_intent(void *arg, int err, const tg_store_op *ops, size_t n) {
  (void)ops;
  (void)n;
  tg_pay_call *c = arg;
  if (err) { /* nothing submitted, nothing charged */
    stat_add(c->pay, &c->pay->stats.failed_commits);
    finish(c, 0, err);
    return;
  }
  exact_submit(c);
}

/*
 * After a successful answer: the intent (status VERIFIED, with the request id
 * the charge will carry) is durable before the transaction exists, then the
 * transaction is submitted (the transaction manager journals it under the
 * authorization's key), then the charge is recorded. A crash after the
 * submission leaves the record VERIFIED; a retry with the same authorization
 * then resumes it (the manager answers with the transaction it already has)
 * instead of being refused as a replay, so the payment is recorded exactly once.
 */
static void complete_exact(tg_pay *p, tg_pay_call *c, const tg_pay_outcome *o) {
  if (!o->ok) {
    /* Charge after success: the authorization is never submitted and stays the payer's. */
    if (event_base_once(c->base, -1, EV_TIMEOUT, on_release_ev, c, NULL) != 0) finish(c, 0, 0);
    return;
  }
  if (c->exact_prev == TG_EXACT_VERIFIED) {
    exact_submit(c);
    return;
  }
  tg_store_op op;
  memset(&op, 0, sizeof op);
  op.u.exact.token = p->asset;
  op.u.exact.nonce = c->auth.nonce;
  op.u.exact.payer = c->auth.from;
  op.u.exact.status = TG_EXACT_VERIFIED;
  if (c->exact_prev == TG_EXACT_FAILED) {
    op.kind = TG_STORE_OP_EXACT_UPDATE; /* a failed earlier attempt: its row and request id stay */
  } else {
    copy_cstr(c->exact_rid, sizeof c->exact_rid, c->request_id);
    op.kind = TG_STORE_OP_EXACT_PUT;
    op.u.exact.to = c->auth.to;
    op.u.exact.amount = c->auth.value;
    op.u.exact.valid_after = c->auth.valid_after;
    op.u.exact.valid_before = c->auth.valid_before;
    op.u.exact.request_id = c->exact_rid;
  }
  int rc = tg_store_submit_evbase(p->store, &op, 1, c->base, on_exact_intent, c);
  if (rc) {
    stat_add(p, &p->stats.failed_commits);
    finish(c, 0, rc);
  }
}

void tg_pay_complete(void *ctx, struct event_base *base, tg_pay_call *c,
                     const tg_pay_outcome *o, tg_pay_complete_cb cb, void *arg) {
  tg_pay *p = ctx;
  c->base = base;
  c->cb = cb;
  c->arg = arg;
  c->streamed = o->streamed;
  c->input_tokens = o->input_tokens;
  c->output_tokens = o->output_tokens;
  if (c->pass) {
    complete_pass(p, c, o);
    return;
  }
  if (c->scheme == TG_X402_EXACT) {
    complete_exact(p, c, o);
    return;
  }
  if (!o->ok) {
    tg_ledger_release(p->ledger, &c->hold);
    shared_unreserve(p, c);
    if (event_base_once(base, -1, EV_TIMEOUT, on_release_ev, c, NULL) != 0) finish(c, 0, 0);
    return;
  }
  /* Price the usage; a token-priced answer without usage is charged its reservation. */
  tg_u256 price = c->hold.max_price;
  if (c->model_price && o->usage_known &&
      token_price(&price, c->model_price, o->input_tokens, o->output_tokens) != 0)
    price = c->hold.max_price;
  if (c->price->kind == TG_PRICE_CALL) price = c->price->per_call;
  int rc = tg_ledger_charge(p->ledger, &c->plan, &c->hold, &price);
  if (rc) {
    shared_unreserve(p, c);
    finish(c, 0, rc);
    return;
  }
  rc = build_response(c);
  tg_store_op ops[3];
  memset(ops, 0, sizeof ops);
  size_t n = 0;
  ops[n].kind = TG_STORE_OP_VOUCHER;
  ops[n].u.voucher.channel_id = c->plan.channel_id;
  ops[n].u.voucher.max_claimable = c->plan.ceiling;
  ops[n].u.voucher.sig = TG_BYTES(c->plan.ceiling_sig.b, c->plan.ceiling_sig.len);
  n++;
  ops[n].kind = TG_STORE_OP_CHARGE;
  ops[n].u.charge.request_id = c->request_id;
  ops[n].u.charge.payer = c->payer;
  ops[n].u.charge.scheme = TG_SCHEME_CHANNEL;
  ops[n].u.charge.route = c->route;
  ops[n].u.charge.model = c->model[0] ? c->model : NULL;
  ops[n].u.charge.input_tokens = o->usage_known ? o->input_tokens : 0;
  ops[n].u.charge.output_tokens = o->usage_known ? o->output_tokens : 0;
  ops[n].u.charge.amount = c->plan.price;
  ops[n].u.charge.has_channel = 1;
  ops[n].u.charge.channel_id = c->plan.channel_id;
  ops[n].u.charge.credit_limit = c->credit_limit;
  ops[n].u.charge.release_reservation = c->shared_held;
  if (c->shared_held && c->unit_id[0]) ops[n].u.charge.hold_id = c->unit_id;
  n++;
  if (c->payment_id[0]) {
    ops[n].kind = TG_STORE_OP_PAYID_PUT;
    ops[n].u.payid.id = c->payment_id;
    ops[n].u.payid.payer = c->payer;
    ops[n].u.payid.request_hash = c->request_hash;
    ops[n].u.payid.status = 200;
    ops[n].u.payid.response_header = rc == 0 ? (const char *)c->header.data : NULL;
    ops[n].u.payid.request_id = c->request_id;
    n++;
  }
  /* The channel's next headroom slice, when due, rides the same batch (same round trip). */
  void *ticket = NULL;
  size_t k = 0;
  tg_store_op *slice = NULL;
  if (p->headroom && c->shared_held) {
    slice = calloc(TG_HEADROOM_SLICE_MAX, sizeof *slice);
    if (!slice) abort();
    k = tg_headroom_slice_ops(p->headroom, &c->plan.channel_id, &c->hold.max_price,
                              &c->credit_limit, slice, &ticket);
  }
  if (k)
    rc = tg_store_submit_pair(p->store, ops, n, base, on_commit, c, slice, k,
                              tg_headroom_slice_done, ticket);
  else
    rc = tg_store_submit_evbase(p->store, ops, n, base, on_commit, c);
  if (rc && k) tg_headroom_slice_done(ticket, rc, NULL, 0);
  free(slice);
  if (rc) {
    tg_ledger_uncharge(p->ledger, &c->plan);
    shared_unreserve(p, c);
    stat_add(p, &p->stats.failed_commits);
    finish(c, 0, rc);
  }
}

/* ---- lifecycle -------------------------------------------------------------- */

static int load_one(void *arg, const tg_store_channel *sc) {
  tg_pay *p = arg;
  tg_ledger_channel lc;
  memset(&lc, 0, sizeof lc);
  lc.id = sc->id;
  lc.config.payer = sc->cfg.payer;
  lc.config.payer_authorizer = sc->cfg.payer_authorizer;
  lc.config.receiver = sc->cfg.receiver;
  lc.config.receiver_authorizer = sc->cfg.receiver_authorizer;
  lc.config.token = sc->cfg.token;
  lc.config.withdraw_delay = sc->cfg.withdraw_delay;
  lc.config.salt = sc->cfg.salt;
  lc.balance = sc->chain.balance;
  lc.total_claimed = sc->chain.total_claimed;
  lc.withdraw_requested_at = sc->chain.withdraw_requested_at;
  lc.charged = sc->charged;
  lc.ceiling = sc->ceiling;
  lc.ceiling_sig.len = sc->ceiling_sig_len;
  memcpy(lc.ceiling_sig.b, sc->ceiling_sig, sc->ceiling_sig_len);
  lc.status = sc->chain.status == TG_CHANNEL_CLOSED ? TG_LEDGER_CLOSED : TG_LEDGER_OPEN;
  return tg_ledger_put(p->ledger, &lc);
}

int tg_pay_new(tg_pay **out, char *err, const tg_pay_opts *o) {
  *out = NULL;
  if (!o->cfg || !o->store || !o->ledger) {
    snprintf(err, TG_CONFIG_ERR_MAX, "payments need a configuration, a store and a ledger");
    return TG_EINVAL;
  }
  if (o->cfg->scheme_channel &&
      (o->withdraw_delay < TG_CHANNEL_MIN_WITHDRAW_DELAY || o->withdraw_delay > TG_CHANNEL_MAX_WITHDRAW_DELAY)) {
    snprintf(err, TG_CONFIG_ERR_MAX, "channel withdraw delay %llu s is outside 900..2592000",
             (unsigned long long)o->withdraw_delay);
    return TG_ERANGE;
  }
  tg_pay *p = calloc(1, sizeof *p);
  if (!p) abort();
  pthread_mutex_init(&p->mu, NULL);
  p->cfg = tg_config_ref(o->cfg);
  p->store = o->store;
  p->ledger = o->ledger;
  p->chain = o->chain;
  p->chain_id = o->chain_id;
  p->asset = o->asset;
  p->pay_to = o->pay_to;
  p->receiver_authorizer = o->receiver_authorizer;
  p->channel_contract = o->channel_contract;
  p->withdraw_delay = o->withdraw_delay;
  p->min_deposit = o->min_deposit;
  p->exact = o->exact;
  p->passes = o->passes;
  atomic_init(&p->exact_owner, 1);
  if (o->instance) {
    p->instance = strdup(o->instance);
    if (!p->instance) abort();
  }
  p->reserve_ttl_ms = o->reserve_ttl_ms > 0 ? o->reserve_ttl_ms : 15 * 60 * 1000;
  if (p->instance && o->headroom_ttl_ms >= 0 &&
      tg_headroom_new(&p->headroom, p->store, p->instance,
                      o->headroom_ttl_ms > 0 ? o->headroom_ttl_ms : 60 * 1000) != 0) {
    snprintf(err, TG_CONFIG_ERR_MAX, "headroom leases: a ttl of at least 2000 ms");
    tg_pay_free(p);
    return TG_EINVAL;
  }
  p->on_charged = o->on_charged;
  p->on_charged_arg = o->on_charged_arg;
  pthread_mutex_init(&p->inflight_mu, NULL);
  pthread_mutex_init(&p->vcache_mu, NULL);
  crypto_shorthash_keygen(p->vcache_key);
  if (tg_pending_new(&p->pending, 0) != 0) abort();
  if (o->cfg->scheme_exact && (!o->exact.check || !o->exact.submit)) {
    snprintf(err, TG_CONFIG_ERR_MAX, "the `exact` scheme needs the transaction manager");
    tg_pay_free(p);
    return TG_EINVAL;
  }
  tg_eip712_domain td;
  memset(&td, 0, sizeof td);
  td.fields = TG_EIP712_DOMAIN_STANDARD;
  td.name = (tg_str){o->cfg->asset_name ? o->cfg->asset_name : "", o->cfg->asset_name ? strlen(o->cfg->asset_name) : 0};
  td.version = (tg_str){o->cfg->asset_version ? o->cfg->asset_version : "",
                        o->cfg->asset_version ? strlen(o->cfg->asset_version) : 0};
  tg_u256_from_u64(&td.chain_id, o->chain_id);
  td.verifying_contract = o->asset;
  int rc = tg_eip712_domain_separator(&p->token_domain, &td);
  if (!rc) rc = tg_channel_domain(&p->channel_domain, p->chain_id, &p->channel_contract);
  if (!rc) rc = tg_store_channels_list(p->store, NULL, load_one, p);
  if (rc) {
    snprintf(err, TG_CONFIG_ERR_MAX, "loading channels from the store: %s", tg_strerror(rc));
    tg_pay_free(p);
    return rc;
  }
  *out = p;
  return TG_OK;
}

void tg_pay_free(tg_pay *p) {
  if (!p) return;
  tg_headroom_free(p->headroom); /* unused units back to their channels; the store is open */
  tg_config_unref(p->cfg);
  for (int i = 0; i < 256; i++) {
    while (p->inflight[i]) {
      struct inflight *e = p->inflight[i];
      p->inflight[i] = e->next;
      free(e);
    }
  }
  for (int i = 0; i < VCACHE_SLOTS; i++) free(p->vcache[i]);
  tg_pending_free(p->pending);
  pthread_mutex_destroy(&p->vcache_mu);
  pthread_mutex_destroy(&p->inflight_mu);
  pthread_mutex_destroy(&p->mu);
  free(p->instance);
  free(p);
}

void tg_pay_set_config(tg_pay *p, tg_config *cfg) {
  tg_config *old;
  pthread_mutex_lock(&p->mu);
  old = p->cfg;
  p->cfg = tg_config_ref(cfg);
  pthread_mutex_unlock(&p->mu);
  tg_config_unref(old);
}

void tg_pay_stats_get(tg_pay *p, tg_pay_stats *out) {
  pthread_mutex_lock(&p->mu);
  *out = p->stats;
  pthread_mutex_unlock(&p->mu);
  pthread_mutex_lock(&p->vcache_mu);
  out->voucher_cache_hits = p->vcache_hits;
  pthread_mutex_unlock(&p->vcache_mu);
  if (p->headroom) {
    tg_headroom_stats h;
    tg_headroom_stats_get(p->headroom, &h);
    out->headroom_admitted = h.units_taken;
    out->headroom_slices = h.slices;
    out->headroom_slices_refused = h.slices_refused;
    out->headroom_dropped = h.pools_dropped;
    out->headroom_units_free = h.units_free;
  }
  tg_pending_stats ps;
  tg_pending_stats_get(p->pending, &ps);
  out->exact_pending_transfers = ps.reservations;
  out->exact_pending_payers = ps.payers;
  out->exact_funds_refused = ps.refused;
  out->exact_pending_lapsed = ps.lapsed;
}

/* ---- the x402 facilitator: `exact` for other servers ---------------------------- */

/*
 * Other x402 servers hand the gateway an authorization that pays *them*
 * (pay_to, amount from their paymentRequirements). The checks are admission's
 * (exact_offchain, the store's record, authorizationState and balance); the
 * submission is the same transaction manager path. Settlements are recorded
 * as exact_payments rows (no charge: the money is not the gateway's), which
 * makes /settle idempotent: a recorded transaction is answered again and
 * never sent twice.
 */

void tg_pay_fac_terms(tg_pay *p, uint64_t *chain_id, tg_address *asset) {
  *chain_id = p->chain_id;
  *asset = p->asset;
}

/* The chain's view: 0 with why NULL when unused and funded. */
static const char *fac_chain_check(tg_pay *p, const tg_x402_exact *a, int *rc) {
  tg_u256 balance;
  int used = 0;
  tg_pending_mark m;
  tg_pending_read_begin(p->pending, &a->from, &m);
  *rc = p->exact.check ? p->exact.check(p->exact.ctx, &p->asset, &a->from, &a->nonce, &balance, &used)
                       : TG_EUNSUPPORTED;
  if (*rc || used) tg_pending_read_end(p->pending, &m);
  if (*rc) {
    stat_add(p, &p->stats.chain_check_errors);
    return NULL;
  }
  if (used) return "invalid_exact_evm_nonce_already_used";
  /* the balance less the payer's transfers in flight, as admission counts it */
  if (tg_pending_check(p->pending, &m, &a->from, &a->value, &balance, (uint64_t)time(NULL)))
    return "insufficient_funds";
  return NULL;
}

int tg_pay_fac_verify(tg_pay *p, const tg_x402_exact *a, const tg_address *pay_to,
                      const tg_u256 *amount, tg_pay_fac_result *out) {
  memset(out, 0, sizeof *out);
  out->payer = a->from;
  const char *why = exact_offchain(p, a, pay_to, amount, 1);
  if (why) {
    out->reason = why;
    return 0;
  }
  tg_store_exact prev;
  int rc = tg_store_exact_get(p->store, &p->asset, &a->from, &a->nonce, &prev);
  if (rc == 0 && prev.status != TG_EXACT_FAILED) {
    out->reason = "invalid_exact_evm_nonce_already_used";
    return 0;
  }
  if (rc && rc != TG_ENOTFOUND) return rc;
  why = fac_chain_check(p, a, &rc);
  if (rc) return rc;
  if (why) {
    out->reason = why;
    return 0;
  }
  out->valid = 1;
  return 0;
}

/* A /verify waiting for its chain read. */
typedef struct {
  tg_pay *p;
  tg_u256 value;
  tg_address from;
  tg_pending_mark mark;
  tg_pay_fac_result res;
  tg_pay_fac_verify_cb cb;
  void *arg;
} fac_verify;

static void fac_on_verify_checked(void *arg, int err, const tg_u256 *balance, int used) {
  fac_verify *v = arg;
  tg_pending *pt = v->p->pending;
  if (err) {
    stat_add(v->p, &v->p->stats.chain_check_errors);
    tg_pending_read_end(pt, &v->mark);
  } else if (used) {
    tg_pending_read_end(pt, &v->mark);
    v->res.reason = "invalid_exact_evm_nonce_already_used";
  } else if (tg_pending_check(pt, &v->mark, &v->from, &v->value, balance, (uint64_t)time(NULL))) {
    v->res.reason = "insufficient_funds"; /* the balance less the payer's transfers in flight */
  } else {
    v->res.valid = 1;
  }
  v->cb(v->arg, err, &v->res);
  free(v);
}

void tg_pay_fac_verify_async(tg_pay *p, struct event_base *base, const tg_x402_exact *a,
                             const tg_address *pay_to, const tg_u256 *amount,
                             tg_pay_fac_verify_cb cb, void *arg) {
  tg_pay_fac_result r;
  if (!p->exact.check_async) { /* no chain thread: the blocking read */
    int rc = tg_pay_fac_verify(p, a, pay_to, amount, &r);
    cb(arg, rc, &r);
    return;
  }
  memset(&r, 0, sizeof r);
  r.payer = a->from;
  const char *why = exact_offchain(p, a, pay_to, amount, 1);
  tg_store_exact prev;
  int rc = why ? 0 : tg_store_exact_get(p->store, &p->asset, &a->from, &a->nonce, &prev);
  if (!why && rc == 0 && prev.status != TG_EXACT_FAILED) why = "invalid_exact_evm_nonce_already_used";
  if (why || (rc && rc != TG_ENOTFOUND)) {
    r.reason = why;
    cb(arg, why ? 0 : rc, &r);
    return;
  }
  fac_verify *v = calloc(1, sizeof *v);
  if (!v) abort();
  v->p = p;
  v->value = a->value;
  v->from = a->from;
  v->res = r;
  v->cb = cb;
  v->arg = arg;
  tg_pending_read_begin(p->pending, &a->from, &v->mark);
  if (p->exact.check_async(p->exact.ctx, base, &p->asset, &a->from, &a->nonce, fac_on_verify_checked, v) != 0)
    fac_on_verify_checked(v, TG_EIO, NULL, 0);
}

typedef struct {
  tg_pay *p;
  struct event_base *base;
  tg_x402_exact auth;
  char rid[TG_STORE_REQUEST_ID_MAX + 1];
  tg_pay_fac_cb cb;
  void *arg;
  tg_pay_fac_result res;
  int found;          /* the store had a `failed` record of this authorization */
  int reserved;       /* its value is pending on this settlement's account (not submitted) */
  tg_pending_mark mark;
} fac_op;

static void fac_done(fac_op *f, const char *reason) {
  if (reason) {
    f->res.valid = 0;
    f->res.reason = reason;
  } else {
    f->res.valid = 1;
  }
  /* the pending value before the in-flight key (see call_free) */
  if (f->reserved) tg_pending_release(f->p->pending, &f->auth.from, &f->auth.nonce);
  tg_pending_read_end(f->p->pending, &f->mark);
  inflight_drop(f->p, &f->auth.from, &f->auth.nonce);
  f->cb(f->arg, &f->res);
  sodium_memzero(f, sizeof *f);
  free(f);
}

static void fac_on_recorded(void *arg, int err, const tg_store_op *ops, size_t n) {
  (void)ops;
  (void)n;
  fac_op *f = arg;
  /* The transfer is on its way even when its record failed: report it with its hash. */
  if (err) stat_add(f->p, &f->p->stats.failed_commits);
  fac_done(f, NULL);
}

static void fac_on_failed_recorded(void *arg, int err, const tg_store_op *ops, size_t n) {
  (void)ops;
  (void)n;
  fac_op *f = arg;
  if (err) stat_add(f->p, &f->p->stats.failed_commits);
  fac_done(f, "unexpected_settle_error");
}

static void fac_on_submitted(void *arg, int err, const tg_hash *tx) {
  fac_op *f = arg;
  tg_pay *p = f->p;
  tg_store_op op;
  memset(&op, 0, sizeof op);
  op.kind = TG_STORE_OP_EXACT_UPDATE;
  op.u.exact.token = p->asset;
  op.u.exact.nonce = f->auth.nonce;
  op.u.exact.payer = f->auth.from;
  if (err) {
    stat_add(p, &p->stats.chain_submit_errors);
    tg_pending_release(p->pending, &f->auth.from, &f->auth.nonce); /* nothing moved */
    f->reserved = 0;
    op.u.exact.status = TG_EXACT_FAILED; /* nothing moved: the authorization stays usable */
    if (tg_store_submit_evbase(p->store, &op, 1, f->base, fac_on_failed_recorded, f) != 0)
      fac_done(f, "unexpected_settle_error");
    return;
  }
  f->res.has_tx = 1;
  f->res.tx = *tx;
  op.u.exact.status = TG_EXACT_SUBMITTED;
  op.u.exact.has_tx = 1;
  op.u.exact.tx_hash = *tx;
  if (tg_store_submit_evbase(p->store, &op, 1, f->base, fac_on_recorded, f) != 0) {
    stat_add(p, &p->stats.failed_commits);
    fac_done(f, NULL);
  }
}

static void fac_submit(fac_op *f) {
  tg_pay *p = f->p;
  int rc = p->exact.submit ? p->exact.submit(p->exact.ctx, f->base, &p->asset, &f->auth,
                                             fac_on_submitted, f)
                           : TG_EUNSUPPORTED;
  if (rc) {
    fac_on_submitted(f, rc, NULL);
    return;
  }
  f->reserved = 0; /* on its way: the transfer's outcome ends the pending value */
}

static void fac_on_intent(void *arg, int err, const tg_store_op *ops, size_t n) {
  (void)ops;
  (void)n;
  fac_op *f = arg;
  if (err) {
    fac_done(f, "unexpected_settle_error"); /* nothing submitted */
    return;
  }
  fac_submit(f);
}

/* The chain's answer for a settlement: refused, or the intent recorded and the transfer submitted. */
static void fac_on_checked(void *arg, int err, const tg_u256 *balance, int used) {
  fac_op *f = arg;
  tg_pay *p = f->p;
  if (err) {
    stat_add(p, &p->stats.chain_check_errors);
    fac_done(f, "unexpected_settle_error");
    return;
  }
  if (used) {
    fac_done(f, "invalid_exact_evm_nonce_already_used");
    return;
  }
  /* The balance less the payer's transfers in flight (the gateway's calls and other
   * settlements), checked and reserved at once. */
  int rc = tg_pending_reserve(p->pending, &f->mark, &f->auth.from, &f->auth.nonce, &f->auth.value,
                              balance, f->auth.valid_before, (uint64_t)time(NULL));
  if (rc) {
    fac_done(f, rc == TG_EPAY_FUNDS ? "insufficient_funds" : "invalid_exact_evm_nonce_already_used");
    return;
  }
  f->reserved = 1;
  tg_store_op op;
  memset(&op, 0, sizeof op);
  op.u.exact.token = p->asset;
  op.u.exact.nonce = f->auth.nonce;
  op.u.exact.payer = f->auth.from;
  op.u.exact.status = TG_EXACT_VERIFIED;
  if (f->found) {
    op.kind = TG_STORE_OP_EXACT_UPDATE;
  } else {
    op.kind = TG_STORE_OP_EXACT_PUT;
    op.u.exact.to = f->auth.to;
    op.u.exact.amount = f->auth.value;
    op.u.exact.valid_after = f->auth.valid_after;
    op.u.exact.valid_before = f->auth.valid_before;
    op.u.exact.request_id = f->rid;
  }
  if (tg_store_submit_evbase(p->store, &op, 1, f->base, fac_on_intent, f) != 0)
    fac_done(f, "unexpected_settle_error");
}

void tg_pay_fac_settle(tg_pay *p, struct event_base *base, const tg_x402_exact *a,
                       const tg_address *pay_to, const tg_u256 *amount, const char *request_id,
                       tg_pay_fac_cb cb, void *arg) {
  tg_pay_fac_result res;
  memset(&res, 0, sizeof res);
  res.payer = a->from;
  const char *why = exact_offchain(p, a, pay_to, amount, 0);
  if (why) {
    res.reason = why;
    cb(arg, &res);
    return;
  }
  if (!atomic_load(&p->exact_owner)) {
    res.reason = "exact_submitter_elsewhere"; /* another instance submits for the account */
    cb(arg, &res);
    return;
  }
  if (!inflight_take(p, &a->from, &a->nonce)) {
    res.reason = "invalid_exact_evm_nonce_already_used"; /* being settled right now */
    cb(arg, &res);
    return;
  }
  fac_op *f = calloc(1, sizeof *f);
  if (!f) abort();
  f->p = p;
  f->base = base;
  f->auth = *a;
  f->cb = cb;
  f->arg = arg;
  f->res = res;
  copy_cstr(f->rid, sizeof f->rid, request_id);
  tg_store_exact prev;
  int rc = tg_store_exact_get(p->store, &p->asset, &a->from, &a->nonce, &prev);
  if (rc && rc != TG_ENOTFOUND) {
    fac_done(f, "unexpected_settle_error");
    return;
  }
  int found = rc == 0;
  if (found && !same_address(&prev.payer, &a->from)) {
    fac_done(f, "invalid_exact_evm_nonce_already_used");
    return;
  }
  if (found && prev.status != TG_EXACT_FAILED && prev.status != TG_EXACT_VERIFIED) {
    /* Settled before: the same authorization gets the same transaction, never a second one. */
    if (prev.has_tx && same_address(&prev.to, pay_to) && tg_u256_cmp(&prev.amount, amount) == 0) {
      f->res.has_tx = 1;
      f->res.tx = prev.tx_hash;
      f->res.duplicate = 1;
      fac_done(f, NULL);
    } else {
      fac_done(f, "invalid_exact_evm_nonce_already_used");
    }
    return;
  }
  if (found && prev.status == TG_EXACT_VERIFIED) {
    /* Recorded, maybe submitted, by a run that stopped before the hash was recorded: the
     * transaction manager answers with the transaction it has for this authorization. */
    f->reserved = tg_pending_hold(p->pending, &a->from, &a->nonce, &a->value, a->valid_before) == 0;
    fac_submit(f);
    return;
  }
  if ((why = exact_offchain(p, a, pay_to, amount, 1))) {
    fac_done(f, why);
    return;
  }
  f->found = found;
  tg_pending_read_begin(p->pending, &a->from, &f->mark);
  if (p->exact.check_async) {
    /* On the chain thread's pipeline, batched with the calls' admission reads. */
    if (p->exact.check_async(p->exact.ctx, base, &p->asset, &a->from, &a->nonce, fac_on_checked, f) != 0)
      fac_on_checked(f, TG_EIO, NULL, 0);
    return;
  }
  tg_u256 balance;
  int used = 0;
  rc = p->exact.check ? p->exact.check(p->exact.ctx, &p->asset, &a->from, &a->nonce, &balance, &used)
                      : TG_EUNSUPPORTED;
  fac_on_checked(f, rc, &balance, used);
}
