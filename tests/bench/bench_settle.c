/* Settlement benchmark on anvil: claim gas per channel for batches of 1, 10, 100 and 1,000, and the wall time and peak memory of settling 10,000 channels. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "settle_fixture.h"

static uint64_t one_charge(size_t i, unsigned j) { return 1000 + (uint64_t)i % 997 + j; }

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int settle_once(sfx *f, const char *uri, size_t max_batch, tg_settle_report *rep) {
  tg_store *st = NULL;
  int rc = tg_store_open(&st, uri, NULL);
  if (rc) return rc;
  tg_settle_opts o;
  tg_settle_opts_init(&o);
  o.store = st;
  o.rpc = f->rpc;
  o.key = f->gw_key;
  o.deployment = &f->dep;
  o.txm_journal = f->journal;
  o.timeout_ms = 900000;
  o.policy.max_batch = max_batch;
  rc = tg_settle_run(rep, &o);
  tg_store_close(st);
  return rc;
}

/* Opens n channels (receiver: the gateway) with one charge each in a store of their own. */
static int prepare(sfx *f, size_t n, uint32_t tag, char *uri, size_t urilen, sfx_chan **out) {
  f->salt_tag = tag;
  sfx_chan *ch = calloc(n, sizeof *ch);
  if (!ch) return TG_ENOMEM;
  int rc = sfx_open_channels(f, ch, n, &f->gw, 1, 150);
  snprintf(uri, urilen, "sqlite:%s/bench_%u.db", f->dir, tag);
  tg_store *st = NULL;
  if (!rc) rc = tg_store_open(&st, uri, NULL);
  char prefix[32];
  snprintf(prefix, sizeof prefix, "b%u", tag);
  if (!rc) rc = sfx_record(f, st, ch, 0, n, 1, one_charge, prefix);
  tg_store_close(st);
  *out = ch;
  return rc;
}

int main(int argc, char **argv) {
  size_t big = argc > 1 ? (size_t)strtoul(argv[1], NULL, 10) : 10000;
  if (tg_secp_init() != 0) return 1;
  sfx f;
  /* Base fee 0: 70 full blocks of deposits would otherwise raise it 12.5 % per block (x2,600),
   * which measures the fee market rather than settlement. */
  static const char *const extra[] = {"--block-base-fee-per-gas", "0", NULL};
  int rc = sfx_start(&f, 1, extra);
  if (rc) {
    fprintf(stderr, "bench_settle: cannot start anvil and deploy: %s\n", tg_strerror(rc));
    sfx_stop(&f);
    return 1;
  }
  printf("%-8s %-8s %-14s %-16s %-14s\n", "batch", "claims", "claim gas", "gas per channel",
         "sweep gas");
  static const size_t sizes[] = {1, 10, 100, 1000};
  for (size_t s = 0; !rc && s < sizeof sizes / sizeof *sizes; s++) {
    size_t n = sizes[s];
    char uri[300];
    sfx_chan *ch = NULL;
    rc = prepare(&f, n, (uint32_t)(n + 1), uri, sizeof uri, &ch);
    free(ch);
    tg_settle_report rep;
    if (!rc) rc = settle_once(&f, uri, n, &rep);
    if (rc) {
      fprintf(stderr, "bench_settle: batch %zu: %s\n", n, tg_strerror(rc));
      tg_settle_report_cleanup(&rep);
      break;
    }
    uint64_t claim_gas = 0, sweep_gas = 0;
    size_t claims = 0;
    for (size_t i = 0; i < rep.n_txs; i++) {
      if (rep.txs[i].is_sweep) sweep_gas += rep.txs[i].gas_used;
      else {
        claim_gas += rep.txs[i].gas_used;
        claims++;
      }
    }
    printf("%-8zu %-8zu %-14llu %-16.0f %-14llu\n", n, claims, (unsigned long long)claim_gas,
           (double)claim_gas / (double)n, (unsigned long long)sweep_gas);
    printf("         (per channel without the 21,000 base: %.0f)\n",
           ((double)claim_gas - 21000.0 * (double)claims) / (double)n);
    tg_settle_report_cleanup(&rep);
  }
  if (!rc && big) {
    char uri[300];
    sfx_chan *ch = NULL;
    double t0 = now_s();
    rc = prepare(&f, big, 77777, uri, sizeof uri, &ch);
    double t1 = now_s();
    free(ch);
    if (rc) {
      fprintf(stderr, "bench_settle: preparing %zu channels: %s%s%s\n", big, tg_strerror(rc),
              tg_rpc_last_message(f.rpc) ? "; the node's last error message: " : "",
              tg_rpc_last_message(f.rpc) ? tg_rpc_last_message(f.rpc) : "");
    } else {
      printf("\n%zu channels opened and charged in %.1f s (setup, not measured)\n", big, t1 - t0);
      fflush(stdout);
      /* settle in a child, so that its peak RSS is the settlement's own */
      double t2 = now_s();
      pid_t pid = fork();
      if (pid == 0) {
        tg_rpc *rpc = NULL;
        if (sfx_rpc_new(&rpc, f.anvil->url) != 0) _exit(2);
        f.rpc = rpc;
        tg_settle_report rep;
        int r = settle_once(&f, uri, 1000, &rep);
        uint64_t gas = 0;
        size_t claims = 0;
        for (size_t i = 0; i < rep.n_txs; i++)
          if (!rep.txs[i].is_sweep) {
            gas += rep.txs[i].gas_used;
            claims++;
          }
        printf("settled %zu channels in %zu claim transactions, %llu gas (%.0f per channel)%s%s\n",
               rep.channels_claimed, claims, (unsigned long long)gas,
               rep.channels_claimed ? (double)gas / (double)rep.channels_claimed : 0.0,
               r ? ": " : "", r ? tg_strerror(r) : "");
        /* what the node said about each refused transaction (kept by the run's own manager) */
        for (size_t i = 0; i < rep.n_txs; i++)
          if (rep.txs[i].error[0])
            printf("  %s transaction %zu (%zu channels) failed: %s\n",
                   rep.txs[i].is_sweep ? "sweep" : "claim", i, rep.txs[i].items, rep.txs[i].error);
        for (size_t i = 0; i < rep.n_problems && i < 3; i++)
          printf("  problem: %s\n", rep.problems[i].why);
        fflush(stdout);
        _exit(r ? 1 : 0);
      }
      int status = 0;
      struct rusage ru;
      memset(&ru, 0, sizeof ru);
      if (pid < 0 || wait4(pid, &status, 0, &ru) != pid) rc = TG_EIO;
      double t3 = now_s();
      if (!rc && (!WIFEXITED(status) || WEXITSTATUS(status) != 0)) rc = TG_ESETTLE;
      printf("wall time %.1f s, peak RSS %.1f MiB\n", t3 - t2, (double)ru.ru_maxrss / 1024.0);
    }
  }
  sfx_stop(&f);
  return rc ? 1 : 0;
}
