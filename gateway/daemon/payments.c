/* The daemon's payment wiring: store, ledger, keys, chain and the payment layer behind the HTTP hooks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>
#include <unistd.h>

#include "daemon/payments.h"
#include "tollgate/address.h"
#include "tollgate/deploy.h"
#include "tollgate/address.h"
#include "tollgate/keystore.h"

/* The keystore password from its file (one line) or environment variable, in guarded memory. */
static int read_password(char **out, size_t *len, char *err, const tg_config *cfg) {
  *out = NULL;
  char *pw = sodium_malloc(1024);
  if (!pw) abort();
  size_t n = 0;
  if (cfg->password_kind == TG_SECRET_ENV) {
    const char *v = getenv(cfg->password_src);
    if (!v) {
      snprintf(err, TG_CONFIG_ERR_MAX, "keystore password: environment variable %s is not set",
               cfg->password_src);
      sodium_free(pw);
      return TG_EPASSWORD;
    }
    n = strlen(v);
    if (n >= 1024) n = 1023;
    memcpy(pw, v, n);
  } else {
    FILE *f = fopen(cfg->password_src, "rb");
    if (!f) {
      snprintf(err, TG_CONFIG_ERR_MAX, "keystore password file %s cannot be read", cfg->password_src);
      sodium_free(pw);
      return TG_EPASSWORD;
    }
    n = fread(pw, 1, 1023, f);
    fclose(f);
    while (n > 0 && (pw[n - 1] == '\n' || pw[n - 1] == '\r')) n--;
  }
  pw[n] = 0;
  *out = pw;
  *len = n;
  return TG_OK;
}

static void on_withdraw(void *arg, const tg_hash *channel) {
  tg_scheduler_trigger(arg, channel);
}

int tg_payments_store_uri(char *out, size_t cap, const tg_config *cfg) {
  int n = cfg->store_kind == TG_STORE_POSTGRES ? snprintf(out, cap, "%s", cfg->store_conninfo)
                                               : snprintf(out, cap, "sqlite:%s", cfg->store_conninfo);
  return n < 0 || (size_t)n >= cap ? TG_ETOOBIG : TG_OK;
}

void tg_payments_store_label(char *out, size_t cap, const tg_config *cfg) {
  if (cfg->store_kind != TG_STORE_POSTGRES) {
    snprintf(out, cap, "sqlite %s", cfg->store_conninfo);
    return;
  }
  /* postgres://user:password@host/db: keep the scheme and what follows the '@' */
  const char *u = cfg->store_conninfo, *at = strrchr(u, '@'), *sl = strstr(u, "://");
  if (at && sl && at > sl) snprintf(out, cap, "postgres %.*s***@%s", (int)(sl + 3 - u), u, at + 1);
  else snprintf(out, cap, "postgres %s", u);
}

/* A local journal path: beside the SQLite file, or in the instance's state_dir. */
static void journal_path(char *out, size_t cap, const tg_config *cfg, const char *suffix) {
  if (cfg->store_kind == TG_STORE_POSTGRES)
    snprintf(out, cap, "%s/tollgated%s", cfg->store_state_dir, suffix);
  else
    snprintf(out, cap, "%s%s", cfg->store_conninfo, suffix);
}

static int may_run(void *arg) { return tg_cluster_leader(arg); }

/*
 * The last guard of one sender per account: `exact` and deposit submissions
 * go through only while this instance holds the gateway lease (the pay layer
 * already refuses them up front on the other instances; this catches a lease
 * lost in between, e.g. while the database did not answer).
 */
static int guarded_submit(void *ctx, struct event_base *base, const tg_address *token,
                          const tg_x402_exact *auth, tg_pay_exact_cb cb, void *arg) {
  tg_payments *p = ctx;
  if (p->cluster && !tg_cluster_leader(p->cluster)) return TG_EPAY_ELSEWHERE;
  return p->exact.submit(p->exact.ctx, base, token, auth, cb, arg);
}

static int guarded_deposit(void *ctx, struct event_base *base, const tg_address *contract,
                           const tg_x402_channel *ch, tg_pay_exact_cb cb, void *arg) {
  tg_payments *p = ctx;
  if (p->cluster && !tg_cluster_leader(p->cluster)) return TG_EPAY_ELSEWHERE;
  return p->exact.deposit(p->exact.ctx, base, contract, ch, cb, arg);
}

static int guarded_refund(void *ctx, struct event_base *base, const tg_address *contract,
                          const tg_channel_config *config, const tg_u256 *amount,
                          tg_pay_exact_cb cb, void *arg) {
  tg_payments *p = ctx;
  if (p->cluster && !tg_cluster_leader(p->cluster)) return TG_EPAY_ELSEWHERE;
  return p->exact.refund(p->exact.ctx, base, contract, config, amount, cb, arg);
}

