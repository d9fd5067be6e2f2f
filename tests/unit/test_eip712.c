/* EIP-712: the EIP text example, ethers' and MetaMask's vectors, the fast path against the JSON path, and refusals. */
#include <stdlib.h>
#include <strings.h>

#include "tg_test.h"
#include "tollgate/address.h"
#include "tollgate/eip712.h"
#include "tollgate/hex.h"
#include "tollgate/keccak.h"
#include "tollgate/secp.h"
#include "tollgate/u256.h"

/* ---- helpers ---- */

static char *hexstr(const uint8_t *p, size_t n) {
  char *s = malloc(2 * n + 3);
  tg_hex_encode(s, p, n, 1);
  return s;
}

static void check_hash(const tg_hash *got, const char *want, const char *what) {
  char *g = hexstr(got->b, 32);
  const char *w = want;
  if (w[0] == '0' && w[1] == 'x') w += 2;
  CHECKF(strcasecmp(g + 2, w) == 0, "%s: got %s, want 0x%s", what, g, w);
  free(g);
}

static int digest_of(tg_hash *out, json_t *doc) {
  char *s = json_dumps(doc, JSON_COMPACT);
  int rc = tg_eip712_digest_json(out, s, strlen(s));
  free(s);
  return rc;
}

static int sign_hex(char out[133], const char *key_hex, const tg_hash *digest) {
  tg_seckey *key = tg_seckey_new();
  if (!key) return TG_ENOMEM;
  int rc = tg_seckey_set_hex(key, key_hex, strlen(key_hex));
  tg_sig sig;
  if (!rc) rc = tg_sign_digest(&sig, key, digest);
  tg_seckey_free(key);
  if (!rc) tg_hex_encode(out, sig.b, 65, 1);
  return rc;
}

/* ---- the EIP-712 text example ---- */

static void test_eip_example(void) {
  json_t *v = tgt_load_json("eip-text/eip712-example.json");
  if (!v) return;
  json_t *exp = json_object_get(v, "expected");
  char *doc = json_dumps(json_object_get(v, "typedData"), JSON_COMPACT);
  size_t len = strlen(doc);
  tg_hash digest, ds, mh;
  CHECK_OK(tg_eip712_hashes_json(&digest, &ds, &mh, doc, len));
  check_hash(&digest, json_string_value(json_object_get(exp, "signHash")), "signHash");
  check_hash(&ds, json_string_value(json_object_get(exp, "domainSeparator")), "domainSeparator");
  check_hash(&mh, json_string_value(json_object_get(exp, "hashStruct_Mail")), "hashStruct");
  tg_hash d2;
  CHECK_OK(tg_eip712_digest_json(&d2, doc, len));
  CHECK_MEM(d2.b, digest.b, 32);
  CHECK_OK(tg_eip712_doc_hash_struct(&d2, doc, len, "Mail"));
  CHECK_MEM(d2.b, mh.b, 32);
  CHECK_OK(tg_eip712_doc_hash_struct(&d2, doc, len, "EIP712Domain"));
  CHECK_MEM(d2.b, ds.b, 32);
  CHECK_ERR(tg_eip712_doc_hash_struct(&d2, doc, len, "Person"), TG_ENOTFOUND);
  CHECK_ERR(tg_eip712_doc_hash_struct(&d2, doc, len, "Nobody"), TG_ETYPED_DATA_TYPE);

  tg_eip712_types *T = NULL;
  CHECK_OK(tg_eip712_types_parse(&T, doc, len));
  tg_buf b;
  tg_buf_init(&b, 1 << 20);
  CHECK_OK(tg_eip712_encode_type(&b, T, "Mail"));
  CHECK_STR((const char *)b.data, json_string_value(json_object_get(exp, "encodeType_Mail")));
  tg_hash th;
  CHECK_OK(tg_eip712_type_hash(&th, T, "Mail"));
  check_hash(&th, json_string_value(json_object_get(exp, "typeHash_Mail")), "typeHash");
  char *msg = json_dumps(json_object_get(json_object_get(v, "typedData"), "message"), JSON_COMPACT);
  tg_buf_reset(&b);
  CHECK_OK(tg_eip712_encode_data_json(&b, T, "Mail", msg, strlen(msg)));
  char *enc = hexstr(b.data, b.len);
  CHECK_STR(enc, json_string_value(json_object_get(exp, "encodeData_Mail")));
  free(enc);
  CHECK_OK(tg_eip712_hash_struct_json(&th, T, "Mail", msg, strlen(msg)));
  CHECK_MEM(th.b, mh.b, 32);
  CHECK_ERR(tg_eip712_type_hash(&th, T, "Nobody"), TG_ETYPED_DATA_TYPE);
  free(msg);
  tg_buf_cleanup(&b);
  tg_eip712_types_free(T);

  /* The signature (EIP text, Foundry's `cast wallet sign --data` in ORACLE.md) and its signer. */
  char sig[133];
  CHECK_OK(sign_hex(sig, json_string_value(json_object_get(v, "privateKey")), &digest));
  CHECK_STR(sig, json_string_value(json_object_get(exp, "signature_eth_signTypedData")));
  CHECK_STR(sig, "0x4355c47d63924e8a72e509b65029052eb6c299d53a04e167c5775fd466751c9d07299936d304c153f6443dfa05f40ff007d72911b6f72307f996231605b915621c");
  tg_sig s;
  uint8_t raw[65];
  size_t n;
  CHECK_OK(tg_hex_decode(raw, sizeof raw, &n, sig, strlen(sig), TG_HEX_PREFIX_REQUIRED));
  CHECK_OK(tg_sig_from_bytes(&s, raw, n));
  tg_address who;
  char addr[TG_ADDRESS_HEX_LEN];
  CHECK_OK(tg_recover_address(&who, &digest, &s));
  tg_address_to_hex(&who, addr);
  CHECK_STR(addr, json_string_value(json_object_get(exp, "address")));
  free(doc);
  json_decref(v);
}

/* ---- ethers testcases/typed-data.json: every case ---- */

static void test_ethers(void) {
  json_t *all = tgt_load_json("ethers-testcases/typed-data.json");
  if (!all) return;
  size_t i, ok = 0, signed_ok = 0;
  json_t *c;
  json_array_foreach(all, i, c) {
    const char *name = json_string_value(json_object_get(c, "name"));
    /* ethers' cases leave EIP712Domain out of "types": it is inferred from the domain's keys. */
    json_t *doc = json_pack("{s:O,s:O,s:O,s:O}", "types", json_object_get(c, "types"), "primaryType",
                            json_object_get(c, "primaryType"), "domain",
                            json_object_get(c, "domain"), "message", json_object_get(c, "data"));
    tg_hash d;
    int rc = digest_of(&d, doc);
    CHECKF(rc == 0, "ethers %s: %s", name, tg_err_name(rc));
    if (rc == 0) {
      check_hash(&d, json_string_value(json_object_get(c, "digest")), name);
      ok++;
    }
    /* encodeData of the primary type, byte for byte. */
    char *types = json_dumps(json_object_get(c, "types"), JSON_COMPACT);
    char *data = json_dumps(json_object_get(c, "data"), JSON_COMPACT);
    tg_eip712_types *T = NULL;
    tg_buf b;
    tg_buf_init(&b, 1 << 24);
    rc = tg_eip712_types_parse(&T, types, strlen(types));
    if (!rc)
      rc = tg_eip712_encode_data_json(&b, T, json_string_value(json_object_get(c, "primaryType")),
                                      data, strlen(data));
    CHECKF(rc == 0, "ethers %s encodeData: %s", name, tg_err_name(rc));
    if (!rc) {
      char *enc = hexstr(b.data, b.len);
      CHECKF(strcmp(enc, json_string_value(json_object_get(c, "encoded"))) == 0,
             "ethers %s encodeData differs", name);
      free(enc);
    }
    tg_buf_cleanup(&b);
    tg_eip712_types_free(T);
    free(types);
    free(data);
    json_t *key = json_object_get(c, "privateKey");
    if (key && rc == 0) {
      char sig[133];
      CHECK_OK(sign_hex(sig, json_string_value(key), &d));
      CHECK_STR(sig, json_string_value(json_object_get(c, "signature")));
      signed_ok++;
    }
    json_decref(doc);
  }
  CHECK_INT(ok, 130);
  CHECK_INT(signed_ok, 1);
  json_decref(all);
}

/* ---- MetaMask eth-sig-util V4 cases ---- */

/* Undoes the vector file's tags for JS values: Buffers become 0x hex, BigInts decimal strings. */
static json_t *untag(json_t *v) {
  if (json_is_object(v)) {
    json_t *t;
    if (json_object_size(v) == 1) {
      if ((t = json_object_get(v, "$buffer")) || (t = json_object_get(v, "$uint8array"))) {
        size_t n = strlen(json_string_value(t));
        char *s = malloc(n + 3);
        s[0] = '0', s[1] = 'x';
        memcpy(s + 2, json_string_value(t), n + 1);
        json_t *r = json_string(s);
        free(s);
        return r;
      }
      if ((t = json_object_get(v, "$bigint"))) return json_string(json_string_value(t));
      if (json_object_get(v, "$undefined")) return NULL;
      if ((t = json_object_get(v, "$number"))) return json_string(json_string_value(t));
      if ((t = json_object_get(v, "$function"))) return json_string(json_string_value(t));
    }
    json_t *o = json_object();
    const char *k;
    json_t *m;
    json_object_foreach(v, k, m) {
      json_t *u = untag(m);
      if (u) json_object_set_new(o, k, u); /* undefined members are absent */
    }
    return o;
  }
  if (json_is_array(v)) {
    json_t *a = json_array();
    size_t i;
    json_t *m;
    json_array_foreach(v, i, m) {
      json_t *u = untag(m);
      json_array_append_new(a, u ? u : json_null());
    }
    return a;
  }
  return json_incref(v);
}

/*
 * Positive MetaMask V4 cases that tollgate refuses on purpose. MetaMask
 * coerces loosely typed JavaScript values; a gateway that signs and verifies
 * payments takes one spelling per type (ethers' rules), so that two parties
 * can never disagree about what was signed. Each listed case must be refused
 * with the error its reason gives, and no unlisted positive case may be.
 */
