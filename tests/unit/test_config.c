/* The configuration file: the sample loads with the documented values; each error names its line and key. */
#include <stdlib.h>

#include "core/config.h"
#include "http/route.h"
#include "tg_test.h"
#include "tollgate/address.h"
#include "tollgate/u256.h"

static char *sample_path(void) {
  static char path[4096];
  const char *root = getenv("TG_ROOT");
  snprintf(path, sizeof path, "%s/docs/tollgated.conf.sample", root ? root : ".");
  return path;
}

static void check_u256(const tg_u256 *v, const char *want) {
  char dec[TG_U256_DEC_MAX];
  tg_u256_to_dec(v, dec);
  CHECK_STR(dec, want);
}

static void test_sample_loads(void) {
  tg_config *c;
  char err[TG_CONFIG_ERR_MAX];
  int rc = tg_config_load(&c, err, sample_path());
  CHECKF(rc == 0, "%s", err);
  if (rc) return;
  CHECK_INT(c->n_listen, 1);
  CHECK_STR(c->listen[0].host, "127.0.0.1");
  CHECK_INT(c->listen[0].port, 8402);
  CHECK_INT(c->workers, 0);
  CHECK_INT(c->max_header_bytes, 16384);
  CHECK_INT(c->channel_gasless, 0); /* gasless deposits and refunds are opt-in */
  CHECK_INT(c->max_body_bytes, 1 << 20);
  CHECK_INT(c->max_response_bytes, 8 << 20);
  CHECK_INT(c->stream_buffer_bytes, 256 << 10);
  CHECK_INT(c->client_timeout_ms, 60000);
  CHECK_INT(c->shutdown_timeout_ms, 30000);
  CHECK_STR(c->public_url, "https://api.example.com");
  CHECK_STR(c->admin_prefix, "/admin/");
  CHECK_INT(c->admin_token_kind, TG_SECRET_ENV);
  CHECK_STR(c->admin_token_src, "TOLLGATE_ADMIN_TOKEN");
  CHECK_INT(c->facilitator_token_kind, TG_SECRET_ENV);
  CHECK_STR(c->facilitator_token_src, "TOLLGATE_FACILITATOR_TOKEN");
  CHECK_INT(c->n_upstreams, 1);
  CHECK_STR(c->upstreams[0].url, "http://127.0.0.1:8000");
  CHECK_INT(c->upstreams[0].timeout_ms, 300000);
  CHECK_INT(c->upstreams[0].connect_ms, 5000);
  CHECK_INT(c->n_routes, 6);
  CHECK_INT(c->n_prices, 2);
  const tg_config_price *flat = tg_config_price_find(c, "flat");
  CHECK(flat && flat->kind == TG_PRICE_CALL);
  if (flat) check_u256(&flat->per_call, "1000"); /* 0.001 with 6 decimals */
  const tg_config_price *chat = tg_config_price_find(c, "chat");
  CHECK(chat && chat->kind == TG_PRICE_TOKEN && chat->n_models == 2);
  if (chat) {
    const tg_config_model_price *m = tg_config_model_price_find(chat, "gpt-4o-mini");
    CHECK(m && strcmp(m->model, "gpt-4o-mini") == 0);
    if (m) {
      check_u256(&m->input_per_mtok, "150000");
      check_u256(&m->output_per_mtok, "600000");
      check_u256(&m->max_per_call, "50000");
    }
    m = tg_config_model_price_find(chat, "some-other-model");
    CHECK(m && strcmp(m->model, "*") == 0);
    if (m) {
      check_u256(&m->output_per_mtok, "10000000");
      check_u256(&m->max_per_call, "500000");
    }
  }
  CHECK(c->scheme_exact && c->scheme_channel);
  CHECK_INT(c->chain_id, 31337);
  CHECK_INT(c->n_rpc_urls, 1);
  CHECK_STR(c->rpc_urls[0], "http://127.0.0.1:8545");
  CHECK_STR(c->deployment, "/var/lib/tollgate/deployment.json");
  CHECK_STR(c->keystore, "/etc/tollgate/gateway-key.json");
  CHECK_INT(c->password_kind, TG_SECRET_FILE);
  CHECK_STR(c->password_src, "/etc/tollgate/gateway-key.password");
  char hex[TG_ADDRESS_HEX_LEN];
  tg_address_to_checksum(&c->pay_to, hex);
  CHECK_STR(hex, "0x70997970C51812dc3A010C7d01b50e0d17dc79C8");
  CHECK(c->has_asset_address);
  CHECK_STR(c->asset_name, "USD Coin");
  CHECK_STR(c->asset_version, "2");
  CHECK_INT(c->asset_decimals, 6);
  CHECK_INT(c->exact_wait, TG_EXACT_WAIT_SUBMISSION);
  CHECK_INT(c->exact_validity_s, 60);
  CHECK_INT(c->n_credits, 1);
  if (c->n_credits) check_u256(&c->credits[0].limit, "5000000");
  CHECK_INT(c->store_kind, TG_STORE_SQLITE);
  CHECK_STR(c->store_conninfo, "/var/lib/tollgate/tollgate.db");
  CHECK_INT(c->settle_interval_s, 3600);
  CHECK_INT(c->settle_max_age_s, 86400);
  check_u256(&c->settle_min_amount, "1000000");
  check_u256(&c->settle_max_gas_price_wei, "50000000000");
  CHECK_INT(c->settle_margin_s, 300);
  CHECK_INT(c->settle_alert_after, 3);
  CHECK_INT(c->log_format, TG_LOG_JSON);
  CHECK_STR(c->access_log, "-");
  /* Routes resolve to their upstream and price. */
  const tg_config_route *r = tg_route_match(c, "GET", "/api/v1/files");
  CHECK(r && strcmp(r->name, "legacy") == 0 && r->strip_prefix && strcmp(r->strip_prefix, "/api") == 0);
  r = tg_route_match(c, "POST", "/v1/chat/completions");
  CHECK(r && strcmp(r->name, "chat") == 0 && r->price >= 0 &&
        strcmp(c->prices[r->price].name, "chat") == 0);
  tg_config_unref(c);
}

