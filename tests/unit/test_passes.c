/* The pass layer against a real SQLite store and a scripted contract: cache, invalidation, expiry, quotas, overage. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>
#include <sodium.h>

#include "core/config.h"
#include "pay/passes.h"
#include "store/store.h"
#include "tg_test.h"
#include "tollgate/address.h"
#include "tollgate/keccak.h"
#include "tollgate/u256.h"

static char tmpdir[64];

/* ---- a scripted TollgatePasses.entitled() ------------------------------------------------------ */

typedef struct {
  int ok;
  uint64_t until;
  tg_address holder;
  int reads;
  tg_passes *invalidate_during; /* a log seen while the read is in flight */
  int fail;                     /* the node cannot answer */
} fake_chain;

static int fake_entitled(void *ctx, const tg_address *user, const tg_u256 *plan, int *ok,
                         uint64_t *until, tg_address *holder) {
  (void)user;
  (void)plan;
  fake_chain *f = ctx;
  f->reads++;
  if (f->fail) return TG_ERPC_TRANSPORT;
  if (f->invalidate_during) tg_passes_invalidate(f->invalidate_during);
  *ok = f->ok;
  *until = f->until;
  *holder = f->holder;
  return TG_OK;
}

static tg_address addr(uint8_t b) {
  tg_address a;
  memset(a.b, b, 20);
  return a;
}

/* The plans of the tests; plan "big" (leased) with the quota given. */
static tg_config *config_q(unsigned big_quota) {
  char text[2048];
  snprintf(text, sizeof text, "%splan big id=10 routes=d quota=%u unit=calls period=1h\n",
      "schemes channel\nchain_id 31337\nrpc_url http://127.0.0.1:1\n"
      "pay_to 0x70997970C51812dc3A010C7d01b50e0d17dc79C8\n"
      "asset decimals=6 address=0x036CbD53842c5426634e7929541eC2318f3dCF7e\n"
      "keystore /k.json password_file=/p\nstore sqlite /x.db\n"
      "upstream u http://127.0.0.1:9\nprice p call 0.001\n"
      "route a GET /a upstream=u price=p\nroute b GET /b upstream=u price=p\n"
      "route c GET /c upstream=u price=p\nroute d GET /d upstream=u price=p\n"
      "plan two id=7 routes=a quota=2 unit=calls period=1h\n"
      "plan credit id=8 routes=b quota=1 unit=calls period=1h overage=0.0025\n"
      "plan tok id=9 routes=c quota=100 unit=tokens period=1h\n", big_quota);
  tg_config *c = NULL;
  char err[TG_CONFIG_ERR_MAX];
  int rc = tg_config_parse(&c, err, "t.conf", text, strlen(text));
  CHECKF(rc == 0, "%s", err);
  return c;
}

static tg_config *config(void) { return config_q(1000); }

typedef struct {
  tg_store *st;
  tg_config *cfg;
  fake_chain f;
  tg_passes *p;
} fixture;

static int seq;

static int setup(fixture *x) {
  memset(x, 0, sizeof *x);
  char uri[128];
  snprintf(uri, sizeof uri, "sqlite:%s/p%d.db", tmpdir, ++seq);
  if (tg_store_open(&x->st, uri, NULL) != 0 || !(x->cfg = config())) {
    tgt_fail_at(__FILE__, __LINE__, "fixture");
    return -1;
  }
  x->f.ok = 1;
  x->f.until = (uint64_t)time(NULL) + 3600;
  x->f.holder = addr(0xa1);
  tg_passes_opts o = {.store = x->st, .chain = {&x->f, fake_entitled, NULL}, .chain_id = 31337};
  CHECK_OK(tg_passes_new(&x->p, &o));
  return x->p ? 0 : -1;
}

static void teardown(fixture *x) {
  tg_passes_free(x->p);
  tg_store_close(x->st);
  tg_config_unref(x->cfg);
}

static int admit(fixture *x, const char *route, tg_passes_grant *g) {
  tg_address who = addr(0xa1);
  tg_u256 max;
  tg_u256_from_u64(&max, 1000);
  char why[512];
  return tg_passes_admit(x->p, x->cfg, route, NULL, &who, &max, g, why, sizeof why);
}

/* ---- tests ----------------------------------------------------------------------------------- */

