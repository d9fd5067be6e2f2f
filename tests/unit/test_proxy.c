/* tollgated over real HTTP: proxying (JSON, SSE), limits, upstream errors, payment hooks, signals. */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "tg_proc.h"
#include "tg_test.h"

/*
 * Starts build/tools/tg_upstream and build/tollgated as processes on free
 * loopback ports. tollgated runs with TG_TEST_PAYHOOKS=<file>: its payment
 * double admits calls whose PAYMENT-SIGNATURE is "ok", refuses others with
 * 402, and writes one JSON line per completed call to that file, which the
 * tests read back to check what would have been charged.
 */

static char dir[256], conf[300], paylog[300], tollgated[512], upstream_bin[512];
static int up_port, gw_port, dead_port;
static tgt_proc *up, *gw;

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void write_conf(const char *path, int extra_route) {
  FILE *f = fopen(path, "w");
  if (f == NULL) return;
  fprintf(f,
          "listen 127.0.0.1:%d\nworkers 2\nmax_header_bytes 8k\nmax_body_bytes 64k\n"
          "shutdown_timeout 10s\naccess_log %s/access.log\n"
          "upstream up http://127.0.0.1:%d timeout=1s\n"
          "upstream dead http://127.0.0.1:%d connect_timeout=1s\n"
          "asset address=0x036CbD53842c5426634e7929541eC2318f3dCF7e name=USDC version=2 decimals=6\n"
          "schemes exact channel\nchain_id 31337\nrpc_url http://127.0.0.1:8545\n"
          "pay_to 0x70997970C51812dc3A010C7d01b50e0d17dc79C8\n"
          "keystore /nonexistent.json password_env=TG_NO_PASSWORD\nstore sqlite %s/tg.db\n"
          "price chat token model=* input_per_mtok=1 output_per_mtok=2 max_per_call=0.01\n"
          "price flat call 0.001\n"
          "route models GET /v1/models upstream=up\n"
          "route fast GET /fast upstream=up\n"
          "route bytes GET /bytes upstream=up\n"
          "route echo * /echo upstream=up\n"
          "route chat POST /v1/chat/completions upstream=up\n"
          "route paid POST /paid/v1/chat/completions upstream=up price=chat strip_prefix=/paid\n"
          "route paidfast GET /paid/fast upstream=up price=flat strip_prefix=/paid\n"
          "route paidmissing GET /paid/missing upstream=up price=flat strip_prefix=/paid\n"
          "route dead GET /dead upstream=dead\n",
          gw_port, dir, up_port, dead_port, dir);
  if (extra_route) fprintf(f, "route status GET /status/* upstream=up\n");
  fclose(f);
}

static tgt_proc *start_gateway(void) {
  const char *argv[] = {tollgated, "-c", conf, NULL};
  tgt_proc *p = tgt_proc_spawn(argv);
  if (p && tgt_wait_tcp(p, gw_port, 5000) != 0) {
    tgt_proc_free(p);
    return NULL;
  }
  return p;
}

static void setup(void) {
  const char *build = getenv("TG_BUILD");
  snprintf(tollgated, sizeof tollgated, "%s/tollgated", build ? build : "build");
  snprintf(upstream_bin, sizeof upstream_bin, "%s/tools/tg_upstream", build ? build : "build");
  snprintf(dir, sizeof dir, "/tmp/tg_test_proxy.%d", (int)getpid());
  mkdir(dir, 0700);
  snprintf(conf, sizeof conf, "%s/tollgated.conf", dir);
  snprintf(paylog, sizeof paylog, "%s/pay.log", dir);
  up_port = tgt_free_port();
  do gw_port = tgt_free_port(); while (gw_port == up_port);
  do dead_port = tgt_free_port(); while (dead_port == up_port || dead_port == gw_port);
  write_conf(conf, 0);
  char port[16];
  snprintf(port, sizeof port, "%d", up_port);
  const char *uargv[] = {upstream_bin, port, NULL};
  up = tgt_proc_spawn(uargv);
  if (up == NULL || tgt_wait_tcp(up, up_port, 5000) != 0) return;
  setenv("TG_TEST_PAYHOOKS", paylog, 1);
  /*
   * Under AddressSanitizer freed memory waits in a quarantine (256 MiB by default), which
   * would show up as resident memory in test_backpressure: keep it small for the children.
   */
  const char *asan = getenv("ASAN_OPTIONS");
  char opts[1024];
  snprintf(opts, sizeof opts, "%s%squarantine_size_mb=1", asan ? asan : "", asan && *asan ? ":" : "");
  setenv("ASAN_OPTIONS", opts, 1);
  gw = start_gateway();
}

