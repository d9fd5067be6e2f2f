/* Tests of the transaction manager against a real anvil: bursts with contiguous nonces, fee bumps under a raised base fee, journal restarts, SIGKILL, reorgs. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "tg_proc.h"
#include "tg_test.h"
#include "tollgate/address.h"
#include "tollgate/rpc.h"
#include "tollgate/secp.h"
#include "tollgate/txm.h"
#include "tollgate/u256.h"

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(unsigned ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static tg_address addr_of(const char *hex) {
  tg_address a;
  if (tg_address_parse(&a, hex, strlen(hex)) != 0) memset(&a, 0, sizeof a);
  return a;
}

static tg_rpc *rpc_for(tgt_anvil *a) {
  tg_rpc_opts o;
  tg_rpc_opts_init(&o);
  const char *u = a->url;
  o.urls = &u;
  o.n_urls = 1;
  o.backoff_ms = 20;
  tg_rpc *rpc = NULL;
  CHECK_OK(tg_rpc_new(&rpc, &o, NULL, 0));
  return rpc;
}

static tg_seckey *dev_key(unsigned i) {
  tg_seckey *k = tg_seckey_new();
  const char *hex = tgt_anvil_key(i);
  if (!k || tg_seckey_set_hex(k, hex, strlen(hex)) != 0) abort();
  return k;
}

static uint64_t nonce_of(tg_rpc *rpc, unsigned i) {
  tg_address a = addr_of(tgt_anvil_address(i));
  uint64_t n = UINT64_MAX;
  CHECK_OK(tg_eth_get_transaction_count(rpc, &n, &a, "latest"));
  return n;
}

static uint64_t balance_of(tg_rpc *rpc, const tg_address *a) {
  tg_u256 b;
  uint64_t v = 0;
  CHECK_OK(tg_eth_get_balance(rpc, &b, a, "latest"));
  if (tg_u256_to_u64(&b, &v) != 0) return UINT64_MAX;
  return v;
}

/* A fresh empty account to receive exact amounts. */
static tg_address sink(unsigned tag) {
  tg_address a;
  memset(&a, 0, sizeof a);
  a.b[0] = 0x5a;
  a.b[18] = (uint8_t)(tag >> 8);
  a.b[19] = (uint8_t)tag;
  return a;
}

typedef struct {
  int fired;
  int ok;
  int bad;
  int twice;
  uint64_t *nonces;
  uint8_t *seen;
  size_t n;
} burst_state;

typedef struct {
  burst_state *s;
  size_t i;
} burst_item;

static int accepted_count;
static void accepted_cb(void *arg, const tg_txm_result *r) {
  (void)arg;
  if ((r->state == TG_TXM_SENT || r->state == TG_TXM_MINED) && r->versions >= 1) accepted_count++;
}

