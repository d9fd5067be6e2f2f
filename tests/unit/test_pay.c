/* The payment layer on the channel scheme: admission, corrective 402s, charges on disk, refusals. */
#include <event2/event.h>
#include <event2/thread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <sodium.h>

#include "core/config.h"
#include "pay/ledger.h"
#include "pay/pay.h"
#include "store/store.h"
#include "tg_pg.h"
#include "tg_test.h"
#include "tollgate/address.h"
#include "tollgate/channel.h"
#include "tollgate/eip712.h"
#include "tollgate/keccak.h"
#include "tollgate/u256.h"
#include "tollgate/x402.h"

#define CHAIN 31337

static const char conf_text[] =
    "listen 127.0.0.1:1\n"
    "upstream up http://127.0.0.1:9/\n"
    "price call call 0.001\n"
    "price tok token model=* input_per_mtok=1.0 output_per_mtok=2.0 max_per_call=0.5\n"
    "route chat POST /v1/chat/completions upstream=up price=tok\n"
    "route ping GET /v1/ping upstream=up price=call\n"
    "schemes channel exact\n"
    "chain_id 31337\n"
    "rpc_url http://127.0.0.1:8545\n"
    "asset address=0x5FbDB2315678afecb367f032d93F642f64180aa3 name=\"USD Coin\" version=2 decimals=6\n"
    "pay_to 0x70997970C51812dc3A010C7d01b50e0d17dc79C8\n"
    "credit 0x90F79bf6EB2c4f870365E785982E1f101E93b906 0.01\n"
    "keystore /tmp/unused-key.json password_env=TOLLGATE_PASSWORD\n"
    "store sqlite /tmp/unused.db\n";

typedef struct {
  tg_config *cfg;
  tg_store *store;
  tg_ledger *ledger;
  tg_pay *pay;
  struct event_base *base;
  char db[300];
  tg_seckey *payer_key;
  tg_channel_config ch;
  tg_hash channel_id;
  tg_hash domain;
  int chain_calls;
  uint64_t chain_balance;
  int submits;
  int deposits, refunds; /* gasless deposits and refunds sent (the gateway key's transactions) */
  uint64_t payer_token_balance;
  tg_hash wallet_channel_id;
  tg_hash other_channel_id; /* test_non_holder_deposit_refund's channel */
  int erc1271_calls;
  int sync_checks, async_checks; /* exact chain reads through check / check_async */
  int admitted_inline;           /* admissions answered before tg_pay_admit returned */
  int submit_refuse;             /* exact submit returns this error at once */
  int submit_err;                /* exact submit answers this error later, on the loop */
} fixture;

static fixture F;

static int fake_chain(void *ctx, const tg_hash *id, tg_u256 *balance, tg_u256 *claimed,
                      uint64_t *withdraw_at) {
  fixture *f = ctx;
  f->chain_calls++;
  if (memcmp(id->b, f->channel_id.b, 32) != 0 && memcmp(id->b, f->wallet_channel_id.b, 32) != 0 &&
      memcmp(id->b, f->other_channel_id.b, 32) != 0)
    return TG_ECHANNEL_UNKNOWN;
  tg_u256_from_u64(balance, f->chain_balance);
  tg_u256_zero(claimed);
  *withdraw_at = 0;
  return TG_OK;
}

/* A contract wallet (address 0xa11e...) that accepts signatures starting with 0xaa. */
static int fake_erc1271(void *ctx, const tg_address *wallet, const tg_hash *digest, const uint8_t *sig,
                        size_t sig_len, int *valid) {
  (void)digest;
  fixture *f = ctx;
  f->erc1271_calls++;
  *valid = wallet->b[0] == 0xa1 && sig_len > 0 && sig[0] == 0xaa;
  return TG_OK;
}

static int fake_check(void *ctx, const tg_address *token, const tg_address *from,
                      const tg_hash *nonce, tg_u256 *balance, int *used) {
  (void)token;
  (void)from;
  fixture *f = ctx;
  f->sync_checks++;
  tg_u256_from_u64(balance, f->payer_token_balance);
  *used = nonce->b[31] == 0xee; /* a nonce the chain already saw */
  return TG_OK;
}

/* The same answers as fake_check, later, on the caller's loop (as the daemon's chain thread does). */
typedef struct {
  tg_pay_exact_check_cb cb;
  void *arg;
  tg_u256 balance;
  int used;
} pending_check;

static void fire_check(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  pending_check *pc = arg;
  pc->cb(pc->arg, 0, &pc->balance, pc->used);
  free(pc);
}

static int fake_check_async(void *ctx, struct event_base *base, const tg_address *token,
                            const tg_address *from, const tg_hash *nonce, tg_pay_exact_check_cb cb,
                            void *arg) {
  (void)token;
  (void)from;
  fixture *f = ctx;
  f->async_checks++;
  pending_check *pc = calloc(1, sizeof *pc);
  pc->cb = cb;
  pc->arg = arg;
  tg_u256_from_u64(&pc->balance, f->payer_token_balance);
  pc->used = nonce->b[31] == 0xee;
  return event_base_once(base, -1, EV_TIMEOUT, fire_check, pc, NULL) ? TG_EINTERNAL : TG_OK;
}

typedef struct {
  tg_pay_exact_cb cb;
  void *arg;
  int err;
} pending_submit;

static void fire_submit(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  pending_submit *ps = arg;
  tg_hash tx;
  memset(tx.b, 0xab, 32);
  ps->cb(ps->arg, ps->err, ps->err ? NULL : &tx);
  free(ps);
}

static int fake_submit(void *ctx, struct event_base *base, const tg_address *token,
                       const tg_x402_exact *auth, tg_pay_exact_cb cb, void *arg) {
  (void)token;
  (void)auth;
  fixture *f = ctx;
  if (f->submit_refuse) return f->submit_refuse;
  f->submits++;
  pending_submit *ps = calloc(1, sizeof *ps);
  ps->cb = cb;
  ps->arg = arg;
  ps->err = f->submit_err;
  return event_base_once(base, -1, EV_TIMEOUT, fire_submit, ps, NULL) ? TG_EINTERNAL : TG_OK;
}

static int fake_deposit(void *ctx, struct event_base *base, const tg_address *contract,
                        const tg_x402_channel *ch, tg_pay_exact_cb cb, void *arg) {
  (void)contract;
  (void)ch;
  fixture *f = ctx;
  f->deposits++;
  pending_submit *ps = calloc(1, sizeof *ps);
  ps->cb = cb;
  ps->arg = arg;
  return event_base_once(base, -1, EV_TIMEOUT, fire_submit, ps, NULL) ? TG_EINTERNAL : TG_OK;
}

static int fake_refund(void *ctx, struct event_base *base, const tg_address *contract,
                       const tg_channel_config *config, const tg_u256 *amount, tg_pay_exact_cb cb,
                       void *arg) {
  (void)contract;
  (void)config;
  (void)amount;
  fixture *f = ctx;
  f->refunds++;
  pending_submit *ps = calloc(1, sizeof *ps);
  ps->cb = cb;
  ps->arg = arg;
  return event_base_once(base, -1, EV_TIMEOUT, fire_submit, ps, NULL) ? TG_EINTERNAL : TG_OK;
}

