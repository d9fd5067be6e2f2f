/* The payer's access-pass operations on TollgatePasses: reads of plans and passes, and the holder's transactions. */
#include <stdio.h>
#include <string.h>

#include "client/client_int.h"
#include "tollgate/abi.h"
#include "tollgate/address.h"
#include "tollgate/client_pass.h"
#include "tollgate/hex.h"
#include "tollgate/rpc.h"
#include "tollgate/u256.h"

static int rpc_open(tg_rpc **rpc, const char *rpc_url) {
  tg_rpc_opts ro;
  tg_rpc_opts_init(&ro);
  ro.urls = &rpc_url;
  ro.n_urls = 1;
  return tg_rpc_new(rpc, &ro, NULL, 0);
}

/* eth_call of `sigtext` with already-encoded arguments; out gets the return data. */
static int view(tg_rpc *rpc, tg_buf *out, const tg_address *to, const char *sigtext,
                const tg_abi_value *args) {
  tg_abi_sig *sig = NULL;
  tg_buf data;
  tg_buf_init(&data, 4096);
  int rc = tg_abi_sig_parse(&sig, sigtext, strlen(sigtext));
  if (!rc) rc = tg_abi_encode_call(&data, sig, args);
  if (!rc) {
    tg_eth_msg m;
    memset(&m, 0, sizeof m);
    m.to = to;
    m.data = data.data;
    m.data_len = data.len;
    rc = tg_eth_call(rpc, out, NULL, &m, "latest");
  }
  tg_buf_cleanup(&data);
  tg_abi_sig_free(sig);
  return rc;
}

static uint64_t word_u64(const uint8_t *w) {
  uint64_t v = 0;
  for (int i = 24; i < 32; i++) v = v << 8 | w[i];
  return v;
}

static int word_fits_u64(const uint8_t *w) {
  for (int i = 0; i < 24; i++)
    if (w[i]) return 0;
  return 1;
}

int tg_client_pass_plan_get(const char *rpc_url, const tg_address *passes, uint64_t plan_id,
                            tg_client_pass_plan *out) {
  memset(out, 0, sizeof *out);
  tg_rpc *rpc = NULL;
  int rc = rpc_open(&rpc, rpc_url);
  if (rc) return rc;
  tg_buf r;
  tg_buf_init(&r, 4096);
  tg_abi_value a[1] = {tg_abi_val_u64(plan_id)};
  tg_abi_value args = tg_abi_val_list(a, 1);
  rc = view(rpc, &r, passes, "getPlan(uint256)", &args);
  if (rc == TG_ERPC_REVERTED) rc = TG_ENOTFOUND; /* TollgatePasses__UnknownPlan */
  /* (address token, uint96 price, uint40 period, uint64 quota, uint32 maxSupply, uint32 supply,
   *  bool transferable, bool active): eight static words. */
  if (!rc && r.len < 8 * 32) rc = TG_EABI_DATA;
  if (!rc) {
    const uint8_t *w = r.data;
    memcpy(out->token.b, w + 12, 20);
    memcpy(out->price.b, w + 32, 32);
    if (!word_fits_u64(w + 64) || !word_fits_u64(w + 96)) rc = TG_EABI_DATA;
    out->period = word_u64(w + 64);
    out->quota = word_u64(w + 96);
    out->max_supply = (uint32_t)word_u64(w + 128);
    out->supply = (uint32_t)word_u64(w + 160);
    out->transferable = w[223] != 0;
    out->active = w[255] != 0;
  }
  tg_buf_cleanup(&r);
  tg_rpc_free(rpc);
  return rc;
}

