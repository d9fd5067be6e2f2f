/* libFuzzer driver: arbitrary bytes as EIP-712 typed-data JSON (digest, hashes, types, encodeType). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate/eip712.h"

static int is_zero(const tg_hash *h) {
  uint8_t acc = 0;
  for (int i = 0; i < 32; i++) acc |= h->b[i];
  return acc == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *json = (const char *)data;
  tg_hash d, d2, ds, mh;
  int rc = tg_eip712_digest_json(&d, json, size);
  if (rc > 0) abort();
  if (rc != 0 && !is_zero(&d)) abort(); /* outputs are zeroed on failure */
  /* The three-hash call must agree with the digest call, and the digest with its parts. */
  char where[TG_EIP712_WHERE_MAX + 1];
  where[TG_EIP712_WHERE_MAX] = 0x5a; /* a canary one past the documented size */
  int rc2 = tg_eip712_hashes_json_where(&d2, &ds, &mh, where, json, size);
  if (rc2 != rc) abort();
  if (where[TG_EIP712_WHERE_MAX] != 0x5a || strlen(where) >= TG_EIP712_WHERE_MAX) abort();
  if (rc == 0 && where[0]) abort();
  if (rc == 0) {
    if (memcmp(d.b, d2.b, 32) != 0) abort();
    tg_hash again;
    tg_eip712_digest(&again, &ds, &mh);
    /* Equal unless the primary type is EIP712Domain (then the message is not hashed). */
    if (memcmp(again.b, d.b, 32) != 0 && !is_zero(&mh)) abort();
    if (tg_eip712_doc_hash_struct(&again, json, size, "EIP712Domain") != 0) abort();
    if (memcmp(again.b, ds.b, 32) != 0) abort();
  }
  /* The types on their own: typeHash must equal keccak of encodeType for the first struct names. */
  tg_eip712_types *T = NULL;
  if (tg_eip712_types_parse(&T, json, size) == 0) {
    static const char *names[] = {"EIP712Domain", "Mail", "Person", "M", "Voucher", "A", "B"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
      tg_buf b;
      tg_buf_init(&b, (size_t)1 << 26);
      tg_hash th;
      int e = tg_eip712_encode_type(&b, T, names[i]);
      int t = tg_eip712_type_hash(&th, T, names[i]);
      if ((e == 0) != (t == 0)) abort();
      tg_buf_cleanup(&b);
    }
    tg_buf b;
    tg_buf_init(&b, (size_t)1 << 20);
    /* The whole input as a value of "M": any outcome but a crash will do. */
    if (tg_eip712_encode_data_json(&b, T, "M", json, size) == 0 && b.len < 32) abort();
    tg_buf_cleanup(&b);
    tg_eip712_types_free(T);
  }
  return 0;
}
