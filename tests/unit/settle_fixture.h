/* Settlement fixture shared by test_settle and bench_settle: anvil, deployed contracts, funded channels, charges in a store. */
#ifndef TG_SETTLE_FIXTURE_H
#define TG_SETTLE_FIXTURE_H

#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/store.h"
#include "tg_proc.h"
#include "tollgate/abi.h"
#include "tollgate/address.h"
#include "tollgate/channel.h"
#include "tollgate/deploy.h"
#include "tollgate/error.h"
#include "tollgate/keccak.h"
#include "tollgate/rpc.h"
#include "tollgate/settle.h"
#include "tollgate/txm.h"
#include "tollgate/u256.h"

#define SFX_DEPOSIT 1000000u /* 1 USDC per channel */
#define SFX_DELAY 900u

typedef struct {
  tgt_anvil *anvil;
  tg_rpc *rpc;
  tg_seckey *gw_key; /* anvil account 0: deployer and gateway */
  tg_address gw;
  tg_seckey *funder_key; /* anvil account 1: pays the deposits */
  tg_address funder;
  tg_deployment dep;
  tg_hash domain;
  char dir[128];
  char store_uri[256];
  char journal[256];
  char deployment_path[256];
  uint32_t salt_tag; /* distinguishes channel sets opened on one deployment */
} sfx;

typedef struct {
  tg_hash id;
  tg_channel_config cfg;
  tg_u256 charged;
  uint64_t n_charges;
  int bad_sig;
} sfx_chan;

static inline int sfx_key(tg_seckey **out, const char *hex) {
  *out = tg_seckey_new();
  if (!*out) return TG_ENOMEM;
  return tg_seckey_set_hex(*out, hex, strlen(hex));
}

static inline int sfx_rpc_new(tg_rpc **out, const char *url) {
  tg_rpc_opts o;
  tg_rpc_opts_init(&o);
  const char *urls[1] = {url};
  o.urls = urls;
  o.n_urls = 1;
  o.timeout_ms = 60000;
  return tg_rpc_new(out, &o, NULL, 0);
}

/* Starts anvil (one block per second: anvil's automine stalls on bursts) and deploys. */
/* `extra`: more anvil arguments, NULL-terminated (may be NULL); `state`: anvil --state file
 * (kept across tgt_anvil_restart), or NULL. */
static inline int sfx_start_ex(sfx *f, unsigned block_time, const char *const *extra,
                               const char *state) {
  memset(f, 0, sizeof *f);
  snprintf(f->dir, sizeof f->dir, "/tmp/tg_settle_%ld", (long)getpid());
  if (mkdir(f->dir, 0700) != 0 && errno != EEXIST) return TG_EIO;
  snprintf(f->store_uri, sizeof f->store_uri, "sqlite:%s/store.db", f->dir);
  snprintf(f->journal, sizeof f->journal, "%s/txm.db", f->dir);
  snprintf(f->deployment_path, sizeof f->deployment_path, "%s/deployment.json", f->dir);
  tgt_anvil_opts ao = {.block_time = block_time, .extra = extra, .state = state};
  f->anvil = tgt_anvil_start(&ao);
  if (!f->anvil) return TG_EIO;
  int rc = sfx_rpc_new(&f->rpc, f->anvil->url);
  if (!rc) rc = sfx_key(&f->gw_key, tgt_anvil_key(0));
  if (!rc) rc = sfx_key(&f->funder_key, tgt_anvil_key(1));
  if (!rc) rc = tg_seckey_address(&f->gw, f->gw_key);
  if (!rc) rc = tg_seckey_address(&f->funder, f->funder_key);
  if (!rc) {
    tg_deploy_opts o = {0};
    char why[256];
    rc = tg_deploy_contracts(&f->dep, f->rpc, f->gw_key, &o, why, sizeof why);
    if (rc) fprintf(stderr, "deploy: %s\n", why);
  }
  if (!rc) rc = tg_deployment_save(&f->dep, f->deployment_path);
  if (!rc)
    rc = tg_channel_domain(&f->domain, f->dep.chain_id, &f->dep.c[TG_CONTRACT_CHANNELS].address);
  return rc;
}

static inline int sfx_start(sfx *f, unsigned block_time, const char *const *extra) {
  return sfx_start_ex(f, block_time, extra, NULL);
}

