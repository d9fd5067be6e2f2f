/* Store scenarios shared by the SQLite and PostgreSQL tests: every op and constraint, reads, close, 64 producers, callbacks, evbase delivery. */
#ifndef TG_STORE_CHECKS_H
#define TG_STORE_CHECKS_H

/*
 * Included by test_store.c and test_store_pg.c, which define before including it:
 *   static tg_store *open_fresh(char *path, size_t pcap);  a fresh store; `path` names it
 *   static void uri_of(const char *path, char *uri, size_t cap);  the URI to reopen it
 * and include tg_test.h, store.h, store_int.h, u256.h, pthread, stdatomic, libevent.
 */

static tg_address addr(uint8_t v) {
  tg_address a;
  memset(a.b, v, sizeof(a.b));
  return a;
}

static tg_hash hash(uint8_t v) {
  tg_hash h;
  memset(h.b, 0, sizeof(h.b));
  h.b[0] = 0xc0;
  h.b[31] = v;
  return h;
}

static tg_u256 u(uint64_t v) {
  tg_u256 x;
  tg_u256_from_u64(&x, v);
  return x;
}

static uint64_t u64(const tg_u256 *x) {
  uint64_t v = 0;
  if (tg_u256_to_u64(x, &v) < 0) return UINT64_MAX;
  return v;
}

static tg_store_op channel_put(uint8_t id, uint8_t payer, uint64_t balance, uint64_t block) {
  tg_store_op op;
  memset(&op, 0, sizeof(op));
  op.kind = TG_STORE_OP_CHANNEL_PUT;
  op.u.channel.id = hash(id);
  op.u.channel.cfg.chain_id = 31337;
  op.u.channel.cfg.contract = addr(0xcc);
  op.u.channel.cfg.payer = addr(payer);
  op.u.channel.cfg.payer_authorizer = addr(payer);
  op.u.channel.cfg.receiver = addr(0xee);
  op.u.channel.cfg.receiver_authorizer = addr(0xee);
  op.u.channel.cfg.token = addr(0x70);
  op.u.channel.cfg.withdraw_delay = 86400;
  op.u.channel.cfg.salt = hash(0x5a);
  op.u.channel.chain.balance = u(balance);
  op.u.channel.chain.synced_block = block;
  return op;
}

/* Signature bytes for vouchers: 256 distinct 65-byte patterns, alive for the whole run. */
static uint8_t sigs[256][65];

static tg_store_op voucher(uint8_t id, uint64_t max, uint8_t sigbyte) {
  tg_store_op op;
  memset(&op, 0, sizeof(op));
  op.kind = TG_STORE_OP_VOUCHER;
  op.u.voucher.channel_id = hash(id);
  op.u.voucher.max_claimable = u(max);
  memset(sigs[sigbyte], sigbyte, 65);
  op.u.voucher.sig = TG_BYTES(sigs[sigbyte], 65);
  return op;
}

static tg_store_op charge(const char *req, uint8_t payer, int chan, uint64_t amount,
                          uint64_t credit) {
  tg_store_op op;
  memset(&op, 0, sizeof(op));
  op.kind = TG_STORE_OP_CHARGE;
  op.u.charge.request_id = req;
  op.u.charge.payer = addr(payer);
  op.u.charge.scheme = chan >= 0 ? TG_SCHEME_CHANNEL : TG_SCHEME_EXACT;
  op.u.charge.route = "chat";
  op.u.charge.model = "gpt-test";
  op.u.charge.input_tokens = 10;
  op.u.charge.output_tokens = 20;
  op.u.charge.amount = u(amount);
  if (chan >= 0) {
    op.u.charge.has_channel = 1;
    op.u.charge.channel_id = hash((uint8_t)chan);
  }
  op.u.charge.credit_limit = u(credit);
  return op;
}

/* A store with channel 1 (payer 0xa1) holding a voucher for `ceiling`. */
static tg_store *store_with_channel(char *path, size_t pcap, uint64_t ceiling) {
  tg_store *st = open_fresh(path, pcap);
  if (!st) return NULL;
  tg_store_op ops[2] = {channel_put(1, 0xa1, 1000000, 10), voucher(1, ceiling, 0x11)};
  CHECK_OK(tg_store_write(st, ops, 2));
  return st;
}

typedef struct {
  atomic_int done;
  atomic_int ok;
  atomic_int failed;
  int last_err;
} counter;

static void count_cb(void *arg, int err, const tg_store_op *ops, size_t n) {
  (void)ops;
  (void)n;
  counter *c = arg;
  if (err == 0) atomic_fetch_add(&c->ok, 1);
  else {
    atomic_fetch_add(&c->failed, 1);
    c->last_err = err;
  }
  atomic_fetch_add(&c->done, 1);
}

static void wait_done(counter *c, int n) {
  for (int i = 0; i < 20000 && atomic_load(&c->done) < n; i++) usleep(1000);
}


static void test_channel_put_sync(void) {
  char path[256];
  tg_store *st = open_fresh(path, sizeof(path));
  if (!st) return;
  tg_store_channel ch;
  tg_hash id1 = hash(1);
  CHECK_ERR(tg_store_channel_get(st, &id1, &ch), TG_ENOTFOUND);
  tg_store_op op = channel_put(1, 0xa1, 500, 10);
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_INT(op.u.channel.out_applied, 1);
  CHECK_OK(tg_store_channel_get(st, &id1, &ch));
  CHECK_MEM(ch.id.b, id1.b, 32);
  CHECK_INT(ch.cfg.chain_id, 31337);
  CHECK(ch.cfg.payer.b[0] == 0xa1 && ch.cfg.receiver.b[19] == 0xee && ch.cfg.token.b[3] == 0x70);
  CHECK_INT(ch.cfg.withdraw_delay, 86400);
  CHECK_INT(u64(&ch.chain.balance), 500);
  CHECK_INT(ch.chain.synced_block, 10);
  CHECK_INT(ch.chain.status, TG_CHANNEL_OPEN);
  CHECK(tg_u256_is_zero(&ch.charged) && tg_u256_is_zero(&ch.ceiling) && !ch.ceiling_sig_len);
  CHECK(ch.created_at > 1600000000000LL);

  /* Same config, newer mirror: applied. */
  op = channel_put(1, 0xa1, 800, 12);
  op.u.channel.chain.withdraw_requested_at = 1700000000;
  op.u.channel.chain.refund_nonce = 3;
  op.u.channel.chain.status = TG_CHANNEL_WITHDRAWING;
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_INT(op.u.channel.out_applied, 1);
  CHECK_OK(tg_store_channel_get(st, &id1, &ch));
  CHECK_INT(u64(&ch.chain.balance), 800);
  CHECK_INT(ch.chain.withdraw_requested_at, 1700000000);
  CHECK_INT(ch.chain.refund_nonce, 3);
  CHECK_INT(ch.chain.status, TG_CHANNEL_WITHDRAWING);

  /* An older mirror is ignored (events replayed out of order). */
  op = channel_put(1, 0xa1, 1, 11);
  op.kind = TG_STORE_OP_CHANNEL_SYNC;
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_INT(op.u.channel.out_applied, 0);
  CHECK_OK(tg_store_channel_get(st, &id1, &ch));
  CHECK_INT(u64(&ch.chain.balance), 800);

  /* The configuration is immutable. */
  op = channel_put(1, 0xa2, 800, 13);
  CHECK_ERR(tg_store_write(st, &op, 1), TG_ESTORE_CONSTRAINT);
  CHECK_ERR(op.err, TG_ESTORE_CONSTRAINT);
  /* Sync of an unknown channel. */
  op = channel_put(9, 0xa1, 1, 1);
  op.kind = TG_STORE_OP_CHANNEL_SYNC;
  CHECK_ERR(tg_store_write(st, &op, 1), TG_ENOTFOUND);

  /* Closed stays closed even if a stale-status mirror arrives. */
  op = channel_put(1, 0xa1, 0, 20);
  op.u.channel.chain.status = TG_CHANNEL_CLOSED;
  CHECK_OK(tg_store_write(st, &op, 1));
  op = channel_put(1, 0xa1, 0, 21);
  op.u.channel.chain.status = TG_CHANNEL_OPEN;
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_OK(tg_store_channel_get(st, &id1, &ch));
  CHECK_INT(ch.chain.status, TG_CHANNEL_CLOSED);
  tg_store_close(st);
}

