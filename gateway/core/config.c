/* The daemon's configuration file: tokenizer, directive handlers, cross-checks and lookups. */
#include "core/config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate/address.h"
#include "tollgate/u256.h"

#define MAX_TOKENS 32

/* One tokenized line: positional arguments and key=value pairs, in order. */
typedef struct {
  const char *name;     /* the file name for messages */
  unsigned lineno;
  char *directive;
  char *pos[MAX_TOKENS];
  size_t n_pos;
  char *keys[MAX_TOKENS];
  char *vals[MAX_TOKENS];
  int used[MAX_TOKENS];
  size_t n_kv;
  char *store;          /* backing storage of all tokens */
} line_t;

typedef struct {
  tg_config *cfg;
  char *err;
  const char *name;
  int pass;             /* 1: only `asset` (decimals); 2: everything */
  /* where things were set, for cross-check messages */
  unsigned *route_lines;
  char **route_upstream;
  char **route_price;
  unsigned first_priced_line;
  const char *first_priced_route;
  unsigned seen_workers, seen_asset, seen_store, seen_keystore, seen_pay_to, seen_chain_id,
      seen_schemes, seen_settle, seen_channel, seen_admin, seen_facilitator, seen_exact_wait, seen_log_format, seen_access_log,
      seen_public_url, seen_deployment, seen_passes;
  unsigned *plan_lines;
} parser_t;

static int fail(parser_t *p, const line_t *l, int rc, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int fail(parser_t *p, const line_t *l, int rc, const char *key, const char *fmt, ...) {
  char msg[TG_CONFIG_ERR_MAX / 2];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (l == NULL)
    snprintf(p->err, TG_CONFIG_ERR_MAX, "%s: %s", p->name, msg);
  else if (key)
    snprintf(p->err, TG_CONFIG_ERR_MAX, "%s:%u: %s: key \"%s\": %s", p->name, l->lineno,
             l->directive, key, msg);
  else
    snprintf(p->err, TG_CONFIG_ERR_MAX, "%s:%u: %s: %s", p->name, l->lineno, l->directive, msg);
  return rc;
}

static char *xstrdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d == NULL) abort();
  memcpy(d, s, n);
  return d;
}

static void *xrealloc(void *ptr, size_t n, size_t size) {
  void *q = realloc(ptr, n * size);
  if (q == NULL && n) abort();
  return q;
}

/* ---------------------------------------------------------------- values */

int tg_config_parse_amount(tg_u256 *out, const char *s, unsigned decimals) {
  tg_u256_zero(out);
  if (decimals > 77) return TG_ERANGE;
  const char *dot = strchr(s, '.');
  size_t ilen = dot ? (size_t)(dot - s) : strlen(s);
  const char *frac = dot ? dot + 1 : "";
  size_t flen = strlen(frac);
  if (ilen == 0 && flen == 0) return TG_ENUMBER;
  if (dot && flen == 0) return TG_ENUMBER;
  for (size_t i = 0; i < ilen; i++)
    if (s[i] < '0' || s[i] > '9') return TG_ENUMBER;
  for (size_t i = 0; i < flen; i++)
    if (frac[i] < '0' || frac[i] > '9') return TG_ENUMBER;
  /* Trailing zeros beyond the asset's precision are harmless; other digits are not. */
  while (flen > decimals && frac[flen - 1] == '0') flen--;
  if (flen > decimals) return TG_ERANGE;
  if (ilen + decimals > 120) return TG_EOVERFLOW;
  char digits[128];
  size_t n = 0;
  memcpy(digits, s, ilen);
  n = ilen;
  memcpy(digits + n, frac, flen);
  n += flen;
  for (size_t i = flen; i < decimals; i++) digits[n++] = '0';
  if (n == 0) digits[n++] = '0';
  int rc = tg_u256_parse_dec(out, digits, n);
  if (rc != 0) tg_u256_zero(out);
  return rc == TG_EOVERFLOW ? TG_EOVERFLOW : (rc ? TG_ENUMBER : 0);
}

static int parse_u64(uint64_t *out, const char *s, size_t *consumed) {
  uint64_t v = 0;
  size_t i = 0;
  for (; s[i] >= '0' && s[i] <= '9'; i++) {
    unsigned d = (unsigned)(s[i] - '0');
    if (v > (UINT64_MAX - d) / 10) return TG_EOVERFLOW;
    v = v * 10 + d;
  }
  if (i == 0) return TG_ENUMBER;
  *out = v;
  *consumed = i;
  return 0;
}

static int scaled(uint64_t *out, const char *s, const char *const *units, const uint64_t *mult,
                  size_t n_units, uint64_t dflt_mult) {
  uint64_t v;
  size_t used;
  int rc = parse_u64(&v, s, &used);
  if (rc) return rc;
  const char *u = s + used;
  uint64_t m = dflt_mult;
  if (*u) {
    size_t i;
    for (i = 0; i < n_units; i++)
      if (strcmp(u, units[i]) == 0) break;
    if (i == n_units) return TG_ENUMBER;
    m = mult[i];
  }
  if (m && v > UINT64_MAX / m) return TG_EOVERFLOW;
  *out = v * m;
  return 0;
}

int tg_config_parse_duration_ms(uint64_t *out, const char *s) {
  static const char *const units[] = {"ms", "s", "m", "h"};
  static const uint64_t mult[] = {1, 1000, 60000, 3600000};
  *out = 0;
  return scaled(out, s, units, mult, 4, 1000);
}

int tg_config_parse_size(uint64_t *out, const char *s) {
  static const char *const units[] = {"k", "K", "m", "M", "g", "G"};
  static const uint64_t mult[] = {1024, 1024, 1 << 20, 1 << 20, 1 << 30, 1 << 30};
  *out = 0;
  return scaled(out, s, units, mult, 6, 1);
}

/* ---------------------------------------------------------------- tokenizer */

/* Splits one line (NUL-terminated, no newline) into l. 0, or a message in p->err. */
static int tokenize(parser_t *p, line_t *l, const char *text) {
  size_t len = strlen(text);
  l->store = malloc(len + 1);
  if (l->store == NULL) abort();
  char *w = l->store;
  char *toks[MAX_TOKENS + 1];
  int quoted_eq[MAX_TOKENS + 1];
  size_t nt = 0;
  const char *s = text;
  line_t where = {.lineno = l->lineno, .directive = "line"};
  for (;;) {
    while (*s == ' ' || *s == '\t' || *s == '\r') s++;
    if (*s == 0 || *s == '#') break;
    if (nt == MAX_TOKENS + 1)
      return fail(p, &where, TG_ECONFIG, NULL, "more than %d words", MAX_TOKENS);
    toks[nt] = w;
    quoted_eq[nt] = 0;
    int saw_eq = 0;
    while (*s && *s != ' ' && *s != '\t' && *s != '\r') {
      if (*s == '"') {
        s++;
        while (*s && *s != '"') {
          if (*s == '\\' && (s[1] == '"' || s[1] == '\\')) s++;
          if ((unsigned char)*s < 0x20 && *s != '\t')
            return fail(p, &where, TG_ECONFIG, NULL, "control character in a quoted string");
          *w++ = *s++;
        }
        if (*s != '"') return fail(p, &where, TG_ECONFIG, NULL, "unterminated quoted string");
        s++;
        if (!saw_eq) quoted_eq[nt] = 1; /* a quoted leading part is never a key */
        continue;
      }
      if ((unsigned char)*s < 0x20)
        return fail(p, &where, TG_ECONFIG, NULL, "control character (byte 0x%02x)",
                    (unsigned char)*s);
      if (*s == '=') saw_eq = 1;
      *w++ = *s++;
    }
    *w++ = 0;
    nt++;
  }
  if (nt == 0) return 0;
  l->directive = toks[0];
  for (size_t i = 1; i < nt; i++) {
    char *eq = quoted_eq[i] ? NULL : strchr(toks[i], '=');
    if (eq && eq != toks[i]) {
      *eq = 0;
      for (size_t j = 0; j < l->n_kv; j++)
        if (strcmp(l->keys[j], toks[i]) == 0)
          return fail(p, l, TG_ECONFIG_DUP, toks[i], "given twice");
      l->keys[l->n_kv] = toks[i];
      l->vals[l->n_kv] = eq + 1;
      l->used[l->n_kv] = 0;
      l->n_kv++;
    } else {
      l->pos[l->n_pos++] = toks[i];
    }
  }
  return 0;
}

