/* Access passes in the gateway: sign-in sessions, entitlements cached from the pass contract, quotas and overage. */
#ifndef TG_PAY_PASSES_H
#define TG_PAY_PASSES_H

#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "tollgate/address.h"
#include "tollgate/types.h"

struct event_base;
struct tg_store;

/*
 * One tg_passes per daemon, shared by every worker (one mutex; no RPC or
 * store call is made under it). What it keeps in memory:
 *
 *   sessions      token hash -> address and expiry (the store is the truth:
 *                 a miss reads it, so sessions survive restarts)
 *   entitlements  (user, plan) -> entitled(user, plan) as the contract last
 *                 answered it, tagged with the generation it was read in.
 *                 The chain follower bumps the generation for every log of
 *                 the pass contract (transfers, delegations, renewals), so
 *                 a cached answer never outlives the block that changed it;
 *                 an answer whose `until` passed is read again (a renewal
 *                 made before the expiry is seen then, without a gap).
 *   usage         (plan, holder, period) -> calls/tokens committed in the
 *                 store plus calls admitted and not yet completed, and the
 *                 calls of this instance's quota lease not yet used
 *   owed          holder -> postpaid overage charged and reserved
 *   agent nonces  per-request signed authentications seen, until they expire
 */
typedef struct tg_passes tg_passes;

/* The chain side, supplied by the daemon; both block briefly (an eth_call on loopback). */
typedef struct {
  void *ctx;
  /* TollgatePasses.entitled(user, planId) -> (ok, until, holder). */
  int (*entitled)(void *ctx, const tg_address *user, const tg_u256 *plan_id, int *ok,
                  uint64_t *until, tg_address *holder);
  /* ERC-1271 isValidSignature (NULL: contract wallets cannot sign in). */
  int (*erc1271)(void *ctx, const tg_address *wallet, const tg_hash *digest, const uint8_t *sig,
                 size_t sig_len, int *valid);
} tg_passes_chain;

typedef struct {
  struct tg_store *store;   /* borrowed */
  tg_passes_chain chain;
  uint64_t chain_id;
} tg_passes_opts;

TG_WARN_UNUSED_RESULT int tg_passes_new(tg_passes **out, const tg_passes_opts *o);
void tg_passes_free(tg_passes *p);

/* From the chain follower (any thread): the pass contract logged something; the head's time. */
void tg_passes_invalidate(tg_passes *p);
void tg_passes_chain_time(tg_passes *p, uint64_t unix_s);

/* ---- sign-in ------------------------------------------------------------------------ */

#define TG_PASSES_NONCE_LEN 24
#define TG_PASSES_TOKEN_PREFIX "tgs_"
#define TG_PASSES_TOKEN_LEN 47 /* "tgs_" and 43 base64url characters (32 random bytes) */

/* What a client needs to write its message: the nonce and the expected domain and URI. */
typedef struct {
  int err;
  char nonce[TG_PASSES_NONCE_LEN + 1];
  int64_t expires_at;          /* ms */
  char domain[256];
  char uri[512];
  uint64_t chain_id;
} tg_passes_nonce_result;
typedef void (*tg_passes_nonce_cb)(void *arg, const tg_passes_nonce_result *r);
/* Issues a nonce (recorded in the store before it is answered); cb fires once on `base`. */
void tg_passes_nonce(tg_passes *p, const tg_config *cfg, struct event_base *base, const char *host,
                     tg_passes_nonce_cb cb, void *arg);

typedef struct {
  int err;                     /* 0 or why the sign-in was refused (TG_ESIWE_*) */
  char token[TG_PASSES_TOKEN_LEN + 1];
  int64_t expires_at;          /* ms */
  tg_address address;
  int contract_wallet;         /* 1 when ERC-1271 vouched for the signature */
} tg_passes_signin_result;
typedef void (*tg_passes_signin_cb)(void *arg, const tg_passes_signin_result *r);
/*
 * Checks a signed EIP-4361 message (domain, URI, chain, issued-at, expiry,
 * signature by ecrecover or ERC-1271), then consumes its nonce and records
 * the session in one store submission; cb fires once on `base`.
 */
void tg_passes_signin(tg_passes *p, const tg_config *cfg, struct event_base *base,
                      const char *host, const char *message, size_t len, const uint8_t *sig,
                      size_t sig_len, tg_passes_signin_cb cb, void *arg);

/* Ends the session of `authorization` ("Bearer tgs_..."): deleted from the store, then cb(err). */
typedef void (*tg_passes_logout_cb)(void *arg, int err);
void tg_passes_logout(tg_passes *p, struct event_base *base, const char *authorization,
                      tg_passes_logout_cb cb, void *arg);

/* A cached session is read from the store again after this long (revocations on other instances). */
#define TG_PASSES_SESSION_RECHECK_MS 30000

/*
 * Who a request speaks for: a session token (`Authorization: Bearer tgs_...`)
 * or a per-request signed message (`X-Tollgate-Auth`, see docs/PROTOCOL.md).
 * 0 with *who; TG_ENOTFOUND when the request carries neither (then it pays);
 * TG_ESESSION_INVALID, TG_EPASS_AUTH or a TG_ESIWE_* code when it carries a
 * bad one (`reason` says what, reason_len bytes).
 */
TG_WARN_UNUSED_RESULT int tg_passes_identify(tg_passes *p, const tg_config *cfg, const char *host,
                                             const char *authorization, const char *agent_auth,
                                             tg_address *who, char *reason, size_t reason_len);

