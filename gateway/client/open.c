/* The payer's on-chain channel operations: open, top up, start and finish a timed withdrawal. */
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "client/client_int.h"
#include "tollgate/abi.h"
#include "tollgate/rpc.h"
#include "tollgate/tx.h"
#include "tollgate/u256.h"

#define RECEIPT_WAIT_MS 60000

/*
 * Signs and sends one EIP-1559 transaction (pending nonce, estimated gas + 25 %,
 * maxFee = 2 x gasPrice + tip), waits for its receipt (60 s): TG_ECLIENT_REFUSED
 * when it reverted; an estimate that reverts returns TG_ERPC_REVERTED (revert
 * data in *revert when given).
 */
int tg_client__send(tg_rpc *rpc, const tg_seckey *key, const tg_address *from, uint64_t chain_id,
                    const tg_address *to, const tg_buf *data, const tg_u256 *value, tg_hash *txh,
                    tg_buf *revert) {
  uint64_t nonce, gas;
  tg_u256 gp, prio, fee;
  int rc = tg_eth_get_transaction_count(rpc, &nonce, from, "pending");
  if (!rc) rc = tg_eth_gas_price(rpc, &gp);
  if (!rc && tg_eth_max_priority_fee(rpc, &prio) != 0) tg_u256_from_u64(&prio, 1000000000);
  if (rc) return rc;
  tg_eth_msg m;
  memset(&m, 0, sizeof m);
  m.from = from;
  m.to = to;
  m.data = data->data;
  m.data_len = data->len;
  m.value = value;
  if ((rc = tg_eth_estimate_gas(rpc, &gas, revert, &m)) != 0) return rc;
  gas += gas / 4;
  if (tg_u256_mul_u64(&fee, &gp, 2) || tg_u256_add(&fee, &fee, &prio)) return TG_ERANGE;
  tg_tx tx;
  memset(&tx, 0, sizeof tx);
  tx.type = TG_TX_EIP1559;
  tx.chain_id = chain_id;
  tx.nonce = nonce;
  tx.max_priority_fee_per_gas = prio;
  tx.max_fee_per_gas = fee;
  tx.gas_limit = gas;
  tx.has_to = 1;
  tx.to = *to;
  tx.data = TG_BYTES(data->data, data->len);
  if (value) tx.value = *value;
  tg_buf raw;
  tg_buf_init(&raw, 1 << 16);
  rc = tg_tx_sign(&tx, key);
  if (!rc) rc = tg_tx_encode(&raw, &tx);
  if (!rc) rc = tg_eth_send_raw_transaction(rpc, txh, raw.data, raw.len);
  tg_buf_cleanup(&raw);
  if (rc) return rc;
  for (unsigned waited = 0; waited < RECEIPT_WAIT_MS; waited += 200) {
    tg_eth_receipt r;
    rc = tg_eth_get_receipt(rpc, &r, txh);
    if (rc == 0) {
      int ok = r.status == 1;
      tg_eth_receipt_cleanup(&r);
      return ok ? 0 : TG_ECLIENT_REFUSED;
    }
    if (rc != TG_ENOTFOUND) return rc;
    usleep(200 * 1000);
  }
  return TG_ETIMEOUT;
}

static int send_and_wait(tg_rpc *rpc, const tg_seckey *key, const tg_address *from,
                         uint64_t chain_id, const tg_address *to, const tg_buf *data,
                         tg_hash *txh) {
  return tg_client__send(rpc, key, from, chain_id, to, data, NULL, txh, NULL);
}