static void test_voucher_monotonic(void) {
  char path[256];
  tg_store *st = open_fresh(path, sizeof(path));
  if (!st) return;
  tg_store_op op = channel_put(1, 0xa1, 1000, 1);
  CHECK_OK(tg_store_write(st, &op, 1));
  tg_hash id = hash(1);
  tg_store_channel ch;

  op = voucher(1, 100, 0x11);
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_INT(op.u.voucher.out_raised, 1);
  op = voucher(1, 50, 0x22); /* lower: no-op */
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_INT(op.u.voucher.out_raised, 0);
  op = voucher(1, 100, 0x33); /* equal: no-op */
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_INT(op.u.voucher.out_raised, 0);
  CHECK_OK(tg_store_channel_get(st, &id, &ch));
  CHECK_INT(u64(&ch.ceiling), 100);
  CHECK(ch.ceiling_sig_len == 65 && ch.ceiling_sig[0] == 0x11 && ch.ceiling_sig[64] == 0x11);

  op = voucher(1, 250, 0x44);
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_INT(op.u.voucher.out_raised, 1);
  CHECK_OK(tg_store_channel_get(st, &id, &ch));
  CHECK_INT(u64(&ch.ceiling), 250);
  CHECK(ch.ceiling_sig[10] == 0x44);

  /* An ERC-1271 wallet's signature may be longer than 65 bytes; the store keeps it whole. */
  uint8_t *long_sig = malloc(TG_STORE_SIG_MAX + 1);
  for (int i = 0; i <= TG_STORE_SIG_MAX; i++) long_sig[i] = (uint8_t)i;
  op = voucher(1, 260, 0);
  op.u.voucher.sig = TG_BYTES(long_sig, 300);
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_OK(tg_store_channel_get(st, &id, &ch));
  CHECK_INT(ch.ceiling_sig_len, 300);
  CHECK_MEM(ch.ceiling_sig, long_sig, 300);
  op = voucher(1, 270, 0);
  op.u.voucher.sig = TG_BYTES(long_sig, TG_STORE_SIG_MAX + 1);
  CHECK_ERR(tg_store_write(st, &op, 1), TG_ETOOBIG);
  op.u.voucher.sig = TG_BYTES(long_sig, 0);
  CHECK_ERR(tg_store_write(st, &op, 1), TG_EINVAL);
  free(long_sig);

  /* A 256-bit ceiling is kept exactly. */
  op = voucher(1, 0, 0x55);
  memset(op.u.voucher.max_claimable.b, 0xff, 32);
  op.u.voucher.max_claimable.b[31] = 0xfe;
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_OK(tg_store_channel_get(st, &id, &ch));
  CHECK_MEM(ch.ceiling.b, op.u.voucher.max_claimable.b, 32);

  op = voucher(7, 1, 0);
  CHECK_ERR(tg_store_write(st, &op, 1), TG_ENOTFOUND);
  tg_store_close(st);
}

static void test_charge_ceiling(void) {
  char path[256];
  tg_store *st = store_with_channel(path, sizeof(path), 100);
  if (!st) return;
  tg_hash id = hash(1);
  tg_store_channel ch;
  tg_store_op op = charge("r1", 0xa1, 1, 60, 0);
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK(op.u.charge.out_id > 0);
  CHECK_INT(u64(&op.u.charge.out_charged), 60);
  op = charge("r2", 0xa1, 1, 41, 0); /* 101 > 100 */
  CHECK_ERR(tg_store_write(st, &op, 1), TG_ESTORE_LIMIT);
  op = charge("r2", 0xa1, 1, 40, 0); /* exactly the ceiling */
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_INT(u64(&op.u.charge.out_charged), 100);
  op = charge("r3", 0xa1, 1, 1, 0);
  CHECK_ERR(tg_store_write(st, &op, 1), TG_ESTORE_LIMIT);
  /* A credit limit lets charges run ahead of the voucher (postpaid). */
  op = charge("r3", 0xa1, 1, 20, 20);
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_INT(u64(&op.u.charge.out_charged), 120);
  op = charge("r4", 0xa1, 1, 1, 20);
  CHECK_ERR(tg_store_write(st, &op, 1), TG_ESTORE_LIMIT);
  CHECK_OK(tg_store_channel_get(st, &id, &ch));
  CHECK_INT(u64(&ch.charged), 120);
  CHECK_INT(u64(&ch.credit_limit), 20);
  CHECK_INT(ch.charge_count, 3);
  CHECK(ch.first_unclaimed_at > 0);
  /* A new voucher raises the room again. */
  op = voucher(1, 200, 0x12);
  CHECK_OK(tg_store_write(st, &op, 1));
  op = charge("r4", 0xa1, 1, 100, 20);
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_INT(u64(&op.u.charge.out_charged), 220);

  /* An amount that would overflow 256 bits is a refusal, not a wrap. */
  op = charge("r5", 0xa1, 1, 0, 0);
  memset(op.u.charge.amount.b, 0xff, 32);
  memset(op.u.charge.credit_limit.b, 0xff, 32);
  CHECK_ERR(tg_store_write(st, &op, 1), TG_ESTORE_LIMIT);
  /* Wrong payer, unknown channel. */
  op = charge("r6", 0xa2, 1, 1, 1000);
  CHECK_ERR(tg_store_write(st, &op, 1), TG_ESTORE_CONSTRAINT);
  op = charge("r6", 0xa1, 9, 1, 1000);
  CHECK_ERR(tg_store_write(st, &op, 1), TG_ENOTFOUND);
  /* A closed channel takes no charge. */
  op = channel_put(1, 0xa1, 0, 99);
  op.u.channel.chain.status = TG_CHANNEL_CLOSED;
  CHECK_OK(tg_store_write(st, &op, 1));
  op = charge("r6", 0xa1, 1, 1, 1000);
  CHECK_ERR(tg_store_write(st, &op, 1), TG_ESTORE_CHANNEL_CLOSED);
  op = voucher(1, 300, 0x13);
  CHECK_ERR(tg_store_write(st, &op, 1), TG_ESTORE_CHANNEL_CLOSED);

  CHECK_OK(tg_store_channel_get(st, &id, &ch));
  CHECK_INT(u64(&ch.charged), 220);
  CHECK_INT(ch.charge_count, 4);
  tg_store_charge c;
  CHECK_OK(tg_store_charge_get(st, "r4", &c));
  CHECK_INT(u64(&c.amount), 100);
  CHECK_INT(u64(&c.cumulative_after), 220);
  CHECK_STR(c.route, "chat");
  CHECK_STR(c.model, "gpt-test");
  CHECK_INT(c.input_tokens, 10);
  CHECK_INT(c.output_tokens, 20);
  CHECK(c.has_channel && c.scheme == TG_SCHEME_CHANNEL && !c.settled);
  CHECK_ERR(tg_store_charge_get(st, "r5", &c), TG_ENOTFOUND);
  tg_store_close(st);
}

