/* `tollgate mktx` and `tollgate decode-transaction`: build and sign, or decode, raw transactions as cast does. */
#include <ctype.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sodium.h>

#include "cli/cli.h"
#include "tollgate/abi.h"
#include "tollgate/address.h"
#include "tollgate/hex.h"
#include "tollgate/secp.h"
#include "tollgate/tx.h"
#include "tollgate/u256.h"

/* Calldata, creation code and raw transactions are capped at this size. */
#define TX_CLI_MAX ((size_t)16 << 20)
/* Access-list JSON caps. */
#define TX_CLI_MAX_AL_ENTRIES 4096
#define TX_CLI_MAX_AL_KEYS 65536

/* ------------------------------------------------------------------ parsing */

/* A 64-bit quantity: decimal or 0x hex. */
static int parse_u64(uint64_t *out, const char *s) {
  tg_u256 u;
  *out = 0;
  int rc = tg_u256_parse(&u, s, strlen(s));
  if (rc) return rc;
  return tg_u256_to_u64(&u, out);
}

/*
 * An amount of wei, as cast reads --value and --gas-price: 0x hex wei, or a
 * decimal number (with an optional fraction and exponent, "1.5", "1e3"),
 * then an optional space and a unit: wei (the default), gwei or ether. The
 * result must be a whole number of wei.
 */
static int parse_amount(tg_u256 *out, const char *s) {
  tg_u256_zero(out);
  size_t len = strlen(s);
  if (len >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
    return len == 2 ? TG_OK : tg_u256_parse_hex(out, s, len);
  char digits[128];
  size_t nd = 0, frac = 0;
  int dot = 0;
  const char *p = s;
  for (; *p && (isdigit((unsigned char)*p) || *p == '.'); p++) {
    if (*p == '.') {
      if (dot) return TG_ENUMBER;
      dot = 1;
      continue;
    }
    if (nd == sizeof digits - 1) return TG_EOVERFLOW;
    digits[nd++] = *p;
    if (dot) frac++;
  }
  if (nd == 0) return TG_ENUMBER;
  unsigned exp = 0;
  if ((*p == 'e' || *p == 'E') && isdigit((unsigned char)p[1])) { /* not the "e" of "ether" */
    p++;
    for (; isdigit((unsigned char)*p); p++) {
      exp = exp * 10 + (unsigned)(*p - '0');
      if (exp > 100) return TG_EOVERFLOW;
    }
  }
  while (*p == ' ') p++;
  unsigned unit;
  if (*p == 0 || strcmp(p, "wei") == 0)
    unit = 0;
  else if (strcmp(p, "gwei") == 0)
    unit = 9;
  else if (strcmp(p, "ether") == 0)
    unit = 18;
  else
    return TG_ENUMBER;
  if (frac > unit + exp) return TG_ENUMBER; /* a fraction of a wei */
  unsigned scale = unit + exp - (unsigned)frac;
  int rc = tg_u256_parse_dec(out, digits, nd);
  for (unsigned i = 0; !rc && i < scale; i++) rc = tg_u256_mul_u64(out, out, 10);
  if (rc) tg_u256_zero(out);
  return rc;
}

/* Hex bytes with an optional 0x, appended to `out`. */
static int parse_hex(tg_buf *out, const char *s) {
  return tg_hex_decode_buf(out, s, strlen(s), TG_HEX_PREFIX_OPTIONAL);
}

/*
 * cast's access-list JSON: [{"address": "0x..", "storageKeys": ["0x..", ...]}, ...].
 * Appends its RLP encoding to `out`. `why` names what was wrong.
 */
static int parse_access_list(tg_buf *out, const char *text, const char **why) {
  json_error_t jerr;
  json_t *j = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
  *why = "it is not JSON";
  if (!j) return TG_EJSON;
  int rc = TG_EJSON_FIELD;
  size_t n = json_array_size(j), total_keys = 0;
  tg_access_entry *entries = NULL;
  tg_hash *keys = NULL;
  *why = "it must be an array of {\"address\", \"storageKeys\"} objects";
  if (!json_is_array(j)) goto done;
  *why = "it has too many entries";
  if (n > TX_CLI_MAX_AL_ENTRIES) goto done;
  for (size_t i = 0; i < n; i++) total_keys += json_array_size(json_object_get(json_array_get(j, i), "storageKeys"));
  *why = "it has too many storage keys";
  if (total_keys > TX_CLI_MAX_AL_KEYS) goto done;
  entries = calloc(n ? n : 1, sizeof *entries);
  keys = calloc(total_keys ? total_keys : 1, sizeof *keys);
  if (!entries || !keys) abort();
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    const json_t *e = json_array_get(j, i);
    const json_t *addr = json_object_get(e, "address");
    const json_t *sk = json_object_get(e, "storageKeys");
    *why = "an entry lacks \"address\" or \"storageKeys\"";
    if (!json_is_object(e) || !json_is_string(addr) || !json_is_array(sk)) goto done;
    /* Stricter than cast: a mixed-case address must be a valid EIP-55 checksum. */
    *why = "an address is not valid";
    rc = tg_address_parse(&entries[i].address, json_string_value(addr), json_string_length(addr));
    if (rc) goto done;
    entries[i].storage_keys = keys + k;
    entries[i].n_storage_keys = json_array_size(sk);
    for (size_t s = 0; s < json_array_size(sk); s++, k++) {
      const json_t *key = json_array_get(sk, s);
      *why = "a storage key is not 32 bytes of hex";
      rc = TG_EJSON_FIELD;
      if (!json_is_string(key)) goto done;
      rc = tg_hex_decode_exact(keys[k].b, 32, json_string_value(key), json_string_length(key));
      if (rc) goto done;
    }
  }
  *why = "it cannot be encoded";
  rc = tg_access_list_encode(out, entries, n);
done:
  free(entries);
  free(keys);
  json_decref(j);
  return rc;
}

