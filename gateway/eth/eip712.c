/* EIP-712 typed data from JSON: checked struct types, encodeType/typeHash, encodeData and hashStruct. */
#include "tollgate/eip712.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tollgate/address.h"
#include "tollgate/hex.h"
#include "tollgate/keccak.h"
#include "tollgate/u256.h"

/*
 * Strings in the parsed types (names, type spellings) point into the jansson
 * document the set keeps a reference to, or into static storage for an
 * inferred EIP712Domain; none is copied.
 */

enum kind { K_UINT, K_INT, K_BOOL, K_ADDRESS, K_BYTESN, K_BYTES, K_STRING, K_STRUCT };

typedef struct {
  uint8_t kind;
  uint8_t ndims;
  uint16_t width; /* bits of an integer, bytes of a bytesN */
  int sidx;       /* the struct of a K_STRUCT */
  uint32_t dims[TG_EIP712_MAX_DIMS]; /* as written, left to right; 0 = dynamic */
  const char *text; /* the whole spelling, e.g. "Person[2][]" (for encodeType) */
  size_t text_len;
} ftype;

typedef struct {
  const char *name;
  size_t name_len;
  ftype t;
} field;

typedef struct {
  const char *name;
  size_t name_len;
  field *fields;
  size_t nfields;
  tg_hash type_hash;
  size_t own_len; /* length of "Name(type a,type b)" */
} stype;

struct tg_eip712_types {
  json_t *root; /* keeps every borrowed string alive */
  stype *s;
  size_t n;
  uint16_t order[TG_EIP712_MAX_TYPES + 1]; /* struct indexes sorted by name */
};

/* Cap on the summed encodeType lengths of all structs: bounds the typeHash work. */
#define ENCODE_TYPE_BUDGET ((size_t)16 << 20)

static const char domain_name[] = "EIP712Domain";

/*
 * Where a document failed, built while unwinding: each level prepends its
 * part (".name", "[3]") in front of what the inner levels wrote. The text
 * grows leftwards from the end of buf; a path that does not fit keeps its
 * innermost parts. NULL means nobody asked.
 */
typedef struct {
  char buf[TG_EIP712_WHERE_MAX];
  size_t pos; /* the path is buf[pos .. TG_EIP712_WHERE_MAX - 2], NUL at the end */
  int full;   /* an outer part did not fit: the path is shown as "..." + its inner parts */
} errpath;

static void ep_init(errpath *ep) {
  if (!ep) return;
  ep->pos = TG_EIP712_WHERE_MAX - 1;
  ep->buf[ep->pos] = 0;
  ep->full = 0;
}

/* Prepends s; 3 bytes stay free for the "..." of a truncated path. */
static void ep_prepend(errpath *ep, const char *s, size_t len) {
  if (!ep || ep->full) return;
  if (len + 3 > ep->pos) {
    ep->full = 1;
    return;
  }
  ep->pos -= len;
  memcpy(ep->buf + ep->pos, s, len);
}

static void ep_name(errpath *ep, const char *name, size_t len) {
  if (!ep || ep->full) return;
  if (len + 1 + 3 > ep->pos) {
    ep->full = 1;
    return;
  }
  ep_prepend(ep, name, len);
  ep_prepend(ep, ".", 1);
}

static void ep_index(errpath *ep, size_t i) {
  char s[32];
  int n = snprintf(s, sizeof s, "[%zu]", i);
  if (n > 0) ep_prepend(ep, s, (size_t)n);
}

/* Writes the path, without its leading '.', into out[TG_EIP712_WHERE_MAX]. */
static void ep_copy(char *out, const errpath *ep) {
  const char *p = ep->buf + ep->pos;
  if (*p == '.') p++;
  size_t n = 0, len = strlen(p); /* len <= TG_EIP712_WHERE_MAX - 4: prepends keep 3 bytes */
  if (ep->full) memcpy(out, "...", 3), n = 3;
  memcpy(out + n, p, len + 1);
}

/* The canonical EIP712Domain members, used when "types" does not define it. */
static const struct {
  const char *name;
  const char *type;
} domain_members[5] = {
    {"name", "string"},
    {"version", "string"},
    {"chainId", "uint256"},
    {"verifyingContract", "address"},
    {"salt", "bytes32"},
};

static int streq(const char *a, size_t alen, const char *b, size_t blen) {
  return alen == blen && memcmp(a, b, alen) == 0;
}

static int is_ident(const char *s, size_t len) {
  if (len == 0 || len > TG_EIP712_MAX_NAME) return 0;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == '$';
    if (!alpha && !(i > 0 && c >= '0' && c <= '9')) return 0;
  }
  return 1;
}

