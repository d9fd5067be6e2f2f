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
  /*
   * Gasless policy: open (and top up) channels without a transaction of the
   * payer's: the first payment on a new channel, or the one that finds the
   * deposit used up, carries a batch-settlement `deposit` payload (an
   * EIP-3009 ReceiveWithAuthorization of open_deposit to the channel
   * contract) that the gateway submits (depositWithAuthorization). Without
   * it, rpc_url is used to open and top up on-chain from the payer's key.
   */
  int gasless;
  long timeout_ms;         /* per HTTP exchange, default 30000 */
  FILE *log;               /* -v: the payment exchange, or NULL */
} tg_client_opts;

TG_WARN_UNUSED_RESULT int tg_client_open(tg_client **out, const tg_client_opts *opts);
void tg_client_close(tg_client *c);
/* The payer address. */
void tg_client_payer(const tg_client *c, tg_address *out);

#define TG_CLIENT_MAX_HEADERS 64
#define TG_CLIENT_PAYID_MAX 64

/*
 * Streaming: with a sink, the body of the answer that ends the call, when it
 * is a 2xx, is handed to on_body as it arrives rather than kept in the
 * response (a server-sent-events answer passes through chunk by chunk).
 * on_head runs once before the first body byte with the status and the raw
 * header lines ("Name: value\r\n" each, no status line). A callback that
 * returns nonzero aborts the transfer (the client went away). Non-2xx
 * answers (refusals, 402s) are buffered as without a sink. The callbacks
 * run on the calling thread.
 */
typedef struct {
  int (*on_head)(void *arg, long status, const char *head, size_t head_len);
  int (*on_body)(void *arg, const void *data, size_t len);
  /* Polled while waiting for an answer: nonzero aborts the exchange (may be NULL). */
  int (*cancelled)(void *arg);
  void *arg;
} tg_client_sink;

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
  const tg_client_sink *sink;          /* NULL: buffer the body in the response */
} tg_client_request;

