/* EIP-191 personal messages against MetaMask eth-sig-util's personal-sign cases and cast's outputs. */
#include <stdlib.h>

#include "tg_test.h"
#include "tollgate/address.h"
#include "tollgate/eip191.h"
#include "tollgate/hex.h"
#include "tollgate/keccak.h"
#include "tollgate/secp.h"

/* A vector argument: a hex string, or null / {"$undefined":true} meaning "missing" (NULL). */
static uint8_t *arg_bytes(json_t *v, size_t *len) {
  *len = 0;
  if (!json_is_string(v)) return NULL;
  uint8_t *b = tgt_unhex(json_string_value(v), len);
  CHECKF(b != NULL, "bad hex in vector: %s", json_string_value(v));
  return b;
}

static tg_seckey *arg_key(json_t *v) {
  json_t *buf = json_object_get(v, "$buffer");
  if (!json_is_string(buf)) return NULL; /* null or undefined */
  tg_seckey *k = tg_seckey_new();
  const char *hex = json_string_value(buf);
  if (!k || tg_seckey_set_hex(k, hex, strlen(hex)) != 0) {
    tgt_fail_at(__FILE__, __LINE__, "bad key %s", hex);
    tg_seckey_free(k);
    return NULL;
  }
  return k;
}

static int arg_sig(json_t *v, tg_sig **sigp, tg_sig *storage) {
  *sigp = NULL;
  if (!json_is_string(v)) return 0;
  size_t n;
  uint8_t *b = tgt_unhex(json_string_value(v), &n);
  int rc = b ? tg_sig_from_bytes(storage, b, n) : TG_EHEX;
  free(b);
  if (rc == 0) *sigp = storage;
  return rc;
}

/* Runs one recorded call; returns our error code (0 on success, with `got` compared). */
static int run_call(json_t *call) {
  const char *fn = json_string_value(json_object_get(call, "fn"));
  json_t *args = json_array_get(json_object_get(call, "args"), 0);
  const char *want = json_string_value(json_object_get(call, "result"));
  size_t len;
  uint8_t *data = arg_bytes(json_object_get(args, "data"), &len);
  /* tgt_unhex of "0x" may give NULL for empty data; these vectors never have empty data. */
  int rc;
  char out[140];
  if (strcmp(fn, "personalSign") == 0) {
    tg_seckey *k = arg_key(json_object_get(args, "privateKey"));
    tg_sig sig;
    rc = tg_eip191_sign(&sig, k, data, len);
    if (rc == 0) tg_hex_encode(out, sig.b, 65, 1);
    tg_seckey_free(k);
  } else {
    tg_sig storage, *sig;
    rc = arg_sig(json_object_get(args, "signature"), &sig, &storage);
    if (rc == 0 && strcmp(fn, "recoverPersonalSignature") == 0) {
      tg_address a;
      rc = tg_eip191_recover(&a, data, len, sig);
      if (rc == 0) tg_address_to_hex(&a, out);
    } else if (rc == 0 && strcmp(fn, "extractPublicKey") == 0) {
      uint8_t pub[64];
      if (!data) rc = TG_EINVAL;
      else {
        tg_hash h;
        tg_eip191_hash(&h, data, len);
        rc = tg_recover_pubkey(pub, &h, sig);
      }
      if (rc == 0) tg_hex_encode(out, pub, 64, 1);
    } else if (rc == 0) {
      tgt_fail_at(__FILE__, __LINE__, "unknown fn %s", fn);
      rc = TG_EUNSUPPORTED;
    }
  }
  if (rc == 0 && want) CHECK_STR(out, want);
  free(data);
  return rc;
}

static void test_metamask_personal_sign(void) {
  json_t *root = tgt_load_json("metamask-eth-sig-util/personal-sign.cases.json");
  if (!root) return;
  json_t *cases = json_object_get(root, "cases");
  size_t i, ok = 0, rejected = 0;
  json_t *c;
  json_array_foreach(cases, i, c) {
    int expects_error = json_is_true(json_object_get(c, "expectsError"));
    json_t *calls = json_object_get(c, "calls");
    size_t j;
    json_t *call;
    int failed = 0;
    json_array_foreach(calls, j, call) {
      int rc = run_call(call);
      if (rc) failed = rc;
      if (!expects_error) CHECKF(rc == 0, "case %zu: %s", i, tg_err_name(rc));
    }
    if (expects_error) {
      /* Every must-reject case here is a missing argument: we refuse it with TG_EINVAL. */
      CHECKF(failed == TG_EINVAL, "case %zu should be refused, got %s", i, tg_err_name(failed));
      rejected++;
    } else {
      ok++;
    }
  }
  CHECK_INT(ok, 8);
  CHECK_INT(rejected, 12);
  json_decref(root);
}

