/* libFuzzer driver: strict decoding of raw transactions; what decodes must re-serialize to the input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate/tx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  tg_tx tx;
  if (tg_tx_decode(&tx, data, size) != 0) return 0;
  tg_buf b;
  tg_buf_init(&b, size + 64);
  if (tg_tx_encode(&b, &tx) != 0) abort();
  if (b.len != size || memcmp(b.data, data, size) != 0) abort();
  tg_buf_cleanup(&b);
  /* The access list reads back entry by entry. */
  tg_rlp_iter it, keys;
  if (tg_access_list_iter_init(&it, &tx) != 0) abort();
  while (tg_rlp_iter_more(&it)) {
    tg_address a;
    if (tg_access_list_next(&it, &a, &keys) != 0) abort();
    while (tg_rlp_iter_more(&keys)) {
      tg_hash k;
      if (tg_access_list_key(&keys, &k) != 0) abort();
    }
  }
  tg_hash h;
  if (tg_tx_hash(&h, &tx) != 0) abort();
  uint64_t gas;
  (void)!tg_tx_intrinsic_gas(&tx, &gas);
  (void)!tg_tx_validate(&tx, 1);
  /* Recovery may fail (a point off the curve), but must not crash. */
  tg_address from;
  (void)!tg_tx_sender(&from, &tx);
  return 0;
}
