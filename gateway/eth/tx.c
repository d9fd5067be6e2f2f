/* Ethereum transactions (legacy/EIP-155, EIP-2930, EIP-1559): RLP streamed into buffers and Keccak, strict decoding, signing and recovery. */
#include <string.h>

#include "tollgate/keccak.h"
#include "tollgate/rlp.h"
#include "tollgate/secp.h"
#include "tollgate/tx.h"
#include "tollgate/u256.h"

/* The secp256k1 group order n and n/2 (the EIP-2 low-S bound), big-endian. */
static const tg_u256 SECP_N = {{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                0xff, 0xff, 0xff, 0xff, 0xfe, 0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48,
                                0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36, 0x41, 0x41}};
static const tg_u256 SECP_HALF_N = {{0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                     0xff, 0xff, 0xff, 0xff, 0xff, 0x5d, 0x57, 0x6e, 0x73, 0x57, 0xa4,
                                     0x50, 0x1d, 0xdf, 0xe9, 0x2f, 0x46, 0x68, 0x1b, 0x20, 0xa0}};

static const uint8_t EMPTY_LIST = 0xc0;

void tg_tx_init(tg_tx *tx, tg_tx_type type) {
  memset(tx, 0, sizeof *tx);
  tx->type = type;
}

/* ------------------------------------------------------------- access lists */

/* Checks that an item is [[address(20), [key(32), ...]], ...]; counts addresses and keys. */
static int check_access_list(const tg_rlp_item *list, uint64_t *n_addr, uint64_t *n_keys) {
  tg_rlp_iter it;
  int rc = tg_rlp_iter_init(&it, list);
  if (rc) return rc;
  uint64_t na = 0, nk = 0;
  while (tg_rlp_iter_more(&it)) {
    tg_rlp_item entry, addr, keys;
    if ((rc = tg_rlp_iter_next(&it, &entry))) return rc;
    tg_rlp_iter fields;
    if ((rc = tg_rlp_iter_init(&fields, &entry))) return rc;
    if (!tg_rlp_iter_more(&fields)) return TG_ETX;
    if ((rc = tg_rlp_iter_next(&fields, &addr))) return rc;
    if (!tg_rlp_iter_more(&fields)) return TG_ETX;
    if ((rc = tg_rlp_iter_next(&fields, &keys))) return rc;
    if (tg_rlp_iter_more(&fields)) return TG_ETX;
    if (addr.is_list) return TG_ERLP_TYPE;
    if (addr.payload.len != 20) return TG_ETX_FIELD;
    tg_rlp_iter kit;
    if ((rc = tg_rlp_iter_init(&kit, &keys))) return rc;
    while (tg_rlp_iter_more(&kit)) {
      tg_rlp_item key;
      if ((rc = tg_rlp_iter_next(&kit, &key))) return rc;
      if (key.is_list) return TG_ERLP_TYPE;
      if (key.payload.len != 32) return TG_ETX_FIELD;
      nk++;
    }
    na++;
  }
  if (n_addr) *n_addr = na;
  if (n_keys) *n_keys = nk;
  return TG_OK;
}

/* Decodes a caller-supplied access-list encoding completely (one list item, nothing after it). */
static int parse_access_list(const tg_bytes *al, uint64_t *n_addr, uint64_t *n_keys) {
  if (n_addr) *n_addr = 0;
  if (n_keys) *n_keys = 0;
  if (al->len == 0) return TG_OK;
  tg_rlp_item item;
  int rc = tg_rlp_decode(&item, al->ptr, al->len);
  if (rc) return rc;
  return check_access_list(&item, n_addr, n_keys);
}

int tg_access_list_encode(tg_buf *out, const tg_access_entry *entries, size_t n) {
  /* Each key is 33 bytes (0xa0 + 32); each address 21 (0x94 + 20). */
  size_t payload = 0;
  for (size_t i = 0; i < n; i++) {
    if (entries[i].n_storage_keys > ((size_t)1 << 24)) return TG_ETOOBIG;
    size_t keys = 33 * entries[i].n_storage_keys;
    size_t entry = 21 + tg_rlp_header_len(keys) + keys;
    payload += tg_rlp_header_len(entry) + entry;
    if (payload > out->max) return TG_ETOOBIG;
  }
  size_t start = out->len;
  tg_rlp_sink s;
  tg_rlp_sink_init(&s, out, NULL);
  tg_rlp_put_list_header(&s, payload);
  for (size_t i = 0; i < n; i++) {
    size_t keys = 33 * entries[i].n_storage_keys;
    tg_rlp_put_list_header(&s, 21 + tg_rlp_header_len(keys) + keys);
    tg_rlp_put_bytes(&s, entries[i].address.b, 20);
    tg_rlp_put_list_header(&s, keys);
    for (size_t k = 0; k < entries[i].n_storage_keys; k++)
      tg_rlp_put_bytes(&s, entries[i].storage_keys[k].b, 32);
  }
  int rc = tg_rlp_sink_status(&s);
  if (rc) { /* leave the buffer as it was */
    out->len = start;
    if (out->data) out->data[start] = 0;
  }
  return rc;
}

