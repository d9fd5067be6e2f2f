/* Benchmark: paid calls through tollgated on loopback, all in one run: (a) nginx, (b) tollgated unpaid, (c) a fresh channel voucher per call, (d) one ceiling signed ahead and reused, (e) exact payments/s beside anvil's rate for the same number of pre-signed transferWithAuthorization transactions. */
#include <curl/curl.h>
#include <dirent.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "settle_fixture.h"
#include "tollgate/eip712.h"
#include "tollgate/hex.h"
#include "tollgate/keystore.h"
#include "tollgate/tx.h"
#include "tollgate/x402.h"

/*
 * Everything is real: anvil (1 s blocks), the contracts deployed by the
 * library, a channel opened on-chain with the payer's deposit, tg_upstream,
 * tollgated with a SQLite store (synchronous=FULL), and wrk driving each row
 * with a Lua script that sends pre-signed PAYMENT-SIGNATURE headers (each
 * fresh header used once). Signing happens before the clock starts: the
 * figures are the gateway's, not the load generator's.
 *
 *   ./build/bench/bench_paid              # 64 connections, 10 s per row
 *   CONNS=32 SECS=5 ./build/bench/bench_paid
 *   ROWS=e ./build/bench/bench_paid       # only the rows named (a..e), with their warm-ups
 *   EXACT_CONNS=64 ROWS=e ./build/bench/bench_paid   # row (e) with 64 connections (default 32)
 */

#define PRICE 1u            /* base units per call: "price flat call 0.000001" */
#define EXACT_PER_S 6000u  /* authorizations signed ahead per second of row (e): more than it takes */

static char dir[160], build[256], wrk[64] = "wrk", nginx_bin[64] = "/usr/sbin/nginx";
static unsigned conns = 64, secs = 10;
static const char *rows = "abcde";

static int want(char r) { return strchr(rows, r) != NULL; }

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, int rc) {
  fprintf(stderr, "bench_paid: %s: %s\n", what, rc ? tg_strerror(rc) : "failed");
  exit(1);
}

static void write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  if (!f || fputs(text, f) < 0 || fclose(f) != 0) die(path, TG_EIO);
}

/* ---- PAYMENT-SIGNATURE headers ---------------------------------------------------- */

typedef struct {
  uint64_t chain_id;
  tg_address asset, pay_to;
  tg_hash channel_domain, token_domain;
} terms;

static char *voucher_header(const terms *t, const tg_channel_config *cfg, const tg_hash *id,
                            uint64_t ceiling, const tg_seckey *signer) {
  tg_x402_payment p;
  memset(&p, 0, sizeof p);
  p.accepted.scheme = TG_X402_CHANNEL;
  p.accepted.chain_id = t->chain_id;
  tg_u256_from_u64(&p.accepted.amount, PRICE);
  p.accepted.asset = t->asset;
  p.accepted.pay_to = t->pay_to;
  p.accepted.max_timeout_seconds = 60;
  p.u.channel.type = TG_X402_CHANNEL_VOUCHER;
  p.u.channel.config = *cfg;
  p.u.channel.channel_id = *id;
  tg_u256_from_u64(&p.u.channel.max_claimable, ceiling);
  tg_sig s;
  int rc = tg_channel_voucher_sign(&s, signer, &t->channel_domain, id, &p.u.channel.max_claimable);
  if (rc) die("voucher signature", rc);
  memcpy(p.u.channel.voucher_signature.b, s.b, 65);
  p.u.channel.voucher_signature.len = 65;
  tg_buf b;
  tg_buf_init(&b, 0);
  if ((rc = tg_x402_payment_encode(&b, &p))) die("voucher header", rc);
  return (char *)tg_buf_steal(&b, NULL);
}

/* A fresh EIP-3009 authorization of PRICE to pay_to (random nonce), signed by `signer`. */
static void exact_auth(const terms *t, const tg_seckey *signer, tg_x402_exact *a) {
  memset(a, 0, sizeof *a);
  int rc = tg_seckey_address(&a->from, signer);
  a->to = t->pay_to;
  tg_u256_from_u64(&a->value, PRICE);
  a->valid_after = 0;
  a->valid_before = (uint64_t)time(NULL) + 3600;
  randombytes_buf(a->nonce.b, 32);
  tg_eip3009_authorization ea = {a->from, a->to, a->value, {{0}}, {{0}}, a->nonce};
  tg_u256_from_u64(&ea.valid_before, a->valid_before);
  tg_sig s;
  if (!rc) rc = tg_eip3009_transfer_sign(&s, signer, &t->token_domain, &ea);
  if (rc) die("authorization signature", rc);
  memcpy(a->signature.b, s.b, 65);
  a->signature.len = 65;
}

static char *exact_header(const terms *t, const tg_x402_exact *a) {
  tg_x402_payment p;
  memset(&p, 0, sizeof p);
  p.accepted.scheme = TG_X402_EXACT;
  p.accepted.chain_id = t->chain_id;
  tg_u256_from_u64(&p.accepted.amount, PRICE);
  p.accepted.asset = t->asset;
  p.accepted.pay_to = t->pay_to;
  p.accepted.max_timeout_seconds = 60;
  p.u.exact = *a;
  tg_buf b;
  tg_buf_init(&b, 0);
  int rc = tg_x402_payment_encode(&b, &p);
  if (rc) die("exact header", rc);
  return (char *)tg_buf_steal(&b, NULL);
}

static void write_lines(const char *path, char **lines, size_t n) {
  FILE *f = fopen(path, "w");
  if (!f) die(path, TG_EIO);
  for (size_t i = 0; i < n; i++) fprintf(f, "%s\n", lines[i]);
  if (fclose(f) != 0) die(path, TG_EIO);
}

