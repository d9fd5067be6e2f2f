/* Tests of RLP encoding and strict decoding: ethereum/tests RLPTests, ethers rlp.json, edge cases. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "tg_proc.h"
#include "tg_test.h"
#include "tollgate/hex.h"
#include "tollgate/keccak.h"
#include "tollgate/rlp.h"
#include "tollgate/u256.h"

/* rlptest.json has "\u0000" strings, which tgt_load_json's default flags refuse. */
static json_t *load_json_nul(const char *rel) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", tgt_vectors(), rel);
  size_t len;
  char *text = tgt_read_file(path, &len);
  if (!text) {
    tgt_fail_at(__FILE__, __LINE__, "cannot read %s", path);
    return NULL;
  }
  json_error_t err;
  json_t *j = json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
  free(text);
  if (!j) tgt_fail_at(__FILE__, __LINE__, "cannot parse %s: %s", path, err.text);
  return j;
}

/* A decimal string of any size as minimal big-endian bytes (for "#<decimal>" items). */
static int dec_to_be(tg_buf *out, const char *s) {
  uint8_t v[64] = {0}; /* little-endian */
  for (; *s; s++) {
    if (*s < '0' || *s > '9') return -1;
    unsigned carry = (unsigned)(*s - '0');
    for (size_t i = 0; i < sizeof v; i++) {
      unsigned x = v[i] * 10u + carry;
      v[i] = (uint8_t)x;
      carry = x >> 8;
    }
    if (carry) return -1;
  }
  size_t n = sizeof v;
  while (n && v[n - 1] == 0) n--;
  for (size_t i = 0; i < n; i++)
    if (tg_buf_append_byte(out, v[n - 1 - i])) return -1;
  return 0;
}

/* A JSON string of code points < 256 as one byte each (the vectors' Latin-1 convention). */
static int latin1(tg_buf *out, const char *s, size_t len) {
  for (size_t i = 0; i < len;) {
    uint8_t c = (uint8_t)s[i];
    if (c < 0x80) {
      if (tg_buf_append_byte(out, c)) return -1;
      i++;
    } else if ((c & 0xe0) == 0xc0 && i + 1 < len && c <= 0xc3) {
      if (tg_buf_append_byte(out, (uint8_t)(((c & 0x1f) << 6) | ((uint8_t)s[i + 1] & 0x3f))))
        return -1;
      i += 2;
    } else {
      return -1;
    }
  }
  return 0;
}

/*
 * Encodes an ethereum/tests "in" item (string, integer, "#bigint", list) or,
 * with `hexmode`, an ethers "decoded" item (0x-hex strings, lists).
 */
static int encode_json(tg_buf *out, const json_t *j, int hexmode) {
  tg_rlp_sink s;
  tg_rlp_sink_init(&s, out, NULL);
  if (json_is_array(j)) {
    size_t mark;
    tg_rlp_list_begin(out, &mark);
    size_t i;
    json_t *v;
    json_array_foreach(j, i, v) {
      if (encode_json(out, v, hexmode)) return -1;
    }
    return tg_rlp_list_end(out, mark);
  }
  if (json_is_integer(j)) {
    json_int_t x = json_integer_value(j);
    if (x < 0) return -1;
    tg_rlp_put_u64(&s, (uint64_t)x);
    return tg_rlp_sink_status(&s);
  }
  if (!json_is_string(j)) return -1;
  const char *str = json_string_value(j);
  size_t len = json_string_length(j);
  tg_buf tmp;
  tg_buf_init(&tmp, 1 << 20);
  int rc;
  if (hexmode)
    rc = tg_hex_decode_buf(&tmp, str, len, TG_HEX_PREFIX_REQUIRED);
  else if (len && str[0] == '#')
    rc = dec_to_be(&tmp, str + 1);
  else
    rc = latin1(&tmp, str, len);
  if (!rc) {
    tg_rlp_put_bytes(&s, tmp.data, tmp.len);
    rc = tg_rlp_sink_status(&s);
  }
  tg_buf_cleanup(&tmp);
  return rc;
}

