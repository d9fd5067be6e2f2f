/* Contract deployment: reads forge artifacts, deploys the three contracts through the transaction manager, and reads/writes the deployment file. */
#include "tollgate/deploy.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "tollgate/abi.h"
#include "tollgate/address.h"
#include "tollgate/error.h"
#include "tollgate/hex.h"
#include "tollgate/keccak.h"
#include "tollgate/txm.h"

static const char *const contract_names[TG_CONTRACT_COUNT] = {"TestUSDC", "TollgateChannels",
                                                              "TollgatePasses"};

const char *tg_contract_name(tg_contract_id id) {
  return (unsigned)id < TG_CONTRACT_COUNT ? contract_names[id] : "?";
}

void tg_artifact_cleanup(tg_artifact *a) {
  if (!a) return;
  tg_buf_cleanup(&a->bytecode);
  memset(a, 0, sizeof *a);
}

/* Reads a whole file up to `max` bytes into a NUL-terminated heap string. */
static int slurp(const char *path, size_t max, char **out, size_t *len) {
  *out = NULL;
  *len = 0;
  FILE *f = fopen(path, "rb");
  if (!f) return errno == ENOENT ? TG_ENOTFOUND : TG_EIO;
  tg_buf b;
  tg_buf_init(&b, max);
  char chunk[65536];
  int rc = 0;
  size_t n;
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
    if ((rc = tg_buf_append(&b, chunk, n)) != 0) break;
  if (!rc && ferror(f)) rc = TG_EIO;
  fclose(f);
  if (!rc && (rc = tg_buf_append_byte(&b, 0)) == 0) b.len--;
  if (rc) {
    tg_buf_cleanup(&b);
    return rc;
  }
  *out = (char *)b.data;
  *len = b.len;
  return 0;
}

static int try_artifact(tg_artifact *out, const char *path) {
  char *text = NULL;
  size_t len = 0;
  int rc = slurp(path, TG_ARTIFACT_MAX_JSON, &text, &len);
  if (rc) return rc;
  json_error_t jerr;
  json_t *root = json_loadb(text, len, 0, &jerr);
  free(text);
  if (!root) return TG_EDEPLOY_ARTIFACT;
  rc = TG_EDEPLOY_ARTIFACT;
  json_t *abi = json_object_get(root, "abi");
  json_t *bc = json_object_get(root, "bytecode");
  if (json_is_object(bc)) bc = json_object_get(bc, "object");
  if (json_is_array(abi) && json_is_string(bc)) {
    char *dump = json_dumps(abi, JSON_COMPACT | JSON_SORT_KEYS);
    if (dump) {
      tg_keccak256(&out->abi_hash, dump, strlen(dump));
      free(dump);
      tg_buf_init(&out->bytecode, TG_ARTIFACT_MAX_JSON);
      const char *hex = json_string_value(bc);
      if (tg_hex_decode_buf(&out->bytecode, hex, strlen(hex), TG_HEX_PREFIX_OPTIONAL) == 0 &&
          out->bytecode.len > 0) {
        tg_keccak256(&out->code_hash, out->bytecode.data, out->bytecode.len);
        snprintf(out->path, sizeof out->path, "%s", path);
        rc = 0;
      } else {
        tg_buf_cleanup(&out->bytecode);
      }
    }
  }
  json_decref(root);
  return rc;
}

int tg_artifact_load(tg_artifact *out, const char *dir, tg_contract_id id) {
  memset(out, 0, sizeof *out);
  if ((unsigned)id >= TG_CONTRACT_COUNT) return TG_EINVAL;
  const char *name = contract_names[id];
  char path[512];
  const char *env = getenv("TG_ARTIFACTS");
  const char *dirs[2] = {dir, env && *env ? env : NULL};
  for (size_t i = 0; i < 2; i++) {
    if (!dirs[i]) continue;
    snprintf(path, sizeof path, "%s/%s.json", dirs[i], name);
    /* An explicit directory is authoritative: no fallback past it. */
    int rc = try_artifact(out, path);
    return rc == TG_ENOTFOUND ? TG_EDEPLOY_ARTIFACT : rc;
  }
  snprintf(path, sizeof path, "contracts/artifacts/%s.json", name);
  int rc = try_artifact(out, path);
  if (rc != TG_ENOTFOUND) return rc;
  snprintf(path, sizeof path, "contracts/out/%s.sol/%s.json", name, name);
  rc = try_artifact(out, path);
  return rc == TG_ENOTFOUND ? TG_EDEPLOY_ARTIFACT : rc;
}

