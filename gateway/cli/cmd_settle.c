/* `tollgate settle` (one settlement run) and `tollgate report` (reconciliation of charges with the chain). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "cli/cli.h"
#include "cli/cli_settle.h"
#include "cli/commands.h"
#include "store/store.h"
#include "tollgate/address.h"
#include "tollgate/deploy.h"
#include "tollgate/error.h"
#include "tollgate/hex.h"
#include "tollgate/settle.h"
#include "tollgate/u256.h"

static int parse_u256_opt(const char *cmd, const char *name, const char *v, tg_u256 *out) {
  if (tg_u256_parse(out, v, strlen(v)) != 0)
    return cli_fail(cmd, "%s '%s' is not a non-negative integer (decimal or 0x hex)", name, v);
  return 0;
}

static int parse_u64_opt(const char *cmd, const char *name, const char *v, uint64_t lo,
                         uint64_t hi, uint64_t *out) {
  char *end = NULL;
  unsigned long long x = strtoull(v, &end, 10);
  if (!*v || *end || *v == '-' || x < lo || x > hi)
    return cli_fail(cmd, "%s '%s' is not a number in %llu..%llu", name, v,
                    (unsigned long long)lo, (unsigned long long)hi);
  *out = x;
  return 0;
}

static const char *phase_name(tg_settle_phase p) {
  switch (p) {
  case TG_SETTLE_PHASE_RESUME: return "resuming";
  case TG_SETTLE_PHASE_READ: return "reading channels";
  case TG_SETTLE_PHASE_PLAN: return "planning";
  case TG_SETTLE_PHASE_ESTIMATE: return "estimating gas";
  case TG_SETTLE_PHASE_CLAIM: return "claiming";
  case TG_SETTLE_PHASE_SWEEP: return "sweeping";
  default: return "done";
  }
}

/* A one-line progress bar on stderr (only when it is a terminal). */
static void bar(void *arg, tg_settle_phase ph, size_t done, size_t total) {
  (void)arg;
  enum { W = 30 };
  size_t fill = total ? (done * W) / total : (ph == TG_SETTLE_PHASE_DONE ? W : 0);
  if (fill > W) fill = W;
  char b[W + 1];
  for (size_t i = 0; i < W; i++) b[i] = i < fill ? '#' : '.';
  b[W] = 0;
  fprintf(stderr, "\r\033[K%-16s [%s] %zu/%zu", phase_name(ph), b, done, total);
  if (ph == TG_SETTLE_PHASE_DONE) fputc('\n', stderr);
  fflush(stderr);
}

/* "sqlite:PATH" (or a bare path) to the journal path next to it: PATH.txm. */
static int journal_for(const char *uri, char *out, size_t n) {
  const char *p = uri;
  if (!strncmp(p, "sqlite:", 7)) p += 7;
  while (p[0] == '/' && p[1] == '/') p++;
  if (!*p) return -1;
  return (size_t)snprintf(out, n, "%s.txm", p) >= n ? -1 : 0;
}

static int load_deployment(const char *cmd, const char *path, tg_deployment *d) {
  int rc = tg_deployment_load(d, path);
  if (rc == TG_ENOTFOUND)
    return cli_fail(cmd, "--deployment %s does not exist (run tollgate deploy first)", path);
  if (rc) return cli_fail_err(cmd, rc, "--deployment %s", path);
  return 0;
}