int tg_access_list_iter_init(tg_rlp_iter *it, const tg_tx *tx) {
  it->p = NULL;
  it->left = 0;
  if (tx->access_list.len == 0) return TG_OK;
  tg_rlp_item item;
  int rc = tg_rlp_decode(&item, tx->access_list.ptr, tx->access_list.len);
  if (rc) return rc;
  return tg_rlp_iter_init(it, &item);
}

int tg_access_list_next(tg_rlp_iter *it, tg_address *address, tg_rlp_iter *keys) {
  memset(address, 0, sizeof *address);
  keys->p = NULL;
  keys->left = 0;
  tg_rlp_item entry, addr, klist;
  tg_rlp_iter fields;
  int rc = tg_rlp_iter_next(it, &entry);
  if (!rc) rc = tg_rlp_iter_init(&fields, &entry);
  if (!rc) rc = tg_rlp_iter_next(&fields, &addr);
  if (!rc) rc = tg_rlp_iter_next(&fields, &klist);
  if (!rc && tg_rlp_iter_more(&fields)) rc = TG_ETX;
  if (!rc) rc = tg_rlp_get_fixed(&addr, address->b, 20);
  if (!rc) rc = tg_rlp_iter_init(keys, &klist);
  if (rc == TG_ENOTFOUND) rc = TG_ETX; /* an entry with fewer than two fields */
  return rc;
}

int tg_access_list_key(tg_rlp_iter *keys, tg_hash *key) {
  tg_rlp_item item;
  int rc = tg_rlp_iter_next(keys, &item);
  if (rc) {
    memset(key, 0, sizeof *key);
    return rc;
  }
  return tg_rlp_get_fixed(&item, key->b, 32);
}

/* ------------------------------------------------------------------ encoding */

int tg_tx_check_fields(const tg_tx *tx) {
  if (tx->type != TG_TX_LEGACY && tx->type != TG_TX_EIP2930 && tx->type != TG_TX_EIP1559)
    return TG_ETX_TYPE;
  if (tx->nonce > TG_TX_NONCE_MAX) return TG_ETX_FIELD;
  if (tx->type == TG_TX_LEGACY) {
    if (tx->chain_id > TG_TX_LEGACY_CHAIN_ID_MAX) return TG_ETX_CHAIN;
    if (tx->access_list.len) return TG_ETX_FIELD;
  } else {
    if (parse_access_list(&tx->access_list, NULL, NULL)) return TG_ETX_FIELD;
  }
  if (tx->data.len && tx->data.ptr == NULL) return TG_EINVAL;
  if (tx->is_signed && tx->y_parity != 0 && tx->y_parity != 1) return TG_ESIG_RECID;
  return TG_OK;
}

uint64_t tg_tx_v(const tg_tx *tx) {
  uint64_t y = tx->y_parity ? 1 : 0;
  if (tx->type != TG_TX_LEGACY) return y;
  if (tx->chain_id == 0) return 27 + y;
  return tx->chain_id * 2 + 35 + y;
}

/*
 * The list items in order. `sig`: 0 = signing payload, 1 = signed form.
 * Called twice per encoding: once into a measuring sink for the list
 * length, once for real.
 */