/* Parses the arguments for sig->inputs, naming the first bad one (as `tollgate calldata`). */
static int abi_args(const char *cmd, const tg_abi_sig *sig, int n, char **args,
                    tg_abi_tree **tree) {
  const tg_abi_type *in = sig->inputs;
  if ((size_t)n != in->count)
    return cli_fail(cmd, "'%s' takes %zu argument%s, got %d", sig->canonical, in->count,
                    in->count == 1 ? "" : "s", n);
  int rc = tg_abi_parse_args(tree, in, (const char *const *)args, (size_t)n);
  if (rc == 0) return 0;
  for (int i = 0; i < n; i++) {
    tg_abi_tree *one = NULL;
    int r = tg_abi_parse_arg(&one, in->members[i], args[i], strlen(args[i]));
    tg_abi_tree_free(one);
    if (r) return cli_fail_err(cmd, r, "argument %d ('%s') does not fit '%s'", i + 1, args[i],
                               sig->canonical);
  }
  return cli_fail_err(cmd, rc, "cannot encode the arguments of '%s'", sig->canonical);
}

/*
 * Appends the call data for `<SIG> [ARGS...]`: a 0x-hex SIG is raw data (as
 * cast), otherwise selector + ABI-encoded arguments, or for a contract
 * creation the arguments alone (constructor arguments after the code).
 */
static int append_call(const char *cmd, tg_buf *data, int nargs, char **args, int create) {
  const char *s = args[0];
  if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    if (nargs > 1) return cli_fail(cmd, "raw call data '%s' takes no arguments", s);
    int rc = parse_hex(data, s);
    return rc ? cli_fail_err(cmd, rc, "call data '%s' is not hex", s) : 0;
  }
  tg_abi_sig *sig = NULL;
  int rc = tg_abi_sig_parse(&sig, s, strlen(s));
  if (rc) return cli_fail_err(cmd, rc, "cannot parse signature '%s'", s);
  tg_abi_tree *tree = NULL;
  int status = abi_args(cmd, sig, nargs - 1, args + 1, &tree);
  if (status == 0) {
    rc = create ? tg_abi_encode(data, sig->inputs, &tree->root)
                : tg_abi_encode_call(data, sig, &tree->root);
    if (rc) status = cli_fail_err(cmd, rc, "cannot encode the arguments of '%s'", s);
  }
  tg_abi_tree_free(tree);
  tg_abi_sig_free(sig);
  return status;
}

/* -------------------------------------------------------------------- mktx */

