/* EIP-712 typed structured data: digests from full typed-data JSON, and fixed-type fast paths. */
#ifndef TOLLGATE_EIP712_H
#define TOLLGATE_EIP712_H

#include <stddef.h>

#include "tollgate/types.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * The EIP-712 signing digest keccak256(0x1901 || domainSeparator || hashStruct(message))
 * of a typed-data JSON document as eth_signTypedData_v4 takes it:
 * {"types": {...}, "primaryType": "...", "domain": {...}, "message": {...}}.
 * Errors: TG_EJSON, TG_ETYPED_DATA, TG_ETYPED_DATA_TYPE, TG_ETOOBIG, ...
 */
TG_WARN_UNUSED_RESULT int tg_eip712_digest_json(tg_hash *out, const char *json, size_t len);

#ifdef __cplusplus
}
#endif
#endif
