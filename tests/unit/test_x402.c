/* x402 v2 envelopes: the specification's examples decode, ours round-trip, bad input is refused. */
#include <stdlib.h>

#include <sodium.h>

#include "tg_test.h"
#include "tollgate/address.h"
#include "tollgate/u256.h"
#include "tollgate/x402.h"

/* The PaymentPayload example of the x402 v2 specification (section 5.2.1). */
static const char spec_payment[] =
    "{\"x402Version\":2,\"resource\":{\"url\":\"https://api.example.com/premium-data\","
    "\"description\":\"Access to premium market data\",\"mimeType\":\"application/json\"},"
    "\"accepted\":{\"scheme\":\"exact\",\"network\":\"eip155:84532\",\"amount\":\"10000\","
    "\"asset\":\"0x036CbD53842c5426634e7929541eC2318f3dCF7e\","
    "\"payTo\":\"0x209693Bc6afc0C5328bA36FaF03C514EF312287C\",\"maxTimeoutSeconds\":60,"
    "\"extra\":{\"name\":\"USDC\",\"version\":\"2\"}},"
    "\"payload\":{\"signature\":\"0x2d6a7588d6acca505cbf0d9a4a227e0c52c6c34008c8e8986a1283259764173608a2ce6496642e377d6da8dbbf5836e9bd15092f9ecab05ded3d6293af148b571c\","
    "\"authorization\":{\"from\":\"0x857b06519E91e3A54538791bDbb0E22373e36b66\","
    "\"to\":\"0x209693Bc6afc0C5328bA36FaF03C514EF312287C\",\"value\":\"10000\","
    "\"validAfter\":\"1740672089\",\"validBefore\":\"1740672154\","
    "\"nonce\":\"0xf3746613c2d920b5fdabc0856f2aeb2d4f88ee6037b8cc5d04a71a4462f13480\"}},"
    "\"extensions\":{}}";

static char *b64(const char *json) {
  tg_buf b;
  tg_buf_init(&b, 0);
  if (tg_base64_encode(&b, (const uint8_t *)json, strlen(json))) return NULL;
  return (char *)tg_buf_steal(&b, NULL);
}

/* Decodes `json` (base64'd) and returns the error code; *reason gets the x402 reason. */
static int decode_json(tg_x402_payment *p, const char **reason, const char *json) {
  char *h = b64(json);
  int rc = tg_x402_payment_decode(p, reason, h, strlen(h));
  free(h);
  return rc;
}

static char *replace(const char *s, const char *from, const char *to) {
  const char *at = strstr(s, from);
  if (!at) return NULL;
  size_t n = strlen(s) - strlen(from) + strlen(to);
  char *out = malloc(n + 1);
  size_t pre = (size_t)(at - s);
  memcpy(out, s, pre);
  memcpy(out + pre, to, strlen(to));
  memcpy(out + pre + strlen(to), at + strlen(from), strlen(at + strlen(from)) + 1);
  return out;
}

static void test_spec_example(void) {
  tg_x402_payment p;
  const char *reason = "x";
  CHECK_OK(decode_json(&p, &reason, spec_payment));
  CHECK(reason == NULL);
  CHECK_INT(p.accepted.scheme, TG_X402_EXACT);
  CHECK_INT(p.accepted.chain_id, 84532);
  uint64_t amt = 0;
  CHECK_OK(tg_u256_to_u64(&p.accepted.amount, &amt));
  CHECK_INT(amt, 10000);
  char a[TG_ADDRESS_HEX_LEN];
  tg_address_to_checksum(&p.u.exact.from, a);
  CHECK_STR(a, "0x857b06519E91e3A54538791bDbb0E22373e36b66");
  CHECK_INT(p.u.exact.valid_before, 1740672154);
  CHECK_INT(p.u.exact.signature.len, 65);
  CHECK_INT(p.u.exact.nonce.b[0], 0xf3);
  CHECK_STR(p.accepted.token_name, "USDC");
  CHECK_STR(p.resource_url, "https://api.example.com/premium-data");
}