int cmd_settle(int argc, char **argv) {
  const char *cmd = argv[0];
  const char *store_uri = NULL, *dep_path = NULL, *url = NULL, *journal = NULL;
  const char *min_amount = NULL, *max_age = NULL, *max_gas = NULL, *conf = NULL, *max_batch = NULL;
  cli_key_src ks = {0};
  int dry = 0, json = 0, no_sweep = 0, no_verify = 0;
  for (int i = 1; i < argc; i++) {
    int missing = 0;
    const char *v;
    if ((v = cli_opt(argc, argv, &i, "--store", &missing)) != NULL) store_uri = v;
    else if ((v = cli_opt(argc, argv, &i, "--deployment", &missing)) != NULL) dep_path = v;
    else if ((v = cli_opt(argc, argv, &i, "--rpc-url", &missing)) != NULL) url = v;
    else if ((v = cli_opt(argc, argv, &i, "--keystore", &missing)) != NULL) ks.keystore = v;
    else if ((v = cli_opt(argc, argv, &i, "--password-file", &missing)) != NULL) ks.password_file = v;
    else if ((v = cli_opt(argc, argv, &i, "--private-key", &missing)) != NULL) ks.private_key = (char *)v;
    else if ((v = cli_opt(argc, argv, &i, "--journal", &missing)) != NULL) journal = v;
    else if ((v = cli_opt(argc, argv, &i, "--min-amount", &missing)) != NULL) min_amount = v;
    else if ((v = cli_opt(argc, argv, &i, "--max-age", &missing)) != NULL) max_age = v;
    else if ((v = cli_opt(argc, argv, &i, "--max-gas-price", &missing)) != NULL) max_gas = v;
    else if ((v = cli_opt(argc, argv, &i, "--confirmations", &missing)) != NULL) conf = v;
    else if ((v = cli_opt(argc, argv, &i, "--max-batch", &missing)) != NULL) max_batch = v;
    else if (missing) return cli_fail(cmd, "option %s needs a value", argv[i]);
    else if (!strcmp(argv[i], "--dry-run")) dry = 1;
    else if (!strcmp(argv[i], "--json")) json = 1;
    else if (!strcmp(argv[i], "--no-sweep")) no_sweep = 1;
    else if (!strcmp(argv[i], "--no-verify")) no_verify = 1;
    else return cli_fail(cmd, "unknown argument '%s' (see tollgate help settle)", argv[i]);
  }
  if (!store_uri) return cli_fail(cmd, "--store sqlite:PATH is required");
  if (!dep_path) return cli_fail(cmd, "--deployment FILE is required");
  if (!url) return cli_fail(cmd, "--rpc-url is required");
  tg_settle_opts o;
  tg_settle_opts_init(&o);
  uint64_t x;
  if (min_amount && parse_u256_opt(cmd, "--min-amount", min_amount, &o.policy.min_amount)) return 1;
  if (max_gas && parse_u256_opt(cmd, "--max-gas-price", max_gas, &o.policy.max_gas_price)) return 1;
  if (max_age) {
    if (parse_u64_opt(cmd, "--max-age", max_age, 0, (uint64_t)1 << 40, &x)) return 1;
    o.policy.max_age_ms = (int64_t)x * 1000;
  }
  if (conf) {
    if (parse_u64_opt(cmd, "--confirmations", conf, 1, 1000, &x)) return 1;
    o.policy.confirmations = (unsigned)x;
  }
  if (max_batch) {
    if (parse_u64_opt(cmd, "--max-batch", max_batch, 1, 100000, &x)) return 1;
    o.policy.max_batch = (size_t)x;
  }
  o.policy.no_sweep = no_sweep;
  o.policy.verify_vouchers = !no_verify;
  char jpath[1024];
  if (!journal && (!strncmp(store_uri, "postgres://", 11) || !strncmp(store_uri, "postgresql://", 13)))
    return cli_fail(cmd, "with a PostgreSQL store give --journal PATH (a journal of its own: "
                    "each tollgated instance keeps STATE_DIR/tollgated.txm and settles itself while "
                    "it holds the gateway lease)");
  if (!journal) {
    if (journal_for(store_uri, jpath, sizeof jpath))
      return cli_fail(cmd, "cannot derive a --journal path from --store %s", store_uri);
    journal = jpath;
  }
  tg_deployment dep;
  if (load_deployment(cmd, dep_path, &dep)) return 1;
  tg_rpc *rpc = NULL;
  tg_store *st = NULL;
  tg_seckey *key = NULL;
  int status = 0;
  if (cli_rpc_open(cmd, url, &rpc)) return 1;
  if (tg_rpc_chain_id(rpc) != dep.chain_id) {
    status = cli_fail(cmd, "--rpc-url is on chain %llu but --deployment %s is for chain %llu",
                      (unsigned long long)tg_rpc_chain_id(rpc), dep_path,
                      (unsigned long long)dep.chain_id);
    goto done;
  }
  if ((status = cli_key_load(cmd, &ks, dep.chain_id, &key, NULL)) != 0) goto done;
  int rc = tg_store_open(&st, store_uri, NULL);
  if (rc) {
    status = cli_fail_err(cmd, rc, "--store %s", store_uri);
    goto done;
  }
  o.store = st;
  o.rpc = rpc;
  o.key = key;
  o.deployment = &dep;
  o.txm_journal = journal;
  o.dry_run = dry;
  if (!json && isatty(2)) o.progress = bar;
  o.holder_kind = TG_SETTLE_HOLDER_CLI;
  tg_settle_report rep;
  rc = tg_settle_run(&rep, &o);
  if (rc == TG_ESETTLE_RUNNING) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts); /* the store's lease clock */
    int64_t left = rep.lease_expires_ms - ((int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
    int daemon = !strncmp(rep.lease_holder, TG_SETTLE_HOLDER_DAEMON ":",
                          strlen(TG_SETTLE_HOLDER_DAEMON) + 1);
    status = cli_fail(cmd, "refused: a settlement run %s (lease holder %s, %lld s left on its lease) "
                      "is in progress for this store; %s",
                      daemon ? "of tollgated" : "started by hand", rep.lease_holder,
                      (long long)(left > 0 ? (left + 999) / 1000 : 0),
                      daemon ? "tollgated settles by itself (settle interval=, the watchtower): "
                               "wait for it to finish, or stop tollgated to settle by hand"
                             : "wait for it to finish (or for its lease to expire if it died)");
    tg_settle_report_cleanup(&rep);
    goto done;
  }
  if (rc == TG_EBUSY) {
    status = cli_fail(cmd, "refused: the transaction journal %s is in use by another live process "
                      "sending from this key (tollgated running with this store, or another "
                      "tollgate settle); tollgated settles by itself: stop it to settle by hand",
                      journal);
    tg_settle_report_cleanup(&rep);
    goto done;
  }
  if (json) {
    tg_buf b;
    tg_buf_init(&b, (size_t)64 << 20);
    if (tg_settle_report_json(&b, &rep, dry) == 0) printf("%s\n", (const char *)b.data);
    tg_buf_cleanup(&b);
  } else {
    tg_settle_report_print(stdout, &rep, dry);
  }
  tg_settle_report_cleanup(&rep);
  if (rc) {
    const char *m = tg_rpc_last_message(rpc);
    status = cli_fail_err(cmd, rc, "settlement stopped%s%s; run it again to resume",
                          m && *m ? ": " : "", m && *m ? m : "");
  }
done:
  tg_store_close(st);
  tg_seckey_free(key);
  tg_rpc_free(rpc);
  return status;
}

