/* tollgated: the pay-per-call gateway daemon (configuration, server, signals). */
#include <curl/curl.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/config.h"
#include "daemon/payments.h"
#include "daemon/testhooks.h"
#include "http/server.h"

#define DEFAULT_CONFIG "/etc/tollgate/tollgated.conf"
#define TOLLGATED_VERSION "0.1.0"

static void usage(FILE *f) {
  fprintf(f,
          "usage: tollgated [-c FILE] [--check-config [FILE]] [--migrate] [--version]\n"
          "  -c, --config FILE     configuration file (default " DEFAULT_CONFIG ")\n"
          "  --check-config [FILE] validate the configuration, print OK or the error, exit 0/1\n"
          "  --migrate             bring the store's schema to this build's version, report, exit\n"
          "  --version             print the version\n"
          "Signals: SIGTERM/SIGINT drain and stop (a second one forces), SIGHUP reloads.\n");
}

static tg_payments payments;

/* `tollgated --migrate`: applies pending migrations (in one transaction) and reports. */
static int migrate(const tg_config *cfg) {
  char uri[4200], label[256];
  tg_payments_store_label(label, sizeof label, cfg);
  if (!cfg->store_kind || tg_payments_store_uri(uri, sizeof uri, cfg) != 0) {
    fprintf(stderr, "tollgated: --migrate: no usable `store` in the configuration\n");
    return 1;
  }
  int applied = 0;
  int rc = tg_store_migrate(uri, &applied);
  if (rc) {
    fprintf(stderr, "tollgated: --migrate: store %s: %s (nothing was changed)\n", label,
            tg_strerror(rc));
    return 1;
  }
  tg_store_options o = {.no_migrate = 1};
  tg_store *st;
  int cur = 0, latest = 0;
  rc = tg_store_open(&st, uri, &o);
  if (!rc) {
    rc = tg_store_schema_version(st, &cur, &latest);
    tg_store_close(st);
  }
  if (rc) {
    fprintf(stderr, "tollgated: --migrate: store %s: %s\n", label, tg_strerror(rc));
    return 1;
  }
  if (applied)
    printf("store %s: applied %d migration(s) (versions %d..%d); schema at version %d\n", label,
           applied, cur - applied + 1, cur, cur);
  else
    printf("store %s: schema at version %d, nothing to apply\n", label, cur);
  return 0;
}
static tg_http_ops ops; /* admin API, facilitator endpoints, chain metrics */
static void settle_stats(void *ctx, tg_http_settle_stats *out) { tg_scheduler_stats(ctx, out); }

/* /metrics: the chain's figures (any thread). */
static uint64_t m_txm_pending(void *ctx) {
  tg_chain_stats s;
  tg_chain_stats_get(ctx, &s);
  return s.tx_in_flight;
}
static uint64_t m_rpc_errors(void *ctx) {
  tg_chain_stats s;
  tg_chain_stats_get(ctx, &s);
  return s.rpc_errors;
}
static uint64_t m_rpc_calls(void *ctx) {
  tg_chain_stats s;
  tg_chain_stats_get(ctx, &s);
  return s.rpc_calls;
}
static uint64_t m_last_block(void *ctx) {
  tg_chain_stats s;
  tg_chain_stats_get(ctx, &s);
  return s.last_block;
}

static int priced(const tg_config *cfg) {
  for (size_t i = 0; i < cfg->n_routes; i++)
    if (cfg->routes[i].price >= 0) return 1;
  return 0;
}

/* New prices and credit limits apply to new calls; calls in flight keep their own. */
static void on_reload(void *arg, tg_config *cfg) { tg_payments_reload(arg, cfg); }

/*
 * glibc gives every thread that allocates its own arena (up to 8 per core); each keeps freed
 * memory resident. The daemon's threads (workers, store writer, chain, follower) allocate small
 * short-lived objects, so one arena per core is plenty: measured with `make soak` (10,000
 * channels, 1,000 connections) it keeps the resident set ~4 MiB lower (docs/PERFORMANCE.md).
 * MALLOC_ARENA_MAX in the environment still wins.
 */
