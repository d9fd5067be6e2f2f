/* x402 v2 envelopes: strict decoding of untrusted payment headers and encoding of our own. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sodium.h>

#include "tollgate/address.h"
#include "tollgate/hex.h"
#include "tollgate/u256.h"
#include "tollgate/x402.h"

/* Reasons from the x402 v2 specification (section 9) and the schemes' documents. */
#define R_PAYLOAD "invalid_payload"
#define R_VERSION "invalid_x402_version"
#define R_SCHEME "invalid_scheme"
#define R_NETWORK "invalid_network"
#define R_EXACT_SIG "invalid_exact_evm_payload_signature"
#define R_CHANNEL_VOUCHER "invalid_batch_settlement_evm_voucher_payload"
#define R_CHANNEL_DEPOSIT "invalid_batch_settlement_evm_deposit_payload"
#define R_CHANNEL_REFUND "invalid_batch_settlement_evm_refund_payload"
#define R_CHANNEL_TYPE "invalid_batch_settlement_evm_payload_type"

/* ---- base64 ------------------------------------------------------------ */

/*
 * The common case, table-driven: only alphabet characters, then the padding the length calls
 * for ("=" after 3 characters of a group, "==" after 2, or none), and zero bits left over.
 * Anything else returns -1 and goes to libsodium's decoder, which gives the verdict; on the
 * inputs accepted here both give the same bytes (test_x402 compares them). libsodium's decoder
 * is constant-time, which a PAYMENT-SIGNATURE does not need, and costs several microseconds per
 * header. Returns the number of bytes written.
 */
static const int8_t b64_val[256] = {
    ['A'] = 1,  ['B'] = 2,  ['C'] = 3,  ['D'] = 4,  ['E'] = 5,  ['F'] = 6,  ['G'] = 7,  ['H'] = 8,
    ['I'] = 9,  ['J'] = 10, ['K'] = 11, ['L'] = 12, ['M'] = 13, ['N'] = 14, ['O'] = 15, ['P'] = 16,
    ['Q'] = 17, ['R'] = 18, ['S'] = 19, ['T'] = 20, ['U'] = 21, ['V'] = 22, ['W'] = 23, ['X'] = 24,
    ['Y'] = 25, ['Z'] = 26, ['a'] = 27, ['b'] = 28, ['c'] = 29, ['d'] = 30, ['e'] = 31, ['f'] = 32,
    ['g'] = 33, ['h'] = 34, ['i'] = 35, ['j'] = 36, ['k'] = 37, ['l'] = 38, ['m'] = 39, ['n'] = 40,
    ['o'] = 41, ['p'] = 42, ['q'] = 43, ['r'] = 44, ['s'] = 45, ['t'] = 46, ['u'] = 47, ['v'] = 48,
    ['w'] = 49, ['x'] = 50, ['y'] = 51, ['z'] = 52, ['0'] = 53, ['1'] = 54, ['2'] = 55, ['3'] = 56,
    ['4'] = 57, ['5'] = 58, ['6'] = 59, ['7'] = 60, ['8'] = 61, ['9'] = 62, ['+'] = 63, ['/'] = 64,
}; /* value + 1; 0: not in the alphabet */

static long b64_fast(uint8_t *dst, const char *src, size_t len) {
  size_t pad = 0;
  if (len % 4 == 0 && len > 0 && src[len - 1] == '=') pad = src[len - 2] == '=' ? 2 : 1;
  size_t body = len - pad;
  if (body % 4 == 1 || (pad && body % 4 != 4 - pad)) return -1;
  const unsigned char *p = (const unsigned char *)src;
  uint32_t acc = 0;
  unsigned bits = 0;
  size_t n = 0;
  for (size_t i = 0; i < body; i++) {
    int v = b64_val[p[i]];
    if (v == 0) return -1;
    acc = (acc << 6) | (uint32_t)(v - 1);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      dst[n++] = (uint8_t)(acc >> bits);
    }
  }
  if (acc & ((1u << bits) - 1u)) return -1; /* non-zero bits left over */
  return (long)n;
}

int tg_base64_decode(tg_buf *out, const char *b64, size_t len) {
  if (len > TG_X402_HEADER_MAX) return TG_ETOOBIG;
  size_t cap = len / 4 * 3 + 3;
  int rc = tg_buf_reserve(out, cap);
  if (rc) return rc;
  long fast = b64_fast(out->data + out->len, b64, len);
  if (fast >= 0) {
    out->len += (size_t)fast;
    out->data[out->len] = 0;
    return TG_OK;
  }
  size_t bin_len = 0;
  const char *end = NULL;
  /* Padding is optional on input: try the padded form, then the unpadded one. */
  int variant = (len % 4 == 0) ? sodium_base64_VARIANT_ORIGINAL
                               : sodium_base64_VARIANT_ORIGINAL_NO_PADDING;
  if (sodium_base642bin(out->data + out->len, cap, b64, len, NULL, &bin_len, &end, variant) != 0 ||
      end != b64 + len)
    return TG_EBASE64;
  out->len += bin_len;
  out->data[out->len] = 0;
  return TG_OK;
}

