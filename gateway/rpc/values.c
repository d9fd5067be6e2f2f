/* JSON-RPC value encoding: quantities, data, addresses and hashes to and from JSON strings. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate/hex.h"
#include "tollgate/rpc.h"
#include "tollgate/u256.h"

/* The digits of a "0x"-prefixed string, or NULL. */
static const char *digits_of(const json_t *v, size_t *n) {
  if (!json_is_string(v)) return NULL;
  const char *s = json_string_value(v);
  size_t len = json_string_length(v);
  if (len < 2 || s[0] != '0' || (s[1] != 'x' && s[1] != 'X')) return NULL;
  *n = len - 2;
  return s + 2;
}

int tg_rpc_parse_u64(const json_t *v, uint64_t *out) {
  *out = 0;
  size_t n;
  const char *d = digits_of(v, &n);
  if (!d) return json_is_string(v) ? TG_EHEX_PREFIX : TG_EJSON_FIELD;
  if (n == 0) return TG_EHEX;
  uint64_t x = 0;
  for (size_t i = 0; i < n; i++) {
    int c = tg_hex_digit((unsigned char)d[i]);
    if (c < 0) return TG_EHEX;
    if (x >> 60) return TG_EOVERFLOW;
    x = (x << 4) | (uint64_t)c;
  }
  *out = x;
  return 0;
}

int tg_rpc_parse_u256(const json_t *v, tg_u256 *out) {
  tg_u256_zero(out);
  size_t n;
  const char *d = digits_of(v, &n);
  if (!d) return json_is_string(v) ? TG_EHEX_PREFIX : TG_EJSON_FIELD;
  if (n == 0) return TG_EHEX;
  /* Leading zeros beyond 64 digits are tolerated, nothing else. */
  while (n > 64 && *d == '0') d++, n--;
  if (n > 64) return TG_EOVERFLOW;
  uint8_t be[32] = {0};
  for (size_t i = 0; i < n; i++) {
    int c = tg_hex_digit((unsigned char)d[n - 1 - i]);
    if (c < 0) return TG_EHEX;
    be[31 - i / 2] |= (uint8_t)(i & 1 ? c << 4 : c);
  }
  memcpy(out->b, be, 32);
  return 0;
}

static int parse_fixed(const json_t *v, uint8_t *out, size_t n) {
  memset(out, 0, n);
  if (!json_is_string(v)) return TG_EJSON_FIELD;
  const char *s = json_string_value(v);
  size_t len = json_string_length(v);
  if (len != 2 + 2 * n || s[0] != '0' || (s[1] != 'x' && s[1] != 'X')) return TG_EHEX;
  int rc = tg_hex_decode_exact(out, n, s, len);
  if (rc) memset(out, 0, n);
  return rc;
}

int tg_rpc_parse_hash(const json_t *v, tg_hash *out) {
  return parse_fixed(v, out->b, 32);
}

int tg_rpc_parse_address(const json_t *v, tg_address *out) {
  /* Nodes send lower-case or checksummed addresses: case is not checked here. */
  return parse_fixed(v, out->b, 20);
}

int tg_rpc_parse_data(const json_t *v, tg_buf *out) {
  if (!json_is_string(v)) return TG_EJSON_FIELD;
  return tg_hex_decode_buf(out, json_string_value(v), json_string_length(v),
                           TG_HEX_PREFIX_REQUIRED);
}

static json_t *str_or_abort(const char *s) {
  json_t *j = json_string(s);
  if (!j) abort();
  return j;
}

json_t *tg_rpc_json_u64(uint64_t v) {
  char buf[24];
  snprintf(buf, sizeof buf, "0x%llx", (unsigned long long)v);
  return str_or_abort(buf);
}

json_t *tg_rpc_json_u256(const tg_u256 *v) {
  char buf[TG_U256_HEX_MAX];
  tg_u256_to_hex(v, buf);
  return str_or_abort(buf);
}

json_t *tg_rpc_json_bytes(const uint8_t *p, size_t len) {
  char *s = tg_hex_dup(p, len);
  if (!s) abort();
  json_t *j = str_or_abort(s);
  free(s);
  return j;
}

json_t *tg_rpc_json_address(const tg_address *a) {
  return tg_rpc_json_bytes(a->b, 20);
}

json_t *tg_rpc_json_hash(const tg_hash *h) {
  return tg_rpc_json_bytes(h->b, 32);
}

json_t *tg_rpc_json_block(const char *tag) {
  return str_or_abort(tag ? tag : "latest");
}

const char *tg_rpc_block_tag(char buf[24], uint64_t number) {
  snprintf(buf, 24, "0x%llx", (unsigned long long)number);
  return buf;
}
