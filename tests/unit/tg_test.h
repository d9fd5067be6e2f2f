/* A small test harness: named tests, CHECK macros, PASS/FAIL lines for tests/run.sh. */
#ifndef TG_TEST_H
#define TG_TEST_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "tollgate/error.h"

void tgt_fail_at(const char *file, int line, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* Runs one named test; prints "PASS name" or "FAIL name". */
void tgt_run(const char *name, void (*fn)(void));
/* Marks the running test as skipped, with a reason. */
void tgt_skip(const char *reason);
/* Prints the counts and returns the process exit status. */
int tgt_done(void);
/* Failures so far in the running test. */
int tgt_current_failures(void);

/* The conformance vectors folder (TG_VECTORS, default ../shared/vectors). */
const char *tgt_vectors(void);
/* Reads a whole file (NUL-terminated); NULL when it cannot. Caller frees. */
char *tgt_read_file(const char *path, size_t *len);
/* Loads JSON from vectors/<rel>; NULL (and a failure) when it cannot. */
json_t *tgt_load_json(const char *rel);
/* Decodes hex (with or without 0x) into a malloc'd buffer; NULL on bad hex. */
uint8_t *tgt_unhex(const char *hex, size_t *len);

#define RUN(fn) tgt_run(#fn, fn)

#define CHECK(cond)                                         \
  do {                                                      \
    if (!(cond)) tgt_fail_at(__FILE__, __LINE__, "%s", #cond); \
  } while (0)

#define CHECKF(cond, ...)                                     \
  do {                                                        \
    if (!(cond)) tgt_fail_at(__FILE__, __LINE__, __VA_ARGS__); \
  } while (0)

#define CHECK_OK(expr)                                                          \
  do {                                                                          \
    int tgt_rc_ = (expr);                                                       \
    if (tgt_rc_ != 0)                                                           \
      tgt_fail_at(__FILE__, __LINE__, "%s -> %s", #expr, tg_err_name(tgt_rc_)); \
  } while (0)

#define CHECK_ERR(expr, want)                                                       \
  do {                                                                              \
    int tgt_rc_ = (expr);                                                           \
    if (tgt_rc_ != (want))                                                          \
      tgt_fail_at(__FILE__, __LINE__, "%s -> %s, want %s", #expr, tg_err_name(tgt_rc_), \
                  tg_err_name(want));                                               \
  } while (0)

#define CHECK_FAILS(expr)                                                  \
  do {                                                                     \
    int tgt_rc_ = (expr);                                                  \
    if (tgt_rc_ >= 0) tgt_fail_at(__FILE__, __LINE__, "%s succeeded", #expr); \
  } while (0)

#define CHECK_INT(a, b)                                                             \
  do {                                                                              \
    long long tgt_a_ = (long long)(a), tgt_b_ = (long long)(b);                     \
    if (tgt_a_ != tgt_b_)                                                           \
      tgt_fail_at(__FILE__, __LINE__, "%s == %lld, want %lld", #a, tgt_a_, tgt_b_); \
  } while (0)

#define CHECK_STR(a, b)                                                                 \
  do {                                                                                  \
    const char *tgt_a_ = (a), *tgt_b_ = (b);                                            \
    if (tgt_a_ == NULL || tgt_b_ == NULL || strcmp(tgt_a_, tgt_b_) != 0)                \
      tgt_fail_at(__FILE__, __LINE__, "%s == \"%s\", want \"%s\"", #a,                  \
                  tgt_a_ ? tgt_a_ : "(null)", tgt_b_ ? tgt_b_ : "(null)");              \
  } while (0)

#define CHECK_MEM(a, b, n)                                                      \
  do {                                                                          \
    if (memcmp((a), (b), (n)) != 0)                                             \
      tgt_fail_at(__FILE__, __LINE__, "%s differs from %s (%zu bytes)", #a, #b, \
                  (size_t)(n));                                                 \
  } while (0)

#endif