/* Whether a decoded item has exactly the shape and bytes of the JSON it came from. */
static int same_as_json(const tg_rlp_item *item, const json_t *j, int hexmode) {
  if (json_is_array(j)) {
    if (!item->is_list) return 0;
    tg_rlp_iter it;
    if (tg_rlp_iter_init(&it, item)) return 0;
    size_t i;
    json_t *v;
    json_array_foreach(j, i, v) {
      tg_rlp_item sub;
      if (tg_rlp_iter_next(&it, &sub)) return 0;
      if (!same_as_json(&sub, v, hexmode)) return 0;
    }
    return !tg_rlp_iter_more(&it);
  }
  if (item->is_list) return 0;
  /* Compare through the encoder: the string's encoding must equal the item's raw bytes. */
  tg_buf b;
  tg_buf_init(&b, 1 << 20);
  int ok = encode_json(&b, j, hexmode) == 0 && b.len == item->raw.len &&
           memcmp(b.data, item->raw.ptr, b.len) == 0;
  tg_buf_cleanup(&b);
  return ok;
}

static void test_rlptest(void) {
  json_t *all = load_json_nul("ethereum-tests-rlp/rlptest.json");
  if (!all) return;
  const char *name;
  json_t *tc;
  int n = 0;
  json_object_foreach(all, name, tc) {
    const json_t *in = json_object_get(tc, "in");
    size_t olen;
    uint8_t *want = tgt_unhex(json_string_value(json_object_get(tc, "out")), &olen);
    CHECKF(want != NULL, "%s: bad hex", name);
    if (!want) continue;
    tg_buf b;
    tg_buf_init(&b, 1 << 20);
    CHECKF(encode_json(&b, in, 0) == 0, "%s: encode failed", name);
    CHECKF(b.len == olen && memcmp(b.data, want, olen) == 0, "%s: encoding differs", name);
    tg_rlp_item item;
    int rc = tg_rlp_decode(&item, want, olen);
    CHECKF(rc == 0, "%s: decode -> %s", name, tg_err_name(rc));
    if (rc == 0) CHECKF(same_as_json(&item, in, 0), "%s: decoded value differs", name);
    tg_buf_cleanup(&b);
    free(want);
    n++;
  }
  CHECK_INT(n, 28);
  json_decref(all);
}

static void test_invalid_rlp(void) {
  json_t *all = tgt_load_json("ethereum-tests-rlp/invalidRLPTest.json");
  if (!all) return;
  const char *name;
  json_t *tc;
  int n = 0;
  json_object_foreach(all, name, tc) {
    CHECK_STR(json_string_value(json_object_get(tc, "in")), "INVALID");
    size_t len;
    uint8_t *raw = tgt_unhex(json_string_value(json_object_get(tc, "out")), &len);
    CHECKF(raw != NULL, "%s: bad hex", name);
    if (!raw) continue;
    tg_rlp_item item;
    int rc = tg_rlp_decode(&item, raw, len);
    CHECKF(rc < 0, "%s: accepted", name);
    CHECKF(item.raw.ptr == NULL && item.payload.len == 0, "%s: output not zeroed", name);
    free(raw);
    n++;
  }
  CHECK_INT(n, 26);
  json_decref(all);
}

static void test_random_rlp(void) {
  json_t *all = tgt_load_json("ethereum-tests-rlp/RandomRLPTests/example.json");
  if (!all) return;
  const char *name;
  json_t *tc;
  int n = 0;
  json_object_foreach(all, name, tc) {
    size_t len;
    uint8_t *raw = tgt_unhex(json_string_value(json_object_get(tc, "out")), &len);
    tg_rlp_item item;
    CHECK_OK(tg_rlp_decode(&item, raw, len));
    CHECK(item.is_list && item.raw.len == len);
    size_t count;
    CHECK_OK(tg_rlp_list_count(&item, &count));
    CHECK_INT(count, 3); /* [[],[[]],[[],[[]]]] */
    free(raw);
    n++;
  }
  CHECK_INT(n, 1);
  json_decref(all);
}

