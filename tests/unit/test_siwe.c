/* Sign-In with Ethereum: the EIP-4361 example, messages made and signed by viem, and every refusal. */
#include <stdlib.h>
#include <string.h>

#include "tg_test.h"
#include "tollgate/address.h"
#include "tollgate/eip191.h"
#include "tollgate/hex.h"
#include "tollgate/secp.h"
#include "tollgate/siwe.h"

/* The example message of the EIP-4361 text (section "Example message"). */
static const char eip_example[] =
    "example.com wants you to sign in with your Ethereum account:\n"
    "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2\n"
    "\n"
    "I accept the ExampleOrg Terms of Service: https://example.com/tos\n"
    "\n"
    "URI: https://example.com/login\n"
    "Version: 1\n"
    "Chain ID: 1\n"
    "Nonce: 32891756\n"
    "Issued At: 2021-09-30T16:25:24Z\n"
    "Resources:\n"
    "- ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/\n"
    "- https://example.com/my-web2-claim.json";

/*
 * Made by viem 2.x createSiweMessage and signed with account.signMessage by anvil's first key
 * (0xf39F...2266) with viem's signMessage; generated once, do not edit.
 */
static const char viem_full[] =
    "https://gateway.example:8080 wants you to sign in with your Ethereum account:\n"
    "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266\n\nSign in to use your tollgate pass.\n\n"
    "URI: http://gateway.example:8080/auth/siwe\nVersion: 1\nChain ID: 31337\n"
    "Nonce: a1B2c3D4e5F6g7H8\nIssued At: 2026-11-24T21:00:00.000Z\n"
    "Expiration Time: 2026-11-24T21:10:00.250Z\nNot Before: 2026-11-24T20:59:00.000Z\n"
    "Request ID: req-1\nResources:\n- https://gateway.example/plans/1\n"
    "- ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/";
static const char viem_full_sig[] =
    "0xb62f8777a612fafb1679e6095cea6d90caa31765e0d9b3f31083d267dc2c45db41f3ae3aaf94cb9cffe7538aa83"
    "32ea54890fc78e549ac3c93404c0ec68dce8f1b";
static const char viem_min[] =
    "localhost wants you to sign in with your Ethereum account:\n"
    "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266\n\n\nURI: http://localhost/\nVersion: 1\n"
    "Chain ID: 1\nNonce: 12345678\nIssued At: 2021-09-30T16:25:24.000Z";
static const char viem_min_sig[] =
    "0x6be7ff89ccc6ca7adb56b9b2b8f80482ba661826b92c6fce7696ff0245e5220e07dbc1ebe41e0785fbb02c7452a"
    "5a2f4127efec886a6b5da1a78dd3ecc8ae85e1c";

static int streq(tg_str s, const char *c) { return s.len == strlen(c) && memcmp(s.ptr, c, s.len) == 0; }

static void test_eip_example(void) {
  tg_siwe_message m;
  CHECK_OK(tg_siwe_parse(&m, eip_example, strlen(eip_example)));
  CHECK(streq(m.domain, "example.com"));
  CHECK_INT(m.scheme.len, 0);
  CHECK(m.has_statement);
  CHECK(streq(m.statement, "I accept the ExampleOrg Terms of Service: https://example.com/tos"));
  CHECK(streq(m.uri, "https://example.com/login"));
  CHECK_INT(m.chain_id, 1);
  CHECK(streq(m.nonce, "32891756"));
  CHECK_INT(m.issued_at, 1633019124000LL);
  CHECK(!m.has_expiration && !m.has_not_before && !m.has_request_id);
  CHECK_INT(m.n_resources, 2);
  CHECK(streq(m.resources[1], "https://example.com/my-web2-claim.json"));
  char a[TG_ADDRESS_HEX_LEN];
  tg_address_to_checksum(&m.address, a);
  CHECK_STR(a, "0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2");
  /* Our canonical text of it is the same text. */
  tg_buf b;
  tg_buf_init(&b, 1 << 16);
  CHECK_OK(tg_siwe_format(&b, &m));
  CHECK_INT(b.len, strlen(eip_example));
  CHECK_MEM(b.data, eip_example, b.len);
  tg_buf_cleanup(&b);
}

