/* EIP-191 version 0x45 ("personal_sign") message hashing, signing and signer recovery. */
#ifndef TOLLGATE_EIP191_H
#define TOLLGATE_EIP191_H

#include <stddef.h>
#include <stdint.h>

#include "tollgate/secp.h"
#include "tollgate/types.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * keccak256("\x19Ethereum Signed Message:\n" + decimal len + message). Never fails.
 * The functions below refuse msg == NULL (TG_EINVAL: missing data, as
 * eth-sig-util does); an empty message is a non-NULL pointer with len 0.
 */
void tg_eip191_hash(tg_hash *out, const uint8_t *msg, size_t len);

/* Signs a message's EIP-191 hash: r || s || v with v = 27/28 (what cast and MetaMask produce). */
TG_WARN_UNUSED_RESULT int tg_eip191_sign(tg_sig *out, const tg_seckey *key, const uint8_t *msg,
                                         size_t len);

/* The signer of a message. Errors as tg_recover_address (low-S only). */
TG_WARN_UNUSED_RESULT int tg_eip191_recover(tg_address *out, const uint8_t *msg, size_t len,
                                            const tg_sig *sig);

/* 0 when `expected` signed the message; TG_ESIG_MISMATCH when someone else did. */
TG_WARN_UNUSED_RESULT int tg_eip191_verify(const tg_address *expected, const uint8_t *msg,
                                           size_t len, const tg_sig *sig);

#ifdef __cplusplus
}
#endif
#endif
