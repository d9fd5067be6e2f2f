/* `tollgate abi-encode|calldata|decode-abi|sig|sig-event|decode-error`: Solidity ABI commands, output as cast's. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "tollgate/abi.h"
#include "tollgate/hex.h"
#include "tollgate/keccak.h"
#include "tollgate/u256.h"

static int parse_sig(const char *cmd, const char *s, tg_abi_sig **sig) {
  int rc = tg_abi_sig_parse(sig, s, strlen(s));
  if (rc) return cli_fail_err(cmd, rc, "cannot parse signature '%s'", s);
  if ((*sig)->name.len == 0) { /* as cast: a bare "(types)" is not a function signature */
    tg_abi_sig_free(*sig);
    *sig = NULL;
    return cli_fail(cmd, "signature '%s' has no function name (write e.g. 'f(uint256)')", s);
  }
  return 0;
}

/* Parses the arguments for sig->inputs, naming the first bad one. */
static int parse_args(const char *cmd, const tg_abi_sig *sig, int n, char **args,
                      tg_abi_tree **tree) {
  const tg_abi_type *in = sig->inputs;
  if ((size_t)n != in->count)
    return cli_fail(cmd, "'%s' takes %zu argument%s, got %d", sig->canonical, in->count,
                    in->count == 1 ? "" : "s", n);
  int rc = tg_abi_parse_args(tree, in, (const char *const *)args, (size_t)n);
  if (rc == 0) return 0;
  for (int i = 0; i < n; i++) {
    tg_abi_tree *one;
    int r = tg_abi_parse_arg(&one, in->members[i], args[i], strlen(args[i]));
    tg_abi_tree_free(one);
    if (r) {
      tg_buf ty;
      tg_buf_init(&ty, 0);
      int fr = tg_abi_type_format(&ty, in->members[i]);
      int out = cli_fail_err(cmd, r, "argument %d ('%s') is not a valid %s", i + 1, args[i],
                             fr == 0 && ty.data ? (const char *)ty.data : "value");
      tg_buf_cleanup(&ty);
      return out;
    }
  }
  return cli_fail_err(cmd, rc, "cannot encode the arguments");
}

static int encode_cmd(int argc, char **argv, int with_selector) {
  if (argc < 2) return cli_usage(argv[0]);
  tg_abi_sig *sig;
  if (parse_sig(argv[0], argv[1], &sig)) return 1;
  tg_abi_tree *tree = NULL;
  int status = parse_args(argv[0], sig, argc - 2, argv + 2, &tree);
  if (status == 0) {
    tg_buf out;
    tg_buf_init(&out, 0);
    int rc = with_selector ? tg_abi_encode_call(&out, sig, &tree->root)
                           : tg_abi_encode(&out, sig->inputs, &tree->root);
    if (rc) status = cli_fail_err(argv[0], rc, "cannot encode the arguments");
    else cli_print_hex(out.data ? out.data : (const uint8_t *)"", out.len);
    tg_buf_cleanup(&out);
  }
  tg_abi_tree_free(tree);
  tg_abi_sig_free(sig);
  return status;
}

int cmd_abi_encode(int argc, char **argv) { return encode_cmd(argc, argv, 0); }
int cmd_calldata(int argc, char **argv) { return encode_cmd(argc, argv, 1); }

static int read_hex(const char *cmd, const char *what, const char *s, tg_buf *out) {
  tg_buf_init(out, 0);
  int rc = tg_hex_decode_buf(out, s, strlen(s), TG_HEX_PREFIX_OPTIONAL);
  if (rc) {
    tg_buf_cleanup(out);
    return cli_fail_err(cmd, rc, "%s '%s' is not hex", what, s);
  }
  return 0;
}

/* Decodes `data` as `types` and prints one value a line. */
static int decode_print(const char *cmd, const char *sigtext, const tg_abi_type *types,
                        const uint8_t *data, size_t len) {
  if (types->count == 0)
    return cli_fail(cmd, "no data was decoded: '%s' lists no types to decode", sigtext);
  tg_abi_tree *tree;
  int rc = tg_abi_decode(&tree, types, data, len, TG_ABI_DECODE_ALLOW_TRAILING);
  if (rc)
    return cli_fail_err(cmd, rc, "ABI decoding failed: the %zu bytes are not a valid encoding "
                        "for '%s'", len, sigtext);
  tg_buf out;
  tg_buf_init(&out, 0);
  rc = tg_abi_format_lines(&out, types, &tree->root);
  if (!rc) fwrite(out.data, 1, out.len, stdout);
  tg_buf_cleanup(&out);
  tg_abi_tree_free(tree);
  return rc ? cli_fail_err(cmd, rc, "cannot format the values") : 0;
}