/* ------------------------------------------------------------------ report */

static const char *dec(const tg_u256 *v, char b[TG_U256_DEC_MAX]) {
  size_t n = tg_u256_to_dec(v, b);
  b[n < TG_U256_DEC_MAX ? n : TG_U256_DEC_MAX - 1] = 0;
  return b;
}

static void report_csv(const tg_recon *r) {
  char a[TG_ADDRESS_HEX_LEN], t[TG_ADDRESS_HEX_LEN], h[67], x[67], d1[TG_U256_DEC_MAX],
      d2[TG_U256_DEC_MAX], d3[TG_U256_DEC_MAX], d4[TG_U256_DEC_MAX], d5[TG_U256_DEC_MAX];
  printf("kind,id,payer,charged,claimed,onchain_claimed,outstanding,charges,unsettled_charges,"
         "rows_match,exact_charged,exact_charges,exact_confirmed,exact_pending,exact_failed,"
         "token,pay_to,status,tx_hash,request_id\n");
  for (size_t i = 0; i < r->n_ch; i++) {
    const tg_recon_channel *c = &r->ch[i];
    tg_hex_encode(h, c->id.b, 32, 1);
    tg_address_to_checksum(&c->payer, a);
    tg_address_to_checksum(&c->token, t);
    printf("channel,%s,%s,%s,%s,%s,%s,%llu,%llu,%s,,,,,,%s,,,,\n", h, a, dec(&c->charged, d1),
           dec(&c->claimed, d2), c->has_onchain ? dec(&c->onchain_claimed, d3) : "",
           dec(&c->outstanding, d4), (unsigned long long)c->charges,
           (unsigned long long)c->charges_unsettled,
           tg_u256_cmp(&c->charged, &c->charged_rows) == 0 ? "yes" : "NO", t);
  }
  for (size_t i = 0; i < r->n_payers; i++) {
    const tg_recon_payer *p = &r->payers[i];
    tg_address_to_checksum(&p->payer, a);
    int ok = tg_u256_cmp(&p->charged, &p->totals_channel) == 0 &&
             tg_u256_cmp(&p->exact_rows, &p->totals_exact) == 0 && p->exact_row_count == p->count_exact;
    printf("payer,,%s,%s,%s,%s,%s,%llu,,%s,", a, dec(&p->charged, d1), dec(&p->claimed, d2),
           r->has_onchain ? dec(&p->onchain_claimed, d3) : "", dec(&p->outstanding, d4),
           (unsigned long long)p->count_channel, ok ? "yes" : "NO");
    printf("%s,%llu,%s,%s,%s,,,,,\n", dec(&p->totals_exact, d1), (unsigned long long)p->count_exact,
           dec(&p->exact_confirmed, d2), dec(&p->exact_pending, d3), dec(&p->exact_failed, d5));
  }
  for (size_t i = 0; i < r->n_exact; i++) {
    const tg_recon_exact *e = &r->exact[i];
    tg_hex_encode(h, e->nonce.b, 32, 1);
    tg_address_to_checksum(&e->payer, a);
    tg_address_to_checksum(&e->token, t);
    char to[TG_ADDRESS_HEX_LEN];
    tg_address_to_checksum(&e->to, to);
    if (e->has_tx) tg_hex_encode(x, e->tx_hash.b, 32, 1);
    else x[0] = 0;
    printf("exact,%s,%s,%s,,,,1,,,,,,,,%s,%s,%s,%s,", h, a, dec(&e->amount, d1), t, to,
           tg_recon_exact_status_name(e->status), x);
    if (strpbrk(e->request_id, ",\"\r\n")) { /* RFC 4180 quoting */
      putchar('"');
      for (const char *c = e->request_id; *c; c++) {
        if (*c == '"') putchar('"');
        putchar(*c);
      }
      putchar('"');
    } else {
      fputs(e->request_id, stdout);
    }
    putchar('\n');
  }
}