/* ---------------------------------------------------------------- an HTTP client */

typedef struct {
  long status;
  char body[1 << 20];
  size_t len;
  char headers[16384];
  size_t hlen;
  double t_first;      /* when the first body byte arrived */
  size_t abort_after;  /* abort the transfer once this many body bytes arrived (0: never) */
} resp;

static size_t on_data(char *p, size_t sz, size_t n, void *arg) {
  resp *r = arg;
  size_t len = sz * n;
  if (r->len == 0 && len) r->t_first = now_s();
  size_t room = sizeof r->body - 1 - r->len;
  size_t k = len < room ? len : room;
  memcpy(r->body + r->len, p, k);
  r->len += k;
  r->body[r->len] = 0;
  if (r->abort_after && r->len >= r->abort_after) return 0;
  return len;
}

static size_t on_hdr(char *p, size_t sz, size_t n, void *arg) {
  resp *r = arg;
  size_t len = sz * n;
  size_t room = sizeof r->headers - 1 - r->hlen;
  size_t k = len < room ? len : room;
  memcpy(r->headers + r->hlen, p, k);
  r->hlen += k;
  r->headers[r->hlen] = 0;
  return len;
}

/* One request; `hdrs` is a NULL-terminated list of "Name: value". Reuses `h` when given. */
static CURLcode http(CURL *h, const char *method, int port, const char *path, const char *const *hdrs,
                     const char *body, size_t body_len, resp *r) {
  int own = h == NULL;
  if (own) h = curl_easy_init();
  else curl_easy_reset(h);
  char url[2048];
  snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
  r->len = 0;
  r->hlen = 0;
  r->body[0] = 0;
  r->headers[0] = 0;
  r->status = 0;
  r->t_first = 0;
  struct curl_slist *sl = NULL;
  for (size_t i = 0; hdrs && hdrs[i]; i++) sl = curl_slist_append(sl, hdrs[i]);
  sl = curl_slist_append(sl, "Expect:");
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
  if (body) {
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
  }
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, sl);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_data);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_hdr);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
  curl_easy_setopt(h, CURLOPT_TIMEOUT, 20L);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_PATH_AS_IS, 1L);
  CURLcode rc = curl_easy_perform(h);
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
  curl_slist_free_all(sl);
  if (own) curl_easy_cleanup(h);
  return rc;
}

static resp R, R2; /* large: kept static */

static int has_header(const resp *r, const char *line) { return strstr(r->headers, line) != NULL; }

/* Reads the payment double's log: the line for request id `id` (NULL: the last), waiting a bit. */
static json_t *pay_line(const char *id) {
  for (int tries = 0; tries < 50; tries++) {
    size_t n;
    char *text = tgt_read_file(paylog, &n);
    json_t *found = NULL;
    if (text) {
      char *save = text, *line;
      while ((line = strsep(&save, "\n")) != NULL) {
        if (!*line) continue;
        json_t *j = json_loads(line, 0, NULL);
        if (j && (id == NULL || strcmp(json_string_value(json_object_get(j, "request_id")), id) == 0)) {
          json_decref(found);
          found = j;
        } else {
          json_decref(j);
        }
      }
      free(text);
    }
    if (found) return found;
    usleep(100000);
  }
  return NULL;
}

static void request_id_of(const resp *r, char out[64]) {
  out[0] = 0;
  const char *p = strstr(r->headers, "X-Request-Id: ");
  if (p == NULL) return;
  p += 14;
  size_t n = strcspn(p, "\r\n");
  if (n >= 64) n = 63;
  memcpy(out, p, n);
  out[n] = 0;
}

static int ready(void) {
  if (gw == NULL) {
    tgt_skip("tollgated or tg_upstream did not start");
    return 0;
  }
  return 1;
}

