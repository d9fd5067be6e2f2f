/* Solidity ABI codec: signature parsing, encoding, strict decoding, selectors, topics, revert data. */
#include <stdlib.h>
#include <string.h>

#include "eth/abi_int.h"
#include "tollgate/abi.h"
#include "tollgate/keccak.h"
#include "tollgate/u256.h"

/* ---- arena ---------------------------------------------------------------- */

struct tg__abi_chunk {
  tg__abi_chunk *next;
  size_t used, cap;
  _Alignas(16) unsigned char data[];
};

tg__abi_arena *tg__abi_arena_new(size_t max) {
  tg__abi_arena *a = calloc(1, sizeof *a);
  if (a == NULL) abort();
  a->max = max;
  return a;
}

void tg__abi_arena_free(tg__abi_arena *a) {
  if (a == NULL) return;
  tg__abi_chunk *c = a->head;
  while (c) {
    tg__abi_chunk *n = c->next;
    free(c);
    c = n;
  }
  free(a);
}

void *tg__abi_alloc(tg__abi_arena *a, size_t n) {
  n = (n + 15) & ~(size_t)15;
  if (n == 0) n = 16;
  if (n > a->max || a->total > a->max - n) return NULL;
  tg__abi_chunk *c = a->head;
  if (c == NULL || c->cap - c->used < n) {
    size_t cap = c ? c->cap * 2 : 1024;
    if (cap > ((size_t)1 << 20)) cap = (size_t)1 << 20;
    if (cap < n) cap = n;
    tg__abi_chunk *nc = malloc(sizeof *nc + cap);
    if (nc == NULL) abort();
    nc->next = c;
    nc->used = 0;
    nc->cap = cap;
    a->head = nc;
    c = nc;
  }
  void *p = c->data + c->used;
  c->used += n;
  a->total += n;
  memset(p, 0, n);
  return p;
}

typedef struct {
  tg_abi_tree pub;
  tg__abi_arena *arena;
} tree_impl;

tg_abi_tree *tg__abi_tree_new(size_t max) {
  tree_impl *t = calloc(1, sizeof *t);
  if (t == NULL) abort();
  t->arena = tg__abi_arena_new(max);
  t->pub.priv_ = t;
  return &t->pub;
}

tg__abi_arena *tg__abi_tree_arena(tg_abi_tree *t) {
  return ((tree_impl *)t->priv_)->arena;
}

void tg_abi_tree_free(tg_abi_tree *tree) {
  if (tree == NULL) return;
  tree_impl *t = tree->priv_;
  tg__abi_arena_free(t->arena);
  free(t);
}

/* ---- signature parsing ---------------------------------------------------- */

typedef struct {
  const char *s;
  size_t len, pos;
  tg__abi_arena *arena;
  size_t nodes;
  int err;
} sig_parser;

static int is_ident_start(int c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == '$';
}
static int is_ident_char(int c) { return is_ident_start(c) || (c >= '0' && c <= '9'); }
static int is_ws(int c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static void skip_ws(sig_parser *p) {
  while (p->pos < p->len && is_ws((unsigned char)p->s[p->pos])) p->pos++;
}
static int peek(const sig_parser *p) {
  return p->pos < p->len ? (unsigned char)p->s[p->pos] : -1;
}
static size_t ident(sig_parser *p) {
  size_t st = p->pos;
  if (p->pos < p->len && is_ident_start((unsigned char)p->s[p->pos])) {
    p->pos++;
    while (p->pos < p->len && is_ident_char((unsigned char)p->s[p->pos])) p->pos++;
  }
  return p->pos - st;
}

static tg_abi_type *new_type(sig_parser *p, tg_abi_kind kind) {
  if (++p->nodes > TG_ABI_MAX_NODES) {
    p->err = TG_EABI_SIG;
    return NULL;
  }
  tg_abi_type *t = tg__abi_alloc(p->arena, sizeof *t);
  if (t == NULL) {
    p->err = TG_EABI_SIG;
    return NULL;
  }
  t->kind = kind;
  t->head = 32;
  return t;
}

/* Parses N after a type name prefix: digits, no leading zero. Returns -1 if absent, -2 if bad. */
static long suffix_num(const char *s, size_t n) {
  if (n == 0) return -1;
  if (s[0] == '0' || n > 3) return -2;
  long v = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return -2;
    v = v * 10 + (s[i] - '0');
  }
  return v;
}