static void burst_cb(void *arg, const tg_txm_result *r) {
  burst_item *it = arg;
  burst_state *s = it->s;
  if (s->seen[it->i]) s->twice++;
  s->seen[it->i] = 1;
  s->fired++;
  if (r->err == 0 && r->state == TG_TXM_CONFIRMED && r->status == 1) {
    s->ok++;
    s->nonces[it->i] = r->nonce;
  } else {
    s->bad++;
  }
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static void test_burst_2000(void) {
  tgt_anvil_opts ao = {.block_time = 1};
  tgt_anvil *a = tgt_anvil_start(&ao);
  CHECK(a != NULL);
  if (!a) return;
  tg_rpc *rpc = rpc_for(a);
  tg_seckey *key = dev_key(0);
  tg_txm_opts o;
  tg_txm_opts_init(&o);
  o.rpc = rpc;
  o.key = key;
  o.poll_ms = 250;
  o.resend_ms = 5000;
  tg_txm *m = NULL;
  CHECK_OK(tg_txm_open(&m, &o));
  enum { N = 2000 };
  static uint64_t nonces[N];
  static uint8_t seen[N];
  static burst_item items[N];
  memset(seen, 0, sizeof seen);
  burst_state s = {0, 0, 0, 0, nonces, seen, N};
  uint64_t n0 = nonce_of(rpc, 0);
  tg_address to = sink(1);
  uint64_t t0 = now_ms();
  for (size_t i = 0; m && i < N; i++) {
    items[i].s = &s;
    items[i].i = i;
    tg_txm_request rq = {.has_to = 1, .to = to, .gas_limit = 21000, .on_accepted = accepted_cb};
    tg_u256_from_u64(&rq.value, 1);
    CHECK_OK(tg_txm_submit(m, &rq, burst_cb, &items[i], NULL));
  }
  CHECK_INT(s.fired, 0);
  if (m) CHECK_OK(tg_txm_run_until_idle(m, 120000));
  uint64_t dt = now_ms() - t0;
  CHECK_INT(s.fired, N);
  CHECK_INT(s.ok, N);
  CHECK_INT(s.bad, 0);
  CHECK_INT(s.twice, 0);
  CHECK_INT(accepted_count, N);
  qsort(nonces, N, sizeof nonces[0], cmp_u64);
  int contiguous = 1;
  for (size_t i = 0; i < N; i++) contiguous &= nonces[i] == n0 + i;
  CHECK(contiguous);
  CHECK_INT(nonce_of(rpc, 0), n0 + N);
  CHECK_INT(balance_of(rpc, &to), N);
  tg_txm_stats st;
  if (m) {
    tg_txm_stats_get(m, &st);
    printf("    %d transactions confirmed in %llu ms; %llu journal commits, %llu replacements, %llu resends\n",
           N, (unsigned long long)dt, (unsigned long long)st.journal_commits,
           (unsigned long long)st.replacements, (unsigned long long)st.resends);
    CHECK_INT(st.confirmed, N);
  }
  tg_txm_free(m);
  tg_seckey_free(key);
  tg_rpc_free(rpc);
  tgt_anvil_free(a);
}

static void one_cb(void *arg, const tg_txm_result *r) {
  *(tg_txm_result *)arg = *r;
}

/* Mines a block every `every_ms` while running the loop, until `done` or the time is up. */
static void mine_until(tgt_anvil *a, tg_txm *m, const tg_txm_result *res, unsigned every_ms,
                       unsigned total_ms) {
  uint64_t end = now_ms() + total_ms, next = now_ms() + every_ms;
  while (now_ms() < end && res->id == 0) {
    if (tg_txm_run_until_idle(m, every_ms) == 0) break;
    if (now_ms() >= next) {
      CHECK_OK(tgt_anvil_mine(a, 1));
      next = now_ms() + every_ms;
    }
  }
}

static void test_under_base_fee_replaced(void) {
  tgt_anvil_opts ao = {.no_mining = 1};
  tgt_anvil *a = tgt_anvil_start(&ao);
  CHECK(a != NULL);
  if (!a) return;
  tg_rpc *rpc = rpc_for(a);
  tg_seckey *key = dev_key(1);
  tg_txm_opts o;
  tg_txm_opts_init(&o);
  o.rpc = rpc;
  o.key = key;
  o.poll_ms = 100;
  o.resend_ms = 600;
  tg_txm *m = NULL;
  CHECK_OK(tg_txm_open(&m, &o));
  if (!m) return;
  tg_address to = sink(2);
  tg_txm_request rq = {.has_to = 1, .to = to, .gas_limit = 21000};
  tg_u256_from_u64(&rq.value, 12345);
  tg_txm_result res;
  memset(&res, 0, sizeof res);
  uint64_t id;
  uint64_t n0 = nonce_of(rpc, 1);
  CHECK_OK(tg_txm_submit(m, &rq, one_cb, &res, &id));
  /* Let it be signed and sent at today's fees (about 2 gwei). */
  CHECK_ERR(tg_txm_run_until_idle(m, 300), TG_ETIMEOUT);
  tg_txm_result mid;
  CHECK_OK(tg_txm_get(m, id, &mid));
  CHECK_INT(mid.state, TG_TXM_SENT);
  CHECK_INT(mid.versions, 1);
  tg_hash first = mid.tx_hash;
  /* The chain turns expensive: the next block costs 100 gwei of base fee; it is mined without us. */
  CHECK_OK(tgt_anvil_set_next_base_fee(a, 100000000000ull));
  CHECK_OK(tgt_anvil_mine(a, 1));
  CHECK_INT(nonce_of(rpc, 1), n0);
  mine_until(a, m, &res, 400, 20000);
  CHECK_INT(res.id, id);
  CHECK_INT(res.err, 0);
  CHECK_INT(res.state, TG_TXM_CONFIRMED);
  CHECK(res.versions >= 2);
  CHECK(memcmp(res.tx_hash.b, first.b, 32) != 0);
  /* Mined once: one nonce used and the amount received once. */
  CHECK_INT(nonce_of(rpc, 1), n0 + 1);
  CHECK_INT(balance_of(rpc, &to), 12345);
  tg_txm_stats st;
  tg_txm_stats_get(m, &st);
  CHECK(st.replacements >= 1);
  /* The receipt is the replacement's. */
  tg_eth_receipt rc;
  CHECK_OK(tg_eth_get_receipt(rpc, &rc, &res.tx_hash));
  CHECK_INT(rc.status, 1);
  tg_eth_receipt_cleanup(&rc);
  CHECK_ERR(tg_eth_get_receipt(rpc, &rc, &first), TG_ENOTFOUND);
  tg_txm_free(m);
  tg_seckey_free(key);
  tg_rpc_free(rpc);
  tgt_anvil_free(a);
}

static int journal_rows(const char *path) {
  sqlite3 *db;
  int n = -1;
  if (sqlite3_open(path, &db) != SQLITE_OK) return -1;
  sqlite3_stmt *s;
  if (sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM txm_tx", -1, &s, NULL) == SQLITE_OK) {
    if (sqlite3_step(s) == SQLITE_ROW) n = sqlite3_column_int(s, 0);
    sqlite3_finalize(s);
  }
  sqlite3_close(db);
  return n;
}

static void temp_journal(char *out, size_t n, const char *tag) {
  snprintf(out, n, "/tmp/tg-txm-%d-%s.db", (int)getpid(), tag);
  char side[300];
  unlink(out);
  snprintf(side, sizeof side, "%s-wal", out);
  unlink(side);
  snprintf(side, sizeof side, "%s-shm", out);
  unlink(side);
}

static void test_restart_node_forgot(void) {
  /* Sent, then the manager stops and the node restarts with an empty pool: the journal resends. */
  tgt_anvil_opts ao = {.no_mining = 1};
  tgt_anvil *a = tgt_anvil_start(&ao);
  CHECK(a != NULL);
  if (!a) return;
  char path[256];
  temp_journal(path, sizeof path, "forgot");
  tg_rpc *rpc = rpc_for(a);
  tg_seckey *key = dev_key(2);
  tg_txm_opts o;
  tg_txm_opts_init(&o);
  o.rpc = rpc;
  o.key = key;
  o.journal_path = path;
  o.poll_ms = 100;
  o.resend_ms = 1000;
  tg_txm *m = NULL;
  CHECK_OK(tg_txm_open(&m, &o));
  tg_address to = sink(3);
  enum { N = 50 };
  for (int i = 0; m && i < N; i++) {
    tg_txm_request rq = {.has_to = 1, .to = to, .gas_limit = 21000};
    tg_u256_from_u64(&rq.value, 7);
    char key_s[32];
    snprintf(key_s, sizeof key_s, "pay-%d", i);
    rq.key = key_s;
    CHECK_OK(tg_txm_submit(m, &rq, NULL, NULL, NULL));
  }
  if (m) CHECK_ERR(tg_txm_run_until_idle(m, 500), TG_ETIMEOUT);
  tg_txm_free(m);
  tg_rpc_free(rpc);
  CHECK_INT(journal_rows(path), N);
  /* The node loses its pool (and its chain, nothing was mined). */
  CHECK_OK(tgt_anvil_restart(a));
  rpc = rpc_for(a);
  o.rpc = rpc;
  m = NULL;
  CHECK_OK(tg_txm_open(&m, &o));
  if (!m) return;
  CHECK_INT(tg_txm_pending(m), N);
  /* The same keys are refused: nothing is submitted twice. */
  tg_txm_request again = {.has_to = 1, .to = to, .gas_limit = 21000, .key = "pay-3"};
  uint64_t prev = 0;
  CHECK_ERR(tg_txm_submit(m, &again, NULL, NULL, &prev), TG_EEXISTS);
  CHECK(prev > 0);
  uint64_t end = now_ms() + 20000;
  while (tg_txm_pending(m) > 0 && now_ms() < end) {
    if (tg_txm_run_until_idle(m, 300) == 0) break;
    CHECK_OK(tgt_anvil_mine(a, 1));
  }
  CHECK_INT(tg_txm_pending(m), 0);
  CHECK_INT(nonce_of(rpc, 2), N);
  CHECK_INT(balance_of(rpc, &to), N * 7);
  tg_txm_free(m);
  tg_seckey_free(key);
  tg_rpc_free(rpc);
  tgt_anvil_free(a);
  unlink(path);
}

/* The child of test_sigkill_resume: submits a stream and runs until killed. */
static void child_stream(const char *url, const char *path, int n) {
  tg_rpc_opts ro;
  tg_rpc_opts_init(&ro);
  ro.urls = &url;
  ro.n_urls = 1;
  tg_rpc *rpc = NULL;
  if (tg_rpc_new(&rpc, &ro, NULL, 0) != 0) _exit(2);
  tg_seckey *key = dev_key(3);
  tg_txm_opts o;
  tg_txm_opts_init(&o);
  o.rpc = rpc;
  o.key = key;
  o.journal_path = path;
  o.poll_ms = 100;
  tg_txm *m = NULL;
  if (tg_txm_open(&m, &o) != 0) _exit(3);
  tg_address to = sink(4);
  for (int i = 0; i < n; i++) {
    tg_txm_request rq = {.has_to = 1, .to = to, .gas_limit = 21000};
    tg_u256_from_u64(&rq.value, 3);
    if (tg_txm_submit(m, &rq, NULL, NULL, NULL) != 0) _exit(4);
    if (i % 20 == 19) (void)!tg_txm_run_until_idle(m, 30); /* a stream, not one burst */
  }
  (void)!tg_txm_run_until_idle(m, 60000);
  _exit(0);
}

static void test_sigkill_resume(void) {
  tgt_anvil_opts ao = {.block_time = 1};
  tgt_anvil *a = tgt_anvil_start(&ao);
  CHECK(a != NULL);
  if (!a) return;
  char path[256];
  temp_journal(path, sizeof path, "kill");
  enum { N = 400 };
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) child_stream(a->url, path, N);
  sleep_ms(1500);
  kill(pid, SIGKILL);
  int st;
  waitpid(pid, &st, 0);
  CHECK(WIFSIGNALED(st));
  int rows = journal_rows(path);
  CHECKF(rows > 0 && rows <= N, "journal rows %d", rows);
  tg_rpc *rpc = rpc_for(a);
  tg_seckey *key = dev_key(3);
  tg_txm_opts o;
  tg_txm_opts_init(&o);
  o.rpc = rpc;
  o.key = key;
  o.journal_path = path;
  o.poll_ms = 100;
  o.resend_ms = 2000;
  tg_txm *m = NULL;
  CHECK_OK(tg_txm_open(&m, &o));
  if (m) CHECK_OK(tg_txm_run_until_idle(m, 60000));
  /* A second live manager of the same account and journal is refused. */
  pid_t holder = fork();
  if (holder == 0) {
    tg_rpc_opts ro;
    tg_rpc_opts_init(&ro);
    const char *u = a->url;
    ro.urls = &u;
    ro.n_urls = 1;
    tg_rpc *r2 = NULL;
    tg_txm *m2 = NULL;
    tg_txm_opts o2 = o;
    if (tg_rpc_new(&r2, &ro, NULL, 0) != 0) _exit(2);
    o2.rpc = r2;
    _exit(tg_txm_open(&m2, &o2) == TG_EBUSY ? 0 : 1);
  }
  int hst;
  waitpid(holder, &hst, 0);
  CHECK(WIFEXITED(hst) && WEXITSTATUS(hst) == 0);
  /* Every journaled transaction mined exactly once, nothing else. */
  tg_address to = sink(4);
  CHECK_INT(nonce_of(rpc, 3), rows);
  CHECK_INT(balance_of(rpc, &to), (uint64_t)rows * 3);
  printf("    killed after %d of %d journaled; all mined once after restart\n", rows, N);
  tg_txm_free(m);
  tg_seckey_free(key);
  tg_rpc_free(rpc);
  tgt_anvil_free(a);
  unlink(path);
}

