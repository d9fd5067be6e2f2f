/* Deployment against anvil: the library call, the deployment file, and `tollgate deploy` refusing a second deploy. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tg_proc.h"
#include "tg_test.h"
#include "tollgate/abi.h"
#include "tollgate/address.h"
#include "tollgate/deploy.h"
#include "tollgate/rpc.h"
#include "tollgate/secp.h"

static char g_dir[128];

static const char *tollgate_bin(void) {
  static char path[256];
  const char *b = getenv("BUILD");
  snprintf(path, sizeof path, "%s/%s/tollgate", tgt_root(), b && *b ? b : "build");
  return path;
}

/* Runs `tollgate deploy --rpc-url URL --out OUT EXTRA`, stderr to g_dir/err.txt; its exit status. */
static int deploy_cli(const char *url, const char *out, const char *extra) {
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "%s deploy --rpc-url %s --out %s %s >/dev/null 2>%s/err.txt",
           tollgate_bin(), url, out, extra, g_dir);
  int st = system(cmd);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* 1 when the artifacts can be read; else the test is skipped (contracts not built yet). */
static int have_artifacts(void) {
  tg_artifact art;
  int rc = tg_artifact_load(&art, NULL, TG_CONTRACT_PASSES);
  tg_artifact_cleanup(&art);
  if (rc == TG_EDEPLOY_ARTIFACT)
    tgt_skip("contract artifacts missing: run contracts/export-artifacts.sh (or set TG_ARTIFACTS)");
  return rc == 0;
}

static tg_rpc *rpc_for(const char *url) {
  tg_rpc_opts o;
  tg_rpc_opts_init(&o);
  const char *urls[1] = {url};
  o.urls = urls;
  o.n_urls = 1;
  tg_rpc *r = NULL;
  return tg_rpc_new(&r, &o, NULL, 0) == 0 ? r : NULL;
}

static void test_deploy_library(void) {
  if (!have_artifacts()) return;
  tgt_anvil *a = tgt_anvil_start(NULL);
  CHECK(a != NULL);
  if (!a) return;
  tg_rpc *rpc = rpc_for(a->url);
  tg_seckey *key = tg_seckey_new();
  CHECK_OK(tg_seckey_set_hex(key, tgt_anvil_key(0), strlen(tgt_anvil_key(0))));
  tg_deployment d, back;
  char why[256] = "";
  CHECK_OK(tg_deploy_contracts(&d, rpc, key, NULL, why, sizeof why));
  CHECK_INT(d.chain_id, 31337);
  tg_address dep;
  CHECK_OK(tg_address_parse(&dep, tgt_anvil_address(0), strlen(tgt_anvil_address(0))));
  CHECK(tg_address_eq(&d.deployer, &dep));
  for (int i = 0; i < TG_CONTRACT_COUNT; i++) {
    CHECK(!tg_address_is_zero(&d.c[i].address));
    CHECK(d.c[i].block >= d.deploy_block && d.deploy_block > 0);
    tg_artifact art;
    CHECK_OK(tg_artifact_load(&art, NULL, (tg_contract_id)i));
    CHECK_MEM(art.code_hash.b, d.c[i].code_hash.b, 32);
    CHECK_MEM(art.abi_hash.b, d.c[i].abi_hash.b, 32);
    tg_artifact_cleanup(&art);
  }
  CHECK_OK(tg_deployment_check(rpc, &d));
  char path[256];
  snprintf(path, sizeof path, "%s/lib.json", g_dir);
  CHECK_OK(tg_deployment_save(&d, path));
  CHECK_OK(tg_deployment_load(&back, path));
  CHECK_MEM(&back, &d, sizeof d);
  /* TestUSDC answers as "USD Coin" with 6 decimals: read decimals() */
  uint8_t sel[4];
  CHECK_OK(tg_abi_selector_str(sel, "decimals()", 10));
  tg_eth_msg m = {0};
  m.to = &d.c[TG_CONTRACT_USDC].address;
  m.data = sel;
  m.data_len = 4;
  tg_buf ret;
  tg_buf_init(&ret, 4096);
  CHECK_OK(tg_eth_call(rpc, &ret, NULL, &m, NULL));
  CHECK(ret.len == 32 && ret.data[31] == 6);
  tg_buf_reset(&ret);
  CHECK_OK(tg_abi_selector_str(sel, "name()", 6));
  CHECK_OK(tg_eth_call(rpc, &ret, NULL, &m, NULL));
  CHECK(ret.len == 96 && ret.data[63] == 8 && !memcmp(ret.data + 64, "USD Coin", 8));
  tg_buf_cleanup(&ret);
  /* malformed and missing files */
  CHECK_ERR(tg_deployment_load(&back, "/nonexistent/deployment.json"), TG_ENOTFOUND);
  FILE *f = fopen(path, "w");
  fputs("{\"version\":1,\"chainId\":\"x\"}", f);
  fclose(f);
  CHECK_ERR(tg_deployment_load(&back, path), TG_EDEPLOY_FILE);
  /* a fresh chain has no code at those addresses */
  CHECK_OK(tgt_anvil_restart(a));
  tg_rpc_free(rpc);
  rpc = rpc_for(a->url);
  CHECK_ERR(tg_deployment_check(rpc, &d), TG_EDEPLOY_NO_CODE);
  /* an artifact directory without artifacts */
  tg_artifact art;
  CHECK_ERR(tg_artifact_load(&art, g_dir, TG_CONTRACT_CHANNELS), TG_EDEPLOY_ARTIFACT);
  tg_seckey_free(key);
  tg_rpc_free(rpc);
  tgt_anvil_free(a);
}

