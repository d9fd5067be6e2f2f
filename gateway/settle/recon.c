/* Reconciliation: per channel and per payer, charged (summed from the charge rows) against claimed on-chain. */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "store/store.h"
#include "tollgate/abi.h"
#include "tollgate/address.h"
#include "tollgate/error.h"
#include "tollgate/settle.h"
#include "tollgate/u256.h"

#define RECON_RPC_BATCH 500

void tg_recon_cleanup(tg_recon *r) {
  if (!r) return;
  free(r->ch);
  free(r->payers);
  free(r->exact);
  memset(r, 0, sizeof *r);
}

typedef struct {
  tg_recon *r;
  size_t cap;
  const tg_deployment *d;
} load_ctx;

static int load_cb(void *arg, const tg_store_channel *sc) {
  load_ctx *x = arg;
  if (x->d && (sc->cfg.chain_id != x->d->chain_id ||
               !tg_address_eq(&sc->cfg.contract, &x->d->c[TG_CONTRACT_CHANNELS].address)))
    return 0;
  tg_recon *r = x->r;
  if (r->n_ch == x->cap) {
    size_t nc = x->cap ? x->cap * 2 : 256;
    tg_recon_channel *n = realloc(r->ch, nc * sizeof *n);
    if (!n) return TG_ENOMEM;
    r->ch = n;
    x->cap = nc;
  }
  tg_recon_channel *c = &r->ch[r->n_ch++];
  memset(c, 0, sizeof *c);
  c->id = sc->id;
  c->payer = sc->cfg.payer;
  c->receiver = sc->cfg.receiver;
  c->token = sc->cfg.token;
  c->charged = sc->charged;
  c->claimed = sc->chain.total_claimed;
  return 0;
}

static int rows_cb(void *arg, const tg_store_charge *ch) {
  tg_recon_channel *c = arg;
  if (tg_u256_add(&c->charged_rows, &c->charged_rows, &ch->amount) != 0) return TG_EOVERFLOW;
  c->charges++;
  if (!ch->settled) c->charges_unsettled++;
  return 0;
}

static int read_onchain(tg_recon *r, tg_rpc *rpc, const tg_deployment *d) {
  uint8_t sel[4];
  const char *sig = "getChannelState(bytes32)";
  int rc = tg_abi_selector_str(sel, sig, strlen(sig));
  size_t i = 0;
  while (!rc && i < r->n_ch) {
    tg_rpc_batch *b = tg_rpc_batch_new();
    if (!b) return TG_ENOMEM;
    size_t first = i, k = 0;
    for (; i < r->n_ch && k < RECON_RPC_BATCH; i++, k++) {
      uint8_t data[36];
      memcpy(data, sel, 4);
      memcpy(data + 4, r->ch[i].id.b, 32);
      tg_eth_msg m = {0};
      m.to = &d->c[TG_CONTRACT_CHANNELS].address;
      m.data = data;
      m.data_len = sizeof data;
      json_t *p = json_array();
      json_array_append_new(p, tg_eth_msg_json(&m));
      json_array_append_new(p, tg_rpc_json_block(NULL));
      int bi = tg_rpc_batch_add(b, "eth_call", p);
      if (bi < 0) {
        rc = bi;
        break;
      }
    }
    if (!rc) rc = tg_rpc_batch_run(rpc, b);
    for (size_t j = 0; !rc && j < k; j++) {
      const tg_rpc_reply *rep = tg_rpc_batch_reply(b, j);
      if (!rep) rc = TG_ERPC_REPLY;
      else if (rep->err) rc = rep->err;
      tg_buf out;
      tg_buf_init(&out, 4096);
      if (!rc) rc = tg_rpc_parse_data(rep->result, &out);
      if (!rc && out.len != 160) rc = TG_EABI_DATA;
      if (!rc) {
        tg_recon_channel *c = &r->ch[first + j];
        memcpy(c->onchain_balance.b, out.data, 32);
        memcpy(c->onchain_claimed.b, out.data + 32, 32);
        c->has_onchain = 1;
      }
      tg_buf_cleanup(&out);
    }
    tg_rpc_batch_free(b);
  }
  return rc;
}