/* A submission is all-or-nothing, and a failing one does not affect its batch neighbours. */
static void test_submission_atomic(void) {
  char path[256];
  tg_store *st = store_with_channel(path, sizeof(path), 1000);
  if (!st) return;
  tg_store_op op = charge("dup", 0xa1, 1, 5, 0);
  CHECK_OK(tg_store_write(st, &op, 1));
  tg_store_op ops[2] = {charge("fresh", 0xa1, 1, 7, 0), charge("dup", 0xa1, 1, 9, 0)};
  CHECK_ERR(tg_store_write(st, ops, 2), TG_EEXISTS);
  CHECK_OK(ops[0].err);
  CHECK_ERR(ops[1].err, TG_EEXISTS);
  tg_store_charge c;
  CHECK_ERR(tg_store_charge_get(st, "fresh", &c), TG_ENOTFOUND);
  tg_store_channel ch;
  tg_hash id = hash(1);
  CHECK_OK(tg_store_channel_get(st, &id, &ch));
  CHECK_INT(u64(&ch.charged), 5); /* the duplicate raised nothing */
  CHECK_INT(ch.charge_count, 1);
  tg_store_totals t;
  tg_address payer = addr(0xa1);
  CHECK_OK(tg_store_totals_get(st, &payer, TG_SCHEME_CHANNEL, &t));
  CHECK_INT(u64(&t.charged), 5);
  CHECK_INT(t.count, 1);
  tg_store_close(st);
}

static void test_validation(void) {
  char path[256];
  tg_store *st = store_with_channel(path, sizeof(path), 1000);
  if (!st) return;
  char big[300];
  memset(big, 'x', sizeof(big) - 1);
  big[sizeof(big) - 1] = 0;
  tg_store_op op = charge(big, 0xa1, 1, 1, 0);
  CHECK_ERR(tg_store_write(st, &op, 1), TG_ETOOBIG);
  op = charge("", 0xa1, 1, 1, 0);
  CHECK_ERR(tg_store_write(st, &op, 1), TG_EINVAL);
  op = charge(NULL, 0xa1, 1, 1, 0);
  CHECK_ERR(tg_store_write(st, &op, 1), TG_EINVAL);
  op = charge("ok", 0xa1, 1, 1, 0);
  op.u.charge.model = big;
  CHECK_ERR(tg_store_write(st, &op, 1), TG_ETOOBIG);
  op = charge("ok", 0xa1, 1, 1, 0);
  op.u.charge.has_channel = 0; /* channel scheme without a channel */
  CHECK_ERR(tg_store_write(st, &op, 1), TG_EINVAL);
  op = charge("ok", 0xa1, 1, 1, 0);
  op.u.charge.scheme = (tg_store_scheme)7;
  CHECK_ERR(tg_store_write(st, &op, 1), TG_EINVAL);
  op = charge("ok", 0xa1, 1, 1, 0);
  op.u.charge.input_tokens = UINT64_MAX;
  CHECK_ERR(tg_store_write(st, &op, 1), TG_ERANGE);
  op.kind = (tg_store_op_kind)999;
  CHECK_ERR(tg_store_write(st, &op, 1), TG_EINVAL);
  CHECK_ERR(tg_store_write(st, &op, 0), TG_EINVAL);
  static tg_store_op many[TG_STORE_SUBMIT_MAX_OPS + 1];
  CHECK_ERR(tg_store_write(st, many, TG_STORE_SUBMIT_MAX_OPS + 1), TG_ETOOBIG);
  tg_store_stats stats;
  tg_store_get_stats(st, &stats);
  CHECK_INT(stats.queue_ops, 0);
  tg_store_close(st);
}

typedef struct {
  tg_store_exact rows[4];
  size_t n, stop_after;
} exact_list_ctx;

static int exact_list_cb(void *arg, const tg_store_exact *e) {
  exact_list_ctx *x = arg;
  if (x->n < 4) x->rows[x->n] = *e;
  x->n++;
  return x->stop_after && x->n >= x->stop_after ? 7 : 0;
}