static int setup_on(int async_check, const char *uri, const char *instance) {
  memset(&F, 0, sizeof F);
  char err[TG_CONFIG_ERR_MAX];
  int rc = tg_config_parse(&F.cfg, err, "test.conf", conf_text, sizeof conf_text - 1);
  if (rc) {
    printf("config: %s\n", err);
    return rc;
  }
  if (uri)
    snprintf(F.db, sizeof F.db, "%s", uri);
  else
    snprintf(F.db, sizeof F.db, "sqlite:/tmp/tg-test-pay-%d.db", (int)getpid());
  unlink(F.db + 7);
  if ((rc = tg_store_open(&F.store, F.db, NULL))) return rc;
  F.ledger = tg_ledger_new();
  F.base = event_base_new();
  F.payer_key = tg_seckey_new();
  if ((rc = tg_seckey_generate(F.payer_key))) return rc;
  tg_pay_opts o;
  memset(&o, 0, sizeof o);
  o.cfg = F.cfg;
  o.store = F.store;
  o.ledger = F.ledger;
  o.chain = (tg_pay_chain){&F, fake_chain, fake_erc1271};
  o.exact = (tg_pay_exact_backend){.ctx = &F,
                                    .check = fake_check,
                                    .submit = fake_submit,
                                    .deposit = fake_deposit,
                                    .refund = fake_refund,
                                    .check_async = async_check ? fake_check_async : NULL};
  F.payer_token_balance = 10000000;
  o.chain_id = CHAIN;
  o.asset = F.cfg->asset_address;
  o.pay_to = F.cfg->pay_to;
  o.receiver_authorizer.b[19] = 0x77;
  o.channel_contract.b[19] = 0xcc;
  o.withdraw_delay = 3600;
  o.instance = instance;
  if ((rc = tg_pay_new(&F.pay, err, &o))) {
    printf("pay: %s\n", err);
    return rc;
  }
  if ((rc = tg_seckey_address(&F.ch.payer, F.payer_key))) return rc;
  F.ch.receiver = o.pay_to;
  F.ch.receiver_authorizer = o.receiver_authorizer;
  F.ch.token = o.asset;
  F.ch.withdraw_delay = 3600;
  F.ch.salt.b[0] = 1;
  if ((rc = tg_channel_domain(&F.domain, CHAIN, &o.channel_contract))) return rc;
  if ((rc = tg_channel_id(&F.channel_id, &F.domain, &F.ch))) return rc;
  F.chain_balance = 1000000; /* 1 USDC */
  return 0;
}

static int setup(int async_check) { return setup_on(async_check, NULL, NULL); }

static void teardown(void) {
  tg_pay_free(F.pay);
  tg_store_close(F.store);
  tg_ledger_free(F.ledger);
  tg_config_unref(F.cfg);
  tg_seckey_free(F.payer_key);
  event_base_free(F.base);
  if (strncmp(F.db, "sqlite:", 7) != 0) return;
  unlink(F.db + 7);
  char wal[sizeof F.db + 8]; /* F.db + 7: at most 292 bytes */
  snprintf(wal, sizeof wal, "%.292s-wal", F.db + 7);
  unlink(wal);
  snprintf(wal, sizeof wal, "%.292s-shm", F.db + 7);
  unlink(wal);
}

/* A PAYMENT-SIGNATURE for a voucher with ceiling `max`, echoing amount `amount`. */
static char *voucher_header(uint64_t max, uint64_t amount, const tg_seckey *signer,
                            const tg_channel_config *cfg, uint64_t chain) {
  tg_x402_payment p;
  memset(&p, 0, sizeof p);
  p.accepted.scheme = TG_X402_CHANNEL;
  p.accepted.chain_id = chain;
  tg_u256_from_u64(&p.accepted.amount, amount);
  p.accepted.asset = F.cfg->asset_address;
  p.accepted.pay_to = F.cfg->pay_to;
  p.accepted.max_timeout_seconds = 60;
  p.u.channel.type = TG_X402_CHANNEL_VOUCHER;
  p.u.channel.config = *cfg;
  if (tg_channel_id(&p.u.channel.channel_id, &F.domain, cfg)) return NULL;
  tg_u256_from_u64(&p.u.channel.max_claimable, max);
  tg_sig s;
  if (tg_channel_voucher_sign(&s, signer, &F.domain, &p.u.channel.channel_id, &p.u.channel.max_claimable))
    return NULL;
  memcpy(p.u.channel.voucher_signature.b, s.b, 65);
  p.u.channel.voucher_signature.len = 65;
  tg_buf b;
  tg_buf_init(&b, 0);
  if (tg_x402_payment_encode(&b, &p)) return NULL;
  return (char *)tg_buf_steal(&b, NULL);
}

/* A PAYMENT-SIGNATURE for an EIP-3009 authorization of `value` to `to`. */
static char *exact_header(uint64_t value, const tg_address *to, uint64_t after, uint64_t before,
                          uint8_t nonce_tag, const tg_seckey *signer) {
  tg_x402_payment p;
  memset(&p, 0, sizeof p);
  p.accepted.scheme = TG_X402_EXACT;
  p.accepted.chain_id = CHAIN;
  tg_u256_from_u64(&p.accepted.amount, 1000); /* the terms offered for "ping" */
  p.accepted.asset = F.cfg->asset_address;
  p.accepted.pay_to = F.cfg->pay_to;
  p.accepted.max_timeout_seconds = 60;
  tg_x402_exact *a = &p.u.exact;
  if (tg_seckey_address(&a->from, F.payer_key)) return NULL;
  a->to = *to;
  tg_u256_from_u64(&a->value, value);
  a->valid_after = after;
  a->valid_before = before;
  memset(a->nonce.b, nonce_tag, 32);
  tg_eip712_domain td;
  memset(&td, 0, sizeof td);
  td.fields = TG_EIP712_DOMAIN_STANDARD;
  td.name = TG_STR_LIT("USD Coin");
  td.version = TG_STR_LIT("2");
  tg_u256_from_u64(&td.chain_id, CHAIN);
  td.verifying_contract = F.cfg->asset_address;
  tg_hash dom;
  if (tg_eip712_domain_separator(&dom, &td)) return NULL;
  tg_eip3009_authorization ea = {a->from, a->to, a->value, {{0}}, {{0}}, a->nonce};
  tg_u256_from_u64(&ea.valid_after, after);
  tg_u256_from_u64(&ea.valid_before, before);
  tg_sig s;
  if (tg_eip3009_transfer_sign(&s, signer, &dom, &ea)) return NULL;
  memcpy(a->signature.b, s.b, 65);
  a->signature.len = 65;
  tg_buf b;
  tg_buf_init(&b, 0);
  if (tg_x402_payment_encode(&b, &p)) return NULL;
  return (char *)tg_buf_steal(&b, NULL);
}

typedef struct {
  int done, admitted, status;
  char reason[256];
  char required[8192];
  tg_pay_call *call;
  int charged;
  tg_u256 amount;
  char response[2048];
  char trailer[512];
  int err;
} result;

static void on_admit(void *arg, tg_pay_decision *d) {
  result *r = arg;
  r->done = 1;
  r->admitted = d->admitted;
  r->status = d->status;
  r->call = d->call;
  if (!d->admitted && d->body) {
    json_t *j = json_loads(d->body, 0, NULL);
    const char *e = json_string_value(json_object_get(j, "error"));
    snprintf(r->reason, sizeof r->reason, "%s", e ? e : "");
    json_decref(j);
  }
  for (size_t i = 0; i < d->n_headers; i++)
    if (strcmp(d->headers[i].name, "PAYMENT-REQUIRED") == 0)
      snprintf(r->required, sizeof r->required, "%s", d->headers[i].value);
}

