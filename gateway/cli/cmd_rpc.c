/* `tollgate rpc`, `balance`, `nonce`, `receipt`, `block-number`, `chain-id`, `call`, `send`: node commands over JSON-RPC, printed as cast prints them. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "cli/cli.h"
#include "tollgate/abi.h"
#include "tollgate/address.h"
#include "tollgate/hex.h"
#include "tollgate/keystore.h"
#include "tollgate/rpc.h"
#include "tollgate/secp.h"
#include "tollgate/txm.h"
#include "tollgate/u256.h"

#define MAX_POS 64

/* Options every node command takes, and its positional arguments. */
typedef struct {
  const char *urls[TG_RPC_MAX_ENDPOINTS];
  size_t n_urls;
  const char *block;
  char block_buf[24];
  int json;
  int raw;
  int async;
  unsigned timeout_s;
  char *pos[MAX_POS];
  int n_pos;
} node_args;

/* Scans argv; returns 0, or the exit status after printing a reason. */
static int scan(const char *cmd, int argc, char **argv, node_args *a, int takes_block) {
  memset(a, 0, sizeof *a);
  a->timeout_s = 120;
  for (int i = 1; i < argc; i++) {
    int missing = 0;
    const char *v;
    if ((v = cli_opt(argc, argv, &i, "--rpc-url", &missing)) != NULL ||
        (v = cli_opt(argc, argv, &i, "-r", &missing)) != NULL) {
      if (a->n_urls == TG_RPC_MAX_ENDPOINTS)
        return cli_fail(cmd, "at most %d --rpc-url values", TG_RPC_MAX_ENDPOINTS);
      a->urls[a->n_urls++] = v;
    } else if (takes_block && ((v = cli_opt(argc, argv, &i, "--block", &missing)) != NULL ||
                               (v = cli_opt(argc, argv, &i, "-B", &missing)) != NULL)) {
      /* A decimal number becomes a quantity; tags and 0x numbers pass as they are. */
      size_t n = strspn(v, "0123456789");
      if (n && !v[n]) {
        char *end;
        unsigned long long b = strtoull(v, &end, 10);
        if (b == ULLONG_MAX) return cli_fail(cmd, "--block '%s' is out of range", v);
        snprintf(a->block_buf, sizeof a->block_buf, "0x%llx", b);
        v = a->block_buf;
      } else if (strncmp(v, "0x", 2) != 0 && strcmp(v, "latest") && strcmp(v, "earliest") &&
                 strcmp(v, "pending") && strcmp(v, "safe") && strcmp(v, "finalized")) {
        return cli_fail(cmd, "--block '%s' is not a block number or tag", v);
      }
      a->block = v;
    } else if ((v = cli_opt(argc, argv, &i, "--timeout", &missing)) != NULL) {
      char *end;
      unsigned long t = strtoul(v, &end, 10);
      if (!*v || *end || t == 0 || t > 86400)
        return cli_fail(cmd, "--timeout '%s' is not a number of seconds (1..86400)", v);
      a->timeout_s = (unsigned)t;
    } else if (missing) {
      return cli_fail(cmd, "option %s needs a value", argv[i]);
    } else if (strcmp(argv[i], "--json") == 0 || strcmp(argv[i], "-j") == 0) {
      a->json = 1;
    } else if (strcmp(argv[i], "--raw") == 0) {
      a->raw = 1;
    } else if (strcmp(argv[i], "--async") == 0) {
      a->async = 1;
    } else if (strcmp(argv[i], "--") == 0) {
      for (i++; i < argc; i++) {
        if (a->n_pos == MAX_POS) return cli_fail(cmd, "too many arguments");
        a->pos[a->n_pos++] = argv[i];
      }
    } else if (argv[i][0] == '-' && argv[i][1] == '-') {
      return cli_fail(cmd, "unknown option '%s'", argv[i]);
    } else {
      if (a->n_pos == MAX_POS) return cli_fail(cmd, "too many arguments");
      a->pos[a->n_pos++] = argv[i];
    }
  }
  if (a->n_urls == 0) {
    /* As Foundry: ETH_RPC_URL, else the local default. */
    const char *env = getenv("ETH_RPC_URL");
    a->urls[a->n_urls++] = env && *env ? env : "http://localhost:8545";
  }
  return 0;
}