/* ---- wrk ---------------------------------------------------------------------------------- */

/*
 * The Lua script: each wrk thread takes every nth line of the header file; every request
 * sends the next one, and a thread that used all of its lines stops (rows with one header
 * per call never reuse one). With `reuse`, the lines are sent round robin forever.
 */
static const char lua[] =
    "local counter = 0\n"
    "function setup(thread)\n"
    "  thread:set('tid', counter)\n"
    "  counter = counter + 1\n"
    "end\n"
    "function init(args)\n"
    "  local file, nthreads = args[1], tonumber(args[2])\n"
    "  reuse = args[3] == 'reuse'\n"
    "  hdrs = {}\n"
    "  local i = 0\n"
    "  for line in io.lines(file) do\n"
    "    if reuse or i % nthreads == tid then hdrs[#hdrs + 1] = line end\n"
    "    i = i + 1\n"
    "  end\n"
    "  n = 0\n"
    "end\n"
    "function request()\n"
    "  n = n + 1\n"
    "  if n > #hdrs then\n"
    "    if reuse then n = 1 else wrk.thread:stop() n = #hdrs end\n"
    "  end\n"
    "  return wrk.format('POST', nil, {['PAYMENT-SIGNATURE'] = hdrs[n],\n"
    "                    ['Content-Type'] = 'application/json'}, '{}')\n"
    "end\n"
    "function response(status, headers, body)\n"
    "  if status >= 300 and not shown then\n"
    "    shown = true\n"
    "    io.stderr:write('first non-2xx answer: ' .. status .. ' ' .. string.sub(body, 1, 300) .. '\\n')\n"
    "  end\n"
    "end\n";

typedef struct {
  double rps, p50_ms, p99_ms;
  unsigned long requests, non2xx;
  double cpu_us;   /* the proxy's CPU time (user + system, all threads) per request */
  int has_store;   /* tollgated's store figures over the row, from /metrics */
  double per_commit, commit_ms, stmt_ms, wait_ms; /* submissions per commit; mean COMMIT and
                                                  * statement time per commit; mean wait */
  double writer_us; /* the store writer thread's CPU time per submission */
} row;

static double to_ms(const char *v) {
  double x = atof(v);
  size_t n = strlen(v);
  if (n >= 2 && strcmp(v + n - 2, "us") == 0) return x / 1000.0;
  if (n >= 2 && strcmp(v + n - 2, "ms") == 0) return x;
  if (n >= 1 && v[n - 1] == 's') return x * 1000.0;
  return x;
}

/* Runs wrk; `headers` NULL: plain GET. */
static row run_wrk(const char *url, unsigned c, unsigned s, const char *headers, int reuse) {
  char cmd[1024], lua_path[300];
  snprintf(lua_path, sizeof lua_path, "%s/pay.lua", dir);
  unsigned threads = c < 2 ? 1 : 2;
  if (headers)
    snprintf(cmd, sizeof cmd, "%s -t%u -c%u -d%us --latency -s %s %s -- %s %u %s 2>&1", wrk, threads,
             c, s, lua_path, url, headers, threads, reuse ? "reuse" : "once");
  else
    snprintf(cmd, sizeof cmd, "%s -t%u -c%u -d%us --latency %s 2>&1", wrk, threads, c, s, url);
  FILE *p = popen(cmd, "r");
  if (!p) die("wrk", TG_EIO);
  row r = {0};
  char line[512];
  while (fgets(line, sizeof line, p)) {
    char a[64], b[64];
    if (strncmp(line, "first non-2xx", 13) == 0) fprintf(stderr, "bench_paid: %s: %s", url, line);
    if (sscanf(line, " 50%% %63s", a) == 1) r.p50_ms = to_ms(a);
    else if (sscanf(line, " 99%% %63s", a) == 1) r.p99_ms = to_ms(a);
    else if (sscanf(line, "Requests/sec: %63s", a) == 1) r.rps = atof(a);
    else if (sscanf(line, " %lu requests in %63s", &r.requests, b) == 2) {
    } else if (sscanf(line, " Non-2xx or 3xx responses: %lu", &r.non2xx) == 1) {
    }
  }
  pclose(p);
  return r;
}

static void print_row(const char *name, const row *r) {
  printf("%-48s %10.0f %9.3f %9.3f %10lu %7lu %8.1f", name, r->rps, r->p50_ms, r->p99_ms, r->requests,
         r->non2xx, r->cpu_us);
  if (r->has_store)
    printf("   %5.1f %6.3f %6.3f %6.3f %6.1f", r->per_commit, r->stmt_ms, r->commit_ms, r->wait_ms,
           r->writer_us);
  printf("\n");
}

/* ---- load-independent figures: CPU seconds of a process, counters from /metrics ------------ */

