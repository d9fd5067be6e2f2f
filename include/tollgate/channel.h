/* Payment channels of the TollgateChannels contract: domain, channel ids and voucher checks. */
#ifndef TOLLGATE_CHANNEL_H
#define TOLLGATE_CHANNEL_H

#include <stdint.h>

#include "tollgate/secp.h"
#include "tollgate/types.h"
#include "tollgate/x402.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The contract's EIP-712 domain: name "Tollgate Channels", version "1". */
#define TG_CHANNEL_DOMAIN_NAME "Tollgate Channels"
#define TG_CHANNEL_DOMAIN_VERSION "1"
/* Bounds on withdrawDelay the contract enforces (as x402 batch-settlement). */
#define TG_CHANNEL_MIN_WITHDRAW_DELAY (15u * 60u)
#define TG_CHANNEL_MAX_WITHDRAW_DELAY (30u * 24u * 3600u)

/* The domain separator for a deployment on a chain. */
TG_WARN_UNUSED_RESULT int tg_channel_domain(tg_hash *out, uint64_t chain_id,
                                            const tg_address *contract);

/*
 * hashStruct(ChannelConfig) with ChannelConfig(address payer,address payerAuthorizer,
 * address receiver,address receiverAuthorizer,address token,uint40 withdrawDelay,bytes32 salt).
 * TG_ERANGE when withdraw_delay does not fit 40 bits.
 */
TG_WARN_UNUSED_RESULT int tg_channel_config_hash(tg_hash *out, const tg_channel_config *c);

/* channelId = the EIP-712 digest of the config under the contract's domain. */
TG_WARN_UNUSED_RESULT int tg_channel_id(tg_hash *out, const tg_hash *domain,
                                        const tg_channel_config *c);

/* The address whose signature a voucher needs: payerAuthorizer, or payer when that is zero. */
void tg_channel_voucher_signer(tg_address *out, const tg_channel_config *c);

/*
 * Checks a voucher signed by an EOA: recovers the signer of
 * Voucher(channelId, maxClaimableAmount) and compares it with the expected
 * one. TG_ESIG_MISMATCH when another key signed; errors of
 * tg_recover_address for malformed or high-S signatures. Contract-wallet
 * signatures (ERC-1271, any length but 65) return TG_EUNSUPPORTED here: the
 * caller verifies them on-chain.
 */
TG_WARN_UNUSED_RESULT int tg_channel_voucher_check(const tg_hash *domain, const tg_hash *channel_id,
                                                   const tg_u256 *max_claimable,
                                                   const tg_x402_sig *sig,
                                                   const tg_address *expected);

/* Signs a voucher (the payer side). */
TG_WARN_UNUSED_RESULT int tg_channel_voucher_sign(tg_sig *out, const tg_seckey *key,
                                                  const tg_hash *domain,
                                                  const tg_hash *channel_id,
                                                  const tg_u256 *max_claimable);

#ifdef __cplusplus
}
#endif
#endif