/* Headers are public bytes: a table lookup per sextet (libsodium's encoder is constant-time, 4x slower). */
int tg_base64_encode(tg_buf *out, const uint8_t *data, size_t len) {
  static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  if (len > (SIZE_MAX - 1) / 4 * 3 - 3) return TG_ETOOBIG;
  size_t n = (len + 2) / 3 * 4;
  int rc = tg_buf_reserve(out, n); /* and room for the NUL */
  if (rc) return rc;
  char *d = (char *)out->data + out->len;
  size_t i = 0;
  for (; i + 3 <= len; i += 3) {
    uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8 | data[i + 2];
    *d++ = abc[v >> 18];
    *d++ = abc[(v >> 12) & 63];
    *d++ = abc[(v >> 6) & 63];
    *d++ = abc[v & 63];
  }
  if (i < len) {
    uint32_t v = (uint32_t)data[i] << 16 | (i + 1 < len ? (uint32_t)data[i + 1] << 8 : 0);
    *d++ = abc[v >> 18];
    *d++ = abc[(v >> 12) & 63];
    *d++ = i + 1 < len ? abc[(v >> 6) & 63] : '=';
    *d++ = '=';
  }
  *d = 0;
  out->len += n;
  return TG_OK;
}

/* ---- field readers: each refuses anything but the one expected shape ---- */

static int get_str(const json_t *obj, const char *key, const char **s, size_t *len) {
  const json_t *v = json_object_get(obj, key);
  if (!json_is_string(v)) return TG_EJSON_FIELD;
  *s = json_string_value(v);
  *len = json_string_length(v);
  if (strlen(*s) != *len) return TG_EJSON_FIELD; /* embedded NUL */
  return TG_OK;
}

static int get_address(const json_t *obj, const char *key, tg_address *out) {
  const char *s;
  size_t len;
  int rc = get_str(obj, key, &s, &len);
  if (rc) return rc;
  return tg_address_parse(out, s, len);
}

static int get_hash(const json_t *obj, const char *key, tg_hash *out) {
  const char *s;
  size_t len;
  int rc = get_str(obj, key, &s, &len);
  if (rc) return rc;
  if (len != 66 || s[0] != '0' || (s[1] != 'x' && s[1] != 'X')) return TG_EHEX;
  return tg_hex_decode_exact(out->b, 32, s, len);
}

/* Amounts are decimal strings of atomic units, without sign or leading zeros. */
static int parse_amount(tg_u256 *out, const char *s, size_t len) {
  if (len == 0 || len > 78) return TG_ENUMBER;
  if (len > 1 && s[0] == '0') return TG_ELEADING_ZERO;
  return tg_u256_parse_dec(out, s, len);
}

static int get_amount(const json_t *obj, const char *key, tg_u256 *out) {
  const char *s;
  size_t len;
  int rc = get_str(obj, key, &s, &len);
  if (rc) return rc;
  return parse_amount(out, s, len);
}

/* A uint64 given as a JSON integer or a decimal string (clients differ). */
static int get_u64(const json_t *obj, const char *key, uint64_t *out) {
  const json_t *v = json_object_get(obj, key);
  if (json_is_integer(v)) {
    json_int_t i = json_integer_value(v);
    if (i < 0) return TG_ERANGE;
    *out = (uint64_t)i;
    return TG_OK;
  }
  if (!json_is_string(v)) return TG_EJSON_FIELD;
  tg_u256 u;
  int rc = parse_amount(&u, json_string_value(v), json_string_length(v));
  if (rc) return rc;
  return tg_u256_to_u64(&u, out);
}

static int get_sig(const json_t *obj, const char *key, tg_x402_sig *out) {
  const char *s;
  size_t len;
  int rc = get_str(obj, key, &s, &len);
  if (rc) return rc;
  if (len < 2 || s[0] != '0' || (s[1] != 'x' && s[1] != 'X')) return TG_EHEX_PREFIX;
  rc = tg_hex_decode(out->b, sizeof out->b, &out->len, s, len, TG_HEX_PREFIX_REQUIRED);
  if (rc) return rc;
  if (out->len < 65) return TG_ESIG;
  return TG_OK;
}

static void copy_str(char *dst, size_t cap, const char *src) {
  size_t n = strlen(src);
  if (n >= cap) n = cap - 1;
  memcpy(dst, src, n);
  dst[n] = 0;
}