/* A decimal in [lo, hi] without sign or leading zero, or -1. */
static long small_dec(const char *s, size_t len, long lo, long hi) {
  if (len == 0 || len > 6 || (s[0] == '0' && len > 1)) return -1;
  long v = 0;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9') return -1;
    v = v * 10 + (s[i] - '0');
  }
  return v < lo || v > hi ? -1 : v;
}

/* Parses an atomic type name into t (kind, width); 0 when it is one, -1 otherwise. */
static int parse_atomic(ftype *t, const char *s, size_t len) {
  if (streq(s, len, "bool", 4)) return t->kind = K_BOOL, 0;
  if (streq(s, len, "address", 7)) return t->kind = K_ADDRESS, 0;
  if (streq(s, len, "string", 6)) return t->kind = K_STRING, 0;
  if (streq(s, len, "bytes", 5)) return t->kind = K_BYTES, 0;
  if (len > 5 && memcmp(s, "bytes", 5) == 0) {
    long n = small_dec(s + 5, len - 5, 1, 32);
    if (n < 0) return -1;
    t->kind = K_BYTESN;
    t->width = (uint16_t)n;
    return 0;
  }
  size_t skip = 0;
  if (len >= 4 && memcmp(s, "uint", 4) == 0) {
    t->kind = K_UINT;
    skip = 4;
  } else if (len >= 3 && memcmp(s, "int", 3) == 0) {
    t->kind = K_INT;
    skip = 3;
  } else {
    return -1;
  }
  if (len == skip) {
    t->width = 256;
    return 0;
  }
  long bits = small_dec(s + skip, len - skip, 8, 256);
  if (bits < 0 || bits % 8) return -1;
  t->width = (uint16_t)bits;
  return 0;
}

static int find_struct(const tg_eip712_types *T, const char *name, size_t len) {
  for (size_t i = 0; i < T->n; i++)
    if (streq(T->s[i].name, T->s[i].name_len, name, len)) return (int)i;
  return -1;
}

/* Parses a member's type: an atomic or struct base and up to MAX_DIMS array suffixes. */
static int parse_ftype(ftype *t, const tg_eip712_types *T, const char *s, size_t len) {
  memset(t, 0, sizeof *t);
  t->text = s;
  t->text_len = len;
  t->sidx = -1;
  uint32_t rev[TG_EIP712_MAX_DIMS];
  size_t nd = 0, end = len;
  while (end > 0 && s[end - 1] == ']') {
    size_t open = end - 1;
    while (open > 0 && s[open - 1] != '[' && s[open - 1] != ']') open--;
    if (open == 0 || s[open - 1] != '[') return TG_ETYPED_DATA_TYPE;
    if (nd == TG_EIP712_MAX_DIMS) return TG_ETYPED_DATA_TYPE;
    size_t dlen = end - 1 - open;
    if (dlen == 0) {
      rev[nd++] = 0;
    } else {
      long k = small_dec(s + open, dlen, 1, TG_EIP712_MAX_FIXED_ARRAY);
      if (k < 0) return TG_ETYPED_DATA_TYPE;
      rev[nd++] = (uint32_t)k;
    }
    end = open - 1;
  }
  for (size_t i = 0; i < nd; i++) t->dims[i] = rev[nd - 1 - i];
  t->ndims = (uint8_t)nd;
  if (parse_atomic(t, s, end) == 0) return TG_OK;
  int idx = find_struct(T, s, end);
  if (idx < 0) return TG_ETYPED_DATA_TYPE;
  t->kind = K_STRUCT;
  t->sidx = idx;
  return TG_OK;
}

void tg_eip712_types_free(tg_eip712_types *T) {
  if (!T) return;
  if (T->s)
    for (size_t i = 0; i < T->n; i++) free(T->s[i].fields);
  free(T->s);
  json_decref(T->root);
  free(T);
}

/* Depth-first search for a cycle through struct references: 0 white, 1 on the path, 2 done. */
static int check_cycles(const tg_eip712_types *T, size_t i, uint8_t *color) {
  color[i] = 1;
  const stype *st = &T->s[i];
  for (size_t f = 0; f < st->nfields; f++) {
    int j = st->fields[f].t.sidx;
    if (j < 0) continue;
    if (color[j] == 1) return TG_ETYPED_DATA_TYPE;
    if (color[j] == 0) {
      int rc = check_cycles(T, (size_t)j, color);
      if (rc) return rc;
    }
  }
  color[i] = 2;
  return TG_OK;
}

