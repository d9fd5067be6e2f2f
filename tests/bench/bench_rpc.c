/* Benchmark: eth_blockNumber round trip over keep-alive, and transactions/s the manager gets accepted versus a minimal libcurl loop of pre-signed raw transactions. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <event2/event.h>

/* The process harness (anvil on a free port); the bench rule links no test objects. */
#include <unistd.h>

#include "../unit/tg_proc.h"

#include "tollgate/hex.h"
#include "tollgate/rpc.h"
#include "tollgate/secp.h"
#include "tollgate/tx.h"
#include "tollgate/txm.h"
#include "tollgate/u256.h"

#define N_TX 2000
#define N_RTT 5000

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static tg_rpc *rpc_connect(const char *url) {
  tg_rpc_opts o;
  tg_rpc_opts_init(&o);
  o.urls = &url;
  o.n_urls = 1;
  tg_rpc *rpc = NULL;
  char why[256];
  if (tg_rpc_new(&rpc, &o, why, sizeof why) != 0) {
    fprintf(stderr, "bench_rpc: %s\n", why);
    exit(1);
  }
  return rpc;
}

static tg_seckey *key0(void) {
  tg_seckey *k = tg_seckey_new();
  const char *hex = tgt_anvil_key(0);
  if (!k || tg_seckey_set_hex(k, hex, strlen(hex)) != 0) exit(1);
  return k;
}

static void bench_rtt(const char *url) {
  tg_rpc *rpc = rpc_connect(url);
  static double lat[N_RTT];
  uint64_t bn;
  for (int i = 0; i < 200; i++)
    if (tg_eth_block_number(rpc, &bn) != 0) exit(1); /* warm up */
  double t0 = now_s();
  for (int i = 0; i < N_RTT; i++) {
    double a = now_s();
    if (tg_eth_block_number(rpc, &bn) != 0) exit(1);
    lat[i] = now_s() - a;
  }
  double total = now_s() - t0;
  qsort(lat, N_RTT, sizeof lat[0], cmp_d);
  printf("eth_blockNumber round trip (blocking, keep-alive): mean %.1f us, p50 %.1f us, p99 %.1f us (%d calls)\n",
         total / N_RTT * 1e6, lat[N_RTT / 2] * 1e6, lat[N_RTT * 99 / 100] * 1e6, N_RTT);
  tg_rpc_free(rpc);
}

typedef struct {
  char *p;
  size_t n;
} bench_body;

static size_t sink_body(char *d, size_t sz, size_t nm, void *arg) {
  bench_body *b = arg;
  size_t n = sz * nm;
  char *q = realloc(b->p, b->n + n + 1);
  if (!q) return 0;
  memcpy(q + b->n, d, n);
  b->p = q;
  b->n += n;
  b->p[b->n] = 0;
  return n;
}

/* The limit: N pre-signed transfers sent one after another on one kept-alive connection. */
static double bench_raw(const char *url) {
  tg_seckey *k = key0();
  char **bodies = calloc(N_TX, sizeof *bodies);
  for (int i = 0; i < N_TX; i++) {
    tg_tx tx;
    tg_tx_init(&tx, TG_TX_EIP1559);
    tx.chain_id = 31337;
    tx.nonce = (uint64_t)i;
    tg_u256_from_u64(&tx.max_fee_per_gas, 10000000000ull);
    tg_u256_from_u64(&tx.max_priority_fee_per_gas, 1000000000ull);
    tx.gas_limit = 21000;
    tx.has_to = 1;
    memset(tx.to.b, 0x5b, 20);
    tg_u256_from_u64(&tx.value, 1);
    tg_buf raw;
    tg_buf_init(&raw, 4096);
    if (tg_tx_sign(&tx, k) || tg_tx_encode(&raw, &tx)) exit(1);
    char *hex = tg_hex_dup(raw.data, raw.len);
    size_t len = strlen(hex) + 100;
    bodies[i] = malloc(len);
    snprintf(bodies[i], len,
             "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"eth_sendRawTransaction\",\"params\":[\"%s\"]}",
             i + 1, hex);
    free(hex);
    tg_buf_cleanup(&raw);
  }
  CURL *c = curl_easy_init();
  struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
  h = curl_slist_append(h, "Expect:");
  bench_body b = {NULL, 0};
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
  int errors = 0;
  double t0 = now_s();
  for (int i = 0; i < N_TX; i++) {
    b.n = 0;
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, bodies[i]);
    if (curl_easy_perform(c) != CURLE_OK || !b.p || strstr(b.p, "\"error\"")) errors++;
  }
  double dt = now_s() - t0;
  printf("raw pre-signed eth_sendRawTransaction, minimal libcurl loop: %d in %.3f s = %.0f tx/s (%d errors)\n",
         N_TX, dt, N_TX / dt, errors);
  for (int i = 0; i < N_TX; i++) free(bodies[i]);
  free(bodies);
  free(b.p);
  curl_slist_free_all(h);
  curl_easy_cleanup(c);
  tg_seckey_free(k);
  return N_TX / dt;
}