/* The value of key k (and marks it used), or NULL. */
static const char *kv(line_t *l, const char *k) {
  for (size_t i = 0; i < l->n_kv; i++)
    if (strcmp(l->keys[i], k) == 0) {
      l->used[i] = 1;
      return l->vals[i];
    }
  return NULL;
}

static int want_pos(parser_t *p, line_t *l, size_t min, size_t max, const char *usage) {
  if (l->n_pos < min || l->n_pos > max)
    return fail(p, l, TG_ECONFIG_VALUE, NULL, "expected: %s %s", l->directive, usage);
  return 0;
}

static int check_name(parser_t *p, line_t *l, const char *what, const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > TG_CONFIG_NAME_MAX)
    return fail(p, l, TG_ECONFIG_VALUE, NULL, "%s name must be 1..%d characters", what,
                TG_CONFIG_NAME_MAX);
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          c == '-' || c == '_' || c == '.'))
      return fail(p, l, TG_ECONFIG_VALUE, NULL,
                  "%s name \"%s\" may hold only letters, digits, '-', '_' and '.'", what, s);
  }
  return 0;
}

static int val_duration(parser_t *p, line_t *l, const char *key, const char *v, uint32_t *out,
                        uint64_t max_ms) {
  uint64_t ms;
  int rc = tg_config_parse_duration_ms(&ms, v);
  if (rc || ms > max_ms)
    return fail(p, l, TG_ECONFIG_VALUE, key,
                "\"%s\" is not a duration up to %llus (examples: 30, 30s, 250ms, 5m, 1h)", v,
                (unsigned long long)(max_ms / 1000));
  *out = (uint32_t)ms;
  return 0;
}

static int val_size(parser_t *p, line_t *l, const char *key, const char *v, size_t *out,
                    uint64_t min, uint64_t max) {
  uint64_t n;
  int rc = tg_config_parse_size(&n, v);
  if (rc || n < min || n > max)
    return fail(p, l, TG_ECONFIG_VALUE, key,
                "\"%s\" is not a size between %llu and %llu bytes (examples: 16384, 16k, 1m)", v,
                (unsigned long long)min, (unsigned long long)max);
  *out = (size_t)n;
  return 0;
}

static int val_amount(parser_t *p, line_t *l, const char *key, const char *v, tg_u256 *out) {
  if (p->cfg->asset_decimals < 0)
    return fail(p, l, TG_ECONFIG_MISSING, key,
                "amounts need the asset's decimals: add `asset ... decimals=N`");
  int rc = tg_config_parse_amount(out, v, (unsigned)p->cfg->asset_decimals);
  if (rc == TG_ERANGE)
    return fail(p, l, TG_ECONFIG_VALUE, key, "\"%s\" has more precision than the asset's %d decimals",
                v, p->cfg->asset_decimals);
  if (rc)
    return fail(p, l, TG_ECONFIG_VALUE, key,
                "\"%s\" is not an amount in the asset's units (example: 0.002)", v);
  return 0;
}

static int val_address(parser_t *p, line_t *l, const char *key, const char *v, tg_address *out) {
  int rc = tg_address_parse(out, v, strlen(v));
  if (rc)
    return fail(p, l, TG_ECONFIG_VALUE, key, "\"%s\" is not a 0x-prefixed 20-byte address (%s)", v,
                tg_strerror(rc));
  return 0;
}

static int val_url(parser_t *p, line_t *l, const char *key, const char *v) {
  if (strncmp(v, "http://", 7) != 0 && strncmp(v, "https://", 8) != 0)
    return fail(p, l, TG_ECONFIG_VALUE, key, "\"%s\" is not an http:// or https:// URL", v);
  const char *host = strstr(v, "://") + 3;
  if (*host == 0 || *host == '/')
    return fail(p, l, TG_ECONFIG_VALUE, key, "\"%s\" has no host", v);
  return 0;
}

static int val_secret_src(parser_t *p, line_t *l, const char *file_key, const char *env_key,
                          int *kind, char **src, int required) {
  const char *f = kv(l, file_key), *e = kv(l, env_key);
  if (f && e)
    return fail(p, l, TG_ECONFIG_VALUE, file_key, "give either %s or %s, not both", file_key,
                env_key);
  if (!f && !e) {
    if (!required) return 0;
    return fail(p, l, TG_ECONFIG_MISSING, file_key, "missing: give %s=PATH or %s=VARIABLE",
                file_key, env_key);
  }
  if ((f && !*f) || (e && !*e))
    return fail(p, l, TG_ECONFIG_VALUE, f ? file_key : env_key, "is empty");
  free(*src);
  *kind = f ? TG_SECRET_FILE : TG_SECRET_ENV;
  *src = xstrdup(f ? f : e);
  return 0;
}

static int once(parser_t *p, line_t *l, unsigned *seen) {
  if (*seen)
    return fail(p, l, TG_ECONFIG_DUP, NULL, "given twice (first at line %u)", *seen);
  *seen = l->lineno;
  return 0;
}

/* ---------------------------------------------------------------- directives */

static int d_listen(parser_t *p, line_t *l) {
  int rc = want_pos(p, l, 1, 1, "HOST:PORT");
  if (rc) return rc;
  tg_config *c = p->cfg;
  if (c->n_listen == TG_CONFIG_MAX_LISTEN)
    return fail(p, l, TG_ECONFIG_VALUE, NULL, "at most %d listen addresses", TG_CONFIG_MAX_LISTEN);
  const char *a = l->pos[0];
  const char *colon = strrchr(a, ':');
  if (colon == NULL || colon == a)
    return fail(p, l, TG_ECONFIG_VALUE, NULL, "\"%s\" is not HOST:PORT (example: 127.0.0.1:8402)",
                a);
  char host[256];
  size_t hl = (size_t)(colon - a);
  if (a[0] == '[') {
    if (hl < 3 || a[hl - 1] != ']')
      return fail(p, l, TG_ECONFIG_VALUE, NULL, "\"%s\": IPv6 hosts are written [::1]:PORT", a);
    a++;
    hl -= 2;
  }
  if (hl >= sizeof host) return fail(p, l, TG_ECONFIG_VALUE, NULL, "host too long");
  memcpy(host, a, hl);
  host[hl] = 0;
  uint64_t port;
  size_t used;
  if (parse_u64(&port, colon + 1, &used) || colon[1 + used] != 0 || port == 0 || port > 65535)
    return fail(p, l, TG_ECONFIG_VALUE, NULL, "\"%s\": port must be 1..65535", colon + 1);
  c->listen[c->n_listen].host = xstrdup(host);
  c->listen[c->n_listen].port = (uint16_t)port;
  c->n_listen++;
  return 0;
}

static int d_workers(parser_t *p, line_t *l) {
  int rc = once(p, l, &p->seen_workers);
  if (rc || (rc = want_pos(p, l, 1, 1, "N (0: one per core)"))) return rc;
  uint64_t n;
  size_t used;
  if (parse_u64(&n, l->pos[0], &used) || l->pos[0][used] || n > 256)
    return fail(p, l, TG_ECONFIG_VALUE, NULL, "\"%s\" is not a worker count 0..256", l->pos[0]);
  p->cfg->workers = (unsigned)n;
  return 0;
}

static int d_size(parser_t *p, line_t *l, size_t *out, uint64_t min, uint64_t max) {
  int rc = want_pos(p, l, 1, 1, "SIZE");
  if (rc) return rc;
  return val_size(p, l, NULL, l->pos[0], out, min, max);
}

static int d_duration(parser_t *p, line_t *l, uint32_t *out, uint64_t max_ms) {
  int rc = want_pos(p, l, 1, 1, "DURATION");
  if (rc) return rc;
  return val_duration(p, l, NULL, l->pos[0], out, max_ms);
}