/* A few of cast's chain names (the ones people type); any other chain is given by its number. */
static const struct {
  const char *name;
  uint64_t id;
} CHAINS[] = {
    {"mainnet", 1},         {"goerli", 5},          {"optimism", 10},
    {"polygon", 137},       {"dev", 1337},          {"holesky", 17000},
    {"base", 8453},         {"anvil-hardhat", 31337}, {"arbitrum", 42161},
    {"base-sepolia", 84532}, {"hoodi", 560048},     {"sepolia", 11155111},
};

static int parse_chain(uint64_t *out, const char *s) {
  for (size_t i = 0; i < sizeof CHAINS / sizeof CHAINS[0]; i++) {
    if (strcmp(s, CHAINS[i].name) == 0) {
      *out = CHAINS[i].id;
      return TG_OK;
    }
  }
  return parse_u64(out, s);
}

typedef struct {
  const char *key, *chain, *nonce, *gas_limit, *value, *gas_price, *priority, *access_list,
      *create, *data;
  int legacy;
  int npos;
  char **pos;
} mktx_opts;

/* Scans the options (anywhere on the line; after `--` everything is positional). */
static int mktx_scan(int argc, char **argv, mktx_opts *o, char **pos) {
  static const struct {
    const char *name;
    size_t off;
  } names[] = {
      {"--private-key", offsetof(mktx_opts, key)},
      {"--chain", offsetof(mktx_opts, chain)},
      {"--chain-id", offsetof(mktx_opts, chain)},
      {"--nonce", offsetof(mktx_opts, nonce)},
      {"--gas-limit", offsetof(mktx_opts, gas_limit)},
      {"--value", offsetof(mktx_opts, value)},
      {"--gas-price", offsetof(mktx_opts, gas_price)},
      {"--priority-gas-price", offsetof(mktx_opts, priority)},
      {"--access-list", offsetof(mktx_opts, access_list)},
      {"--create", offsetof(mktx_opts, create)},
      {"--data", offsetof(mktx_opts, data)},
      {"--input", offsetof(mktx_opts, data)},
  };
  int only_pos = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (only_pos || a[0] != '-' || a[1] != '-') {
      pos[o->npos++] = argv[i];
      continue;
    }
    if (strcmp(a, "--") == 0) {
      only_pos = 1;
      continue;
    }
    if (strcmp(a, "--legacy") == 0) {
      o->legacy = 1;
      continue;
    }
    int found = 0, missing = 0;
    for (size_t k = 0; k < sizeof names / sizeof names[0] && !found; k++) {
      const char *v = cli_opt(argc, argv, &i, names[k].name, &missing);
      if (missing) return cli_fail(argv[0], "option %s needs a value", names[k].name);
      if (v) {
        *(const char **)((char *)o + names[k].off) = v;
        found = 1;
      }
    }
    if (!found) return cli_fail(argv[0], "unknown option '%s'; see `tollgate mktx --help`", a);
  }
  o->pos = pos;
  return 0;
}

static int need(const char *cmd, const char *v, const char *opt, const char *why) {
  if (v) return 0;
  return cli_fail(cmd, "%s is required (%s)", opt, why);
}

/*
 * Builds, signs and prints a transaction, byte-for-byte as `cast mktx` with
 * every field given (tollgate never asks a node, so the chain id, nonce,
 * gas limit and prices are all required). Type 2 unless --legacy; --legacy
 * with --access-list gives type 1. --data/--input give raw call data
 * instead of <SIG> [ARGS...]. Chain id 0 is refused for legacy
 * transactions: EIP-155 cannot protect it (cast signs v = 35/36, which
 * tollgate's strict decoder itself refuses).
 */