int tg_x402_network_parse(uint64_t *chain_id, const char *s, size_t len) {
  static const char prefix[] = "eip155:";
  *chain_id = 0;
  if (len <= sizeof prefix - 1 || memcmp(s, prefix, sizeof prefix - 1) != 0) return TG_EUNSUPPORTED;
  tg_u256 v;
  int rc = parse_amount(&v, s + sizeof prefix - 1, len - (sizeof prefix - 1));
  if (rc) return rc;
  rc = tg_u256_to_u64(&v, chain_id);
  if (!rc && *chain_id == 0) rc = TG_ERANGE;
  return rc;
}

static tg_x402_scheme scheme_from(const char *s) {
  if (strcmp(s, TG_X402_SCHEME_EXACT) == 0) return TG_X402_EXACT;
  if (strcmp(s, TG_X402_SCHEME_CHANNEL) == 0) return TG_X402_CHANNEL;
  return TG_X402_UNKNOWN;
}

static const char *scheme_name(tg_x402_scheme s) {
  return s == TG_X402_CHANNEL ? TG_X402_SCHEME_CHANNEL : TG_X402_SCHEME_EXACT;
}

/* Reads one PaymentRequirements object; *reason names what was wrong. */
static int read_requirements(tg_x402_requirements *out, const char **reason, const json_t *o) {
  const char *s;
  size_t len;
  int rc;
  memset(out, 0, sizeof *out);
  *reason = R_PAYLOAD;
  if (!json_is_object(o)) return TG_EJSON_FIELD;
  if ((rc = get_str(o, "scheme", &s, &len))) return rc;
  out->scheme = scheme_from(s);
  if (out->scheme == TG_X402_UNKNOWN) {
    *reason = R_SCHEME;
    return TG_EUNSUPPORTED;
  }
  if ((rc = get_str(o, "network", &s, &len))) return rc;
  if ((rc = tg_x402_network_parse(&out->chain_id, s, len))) {
    *reason = R_NETWORK;
    return rc;
  }
  if ((rc = get_amount(o, "amount", &out->amount))) return rc;
  if ((rc = get_address(o, "asset", &out->asset))) return rc;
  if ((rc = get_address(o, "payTo", &out->pay_to))) return rc;
  if ((rc = get_u64(o, "maxTimeoutSeconds", &out->max_timeout_seconds))) return rc;
  const json_t *extra = json_object_get(o, "extra");
  if (extra == NULL || json_is_null(extra)) return TG_OK;
  if (!json_is_object(extra)) return TG_EJSON_FIELD;
  const json_t *v;
  if ((v = json_object_get(extra, "name")) != NULL) {
    if (!json_is_string(v) || json_string_length(v) >= sizeof out->token_name) return TG_EJSON_FIELD;
    copy_str(out->token_name, sizeof out->token_name, json_string_value(v));
  }
  if ((v = json_object_get(extra, "version")) != NULL) {
    if (!json_is_string(v) || json_string_length(v) >= sizeof out->token_version)
      return TG_EJSON_FIELD;
    copy_str(out->token_version, sizeof out->token_version, json_string_value(v));
  }
  if (out->scheme == TG_X402_CHANNEL) {
    if (json_object_get(extra, "receiverAuthorizer") &&
        (rc = get_address(extra, "receiverAuthorizer", &out->receiver_authorizer)))
      return rc;
    if (json_object_get(extra, "withdrawDelay") &&
        (rc = get_u64(extra, "withdrawDelay", &out->withdraw_delay)))
      return rc;
    if (json_object_get(extra, "channelContract") &&
        (rc = get_address(extra, "channelContract", &out->channel_contract)))
      return rc;
    if (json_object_get(extra, "minDeposit") &&
        (rc = get_amount(extra, "minDeposit", &out->min_deposit)))
      return rc;
  }
  return TG_OK;
}

static int read_exact(tg_x402_exact *out, const char **reason, const json_t *payload) {
  int rc;
  *reason = R_PAYLOAD;
  const json_t *auth = json_object_get(payload, "authorization");
  if (!json_is_object(auth)) return TG_EJSON_FIELD;
  if ((rc = get_address(auth, "from", &out->from))) return rc;
  if ((rc = get_address(auth, "to", &out->to))) return rc;
  if ((rc = get_amount(auth, "value", &out->value))) return rc;
  if ((rc = get_u64(auth, "validAfter", &out->valid_after))) return rc;
  if ((rc = get_u64(auth, "validBefore", &out->valid_before))) return rc;
  if ((rc = get_hash(auth, "nonce", &out->nonce))) return rc;
  if ((rc = get_sig(payload, "signature", &out->signature))) {
    *reason = R_EXACT_SIG;
    return rc;
  }
  return TG_OK;
}