/* The receipts of the exact payments' transactions, in JSON-RPC batches. */
static int read_receipts(tg_recon *r, tg_rpc *rpc) {
  int rc = 0;
  size_t i = 0;
  while (!rc && i < r->n_exact) {
    tg_rpc_batch *b = tg_rpc_batch_new();
    if (!b) return TG_ENOMEM;
    size_t idx[RECON_RPC_BATCH], k = 0;
    for (; i < r->n_exact && k < RECON_RPC_BATCH; i++) {
      r->exact[i].onchain = 0;
      if (!r->exact[i].has_tx) continue;
      json_t *p = json_array();
      json_array_append_new(p, tg_rpc_json_hash(&r->exact[i].tx_hash));
      int bi = tg_rpc_batch_add(b, "eth_getTransactionReceipt", p);
      if (bi < 0) {
        rc = bi;
        break;
      }
      idx[k++] = i;
    }
    if (!rc && k) rc = tg_rpc_batch_run(rpc, b);
    for (size_t j = 0; !rc && j < k; j++) {
      const tg_rpc_reply *rep = tg_rpc_batch_reply(b, j);
      if (!rep) rc = TG_ERPC_REPLY;
      else if (rep->err) rc = rep->err;
      if (rc || json_is_null(rep->result)) continue; /* not mined (or dropped) */
      tg_eth_receipt rcpt;
      if ((rc = tg_rpc_parse_receipt(rep->result, &rcpt)) != 0) break;
      tg_recon_exact *e = &r->exact[idx[j]];
      e->onchain = rcpt.status == 1 ? 1 : 2;
      e->block_number = rcpt.block_number;
      tg_eth_receipt_cleanup(&rcpt);
    }
    tg_rpc_batch_free(b);
  }
  return rc;
}

static int cmp_payer(const void *a, const void *b) {
  const tg_recon_channel *x = a, *y = b;
  int c = memcmp(x->payer.b, y->payer.b, 20);
  return c ? c : memcmp(x->id.b, y->id.b, 32);
}

static void add_sat(tg_u256 *acc, const tg_u256 *v) {
  if (tg_u256_add(acc, acc, v) != 0) memset(acc->b, 0xff, 32);
}

const char *tg_recon_exact_status_name(int status) {
  switch (status) {
  case TG_EXACT_VERIFIED: return "verified";
  case TG_EXACT_SUBMITTED: return "submitted";
  case TG_EXACT_MINED: return "mined";
  case TG_EXACT_CONFIRMED: return "confirmed";
  case TG_EXACT_FAILED: return "failed";
  default: return "unknown";
  }
}

typedef struct {
  tg_recon *r;
  size_t cap;
} exact_ctx;

static int exact_cb(void *arg, const tg_store_exact *e) {
  exact_ctx *x = arg;
  tg_recon *r = x->r;
  if (r->n_exact == x->cap) {
    size_t nc = x->cap ? x->cap * 2 : 256;
    tg_recon_exact *n = realloc(r->exact, nc * sizeof *n);
    if (!n) return TG_ENOMEM;
    r->exact = n;
    x->cap = nc;
  }
  tg_recon_exact *v = &r->exact[r->n_exact++];
  memset(v, 0, sizeof *v);
  v->token = e->token;
  v->payer = e->payer;
  v->to = e->to;
  v->nonce = e->nonce;
  v->amount = e->amount;
  v->status = (int)e->status;
  v->has_tx = e->has_tx;
  v->tx_hash = e->tx_hash;
  memcpy(v->request_id, e->request_id, sizeof v->request_id);
  v->request_id[sizeof v->request_id - 1] = 0;
  v->created_at = e->created_at;
  return 0;
}

/* The exact charge rows of one payer. */
static int exact_rows_cb(void *arg, const tg_store_charge *ch) {
  tg_recon_payer *p = arg;
  if (ch->scheme != TG_SCHEME_EXACT) return 0;
  if (tg_u256_add(&p->exact_rows, &p->exact_rows, &ch->amount) != 0) return TG_EOVERFLOW;
  p->exact_row_count++;
  return 0;
}

static int cmp_payer_addr(const void *a, const void *b) {
  return memcmp(((const tg_recon_payer *)a)->payer.b, ((const tg_recon_payer *)b)->payer.b, 20);
}

static tg_recon_payer *payer_new(tg_recon *out, const tg_address *a) {
  tg_recon_payer *n = realloc(out->payers, (out->n_payers + 1) * sizeof *n);
  if (!n) return NULL;
  out->payers = n;
  tg_recon_payer *p = &n[out->n_payers++];
  memset(p, 0, sizeof *p);
  p->payer = *a;
  return p;
}

