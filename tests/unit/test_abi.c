/* The Solidity ABI codec against ethereum/tests, ethers' testcases, cast's outputs and must-reject data. */
#include <stdlib.h>

#include "tg_test.h"
#include "tollgate/abi.h"
#include "tollgate/address.h"
#include "tollgate/hex.h"
#include "tollgate/keccak.h"
#include "tollgate/u256.h"

/* ---- helpers ---- */

/* A bump pool for the values a test builds from JSON; freed per case. */
typedef struct pool_blk {
  struct pool_blk *next;
} pool_blk;
static pool_blk *pool_head;

static void *pool_alloc(size_t n) {
  pool_blk *b = calloc(1, sizeof *b + n + 16);
  if (b == NULL) abort();
  b->next = pool_head;
  pool_head = b;
  return (unsigned char *)b + sizeof *b + ((16 - sizeof *b % 16) % 16);
}

static void pool_reset(void) {
  while (pool_head) {
    pool_blk *n = pool_head->next;
    free(pool_head);
    pool_head = n;
  }
}

static tg_abi_sig *type1(const char *type) {
  tg_abi_sig *s = NULL;
  int rc = tg_abi_type_parse(&s, type, strlen(type));
  CHECKF(rc == 0, "type %s: %s", type, tg_err_name(rc));
  return s;
}

static tg_abi_sig *sig(const char *text) {
  tg_abi_sig *s = NULL;
  int rc = tg_abi_sig_parse(&s, text, strlen(text));
  CHECKF(rc == 0, "sig %s: %s", text, tg_err_name(rc));
  return s;
}

static int parse_int(tg_u256 *w, const char *s, unsigned bits, int is_int) {
  int neg = 0;
  if (*s == '-') neg = 1, s++;
  if (tg_u256_parse(w, s, strlen(s))) return -1;
  if (neg) tg_u256_neg(w, w);
  (void)bits;
  (void)is_int;
  return 0;
}

/*
 * Builds a value of type t from a JSON value in the vectors' convention: numbers as JSON
 * integers or (possibly negative, possibly 0x) strings; bytes as 0x hex (ethereum/tests gives
 * bytesN/bytes as ASCII text when not 0x-prefixed); arrays and tuples as JSON arrays.
 */
static int from_json(tg_abi_value *v, const tg_abi_type *t, json_t *j) {
  memset(v, 0, sizeof *v);
  switch (t->kind) {
  case TG_ABI_UINT:
  case TG_ABI_INT:
    if (json_is_integer(j)) {
      json_int_t x = json_integer_value(j);
      *v = t->kind == TG_ABI_INT ? tg_abi_val_i64(x) : tg_abi_val_u64((uint64_t)x);
      return 0;
    }
    if (!json_is_string(j)) return -1;
    return parse_int(&v->word, json_string_value(j), t->bits, t->kind == TG_ABI_INT);
  case TG_ABI_ADDRESS: {
    tg_address a;
    const char *s = json_string_value(j);
    if (!s || tg_address_parse(&a, s, strlen(s))) return -1;
    *v = tg_abi_val_address(&a);
    return 0;
  }
  case TG_ABI_BOOL:
    if (!json_is_boolean(j)) return -1;
    *v = tg_abi_val_bool(json_is_true(j));
    return 0;
  case TG_ABI_FIXED_BYTES:
  case TG_ABI_FUNCTION:
  case TG_ABI_BYTES:
  case TG_ABI_STRING: {
    const char *s = json_string_value(j);
    if (!s) return -1;
    size_t n = json_string_length(j);
    const uint8_t *p = (const uint8_t *)s;
    if (t->kind != TG_ABI_STRING && n >= 2 && s[0] == '0' && s[1] == 'x') {
      uint8_t *b = pool_alloc(n / 2 + 1);
      if (tg_hex_decode(b, n / 2 + 1, &n, s, n, 0)) return -1;
      p = b;
    }
    if (t->kind == TG_ABI_FIXED_BYTES || t->kind == TG_ABI_FUNCTION) {
      if (n != t->size) return -1;
      *v = tg_abi_val_fixed(p, n);
    } else {
      *v = tg_abi_val_bytes(p, n);
    }
    return 0;
  }
  case TG_ABI_ARRAY:
  case TG_ABI_FIXED_ARRAY:
  case TG_ABI_TUPLE: {
    if (!json_is_array(j)) return -1;
    size_t n = json_array_size(j);
    tg_abi_value *items = pool_alloc((n ? n : 1) * sizeof *items);
    for (size_t i = 0; i < n; i++) {
      const tg_abi_type *et = t->kind == TG_ABI_TUPLE ? (i < t->count ? t->members[i] : NULL)
                                                      : t->elem;
      if (et == NULL || from_json(&items[i], et, json_array_get(j, i))) return -1;
    }
    *v = tg_abi_val_list(items, n);
    return 0;
  }
  }
  return -1;
}

static char *fmt(const tg_abi_type *t, const tg_abi_value *v) {
  tg_buf b;
  tg_buf_init(&b, 0);
  if (tg_abi_format_value(&b, t, v) || tg_buf_append_byte(&b, 0)) {
    tg_buf_cleanup(&b);
    return NULL;
  }
  return (char *)b.data;
}

static char *hexstr(const uint8_t *p, size_t n) { return tg_hex_dup(p, n); }

/* Encodes args (text, cast syntax) for a signature: "0x..." or NULL on error (rc in *err). */
static char *enc_text(const char *signature, int nargs, const char *const *args, int selector,
                      int *err) {
  tg_abi_sig *s = NULL;
  tg_abi_tree *tree = NULL;
  char *out = NULL;
  tg_buf b;
  tg_buf_init(&b, 0);
  int rc = tg_abi_sig_parse(&s, signature, strlen(signature));
  if (!rc) rc = tg_abi_parse_args(&tree, s->inputs, args, (size_t)nargs);
  if (!rc) rc = selector ? tg_abi_encode_call(&b, s, &tree->root) : tg_abi_encode(&b, s->inputs, &tree->root);
  if (!rc) out = hexstr(b.data, b.len);
  if (err) *err = rc;
  tg_buf_cleanup(&b);
  tg_abi_tree_free(tree);
  tg_abi_sig_free(s);
  return out;
}

/* Decodes hex data as the inputs of `signature` and joins cast's lines. */
static char *dec_lines(const char *signature, const char *hex, unsigned flags, int *err) {
  tg_abi_sig *s = NULL;
  tg_abi_tree *tree = NULL;
  size_t n = 0;
  uint8_t *data = tgt_unhex(hex, &n);
  char *out = NULL;
  tg_buf b;
  tg_buf_init(&b, 0);
  int rc = tg_abi_sig_parse(&s, signature, strlen(signature));
  if (!rc && data == NULL) rc = TG_EHEX;
  if (!rc) rc = tg_abi_decode(&tree, s->inputs, data, n, flags);
  if (!rc) rc = tg_abi_format_lines(&b, s->inputs, &tree->root);
  if (!rc) rc = tg_buf_append_byte(&b, 0);
  if (!rc) out = (char *)tg_buf_steal(&b, &n);
  if (err) *err = rc;
  tg_buf_cleanup(&b);
  tg_abi_tree_free(tree);
  tg_abi_sig_free(s);
  free(data);
  return out;
}