/* ---------------------------------------------------------------- tests */

static void test_json_byte_exact(void) {
  if (!ready()) return;
  const char *paths[] = {"/fast", "/v1/models", "/bytes?n=300000", "/bytes?n=1"};
  for (size_t i = 0; i < sizeof paths / sizeof *paths; i++) {
    CHECK_INT(http(NULL, "GET", up_port, paths[i], NULL, NULL, 0, &R2), CURLE_OK);
    CHECK_INT(http(NULL, "GET", gw_port, paths[i], NULL, NULL, 0, &R), CURLE_OK);
    CHECK_INT(R.status, 200);
    CHECK_INT(R.len, R2.len);
    CHECKF(R.len == R2.len && memcmp(R.body, R2.body, R.len) == 0, "%s differs", paths[i]);
    CHECK(has_header(&R, "X-Request-Id: "));
  }
  /* A non-streamed chat completion arrives whole, with its usage. */
  const char *body = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"one two three\"}],\"max_tokens\":4}";
  CHECK_INT(http(NULL, "POST", gw_port, "/v1/chat/completions", NULL, body, strlen(body), &R), CURLE_OK);
  CHECK_INT(R.status, 200);
  CHECK(strstr(R.body, "\"content\":\"w0 w1 w2 w3\"") != NULL);
  CHECK(strstr(R.body, "\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,\"total_tokens\":7}") != NULL);
}

static void test_sse_chunk_by_chunk(void) {
  if (!ready()) return;
  const char *hdrs[] = {"X-Test-Chunk-Delay-Ms: 300", "Content-Type: application/json", NULL};
  const char *body = "{\"model\":\"m\",\"stream\":true,\"messages\":[],\"max_tokens\":5}";
  double t0 = now_s();
  CHECK_INT(http(NULL, "POST", gw_port, "/v1/chat/completions", hdrs, body, strlen(body), &R), CURLE_OK);
  double total = now_s() - t0, first = R.t_first - t0;
  CHECK_INT(R.status, 200);
  CHECK(has_header(&R, "Content-Type: text/event-stream"));
  CHECK(has_header(&R, "Transfer-Encoding: chunked")); /* the upstream's length is not reused */
  /* 5 chunks 300 ms apart: the first event must come long before the last. */
  CHECKF(first < 0.25, "first event after %.3fs", first);
  CHECKF(total > 1.2, "whole stream in %.3fs", total);
  int events = 0;
  for (const char *p = R.body; (p = strstr(p, "data: ")) != NULL; p += 6) events++;
  CHECK_INT(events, 7); /* 5 words, the stop chunk, [DONE]: no usage chunk on an unpriced route */
  CHECK(strstr(R.body, "\"usage\"") == NULL);
  size_t n = strlen("data: [DONE]\n\n");
  CHECK(R.len >= n && memcmp(R.body + R.len - n, "data: [DONE]\n\n", n) == 0);
}

static void test_limits(void) {
  if (!ready()) return;
  static char big[12000];
  memcpy(big, "X-Big: ", 7);
  memset(big + 7, 'a', sizeof big - 8);
  big[sizeof big - 1] = 0;
  const char *hdrs[] = {big, NULL};
  CHECK_INT(http(NULL, "GET", gw_port, "/fast", hdrs, NULL, 0, &R), CURLE_OK);
  CHECK_INT(R.status, 431);
  CHECK(strstr(R.body, "\"error\":\"request headers exceed their size limit\"") != NULL);
  static char body[70000];
  memset(body, 'b', sizeof body);
  CHECK_INT(http(NULL, "POST", gw_port, "/echo", NULL, body, sizeof body, &R), CURLE_OK);
  CHECK_INT(R.status, 413);
  CHECK(strstr(R.body, "\"error\":\"request body exceeds its size limit\"") != NULL);
  /* Just under the limit passes and arrives whole. */
  CHECK_INT(http(NULL, "POST", gw_port, "/echo", NULL, body, 60000, &R), CURLE_OK);
  CHECK_INT(R.status, 200);
  json_t *j = json_loads(R.body, 0, NULL);
  CHECK(j && strlen(json_string_value(json_object_get(j, "body"))) == 60000);
  json_decref(j);
}

