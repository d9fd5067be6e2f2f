/* `tollgate to-rlp` and `tollgate from-rlp`: RLP from and to cast's JSON notation. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli/cli.h"
#include "tollgate/hex.h"
#include "tollgate/rlp.h"
#include "tollgate/u256.h"

/* Output and JSON caps: an argument is at most a few MiB anyway. */
#define RLP_CLI_MAX ((size_t)64 << 20)

/* Hex bytes with an optional 0x (not 0X, as cast), an even digit count. */
static int decode_hex_arg(tg_buf *out, const char *s, size_t len) {
  if (len >= 2 && s[0] == '0' && s[1] == 'X') return TG_EHEX_PREFIX;
  return tg_hex_decode_buf(out, s, len, TG_HEX_PREFIX_OPTIONAL);
}

/*
 * Encodes a JSON value as cast does: arrays are lists, strings are hex bytes,
 * numbers are unsigned integers, null is the empty string; booleans and
 * objects are refused. `depth` caps recursion (jansson caps parsing depth too).
 */
static int encode_value(tg_buf *out, const json_t *v, int depth, const char **why) {
  if (depth > TG_RLP_MAX_DEPTH) {
    *why = "nesting is too deep";
    return TG_ERLP_DEPTH;
  }
  tg_rlp_sink s;
  tg_rlp_sink_init(&s, out, NULL);
  switch (json_typeof(v)) {
  case JSON_ARRAY: {
    size_t mark, i;
    json_t *item;
    tg_rlp_list_begin(out, &mark);
    json_array_foreach(v, i, item) {
      int rc = encode_value(out, item, depth + 1, why);
      if (rc) return rc;
    }
    return tg_rlp_list_end(out, mark);
  }
  case JSON_STRING: {
    tg_buf b;
    tg_buf_init(&b, RLP_CLI_MAX);
    int rc = decode_hex_arg(&b, json_string_value(v), json_string_length(v));
    if (rc) {
      *why = "a string is not hex bytes";
    } else {
      tg_rlp_put_bytes(&s, b.data, b.len);
      rc = tg_rlp_sink_status(&s);
    }
    tg_buf_cleanup(&b);
    return rc;
  }
  case JSON_INTEGER: {
    json_int_t x = json_integer_value(v);
    if (x < 0) {
      *why = "a number is negative";
      return TG_ENUMBER;
    }
    tg_rlp_put_u64(&s, (uint64_t)x);
    return tg_rlp_sink_status(&s);
  }
  case JSON_NULL:
    tg_rlp_put_bytes(&s, "", 0);
    return tg_rlp_sink_status(&s);
  case JSON_TRUE:
  case JSON_FALSE:
    *why = "RLP input can not contain booleans";
    return TG_EINVAL;
  case JSON_OBJECT:
    *why = "RLP input can not contain objects";
    return TG_EINVAL;
  default:
    *why = "numbers must be unsigned integers";
    return TG_ENUMBER;
  }
}

/*
 * As cast: the argument is JSON (nested arrays of 0x-hex strings, integers,
 * null) when it parses as JSON, and otherwise one bare hex string ("0x01",
 * "ab", or empty for the empty string).
 */
int cmd_to_rlp(int argc, char **argv) {
  if (argc != 2) return cli_usage(argv[0]);
  const char *in = argv[1];
  size_t len = strlen(in);
  tg_buf out;
  tg_buf_init(&out, RLP_CLI_MAX);
  json_error_t jerr;
  json_t *j = json_loadb(in, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
  int rc;
  const char *why = NULL;
  if (j) {
    rc = encode_value(&out, j, 0, &why);
    json_decref(j);
  } else {
    tg_buf b;
    tg_buf_init(&b, RLP_CLI_MAX);
    rc = decode_hex_arg(&b, in, len);
    if (rc) {
      why = "it is neither JSON nor hex bytes";
    } else {
      tg_rlp_sink s;
      tg_rlp_sink_init(&s, &out, NULL);
      tg_rlp_put_bytes(&s, b.data, b.len);
      rc = tg_rlp_sink_status(&s);
    }
    tg_buf_cleanup(&b);
  }
  int status = 0;
  if (rc)
    status = cli_fail_err(argv[0], rc, "cannot encode '%s'%s%s", in, why ? ": " : "",
                          why ? why : "");
  else
    cli_print_hex(out.data, out.len);
  tg_buf_cleanup(&out);
  return status;
}

/* Prints an item as cast's compact JSON: strings as "0x..", lists as [..]. */
static int format_item(tg_buf *out, const tg_rlp_item *item) {
  int rc;
  if (!item->is_list) {
    if ((rc = tg_buf_append_byte(out, '"'))) return rc;
    if ((rc = tg_hex_encode_buf(out, item->payload.ptr, item->payload.len, 1))) return rc;
    return tg_buf_append_byte(out, '"');
  }
  if ((rc = tg_buf_append_byte(out, '['))) return rc;
  tg_rlp_iter it;
  if ((rc = tg_rlp_iter_init(&it, item))) return rc;
  int first = 1;
  while (tg_rlp_iter_more(&it)) {
    tg_rlp_item sub;
    if ((rc = tg_rlp_iter_next(&it, &sub))) return rc;
    if (!first && (rc = tg_buf_append_byte(out, ','))) return rc;
    first = 0;
    if ((rc = format_item(out, &sub))) return rc;
  }
  return tg_buf_append_byte(out, ']');
}

/*
 * Decodes strictly. One deliberate difference from cast: bytes after the
 * first item are an error here (cast ignores them: `cast from-rlp 0x8080`
 * prints "0x").
 */
int cmd_from_rlp(int argc, char **argv) {
  int as_int = 0;
  const char *in = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--as-int") == 0)
      as_int = 1;
    else if (in == NULL)
      in = argv[i];
    else
      return cli_usage(argv[0]);
  }
  if (in == NULL) return cli_usage(argv[0]);
  size_t len = strlen(in);
  tg_buf raw;
  tg_buf_init(&raw, RLP_CLI_MAX);
  int rc = tg_hex_decode_buf(&raw, in, len, TG_HEX_PREFIX_OPTIONAL);
  if (rc) {
    tg_buf_cleanup(&raw);
    return cli_fail_err(argv[0], rc, "'%s' is not hex bytes", in);
  }
  tg_rlp_item item;
  rc = tg_rlp_decode(&item, raw.data, raw.len);
  int status = 0;
  if (rc) {
    status = cli_fail_err(argv[0], rc, "could not decode RLP '%s'", in);
  } else if (as_int) {
    tg_u256 v;
    rc = tg_rlp_get_u256(&item, &v);
    if (rc) {
      status = cli_fail_err(argv[0], rc, "'%s' is not an RLP integer", in);
    } else {
      char dec[TG_U256_DEC_MAX];
      tg_u256_to_dec(&v, dec);
      puts(dec);
    }
  } else {
    tg_buf text;
    tg_buf_init(&text, RLP_CLI_MAX * 2 + 16);
    rc = format_item(&text, &item);
    if (rc)
      status = cli_fail_err(argv[0], rc, "cannot format '%s'", in);
    else
      puts((const char *)text.data);
    tg_buf_cleanup(&text);
  }
  tg_buf_cleanup(&raw);
  return status;
}
