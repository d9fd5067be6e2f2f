/* Ethereum transactions: legacy (pre-EIP-155 and EIP-155), EIP-2930 and EIP-1559: build, sign, serialize, strictly decode, recover, hash. */
#ifndef TOLLGATE_TX_H
#define TOLLGATE_TX_H

#include <stddef.h>
#include <stdint.h>

#include "tollgate/rlp.h"
#include "tollgate/secp.h"
#include "tollgate/types.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  TG_TX_LEGACY = 0,  /* RLP list of 9 fields; v carries the chain id (EIP-155) */
  TG_TX_EIP2930 = 1, /* 0x01 || rlp([chainId, nonce, gasPrice, gas, to, value, data, accessList, yParity, r, s]) */
  TG_TX_EIP1559 = 2  /* 0x02 || rlp([chainId, nonce, maxPriorityFee, maxFee, gas, to, value, data, accessList, yParity, r, s]) */
} tg_tx_type;

/*
 * Chain ids are 64-bit (as in Foundry and most clients). A legacy
 * transaction's chain id must keep v = 2 * chainId + 36 within 64 bits.
 */
#define TG_TX_CHAIN_ID_MAX UINT64_MAX
#define TG_TX_LEGACY_CHAIN_ID_MAX ((UINT64_MAX - 36) / 2)
/* EIP-2681: a nonce is below 2^64 - 1. */
#define TG_TX_NONCE_MAX (UINT64_MAX - 1)
/* EIP-3860: the largest contract-creation code. */
#define TG_TX_INITCODE_MAX 49152

/*
 * A transaction. Every byte field is a view (`data`, `access_list`): the
 * struct owns nothing, so a decoded transaction lives as long as the raw
 * bytes it came from, and a built one as long as the caller's buffers.
 *
 * `access_list` holds the RLP encoding of the whole access list (a list
 * item, header included), as tg_access_list_encode writes it and as it
 * appears inside a raw transaction; an empty view stands for [] (0xc0).
 * Legacy transactions have no access list (it must be empty).
 */
typedef struct {
  tg_tx_type type;
  uint64_t chain_id;       /* legacy: 0 = no replay protection (pre-EIP-155, v = 27/28) */
  uint64_t nonce;          /* <= TG_TX_NONCE_MAX */
  tg_u256 gas_price;       /* legacy and EIP-2930 */
  tg_u256 max_priority_fee_per_gas; /* EIP-1559 */
  tg_u256 max_fee_per_gas;          /* EIP-1559 */
  uint64_t gas_limit;
  int has_to;              /* 0 = contract creation (`to` is ignored) */
  tg_address to;
  tg_u256 value;
  tg_bytes data;
  tg_bytes access_list;
  /* The signature, set by tg_tx_sign and tg_tx_decode. */
  int is_signed;
  int y_parity;            /* 0 or 1 */
  tg_u256 r;
  tg_u256 s;
} tg_tx;

/* A zeroed transaction of the given type (chain id 0, no recipient, no signature). */
void tg_tx_init(tg_tx *tx, tg_tx_type type);

/*
 * Checks the fields a caller set before encoding or signing: a known type,
 * nonce <= TG_TX_NONCE_MAX, chain id limits, no access list on a legacy
 * transaction and a well-formed one otherwise (TG_ETX_TYPE, TG_ETX_FIELD,
 * TG_ETX_CHAIN).
 */
TG_WARN_UNUSED_RESULT int tg_tx_check_fields(const tg_tx *tx);

/*
 * The signing payload: legacy rlp([nonce, gasPrice, gas, to, value, data])
 * or, with a chain id, rlp([..., chainId, 0, 0]) (EIP-155); typed
 * type || rlp([fields without the signature]). Appends to `out`.
 */
TG_WARN_UNUSED_RESULT int tg_tx_encode_unsigned(tg_buf *out, const tg_tx *tx);
/* keccak256 of the signing payload, streamed without building it. */
TG_WARN_UNUSED_RESULT int tg_tx_signing_hash(tg_hash *out, const tg_tx *tx);

/* Signs: sets r, s (low-S, RFC 6979), y_parity and is_signed. */
TG_WARN_UNUSED_RESULT int tg_tx_sign(tg_tx *tx, const tg_seckey *key);

