/* `tollgate pay` (a paid HTTP request, like curl), `tollgate proxy`, `tollgate channel ...` and `tollgate pass ...`. */
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/commands.h"
#include "tollgate/address.h"
#include "tollgate/client.h"
#include "tollgate/client_pass.h"
#include "tollgate/deploy.h"
#include "tollgate/error.h"
#include "tollgate/hex.h"
#include "tollgate/keystore.h"
#include "tollgate/u256.h"

#define MAX_THREADS 256

/* Options every payer command shares. */
typedef struct {
  char *private_key;
  const char *keystore;
  const char *password_file;
  const char *state_dir;
  char state_buf[4096];
  tg_client_opts o;
} payer_opts;

/* cli_opt, leaving *i past the value. */
static const char *take(int argc, char **argv, int *i, const char *name, int *missing) {
  const char *v = cli_opt(argc, argv, i, name, missing);
  if (v) ++*i;
  return v;
}

static int parse_amount(const char *cmd, const char *name, const char *v, tg_u256 *out) {
  if (tg_u256_parse(out, v, strlen(v)) != 0)
    return cli_fail(cmd, "%s '%s' is not an amount in atomic units (decimal or 0x hex)", name, v);
  return 0;
}

static int parse_count(const char *cmd, const char *name, const char *v, uint64_t hi,
                       uint64_t *out) {
  char *end = NULL;
  unsigned long long x = strtoull(v, &end, 10);
  if (!*v || *end || *v == '-' || x < 1 || x > hi)
    return cli_fail(cmd, "%s '%s' is not a number in 1..%llu", name, v, (unsigned long long)hi);
  *out = x;
  return 0;
}

/*
 * Scans one shared option at argv[*i]: 1 when consumed, 0 when not ours,
 * -1 on a bad value (reported).
 */
static int payer_opt(const char *cmd, payer_opts *p, int argc, char **argv, int *i) {
  const char *v;
  int missing = 0;
  tg_client_caps *k = &p->o.caps;
  struct {
    const char *name;
    int *has;
    tg_u256 *val;
  } caps[] = {{"--max-per-call", &k->has_per_call, &k->per_call},
              {"--max-per-hour", &k->has_per_hour, &k->per_hour},
              {"--max-per-day", &k->has_per_day, &k->per_day},
              {"--max-total", &k->has_total, &k->total},
              {"--max-per-payee", &k->has_per_payee, &k->per_payee}};
  for (size_t j = 0; j < sizeof caps / sizeof caps[0]; j++) {
    if ((v = take(argc, argv, i, caps[j].name, &missing)) != NULL) {
      if (parse_amount(cmd, caps[j].name, v, caps[j].val)) return -1;
      *caps[j].has = 1;
      return 1;
    }
    if (missing) goto miss;
  }
  if ((v = take(argc, argv, i, "--private-key", &missing)) != NULL) {
    p->private_key = (char *)v;
    return 1;
  }
  if (!missing && (v = take(argc, argv, i, "--keystore", &missing)) != NULL) {
    p->keystore = v;
    return 1;
  }
  if (!missing && (v = take(argc, argv, i, "--password-file", &missing)) != NULL) {
    p->password_file = v;
    return 1;
  }
  if (!missing && (v = take(argc, argv, i, "--state", &missing)) != NULL) {
    p->state_dir = v;
    return 1;
  }
  if (!missing && (v = take(argc, argv, i, "--rpc-url", &missing)) != NULL) {
    p->o.rpc_url = v;
    return 1;
  }
  if (!missing && (v = take(argc, argv, i, "--open-channel", &missing)) != NULL) {
    if (parse_amount(cmd, "--open-channel", v, &p->o.open_deposit)) return -1;
    return 1;
  }
  if (!missing && (v = take(argc, argv, i, "--headroom", &missing)) != NULL) {
    uint64_t n;
    if (parse_count(cmd, "--headroom", v, 1000000, &n)) return -1;
    p->o.headroom_calls = n;
    return 1;
  }
  if (missing) goto miss;
  if (strcmp(argv[*i], "--no-exact") == 0) {
    p->o.allow_exact = 0;
    ++*i;
    return 1;
  }
  if (strcmp(argv[*i], "--gasless") == 0) {
    p->o.gasless = 1;
    ++*i;
    return 1;
  }
  if (strcmp(argv[*i], "--no-channel") == 0) {
    p->o.allow_channel = 0;
    ++*i;
    return 1;
  }
  return 0;
miss:
  cli_fail(cmd, "%s needs a value", argv[*i]);
  return -1;
}

static void payer_defaults(payer_opts *p) {
  memset(p, 0, sizeof *p);
  p->o.allow_exact = 1;
  p->o.allow_channel = 1;
}