static int d_public_url(parser_t *p, line_t *l) {
  int rc = once(p, l, &p->seen_public_url);
  if (rc || (rc = want_pos(p, l, 1, 1, "URL")) || (rc = val_url(p, l, NULL, l->pos[0]))) return rc;
  p->cfg->public_url = xstrdup(l->pos[0]);
  size_t n = strlen(p->cfg->public_url);
  while (n > 0 && p->cfg->public_url[n - 1] == '/') p->cfg->public_url[--n] = 0;
  return 0;
}

static int d_admin(parser_t *p, line_t *l) {
  int rc = once(p, l, &p->seen_admin);
  if (rc || (rc = want_pos(p, l, 0, 0, "prefix=/admin/ token_file=PATH | token_env=VAR")))
    return rc;
  const char *prefix = kv(l, "prefix");
  if (prefix) {
    size_t n = strlen(prefix);
    if (n < 2 || prefix[0] != '/' || prefix[n - 1] != '/')
      return fail(p, l, TG_ECONFIG_VALUE, "prefix", "\"%s\" must start and end with '/'", prefix);
    free(p->cfg->admin_prefix);
    p->cfg->admin_prefix = xstrdup(prefix);
  }
  return val_secret_src(p, l, "token_file", "token_env", &p->cfg->admin_token_kind,
                        &p->cfg->admin_token_src, 1);
}

/* facilitator token_file=PATH | token_env=VAR: POST /verify and /settle need the bearer token. */
static int d_facilitator(parser_t *p, line_t *l) {
  int rc = once(p, l, &p->seen_facilitator);
  if (rc || (rc = want_pos(p, l, 0, 0, "token_file=PATH | token_env=VAR"))) return rc;
  return val_secret_src(p, l, "token_file", "token_env", &p->cfg->facilitator_token_kind,
                        &p->cfg->facilitator_token_src, 1);
}

static int d_upstream(parser_t *p, line_t *l) {
  int rc = want_pos(p, l, 2, 2, "NAME URL [timeout=DUR] [connect_timeout=DUR] [idle_timeout=DUR]");
  if (rc || (rc = check_name(p, l, "upstream", l->pos[0])) || (rc = val_url(p, l, NULL, l->pos[1])))
    return rc;
  tg_config *c = p->cfg;
  if (tg_config_upstream_find(c, l->pos[0]))
    return fail(p, l, TG_ECONFIG_DUP, NULL, "upstream \"%s\" defined twice", l->pos[0]);
  if (c->n_upstreams == TG_CONFIG_MAX_ITEMS)
    return fail(p, l, TG_ECONFIG_VALUE, NULL, "too many upstreams");
  tg_config_upstream u = {.timeout_ms = 300000, .connect_ms = 5000, .idle_ms = 60000};
  const char *v;
  if ((v = kv(l, "timeout")) && (rc = val_duration(p, l, "timeout", v, &u.timeout_ms, 86400000)))
    return rc;
  if ((v = kv(l, "connect_timeout")) &&
      (rc = val_duration(p, l, "connect_timeout", v, &u.connect_ms, 600000)))
    return rc;
  if ((v = kv(l, "idle_timeout")) &&
      (rc = val_duration(p, l, "idle_timeout", v, &u.idle_ms, 86400000)))
    return rc;
  u.name = xstrdup(l->pos[0]);
  u.url = xstrdup(l->pos[1]);
  size_t n = strlen(u.url);
  while (n > 0 && u.url[n - 1] == '/') u.url[--n] = 0; /* the request path brings its own '/' */
  c->upstreams = xrealloc(c->upstreams, c->n_upstreams + 1, sizeof *c->upstreams);
  c->upstreams[c->n_upstreams++] = u;
  return 0;
}

static int d_price(parser_t *p, line_t *l) {
  tg_config *c = p->cfg;
  if (l->n_pos < 2)
    return fail(p, l, TG_ECONFIG_VALUE, NULL,
                "expected: price NAME call AMOUNT | price NAME token model=M input_per_mtok=A "
                "output_per_mtok=A max_per_call=A");
  int rc = check_name(p, l, "price", l->pos[0]);
  if (rc) return rc;
  tg_config_price *pr = (tg_config_price *)tg_config_price_find(c, l->pos[0]);
  if (strcmp(l->pos[1], "call") == 0) {
    if ((rc = want_pos(p, l, 3, 3, "NAME call AMOUNT"))) return rc;
    if (pr) return fail(p, l, TG_ECONFIG_DUP, NULL, "price \"%s\" defined twice", l->pos[0]);
    tg_config_price np = {.kind = TG_PRICE_CALL};
    if ((rc = val_amount(p, l, "AMOUNT", l->pos[2], &np.per_call))) return rc;
    if (c->n_prices == TG_CONFIG_MAX_ITEMS)
      return fail(p, l, TG_ECONFIG_VALUE, NULL, "too many prices");
    np.name = xstrdup(l->pos[0]);
    c->prices = xrealloc(c->prices, c->n_prices + 1, sizeof *c->prices);
    c->prices[c->n_prices++] = np;
    return 0;
  }
  if (strcmp(l->pos[1], "token") != 0)
    return fail(p, l, TG_ECONFIG_VALUE, NULL, "kind \"%s\" is neither `call` nor `token`",
                l->pos[1]);
  if ((rc = want_pos(p, l, 2, 2, "NAME token model=M input_per_mtok=A output_per_mtok=A max_per_call=A")))
    return rc;
  if (pr && pr->kind != TG_PRICE_TOKEN)
    return fail(p, l, TG_ECONFIG_DUP, NULL, "price \"%s\" is already a per-call price", l->pos[0]);
  const char *model = kv(l, "model");
  if (model == NULL) return fail(p, l, TG_ECONFIG_MISSING, "model", "missing (a model name or *)");
  if (*model == 0 || strlen(model) > 256)
    return fail(p, l, TG_ECONFIG_VALUE, "model", "must be 1..256 characters");
  tg_config_model_price m = {0};
  static const char *const keys[] = {"input_per_mtok", "output_per_mtok", "max_per_call"};
  tg_u256 *dst[] = {&m.input_per_mtok, &m.output_per_mtok, &m.max_per_call};
  for (int i = 0; i < 3; i++) {
    const char *v = kv(l, keys[i]);
    if (v == NULL) return fail(p, l, TG_ECONFIG_MISSING, keys[i], "missing");
    if ((rc = val_amount(p, l, keys[i], v, dst[i]))) return rc;
  }
  if (tg_u256_is_zero(&m.max_per_call))
    return fail(p, l, TG_ECONFIG_VALUE, "max_per_call", "must be above zero (it is the reservation)");
  if (pr) {
    for (size_t i = 0; i < pr->n_models; i++)
      if (strcmp(pr->models[i].model, model) == 0)
        return fail(p, l, TG_ECONFIG_DUP, "model", "\"%s\" priced twice in \"%s\"", model,
                    pr->name);
    if (pr->n_models == TG_CONFIG_MAX_ITEMS)
      return fail(p, l, TG_ECONFIG_VALUE, NULL, "too many models");
  } else {
    if (c->n_prices == TG_CONFIG_MAX_ITEMS)
      return fail(p, l, TG_ECONFIG_VALUE, NULL, "too many prices");
    c->prices = xrealloc(c->prices, c->n_prices + 1, sizeof *c->prices);
    pr = &c->prices[c->n_prices++];
    memset(pr, 0, sizeof *pr);
    pr->name = xstrdup(l->pos[0]);
    pr->kind = TG_PRICE_TOKEN;
  }
  m.model = xstrdup(model);
  pr->models = xrealloc(pr->models, pr->n_models + 1, sizeof *pr->models);
  pr->models[pr->n_models++] = m;
  return 0;
}

static int parse_methods(parser_t *p, line_t *l, const char *s) {
  if (strcmp(s, "*") == 0) return 0;
  static const char *const known[] = {"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"};
  const char *q = s;
  while (*q) {
    const char *e = strchr(q, ',');
    size_t n = e ? (size_t)(e - q) : strlen(q);
    size_t i;
    for (i = 0; i < sizeof known / sizeof *known; i++)
      if (strlen(known[i]) == n && memcmp(known[i], q, n) == 0) break;
    if (i == sizeof known / sizeof *known)
      return fail(p, l, TG_ECONFIG_VALUE, NULL,
                  "methods \"%s\": use *, or a comma list of GET POST PUT DELETE PATCH HEAD "
                  "OPTIONS (upper case)",
                  s);
    q += n;
    if (*q == ',') {
      q++;
      if (*q == 0) return fail(p, l, TG_ECONFIG_VALUE, NULL, "methods \"%s\": trailing comma", s);
    }
  }
  return 0;
}