/* Marks every struct reachable from i (i included). The type graph is acyclic here. */
static void mark_deps(const tg_eip712_types *T, size_t i, uint8_t *mark) {
  mark[i] = 1;
  const stype *st = &T->s[i];
  for (size_t f = 0; f < st->nfields; f++) {
    int j = st->fields[f].t.sidx;
    if (j >= 0 && !mark[j]) mark_deps(T, (size_t)j, mark);
  }
}

typedef struct {
  tg_keccak_ctx *k; /* exactly one of these is set */
  tg_buf *buf;
  int err;
} sink;

static void sink_put(sink *o, const void *p, size_t len) {
  if (o->err) return;
  if (o->k) tg_keccak256_update(o->k, p, len);
  else o->err = tg_buf_append(o->buf, p, len);
}

static void put_own(sink *o, const stype *st) {
  sink_put(o, st->name, st->name_len);
  sink_put(o, "(", 1);
  for (size_t f = 0; f < st->nfields; f++) {
    if (f) sink_put(o, ",", 1);
    sink_put(o, st->fields[f].t.text, st->fields[f].t.text_len);
    sink_put(o, " ", 1);
    sink_put(o, st->fields[f].name, st->fields[f].name_len);
  }
  sink_put(o, ")", 1);
}

static int name_cmp(const stype *a, const stype *b) {
  size_t n = a->name_len < b->name_len ? a->name_len : b->name_len;
  int c = memcmp(a->name, b->name, n);
  if (c) return c;
  return a->name_len < b->name_len ? -1 : a->name_len > b->name_len;
}

/* encodeType(i): its own part, then the parts of the structs it references, sorted by name. */
static int put_encode_type(sink *o, const tg_eip712_types *T, size_t i, uint8_t *mark) {
  memset(mark, 0, T->n);
  mark_deps(T, i, mark);
  put_own(o, &T->s[i]);
  for (size_t r = 0; r < T->n; r++) {
    size_t j = T->order[r];
    if (mark[j] && j != i) put_own(o, &T->s[j]);
  }
  return o->err;
}

/* Adds the EIP712Domain that ethers and Foundry infer from the keys present in `domain`. */
static int infer_domain(stype *st, json_t *domain) {
  size_t present = 0, klen;
  const char *key;
  json_t *v;
  json_object_keylen_foreach(domain, key, klen, v) {
    size_t m;
    for (m = 0; m < 5; m++)
      if (streq(key, klen, domain_members[m].name, strlen(domain_members[m].name))) break;
    if (m == 5) return TG_ETYPED_DATA;
    present |= (size_t)1 << m;
  }
  st->name = domain_name;
  st->name_len = sizeof domain_name - 1;
  st->fields = calloc(5, sizeof *st->fields);
  if (!st->fields) abort();
  for (size_t m = 0; m < 5; m++) {
    if (!(present & ((size_t)1 << m))) continue;
    field *f = &st->fields[st->nfields++];
    f->name = domain_members[m].name;
    f->name_len = strlen(f->name);
    f->t.text = domain_members[m].type;
    f->t.text_len = strlen(f->t.text);
  }
  return TG_OK;
}

/*
 * Builds the type set from a "types" object; `domain` (may be NULL) is used
 * to infer EIP712Domain when "types" lacks it. Takes a reference to root.
 */