static int dec_rc(const char *signature, const char *hex, unsigned flags) {
  int err = 0;
  free(dec_lines(signature, hex, flags, &err));
  return err;
}

/* ---- signatures ---- */

static void check_canon(const char *in, const char *want) {
  tg_abi_sig *s = NULL;
  int rc = tg_abi_sig_parse(&s, in, strlen(in));
  CHECKF(rc == 0, "%s: %s", in, tg_err_name(rc));
  if (rc == 0) CHECK_STR(s->canonical, want);
  tg_abi_sig_free(s);
}

static void test_sig_canonical(void) {
  check_canon("transfer(address,uint256)", "transfer(address,uint256)");
  check_canon("transfer(address, uint)", "transfer(address,uint256)");
  check_canon("function transfer(address to, uint amount) external returns (bool)",
              "transfer(address,uint256)");
  check_canon("event Transfer(address indexed from, address indexed to, uint256 value)",
              "Transfer(address,address,uint256)");
  check_canon("f(int,byte,tuple(uint8,bytes)[2][],(string)[])",
              "f(int256,bytes1,(uint8,bytes)[2][],(string)[])");
  check_canon("f(address payable a, bytes memory b, string calldata c)", "f(address,bytes,string)");
  check_canon("f()", "f()");
  check_canon("()", "()");
  check_canon("(uint256,bool)", "(uint256,bool)");
  check_canon(" f ( uint256 , bool ) ", "f(uint256,bool)");
  tg_abi_sig *s = sig("balanceOf(address)(uint256)");
  if (s) {
    CHECK(s->outputs != NULL && s->outputs->count == 1 && s->outputs->members[0]->kind == TG_ABI_UINT);
    CHECK_STR(s->canonical, "balanceOf(address)");
    CHECK_INT(s->name.len, 9);
  }
  tg_abi_sig_free(s);
  s = sig("f(uint256,string)");
  CHECK(s && s->outputs == NULL);
  tg_abi_sig_free(s);
}

static void test_sig_types(void) {
  tg_abi_sig *s = sig("f(uint8,int256,bytes1,bytes32,address,bool,function,bytes,string,uint256[3],"
                      "string[2],(uint256,bytes32),(uint256,string),uint64[])");
  if (s == NULL) return;
  const tg_abi_type *const *m = s->inputs->members;
  CHECK_INT(s->inputs->count, 14);
  CHECK(m[0]->kind == TG_ABI_UINT && m[0]->bits == 8 && !m[0]->dynamic && m[0]->head == 32);
  CHECK(m[1]->kind == TG_ABI_INT && m[1]->bits == 256);
  CHECK(m[2]->kind == TG_ABI_FIXED_BYTES && m[2]->size == 1);
  CHECK(m[3]->kind == TG_ABI_FIXED_BYTES && m[3]->size == 32);
  CHECK(m[4]->kind == TG_ABI_ADDRESS && m[5]->kind == TG_ABI_BOOL && m[6]->kind == TG_ABI_FUNCTION);
  CHECK(m[7]->kind == TG_ABI_BYTES && m[7]->dynamic && m[8]->kind == TG_ABI_STRING && m[8]->dynamic);
  CHECK(m[9]->kind == TG_ABI_FIXED_ARRAY && m[9]->count == 3 && !m[9]->dynamic && m[9]->head == 96);
  CHECK(m[10]->kind == TG_ABI_FIXED_ARRAY && m[10]->dynamic && m[10]->head == 32);
  CHECK(m[11]->kind == TG_ABI_TUPLE && !m[11]->dynamic && m[11]->head == 64);
  CHECK(m[12]->kind == TG_ABI_TUPLE && m[12]->dynamic && m[12]->head == 32);
  CHECK(m[13]->kind == TG_ABI_ARRAY && m[13]->dynamic && m[13]->elem->bits == 64);
  CHECK(s->inputs->dynamic);
  tg_abi_sig_free(s);
  /* every uintN/intN/bytesN is accepted, and only those */
  for (int n = 1; n <= 264; n++) {
    char b[64];
    tg_abi_sig *t = NULL;
    snprintf(b, sizeof b, "f(uint%d)", n);
    int want = n % 8 == 0 && n <= 256;
    CHECKF((tg_abi_sig_parse(&t, b, strlen(b)) == 0) == want, "%s", b);
    tg_abi_sig_free(t);
    snprintf(b, sizeof b, "f(int%d)", n);
    CHECKF((tg_abi_sig_parse(&t, b, strlen(b)) == 0) == want, "%s", b);
    tg_abi_sig_free(t);
    snprintf(b, sizeof b, "f(bytes%d)", n);
    CHECKF((tg_abi_sig_parse(&t, b, strlen(b)) == 0) == (n <= 32), "%s", b);
    tg_abi_sig_free(t);
  }
}

static void test_sig_rejects(void) {
  static const char *const bad[] = {
      "f", "f(", "f(uint256", "f(uint256))", "f(uint7)", "f(uint264)", "f(uint08)", "f(bytes0)",
      "f(bytes33)", "f(bytes01)", "f(foo)", "f(uint256[)", "f(uint256[0])", "f(uint256[01])",
      "f(uint256[-1])", "f(())", "f((uint256,))", "f(,uint256)", "f(uint256,)", "f(tuple)",
      "f(uint256 [2])", "f(uint256)x(", "", "(", "f(uint256)(", "f(uint256[99999999999])",
      "f(uint256[4294967296])"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    tg_abi_sig *s = (tg_abi_sig *)1;
    int rc = tg_abi_sig_parse(&s, bad[i], strlen(bad[i]));
    CHECKF(rc == TG_EABI_SIG || rc == TG_EABI_DEPTH, "'%s' -> %s", bad[i], tg_err_name(rc));
    CHECK(s == NULL);
    tg_abi_sig_free(s);
  }
  /* depth cap: 32 levels pass, 33 fail */
  char deep[512] = "f(";
  for (int i = 0; i < 31; i++) strcat(deep, "(");
  strcat(deep, "uint256");
  for (int i = 0; i < 31; i++) strcat(deep, ")");
  strcat(deep, ")");
  tg_abi_sig *s = NULL;
  CHECK_OK(tg_abi_sig_parse(&s, deep, strlen(deep)));
  tg_abi_sig_free(s);
  char deeper[512] = "f(";
  for (int i = 0; i < 33; i++) strcat(deeper, "(");
  strcat(deeper, "uint256");
  for (int i = 0; i < 33; i++) strcat(deeper, ")");
  strcat(deeper, ")");
  CHECK_ERR(tg_abi_sig_parse(&s, deeper, strlen(deeper)), TG_EABI_DEPTH);
  char arr[512] = "f(uint256";
  for (int i = 0; i < 40; i++) strcat(arr, "[]");
  strcat(arr, ")");
  CHECK_ERR(tg_abi_sig_parse(&s, arr, strlen(arr)), TG_EABI_DEPTH);
  /* a static head over 1 MiB */
  CHECK_ERR(tg_abi_sig_parse(&s, "f(uint256[40000])", 17), TG_EABI_SIG);
  CHECK_ERR(tg_abi_sig_parse(&s, "f(uint256[1000][1000])", 22), TG_EABI_SIG);
  /* length cap */
  size_t big = TG_ABI_MAX_SIG + 10;
  char *longsig = malloc(big + 1);
  memset(longsig, ' ', big);
  memcpy(longsig, "f(uint256)", 10);
  longsig[big] = 0;
  CHECK_ERR(tg_abi_sig_parse(&s, longsig, big), TG_EABI_SIG);
  free(longsig);
  /* too many nodes */
  tg_buf b;
  tg_buf_init(&b, 0);
  CHECK_OK(tg_buf_append_str(&b, "f("));
  for (int i = 0; i < 1100; i++) CHECK_OK(tg_buf_append_str(&b, i ? ",bool" : "bool"));
  CHECK_OK(tg_buf_append_str(&b, ")"));
  CHECK_ERR(tg_abi_sig_parse(&s, (const char *)b.data, b.len), TG_EABI_SIG);
  tg_buf_cleanup(&b);
}