static void put_fields(tg_rlp_sink *s, const tg_tx *tx, int sig) {
  if (tx->type != TG_TX_LEGACY) tg_rlp_put_u64(s, tx->chain_id);
  tg_rlp_put_u64(s, tx->nonce);
  if (tx->type == TG_TX_EIP1559) {
    tg_rlp_put_u256(s, &tx->max_priority_fee_per_gas);
    tg_rlp_put_u256(s, &tx->max_fee_per_gas);
  } else {
    tg_rlp_put_u256(s, &tx->gas_price);
  }
  tg_rlp_put_u64(s, tx->gas_limit);
  tg_rlp_put_bytes(s, tx->to.b, tx->has_to ? 20 : 0);
  tg_rlp_put_u256(s, &tx->value);
  tg_rlp_put_bytes(s, tx->data.ptr, tx->data.len);
  if (tx->type != TG_TX_LEGACY) {
    if (tx->access_list.len)
      tg_rlp_put_raw(s, tx->access_list.ptr, tx->access_list.len);
    else
      tg_rlp_put_raw(s, &EMPTY_LIST, 1);
  }
  if (sig) {
    tg_rlp_put_u64(s, tg_tx_v(tx));
    tg_rlp_put_u256(s, &tx->r);
    tg_rlp_put_u256(s, &tx->s);
  } else if (tx->type == TG_TX_LEGACY && tx->chain_id) {
    tg_rlp_put_u64(s, tx->chain_id);
    tg_rlp_put_u64(s, 0);
    tg_rlp_put_u64(s, 0);
  }
}

static int encode_into(tg_buf *buf, tg_keccak_ctx *hash, const tg_tx *tx, int sig) {
  int rc = tg_tx_check_fields(tx);
  if (rc) return rc;
  if (sig && !tx->is_signed) return TG_ETX_UNSIGNED;
  tg_rlp_sink m;
  tg_rlp_sink_init(&m, NULL, NULL);
  put_fields(&m, tx, sig);
  tg_rlp_sink s;
  tg_rlp_sink_init(&s, buf, hash);
  if (tx->type != TG_TX_LEGACY) {
    uint8_t t = (uint8_t)tx->type;
    tg_rlp_put_raw(&s, &t, 1);
  }
  tg_rlp_put_list_header(&s, m.len);
  put_fields(&s, tx, sig);
  return tg_rlp_sink_status(&s);
}

/* Encodes into a buffer, leaving it as it was on failure. */
static int encode_buf(tg_buf *out, const tg_tx *tx, int sig) {
  size_t start = out->len;
  int rc = encode_into(out, NULL, tx, sig);
  if (rc) {
    out->len = start;
    if (out->data) out->data[start] = 0;
  }
  return rc;
}

int tg_tx_encode_unsigned(tg_buf *out, const tg_tx *tx) { return encode_buf(out, tx, 0); }

int tg_tx_encode(tg_buf *out, const tg_tx *tx) { return encode_buf(out, tx, 1); }

static int hash_of(tg_hash *out, const tg_tx *tx, int sig) {
  tg_keccak_ctx k;
  tg_keccak256_init(&k);
  int rc = encode_into(NULL, &k, tx, sig);
  tg_keccak256_final(&k, out);
  if (rc) memset(out, 0, sizeof *out);
  return rc;
}

int tg_tx_signing_hash(tg_hash *out, const tg_tx *tx) { return hash_of(out, tx, 0); }

int tg_tx_hash(tg_hash *out, const tg_tx *tx) { return hash_of(out, tx, 1); }

int tg_tx_sign(tg_tx *tx, const tg_seckey *key) {
  tg_hash h;
  int rc = tg_tx_signing_hash(&h, tx);
  if (rc) return rc;
  tg_sig sig;
  rc = tg_sign_digest(&sig, key, &h);
  if (rc) return rc;
  if (sig.b[64] != 27 && sig.b[64] != 28) return TG_EINTERNAL;
  memcpy(tx->r.b, sig.b, 32);
  memcpy(tx->s.b, sig.b + 32, 32);
  tx->y_parity = sig.b[64] - 27;
  tx->is_signed = 1;
  return TG_OK;
}

/* ------------------------------------------------------------------ decoding */

/* A 64-bit integer field; out-of-range values are TG_ETX_FIELD. */
static int get_u64_field(const tg_rlp_item *item, uint64_t *out, uint64_t max) {
  int rc = tg_rlp_get_u64(item, out);
  if (rc == TG_EOVERFLOW) return TG_ETX_FIELD;
  if (rc) return rc;
  if (*out > max) return TG_ETX_FIELD;
  return TG_OK;
}

static int get_u256_field(const tg_rlp_item *item, tg_u256 *out) {
  int rc = tg_rlp_get_u256(item, out);
  return rc == TG_EOVERFLOW ? TG_ETX_FIELD : rc;
}

static int check_sig_values(const tg_u256 *r, const tg_u256 *s) {
  if (tg_u256_is_zero(r) || tg_u256_is_zero(s)) return TG_ESIG;
  if (tg_u256_cmp(r, &SECP_N) >= 0 || tg_u256_cmp(s, &SECP_N) >= 0) return TG_ESIG;
  if (tg_u256_cmp(s, &SECP_HALF_N) > 0) return TG_ESIG_HIGH_S;
  return TG_OK;
}