static void test_ethers_rlp(void) {
  json_t *all = tgt_load_json("ethers-testcases/rlp.json");
  if (!all) return;
  size_t i;
  json_t *tc;
  json_array_foreach(all, i, tc) {
    const char *name = json_string_value(json_object_get(tc, "name"));
    const json_t *dec = json_object_get(tc, "decoded");
    size_t len;
    uint8_t *want = tgt_unhex(json_string_value(json_object_get(tc, "encoded")), &len);
    tg_buf b;
    tg_buf_init(&b, 1 << 20);
    CHECKF(encode_json(&b, dec, 1) == 0, "%s: encode failed", name);
    CHECKF(b.len == len && memcmp(b.data, want, len) == 0, "%s: encoding differs", name);
    tg_rlp_item item;
    int rc = tg_rlp_decode(&item, want, len);
    CHECKF(rc == 0, "%s: decode -> %s", name, tg_err_name(rc));
    if (rc == 0) CHECKF(same_as_json(&item, dec, 1), "%s: decoded value differs", name);
    tg_buf_cleanup(&b);
    free(want);
  }
  CHECK_INT(json_array_size(all), 61);
  json_decref(all);
}

static int dec_hex(const char *hex, uint8_t *out, size_t cap, size_t *n) {
  return tg_hex_decode(out, cap, n, hex, strlen(hex), TG_HEX_PREFIX_OPTIONAL);
}

/* Each must-reject shape with its precise error. */
static void test_errors(void) {
  static const struct {
    const char *hex;
    int err;
  } cases[] = {
      {"", TG_ETRUNCATED},
      {"8100", TG_ERLP_NONCANONICAL},   /* single byte < 0x80 with a header */
      {"817f", TG_ERLP_NONCANONICAL},
      {"b800", TG_ERLP_NONCANONICAL},   /* long length with a leading zero */
      {"b80100", TG_ERLP_NONCANONICAL}, /* length < 56 in long form */
      {"f80100", TG_ERLP_NONCANONICAL},
      {"b90037", TG_ERLP_NONCANONICAL},
      {"83646f", TG_ETRUNCATED},
      {"c3c0c0", TG_ETRUNCATED},
      {"c2c3c0", TG_ETRUNCATED},        /* inner list longer than its parent */
      {"b8", TG_ETRUNCATED},
      {"8080", TG_ETRAILING},
      {"c0c0", TG_ETRAILING},
      {"c28100", TG_ERLP_NONCANONICAL}, /* nested invalid item */
      {"bf0f000000000000021111", TG_ETRUNCATED},
      {"ff0f000000000000021111", TG_ETRUNCATED},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    uint8_t buf[32];
    size_t n;
    CHECK_OK(dec_hex(cases[i].hex, buf, sizeof buf, &n));
    tg_rlp_item item;
    int rc = tg_rlp_decode(&item, buf, n);
    CHECKF(rc == cases[i].err, "0x%s -> %s, want %s", cases[i].hex, tg_err_name(rc),
           tg_err_name(cases[i].err));
  }
}

static void test_depth(void) {
  /* TG_RLP_MAX_DEPTH nested lists decode; one more is refused. */
  tg_rlp_item item;
  tg_buf b;
  tg_buf_init(&b, 0);
  size_t marks[TG_RLP_MAX_DEPTH + 1];
  for (size_t i = 0; i < TG_RLP_MAX_DEPTH + 1; i++) tg_rlp_list_begin(&b, &marks[i]);
  for (size_t i = TG_RLP_MAX_DEPTH + 1; i-- > 0;) CHECK_OK(tg_rlp_list_end(&b, marks[i]));
  CHECK_ERR(tg_rlp_decode(&item, b.data, b.len), TG_ERLP_DEPTH);
  /* One level less decodes. */
  tg_rlp_item inner;
  const uint8_t *p = b.data;
  size_t left = b.len;
  CHECK_OK(tg_rlp_next(&inner, &p, &left));
  CHECK_OK(tg_rlp_decode(&item, inner.payload.ptr, inner.payload.len));
  tg_buf_cleanup(&b);
}

