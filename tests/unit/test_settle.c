/* Settlement against anvil: 1,000 channels in a handful of transactions, SIGKILL at random points, a bad voucher skipped. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "settle_fixture.h"
#include "tg_test.h"
#include "tollgate/hex.h"

static uint64_t amount_a(size_t i, unsigned j) { return 100 + (uint64_t)i * 7 + (uint64_t)j * 13; }

static const tg_address *receivers(sfx *f, tg_address r[3]) {
  r[0] = f->gw;
  memset(&r[1], 0, sizeof r[1]);
  memset(&r[2], 0, sizeof r[2]);
  r[1].b[19] = 0x11;
  r[1].b[0] = 0xa1;
  r[2].b[19] = 0x22;
  r[2].b[0] = 0xa2;
  return r;
}

/* No artifacts (contracts not built yet) is an environment condition, like a missing anvil:
 * skipped with the reason; anything else fails. */
static void sfx_fail_start(int rc) {
  if (rc == TG_EDEPLOY_ARTIFACT)
    tgt_skip("contract artifacts missing: run contracts/export-artifacts.sh (or set TG_ARTIFACTS)");
  else
    CHECK_OK(rc);
}

static void settle_opts(sfx *f, tg_settle_opts *o, tg_store *st) {
  tg_settle_opts_init(o);
  o->store = st;
  o->rpc = f->rpc;
  o->key = f->gw_key;
  o->deployment = &f->dep;
  o->txm_journal = f->journal;
  o->timeout_ms = 120000;
}

/* Sum of charges per receiver, and each receiver's USDC balance, must agree exactly. */
static void check_balances(sfx *f, const sfx_chan *ch, size_t n, const tg_address *rs, size_t nr,
                           const tg_u256 *before) {
  for (size_t r = 0; r < nr; r++) {
    tg_u256 want = before[r];
    for (size_t i = 0; i < n; i++)
      if (!ch[i].bad_sig && tg_address_eq(&ch[i].cfg.receiver, &rs[r]))
        CHECK_OK(tg_u256_add(&want, &want, &ch[i].charged));
    tg_u256 got;
    CHECK_OK(sfx_balance_of(f, &rs[r], &got));
    char a[TG_U256_DEC_MAX] = "", b[TG_U256_DEC_MAX] = "";
    a[tg_u256_to_dec(&got, a)] = 0;
    b[tg_u256_to_dec(&want, b)] = 0;
    CHECKF(tg_u256_cmp(&got, &want) == 0, "receiver %zu holds %s, charged %s", r, a, b);
  }
}

typedef struct {
  int unsettled;
} settled_ctx;

static int settled_cb(void *arg, const tg_store_charge *c) {
  settled_ctx *x = arg;
  if (!c->settled) x->unsettled++;
  return 0;
}

/* Every charge of every good channel is settled, and the mirror equals the charged total. */
static void check_store(tg_store *st, const sfx_chan *ch, size_t n) {
  int bad = 0;
  for (size_t i = 0; i < n; i++) {
    tg_store_channel sc;
    CHECK_OK(tg_store_channel_get(st, &ch[i].id, &sc));
    settled_ctx x = {0};
    CHECK_OK(tg_store_charges_by_channel(st, &ch[i].id, 0, 0, settled_cb, &x));
    if (ch[i].bad_sig) {
      CHECK(x.unsettled == (int)ch[i].n_charges);
      CHECK(tg_u256_is_zero(&sc.chain.total_claimed));
      continue;
    }
    if (x.unsettled || tg_u256_cmp(&sc.chain.total_claimed, &ch[i].charged) != 0 ||
        tg_u256_cmp(&sc.charged, &ch[i].charged) != 0)
      bad++;
  }
  CHECKF(bad == 0, "%d channels not settled exactly in the store", bad);
}

/* Claimed events: how often each channel was claimed, over the whole chain. */
typedef struct {
  const sfx_chan *ch;
  size_t n;
  int *count;
  tg_abi_sig *sig;
  int bad;
} claimed_ctx;