static void on_complete(void *arg, tg_pay_receipt *rc) {
  result *r = arg;
  r->done = 2;
  r->charged = rc->charged;
  r->amount = rc->amount;
  r->err = rc->err;
  for (size_t i = 0; i < rc->n_headers; i++)
    if (strcmp(rc->headers[i].name, "PAYMENT-RESPONSE") == 0)
      snprintf(r->response, sizeof r->response, "%s", rc->headers[i].value);
  if (rc->stream_trailer) snprintf(r->trailer, sizeof r->trailer, "%s", rc->stream_trailer);
}

static void admit(result *r, const char *route, const char *model, const char *header, const char *rid) {
  memset(r, 0, sizeof *r);
  tg_pay_request req = {.request_id = rid, .method = "POST", .path = "/v1/chat/completions",
                        .route = route, .resource_url = "http://127.0.0.1/v1/chat/completions",
                        .model = model, .payment_signature = header};
  const tg_config_price *price = tg_config_price_find(F.cfg, strcmp(route, "ping") ? "tok" : "call");
  tg_pay_admit(F.pay, F.base, &req, price, on_admit, r);
  F.admitted_inline += r->done == 1;
  for (int k = 0; k < 2000 && r->done == 0; k++) event_base_loop(F.base, EVLOOP_NONBLOCK);
  /* a hold in a shared store (PostgreSQL) takes a round trip to the server */
  for (int k = 0; k < 5000 && r->done == 0; k++) {
    usleep(1000);
    event_base_loop(F.base, EVLOOP_NONBLOCK);
  }
  CHECK(r->done == 1);
}

/* Runs the loop without blocking: store callbacks arrive from the writer thread. */
static void pump(void) {
  event_base_loop(F.base, EVLOOP_NONBLOCK);
  usleep(1000);
}

static void complete(result *r, int ok, int streamed, uint64_t in, uint64_t out) {
  tg_pay_outcome o = {.ok = ok, .status = ok ? 200 : 500, .streamed = streamed,
                      .input_tokens = in, .output_tokens = out, .usage_known = 1};
  tg_pay_complete(F.pay, F.base, r->call, &o, on_complete, r);
  for (int i = 0; i < 5000 && r->done != 2; i++) pump();
  CHECK(r->done == 2);
}

static uint64_t channel_charged_on_disk(void) {
  tg_store_channel *c = malloc(sizeof *c);
  uint64_t v = UINT64_MAX;
  if (tg_store_channel_get(F.store, &F.channel_id, c) == 0 && tg_u256_to_u64(&c->charged, &v) != 0)
    v = UINT64_MAX;
  free(c);
  return v;
}

static void test_unpaid_gets_402(void) {
  result r;
  admit(&r, "chat", "gpt-test", NULL, "r-unpaid");
  CHECK_INT(r.status, 402);
  CHECK(!r.admitted);
  tg_x402_required_info info;
  CHECK_OK(tg_x402_required_decode(&info, r.required, strlen(r.required)));
  CHECK_INT(info.n_accepts, 2);
  CHECK_INT(info.accepts[0].scheme, TG_X402_CHANNEL);
  CHECK_INT(info.accepts[1].scheme, TG_X402_EXACT);
  CHECK_STR(info.accepts[1].token_name, "USD Coin");
  uint64_t amt = 0;
  CHECK_OK(tg_u256_to_u64(&info.accepts[0].amount, &amt));
  CHECK_INT(amt, 500000); /* max=0.5 with 6 decimals */
  CHECK_INT(info.accepts[0].withdraw_delay, 3600);
  CHECK_INT(info.accepts[0].channel_contract.b[19], 0xcc);
  CHECK(info.payment_id_supported);
}

static void test_voucher_paid_and_charged_on_disk(void) {
  char *h = voucher_header(600000, 500000, F.payer_key, &F.ch, CHAIN);
  result r;
  admit(&r, "chat", "gpt-test", h, "r-1");
  CHECK(r.admitted);
  CHECK_INT(F.chain_calls, 1); /* the channel was read from the chain once */
  complete(&r, 1, 0, 1000, 500);  /* 1000*1 + 500*2 = 2000 per million tokens... */
  CHECK(r.charged);
  uint64_t amt = 0;
  CHECK_OK(tg_u256_to_u64(&r.amount, &amt));
  /* input 1.0 and output 2.0 per million tokens in asset units = 1e6 and 2e6 base units. */
  CHECK_INT(amt, (1000ull * 1000000 + 500ull * 2000000 + 999999) / 1000000);
  CHECK_INT(channel_charged_on_disk(), amt);
  tg_x402_settle_response sr;
  char why[64];
  CHECK_OK(tg_x402_settle_response_decode(&sr, why, sizeof why, r.response, strlen(r.response)));
  CHECK(sr.success && sr.has_charged && sr.has_channel);
  CHECK(tg_u256_cmp(&sr.charged, &r.amount) == 0);
  CHECK(memcmp(sr.payer.b, F.ch.payer.b, 20) == 0);
  /* The same voucher again: it still covers a second call (ceilings are signed ahead). */
  admit(&r, "chat", "gpt-test", h, "r-2");
  CHECK(r.admitted);
  complete(&r, 1, 1, 10, 10); /* streamed */
  CHECK(r.charged);
  CHECK(strstr(r.trailer, ": x402-charge {\"chargedAmount\":\"30\"") != NULL);
  CHECK_INT(channel_charged_on_disk(), amt + 30);
  CHECK_INT(F.chain_calls, 1);
  free(h);
}

static void test_failed_call_costs_nothing(void) {
  uint64_t before = channel_charged_on_disk();
  char *h = voucher_header(600000, 500000, F.payer_key, &F.ch, CHAIN);
  result r;
  admit(&r, "chat", "gpt-test", h, "r-fail");
  CHECK(r.admitted);
  complete(&r, 0, 0, 1000, 1000);
  CHECK(!r.charged);
  CHECK_INT(channel_charged_on_disk(), before);
  tg_ledger_channel lc;
  CHECK_OK(tg_ledger_get(F.ledger, &F.channel_id, &lc));
  CHECK(tg_u256_is_zero(&lc.reserved));
  free(h);
}

static void test_short_voucher_gets_corrective_402(void) {
  /* Charged so far: 2030 under a ceiling of 600000. One call in flight holds 500000, so a
   * second one does not fit; a lower voucher (400000) changes nothing: the higher stands. */
  char *h = voucher_header(400000, 500000, F.payer_key, &F.ch, CHAIN);
  result first, r;
  admit(&first, "chat", "gpt-test", h, "r-hold");
  CHECK(first.admitted);
  admit(&r, "chat", "gpt-test", h, "r-short");
  CHECK_INT(r.status, 402);
  CHECK_STR(r.reason, "invalid_batch_settlement_evm_cumulative_amount_mismatch");
  json_t *j = NULL;
  tg_buf raw;
  tg_buf_init(&raw, 0);
  CHECK_OK(tg_base64_decode(&raw, r.required, strlen(r.required)));
  j = json_loads((const char *)raw.data, 0, NULL);
  json_t *extra = json_object_get(json_array_get(json_object_get(j, "accepts"), 0), "extra");
  json_t *cs = json_object_get(extra, "channelState");
  CHECK_STR(json_string_value(json_object_get(cs, "chargedCumulativeAmount")), "2030");
  json_t *vs = json_object_get(extra, "voucherState");
  CHECK_STR(json_string_value(json_object_get(vs, "signedMaxClaimable")), "600000");
  json_decref(j);
  tg_buf_cleanup(&raw);
  complete(&first, 0, 0, 0, 0); /* released: the next call fits again */
  admit(&r, "chat", "gpt-test", h, "r-after");
  CHECK(r.admitted);
  complete(&r, 0, 0, 0, 0);
  free(h);
}