typedef struct {
  int err;
  const char *why;
} reason;

static const reason R_BYTES = {TG_ETYPED_DATA_VALUE,
    "bytes/bytesN from a number, a Buffer or text that is not 0x hex of even length (bytesN: of "
    "exactly N bytes); MetaMask coerces and pads, ethers refuses"};
static const reason R_ADDRESS = {TG_ETYPED_DATA_VALUE,
    "address that is not 0x and 40 hex digits (a number, short hex, no 0x); MetaMask pads or "
    "reads it as a number"};
static const reason R_BOOL = {TG_ETYPED_DATA_VALUE,
    "bool from a string or number (\"false\" is truthy in JavaScript); only true/false"};
static const reason R_STRING = {TG_ETYPED_DATA_VALUE, "string from a JSON number; only JSON strings"};
static const reason R_INT8 = {TG_ERANGE,
    "int8 given 255 or -255: MetaMask does not range-check JSON numbers; ethers refuses too"};
static const reason R_RECURSIVE = {TG_ETYPED_DATA_TYPE,
    "recursive struct type (Mail.replyTo is a Mail): refused, as ethers does"};
static const reason R_CHECKSUM = {TG_ECHECKSUM,
    "address 0xDD2a3d9F... has a wrong EIP-55 checksum; ethers refuses it too"};
static const reason R_NULL = {TG_ETYPED_DATA_MISSING,
    "a null or absent member: MetaMask hashes it as empty or zero, we refuse a missing value"};
static const reason R_SCHEMA = {TG_ETYPED_DATA,
    "a document without domain and message; the EIP-712 JSON schema requires both"};
static const reason R_SALT = {TG_ETYPED_DATA_VALUE,
    "bytes32 salt given as the 3-byte Buffer 010203: MetaMask right-pads, we require 32 bytes"};

static const struct {
  int id;
  const reason *r;
} mm_refused[] = {
    {117, &R_BYTES}, /* should encode "10" (type "number") */
    {118, &R_BYTES}, /* should encode "10" (type "string") */
    {120, &R_BYTES}, /* should encode "0x101" (type "string") */
    {124, &R_BYTES}, /* should encode "0x1fffffffffffff1" (type "string") */
    {126, &R_BYTES}, /* should encode "0x0" (type "string") */
    {127, &R_BYTES}, /* should encode array of all bytes example data */
    {133, &R_STRING}, /* should encode "10" (type "number") */
    {136, &R_STRING}, /* should encode array of all string example data */
    {138, &R_ADDRESS}, /* should encode "0x0" (type "string") */
    {139, &R_ADDRESS}, /* should encode "0x10" (type "string") */
    {140, &R_ADDRESS}, /* should encode "10" (type "number") */
    {141, &R_ADDRESS}, /* should encode "bBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB" (type "string */
    {142, &R_ADDRESS}, /* should encode "9007199254740991" (type "number") */
    {143, &R_ADDRESS}, /* should encode "0x1fffffffffffff" (type "string") */
    {144, &R_ADDRESS}, /* should encode "0x1fffffffffffff1" (type "string") */
    {146, &R_ADDRESS}, /* should encode array of all address example data */
    {149, &R_BOOL}, /* should encode "true" (type "string") */
    {150, &R_BOOL}, /* should encode "false" (type "string") */
    {151, &R_BOOL}, /* should encode "0" (type "number") */
    {152, &R_BOOL}, /* should encode "1" (type "number") */
    {153, &R_BOOL}, /* should encode "-1" (type "number") */
    {154, &R_BOOL}, /* should encode "9007199254740991" (type "number") */
    {155, &R_BOOL}, /* should encode array of all bool example data */
    {157, &R_BYTES}, /* should encode "0x101" (type "string") */
    {158, &R_BYTES}, /* should encode "10" (type "number") */
    {159, &R_BYTES}, /* should encode "0" (type "number") */
    {160, &R_BYTES}, /* should encode "1" (type "number") */
    {161, &R_BYTES}, /* should encode "-1" (type "number") */
    {162, &R_BYTES}, /* should encode "9007199254740991" (type "number") */
    {163, &R_BYTES}, /* should encode "10" (type "Buffer") */
    {164, &R_BYTES}, /* should encode "0x1fffffffffffff" (type "string") */
    {165, &R_BYTES}, /* should encode "0x1fffffffffffff1" (type "string") */
    {168, &R_BYTES}, /* should encode array of all bytes1 example data */
    {169, &R_BYTES}, /* should encode "0x10" (type "string") */
    {170, &R_BYTES}, /* should encode "0x101" (type "string") */
    {171, &R_BYTES}, /* should encode "10" (type "number") */
    {172, &R_BYTES}, /* should encode "0" (type "number") */
    {173, &R_BYTES}, /* should encode "1" (type "number") */
    {174, &R_BYTES}, /* should encode "-1" (type "number") */
    {175, &R_BYTES}, /* should encode "9007199254740991" (type "number") */
    {176, &R_BYTES}, /* should encode "10" (type "Buffer") */
    {177, &R_BYTES}, /* should encode "0x1fffffffffffff" (type "string") */
    {178, &R_BYTES}, /* should encode "0x1fffffffffffff1" (type "string") */
    {181, &R_BYTES}, /* should encode array of all bytes32 example data */
    {185, &R_INT8}, /* should encode "255" (type "number") */
    {186, &R_INT8}, /* should encode "-255" (type "number") */
    {188, &R_INT8}, /* should encode array of all int8 example data */
    {220, &R_RECURSIVE}, /* should encode data with a recursive data type */
    {221, &R_CHECKSUM}, /* should encode data with a custom data type array */
    {225, &R_NULL}, /* should encode data with a dynamic property set to null */
    {227, &R_NULL}, /* should encode data with a custom type property set to null */
    {228, &R_NULL}, /* should encode data with a custom type property set to undefined */
    {440, &R_BYTES}, /* should hash "10" (type "number") */
    {441, &R_BYTES}, /* should hash "10" (type "string") */
    {443, &R_BYTES}, /* should hash "0x101" (type "string") */
    {447, &R_BYTES}, /* should hash "0x1fffffffffffff1" (type "string") */
    {449, &R_BYTES}, /* should hash "0x0" (type "string") */
    {450, &R_BYTES}, /* should hash array of all bytes example data */
    {456, &R_STRING}, /* should hash "10" (type "number") */
    {459, &R_STRING}, /* should hash array of all string example data */
    {461, &R_ADDRESS}, /* should hash "0x0" (type "string") */
    {462, &R_ADDRESS}, /* should hash "0x10" (type "string") */
    {463, &R_ADDRESS}, /* should hash "10" (type "number") */
    {464, &R_ADDRESS}, /* should hash "bBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB" (type "string") */
    {465, &R_ADDRESS}, /* should hash "9007199254740991" (type "number") */
    {466, &R_ADDRESS}, /* should hash "0x1fffffffffffff" (type "string") */
    {467, &R_ADDRESS}, /* should hash "0x1fffffffffffff1" (type "string") */
    {469, &R_ADDRESS}, /* should hash array of all address example data */
    {472, &R_BOOL}, /* should hash "true" (type "string") */
    {473, &R_BOOL}, /* should hash "false" (type "string") */
    {474, &R_BOOL}, /* should hash "0" (type "number") */
    {475, &R_BOOL}, /* should hash "1" (type "number") */
    {476, &R_BOOL}, /* should hash "-1" (type "number") */
    {477, &R_BOOL}, /* should hash "9007199254740991" (type "number") */
    {478, &R_BOOL}, /* should hash array of all bool example data */
    {480, &R_BYTES}, /* should hash "0x101" (type "string") */
    {481, &R_BYTES}, /* should hash "10" (type "number") */
    {482, &R_BYTES}, /* should hash "0" (type "number") */
    {483, &R_BYTES}, /* should hash "1" (type "number") */
    {484, &R_BYTES}, /* should hash "-1" (type "number") */
    {485, &R_BYTES}, /* should hash "9007199254740991" (type "number") */
    {486, &R_BYTES}, /* should hash "10" (type "Buffer") */
    {487, &R_BYTES}, /* should hash "0x1fffffffffffff" (type "string") */
    {488, &R_BYTES}, /* should hash "0x1fffffffffffff1" (type "string") */
    {491, &R_BYTES}, /* should hash array of all bytes1 example data */
    {492, &R_BYTES}, /* should hash "0x10" (type "string") */
    {493, &R_BYTES}, /* should hash "0x101" (type "string") */
    {494, &R_BYTES}, /* should hash "10" (type "number") */
    {495, &R_BYTES}, /* should hash "0" (type "number") */
    {496, &R_BYTES}, /* should hash "1" (type "number") */
    {497, &R_BYTES}, /* should hash "-1" (type "number") */
    {498, &R_BYTES}, /* should hash "9007199254740991" (type "number") */
    {499, &R_BYTES}, /* should hash "10" (type "Buffer") */
    {500, &R_BYTES}, /* should hash "0x1fffffffffffff" (type "string") */
    {501, &R_BYTES}, /* should hash "0x1fffffffffffff1" (type "string") */
    {504, &R_BYTES}, /* should hash array of all bytes32 example data */
    {508, &R_INT8}, /* should hash "255" (type "number") */
    {509, &R_INT8}, /* should hash "-255" (type "number") */
    {511, &R_INT8}, /* should hash array of all int8 example data */
    {543, &R_RECURSIVE}, /* should hash data with a recursive data type */
    {544, &R_CHECKSUM}, /* should hash data with a custom data type array */
    {548, &R_NULL}, /* should hash data with a dynamic property set to null */
    {550, &R_NULL}, /* should hash data with a custom type property set to null */
    {551, &R_NULL}, /* should hash data with a custom type property set to undefined */
    {681, &R_SCHEMA}, /* minimal typed message hash should be identical to minimal valid typed  */
    {683, &R_SALT}, /* should hash a typed message with a domain separator that uses all fiel */
    {684, &R_SALT}, /* should hash a typed message with extra domain seperator fields */
    {685, &R_SALT}, /* should hash a typed message with only custom domain seperator fields */
    {686, &R_SALT}, /* should hash a typed message with data */
    {687, &R_SALT}, /* should ignore message if the primary type is EIP712Domain */
    {980, &R_SCHEMA}, /* minimal typed message signature should be identical to minimal valid t */
    {982, &R_SALT}, /* should sign a typed message with a domain separator that uses all fiel */
    {983, &R_SALT}, /* should sign a typed message with extra domain seperator fields */
    {984, &R_SALT}, /* should sign a typed message with only custom domain seperator fields */
    {985, &R_SALT}, /* should sign a typed message with data */
    {986, &R_BYTES}, /* should sign "10" (type "number") */
    {987, &R_BYTES}, /* should sign "10" (type "string") */
    {989, &R_BYTES}, /* should sign "0x101" (type "string") */
    {993, &R_BYTES}, /* should sign "0x1fffffffffffff1" (type "string") */
    {995, &R_BYTES}, /* should sign "0x0" (type "string") */
    {996, &R_BYTES}, /* should sign array of all bytes example data */
    {1002, &R_STRING}, /* should sign "10" (type "number") */
    {1005, &R_STRING}, /* should sign array of all string example data */
    {1007, &R_ADDRESS}, /* should sign "0x0" (type "string") */
    {1008, &R_ADDRESS}, /* should sign "0x10" (type "string") */
    {1009, &R_ADDRESS}, /* should sign "10" (type "number") */
    {1010, &R_ADDRESS}, /* should sign "bBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB" (type "string") */
    {1011, &R_ADDRESS}, /* should sign "9007199254740991" (type "number") */
    {1012, &R_ADDRESS}, /* should sign "0x1fffffffffffff" (type "string") */
    {1013, &R_ADDRESS}, /* should sign "0x1fffffffffffff1" (type "string") */
    {1015, &R_ADDRESS}, /* should sign array of all address example data */
    {1018, &R_BOOL}, /* should sign "true" (type "string") */
    {1019, &R_BOOL}, /* should sign "false" (type "string") */
    {1020, &R_BOOL}, /* should sign "0" (type "number") */
    {1021, &R_BOOL}, /* should sign "1" (type "number") */
    {1022, &R_BOOL}, /* should sign "-1" (type "number") */
    {1023, &R_BOOL}, /* should sign "9007199254740991" (type "number") */
    {1024, &R_BOOL}, /* should sign array of all bool example data */
    {1026, &R_BYTES}, /* should sign "0x101" (type "string") */
    {1027, &R_BYTES}, /* should sign "10" (type "number") */
    {1028, &R_BYTES}, /* should sign "0" (type "number") */
    {1029, &R_BYTES}, /* should sign "1" (type "number") */
    {1030, &R_BYTES}, /* should sign "-1" (type "number") */
    {1031, &R_BYTES}, /* should sign "9007199254740991" (type "number") */
    {1032, &R_BYTES}, /* should sign "10" (type "Buffer") */
    {1033, &R_BYTES}, /* should sign "0x1fffffffffffff" (type "string") */
    {1034, &R_BYTES}, /* should sign "0x1fffffffffffff1" (type "string") */
    {1037, &R_BYTES}, /* should sign array of all bytes1 example data */
    {1038, &R_BYTES}, /* should sign "0x10" (type "string") */
    {1039, &R_BYTES}, /* should sign "0x101" (type "string") */
    {1040, &R_BYTES}, /* should sign "10" (type "number") */
    {1041, &R_BYTES}, /* should sign "0" (type "number") */
    {1042, &R_BYTES}, /* should sign "1" (type "number") */
    {1043, &R_BYTES}, /* should sign "-1" (type "number") */
    {1044, &R_BYTES}, /* should sign "9007199254740991" (type "number") */
    {1045, &R_BYTES}, /* should sign "10" (type "Buffer") */
    {1046, &R_BYTES}, /* should sign "0x1fffffffffffff" (type "string") */
    {1047, &R_BYTES}, /* should sign "0x1fffffffffffff1" (type "string") */
    {1050, &R_BYTES}, /* should sign array of all bytes32 example data */
    {1054, &R_INT8}, /* should sign "255" (type "number") */
    {1055, &R_INT8}, /* should sign "-255" (type "number") */
    {1057, &R_INT8}, /* should sign array of all int8 example data */
    {1089, &R_RECURSIVE}, /* should sign data with a recursive data type */
    {1090, &R_CHECKSUM}, /* should sign data with a custom data type array */
    {1094, &R_NULL}, /* should sign data with a dynamic property set to null */
    {1096, &R_NULL}, /* should sign data with a custom type property set to null */
    {1097, &R_NULL}, /* should sign data with a custom type property set to undefined */
};