static int claimed_cb(void *arg, const tg_eth_log *l) {
  claimed_ctx *x = arg;
  tg_abi_tree *t = NULL;
  if (tg_abi_decode(&t, x->sig->inputs, l->data, l->data_len, 0) != 0) {
    x->bad++;
    return 0;
  }
  /* claims: packed records channelId (32) || W (1) || totalClaimed (W bytes, 1 <= W <= 16) */
  const tg_bytes *claims = &t->root.items[1].bytes;
  size_t k = 0;
  while (k < claims->len) {
    size_t w = k + 33 <= claims->len ? claims->ptr[k + 32] : 0;
    if (w < 1 || w > 16 || k + 33 + w > claims->len) {
      x->bad++;
      break;
    }
    size_t i = 0;
    for (; i < x->n; i++)
      if (!memcmp(x->ch[i].id.b, claims->ptr + k, 32)) break;
    if (i < x->n) x->count[i]++;
    else x->bad++;
    k += 33 + w;
  }
  tg_abi_tree_free(t);
  return 0;
}

static void check_claimed_once(sfx *f, const sfx_chan *ch, size_t n) {
  claimed_ctx x = {ch, n, calloc(n, sizeof(int)), NULL, 0};
  CHECK_OK(tg_abi_sig_parse(&x.sig, "(uint256,bytes)", strlen("(uint256,bytes)")));
  tg_hash topic;
  CHECK_OK(tg_abi_event_topic(&topic, "Claimed(address,address,address,uint256,bytes)", strlen("Claimed(address,address,address,uint256,bytes)")));
  tg_eth_log_filter fl = {0};
  uint64_t head = 0;
  CHECK_OK(tg_eth_block_number(f->rpc, &head));
  fl.from_block = 0;
  fl.to_block = head;
  fl.addresses = &f->dep.c[TG_CONTRACT_CHANNELS].address;
  fl.n_addresses = 1;
  fl.topics[0] = &topic;
  fl.n_topic_alts[0] = 1;
  CHECK_OK(tg_eth_get_logs(f->rpc, &fl, claimed_cb, &x));
  int twice = 0, never = 0;
  for (size_t i = 0; i < n; i++) {
    if (ch[i].bad_sig) continue;
    if (x.count[i] > 1) twice++;
    if (x.count[i] == 0) never++;
  }
  CHECKF(twice == 0 && never == 0 && x.bad == 0, "claimed twice: %d, never: %d, foreign: %d",
         twice, never, x.bad);
  tg_abi_sig_free(x.sig);
  free(x.count);
}

/* (a) 1,000 channels, 3 receivers, 3 charges each: a dry run, then one run (a handful of
 * transactions: one claim and one sweep per receiver), then nothing left. */
