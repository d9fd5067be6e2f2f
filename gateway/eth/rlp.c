/* RLP: encoding through a sink (buffer, Keccak, or both) and a strict decoder over untrusted bytes. */
#include <string.h>

#include "tollgate/rlp.h"
#include "tollgate/u256.h"

/* ------------------------------------------------------------------ encoding */

void tg_rlp_sink_init(tg_rlp_sink *sink, tg_buf *buf, tg_keccak_ctx *hash) {
  sink->buf = buf;
  sink->hash = hash;
  sink->len = 0;
  sink->err = TG_OK;
}

int tg_rlp_sink_status(const tg_rlp_sink *sink) { return sink->err; }

void tg_rlp_put_raw(tg_rlp_sink *sink, const void *data, size_t len) {
  if (sink->err || len == 0) return;
  if (sink->buf) {
    int rc = tg_buf_append(sink->buf, data, len);
    if (rc) {
      sink->err = rc;
      return;
    }
  }
  if (sink->hash) tg_keccak256_update(sink->hash, data, len);
  sink->len += len;
}

/* Writes the header for a payload of `n` bytes with base 0x80 (string) or 0xc0 (list). */
static size_t make_header(uint8_t out[TG_RLP_HEADER_MAX], size_t n, uint8_t base) {
  if (n < 56) {
    out[0] = (uint8_t)(base + n);
    return 1;
  }
  uint8_t tmp[8];
  size_t k = 0;
  for (size_t v = n; v; v >>= 8) tmp[k++] = (uint8_t)v;
  out[0] = (uint8_t)(base + 55 + k);
  for (size_t i = 0; i < k; i++) out[1 + i] = tmp[k - 1 - i];
  return 1 + k;
}

size_t tg_rlp_header_len(size_t payload_len) {
  uint8_t h[TG_RLP_HEADER_MAX];
  return make_header(h, payload_len, 0x80);
}

void tg_rlp_put_bytes(tg_rlp_sink *sink, const void *data, size_t len) {
  const uint8_t *p = data;
  if (len == 1 && p[0] < 0x80) {
    tg_rlp_put_raw(sink, p, 1);
    return;
  }
  uint8_t h[TG_RLP_HEADER_MAX];
  size_t hl = make_header(h, len, 0x80);
  tg_rlp_put_raw(sink, h, hl);
  tg_rlp_put_raw(sink, p, len);
}

size_t tg_rlp_bytes_len(const void *data, size_t len) {
  const uint8_t *p = data;
  if (len == 1 && p[0] < 0x80) return 1;
  return tg_rlp_header_len(len) + len;
}

static size_t u64_be(uint8_t out[8], uint64_t v) {
  size_t k = 0;
  uint8_t tmp[8];
  for (; v; v >>= 8) tmp[k++] = (uint8_t)v;
  for (size_t i = 0; i < k; i++) out[i] = tmp[k - 1 - i];
  return k;
}

void tg_rlp_put_u64(tg_rlp_sink *sink, uint64_t v) {
  uint8_t be[8];
  size_t k = u64_be(be, v);
  tg_rlp_put_bytes(sink, be, k);
}

size_t tg_rlp_u64_len(uint64_t v) {
  uint8_t be[8];
  size_t k = u64_be(be, v);
  return tg_rlp_bytes_len(be, k);
}

void tg_rlp_put_u256(tg_rlp_sink *sink, const tg_u256 *v) {
  size_t k;
  const uint8_t *p = tg_u256_min_be(v, &k);
  tg_rlp_put_bytes(sink, p, k);
}

size_t tg_rlp_u256_len(const tg_u256 *v) {
  size_t k;
  const uint8_t *p = tg_u256_min_be(v, &k);
  return tg_rlp_bytes_len(p, k);
}

void tg_rlp_put_list_header(tg_rlp_sink *sink, size_t payload_len) {
  uint8_t h[TG_RLP_HEADER_MAX];
  size_t hl = make_header(h, payload_len, 0xc0);
  tg_rlp_put_raw(sink, h, hl);
}

void tg_rlp_list_begin(const tg_buf *buf, size_t *mark) { *mark = buf->len; }

int tg_rlp_list_end(tg_buf *buf, size_t mark) {
  if (mark > buf->len) return TG_EINVAL;
  size_t n = buf->len - mark;
  uint8_t h[TG_RLP_HEADER_MAX];
  size_t hl = make_header(h, n, 0xc0);
  int rc = tg_buf_reserve(buf, hl);
  if (rc) return rc;
  memmove(buf->data + mark + hl, buf->data + mark, n);
  memcpy(buf->data + mark, h, hl);
  buf->len += hl;
  buf->data[buf->len] = 0;
  return TG_OK;
}

/* ------------------------------------------------------------------ decoding */

/* Reads a big-endian length of `k` bytes (1..8, first byte non-zero checked by the caller). */
static int read_len(const uint8_t *p, size_t k, size_t *out) {
  if (k > sizeof(size_t)) return TG_ERLP;
  size_t v = 0;
  for (size_t i = 0; i < k; i++) v = v << 8 | p[i];
  *out = v;
  return TG_OK;
}