static int types_build(tg_eip712_types **out, json_t *root, json_t *types, json_t *domain,
                       errpath *ep) {
  *out = NULL;
  if (!json_is_object(types)) return TG_ETYPED_DATA;
  size_t n = json_object_size(types);
  if (n > TG_EIP712_MAX_TYPES) return TG_ETOOBIG;
  int infer = domain && json_is_object(domain) && !json_object_get(types, domain_name);
  tg_eip712_types *T = calloc(1, sizeof *T);
  if (!T) abort();
  T->root = json_incref(root);
  T->s = calloc(n + 1, sizeof *T->s);
  if (!T->s) abort();
  int rc = TG_OK;
  const char *key;
  size_t klen;
  json_t *def;
  const stype *at_st = NULL; /* what a failure points at */
  const field *at_f = NULL;
  int at_domain = 0;
  /* Names first, so that members may reference structs defined later. */
  json_object_keylen_foreach(types, key, klen, def) {
    stype *st = &T->s[T->n++];
    st->name = key;
    st->name_len = klen;
    at_st = st;
    ftype probe;
    if (!is_ident(st->name, st->name_len) || parse_atomic(&probe, st->name, st->name_len) == 0) {
      rc = TG_ETYPED_DATA_TYPE;
      goto fail;
    }
  }
  at_st = NULL;
  if (infer && (rc = infer_domain(&T->s[T->n++], domain)) != 0) {
    at_domain = 1;
    goto fail;
  }
  size_t si = 0;
  json_object_keylen_foreach(types, key, klen, def) {
    stype *st = &T->s[si++];
    at_st = st;
    at_f = NULL;
    if (!json_is_array(def)) {
      rc = TG_ETYPED_DATA;
      goto fail;
    }
    size_t nf = json_array_size(def);
    if (nf > TG_EIP712_MAX_FIELDS) {
      rc = TG_ETOOBIG;
      goto fail;
    }
    st->fields = calloc(nf ? nf : 1, sizeof *st->fields);
    if (!st->fields) abort();
    for (size_t f = 0; f < nf; f++) {
      json_t *m = json_array_get(def, f);
      json_t *jn = json_object_get(m, "name"), *jt = json_object_get(m, "type");
      if (!json_is_object(m) || !json_is_string(jn) || !json_is_string(jt)) {
        rc = TG_ETYPED_DATA;
        goto fail;
      }
      field *fd = &st->fields[f];
      fd->name = json_string_value(jn);
      fd->name_len = json_string_length(jn);
      at_f = fd;
      if (!is_ident(fd->name, fd->name_len)) {
        rc = TG_ETYPED_DATA;
        goto fail;
      }
      for (size_t g = 0; g < f; g++)
        if (streq(st->fields[g].name, st->fields[g].name_len, fd->name, fd->name_len)) {
          rc = TG_ETYPED_DATA;
          goto fail;
        }
      size_t tlen = json_string_length(jt);
      if (tlen > TG_EIP712_MAX_NAME + 8 * TG_EIP712_MAX_DIMS) {
        rc = TG_ETYPED_DATA_TYPE;
        goto fail;
      }
      if ((rc = parse_ftype(&fd->t, T, json_string_value(jt), tlen)) != 0) goto fail;
      st->nfields = f + 1;
    }
  }
  at_st = NULL;
  at_f = NULL;
  if (infer) {
    stype *st = &T->s[T->n - 1];
    for (size_t f = 0; f < st->nfields; f++)
      if ((rc = parse_ftype(&st->fields[f].t, T, st->fields[f].t.text, st->fields[f].t.text_len)))
        goto fail;
  }
  /* Refuse recursion, then price and hash every encodeType. */
  uint8_t mark[TG_EIP712_MAX_TYPES + 1];
  memset(mark, 0, sizeof mark);
  for (size_t i = 0; i < T->n; i++)
    if (!mark[i] && (rc = check_cycles(T, i, mark)) != 0) {
      at_st = &T->s[i];
      goto fail;
    }
  for (size_t i = 0; i < T->n; i++) {
    stype *st = &T->s[i];
    st->own_len = st->name_len + 2 + (st->nfields ? st->nfields - 1 : 0);
    for (size_t f = 0; f < st->nfields; f++)
      st->own_len += st->fields[f].t.text_len + 1 + st->fields[f].name_len;
  }
  for (size_t i = 0; i < T->n; i++) { /* insertion sort: n is small */
    size_t r = i;
    while (r > 0 && name_cmp(&T->s[T->order[r - 1]], &T->s[i]) > 0) {
      T->order[r] = T->order[r - 1];
      r--;
    }
    T->order[r] = (uint16_t)i;
  }
  size_t budget = 0;
  for (size_t i = 0; i < T->n; i++) {
    memset(mark, 0, sizeof mark);
    mark_deps(T, i, mark);
    for (size_t j = 0; j < T->n; j++)
      if (mark[j]) budget += T->s[j].own_len;
    if (budget > ENCODE_TYPE_BUDGET) {
      rc = TG_ETOOBIG;
      goto fail;
    }
  }
  for (size_t i = 0; i < T->n; i++) {
    tg_keccak_ctx k;
    tg_keccak256_init(&k);
    sink o = {&k, NULL, 0};
    (void)put_encode_type(&o, T, i, mark);
    tg_keccak256_final(&k, &T->s[i].type_hash);
  }
  *out = T;
  return TG_OK;
fail:
  if (at_f) ep_name(ep, at_f->name, at_f->name_len);
  if (at_st) ep_name(ep, at_st->name, at_st->name_len);
  ep_prepend(ep, at_domain ? "domain" : "types", at_domain ? 6 : 5);
  tg_eip712_types_free(T);
  return rc;
}

/* ---- values ---- */

/* Two's complement of a 64-bit integer as a word. */
static void word_from_i64(uint8_t w[32], int64_t x) {
  uint64_t u = (uint64_t)x;
  memset(w, x < 0 ? 0xff : 0x00, 24);
  for (int i = 0; i < 8; i++) w[31 - i] = (uint8_t)(u >> (8 * i));
}