static void test_roundtrip(void) {
  tg_x402_payment p, q;
  CHECK_OK(decode_json(&p, NULL, spec_payment));
  snprintf(p.payment_id, sizeof p.payment_id, "%s", "pay_7d5d747be160e280504c099d984bcfe0");
  tg_buf out;
  tg_buf_init(&out, 0);
  CHECK_OK(tg_x402_payment_encode(&out, &p));
  CHECK_OK(tg_x402_payment_decode(&q, NULL, (const char *)out.data, out.len));
  CHECK(memcmp(&p.u.exact, &q.u.exact, sizeof p.u.exact) == 0);
  CHECK(memcmp(&p.accepted, &q.accepted, sizeof p.accepted) == 0);
  CHECK_STR(q.payment_id, "pay_7d5d747be160e280504c099d984bcfe0");
  tg_buf_cleanup(&out);

  /* A channel voucher payload. */
  memset(&p, 0, sizeof p);
  p.accepted.scheme = TG_X402_CHANNEL;
  p.accepted.chain_id = 31337;
  tg_u256_from_u64(&p.accepted.amount, 500);
  p.accepted.withdraw_delay = 900;
  p.accepted.max_timeout_seconds = 60;
  p.accepted.receiver_authorizer.b[3] = 7;
  p.accepted.channel_contract.b[19] = 9;
  p.u.channel.type = TG_X402_CHANNEL_VOUCHER;
  p.u.channel.config.payer.b[0] = 1;
  p.u.channel.config.withdraw_delay = 900;
  p.u.channel.channel_id.b[31] = 0x42;
  tg_u256_from_u64(&p.u.channel.max_claimable, 123456789);
  p.u.channel.voucher_signature.len = 65;
  memset(p.u.channel.voucher_signature.b, 0x11, 65);
  tg_buf_init(&out, 0);
  CHECK_OK(tg_x402_payment_encode(&out, &p));
  CHECK_OK(tg_x402_payment_decode(&q, NULL, (const char *)out.data, out.len));
  CHECK(memcmp(&p.u.channel, &q.u.channel, sizeof p.u.channel) == 0);
  CHECK(memcmp(&p.accepted, &q.accepted, sizeof p.accepted) == 0);
  tg_buf_cleanup(&out);
}

