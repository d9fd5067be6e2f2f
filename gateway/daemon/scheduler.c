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
#define STALL_MS 20000         /* a run whose claims the node does not take ends (and counts as
                                  failed) this soon; the manager keeps trying them */
#define RESCAN_MS 600000       /* the whole store is looked at again this often (a safety net) */
#define ALERT_REPEAT_MS 60000  /* an at-risk channel is alerted again this often */
#define WATCH_MAX 100000       /* cap of the watch set (beyond it: a full scan at each tick) */

struct tg_scheduler {
  tg_store *store;
  const tg_seckey *key;
  tg_deployment dep;
  tg_rpc *rpc;               /* blocking calls, used by the scheduler thread only */
  tg_settle_sender sender;
  tg_settle_policy policy;
  int64_t interval_ms;
  unsigned check_ms;
  int64_t margin_ms;
  unsigned alert_after;
  int (*may_run)(void *arg);
  void *may_run_arg;
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int stop, kicked, started;
  /* under mu: channels named by the follower (withdrawals) and the payment layer (near
   * the balance) since the last look; a NULL trigger asks for a full scan */
  tg_hash *pending;
  size_t n_pending, cap_pending;
  int rescan;
  tg_http_settle_stats stats;
  /* scheduler thread only: the channels it follows */
  tg_hash *watch;
  size_t n_watch, cap_watch;
  int64_t last_alert_ms;
};

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void hash_push(tg_hash **v, size_t *n, size_t *cap, const tg_hash *h) {
  if (*n == *cap) {
    size_t c = *cap ? *cap * 2 : 16;
    tg_hash *nv = realloc(*v, c * sizeof *nv);
    if (!nv) abort();
    *v = nv;
    *cap = c;
  }
  (*v)[(*n)++] = *h;
}

/* Adds h unless present (linear: the sets it is used on are small, see look()). */
static void hash_add(tg_hash **v, size_t *n, size_t *cap, const tg_hash *h) {
  for (size_t i = 0; i < *n; i++)
    if (!memcmp((*v)[i].b, h->b, 32)) return;
  hash_push(v, n, cap, h);
}

/* ---- deadlines: the channels the watchtower follows --------------------------------------- */

typedef struct {
  tg_scheduler *s;
  tg_hash digest;            /* XOR of one hash per urgent channel (order-free) */
  size_t withdrawing, near, at_risk;
  int64_t soonest_s;         /* the nearest withdrawal deadline - now (s), INT64_MAX: none */
  tg_hash *keep;             /* the urgent channels: the next watch set */
  size_t n_keep, cap_keep;
  int64_t chain_now_ms;      /* the latest block's time, read once per look (0: not yet) */
} scan_ctx;

/* Deadlines are in chain time: the latest block's timestamp (the wall clock if unreadable). */
static int64_t chain_now(scan_ctx *x) {
  if (!x->chain_now_ms) {
    tg_eth_block b;
    if (tg_eth_get_block(x->s->rpc, &b, NULL) == 0) {
      x->chain_now_ms = (int64_t)b.timestamp * 1000;
      tg_eth_block_cleanup(&b);
    } else {
      x->chain_now_ms = wall_ms();
    }
  }
  return x->chain_now_ms;
}

/*
 * One channel: urgent when it owes and is being withdrawn, or owes near its balance. A
 * withdrawal's deadline is withdraw_requested_at + withdraw_delay (chain seconds, compared with
 * the latest block's time); past deadline - margin with charges still unclaimed, it is at risk.
 */
