/* Tests of transactions: ethereum/tests TransactionTests (every case), ethers transactions, BasicTests txtest, the EIP-155 example. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "tg_proc.h"
#include "tg_test.h"
#include "tollgate/address.h"
#include "tollgate/hex.h"
#include "tollgate/keccak.h"
#include "tollgate/secp.h"
#include "tollgate/tx.h"
#include "tollgate/u256.h"

static tg_seckey *key_from_hex(const char *hex) {
  tg_seckey *k = tg_seckey_new();
  CHECK(k != NULL);
  if (k && tg_seckey_set_hex(k, hex, strlen(hex)) != 0) {
    tgt_fail_at(__FILE__, __LINE__, "bad key %s", hex);
    tg_seckey_free(k);
    return NULL;
  }
  return k;
}

static int hex_eq(const tg_buf *b, const char *hex) {
  char *h = tg_hex_dup(b->data, b->len);
  int eq = h && strcmp(h, hex) == 0;
  free(h);
  return eq;
}

static void hash_hex(char out[67], const tg_hash *h) { tg_hex_encode(out, h->b, 32, 1); }

static int u256_json(tg_u256 *out, const json_t *j) {
  tg_u256_zero(out);
  if (j == NULL) return 0;
  if (json_is_integer(j)) {
    tg_u256_from_u64(out, (uint64_t)json_integer_value(j));
    return 0;
  }
  const char *s = json_string_value(j);
  if (!s) return -1;
  if (strcmp(s, "0x") == 0) return 0;
  return tg_u256_parse(out, s, strlen(s));
}

static int u64_json(uint64_t *out, const json_t *j) {
  tg_u256 u;
  *out = 0;
  if (u256_json(&u, j)) return -1;
  return tg_u256_to_u64(&u, out);
}

/* ------------------------------------------------ ethereum/tests TransactionTests */

/* Decodes, validates for chain 1 and recovers: the first failure, or 0 with sender/hash set. */
static int full_check(const uint8_t *raw, size_t len, tg_tx *tx, tg_address *sender,
                      int *stage) {
  int rc = tg_tx_decode(tx, raw, len);
  *stage = 0;
  if (rc) return rc;
  *stage = 1;
  if ((rc = tg_tx_sender(sender, tx))) return rc;
  *stage = 2;
  return tg_tx_validate(tx, 1);
}

static void test_ethereum_tests(void) {
  json_t *index = tgt_load_json("ethereum-tests-transactions/index.json");
  if (!index) return;
  json_t *cases = json_object_get(index, "cases");
  size_t i;
  json_t *row;
  int n = 0, valid = 0, invalid = 0;
  json_array_foreach(cases, i, row) {
    const char *file = json_string_value(json_object_get(row, "file"));
    const char *name = json_string_value(json_object_get(row, "name"));
    const char *fork = json_string_value(json_object_get(row, "fork"));
    const char *expect = json_string_value(json_object_get(row, "expect"));
    const char *category = json_string_value(json_object_get(row, "category"));
    char rel[512];
    snprintf(rel, sizeof rel, "ethereum-tests-transactions/%s", file);
    json_t *doc = tgt_load_json(rel);
    if (!doc) continue;
    json_t *tc = json_object_get(doc, name);
    if (!tc) tc = json_object_iter_value(json_object_iter(doc));
    size_t len;
    uint8_t *raw = tgt_unhex(json_string_value(json_object_get(tc, "txbytes")), &len);
    CHECKF(raw != NULL, "%s: bad txbytes", name);
    tg_tx tx;
    tg_address sender;
    int stage = 0;
    int rc = raw ? full_check(raw, len, &tx, &sender, &stage) : -1;
    if (strcmp(expect, "valid") == 0) {
      valid++;
      CHECKF(rc == 0, "%s: valid tx rejected at stage %d: %s", name, stage, tg_err_name(rc));
      if (rc == 0) {
        char a[TG_ADDRESS_HEX_LEN], h[67];
        tg_address_to_hex(&sender, a);
        CHECK_STR(a, json_string_value(json_object_get(row, "sender")));
        tg_hash hh;
        CHECK_OK(tg_tx_hash(&hh, &tx));
        hash_hex(h, &hh);
        CHECK_STR(h, json_string_value(json_object_get(row, "hash")));
        /* What decodes re-encodes to the same bytes. */
        tg_buf b;
        tg_buf_init(&b, 0);
        CHECK_OK(tg_tx_encode(&b, &tx));
        CHECKF(b.len == len && memcmp(b.data, raw, len) == 0, "%s: re-encoding differs", name);
        tg_buf_cleanup(&b);
        /* Intrinsic gas as the fork computes it. */
        json_t *res = json_object_get(json_object_get(tc, "result"), fork);
        uint64_t want_gas, gas;
        CHECK(u64_json(&want_gas, json_object_get(res, "intrinsicGas")) == 0);
        CHECK_OK(tg_tx_intrinsic_gas(&tx, &gas));
        CHECKF(gas == want_gas, "%s: intrinsic gas %llu, want %llu", name,
               (unsigned long long)gas, (unsigned long long)want_gas);
      }
    } else {
      invalid++;
      CHECKF(rc < 0, "%s (%s): invalid tx accepted", name, category);
      /*
       * Where the rejection happens says what kind of rule it is: encoding
       * and type rules in the decoder; signature values in the decoder too
       * (r, s ranges and low S), except a point that does not recover;
       * chain-id and consensus rules in tg_tx_validate, except NONCE_TOO_BIG
       * (EIP-2681) and chain ids that cannot be represented, which the
       * decoder already refuses.
       */
      const char *exc = json_string_value(json_object_get(row, "exception"));
      if (strcmp(category, "encoding") == 0 || strcmp(category, "fork-type-support") == 0)
        CHECKF(stage == 0, "%s: rejected at stage %d, want the decoder", name, stage);
      else if (strcmp(category, "signature") == 0)
        CHECKF(stage == 0 || (stage == 1 && strcmp(exc, "EC_RECOVERY_FAIL") == 0),
               "%s: rejected at stage %d (%s)", name, stage, tg_err_name(rc));
      else if (strcmp(exc, "NONCE_TOO_BIG") == 0)
        CHECKF(stage == 0 && rc == TG_ETX_FIELD, "%s: %s", name, tg_err_name(rc));
      else if (strcmp(category, "chain-id-context") == 0)
        ; /* any stage: several of these also carry a high S or an unusable v */
      else
        CHECKF(stage == 2, "%s: rejected at stage %d (%s)", name, stage, tg_err_name(rc));
    }
    free(raw);
    json_decref(doc);
    n++;
  }
  CHECK_INT(n, 210);
  CHECK_INT(valid, 50);
  CHECK_INT(invalid, 160);
  json_decref(index);
}

/* ----------------------------------------------------------- ethers testcases */

typedef struct {
  const char *unsigned_key, *signed_key;
  tg_tx_type type;
  int eip155;
} ethers_form;

static const ethers_form FORMS[] = {
    {"unsignedLegacy", "signedLegacy", TG_TX_LEGACY, 0},
    {"unsignedEip155", "signedEip155", TG_TX_LEGACY, 1},
    {"unsignedBerlin", "signedBerlin", TG_TX_EIP2930, 0},
    {"unsignedLondon", "signedLondon", TG_TX_EIP1559, 0},
};

