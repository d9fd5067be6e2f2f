/* The daemon's settlement scheduler and watchtower: settlement runs on a thread of their own, on a timer and on deadlines. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon/scheduler.h"
#include "http/server.h"
#include "tollgate/hex.h"
#include "tollgate/keccak.h"
#include "tollgate/rpc.h"
#include "tollgate/settle.h"
#include "tollgate/u256.h"

#define RETRY_MS 5000          /* a failed deadline run is tried again this much later */
#define RUN_TIMEOUT_MS 300000  /* one run, resume and sweep included */

struct tg_scheduler {
  tg_store *store;
  const tg_seckey *key;
  tg_deployment dep;
  tg_rpc *rpc;               /* blocking calls, used by the scheduler thread only */
  tg_settle_sender sender;
  tg_settle_policy policy;
  int64_t interval_ms;
  unsigned check_ms;
  int (*may_run)(void *arg);
  void *may_run_arg;
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int stop, kicked, started;
};

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- deadlines: what the store says about unsettled channels ------------------------------ */

typedef struct {
  const tg_scheduler *s;
  tg_hash digest;            /* XOR of one hash per urgent channel (order-free) */
  size_t withdrawing, near;
} scan_ctx;

static int scan_cb(void *arg, const tg_store_channel *ch) {
  scan_ctx *x = arg;
  const tg_store_channel_chain *cc = &ch->chain;
  if (tg_u256_cmp(&ch->charged, &cc->total_claimed) <= 0) return 0;
  int wd = cc->withdraw_requested_at != 0 || cc->status == TG_CHANNEL_WITHDRAWING;
  int near = !wd && tg_settle_near_balance(&ch->charged, &cc->total_claimed, &cc->balance,
                                           x->s->policy.near_balance_pct);
  if (!wd && !near) return 0;
  if (wd) x->withdrawing++;
  else x->near++;
  /* the channel and what it owes: a new charge or a new withdrawal makes a new digest */
  uint8_t buf[32 + 32 + 8];
  memcpy(buf, ch->id.b, 32);
  memcpy(buf + 32, ch->charged.b, 32);
  for (int i = 0; i < 8; i++) buf[64 + i] = (uint8_t)(cc->withdraw_requested_at >> (8 * i));
  tg_hash h;
  tg_keccak256(&h, buf, sizeof buf);
  for (int i = 0; i < 32; i++) x->digest.b[i] ^= h.b[i];
  return 0;
}

/* ---- one run ------------------------------------------------------------------------------ */

static int do_run(tg_scheduler *s, const char *why) {
  tg_settle_opts o;
  tg_settle_opts_init(&o);
  o.store = s->store;
  o.rpc = s->rpc;
  o.key = s->key;
  o.deployment = &s->dep;
  o.sender = &s->sender;
  o.holder_kind = TG_SETTLE_HOLDER_DAEMON;
  o.policy = s->policy;
  o.timeout_ms = RUN_TIMEOUT_MS;
  tg_settle_report rep;
  int64_t t0 = mono_ms();
  int rc = tg_settle_run(&rep, &o);
  int64_t ms = mono_ms() - t0;
  char claimed[TG_U256_DEC_MAX], swept[TG_U256_DEC_MAX];
  tg_u256_to_dec(&rep.amount_claimed, claimed);
  tg_u256_to_dec(&rep.amount_swept, swept);
  if (rep.channels_planned || rep.n_txs || rc)
    tg_log("settlement (%s): %s in %lld ms: run %lld, %zu unsettled, %zu planned, %zu claimed, "
           "%zu waiting, %zu with problems, amount claimed %s, swept %s, %zu transactions, gas %llu",
           why, rc ? tg_strerror(rc) : "done", (long long)ms, (long long)rep.run_id,
           rep.channels_unsettled, rep.channels_planned, rep.channels_claimed, rep.channels_waiting,
           rep.channels_problem, claimed, swept, rep.n_txs, (unsigned long long)rep.gas_used);
  for (size_t i = 0; i < rep.n_problems; i++) {
    char id[67];
    tg_hex_encode(id, rep.problems[i].channel_id.b, 32, 1);
    tg_log("settlement: channel %s not claimed: %s", id, rep.problems[i].why);
  }
  tg_settle_report_cleanup(&rep);
  return rc;
}