static void test_refusals(void) {
  result r;
  /* Signed by another key. */
  tg_seckey *other = tg_seckey_new();
  CHECK_OK(tg_seckey_generate(other));
  char *h = voucher_header(600000, 500000, other, &F.ch, CHAIN);
  admit(&r, "chat", "m", h, "r-forged");
  CHECK_INT(r.status, 402);
  CHECK_STR(r.reason, "invalid_batch_settlement_evm_voucher_signature");
  free(h);
  /* Another chain in the echoed terms. */
  h = voucher_header(600000, 500000, F.payer_key, &F.ch, 1);
  admit(&r, "chat", "m", h, "r-chain");
  CHECK_INT(r.status, 402);
  CHECK_STR(r.reason, "invalid_network");
  free(h);
  /* Underpaying: the echoed amount is below the route's maximum. */
  h = voucher_header(600000, 499999, F.payer_key, &F.ch, CHAIN);
  admit(&r, "chat", "m", h, "r-under");
  CHECK_INT(r.status, 402);
  CHECK_STR(r.reason, "invalid_payment_requirements");
  free(h);
  /* A channel for another receiver. */
  tg_channel_config c2 = F.ch;
  c2.receiver.b[0] ^= 1;
  h = voucher_header(600000, 500000, F.payer_key, &c2, CHAIN);
  admit(&r, "chat", "m", h, "r-recv");
  CHECK_STR(r.reason, "invalid_batch_settlement_evm_receiver_mismatch");
  free(h);
  /* An unknown channel (no balance on-chain). */
  tg_channel_config c3 = F.ch;
  c3.salt.b[1] = 9;
  h = voucher_header(600000, 500000, F.payer_key, &c3, CHAIN);
  admit(&r, "chat", "m", h, "r-unknown");
  CHECK_STR(r.reason, "invalid_batch_settlement_evm_channel_not_found");
  free(h);
  /* Malformed header. */
  admit(&r, "chat", "m", "not base64!", "r-garbage");
  CHECK_INT(r.status, 400);
  CHECK_STR(r.reason, "invalid_payload");
  tg_seckey_free(other);
}

/* 64 calls admitted at once on one channel, completed in any order: exact totals. */
static void test_many_in_flight(void) {
  uint64_t before = channel_charged_on_disk();
  char *h = voucher_header(1000000, 1000, F.payer_key, &F.ch, CHAIN);
  enum { N = 64 };
  static result rs[N];
  char rid[32];
  for (int i = 0; i < N; i++) {
    snprintf(rid, sizeof rid, "r-par-%d", i);
    admit(&rs[i], "ping", NULL, h, rid);
    CHECK(rs[i].admitted);
  }
  for (int i = N - 1; i >= 0; i--) {
    tg_pay_outcome o = {.ok = (i % 8) != 0, .status = 200};
    tg_pay_complete(F.pay, F.base, rs[i].call, &o, on_complete, &rs[i]);
  }
  for (int k = 0; k < 5000; k++) {
    int pending = 0;
    for (int i = 0; i < N; i++) pending += rs[i].done != 2;
    if (!pending) break;
    pump();
  }
  int charged = 0;
  for (int i = 0; i < N; i++) charged += rs[i].charged;
  CHECK_INT(charged, N - N / 8);
  CHECK_INT(channel_charged_on_disk(), before + 1000ull * (N - N / 8));
  free(h);
}

static void test_exact(void) {
  uint64_t now = (uint64_t)time(NULL);
  const tg_address *to = &F.cfg->pay_to;
  char *h = exact_header(1000, to, now - 10, now + 120, 0x11, F.payer_key);
  result r, r2;
  admit(&r, "ping", NULL, h, "x-1");
  CHECK(r.admitted);
  admit(&r2, "ping", NULL, h, "x-1b"); /* the same authorization while the first is in flight */
  CHECK_INT(r2.status, 409);
  CHECK_STR(r2.reason, "invalid_exact_evm_nonce_already_used");
  complete(&r, 1, 0, 0, 0);
  CHECK(r.charged);
  CHECK_INT(F.submits, 1);
  tg_x402_settle_response sr;
  char why[64];
  CHECK_OK(tg_x402_settle_response_decode(&sr, why, sizeof why, r.response, strlen(r.response)));
  CHECK(sr.has_transaction && sr.transaction.b[0] == 0xab);
  tg_store_exact ex;
  tg_hash nonce;
  memset(nonce.b, 0x11, 32);
  CHECK_OK(tg_store_exact_get(F.store, &F.cfg->asset_address, &F.ch.payer, &nonce, &ex));
  CHECK_INT(ex.status, TG_EXACT_SUBMITTED);
  CHECK(ex.has_tx && ex.tx_hash.b[31] == 0xab);
  tg_store_charge ch;
  CHECK_OK(tg_store_charge_get(F.store, "x-1", &ch));
  CHECK_INT(ch.scheme, TG_SCHEME_EXACT);
  /* Replayed after it was used. */
  admit(&r, "ping", NULL, h, "x-2");
  CHECK_INT(r.status, 409);
  free(h);

  /* Another instance holds the gateway lease: `exact` is refused before anything is taken,
   * and the same authorization works once this instance submits again. */
  h = exact_header(1000, to, now - 10, now + 120, 0x22, F.payer_key);
  tg_pay_set_exact_owner(F.pay, 0);
  admit(&r, "ping", NULL, h, "x-3e");
  CHECK_INT(r.status, 503);
  CHECK_STR(r.reason, "exact_submitter_elsewhere");
  CHECK_INT(F.submits, 1);
  tg_hash n22;
  memset(n22.b, 0x22, 32);
  CHECK_ERR(tg_store_exact_get(F.store, &F.cfg->asset_address, &F.ch.payer, &n22, &ex), TG_ENOTFOUND);
  tg_pay_set_exact_owner(F.pay, 1);

  /* A failed call submits nothing, and the same authorization works afterwards. */
  admit(&r, "ping", NULL, h, "x-3");
  CHECK(r.admitted);
  complete(&r, 0, 0, 0, 0);
  CHECK(!r.charged);
  CHECK_INT(F.submits, 1);
  admit(&r, "ping", NULL, h, "x-4");
  CHECK(r.admitted);
  complete(&r, 1, 0, 0, 0);
  CHECK(r.charged);
  CHECK_INT(F.submits, 2);
  free(h);

  struct {
    char *h;
    int status;
    const char *reason;
  } bad[8];
  tg_address other = *to;
  other.b[0] ^= 1;
  tg_seckey *forger = tg_seckey_new();
  CHECK_OK(tg_seckey_generate(forger));
  bad[0].h = exact_header(999, to, now - 10, now + 120, 0x31, F.payer_key);
  bad[0].reason = "invalid_exact_evm_payload_authorization_value_mismatch";
  bad[1].h = exact_header(1000, &other, now - 10, now + 120, 0x32, F.payer_key);
  bad[1].reason = "invalid_exact_evm_payload_recipient_mismatch";
  bad[2].h = exact_header(1000, to, now + 60, now + 120, 0x33, F.payer_key);
  bad[2].reason = "invalid_exact_evm_payload_authorization_valid_after";
  bad[3].h = exact_header(1000, to, now - 100, now - 1, 0x34, F.payer_key);
  bad[3].reason = "invalid_exact_evm_payload_authorization_valid_before";
  bad[4].h = exact_header(1000, to, now - 10, now + 120, 0x35, forger);
  bad[4].reason = "invalid_exact_evm_payload_signature";
  bad[5].h = exact_header(1000, to, now - 10, now + 120, 0xee, F.payer_key);
  bad[5].reason = "invalid_exact_evm_nonce_already_used";
  for (int i = 0; i < 6; i++) {
    admit(&r, "ping", NULL, bad[i].h, "x-bad");
    CHECK(!r.admitted);
    CHECKF(strcmp(r.reason, bad[i].reason) == 0, "case %d: %s, want %s", i, r.reason, bad[i].reason);
    free(bad[i].h);
  }
  F.payer_token_balance = 999;
  h = exact_header(1000, to, now - 10, now + 120, 0x36, F.payer_key);
  admit(&r, "ping", NULL, h, "x-poor");
  CHECK_STR(r.reason, "insufficient_funds");
  free(h);
  F.payer_token_balance = 10000000;
  CHECK_INT(F.submits, 2);
  tg_seckey_free(forger);
}

