/* Unit tests of the payer client that need no network: state file, channels, argument checks. */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client/client_int.h"
#include "tg_test.h"
#include "tollgate/address.h"
#include "tollgate/channel.h"
#include "tollgate/client.h"
#include "tollgate/hex.h"
#include "tollgate/u256.h"

static char dir[64];
static tg_seckey *key;

static void setup_dir(void) {
  snprintf(dir, sizeof dir, "/tmp/tg-client-unit-XXXXXX");
  if (!mkdtemp(dir)) abort();
}

static void cleanup_dir(void) {
  char p[128];
  const char *names[] = {"state.json", "state.json.tmp", "state.lock"};
  for (size_t i = 0; i < 3; i++) {
    snprintf(p, sizeof p, "%s/%s", dir, names[i]);
    unlink(p);
  }
  rmdir(dir);
}

static tg_client *open_client(int *rc) {
  tg_client_opts o;
  memset(&o, 0, sizeof o);
  o.state_dir = dir;
  o.key = key;
  o.allow_exact = 1;
  o.allow_channel = 1;
  tg_client *c = NULL;
  *rc = tg_client_open(&c, &o);
  return c;
}

static void terms(tg_x402_requirements *t) {
  memset(t, 0, sizeof *t);
  t->scheme = TG_X402_CHANNEL;
  t->chain_id = 31337;
  tg_u256_from_u64(&t->amount, 1000);
  memset(t->asset.b, 0x11, 20);
  memset(t->pay_to.b, 0x22, 20);
  memset(t->receiver_authorizer.b, 0x33, 20);
  memset(t->channel_contract.b, 0x44, 20);
  t->withdraw_delay = 900;
}

/* A channel registered for the offered terms gets the id the contract computes, and persists. */
static void test_channel_add_persists(void) {
  setup_dir();
  int rc;
  tg_client *c = open_client(&rc);
  CHECK_OK(rc);
  if (!c) return;
  tg_x402_requirements t;
  terms(&t);
  tg_hash salt;
  memset(salt.b, 0x55, 32);
  tg_u256 dep;
  tg_u256_from_u64(&dep, 500000);
  tg_client_channel ch;
  CHECK_OK(tg_client_channel_add(c, &ch, &t, &salt, &dep));
  tg_channel_config cfg;
  memset(&cfg, 0, sizeof cfg);
  CHECK_OK(tg_seckey_address(&cfg.payer, key));
  cfg.receiver = t.pay_to;
  cfg.receiver_authorizer = t.receiver_authorizer;
  cfg.token = t.asset;
  cfg.withdraw_delay = 900;
  cfg.salt = salt;
  tg_hash dom, id;
  CHECK_OK(tg_channel_domain(&dom, 31337, &t.channel_contract));
  CHECK_OK(tg_channel_id(&id, &dom, &cfg));
  CHECK_MEM(ch.id.b, id.b, 32);
  CHECK(tg_address_eq(&ch.config.payer, &cfg.payer));
  /* Exact terms are not channel terms. */
  tg_x402_requirements ex = t;
  ex.scheme = TG_X402_EXACT;
  CHECK_ERR(tg_client_channel_add(c, NULL, &ex, &salt, &dep), TG_EINVAL);
  /* A bad payment-identifier is refused before any request. */
  tg_client_request req;
  memset(&req, 0, sizeof req);
  req.url = "http://127.0.0.1:1/x";
  req.payment_id = "short";
  tg_client_response r;
  CHECK_ERR(tg_client_fetch(c, &r, &req), TG_EINVAL);
  tg_client_response_cleanup(&r);
  /* An unreachable gateway: a transport error, nothing paid. */
  req.payment_id = NULL;
  CHECK_ERR(tg_client_fetch(c, &r, &req), TG_ECLIENT_HTTP);
  CHECK(!r.paid);
  tg_client_response_cleanup(&r);
  tg_client_close(c);

  /* A restart sees the channel; adding it again raises the deposit only. */
  c = open_client(&rc);
  CHECK_OK(rc);
  if (!c) goto out;
  tg_client_channel list[4];
  size_t n = 0;
  CHECK_OK(tg_client_channels(c, list, 4, &n));
  CHECK_INT(n, 1);
  CHECK_MEM(list[0].id.b, id.b, 32);
  uint64_t d64 = 0;
  CHECK_OK(tg_u256_to_u64(&list[0].deposit, &d64));
  CHECK_INT(d64, 500000);
  tg_u256_from_u64(&dep, 700000);
  CHECK_OK(tg_client_channel_add(c, NULL, &t, &salt, &dep));
  tg_u256_from_u64(&dep, 100);
  CHECK_OK(tg_client_channel_add(c, NULL, &t, &salt, &dep));
  CHECK_OK(tg_client_channels(c, list, 4, &n));
  CHECK_INT(n, 1);
  CHECK_OK(tg_u256_to_u64(&list[0].deposit, &d64));
  CHECK_INT(d64, 700000);
  tg_client_close(c);
out:
  cleanup_dir();
}