int tg_client_pass_status_get(const char *rpc_url, const tg_address *passes, uint64_t plan_id,
                              const tg_address *who, tg_client_pass_status *out) {
  memset(out, 0, sizeof *out);
  tg_rpc *rpc = NULL;
  int rc = rpc_open(&rpc, rpc_url);
  if (rc) return rc;
  tg_buf r;
  tg_buf_init(&r, 4096);
  tg_abi_value a[2] = {tg_abi_val_address(who), tg_abi_val_u64(plan_id)};
  tg_abi_value args = tg_abi_val_list(a, 2);
  rc = view(rpc, &r, passes, "balanceOf(address,uint256)", &args);
  if (!rc && r.len < 32) rc = TG_EABI_DATA;
  if (!rc) {
    tg_u256 b;
    memcpy(b.b, r.data, 32);
    out->holds = !tg_u256_is_zero(&b);
  }
  tg_buf_reset(&r);
  if (!rc) rc = view(rpc, &r, passes, "expiresAt(address,uint256)", &args);
  if (!rc && r.len < 32) rc = TG_EABI_DATA;
  if (!rc) out->expires_at = word_u64(r.data);
  tg_buf_reset(&r);
  if (!rc) rc = view(rpc, &r, passes, "entitled(address,uint256)", &args);
  if (!rc && r.len < 96) rc = TG_EABI_DATA;
  if (!rc) {
    out->entitled = r.data[31] != 0;
    out->entitled_until = word_u64(r.data + 32);
    memcpy(out->entitled_holder.b, r.data + 64 + 12, 20);
  }
  tg_buf_reset(&r);
  if (!rc) rc = view(rpc, &r, passes, "delegationOf(address,uint256)", &args);
  if (!rc && r.len < 64) rc = TG_EABI_DATA;
  if (!rc) {
    memcpy(out->delegatee.b, r.data + 12, 20);
    out->delegated_until = word_u64(r.data + 32);
  }
  tg_eth_block blk;
  if (!rc && (rc = tg_eth_get_block(rpc, &blk, "latest")) == 0) {
    out->now = blk.timestamp;
    tg_eth_block_cleanup(&blk);
  }
  tg_buf_cleanup(&r);
  tg_rpc_free(rpc);
  return rc;
}

/* Names a TollgatePasses / ERC-1155 / ERC-20 custom error from its revert data. */
static void name_revert(char *why, size_t why_len, const tg_buf *rev) {
  static const char *const errs[] = {
      "TollgatePasses__UnknownPlan(uint256)",
      "TollgatePasses__PlanNotActive(uint256)",
      "TollgatePasses__ZeroPeriods()",
      "TollgatePasses__SupplyCapReached(uint256,uint32)",
      "TollgatePasses__ExpiryOverflow()",
      "TollgatePasses__WrongMsgValue(uint256,uint256)",
      "TollgatePasses__InvalidHolder()",
      "TollgatePasses__NonTransferable(uint256)",
      "TollgatePasses__RecipientAlreadyHolds(address,uint256)",
      "TollgatePasses__NotHolder(address,uint256)",
      "TollgatePasses__InvalidDelegatee(address)",
      "TollgatePasses__InvalidUntil(uint64)",
      "TollgatePasses__DelegateeTaken(address,address)",
      "TollgatePasses__NoDelegation(address,uint256)",
      "ERC1155InsufficientBalance(address,uint256,uint256,uint256)",
      "ERC20InsufficientBalance(address,uint256,uint256)",
      "ERC20InsufficientAllowance(address,uint256,uint256)",
  };
  if (!why || !why_len) return;
  snprintf(why, why_len, "the contract refused the call");
  if (!rev || rev->len < 4) return;
  for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++) {
    uint8_t sel[4];
    if (tg_abi_selector_str(sel, errs[i], strlen(errs[i])) == 0 && memcmp(sel, rev->data, 4) == 0) {
      snprintf(why, why_len, "%s", errs[i]);
      return;
    }
  }
}

/* Encodes and sends one call from the key; a refusal is named in why. */
static int send_call(tg_rpc *rpc, const tg_seckey *key, const tg_address *to, const char *sigtext,
                     const tg_abi_value *args, const tg_u256 *value, char *why, size_t why_len) {
  if (why && why_len) why[0] = 0;
  tg_address from;
  int rc = tg_seckey_address(&from, key);
  if (rc) return rc;
  uint64_t chain_id = 0;
  if ((rc = tg_eth_chain_id(rpc, &chain_id)) != 0) return rc;
  tg_abi_sig *sig = NULL;
  tg_buf data, rev;
  tg_buf_init(&data, 4096);
  tg_buf_init(&rev, 4096);
  rc = tg_abi_sig_parse(&sig, sigtext, strlen(sigtext));
  if (!rc) rc = tg_abi_encode_call(&data, sig, args);
  tg_hash txh;
  if (!rc) rc = tg_client__send(rpc, key, &from, chain_id, to, &data, value, &txh, &rev);
  if (rc == TG_ERPC_REVERTED) name_revert(why, why_len, &rev);
  tg_buf_cleanup(&data);
  tg_buf_cleanup(&rev);
  tg_abi_sig_free(sig);
  return rc;
}

