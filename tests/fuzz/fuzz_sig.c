/* libFuzzer driver: signature bytes (65-byte and EIP-2098 forms), recovery, split/join, and address text. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tollgate/address.h"
#include "tollgate/eip191.h"
#include "tollgate/secp.h"

/* Input: 32-byte digest || signature bytes (any length); also read whole as an address and a message. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size >= 32) {
    tg_hash d;
    memcpy(d.b, data, 32);
    tg_sig sig;
    int rc = tg_sig_from_bytes(&sig, data + 32, size - 32);
    if (rc == 0) {
      if (sig.b[64] != 27 && sig.b[64] != 28) abort();
      tg_address a;
      uint8_t pub[64];
      int r1 = tg_recover_address(&a, &d, &sig);
      int r2 = tg_recover_pubkey(pub, &d, &sig);
      if (r1 != r2) abort();
      tg_u256 r, s;
      int recid;
      int rs = tg_sig_split(&sig, &r, &s, &recid);
      if (r1 == 0) {
        /* Recovered: the ranges and low S held, and split/join round-trips. */
        if (rs != 0) abort();
        tg_sig again;
        if (tg_sig_join(&again, &r, &s, recid) != 0 || memcmp(again.b, sig.b, 65) != 0) abort();
        tg_address b;
        tg_pubkey_to_address(&b, pub);
        if (!tg_address_eq(&a, &b)) abort();
      } else if (r1 == TG_ESIG_HIGH_S || r1 == TG_ESIG) {
        if (rs != r1) abort();
        if (!tg_address_is_zero(&a)) abort();
      } else if (r1 != TG_ESIG_RECOVER) {
        abort();
      }
      tg_address m;
      int rm = tg_eip191_recover(&m, data + 32, size - 32, &sig);
      if (rm != 0 && !tg_address_is_zero(&m)) abort();
    } else if (rc != TG_ESIG && rc != TG_ESIG_RECID) {
      abort();
    }
  }
  tg_address a;
  if (tg_address_parse(&a, (const char *)data, size) == 0) {
    char cs[TG_ADDRESS_HEX_LEN], lo[TG_ADDRESS_HEX_LEN];
    tg_address_to_checksum(&a, cs);
    tg_address_to_hex(&a, lo);
    tg_address b, c;
    if (tg_address_parse(&b, cs, 42) != 0 || !tg_address_eq(&a, &b)) abort();
    if (tg_address_parse(&c, lo, 42) != 0 || !tg_address_eq(&a, &c)) abort();
  }
  return 0;
}