static int read_channel_config(tg_channel_config *c, const json_t *o) {
  int rc;
  if (!json_is_object(o)) return TG_EJSON_FIELD;
  if ((rc = get_address(o, "payer", &c->payer))) return rc;
  if ((rc = get_address(o, "payerAuthorizer", &c->payer_authorizer))) return rc;
  if ((rc = get_address(o, "receiver", &c->receiver))) return rc;
  if ((rc = get_address(o, "receiverAuthorizer", &c->receiver_authorizer))) return rc;
  if ((rc = get_address(o, "token", &c->token))) return rc;
  if ((rc = get_u64(o, "withdrawDelay", &c->withdraw_delay))) return rc;
  if (c->withdraw_delay >= ((uint64_t)1 << 40)) return TG_ERANGE;
  return get_hash(o, "salt", &c->salt);
}

/* uint128 on-chain: a ceiling above it could never be claimed. */
static int check_u128(const tg_u256 *v) {
  for (int i = 0; i < 16; i++)
    if (v->b[i]) return TG_ERANGE;
  return TG_OK;
}

static int read_channel(tg_x402_channel *out, const char **reason, const json_t *payload) {
  const char *s;
  size_t len;
  int rc;
  *reason = R_CHANNEL_TYPE;
  if ((rc = get_str(payload, "type", &s, &len))) return rc;
  if (strcmp(s, "voucher") == 0) out->type = TG_X402_CHANNEL_VOUCHER;
  else if (strcmp(s, "deposit") == 0) out->type = TG_X402_CHANNEL_DEPOSIT;
  else if (strcmp(s, "refund") == 0) out->type = TG_X402_CHANNEL_REFUND;
  else return TG_EUNSUPPORTED;
  *reason = out->type == TG_X402_CHANNEL_DEPOSIT  ? R_CHANNEL_DEPOSIT
            : out->type == TG_X402_CHANNEL_REFUND ? R_CHANNEL_REFUND
                                                  : R_CHANNEL_VOUCHER;
  if ((rc = read_channel_config(&out->config, json_object_get(payload, "channelConfig")))) return rc;
  const json_t *v = json_object_get(payload, "voucher");
  if (!json_is_object(v)) return TG_EJSON_FIELD;
  if ((rc = get_hash(v, "channelId", &out->channel_id))) return rc;
  if ((rc = get_amount(v, "maxClaimableAmount", &out->max_claimable))) return rc;
  if ((rc = check_u128(&out->max_claimable))) return rc;
  if ((rc = get_sig(v, "signature", &out->voucher_signature))) return rc;
  if (out->type == TG_X402_CHANNEL_DEPOSIT) {
    const json_t *d = json_object_get(payload, "deposit");
    if (!json_is_object(d)) return TG_EJSON_FIELD;
    if ((rc = get_amount(d, "amount", &out->deposit_amount))) return rc;
    if ((rc = check_u128(&out->deposit_amount))) return rc;
    const json_t *a = json_object_get(json_object_get(d, "authorization"), "erc3009Authorization");
    if (!json_is_object(a)) return TG_EJSON_FIELD;
    if ((rc = get_u64(a, "validAfter", &out->deposit_valid_after))) return rc;
    if ((rc = get_u64(a, "validBefore", &out->deposit_valid_before))) return rc;
    if ((rc = get_hash(a, "salt", &out->deposit_nonce))) return rc;
    if ((rc = get_sig(a, "signature", &out->deposit_signature))) return rc;
    out->has_deposit = 1;
  }
  if (out->type == TG_X402_CHANNEL_REFUND && json_object_get(payload, "amount")) {
    if ((rc = get_amount(payload, "amount", &out->refund_amount))) return rc;
    out->has_refund_amount = 1;
  }
  return TG_OK;
}

/* The payment-identifier id: 16..128 characters of [A-Za-z0-9_-]. */
static int read_payment_id(char out[129], const json_t *extensions) {
  out[0] = 0;
  if (extensions == NULL) return TG_OK;
  if (!json_is_object(extensions)) return TG_EJSON_FIELD;
  const json_t *pi = json_object_get(extensions, "payment-identifier");
  if (pi == NULL) return TG_OK;
  const json_t *id = json_object_get(json_object_get(pi, "info"), "id");
  if (id == NULL) return TG_OK;
  if (!json_is_string(id)) return TG_EJSON_FIELD;
  size_t n = json_string_length(id);
  const char *s = json_string_value(id);
  if (n < 16 || n > 128) return TG_ERANGE;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
          c == '_'))
      return TG_EINVAL;
  }
  memcpy(out, s, n + 1);
  return TG_OK;
}

static json_t *decode_json_header(int *rc, const char *header, size_t len) {
  tg_buf raw;
  tg_buf_init(&raw, TG_X402_HEADER_MAX);
  *rc = tg_base64_decode(&raw, header, len);
  if (*rc) {
    tg_buf_cleanup(&raw);
    return NULL;
  }
  json_error_t jerr;
  json_t *root = json_loadb((const char *)raw.data, raw.len, JSON_REJECT_DUPLICATES, &jerr);
  tg_buf_cleanup(&raw);
  if (!root) *rc = TG_EJSON;
  else if (!json_is_object(root)) {
    json_decref(root);
    root = NULL;
    *rc = TG_EJSON;
  }
  return root;
}

