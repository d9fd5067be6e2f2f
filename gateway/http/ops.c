/* Operations endpoints: the admin API, the x402 facilitator endpoints, and the store/pay/chain part of /metrics. */
#include "http/ops.h"

#include <errno.h>
#include <sys/queue.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/watch.h"
#include "pay/passes.h"
#include "store/store.h"
#include "tollgate/address.h"
#include "tollgate/hex.h"
#include "tollgate/u256.h"
#include "tollgate/x402.h"

/*
 * Everything here answers JSON. The admin API only reads the store (any
 * thread may read it); the facilitator endpoints call the payment layer's
 * `exact` verification and submission (tg_pay_fac_*), so that another x402
 * server gets exactly the checks the gateway applies to its own calls.
 * See docs/OPERATIONS.md.
 */

#define ADMIN_LIST_DEFAULT 100
#define ADMIN_LIST_MAX 1000
#define CHANNELS_MAX 10000

/* Facilitator counters: [endpoint][ok] (verify, settle, supported). */
static _Atomic uint64_t fac_count[3][2];
static const char *const fac_names[3] = {"verify", "settle", "supported"};

/* req NULL: the client is gone, the answer is dropped. */
static void reply_json(struct evhttp_request *req, int status, json_t *j) {
  if (req == NULL) return;
  char *t = j ? json_dumps(j, JSON_COMPACT) : NULL;
  struct evbuffer *b = evbuffer_new();
  if (b == NULL) abort();
  if (t) {
    evbuffer_add(b, t, strlen(t));
    evbuffer_add(b, "\n", 1);
  } else {
    evbuffer_add(b, "{\"error\":\"out of memory\"}\n", 26);
    status = 500;
  }
  evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
  evhttp_send_reply(req, status, NULL, b);
  evbuffer_free(b);
  free(t);
}

static int reply_error(struct evhttp_request *req, int status, const char *msg, const char *id) {
  json_t *j = json_pack("{s:s, s:s}", "error", msg, "request_id", id);
  reply_json(req, status, j);
  json_decref(j);
  return status;
}

static json_t *j_addr(const tg_address *a) {
  char s[TG_ADDRESS_HEX_LEN];
  tg_address_to_checksum(a, s);
  return json_string(s);
}

static json_t *j_hash(const tg_hash *h) {
  char s[67];
  tg_hex_encode(s, h->b, 32, 1);
  return json_string(s);
}

static json_t *j_u256(const tg_u256 *v) {
  char s[TG_U256_DEC_MAX];
  tg_u256_to_dec(v, s);
  return json_string(s);
}

/* ---------------------------------------------------------------- admin API */

typedef struct {
  json_t *list;
  size_t n, limit;
  int truncated;
  int64_t last_id;
} lister;

static const char *channel_status(tg_store_channel_status s) {
  return s == TG_CHANNEL_OPEN ? "open" : s == TG_CHANNEL_WITHDRAWING ? "withdrawing" : "closed";
}

static int add_channel(void *arg, const tg_store_channel *c) {
  lister *l = arg;
  if (l->n >= l->limit) {
    l->truncated = 1;
    return 1;
  }
  json_t *o = json_object();
  json_object_set_new(o, "id", j_hash(&c->id));
  json_object_set_new(o, "payer", j_addr(&c->cfg.payer));
  json_object_set_new(o, "balance", j_u256(&c->chain.balance));
  json_object_set_new(o, "claimed", j_u256(&c->chain.total_claimed));
  json_object_set_new(o, "charged", j_u256(&c->charged));
  json_object_set_new(o, "ceiling", j_u256(&c->ceiling));
  json_object_set_new(o, "credit_limit", j_u256(&c->credit_limit));
  json_object_set_new(o, "status", json_string(channel_status(c->chain.status)));
  json_object_set_new(o, "withdraw_requested_at", json_integer((json_int_t)c->chain.withdraw_requested_at));
  json_object_set_new(o, "charges", json_integer((json_int_t)c->charge_count));
  json_object_set_new(o, "synced_block", json_integer((json_int_t)c->chain.synced_block));
  json_array_append_new(l->list, o);
  l->n++;
  return 0;
}

static int add_charge(void *arg, const tg_store_charge *c) {
  lister *l = arg;
  json_t *o = json_object();
  json_object_set_new(o, "id", json_integer((json_int_t)c->id));
  json_object_set_new(o, "request_id", json_string(c->request_id));
  json_object_set_new(o, "payer", j_addr(&c->payer));
  json_object_set_new(o, "scheme", json_string(tg_store_scheme_name(c->scheme)));
  json_object_set_new(o, "route", json_string(c->route));
  json_object_set_new(o, "model", c->model[0] ? json_string(c->model) : json_null());
  json_object_set_new(o, "input_tokens", json_integer((json_int_t)c->input_tokens));
  json_object_set_new(o, "output_tokens", json_integer((json_int_t)c->output_tokens));
  json_object_set_new(o, "amount", j_u256(&c->amount));
  json_object_set_new(o, "channel", c->has_channel ? j_hash(&c->channel_id) : json_null());
  json_object_set_new(o, "cumulative_after", c->has_channel ? j_u256(&c->cumulative_after) : json_null());
  json_object_set_new(o, "created_at", json_integer((json_int_t)c->created_at));
  json_object_set_new(o, "settled", json_boolean(c->settled));
  json_array_append_new(l->list, o);
  l->n++;
  l->last_id = c->id;
  return 0;
}

typedef struct {
  json_t *list;
  tg_u256 total;
  size_t n;
  int truncated;
} pending;

