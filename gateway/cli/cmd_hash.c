/* `tollgate keccak`: hashing commands. */
#include <string.h>

#include "cli/cli.h"
#include "tollgate/hex.h"
#include "tollgate/keccak.h"

int cmd_keccak(int argc, char **argv) {
  if (argc != 2) return cli_usage(argv[0]);
  const char *in = argv[1];
  size_t len = strlen(in);
  tg_hash h;
  if (len >= 2 && in[0] == '0' && (in[1] == 'x' || in[1] == 'X')) {
    /* As cast: a 0x argument is bytes. */
    tg_buf b;
    tg_buf_init(&b, len);
    int rc = tg_hex_decode_buf(&b, in, len, TG_HEX_PREFIX_REQUIRED);
    if (rc) {
      tg_buf_cleanup(&b);
      return cli_fail_err(argv[0], rc, "argument '%s' starts with 0x but is not hex", in);
    }
    tg_keccak256(&h, b.data, b.len);
    tg_buf_cleanup(&b);
  } else {
    tg_keccak256(&h, in, len);
  }
  cli_print_hex(h.b, 32);
  return 0;
}