static void *sched_main(void *arg) {
  tg_scheduler *s = arg;
  int64_t next_run = s->interval_ms ? mono_ms() + s->interval_ms : INT64_MAX;
  tg_hash done;              /* the deadlines the last run took care of */
  memset(&done, 0, sizeof done);
  int64_t retry_at = 0;      /* after a failed deadline run */
  pthread_mutex_lock(&s->mu);
  while (!s->stop) {
    if (!s->kicked) {
      int64_t now = mono_ms(), wake = now + s->check_ms;
      if (next_run < wake) wake = next_run;
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      int64_t d = wake > now ? wake - now : 0;
      ts.tv_sec += d / 1000;
      ts.tv_nsec += (long)(d % 1000) * 1000000L;
      if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
      }
      pthread_cond_timedwait(&s->cv, &s->mu, &ts);
      if (s->stop) break;
    }
    s->kicked = 0;
    if (s->may_run && !s->may_run(s->may_run_arg)) continue; /* another instance's turn */
    pthread_mutex_unlock(&s->mu);

    scan_ctx x;
    memset(&x, 0, sizeof x);
    x.s = s;
    int rc = tg_store_channels_unsettled(s->store, scan_cb, &x);
    if (rc < 0) tg_log("settlement scheduler: reading the store: %s", tg_strerror(rc));
    size_t n_urgent = x.withdrawing + x.near;
    int64_t now = mono_ms();
    int urgent = rc >= 0 && n_urgent &&
                 (memcmp(x.digest.b, done.b, 32) != 0 || (retry_at && now >= retry_at));
    int timed = now >= next_run;
    if (urgent || timed) {
      const char *why = !urgent ? "interval" : x.withdrawing ? "watchtower: withdrawal" : "near balance";
      if (urgent)
        tg_log("settlement: %zu channel(s) in withdrawal, %zu near their balance: claiming now",
               x.withdrawing, x.near);
      rc = do_run(s, why);
      if (timed) next_run = mono_ms() + s->interval_ms;
      if (n_urgent) {
        done = x.digest;
        retry_at = rc ? mono_ms() + RETRY_MS : 0;
      }
    }
    pthread_mutex_lock(&s->mu);
  }
  pthread_mutex_unlock(&s->mu);
  return NULL;
}

/* ---- lifecycle -------------------------------------------------------------------------- */

int tg_scheduler_start(tg_scheduler **out, char *err, size_t err_len, const tg_scheduler_opts *o) {
  *out = NULL;
  if (!o || !o->store || !o->key || !o->deployment || !o->sender.submit || !o->n_rpc_urls) {
    snprintf(err, err_len, "settlement scheduler: incomplete options");
    return TG_EINVAL;
  }
  tg_scheduler *s = calloc(1, sizeof *s);
  if (!s) abort();
  s->store = o->store;
  s->key = o->key;
  s->dep = *o->deployment;
  s->sender = o->sender;
  tg_settle_policy_init(&s->policy);
  s->policy.min_amount = o->min_amount;
  s->policy.max_age_ms = (int64_t)o->max_age_s * 1000;
  s->policy.max_gas_price = o->max_gas_price;
  s->policy.near_balance_pct = o->near_balance_pct ? o->near_balance_pct : TG_SCHED_NEAR_BALANCE_PCT;
  s->interval_ms = (int64_t)o->interval_s * 1000;
  s->check_ms = o->check_ms ? o->check_ms : 1000;
  s->may_run = o->may_run;
  s->may_run_arg = o->may_run_arg;
  pthread_mutex_init(&s->mu, NULL);
  pthread_cond_init(&s->cv, NULL);
  tg_rpc_opts ro;
  tg_rpc_opts_init(&ro);
  ro.urls = o->rpc_urls;
  ro.n_urls = o->n_rpc_urls;
  ro.chain_id = o->chain_id;
  int rc = tg_rpc_new(&s->rpc, &ro, err, err_len);
  if (rc) {
    tg_scheduler_stop(s);
    return rc;
  }
  if (pthread_create(&s->thread, NULL, sched_main, s) != 0) abort();
  s->started = 1;
  *out = s;
  return TG_OK;
}

void tg_scheduler_trigger(tg_scheduler *s, const tg_hash *channel) {
  (void)channel; /* the store says which channels: the thread looks at all of them */
  if (!s) return;
  pthread_mutex_lock(&s->mu);
  s->kicked = 1;
  pthread_cond_signal(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

void tg_scheduler_stop(tg_scheduler *s) {
  if (!s) return;
  if (s->started) {
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
  }
  tg_rpc_free(s->rpc);
  pthread_mutex_destroy(&s->mu);
  pthread_cond_destroy(&s->cv);
  free(s);
}