/*
 * Checks that a word holds a `bits`-wide value: unsigned, the bits above are
 * zero; signed, the top 257-bits bits all equal the sign bit (`neg`).
 */
static int word_fits(const uint8_t w[32], unsigned bits, int is_signed, int neg) {
  unsigned free_bits = 256 - bits + (is_signed ? 1 : 0); /* bits that must equal the fill */
  uint8_t fill = neg ? 0xff : 0x00;
  unsigned full = free_bits / 8, part = free_bits % 8;
  for (unsigned i = 0; i < full; i++)
    if (w[i] != fill) return 0;
  if (part && full < 32) {
    uint8_t mask = (uint8_t)(0xff << (8 - part));
    if ((w[full] & mask) != (fill & mask)) return 0;
  }
  return 1;
}

static int encode_int(uint8_t w[32], const ftype *t, json_t *v) {
  int is_signed = t->kind == K_INT, neg = 0;
  if (json_is_integer(v)) {
    json_int_t x = json_integer_value(v);
    neg = x < 0;
    word_from_i64(w, (int64_t)x);
  } else if (json_is_real(v)) {
    /* JavaScript numbers: exact only up to 2^53, so larger ones must be strings. */
    double d = json_real_value(v);
    if (!isfinite(d) || d != floor(d) || fabs(d) > 9007199254740992.0) return TG_ETYPED_DATA_VALUE;
    neg = d < 0;
    word_from_i64(w, (int64_t)d);
  } else if (json_is_string(v)) {
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    if (len && s[0] == '-') neg = 1, s++, len--;
    if (len > 1 + TG_U256_DEC_MAX + 1024) return TG_ETYPED_DATA_VALUE;
    tg_u256 mag;
    int rc;
    if (len >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
      if (neg) return TG_ETYPED_DATA_VALUE; /* "-0x.." is not a number anywhere else either */
      rc = tg_u256_parse_hex(&mag, s, len);
    } else {
      rc = tg_u256_parse_dec(&mag, s, len);
    }
    if (rc == TG_EOVERFLOW) return TG_ERANGE;
    if (rc) return TG_ETYPED_DATA_VALUE;
    if (neg && tg_u256_is_zero(&mag)) neg = 0;
    if (neg) tg_u256_neg(&mag, &mag);
    memcpy(w, mag.b, 32);
  } else {
    return TG_ETYPED_DATA_VALUE;
  }
  if (neg && !is_signed) return TG_ERANGE;
  if (!word_fits(w, t->width, is_signed, neg)) return TG_ERANGE;
  return TG_OK;
}

/* keccak256 of "0x"-prefixed hex with an even number of digits, decoded in chunks (no heap). */
static int hash_hex_bytes(uint8_t w[32], const char *s, size_t len) {
  if (len < 2 || s[0] != '0' || (s[1] != 'x' && s[1] != 'X')) return TG_ETYPED_DATA_VALUE;
  s += 2, len -= 2;
  if (len % 2) return TG_ETYPED_DATA_VALUE;
  tg_keccak_ctx k;
  tg_keccak256_init(&k);
  uint8_t chunk[128];
  size_t n = 0;
  for (size_t i = 0; i < len; i += 2) {
    int hi = tg_hex_digit((unsigned char)s[i]), lo = tg_hex_digit((unsigned char)s[i + 1]);
    if (hi < 0 || lo < 0) return TG_ETYPED_DATA_VALUE;
    chunk[n++] = (uint8_t)(hi << 4 | lo);
    if (n == sizeof chunk) tg_keccak256_update(&k, chunk, n), n = 0;
  }
  tg_keccak256_update(&k, chunk, n);
  tg_hash h;
  tg_keccak256_final(&k, &h);
  memcpy(w, h.b, 32);
  return TG_OK;
}