static int add_pending(void *arg, const tg_store_channel *c) {
  pending *p = arg;
  if (p->n >= CHANNELS_MAX) {
    p->truncated = 1;
    return 1;
  }
  tg_u256 owed;
  if (tg_u256_sub(&owed, &c->charged, &c->chain.total_claimed) != 0) return 0; /* nothing owed */
  if (tg_u256_is_zero(&owed)) return 0;
  json_t *o = json_object();
  json_object_set_new(o, "channel", j_hash(&c->id));
  json_object_set_new(o, "payer", j_addr(&c->cfg.payer));
  json_object_set_new(o, "charged", j_u256(&c->charged));
  json_object_set_new(o, "claimed", j_u256(&c->chain.total_claimed));
  json_object_set_new(o, "pending", j_u256(&owed));
  json_object_set_new(o, "balance", j_u256(&c->chain.balance));
  json_object_set_new(o, "status", json_string(channel_status(c->chain.status)));
  json_object_set_new(o, "first_unclaimed_at", json_integer((json_int_t)c->first_unclaimed_at));
  json_object_set_new(o, "withdraw_requested_at", json_integer((json_int_t)c->chain.withdraw_requested_at));
  json_array_append_new(p->list, o);
  if (tg_u256_add(&p->total, &p->total, &owed) != 0) tg_u256_zero(&p->total);
  p->n++;
  return 0;
}

static int add_item(void *arg, const tg_store_settle_item *it) {
  json_t *list = arg;
  json_t *o = json_object();
  json_object_set_new(o, "channel", j_hash(&it->channel_id));
  json_object_set_new(o, "amount", j_u256(&it->amount));
  json_object_set_new(o, "through_charge", json_integer((json_int_t)it->through_charge));
  json_object_set_new(o, "step", json_string(tg_store_settle_step_name(it->step)));
  json_object_set_new(o, "transaction", it->has_tx ? j_hash(&it->tx_hash) : json_null());
  json_object_set_new(o, "error", it->error[0] ? json_string(it->error) : json_null());
  json_array_append_new(list, o);
  return 0;
}

/* A non-negative decimal integer of at most 18 digits; -1 when it is not one. */
static int64_t parse_count(const char *s) {
  if (s == NULL || *s == 0 || strlen(s) > 18) return -1;
  int64_t v = 0;
  for (; *s; s++) {
    if (*s < '0' || *s > '9') return -1;
    v = v * 10 + (*s - '0');
  }
  return v;
}

static int admin_charges(const tg_http_ops *ops, struct evhttp_request *req, struct evkeyvalq *q,
                         const char *id) {
  const char *ch = evhttp_find_header(q, "channel"), *payer = evhttp_find_header(q, "payer");
  const char *after_s = evhttp_find_header(q, "after"), *limit_s = evhttp_find_header(q, "limit");
  if ((ch == NULL) == (payer == NULL))
    return reply_error(req, 400, "charges needs exactly one of channel=ID or payer=ADDRESS", id);
  int64_t after = after_s ? parse_count(after_s) : 0;
  int64_t limit = limit_s ? parse_count(limit_s) : ADMIN_LIST_DEFAULT;
  if (after < 0) return reply_error(req, 400, "after: not a charge id", id);
  if (limit < 1 || limit > ADMIN_LIST_MAX) return reply_error(req, 400, "limit: 1..1000", id);
  lister l = {.list = json_array(), .limit = (size_t)limit};
  int rc;
  if (ch) {
    tg_hash h;
    if (strlen(ch) != 66 || tg_hex_decode_exact(h.b, 32, ch, 66) != 0) {
      json_decref(l.list);
      return reply_error(req, 400, "channel: not a 32-byte 0x hex id", id);
    }
    rc = tg_store_charges_by_channel(ops->store, &h, after, (size_t)limit, add_charge, &l);
  } else {
    tg_address a;
    if (tg_address_parse(&a, payer, strlen(payer)) != 0) {
      json_decref(l.list);
      return reply_error(req, 400, "payer: not an address", id);
    }
    rc = tg_store_charges_by_payer(ops->store, &a, after, (size_t)limit, add_charge, &l);
  }
  if (rc && rc != TG_ENOTFOUND) {
    json_decref(l.list);
    return reply_error(req, 503, tg_strerror(rc), id);
  }
  json_t *o = json_object();
  json_object_set_new(o, "charges", l.list);
  /* next_after: pass it as after= for the next page; null when this page was not full. */
  json_object_set_new(o, "next_after", l.n == (size_t)limit ? json_integer((json_int_t)l.last_id) : json_null());
  reply_json(req, 200, o);
  json_decref(o);
  return 200;
}

/* ---- access passes ------------------------------------------------------------------ */

static int add_usage(void *arg, const tg_u256 *plan, const tg_address *holder, int64_t period,
                     uint64_t calls, uint64_t tokens, uint64_t inflight) {
  char id[TG_U256_DEC_MAX];
  tg_u256_to_dec(plan, id);
  json_array_append_new(arg, json_pack("{s:s, s:o, s:I, s:I, s:I, s:I}", "plan_id", id, "holder",
                                       j_addr(holder), "period_start_ms", (json_int_t)period,
                                       "calls", (json_int_t)calls, "tokens", (json_int_t)tokens,
                                       "in_flight", (json_int_t)inflight));
  return 0;
}

/* GET passes: the pass layer's counters and the usage counters it holds for this period. */
static int admin_passes(const tg_http_ops *ops, struct evhttp_request *req) {
  tg_passes_stats s;
  tg_passes_stats_get(ops->passes, &s);
  json_t *usage = json_array();
  tg_passes_usage_each(ops->passes, add_usage, usage);
  json_t *o = json_pack(
      "{s:I, s:I, s:I, s:I, s:I, s:{s:I, s:I, s:I}, s:{s:I, s:I, s:I, s:I}, s:{s:I, s:I, s:I}, "
      "s:I, s:o}",
      "passes_seen", (json_int_t)s.passes_seen, "sessions_cached", (json_int_t)s.sessions_cached,
      "signins", (json_int_t)s.signins, "signins_refused", (json_int_t)s.signins_refused,
      "nonces_issued", (json_int_t)s.nonces_issued, "entitlements", "reads",
      (json_int_t)s.entitlement_reads, "cache_hits", (json_int_t)s.entitlement_hits,
      "invalidations", (json_int_t)s.invalidations, "calls", "included",
      (json_int_t)s.admitted_included, "overage", (json_int_t)s.admitted_overage,
      "refused_not_entitled", (json_int_t)s.refused_not_entitled, "refused_quota",
      (json_int_t)s.refused_quota, "leases", "written", (json_int_t)s.leases, "failed",
      (json_int_t)s.lease_failures, "unused_calls", (json_int_t)s.leased_unused, "chain_time",
      (json_int_t)s.chain_time, "usage", usage);
  reply_json(req, 200, o);
  json_decref(o);
  return 200;
}