/* Loads the payer key (--private-key, or --keystore with its password); prints the reason on failure. */
static int payer_key(const char *cmd, payer_opts *p, tg_seckey **out) {
  *out = NULL;
  int rc = tg_secp_init();
  if (rc) return cli_fail_err(cmd, rc, "secp256k1");
  tg_seckey *key = tg_seckey_new();
  if (!key) return cli_fail(cmd, "out of memory");
  if (p->private_key) {
    rc = tg_seckey_set_hex(key, p->private_key, strlen(p->private_key));
    sodium_memzero(p->private_key, strlen(p->private_key));
    if (rc) {
      tg_seckey_free(key);
      return cli_fail_err(cmd, rc, "--private-key");
    }
  } else if (p->keystore) {
    tg_buf pw;
    tg_buf_init(&pw, 4096);
    const char *env = getenv("TOLLGATE_PASSWORD");
    if (p->password_file) {
      rc = cli_read_file(p->password_file, &pw);
      if (rc) {
        tg_buf_cleanup(&pw);
        tg_seckey_free(key);
        return cli_fail_err(cmd, rc, "--password-file %s", p->password_file);
      }
      while (pw.len && (pw.data[pw.len - 1] == '\n' || pw.data[pw.len - 1] == '\r')) pw.len--;
    } else if (env) {
      rc = tg_buf_append_str(&pw, env);
    } else {
      tg_buf_cleanup(&pw);
      tg_seckey_free(key);
      return cli_fail(cmd, "--keystore needs --password-file or TOLLGATE_PASSWORD");
    }
    tg_keystore_limits lim;
    tg_keystore_limits_default(&lim);
    if (!rc)
      rc = tg_keystore_decrypt_file(key, p->keystore, pw.data ? (const char *)pw.data : "", pw.len,
                                    &lim);
    if (pw.data) sodium_memzero(pw.data, pw.cap);
    tg_buf_cleanup(&pw);
    if (rc) {
      tg_seckey_free(key);
      return cli_fail_err(cmd, rc, "--keystore %s", p->keystore);
    }
  } else {
    tg_seckey_free(key);
    return cli_fail(cmd, "a key is required: --private-key or --keystore");
  }
  *out = key;
  return 0;
}

/* Loads the key and opens the client; prints the reason on failure. */
static int payer_open(const char *cmd, payer_opts *p, tg_client **out) {
  *out = NULL;
  tg_seckey *key;
  if (payer_key(cmd, p, &key)) return 1;
  int rc;
  if (!p->state_dir) {
    const char *home = getenv("HOME");
    snprintf(p->state_buf, sizeof p->state_buf, "%s/.tollgate", home && *home ? home : ".");
    p->state_dir = p->state_buf;
  }
  p->o.state_dir = p->state_dir;
  if (!p->o.rpc_url) {
    const char *env = getenv("ETH_RPC_URL");
    if (env && *env) p->o.rpc_url = env;
  }
  p->o.key = key;
  rc = tg_client_open(out, &p->o);
  tg_seckey_free(key);
  p->o.key = NULL;
  if (rc) return cli_fail_err(cmd, rc, "--state %s", p->state_dir);
  return 0;
}

/* ---- tollgate pay ------------------------------------------------------------ */

typedef struct {
  tg_client *c;
  const tg_client_request *req;
  uint64_t next, count;
  pthread_mutex_t mu;
  uint64_t ok, failed;
  tg_u256 charged;
  int last_err;
  char last_why[300];
} batch;

static void *batch_worker(void *arg) {
  batch *b = arg;
  for (;;) {
    pthread_mutex_lock(&b->mu);
    int go = b->next < b->count;
    b->next++;
    pthread_mutex_unlock(&b->mu);
    if (!go) return NULL;
    tg_client_response r;
    int rc = tg_client_fetch(b->c, &r, b->req);
    pthread_mutex_lock(&b->mu);
    if (rc == 0 && r.status >= 200 && r.status < 300) {
      b->ok++;
      if (tg_u256_add(&b->charged, &b->charged, &r.charged)) b->last_err = TG_ERANGE;
    } else {
      b->failed++;
      b->last_err = rc;
      snprintf(b->last_why, sizeof b->last_why, "HTTP %ld %s", r.status, r.error);
    }
    pthread_mutex_unlock(&b->mu);
    tg_client_response_cleanup(&r);
  }
}

static void print_charge(const tg_client_response *r) {
  char d[TG_U256_DEC_MAX];
  tg_u256_to_dec(&r->charged, d);
  if (r->has_channel) {
    char id[67], cum[TG_U256_DEC_MAX];
    tg_hex_encode(id, r->channel_id.b, 32, 1);
    tg_u256_to_dec(&r->charged_cumulative, cum);
    fprintf(stderr, "charged %s (channel %s, cumulative %s%s)\n", d, id, cum,
            r->replayed ? ", replayed" : "");
  } else if (r->has_transaction) {
    char tx[67];
    tg_hex_encode(tx, r->transaction.b, 32, 1);
    fprintf(stderr, "charged %s (exact, transaction %s%s)\n", d, tx, r->replayed ? ", replayed" : "");
  } else {
    fprintf(stderr, "charged %s%s\n", d, r->replayed ? " (replayed)" : "");
  }
}