int tg_client_channel_open(tg_client *c, tg_client_channel *out, const char *rpc_url,
                           const tg_x402_requirements *t, const tg_hash *salt,
                           const tg_u256 *deposit) {
  if (out) memset(out, 0, sizeof *out);
  if (!rpc_url || t->scheme != TG_X402_CHANNEL || tg_u256_is_zero(deposit)) return TG_EINVAL;
  const tg_seckey *key = tg_client__key(c);
  tg_address payer;
  tg_client_payer(c, &payer);
  tg_rpc_opts ro;
  tg_rpc_opts_init(&ro);
  ro.urls = &rpc_url;
  ro.n_urls = 1;
  ro.chain_id = t->chain_id;
  tg_rpc *rpc = NULL;
  int rc = tg_rpc_new(&rpc, &ro, NULL, 0);
  if (rc) return rc;
  tg_abi_sig *approve = NULL, *dep = NULL;
  tg_buf data;
  tg_buf_init(&data, 4096);
  static const char approve_sig[] = "approve(address,uint256)";
  static const char deposit_sig[] =
      "deposit((address,address,address,address,address,uint40,bytes32),uint128)";
  rc = tg_abi_sig_parse(&approve, approve_sig, sizeof approve_sig - 1);
  if (!rc) rc = tg_abi_sig_parse(&dep, deposit_sig, sizeof deposit_sig - 1);
  if (rc) goto out;
  tg_abi_value a[2] = {tg_abi_val_address(&t->channel_contract), tg_abi_val_word(deposit)};
  tg_abi_value args = tg_abi_val_list(a, 2);
  tg_hash txh;
  if ((rc = tg_abi_encode_call(&data, approve, &args)) != 0) goto out;
  if ((rc = send_and_wait(rpc, key, &payer, t->chain_id, &t->asset, &data, &txh)) != 0) goto out;
  tg_address zero;
  memset(&zero, 0, sizeof zero);
  tg_abi_value cfg[7] = {tg_abi_val_address(&payer),
                         tg_abi_val_address(&zero),
                         tg_abi_val_address(&t->pay_to),
                         tg_abi_val_address(&t->receiver_authorizer),
                         tg_abi_val_address(&t->asset),
                         tg_abi_val_u64(t->withdraw_delay),
                         tg_abi_val_fixed(salt->b, 32)};
  tg_abi_value d[2] = {tg_abi_val_list(cfg, 7), tg_abi_val_word(deposit)};
  args = tg_abi_val_list(d, 2);
  tg_buf_reset(&data);
  if ((rc = tg_abi_encode_call(&data, dep, &args)) != 0) goto out;
  if ((rc = send_and_wait(rpc, key, &payer, t->chain_id, &t->channel_contract, &data, &txh)) != 0)
    goto out;
  rc = tg_client_channel_add(c, out, t, salt, deposit);
out:
  tg_buf_cleanup(&data);
  tg_abi_sig_free(approve);
  tg_abi_sig_free(dep);
  tg_rpc_free(rpc);
  return rc;
}

/* ---- top-up, withdrawal ------------------------------------------------------------- */

static const char cfg_tuple[] = "(address,address,address,address,address,uint40,bytes32)";

static void cfg_values(tg_abi_value v[7], const tg_client_channel *ch) {
  const tg_channel_config *k = &ch->config;
  v[0] = tg_abi_val_address(&k->payer);
  v[1] = tg_abi_val_address(&k->payer_authorizer);
  v[2] = tg_abi_val_address(&k->receiver);
  v[3] = tg_abi_val_address(&k->receiver_authorizer);
  v[4] = tg_abi_val_address(&k->token);
  v[5] = tg_abi_val_u64(k->withdraw_delay);
  v[6] = tg_abi_val_fixed(k->salt.b, 32);
}

static int rpc_for(tg_rpc **rpc, const char *rpc_url, uint64_t chain_id) {
  tg_rpc_opts ro;
  tg_rpc_opts_init(&ro);
  ro.urls = &rpc_url;
  ro.n_urls = 1;
  ro.chain_id = chain_id;
  return tg_rpc_new(rpc, &ro, NULL, 0);
}

/* Encodes name(config[, uint128 amount]) for a channel. */
static int channel_call(tg_buf *out, const char *name, const tg_client_channel *ch,
                        const tg_u256 *amount) {
  char text[160];
  snprintf(text, sizeof text, "%s(%s%s)", name, cfg_tuple, amount ? ",uint128" : "");
  tg_abi_sig *sig = NULL;
  int rc = tg_abi_sig_parse(&sig, text, strlen(text));
  if (rc) return rc;
  tg_abi_value cfg[7];
  cfg_values(cfg, ch);
  tg_abi_value a[2] = {tg_abi_val_list(cfg, 7), amount ? tg_abi_val_word(amount) : tg_abi_val_u64(0)};
  tg_abi_value args = tg_abi_val_list(a, amount ? 2 : 1);
  rc = tg_abi_encode_call(out, sig, &args);
  tg_abi_sig_free(sig);
  return rc;
}