int tg_x402_payment_decode(tg_x402_payment *out, const char **reason, const char *header,
                           size_t len) {
  const char *why = R_PAYLOAD;
  int rc;
  memset(out, 0, sizeof *out);
  json_t *root = decode_json_header(&rc, header, len);
  if (!root) goto done;
  const json_t *ver = json_object_get(root, "x402Version");
  if (!json_is_integer(ver) || json_integer_value(ver) != TG_X402_VERSION) {
    why = R_VERSION;
    rc = TG_EUNSUPPORTED;
    goto done;
  }
  if ((rc = read_requirements(&out->accepted, &why, json_object_get(root, "accepted")))) goto done;
  const json_t *res = json_object_get(root, "resource");
  if (res != NULL) {
    const json_t *url = json_object_get(res, "url");
    if (!json_is_object(res) || (url && (!json_is_string(url) ||
                                         json_string_length(url) >= sizeof out->resource_url))) {
      rc = TG_EJSON_FIELD;
      goto done;
    }
    if (url) copy_str(out->resource_url, sizeof out->resource_url, json_string_value(url));
  }
  if ((rc = read_payment_id(out->payment_id, json_object_get(root, "extensions")))) goto done;
  const json_t *payload = json_object_get(root, "payload");
  if (!json_is_object(payload)) {
    rc = TG_EJSON_FIELD;
    goto done;
  }
  if (out->accepted.scheme == TG_X402_EXACT) rc = read_exact(&out->u.exact, &why, payload);
  else rc = read_channel(&out->u.channel, &why, payload);
done:
  json_decref(root);
  if (rc) {
    sodium_memzero(out, sizeof *out);
    if (reason) *reason = why;
  } else if (reason) {
    *reason = NULL;
  }
  return rc;
}

/* ---- encoders ------------------------------------------------------------ */

static json_t *jaddr(const tg_address *a) {
  char s[TG_ADDRESS_HEX_LEN];
  tg_address_to_checksum(a, s);
  return json_string(s);
}

static json_t *jhex(const uint8_t *p, size_t n) {
  char *s = tg_hex_dup(p, n);
  json_t *j = json_string(s);
  free(s);
  return j;
}

static json_t *jamount(const tg_u256 *v) {
  char s[TG_U256_DEC_MAX];
  tg_u256_to_dec(v, s);
  return json_string(s);
}

static json_t *jnetwork(uint64_t chain_id) {
  char s[32];
  snprintf(s, sizeof s, "eip155:%llu", (unsigned long long)chain_id);
  return json_string(s);
}

static json_t *requirements_json(const tg_x402_requirements *r, const char *channel_state,
                                 const char *voucher_state) {
  json_t *o = json_object();
  json_object_set_new(o, "scheme", json_string(scheme_name(r->scheme)));
  json_object_set_new(o, "network", jnetwork(r->chain_id));
  json_object_set_new(o, "amount", jamount(&r->amount));
  json_object_set_new(o, "asset", jaddr(&r->asset));
  json_object_set_new(o, "payTo", jaddr(&r->pay_to));
  json_object_set_new(o, "maxTimeoutSeconds", json_integer((json_int_t)r->max_timeout_seconds));
  json_t *extra = json_object();
  if (r->token_name[0]) json_object_set_new(extra, "name", json_string(r->token_name));
  if (r->token_version[0]) json_object_set_new(extra, "version", json_string(r->token_version));
  if (r->scheme == TG_X402_CHANNEL) {
    json_object_set_new(extra, "receiverAuthorizer", jaddr(&r->receiver_authorizer));
    json_object_set_new(extra, "withdrawDelay", json_integer((json_int_t)r->withdraw_delay));
    json_object_set_new(extra, "channelContract", jaddr(&r->channel_contract));
    if (!tg_u256_is_zero(&r->min_deposit))
      json_object_set_new(extra, "minDeposit", jamount(&r->min_deposit));
    json_error_t e;
    json_t *cs = channel_state ? json_loads(channel_state, 0, &e) : NULL;
    json_t *vs = voucher_state ? json_loads(voucher_state, 0, &e) : NULL;
    if (cs) json_object_set_new(extra, "channelState", cs);
    if (vs) json_object_set_new(extra, "voucherState", vs);
  } else {
    json_object_set_new(extra, "assetTransferMethod", json_string("eip3009"));
  }
  json_object_set_new(o, "extra", extra);
  return o;
}

static json_t *payment_id_extension(int required, const char *id) {
  json_t *schema = json_pack(
      "{s:s, s:s, s:{s:{s:s}, s:{s:s, s:i, s:i}}, s:[s]}", "$schema",
      "https://json-schema.org/draft/2020-12/schema", "type", "object", "properties", "required",
      "type", "boolean", "id", "type", "string", "minLength", 16, "maxLength", 128, "required",
      "required");
  json_t *info = json_pack("{s:b}", "required", required);
  if (id && id[0]) json_object_set_new(info, "id", json_string(id));
  return json_pack("{s:{s:o, s:o}}", "payment-identifier", "info", info, "schema", schema);
}