static void test_integers(void) {
  uint8_t buf[64];
  size_t n;
  tg_rlp_item item;
  uint64_t v;
  tg_u256 u;
  CHECK_OK(dec_hex("820400", buf, sizeof buf, &n));
  CHECK_OK(tg_rlp_decode(&item, buf, n));
  CHECK_OK(tg_rlp_get_u64(&item, &v));
  CHECK_INT(v, 1024);
  CHECK_OK(dec_hex("820004", buf, sizeof buf, &n));
  CHECK_OK(tg_rlp_decode(&item, buf, n));
  CHECK_ERR(tg_rlp_get_u64(&item, &v), TG_ELEADING_ZERO);
  CHECK_ERR(tg_rlp_get_u256(&item, &u), TG_ELEADING_ZERO);
  CHECK_OK(dec_hex("00", buf, sizeof buf, &n)); /* the byte 0x00 is not the integer 0 */
  CHECK_OK(tg_rlp_decode(&item, buf, n));
  CHECK_ERR(tg_rlp_get_u64(&item, &v), TG_ELEADING_ZERO);
  CHECK_OK(dec_hex("80", buf, sizeof buf, &n));
  CHECK_OK(tg_rlp_decode(&item, buf, n));
  CHECK_OK(tg_rlp_get_u64(&item, &v));
  CHECK_INT(v, 0);
  CHECK_OK(dec_hex("89010000000000000000", buf, sizeof buf, &n));
  CHECK_OK(tg_rlp_decode(&item, buf, n));
  CHECK_ERR(tg_rlp_get_u64(&item, &v), TG_EOVERFLOW);
  CHECK_OK(tg_rlp_get_u256(&item, &u));
  CHECK_OK(dec_hex("a1010000000000000000000000000000000000000000000000000000000000000000", buf,
                   sizeof buf, &n));
  CHECK_OK(tg_rlp_decode(&item, buf, n));
  CHECK_ERR(tg_rlp_get_u256(&item, &u), TG_EOVERFLOW);
  CHECK_OK(dec_hex("c0", buf, sizeof buf, &n));
  CHECK_OK(tg_rlp_decode(&item, buf, n));
  CHECK_ERR(tg_rlp_get_u64(&item, &v), TG_ERLP_TYPE);
  CHECK_ERR(tg_rlp_get_fixed(&item, buf, 1), TG_ERLP_TYPE);
  /* u64 encodings and their lengths agree. */
  static const uint64_t vals[] = {0, 1, 0x7f, 0x80, 0xff, 0x100, UINT64_MAX};
  for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
    tg_buf b;
    tg_buf_init(&b, 0);
    tg_rlp_sink s;
    tg_rlp_sink_init(&s, &b, NULL);
    tg_rlp_put_u64(&s, vals[i]);
    CHECK_OK(tg_rlp_sink_status(&s));
    CHECK_INT(b.len, tg_rlp_u64_len(vals[i]));
    CHECK_OK(tg_rlp_decode(&item, b.data, b.len));
    CHECK_OK(tg_rlp_get_u64(&item, &v));
    CHECK(v == vals[i]);
    tg_u256_from_u64(&u, vals[i]);
    CHECK_INT(tg_rlp_u256_len(&u), b.len);
    tg_buf_cleanup(&b);
  }
}

