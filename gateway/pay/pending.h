/* Money of `exact` payers on its way: admitted transfers not yet known mined or dropped. */
#ifndef TG_PAY_PENDING_H
#define TG_PAY_PENDING_H

#include <stddef.h>
#include <stdint.h>

#include "tollgate/error.h"
#include "tollgate/types.h"

/*
 * The node's `latest` balance of a payer does not count the payer's own
 * transfers still in flight (admitted, signed, maybe submitted, not mined).
 * This table holds them, per payer (one token per gateway), keyed by the
 * authorization's nonce:
 *
 *   pending(payer) = sum of the values of its reservations
 *
 * and admits a new authorization only when, checked and reserved under one
 * mutex,
 *
 *   balance - pending(payer) - released_since_read(payer) >= value
 *
 * released_since_read is what was released for that payer after its balance
 * read started (tg_pending_read_begin): a read answered by the node before a
 * transfer was mined but taken here after the transfer's release would
 * otherwise count that value neither in the balance nor as pending. Counting
 * it is conservative: a read taken after the mining subtracts it twice, for a
 * moment (a transient insufficient_funds, never a free call).
 *
 * A reservation ends (tg_pending_release) when the call fails before its
 * transfer is submitted, when the submission fails, or when the transaction
 * manager knows the transfer's outcome (confirmed or failed). As a backstop
 * it lapses `grace` seconds after the authorization's validBefore: a transfer
 * cannot succeed after that, so the latest balance then holds its outcome.
 * Release is idempotent (by payer and nonce).
 *
 * Thread-safe (one mutex). Arithmetic is exact (256 bits); a sum that would
 * overflow refuses the reservation.
 */

typedef struct tg_pending tg_pending;

/* What a balance read started with (tg_pending_read_begin); ended exactly once. */
typedef struct {
  tg_address payer;
  tg_u256 released; /* the payer's released total when the read started (mod 2^256) */
  int active;
} tg_pending_mark;

typedef struct {
  size_t payers;       /* payers with a reservation or a read in progress */
  size_t reservations; /* reservations held */
  uint64_t refused;    /* reservations refused for funds (since creation) */
  uint64_t lapsed;     /* reservations that lapsed (validBefore + grace passed) */
} tg_pending_stats;

/* grace: seconds after validBefore when a reservation lapses (0: 600). */
TG_WARN_UNUSED_RESULT int tg_pending_new(tg_pending **out, uint64_t grace);
void tg_pending_free(tg_pending *t);

/* Before the payer's balance is read: remembers what was released so far. */
void tg_pending_read_begin(tg_pending *t, const tg_address *payer, tg_pending_mark *m);

/* A read that gave no balance (its error): ends the mark. */
void tg_pending_read_end(tg_pending *t, tg_pending_mark *m);

/*
 * The read's answer: 0 and a reservation of `value` under (payer, nonce)
 * when balance - pending - released since the mark >= value; TG_EPAY_FUNDS
 * otherwise (nothing reserved); TG_EEXISTS when (payer, nonce) is reserved
 * already. `now`: unix seconds (lapsed reservations are dropped first),
 * `valid_before` the authorization's. Ends the mark either way; `mark` NULL:
 * no read overlap to count.
 */
TG_WARN_UNUSED_RESULT int tg_pending_reserve(tg_pending *t, tg_pending_mark *m,
                                             const tg_address *payer, const tg_hash *nonce,
                                             const tg_u256 *value, const tg_u256 *balance,
                                             uint64_t valid_before, uint64_t now);

/* The same check without reserving (a facilitator's /verify). Ends the mark. */
TG_WARN_UNUSED_RESULT int tg_pending_check(tg_pending *t, tg_pending_mark *m,
                                           const tg_address *payer, const tg_u256 *value,
                                           const tg_u256 *balance, uint64_t now);

/*
 * Holds `value` under (payer, nonce) without a balance check: an
 * authorization the store says is ours already (a run crashed after
 * recording its intent). 0, or TG_EEXISTS when it is held already.
 */
int tg_pending_hold(tg_pending *t, const tg_address *payer, const tg_hash *nonce,
                    const tg_u256 *value, uint64_t valid_before);

/* Ends the reservation of (payer, nonce): 1 when one was held, 0 when none was. */
int tg_pending_release(tg_pending *t, const tg_address *payer, const tg_hash *nonce);

/* The payer's pending sum (0 when none). */
void tg_pending_get(tg_pending *t, const tg_address *payer, tg_u256 *out);

void tg_pending_stats_get(tg_pending *t, tg_pending_stats *out);

#endif