int cmd_pay(int argc, char **argv) {
  const char *cmd = argv[0];
  payer_opts p;
  payer_defaults(&p);
  const char *method = NULL, *data = NULL, *url = NULL, *payid = NULL;
  const char *headers[TG_CLIENT_MAX_HEADERS];
  size_t n_headers = 0;
  int verbose = 0;
  uint64_t count = 1, parallel = 1;
  for (int i = 1; i < argc;) {
    int k = payer_opt(cmd, &p, argc, argv, &i);
    if (k < 0) return 1;
    if (k) continue;
    const char *a = argv[i];
    int missing = 0;
    const char *v;
    if (strcmp(a, "-X") == 0 || strcmp(a, "-H") == 0 || strcmp(a, "-d") == 0) {
      if (i + 1 >= argc) return cli_fail(cmd, "%s needs a value", a);
      v = argv[i + 1];
      i += 2;
      if (a[1] == 'X') {
        method = v;
      } else if (a[1] == 'd') {
        data = v;
      } else {
        if (n_headers == TG_CLIENT_MAX_HEADERS) return cli_fail(cmd, "too many -H headers");
        if (!strchr(v, ':')) return cli_fail(cmd, "-H '%s' is not 'Name: value'", v);
        headers[n_headers++] = v;
      }
    } else if (strcmp(a, "-v") == 0) {
      verbose = 1;
      i++;
    } else if ((v = take(argc, argv, &i, "--payment-id", &missing)) != NULL) {
      payid = v;
    } else if (!missing && (v = take(argc, argv, &i, "--count", &missing)) != NULL) {
      if (parse_count(cmd, "--count", v, 1000000, &count)) return 1;
    } else if (!missing && (v = take(argc, argv, &i, "--parallel", &missing)) != NULL) {
      if (parse_count(cmd, "--parallel", v, MAX_THREADS, &parallel)) return 1;
    } else if (missing) {
      return cli_fail(cmd, "%s needs a value", a);
    } else if (a[0] == '-' && a[1]) {
      return cli_fail(cmd, "unknown option '%s'", a);
    } else if (!url) {
      url = a;
      i++;
    } else {
      return cli_fail(cmd, "unexpected argument '%s'", a);
    }
  }
  if (!url) return cli_usage(cmd);
  if (payid && count > 1) return cli_fail(cmd, "--payment-id names one call: drop --count");
  if (verbose) p.o.log = stderr;
  tg_client *c;
  if (payer_open(cmd, &p, &c)) return 1;
  tg_client_request req;
  memset(&req, 0, sizeof req);
  req.method = method;
  req.url = url;
  req.headers = headers;
  req.n_headers = n_headers;
  req.body = data;
  req.body_len = data ? strlen(data) : 0;
  req.payment_id = payid;
  int ret = 0;
  if (count == 1) {
    tg_client_response r;
    int rc = tg_client_fetch(c, &r, &req);
    if (r.body.len) fwrite(r.body.data, 1, r.body.len, stdout);
    fflush(stdout);
    if (rc) {
      ret = cli_fail_err(cmd, rc, "%s%s%s", url, r.error[0] ? ": " : "", r.error);
      if (r.paid && (rc == TG_ECLIENT_HTTP || (r.status >= 500 && rc == 0)))
        fprintf(stderr, "%s: the payment was sent and may have been charged: repeat the same "
                        "request with --payment-id %s to be answered once\n", cmd, r.payment_id);
    } else {
      if (r.paid) print_charge(&r);
      if (r.status >= 400) ret = cli_fail(cmd, "%s: HTTP %ld", url, r.status);
    }
    tg_client_response_cleanup(&r);
  } else {
    batch b;
    memset(&b, 0, sizeof b);
    b.c = c;
    b.req = &req;
    b.count = count;
    pthread_mutex_init(&b.mu, NULL);
    pthread_t th[MAX_THREADS];
    size_t started = 0;
    for (; started < parallel; started++)
      if (pthread_create(&th[started], NULL, batch_worker, &b) != 0) break;
    if (started == 0) batch_worker(&b);
    for (size_t t = 0; t < started; t++) pthread_join(th[t], NULL);
    pthread_mutex_destroy(&b.mu);
    char d[TG_U256_DEC_MAX];
    tg_u256_to_dec(&b.charged, d);
    fprintf(stderr, "calls %llu ok %llu failed %llu charged %s\n", (unsigned long long)count,
            (unsigned long long)b.ok, (unsigned long long)b.failed, d);
    if (b.failed) ret = cli_fail_err(cmd, b.last_err, "%s: %s", url, b.last_why);
  }
  tg_client_close(c);
  return ret;
}

/* ---- tollgate proxy --------------------------------------------------------------- */

int cmd_proxy(int argc, char **argv) {
  const char *cmd = argv[0];
  payer_opts p;
  payer_defaults(&p);
  const char *listen = NULL, *target = NULL;
  uint64_t timeout_s = 600, max_calls = 256;
  int verbose = 0;
  for (int i = 1; i < argc;) {
    int k = payer_opt(cmd, &p, argc, argv, &i);
    if (k < 0) return 1;
    if (k) continue;
    int missing = 0;
    const char *v;
    if ((v = take(argc, argv, &i, "--listen", &missing)) != NULL) {
      listen = v;
    } else if (!missing && (v = take(argc, argv, &i, "--target", &missing)) != NULL) {
      target = v;
    } else if (!missing && (v = take(argc, argv, &i, "--timeout", &missing)) != NULL) {
      if (parse_count(cmd, "--timeout", v, 86400, &timeout_s)) return 1;
    } else if (!missing && (v = take(argc, argv, &i, "--max-calls", &missing)) != NULL) {
      if (parse_count(cmd, "--max-calls", v, 4096, &max_calls)) return 1;
    } else if (missing) {
      return cli_fail(cmd, "%s needs a value", argv[i]);
    } else if (strcmp(argv[i], "-v") == 0) {
      verbose = 1;
      i++;
    } else if (argv[i][0] == '-') {
      return cli_fail(cmd, "unknown option '%s'", argv[i]);
    } else {
      return cli_fail(cmd, "unexpected argument '%s'", argv[i]);
    }
  }
  if (!listen || !target) return cli_usage(cmd);
  if (strncmp(target, "http://", 7) != 0 && strncmp(target, "https://", 8) != 0)
    return cli_fail(cmd, "--target '%s' is not an http:// or https:// URL", target);
  if (verbose) p.o.log = stderr;
  p.o.timeout_ms = (long)timeout_s * 1000;
  tg_client *c;
  if (payer_open(cmd, &p, &c)) return 1;
  tg_client_proxy_opts po;
  memset(&po, 0, sizeof po);
  po.listen = listen;
  po.target = target;
  po.max_calls = (unsigned)max_calls;
  po.log = stderr;
  int rc = tg_client_proxy_run(c, &po);
  if (rc == TG_ECANCELED) {
    fflush(NULL);
    _exit(1); /* calls still run on the client: do not close it under them */
  }
  tg_client_close(c);
  if (rc == TG_EPERM)
    return cli_fail(cmd, "--listen %s: only loopback addresses (127.0.0.1, [::1]) are allowed: "
                         "whoever can connect spends your money", listen);
  if (rc == TG_EINVAL) return cli_fail(cmd, "--listen '%s' is not HOST:PORT", listen);
  if (rc) return cli_fail_err(cmd, rc, "--listen %s", listen);
  return 0;
}

