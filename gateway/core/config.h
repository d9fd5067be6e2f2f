/* The daemon's configuration: one line-oriented file parsed and validated into a tg_config. */
#ifndef TG_CORE_CONFIG_H
#define TG_CORE_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "tollgate/types.h"

/*
 * File format (docs/tollgated.conf.sample documents every directive):
 *
 *   # comment
 *   directive arg arg key=value key="quoted value"
 *
 * One directive per line; blank lines and `#` comments are ignored; a
 * token may be "double-quoted" (with \" and \\ escapes) to hold spaces or
 * `#`. Lines are at most TG_CONFIG_LINE_MAX bytes and the file at most
 * TG_CONFIG_FILE_MAX bytes. Parsing stops at the first problem; the error
 * text names the file, the line, the directive or key and what is wrong:
 *
 *   tollgated.conf:12: route "chat": key "price": no price named "cht"
 *
 * Amounts (prices, credit limits, settlement minimum) are written in the
 * asset's units ("0.002") and converted exactly to base units with the
 * asset's `decimals`; more fractional digits than decimals is an error,
 * never a rounding. A tg_config is immutable once loaded and reference
 * counted, so a reload (SIGHUP) can swap in a new one while requests still
 * hold the old one.
 */

#define TG_CONFIG_FILE_MAX ((size_t)1 << 20)
#define TG_CONFIG_LINE_MAX 4096
#define TG_CONFIG_NAME_MAX 64
#define TG_CONFIG_ERR_MAX 512
#define TG_CONFIG_MAX_LISTEN 16
#define TG_CONFIG_MAX_ITEMS 1024 /* upstreams, routes, prices, models, credits each */

typedef struct {
  char *host;    /* "127.0.0.1", "::1", "0.0.0.0" */
  uint16_t port;
} tg_config_listen;

typedef struct {
  char *name;
  char *url;              /* base URL; the request path is appended */
  uint32_t timeout_ms;    /* whole transfer (0: no limit; streams use idle_ms) */
  uint32_t connect_ms;
  uint32_t idle_ms;       /* longest silence inside a streamed answer */
} tg_config_upstream;

enum { TG_PRICE_CALL = 1, TG_PRICE_TOKEN = 2 };

/* Token prices of one model, in base units per million tokens. */
typedef struct {
  char *model;            /* "*" matches any model */
  tg_u256 input_per_mtok;
  tg_u256 output_per_mtok;
  tg_u256 max_per_call;   /* the reservation taken at admission */
} tg_config_model_price;

typedef struct {
  char *name;
  int kind;               /* TG_PRICE_CALL or TG_PRICE_TOKEN */
  tg_u256 per_call;       /* TG_PRICE_CALL: base units per call */
  tg_config_model_price *models; /* TG_PRICE_TOKEN */
  size_t n_models;
} tg_config_price;

enum { TG_ROUTE_EXACT = 1, TG_ROUTE_PREFIX = 2, TG_ROUTE_PARAM = 3 };

typedef struct {
  char *name;
  char *methods;          /* "*" or "GET,POST" (upper case) */
  char *pattern;          /* "/v1/chat/completions", prefix "/v1/" + "*", "/v1/models/{id}" */
  int kind;
  size_t literal_len;     /* characters matched literally: longer wins */
  size_t upstream;        /* index into upstreams */
  long price;             /* index into prices, -1 when unpriced */
  int inject_usage;       /* add stream_options.include_usage to streamed chat requests */
  char *strip_prefix;     /* removed from the path before it goes upstream, or NULL */
} tg_config_route;

typedef struct {
  tg_address payer;
  tg_u256 limit;          /* base units */
} tg_config_credit;

enum { TG_QUOTA_CALLS = 1, TG_QUOTA_TOKENS = 2 };

/* An access-pass plan: an ERC-1155 token id of TollgatePasses, what it covers, its quota. */
typedef struct {
  char *name;
  tg_u256 id;             /* the plan id (ERC-1155 token id) */
  char **routes;          /* route names the pass covers (each a priced route) */
  size_t n_routes;
  char **models;          /* models covered ("model" of the body); NULL: any */
  size_t n_models;
  int unit;               /* TG_QUOTA_CALLS or TG_QUOTA_TOKENS */
  uint64_t quota;         /* included per period (0: none, every call is overage or paid) */
  uint64_t period_s;      /* quota period: fixed windows of this length since the Unix epoch */
  tg_u256 overage;        /* postpaid credit limit per holder past the quota (0: pay instead) */
} tg_config_plan;

enum { TG_SECRET_NONE = 0, TG_SECRET_FILE = 1, TG_SECRET_ENV = 2 };
enum { TG_STORE_SQLITE = 1, TG_STORE_POSTGRES = 2 };
enum { TG_EXACT_WAIT_SUBMISSION = 1, TG_EXACT_WAIT_RECEIPT = 2 };
enum { TG_LOG_JSON = 1, TG_LOG_TEXT = 2 };

