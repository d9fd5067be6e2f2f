/* tollgate value types: fixed-size Ethereum byte values and length-carrying buffers. */
#ifndef TOLLGATE_TYPES_H
#define TOLLGATE_TYPES_H

#include <stddef.h>
#include <stdint.h>

#include "tollgate/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A 20-byte account address. */
typedef struct {
  uint8_t b[20];
} tg_address;

/* A 32-byte hash (Keccak-256 digest, storage key, channel id, ...). */
typedef struct {
  uint8_t b[32];
} tg_hash;

/* A 256-bit unsigned integer as 32 big-endian bytes (the EVM word layout). */
typedef struct {
  uint8_t b[32];
} tg_u256;

/* A 65-byte recoverable signature r || s || v with v in {27, 28}. */
typedef struct {
  uint8_t b[65];
} tg_sig;

/* A read-only byte string: pointer and length. The pointee is not owned. */
typedef struct {
  const uint8_t *ptr;
  size_t len;
} tg_bytes;

/* A read-only character string that need not be NUL-terminated. */
typedef struct {
  const char *ptr;
  size_t len;
} tg_str;

#define TG_BYTES(p, n) ((tg_bytes){(const uint8_t *)(p), (n)})
#define TG_STR_LIT(s) ((tg_str){(s), sizeof(s) - 1})

/*
 * A growable byte buffer with a hard cap. Owned storage: tg_buf_init sets it
 * up empty, tg_buf_cleanup frees it (and is safe on a zeroed or cleaned buf).
 * Appending past `max` fails with TG_ETOOBIG and leaves the buffer unchanged.
 * `data` is always NUL-terminated one past `len` once anything was appended,
 * so a buffer of text can be used as a C string.
 */
typedef struct {
  uint8_t *data;
  size_t len;
  size_t cap;
  size_t max;
} tg_buf;

#define TG_BUF_DEFAULT_MAX ((size_t)64 << 20)

void tg_buf_init(tg_buf *buf, size_t max);
void tg_buf_cleanup(tg_buf *buf);
/* Empties the buffer but keeps its storage. */
void tg_buf_reset(tg_buf *buf);
TG_WARN_UNUSED_RESULT int tg_buf_reserve(tg_buf *buf, size_t extra);
TG_WARN_UNUSED_RESULT int tg_buf_append(tg_buf *buf, const void *data, size_t len);
TG_WARN_UNUSED_RESULT int tg_buf_append_byte(tg_buf *buf, uint8_t byte);
TG_WARN_UNUSED_RESULT int tg_buf_append_str(tg_buf *buf, const char *s);
/* printf-style append; fails with TG_ETOOBIG past the cap. */
TG_WARN_UNUSED_RESULT int tg_buf_printf(tg_buf *buf, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Hands the storage to the caller (free() it) and leaves the buffer empty. */
uint8_t *tg_buf_steal(tg_buf *buf, size_t *len);

#ifdef __cplusplus
}
#endif
#endif