static void test_reorg_resubmits(void) {
  tgt_anvil *a = tgt_anvil_start(NULL);
  CHECK(a != NULL);
  if (!a) return;
  tg_rpc *rpc = rpc_for(a);
  tg_seckey *key = dev_key(4);
  tg_txm_opts o;
  tg_txm_opts_init(&o);
  o.rpc = rpc;
  o.key = key;
  o.poll_ms = 100;
  o.resend_ms = 1000;
  o.confirmations = 4;
  tg_txm *m = NULL;
  CHECK_OK(tg_txm_open(&m, &o));
  if (!m) return;
  uint64_t snap = tgt_anvil_snapshot(a);
  CHECK(snap != UINT64_MAX);
  tg_address to = sink(5);
  enum { N = 3 };
  tg_txm_result res[N];
  uint64_t ids[N];
  memset(res, 0, sizeof res);
  for (int i = 0; i < N; i++) {
    tg_txm_request rq = {.has_to = 1, .to = to, .gas_limit = 21000};
    tg_u256_from_u64(&rq.value, 100);
    CHECK_OK(tg_txm_submit(m, &rq, one_cb, &res[i], &ids[i]));
  }
  /* Wait until all are mined (automine) but not yet confirmed (4 blocks). */
  uint64_t end = now_ms() + 10000;
  int mined = 0;
  while (mined < N && now_ms() < end) {
    (void)!tg_txm_run_until_idle(m, 100);
    mined = 0;
    for (int i = 0; i < N; i++) {
      tg_txm_result r;
      if (tg_txm_get(m, ids[i], &r) == 0 && r.state == TG_TXM_MINED) mined++;
    }
  }
  CHECK_INT(mined, N);
  CHECK_INT(balance_of(rpc, &to), N * 100);
  /* The blocks holding them vanish. */
  CHECK_OK(tgt_anvil_revert(a, snap));
  CHECK_INT(balance_of(rpc, &to), 0);
  end = now_ms() + 30000;
  while (tg_txm_pending(m) > 0 && now_ms() < end) {
    if (tg_txm_run_until_idle(m, 200) == 0) break;
    CHECK_OK(tgt_anvil_mine(a, 1));
  }
  for (int i = 0; i < N; i++) {
    CHECK_INT(res[i].state, TG_TXM_CONFIRMED);
    CHECK_INT(res[i].err, 0);
  }
  tg_txm_stats st;
  tg_txm_stats_get(m, &st);
  CHECK(st.reorgs >= N);
  CHECK_INT(balance_of(rpc, &to), N * 100);
  tg_txm_free(m);
  tg_seckey_free(key);
  tg_rpc_free(rpc);
  tgt_anvil_free(a);
}

