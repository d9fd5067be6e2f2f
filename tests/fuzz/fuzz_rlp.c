/* libFuzzer driver: strict RLP decoding of arbitrary bytes; what decodes must re-encode to the input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate/rlp.h"

/* Re-encodes a decoded item from its parts only (payload bytes, list children). */
static int reencode(tg_buf *out, const tg_rlp_item *item, int depth) {
  if (depth > TG_RLP_MAX_DEPTH) abort(); /* the decoder let too deep a tree through */
  if (!item->is_list) {
    tg_rlp_sink s;
    tg_rlp_sink_init(&s, out, NULL);
    tg_rlp_put_bytes(&s, item->payload.ptr, item->payload.len);
    return tg_rlp_sink_status(&s);
  }
  size_t mark;
  tg_rlp_list_begin(out, &mark);
  tg_rlp_iter it;
  if (tg_rlp_iter_init(&it, item)) abort();
  while (tg_rlp_iter_more(&it)) {
    tg_rlp_item sub;
    if (tg_rlp_iter_next(&it, &sub)) abort(); /* validated items must iterate cleanly */
    int rc = reencode(out, &sub, depth + 1);
    if (rc) return rc;
  }
  return tg_rlp_list_end(out, mark);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  tg_rlp_item item;
  if (tg_rlp_decode(&item, data, size) != 0) return 0;
  if (item.raw.ptr != data || item.raw.len != size) abort();
  tg_buf b;
  tg_buf_init(&b, size + 64);
  if (reencode(&b, &item, 0) != 0) abort();
  if (b.len != size || memcmp(b.data, data, size) != 0) abort();
  tg_buf_cleanup(&b);
  /* The typed readers never fail in unexpected ways on a valid item. */
  uint64_t v;
  tg_u256 u;
  (void)!tg_rlp_get_u64(&item, &v);
  (void)!tg_rlp_get_u256(&item, &u);
  return 0;
}