/* Per-plan quota use for /metrics: sums over holders of the current periods' counters. */
#define USAGE_PLANS_MAX 256
typedef struct {
  size_t n;
  tg_u256 plan[USAGE_PLANS_MAX];
  uint64_t calls[USAGE_PLANS_MAX], tokens[USAGE_PLANS_MAX], holders[USAGE_PLANS_MAX];
} usage_sums;

static int usage_add(void *arg, const tg_u256 *plan, const tg_address *holder, int64_t period,
                     uint64_t calls, uint64_t tokens, uint64_t inflight) {
  (void)holder;
  (void)period;
  (void)inflight;
  usage_sums *u = arg;
  size_t i;
  for (i = 0; i < u->n; i++)
    if (tg_u256_cmp(&u->plan[i], plan) == 0) break;
  if (i == u->n) {
    if (u->n == USAGE_PLANS_MAX) return 0;
    u->plan[u->n++] = *plan;
  }
  u->calls[i] += calls;
  u->tokens[i] += tokens;
  u->holders[i]++;
  return 0;
}

int tg_ops_admin(const tg_http_ops *ops, struct evhttp_request *req, const char *method,
                 const char *sub, const char *query, const char *request_id) {
  int known = strcmp(sub, "channels") == 0 || strcmp(sub, "charges") == 0 ||
              strcmp(sub, "settlements") == 0 || strcmp(sub, "passes") == 0;
  if (!known) return reply_error(req, 404, "no such admin endpoint", request_id);
  if (strcmp(sub, "passes") == 0) {
    if (strcmp(method, "GET") != 0) {
      evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET");
      return reply_error(req, 405, "admin endpoints answer GET only", request_id);
    }
    if (ops == NULL || ops->passes == NULL)
      return reply_error(req, 503, "access passes are not configured (no `plan`)", request_id);
    return admin_passes(ops, req);
  }
  if (strcmp(method, "GET") != 0) {
    evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET");
    return reply_error(req, 405, "admin endpoints answer GET only", request_id);
  }
  if (ops == NULL || ops->store == NULL)
    return reply_error(req, 503, "the admin API needs the store (payments not configured)", request_id);
  struct evkeyvalq q;
  TAILQ_INIT(&q);
  if (query && evhttp_parse_query_str(query, &q) != 0) {
    evhttp_clear_headers(&q);
    return reply_error(req, 400, "malformed query string", request_id);
  }
  int st;
  if (strcmp(sub, "charges") == 0) {
    st = admin_charges(ops, req, &q, request_id);
  } else if (strcmp(sub, "channels") == 0) {
    const char *payer = evhttp_find_header(&q, "payer");
    tg_address a;
    if (payer && tg_address_parse(&a, payer, strlen(payer)) != 0) {
      st = reply_error(req, 400, "payer: not an address", request_id);
    } else {
      lister l = {.list = json_array(), .limit = CHANNELS_MAX};
      int rc = tg_store_channels_list(ops->store, payer ? &a : NULL, add_channel, &l);
      if (rc < 0 && rc != TG_ENOTFOUND) {
        json_decref(l.list);
        st = reply_error(req, 503, tg_strerror(rc), request_id);
      } else {
        json_t *o = json_object();
        json_object_set_new(o, "channels", l.list);
        json_object_set_new(o, "truncated", json_boolean(l.truncated));
        reply_json(req, st = 200, o);
        json_decref(o);
      }
    }
  } else {
    pending p = {.list = json_array()};
    tg_u256_zero(&p.total);
    int rc = tg_store_channels_unsettled(ops->store, add_pending, &p);
    json_t *run = json_null();
    tg_store_settle_run r;
    int rrc = rc < 0 && rc != TG_ENOTFOUND ? rc : tg_store_run_open_get(ops->store, &r);
    if (rrc == 0) {
      json_t *items = json_array();
      rrc = tg_store_run_items(ops->store, r.id, add_item, items);
      run = json_pack("{s:I, s:I, s:o}", "id", (json_int_t)r.id, "started_at",
                      (json_int_t)r.started_at, "items", items);
    }
    if ((rc < 0 && rc != TG_ENOTFOUND) || (rrc < 0 && rrc != TG_ENOTFOUND)) {
      json_decref(p.list);
      json_decref(run);
      st = reply_error(req, 503, tg_strerror(rc < 0 && rc != TG_ENOTFOUND ? rc : rrc), request_id);
    } else {
      json_t *o = json_object();
      json_object_set_new(o, "pending", p.list);
      json_object_set_new(o, "total_pending", j_u256(&p.total));
      json_object_set_new(o, "truncated", json_boolean(p.truncated));
      json_object_set_new(o, "open_run", run);
      reply_json(req, st = 200, o);
      json_decref(o);
    }
  }
  evhttp_clear_headers(&q);
  return st;
}

/* ---------------------------------------------------------------- facilitator */

int tg_ops_is_facilitator(const char *path) {
  return strcmp(path, "/verify") == 0 || strcmp(path, "/settle") == 0 ||
         strcmp(path, "/supported") == 0 || strcmp(path, "/channel/refund") == 0;
}

static void network_of(char out[32], uint64_t chain_id) {
  snprintf(out, 32, "eip155:%llu", (unsigned long long)chain_id);
}

