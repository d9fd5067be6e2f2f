/* The payer's access passes: buy, renew, show, transfer, delegate and revoke on TollgatePasses (ERC-1155). */
#ifndef TOLLGATE_CLIENT_PASS_H
#define TOLLGATE_CLIENT_PASS_H

#include <stddef.h>
#include <stdint.h>

#include "tollgate/secp.h"
#include "tollgate/types.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Each call opens a JSON-RPC client on rpc_url, reads or sends one or two
 * EIP-1559 transactions from `key` (pending nonce, estimated gas + 25 %,
 * each awaited up to 60 s) and closes it. A transaction the contract would
 * refuse is not sent: the call returns TG_ERPC_REVERTED and `why` names the
 * contract's error (e.g. "TollgatePasses__NonTransferable(planId)").
 */

typedef struct {
  tg_address token;         /* payment token, zero for ETH */
  tg_u256 price;            /* per period, token units */
  uint64_t period;          /* seconds bought by one period */
  uint64_t quota;           /* included usage per period (read by the gateway) */
  uint32_t max_supply, supply;
  int transferable, active;
} tg_client_pass_plan;

typedef struct {
  int holds;                /* balanceOf(who, plan) > 0 */
  uint64_t expires_at;      /* expiresAt(who, plan): 0 when none */
  int entitled;             /* entitled(who, plan): as holder or live delegate */
  uint64_t entitled_until;
  tg_address entitled_holder;
  tg_address delegatee;     /* delegationOf(who, plan): zero when none */
  uint64_t delegated_until;
  uint64_t now;             /* the latest block's timestamp */
} tg_client_pass_status;

TG_WARN_UNUSED_RESULT int tg_client_pass_plan_get(const char *rpc_url, const tg_address *passes,
                                                  uint64_t plan_id, tg_client_pass_plan *out);
TG_WARN_UNUSED_RESULT int tg_client_pass_status_get(const char *rpc_url, const tg_address *passes,
                                                    uint64_t plan_id, const tg_address *who,
                                                    tg_client_pass_status *out);
/*
 * Buys (or renews: the same purchase extends an existing pass from its
 * expiry, so a renewal before the expiry leaves no gap) `periods` of a plan
 * for `holder`: approve(passes, price x periods) on the token then
 * purchase(planId, holder, periods), or purchase with the ETH value for an
 * ETH plan. *expiry gets the pass's expiry after it.
 */
TG_WARN_UNUSED_RESULT int tg_client_pass_buy(const char *rpc_url, const tg_address *passes,
                                             const tg_seckey *key, uint64_t plan_id,
                                             const tg_address *holder, uint32_t periods,
                                             uint64_t *expiry, char *why, size_t why_len);
/* safeTransferFrom(key's address, to, planId, 1, ""): the expiry moves with the pass. */
TG_WARN_UNUSED_RESULT int tg_client_pass_transfer(const char *rpc_url, const tg_address *passes,
                                                  const tg_seckey *key, uint64_t plan_id,
                                                  const tg_address *to, char *why, size_t why_len);
/* delegate(planId, delegatee, until): the delegatee may use the pass until then. */
TG_WARN_UNUSED_RESULT int tg_client_pass_delegate(const char *rpc_url, const tg_address *passes,
                                                  const tg_seckey *key, uint64_t plan_id,
                                                  const tg_address *delegatee, uint64_t until,
                                                  char *why, size_t why_len);
/* revokeDelegation(planId). */
TG_WARN_UNUSED_RESULT int tg_client_pass_revoke(const char *rpc_url, const tg_address *passes,
                                                const tg_seckey *key, uint64_t plan_id, char *why,
                                                size_t why_len);

#ifdef __cplusplus
}
#endif
#endif