/* Parses text; expects failure with `code` and a message containing `want`. */
static void expect_error(const char *text, int code, const char *want) {
  tg_config *c = NULL;
  char err[TG_CONFIG_ERR_MAX];
  int rc = tg_config_parse(&c, err, "t.conf", text, strlen(text));
  CHECKF(rc == code, "%s -> %s (%s), want %s", text, tg_err_name(rc), err, tg_err_name(code));
  CHECKF(strstr(err, want) != NULL, "error \"%s\" lacks \"%s\"", err, want);
  CHECK(c == NULL);
  tg_config_unref(c);
}

#define UP "upstream u http://127.0.0.1:9000\n"
#define PAYMENTS                                                                     \
  "schemes exact\nchain_id 31337\nrpc_url http://127.0.0.1:8545\n"                   \
  "pay_to 0x70997970C51812dc3A010C7d01b50e0d17dc79C8\n"                              \
  "asset address=0x036CbD53842c5426634e7929541eC2318f3dCF7e name=USDC version=2 decimals=6\n" \
  "keystore /k.json password_env=PW\nstore sqlite /tmp/x.db\n"

static void test_errors_name_line_and_key(void) {
  expect_error("# comment\n\nfrobnicate 1\n", TG_ECONFIG_KEY, "t.conf:3: frobnicate: unknown directive");
  expect_error(UP "route r GET /a upstream=u colour=blue\n", TG_ECONFIG_KEY,
               "t.conf:2: route: key \"colour\": unknown key");
  expect_error("listen 127.0.0.1:99999\n", TG_ECONFIG_VALUE, "t.conf:1: listen: \"99999\": port");
  expect_error("listen localhost\n", TG_ECONFIG_VALUE, "t.conf:1: listen:");
  expect_error("workers many\n", TG_ECONFIG_VALUE, "t.conf:1: workers:");
  expect_error("workers 2\nworkers 3\n", TG_ECONFIG_DUP, "t.conf:2: workers: given twice (first at line 1)");
  expect_error("max_body_bytes 12q\n", TG_ECONFIG_VALUE, "t.conf:1: max_body_bytes:");
  expect_error("client_timeout forever\n", TG_ECONFIG_VALUE, "t.conf:1: client_timeout:");
  expect_error(UP "upstream u http://other\n", TG_ECONFIG_DUP, "t.conf:2: upstream: upstream \"u\" defined twice");
  expect_error("upstream u ftp://x\n", TG_ECONFIG_VALUE, "not an http:// or https:// URL");
  expect_error("channel gasless=maybe\n", TG_ECONFIG_VALUE, "t.conf:1: channel: key \"gasless\"");
  expect_error(UP "upstream v http://x timeout=soon\n", TG_ECONFIG_VALUE,
               "t.conf:2: upstream: key \"timeout\":");
  expect_error(UP "\nroute r GET /a upstream=nope\n", TG_ECONFIG_REF,
               "t.conf:3: route: key \"upstream\": no upstream named \"nope\"");
  expect_error(UP PAYMENTS "route r GET /a upstream=u price=cht\n", TG_ECONFIG_REF,
               "key \"price\": no price named \"cht\"");
  expect_error(UP "route r GET /a\n", TG_ECONFIG_MISSING, "t.conf:2: route: key \"upstream\": missing");
  expect_error(UP "route r GET a upstream=u\n", TG_ECONFIG_VALUE, "must start with '/'");
  expect_error(UP "route r GET /a/*/b upstream=u\n", TG_ECONFIG_VALUE, "'*' is allowed only");
  expect_error(UP "route r get /a upstream=u\n", TG_ECONFIG_VALUE, "methods \"get\"");
  expect_error(UP "route r GET /a upstream=u\nroute r POST /b upstream=u\n", TG_ECONFIG_DUP,
               "t.conf:3: route: route \"r\" defined twice (first at line 2)");
  expect_error(UP "route r GET /a upstream=u\nroute s GET /a upstream=u\n", TG_ECONFIG_DUP,
               "same methods and pattern as route \"r\"");
  expect_error(UP "route r GET /paid/a upstream=u strip_prefix=/other\n", TG_ECONFIG_VALUE,
               "t.conf:2: route: key \"strip_prefix\": \"/other\" must be a leading part of the pattern");
  expect_error(UP "route r GET /paidx/a upstream=u strip_prefix=/paid\n", TG_ECONFIG_VALUE,
               "key \"strip_prefix\"");
  expect_error(UP "route r GET /a upstream=u inject_usage=maybe\n", TG_ECONFIG_VALUE,
               "key \"inject_usage\"");
  /* Amounts: exact conversion or an error, never a rounding. */
  expect_error("price p call 0.001\n", TG_ECONFIG_MISSING, "t.conf:1: price: key \"AMOUNT\": amounts need the asset's decimals");
  expect_error("asset decimals=6\nprice p call 0.0000001\n", TG_ECONFIG_VALUE,
               "t.conf:2: price: key \"AMOUNT\": \"0.0000001\" has more precision than the asset's 6 decimals");
  expect_error("asset decimals=6\nprice p call 1e3\n", TG_ECONFIG_VALUE, "is not an amount");
  expect_error("asset decimals=6\nprice p token model=* input_per_mtok=1 output_per_mtok=1\n",
               TG_ECONFIG_MISSING, "key \"max_per_call\": missing");
  expect_error("asset decimals=6\nprice p token input_per_mtok=1 output_per_mtok=1 max_per_call=1\n",
               TG_ECONFIG_MISSING, "key \"model\": missing");
  expect_error("asset decimals=6\nprice p token model=m input_per_mtok=1 output_per_mtok=1 max_per_call=1\n"
               "price p token model=m input_per_mtok=1 output_per_mtok=1 max_per_call=1\n",
               TG_ECONFIG_DUP, "t.conf:3: price: key \"model\": \"m\" priced twice");
  expect_error("asset decimals=6\nprice p per-call 1\n", TG_ECONFIG_VALUE, "neither `call` nor `token`");
  expect_error("asset decimals=99\n", TG_ECONFIG_VALUE, "t.conf:1: asset: key \"decimals\"");
  expect_error("asset name=X\n", TG_ECONFIG_MISSING, "key \"decimals\": missing");
  expect_error("pay_to 0x1234\n", TG_ECONFIG_VALUE, "t.conf:1: pay_to: \"0x1234\" is not a 0x-prefixed");
  expect_error("asset decimals=6\ncredit 0x70997970C51812dc3A010C7d01b50e0d17dc79C8 1\n"
               "credit 0x70997970c51812dc3a010c7d01b50e0d17dc79c8 2\n",
               TG_ECONFIG_DUP, "t.conf:3: credit: payer");
  /* store: postgres needs a local state_dir for its journals; sqlite takes neither key */
  expect_error("store postgres \"postgres://u@127.0.0.1:5432/d\"\n", TG_ECONFIG_MISSING,
               "t.conf:1: store: key \"state_dir\": missing");
  expect_error("store postgres postgres://u@h/d state_dir=rel\n", TG_ECONFIG_VALUE,
               "key \"state_dir\": \"rel\" is not an absolute path");
  expect_error("store sqlite /x.db state_dir=/v\n", TG_ECONFIG_VALUE, "key \"state_dir\": only for postgres");
  expect_error("store postgres postgres://u@h/d state_dir=/v instance=a/b\n", TG_ECONFIG_VALUE,
               "instance name \"a/b\"");
  expect_error("store postgres postgres://u@h/d state_dir=/v instance="
               "a123456789b123456789c123456789d123456789e123456789\n",
               TG_ECONFIG_VALUE, "longer than 48");
  {
    tg_config *c = NULL;
    char err[TG_CONFIG_ERR_MAX];
    const char *t = "store postgres \"postgres://u@127.0.0.1:5432/d?sslmode=disable\" "
                    "state_dir=/var/lib/tg instance=gw-1\n";
    CHECK_OK(tg_config_parse(&c, err, "t.conf", t, strlen(t)));
    if (c) {
      CHECK_INT(c->store_kind, TG_STORE_POSTGRES);
      CHECK_STR(c->store_conninfo, "postgres://u@127.0.0.1:5432/d?sslmode=disable");
      CHECK_STR(c->store_state_dir, "/var/lib/tg");
      CHECK_STR(c->store_instance, "gw-1");
      CHECK_INT(c->store_headroom_off, 0); /* headroom leases on by default */
    }
    tg_config_unref(c);
    t = "store postgres postgres://u@h/d state_dir=/v headroom=off\n";
    c = NULL;
    CHECK_OK(tg_config_parse(&c, err, "t.conf", t, strlen(t)));
    if (c) CHECK_INT(c->store_headroom_off, 1);
    tg_config_unref(c);
  }
  expect_error("store postgres postgres://u@h/d state_dir=/v headroom=maybe\n", TG_ECONFIG_VALUE,
               "key \"headroom\": \"maybe\" is neither on nor off");
  expect_error("store sqlite /x.db headroom=on\n", TG_ECONFIG_VALUE,
               "key \"headroom\": only for postgres");
  expect_error("keystore /k.json\n", TG_ECONFIG_MISSING, "key \"password_file\": missing");
  expect_error("keystore /k.json password_file=/p password_env=P\n", TG_ECONFIG_VALUE,
               "either password_file or password_env");
  expect_error("admin prefix=admin token_env=T\n", TG_ECONFIG_VALUE, "key \"prefix\"");
  expect_error("facilitator\n", TG_ECONFIG_MISSING, "key \"token_file\": missing");
  expect_error("facilitator token_file=/t token_env=T\n", TG_ECONFIG_VALUE,
               "either token_file or token_env");
  expect_error("facilitator token_env=\n", TG_ECONFIG_VALUE, "is empty");
  expect_error("facilitator token_env=T\nfacilitator token_env=U\n", TG_ECONFIG_DUP,
               "t.conf:2: facilitator: given twice");
  expect_error("facilitator token_env=T open=1\n", TG_ECONFIG_KEY, "key \"open\"");
  expect_error("schemes exact upto\n", TG_ECONFIG_VALUE, "unknown scheme \"upto\"");
  expect_error("store mysql x\n", TG_ECONFIG_VALUE, "neither sqlite nor postgres");
  expect_error("exact_wait never\n", TG_ECONFIG_VALUE, "neither submission nor receipt");
  expect_error("settle interval=0\n", TG_ECONFIG_VALUE, "key \"interval\": must be at least 1s");
  expect_error("settle max_gas_price_gwei=1.0000000001\n", TG_ECONFIG_VALUE, "key \"max_gas_price_gwei\"");
  expect_error("settle alert_after=0\n", TG_ECONFIG_VALUE, "key \"alert_after\": \"0\" is not a number in 1..1000");
  expect_error("settle margin=soon\n", TG_ECONFIG_VALUE, "key \"margin\"");
  expect_error("log_format xml\n", TG_ECONFIG_VALUE, "neither json nor text");
  expect_error("public_url \"https://a b\n", TG_ECONFIG, "t.conf:1: line: unterminated quoted string");
  expect_error("route r GET /a upstream=u upstream=v\n", TG_ECONFIG_DUP, "key \"upstream\": given twice");
  expect_error("listen 1.2.3.4:1\x01\n", TG_ECONFIG, "control character");
  /* A priced route needs the payment settings; the message says which and why. */
  expect_error(UP "asset decimals=6\nprice p call 1\nroute r GET /a upstream=u price=p\n",
               TG_ECONFIG_MISSING, "missing `schemes` (needed because route \"r\" at line 4 is priced)");
  expect_error(UP "schemes exact\nchain_id 1\nrpc_url http://r\npay_to 0x70997970C51812dc3A010C7d01b50e0d17dc79C8\n"
               "asset decimals=6\nprice p call 1\nroute r GET /a upstream=u price=p\n",
               TG_ECONFIG_MISSING, "missing `asset address= (or deployment)`");
  char big[TG_CONFIG_LINE_MAX + 16];
  memset(big, 'a', sizeof big - 2);
  big[sizeof big - 2] = '\n';
  big[sizeof big - 1] = 0;
  expect_error(big, TG_ECONFIG, "t.conf:1: line: longer than 4096 bytes");
}

