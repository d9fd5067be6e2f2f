/* tollgate login: Sign-In with Ethereum against a gateway, printing the session token for an access pass. */
#include <curl/curl.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli.h"
#include "cli/commands.h"
#include "tollgate/address.h"
#include "tollgate/eip191.h"
#include "tollgate/error.h"
#include "tollgate/hex.h"
#include "tollgate/keystore.h"
#include "tollgate/secp.h"
#include "tollgate/siwe.h"

#define LOGIN_REPLY_MAX (64 * 1024)

static size_t on_data(char *p, size_t sz, size_t n, void *arg) {
  tg_buf *b = arg;
  return tg_buf_append(b, p, sz * n) == 0 ? sz * n : 0;
}

/* POSTs `body` (JSON, may be NULL) to url; the answer's status and parsed JSON. */
static int post_json(const char *cmd, const char *url, const char *body, long *status, json_t **out) {
  *out = NULL;
  CURL *c = curl_easy_init();
  if (!c) return cli_fail(cmd, "libcurl initialisation failed");
  tg_buf b;
  tg_buf_init(&b, LOGIN_REPLY_MAX);
  struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_POST, 1L);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, body ? body : "{}");
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  CURLcode cr = curl_easy_perform(c);
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
  curl_slist_free_all(h);
  curl_easy_cleanup(c);
  if (cr != CURLE_OK) {
    tg_buf_cleanup(&b);
    return cli_fail(cmd, "%s: %s", url, curl_easy_strerror(cr));
  }
  *out = b.data ? json_loadb((const char *)b.data, b.len, 0, NULL) : NULL;
  tg_buf_cleanup(&b);
  if (!json_is_object(*out)) {
    json_decref(*out);
    *out = NULL;
    return cli_fail(cmd, "%s answered %ld without a JSON object (is this a tollgate gateway with access passes?)",
                    url, *status);
  }
  return 0;
}

static int load_key(const char *cmd, tg_seckey *key, char *private_key, const char *keystore,
                    const char *password_file) {
  int rc;
  if (private_key) {
    rc = tg_seckey_set_hex(key, private_key, strlen(private_key));
    sodium_memzero(private_key, strlen(private_key));
    return rc ? cli_fail_err(cmd, rc, "--private-key") : 0;
  }
  if (!keystore) return cli_fail(cmd, "a key is required: --private-key or --keystore");
  tg_buf pw;
  tg_buf_init(&pw, 4096);
  const char *env = getenv("TOLLGATE_PASSWORD");
  if (password_file) {
    rc = cli_read_file(password_file, &pw);
    if (rc) {
      tg_buf_cleanup(&pw);
      return cli_fail_err(cmd, rc, "--password-file %s", password_file);
    }
    while (pw.len && (pw.data[pw.len - 1] == '\n' || pw.data[pw.len - 1] == '\r')) pw.len--;
  } else if (env) {
    if ((rc = tg_buf_append_str(&pw, env))) {
      tg_buf_cleanup(&pw);
      return cli_fail_err(cmd, rc, "TOLLGATE_PASSWORD");
    }
  } else {
    tg_buf_cleanup(&pw);
    return cli_fail(cmd, "--keystore needs --password-file or TOLLGATE_PASSWORD");
  }
  tg_keystore_limits lim;
  tg_keystore_limits_default(&lim);
  rc = tg_keystore_decrypt_file(key, keystore, pw.data ? (const char *)pw.data : "", pw.len, &lim);
  if (pw.data) sodium_memzero(pw.data, pw.cap);
  tg_buf_cleanup(&pw);
  return rc ? cli_fail_err(cmd, rc, "--keystore %s", keystore) : 0;
}

