/* The payer's reader of the `: x402-charge` SSE trailer that ends a paid stream. */
#include <jansson.h>
#include <string.h>

#include "client/client_int.h"
#include "tollgate/u256.h"

static void trailer_line(tg_client__sse *s, const char *l, size_t n) {
  static const char pfx[] = ": x402-charge ";
  if (n < sizeof pfx - 1 || memcmp(l, pfx, sizeof pfx - 1) != 0) return;
  json_t *j = json_loadb(l + sizeof pfx - 1, n - (sizeof pfx - 1), JSON_REJECT_DUPLICATES, NULL);
  const char *amt = json_string_value(json_object_get(j, "chargedAmount"));
  const char *cum = json_string_value(json_object_get(j, "chargedCumulativeAmount"));
  tg_u256 v, w;
  if (json_is_object(j) && amt && tg_u256_parse_dec(&v, amt, strlen(amt)) == 0) {
    s->found = 1;
    s->charged = v;
    s->has_cum = cum && tg_u256_parse_dec(&w, cum, strlen(cum)) == 0;
    if (s->has_cum) s->cum = w;
  }
  json_decref(j);
}

void tg_client__sse_feed(tg_client__sse *s, const char *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    char ch = p[i];
    if (ch == '\n') {
      size_t len = s->len;
      if (len && s->line[len - 1] == '\r') len--;
      if (!s->skip && len) trailer_line(s, s->line, len);
      s->len = 0;
      s->skip = 0;
      continue;
    }
    if (s->skip) continue;
    if ((s->len == 0 && ch != ':') || s->len == sizeof s->line) {
      s->skip = 1;
      s->len = 0;
      continue;
    }
    s->line[s->len++] = ch;
  }
}