/* The sink streams identical bytes into a buffer and into Keccak, and honours the cap. */
static void test_sink(void) {
  tg_buf b;
  tg_buf_init(&b, 0);
  tg_keccak_ctx k;
  tg_keccak256_init(&k);
  tg_rlp_sink s;
  tg_rlp_sink_init(&s, &b, &k);
  static const uint8_t big[100] = {1, 2, 3};
  tg_rlp_put_list_header(&s, 4 + 1 + 2 + tg_rlp_bytes_len(big, sizeof big));
  tg_rlp_put_bytes(&s, "dog", 3);
  tg_rlp_put_bytes(&s, "\x7f", 1);
  tg_rlp_put_bytes(&s, "\x80", 1);
  tg_rlp_put_bytes(&s, big, sizeof big);
  CHECK_OK(tg_rlp_sink_status(&s));
  tg_hash h1, h2;
  tg_keccak256_final(&k, &h1);
  tg_keccak256(&h2, b.data, b.len);
  CHECK_MEM(h1.b, h2.b, 32);
  CHECK_INT(s.len, b.len);
  tg_rlp_item item;
  CHECK_OK(tg_rlp_decode(&item, b.data, b.len));
  size_t count;
  CHECK_OK(tg_rlp_list_count(&item, &count));
  CHECK_INT(count, 4);
  CHECK_INT(b.data[0], 0xf8);
  tg_buf_cleanup(&b);

  tg_buf small;
  tg_buf_init(&small, 4);
  tg_rlp_sink_init(&s, &small, NULL);
  tg_rlp_put_bytes(&s, "dog", 3);
  tg_rlp_put_bytes(&s, "cat", 3);
  tg_rlp_put_u64(&s, 1);
  CHECK_ERR(tg_rlp_sink_status(&s), TG_ETOOBIG);
  CHECK_INT(small.len, 4);
  tg_buf_cleanup(&small);
}

static void test_iter(void) {
  uint8_t buf[32];
  size_t n;
  CHECK_OK(dec_hex("ca83646f6783676f64c101", buf, sizeof buf, &n));
  tg_rlp_item item, sub;
  CHECK_OK(tg_rlp_decode(&item, buf, n));
  tg_rlp_iter it;
  CHECK_OK(tg_rlp_iter_init(&it, &item));
  CHECK_OK(tg_rlp_iter_next(&it, &sub));
  CHECK(!sub.is_list && sub.payload.len == 3 && memcmp(sub.payload.ptr, "dog", 3) == 0);
  CHECK_OK(tg_rlp_iter_next(&it, &sub));
  CHECK_OK(tg_rlp_iter_next(&it, &sub));
  CHECK(sub.is_list && sub.raw.len == 2);
  CHECK(!tg_rlp_iter_more(&it));
  CHECK_ERR(tg_rlp_iter_next(&it, &sub), TG_ENOTFOUND);
  CHECK_OK(dec_hex("83646f67", buf, sizeof buf, &n));
  CHECK_OK(tg_rlp_decode(&item, buf, n));
  CHECK_ERR(tg_rlp_iter_init(&it, &item), TG_ERLP_TYPE);
}


/* Runs `tollgate <args>` through the shell; its stdout (trailing newline cut) into out. */
static int run_cli(char *out, size_t cap, const char *args) {
  const char *build = getenv("TG_BUILD");
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "%s/tollgate %s 2>/dev/null", build && *build ? build : "build", args);
  FILE *f = popen(cmd, "r");
  if (!f) return -1;
  size_t n = fread(out, 1, cap - 1, f);
  out[n] = 0;
  while (n && out[n - 1] == '\n') out[--n] = 0;
  int st = pclose(f);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* `tollgate to-rlp` / `from-rlp` against cast 1.7.1's outputs (ORACLE.md and checked by hand). */
