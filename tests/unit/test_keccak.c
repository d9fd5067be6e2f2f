/* Keccak-256 against the Keccak team's KATs, ethers' hash cases and streaming splits. */
#include <stdlib.h>

#include "tg_test.h"
#include "tollgate/hex.h"
#include "tollgate/keccak.h"

static void check_digest(const char *what, const uint8_t *msg, size_t len, const char *md_hex) {
  tg_hash h, want;
  tg_keccak256(&h, msg, len);
  CHECKF(tg_hex_decode_exact(want.b, 32, md_hex, strlen(md_hex)) == 0, "%s: bad md", what);
  CHECKF(memcmp(h.b, want.b, 32) == 0, "%s: digest mismatch (len %zu)", what, len);
}

static void kat_group(const char *group) {
  json_t *root = tgt_load_json("keccak-kat/keccak256-kat.json");
  if (!root) return;
  json_t *arr = json_object_get(root, group);
  CHECK(json_is_array(arr) && json_array_size(arr) > 0);
  size_t i;
  json_t *v;
  json_array_foreach(arr, i, v) {
    const char *msg = json_string_value(json_object_get(v, "msg"));
    const char *md = json_string_value(json_object_get(v, "md"));
    size_t len;
    uint8_t *m = tgt_unhex(msg, &len);
    CHECK(m != NULL);
    if (m) check_digest(group, m, len, md);
    free(m);
  }
  json_decref(root);
}

static void test_kat_short(void) { kat_group("short"); }
static void test_kat_long(void) { kat_group("long"); }

/* 1 GiB of a repeated 64-byte text, streamed in pieces of uneven sizes. */
static void test_kat_extremely_long(void) {
  if (getenv("TG_QUICK")) {
    tgt_skip("TG_QUICK set");
    return;
  }
  json_t *root = tgt_load_json("keccak-kat/keccak256-kat.json");
  if (!root) return;
  json_t *e = json_array_get(json_object_get(root, "extremely_long"), 0);
  const char *text = json_string_value(json_object_get(e, "text_ascii"));
  json_int_t repeat = json_integer_value(json_object_get(e, "repeat"));
  const char *md = json_string_value(json_object_get(e, "md"));
  CHECK(text && md && repeat > 0 && strlen(text) == 64);
  if (!text || !md) return;
  enum { CHUNK = 64 * 1024 };
  static uint8_t block[CHUNK];
  for (size_t i = 0; i < CHUNK; i += 64) memcpy(block + i, text, 64);
  tg_keccak_ctx ctx;
  tg_keccak256_init(&ctx);
  uint64_t total = (uint64_t)repeat * 64;
  while (total >= CHUNK) {
    tg_keccak256_update(&ctx, block, CHUNK);
    total -= CHUNK;
  }
  tg_keccak256_update(&ctx, block, (size_t)total);
  tg_hash h, want;
  tg_keccak256_final(&ctx, &h);
  CHECK_OK(tg_hex_decode_exact(want.b, 32, md, strlen(md)));
  CHECK_MEM(h.b, want.b, 32);
  json_decref(root);
}

static void test_ethers_hashes(void) {
  json_t *root = tgt_load_json("ethers-testcases/hashes.json");
  if (!root) return;
  size_t i, n = 0;
  json_t *v;
  json_array_foreach(root, i, v) {
    const char *data = json_string_value(json_object_get(v, "data"));
    const char *md = json_string_value(json_object_get(v, "keccak256"));
    if (!data || !md) continue;
    size_t len;
    uint8_t *m = tgt_unhex(data, &len);
    CHECK(m != NULL);
    if (m) check_digest("ethers", m, len, md);
    free(m);
    n++;
  }
  CHECK(n >= 200);
  json_decref(root);
}

/* Every split point of a 3-block message gives the one-shot digest. */
static void test_streaming_splits(void) {
  uint8_t msg[3 * TG_KECCAK256_RATE + 7];
  for (size_t i = 0; i < sizeof msg; i++) msg[i] = (uint8_t)(i * 131 + 7);
  tg_hash one;
  tg_keccak256(&one, msg, sizeof msg);
  for (size_t a = 0; a <= sizeof msg; a += 3) {
    for (size_t b = a; b <= sizeof msg; b += 17) {
      tg_keccak_ctx ctx;
      tg_keccak256_init(&ctx);
      tg_keccak256_update(&ctx, msg, a);
      tg_keccak256_update(&ctx, msg + a, b - a);
      tg_keccak256_update(&ctx, msg + b, sizeof msg - b);
      tg_hash h;
      tg_keccak256_final(&ctx, &h);
      CHECKF(memcmp(h.b, one.b, 32) == 0, "split %zu/%zu", a, b);
    }
  }
}

static void test_known_strings(void) {
  tg_hash h;
  char hex[67];
  tg_keccak256(&h, "", 0);
  tg_hex_encode(hex, h.b, 32, 1);
  CHECK_STR(hex, "0xc5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470");
  tg_keccak256(&h, "hello", 5);
  tg_hex_encode(hex, h.b, 32, 1);
  CHECK_STR(hex, "0x1c8aff950685c2ed4bc3174f3472287b56d9517b9c948127319a09a7a36deac8");
}

int main(void) {
  RUN(test_known_strings);
  RUN(test_kat_short);
  RUN(test_kat_long);
  RUN(test_ethers_hashes);
  RUN(test_streaming_splits);
  RUN(test_kat_extremely_long);
  return tgt_done();
}