/* ---- tollgate channel ----------------------------------------------------------- */

static void print_channel(const tg_client_channel *ch) {
  char id[67], rcv[TG_ADDRESS_HEX_LEN], tok[TG_ADDRESS_HEX_LEN], con[TG_ADDRESS_HEX_LEN];
  char dep[TG_U256_DEC_MAX], chg[TG_U256_DEC_MAX], sig[TG_U256_DEC_MAX];
  tg_hex_encode(id, ch->id.b, 32, 1);
  tg_address_to_checksum(&ch->config.receiver, rcv);
  tg_address_to_checksum(&ch->config.token, tok);
  tg_address_to_checksum(&ch->contract, con);
  tg_u256_to_dec(&ch->deposit, dep);
  tg_u256_to_dec(&ch->charged, chg);
  tg_u256_to_dec(&ch->signed_max, sig);
  printf("%s chain=%llu contract=%s receiver=%s token=%s deposit=%s charged=%s signed=%s", id,
         (unsigned long long)ch->chain_id, con, rcv, tok, dep, chg, sig);
  if (!tg_u256_is_zero(&ch->pending_deposit)) {
    char pd[TG_U256_DEC_MAX];
    tg_u256_to_dec(&ch->pending_deposit, pd);
    printf(" pending_deposit=%s", pd);
  }
  if (ch->withdraw_at) printf(" withdrawing=finalizable_at_%llu", (unsigned long long)ch->withdraw_at);
  printf("\n");
}

/* Parses a channel id argument. */
static int parse_id(const char *cmd, const char *s, tg_hash *id) {
  if (tg_hex_decode_exact(id->b, 32, s, strlen(s)))
    return cli_fail(cmd, "channel id '%s' is not 32 bytes of hex", s);
  return 0;
}

/*
 * `tollgate channel topup --deposit N ID`, `withdraw [--amount N] ID`, `finalize ID`:
 * the payer's on-chain operations on a known channel.
 */
static int channel_onchain_cmd(int argc, char **argv, int what) {
  const char *cmd = argv[0];
  payer_opts p;
  payer_defaults(&p);
  const char *id_s = NULL, *amt_s = NULL;
  for (int i = 1; i < argc;) {
    int k = payer_opt(cmd, &p, argc, argv, &i);
    if (k < 0) return 1;
    if (k) continue;
    int missing = 0;
    const char *v;
    if ((v = take(argc, argv, &i, what == 0 ? "--deposit" : "--amount", &missing)) != NULL) {
      if (what == 2) return cli_fail(cmd, "unknown option '%s'", argv[i - 2]);
      amt_s = v;
    } else if (missing) {
      return cli_fail(cmd, "%s needs a value", argv[i]);
    } else if (argv[i][0] == '-') {
      return cli_fail(cmd, "unknown option '%s'", argv[i]);
    } else if (!id_s) {
      id_s = argv[i++];
    } else {
      return cli_fail(cmd, "unexpected argument '%s'", argv[i]);
    }
  }
  if (!id_s || (what == 0 && !amt_s)) return cli_usage(cmd);
  tg_hash id;
  tg_u256 amt;
  if (parse_id(cmd, id_s, &id)) return 1;
  if (amt_s && parse_amount(cmd, what == 0 ? "--deposit" : "--amount", amt_s, &amt)) return 1;
  if (amt_s && tg_u256_is_zero(&amt)) return cli_fail(cmd, "the amount must be above 0");
  tg_client *c;
  if (payer_open(cmd, &p, &c)) return 1;
  const char *rpc_url = p.o.rpc_url;
  int ret = 0, rc;
  tg_client_channel ch;
  tg_u256 paid;
  char d[TG_U256_DEC_MAX];
  if (!rpc_url || !*rpc_url) {
    ret = cli_fail(cmd, "--rpc-url or ETH_RPC_URL is required");
  } else if (what == 0) {
    rc = tg_client_channel_topup(c, &ch, rpc_url, &id, &amt);
    if (rc == TG_ENOTFOUND) ret = cli_fail(cmd, "no channel %s in %s", id_s, p.state_dir);
    else if (rc) ret = cli_fail_err(cmd, rc, "topping up %s (approve + deposit)", id_s);
    else print_channel(&ch);
  } else if (what == 1) {
    rc = tg_client_channel_withdraw(c, &ch, rpc_url, &id, amt_s ? &amt : NULL);
    if (rc == TG_ENOTFOUND) ret = cli_fail(cmd, "no channel %s in %s", id_s, p.state_dir);
    else if (rc == TG_ECHANNEL_SHORT) ret = cli_fail(cmd, "%s: nothing left to withdraw (all claimed)", id_s);
    else if (rc) ret = cli_fail_err(cmd, rc, "starting the withdrawal of %s", id_s);
    else {
      print_channel(&ch);
      fprintf(stderr, "withdrawal started: finalizable at %llu (Unix time), with `tollgate channel finalize %s`; "
                      "the gateway may claim what it charged until then\n",
              (unsigned long long)ch.withdraw_at, id_s);
    }
  } else {
    rc = tg_client_channel_finalize(c, &ch, rpc_url, &id, &paid);
    if (rc == TG_EBUSY)
      ret = cli_fail(cmd, "%s: the withdrawal is not finalizable before %llu (Unix time): try again then",
                     id_s, (unsigned long long)ch.withdraw_at);
    else if (rc == TG_ENOTFOUND)
      ret = cli_fail(cmd, "%s: no such channel in %s, or no withdrawal pending (start one with `channel withdraw`)",
                     id_s, p.state_dir);
    else if (rc) ret = cli_fail_err(cmd, rc, "finalizing the withdrawal of %s", id_s);
    else {
      tg_u256_to_dec(&paid, d);
      print_channel(&ch);
      fprintf(stderr, "withdrawn %s back to the payer\n", d);
    }
  }
  tg_client_close(c);
  return ret;
}

