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

static int cmp_payer(const void *a, const void *b) {
  const tg_recon_channel *x = a, *y = b;
  int c = memcmp(x->payer.b, y->payer.b, 20);
  return c ? c : memcmp(x->id.b, y->id.b, 32);
}

static void add_sat(tg_u256 *acc, const tg_u256 *v) {
  if (tg_u256_add(acc, acc, v) != 0) memset(acc->b, 0xff, 32);
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
      tg_recon_payer *n = realloc(out->payers, (out->n_payers + 1) * sizeof *n);
      if (!n) {
        rc = TG_ENOMEM;
        break;
      }
      out->payers = n;
      tg_recon_payer *p = &n[out->n_payers++];
      memset(p, 0, sizeof *p);
      p->payer = c->payer;
      tg_store_totals t;
      if ((rc = tg_store_totals_get(st, &c->payer, TG_SCHEME_CHANNEL, &t)) != 0) break;
      p->totals_channel = t.charged;
      p->count_channel = t.count;
      if ((rc = tg_store_totals_get(st, &c->payer, TG_SCHEME_EXACT, &t)) != 0) break;
      p->totals_exact = t.charged;
      p->count_exact = t.count;
    }
    tg_recon_payer *p = &out->payers[out->n_payers - 1];
    p->channels++;
    add_sat(&p->charged, &c->charged);
    add_sat(&p->claimed, &c->claimed);
    add_sat(&p->onchain_claimed, &c->onchain_claimed);
    add_sat(&p->outstanding, &c->outstanding);
  }
  /* payer totals cover every channel of the payer; with a deployment filter they may also
   * count channels of other deployments, so compare only without one */
  for (size_t i = 0; !rc && !d && i < out->n_payers; i++)
    if (tg_u256_cmp(&out->payers[i].totals_channel, &out->payers[i].charged) != 0) out->mismatches++;
  if (rc) tg_recon_cleanup(out);
  return rc;
}
