/* The test harness behind tg_test.h. */
#include <stdarg.h>
#include <stdlib.h>

#include "tg_test.h"
#include "tollgate/hex.h"

#include <zlib.h>

static int n_pass, n_fail, n_skip;
static int cur_fail, cur_skip;
static const char *cur_name = "?";
static char skip_reason[256];

#define MAX_MESSAGES_PER_TEST 12

void tgt_fail_at(const char *file, int line, const char *fmt, ...) {
  cur_fail++;
  if (cur_fail > MAX_MESSAGES_PER_TEST) return;
  fprintf(stdout, "    %s:%d: [%s] ", file, line, cur_name);
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stdout, fmt, ap);
  va_end(ap);
  fputc('\n', stdout);
  if (cur_fail == MAX_MESSAGES_PER_TEST) fprintf(stdout, "    (further failures not shown)\n");
}

int tgt_current_failures(void) {
  return cur_fail;
}

void tgt_skip(const char *reason) {
  cur_skip = 1;
  snprintf(skip_reason, sizeof skip_reason, "%s", reason);
}

void tgt_run(const char *name, void (*fn)(void)) {
  const char *only = getenv("TG_TEST");
  if (only && *only && !strstr(name, only)) return;
  cur_name = name;
  cur_fail = 0;
  cur_skip = 0;
  fn();
  if (cur_fail) {
    n_fail++;
    printf("FAIL %s (%d failed checks)\n", name, cur_fail);
  } else if (cur_skip) {
    n_skip++;
    printf("SKIP %s: %s\n", name, skip_reason);
  } else {
    n_pass++;
    printf("PASS %s\n", name);
  }
  fflush(stdout);
}

int tgt_done(void) {
  printf("%d passed, %d failed, %d skipped\n", n_pass, n_fail, n_skip);
  return n_fail ? 1 : 0;
}

const char *tgt_vectors(void) {
  const char *v = getenv("TG_VECTORS");
  return v && *v ? v : "../shared/vectors";
}

/* Reads plain or gzip'd files alike (zlib passes plain files through). */
char *tgt_read_file(const char *path, size_t *len) {
  gzFile f = gzopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 1 << 16, n = 0;
  char *buf = malloc(cap);
  for (;;) {
    if (n + 1 >= cap) {
      cap *= 2;
      buf = realloc(buf, cap);
    }
    int got = gzread(f, buf + n, (unsigned)(cap - n - 1));
    if (got <= 0) break;
    n += (size_t)got;
  }
  gzclose(f);
  buf[n] = 0;
  if (len) *len = n;
  return buf;
}

json_t *tgt_load_json(const char *rel) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", tgt_vectors(), rel);
  size_t len;
  char *text = tgt_read_file(path, &len);
  if (!text) {
    tgt_fail_at(__FILE__, __LINE__, "cannot read %s", path);
    return NULL;
  }
  json_error_t err;
  json_t *j = json_loadb(text, len, JSON_DECODE_ANY, &err);
  free(text);
  if (!j) tgt_fail_at(__FILE__, __LINE__, "cannot parse %s: %s (line %d)", path, err.text, err.line);
  return j;
}

uint8_t *tgt_unhex(const char *hex, size_t *len) {
  size_t n = strlen(hex);
  uint8_t *out = malloc(n / 2 + 1);
  if (tg_hex_decode(out, n / 2 + 1, len, hex, n, TG_HEX_PREFIX_OPTIONAL) != 0) {
    free(out);
    return NULL;
  }
  return out;
}