static void test_settle_many(void) {
  sfx f;
  int rc = sfx_start(&f, 1, NULL);
  if (rc) {
    sfx_fail_start(rc);
    sfx_stop(&f);
    return;
  }
  enum { N = 1000 };
  tg_address rs[3];
  receivers(&f, rs);
  sfx_chan *ch = calloc(N, sizeof *ch);
  CHECK_OK(sfx_open_channels(&f, ch, N, rs, 3, 150));
  tg_u256 before[3];
  for (int r = 0; r < 3; r++) CHECK_OK(sfx_balance_of(&f, &rs[r], &before[r]));
  tg_store *st = NULL;
  CHECK_OK(tg_store_open(&st, f.store_uri, NULL));
  CHECK_OK(sfx_record(&f, st, ch, 0, N, 3, amount_a, "a"));

  tg_settle_opts o;
  tg_settle_report rep;
  settle_opts(&f, &o, st);
  o.dry_run = 1;
  CHECK_OK(tg_settle_run(&rep, &o));
  CHECK_INT(rep.channels_planned, N);
  CHECK_INT(rep.n_txs, 3); /* one batch per (receiver, authorizer, token) group */
  CHECK(rep.gas_estimate > 0);
  tg_u256 want_total;
  tg_u256_zero(&want_total);
  for (size_t i = 0; i < N; i++) CHECK_OK(tg_u256_add(&want_total, &want_total, &ch[i].charged));
  CHECK(tg_u256_cmp(&rep.amount_planned, &want_total) == 0);
  tg_store_settle_run sr;
  CHECK_ERR(tg_store_run_open_get(st, &sr), TG_ENOTFOUND); /* a dry run writes nothing */
  tg_settle_report_cleanup(&rep);
  /* A cap on the claim's calldata (the default keeps each under a node pool's 128 KiB) cuts
   * the batches by size before estimating: an item takes at least its 64-byte signature, so
   * a 12,000-byte claim holds at most 187 of them: 10 claims here instead of 3, every channel
   * in one of them. */
  o.policy.max_batch_bytes = 12000;
  CHECK_OK(tg_settle_run(&rep, &o));
  CHECK_INT(rep.channels_planned, N);
  CHECKF(rep.n_txs >= 6, "%zu claims under a 12,000-byte cap", rep.n_txs);
  size_t items = 0;
  for (size_t i = 0; i < rep.n_txs; i++) {
    CHECK(rep.txs[i].items <= 12000 / 64);
    items += rep.txs[i].items;
  }
  CHECK_INT(items, N);
  tg_settle_report_cleanup(&rep);
  o.policy.max_batch_bytes = 0;

  o.dry_run = 0;
  rc = tg_settle_run(&rep, &o);
  CHECK_OK(rc);
  CHECK_INT(rep.channels_claimed, N);
  CHECK_INT(rep.n_problems, 0);
  CHECK(tg_u256_cmp(&rep.amount_claimed, &want_total) == 0);
  CHECK(tg_u256_cmp(&rep.amount_swept, &want_total) == 0);
  size_t claims = 0, sweeps = 0;
  for (size_t i = 0; i < rep.n_txs; i++) {
    CHECK_INT(rep.txs[i].status, 1);
    if (rep.txs[i].is_sweep) sweeps++;
    else claims++;
  }
  CHECK_INT(claims, 3);
  CHECK_INT(sweeps, 3);
  CHECK(rep.gas_used > 0);
  CHECKF(!tg_u256_is_zero(&rep.fee_paid), "no fee reported");
  printf("# %d channels: %zu claim + %zu sweep transactions, %llu gas\n", N, claims, sweeps,
         (unsigned long long)rep.gas_used);
  tg_settle_report_cleanup(&rep);
  check_balances(&f, ch, N, rs, 3, before);
  check_store(st, ch, N);
  CHECK_ERR(tg_store_run_open_get(st, &sr), TG_ENOTFOUND); /* the run was closed */

  /* A second run has nothing to do. */
  CHECK_OK(tg_settle_run(&rep, &o));
  CHECK_INT(rep.channels_unsettled, 0);
  CHECK_INT(rep.n_txs, 0);
  tg_settle_report_cleanup(&rep);
  check_claimed_once(&f, ch, N);

  tg_store_close(st);
  free(ch);
  sfx_stop(&f);
}

/* The child: one settlement run on its own store and RPC connections. */
static unsigned g_child_confirmations = 1;

static int child_run(sfx *f) {
  tg_store *st = NULL;
  tg_rpc *rpc = NULL;
  if (tg_store_open(&st, f->store_uri, NULL) != 0) return 2;
  if (sfx_rpc_new(&rpc, f->anvil->url) != 0) return 3;
  tg_settle_opts o;
  settle_opts(f, &o, st);
  o.rpc = rpc;
  o.policy.confirmations = g_child_confirmations;
  tg_settle_report rep;
  int rc = tg_settle_run(&rep, &o);
  tg_settle_report_cleanup(&rep);
  tg_rpc_free(rpc);
  tg_store_close(st);
  return rc ? 1 : 0;
}