static void check_selector(const char *text, const char *want) {
  uint8_t sel[4];
  int rc = tg_abi_selector_str(sel, text, strlen(text));
  CHECKF(rc == 0, "%s: %s", text, tg_err_name(rc));
  char *h = hexstr(sel, 4);
  CHECKF(strcmp(h, want) == 0, "selector(%s) = %s, want %s", text, h, want);
  free(h);
}

static void test_selectors_topics(void) {
  /* from cast sig / well-known ERC-20, EIP-3009 selectors */
  check_selector("transfer(address,uint256)", "0xa9059cbb");
  check_selector("transfer(address, uint)", "0xa9059cbb");
  check_selector("function transfer(address to, uint amount) external", "0xa9059cbb");
  check_selector("f((uint,int)[])", "0x73ae7c45");
  check_selector("balanceOf(address)", "0x70a08231");
  check_selector("approve(address,uint256)", "0x095ea7b3");
  check_selector("transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,"
                 "bytes32,bytes32)", "0xe3ee160e");
  check_selector("Error(string)", "0x08c379a0");
  check_selector("Panic(uint256)", "0x4e487b71");
  check_selector("baz(uint32,bool)", "0xcdcd77c0"); /* the ABI spec's example */
  check_selector("bar(bytes3[2])", "0xfce353f6");
  check_selector("sam(bytes,bool,uint256[])", "0xa5643bf2");
  check_selector("f(uint256,uint32[],bytes10,bytes)", "0x8be65246");
  tg_hash h;
  const char *tr = "Transfer(address indexed,address indexed,uint256)";
  CHECK_OK(tg_abi_event_topic(&h, tr, strlen(tr)));
  char *x = hexstr(h.b, 32);
  CHECK_STR(x, "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef");
  free(x);
  const char *ev = "event Approval(address indexed owner, address indexed spender, uint256 value)";
  CHECK_OK(tg_abi_event_topic(&h, ev, strlen(ev)));
  x = hexstr(h.b, 32);
  CHECK_STR(x, "0x8c5be1e5ebec7d5bd14f71427d1e84f3dd0314c0f7b2291e5b200ac8c7c3b925");
  free(x);
  CHECK_ERR(tg_abi_event_topic(&h, "Transfer(", 9), TG_EABI_SIG);
}

/* ---- vectors ---- */

static void test_ethereum_tests_abi(void) {
  json_t *j = tgt_load_json("ethereum-tests-abi/basic_abi_tests.json");
  if (!j) return;
  const char *name;
  json_t *c;
  int n = 0;
  json_object_foreach(j, name, c) {
    json_t *types = json_object_get(c, "types");
    tg_buf sigtext;
    tg_buf_init(&sigtext, 0);
    CHECK_OK(tg_buf_append_str(&sigtext, "("));
    for (size_t i = 0; i < json_array_size(types); i++) {
      if (i) CHECK_OK(tg_buf_append_str(&sigtext, ","));
      CHECK_OK(tg_buf_append_str(&sigtext, json_string_value(json_array_get(types, i))));
    }
    CHECK_OK(tg_buf_append_str(&sigtext, ")"));
    tg_abi_sig *s = sig((const char *)sigtext.data);
    tg_buf_cleanup(&sigtext);
    if (!s) continue;
    tg_abi_value v;
    CHECKF(from_json(&v, s->inputs, json_object_get(c, "args")) == 0, "%s: args", name);
    tg_buf out;
    tg_buf_init(&out, 0);
    CHECK_OK(tg_abi_encode(&out, s->inputs, &v));
    char *h = hexstr(out.data, out.len);
    CHECKF(strcmp(h + 2, json_string_value(json_object_get(c, "result"))) == 0, "%s: %s", name, h);
    /* and back */
    tg_abi_tree *t = NULL;
    CHECK_OK(tg_abi_decode(&t, s->inputs, out.data, out.len, TG_ABI_DECODE_CANONICAL));
    if (t) {
      char *a = fmt(s->inputs, &t->root), *b = fmt(s->inputs, &v);
      CHECKF(a && b && strcmp(a, b) == 0, "%s: decoded %s, want %s", name, a, b);
      free(a);
      free(b);
    }
    tg_abi_tree_free(t);
    free(h);
    tg_buf_cleanup(&out);
    tg_abi_sig_free(s);
    pool_reset();
    n++;
  }
  CHECK_INT(n, 3);
  json_decref(j);
}