static int parse_pattern(parser_t *p, line_t *l, const char *s, int *kind, size_t *lit) {
  size_t n = strlen(s);
  if (n == 0 || s[0] != '/' || n > 1024)
    return fail(p, l, TG_ECONFIG_VALUE, NULL, "pattern \"%s\" must start with '/'", s);
  *kind = TG_ROUTE_EXACT;
  *lit = 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (c == '*') {
      if (i != n - 1 || s[i - 1] != '/')
        return fail(p, l, TG_ECONFIG_VALUE, NULL,
                    "pattern \"%s\": '*' is allowed only as a last segment (\"/v1/*\")", s);
      *kind = TG_ROUTE_PREFIX;
      (*lit)--; /* "/v1/models/" + star also matches "/v1/models": no more specific than it */
      continue;
    }
    if (c == '{') {
      const char *e = strchr(s + i, '}');
      if (s[i - 1] != '/' || e == NULL || e == s + i + 1 || (e[1] != 0 && e[1] != '/'))
        return fail(p, l, TG_ECONFIG_VALUE, NULL,
                    "pattern \"%s\": a parameter is a whole segment like \"/{id}\"", s);
      if (*kind == TG_ROUTE_EXACT) *kind = TG_ROUTE_PARAM;
      i = (size_t)(e - s);
      continue;
    }
    if (c == '}' || c == '?' || c == '#' || (unsigned char)c <= 0x20)
      return fail(p, l, TG_ECONFIG_VALUE, NULL, "pattern \"%s\": character '%c' not allowed", s,
                  c);
    (*lit)++;
  }
  if (*kind == TG_ROUTE_PREFIX && strchr(s, '{'))
    return fail(p, l, TG_ECONFIG_VALUE, NULL, "pattern \"%s\": use either {param} or *, not both", s);
  return 0;
}

static int d_route(parser_t *p, line_t *l) {
  int rc = want_pos(p, l, 3, 3, "NAME METHODS PATTERN upstream=NAME [price=NAME] [inject_usage=yes|no] [strip_prefix=PATH]");
  if (rc || (rc = check_name(p, l, "route", l->pos[0])) || (rc = parse_methods(p, l, l->pos[1])))
    return rc;
  tg_config *c = p->cfg;
  for (size_t i = 0; i < c->n_routes; i++)
    if (strcmp(c->routes[i].name, l->pos[0]) == 0)
      return fail(p, l, TG_ECONFIG_DUP, NULL, "route \"%s\" defined twice (first at line %u)",
                  l->pos[0], p->route_lines[i]);
  tg_config_route r = {.price = -1, .inject_usage = 1};
  if ((rc = parse_pattern(p, l, l->pos[2], &r.kind, &r.literal_len))) return rc;
  for (size_t i = 0; i < c->n_routes; i++)
    if (strcmp(c->routes[i].pattern, l->pos[2]) == 0 && strcmp(c->routes[i].methods, l->pos[1]) == 0)
      return fail(p, l, TG_ECONFIG_DUP, NULL, "same methods and pattern as route \"%s\" (line %u)",
                  c->routes[i].name, p->route_lines[i]);
  const char *up = kv(l, "upstream"), *price = kv(l, "price"), *inj = kv(l, "inject_usage");
  const char *strip = kv(l, "strip_prefix");
  if (strip) {
    size_t sn = strlen(strip);
    if (sn < 2 || strip[0] != '/' || strip[sn - 1] == '/' || strncmp(l->pos[2], strip, sn) != 0 ||
        (l->pos[2][sn] != '/' && l->pos[2][sn] != 0))
      return fail(p, l, TG_ECONFIG_VALUE, "strip_prefix",
                  "\"%s\" must be a leading part of the pattern, like /paid for /paid/v1/*", strip);
  }
  if (up == NULL) return fail(p, l, TG_ECONFIG_MISSING, "upstream", "missing");
  if (inj) {
    if (strcmp(inj, "yes") == 0)
      r.inject_usage = 1;
    else if (strcmp(inj, "no") == 0)
      r.inject_usage = 0;
    else
      return fail(p, l, TG_ECONFIG_VALUE, "inject_usage", "\"%s\" is neither yes nor no", inj);
  }
  if (c->n_routes == TG_CONFIG_MAX_ITEMS) return fail(p, l, TG_ECONFIG_VALUE, NULL, "too many routes");
  r.name = xstrdup(l->pos[0]);
  r.methods = xstrdup(l->pos[1]);
  r.pattern = xstrdup(l->pos[2]);
  r.strip_prefix = strip ? xstrdup(strip) : NULL;
  c->routes = xrealloc(c->routes, c->n_routes + 1, sizeof *c->routes);
  p->route_lines = xrealloc(p->route_lines, c->n_routes + 1, sizeof *p->route_lines);
  p->route_upstream = xrealloc(p->route_upstream, c->n_routes + 1, sizeof *p->route_upstream);
  p->route_price = xrealloc(p->route_price, c->n_routes + 1, sizeof *p->route_price);
  p->route_lines[c->n_routes] = l->lineno;
  p->route_upstream[c->n_routes] = xstrdup(up);
  p->route_price[c->n_routes] = price ? xstrdup(price) : NULL;
  c->routes[c->n_routes++] = r;
  if (price && !p->first_priced_line) {
    p->first_priced_line = l->lineno;
    p->first_priced_route = c->routes[c->n_routes - 1].name;
  }
  return 0;
}

static int d_schemes(parser_t *p, line_t *l) {
  int rc = once(p, l, &p->seen_schemes);
  if (rc || (rc = want_pos(p, l, 1, 2, "exact|channel [exact|channel]"))) return rc;
  for (size_t i = 0; i < l->n_pos; i++) {
    if (strcmp(l->pos[i], "exact") == 0)
      p->cfg->scheme_exact = 1;
    else if (strcmp(l->pos[i], "channel") == 0)
      p->cfg->scheme_channel = 1;
    else
      return fail(p, l, TG_ECONFIG_VALUE, NULL, "unknown scheme \"%s\" (exact, channel)", l->pos[i]);
  }
  return 0;
}

static int d_chain_id(parser_t *p, line_t *l) {
  int rc = once(p, l, &p->seen_chain_id);
  if (rc || (rc = want_pos(p, l, 1, 1, "ID"))) return rc;
  uint64_t id;
  size_t used;
  if (parse_u64(&id, l->pos[0], &used) || l->pos[0][used] || id == 0)
    return fail(p, l, TG_ECONFIG_VALUE, NULL, "\"%s\" is not a positive decimal chain id", l->pos[0]);
  p->cfg->chain_id = id;
  return 0;
}

static int d_rpc_url(parser_t *p, line_t *l) {
  int rc = want_pos(p, l, 1, 1, "URL");
  if (rc || (rc = val_url(p, l, NULL, l->pos[0]))) return rc;
  tg_config *c = p->cfg;
  if (c->n_rpc_urls == 16) return fail(p, l, TG_ECONFIG_VALUE, NULL, "at most 16 rpc_url lines");
  c->rpc_urls = xrealloc(c->rpc_urls, c->n_rpc_urls + 1, sizeof *c->rpc_urls);
  c->rpc_urls[c->n_rpc_urls++] = xstrdup(l->pos[0]);
  return 0;
}

static int d_path(parser_t *p, line_t *l, unsigned *seen, char **out) {
  int rc = once(p, l, seen);
  if (rc || (rc = want_pos(p, l, 1, 1, "PATH"))) return rc;
  *out = xstrdup(l->pos[0]);
  return 0;
}

static int d_keystore(parser_t *p, line_t *l) {
  int rc = once(p, l, &p->seen_keystore);
  if (rc || (rc = want_pos(p, l, 1, 1, "PATH password_file=PATH | password_env=VAR"))) return rc;
  p->cfg->keystore = xstrdup(l->pos[0]);
  return val_secret_src(p, l, "password_file", "password_env", &p->cfg->password_kind,
                        &p->cfg->password_src, 1);
}