/* Serializes JSON compactly and appends its base64 to out (and the JSON to json_out). */
static int emit(tg_buf *out, tg_buf *json_out, json_t *root) {
  char *text = json_dumps(root, JSON_COMPACT);
  json_decref(root);
  if (!text) return TG_ENOMEM;
  size_t n = strlen(text);
  int rc = tg_base64_encode(out, (const uint8_t *)text, n);
  if (!rc && json_out) rc = tg_buf_append(json_out, text, n);
  free(text);
  return rc;
}

int tg_x402_required_encode(tg_buf *out, tg_buf *json_out, const tg_x402_required *r) {
  if (r->n_accepts > TG_X402_MAX_ACCEPTS) return TG_EINVAL;
  json_t *root = json_object();
  json_object_set_new(root, "x402Version", json_integer(TG_X402_VERSION));
  if (r->error) json_object_set_new(root, "error", json_string(r->error));
  json_t *res = json_object();
  json_object_set_new(res, "url", json_string(r->resource_url ? r->resource_url : ""));
  if (r->description) json_object_set_new(res, "description", json_string(r->description));
  if (r->mime_type) json_object_set_new(res, "mimeType", json_string(r->mime_type));
  json_object_set_new(root, "resource", res);
  json_t *acc = json_array();
  for (size_t i = 0; i < r->n_accepts; i++)
    json_array_append_new(acc, requirements_json(&r->accepts[i], r->channel_state_json[i],
                                                 r->voucher_state_json[i]));
  json_object_set_new(root, "accepts", acc);
  if (r->advertise_payment_id || r->require_payment_id)
    json_object_set_new(root, "extensions", payment_id_extension(r->require_payment_id, NULL));
  return emit(out, json_out, root);
}

static json_t *config_json(const tg_channel_config *c) {
  json_t *o = json_object();
  json_object_set_new(o, "payer", jaddr(&c->payer));
  json_object_set_new(o, "payerAuthorizer", jaddr(&c->payer_authorizer));
  json_object_set_new(o, "receiver", jaddr(&c->receiver));
  json_object_set_new(o, "receiverAuthorizer", jaddr(&c->receiver_authorizer));
  json_object_set_new(o, "token", jaddr(&c->token));
  json_object_set_new(o, "withdrawDelay", json_integer((json_int_t)c->withdraw_delay));
  json_object_set_new(o, "salt", jhex(c->salt.b, 32));
  return o;
}

static json_t *u64_string(uint64_t v) {
  char s[24];
  snprintf(s, sizeof s, "%llu", (unsigned long long)v);
  return json_string(s);
}

int tg_x402_payment_encode(tg_buf *out, const tg_x402_payment *p) {
  json_t *root = json_object();
  json_object_set_new(root, "x402Version", json_integer(TG_X402_VERSION));
  if (p->resource_url[0])
    json_object_set_new(root, "resource", json_pack("{s:s}", "url", p->resource_url));
  json_object_set_new(root, "accepted", requirements_json(&p->accepted, NULL, NULL));
  json_t *payload = json_object();
  if (p->accepted.scheme == TG_X402_EXACT) {
    const tg_x402_exact *e = &p->u.exact;
    json_t *a = json_object();
    json_object_set_new(a, "from", jaddr(&e->from));
    json_object_set_new(a, "to", jaddr(&e->to));
    json_object_set_new(a, "value", jamount(&e->value));
    json_object_set_new(a, "validAfter", u64_string(e->valid_after));
    json_object_set_new(a, "validBefore", u64_string(e->valid_before));
    json_object_set_new(a, "nonce", jhex(e->nonce.b, 32));
    json_object_set_new(payload, "signature", jhex(e->signature.b, e->signature.len));
    json_object_set_new(payload, "authorization", a);
  } else {
    const tg_x402_channel *c = &p->u.channel;
    const char *type = c->type == TG_X402_CHANNEL_DEPOSIT  ? "deposit"
                       : c->type == TG_X402_CHANNEL_REFUND ? "refund"
                                                           : "voucher";
    json_object_set_new(payload, "type", json_string(type));
    json_object_set_new(payload, "channelConfig", config_json(&c->config));
    json_t *v = json_object();
    json_object_set_new(v, "channelId", jhex(c->channel_id.b, 32));
    json_object_set_new(v, "maxClaimableAmount", jamount(&c->max_claimable));
    json_object_set_new(v, "signature", jhex(c->voucher_signature.b, c->voucher_signature.len));
    json_object_set_new(payload, "voucher", v);
    if (c->type == TG_X402_CHANNEL_DEPOSIT) {
      json_t *a = json_object();
      json_object_set_new(a, "validAfter", u64_string(c->deposit_valid_after));
      json_object_set_new(a, "validBefore", u64_string(c->deposit_valid_before));
      json_object_set_new(a, "salt", jhex(c->deposit_nonce.b, 32));
      json_object_set_new(a, "signature", jhex(c->deposit_signature.b, c->deposit_signature.len));
      json_object_set_new(payload, "deposit",
                          json_pack("{s:o, s:{s:o}}", "amount", jamount(&c->deposit_amount),
                                    "authorization", "erc3009Authorization", a));
    }
    if (c->type == TG_X402_CHANNEL_REFUND && c->has_refund_amount)
      json_object_set_new(payload, "amount", jamount(&c->refund_amount));
  }
  json_object_set_new(root, "payload", payload);
  if (p->payment_id[0])
    json_object_set_new(root, "extensions", payment_id_extension(0, p->payment_id));
  return emit(out, NULL, root);
}