/* Builds the access list of an ethers transaction into `al`. */
static int ethers_access_list(tg_buf *al, const json_t *list) {
  size_t n = json_array_size(list);
  if (n == 0) return 0;
  tg_access_entry *e = calloc(n, sizeof *e);
  tg_hash *keys[64] = {0};
  int rc = n > 64 ? -1 : 0;
  for (size_t i = 0; i < n && !rc; i++) {
    const json_t *ent = json_array_get(list, i);
    const char *addr = json_string_value(json_object_get(ent, "address"));
    rc = tg_address_parse(&e[i].address, addr, strlen(addr));
    const json_t *sk = json_object_get(ent, "storageKeys");
    size_t nk = json_array_size(sk);
    keys[i] = calloc(nk ? nk : 1, sizeof(tg_hash));
    for (size_t k = 0; k < nk && !rc; k++) {
      const char *h = json_string_value(json_array_get(sk, k));
      rc = tg_hex_decode_exact(keys[i][k].b, 32, h, strlen(h));
    }
    e[i].storage_keys = keys[i];
    e[i].n_storage_keys = nk;
  }
  if (!rc) rc = tg_access_list_encode(al, e, n);
  for (size_t i = 0; i < n && i < 64; i++) free(keys[i]);
  free(e);
  return rc;
}

static long ethers_checked, ethers_chain0_refused;
/*
 * The older transaction.json.gz (ethers v5 generator) signs typed forms of a
 * transaction without "chainId" for chain 1; the newer transactions.json.gz
 * uses chain 0 there.
 */
static uint64_t typed_default_chain;

static void check_ethers_case(const json_t *tc) {
  const char *name = json_string_value(json_object_get(tc, "name"));
  const json_t *t = json_object_get(tc, "transaction");
  tg_tx base;
  tg_tx_init(&base, TG_TX_LEGACY);
  int bad = 0;
  bad |= u64_json(&base.nonce, json_object_get(t, "nonce"));
  bad |= u64_json(&base.gas_limit, json_object_get(t, "gasLimit"));
  bad |= u64_json(&base.chain_id, json_object_get(t, "chainId"));
  bad |= u256_json(&base.gas_price, json_object_get(t, "gasPrice"));
  bad |= u256_json(&base.max_fee_per_gas, json_object_get(t, "maxFeePerGas"));
  bad |= u256_json(&base.max_priority_fee_per_gas, json_object_get(t, "maxPriorityFeePerGas"));
  bad |= u256_json(&base.value, json_object_get(t, "value"));
  const char *to = json_string_value(json_object_get(t, "to"));
  if (to) {
    base.has_to = 1;
    bad |= tg_address_parse(&base.to, to, strlen(to));
  }
  const char *data = json_string_value(json_object_get(t, "data"));
  size_t dlen = 0;
  uint8_t *dbytes = tgt_unhex(data ? data : "0x", &dlen);
  base.data = TG_BYTES(dbytes, dlen);
  tg_buf al;
  tg_buf_init(&al, 0);
  bad |= ethers_access_list(&al, json_object_get(t, "accessList"));
  CHECKF(!bad && dbytes, "%s: cannot read the transaction", name);
  tg_seckey *key = key_from_hex(json_string_value(json_object_get(tc, "privateKey")));
  tg_address signer;
  if (key) CHECK_OK(tg_seckey_address(&signer, key));
  for (size_t f = 0; f < sizeof FORMS / sizeof FORMS[0] && key && !bad; f++) {
    const char *want_u = json_string_value(json_object_get(tc, FORMS[f].unsigned_key));
    const char *want_s = json_string_value(json_object_get(tc, FORMS[f].signed_key));
    if (!want_u || !*want_u) continue; /* no EIP-155 form without a chain id */
    if (FORMS[f].eip155 && base.chain_id == 0) {
      /*
       * Deliberate difference: the older transaction.json.gz has EIP-155
       * forms for chain id 0, written with a non-canonical 0x00 chain-id
       * byte in the payload and v = 35/36. Chain id 0 is not a valid
       * EIP-155 chain (v = 35/36 is ambiguous with "no chain id"), so we
       * neither build nor accept these: the signed form must be refused.
       */
      size_t slen;
      uint8_t *sraw = tgt_unhex(want_s, &slen);
      tg_tx rej;
      CHECKF(sraw && tg_tx_decode(&rej, sraw, slen) == TG_ETX_CHAIN, "%s: chain-id-0 EIP-155 accepted",
             name);
      free(sraw);
      ethers_chain0_refused++;
      continue;
    }
    tg_tx tx = base;
    tx.type = FORMS[f].type;
    if (tx.type == TG_TX_LEGACY && !FORMS[f].eip155) tx.chain_id = 0;
    if (tx.type != TG_TX_LEGACY) tx.access_list = TG_BYTES(al.data, al.len);
    if (tx.type != TG_TX_LEGACY && !json_object_get(t, "chainId")) tx.chain_id = typed_default_chain;
    tg_buf b;
    tg_buf_init(&b, 0);
    CHECK_OK(tg_tx_encode_unsigned(&b, &tx));
    CHECKF(hex_eq(&b, want_u), "%s %s: unsigned serialization differs", name,
           FORMS[f].unsigned_key);
    /* The streamed signing hash equals keccak of the payload. */
    tg_hash h1, h2;
    CHECK_OK(tg_tx_signing_hash(&h1, &tx));
    tg_keccak256(&h2, b.data, b.len);
    CHECK_MEM(h1.b, h2.b, 32);
    tg_buf_reset(&b);
    CHECK_OK(tg_tx_sign(&tx, key));
    CHECK_OK(tg_tx_encode(&b, &tx));
    CHECKF(hex_eq(&b, want_s), "%s %s: signed serialization differs", name, FORMS[f].signed_key);
    /* Decode what we signed: same fields back, the key's address as sender, same hash. */
    tg_tx back;
    int rc = tg_tx_decode(&back, b.data, b.len);
    CHECKF(rc == 0, "%s %s: decode -> %s", name, FORMS[f].signed_key, tg_err_name(rc));
    if (rc == 0) {
      tg_address from;
      CHECK_OK(tg_tx_sender(&from, &back));
      CHECKF(tg_address_eq(&from, &signer), "%s %s: sender differs", name, FORMS[f].signed_key);
      CHECK(back.nonce == tx.nonce && back.gas_limit == tx.gas_limit &&
            back.chain_id == tx.chain_id && back.has_to == tx.has_to &&
            back.data.len == tx.data.len && back.type == tx.type);
      tg_hash th;
      CHECK_OK(tg_tx_hash(&th, &back));
      tg_keccak256(&h2, b.data, b.len);
      CHECK_MEM(th.b, h2.b, 32);
    }
    tg_buf_cleanup(&b);
    ethers_checked++;
  }
  tg_seckey_free(key);
  tg_buf_cleanup(&al);
  free(dbytes);
}

static void run_ethers_file(const char *rel, size_t want_cases) {
  json_t *all = tgt_load_json(rel);
  if (!all) return;
  size_t i;
  json_t *tc;
  json_array_foreach(all, i, tc) check_ethers_case(tc);
  CHECK_INT(json_array_size(all), want_cases);
  json_decref(all);
}