static int d_pay_to(parser_t *p, line_t *l) {
  int rc = once(p, l, &p->seen_pay_to);
  if (rc || (rc = want_pos(p, l, 1, 1, "ADDRESS"))) return rc;
  if ((rc = val_address(p, l, NULL, l->pos[0], &p->cfg->pay_to))) return rc;
  p->cfg->has_pay_to = 1;
  return 0;
}

static int d_asset(parser_t *p, line_t *l) {
  int rc = once(p, l, &p->seen_asset);
  if (rc || (rc = want_pos(p, l, 0, 0, "address=0x... name=NAME version=V decimals=N"))) return rc;
  tg_config *c = p->cfg;
  const char *v;
  if ((v = kv(l, "decimals"))) {
    uint64_t d;
    size_t used;
    if (parse_u64(&d, v, &used) || v[used] || d > 36)
      return fail(p, l, TG_ECONFIG_VALUE, "decimals", "\"%s\" is not 0..36", v);
    c->asset_decimals = (int)d;
  } else {
    return fail(p, l, TG_ECONFIG_MISSING, "decimals", "missing (6 for USDC)");
  }
  if ((v = kv(l, "address"))) {
    if ((rc = val_address(p, l, "address", v, &c->asset_address))) return rc;
    c->has_asset_address = 1;
  }
  if ((v = kv(l, "name"))) {
    if (!*v) return fail(p, l, TG_ECONFIG_VALUE, "name", "is empty");
    c->asset_name = xstrdup(v);
  }
  if ((v = kv(l, "version"))) {
    if (!*v) return fail(p, l, TG_ECONFIG_VALUE, "version", "is empty");
    c->asset_version = xstrdup(v);
  }
  return 0;
}

static int d_exact_wait(parser_t *p, line_t *l) {
  int rc = once(p, l, &p->seen_exact_wait);
  if (rc || (rc = want_pos(p, l, 1, 1, "submission|receipt"))) return rc;
  if (strcmp(l->pos[0], "submission") == 0)
    p->cfg->exact_wait = TG_EXACT_WAIT_SUBMISSION;
  else if (strcmp(l->pos[0], "receipt") == 0)
    p->cfg->exact_wait = TG_EXACT_WAIT_RECEIPT;
  else
    return fail(p, l, TG_ECONFIG_VALUE, NULL, "\"%s\" is neither submission nor receipt", l->pos[0]);
  return 0;
}

static int d_store(parser_t *p, line_t *l) {
  int rc = once(p, l, &p->seen_store);
  if (rc || (rc = want_pos(p, l, 2, 2, "sqlite PATH | postgres CONNINFO"))) return rc;
  if (strcmp(l->pos[0], "sqlite") == 0)
    p->cfg->store_kind = TG_STORE_SQLITE;
  else if (strcmp(l->pos[0], "postgres") == 0)
    p->cfg->store_kind = TG_STORE_POSTGRES;
  else
    return fail(p, l, TG_ECONFIG_VALUE, NULL, "backend \"%s\" is neither sqlite nor postgres",
                l->pos[0]);
  if (!*l->pos[1]) return fail(p, l, TG_ECONFIG_VALUE, NULL, "empty path or conninfo");
  p->cfg->store_conninfo = xstrdup(l->pos[1]);
  const char *v;
  if ((v = kv(l, "state_dir"))) {
    if (p->cfg->store_kind != TG_STORE_POSTGRES)
      return fail(p, l, TG_ECONFIG_VALUE, "state_dir", "only for postgres (sqlite keeps its "
                  "journals beside the database file)");
    if (v[0] != '/') return fail(p, l, TG_ECONFIG_VALUE, "state_dir", "\"%s\" is not an absolute path", v);
    p->cfg->store_state_dir = xstrdup(v);
  } else if (p->cfg->store_kind == TG_STORE_POSTGRES) {
    return fail(p, l, TG_ECONFIG_MISSING, "state_dir",
                "missing: a local directory for this instance's transaction journals");
  }
  if ((v = kv(l, "instance"))) {
    if (p->cfg->store_kind != TG_STORE_POSTGRES)
      return fail(p, l, TG_ECONFIG_VALUE, "instance", "only for postgres");
    if ((rc = check_name(p, l, "instance", v))) return rc;
    if (strlen(v) > 48) return fail(p, l, TG_ECONFIG_VALUE, "instance", "longer than 48 characters");
    p->cfg->store_instance = xstrdup(v);
  }
  if ((v = kv(l, "headroom"))) {
    if (p->cfg->store_kind != TG_STORE_POSTGRES)
      return fail(p, l, TG_ECONFIG_VALUE, "headroom", "only for postgres");
    if (strcmp(v, "on") == 0)
      p->cfg->store_headroom_off = 0;
    else if (strcmp(v, "off") == 0)
      p->cfg->store_headroom_off = 1;
    else
      return fail(p, l, TG_ECONFIG_VALUE, "headroom", "\"%s\" is neither on nor off", v);
  }
  return 0;
}

static int d_credit(parser_t *p, line_t *l) {
  int rc = want_pos(p, l, 2, 2, "PAYER_ADDRESS AMOUNT");
  if (rc) return rc;
  tg_config *c = p->cfg;
  tg_config_credit cr;
  if ((rc = val_address(p, l, NULL, l->pos[0], &cr.payer))) return rc;
  for (size_t i = 0; i < c->n_credits; i++)
    if (tg_address_eq(&c->credits[i].payer, &cr.payer))
      return fail(p, l, TG_ECONFIG_DUP, NULL, "payer %s has a credit limit already", l->pos[0]);
  if ((rc = val_amount(p, l, "AMOUNT", l->pos[1], &cr.limit))) return rc;
  if (c->n_credits == TG_CONFIG_MAX_ITEMS) return fail(p, l, TG_ECONFIG_VALUE, NULL, "too many credits");
  c->credits = xrealloc(c->credits, c->n_credits + 1, sizeof *c->credits);
  c->credits[c->n_credits++] = cr;
  return 0;
}

static int d_settle(parser_t *p, line_t *l) {
  int rc = once(p, l, &p->seen_settle);
  if (rc || (rc = want_pos(p, l, 0, 0, "interval=DUR min_amount=A max_age=DUR max_gas_price_gwei=G margin=DUR alert_after=N")))
    return rc;
  tg_config *c = p->cfg;
  const char *v;
  uint32_t ms = 0;
  if ((v = kv(l, "interval"))) {
    if ((rc = val_duration(p, l, "interval", v, &ms, 30ull * 86400000))) return rc;
    if (ms < 1000) return fail(p, l, TG_ECONFIG_VALUE, "interval", "must be at least 1s");
    c->settle_interval_s = ms / 1000;
  }
  if ((v = kv(l, "max_age"))) {
    if ((rc = val_duration(p, l, "max_age", v, &ms, 30ull * 86400000))) return rc;
    c->settle_max_age_s = ms / 1000;
  }
  if ((v = kv(l, "min_amount")) && (rc = val_amount(p, l, "min_amount", v, &c->settle_min_amount)))
    return rc;
  if ((v = kv(l, "margin"))) {
    if ((rc = val_duration(p, l, "margin", v, &ms, 7ull * 86400000))) return rc;
    c->settle_margin_s = ms / 1000;
  }
  if ((v = kv(l, "alert_after"))) {
    char *end = NULL;
    unsigned long n = strtoul(v, &end, 10);
    if (!*v || *end || *v == '-' || n < 1 || n > 1000)
      return fail(p, l, TG_ECONFIG_VALUE, "alert_after", "\"%s\" is not a number in 1..1000", v);
    c->settle_alert_after = (uint32_t)n;
  }
  if ((v = kv(l, "max_gas_price_gwei"))) {
    rc = tg_config_parse_amount(&c->settle_max_gas_price_wei, v, 9);
    if (rc)
      return fail(p, l, TG_ECONFIG_VALUE, "max_gas_price_gwei",
                  "\"%s\" is not a gas price in gwei (up to 9 decimals)", v);
  }
  return 0;
}

