/* x402 version 2 envelopes: PAYMENT-REQUIRED, PAYMENT-SIGNATURE and PAYMENT-RESPONSE, both ways. */
#ifndef TOLLGATE_X402_H
#define TOLLGATE_X402_H

#include <stddef.h>
#include <stdint.h>

#include "tollgate/types.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * The wire format is x402 v2 over HTTP: each header is standard base64
 * (padding optional on input) of one JSON object. Decoders take untrusted
 * bytes and are strict: unknown x402Version, duplicate JSON keys, wrong
 * types, malformed addresses or amounts, oversized headers are refused with
 * a tg_err and, where the specification names one, its error reason string.
 */

#define TG_X402_VERSION 2
#define TG_X402_HEADER_MAX 16384  /* base64 characters accepted in one header */
#define TG_X402_MAX_ACCEPTS 8

/* Scheme names on the wire. */
#define TG_X402_SCHEME_EXACT "exact"
#define TG_X402_SCHEME_CHANNEL "batch-settlement"

typedef enum {
  TG_X402_UNKNOWN = 0,
  TG_X402_EXACT = 1,   /* EIP-3009 transferWithAuthorization, one transaction per call */
  TG_X402_CHANNEL = 2, /* cumulative vouchers on a payment channel, batch-settled */
} tg_x402_scheme;

/* One entry of `accepts` (and the `accepted` echo in a payment). */
typedef struct {
  tg_x402_scheme scheme;
  uint64_t chain_id;              /* network "eip155:<chain_id>" */
  tg_u256 amount;                 /* atomic units: the price, or the maximum per call */
  tg_address asset;
  tg_address pay_to;
  uint64_t max_timeout_seconds;
  char token_name[64];            /* extra.name: the token's EIP-712 domain name */
  char token_version[16];         /* extra.version */
  /* Channel scheme extras (zero for exact). */
  tg_address receiver_authorizer; /* extra.receiverAuthorizer */
  uint64_t withdraw_delay;        /* extra.withdrawDelay (seconds) */
  tg_address channel_contract;    /* extra.channelContract: where channels live */
  tg_u256 min_deposit;            /* extra.minDeposit (0 when absent) */
} tg_x402_requirements;

/*
 * Signature bytes as sent: 65 bytes r || s || v for an EOA, or longer for a
 * contract wallet (ERC-1271), which is verified on-chain.
 */
#define TG_X402_SIG_MAX 1024
typedef struct {
  uint8_t b[TG_X402_SIG_MAX];
  size_t len;
} tg_x402_sig;

/* EIP-3009 authorization carried by the exact scheme. */
typedef struct {
  tg_address from;
  tg_address to;
  tg_u256 value;
  uint64_t valid_after;
  uint64_t valid_before;
  tg_hash nonce;
  tg_x402_sig signature;
} tg_x402_exact;

/* The immutable configuration a channel id is derived from. */
typedef struct {
  tg_address payer;
  tg_address payer_authorizer;    /* zero: vouchers are verified against payer (ERC-1271) */
  tg_address receiver;
  tg_address receiver_authorizer;
  tg_address token;
  uint64_t withdraw_delay;        /* seconds, uint40 on-chain */
  tg_hash salt;
} tg_channel_config;

typedef enum {
  TG_X402_CHANNEL_VOUCHER = 1,
  TG_X402_CHANNEL_DEPOSIT = 2,
  TG_X402_CHANNEL_REFUND = 3,
} tg_x402_channel_type;

/* The channel scheme's payload (batch-settlement shape). */
typedef struct {
  tg_x402_channel_type type;
  tg_channel_config config;
  tg_hash channel_id;
  tg_u256 max_claimable;          /* voucher.maxClaimableAmount (uint128 on-chain) */
  tg_x402_sig voucher_signature;
  int has_deposit;                /* deposit payloads: a gasless deposit to submit */
  tg_u256 deposit_amount;
  uint64_t deposit_valid_after;
  uint64_t deposit_valid_before;
  tg_hash deposit_nonce;          /* erc3009Authorization.salt */
  tg_x402_sig deposit_signature;
  int has_refund_amount;
  tg_u256 refund_amount;
} tg_x402_channel;

/* A decoded PAYMENT-SIGNATURE. */
typedef struct {
  tg_x402_requirements accepted;
  char resource_url[512];         /* resource.url, "" when absent */
  char payment_id[129];           /* extensions["payment-identifier"].info.id, "" when absent */
  union {
    tg_x402_exact exact;
    tg_x402_channel channel;
  } u;
} tg_x402_payment;