static void test_cli(void) {
  static const struct {
    const char *args, *want;
  } ok[] = {
      {"to-rlp '[\"0x646f67\",\"0x676f64\",[\"0x01\"]]'", "0xca83646f6783676f64c101"},
      {"to-rlp 0x", "0x80"},
      {"to-rlp ''", "0x80"},
      {"to-rlp 0x80", "0x8180"},
      {"to-rlp ab", "0x81ab"},
      {"to-rlp '[256,null,[]]'", "0xc5820100 80c0"},
      {"to-rlp 123", "0x7b"},
      {"from-rlp 0xc7c0c1c0c3c0c1c0", "[[],[[]],[[],[[]]]]"},
      {"from-rlp 0xca83646f6783676f64c101", "[\"0x646f67\",\"0x676f64\",[\"0x01\"]]"},
      {"from-rlp 0x80", "\"0x\""},
      {"from-rlp 0x00", "\"0x00\""},
      {"from-rlp --as-int 0x820400", "1024"},
  };
  char out[4096];
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    char want[256];
    /* (a space in a wanted value only splits a long literal) */
    size_t k = 0;
    for (const char *p = ok[i].want; *p && k < sizeof want - 1; p++)
      if (*p != ' ') want[k++] = *p;
    want[k] = 0;
    int st = run_cli(out, sizeof out, ok[i].args);
    CHECKF(st == 0 && strcmp(out, want) == 0, "tollgate %s: exit %d, got '%s', want '%s'",
           ok[i].args, st, out, want);
  }
  static const char *const bad[] = {
      "from-rlp 0x8100", "from-rlp 0xb800", "from-rlp 0x", "from-rlp 0x8080", "from-rlp 0x0",
      "from-rlp --as-int 0x8200ff", "to-rlp '[true]'", "to-rlp '{}'", "to-rlp '[\"0xabc\"]'",
      "to-rlp '[-1]'", "to-rlp 0X01",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int st = run_cli(out, sizeof out, bad[i]);
    CHECKF(st == 1 && out[0] == 0, "tollgate %s: exit %d, output '%s'", bad[i], st, out);
  }
}

/* ------------------------------------------------- differential test against cast */

static uint64_t rng_state = 0x2545f4914f6cdd1dull;

static uint64_t rng(void) {
  uint64_t x = rng_state;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return rng_state = x;
}

/* A random nested value as cast's JSON: lists and 0x-hex strings around the length edges. */
static void rand_item(tg_buf *out, int depth) {
  static const size_t lens[] = {0, 1, 1, 1, 2, 20, 32, 55, 56, 57, 300};
  int rc = 0;
  if (depth < 4 && rng() % 3 == 0) {
    size_t n = (size_t)(rng() % 4);
    rc |= tg_buf_append_byte(out, '[');
    for (size_t i = 0; i < n; i++) {
      if (i) rc |= tg_buf_append_byte(out, ',');
      rand_item(out, depth + 1);
    }
    rc |= tg_buf_append_byte(out, ']');
  } else {
    size_t n = lens[rng() % (sizeof lens / sizeof lens[0])];
    rc |= tg_buf_append_str(out, "\"0x");
    for (size_t i = 0; i < n; i++) {
      uint8_t b = (uint8_t)rng();
      if (n == 1 && rng() % 2) b &= 0x7f; /* single bytes on both sides of 0x80 */
      rc |= tg_buf_printf(out, "%02x", b);
    }
    rc |= tg_buf_append_byte(out, '"');
  }
  if (rc) tgt_fail_at(__FILE__, __LINE__, "buffer");
}