static const reason *mm_why(int id) {
  for (size_t i = 0; i < sizeof mm_refused / sizeof *mm_refused; i++)
    if (mm_refused[i].id == id) return mm_refused[i].r;
  return NULL;
}

static const char *mm_key = "4af1bceebf7f3634ec3cff8a2c38e51178d5d4ce585c52d6043e5e2cc3418bb0";

/* Runs one recorded call; 0 when our result equals the recorded one, else our error or 1 on a mismatch. */
static int mm_call(json_t *call, int *refused_rc) {
  const char *fn = json_string_value(json_object_get(call, "fn"));
  json_t *args = untag(json_object_get(call, "args"));
  json_t *result = untag(json_object_get(call, "result"));
  int rc = 0, mismatch = 0;
  tg_hash h;
  char *s = NULL, *types = NULL;
  tg_eip712_types *T = NULL;
  if (strcmp(fn, "signTypedData") == 0 || strcmp(fn, "TypedDataUtils.eip712Hash") == 0 ||
      strcmp(fn, "recoverTypedSignature") == 0) {
    json_t *a0 = json_array_get(args, 0);
    json_t *doc = strcmp(fn, "TypedDataUtils.eip712Hash") == 0 ? a0 : json_object_get(a0, "data");
    s = json_dumps(doc, JSON_COMPACT | JSON_ENCODE_ANY);
    rc = s ? tg_eip712_digest_json(&h, s, strlen(s)) : TG_EJSON;
    if (!rc && result) {
      if (strcmp(fn, "signTypedData") == 0) {
        char sig[133];
        rc = sign_hex(sig, mm_key, &h);
        mismatch = rc || strcmp(sig, json_string_value(result)) != 0;
      } else if (strcmp(fn, "recoverTypedSignature") == 0) {
        const char *sh = json_string_value(json_object_get(a0, "signature"));
        uint8_t raw[65];
        size_t n;
        tg_sig sig;
        tg_address who;
        char addr[TG_ADDRESS_HEX_LEN];
        rc = tg_hex_decode(raw, sizeof raw, &n, sh, strlen(sh), TG_HEX_PREFIX_OPTIONAL);
        if (!rc) rc = tg_sig_from_bytes(&sig, raw, n);
        if (!rc) rc = tg_recover_address(&who, &h, &sig);
        if (!rc) tg_address_to_hex(&who, addr);
        mismatch = rc || strcasecmp(addr, json_string_value(result)) != 0;
      } else {
        char *g = hexstr(h.b, 32);
        mismatch = strcmp(g, json_string_value(result)) != 0;
        free(g);
      }
    }
  } else if (strcmp(fn, "TypedDataUtils.hashStruct") == 0 ||
             strcmp(fn, "TypedDataUtils.encodeData") == 0) {
    types = json_dumps(json_array_get(args, 2), JSON_COMPACT | JSON_ENCODE_ANY);
    s = json_dumps(json_array_get(args, 1), JSON_COMPACT | JSON_ENCODE_ANY);
    const char *type = json_string_value(json_array_get(args, 0));
    rc = tg_eip712_types_parse(&T, types, strlen(types));
    tg_buf b;
    tg_buf_init(&b, 1 << 24);
    if (!rc && !s) rc = TG_ETYPED_DATA_MISSING;
    if (!rc) rc = tg_eip712_encode_data_json(&b, T, type, s, strlen(s));
    if (!rc && result) {
      if (strcmp(fn, "TypedDataUtils.hashStruct") == 0) tg_keccak256(&h, b.data, b.len);
      char *g = strcmp(fn, "TypedDataUtils.hashStruct") == 0 ? hexstr(h.b, 32)
                                                              : hexstr(b.data, b.len);
      mismatch = strcmp(g, json_string_value(result)) != 0;
      free(g);
    }
    tg_buf_cleanup(&b);
  } else {
    rc = 1; /* not a V4 digest function */
  }
  *refused_rc = rc;
  tg_eip712_types_free(T);
  free(s);
  free(types);
  json_decref(args);
  json_decref(result);
  return rc ? rc : mismatch;
}

static void test_metamask_v4(void) {
  json_t *all = tgt_load_json("metamask-eth-sig-util/sign-typed-data.cases.json");
  if (!all) return;
  size_t i;
  json_t *c;
  int v4 = 0, pass = 0, rejected = 0, refused = 0, report = getenv("TG_EIP712_REPORT") != NULL;
  json_array_foreach(json_object_get(all, "cases"), i, c) {
    if (!json_is_string(json_object_get(c, "version")) ||
        strcmp(json_string_value(json_object_get(c, "version")), "V4") != 0)
      continue;
    v4++;
    int id = (int)json_integer_value(json_object_get(c, "id"));
    int must_reject = json_is_true(json_object_get(c, "expectsError"));
    const reason *why = mm_why(id);
    size_t j;
    json_t *call;
    int any_fail = 0, all_ok = 1, last_rc = 0;
    json_array_foreach(json_object_get(c, "calls"), j, call) {
      int rc, r = mm_call(call, &rc);
      int recorded_error = json_object_get(call, "error") != NULL;
      if (recorded_error && rc == 0) any_fail = 1; /* we accepted what MetaMask threw on */
      if (!recorded_error && r != 0) all_ok = 0;
      if (rc) last_rc = rc;
    }
    if (report && (must_reject ? any_fail : (!all_ok) != (why != NULL)))
      printf("  case %d %s: %s -> %s\n", id, must_reject ? "must-reject" : "positive",
             json_string_value(json_object_get(c, "test")), tg_err_name(last_rc));
    if (must_reject) {
      CHECKF(!any_fail, "MetaMask V4 case %d (%s) must be refused", id,
             json_string_value(json_object_get(c, "test")));
      if (!any_fail) rejected++;
    } else if (why) {
      /* A deliberate difference: the case must be refused, not mis-hashed. */
      CHECKF(!all_ok && last_rc == why->err,
             "MetaMask V4 case %d (%s) should be refused with %s (%s) but gives %s", id,
             json_string_value(json_object_get(c, "test")), tg_err_name(why->err), why->why,
             all_ok ? "agreement" : tg_err_name(last_rc));
      if (!all_ok && last_rc == why->err) refused++;
    } else {
      CHECKF(all_ok, "MetaMask V4 case %d (%s): %s", id,
             json_string_value(json_object_get(c, "test")), tg_err_name(last_rc));
      if (all_ok) pass++;
    }
  }
  printf("  MetaMask V4: %d cases: %d agree, %d must-reject refused, %d refused on purpose\n", v4,
         pass, rejected, refused);
  CHECK_INT(v4, 368);
  CHECK_INT(rejected, 45);
  CHECK_INT(refused, (int)(sizeof mm_refused / sizeof *mm_refused));
  CHECK_INT(pass + rejected + refused, v4);
  json_decref(all);
}