/*
 * Decodes a PAYMENT-SIGNATURE header value. On failure returns a tg_err and
 * sets *reason (when reason is non-NULL) to the x402 error reason to report,
 * e.g. "invalid_payload", "invalid_x402_version", "invalid_scheme".
 */
TG_WARN_UNUSED_RESULT int tg_x402_payment_decode(tg_x402_payment *out, const char **reason,
                                                 const char *header, size_t len);
/* Encodes a payment as a PAYMENT-SIGNATURE value (base64 of JSON), appended to out. */
TG_WARN_UNUSED_RESULT int tg_x402_payment_encode(tg_buf *out, const tg_x402_payment *p);

/* A PAYMENT-REQUIRED document. */
typedef struct {
  const char *error;              /* optional human message or reason */
  const char *resource_url;
  const char *description;        /* optional */
  const char *mime_type;          /* optional */
  tg_x402_requirements accepts[TG_X402_MAX_ACCEPTS];
  size_t n_accepts;
  int advertise_payment_id;       /* advertise the payment-identifier extension */
  int require_payment_id;
  /*
   * Optional JSON objects (text) placed in accepts[i].extra for a corrective
   * 402: channelState and voucherState of the batch-settlement scheme.
   */
  const char *channel_state_json[TG_X402_MAX_ACCEPTS];
  const char *voucher_state_json[TG_X402_MAX_ACCEPTS];
} tg_x402_required;

/* Encodes PAYMENT-REQUIRED (base64 of JSON) appended to out; also the plain JSON when json_out. */
TG_WARN_UNUSED_RESULT int tg_x402_required_encode(tg_buf *out, tg_buf *json_out,
                                                  const tg_x402_required *r);

/* The decoded side of PAYMENT-REQUIRED, for payers. Strings live in the struct. */
typedef struct {
  char error[256];
  char resource_url[512];
  tg_x402_requirements accepts[TG_X402_MAX_ACCEPTS];
  size_t n_accepts;               /* entries of known schemes only */
  size_t n_unknown;               /* entries skipped because their scheme is unknown */
  int payment_id_required;
  int payment_id_supported;
} tg_x402_required_info;

TG_WARN_UNUSED_RESULT int tg_x402_required_decode(tg_x402_required_info *out,
                                                  const char *header, size_t len);

/* PAYMENT-RESPONSE (a SettlementResponse), with tollgate's charge extras. */
typedef struct {
  int success;
  const char *error_reason;       /* when !success */
  tg_address payer;
  int has_payer;
  uint64_t chain_id;
  tg_hash transaction;            /* exact: the transferWithAuthorization tx */
  int has_transaction;
  tg_u256 charged;                /* extra.chargedAmount: what this call cost */
  int has_charged;
  /* Channel snapshot (extra.channelState) when has_channel. */
  int has_channel;
  tg_hash channel_id;
  tg_u256 channel_balance;
  tg_u256 channel_total_claimed;
  tg_u256 channel_charged_cumulative;
  uint64_t withdraw_requested_at;
} tg_x402_settle_response;

TG_WARN_UNUSED_RESULT int tg_x402_settle_response_encode(tg_buf *out,
                                                         const tg_x402_settle_response *r);
/* The same through a JSON tree (jansson); the fast path above gives the same bytes for a
 * successful answer (compared by test_x402.c). */
TG_WARN_UNUSED_RESULT int tg_x402_settle_response_encode_json(tg_buf *out,
                                                              const tg_x402_settle_response *r);
TG_WARN_UNUSED_RESULT int tg_x402_settle_response_decode(tg_x402_settle_response *out,
                                                         char *reason_buf, size_t reason_cap,
                                                         const char *header, size_t len);

/* "eip155:<id>" parsing and formatting. */
TG_WARN_UNUSED_RESULT int tg_x402_network_parse(uint64_t *chain_id, const char *s, size_t len);

/* Standard base64 (padding optional on input), as x402 headers use it. */
TG_WARN_UNUSED_RESULT int tg_base64_decode(tg_buf *out, const char *b64, size_t len);
TG_WARN_UNUSED_RESULT int tg_base64_encode(tg_buf *out, const uint8_t *data, size_t len);

#ifdef __cplusplus
}
#endif
#endif