static void test_ethers_abi(void) {
  json_t *j = tgt_load_json("ethers-testcases/abi.json.gz");
  if (!j) return;
  size_t i, ok = 0;
  json_t *c;
  json_array_foreach(j, i, c) {
    const char *type = json_string_value(json_object_get(c, "type"));
    const char *name = json_string_value(json_object_get(c, "name"));
    const char *want = json_string_value(json_object_get(c, "encoded"));
    tg_abi_sig *s = type1(type);
    if (!s) continue;
    const tg_abi_type *t = s->inputs->members[0];
    tg_abi_value v;
    int fj = from_json(&v, t, json_object_get(c, "value"));
    CHECKF(fj == 0, "%s: value does not fit %s", name, type);
    tg_abi_value args = tg_abi_val_list(&v, 1);
    tg_buf out;
    tg_buf_init(&out, 0);
    int rc = fj ? -1 : tg_abi_encode(&out, s->inputs, &args);
    CHECKF(rc == 0, "%s: encode %s", name, tg_err_name(rc));
    char *h = rc ? NULL : hexstr(out.data, out.len);
    int enc_ok = h && strcmp(h, want) == 0;
    CHECKF(enc_ok, "%s (%s): encoding differs", name, type);
    /* decode the vector's encoding strictly (canonical offsets) and compare the values */
    size_t n;
    uint8_t *data = tgt_unhex(want, &n);
    tg_abi_tree *tree = NULL;
    rc = tg_abi_decode(&tree, s->inputs, data, n, TG_ABI_DECODE_CANONICAL);
    CHECKF(rc == 0, "%s: decode %s", name, tg_err_name(rc));
    int dec_ok = 0;
    if (tree) {
      char *a = fmt(s->inputs, &tree->root), *b = fmt(s->inputs, &args);
      dec_ok = a && b && strcmp(a, b) == 0;
      CHECKF(dec_ok, "%s: decoded value differs", name);
      tg_buf again;
      tg_buf_init(&again, 0);
      CHECK_OK(tg_abi_encode(&again, s->inputs, &tree->root));
      CHECKF(again.len == n && memcmp(again.data, data, n) == 0, "%s: re-encoding differs", name);
      tg_buf_cleanup(&again);
      free(a);
      free(b);
    }
    if (enc_ok && dec_ok) ok++;
    tg_abi_tree_free(tree);
    free(data);
    free(h);
    tg_buf_cleanup(&out);
    tg_abi_sig_free(s);
    pool_reset();
  }
  CHECK_INT(ok, 1024);
  CHECK_INT(json_array_size(j), 1024);
  json_decref(j);
}

static void test_ethers_solidity_packed(void) {
  json_t *j = tgt_load_json("ethers-testcases/solidity-hashes.json.gz");
  if (!j) return;
  size_t i, ok = 0;
  json_t *c;
  json_array_foreach(j, i, c) {
    json_t *types = json_object_get(c, "types");
    const char *name = json_string_value(json_object_get(c, "name"));
    tg_buf st;
    tg_buf_init(&st, 0);
    CHECK_OK(tg_buf_append_str(&st, "("));
    for (size_t k = 0; k < json_array_size(types); k++) {
      if (k) CHECK_OK(tg_buf_append_str(&st, ","));
      CHECK_OK(tg_buf_append_str(&st, json_string_value(json_array_get(types, k))));
    }
    CHECK_OK(tg_buf_append_str(&st, ")"));
    tg_abi_sig *s = sig((const char *)st.data);
    tg_buf_cleanup(&st);
    if (!s) continue;
    tg_abi_value v;
    int fj = from_json(&v, s->inputs, json_object_get(c, "values"));
    CHECKF(fj == 0, "%s: values do not fit", name);
    tg_buf out;
    tg_buf_init(&out, 0);
    int rc = fj ? -1 : tg_abi_encode_packed(&out, s->inputs, &v);
    CHECKF(rc == 0, "%s: packed %s", name, tg_err_name(rc));
    if (rc == 0) {
      tg_hash h;
      tg_keccak256(&h, out.data, out.len);
      char *x = hexstr(h.b, 32);
      int good = strcmp(x, json_string_value(json_object_get(c, "keccak256"))) == 0;
      CHECKF(good, "%s: keccak(packed) %s", name, x);
      ok += good;
      free(x);
    }
    tg_buf_cleanup(&out);
    tg_abi_sig_free(s);
    pool_reset();
  }
  CHECK_INT(ok, json_array_size(j));
  CHECK_INT(ok, 2016);
  json_decref(j);
}

/* ---- cast's outputs (ORACLE.md and runs of cast 1.7.1) ---- */

#define WIKI_ENC \
  "0x00000000000000000000000000000000000000000000000000000000000001230000000000000000000000" \
  "0000000000000000000000000000000000000000803132333435363738393000000000000000000000000000" \
  "00000000000000000000000000000000000000000000000000000000000000000000000000000000e0000000" \
  "0000000000000000000000000000000000000000000000000000000002000000000000000000000000000000" \
  "0000000000000000000000000000000456000000000000000000000000000000000000000000000000000000" \
  "0000000789000000000000000000000000000000000000000000000000000000000000000d48656c6c6f2c20" \
  "776f726c642100000000000000000000000000000000000000"