/* transactions.json.gz: type-3 (Cancun, blob) forms are out of scope and not checked. */
static void test_ethers_transactions(void) {
  ethers_checked = 0;
  typed_default_chain = 0;
  run_ethers_file("ethers-testcases/transactions.json.gz", 3200);
  /* 3200 legacy + 1664 EIP-155 + 3200 Berlin + 3200 London (chain id 0 included). */
  CHECK_INT(ethers_checked, 3200 + 1664 + 3200 + 3200);
}

static void test_ethers_transaction(void) {
  ethers_checked = 0;
  ethers_chain0_refused = 0;
  typed_default_chain = 1;
  run_ethers_file("ethers-testcases/transaction.json.gz", 896);
  CHECKF(ethers_checked + ethers_chain0_refused == 4 * 896, "%ld forms checked, %ld refused",
         ethers_checked, ethers_chain0_refused);
  printf("# transaction.json.gz: %ld forms checked, %ld chain-id-0 EIP-155 forms refused\n",
         ethers_checked, ethers_chain0_refused);
}

/* ----------------------------------------------------------- BasicTests txtest */

static void test_basic_txtest(void) {
  json_t *all = tgt_load_json("ethereum-tests-basic/txtest.json");
  if (!all) return;
  size_t i;
  json_t *tc;
  json_array_foreach(all, i, tc) {
    tg_tx tx;
    tg_tx_init(&tx, TG_TX_LEGACY);
    CHECK(u64_json(&tx.nonce, json_object_get(tc, "nonce")) == 0);
    CHECK(u64_json(&tx.gas_limit, json_object_get(tc, "startgas")) == 0);
    CHECK(u256_json(&tx.gas_price, json_object_get(tc, "gasprice")) == 0);
    CHECK(u256_json(&tx.value, json_object_get(tc, "value")) == 0);
    const char *to = json_string_value(json_object_get(tc, "to"));
    if (*to) {
      tx.has_to = 1;
      CHECK_OK(tg_address_parse(&tx.to, to, strlen(to)));
    }
    size_t dlen;
    uint8_t *data = tgt_unhex(json_string_value(json_object_get(tc, "data")), &dlen);
    tx.data = TG_BYTES(data, dlen);
    /* Their "unsigned" form is the 9-field list with empty v, r, s. */
    tg_buf b;
    tg_buf_init(&b, 0);
    CHECK_OK(tg_tx_encode_unsigned(&b, &tx));
    size_t ulen;
    uint8_t *want_u = tgt_unhex(json_string_value(json_object_get(tc, "unsigned")), &ulen);
    /* Ours has 6 fields; theirs appends three empty strings (0x80 each) under a bigger header. */
    tg_rlp_item ours, theirs;
    CHECK_OK(tg_rlp_decode(&ours, b.data, b.len));
    CHECK_OK(tg_rlp_decode(&theirs, want_u, ulen));
    CHECK(theirs.payload.len == ours.payload.len + 3 &&
          memcmp(theirs.payload.ptr, ours.payload.ptr, ours.payload.len) == 0 &&
          memcmp(theirs.payload.ptr + ours.payload.len, "\x80\x80\x80", 3) == 0);
    size_t slen;
    uint8_t *want_s = tgt_unhex(json_string_value(json_object_get(tc, "signed")), &slen);
    tg_tx dec;
    if (i == 0) {
      tg_seckey *key = key_from_hex(json_string_value(json_object_get(tc, "key")));
      if (key) {
        CHECK_OK(tg_tx_sign(&tx, key));
        tg_buf_reset(&b);
        CHECK_OK(tg_tx_encode(&b, &tx));
        CHECK(b.len == slen && memcmp(b.data, want_s, slen) == 0);
        CHECK_OK(tg_tx_decode(&dec, want_s, slen));
        tg_address from, want;
        CHECK_OK(tg_tx_sender(&from, &dec));
        CHECK_OK(tg_seckey_address(&want, key));
        CHECK(tg_address_eq(&from, &want));
        tg_seckey_free(key);
      }
    } else {
      /*
       * Deliberate difference: this 2014 signature has s > n/2. Frontier
       * accepted it; we refuse high S for every transaction (EIP-2 rule,
       * applied to all types), so decoding it fails.
       */
      CHECK_ERR(tg_tx_decode(&dec, want_s, slen), TG_ESIG_HIGH_S);
    }
    tg_buf_cleanup(&b);
    free(data);
    free(want_u);
    free(want_s);
  }
  CHECK_INT(json_array_size(all), 2);
  json_decref(all);
}

/* ---------------------------------------------------------------- EIP-155 text */

static void test_eip155_example(void) {
  json_t *ex = tgt_load_json("eip-text/eip155-example.json");
  if (!ex) return;
  const json_t *t = json_object_get(ex, "transaction");
  tg_tx tx;
  tg_tx_init(&tx, TG_TX_LEGACY);
  const char *s;
  s = json_string_value(json_object_get(t, "nonce"));
  tg_u256 u;
  CHECK_OK(tg_u256_parse(&u, s, strlen(s)));
  CHECK_OK(tg_u256_to_u64(&u, &tx.nonce));
  s = json_string_value(json_object_get(t, "gasPrice"));
  CHECK_OK(tg_u256_parse(&tx.gas_price, s, strlen(s)));
  s = json_string_value(json_object_get(t, "gasLimit"));
  CHECK_OK(tg_u256_parse(&u, s, strlen(s)));
  CHECK_OK(tg_u256_to_u64(&u, &tx.gas_limit));
  s = json_string_value(json_object_get(t, "value"));
  CHECK_OK(tg_u256_parse(&tx.value, s, strlen(s)));
  s = json_string_value(json_object_get(t, "to"));
  tx.has_to = 1;
  CHECK_OK(tg_address_parse(&tx.to, s, strlen(s)));
  tx.chain_id = (uint64_t)json_integer_value(json_object_get(t, "chainId"));

  tg_buf b;
  tg_buf_init(&b, 0);
  CHECK_OK(tg_tx_encode_unsigned(&b, &tx));
  CHECK(hex_eq(&b, json_string_value(json_object_get(ex, "signingData"))));
  tg_hash h;
  char hh[67];
  CHECK_OK(tg_tx_signing_hash(&h, &tx));
  hash_hex(hh, &h);
  CHECK_STR(hh, json_string_value(json_object_get(ex, "signingHash")));
  tg_seckey *key = key_from_hex(json_string_value(json_object_get(ex, "privateKey")));
  if (key) {
    CHECK_OK(tg_tx_sign(&tx, key));
    CHECK_INT(tg_tx_v(&tx), json_integer_value(json_object_get(ex, "v")));
    char dec[TG_U256_DEC_MAX];
    tg_u256_to_dec(&tx.r, dec);
    CHECK_STR(dec, json_string_value(json_object_get(ex, "r")));
    tg_u256_to_dec(&tx.s, dec);
    CHECK_STR(dec, json_string_value(json_object_get(ex, "s")));
    tg_buf_reset(&b);
    CHECK_OK(tg_tx_encode(&b, &tx));
    CHECK(hex_eq(&b, json_string_value(json_object_get(ex, "signedTransaction"))));
    tg_seckey_free(key);
  }
  const json_t *d = json_object_get(ex, "derived");
  tg_tx back;
  CHECK_OK(tg_tx_decode(&back, b.data, b.len));
  tg_address from;
  char a[TG_ADDRESS_HEX_LEN];
  CHECK_OK(tg_tx_sender(&from, &back));
  tg_address_to_checksum(&from, a);
  CHECK_STR(a, json_string_value(json_object_get(d, "sender")));
  CHECK_OK(tg_tx_hash(&h, &back));
  hash_hex(hh, &h);
  CHECK_STR(hh, json_string_value(json_object_get(d, "txHash")));
  CHECK_OK(tg_tx_validate(&back, 1));
  CHECK_ERR(tg_tx_check_chain(&back, 5), TG_ETX_CHAIN);
  tg_buf_cleanup(&b);
  json_decref(ex);
}