/* (b) SIGKILL of the settlement at random points, then restarts: exact, nothing twice. */
static void test_settle_sigkill(void) {
  sfx f;
  int rc = sfx_start(&f, 1, NULL);
  if (rc) {
    sfx_fail_start(rc);
    sfx_stop(&f);
    return;
  }
  enum { N = 100, ROUNDS = 10 };
  tg_address rs[3];
  receivers(&f, rs);
  sfx_chan *ch = calloc(N, sizeof *ch);
  CHECK_OK(sfx_open_channels(&f, ch, N, rs, 3, 90));
  tg_u256 before[3];
  for (int r = 0; r < 3; r++) CHECK_OK(sfx_balance_of(&f, &rs[r], &before[r]));
  tg_store *st = NULL;

  unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
  printf("# sigkill seed %u\n", seed);
  srand(seed);
  int kills = 0;
  for (int round = 0; round < ROUNDS; round++) {
    /* Each round brings charges for its own slice of channels, so every round has work and a
     * slice whose claim was killed before it was sent is claimed by a later round: once. */
    size_t lo = (size_t)round * N / ROUNDS, hi = (size_t)(round + 1) * N / ROUNDS;
    CHECK_OK(tg_store_open(&st, f.store_uri, NULL));
    CHECK_OK(sfx_record(&f, st, ch, lo, hi - lo, 2, amount_a, "b"));
    tg_store_close(st);
    st = NULL;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) _exit(child_run(&f));
    CHECK(pid > 0);
    if (pid <= 0) break;
    unsigned delay_ms = 100 + (unsigned)(rand() % 3500);
    int status = 0;
    pid_t w = 0;
    for (unsigned t = 0; t < delay_ms && w == 0; t += 10) {
      usleep(10000);
      w = waitpid(pid, &status, WNOHANG);
    }
    if (w == 0) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      kills++;
      printf("# round %d: killed after %u ms\n", round, delay_ms);
    } else {
      printf("# round %d: finished (status %d) before the kill at %u ms\n", round,
             WIFEXITED(status) ? WEXITSTATUS(status) : -1, delay_ms);
    }
  }
  CHECK(kills > 0);
  /* The final run, to completion. */
  CHECK_OK(tg_store_open(&st, f.store_uri, NULL));
  tg_settle_opts o;
  tg_settle_report rep;
  settle_opts(&f, &o, st);
  CHECK_OK(tg_settle_run(&rep, &o));
  CHECK_INT(rep.n_problems, 0);
  tg_settle_report_cleanup(&rep);
  check_balances(&f, ch, N, rs, 3, before);
  check_store(st, ch, N);
  check_claimed_once(&f, ch, N);
  tg_store_settle_run sr;
  CHECK_ERR(tg_store_run_open_get(st, &sr), TG_ENOTFOUND);
  tg_store_close(st);
  free(ch);
  sfx_stop(&f);
}

/* (c) a voucher signed by the wrong key: the contract skips it (reason 4) and the others go
 * through; with the off-chain check on, it is dropped before any gas is spent on it. */
static void test_settle_bad_voucher(void) {
  sfx f;
  int rc = sfx_start(&f, 1, NULL);
  if (rc) {
    sfx_fail_start(rc);
    sfx_stop(&f);
    return;
  }
  enum { N = 12, BAD = 5 };
  tg_address rs[3];
  receivers(&f, rs);
  sfx_chan *ch = calloc(N, sizeof *ch);
  CHECK_OK(sfx_open_channels(&f, ch, N, rs, 1, N));
  ch[BAD].bad_sig = 1;
  tg_u256 before[1];
  CHECK_OK(sfx_balance_of(&f, &rs[0], &before[0]));
  tg_store *st = NULL;
  CHECK_OK(tg_store_open(&st, f.store_uri, NULL));
  CHECK_OK(sfx_record(&f, st, ch, 0, N, 2, amount_a, "c"));
  tg_settle_opts o;
  tg_settle_report rep;
  settle_opts(&f, &o, st);
  o.policy.verify_vouchers = 0;
  CHECK_OK(tg_settle_run(&rep, &o));
  CHECK_INT(rep.channels_claimed, N - 1);
  CHECK_INT(rep.n_problems, 1);
  if (rep.n_problems == 1) {
    CHECK_MEM(rep.problems[0].channel_id.b, ch[BAD].id.b, 32);
    CHECK_INT(rep.problems[0].skip_reason, 4);
    CHECK_INT(rep.problems[0].err, TG_ESETTLE_SKIPPED);
  }
  tg_settle_report_cleanup(&rep);
  check_balances(&f, ch, N, rs, 1, before);
  check_store(st, ch, N);

  /* Again with the off-chain check: no claim transaction at all, the same problem reported. */
  o.policy.verify_vouchers = 1;
  CHECK_OK(tg_settle_run(&rep, &o));
  CHECK_INT(rep.channels_unsettled, 1);
  CHECK_INT(rep.channels_planned, 0);
  CHECK_INT(rep.n_problems, 1);
  CHECK_INT(rep.n_txs, 0);
  if (rep.n_problems == 1) {
    CHECK_INT(rep.problems[0].skip_reason, 4);
    CHECK_INT(rep.problems[0].err, TG_ESIG_MISMATCH);
  }
  tg_settle_report_cleanup(&rep);
  tg_store_close(st);
  free(ch);
  sfx_stop(&f);
}

/* Reads one decimal number from a stream (no sscanf/atoi). */
static int fscanf_lines(FILE *p, int *out) {
  char b[64];
  if (!fgets(b, sizeof b, p)) return -1;
  char *end = NULL;
  long v = strtol(b, &end, 10);
  if (end == b) return -1;
  *out = (int)v;
  return 0;
}