static int run_sh(char *out, size_t cap, const char *cmdline) {
  FILE *f = popen(cmdline, "r");
  if (!f) return -1;
  size_t n = fread(out, 1, cap - 1, f);
  out[n] = 0;
  while (n && out[n - 1] == '\n') out[--n] = 0;
  int st = pclose(f);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/*
 * Random nested values through `cast to-rlp` and `tollgate to-rlp` (identical
 * bytes), then both `from-rlp` (identical JSON, equal to the input). Also
 * random corruptions of the encoding: both must refuse or both print the
 * same, except trailing bytes, which cast ignores and tollgate refuses.
 * TG_DIFF_N cases (default 100).
 */
static void test_cast_differential(void) {
  char cast[1024];
  snprintf(cast, sizeof cast, "%s/node_modules/.bin/cast", tgt_root());
  FILE *probe = fopen(cast, "r");
  if (!probe) {
    tgt_skip("cast is not installed (node_modules/.bin/cast)");
    return;
  }
  fclose(probe);
  char home[] = "/tmp/tg-test-rlp-XXXXXX";
  if (!mkdtemp(home)) {
    tgt_skip("no scratch HOME for cast");
    return;
  }
  const char *build = getenv("TG_BUILD");
  char tollgate[1024];
  snprintf(tollgate, sizeof tollgate, "%s/tollgate", build && *build ? build : "build");
  const char *ns = getenv("TG_DIFF_N");
  long n = ns && *ns ? strtol(ns, NULL, 10) : 100;
  static char cmd[65536], a[32768], b[32768], c[32768], d[32768];
  long same = 0, corrupt = 0;
  for (long i = 0; i < n; i++) {
    tg_buf j;
    tg_buf_init(&j, 0);
    rand_item(&j, 0);
    snprintf(cmd, sizeof cmd, "HOME=%s %s to-rlp '%s' 2>&1", home, cast, (const char *)j.data);
    int sa = run_sh(a, sizeof a, cmd);
    snprintf(cmd, sizeof cmd, "%s to-rlp '%s' 2>&1", tollgate, (const char *)j.data);
    int sb = run_sh(b, sizeof b, cmd);
    CHECKF(sa == 0 && sb == 0 && strcmp(a, b) == 0, "to-rlp %.200s: cast %.100s, tollgate %.100s",
           (const char *)j.data, a, b);
    snprintf(cmd, sizeof cmd, "HOME=%s %s from-rlp %s 2>&1", home, cast, a);
    sa = run_sh(c, sizeof c, cmd);
    snprintf(cmd, sizeof cmd, "%s from-rlp %s 2>&1", tollgate, a);
    sb = run_sh(d, sizeof d, cmd);
    CHECKF(sa == 0 && sb == 0 && strcmp(c, d) == 0 && strcmp(d, (const char *)j.data) == 0,
           "from-rlp %.200s: cast %.100s, tollgate %.100s", a, c, d);
    if (sa == 0 && sb == 0 && strcmp(c, d) == 0) same++;
    /* Corrupt one byte of the encoding (or cut it short). */
    size_t len = strlen(a);
    if (len > 4) {
      size_t pos = 2 + 2 * (size_t)(rng() % ((len - 2) / 2));
      if (rng() % 4 == 0) {
        a[pos] = 0;
      } else {
        static const char hx[] = "0123456789abcdef";
        a[pos] = hx[rng() % 16];
        a[pos + 1] = hx[rng() % 16];
      }
      snprintf(cmd, sizeof cmd, "HOME=%s %s from-rlp %s 2>/dev/null", home, cast, a);
      sa = run_sh(c, sizeof c, cmd);
      snprintf(cmd, sizeof cmd, "%s from-rlp %s 2>/dev/null", tollgate, a);
      sb = run_sh(d, sizeof d, cmd);
      if (sb == 0)
        CHECKF(sa == 0 && strcmp(c, d) == 0, "corrupted %.200s: cast %d %.100s, tollgate %.100s",
               a, sa, c, d);
      else if (sa == 0) {
        /* Only trailing bytes may separate us: cast ignores them. */
        size_t raw_len;
        uint8_t *raw = tgt_unhex(a, &raw_len);
        tg_rlp_item item;
        CHECKF(raw && tg_rlp_decode(&item, raw, raw_len) == TG_ETRAILING,
               "corrupted %.200s: cast accepts (%.100s), tollgate refuses", a, c);
        free(raw);
      }
      corrupt++;
    }
    tg_buf_cleanup(&j);
  }
  printf("# cast differential: %ld values, %ld identical round trips, %ld corruptions compared\n", n,
         same, corrupt);
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", home);
  if (system(cmd) != 0) printf("# could not remove %s\n", home);
}

int main(void) {
  RUN(test_rlptest);
  RUN(test_invalid_rlp);
  RUN(test_random_rlp);
  RUN(test_ethers_rlp);
  RUN(test_errors);
  RUN(test_depth);
  RUN(test_integers);
  RUN(test_sink);
  RUN(test_iter);
  RUN(test_cli);
  RUN(test_cast_differential);
  return tgt_done();
}