static void test_node_restart_midstream(void) {
  /* anvil stopped and started again (state dumped and loaded) while a stream is in flight. */
  char state[256], path[256];
  temp_journal(path, sizeof path, "restart");
  snprintf(state, sizeof state, "/tmp/tg-txm-%d-anvil-state.json", (int)getpid());
  unlink(state);
  tgt_anvil_opts ao = {.block_time = 1, .state = state};
  tgt_anvil *a = tgt_anvil_start(&ao);
  CHECK(a != NULL);
  if (!a) return;
  tg_rpc *rpc = rpc_for(a);
  tg_seckey *key = dev_key(0);
  tg_txm_opts o;
  tg_txm_opts_init(&o);
  o.rpc = rpc;
  o.key = key;
  o.journal_path = path;
  o.poll_ms = 100;
  o.resend_ms = 1500;
  tg_txm *m = NULL;
  CHECK_OK(tg_txm_open(&m, &o));
  if (!m) return;
  uint64_t n0 = nonce_of(rpc, 0);
  tg_address to = sink(6);
  enum { N = 300 };
  uint64_t t0 = now_ms();
  int restarted = 0;
  for (int i = 0; i < N; i++) {
    tg_txm_request rq = {.has_to = 1, .to = to, .gas_limit = 21000};
    tg_u256_from_u64(&rq.value, 5);
    CHECK_OK(tg_txm_submit(m, &rq, NULL, NULL, NULL));
    if (i % 10 == 9) (void)!tg_txm_run_until_idle(m, 20);
    if (i == N / 2) {
      CHECK_OK(tgt_anvil_restart(a));
      restarted = 1;
    }
  }
  CHECK(restarted);
  CHECK_OK(tg_txm_run_until_idle(m, 60000));
  CHECK_INT(nonce_of(rpc, 0), n0 + N);
  CHECK_INT(balance_of(rpc, &to), N * 5);
  tg_txm_stats st;
  tg_txm_stats_get(m, &st);
  printf("    %d transactions across a node restart in %llu ms (%llu resends, %llu replacements)\n", N,
         (unsigned long long)(now_ms() - t0), (unsigned long long)st.resends,
         (unsigned long long)st.replacements);
  tg_txm_free(m);
  tg_seckey_free(key);
  tg_rpc_free(rpc);
  tgt_anvil_free(a);
  unlink(path);
  unlink(state);
}