static void test_exact(void) {
  char path[256];
  tg_store *st = open_fresh(path, sizeof(path));
  if (!st) return;
  tg_store_op ops[2];
  memset(ops, 0, sizeof(ops));
  ops[0] = charge("ex-1", 0xb1, -1, 1500, 0);
  ops[1].kind = TG_STORE_OP_EXACT_PUT;
  tg_store_op_exact *e = &ops[1].u.exact;
  e->token = addr(0x70);
  e->nonce = hash(0x42);
  e->payer = addr(0xb1);
  e->to = addr(0xee);
  e->amount = u(1500);
  e->valid_after = 100;
  e->valid_before = 200;
  e->request_id = "ex-1";
  e->status = TG_EXACT_VERIFIED;
  CHECK_OK(tg_store_write(st, ops, 2));

  /* The same authorization again (a replay) is refused, even for another request. */
  tg_store_op replay = ops[1];
  replay.u.exact.request_id = "ex-2";
  CHECK_ERR(tg_store_write(st, &replay, 1), TG_EEXISTS);
  /* Same nonce on another token is another authorization. */
  replay.u.exact.token = addr(0x71);
  CHECK_OK(tg_store_write(st, &replay, 1));
  /* So is the same nonce from another payer on the same token: EIP-3009's
   * authorizationState is per authorizer (schema 5). */
  tg_store_op other = ops[1];
  other.u.exact.payer = addr(0xb2);
  other.u.exact.request_id = "ex-3";
  other.u.exact.amount = u(7);
  CHECK_OK(tg_store_write(st, &other, 1));
  CHECK_ERR(tg_store_write(st, &other, 1), TG_EEXISTS);

  tg_store_exact got;
  tg_address tok = addr(0x70);
  tg_hash nonce = hash(0x42);
  tg_address payer = addr(0xb1), payer2 = addr(0xb2), nobody = addr(0xb3);
  CHECK_OK(tg_store_exact_get(st, &tok, &payer2, &nonce, &got));
  CHECK_INT(u64(&got.amount), 7);
  CHECK_STR(got.request_id, "ex-3");
  CHECK_ERR(tg_store_exact_get(st, &tok, &nobody, &nonce, &got), TG_ENOTFOUND);
  CHECK_OK(tg_store_exact_get(st, &tok, &payer, &nonce, &got));
  CHECK_INT(got.status, TG_EXACT_VERIFIED);
  CHECK_INT(u64(&got.amount), 1500);
  CHECK_INT(got.valid_after, 100);
  CHECK_INT(got.valid_before, 200);
  CHECK_STR(got.request_id, "ex-1");
  CHECK(!got.has_tx);

  tg_store_op upd;
  memset(&upd, 0, sizeof(upd));
  upd.kind = TG_STORE_OP_EXACT_UPDATE;
  upd.u.exact.token = tok;
  upd.u.exact.payer = payer;
  upd.u.exact.nonce = nonce;
  /* A receipt's outcome does not move a row still `verified` (not charged yet: the payment
   * layer finishes it, or a retry resumes it): TG_ENOTFOUND, the row unchanged. */
  upd.u.exact.status = TG_EXACT_CONFIRMED;
  upd.u.exact.has_tx = 1;
  upd.u.exact.tx_hash = hash(0x99);
  upd.u.exact.receipt = 1;
  CHECK_ERR(tg_store_write(st, &upd, 1), TG_ENOTFOUND);
  CHECK_OK(tg_store_exact_get(st, &tok, &payer, &nonce, &got));
  CHECK_INT(got.status, TG_EXACT_VERIFIED);
  CHECK(!got.has_tx);
  upd.u.exact.receipt = 0;
  upd.u.exact.status = TG_EXACT_SUBMITTED;
  CHECK_OK(tg_store_write(st, &upd, 1));
  upd.u.exact.status = TG_EXACT_CONFIRMED;
  upd.u.exact.has_tx = 0; /* keeps the stored hash */
  upd.u.exact.receipt = 1; /* the receipt's outcome: the row is `submitted`, so it moves */
  CHECK_OK(tg_store_write(st, &upd, 1));
  upd.u.exact.receipt = 0;
  CHECK_OK(tg_store_exact_get(st, &tok, &payer, &nonce, &got));
  CHECK_INT(got.status, TG_EXACT_CONFIRMED);
  CHECK(got.has_tx && got.tx_hash.b[31] == 0x99);
  /* A late `submitted` of the same transaction (the payment layer's, racing the receipt's
   * writer) does not undo the outcome; the row is still found (no TG_ENOTFOUND). */
  upd.u.exact.status = TG_EXACT_SUBMITTED;
  upd.u.exact.has_tx = 1;
  CHECK_OK(tg_store_write(st, &upd, 1));
  CHECK_OK(tg_store_exact_get(st, &tok, &payer, &nonce, &got));
  CHECK_INT(got.status, TG_EXACT_CONFIRMED);
  upd.u.exact.status = TG_EXACT_CONFIRMED;
  upd.u.exact.has_tx = 0;
  /* The other payer's row with the same nonce was not touched. */
  CHECK_OK(tg_store_exact_get(st, &tok, &payer2, &nonce, &got));
  CHECK_INT(got.status, TG_EXACT_VERIFIED);
  CHECK(!got.has_tx);
  upd.u.exact.payer = nobody; /* an update names the payer's row: none for this one */
  CHECK_ERR(tg_store_write(st, &upd, 1), TG_ENOTFOUND);
  upd.u.exact.payer = payer;
  tg_store_charge c;
  CHECK_OK(tg_store_charge_get(st, "ex-1", &c));
  CHECK(c.settled && !c.has_channel && c.scheme == TG_SCHEME_EXACT);
  upd.u.exact.nonce = hash(0x43);
  CHECK_ERR(tg_store_write(st, &upd, 1), TG_ENOTFOUND);
  nonce = hash(0x43);
  CHECK_ERR(tg_store_exact_get(st, &tok, &payer, &nonce, &got), TG_ENOTFOUND);

  /* The list: the three authorizations, oldest first (rows of the same millisecond by token,
   * payer, nonce), with status and transaction; a callback's non-zero return stops it and is
   * returned. */
  exact_list_ctx lx;
  memset(&lx, 0, sizeof(lx));
  CHECK_OK(tg_store_exact_list(st, exact_list_cb, &lx));
  CHECK_INT(lx.n, 3);
  int seen = 0;
  for (size_t i = 0; i < lx.n && i < 4; i++) {
    const tg_store_exact *r = &lx.rows[i];
    if (i && r->created_at < lx.rows[i - 1].created_at) seen |= 8; /* out of order */
    if (!strcmp(r->request_id, "ex-1") && r->token.b[19] == 0x70 && r->payer.b[19] == 0xb1 &&
        r->status == TG_EXACT_CONFIRMED && r->has_tx && r->tx_hash.b[31] == 0x99 &&
        u64(&r->amount) == 1500 && r->to.b[19] == 0xee)
      seen |= 1;
    if (!strcmp(r->request_id, "ex-2") && r->token.b[19] == 0x71 && r->status == TG_EXACT_VERIFIED &&
        !r->has_tx)
      seen |= 2;
    if (!strcmp(r->request_id, "ex-3") && r->payer.b[19] == 0xb2 && u64(&r->amount) == 7)
      seen |= 4;
  }
  CHECK_INT(seen, 7);
  memset(&lx, 0, sizeof(lx));
  lx.stop_after = 1;
  CHECK_INT(tg_store_exact_list(st, exact_list_cb, &lx), 7);
  CHECK_INT(lx.n, 1);
  tg_store_close(st);
}

/*
 * Upgrading a schema-2 database (exact payments keyed by (token, nonce)) to the latest (migration 5:
 * (token, payer, nonce)): `exact_v2_row_sql` writes the INSERT of a row as schema 2 held
 * it (pg: bytea literals, else SQLite blob literals), `exact_v3_checks` runs on the
 * migrated store.
 */
static void hexlit(char *out, int is_pg, const uint8_t *b, size_t n) {
  out += sprintf(out, is_pg ? "'\\x" : "X'");
  for (size_t i = 0; i < n; i++) out += sprintf(out, "%02x", b[i]);
  sprintf(out, is_pg ? "'::bytea" : "'");
}

static void exact_v2_row_sql(char *out, size_t cap, int is_pg) {
  tg_address tok = addr(0x70), payer = addr(0xb1), to = addr(0xee);
  tg_hash nonce = hash(0x42);
  tg_u256 amount = u(1500);
  char t[80], pa[80], n[100], a[100], h[100];
  hexlit(t, is_pg, tok.b, 20);
  hexlit(pa, is_pg, payer.b, 20);
  hexlit(n, is_pg, nonce.b, 32);
  hexlit(a, is_pg, amount.b, 32);
  hexlit(h, is_pg, to.b, 20);
  snprintf(out, cap,
           "INSERT INTO exact_payments (token, nonce, payer, to_addr, amount, valid_after, "
           "valid_before, tx_hash, status, request_id, created_at, updated_at) VALUES "
           "(%s, %s, %s, %s, %s, 100, 200, NULL, %d, 'ex-old', 5, 6)",
           t, n, pa, h, a, (int)TG_EXACT_SUBMITTED);
}