/* utime + stime of a process, in seconds (/proc/<pid>/stat fields 14 and 15). */
static double cpu_s(pid_t pid) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *q = strrchr(buf, ')'); /* the command name may hold spaces */
  if (!q) return 0;
  unsigned long ut = 0, st = 0;
  if (sscanf(q + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2) return 0;
  return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

typedef struct {
  double store_commits, rpc_calls, charged;
  double subs, stmt_s, wait_s, commit_s, writer_s; /* the store's, for the paid rows */
} counters;

static size_t sink(char *d, size_t sz, size_t nm, void *arg);

typedef struct {
  char *p;
  size_t n;
} body;

static double metric(const char *text, const char *name) {
  size_t len = strlen(name);
  for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
    if (strncmp(l, name, len) == 0 && l[len] == ' ') return atof(l + len + 1);
  return 0;
}

static counters scrape(int port) {
  counters k;
  memset(&k, 0, sizeof k);
  struct timespec settle = {0, 700 * 1000000L}; /* the chain thread publishes its counters every 500 ms */
  nanosleep(&settle, NULL);
  char url[96];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", port);
  CURL *c = curl_easy_init();
  body b = {0};
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
  if (curl_easy_perform(c) == CURLE_OK && b.p) {
    k.store_commits = metric(b.p, "tollgate_store_commits_total");
    k.rpc_calls = metric(b.p, "tollgate_rpc_calls_total");
    k.charged = metric(b.p, "tollgate_pay_charged_calls_total");
    k.subs = metric(b.p, "tollgate_store_submissions_total");
    k.stmt_s = metric(b.p, "tollgate_store_statements_seconds_total");
    k.wait_s = metric(b.p, "tollgate_store_wait_seconds_total");
    k.commit_s = metric(b.p, "tollgate_store_commit_duration_seconds_sum");
    k.writer_s = metric(b.p, "tollgate_store_writer_cpu_seconds_total");
  }
  free(b.p);
  curl_easy_cleanup(c);
  return k;
}

/* CPU seconds of a process and of its children (nginx's workers). */
static double cpu_kids_s(pid_t pid) {
  double t = cpu_s(pid);
  DIR *d = opendir("/proc");
  struct dirent *e;
  while (d && (e = readdir(d))) {
    pid_t c = (pid_t)atoi(e->d_name);
    if (c <= 0 || c == pid) continue;
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)c);
    FILE *f = fopen(path, "r");
    if (!f) continue;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *q = strrchr(buf, ')');
    int pp = 0;
    if (q && sscanf(q + 2, "%*c %d", &pp) == 1 && pp == pid) t += cpu_s(c);
  }
  if (d) closedir(d);
  return t;
}

/*
 * One measured row: wrk's figures, the proxy's CPU time per request (from /proc; `kids`: with
 * its child processes) and, when `port` is tollgated's, its store's figures over the row (from
 * /metrics): submissions per commit, statement and COMMIT time per commit, the mean wait from
 * queued to durable, and the writer thread's CPU per submission.
 */
static row measure(const char *url, unsigned c, unsigned s, const char *headers, int reuse, pid_t pid,
                   int kids, int port) {
  counters k0, k1;
  if (port) k0 = scrape(port);
  double t0 = kids ? cpu_kids_s(pid) : cpu_s(pid);
  row r = run_wrk(url, c, s, headers, reuse);
  double t1 = kids ? cpu_kids_s(pid) : cpu_s(pid);
  if (r.requests) r.cpu_us = (t1 - t0) * 1e6 / (double)r.requests;
  if (port) {
    k1 = scrape(port);
    double commits = k1.store_commits - k0.store_commits, n = k1.subs - k0.subs;
    if (commits > 0 && n > 0) {
      r.has_store = 1;
      r.per_commit = n / commits;
      r.commit_ms = (k1.commit_s - k0.commit_s) / commits * 1e3;
      r.stmt_ms = (k1.stmt_s - k0.stmt_s) / commits * 1e3;
      r.wait_ms = (k1.wait_s - k0.wait_s) / n * 1e3;
      r.writer_us = (k1.writer_s - k0.writer_s) / n * 1e6;
    }
  }
  return r;
}

/* ---- the node's own rate: pre-signed transferWithAuthorization transactions ------------- */

static size_t sink(char *d, size_t sz, size_t nm, void *arg) {
  body *b = arg;
  size_t n = sz * nm;
  char *q = realloc(b->p, b->n + n + 1);
  if (!q) return 0;
  memcpy(q + b->n, d, n);
  b->p = q;
  b->n += n;
  b->p[b->n] = 0;
  return n;
}

/*
 * n transferWithAuthorization transactions, each with its own fresh authorization,
 * signed ahead by one sender with consecutive nonces, then sent one after another on one
 * kept-alive connection: the rate the node accepts them (the limit for row (e)).
 */
/* Waits (up to max_s) until every transaction `who` sent is mined: latest nonce == pending. */
static void wait_mined(sfx *f, const tg_address *who, unsigned max_s) {
  char hex[43], pp[128], pl[128];
  tg_hex_encode(hex, who->b, 20, 1);
  snprintf(pp, sizeof pp, "[\"%s\",\"pending\"]", hex);
  snprintf(pl, sizeof pl, "[\"%s\",\"latest\"]", hex);
  double end = now_s() + max_s;
  while (now_s() < end && tgt_rpc_u64(f->anvil->url, "eth_getTransactionCount", pl) <
                              tgt_rpc_u64(f->anvil->url, "eth_getTransactionCount", pp)) {
    struct timespec d = {0, 100 * 1000000L};
    nanosleep(&d, NULL);
  }
}

/*
 * The node's own rate for n pre-signed transfers (accepting them: the reference of row (e)),
 * and in *mined_cpu_s anvil's CPU until they are all mined as well: a gateway's `exact` calls
 * make the node mine their transfers during the run, the reference alone does not.
 */
