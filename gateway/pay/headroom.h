/*
 * Headroom leases: an instance's slices of a channel's free headroom, held in
 * the shared store as holds of its own, so that a paid call is admitted with no
 * store round trip (docs/STORE.md, "Headroom leases"). PostgreSQL only (several
 * instances); with SQLite the ledger alone admits and this is not used.
 */
#ifndef TG_PAY_HEADROOM_H
#define TG_PAY_HEADROOM_H

#include <stddef.h>
#include <stdint.h>

#include "store/store.h"
#include "tollgate/types.h"

typedef struct tg_headroom tg_headroom;

#define TG_HEADROOM_ID_MAX 80    /* a unit's hold id, NUL included */
#define TG_HEADROOM_SLICE_MAX 64 /* units per slice */

/* ttl_ms: a unit's hold lapses after this (the store's expiry); it is used for half of it. */
int tg_headroom_new(tg_headroom **out, tg_store *st, const char *instance, int64_t ttl_ms);

/* Gives every unused unit back (one synchronous write) and frees. The store must be open. */
void tg_headroom_free(tg_headroom *h);

/*
 * Admission: takes a unit of `channel` covering `max`. Returns 1 and copies the unit's
 * hold id and amount, or 0 (no unit: the caller takes a per-call hold).
 */
int tg_headroom_take(tg_headroom *h, const tg_hash *channel, const tg_u256 *max,
                     char id[TG_HEADROOM_ID_MAX], tg_u256 *amount);

/* A unit whose call made no charge (failed upstream) goes back to its pool, unused. */
void tg_headroom_put_back(tg_headroom *h, const tg_hash *channel, const char *id,
                          const tg_u256 *amount);

/*
 * What the store said of the channel after a committed charge or hold: charged, reserved,
 * ceiling, balance, withdrawal, the payer's credit limit; `unit_lost` when a unit-backed
 * charge found its hold gone (reclaimed). Drops the pool (giving its units back) when the
 * channel no longer leaves room for it.
 */
void tg_headroom_observe(tg_headroom *h, const tg_hash *channel, const tg_u256 *charged,
                         const tg_u256 *reserved, const tg_u256 *ceiling, const tg_u256 *balance,
                         uint64_t withdraw_requested_at, const tg_u256 *credit, int unit_lost);

/* Drops a channel's pool and gives its units back (a failed charge, a refusal). */
void tg_headroom_drop(tg_headroom *h, const tg_hash *channel);

/*
 * At a charge: when the channel's next slice is due, fills `ops` (at most
 * TG_HEADROOM_SLICE_MAX RESERVE ops of `unit` each) and returns their count with *ticket
 * set; the caller submits them (with its charge, tg_store_submit_pair) with
 * tg_headroom_slice_done as callback and *ticket as argument, or calls
 * tg_headroom_slice_done(*ticket, TG_EBUSY, NULL, 0) when it could not. 0: nothing due.
 */
size_t tg_headroom_slice_ops(tg_headroom *h, const tg_hash *channel, const tg_u256 *unit,
                             const tg_u256 *credit, tg_store_op *ops, void **ticket);
void tg_headroom_slice_done(void *ticket, int err, const tg_store_op *ops, size_t n);

typedef struct {
  uint64_t slices, slices_refused, units_taken, units_given_back, pools_dropped;
  uint64_t units_free; /* now, all channels */
} tg_headroom_stats;
void tg_headroom_stats_get(tg_headroom *h, tg_headroom_stats *out);

#endif
