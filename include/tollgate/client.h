/* The payer's client: paid HTTP requests that answer x402 402s by policy, with spending caps. */
#ifndef TOLLGATE_CLIENT_H
#define TOLLGATE_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "tollgate/secp.h"
#include "tollgate/types.h"
#include "tollgate/x402.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * A tg_client holds one payer key and its state directory (state.json,
 * written atomically under an flock on state.lock, so that several
 * processes can share it). It is thread-safe: many threads may run
 * tg_client_fetch at once; they share the channels and the caps.
 *
 * A call: send the request; on 402 decode PAYMENT-REQUIRED; check the caps
 * with the offered price (refusing locally, before signing, with
 * TG_ECLIENT_CAP); pay by policy: a known channel for that
 * contract/payee/token with room for the price (a voucher whose ceiling is
 * charged + in flight + price + headroom, signed ahead so that later calls
 * reuse it), else `exact` (an EIP-3009 authorization, random nonce, valid
 * for the offered timeout); retry once with PAYMENT-SIGNATURE and a
 * payment-identifier; check PAYMENT-RESPONSE's chargedAmount against the
 * price (TG_ECLIENT_OVERCHARGE). A corrective 402 (the gateway's charged
 * total is ahead of ours) is adopted only when its voucherState carries a
 * voucher our key signed, then the call is retried once more.
 */

typedef struct tg_client tg_client;

/* Caps in token atomic units; a zero amount with has_* 0 means no cap. */
typedef struct {
  int has_per_call, has_per_hour, has_per_day, has_total, has_per_payee;
  tg_u256 per_call, per_hour, per_day, total, per_payee;
} tg_client_caps;

typedef struct {
  const char *state_dir;   /* created 0700 when missing */
  const tg_seckey *key;    /* copied into guarded memory */
  int allow_exact;         /* pay with `exact` when no channel fits */
  int allow_channel;       /* pay with vouchers on known channels */
  uint64_t headroom_calls; /* vouchers are signed this many prices ahead (default 50) */
  tg_client_caps caps;
  /*
   * Policy: when a gateway offers batch-settlement and no known channel fits,
   * open one on-chain (tg_client_channel_open) with this deposit over rpc_url,
   * then pay with a voucher. Zero or no rpc_url: never open.
   */
  tg_u256 open_deposit;
  const char *rpc_url;
  long timeout_ms;         /* per HTTP exchange, default 30000 */
  FILE *log;               /* -v: the payment exchange, or NULL */
} tg_client_opts;

TG_WARN_UNUSED_RESULT int tg_client_open(tg_client **out, const tg_client_opts *opts);
void tg_client_close(tg_client *c);
/* The payer address. */
void tg_client_payer(const tg_client *c, tg_address *out);

#define TG_CLIENT_MAX_HEADERS 64
#define TG_CLIENT_PAYID_MAX 64

typedef struct {
  const char *method;                  /* NULL: GET, or POST with a body */
  const char *url;
  const char *const *headers;          /* "Name: value" lines */
  size_t n_headers;
  const void *body;
  size_t body_len;
  /*
   * payment-identifier (16..64 of [A-Za-z0-9_-]); NULL: a fresh random one.
   * A call repeated with an id used before sends the same PAYMENT-SIGNATURE
   * again (stored with the state), so the gateway charges it once.
   */
  const char *payment_id;
} tg_client_request;

typedef struct {
  long status;
  tg_buf body;
  int paid;                            /* a payment was sent */
  int replayed;                        /* the payment was a stored one (same id) */
  tg_x402_scheme scheme;
  tg_u256 price;                       /* the price offered */
  tg_u256 charged;                     /* PAYMENT-RESPONSE extra.chargedAmount */
  int has_transaction;
  tg_hash transaction;                 /* exact: the transferWithAuthorization */
  int has_channel;
  tg_hash channel_id;
  tg_u256 charged_cumulative;          /* the channel's total as the gateway confirmed it */
  int corrected;                       /* a corrective 402 was adopted */
  char payment_id[TG_CLIENT_PAYID_MAX + 1];
  char error[256];                     /* the gateway's reason on a refused payment */
} tg_client_response;

/* Runs one call; *out must be cleaned with tg_client_response_cleanup in every case. */
TG_WARN_UNUSED_RESULT int tg_client_fetch(tg_client *c, tg_client_response *out,
                                          const tg_client_request *req);
void tg_client_response_cleanup(tg_client_response *r);

/* A channel the client knows (as kept in state.json). */
typedef struct {
  uint64_t chain_id;
  tg_address contract;
  tg_channel_config config;
  tg_hash id;
  tg_u256 deposit;                     /* what the payer deposited (the voucher limit) */
  tg_u256 charged;                     /* charged cumulative as the gateway confirmed it */
  tg_u256 signed_max;                  /* the highest ceiling signed */
} tg_client_channel;

/*
 * Registers a channel opened on-chain with `salt` and `deposit` for the
 * terms a gateway offers (receiver, receiverAuthorizer, token, withdraw
 * delay, contract, chain from a batch-settlement `accepts` entry); the
 * payer is the client's key. *out (optional) gets the record.
 */
TG_WARN_UNUSED_RESULT int tg_client_channel_add(tg_client *c, tg_client_channel *out,
                                                const tg_x402_requirements *terms,
                                                const tg_hash *salt, const tg_u256 *deposit);
/* Fetches `url` without payment and returns its batch-settlement terms (TG_ECLIENT_NO_SCHEME). */
TG_WARN_UNUSED_RESULT int tg_client_terms(tg_client *c, tg_x402_requirements *out,
                                          const char *url);
/*
 * Opens a channel on-chain and registers it: approve(channelContract, deposit)
 * on the token, then deposit(config, deposit) on the channel contract, each an
 * EIP-1559 transaction signed with the payer key and awaited (60 s), over the
 * JSON-RPC endpoint rpc_url. The payer needs the tokens and gas.
 */
TG_WARN_UNUSED_RESULT int tg_client_channel_open(tg_client *c, tg_client_channel *out,
                                                 const char *rpc_url,
                                                 const tg_x402_requirements *terms,
                                                 const tg_hash *salt, const tg_u256 *deposit);
/* Lists the known channels: up to cap records into out, their count into *n. */
TG_WARN_UNUSED_RESULT int tg_client_channels(tg_client *c, tg_client_channel *out, size_t cap,
                                             size_t *n);

#ifdef __cplusplus
}
#endif
#endif
