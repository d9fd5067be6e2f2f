/* Tests of the /metrics exposition: charges by scheme, shard sums, the operations metrics and the text format. */
#include <string.h>

#include "http/metrics.h"
#include "http/ops.h"
#include "tg_test.h"
#include "tollgate/u256.h"

static uint64_t fake_pending(void *ctx) { return *(uint64_t *)ctx; }
static uint64_t fake_errors(void *ctx) { return *(uint64_t *)ctx + 40; }
static uint64_t fake_calls(void *ctx) { return *(uint64_t *)ctx + 1000; }
static uint64_t fake_block(void *ctx) { return *(uint64_t *)ctx + 12345678; }

/* Every sample line is `name{labels} value` with a metric name and a number. */
static int well_formed(const char *text, size_t len) {
  const char *p = text, *end = text + len;
  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    if (nl == NULL) return 0; /* the exposition ends with a newline */
    if (*p != '#' && nl > p) {
      const char *q = p;
      while (q < nl && ((*q >= 'a' && *q <= 'z') || *q == '_')) q++;
      if (q == p) return 0;
      if (*q == '{') {
        while (q < nl && *q != '}') q++;
        if (q == nl) return 0;
        q++;
      }
      if (q >= nl || *q != ' ') return 0;
      q++;
      if (q == nl) return 0;
      for (; q < nl; q++)
        if (!((*q >= '0' && *q <= '9') || *q == '.' || *q == 'e' || *q == '+' || *q == '-')) return 0;
    }
    p = nl + 1;
  }
  return 1;
}

static int has_line(const tg_buf *b, const char *line) {
  size_t n = strlen(line);
  const char *p = (const char *)b->data, *end = p + b->len;
  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t l = nl ? (size_t)(nl - p) : (size_t)(end - p);
    if (l == n && memcmp(p, line, n) == 0) return 1;
    p += l + 1;
  }
  return 0;
}

static void test_charges(void) {
  tg_metrics *m = tg_metrics_new(2);
  tg_u256 a, b, big;
  tg_u256_from_u64(&a, 1000);
  tg_u256_from_u64(&b, 500);
  CHECK_OK(tg_u256_parse_dec(&big, "100000000000000000000000", 24)); /* past 2^64: saturates */
  tg_metrics_charge(m, 0, TG_SCHEME_EXACT, &a);
  tg_metrics_charge(m, 1, TG_SCHEME_EXACT, &b);
  tg_metrics_charge(m, 1, TG_SCHEME_CHANNEL, &a);
  tg_metrics_charge(m, 0, TG_SCHEMES, &a); /* unknown scheme: ignored */
  tg_buf out;
  tg_buf_init(&out, 1 << 20);
  CHECK_OK(tg_metrics_render(m, &out));
  CHECK(has_line(&out, "tollgate_charges_total{scheme=\"exact\"} 2"));
  CHECK(has_line(&out, "tollgate_charges_total{scheme=\"channel\"} 1"));
  CHECK(has_line(&out, "tollgate_charges_total{scheme=\"pass\"} 0"));
  CHECK(has_line(&out, "tollgate_charged_base_units_total{scheme=\"exact\"} 1500"));
  CHECK(has_line(&out, "tollgate_charged_base_units_total{scheme=\"channel\"} 1000"));
  CHECK(has_line(&out, "# TYPE tollgate_charges_total counter"));
  CHECK(well_formed((const char *)out.data, out.len));
  tg_metrics_charge(m, 0, TG_SCHEME_PASS, &big);
  out.len = 0;
  CHECK_OK(tg_metrics_render(m, &out));
  CHECK(has_line(&out, "tollgate_charged_base_units_total{scheme=\"pass\"} 18446744073709551615"));
  tg_buf_cleanup(&out);
  tg_metrics_free(m);
}

static void test_ops_metrics(void) {
  tg_buf out;
  tg_buf_init(&out, 1 << 20);
  /* Without payments: only the facilitator counters (all zero). */
  CHECK_OK(tg_ops_metrics(NULL, &out));
  CHECK(has_line(&out, "tollgate_facilitator_requests_total{endpoint=\"settle\",result=\"ok\"} 0"));
  CHECK(has_line(&out, "tollgate_facilitator_requests_total{endpoint=\"verify\",result=\"refused\"} 0"));
  CHECK(strstr((const char *)out.data, "tollgate_txm_pending") == NULL);
  CHECK(strstr((const char *)out.data, "tollgate_store_") == NULL);
  CHECK(well_formed((const char *)out.data, out.len));
  /* The chain's figures come through the daemon's callbacks. */
  uint64_t pending = 3;
  tg_http_ops ops = {.ctx = &pending, .txm_pending = fake_pending, .rpc_errors = fake_errors};
  out.len = 0;
  CHECK_OK(tg_ops_metrics(&ops, &out));
  CHECK(strstr((const char *)out.data, "tollgate_rpc_calls_total") == NULL);
  CHECK(strstr((const char *)out.data, "tollgate_chain_last_block") == NULL);
  ops.rpc_calls = fake_calls;
  ops.last_block = fake_block;
  out.len = 0;
  CHECK_OK(tg_ops_metrics(&ops, &out));
  CHECK(has_line(&out, "tollgate_rpc_calls_total 1003"));
  CHECK(has_line(&out, "# TYPE tollgate_rpc_calls_total counter"));
  CHECK(has_line(&out, "tollgate_chain_last_block 12345681"));
  CHECK(has_line(&out, "# TYPE tollgate_chain_last_block gauge"));
  CHECK(has_line(&out, "tollgate_txm_pending 3"));
  CHECK(has_line(&out, "# TYPE tollgate_txm_pending gauge"));
  CHECK(has_line(&out, "tollgate_rpc_errors_total 43"));
  CHECK(has_line(&out, "# TYPE tollgate_rpc_errors_total counter"));
  CHECK(well_formed((const char *)out.data, out.len));
  /* A full buffer is an error, never a truncated exposition. */
  tg_buf small;
  tg_buf_init(&small, 64);
  CHECK(tg_ops_metrics(&ops, &small) != 0);
  tg_buf_cleanup(&small);
  tg_buf_cleanup(&out);
}

int main(void) {
  RUN(test_charges);
  RUN(test_ops_metrics);
  return tgt_done();
}