int tg_rlp_next(tg_rlp_item *out, const uint8_t **data, size_t *len) {
  memset(out, 0, sizeof *out);
  const uint8_t *p = *data;
  size_t avail = *len;
  if (avail == 0) return TG_ETRUNCATED;
  uint8_t b = p[0];
  size_t hl, n;
  int is_list = b >= 0xc0;
  if (b < 0x80) {
    hl = 0;
    n = 1;
  } else if (b <= 0xb7 || (b >= 0xc0 && b <= 0xf7)) {
    hl = 1;
    n = (size_t)(b - (is_list ? 0xc0 : 0x80));
    if (n > avail - 1) return TG_ETRUNCATED;
    /* A single byte below 0x80 is its own encoding. */
    if (!is_list && n == 1 && p[1] < 0x80) return TG_ERLP_NONCANONICAL;
  } else {
    size_t k = (size_t)(b - (is_list ? 0xf7 : 0xb7));
    if (k > avail - 1) return TG_ETRUNCATED;
    if (p[1] == 0) return TG_ERLP_NONCANONICAL; /* leading zero in the length */
    int rc = read_len(p + 1, k, &n);
    if (rc) return rc;
    if (n < 56) return TG_ERLP_NONCANONICAL; /* short length in long form */
    hl = 1 + k;
    if (n > avail - hl) return TG_ETRUNCATED;
  }
  out->payload = TG_BYTES(p + hl, n);
  out->raw = TG_BYTES(p, hl + n);
  out->is_list = is_list;
  *data = p + hl + n;
  *len = avail - hl - n;
  return TG_OK;
}

static int validate(const tg_rlp_item *item, int depth) {
  if (!item->is_list) return TG_OK;
  if (depth >= TG_RLP_MAX_DEPTH) return TG_ERLP_DEPTH;
  const uint8_t *p = item->payload.ptr;
  size_t left = item->payload.len;
  while (left) {
    tg_rlp_item sub;
    int rc = tg_rlp_next(&sub, &p, &left);
    if (rc) return rc;
    rc = validate(&sub, depth + 1);
    if (rc) return rc;
  }
  return TG_OK;
}

int tg_rlp_decode(tg_rlp_item *out, const uint8_t *data, size_t len) {
  const uint8_t *p = data;
  size_t left = len;
  int rc = tg_rlp_next(out, &p, &left);
  if (!rc && left) rc = TG_ETRAILING;
  if (!rc) rc = validate(out, 0);
  if (rc) memset(out, 0, sizeof *out);
  return rc;
}

int tg_rlp_iter_init(tg_rlp_iter *it, const tg_rlp_item *list) {
  it->p = NULL;
  it->left = 0;
  if (!list->is_list) return TG_ERLP_TYPE;
  it->p = list->payload.ptr;
  it->left = list->payload.len;
  return TG_OK;
}

int tg_rlp_iter_more(const tg_rlp_iter *it) { return it->left != 0; }

int tg_rlp_iter_next(tg_rlp_iter *it, tg_rlp_item *out) {
  if (it->left == 0) {
    memset(out, 0, sizeof *out);
    return TG_ENOTFOUND;
  }
  return tg_rlp_next(out, &it->p, &it->left);
}

int tg_rlp_list_count(const tg_rlp_item *list, size_t *count) {
  *count = 0;
  tg_rlp_iter it;
  int rc = tg_rlp_iter_init(&it, list);
  if (rc) return rc;
  size_t n = 0;
  while (tg_rlp_iter_more(&it)) {
    tg_rlp_item sub;
    rc = tg_rlp_iter_next(&it, &sub);
    if (rc) return rc;
    n++;
  }
  *count = n;
  return TG_OK;
}

static int get_int(const tg_rlp_item *item, size_t max) {
  if (item->is_list) return TG_ERLP_TYPE;
  if (item->payload.len && item->payload.ptr[0] == 0) return TG_ELEADING_ZERO;
  if (item->payload.len > max) return TG_EOVERFLOW;
  return TG_OK;
}

int tg_rlp_get_u64(const tg_rlp_item *item, uint64_t *out) {
  *out = 0;
  int rc = get_int(item, 8);
  if (rc) return rc;
  uint64_t v = 0;
  for (size_t i = 0; i < item->payload.len; i++) v = v << 8 | item->payload.ptr[i];
  *out = v;
  return TG_OK;
}

int tg_rlp_get_u256(const tg_rlp_item *item, tg_u256 *out) {
  memset(out, 0, sizeof *out);
  int rc = get_int(item, 32);
  if (rc) return rc;
  return tg_u256_from_be(out, item->payload.ptr, item->payload.len);
}

int tg_rlp_get_fixed(const tg_rlp_item *item, uint8_t *out, size_t n) {
  memset(out, 0, n);
  if (item->is_list) return TG_ERLP_TYPE;
  if (item->payload.len != n) return TG_ERLP;
  memcpy(out, item->payload.ptr, n);
  return TG_OK;
}
