/* 256-bit unsigned integers (big-endian words, as the EVM lays them out): parse, format, arithmetic. */
#ifndef TOLLGATE_U256_H
#define TOLLGATE_U256_H

#include <stddef.h>
#include <stdint.h>

#include "tollgate/types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Longest decimal form: 78 digits + NUL. Longest hex form: "0x" + 64 + NUL. */
#define TG_U256_DEC_MAX 79
#define TG_U256_HEX_MAX 67

void tg_u256_zero(tg_u256 *out);
void tg_u256_from_u64(tg_u256 *out, uint64_t v);
/* TG_EOVERFLOW when the value does not fit 64 bits (out is then untouched). */
TG_WARN_UNUSED_RESULT int tg_u256_to_u64(const tg_u256 *a, uint64_t *out);
int tg_u256_is_zero(const tg_u256 *a);
/* -1, 0 or 1. Not constant-time (amounts are public). */
int tg_u256_cmp(const tg_u256 *a, const tg_u256 *b);

/*
 * Arithmetic modulo 2^256; each returns TG_EOVERFLOW (add, mul) or
 * TG_EUNDERFLOW (sub) when the exact result does not fit, with the wrapped
 * result in *out. `out` may alias the inputs.
 */
TG_WARN_UNUSED_RESULT int tg_u256_add(tg_u256 *out, const tg_u256 *a, const tg_u256 *b);
TG_WARN_UNUSED_RESULT int tg_u256_sub(tg_u256 *out, const tg_u256 *a, const tg_u256 *b);
TG_WARN_UNUSED_RESULT int tg_u256_mul(tg_u256 *out, const tg_u256 *a, const tg_u256 *b);
TG_WARN_UNUSED_RESULT int tg_u256_add_u64(tg_u256 *out, const tg_u256 *a, uint64_t b);
TG_WARN_UNUSED_RESULT int tg_u256_mul_u64(tg_u256 *out, const tg_u256 *a, uint64_t b);
/* Quotient and remainder by a small divisor; TG_EDIVZERO for 0. `rem` may be NULL. */
TG_WARN_UNUSED_RESULT int tg_u256_divmod_u64(tg_u256 *q, uint64_t *rem, const tg_u256 *a,
                                             uint64_t d);
/* Two's complement negation (for ABI intN). */
void tg_u256_neg(tg_u256 *out, const tg_u256 *a);

/*
 * Parsing: decimal digits only (leading zeros allowed, no sign, no spaces),
 * or hex after 0x (1..64 digits, either case). tg_u256_parse picks by prefix.
 * Errors: TG_ENUMBER, TG_EHEX, TG_EOVERFLOW. `out` is zeroed on failure.
 */
TG_WARN_UNUSED_RESULT int tg_u256_parse_dec(tg_u256 *out, const char *s, size_t len);
TG_WARN_UNUSED_RESULT int tg_u256_parse_hex(tg_u256 *out, const char *s, size_t len);
TG_WARN_UNUSED_RESULT int tg_u256_parse(tg_u256 *out, const char *s, size_t len);

/* Decimal into out[TG_U256_DEC_MAX]; returns the length. */
size_t tg_u256_to_dec(const tg_u256 *a, char out[TG_U256_DEC_MAX]);
/* JSON-RPC quantity: "0x" + minimal lower-case digits ("0x0" for zero); returns the length. */
size_t tg_u256_to_hex(const tg_u256 *a, char out[TG_U256_HEX_MAX]);

/* Big-endian bytes, at most 32 (shorter inputs are left-padded). TG_EOVERFLOW past 32 non-zero. */
TG_WARN_UNUSED_RESULT int tg_u256_from_be(tg_u256 *out, const uint8_t *p, size_t len);
/* The minimal big-endian form (no leading zero bytes; zero is empty): returns a pointer into a. */
const uint8_t *tg_u256_min_be(const tg_u256 *a, size_t *len);

#ifdef __cplusplus
}
#endif
#endif