/* `tollgate channel refund ID URL`: the gateway returns what it has not charged. */
int cmd_channel_refund(int argc, char **argv) {
  const char *cmd = argv[0];
  payer_opts p;
  payer_defaults(&p);
  const char *id_s = NULL, *url = NULL;
  int verbose = 0;
  for (int i = 1; i < argc;) {
    int k = payer_opt(cmd, &p, argc, argv, &i);
    if (k < 0) return 1;
    if (k) continue;
    if (strcmp(argv[i], "-v") == 0) {
      verbose = 1;
      i++;
    } else if (argv[i][0] == '-') {
      return cli_fail(cmd, "unknown option '%s'", argv[i]);
    } else if (!id_s) {
      id_s = argv[i++];
    } else if (!url) {
      url = argv[i++];
    } else {
      return cli_fail(cmd, "unexpected argument '%s'", argv[i]);
    }
  }
  if (!id_s || !url) return cli_usage(cmd);
  tg_hash id;
  if (parse_id(cmd, id_s, &id)) return 1;
  if (verbose) p.o.log = stderr;
  tg_client *c;
  if (payer_open(cmd, &p, &c)) return 1;
  tg_client_channel ch;
  tg_u256 refunded;
  tg_hash tx;
  int ret = 0, rc = tg_client_channel_refund(c, &ch, url, &id, &refunded, &tx);
  if (rc == TG_ENOTFOUND) ret = cli_fail(cmd, "no channel %s in %s", id_s, p.state_dir);
  else if (rc == TG_ECHANNEL_SHORT) ret = cli_fail(cmd, "%s: nothing to refund (everything is charged)", id_s);
  else if (rc == TG_EUNSUPPORTED)
    ret = cli_fail(cmd, "%s does not offer refunds: use `tollgate channel withdraw` and `finalize`", url);
  else if (rc) ret = cli_fail_err(cmd, rc, "refund of %s (-v shows the gateway's answer)", id_s);
  else {
    char d[TG_U256_DEC_MAX], t[67];
    tg_u256_to_dec(&refunded, d);
    tg_hex_encode(t, tx.b, 32, 1);
    print_channel(&ch);
    fprintf(stderr, "refunded %s (transaction %s)\n", d, t);
  }
  tg_client_close(c);
  return ret;
}

int cmd_channel_topup(int argc, char **argv) { return channel_onchain_cmd(argc, argv, 0); }
int cmd_channel_withdraw(int argc, char **argv) { return channel_onchain_cmd(argc, argv, 1); }
int cmd_channel_finalize(int argc, char **argv) { return channel_onchain_cmd(argc, argv, 2); }

/*
 * `tollgate channel add --salt 0x.. --deposit N <URL>` registers a channel opened on-chain;
 * `tollgate channel open --deposit N [--salt 0x..] --rpc-url RPC <URL>` opens it first.
 */
