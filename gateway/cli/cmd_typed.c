/* `tollgate hash-typed-data`: EIP-712 digests, hashStruct, typeHash and encodeType of typed-data JSON. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "tollgate/eip712.h"

enum mode { M_DIGEST, M_STRUCT, M_TYPE_HASH, M_ENCODE_TYPE, M_DOMAIN };

int cmd_hash_typed_data(int argc, char **argv) {
  const char *cmd = argv[0], *path = NULL, *type = NULL;
  enum mode mode = M_DIGEST;
  for (int i = 1; i < argc; i++) {
    int missing = 0;
    const char *v;
    if ((v = cli_opt(argc, argv, &i, "--struct", &missing)) != NULL) {
      mode = M_STRUCT, type = v;
    } else if ((v = cli_opt(argc, argv, &i, "--type-hash", &missing)) != NULL) {
      mode = M_TYPE_HASH, type = v;
    } else if ((v = cli_opt(argc, argv, &i, "--encode-type", &missing)) != NULL) {
      mode = M_ENCODE_TYPE, type = v;
    } else if (missing) {
      return cli_fail(cmd, "option %s needs a type name", argv[i]);
    } else if (strcmp(argv[i], "--domain-separator") == 0) {
      mode = M_DOMAIN;
    } else if (argv[i][0] == '-' && argv[i][1] != 0) {
      return cli_fail(cmd, "unknown option '%s'", argv[i]);
    } else if (path) {
      return cli_usage(cmd);
    } else {
      path = argv[i];
    }
  }
  if (!path) return cli_usage(cmd);
  const char *name = strcmp(path, "-") == 0 ? "<stdin>" : path;
  tg_buf in;
  int rc = cli_read_file(path, &in);
  if (rc) return cli_fail_err(cmd, rc, "cannot read %s", name);
  tg_hash h;
  char where[TG_EIP712_WHERE_MAX] = "";
  tg_eip712_types *types = NULL;
  const char *json = (const char *)in.data;
  switch (mode) {
  case M_DIGEST:
    rc = tg_eip712_hashes_json_where(&h, NULL, NULL, where, json, in.len);
    break;
  case M_DOMAIN:
    rc = tg_eip712_hashes_json_where(NULL, &h, NULL, where, json, in.len);
    break;
  case M_STRUCT:
    rc = tg_eip712_doc_hash_struct(&h, json, in.len, type);
    break;
  case M_TYPE_HASH:
  case M_ENCODE_TYPE:
    rc = tg_eip712_types_parse(&types, json, in.len);
    if (rc) break;
    if (mode == M_TYPE_HASH) {
      rc = tg_eip712_type_hash(&h, types, type);
    } else {
      tg_buf s;
      tg_buf_init(&s, TG_BUF_DEFAULT_MAX);
      rc = tg_eip712_encode_type(&s, types, type);
      if (!rc) printf("%.*s\n", (int)s.len, (const char *)s.data);
      tg_buf_cleanup(&s);
    }
    break;
  }
  tg_eip712_types_free(types);
  tg_buf_cleanup(&in);
  if (rc == TG_ENOTFOUND)
    return cli_fail(cmd, "%s: --struct takes EIP712Domain or the primary type, not '%s'", name,
                    type);
  if (rc == TG_ETYPED_DATA_TYPE && type)
    return cli_fail_err(cmd, rc, "%s: type '%s' (or one it references)", name, type);
  if (rc && where[0]) return cli_fail_err(cmd, rc, "%s: at %s", name, where);
  if (rc) return cli_fail_err(cmd, rc, "%s is not valid EIP-712 typed data", name);
  if (mode != M_ENCODE_TYPE) cli_print_hex(h.b, 32);
  return 0;
}