static void test_nonce_taken_elsewhere(void) {
  /* Someone else spends the account's next nonce: "nonce too low", then a fresh nonce. */
  tgt_anvil *a = tgt_anvil_start(NULL);
  CHECK(a != NULL);
  if (!a) return;
  tg_rpc *rpc = rpc_for(a);
  tg_seckey *key = dev_key(1);
  tg_txm_opts o;
  tg_txm_opts_init(&o);
  o.rpc = rpc;
  o.key = key;
  o.poll_ms = 100;
  o.resend_ms = 1000;
  tg_txm *m = NULL;
  CHECK_OK(tg_txm_open(&m, &o));
  if (!m) return;
  uint64_t n0 = nonce_of(rpc, 1);
  char p[256];
  snprintf(p, sizeof p, "[{\"from\":\"%s\",\"to\":\"%s\",\"value\":\"0x1\"}]",
           tgt_anvil_address(1), tgt_anvil_address(0));
  json_t *h = tgt_rpc(a->url, "eth_sendTransaction", p);
  CHECKF(h != NULL, "eth_sendTransaction: %s", tgt_rpc_error());
  json_decref(h);
  uint64_t end = now_ms() + 5000;
  while (nonce_of(rpc, 1) == n0 && now_ms() < end) sleep_ms(10);
  tg_address to = sink(7);
  tg_txm_request rq = {.has_to = 1, .to = to, .gas_limit = 21000};
  tg_u256_from_u64(&rq.value, 99);
  tg_txm_result res;
  memset(&res, 0, sizeof res);
  CHECK_OK(tg_txm_submit(m, &rq, one_cb, &res, NULL));
  CHECK_OK(tg_txm_run_until_idle(m, 20000));
  CHECK_INT(res.state, TG_TXM_CONFIRMED);
  CHECK_INT(res.nonce, n0 + 1);
  CHECK_INT(nonce_of(rpc, 1), n0 + 2);
  CHECK_INT(balance_of(rpc, &to), 99);
  tg_txm_stats st;
  tg_txm_stats_get(m, &st);
  CHECK_INT(st.renonced, 1);
  tg_txm_free(m);
  tg_seckey_free(key);
  tg_rpc_free(rpc);
  tgt_anvil_free(a);
}