/* Reads need no lease: every instance may check an authorization. */
static int guarded_check(void *ctx, const tg_address *token, const tg_address *from,
                         const tg_hash *nonce, tg_u256 *balance, int *used) {
  tg_payments *p = ctx;
  return p->exact.check(p->exact.ctx, token, from, nonce, balance, used);
}

static int guarded_check_async(void *ctx, struct event_base *base, const tg_address *token,
                               const tg_address *from, const tg_hash *nonce,
                               tg_pay_exact_check_cb cb, void *arg) {
  tg_payments *p = ctx;
  return p->exact.check_async(p->exact.ctx, base, token, from, nonce, cb, arg);
}

static void on_leader(void *arg, int leader) {
  tg_payments *p = arg;
  if (p->pay) tg_pay_set_exact_owner(p->pay, leader);
  if (leader && p->sched) tg_scheduler_trigger(p->sched, NULL);
}

/* On the chain thread: an `exact` transfer's outcome ends its payer's pending value. */
static void exact_done(void *arg, const tg_address *from, const tg_hash *nonce) {
  tg_pay_exact_done(arg, from, nonce);
}

/* Set before the server starts, so workers only ever read it. */
static void on_charged(void *arg, const tg_hash *channel, const tg_u256 *charged,
                       const tg_u256 *claimed, const tg_u256 *balance) {
  tg_payments *p = arg;
  tg_scheduler_charged(p->sched, channel, charged, claimed, balance);
}

/*
 * The settlement scheduler and watchtower (docs/SETTLEMENT.md). Its claims and sweeps go
 * through the chain thread's transaction manager, the one `exact` transfers use: one key,
 * one nonce sequence, one journal (<store>.txm).
 */
static int start_scheduler(tg_payments *p, char *err, const tg_config *cfg, const tg_deployment *dep) {
  char legacy[4300], shared[4300];
  journal_path(legacy, sizeof legacy, cfg, ".settle.txm");
  journal_path(shared, sizeof shared, cfg, ".txm");
  FILE *lf = fopen(legacy, "rb");
  if (lf) {
    fclose(lf);
    tg_log("WARNING: %s (the settlement journal of an earlier version) is no longer used: "
           "settlement now shares %s; with tollgated stopped, run `tollgate settle --journal "
           "%s` once to finish what it holds, then remove it", legacy, shared, legacy);
  }
  tg_scheduler_opts so;
  memset(&so, 0, sizeof so);
  so.store = p->store;
  so.key = p->key;
  so.deployment = dep;
  so.rpc_urls = (const char *const *)cfg->rpc_urls;
  so.n_rpc_urls = cfg->n_rpc_urls;
  so.chain_id = cfg->chain_id;
  so.sender = tg_chain_settle_sender(p->chain);
  so.interval_s = cfg->settle_interval_s;
  so.min_amount = cfg->settle_min_amount;
  so.max_age_s = cfg->settle_max_age_s;
  so.max_gas_price = cfg->settle_max_gas_price_wei;
  if (p->cluster) {
    so.may_run = may_run;
    so.may_run_arg = p->cluster;
  }
  so.margin_s = cfg->settle_margin_s;
  so.alert_after = cfg->settle_alert_after;
  int rc = tg_scheduler_start(&p->sched, err, TG_CONFIG_ERR_MAX, &so);
  if (rc) return rc;
  tg_chain_on_withdraw(p->chain, on_withdraw, p->sched);
  return TG_OK;
}

/* The chain follower's hooks for access passes (follower thread). */
static void pass_changed(void *arg) { tg_passes_invalidate(arg); }
static void pass_time(void *arg, uint64_t unix_s) { tg_passes_chain_time(arg, unix_s); }

