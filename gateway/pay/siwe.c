/* Sign-In with Ethereum (EIP-4361): strict message parser, canonical formatter and the verifier's checks. */
#include "tollgate/siwe.h"

#include <stdio.h>
#include <string.h>

#include "tollgate/address.h"
#include "tollgate/hex.h"
#include "tollgate/x402.h"

/*
 * The parser walks the text line by line (LF only: a CR anywhere is
 * malformed) and accepts exactly the EIP-4361 ABNF, so that two parties
 * never read one signed text two ways. Every field is a view into the
 * caller's text; nothing is allocated.
 */

static const char preamble[] = " wants you to sign in with your Ethereum account:";

/* The next line of [*pos, end): its view, and *pos past its LF. 0 when the text ended. */
static int next_line(tg_str *line, const char *text, size_t len, size_t *pos, int *had_lf) {
  if (*pos > len || (*pos == len && !*had_lf)) return 0;
  const char *start = text + *pos;
  const char *nl = memchr(start, '\n', len - *pos);
  size_t n = nl ? (size_t)(nl - start) : len - *pos;
  line->ptr = start;
  line->len = n;
  *pos += n + (nl ? 1 : 0);
  *had_lf = nl != NULL;
  if (!nl) *pos = len + 1; /* the last line: nothing follows */
  return 1;
}

