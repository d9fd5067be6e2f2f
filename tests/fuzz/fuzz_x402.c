/* libFuzzer driver: every x402 header decoder on arbitrary bytes; what decodes re-encodes and decodes the same. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "tollgate/x402.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static int init;
  if (!init) {
    if (sodium_init() < 0) abort();
    init = 1;
  }
  /* The input is used both as a header (base64 text) and as the JSON inside one. */
  tg_buf h;
  tg_buf_init(&h, 0);
  if (tg_base64_encode(&h, data, size) != 0) abort();
  const char *inputs[2] = {(const char *)data, (const char *)h.data};
  size_t lens[2] = {size, h.len};
  for (int i = 0; i < 2; i++) {
    tg_x402_payment p, q;
    const char *reason = NULL;
    if (tg_x402_payment_decode(&p, &reason, inputs[i], lens[i]) == 0) {
      tg_buf again;
      tg_buf_init(&again, 0);
      if (tg_x402_payment_encode(&again, &p) != 0) abort();
      if (tg_x402_payment_decode(&q, NULL, (const char *)again.data, again.len) != 0) abort();
      if (memcmp(&p.accepted, &q.accepted, sizeof p.accepted) != 0) abort();
      tg_buf_cleanup(&again);
    } else if (reason == NULL) {
      abort(); /* every refusal names its x402 reason */
    }
    tg_x402_required_info info;
    (void)!tg_x402_required_decode(&info, inputs[i], lens[i]);
    tg_x402_settle_response r;
    char why[64];
    (void)!tg_x402_settle_response_decode(&r, why, sizeof why, inputs[i], lens[i]);
  }
  tg_buf_cleanup(&h);
  return 0;
}