static int open_rpc(const char *cmd, const node_args *a, tg_rpc **out) {
  tg_rpc_opts o;
  tg_rpc_opts_init(&o);
  o.urls = a->urls;
  o.n_urls = a->n_urls;
  o.timeout_ms = 30000;
  char why[512];
  int rc = tg_rpc_new(out, &o, why, sizeof why);
  if (rc) return cli_fail_err(cmd, rc, "%s", why[0] ? why : a->urls[0]);
  return 0;
}

static int node_fail(const char *cmd, tg_rpc *rpc, int rc, const char *what) {
  const char *m = tg_rpc_last_message(rpc);
  if (m && *m) return cli_fail(cmd, "%s: %s (%s)", what, m, tg_strerror(rc));
  return cli_fail_err(cmd, rc, "%s", what);
}

/* ------------------------------------------------------------ JSON output */

/* A double in the shortest form that reads back the same, as serde_json prints it. */
static void print_real(FILE *f, double d) {
  if (!isfinite(d)) {
    fputs("null", f);
    return;
  }
  char buf[40];
  for (int prec = 1; prec <= 17; prec++) {
    snprintf(buf, sizeof buf, "%.*g", prec, d);
    if (strtod(buf, NULL) == d) break;
  }
  /* "1e-07" -> "1e-7"; an integral value keeps ".0". */
  char *e = strchr(buf, 'e');
  if (e) {
    char mant[40], *p = e + 1;
    size_t ml = (size_t)(e - buf);
    memcpy(mant, buf, ml);
    mant[ml] = 0;
    int neg = *p == '-';
    if (*p == '+' || *p == '-') p++;
    while (*p == '0' && p[1]) p++;
    fprintf(f, "%se%s%s", mant, neg ? "-" : "", p);
    return;
  }
  fputs(buf, f);
  if (!strchr(buf, '.')) fputs(".0", f);
}

static void print_string(FILE *f, const char *s, size_t n) {
  fputc('"', f);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    switch (c) {
    case '"': fputs("\\\"", f); break;
    case '\\': fputs("\\\\", f); break;
    case '\n': fputs("\\n", f); break;
    case '\r': fputs("\\r", f); break;
    case '\t': fputs("\\t", f); break;
    case '\b': fputs("\\b", f); break;
    case '\f': fputs("\\f", f); break;
    default:
      if (c < 0x20)
        fprintf(f, "\\u%04x", c);
      else
        fputc(c, f);
    }
  }
  fputc('"', f);
}