static inline void sfx_stop(sfx *f) {
  tg_rpc_free(f->rpc);
  tgt_anvil_free(f->anvil);
  tg_seckey_free(f->gw_key);
  tg_seckey_free(f->funder_key);
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
  if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", f->dir);
}

static inline void sfx_done(void *arg, const tg_txm_result *r) { *(tg_txm_result *)arg = *r; }

/* Sends calls from the funder, all at once, and waits for them. */
static inline int sfx_send(sfx *f, tg_buf *calls, size_t n) {
  tg_txm *m = NULL;
  tg_txm_opts mo;
  tg_txm_opts_init(&mo);
  mo.rpc = f->rpc;
  mo.key = f->funder_key;
  mo.journal_path = ":memory:";
  mo.poll_ms = 100;
  mo.resend_ms = 120000; /* dozens of full blocks are queued at once: nothing is stuck */
  int rc = tg_txm_open(&m, &mo);
  if (rc) return rc;
  tg_txm_result *res = calloc(n ? n : 1, sizeof *res);
  for (size_t i = 0; !rc && i < n; i++) {
    tg_txm_request req = {0};
    req.has_to = 1;
    memcpy(req.to.b, calls[i].data, 20);
    req.data = calls[i].data + 20;
    req.data_len = calls[i].len - 20;
    rc = tg_txm_submit(m, &req, sfx_done, &res[i], NULL);
  }
  if (!rc) rc = tg_txm_run_until_idle(m, 600000);
  for (size_t i = 0; !rc && i < n; i++)
    if (res[i].state != TG_TXM_CONFIRMED || res[i].status != 1) rc = TG_ETXM_FAILED;
  free(res);
  tg_txm_free(m);
  return rc;
}

/* calls[i] = to (20 bytes) || calldata. */
static inline int sfx_call(tg_buf *out, const tg_address *to, const char *sig, const tg_abi_value *args,
                    size_t nargs) {
  tg_buf_init(out, (size_t)64 << 20);
  tg_abi_sig *s = NULL;
  int rc = tg_abi_sig_parse(&s, sig, strlen(sig));
  if (!rc) rc = tg_buf_append(out, to->b, 20);
  tg_abi_value a = tg_abi_val_list(args, nargs);
  if (!rc) rc = tg_abi_encode_call(out, s, &a);
  tg_abi_sig_free(s);
  return rc;
}

/* Payer i's key: keccak("tollgate payer" || i). */
static inline int sfx_payer_key(tg_seckey *k, size_t i) {
  char seed[64];
  int n = snprintf(seed, sizeof seed, "tollgate payer %zu", i);
  tg_hash h;
  tg_keccak256(&h, seed, (size_t)n);
  return tg_seckey_set(k, h.b);
}

/*
 * Opens n channels: payer i (its own key), receiver receivers[i % nrecv] with the gateway as
 * receiver authorizer unless the receiver is the gateway; deposits SFX_DEPOSIT each, paid by
 * the funder through multicall (per_tx deposits per transaction).
 */