static uint64_t exact_pending(void) {
  tg_u256 v;
  uint64_t n = UINT64_MAX;
  tg_pay_exact_pending(F.pay, &F.ch.payer, &v);
  if (tg_u256_to_u64(&v, &n)) n = UINT64_MAX;
  return n;
}

/*
 * A payer whose balance covers two and a half calls: its admitted transfers still in flight
 * count against the balance; each path that ends one (the call failed, the submission was
 * refused or failed, the transaction manager's outcome) gives its value back, once.
 */
static void test_exact_pending(void) {
  teardown(); /* a fresh payment layer: the earlier tests' transfers never got an outcome */
  if (setup(1) != 0) {
    CHECK(!"setup");
    return;
  }
  uint64_t now = (uint64_t)time(NULL);
  const tg_address *to = &F.cfg->pay_to;
  F.payer_token_balance = 2500;
  char *h1 = exact_header(1000, to, now - 10, now + 120, 0x61, F.payer_key);
  char *h2 = exact_header(1000, to, now - 10, now + 120, 0x62, F.payer_key);
  char *h3 = exact_header(1000, to, now - 10, now + 120, 0x63, F.payer_key);
  char *h4 = exact_header(1000, to, now - 10, now + 120, 0x64, F.payer_key);
  result r1, r2, r3, r4;
  int submits = F.submits;
  admit(&r1, "ping", NULL, h1, "p-1");
  admit(&r2, "ping", NULL, h2, "p-2");
  CHECK(r1.admitted && r2.admitted);
  CHECK_INT(exact_pending(), 2000);
  admit(&r3, "ping", NULL, h3, "p-3"); /* 2500 - 2000 < 1000 */
  CHECK(!r3.admitted);
  CHECK_INT(r3.status, 402);
  CHECK_STR(r3.reason, "insufficient_funds");
  CHECK_INT(exact_pending(), 2000);
  /* the call failed before its transfer was submitted: its value is free again */
  complete(&r2, 0, 0, 0, 0);
  CHECK(!r2.charged);
  CHECK_INT(exact_pending(), 1000);
  /* answered and submitted: the transfer is in flight until its outcome is known */
  complete(&r1, 1, 0, 0, 0);
  CHECK(r1.charged);
  CHECK_INT(F.submits, submits + 1);
  CHECK_INT(exact_pending(), 1000);
  admit(&r3, "ping", NULL, h3, "p-3b"); /* 2500 - 1000 >= 1000 */
  CHECK(r3.admitted);
  admit(&r4, "ping", NULL, h4, "p-4"); /* 2500 - 2000 < 1000 */
  CHECK_STR(r4.reason, "insufficient_funds");
  /* the transaction manager's outcome of the first transfer (the balance now shows it) */
  tg_hash n1;
  memset(n1.b, 0x61, 32);
  tg_pay_exact_done(F.pay, &F.ch.payer, &n1);
  tg_pay_exact_done(F.pay, &F.ch.payer, &n1); /* twice: nothing more */
  CHECK_INT(exact_pending(), 1000);
  F.payer_token_balance = 1500;
  /* the submission refused at once: nothing moved, the value is free, nothing charged */
  F.submit_refuse = TG_ETXM_CLOSED;
  complete(&r3, 1, 0, 0, 0);
  CHECK(!r3.charged);
  CHECK_INT(exact_pending(), 0);
  F.submit_refuse = 0;
  /* the submission failed later (the node refused it, or it reverted) */
  admit(&r4, "ping", NULL, h4, "p-4b");
  CHECK(r4.admitted);
  CHECK_INT(exact_pending(), 1000);
  F.submit_err = TG_ETXM_FAILED;
  complete(&r4, 1, 0, 0, 0);
  CHECK(!r4.charged);
  CHECK_INT(exact_pending(), 0);
  F.submit_err = 0;
  /* the same authorization again after its failure: admitted and paid */
  admit(&r4, "ping", NULL, h4, "p-4c");
  CHECK(r4.admitted);
  complete(&r4, 1, 0, 0, 0);
  CHECK(r4.charged);
  CHECK_INT(exact_pending(), 1000);
  tg_hash n4;
  memset(n4.b, 0x64, 32);
  tg_pay_exact_done(F.pay, &F.ch.payer, &n4);
  CHECK_INT(exact_pending(), 0);
  F.payer_token_balance = 10000000;
  free(h1);
  free(h2);
  free(h3);
  free(h4);
}

/* A voucher header with given signature bytes (a contract wallet's multisig signature). */
static char *raw_voucher_header(uint64_t max, const tg_channel_config *cfg, const uint8_t *sig, size_t n) {
  tg_x402_payment p;
  memset(&p, 0, sizeof p);
  p.accepted.scheme = TG_X402_CHANNEL;
  p.accepted.chain_id = CHAIN;
  tg_u256_from_u64(&p.accepted.amount, 1000);
  p.accepted.asset = F.cfg->asset_address;
  p.accepted.pay_to = F.cfg->pay_to;
  p.accepted.max_timeout_seconds = 60;
  p.u.channel.type = TG_X402_CHANNEL_VOUCHER;
  p.u.channel.config = *cfg;
  if (tg_channel_id(&p.u.channel.channel_id, &F.domain, cfg)) return NULL;
  tg_u256_from_u64(&p.u.channel.max_claimable, max);
  memcpy(p.u.channel.voucher_signature.b, sig, n);
  p.u.channel.voucher_signature.len = n;
  tg_buf b;
  tg_buf_init(&b, 0);
  if (tg_x402_payment_encode(&b, &p)) return NULL;
  return (char *)tg_buf_steal(&b, NULL);
}