static int d_channel(parser_t *p, line_t *l) {
  int rc = once(p, l, &p->seen_channel);
  if (rc || (rc = want_pos(p, l, 0, 0, "withdraw_delay=DURATION min_deposit=AMOUNT gasless=yes|no"))) return rc;
  tg_config *c = p->cfg;
  const char *v;
  if ((v = kv(l, "withdraw_delay"))) {
    uint32_t ms = 0;
    if ((rc = val_duration(p, l, "withdraw_delay", v, &ms, 30ull * 86400000))) return rc;
    if (ms < 900000)
      return fail(p, l, TG_ECONFIG_VALUE, "withdraw_delay", "must be at least 15m (the contract's minimum)");
    c->channel_withdraw_delay_s = ms / 1000;
  }
  if ((v = kv(l, "min_deposit")) && (rc = val_amount(p, l, "min_deposit", v, &c->channel_min_deposit)))
    return rc;
  if ((v = kv(l, "gasless"))) {
    if (strcmp(v, "yes") == 0)
      c->channel_gasless = 1;
    else if (strcmp(v, "no") == 0)
      c->channel_gasless = 0;
    else
      return fail(p, l, TG_ECONFIG_VALUE, "gasless", "\"%s\" is neither yes nor no", v);
  }
  return 0;
}

/* "a,b,c" into a fresh array of strings (no empty items). */
static int split_list(parser_t *p, line_t *l, const char *key, const char *v, char ***out,
                      size_t *n) {
  *out = NULL;
  *n = 0;
  const char *s = v;
  while (1) {
    const char *e = strchr(s, ',');
    size_t len = e ? (size_t)(e - s) : strlen(s);
    if (len == 0 || len > TG_CONFIG_NAME_MAX * 2)
      return fail(p, l, TG_ECONFIG_VALUE, key, "\"%s\" is not a comma list of names", v);
    if (*n == TG_CONFIG_MAX_ITEMS) return fail(p, l, TG_ECONFIG_VALUE, key, "too many items");
    *out = xrealloc(*out, *n + 1, sizeof **out);
    char *item = xstrdup(s);
    item[len] = 0;
    (*out)[(*n)++] = item;
    if (!e) break;
    s = e + 1;
  }
  return 0;
}

static void free_list(char **v, size_t n) {
  for (size_t i = 0; i < n; i++) free(v[i]);
  free(v);
}

static void free_plan(tg_config_plan *pl) {
  free(pl->name);
  free_list(pl->routes, pl->n_routes);
  free_list(pl->models, pl->n_models);
}

static int d_plan(parser_t *p, line_t *l) {
  int rc = want_pos(p, l, 1, 1,
                    "NAME id=TOKEN_ID routes=R1,R2 [models=M1,M2] quota=N unit=calls|tokens "
                    "period=DURATION [overage=AMOUNT]");
  if (rc || (rc = check_name(p, l, "plan", l->pos[0]))) return rc;
  tg_config *c = p->cfg;
  for (size_t i = 0; i < c->n_plans; i++)
    if (strcmp(c->plans[i].name, l->pos[0]) == 0)
      return fail(p, l, TG_ECONFIG_DUP, NULL, "plan \"%s\" defined twice (first at line %u)",
                  l->pos[0], p->plan_lines[i]);
  tg_config_plan pl;
  memset(&pl, 0, sizeof pl);
  const char *id = kv(l, "id"), *routes = kv(l, "routes"), *models = kv(l, "models");
  const char *quota = kv(l, "quota"), *unit = kv(l, "unit"), *period = kv(l, "period");
  const char *overage = kv(l, "overage");
  if (!id) return fail(p, l, TG_ECONFIG_MISSING, "id", "missing: the plan's ERC-1155 token id");
  if (tg_u256_parse_dec(&pl.id, id, strlen(id)) != 0)
    return fail(p, l, TG_ECONFIG_VALUE, "id", "\"%s\" is not a decimal token id", id);
  for (size_t i = 0; i < c->n_plans; i++)
    if (tg_u256_cmp(&c->plans[i].id, &pl.id) == 0)
      return fail(p, l, TG_ECONFIG_DUP, "id", "plan \"%s\" has id %s already", c->plans[i].name, id);
  if (!routes) return fail(p, l, TG_ECONFIG_MISSING, "routes", "missing: the routes the pass covers");
  if (!quota) return fail(p, l, TG_ECONFIG_MISSING, "quota", "missing: included calls or tokens per period");
  size_t used;
  if (parse_u64(&pl.quota, quota, &used) || quota[used])
    return fail(p, l, TG_ECONFIG_VALUE, "quota", "\"%s\" is not a whole number", quota);
  if (!unit || strcmp(unit, "calls") == 0)
    pl.unit = TG_QUOTA_CALLS;
  else if (strcmp(unit, "tokens") == 0)
    pl.unit = TG_QUOTA_TOKENS;
  else
    return fail(p, l, TG_ECONFIG_VALUE, "unit", "\"%s\" is neither calls nor tokens", unit);
  if (!period) return fail(p, l, TG_ECONFIG_MISSING, "period", "missing: the quota period (e.g. 720h)");
  uint64_t ms;
  if (tg_config_parse_duration_ms(&ms, period) || ms < 1000 || ms > 366ull * 86400000)
    return fail(p, l, TG_ECONFIG_VALUE, "period",
                "\"%s\" is not a duration between 1s and 8784h (examples: 1h, 720h)", period);
  pl.period_s = ms / 1000;
  if (overage && (rc = val_amount(p, l, "overage", overage, &pl.overage))) return rc;
  if (c->n_plans == TG_CONFIG_MAX_ITEMS) return fail(p, l, TG_ECONFIG_VALUE, NULL, "too many plans");
  if ((rc = split_list(p, l, "routes", routes, &pl.routes, &pl.n_routes)) ||
      (models && (rc = split_list(p, l, "models", models, &pl.models, &pl.n_models)))) {
    free_plan(&pl);
    return rc;
  }
  pl.name = xstrdup(l->pos[0]);
  c->plans = xrealloc(c->plans, c->n_plans + 1, sizeof *c->plans);
  p->plan_lines = xrealloc(p->plan_lines, c->n_plans + 1, sizeof *p->plan_lines);
  p->plan_lines[c->n_plans] = l->lineno;
  c->plans[c->n_plans++] = pl;
  return 0;
}

static int d_passes(parser_t *p, line_t *l) {
  int rc = once(p, l, &p->seen_passes);
  if (rc || (rc = want_pos(p, l, 0, 0,
                           "[domain=HOST[:PORT]] [uri=URL] [session_ttl=DUR] [nonce_ttl=DUR] "
                           "[agent_auth=yes|no]")))
    return rc;
  tg_config *c = p->cfg;
  const char *v;
  if ((v = kv(l, "domain"))) {
    if (!*v || strchr(v, '/') || strchr(v, ' '))
      return fail(p, l, TG_ECONFIG_VALUE, "domain", "\"%s\" is not a host[:port]", v);
    c->passes_domain = xstrdup(v);
  }
  if ((v = kv(l, "uri"))) {
    if ((rc = val_url(p, l, "uri", v))) return rc;
    c->passes_uri = xstrdup(v);
  }
  if ((v = kv(l, "session_ttl"))) {
    uint32_t ms = 0;
    if ((rc = val_duration(p, l, "session_ttl", v, &ms, 30ull * 86400000))) return rc;
    if (ms < 60000) return fail(p, l, TG_ECONFIG_VALUE, "session_ttl", "must be at least 1m");
    c->session_ttl_s = ms / 1000;
  }
  if ((v = kv(l, "nonce_ttl"))) {
    uint32_t ms = 0;
    if ((rc = val_duration(p, l, "nonce_ttl", v, &ms, 3600000))) return rc;
    if (ms < 10000) return fail(p, l, TG_ECONFIG_VALUE, "nonce_ttl", "must be at least 10s");
    c->nonce_ttl_s = ms / 1000;
  }
  if ((v = kv(l, "agent_auth"))) {
    if (strcmp(v, "yes") == 0)
      c->agent_auth = 1;
    else if (strcmp(v, "no") == 0)
      c->agent_auth = 0;
    else
      return fail(p, l, TG_ECONFIG_VALUE, "agent_auth", "\"%s\" is neither yes nor no", v);
  }
  return 0;
}

