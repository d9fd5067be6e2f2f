/* The x402 facilitator's payment side (tg_pay_fac_verify, tg_pay_fac_settle): reasons, idempotent settlement, failed submissions. */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/config.h"
#include "pay/ledger.h"
#include "pay/pay.h"
#include "store/store.h"
#include "tg_test.h"
#include "tollgate/eip712.h"
#include "tollgate/u256.h"

#define CHAIN 31337

static const char conf_text[] =
    "listen 127.0.0.1:1\n"
    "upstream up http://127.0.0.1:9/\n"
    "price call call 0.001\n"
    "route ping GET /v1/ping upstream=up price=call\n"
    "schemes exact\n"
    "chain_id 31337\n"
    "rpc_url http://127.0.0.1:8545\n"
    "asset address=0x5FbDB2315678afecb367f032d93F642f64180aa3 name=\"USD Coin\" version=2 decimals=6\n"
    "pay_to 0x70997970C51812dc3A010C7d01b50e0d17dc79C8\n"
    "keystore /tmp/unused-key.json password_env=TOLLGATE_PASSWORD\n"
    "store sqlite /tmp/unused.db\n";

static struct {
  tg_config *cfg;
  tg_store *store;
  tg_ledger *ledger;
  tg_pay *pay;
  struct event_base *base;
  char db[200];
  tg_seckey *payer_key, *other_key;
  tg_address other_server; /* the server another x402 server is paid at */
  tg_hash token_domain;
  int submits;
  int fail_submit;
  uint64_t balance;
} F;

static int fake_check(void *ctx, const tg_address *token, const tg_address *from,
                      const tg_hash *nonce, tg_u256 *balance, int *used) {
  (void)ctx;
  (void)token;
  (void)from;
  tg_u256_from_u64(balance, F.balance);
  *used = nonce->b[31] == 0xee; /* a nonce the chain already saw */
  return TG_OK;
}

typedef struct {
  tg_pay_exact_cb cb;
  void *arg;
  int fail;
} pending_submit;

static void fire_submit(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  pending_submit *ps = arg;
  tg_hash tx;
  memset(tx.b, 0xab, 32);
  tx.b[0] = (uint8_t)F.submits;
  if (ps->fail)
    ps->cb(ps->arg, TG_ERPC, NULL);
  else
    ps->cb(ps->arg, 0, &tx);
  free(ps);
}

static int fake_submit(void *ctx, struct event_base *base, const tg_address *token,
                       const tg_x402_exact *auth, tg_pay_exact_cb cb, void *arg) {
  (void)ctx;
  (void)token;
  (void)auth;
  F.submits++;
  pending_submit *ps = malloc(sizeof *ps);
  if (!ps) abort();
  ps->cb = cb;
  ps->arg = arg;
  ps->fail = F.fail_submit;
  return event_base_once(base, -1, EV_TIMEOUT, fire_submit, ps, NULL) ? TG_EINTERNAL : TG_OK;
}

static int setup(void) {
  char err[TG_CONFIG_ERR_MAX];
  int rc = tg_config_parse(&F.cfg, err, "test.conf", conf_text, sizeof conf_text - 1);
  if (rc) {
    printf("config: %s\n", err);
    return rc;
  }
  snprintf(F.db, sizeof F.db, "sqlite:/tmp/tg-test-fac-%d.db", (int)getpid());
  unlink(F.db + 7);
  if ((rc = tg_store_open(&F.store, F.db, NULL))) return rc;
  F.ledger = tg_ledger_new();
  F.base = event_base_new();
  F.payer_key = tg_seckey_new();
  F.other_key = tg_seckey_new();
  if ((rc = tg_seckey_generate(F.payer_key)) || (rc = tg_seckey_generate(F.other_key))) return rc;
  memset(F.other_server.b, 0x42, 20);
  tg_pay_opts o;
  memset(&o, 0, sizeof o);
  o.cfg = F.cfg;
  o.store = F.store;
  o.ledger = F.ledger;
  o.exact = (tg_pay_exact_backend){&F, fake_check, fake_submit};
  o.chain_id = CHAIN;
  o.asset = F.cfg->asset_address;
  o.pay_to = F.cfg->pay_to;
  o.receiver_authorizer.b[19] = 0x77;
  o.channel_contract.b[19] = 0xcc;
  o.withdraw_delay = 3600;
  F.balance = 1000000;
  if ((rc = tg_pay_new(&F.pay, err, &o))) {
    printf("pay: %s\n", err);
    return rc;
  }
  tg_eip712_domain td;
  memset(&td, 0, sizeof td);
  td.fields = TG_EIP712_DOMAIN_STANDARD;
  td.name = TG_STR_LIT("USD Coin");
  td.version = TG_STR_LIT("2");
  tg_u256_from_u64(&td.chain_id, CHAIN);
  td.verifying_contract = F.cfg->asset_address;
  return tg_eip712_domain_separator(&F.token_domain, &td);
}