/* A facilitator request, decoded and checked against the gateway's terms. */
typedef struct {
  tg_x402_payment pm;
  tg_address pay_to;
  tg_u256 amount;
  const char *reason; /* set when the request is refused before the payment layer */
  int status;         /* 400 for a malformed request, 200 otherwise */
} fac_req;

static int str_field(const json_t *o, const char *k, const char **out) {
  json_t *v = json_object_get(o, k);
  if (!json_is_string(v)) return -1;
  *out = json_string_value(v);
  return 0;
}

static void fac_decode(fac_req *f, const tg_http_ops *ops, struct evhttp_request *req) {
  f->status = 400;
  f->reason = "invalid_payload";
  struct evbuffer *in = evhttp_request_get_input_buffer(req);
  size_t n = evbuffer_get_length(in);
  const char *body = n ? (const char *)evbuffer_pullup(in, -1) : "";
  json_error_t jerr;
  json_t *root = json_loadb(body, n, JSON_REJECT_DUPLICATES, &jerr);
  if (!json_is_object(root)) goto out;
  json_t *ver = json_object_get(root, "x402Version");
  if (!json_is_integer(ver) || json_integer_value(ver) != TG_X402_VERSION) {
    f->reason = "invalid_x402_version";
    goto out;
  }
  json_t *payload = json_object_get(root, "paymentPayload");
  json_t *reqs = json_object_get(root, "paymentRequirements");
  if (!json_is_object(payload) || !json_is_object(reqs)) goto out;
  const char *scheme, *network, *amount, *asset, *pay_to;
  if (str_field(reqs, "scheme", &scheme) || str_field(reqs, "network", &network) ||
      str_field(reqs, "amount", &amount) || str_field(reqs, "asset", &asset) ||
      str_field(reqs, "payTo", &pay_to)) {
    f->reason = "invalid_payment_requirements";
    goto out;
  }
  f->status = 200;
  uint64_t chain_id, our_chain;
  tg_address our_asset, a;
  tg_pay_fac_terms(ops->pay, &our_chain, &our_asset);
  if (strcmp(scheme, "exact") != 0) {
    f->reason = "unsupported_scheme";
    goto out;
  }
  if (tg_x402_network_parse(&chain_id, network, strlen(network)) != 0 || chain_id != our_chain) {
    f->reason = "invalid_network";
    goto out;
  }
  if (tg_address_parse(&a, asset, strlen(asset)) != 0 || !tg_address_eq(&a, &our_asset) ||
      tg_address_parse(&f->pay_to, pay_to, strlen(pay_to)) != 0 ||
      tg_u256_parse_dec(&f->amount, amount, strlen(amount)) != 0) {
    f->reason = "invalid_payment_requirements";
    goto out;
  }
  /* The payload goes through the same strict decoder as a PAYMENT-SIGNATURE header. */
  char *pj = json_dumps(payload, JSON_COMPACT);
  tg_buf b64;
  tg_buf_init(&b64, 64 * 1024);
  int rc = pj ? tg_base64_encode(&b64, (const uint8_t *)pj, strlen(pj)) : TG_ENOMEM;
  free(pj);
  const char *why = NULL;
  if (rc == 0) rc = tg_x402_payment_decode(&f->pm, &why, (const char *)b64.data, b64.len);
  tg_buf_cleanup(&b64);
  if (rc) {
    f->status = 400;
    f->reason = why ? why : "invalid_payload";
    goto out;
  }
  const tg_x402_requirements *acc = &f->pm.accepted;
  if (acc->scheme != TG_X402_EXACT) {
    f->reason = "unsupported_scheme";
    goto out;
  }
  if (acc->chain_id != chain_id) {
    f->reason = "invalid_network";
    goto out;
  }
  /* The payer accepted these terms: they must be the ones the server asks us to check. */
  if (!tg_address_eq(&acc->asset, &a) || !tg_address_eq(&acc->pay_to, &f->pay_to) ||
      tg_u256_cmp(&acc->amount, &f->amount) != 0) {
    f->reason = "invalid_payment_requirements";
    goto out;
  }
  f->reason = NULL;
out:
  json_decref(root);
}

typedef struct {
  tg_client_watch *cw;
  uint64_t chain_id;
  void (*done)(void *arg, int status);
  void *arg;
} settle_wait;

static json_t *settle_json(const tg_pay_fac_result *r, uint64_t chain_id, int has_payer) {
  char net[32];
  network_of(net, chain_id);
  json_t *o = json_object();
  json_object_set_new(o, "success", json_boolean(r->valid));
  if (!r->valid) json_object_set_new(o, "errorReason", json_string(r->reason ? r->reason : "unexpected_settle_error"));
  if (has_payer) json_object_set_new(o, "payer", j_addr(&r->payer));
  json_object_set_new(o, "transaction", r->valid && r->has_tx ? j_hash(&r->tx) : json_string(""));
  json_object_set_new(o, "network", json_string(net));
  return o;
}

static void on_settled(void *arg, const tg_pay_fac_result *r) {
  settle_wait *w = arg;
  json_t *o = settle_json(r, w->chain_id, 1);
  reply_json(tg_client_watch_take(w->cw), 200, o); /* dropped when the client is gone */
  json_decref(o);
  atomic_fetch_add(&fac_count[1][r->valid ? 1 : 0], 1);
  w->done(w->arg, 200);
  free(w);
}

/* A /verify waiting for the chain thread's read (the worker serves other calls meanwhile). */
typedef struct {
  tg_client_watch *cw;
  void (*done)(void *arg, int status);
  void *arg;
} verify_wait;

