/* Ethereum addresses: parsing (EIP-55 checksums enforced on mixed case) and formatting. */
#ifndef TOLLGATE_ADDRESS_H
#define TOLLGATE_ADDRESS_H

#include <stddef.h>

#include "tollgate/types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* "0x" + 40 digits + NUL */
#define TG_ADDRESS_HEX_LEN 43

/*
 * Parses 40 hex digits with an optional 0x prefix. All-lower or all-upper
 * digits are accepted as they are; mixed case must be a valid EIP-55
 * checksum (TG_ECHECKSUM otherwise). TG_EADDRESS for any other shape.
 */
TG_WARN_UNUSED_RESULT int tg_address_parse(tg_address *out, const char *s, size_t len);
/* EIP-55 mixed-case form, "0x..." NUL-terminated. */
void tg_address_to_checksum(const tg_address *a, char out[TG_ADDRESS_HEX_LEN]);
/* Lower-case form, "0x..." NUL-terminated. */
void tg_address_to_hex(const tg_address *a, char out[TG_ADDRESS_HEX_LEN]);
int tg_address_is_zero(const tg_address *a);
int tg_address_eq(const tg_address *a, const tg_address *b);

#ifdef __cplusplus
}
#endif
#endif