static void test_rejects(void) {
  static const struct {
    const char *from, *to, *reason;
  } cases[] = {
      {"\"x402Version\":2", "\"x402Version\":1", "invalid_x402_version"},
      {"\"x402Version\":2", "\"x402Version\":\"2\"", "invalid_x402_version"},
      {"\"scheme\":\"exact\"", "\"scheme\":\"upto\"", "invalid_scheme"},
      {"\"network\":\"eip155:84532\"", "\"network\":\"base-sepolia\"", "invalid_network"},
      {"\"network\":\"eip155:84532\"", "\"network\":\"eip155:0\"", "invalid_network"},
      {"\"amount\":\"10000\"", "\"amount\":\"010000\"", "invalid_payload"},
      {"\"amount\":\"10000\"", "\"amount\":10000", "invalid_payload"},
      {"\"amount\":\"10000\"", "\"amount\":\"-1\"", "invalid_payload"},
      {"\"value\":\"10000\"", "\"value\":\"1e4\"", "invalid_payload"},
      {"0x857b06519E91e3A54538791bDbb0E22373e36b66", "0x857b06519e91e3A54538791bDbb0E22373e36b66",
       "invalid_payload"}, /* broken EIP-55 checksum */
      {"\"nonce\":\"0xf3", "\"nonce\":\"0xz3", "invalid_payload"},
      {"\"nonce\":\"0xf3746613c2d920b5fdabc0856f2aeb2d4f88ee6037b8cc5d04a71a4462f13480\"",
       "\"nonce\":\"0xf3746613c2d920b5fdabc0856f2aeb2d4f88ee6037b8cc5d04a71a4462f134\"", "invalid_payload"},
      {"\"signature\":\"0x2d6a", "\"signature\":\"2d6a", "invalid_exact_evm_payload_signature"},
      {"8a2ce6496642e377d6da8dbbf5836e9bd15092f9ecab05ded3d6293af148b571c\"", "8a2c\"",
       "invalid_exact_evm_payload_signature"},
      {"\"extensions\":{}", "\"extensions\":{\"payment-identifier\":{\"info\":{\"id\":\"short\"}}}",
       "invalid_payload"},
      {"\"extensions\":{}", "\"extensions\":{\"payment-identifier\":{\"info\":{\"id\":\"has space in it 0123\"}}}",
       "invalid_payload"},
      {"\"validBefore\":\"1740672154\"", "\"validBefore\":\"18446744073709551616\"", "invalid_payload"},
      {"\"extensions\":{}", "\"extensions\":{},\"x402Version\":2", "invalid_payload"}, /* duplicate key */
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    char *j = replace(spec_payment, cases[i].from, cases[i].to);
    CHECKF(j != NULL, "case %zu: pattern not found", i);
    if (!j) continue;
    tg_x402_payment p;
    const char *reason = NULL;
    int rc = decode_json(&p, &reason, j);
    CHECKF(rc < 0, "case %zu accepted", i);
    CHECKF(reason && strcmp(reason, cases[i].reason) == 0, "case %zu: reason %s, want %s", i,
           reason ? reason : "(null)", cases[i].reason);
    free(j);
  }
  /* Not base64, not JSON, not an object, too long. */
  tg_x402_payment p;
  const char *reason;
  CHECK_ERR(tg_x402_payment_decode(&p, &reason, "!!!!", 4), TG_EBASE64);
  CHECK_STR(reason, "invalid_payload");
  char *h = b64("[1,2]");
  CHECK_ERR(tg_x402_payment_decode(&p, &reason, h, strlen(h)), TG_EJSON);
  free(h);
  h = b64("{\"x402Version\":2");
  CHECK_ERR(tg_x402_payment_decode(&p, &reason, h, strlen(h)), TG_EJSON);
  free(h);
  char *big = malloc(TG_X402_HEADER_MAX + 8);
  memset(big, 'A', TG_X402_HEADER_MAX + 4);
  CHECK_ERR(tg_x402_payment_decode(&p, &reason, big, TG_X402_HEADER_MAX + 4), TG_ETOOBIG);
  free(big);
  /* Unpadded base64 is accepted. */
  h = b64(spec_payment);
  size_t n = strlen(h);
  while (n && h[n - 1] == '=') n--;
  CHECK_OK(tg_x402_payment_decode(&p, &reason, h, n));
  free(h);
}