static int channel_add_open(int argc, char **argv, int open_it) {
  const char *cmd = argv[0];
  payer_opts p;
  payer_defaults(&p);
  const char *salt_s = NULL, *dep_s = NULL, *url = NULL;
  for (int i = 1; i < argc;) {
    int k = payer_opt(cmd, &p, argc, argv, &i);
    if (k < 0) return 1;
    if (k) continue;
    int missing = 0;
    const char *v;
    if ((v = take(argc, argv, &i, "--salt", &missing)) != NULL) {
      salt_s = v;
    } else if (!missing && (v = take(argc, argv, &i, "--deposit", &missing)) != NULL) {
      dep_s = v;
    } else if (missing) {
      return cli_fail(cmd, "%s needs a value", argv[i]);
    } else if (argv[i][0] == '-') {
      return cli_fail(cmd, "unknown option '%s'", argv[i]);
    } else if (!url) {
      url = argv[i++];
    } else {
      return cli_fail(cmd, "unexpected argument '%s'", argv[i]);
    }
  }
  if (!url || !dep_s || (!open_it && !salt_s)) return cli_usage(cmd);
  const char *rpc_url = p.o.rpc_url ? p.o.rpc_url : getenv("ETH_RPC_URL");
  if (open_it && (!rpc_url || !*rpc_url)) return cli_fail(cmd, "--rpc-url or ETH_RPC_URL is required");
  tg_hash salt;
  tg_u256 dep;
  if (salt_s) {
    if (tg_hex_decode_exact(salt.b, 32, salt_s, strlen(salt_s)))
      return cli_fail(cmd, "--salt '%s' is not 32 bytes of hex", salt_s);
  } else {
    tg_client_channel_salt(&salt);
  }
  if (parse_amount(cmd, "--deposit", dep_s, &dep)) return 1;
  tg_client *c;
  if (payer_open(cmd, &p, &c)) return 1;
  tg_x402_requirements t;
  int rc = tg_client_terms(c, &t, url);
  int ret = 0;
  tg_client_channel ch;
  if (rc) {
    ret = cli_fail_err(cmd, rc, "%s offers no batch-settlement terms", url);
  } else if ((rc = open_it ? tg_client_channel_open(c, &ch, rpc_url, &t, &salt, &dep)
                           : tg_client_channel_add(c, &ch, &t, &salt, &dep)) != 0) {
    ret = cli_fail_err(cmd, rc, open_it ? "opening the channel" : "adding the channel");
  } else {
    print_channel(&ch);
  }
  tg_client_close(c);
  return ret;
}

int cmd_channel_add(int argc, char **argv) { return channel_add_open(argc, argv, 0); }
int cmd_channel_open(int argc, char **argv) { return channel_add_open(argc, argv, 1); }

/* `tollgate channel list` and `tollgate channel status [ID]`. */
static int channel_show(int argc, char **argv, int one) {
  const char *cmd = argv[0];
  payer_opts p;
  payer_defaults(&p);
  const char *id_s = NULL;
  for (int i = 1; i < argc;) {
    int k = payer_opt(cmd, &p, argc, argv, &i);
    if (k < 0) return 1;
    if (k) continue;
    if (argv[i][0] == '-') return cli_fail(cmd, "unknown option '%s'", argv[i]);
    if (!one || id_s) return cli_fail(cmd, "unexpected argument '%s'", argv[i]);
    id_s = argv[i++];
  }
  tg_hash id;
  if (id_s && tg_hex_decode_exact(id.b, 32, id_s, strlen(id_s)))
    return cli_fail(cmd, "channel id '%s' is not 32 bytes of hex", id_s);
  tg_client *c;
  if (payer_open(cmd, &p, &c)) return 1;
  tg_client_channel *chs = calloc(64, sizeof *chs);
  size_t n = 0;
  int ret = 0, rc = chs ? tg_client_channels(c, chs, 64, &n) : TG_ENOMEM;
  if (rc) {
    ret = cli_fail_err(cmd, rc, "reading %s", p.state_dir);
  } else {
    size_t shown = 0;
    for (size_t i = 0; i < n && i < 64; i++) {
      if (id_s && memcmp(chs[i].id.b, id.b, 32) != 0) continue;
      print_channel(&chs[i]);
      shown++;
    }
    if (id_s && !shown) ret = cli_fail(cmd, "no channel %s in %s", id_s, p.state_dir);
  }
  free(chs);
  tg_client_close(c);
  return ret;
}

int cmd_channel_list(int argc, char **argv) { return channel_show(argc, argv, 0); }
int cmd_channel_status(int argc, char **argv) { return channel_show(argc, argv, 1); }

/* ---- tollgate pass ------------------------------------------------------------------- */

/* What every pass command reads: the contract, the plan, the endpoint, and maybe a key. */
typedef struct {
  payer_opts p;
  tg_address passes;
  uint64_t plan;
  uint64_t periods;
  const char *to_s, *for_s, *until_s;
  const char *who_s;
} pass_args;

static int parse_duration_s(const char *s, uint64_t *out) {
  char *end = NULL;
  unsigned long long v = strtoull(s, &end, 10);
  if (!*s || *s == '-' || end == s) return -1;
  uint64_t mul = 1;
  if (*end == 's') mul = 1, end++;
  else if (*end == 'm') mul = 60, end++;
  else if (*end == 'h') mul = 3600, end++;
  else if (*end == 'd') mul = 86400, end++;
  if (*end || v == 0 || v > 100ull * 365 * 86400 / mul) return -1;
  *out = v * mul;
  return 0;
}