static void exact_v3_checks(tg_store *st) {
  tg_address tok = addr(0x70), payer = addr(0xb1), payer2 = addr(0xb2);
  tg_hash nonce = hash(0x42);
  tg_store_exact got;
  /* The row from schema 2 is there, unchanged, under its payer. */
  CHECK_OK(tg_store_exact_get(st, &tok, &payer, &nonce, &got));
  CHECK_INT(got.status, TG_EXACT_SUBMITTED);
  CHECK_INT(u64(&got.amount), 1500);
  CHECK_INT(got.valid_after, 100);
  CHECK_INT(got.valid_before, 200);
  CHECK_STR(got.request_id, "ex-old");
  CHECK(got.created_at == 5 && got.updated_at == 6 && !got.has_tx);
  CHECK_ERR(tg_store_exact_get(st, &tok, &payer2, &nonce, &got), TG_ENOTFOUND);
  /* Another payer may now use the same nonce; the first payer still may not. */
  tg_store_op op;
  memset(&op, 0, sizeof(op));
  op.kind = TG_STORE_OP_EXACT_PUT;
  op.u.exact.token = tok;
  op.u.exact.nonce = nonce;
  op.u.exact.payer = payer2;
  op.u.exact.to = addr(0xee);
  op.u.exact.amount = u(9);
  op.u.exact.request_id = "ex-new";
  op.u.exact.status = TG_EXACT_VERIFIED;
  CHECK_OK(tg_store_write(st, &op, 1));
  op.u.exact.payer = payer;
  CHECK_ERR(tg_store_write(st, &op, 1), TG_EEXISTS);
  CHECK_OK(tg_store_exact_get(st, &tok, &payer2, &nonce, &got));
  CHECK_INT(u64(&got.amount), 9);
  CHECK_OK(tg_store_exact_get(st, &tok, &payer, &nonce, &got));
  CHECK_STR(got.request_id, "ex-old");
}

static void test_payid(void) {
  char path[256];
  tg_store *st = open_fresh(path, sizeof(path));
  if (!st) return;
  tg_store_op op;
  memset(&op, 0, sizeof(op));
  op.kind = TG_STORE_OP_PAYID_PUT;
  op.u.payid.id = "pay_7d5d747be160e280504c099d984bcfe0";
  op.u.payid.payer = addr(0xa1);
  op.u.payid.request_hash = hash(0x31);
  op.u.payid.status = 200;
  op.u.payid.response_header = "eyJzdWNjZXNzIjp0cnVlfQ==";
  op.u.payid.request_id = "req-77";
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_ERR(tg_store_write(st, &op, 1), TG_EEXISTS);
  tg_store_payid p;
  CHECK_OK(tg_store_payid_get(st, "pay_7d5d747be160e280504c099d984bcfe0", &p));
  CHECK_INT(p.status, 200);
  CHECK_STR(p.response_header, "eyJzdWNjZXNzIjp0cnVlfQ==");
  CHECK_STR(p.request_id, "req-77");
  CHECK(p.request_hash.b[31] == 0x31 && p.payer.b[0] == 0xa1);
  CHECK_ERR(tg_store_payid_get(st, "pay_unknown_0000000000", &p), TG_ENOTFOUND);
  op.u.payid.id = "short"; /* the extension's ids are 16..128 characters */
  CHECK_ERR(tg_store_write(st, &op, 1), TG_EINVAL);
  op.u.payid.id = "pay_0000000000000001";
  op.u.payid.response_header = NULL;
  op.u.payid.request_id = NULL;
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_OK(tg_store_payid_get(st, "pay_0000000000000001", &p));
  CHECK_STR(p.response_header, "");
  tg_store_close(st);
}

static void test_pass_usage(void) {
  char path[256];
  tg_store *st = open_fresh(path, sizeof(path));
  if (!st) return;
  tg_store_op op;
  memset(&op, 0, sizeof(op));
  op.kind = TG_STORE_OP_PASS_USE;
  op.u.pass.pass_id = u(7);
  op.u.pass.holder = addr(0xd1);
  op.u.pass.period_start = 1700000000000LL;
  op.u.pass.calls = 1;
  op.u.pass.tokens = 300;
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_INT(op.u.pass.out_calls, 2);
  CHECK_INT(op.u.pass.out_tokens, 600);
  tg_store_pass_usage pu;
  tg_u256 pid = u(7);
  tg_address h = addr(0xd1);
  CHECK_OK(tg_store_pass_usage_get(st, &pid, &h, 1700000000000LL, &pu));
  CHECK_INT(pu.calls, 2);
  CHECK_INT(pu.tokens, 600);
  CHECK_ERR(tg_store_pass_usage_get(st, &pid, &h, 1, &pu), TG_ENOTFOUND);
  /* a lease given back (calls_back): subtracted after the increment, never below 0 */
  op.u.pass.calls = 10;
  op.u.pass.tokens = 0;
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_INT(op.u.pass.out_calls, 12);
  op.u.pass.calls = 0;
  op.u.pass.calls_back = 7;
  op.u.pass.tokens = 5;
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_INT(op.u.pass.out_calls, 5);
  CHECK_INT(op.u.pass.out_tokens, 605);
  op.u.pass.calls_back = 9;
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_INT(op.u.pass.out_calls, 0);
  CHECK_OK(tg_store_pass_usage_get(st, &pid, &h, 1700000000000LL, &pu));
  CHECK_INT(pu.calls, 0);
  op.u.pass.calls_back = ((uint64_t)1 << 40) + 1;
  CHECK_ERR(tg_store_write(st, &op, 1), TG_ERANGE);
  op.u.pass.calls_back = 0;
  op.u.pass.tokens = (uint64_t)1 << 41;
  CHECK_ERR(tg_store_write(st, &op, 1), TG_ERANGE);
  tg_store_close(st);
}

