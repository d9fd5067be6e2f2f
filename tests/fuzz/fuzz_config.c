/* libFuzzer driver: the configuration parser on arbitrary text, then route lookups on what it accepts. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "http/route.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  tg_config *c = NULL;
  char err[TG_CONFIG_ERR_MAX];
  int rc = tg_config_parse(&c, err, "fuzz.conf", (const char *)data, size);
  if (rc == 0) {
    if (c == NULL || c->n_listen == 0) abort();
    for (size_t i = 0; i < c->n_routes; i++) {
      const tg_config_route *r = &c->routes[i];
      if (r->upstream >= c->n_upstreams) abort();
      if (r->price >= (long)c->n_prices) abort();
      /* A route's own pattern (with parameters filled) is matched by some route. */
      if (strchr(r->pattern, '{') == NULL && strchr(r->pattern, '*') == NULL &&
          tg_route_match(c, "GET", r->pattern) == NULL && tg_route_method_ok(r, "GET"))
        abort();
    }
    tg_route_match(c, "POST", "/v1/chat/completions");
    tg_config_unref(c);
  } else {
    if (c != NULL || err[0] == 0 || rc >= 0) abort();
  }
  return 0;
}