int tg_x402_required_decode(tg_x402_required_info *out, const char *header, size_t len) {
  int rc;
  memset(out, 0, sizeof *out);
  json_t *root = decode_json_header(&rc, header, len);
  if (!root) return rc;
  const json_t *ver = json_object_get(root, "x402Version");
  const json_t *acc = json_object_get(root, "accepts");
  if (!json_is_integer(ver) || json_integer_value(ver) != TG_X402_VERSION) {
    rc = TG_EUNSUPPORTED;
    goto done;
  }
  if (!json_is_array(acc)) {
    rc = TG_EJSON_FIELD;
    goto done;
  }
  const json_t *err = json_object_get(root, "error");
  if (json_is_string(err)) copy_str(out->error, sizeof out->error, json_string_value(err));
  const json_t *url = json_object_get(json_object_get(root, "resource"), "url");
  if (json_is_string(url)) copy_str(out->resource_url, sizeof out->resource_url, json_string_value(url));
  size_t i;
  const json_t *v;
  json_array_foreach(acc, i, v) {
    const char *why;
    tg_x402_requirements r;
    int e = read_requirements(&r, &why, v);
    if (e == TG_EUNSUPPORTED || e == TG_ERANGE || out->n_accepts == TG_X402_MAX_ACCEPTS) {
      out->n_unknown++; /* a scheme or network we do not pay with */
      continue;
    }
    if (e) {
      rc = e;
      goto done;
    }
    out->accepts[out->n_accepts++] = r;
  }
  const json_t *pi = json_object_get(json_object_get(root, "extensions"), "payment-identifier");
  if (pi) {
    out->payment_id_supported = 1;
    out->payment_id_required = json_is_true(json_object_get(json_object_get(pi, "info"), "required"));
  }
  rc = TG_OK;
done:
  json_decref(root);
  return rc;
}

/*
 * A successful answer's PAYMENT-RESPONSE is written directly, every paid call has one: the
 * same bytes as the jansson path below (compact, keys in the same order; every value is hex,
 * decimal or "eip155:N", so nothing needs escaping), without building a JSON tree
 * (test_x402.c compares the two).
 */
static int settle_success_encode(tg_buf *out, const tg_x402_settle_response *r) {
  char text[1024], payer[TG_ADDRESS_HEX_LEN], tx[67], cid[67];
  char amt[TG_U256_DEC_MAX], bal[TG_U256_DEC_MAX], claimed[TG_U256_DEC_MAX], cum[TG_U256_DEC_MAX];
  size_t n = 0;
#define PUT(...)                                                         \
  do {                                                                   \
    int k_ = snprintf(text + n, sizeof text - n, __VA_ARGS__);           \
    if (k_ < 0 || (size_t)k_ >= sizeof text - n) return TG_ETOOBIG;      \
    n += (size_t)k_;                                                     \
  } while (0)
  PUT("{\"success\":true");
  if (r->has_payer) {
    /* A worker answers the same payer over and over: its EIP-55 form (a keccak) is kept. */
    static _Thread_local tg_address last;
    static _Thread_local char last_hex[TG_ADDRESS_HEX_LEN];
    if (last_hex[0] == 0 || memcmp(last.b, r->payer.b, sizeof last.b) != 0) {
      tg_address_to_checksum(&r->payer, last_hex);
      last = r->payer;
    }
    memcpy(payer, last_hex, sizeof payer);
    PUT(",\"payer\":\"%s\"", payer);
  }
  tx[0] = 0;
  if (r->has_transaction) tg_hex_encode(tx, r->transaction.b, 32, 1);
  PUT(",\"transaction\":\"%s\",\"network\":\"eip155:%llu\"", tx, (unsigned long long)r->chain_id);
  if (r->has_charged || r->has_channel) {
    PUT(",\"extra\":{");
    if (r->has_charged) {
      tg_u256_to_dec(&r->charged, amt);
      PUT("\"chargedAmount\":\"%s\"%s", amt, r->has_channel ? "," : "");
    }
    if (r->has_channel) {
      tg_hex_encode(cid, r->channel_id.b, 32, 1);
      tg_u256_to_dec(&r->channel_balance, bal);
      tg_u256_to_dec(&r->channel_total_claimed, claimed);
      tg_u256_to_dec(&r->channel_charged_cumulative, cum);
      PUT("\"channelState\":{\"channelId\":\"%s\",\"balance\":\"%s\",\"totalClaimed\":\"%s\","
          "\"withdrawRequestedAt\":%lld,\"chargedCumulativeAmount\":\"%s\"}",
          cid, bal, claimed, (long long)(json_int_t)r->withdraw_requested_at, cum);
    }
    PUT("}");
  }
  PUT("}");
#undef PUT
  return tg_base64_encode(out, (const uint8_t *)text, n);
}