static void test_cache_and_invalidation(void) {
  fixture x;
  if (setup(&x)) return;
  tg_passes_grant g;
  CHECK_OK(admit(&x, "a", &g));
  tg_passes_release(x.p, &g);
  CHECK_OK(admit(&x, "a", &g));
  tg_passes_release(x.p, &g);
  CHECK_INT(x.f.reads, 1); /* one eth_call, then the cache */
  CHECK_INT(g.until, x.f.until);
  tg_passes_invalidate(x.p); /* the pass contract logged something */
  x.f.ok = 0;                /* e.g. the pass was transferred away */
  CHECK_ERR(admit(&x, "a", &g), TG_EPASS_NOT_ENTITLED);
  CHECK_INT(x.f.reads, 2);
  CHECK_ERR(admit(&x, "a", &g), TG_EPASS_NOT_ENTITLED); /* refusals are cached too */
  CHECK_INT(x.f.reads, 2);
  tg_passes_invalidate(x.p); /* bought again */
  x.f.ok = 1;
  CHECK_OK(admit(&x, "a", &g));
  tg_passes_release(x.p, &g);
  CHECK_INT(x.f.reads, 3);
  /* a route no plan covers is not the pass layer's */
  CHECK_ERR(admit(&x, "nope", &g), TG_ENOTFOUND);
  /* the node failing is an error, not a refusal */
  tg_passes_invalidate(x.p);
  x.f.fail = 1;
  CHECK_ERR(admit(&x, "a", &g), TG_ERPC_TRANSPORT);
  tg_passes_stats s;
  tg_passes_stats_get(x.p, &s);
  CHECK_INT(s.invalidations, 3);
  CHECK_INT(s.refused_not_entitled, 2);
  teardown(&x);
}

/* A log seen while entitled() is being read: that answer must not be trusted afterwards. */
static void test_read_racing_a_log(void) {
  fixture x;
  if (setup(&x)) return;
  tg_passes_grant g;
  x.f.invalidate_during = x.p;
  CHECK_OK(admit(&x, "a", &g)); /* this call uses the answer it read */
  tg_passes_release(x.p, &g);
  x.f.invalidate_during = NULL;
  x.f.ok = 0;
  CHECK_ERR(admit(&x, "a", &g), TG_EPASS_NOT_ENTITLED); /* read again, not served stale */
  CHECK_INT(x.f.reads, 2);
  teardown(&x);
}

/* The entitlement's end by the chain's clock: read again (a renewal continues, a lapse refuses). */
static void test_expiry_by_chain_time(void) {
  fixture x;
  if (setup(&x)) return;
  uint64_t now = (uint64_t)time(NULL);
  x.f.until = now + 100;
  tg_passes_grant g;
  CHECK_OK(admit(&x, "a", &g));
  tg_passes_release(x.p, &g);
  tg_passes_chain_time(x.p, now + 150); /* the chain's head is past the cached end */
  x.f.until = now + 3700;               /* renewed before it ended */
  CHECK_OK(admit(&x, "a", &g));
  CHECK_INT(g.until, now + 3700);
  tg_passes_release(x.p, &g);
  CHECK_INT(x.f.reads, 2);
  tg_passes_chain_time(x.p, now + 3800);
  x.f.ok = 0; /* lapsed */
  CHECK_ERR(admit(&x, "a", &g), TG_EPASS_NOT_ENTITLED);
  CHECK_INT(x.f.reads, 3);
  teardown(&x);
}

/* A calls quota reserves at admission: concurrent calls cannot pass it; a failed call counts nothing. */
static void test_calls_quota(void) {
  fixture x;
  if (setup(&x)) return;
  tg_passes_grant g1, g2, g3;
  CHECK_OK(admit(&x, "a", &g1));
  CHECK_OK(admit(&x, "a", &g2));
  CHECK_ERR(admit(&x, "a", &g3), TG_EPASS_QUOTA); /* two in flight fill the quota of 2 */
  tg_passes_release(x.p, &g1);                     /* one failed upstream */
  CHECK_OK(admit(&x, "a", &g3));
  tg_passes_done(x.p, &g2, 1, 0, NULL);
  tg_passes_done(x.p, &g3, 2, 0, NULL);
  CHECK_ERR(admit(&x, "a", &g1), TG_EPASS_QUOTA);
  tg_passes_stats s;
  tg_passes_stats_get(x.p, &s);
  CHECK_INT(s.admitted_included, 3);
  CHECK_INT(s.refused_quota, 2);
  teardown(&x);
}