static void test_required_roundtrip(void) {
  tg_x402_required r;
  memset(&r, 0, sizeof r);
  r.error = "PAYMENT-SIGNATURE header is required";
  r.resource_url = "http://127.0.0.1:8402/v1/chat/completions";
  r.mime_type = "application/json";
  r.n_accepts = 2;
  r.accepts[0].scheme = TG_X402_EXACT;
  r.accepts[0].chain_id = 31337;
  tg_u256_from_u64(&r.accepts[0].amount, 2000);
  snprintf(r.accepts[0].token_name, sizeof r.accepts[0].token_name, "%s", "USD Coin");
  snprintf(r.accepts[0].token_version, sizeof r.accepts[0].token_version, "%s", "2");
  r.accepts[0].max_timeout_seconds = 60;
  r.accepts[1] = r.accepts[0];
  r.accepts[1].scheme = TG_X402_CHANNEL;
  r.accepts[1].withdraw_delay = 3600;
  r.advertise_payment_id = 1;
  r.channel_state_json[1] = "{\"chargedCumulativeAmount\":\"5\"}";
  tg_buf h, j;
  tg_buf_init(&h, 0);
  tg_buf_init(&j, 0);
  CHECK_OK(tg_x402_required_encode(&h, &j, &r));
  CHECK(strstr((char *)j.data, "\"x402Version\":2") != NULL);
  CHECK(strstr((char *)j.data, "\"scheme\":\"batch-settlement\"") != NULL);
  CHECK(strstr((char *)j.data, "\"channelState\":{\"chargedCumulativeAmount\":\"5\"}") != NULL);
  tg_x402_required_info info;
  CHECK_OK(tg_x402_required_decode(&info, (const char *)h.data, h.len));
  CHECK_INT(info.n_accepts, 2);
  CHECK(info.payment_id_supported && !info.payment_id_required);
  CHECK(memcmp(&info.accepts[0], &r.accepts[0], sizeof r.accepts[0]) == 0);
  CHECK_INT(info.accepts[1].withdraw_delay, 3600);
  CHECK_STR(info.error, "PAYMENT-SIGNATURE header is required");
  tg_buf_cleanup(&h);
  tg_buf_cleanup(&j);
}

static void test_settle_response(void) {
  tg_x402_settle_response r, d;
  memset(&r, 0, sizeof r);
  r.success = 1;
  r.chain_id = 31337;
  r.has_payer = 1;
  r.payer.b[19] = 1;
  r.has_transaction = 1;
  r.transaction.b[0] = 0xab;
  r.has_charged = 1;
  tg_u256_from_u64(&r.charged, 700);
  r.has_channel = 1;
  tg_u256_from_u64(&r.channel_charged_cumulative, 3900);
  tg_buf h;
  tg_buf_init(&h, 0);
  CHECK_OK(tg_x402_settle_response_encode(&h, &r));
  char reason[64];
  CHECK_OK(tg_x402_settle_response_decode(&d, reason, sizeof reason, (const char *)h.data, h.len));
  CHECK(d.success && d.has_payer && d.has_transaction && d.has_charged && d.has_channel);
  CHECK(tg_u256_cmp(&d.charged, &r.charged) == 0);
  CHECK(tg_u256_cmp(&d.channel_charged_cumulative, &r.channel_charged_cumulative) == 0);
  CHECK_MEM(d.transaction.b, r.transaction.b, 32);
  tg_buf_cleanup(&h);
  /* The direct encoder of a successful answer gives jansson's bytes, in every shape. */
  for (int v = 0; v < 16; v++) {
    tg_x402_settle_response q = r;
    q.has_payer = v & 1;
    q.has_transaction = (v >> 1) & 1;
    q.has_charged = (v >> 2) & 1;
    q.has_channel = (v >> 3) & 1;
    q.withdraw_requested_at = v == 15 ? 1767225600 : 0;
    memset(q.channel_balance.b, 0xff, 32); /* 2^256 - 1: the longest decimal */
    q.channel_id.b[31] = (uint8_t)v;
    q.payer.b[0] = (uint8_t)(v / 2 * 0x35); /* payers change and repeat: the kept EIP-55 form follows */
    if (v & 1) memset(q.channel_total_claimed.b + 24, 0xff, 8); /* 2^64 - 1: the widest small amount */
    tg_buf a, b;
    tg_buf_init(&a, 0);
    tg_buf_init(&b, 0);
    CHECK_OK(tg_x402_settle_response_encode(&a, &q));
    CHECK_OK(tg_x402_settle_response_encode_json(&b, &q));
    CHECKF(a.len == b.len && memcmp(a.data, b.data, a.len) == 0, "shape %d: the two encoders differ", v);
    tg_buf_cleanup(&a);
    tg_buf_cleanup(&b);
  }
}

/* The table-driven base64 decoder against libsodium's on valid, mutated and random input:
 * the same verdict and the same bytes every time. */