/* An organisation's contract wallet pays through a channel: its vouchers are checked with
 * ERC-1271 once per ceiling, and a signature it does not accept is refused. */
static void test_contract_wallet_voucher(void) {
  tg_channel_config w = F.ch;
  memset(w.payer.b, 0, 20);
  w.payer.b[0] = 0xa1;
  memset(w.payer_authorizer.b, 0, 20); /* the payer itself signs: ERC-1271 */
  w.salt.b[0] = 0x77;
  CHECK_OK(tg_channel_id(&F.wallet_channel_id, &F.domain, &w));
  uint8_t sig[130];
  memset(sig, 0xaa, sizeof sig);
  char *h = raw_voucher_header(100000, &w, sig, sizeof sig);
  result r;
  int before = F.erc1271_calls;
  admit(&r, "ping", NULL, h, "w-1");
  CHECK(r.admitted);
  complete(&r, 1, 0, 0, 0);
  CHECK(r.charged);
  CHECK_INT(F.erc1271_calls, before + 1);
  admit(&r, "ping", NULL, h, "w-2"); /* the same ceiling: no second on-chain check */
  CHECK(r.admitted);
  complete(&r, 1, 0, 0, 0);
  CHECK_INT(F.erc1271_calls, before + 1);
  free(h);
  memset(sig, 0xbb, sizeof sig); /* a signature the wallet does not accept */
  h = raw_voucher_header(200000, &w, sig, sizeof sig);
  admit(&r, "ping", NULL, h, "w-3");
  CHECK(!r.admitted);
  CHECK_STR(r.reason, "invalid_batch_settlement_evm_voucher_signature");
  free(h);
  /* With a payer authorizer set, only that key's ECDSA signature counts: no ERC-1271. */
  tg_channel_config a = w;
  a.payer_authorizer.b[19] = 5;
  memset(sig, 0xaa, sizeof sig);
  h = raw_voucher_header(100000, &a, sig, sizeof sig);
  int calls = F.erc1271_calls;
  admit(&r, "ping", NULL, h, "w-4");
  CHECK(!r.admitted);
  CHECK_INT(F.erc1271_calls, calls);
  free(h);
}

/*
 * A voucher header seen before is recognised by its bytes (no decode, no recovery), and
 * everything else is still checked: one flipped signature byte is a different header and is
 * refused; the cached header on a route it does not pay enough for is refused; on a channel in
 * withdrawal it is refused; a contract wallet's (ERC-1271) header is never kept.
 */
static void test_voucher_header_cache(void) {
  tg_u256 max;
  tg_u256_from_u64(&max, 900000);
  tg_sig sig;
  CHECK_OK(tg_channel_voucher_sign(&sig, F.payer_key, &F.domain, &F.channel_id, &max));
  char *h = raw_voucher_header(900000, &F.ch, sig.b, 65);
  tg_pay_stats s0, s1;
  tg_pay_stats_get(F.pay, &s0);
  result r;
  admit(&r, "ping", NULL, h, "vc-1");
  CHECK(r.admitted);
  complete(&r, 1, 0, 0, 0);
  CHECK(r.charged);
  for (int i = 0; i < 3; i++) {
    char rid[16];
    snprintf(rid, sizeof rid, "vc-again-%d", i);
    admit(&r, "ping", NULL, h, rid);
    CHECK(r.admitted);
    complete(&r, 1, 0, 0, 0);
    CHECK(r.charged);
  }
  tg_pay_stats_get(F.pay, &s1);
  CHECK_INT(s1.voucher_cache_hits - s0.voucher_cache_hits, 3);
  /* One signature byte changed: not the cached header, and not a valid signature. */
  sig.b[7] ^= 1;
  char *forged = raw_voucher_header(900000, &F.ch, sig.b, 65);
  admit(&r, "ping", NULL, forged, "vc-forged");
  CHECK_INT(r.status, 402);
  CHECK_STR(r.reason, "invalid_batch_settlement_evm_voucher_signature");
  free(forged);
  /* The cached header echoes terms for "ping" (1000): not enough for "chat" (500000). */
  admit(&r, "chat", "gpt-test", h, "vc-terms");
  CHECK_INT(r.status, 402);
  CHECK_STR(r.reason, "invalid_payment_requirements");
  /* The channel in withdrawal: the cached header is refused like any other. */
  tg_ledger_channel lc;
  CHECK_OK(tg_ledger_get(F.ledger, &F.channel_id, &lc));
  CHECK_OK(tg_ledger_mirror(F.ledger, &F.channel_id, &lc.balance, &lc.total_claimed, 1767225600));
  admit(&r, "ping", NULL, h, "vc-withdrawing");
  CHECK_INT(r.status, 402);
  CHECK_STR(r.reason, "invalid_batch_settlement_evm_channel_withdrawing");
  CHECK_OK(tg_ledger_mirror(F.ledger, &F.channel_id, &lc.balance, &lc.total_claimed, 0));
  tg_pay_stats_get(F.pay, &s0);
  CHECK_INT(s0.voucher_cache_hits - s1.voucher_cache_hits, 2); /* the terms and withdrawal cases */
  free(h);
  /* A contract wallet's voucher (ERC-1271): asked on-chain, never recognised by its bytes. */
  tg_channel_config w = F.ch;
  memset(w.payer.b, 0, 20);
  w.payer.b[0] = 0xa1;
  memset(w.payer_authorizer.b, 0, 20);
  w.salt.b[0] = 0x77;
  uint8_t wsig[65];
  memset(wsig, 0xaa, sizeof wsig);
  char *wh = raw_voucher_header(300000, &w, wsig, sizeof wsig);
  tg_pay_stats_get(F.pay, &s0);
  for (int i = 0; i < 2; i++) {
    char rid[16];
    snprintf(rid, sizeof rid, "vc-wallet-%d", i);
    admit(&r, "ping", NULL, wh, rid);
    CHECK(r.admitted);
    complete(&r, 1, 0, 0, 0);
  }
  tg_pay_stats_get(F.pay, &s1);
  CHECK_INT(s1.voucher_cache_hits, s0.voucher_cache_hits);
  free(wh);
}

/* `exact` admission with the chain read made asynchronously (the daemon's check_async): the
 * same outcomes, and no read blocks the caller. */
static void test_exact_async_check(void) {
  teardown();
  if (setup(1) != 0) {
    CHECK(!"setup");
    return;
  }
  test_exact();
  CHECK(F.async_checks >= 5);
  CHECK_INT(F.sync_checks, 0);
  /* The decision comes from the loop, after tg_pay_admit returned. */
  uint64_t now = (uint64_t)time(NULL);
  char *h = exact_header(1000, &F.cfg->pay_to, now - 10, now + 120, 0x51, F.payer_key);
  result r;
  memset(&r, 0, sizeof r);
  tg_pay_request req = {.request_id = "x-async", .method = "POST", .path = "/v1/chat/completions",
                        .route = "ping", .resource_url = "http://127.0.0.1/v1/chat/completions",
                        .payment_signature = h};
  tg_pay_admit(F.pay, F.base, &req, tg_config_price_find(F.cfg, "call"), on_admit, &r);
  CHECK_INT(r.done, 0);
  for (int k = 0; k < 2000 && r.done == 0; k++) event_base_loop(F.base, EVLOOP_NONBLOCK);
  CHECK(r.done == 1 && r.admitted);
  complete(&r, 1, 0, 0, 0);
  CHECK(r.charged);
  free(h);
}