static void on_verified(void *arg, int rc, const tg_pay_fac_result *res) {
  verify_wait *w = arg;
  tg_pay_fac_result r = *res;
  int st = 200;
  if (rc) {
    r.valid = 0;
    r.reason = "unexpected_verify_error";
    st = 500;
  }
  json_t *o = json_object();
  json_object_set_new(o, "isValid", json_boolean(r.valid));
  if (!r.valid) json_object_set_new(o, "invalidReason", json_string(r.reason));
  json_object_set_new(o, "payer", j_addr(&r.payer));
  reply_json(tg_client_watch_take(w->cw), st, o); /* dropped when the client is gone */
  json_decref(o);
  atomic_fetch_add(&fac_count[0][r.valid ? 1 : 0], 1);
  w->done(w->arg, st);
  free(w);
}

static int facilitator(const tg_http_ops *ops, struct event_base *base, tg_client_watch *cw,
                       const char *method, const char *path, const char *request_id,
                       void (*done)(void *arg, int status), void *arg);

void tg_ops_facilitator(const tg_http_ops *ops, struct event_base *base, tg_client_watch *cw,
                        const char *method, const char *path, const char *request_id,
                        void (*done)(void *arg, int status), void *arg) {
  int st = facilitator(ops, base, cw, method, path, request_id, done, arg);
  if (st) done(arg, st);
}

/* POST /channel/refund: the payment layer's answer, sent as it is. */
typedef struct {
  tg_client_watch *cw;
  void (*done)(void *arg, int status);
  void *arg;
} refund_req;

static void on_refund(void *arg, int status, const char *body) {
  refund_req *r = arg;
  struct evhttp_request *req = tg_client_watch_take(r->cw); /* NULL: the client is gone */
  if (req) {
    struct evbuffer *b = evbuffer_new();
    if (b == NULL) abort();
    evbuffer_add(b, body, strlen(body));
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evhttp_send_reply(req, status, NULL, b);
    evbuffer_free(b);
  }
  r->done(r->arg, status);
  free(r);
}

/* Returns the status sent, or 0 when the answer (and done) come later. */
static int facilitator(const tg_http_ops *ops, struct event_base *base, tg_client_watch *cw,
                       const char *method, const char *path, const char *request_id,
                       void (*done)(void *arg, int status), void *arg) {
  struct evhttp_request *req = cw->req; /* being served: valid until this returns */
  if (ops == NULL || ops->pay == NULL)
    return reply_error(req, 503, "facilitator: payments not configured", request_id);
  if (strcmp(path, "/channel/refund") == 0) {
    if (strcmp(method, "POST") != 0) {
      evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "POST");
      return reply_error(req, 405, "POST only", request_id);
    }
    refund_req *r = calloc(1, sizeof *r);
    if (r == NULL) abort();
    r->cw = cw;
    r->done = done;
    r->arg = arg;
    const char *ps = evhttp_find_header(evhttp_request_get_input_headers(req), "PAYMENT-SIGNATURE");
    if (ps && strlen(ps) > TG_X402_HEADER_MAX) ps = NULL;
    tg_pay_refund(ops->pay, base, ps, on_refund, r);
    return 0;
  }
  uint64_t chain_id;
  tg_address asset;
  tg_pay_fac_terms(ops->pay, &chain_id, &asset);
  char net[32];
  network_of(net, chain_id);
  int supported = strcmp(path, "/supported") == 0;
  const char *want = supported ? "GET" : "POST";
  if (strcmp(method, want) != 0) {
    evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", want);
    return reply_error(req, 405, supported ? "GET only" : "POST only", request_id);
  }
  if (supported) {
    /* Only `exact`: see docs/OPERATIONS.md "Facilitator endpoints" for why not channels. */
    json_t *signers = json_array();
    if (ops->has_signer) json_array_append_new(signers, j_addr(&ops->signer));
    json_t *o = json_pack("{s:[{s:i, s:s, s:s}], s:[], s:{s:o}}", "kinds", "x402Version",
                          TG_X402_VERSION, "scheme", "exact", "network", net, "extensions",
                          "signers", "eip155:*", signers);
    reply_json(req, 200, o);
    json_decref(o);
    atomic_fetch_add(&fac_count[2][1], 1);
    return 200;
  }
  int settle = strcmp(path, "/settle") == 0;
  fac_req *f = calloc(1, sizeof *f);
  if (f == NULL) abort();
  fac_decode(f, ops, req);
  int has_payer = f->pm.accepted.scheme == TG_X402_EXACT && !tg_address_is_zero(&f->pm.u.exact.from);
  int st = f->status;
  if (f->reason == NULL && !settle) {
    verify_wait *w = malloc(sizeof *w);
    if (w == NULL) abort();
    w->cw = cw;
    w->done = done;
    w->arg = arg;
    st = 0;
    tg_pay_fac_verify_async(ops->pay, base, &f->pm.u.exact, &f->pay_to, &f->amount, on_verified, w);
  } else if (f->reason == NULL) {
    settle_wait *w = malloc(sizeof *w);
    if (w == NULL) abort();
    w->cw = cw;
    w->chain_id = chain_id;
    w->done = done;
    w->arg = arg;
    st = 0;
    char rid[40];
    snprintf(rid, sizeof rid, "facilitator-%s", request_id);
    tg_pay_fac_settle(ops->pay, base, &f->pm.u.exact, &f->pay_to, &f->amount, rid, on_settled, w);
  } else if (settle) {
    tg_pay_fac_result r;
    memset(&r, 0, sizeof r);
    r.reason = f->reason;
    if (has_payer) r.payer = f->pm.u.exact.from;
    json_t *o = settle_json(&r, chain_id, has_payer);
    reply_json(req, st, o);
    json_decref(o);
    atomic_fetch_add(&fac_count[1][0], 1);
  } else {
    json_t *o = json_object();
    json_object_set_new(o, "isValid", json_false());
    json_object_set_new(o, "invalidReason", json_string(f->reason));
    if (has_payer) json_object_set_new(o, "payer", j_addr(&f->pm.u.exact.from));
    reply_json(req, st, o);
    json_decref(o);
    atomic_fetch_add(&fac_count[0][0], 1);
  }
  sodium_memzero(f, sizeof *f);
  free(f);
  return st;
}