static void test_oracle_examples(void) {
  const char *a1[] = {"291", "[1110,1929]", "0x31323334353637383930", "0x48656c6c6f2c20776f726c6421"};
  char *h = enc_text("f(uint256,uint32[],bytes10,bytes)", 4, a1, 0, NULL);
  CHECK_STR(h, WIKI_ENC);
  free(h);
  const char *a2[] = {"[(1,a),(2,bc)]", "true"};
  h = enc_text("f((uint256,string)[],bool)", 2, a2, 0, NULL);
  CHECK_STR(h, "0x00000000000000000000000000000000000000000000000000000000000000400000000000000000000000"
               "0000000000000000000000000000000000000000010000000000000000000000000000000000000000000000"
               "0000000000000000020000000000000000000000000000000000000000000000000000000000000040000000"
               "00000000000000000000000000000000000000000000000000000000c0000000000000000000000000000000"
               "0000000000000000000000000000000001000000000000000000000000000000000000000000000000000000"
               "0000000040000000000000000000000000000000000000000000000000000000000000000161000000000000"
               "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
               "0000000000000000000000000200000000000000000000000000000000000000000000000000000000000000"
               "4000000000000000000000000000000000000000000000000000000000000000026263000000000000000000"
               "000000000000000000000000000000000000000000");
  free(h);
  char *lines = dec_lines("f(uint256,uint32[],bytes10,bytes)", WIKI_ENC, TG_ABI_DECODE_STRICT, NULL);
  CHECK_STR(lines, "291\n[1110, 1929]\n0x31323334353637383930\n0x48656c6c6f2c20776f726c6421\n");
  free(lines);
  CHECK_ERR(dec_rc("f(uint256)", "0x01", 0), TG_EABI_DATA);
  const char *a3[] = {"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "1"};
  h = enc_text("transfer(address,uint256)", 2, a3, 1, NULL);
  CHECK_STR(h, "0xa9059cbb0000000000000000000000005aaeb6053f3e94c9b9a09f33669435e7ef1beaed000000000000"
               "0000000000000000000000000000000000000000000000000001");
  free(h);
}

static void check_enc1(const char *type, const char *arg, const char *want) {
  char signature[256];
  snprintf(signature, sizeof signature, "f(%s)", type);
  const char *args[1] = {arg};
  int err = 0;
  char *h = enc_text(signature, 1, args, 0, &err);
  if (want == NULL) {
    CHECKF(h == NULL, "%s '%s' should be refused, got %s", type, arg, h);
  } else {
    CHECKF(h && strcmp(h, want) == 0, "%s '%s' -> %s (%s), want %s", type, arg, h ? h : "error",
           tg_err_name(err), want);
  }
  free(h);
}

#define W(x) "0x" x
#define Z62 "00000000000000000000000000000000000000000000000000000000000000"
static void test_text_args(void) {
  /* each expectation is what cast abi-encode printed */
  check_enc1("uint256", "1.5ether", W("00000000000000000000000000000000000000000000000014d1120d7b160000"));
  check_enc1("uint256", "15e-1 ether", W("00000000000000000000000000000000000000000000000014d1120d7b160000"));
  check_enc1("uint256", "1 gwei", W("000000000000000000000000000000000000000000000000000000003b9aca00"));
  check_enc1("uint256", "0b101", W(Z62 "05"));
  check_enc1("uint256", "0o17", W(Z62 "0f"));
  check_enc1("uint256", "0X10", W(Z62 "10"));
  check_enc1("uint256", "1e3", W("00000000000000000000000000000000000000000000000000000000000003e8"));
  check_enc1("uint256", "5 ", W(Z62 "05"));
  check_enc1("int8", "-0x80", W("ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff80"));
  check_enc1("int256", "+5", W(Z62 "05"));
  check_enc1("int256", "-1", W("ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"));
  check_enc1("bytes2", "0102", W("0102000000000000000000000000000000000000000000000000000000000000"));
  check_enc1("bool", "true", W(Z62 "01"));
  check_enc1("bool", "false", W(Z62 "00"));
  check_enc1("address", "5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
             W("0000000000000000000000005aaeb6053f3e94c9b9a09f33669435e7ef1beaed"));
  check_enc1("address", "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed",
             W("0000000000000000000000005aaeb6053f3e94c9b9a09f33669435e7ef1beaed"));
  check_enc1("function", "0x5aaeb6053F3E94C9b9A09f33669435E7Ef1BeAed12345678",
             W("5aaeb6053f3e94c9b9a09f33669435e7ef1beaed123456780000000000000000"));
  check_enc1("string", "  a  ", W(Z62 "20" Z62 "03" "2020610000000000000000000000000000000000000000000000000000000000"));
  check_enc1("string", "'single'", W(Z62 "20" Z62 "06" "73696e676c650000000000000000000000000000000000000000000000000000"));
  check_enc1("string", "a\"b", W(Z62 "20" Z62 "03" "6122620000000000000000000000000000000000000000000000000000000000"));
  check_enc1("string", "", W(Z62 "20" Z62 "00"));
  check_enc1("string", " ", W(Z62 "20" Z62 "00"));
  check_enc1("uint256[]", "[1,2,]", W(Z62 "20" Z62 "02" Z62 "01" Z62 "02"));
  check_enc1("uint256[]", "[]", W(Z62 "20" Z62 "00"));
  check_enc1("bytes[]", "[0x12,0x]", W(Z62 "20" Z62 "02" Z62 "40" Z62 "80" Z62 "01"
                                       "1200000000000000000000000000000000000000000000000000000000000000" Z62 "00"));
  /* refused by cast too */
  static const char *const bad[][2] = {
      {"address", "0X5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"}, {"bytes32", "0x01"},
      {"bytes2", "0x010203"}, {"bytes", "0x123"}, {"bytes", "abc"}, {"bytes", ""},
      {"uint8", "256"}, {"int8", "128"}, {"int8", "-129"}, {"bool", "1"}, {"bool", "True"},
      {"uint256", " 5"}, {"uint256", "+5"}, {"uint256", "1.0"}, {"uint256", "1e-1"},
      {"uint256", "1 gwei "}, {"uint256", "1abc"}, {"uint256", "0b102"}, {"uint256", ".1 gwei"},
      {"uint256", "-1"}, {"uint256[]", " [1]"}, {"uint256[2]", "[1]"}, {"string", "\"a"},
      {"string", "\"a\"b"}, {"string[]", "[,]"}, {"string[]", "[ \"a\" , b ]"},
      {"uint256", "115792089237316195423570985008687907853269984665640564039457584007913129639936"},
      {"(uint256,string)", "(1)"}, {"(uint256,string)", "(1,a,b)"}};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) check_enc1(bad[i][0], bad[i][1], NULL);
  /* Deliberate difference: cast accepts a wrong EIP-55 checksum; tollgate refuses it. */
  tg_abi_sig *s = type1("address");
  tg_abi_tree *t = NULL;
  const char *wrong = "0x5aaeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
  CHECK_ERR(tg_abi_parse_arg(&t, s->inputs->members[0], wrong, strlen(wrong)), TG_ECHECKSUM);
  CHECK(t == NULL);
  /* argument count */
  const char *one[1] = {"1"};
  CHECK_ERR(tg_abi_parse_args(&t, s->inputs, one, 0), TG_EABI_VALUE);
  tg_abi_sig_free(s);
  (void)one;
}

static void test_format(void) {
  /* cast decode-abi lines, verbatim */
  const char *T = "f(string,bytes,string[],(string,bytes,address,bool,int8)[],bytes3,uint256,int256)";
  const char *args[] = {"hi \"there\"", "0x1234", "[\"a\",\"b,c\"]",
                        "[(x,0x,0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed,true,-5)]", "0xabcdef",
                        "1000000000000000000", "-1000000000000000000000"};
  char *h = enc_text(T, 7, args, 0, NULL);
  char *lines = h ? dec_lines(T, h, 0, NULL) : NULL;
  CHECK_STR(lines, "\"hi \\\"there\\\"\"\n0x1234\n[\"a\", \"b,c\"]\n"
                   "[(\"x\", 0x, 0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed, true, -5)]\n0xabcdef\n"
                   "1000000000000000000 [1e18]\n-1000000000000000000000 [-1e21]\n");
  free(h);
  free(lines);
  const char *T2 = "f(uint256,uint256,uint256,uint256,int256,int256,uint256[],(uint256,int8),uint256,uint256)";
  const char *a2[] = {"9999", "10001", "12000", "120000", "-9999", "-10000", "[100000,5]",
                      "(100000,-3)", "10050", "1000000000000000000000000000000"};
  h = enc_text(T2, 10, a2, 0, NULL);
  lines = h ? dec_lines(T2, h, 0, NULL) : NULL;
  CHECK_STR(lines, "9999\n10001 [1e4]\n12000 [1.2e4]\n120000 [1.2e5]\n-9999\n-10000 [-1e4]\n"
                   "[100000 [1e5], 5]\n(100000 [1e5], -3)\n10050 [1.005e4]\n"
                   "1000000000000000000000000000000 [1e30]\n");
  free(h);
  free(lines);
  const char *T3 = "f(string,string,string,string,string)";
  const char *a3[] = {"a\tb\nc\\d", "it's", "x\033y\177z", "\xc3\xa9\xf0\x9f\x9a\x80", "\xcc\x81x"};
  h = enc_text(T3, 5, a3, 0, NULL);
  lines = h ? dec_lines(T3, h, 0, NULL) : NULL;
  CHECK_STR(lines, "\"a\\tb\\nc\\\\d\"\n\"it's\"\n\"x\\u{1b}y\\u{7f}z\"\n\"\xc3\xa9\xf0\x9f\x9a\x80\"\n"
                   "\"\\u{301}x\"\n");
  free(h);
  free(lines);
  /* invalid UTF-8 is shown lossily, and NUL as \0 */
  lines = dec_lines("f(string)", W(Z62 "20" Z62 "02" "ff41000000000000000000000000000000000000000000000000000000000000"), 0, NULL);
  CHECK_STR(lines, "\"\xef\xbf\xbd" "A\"\n");
  free(lines);
  lines = dec_lines("f(string)", W(Z62 "20" Z62 "02" "0041000000000000000000000000000000000000000000000000000000000000"), 0, NULL);
  CHECK_STR(lines, "\"\\0A\"\n");
  free(lines);
  lines = dec_lines("f(uint256,int256)", W("ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
                                           "8000000000000000000000000000000000000000000000000000000000000000"), 0, NULL);
  CHECK_STR(lines, "115792089237316195423570985008687907853269984665640564039457584007913129639935 [1.157e77]\n"
                   "-57896044618658097711785492504343953926634992332820282019728792003956564819968 [-5.789e76]\n");
  free(lines);
}

