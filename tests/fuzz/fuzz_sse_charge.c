/* libFuzzer driver: the payer's `: x402-charge` trailer reader on arbitrary stream bytes, whole and split in two. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "client/client_int.h"
#include "tollgate/u256.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  tg_client__sse a, b;
  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  tg_client__sse_feed(&a, (const char *)data, size);
  /* Fed in two pieces, at a split point taken from the data, the result is the same. */
  size_t cut = size ? data[0] % (size + 1) : 0;
  tg_client__sse_feed(&b, (const char *)data, cut);
  tg_client__sse_feed(&b, (const char *)data + cut, size - cut);
  if (a.found != b.found || a.has_cum != b.has_cum) abort();
  if (a.found && tg_u256_cmp(&a.charged, &b.charged) != 0) abort();
  if (a.has_cum && tg_u256_cmp(&a.cum, &b.cum) != 0) abort();
  if (a.len > sizeof a.line) abort();
  return 0;
}