/* ------------------------------------------------------ cast transcripts (ORACLE.md) */

static const char K4646[] = "0x4646464646464646464646464646464646464646464646464646464646464646";

static void base_tx(tg_tx *tx, tg_tx_type type) {
  tg_tx_init(tx, type);
  tx->chain_id = 1;
  tx->has_to = 1;
  memset(tx->to.b, 0x35, 20);
}

static void check_signed(tg_tx *tx, const char *want) {
  tg_seckey *key = key_from_hex(K4646);
  if (!key) return;
  CHECK_OK(tg_tx_sign(tx, key));
  tg_buf b;
  tg_buf_init(&b, 0);
  CHECK_OK(tg_tx_encode(&b, tx));
  CHECKF(hex_eq(&b, want), "signed tx differs from cast's %s", want);
  tg_buf_cleanup(&b);
  tg_seckey_free(key);
}

static void one_key_access_list(tg_buf *al) {
  tg_hash zero = {{0}};
  tg_access_entry e = {{{0}}, &zero, 1};
  e.address.b[19] = 1;
  CHECK_OK(tg_access_list_encode(al, &e, 1));
}

static void test_cast_transcripts(void) {
  tg_tx tx;
  tg_buf al;
  tg_buf_init(&al, 0);
  one_key_access_list(&al);
  CHECK(hex_eq(&al, "0xf838f7940000000000000000000000000000000000000001e1a0"
                    "0000000000000000000000000000000000000000000000000000000000000000"));

  base_tx(&tx, TG_TX_EIP2930);
  tx.gas_limit = 30000;
  tg_u256_from_u64(&tx.gas_price, 1000000000);
  tx.access_list = TG_BYTES(al.data, al.len);
  check_signed(&tx, "0x01f89e0180843b9aca008275309435353535353535353535353535353535353535358080f838f7940000000000000000000000000000000000000001e1a0000000000000000000000000000000000000000000000000000000000000000080a077434d1f01c643266c473a912d4830836d269ccf03ccdf6d785c34c9c050209aa06d2f76456c042ad0ab9c4bb44db4c0aefbbbde58ed017f20fff6751c963e85bf");

  base_tx(&tx, TG_TX_EIP1559);
  tx.gas_limit = 21000;
  tg_u256_from_u64(&tx.max_fee_per_gas, 2000000000);
  tg_u256_from_u64(&tx.max_priority_fee_per_gas, 1000000000);
  tg_u256_from_u64(&tx.value, 1);
  tg_buf b;
  tg_buf_init(&b, 0);
  CHECK_OK(tg_tx_encode_unsigned(&b, &tx));
  CHECK(hex_eq(&b, "0x02e70180843b9aca0084773594008252089435353535353535353535353535353535353535350180c0"));
  tg_buf_cleanup(&b);
  check_signed(&tx,
               "0x02f86a0180843b9aca0084773594008252089435353535353535353535353535353535353535350180c0"
               "80a0115bee0f6beb8dc3b418150f115544f3b213b06624b24ac77152d74b26ff6e84a00d3bd9eeec4e40"
               "38ac529b30faa54bfe91a7a3f565898dc21c029e8fa1fcc7f0");

  base_tx(&tx, TG_TX_EIP1559);
  tx.gas_limit = 30000;
  tg_u256_from_u64(&tx.max_fee_per_gas, 2000000000);
  tg_u256_from_u64(&tx.max_priority_fee_per_gas, 1000000000);
  tx.access_list = TG_BYTES(al.data, al.len);
  check_signed(&tx,
               "0x02f8a30180843b9aca0084773594008275309435353535353535353535353535353535353535358080"
               "f838f7940000000000000000000000000000000000000001e1a00000000000000000000000000000000000"
               "00000000000000000000000000000001a0054e9bd1b6d1874d1dbe640a95ec33f2dfcb40203df4589abf"
               "12b9c939fa4bc7a076f80b8f37b5db3228a2228d649abba02addb1f10c2a7fb12f1084015d0e5399");

  /* Reading the access list back. */
  tg_rlp_iter it, keys;
  CHECK_OK(tg_access_list_iter_init(&it, &tx));
  CHECK(tg_rlp_iter_more(&it));
  tg_address a;
  tg_hash k;
  CHECK_OK(tg_access_list_next(&it, &a, &keys));
  CHECK_INT(a.b[19], 1);
  CHECK_OK(tg_access_list_key(&keys, &k));
  CHECK(!tg_rlp_iter_more(&keys) && !tg_rlp_iter_more(&it));
  tg_buf_cleanup(&al);
}

/* --------------------------------------------------------------- build errors */

static void test_build_errors(void) {
  tg_tx tx;
  tg_buf b;
  tg_buf_init(&b, 0);
  base_tx(&tx, TG_TX_LEGACY);
  tx.nonce = UINT64_MAX; /* EIP-2681 */
  CHECK_ERR(tg_tx_encode_unsigned(&b, &tx), TG_ETX_FIELD);
  tx.nonce = TG_TX_NONCE_MAX;
  CHECK_OK(tg_tx_encode_unsigned(&b, &tx));
  tg_buf_reset(&b);
  tx.chain_id = TG_TX_LEGACY_CHAIN_ID_MAX + 1; /* v would not fit 64 bits */
  CHECK_ERR(tg_tx_encode_unsigned(&b, &tx), TG_ETX_CHAIN);
  base_tx(&tx, TG_TX_LEGACY);
  static const uint8_t al[] = {0xc0};
  tx.access_list = TG_BYTES(al, 1); /* legacy has no access list */
  CHECK_ERR(tg_tx_encode_unsigned(&b, &tx), TG_ETX_FIELD);
  base_tx(&tx, TG_TX_EIP1559);
  static const uint8_t bad_al[] = {0xc2, 0xc1, 0x80}; /* [[""]]: an entry without keys */
  tx.access_list = TG_BYTES(bad_al, sizeof bad_al);
  CHECK_ERR(tg_tx_encode_unsigned(&b, &tx), TG_ETX_FIELD);
  base_tx(&tx, (tg_tx_type)3);
  CHECK_ERR(tg_tx_encode_unsigned(&b, &tx), TG_ETX_TYPE);
  base_tx(&tx, TG_TX_EIP1559);
  CHECK_ERR(tg_tx_encode(&b, &tx), TG_ETX_UNSIGNED);
  tg_address from;
  CHECK_ERR(tg_tx_sender(&from, &tx), TG_ETX_UNSIGNED);
  CHECK_INT(b.len, 0); /* failures leave the buffer as it was */
  tg_buf_cleanup(&b);
  /* Past a buffer's cap: TG_ETOOBIG and the buffer unchanged. */
  tg_buf small;
  tg_buf_init(&small, 40);
  CHECK_OK(tg_buf_append(&small, "ab", 2));
  tg_hash keys[2] = {{{1}}, {{2}}};
  tg_access_entry e = {{{0}}, keys, 2};
  CHECK_ERR(tg_access_list_encode(&small, &e, 1), TG_ETOOBIG);
  CHECK_INT(small.len, 2);
  base_tx(&tx, TG_TX_LEGACY);
  static const uint8_t big[64] = {1};
  tx.data = TG_BYTES(big, sizeof big);
  CHECK_ERR(tg_tx_encode_unsigned(&small, &tx), TG_ETOOBIG);
  CHECK_INT(small.len, 2);
  tg_buf_cleanup(&small);
}

