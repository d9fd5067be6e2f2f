/* The daemon's payment wiring: store, ledger, keys, chain and the payment layer behind the HTTP hooks. */
#ifndef TG_DAEMON_PAYMENTS_H
#define TG_DAEMON_PAYMENTS_H

#include "core/config.h"
#include "daemon/chain.h"
#include "daemon/cluster.h"
#include "daemon/scheduler.h"
#include "http/server.h"
#include "pay/ledger.h"
#include "pay/passes.h"
#include "pay/pay.h"
#include "store/store.h"

typedef struct {
  tg_store *store;
  tg_ledger *ledger;
  tg_seckey *key;
  tg_chain *chain;
  tg_pay *pay;
  tg_passes *passes;          /* access passes (when the deployment has a pass contract) */
  int following;              /* the chain follower runs (channels, or plans) */
  tg_scheduler *sched;        /* settlement runs and the watchtower (channel scheme) */
  tg_cluster *cluster;        /* PostgreSQL: liveness and the gateway lease (NULL on SQLite) */
  tg_pay_exact_backend exact; /* the chain's, behind a check of the gateway lease */
  tg_http_payhooks hooks;
} tg_payments;

/*
 * Starts payments for a configuration with priced routes: opens the store,
 * decrypts the gateway's keystore, reads the deployment file, connects to
 * the chain (checking its id) and loads the channel ledger. On failure `err`
 * (TG_CONFIG_ERR_MAX bytes) says what is missing or wrong, and nothing stays
 * open.
 */
TG_WARN_UNUSED_RESULT int tg_payments_start(tg_payments *p, char *err, tg_config *cfg);
void tg_payments_stop(tg_payments *p);
/* A reloaded configuration (main loop): new prices and plans; the first plan starts the
 * chain follower when nothing needed it before. */
void tg_payments_reload(tg_payments *p, tg_config *cfg);

/*
 * The store URI of a configuration ("sqlite:PATH", or the PostgreSQL URI as
 * written) into `out` (cap bytes); TG_ETOOBIG when it does not fit.
 */
TG_WARN_UNUSED_RESULT int tg_payments_store_uri(char *out, size_t cap, const tg_config *cfg);
/* A printable name of the store (a PostgreSQL URI without its password). */
void tg_payments_store_label(char *out, size_t cap, const tg_config *cfg);

#endif