#define MAX_FIELDS 12

static int decode_fields(tg_tx *tx, const tg_rlp_item *f, size_t n) {
  size_t want = tx->type == TG_TX_LEGACY ? 9 : tx->type == TG_TX_EIP2930 ? 11 : 12;
  if (n != want) return TG_ETX;
  size_t i = 0;
  int rc;
  if (tx->type != TG_TX_LEGACY && (rc = get_u64_field(&f[i++], &tx->chain_id, TG_TX_CHAIN_ID_MAX)))
    return rc;
  if ((rc = get_u64_field(&f[i++], &tx->nonce, TG_TX_NONCE_MAX))) return rc;
  if (tx->type == TG_TX_EIP1559) {
    if ((rc = get_u256_field(&f[i++], &tx->max_priority_fee_per_gas))) return rc;
    if ((rc = get_u256_field(&f[i++], &tx->max_fee_per_gas))) return rc;
  } else {
    if ((rc = get_u256_field(&f[i++], &tx->gas_price))) return rc;
  }
  if ((rc = get_u64_field(&f[i++], &tx->gas_limit, UINT64_MAX))) return rc;
  const tg_rlp_item *to = &f[i++];
  if (to->is_list) return TG_ERLP_TYPE;
  if (to->payload.len == 20) {
    tx->has_to = 1;
    memcpy(tx->to.b, to->payload.ptr, 20);
  } else if (to->payload.len != 0) {
    return TG_ETX_FIELD;
  }
  if ((rc = get_u256_field(&f[i++], &tx->value))) return rc;
  const tg_rlp_item *data = &f[i++];
  if (data->is_list) return TG_ERLP_TYPE;
  tx->data = data->payload;
  if (tx->type != TG_TX_LEGACY) {
    const tg_rlp_item *al = &f[i++];
    if (!al->is_list) return TG_ERLP_TYPE;
    if ((rc = check_access_list(al, NULL, NULL))) return rc;
    tx->access_list = al->raw;
  }
  /* The signature. */
  const tg_rlp_item *v = &f[i++];
  if (tx->type == TG_TX_LEGACY) {
    tg_u256 vv;
    if ((rc = tg_rlp_get_u256(v, &vv))) return rc == TG_EOVERFLOW ? TG_ETX_CHAIN : rc;
    uint64_t v64;
    if (tg_u256_to_u64(&vv, &v64)) return TG_ETX_CHAIN;
    if (v64 == 27 || v64 == 28) {
      tx->chain_id = 0;
      tx->y_parity = (int)(v64 - 27);
    } else if (v64 == 35 || v64 == 36) {
      return TG_ETX_CHAIN; /* EIP-155 with chain id 0 */
    } else if (v64 >= 37) {
      tx->chain_id = (v64 - 35) / 2;
      tx->y_parity = (int)((v64 - 35) & 1);
      if (tx->chain_id > TG_TX_LEGACY_CHAIN_ID_MAX) return TG_ETX_CHAIN;
    } else {
      return TG_ESIG_RECID;
    }
  } else {
    uint64_t y;
    if ((rc = tg_rlp_get_u64(v, &y))) return rc == TG_EOVERFLOW ? TG_ESIG_RECID : rc;
    if (y > 1) return TG_ESIG_RECID;
    tx->y_parity = (int)y;
  }
  if ((rc = get_u256_field(&f[i++], &tx->r))) return rc;
  if ((rc = get_u256_field(&f[i++], &tx->s))) return rc;
  if ((rc = check_sig_values(&tx->r, &tx->s))) return rc;
  tx->is_signed = 1;
  return TG_OK;
}

static int decode(tg_tx *tx, const uint8_t *raw, size_t len) {
  if (len == 0) return TG_ETRUNCATED;
  const uint8_t *body = raw;
  size_t blen = len;
  if (raw[0] >= 0xc0) {
    tx->type = TG_TX_LEGACY;
  } else if (raw[0] == TG_TX_EIP2930 || raw[0] == TG_TX_EIP1559) {
    tx->type = (tg_tx_type)raw[0];
    body++;
    blen--;
  } else if (raw[0] < 0x80) {
    return TG_ETX_TYPE; /* another EIP-2718 type (or the reserved 0x00) */
  } else {
    return TG_ETX; /* an RLP string where a list or a typed envelope belongs */
  }
  tg_rlp_item list;
  int rc = tg_rlp_decode(&list, body, blen);
  if (rc) return rc;
  if (!list.is_list) return TG_ETX;
  tg_rlp_item f[MAX_FIELDS];
  size_t n = 0;
  tg_rlp_iter it;
  if ((rc = tg_rlp_iter_init(&it, &list))) return rc;
  while (tg_rlp_iter_more(&it)) {
    if (n == MAX_FIELDS) return TG_ETX;
    if ((rc = tg_rlp_iter_next(&it, &f[n++]))) return rc;
  }
  return decode_fields(tx, f, n);
}

