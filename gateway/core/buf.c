/* tg_buf: a growable byte buffer with a hard size cap. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate/types.h"

void tg_buf_init(tg_buf *buf, size_t max) {
  buf->data = NULL;
  buf->len = 0;
  buf->cap = 0;
  buf->max = max ? max : TG_BUF_DEFAULT_MAX;
}

void tg_buf_cleanup(tg_buf *buf) {
  if (buf == NULL) return;
  free(buf->data);
  buf->data = NULL;
  buf->len = 0;
  buf->cap = 0;
}

void tg_buf_reset(tg_buf *buf) {
  buf->len = 0;
  if (buf->data) buf->data[0] = 0;
}

int tg_buf_reserve(tg_buf *buf, size_t extra) {
  if (buf->max == 0) buf->max = TG_BUF_DEFAULT_MAX;
  if (extra > buf->max || buf->len > buf->max - extra) return TG_ETOOBIG;
  size_t need = buf->len + extra + 1; /* room for the terminating NUL */
  if (need <= buf->cap) return TG_OK;
  size_t ncap = buf->cap ? buf->cap : 64;
  while (ncap < need) ncap *= 2;
  if (ncap > buf->max + 1) ncap = buf->max + 1;
  uint8_t *p = realloc(buf->data, ncap);
  if (p == NULL) abort(); /* out of memory is not recoverable here */
  buf->data = p;
  buf->cap = ncap;
  return TG_OK;
}

int tg_buf_append(tg_buf *buf, const void *data, size_t len) {
  int rc = tg_buf_reserve(buf, len);
  if (rc) return rc;
  if (len) memcpy(buf->data + buf->len, data, len);
  buf->len += len;
  buf->data[buf->len] = 0;
  return TG_OK;
}

int tg_buf_append_byte(tg_buf *buf, uint8_t byte) {
  return tg_buf_append(buf, &byte, 1);
}

int tg_buf_append_str(tg_buf *buf, const char *s) {
  return tg_buf_append(buf, s, strlen(s));
}

int tg_buf_printf(tg_buf *buf, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0) return TG_EINVAL;
  int rc = tg_buf_reserve(buf, (size_t)n);
  if (rc) return rc;
  va_start(ap, fmt);
  vsnprintf((char *)buf->data + buf->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  buf->len += (size_t)n;
  return TG_OK;
}

uint8_t *tg_buf_steal(tg_buf *buf, size_t *len) {
  uint8_t *p = buf->data;
  if (len) *len = buf->len;
  buf->data = NULL;
  buf->len = 0;
  buf->cap = 0;
  return p;
}