/* ---- the fast path ---- */

/* The voucher, EIP-3009 and EIP-2612 digests for fixed values, from viem 2.57.20 (hashTypedData). */
static const char *channel_domain_addr = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";

static void set_str(tg_str *s, const char *p) {
  s->ptr = p;
  s->len = strlen(p);
}

static void test_fast_fixed(void) {
  /* The type hashes are keccak256 of their type strings. */
  struct {
    const tg_hash *h;
    const char *s;
  } th[] = {
      {&tg_eip712_voucher_typehash, "Voucher(bytes32 channelId,uint128 maxClaimableAmount)"},
      {&tg_eip3009_transfer_typehash,
       "TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,"
       "uint256 validBefore,bytes32 nonce)"},
      {&tg_eip3009_receive_typehash,
       "ReceiveWithAuthorization(address from,address to,uint256 value,uint256 validAfter,"
       "uint256 validBefore,bytes32 nonce)"},
      {&tg_eip2612_permit_typehash,
       "Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)"},
  };
  for (size_t i = 0; i < 4; i++) {
    tg_hash h;
    tg_keccak256(&h, th[i].s, strlen(th[i].s));
    CHECKF(memcmp(h.b, th[i].h->b, 32) == 0, "typehash of %s", th[i].s);
  }
  /* Every EIP712Domain subset's type hash equals keccak256 of its encodeType. */
  static const char *mem[5] = {"string name", "string version", "uint256 chainId",
                               "address verifyingContract", "bytes32 salt"};
  for (unsigned m = 0; m < 32; m++) {
    char s[160] = "EIP712Domain(";
    size_t n = strlen(s);
    for (int b = 0, first = 1; b < 5; b++) {
      if (!(m >> b & 1)) continue;
      if (!first) s[n++] = ',';
      memcpy(s + n, mem[b], strlen(mem[b]));
      n += strlen(mem[b]);
      first = 0;
    }
    s[n++] = ')';
    tg_hash want, got;
    tg_keccak256(&want, s, n);
    CHECK_OK(tg_eip712_domain_type_hash(&got, m));
    CHECKF(memcmp(want.b, got.b, 32) == 0, "domain type hash %u", m);
  }
  tg_hash h;
  CHECK_ERR(tg_eip712_domain_type_hash(&h, 32), TG_EINVAL);

  tg_eip712_domain dom;
  memset(&dom, 0, sizeof dom);
  dom.fields = TG_EIP712_DOMAIN_STANDARD;
  set_str(&dom.name, "TollgateChannels");
  set_str(&dom.version, "1");
  tg_u256_from_u64(&dom.chain_id, 8453);
  CHECK_OK(tg_address_parse(&dom.verifying_contract, channel_domain_addr,
                            strlen(channel_domain_addr)));
  tg_hash ds;
  CHECK_OK(tg_eip712_domain_separator(&ds, &dom));
  tg_eip712_voucher v;
  memset(v.channel_id.b, 0x11, 32);
  CHECK_OK(tg_u256_parse_dec(&v.max_claimable_amount, "1234567890123456789012345", 25));
  CHECK_OK(tg_eip712_voucher_digest(&h, &ds, &v));
  check_hash(&h, "c0e3cb64147695611d78c1c264939ac82de5a86b311ad9b0123684de271d8b10", "voucher");
  /* uint128: one bit more is refused. */
  tg_eip712_voucher big = v;
  big.max_claimable_amount.b[15] = 1;
  CHECK_ERR(tg_eip712_voucher_digest(&h, &ds, &big), TG_ERANGE);
  CHECK(tg_u256_is_zero((tg_u256 *)&h));

  /* USDC on mainnet: EIP-3009 and EIP-2612. */
  tg_eip712_domain usdc;
  memset(&usdc, 0, sizeof usdc);
  usdc.fields = TG_EIP712_DOMAIN_STANDARD;
  set_str(&usdc.name, "USD Coin");
  set_str(&usdc.version, "2");
  tg_u256_from_u64(&usdc.chain_id, 1);
  CHECK_OK(tg_address_parse(&usdc.verifying_contract, "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48", 42));
  CHECK_OK(tg_eip712_domain_separator(&ds, &usdc));
  tg_eip3009_authorization a;
  memset(&a, 0, sizeof a);
  CHECK_OK(tg_address_parse(&a.from, channel_domain_addr, 42));
  CHECK_OK(tg_address_parse(&a.to, "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359", 42));
  tg_u256_from_u64(&a.value, 1000000);
  tg_u256_from_u64(&a.valid_before, 1767225600);
  memset(a.nonce.b, 0xab, 32);
  tg_eip3009_transfer_digest(&h, &ds, &a);
  check_hash(&h, "86a6370dd6302cec6623818a1e39f4e56cb40e3dc1dfafbbdb236826dd28c87e", "transfer");
  tg_eip3009_receive_digest(&h, &ds, &a);
  check_hash(&h, "d1005eda77340e8a42f202ebcb5b88d96b366567d0dda476b656ea44fdddbb70", "receive");
  tg_eip2612_permit p;
  memset(&p, 0, sizeof p);
  p.owner = a.from;
  p.spender = a.to;
  memset(p.value.b, 0xff, 32);
  tg_u256_from_u64(&p.nonce, 7);
  tg_u256_from_u64(&p.deadline, 1767225600);
  tg_eip2612_permit_digest(&h, &ds, &p);
  check_hash(&h, "b12f788f6ff66df4c078fadae803ab3641113a860923829c1110b26b03f0eadf", "permit");

  /* Sign and recover each fixed type with a fresh key. */
  tg_seckey *key = tg_seckey_new();
  CHECK(key != NULL);
  if (!key) return;
  CHECK_OK(tg_seckey_set_hex(key, mm_key, strlen(mm_key)));
  tg_address me, who;
  CHECK_OK(tg_seckey_address(&me, key));
  tg_sig sig;
  CHECK_OK(tg_eip712_voucher_sign(&sig, key, &ds, &v));
  CHECK_OK(tg_eip712_voucher_recover(&who, &ds, &v, &sig));
  CHECK(tg_address_eq(&me, &who));
  tg_eip712_voucher other = v;
  other.max_claimable_amount.b[31] ^= 1;
  CHECK_OK(tg_eip712_voucher_recover(&who, &ds, &other, &sig));
  CHECK(!tg_address_eq(&me, &who)); /* a different amount recovers someone else */
  CHECK_ERR(tg_eip712_voucher_sign(&sig, key, &ds, &big), TG_ERANGE);
  CHECK_OK(tg_eip3009_transfer_sign(&sig, key, &ds, &a));
  CHECK_OK(tg_eip3009_transfer_recover(&who, &ds, &a, &sig));
  CHECK(tg_address_eq(&me, &who));
  CHECK_OK(tg_eip3009_receive_recover(&who, &ds, &a, &sig));
  CHECK(!tg_address_eq(&me, &who)); /* transfer and receive authorizations are not interchangeable */
  CHECK_OK(tg_eip3009_receive_sign(&sig, key, &ds, &a));
  CHECK_OK(tg_eip3009_receive_recover(&who, &ds, &a, &sig));
  CHECK(tg_address_eq(&me, &who));
  CHECK_OK(tg_eip2612_permit_sign(&sig, key, &ds, &p));
  CHECK_OK(tg_eip2612_permit_recover(&who, &ds, &p, &sig));
  CHECK(tg_address_eq(&me, &who));
  /* A high-S twin of a valid signature is refused (libsecp256k1's low-S rule). */
  tg_hash sh;
  tg_eip2612_permit_hash(&sh, &p);
  CHECK_OK(tg_eip712_sign(&sig, key, &ds, &sh));
  static const uint8_t n_order[32] = {
      0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe,
      0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36, 0x41, 0x41};
  tg_sig hi = sig;
  int borrow = 0;
  for (int i = 31; i >= 0; i--) {
    int d = n_order[i] - sig.b[32 + i] - borrow;
    borrow = d < 0;
    hi.b[32 + i] = (uint8_t)(d + (borrow ? 256 : 0));
  }
  hi.b[64] = (uint8_t)(sig.b[64] == 27 ? 28 : 27);
  CHECK_ERR(tg_eip712_recover(&who, &ds, &sh, &hi), TG_ESIG_HIGH_S);
  tg_seckey_free(key);
}

/* A deterministic generator for the differential test. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint64_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}
static void rnd_bytes(uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++) p[i] = (uint8_t)rnd();
}

/* A random integer of `bits` bits at most, biased towards the edges (0, small, all ones). */
static void rnd_uint(tg_u256 *v, unsigned bits) {
  memset(v->b, 0, 32);
  switch (rnd() % 4) {
  case 0: break;
  case 1: v->b[31] = (uint8_t)rnd(); break;
  case 2: memset(v->b + 32 - bits / 8, 0xff, bits / 8); break;
  default: rnd_bytes(v->b + 32 - bits / 8, bits / 8); break;
  }
}