/* Sign-in nonces are single use and expire; sessions are found by their token's hash. */
static void test_auth_nonces_sessions(void) {
  char path[256];
  tg_store *st = open_fresh(path, sizeof(path));
  if (!st) return;
  int64_t now = tg__store_now_ms();
  tg_store_op op;
  memset(&op, 0, sizeof(op));
  op.kind = TG_STORE_OP_NONCE_PUT;
  strcpy(op.u.nonce.nonce, "n0nce0000000A");
  op.u.nonce.expires_at = now + 300000;
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_ERR(tg_store_write(st, &op, 1), TG_EEXISTS); /* issued twice: refused */
  op.kind = TG_STORE_OP_NONCE_USE;
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_ERR(tg_store_write(st, &op, 1), TG_ESIWE_NONCE);  /* used: refused */
  strcpy(op.u.nonce.nonce, "neverIssued1");
  CHECK_ERR(tg_store_write(st, &op, 1), TG_ESIWE_NONCE);  /* unknown */
  op.kind = TG_STORE_OP_NONCE_PUT;
  strcpy(op.u.nonce.nonce, "expired00001");
  op.u.nonce.expires_at = now - 1;
  CHECK_OK(tg_store_write(st, &op, 1));
  op.kind = TG_STORE_OP_NONCE_USE;
  CHECK_ERR(tg_store_write(st, &op, 1), TG_ESIWE_NONCE);  /* expired */
  strcpy(op.u.nonce.nonce, "bad-nonce!");
  CHECK_ERR(tg_store_write(st, &op, 1), TG_EINVAL);
  /* an agent's nonce, recorded as used: accepted once, never usable as a sign-in nonce */
  op.kind = TG_STORE_OP_NONCE_PUT;
  memset(op.u.nonce.nonce, 'a', 64);
  op.u.nonce.nonce[64] = 0;
  op.u.nonce.expires_at = now + 300000;
  op.u.nonce.used_at = now;
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_ERR(tg_store_write(st, &op, 1), TG_EEXISTS); /* a replay, on this instance or another */
  op.kind = TG_STORE_OP_NONCE_USE;
  CHECK_ERR(tg_store_write(st, &op, 1), TG_ESIWE_NONCE);
  op.u.nonce.used_at = 0;
  /* a session, and a nonce consumed in the same submission */
  tg_store_op two[2];
  memset(two, 0, sizeof two);
  two[0].kind = TG_STORE_OP_NONCE_PUT;
  strcpy(two[0].u.nonce.nonce, "pairNonce0001");
  two[0].u.nonce.expires_at = now + 300000;
  CHECK_OK(tg_store_write(st, two, 1));
  two[0].kind = TG_STORE_OP_NONCE_USE;
  two[1].kind = TG_STORE_OP_SESSION_PUT;
  memset(two[1].u.session.token_hash.b, 0x5a, 32);
  two[1].u.session.address = addr(0xe1);
  two[1].u.session.expires_at = now + 3600000;
  CHECK_OK(tg_store_write(st, two, 2));
  /* replayed: the nonce fails, so the second session is not written either */
  memset(two[1].u.session.token_hash.b, 0x5b, 32);
  CHECK_ERR(tg_store_write(st, two, 2), TG_ESIWE_NONCE);
  tg_store_session ss;
  tg_hash th;
  memset(th.b, 0x5a, 32);
  CHECK_OK(tg_store_session_get(st, &th, &ss));
  tg_address want = addr(0xe1);
  CHECK_MEM(ss.address.b, want.b, 20);
  CHECK_INT(ss.expires_at, now + 3600000);
  memset(th.b, 0x5b, 32);
  CHECK_ERR(tg_store_session_get(st, &th, &ss), TG_ENOTFOUND);
  /* revoked: gone; revoking again (or an unknown token) is a no-op */
  tg_store_op rv;
  memset(&rv, 0, sizeof rv);
  rv.kind = TG_STORE_OP_SESSION_REVOKE;
  memset(rv.u.session.token_hash.b, 0x5a, 32);
  CHECK_OK(tg_store_write(st, &rv, 1));
  CHECK_OK(tg_store_write(st, &rv, 1));
  memset(th.b, 0x5a, 32);
  CHECK_ERR(tg_store_session_get(st, &th, &ss), TG_ENOTFOUND);
  tg_store_close(st);
}

typedef struct {
  int n;
  tg_store_settle_item items[8];
} item_list;

static int collect_item(void *arg, const tg_store_settle_item *it) {
  item_list *l = arg;
  if (l->n < 8) l->items[l->n] = *it;
  l->n++;
  return 0;
}

static void test_settle_journal(void) {
  char path[256];
  tg_store *st = store_with_channel(path, sizeof(path), 1000);
  if (!st) return;
  tg_store_settle_run run;
  CHECK_ERR(tg_store_run_open_get(st, &run), TG_ENOTFOUND);
  tg_store_op op;
  memset(&op, 0, sizeof(op));
  op.kind = TG_STORE_OP_RUN_BEGIN;
  CHECK_OK(tg_store_write(st, &op, 1));
  int64_t rid = op.u.run.run_id;
  CHECK(rid > 0);
  CHECK_OK(tg_store_run_open_get(st, &run));
  CHECK_INT(run.id, rid);
  CHECK_INT(run.status, TG_RUN_OPEN);

  tg_store_op it;
  memset(&it, 0, sizeof(it));
  it.kind = TG_STORE_OP_ITEM_PUT;
  it.u.item.run_id = rid;
  it.u.item.channel_id = hash(1);
  it.u.item.amount = u(500);
  it.u.item.through_charge = 12;
  it.u.item.step = TG_SETTLE_PLANNED;
  CHECK_OK(tg_store_write(st, &it, 1));
  it.u.item.step = TG_SETTLE_SENT;
  it.u.item.has_tx = 1;
  it.u.item.tx_hash = hash(0x77);
  CHECK_OK(tg_store_write(st, &it, 1));
  it.u.item.step = TG_SETTLE_CONFIRMED;
  it.u.item.has_tx = 0;
  CHECK_OK(tg_store_write(st, &it, 1));
  item_list l = {0};
  CHECK_OK(tg_store_run_items(st, rid, collect_item, &l));
  CHECK_INT(l.n, 1);
  CHECK_INT(l.items[0].step, TG_SETTLE_CONFIRMED);
  CHECK(l.items[0].has_tx && l.items[0].tx_hash.b[31] == 0x77);
  CHECK_INT(u64(&l.items[0].amount), 500);
  CHECK_INT(l.items[0].through_charge, 12);

  it.u.item.channel_id = hash(5); /* unknown channel */
  CHECK_ERR(tg_store_write(st, &it, 1), TG_ENOTFOUND);
  it.u.item.channel_id = hash(1);
  it.u.item.run_id = rid + 100; /* unknown run */
  CHECK_ERR(tg_store_write(st, &it, 1), TG_ENOTFOUND);
  it.u.item.run_id = rid;
  it.u.item.step = TG_SETTLE_DROPPED;
  it.u.item.error = "ChannelSkipped: withdrawn";
  CHECK_OK(tg_store_write(st, &it, 1));
  l.n = 0;
  CHECK_OK(tg_store_run_items(st, rid, collect_item, &l));
  CHECK_STR(l.items[0].error, "ChannelSkipped: withdrawn");

  op.kind = TG_STORE_OP_RUN_END;
  op.u.run.run_id = rid;
  op.u.run.status = TG_RUN_DONE;
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_ERR(tg_store_run_open_get(st, &run), TG_ENOTFOUND);
  op.u.run.run_id = rid + 1;
  CHECK_ERR(tg_store_write(st, &op, 1), TG_ENOTFOUND);

  /* Marking a channel's charges settled through an id. */
  tg_store_op ch[3] = {charge("s1", 0xa1, 1, 1, 0), charge("s2", 0xa1, 1, 1, 0),
                       charge("s3", 0xa1, 1, 1, 0)};
  ch[0].u.charge.created_at = 1000;
  ch[1].u.charge.created_at = 2000;
  ch[2].u.charge.created_at = 3000;
  CHECK_OK(tg_store_write(st, ch, 3));
  tg_store_op se;
  memset(&se, 0, sizeof(se));
  se.kind = TG_STORE_OP_CHARGES_SETTLE;
  se.u.settle.channel_id = hash(1);
  se.u.settle.through_charge = ch[1].u.charge.out_id;
  CHECK_OK(tg_store_write(st, &se, 1));
  CHECK_INT(se.u.settle.out_count, 2);
  tg_store_channel chv;
  tg_hash cid = hash(1);
  CHECK_OK(tg_store_channel_get(st, &cid, &chv));
  tg_store_charge c3;
  CHECK_OK(tg_store_charge_get(st, "s3", &c3));
  CHECK_INT(chv.first_unclaimed_at, c3.created_at); /* the oldest unsettled charge */
  CHECK_OK(tg_store_write(st, &se, 1));
  CHECK_INT(se.u.settle.out_count, 0);
  tg_store_charge c;
  CHECK_OK(tg_store_charge_get(st, "s2", &c));
  CHECK(c.settled);
  CHECK_OK(tg_store_charge_get(st, "s3", &c));
  CHECK(!c.settled);
  se.u.settle.through_charge = ch[2].u.charge.out_id;
  CHECK_OK(tg_store_write(st, &se, 1));
  CHECK_OK(tg_store_channel_get(st, &cid, &chv));
  CHECK_INT(chv.first_unclaimed_at, 0);
  tg_store_close(st);
}

