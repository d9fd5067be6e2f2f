/* Several tollgated instances on one store: this instance's liveness lease and the gateway lease. */
#ifndef TG_DAEMON_CLUSTER_H
#define TG_DAEMON_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

/*
 * Each instance renews two leases in the store (PostgreSQL) from a thread of
 * its own, every ttl/4:
 *
 *   "instance:NAME"   liveness: while it is current, the instance's holds on
 *                     channels (TG_STORE_OP_RESERVE) are its own; once it
 *                     lapses (the process died) other instances reclaim them.
 *   lease (the gateway lease, e.g. "leader:0x<gateway address>")
 *                     exactly one instance holds it: that one runs settlement
 *                     and the watchtower and submits `exact` transactions, so
 *                     that the gateway account's nonces come from one place.
 *                     When the holder dies its lease lapses after ttl and the
 *                     next renewal of another instance takes it over.
 *
 * An instance counts itself the holder only while its last successful renewal
 * is younger than ttl/2, so it gives up (stops submitting) well before
 * another instance can take over, also when it loses the database.
 */
typedef struct tg_cluster tg_cluster;

/* Called on the cluster thread when this instance gains (1) or loses (0) the gateway lease. */
typedef void (*tg_cluster_leader_fn)(void *arg, int leader);

typedef struct {
  tg_store *store;           /* outlives the cluster */
  const char *instance;      /* 1..TG_STORE_INSTANCE_MAX characters (copied) */
  const char *lease;         /* the gateway lease's name (copied) */
  int64_t ttl_ms;            /* 0: 8000 */
  tg_cluster_leader_fn on_leader;
  void *arg;
} tg_cluster_opts;

/*
 * Takes the liveness lease (TG_ESTORE_LEASE: another live instance has this
 * name) and tries the gateway lease once, synchronously (on_leader fires for
 * the initial state), then starts the thread.
 */
TG_WARN_UNUSED_RESULT int tg_cluster_start(tg_cluster **out, char *err, size_t err_len,
                                           const tg_cluster_opts *o);
/* 1 while this instance holds the gateway lease and renewed it less than ttl/2 ago. Thread-safe. */
int tg_cluster_leader(tg_cluster *c);
/* Stops the thread and gives both leases up, so another instance takes over at once. */
void tg_cluster_stop(tg_cluster *c);

#endif