/* A channel-scheme PAYMENT-SIGNATURE of another type than a plain voucher: a gasless deposit
 * (a ReceiveWithAuthorization of `deposit` to the channel contract, signed by the payer) or a
 * refund request; both carry a voucher with ceiling `max`, which authenticates the payer. */
static char *channel_payload(tg_x402_channel_type type, const tg_channel_config *cfg, uint64_t max,
                             uint64_t deposit) {
  tg_x402_payment p;
  memset(&p, 0, sizeof p);
  p.accepted.scheme = TG_X402_CHANNEL;
  p.accepted.chain_id = CHAIN;
  tg_u256_from_u64(&p.accepted.amount, 1000);
  p.accepted.asset = F.cfg->asset_address;
  p.accepted.pay_to = F.cfg->pay_to;
  p.accepted.max_timeout_seconds = 60;
  tg_x402_channel *c = &p.u.channel;
  c->type = type;
  c->config = *cfg;
  if (tg_channel_id(&c->channel_id, &F.domain, cfg)) return NULL;
  tg_u256_from_u64(&c->max_claimable, max);
  tg_sig s;
  if (tg_channel_voucher_sign(&s, F.payer_key, &F.domain, &c->channel_id, &c->max_claimable))
    return NULL;
  memcpy(c->voucher_signature.b, s.b, 65);
  c->voucher_signature.len = 65;
  if (type == TG_X402_CHANNEL_DEPOSIT) {
    uint64_t now = (uint64_t)time(NULL);
    c->has_deposit = 1;
    tg_u256_from_u64(&c->deposit_amount, deposit);
    c->deposit_valid_after = now - 10;
    c->deposit_valid_before = now + 3600;
    tg_eip712_domain td;
    memset(&td, 0, sizeof td);
    td.fields = TG_EIP712_DOMAIN_STANDARD;
    td.name = TG_STR_LIT("USD Coin");
    td.version = TG_STR_LIT("2");
    tg_u256_from_u64(&td.chain_id, CHAIN);
    td.verifying_contract = F.cfg->asset_address;
    tg_hash dom;
    if (tg_eip712_domain_separator(&dom, &td)) return NULL;
    tg_eip3009_authorization ea;
    memset(&ea, 0, sizeof ea);
    ea.from = cfg->payer;
    ea.to.b[19] = 0xcc; /* the fixture's channel contract */
    ea.value = c->deposit_amount;
    tg_u256_from_u64(&ea.valid_after, c->deposit_valid_after);
    tg_u256_from_u64(&ea.valid_before, c->deposit_valid_before);
    /* The token's nonce is keccak(channel id, salt); fake_check calls a nonce ending in 0xee
     * used: pick a salt whose nonce does not. */
    for (uint8_t k = 1;; k++) {
      uint8_t b[64];
      memset(c->deposit_nonce.b, k, 32);
      memcpy(b, c->channel_id.b, 32);
      memcpy(b + 32, c->deposit_nonce.b, 32);
      tg_keccak256(&ea.nonce, b, sizeof b);
      if (ea.nonce.b[31] != 0xee) break;
    }
    if (tg_eip3009_receive_sign(&s, F.payer_key, &dom, &ea)) return NULL;
    memcpy(c->deposit_signature.b, s.b, 65);
    c->deposit_signature.len = 65;
  }
  tg_buf b;
  tg_buf_init(&b, 0);
  if (tg_x402_payment_encode(&b, &p)) return NULL;
  return (char *)tg_buf_steal(&b, NULL);
}

typedef struct {
  int done, status;
  char body[1024];
} refund_result;

static void on_refund(void *arg, int status, const char *body) {
  refund_result *r = arg;
  r->done = 1;
  r->status = status;
  snprintf(r->body, sizeof r->body, "%s", body);
}

static void refund(refund_result *r, const char *header) {
  memset(r, 0, sizeof *r);
  tg_pay_refund(F.pay, F.base, header, on_refund, r);
  for (int k = 0; k < 5000 && !r->done; k++) pump();
  CHECK(r->done);
}

/* Deposits and refunds are transactions from the gateway key: an instance that does not hold
 * the gateway lease (several instances on PostgreSQL, docs/STORE.md) refuses both with 503
 * before sending or reserving anything; the holder sends them. */
static void test_non_holder_deposit_refund(void) {
  tg_channel_config d = F.ch;
  d.salt.b[0] = 0x55;
  CHECK_OK(tg_channel_id(&F.other_channel_id, &F.domain, &d));
  uint64_t balance = F.chain_balance;
  char *dep = channel_payload(TG_X402_CHANNEL_DEPOSIT, &d, 100000, 500000);
  char *ref = channel_payload(TG_X402_CHANNEL_REFUND, &d, 100000, 0);
  CHECK(dep != NULL && ref != NULL);
  int deposits = F.deposits, refunds = F.refunds;

  tg_pay_set_exact_owner(F.pay, 0);
  result r;
  admit(&r, "ping", NULL, dep, "nh-dep-1");
  CHECK(!r.admitted);
  CHECK_INT(r.status, 503);
  CHECK_STR(r.reason, "deposit_submitter_elsewhere");
  CHECK_INT(F.deposits, deposits);
  refund_result rr;
  refund(&rr, ref);
  CHECK_INT(rr.status, 503);
  CHECK(strstr(rr.body, "refund_submitter_elsewhere") != NULL);
  CHECK_INT(F.refunds, refunds);
  tg_store_charge ch;
  CHECK_ERR(tg_store_charge_get(F.store, "nh-dep-1", &ch), TG_ENOTFOUND);

  /* The holder: the same deposit is sent and the call it pays for is served and charged; the
   * refund is sent too. */
  tg_pay_set_exact_owner(F.pay, 1);
  admit(&r, "ping", NULL, dep, "nh-dep-2");
  CHECK(r.admitted);
  CHECK_INT(F.deposits, deposits + 1);
  complete(&r, 1, 0, 0, 0);
  CHECK(r.charged);
  CHECK_OK(tg_store_charge_get(F.store, "nh-dep-2", &ch));
  refund(&rr, ref);
  CHECK_INT(rr.status, 200);
  CHECK_INT(F.refunds, refunds + 1);
  F.chain_balance = balance;
  free(dep);
  free(ref);
}

/* ---- headroom leases on PostgreSQL (docs/STORE.md) --------------------------------- */

static uint64_t store_rts(void) {
  tg_store_stats s;
  tg_store_get_stats(F.store, &s);
  return s.round_trips;
}

/* reservations rows and channels.reserved (low 64 bits) of the database at `uri` */
static int pg_holds(const char *uri, const char *where, long long *rows, long long *reserved) {
  char q[512];
  snprintf(q, sizeof q,
           "SELECT (SELECT count(*) FROM reservations %s), (SELECT ('x' || "
           "encode(substring(reserved from 25 for 8), 'hex'))::bit(64)::bigint FROM channels "
           "LIMIT 1)",
           where ? where : "");
  *rows = *reserved = -1;
  PGconn *c = PQconnectdb(uri);
  int rc = -1;
  if (PQstatus(c) == CONNECTION_OK) {
    PGresult *r = PQexec(c, q);
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
      *rows = atoll(PQgetvalue(r, 0, 0));
      *reserved = atoll(PQgetvalue(r, 0, 1));
      rc = 0;
    } else {
      printf("    pg_holds: %s\n", PQresultErrorMessage(r));
    }
    PQclear(r);
  }
  PQfinish(c);
  return rc;
}