static void test_leases(void) {
  char path[256];
  tg_store *st = open_fresh(path, sizeof(path));
  if (!st) return;
  tg_store_op op;
  memset(&op, 0, sizeof(op));
  op.kind = TG_STORE_OP_LEASE_ACQUIRE;
  op.u.lease.name = "settle";
  op.u.lease.holder = "gw-a";
  op.u.lease.ttl_ms = 10000;
  op.now = 1000000;
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_INT(op.u.lease.out_expires_at, 1010000);
  op.u.lease.holder = "gw-b";
  op.now = 1005000;
  CHECK_ERR(tg_store_write(st, &op, 1), TG_ESTORE_LEASE);
  op.u.lease.holder = "gw-a"; /* renewal */
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_INT(op.u.lease.out_expires_at, 1015000);
  op.u.lease.holder = "gw-b"; /* after expiry it moves */
  op.now = 1015001;
  CHECK_OK(tg_store_write(st, &op, 1));
  tg_store_lease l;
  CHECK_OK(tg_store_lease_get(st, "settle", &l));
  CHECK_STR(l.holder, "gw-b");
  CHECK_INT(l.expires_at, 1025001);
  op.kind = TG_STORE_OP_LEASE_RELEASE;
  op.u.lease.holder = "gw-a"; /* not the holder: no-op */
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_OK(tg_store_lease_get(st, "settle", &l));
  op.u.lease.holder = "gw-b";
  CHECK_OK(tg_store_write(st, &op, 1));
  CHECK_ERR(tg_store_lease_get(st, "settle", &l), TG_ENOTFOUND);
  tg_store_close(st);
}

/* Reconciliation reads: sums of charge rows equal the running totals. */
typedef struct {
  tg_u256 sum;
  uint64_t n;
  int64_t last_id;
} charge_sum;

static int sum_charge(void *arg, const tg_store_charge *c) {
  charge_sum *s = arg;
  if (tg_u256_add(&s->sum, &s->sum, &c->amount) < 0) return TG_EOVERFLOW;
  s->n++;
  s->last_id = c->id;
  return 0;
}

typedef struct {
  int n;
  uint8_t ids[16];
} chan_list;

static int collect_chan(void *arg, const tg_store_channel *ch) {
  chan_list *l = arg;
  if (l->n < 16) l->ids[l->n] = ch->id.b[31];
  l->n++;
  return 0;
}

static void test_reads_and_totals(void) {
  char path[256];
  tg_store *st = open_fresh(path, sizeof(path));
  if (!st) return;
  tg_store_op setup[6] = {channel_put(1, 0xa1, 1000, 1), channel_put(2, 0xa1, 1000, 1),
                          channel_put(3, 0xa2, 1000, 1), voucher(1, 1000, 1),
                          voucher(2, 1000, 2),          voucher(3, 1000, 3)};
  CHECK_OK(tg_store_write(st, setup, 6));
  tg_store_op ops[5] = {charge("a", 0xa1, 1, 10, 0), charge("b", 0xa1, 1, 20, 0),
                        charge("c", 0xa1, 2, 5, 0), charge("d", 0xa1, -1, 7, 0),
                        charge("e", 0xa2, 3, 3, 0)};
  CHECK_OK(tg_store_write(st, ops, 5));

  chan_list cl = {0};
  CHECK_OK(tg_store_channels_unsettled(st, collect_chan, &cl));
  CHECK_INT(cl.n, 3);
  /* channel 2 fully claimed on-chain: no longer unsettled */
  tg_store_op sync = channel_put(2, 0xa1, 995, 5);
  sync.kind = TG_STORE_OP_CHANNEL_SYNC;
  sync.u.channel.chain.total_claimed = u(5);
  CHECK_OK(tg_store_write(st, &sync, 1));
  tg_store_channel ch;
  tg_hash id2 = hash(2);
  CHECK_OK(tg_store_channel_get(st, &id2, &ch));
  CHECK_INT(ch.first_unclaimed_at, 0);
  cl.n = 0;
  CHECK_OK(tg_store_channels_unsettled(st, collect_chan, &cl));
  CHECK_INT(cl.n, 2);
  CHECK(cl.ids[0] != 2 && cl.ids[1] != 2);
  tg_address pa = addr(0xa1);
  cl.n = 0;
  CHECK_OK(tg_store_channels_list(st, &pa, collect_chan, &cl));
  CHECK_INT(cl.n, 2);
  cl.n = 0;
  CHECK_OK(tg_store_channels_list(st, NULL, collect_chan, &cl));
  CHECK_INT(cl.n, 3);

  charge_sum s = {0};
  tg_hash id1 = hash(1);
  CHECK_OK(tg_store_charges_by_channel(st, &id1, 0, 0, sum_charge, &s));
  CHECK_INT(s.n, 2);
  CHECK_INT(u64(&s.sum), 30);
  CHECK_OK(tg_store_channel_get(st, &id1, &ch));
  CHECK(tg_u256_cmp(&ch.charged, &s.sum) == 0);
  /* paging */
  memset(&s, 0, sizeof(s));
  CHECK_OK(tg_store_charges_by_channel(st, &id1, 0, 1, sum_charge, &s));
  CHECK_INT(s.n, 1);
  CHECK_OK(tg_store_charges_by_channel(st, &id1, s.last_id, 1, sum_charge, &s));
  CHECK_INT(s.n, 2);
  CHECK_INT(u64(&s.sum), 30);
  memset(&s, 0, sizeof(s));
  CHECK_OK(tg_store_charges_by_payer(st, &pa, 0, 0, sum_charge, &s));
  CHECK_INT(s.n, 4);
  CHECK_INT(u64(&s.sum), 42);
  tg_store_totals t;
  CHECK_OK(tg_store_totals_get(st, &pa, TG_SCHEME_CHANNEL, &t));
  CHECK_INT(u64(&t.charged), 35);
  CHECK_INT(t.count, 3);
  CHECK_OK(tg_store_totals_get(st, &pa, TG_SCHEME_EXACT, &t));
  CHECK_INT(u64(&t.charged), 7);
  CHECK_OK(tg_store_totals_get(st, &pa, TG_SCHEME_PASS, &t));
  CHECK(tg_u256_is_zero(&t.charged) && t.count == 0);
  tg_store_close(st);
}

/* Close drains: every accepted submission's callback fires before close returns. */
static void test_close_drains(void) {
  char path[256];
  tg_store *st = store_with_channel(path, sizeof(path), 1000000);
  if (!st) return;
  counter c = {0};
  char ids[500][16];
  for (int i = 0; i < 500; i++) {
    snprintf(ids[i], sizeof(ids[i]), "cd-%d", i);
    tg_store_op op = charge(ids[i], 0xa1, 1, 1, 0);
    CHECK_OK(tg_store_submit(st, &op, 1, count_cb, &c));
  }
  tg_store_close(st);
  CHECK_INT(atomic_load(&c.done), 500);
  CHECK_INT(atomic_load(&c.ok), 500);
}