static uint64_t stored_calls(fixture *x, uint64_t plan, uint64_t *tokens) {
  tg_u256 id;
  tg_u256_from_u64(&id, plan);
  tg_address h = addr(0xa1);
  int64_t now = (int64_t)time(NULL) * 1000;
  tg_store_pass_usage u;
  if (tg_store_pass_usage_get(x->st, &id, &h, now / 3600000 * 3600000, &u) != 0) return 0;
  if (tokens) *tokens = u.tokens;
  return u.calls;
}

static void wait_leases(fixture *x, uint64_t n) {
  tg_passes_stats s;
  for (int i = 0; i < 1000; i++) {
    tg_passes_stats_get(x->p, &s);
    if (s.leases + s.lease_failures >= n) return;
    usleep(1000);
  }
}

static int used_calls(void *arg, const tg_u256 *plan, const tg_address *holder, int64_t period,
                      uint64_t calls, uint64_t tokens, uint64_t inflight) {
  (void)holder, (void)period, (void)tokens, (void)inflight;
  uint64_t id;
  if (tg_u256_to_u64(plan, &id) == 0 && id == 10) *(uint64_t *)arg = calls;
  return 0;
}

/* What the pay layer does for a call admitted without a lease: one PASS_USE, then done. */
static void complete_unleased(fixture *x, const tg_passes_grant *g, uint64_t tokens) {
  tg_store_op op;
  memset(&op, 0, sizeof op);
  op.kind = TG_STORE_OP_PASS_USE;
  op.u.pass.pass_id = g->plan_id;
  op.u.pass.holder = g->holder;
  op.u.pass.period_start = g->period_start;
  op.u.pass.calls = 1;
  op.u.pass.tokens = tokens;
  CHECK_OK(tg_store_write(x->st, &op, 1));
  tg_passes_done(x->p, g, op.u.pass.out_calls, op.u.pass.out_tokens, NULL);
}

/*
 * Quota leases (plan "big": 1000 calls, blocks of 10): the first call is written call by call
 * and asks for a lease; once it is durable, calls are admitted on it with no write; a failed
 * one goes back to it; the next block is written when half is used; the quota is never passed
 * (leases are cut to what is left); a graceful stop gives the unused part back, so the
 * store's counter is then exact.
 */
static void test_leases(void) {
  fixture x;
  if (setup(&x)) return;
  tg_passes_grant g0, g;
  CHECK_OK(admit(&x, "d", &g0));
  CHECK(!g0.leased && g0.calls_held); /* no lease yet: this one is written at completion */
  wait_leases(&x, 1);
  CHECK_INT(stored_calls(&x, 10, NULL), 10); /* the lease is on disk before any call uses it */
  complete_unleased(&x, &g0, 5);
  CHECK_OK(admit(&x, "d", &g));
  CHECK(g.leased && !g.calls_held);
  tg_passes_release(x.p, &g);                /* failed upstream: back to the lease */
  uint64_t used = 0;
  tg_passes_usage_each(x.p, used_calls, &used);
  CHECK_INT(used, 1);
  for (int i = 0; i < 5; i++) {            /* 5 of 10 used: the next block is asked for */
    CHECK_OK(admit(&x, "d", &g));
    CHECK(g.leased);
    tg_passes_done_leased(x.p, &g, 3);
  }
  wait_leases(&x, 2);
  CHECK_INT(stored_calls(&x, 10, NULL), 21);
  tg_passes_usage_each(x.p, used_calls, &used);
  CHECK_INT(used, 6);
  tg_passes_return_leases(x.p);
  uint64_t tokens = 0;
  CHECK_INT(stored_calls(&x, 10, &tokens), 6); /* exact after a graceful stop */
  CHECK_INT(tokens, 5 + 15);
  tg_passes_usage_each(x.p, used_calls, &used);
  CHECK_INT(used, 6);
  /* near the quota: leases are cut to what is left, and the quota holds */
  tg_store_op op;
  memset(&op, 0, sizeof op);
  op.kind = TG_STORE_OP_PASS_USE;
  tg_u256_from_u64(&op.u.pass.pass_id, 10);
  op.u.pass.holder = addr(0xa1);
  op.u.pass.period_start = (int64_t)time(NULL) * 1000 / 3600000 * 3600000;
  op.u.pass.calls = 990;
  CHECK_OK(tg_store_write(x.st, &op, 1));
  tg_passes_free(x.p); /* a restart reads 996 */
  tg_passes_opts o = {.store = x.st, .chain = {&x.f, fake_entitled, NULL}, .chain_id = 31337};
  CHECK_OK(tg_passes_new(&x.p, &o));
  CHECK_INT(stored_calls(&x, 10, NULL), 996);
  int admitted = 0;
  tg_passes_grant gs[8];
  for (int i = 0; i < 8; i++) {
    if (admit(&x, "d", &gs[i]) == 0) {
      admitted++;
      if (gs[i].calls_held) complete_unleased(&x, &gs[i], 0);
    }
    wait_leases(&x, 1);
  }
  CHECK_INT(admitted, 4);
  CHECK(stored_calls(&x, 10, NULL) <= 1000);
  teardown(&x);
}