static void check_signed(const char *msg, const char *sighex) {
  tg_siwe_message m;
  CHECK_OK(tg_siwe_parse(&m, msg, strlen(msg)));
  size_t n;
  uint8_t *raw = tgt_unhex(sighex, &n);
  tg_sig sig;
  CHECK_OK(tg_sig_from_bytes(&sig, raw, n));
  free(raw);
  tg_address who;
  CHECK_OK(tg_eip191_recover(&who, (const uint8_t *)msg, strlen(msg), &sig));
  CHECK(tg_address_eq(&who, &m.address));
  CHECK_OK(tg_eip191_verify(&m.address, (const uint8_t *)msg, strlen(msg), &sig));
  /* A changed byte anywhere (here the nonce's last) is no longer this address's signature. */
  char *forged = strdup(msg);
  char *nonce = strstr(forged, "Nonce: ");
  nonce[7] = nonce[7] == 'b' ? 'c' : 'b';
  CHECK_ERR(tg_eip191_verify(&m.address, (const uint8_t *)forged, strlen(forged), &sig),
            TG_ESIG_MISMATCH);
  free(forged);
}

static void test_viem_vectors(void) {
  check_signed(viem_full, viem_full_sig);
  check_signed(viem_min, viem_min_sig);
  tg_siwe_message m;
  CHECK_OK(tg_siwe_parse(&m, viem_full, strlen(viem_full)));
  CHECK(streq(m.scheme, "https"));
  CHECK(streq(m.domain, "gateway.example:8080"));
  CHECK_INT(m.chain_id, 31337);
  CHECK(m.has_expiration && m.has_not_before && m.has_request_id);
  CHECK_INT(m.expiration - m.issued_at, 600250);
  CHECK_INT(m.issued_at - m.not_before, 60000);
  CHECK(streq(m.request_id, "req-1"));
  CHECK_INT(m.n_resources, 2);
  CHECK_OK(tg_siwe_parse(&m, viem_min, strlen(viem_min)));
  CHECK(!m.has_statement);
  /* format then parse gives the same fields */
  tg_buf b;
  tg_buf_init(&b, 1 << 16);
  CHECK_OK(tg_siwe_parse(&m, viem_full, strlen(viem_full)));
  CHECK_OK(tg_siwe_format(&b, &m));
  tg_siwe_message m2;
  CHECK_OK(tg_siwe_parse(&m2, (const char *)b.data, b.len));
  CHECK_INT(m2.expiration, m.expiration);
  CHECK_INT(m2.not_before, m.not_before);
  CHECK(streq(m2.request_id, "req-1"));
  CHECK_INT(m2.n_resources, 2);
  tg_buf_cleanup(&b);
}

/* Replaces the first `from` in the example with `to` and parses the result. */
static int parse_edit(const char *base, const char *from, const char *to) {
  char buf[4096];
  const char *at = strstr(base, from);
  if (!at) return 999;
  size_t pre = (size_t)(at - base);
  snprintf(buf, sizeof buf, "%.*s%s%s", (int)pre, base, to, at + strlen(from));
  tg_siwe_message m;
  return tg_siwe_parse(&m, buf, strlen(buf));
}