/* anvil stopped and started again (state kept, pending transactions lost) during a run. */
static void test_settle_node_restart(void) {
  sfx f;
  char state[128];
  snprintf(state, sizeof state, "/tmp/tg_settle_state_%ld.json", (long)getpid());
  unlink(state);
  int rc = sfx_start_ex(&f, 1, NULL, state);
  if (rc) {
    sfx_fail_start(rc);
    sfx_stop(&f);
    return;
  }
  enum { N = 60 };
  tg_address rs[3];
  receivers(&f, rs);
  sfx_chan *ch = calloc(N, sizeof *ch);
  CHECK_OK(sfx_open_channels(&f, ch, N, rs, 3, N));
  tg_u256 before[3];
  for (int r = 0; r < 3; r++) CHECK_OK(sfx_balance_of(&f, &rs[r], &before[r]));
  tg_store *st = NULL;
  CHECK_OK(tg_store_open(&st, f.store_uri, NULL));
  CHECK_OK(sfx_record(&f, st, ch, 0, N, 2, amount_a, "r"));
  tg_store_close(st);
  st = NULL;
  srand((unsigned)time(NULL) ^ (unsigned)getpid());
  unsigned delay_ms = 300 + (unsigned)(rand() % 2000);
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) _exit(child_run(&f));
  CHECK(pid > 0);
  usleep(delay_ms * 1000);
  CHECK_OK(tgt_anvil_restart(f.anvil));
  int status = 0;
  waitpid(pid, &status, 0);
  printf("# anvil restarted after %u ms; the interrupted run exited with %d\n", delay_ms,
         WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  /* whatever that run managed, the next one finishes exactly */
  tg_rpc_free(f.rpc);
  CHECK_OK(sfx_rpc_new(&f.rpc, f.anvil->url));
  CHECK_OK(tg_store_open(&st, f.store_uri, NULL));
  tg_settle_opts o;
  tg_settle_report rep;
  settle_opts(&f, &o, st);
  CHECK_OK(tg_settle_run(&rep, &o));
  CHECK_INT(rep.n_problems, 0);
  tg_settle_report_cleanup(&rep);
  check_balances(&f, ch, N, rs, 3, before);
  check_store(st, ch, N);
  check_claimed_once(&f, ch, N);
  tg_store_close(st);
  free(ch);
  sfx_stop(&f);
  unlink(state);
}

/* The block of the first Claimed event, 0 when none yet. */
static int first_claim_cb(void *arg, const tg_eth_log *l) {
  uint64_t *b = arg;
  if (!*b || l->block_number < *b) *b = l->block_number;
  return 0;
}