static void teardown(void) {
  tg_pay_free(F.pay);
  tg_store_close(F.store);
  tg_ledger_free(F.ledger);
  tg_config_unref(F.cfg);
  tg_seckey_free(F.payer_key);
  tg_seckey_free(F.other_key);
  event_base_free(F.base);
  char p[512];
  const char *sfx[3] = {"", "-wal", "-shm"};
  for (int i = 0; i < 3; i++) {
    snprintf(p, sizeof p, "%s%s", F.db + 7, sfx[i]);
    unlink(p);
  }
}

/* An EIP-3009 authorization from the payer to `to`, signed by `signer`. */
static void auth_make(tg_x402_exact *a, uint64_t value, const tg_address *to, uint64_t after,
                      uint64_t before, uint8_t nonce_tag, const tg_seckey *signer) {
  memset(a, 0, sizeof *a);
  CHECK_OK(tg_seckey_address(&a->from, F.payer_key));
  a->to = *to;
  tg_u256_from_u64(&a->value, value);
  a->valid_after = after;
  a->valid_before = before;
  memset(a->nonce.b, nonce_tag, 32);
  tg_eip3009_authorization ea = {a->from, a->to, a->value, {{0}}, {{0}}, a->nonce};
  tg_u256_from_u64(&ea.valid_after, after);
  tg_u256_from_u64(&ea.valid_before, before);
  tg_sig s;
  CHECK_OK(tg_eip3009_transfer_sign(&s, signer, &F.token_domain, &ea));
  memcpy(a->signature.b, s.b, 65);
  a->signature.len = 65;
}

static const char *verify_reason(const tg_x402_exact *a, uint64_t amount) {
  tg_u256 amt;
  tg_u256_from_u64(&amt, amount);
  tg_pay_fac_result r;
  int rc = tg_pay_fac_verify(F.pay, a, &F.other_server, &amt, &r);
  if (rc) return "error";
  if (memcmp(r.payer.b, a->from.b, 20) != 0) return "wrong payer";
  return r.valid ? "valid" : r.reason;
}

typedef struct {
  int done;
  tg_pay_fac_result r;
} settled;

static void on_settled(void *arg, const tg_pay_fac_result *r) {
  settled *s = arg;
  s->done++;
  s->r = *r;
}

static void settle(settled *s, const tg_x402_exact *a, uint64_t amount) {
  memset(s, 0, sizeof *s);
  tg_u256 amt;
  tg_u256_from_u64(&amt, amount);
  tg_pay_fac_settle(F.pay, F.base, a, &F.other_server, &amt, "facilitator-test", on_settled, s);
}

static void pump(settled *s) {
  for (int i = 0; i < 2000 && !s->done; i++) {
    event_base_loop(F.base, EVLOOP_NONBLOCK);
    if (!s->done) usleep(1000);
  }
}

