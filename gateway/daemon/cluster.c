/* Several tollgated instances on one store: this instance's liveness lease and the gateway lease. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "daemon/cluster.h"
#include "http/server.h"

#define DEFAULT_TTL_MS 8000

struct tg_cluster {
  tg_store *store;
  char instance[TG_STORE_INSTANCE_MAX + 1];
  char holder[TG_STORE_NAME_MAX + 1]; /* "NAME#<8 hex digits>": this process, not only its name */
  char alive[TG_STORE_NAME_MAX + 1]; /* "instance:" + name */
  char lease[TG_STORE_NAME_MAX + 1];
  int64_t ttl_ms;
  tg_cluster_leader_fn on_leader;
  void *arg;
  atomic_int leader;
  _Atomic int64_t leader_ok_at; /* monotonic ms of the last successful renewal of the gateway lease */
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int stop, started;
};

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int acquire(tg_cluster *c, const char *name) {
  tg_store_op op;
  memset(&op, 0, sizeof op);
  op.kind = TG_STORE_OP_LEASE_ACQUIRE;
  op.u.lease.name = name;
  op.u.lease.holder = c->holder;
  op.u.lease.ttl_ms = c->ttl_ms;
  return tg_store_write(c->store, &op, 1);
}

static void set_leader(tg_cluster *c, int now_leader) {
  int was = atomic_exchange(&c->leader, now_leader);
  if (was == now_leader) return;
  tg_log("cluster: instance %s %s the gateway lease %s", c->instance,
         now_leader ? "holds" : "no longer holds", c->lease);
  if (c->on_leader) c->on_leader(c->arg, now_leader);
}

/* One round: renew liveness, then take or renew the gateway lease. */
static void beat(tg_cluster *c) {
  int64_t t0 = mono_ms();
  int rc = acquire(c, c->alive);
  if (rc) tg_log("cluster: renewing %s: %s", c->alive, tg_strerror(rc));
  rc = acquire(c, c->lease);
  if (rc == 0) {
    c->leader_ok_at = t0;
    set_leader(c, 1);
  } else if (rc == TG_ESTORE_LEASE) {
    set_leader(c, 0);
  } else if (mono_ms() - c->leader_ok_at > c->ttl_ms / 2) {
    /* The database does not answer: stop acting before anyone else may take over. */
    tg_log("cluster: renewing %s: %s", c->lease, tg_strerror(rc));
    set_leader(c, 0);
  }
}

static void *cluster_main(void *arg) {
  tg_cluster *c = arg;
  pthread_mutex_lock(&c->mu);
  while (!c->stop) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t d = c->ttl_ms / 4;
    ts.tv_sec += d / 1000;
    ts.tv_nsec += (long)(d % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&c->cv, &c->mu, &ts);
    if (c->stop) break;
    pthread_mutex_unlock(&c->mu);
    beat(c);
    pthread_mutex_lock(&c->mu);
  }
  pthread_mutex_unlock(&c->mu);
  return NULL;
}

int tg_cluster_start(tg_cluster **out, char *err, size_t err_len, const tg_cluster_opts *o) {
  *out = NULL;
  if (!o || !o->store || !o->instance || !o->lease || !*o->instance ||
      strlen(o->instance) > TG_STORE_INSTANCE_MAX || !*o->lease ||
      strlen(o->lease) > TG_STORE_NAME_MAX) {
    snprintf(err, err_len, "cluster: bad options");
    return TG_EINVAL;
  }
  tg_cluster *c = calloc(1, sizeof *c);
  if (!c) abort();
  c->store = o->store;
  snprintf(c->instance, sizeof c->instance, "%s", o->instance);
  /* The holder names this process: a lease renews only for the holder that took it, so a
   * second process started with the same instance name (a copied configuration) cannot renew
   * the first one's leases as if they were its own and act as a second gateway-lease holder. */
  uint32_t token;
  if (getrandom(&token, sizeof token, 0) != (ssize_t)sizeof token)
    token = (uint32_t)getpid() ^ (uint32_t)mono_ms();
  snprintf(c->holder, sizeof c->holder, "%s#%08x", o->instance, (unsigned)token);
  snprintf(c->alive, sizeof c->alive, "instance:%s", o->instance);
  snprintf(c->lease, sizeof c->lease, "%s", o->lease);
  c->ttl_ms = o->ttl_ms > 0 ? o->ttl_ms : DEFAULT_TTL_MS;
  c->on_leader = o->on_leader;
  c->arg = o->arg;
  atomic_init(&c->leader, 0);
  pthread_mutex_init(&c->mu, NULL);
  pthread_cond_init(&c->cv, NULL);
  /* The name may be held by this instance's previous process, killed less than a ttl ago:
   * wait for its liveness lease to lapse (at most ttl), then give up. */
  int rc = acquire(c, c->alive);
  for (int64_t t0 = mono_ms(), k = 0; rc == TG_ESTORE_LEASE && mono_ms() - t0 <= c->ttl_ms; k++) {
    if (k == 0)
      tg_log("cluster: instance name %s is held by another process; waiting up to %lld ms for "
             "its lease to lapse", c->instance, (long long)c->ttl_ms);
    struct timespec ts = {(time_t)(c->ttl_ms / 4 / 1000), (long)(c->ttl_ms / 4 % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    rc = acquire(c, c->alive);
  }
  if (rc) {
    snprintf(err, err_len, "cluster: instance name %s: %s", c->instance,
             rc == TG_ESTORE_LEASE ? "in use by another running instance (give each instance "
                                     "its own name: instance=NAME on the store line)"
                                   : tg_strerror(rc));
    tg_cluster_stop(c);
    return rc;
  }
  c->leader_ok_at = mono_ms() - c->ttl_ms; /* not yet */
  rc = acquire(c, c->lease);
  if (rc == 0) {
    c->leader_ok_at = mono_ms();
    set_leader(c, 1);
  } else {
    tg_log("cluster: instance %s: the gateway lease %s is held by another instance", c->instance,
           c->lease);
    if (c->on_leader) c->on_leader(c->arg, 0);
  }
  if (pthread_create(&c->thread, NULL, cluster_main, c) != 0) abort();
  c->started = 1;
  *out = c;
  return TG_OK;
}

/* Also by the clock: a renewal that hangs (the database unreachable) ends the holding after
 * ttl/2 even while the cluster thread is still blocked in it. */
int tg_cluster_leader(tg_cluster *c) {
  if (!c || !atomic_load(&c->leader)) return 0;
  return mono_ms() - atomic_load(&c->leader_ok_at) < c->ttl_ms / 2;
}

void tg_cluster_stop(tg_cluster *c) {
  if (!c) return;
  if (c->started) {
    pthread_mutex_lock(&c->mu);
    c->stop = 1;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->thread, NULL);
  }
  tg_store_op ops[2];
  memset(ops, 0, sizeof ops);
  ops[0].kind = TG_STORE_OP_LEASE_RELEASE;
  ops[0].u.lease.name = c->lease;
  ops[0].u.lease.holder = c->holder;
  ops[1].kind = TG_STORE_OP_LEASE_RELEASE;
  ops[1].u.lease.name = c->alive;
  ops[1].u.lease.holder = c->holder;
  if (tg_store_write(c->store, ops, 2) != 0) { /* they lapse by themselves */
  }
  pthread_mutex_destroy(&c->mu);
  pthread_cond_destroy(&c->cv);
  free(c);
}