/* ---------------------------------------------------------- decoding details */

static void test_decode_details(void) {
  /* The EIP-155 example with single-byte edits: each refused with its reason. */
  static const char ok[] =
      "f86c098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a76400008025a0"
      "28ef61340bd939bc2195fe537567866003e1a15d3c71ff63e1590620aa636276a067cbe9d8997f761aecb70330"
      "4b3800ccf555c9f3dc64214b297fb1966a3b6d83";
  size_t len;
  uint8_t *raw = tgt_unhex(ok, &len);
  tg_tx tx;
  CHECK_OK(tg_tx_decode(&tx, raw, len));
  CHECK_INT(tx.chain_id, 1);
  CHECK_INT(tx.y_parity, 0);
  CHECK_INT(tg_tx_v(&tx), 37);
  /* trailing byte */
  uint8_t *more = malloc(len + 1);
  memcpy(more, raw, len);
  more[len] = 0;
  CHECK_ERR(tg_tx_decode(&tx, more, len + 1), TG_ETRAILING);
  CHECK(tx.nonce == 0 && tx.data.ptr == NULL); /* zeroed on failure */
  free(more);
  /* truncated */
  CHECK_ERR(tg_tx_decode(&tx, raw, len - 1), TG_ETRUNCATED);
  CHECK_ERR(tg_tx_decode(&tx, raw, 0), TG_ETRUNCATED);
  /* v = 35 (chain id 0 with EIP-155) */
  raw[len - 67] = 0x23;
  CHECK_ERR(tg_tx_decode(&tx, raw, len), TG_ETX_CHAIN);
  raw[len - 67] = 0x1d; /* v = 29 */
  CHECK_ERR(tg_tx_decode(&tx, raw, len), TG_ESIG_RECID);
  raw[len - 67] = 0x25;
  /* s = n - s: the high-S twin of a valid signature */
  static const uint8_t N[32] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                0xff, 0xff, 0xff, 0xff, 0xfe, 0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48,
                                0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36, 0x41, 0x41};
  uint8_t *s = raw + len - 32;
  uint8_t orig[32];
  memcpy(orig, s, 32);
  int borrow = 0;
  for (int i = 31; i >= 0; i--) {
    int d = N[i] - orig[i] - borrow;
    borrow = d < 0;
    s[i] = (uint8_t)(d + (borrow ? 256 : 0));
  }
  CHECK_ERR(tg_tx_decode(&tx, raw, len), TG_ESIG_HIGH_S);
  memcpy(s, N, 32); /* s = n */
  CHECK_ERR(tg_tx_decode(&tx, raw, len), TG_ESIG);
  memcpy(s, orig, 32);
  /* types */
  static const uint8_t t3[] = {0x03, 0xc0};
  CHECK_ERR(tg_tx_decode(&tx, t3, sizeof t3), TG_ETX_TYPE);
  static const uint8_t t2_empty[] = {0x02, 0xc0};
  CHECK_ERR(tg_tx_decode(&tx, t2_empty, sizeof t2_empty), TG_ETX);
  static const uint8_t str[] = {0x80};
  CHECK_ERR(tg_tx_decode(&tx, str, sizeof str), TG_ETX);
  free(raw);
}

static void test_validate(void) {
  tg_tx tx;
  base_tx(&tx, TG_TX_EIP1559);
  tx.gas_limit = 21000;
  CHECK_OK(tg_tx_validate(&tx, 1));
  tx.gas_limit = 20999;
  CHECK_ERR(tg_tx_validate(&tx, 1), TG_ETX_INTRINSIC_GAS);
  tx.gas_limit = 21000;
  tg_u256_from_u64(&tx.max_priority_fee_per_gas, 2);
  tg_u256_from_u64(&tx.max_fee_per_gas, 1);
  CHECK_ERR(tg_tx_validate(&tx, 1), TG_ETX_FEE);
  CHECK_ERR(tg_tx_validate(&tx, 2), TG_ETX_CHAIN);
  memset(tx.max_fee_per_gas.b, 0xff, 32);
  CHECK_ERR(tg_tx_validate(&tx, 1), TG_ETX_COST);
  /* Creation: 21000 + 32000 + 16 per non-zero byte + 2 per word. */
  static uint8_t code[TG_TX_INITCODE_MAX + 1];
  memset(code, 1, sizeof code);
  base_tx(&tx, TG_TX_LEGACY);
  tx.has_to = 0;
  tx.data = TG_BYTES(code, 33);
  uint64_t g;
  CHECK_OK(tg_tx_intrinsic_gas(&tx, &g));
  CHECK_INT(g, 21000 + 32000 + 33 * 16 + 2 * 2);
  tx.data = TG_BYTES(code, sizeof code);
  tx.gas_limit = 30000000;
  CHECK_ERR(tg_tx_validate(&tx, 1), TG_ETX_INITCODE);
}


/* ------------------------------------------------------------ against anvil */

/* Builds, signs and submits one transaction of each type; anvil must accept it under our hash. */
static void test_anvil_accepts(void) {
  tgt_anvil *a = tgt_anvil_start(NULL);
  if (!a) {
    tgt_skip("anvil did not start");
    return;
  }
  const char *keyhex = tgt_anvil_key(0);
  tg_seckey *key = key_from_hex(keyhex);
  tg_buf al;
  tg_buf_init(&al, 0);
  one_key_access_list(&al);
  static const uint8_t calldata[] = {0xde, 0xad, 0x00, 0xbe, 0xef};
  for (int type = 0; type < 3 && key; type++) {
    tg_tx tx;
    tg_tx_init(&tx, (tg_tx_type)type);
    tx.chain_id = 31337;
    tx.nonce = (uint64_t)type;
    tx.gas_limit = 100000;
    tx.has_to = 1;
    memset(tx.to.b, 0x35, 20);
    tg_u256_from_u64(&tx.value, 12345 + (uint64_t)type);
    tx.data = TG_BYTES(calldata, sizeof calldata);
    if (type == TG_TX_EIP1559) {
      tg_u256_from_u64(&tx.max_fee_per_gas, 20000000000ull);
      tg_u256_from_u64(&tx.max_priority_fee_per_gas, 1000000000ull);
    } else {
      tg_u256_from_u64(&tx.gas_price, 20000000000ull);
    }
    if (type != TG_TX_LEGACY) tx.access_list = TG_BYTES(al.data, al.len);
    CHECK_OK(tg_tx_validate(&tx, 31337));
    CHECK_OK(tg_tx_sign(&tx, key));
    tg_buf raw;
    tg_buf_init(&raw, 0);
    CHECK_OK(tg_tx_encode(&raw, &tx));
    char *rawhex = tg_hex_dup(raw.data, raw.len);
    tg_hash h;
    CHECK_OK(tg_tx_hash(&h, &tx));
    char hh[67];
    hash_hex(hh, &h);
    char params[4096];
    snprintf(params, sizeof params, "[\"%s\"]", rawhex);
    json_t *r = tgt_rpc(a->url, "eth_sendRawTransaction", params);
    CHECKF(json_is_string(r), "type %d refused by anvil: %s", type, tgt_rpc_error());
    if (json_is_string(r)) CHECK_STR(json_string_value(r), hh);
    json_decref(r);
    snprintf(params, sizeof params, "[\"%s\"]", hh);
    json_t *got = tgt_rpc(a->url, "eth_getTransactionByHash", params);
    const char *from = json_string_value(json_object_get(got, "from"));
    CHECKF(from && strcmp(from, tgt_anvil_address(0)) == 0, "type %d: from %s", type,
           from ? from : "(none)");
    json_decref(got);
    free(rawhex);
    tg_buf_cleanup(&raw);
  }
  tg_seckey_free(key);
  tg_buf_cleanup(&al);
  tgt_anvil_free(a);
}