static void test_refused_fills_nonce(void) {
  /* A transaction the node refuses outright fails alone; its nonce is filled, the next one mines. */
  tgt_anvil *a = tgt_anvil_start(NULL);
  CHECK(a != NULL);
  if (!a) return;
  tg_rpc *rpc = rpc_for(a);
  tg_seckey *key = dev_key(2);
  tg_txm_opts o;
  tg_txm_opts_init(&o);
  o.rpc = rpc;
  o.key = key;
  o.poll_ms = 100;
  o.resend_ms = 1000;
  tg_txm *m = NULL;
  CHECK_OK(tg_txm_open(&m, &o));
  if (!m) return;
  uint64_t n0 = nonce_of(rpc, 2);
  tg_address to = sink(8);
  tg_txm_request low = {.has_to = 1, .to = to, .gas_limit = 20000};
  CHECK_ERR(tg_txm_submit(m, &low, NULL, NULL, NULL), TG_ETX_INTRINSIC_GAS);
  tg_txm_request bad = {.has_to = 1, .to = to, .gas_limit = 100000000}; /* over the block gas limit */
  tg_txm_request good = {.has_to = 1, .to = to, .gas_limit = 21000};
  tg_u256_from_u64(&bad.value, 1);
  tg_u256_from_u64(&good.value, 2);
  tg_txm_result rb, rg;
  memset(&rb, 0, sizeof rb);
  memset(&rg, 0, sizeof rg);
  CHECK_OK(tg_txm_submit(m, &bad, one_cb, &rb, NULL));
  CHECK_OK(tg_txm_submit(m, &good, one_cb, &rg, NULL));
  CHECK_OK(tg_txm_run_until_idle(m, 20000));
  CHECK_INT(rb.state, TG_TXM_FAILED);
  CHECKF(rb.err == TG_ERPC, "err %s", tg_err_name(rb.err));
  /* the node's own text comes back with the failure (anvil: "... exceeds block gas limit") */
  CHECKF(strstr(rb.message, "gas") != NULL, "message '%s'", rb.message);
  CHECK_STR(rg.message, "");
  CHECK_INT(rb.nonce, n0);
  CHECK_INT(rg.state, TG_TXM_CONFIRMED);
  CHECK_INT(rg.nonce, n0 + 1);
  CHECK_INT(nonce_of(rpc, 2), n0 + 2);
  CHECK_INT(balance_of(rpc, &to), 2);
  tg_txm_free(m);
  tg_seckey_free(key);
  tg_rpc_free(rpc);
  tgt_anvil_free(a);
}

static void test_big_transactions_batched(void) {
  /*
   * Six transactions of 200 KB calldata each, submitted at once: one JSON-RPC
   * batch of them would be a 2.4 MB request, which anvil refuses whole (over its
   * 2 MiB body limit) with one "Invalid request" for every item (the 10,000-channel
   * settlement's ten claims failed so). The manager caps a batch at 1 MiB of body
   * and sends a batch refused whole again one by one: all six mine, nonces
   * contiguous, nothing refused.
   */
  enum { N = 6, DATA = 200000 };
  tgt_anvil *a = tgt_anvil_start(NULL);
  CHECK(a != NULL);
  if (!a) return;
  tg_rpc *rpc = rpc_for(a);
  tg_seckey *key = dev_key(4);
  tg_txm_opts o;
  tg_txm_opts_init(&o);
  o.rpc = rpc;
  o.key = key;
  o.poll_ms = 100;
  tg_txm *m = NULL;
  CHECK_OK(tg_txm_open(&m, &o));
  if (!m) return;
  uint64_t n0 = nonce_of(rpc, 4);
  uint8_t *data = malloc(DATA);
  CHECK(data != NULL);
  if (!data) return;
  memset(data, 0x5b, DATA);
  tg_address to = sink(9);
  tg_txm_result res[N];
  memset(res, 0, sizeof res);
  for (size_t i = 0; i < N; i++) {
    data[0] = (uint8_t)i;
    tg_txm_request rq = {.has_to = 1, .to = to, .data = data, .data_len = DATA,
                         .gas_limit = 21000 + 40 * DATA}; /* the EIP-7623 calldata floor */
    tg_u256_from_u64(&rq.value, 1 + i);
    CHECK_OK(tg_txm_submit(m, &rq, one_cb, &res[i], NULL));
  }
  free(data);
  CHECK_OK(tg_txm_run_until_idle(m, 60000));
  uint64_t seen = 0;
  for (size_t i = 0; i < N; i++) {
    CHECKF(res[i].state == TG_TXM_CONFIRMED && res[i].status == 1, "tx %zu: state %d err %s (%s)", i,
           res[i].state, tg_err_name(res[i].err), res[i].message);
    CHECK(res[i].nonce >= n0 && res[i].nonce < n0 + N);
    if (res[i].nonce >= n0 && res[i].nonce < n0 + N) seen |= 1ull << (res[i].nonce - n0);
  }
  CHECK_INT(seen, (1ull << N) - 1);
  CHECK_INT(nonce_of(rpc, 4), n0 + N);
  CHECK_INT(balance_of(rpc, &to), N * (N + 1) / 2);
  tg_txm_stats stt;
  tg_txm_stats_get(m, &stt);
  CHECK_INT(stt.failed, 0);
  CHECK_INT(stt.unbatched, 0); /* the 1 MiB cap kept every batch readable */
  tg_txm_free(m);
  tg_seckey_free(key);
  tg_rpc_free(rpc);
  tgt_anvil_free(a);
}