static double node_rate(sfx *f, const terms *t, const tg_seckey *payer, const tg_seckey *sender,
                        unsigned n, double *anvil_cpu_s, double *mined_cpu_s) {
  tg_address from;
  if (tg_seckey_address(&from, sender)) die("sender", TG_EINVAL);
  char fromhex[43];
  tg_hex_encode(fromhex, from.b, 20, 1);
  char params[128];
  snprintf(params, sizeof params, "[\"%s\",\"pending\"]", fromhex);
  uint64_t nonce = tgt_rpc_u64(f->anvil->url, "eth_getTransactionCount", params);
  uint8_t sel[4];
  if (tg_abi_selector_str(sel, "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)", 96))
    die("selector", TG_EINVAL);
  char **bodies = calloc(n, sizeof *bodies);
  for (unsigned i = 0; i < n; i++) {
    tg_x402_exact a;
    exact_auth(t, payer, &a);
    uint8_t data[4 + 9 * 32];
    memcpy(data, sel, 4);
    uint8_t *w = data + 4;
    tg_abi_put_address(w, &a.from);
    tg_abi_put_address(w + 32, &a.to);
    tg_abi_put_u256(w + 64, &a.value);
    tg_abi_put_u64(w + 96, a.valid_after);
    tg_abi_put_u64(w + 128, a.valid_before);
    memcpy(w + 160, a.nonce.b, 32);
    uint8_t v = a.signature.b[64];
    tg_abi_put_u64(w + 192, v < 27 ? (uint64_t)v + 27 : v);
    memcpy(w + 224, a.signature.b, 32);
    memcpy(w + 256, a.signature.b + 32, 32);
    tg_tx tx;
    tg_tx_init(&tx, TG_TX_EIP1559);
    tx.chain_id = t->chain_id;
    tx.nonce = nonce + i;
    tg_u256_from_u64(&tx.max_fee_per_gas, 20000000000ull);
    tg_u256_from_u64(&tx.max_priority_fee_per_gas, 1000000000ull);
    tx.gas_limit = 150000;
    tx.has_to = 1;
    tx.to = t->asset;
    tx.data = TG_BYTES(data, sizeof data);
    tg_buf raw;
    tg_buf_init(&raw, 4096);
    if (tg_tx_sign(&tx, sender) || tg_tx_encode(&raw, &tx)) die("raw transaction", TG_EINVAL);
    char *hex = tg_hex_dup(raw.data, raw.len);
    size_t len = strlen(hex) + 100;
    bodies[i] = malloc(len);
    snprintf(bodies[i], len,
             "{\"jsonrpc\":\"2.0\",\"id\":%u,\"method\":\"eth_sendRawTransaction\",\"params\":[\"%s\"]}",
             i + 1, hex);
    free(hex);
    tg_buf_cleanup(&raw);
  }
  CURL *c = curl_easy_init();
  struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
  curl_easy_setopt(c, CURLOPT_URL, f->anvil->url);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink);
  unsigned errors = 0;
  double cpu0 = cpu_s(tgt_proc_pid(f->anvil->proc));
  double t0 = now_s();
  for (unsigned i = 0; i < n; i++) {
    body b = {0};
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, bodies[i]);
    if (curl_easy_perform(c) != CURLE_OK || !b.p || strstr(b.p, "\"error\"")) errors++;
    free(b.p);
  }
  double dt = now_s() - t0;
  *anvil_cpu_s = cpu_s(tgt_proc_pid(f->anvil->proc)) - cpu0;
  wait_mined(f, &from, 60);
  *mined_cpu_s = cpu_s(tgt_proc_pid(f->anvil->proc)) - cpu0;
  curl_slist_free_all(h);
  curl_easy_cleanup(c);
  for (unsigned i = 0; i < n; i++) free(bodies[i]);
  free(bodies);
  if (errors) fprintf(stderr, "bench_paid: %u of %u raw transactions refused\n", errors, n);
  return (double)(n - errors) / dt;
}

/* One paid call with `header`: 0 when the answer is 2xx, else prints it. */
static int probe(const char *url, const char *header) {
  CURL *c = curl_easy_init();
  size_t hl = strlen(header) + 32;
  char *line = malloc(hl);
  snprintf(line, hl, "PAYMENT-SIGNATURE: %s", header);
  struct curl_slist *h = curl_slist_append(NULL, line);
  h = curl_slist_append(h, "Content-Type: application/json");
  body b = {0};
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, "{}");
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
  long st = 0;
  if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &st);
  if (st < 200 || st > 299) fprintf(stderr, "bench_paid: probe of %s: %ld %s\n", url, st, b.p ? b.p : "");
  free(b.p);
  free(line);
  curl_slist_free_all(h);
  curl_easy_cleanup(c);
  return st >= 200 && st <= 299 ? 0 : -1;
}

/* ---- setup ---------------------------------------------------------------------------------- */

static tgt_proc *start_nginx(int port, int up_port) {
  char conf[4096], path[300], ngdir[200];
  snprintf(ngdir, sizeof ngdir, "%s/nginx", dir);
  mkdir(ngdir, 0700);
  snprintf(conf, sizeof conf,
           "daemon off;\nworker_processes auto;\npid %s/nginx.pid;\nerror_log %s/error.log warn;\n"
           "events { worker_connections 4096; }\n"
           "http {\n  access_log off;\n  client_body_temp_path %s/body;\n  proxy_temp_path %s/proxy;\n"
           "  fastcgi_temp_path %s/fcgi;\n  uwsgi_temp_path %s/uwsgi;\n  scgi_temp_path %s/scgi;\n"
           "  upstream up { server 127.0.0.1:%d; keepalive 128; }\n"
           "  server {\n    listen 127.0.0.1:%d;\n    location / {\n      proxy_pass http://up;\n"
           "      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n"
           "      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n    }\n  }\n}\n",
           ngdir, ngdir, ngdir, ngdir, ngdir, ngdir, ngdir, up_port, port);
  snprintf(path, sizeof path, "%s/nginx.conf", ngdir);
  write_text(path, conf);
  const char *argv[] = {nginx_bin, "-p", ngdir, "-c", path, NULL};
  tgt_proc *p = tgt_proc_spawn(argv);
  if (!p || tgt_wait_tcp(p, port, 10000) != 0) return NULL;
  return p;
}