/* ---------------------------------------------------------------- metrics */

int tg_ops_metrics(const tg_http_ops *ops, tg_buf *out) {
  int rc;
#define P(...)                                             \
  do {                                                     \
    if ((rc = tg_buf_printf(out, __VA_ARGS__))) return rc; \
  } while (0)
  P("# HELP tollgate_facilitator_requests_total Facilitator requests, by endpoint and result.\n"
    "# TYPE tollgate_facilitator_requests_total counter\n");
  for (int e = 0; e < 3; e++)
    for (int ok = 0; ok < 2; ok++)
      P("tollgate_facilitator_requests_total{endpoint=\"%s\",result=\"%s\"} %llu\n", fac_names[e],
        ok ? "ok" : "refused", (unsigned long long)atomic_load(&fac_count[e][ok]));
  if (ops == NULL) return 0;
  if (ops->pay) {
    tg_pay_stats s;
    tg_pay_stats_get(ops->pay, &s);
    char ch[TG_U256_DEC_MAX], ex[TG_U256_DEC_MAX];
    tg_u256_to_dec(&s.charged_channel, ch);
    tg_u256_to_dec(&s.charged_exact, ex);
    P("# HELP tollgate_pay_admitted_total Calls admitted by the payment layer.\n"
      "# TYPE tollgate_pay_admitted_total counter\ntollgate_pay_admitted_total %llu\n"
      "# HELP tollgate_pay_charged_calls_total Calls whose charge was committed.\n"
      "# TYPE tollgate_pay_charged_calls_total counter\ntollgate_pay_charged_calls_total %llu\n"
      "# HELP tollgate_pay_failed_commits_total Charges or payment records that could not be committed.\n"
      "# TYPE tollgate_pay_failed_commits_total counter\ntollgate_pay_failed_commits_total %llu\n"
      "# HELP tollgate_pay_charged_amount_total Committed charges in base units (exact precision), by scheme.\n"
      "# TYPE tollgate_pay_charged_amount_total counter\n"
      "tollgate_pay_charged_amount_total{scheme=\"channel\"} %s\n"
      "tollgate_pay_charged_amount_total{scheme=\"exact\"} %s\n"
      "# HELP tollgate_pay_chain_errors_total Chain backend failures seen by payments, by operation.\n"
      "# TYPE tollgate_pay_chain_errors_total counter\n"
      "tollgate_pay_chain_errors_total{op=\"check\"} %llu\n"
      "tollgate_pay_chain_errors_total{op=\"submit\"} %llu\n"
      "# HELP tollgate_pay_voucher_cache_hits_total Voucher headers recognised by their bytes (no decode, no recovery).\n"
      "# TYPE tollgate_pay_voucher_cache_hits_total counter\ntollgate_pay_voucher_cache_hits_total %llu\n",
      (unsigned long long)s.admitted, (unsigned long long)s.charged_calls,
      (unsigned long long)s.failed_commits, ch, ex, (unsigned long long)s.chain_check_errors,
      (unsigned long long)s.chain_submit_errors, (unsigned long long)s.voucher_cache_hits);
    P("# HELP tollgate_pay_headroom_admitted_total Channel calls admitted on a unit of a headroom lease (no store round trip; PostgreSQL).\n"
      "# TYPE tollgate_pay_headroom_admitted_total counter\ntollgate_pay_headroom_admitted_total %llu\n"
      "# HELP tollgate_pay_headroom_slices_total Headroom slices taken in the store, by result.\n"
      "# TYPE tollgate_pay_headroom_slices_total counter\n"
      "tollgate_pay_headroom_slices_total{result=\"ok\"} %llu\n"
      "tollgate_pay_headroom_slices_total{result=\"refused\"} %llu\n"
      "# HELP tollgate_pay_headroom_dropped_total Headroom leases dropped (withdrawal, balance drop, unit reclaimed, failed charge).\n"
      "# TYPE tollgate_pay_headroom_dropped_total counter\ntollgate_pay_headroom_dropped_total %llu\n"
      "# HELP tollgate_pay_headroom_units Units of headroom held in the store and not yet used, all channels.\n"
      "# TYPE tollgate_pay_headroom_units gauge\ntollgate_pay_headroom_units %llu\n",
      (unsigned long long)s.headroom_admitted, (unsigned long long)s.headroom_slices,
      (unsigned long long)s.headroom_slices_refused, (unsigned long long)s.headroom_dropped,
      (unsigned long long)s.headroom_units_free);
    P("# HELP tollgate_pay_exact_pending_transfers Exact transfers admitted and not yet known mined or dropped (they count against their payers' balances).\n"
      "# TYPE tollgate_pay_exact_pending_transfers gauge\ntollgate_pay_exact_pending_transfers %llu\n"
      "# HELP tollgate_pay_exact_pending_payers Payers with exact transfers in flight (or a balance read in progress).\n"
      "# TYPE tollgate_pay_exact_pending_payers gauge\ntollgate_pay_exact_pending_payers %llu\n"
      "# HELP tollgate_pay_exact_funds_refused_total Exact admissions and settlements refused insufficient_funds (balance less the payer's transfers in flight).\n"
      "# TYPE tollgate_pay_exact_funds_refused_total counter\ntollgate_pay_exact_funds_refused_total %llu\n"
      "# HELP tollgate_pay_exact_pending_lapsed_total Exact transfers in flight given up after validBefore + 600 s without an outcome.\n"
      "# TYPE tollgate_pay_exact_pending_lapsed_total counter\ntollgate_pay_exact_pending_lapsed_total %llu\n",
      (unsigned long long)s.exact_pending_transfers, (unsigned long long)s.exact_pending_payers,
      (unsigned long long)s.exact_funds_refused, (unsigned long long)s.exact_pending_lapsed);
  }
  if (ops->passes) {
    tg_passes_stats s;
    tg_passes_stats_get(ops->passes, &s);
    P("# HELP tollgate_passes_seen Distinct (address, plan) entitlements cached as live.\n"
      "# TYPE tollgate_passes_seen gauge\ntollgate_passes_seen %llu\n"
      "# HELP tollgate_sessions_cached Sign-in sessions held in memory.\n"
      "# TYPE tollgate_sessions_cached gauge\ntollgate_sessions_cached %llu\n"
      "# HELP tollgate_signins_total Sign-in attempts, by result.\n"
      "# TYPE tollgate_signins_total counter\n"
      "tollgate_signins_total{result=\"ok\"} %llu\ntollgate_signins_total{result=\"refused\"} %llu\n"
      "# HELP tollgate_pass_entitlement_reads_total eth_calls of entitled() (cache misses).\n"
      "# TYPE tollgate_pass_entitlement_reads_total counter\ntollgate_pass_entitlement_reads_total %llu\n"
      "# HELP tollgate_pass_entitlement_hits_total Entitlements answered from the cache.\n"
      "# TYPE tollgate_pass_entitlement_hits_total counter\ntollgate_pass_entitlement_hits_total %llu\n"
      "# HELP tollgate_pass_invalidations_total Polls in which the pass contract logged a change.\n"
      "# TYPE tollgate_pass_invalidations_total counter\ntollgate_pass_invalidations_total %llu\n"
      "# HELP tollgate_pass_calls_total Calls decided on a pass, by outcome.\n"
      "# TYPE tollgate_pass_calls_total counter\n"
      "tollgate_pass_calls_total{outcome=\"included\"} %llu\n"
      "tollgate_pass_calls_total{outcome=\"overage\"} %llu\n"
      "tollgate_pass_calls_total{outcome=\"not_entitled\"} %llu\n"
      "tollgate_pass_calls_total{outcome=\"quota_spent\"} %llu\n"
"# HELP tollgate_pass_leases_total Quota lease writes (calls counted ahead in one write), by result.\n"
      "# TYPE tollgate_pass_leases_total counter\n"
      "tollgate_pass_leases_total{result=\"ok\"} %llu\ntollgate_pass_leases_total{result=\"failed\"} %llu\n"
      "# HELP tollgate_pass_leased_calls Calls leased and not yet used (what a crash would cost holders).\n"
      "# TYPE tollgate_pass_leased_calls gauge\ntollgate_pass_leased_calls %llu\n"
      "# HELP tollgate_pass_quota_used Usage of the current quota periods, summed per plan.\n"
      "# TYPE tollgate_pass_quota_used gauge\n"
      "# HELP tollgate_pass_quota_holders Holders with usage counted in the current period, per plan.\n"
      "# TYPE tollgate_pass_quota_holders gauge\n",
      (unsigned long long)s.passes_seen, (unsigned long long)s.sessions_cached,
      (unsigned long long)s.signins, (unsigned long long)s.signins_refused,
      (unsigned long long)s.entitlement_reads, (unsigned long long)s.entitlement_hits,
      (unsigned long long)s.invalidations, (unsigned long long)s.admitted_included,
      (unsigned long long)s.admitted_overage, (unsigned long long)s.refused_not_entitled,
      (unsigned long long)s.refused_quota, (unsigned long long)s.leases,
      (unsigned long long)s.lease_failures, (unsigned long long)s.leased_unused);
    usage_sums *u = calloc(1, sizeof *u);
    if (!u) abort();
    tg_passes_usage_each(ops->passes, usage_add, u);
    for (size_t i = 0; i < u->n && rc == 0; i++) {
      char id[TG_U256_DEC_MAX];
      tg_u256_to_dec(&u->plan[i], id);
      rc = tg_buf_printf(out,
                         "tollgate_pass_quota_used{plan_id=\"%s\",unit=\"calls\"} %llu\n"
                         "tollgate_pass_quota_used{plan_id=\"%s\",unit=\"tokens\"} %llu\n"
                         "tollgate_pass_quota_holders{plan_id=\"%s\"} %llu\n",
                         id, (unsigned long long)u->calls[i], id, (unsigned long long)u->tokens[i], id,
                         (unsigned long long)u->holders[i]);
    }
    free(u);
    if (rc) return rc;
  }
  if (ops->settle_stats) {
    tg_http_settle_stats s;
    memset(&s, 0, sizeof s);
    ops->settle_stats(ops->settle_ctx, &s);
    P("# HELP tollgate_settlement_runs_total Settlement runs of the scheduler and watchtower, by result.\n"
      "# TYPE tollgate_settlement_runs_total counter\n"
      "tollgate_settlement_runs_total{result=\"ok\"} %llu\n"
      "tollgate_settlement_runs_total{result=\"failed\"} %llu\n"
      "# HELP tollgate_settlement_consecutive_failures Failed settlement runs in a row.\n"
      "# TYPE tollgate_settlement_consecutive_failures gauge\ntollgate_settlement_consecutive_failures %llu\n"
      "# HELP tollgate_settlement_last_success_timestamp_seconds End of the last good run.\n"
      "# TYPE tollgate_settlement_last_success_timestamp_seconds gauge\n"
      "tollgate_settlement_last_success_timestamp_seconds %lld\n"
      "# HELP tollgate_watchtower_channels Channels the watchtower follows (in withdrawal or near their balance).\n"
      "# TYPE tollgate_watchtower_channels gauge\ntollgate_watchtower_channels %llu\n"
      "# HELP tollgate_watchtower_channels_at_risk Channels in withdrawal, still owed, past their claim margin.\n"
      "# TYPE tollgate_watchtower_channels_at_risk gauge\ntollgate_watchtower_channels_at_risk %llu\n"
      "# HELP tollgate_watchtower_alerts_total ALERT lines logged by the scheduler and watchtower.\n"
      "# TYPE tollgate_watchtower_alerts_total counter\ntollgate_watchtower_alerts_total %llu\n",
      (unsigned long long)s.runs_ok, (unsigned long long)s.runs_failed,
      (unsigned long long)s.consecutive_failures, (long long)s.last_ok_unix,
      (unsigned long long)s.watched, (unsigned long long)s.at_risk, (unsigned long long)s.alerts);
  }
  if (ops->store) {
    tg_store_stats s;
    tg_store_get_stats(ops->store, &s);
    P("# HELP tollgate_store_commits_total Store transactions committed (one fsync each).\n"
      "# TYPE tollgate_store_commits_total counter\ntollgate_store_commits_total %llu\n"
      "# HELP tollgate_store_ops_total Store operations completed.\n"
      "# TYPE tollgate_store_ops_total counter\ntollgate_store_ops_total %llu\n"
      "# HELP tollgate_store_failed_submissions_total Store submissions rolled back.\n"
      "# TYPE tollgate_store_failed_submissions_total counter\n"
      "tollgate_store_failed_submissions_total %llu\n"
      "# HELP tollgate_store_folded_ops_total Pass usage increments written folded (one write per pass per commit).\n"
      "# TYPE tollgate_store_folded_ops_total counter\ntollgate_store_folded_ops_total %llu\n"
      "# HELP tollgate_store_round_trips_total Round trips of the store's writer to the database server (0 for SQLite, in-process).\n"
      "# TYPE tollgate_store_round_trips_total counter\ntollgate_store_round_trips_total %llu\n"
      "# HELP tollgate_store_queue_ops Store operations queued or being written.\n"
      "# TYPE tollgate_store_queue_ops gauge\ntollgate_store_queue_ops %llu\n"
      "# HELP tollgate_store_commit_max_seconds Longest COMMIT since start.\n"
      "# TYPE tollgate_store_commit_max_seconds gauge\ntollgate_store_commit_max_seconds %.6f\n"
      "# HELP tollgate_store_commit_duration_seconds Time in COMMIT (the fsync of a group commit).\n"
      "# TYPE tollgate_store_commit_duration_seconds histogram\n",
      (unsigned long long)s.commits, (unsigned long long)s.ops, (unsigned long long)s.failed,
      (unsigned long long)s.folded_ops, (unsigned long long)s.round_trips,
      (unsigned long long)s.queue_ops, (double)s.commit_ns_max / 1e9);
    uint64_t cum = 0;
    for (int b = 0; b < TG_STORE_HIST_BUCKETS; b++) {
      cum += s.commit_hist[b];
      if (tg_store_commit_bucket_us[b] == UINT64_MAX)
        P("tollgate_store_commit_duration_seconds_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)cum);
      else
        P("tollgate_store_commit_duration_seconds_bucket{le=\"%g\"} %llu\n",
          (double)tg_store_commit_bucket_us[b] / 1e6, (unsigned long long)cum);
    }
    if (tg_store_commit_bucket_us[TG_STORE_HIST_BUCKETS - 1] != UINT64_MAX)
      P("tollgate_store_commit_duration_seconds_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)cum);
    P("tollgate_store_commit_duration_seconds_sum %.6f\n"
      "tollgate_store_commit_duration_seconds_count %llu\n",
      (double)s.commit_ns_total / 1e9, (unsigned long long)cum);
    P("# HELP tollgate_store_submissions_total Store submissions completed (committed or rolled back).\n"
      "# TYPE tollgate_store_submissions_total counter\ntollgate_store_submissions_total %llu\n"
      "# HELP tollgate_store_statements_seconds_total Writer time in the batches' statements (BEGIN to COMMIT).\n"
      "# TYPE tollgate_store_statements_seconds_total counter\n"
      "tollgate_store_statements_seconds_total %.6f\n"
      "# HELP tollgate_store_wait_seconds_total Submissions' time from queued to durable, summed.\n"
      "# TYPE tollgate_store_wait_seconds_total counter\ntollgate_store_wait_seconds_total %.6f\n"
      "# HELP tollgate_store_writer_cpu_seconds_total CPU time of the writer thread in batches.\n"
      "# TYPE tollgate_store_writer_cpu_seconds_total counter\n"
      "tollgate_store_writer_cpu_seconds_total %.6f\n"
      "# HELP tollgate_store_folded_charges_total Channel charge submissions written folded (per channel per commit).\n"
      "# TYPE tollgate_store_folded_charges_total counter\ntollgate_store_folded_charges_total %llu\n",
      (unsigned long long)s.submissions, (double)s.batch_ns_total / 1e9, (double)s.wait_ns_total / 1e9,
      (double)s.cpu_ns_total / 1e9, (unsigned long long)s.folded_charges);
  }
  if (ops->txm_pending)
    P("# HELP tollgate_txm_pending Transactions sent and not yet confirmed.\n"
      "# TYPE tollgate_txm_pending gauge\ntollgate_txm_pending %llu\n",
      (unsigned long long)ops->txm_pending(ops->ctx));
  if (ops->rpc_errors)
    P("# HELP tollgate_rpc_errors_total Failed JSON-RPC calls.\n"
      "# TYPE tollgate_rpc_errors_total counter\ntollgate_rpc_errors_total %llu\n",
      (unsigned long long)ops->rpc_errors(ops->ctx));
  if (ops->rpc_calls)
    P("# HELP tollgate_rpc_calls_total JSON-RPC calls (exchanges with a node).\n"
      "# TYPE tollgate_rpc_calls_total counter\ntollgate_rpc_calls_total %llu\n",
      (unsigned long long)ops->rpc_calls(ops->ctx));
  if (ops->last_block)
    P("# HELP tollgate_chain_last_block The newest block number seen.\n"
      "# TYPE tollgate_chain_last_block gauge\ntollgate_chain_last_block %llu\n",
      (unsigned long long)ops->last_block(ops->ctx));
#undef P
  return 0;
}