static int is_alpha(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
static int is_alnum(unsigned char c) { return is_alpha(c) || is_digit(c); }

/* RFC 3986 characters that may appear in an authority, URI or pchar (no space, no controls). */
static int uri_char(unsigned char c) {
  if (is_alnum(c)) return 1;
  return strchr("-._~%!$&'()*+,;=:@/?#[]", c) != NULL && c != 0;
}
static int authority_char(unsigned char c) {
  if (is_alnum(c)) return 1;
  return strchr("-._~%!$&'()*+,;=:@[]", c) != NULL && c != 0;
}
static int pchar(unsigned char c) {
  if (is_alnum(c)) return 1;
  return strchr("-._~%!$&'()*+,;=:@", c) != NULL && c != 0;
}

static int has_prefix(tg_str s, const char *p) {
  size_t n = strlen(p);
  return s.len >= n && memcmp(s.ptr, p, n) == 0;
}

static tg_str after(tg_str s, size_t n) { return (tg_str){s.ptr + n, s.len - n}; }

/* scheme ":" then at least one URI character, all of them URI characters. */
static int valid_uri(tg_str s) {
  if (s.len == 0 || !is_alpha((unsigned char)s.ptr[0])) return 0;
  size_t i = 1;
  while (i < s.len && (is_alnum((unsigned char)s.ptr[i]) || s.ptr[i] == '+' || s.ptr[i] == '-' ||
                       s.ptr[i] == '.'))
    i++;
  if (i >= s.len || s.ptr[i] != ':' || i + 1 >= s.len) return 0;
  for (size_t k = i + 1; k < s.len; k++)
    if (!uri_char((unsigned char)s.ptr[k])) return 0;
  return 1;
}

/* The statement: one line of printable text (UTF-8 allowed), no control characters. */
static int valid_statement(tg_str s) {
  if (s.len == 0) return 0;
  for (size_t i = 0; i < s.len; i++) {
    unsigned char c = (unsigned char)s.ptr[i];
    if (c < 0x20 || c == 0x7f) return 0;
  }
  return 1;
}

static int parse_u64(uint64_t *out, tg_str s) {
  if (s.len == 0 || s.len > 20 || (s.len > 1 && s.ptr[0] == '0')) return 0;
  uint64_t v = 0;
  for (size_t i = 0; i < s.len; i++) {
    if (!is_digit((unsigned char)s.ptr[i])) return 0;
    unsigned d = (unsigned)(s.ptr[i] - '0');
    if (v > (UINT64_MAX - d) / 10) return 0;
    v = v * 10 + d;
  }
  *out = v;
  return 1;
}

/* ---- RFC 3339 ------------------------------------------------------------------- */

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = (unsigned)(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? (unsigned)-3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const unsigned doe = (unsigned)(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  *d = doy - (153 * mp + 2) / 5 + 1;
  *m = mp < 10 ? mp + 3 : mp - 9;
  *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static int digits(const char *s, size_t n, unsigned *out) {
  unsigned v = 0;
  for (size_t i = 0; i < n; i++) {
    if (!is_digit((unsigned char)s[i])) return 0;
    v = v * 10 + (unsigned)(s[i] - '0');
  }
  *out = v;
  return 1;
}

int tg_rfc3339_parse(int64_t *out, const char *s, size_t len) {
  *out = 0;
  /* YYYY-MM-DDTHH:MM:SS */
  unsigned y, mo, d, h, mi, se;
  if (len < 20 || !digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) || s[7] != '-' ||
      !digits(s + 8, 2, &d) || s[10] != 'T' || !digits(s + 11, 2, &h) || s[13] != ':' ||
      !digits(s + 14, 2, &mi) || s[16] != ':' || !digits(s + 17, 2, &se))
    return TG_ESIWE_MALFORMED;
  static const unsigned mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 || se > 59)
    return TG_ESIWE_MALFORMED;
  int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  if (mo == 2 && d == 29 && !leap) return TG_ESIWE_MALFORMED;
  size_t i = 19;
  unsigned ms = 0;
  if (i < len && s[i] == '.') {
    i++;
    size_t start = i;
    while (i < len && is_digit((unsigned char)s[i])) {
      if (i - start < 3) ms = ms * 10 + (unsigned)(s[i] - '0');
      i++;
    }
    if (i == start || i - start > 9) return TG_ESIWE_MALFORMED;
    for (size_t k = i - start; k < 3; k++) ms *= 10;
  }
  int64_t offset_min = 0;
  if (i < len && s[i] == 'Z') {
    i++;
  } else if (i + 6 == len && (s[i] == '+' || s[i] == '-')) {
    unsigned oh, om;
    if (!digits(s + i + 1, 2, &oh) || s[i + 3] != ':' || !digits(s + i + 4, 2, &om) || oh > 23 ||
        om > 59)
      return TG_ESIWE_MALFORMED;
    offset_min = (int64_t)oh * 60 + om;
    if (s[i] == '-') offset_min = -offset_min;
    i += 6;
  } else {
    return TG_ESIWE_MALFORMED;
  }
  if (i != len) return TG_ESIWE_MALFORMED;
  int64_t days = days_from_civil(y, mo, d);
  int64_t secs = days * 86400 + (int64_t)h * 3600 + (int64_t)mi * 60 + se - offset_min * 60;
  *out = secs * 1000 + ms;
  return TG_OK;
}

void tg_rfc3339_format(char out[32], int64_t ms) {
  int64_t secs = ms >= 0 ? ms / 1000 : (ms - 999) / 1000;
  unsigned frac = (unsigned)(ms - secs * 1000);
  int64_t days = secs >= 0 ? secs / 86400 : (secs - 86399) / 86400;
  unsigned rem = (unsigned)(secs - days * 86400);
  int64_t y;
  unsigned m, d;
  civil_from_days(days, &y, &m, &d);
  if (y < 0) y = 0;
  if (y > 9999) y = 9999;
  char tmp[96]; /* wide enough for any unsigned, so no truncation analysis is needed */
  if (frac)
    snprintf(tmp, sizeof tmp, "%04d-%02u-%02uT%02u:%02u:%02u.%03uZ", (int)y, m, d, rem / 3600,
             rem / 60 % 60, rem % 60, frac);
  else
    snprintf(tmp, sizeof tmp, "%04d-%02u-%02uT%02u:%02u:%02uZ", (int)y, m, d, rem / 3600,
             rem / 60 % 60, rem % 60);
  size_t n = strlen(tmp);
  if (n > 31) n = 31;
  memcpy(out, tmp, n);
  out[n] = 0;
}

/* ---- the message ------------------------------------------------------------------ */

/* "Tag: value" with value checked by `ok`; 1 when the line has this tag. */
static int tagged(tg_str line, const char *tag, tg_str *value) {
  if (!has_prefix(line, tag)) return 0;
  *value = after(line, strlen(tag));
  return 1;
}

static int parse_time(int64_t *out, tg_str v) {
  return tg_rfc3339_parse(out, v.ptr, v.len) == TG_OK;
}

int tg_siwe_parse(tg_siwe_message *out, const char *text, size_t len) {
  memset(out, 0, sizeof *out);
  if (text == NULL) return TG_EINVAL;
  if (len > TG_SIWE_MESSAGE_MAX) return TG_ETOOBIG;
  if (memchr(text, '\r', len) || memchr(text, 0, len)) return TG_ESIWE_MALFORMED;
  size_t pos = 0;
  int lf = 1;
  tg_str line, v;
  /* 1. [scheme "://"] domain " wants you to sign in with your Ethereum account:" */
  if (!next_line(&line, text, len, &pos, &lf) || !lf) goto bad;
  size_t pl = sizeof preamble - 1;
  if (line.len <= pl || memcmp(line.ptr + line.len - pl, preamble, pl) != 0) goto bad;
  tg_str head = {line.ptr, line.len - pl};
  const char *sep = NULL;
  for (size_t i = 0; i + 2 < head.len; i++)
    if (head.ptr[i] == ':' && head.ptr[i + 1] == '/' && head.ptr[i + 2] == '/') {
      sep = head.ptr + i;
      break;
    }
  if (sep) {
    out->scheme = (tg_str){head.ptr, (size_t)(sep - head.ptr)};
    if (out->scheme.len == 0 || !is_alpha((unsigned char)out->scheme.ptr[0])) goto bad;
    for (size_t i = 1; i < out->scheme.len; i++) {
      unsigned char c = (unsigned char)out->scheme.ptr[i];
      if (!is_alnum(c) && c != '+' && c != '-' && c != '.') goto bad;
    }
    head = after(head, out->scheme.len + 3);
  }
  if (head.len == 0 || head.len > 255) goto bad;
  for (size_t i = 0; i < head.len; i++)
    if (!authority_char((unsigned char)head.ptr[i])) goto bad;
  out->domain = head;
  /* 2. the address, EIP-55 checksummed */
  if (!next_line(&line, text, len, &pos, &lf) || !lf || line.len != 42) goto bad;
  if (tg_address_parse(&out->address, line.ptr, line.len) != 0) goto bad;
  char cs[TG_ADDRESS_HEX_LEN];
  tg_address_to_checksum(&out->address, cs);
  if (memcmp(cs, line.ptr, 42) != 0) goto bad;
  /* 3. an empty line, then [statement LF] LF */
  if (!next_line(&line, text, len, &pos, &lf) || !lf || line.len != 0) goto bad;
  if (!next_line(&line, text, len, &pos, &lf) || !lf) goto bad;
  if (line.len != 0) {
    if (!valid_statement(line)) goto bad;
    out->statement = line;
    out->has_statement = 1;
    if (!next_line(&line, text, len, &pos, &lf) || !lf || line.len != 0) goto bad;
  }
  /* 4. the required fields, in order */
  if (!next_line(&line, text, len, &pos, &lf) || !tagged(line, "URI: ", &v) || !valid_uri(v)) goto bad;
  out->uri = v;
  if (!lf || !next_line(&line, text, len, &pos, &lf) || !tagged(line, "Version: ", &v) ||
      v.len != 1 || v.ptr[0] != '1')
    goto bad;
  if (!lf || !next_line(&line, text, len, &pos, &lf) || !tagged(line, "Chain ID: ", &v) ||
      !parse_u64(&out->chain_id, v))
    goto bad;
  if (!lf || !next_line(&line, text, len, &pos, &lf) || !tagged(line, "Nonce: ", &v) ||
      v.len < TG_SIWE_NONCE_MIN || v.len > TG_SIWE_NONCE_MAX)
    goto bad;
  for (size_t i = 0; i < v.len; i++)
    if (!is_alnum((unsigned char)v.ptr[i])) goto bad;
  out->nonce = v;
  if (!lf || !next_line(&line, text, len, &pos, &lf) || !tagged(line, "Issued At: ", &v) ||
      !parse_time(&out->issued_at, v))
    goto bad;
  /* 5. the optional fields, each at most once, in order */
  int have = next_line(&line, text, len, &pos, &lf) ? 1 : 0;
  if (have && tagged(line, "Expiration Time: ", &v)) {
    if (!parse_time(&out->expiration, v)) goto bad;
    out->has_expiration = 1;
    have = next_line(&line, text, len, &pos, &lf);
  }
  if (have && tagged(line, "Not Before: ", &v)) {
    if (!parse_time(&out->not_before, v)) goto bad;
    out->has_not_before = 1;
    have = next_line(&line, text, len, &pos, &lf);
  }
  if (have && tagged(line, "Request ID: ", &v)) {
    if (v.len > 256) goto bad;
    for (size_t i = 0; i < v.len; i++)
      if (!pchar((unsigned char)v.ptr[i])) goto bad;
    out->request_id = v;
    out->has_request_id = 1;
    have = next_line(&line, text, len, &pos, &lf);
  }
  if (have && line.len == 10 && memcmp(line.ptr, "Resources:", 10) == 0) {
    have = next_line(&line, text, len, &pos, &lf);
    while (have) {
      if (!tagged(line, "- ", &v) || !valid_uri(v)) goto bad;
      if (out->n_resources == TG_SIWE_RESOURCES_MAX) goto bad;
      out->resources[out->n_resources++] = v;
      have = next_line(&line, text, len, &pos, &lf);
    }
  }
  if (have) goto bad; /* anything else, including a trailing empty line */
  return TG_OK;
bad:
  memset(out, 0, sizeof *out);
  return TG_ESIWE_MALFORMED;
}

static int put(tg_buf *b, const char *tag, tg_str v) {
  int rc = tg_buf_append_str(b, tag);
  if (!rc && v.len) rc = tg_buf_append(b, v.ptr, v.len);
  return rc;
}

int tg_siwe_format(tg_buf *out, const tg_siwe_message *m) {
  char addr[TG_ADDRESS_HEX_LEN], t[32];
  tg_address_to_checksum(&m->address, addr);
  int rc = 0;
  if (m->scheme.len) rc = put(out, "", m->scheme);
  if (!rc && m->scheme.len) rc = tg_buf_append_str(out, "://");
  if (!rc) rc = put(out, "", m->domain);
  if (!rc) rc = tg_buf_printf(out, "%s\n%s\n\n", preamble, addr);
  if (!rc && m->has_statement) rc = put(out, "", m->statement);
  if (!rc && m->has_statement) rc = tg_buf_append_byte(out, '\n');
  if (!rc) rc = put(out, "\nURI: ", m->uri);
  if (!rc)
    rc = tg_buf_printf(out, "\nVersion: 1\nChain ID: %llu", (unsigned long long)m->chain_id);
  if (!rc) rc = put(out, "\nNonce: ", m->nonce);
  tg_rfc3339_format(t, m->issued_at);
  if (!rc) rc = tg_buf_printf(out, "\nIssued At: %s", t);
  if (!rc && m->has_expiration) {
    tg_rfc3339_format(t, m->expiration);
    rc = tg_buf_printf(out, "\nExpiration Time: %s", t);
  }
  if (!rc && m->has_not_before) {
    tg_rfc3339_format(t, m->not_before);
    rc = tg_buf_printf(out, "\nNot Before: %s", t);
  }
  if (!rc && m->has_request_id) rc = put(out, "\nRequest ID: ", m->request_id);
  if (!rc && m->n_resources) rc = tg_buf_append_str(out, "\nResources:");
  for (size_t i = 0; !rc && i < m->n_resources && i < TG_SIWE_RESOURCES_MAX; i++)
    rc = put(out, "\n- ", m->resources[i]);
  return rc;
}

static int str_eq(tg_str s, const char *c) {
  size_t n = strlen(c);
  return s.len == n && (n == 0 || memcmp(s.ptr, c, n) == 0);
}

int tg_siwe_check(const tg_siwe_message *m, const tg_siwe_expect *e) {
  int64_t skew = e->max_skew > 0 ? e->max_skew : 60000;
  int64_t age = e->max_age > 0 ? e->max_age : 600000;
  if (e->domain && !str_eq(m->domain, e->domain)) return TG_ESIWE_DOMAIN;
  if (e->uri_prefix) {
    size_t n = strlen(e->uri_prefix);
    if (m->uri.len < n || memcmp(m->uri.ptr, e->uri_prefix, n) != 0) return TG_ESIWE_URI;
  }
  if (e->chain_id && m->chain_id != e->chain_id) return TG_ESIWE_CHAIN;
  if (e->nonce && !str_eq(m->nonce, e->nonce)) return TG_ESIWE_NONCE;
  if (m->issued_at > e->now + skew || m->issued_at < e->now - age) return TG_ESIWE_ISSUED_AT;
  if (m->has_expiration && m->expiration <= e->now) return TG_ESIWE_EXPIRED;
  if (m->has_not_before && m->not_before > e->now + skew) return TG_ESIWE_NOT_YET;
  return TG_OK;
}

int tg_siwe_header_decode(tg_buf *msg, tg_buf *sig, const char *value, size_t len) {
  const char *sp = memchr(value, ' ', len);
  if (!sp || sp == value || (size_t)(sp - value) + 1 >= len) return TG_EPASS_AUTH;
  size_t ml = (size_t)(sp - value), sl = len - ml - 1;
  if (memchr(sp + 1, ' ', sl)) return TG_EPASS_AUTH;
  if (tg_base64_decode(msg, value, ml) != 0) return TG_EPASS_AUTH;
  if (tg_hex_decode_buf(sig, sp + 1, sl, TG_HEX_PREFIX_REQUIRED) != 0 || sig->len == 0)
    return TG_EPASS_AUTH;
  return TG_OK;
}