/* ------------------------------------------------------------------ the CLI */

/* Runs `tollgate <args>` through the shell; its stdout (trailing newline cut) into out. */
static int run_cli(char *out, size_t cap, const char *args) {
  const char *build = getenv("TG_BUILD");
  char cmd[8192];
  snprintf(cmd, sizeof cmd, "%s/tollgate %s 2>/dev/null", build && *build ? build : "build", args);
  FILE *f = popen(cmd, "r");
  if (!f) return -1;
  size_t n = fread(out, 1, cap - 1, f);
  out[n] = 0;
  while (n && out[n - 1] == '\n') out[--n] = 0;
  int st = pclose(f);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

#define K4646_ARG "--private-key 0x4646464646464646464646464646464646464646464646464646464646464646"
#define AL_ONE                                                                               \
  "'[{\"address\":\"0x0000000000000000000000000000000000000001\",\"storageKeys\":[\"0x00000000" \
  "00000000000000000000000000000000000000000000000000000000\"]}]'"

/* The cast transcripts of ORACLE.md, byte for byte. */
static void test_cli(void) {
  static char out[1 << 16];
  static const struct {
    const char *args, *want;
  } cases[] = {
      {"mktx --legacy --chain 1 --nonce 9 --gas-price 20000000000 --gas-limit 21000 --value "
       "1000000000000000000 " K4646_ARG " 0x3535353535353535353535353535353535353535",
       "0xf86c098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a76400008025a028ef61340bd939bc2195fe537567866003e1a15d3c71ff63e1590620aa636276a067cbe9d8997f761aecb703304b3800ccf555c9f3dc64214b297fb1966a3b6d83"},
      {"mktx --legacy --access-list " AL_ONE " --chain 1 --nonce 0 --gas-limit 30000 --gas-price "
       "1000000000 " K4646_ARG " 0x3535353535353535353535353535353535353535",
       "0x01f89e0180843b9aca008275309435353535353535353535353535353535353535358080f838f7940000000000000000000000000000000000000001e1a0000000000000000000000000000000000000000000000000000000000000000080a077434d1f01c643266c473a912d4830836d269ccf03ccdf6d785c34c9c050209aa06d2f76456c042ad0ab9c4bb44db4c0aefbbbde58ed017f20fff6751c963e85bf"},
      {"mktx --chain 1 --nonce 0 --gas-limit 21000 --gas-price 2000000000 --priority-gas-price "
       "1000000000 --value 1 " K4646_ARG " 0x3535353535353535353535353535353535353535",
       "0x02f86a0180843b9aca0084773594008252089435353535353535353535353535353535353535350180c080a0115bee0f6beb8dc3b418150f115544f3b213b06624b24ac77152d74b26ff6e84a00d3bd9eeec4e4038ac529b30faa54bfe91a7a3f565898dc21c029e8fa1fcc7f0"},
      /* the same with units: 2gwei / 1gwei */
      {"mktx --chain 1 --nonce 0 --gas-limit 21000 --gas-price 2gwei --priority-gas-price "
       "'1 gwei' --value 0x1 " K4646_ARG " 0x3535353535353535353535353535353535353535",
       "0x02f86a0180843b9aca0084773594008252089435353535353535353535353535353535353535350180c080a0115bee0f6beb8dc3b418150f115544f3b213b06624b24ac77152d74b26ff6e84a00d3bd9eeec4e4038ac529b30faa54bfe91a7a3f565898dc21c029e8fa1fcc7f0"},
      {"mktx --access-list " AL_ONE " --chain 1 --nonce 0 --gas-limit 30000 --gas-price "
       "2000000000 --priority-gas-price 1000000000 " K4646_ARG
       " 0x3535353535353535353535353535353535353535",
       "0x02f8a30180843b9aca008477359400827530943535353535353535353535353535353535353535808"
       "0f838f7940000000000000000000000000000000000000001e1a00000000000000000000000000000000000000000000000000000000000000000"
       "01a0054e9bd1b6d1874d1dbe640a95ec33f2dfcb40203df4589abf12b9c939fa4bc7a076f80b8f37b5db3228a2228d649abba02addb1f10c2a7fb12f1084015d0e5399"},
      /* cast mktx with a SIG, a creation with constructor arguments (outputs of cast 1.7.1) */
      {"mktx --legacy --access-list '[{\"address\":\"0x0000000000000000000000000000000000000001\","
       "\"storageKeys\":[\"0x0000000000000000000000000000000000000000000000000000000000000000\","
       "\"0x0000000000000000000000000000000000000000000000000000000000000001\"]},{\"address\":"
       "\"0x00000000000000000000000000000000000000ab\",\"storageKeys\":[]}]' --chain 1 --nonce 0 "
       "--gas-limit 30000 --gas-price 1000000000 " K4646_ARG
       " 0x3535353535353535353535353535353535353535 'transfer(address,uint256)' "
       "0x3535353535353535353535353535353535353535 5",
       "0x01f9011d0180843b9aca0082753094353535353535353535353535353535353535353580b844a9059cbb00000000000000000000000035353535353535353535353535353535353535350000000000000000000000000000000000000000000000000000000000000005f872f859940000000000000000000000000000000000000001f842a00000000000000000000000000000000000000000000000000000000000000000a00000000000000000000000000000000000000000000000000000000000000001d69400000000000000000000000000000000000000abc080a0378a53a07d0b6b93e15e44f03982b47e13753ebc15bc879d87bcda9fae8f77bda07db38c9398aaf517d5083139e43d6ca164736bcb996451b649e61b3a3a9264cf"},
      {"mktx --chain 5 --nonce 3 --gas-limit 100000 --gas-price 1000000000 --priority-gas-price 1 "
       K4646_ARG " --create 0x6000 'constructor(uint256)' 7",
       "0x02f875050301843b9aca00830186a08080a260000000000000000000000000000000000000000000000000000000000000000007c080a02a4042506c9424b5bb82698cae2ea6e596db0548c9794d96b85aef6e29b6438ba04e5ec63759406103b046c9ebecae4a721aedba24b8d88e71b76006f5107b31c1"},
      {"decode-transaction --cast 0xf86c098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a76400008025a028ef61340bd939bc2195fe537567866003e1a15d3c71ff63e1590620aa636276a067cbe9d8997f761aecb703304b3800ccf555c9f3dc64214b297fb1966a3b6d83",
       "\"{\\n  \\\"signer\\\": \\\"0x9d8a62f656a8d1615c1294fd71e9cfb3e4855a4f\\\",\\n  \\\"type\\\": \\\"0x0\\\",\\n  \\\"chainId\\\": \\\"0x1\\\",\\n  \\\"nonce\\\": \\\"0x9\\\",\\n  \\\"gasPrice\\\": \\\"0x4a817c800\\\",\\n  \\\"gas\\\": \\\"0x5208\\\",\\n  \\\"to\\\": \\\"0x3535353535353535353535353535353535353535\\\",\\n  \\\"value\\\": \\\"0xde0b6b3a7640000\\\",\\n  \\\"input\\\": \\\"0x\\\",\\n  \\\"r\\\": \\\"0x28ef61340bd939bc2195fe537567866003e1a15d3c71ff63e1590620aa636276\\\",\\n  \\\"s\\\": \\\"0x67cbe9d8997f761aecb703304b3800ccf555c9f3dc64214b297fb1966a3b6d83\\\",\\n  \\\"v\\\": \\\"0x25\\\",\\n  \\\"hash\\\": \\\"0x33469b22e9f636356c4160a87eb19df52b7412e8eac32a4a55ffe88ea8350788\\\"\\n}\""},
      {"decode-transaction --cast 0x02f86a0180843b9aca0084773594008252089435353535353535353535353535353535353535350180c080a0115bee0f6beb8dc3b418150f115544f3b213b06624b24ac77152d74b26ff6e84a00d3bd9eeec4e4038ac529b30faa54bfe91a7a3f565898dc21c029e8fa1fcc7f0",
       "\"{\\n  \\\"signer\\\": \\\"0x9d8a62f656a8d1615c1294fd71e9cfb3e4855a4f\\\",\\n  \\\"type\\\": \\\"0x2\\\",\\n  \\\"chainId\\\": \\\"0x1\\\",\\n  \\\"nonce\\\": \\\"0x0\\\",\\n  \\\"gas\\\": \\\"0x5208\\\",\\n  \\\"maxFeePerGas\\\": \\\"0x77359400\\\",\\n  \\\"maxPriorityFeePerGas\\\": \\\"0x3b9aca00\\\",\\n  \\\"to\\\": \\\"0x3535353535353535353535353535353535353535\\\",\\n  \\\"value\\\": \\\"0x1\\\",\\n  \\\"accessList\\\": [],\\n  \\\"input\\\": \\\"0x\\\",\\n  \\\"r\\\": \\\"0x115bee0f6beb8dc3b418150f115544f3b213b06624b24ac77152d74b26ff6e84\\\",\\n  \\\"s\\\": \\\"0xd3bd9eeec4e4038ac529b30faa54bfe91a7a3f565898dc21c029e8fa1fcc7f0\\\",\\n  \\\"yParity\\\": \\\"0x0\\\",\\n  \\\"v\\\": \\\"0x0\\\",\\n  \\\"hash\\\": \\\"0x8c78c592cd72a5bb082d374239a6902a2b684bdcfc35fd468734f7404a7194b6\\\"\\n}\""},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int st = run_cli(out, sizeof out, cases[i].args);
    CHECKF(st == 0, "tollgate %.60s... exited %d", cases[i].args, st);
    CHECKF(strcmp(out, cases[i].want) == 0, "tollgate %.60s...: got %s", cases[i].args, out);
  }
  /* The default output is the same document, unquoted: a JSON object jq can read. */
  CHECK_INT(run_cli(out, sizeof out,
                    "decode-transaction 0x02f86a0180843b9aca0084773594008252089435353535353535353535353535353535353535350180c080a0115bee0f6beb8dc3b418150f115544f3b213b06624b24ac77152d74b26ff6e84a00d3bd9eeec4e4038ac529b30faa54bfe91a7a3f565898dc21c029e8fa1fcc7f0"),
            0);
  json_error_t jerr;
  json_t *doc = json_loads(out, 0, &jerr);
  CHECK(json_is_object(doc));
  CHECK_STR(json_string_value(json_object_get(doc, "signer")),
            "0x9d8a62f656a8d1615c1294fd71e9cfb3e4855a4f");
  CHECK(json_is_array(json_object_get(doc, "accessList")));
  json_decref(doc);
  /* Refusals: exit status 1 and nothing on stdout. */
  static const char *const bad[] = {
      /* high S (BasicTests txtest case 2, s > n/2) */
      "decode-transaction 0xf87f8085e8d4a510008227108080af6025515b525b600a37f260003556601b596020356000355760015b525b54602052f260255860005b525b54602052f21ba05afed0244d0da90b67cf8979b0f246432a5112c0d31e8d5eedd2bc17b171c694a0bb1035c834677c2e1185b8dc90ca6d1fa585ab3d7ef23707e1a497a98e752d1b",
      "decode-transaction 0x02c0",
      "decode-transaction 0xzz",
      "mktx --legacy --chain 0 --nonce 0 --gas-limit 21000 --gas-price 1 " K4646_ARG
      " 0x3535353535353535353535353535353535353535",
      "mktx --chain 1 --nonce 0 --gas-limit 21000 --gas-price 1 " K4646_ARG
      " 0x3535353535353535353535353535353535353535", /* type 2 without a priority fee */
      "mktx --chain 1 --nonce 18446744073709551615 --gas-limit 21000 --gas-price 1 --legacy " K4646_ARG
      " 0x3535353535353535353535353535353535353535",
      "mktx --chain 1 --nonce 0 --gas-limit 21000 --gas-price 1.5 --legacy " K4646_ARG
      " 0x3535353535353535353535353535353535353535", /* a fraction of a wei */
      "mktx --chain 1 --nonce 0 --gas-limit 21000 --gas-price 1 --legacy " K4646_ARG
      " 0x3535353535353535353535353535353535353535 'f(uint8)' 256",
      "mktx --chain 1 --nonce 0 --gas-limit 21000 --gas-price 1 --legacy --private-key 0x00 "
      "0x3535353535353535353535353535353535353535",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int st = run_cli(out, sizeof out, bad[i]);
    CHECKF(st == 1 && out[0] == 0, "tollgate %.70s...: exit %d, output '%s'", bad[i], st, out);
  }
}

/* ------------------------------------------------- differential test against cast */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void) {
  uint64_t x = rng_state;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return rng_state = x;
}