int tg_recon_build(tg_recon *out, struct tg_store *st, tg_rpc *rpc, const tg_deployment *d) {
  memset(out, 0, sizeof *out);
  load_ctx x = {out, 0, d};
  int rc = tg_store_channels_list(st, NULL, load_cb, &x);
  if (rc > 0) rc = 0;
  for (size_t i = 0; !rc && i < out->n_ch; i++) {
    rc = tg_store_charges_by_channel(st, &out->ch[i].id, 0, 0, rows_cb, &out->ch[i]);
    if (rc > 0) rc = 0;
  }
  if (!rc && rpc && d) {
    rc = read_onchain(out, rpc, d);
    out->has_onchain = !rc;
  }
  if (!rc && out->n_ch) qsort(out->ch, out->n_ch, sizeof *out->ch, cmp_payer);
  for (size_t i = 0; !rc && i < out->n_ch; i++) {
    tg_recon_channel *c = &out->ch[i];
    const tg_u256 *cl = c->has_onchain ? &c->onchain_claimed : &c->claimed;
    if (tg_u256_cmp(&c->charged, cl) > 0) {
      if (tg_u256_sub(&c->outstanding, &c->charged, cl) != 0) rc = TG_EINTERNAL;
    }
    if (tg_u256_cmp(&c->charged, &c->charged_rows) != 0) out->mismatches++;
    if (!out->n_payers || !tg_address_eq(&out->payers[out->n_payers - 1].payer, &c->payer)) {
      if (!payer_new(out, &c->payer)) {
        rc = TG_ENOMEM;
        break;
      }
    }
    tg_recon_payer *p = &out->payers[out->n_payers - 1];
    p->channels++;
    add_sat(&p->charged, &c->charged);
    add_sat(&p->claimed, &c->claimed);
    add_sat(&p->onchain_claimed, &c->onchain_claimed);
    add_sat(&p->outstanding, &c->outstanding);
  }
  /* exact payments: their payers join the list (a payer may have no channel) */
  if (!rc) {
    exact_ctx ex = {out, 0};
    rc = tg_store_exact_list(st, exact_cb, &ex);
    if (rc > 0) rc = 0;
  }
  for (size_t i = 0; !rc && i < out->n_exact; i++) out->exact[i].onchain = -1;
  if (!rc && rpc && d && out->n_exact) rc = read_receipts(out, rpc);
  size_t sorted = out->n_payers; /* payers[0 .. sorted) are in address order */
  for (size_t i = 0; !rc && i < out->n_exact; i++) {
    const tg_recon_exact *e = &out->exact[i];
    tg_recon_payer key;
    key.payer = e->payer;
    tg_recon_payer *p = sorted ? bsearch(&key, out->payers, sorted, sizeof key, cmp_payer_addr) : NULL;
    for (size_t k = sorted; !p && k < out->n_payers; k++)
      if (tg_address_eq(&out->payers[k].payer, &e->payer)) p = &out->payers[k];
    if (!p && !(p = payer_new(out, &e->payer))) {
      rc = TG_ENOMEM;
      break;
    }
    p->exact_payments++;
    if (e->status == TG_EXACT_CONFIRMED) add_sat(&p->exact_confirmed, &e->amount);
    else if (e->status == TG_EXACT_FAILED) add_sat(&p->exact_failed, &e->amount);
    else add_sat(&p->exact_pending, &e->amount);
    if (e->onchain == 1) add_sat(&p->exact_onchain, &e->amount);
  }
  if (!rc && out->n_payers > sorted)
    qsort(out->payers, out->n_payers, sizeof *out->payers, cmp_payer_addr);
  /* per payer: the running totals of both schemes, and the exact charge rows */
  for (size_t i = 0; !rc && i < out->n_payers; i++) {
    tg_recon_payer *p = &out->payers[i];
    tg_store_totals t;
    if ((rc = tg_store_totals_get(st, &p->payer, TG_SCHEME_CHANNEL, &t)) != 0) break;
    p->totals_channel = t.charged;
    p->count_channel = t.count;
    if ((rc = tg_store_totals_get(st, &p->payer, TG_SCHEME_EXACT, &t)) != 0) break;
    p->totals_exact = t.charged;
    p->count_exact = t.count;
    rc = tg_store_charges_by_payer(st, &p->payer, 0, 0, exact_rows_cb, p);
    if (rc > 0) rc = 0;
    if (!rc && (tg_u256_cmp(&p->totals_exact, &p->exact_rows) != 0 ||
                p->count_exact != p->exact_row_count))
      out->mismatches++;
  }
  /* payer totals cover every channel of the payer; with a deployment filter they may also
   * count channels of other deployments, so compare only without one */
  for (size_t i = 0; !rc && !d && i < out->n_payers; i++)
    if (tg_u256_cmp(&out->payers[i].totals_channel, &out->payers[i].charged) != 0) out->mismatches++;
  if (rc) tg_recon_cleanup(out);
  return rc;
}