int tg_tx_decode(tg_tx *out, const uint8_t *raw, size_t len) {
  memset(out, 0, sizeof *out);
  int rc = decode(out, raw, len);
  if (rc) memset(out, 0, sizeof *out);
  return rc;
}

int tg_tx_sender(tg_address *out, const tg_tx *tx) {
  memset(out, 0, sizeof *out);
  if (!tx->is_signed) return TG_ETX_UNSIGNED;
  int rc = check_sig_values(&tx->r, &tx->s);
  if (rc) return rc;
  if (tx->y_parity != 0 && tx->y_parity != 1) return TG_ESIG_RECID;
  tg_hash h;
  if ((rc = tg_tx_signing_hash(&h, tx))) return rc;
  tg_sig sig;
  memcpy(sig.b, tx->r.b, 32);
  memcpy(sig.b + 32, tx->s.b, 32);
  sig.b[64] = (uint8_t)(27 + tx->y_parity);
  return tg_recover_address(out, &h, &sig);
}

/* ---------------------------------------------------------------- validation */

int tg_tx_check_chain(const tg_tx *tx, uint64_t chain_id) {
  if (tx->type == TG_TX_LEGACY && tx->chain_id == 0) return TG_OK; /* pre-EIP-155 */
  return tx->chain_id == chain_id ? TG_OK : TG_ETX_CHAIN;
}

static int add_gas(uint64_t *acc, uint64_t a, uint64_t mul) {
  if (mul && a > UINT64_MAX / mul) return TG_EOVERFLOW;
  uint64_t p = a * mul;
  if (*acc > UINT64_MAX - p) return TG_EOVERFLOW;
  *acc += p;
  return TG_OK;
}

int tg_tx_intrinsic_gas(const tg_tx *tx, uint64_t *gas) {
  *gas = 0;
  uint64_t g = 21000, zeros = 0, nonzeros = 0, na = 0, nk = 0;
  int rc;
  if (!tx->has_to) g += 32000;
  for (size_t i = 0; i < tx->data.len; i++) {
    if (tx->data.ptr[i])
      nonzeros++;
    else
      zeros++;
  }
  if ((rc = add_gas(&g, zeros, 4)) || (rc = add_gas(&g, nonzeros, 16))) return rc;
  if (tx->type != TG_TX_LEGACY) {
    if ((rc = parse_access_list(&tx->access_list, &na, &nk))) return rc;
    if ((rc = add_gas(&g, na, 2400)) || (rc = add_gas(&g, nk, 1900))) return rc;
  }
  if (!tx->has_to && (rc = add_gas(&g, ((uint64_t)tx->data.len + 31) / 32, 2))) return rc;
  *gas = g;
  return TG_OK;
}

int tg_tx_validate(const tg_tx *tx, uint64_t chain_id) {
  int rc = tg_tx_check_fields(tx);
  if (rc) return rc;
  if ((rc = tg_tx_check_chain(tx, chain_id))) return rc;
  if (!tx->has_to && tx->data.len > TG_TX_INITCODE_MAX) return TG_ETX_INITCODE;
  uint64_t ig;
  if ((rc = tg_tx_intrinsic_gas(tx, &ig))) return rc == TG_EOVERFLOW ? TG_ETX_INTRINSIC_GAS : rc;
  if (tx->gas_limit < ig) return TG_ETX_INTRINSIC_GAS;
  const tg_u256 *price = tx->type == TG_TX_EIP1559 ? &tx->max_fee_per_gas : &tx->gas_price;
  if (tx->type == TG_TX_EIP1559 && tg_u256_cmp(&tx->max_priority_fee_per_gas, &tx->max_fee_per_gas) > 0)
    return TG_ETX_FEE;
  tg_u256 cost;
  if (tg_u256_mul_u64(&cost, price, tx->gas_limit)) return TG_ETX_COST;
  return TG_OK;
}
