/* Settlement summaries for people (a table) and machines (JSON). */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tollgate/address.h"
#include "tollgate/error.h"
#include "tollgate/hex.h"
#include "tollgate/settle.h"
#include "tollgate/u256.h"

static const char *dec(const tg_u256 *v, char buf[TG_U256_DEC_MAX]) {
  size_t n = tg_u256_to_dec(v, buf);
  buf[n < TG_U256_DEC_MAX ? n : TG_U256_DEC_MAX - 1] = '\0';
  return buf;
}

static const char *hex32(const uint8_t *p, char buf[67]) {
  tg_hex_encode(buf, p, 32, 1);
  return buf;
}

void tg_settle_report_print(FILE *f, const tg_settle_report *r, int dry_run) {
  char a[TG_U256_DEC_MAX], h[67], addr[TG_ADDRESS_HEX_LEN];
  if (r->n_txs) {
    fprintf(f, "%-6s %-6s %-42s %-12s %-12s %-20s %s\n", "kind", "items", "receiver",
            dry_run ? "gas (est.)" : "gas used", "status", dry_run ? "fee (est., wei)" : "fee (wei)",
            "tx hash");
    for (size_t i = 0; i < r->n_txs; i++) {
      const tg_settle_tx *t = &r->txs[i];
      tg_address_to_checksum(&t->receiver, addr);
      const char *kind = t->resumed ? "resume" : t->is_sweep ? "sweep" : "claim";
      const char *status = t->status == 1 ? "ok" : t->status == 0 ? "reverted" : dry_run ? "planned" : "failed";
      fprintf(f, "%-6s %-6zu %-42s %-12llu %-12s %-20s %s\n", kind, t->items,
              t->resumed ? "-" : addr,
              (unsigned long long)(dry_run ? t->gas_estimate : t->gas_used), status,
              dec(&t->fee, a), dry_run ? "-" : hex32(t->tx_hash.b, h));
      if (t->error[0]) fprintf(f, "       why: %s\n", t->error);
    }
  }
  for (size_t i = 0; i < r->n_problems; i++) {
    const tg_settle_problem *p = &r->problems[i];
    fprintf(f, "problem %s: %s\n", hex32(p->channel_id.b, h), p->why);
  }
  fprintf(f, "channels: %zu unsettled, %zu planned, %zu claimed, %zu waiting, %zu with problems\n",
          r->channels_unsettled, r->channels_planned, r->channels_claimed, r->channels_waiting,
          r->channels_problem);
  if (dry_run) {
    fprintf(f, "to claim: %s; estimated gas %llu", dec(&r->amount_planned, a),
            (unsigned long long)r->gas_estimate);
    tg_u256 fee;
    if (tg_u256_mul_u64(&fee, &r->gas_price, r->gas_estimate) != 0) memset(fee.b, 0xff, 32);
    fprintf(f, ", fee about %s wei", dec(&fee, a));
    fprintf(f, " at %s wei/gas\n", dec(&r->gas_price, a));
  } else {
    fprintf(f, "claimed: %s", dec(&r->amount_claimed, a));
    fprintf(f, "; swept: %s", dec(&r->amount_swept, a));
    fprintf(f, "; gas used %llu; fee paid %s wei\n", (unsigned long long)r->gas_used,
            dec(&r->fee_paid, a));
  }
}

static json_t *jdec(const tg_u256 *v) {
  char a[TG_U256_DEC_MAX];
  return json_string(dec(v, a));
}

static json_t *jhash(const tg_hash *v) {
  char h[67];
  return json_string(hex32(v->b, h));
}

static json_t *jaddr(const tg_address *v) {
  char a[TG_ADDRESS_HEX_LEN];
  tg_address_to_checksum(v, a);
  return json_string(a);
}

int tg_settle_report_json(tg_buf *out, const tg_settle_report *r, int dry_run) {
  json_t *o = json_object();
  json_object_set_new(o, "dryRun", json_boolean(dry_run));
  json_object_set_new(o, "runId", json_integer(r->run_id));
  json_object_set_new(o, "resumed", json_boolean(r->resumed));
  json_t *ch = json_object();
  json_object_set_new(ch, "unsettled", json_integer((json_int_t)r->channels_unsettled));
  json_object_set_new(ch, "planned", json_integer((json_int_t)r->channels_planned));
  json_object_set_new(ch, "claimed", json_integer((json_int_t)r->channels_claimed));
  json_object_set_new(ch, "waiting", json_integer((json_int_t)r->channels_waiting));
  json_object_set_new(ch, "problems", json_integer((json_int_t)r->channels_problem));
  json_object_set_new(o, "channels", ch);
  json_object_set_new(o, "amountPlanned", jdec(&r->amount_planned));
  json_object_set_new(o, "amountClaimed", jdec(&r->amount_claimed));
  json_object_set_new(o, "amountSwept", jdec(&r->amount_swept));
  json_object_set_new(o, "gasEstimate", json_integer((json_int_t)r->gas_estimate));
  json_object_set_new(o, "gasUsed", json_integer((json_int_t)r->gas_used));
  json_object_set_new(o, "gasPrice", jdec(&r->gas_price));
  json_object_set_new(o, "feePaid", jdec(&r->fee_paid));
  json_t *txs = json_array();
  for (size_t i = 0; i < r->n_txs; i++) {
    const tg_settle_tx *t = &r->txs[i];
    json_t *x = json_object();
    json_object_set_new(x, "kind", json_string(t->resumed ? "resumed" : t->is_sweep ? "sweep" : "claim"));
    json_object_set_new(x, "items", json_integer((json_int_t)t->items));
    json_object_set_new(x, "receiver", jaddr(&t->receiver));
    json_object_set_new(x, "token", jaddr(&t->token));
    if (!dry_run) json_object_set_new(x, "txHash", jhash(&t->tx_hash));
    json_object_set_new(x, "gasEstimate", json_integer((json_int_t)t->gas_estimate));
    json_object_set_new(x, "gasUsed", json_integer((json_int_t)t->gas_used));
    json_object_set_new(x, "fee", jdec(&t->fee));
    json_object_set_new(x, "status", json_integer(t->status));
    if (t->error[0]) json_object_set_new(x, "error", json_string(t->error));
    json_array_append_new(txs, x);
  }
  json_object_set_new(o, "transactions", txs);
  json_t *ps = json_array();
  for (size_t i = 0; i < r->n_problems; i++) {
    const tg_settle_problem *p = &r->problems[i];
    json_t *x = json_object();
    json_object_set_new(x, "channelId", jhash(&p->channel_id));
    json_object_set_new(x, "skipReason", json_integer(p->skip_reason));
    json_object_set_new(x, "error", json_string(p->err ? tg_err_name(p->err) : ""));
    json_object_set_new(x, "why", json_string(p->why));
    json_array_append_new(ps, x);
  }
  json_object_set_new(o, "problems", ps);
  char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
  json_decref(o);
  if (!s) return TG_ENOMEM;
  int rc = tg_buf_append_str(out, s);
  free(s);
  return rc;
}
