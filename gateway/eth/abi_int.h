/* Internal to the ABI codec: the bump arena shared by abi.c and abi_text.c. */
#ifndef TG_ETH_ABI_INT_H
#define TG_ETH_ABI_INT_H

#include <stddef.h>

#include "tollgate/abi.h"

typedef struct tg__abi_chunk tg__abi_chunk;

/* A chunked bump allocator with a byte cap; freed all at once. */
typedef struct {
  tg__abi_chunk *head;
  size_t total; /* bytes handed out */
  size_t max;   /* cap on total */
  size_t nodes; /* value nodes created (decoder / parser budget) */
} tg__abi_arena;

tg__abi_arena *tg__abi_arena_new(size_t max);
void tg__abi_arena_free(tg__abi_arena *a);
/* Zeroed, 16-byte aligned memory; NULL when the cap is reached. */
void *tg__abi_alloc(tg__abi_arena *a, size_t n);
/* A tree with its own arena; NULL on OOM. */
tg_abi_tree *tg__abi_tree_new(size_t max);
tg__abi_arena *tg__abi_tree_arena(tg_abi_tree *t);

#endif