int tg_x402_settle_response_encode(tg_buf *out, const tg_x402_settle_response *r) {
  if (r->success) return settle_success_encode(out, r);
  return tg_x402_settle_response_encode_json(out, r);
}

int tg_x402_settle_response_encode_json(tg_buf *out, const tg_x402_settle_response *r) {
  json_t *root = json_object();
  json_object_set_new(root, "success", json_boolean(r->success));
  if (!r->success && r->error_reason)
    json_object_set_new(root, "errorReason", json_string(r->error_reason));
  if (r->has_payer) json_object_set_new(root, "payer", jaddr(&r->payer));
  json_object_set_new(root, "transaction",
                      r->has_transaction ? jhex(r->transaction.b, 32) : json_string(""));
  json_object_set_new(root, "network", jnetwork(r->chain_id));
  if (r->has_charged || r->has_channel) {
    json_t *extra = json_object();
    if (r->has_charged) json_object_set_new(extra, "chargedAmount", jamount(&r->charged));
    if (r->has_channel) {
      json_t *cs = json_object();
      json_object_set_new(cs, "channelId", jhex(r->channel_id.b, 32));
      json_object_set_new(cs, "balance", jamount(&r->channel_balance));
      json_object_set_new(cs, "totalClaimed", jamount(&r->channel_total_claimed));
      json_object_set_new(cs, "withdrawRequestedAt", json_integer((json_int_t)r->withdraw_requested_at));
      json_object_set_new(cs, "chargedCumulativeAmount", jamount(&r->channel_charged_cumulative));
      json_object_set_new(extra, "channelState", cs);
    }
    json_object_set_new(root, "extra", extra);
  }
  return emit(out, NULL, root);
}

int tg_x402_settle_response_decode(tg_x402_settle_response *out, char *reason_buf,
                                   size_t reason_cap, const char *header, size_t len) {
  int rc;
  memset(out, 0, sizeof *out);
  if (reason_buf && reason_cap) reason_buf[0] = 0;
  json_t *root = decode_json_header(&rc, header, len);
  if (!root) return rc;
  const json_t *ok = json_object_get(root, "success");
  const char *s;
  size_t n;
  if (!json_is_boolean(ok)) {
    rc = TG_EJSON_FIELD;
    goto done;
  }
  out->success = json_is_true(ok);
  if (!get_str(root, "errorReason", &s, &n) && reason_buf && reason_cap)
    copy_str(reason_buf, reason_cap, s);
  if (json_object_get(root, "payer")) {
    if ((rc = get_address(root, "payer", &out->payer))) goto done;
    out->has_payer = 1;
  }
  if ((rc = get_str(root, "network", &s, &n)) || (rc = tg_x402_network_parse(&out->chain_id, s, n)))
    goto done;
  if (!get_str(root, "transaction", &s, &n) && n > 0) {
    if ((rc = get_hash(root, "transaction", &out->transaction))) goto done;
    out->has_transaction = 1;
  }
  const json_t *extra = json_object_get(root, "extra");
  if (json_is_object(extra)) {
    if (json_object_get(extra, "chargedAmount")) {
      if ((rc = get_amount(extra, "chargedAmount", &out->charged))) goto done;
      out->has_charged = 1;
    }
    const json_t *cs = json_object_get(extra, "channelState");
    if (json_is_object(cs)) {
      if ((rc = get_hash(cs, "channelId", &out->channel_id)) ||
          (rc = get_amount(cs, "balance", &out->channel_balance)) ||
          (rc = get_amount(cs, "totalClaimed", &out->channel_total_claimed)) ||
          (rc = get_amount(cs, "chargedCumulativeAmount", &out->channel_charged_cumulative)) ||
          (rc = get_u64(cs, "withdrawRequestedAt", &out->withdraw_requested_at)))
        goto done;
      out->has_channel = 1;
    }
  }
  rc = TG_OK;
done:
  json_decref(root);
  return rc;
}