int cmd_mktx(int argc, char **argv) {
  const char *cmd = argv[0];
  mktx_opts o;
  memset(&o, 0, sizeof o);
  char **pos = calloc((size_t)argc + 1, sizeof *pos);
  if (!pos) abort();
  int status = mktx_scan(argc, argv, &o, pos);
  tg_buf data, al;
  tg_buf_init(&data, TX_CLI_MAX);
  tg_buf_init(&al, TX_CLI_MAX);
  tg_seckey *key = NULL;
  tg_tx tx;
  int rc;
  if (status) goto out;
  status = 1;
  if (o.create ? o.npos > 0 && o.data : o.npos == 0) {
    status = o.create ? cli_fail(cmd, "give either --data or <SIG> [ARGS...] after --create")
                      : cli_usage(cmd);
    goto out;
  }
  if (need(cmd, o.key, "--private-key", "the signing key") ||
      need(cmd, o.chain, "--chain", "tollgate does not ask a node for it") ||
      need(cmd, o.nonce, "--nonce", "tollgate does not ask a node for it") ||
      need(cmd, o.gas_limit, "--gas-limit", "tollgate does not estimate gas") ||
      need(cmd, o.gas_price, "--gas-price",
           o.legacy ? "the gas price" : "the max fee per gas; tollgate does not ask a node") ||
      (!o.legacy && need(cmd, o.priority, "--priority-gas-price",
                         "the max priority fee per gas; tollgate does not ask a node")))
    goto out;
  if (o.legacy && o.priority) {
    cli_fail(cmd, "--priority-gas-price applies to EIP-1559 transactions, not with --legacy");
    goto out;
  }
  tg_tx_init(&tx, !o.legacy ? TG_TX_EIP1559 : o.access_list ? TG_TX_EIP2930 : TG_TX_LEGACY);
  if ((rc = parse_chain(&tx.chain_id, o.chain))) {
    cli_fail_err(cmd, rc, "--chain '%s' is neither a chain id nor a known chain name", o.chain);
    goto out;
  }
  if (tx.type == TG_TX_LEGACY && tx.chain_id == 0) {
    cli_fail(cmd, "--chain 0 with --legacy: EIP-155 needs a chain id above 0");
    goto out;
  }
  if ((rc = parse_u64(&tx.nonce, o.nonce)) || tx.nonce > TG_TX_NONCE_MAX) {
    cli_fail_err(cmd, rc ? rc : TG_ETX_FIELD, "--nonce '%s' is not a nonce below 2^64-1", o.nonce);
    goto out;
  }
  if ((rc = parse_u64(&tx.gas_limit, o.gas_limit))) {
    cli_fail_err(cmd, rc, "--gas-limit '%s' is not a 64-bit number", o.gas_limit);
    goto out;
  }
  if (o.value && (rc = parse_amount(&tx.value, o.value))) {
    cli_fail_err(cmd, rc, "--value '%s' is not an amount (wei, 0x hex, or e.g. 1.5ether, 10gwei)",
                 o.value);
    goto out;
  }
  tg_u256 *price = tx.type == TG_TX_EIP1559 ? &tx.max_fee_per_gas : &tx.gas_price;
  if ((rc = parse_amount(price, o.gas_price))) {
    cli_fail_err(cmd, rc, "--gas-price '%s' is not an amount (wei, 0x hex, or e.g. 10gwei)",
                 o.gas_price);
    goto out;
  }
  if (o.priority && (rc = parse_amount(&tx.max_priority_fee_per_gas, o.priority))) {
    cli_fail_err(cmd, rc, "--priority-gas-price '%s' is not an amount", o.priority);
    goto out;
  }
  if (o.access_list) {
    const char *why;
    if ((rc = parse_access_list(&al, o.access_list, &why))) {
      cli_fail_err(cmd, rc, "--access-list '%s': %s", o.access_list, why);
      goto out;
    }
    tx.access_list = TG_BYTES(al.data, al.len);
  }
  /* Recipient and data. */
  int first_call_arg = 0;
  if (o.create) {
    if ((rc = parse_hex(&data, o.create))) {
      cli_fail_err(cmd, rc, "--create code '%s' is not hex", o.create);
      goto out;
    }
  } else {
    const char *to = o.pos[0];
    if ((rc = tg_address_parse(&tx.to, to, strlen(to)))) {
      cli_fail_err(cmd, rc, "recipient '%s' is not an address (ENS names need a node)", to);
      goto out;
    }
    tx.has_to = 1;
    first_call_arg = 1;
  }
  if (o.data) {
    if (o.npos > first_call_arg) {
      cli_fail(cmd, "give either --data or <SIG> [ARGS...], not both");
      goto out;
    }
    if ((rc = parse_hex(&data, o.data))) {
      cli_fail_err(cmd, rc, "--data '%s' is not hex", o.data);
      goto out;
    }
  } else if (o.npos > first_call_arg) {
    if (append_call(cmd, &data, o.npos - first_call_arg, o.pos + first_call_arg, o.create != NULL))
      goto out;
  }
  tx.data = TG_BYTES(data.data, data.len);
  /* The key, last: kept in guarded memory, and its text wiped from argv. */
  key = tg_seckey_new();
  if (!key) abort();
  rc = tg_seckey_set_hex(key, o.key, strlen(o.key));
  sodium_memzero((void *)o.key, strlen(o.key));
  if (rc) {
    cli_fail_err(cmd, rc, "--private-key is not a valid 32-byte hex key");
    goto out;
  }
  if ((rc = tg_tx_sign(&tx, key))) {
    cli_fail_err(cmd, rc, "cannot sign the transaction");
    goto out;
  }
  tg_buf raw;
  tg_buf_init(&raw, TX_CLI_MAX + 4096);
  rc = tg_tx_encode(&raw, &tx);
  if (rc)
    cli_fail_err(cmd, rc, "cannot encode the transaction");
  else
    cli_print_hex(raw.data, raw.len);
  tg_buf_cleanup(&raw);
  status = rc ? 1 : 0;
out:
  tg_seckey_free(key);
  tg_buf_cleanup(&data);
  tg_buf_cleanup(&al);
  free(pos);
  return status;
}