/* A view returning two words: name(bytes32 id). */
static int view2(tg_rpc *rpc, const tg_address *to, const char *sigtext, const tg_hash *id,
                 tg_u256 *w0, tg_u256 *w1) {
  uint8_t data[36];
  int rc = tg_abi_selector_str(data, sigtext, strlen(sigtext));
  if (rc) return rc;
  memcpy(data + 4, id->b, 32);
  tg_eth_msg m;
  memset(&m, 0, sizeof m);
  m.to = to;
  m.data = data;
  m.data_len = sizeof data;
  tg_buf out;
  tg_buf_init(&out, 4096);
  rc = tg_eth_call(rpc, &out, NULL, &m, "latest");
  if (!rc && out.len < 64) rc = TG_EABI_DATA;
  if (!rc) {
    memcpy(w0->b, out.data, 32);
    memcpy(w1->b, out.data + 32, 32);
  }
  tg_buf_cleanup(&out);
  return rc;
}

int tg_client_channel_onchain(tg_client *c, tg_client_channel_chain *out, const char *rpc_url,
                              const tg_hash *id) {
  memset(out, 0, sizeof *out);
  tg_client_channel ch;
  int rc = tg_client__channel_get(c, id, &ch);
  if (rc) return rc;
  tg_rpc *rpc = NULL;
  if ((rc = rpc_for(&rpc, rpc_url, ch.chain_id)) != 0) return rc;
  tg_u256 at;
  rc = view2(rpc, &ch.contract, "channels(bytes32)", id, &out->balance, &out->total_claimed);
  if (!rc)
    rc = view2(rpc, &ch.contract, "pendingWithdrawals(bytes32)", id, &out->withdraw_amount, &at);
  if (!rc && !tg_u256_is_zero(&at)) {
    uint64_t t = 0;
    for (int i = 24; i < 32; i++) t = t << 8 | at.b[i];
    out->withdraw_at = t + ch.config.withdraw_delay;
  }
  tg_eth_block b;
  if (!rc && (rc = tg_eth_get_block(rpc, &b, "latest")) == 0) {
    out->now = b.timestamp;
    tg_eth_block_cleanup(&b);
  }
  tg_rpc_free(rpc);
  return rc;
}

int tg_client_channel_topup(tg_client *c, tg_client_channel *out, const char *rpc_url,
                            const tg_hash *id, const tg_u256 *amount) {
  if (out) memset(out, 0, sizeof *out);
  if (!rpc_url || tg_u256_is_zero(amount)) return TG_EINVAL;
  tg_client_channel ch;
  int rc = tg_client__channel_get(c, id, &ch);
  if (rc) return rc;
  tg_address payer;
  tg_client_payer(c, &payer);
  tg_rpc *rpc = NULL;
  if ((rc = rpc_for(&rpc, rpc_url, ch.chain_id)) != 0) return rc;
  tg_abi_sig *approve = NULL;
  tg_buf data;
  tg_buf_init(&data, 4096);
  static const char approve_sig[] = "approve(address,uint256)";
  tg_hash txh;
  rc = tg_abi_sig_parse(&approve, approve_sig, sizeof approve_sig - 1);
  if (!rc) {
    tg_abi_value a[2] = {tg_abi_val_address(&ch.contract), tg_abi_val_word(amount)};
    tg_abi_value args = tg_abi_val_list(a, 2);
    rc = tg_abi_encode_call(&data, approve, &args);
  }
  if (!rc) rc = send_and_wait(rpc, tg_client__key(c), &payer, ch.chain_id, &ch.config.token, &data, &txh);
  tg_buf_reset(&data);
  if (!rc) rc = channel_call(&data, "deposit", &ch, amount);
  if (!rc) rc = send_and_wait(rpc, tg_client__key(c), &payer, ch.chain_id, &ch.contract, &data, &txh);
  if (!rc) rc = tg_client__channel_update(c, id, amount, NULL, ch.withdraw_at, out);
  tg_buf_cleanup(&data);
  tg_abi_sig_free(approve);
  tg_rpc_free(rpc);
  return rc;
}