/* A random decimal below 2^bits, biased towards edges (0, small, the top of the range). */
static void rand_dec(char *out, size_t cap, unsigned bits) {
  tg_u256 u;
  tg_u256_zero(&u);
  unsigned pick = (unsigned)(rng() % 6);
  unsigned b = pick == 0 ? 0 : pick == 1 ? 8 : pick == 2 ? 32 : pick == 3 ? 64 : bits;
  if (b > bits) b = bits;
  for (unsigned i = 0; i < b / 8; i++) u.b[31 - i] = (uint8_t)rng();
  if (pick == 5)
    for (unsigned i = 0; i < b / 8; i++) u.b[31 - i] = 0xff;
  char dec[TG_U256_DEC_MAX];
  tg_u256_to_dec(&u, dec);
  snprintf(out, cap, "%s", dec);
}

static void rand_hex(char *out, size_t n) {
  static const char d[] = "0123456789abcdef";
  out[0] = '0';
  out[1] = 'x';
  for (size_t i = 0; i < n; i++) {
    uint8_t b = (uint8_t)rng();
    out[2 + 2 * i] = d[b >> 4];
    out[3 + 2 * i] = d[b & 15];
  }
  out[2 + 2 * n] = 0;
}

/* Runs a command line through the shell; stdout (trailing newlines cut) into out. */
static int run_sh(char *out, size_t cap, const char *cmdline) {
  FILE *f = popen(cmdline, "r");
  if (!f) return -1;
  size_t n = fread(out, 1, cap - 1, f);
  out[n] = 0;
  while (n && out[n - 1] == '\n') out[--n] = 0;
  int st = pclose(f);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/*
 * Random transactions of all three types (random keys, chain ids, nonces,
 * gas, prices up to 2^120, values up to 2^256-1, access lists, call data,
 * creations), built by `cast mktx` and `tollgate mktx` with the same
 * arguments: the raw transactions must be byte-identical, and `tollgate
 * decode-transaction --cast` must print what `cast decode-transaction` does.
 * TG_DIFF_N cases (default 100; thousands with e.g. TG_DIFF_N=2000).
 */
static void test_cast_differential(void) {
  char cast[1024];
  snprintf(cast, sizeof cast, "%s/node_modules/.bin/cast", tgt_root());
  FILE *probe = fopen(cast, "r");
  if (!probe) {
    tgt_skip("cast is not installed (node_modules/.bin/cast)");
    return;
  }
  fclose(probe);
  char home[] = "/tmp/tg-test-tx-XXXXXX";
  if (!mkdtemp(home)) {
    tgt_skip("no scratch HOME for cast");
    return;
  }
  const char *build = getenv("TG_BUILD");
  char tollgate[1024];
  snprintf(tollgate, sizeof tollgate, "%s/tollgate", build && *build ? build : "build");
  const char *ns = getenv("TG_DIFF_N");
  long n = ns && *ns ? strtol(ns, NULL, 10) : 100;
  static char args[8192], cmd[40000], a[16384], b[16384], da[65536], db[65536];
  long same = 0, decoded = 0;
  for (long i = 0; i < n; i++) {
    int type = (int)(rng() % 3); /* 0 legacy, 1 EIP-2930, 2 EIP-1559 */
    char key[67], chain[32], nonce[32], gas[32], price[80], prio[80], value[80], to[43];
    do rand_hex(key, 32); while (key[2] == 'f' || strcmp(key + 2, "00") < 0);
    snprintf(chain, sizeof chain, "%llu",
             (unsigned long long)(rng() % 4 == 0 ? 1 : 1 + rng() % 0xffffffffull));
    rand_dec(nonce, sizeof nonce, 56);
    rand_dec(gas, sizeof gas, 64);
    rand_dec(price, sizeof price, 120);
    rand_dec(prio, sizeof prio, 120);
    rand_dec(value, sizeof value, 256);
    rand_hex(to, 20);
    size_t off = (size_t)snprintf(args, sizeof args,
                                  "--private-key %s --chain %s --nonce %s --gas-limit %s "
                                  "--gas-price %s --value %s",
                                  key, chain, nonce, gas, price, value);
    if (type != 2) off += (size_t)snprintf(args + off, sizeof args - off, " --legacy");
    else off += (size_t)snprintf(args + off, sizeof args - off, " --priority-gas-price %s", prio);
    if (type == 1 || (type == 2 && rng() % 2)) {
      off += (size_t)snprintf(args + off, sizeof args - off, " --access-list '[");
      int entries = (int)(rng() % 3);
      for (int e = 0; e < entries; e++) {
        char addr[43];
        rand_hex(addr, 20);
        off += (size_t)snprintf(args + off, sizeof args - off,
                                "%s{\"address\":\"%s\",\"storageKeys\":[", e ? "," : "", addr);
        int nk = (int)(rng() % 3);
        for (int k = 0; k < nk; k++) {
          char sk[67];
          rand_hex(sk, 32);
          off += (size_t)snprintf(args + off, sizeof args - off, "%s\"%s\"", k ? "," : "", sk);
        }
        off += (size_t)snprintf(args + off, sizeof args - off, "]}");
      }
      off += (size_t)snprintf(args + off, sizeof args - off, "]'");
    }
    char data[2 * 300 + 3];
    rand_hex(data, (size_t)(rng() % 300));
    if (rng() % 5 == 0)
      off += (size_t)snprintf(args + off, sizeof args - off, " --create %s", data);
    else if (rng() % 2)
      off += (size_t)snprintf(args + off, sizeof args - off, " %s %s", to,
                              strlen(data) > 2 ? data : "");
    else
      off += (size_t)snprintf(args + off, sizeof args - off,
                              " %s 'f(uint256,address,bytes,string)' %s %s %s hello", to, value,
                              to, data);
    snprintf(cmd, sizeof cmd, "HOME=%s ETH_RPC_URL= %s mktx %s 2>&1", home, cast, args);
    int sa = run_sh(a, sizeof a, cmd);
    snprintf(cmd, sizeof cmd, "%s mktx %s 2>&1", tollgate, args);
    int sb = run_sh(b, sizeof b, cmd);
    if (sa != 0) { /* cast refused: so must we */
      CHECKF(sb != 0, "cast refused (%s) but tollgate signed: %s", a, args);
      continue;
    }
    CHECKF(sb == 0 && strcmp(a, b) == 0, "mktx %s\n cast:     %s\n tollgate: %s", args, a, b);
    if (sb != 0 || strcmp(a, b) != 0) continue;
    same++;
    snprintf(cmd, sizeof cmd, "HOME=%s ETH_RPC_URL= %s decode-transaction %s 2>&1", home, cast, a);
    sa = run_sh(da, sizeof da, cmd);
    snprintf(cmd, sizeof cmd, "%s decode-transaction --cast %s 2>&1", tollgate, a);
    sb = run_sh(db, sizeof db, cmd);
    if (sa != 0) continue; /* cast cannot hold a fee >= 2^128: nothing to compare */
    CHECKF(sb == 0 && strcmp(da, db) == 0, "decode-transaction %s\n cast:     %s\n tollgate: %s",
           a, da, db);
    decoded++;
  }
  printf("# cast differential: %ld cases, %ld identical transactions, %ld identical decodings\n",
         n, same, decoded);
  CHECKF(same >= n * 9 / 10, "only %ld of %ld cases were comparable", same, n);
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", home);
  if (system(cmd) != 0) printf("# could not remove %s\n", home);
}

int main(void) {
  RUN(test_ethereum_tests);
  RUN(test_ethers_transactions);
  RUN(test_ethers_transaction);
  RUN(test_basic_txtest);
  RUN(test_eip155_example);
  RUN(test_cast_transcripts);
  RUN(test_build_errors);
  RUN(test_decode_details);
  RUN(test_validate);
  RUN(test_anvil_accepts);
  RUN(test_cli);
  RUN(test_cast_differential);
  return tgt_done();
}
