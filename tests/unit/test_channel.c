/* Channel ids and vouchers: the fast path agrees with full EIP-712 JSON hashing; checks refuse forgeries. */
#include <stdio.h>
#include <stdlib.h>

#include "tg_test.h"
#include "tollgate/address.h"
#include "tollgate/channel.h"
#include "tollgate/eip712.h"
#include "tollgate/hex.h"
#include "tollgate/u256.h"

static void fill(uint8_t *p, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; i++) p[i] = (uint8_t)((seed = seed * 1103515245u + 12345u) >> 16);
}

/* The same ChannelConfig as a typed-data document: digest = channel id. */
static void test_channel_id_matches_json(void) {
  for (unsigned k = 0; k < 50; k++) {
    tg_channel_config c;
    memset(&c, 0, sizeof c);
    fill(c.payer.b, 20, k * 7 + 1);
    fill(c.payer_authorizer.b, 20, k * 7 + 2);
    fill(c.receiver.b, 20, k * 7 + 3);
    fill(c.receiver_authorizer.b, 20, k * 7 + 4);
    if (k % 5) fill(c.token.b, 20, k * 7 + 5);
    c.withdraw_delay = 900 + k * 1234567;
    fill(c.salt.b, 32, k * 7 + 6);
    tg_address contract;
    fill(contract.b, 20, k + 99);
    uint64_t chain = 1 + k * 1000;
    tg_hash dom, id;
    CHECK_OK(tg_channel_domain(&dom, chain, &contract));
    CHECK_OK(tg_channel_id(&id, &dom, &c));

    char a[6][TG_ADDRESS_HEX_LEN], salt[67];
    tg_address_to_hex(&c.payer, a[0]);
    tg_address_to_hex(&c.payer_authorizer, a[1]);
    tg_address_to_hex(&c.receiver, a[2]);
    tg_address_to_hex(&c.receiver_authorizer, a[3]);
    tg_address_to_hex(&c.token, a[4]);
    tg_address_to_hex(&contract, a[5]);
    tg_hex_encode(salt, c.salt.b, 32, 1);
    char doc[4096];
    snprintf(doc, sizeof doc,
             "{\"types\":{\"EIP712Domain\":[{\"name\":\"name\",\"type\":\"string\"},{\"name\":\"version\",\"type\":\"string\"},"
             "{\"name\":\"chainId\",\"type\":\"uint256\"},{\"name\":\"verifyingContract\",\"type\":\"address\"}],"
             "\"ChannelConfig\":[{\"name\":\"payer\",\"type\":\"address\"},{\"name\":\"payerAuthorizer\",\"type\":\"address\"},"
             "{\"name\":\"receiver\",\"type\":\"address\"},{\"name\":\"receiverAuthorizer\",\"type\":\"address\"},"
             "{\"name\":\"token\",\"type\":\"address\"},{\"name\":\"withdrawDelay\",\"type\":\"uint40\"},{\"name\":\"salt\",\"type\":\"bytes32\"}]},"
             "\"primaryType\":\"ChannelConfig\",\"domain\":{\"name\":\"Tollgate Channels\",\"version\":\"1\",\"chainId\":%llu,"
             "\"verifyingContract\":\"%s\"},\"message\":{\"payer\":\"%s\",\"payerAuthorizer\":\"%s\",\"receiver\":\"%s\","
             "\"receiverAuthorizer\":\"%s\",\"token\":\"%s\",\"withdrawDelay\":%llu,\"salt\":\"%s\"}}",
             (unsigned long long)chain, a[5], a[0], a[1], a[2], a[3], a[4],
             (unsigned long long)c.withdraw_delay, salt);
    tg_hash want;
    CHECK_OK(tg_eip712_digest_json(&want, doc, strlen(doc)));
    CHECKF(memcmp(want.b, id.b, 32) == 0, "case %u: channel id differs from the JSON digest", k);
  }
  tg_channel_config c;
  memset(&c, 0, sizeof c);
  c.withdraw_delay = (uint64_t)1 << 40;
  tg_hash h;
  CHECK_ERR(tg_channel_config_hash(&h, &c), TG_ERANGE);
}

static void test_voucher_check(void) {
  tg_seckey *payer = tg_seckey_new(), *other = tg_seckey_new();
  CHECK_OK(tg_seckey_set_hex(payer, "0x4646464646464646464646464646464646464646464646464646464646464646", 66));
  CHECK_OK(tg_seckey_generate(other));
  tg_channel_config c;
  memset(&c, 0, sizeof c);
  CHECK_OK(tg_seckey_address(&c.payer, payer));
  c.withdraw_delay = 3600;
  tg_address contract = {{1, 2, 3}};
  tg_hash dom, id;
  CHECK_OK(tg_channel_domain(&dom, 31337, &contract));
  CHECK_OK(tg_channel_id(&id, &dom, &c));
  tg_u256 max;
  tg_u256_from_u64(&max, 123456);
  tg_sig sig;
  CHECK_OK(tg_channel_voucher_sign(&sig, payer, &dom, &id, &max));
  tg_x402_sig xs = {.len = 65};
  memcpy(xs.b, sig.b, 65);
  tg_address expected;
  tg_channel_voucher_signer(&expected, &c);
  CHECK_OK(tg_channel_voucher_check(&dom, &id, &max, &xs, &expected));
  /* Another amount, channel, chain or contract: the signature no longer matches. */
  tg_u256 more;
  tg_u256_from_u64(&more, 123457);
  CHECK_FAILS(tg_channel_voucher_check(&dom, &id, &more, &xs, &expected));
  tg_hash id2 = id;
  id2.b[5] ^= 1;
  CHECK_FAILS(tg_channel_voucher_check(&dom, &id2, &max, &xs, &expected));
  tg_hash dom2;
  CHECK_OK(tg_channel_domain(&dom2, 1, &contract));
  CHECK_FAILS(tg_channel_voucher_check(&dom2, &id, &max, &xs, &expected));
  /* A payer authorizer signs instead of the payer. */
  CHECK_OK(tg_seckey_address(&c.payer_authorizer, other));
  tg_channel_voucher_signer(&expected, &c);
  CHECK_ERR(tg_channel_voucher_check(&dom, &id, &max, &xs, &expected), TG_ESIG_MISMATCH);
  /* High S (s' = n - s, v flipped) is refused. */
  static const uint8_t n[32] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                0xff, 0xff, 0xff, 0xff, 0xfe, 0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48,
                                0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36, 0x41, 0x41};
  tg_u256 nn, s, hs;
  memcpy(nn.b, n, 32);
  memcpy(s.b, xs.b + 32, 32);
  CHECK_ERR(tg_u256_sub(&hs, &nn, &s), TG_OK);
  tg_x402_sig high = xs;
  memcpy(high.b + 32, hs.b, 32);
  high.b[64] = (uint8_t)(high.b[64] == 27 ? 28 : 27);
  CHECK_OK(tg_seckey_address(&expected, payer));
  CHECK_ERR(tg_channel_voucher_check(&dom, &id, &max, &high, &expected), TG_ESIG_HIGH_S);
  /* A contract wallet's longer signature is left to ERC-1271. */
  tg_x402_sig longsig = {.len = 130};
  CHECK_ERR(tg_channel_voucher_check(&dom, &id, &max, &longsig, &expected), TG_EUNSUPPORTED);
  tg_seckey_free(payer);
  tg_seckey_free(other);
}

int main(void) {
  RUN(test_channel_id_matches_json);
  RUN(test_voucher_check);
  return tgt_done();
}