static json_t *jd(const tg_u256 *v) {
  char b[TG_U256_DEC_MAX];
  return json_string(dec(v, b));
}

static void report_json(const tg_recon *r) {
  char a[TG_ADDRESS_HEX_LEN], h[67];
  json_t *o = json_object();
  json_t *chs = json_array();
  for (size_t i = 0; i < r->n_ch; i++) {
    const tg_recon_channel *c = &r->ch[i];
    json_t *x = json_object();
    tg_hex_encode(h, c->id.b, 32, 1);
    json_object_set_new(x, "channelId", json_string(h));
    tg_address_to_checksum(&c->payer, a);
    json_object_set_new(x, "payer", json_string(a));
    tg_address_to_checksum(&c->receiver, a);
    json_object_set_new(x, "receiver", json_string(a));
    tg_address_to_checksum(&c->token, a);
    json_object_set_new(x, "token", json_string(a));
    json_object_set_new(x, "charged", jd(&c->charged));
    json_object_set_new(x, "chargedRows", jd(&c->charged_rows));
    json_object_set_new(x, "charges", json_integer((json_int_t)c->charges));
    json_object_set_new(x, "unsettledCharges", json_integer((json_int_t)c->charges_unsettled));
    json_object_set_new(x, "claimed", jd(&c->claimed));
    if (c->has_onchain) {
      json_object_set_new(x, "onchainClaimed", jd(&c->onchain_claimed));
      json_object_set_new(x, "onchainBalance", jd(&c->onchain_balance));
    }
    json_object_set_new(x, "outstanding", jd(&c->outstanding));
    json_array_append_new(chs, x);
  }
  json_t *ps = json_array();
  for (size_t i = 0; i < r->n_payers; i++) {
    const tg_recon_payer *p = &r->payers[i];
    json_t *x = json_object();
    tg_address_to_checksum(&p->payer, a);
    json_object_set_new(x, "payer", json_string(a));
    json_object_set_new(x, "channels", json_integer((json_int_t)p->channels));
    json_object_set_new(x, "charged", jd(&p->charged));
    json_object_set_new(x, "claimed", jd(&p->claimed));
    if (r->has_onchain) json_object_set_new(x, "onchainClaimed", jd(&p->onchain_claimed));
    json_object_set_new(x, "outstanding", jd(&p->outstanding));
    json_object_set_new(x, "channelTotal", jd(&p->totals_channel));
    json_object_set_new(x, "channelCharges", json_integer((json_int_t)p->count_channel));
    json_object_set_new(x, "exactTotal", jd(&p->totals_exact));
    json_object_set_new(x, "exactCharges", json_integer((json_int_t)p->count_exact));
    json_object_set_new(x, "exactChargedRows", jd(&p->exact_rows));
    json_object_set_new(x, "exactPayments", json_integer((json_int_t)p->exact_payments));
    json_object_set_new(x, "exactConfirmed", jd(&p->exact_confirmed));
    json_object_set_new(x, "exactPending", jd(&p->exact_pending));
    json_object_set_new(x, "exactFailed", jd(&p->exact_failed));
    if (r->has_onchain) json_object_set_new(x, "exactOnchain", jd(&p->exact_onchain));
    json_array_append_new(ps, x);
  }
  json_t *ex = json_array();
  for (size_t i = 0; i < r->n_exact; i++) {
    const tg_recon_exact *e = &r->exact[i];
    json_t *x = json_object();
    tg_address_to_checksum(&e->payer, a);
    json_object_set_new(x, "payer", json_string(a));
    tg_address_to_checksum(&e->to, a);
    json_object_set_new(x, "payTo", json_string(a));
    tg_address_to_checksum(&e->token, a);
    json_object_set_new(x, "token", json_string(a));
    tg_hex_encode(h, e->nonce.b, 32, 1);
    json_object_set_new(x, "nonce", json_string(h));
    json_object_set_new(x, "amount", jd(&e->amount));
    json_object_set_new(x, "status", json_string(tg_recon_exact_status_name(e->status)));
    if (e->has_tx) tg_hex_encode(h, e->tx_hash.b, 32, 1);
    json_object_set_new(x, "txHash", e->has_tx ? json_string(h) : json_null());
    json_object_set_new(x, "requestId", json_string(e->request_id));
    json_object_set_new(x, "createdAt", json_integer((json_int_t)e->created_at));
    if (e->onchain >= 0) {
      static const char *const names[] = {"not mined", "success", "reverted"};
      json_object_set_new(x, "onchain", json_string(names[e->onchain]));
      if (e->onchain) json_object_set_new(x, "blockNumber", json_integer((json_int_t)e->block_number));
    }
    json_array_append_new(ex, x);
  }
  json_object_set_new(o, "channels", chs);
  json_object_set_new(o, "payers", ps);
  json_object_set_new(o, "exactPayments", ex);
  json_object_set_new(o, "mismatches", json_integer((json_int_t)r->mismatches));
  char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
  if (s) printf("%s\n", s);
  free(s);
  json_decref(o);
}