/* ---- strict decoding: must-reject data ---- */

static void test_decode_rejects(void) {
  unsigned S = TG_ABI_DECODE_STRICT;
  /* truncation */
  CHECK_ERR(dec_rc("f(uint256)", "0x", S), TG_EABI_DATA);
  CHECK_ERR(dec_rc("f(uint256)", W("00000000000000000000000000000000000000000000000000000000000000"), S), TG_EABI_DATA);
  CHECK_ERR(dec_rc("f(bytes)", W(Z62 "20"), S), TG_EABI_DATA);
  CHECK_ERR(dec_rc("f(bytes)", W(Z62 "20" Z62 "01"), S), TG_EABI_DATA);
  CHECK_ERR(dec_rc("f(bytes)", W(Z62 "20" Z62 "01" "12"), S), TG_EABI_DATA); /* padding missing */
  CHECK_ERR(dec_rc("f(uint256[])", W(Z62 "20" Z62 "02" Z62 "01"), S), TG_EABI_DATA);
  CHECK_ERR(dec_rc("f(uint256[2])", W(Z62 "01"), S), TG_EABI_DATA);
  /* offsets: past the end, into the head, huge */
  CHECK_ERR(dec_rc("f(bytes)", W(Z62 "40" Z62 "00"), S), TG_EABI_DATA);
  CHECK_ERR(dec_rc("f(bytes)", W(Z62 "00" Z62 "00"), S), TG_EABI_DATA);
  CHECK_ERR(dec_rc("f(uint256,bytes)", W(Z62 "00" Z62 "20" Z62 "00"), S), TG_EABI_DATA);
  CHECK_ERR(dec_rc("f(bytes)", W("ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff20" Z62 "00"), S), TG_EABI_DATA);
  CHECK_ERR(dec_rc("f(bytes)", W("0000000000000000000000000000000000000000000000010000000000000020" Z62 "00"), S), TG_EABI_DATA);
  /* lengths: larger than the data, larger than the cap, 2^255 */
  CHECK_ERR(dec_rc("f(bytes)", W(Z62 "20" Z62 "21" Z62 "00"), S), TG_EABI_DATA);
  CHECK_ERR(dec_rc("f(bytes)", W(Z62 "20" "000000000000000000000000000000000000000000000000000000000fffffff" Z62 "00"), S), TG_EABI_DATA);
  CHECK_ERR(dec_rc("f(string)", W(Z62 "20" "8000000000000000000000000000000000000000000000000000000000000000"), S), TG_EABI_DATA);
  CHECK_ERR(dec_rc("f(uint256[])", W(Z62 "20" "00000000000000000000000000000000000000000000000000000000ffffffff"), S), TG_EABI_DATA);
  CHECK_ERR(dec_rc("f(uint256[][])", W(Z62 "20" Z62 "03" Z62 "60" Z62 "60"), S), TG_EABI_DATA);
  /* dirty high bits (cast accepts these; tollgate refuses them) */
  CHECK_ERR(dec_rc("f(uint8)", W("0000000000000000000000000000000000000000000000000000000000000101"), S), TG_EABI_DATA);
  CHECK_ERR(dec_rc("f(uint248)", W("0100000000000000000000000000000000000000000000000000000000000000"), S), TG_EABI_DATA);
  CHECK_ERR(dec_rc("f(address)", W("0100000000000000000000005aaeb6053f3e94c9b9a09f33669435e7ef1beaed"), S), TG_EABI_DATA);
  CHECK_ERR(dec_rc("f(bool)", W(Z62 "02"), S), TG_EABI_DATA);
  CHECK_ERR(dec_rc("f(bool)", W("1000000000000000000000000000000000000000000000000000000000000001"), S), TG_EABI_DATA);
  CHECK_ERR(dec_rc("f(int8)", W(Z62 "ff"), S), TG_EABI_DATA);
  CHECK_ERR(dec_rc("f(int8)", W("ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"), S), TG_EABI_DATA);
  CHECK_ERR(dec_rc("f(bytes1)", W("0101000000000000000000000000000000000000000000000000000000000000"), S), TG_EABI_DATA);
  CHECK_ERR(dec_rc("f(function)", W("5aaeb6053f3e94c9b9a09f33669435e7ef1beaed123456780000000000000001"), S), TG_EABI_DATA);
  CHECK_ERR(dec_rc("f(bytes)", W(Z62 "20" Z62 "01" "1234000000000000000000000000000000000000000000000000000000000000"), S), TG_EABI_DATA);
  CHECK_ERR(dec_rc("f(string)", W(Z62 "20" Z62 "01" "4100000000000000000000000000000000000000000000000000000000000001"), S), TG_EABI_DATA);
  /* accepted twins of the above */
  CHECK_OK(dec_rc("f(int8)", W("ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff80"), S));
  CHECK_OK(dec_rc("f(uint8)", W(Z62 "ff"), S));
  CHECK_OK(dec_rc("f(bytes)", W(Z62 "20" Z62 "01" "1200000000000000000000000000000000000000000000000000000000000000"), S));
  /* trailing bytes: refused when strict, allowed on request (cast allows them) */
  CHECK_ERR(dec_rc("f(uint8)", W(Z62 "01" "ff"), S), TG_ETRAILING);
  CHECK_OK(dec_rc("f(uint8)", W(Z62 "01" "ff"), TG_ABI_DECODE_ALLOW_TRAILING));
  /* canonical mode: a valid but non-canonical offset (a gap before the tail) */
  const char *gap = W(Z62 "40" Z62 "00" Z62 "01" "1200000000000000000000000000000000000000000000000000000000000000");
  CHECK_OK(dec_rc("f(bytes)", gap, S));
  CHECK_ERR(dec_rc("f(bytes)", gap, TG_ABI_DECODE_CANONICAL), TG_EABI_DATA);
  /* two offsets sharing one tail decode (Solidity allows it) but are not canonical */
  const char *shared = W(Z62 "40" Z62 "40" Z62 "00");
  CHECK_OK(dec_rc("f(bytes,bytes)", shared, TG_ABI_DECODE_ALLOW_TRAILING));
  CHECK_ERR(dec_rc("f(bytes,bytes)", shared, TG_ABI_DECODE_CANONICAL), TG_EABI_DATA);
  /* an empty type list decodes empty data */
  CHECK_OK(dec_rc("f()", "0x", S));
  CHECK_ERR(dec_rc("f()", "0x00", S), TG_ETRAILING);
  /* exponential blow-up by shared offsets hits the value cap */
  tg_buf b;
  tg_buf_init(&b, 0);
  const char *sig8 = "f(uint8[][][][][][][])";
  /* each level: offset 0x20, count N, then N offsets all pointing at one child */
  uint8_t word[32];
  memset(word, 0, 32);
  word[31] = 0x20;
  CHECK_OK(tg_buf_append(&b, word, 32));
  for (int level = 0; level < 6; level++) {
    memset(word, 0, 32);
    word[31] = 64; /* count */
    CHECK_OK(tg_buf_append(&b, word, 32));
    for (int k = 0; k < 64; k++) {
      memset(word, 0, 32);
      word[30] = (uint8_t)((64 * 32) >> 8);
      word[31] = (uint8_t)((64 * 32) & 0xff);
      CHECK_OK(tg_buf_append(&b, word, 32));
    }
  }
  memset(word, 0, 32);
  CHECK_OK(tg_buf_append(&b, word, 32));
  tg_abi_sig *s = sig(sig8);
  tg_abi_tree *t = NULL;
  CHECK_ERR(tg_abi_decode(&t, s->inputs, b.data, b.len, TG_ABI_DECODE_ALLOW_TRAILING), TG_EABI_DATA);
  tg_abi_sig_free(s);
  tg_buf_cleanup(&b);
}

