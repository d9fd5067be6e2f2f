/* EIP-712 signing and signer recovery for the fixed struct types (the fast path on top of secp.h). */
#include <string.h>

#include "tollgate/eip712.h"
#include "tollgate/secp.h"

int tg_eip712_sign(tg_sig *out, const tg_seckey *key, const tg_hash *domain_separator,
                   const tg_hash *struct_hash) {
  if (!out) return TG_EINVAL;
  memset(out, 0, sizeof *out);
  if (!key || !domain_separator || !struct_hash) return TG_EINVAL;
  tg_hash d;
  tg_eip712_digest(&d, domain_separator, struct_hash);
  return tg_sign_digest(out, key, &d);
}

int tg_eip712_recover(tg_address *signer, const tg_hash *domain_separator,
                      const tg_hash *struct_hash, const tg_sig *sig) {
  if (!signer) return TG_EINVAL;
  memset(signer, 0, sizeof *signer);
  if (!domain_separator || !struct_hash || !sig) return TG_EINVAL;
  tg_hash d;
  tg_eip712_digest(&d, domain_separator, struct_hash);
  return tg_recover_address(signer, &d, sig);
}

int tg_eip712_voucher_sign(tg_sig *out, const tg_seckey *key, const tg_hash *domain_separator,
                           const tg_eip712_voucher *v) {
  if (!out) return TG_EINVAL;
  memset(out, 0, sizeof *out);
  tg_hash sh;
  int rc = tg_eip712_voucher_hash(&sh, v);
  if (rc) return rc;
  return tg_eip712_sign(out, key, domain_separator, &sh);
}

int tg_eip712_voucher_recover(tg_address *signer, const tg_hash *domain_separator,
                              const tg_eip712_voucher *v, const tg_sig *sig) {
  if (!signer) return TG_EINVAL;
  memset(signer, 0, sizeof *signer);
  tg_hash sh;
  int rc = tg_eip712_voucher_hash(&sh, v);
  if (rc) return rc;
  return tg_eip712_recover(signer, domain_separator, &sh, sig);
}

/* The remaining fixed types cannot fail to hash; NULL inputs are refused here. */
#define TG__FIXED_SIGN_RECOVER(prefix, type, hashfn)                                         \
  int prefix##_sign(tg_sig *out, const tg_seckey *key, const tg_hash *domain_separator,      \
                    const type *v) {                                                         \
    if (!out) return TG_EINVAL;                                                              \
    memset(out, 0, sizeof *out);                                                             \
    if (!v) return TG_EINVAL;                                                                \
    tg_hash sh;                                                                              \
    hashfn(&sh, v);                                                                          \
    return tg_eip712_sign(out, key, domain_separator, &sh);                                  \
  }                                                                                          \
  int prefix##_recover(tg_address *signer, const tg_hash *domain_separator, const type *v,   \
                       const tg_sig *sig) {                                                  \
    if (!signer) return TG_EINVAL;                                                           \
    memset(signer, 0, sizeof *signer);                                                       \
    if (!v) return TG_EINVAL;                                                                \
    tg_hash sh;                                                                              \
    hashfn(&sh, v);                                                                          \
    return tg_eip712_recover(signer, domain_separator, &sh, sig);                            \
  }

TG__FIXED_SIGN_RECOVER(tg_eip3009_transfer, tg_eip3009_authorization, tg_eip3009_transfer_hash)
TG__FIXED_SIGN_RECOVER(tg_eip3009_receive, tg_eip3009_authorization, tg_eip3009_receive_hash)
TG__FIXED_SIGN_RECOVER(tg_eip2612_permit, tg_eip2612_permit, tg_eip2612_permit_hash)