/* A reload that lowers the quota below what a lease holds: the lease's room is not used past it. */
static void test_lease_after_reload(void) {
  fixture x;
  if (setup(&x)) return;
  tg_passes_grant g;
  CHECK_OK(admit(&x, "d", &g));
  complete_unleased(&x, &g, 0);
  wait_leases(&x, 1);
  for (int i = 0; i < 3; i++) { /* 4 calls used, 7 of the lease of 10 left */
    CHECK_OK(admit(&x, "d", &g));
    CHECK(g.leased);
    tg_passes_done_leased(x.p, &g, 0);
  }
  tg_config *low = config_q(5);
  tg_address who = addr(0xa1);
  tg_u256 max;
  tg_u256_from_u64(&max, 1000);
  char why[512];
  CHECK_OK(tg_passes_admit(x.p, low, "d", NULL, &who, &max, &g, why, sizeof why)); /* the 5th */
  CHECK(g.leased);
  CHECK_ERR(tg_passes_admit(x.p, low, "d", NULL, &who, &max, &g, why, sizeof why), TG_EPASS_QUOTA);
  CHECK_OK(admit(&x, "d", &g)); /* the old quota still has room on the lease */
  CHECK(g.leased);
  tg_config_unref(low);
  teardown(&x);
}

/* Usage is loaded from the store: a restart does not reset a spent quota. */
static void test_usage_from_store(void) {
  fixture x;
  if (setup(&x)) return;
  tg_store_op op;
  memset(&op, 0, sizeof op);
  op.kind = TG_STORE_OP_PASS_USE;
  tg_u256_from_u64(&op.u.pass.pass_id, 7);
  op.u.pass.holder = addr(0xa1);
  int64_t now = (int64_t)time(NULL) * 1000;
  op.u.pass.period_start = now / 3600000 * 3600000;
  op.u.pass.calls = 2;
  CHECK_OK(tg_store_write(x.st, &op, 1));
  tg_passes_grant g;
  CHECK_ERR(admit(&x, "a", &g), TG_EPASS_QUOTA);
  teardown(&x);
}

/* Overage: postpaid up to the plan's credit (what is owed plus reservations), then refused. */
static void test_overage(void) {
  fixture x;
  if (setup(&x)) return;
  tg_passes_grant g0, g1, g2, g3;
  CHECK_OK(admit(&x, "b", &g0)); /* the quota of 1 */
  CHECK(!g0.overage);
  tg_passes_done(x.p, &g0, 1, 0, NULL);
  CHECK_OK(admit(&x, "b", &g1));
  CHECK(g1.overage);
  CHECK_OK(admit(&x, "b", &g2)); /* 2000 reserved <= 2500 */
  CHECK(g2.overage);
  CHECK_ERR(admit(&x, "b", &g3), TG_EPASS_QUOTA); /* 3000 > 2500 */
  tg_u256 charged;
  tg_u256_from_u64(&charged, 700);
  tg_passes_done(x.p, &g1, 2, 0, &charged); /* priced below its reservation */
  tg_passes_release(x.p, &g2);
  tg_u256 owed, want;
  tg_passes_owed(x.p, &g1.holder, &owed);
  tg_u256_from_u64(&want, 700);
  CHECK(tg_u256_cmp(&owed, &want) == 0);
  CHECK_OK(admit(&x, "b", &g3)); /* 700 + 1000 <= 2500 */
  CHECK(g3.overage && tg_u256_cmp(&g3.owed_before, &want) == 0);
  CHECK_ERR(admit(&x, "b", &g2), TG_EPASS_QUOTA); /* 700 + 1000 + 1000 > 2500 */
  tg_passes_release(x.p, &g3);
  teardown(&x);
}

/* A token quota admits while below the quota; the usage comes from completed calls. */
static void test_tokens_quota(void) {
  fixture x;
  if (setup(&x)) return;
  tg_passes_grant g;
  CHECK_OK(admit(&x, "c", &g));
  tg_passes_done(x.p, &g, 1, 99, NULL);
  CHECK_OK(admit(&x, "c", &g));
  tg_passes_done(x.p, &g, 2, 150, NULL);
  CHECK_ERR(admit(&x, "c", &g), TG_EPASS_QUOTA);
  teardown(&x);
}