static void test_fee_ceiling_waits(void) {
  /* The base fee above the ceiling: the transaction waits unsigned, then goes out capped. */
  tgt_anvil_opts ao = {.no_mining = 1};
  tgt_anvil *a = tgt_anvil_start(&ao);
  CHECK(a != NULL);
  if (!a) return;
  CHECK_OK(tgt_anvil_set_next_base_fee(a, 50000000000ull));
  CHECK_OK(tgt_anvil_mine(a, 1));
  tg_rpc *rpc = rpc_for(a);
  tg_seckey *key = dev_key(3);
  tg_txm_opts o;
  tg_txm_opts_init(&o);
  o.rpc = rpc;
  o.key = key;
  o.poll_ms = 100;
  o.resend_ms = 500;
  tg_u256_from_u64(&o.max_fee_ceiling, 10000000000ull); /* 10 gwei */
  tg_txm *m = NULL;
  CHECK_OK(tg_txm_open(&m, &o));
  if (!m) return;
  uint64_t n0 = nonce_of(rpc, 3);
  tg_address to = sink(9);
  tg_txm_request rq = {.has_to = 1, .to = to, .gas_limit = 21000};
  tg_u256_from_u64(&rq.value, 4);
  tg_txm_result res;
  memset(&res, 0, sizeof res);
  uint64_t id;
  CHECK_OK(tg_txm_submit(m, &rq, one_cb, &res, &id));
  CHECK_ERR(tg_txm_run_until_idle(m, 800), TG_ETIMEOUT);
  tg_txm_result mid;
  CHECK_OK(tg_txm_get(m, id, &mid));
  CHECK_INT(mid.versions, 0); /* nothing signed while the chain is dearer than the ceiling */
  /* The chain gets cheap again. */
  CHECK_OK(tgt_anvil_set_next_base_fee(a, 1000000000ull));
  CHECK_OK(tgt_anvil_mine(a, 1));
  mine_until(a, m, &res, 300, 20000);
  CHECK_INT(res.state, TG_TXM_CONFIRMED);
  CHECK_INT(nonce_of(rpc, 3), n0 + 1);
  uint64_t egp = UINT64_MAX;
  CHECK_OK(tg_u256_to_u64(&res.effective_gas_price, &egp));
  CHECK(egp <= 10000000000ull);
  CHECK_INT(balance_of(rpc, &to), 4);
  tg_txm_free(m);
  tg_seckey_free(key);
  tg_rpc_free(rpc);
  tgt_anvil_free(a);
}