static inline int sfx_open_channels(sfx *f, sfx_chan *ch, size_t n, const tg_address *receivers,
                             size_t nrecv, size_t per_tx) {
  const tg_address *usdc = &f->dep.c[TG_CONTRACT_USDC].address;
  const tg_address *chs = &f->dep.c[TG_CONTRACT_CHANNELS].address;
  tg_seckey *k = tg_seckey_new();
  int rc = k ? 0 : TG_ENOMEM;
  for (size_t i = 0; !rc && i < n; i++) {
    memset(&ch[i], 0, sizeof ch[i]);
    if ((rc = sfx_payer_key(k, i)) != 0) break;
    if ((rc = tg_seckey_address(&ch[i].cfg.payer, k)) != 0) break;
    ch[i].cfg.receiver = receivers[i % nrecv];
    if (!tg_address_eq(&ch[i].cfg.receiver, &f->gw)) ch[i].cfg.receiver_authorizer = f->gw;
    ch[i].cfg.token = *usdc;
    ch[i].cfg.withdraw_delay = SFX_DELAY;
    if (i % 3 == 1) ch[i].cfg.salt.b[31] = (uint8_t)(i & 0xff); /* exercise the salt flag */
    ch[i].cfg.salt.b[0] = (uint8_t)(f->salt_tag >> 24);
    ch[i].cfg.salt.b[1] = (uint8_t)(f->salt_tag >> 16);
    ch[i].cfg.salt.b[2] = (uint8_t)(f->salt_tag >> 8);
    ch[i].cfg.salt.b[3] = (uint8_t)f->salt_tag;
    rc = tg_channel_id(&ch[i].id, &f->domain, &ch[i].cfg);
  }
  tg_seckey_free(k);
  if (rc) return rc;
  /* mint and approve */
  tg_buf calls[2];
  tg_u256 total;
  tg_u256_from_u64(&total, (uint64_t)SFX_DEPOSIT * n);
  tg_abi_value a1[2] = {tg_abi_val_address(&f->funder), tg_abi_val_word(&total)};
  tg_abi_value a2[2] = {tg_abi_val_address(chs), tg_abi_val_word(&total)};
  rc = sfx_call(&calls[0], usdc, "mint(address,uint256)", a1, 2);
  if (!rc) rc = sfx_call(&calls[1], usdc, "approve(address,uint256)", a2, 2);
  if (!rc) rc = sfx_send(f, &calls[0], 1);
  if (!rc) rc = sfx_send(f, &calls[1], 1);
  tg_buf_cleanup(&calls[0]);
  tg_buf_cleanup(&calls[1]);
  if (rc) return rc;
  size_t ntx = (n + per_tx - 1) / per_tx;
  tg_buf *mc = calloc(ntx ? ntx : 1, sizeof *mc);
  tg_abi_sig *dep = NULL;
  rc = tg_abi_sig_parse(&dep, "deposit((address,address,address,address,address,uint40,bytes32),uint128)", strlen("deposit((address,address,address,address,address,uint40,bytes32),uint128)"));
  tg_buf *one = calloc(per_tx, sizeof *one);
  tg_abi_value *items = calloc(per_tx, sizeof *items);
  for (size_t t = 0; !rc && t < ntx; t++) {
    size_t lo = t * per_tx, hi = lo + per_tx < n ? lo + per_tx : n;
    for (size_t i = lo; !rc && i < hi; i++) {
      const tg_channel_config *c = &ch[i].cfg;
      tg_abi_value cv[7] = {tg_abi_val_address(&c->payer), tg_abi_val_address(&c->payer_authorizer),
                            tg_abi_val_address(&c->receiver), tg_abi_val_address(&c->receiver_authorizer),
                            tg_abi_val_address(&c->token), tg_abi_val_u64(c->withdraw_delay),
                            tg_abi_val_fixed(c->salt.b, 32)};
      tg_abi_value args[2] = {tg_abi_val_list(cv, 7), tg_abi_val_u64(SFX_DEPOSIT)};
      tg_abi_value a = tg_abi_val_list(args, 2);
      tg_buf_init(&one[i - lo], 4096);
      rc = tg_abi_encode_call(&one[i - lo], dep, &a);
      items[i - lo] = tg_abi_val_bytes(one[i - lo].data, one[i - lo].len);
    }
    tg_abi_value arr = tg_abi_val_list(items, hi - lo);
    if (!rc) rc = sfx_call(&mc[t], chs, "multicall(bytes[])", &arr, 1);
    for (size_t i = lo; i < hi; i++) tg_buf_cleanup(&one[i - lo]);
  }
  tg_abi_sig_free(dep);
  free(one);
  free(items);
  if (!rc) rc = sfx_send(f, mc, ntx);
  for (size_t t = 0; t < ntx; t++) tg_buf_cleanup(&mc[t]);
  free(mc);
  return rc;
}

/*
 * Records in the store what the gateway would: each channel, a voucher for the full deposit
 * (signed by the payer, or by a stranger when bad_sig), and k charges of amount(i, j).
 */