static tg_abi_type *elementary(sig_parser *p, const char *w, size_t n) {
  tg_abi_type *t = NULL;
#define IS(lit) (n == sizeof(lit) - 1 && memcmp(w, lit, n) == 0)
#define STARTS(lit) (n >= sizeof(lit) - 1 && memcmp(w, lit, sizeof(lit) - 1) == 0)
  if (IS("address")) {
    if ((t = new_type(p, TG_ABI_ADDRESS))) t->size = 20;
  } else if (IS("bool")) {
    t = new_type(p, TG_ABI_BOOL);
  } else if (IS("string")) {
    if ((t = new_type(p, TG_ABI_STRING))) t->dynamic = 1;
  } else if (IS("bytes")) {
    if ((t = new_type(p, TG_ABI_BYTES))) t->dynamic = 1;
  } else if (IS("byte")) {
    if ((t = new_type(p, TG_ABI_FIXED_BYTES))) t->size = 1;
  } else if (IS("function")) {
    if ((t = new_type(p, TG_ABI_FUNCTION))) t->size = 24;
  } else if (STARTS("uint") || STARTS("int")) {
    int u = w[0] == 'u';
    size_t pre = u ? 4 : 3;
    long bits = suffix_num(w + pre, n - pre);
    if (bits == -1) bits = 256;
    if (bits < 8 || bits > 256 || bits % 8 != 0) {
      p->err = TG_EABI_SIG;
      return NULL;
    }
    if ((t = new_type(p, u ? TG_ABI_UINT : TG_ABI_INT))) t->bits = (uint16_t)bits;
  } else if (STARTS("bytes")) {
    long sz = suffix_num(w + 5, n - 5);
    if (sz < 1 || sz > 32) {
      p->err = TG_EABI_SIG;
      return NULL;
    }
    if ((t = new_type(p, TG_ABI_FIXED_BYTES))) t->size = (uint16_t)sz;
  } else {
    p->err = TG_EABI_SIG;
  }
#undef IS
#undef STARTS
  return t;
}

static tg_abi_type *parse_list(sig_parser *p, int depth, int allow_empty);

static tg_abi_type *parse_type(sig_parser *p, int depth) {
  if (depth > TG_ABI_MAX_DEPTH) {
    p->err = TG_EABI_DEPTH;
    return NULL;
  }
  skip_ws(p);
  tg_abi_type *t;
  if (peek(p) == '(') {
    t = parse_list(p, depth + 1, 0);
  } else {
    size_t st = p->pos, n = ident(p);
    if (n == 0) {
      p->err = TG_EABI_SIG;
      return NULL;
    }
    if (n == 5 && memcmp(p->s + st, "tuple", 5) == 0 && peek(p) == '(')
      t = parse_list(p, depth + 1, 0);
    else
      t = elementary(p, p->s + st, n);
  }
  if (t == NULL) return NULL;
  while (peek(p) == '[') {
    p->pos++;
    size_t st = p->pos;
    while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') p->pos++;
    size_t nd = p->pos - st;
    if (peek(p) != ']' || (nd > 1 && p->s[st] == '0') || nd > 9) {
      p->err = TG_EABI_SIG;
      return NULL;
    }
    p->pos++;
    if (++depth > TG_ABI_MAX_DEPTH) {
      p->err = TG_EABI_DEPTH;
      return NULL;
    }
    tg_abi_type *a = new_type(p, nd ? TG_ABI_FIXED_ARRAY : TG_ABI_ARRAY);
    if (a == NULL) return NULL;
    a->elem = t;
    if (nd) {
      size_t k = 0;
      for (size_t i = 0; i < nd; i++) k = k * 10 + (size_t)(p->s[st + i] - '0');
      if (k == 0) {
        p->err = TG_EABI_SIG;
        return NULL;
      }
      a->count = k;
      a->dynamic = t->dynamic;
      if (!t->dynamic) {
        if (k > TG_ABI_MAX_STATIC / t->head) {
          p->err = TG_EABI_SIG;
          return NULL;
        }
        a->head = k * t->head;
      }
    } else {
      a->dynamic = 1;
    }
    t = a;
  }
  return t;
}

/* "(T a, U indexed b, ...)": a tuple type; parameter names and modifiers are skipped. */
static tg_abi_type *parse_list(sig_parser *p, int depth, int allow_empty) {
  if (depth > TG_ABI_MAX_DEPTH) {
    p->err = TG_EABI_DEPTH;
    return NULL;
  }
  skip_ws(p);
  if (peek(p) != '(') {
    p->err = TG_EABI_SIG;
    return NULL;
  }
  p->pos++;
  tg_abi_type *t = new_type(p, TG_ABI_TUPLE);
  if (t == NULL) return NULL;
  const tg_abi_type *local[64];
  const tg_abi_type **items = (const tg_abi_type **)local;
  size_t n = 0, cap = 64;
  int heap = 0;
  skip_ws(p);
  if (peek(p) == ')') {
    p->pos++;
  } else {
    for (;;) {
      tg_abi_type *m = parse_type(p, depth);
      if (m == NULL) goto fail;
      if (n == cap) {
        const tg_abi_type **ni = malloc(2 * cap * sizeof *ni);
        if (ni == NULL) abort();
        memcpy(ni, items, n * sizeof *ni);
        if (heap) free(items);
        items = ni;
        heap = 1;
        cap *= 2;
      }
      items[n++] = m;
      skip_ws(p);
      while (is_ident_start(peek(p))) { /* names, indexed, memory, payable... */
        (void)ident(p);
        skip_ws(p);
      }
      int c = peek(p);
      p->pos++;
      if (c == ')') break;
      if (c != ',') {
        p->err = TG_EABI_SIG;
        goto fail;
      }
    }
  }
  if (n == 0 && !allow_empty) {
    p->err = TG_EABI_SIG;
    goto fail;
  }
  const tg_abi_type **mem = tg__abi_alloc(p->arena, (n ? n : 1) * sizeof *mem);
  if (mem == NULL) {
    p->err = TG_EABI_SIG;
    goto fail;
  }
  if (n) memcpy(mem, items, n * sizeof *mem);
  t->members = mem;
  t->count = n;
  size_t head = 0;
  for (size_t i = 0; i < n; i++) {
    if (mem[i]->dynamic) t->dynamic = 1;
    head += mem[i]->head;
    if (head > TG_ABI_MAX_STATIC) {
      p->err = TG_EABI_SIG;
      goto fail;
    }
  }
  t->head = t->dynamic ? 32 : head;
  if (heap) free(items);
  return t;
fail:
  if (heap) free(items);
  return NULL;
}

