/* Keccak-256 (the original Keccak padding used by Ethereum, not FIPS-202 SHA3-256). */
#ifndef TOLLGATE_KECCAK_H
#define TOLLGATE_KECCAK_H

#include <stddef.h>
#include <stdint.h>

#include "tollgate/types.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TG_KECCAK256_RATE 136

/* Streaming context; caller-owned, no heap. Treat the fields as private. */
typedef struct {
  uint64_t st[25];
  size_t pos; /* bytes absorbed into the current block */
} tg_keccak_ctx;

void tg_keccak256_init(tg_keccak_ctx *ctx);
void tg_keccak256_update(tg_keccak_ctx *ctx, const void *data, size_t len);
/* Writes the digest and wipes the context. */
void tg_keccak256_final(tg_keccak_ctx *ctx, tg_hash *out);

/* One-shot. */
void tg_keccak256(tg_hash *out, const void *data, size_t len);

/* The Keccak-f[1600] permutation, exposed for tests and benchmarks. */
void tg_keccakf1600(uint64_t st[25]);

#ifdef __cplusplus
}
#endif
#endif