int tg_payments_start(tg_payments *p, char *err, tg_config *cfg) {
  memset(p, 0, sizeof *p);
  int rc;
  tg_deployment dep;
  memset(&dep, 0, sizeof dep);
  if (cfg->deployment) {
    rc = tg_deployment_load(&dep, cfg->deployment);
    if (rc) {
      snprintf(err, TG_CONFIG_ERR_MAX, "deployment file %s: %s", cfg->deployment, tg_strerror(rc));
      return rc;
    }
    if (dep.chain_id != cfg->chain_id) {
      snprintf(err, TG_CONFIG_ERR_MAX, "deployment file %s is for chain %llu, configuration says %llu",
               cfg->deployment, (unsigned long long)dep.chain_id, (unsigned long long)cfg->chain_id);
      return TG_ERANGE;
    }
  } else if (cfg->scheme_channel || !cfg->has_asset_address) {
    snprintf(err, TG_CONFIG_ERR_MAX, "missing `deployment`: the channel contract and the asset come from it");
    return TG_EINVAL;
  }
  char uri[4200], label[256];
  tg_payments_store_label(label, sizeof label, cfg);
  if ((rc = tg_payments_store_uri(uri, sizeof uri, cfg))) {
    snprintf(err, TG_CONFIG_ERR_MAX, "store %.200s: too long", label);
    goto fail;
  }
  /* A new database gets the schema; an older one waits for `tollgated --migrate` (one
   * operator step for all instances, docs/OPERATIONS.md). */
  tg_store_options sopts;
  memset(&sopts, 0, sizeof sopts);
  sopts.no_migrate = 1;
  sopts.init_empty = 1;
  rc = tg_store_open(&p->store, uri, &sopts);
  if (rc) {
    snprintf(err, TG_CONFIG_ERR_MAX, "store %.200s: %s", label, tg_strerror(rc));
    goto fail;
  }
  char *pw;
  size_t pwlen;
  if ((rc = read_password(&pw, &pwlen, err, cfg))) goto fail;
  p->key = tg_seckey_new();
  tg_keystore_limits lim;
  tg_keystore_limits_default(&lim);
  rc = tg_keystore_decrypt_file(p->key, cfg->keystore, pw, pwlen, &lim);
  sodium_free(pw);
  if (rc) {
    snprintf(err, TG_CONFIG_ERR_MAX, "keystore %s: %s", cfg->keystore, tg_strerror(rc));
    goto fail;
  }
  tg_address gateway;
  if ((rc = tg_seckey_address(&gateway, p->key))) goto fail;
  tg_chain_opts co;
  memset(&co, 0, sizeof co);
  co.rpc_urls = (const char *const *)cfg->rpc_urls;
  co.n_rpc_urls = cfg->n_rpc_urls;
  co.chain_id = cfg->chain_id;
  co.key = p->key;
  char journal[4300];
  journal_path(journal, sizeof journal, cfg, ".txm");
  co.journal_path = journal;
  co.channels = dep.c[TG_CONTRACT_CHANNELS].address;
  /* The pass contract is watched whenever the deployment has one, so that a reload can add
   * the first `plan` (the follower itself starts with the first plan). */
  int have_passes = cfg->deployment && !tg_address_is_zero(&dep.c[TG_CONTRACT_PASSES].address);
  if (have_passes) co.passes = dep.c[TG_CONTRACT_PASSES].address;
  co.wait_receipt = cfg->exact_wait == TG_EXACT_WAIT_RECEIPT;
  rc = tg_chain_new(&p->chain, err, TG_CONFIG_ERR_MAX, &co);
  if (rc) goto fail;
  if ((rc = tg_chain_record_exact(p->chain, p->store))) {
    snprintf(err, TG_CONFIG_ERR_MAX, "exact outcome writer: %s", tg_strerror(rc));
    goto fail;
  }
  p->ledger = tg_ledger_new();
  if (cfg->n_plans && !have_passes) {
    snprintf(err, TG_CONFIG_ERR_MAX, "`plan` needs `deployment` naming a TollgatePasses contract "
             "(the deployment file of `tollgate deploy`)");
    rc = TG_EINVAL;
    goto fail;
  }
  if (have_passes) {
    tg_passes_opts pso;
    memset(&pso, 0, sizeof pso);
    pso.store = p->store;
    pso.chain = (tg_passes_chain){p->chain, tg_chain_pass_entitled, tg_chain_erc1271};
    pso.chain_id = cfg->chain_id;
    if ((rc = tg_passes_new(&p->passes, &pso))) goto fail;
    tg_chain_pass_hooks ph = {p->passes, pass_changed, pass_time};
    tg_chain_on_passes(p->chain, &ph);
  }
  tg_pay_opts po;
  memset(&po, 0, sizeof po);
  po.cfg = cfg;
  po.store = p->store;
  po.ledger = p->ledger;
  po.chain = tg_chain_pay_reader(p->chain);
  p->exact = tg_chain_exact_backend(p->chain);
  po.exact = p->exact;
  if (cfg->store_kind == TG_STORE_POSTGRES) {
    po.exact.ctx = p;
    po.exact.check = p->exact.check ? guarded_check : NULL;
    po.exact.check_async = p->exact.check_async ? guarded_check_async : NULL;
    po.exact.submit = p->exact.submit ? guarded_submit : NULL;
    po.exact.deposit = p->exact.deposit ? guarded_deposit : NULL;
    po.exact.refund = p->exact.refund ? guarded_refund : NULL;
  }
  if (!cfg->channel_gasless) { /* the gateway sends no payer-side channel transactions */
    po.exact.deposit = NULL;     /* `deposit` payloads refused */
    po.exact.refund = NULL;      /* POST /channel/refund answers 503 */
  }
  po.chain_id = cfg->chain_id;
  po.asset = cfg->has_asset_address ? cfg->asset_address : dep.c[TG_CONTRACT_USDC].address;
  po.pay_to = cfg->has_pay_to ? cfg->pay_to : gateway;
  po.receiver_authorizer = gateway;
  po.channel_contract = dep.c[TG_CONTRACT_CHANNELS].address;
  po.withdraw_delay = cfg->channel_withdraw_delay_s;
  po.min_deposit = cfg->channel_min_deposit;
  po.passes = p->passes;
  char instance[TG_STORE_INSTANCE_MAX + 1], lease[TG_STORE_NAME_MAX + 1];
  if (cfg->store_kind == TG_STORE_POSTGRES) {
    if (cfg->store_instance) {
      snprintf(instance, sizeof instance, "%s", cfg->store_instance);
    } else {
      char host[64];
      if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "host");
      host[sizeof host - 1] = 0;
      snprintf(instance, sizeof instance, "%.32s-%ld", host, (long)getpid());
    }
    char gwhex[TG_ADDRESS_HEX_LEN];
    tg_address_to_hex(&gateway, gwhex);
    snprintf(lease, sizeof lease, "leader:%s", gwhex);
    po.instance = instance;
    po.headroom_ttl_ms = cfg->store_headroom_off ? -1 : 0;
  }
  po.on_charged = on_charged;
  po.on_charged_arg = p;
  rc = tg_pay_new(&p->pay, err, &po);
  if (rc) goto fail;
  /* a transfer's outcome ends its payer's pending value (admission counts the rest) */
  tg_chain_on_exact_done(p->chain, exact_done, p->pay);
  if (cfg->store_kind == TG_STORE_POSTGRES) {
    tg_pay_set_exact_owner(p->pay, 0); /* until the gateway lease says otherwise */
    tg_cluster_opts clo;
    memset(&clo, 0, sizeof clo);
    clo.store = p->store;
    clo.instance = instance;
    clo.lease = lease;
    clo.on_leader = on_leader;
    clo.arg = p;
    if ((rc = tg_cluster_start(&p->cluster, err, TG_CONFIG_ERR_MAX, &clo))) goto fail;
    tg_log("cluster: instance %s on %s", instance, label);
  }
  if (cfg->scheme_channel && (rc = start_scheduler(p, err, cfg, &dep)) != 0) goto fail;
  if ((cfg->scheme_channel || cfg->n_plans) && (rc = tg_chain_follow(p->chain, p->ledger, p->store, 1000))) {
    snprintf(err, TG_CONFIG_ERR_MAX, "chain follower: %s", tg_strerror(rc));
    goto fail;
  }
  p->following = cfg->scheme_channel || cfg->n_plans;
  p->hooks = (tg_http_payhooks){p->pay, tg_pay_admit, tg_pay_complete};
  return TG_OK;
