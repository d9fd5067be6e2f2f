/* `tollgate deploy`: deploys TestUSDC, TollgateChannels and TollgatePasses and writes the deployment file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "cli/cli.h"
#include "cli/cli_settle.h"
#include "cli/commands.h"
#include "tollgate/address.h"
#include "tollgate/deploy.h"
#include "tollgate/error.h"
#include "tollgate/keystore.h"

/* anvil's first dev account (mnemonic "test test ... junk"): public knowledge, local chains only. */
#define ANVIL_KEY0 "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
#define ANVIL_CHAIN_ID 31337u

int cli_rpc_open(const char *cmd, const char *url, tg_rpc **out) {
  *out = NULL;
  tg_rpc_opts o;
  tg_rpc_opts_init(&o);
  const char *urls[1] = {url};
  o.urls = urls;
  o.n_urls = 1;
  o.timeout_ms = 30000;
  char why[512] = "";
  int rc = tg_rpc_new(out, &o, why, sizeof why);
  if (rc) return cli_fail_err(cmd, rc, "--rpc-url %s: %s", url, why[0] ? why : "unreachable");
  return 0;
}

int cli_key_load(const char *cmd, cli_key_src *src, uint64_t chain_id, tg_seckey **out,
                 int *is_default) {
  *out = NULL;
  if (is_default) *is_default = 0;
  if (src->private_key && src->keystore)
    return cli_fail(cmd, "give only one of --private-key and --keystore");
  tg_seckey *k = tg_seckey_new();
  if (!k) return cli_fail(cmd, "cannot allocate guarded key memory");
  int rc;
  if (!src->private_key && !src->keystore) {
    if (chain_id != ANVIL_CHAIN_ID) {
      tg_seckey_free(k);
      return cli_fail(cmd, "give --keystore or --private-key (the anvil default key is only "
                           "used on chain 31337)");
    }
    rc = tg_seckey_set_hex(k, ANVIL_KEY0, strlen(ANVIL_KEY0));
    if (rc) {
      tg_seckey_free(k);
      return cli_fail_err(cmd, rc, "anvil default key");
    }
    if (is_default) *is_default = 1;
    *out = k;
    return 0;
  }
  if (src->private_key) {
    size_t n = strlen(src->private_key);
    rc = tg_seckey_set_hex(k, src->private_key, n);
    sodium_memzero(src->private_key, n);
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
  if (src->password_file) {
    FILE *f = fopen(src->password_file, "rb");
    if (!f) {
      st = cli_fail(cmd, "cannot read --password-file '%s'", src->password_file);
    } else {
      n = fread(pw, 1, PW_MAX - 1, f);
      fclose(f);
      char *nl = memchr(pw, '\n', n);
      if (nl) n = (size_t)(nl - pw);
      while (n && pw[n - 1] == '\r') n--;
    }
  } else if (env) {
    n = strlen(env);
    if (n >= PW_MAX) st = cli_fail(cmd, "ETH_PASSWORD is too long");
    else memcpy(pw, env, n);
  } else {
    st = cli_fail(cmd, "--keystore needs --password-file or ETH_PASSWORD");
  }
  if (!st) {
    rc = tg_keystore_decrypt_file(k, src->keystore, pw, n, NULL);
    if (rc) st = cli_fail_err(cmd, rc, "cannot decrypt --keystore '%s'", src->keystore);
  }
  sodium_memzero(pw, PW_MAX);
  sodium_free(pw);
  if (st) {
    tg_seckey_free(k);
    return st;
  }
  *out = k;
  return 0;
}

int cmd_deploy(int argc, char **argv) {
  const char *cmd = argv[0];
  const char *url = NULL, *out_path = "deployment.json", *artifacts = NULL, *uri = NULL;
  const char *conf = NULL;
  cli_key_src ks = {0};
  int force = 0;
  for (int i = 1; i < argc; i++) {
    int missing = 0;
    const char *v;
    if ((v = cli_opt(argc, argv, &i, "--rpc-url", &missing)) != NULL) url = v;
    else if ((v = cli_opt(argc, argv, &i, "--keystore", &missing)) != NULL) ks.keystore = v;
    else if ((v = cli_opt(argc, argv, &i, "--password-file", &missing)) != NULL) ks.password_file = v;
    else if ((v = cli_opt(argc, argv, &i, "--private-key", &missing)) != NULL) ks.private_key = (char *)v;
    else if ((v = cli_opt(argc, argv, &i, "--out", &missing)) != NULL) out_path = v;
    else if ((v = cli_opt(argc, argv, &i, "--artifacts", &missing)) != NULL) artifacts = v;
    else if ((v = cli_opt(argc, argv, &i, "--passes-uri", &missing)) != NULL) uri = v;
    else if ((v = cli_opt(argc, argv, &i, "--confirmations", &missing)) != NULL) conf = v;
    else if (missing) return cli_fail(cmd, "option %s needs a value", argv[i]);
    else if (!strcmp(argv[i], "--force")) force = 1;
    else return cli_fail(cmd, "unknown argument '%s' (see tollgate help deploy)", argv[i]);
  }
  if (!url) return cli_fail(cmd, "--rpc-url is required");
  unsigned confirmations = 1;
  if (conf) {
    char *end = NULL;
    unsigned long c = strtoul(conf, &end, 10);
    if (!*conf || *end || c < 1 || c > 64)
      return cli_fail(cmd, "--confirmations '%s' is not a number in 1..64", conf);
    confirmations = (unsigned)c;
  }
  tg_rpc *rpc = NULL;
  if (cli_rpc_open(cmd, url, &rpc)) return 1;
  int st = 0;
  tg_seckey *key = NULL;
  tg_deployment prev;
  int rc = tg_deployment_load(&prev, out_path);
  if (rc == 0) {
    if (prev.chain_id != tg_rpc_chain_id(rpc)) {
      if (!force) {
        st = cli_fail(cmd, "%s describes chain %llu, not this chain (%llu); use another --out "
                           "or --force", out_path, (unsigned long long)prev.chain_id,
                      (unsigned long long)tg_rpc_chain_id(rpc));
        goto done;
      }
    } else if ((rc = tg_deployment_check(rpc, &prev)) == 0) {
      if (!force) {
        char a[TG_ADDRESS_HEX_LEN];
        tg_address_to_checksum(&prev.c[TG_CONTRACT_CHANNELS].address, a);
        st = cli_fail(cmd, "already deployed on chain %llu (TollgateChannels at %s, see %s); "
                           "use --force to deploy again",
                      (unsigned long long)prev.chain_id, a, out_path);
        goto done;
      }
    } else if (rc != TG_EDEPLOY_NO_CODE) {
      st = cli_fail_err(cmd, rc, "cannot check the contracts of %s", out_path);
      goto done;
    }
  } else if (rc != TG_ENOTFOUND && !force) {
    st = cli_fail_err(cmd, rc, "cannot read %s (use --force to overwrite it)", out_path);
    goto done;
  }
  if ((st = cli_key_load(cmd, &ks, tg_rpc_chain_id(rpc), &key, NULL)) != 0) goto done;
  tg_deploy_opts o = {.artifacts_dir = artifacts, .passes_uri = uri, .confirmations = confirmations};
  tg_deployment d;
  char why[512] = "";
  rc = tg_deploy_contracts(&d, rpc, key, &o, why, sizeof why);
  if (rc) {
    st = cli_fail_err(cmd, rc, "%s", why[0] ? why : "deployment failed");
    goto done;
  }
  rc = tg_deployment_save(&d, out_path);
  if (rc) {
    st = cli_fail_err(cmd, rc, "cannot write %s", out_path);
    goto done;
  }
  for (int i = 0; i < TG_CONTRACT_COUNT; i++) {
    char a[TG_ADDRESS_HEX_LEN];
    tg_address_to_checksum(&d.c[i].address, a);
    printf("%s %s\n", tg_contract_name((tg_contract_id)i), a);
  }
done:
  tg_seckey_free(key);
  tg_rpc_free(rpc);
  return st;
}
