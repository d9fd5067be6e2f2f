/* Route matching: a request's method and path to the configured route, longest match first. */
#ifndef TG_HTTP_ROUTE_H
#define TG_HTTP_ROUTE_H

#include <stddef.h>

#include "core/config.h"

/*
 * Patterns: exact ("/v1/chat/completions"), prefix ("/v1/" followed by a
 * star: that path and everything below it, and "/v1" itself), and
 * parameters ("/v1/models/{id}": one non-empty segment). The route with the
 * most literal characters wins; at a tie exact beats parameter beats
 * prefix, then a route naming the method beats one with "*", then the
 * first in the file. `path` has no query string. NULL when none matches.
 */
const tg_config_route *tg_route_match(const tg_config *cfg, const char *method, const char *path);
/* 1 when `method` is in the route's method list. */
int tg_route_method_ok(const tg_config_route *r, const char *method);

#endif