/* A reorg drops the block holding a claim before it is confirmed: the run recovers, exactly. */
static void test_settle_reorg(void) {
  sfx f;
  int rc = sfx_start(&f, 1, NULL);
  if (rc) {
    sfx_fail_start(rc);
    sfx_stop(&f);
    return;
  }
  enum { N = 30 };
  tg_address rs[3];
  receivers(&f, rs);
  sfx_chan *ch = calloc(N, sizeof *ch);
  CHECK_OK(sfx_open_channels(&f, ch, N, rs, 3, N));
  tg_u256 before[3];
  for (int r = 0; r < 3; r++) CHECK_OK(sfx_balance_of(&f, &rs[r], &before[r]));
  tg_store *st = NULL;
  CHECK_OK(tg_store_open(&st, f.store_uri, NULL));
  CHECK_OK(sfx_record(&f, st, ch, 0, N, 2, amount_a, "g"));
  tg_store_close(st);
  st = NULL;
  tg_hash topic;
  const char *ev = "Claimed(address,address,address,uint256,bytes)";
  CHECK_OK(tg_abi_event_topic(&topic, ev, strlen(ev)));
  g_child_confirmations = 4;
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) _exit(child_run(&f));
  g_child_confirmations = 1;
  CHECK(pid > 0);
  int reorged = 0, status = 0;
  for (int t = 0; t < 3000 && !reorged; t++) {
    usleep(20000);
    if (waitpid(pid, &status, WNOHANG) == pid) {
      pid = 0;
      break;
    }
    uint64_t head = 0, first = 0;
    if (tg_eth_block_number(f.rpc, &head) != 0) continue;
    tg_eth_log_filter fl = {0};
    fl.from_block = f.dep.deploy_block;
    fl.to_block = head;
    fl.addresses = &f.dep.c[TG_CONTRACT_CHANNELS].address;
    fl.n_addresses = 1;
    fl.topics[0] = &topic;
    fl.n_topic_alts[0] = 1;
    int lr = tg_eth_get_logs(f.rpc, &fl, first_claim_cb, &first);
    if (getenv("TG_DEBUG_REORG"))
      fprintf(stderr, "head %llu first %llu rc %d\n", (unsigned long long)head,
              (unsigned long long)first, lr);
    if (lr != 0 || !first) continue;
    if (head + 1 - first < 4) {
      CHECK_OK(tgt_anvil_reorg(f.anvil, (unsigned)(head + 1 - first)));
      printf("# reorg of %llu blocks dropped the claim mined in block %llu\n",
             (unsigned long long)(head + 1 - first), (unsigned long long)first);
      reorged = 1;
    }
  }
  if (pid > 0) waitpid(pid, &status, 0);
  CHECKF(reorged, "no reorg happened (the run exited with %d)",
         WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  CHECK_OK(tg_store_open(&st, f.store_uri, NULL));
  tg_settle_opts o;
  tg_settle_report rep;
  settle_opts(&f, &o, st);
  CHECK_OK(tg_settle_run(&rep, &o));
  CHECK_INT(rep.n_problems, 0);
  tg_settle_report_cleanup(&rep);
  check_balances(&f, ch, N, rs, 3, before);
  check_store(st, ch, N);
  check_claimed_once(&f, ch, N);
  tg_store_close(st);
  free(ch);
  sfx_stop(&f);
}

/* The policy: nothing is due under a high minimum; a withdrawal in progress is a deadline that
 * overrides it and the gas ceiling; the age rule makes the rest due. */
static void test_settle_policy(void) {
  sfx f;
  int rc = sfx_start(&f, 1, NULL);
  if (rc) {
    sfx_fail_start(rc);
    sfx_stop(&f);
    return;
  }
  enum { N = 6, W = 2 };
  sfx_chan *ch = calloc(N, sizeof *ch);
  CHECK_OK(sfx_open_channels(&f, ch, N, &f.gw, 1, N));
  tg_store *st = NULL;
  CHECK_OK(tg_store_open(&st, f.store_uri, NULL));
  CHECK_OK(sfx_record(&f, st, ch, 0, N, 2, amount_a, "p"));
  tg_settle_opts o;
  tg_settle_report rep;
  settle_opts(&f, &o, st);
  tg_u256_from_u64(&o.policy.min_amount, 1000000);
  CHECK_OK(tg_settle_run(&rep, &o));
  CHECK_INT(rep.channels_waiting, N);
  CHECK_INT(rep.channels_planned, 0);
  CHECK_INT(rep.n_txs, 0);
  tg_settle_report_cleanup(&rep);

  /* payer W starts a timed withdrawal (its own transaction) */
  tg_seckey *pk = tg_seckey_new();
  CHECK_OK(sfx_payer_key(pk, W));
  char hex[TG_ADDRESS_HEX_LEN];
  tg_address_to_hex(&ch[W].cfg.payer, hex);
  CHECK_INT(tgt_anvil_set_balance(f.anvil, hex, "0x56bc75e2d63100000"), 0);
  const tg_channel_config *c = &ch[W].cfg;
  tg_abi_value cv[7] = {tg_abi_val_address(&c->payer), tg_abi_val_address(&c->payer_authorizer),
                        tg_abi_val_address(&c->receiver), tg_abi_val_address(&c->receiver_authorizer),
                        tg_abi_val_address(&c->token), tg_abi_val_u64(c->withdraw_delay),
                        tg_abi_val_fixed(c->salt.b, 32)};
  tg_abi_value args[2] = {tg_abi_val_list(cv, 7), tg_abi_val_u64(1000)};
  tg_buf call;
  CHECK_OK(sfx_call(&call, &f.dep.c[TG_CONTRACT_CHANNELS].address,
                    "initiateWithdraw((address,address,address,address,address,uint40,bytes32),uint128)",
                    args, 2));
  tg_seckey *saved = f.funder_key;
  f.funder_key = pk;
  CHECK_OK(sfx_send(&f, &call, 1));
  f.funder_key = saved;
  tg_buf_cleanup(&call);
  tg_seckey_free(pk);

  /* the deadline goes through the minimum and a gas ceiling of 1 wei; the others wait */
  tg_u256_from_u64(&o.policy.max_gas_price, 1);
  CHECK_OK(tg_settle_run(&rep, &o));
  CHECK_INT(rep.channels_planned, 1);
  CHECK_INT(rep.channels_claimed, 1);
  CHECK_INT(rep.channels_waiting, N - 1);
  tg_settle_report_cleanup(&rep);
  tg_store_channel sc;
  CHECK_OK(tg_store_channel_get(st, &ch[W].id, &sc));
  CHECK(tg_u256_cmp(&sc.chain.total_claimed, &ch[W].charged) == 0);
  CHECK_INT(sc.chain.status, TG_CHANNEL_WITHDRAWING);
  CHECK(sc.chain.withdraw_requested_at > 0);

  /* an hour later with a 60 s age limit, every other channel is due */
  tg_u256_zero(&o.policy.max_gas_price);
  o.policy.max_age_ms = 60000;
  o.now_ms = (int64_t)time(NULL) * 1000 + 3600000;
  CHECK_OK(tg_settle_run(&rep, &o));
  CHECK_INT(rep.channels_planned, N - 1);
  CHECK_INT(rep.channels_claimed, N - 1);
  tg_settle_report_cleanup(&rep);
  check_store(st, ch, N);
  tg_store_close(st);
  free(ch);
  sfx_stop(&f);
}