/* ---- encoding from C values, and the fast path ---- */

static void test_encode_values(void) {
  tg_abi_sig *s = sig("transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)");
  if (!s) return;
  tg_address from, to;
  CHECK_OK(tg_address_parse(&from, "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", 42));
  CHECK_OK(tg_address_parse(&to, "0x9d8A62f656a8d1615C1294fd71e9CFb3E4855A4F", 42));
  uint8_t nonce[32], r[32], sv[32];
  for (int i = 0; i < 32; i++) nonce[i] = (uint8_t)i, r[i] = (uint8_t)(0xa0 + i), sv[i] = (uint8_t)(0x40 + i);
  tg_abi_value items[9] = {tg_abi_val_address(&from), tg_abi_val_address(&to),
                           tg_abi_val_u64(1000000), tg_abi_val_u64(0), tg_abi_val_u64(1900000000),
                           tg_abi_val_fixed(nonce, 32), tg_abi_val_u64(27),
                           tg_abi_val_fixed(r, 32), tg_abi_val_fixed(sv, 32)};
  tg_abi_value args = tg_abi_val_list(items, 9);
  tg_buf out;
  tg_buf_init(&out, 0);
  CHECK_OK(tg_abi_encode_call(&out, s, &args));
  CHECK_INT(out.len, 4 + 9 * 32);
  /* the fast path writes the same bytes */
  uint8_t fast[4 + 9 * 32];
  tg_abi_selector(fast, s);
  tg_abi_put_address(fast + 4, &from);
  tg_abi_put_address(fast + 36, &to);
  tg_abi_put_u64(fast + 68, 1000000);
  tg_abi_put_u64(fast + 100, 0);
  tg_abi_put_u64(fast + 132, 1900000000);
  tg_abi_put_bytes32(fast + 164, nonce);
  tg_abi_put_u64(fast + 196, 27);
  tg_abi_put_bytes32(fast + 228, r);
  tg_abi_put_bytes32(fast + 260, sv);
  CHECK(out.len == sizeof fast && memcmp(out.data, fast, sizeof fast) == 0);
  CHECK_MEM(out.data, "\xe3\xee\x16\x0e", 4);
  /* encode_to: exact size only */
  size_t n;
  CHECK_OK(tg_abi_encoded_size(&n, s->inputs, &args));
  CHECK_INT(n, 288);
  uint8_t buf[288];
  CHECK_OK(tg_abi_encode_to(buf, 288, s->inputs, &args));
  CHECK_MEM(buf, fast + 4, 288);
  CHECK_ERR(tg_abi_encode_to(buf, 287, s->inputs, &args), TG_EBUFSIZE);
  /* values that do not fit their types */
  items[6] = tg_abi_val_u64(256); /* uint8 */
  CHECK_ERR(tg_abi_encode_call(&out, s, &args), TG_EABI_VALUE);
  items[6] = tg_abi_val_u64(27);
  items[0] = tg_abi_val_u64(1);
  items[0].word.b[0] = 1; /* address with high bits */
  CHECK_ERR(tg_abi_encoded_size(&n, s->inputs, &args), TG_EABI_VALUE);
  items[0] = tg_abi_val_address(&from);
  args.count = 8;
  CHECK_ERR(tg_abi_encoded_size(&n, s->inputs, &args), TG_EABI_VALUE);
  tg_buf_cleanup(&out);
  tg_abi_sig_free(s);

  /* int/bool/bytesN checks, and a dynamic batch claim */
  s = sig("claim((bytes32,uint128,bytes)[],int8,bool,bytes3)");
  uint8_t sigbytes[65];
  memset(sigbytes, 0x11, 65);
  uint8_t ch[32];
  memset(ch, 0x22, 32);
  tg_abi_value v1[3] = {tg_abi_val_fixed(ch, 32), tg_abi_val_u64(5), tg_abi_val_bytes(sigbytes, 65)};
  tg_abi_value tup[2] = {tg_abi_val_list(v1, 3), tg_abi_val_list(v1, 3)};
  tg_abi_value a2[4] = {tg_abi_val_list(tup, 2), tg_abi_val_i64(-3), tg_abi_val_bool(1),
                        tg_abi_val_fixed((const uint8_t *)"abc", 3)};
  tg_abi_value all = tg_abi_val_list(a2, 4);
  tg_buf_init(&out, 0);
  CHECK_OK(tg_abi_encode(&out, s->inputs, &all));
  tg_abi_tree *t = NULL;
  CHECK_OK(tg_abi_decode(&t, s->inputs, out.data, out.len, TG_ABI_DECODE_CANONICAL));
  if (t) {
    CHECK_INT(t->root.items[0].count, 2);
    CHECK_INT(t->root.items[0].items[1].items[2].bytes.len, 65);
    CHECK_MEM(t->root.items[0].items[1].items[2].bytes.ptr, sigbytes, 65);
    CHECK_INT(t->root.items[1].word.b[31], 0xfd);
  }
  tg_abi_tree_free(t);
  a2[1] = tg_abi_val_u64(200); /* int8 out of range (not sign-extended) */
  CHECK_ERR(tg_abi_encode(&out, s->inputs, &all), TG_EABI_VALUE);
  a2[1] = tg_abi_val_i64(-3);
  a2[2] = tg_abi_val_u64(2);
  CHECK_ERR(tg_abi_encode(&out, s->inputs, &all), TG_EABI_VALUE);
  a2[2] = tg_abi_val_bool(0);
  a2[3] = tg_abi_val_fixed((const uint8_t *)"abcd", 4);
  CHECK_ERR(tg_abi_encode(&out, s->inputs, &all), TG_EABI_VALUE);
  tg_buf_cleanup(&out);
  tg_abi_sig_free(s);
}

