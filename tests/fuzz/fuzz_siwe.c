/* libFuzzer driver: the EIP-4361 message parser on arbitrary bytes; what parses formats and parses the same. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate/siwe.h"

static int same(tg_str a, tg_str b) { return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0); }

/* The X-Tollgate-Auth header decoder: what decodes is a message and a signature within caps. */
static void header(const uint8_t *data, size_t size) {
  tg_buf msg, sig;
  tg_buf_init(&msg, TG_SIWE_MESSAGE_MAX);
  tg_buf_init(&sig, 1024);
  int rc = tg_siwe_header_decode(&msg, &sig, (const char *)data, size);
  if (rc != 0 && rc != TG_EPASS_AUTH) abort();
  if (rc == 0 && (sig.len == 0 || msg.len > TG_SIWE_MESSAGE_MAX || sig.len > 1024)) abort();
  tg_buf_cleanup(&msg);
  tg_buf_cleanup(&sig);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  header(data, size);
  tg_siwe_message m, n;
  int rc = tg_siwe_parse(&m, (const char *)data, size);
  if (rc != 0) {
    if (rc != TG_ESIWE_MALFORMED && rc != TG_ETOOBIG) abort();
    return 0;
  }
  /* Every view lies inside the input. */
  const char *lo = (const char *)data, *hi = lo + size;
  tg_str views[4] = {m.domain, m.uri, m.nonce, m.statement};
  for (int i = 0; i < 4; i++)
    if (views[i].len && (views[i].ptr < lo || views[i].ptr + views[i].len > hi)) abort();
  if (m.n_resources > TG_SIWE_RESOURCES_MAX) abort();
  /* The canonical text parses back to the same fields. */
  tg_buf b;
  tg_buf_init(&b, 4 * TG_SIWE_MESSAGE_MAX);
  if (tg_siwe_format(&b, &m) != 0) abort();
  rc = tg_siwe_parse(&n, (const char *)b.data, b.len);
  if (rc == TG_ETOOBIG) { /* times re-printed may grow the text past the cap */
    tg_buf_cleanup(&b);
    return 0;
  }
  if (rc != 0) abort();
  if (!same(m.domain, n.domain) || !same(m.scheme, n.scheme) || !same(m.uri, n.uri) ||
      !same(m.nonce, n.nonce) || m.chain_id != n.chain_id || m.issued_at != n.issued_at ||
      m.has_expiration != n.has_expiration || m.expiration != n.expiration ||
      m.has_not_before != n.has_not_before || m.not_before != n.not_before ||
      m.has_statement != n.has_statement || !same(m.statement, n.statement) ||
      m.n_resources != n.n_resources || memcmp(&m.address, &n.address, sizeof m.address) != 0)
    abort();
  for (size_t i = 0; i < m.n_resources; i++)
    if (!same(m.resources[i], n.resources[i])) abort();
  tg_buf_cleanup(&b);
  return 0;
}