/* Compact JSON in the node's key order (jansson keeps it), depth-capped by the parser. */
static void print_json(FILE *f, const json_t *v) {
  switch (json_typeof(v)) {
  case JSON_OBJECT: {
    fputc('{', f);
    int first = 1;
    const char *k;
    json_t *x;
    json_object_foreach((json_t *)v, k, x) {
      if (!first) fputc(',', f);
      first = 0;
      print_string(f, k, strlen(k));
      fputc(':', f);
      print_json(f, x);
    }
    fputc('}', f);
    break;
  }
  case JSON_ARRAY:
    fputc('[', f);
    for (size_t i = 0; i < json_array_size(v); i++) {
      if (i) fputc(',', f);
      print_json(f, json_array_get(v, i));
    }
    fputc(']', f);
    break;
  case JSON_STRING:
    print_string(f, json_string_value(v), json_string_length(v));
    break;
  case JSON_INTEGER:
    fprintf(f, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    break;
  case JSON_REAL:
    print_real(f, json_real_value(v));
    break;
  case JSON_TRUE:
    fputs("true", f);
    break;
  case JSON_FALSE:
    fputs("false", f);
    break;
  default:
    fputs("null", f);
  }
}

/* ------------------------------------------------------------ commands */

/* A parameter as cast takes it: JSON when it parses as JSON, else a string. */
static json_t *param_value(const char *s) {
  json_error_t je;
  json_t *v = json_loads(s, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
  if (v) return v;
  v = json_string(s);
  if (!v) v = json_stringn(s, 0); /* not UTF-8: refused below */
  return v;
}

int cmd_rpc(int argc, char **argv) {
  const char *cmd = argv[0];
  node_args a;
  int st = scan(cmd, argc, argv, &a, 0);
  if (st) return st;
  if (a.n_pos < 1) return cli_usage(cmd);
  json_t *params;
  if (a.raw) {
    if (a.n_pos != 2) return cli_fail(cmd, "--raw takes the method and one JSON array of params");
    json_error_t je;
    params = json_loads(a.pos[1], JSON_DECODE_ANY, &je);
    if (!json_is_array(params)) {
      json_decref(params);
      return cli_fail(cmd, "--raw params '%s' are not a JSON array", a.pos[1]);
    }
  } else {
    params = json_array();
    for (int i = 1; i < a.n_pos; i++) {
      json_t *v = param_value(a.pos[i]);
      if (!v) {
        json_decref(params);
        return cli_fail(cmd, "parameter '%s' is not valid UTF-8", a.pos[i]);
      }
      json_array_append_new(params, v);
    }
  }
  tg_rpc *rpc;
  if ((st = open_rpc(cmd, &a, &rpc)) != 0) {
    json_decref(params);
    return st;
  }
  tg_rpc_reply r;
  int rc = tg_rpc_call(rpc, &r, a.pos[0], params);
  if (rc == 0) {
    print_json(stdout, r.result);
    putchar('\n');
  } else if (r.message || r.code) {
    st = cli_fail(cmd, "%s: node error %lld: %s", a.pos[0], r.code, r.message ? r.message : "");
  } else {
    st = node_fail(cmd, rpc, rc, a.pos[0]);
  }
  tg_rpc_reply_cleanup(&r);
  tg_rpc_free(rpc);
  return st;
}

static int parse_addr(const char *cmd, const char *s, tg_address *out) {
  int rc = tg_address_parse(out, s, strlen(s));
  if (rc) return cli_fail_err(cmd, rc, "'%s' is not an address", s);
  return 0;
}

int cmd_balance(int argc, char **argv) {
  const char *cmd = argv[0];
  node_args a;
  int st = scan(cmd, argc, argv, &a, 1);
  if (st) return st;
  if (a.n_pos != 1) return cli_usage(cmd);
  tg_address who;
  if ((st = parse_addr(cmd, a.pos[0], &who)) != 0) return st;
  tg_rpc *rpc;
  if ((st = open_rpc(cmd, &a, &rpc)) != 0) return st;
  tg_u256 bal;
  int rc = tg_eth_get_balance(rpc, &bal, &who, a.block);
  if (rc == 0) {
    char dec[TG_U256_DEC_MAX];
    tg_u256_to_dec(&bal, dec);
    puts(dec);
  } else {
    st = node_fail(cmd, rpc, rc, "eth_getBalance");
  }
  tg_rpc_free(rpc);
  return st;
}

int cmd_nonce(int argc, char **argv) {
  const char *cmd = argv[0];
  node_args a;
  int st = scan(cmd, argc, argv, &a, 1);
  if (st) return st;
  if (a.n_pos != 1) return cli_usage(cmd);
  tg_address who;
  if ((st = parse_addr(cmd, a.pos[0], &who)) != 0) return st;
  tg_rpc *rpc;
  if ((st = open_rpc(cmd, &a, &rpc)) != 0) return st;
  uint64_t n;
  int rc = tg_eth_get_transaction_count(rpc, &n, &who, a.block);
  if (rc == 0)
    printf("%llu\n", (unsigned long long)n);
  else
    st = node_fail(cmd, rpc, rc, "eth_getTransactionCount");
  tg_rpc_free(rpc);
  return st;
}

static int simple_u64(int argc, char **argv, int (*fn)(tg_rpc *, uint64_t *), const char *method) {
  const char *cmd = argv[0];
  node_args a;
  int st = scan(cmd, argc, argv, &a, 0);
  if (st) return st;
  if (a.n_pos != 0) return cli_usage(cmd);
  tg_rpc *rpc;
  if ((st = open_rpc(cmd, &a, &rpc)) != 0) return st;
  uint64_t v;
  int rc = fn(rpc, &v);
  if (rc == 0)
    printf("%llu\n", (unsigned long long)v);
  else
    st = node_fail(cmd, rpc, rc, method);
  tg_rpc_free(rpc);
  return st;
}

int cmd_block_number(int argc, char **argv) {
  return simple_u64(argc, argv, tg_eth_block_number, "eth_blockNumber");
}

int cmd_chain_id(int argc, char **argv) {
  /* The client checks the chain id when it connects; ask again for the printed value. */
  return simple_u64(argc, argv, tg_eth_chain_id, "eth_chainId");
}

/* A receipt field as cast's table prints it: quantities in decimal, addresses checksummed. */
static void print_field(const char *key, const json_t *v) {
  static const char *const dec_keys[] = {"blockNumber", "cumulativeGasUsed", "effectiveGasPrice",
                                         "gasUsed", "transactionIndex", "type", "blobGasPrice",
                                         "blobGasUsed", "blockTimestamp"};
  if (!v || json_is_null(v)) return;
  if (strcmp(key, "status") == 0) {
    uint64_t s;
    if (tg_rpc_parse_u64(v, &s) == 0) {
      printf("%llu (%s)", (unsigned long long)s, s ? "success" : "failed");
      return;
    }
  }
  if (strcmp(key, "from") == 0 || strcmp(key, "to") == 0 || strcmp(key, "contractAddress") == 0) {
    tg_address ad;
    if (tg_rpc_parse_address(v, &ad) == 0) {
      char s[TG_ADDRESS_HEX_LEN];
      tg_address_to_checksum(&ad, s);
      fputs(s, stdout);
      return;
    }
  }
  for (size_t i = 0; i < sizeof dec_keys / sizeof dec_keys[0]; i++) {
    if (strcmp(key, dec_keys[i]) != 0) continue;
    tg_u256 u;
    if (json_is_string(v) && tg_rpc_parse_u256(v, &u) == 0) {
      char d[TG_U256_DEC_MAX];
      tg_u256_to_dec(&u, d);
      fputs(d, stdout);
      return;
    }
    if (json_is_integer(v)) {
      printf("%" JSON_INTEGER_FORMAT, json_integer_value(v));
      return;
    }
  }
  if (json_is_string(v))
    fputs(json_string_value(v), stdout);
  else
    print_json(stdout, v);
}

static void print_receipt_table(const json_t *r) {
  static const char *const order[] = {"blockHash", "blockNumber", "contractAddress",
                                      "cumulativeGasUsed", "effectiveGasPrice", "from", "gasUsed",
                                      "logs", "logsBloom", "root", "status", "transactionHash",
                                      "transactionIndex", "type", "blobGasPrice", "blobGasUsed",
                                      "to", "blockTimestamp"};
  putchar('\n');
  for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
    const char *k = order[i];
    const json_t *v = json_object_get(r, k);
    int always = strcmp(k, "contractAddress") == 0 || strcmp(k, "root") == 0 ||
                 strcmp(k, "blobGasUsed") == 0;
    if (!v && !always) continue;
    printf("%-20s ", k);
    print_field(k, v);
    putchar('\n');
  }
  putchar('\n');
}

/* A receipt as cast prints it with --json: its own field order, then the rest in the node's. */
static void print_receipt_json(const json_t *res) {
  static const char *const order[] = {"status", "cumulativeGasUsed", "logs", "logsBloom",
                                      "type", "transactionHash", "transactionIndex",
                                      "blockHash", "blockNumber", "gasUsed",
                                      "effectiveGasPrice", "blobGasUsed", "blobGasPrice",
                                      "from", "to", "contractAddress"};
  json_t *o = json_object();
  for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
    json_t *v = json_object_get(res, order[i]);
    if (v) json_object_set(o, order[i], v);
  }
  const char *k;
  json_t *v;
  json_object_foreach((json_t *)res, k, v) {
    if (!json_object_get(o, k)) json_object_set(o, k, v);
  }
  print_json(stdout, o);
  putchar('\n');
  json_decref(o);
}

