/* Sign-In with Ethereum (EIP-4361): a strict parser and builder of the message text, and its checks. */
#ifndef TOLLGATE_SIWE_H
#define TOLLGATE_SIWE_H

#include <stddef.h>
#include <stdint.h>

#include "tollgate/error.h"
#include "tollgate/types.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * The message is the EIP-4361 ABNF, byte for byte: LF line ends only, no
 * trailing newline, fields in their fixed order, the address EIP-55
 * checksummed, times RFC 3339 with a time zone, `Version: 1`, a nonce of at
 * least 8 letters and digits. Anything else is TG_ESIWE_MALFORMED. The
 * digest a wallet signs is the EIP-191 personal-message hash of the text
 * (tg_eip191_hash).
 */

#define TG_SIWE_MESSAGE_MAX 8192   /* bytes of message text accepted */
#define TG_SIWE_RESOURCES_MAX 16   /* `Resources:` entries accepted */
#define TG_SIWE_NONCE_MIN 8
#define TG_SIWE_NONCE_MAX 64

/* A parsed message. Every tg_str points into the text given to tg_siwe_parse. */
typedef struct {
  tg_str scheme;            /* optional "https" before "://"; len 0 when absent */
  tg_str domain;            /* RFC 3986 authority: host[:port], maybe userinfo@ */
  tg_address address;
  tg_str statement;         /* len 0 and has_statement 0 when absent */
  int has_statement;
  tg_str uri;
  uint64_t chain_id;
  tg_str nonce;
  int64_t issued_at;        /* Unix milliseconds */
  int has_expiration;
  int64_t expiration;       /* Unix milliseconds */
  int has_not_before;
  int64_t not_before;       /* Unix milliseconds */
  int has_request_id;
  tg_str request_id;
  size_t n_resources;
  tg_str resources[TG_SIWE_RESOURCES_MAX];
} tg_siwe_message;

/* Parses `text` (len bytes, not NUL-terminated) into *out; TG_ESIWE_MALFORMED or TG_ETOOBIG. */
TG_WARN_UNUSED_RESULT int tg_siwe_parse(tg_siwe_message *out, const char *text, size_t len);

/* Writes the canonical text of `m` (times in UTC, "Z"); tg_siwe_parse gives `m` back. */
TG_WARN_UNUSED_RESULT int tg_siwe_format(tg_buf *out, const tg_siwe_message *m);

/* What the verifier expects. Strings are NUL-terminated; NULL skips that check. */
typedef struct {
  const char *domain;       /* compared exactly with the message's domain */
  const char *uri_prefix;   /* the message's URI must start with it */
  uint64_t chain_id;        /* 0 skips */
  const char *nonce;        /* compared exactly (the issued nonce) */
  int64_t now;              /* Unix milliseconds */
  int64_t max_skew;         /* ms allowed between the signer's clock and ours (0: 60000) */
  int64_t max_age;          /* ms an issued-at may lie in the past (0: 600000) */
} tg_siwe_expect;

/*
 * The checks other than the signature, one error per reason, in this order:
 * TG_ESIWE_DOMAIN, TG_ESIWE_URI, TG_ESIWE_CHAIN, TG_ESIWE_NONCE,
 * TG_ESIWE_ISSUED_AT (in the future or older than max_age),
 * TG_ESIWE_EXPIRED (Expiration Time passed), TG_ESIWE_NOT_YET (Not Before
 * in the future).
 */
TG_WARN_UNUSED_RESULT int tg_siwe_check(const tg_siwe_message *m, const tg_siwe_expect *e);

/*
 * A per-request signed authentication header (X-Tollgate-Auth, docs/PROTOCOL.md):
 * "<standard base64 of the message text> <0x-prefixed hex signature>", one
 * space between. Decodes both into `msg` and `sig` (appended; caps of the
 * buffers apply). TG_EPASS_AUTH when the shape is wrong.
 */
TG_WARN_UNUSED_RESULT int tg_siwe_header_decode(tg_buf *msg, tg_buf *sig, const char *value,
                                                size_t len);

/* Parses an RFC 3339 date-time (e.g. "2021-09-30T16:25:24.123+02:00") to Unix milliseconds. */
TG_WARN_UNUSED_RESULT int tg_rfc3339_parse(int64_t *out, const char *s, size_t len);
/* Formats Unix milliseconds as "YYYY-MM-DDTHH:MM:SS[.mmm]Z" into out[32]. */
void tg_rfc3339_format(char out[32], int64_t ms);

#ifdef __cplusplus
}
#endif
#endif