/* Parses the shared options; `what` names the command's own ones (to, for, until, periods, who). */
static int pass_parse(const char *cmd, pass_args *a, int argc, char **argv, const char *what) {
  memset(a, 0, sizeof *a);
  payer_defaults(&a->p);
  a->periods = 1;
  const char *dep = NULL, *passes = NULL, *plan = NULL;
  for (int i = 1; i < argc;) {
    int k = payer_opt(cmd, &a->p, argc, argv, &i);
    if (k < 0) return 1;
    if (k) continue;
    int missing = 0;
    const char *v;
    if ((v = take(argc, argv, &i, "--deployment", &missing)) != NULL) {
      dep = v;
    } else if (!missing && (v = take(argc, argv, &i, "--passes", &missing)) != NULL) {
      passes = v;
    } else if (!missing && (v = take(argc, argv, &i, "--plan", &missing)) != NULL) {
      plan = v;
    } else if (!missing && strstr(what, "periods") && (v = take(argc, argv, &i, "--periods", &missing)) != NULL) {
      if (parse_count(cmd, "--periods", v, 4294967295ull, &a->periods)) return 1;
    } else if (!missing && strstr(what, "to") && (v = take(argc, argv, &i, "--to", &missing)) != NULL) {
      a->to_s = v;
    } else if (!missing && strstr(what, "for") && (v = take(argc, argv, &i, "--for", &missing)) != NULL) {
      a->for_s = v;
    } else if (!missing && strstr(what, "until") && (v = take(argc, argv, &i, "--until", &missing)) != NULL) {
      a->until_s = v;
    } else if (missing) {
      return cli_fail(cmd, "%s needs a value", argv[i]);
    } else if (argv[i][0] == '-') {
      return cli_fail(cmd, "unknown option '%s'", argv[i]);
    } else if (strstr(what, "who") && !a->who_s) {
      a->who_s = argv[i++];
    } else {
      return cli_fail(cmd, "unexpected argument '%s'", argv[i]);
    }
  }
  if (!plan) return cli_usage(cmd);
  if (parse_count(cmd, "--plan", plan, UINT64_MAX >> 1, &a->plan)) return 1;
  if (!a->p.o.rpc_url || !*a->p.o.rpc_url) {
    const char *env = getenv("ETH_RPC_URL");
    if (!env || !*env) return cli_fail(cmd, "--rpc-url or ETH_RPC_URL is required");
    a->p.o.rpc_url = env;
  }
  if (passes) {
    if (tg_address_parse(&a->passes, passes, strlen(passes)))
      return cli_fail(cmd, "--passes '%s' is not an address", passes);
  } else if (dep) {
    tg_deployment d;
    int rc = tg_deployment_load(&d, dep);
    if (rc) return cli_fail_err(cmd, rc, "--deployment %s", dep);
    a->passes = d.c[TG_CONTRACT_PASSES].address;
  } else {
    return cli_fail(cmd, "the passes contract is required: --deployment FILE or --passes 0xADDRESS");
  }
  return 0;
}

static int pass_address(const char *cmd, const char *name, const char *s, tg_address *out) {
  if (!s) return cli_fail(cmd, "%s is required", name);
  if (tg_address_parse(out, s, strlen(s))) return cli_fail(cmd, "%s '%s' is not an address", name, s);
  return 0;
}

static void print_pass(const tg_address *who, uint64_t plan, const tg_client_pass_status *st) {
  char w[TG_ADDRESS_HEX_LEN], h[TG_ADDRESS_HEX_LEN], d[TG_ADDRESS_HEX_LEN];
  tg_address_to_checksum(who, w);
  tg_address_to_checksum(&st->entitled_holder, h);
  tg_address_to_checksum(&st->delegatee, d);
  printf("%s plan=%llu holds=%s expires_at=%llu entitled=%s", w, (unsigned long long)plan,
         st->holds ? "yes" : "no", (unsigned long long)st->expires_at, st->entitled ? "yes" : "no");
  if (st->entitled) printf(" until=%llu via=%s", (unsigned long long)st->entitled_until, h);
  if (!tg_address_is_zero(&st->delegatee))
    printf(" delegated_to=%s delegated_until=%llu", d, (unsigned long long)st->delegated_until);
  printf(" now=%llu\n", (unsigned long long)st->now);
}

static int pass_fail(const char *cmd, int rc, const char *why, const char *doing) {
  if (rc == TG_ERPC_REVERTED && why[0]) return cli_fail(cmd, "%s: the contract refuses: %s", doing, why);
  if (rc == TG_ENOTFOUND) return cli_fail(cmd, "%s: no such plan", doing);
  return cli_fail_err(cmd, rc, "%s", doing);
}

/* `pass buy` and `pass renew`: purchase (renewal extends from the current expiry). */
static int pass_buy_renew(int argc, char **argv, int renew) {
  const char *cmd = argv[0];
  pass_args a;
  if (pass_parse(cmd, &a, argc, argv, renew ? "periods" : "periods for")) return 1;
  tg_seckey *key;
  if (payer_key(cmd, &a.p, &key)) return 1;
  tg_address me, holder;
  int rc = tg_seckey_address(&me, key);
  holder = me;
  if (!rc && a.for_s && pass_address(cmd, "--for", a.for_s, &holder)) {
    tg_seckey_free(key);
    return 1;
  }
  tg_client_pass_status before;
  char why[160] = "";
  if (!rc) rc = tg_client_pass_status_get(a.p.o.rpc_url, &a.passes, a.plan, &holder, &before);
  if (!rc && renew && !before.holds) {
    tg_seckey_free(key);
    return cli_fail(cmd, "no pass of plan %llu to renew: buy one with `tollgate pass buy`",
                    (unsigned long long)a.plan);
  }
  uint64_t expiry = 0;
  if (!rc)
    rc = tg_client_pass_buy(a.p.o.rpc_url, &a.passes, key, a.plan, &holder, (uint32_t)a.periods,
                            &expiry, why, sizeof why);
  tg_seckey_free(key);
  if (rc) return pass_fail(cmd, rc, why, renew ? "renewing the pass" : "buying the pass");
  tg_client_pass_status st;
  if ((rc = tg_client_pass_status_get(a.p.o.rpc_url, &a.passes, a.plan, &holder, &st)) != 0)
    return cli_fail_err(cmd, rc, "reading the pass");
  print_pass(&holder, a.plan, &st);
  fprintf(stderr, "%s: expiry %llu -> %llu\n", renew ? "renewed" : "bought",
          (unsigned long long)before.expires_at, (unsigned long long)expiry);
  return 0;
}