static void limit_arenas(void) {
#if defined(__GLIBC__) && defined(M_ARENA_MAX)
  if (getenv("MALLOC_ARENA_MAX")) return;
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  mallopt(M_ARENA_MAX, cores > 2 ? (int)cores : 2);
#endif
}

int main(int argc, char **argv) {
  limit_arenas();
  const char *path = NULL;
  int check = 0, do_migrate = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if ((strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) && i + 1 < argc) {
      path = argv[++i];
    } else if (strcmp(a, "--check-config") == 0) {
      check = 1;
      if (i + 1 < argc && argv[i + 1][0] != '-') path = argv[++i];
    } else if (strcmp(a, "--migrate") == 0) {
      do_migrate = 1;
    } else if (strcmp(a, "--version") == 0) {
      printf("tollgated %s\n", TOLLGATED_VERSION);
      return 0;
    } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      usage(stdout);
      return 0;
    } else {
      fprintf(stderr, "tollgated: unknown argument \"%s\"\n", a);
      usage(stderr);
      return 2;
    }
  }
  if (path == NULL) path = DEFAULT_CONFIG;
  tg_config *cfg;
  char err[TG_CONFIG_ERR_MAX];
  int rc = tg_config_load(&cfg, err, path);
  if (check) {
    if (rc) {
      fprintf(stderr, "%s\n", err);
      return 1;
    }
    printf("OK\n");
    tg_config_unref(cfg);
    return 0;
  }
  if (rc) {
    fprintf(stderr, "tollgated: %s\n", err);
    return 1;
  }
  if (do_migrate) {
    rc = migrate(cfg);
    tg_config_unref(cfg);
    return rc;
  }
  if (sodium_init() < 0 || curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    fprintf(stderr, "tollgated: library initialisation failed\n");
    return 1;
  }
  tg_http_payhooks test_hooks = {0};
  const tg_http_payhooks *hooks = NULL;
  const char *th = getenv("TG_TEST_PAYHOOKS");
  if (th && *th) {
    if (tg_testhooks_init(&test_hooks, th) != 0) {
      fprintf(stderr, "tollgated: TG_TEST_PAYHOOKS: cannot open %s\n", th);
      return 1;
    }
    tg_log("WARNING: TG_TEST_PAYHOOKS is set: payments are simulated (test double), log %s", th);
    hooks = &test_hooks;
  } else if (priced(cfg)) {
    rc = tg_payments_start(&payments, err, cfg);
    if (rc) {
      fprintf(stderr, "tollgated: payments: %s\n", err);
      tg_config_unref(cfg);
      return 1;
    }
    hooks = &payments.hooks;
    ops = (tg_http_ops){.pay = payments.pay,
                        .store = payments.store,
                        .passes = payments.passes,
                        .ctx = payments.chain,
                        .txm_pending = m_txm_pending,
                        .rpc_errors = m_rpc_errors,
                        .rpc_calls = m_rpc_calls,
                        .last_block = m_last_block};
    ops.has_signer = tg_seckey_address(&ops.signer, payments.key) == 0;
    if (payments.sched) {
      ops.settle_stats = settle_stats;
      ops.settle_ctx = payments.sched;
    }
  }
  tg_server_opts opts = {.cfg = cfg, .hooks = hooks, .ops = &ops, .on_reload = on_reload, .on_reload_arg = &payments};
  tg_server *s;
  rc = tg_server_new(&s, err, &opts);
  tg_config_unref(cfg);
  if (rc) {
    fprintf(stderr, "tollgated: %s\n", err);
    return 1;
  }
  rc = tg_server_run(s);
  if (rc) _exit(1); /* forced: calls were abandoned, don't wait on them */
  tg_server_free(s);
  tg_payments_stop(&payments);
  tg_testhooks_cleanup(&test_hooks);
  curl_global_cleanup();
  return 0;
}