static void test_anvil_reorg_resubmits(void) {
  /* anvil_reorg replaces the blocks that held the transactions with empty ones. */
  tgt_anvil *a = tgt_anvil_start(NULL);
  CHECK(a != NULL);
  if (!a) return;
  tg_rpc *rpc = rpc_for(a);
  tg_seckey *key = dev_key(0);
  tg_txm_opts o;
  tg_txm_opts_init(&o);
  o.rpc = rpc;
  o.key = key;
  o.poll_ms = 100;
  o.resend_ms = 1000;
  o.confirmations = 6;
  tg_txm *m = NULL;
  CHECK_OK(tg_txm_open(&m, &o));
  if (!m) return;
  CHECK_OK(tgt_anvil_mine(a, 5)); /* history to reorganise */
  tg_address to = sink(10);
  tg_txm_result res[2];
  uint64_t ids[2];
  memset(res, 0, sizeof res);
  for (int i = 0; i < 2; i++) {
    tg_txm_request rq = {.has_to = 1, .to = to, .gas_limit = 21000};
    tg_u256_from_u64(&rq.value, 1000);
    CHECK_OK(tg_txm_submit(m, &rq, one_cb, &res[i], &ids[i]));
  }
  uint64_t end = now_ms() + 10000, low = UINT64_MAX;
  int mined = 0;
  while (mined < 2 && now_ms() < end) {
    (void)!tg_txm_run_until_idle(m, 100);
    mined = 0;
    for (int i = 0; i < 2; i++) {
      tg_txm_result r;
      if (tg_txm_get(m, ids[i], &r) == 0 && r.state == TG_TXM_MINED) {
        mined++;
        if (r.block_number < low) low = r.block_number;
      }
    }
  }
  CHECK_INT(mined, 2);
  uint64_t head = tgt_anvil_block_number(a);
  CHECKF(tgt_anvil_reorg(a, (unsigned)(head - low + 1)) == 0, "anvil_reorg: %s", tgt_rpc_error());
  end = now_ms() + 30000;
  while (tg_txm_pending(m) > 0 && now_ms() < end) {
    if (tg_txm_run_until_idle(m, 200) == 0) break;
    CHECK_OK(tgt_anvil_mine(a, 1));
  }
  for (int i = 0; i < 2; i++) CHECK_INT(res[i].state, TG_TXM_CONFIRMED);
  tg_txm_stats st;
  tg_txm_stats_get(m, &st);
  CHECK(st.reorgs >= 2);
  CHECK_INT(balance_of(rpc, &to), 2000);
  tg_txm_free(m);
  tg_seckey_free(key);
  tg_rpc_free(rpc);
  tgt_anvil_free(a);
}

static void test_estimate_and_revert(void) {
  /* gas_limit 0: estimated with the margin; a call that would revert fails without a nonce. */
  tgt_anvil *a = tgt_anvil_start(NULL);
  CHECK(a != NULL);
  if (!a) return;
  json_t *r = tgt_rpc(a->url, "anvil_setCode",
                      "[\"0x1000000000000000000000000000000000000002\",\"0x602a60005260206000fd\"]");
  json_decref(r);
  tg_rpc *rpc = rpc_for(a);
  tg_seckey *key = dev_key(4);
  tg_txm_opts o;
  tg_txm_opts_init(&o);
  o.rpc = rpc;
  o.key = key;
  o.poll_ms = 100;
  tg_txm *m = NULL;
  CHECK_OK(tg_txm_open(&m, &o));
  if (!m) return;
  uint64_t n0 = nonce_of(rpc, 4);
  tg_txm_request bad = {.has_to = 1, .to = addr_of("0x1000000000000000000000000000000000000002")};
  tg_txm_request good = {.has_to = 1, .to = sink(11)};
  tg_u256_from_u64(&good.value, 5);
  tg_txm_result rb, rg;
  memset(&rb, 0, sizeof rb);
  memset(&rg, 0, sizeof rg);
  CHECK_OK(tg_txm_submit(m, &bad, one_cb, &rb, NULL));
  CHECK_OK(tg_txm_submit(m, &good, one_cb, &rg, NULL));
  CHECK_OK(tg_txm_run_until_idle(m, 20000));
  CHECK_INT(rb.state, TG_TXM_FAILED);
  CHECK_INT(rb.err, TG_ERPC_REVERTED);
  CHECK_INT(rb.versions, 0);
  CHECK_INT(rg.state, TG_TXM_CONFIRMED);
  CHECK_INT(rg.gas_used, 21000);
  CHECK_INT(rg.nonce, n0);
  CHECK_INT(nonce_of(rpc, 4), n0 + 1);
  /* Signed with 21000 + 20 %. */
  char hx[80], p[128];
  for (int i = 0; i < 32; i++) snprintf(hx + 2 * i, 3, "%02x", rg.tx_hash.b[i]);
  snprintf(p, sizeof p, "[\"0x%s\"]", hx);
  json_t *tx = tgt_rpc(a->url, "eth_getTransactionByHash", p);
  CHECK_STR(json_string_value(json_object_get(tx, "gas")), "0x6270");
  json_decref(tx);
  tg_txm_free(m);
  tg_seckey_free(key);
  tg_rpc_free(rpc);
  tgt_anvil_free(a);
}

int main(void) {
  RUN(test_burst_2000);
  RUN(test_under_base_fee_replaced);
  RUN(test_restart_node_forgot);
  RUN(test_node_restart_midstream);
  RUN(test_sigkill_resume);
  RUN(test_reorg_resubmits);
  RUN(test_anvil_reorg_resubmits);
  RUN(test_nonce_taken_elsewhere);
  RUN(test_refused_fills_nonce);
  RUN(test_big_transactions_batched);
  RUN(test_fee_ceiling_waits);
  RUN(test_estimate_and_revert);
  return tgt_done();
}
