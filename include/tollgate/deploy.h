/* Contract deployment: compiled artifacts, deploying TestUSDC, TollgateChannels and TollgatePasses, and the deployment file. */
#ifndef TOLLGATE_DEPLOY_H
#define TOLLGATE_DEPLOY_H

#include <stddef.h>
#include <stdint.h>

#include "tollgate/rpc.h"
#include "tollgate/secp.h"
#include "tollgate/types.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Artifacts are read at run time from a directory (not embedded): the
 * contracts change more often than the C code, and a stale embedded copy
 * would deploy old code silently. The deployment file records the keccak of
 * each artifact's ABI and creation bytecode, so a daemon can tell that the
 * deployed contracts are the ones its build expects.
 *
 * Where artifacts come from, first hit wins: the `dir` argument; $TG_ARTIFACTS;
 * contracts/artifacts/<Name>.json; contracts/out/<Name>.sol/<Name>.json (forge's
 * own output). Both the exported format and forge's are read: a JSON object
 * with "abi" (array) and "bytecode" (either "0x..." or {"object": "0x..."}).
 */

typedef enum {
  TG_CONTRACT_USDC = 0,     /* TestUSDC ("USD Coin", version "2", 6 decimals) */
  TG_CONTRACT_CHANNELS = 1, /* TollgateChannels */
  TG_CONTRACT_PASSES = 2,   /* TollgatePasses */
  TG_CONTRACT_COUNT = 3
} tg_contract_id;

/* "TestUSDC", "TollgateChannels", "TollgatePasses". */
const char *tg_contract_name(tg_contract_id id);

/* Caps: an artifact file and a deployment file. */
#define TG_ARTIFACT_MAX_JSON ((size_t)16 << 20)
#define TG_DEPLOYMENT_MAX_JSON ((size_t)64 << 10)

/* A compiled contract: creation bytecode (owned) and the two hashes the deployment records. */
typedef struct {
  tg_buf bytecode;
  tg_hash abi_hash;  /* keccak256 of the "abi" array dumped compact with sorted keys */
  tg_hash code_hash; /* keccak256 of the creation bytecode */
  char path[512];    /* where it was read from */
} tg_artifact;

/* Reads one artifact (see above for the search order; dir may be NULL). TG_EDEPLOY_ARTIFACT. */
TG_WARN_UNUSED_RESULT int tg_artifact_load(tg_artifact *out, const char *dir, tg_contract_id id);
void tg_artifact_cleanup(tg_artifact *a);

typedef struct {
  tg_address address;
  tg_hash tx_hash;
  uint64_t block;
  tg_hash abi_hash;
  tg_hash code_hash;
} tg_deployed_contract;

typedef struct {
  uint64_t chain_id;
  tg_address deployer;
  uint64_t deploy_block; /* the first block holding one of the contracts */
  tg_deployed_contract c[TG_CONTRACT_COUNT];
} tg_deployment;

/*
 * Reads a deployment file (JSON, see docs/SETTLEMENT.md). TG_ENOTFOUND when
 * absent, TG_EDEPLOY_FILE when malformed.
 */
TG_WARN_UNUSED_RESULT int tg_deployment_load(tg_deployment *out, const char *path);
/* Writes it atomically (temporary file, fsync, rename). TG_EIO. */
TG_WARN_UNUSED_RESULT int tg_deployment_save(const tg_deployment *d, const char *path);
/* The same JSON into a buffer (appends). */
TG_WARN_UNUSED_RESULT int tg_deployment_format(tg_buf *out, const tg_deployment *d);

/*
 * Checks that every contract of `d` has code on the chain `rpc` talks to:
 * 0, TG_EDEPLOY_CHAIN (other chain id), TG_EDEPLOY_NO_CODE, or an RPC error.
 */
TG_WARN_UNUSED_RESULT int tg_deployment_check(tg_rpc *rpc, const tg_deployment *d);

typedef struct {
  const char *artifacts_dir; /* NULL: the search order above */
  const char *passes_uri;    /* TollgatePasses ERC-1155 URI; NULL = "" */
  unsigned confirmations;    /* 0 = 1 */
  unsigned timeout_ms;       /* 0 = 120000 */
} tg_deploy_opts;

/*
 * Deploys the three contracts from `key` (blocking; the transactions go out
 * together and are followed to their receipts) and fills *out. The deployer
 * owns TestUSDC and TollgatePasses. Errors: TG_EDEPLOY_ARTIFACT,
 * TG_EDEPLOY_FAILED (a creation reverted or left no code), RPC and
 * transaction-manager errors. `why` (may be NULL) gets a one-line reason.
 */
TG_WARN_UNUSED_RESULT int tg_deploy_contracts(tg_deployment *out, tg_rpc *rpc,
                                              const tg_seckey *key, const tg_deploy_opts *opts,
                                              char *why, size_t why_len);

#ifdef __cplusplus
}
#endif
#endif
