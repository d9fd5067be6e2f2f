/* Opening a channel on-chain for the payer: approve + deposit on TollgateChannels, then register it. */
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "client/client_int.h"
#include "tollgate/abi.h"
#include "tollgate/rpc.h"
#include "tollgate/tx.h"
#include "tollgate/u256.h"

#define RECEIPT_WAIT_MS 60000

/* Signs and sends one EIP-1559 transaction, waits for its receipt; TG_EREVERTED-like errors. */
static int send_and_wait(tg_rpc *rpc, const tg_seckey *key, const tg_address *from,
                         uint64_t chain_id, const tg_address *to, const tg_buf *data,
                         tg_hash *txh) {
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
  if ((rc = tg_eth_estimate_gas(rpc, &gas, NULL, &m)) != 0) return rc;
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