static void test_verify(void) {
  uint64_t now = (uint64_t)time(NULL);
  tg_x402_exact a;
  auth_make(&a, 5000, &F.other_server, 0, now + 600, 0x01, F.payer_key);
  CHECK_STR(verify_reason(&a, 5000), "valid");
  CHECK_STR(verify_reason(&a, 5001), "invalid_exact_evm_payload_authorization_value_mismatch");
  tg_address gw = F.cfg->pay_to;
  auth_make(&a, 5000, &gw, 0, now + 600, 0x02, F.payer_key);
  CHECK_STR(verify_reason(&a, 5000), "invalid_exact_evm_payload_recipient_mismatch");
  auth_make(&a, 5000, &F.other_server, 0, now - 1, 0x03, F.payer_key);
  CHECK_STR(verify_reason(&a, 5000), "invalid_exact_evm_payload_authorization_valid_before");
  auth_make(&a, 5000, &F.other_server, now + 100, now + 600, 0x04, F.payer_key);
  CHECK_STR(verify_reason(&a, 5000), "invalid_exact_evm_payload_authorization_valid_after");
  auth_make(&a, 5000, &F.other_server, 0, now + 600, 0x05, F.other_key);
  CHECK_STR(verify_reason(&a, 5000), "invalid_exact_evm_payload_signature");
  auth_make(&a, 5000, &F.other_server, 0, now + 600, 0xee, F.payer_key);
  CHECK_STR(verify_reason(&a, 5000), "invalid_exact_evm_nonce_already_used");
  F.balance = 4999;
  auth_make(&a, 5000, &F.other_server, 0, now + 600, 0x06, F.payer_key);
  CHECK_STR(verify_reason(&a, 5000), "insufficient_funds");
  F.balance = 1000000;
  CHECK(F.submits == 0);
}

static void test_settle_once(void) {
  uint64_t now = (uint64_t)time(NULL);
  tg_x402_exact a;
  auth_make(&a, 5000, &F.other_server, 0, now + 600, 0x10, F.payer_key);
  int before = F.submits;
  settled s1, s2, s3;
  settle(&s1, &a, 5000);
  settle(&s2, &a, 5000); /* while the first is in flight: refused, nothing sent */
  CHECK(s2.done == 1 && !s2.r.valid);
  CHECK_STR(s2.r.reason, "invalid_exact_evm_nonce_already_used");
  pump(&s1);
  CHECK(s1.done == 1 && s1.r.valid && s1.r.has_tx && !s1.r.duplicate);
  CHECK(F.submits == before + 1);
  tg_store_exact row;
  CHECK_OK(tg_store_exact_get(F.store, &F.cfg->asset_address, &a.from, &a.nonce, &row));
  CHECK(row.status == TG_EXACT_SUBMITTED && row.has_tx && memcmp(row.tx_hash.b, s1.r.tx.b, 32) == 0);
  CHECK(memcmp(row.to.b, F.other_server.b, 20) == 0);
  CHECK_STR(row.request_id, "facilitator-test");
  /* Again: the recorded transaction, nothing sent. */
  settle(&s3, &a, 5000);
  pump(&s3);
  CHECK(s3.done == 1 && s3.r.valid && s3.r.duplicate && memcmp(s3.r.tx.b, s1.r.tx.b, 32) == 0);
  CHECK(F.submits == before + 1);
  CHECK_STR(verify_reason(&a, 5000), "invalid_exact_evm_nonce_already_used");
  /* Nothing was charged: the money is the other server's. */
  tg_store_totals t;
  CHECK_OK(tg_store_totals_get(F.store, &a.from, TG_SCHEME_EXACT, &t));
  CHECK(t.count == 0 && tg_u256_is_zero(&t.charged));
}