/* Appends an integer to JSON the way a client might: number, decimal string or hex string. */
static int put_uint(tg_buf *b, const tg_u256 *v) {
  uint64_t small;
  char s[TG_U256_DEC_MAX];
  switch (rnd() % 3) {
  case 0:
    if (tg_u256_to_u64(v, &small) == 0 && small < (1ull << 53)) return tg_buf_printf(b, "%llu", (unsigned long long)small);
    /* fall through */
  case 1:
    tg_u256_to_dec(v, s);
    return tg_buf_printf(b, "\"%s\"", s);
  default:
    tg_u256_to_hex(v, s);
    return tg_buf_printf(b, "\"%s\"", s);
  }
}

static int put_hex(tg_buf *b, const uint8_t *p, size_t n) {
  int rc = tg_buf_append_str(b, "\"");
  if (!rc) rc = tg_hex_encode_buf(b, p, n, 1);
  if (!rc) rc = tg_buf_append_str(b, "\"");
  return rc;
}

static int put_addr(tg_buf *b, const tg_address *a) {
  char s[TG_ADDRESS_HEX_LEN];
  if (rnd() & 1) tg_address_to_checksum(a, s);
  else tg_address_to_hex(a, s);
  return tg_buf_printf(b, "\"%s\"", s);
}

/* Random domain, JSON "types" entry and "domain" value written into b (order as in types). */
static void rnd_domain(tg_eip712_domain *d, char *name, char *version, tg_buf *types, tg_buf *val) {
  memset(d, 0, sizeof *d);
  d->fields = (unsigned)(rnd() % 32);
  size_t nl = rnd() % 12, vl = rnd() % 4;
  for (size_t i = 0; i < nl; i++) name[i] = (char)('a' + rnd() % 26);
  for (size_t i = 0; i < vl; i++) version[i] = (char)('0' + rnd() % 10);
  name[nl] = version[vl] = 0;
  set_str(&d->name, name);
  set_str(&d->version, version);
  rnd_uint(&d->chain_id, 64);
  rnd_bytes(d->verifying_contract.b, 20);
  rnd_bytes(d->salt.b, 32);
  int rc = tg_buf_append_str(types, "\"EIP712Domain\":[");
  rc |= tg_buf_append_str(val, "{");
  const char *sep = "";
  if (d->fields & TG_EIP712_DOMAIN_NAME) {
    rc |= tg_buf_printf(types, "%s{\"name\":\"name\",\"type\":\"string\"}", sep);
    rc |= tg_buf_printf(val, "%s\"name\":\"%s\"", sep, name);
    sep = ",";
  }
  if (d->fields & TG_EIP712_DOMAIN_VERSION) {
    rc |= tg_buf_printf(types, "%s{\"name\":\"version\",\"type\":\"string\"}", sep);
    rc |= tg_buf_printf(val, "%s\"version\":\"%s\"", sep, version);
    sep = ",";
  }
  if (d->fields & TG_EIP712_DOMAIN_CHAIN_ID) {
    rc |= tg_buf_printf(types, "%s{\"name\":\"chainId\",\"type\":\"uint256\"}", sep);
    rc |= tg_buf_printf(val, "%s\"chainId\":", sep);
    rc |= put_uint(val, &d->chain_id);
    sep = ",";
  }
  if (d->fields & TG_EIP712_DOMAIN_VERIFYING_CONTRACT) {
    rc |= tg_buf_printf(types, "%s{\"name\":\"verifyingContract\",\"type\":\"address\"}", sep);
    rc |= tg_buf_printf(val, "%s\"verifyingContract\":", sep);
    rc |= put_addr(val, &d->verifying_contract);
    sep = ",";
  }
  if (d->fields & TG_EIP712_DOMAIN_SALT) {
    rc |= tg_buf_printf(types, "%s{\"name\":\"salt\",\"type\":\"bytes32\"}", sep);
    rc |= tg_buf_printf(val, "%s\"salt\":", sep);
    rc |= put_hex(val, d->salt.b, 32);
  }
  rc |= tg_buf_append_str(types, "]");
  rc |= tg_buf_append_str(val, "}");
  CHECK(rc == 0);
}

static void test_fast_vs_json(void) {
  int agree = 0, rounds = 3000;
  for (int r = 0; r < rounds; r++) {
    tg_eip712_domain dom;
    char name[16], version[8];
    tg_buf types, domval, msg, doc;
    tg_buf_init(&types, 1 << 16);
    tg_buf_init(&domval, 1 << 16);
    tg_buf_init(&msg, 1 << 16);
    tg_buf_init(&doc, 1 << 16);
    rnd_domain(&dom, name, version, &types, &domval);
    tg_hash ds, fast, slow;
    CHECK_OK(tg_eip712_domain_separator(&ds, &dom));
    int kind = r % 4, rc = 0;
    const char *primary = NULL;
    if (kind == 0) {
      tg_eip712_voucher v;
      rnd_bytes(v.channel_id.b, 32);
      rnd_uint(&v.max_claimable_amount, 128);
      CHECK_OK(tg_eip712_voucher_digest(&fast, &ds, &v));
      primary = "Voucher";
      rc |= tg_buf_append_str(&types, ",\"Voucher\":[{\"name\":\"channelId\",\"type\":\"bytes32\"},"
                                      "{\"name\":\"maxClaimableAmount\",\"type\":\"uint128\"}]");
      rc |= tg_buf_append_str(&msg, "{\"channelId\":");
      rc |= put_hex(&msg, v.channel_id.b, 32);
      rc |= tg_buf_append_str(&msg, ",\"maxClaimableAmount\":");
      rc |= put_uint(&msg, &v.max_claimable_amount);
      rc |= tg_buf_append_str(&msg, "}");
    } else if (kind == 1 || kind == 2) {
      tg_eip3009_authorization a;
      rnd_bytes(a.from.b, 20);
      rnd_bytes(a.to.b, 20);
      rnd_uint(&a.value, 256);
      rnd_uint(&a.valid_after, 64);
      rnd_uint(&a.valid_before, 256);
      rnd_bytes(a.nonce.b, 32);
      primary = kind == 1 ? "TransferWithAuthorization" : "ReceiveWithAuthorization";
      if (kind == 1) tg_eip3009_transfer_digest(&fast, &ds, &a);
      else tg_eip3009_receive_digest(&fast, &ds, &a);
      rc |= tg_buf_printf(&types,
                          ",\"%s\":[{\"name\":\"from\",\"type\":\"address\"},{\"name\":\"to\","
                          "\"type\":\"address\"},{\"name\":\"value\",\"type\":\"uint256\"},"
                          "{\"name\":\"validAfter\",\"type\":\"uint256\"},{\"name\":"
                          "\"validBefore\",\"type\":\"uint256\"},{\"name\":\"nonce\",\"type\":"
                          "\"bytes32\"}]",
                          primary);
      /* Message members in a shuffled order: JSON object order must not matter. */
      rc |= tg_buf_append_str(&msg, "{\"nonce\":");
      rc |= put_hex(&msg, a.nonce.b, 32);
      rc |= tg_buf_append_str(&msg, ",\"validBefore\":");
      rc |= put_uint(&msg, &a.valid_before);
      rc |= tg_buf_append_str(&msg, ",\"to\":");
      rc |= put_addr(&msg, &a.to);
      rc |= tg_buf_append_str(&msg, ",\"from\":");
      rc |= put_addr(&msg, &a.from);
      rc |= tg_buf_append_str(&msg, ",\"value\":");
      rc |= put_uint(&msg, &a.value);
      rc |= tg_buf_append_str(&msg, ",\"validAfter\":");
      rc |= put_uint(&msg, &a.valid_after);
      rc |= tg_buf_append_str(&msg, "}");
    } else {
      tg_eip2612_permit p;
      rnd_bytes(p.owner.b, 20);
      rnd_bytes(p.spender.b, 20);
      rnd_uint(&p.value, 256);
      rnd_uint(&p.nonce, 256);
      rnd_uint(&p.deadline, 256);
      tg_eip2612_permit_digest(&fast, &ds, &p);
      primary = "Permit";
      rc |= tg_buf_append_str(&types, ",\"Permit\":[{\"name\":\"owner\",\"type\":\"address\"},"
                                      "{\"name\":\"spender\",\"type\":\"address\"},{\"name\":"
                                      "\"value\",\"type\":\"uint256\"},{\"name\":\"nonce\","
                                      "\"type\":\"uint256\"},{\"name\":\"deadline\",\"type\":"
                                      "\"uint256\"}]");
      rc |= tg_buf_append_str(&msg, "{\"owner\":");
      rc |= put_addr(&msg, &p.owner);
      rc |= tg_buf_append_str(&msg, ",\"spender\":");
      rc |= put_addr(&msg, &p.spender);
      rc |= tg_buf_append_str(&msg, ",\"value\":");
      rc |= put_uint(&msg, &p.value);
      rc |= tg_buf_append_str(&msg, ",\"nonce\":");
      rc |= put_uint(&msg, &p.nonce);
      rc |= tg_buf_append_str(&msg, ",\"deadline\":");
      rc |= put_uint(&msg, &p.deadline);
      rc |= tg_buf_append_str(&msg, "}");
    }
    rc |= tg_buf_printf(&doc, "{\"types\":{%s},\"primaryType\":\"%s\",\"domain\":%s,\"message\":%s}",
                        (const char *)types.data, primary, (const char *)domval.data,
                        (const char *)msg.data);
    CHECK(rc == 0);
    tg_hash json_ds;
    rc = tg_eip712_hashes_json(&slow, &json_ds, NULL, (const char *)doc.data, doc.len);
    CHECKF(rc == 0, "round %d: %s: %s", r, tg_err_name(rc), (const char *)doc.data);
    if (rc == 0 && memcmp(slow.b, fast.b, 32) == 0 && memcmp(json_ds.b, ds.b, 32) == 0) agree++;
    else CHECKF(0, "round %d: fast and JSON paths differ on %s", r, (const char *)doc.data);
    tg_buf_cleanup(&types);
    tg_buf_cleanup(&domval);
    tg_buf_cleanup(&msg);
    tg_buf_cleanup(&doc);
  }
  CHECK_INT(agree, rounds);
}

/* ---- strictness and limits ---- */

#define DOC(types, primary, domain, message)                                                   \
  "{\"types\":{" types "},\"primaryType\":\"" primary "\",\"domain\":" domain ",\"message\":" \
  message "}"