typedef struct {
  long status;
  tg_buf body;                         /* empty when streamed to a sink */
  tg_buf head;                         /* the answer's header lines, "Name: value\r\n" each */
  int streamed;                        /* the body went to the sink (on_head was called) */
  int trailer;                         /* the charge came from a `: x402-charge` SSE trailer */
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

/*
 * The local paying proxy (`tollgate proxy`): an HTTP server on a loopback
 * address that forwards every request, path and query appended to `target`,
 * through tg_client_fetch on a thread of its own (many calls in parallel on
 * one channel), and streams 2xx answers back chunk by chunk. Refusals the
 * client makes itself (a cap, no scheme) are answered with an
 * OpenAI-style JSON error and the error's HTTP status. An `Idempotency-Key`
 * or `X-Payment-Id` request header that is a valid payment-identifier is used
 * as the call's id, so a client that retries with the same key pays once.
 * Non-loopback listen addresses are refused (TG_EPERM): whoever can connect
 * spends the payer's money.
 */
typedef struct {
  const char *listen;      /* "127.0.0.1:PORT" ("[::1]:PORT", "localhost:PORT"); port 0: any */
  const char *target;      /* http(s)://host[:port][/base] */
  size_t max_body;         /* request body limit, default 16 MiB (413 beyond) */
  unsigned max_calls;      /* calls in flight, default 256 (503 beyond) */
  FILE *log;               /* the listening line and one line per call, or NULL */
  void (*on_ready)(void *arg, unsigned port); /* once listening (optional) */
  void *arg;
} tg_client_proxy_opts;

/*
 * Runs until SIGINT or SIGTERM, then waits for the calls in flight and
 * returns 0. A second signal returns TG_ECANCELED at once, with calls still
 * running on c: the caller must then exit without tg_client_close.
 */
TG_WARN_UNUSED_RESULT int tg_client_proxy_run(tg_client *c, const tg_client_proxy_opts *o);

/* A channel the client knows (as kept in state.json). */
typedef struct {
  uint64_t chain_id;
  tg_address contract;
  tg_channel_config config;
  tg_hash id;
  tg_u256 deposit;                     /* what the payer deposited (the voucher limit) */
  tg_u256 charged;                     /* charged cumulative as the gateway confirmed it */
  tg_u256 signed_max;                  /* the highest ceiling signed */
  tg_u256 pending_deposit;             /* a gasless deposit sent, not confirmed yet (in deposit) */
  uint64_t withdraw_at;                /* a withdrawal started: finalizable at (Unix time), else 0 */
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
 * A fresh channel salt: 8 random bytes at the end, 24 zero bytes before them. A
 * payer's channels with one receiver, token and delay stay apart with 2^64 salts,
 * and every claim of the channel carries the salt in calldata, where a zero byte
 * costs 4 gas and a non-zero one 16: about 290 gas less per claimed channel than
 * a salt of 32 random bytes (docs/CONTRACTS.md, claimPacked).
 */
void tg_client_channel_salt(tg_hash *salt);

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
/* A channel as the contract has it. */
typedef struct {
  tg_u256 balance;                     /* deposited minus withdrawn and refunded */
  tg_u256 total_claimed;               /* claimed by the receiver so far */
  tg_u256 withdraw_amount;             /* a pending timed withdrawal */
  uint64_t withdraw_at;                /* when it becomes finalizable (0: none pending) */
  uint64_t now;                        /* the latest block's timestamp */
} tg_client_channel_chain;

/* Reads a known channel's on-chain state (channels, pendingWithdrawals, the block time). */
TG_WARN_UNUSED_RESULT int tg_client_channel_onchain(tg_client *c, tg_client_channel_chain *out,
                                                    const char *rpc_url, const tg_hash *id);
/* Adds `amount` to a known channel: approve + deposit from the payer's key; the state follows. */
TG_WARN_UNUSED_RESULT int tg_client_channel_topup(tg_client *c, tg_client_channel *out,
                                                  const char *rpc_url, const tg_hash *id,
                                                  const tg_u256 *amount);
/*
 * Starts a timed withdrawal (initiateWithdraw) of `amount`, or (NULL) of all
 * that is unclaimed now. The receiver may still claim what it charged during
 * the channel's withdraw delay; the client stops paying on the channel
 * (withdraw_at is set). TG_ECHANNEL_SHORT when nothing is left.
 */
TG_WARN_UNUSED_RESULT int tg_client_channel_withdraw(tg_client *c, tg_client_channel *out,
                                                     const char *rpc_url, const tg_hash *id,
                                                     const tg_u256 *amount);
/*
 * Completes it (finalizeWithdraw) once the delay has passed; *paid gets what
 * came back. TG_EBUSY (out->withdraw_at says when) before the delay,
 * TG_ENOTFOUND when no withdrawal is pending. The channel's deposit becomes
 * the balance left on-chain and it can be paid on again.
 */
TG_WARN_UNUSED_RESULT int tg_client_channel_finalize(tg_client *c, tg_client_channel *out,
                                                     const char *rpc_url, const tg_hash *id,
                                                     tg_u256 *paid);

/*
 * Cooperative refund: asks the gateway at `url` (its origin +
 * /channel/refund; a batch-settlement `refund` payload whose voucher
 * authenticates the payer) to return what it has not charged. The gateway
 * sends refund(config, balance - charged) itself and answers once it is
 * mined; *refunded and *tx say what came back, and the channel's deposit
 * becomes the balance left. TG_ECHANNEL_SHORT: nothing to refund;
 * TG_EUNSUPPORTED: the gateway does not offer refunds; TG_ECLIENT_REFUSED:
 * it refused (the reason is in the -v log).
 */
TG_WARN_UNUSED_RESULT int tg_client_channel_refund(tg_client *c, tg_client_channel *out,
                                                   const char *url, const tg_hash *id,
                                                   tg_u256 *refunded, tg_hash *tx);

/* Lists the known channels: up to cap records into out, their count into *n. */
TG_WARN_UNUSED_RESULT int tg_client_channels(tg_client *c, tg_client_channel *out, size_t cap,
                                             size_t *n);

#ifdef __cplusplus
}
#endif
#endif