/* Access-pass plans and the sign-in settings: values, defaults, lookups and refusals. */
static void test_plans(void) {
  tg_config *c;
  char err[TG_CONFIG_ERR_MAX];
  int rc = tg_config_load(&c, err, sample_path());
  CHECKF(rc == 0, "%s", err);
  if (rc) return;
  CHECK_INT(c->n_plans, 2);
  CHECK_STR(c->plans[0].name, "pro");
  check_u256(&c->plans[0].id, "1");
  CHECK_INT(c->plans[0].n_routes, 2);
  CHECK_STR(c->plans[0].routes[1], "embed");
  CHECK_INT(c->plans[0].n_models, 0);
  CHECK_INT(c->plans[0].unit, TG_QUOTA_TOKENS);
  CHECK_INT(c->plans[0].quota, 100000);
  CHECK_INT(c->plans[0].period_s, 720 * 3600);
  check_u256(&c->plans[0].overage, "5000000");
  CHECK_INT(c->plans[1].unit, TG_QUOTA_CALLS);
  CHECK(tg_u256_is_zero(&c->plans[1].overage));
  CHECK_STR(c->passes_domain, "api.example.com");
  CHECK_INT(c->session_ttl_s, 86400);
  CHECK_INT(c->nonce_ttl_s, 300);
  CHECK_INT(c->agent_auth, 1);
  /* which plans cover a route and model, in file order */
  const tg_config_plan *pl[4];
  CHECK_INT(tg_config_plans_for(c, "chat", "gpt-4o-mini", pl, 4), 2);
  CHECK_INT(tg_config_plans_for(c, "chat", "gpt-4o", pl, 4), 1);
  CHECK_STR(pl[0]->name, "pro");
  CHECK_INT(tg_config_plans_for(c, "chat", NULL, pl, 4), 1);
  CHECK_INT(tg_config_plans_for(c, "embed", NULL, pl, 4), 1);
  CHECK_INT(tg_config_plans_for(c, "models", NULL, pl, 4), 0);
  tg_config_unref(c);
  /* defaults without a `passes` line */
  CHECK_OK(tg_config_parse(&c, err, "t.conf", "workers 1\n", 10));
  if (c) {
    CHECK_INT(c->session_ttl_s, 86400);
    CHECK_INT(c->nonce_ttl_s, 300);
    CHECK_INT(c->agent_auth, 1);
    CHECK_INT(c->n_plans, 0);
    tg_config_unref(c);
  }
  const char *base = UP "asset decimals=6\nprice p call 1\nroute r GET /a upstream=u price=p\n"
                        "route free GET /b upstream=u\n";
  char text[2048];
#define PLAN_ERR(line, code, want)                          \
  do {                                                      \
    snprintf(text, sizeof text, "%s%s", base, line);        \
    expect_error(text, code, want);                         \
  } while (0)
  PLAN_ERR("plan x routes=r quota=1 period=1h\n", TG_ECONFIG_MISSING, "t.conf:6: plan: key \"id\": missing");
  PLAN_ERR("plan x id=abc routes=r quota=1 period=1h\n", TG_ECONFIG_VALUE, "key \"id\": \"abc\" is not a decimal");
  PLAN_ERR("plan x id=1 quota=1 period=1h\n", TG_ECONFIG_MISSING, "key \"routes\": missing");
  PLAN_ERR("plan x id=1 routes=r period=1h\n", TG_ECONFIG_MISSING, "key \"quota\": missing");
  PLAN_ERR("plan x id=1 routes=r quota=-1 period=1h\n", TG_ECONFIG_VALUE, "key \"quota\"");
  PLAN_ERR("plan x id=1 routes=r quota=1 unit=bytes period=1h\n", TG_ECONFIG_VALUE, "neither calls nor tokens");
  PLAN_ERR("plan x id=1 routes=r quota=1\n", TG_ECONFIG_MISSING, "key \"period\": missing");
  PLAN_ERR("plan x id=1 routes=r quota=1 period=9000h\n", TG_ECONFIG_VALUE, "key \"period\"");
  PLAN_ERR("plan x id=1 routes=r quota=1 period=1h overage=0.0000001\n", TG_ECONFIG_VALUE, "key \"overage\"");
  PLAN_ERR("plan x id=1 routes=r,,s quota=1 period=1h\n", TG_ECONFIG_VALUE, "not a comma list");
  PLAN_ERR("plan x id=1 routes=nope quota=1 period=1h\n", TG_ECONFIG_REF, "t.conf:6: plan: key \"routes\": no route named \"nope\"");
  PLAN_ERR("plan x id=1 routes=free quota=1 period=1h\n", TG_ECONFIG_VALUE, "route \"free\" has no price");
  PLAN_ERR("plan x id=1 routes=r quota=1 period=1h\nplan x id=2 routes=r quota=1 period=1h\n", TG_ECONFIG_DUP,
           "t.conf:7: plan: plan \"x\" defined twice (first at line 6)");
  PLAN_ERR("plan x id=1 routes=r quota=1 period=1h\nplan y id=1 routes=r quota=1 period=1h\n", TG_ECONFIG_DUP,
           "key \"id\": plan \"x\" has id 1 already");
  PLAN_ERR("plan x id=1 routes=r quota=1 period=1h color=red\n", TG_ECONFIG_KEY, "key \"color\": unknown key");
  PLAN_ERR("passes session_ttl=10s\n", TG_ECONFIG_VALUE, "key \"session_ttl\": must be at least 1m");
  PLAN_ERR("passes nonce_ttl=2h\n", TG_ECONFIG_VALUE, "key \"nonce_ttl\"");
  PLAN_ERR("passes uri=ftp://x\n", TG_ECONFIG_VALUE, "key \"uri\"");
  PLAN_ERR("passes domain=a/b\n", TG_ECONFIG_VALUE, "key \"domain\"");
  PLAN_ERR("passes agent_auth=maybe\n", TG_ECONFIG_VALUE, "key \"agent_auth\"");
  PLAN_ERR("passes\npasses\n", TG_ECONFIG_DUP, "given twice");
#undef PLAN_ERR
}