static int dj(const char *json) {
  tg_hash h;
  int rc = tg_eip712_digest_json(&h, json, strlen(json));
  if (rc) CHECKF(tg_u256_is_zero((const tg_u256 *)&h), "digest not zeroed on failure");
  return rc;
}

/* A one-member message {"v": VALUE} of type TYPE. */
static int one(const char *type, const char *value) {
  char buf[4096];
  snprintf(buf, sizeof buf,
           "{\"types\":{\"M\":[{\"name\":\"v\",\"type\":\"%s\"}]},\"primaryType\":\"M\","
           "\"domain\":{},\"message\":{\"v\":%s}}",
           type, value);
  return dj(buf);
}

/* The word a one-member message encodes VALUE to (via encodeData). */
static int word(const char *type, const char *value, char out[67]) {
  char types[512], msg[4096];
  snprintf(types, sizeof types, "{\"M\":[{\"name\":\"v\",\"type\":\"%s\"}]}", type);
  snprintf(msg, sizeof msg, "{\"v\":%s}", value);
  tg_eip712_types *T = NULL;
  int rc = tg_eip712_types_parse(&T, types, strlen(types));
  tg_buf b;
  tg_buf_init(&b, 1 << 16);
  if (!rc) rc = tg_eip712_encode_data_json(&b, T, "M", msg, strlen(msg));
  if (!rc) tg_hex_encode(out, b.data + 32, 32, 1);
  tg_buf_cleanup(&b);
  tg_eip712_types_free(T);
  return rc;
}

static void test_integers(void) {
  char w[67];
  CHECK_OK(word("int8", "-128", w));
  CHECK_STR(w, "0xffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff80");
  CHECK_OK(word("int8", "\"-128\"", w));
  CHECK_STR(w, "0xffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff80");
  CHECK_OK(word("int8", "127", w));
  CHECK_STR(w, "0x000000000000000000000000000000000000000000000000000000000000007f");
  CHECK_ERR(word("int8", "128", w), TG_ERANGE);
  CHECK_ERR(word("int8", "-129", w), TG_ERANGE);
  CHECK_ERR(word("int8", "\"256\"", w), TG_ERANGE);
  CHECK_OK(word("uint8", "\"0xff\"", w));
  CHECK_STR(w, "0x00000000000000000000000000000000000000000000000000000000000000ff");
  CHECK_ERR(word("uint8", "256", w), TG_ERANGE);
  CHECK_ERR(word("uint8", "-1", w), TG_ERANGE);
  CHECK_ERR(word("uint256", "\"-1\"", w), TG_ERANGE);
  CHECK_OK(word("uint", "\"115792089237316195423570985008687907853269984665640564039457584007913129639935\"", w));
  CHECK_STR(w, "0xffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff");
  CHECK_ERR(word("uint", "\"115792089237316195423570985008687907853269984665640564039457584007913129639936\"", w), TG_ERANGE);
  CHECK_OK(word("int256", "\"-57896044618658097711785492504343953926634992332820282019728792003956564819968\"", w));
  CHECK_STR(w, "0x8000000000000000000000000000000000000000000000000000000000000000");
  CHECK_ERR(word("int256", "\"-57896044618658097711785492504343953926634992332820282019728792003956564819969\"", w), TG_ERANGE);
  CHECK_ERR(word("int256", "\"57896044618658097711785492504343953926634992332820282019728792003956564819968\"", w), TG_ERANGE);
  CHECK_OK(word("int", "\"-0\"", w));
  CHECK_STR(w, "0x0000000000000000000000000000000000000000000000000000000000000000");
  CHECK_OK(word("int64", "-9223372036854775808", w)); /* INT64_MIN as a JSON integer */
  CHECK_STR(w, "0xffffffffffffffffffffffffffffffffffffffffffffffff8000000000000000");
  CHECK_OK(word("uint136", "\"0xffffffffffffffffffffffffffffffffff\"", w));
  CHECK_ERR(word("uint136", "\"0x1ffffffffffffffffffffffffffffffffff\"", w), TG_ERANGE);
  CHECK_OK(word("int24", "\"-8388608\"", w));
  CHECK_ERR(word("int24", "\"-8388609\"", w), TG_ERANGE);
  CHECK_ERR(word("int24", "8388608", w), TG_ERANGE);
  /* JSON reals: integral ones up to 2^53 (what JavaScript holds exactly). */
  CHECK_OK(word("uint64", "1e3", w));
  CHECK_STR(w, "0x00000000000000000000000000000000000000000000000000000000000003e8");
  CHECK_OK(word("uint64", "9007199254740992.0", w));
  CHECK_ERR(word("uint64", "1.5", w), TG_ETYPED_DATA_VALUE);
  CHECK_ERR(word("uint256", "1e21", w), TG_ETYPED_DATA_VALUE);
  /* A JSON integer beyond 64 bits is valid JSON but must be given as a string. */
  CHECK_ERR(one("uint256", "18446744073709551616"), TG_ERANGE);
  /* Other spellings that some libraries coerce. */
  CHECK_ERR(word("uint256", "\"\"", w), TG_ETYPED_DATA_VALUE);
  CHECK_ERR(word("uint256", "\"0x\"", w), TG_ETYPED_DATA_VALUE);
  CHECK_ERR(word("uint256", "\" 1\"", w), TG_ETYPED_DATA_VALUE);
  CHECK_ERR(word("uint256", "\"+1\"", w), TG_ETYPED_DATA_VALUE);
  CHECK_ERR(word("int256", "\"-0x1\"", w), TG_ETYPED_DATA_VALUE);
  CHECK_ERR(word("uint256", "\"1e3\"", w), TG_ETYPED_DATA_VALUE);
  CHECK_ERR(word("uint256", "true", w), TG_ETYPED_DATA_VALUE);
  CHECK_ERR(word("uint256", "[1]", w), TG_ETYPED_DATA_VALUE);
}

static void test_atomic_values(void) {
  char w[67];
  CHECK_OK(word("bool", "true", w));
  CHECK_STR(w, "0x0000000000000000000000000000000000000000000000000000000000000001");
  CHECK_ERR(word("bool", "\"false\"", w), TG_ETYPED_DATA_VALUE); /* truthy in JavaScript */
  CHECK_ERR(word("bool", "1", w), TG_ETYPED_DATA_VALUE);
  CHECK_OK(word("address", "\"0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826\"", w));
  CHECK_STR(w, "0x000000000000000000000000cd2a3d9f938e13cd947ec05abc7fe734df8dd826");
  CHECK_ERR(word("address", "\"cd2a3d9f938e13cd947ec05abc7fe734df8dd826\"", w), TG_ETYPED_DATA_VALUE);
  CHECK_ERR(word("address", "\"0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD827\"", w), TG_ECHECKSUM);
  CHECK_ERR(word("address", "\"0xcD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826\"", w), TG_ECHECKSUM);
  CHECK_ERR(word("address", "\"0x0\"", w), TG_ETYPED_DATA_VALUE);
  CHECK_ERR(word("address", "\"0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB0\"", w), TG_ETYPED_DATA_VALUE);
  CHECK_OK(word("bytes4", "\"0xDEADbeef\"", w));
  CHECK_STR(w, "0xdeadbeef00000000000000000000000000000000000000000000000000000000");
  CHECK_ERR(word("bytes4", "\"0xdeadbe\"", w), TG_ETYPED_DATA_VALUE);
  CHECK_ERR(word("bytes4", "\"0xdeadbeef00\"", w), TG_ETYPED_DATA_VALUE);
  CHECK_ERR(word("bytes4", "\"deadbeef\"", w), TG_ETYPED_DATA_VALUE);
  CHECK_ERR(word("bytes1", "16", w), TG_ETYPED_DATA_VALUE);
  CHECK_ERR(word("bytes32", "\"test\"", w), TG_ETYPED_DATA_VALUE);
  /* bytes: keccak256 of the bytes; string: of the UTF-8 (a NUL included). */
  CHECK_OK(word("bytes", "\"0x\"", w));
  CHECK_STR(w, "0xc5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470");
  CHECK_OK(word("bytes", "\"0xCC\"", w));
  CHECK_STR(w, "0xeead6dbfc7340a56caedc044696a168870549a6a7f6f56961e84a54bd9970b8a");
  CHECK_ERR(word("bytes", "\"0xccc\"", w), TG_ETYPED_DATA_VALUE);
  CHECK_ERR(word("bytes", "\"0xzz\"", w), TG_ETYPED_DATA_VALUE);
  CHECK_ERR(word("bytes", "\"10\"", w), TG_ETYPED_DATA_VALUE);
  CHECK_OK(word("string", "\"hello\"", w));
  CHECK_STR(w, "0x1c8aff950685c2ed4bc3174f3472287b56d9517b9c948127319a09a7a36deac8");
  CHECK_OK(word("string", "\"\"", w));
  CHECK_STR(w, "0xc5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470");
  CHECK_OK(word("string", "\"\\u0000\"", w)); /* keccak256(0x00) */
  CHECK_STR(w, "0xbc36789e7a1e281436464229828f817d6612f7b477d66591ff96a9e064bcc98a");
  CHECK_ERR(word("string", "10", w), TG_ETYPED_DATA_VALUE);
  /* Missing and null members. */
  CHECK_ERR(word("string", "null", w), TG_ETYPED_DATA_MISSING);
  CHECK_ERR(dj(DOC("\"M\":[{\"name\":\"v\",\"type\":\"string\"}]", "M", "{}", "{}")),
            TG_ETYPED_DATA_MISSING);
  /* Members the type does not declare are ignored. */
  tg_hash a, b;
  const char *d1 = DOC("\"M\":[{\"name\":\"v\",\"type\":\"string\"}]", "M", "{}", "{\"v\":\"x\"}");
  const char *d2 = DOC("\"M\":[{\"name\":\"v\",\"type\":\"string\"}]", "M", "{}",
                       "{\"w\":1,\"v\":\"x\"}");
  CHECK_OK(tg_eip712_digest_json(&a, d1, strlen(d1)));
  CHECK_OK(tg_eip712_digest_json(&b, d2, strlen(d2)));
  CHECK_MEM(a.b, b.b, 32);
}