#define PRODUCERS 64
#define PER_PRODUCER 50

typedef struct {
  tg_store *st;
  int idx;
  counter *c;
  int busy;
} producer;

static void *producer_main(void *p) {
  producer *pr = p;
  for (int i = 0; i < PER_PRODUCER; i++) {
    char id[32];
    snprintf(id, sizeof(id), "p%d-%d", pr->idx, i);
    /* 8 channels shared by 64 producers; payer 0xa0 + channel */
    int chan = 1 + pr->idx % 8;
    tg_store_op op = charge(id, (uint8_t)(0xa0 + chan), chan, (uint64_t)(1 + i % 5), 0);
    int rc;
    if (i % 2 == 0) {
      rc = tg_store_write(pr->st, &op, 1);
      if (rc == 0) atomic_fetch_add(&pr->c->ok, 1);
      atomic_fetch_add(&pr->c->done, 1);
    } else {
      while ((rc = tg_store_submit(pr->st, &op, 1, count_cb, pr->c)) == TG_EBUSY) {
        pr->busy++;
        usleep(100);
      }
    }
    if (rc < 0 && rc != TG_EBUSY) atomic_fetch_add(&pr->c->failed, 1);
  }
  return NULL;
}

static void test_concurrency_64(void) {
  char path[256];
  tg_store *st = open_fresh(path, sizeof(path));
  if (!st) return;
  for (int ch = 1; ch <= 8; ch++) {
    tg_store_op setup[2] = {channel_put((uint8_t)ch, (uint8_t)(0xa0 + ch), 1, 1),
                            voucher((uint8_t)ch, 1000000, 1)};
    CHECK_OK(tg_store_write(st, setup, 2));
  }
  counter c = {0};
  pthread_t th[PRODUCERS];
  producer pr[PRODUCERS];
  for (int i = 0; i < PRODUCERS; i++) {
    pr[i] = (producer){st, i, &c, 0};
    CHECK(pthread_create(&th[i], NULL, producer_main, &pr[i]) == 0);
  }
  for (int i = 0; i < PRODUCERS; i++) pthread_join(th[i], NULL);
  wait_done(&c, PRODUCERS * PER_PRODUCER);
  CHECK_INT(atomic_load(&c.ok), PRODUCERS * PER_PRODUCER);
  CHECK_INT(atomic_load(&c.failed), 0);
  /* Each channel's total equals its expected sum and the sum of its rows. */
  for (int ch = 1; ch <= 8; ch++) {
    uint64_t want = 0;
    for (int p = 0; p < PRODUCERS; p++)
      if (1 + p % 8 == ch)
        for (int i = 0; i < PER_PRODUCER; i++) want += (uint64_t)(1 + i % 5);
    tg_store_channel chv;
    tg_hash id = hash((uint8_t)ch);
    CHECK_OK(tg_store_channel_get(st, &id, &chv));
    CHECK_INT(u64(&chv.charged), want);
    charge_sum s = {0};
    CHECK_OK(tg_store_charges_by_channel(st, &id, 0, 0, sum_charge, &s));
    CHECK(tg_u256_cmp(&s.sum, &chv.charged) == 0);
    CHECK_INT(s.n, chv.charge_count);
  }
  tg_store_stats stats;
  tg_store_get_stats(st, &stats);
  CHECKF(stats.commits < stats.submissions, "commits %llu, submissions %llu",
         (unsigned long long)stats.commits, (unsigned long long)stats.submissions);
  tg_store_close(st);
}

typedef struct {
  tg_store *st;
  atomic_int rc;
  atomic_int submit_rc;
  atomic_int done;
} reentry;

static void reentry_cb(void *arg, int err, const tg_store_op *ops, size_t n) {
  (void)err;
  (void)ops;
  (void)n;
  reentry *r = arg;
  tg_store_op op = charge("inner-sync", 0xa1, 1, 1, 0);
  atomic_store(&r->rc, tg_store_write(r->st, &op, 1));
  /* An async submission from a callback is fine: it goes to the next batch. */
  static counter c;
  op = charge("inner-async", 0xa1, 1, 1, 0);
  atomic_store(&r->submit_rc, tg_store_submit(r->st, &op, 1, count_cb, &c));
  atomic_store(&r->done, 1);
}

/* A synchronous write from a callback (the writer thread) is refused instead of deadlocking. */
static void test_write_from_callback(void) {
  char path[256];
  tg_store *st = store_with_channel(path, sizeof(path), 1000);
  if (!st) return;
  reentry r = {st, 1, 1, 0};
  tg_store_op op = charge("outer", 0xa1, 1, 1, 0);
  CHECK_OK(tg_store_submit(st, &op, 1, reentry_cb, &r));
  for (int i = 0; i < 5000 && !atomic_load(&r.done); i++) usleep(1000);
  CHECK_ERR(atomic_load(&r.rc), TG_EPERM);
  CHECK_OK(atomic_load(&r.submit_rc));
  tg_store_close(st); /* drains the inner submission */
  char uri[300];
  uri_of(path, uri, sizeof(uri));
  CHECK_OK(tg_store_open(&st, uri, NULL));
  tg_store_charge c;
  CHECK_OK(tg_store_charge_get(st, "inner-async", &c));
  CHECK_ERR(tg_store_charge_get(st, "inner-sync", &c), TG_ENOTFOUND);
  tg_store_close(st);
}

/* ------------------------------------------------------------------------- */
/* Delivery on a libevent loop. */

typedef struct {
  pthread_t loop_thread;
  int on_loop;
  int calls;
  int err;
  int64_t charge_id;
  struct event_base *base;
} ev_ctx;

static void ev_cb(void *arg, int err, const tg_store_op *ops, size_t n) {
  ev_ctx *e = arg;
  e->on_loop = pthread_equal(pthread_self(), e->loop_thread);
  e->calls++;
  e->err = err;
  if (n == 1 && ops[0].kind == TG_STORE_OP_CHARGE) e->charge_id = ops[0].u.charge.out_id;
  event_base_loopbreak(e->base);
}

static void test_evbase(void) {
  CHECK(evthread_use_pthreads() == 0);
  char path[256];
  tg_store *st = store_with_channel(path, sizeof(path), 1000);
  if (!st) return;
  struct event_base *base = event_base_new();
  ev_ctx e = {pthread_self(), 0, 0, 0, 0, base};
  /* The op's strings may be freed right after submit: the store copied them. */
  char *rid = strdup("ev-1");
  tg_store_op op = charge(rid, 0xa1, 1, 3, 0);
  CHECK_OK(tg_store_submit_evbase(st, &op, 1, base, ev_cb, &e));
  free(rid);
  struct timeval tv = {10, 0};
  event_base_loopexit(base, &tv);
  event_base_dispatch(base);
  CHECK_INT(e.calls, 1);
  CHECK(e.on_loop);
  CHECK_OK(e.err);
  CHECK(e.charge_id > 0);
  tg_store_charge c;
  CHECK_OK(tg_store_charge_get(st, "ev-1", &c));
  event_base_free(base);
  tg_store_close(st);
}

#endif