/* A malformed state file is refused on open, never half-read. */
static void test_corrupt_state(void) {
  setup_dir();
  char p[128];
  snprintf(p, sizeof p, "%s/state.json", dir);
  const char *bad[] = {"{", "[]", "{\"channels\":[{\"chainId\":1}]}",
                       "{\"spent\":{\"total\":\"x\",\"hour\":\"0\",\"day\":\"0\"}}"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    FILE *f = fopen(p, "w");
    if (!f) abort();
    fputs(bad[i], f);
    fclose(f);
    int rc;
    tg_client *c = open_client(&rc);
    CHECKF(rc == TG_ECLIENT_STATE && c == NULL, "case %zu: rc %d", i, rc);
    tg_client_close(c);
  }
  cleanup_dir();
}

/* The stream trailer is found however the bytes are split; data lines and bad trailers are not. */
static void test_sse_trailer(void) {
  static const char stream[] =
      "data: {\"choices\":[{\"delta\":{\"content\":\": x402-charge {}\"}}]}\n\n"
      ": keep-alive\r\n"
      ": x402-charge {\"chargedAmount\":-1}\n"
      ": x402-charge {\"chargedAmount\":\"1234\",\"chargedCumulativeAmount\":\"51234\"}\r\n\r\n";
  for (size_t piece = 1; piece <= sizeof stream; piece++) {
    tg_client__sse s;
    memset(&s, 0, sizeof s);
    for (size_t off = 0; off < sizeof stream - 1; off += piece) {
      size_t n = sizeof stream - 1 - off < piece ? sizeof stream - 1 - off : piece;
      tg_client__sse_feed(&s, stream + off, n);
    }
    char d[TG_U256_DEC_MAX] = "", e[TG_U256_DEC_MAX] = "";
    if (s.found) tg_u256_to_dec(&s.charged, d);
    if (s.has_cum) tg_u256_to_dec(&s.cum, e);
    CHECKF(s.found && strcmp(d, "1234") == 0 && s.has_cum && strcmp(e, "51234") == 0,
           "piece %zu: found %d charged %s cumulative %s", piece, s.found, d, e);
  }
  tg_client__sse s;
  memset(&s, 0, sizeof s);
  static const char none[] = "data: : x402-charge {\"chargedAmount\":\"5\"}\n: x402-charge {\"chargedAmount\":\"5\"";
  tg_client__sse_feed(&s, none, sizeof none - 1); /* the comment is not ended by a newline */
  CHECK(!s.found);
}

/* Fresh channel salts: 24 zero bytes (cheap calldata in every claim), then 8 random ones. */
static void test_channel_salt(void) {
  static const uint8_t zero[24];
  tg_hash a, b;
  int differ = 0;
  for (int i = 0; i < 8; i++) {
    tg_client_channel_salt(&a);
    tg_client_channel_salt(&b);
    CHECK_MEM(a.b, zero, 24);
    CHECK_MEM(b.b, zero, 24);
    differ += memcmp(a.b + 24, b.b + 24, 8) != 0;
  }
  CHECK_INT(differ, 8);
}

int main(void) {
  if (sodium_init() < 0) return 1;
  if (tg_secp_init() != 0) return 1;
  key = tg_seckey_new();
  if (!key || tg_seckey_set_hex(key, "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6", 66))
    return 1;
  RUN(test_channel_add_persists);
  RUN(test_corrupt_state);
  RUN(test_sse_trailer);
  RUN(test_channel_salt);
  tg_seckey_free(key);
  return tgt_done();
}