static void test_malformed(void) {
  const char *b = viem_full;
  const int E = TG_ESIWE_MALFORMED;
  CHECK_ERR(parse_edit(b, "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
                       "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"), E); /* not EIP-55 */
  CHECK_ERR(parse_edit(b, "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
                       "0xF39Fd6e51aad88F6F4ce6aB8827279cffFb92266"), E); /* wrong checksum */
  CHECK_ERR(parse_edit(b, "Version: 1", "Version: 2"), E);
  CHECK_ERR(parse_edit(b, "Chain ID: 31337", "Chain ID: 031337"), E);
  CHECK_ERR(parse_edit(b, "Chain ID: 31337", "Chain ID: 99999999999999999999999"), E);
  CHECK_ERR(parse_edit(b, "Nonce: a1B2c3D4e5F6g7H8", "Nonce: short"), E);
  CHECK_ERR(parse_edit(b, "Nonce: a1B2c3D4e5F6g7H8", "Nonce: a1B2c3D4-5F6g7H8"), E);
  CHECK_ERR(parse_edit(b, "2026-11-24T21:00:00.000Z", "2026-11-24 21:00:00Z"), E);
  CHECK_ERR(parse_edit(b, "2026-11-24T21:00:00.000Z", "2026-02-30T21:00:00Z"), E);
  CHECK_ERR(parse_edit(b, "2026-11-24T21:00:00.000Z", "2026-11-24T21:00:00"), E); /* no zone */
  CHECK_ERR(parse_edit(b, "2026-11-24T21:00:00.000Z", "2026-11-24T24:00:00Z"), E);
  CHECK_ERR(parse_edit(b, "URI: http", "URI:http"), E);
  CHECK_ERR(parse_edit(b, "URI: http://gateway", "URI: http://gate way"), E);
  CHECK_ERR(parse_edit(b, "\nVersion", "\r\nVersion"), E);
  CHECK_ERR(parse_edit(b, " wants you", "  wants you"), E);
  CHECK_ERR(parse_edit(b, "Ethereum account:", "Ethereum account"), E);
  CHECK_ERR(parse_edit(b, "tollgate pass.\n\n", "tollgate pass.\n"), E);
  CHECK_ERR(parse_edit(b, "Request ID: req-1\n", ""), 0); /* optional field left out */
  /* fields out of order */
  CHECK_ERR(parse_edit(b, "Expiration Time: 2026-11-24T21:10:00.250Z\nNot Before: 2026-11-24T20:59:00.000Z",
                       "Not Before: 2026-11-24T20:59:00.000Z\nExpiration Time: 2026-11-24T21:10:00.250Z"), E);
  CHECK_ERR(parse_edit(b, "Resources:\n", "Resources:\n- \n"), E);
  CHECK_ERR(parse_edit(b, "Request ID: req-1", "Request ID: req 1"), E);
  CHECK_ERR(parse_edit(b, "Request ID: req-1", "Request ID: req-1\nRequest ID: req-2"), E);
  /* a trailing newline or extra line */
  char buf[4096];
  snprintf(buf, sizeof buf, "%s\n", viem_min);
  tg_siwe_message m;
  CHECK_ERR(tg_siwe_parse(&m, buf, strlen(buf)), E);
  snprintf(buf, sizeof buf, "%s\nExtra: 1", viem_min);
  CHECK_ERR(tg_siwe_parse(&m, buf, strlen(buf)), E);
  CHECK_ERR(tg_siwe_parse(&m, "", 0), E);
  CHECK_ERR(tg_siwe_parse(&m, viem_min, strlen(viem_min) - 3), E); /* ".000Z" cut to ".0": no zone */
  /* an embedded NUL */
  memcpy(buf, viem_min, strlen(viem_min) + 1);
  buf[5] = 0;
  CHECK_ERR(tg_siwe_parse(&m, buf, strlen(viem_min)), E);
  /* too long */
  char *big = malloc(TG_SIWE_MESSAGE_MAX + 2);
  memset(big, 'a', TG_SIWE_MESSAGE_MAX + 1);
  CHECK_ERR(tg_siwe_parse(&m, big, TG_SIWE_MESSAGE_MAX + 1), TG_ETOOBIG);
  free(big);
}

static void test_rfc3339(void) {
  int64_t t;
  CHECK_OK(tg_rfc3339_parse(&t, "1970-01-01T00:00:00Z", 20));
  CHECK_INT(t, 0);
  CHECK_OK(tg_rfc3339_parse(&t, "2021-09-30T18:25:24.5+02:00", 27));
  CHECK_INT(t, 1633019124500LL);
  CHECK_OK(tg_rfc3339_parse(&t, "2021-09-30T11:25:24.123456789-05:00", 35));
  CHECK_INT(t, 1633019124123LL);
  CHECK_OK(tg_rfc3339_parse(&t, "2024-02-29T00:00:00Z", 20));
  CHECK_ERR(tg_rfc3339_parse(&t, "2023-02-29T00:00:00Z", 20), TG_ESIWE_MALFORMED);
  CHECK_ERR(tg_rfc3339_parse(&t, "2021-09-30T16:25:24.Z", 21), TG_ESIWE_MALFORMED);
  CHECK_ERR(tg_rfc3339_parse(&t, "2021-09-30T16:25:24+0200", 24), TG_ESIWE_MALFORMED);
  char out[32];
  tg_rfc3339_format(out, 1633019124000LL);
  CHECK_STR(out, "2021-09-30T16:25:24Z");
  tg_rfc3339_format(out, 1633019124007LL);
  CHECK_STR(out, "2021-09-30T16:25:24.007Z");
}

