/* The daemon's settlement scheduler and watchtower: settlement runs on a thread of their own, on a timer and on deadlines. */
#ifndef TG_DAEMON_SCHEDULER_H
#define TG_DAEMON_SCHEDULER_H

#include <stddef.h>
#include <stdint.h>

#include "http/server.h"
#include "store/store.h"
#include "tollgate/deploy.h"
#include "tollgate/secp.h"
#include "tollgate/settle.h"
#include "tollgate/types.h"

/* Unclaimed charges above this share (%) of what a channel still holds make it due at once. */
#define TG_SCHED_NEAR_BALANCE_PCT 90

typedef struct tg_scheduler tg_scheduler;

typedef struct {
  tg_store *store;                 /* shared with the daemon; outlives the scheduler */
  const tg_seckey *key;            /* the gateway's key; outlives the scheduler */
  const tg_deployment *deployment; /* copied */
  const char *const *rpc_urls;
  size_t n_rpc_urls;
  uint64_t chain_id;
  tg_settle_sender sender;         /* the chain thread's transaction manager (copied) */
  uint32_t interval_s;             /* a run every interval (0: none, only deadlines) */
  tg_u256 min_amount;
  uint32_t max_age_s;
  tg_u256 max_gas_price;           /* 0: no ceiling */
  unsigned near_balance_pct;       /* 0: TG_SCHED_NEAR_BALANCE_PCT */
  unsigned check_ms;               /* how often the watched channels are looked at (0: 1000) */
  uint32_t margin_s;               /* a withdrawal's claim must be confirmed this long before
                                      the delay ends (at most half the delay), else ALERT */
  unsigned alert_after;            /* failed runs in a row before an ALERT (0: 3) */
  /* Several instances on one store: runs (and the watchtower) only while this returns 1
   * (the instance holds the gateway lease). NULL: always. */
  int (*may_run)(void *arg);
  void *may_run_arg;
} tg_scheduler_opts;

/*
 * Starts the thread: a tg_settle_run every interval, and at once (on
 * tg_scheduler_trigger or tg_scheduler_charged, within check_ms) when an
 * unsettled channel is being withdrawn or its unclaimed charges pass
 * near_balance_pct of what it still holds. The store is scanned whole at
 * start and every 10 minutes; between scans only the channels named by the
 * triggers are read (one indexed read each per check). One run at a time; a
 * failed run is logged and retried (deadlines after 5 s, the rest at the next
 * interval); repeated failures and withdrawals past their margin are logged
 * as ALERT lines and counted (tg_scheduler_stats). `err` (err_len bytes) says
 * why it could not start.
 */
TG_WARN_UNUSED_RESULT int tg_scheduler_start(tg_scheduler **out, char *err, size_t err_len,
                                             const tg_scheduler_opts *o);
/* Wakes the thread to look at `channel` now (thread-safe; NULL: the whole store). */
void tg_scheduler_trigger(tg_scheduler *s, const tg_hash *channel);
/* A committed channel charge (from the payment layer; thread-safe, cheap): triggers the
 * channel when its unclaimed charges are near its balance. */
void tg_scheduler_charged(tg_scheduler *s, const tg_hash *channel, const tg_u256 *charged,
                          const tg_u256 *claimed, const tg_u256 *balance);
/* The figures for /metrics (thread-safe; zeros for NULL). */
void tg_scheduler_stats(tg_scheduler *s, tg_http_settle_stats *out);
/* Stops the thread (a run in progress finishes first) and frees. NULL is a no-op. */
void tg_scheduler_stop(tg_scheduler *s);

#endif
