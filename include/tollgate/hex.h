/* Hex encoding and decoding of byte strings, and parsing of fixed-size hex values. */
#ifndef TOLLGATE_HEX_H
#define TOLLGATE_HEX_H

#include <stddef.h>
#include <stdint.h>

#include "tollgate/types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Flags for tg_hex_decode. */
#define TG_HEX_PREFIX_OPTIONAL 0u /* "0x" may be present */
#define TG_HEX_PREFIX_REQUIRED 1u /* "0x" or "0X" must be present */
#define TG_HEX_ALLOW_ODD 2u       /* odd digit count: a leading 0 is implied */

/*
 * Decodes `len` characters of hex at `hex` into `out` (capacity `outcap`).
 * Writes the byte count to *outlen. Errors: TG_EHEX (bad digit), TG_EHEX_ODD,
 * TG_EHEX_PREFIX, TG_EBUFSIZE. Never reads past hex[len-1].
 */
TG_WARN_UNUSED_RESULT int tg_hex_decode(uint8_t *out, size_t outcap, size_t *outlen,
                                        const char *hex, size_t len, unsigned flags);

/* Like tg_hex_decode into a growable buffer (appends). */
TG_WARN_UNUSED_RESULT int tg_hex_decode_buf(tg_buf *out, const char *hex, size_t len,
                                            unsigned flags);

/*
 * Decodes exactly `n` bytes: the input must hold exactly 2n digits after an
 * optional 0x prefix.
 */
TG_WARN_UNUSED_RESULT int tg_hex_decode_exact(uint8_t *out, size_t n, const char *hex,
                                              size_t len);

/*
 * Lower-case hex of `len` bytes into `out`, with "0x" when `prefix` is
 * non-zero, NUL-terminated. `out` needs 2*len + 3 bytes.
 */
void tg_hex_encode(char *out, const uint8_t *data, size_t len, int prefix);

/* Appends the lower-case hex (with "0x" when prefix) to a buffer, NUL-terminated. */
TG_WARN_UNUSED_RESULT int tg_hex_encode_buf(tg_buf *out, const uint8_t *data, size_t len,
                                            int prefix);

/* Allocates "0x..." for `len` bytes; the caller frees it. NULL on OOM. */
char *tg_hex_dup(const uint8_t *data, size_t len);

/* Value of one hex digit, or -1. */
int tg_hex_digit(int c);

#ifdef __cplusplus
}
#endif
#endif