static void test_load_missing_file(void) {
  tg_config *c;
  char err[TG_CONFIG_ERR_MAX];
  CHECK_ERR(tg_config_load(&c, err, "/nonexistent/tollgated.conf"), TG_ECONFIG_FILE);
  CHECK(strstr(err, "/nonexistent/tollgated.conf: cannot open") != NULL);
  CHECK(c == NULL);
}

static void test_quotes_comments_defaults(void) {
  const char *text = "  # indented comment\n"
                     "upstream u \"http://127.0.0.1:9000/base/\"   # trailing comment\n"
                     "public_url \"https://x.example/#frag\"\n"
                     "route r * /v1/* upstream=u\n";
  tg_config *c;
  char err[TG_CONFIG_ERR_MAX];
  int rc = tg_config_parse(&c, err, "q.conf", text, strlen(text));
  CHECKF(rc == 0, "%s", err);
  if (rc) return;
  CHECK_STR(c->upstreams[0].url, "http://127.0.0.1:9000/base"); /* trailing '/' dropped */
  CHECK_STR(c->public_url, "https://x.example/#frag");
  CHECK_INT(c->n_listen, 1); /* default listen */
  CHECK_STR(c->listen[0].host, "127.0.0.1");
  CHECK_INT(c->listen[0].port, 8402);
  CHECK_INT(c->max_header_bytes, 16384);
  CHECK(c->routes[0].price == -1);
  tg_config *r = tg_config_ref(c);
  tg_config_unref(c);
  CHECK_STR(r->routes[0].name, "r"); /* still alive through the second reference */
  tg_config_unref(r);
  tg_config_unref(NULL);
}