static int d_log_format(parser_t *p, line_t *l) {
  int rc = once(p, l, &p->seen_log_format);
  if (rc || (rc = want_pos(p, l, 1, 1, "json|text"))) return rc;
  if (strcmp(l->pos[0], "json") == 0)
    p->cfg->log_format = TG_LOG_JSON;
  else if (strcmp(l->pos[0], "text") == 0)
    p->cfg->log_format = TG_LOG_TEXT;
  else
    return fail(p, l, TG_ECONFIG_VALUE, NULL, "\"%s\" is neither json nor text", l->pos[0]);
  return 0;
}

static int d_access_log(parser_t *p, line_t *l) {
  int rc = once(p, l, &p->seen_access_log);
  if (rc || (rc = want_pos(p, l, 1, 1, "PATH | - | off"))) return rc;
  free(p->cfg->access_log);
  p->cfg->access_log = strcmp(l->pos[0], "off") == 0 ? NULL : xstrdup(l->pos[0]);
  return 0;
}

static int dispatch(parser_t *p, line_t *l) {
  const char *d = l->directive;
  tg_config *c = p->cfg;
  if (p->pass == 1) return strcmp(d, "asset") == 0 ? d_asset(p, l) : 0;
  if (strcmp(d, "asset") == 0) {
    for (size_t i = 0; i < l->n_kv; i++) l->used[i] = 1; /* read in pass 1 */
    return 0;
  }
  if (strcmp(d, "listen") == 0) return d_listen(p, l);
  if (strcmp(d, "workers") == 0) return d_workers(p, l);
  if (strcmp(d, "max_header_bytes") == 0) return d_size(p, l, &c->max_header_bytes, 1024, 1 << 20);
  if (strcmp(d, "max_body_bytes") == 0) return d_size(p, l, &c->max_body_bytes, 0, 1 << 30);
  if (strcmp(d, "max_response_bytes") == 0)
    return d_size(p, l, &c->max_response_bytes, 1024, 1 << 30);
  if (strcmp(d, "stream_buffer_bytes") == 0)
    return d_size(p, l, &c->stream_buffer_bytes, 4096, 1 << 30);
  if (strcmp(d, "client_timeout") == 0) return d_duration(p, l, &c->client_timeout_ms, 3600000);
  if (strcmp(d, "shutdown_timeout") == 0) return d_duration(p, l, &c->shutdown_timeout_ms, 3600000);
  if (strcmp(d, "public_url") == 0) return d_public_url(p, l);
  if (strcmp(d, "admin") == 0) return d_admin(p, l);
  if (strcmp(d, "facilitator") == 0) return d_facilitator(p, l);
  if (strcmp(d, "upstream") == 0) return d_upstream(p, l);
  if (strcmp(d, "price") == 0) return d_price(p, l);
  if (strcmp(d, "route") == 0) return d_route(p, l);
  if (strcmp(d, "schemes") == 0) return d_schemes(p, l);
  if (strcmp(d, "chain_id") == 0) return d_chain_id(p, l);
  if (strcmp(d, "rpc_url") == 0) return d_rpc_url(p, l);
  if (strcmp(d, "deployment") == 0) return d_path(p, l, &p->seen_deployment, &c->deployment);
  if (strcmp(d, "keystore") == 0) return d_keystore(p, l);
  if (strcmp(d, "pay_to") == 0) return d_pay_to(p, l);
  if (strcmp(d, "exact_wait") == 0) return d_exact_wait(p, l);
  if (strcmp(d, "exact_validity") == 0) {
    uint32_t ms = 0;
    int rc = d_duration(p, l, &ms, 86400000);
    if (rc == 0) c->exact_validity_s = ms / 1000;
    return rc;
  }
  if (strcmp(d, "store") == 0) return d_store(p, l);
  if (strcmp(d, "credit") == 0) return d_credit(p, l);
  if (strcmp(d, "settle") == 0) return d_settle(p, l);
  if (strcmp(d, "channel") == 0) return d_channel(p, l);
  if (strcmp(d, "plan") == 0) return d_plan(p, l);
  if (strcmp(d, "passes") == 0) return d_passes(p, l);
  if (strcmp(d, "log_format") == 0) return d_log_format(p, l);
  if (strcmp(d, "access_log") == 0) return d_access_log(p, l);
  return fail(p, l, TG_ECONFIG_KEY, NULL, "unknown directive (see docs/tollgated.conf.sample)");
}

/* ---------------------------------------------------------------- whole file */

static void defaults(tg_config *c) {
  c->workers = 0;
  c->max_header_bytes = 16384;
  c->max_body_bytes = 1 << 20;
  c->max_response_bytes = 8 << 20;
  c->stream_buffer_bytes = 256 << 10;
  c->client_timeout_ms = 60000;
  c->shutdown_timeout_ms = 30000;
  c->admin_prefix = xstrdup("/admin/");
  c->asset_decimals = -1;
  c->exact_wait = TG_EXACT_WAIT_SUBMISSION;
  c->exact_validity_s = 60;
  c->settle_interval_s = 3600;
  c->channel_withdraw_delay_s = 86400;
  c->settle_max_age_s = 86400;
  c->settle_margin_s = 300;
  c->settle_alert_after = 3;
  c->log_format = TG_LOG_JSON;
  c->access_log = xstrdup("-");
  c->session_ttl_s = 86400;
  c->nonce_ttl_s = 300;
  c->agent_auth = 1;
  atomic_init(&c->refs, 1);
}

static int run_pass(parser_t *p, const char *text, size_t len) {
  size_t off = 0;
  unsigned lineno = 0;
  char buf[TG_CONFIG_LINE_MAX + 1];
  while (off < len) {
    const char *nl = memchr(text + off, '\n', len - off);
    size_t n = nl ? (size_t)(nl - (text + off)) : len - off;
    lineno++;
    line_t l = {.name = p->name, .lineno = lineno};
    if (n > TG_CONFIG_LINE_MAX) {
      line_t w = {.lineno = lineno, .directive = "line"};
      return fail(p, &w, TG_ECONFIG, NULL, "longer than %d bytes", TG_CONFIG_LINE_MAX);
    }
    memcpy(buf, text + off, n);
    buf[n] = 0;
    off += n + (nl ? 1 : 0);
    if (memchr(buf, 0, n)) {
      line_t w = {.lineno = lineno, .directive = "line"};
      return fail(p, &w, TG_ECONFIG, NULL, "contains a NUL byte");
    }
    int rc = tokenize(p, &l, buf);
    if (rc == 0 && l.directive) {
      rc = dispatch(p, &l);
      if (rc == 0 && p->pass == 2)
        for (size_t i = 0; i < l.n_kv; i++)
          if (!l.used[i]) {
            rc = fail(p, &l, TG_ECONFIG_KEY, l.keys[i], "unknown key for this directive");
            break;
          }
    }
    free(l.store);
    if (rc) return rc;
  }
  return 0;
}

