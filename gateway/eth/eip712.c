/* EIP-712 typed data (placeholder until the implementation lands). */
#include "tollgate/eip712.h"

int tg_eip712_digest_json(tg_hash *out, const char *json, size_t len) {
  (void)json;
  (void)len;
  (void)out;
  return TG_EUNSUPPORTED;
}