static void test_amounts_durations_sizes(void) {
  tg_u256 v;
  CHECK_OK(tg_config_parse_amount(&v, "0.002", 6));
  check_u256(&v, "2000");
  CHECK_OK(tg_config_parse_amount(&v, "12", 6));
  check_u256(&v, "12000000");
  CHECK_OK(tg_config_parse_amount(&v, ".5", 2));
  check_u256(&v, "50");
  CHECK_OK(tg_config_parse_amount(&v, "1.500000000", 6)); /* zeros past the precision are exact */
  check_u256(&v, "1500000");
  CHECK_OK(tg_config_parse_amount(&v, "0", 0));
  check_u256(&v, "0");
  CHECK_OK(tg_config_parse_amount(&v, "1", 18));
  check_u256(&v, "1000000000000000000");
  CHECK_ERR(tg_config_parse_amount(&v, "0.0000001", 6), TG_ERANGE);
  CHECK_ERR(tg_config_parse_amount(&v, "1.", 6), TG_ENUMBER);
  CHECK_ERR(tg_config_parse_amount(&v, ".", 6), TG_ENUMBER);
  CHECK_ERR(tg_config_parse_amount(&v, "", 6), TG_ENUMBER);
  CHECK_ERR(tg_config_parse_amount(&v, "-1", 6), TG_ENUMBER);
  CHECK_ERR(tg_config_parse_amount(&v, "1.2.3", 6), TG_ENUMBER);
  CHECK_ERR(tg_config_parse_amount(&v, "1,5", 6), TG_ENUMBER);
  CHECK_ERR(tg_config_parse_amount(
                &v, "115792089237316195423570985008687907853269984665640564039457584007913129639936", 0),
            TG_EOVERFLOW);
  uint64_t ms;
  CHECK_OK(tg_config_parse_duration_ms(&ms, "30"));
  CHECK_INT(ms, 30000);
  CHECK_OK(tg_config_parse_duration_ms(&ms, "250ms"));
  CHECK_INT(ms, 250);
  CHECK_OK(tg_config_parse_duration_ms(&ms, "5m"));
  CHECK_INT(ms, 300000);
  CHECK_OK(tg_config_parse_duration_ms(&ms, "1h"));
  CHECK_INT(ms, 3600000);
  CHECK_ERR(tg_config_parse_duration_ms(&ms, "1d"), TG_ENUMBER);
  CHECK_ERR(tg_config_parse_duration_ms(&ms, "s"), TG_ENUMBER);
  CHECK_ERR(tg_config_parse_duration_ms(&ms, "99999999999999999999"), TG_EOVERFLOW);
  uint64_t n;
  CHECK_OK(tg_config_parse_size(&n, "16k"));
  CHECK_INT(n, 16384);
  CHECK_OK(tg_config_parse_size(&n, "2M"));
  CHECK_INT(n, 2 << 20);
  CHECK_ERR(tg_config_parse_size(&n, "2kb"), TG_ENUMBER);
}