int cmd_pass_buy(int argc, char **argv) { return pass_buy_renew(argc, argv, 0); }
int cmd_pass_renew(int argc, char **argv) { return pass_buy_renew(argc, argv, 1); }

int cmd_pass_show(int argc, char **argv) {
  const char *cmd = argv[0];
  pass_args a;
  if (pass_parse(cmd, &a, argc, argv, "who")) return 1;
  tg_address who;
  if (a.who_s) {
    if (pass_address(cmd, "ADDRESS", a.who_s, &who)) return 1;
  } else {
    tg_seckey *key;
    if (payer_key(cmd, &a.p, &key)) return 1;
    int rc = tg_seckey_address(&who, key);
    tg_seckey_free(key);
    if (rc) return cli_fail_err(cmd, rc, "the key");
  }
  tg_client_pass_plan plan;
  tg_client_pass_status st;
  int rc = tg_client_pass_plan_get(a.p.o.rpc_url, &a.passes, a.plan, &plan);
  if (!rc) rc = tg_client_pass_status_get(a.p.o.rpc_url, &a.passes, a.plan, &who, &st);
  if (rc) return pass_fail(cmd, rc, "", "reading the pass");
  print_pass(&who, a.plan, &st);
  char tok[TG_ADDRESS_HEX_LEN], price[TG_U256_DEC_MAX];
  tg_address_to_checksum(&plan.token, tok);
  tg_u256_to_dec(&plan.price, price);
  printf("plan %llu token=%s price=%s period=%llu quota=%llu supply=%u max_supply=%u transferable=%s active=%s\n",
         (unsigned long long)a.plan, tok, price, (unsigned long long)plan.period,
         (unsigned long long)plan.quota, plan.supply, plan.max_supply, plan.transferable ? "yes" : "no",
         plan.active ? "yes" : "no");
  return 0;
}

/* `pass transfer`, `pass delegate`, `pass revoke`: one transaction from the holder. */
static int pass_holder_tx(int argc, char **argv, int what) {
  const char *cmd = argv[0];
  pass_args a;
  if (pass_parse(cmd, &a, argc, argv, what == 0 ? "to" : what == 1 ? "to for until" : "")) return 1;
  tg_address to;
  memset(&to, 0, sizeof to);
  if (what != 2 && pass_address(cmd, "--to", a.to_s, &to)) return 1;
  uint64_t until = 0;
  if (what == 1) {
    if (!!a.for_s == !!a.until_s) return cli_fail(cmd, "give --for DURATION (e.g. 1h) or --until UNIX_TIME");
    if (a.until_s && parse_count(cmd, "--until", a.until_s, UINT64_MAX >> 1, &until)) return 1;
  }
  tg_seckey *key;
  if (payer_key(cmd, &a.p, &key)) return 1;
  tg_address me;
  int rc = tg_seckey_address(&me, key);
  if (!rc && what == 1 && a.for_s) {
    uint64_t d;
    tg_client_pass_status now;
    if (parse_duration_s(a.for_s, &d)) {
      tg_seckey_free(key);
      return cli_fail(cmd, "--for '%s' is not a duration (N, Ns, Nm, Nh or Nd)", a.for_s);
    }
    rc = tg_client_pass_status_get(a.p.o.rpc_url, &a.passes, a.plan, &me, &now);
    until = now.now + d; /* from the chain's clock, which the contract compares with */
  }
  char why[160] = "";
  if (!rc) {
    if (what == 0) rc = tg_client_pass_transfer(a.p.o.rpc_url, &a.passes, key, a.plan, &to, why, sizeof why);
    else if (what == 1)
      rc = tg_client_pass_delegate(a.p.o.rpc_url, &a.passes, key, a.plan, &to, until, why, sizeof why);
    else rc = tg_client_pass_revoke(a.p.o.rpc_url, &a.passes, key, a.plan, why, sizeof why);
  }
  tg_seckey_free(key);
  if (rc)
    return pass_fail(cmd, rc, why, what == 0 ? "transferring the pass" : what == 1 ? "delegating the pass"
                                                                               : "revoking the delegation");
  tg_client_pass_status st;
  const tg_address *show = what == 0 ? &to : &me;
  if ((rc = tg_client_pass_status_get(a.p.o.rpc_url, &a.passes, a.plan, show, &st)) != 0)
    return cli_fail_err(cmd, rc, "reading the pass");
  print_pass(show, a.plan, &st);
  return 0;
}

int cmd_pass_transfer(int argc, char **argv) { return pass_holder_tx(argc, argv, 0); }
int cmd_pass_delegate(int argc, char **argv) { return pass_holder_tx(argc, argv, 1); }
int cmd_pass_revoke(int argc, char **argv) { return pass_holder_tx(argc, argv, 2); }