static void test_arrays(void) {
  char w[67];
  /* A dynamic array: keccak256 of the concatenated element words. */
  CHECK_OK(word("uint8[]", "[]", w));
  CHECK_STR(w, "0xc5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470");
  CHECK_OK(word("uint256[]", "[204]", w)); /* one word 0x..cc */
  char want[67];
  uint8_t one_word[32] = {0};
  one_word[31] = 0xcc;
  tg_hash h;
  tg_keccak256(&h, one_word, 32);
  tg_hex_encode(want, h.b, 32, 1);
  CHECK_STR(w, want);
  CHECK_OK(word("uint256[1]", "[204]", w));
  CHECK_STR(w, want);
  /* Nested: uint256[1][] of [[204]] hashes the inner array's hash. */
  tg_keccak256(&h, h.b, 32);
  tg_hex_encode(want, h.b, 32, 1);
  CHECK_OK(word("uint256[1][]", "[[204]]", w));
  CHECK_STR(w, want);
  CHECK_OK(word("uint256[][1]", "[[204]]", w));
  CHECK_STR(w, want);
  CHECK_ERR(word("uint256[2]", "[1]", w), TG_ETYPED_DATA_VALUE);
  CHECK_ERR(word("uint256[2]", "[1,2,3]", w), TG_ETYPED_DATA_VALUE);
  CHECK_ERR(word("uint256[]", "1", w), TG_ETYPED_DATA_VALUE);
  CHECK_ERR(word("uint256[]", "[null]", w), TG_ETYPED_DATA_MISSING);
  CHECK_ERR(word("uint256[][]", "[1]", w), TG_ETYPED_DATA_VALUE);
  /* Arrays of structs hash each struct. */
  const char *d = DOC("\"P\":[{\"name\":\"n\",\"type\":\"string\"}],\"M\":[{\"name\":\"ps\","
                      "\"type\":\"P[]\"}]",
                      "M", "{}", "{\"ps\":[{\"n\":\"a\"},{\"n\":\"b\"}]}");
  CHECK_OK(dj(d));
  CHECK_ERR(dj(DOC("\"P\":[{\"name\":\"n\",\"type\":\"string\"}],\"M\":[{\"name\":\"ps\","
                   "\"type\":\"P[]\"}]",
                   "M", "{}", "{\"ps\":[{\"n\":\"a\"},\"b\"]}")),
            TG_ETYPED_DATA_VALUE);
}

static void test_types(void) {
  /* encodeType sorts referenced types by name and keeps spellings such as "uint". */
  const char *t = "{\"Z\":[{\"name\":\"a\",\"type\":\"B[2][]\"},{\"name\":\"u\",\"type\":\"uint\"}],"
                  "\"B\":[{\"name\":\"c\",\"type\":\"C\"},{\"name\":\"a\",\"type\":\"A\"}],"
                  "\"C\":[{\"name\":\"x\",\"type\":\"bytes32\"}],\"A\":[{\"name\":\"y\",\"type\":"
                  "\"int\"}],\"Unused\":[]}";
  tg_eip712_types *T = NULL;
  CHECK_OK(tg_eip712_types_parse(&T, t, strlen(t)));
  tg_buf b;
  tg_buf_init(&b, 1 << 16);
  CHECK_OK(tg_eip712_encode_type(&b, T, "Z"));
  CHECK_STR((const char *)b.data, "Z(B[2][] a,uint u)A(int y)B(C c,A a)C(bytes32 x)");
  tg_buf_reset(&b);
  CHECK_OK(tg_eip712_encode_type(&b, T, "Unused"));
  CHECK_STR((const char *)b.data, "Unused()");
  tg_buf_cleanup(&b);
  tg_eip712_types_free(T);

  const char *bad_types[] = {
      "\"M\":[{\"name\":\"v\",\"type\":\"Nope\"}]",          /* unknown */
      "\"M\":[{\"name\":\"v\",\"type\":\"M\"}]",             /* self-recursive */
      "\"M\":[{\"name\":\"v\",\"type\":\"N[]\"}],\"N\":[{\"name\":\"m\",\"type\":\"M\"}]",
      "\"M\":[{\"name\":\"v\",\"type\":\"uint7\"}]",
      "\"M\":[{\"name\":\"v\",\"type\":\"uint264\"}]",
      "\"M\":[{\"name\":\"v\",\"type\":\"uint08\"}]",
      "\"M\":[{\"name\":\"v\",\"type\":\"int0\"}]",
      "\"M\":[{\"name\":\"v\",\"type\":\"bytes0\"}]",
      "\"M\":[{\"name\":\"v\",\"type\":\"bytes33\"}]",
      "\"M\":[{\"name\":\"v\",\"type\":\"function\"}]",
      "\"M\":[{\"name\":\"v\",\"type\":\"fixed128x18\"}]",
      "\"M\":[{\"name\":\"v\",\"type\":\"uint256[0]\"}]",
      "\"M\":[{\"name\":\"v\",\"type\":\"uint256[01]\"}]",
      "\"M\":[{\"name\":\"v\",\"type\":\"uint256[-1]\"}]",
      "\"M\":[{\"name\":\"v\",\"type\":\"uint256[\"}]",
      "\"M\":[{\"name\":\"v\",\"type\":\"uint256]\"}]",
      "\"M\":[{\"name\":\"v\",\"type\":\"uint256[[]]\"}]",
      "\"M\":[{\"name\":\"v\",\"type\":\"uint256 \"}]",
      "\"M\":[{\"name\":\"v\",\"type\":\"uint256[65537]\"}]",
      "\"M\":[{\"name\":\"v\",\"type\":\"uint256[][][][][][][][][]\"}]", /* 9 dimensions */
      "\"M\":[{\"name\":\"v\",\"type\":\"\"}]",
      "\"uint256\":[],\"M\":[{\"name\":\"v\",\"type\":\"uint256\"}]", /* shadows an atomic type */
      "\"M x\":[],\"M\":[{\"name\":\"v\",\"type\":\"bool\"}]",
  };
  for (size_t i = 0; i < sizeof bad_types / sizeof *bad_types; i++) {
    char buf[1024];
    snprintf(buf, sizeof buf, "{\"types\":{%s},\"primaryType\":\"M\",\"domain\":{},\"message\":{\"v\":1}}",
             bad_types[i]);
    CHECKF(dj(buf) == TG_ETYPED_DATA_TYPE, "types %s: %s", bad_types[i], tg_err_name(dj(buf)));
  }
  CHECK_OK(one("uint256[][][][][][][][]", "[[[[[[[[]]]]]]]]")); /* 8 dimensions are fine */
  /* Malformed member lists and names. */
  const char *bad_shape[] = {
      "\"M\":{}", "\"M\":[1]", "\"M\":[{\"name\":\"v\"}]", "\"M\":[{\"type\":\"bool\"}]",
      "\"M\":[{\"name\":\"v\",\"type\":\"bool\"},{\"name\":\"v\",\"type\":\"bool\"}]",
      "\"M\":[{\"name\":\"a b\",\"type\":\"bool\"}]", "\"M\":[{\"name\":\"\",\"type\":\"bool\"}]",
      "\"M\":[{\"name\":7,\"type\":\"bool\"}]",
  };
  for (size_t i = 0; i < sizeof bad_shape / sizeof *bad_shape; i++) {
    char buf[1024];
    snprintf(buf, sizeof buf, "{\"types\":{%s},\"primaryType\":\"M\",\"domain\":{},\"message\":{\"v\":true}}",
             bad_shape[i]);
    CHECKF(dj(buf) == TG_ETYPED_DATA, "shape %s: %s", bad_shape[i], tg_err_name(dj(buf)));
  }
  /* The primary type must exist. */
  CHECK_ERR(dj(DOC("\"M\":[]", "N", "{}", "{}")), TG_ETYPED_DATA_TYPE);
}