/*
 * The same; for a request with X-Tollgate-Auth also the key under which its nonce must be
 * recorded in the store before the call is admitted (`agent_key`: 64 hex digits, a hash of the
 * signer and the nonce; `agent_expires`: the message's expiry, ms), so that a signed message is
 * accepted once across restarts and instances sharing a store. agent_key is "" otherwise.
 */
TG_WARN_UNUSED_RESULT int tg_passes_identify_agent(tg_passes *p, const tg_config *cfg,
                                                   const char *host, const char *authorization,
                                                   const char *agent_auth, tg_address *who,
                                                   char *reason, size_t reason_len,
                                                   char agent_key[65], int64_t *agent_expires);

/* ---- entitlement and quota ------------------------------------------------------------ */

typedef struct {
  const tg_config_plan *plan;  /* of the configuration the call was admitted under */
  tg_u256 plan_id;
  tg_address user;             /* who asked (holder or delegate) */
  tg_address holder;           /* whose pass (usage and overage count against it) */
  char holder_hex[TG_ADDRESS_HEX_LEN]; /* checksummed */
  uint64_t until;              /* entitlement end, Unix seconds */
  int64_t period_start;        /* ms: the quota window */
  int calls_held;              /* a call of a calls quota is reserved */
  int leased;                  /* the call is one of a quota lease's (durable already) */
  int overage;                 /* past the quota: admitted as postpaid */
  tg_u256 reserved;            /* overage: the call's maximum price, reserved */
  tg_u256 owed_before;         /* overage: what the holder owed at admission */
  uint64_t used_before;        /* quota used at admission (calls or tokens) */
} tg_passes_grant;

/*
 * Decides a call on `route` (and `model`) by `who`: 0 admitted (*g filled;
 * tg_passes_done or tg_passes_release must follow); TG_ENOTFOUND when no
 * plan covers the route; TG_EPASS_NOT_ENTITLED when no covering plan is live
 * for `who`; TG_EPASS_QUOTA when the quota is spent and the overage credit
 * cannot take `max_price`; or a chain error. `reason` says which plan and why.
 */
TG_WARN_UNUSED_RESULT int tg_passes_admit(tg_passes *p, const tg_config *cfg, const char *route,
                                          const char *model, const tg_address *who,
                                          const tg_u256 *max_price, tg_passes_grant *g,
                                          char *reason, size_t reason_len);
/*
 * Quota leases (calls quotas of at least 2 * TG_PASSES_LEASE_SHARE calls; docs/STORE.md "Pass
 * usage leases"): the store's counter is raised by a block of calls ahead of their use, so an
 * included call admitted on a lease (g->leased) writes nothing and waits for nothing. The next
 * block is written when half of the current one is used. A block starts at
 * TG_PASSES_LEASE_FIRST calls, doubles while blocks last less than TG_PASSES_LEASE_FAST_MS,
 * halves after a pause longer than TG_PASSES_LEASE_SLOW_MS, and is never more than
 * 1/TG_PASSES_LEASE_SHARE of the quota nor TG_PASSES_LEASE_MAX calls. A crash costs the holder
 * at most the unused part of its leases (under 1.5 blocks per pass, period and instance) of
 * included calls, never money.
 */
#define TG_PASSES_LEASE_FIRST 64
#define TG_PASSES_LEASE_MAX 4096
#define TG_PASSES_LEASE_SHARE 100
#define TG_PASSES_LEASE_FAST_MS 250
#define TG_PASSES_LEASE_SLOW_MS 2000

/* The call failed or its record did: nothing counted (a leased call goes back to its lease). */
void tg_passes_release(tg_passes *p, const tg_passes_grant *g);
/* The call's usage (and overage charge) is durable: counters after the store's op. */
void tg_passes_done(tg_passes *p, const tg_passes_grant *g, uint64_t calls_after,
                    uint64_t tokens_after, const tg_u256 *charged);
/* A leased call succeeded: its tokens are written with the next lease (no store write now). */
void tg_passes_done_leased(tg_passes *p, const tg_passes_grant *g, uint64_t tokens);
/* Gives the unused part of every lease back to the store and writes the tokens not yet
 * written (graceful stop: after the last call, before the store closes). Blocks. */
void tg_passes_return_leases(tg_passes *p);
/* What `holder` owes for overage (charged and durable). */
void tg_passes_owed(tg_passes *p, const tg_address *holder, tg_u256 *out);

/* For /metrics and the admin API. */
typedef struct {
  uint64_t nonces_issued, signins, signins_refused, sessions_cached;
  uint64_t passes_seen;        /* distinct (holder, plan) entitled answers cached */
  uint64_t entitlement_reads, entitlement_hits, invalidations;
  uint64_t admitted_included, admitted_overage, refused_not_entitled, refused_quota;
  uint64_t chain_time;
  uint64_t leases, lease_failures; /* quota lease writes */
  uint64_t leased_unused;      /* calls leased (durably counted) and not yet used, all passes */
} tg_passes_stats;
void tg_passes_stats_get(tg_passes *p, tg_passes_stats *out);

/* Current-period usage of each (plan, holder) known in memory (calls used: leased calls not yet
 * used are not counted); fn returns non-zero to stop. */
typedef int (*tg_passes_usage_fn)(void *arg, const tg_u256 *plan_id, const tg_address *holder,
                                  int64_t period_start, uint64_t calls, uint64_t tokens,
                                  uint64_t inflight);
void tg_passes_usage_each(tg_passes *p, tg_passes_usage_fn fn, void *arg);

#endif