typedef struct tg_config {
  char *path;             /* the file it came from */

  /* server */
  tg_config_listen listen[TG_CONFIG_MAX_LISTEN];
  size_t n_listen;
  unsigned workers;       /* 0 in the file: one per core (resolved at start) */
  size_t max_header_bytes;
  size_t max_body_bytes;
  size_t max_response_bytes;   /* buffered (non-streamed) answers on priced routes */
  size_t stream_buffer_bytes;  /* client output queued before the upstream is paused */
  uint32_t client_timeout_ms;  /* reading a request / idle keep-alive */
  uint32_t shutdown_timeout_ms;/* in-flight calls get this long after SIGTERM */
  char *public_url;       /* "https://api.example.com": resource URLs in 402s; NULL */
  char *admin_prefix;     /* "/admin/" */
  int admin_token_kind;   /* TG_SECRET_FILE / TG_SECRET_ENV / NONE (admin API off) */
  char *admin_token_src;  /* the path or the variable name */
  int facilitator_token_kind; /* NONE: /verify and /settle open; else they need this bearer token */
  char *facilitator_token_src;

  tg_config_upstream *upstreams;
  size_t n_upstreams;
  tg_config_route *routes;
  size_t n_routes;
  tg_config_price *prices;
  size_t n_prices;

  /* payments */
  int scheme_exact;
  int scheme_channel;
  uint64_t chain_id;
  char **rpc_urls;
  size_t n_rpc_urls;
  char *deployment;       /* deployment file path, or NULL */
  char *keystore;         /* the gateway's keystore v3 file */
  int password_kind;      /* TG_SECRET_FILE or TG_SECRET_ENV */
  char *password_src;
  int has_pay_to;
  tg_address pay_to;
  int has_asset_address;
  tg_address asset_address;
  char *asset_name;       /* EIP-712 domain name, e.g. "USD Coin" */
  char *asset_version;    /* EIP-712 domain version, e.g. "2" */
  int asset_decimals;     /* -1 when not given */
  int exact_wait;         /* TG_EXACT_WAIT_* */
  uint32_t exact_validity_s; /* maxTimeoutSeconds offered in 402s */

  /* store */
  int store_kind;
  char *store_conninfo;   /* sqlite path or postgres conninfo */
  char *store_state_dir;  /* postgres: local directory of this instance's journals (state_dir=) */
  char *store_instance;   /* postgres: this instance's name (instance=), NULL: host-pid */
  int store_headroom_off; /* postgres: headroom=off, every channel call holds in the store */

  tg_config_credit *credits;
  size_t n_credits;

  /* settlement */
  uint32_t settle_interval_s;
  tg_u256 settle_min_amount;
  uint32_t settle_max_age_s;
  tg_u256 settle_max_gas_price_wei;   /* 0: no ceiling */
  uint32_t settle_margin_s;           /* watchtower: claims confirmed this long before a
                                         withdrawal's delay ends (at most half of it) */
  uint32_t settle_alert_after;        /* failed runs in a row before an ALERT */

  /* channels */
  uint32_t channel_withdraw_delay_s;  /* withdrawDelay offered to payers (default 1 day) */
  tg_u256 channel_min_deposit;        /* extra.minDeposit offered (0: none) */
  int channel_gasless;                /* accept batch-settlement `deposit` payloads, submitting them */

  /* access passes */
  tg_config_plan *plans;
  size_t n_plans;
  char *passes_domain;    /* the SIWE domain expected (NULL: the request's Host) */
  char *passes_uri;       /* the SIWE URI prefix expected (NULL: public_url, else http://Host/) */
  uint32_t session_ttl_s; /* sessions last this long (default 24h) */
  uint32_t nonce_ttl_s;   /* an issued nonce must be used within this (default 5m) */
  int agent_auth;         /* accept per-request signed authentication (default yes) */
  /* logs */
  int log_format;
  char *access_log;       /* "-" for stderr, a path, or NULL (off) */

  /* private */
  _Atomic int refs;
} tg_config;

/*
 * Loads and validates `path`. On failure returns a negative tg_err
 * (TG_ECONFIG_*), *out is NULL and err (size TG_CONFIG_ERR_MAX) holds one
 * line "<file>:<line>: <directive>: key "<key>": <problem>".
 */
TG_WARN_UNUSED_RESULT int tg_config_load(tg_config **out, char *err, const char *path);
/* The same from text in memory; `name` stands for the file in messages. */
TG_WARN_UNUSED_RESULT int tg_config_parse(tg_config **out, char *err, const char *name,
                                          const char *text, size_t len);
/* Reference counting (thread-safe); tg_config_unref(NULL) is a no-op. */
tg_config *tg_config_ref(tg_config *cfg);
void tg_config_unref(tg_config *cfg);

/* Lookups (NULL / -1 when absent). */
const tg_config_upstream *tg_config_upstream_find(const tg_config *cfg, const char *name);
const tg_config_price *tg_config_price_find(const tg_config *cfg, const char *name);
/* The plans covering a route (and model, NULL: none given), in file order; returns how many fit. */
size_t tg_config_plans_for(const tg_config *cfg, const char *route, const char *model,
                           const tg_config_plan **out, size_t max);

/* The model's token prices: an exact model name first, then "*"; NULL when neither. */
const tg_config_model_price *tg_config_model_price_find(const tg_config_price *p,
                                                        const char *model);

/*
 * "0.002" with `decimals` 6 -> 2000. Digits, at most one '.', no sign or
 * exponent; TG_ENUMBER when malformed, TG_ERANGE when it has more
 * fractional digits than `decimals` allows (non-zero ones), TG_EOVERFLOW
 * past 2^256-1.
 */
TG_WARN_UNUSED_RESULT int tg_config_parse_amount(tg_u256 *out, const char *s, unsigned decimals);

/* Durations "30", "30s", "250ms", "5m", "1h" into milliseconds. */
TG_WARN_UNUSED_RESULT int tg_config_parse_duration_ms(uint64_t *out, const char *s);
/* Sizes "16384", "16k", "1m" (KiB, MiB) into bytes. */
TG_WARN_UNUSED_RESULT int tg_config_parse_size(uint64_t *out, const char *s);

#endif
