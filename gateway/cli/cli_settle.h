/* Internal to the `tollgate` CLI: helpers shared by the deploy, settle and report commands. */
#ifndef TG_CLI_SETTLE_H
#define TG_CLI_SETTLE_H

#include "tollgate/rpc.h"
#include "tollgate/secp.h"

/* Key sources, as given on the command line (private_key points into argv and is wiped). */
typedef struct {
  const char *keystore;
  const char *password_file;
  char *private_key;
} cli_key_src;

/*
 * The signing key: --private-key, or --keystore with --password-file / ETH_PASSWORD, or
 * anvil's first default key when neither is given and `chain_id` is 31337 (*is_default
 * set). Prints the reason and returns non-zero on failure.
 */
int cli_key_load(const char *cmd, cli_key_src *src, uint64_t chain_id, tg_seckey **out,
                 int *is_default);

/* A JSON-RPC client for one URL (prints the reason and returns non-zero on failure). */
int cli_rpc_open(const char *cmd, const char *url, tg_rpc **out);

#endif