/* Resident set of a process, KiB (VmRSS), -1 when unknown. */
static long rss_kib(pid_t pid) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  FILE *f = fopen(path, "r");
  long kb = -1;
  while (f && fgets(line, sizeof line, f))
    if (strncmp(line, "VmRSS:", 6) == 0) kb = strtol(line + 6, NULL, 10);
  if (f) fclose(f);
  return kb;
}

/*
 * The memory soak (`make soak`): SOAK_CHANNELS open channels (default 10,000), each paid
 * through with its own ceiling signed ahead, SOAK_CONNS connections (default 1,000) sending
 * paid calls round robin over all channels for SOAK_SECS (default 600), and tollgated's
 * resident set sampled every 10 s. Fails (exit 1) when the resident set passes 64 MiB or
 * grows by more than 10 % (and 4 MiB) between the end of the first minute and the end.
 */
static int soak(sfx *f, const terms *t, const char *url, tgt_proc *gw) {
  unsigned n = getenv("SOAK_CHANNELS") ? (unsigned)atoi(getenv("SOAK_CHANNELS")) : 10000;
  unsigned c = getenv("SOAK_CONNS") ? (unsigned)atoi(getenv("SOAK_CONNS")) : 1000;
  unsigned dur = (unsigned)atoi(getenv("SOAK_SECS"));
  if (n == 0 || c == 0 || dur < 20) {
    fprintf(stderr, "bench_paid: soak needs SOAK_SECS >= 20 and non-zero SOAK_CHANNELS/SOAK_CONNS\n");
    return 1;
  }
  double t0 = now_s();
  sfx_chan *ch = calloc(n, sizeof *ch);
  f->salt_tag = 0x50a4;
  int rc = sfx_open_channels(f, ch, n, &t->pay_to, 1, 150);
  if (rc) die("opening the soak channels", rc);
  char **h = calloc(n, sizeof *h);
  tg_seckey *k = tg_seckey_new();
  for (unsigned i = 0; i < n; i++) {
    if (sfx_payer_key(k, i)) die("payer key", TG_EINVAL);
    h[i] = voucher_header(t, &ch[i].cfg, &ch[i].id, SFX_DEPOSIT, k);
  }
  tg_seckey_free(k);
  char path[300];
  snprintf(path, sizeof path, "%s/soak.txt", dir);
  write_lines(path, h, n);
  printf("soak: %u channels opened on-chain and %u ceilings signed in %.1f s\n", n, n, now_s() - t0);
  /* every channel once (the gateway loads each from the chain at its first voucher) */
  row w = run_wrk(url, 64, n / 1000 + 5, path, 0);
  printf("soak: first pass over the channels: %lu calls, %lu non-2xx\n", w.requests, w.non2xx);
  pid_t pid = tgt_proc_pid(gw);
  printf("soak: tollgated RSS %ld KiB with %u channels loaded, before load\n", rss_kib(pid), n);
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "%s -t2 -c%u -d%us --timeout 10s --latency -s %s/pay.lua %s -- %s 2 reuse > %s/soak.wrk 2>&1",
           wrk, c, dur, dir, url, path, dir);
  FILE *bg = popen(cmd, "r");
  if (!bg) die("wrk", TG_EIO);
  long at_minute = -1, max_kb = 0, last = 0;
  for (unsigned s = 10; s <= dur; s += 10) {
    sleep(10);
    long kb = rss_kib(pid);
    if (kb > max_kb) max_kb = kb;
    if (s == 60) at_minute = kb;
    last = kb;
    printf("soak: t=%3us RSS %ld KiB\n", s, kb);
    fflush(stdout);
  }
  pclose(bg);
  snprintf(path, sizeof path, "%s/soak.wrk", dir);
  FILE *wf = fopen(path, "r");
  char line[512];
  while (wf && fgets(line, sizeof line, wf))
    if (strstr(line, "requests in") || strstr(line, "Requests/sec") || strstr(line, "Non-2xx") ||
        strstr(line, "Socket errors") || strstr(line, " 99%") || strstr(line, " 50%"))
      printf("soak: wrk: %s", line);
  if (wf) fclose(wf);
  int fail = max_kb > 64 * 1024;
  if (at_minute > 0 && last > at_minute + at_minute / 10 && last - at_minute > 4096) fail = 1;
  printf("soak: %u channels, %u connections, %u s: RSS max %ld KiB (limit 65536), after 1 min %ld KiB, "
         "at the end %ld KiB: %s\n",
         n, c, dur, max_kb, at_minute, last, fail ? "FAIL" : "ok");
  for (unsigned i = 0; i < n; i++) free(h[i]);
  free(h);
  free(ch);
  return fail;
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0); /* progress visible when piped */
  if (sodium_init() < 0) return 1;
  curl_global_init(CURL_GLOBAL_DEFAULT);
  const char *e;
  if ((e = getenv("CONNS"))) conns = (unsigned)atoi(e);
  if ((e = getenv("SECS"))) secs = (unsigned)atoi(e);
  if ((e = getenv("ROWS")) && *e) rows = e;
  if ((e = getenv("WRK"))) snprintf(wrk, sizeof wrk, "%s", e);
  if ((e = getenv("NGINX"))) snprintf(nginx_bin, sizeof nginx_bin, "%s", e);
  snprintf(build, sizeof build, "%s", (e = getenv("TG_BUILD")) ? e : (getenv("BUILD") ? getenv("BUILD") : "build"));
  char check[300];
  snprintf(check, sizeof check, "%s --version >/dev/null 2>&1", wrk);
  if (system(check) != 0 && system("command -v wrk >/dev/null") != 0) {
    fprintf(stderr, "bench_paid: wrk not found\n");
    return 1;
  }

  /* anvil, contracts, a channel (payer 0, the gateway as receiver), an exact payer with tokens */
  sfx f;
  /* Base fee 0: blocks full of deposits (the soak's) would otherwise raise it block by block.
   * Block gas limit 300M: at 30M (the default) a 1 s block holds ~430 transfers, so row (e)
   * would measure block space (its backlog reaching the manager's max_pending), not the
   * gateway's rate of verifying and submitting (docs/PERFORMANCE.md, "The exact pipeline"). */
  static const char *const anvil_extra[] = {"--block-base-fee-per-gas", "0", "--gas-limit", "300000000", NULL};
  int rc = sfx_start(&f, 1, anvil_extra);
  if (rc) die("anvil and contracts", rc);
  snprintf(dir, sizeof dir, "%s", f.dir);
  double t_setup = now_s();
  /* The gateway (anvil account 0) authorizes claims; the money goes to pay_to (account 4). */
  tg_address pay_to;
  if ((rc = tg_address_parse(&pay_to, tgt_anvil_address(4), 42))) die("pay_to", rc);
  sfx_chan ch;
  if ((rc = sfx_open_channels(&f, &ch, 1, &pay_to, 1, 1))) die("opening the channel", rc);
  tg_seckey *payer0 = tg_seckey_new(), *exact_payer = NULL, *sender = NULL;
  if (!payer0 || sfx_payer_key(payer0, 0)) die("payer key", TG_EINVAL);
  if ((rc = sfx_key(&exact_payer, tgt_anvil_key(2))) || (rc = sfx_key(&sender, tgt_anvil_key(3))))
    die("keys", rc);
  tg_address exact_from;
  if (tg_seckey_address(&exact_from, exact_payer)) die("exact payer", TG_EINVAL);
  {
    tg_buf call;
    tg_u256 amount;
    tg_u256_from_u64(&amount, 1000000000000ull);
    tg_abi_value a[2] = {tg_abi_val_address(&exact_from), tg_abi_val_word(&amount)};
    if ((rc = sfx_call(&call, &f.dep.c[TG_CONTRACT_USDC].address, "mint(address,uint256)", a, 2)) ||
        (rc = sfx_send(&f, &call, 1)))
      die("minting", rc);
    tg_buf_cleanup(&call);
  }
  terms t;
  t.chain_id = f.dep.chain_id;
  t.asset = f.dep.c[TG_CONTRACT_USDC].address;
  t.pay_to = pay_to;
  t.channel_domain = f.domain;
  {
    tg_eip712_domain td;
    memset(&td, 0, sizeof td);
    td.fields = TG_EIP712_DOMAIN_STANDARD;
    td.name = TG_STR_LIT("USD Coin");
    td.version = TG_STR_LIT("2");
    tg_u256_from_u64(&td.chain_id, t.chain_id);
    td.verifying_contract = t.asset;
    if ((rc = tg_eip712_domain_separator(&t.token_domain, &td))) die("token domain", rc);
  }

  /* the gateway: keystore of anvil account 0 (the channel's receiver), configuration */
  char ks[300], pw[300], conf[300], store[300], lua_path[300];
  snprintf(ks, sizeof ks, "%s/gateway.json", dir);
  snprintf(pw, sizeof pw, "%s/password", dir);
  snprintf(conf, sizeof conf, "%s/tollgated.conf", dir);
  snprintf(store, sizeof store, "%s/gateway.db", dir);
  snprintf(lua_path, sizeof lua_path, "%s/pay.lua", dir);
  write_text(lua_path, lua);
  write_text(pw, "bench-password\n");
  {
    tg_buf k;
    tg_buf_init(&k, 1 << 16);
    tg_keystore_params kp = {.n = 1024, .r = 8, .p = 1};
    if ((rc = tg_keystore_encrypt(&k, NULL, f.gw_key, "bench-password", 14, &kp)) ||
        (rc = tg_keystore_write_file(ks, k.data, k.len, 1)))
      die("keystore", rc);
    tg_buf_cleanup(&k);
  }
  int up_port = tgt_free_port(), gw_port, ngx_port;
  do gw_port = tgt_free_port(); while (gw_port == up_port);
  do ngx_port = tgt_free_port(); while (ngx_port == up_port || ngx_port == gw_port);
  char text[4096], payto_hex[43];
  tg_address_to_checksum(&pay_to, payto_hex);
  snprintf(text, sizeof text,
           "listen 127.0.0.1:%d\nworkers 0\naccess_log off\n"
           "upstream up http://127.0.0.1:%d\n"
           "route free GET /fast upstream=up\n"
           "route paid POST /paid/fast upstream=up price=flat strip_prefix=/paid\n"
           "price flat call 0.000001\n"
           "schemes exact channel\nchain_id %llu\nrpc_url %s\ndeployment %s\n"
           "keystore %s password_file=%s\n"
           "asset decimals=6 name=\"USD Coin\" version=2\n"
           "exact_wait submission\nchannel withdraw_delay=15m\npay_to %s\n"
           "store sqlite %s\n",
           gw_port, up_port, (unsigned long long)t.chain_id, f.anvil->url, f.deployment_path, ks, pw,
           payto_hex, store);
  write_text(conf, text);
  char upstream_bin[300], tollgated[300], port_s[16];
  snprintf(upstream_bin, sizeof upstream_bin, "%s/tools/tg_upstream", build);
  snprintf(tollgated, sizeof tollgated, "%s/tollgated", build);
  snprintf(port_s, sizeof port_s, "%d", up_port);
  const char *uargv[] = {upstream_bin, port_s, "1", NULL};
  tgt_proc *up = tgt_proc_spawn(uargv);
  if (!up || tgt_wait_tcp(up, up_port, 5000) != 0) die("tg_upstream", TG_EIO);
  const char *gargv[] = {tollgated, "-c", conf, NULL};
  tgt_proc *gw = tgt_proc_spawn(gargv);
  if (!gw || tgt_wait_tcp(gw, gw_port, 20000) != 0) die("tollgated", TG_EIO);
  tgt_proc *ngx = access(nginx_bin, X_OK) == 0 ? start_nginx(ngx_port, up_port) : NULL;

  if (getenv("SOAK_SECS")) {
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/paid/fast", gw_port);
    int fail = soak(&f, &t, url, gw);
    tgt_proc_stop(gw, 10000);
    tgt_proc_free(gw);
    tgt_proc_stop(up, 2000);
    tgt_proc_free(up);
    if (ngx) {
      tgt_proc_stop(ngx, 5000);
      tgt_proc_free(ngx);
    }
    sfx_stop(&f);
    return fail;
  }
  /* headers, signed before any clock starts */
  size_t n_fresh = want('c') ? (size_t)secs * 20000 : 1; /* more than the gateway takes in `secs` */
  char **fresh = calloc(n_fresh, sizeof *fresh);
  for (size_t i = 0; i < n_fresh; i++)
    fresh[i] = voucher_header(&t, &ch.cfg, &ch.id, (uint64_t)(i + 1 + 4 * conns) * PRICE, payer0);
  char fresh_path[300], ahead_path[300], exact_path[300];
  snprintf(fresh_path, sizeof fresh_path, "%s/fresh.txt", dir);
  snprintf(ahead_path, sizeof ahead_path, "%s/ahead.txt", dir);
  snprintf(exact_path, sizeof exact_path, "%s/exact.txt", dir);
  write_lines(fresh_path, fresh, n_fresh);
  char *ahead = voucher_header(&t, &ch.cfg, &ch.id, SFX_DEPOSIT, payer0);
  write_lines(ahead_path, &ahead, 1);
  unsigned n_exact = want('e') ? EXACT_PER_S * secs : 1;
  char **ex = calloc(n_exact, sizeof *ex);
  for (unsigned i = 0; i < n_exact; i++) {
    tg_x402_exact a;
    exact_auth(&t, exact_payer, &a);
    ex[i] = exact_header(&t, &a);
  }
  write_lines(exact_path, ex, n_exact);
  printf("bench_paid: setup %.1f s (anvil, contracts, channel, %zu vouchers and %u authorizations signed "
         "ahead); wrk -c%u -d%us, price %u base unit per call, %ld cores; tollgated pid %d\n",
         now_s() - t_setup, n_fresh, n_exact, conns, secs, PRICE, sysconf(_SC_NPROCESSORS_ONLN),
         (int)tgt_proc_pid(gw));
  fflush(stdout);

  char url_free[128], url_paid[128], url_ngx[128];
  snprintf(url_free, sizeof url_free, "http://127.0.0.1:%d/fast", gw_port);
  snprintf(url_paid, sizeof url_paid, "http://127.0.0.1:%d/paid/fast", gw_port);
  snprintf(url_ngx, sizeof url_ngx, "http://127.0.0.1:%d/fast", ngx_port);
  if (probe(url_paid, ahead) != 0) die("a paid call with the ceiling signed ahead", TG_EINVAL);
  /* warm-ups: connection pools, the channel loaded into the ledger from the chain */
  run_wrk(url_free, conns, 1, NULL, 0);
  run_wrk(url_paid, 4, 1, ahead_path, 1);
  row a = {0}, b = {0}, c = {0}, d = {0}, x = {0};
  if (ngx && want('a')) {
    run_wrk(url_ngx, conns, 1, NULL, 0);
    a = measure(url_ngx, conns, secs, NULL, 0, tgt_proc_pid(ngx), 1, 0);
  }
  pid_t gw_pid = tgt_proc_pid(gw);
  if (want('b')) b = measure(url_free, conns, secs, NULL, 0, gw_pid, 0, gw_port);
  if (want('c')) c = measure(url_paid, conns, secs, fresh_path, 0, gw_pid, 0, gw_port);
  if (want('d')) d = measure(url_paid, conns, secs, ahead_path, 1, gw_pid, 0, gw_port);
  /* (e): each call a fresh authorization and its own transaction; wrk's rate is only valid
   * when the authorizations signed ahead did not run out (checked). The node's rate is then
   * measured for as many pre-signed transactions as the gateway got through. */
  unsigned ec = conns < 32 ? conns : 32;
  if ((e = getenv("EXACT_CONNS")) && atoi(e) > 0) ec = (unsigned)atoi(e);
  double node = 0;
  unsigned n_node = 0;
  double gw_cpu = 0, anvil_cpu_e = 0, anvil_cpu_node = 0, anvil_cpu_mined = 0;
  tg_address gw_addr;
  if (tg_seckey_address(&gw_addr, f.gw_key)) die("gateway address", TG_EINVAL);
  counters k0, k1;
  memset(&k0, 0, sizeof k0);
  memset(&k1, 0, sizeof k1);
  if (want('e')) {
    k0 = scrape(gw_port);
    double g0 = cpu_s(tgt_proc_pid(gw)), a0 = cpu_s(tgt_proc_pid(f.anvil->proc));
    x = run_wrk(url_paid, ec, secs, exact_path, 0);
    gw_cpu = cpu_s(tgt_proc_pid(gw)) - g0;
    if (x.requests) x.cpu_us = gw_cpu / (double)x.requests * 1e6; /* the CPU column of row (e) */
    anvil_cpu_e = cpu_s(tgt_proc_pid(f.anvil->proc)) - a0;
    k1 = scrape(gw_port);
    if (x.requests >= n_exact) fprintf(stderr, "bench_paid: row (e) used every authorization: its rate is a lower bound\n");
    n_node = x.requests < 200 ? 200 : x.requests > 5000 ? 5000 : (unsigned)x.requests;
    /* the gateway's transfers mined first: the reference starts on an empty pool */
    double a1 = cpu_s(tgt_proc_pid(f.anvil->proc));
    wait_mined(&f, &gw_addr, 120);
    anvil_cpu_e += cpu_s(tgt_proc_pid(f.anvil->proc)) - a1; /* mining what (e) sent */
    node = node_rate(&f, &t, exact_payer, sender, n_node, &anvil_cpu_node, &anvil_cpu_mined);
  }

  printf("%-48s %10s %9s %9s %10s %7s %8s   %5s %6s %6s %6s %6s\n", "setup", "req/s", "p50 ms",
         "p99 ms", "requests", "non-2xx", "CPU us", "/cmt", "stm ms", "cmt ms", "wait", "wr us");
  if (ngx && want('a')) print_row("(a) nginx reverse proxy", &a);
  if (want('b')) print_row("(b) tollgated, no payment", &b);
  if (want('c')) print_row("(c) tollgated, fresh channel voucher per call", &c);
  if (want('d')) print_row("(d) tollgated, one ceiling signed ahead", &d);
  if (want('e')) {
    char ename[64];
    snprintf(ename, sizeof ename, "(e) tollgated, exact (%u conns)", ec);
    print_row(ename, &x);
    char nname[80];
    snprintf(nname, sizeof nname, "    anvil: %u pre-signed transactions", n_node);
    printf("%-48s %10.0f\n", nname, node);
    double calls = k1.charged - k0.charged;
    if (calls > 0)
      printf("(e) per exact call (%.0f charged): tollgated CPU %.0f us, anvil CPU %.0f us with mining "
             "its transfer (anvil per pre-signed transaction: %.0f us accepting it, %.0f us with "
             "mining it), store commits %.3f, JSON-RPC exchanges %.3f (CPU from /proc, counters "
             "from /metrics; they do not depend on the machine's load)\n",
             calls, gw_cpu / calls * 1e6, anvil_cpu_e / calls * 1e6,
             n_node ? anvil_cpu_node / n_node * 1e6 : 0.0, n_node ? anvil_cpu_mined / n_node * 1e6 : 0.0,
             (k1.store_commits - k0.store_commits) / calls, (k1.rpc_calls - k0.rpc_calls) / calls);
  }
  printf("CPU us: the proxy's CPU time (all threads; nginx with its workers) per request, from /proc.\n"
         "Store, from /metrics: /cmt submissions per commit, stm ms in statements and cmt ms in COMMIT\n"
         "per commit, wait: mean ms from queued to durable, wr us: the writer thread's CPU per submission.\n");
  if (ngx && want('a') && a.cpu_us > 0)
    printf("CPU per request beside nginx's: (b) %.2fx, (c) %.2fx, (d) %.2fx\n", b.cpu_us / a.cpu_us,
           c.cpu_us / a.cpu_us, d.cpu_us / a.cpu_us);
  double ref = ngx && want('a') ? a.rps : b.rps;
  const char *refname = ngx && want('a') ? "(a)" : "(b)";
  if (ref > 0 && want('b') && ngx && want('a'))
    printf("(b)/(a) %.2fx (goal >= 0.80x); (b) p99 %+.3f ms beside (a)\n", b.rps / ref, b.p99_ms - a.p99_ms);
  if (ref > 0 && want('c') && want('d'))
    printf("(c)/%s %.2fx (goal >= 0.30x), (d)/%s %.2fx (goal >= 0.60x); (d) p99 %+.3f ms beside %s\n",
           refname, c.rps / ref, refname, d.rps / ref, d.p99_ms - (ngx && want('a') ? a.p99_ms : b.p99_ms),
           refname);
  if (want('e') && node > 0) printf("(e)/anvil %.2fx (goal >= 0.80x)\n", x.rps / node);
  int bad = c.non2xx || d.non2xx || x.non2xx;
  if (bad) printf("bench_paid: non-2xx answers: (c) %lu, (d) %lu, (e) %lu\n", c.non2xx, d.non2xx, x.non2xx);

  tgt_proc_stop(gw, 10000);
  tgt_proc_free(gw);
  tgt_proc_stop(up, 2000);
  tgt_proc_free(up);
  if (ngx) {
    tgt_proc_stop(ngx, 5000);
    tgt_proc_free(ngx);
  }
  for (size_t i = 0; i < n_fresh; i++) free(fresh[i]);
  free(fresh);
  for (unsigned i = 0; i < n_exact; i++) free(ex[i]);
  free(ex);
  free(ahead);
  tg_seckey_free(payer0);
  tg_seckey_free(exact_payer);
  tg_seckey_free(sender);
  sfx_stop(&f);
  curl_global_cleanup();
  return bad ? 1 : 0;
}