/* ------------------------------------------------------- decode-transaction */

static int put_q256(tg_buf *out, const char *name, const tg_u256 *v) {
  char hex[TG_U256_HEX_MAX];
  tg_u256_to_hex(v, hex);
  return tg_buf_printf(out, "  \"%s\": \"%s\",\n", name, hex);
}

static int put_q64(tg_buf *out, const char *name, uint64_t v) {
  return tg_buf_printf(out, "  \"%s\": \"0x%llx\",\n", name, (unsigned long long)v);
}

static int put_access_list(tg_buf *out, const tg_tx *tx) {
  tg_rlp_iter it;
  int rc = tg_access_list_iter_init(&it, tx);
  if (rc) return rc;
  if (!tg_rlp_iter_more(&it)) return tg_buf_append_str(out, "  \"accessList\": [],\n");
  if ((rc = tg_buf_append_str(out, "  \"accessList\": [\n"))) return rc;
  while (tg_rlp_iter_more(&it)) {
    tg_address a;
    tg_rlp_iter keys;
    char ah[TG_ADDRESS_HEX_LEN];
    if ((rc = tg_access_list_next(&it, &a, &keys))) return rc;
    tg_address_to_hex(&a, ah);
    if ((rc = tg_buf_printf(out, "    {\n      \"address\": \"%s\",\n      \"storageKeys\": ", ah)))
      return rc;
    if (!tg_rlp_iter_more(&keys)) {
      rc = tg_buf_append_str(out, "[]\n");
    } else {
      rc = tg_buf_append_str(out, "[\n");
      while (!rc && tg_rlp_iter_more(&keys)) {
        tg_hash k;
        char kh[67];
        if ((rc = tg_access_list_key(&keys, &k))) return rc;
        tg_hex_encode(kh, k.b, 32, 1);
        rc = tg_buf_printf(out, "        \"%s\"%s\n", kh, tg_rlp_iter_more(&keys) ? "," : "");
      }
      if (!rc) rc = tg_buf_append_str(out, "      ]\n");
    }
    if (rc) return rc;
    if ((rc = tg_buf_printf(out, "    }%s\n", tg_rlp_iter_more(&it) ? "," : ""))) return rc;
  }
  return tg_buf_append_str(out, "  ],\n");
}