/* ------------------------------------------------------------ the file */

static json_t *j_hex(const uint8_t *p, size_t n) {
  char buf[2 + 64 + 1];
  if (n > 32) return NULL;
  tg_hex_encode(buf, p, n, 1);
  return json_string(buf);
}

static json_t *j_addr(const tg_address *a) {
  char buf[TG_ADDRESS_HEX_LEN];
  tg_address_to_checksum(a, buf);
  return json_string(buf);
}

int tg_deployment_format(tg_buf *out, const tg_deployment *d) {
  json_t *root = json_object();
  json_t *cs = json_object();
  json_object_set_new(root, "version", json_integer(1));
  json_object_set_new(root, "chainId", json_integer((json_int_t)d->chain_id));
  json_object_set_new(root, "deployer", j_addr(&d->deployer));
  json_object_set_new(root, "deployBlock", json_integer((json_int_t)d->deploy_block));
  for (int i = 0; i < TG_CONTRACT_COUNT; i++) {
    const tg_deployed_contract *c = &d->c[i];
    json_t *o = json_object();
    json_object_set_new(o, "address", j_addr(&c->address));
    json_object_set_new(o, "txHash", j_hex(c->tx_hash.b, 32));
    json_object_set_new(o, "block", json_integer((json_int_t)c->block));
    json_object_set_new(o, "abiHash", j_hex(c->abi_hash.b, 32));
    json_object_set_new(o, "bytecodeHash", j_hex(c->code_hash.b, 32));
    json_object_set_new(cs, contract_names[i], o);
  }
  json_object_set_new(root, "contracts", cs);
  char *s = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  json_decref(root);
  if (!s) return TG_ENOMEM;
  int rc = tg_buf_append_str(out, s);
  if (!rc) rc = tg_buf_append_byte(out, '\n');
  free(s);
  return rc;
}

int tg_deployment_save(const tg_deployment *d, const char *path) {
  tg_buf b;
  tg_buf_init(&b, TG_DEPLOYMENT_MAX_JSON);
  int rc = tg_deployment_format(&b, d);
  if (rc) {
    tg_buf_cleanup(&b);
    return rc;
  }
  char tmp[1024];
  if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= sizeof tmp) {
    tg_buf_cleanup(&b);
    return TG_EINVAL;
  }
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  rc = fd < 0 ? TG_EIO : 0;
  size_t off = 0;
  while (!rc && off < b.len) {
    ssize_t w = write(fd, b.data + off, b.len - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) rc = TG_EIO;
    else off += (size_t)w;
  }
  if (!rc && fsync(fd) != 0) rc = TG_EIO;
  if (fd >= 0 && close(fd) != 0) rc = TG_EIO;
  if (!rc && rename(tmp, path) != 0) rc = TG_EIO;
  if (rc) unlink(tmp);
  tg_buf_cleanup(&b);
  return rc;
}

static int get_u64(json_t *o, const char *k, uint64_t *out) {
  json_t *v = json_object_get(o, k);
  if (!json_is_integer(v) || json_integer_value(v) < 0) return TG_EDEPLOY_FILE;
  *out = (uint64_t)json_integer_value(v);
  return 0;
}

static int get_addr(json_t *o, const char *k, tg_address *out) {
  json_t *v = json_object_get(o, k);
  if (!json_is_string(v)) return TG_EDEPLOY_FILE;
  return tg_address_parse(out, json_string_value(v), json_string_length(v)) ? TG_EDEPLOY_FILE : 0;
}

static int get_hash(json_t *o, const char *k, tg_hash *out) {
  json_t *v = json_object_get(o, k);
  if (!json_is_string(v)) return TG_EDEPLOY_FILE;
  const char *s = json_string_value(v);
  if (json_string_length(v) != 66 || s[0] != '0' || s[1] != 'x') return TG_EDEPLOY_FILE;
  return tg_hex_decode_exact(out->b, 32, s + 2, 64) ? TG_EDEPLOY_FILE : 0;
}