/* The raw signed transaction as sent with eth_sendRawTransaction. Appends to `out`. */
TG_WARN_UNUSED_RESULT int tg_tx_encode(tg_buf *out, const tg_tx *tx);
/* The transaction hash: keccak256 of the raw signed transaction, streamed. */
TG_WARN_UNUSED_RESULT int tg_tx_hash(tg_hash *out, const tg_tx *tx);
/* The v value as written on the wire: 27/28, 2 * chainId + 35/36, or yParity for typed. */
uint64_t tg_tx_v(const tg_tx *tx);

/*
 * Decodes a raw signed transaction, strictly: exactly one legacy RLP list or
 * one 0x01/0x02 envelope and nothing after it; every field of the right kind
 * (a string, or a list for the access list) and the right count; integers
 * minimal (TG_ELEADING_ZERO); nonce <= 2^64 - 2 (EIP-2681), gas limit < 2^64,
 * amounts < 2^256, chain id < 2^64 (TG_ETX_FIELD / TG_EOVERFLOW); `to` empty
 * or 20 bytes, access-list addresses 20 bytes and storage keys 32
 * (TG_ETX_FIELD); v 27/28 or >= 37 for legacy (35/36 would mean chain id 0:
 * TG_ETX_CHAIN), yParity 0/1 for typed (TG_ESIG_RECID); r and s in
 * [1, n-1] (TG_ESIG) and s <= n/2 for every type (TG_ESIG_HIGH_S: stricter
 * than Frontier, which allowed high S). Unknown types: TG_ETX_TYPE.
 * The result points into `raw`. `out` is zeroed on failure.
 */
TG_WARN_UNUSED_RESULT int tg_tx_decode(tg_tx *out, const uint8_t *raw, size_t len);

/* Recovers the sender from the signature (TG_ETX_UNSIGNED, TG_ESIG_RECOVER, ...). */
TG_WARN_UNUSED_RESULT int tg_tx_sender(tg_address *out, const tg_tx *tx);

/*
 * Replay rule for a node on chain `chain_id`: the transaction carries that
 * chain id, or is a legacy one without any (pre-EIP-155). TG_ETX_CHAIN.
 */
TG_WARN_UNUSED_RESULT int tg_tx_check_chain(const tg_tx *tx, uint64_t chain_id);

/*
 * Intrinsic gas (Shanghai and later rules): 21000, +32000 for a creation,
 * 4 per zero and 16 per non-zero data byte (EIP-2028), 2400 per access-list
 * address and 1900 per storage key (EIP-2930), 2 per 32-byte word of
 * creation code (EIP-3860). TG_EOVERFLOW past 2^64.
 */
TG_WARN_UNUSED_RESULT int tg_tx_intrinsic_gas(const tg_tx *tx, uint64_t *gas);

/*
 * The checks a node applies before accepting a transaction into its pool,
 * short of account state: tg_tx_check_chain, gas limit >= intrinsic gas
 * (TG_ETX_INTRINSIC_GAS), creation code <= TG_TX_INITCODE_MAX
 * (TG_ETX_INITCODE), priority fee <= max fee (TG_ETX_FEE), and gas limit
 * times gas price (max fee) within 256 bits (TG_ETX_COST).
 */
TG_WARN_UNUSED_RESULT int tg_tx_validate(const tg_tx *tx, uint64_t chain_id);

/* ------------------------------------------------------------- access lists */

/* One access-list entry for building: an address and its storage keys (not owned). */
typedef struct {
  tg_address address;
  const tg_hash *storage_keys;
  size_t n_storage_keys;
} tg_access_entry;

/* Appends rlp([[address, [key, ...]], ...]) to `out`, for tg_tx.access_list. */
TG_WARN_UNUSED_RESULT int tg_access_list_encode(tg_buf *out, const tg_access_entry *entries,
                                                size_t n);

/*
 * Reading an access list: tg_access_list_iter_init over a transaction,
 * then while tg_rlp_iter_more(&it), tg_access_list_next gives an address
 * and an iterator over its keys; tg_access_list_key reads each key.
 */
TG_WARN_UNUSED_RESULT int tg_access_list_iter_init(tg_rlp_iter *it, const tg_tx *tx);
TG_WARN_UNUSED_RESULT int tg_access_list_next(tg_rlp_iter *it, tg_address *address,
                                              tg_rlp_iter *keys);
TG_WARN_UNUSED_RESULT int tg_access_list_key(tg_rlp_iter *keys, tg_hash *key);

#ifdef __cplusplus
}
#endif
#endif