static void test_upstream_errors(void) {
  if (!ready()) return;
  const char *slow[] = {"X-Test-Delay-Ms: 3000", NULL};
  const char *body = "{\"model\":\"m\",\"messages\":[]}";
  CHECK_INT(http(NULL, "POST", gw_port, "/v1/chat/completions", slow, body, strlen(body), &R), CURLE_OK);
  CHECK_INT(R.status, 504);
  CHECK(strstr(R.body, "\"error\":\"upstream timed out\"") != NULL);
  CHECK(has_header(&R, "Content-Type: application/json"));
  CHECK_INT(http(NULL, "GET", gw_port, "/dead", NULL, NULL, 0, &R), CURLE_OK);
  CHECK_INT(R.status, 502);
  CHECK(strstr(R.body, "\"error\":\"upstream could not be reached\"") != NULL);
  /* An upstream's own error answer is passed through as it is. */
  const char *e429[] = {"X-Test-Status: 429", NULL};
  CHECK_INT(http(NULL, "POST", gw_port, "/v1/chat/completions", e429, body, strlen(body), &R), CURLE_OK);
  CHECK_INT(R.status, 429);
  CHECK(strstr(R.body, "simulated 429") != NULL);
  CHECK_INT(http(NULL, "GET", gw_port, "/nowhere", NULL, NULL, 0, &R), CURLE_OK);
  CHECK_INT(R.status, 404);
  CHECK(strstr(R.body, "no route matches the request") != NULL);
  CHECK_INT(http(NULL, "GET", gw_port, "/v1/../echo", NULL, NULL, 0, &R), CURLE_OK);
  CHECK_INT(R.status, 400);
}

static void test_keepalive_and_headers(void) {
  if (!ready()) return;
  CURL *h = curl_easy_init();
  long conns = -1;
  CHECK_INT(http(h, "GET", gw_port, "/fast", NULL, NULL, 0, &R), CURLE_OK);
  curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &conns);
  CHECK_INT(conns, 1);
  for (int i = 0; i < 3; i++) {
    CHECK_INT(http(h, "GET", gw_port, "/fast", NULL, NULL, 0, &R), CURLE_OK);
    curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &conns);
    CHECK_INT(conns, 0); /* the same connection again */
    CHECK_INT(R.status, 200);
  }
  curl_easy_cleanup(h);
  /* Hop-by-hop headers stay on this hop; X-Forwarded-For grows by the client's address. */
  const char *hdrs[] = {"Connection: keep-alive, X-Secret", "X-Secret: 1", "Keep-Alive: timeout=5",
                        "X-Forwarded-For: 203.0.113.9", "X-Custom: kept", "Upgrade: h2c", NULL};
  CHECK_INT(http(NULL, "PUT", gw_port, "/echo?q=1", hdrs, "payload", 7, &R), CURLE_OK);
  CHECK_INT(R.status, 200);
  json_t *j = json_loads(R.body, 0, NULL);
  json_t *hh = json_object_get(j, "headers");
  CHECK_STR(json_string_value(json_object_get(j, "method")), "PUT");
  CHECK_STR(json_string_value(json_object_get(j, "uri")), "/echo?q=1");
  CHECK_STR(json_string_value(json_object_get(j, "body")), "payload");
  CHECK_STR(json_string_value(json_object_get(hh, "x-custom")), "kept");
  CHECK_STR(json_string_value(json_object_get(hh, "x-forwarded-for")), "203.0.113.9, 127.0.0.1");
  CHECK(json_object_get(hh, "x-secret") == NULL);
  CHECK(json_object_get(hh, "keep-alive") == NULL);
  CHECK(json_object_get(hh, "upgrade") == NULL);
  CHECK(json_object_get(hh, "x-request-id") != NULL);
  json_decref(j);
}