static int fmt_type(tg_buf *out, const tg_abi_type *t) {
  int rc = 0;
  switch (t->kind) {
  case TG_ABI_UINT: return tg_buf_printf(out, "uint%u", (unsigned)t->bits);
  case TG_ABI_INT: return tg_buf_printf(out, "int%u", (unsigned)t->bits);
  case TG_ABI_ADDRESS: return tg_buf_append_str(out, "address");
  case TG_ABI_BOOL: return tg_buf_append_str(out, "bool");
  case TG_ABI_FIXED_BYTES: return tg_buf_printf(out, "bytes%u", (unsigned)t->size);
  case TG_ABI_FUNCTION: return tg_buf_append_str(out, "function");
  case TG_ABI_BYTES: return tg_buf_append_str(out, "bytes");
  case TG_ABI_STRING: return tg_buf_append_str(out, "string");
  case TG_ABI_ARRAY:
    if ((rc = fmt_type(out, t->elem))) return rc;
    return tg_buf_append_str(out, "[]");
  case TG_ABI_FIXED_ARRAY:
    if ((rc = fmt_type(out, t->elem))) return rc;
    return tg_buf_printf(out, "[%zu]", t->count);
  case TG_ABI_TUPLE:
    if ((rc = tg_buf_append_byte(out, '('))) return rc;
    for (size_t i = 0; i < t->count; i++) {
      if (i && (rc = tg_buf_append_byte(out, ','))) return rc;
      if ((rc = fmt_type(out, t->members[i]))) return rc;
    }
    return tg_buf_append_byte(out, ')');
  }
  return TG_EINTERNAL;
}

int tg_abi_type_format(tg_buf *out, const tg_abi_type *t) {
  if (out == NULL || t == NULL) return TG_EINVAL;
  return fmt_type(out, t);
}

static int finish_sig(tg_abi_sig **out, tg__abi_arena *arena, sig_parser *p, size_t name_st,
                      size_t name_len, const tg_abi_type *in, const tg_abi_type *outs) {
  tg_abi_sig *sig = tg__abi_alloc(arena, sizeof *sig);
  if (sig == NULL) return TG_EABI_SIG;
  tg_buf b;
  tg_buf_init(&b, TG_ABI_MAX_SIG * 4);
  int rc = tg_buf_append(&b, p->s + name_st, name_len);
  if (!rc) rc = fmt_type(&b, in);
  if (!rc) rc = tg_buf_append_byte(&b, 0);
  if (rc) {
    tg_buf_cleanup(&b);
    return TG_EABI_SIG;
  }
  char *canon = tg__abi_alloc(arena, b.len);
  if (canon == NULL) {
    tg_buf_cleanup(&b);
    return TG_EABI_SIG;
  }
  memcpy(canon, b.data, b.len);
  sig->canonical = canon;
  sig->canonical_len = b.len - 1;
  tg_buf_cleanup(&b);
  tg_hash h;
  tg_keccak256(&h, canon, sig->canonical_len);
  memcpy(sig->selector, h.b, 4);
  sig->name.ptr = canon;
  sig->name.len = name_len;
  sig->inputs = in;
  sig->outputs = outs;
  sig->priv_ = arena;
  *out = sig;
  return TG_OK;
}