static inline int sfx_record(sfx *f, tg_store *st, sfx_chan *ch, size_t first, size_t n, unsigned k,
                      uint64_t (*amount)(size_t i, unsigned j), const char *prefix) {
  if (2 + k > TG_STORE_SUBMIT_MAX_OPS) return TG_EINVAL;
  tg_seckey *key = tg_seckey_new();
  int rc = key ? 0 : TG_ENOMEM;
  tg_store_op *ops = calloc(TG_STORE_SUBMIT_MAX_OPS, sizeof *ops);
  char (*rid)[64] = calloc(TG_STORE_SUBMIT_MAX_OPS, sizeof *rid);
  tg_sig *sigs = calloc(TG_STORE_SUBMIT_MAX_OPS, sizeof *sigs);
  size_t m = 0, ns = 0;
  for (size_t i = first; !rc && i < first + n; i++) {
    if (m + 2 + k > TG_STORE_SUBMIT_MAX_OPS) {
      rc = tg_store_write(st, ops, m);
      memset(ops, 0, TG_STORE_SUBMIT_MAX_OPS * sizeof *ops);
      m = ns = 0;
      if (rc) break;
    }
    tg_sig *sig = &sigs[ns++];
    tg_u256 ceil;
    tg_u256_from_u64(&ceil, SFX_DEPOSIT);
    if ((rc = sfx_payer_key(key, ch[i].bad_sig ? i + 1000000 : i)) != 0) break;
    if ((rc = tg_channel_voucher_sign(sig, key, &f->domain, &ch[i].id, &ceil)) != 0) break;
    tg_store_op *op = &ops[m++];
    op->kind = TG_STORE_OP_CHANNEL_PUT;
    op->u.channel.id = ch[i].id;
    op->u.channel.cfg.chain_id = f->dep.chain_id;
    op->u.channel.cfg.contract = f->dep.c[TG_CONTRACT_CHANNELS].address;
    op->u.channel.cfg.payer = ch[i].cfg.payer;
    op->u.channel.cfg.payer_authorizer = ch[i].cfg.payer_authorizer;
    op->u.channel.cfg.receiver = ch[i].cfg.receiver;
    op->u.channel.cfg.receiver_authorizer = ch[i].cfg.receiver_authorizer;
    op->u.channel.cfg.token = ch[i].cfg.token;
    op->u.channel.cfg.withdraw_delay = ch[i].cfg.withdraw_delay;
    op->u.channel.cfg.salt = ch[i].cfg.salt;
    tg_u256_from_u64(&op->u.channel.chain.balance, SFX_DEPOSIT);
    op = &ops[m++];
    op->kind = TG_STORE_OP_VOUCHER;
    op->u.voucher.channel_id = ch[i].id;
    op->u.voucher.max_claimable = ceil;
    op->u.voucher.sig = TG_BYTES(sig->b, 65);
    for (unsigned j = 0; j < k; j++) {
      op = &ops[m];
      snprintf(rid[m], sizeof rid[m], "%s-%zu-%u", prefix, i, j);
      op->kind = TG_STORE_OP_CHARGE;
      op->u.charge.request_id = rid[m];
      m++;
      op->u.charge.payer = ch[i].cfg.payer;
      op->u.charge.scheme = TG_SCHEME_CHANNEL;
      op->u.charge.route = "/v1/chat/completions";
      op->u.charge.model = "test";
      tg_u256_from_u64(&op->u.charge.amount, amount(i, j));
      op->u.charge.has_channel = 1;
      op->u.charge.channel_id = ch[i].id;
      if ((rc = tg_u256_add(&ch[i].charged, &ch[i].charged, &op->u.charge.amount)) != 0) break;
      ch[i].n_charges++;
    }
  }
  if (!rc && m) rc = tg_store_write(st, ops, m);
  free(ops);
  free(rid);
  free(sigs);
  tg_seckey_free(key);
  return rc;
}

static inline int sfx_balance_of(sfx *f, const tg_address *who, tg_u256 *out) {
  uint8_t data[36];
  if (tg_abi_selector_str(data, "balanceOf(address)", strlen("balanceOf(address)")) != 0) return TG_EINTERNAL;
  tg_abi_put_address(data + 4, who);
  tg_eth_msg m = {0};
  m.to = &f->dep.c[TG_CONTRACT_USDC].address;
  m.data = data;
  m.data_len = sizeof data;
  tg_buf b;
  tg_buf_init(&b, 4096);
  int rc = tg_eth_call(f->rpc, &b, NULL, &m, NULL);
  if (!rc && b.len != 32) rc = TG_EABI_DATA;
  if (!rc) memcpy(out->b, b.data, 32);
  tg_buf_cleanup(&b);
  return rc;
}

#endif
