/* `tollgate rpc`, `balance`, `nonce`, `receipt`, `block-number`, `chain-id`: node queries over JSON-RPC, printed as cast prints them. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "tollgate/address.h"
#include "tollgate/hex.h"
#include "tollgate/rpc.h"
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
      /* cast re-serialises the receipt in its own field order; the rest keep the node's. */
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
      json_object_foreach(res, k, v) {
        if (!json_object_get(o, k)) json_object_set(o, k, v);
      }
      print_json(stdout, o);
      putchar('\n');
      json_decref(o);
    } else {
      print_receipt_table(res);
    }
    tg_eth_receipt_cleanup(&rc);
    json_decref(res);
  }
  tg_rpc_free(rpc);
  return st;
}