static int sig_parse(tg_abi_sig **out, const char *s, size_t len, int single_type) {
  if (out == NULL) return TG_EINVAL;
  *out = NULL;
  if (s == NULL || len > TG_ABI_MAX_SIG) return TG_EABI_SIG;
  tg__abi_arena *arena = tg__abi_arena_new((size_t)4 << 20);
  sig_parser p = {s, len, 0, arena, 0, 0};
  const tg_abi_type *in = NULL, *outs = NULL;
  size_t name_st = 0, name_len = 0;
  if (single_type) {
    const tg_abi_type *t = parse_type(&p, 1);
    skip_ws(&p);
    if (t && p.pos == len) {
      tg_abi_type *tup = new_type(&p, TG_ABI_TUPLE);
      const tg_abi_type **mem = tup ? tg__abi_alloc(arena, sizeof *mem) : NULL;
      if (mem) {
        mem[0] = t;
        tup->members = mem;
        tup->count = 1;
        tup->dynamic = t->dynamic;
        tup->head = t->dynamic ? 32 : t->head;
        in = tup;
      }
    }
  } else {
    skip_ws(&p);
    size_t st = p.pos, n = ident(&p);
    static const char *const kw[] = {"function", "event", "error"};
    for (size_t i = 0; i < 3 && n; i++) {
      if (n == strlen(kw[i]) && memcmp(s + st, kw[i], n) == 0 && is_ws(peek(&p))) {
        skip_ws(&p);
        st = p.pos;
        n = ident(&p);
        break;
      }
    }
    name_st = st;
    name_len = n;
    skip_ws(&p);
    in = parse_list(&p, 1, 1);
    if (in) {
      skip_ws(&p);
      /* Solidity trailers: visibility, mutability, `returns`, `anonymous`, cast's `:`. */
      for (;;) {
        if (peek(&p) == ':') {
          p.pos++;
        } else if (is_ident_start(peek(&p))) {
          (void)ident(&p);
        } else {
          break;
        }
        skip_ws(&p);
      }
      if (peek(&p) == '(') {
        outs = parse_list(&p, 1, 1);
        if (outs == NULL) in = NULL;
        skip_ws(&p);
        while (is_ident_start(peek(&p))) {
          (void)ident(&p);
          skip_ws(&p);
        }
      }
      if (p.pos != len) in = NULL;
    }
  }
  if (in == NULL) {
    tg__abi_arena_free(arena);
    return p.err ? p.err : TG_EABI_SIG;
  }
  int rc = finish_sig(out, arena, &p, name_st, name_len, in, outs);
  if (rc) tg__abi_arena_free(arena);
  return rc;
}

int tg_abi_sig_parse(tg_abi_sig **out, const char *sig, size_t len) {
  return sig_parse(out, sig, len, 0);
}

int tg_abi_type_parse(tg_abi_sig **out, const char *type, size_t len) {
  return sig_parse(out, type, len, 1);
}

void tg_abi_sig_free(tg_abi_sig *sig) {
  if (sig == NULL) return;
  tg__abi_arena_free(sig->priv_);
}

void tg_abi_selector(uint8_t out[4], const tg_abi_sig *sig) { memcpy(out, sig->selector, 4); }

int tg_abi_selector_str(uint8_t out[4], const char *sig, size_t len) {
  memset(out, 0, 4);
  tg_abi_sig *s;
  int rc = tg_abi_sig_parse(&s, sig, len);
  if (rc) return rc;
  tg_abi_selector(out, s);
  tg_abi_sig_free(s);
  return TG_OK;
}

int tg_abi_event_topic(tg_hash *out, const char *sig, size_t len) {
  memset(out, 0, sizeof *out);
  tg_abi_sig *s;
  int rc = tg_abi_sig_parse(&s, sig, len);
  if (rc) return rc;
  tg_keccak256(out, s->canonical, s->canonical_len);
  tg_abi_sig_free(s);
  return TG_OK;
}

/* ---- values --------------------------------------------------------------- */

tg_abi_value tg_abi_val_word(const tg_u256 *word) {
  tg_abi_value v = {0};
  v.word = *word;
  return v;
}

tg_abi_value tg_abi_val_u64(uint64_t x) {
  tg_abi_value v = {0};
  for (int i = 0; i < 8; i++) v.word.b[31 - i] = (uint8_t)(x >> (8 * i));
  return v;
}

tg_abi_value tg_abi_val_i64(int64_t x) {
  tg_abi_value v = tg_abi_val_u64((uint64_t)x);
  if (x < 0) memset(v.word.b, 0xff, 24);
  return v;
}

tg_abi_value tg_abi_val_bool(int b) { return tg_abi_val_u64(b ? 1 : 0); }

tg_abi_value tg_abi_val_address(const tg_address *a) {
  tg_abi_value v = {0};
  memcpy(v.word.b + 12, a->b, 20);
  return v;
}

tg_abi_value tg_abi_val_fixed(const uint8_t *b, size_t n) {
  tg_abi_value v = {0};
  if (n > 32) n = 32;
  if (n) memcpy(v.word.b, b, n);
  return v;
}

tg_abi_value tg_abi_val_bytes(const void *p, size_t len) {
  tg_abi_value v = {0};
  v.bytes.ptr = p;
  v.bytes.len = len;
  return v;
}

tg_abi_value tg_abi_val_list(const tg_abi_value *items, size_t count) {
  tg_abi_value v = {0};
  v.items = items;
  v.count = count;
  return v;
}

static int all_zero(const uint8_t *p, size_t n) {
  uint8_t acc = 0;
  for (size_t i = 0; i < n; i++) acc |= p[i];
  return acc == 0;
}