fail:
  tg_payments_stop(p);
  return rc;
}

void tg_payments_reload(tg_payments *p, tg_config *cfg) {
  if (p->pay) tg_pay_set_config(p->pay, cfg);
  if (!cfg->n_plans || !p->passes || p->following) return;
  /* The first plan: the follower starts (entitlements then follow transfers within a block);
   * nothing was cached before it, as no call could be decided on a pass. */
  int rc = tg_chain_follow(p->chain, p->ledger, p->store, 1000);
  if (rc) {
    tg_log("reload: the chain follower did not start (%s): pass entitlements are not "
           "followed; restart tollgated", tg_strerror(rc));
    return;
  }
  p->following = 1;
  tg_passes_invalidate(p->passes);
  tg_log("reload: access passes on (the first plan); following the pass contract");
}

void tg_payments_stop(tg_payments *p) {
  tg_cluster_stop(p->cluster); /* first: hands the gateway lease over at once */
  p->cluster = NULL;
  if (p->chain) tg_chain_on_exact_done(p->chain, NULL, NULL); /* before the pay layer goes */
  tg_pay_free(p->pay);
  tg_chain_follow_stop(p->chain); /* the follower first: it wakes the scheduler */
  tg_chain_settle_cancel(p->chain); /* a run in progress ends at its next transaction call */
  tg_scheduler_stop(p->sched);
  tg_chain_free(p->chain); /* then the manager: its journal keeps what was in flight */
  if (p->passes) tg_passes_return_leases(p->passes); /* the store is still open */
  tg_passes_free(p->passes);
  tg_ledger_free(p->ledger);
  tg_store_close(p->store);
  tg_seckey_free(p->key);
  memset(p, 0, sizeof *p);
}