static int encode_atomic(uint8_t w[32], const ftype *t, json_t *v) {
  memset(w, 0, 32);
  switch (t->kind) {
  case K_UINT:
  case K_INT:
    return encode_int(w, t, v);
  case K_BOOL:
    if (!json_is_boolean(v)) return TG_ETYPED_DATA_VALUE;
    w[31] = json_is_true(v) ? 1 : 0;
    return TG_OK;
  case K_ADDRESS: {
    /* "0x" required: without it MetaMask reads some digit strings as numbers. */
    const char *s = json_string_value(v);
    if (!json_is_string(v) || json_string_length(v) < 2 || s[0] != '0' || (s[1] != 'x' && s[1] != 'X'))
      return TG_ETYPED_DATA_VALUE;
    tg_address a;
    int rc = tg_address_parse(&a, s, json_string_length(v));
    if (rc == TG_ECHECKSUM) return rc;
    if (rc) return TG_ETYPED_DATA_VALUE;
    memcpy(w + 12, a.b, 20);
    return TG_OK;
  }
  case K_BYTESN: {
    if (!json_is_string(v)) return TG_ETYPED_DATA_VALUE;
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    if (len != 2 + 2 * (size_t)t->width || s[0] != '0' || (s[1] != 'x' && s[1] != 'X'))
      return TG_ETYPED_DATA_VALUE;
    if (tg_hex_decode_exact(w, t->width, s, len) != 0) {
      memset(w, 0, 32);
      return TG_ETYPED_DATA_VALUE;
    }
    return TG_OK;
  }
  case K_BYTES:
    if (!json_is_string(v)) return TG_ETYPED_DATA_VALUE;
    return hash_hex_bytes(w, json_string_value(v), json_string_length(v));
  case K_STRING: {
    if (!json_is_string(v)) return TG_ETYPED_DATA_VALUE;
    tg_hash h;
    tg_keccak256(&h, json_string_value(v), json_string_length(v));
    memcpy(w, h.b, 32);
    return TG_OK;
  }
  default:
    return TG_EINTERNAL;
  }
}

static int encode_struct(sink *o, const tg_eip712_types *T, size_t sidx, json_t *obj, int depth,
                         errpath *ep);

static int hash_struct_value(uint8_t w[32], const tg_eip712_types *T, size_t sidx, json_t *obj,
                             int depth, errpath *ep) {
  tg_keccak_ctx k;
  tg_keccak256_init(&k);
  sink o = {&k, NULL, 0};
  int rc = encode_struct(&o, T, sidx, obj, depth, ep);
  tg_hash h;
  tg_keccak256_final(&k, &h);
  memcpy(w, h.b, 32);
  return rc;
}

/* The 32-byte encodeData word of a value whose type is t with its outer `ndims` dimensions. */
static int encode_value(uint8_t w[32], const tg_eip712_types *T, const ftype *t, unsigned ndims,
                        json_t *v, int depth, errpath *ep) {
  if (depth > TG_EIP712_MAX_DEPTH) return TG_ETOOBIG;
  if (v == NULL || json_is_null(v)) return TG_ETYPED_DATA_MISSING;
  if (ndims > 0) {
    if (!json_is_array(v)) return TG_ETYPED_DATA_VALUE;
    size_t n = json_array_size(v);
    uint32_t want = t->dims[ndims - 1];
    if (want && n != want) return TG_ETYPED_DATA_VALUE;
    tg_keccak_ctx k;
    tg_keccak256_init(&k);
    for (size_t i = 0; i < n; i++) {
      uint8_t ew[32];
      int rc = encode_value(ew, T, t, ndims - 1, json_array_get(v, i), depth + 1, ep);
      if (rc) {
        ep_index(ep, i);
        return rc;
      }
      tg_keccak256_update(&k, ew, 32);
    }
    tg_hash h;
    tg_keccak256_final(&k, &h);
    memcpy(w, h.b, 32);
    return TG_OK;
  }
  if (t->kind == K_STRUCT) return hash_struct_value(w, T, (size_t)t->sidx, v, depth + 1, ep);
  return encode_atomic(w, t, v);
}

/* encodeData: typeHash, then one word per member, into the sink. */
static int encode_struct(sink *o, const tg_eip712_types *T, size_t sidx, json_t *obj, int depth,
                         errpath *ep) {
  if (depth > TG_EIP712_MAX_DEPTH) return TG_ETOOBIG;
  if (!json_is_object(obj)) return json_is_null(obj) ? TG_ETYPED_DATA_MISSING : TG_ETYPED_DATA_VALUE;
  const stype *st = &T->s[sidx];
  sink_put(o, st->type_hash.b, 32);
  for (size_t f = 0; f < st->nfields; f++) {
    const field *fd = &st->fields[f];
    json_t *v = json_object_getn(obj, fd->name, fd->name_len);
    uint8_t w[32];
    int rc = encode_value(w, T, &fd->t, fd->t.ndims, v, depth, ep);
    if (rc) {
      ep_name(ep, fd->name, fd->name_len);
      return rc;
    }
    sink_put(o, w, 32);
  }
  return o->err;
}

/* ---- documents ---- */