static int all_ff(const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != 0xff) return 0;
  return 1;
}

/* Whether a 32-byte word is a valid encoding of a static scalar type. */
static int word_ok(const tg_abi_type *t, const uint8_t *w) {
  switch (t->kind) {
  case TG_ABI_UINT: return all_zero(w, 32 - t->bits / 8u);
  case TG_ABI_INT: {
    size_t pad = 32 - t->bits / 8u;
    if (pad == 0) return 1;
    return (w[pad] & 0x80) ? all_ff(w, pad) : all_zero(w, pad);
  }
  case TG_ABI_ADDRESS: return all_zero(w, 12);
  case TG_ABI_BOOL: return all_zero(w, 31) && w[31] <= 1;
  case TG_ABI_FIXED_BYTES:
  case TG_ABI_FUNCTION: return all_zero(w + t->size, 32u - t->size);
  default: return 0;
  }
}

static size_t pad32(size_t n) { return (n + 31) & ~(size_t)31; }

#define SIZE_CAP ((size_t)1 << 40)

static int size_of(size_t *size, const tg_abi_type *t, const tg_abi_value *v, int depth);

/* Heads plus tails of a sequence whose i-th type is types(i). */
static int seq_size(size_t *size, const tg_abi_type *t, const tg_abi_value *v, int depth) {
  size_t total = 0;
  for (size_t i = 0; i < v->count; i++) {
    const tg_abi_type *et = t->kind == TG_ABI_TUPLE ? t->members[i] : t->elem;
    size_t s;
    int rc = size_of(&s, et, &v->items[i], depth + 1);
    if (rc) return rc;
    total += et->dynamic ? 32 + s : s;
    if (total > SIZE_CAP) return TG_ETOOBIG;
  }
  *size = total;
  return TG_OK;
}

static int size_of(size_t *size, const tg_abi_type *t, const tg_abi_value *v, int depth) {
  if (depth > TG_ABI_MAX_DEPTH + 1) return TG_EABI_DEPTH;
  switch (t->kind) {
  case TG_ABI_UINT:
  case TG_ABI_INT:
  case TG_ABI_ADDRESS:
  case TG_ABI_BOOL:
  case TG_ABI_FIXED_BYTES:
  case TG_ABI_FUNCTION:
    if (!word_ok(t, v->word.b)) return TG_EABI_VALUE;
    *size = 32;
    return TG_OK;
  case TG_ABI_BYTES:
  case TG_ABI_STRING:
    if (v->bytes.len > TG_ABI_MAX_LEN || (v->bytes.len && v->bytes.ptr == NULL))
      return TG_EABI_VALUE;
    *size = 32 + pad32(v->bytes.len);
    return TG_OK;
  case TG_ABI_ARRAY: {
    if (v->count > TG_ABI_MAX_LEN || (v->count && v->items == NULL)) return TG_EABI_VALUE;
    size_t s;
    int rc = seq_size(&s, t, v, depth);
    if (rc) return rc;
    *size = 32 + s;
    return TG_OK;
  }
  case TG_ABI_FIXED_ARRAY:
  case TG_ABI_TUPLE:
    if (v->count != t->count || (v->count && v->items == NULL)) return TG_EABI_VALUE;
    return seq_size(size, t, v, depth);
  }
  return TG_EINTERNAL;
}

int tg_abi_encoded_size(size_t *size, const tg_abi_type *t, const tg_abi_value *v) {
  if (size == NULL) return TG_EINVAL;
  *size = 0;
  if (t == NULL || v == NULL) return TG_EINVAL;
  return size_of(size, t, v, 0);
}

static void put_len(uint8_t *w, size_t n) {
  memset(w, 0, 24);
  for (int i = 0; i < 8; i++) w[31 - i] = (uint8_t)((uint64_t)n >> (8 * i));
}

/* Writes the encoding of an already-validated value at out; returns its size. */
static size_t write_val(uint8_t *out, const tg_abi_type *t, const tg_abi_value *v) {
  switch (t->kind) {
  case TG_ABI_UINT:
  case TG_ABI_INT:
  case TG_ABI_ADDRESS:
  case TG_ABI_BOOL:
  case TG_ABI_FIXED_BYTES:
  case TG_ABI_FUNCTION:
    memcpy(out, v->word.b, 32);
    return 32;
  case TG_ABI_BYTES:
  case TG_ABI_STRING: {
    size_t n = v->bytes.len, p = pad32(n);
    put_len(out, n);
    if (n) memcpy(out + 32, v->bytes.ptr, n);
    memset(out + 32 + n, 0, p - n);
    return 32 + p;
  }
  default:
    break;
  }
  size_t pre = 0;
  if (t->kind == TG_ABI_ARRAY) {
    put_len(out, v->count);
    pre = 32;
    out += 32;
  }
  size_t head = 0;
  for (size_t i = 0; i < v->count; i++) {
    const tg_abi_type *et = t->kind == TG_ABI_TUPLE ? t->members[i] : t->elem;
    head += et->head;
  }
  size_t pos = 0, tail = head;
  for (size_t i = 0; i < v->count; i++) {
    const tg_abi_type *et = t->kind == TG_ABI_TUPLE ? t->members[i] : t->elem;
    if (et->dynamic) {
      put_len(out + pos, tail);
      tail += write_val(out + tail, et, &v->items[i]);
      pos += 32;
    } else {
      pos += write_val(out + pos, et, &v->items[i]);
    }
  }
  return pre + tail;
}