static void test_healthz_metrics(void) {
  if (!ready()) return;
  CHECK_INT(http(NULL, "GET", gw_port, "/healthz", NULL, NULL, 0, &R), CURLE_OK);
  CHECK_INT(R.status, 200);
  CHECK_STR(R.body, "{\"status\":\"ok\"}\n");
  CHECK_INT(http(NULL, "GET", gw_port, "/metrics", NULL, NULL, 0, &R), CURLE_OK);
  CHECK_INT(R.status, 200);
  CHECK(has_header(&R, "Content-Type: text/plain; version=0.0.4"));
  CHECK(strstr(R.body, "# TYPE tollgate_http_requests_total counter\n") != NULL);
  CHECK(strstr(R.body, "tollgate_http_requests_total{route=\"fast\",class=\"2xx\"} ") != NULL);
  CHECK(strstr(R.body, "tollgate_http_request_duration_seconds_bucket{route=\"fast\",le=\"+Inf\"} ") != NULL);
  CHECK(strstr(R.body, "tollgate_upstream_errors_total{route=\"dead\",kind=\"connect\"} 1\n") != NULL);
  CHECK(strstr(R.body, "tollgate_upstream_errors_total{route=\"chat\",kind=\"timeout\"} 1\n") != NULL);
  CHECK(strstr(R.body, "tollgate_http_inflight 0\n") != NULL);
  CHECK_INT(http(NULL, "GET", gw_port, "/admin/channels", NULL, NULL, 0, &R), CURLE_OK);
  CHECK_INT(R.status, 401);
}

static void test_payhooks(void) {
  if (!ready()) return;
  char id[64];
  /* Unpaid: the refusal is sent as the payment layer wrote it; nothing goes upstream. */
  const char *boom[] = {"X-Test-Status: 500", NULL};
  CHECK_INT(http(NULL, "GET", gw_port, "/paid/fast", boom, NULL, 0, &R), CURLE_OK);
  CHECK_INT(R.status, 402);
  CHECK(has_header(&R, "PAYMENT-REQUIRED: test"));
  CHECK_STR(R.body, "{\"x402Version\":2,\"error\":\"payment required (test double)\"}");
  request_id_of(&R, id);
  /* Paid per call: proxied, charged once the answer is known, with the receipt's header. */
  const char *ok[] = {"PAYMENT-SIGNATURE: ok", NULL};
  CHECK_INT(http(NULL, "GET", gw_port, "/paid/fast", ok, NULL, 0, &R), CURLE_OK);
  CHECK_INT(R.status, 200);
  CHECK(has_header(&R, "PAYMENT-RESPONSE: test-receipt"));
  CHECK(strncmp(R.body, "{\"id\":\"fast\"", 12) == 0);
  request_id_of(&R, id);
  json_t *j = pay_line(id);
  CHECK(j && json_is_true(json_object_get(j, "ok")) && json_integer_value(json_object_get(j, "status")) == 200);
  CHECK(j && json_is_false(json_object_get(j, "streamed")));
  json_decref(j);
  /* JSON chat: charged by the answer's usage. */
  const char *okj[] = {"PAYMENT-SIGNATURE: ok", "Content-Type: application/json", NULL};
  const char *body = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"a b c d e\"}],\"max_tokens\":3}";
  CHECK_INT(http(NULL, "POST", gw_port, "/paid/v1/chat/completions", okj, body, strlen(body), &R), CURLE_OK);
  CHECK_INT(R.status, 200);
  CHECK(has_header(&R, "PAYMENT-RESPONSE: test-receipt"));
  request_id_of(&R, id);
  j = pay_line(id);
  CHECK(j && json_is_true(json_object_get(j, "ok")) && json_is_true(json_object_get(j, "usage_known")));
  CHECK(j && json_integer_value(json_object_get(j, "input_tokens")) == 5);
  CHECK(j && json_integer_value(json_object_get(j, "output_tokens")) == 3);
  json_decref(j);
  /* SSE chat: include_usage is injected, the stream is charged by its last event, the trailer ends it. */
  const char *sbody = "{\"model\":\"m\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"x y\"}],\"max_tokens\":4}";
  CHECK_INT(http(NULL, "POST", gw_port, "/paid/v1/chat/completions", okj, sbody, strlen(sbody), &R), CURLE_OK);
  CHECK_INT(R.status, 200);
  CHECK(strstr(R.body, "\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":4,\"total_tokens\":6}") != NULL);
  const char *tr = "data: [DONE]\n\n: tollgate charged=6\n\n";
  CHECKF(R.len >= strlen(tr) && strcmp(R.body + R.len - strlen(tr), tr) == 0, "stream ends: %s",
         R.len > 60 ? R.body + R.len - 60 : R.body);
  request_id_of(&R, id);
  j = pay_line(id);
  CHECK(j && json_is_true(json_object_get(j, "ok")) && json_is_true(json_object_get(j, "streamed")));
  CHECK(j && json_integer_value(json_object_get(j, "input_tokens")) == 2);
  CHECK(j && json_integer_value(json_object_get(j, "output_tokens")) == 4);
  json_decref(j);
  /* An upstream 500 is passed on and reported with ok=0 (charged nothing). */
  const char *ok500[] = {"PAYMENT-SIGNATURE: ok", "X-Test-Status: 500", NULL};
  CHECK_INT(http(NULL, "POST", gw_port, "/paid/v1/chat/completions", ok500, body, strlen(body), &R), CURLE_OK);
  CHECK_INT(R.status, 500);
  CHECK(!has_header(&R, "PAYMENT-RESPONSE"));
  request_id_of(&R, id);
  j = pay_line(id);
  CHECK(j && json_is_false(json_object_get(j, "ok")) && json_integer_value(json_object_get(j, "status")) == 500);
  json_decref(j);
  /* An upstream 404 likewise. */
  CHECK_INT(http(NULL, "GET", gw_port, "/paid/missing", ok, NULL, 0, &R), CURLE_OK);
  CHECK_INT(R.status, 404);
  request_id_of(&R, id);
  j = pay_line(id);
  CHECK(j && json_is_false(json_object_get(j, "ok")));
  json_decref(j);
}