static int load(json_t **out, const char *json, size_t len, errpath *ep) {
  *out = NULL;
  if (!json) return TG_EINVAL;
  if (len > TG_EIP712_MAX_JSON) return TG_ETOOBIG;
  json_error_t e;
  json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &e);
  if (!root) {
    if (ep) {
      char at[64];
      int n = snprintf(at, sizeof at, "line %d column %d", e.line, e.column);
      if (n > 0) ep_prepend(ep, at, (size_t)n < sizeof at ? (size_t)n : sizeof at - 1);
    }
    /* A JSON integer beyond 64 bits: valid JSON, but such values must be given as strings. */
    if (json_error_code(&e) == json_error_numeric_overflow) return TG_ERANGE;
    return TG_EJSON;
  }
  if (!json_is_object(root)) {
    json_decref(root);
    return TG_ETYPED_DATA;
  }
  *out = root;
  return TG_OK;
}

typedef struct {
  json_t *root;
  tg_eip712_types *T;
  json_t *domain, *message;
  int primary;
  int dom;
} doc;

static void doc_cleanup(doc *d) {
  tg_eip712_types_free(d->T);
  json_decref(d->root);
}

static int doc_open(doc *d, const char *json, size_t len, errpath *ep) {
  memset(d, 0, sizeof *d);
  int rc = load(&d->root, json, len, ep);
  if (rc) return rc;
  json_t *types = json_object_get(d->root, "types");
  json_t *pt = json_object_get(d->root, "primaryType");
  d->domain = json_object_get(d->root, "domain");
  d->message = json_object_get(d->root, "message");
  /* All four members are required (the EIP-712 JSON schema); extra ones are ignored. */
  const char *bad = !json_is_object(types)       ? "types"
                    : !json_is_string(pt)         ? "primaryType"
                    : !json_is_object(d->domain)  ? "domain"
                    : !json_is_object(d->message) ? "message"
                                                  : NULL;
  if (bad) {
    ep_prepend(ep, bad, strlen(bad));
    return TG_ETYPED_DATA;
  }
  if ((rc = types_build(&d->T, d->root, types, d->domain, ep)) != 0) return rc;
  d->primary = find_struct(d->T, json_string_value(pt), json_string_length(pt));
  d->dom = find_struct(d->T, domain_name, sizeof domain_name - 1);
  if (d->primary < 0 || d->dom < 0) {
    bad = d->primary < 0 ? "primaryType" : "types.EIP712Domain";
    ep_prepend(ep, bad, strlen(bad));
    return TG_ETYPED_DATA_TYPE;
  }
  /* A domain key its type does not declare would look signed without being so. */
  const stype *ds = &d->T->s[d->dom];
  const char *key;
  size_t klen;
  json_t *v;
  json_object_keylen_foreach(d->domain, key, klen, v) {
    size_t f;
    for (f = 0; f < ds->nfields; f++)
      if (streq(ds->fields[f].name, ds->fields[f].name_len, key, klen)) break;
    if (f == ds->nfields) {
      ep_name(ep, key, klen);
      ep_prepend(ep, "domain", 6);
      return TG_ETYPED_DATA;
    }
  }
  return TG_OK;
}

int tg_eip712_hashes_json_where(tg_hash *digest, tg_hash *domain_separator,
                                tg_hash *message_hash, char *where, const char *json, size_t len) {
  if (digest) memset(digest, 0, sizeof *digest);
  if (domain_separator) memset(domain_separator, 0, sizeof *domain_separator);
  if (message_hash) memset(message_hash, 0, sizeof *message_hash);
  if (where) where[0] = 0;
  errpath path, *ep = where ? &path : NULL;
  ep_init(ep);
  doc d;
  int rc = doc_open(&d, json, len, ep);
  tg_hash ds, mh;
  memset(&mh, 0, sizeof mh);
  if (rc == 0 && (rc = hash_struct_value(ds.b, d.T, (size_t)d.dom, d.domain, 0, ep)) != 0)
    ep_prepend(ep, "domain", 6);
  /* MetaMask's V4 rule: with EIP712Domain as the primary type the message is not hashed. */
  int domain_only = rc == 0 && d.primary == d.dom;
  if (rc == 0 && !domain_only &&
      (rc = hash_struct_value(mh.b, d.T, (size_t)d.primary, d.message, 0, ep)) != 0)
    ep_prepend(ep, "message", 7);
  doc_cleanup(&d);
  if (rc) {
    if (where) ep_copy(where, ep);
    return rc;
  }
  if (digest) {
    if (domain_only) {
      uint8_t buf[34] = {0x19, 0x01};
      memcpy(buf + 2, ds.b, 32);
      tg_keccak256(digest, buf, sizeof buf);
    } else {
      tg_eip712_digest(digest, &ds, &mh);
    }
  }
  if (domain_separator) *domain_separator = ds;
  if (message_hash) *message_hash = mh;
  return TG_OK;
}

