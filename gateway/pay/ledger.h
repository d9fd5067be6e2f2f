/* The channel ledger: in-memory channel accounting with reservations, shared by all workers. */
#ifndef TG_PAY_LEDGER_H
#define TG_PAY_LEDGER_H

#include <stddef.h>
#include <stdint.h>

#include "tollgate/types.h"
#include "tollgate/x402.h"

/*
 * Per channel the ledger holds what admission needs without any I/O:
 *
 *   balance, total_claimed, withdraw_requested_at   mirrored from the chain
 *   ceiling + its voucher signature                  the highest voucher seen
 *   charged                                          cumulative charged (the store's truth)
 *   reserved                                         maximum prices of calls in flight
 *
 * The money invariant, checked under the channel's lock at every admission:
 *
 *   charged + reserved + max_price <= min(ceiling, balance) + credit_limit
 *
 * The ledger is not durable: `charged` comes from the store at start, and a
 * charge is added here only together with a store commit that carries the
 * covering voucher (tg_ledger_charge returns it). If that commit fails the
 * caller takes the charge back with tg_ledger_uncharge.
 *
 * Thread-safe: channels are spread over shards, each with its own mutex.
 */

typedef struct tg_ledger tg_ledger;

typedef enum {
  TG_LEDGER_OPEN = 0,
  TG_LEDGER_WITHDRAWING = 1, /* the payer started a timed withdrawal: no new calls */
  TG_LEDGER_CLOSED = 2,
} tg_ledger_status;

/* A snapshot of one channel (also the shape used to load it). */
typedef struct {
  tg_hash id;
  tg_channel_config config;
  tg_u256 balance;
  tg_u256 total_claimed;
  uint64_t withdraw_requested_at;
  tg_u256 ceiling;
  tg_x402_sig ceiling_sig;
  tg_u256 charged;
  tg_u256 reserved;
  tg_ledger_status status;
} tg_ledger_channel;

/* One admitted call's hold on a channel. */
typedef struct {
  tg_hash channel_id;
  tg_u256 max_price;
  int active;
} tg_ledger_hold;

/* What a charge must persist: the covering voucher and the new total. */
typedef struct {
  tg_hash channel_id;
  tg_u256 price;        /* what this call is charged (<= its max price) */
  tg_u256 charged;      /* the channel's cumulative charge after this call */
  tg_u256 ceiling;      /* the highest voucher, to be stored with the charge */
  tg_x402_sig ceiling_sig;
  tg_u256 balance;      /* for PAYMENT-RESPONSE's channelState */
  tg_u256 total_claimed;
  uint64_t withdraw_requested_at;
} tg_ledger_charge_plan;

tg_ledger *tg_ledger_new(void);
void tg_ledger_free(tg_ledger *l);

/*
 * Loads or refreshes a channel. Mirrored on-chain fields and the config are
 * taken as given; `ceiling` and `charged` only ever rise (a stale snapshot
 * cannot lower them); `reserved` of the argument is ignored.
 */
TG_WARN_UNUSED_RESULT int tg_ledger_put(tg_ledger *l, const tg_ledger_channel *c);

/* Updates the mirrored chain state of a known channel (TG_ENOTFOUND otherwise). */
TG_WARN_UNUSED_RESULT int tg_ledger_mirror(tg_ledger *l, const tg_hash *id, const tg_u256 *balance,
                                           const tg_u256 *total_claimed,
                                           uint64_t withdraw_requested_at);

/*
 * A cooperative refund starts: under the channel's lock, *amount gets what
 * can go back to the payer, balance - max(charged + reserved, total_claimed)
 * (what the gateway charged, even unclaimed, and what calls in flight may
 * charge stay), and the channel stops admitting calls (it reads as
 * withdrawing) until the next mirror of its on-chain state.
 * TG_ECHANNEL_SHORT when nothing can be refunded, TG_ECHANNEL_WITHDRAWING
 * when a withdrawal or refund is under way.
 */
TG_WARN_UNUSED_RESULT int tg_ledger_refund_begin(tg_ledger *l, const tg_hash *id, tg_u256 *amount,
                                                 uint64_t now);

/* A copy of a channel's state (TG_ENOTFOUND when unknown). */
TG_WARN_UNUSED_RESULT int tg_ledger_get(tg_ledger *l, const tg_hash *id, tg_ledger_channel *out);

/*
 * Admission. `ceiling`/`sig` is the voucher the payer sent with this call,
 * already verified by the caller (signature and channel id); it raises the
 * channel's ceiling when higher. Reserves `max_price` when the invariant
 * holds. Errors: TG_ECHANNEL_UNKNOWN, TG_ECHANNEL_WITHDRAWING,
 * TG_ECHANNEL_SHORT (then *snapshot, when non-NULL, holds the channel state
 * for a corrective 402).
 */
TG_WARN_UNUSED_RESULT int tg_ledger_reserve(tg_ledger *l, tg_ledger_hold *hold,
                                            tg_ledger_channel *snapshot, const tg_hash *id,
                                            const tg_u256 *ceiling, const tg_x402_sig *sig,
                                            const tg_u256 *max_price,
                                            const tg_u256 *credit_limit);

/*
 * Completion of a successful call: charges min(price, max price), releases
 * the hold, and fills *plan with what must be persisted.
 */
TG_WARN_UNUSED_RESULT int tg_ledger_charge(tg_ledger *l, tg_ledger_charge_plan *plan,
                                           tg_ledger_hold *hold, const tg_u256 *price);

/* Takes back a charge whose commit failed. */
void tg_ledger_uncharge(tg_ledger *l, const tg_ledger_charge_plan *plan);

/* Completion of a failed call: releases the hold, charges nothing. */
void tg_ledger_release(tg_ledger *l, tg_ledger_hold *hold);

/* Number of channels held. */
size_t tg_ledger_count(tg_ledger *l);

#endif