static void test_checks(void) {
  tg_siwe_message m;
  CHECK_OK(tg_siwe_parse(&m, viem_full, strlen(viem_full)));
  int64_t issued = m.issued_at;
  tg_siwe_expect e = {.domain = "gateway.example:8080",
                      .uri_prefix = "http://gateway.example:8080/",
                      .chain_id = 31337,
                      .nonce = "a1B2c3D4e5F6g7H8",
                      .now = issued + 1000};
  CHECK_OK(tg_siwe_check(&m, &e));
  tg_siwe_expect x = e;
  x.domain = "evil.example";
  CHECK_ERR(tg_siwe_check(&m, &x), TG_ESIWE_DOMAIN);
  x = e;
  x.uri_prefix = "https://gateway.example:8080/";
  CHECK_ERR(tg_siwe_check(&m, &x), TG_ESIWE_URI);
  x = e;
  x.chain_id = 1;
  CHECK_ERR(tg_siwe_check(&m, &x), TG_ESIWE_CHAIN);
  x = e;
  x.nonce = "a1B2c3D4e5F6g7H9";
  CHECK_ERR(tg_siwe_check(&m, &x), TG_ESIWE_NONCE);
  x = e;
  x.now = issued - 61000; /* issued more than the skew in the future */
  CHECK_ERR(tg_siwe_check(&m, &x), TG_ESIWE_ISSUED_AT);
  x = e;
  x.now = m.expiration; /* the expiration instant itself is past */
  x.max_age = 3600000;
  CHECK_ERR(tg_siwe_check(&m, &x), TG_ESIWE_EXPIRED);
  x = e;
  x.now = issued + 600001; /* older than max_age (10 minutes) */
  CHECK_ERR(tg_siwe_check(&m, &x), TG_ESIWE_ISSUED_AT);
  /* Not Before: a message whose not-before lies ahead */
  m.not_before = issued + 120000;
  CHECK_ERR(tg_siwe_check(&m, &e), TG_ESIWE_NOT_YET);
}

static void test_sign_roundtrip(void) {
  tg_seckey *k = tg_seckey_new();
  CHECK_OK(tg_seckey_generate(k));
  tg_siwe_message m;
  memset(&m, 0, sizeof m);
  CHECK_OK(tg_seckey_address(&m.address, k));
  m.domain = TG_STR_LIT("127.0.0.1:8402");
  m.uri = TG_STR_LIT("http://127.0.0.1:8402/auth/siwe");
  m.chain_id = 31337;
  m.nonce = TG_STR_LIT("Zx9Zx9Zx9Zx9Zx9Z");
  m.issued_at = 1764000000123LL;
  tg_buf b;
  tg_buf_init(&b, 1 << 16);
  CHECK_OK(tg_siwe_format(&b, &m));
  tg_sig sig;
  CHECK_OK(tg_eip191_sign(&sig, k, b.data, b.len));
  tg_siwe_message p;
  CHECK_OK(tg_siwe_parse(&p, (const char *)b.data, b.len));
  CHECK_OK(tg_eip191_verify(&p.address, b.data, b.len, &sig));
  CHECK_INT(p.issued_at, m.issued_at);
  tg_buf_cleanup(&b);
  tg_seckey_free(k);
}

static void test_header_decode(void) {
  tg_buf m, g;
  tg_buf_init(&m, TG_SIWE_MESSAGE_MAX);
  tg_buf_init(&g, 1024);
  const char *ok = "aGVsbG8= 0x0102ff";
  CHECK_OK(tg_siwe_header_decode(&m, &g, ok, strlen(ok)));
  CHECK_INT(m.len, 5);
  CHECK_MEM(m.data, "hello", 5);
  CHECK_INT(g.len, 3);
  const char *bad[] = {"aGVsbG8=", "aGVsbG8= ", " 0x01", "aGVsbG8= 0102", "aGVsbG8= 0x01 0x02",
                       "a!b 0x01", "aGVsbG8= 0x", "aGVsbG8= 0xzz"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    tg_buf_reset(&m);
    tg_buf_reset(&g);
    CHECK_ERR(tg_siwe_header_decode(&m, &g, bad[i], strlen(bad[i])), TG_EPASS_AUTH);
  }
  tg_buf_cleanup(&m);
  tg_buf_cleanup(&g);
}

int main(void) {
  RUN(test_eip_example);
  RUN(test_viem_vectors);
  RUN(test_malformed);
  RUN(test_rfc3339);
  RUN(test_checks);
  RUN(test_sign_roundtrip);
  RUN(test_header_decode);
  return tgt_done();
}