/* The client hangs up in the middle of a paid stream: the upstream call stops, nothing is charged. */
static void test_client_disconnect(void) {
  if (!ready()) return;
  const char *hdrs[] = {"PAYMENT-SIGNATURE: ok", "X-Test-Chunk-Delay-Ms: 200", NULL};
  const char *body = "{\"model\":\"gone\",\"stream\":true,\"messages\":[],\"max_tokens\":40}";
  R.abort_after = 1;
  double t0 = now_s();
  CURLcode rc = http(NULL, "POST", gw_port, "/paid/v1/chat/completions", hdrs, body, strlen(body), &R);
  R.abort_after = 0;
  CHECK_INT(rc, CURLE_WRITE_ERROR);
  char id[64];
  request_id_of(&R, id);
  json_t *j = pay_line(id);
  double waited = now_s() - t0;
  CHECKF(j != NULL, "no outcome for %s", id);
  CHECK(j && json_is_false(json_object_get(j, "ok")));
  CHECK(j && json_is_true(json_object_get(j, "streamed")));
  /* 40 chunks at 200 ms would take 8 s: the outcome came as soon as the client left. */
  CHECKF(waited < 3.0, "outcome after %.2fs", waited);
  json_decref(j);
}

/* CPU time (user + system) of a process, seconds. */
static double cpu_s(pid_t pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  size_t n;
  char *text = tgt_read_file(path, &n);
  double s = -1;
  const char *p = text ? strrchr(text, ')') : NULL;
  unsigned long ut, st;
  if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) == 2)
    s = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
  free(text);
  return s;
}

/*
 * Pooled upstream connections stay registered with the event loop between calls: when the
 * upstream goes away (every pooled connection gets EOF) the gateway must not spin on them,
 * and once the upstream is back calls work again on fresh connections.
 */
static void test_upstream_restart(void) {
  if (!ready()) return;
  for (int i = 0; i < 8; i++) { /* new client connections: both workers pool a connection */
    CHECK_INT(http(NULL, "GET", gw_port, "/fast", NULL, NULL, 0, &R), CURLE_OK);
    CHECK_INT(R.status, 200);
  }
  tgt_proc_kill9(up);
  tgt_proc_free(up);
  up = NULL;
  usleep(200000);
  double c0 = cpu_s(tgt_proc_pid(gw));
  usleep(1000000);
  double c1 = cpu_s(tgt_proc_pid(gw));
  CHECKF(c0 >= 0 && c1 - c0 < 0.2, "tollgated used %.2fs of CPU in 1s with its upstream gone", c1 - c0);
  CHECK_INT(http(NULL, "GET", gw_port, "/fast", NULL, NULL, 0, &R), CURLE_OK);
  CHECK_INT(R.status, 502);
  char port[16];
  snprintf(port, sizeof port, "%d", up_port);
  const char *uargv[] = {upstream_bin, port, NULL};
  up = tgt_proc_spawn(uargv);
  CHECK(up != NULL && tgt_wait_tcp(up, up_port, 5000) == 0);
  for (int i = 0; i < 8; i++) {
    CHECK_INT(http(NULL, "GET", gw_port, "/fast", NULL, NULL, 0, &R), CURLE_OK);
    CHECK_INT(R.status, 200);
  }
  CHECK(tgt_proc_alive(gw));
}

