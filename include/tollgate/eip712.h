/* EIP-712 typed structured data: digests from full typed-data JSON, and fixed-type fast paths. */
#ifndef TOLLGATE_EIP712_H
#define TOLLGATE_EIP712_H

#include <stddef.h>

#include "tollgate/secp.h"
#include "tollgate/types.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * ---------------------------------------------------------------------------
 * Typed-data JSON (what eth_signTypedData_v4 takes)
 * ---------------------------------------------------------------------------
 *
 * A document is {"types": {...}, "primaryType": "...", "domain": {...},
 * "message": {...}}. Semantics are EIP-712 as MetaMask's V4 and ethers
 * implement it, with a strict reading of values (untrusted input):
 *
 *  - Types: uint8..uint256 and int8..int256 (steps of 8; "uint"/"int" mean
 *    256 bits and keep their spelling in encodeType), bool, address,
 *    bytes1..bytes32, bytes, string, struct names, and arrays of any of these
 *    (T[], T[k] with 1 <= k, nested: T[2][]). Struct and field names are
 *    identifiers ([A-Za-z_$][A-Za-z0-9_$]*). Every type named anywhere in
 *    "types" must be defined; recursive types (a struct that reaches itself)
 *    are refused, as ethers does (TG_ETYPED_DATA_TYPE).
 *  - EIP712Domain: any subset of its fields in the order "types" gives. When
 *    "types" has no EIP712Domain, it is inferred from the keys of "domain" in
 *    the canonical order name, version, chainId, verifyingContract, salt (as
 *    ethers and Foundry do). A domain key the domain type does not declare is
 *    refused (it would look signed but not be).
 *  - Integers: JSON integers (64-bit), JSON reals that are integral with
 *    |x| <= 2^53, decimal strings ("-" only for intN) and "0x" hex strings;
 *    the value must fit the type (TG_ERANGE). Larger values must be strings
 *    (a JSON integer beyond 64 bits is refused with TG_ERANGE).
 *  - bool: true/false. address: "0x" and 40 hex digits, EIP-55 checked on
 *    mixed case (TG_ECHECKSUM). bytesN: "0x" and exactly 2N digits. bytes:
 *    "0x" and an even number of digits. string: a JSON string (NUL allowed).
 *  - Message fields the type does not declare are ignored (as MetaMask, ethers
 *    and Foundry do); a declared field that is missing or null is refused
 *    (TG_ETYPED_DATA_MISSING). Fixed-size arrays must have exactly k elements.
 *  - With "primaryType": "EIP712Domain" the digest is keccak256(0x1901 ||
 *    domainSeparator) and the message is not hashed (MetaMask's rule).
 *
 * Caps: document 4 MiB (TG_ETOOBIG), 256 struct types, 256 fields per struct,
 * 8 array dimensions per type, fixed array size 65536, value nesting depth 64,
 * type-name length 256, all encodeType strings together 16 MiB (TG_ETOOBIG);
 * JSON duplicate keys refused (TG_EJSON).
 */
#define TG_EIP712_MAX_JSON ((size_t)4 << 20)
#define TG_EIP712_MAX_TYPES 256
#define TG_EIP712_MAX_FIELDS 256
#define TG_EIP712_MAX_DIMS 8
#define TG_EIP712_MAX_FIXED_ARRAY 65536
#define TG_EIP712_MAX_DEPTH 64
#define TG_EIP712_MAX_NAME 256

/*
 * The EIP-712 signing digest keccak256(0x1901 || domainSeparator || hashStruct(message))
 * of a typed-data JSON document as eth_signTypedData_v4 takes it:
 * {"types": {...}, "primaryType": "...", "domain": {...}, "message": {...}}.
 * Errors: TG_EJSON, TG_ETYPED_DATA, TG_ETYPED_DATA_TYPE, TG_ETYPED_DATA_VALUE,
 * TG_ETYPED_DATA_MISSING, TG_ERANGE, TG_ECHECKSUM, TG_ETOOBIG. `out` is zeroed on failure.
 */
TG_WARN_UNUSED_RESULT int tg_eip712_digest_json(tg_hash *out, const char *json, size_t len);

/*
 * The three hashes of a document at once; any output may be NULL. The
 * digest is keccak256(0x1901 || domain_separator || message_hash).
 */
TG_WARN_UNUSED_RESULT int tg_eip712_hashes_json(tg_hash *digest, tg_hash *domain_separator,
                                                tg_hash *message_hash, const char *json,
                                                size_t len);

/*
 * tg_eip712_hashes_json that also says where a document is wrong: on failure
 * `where` (TG_EIP712_WHERE_MAX bytes, may be NULL) gets a path such as
 * "message.to[1].wallet", "types.Mail.replyTo", "domain.chain" or
 * "line 3 column 7" (JSON syntax); "" when no part is to blame.
 */
#define TG_EIP712_WHERE_MAX 256
TG_WARN_UNUSED_RESULT int tg_eip712_hashes_json_where(tg_hash *digest, tg_hash *domain_separator,
                                                      tg_hash *message_hash, char *where,
                                                      const char *json, size_t len);

/*
 * hashStruct of one struct of a document: "EIP712Domain" hashes the domain,
 * the primary type hashes the message. Any other name: TG_ENOTFOUND (the
 * document holds no value for it; use tg_eip712_hash_struct_json).
 */
TG_WARN_UNUSED_RESULT int tg_eip712_doc_hash_struct(tg_hash *out, const char *json, size_t len,
                                                    const char *type);

/*
 * A parsed and checked set of struct types: the "types" object alone, or a
 * whole document (then its "types" member is used, with EIP712Domain
 * inferred from "domain" when absent). Owned by the caller: free with
 * tg_eip712_types_free (NULL is a no-op). Immutable after parsing, so it may
 * be shared between threads.
 */
typedef struct tg_eip712_types tg_eip712_types;

TG_WARN_UNUSED_RESULT int tg_eip712_types_parse(tg_eip712_types **out, const char *json,
                                                size_t len);
void tg_eip712_types_free(tg_eip712_types *types);

/* encodeType of a struct ("Mail(Person from,...)Person(...)"), appended to `out` (no NUL counted). */
TG_WARN_UNUSED_RESULT int tg_eip712_encode_type(tg_buf *out, const tg_eip712_types *types,
                                                const char *type);
/* typeHash = keccak256(encodeType(type)). */
TG_WARN_UNUSED_RESULT int tg_eip712_type_hash(tg_hash *out, const tg_eip712_types *types,
                                              const char *type);
/* encodeData(type, value): typeHash || one 32-byte word per field, appended to `out`. */
TG_WARN_UNUSED_RESULT int tg_eip712_encode_data_json(tg_buf *out, const tg_eip712_types *types,
                                                     const char *type, const char *value_json,
                                                     size_t len);
/* hashStruct(type, value) = keccak256(encodeData(type, value)); value is a JSON object. */
TG_WARN_UNUSED_RESULT int tg_eip712_hash_struct_json(tg_hash *out, const tg_eip712_types *types,
                                                     const char *type, const char *value_json,
                                                     size_t len);

/*
 * ---------------------------------------------------------------------------
 * Fast path: fixed struct types known at compile time (no JSON, no heap)
 * ---------------------------------------------------------------------------
 */

/* keccak256(0x19 0x01 || domain_separator || struct_hash): two Keccak blocks' worth of work. */
void tg_eip712_digest(tg_hash *out, const tg_hash *domain_separator, const tg_hash *struct_hash);

/* Which EIP712Domain members are present (bit flags of tg_eip712_domain.fields). */
#define TG_EIP712_DOMAIN_NAME 0x01u
#define TG_EIP712_DOMAIN_VERSION 0x02u
#define TG_EIP712_DOMAIN_CHAIN_ID 0x04u
#define TG_EIP712_DOMAIN_VERIFYING_CONTRACT 0x08u
#define TG_EIP712_DOMAIN_SALT 0x10u
#define TG_EIP712_DOMAIN_ALL 0x1fu
/* name, version, chainId, verifyingContract: the usual ERC-20 / channel domain. */
#define TG_EIP712_DOMAIN_STANDARD 0x0fu

/*
 * An EIP712Domain with its members in the canonical order; only those whose
 * bit is set in `fields` are part of the type and the hash. Strings need not
 * be NUL-terminated and are not owned.
 */
typedef struct {
  unsigned fields;
  tg_str name;
  tg_str version;
  tg_u256 chain_id;
  tg_address verifying_contract;
  tg_hash salt;
} tg_eip712_domain;

/* The domain separator hashStruct(EIP712Domain). TG_EINVAL for unknown bits in `fields`. */
TG_WARN_UNUSED_RESULT int tg_eip712_domain_separator(tg_hash *out, const tg_eip712_domain *domain);
/* typeHash of the EIP712Domain with these members (precomputed table). */
TG_WARN_UNUSED_RESULT int tg_eip712_domain_type_hash(tg_hash *out, unsigned fields);

/*
 * Payment-channel voucher (x402 batch settlement):
 * Voucher(bytes32 channelId,uint128 maxClaimableAmount).
 * The amount must fit 128 bits (TG_ERANGE otherwise).
 */
typedef struct {
  tg_hash channel_id;
  tg_u256 max_claimable_amount;
} tg_eip712_voucher;

/* EIP-3009: TransferWithAuthorization / ReceiveWithAuthorization(address from,address to,
 * uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce). */
typedef struct {
  tg_address from;
  tg_address to;
  tg_u256 value;
  tg_u256 valid_after;
  tg_u256 valid_before;
  tg_hash nonce;
} tg_eip3009_authorization;

/* EIP-2612: Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline). */
typedef struct {
  tg_address owner;
  tg_address spender;
  tg_u256 value;
  tg_u256 nonce;
  tg_u256 deadline;
} tg_eip2612_permit;

/* The type hashes (keccak256 of the type strings above), precomputed. */
extern const tg_hash tg_eip712_voucher_typehash;
extern const tg_hash tg_eip3009_transfer_typehash;
extern const tg_hash tg_eip3009_receive_typehash;
extern const tg_hash tg_eip2612_permit_typehash;

/* hashStruct of each fixed type. */
TG_WARN_UNUSED_RESULT int tg_eip712_voucher_hash(tg_hash *out, const tg_eip712_voucher *v);
void tg_eip3009_transfer_hash(tg_hash *out, const tg_eip3009_authorization *a);
void tg_eip3009_receive_hash(tg_hash *out, const tg_eip3009_authorization *a);
void tg_eip2612_permit_hash(tg_hash *out, const tg_eip2612_permit *p);

/* The signing digests under a precomputed domain separator. */
TG_WARN_UNUSED_RESULT int tg_eip712_voucher_digest(tg_hash *out, const tg_hash *domain_separator,
                                                   const tg_eip712_voucher *v);
void tg_eip3009_transfer_digest(tg_hash *out, const tg_hash *domain_separator,
                                const tg_eip3009_authorization *a);
void tg_eip3009_receive_digest(tg_hash *out, const tg_hash *domain_separator,
                               const tg_eip3009_authorization *a);
void tg_eip2612_permit_digest(tg_hash *out, const tg_hash *domain_separator,
                              const tg_eip2612_permit *p);

/*
 * Signing and recovery (secp.h): sign the digest of struct_hash under the
 * domain, or recover its signer (low-S only; errors as tg_recover_address).
 * The typed helpers do the same for each fixed type.
 */
TG_WARN_UNUSED_RESULT int tg_eip712_sign(tg_sig *out, const tg_seckey *key,
                                         const tg_hash *domain_separator,
                                         const tg_hash *struct_hash);
TG_WARN_UNUSED_RESULT int tg_eip712_recover(tg_address *signer, const tg_hash *domain_separator,
                                            const tg_hash *struct_hash, const tg_sig *sig);
TG_WARN_UNUSED_RESULT int tg_eip712_voucher_sign(tg_sig *out, const tg_seckey *key,
                                                 const tg_hash *domain_separator,
                                                 const tg_eip712_voucher *v);
TG_WARN_UNUSED_RESULT int tg_eip712_voucher_recover(tg_address *signer,
                                                    const tg_hash *domain_separator,
                                                    const tg_eip712_voucher *v,
                                                    const tg_sig *sig);
TG_WARN_UNUSED_RESULT int tg_eip3009_transfer_sign(tg_sig *out, const tg_seckey *key,
                                                   const tg_hash *domain_separator,
                                                   const tg_eip3009_authorization *a);
TG_WARN_UNUSED_RESULT int tg_eip3009_transfer_recover(tg_address *signer,
                                                      const tg_hash *domain_separator,
                                                      const tg_eip3009_authorization *a,
                                                      const tg_sig *sig);
TG_WARN_UNUSED_RESULT int tg_eip3009_receive_sign(tg_sig *out, const tg_seckey *key,
                                                  const tg_hash *domain_separator,
                                                  const tg_eip3009_authorization *a);
TG_WARN_UNUSED_RESULT int tg_eip3009_receive_recover(tg_address *signer,
                                                     const tg_hash *domain_separator,
                                                     const tg_eip3009_authorization *a,
                                                     const tg_sig *sig);
TG_WARN_UNUSED_RESULT int tg_eip2612_permit_sign(tg_sig *out, const tg_seckey *key,
                                                 const tg_hash *domain_separator,
                                                 const tg_eip2612_permit *p);
TG_WARN_UNUSED_RESULT int tg_eip2612_permit_recover(tg_address *signer,
                                                    const tg_hash *domain_separator,
                                                    const tg_eip2612_permit *p,
                                                    const tg_sig *sig);

#ifdef __cplusplus
}
#endif
#endif