static void test_route_matching(void) {
  const char *text = UP "route any * /v1/* upstream=u\n"
                        "route chat POST /v1/chat/completions upstream=u\n"
                        "route chat_any * /v1/chat/completions upstream=u\n"
                        "route model GET /v1/models/{id} upstream=u\n"
                        "route models GET /v1/models upstream=u\n"
                        "route deep * /v1/models/* upstream=u\n"
                        "route root GET / upstream=u\n";
  tg_config *c;
  char err[TG_CONFIG_ERR_MAX];
  int rc = tg_config_parse(&c, err, "r.conf", text, strlen(text));
  CHECKF(rc == 0, "%s", err);
  if (rc) return;
  struct {
    const char *method, *path, *want;
  } cases[] = {
      {"POST", "/v1/chat/completions", "chat"},    /* method named beats "*" */
      {"GET", "/v1/chat/completions", "chat_any"}, /* exact beats the prefix */
      {"GET", "/v1/chat/completions/x", "any"},
      {"GET", "/v1/models", "models"},
      {"GET", "/v1/models/gpt-4o", "model"},       /* parameter beats the shorter prefix */
      {"POST", "/v1/models/gpt-4o", "deep"},       /* the {id} route is GET only */
      {"GET", "/v1/models/a/b", "deep"},           /* {id} is one segment */
      {"GET", "/v1", "any"},                       /* "/v1/" + star covers "/v1" */
      {"GET", "/v1/", "any"},
      {"GET", "/", "root"},
      {"GET", "/v2/x", NULL},
      {"GET", "/v10", NULL},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    const tg_config_route *r = tg_route_match(c, cases[i].method, cases[i].path);
    const char *got = r ? r->name : NULL;
    CHECKF((got == NULL && cases[i].want == NULL) ||
               (got && cases[i].want && strcmp(got, cases[i].want) == 0),
           "%s %s -> %s, want %s", cases[i].method, cases[i].path, got ? got : "(none)",
           cases[i].want ? cases[i].want : "(none)");
  }
  tg_config_unref(c);
}

int main(void) {
  RUN(test_sample_loads);
  RUN(test_errors_name_line_and_key);
  RUN(test_plans);
  RUN(test_load_missing_file);
  RUN(test_quotes_comments_defaults);
  RUN(test_amounts_durations_sizes);
  RUN(test_route_matching);
  return tgt_done();
}