static void sleep_ms(unsigned ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

int cmd_receipt(int argc, char **argv) {
  const char *cmd = argv[0];
  node_args a;
  int st = scan(cmd, argc, argv, &a, 0);
  if (st) return st;
  if (a.n_pos < 1 || a.n_pos > 2) return cli_usage(cmd);
  tg_hash h;
  const char *hs = a.pos[0];
  if (strlen(hs) != 66 || tg_hex_decode_exact(h.b, 32, hs, 66) != 0)
    return cli_fail(cmd, "'%s' is not a transaction hash (0x + 64 hex digits)", hs);
  tg_rpc *rpc;
  if ((st = open_rpc(cmd, &a, &rpc)) != 0) return st;
  time_t end = time(NULL) + (time_t)a.timeout_s;
  json_t *res = NULL;
  for (;;) {
    tg_rpc_reply r;
    json_t *p = json_array();
    json_array_append_new(p, tg_rpc_json_hash(&h));
    int rc = tg_rpc_call(rpc, &r, "eth_getTransactionReceipt", p);
    if (rc) {
      st = node_fail(cmd, rpc, rc, "eth_getTransactionReceipt");
      tg_rpc_reply_cleanup(&r);
      break;
    }
    if (!json_is_null(r.result)) {
      res = json_incref(r.result);
      tg_rpc_reply_cleanup(&r);
      break;
    }
    tg_rpc_reply_cleanup(&r);
    if (a.async || time(NULL) >= end) {
      st = cli_fail(cmd, "transaction %s not found%s", hs, a.async ? "" : " (timed out waiting)");
      break;
    }
    sleep_ms(500);
  }
  if (res) {
    /* The receipt must parse before we print any of it. */
    tg_eth_receipt rc;
    if (tg_rpc_parse_receipt(res, &rc) != 0) {
      st = cli_fail(cmd, "the node's receipt for %s is malformed", hs);
    } else if (a.n_pos == 2) {
      const json_t *v = json_object_get(res, a.pos[1]);
      if (!v) {
        st = cli_fail(cmd, "receipt has no field '%s'", a.pos[1]);
      } else {
        if (strcmp(a.pos[1], "status") == 0)
          fputs(rc.status ? "true" : "false", stdout);
        else
          print_field(a.pos[1], v);
        putchar('\n');
      }
    } else if (a.json) {
      print_receipt_json(res);
    } else {
      print_receipt_table(res);
    }
    tg_eth_receipt_cleanup(&rc);
    json_decref(res);
  }
  tg_rpc_free(rpc);
  return st;
}

/* ------------------------------------------------------------ call and send */

/* Options of `call` and `send` beyond the node's. */
typedef struct {
  const char *from;
  const char *value;
  const char *keystore;
  const char *password_file;
  char *password;      /* points into argv: wiped once read */
  char *private_key;   /* points into argv: wiped once read */
  const char *gas_limit;
  int json;
  int async;
} tx_opts;

/* Splits tx options out of argv into `t`, leaving the rest for scan(). */
static int scan_tx(const char *cmd, int *argc, char **argv, tx_opts *t) {
  memset(t, 0, sizeof *t);
  int k = 1;
  for (int i = 1; i < *argc; i++) {
    int missing = 0;
    const char *v;
    if ((v = cli_opt(*argc, argv, &i, "--from", &missing)) != NULL) {
      t->from = v;
    } else if ((v = cli_opt(*argc, argv, &i, "--value", &missing)) != NULL) {
      t->value = v;
    } else if ((v = cli_opt(*argc, argv, &i, "--keystore", &missing)) != NULL) {
      t->keystore = v;
    } else if ((v = cli_opt(*argc, argv, &i, "--password-file", &missing)) != NULL) {
      t->password_file = v;
    } else if ((v = cli_opt(*argc, argv, &i, "--password", &missing)) != NULL) {
      t->password = (char *)v;
    } else if ((v = cli_opt(*argc, argv, &i, "--private-key", &missing)) != NULL) {
      t->private_key = (char *)v;
    } else if ((v = cli_opt(*argc, argv, &i, "--gas-limit", &missing)) != NULL) {
      t->gas_limit = v;
    } else if (missing) {
      return cli_fail(cmd, "option %s needs a value", argv[i]);
    } else {
      argv[k++] = argv[i];
    }
  }
  *argc = k;
  return 0;
}

/* A cast-style amount ("1", "0x10", "1.5ether", "2 gwei") into wei. */
static int parse_amount(const char *cmd, const char *what, const char *s, tg_u256 *out) {
  tg_abi_sig *ty = NULL;
  tg_abi_tree *tree = NULL;
  int rc = tg_abi_type_parse(&ty, "uint256", 7);
  if (!rc) rc = tg_abi_parse_arg(&tree, ty->inputs->members[0], s, strlen(s));
  if (!rc) *out = tree->root.word;
  tg_abi_tree_free(tree);
  tg_abi_sig_free(ty);
  if (rc) return cli_fail_err(cmd, rc, "%s '%s' is not an amount", what, s);
  return 0;
}

/* Calldata from <SIG> [ARGS...] (or raw 0x data); `sig` receives the parsed signature. */
static int build_calldata(const char *cmd, char **pos, int n, tg_buf *data, tg_abi_sig **sig) {
  *sig = NULL;
  if (n == 0) return 0;
  if (strncmp(pos[0], "0x", 2) == 0 && !strchr(pos[0], '(')) {
    if (n > 1) return cli_fail(cmd, "raw calldata '%s' takes no arguments", pos[0]);
    int rc = tg_hex_decode_buf(data, pos[0], strlen(pos[0]), TG_HEX_PREFIX_REQUIRED);
    return rc ? cli_fail_err(cmd, rc, "calldata '%s' is not hex", pos[0]) : 0;
  }
  int rc = tg_abi_sig_parse(sig, pos[0], strlen(pos[0]));
  if (rc) return cli_fail_err(cmd, rc, "cannot parse signature '%s'", pos[0]);
  size_t want = (*sig)->inputs->count;
  if ((size_t)(n - 1) != want)
    return cli_fail(cmd, "'%s' takes %zu argument%s, got %d", pos[0], want, want == 1 ? "" : "s",
                    n - 1);
  tg_abi_tree *args = NULL;
  rc = tg_abi_parse_args(&args, (*sig)->inputs, (const char *const *)(pos + 1), (size_t)(n - 1));
  if (rc) return cli_fail_err(cmd, rc, "cannot parse the arguments of '%s'", pos[0]);
  rc = tg_abi_encode_call(data, *sig, &args->root);
  tg_abi_tree_free(args);
  return rc ? cli_fail_err(cmd, rc, "cannot encode the arguments of '%s'", pos[0]) : 0;
}

/* One line about revert data, decoded when it is Error(string) or Panic(uint256). */
static int report_revert(const char *cmd, const tg_buf *rev) {
  tg_abi_revert r;
  if (tg_abi_decode_revert(&r, rev->data, rev->len, NULL, 0) != 0)
    return cli_fail(cmd, "execution reverted (malformed revert data)");
  int st;
  char *hex = tg_hex_dup(rev->data, rev->len);
  char dec[TG_U256_DEC_MAX];
  switch (r.kind) {
  case TG_ABI_REVERT_EMPTY:
    st = cli_fail(cmd, "execution reverted");
    break;
  case TG_ABI_REVERT_ERROR:
    st = cli_fail(cmd, "execution reverted: %.*s", (int)r.message.len,
                  (const char *)r.message.ptr);
    break;
  case TG_ABI_REVERT_PANIC:
    tg_u256_to_dec(&r.panic_code, dec);
    st = cli_fail(cmd, "execution reverted: panic %s (%s)", dec,
                  r.panic_reason ? r.panic_reason : "unknown code");
    break;
  default:
    st = cli_fail(cmd, "execution reverted with data %s", hex ? hex : "?");
  }
  free(hex);
  tg_abi_revert_cleanup(&r);
  return st;
}

int cmd_call(int argc, char **argv) {
  const char *cmd = argv[0];
  tx_opts t;
  int st = scan_tx(cmd, &argc, argv, &t);
  if (st) return st;
  node_args a;
  if ((st = scan(cmd, argc, argv, &a, 1)) != 0) return st;
  if (a.n_pos < 1) return cli_usage(cmd);
  tg_address to, from;
  if ((st = parse_addr(cmd, a.pos[0], &to)) != 0) return st;
  if (t.from && (st = parse_addr(cmd, t.from, &from)) != 0) return st;
  tg_u256 value;
  if (t.value && (st = parse_amount(cmd, "--value", t.value, &value)) != 0) return st;
  tg_buf data, out, rev;
  tg_buf_init(&data, (size_t)1 << 20);
  tg_buf_init(&out, (size_t)16 << 20);
  tg_buf_init(&rev, (size_t)1 << 20);
  tg_abi_sig *sig = NULL;
  tg_rpc *rpc = NULL;
  st = build_calldata(cmd, a.pos + 1, a.n_pos - 1, &data, &sig);
  if (!st) st = open_rpc(cmd, &a, &rpc);
  if (!st) {
    tg_eth_msg m = {.from = t.from ? &from : NULL, .to = &to, .data = data.data,
                    .data_len = data.len, .value = t.value ? &value : NULL};
    int rc = tg_eth_call(rpc, &out, &rev, &m, a.block);
    if (rc == TG_ERPC_REVERTED) {
      st = report_revert(cmd, &rev);
    } else if (rc) {
      st = node_fail(cmd, rpc, rc, "eth_call");
    } else if (sig && sig->outputs) {
      tg_abi_tree *res = NULL;
      rc = tg_abi_decode(&res, sig->outputs, out.data, out.len, TG_ABI_DECODE_STRICT);
      tg_buf text;
      tg_buf_init(&text, (size_t)16 << 20);
      if (!rc) rc = tg_abi_format_lines(&text, sig->outputs, &res->root);
      if (rc)
        st = cli_fail_err(cmd, rc, "cannot decode the result as '%s'", a.pos[1]);
      else
        fwrite(text.data, 1, text.len, stdout);
      tg_buf_cleanup(&text);
      tg_abi_tree_free(res);
    } else {
      cli_print_hex(out.data, out.len);
    }
  }
  tg_rpc_free(rpc);
  tg_abi_sig_free(sig);
  tg_buf_cleanup(&data);
  tg_buf_cleanup(&out);
  tg_buf_cleanup(&rev);
  return st;
}

/* The signing key from --private-key, or --keystore with --password / --password-file / ETH_PASSWORD. */
static int load_key(const char *cmd, tx_opts *t, tg_seckey **out) {
  *out = NULL;
  if (!t->private_key == !t->keystore)
    return cli_fail(cmd, "give exactly one of --private-key or --keystore");
  tg_seckey *k = tg_seckey_new();
  if (!k) return cli_fail(cmd, "cannot allocate guarded key memory");
  int rc;
  if (t->private_key) {
    rc = tg_seckey_set_hex(k, t->private_key, strlen(t->private_key));
    sodium_memzero(t->private_key, strlen(t->private_key));
    if (rc) {
      tg_seckey_free(k);
      return cli_fail_err(cmd, rc, "--private-key is not a private key");
    }
    *out = k;
    return 0;
  }
  enum { PW_MAX = 4096 };
  char *pw = sodium_malloc(PW_MAX);
  if (!pw) {
    tg_seckey_free(k);
    return cli_fail(cmd, "cannot allocate guarded memory");
  }
  size_t n = 0;
  int st = 0;
  const char *env = getenv("ETH_PASSWORD");
  if (t->password) {
    n = strlen(t->password);
    if (n >= PW_MAX) st = cli_fail(cmd, "--password is too long");
    else memcpy(pw, t->password, n);
    sodium_memzero(t->password, strlen(t->password));
  } else if (t->password_file) {
    FILE *f = fopen(t->password_file, "rb");
    if (!f) {
      st = cli_fail(cmd, "cannot read --password-file '%s'", t->password_file);
    } else {
      n = fread(pw, 1, PW_MAX - 1, f);
      fclose(f);
      while (n && (pw[n - 1] == '\n' || pw[n - 1] == '\r')) n--;
      char *nl = memchr(pw, '\n', n);
      if (nl) n = (size_t)(nl - pw);
    }
  } else if (env) {
    n = strlen(env);
    if (n >= PW_MAX) st = cli_fail(cmd, "ETH_PASSWORD is too long");
    else memcpy(pw, env, n);
  } else {
    st = cli_fail(cmd, "--keystore needs --password, --password-file or ETH_PASSWORD");
  }
  if (!st) {
    rc = tg_keystore_decrypt_file(k, t->keystore, pw, n, NULL);
    if (rc) st = cli_fail_err(cmd, rc, "cannot decrypt keystore '%s'", t->keystore);
  }
  sodium_free(pw);
  if (st) {
    tg_seckey_free(k);
    return st;
  }
  *out = k;
  return 0;
}

static void one_result(void *arg, const tg_txm_result *r) {
  *(tg_txm_result *)arg = *r;
}

int cmd_send(int argc, char **argv) {
  const char *cmd = argv[0];
  tx_opts t;
  int st = scan_tx(cmd, &argc, argv, &t);
  if (st) return st;
  node_args a;
  if ((st = scan(cmd, argc, argv, &a, 0)) != 0) return st;
  if (a.n_pos < 1) return cli_usage(cmd);
  tg_txm_request rq;
  memset(&rq, 0, sizeof rq);
  rq.has_to = 1;
  if ((st = parse_addr(cmd, a.pos[0], &rq.to)) != 0) return st;
  if (t.value && (st = parse_amount(cmd, "--value", t.value, &rq.value)) != 0) return st;
  if (t.gas_limit) {
    char *end;
    unsigned long long g = strtoull(t.gas_limit, &end, 10);
    if (!*t.gas_limit || *end || g == 0) return cli_fail(cmd, "--gas-limit '%s' is not a number", t.gas_limit);
    rq.gas_limit = g;
  }
  tg_buf data;
  tg_buf_init(&data, (size_t)1 << 20);
  tg_abi_sig *sig = NULL;
  tg_seckey *key = NULL;
  tg_rpc *rpc = NULL;
  tg_txm *m = NULL;
  st = build_calldata(cmd, a.pos + 1, a.n_pos - 1, &data, &sig);
  if (!st) st = load_key(cmd, &t, &key);
  if (!st) st = open_rpc(cmd, &a, &rpc);
  tg_txm_result res;
  memset(&res, 0, sizeof res);
  if (!st) {
    tg_txm_opts o;
    tg_txm_opts_init(&o);
    o.rpc = rpc;
    o.key = key;
    o.poll_ms = 250;
    int rc = tg_txm_open(&m, &o);
    if (rc) st = node_fail(cmd, rpc, rc, "cannot start the transaction manager");
  }
  if (!st) {
    rq.data = data.data;
    rq.data_len = data.len;
    int rc = tg_txm_submit(m, &rq, one_result, &res, NULL);
    if (rc) st = cli_fail_err(cmd, rc, "cannot submit the transaction");
  }
  if (!st) {
    int rc = tg_txm_run_until_idle(m, a.timeout_s * 1000u);
    if (rc) {
      st = cli_fail_err(cmd, rc, "no receipt within %u s", a.timeout_s);
    } else if (res.err) {
      st = res.err == TG_ERPC_REVERTED
               ? cli_fail(cmd, "gas estimation failed: execution reverted")
               : cli_fail_err(cmd, res.err, "the transaction failed");
    }
  }
  if (!st) {
    tg_rpc_reply r;
    json_t *p = json_array();
    json_array_append_new(p, tg_rpc_json_hash(&res.tx_hash));
    int rc = tg_rpc_call(rpc, &r, "eth_getTransactionReceipt", p);
    if (rc || json_is_null(r.result)) {
      st = node_fail(cmd, rpc, rc ? rc : TG_ENOTFOUND, "eth_getTransactionReceipt");
    } else if (a.json || t.json) {
      print_receipt_json(r.result);
    } else {
      print_receipt_table(r.result);
    }
    tg_rpc_reply_cleanup(&r);
    if (!st && res.status != 1) st = 1; /* mined but reverted: the table says so */
  }
  tg_txm_free(m);
  tg_rpc_free(rpc);
  tg_seckey_free(key);
  tg_abi_sig_free(sig);
  tg_buf_cleanup(&data);
  return st;
}