int tg_eip712_hashes_json(tg_hash *digest, tg_hash *domain_separator, tg_hash *message_hash,
                          const char *json, size_t len) {
  return tg_eip712_hashes_json_where(digest, domain_separator, message_hash, NULL, json, len);
}

int tg_eip712_digest_json(tg_hash *out, const char *json, size_t len) {
  if (!out) return TG_EINVAL;
  return tg_eip712_hashes_json(out, NULL, NULL, json, len);
}

int tg_eip712_doc_hash_struct(tg_hash *out, const char *json, size_t len, const char *type) {
  if (!out) return TG_EINVAL;
  memset(out, 0, sizeof *out);
  if (!type) return TG_EINVAL;
  doc d;
  int rc = doc_open(&d, json, len, NULL);
  if (rc == 0) {
    int idx = find_struct(d.T, type, strlen(type));
    if (idx < 0) rc = TG_ETYPED_DATA_TYPE;
    else if (idx == d.dom) rc = hash_struct_value(out->b, d.T, (size_t)idx, d.domain, 0, NULL);
    else if (idx == d.primary) rc = hash_struct_value(out->b, d.T, (size_t)idx, d.message, 0, NULL);
    else rc = TG_ENOTFOUND;
  }
  doc_cleanup(&d);
  if (rc) memset(out, 0, sizeof *out);
  return rc;
}

int tg_eip712_types_parse(tg_eip712_types **out, const char *json, size_t len) {
  if (!out) return TG_EINVAL;
  *out = NULL;
  json_t *root;
  int rc = load(&root, json, len, NULL);
  if (rc) return rc;
  /* A whole document has a "types" object; a bare types object maps names to arrays. */
  json_t *types = json_object_get(root, "types");
  json_t *domain = NULL;
  if (json_is_object(types)) {
    domain = json_object_get(root, "domain");
  } else {
    types = root;
  }
  rc = types_build(out, root, types, domain, NULL);
  json_decref(root);
  return rc;
}

static int lookup(const tg_eip712_types *T, const char *type) {
  if (!T || !type) return TG_EINVAL;
  int idx = find_struct(T, type, strlen(type));
  return idx < 0 ? TG_ETYPED_DATA_TYPE : idx;
}

int tg_eip712_encode_type(tg_buf *out, const tg_eip712_types *T, const char *type) {
  if (!out) return TG_EINVAL;
  int idx = lookup(T, type);
  if (idx < 0) return idx;
  uint8_t mark[TG_EIP712_MAX_TYPES + 1];
  size_t before = out->len;
  sink o = {NULL, out, 0};
  int rc = put_encode_type(&o, T, (size_t)idx, mark);
  if (rc) out->len = before;
  return rc;
}

int tg_eip712_type_hash(tg_hash *out, const tg_eip712_types *T, const char *type) {
  if (!out) return TG_EINVAL;
  memset(out, 0, sizeof *out);
  int idx = lookup(T, type);
  if (idx < 0) return idx;
  *out = T->s[idx].type_hash;
  return TG_OK;
}

static int value_op(sink *o, const tg_eip712_types *T, const char *type, const char *json,
                    size_t len) {
  int idx = lookup(T, type);
  if (idx < 0) return idx;
  if (!json) return TG_EINVAL;
  if (len > TG_EIP712_MAX_JSON) return TG_ETOOBIG;
  json_error_t e;
  json_t *v = json_loadb(json, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &e);
  if (!v) return json_error_code(&e) == json_error_numeric_overflow ? TG_ERANGE : TG_EJSON;
  int rc = encode_struct(o, T, (size_t)idx, v, 0, NULL);
  json_decref(v);
  return rc;
}

int tg_eip712_encode_data_json(tg_buf *out, const tg_eip712_types *T, const char *type,
                               const char *value_json, size_t len) {
  if (!out) return TG_EINVAL;
  size_t before = out->len;
  sink o = {NULL, out, 0};
  int rc = value_op(&o, T, type, value_json, len);
  if (rc) out->len = before;
  return rc;
}

int tg_eip712_hash_struct_json(tg_hash *out, const tg_eip712_types *T, const char *type,
                               const char *value_json, size_t len) {
  if (!out) return TG_EINVAL;
  memset(out, 0, sizeof *out);
  tg_keccak_ctx k;
  tg_keccak256_init(&k);
  sink o = {&k, NULL, 0};
  int rc = value_op(&o, T, type, value_json, len);
  tg_keccak256_final(&k, out);
  if (rc) memset(out, 0, sizeof *out);
  return rc;
}
