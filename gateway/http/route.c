/* Route matching: a request's method and path to the configured route, longest match first. */
#include "http/route.h"

#include <string.h>

int tg_route_method_ok(const tg_config_route *r, const char *method) {
  if (strcmp(r->methods, "*") == 0) return 1;
  size_t n = strlen(method);
  const char *q = r->methods;
  while (*q) {
    const char *e = strchr(q, ',');
    size_t k = e ? (size_t)(e - q) : strlen(q);
    if (k == n && memcmp(q, method, n) == 0) return 1;
    q += k;
    if (*q == ',') q++;
  }
  return 0;
}

/* Matches pattern against path; 1 when it does. */
static int matches(const tg_config_route *r, const char *path) {
  const char *p = r->pattern, *s = path;
  while (*p) {
    if (*p == '*') return 1; /* prefix: whatever follows */
    if (*p == '{') {
      const char *e = strchr(p, '}');
      size_t seg = strcspn(s, "/");
      if (seg == 0) return 0;
      s += seg;
      p = e + 1;
      continue;
    }
    if (*s != *p) {
      /* "/v1/" + star also matches "/v1" */
      return *s == 0 && p[0] == '/' && p[1] == '*' && p[2] == 0;
    }
    p++;
    s++;
  }
  return *s == 0;
}

const tg_config_route *tg_route_match(const tg_config *cfg, const char *method, const char *path) {
  const tg_config_route *best = NULL;
  long best_score = -1;
  for (size_t i = 0; i < cfg->n_routes; i++) {
    const tg_config_route *r = &cfg->routes[i];
    if (!tg_route_method_ok(r, method) || !matches(r, path)) continue;
    int kind_rank = r->kind == TG_ROUTE_EXACT ? 2 : r->kind == TG_ROUTE_PARAM ? 1 : 0;
    long score = (long)r->literal_len * 8 + kind_rank * 2 + (strcmp(r->methods, "*") != 0);
    if (score > best_score) {
      best = r;
      best_score = score;
    }
  }
  return best;
}