static void test_documents(void) {
  /* The four members are required; extras are ignored. */
  CHECK_ERR(dj("{\"types\":{\"M\":[]},\"primaryType\":\"M\",\"domain\":{}}"), TG_ETYPED_DATA);
  CHECK_ERR(dj("{\"types\":{\"M\":[]},\"primaryType\":\"M\",\"message\":{}}"), TG_ETYPED_DATA);
  CHECK_ERR(dj("{\"types\":{\"M\":[]},\"domain\":{},\"message\":{}}"), TG_ETYPED_DATA);
  CHECK_ERR(dj("{\"types\":[],\"primaryType\":\"M\",\"domain\":{},\"message\":{}}"), TG_ETYPED_DATA);
  CHECK_ERR(dj("[]"), TG_ETYPED_DATA);
  CHECK_ERR(dj("{\"types\":{\"M\":[]},\"primaryType\":\"M\",\"domain\":{},\"message\":[]}"), TG_ETYPED_DATA);
  CHECK_OK(dj("{\"types\":{\"M\":[]},\"primaryType\":\"M\",\"domain\":{},\"message\":{},\"x\":1}"));
  /* Not JSON, duplicate keys (two parsers could pick different values), trailing bytes. */
  CHECK_ERR(dj("{"), TG_EJSON);
  CHECK_ERR(dj(""), TG_EJSON);
  CHECK_ERR(dj(DOC("\"M\":[{\"name\":\"v\",\"type\":\"uint8\"}]", "M", "{}", "{\"v\":1,\"v\":2}")),
            TG_EJSON);
  CHECK_ERR(dj("{\"types\":{\"M\":[]},\"primaryType\":\"M\",\"domain\":{},\"message\":{}} x"), TG_EJSON);
  /* Inferred EIP712Domain: canonical order; an unknown domain key is refused. */
  const char *inferred = DOC("\"M\":[]", "M", "{\"chainId\":1,\"name\":\"n\"}", "{}");
  const char *explicit = DOC("\"EIP712Domain\":[{\"name\":\"name\",\"type\":\"string\"},{\"name\":"
                             "\"chainId\",\"type\":\"uint256\"}],\"M\":[]",
                             "M", "{\"name\":\"n\",\"chainId\":1}", "{}");
  tg_hash a, b;
  CHECK_OK(tg_eip712_digest_json(&a, inferred, strlen(inferred)));
  CHECK_OK(tg_eip712_digest_json(&b, explicit, strlen(explicit)));
  CHECK_MEM(a.b, b.b, 32);
  CHECK_ERR(dj(DOC("\"M\":[]", "M", "{\"chain\":1}", "{}")), TG_ETYPED_DATA);
  /* A domain key its declared type lacks would look signed without being so. */
  CHECK_ERR(dj(DOC("\"EIP712Domain\":[{\"name\":\"name\",\"type\":\"string\"}],\"M\":[]", "M",
                   "{\"name\":\"n\",\"chainId\":1}", "{}")),
            TG_ETYPED_DATA);
  CHECK_ERR(dj(DOC("\"EIP712Domain\":[{\"name\":\"name\",\"type\":\"string\"}],\"M\":[]", "M",
                   "{}", "{}")),
            TG_ETYPED_DATA_MISSING);
  /* Declared order rules, not the canonical one. */
  const char *swapped = DOC("\"EIP712Domain\":[{\"name\":\"chainId\",\"type\":\"uint256\"},{\"name\":"
                            "\"name\",\"type\":\"string\"}],\"M\":[]",
                            "M", "{\"name\":\"n\",\"chainId\":1}", "{}");
  CHECK_OK(tg_eip712_digest_json(&b, swapped, strlen(swapped)));
  CHECK(memcmp(a.b, b.b, 32) != 0);
  /* MetaMask's rule for primaryType EIP712Domain: keccak256(0x1901 || domainSeparator). */
  tg_hash ds;
  const char *domonly = DOC("\"EIP712Domain\":[]", "EIP712Domain", "{}", "{}");
  CHECK_OK(tg_eip712_hashes_json(&a, &ds, NULL, domonly, strlen(domonly)));
  check_hash(&a, "8d4a3f4082945b7879e2b55f181c31a77c8c0a464b70669458abbaaf99de4c38", "domain-only");
  /* Caps. */
  CHECK_ERR(tg_eip712_digest_json(&a, "{}", TG_EIP712_MAX_JSON + 1), TG_ETOOBIG);
  tg_buf big;
  tg_buf_init(&big, 1 << 22);
  int rc = tg_buf_append_str(&big, "{\"types\":{");
  for (int i = 0; i <= TG_EIP712_MAX_TYPES; i++)
    rc |= tg_buf_printf(&big, "%s\"T%d\":[]", i ? "," : "", i);
  rc |= tg_buf_append_str(&big, "},\"primaryType\":\"T0\",\"domain\":{},\"message\":{}}");
  CHECK(rc == 0);
  CHECK_ERR(tg_eip712_digest_json(&a, (const char *)big.data, big.len), TG_ETOOBIG);
  /* A chain of nested structs deeper than the depth cap. */
  tg_buf_reset(&big);
  rc = tg_buf_append_str(&big, "{\"types\":{");
  for (int i = 0; i < 100; i++)
    rc |= tg_buf_printf(&big, "%s\"T%d\":[{\"name\":\"n\",\"type\":\"T%d\"}]", i ? "," : "", i, i + 1);
  rc |= tg_buf_append_str(&big, ",\"T100\":[]},\"primaryType\":\"T0\",\"domain\":{},\"message\":");
  for (int i = 0; i < 100; i++) rc |= tg_buf_append_str(&big, "{\"n\":");
  rc |= tg_buf_append_str(&big, "{}");
  for (int i = 0; i < 100; i++) rc |= tg_buf_append_str(&big, "}");
  rc |= tg_buf_append_str(&big, "}");
  CHECK(rc == 0);
  CHECK_ERR(tg_eip712_digest_json(&a, (const char *)big.data, big.len), TG_ETOOBIG);
  /* A chain of types whose encodeTypes add up past the 16 MiB budget (each repeats the ones after it). */
  tg_buf_reset(&big);
  rc = tg_buf_append_str(&big, "{\"types\":{");
  for (int i = 0; i < 256; i++) {
    rc |= tg_buf_printf(&big, "%s\"T%d\":[", i ? "," : "", i);
    for (int f = 0; f < 10; f++)
      rc |= tg_buf_printf(&big, "{\"name\":\"member_with_a_long_name_to_make_the_type_string_big_%d\",\"type\":\"%s\"},",
                          f, "bytes32");
    rc |= i < 255 ? tg_buf_printf(&big, "{\"name\":\"next\",\"type\":\"T%d\"}]", i + 1)
                  : tg_buf_append_str(&big, "{\"name\":\"last\",\"type\":\"bool\"}]");
  }
  rc |= tg_buf_append_str(&big, "},\"primaryType\":\"T0\",\"domain\":{},\"message\":{}}");
  CHECK(rc == 0 && big.len < TG_EIP712_MAX_JSON);
  CHECK_ERR(tg_eip712_digest_json(&a, (const char *)big.data, big.len), TG_ETOOBIG);
  tg_buf_cleanup(&big);
  /* NULL arguments. */
  CHECK_ERR(tg_eip712_digest_json(NULL, "{}", 2), TG_EINVAL);
  CHECK_ERR(tg_eip712_digest_json(&a, NULL, 0), TG_EINVAL);
  tg_eip712_types_free(NULL);
}

/* Where a document is wrong, for people reading an error message. */
static void test_where(void) {
  struct {
    const char *doc;
    int err;
    const char *where;
  } cases[] = {
      {DOC("\"P\":[{\"name\":\"wallet\",\"type\":\"address\"}],\"M\":[{\"name\":\"to\","
           "\"type\":\"P[]\"}]",
           "M", "{}",
           "{\"to\":[{\"wallet\":\"0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826\"},{\"wallet\":"
           "\"0xcD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826\"}]}"),
       TG_ECHECKSUM, "message.to[1].wallet"},
      {DOC("\"M\":[{\"name\":\"v\",\"type\":\"uint8[2][]\"}]", "M", "{}", "{\"v\":[[1,2],[3,256]]}"),
       TG_ERANGE, "message.v[1][1]"},
      {DOC("\"M\":[{\"name\":\"v\",\"type\":\"string\"}]", "M", "{}", "{}"),
       TG_ETYPED_DATA_MISSING, "message.v"},
      {DOC("\"M\":[{\"name\":\"v\",\"type\":\"Nope\"}]", "M", "{}", "{}"), TG_ETYPED_DATA_TYPE,
       "types.M.v"},
      {DOC("\"M\":[{\"name\":\"v\",\"type\":\"N\"}],\"N\":[{\"name\":\"m\",\"type\":\"M\"}]",
           "M", "{}", "{}"),
       TG_ETYPED_DATA_TYPE, "types.M"},
      {DOC("\"M\":[]", "N", "{}", "{}"), TG_ETYPED_DATA_TYPE, "primaryType"},
      {DOC("\"M\":[]", "M", "{\"chain\":1}", "{}"), TG_ETYPED_DATA, "domain"},
      {DOC("\"EIP712Domain\":[],\"M\":[]", "M", "{\"chainId\":1}", "{}"), TG_ETYPED_DATA,
       "domain.chainId"},
      {DOC("\"EIP712Domain\":[{\"name\":\"chainId\",\"type\":\"uint256\"}],\"M\":[]", "M",
           "{\"chainId\":-1}", "{}"),
       TG_ERANGE, "domain.chainId"},
      {"{\"types\":{},\"primaryType\":\"M\",\"domain\":{},\"message\":7}", TG_ETYPED_DATA, "message"},
      {"{\"types\":{\n}", TG_EJSON, "line 2 column 1"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    char where[TG_EIP712_WHERE_MAX];
    tg_hash h;
    int rc = tg_eip712_hashes_json_where(&h, NULL, NULL, where, cases[i].doc, strlen(cases[i].doc));
    CHECKF(rc == cases[i].err, "case %zu: %s, want %s", i, tg_err_name(rc), tg_err_name(cases[i].err));
    CHECKF(strcmp(where, cases[i].where) == 0, "case %zu: where \"%s\", want \"%s\"", i, where,
           cases[i].where);
  }
  /* Success leaves it empty; a deep path keeps its innermost parts and stays terminated. */
  char where[TG_EIP712_WHERE_MAX] = "junk";
  tg_hash h;
  const char *ok = DOC("\"M\":[]", "M", "{}", "{}");
  CHECK_OK(tg_eip712_hashes_json_where(&h, NULL, NULL, where, ok, strlen(ok)));
  CHECK_STR(where, "");
  tg_buf big;
  tg_buf_init(&big, 1 << 20);
  int rc = tg_buf_append_str(&big, "{\"types\":{");
  for (int i = 0; i < 60; i++)
    rc |= tg_buf_printf(&big, "%s\"T%d\":[{\"name\":\"a_rather_long_member_name_%d\",\"type\":\"T%d\"}]",
                        i ? "," : "", i, i, i + 1);
  rc |= tg_buf_append_str(&big, ",\"T60\":[{\"name\":\"x\",\"type\":\"bool\"}]},\"primaryType\":\"T0\",\"domain\":{},\"message\":");
  for (int i = 0; i < 60; i++) rc |= tg_buf_printf(&big, "{\"a_rather_long_member_name_%d\":", i);
  rc |= tg_buf_append_str(&big, "{\"x\":1}");
  for (int i = 0; i < 60; i++) rc |= tg_buf_append_str(&big, "}");
  rc |= tg_buf_append_str(&big, "}");
  CHECK(rc == 0);
  CHECK_ERR(tg_eip712_hashes_json_where(&h, NULL, NULL, where, (const char *)big.data, big.len),
            TG_ETYPED_DATA_VALUE);
  CHECK(strlen(where) < TG_EIP712_WHERE_MAX);
  size_t n = strlen(where);
  CHECKF(n > 20 && strncmp(where, "...a_rather_long_member_name_", 29) == 0 &&
             strcmp(where + n - 2, ".x") == 0,
         "deep path \"%s\"", where);
  tg_buf_cleanup(&big);
}

int main(void) {
  RUN(test_eip_example);
  RUN(test_ethers);
  RUN(test_metamask_v4);
  RUN(test_fast_fixed);
  RUN(test_fast_vs_json);
  RUN(test_integers);
  RUN(test_atomic_values);
  RUN(test_arrays);
  RUN(test_types);
  RUN(test_documents);
  RUN(test_where);
  return tgt_done();
}