int cmd_login(int argc, char **argv) {
  const char *cmd = argv[0];
  char *private_key = NULL;
  const char *keystore = NULL, *password_file = NULL, *url = NULL;
  const char *statement = "Sign in to use your tollgate access pass.";
  int as_json = 0;
  for (int i = 1; i < argc; i++) {
    int missing = 0;
    const char *v;
    if ((v = cli_opt(argc, argv, &i, "--private-key", &missing))) private_key = (char *)v;
    else if (!missing && (v = cli_opt(argc, argv, &i, "--keystore", &missing))) keystore = v;
    else if (!missing && (v = cli_opt(argc, argv, &i, "--password-file", &missing))) password_file = v;
    else if (!missing && (v = cli_opt(argc, argv, &i, "--statement", &missing))) statement = v;
    else if (missing) return cli_fail(cmd, "%s needs a value", argv[i]);
    else if (strcmp(argv[i], "--json") == 0) as_json = 1;
    else if (argv[i][0] == '-') return cli_usage(cmd);
    else if (!url) url = argv[i];
    else return cli_usage(cmd);
  }
  if (!url) return cli_usage(cmd);
  if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
    return cli_fail(cmd, "URL \"%s\": want the gateway's http:// or https:// base URL", url);
  if (private_key && keystore) return cli_fail(cmd, "give only one of --private-key and --keystore");
  int rc = tg_secp_init();
  if (rc) return cli_fail_err(cmd, rc, "secp256k1");
  if (sodium_init() < 0) return cli_fail(cmd, "libsodium initialisation failed");
  tg_seckey *key = tg_seckey_new();
  if (!key) return cli_fail(cmd, "out of memory");
  int st = load_key(cmd, key, private_key, keystore, password_file);
  if (st) {
    tg_seckey_free(key);
    return st;
  }
  curl_global_init(CURL_GLOBAL_DEFAULT);
  char base[2048];
  size_t ul = strlen(url);
  snprintf(base, sizeof base, "%.*s", (int)(ul && url[ul - 1] == '/' ? ul - 1 : ul), url);
  char target[2100];
  long status = 0;
  json_t *nonce = NULL, *answer = NULL;
  tg_buf text;
  tg_buf_init(&text, TG_SIWE_MESSAGE_MAX);
  st = 1;
  /* 1. a nonce, with the domain and URI the gateway expects */
  snprintf(target, sizeof target, "%s/auth/nonce", base);
  if (post_json(cmd, target, NULL, &status, &nonce)) goto out;
  const char *n = json_string_value(json_object_get(nonce, "nonce"));
  const char *domain = json_string_value(json_object_get(nonce, "domain"));
  const char *uri = json_string_value(json_object_get(nonce, "uri"));
  json_int_t chain = json_integer_value(json_object_get(nonce, "chainId"));
  if (status != 200 || !n || !domain || !uri || chain <= 0) {
    const char *m = json_string_value(json_object_get(nonce, "message"));
    cli_fail(cmd, "%s answered %ld: %s", target, status, m ? m : "no nonce");
    goto out;
  }
  /* 2. the EIP-4361 message, signed with EIP-191 */
  tg_siwe_message m;
  memset(&m, 0, sizeof m);
  m.domain = (tg_str){domain, strlen(domain)};
  if ((rc = tg_seckey_address(&m.address, key))) {
    cli_fail_err(cmd, rc, "key");
    goto out;
  }
  m.has_statement = statement && *statement;
  m.statement = (tg_str){statement ? statement : "", statement ? strlen(statement) : 0};
  char siwe_uri[1024];
  snprintf(siwe_uri, sizeof siwe_uri, "%sauth/siwe", uri);
  m.uri = (tg_str){siwe_uri, strlen(siwe_uri)};
  m.chain_id = (uint64_t)chain;
  m.nonce = (tg_str){n, strlen(n)};
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  m.issued_at = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
  if ((rc = tg_siwe_format(&text, &m))) {
    cli_fail_err(cmd, rc, "building the sign-in message");
    goto out;
  }
  tg_siwe_message check;
  if ((rc = tg_siwe_parse(&check, (const char *)text.data, text.len))) {
    cli_fail_err(cmd, rc, "the gateway's domain \"%s\" or URI \"%s\" makes no valid sign-in message", domain, uri);
    goto out;
  }
  tg_sig sig;
  if ((rc = tg_eip191_sign(&sig, key, text.data, text.len))) {
    cli_fail_err(cmd, rc, "signing");
    goto out;
  }
  char sighex[2 * 65 + 3];
  tg_hex_encode(sighex, sig.b, 65, 1);
  json_t *req = json_pack("{s:s%, s:s}", "message", (const char *)text.data, text.len, "signature", sighex);
  char *body = json_dumps(req, JSON_COMPACT);
  json_decref(req);
  /* 3. the session */
  snprintf(target, sizeof target, "%s/auth/siwe", base);
  rc = post_json(cmd, target, body, &status, &answer);
  free(body);
  if (rc) goto out;
  const char *token = json_string_value(json_object_get(answer, "token"));
  if (status != 200 || !token) {
    const char *e = json_string_value(json_object_get(answer, "error"));
    const char *msg = json_string_value(json_object_get(answer, "message"));
    cli_fail(cmd, "sign-in refused (%ld %s): %s", status, e ? e : "", msg ? msg : "no reason given");
    goto out;
  }
  if (as_json) {
    char *t = json_dumps(answer, JSON_COMPACT);
    printf("%s\n", t ? t : "{}");
    free(t);
  } else {
    printf("%s\n", token);
    const char *exp = json_string_value(json_object_get(answer, "expiresAt"));
    const char *addr = json_string_value(json_object_get(answer, "address"));
    fprintf(stderr, "signed in as %s; the token works as `Authorization: Bearer` (an OpenAI SDK's apiKey) until %s\n",
            addr ? addr : "?", exp ? exp : "?");
  }
  st = 0;
out:
  json_decref(nonce);
  json_decref(answer);
  tg_buf_cleanup(&text);
  tg_seckey_free(key);
  curl_global_cleanup();
  return st;
}