int cmd_decode_abi(int argc, char **argv) {
  int input = 0;
  const char *pos[2];
  int np = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--input") == 0 || strcmp(argv[i], "-i") == 0) input = 1;
    else if (np < 2) pos[np++] = argv[i];
    else return cli_usage(argv[0]);
  }
  if (np != 2) return cli_usage(argv[0]);
  tg_abi_sig *sig;
  if (parse_sig(argv[0], pos[0], &sig)) return 1;
  tg_buf data;
  int status = read_hex(argv[0], "calldata", pos[1], &data);
  if (status == 0) {
    const tg_abi_type *types = input ? sig->inputs : sig->outputs;
    if (types == NULL)
      status = cli_fail(argv[0], "no data was decoded: '%s' has no output types "
                        "(write 'f(in)(out)', or pass --input)", pos[0]);
    else
      status = decode_print(argv[0], pos[0], types, data.data, data.len);
    tg_buf_cleanup(&data);
  }
  tg_abi_sig_free(sig);
  return status;
}

int cmd_sig(int argc, char **argv) {
  if (argc != 2) return cli_usage(argv[0]);
  tg_abi_sig *sig;
  if (parse_sig(argv[0], argv[1], &sig)) return 1;
  uint8_t sel[4];
  tg_abi_selector(sel, sig);
  tg_abi_sig_free(sig);
  cli_print_hex(sel, 4);
  return 0;
}

int cmd_sig_event(int argc, char **argv) {
  if (argc != 2) return cli_usage(argv[0]);
  tg_abi_sig *sig;
  if (parse_sig(argv[0], argv[1], &sig)) return 1;
  tg_hash h;
  tg_keccak256(&h, sig->canonical, sig->canonical_len);
  tg_abi_sig_free(sig);
  cli_print_hex(h.b, 32);
  return 0;
}

int cmd_decode_error(int argc, char **argv) {
  const char *sigtext = NULL, *datatext = NULL;
  for (int i = 1; i < argc; i++) {
    int missing = 0;
    const char *v = cli_opt(argc, argv, &i, "--sig", &missing);
    if (v == NULL && !missing) v = cli_opt(argc, argv, &i, "--error-sig", &missing);
    if (missing) return cli_usage(argv[0]);
    if (v) sigtext = v;
    else if (datatext == NULL) datatext = argv[i];
    else return cli_usage(argv[0]);
  }
  if (datatext == NULL) return cli_usage(argv[0]);
  tg_buf data;
  if (read_hex(argv[0], "error data", datatext, &data)) return 1;
  int status = 0;
  if (data.len < 4) {
    status = cli_fail(argv[0], "error data '%s' is shorter than a 4-byte selector", datatext);
  } else if (sigtext) {
    tg_abi_sig *sig;
    if (parse_sig(argv[0], sigtext, &sig)) {
      status = 1;
    } else {
      uint8_t sel[4];
      tg_abi_selector(sel, sig);
      if (memcmp(sel, data.data, 4) != 0)
        status = cli_fail(argv[0], "selector mismatch: expected 0x%02x%02x%02x%02x, got "
                          "0x%02x%02x%02x%02x", sel[0], sel[1], sel[2], sel[3], data.data[0],
                          data.data[1], data.data[2], data.data[3]);
      else
        status = decode_print(argv[0], sigtext, sig->inputs, data.data + 4, data.len - 4);
      tg_abi_sig_free(sig);
    }
  } else {
    /* Without --sig: the two errors the compiler emits. cast would ask a remote database. */
    tg_abi_revert r;
    int rc = tg_abi_decode_revert(&r, data.data, data.len, NULL, 0);
    if (rc) {
      status = cli_fail_err(argv[0], rc, "cannot decode error data '%s'", datatext);
    } else if (r.kind == TG_ABI_REVERT_ERROR) {
      static const tg_abi_type str_t = {TG_ABI_STRING, 0, 0, 1, 0, 32, NULL, NULL};
      tg_abi_value v = tg_abi_val_bytes(r.message.ptr, r.message.len);
      tg_buf out;
      tg_buf_init(&out, 0);
      if (tg_abi_format_value(&out, &str_t, &v) == 0) printf("%s\n", (const char *)out.data);
      tg_buf_cleanup(&out);
    } else if (r.kind == TG_ABI_REVERT_PANIC) {
      char hex[TG_U256_HEX_MAX];
      tg_u256_to_hex(&r.panic_code, hex);
      printf("panic: %s (%s)\n", r.panic_reason ? r.panic_reason : "unknown panic code", hex);
    } else {
      status = cli_fail(argv[0], "no matching error signature found for selector "
                        "`%02x%02x%02x%02x`; pass --sig", data.data[0], data.data[1],
                        data.data[2], data.data[3]);
    }
    tg_abi_revert_cleanup(&r);
  }
  tg_buf_cleanup(&data);
  return status;
}