int tg_abi_encode_to(uint8_t *out, size_t outlen, const tg_abi_type *t, const tg_abi_value *v) {
  size_t n;
  int rc = tg_abi_encoded_size(&n, t, v);
  if (rc) return rc;
  if (n != outlen || (n && out == NULL)) return TG_EBUFSIZE;
  if (n) write_val(out, t, v);
  return TG_OK;
}

int tg_abi_encode(tg_buf *out, const tg_abi_type *t, const tg_abi_value *v) {
  if (out == NULL) return TG_EINVAL;
  size_t n;
  int rc = tg_abi_encoded_size(&n, t, v);
  if (rc) return rc;
  if ((rc = tg_buf_reserve(out, n))) return rc;
  write_val(out->data + out->len, t, v);
  out->len += n;
  out->data[out->len] = 0;
  return TG_OK;
}

int tg_abi_encode_call(tg_buf *out, const tg_abi_sig *sig, const tg_abi_value *args) {
  if (out == NULL || sig == NULL) return TG_EINVAL;
  size_t n;
  int rc = tg_abi_encoded_size(&n, sig->inputs, args);
  if (rc) return rc;
  if ((rc = tg_buf_reserve(out, n + 4))) return rc;
  tg_abi_selector(out->data + out->len, sig);
  write_val(out->data + out->len + 4, sig->inputs, args);
  out->len += n + 4;
  out->data[out->len] = 0;
  return TG_OK;
}

static int packed(tg_buf *out, const tg_abi_type *t, const tg_abi_value *v, int in_array,
                  int depth) {
  if (depth > TG_ABI_MAX_DEPTH + 1) return TG_EABI_DEPTH;
  size_t w;
  switch (t->kind) {
  case TG_ABI_UINT:
  case TG_ABI_INT:
  case TG_ABI_ADDRESS:
  case TG_ABI_BOOL:
    if (!word_ok(t, v->word.b)) return TG_EABI_VALUE;
    w = in_array ? 32 : t->kind == TG_ABI_BOOL ? 1 : t->kind == TG_ABI_ADDRESS ? 20 : t->bits / 8u;
    return tg_buf_append(out, v->word.b + 32 - w, w);
  case TG_ABI_FIXED_BYTES:
  case TG_ABI_FUNCTION:
    if (!word_ok(t, v->word.b)) return TG_EABI_VALUE;
    return tg_buf_append(out, v->word.b, in_array ? 32 : t->size);
  case TG_ABI_BYTES:
  case TG_ABI_STRING:
    if (v->bytes.len && v->bytes.ptr == NULL) return TG_EABI_VALUE;
    return tg_buf_append(out, v->bytes.ptr, v->bytes.len);
  case TG_ABI_ARRAY:
  case TG_ABI_FIXED_ARRAY:
    if ((t->kind == TG_ABI_FIXED_ARRAY && v->count != t->count) || (v->count && v->items == NULL))
      return TG_EABI_VALUE;
    for (size_t i = 0; i < v->count; i++) {
      int rc = packed(out, t->elem, &v->items[i], 1, depth + 1);
      if (rc) return rc;
    }
    return TG_OK;
  case TG_ABI_TUPLE:
    break;
  }
  return TG_EUNSUPPORTED;
}

int tg_abi_encode_packed(tg_buf *out, const tg_abi_type *t, const tg_abi_value *v) {
  if (out == NULL || t == NULL || v == NULL) return TG_EINVAL;
  size_t mark = out->len;
  int rc;
  if (t->kind == TG_ABI_TUPLE) { /* the top-level argument list */
    if (v->count != t->count || (v->count && v->items == NULL)) return TG_EABI_VALUE;
    rc = TG_OK;
    for (size_t i = 0; i < t->count && !rc; i++) rc = packed(out, t->members[i], &v->items[i], 0, 1);
  } else {
    rc = packed(out, t, v, 0, 0);
  }
  if (rc) {
    out->len = mark;
    if (out->data) out->data[mark] = 0;
  }
  return rc;
}

void tg_abi_put_u256(uint8_t out[32], const tg_u256 *v) { memcpy(out, v->b, 32); }

void tg_abi_put_u64(uint8_t out[32], uint64_t v) {
  memset(out, 0, 24);
  for (int i = 0; i < 8; i++) out[31 - i] = (uint8_t)(v >> (8 * i));
}

void tg_abi_put_address(uint8_t out[32], const tg_address *a) {
  memset(out, 0, 12);
  memcpy(out + 12, a->b, 20);
}

