/* Solidity ABI values as text: cast-style argument parsing and `cast decode-abi` formatting. */
#include <stdlib.h>
#include <string.h>

#include "eth/abi_escape.h"
#include "eth/abi_int.h"
#include "tollgate/abi.h"
#include "tollgate/address.h"
#include "tollgate/hex.h"
#include "tollgate/u256.h"

/* ---- argument parsing (the grammar of alloy's DynSolType::coerce_str, which cast uses) ---- */

typedef struct {
  const char *s;
  size_t len, pos;
  tg__abi_arena *arena;
  size_t nodes;
  char list_end; /* ']' or ')' inside a list, 0 at the top level */
} vparser;

static int vpeek(const vparser *p) { return p->pos < p->len ? (unsigned char)p->s[p->pos] : -1; }
static void space0(vparser *p) {
  while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t')) p->pos++;
}
static int is_alpha(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static int is_digit(int c) { return c >= '0' && c <= '9'; }

static int u256_is_over_bits(const tg_u256 *v, unsigned bits) {
  /* bit length of v > bits */
  if (bits >= 256) return 0;
  unsigned full = (256 - bits) / 8, rem = (256 - bits) % 8;
  for (unsigned i = 0; i < full; i++)
    if (v->b[i]) return 1;
  if (rem && (v->b[full] >> (8 - rem))) return 1;
  return 0;
}

/* v *= 10^e; like alloy, 10^e itself must fit 256 bits (e <= 77) even when v is 0. */
static int pow10_mul(tg_u256 *v, size_t e) {
  if (e > 77) return TG_EABI_VALUE;
  for (size_t i = 0; i < e; i++)
    if (tg_u256_mul_u64(v, v, 10)) return TG_EABI_VALUE;
  return TG_OK;
}

/* `{literal}(\.[0-9]+)?([eE][+-]?[0-9]+)?\s*{unit}?` -> magnitude; bit length checked against bits. */
static int parse_uint(vparser *p, unsigned bits, tg_u256 *out) {
  tg_u256 v;
  tg_u256_zero(&v);
  unsigned base = 10;
  if (p->len - p->pos >= 2 && p->s[p->pos] == '0') {
    int c = p->s[p->pos + 1];
    if (c == 'x' || c == 'X') base = 16;
    if (c == 'b' || c == 'B') base = 2;
    if (c == 'o' || c == 'O') base = 8;
    if (base != 10) p->pos += 2;
  }
  size_t st = p->pos;
  while (p->pos < p->len) {
    int c = (unsigned char)p->s[p->pos];
    int d = base == 10 ? (is_digit(c) ? c - '0' : -1) : tg_hex_digit(c);
    if (d < 0) break;
    if ((unsigned)d >= base) return TG_EABI_VALUE; /* e.g. 0b102: hex digits, bad radix */
    if (tg_u256_mul_u64(&v, &v, base) || tg_u256_add_u64(&v, &v, (uint64_t)d)) return TG_EABI_VALUE;
    p->pos++;
  }
  if (p->pos == st) return TG_EABI_VALUE;
  const char *fr = NULL;
  size_t frn = 0;
  if (vpeek(p) == '.') {
    p->pos++;
    fr = p->s + p->pos;
    while (p->pos < p->len && is_digit((unsigned char)p->s[p->pos])) p->pos++, frn++;
    if (frn == 0) return TG_EABI_VALUE;
  }
  long e = 0;
  if (vpeek(p) == 'e' || vpeek(p) == 'E') {
    size_t save = p->pos++;
    int neg = 0;
    if (vpeek(p) == '+' || vpeek(p) == '-') neg = p->s[p->pos++] == '-';
    size_t ds = p->pos;
    while (p->pos < p->len && is_digit((unsigned char)p->s[p->pos]) && p->pos - ds < 6)
      e = e * 10 + (p->s[p->pos++] - '0');
    if (p->pos == ds) {
      p->pos = save;
      e = 0;
    } else if (neg) {
      e = -e;
    }
  }
  space0(p);
  size_t us = p->pos;
  while (p->pos < p->len && is_alpha((unsigned char)p->s[p->pos])) p->pos++;
  size_t un = p->pos - us;
  long units;
  const char *u = p->s + us;
  if (un == 0 || (un == 3 && memcmp(u, "wei", 3) == 0)) units = 0;
  else if (un == 5 && memcmp(u, "ether", 5) == 0) units = 18;
  else if ((un == 4 && memcmp(u, "gwei", 4) == 0) || (un == 4 && memcmp(u, "nano", 4) == 0) ||
           (un == 9 && memcmp(u, "nanoether", 9) == 0))
    units = 9;
  else return TG_EABI_VALUE;
  units += e;
  if (units < 0 || units > 100) return TG_EABI_VALUE;
  if (fr) {
    tg_u256 f;
    tg_u256_zero(&f);
    int nonzero = 0;
    for (size_t i = 0; i < frn; i++) {
      if (fr[i] != '0') nonzero = 1;
      if (tg_u256_mul_u64(&f, &f, 10) || tg_u256_add_u64(&f, &f, (uint64_t)(fr[i] - '0')))
        return TG_EABI_VALUE;
    }
    if (units == 0 && nonzero) return TG_EABI_VALUE;
    if (frn > (size_t)units) return TG_EABI_VALUE;
    if (pow10_mul(&v, frn) || tg_u256_add(&v, &v, &f) || pow10_mul(&v, (size_t)units - frn))
      return TG_EABI_VALUE;
  } else if (pow10_mul(&v, (size_t)units)) {
    return TG_EABI_VALUE;
  }
  if (u256_is_over_bits(&v, bits)) return TG_EABI_VALUE;
  *out = v;
  return TG_OK;
}

/* `(0x)?[0-9a-fA-F]*`, empty only with the prefix; returns the digits. */
static int hex_str(vparser *p, const char **digits, size_t *n) {
  int prefix = 0;
  if (p->len - p->pos >= 2 && p->s[p->pos] == '0' && p->s[p->pos + 1] == 'x') {
    p->pos += 2;
    prefix = 1;
  }
  size_t st = p->pos;
  while (p->pos < p->len && tg_hex_digit((unsigned char)p->s[p->pos]) >= 0) p->pos++;
  *digits = p->s + st;
  *n = p->pos - st;
  if (!prefix && *n == 0) return TG_EABI_VALUE;
  return TG_OK;
}

static int parse_value(vparser *p, const tg_abi_type *t, tg_abi_value *out);

static int copy_bytes(vparser *p, tg_abi_value *out, const void *src, size_t n) {
  uint8_t *d = tg__abi_alloc(p->arena, n + 1);
  if (d == NULL) return TG_ETOOBIG;
  if (n) memcpy(d, src, n);
  out->bytes.ptr = d;
  out->bytes.len = n;
  return TG_OK;
}

static int parse_string(vparser *p, tg_abi_value *out) {
  if (p->pos >= p->len) return copy_bytes(p, out, "", 0);
  char q = p->s[p->pos];
  size_t st, n;
  if (q == '"' || q == '\'') {
    st = ++p->pos;
    while (p->pos < p->len && p->s[p->pos] != q) p->pos++;
    if (p->pos >= p->len) return TG_EABI_VALUE;
    n = p->pos - st;
    p->pos++;
    return copy_bytes(p, out, p->s + st, n);
  }
  st = p->pos;
  if (p->list_end) {
    while (p->pos < p->len && p->s[p->pos] != ',' && p->s[p->pos] != p->list_end) p->pos++;
    if (p->pos == st) return TG_EABI_VALUE;
  } else {
    p->pos = p->len;
  }
  n = p->pos - st;
  /* Rust's trim_end: ASCII whitespace plus the Unicode White_Space set most likely here. */
  for (;;) {
    const unsigned char *e = (const unsigned char *)p->s + st + n;
    if (n >= 1 && (e[-1] == ' ' || (e[-1] >= 0x09 && e[-1] <= 0x0d))) n -= 1;
    else if (n >= 2 && e[-2] == 0xc2 && (e[-1] == 0x85 || e[-1] == 0xa0)) n -= 2;
    else if (n >= 3 && e[-3] == 0xe2 && e[-2] == 0x80 &&
             ((e[-1] >= 0x80 && e[-1] <= 0x8a) || e[-1] == 0xa8 || e[-1] == 0xa9 || e[-1] == 0xaf))
      n -= 3;
    else if (n >= 3 && e[-3] == 0xe2 && e[-2] == 0x81 && e[-1] == 0x9f) n -= 3;
    else if (n >= 3 && e[-3] == 0xe3 && e[-2] == 0x80 && e[-1] == 0x80) n -= 3;
    else if (n >= 3 && e[-3] == 0xe1 && e[-2] == 0x9a && e[-1] == 0x80) n -= 3;
    else break;
  }
  return copy_bytes(p, out, p->s + st, n);
}

static int parse_list(vparser *p, const tg_abi_type *t, tg_abi_value *out) {
  char saved = p->list_end;
  int rc = TG_OK;
  tg_abi_value *tmp = NULL;
  size_t n = 0, cap = 0;
  if (t->kind == TG_ABI_TUPLE) {
    p->list_end = ')';
    space0(p);
    if (vpeek(p) != '(') {
      rc = TG_EABI_VALUE;
      goto out;
    }
    p->pos++;
    tmp = calloc(t->count ? t->count : 1, sizeof *tmp);
    if (tmp == NULL) abort();
    for (size_t i = 0; i < t->count; i++) {
      if (i) {
        space0(p);
        if (vpeek(p) != ',') {
          rc = TG_EABI_VALUE;
          goto out;
        }
        p->pos++;
      }
      space0(p);
      if ((rc = parse_value(p, t->members[i], &tmp[i]))) goto out;
    }
    n = t->count;
    space0(p);
    if (vpeek(p) != ')') {
      rc = TG_EABI_VALUE;
      goto out;
    }
    p->pos++;
  } else {
    p->list_end = ']';
    if (vpeek(p) != '[') {
      rc = TG_EABI_VALUE;
      goto out;
    }
    p->pos++;
    space0(p);
    if (vpeek(p) != ']') {
      for (;;) {
        if (n == cap) {
          cap = cap ? 2 * cap : 8;
          if (cap > TG_ABI_MAX_VALUES) {
            rc = TG_EABI_VALUE;
            goto out;
          }
          tg_abi_value *nt = realloc(tmp, cap * sizeof *nt);
          if (nt == NULL) abort();
          tmp = nt;
        }
        memset(&tmp[n], 0, sizeof tmp[n]);
        if ((rc = parse_value(p, t->elem, &tmp[n]))) goto out;
        n++;
        if (vpeek(p) != ',') break;
        p->pos++;
        space0(p);
        if (vpeek(p) == ']') break; /* a trailing comma */
      }
    }
    space0(p);
    if (vpeek(p) != ']') {
      rc = TG_EABI_VALUE;
      goto out;
    }
    p->pos++;
    if (t->kind == TG_ABI_FIXED_ARRAY && n != t->count) {
      rc = TG_EABI_VALUE;
      goto out;
    }
  }
  p->nodes += n;
  if (p->nodes > TG_ABI_MAX_VALUES) {
    rc = TG_EABI_VALUE;
    goto out;
  }
  if (n) {
    tg_abi_value *items = tg__abi_alloc(p->arena, n * sizeof *items);
    if (items == NULL) {
      rc = TG_ETOOBIG;
      goto out;
    }
    memcpy(items, tmp, n * sizeof *items);
    out->items = items;
  }
  out->count = n;
out:
  free(tmp);
  p->list_end = saved;
  return rc;
}

static int parse_value(vparser *p, const tg_abi_type *t, tg_abi_value *out) {
  int rc;
  switch (t->kind) {
  case TG_ABI_BOOL: {
    size_t st = p->pos;
    while (p->pos < p->len && is_alpha((unsigned char)p->s[p->pos])) p->pos++;
    size_t n = p->pos - st;
    if (n == 4 && memcmp(p->s + st, "true", 4) == 0) out->word.b[31] = 1;
    else if (!(n == 5 && memcmp(p->s + st, "false", 5) == 0)) return TG_EABI_VALUE;
    return TG_OK;
  }
  case TG_ABI_UINT:
    return parse_uint(p, t->bits, &out->word);
  case TG_ABI_INT: {
    int neg = 0;
    if (vpeek(p) == '+' || vpeek(p) == '-') neg = p->s[p->pos++] == '-';
    tg_u256 mag;
    if ((rc = parse_uint(p, t->bits, &mag))) return rc;
    if (!neg) {
      if (u256_is_over_bits(&mag, t->bits - 1u)) return TG_EABI_VALUE;
      out->word = mag;
    } else {
      /* |v| <= 2^(bits-1) */
      tg_u256 lim;
      tg_u256_zero(&lim);
      unsigned b = t->bits - 1u;
      lim.b[31 - b / 8] = (uint8_t)(1u << (b % 8));
      if (tg_u256_cmp(&mag, &lim) > 0) return TG_EABI_VALUE;
      tg_u256_neg(&out->word, &mag);
    }
    return TG_OK;
  }
  case TG_ABI_ADDRESS:
  case TG_ABI_FUNCTION:
  case TG_ABI_FIXED_BYTES: {
    const char *d;
    size_t n;
    if ((rc = hex_str(p, &d, &n))) return rc;
    if (n != 2u * t->size) return TG_EABI_VALUE;
    if (t->kind == TG_ABI_ADDRESS) {
      tg_address a;
      if ((rc = tg_address_parse(&a, d, n))) return rc; /* EIP-55 enforced on mixed case */
      memcpy(out->word.b + 12, a.b, 20);
      return TG_OK;
    }
    size_t got;
    if (tg_hex_decode(out->word.b, 32, &got, d, n, 0)) return TG_EABI_VALUE;
    return TG_OK;
  }
  case TG_ABI_BYTES: {
    const char *d;
    size_t n;
    if ((rc = hex_str(p, &d, &n))) return rc;
    if (n & 1) return TG_EABI_VALUE;
    if (n / 2 > TG_ABI_MAX_LEN) return TG_EABI_VALUE;
    uint8_t *b = tg__abi_alloc(p->arena, n / 2 + 1);
    if (b == NULL) return TG_ETOOBIG;
    size_t got;
    if (tg_hex_decode(b, n / 2 + 1, &got, d, n, 0)) return TG_EABI_VALUE;
    out->bytes.ptr = b;
    out->bytes.len = got;
    return TG_OK;
  }
  case TG_ABI_STRING:
    return parse_string(p, out);
  case TG_ABI_ARRAY:
  case TG_ABI_FIXED_ARRAY:
  case TG_ABI_TUPLE:
    return parse_list(p, t, out);
  }
  return TG_EINTERNAL;
}

static int parse_one(tg_abi_tree *tree, const tg_abi_type *t, const char *arg, size_t len,
                     tg_abi_value *out, size_t *nodes) {
  vparser p = {arg, len, 0, tg__abi_tree_arena(tree), *nodes, 0};
  int rc = parse_value(&p, t, out);
  if (!rc && p.pos != len) rc = TG_EABI_VALUE;
  *nodes = p.nodes;
  return rc == TG_ETOOBIG ? TG_EABI_VALUE : rc;
}

int tg_abi_parse_arg(tg_abi_tree **out, const tg_abi_type *t, const char *arg, size_t len) {
  if (out == NULL) return TG_EINVAL;
  *out = NULL;
  if (t == NULL || (arg == NULL && len)) return TG_EINVAL;
  if (arg == NULL) arg = "";
  tg_abi_tree *tree = tg__abi_tree_new((size_t)256 << 20);
  size_t nodes = 0;
  int rc = parse_one(tree, t, arg, len, &tree->root, &nodes);
  if (rc) {
    tg_abi_tree_free(tree);
    return rc;
  }
  tree->type = t;
  *out = tree;
  return TG_OK;
}

int tg_abi_parse_args(tg_abi_tree **out, const tg_abi_type *t, const char *const *args,
                      size_t nargs) {
  if (out == NULL) return TG_EINVAL;
  *out = NULL;
  if (t == NULL || t->kind != TG_ABI_TUPLE || (args == NULL && nargs)) return TG_EINVAL;
  if (nargs != t->count) return TG_EABI_VALUE;
  tg_abi_tree *tree = tg__abi_tree_new((size_t)256 << 20);
  tg_abi_value *items = NULL;
  if (nargs) {
    items = tg__abi_alloc(tg__abi_tree_arena(tree), nargs * sizeof *items);
    if (items == NULL) {
      tg_abi_tree_free(tree);
      return TG_EABI_VALUE;
    }
  }
  size_t nodes = nargs;
  for (size_t i = 0; i < nargs; i++) {
    const char *a = args[i] ? args[i] : "";
    int rc = parse_one(tree, t->members[i], a, strlen(a), &items[i], &nodes);
    if (rc) {
      tg_abi_tree_free(tree);
      return rc;
    }
  }
  tree->root.items = items;
  tree->root.count = nargs;
  tree->type = t;
  *out = tree;
  return TG_OK;
}

/* ---- formatting like cast ---------------------------------------------------- */

/* cast's " [1.234e5]" note for |v| >= 10000: 4 significant digits, truncated, zeros trimmed. */
static int fmt_exp_note(tg_buf *out, const char *dec, size_t n, int neg) {
  if (n < 5) return TG_OK;
  char frac[4];
  size_t fn = 0;
  for (size_t i = 1; i < n && fn < 3; i++) frac[fn++] = dec[i];
  while (fn && frac[fn - 1] == '0') fn--;
  frac[fn] = 0;
  return tg_buf_printf(out, " [%s%c%s%se%zu]", neg ? "-" : "", dec[0], fn ? "." : "", frac, n - 1);
}

static int fmt_uint(tg_buf *out, const tg_u256 *v, int neg) {
  char dec[TG_U256_DEC_MAX];
  size_t n = tg_u256_to_dec(v, dec);
  int rc = tg_buf_printf(out, "%s%s", neg ? "-" : "", dec);
  if (rc) return rc;
  return fmt_exp_note(out, dec, n, neg);
}

/* Decodes one UTF-8 scalar at s (n bytes left); returns its length, or 0 with *bad = the
 * length of the maximal invalid subpart (at least 1), as Rust's from_utf8_lossy splits. */
static size_t utf8_next(const uint8_t *s, size_t n, uint32_t *cp, size_t *bad) {
  uint8_t c = s[0];
  *bad = 1;
  if (c < 0x80) {
    *cp = c;
    return 1;
  }
  size_t need;
  uint32_t v;
  uint8_t lo = 0x80, hi = 0xbf;
  if (c >= 0xc2 && c <= 0xdf) need = 1, v = c & 0x1f;
  else if (c >= 0xe0 && c <= 0xef) {
    need = 2, v = c & 0x0f;
    if (c == 0xe0) lo = 0xa0;
    if (c == 0xed) hi = 0x9f;
  } else if (c >= 0xf0 && c <= 0xf4) {
    need = 3, v = c & 0x07;
    if (c == 0xf0) lo = 0x90;
    if (c == 0xf4) hi = 0x8f;
  } else return 0;
  for (size_t i = 1; i <= need; i++) {
    if (i >= n) return 0;
    uint8_t b = s[i];
    uint8_t l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xbf;
    if (b < l || b > h) return 0;
    *bad = i + 1;
    v = (v << 6) | (b & 0x3f);
  }
  *cp = v;
  return need + 1;
}

/* Code points Rust's char::escape_debug writes as \u{..} inside a str's Debug form (cast's quoting). */
static int needs_unicode_escape(uint32_t c) {
  size_t lo = 0, hi = sizeof abi_escape_ranges / sizeof abi_escape_ranges[0];
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (c < abi_escape_ranges[mid][0]) hi = mid;
    else if (c > abi_escape_ranges[mid][1]) lo = mid + 1;
    else return 1;
  }
  return 0;
}