static void test_hash_and_cast(void) {
  tg_hash h;
  tg_eip191_hash(&h, (const uint8_t *)"Hello, world!", 13);
  char hx[67];
  tg_hex_encode(hx, h.b, 32, 1);
  /* cast hash-message 'Hello, world!' (ORACLE.md) */
  CHECK_STR(hx, "0xb453bd4e271eed985cbab8231da609c4ce0a9cf1f763b6c1594e76315510e0f1");
  tg_eip191_hash(&h, (const uint8_t *)"", 0);
  tg_hex_encode(hx, h.b, 32, 1);
  /* keccak256("\x19Ethereum Signed Message:\n0") */
  CHECK_STR(hx, "0x5f35dce98ba4fba25530a026ed80b2cecdaa31091ba4958b99b52ea1d068adad");

  /* cast wallet sign --private-key 0x4af1… '' and a 0x-less key (checked with cast 1.7.1) */
  tg_seckey *k = tg_seckey_new();
  const char *key = "4af1bceebf7f3634ec3cff8a2c38e51178d5d4ce585c52d6043e5e2cc3418bb0";
  CHECK_OK(tg_seckey_set_hex(k, key, strlen(key)));
  tg_sig sig;
  CHECK_OK(tg_eip191_sign(&sig, k, (const uint8_t *)"", 0));
  char sh[133];
  tg_hex_encode(sh, sig.b, 65, 1);
  CHECK_STR(sh, "0xa50455140ffb050cee5a61b8e6ba42d57f05af53df36a8eaef4fc9bd9d6d03f4767b1bc858a16f1760"
                "0e031eeb4dbe45382bc7a0acc5347744f473dd54eea4651c");
  CHECK_OK(tg_eip191_sign(&sig, k, (const uint8_t *)"hi", 2));
  tg_hex_encode(sh, sig.b, 65, 1);
  CHECK_STR(sh, "0x1a636b2d989e017248e71c2efe9ab938fb68f51025d0f25d29b41899162df41e3320c31a99e30f241b"
                "f7a8bf9053332c65ca2522a098c6371c3a9705701387841c");

  /* verify: right signer, wrong signer, altered message */
  tg_address me, other;
  CHECK_OK(tg_seckey_address(&me, k));
  CHECK_OK(tg_eip191_verify(&me, (const uint8_t *)"hi", 2, &sig));
  CHECK_ERR(tg_eip191_verify(&me, (const uint8_t *)"ho", 2, &sig), TG_ESIG_MISMATCH);
  memset(other.b, 0x11, 20);
  CHECK_ERR(tg_eip191_verify(&other, (const uint8_t *)"hi", 2, &sig), TG_ESIG_MISMATCH);
  CHECK_ERR(tg_eip191_verify(&me, NULL, 0, &sig), TG_EINVAL);
  CHECK_ERR(tg_eip191_verify(&me, (const uint8_t *)"hi", 2, NULL), TG_EINVAL);
  tg_seckey_free(k);
}

/* The decimal length is that of the byte count: check a message of 1000 bytes (4 digits). */
static void test_long_message(void) {
  static uint8_t msg[1000];
  memset(msg, 'a', sizeof msg);
  tg_hash h1, h2;
  tg_eip191_hash(&h1, msg, sizeof msg);
  uint8_t whole[26 + 4 + 1000];
  memcpy(whole, "\x19" "Ethereum Signed Message:\n1000", 26 + 4);
  memcpy(whole + 30, msg, 1000);
  tg_keccak256(&h2, whole, sizeof whole);
  CHECK_MEM(h1.b, h2.b, 32);
}

int main(void) {
  RUN(test_metamask_personal_sign);
  RUN(test_hash_and_cast);
  RUN(test_long_message);
  return tgt_done();
}