static json_t *run_json(const char *cmdline, int *status) {
  FILE *p = popen(cmdline, "r");
  if (!p) return NULL;
  char buf[65536];
  size_t n = fread(buf, 1, sizeof buf - 1, p);
  buf[n] = 0;
  int st = pclose(p);
  *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return json_loads(buf, 0, NULL);
}

static const char *tollgate_bin(void) {
  static char path[256];
  const char *b = getenv("BUILD");
  snprintf(path, sizeof path, "%s/%s/tollgate", tgt_root(), b && *b ? b : "build");
  return path;
}

/* The CLI: `tollgate settle --dry-run --json`, `tollgate settle --json`, `tollgate report --json`. */
static void test_settle_cli(void) {
  sfx f;
  int rc = sfx_start(&f, 1, NULL);
  if (rc) {
    sfx_fail_start(rc);
    sfx_stop(&f);
    return;
  }
  enum { N = 9 };
  tg_address rs[3];
  receivers(&f, rs);
  sfx_chan *ch = calloc(N, sizeof *ch);
  CHECK_OK(sfx_open_channels(&f, ch, N, rs, 3, N));
  tg_store *st = NULL;
  CHECK_OK(tg_store_open(&st, f.store_uri, NULL));
  CHECK_OK(sfx_record(&f, st, ch, 0, N, 4, amount_a, "cli"));
  tg_store_close(st);
  tg_u256 total;
  tg_u256_zero(&total);
  for (size_t i = 0; i < N; i++) CHECK_OK(tg_u256_add(&total, &total, &ch[i].charged));
  char want[TG_U256_DEC_MAX] = "";
  want[tg_u256_to_dec(&total, want)] = 0;
  char cmd[1024];
  int status = -1;
  /* the anvil default key (account 0, the gateway) is used on chain 31337 */
  snprintf(cmd, sizeof cmd, "%s settle --store %s --deployment %s --rpc-url %s --dry-run --json",
           tollgate_bin(), f.store_uri, f.deployment_path, f.anvil->url);
  json_t *j = run_json(cmd, &status);
  CHECK_INT(status, 0);
  CHECK(j && json_is_true(json_object_get(j, "dryRun")));
  CHECK_STR(json_string_value(json_object_get(j, "amountPlanned")), want);
  CHECK_INT(json_array_size(json_object_get(j, "transactions")), 3);
  json_decref(j);
  /* A live lease of tollgated with the same key: the manual run is refused, says so, and
   * neither writes nor sends anything; once that lease has expired, it goes. */
  {
    char gwhex[TG_ADDRESS_HEX_LEN], holder[80], out[4096];
    tg_address_to_hex(&f.gw, gwhex);
    snprintf(holder, sizeof holder, "%s:%s", TG_SETTLE_HOLDER_DAEMON, gwhex);
    CHECK_OK(tg_store_open(&st, f.store_uri, NULL));
    tg_store_op lop = {0};
    lop.kind = TG_STORE_OP_LEASE_ACQUIRE;
    lop.u.lease.name = "settlement";
    lop.u.lease.holder = holder;
    lop.u.lease.ttl_ms = 60000;
    CHECK_OK(tg_store_write(st, &lop, 1));
    uint64_t nonce0 = 0, nonce1 = 0;
    CHECK_OK(tg_eth_get_transaction_count(f.rpc, &nonce0, &f.gw, "pending"));
    snprintf(cmd, sizeof cmd, "%s settle --store %s --deployment %s --rpc-url %s 2>&1",
             tollgate_bin(), f.store_uri, f.deployment_path, f.anvil->url);
    FILE *p = popen(cmd, "r");
    size_t n = p ? fread(out, 1, sizeof out - 1, p) : 0;
    out[n] = 0;
    int st2 = p ? pclose(p) : -1;
    CHECKF(WIFEXITED(st2) && WEXITSTATUS(st2) == 1, "exit status %d", st2);
    CHECKF(strstr(out, "refused") && strstr(out, "of tollgated") && strstr(out, holder), "message: %s", out);
    tg_store_settle_run sr0;
    CHECK_ERR(tg_store_run_open_get(st, &sr0), TG_ENOTFOUND); /* no run was opened */
    CHECK_OK(tg_eth_get_transaction_count(f.rpc, &nonce1, &f.gw, "pending"));
    CHECK(nonce1 == nonce0);
    tg_store_lease l;
    CHECK_OK(tg_store_lease_get(st, "settlement", &l));
    CHECK_STR(l.holder, holder); /* the daemon's lease is untouched */
    lop.u.lease.ttl_ms = 1; /* renewed to expire at once: as if the daemon had died */
    CHECK_OK(tg_store_write(st, &lop, 1));
    tg_store_close(st);
    st = NULL;
    usleep(20000);
  }
  snprintf(cmd, sizeof cmd, "%s settle --store %s --deployment %s --rpc-url %s --json",
           tollgate_bin(), f.store_uri, f.deployment_path, f.anvil->url);
  j = run_json(cmd, &status);
  CHECK_INT(status, 0);
  CHECK_STR(json_string_value(json_object_get(j, "amountClaimed")), want);
  CHECK_STR(json_string_value(json_object_get(j, "amountSwept")), want);
  CHECK_INT(json_array_size(json_object_get(j, "transactions")), 6);
  json_decref(j);
  snprintf(cmd, sizeof cmd, "%s report --store %s --deployment %s --rpc-url %s --json",
           tollgate_bin(), f.store_uri, f.deployment_path, f.anvil->url);
  j = run_json(cmd, &status);
  CHECK_INT(status, 0);
  CHECK_INT(json_integer_value(json_object_get(j, "mismatches")), 0);
  json_t *chs = json_object_get(j, "channels");
  CHECK_INT(json_array_size(chs), N);
  size_t i;
  json_t *c;
  json_array_foreach(chs, i, c) {
    CHECK_STR(json_string_value(json_object_get(c, "outstanding")), "0");
    CHECK_STR(json_string_value(json_object_get(c, "charged")),
              json_string_value(json_object_get(c, "onchainClaimed")));
    CHECK_INT(json_integer_value(json_object_get(c, "unsettledCharges")), 0);
    CHECK_INT(json_integer_value(json_object_get(c, "charges")), 4);
  }
  CHECK_INT(json_array_size(json_object_get(j, "payers")), N);
  json_decref(j);
  /* CSV: a header and one line per channel and per payer */
  snprintf(cmd, sizeof cmd, "%s report --store %s --csv | wc -l", tollgate_bin(), f.store_uri);
  FILE *p = popen(cmd, "r");
  int lines = 0;
  if (p) {
    if (fscanf_lines(p, &lines) != 0) lines = -1;
    pclose(p);
  }
  CHECK_INT(lines, 1 + N + N);
  free(ch);
  sfx_stop(&f);
}

int main(void) {
  if (tg_secp_init() != 0) return 1;
  RUN(test_settle_cli);
  RUN(test_settle_bad_voucher);
  RUN(test_settle_many);
  RUN(test_settle_sigkill);
  RUN(test_settle_node_restart);
  RUN(test_settle_reorg);
  RUN(test_settle_policy);
  return tgt_done();
}