/* The JSON document, with cast's field names, order, and value formats. */
static int tx_json(tg_buf *out, const tg_tx *tx, const tg_address *signer, const tg_hash *hash) {
  char a[TG_ADDRESS_HEX_LEN];
  int rc;
  tg_address_to_hex(signer, a);
  if ((rc = tg_buf_printf(out, "{\n  \"signer\": \"%s\",\n", a))) return rc;
  if ((rc = put_q64(out, "type", (uint64_t)tx->type))) return rc;
  if ((tx->type != TG_TX_LEGACY || tx->chain_id) && (rc = put_q64(out, "chainId", tx->chain_id)))
    return rc;
  if ((rc = put_q64(out, "nonce", tx->nonce))) return rc;
  if (tx->type == TG_TX_EIP1559) {
    if ((rc = put_q64(out, "gas", tx->gas_limit))) return rc;
    if ((rc = put_q256(out, "maxFeePerGas", &tx->max_fee_per_gas))) return rc;
    if ((rc = put_q256(out, "maxPriorityFeePerGas", &tx->max_priority_fee_per_gas))) return rc;
  } else {
    if ((rc = put_q256(out, "gasPrice", &tx->gas_price))) return rc;
    if ((rc = put_q64(out, "gas", tx->gas_limit))) return rc;
  }
  if (tx->has_to) {
    tg_address_to_hex(&tx->to, a);
    rc = tg_buf_printf(out, "  \"to\": \"%s\",\n", a);
  } else {
    rc = tg_buf_append_str(out, "  \"to\": null,\n");
  }
  if (rc) return rc;
  if ((rc = put_q256(out, "value", &tx->value))) return rc;
  if (tx->type != TG_TX_LEGACY && (rc = put_access_list(out, tx))) return rc;
  if ((rc = tg_buf_append_str(out, "  \"input\": \""))) return rc;
  if ((rc = tg_hex_encode_buf(out, tx->data.ptr, tx->data.len, 1))) return rc;
  if ((rc = tg_buf_append_str(out, "\",\n"))) return rc;
  if ((rc = put_q256(out, "r", &tx->r))) return rc;
  if ((rc = put_q256(out, "s", &tx->s))) return rc;
  if (tx->type != TG_TX_LEGACY && (rc = put_q64(out, "yParity", (uint64_t)tx->y_parity))) return rc;
  if ((rc = put_q64(out, "v", tg_tx_v(tx)))) return rc;
  char h[67];
  tg_hex_encode(h, hash->b, 32, 1);
  return tg_buf_printf(out, "  \"hash\": \"%s\"\n}", h);
}

/*
 * Prints the transaction as pretty JSON: the same text cast prints, but as
 * a JSON document rather than wrapped in a JSON string (cast prints
 * "{\n  \"signer\": ...}" with escapes, which needs a second parse). Users
 * and tools (jq) read the document directly; --cast prints cast's quoted
 * string byte-for-byte. r and s are quantities (minimal hex, as cast).
 * Stricter than cast: invalid signatures (high S, r or s out of range, an
 * unrecoverable point), trailing bytes and non-canonical fields are errors.
 */
int cmd_decode_transaction(int argc, char **argv) {
  const char *cmd = argv[0];
  int quoted = 0;
  const char *in = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--cast") == 0)
      quoted = 1;
    else if (in == NULL)
      in = argv[i];
    else
      return cli_usage(cmd);
  }
  if (in == NULL) return cli_usage(cmd);
  tg_buf raw, text;
  tg_buf_init(&raw, TX_CLI_MAX);
  tg_buf_init(&text, 4 * TX_CLI_MAX);
  int status = 1;
  tg_tx tx;
  tg_address signer;
  tg_hash hash;
  int rc = parse_hex(&raw, in);
  if (rc) {
    cli_fail_err(cmd, rc, "'%.80s' is not hex", in);
  } else if ((rc = tg_tx_decode(&tx, raw.data, raw.len))) {
    cli_fail_err(cmd, rc, "cannot decode the transaction '%.80s%s'", in,
                 strlen(in) > 80 ? "..." : "");
  } else if ((rc = tg_tx_sender(&signer, &tx))) {
    cli_fail_err(cmd, rc, "cannot recover the signer of '%.80s%s'", in,
                 strlen(in) > 80 ? "..." : "");
  } else if ((rc = tg_tx_hash(&hash, &tx)) || (rc = tx_json(&text, &tx, &signer, &hash))) {
    cli_fail_err(cmd, rc, "cannot format the transaction");
  } else {
    if (!quoted) {
      puts((const char *)text.data);
    } else {
      putchar('"');
      for (size_t i = 0; i < text.len; i++) {
        char c = (char)text.data[i];
        if (c == '\n')
          fputs("\\n", stdout);
        else if (c == '"' || c == '\\')
          printf("\\%c", c);
        else
          putchar(c);
      }
      fputs("\"\n", stdout);
    }
    status = 0;
  }
  tg_buf_cleanup(&raw);
  tg_buf_cleanup(&text);
  return status;
}