static void test_check_config(void) {
  if (!ready()) return;
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "%s --check-config %s >%s/check.out 2>&1", tollgated, conf, dir);
  int st = system(cmd);
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  char path[512];
  snprintf(path, sizeof path, "%s/check.out", dir);
  size_t n;
  char *out = tgt_read_file(path, &n);
  CHECK_STR(out, "OK\n");
  free(out);
  char bad[512];
  snprintf(bad, sizeof bad, "%s/bad.conf", dir);
  FILE *f = fopen(bad, "w");
  if (f) {
    fputs("listen 127.0.0.1:1\nroute r GET /a upstream=nowhere\n", f);
    fclose(f);
  }
  snprintf(cmd, sizeof cmd, "%s --check-config %s >%s/check.out 2>&1", tollgated, bad, dir);
  st = system(cmd);
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 1);
  out = tgt_read_file(path, &n);
  CHECKF(out && strstr(out, "bad.conf:2: route: key \"upstream\": no upstream named \"nowhere\""), "%s",
         out ? out : "");
  free(out);
  /* A second daemon on the running one's port is refused (SO_REUSEPORT would share it). */
  snprintf(cmd, sizeof cmd, "%s -c %s >%s/check.out 2>&1", tollgated, conf, dir);
  st = system(cmd);
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 1);
  out = tgt_read_file(path, &n);
  CHECKF(out && strstr(out, "Address already in use"), "%s", out ? out : "");
  free(out);
}

static void test_sighup_reload(void) {
  if (!ready()) return;
  CHECK_INT(http(NULL, "GET", gw_port, "/status/204", NULL, NULL, 0, &R), CURLE_OK);
  CHECK_INT(R.status, 404); /* no route yet */
  write_conf(conf, 1);
  kill(tgt_proc_pid(gw), SIGHUP);
  int st = 0;
  for (int i = 0; i < 40; i++) {
    usleep(50000);
    if (http(NULL, "GET", gw_port, "/status/204", NULL, NULL, 0, &R) == CURLE_OK && R.status == 204) {
      st = 204;
      break;
    }
  }
  CHECK_INT(st, 204);
  /* A broken file is refused and the running configuration stays. */
  FILE *f = fopen(conf, "a");
  if (f) {
    fputs("route broken GET /x upstream=missing\n", f);
    fclose(f);
  }
  kill(tgt_proc_pid(gw), SIGHUP);
  usleep(300000);
  CHECK_INT(http(NULL, "GET", gw_port, "/status/204", NULL, NULL, 0, &R), CURLE_OK);
  CHECK_INT(R.status, 204);
  CHECK(tgt_proc_alive(gw));
  write_conf(conf, 1);
}

static long rss_kb(pid_t pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  size_t n;
  char *text = tgt_read_file(path, &n);
  long kb = -1;
  const char *p = text ? strstr(text, "VmRSS:") : NULL;
  if (p) kb = strtol(p + 6, NULL, 10);
  free(text);
  return kb;
}

typedef struct {
  CURLcode rc;
  long status;
  size_t got;
  unsigned char sum;
} big_arg;

static size_t big_data(char *p, size_t sz, size_t n, void *arg) {
  big_arg *a = arg;
  for (size_t i = 0; i < sz * n; i++) a->sum = (unsigned char)(a->sum * 31 + (unsigned char)p[i]);
  a->got += sz * n;
  return sz * n;
}