static void report_table(const tg_recon *r) {
  char h[67], d1[TG_U256_DEC_MAX], d2[TG_U256_DEC_MAX], d3[TG_U256_DEC_MAX],
      d4[TG_U256_DEC_MAX], a[TG_ADDRESS_HEX_LEN];
  printf("%-18s %-20s %-20s %-20s %-20s %s\n", "channel", "charged", "claimed (store)",
         r->has_onchain ? "claimed (chain)" : "-", "outstanding", "charges");
  for (size_t i = 0; i < r->n_ch; i++) {
    const tg_recon_channel *c = &r->ch[i];
    tg_hex_encode(h, c->id.b, 32, 1);
    h[18] = 0;
    printf("%-18s %-20s %-20s %-20s %-20s %llu%s\n", h, dec(&c->charged, d1), dec(&c->claimed, d2),
           c->has_onchain ? dec(&c->onchain_claimed, d3) : "-", dec(&c->outstanding, d4),
           (unsigned long long)c->charges,
           tg_u256_cmp(&c->charged, &c->charged_rows) ? "  ROWS DO NOT ADD UP" : "");
  }
  printf("\n%-42s %-8s %-20s %-20s %-20s %s\n", "payer", "channels", "charged", "claimed",
         "outstanding", "exact charged");
  for (size_t i = 0; i < r->n_payers; i++) {
    const tg_recon_payer *p = &r->payers[i];
    tg_address_to_checksum(&p->payer, a);
    printf("%-42s %-8zu %-20s %-20s %-20s %s (%llu)%s\n", a, p->channels, dec(&p->charged, d1),
           dec(r->has_onchain ? &p->onchain_claimed : &p->claimed, d2), dec(&p->outstanding, d3),
           dec(&p->totals_exact, d4), (unsigned long long)p->count_exact,
           tg_u256_cmp(&p->totals_exact, &p->exact_rows) ? "  EXACT ROWS DO NOT ADD UP" : "");
  }
  if (r->n_exact) {
    printf("\n%-42s %-20s %-10s %s\n", "exact payer", "amount", "status", "transaction");
    for (size_t i = 0; i < r->n_exact; i++) {
      const tg_recon_exact *e = &r->exact[i];
      tg_address_to_checksum(&e->payer, a);
      if (e->has_tx) tg_hex_encode(h, e->tx_hash.b, 32, 1);
      printf("%-42s %-20s %-10s %s\n", a, dec(&e->amount, d1), tg_recon_exact_status_name(e->status),
             e->has_tx ? h : "-");
    }
  }
  printf("\n%zu channels, %zu payers, %zu exact payments, %zu mismatches\n", r->n_ch, r->n_payers,
         r->n_exact, r->mismatches);
}

