/* RLP (Recursive Length Prefix): streaming encoding into a buffer or a Keccak context, strict zero-copy decoding. */
#ifndef TOLLGATE_RLP_H
#define TOLLGATE_RLP_H

#include <stddef.h>
#include <stdint.h>

#include "tollgate/keccak.h"
#include "tollgate/types.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Deepest list nesting the decoder accepts (the top-level item is depth 0). */
#define TG_RLP_MAX_DEPTH 64
/* Longest header: 1 prefix byte + up to 8 length bytes. */
#define TG_RLP_HEADER_MAX 9

/* ------------------------------------------------------------------ encoding */

/*
 * An encoding sink, in the style of trezor-crypto's RLP-into-Keccak: every
 * write goes to `buf` when it is set, is absorbed into `hash` when it is set,
 * and is always counted in `len`. With both NULL the sink only measures, so
 * one function can first size a list payload and then write it.
 *
 * Writes do not return errors: the first failure (the buffer's cap) is kept
 * in `err` and later writes are ignored; read it with tg_rlp_sink_status.
 */
typedef struct {
  tg_buf *buf;          /* appended to when non-NULL (not owned) */
  tg_keccak_ctx *hash;  /* absorbed into when non-NULL (not owned) */
  size_t len;           /* bytes written so far */
  int err;              /* first error, sticky */
} tg_rlp_sink;

void tg_rlp_sink_init(tg_rlp_sink *sink, tg_buf *buf, tg_keccak_ctx *hash);
/* 0, or the first error any write met (TG_ETOOBIG past the buffer's cap). */
TG_WARN_UNUSED_RESULT int tg_rlp_sink_status(const tg_rlp_sink *sink);

/* Bytes copied verbatim (an already-encoded item, a type byte). */
void tg_rlp_put_raw(tg_rlp_sink *sink, const void *data, size_t len);
/* A byte string item: a single byte < 0x80 is itself, otherwise a header and the bytes. */
void tg_rlp_put_bytes(tg_rlp_sink *sink, const void *data, size_t len);
/* An unsigned integer as its minimal big-endian bytes (zero is the empty string 0x80). */
void tg_rlp_put_u64(tg_rlp_sink *sink, uint64_t v);
void tg_rlp_put_u256(tg_rlp_sink *sink, const tg_u256 *v);
/* The header of a list whose encoded items take `payload_len` bytes; the items follow. */
void tg_rlp_put_list_header(tg_rlp_sink *sink, size_t payload_len);

/* Encoded sizes, for sizing a list payload without a measuring pass. */
size_t tg_rlp_header_len(size_t payload_len);
size_t tg_rlp_bytes_len(const void *data, size_t len);
size_t tg_rlp_u64_len(uint64_t v);
size_t tg_rlp_u256_len(const tg_u256 *v);

/*
 * Lists of unknown size written straight into a buffer: tg_rlp_list_begin
 * notes where the list starts, the items are appended (with any sink on the
 * same buffer), and tg_rlp_list_end inserts the header in front of them.
 */
void tg_rlp_list_begin(const tg_buf *buf, size_t *mark);
TG_WARN_UNUSED_RESULT int tg_rlp_list_end(tg_buf *buf, size_t mark);

/* ------------------------------------------------------------------ decoding */

/*
 * One decoded item: a view into the caller's input, nothing is copied or
 * owned. `payload` is the string's bytes or the list's encoded items; `raw`
 * is the whole item including its header.
 */
typedef struct {
  tg_bytes payload;
  tg_bytes raw;
  int is_list;
} tg_rlp_item;

/*
 * Decodes one item that spans all of [data, data+len) and validates it to
 * the bottom, nesting at most TG_RLP_MAX_DEPTH lists deep. Strict: rejects
 * empty input (TG_ETRUNCATED), lengths past the input (TG_ETRUNCATED), bytes
 * after the item (TG_ETRAILING), a single byte < 0x80 written with a header,
 * a short length written in long form, a long length with a leading zero
 * byte (TG_ERLP_NONCANONICAL), lengths that do not fit size_t (TG_ERLP) and
 * deeper nesting (TG_ERLP_DEPTH). `out` is zeroed on failure.
 */
TG_WARN_UNUSED_RESULT int tg_rlp_decode(tg_rlp_item *out, const uint8_t *data, size_t len);

/*
 * Reads the one item at the start of [*data, *data+*len) (header checks as
 * above, contents of a list not descended into) and advances past it.
 */
TG_WARN_UNUSED_RESULT int tg_rlp_next(tg_rlp_item *out, const uint8_t **data, size_t *len);

/* Walks the items of a list, one level deep. */
typedef struct {
  const uint8_t *p;
  size_t left;
} tg_rlp_iter;

/* TG_ERLP_TYPE when `list` is a string. */
TG_WARN_UNUSED_RESULT int tg_rlp_iter_init(tg_rlp_iter *it, const tg_rlp_item *list);
/* Non-zero while items remain. */
int tg_rlp_iter_more(const tg_rlp_iter *it);
/* The next item (TG_ENOTFOUND past the end; header errors as tg_rlp_next). */
TG_WARN_UNUSED_RESULT int tg_rlp_iter_next(tg_rlp_iter *it, tg_rlp_item *out);
/* How many items a list holds (checks their headers). */
TG_WARN_UNUSED_RESULT int tg_rlp_list_count(const tg_rlp_item *list, size_t *count);

/*
 * Typed readers of a string item. Integers must be minimal (no leading zero
 * byte: TG_ELEADING_ZERO), fit their type (TG_EOVERFLOW), and be strings
 * (TG_ERLP_TYPE for a list).
 */
TG_WARN_UNUSED_RESULT int tg_rlp_get_u64(const tg_rlp_item *item, uint64_t *out);
TG_WARN_UNUSED_RESULT int tg_rlp_get_u256(const tg_rlp_item *item, tg_u256 *out);
/* A string of exactly `n` bytes (TG_ERLP otherwise), copied to out. */
TG_WARN_UNUSED_RESULT int tg_rlp_get_fixed(const tg_rlp_item *item, uint8_t *out, size_t n);

#ifdef __cplusplus
}
#endif
#endif