int tg_client_pass_buy(const char *rpc_url, const tg_address *passes, const tg_seckey *key,
                       uint64_t plan_id, const tg_address *holder, uint32_t periods,
                       uint64_t *expiry, char *why, size_t why_len) {
  if (expiry) *expiry = 0;
  if (periods == 0) return TG_EINVAL;
  tg_client_pass_plan plan;
  int rc = tg_client_pass_plan_get(rpc_url, passes, plan_id, &plan);
  if (rc) return rc;
  tg_u256 cost;
  if (tg_u256_mul_u64(&cost, &plan.price, periods)) return TG_ERANGE;
  tg_rpc *rpc = NULL;
  if ((rc = rpc_open(&rpc, rpc_url)) != 0) return rc;
  int eth = tg_address_is_zero(&plan.token);
  if (!eth) {
    tg_abi_value a[2] = {tg_abi_val_address(passes), tg_abi_val_word(&cost)};
    tg_abi_value args = tg_abi_val_list(a, 2);
    rc = send_call(rpc, key, &plan.token, "approve(address,uint256)", &args, NULL, why, why_len);
  }
  if (!rc) {
    tg_abi_value a[3] = {tg_abi_val_u64(plan_id), tg_abi_val_address(holder),
                         tg_abi_val_u64(periods)};
    tg_abi_value args = tg_abi_val_list(a, 3);
    rc = send_call(rpc, key, passes, "purchase(uint256,address,uint32)", &args, eth ? &cost : NULL,
                   why, why_len);
  }
  tg_rpc_free(rpc);
  if (!rc && expiry) {
    tg_client_pass_status st;
    rc = tg_client_pass_status_get(rpc_url, passes, plan_id, holder, &st);
    if (!rc) *expiry = st.expires_at;
  }
  return rc;
}

int tg_client_pass_transfer(const char *rpc_url, const tg_address *passes, const tg_seckey *key,
                            uint64_t plan_id, const tg_address *to, char *why, size_t why_len) {
  tg_address from;
  int rc = tg_seckey_address(&from, key);
  if (rc) return rc;
  tg_rpc *rpc = NULL;
  if ((rc = rpc_open(&rpc, rpc_url)) != 0) return rc;
  tg_u256 one;
  tg_u256_from_u64(&one, 1);
  tg_abi_value a[5] = {tg_abi_val_address(&from), tg_abi_val_address(to), tg_abi_val_u64(plan_id),
                       tg_abi_val_word(&one), tg_abi_val_bytes("", 0)};
  tg_abi_value args = tg_abi_val_list(a, 5);
  rc = send_call(rpc, key, passes, "safeTransferFrom(address,address,uint256,uint256,bytes)", &args,
                 NULL, why, why_len);
  tg_rpc_free(rpc);
  return rc;
}

int tg_client_pass_delegate(const char *rpc_url, const tg_address *passes, const tg_seckey *key,
                            uint64_t plan_id, const tg_address *delegatee, uint64_t until,
                            char *why, size_t why_len) {
  tg_rpc *rpc = NULL;
  int rc = rpc_open(&rpc, rpc_url);
  if (rc) return rc;
  tg_abi_value a[3] = {tg_abi_val_u64(plan_id), tg_abi_val_address(delegatee), tg_abi_val_u64(until)};
  tg_abi_value args = tg_abi_val_list(a, 3);
  rc = send_call(rpc, key, passes, "delegate(uint256,address,uint64)", &args, NULL, why, why_len);
  tg_rpc_free(rpc);
  return rc;
}

int tg_client_pass_revoke(const char *rpc_url, const tg_address *passes, const tg_seckey *key,
                          uint64_t plan_id, char *why, size_t why_len) {
  tg_rpc *rpc = NULL;
  int rc = rpc_open(&rpc, rpc_url);
  if (rc) return rc;
  tg_abi_value a[1] = {tg_abi_val_u64(plan_id)};
  tg_abi_value args = tg_abi_val_list(a, 1);
  rc = send_call(rpc, key, passes, "revokeDelegation(uint256)", &args, NULL, why, why_len);
  tg_rpc_free(rpc);
  return rc;
}