/*
 * A lone caller on one instance: after the first call (a hold of its own, then the first
 * slice with its charge), every paid call costs exactly ONE store round trip: admission on a
 * unit of the lease (none), the charge (one; the next slice rides in the same batch). The
 * store's charged total and holds agree with the calls and the unused units. A withdrawal
 * seen by a charge stops admissions on units (the next call is refused), and a graceful stop
 * gives the units back.
 */
static tgt_pg *pg;

static void test_pg_headroom_lone_caller(void) {
  char uri[256];
  if (tgt_pg_newdb(pg, uri, sizeof uri) != 0) {
    CHECKF(0, "cannot create a database");
    return;
  }
  if (setup_on(0, uri, "gw-pay") != 0) {
    CHECKF(0, "setup on PostgreSQL");
    return;
  }
  tg_store_op alive;
  memset(&alive, 0, sizeof alive);
  alive.kind = TG_STORE_OP_LEASE_ACQUIRE;
  alive.u.lease.name = "instance:gw-pay";
  alive.u.lease.holder = "gw-pay";
  alive.u.lease.ttl_ms = 600000;
  CHECK_OK(tg_store_write(F.store, &alive, 1));
  char *h = voucher_header(600000, 1000, F.payer_key, &F.ch, CHAIN);
  result r;
  const int calls = 60;
  int one_rt = 0;
  for (int i = 0; i < calls; i++) {
    char rid[32];
    snprintf(rid, sizeof rid, "hr-call-%03d", i);
    uint64_t r0 = store_rts();
    admit(&r, "ping", NULL, h, rid);
    CHECK(r.admitted);
    if (!r.admitted) break;
    complete(&r, 1, 0, 0, 0);
    CHECK(r.charged);
    uint64_t d = store_rts() - r0;
    if (i >= 2) {
      CHECKF(d == 1, "call %d: %llu round trips", i, (unsigned long long)d);
      one_rt += d == 1;
    }
  }
  CHECK_INT(one_rt, calls - 2);
  tg_pay_stats ps;
  tg_pay_stats_get(F.pay, &ps);
  CHECK_INT(ps.headroom_admitted, calls - 1); /* all but the first call */
  CHECK(ps.headroom_slices >= 2);
  CHECK_INT(ps.headroom_slices_refused, 0);
  CHECK_INT(channel_charged_on_disk(), (uint64_t)calls * 1000);
  /* the store holds exactly the unused units: rows and the running total agree */
  long long rows = -1, reserved = -1;
  CHECK_OK(pg_holds(uri, NULL, &rows, &reserved));
  CHECK(rows > 0);
  CHECK_INT(reserved, rows * 1000);
  tg_pay_stats_get(F.pay, &ps);
  CHECK_INT(ps.headroom_units_free, rows);
  CHECK_OK(pg_holds(uri, "WHERE instance <> 'gw-pay' OR amount <> "
                         "decode(lpad(to_hex(1000), 64, '0'), 'hex')", &rows, &reserved));
  CHECK_INT(rows, 0);
  /* The payer asks to withdraw; the chain follower's sync reaches the store. The next call
   * may still be admitted on a unit (taken before), but its charge sees the withdrawal: the
   * lease is dropped and given back, and the call after is refused. */
  tg_store_op sync;
  memset(&sync, 0, sizeof sync);
  sync.kind = TG_STORE_OP_CHANNEL_SYNC;
  sync.u.channel.id = F.channel_id;
  tg_u256_from_u64(&sync.u.channel.chain.balance, F.chain_balance);
  sync.u.channel.chain.withdraw_requested_at = 1700000000;
  sync.u.channel.chain.status = TG_CHANNEL_WITHDRAWING;
  sync.u.channel.chain.synced_block = 1000000;
  CHECK_OK(tg_store_write(F.store, &sync, 1));
  admit(&r, "ping", NULL, h, "hr-after-withdraw-1");
  if (r.admitted) complete(&r, 1, 0, 0, 0);
  for (int i = 0; i < 200; i++) {
    pump();
    if (pg_holds(uri, NULL, &rows, &reserved) == 0 && rows == 0) break;
  }
  CHECK_INT(rows, 0);
  CHECK_INT(reserved, 0);
  tg_pay_stats_get(F.pay, &ps);
  CHECK_INT(ps.headroom_dropped, 1);
  CHECK_INT(ps.headroom_units_free, 0);
  admit(&r, "ping", NULL, h, "hr-after-withdraw-2");
  CHECK(!r.admitted);
  CHECK_INT(r.status, 402);
  CHECK_STR(r.reason, "invalid_batch_settlement_evm_channel_withdrawing");
  free(h);
  teardown();
}

/* A graceful stop gives the unused units back: no hold is left in the store. */
static void test_pg_headroom_stop(void) {
  char uri[256];
  if (tgt_pg_newdb(pg, uri, sizeof uri) != 0 || setup_on(0, uri, "gw-stop") != 0) {
    CHECKF(0, "setup on PostgreSQL");
    return;
  }
  char *h = voucher_header(600000, 1000, F.payer_key, &F.ch, CHAIN);
  result r;
  for (int i = 0; i < 5; i++) {
    char rid[32];
    snprintf(rid, sizeof rid, "hs-call-%d", i);
    admit(&r, "ping", NULL, h, rid);
    CHECK(r.admitted);
    if (r.admitted) complete(&r, 1, 0, 0, 0);
  }
  /* a call that fails upstream puts its unit back: nothing charged for it */
  admit(&r, "ping", NULL, h, "hs-fails");
  CHECK(r.admitted);
  if (r.admitted) complete(&r, 0, 0, 0, 0);
  long long rows = -1, reserved = -1;
  CHECK_OK(pg_holds(uri, NULL, &rows, &reserved));
  CHECK(rows >= 2);
  CHECK_INT(reserved, rows * 1000);
  CHECK_INT(channel_charged_on_disk(), 5000);
  tg_pay_free(F.pay);
  F.pay = NULL;
  CHECK_OK(pg_holds(uri, NULL, &rows, &reserved));
  CHECK_INT(rows, 0);
  CHECK_INT(reserved, 0);
  free(h);
  teardown();
}

int main(void) {
  if (sodium_init() < 0 || evthread_use_pthreads() != 0) return 1;
  if (setup(0) != 0) {
    printf("FAIL setup\n");
    return 1;
  }
  RUN(test_unpaid_gets_402);
  RUN(test_voucher_paid_and_charged_on_disk);
  RUN(test_failed_call_costs_nothing);
  RUN(test_short_voucher_gets_corrective_402);
  RUN(test_refusals);
  RUN(test_many_in_flight);
  RUN(test_exact);
  RUN(test_contract_wallet_voucher);
  RUN(test_voucher_header_cache);
  RUN(test_exact_async_check);
  RUN(test_exact_pending);
  RUN(test_non_holder_deposit_refund);
  teardown();
  char why[512];
  pg = tgt_pg_start(why, sizeof why);
  if (pg) {
    RUN(test_pg_headroom_lone_caller);
    RUN(test_pg_headroom_stop);
    tgt_pg_stop(pg);
  } else {
    printf("SKIP headroom leases on PostgreSQL: %s\n", why);
  }
  return tgt_done();
}