/* Checks that need the whole file: references and what priced routes require. */
static int cross_check(parser_t *p) {
  tg_config *c = p->cfg;
  for (size_t i = 0; i < c->n_routes; i++) {
    line_t l = {.lineno = p->route_lines[i], .directive = "route"};
    size_t u;
    for (u = 0; u < c->n_upstreams; u++)
      if (strcmp(c->upstreams[u].name, p->route_upstream[i]) == 0) break;
    if (u == c->n_upstreams)
      return fail(p, &l, TG_ECONFIG_REF, "upstream", "no upstream named \"%s\"", p->route_upstream[i]);
    c->routes[i].upstream = u;
    if (p->route_price[i]) {
      size_t k;
      for (k = 0; k < c->n_prices; k++)
        if (strcmp(c->prices[k].name, p->route_price[i]) == 0) break;
      if (k == c->n_prices)
        return fail(p, &l, TG_ECONFIG_REF, "price", "no price named \"%s\"", p->route_price[i]);
      c->routes[i].price = (long)k;
    }
  }
  for (size_t i = 0; i < c->n_plans; i++) {
    line_t l = {.lineno = p->plan_lines[i], .directive = "plan"};
    for (size_t k = 0; k < c->plans[i].n_routes; k++) {
      const char *rn = c->plans[i].routes[k];
      size_t r;
      for (r = 0; r < c->n_routes; r++)
        if (strcmp(c->routes[r].name, rn) == 0) break;
      if (r == c->n_routes)
        return fail(p, &l, TG_ECONFIG_REF, "routes", "no route named \"%s\"", rn);
      if (c->routes[r].price < 0)
        return fail(p, &l, TG_ECONFIG_VALUE, "routes",
                    "route \"%s\" has no price: a pass only matters on priced routes", rn);
    }
  }
  if (c->n_listen == 0) {
    c->listen[0].host = xstrdup("127.0.0.1");
    c->listen[0].port = 8402;
    c->n_listen = 1;
  }
  if (p->first_priced_line == 0) return 0;
  /* A priced route needs everything that takes and settles a payment. */
  const char *missing = NULL, *hint = NULL;
  if (!c->scheme_exact && !c->scheme_channel)
    missing = "schemes", hint = "schemes exact channel";
  else if (!c->chain_id)
    missing = "chain_id", hint = "chain_id 31337";
  else if (c->n_rpc_urls == 0)
    missing = "rpc_url", hint = "rpc_url http://127.0.0.1:8545";
  else if (!c->has_pay_to)
    missing = "pay_to", hint = "pay_to 0x...";
  else if (c->asset_decimals < 0)
    missing = "asset", hint = "asset address=0x... name=\"USD Coin\" version=2 decimals=6";
  else if (!c->has_asset_address && !c->deployment)
    missing = "asset address= (or deployment)", hint = "asset address=0x... or deployment PATH";
  else if (!c->keystore)
    missing = "keystore", hint = "keystore PATH password_env=TOLLGATE_PASSWORD";
  else if (!c->store_kind)
    missing = "store", hint = "store sqlite /var/lib/tollgate/tollgate.db";
  else if (c->scheme_exact && (!c->asset_name || !c->asset_version) && !c->deployment)
    missing = "asset name= version=", hint = "the token's EIP-712 domain, for exact";
  if (missing)
    return fail(p, NULL, TG_ECONFIG_MISSING,
                NULL, "missing `%s` (needed because route \"%s\" at line %u is priced): %s",
                missing, p->first_priced_route, p->first_priced_line, hint);
  return 0;
}

static void free_cfg(tg_config *c) {
  if (c == NULL) return;
  for (size_t i = 0; i < c->n_plans; i++) free_plan(&c->plans[i]);
  free(c->plans);
  free(c->passes_domain);
  free(c->passes_uri);
  free(c->path);
  for (size_t i = 0; i < c->n_listen; i++) free(c->listen[i].host);
  free(c->public_url);
  free(c->admin_prefix);
  free(c->admin_token_src);
  free(c->facilitator_token_src);
  for (size_t i = 0; i < c->n_upstreams; i++) {
    free(c->upstreams[i].name);
    free(c->upstreams[i].url);
  }
  free(c->upstreams);
  for (size_t i = 0; i < c->n_routes; i++) {
    free(c->routes[i].name);
    free(c->routes[i].methods);
    free(c->routes[i].pattern);
    free(c->routes[i].strip_prefix);
  }
  free(c->routes);
  for (size_t i = 0; i < c->n_prices; i++) {
    free(c->prices[i].name);
    for (size_t k = 0; k < c->prices[i].n_models; k++) free(c->prices[i].models[k].model);
    free(c->prices[i].models);
  }
  free(c->prices);
  for (size_t i = 0; i < c->n_rpc_urls; i++) free(c->rpc_urls[i]);
  free(c->rpc_urls);
  free(c->deployment);
  free(c->keystore);
  free(c->password_src);
  free(c->asset_name);
  free(c->asset_version);
  free(c->store_conninfo);
  free(c->store_state_dir);
  free(c->store_instance);
  free(c->credits);
  free(c->access_log);
  free(c);
}

int tg_config_parse(tg_config **out, char *err, const char *name, const char *text, size_t len) {
  *out = NULL;
  err[0] = 0;
  tg_config *c = calloc(1, sizeof *c);
  if (c == NULL) abort();
  defaults(c);
  c->path = xstrdup(name);
  parser_t p = {.cfg = c, .err = err, .name = name};
  int rc = 0;
  if (len > TG_CONFIG_FILE_MAX)
    rc = fail(&p, NULL, TG_ECONFIG_FILE, NULL, "larger than %zu bytes", TG_CONFIG_FILE_MAX);
  if (rc == 0) {
    p.pass = 1;
    rc = run_pass(&p, text, len);
  }
  if (rc == 0) {
    p.pass = 2;
    rc = run_pass(&p, text, len);
  }
  if (rc == 0) rc = cross_check(&p);
  for (size_t i = 0; i < c->n_routes; i++) {
    free(p.route_upstream[i]);
    free(p.route_price[i]);
  }
  free(p.route_upstream);
  free(p.route_price);
  free(p.route_lines);
  free(p.plan_lines);
  if (rc) {
    free_cfg(c);
    return rc;
  }
  *out = c;
  return 0;
}

int tg_config_load(tg_config **out, char *err, const char *path) {
  *out = NULL;
  err[0] = 0;
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    snprintf(err, TG_CONFIG_ERR_MAX, "%s: cannot open: %s", path, strerror(errno));
    return TG_ECONFIG_FILE;
  }
  char *text = malloc(TG_CONFIG_FILE_MAX + 1);
  if (text == NULL) abort();
  size_t n = fread(text, 1, TG_CONFIG_FILE_MAX + 1, f);
  int rerr = ferror(f);
  fclose(f);
  if (rerr) {
    free(text);
    snprintf(err, TG_CONFIG_ERR_MAX, "%s: read error", path);
    return TG_ECONFIG_FILE;
  }
  int rc = tg_config_parse(out, err, path, text, n);
  free(text);
  return rc;
}

tg_config *tg_config_ref(tg_config *cfg) {
  if (cfg) atomic_fetch_add_explicit(&cfg->refs, 1, memory_order_relaxed);
  return cfg;
}

void tg_config_unref(tg_config *cfg) {
  if (cfg == NULL) return;
  if (atomic_fetch_sub_explicit(&cfg->refs, 1, memory_order_acq_rel) == 1)
    free_cfg(cfg);
}

const tg_config_upstream *tg_config_upstream_find(const tg_config *cfg, const char *name) {
  for (size_t i = 0; i < cfg->n_upstreams; i++)
    if (strcmp(cfg->upstreams[i].name, name) == 0) return &cfg->upstreams[i];
  return NULL;
}

const tg_config_price *tg_config_price_find(const tg_config *cfg, const char *name) {
  for (size_t i = 0; i < cfg->n_prices; i++)
    if (strcmp(cfg->prices[i].name, name) == 0) return &cfg->prices[i];
  return NULL;
}

const tg_config_model_price *tg_config_model_price_find(const tg_config_price *p,
                                                        const char *model) {
  const tg_config_model_price *star = NULL;
  for (size_t i = 0; i < p->n_models; i++) {
    if (model && strcmp(p->models[i].model, model) == 0) return &p->models[i];
    if (strcmp(p->models[i].model, "*") == 0) star = &p->models[i];
  }
  return star;
}

size_t tg_config_plans_for(const tg_config *cfg, const char *route, const char *model,
                           const tg_config_plan **out, size_t max) {
  size_t n = 0;
  for (size_t i = 0; i < cfg->n_plans && n < max; i++) {
    const tg_config_plan *pl = &cfg->plans[i];
    int route_ok = 0, model_ok = pl->n_models == 0;
    for (size_t k = 0; k < pl->n_routes && !route_ok; k++) route_ok = strcmp(pl->routes[k], route) == 0;
    for (size_t k = 0; k < pl->n_models && !model_ok && model; k++)
      model_ok = strcmp(pl->models[k], model) == 0 || strcmp(pl->models[k], "*") == 0;
    if (route_ok && model_ok) out[n++] = pl;
  }
  return n;
}