static int scan_cb(void *arg, const tg_store_channel *ch) {
  scan_ctx *x = arg;
  const tg_store_channel_chain *cc = &ch->chain;
  if (tg_u256_cmp(&ch->charged, &cc->total_claimed) <= 0) return 0;
  int wd = cc->withdraw_requested_at != 0 || cc->status == TG_CHANNEL_WITHDRAWING;
  int near = !wd && tg_settle_near_balance(&ch->charged, &cc->total_claimed, &cc->balance,
                                           x->s->policy.near_balance_pct);
  if (!wd && !near) return 0;
  /* ids come from one store scan or from the (duplicate-free) watch set: no check needed */
  if (x->n_keep < WATCH_MAX) hash_push(&x->keep, &x->n_keep, &x->cap_keep, &ch->id);
  if (wd) {
    x->withdrawing++;
    if (cc->withdraw_requested_at) {
      int64_t margin = x->s->margin_ms;
      int64_t half = (int64_t)ch->cfg.withdraw_delay * 500; /* never more than half the delay */
      if (margin > half) margin = half;
      int64_t deadline = ((int64_t)cc->withdraw_requested_at + (int64_t)ch->cfg.withdraw_delay) * 1000;
      int64_t left = deadline - chain_now(x);
      if (left / 1000 < x->soonest_s) x->soonest_s = left / 1000;
      if (left <= margin) {
        x->at_risk++;
        int64_t now = mono_ms();
        if (now - x->s->last_alert_ms >= ALERT_REPEAT_MS || x->s->last_alert_ms == 0) {
          char id[67], owed[TG_U256_DEC_MAX];
          tg_u256 o;
          if (tg_u256_sub(&o, &ch->charged, &cc->total_claimed) != 0) tg_u256_zero(&o);
          owed[tg_u256_to_dec(&o, owed)] = 0;
          tg_hex_encode(id, ch->id.b, 32, 1);
          tg_log("ALERT: watchtower: channel %s still owes %s and its withdrawal can be finalized "
                 "in %lld s (claim margin %lld s): the claim is not confirmed yet",
                 id, owed, (long long)(left / 1000), (long long)(margin / 1000));
          pthread_mutex_lock(&x->s->mu);
          x->s->stats.alerts++;
          pthread_mutex_unlock(&x->s->mu);
          x->s->last_alert_ms = now ? now : 1;
        }
      }
    }
  } else {
    x->near++;
  }
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

/*
 * Looks at the channels that may be urgent: the whole store at start and every RESCAN_MS
 * (a withdrawal while the daemon was down, a log the follower missed), otherwise only the
 * watch set plus the channels named since the last tick, one indexed read each.
 */
static int look(tg_scheduler *s, scan_ctx *x, int full) {
  memset(x, 0, sizeof *x);
  x->s = s;
  x->soonest_s = INT64_MAX;
  pthread_mutex_lock(&s->mu);
  tg_hash *named = s->pending;
  size_t n_named = s->n_pending;
  s->pending = NULL;
  s->n_pending = s->cap_pending = 0;
  pthread_mutex_unlock(&s->mu);
  int rc = 0;
  if (full || s->n_watch >= WATCH_MAX) {
    rc = tg_store_channels_unsettled(s->store, scan_cb, x);
    if (rc > 0) rc = 0;
  } else {
    for (size_t i = 0; i < n_named; i++) hash_add(&s->watch, &s->n_watch, &s->cap_watch, &named[i]);
    for (size_t i = 0; !rc && i < s->n_watch; i++) {
      tg_store_channel ch;
      int r = tg_store_channel_get(s->store, &s->watch[i], &ch);
      if (r == TG_ENOTFOUND) continue;
      if (r) rc = r;
      else rc = scan_cb(x, &ch);
    }
  }
  free(named);
  if (rc) {
    free(x->keep);
    x->keep = NULL;
    return rc;
  }
  free(s->watch);
  s->watch = x->keep;
  s->n_watch = x->n_keep;
  s->cap_watch = x->cap_keep;
  x->keep = NULL;
  pthread_mutex_lock(&s->mu);
  s->stats.watched = s->n_watch;
  s->stats.at_risk = x->at_risk;
  pthread_mutex_unlock(&s->mu);
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
  o.policy.stall_ms = STALL_MS;
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
  for (size_t i = 0; i < rep.n_txs; i++) {
    const tg_settle_tx *t = &rep.txs[i];
    if (!t->error[0]) continue;
    char h[67];
    tg_hex_encode(h, t->tx_hash.b, 32, 1);
    tg_log("settlement: %s transaction %s (%zu items) did not succeed: %s",
           t->resumed ? "resumed" : t->is_sweep ? "sweep" : "claim", h, t->items, t->error);
  }
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
  int64_t next_scan = 0;     /* the first look is a full scan */
  tg_hash done;              /* the deadlines the last run took care of */
  memset(&done, 0, sizeof done);
  int64_t retry_at = 0;      /* after a failed deadline run */
  unsigned deadline_failures = 0;
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
    int full = s->rescan || mono_ms() >= next_scan;
    s->rescan = 0;
    pthread_mutex_unlock(&s->mu);

    scan_ctx x;
    int rc = look(s, &x, full);
    if (rc) tg_log("settlement scheduler: reading the store: %s", tg_strerror(rc));
    else if (full) next_scan = mono_ms() + RESCAN_MS;
    size_t n_urgent = x.withdrawing + x.near;
    int64_t now = mono_ms();
    int urgent = rc == 0 && n_urgent &&
                 (memcmp(x.digest.b, done.b, 32) != 0 || (retry_at && now >= retry_at));
    int timed = now >= next_run;
    if (urgent || timed) {
      const char *why = !urgent ? "interval" : x.withdrawing ? "watchtower: withdrawal" : "near balance";
      if (urgent)
        tg_log("settlement: %zu channel(s) in withdrawal, %zu near their balance: claiming now",
               x.withdrawing, x.near);
      rc = do_run(s, why);
      pthread_mutex_lock(&s->mu);
      if (rc) {
        s->stats.runs_failed++;
        s->stats.consecutive_failures++;
      } else {
        s->stats.runs_ok++;
        s->stats.consecutive_failures = 0;
        s->stats.last_ok_unix = wall_ms() / 1000;
      }
      uint64_t in_a_row = s->stats.consecutive_failures;
      pthread_mutex_unlock(&s->mu);
      if (timed) next_run = mono_ms() + s->interval_ms;
      if (n_urgent) {
        done = x.digest;
        retry_at = rc ? mono_ms() + RETRY_MS : 0;
        deadline_failures = rc ? deadline_failures + 1 : 0;
        if (rc && x.withdrawing && deadline_failures >= s->alert_after) {
          char soon[96] = "";
          if (x.soonest_s != INT64_MAX)
            snprintf(soon, sizeof soon, ", the first can be finalized in %lld s", (long long)x.soonest_s);
          tg_log("ALERT: watchtower: the claim of %zu channel(s) in withdrawal failed %u times in a "
                 "row (%s)%s; retrying every %d s: check the node, the gateway key's balance and "
                 "the gas price", x.withdrawing, deadline_failures, tg_strerror(rc), soon,
                 RETRY_MS / 1000);
          pthread_mutex_lock(&s->mu);
          s->stats.alerts++;
          pthread_mutex_unlock(&s->mu);
        }
      }
      if (rc && !n_urgent && in_a_row >= s->alert_after) {
        tg_log("ALERT: settlement: %llu runs failed in a row (%s)", (unsigned long long)in_a_row,
               tg_strerror(rc));
        pthread_mutex_lock(&s->mu);
        s->stats.alerts++;
        pthread_mutex_unlock(&s->mu);
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
  s->margin_ms = (int64_t)o->margin_s * 1000;
  s->alert_after = o->alert_after ? o->alert_after : 3;
  s->rescan = 1;
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
  if (!s) return;
  pthread_mutex_lock(&s->mu);
  if (!channel) s->rescan = 1;
  else if (s->n_pending < WATCH_MAX) hash_add(&s->pending, &s->n_pending, &s->cap_pending, channel);
  else s->rescan = 1;
  s->kicked = 1;
  pthread_cond_signal(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

void tg_scheduler_charged(tg_scheduler *s, const tg_hash *channel, const tg_u256 *charged,
                          const tg_u256 *claimed, const tg_u256 *balance) {
  if (s && tg_settle_near_balance(charged, claimed, balance, s->policy.near_balance_pct))
    tg_scheduler_trigger(s, channel);
}

void tg_scheduler_stats(tg_scheduler *s, tg_http_settle_stats *out) {
  memset(out, 0, sizeof *out);
  if (!s) return;
  pthread_mutex_lock(&s->mu);
  *out = s->stats;
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
  free(s->pending);
  free(s->watch);
  pthread_mutex_destroy(&s->mu);
  pthread_cond_destroy(&s->cv);
  free(s);
}