int tg_deployment_load(tg_deployment *out, const char *path) {
  memset(out, 0, sizeof *out);
  char *text = NULL;
  size_t len = 0;
  int rc = slurp(path, TG_DEPLOYMENT_MAX_JSON, &text, &len);
  if (rc) return rc == TG_ENOTFOUND ? rc : (rc == TG_ETOOBIG ? TG_EDEPLOY_FILE : rc);
  json_error_t jerr;
  json_t *root = json_loadb(text, len, 0, &jerr);
  free(text);
  if (!json_is_object(root)) {
    json_decref(root);
    return TG_EDEPLOY_FILE;
  }
  uint64_t version = 0;
  json_t *cs = json_object_get(root, "contracts");
  if ((rc = get_u64(root, "version", &version)) == 0 && version != 1) rc = TG_EDEPLOY_FILE;
  if (!rc) rc = get_u64(root, "chainId", &out->chain_id);
  if (!rc) rc = get_addr(root, "deployer", &out->deployer);
  if (!rc) rc = get_u64(root, "deployBlock", &out->deploy_block);
  if (!rc && !json_is_object(cs)) rc = TG_EDEPLOY_FILE;
  for (int i = 0; !rc && i < TG_CONTRACT_COUNT; i++) {
    json_t *o = json_object_get(cs, contract_names[i]);
    tg_deployed_contract *c = &out->c[i];
    if (!json_is_object(o)) rc = TG_EDEPLOY_FILE;
    if (!rc) rc = get_addr(o, "address", &c->address);
    if (!rc) rc = get_hash(o, "txHash", &c->tx_hash);
    if (!rc) rc = get_u64(o, "block", &c->block);
    if (!rc) rc = get_hash(o, "abiHash", &c->abi_hash);
    if (!rc) rc = get_hash(o, "bytecodeHash", &c->code_hash);
  }
  json_decref(root);
  if (rc) memset(out, 0, sizeof *out);
  return rc;
}

int tg_deployment_check(tg_rpc *rpc, const tg_deployment *d) {
  if (tg_rpc_chain_id(rpc) != d->chain_id) return TG_EDEPLOY_CHAIN;
  tg_buf code;
  tg_buf_init(&code, (size_t)1 << 20);
  int rc = 0;
  for (int i = 0; !rc && i < TG_CONTRACT_COUNT; i++) {
    tg_buf_reset(&code);
    rc = tg_eth_get_code(rpc, &code, &d->c[i].address, NULL);
    if (!rc && code.len == 0) rc = TG_EDEPLOY_NO_CODE;
  }
  tg_buf_cleanup(&code);
  return rc;
}

/* ------------------------------------------------------------ deploying */

typedef struct {
  int done;
  tg_txm_result res;
} deploy_wait;

static void on_deployed(void *arg, const tg_txm_result *res) {
  deploy_wait *w = arg;
  w->done = 1;
  w->res = *res;
}

/* Appends the ABI encoding of the constructor arguments. */
static int ctor_args(tg_buf *out, tg_contract_id id, const tg_address *owner, const char *uri) {
  const char *type = NULL;
  tg_abi_value v[4];
  size_t n = 0;
  if (id == TG_CONTRACT_USDC) {
    type = "(string,string,string,address)";
    v[0] = tg_abi_val_bytes("USD Coin", 8);
    v[1] = tg_abi_val_bytes("USDC", 4);
    v[2] = tg_abi_val_bytes("2", 1);
    v[3] = tg_abi_val_address(owner);
    n = 4;
  } else if (id == TG_CONTRACT_PASSES) {
    type = "(string,address)";
    v[0] = tg_abi_val_bytes(uri, strlen(uri));
    v[1] = tg_abi_val_address(owner);
    n = 2;
  } else {
    return 0;
  }
  tg_abi_sig *sig = NULL;
  int rc = tg_abi_sig_parse(&sig, type, strlen(type));
  if (rc) return rc;
  tg_abi_value args = tg_abi_val_list(v, n);
  rc = tg_abi_encode(out, sig->inputs, &args);
  tg_abi_sig_free(sig);
  return rc;
}