typedef struct {
  int *done, *err;
} logout_wait;

static void on_logout_test(void *arg, int err) {
  logout_wait *la = arg;
  *la->done = 1;
  *la->err = err;
}

static void test_identify(void) {
  fixture x;
  if (setup(&x)) return;
  tg_address who;
  char why[512];
  CHECK_ERR(tg_passes_identify(x.p, x.cfg, "h", NULL, NULL, &who, why, sizeof why), TG_ENOTFOUND);
  CHECK_ERR(tg_passes_identify(x.p, x.cfg, "h", "Bearer sk-openai-key", NULL, &who, why, sizeof why), TG_ENOTFOUND);
  CHECK_ERR(tg_passes_identify(x.p, x.cfg, "h", "Basic dXNlcg==", NULL, &who, why, sizeof why), TG_ENOTFOUND);
  CHECK_ERR(tg_passes_identify(x.p, x.cfg, "h", "Bearer tgs_short", NULL, &who, why, sizeof why), TG_ESESSION_INVALID);
  CHECK(strstr(why, "sign in again") != NULL);
  char tok[64];
  snprintf(tok, sizeof tok, "Bearer tgs_%043d", 0);
  CHECK_ERR(tg_passes_identify(x.p, x.cfg, "h", tok, NULL, &who, why, sizeof why), TG_ESESSION_INVALID);
  /* a session recorded in the store (another instance, or before a restart) is found */
  tg_store_op op;
  memset(&op, 0, sizeof op);
  op.kind = TG_STORE_OP_SESSION_PUT;
  tg_keccak256(&op.u.session.token_hash, tok + 7, strlen(tok + 7));
  op.u.session.address = addr(0xb2);
  op.u.session.expires_at = (int64_t)time(NULL) * 1000 + 60000;
  CHECK_OK(tg_store_write(x.st, &op, 1));
  CHECK_OK(tg_passes_identify(x.p, x.cfg, "h", tok, NULL, &who, why, sizeof why));
  tg_address want = addr(0xb2);
  CHECK(tg_address_eq(&who, &want));
  /* logout: the session is deleted from the store and refused at once */
  struct event_base *base = event_base_new();
  int done = 0, lerr = -999;
  logout_wait la = {&done, &lerr};
  tg_passes_logout(x.p, base, tok, on_logout_test, &la);
  for (int i = 0; i < 500 && !done; i++) event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK), usleep(2000);
  CHECK(done);
  CHECK_INT(lerr, 0);
  CHECK_ERR(tg_passes_identify(x.p, x.cfg, "h", tok, NULL, &who, why, sizeof why), TG_ESESSION_INVALID);
  tg_store_session ss;
  CHECK_ERR(tg_store_session_get(x.st, &op.u.session.token_hash, &ss), TG_ENOTFOUND);
  done = 0;
  tg_passes_logout(x.p, base, "Bearer sk-other", on_logout_test, &la);
  CHECK(done && lerr == TG_ESESSION_INVALID);
  event_base_free(base);
  /* agent headers: malformed ones are refused with the reason */
  CHECK_ERR(tg_passes_identify(x.p, x.cfg, "h", NULL, "garbage", &who, why, sizeof why), TG_EPASS_AUTH);
  CHECK(strstr(why, "X-Tollgate-Auth") != NULL);
  CHECK_ERR(tg_passes_identify(x.p, x.cfg, "h", NULL, "aGVsbG8= 0x0102", &who, why, sizeof why), TG_ESIWE_MALFORMED);
  teardown(&x);
}

int main(void) {
  if (sodium_init() < 0 || evthread_use_pthreads() != 0) return 1;
  snprintf(tmpdir, sizeof tmpdir, "/tmp/tg-passes-XXXXXX");
  if (!mkdtemp(tmpdir)) return 1;
  RUN(test_cache_and_invalidation);
  RUN(test_read_racing_a_log);
  RUN(test_expiry_by_chain_time);
  RUN(test_calls_quota);
  RUN(test_usage_from_store);
  RUN(test_leases);
  RUN(test_lease_after_reload);
  RUN(test_overage);
  RUN(test_tokens_quota);
  RUN(test_identify);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
  if (system(cmd) != 0) return 1;
  return tgt_done();
}