static int sodium_decode(uint8_t *bin, size_t cap, size_t *n, const char *s, size_t len) {
  const char *end = NULL;
  int variant = len % 4 == 0 ? sodium_base64_VARIANT_ORIGINAL : sodium_base64_VARIANT_ORIGINAL_NO_PADDING;
  if (sodium_base642bin(bin, cap, s, len, NULL, n, &end, variant) != 0 || end != s + len) return -1;
  return 0;
}

static void test_base64_differential(void) {
  static const char alpha[] = "ABCXYZabcxyz0189+/=-_ \n";
  char text[80];
  uint8_t raw[64], want[80];
  int diffs = 0, accepted = 0;
  for (int round = 0; round < 200000; round++) {
    size_t len;
    if (round % 2 == 0) { /* a valid encoding, then maybe one change */
      size_t n = randombytes_uniform(40);
      randombytes_buf(raw, n);
      sodium_bin2base64(text, sizeof text, raw, n, sodium_base64_VARIANT_ORIGINAL);
      len = strlen(text);
      if (round % 4 == 0 && len > 0) text[randombytes_uniform((uint32_t)len)] = alpha[randombytes_uniform(sizeof alpha - 1)];
      if (round % 8 == 2 && len > 0) len -= 1 + randombytes_uniform((uint32_t)(len < 3 ? len : 3));
    } else { /* random characters */
      len = randombytes_uniform(24);
      for (size_t i = 0; i < len; i++) text[i] = alpha[randombytes_uniform(sizeof alpha - 1)];
    }
    size_t wn = 0;
    int ws = sodium_decode(want, sizeof want, &wn, text, len);
    tg_buf b;
    tg_buf_init(&b, 0);
    int rc = tg_base64_decode(&b, text, len);
    if ((rc == 0) != (ws == 0) || (rc == 0 && (b.len != wn || memcmp(b.data, want, wn) != 0))) {
      if (diffs++ < 5) fprintf(stderr, "    base64 %.*s: ours %d, libsodium %d\n", (int)len, text, rc, ws);
    }
    accepted += rc == 0;
    tg_buf_cleanup(&b);
  }
  CHECKF(diffs == 0, "%d inputs decoded differently", diffs);
  CHECK(accepted > 50000);
}

/* The table-driven encoder writes exactly libsodium's bytes, appended after what the buffer held. */
static void test_base64_encode_differential(void) {
  uint8_t raw[300];
  char want[420];
  int diffs = 0;
  for (int round = 0; round < 20000; round++) {
    size_t n = round < 300 ? (size_t)round : randombytes_uniform(sizeof raw);
    randombytes_buf(raw, n);
    sodium_bin2base64(want, sizeof want, raw, n, sodium_base64_VARIANT_ORIGINAL);
    tg_buf b;
    tg_buf_init(&b, 0);
    int rc = tg_buf_append(&b, "x:", 2);
    if (rc == 0) rc = tg_base64_encode(&b, raw, n);
    size_t wn = strlen(want);
    if (rc != 0 || b.len != wn + 2 || memcmp(b.data, "x:", 2) != 0 || memcmp(b.data + 2, want, wn) != 0 ||
        b.data[b.len] != 0) {
      if (diffs++ < 5) fprintf(stderr, "    base64 encode of %zu bytes: rc %d, %s against %s\n", n, rc, (char *)b.data, want);
    }
    tg_buf_cleanup(&b);
  }
  CHECKF(diffs == 0, "%d inputs encoded differently", diffs);
}

int main(void) {
  if (sodium_init() < 0) return 1;
  RUN(test_spec_example);
  RUN(test_roundtrip);
  RUN(test_rejects);
  RUN(test_required_roundtrip);
  RUN(test_settle_response);
  RUN(test_base64_differential);
  RUN(test_base64_encode_differential);
  return tgt_done();
}