static void test_failed_submission_can_retry(void) {
  uint64_t now = (uint64_t)time(NULL);
  tg_x402_exact a;
  auth_make(&a, 7000, &F.other_server, 0, now + 600, 0x20, F.payer_key);
  settled s;
  F.fail_submit = 1;
  settle(&s, &a, 7000);
  pump(&s);
  CHECK(s.done == 1 && !s.r.valid && !s.r.has_tx);
  CHECK_STR(s.r.reason, "unexpected_settle_error");
  tg_store_exact row;
  CHECK_OK(tg_store_exact_get(F.store, &F.cfg->asset_address, &a.from, &a.nonce, &row));
  CHECK(row.status == TG_EXACT_FAILED);
  tg_pay_stats st;
  tg_pay_stats_get(F.pay, &st);
  CHECK(st.chain_submit_errors == 1 && st.chain_check_errors == 0);
  CHECK_STR(verify_reason(&a, 7000), "valid"); /* still the payer's to use */
  F.fail_submit = 0;
  int before = F.submits;
  settle(&s, &a, 7000);
  pump(&s);
  CHECK(s.done == 1 && s.r.valid && s.r.has_tx && !s.r.duplicate);
  CHECK(F.submits == before + 1);
  /* Invalid settlements never reach the chain. */
  tg_x402_exact bad;
  auth_make(&bad, 7000, &F.other_server, 0, now + 600, 0x21, F.other_key);
  settle(&s, &bad, 7000);
  pump(&s);
  CHECK(s.done == 1 && !s.r.valid);
  CHECK_STR(s.r.reason, "invalid_exact_evm_payload_signature");
  CHECK(F.submits == before + 1);
}

/*
 * /verify and /settle count the payer's transfers in flight: with balance for one and a
 * half settlements the second is refused (verify and settle), until the first transfer's
 * outcome is known; a failed submission gives its value back at once.
 */
static void test_settle_counts_pending(void) {
  uint64_t now = (uint64_t)time(NULL);
  tg_x402_exact a, b, c;
  auth_make(&a, 6000, &F.other_server, 0, now + 600, 0x40, F.payer_key);
  auth_make(&b, 6000, &F.other_server, 0, now + 600, 0x41, F.payer_key);
  auth_make(&c, 3000, &F.other_server, 0, now + 600, 0x42, F.payer_key);
  /* the earlier tests' transfers never got an outcome: end them so only these count */
  for (int tag = 0; tag < 256; tag++) {
    tg_hash n;
    memset(n.b, tag, 32);
    tg_pay_exact_done(F.pay, &a.from, &n);
  }
  F.balance = 9000;
  CHECK_STR(verify_reason(&b, 6000), "valid");
  settled s1, s2;
  settle(&s1, &a, 6000);
  pump(&s1);
  CHECK(s1.done == 1 && s1.r.valid && s1.r.has_tx);
  CHECK_STR(verify_reason(&b, 6000), "insufficient_funds"); /* 9000 - 6000 in flight */
  CHECK_STR(verify_reason(&c, 3000), "valid");
  int before = F.submits;
  settle(&s2, &b, 6000);
  pump(&s2);
  CHECK(s2.done == 1 && !s2.r.valid);
  CHECK_STR(s2.r.reason, "insufficient_funds");
  CHECK(F.submits == before);
  tg_store_exact row;
  CHECK_ERR(tg_store_exact_get(F.store, &F.cfg->asset_address, &b.from, &b.nonce, &row), TG_ENOTFOUND);
  /* a failed submission: its value is free again at once */
  F.fail_submit = 1;
  settle(&s2, &c, 3000);
  pump(&s2);
  CHECK(s2.done == 1 && !s2.r.valid);
  F.fail_submit = 0;
  CHECK_STR(verify_reason(&c, 3000), "valid");
  /* the first transfer's outcome is known (the balance read now shows it) */
  tg_pay_exact_done(F.pay, &a.from, &a.nonce);
  F.balance = 3000;
  CHECK_STR(verify_reason(&c, 3000), "valid");
  settle(&s2, &c, 3000);
  pump(&s2);
  CHECK(s2.done == 1 && s2.r.valid && s2.r.has_tx);
  F.balance = 1000000;
}

int main(void) {
  if (setup() != 0) {
    printf("FAIL setup\n");
    return 1;
  }
  RUN(test_verify);
  RUN(test_settle_once);
  RUN(test_failed_submission_can_retry);
  RUN(test_settle_counts_pending);
  teardown();
  return tgt_done();
}