void tg_abi_put_bytes32(uint8_t out[32], const uint8_t b[32]) { memcpy(out, b, 32); }

void tg_abi_put_bool(uint8_t out[32], int v) { tg_abi_put_u64(out, v ? 1 : 0); }

/* ---- strict decoding ------------------------------------------------------ */

typedef struct {
  tg__abi_arena *arena;
  size_t nodes;
  unsigned flags;
} dec_ctx;

/* A length or offset word: must fit 64 bits and stay under `cap`. */
static int read_len(const uint8_t *w, size_t cap, size_t *out) {
  if (!all_zero(w, 24)) return TG_EABI_DATA;
  uint64_t v = 0;
  for (int i = 24; i < 32; i++) v = (v << 8) | w[i];
  if (v > cap) return TG_EABI_DATA;
  *out = (size_t)v;
  return TG_OK;
}

static int dec_val(dec_ctx *c, const tg_abi_type *t, const uint8_t *buf, size_t len,
                   tg_abi_value *out, size_t *used, int depth);

/*
 * Decodes a sequence of n elements (tuple members or array items) whose
 * encoding starts at buf (offsets are relative to buf).
 */
static int dec_seq(dec_ctx *c, const tg_abi_type *t, size_t n, const uint8_t *buf, size_t len,
                   tg_abi_value *out, size_t *used, int depth) {
  if (n > TG_ABI_MAX_VALUES || c->nodes + n > TG_ABI_MAX_VALUES) return TG_EABI_DATA;
  size_t head = 0;
  for (size_t i = 0; i < n; i++) {
    const tg_abi_type *et = t->kind == TG_ABI_TUPLE ? t->members[i] : t->elem;
    head += et->head;
    if (head > len) return TG_EABI_DATA;
  }
  c->nodes += n;
  tg_abi_value *items = NULL;
  if (n) {
    items = tg__abi_alloc(c->arena, n * sizeof *items);
    if (items == NULL) return TG_ETOOBIG;
  }
  size_t pos = 0, end = head, expect = head;
  for (size_t i = 0; i < n; i++) {
    const tg_abi_type *et = t->kind == TG_ABI_TUPLE ? t->members[i] : t->elem;
    size_t u;
    int rc;
    if (et->dynamic) {
      size_t off;
      if ((rc = read_len(buf + pos, len, &off))) return rc;
      /* An offset may not point back into the head it belongs to. */
      if (off < head) return TG_EABI_DATA;
      if ((c->flags & TG_ABI_DECODE_CANONICAL) && off != expect) return TG_EABI_DATA;
      if ((rc = dec_val(c, et, buf + off, len - off, &items[i], &u, depth + 1))) return rc;
      if (off + u > end) end = off + u;
      expect = off + u;
      pos += 32;
    } else {
      if ((rc = dec_val(c, et, buf + pos, len - pos, &items[i], &u, depth + 1))) return rc;
      pos += u;
    }
  }
  out->items = items;
  out->count = n;
  *used = end;
  return TG_OK;
}

static int dec_val(dec_ctx *c, const tg_abi_type *t, const uint8_t *buf, size_t len,
                   tg_abi_value *out, size_t *used, int depth) {
  if (depth > TG_ABI_MAX_DEPTH + 2) return TG_EABI_DEPTH;
  switch (t->kind) {
  case TG_ABI_UINT:
  case TG_ABI_INT:
  case TG_ABI_ADDRESS:
  case TG_ABI_BOOL:
  case TG_ABI_FIXED_BYTES:
  case TG_ABI_FUNCTION:
    if (len < 32) return TG_EABI_DATA;
    if (!word_ok(t, buf)) return TG_EABI_DATA;
    memcpy(out->word.b, buf, 32);
    *used = 32;
    return TG_OK;
  case TG_ABI_BYTES:
  case TG_ABI_STRING: {
    size_t n;
    if (len < 32) return TG_EABI_DATA;
    int rc = read_len(buf, TG_ABI_MAX_LEN, &n);
    if (rc) return rc;
    size_t p = pad32(n);
    if (p > len - 32) return TG_EABI_DATA;
    if (!all_zero(buf + 32 + n, p - n)) return TG_EABI_DATA;
    out->bytes.ptr = buf + 32;
    out->bytes.len = n;
    *used = 32 + p;
    return TG_OK;
  }
  case TG_ABI_ARRAY: {
    size_t n, u;
    if (len < 32) return TG_EABI_DATA;
    int rc = read_len(buf, TG_ABI_MAX_LEN, &n);
    if (rc) return rc;
    /* Every element takes at least 32 bytes of head (no empty tuples). */
    if (n > (len - 32) / 32) return TG_EABI_DATA;
    if ((rc = dec_seq(c, t, n, buf + 32, len - 32, out, &u, depth))) return rc;
    *used = 32 + u;
    return TG_OK;
  }
  case TG_ABI_FIXED_ARRAY:
  case TG_ABI_TUPLE:
    return dec_seq(c, t, t->count, buf, len, out, used, depth);
  }
  return TG_EINTERNAL;
}