static int fmt_string(tg_buf *out, const uint8_t *s, size_t n) {
  int rc = tg_buf_append_byte(out, '"');
  size_t i = 0;
  while (!rc && i < n) {
    uint32_t cp;
    size_t bad, k = utf8_next(s + i, n - i, &cp, &bad);
    if (k == 0) {
      rc = tg_buf_append_str(out, "\xef\xbf\xbd");
      i += bad;
      continue;
    }
    switch (cp) {
    case '\t': rc = tg_buf_append_str(out, "\\t"); break;
    case '\r': rc = tg_buf_append_str(out, "\\r"); break;
    case '\n': rc = tg_buf_append_str(out, "\\n"); break;
    case '\\': rc = tg_buf_append_str(out, "\\\\"); break;
    case '"': rc = tg_buf_append_str(out, "\\\""); break;
    case 0: rc = tg_buf_append_str(out, "\\0"); break;
    default:
      if (needs_unicode_escape(cp)) rc = tg_buf_printf(out, "\\u{%x}", (unsigned)cp);
      else rc = tg_buf_append(out, s + i, k);
    }
    i += k;
  }
  return rc ? rc : tg_buf_append_byte(out, '"');
}

int tg_abi_format_value(tg_buf *out, const tg_abi_type *t, const tg_abi_value *v) {
  if (out == NULL || t == NULL || v == NULL) return TG_EINVAL;
  int rc;
  switch (t->kind) {
  case TG_ABI_UINT:
    return fmt_uint(out, &v->word, 0);
  case TG_ABI_INT: {
    if (v->word.b[0] & 0x80) {
      tg_u256 m;
      tg_u256_neg(&m, &v->word);
      return fmt_uint(out, &m, 1);
    }
    return fmt_uint(out, &v->word, 0);
  }
  case TG_ABI_ADDRESS: {
    tg_address a;
    char s[TG_ADDRESS_HEX_LEN];
    memcpy(a.b, v->word.b + 12, 20);
    tg_address_to_checksum(&a, s);
    return tg_buf_append_str(out, s);
  }
  case TG_ABI_BOOL:
    return tg_buf_append_str(out, v->word.b[31] ? "true" : "false");
  case TG_ABI_FIXED_BYTES:
  case TG_ABI_FUNCTION:
    return tg_hex_encode_buf(out, v->word.b, t->size, 1);
  case TG_ABI_BYTES:
    return tg_hex_encode_buf(out, v->bytes.ptr, v->bytes.len, 1);
  case TG_ABI_STRING:
    return fmt_string(out, v->bytes.ptr, v->bytes.len);
  case TG_ABI_ARRAY:
  case TG_ABI_FIXED_ARRAY:
  case TG_ABI_TUPLE: {
    int tup = t->kind == TG_ABI_TUPLE;
    if ((rc = tg_buf_append_byte(out, tup ? '(' : '['))) return rc;
    for (size_t i = 0; i < v->count; i++) {
      if (i && (rc = tg_buf_append(out, ", ", 2))) return rc;
      if ((rc = tg_abi_format_value(out, tup ? t->members[i] : t->elem, &v->items[i]))) return rc;
    }
    return tg_buf_append_byte(out, tup ? ')' : ']');
  }
  }
  return TG_EINTERNAL;
}

int tg_abi_format_lines(tg_buf *out, const tg_abi_type *tuple, const tg_abi_value *v) {
  if (out == NULL || tuple == NULL || v == NULL || tuple->kind != TG_ABI_TUPLE ||
      v->count != tuple->count)
    return TG_EINVAL;
  for (size_t i = 0; i < v->count; i++) {
    int rc = tg_abi_format_value(out, tuple->members[i], &v->items[i]);
    if (!rc) rc = tg_buf_append_byte(out, '\n');
    if (rc) return rc;
  }
  return TG_OK;
}