/* ---- revert data ---- */

static void test_revert(void) {
  size_t n;
  uint8_t *d = tgt_unhex("0x08c379a0" Z62 "20" Z62 "03" "6162630000000000000000000000000000000000000000000000000000000000", &n);
  tg_abi_revert r;
  CHECK_OK(tg_abi_decode_revert(&r, d, n, NULL, 0));
  CHECK(r.kind == TG_ABI_REVERT_ERROR && r.message.len == 3 && memcmp(r.message.ptr, "abc", 3) == 0);
  tg_abi_revert_cleanup(&r);
  free(d);
  d = tgt_unhex("0x4e487b71" Z62 "11", &n);
  CHECK_OK(tg_abi_decode_revert(&r, d, n, NULL, 0));
  CHECK(r.kind == TG_ABI_REVERT_PANIC && r.panic_code.b[31] == 0x11);
  CHECK_STR(r.panic_reason, "arithmetic underflow or overflow");
  tg_abi_revert_cleanup(&r);
  free(d);
  d = tgt_unhex("0x4e487b71" Z62 "99", &n);
  CHECK_OK(tg_abi_decode_revert(&r, d, n, NULL, 0));
  CHECK(r.kind == TG_ABI_REVERT_PANIC && r.panic_reason == NULL);
  tg_abi_revert_cleanup(&r);
  free(d);
  CHECK_STR(tg_abi_panic_reason(0x01), "assertion failed");
  CHECK_STR(tg_abi_panic_reason(0x12), "division or modulo by zero");
  CHECK_STR(tg_abi_panic_reason(0x32), "out-of-bounds access of an array or bytesN");
  /* a custom error: Foo(uint256,string) with 5, "hi" (cast calldata) */
  tg_abi_sig *cust[2] = {sig("error Bar(uint256)"), sig("Foo(uint256 a, string b)")};
  const char *foo = "0xb9e6305e" Z62 "05" Z62 "40" Z62 "02" "6869000000000000000000000000000000000000000000000000000000000000";
  d = tgt_unhex(foo, &n);
  CHECK_OK(tg_abi_decode_revert(&r, d, n, (const tg_abi_sig *const *)cust, 2));
  CHECK(r.kind == TG_ABI_REVERT_CUSTOM && r.custom_index == 1 && r.args != NULL);
  if (r.args) {
    tg_buf b;
    tg_buf_init(&b, 0);
    CHECK_OK(tg_abi_format_lines(&b, cust[1]->inputs, &r.args->root));
    CHECK_STR((const char *)b.data, "5\n\"hi\"\n");
    tg_buf_cleanup(&b);
  }
  tg_abi_revert_cleanup(&r);
  CHECK_OK(tg_abi_decode_revert(&r, d, n, NULL, 0));
  CHECK(r.kind == TG_ABI_REVERT_UNKNOWN && memcmp(r.selector, "\xb9\xe6\x30\x5e", 4) == 0);
  tg_abi_revert_cleanup(&r);
  /* a malformed body is UNKNOWN, not an error */
  CHECK_OK(tg_abi_decode_revert(&r, d, n - 32, (const tg_abi_sig *const *)cust, 2));
  CHECK(r.kind == TG_ABI_REVERT_UNKNOWN);
  tg_abi_revert_cleanup(&r);
  free(d);
  d = tgt_unhex("0x08c379a0" Z62 "20" Z62 "ff", &n);
  CHECK_OK(tg_abi_decode_revert(&r, d, n, NULL, 0));
  CHECK(r.kind == TG_ABI_REVERT_UNKNOWN);
  tg_abi_revert_cleanup(&r);
  free(d);
  CHECK_OK(tg_abi_decode_revert(&r, NULL, 0, NULL, 0));
  CHECK(r.kind == TG_ABI_REVERT_EMPTY);
  CHECK_ERR(tg_abi_decode_revert(&r, (const uint8_t *)"\x08\xc3\x79", 3, NULL, 0), TG_EABI_DATA);
  tg_abi_sig_free(cust[0]);
  tg_abi_sig_free(cust[1]);
}

static void test_packed_basic(void) {
  /* cast abi-encode --packed 'f(uint8,int16,address,bool,bytes2,string,uint16[2])' 1 -2 0x5aAe.. true 0x0102 ab '[3,4]' */
  tg_abi_sig *s = sig("f(uint8,int16,address,bool,bytes2,string,uint16[2])");
  const char *args[] = {"1", "-2", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "true", "0x0102", "ab", "[3,4]"};
  tg_abi_tree *t = NULL;
  CHECK_OK(tg_abi_parse_args(&t, s->inputs, args, 7));
  tg_buf b;
  tg_buf_init(&b, 0);
  if (t) CHECK_OK(tg_abi_encode_packed(&b, s->inputs, &t->root));
  char *h = hexstr(b.data, b.len);
  CHECK_STR(h, "0x01fffe5aaeb6053f3e94c9b9a09f33669435e7ef1beaed0101026162" Z62 "03" Z62 "04");
  free(h);
  tg_buf_cleanup(&b);
  tg_abi_tree_free(t);
  tg_abi_sig_free(s);
  s = sig("f((uint8))");
  tg_abi_value one = tg_abi_val_u64(1), tup = tg_abi_val_list(&one, 1), all = tg_abi_val_list(&tup, 1);
  tg_buf_init(&b, 0);
  CHECK_ERR(tg_abi_encode_packed(&b, s->inputs, &all), TG_EUNSUPPORTED);
  CHECK_INT(b.len, 0);
  tg_buf_cleanup(&b);
  tg_abi_sig_free(s);
}

int main(void) {
  RUN(test_sig_canonical);
  RUN(test_sig_types);
  RUN(test_sig_rejects);
  RUN(test_selectors_topics);
  RUN(test_ethereum_tests_abi);
  RUN(test_ethers_abi);
  RUN(test_ethers_solidity_packed);
  RUN(test_oracle_examples);
  RUN(test_text_args);
  RUN(test_format);
  RUN(test_decode_rejects);
  RUN(test_encode_values);
  RUN(test_revert);
  RUN(test_packed_basic);
  return tgt_done();
}