int tg_abi_decode(tg_abi_tree **out, const tg_abi_type *t, const uint8_t *data, size_t len,
                  unsigned flags) {
  if (out == NULL) return TG_EINVAL;
  *out = NULL;
  if (t == NULL || (data == NULL && len)) return TG_EINVAL;
  static const uint8_t empty[1] = {0};
  if (data == NULL) data = empty;
  tg_abi_tree *tree = tg__abi_tree_new(TG_ABI_MAX_VALUES * sizeof(tg_abi_value) * 2);
  dec_ctx c = {tg__abi_tree_arena(tree), 0, flags};
  size_t used = 0;
  int rc = dec_val(&c, t, data, len, &tree->root, &used, 0);
  if (!rc && used != len && !(flags & TG_ABI_DECODE_ALLOW_TRAILING)) rc = TG_ETRAILING;
  if (rc) {
    tg_abi_tree_free(tree);
    return rc == TG_ETOOBIG ? TG_EABI_DATA : rc;
  }
  tree->type = t;
  *out = tree;
  return TG_OK;
}

/* ---- revert data ---------------------------------------------------------- */

const char *tg_abi_panic_reason(uint64_t code) {
  switch (code) {
  case 0x00: return "generic/unspecified error";
  case 0x01: return "assertion failed";
  case 0x11: return "arithmetic underflow or overflow";
  case 0x12: return "division or modulo by zero";
  case 0x21: return "enum overflow";
  case 0x22: return "invalid encoded storage byte array accessed";
  case 0x31: return "out-of-bounds array access; popping on an empty array";
  case 0x32: return "out-of-bounds access of an array or bytesN";
  case 0x41: return "out of memory";
  case 0x51: return "uninitialized function";
  default: return NULL;
  }
}

void tg_abi_revert_cleanup(tg_abi_revert *r) {
  if (r == NULL) return;
  tg_abi_tree_free(r->args);
  memset(r, 0, sizeof *r);
}

int tg_abi_decode_revert(tg_abi_revert *out, const uint8_t *data, size_t len,
                         const tg_abi_sig *const *customs, size_t ncustom) {
  if (out == NULL) return TG_EINVAL;
  memset(out, 0, sizeof *out);
  if (data == NULL && len) return TG_EINVAL;
  if (len == 0) {
    out->kind = TG_ABI_REVERT_EMPTY;
    return TG_OK;
  }
  if (len < 4) return TG_EABI_DATA;
  memcpy(out->selector, data, 4);
  out->kind = TG_ABI_REVERT_UNKNOWN;
  static const uint8_t err_sel[4] = {0x08, 0xc3, 0x79, 0xa0};
  static const uint8_t panic_sel[4] = {0x4e, 0x48, 0x7b, 0x71};
  static const tg_abi_type str_t = {TG_ABI_STRING, 0, 0, 1, 0, 32, NULL, NULL};
  static const tg_abi_type u256_t = {TG_ABI_UINT, 256, 0, 0, 0, 32, NULL, NULL};
  static const tg_abi_type *const str_m[1] = {&str_t};
  static const tg_abi_type *const u256_m[1] = {&u256_t};
  static const tg_abi_type err_args = {TG_ABI_TUPLE, 0, 0, 1, 1, 32, NULL, str_m};
  static const tg_abi_type panic_args = {TG_ABI_TUPLE, 0, 0, 0, 1, 32, NULL, u256_m};
  for (size_t i = 0; i < ncustom; i++) {
    uint8_t sel[4];
    if (customs[i] == NULL) continue;
    tg_abi_selector(sel, customs[i]);
    if (memcmp(sel, data, 4) != 0) continue;
    tg_abi_tree *t;
    if (tg_abi_decode(&t, customs[i]->inputs, data + 4, len - 4, TG_ABI_DECODE_ALLOW_TRAILING))
      continue;
    out->kind = TG_ABI_REVERT_CUSTOM;
    out->custom_index = i;
    out->args = t;
    return TG_OK;
  }
  tg_abi_tree *t;
  if (memcmp(data, err_sel, 4) == 0 &&
      tg_abi_decode(&t, &err_args, data + 4, len - 4, TG_ABI_DECODE_ALLOW_TRAILING) == 0) {
    out->kind = TG_ABI_REVERT_ERROR;
    out->message = t->root.items[0].bytes;
    tg_abi_tree_free(t);
  } else if (memcmp(data, panic_sel, 4) == 0 &&
             tg_abi_decode(&t, &panic_args, data + 4, len - 4,
                           TG_ABI_DECODE_ALLOW_TRAILING) == 0) {
    out->kind = TG_ABI_REVERT_PANIC;
    out->panic_code = t->root.items[0].word;
    uint64_t code;
    if (tg_u256_to_u64(&out->panic_code, &code) == 0) out->panic_reason = tg_abi_panic_reason(code);
    tg_abi_tree_free(t);
  }
  return TG_OK;
}