static void test_deploy_cli_refuses_second(void) {
  if (!have_artifacts()) return;
  tgt_anvil *a = tgt_anvil_start(NULL);
  CHECK(a != NULL);
  if (!a) return;
  char out[256];
  snprintf(out, sizeof out, "%s/cli.json", g_dir);
  CHECK_INT(deploy_cli(a->url, out, ""), 0);
  tg_deployment d1, d2;
  CHECK_OK(tg_deployment_load(&d1, out));
  /* a second deploy on the same chain is refused while the contracts have code */
  CHECK_INT(deploy_cli(a->url, out, ""), 1);
  char errp[256];
  snprintf(errp, sizeof errp, "%s/err.txt", g_dir);
  size_t n = 0;
  char *err = tgt_read_file(errp, &n);
  CHECK(err && strstr(err, "already deployed") && strstr(err, "--force"));
  free(err);
  CHECK_OK(tg_deployment_load(&d2, out));
  CHECK_MEM(&d1, &d2, sizeof d1); /* the file was left alone */
  /* --force deploys again: new addresses */
  CHECK_INT(deploy_cli(a->url, out, "--force"), 0);
  CHECK_OK(tg_deployment_load(&d2, out));
  CHECK(!tg_address_eq(&d1.c[TG_CONTRACT_CHANNELS].address, &d2.c[TG_CONTRACT_CHANNELS].address));
  /* a restarted (empty) chain: the old file no longer blocks a deploy */
  CHECK_OK(tgt_anvil_restart(a));
  CHECK_INT(deploy_cli(a->url, out, ""), 0);
  /* a bad key is refused, naming the option */
  char other[256];
  snprintf(other, sizeof other, "%s/other.json", g_dir);
  CHECK_INT(deploy_cli(a->url, other, "--private-key 0x12"), 1);
  err = tgt_read_file(errp, &n);
  CHECK(err && strstr(err, "--private-key"));
  free(err);
  tgt_anvil_free(a);
}

int main(void) {
  if (tg_secp_init() != 0) return 1;
  snprintf(g_dir, sizeof g_dir, "/tmp/tg_deploy_%ld", (long)getpid());
  mkdir(g_dir, 0700);
  RUN(test_deploy_library);
  RUN(test_deploy_cli_refuses_second);
  char cmd[200];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
  if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", g_dir);
  return tgt_done();
}
