/* Payment channels: the TollgateChannels EIP-712 domain, channel ids and voucher checks. */
#include <string.h>

#include <sodium.h>

#include "tollgate/channel.h"
#include "tollgate/eip712.h"
#include "tollgate/keccak.h"
#include "tollgate/u256.h"

/* keccak256("ChannelConfig(address payer,address payerAuthorizer,address receiver,
 * address receiverAuthorizer,address token,uint40 withdrawDelay,bytes32 salt)"), computed once. */
static const char config_type[] =
    "ChannelConfig(address payer,address payerAuthorizer,address receiver,"
    "address receiverAuthorizer,address token,uint40 withdrawDelay,bytes32 salt)";

int tg_channel_domain(tg_hash *out, uint64_t chain_id, const tg_address *contract) {
  tg_eip712_domain d;
  memset(&d, 0, sizeof d);
  d.fields = TG_EIP712_DOMAIN_STANDARD;
  d.name = TG_STR_LIT(TG_CHANNEL_DOMAIN_NAME);
  d.version = TG_STR_LIT(TG_CHANNEL_DOMAIN_VERSION);
  tg_u256_from_u64(&d.chain_id, chain_id);
  d.verifying_contract = *contract;
  return tg_eip712_domain_separator(out, &d);
}

static void put_address(uint8_t word[32], const tg_address *a) {
  memset(word, 0, 12);
  memcpy(word + 12, a->b, 20);
}

int tg_channel_config_hash(tg_hash *out, const tg_channel_config *c) {
  if (c->withdraw_delay >> 40) return TG_ERANGE;
  static tg_hash typehash;
  static int have_typehash;
  if (!__atomic_load_n(&have_typehash, __ATOMIC_ACQUIRE)) {
    tg_hash t;
    tg_keccak256(&t, config_type, sizeof config_type - 1);
    typehash = t; /* idempotent: racing threads store the same bytes */
    __atomic_store_n(&have_typehash, 1, __ATOMIC_RELEASE);
  }
  uint8_t enc[8 * 32];
  memcpy(enc, typehash.b, 32);
  put_address(enc + 32, &c->payer);
  put_address(enc + 64, &c->payer_authorizer);
  put_address(enc + 96, &c->receiver);
  put_address(enc + 128, &c->receiver_authorizer);
  put_address(enc + 160, &c->token);
  tg_u256 d;
  tg_u256_from_u64(&d, c->withdraw_delay);
  memcpy(enc + 192, d.b, 32);
  memcpy(enc + 224, c->salt.b, 32);
  tg_keccak256(out, enc, sizeof enc);
  return TG_OK;
}

int tg_channel_id(tg_hash *out, const tg_hash *domain, const tg_channel_config *c) {
  tg_hash sh;
  int rc = tg_channel_config_hash(&sh, c);
  if (rc) return rc;
  tg_eip712_digest(out, domain, &sh);
  return TG_OK;
}

void tg_channel_voucher_signer(tg_address *out, const tg_channel_config *c) {
  static const tg_address zero;
  *out = memcmp(c->payer_authorizer.b, zero.b, 20) ? c->payer_authorizer : c->payer;
}

int tg_channel_voucher_check(const tg_hash *domain, const tg_hash *channel_id,
                             const tg_u256 *max_claimable, const tg_x402_sig *sig,
                             const tg_address *expected) {
  if (sig->len != 65) return TG_EUNSUPPORTED;
  tg_eip712_voucher v;
  v.channel_id = *channel_id;
  v.max_claimable_amount = *max_claimable;
  tg_sig s;
  memcpy(s.b, sig->b, 65);
  tg_address signer;
  int rc = tg_eip712_voucher_recover(&signer, domain, &v, &s);
  if (rc) return rc;
  return sodium_memcmp(signer.b, expected->b, 20) == 0 ? TG_OK : TG_ESIG_MISMATCH;
}

int tg_channel_voucher_sign(tg_sig *out, const tg_seckey *key, const tg_hash *domain,
                            const tg_hash *channel_id, const tg_u256 *max_claimable) {
  tg_eip712_voucher v;
  v.channel_id = *channel_id;
  v.max_claimable_amount = *max_claimable;
  return tg_eip712_voucher_sign(out, key, domain, &v);
}