static void *big_slow(void *arg) {
  big_arg *a = arg;
  CURL *h = curl_easy_init();
  char url[128];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/bytes?n=%d", gw_port, 24 << 20);
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, big_data);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, a);
  curl_easy_setopt(h, CURLOPT_MAX_RECV_SPEED_LARGE, (curl_off_t)(12 << 20));
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  a->rc = curl_easy_perform(h);
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &a->status);
  curl_easy_cleanup(h);
  return NULL;
}

/* A slow client of a large unpriced answer: streamed through with backpressure, not buffered. */
static void test_backpressure(void) {
  if (!ready()) return;
  big_arg a = {0}, direct = {0};
  long before = rss_kb(tgt_proc_pid(gw)), peak = before;
  pthread_t t;
  pthread_create(&t, NULL, big_slow, &a);
  for (int i = 0; i < 40; i++) {
    usleep(50000);
    long kb = rss_kb(tgt_proc_pid(gw));
    if (kb > peak) peak = kb;
  }
  pthread_join(t, NULL);
  CHECK_INT(a.rc, CURLE_OK);
  CHECK_INT(a.status, 200);
  CHECK_INT(a.got, 24 << 20);
  /* The same bytes as straight from the upstream. */
  CURL *h = curl_easy_init();
  char url[128];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/bytes?n=%d", up_port, 24 << 20);
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, big_data);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &direct);
  curl_easy_perform(h);
  curl_easy_cleanup(h);
  CHECK_INT(a.sum, direct.sum);
  /* 24 MiB went through; the gateway held a small part of it at any time. */
  CHECKF(peak - before < 8 * 1024, "RSS grew from %ld to %ld kB", before, peak);
}

typedef struct {
  resp *r;
  CURLcode rc;
} slow_arg;

static void *slow_call(void *arg) {
  slow_arg *a = arg;
  const char *hdrs[] = {"PAYMENT-SIGNATURE: ok", "X-Test-Chunk-Delay-Ms: 100", NULL};
  const char *body = "{\"model\":\"m\",\"stream\":true,\"messages\":[],\"max_tokens\":8}";
  a->rc = http(NULL, "POST", gw_port, "/paid/v1/chat/completions", hdrs, body, strlen(body), a->r);
  return NULL;
}

/* SIGTERM: no new connections, the call in flight finishes and is charged, then a clean exit. */
static void test_graceful_shutdown(void) {
  if (!ready()) return;
  slow_arg a = {.r = &R2};
  pthread_t t;
  pthread_create(&t, NULL, slow_call, &a);
  usleep(300000);
  kill(tgt_proc_pid(gw), SIGTERM);
  usleep(200000);
  CHECK_INT(http(NULL, "GET", gw_port, "/fast", NULL, NULL, 0, &R), CURLE_COULDNT_CONNECT);
  pthread_join(t, NULL);
  CHECK_INT(a.rc, CURLE_OK);
  CHECK_INT(R2.status, 200);
  CHECK(strstr(R2.body, ": tollgate charged=8\n\n") != NULL);
  char id[64];
  request_id_of(&R2, id);
  json_t *j = pay_line(id);
  CHECK(j && json_is_true(json_object_get(j, "ok")));
  json_decref(j);
  int st = -1;
  for (int i = 0; i < 50 && tgt_proc_alive(gw); i++) usleep(100000);
  CHECK(!tgt_proc_alive(gw));
  st = tgt_proc_stop(gw, 100);
  CHECKF(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status 0x%x", st);
  tgt_proc_free(gw);
  gw = NULL;
}

int main(void) {
  curl_global_init(CURL_GLOBAL_DEFAULT);
  setup();
  RUN(test_json_byte_exact);
  RUN(test_sse_chunk_by_chunk);
  RUN(test_limits);
  RUN(test_upstream_errors);
  RUN(test_keepalive_and_headers);
  RUN(test_healthz_metrics);
  RUN(test_payhooks);
  RUN(test_backpressure);
  RUN(test_client_disconnect);
  RUN(test_upstream_restart);
  RUN(test_check_config);
  RUN(test_sighup_reload);
  RUN(test_graceful_shutdown);
  tgt_proc_free(gw);
  tgt_proc_free(up);
  curl_global_cleanup();
  int rc = tgt_done();
  if (rc == 0 && dir[0]) { /* keep the logs of a failed run */
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
  }
  return rc;
}