/* The manager: N submissions (sign, journal, send) until the node has accepted all of them. */
static double bench_txm(const char *url, const char *journal) {
  tg_rpc *rpc = rpc_connect(url);
  tg_seckey *k = key0();
  tg_txm_opts o;
  tg_txm_opts_init(&o);
  o.rpc = rpc;
  o.key = k;
  o.journal_path = journal;
  o.poll_ms = 200;
  tg_txm *m = NULL;
  if (tg_txm_open(&m, &o) != 0) exit(1);
  tg_txm_request rq = {.has_to = 1, .gas_limit = 21000};
  memset(rq.to.b, 0x5c, 20);
  tg_u256_from_u64(&rq.value, 1);
  double t0 = now_s();
  for (int i = 0; i < N_TX; i++)
    if (tg_txm_submit(m, &rq, NULL, NULL, NULL) != 0) exit(1);
  tg_txm_stats st;
  double t_signed = 0;
  do {
    event_base_loop(tg_rpc_base(rpc), EVLOOP_ONCE);
    tg_txm_stats_get(m, &st);
    if (!t_signed && st.signed_versions >= N_TX) t_signed = now_s() - t0;
  } while (st.accepted < N_TX && now_s() - t0 < 120);
  double dt = now_s() - t0;
  printf("  (signed and journaled after %.3f s)\n", t_signed);
  printf("transaction manager (%s journal): %llu accepted in %.3f s = %.0f tx/s (%llu journal commits)\n",
         strcmp(journal, ":memory:") == 0 ? "in-memory" : "on-disk, synchronous=FULL",
         (unsigned long long)st.accepted, dt, st.accepted / dt,
         (unsigned long long)st.journal_commits);
  tg_txm_free(m);
  tg_seckey_free(k);
  tg_rpc_free(rpc);
  return st.accepted / dt;
}

int main(void) {
  tgt_anvil_opts ao = {.block_time = 1};
  tgt_anvil *a = tgt_anvil_start(&ao);
  if (!a) {
    fprintf(stderr, "bench_rpc: anvil did not start (%s)\n", tgt_anvil_path());
    return 1;
  }
  bench_rtt(a->url);
  double raw = bench_raw(a->url);
  tgt_anvil_free(a);
  a = tgt_anvil_start(&ao);
  char journal[256];
  snprintf(journal, sizeof journal, "/tmp/tg-bench-rpc-%d.db", (int)getpid());
  double mgr = bench_txm(a->url, journal);
  unlink(journal);
  char side[300];
  snprintf(side, sizeof side, "%s-wal", journal);
  unlink(side);
  snprintf(side, sizeof side, "%s-shm", journal);
  unlink(side);
  printf("manager / raw loop: %.2fx (goal >= 0.8x)\n", mgr / raw);
  tgt_anvil_free(a);
  return 0;
}
