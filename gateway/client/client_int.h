/* Internal to gateway/client: what the client's files share. */
#ifndef TG_CLIENT_INT_H
#define TG_CLIENT_INT_H

#include "tollgate/client.h"

/* The payer key held by the client (guarded memory, owned by the client). */
const tg_seckey *tg_client__key(const tg_client *c);

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
