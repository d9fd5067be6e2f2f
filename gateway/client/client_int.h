/* Internal to gateway/client: what the client's files share. */
#ifndef TG_CLIENT_INT_H
#define TG_CLIENT_INT_H

#include "tollgate/client.h"
#include "tollgate/rpc.h"

/* The payer key held by the client (guarded memory, owned by the client). */
const tg_seckey *tg_client__key(const tg_client *c);

/* One EIP-1559 transaction from the key, awaited (gateway/client/open.c). */
TG_WARN_UNUSED_RESULT int tg_client__send(tg_rpc *rpc, const tg_seckey *key, const tg_address *from,
                                          uint64_t chain_id, const tg_address *to,
                                          const tg_buf *data, const tg_u256 *value, tg_hash *txh,
                                          tg_buf *revert);

/* A known channel by id (TG_ENOTFOUND). */
TG_WARN_UNUSED_RESULT int tg_client__channel_get(tg_client *c, const tg_hash *id,
                                                 tg_client_channel *out);
/*
 * Updates a known channel after an on-chain change: adds `add` to its
 * deposit (NULL: none), or sets the deposit to `set` (NULL: none), and sets
 * withdraw_at. *out (optional) gets the record.
 */
TG_WARN_UNUSED_RESULT int tg_client__channel_update(tg_client *c, const tg_hash *id,
                                                    const tg_u256 *add, const tg_u256 *set,
                                                    uint64_t withdraw_at, tg_client_channel *out);

/*
 * The `: x402-charge {"chargedAmount":"N","chargedCumulativeAmount":"M"}`
 * comment that ends a paid stream (docs/PROTOCOL.md 3.6), found in body
 * bytes fed in any pieces. Only lines starting with ':' are kept, each up
 * to TG_CLIENT__SSE_LINE bytes; a longer or malformed one is ignored. The
 * last valid trailer wins. Zero the struct to start.
 */
#define TG_CLIENT__SSE_LINE 1024
typedef struct {
  char line[TG_CLIENT__SSE_LINE];
  size_t len;
  int skip;
  int found;
  tg_u256 charged;
  int has_cum;
  tg_u256 cum;
} tg_client__sse;

void tg_client__sse_feed(tg_client__sse *s, const char *p, size_t n);

#endif