int tg_deploy_contracts(tg_deployment *out, tg_rpc *rpc, const tg_seckey *key,
                        const tg_deploy_opts *opts, char *why, size_t why_len) {
  memset(out, 0, sizeof *out);
  if (why && why_len) why[0] = '\0';
  tg_deploy_opts def = {0};
  if (!opts) opts = &def;
  tg_artifact art[TG_CONTRACT_COUNT];
  memset(art, 0, sizeof art);
  tg_buf init[TG_CONTRACT_COUNT];
  deploy_wait wait[TG_CONTRACT_COUNT];
  memset(wait, 0, sizeof wait);
  for (int i = 0; i < TG_CONTRACT_COUNT; i++) tg_buf_init(&init[i], TG_ARTIFACT_MAX_JSON);
  tg_txm *m = NULL;
  int rc = 0;
  tg_address deployer;
  if ((rc = tg_seckey_address(&deployer, key)) != 0) goto done;
  for (int i = 0; !rc && i < TG_CONTRACT_COUNT; i++) {
    rc = tg_artifact_load(&art[i], opts->artifacts_dir, (tg_contract_id)i);
    if (rc) {
      if (why) snprintf(why, why_len, "cannot read the %s artifact (run contracts/export-artifacts.sh or forge build)", contract_names[i]);
      goto done;
    }
    rc = tg_buf_append(&init[i], art[i].bytecode.data, art[i].bytecode.len);
    if (!rc) rc = ctor_args(&init[i], (tg_contract_id)i, &deployer,
                            opts->passes_uri ? opts->passes_uri : "");
  }
  if (rc) goto done;
  tg_txm_opts mo;
  tg_txm_opts_init(&mo);
  mo.rpc = rpc;
  mo.key = key;
  mo.journal_path = ":memory:";
  mo.confirmations = opts->confirmations ? opts->confirmations : 1;
  mo.poll_ms = 200;
  if ((rc = tg_txm_open(&m, &mo)) != 0) {
    if (why) snprintf(why, why_len, "cannot start the transaction manager: %s", tg_rpc_last_message(rpc));
    goto done;
  }
  for (int i = 0; !rc && i < TG_CONTRACT_COUNT; i++) {
    tg_txm_request req = {0};
    req.has_to = 0;
    req.data = init[i].data;
    req.data_len = init[i].len;
    rc = tg_txm_submit(m, &req, on_deployed, &wait[i], NULL);
    if (rc && why) snprintf(why, why_len, "cannot submit the %s creation", contract_names[i]);
  }
  if (rc) goto done;
  rc = tg_txm_run_until_idle(m, opts->timeout_ms ? opts->timeout_ms : 120000);
  if (rc) {
    if (why) snprintf(why, why_len, "creation transactions not confirmed in time");
    goto done;
  }
  out->chain_id = tg_rpc_chain_id(rpc);
  out->deployer = deployer;
  for (int i = 0; !rc && i < TG_CONTRACT_COUNT; i++) {
    const tg_txm_result *r = &wait[i].res;
    if (!wait[i].done || r->state != TG_TXM_CONFIRMED || r->status != 1) {
      rc = TG_EDEPLOY_FAILED;
      if (why) snprintf(why, why_len, "the %s creation %s", contract_names[i],
                        !wait[i].done ? "never finished" : r->err ? tg_strerror(r->err) : "reverted");
      break;
    }
    tg_eth_receipt rcpt;
    rc = tg_eth_get_receipt(rpc, &rcpt, &r->tx_hash);
    if (rc) break;
    if (!rcpt.has_contract_address || rcpt.status != 1) rc = TG_EDEPLOY_FAILED;
    tg_deployed_contract *c = &out->c[i];
    c->address = rcpt.contract_address;
    c->tx_hash = r->tx_hash;
    c->block = rcpt.block_number;
    c->abi_hash = art[i].abi_hash;
    c->code_hash = art[i].code_hash;
    tg_eth_receipt_cleanup(&rcpt);
    if (!out->deploy_block || c->block < out->deploy_block) out->deploy_block = c->block;
  }
  if (!rc) {
    rc = tg_deployment_check(rpc, out);
    if (rc && why) snprintf(why, why_len, "a deployed contract has no code");
  }
done:
  tg_txm_free(m);
  for (int i = 0; i < TG_CONTRACT_COUNT; i++) {
    tg_artifact_cleanup(&art[i]);
    tg_buf_cleanup(&init[i]);
  }
  if (rc) memset(out, 0, sizeof *out);
  return rc;
}