int cmd_report(int argc, char **argv) {
  const char *cmd = argv[0];
  const char *store_uri = NULL, *dep_path = NULL, *url = NULL;
  int csv = 0, json = 0;
  for (int i = 1; i < argc; i++) {
    int missing = 0;
    const char *v;
    if ((v = cli_opt(argc, argv, &i, "--store", &missing)) != NULL) store_uri = v;
    else if ((v = cli_opt(argc, argv, &i, "--deployment", &missing)) != NULL) dep_path = v;
    else if ((v = cli_opt(argc, argv, &i, "--rpc-url", &missing)) != NULL) url = v;
    else if (missing) return cli_fail(cmd, "option %s needs a value", argv[i]);
    else if (!strcmp(argv[i], "--csv")) csv = 1;
    else if (!strcmp(argv[i], "--json")) json = 1;
    else return cli_fail(cmd, "unknown argument '%s' (see tollgate help report)", argv[i]);
  }
  if (!store_uri) return cli_fail(cmd, "--store sqlite:PATH is required");
  if (csv && json) return cli_fail(cmd, "give only one of --csv and --json");
  if (!url != !dep_path) return cli_fail(cmd, "--rpc-url and --deployment go together");
  tg_deployment dep;
  if (dep_path && load_deployment(cmd, dep_path, &dep)) return 1;
  tg_rpc *rpc = NULL;
  if (url && cli_rpc_open(cmd, url, &rpc)) return 1;
  tg_store *st = NULL;
  tg_store_options so = {0};
  so.no_migrate = 1;
  int status = 0;
  int rc = tg_store_open(&st, store_uri, &so);
  if (rc) {
    status = cli_fail_err(cmd, rc, "--store %s", store_uri);
    goto done;
  }
  tg_recon r;
  rc = tg_recon_build(&r, st, rpc, dep_path ? &dep : NULL);
  if (rc) {
    status = cli_fail_err(cmd, rc, "cannot build the report");
    goto done;
  }
  if (csv) report_csv(&r);
  else if (json) report_json(&r);
  else report_table(&r);
  if (r.mismatches) status = cli_fail(cmd, "%zu totals do not match their charge rows", r.mismatches);
  tg_recon_cleanup(&r);
done:
  tg_store_close(st);
  tg_rpc_free(rpc);
  return status;
}