int tg_client_channel_withdraw(tg_client *c, tg_client_channel *out, const char *rpc_url,
                               const tg_hash *id, const tg_u256 *amount) {
  if (out) memset(out, 0, sizeof *out);
  if (!rpc_url) return TG_EINVAL;
  tg_client_channel ch;
  int rc = tg_client__channel_get(c, id, &ch);
  if (rc) return rc;
  tg_client_channel_chain oc;
  if ((rc = tg_client_channel_onchain(c, &oc, rpc_url, id)) != 0) return rc;
  tg_u256 amt;
  if (amount) {
    amt = *amount;
  } else if (tg_u256_sub(&amt, &oc.balance, &oc.total_claimed) || tg_u256_is_zero(&amt)) {
    return TG_ECHANNEL_SHORT; /* nothing left to withdraw */
  }
  tg_address payer;
  tg_client_payer(c, &payer);
  tg_rpc *rpc = NULL;
  if ((rc = rpc_for(&rpc, rpc_url, ch.chain_id)) != 0) return rc;
  tg_buf data;
  tg_buf_init(&data, 4096);
  tg_hash txh;
  rc = channel_call(&data, "initiateWithdraw", &ch, &amt);
  if (!rc) rc = send_and_wait(rpc, tg_client__key(c), &payer, ch.chain_id, &ch.contract, &data, &txh);
  tg_buf_cleanup(&data);
  tg_rpc_free(rpc);
  if (rc) return rc;
  if ((rc = tg_client_channel_onchain(c, &oc, rpc_url, id)) != 0) return rc;
  /* No more vouchers on this channel: the gateway refuses them once it sees the withdrawal. */
  return tg_client__channel_update(c, id, NULL, NULL, oc.withdraw_at ? oc.withdraw_at : 1, out);
}

int tg_client_channel_finalize(tg_client *c, tg_client_channel *out, const char *rpc_url,
                               const tg_hash *id, tg_u256 *paid) {
  if (out) memset(out, 0, sizeof *out);
  if (paid) tg_u256_zero(paid);
  if (!rpc_url) return TG_EINVAL;
  tg_client_channel ch;
  int rc = tg_client__channel_get(c, id, &ch);
  if (rc) return rc;
  tg_client_channel_chain before, after;
  if ((rc = tg_client_channel_onchain(c, &before, rpc_url, id)) != 0) return rc;
  if (!before.withdraw_at) return TG_ENOTFOUND;  /* no withdrawal pending */
  if (before.now < before.withdraw_at) {
    if (out) {
      *out = ch;
      out->withdraw_at = before.withdraw_at;
    }
    return TG_EBUSY;                               /* not finalizable yet */
  }
  tg_address payer;
  tg_client_payer(c, &payer);
  tg_rpc *rpc = NULL;
  if ((rc = rpc_for(&rpc, rpc_url, ch.chain_id)) != 0) return rc;
  tg_buf data;
  tg_buf_init(&data, 4096);
  tg_hash txh;
  rc = channel_call(&data, "finalizeWithdraw", &ch, NULL);
  if (!rc) rc = send_and_wait(rpc, tg_client__key(c), &payer, ch.chain_id, &ch.contract, &data, &txh);
  tg_buf_cleanup(&data);
  tg_rpc_free(rpc);
  if (rc) return rc;
  if ((rc = tg_client_channel_onchain(c, &after, rpc_url, id)) != 0) return rc;
  if (paid && tg_u256_sub(paid, &before.balance, &after.balance)) tg_u256_zero(paid);
  /* What is left is what was claimed (or is still claimable): the new voucher limit. */
  return tg_client__channel_update(c, id, NULL, &after.balance, 0, out);
}
